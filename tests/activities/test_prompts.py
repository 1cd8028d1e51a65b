"""Phase prompts: the repo's guidelines, the artifacts and the bounded prompt of a round."""

from __future__ import annotations

import os
from pathlib import Path

from activities.prompts import (
    FEEDBACK_END,
    FEEDBACK_START,
    MAX_PROMPT_CHARS,
    build_prompt,
    collect_guidelines,
)
from activities.specialists import find_specialist
from implflow.models import PhaseInput, PhaseSpec, PhaseSummary


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _pin(**changes: object) -> PhaseInput:
    values: dict[str, object] = {
        "workflow_id": "wf-1",
        "title": "Auth API",
        "description": "Login, logout and token refresh.",
        "repo": "/repo",
        "executor": "claude-code",
        "phase": PhaseSpec(name="design", instructions="Write the design and the OpenAPI."),
        "round": 2,
        "feedback": ["add rate limiting"],
        "previous": [PhaseSummary(name="review", round=1, summary="requirements listed")],
    }
    values.update(changes)
    return PhaseInput.model_validate(values)


# --- guidelines --------------------------------------------------------------------------


def test_guidelines_sorted_with_headings(tmp_path: Path) -> None:
    _write(tmp_path / "documents/guidelines/b.md", "B rules")
    _write(tmp_path / "documents/guidelines/a.txt", "A rules")
    _write(tmp_path / "documents/guidelines/sub/c.md", "C rules")
    _write(tmp_path / "documents/guidelines/image.png", "not text")
    _write(tmp_path / "CONTRIBUTING.md", "contribute so")
    _write(tmp_path / "CLAUDE.md", "claude so")
    text = collect_guidelines(tmp_path)
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings == [
        "## documents/guidelines/a.txt",
        "## documents/guidelines/b.md",
        "## documents/guidelines/sub/c.md",
        "## CONTRIBUTING.md",
        "## CLAUDE.md",
    ]
    assert "A rules" in text
    assert "truncated" not in text
    assert collect_guidelines(tmp_path) == text


def test_no_guidelines_is_empty(tmp_path: Path) -> None:
    assert collect_guidelines(tmp_path) == ""


def test_guidelines_are_bounded_per_file_and_overall(tmp_path: Path) -> None:
    _write(tmp_path / "documents/guidelines/big.md", "x" * 50_000)
    _write(tmp_path / "AGENTS.md", "agents " * 2_000)
    _write(tmp_path / "CONTRIBUTING.md", "short")
    text = collect_guidelines(tmp_path, max_chars=5_000, per_file_chars=3_000)
    assert len(text) <= 5_000
    assert "[truncated: documents/guidelines/big.md is longer" in text
    assert "## CONTRIBUTING.md" in text
    assert "AGENTS.md" in text  # cut short or named as omitted, never silently lost
    for max_chars in (300, 1_000, 12_000):
        assert len(collect_guidelines(tmp_path, max_chars=max_chars)) <= max_chars


def test_guidelines_name_the_files_that_did_not_fit(tmp_path: Path) -> None:
    for index in range(5):
        _write(tmp_path / f"documents/guidelines/g{index}.md", "y" * 2_000)
    text = collect_guidelines(tmp_path, max_chars=3_000)
    assert len(text) <= 3_000
    assert "[omitted for size:" in text
    assert "documents/guidelines/g4.md" in text


