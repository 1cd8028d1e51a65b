"""The CLI prints text it did not write (titles, outcomes, errors, approvers) as it is.

Rich markup in such text (``[/]``, ``[bold]``) is shown literally instead of crashing the
command, and terminal control characters (``\\x1b[2J``) are shown visibly instead of driving
the terminal; ``--json`` stays exact. A fake client stands in for the server.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

import implflow.cli
from implflow.cli import app
from implflow.models import (
    Decision,
    GateResult,
    PhaseStatus,
    PhaseStatusValue,
    TaskState,
    TaskStatus,
)

runner = CliRunner()
HOSTILE = "fix [/] and [bold] \x1b[2J here"
VISIBLE = "fix [/] and [bold] \\x1b[2J here"  # how a person sees it
AT = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


class FakeClient:
    """What the task commands call, answering from one canned status."""

    task_queue = "test-queue"

    def __init__(self, status: TaskStatus, execution: str = "running") -> None:
        self._status = status
        self._execution = execution
        self.cancelled: list[str] = []

    async def status(self, workflow_id: str) -> TaskStatus:
        return self._status

    async def execution_state(self, workflow_id: str) -> str:
        return self._execution

    async def task_input(self, workflow_id: str) -> Any:
        return SimpleNamespace(repo=None)

    async def cancel(self, workflow_id: str) -> None:
        self.cancelled.append(workflow_id)

    async def decide(self, workflow_id: str, phase: str, kind: str, approver: str, **_: Any) -> Any:
        return Decision(phase=phase, decision="approve", approver=approver, at=AT, via="update")

    async def list(
        self, state: str | None = None, query: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        return [
            {
                "workflow_id": "wf-1",
                "title": HOSTILE,
                "state": "failed",
                "phase": "verify [/]",
                "age_s": 5.0,
            },
            {
                "workflow_id": "wf-2",
                "title": "plain",
                "state": "completed",
                "phase": None,
                "age_s": 7.0,
            },
        ]


def _hostile_status() -> TaskStatus:
    return TaskStatus(
        workflow_id="wf-1",
        title=HOSTILE,
        state=TaskState.FAILED,
        current_phase="verify",
        phases=[
            PhaseStatus(
                name="verify",
                status=PhaseStatusValue.FAILED,
                rounds=1,
                attempts=1,
                outcome="[/]",
                gate=GateResult(phase="verify", round=1, passed=False),
            )
        ],
        decisions=[
            Decision(
                phase="design",
                decision="approve",
                approver="[/]",
                at=AT,
                comment="ok [/] \x1b[2J",
            )
        ],
        error="boom [/] \x1b[2J [bold]",
        branch="implflow/wf-1",
    )


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeClient:
    client = FakeClient(_hostile_status())

    async def factory() -> Any:
        return client

    monkeypatch.setattr(implflow.cli, "client_factory", factory)
    monkeypatch.setenv("COLUMNS", "300")  # one table row per line: nothing wraps
    monkeypatch.setattr(implflow.cli, "_console", None)  # a console that reads COLUMNS
    return client


def test_status_prints_markup_and_control_characters_literally(fake: FakeClient) -> None:
    result = runner.invoke(app, ["status", "wf-1"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "MarkupError" not in result.output and "closing tag" not in result.output
    out = result.output
    assert "\x1b" not in out, out
    assert VISIBLE in out  # the title, as written
    assert "error: boom [/] \\x1b[2J [bold]" in out
    assert "decision: design approve by [/] at" in out and "ok [/] \\x1b[2J" in out
    row = next(line for line in out.splitlines() if "│ verify" in line)
    assert "│ [/]" in row  # the phase's outcome cell
    assert result.exit_code == 1  # the task failed: the exit code says so, not a crash
    # --json stays exact: the same text, control characters and all.
    data = json.loads(runner.invoke(app, ["status", "wf-1", "--json"]).output)
    assert data["title"] == HOSTILE and data["error"] == "boom [/] \x1b[2J [bold]"


def test_status_of_a_running_hostile_task_exits_0(fake: FakeClient) -> None:
    fake._status = _hostile_status().model_copy(update={"state": TaskState.RUNNING})
    result = runner.invoke(app, ["status", "wf-1"])
    assert result.exit_code == 0, result.output
    assert VISIBLE in result.output and "\x1b" not in result.output


def test_list_prints_a_hostile_title_literally(fake: FakeClient) -> None:
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0, result.output
    assert VISIBLE in result.output and "verify [/]" in result.output
    assert "plain" in result.output and "\x1b" not in result.output


def test_an_approver_with_markup_is_reported_without_crashing(fake: FakeClient) -> None:
    fake._status = _hostile_status().model_copy(update={"state": TaskState.AWAITING_APPROVAL})
    result = runner.invoke(app, ["approve", "wf-1", "--phase", "design", "--approver", "[/]"])
    assert result.exit_code == 0, result.output
    assert "approved design as [/]" in result.output


def test_plan_check_with_tasks_an_integer_names_the_field(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"title: P\nrepo: {tmp_path}\ntasks: 5\n", encoding="utf-8")
    result = runner.invoke(
        app, ["plan", "check", str(plan)], env={"TEMPORAL_ADDRESS": "127.0.0.1:1"}
    )
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: invalid input"), result.output
    assert "tasks" in lines[0] and "Traceback" not in result.output


@pytest.mark.parametrize("ended", ["completed", "failed"])
def test_cancel_of_an_ended_task_says_so_and_exits_1(fake: FakeClient, ended: str) -> None:
    fake._execution = ended
    result = runner.invoke(app, ["cancel", "wf-1"])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "already ended" in lines[0] and ended in lines[0], result.output
    assert "cancellation requested" not in result.output
    assert fake.cancelled == []
    fake._execution = "running"  # a running task is still cancelled as before
    result = runner.invoke(app, ["cancel", "wf-1"])
    assert result.exit_code == 0, result.output
    assert "cancellation requested for wf-1" in result.output and fake.cancelled == ["wf-1"]
