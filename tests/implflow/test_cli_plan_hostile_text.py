"""`implflow plan ...` prints text it did not write (titles, ids, errors, evidence) as it is.

Rich markup in such text (``[/]``, ``[bold]``) is shown literally instead of crashing the
command with a ``MarkupError``, and terminal control characters (``\\x1b[2J``) are shown
visibly instead of driving the terminal; ``--json`` stays exact. A fake plan client stands
in for the server.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

import implflow.cli
import implflow.cli_plan
from implflow.cli import app
from implflow.plans import (
    IntegrationStatus,
    PlanPending,
    PlanStatus,
    PlanTaskStatus,
    PlanTotals,
    TaskRun,
    TaskState,
)

runner = CliRunner()
NOWHERE = {"TEMPORAL_ADDRESS": "127.0.0.1:1"}  # nothing can start: no server there
HOSTILE = "fix [/bold] and [/] [bold] \x1b[2J here"
VISIBLE = "fix [/bold] and [/] [bold] \\x1b[2J here"  # how a person sees it
ERROR = "boom [/] \x1b[2J [bold]"
AT = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def _hostile_plan() -> PlanStatus:
    return PlanStatus(
        plan_id="plan-1",
        title=HOSTILE,
        state=TaskState.FAILED,
        tasks=[
            PlanTaskStatus(
                id="api",
                title=HOSTILE,
                state=TaskState.AWAITING_APPROVAL,
                phase="verify [/]",
                waiting="approval of [bold]",
                runs=[
                    TaskRun(workflow_id="plan-1.api.1", candidate=1, label="[/] \x1b[2J"),
                    TaskRun(workflow_id="plan-1.api.2", candidate=2, label="two"),
                ],
            ),
        ],
        totals=PlanTotals(tasks=1, waiting=1),
        pending=PlanPending(task="api", phase="merge", evidence="evidence [/] \x1b[2J", since=AT),
        integration=IntegrationStatus(
            branch="implflow/plan/plan-1 [/]", commit="abc123", merged=["api [bold]"]
        ),
        error=ERROR,
    )


class FakePlans:
    """What the plan commands call, answering from one canned status and list."""

    def __init__(self, status: PlanStatus) -> None:
        self.status = status

    async def plan_status(self, plan_id: str) -> PlanStatus:
        return self.status

    async def list_plans(self, limit: int = 50) -> list[dict[str, Any]]:
        return [
            {"plan_id": "plan-[/]", "state": "failed [bold]", "stage": "tasks", "started": None},
            {"plan_id": "plan-\x1b[2J", "state": "completed", "stage": "done", "started": None},
        ]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakePlans:
    plans = FakePlans(_hostile_plan())

    async def factory() -> Any:
        return object()  # the plan commands reach the server only through `_plans`

    monkeypatch.setattr(implflow.cli, "client_factory", factory)
    monkeypatch.setattr(implflow.cli_plan, "_plans", lambda flow: plans)
    monkeypatch.setenv("COLUMNS", "300")  # one table row per line: nothing wraps
    monkeypatch.setattr(implflow.cli, "_console", None)  # a console that reads COLUMNS
    return plans


def _no_crash(result: Any) -> str:
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    out: str = result.output
    assert "MarkupError" not in out and "closing tag" not in out, out
    assert "\x1b" not in out, out
    return out


def test_plan_status_prints_markup_and_control_characters_literally(fake: FakePlans) -> None:
    result = runner.invoke(app, ["plan", "status", "plan-1"])
    out = _no_crash(result)
    assert result.exit_code == 0, out
    assert f"{VISIBLE}  (plan-1)" in out  # the title, as written
    assert "error: boom [/] \\x1b[2J [bold]" in out
    row = next(line for line in out.splitlines() if "│ api" in line)
    assert "verify [/]" in row and "approval of [bold]" in row  # the table's cells
    assert "candidate 1: not started [/] \\x1b[2J" in out
    assert "evidence [/] \\x1b[2J" in out
    assert "implflow/plan/plan-1 [/] @ abc123 (merged api [bold];" in out
    # --json stays exact: the same text, control characters and all.
    as_json = runner.invoke(app, ["plan", "status", "plan-1", "--json"])
    data = json.loads(as_json.output)
    assert data["title"] == HOSTILE and data["error"] == ERROR
    assert data["tasks"][0]["runs"][0]["label"] == "[/] \x1b[2J"


def test_plan_status_of_a_running_hostile_plan_exits_0(fake: FakePlans) -> None:
    fake.status = PlanStatus(plan_id="plan-1", title="[bold]x[/] \x1b[2J", state=TaskState.RUNNING)
    result = runner.invoke(app, ["plan", "status", "plan-1"])
    out = _no_crash(result)
    assert result.exit_code == 0, out
    assert "[bold]x[/] \\x1b[2J  (plan-1)" in out and "state: running" in out


def test_plan_list_prints_hostile_cells_literally(fake: FakePlans) -> None:
    result = runner.invoke(app, ["plan", "list"])
    out = _no_crash(result)
    assert result.exit_code == 0, out
    assert "plan-[/]" in out and "failed [bold]" in out and "plan-\\x1b[2J" in out
    rows = json.loads(runner.invoke(app, ["plan", "list", "--json"]).output)
    assert [r["plan_id"] for r in rows] == ["plan-[/]", "plan-\x1b[2J"]


def test_plan_check_prints_a_hostile_title_literally(tmp_path: Path) -> None:
    data = {"title": HOSTILE, "repo": str(tmp_path), "tasks": [{"id": "a", "title": HOSTILE}]}
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    result = runner.invoke(app, ["plan", "check", str(path)], env=NOWHERE)
    out = _no_crash(result)
    assert result.exit_code == 0, out
    assert f"{VISIBLE}: 1 tasks" in out and "order: a" in out
    as_json = runner.invoke(app, ["plan", "check", str(path), "--json"], env=NOWHERE)
    assert json.loads(as_json.output)["title"] == HOSTILE