def test_guidelines_never_follow_symlinks_out_of_the_repo(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    outside = tmp_path / "outside"
    _write(outside / "secret.md", "SECRET-FILE")
    _write(outside / "dir/inner.md", "SECRET-DIR")
    _write(repo / "documents/guidelines/ok.md", "fine")
    (repo / "documents/guidelines/leak.md").symlink_to(outside / "secret.md")
    (repo / "documents/guidelines/leakdir").symlink_to(outside / "dir")
    (repo / "AGENTS.md").symlink_to(outside / "secret.md")
    text = collect_guidelines(repo)
    assert "fine" in text
    assert "SECRET" not in text

    other = tmp_path / "other"
    (other / "documents").mkdir(parents=True)
    (other / "documents/guidelines").symlink_to(outside)
    assert collect_guidelines(other) == ""


# --- the prompt --------------------------------------------------------------------------


def test_prompt_has_every_part(tmp_path: Path) -> None:
    _write(tmp_path / "CONTRIBUTING.md", "Use conventional commits.")
    _write(tmp_path / ".implflow/review.md", "R1: tokens expire after 15 minutes.")
    prompt = build_prompt(_pin(), tmp_path, {"notes/extra.md": "extra artifact"})
    for needle in (
        "'design' phase (round 2)",
        "# Task: Auth API",
        "Login, logout and token refresh.",
        "# Phase: design (round 2)",
        "Write the design and the OpenAPI.",
        FEEDBACK_START,
        "1. add rate limiting",
        FEEDBACK_END,
        "- review (round 1): requirements listed",
        "## .implflow/review.md",
        "R1: tokens expire after 15 minutes.",
        "## notes/extra.md",
        "# Repository guidelines",
        "Use conventional commits.",
        "Do not commit or push",
    ):
        assert needle in prompt
    assert prompt.index(".implflow/review.md") < prompt.index("notes/extra.md")


def test_given_artifacts_win_over_files(tmp_path: Path) -> None:
    _write(tmp_path / ".implflow/design.md", "old design")
    prompt = build_prompt(_pin(), tmp_path, {".implflow/design.md": "new design"})
    assert "new design" in prompt
    assert "old design" not in prompt


def test_prompt_without_feedback_has_no_feedback_section(tmp_path: Path) -> None:
    prompt = build_prompt(_pin(feedback=[], previous=[], round=1), tmp_path)
    assert FEEDBACK_START not in prompt
    assert "Earlier phases" not in prompt
    assert "Repository guidelines" not in prompt


def test_prompt_is_deterministic(tmp_path: Path) -> None:
    _write(tmp_path / "documents/guidelines/z.md", "zed")
    _write(tmp_path / "documents/guidelines/a.md", "ay")
    artifacts = {"b.md": "b", "a.md": "a"}
    first = build_prompt(_pin(), tmp_path, artifacts)
    os.utime(tmp_path / "documents/guidelines/a.md")
    assert build_prompt(_pin(), tmp_path, dict(reversed(artifacts.items()))) == first


def test_prompt_is_bounded_and_keeps_the_newest_feedback(tmp_path: Path) -> None:
    _write(tmp_path / "documents/guidelines/huge.md", "g" * 100_000)
    _write(tmp_path / ".implflow/review.md", "r" * 100_000)
    pin = _pin(
        description="d" * 20_000,
        phase=PhaseSpec(name="design", instructions="i" * 8_000),
        feedback=[f"old feedback {n} " + "f" * 3_000 for n in range(20)] + ["NEWEST FEEDBACK"],
        previous=[PhaseSummary(name=f"p{n}", round=1, summary="s" * 2_000) for n in range(20)],
    )
    prompt = build_prompt(pin, tmp_path, {"extra.md": "e" * 100_000})
    assert len(prompt) <= MAX_PROMPT_CHARS
    assert "NEWEST FEEDBACK" in prompt
    assert FEEDBACK_END in prompt
    assert "older feedback item(s) omitted" in prompt
    assert "Do not commit or push" in prompt
    for limit in (2_000, 5_000, 10_000):
        assert len(build_prompt(pin, tmp_path, max_chars=limit)) <= limit


def test_prompt_can_lead_with_the_specialist(tmp_path: Path) -> None:
    spec = find_specialist("backend-implementer", tmp_path)
    prompt = build_prompt(_pin(), tmp_path, specialist=spec)
    assert prompt.index("# Specialist: backend-implementer") < prompt.index("# Task:")
    assert "< 512 MB" in prompt
    assert "# Specialist" not in build_prompt(_pin(), tmp_path)
