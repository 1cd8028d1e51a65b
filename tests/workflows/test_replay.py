"""Replay saved histories against the current workflow code.

A change to ImplementationWorkflow that would break running workflows (a new,
removed or reordered command without ``workflow.patched``) fails here.
Histories are recorded by ``python -m tests.histories.record``.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from implflow.converter import data_converter
from implflow.models import ImplementationInput, ImplementationResult
from workflows import ImplementationWorkflow

HISTORIES = sorted((Path(__file__).parents[1] / "histories").glob("*.json"))


def load(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(f"replay-{path.stem}", path.read_text(encoding="utf-8"))


def test_the_three_scenarios_are_recorded() -> None:
    assert {p.stem for p in HISTORIES} >= {
        "approve_path",  # recorded before gates existed: replays through the unpatched path
        "reject_and_rewind",
        "deadline_expiry",
        "gates_repair_and_waive",  # the patched path: gates, a repair round, a waiver
        "gate_decisions",  # gate-decisions-v1: no repairs for nothing-to-do, malformed signals
    }


@pytest.mark.parametrize("path", HISTORIES, ids=lambda p: p.stem)
async def test_history_replays_on_current_code(path: Path) -> None:
    replayer = Replayer(workflows=[ImplementationWorkflow], data_converter=data_converter)
    await replayer.replay_workflow(load(path))


@workflow.defn(name="ImplementationWorkflow")
class _ChangedWorkflow:
    """A careless edit: one timer before the first activity, no ``workflow.patched``."""

    @workflow.run
    async def run(self, task: ImplementationInput) -> ImplementationResult:
        await workflow.sleep(timedelta(seconds=1))
        raise AssertionError("replay should have failed before this point")


async def test_an_unguarded_change_is_caught() -> None:
    replayer = Replayer(workflows=[_ChangedWorkflow], data_converter=data_converter)
    result = await replayer.replay_workflow(load(HISTORIES[0]), raise_on_replay_failure=False)
    assert isinstance(result.replay_failure, NondeterminismError)
