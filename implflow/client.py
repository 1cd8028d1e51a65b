"""The orchestrator API: what a program (or the ``implflow`` CLI) calls.

    from implflow.client import ImplflowClient
    from implflow.models import ImplementationInput

    async with await ImplflowClient.connect() as flow:   # or ImplflowClient(existing_client)
        wid = await flow.start(ImplementationInput(title=..., description=..., repo=...))
        async for status in flow.watch(wid):
            print(status.state, status.current_phase)
        await flow.approve(wid, phase="design", approver="lead")

Every call validates its input before it reaches Temporal and raises
``InvalidInputError`` (one line, naming the field) on bad input.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any, Literal, TypeVar

import pydantic
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDReusePolicy

from implflow import TASK_QUEUE, WORKFLOW_TYPE
from implflow.connection import connect
from implflow.converter import describe_validation_error
from implflow.errors import ImplflowError, InvalidInputError
from implflow.models import (
    ApproveSignal,
    DecideInput,
    Decision,
    ImplementationInput,
    ImplementationResult,
    PauseSignal,
    RejectSignal,
    TaskState,
    TaskStatus,
)

M = TypeVar("M", bound=pydantic.BaseModel)

WAITING_STATES = {TaskState.AWAITING_APPROVAL, TaskState.PAUSED}
FINAL_STATES = {TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED}


def parse(model: type[M], data: Mapping[str, Any] | str | M) -> M:
    """Validate ``data`` (a dict, a JSON string or a model) as ``model``; one-line errors."""
    try:
        if isinstance(data, model):
            return model.model_validate(data.model_dump())
        if isinstance(data, str):
            return model.model_validate_json(data)
        return model.model_validate(data)
    except pydantic.ValidationError as err:
        raise InvalidInputError(describe_validation_error(err)) from None


class ImplflowClient:
    """Start, steer and observe implementation tasks."""

    def __init__(self, client: Client, task_queue: str = TASK_QUEUE) -> None:
        self.client = client
        self.task_queue = task_queue

    @classmethod
    async def connect(
        cls, address: str | None = None, namespace: str | None = None, task_queue: str = TASK_QUEUE
    ) -> ImplflowClient:
        """Connect using ``TEMPORAL_*`` environment / envconfig profile (see README)."""
        return cls(await connect(address, namespace), task_queue)

    async def __aenter__(self) -> ImplflowClient:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def _handle(self, workflow_id: str) -> WorkflowHandle[Any, Any]:
        return self.client.get_workflow_handle(workflow_id)

    async def start(
        self,
        task: ImplementationInput | Mapping[str, Any] | str,
        workflow_id: str | None = None,
    ) -> str:
        """Start a task; returns its workflow id (default ``impl-<12 hex>``)."""
        inp = parse(ImplementationInput, task)
        wid = workflow_id or f"impl-{uuid.uuid4().hex[:12]}"
        await self.client.start_workflow(
            WORKFLOW_TYPE,
            inp,
            id=wid,
            task_queue=self.task_queue,
            static_summary=inp.title,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
        return wid

    async def approve(self, workflow_id: str, phase: str, approver: str, comment: str = "") -> None:
        """Signal ``approve`` (fire and forget; use ``decide`` to be told if it was refused)."""
        msg = parse(ApproveSignal, {"phase": phase, "approver": approver, "comment": comment})
        await self._handle(workflow_id).signal("approve", msg)

    async def reject(
        self,
        workflow_id: str,
        phase: str,
        approver: str,
        feedback: str,
        rewind_to: str | None = None,
    ) -> None:
        """Signal ``reject``: re-run ``rewind_to`` (default the gated phase) with ``feedback``."""
        msg = parse(
            RejectSignal,
            {"phase": phase, "approver": approver, "feedback": feedback, "rewind_to": rewind_to},
        )
        await self._handle(workflow_id).signal("reject", msg)

    async def decide(
        self,
        workflow_id: str,
        phase: str,
        decision: Literal["approve", "reject", "waive", "abort"],
        approver: str,
        comment: str = "",
        feedback: str = "",
        rewind_to: str | None = None,
        budget_usd: float | None = None,
    ) -> Decision:
        """Update ``decide``: returns the recorded decision, or raises with the refusal reason.

        ``approve`` passes an approval point, answers review questions (``comment``), or
        grants more budget (``budget_usd``); ``waive`` passes a failed quality gate
        (``comment`` is the reason); ``reject`` rewinds with ``feedback``; ``abort`` ends it.
        """
        msg = parse(
            DecideInput,
            {
                "phase": phase,
                "decision": decision,
                "approver": approver,
                "comment": comment,
                "feedback": feedback,
                "rewind_to": rewind_to,
                "budget_usd": budget_usd,
            },
        )
        try:
            recorded: Decision = await self._handle(workflow_id).execute_update(
                "decide", msg, result_type=Decision
            )
            return recorded
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            raise ImplflowError(
                f"decision refused: {getattr(cause, 'message', None) or cause}"
            ) from None

    async def pause(self, workflow_id: str, by: str = "", reason: str = "") -> None:
        await self._handle(workflow_id).signal("pause", PauseSignal(by=by, reason=reason))

    async def resume(self, workflow_id: str, by: str = "") -> None:
        await self._handle(workflow_id).signal("resume", PauseSignal(by=by))

    async def status(self, workflow_id: str) -> TaskStatus:
        """Query ``status`` (works on running and closed tasks)."""
        status: TaskStatus = await self._handle(workflow_id).query("status", result_type=TaskStatus)
        return status

    async def result(self, workflow_id: str) -> ImplementationResult:
        handle = self.client.get_workflow_handle(workflow_id, result_type=ImplementationResult)
        result: ImplementationResult = await handle.result()
        return result

    async def cancel(self, workflow_id: str) -> None:
        """Request cancellation: the running phase is stopped and the task ends ``cancelled``."""
        await self._handle(workflow_id).cancel()

    async def list(
        self, state: str | None = None, query: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        """Tasks by ``ImplState`` (or any visibility query), newest first."""
        clauses = [f"WorkflowType = '{WORKFLOW_TYPE}'"]
        if state:
            valid = {s.value for s in TaskState}
            if state not in valid:
                raise InvalidInputError(f"invalid input: state: must be one of {sorted(valid)}")
            clauses.append(f"ImplState = '{state}'")
        if query:
            clauses.append(f"({query})")
        rows: list[dict[str, Any]] = []
        async for wf in self.client.list_workflows(" AND ".join(clauses), limit=limit):
            sa = wf.search_attributes
            rows.append(
                {
                    "workflow_id": wf.id,
                    "status": wf.status.name.lower() if wf.status else None,
                    "state": (sa.get("ImplState") or [None])[0],
                    "phase": (sa.get("ImplPhase") or [None])[0],
                    "started": wf.start_time.isoformat() if wf.start_time else None,
                }
            )
        return rows

    async def watch(
        self, workflow_id: str, interval_s: float = 1.0, until_waiting: bool = True
    ) -> AsyncIterator[TaskStatus]:
        """Yield the status whenever it changes, until the task ends or waits for a person."""
        last: str | None = None
        while True:
            status = await self.status(workflow_id)
            snapshot = status.model_dump_json(exclude={"ignored_messages"})
            if snapshot != last:
                last = snapshot
                yield status
            if status.state in FINAL_STATES:
                return
            if until_waiting and status.state in WAITING_STATES:
                return
            await asyncio.sleep(interval_s)
