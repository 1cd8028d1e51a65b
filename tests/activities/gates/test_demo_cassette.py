"""The demo cassette ``examples/cassettes/todo-due-dates`` replays onto ``examples/todo-service``.

Its patches are applied the way the ``replay`` executor applies them (``git apply`` in a
git checkout, round ``n`` from ``<phase>-r<n>.patch``), in the pipeline's order, with the
test phase's repair round on top of its first round. The final tree's own test suite must
pass, and the test gate must fail round 1 on coverage and pass round 2: the demo's
realistic failure and its repair. The load probe is left to the full demo (about 10 s).
The module takes a few seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from activities.executors.replay import cassette_files
from activities.gates.runner import run_gate
from implflow.models import Thresholds
from tests.helpers.gates import copy_example, git

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "todo-service"
CASSETTE = ROOT / "examples" / "cassettes" / "todo-due-dates"

ROUNDS = [
    ("review", 1),
    ("design", 1),
    ("implement", 1),
    ("validate", 1),
    ("optimize", 1),
    ("test", 1),
    ("test", 2),  # the repair round, on top of round 1
    ("document", 1),
    ("verify", 1),
]


@pytest.fixture
def todo_repo(tmp_path: Path) -> Path:
    """examples/todo-service copied into tmp_path, committed on a fresh git repository."""
    return copy_example(tmp_path)


def patch_for(phase: str, rnd: int) -> Path:
    patch, _ = cassette_files(CASSETTE, phase, rnd)
    assert patch is not None, f"the cassette has no patch for {phase} round {rnd}"
    assert patch.name == f"{phase}-r{rnd}.patch"
    return patch


def apply_round(repo: Path, phase: str, rnd: int) -> None:
    """Apply one round's patch as the replay executor does, then commit it."""
    patch = patch_for(phase, rnd)
    proc = subprocess.run(
        ["git", "apply", "--whitespace=nowarn", "--", str(patch)],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"{patch.name} does not apply: {proc.stderr.strip()}"
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", f"{phase} round {rnd}")


def test_every_round_has_a_patch_and_a_one_line_summary() -> None:
    for phase, rnd in ROUNDS:
        patch, meta = cassette_files(CASSETTE, phase, rnd)
        assert patch is not None
        assert patch.name == f"{phase}-r{rnd}.patch"
        assert meta is not None, f"{phase}-r{rnd}.json is missing"
        summary = json.loads(meta.read_text(encoding="utf-8"))["summary"]
        assert isinstance(summary, str)
        assert summary.strip()
        assert "\n" not in summary
        assert len(summary) <= 2000
    # Nothing for a third test round or for rounds the pipeline never asks for.
    assert cassette_files(CASSETTE, "test", 3) == (None, None)
    expected = {f"{phase}-r{rnd}.{ext}" for phase, rnd in ROUNDS for ext in ("patch", "json")}
    recorded = {p.name for p in CASSETTE.iterdir() if p.suffix in (".patch", ".json")}
    assert recorded == expected


def test_patches_touch_the_project_but_never_reports_or_gate_config(todo_repo: Path) -> None:
    for phase, rnd in ROUNDS:
        patch = patch_for(phase, rnd)
        numstat = git(todo_repo, "apply", "--numstat", "--", str(patch))
        paths = [line.split("\t", 2)[2] for line in numstat.splitlines()]
        assert paths, f"{patch.name} changes nothing"
        for path in paths:
            assert not path.startswith(".implflow/reports/"), f"{patch.name}: {path}"
            assert path != ".implflow/gates.toml", f"{patch.name} relaxes its own gates"


def test_the_cassette_applies_in_order_and_the_final_tests_pass(todo_repo: Path) -> None:
    for phase, rnd in ROUNDS:
        apply_round(todo_repo, phase, rnd)
        if (phase, rnd) == ("test", 1):
            assert not (todo_repo / "tests" / "test_api.py").exists()  # store tests only
    for path in (".implflow/review.md", ".implflow/design.md", ".implflow/verify.md"):
        assert (todo_repo / path).is_file(), path
    assert (todo_repo / "openapi.yaml").is_file()
    assert (todo_repo / "tests" / "test_api.py").is_file()
    assert git(todo_repo, "status", "--porcelain") == ""

    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=todo_repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout
    assert "failed" not in proc.stdout


async def test_test_gate_fails_on_coverage_then_the_repair_round_passes(todo_repo: Path) -> None:
    base = git(todo_repo, "rev-parse", "HEAD")
    for phase, rnd in ROUNDS[: ROUNDS.index(("test", 1)) + 1]:
        apply_round(todo_repo, phase, rnd)

    first = await run_gate("test", todo_repo, 1, Thresholds(), base_ref=base)
    checks = {c.name: c for c in first.checks}
    assert not first.passed
    assert checks["tests"].passed  # the tests pass ...
    assert not checks["coverage"].passed  # ... but cover too little
    assert float(checks["coverage"].figures["line_rate_pct"]) < 80
    assert "coverage" in first.failure_summary

    apply_round(todo_repo, "test", 2)
    second = await run_gate("test", todo_repo, 2, Thresholds(), base_ref=base)
    checks = {c.name: c for c in second.checks}
    assert second.passed, second.failure_summary
    assert float(checks["coverage"].figures["line_rate_pct"]) >= 80
    assert int(checks["tests"].figures["total"]) > int(
        {c.name: c for c in first.checks}["tests"].figures["total"]
    )
