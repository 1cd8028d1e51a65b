"""The ``run_gate`` activity: real checks on the task branch, reports committed there."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.phases import ImplActivities
from activities.workspace import RoundKey, TaskCheckout
from implflow.errors import GATE_CONFIG_INVALID
from implflow.layout import GATES_FILE
from implflow.models import GateInput, PhaseInput
from implflow.settings import Settings
from tests.helpers import branch_file, branch_log, shell_phase
from tests.helpers.gates import copy_example

REVIEW = """# Review
## Requirements
- due dates
## Open questions
- [blocking] Should overdue include today?
"""


def phase(repo: Path, name: str, script: str) -> PhaseInput:
    return shell_phase(repo, script, workflow_id="wf-g", name=name)


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
    assert again == verdict  # the committed record reads back as the very result returned
    assert verdict.questions == ["Should overdue include today?"]
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


def commit_to_main(repo: Path, relpath: str, text: str) -> str:
    path = repo / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    identity = ["-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "add", "--force", relpath], cwd=repo, check=True)
    subprocess.run(["git", *identity, "commit", "-qm", "gates"], cwd=repo, check=True)
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()


async def test_a_bad_gates_file_fails_the_gate_at_once_naming_file_and_field(
    tmp_path: Path,
) -> None:
    repo = copy_example(tmp_path)
    bad = '[[phases.test.checks]]\nname = "t"\nformat = "yaml"\nreport = "r.xml"\n'
    base = commit_to_main(repo, GATES_FILE, bad)
    acts = ImplActivities(Settings(data_dir=tmp_path / "data"))
    gate_in = GateInput(
        workflow_id="wf-bad", repo=str(repo), phase="test", round=1, base_commit=base
    )

    with pytest.raises(ApplicationError) as caught:
        await ActivityEnvironment().run(acts.run_gate, gate_in)

    err = caught.value
    assert err.type == GATE_CONFIG_INVALID
    assert err.non_retryable  # a retry would read the same file: fail the task at once
    assert err.message.startswith(f"{GATES_FILE}: phases.test.checks[0].format: ")
    assert "\n" not in err.message
    # Nothing was committed for the gate: the task branch was never pushed.
    pushed = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", "implflow/wf-bad"], cwd=repo, check=False
    )
    assert pushed.returncode != 0


async def test_a_verdict_recorded_before_questions_existed_still_asks_a_person(
    tmp_path: Path,
) -> None:
    """A retried gate may find a record an older worker committed: its shape still reads."""
    repo = copy_example(tmp_path)
    settings = Settings(data_dir=tmp_path / "data")
    checkout = TaskCheckout(str(repo), "wf-old", settings.folder("workspaces"))
    start = checkout.sync()
    old_record = {  # what GateVerdict wrote: no questions, no commit
        "phase": "review",
        "round": 1,
        "passed": False,
        "checks": [
            {
                "name": "review",
                "passed": False,
                "skipped": False,
                "figures": {"open_questions": 2, "blocking": 1, "unanswered_blocking": 1},
                "threshold": "unanswered_blocking == 0",
                "summary": "1 unanswered blocking question(s); first: Soft delete?",
                "details": ["Soft delete?"],
                "report": ".implflow/review.md",
            }
        ],
        "failure_summary": "- review: 1 unanswered blocking question(s); first: Soft delete?",
        "report_dir": ".implflow/reports/review/1",
        "config_source": "preset:python",
    }
    commit = checkout.commit_gate(RoundKey("wf-old", "review", 1), start, old_record)

    gate_in = GateInput(workflow_id="wf-old", repo=str(repo), phase="review", round=1)
    verdict = await ActivityEnvironment().run(ImplActivities(settings).run_gate, gate_in)

    assert verdict.commit == commit  # read from the branch, not run again
    assert verdict.questions == ["Soft delete?"]
    assert verdict.checks[0].figures["unanswered_blocking"] == 1
    assert verdict.config_source == "preset:python"
