"""``BareWorkflow``: N no-op activities in a row, optionally with one approval wait.

The baseline that implflow's per-phase cost is measured against: the same Temporal round
trips (one activity per step, pydantic payloads, a signal to pass an approval point) with
nothing inside the activities.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import SearchAttributeKey

with workflow.unsafe.imports_passed_through():
    # The models must be the same classes inside the sandbox as in the converter.
    from bench.bare import Approve, BareInput, StepInput, StepResult, bare_step


IMPL_STATE = SearchAttributeKey.for_keyword("ImplState")


@workflow.defn(name="BareWorkflow")
class BareWorkflow:
    """Runs ``steps`` no-op activities; waits for ``approve`` after ``approval_after`` of them."""

    def __init__(self) -> None:
        self._approved = False

    @workflow.run
    async def run(self, inp: BareInput) -> list[StepResult]:
        results = []
        wid = workflow.info().workflow_id
        for i in range(inp.steps):
            if inp.approval_after is not None and i == inp.approval_after:
                # Shown as implflow shows it, so one visibility query counts who waits.
                workflow.upsert_search_attributes([IMPL_STATE.value_set("awaiting_approval")])
                await workflow.wait_condition(lambda: self._approved)
                workflow.upsert_search_attributes([IMPL_STATE.value_set("running")])
            results.append(
                await workflow.execute_activity(
                    bare_step,
                    StepInput(workflow_id=wid, step=f"step-{i}"),
                    start_to_close_timeout=timedelta(minutes=5),
                    heartbeat_timeout=timedelta(seconds=60),
                )
            )
        return results

    @workflow.signal
    def approve(self, msg: Approve) -> None:
        self._approved = True
