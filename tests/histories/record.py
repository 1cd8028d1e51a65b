"""Record the workflow histories the replay test checks: ``python -m tests.histories.record``.

Only missing recordings are made (``--all`` re-records everything).
Re-record only on purpose: a history recorded by an older workflow version is
exactly what proves a change is still replay-compatible. When a change is not,
guard it with ``workflow.patched`` instead of re-recording.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.api.common.v1 import Payload
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.common import RawValue
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.phases import ImplActivities
from implflow.binaries import find_binary
from implflow.converter import data_converter
from implflow.models import (
    ApproveSignal,
    DecideInput,
    GateInput,
    GateResult,
    ImplementationInput,
    RejectSignal,
    TaskStatus,
)
from implflow.server import ensure_search_attributes
from implflow.settings import Settings
from tests.helpers import git_repo
from workflows import WORKFLOWS

HERE = Path(__file__).parent

Scenario = Callable[[WorkflowHandle[Any, Any]], Awaitable[None]]


async def _waiting(h: WorkflowHandle[Any, Any], phase: str) -> None:
    for _ in range(300):
        st = await h.query("status", result_type=TaskStatus)
        if st.pending_approval and st.pending_approval.phase == phase:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(phase)


async def approve_path(h: WorkflowHandle[Any, Any]) -> None:
    await _waiting(h, "design")
    await h.signal("approve", ApproveSignal(phase="design", approver="lead"))
    await _waiting(h, "verify")
    await h.execute_update("decide", DecideInput(phase="verify", decision="approve", approver="qa"))
    await h.result()


async def reject_and_rewind(h: WorkflowHandle[Any, Any]) -> None:
    await _waiting(h, "design")
    await h.signal(
        "reject",
        RejectSignal(
            phase="design", approver="lead", feedback="add rate limiting", rewind_to="review"
        ),
    )
    await _waiting(h, "design")
    await h.signal("approve", ApproveSignal(phase="design", approver="lead"))
    await _waiting(h, "verify")
    await h.signal("approve", ApproveSignal(phase="verify", approver="qa"))
    await h.result()


async def deadline_expiry(h: WorkflowHandle[Any, Any]) -> None:
    await _waiting(h, "design")
    try:
        await h.result()
    except WorkflowFailureError:
        return
    raise AssertionError("expected the approval to expire")


async def gates_repair_and_waive(h: WorkflowHandle[Any, Any]) -> None:
    await _waiting(h, "validate")  # validate's gate fails twice: repair, then a person waives
    await h.execute_update(
        "decide", DecideInput(phase="validate", decision="waive", approver="lead", comment="ok")
    )
    await _waiting(h, "verify")
    await h.signal("approve", ApproveSignal(phase="verify", approver="qa"))
    await h.result()


async def gate_decisions(h: WorkflowHandle[Any, Any]) -> None:
    # Since gate-decisions-v1: a nothing-to-do phase whose gate fails goes to a person at once;
    # a malformed signal and a plain approve of a failed gate are ignored, a waive takes a reason.
    await _waiting(h, "validate")
    await h.signal("approve", RawValue(Payload(metadata={"encoding": b"binary/plain"}, data=b"x")))
    await h.signal("approve", ApproveSignal(phase="validate", approver="lead"))
    await h.execute_update(
        "decide",
        DecideInput(phase="validate", decision="waive", approver="lead", comment="known"),
    )
    await _waiting(h, "verify")
    await h.signal("approve", ApproveSignal(phase="verify", approver="qa"))
    await h.result()


@activity.defn(name="run_gate")
async def scripted_gate(inp: GateInput) -> GateResult:
    """Passes every gate but validate's, so the recording covers repair and waiver."""
    passed = inp.phase != "validate"
    return GateResult(
        phase=inp.phase,
        round=inp.round,
        passed=passed,
        failure_summary="" if passed else "1 high-severity finding (B602)",
        report_dir=f".implflow/reports/{inp.phase}/{inp.round}",
    )


SCENARIOS: dict[str, tuple[dict[str, Any], Scenario]] = {
    "approve_path": ({}, approve_path),
    "reject_and_rewind": ({}, reject_and_rewind),
    "deadline_expiry": (
        {"approval": {"after": ["design"], "remind_after_s": 3600, "deadline_s": 7200}},
        deadline_expiry,
    ),
    "gates_repair_and_waive": (
        {"gates": "on", "max_repair_rounds": 1, "approval": {"after": ["verify"]}},
        gates_repair_and_waive,
    ),
    "gate_decisions": (
        {"gates": "on", "max_repair_rounds": 2, "approval": {"after": ["verify"]}},
        gate_decisions,
    ),
}


async def main() -> None:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=find_binary("temporal-test-server"),
        data_converter=data_converter,
    )
    await ensure_search_attributes(env.client, register=True)
    async with env:
        with tempfile.TemporaryDirectory() as tmp:
            tq = f"record-{uuid.uuid4().hex[:8]}"
            repo = git_repo(Path(tmp) / "repo")
            acts = ImplActivities(Settings(data_dir=Path(tmp) / "data"))
            async with Worker(
                env.client,
                task_queue=tq,
                workflows=WORKFLOWS,
                activities=[acts.prepare_task, acts.run_phase, scripted_gate, acts.send_reminder],
            ):
                for name, (extra, scenario) in SCENARIOS.items():
                    if (HERE / f"{name}.json").exists() and "--all" not in sys.argv:
                        continue  # old recordings are the proof of compatibility: keep them
                    inp = ImplementationInput.model_validate(
                        {
                            "title": f"replay {name}",
                            "description": "Recorded for replay tests.",
                            "repo": str(repo),
                            "executor": "shell",
                            **extra,
                        }
                    )
                    h = await env.client.start_workflow(
                        "ImplementationWorkflow", inp, id=f"replay-{name}", task_queue=tq
                    )
                    await scenario(h)
                    history = await h.fetch_history()
                    (HERE / f"{name}.json").write_text(history.to_json(), encoding="utf-8")
                    print(f"recorded {name}: {len(history.events)} events")


if __name__ == "__main__":
    asyncio.run(main())
