"""The ``run_gate`` activity: real checks on the task branch, reports committed there."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from temporalio.testing import ActivityEnvironment

from activities.phases import ImplActivities
from implflow.models import GateInput, PhaseInput, PhaseSpec
from implflow.settings import Settings
from tests.conftest import branch_file, branch_log
from tests.gates.test_runner import copy_example

REVIEW = """# Review
## Requirements
- due dates
## Open questions
- [blocking] Should overdue include today?
"""


def phase(repo: Path, name: str, script: str) -> PhaseInput:
    return PhaseInput(
        workflow_id="wf-g",
        title="t",
        description="d",
        repo=str(repo),
        executor="shell",
        phase=PhaseSpec(name=name),
        round=1,
        command=[sys.executable, "-c", script],
    )


async def test_gate_commits_its_reports_and_is_not_run_twice(tmp_path: Path) -> None:
    repo = copy_example(tmp_path)
    acts = ImplActivities(Settings(data_dir=tmp_path / "data"))
    write_review = (
        "import pathlib; p = pathlib.Path('.implflow'); p.mkdir(exist_ok=True); "
        f"(p / 'review.md').write_text({REVIEW!r})"
    )
    await ActivityEnvironment().run(acts.run_phase, phase(repo, "review", write_review))
    gate_in = GateInput(workflow_id="wf-g", repo=str(repo), phase="review", round=1)
    verdict = await ActivityEnvironment().run(acts.run_gate, gate_in)

    assert not verdict.passed  # an unanswered blocking question
    assert "Should overdue include today?" in verdict.failure_summary
    assert verdict.report_dir == ".implflow/reports/review/1"
    assert branch_log(repo, "wf-g") == [
        "implflow: review (round 1)",
        "implflow: gate review failed (round 1)",
    ]
    assert '"passed": false' in branch_file(repo, "wf-g", ".implflow/reports/review/1/verdict.json")

    # A retry (another worker) finds the verdict on the branch and does not re-run the checks.
    other = ImplActivities(Settings(data_dir=tmp_path / "other"))
    again = await ActivityEnvironment().run(other.run_gate, gate_in)
    assert (again.passed, again.commit) == (verdict.passed, verdict.commit)
    assert len(branch_log(repo, "wf-g")) == 2
    shown = subprocess.run(
        ["git", "log", "-1", "--format=%B", "implflow/wf-g"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "Implflow-Gate: yes" in shown and "Implflow-Phase: review" in shown


async def test_an_agent_cannot_loosen_its_own_gates(tmp_path: Path) -> None:
    repo = copy_example(tmp_path)
    base = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()
    acts = ImplActivities(Settings(data_dir=tmp_path / "data"))
    # The "agent" writes a gates.toml that would switch the review check off.
    loosen = (
        "import pathlib; p = pathlib.Path('.implflow'); p.mkdir(exist_ok=True); "
        "(p / 'gates.toml').write_text('kind = \"none\"\\n')"
    )
    await ActivityEnvironment().run(acts.run_phase, phase(repo, "review", loosen))
    assert "kind" in branch_file(repo, "wf-g", ".implflow/gates.toml")
    verdict = await ActivityEnvironment().run(
        acts.run_gate,
        GateInput(workflow_id="wf-g", repo=str(repo), phase="review", round=1, base_commit=base),
    )
    assert not verdict.passed  # the preset still applies: no review.md
    assert "review" in [c.name for c in verdict.checks]
