"""The `implflow` CLI without a server: input checks, guidance, counters, start-up cost.

The CLI against a real server is in tests/e2e/test_e2e.py; the demo in tests/implflow/test_demo.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from activities.executors import EXECUTORS
from implflow.cli import _done_count, app, next_step
from implflow.client import EXECUTOR_NAMES, ImplflowClient, _rounds
from implflow.errors import InvalidInputError
from implflow.models import (
    ApprovalKind,
    PendingApproval,
    PhaseStatus,
    PhaseStatusValue,
    TaskState,
    TaskStatus,
)

runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--description", "d", "--repo", "/tmp"], "title"),
        (["--title", "t", "--description", "d", "--repo", ""], "repo"),
        (["--title", "t", "--description", "d"], "repo"),
        (["--title", "t", "--description", "d", "--repo", "/tmp", "--skip", "ship"], "skip"),
        (
            ["--title", "t", "--description", "d", "--repo", "/tmp", "--approve-after", "x"],
            "approval.after",
        ),
        (
            ["--title", "t", "--description", "d", "--repo", "/tmp", "--command", "review=make"],
            "--command review",
        ),
        (
            ["--title", "t", "--description", "d", "--repo", "/tmp", "--command", "nope"],
            "--command",
        ),
        (["--input", "{bad json"], "--input"),
        (["--input", "@/nonexistent.json"], "--input: file /nonexistent.json not found"),
        (["--input", "@/dev/null"], "--input: /dev/null is empty"),
        (["--input", "@/"], "--input: / is a directory"),
        (["--input", '{"title": "t", "description": "d", "repo": "/tmp", "budget": 5}'], "budget"),
        (
            ["--title", "t", "--description", "d", "--repo", "/tmp", "--executor", "claud"],
            "executor",
        ),
    ],
)
def test_start_rejects_bad_input_before_connecting(args: list[str], field: str) -> None:
    # TEMPORAL_ADDRESS points nowhere: validation must fail first, without a server.
    result = runner.invoke(app, ["start", *args], env={"TEMPORAL_ADDRESS": "127.0.0.1:1"})
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: invalid input")
    assert field in lines[0]


def test_start_reads_input_from_stdin(tmp_path: Path) -> None:
    # `--input @/dev/stdin` reads a piped input (it was refused as "file not found"); the task
    # is validated and only then does the unreachable server fail the start.
    task = {"title": "t", "description": "d", "repo": str(tmp_path), "budget": 5}
    proc = subprocess.run(
        [sys.executable, "-m", "implflow.cli", "start", "--input", "@/dev/stdin"],
        input=json.dumps(task),
        capture_output=True,
        text=True,
        env={**os.environ, "TEMPORAL_ADDRESS": "127.0.0.1:1"},
        timeout=60,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert out.startswith("error: invalid input") and "budget" in out, out


def test_unreachable_server_is_one_line_exit_1() -> None:
    result = runner.invoke(app, ["status", "some-id"], env={"TEMPORAL_ADDRESS": "127.0.0.1:1"})
    assert result.exit_code == 1
    assert "cannot reach Temporal" in result.output and "implflow server" in result.output


def test_list_rejects_unknown_state_naming_it() -> None:
    env = {"TEMPORAL_ADDRESS": "127.0.0.1:1"}
    result = runner.invoke(app, ["list", "--state", "sleeping"], env=env)
    assert result.exit_code == 2
    assert result.output.startswith("error: invalid input: --state")


def test_help_lists_the_public_commands() -> None:
    result = runner.invoke(app, ["--help"])
    for command in (
        "server",
        "worker",
        "start",
        "approve",
        "reject",
        "status",
        "list",
        "watch",
        "cancel",
        "demo",
    ):
        assert command in result.output


def test_waive_needs_a_reason_before_connecting() -> None:
    env = {"TEMPORAL_ADDRESS": "127.0.0.1:1"}
    result = runner.invoke(app, ["waive", "x", "--phase", "test", "--reason", "  "], env=env)
    assert result.exit_code == 2
    assert result.output.startswith("error: invalid input: --reason")


async def test_the_api_refuses_a_waiver_without_a_reason() -> None:
    flow = ImplflowClient(client=None)  # type: ignore[arg-type]  # refused before any call
    with pytest.raises(InvalidInputError, match="reason is required"):
        await flow.decide("x", "test", "waive", "qa", comment=" ")


def test_every_task_command_takes_json() -> None:
    for command in (
        *("start", "status", "watch", "list", "diff", "approve", "reject"),
        *("waive", "abort", "pause", "resume", "cancel"),
    ):
        result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0 and "--json" in result.output, command


def test_the_client_knows_every_executor_the_worker_has() -> None:
    assert sorted(EXECUTOR_NAMES) == sorted(EXECUTORS)


def _pending(kind: ApprovalKind) -> PendingApproval:
    return PendingApproval(phase="validate", kind=kind, since=datetime.now(UTC))


def test_a_failed_gate_is_answered_by_waive_reject_or_abort_only() -> None:
    text = next_step("t-1", _pending("gate"))
    assert 'implflow waive t-1 --phase validate --reason "..."' in text
    assert "implflow reject t-1 --phase validate" in text
    assert "implflow abort t-1 --phase validate" in text
    assert "approve" not in text
    assert "implflow approve t-1 --phase validate" in next_step("t-1", _pending("approval"))
    assert "--budget-usd" in next_step("t-1", _pending("budget"))
    assert "--comment" in next_step("t-1", _pending("question"))


def _status(state: TaskState, current: str, **phases: PhaseStatusValue) -> TaskStatus:
    return TaskStatus(
        workflow_id="t",
        title="t",
        state=state,
        current_phase=current,
        phases=[PhaseStatus(name=n, status=s) for n, s in phases.items()],
    )


def test_watch_counter_counts_done_phases_and_never_goes_back_in_a_repair() -> None:
    done, running, failed = PhaseStatusValue.DONE, PhaseStatusValue.RUNNING, PhaseStatusValue.FAILED
    pending, skipped = PhaseStatusValue.PENDING, PhaseStatusValue.SKIPPED
    # test's round finished, its gate runs: not done yet.
    gating = _status(TaskState.RUNNING, "test", review=done, test=done, verify=pending)
    # The gate failed; the repair round runs.
    repairing = _status(TaskState.REPAIRING, "test", review=done, test=failed, verify=pending)
    rerun = _status(TaskState.REPAIRING, "test", review=done, test=running, verify=pending)
    # The repaired round passed its gate: test is done, verify runs.
    passed = _status(TaskState.RUNNING, "verify", review=done, test=done, verify=running)
    counts = [_done_count(s) for s in (gating, repairing, rerun, passed)]
    assert counts == [(1, 3), (1, 3), (1, 3), (2, 3)]
    waiting = _status(TaskState.AWAITING_APPROVAL, "verify", review=done, test=done, verify=done)
    assert _done_count(waiting) == (3, 3)
    assert _done_count(_status(TaskState.COMPLETED, "b", a=done, b=done, c=skipped)) == (2, 2)


def test_round_commits_are_found_by_their_trailers() -> None:
    def commit(sha: str, *trailers: str) -> str:  # as ROUNDS_LOG_FORMAT prints it
        return f"{sha}\x1f" + "\n".join(trailers) + "\n\x1e"

    log = "".join(
        [
            commit("a1", "Implflow-Workflow: w", "Implflow-Phase: design", "Implflow-Round: 1"),
            commit(
                "g1",
                "Implflow-Workflow: w",
                "Implflow-Phase: design",
                "Implflow-Round: 1",
                "Implflow-Gate: yes",
            ),
            commit("o1", "Implflow-Workflow: other", "Implflow-Phase: test", "Implflow-Round: 1"),
            commit("a2", "Implflow-Workflow: w", "Implflow-Phase: design", "Implflow-Round: 2"),
            commit("m1", "Merge: no trailers here"),
        ]
    )
    assert _rounds(log, "w") == [("design", 1, "a1"), ("design", 2, "a2")]


def test_help_imports_neither_temporalio_nor_pydantic() -> None:
    # `implflow --help` (and every command's parsing) must start at once: the heavy imports
    # happen inside the commands that talk to Temporal.
    probe = (
        "import sys, implflow.cli\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('temporalio', 'pydantic'))\n"
        "mine = sorted(m for m in sys.modules if m.startswith('implflow'))\n"
        "print(heavy[:3], mine)\n"
        "sys.exit(1 if heavy else 0)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, f"imported at start-up: {proc.stdout}"


def test_status_shows_what_retried_attempts_ran_into(capsys: pytest.CaptureFixture[str]) -> None:
    from implflow.cli import render_status
    from implflow.models import PhaseStatus, TaskState, TaskStatus

    line = "attempt 1: AgentApiError: claude-code failed (API error 529): overloaded"
    status = TaskStatus(
        workflow_id="wf-1",
        title="t",
        state=TaskState.RUNNING,
        phases=[PhaseStatus(name="implement", rounds=1, attempts=2, failed_attempts=[line])],
    )
    render_status(status, repo="/r")
    assert f"retried: implement {line}" in capsys.readouterr().out.replace("\n", " ")
