"""Malformed signals, updates, queries and raw starts never wedge a task (issue: reliability).

Each message that does not fit is recorded in ``ignored_messages`` and dropped; a raw start
with a missing or undecodable input fails the workflow at once, non-retryable.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.client import WorkflowFailureError, WorkflowUpdateFailedError
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from implflow.models import ApproveSignal, ImplementationResult, TaskState, TaskStatus
from tests.helpers import AGENT, WorkerFactory, new_id


def _task(repo: Path) -> dict[str, Any]:
    return {
        "title": "Hostile",
        "description": "Malformed messages must not wedge the task.",
        "repo": str(repo),
        "executor": "shell",
        "commands": {"review": AGENT, "design": AGENT},
        "skip": ["implement", "validate", "optimize", "test", "document", "verify"],
        "approval": {"after": ["design"]},
    }


def _raw(encoding: bytes, data: bytes = b"") -> RawValue:
    return RawValue(Payload(metadata={"encoding": encoding}, data=data))


async def _waiting(h: Any) -> TaskStatus:
    for _ in range(200):
        st: TaskStatus = await h.query("status", result_type=TaskStatus)
        if st.state == TaskState.AWAITING_APPROVAL:
            return st
        await __import__("asyncio").sleep(0.1)
    raise AssertionError("task never waited for approval")


async def test_malformed_signals_are_recorded_and_dropped(
    ts_env: WorkflowEnvironment, run_worker: WorkerFactory, repo: Path
) -> None:
    async with run_worker() as (_, tq):
        h = await ts_env.client.start_workflow(
            "ImplementationWorkflow",
            _task(repo),
            id=new_id(),
            task_queue=tq,
            result_type=ImplementationResult,
        )
        await _waiting(h)
        await h.signal("approve", _raw(b"binary/plain", b"approve please"))
        await h.signal("approve", _raw(b"binary/null"))
        await h.signal("approve")  # no payload at all
        await h.signal(
            "approve",
            args=[
                ApproveSignal(phase="design", approver="a"),
                ApproveSignal(phase="design", approver="b"),
            ],
        )
        await h.signal("reject", {"phase": "design", "approver": "x", "feedback": "y" * 70_000})
        await h.signal("abort", {"phase": "design", "approver": 7})  # strict: no coercion
        await h.signal("pause", _raw(b"binary/plain", b"zzz"))  # must not pause the task
        with pytest.raises(WorkflowUpdateFailedError):
            await h.execute_update("decide", _raw(b"binary/plain", b"x"))
        with pytest.raises(WorkflowUpdateFailedError):
            await h.execute_update("decide")
        st = await _waiting(h)  # queries still answer: no workflow task failed
        assert not st.paused
        assert st.decisions == []
        ignored = st.ignored_messages
        assert len(ignored) == 7, ignored
        assert "got bytes" in ignored[0]
        assert "got no value" in ignored[1]
        assert "got 0" in ignored[2]
        assert "got 2" in ignored[3]
        assert "byte limit" in ignored[4]
        assert "approver" in ignored[5]
        assert ignored[6].startswith("pause signal")
        # A valid approval still applies afterwards.
        await h.signal("approve", ApproveSignal(phase="design", approver="lead"))
        result = await h.result()
        assert result.state == TaskState.COMPLETED
        assert [d.approver for d in result.decisions] == ["lead"]


@pytest.mark.parametrize(
    "args",
    [
        pytest.param([], id="no-input"),
        pytest.param(["two", "inputs"], id="two-inputs"),
        pytest.param([_raw(b"binary/plain", b"title=x")], id="binary-input"),
        pytest.param([_raw(b"foo/bar", b"?")], id="unknown-encoding"),
        pytest.param([_raw(b"json/plain", b"{not json")], id="broken-json"),
        pytest.param(
            [{"title": "t", "description": "d", "repo": "/r", "record": "yes"}], id="coerced-bool"
        ),
        pytest.param(
            [{"title": "t", "description": "d", "repo": "/r", "max_repair_rounds": "3"}],
            id="coerced-int",
        ),
        pytest.param(
            [{"title": "t", "description": "d", "repo": "/r", "approval": {"deadline_s": 1e12}}],
            id="huge-deadline",
        ),
        pytest.param(
            [
                {
                    "title": "t",
                    "description": "d",
                    "repo": "/r",
                    "phases": [
                        {
                            "name": "only",
                            "retry": {"initial_interval_s": 60, "maximum_interval_s": 5},
                        }
                    ],
                }
            ],
            id="retry-intervals",
        ),
    ],
)
async def test_bad_raw_starts_fail_at_once_non_retryable(
    ts_env: WorkflowEnvironment, run_worker: WorkerFactory, args: list[Any]
) -> None:
    async with run_worker() as (_, tq):
        h = await ts_env.client.start_workflow(
            "ImplementationWorkflow", args=args, id=f"bad-{uuid.uuid4().hex[:8]}", task_queue=tq
        )
        with pytest.raises(WorkflowFailureError) as info:
            await h.result()
        cause = info.value.cause
        assert isinstance(cause, ApplicationError)
        assert cause.type == "InvalidInput"
        assert cause.non_retryable
        assert "\n" not in cause.message
        # Failed in its first workflow task: never a retried task.
        events = [e async for e in h.fetch_history_events()]
        failed_tasks = [e for e in events if e.HasField("workflow_task_failed_event_attributes")]
        assert failed_tasks == []


async def test_a_plan_with_a_missing_or_broken_input_fails_at_once(
    ts_env: WorkflowEnvironment, run_worker: WorkerFactory
) -> None:
    async with run_worker() as (_, tq):
        for args in ([], [_raw(b"binary/plain", b"tasks: []")], [{"title": "t"}]):
            h = await ts_env.client.start_workflow(
                "PlanWorkflow", args=args, id=f"badplan-{uuid.uuid4().hex[:8]}", task_queue=tq
            )
            with pytest.raises(WorkflowFailureError) as info:
                await h.result()
            cause = info.value.cause
            assert isinstance(cause, ApplicationError) and cause.type == "InvalidInput"
            events = [e async for e in h.fetch_history_events()]
            assert not [e for e in events if e.HasField("workflow_task_failed_event_attributes")]


async def test_a_used_workflow_id_is_refused_never_answered_with_old_results(
    ts_env: WorkflowEnvironment, run_worker: WorkerFactory, repo: Path
) -> None:
    from implflow.client import ImplflowClient
    from implflow.errors import InvalidInputError

    task = {**_task(repo), "approval": {"after": []}}
    async with run_worker() as (_, tq):
        flow = ImplflowClient(ts_env.client, tq)
        wid = await flow.start(task, new_id("reuse"))
        done = await ts_env.client.get_workflow_handle(wid).result()
        assert done["state"] == "completed"
        with pytest.raises(InvalidInputError, match="already used") as info:
            await flow.start({**task, "description": "new work, same id"}, wid)
        assert "\n" not in str(info.value)
