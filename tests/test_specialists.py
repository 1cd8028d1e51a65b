"""Specialists (agent files), their lookup, the repo's guidelines and the phase prompt."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from activities.specialists import (
    FEEDBACK_END,
    FEEDBACK_START,
    MAX_PROMPT_CHARS,
    SpecialistError,
    build_prompt,
    collect_guidelines,
    find_specialist,
    list_specialists,
    parse_agent_file,
)
from implflow.models import PhaseInput, PhaseSpec, PhaseSummary


def _agent(
    name: str = "helper", tools: str = "tools: Read, Grep", body: str = "Be helpful."
) -> str:
    return f"---\nname: {name}\ndescription: A helper\nmodel: haiku\n{tools}\n---\n\n{body}\n"


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


# --- parsing ---------------------------------------------------------------------------


def test_parse_tools_as_comma_separated_string() -> None:
    spec = parse_agent_file(_agent(tools="tools: Read, Grep ,Bash(git diff:*)"), "x.md")
    assert spec.name == "helper"
    assert spec.description == "A helper"
    assert spec.model == "haiku"
    assert spec.tools == ["Read", "Grep", "Bash(git diff:*)"]
    assert spec.body == "Be helpful."
    assert spec.system_prompt() == "Be helpful."
    assert spec.source == "x.md"


def test_parse_tools_as_yaml_list_and_defaults() -> None:
    spec = parse_agent_file(_agent(tools="tools:\n  - Read\n  - Edit"), Path("a.md"))
    assert spec.tools == ["Read", "Edit"]
    bare = parse_agent_file("---\nname: bare\n---\nBody\n", "b.md")
    assert (bare.description, bare.model, bare.tools) == ("", None, [])
    inherit = parse_agent_file("---\nname: i\nmodel: inherit\n---\nBody\n", "i.md")
    assert inherit.model is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("no header here\n", "no YAML header"),
        ("", "no YAML header"),
        ("---\nname: x\nBody without a closing line\n", "not closed"),
        ("---\nname: [unclosed\n---\nBody\n", "bad YAML header"),
        ("---\n- a list\n---\nBody\n", "must be a mapping"),
        ("---\ndescription: nameless\n---\nBody\n", "no 'name'"),
        ("---\nname: '  '\n---\nBody\n", "no 'name'"),
        ("---\nname: x\n---\n\n", "body"),
        ("---\nname: x\ntools: 3\n---\nBody\n", "'tools'"),
        ("---\nname: x\nmodel: [a]\n---\nBody\n", "'model' must be a string"),
    ],
)
def test_parse_refuses_malformed_files_in_one_line(text: str, problem: str) -> None:
    with pytest.raises(SpecialistError) as caught:
        parse_agent_file(text, "agents/bad.md")
    message = str(caught.value)
    assert message.startswith("agents/bad.md: ")
    assert problem in message
    assert "\n" not in message
    assert isinstance(caught.value, ValueError)


# --- lookup ----------------------------------------------------------------------------


def test_lookup_order_repo_then_settings_dir_then_bundled(tmp_path: Path) -> None:
    repo, extra = tmp_path / "repo", tmp_path / "extra"
    repo.mkdir()
    bundled = find_specialist("backend-implementer", repo, extra)
    assert bundled.source == "bundled:backend-implementer.md"

    _write(extra / "backend-implementer.md", _agent("from-settings"))
    assert find_specialist("backend-implementer", repo, extra).name == "from-settings"

    repo_file = _write(repo / ".claude/agents/backend-implementer.md", _agent("from-repo"))
    found = find_specialist("backend-implementer", repo, extra)
    assert found.name == "from-repo"
    assert found.source == repo_file
    assert find_specialist("backend-implementer", repo, None).name == "from-repo"


def test_unknown_name_lists_what_is_available(tmp_path: Path) -> None:
    _write(tmp_path / ".claude/agents/mine.md", _agent("mine"))
    with pytest.raises(SpecialistError, match="unknown specialist 'nope'") as caught:
        find_specialist("nope", tmp_path)
    assert "backend-implementer" in str(caught.value)
    assert "mine" in str(caught.value)
    assert list_specialists(tmp_path) == ["backend-implementer", "mine"]


@pytest.mark.parametrize(
    "name", ["../x", "/etc/passwd", "a/b", "..", ".hidden", "", "UPPER", "a\\b", "x\n", "a" * 65]
)
def test_names_that_are_paths_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(SpecialistError, match="is not allowed"):
        find_specialist(name, tmp_path, tmp_path)


def test_repo_symlink_leading_outside_is_refused(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    outside = _write(tmp_path / "secret.md", _agent("stolen", body="secret"))
    (repo / ".claude/agents").mkdir(parents=True)
    (repo / ".claude/agents/evil.md").symlink_to(outside)
    with pytest.raises(SpecialistError, match="outside the repository"):
        find_specialist("evil", repo)


def test_repo_agents_dir_symlinked_outside_is_refused(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _write(tmp_path / "elsewhere/backend-implementer.md", _agent("stolen"))
    (repo / ".claude").mkdir(parents=True)
    (repo / ".claude/agents").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(SpecialistError, match="outside the repository"):
        find_specialist("backend-implementer", repo)


def test_repo_symlink_inside_the_repo_is_fine(tmp_path: Path) -> None:
    target = _write(tmp_path / "docs/agent.md", _agent("linked"))
    (tmp_path / ".claude/agents").mkdir(parents=True)
    (tmp_path / ".claude/agents/linked.md").symlink_to(target)
    assert find_specialist("linked", tmp_path).name == "linked"


def test_bad_repo_file_names_itself(tmp_path: Path) -> None:
    _write(tmp_path / ".claude/agents/broken.md", "---\nname: [x\n---\nbody\n")
    with pytest.raises(SpecialistError, match=r"broken\.md: bad YAML header"):
        find_specialist("broken", tmp_path)


def test_bundled_specialist_states_the_targets(tmp_path: Path) -> None:
    spec = find_specialist("backend-implementer", tmp_path)
    assert spec.name == "backend-implementer"
    assert spec.tools == ["Read", "Write", "Edit", "Bash", "Glob", "Grep"]
    assert spec.description
    body = spec.body
    for needle in ("≥ 80 %", "< 200 ms", "≥ 1000 requests/s", "< 512 MB", "OWASP", "high-severity"):
        assert needle in body
    for needle in ("REST", "GraphQL", "WebSocket", "repositor", "transaction", "Caching"):
        assert needle in body
    for artifact in (".implflow/review.md", ".implflow/design.md", ".implflow/openapi.yaml"):
        assert artifact in body
    assert "Do not commit" in body


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


def test_agent_executors_resolve_the_task_specialist(tmp_path: Path) -> None:
    from temporalio.exceptions import ApplicationError

    from activities.executors.agent_common import specialist_prompt
    from implflow.models import PhaseInput, PhaseSpec

    agents = tmp_path / ".claude" / "agents"
    agents.mkdir(parents=True)
    (agents / "api-hardener.md").write_text(
        "---\nname: api-hardener\ndescription: d\n---\nHARDEN EVERY ENDPOINT.\n"
    )
    pin = PhaseInput(
        workflow_id="w",
        title="t",
        description="d",
        repo=str(tmp_path),
        executor="claude-code",
        phase=PhaseSpec(name="validate"),
        round=1,
        specialist="api-hardener",
    )
    assert "HARDEN EVERY ENDPOINT." in specialist_prompt(pin, tmp_path, None)
    default = specialist_prompt(pin.model_copy(update={"specialist": None}), tmp_path, None)
    assert "80" in default  # the bundled backend specialist states its targets
    with pytest.raises(ApplicationError) as info:
        specialist_prompt(pin.model_copy(update={"specialist": "nobody"}), tmp_path, None)
    assert info.value.type == "InvalidInput" and info.value.non_retryable
