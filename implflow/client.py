"""The orchestrator API: what a program (or the ``implflow`` CLI) calls.

    from implflow.client import ImplflowClient
    from implflow.exit import run


    async def main() -> None:
        flow = await ImplflowClient.connect()  # or ImplflowClient(existing_client)
        wid = await flow.start({"title": "...", "description": "...", "repo": "/path/to/repo"})
        for phase in ("design", "verify"):  # the default policy's two approvals
            async for status in flow.watch(wid):  # until it ends or waits for a person
                print(status.state, status.current_phase)
            await flow.decide(wid, phase=phase, decision="approve", approver="lead")
        print((await flow.result(wid)).branch)


    run(main())  # asyncio.run, then os._exit: see implflow.exit

Every call validates its input before it reaches Temporal and raises
``InvalidInputError`` (one line, naming the field) on bad input.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar

import pydantic
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from implflow import TASK_QUEUE, WORKFLOW_TYPE
from implflow.connection import connect
from implflow.converter import describe_validation_error
from implflow.errors import ImplflowError, InvalidInputError
from implflow.layout import TRAILERS_FORMAT, parse_trailers, relative_repo
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
from implflow.plans import (
    PLAN_ID_PATTERN,
    PLAN_WORKFLOW_TYPE,
    PlanDecideInput,
    PlanDecision,
    PlanInput,
    PlanResult,
    PlanStatus,
    default_plan_id,
    integration_branch,
    parse_plan,
    plan_digest,
)

M = TypeVar("M", bound=pydantic.BaseModel)

WAITING_STATES = frozenset({TaskState.AWAITING_APPROVAL, TaskState.PAUSED})
FINAL_STATES = frozenset({TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED})

EXECUTOR_NAMES: tuple[str, ...] = ("shell", "claude-code", "codex", "llm", "replay")
"""The executors a worker knows (``activities.executors.EXECUTORS``; a test keeps them equal).

Named here so a client can refuse a misspelt executor without importing the executors."""

ENDED_STATES: dict[WorkflowExecutionStatus, str] = {
    WorkflowExecutionStatus.COMPLETED: "completed",
    WorkflowExecutionStatus.FAILED: "failed",
    WorkflowExecutionStatus.CANCELED: "cancelled",
    WorkflowExecutionStatus.TERMINATED: "terminated",
    WorkflowExecutionStatus.TIMED_OUT: "timed_out",
    WorkflowExecutionStatus.CONTINUED_AS_NEW: "continued_as_new",
}
"""How an ended execution is shown: Temporal's own status wins over the last ``ImplState``
(a terminated task keeps whatever ``ImplState`` it had, e.g. ``awaiting_approval``)."""

_EXECUTION_STATUS_QUERY = {
    "completed": "Completed",
    "failed": "Failed",
    "cancelled": "Canceled",
}
"""``--state`` for a final state filters on Temporal's ``ExecutionStatus``."""


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


def check_executor(task: ImplementationInput) -> None:
    """Refuse an executor name no worker knows, before anything is started."""
    if task.executor is None:
        return  # the worker's IMPLFLOW_EXECUTOR; prepare checks it there
    if task.executor.strip().lower() not in EXECUTOR_NAMES:
        raise InvalidInputError(
            f"invalid input: executor: unknown executor {task.executor!r}; "
            f"known: {', '.join(EXECUTOR_NAMES)}"
        )


def execution_state(status: WorkflowExecutionStatus | None, impl_state: str | None) -> str:
    """What a task is: Temporal's status once it ended, else its ``ImplState``."""
    if status is not None and status in ENDED_STATES:
        return ENDED_STATES[status]
    return impl_state or "running"


@dataclass(frozen=True)
class RoundDiff:
    """One phase round's commit on the task branch and its diff (or ``--stat``)."""

    phase: str
    round: int
    commit: str
    branch: str
    text: str


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
        inp = _here(parse(ImplementationInput, task))
        check_executor(inp)
        wid = workflow_id or f"impl-{uuid.uuid4().hex[:12]}"
        # One id, one task: an id already used (running or ended) is refused, never
        # attached to or re-run (its branch and results belong to that run).
        started = await self._start(
            WORKFLOW_TYPE,
            inp,
            wid,
            inp.title,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        )
        if not started:
            raise InvalidInputError(
                f"invalid input: workflow id {wid!r} is already used by another task "
                "(running or ended); give another --id"
            )
        return wid

    async def _start(
        self, workflow_type: str, inp: object, wid: str, title: str, **options: Any
    ) -> bool:
        """Start ``workflow_type`` on this client's queue; False when the id is taken."""
        try:
            await self.client.start_workflow(
                workflow_type,
                inp,
                id=wid,
                task_queue=self.task_queue,
                static_summary=title,
                **options,
            )
        except WorkflowAlreadyStartedError:
            return False
        return True

    async def workers(self) -> int:
        """How many workers poll this client's task queue for workflow tasks (recently)."""
        resp = await self.client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=self.client.namespace,
                task_queue=TaskQueue(name=self.task_queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            )
        )
        return len(resp.pollers)

    async def require_worker(self, wait_s: float = 3.0) -> None:
        """Raise (naming ``implflow worker``) unless a worker polls the task queue.

        Waits up to ``wait_s`` for one that is just starting; without a worker a task would
        be accepted and then sit there, and every query of it would time out.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while not await self.workers():
            if loop.time() >= deadline:
                raise ImplflowError(
                    f"no worker polls task queue {self.task_queue!r}: start one with "
                    "`implflow worker` (or `python worker.py`), then try again"
                )
            await asyncio.sleep(0.5)

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
        grants more budget (``budget_usd``); a failed quality gate is answered only by
        ``waive`` (``comment`` is the reason, required), ``reject`` (rewinds with
        ``feedback``) or ``abort`` (ends the task).
        """
        if decision == "waive" and not comment.strip():
            raise InvalidInputError(
                "invalid input: comment: the reason is required to waive a failed gate"
            )
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
        return await self._decide_update(workflow_id, msg, Decision)

    async def _decide_update(self, workflow_id: str, msg: object, result_type: type[M]) -> M:
        """The ``decide`` update of a task or plan; a refusal is one line naming its reason."""
        try:
            recorded: M = await self._handle(workflow_id).execute_update(
                "decide", msg, result_type=result_type
            )
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            raise ImplflowError(
                f"decision refused: {getattr(cause, 'message', None) or cause}"
            ) from None
        return recorded

    async def pause(self, workflow_id: str, by: str = "", reason: str = "") -> None:
        """Signal ``pause``: the task finishes its running phase, then waits for ``resume``."""
        await self._handle(workflow_id).signal("pause", PauseSignal(by=by, reason=reason))

    async def resume(self, workflow_id: str, by: str = "") -> None:
        """Signal ``resume`` of a paused task."""
        await self._handle(workflow_id).signal("resume", PauseSignal(by=by))

    async def status(self, workflow_id: str) -> TaskStatus:
        """Query ``status`` (works on running and closed tasks)."""
        return await self._query(workflow_id, "status", TaskStatus)

    async def _query(self, workflow_id: str, name: str, result_type: type[M]) -> M:
        answer: M = await self._handle(workflow_id).query(name, result_type=result_type)
        return answer

    async def _result(self, workflow_id: str, result_type: type[M]) -> M:
        handle = self.client.get_workflow_handle(workflow_id, result_type=result_type)
        result: M = await handle.result()
        return result

    async def execution_state(self, workflow_id: str) -> str:
        """``running`` while the execution runs, else Temporal's own word for how it ended."""
        desc = await self._handle(workflow_id).describe()
        return execution_state(desc.status, None)

    async def result(self, workflow_id: str) -> ImplementationResult:
        """Wait for the task to end and return its result (raises if it failed)."""
        return await self._result(workflow_id, ImplementationResult)

    async def cancel(self, workflow_id: str) -> None:
        """Request cancellation: the running phase is stopped and the task ends ``cancelled``."""
        await self._handle(workflow_id).cancel()

    async def task_input(self, workflow_id: str) -> ImplementationInput:
        """The input the task was started with (from the first event of its history)."""
        async for event in self._handle(workflow_id).fetch_history_events(page_size=1):
            payloads = event.workflow_execution_started_event_attributes.input.payloads
            decoded = await self.client.data_converter.decode(list(payloads), [ImplementationInput])
            task: ImplementationInput = decoded[0]
            return task
        raise ImplflowError(f"workflow {workflow_id} has no history")

    async def list(
        self, state: str | None = None, query: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        """Tasks by state (or any visibility query), newest first, with their titles.

        ``state`` of a running task filters on ``ImplState`` among running executions; a
        final state filters on Temporal's ``ExecutionStatus``, so a terminated task is never
        listed as waiting.
        """
        clauses = [f"WorkflowType = '{WORKFLOW_TYPE}'"]
        if state:
            valid = {s.value for s in TaskState}
            if state not in valid:
                raise InvalidInputError(f"invalid input: state: must be one of {sorted(valid)}")
            if state in _EXECUTION_STATUS_QUERY:
                clauses.append(f"ExecutionStatus = '{_EXECUTION_STATUS_QUERY[state]}'")
            else:
                clauses.append(f"ImplState = '{state}' AND ExecutionStatus = 'Running'")
        if query:
            clauses.append(f"({query})")
        now = datetime.now(UTC)
        rows: list[dict[str, Any]] = []
        async for wf in self.client.list_workflows(" AND ".join(clauses), limit=limit):
            sa = wf.search_attributes
            impl_state = (sa.get("ImplState") or [None])[0]
            rows.append(
                {
                    "workflow_id": wf.id,
                    "title": "",
                    "state": execution_state(wf.status, str(impl_state) if impl_state else None),
                    "phase": (sa.get("ImplPhase") or [None])[0],
                    "status": wf.status.name.lower() if wf.status else None,
                    "impl_state": impl_state,
                    "started": wf.start_time.isoformat() if wf.start_time else None,
                    "age_s": _age_s(now, wf.start_time),
                }
            )
        # The title is the execution's static summary, which listing does not return.
        gate = asyncio.Semaphore(16)

        async def titled(row: dict[str, Any]) -> None:
            async with gate:
                desc = await self._handle(row["workflow_id"]).describe()
            row["title"] = await desc.static_summary() or ""

        await asyncio.gather(*(titled(r) for r in rows))
        return rows

    async def watch(
        self, workflow_id: str, interval_s: float = 1.0, until_waiting: bool = True
    ) -> AsyncIterator[TaskStatus]:
        """Yield the status whenever it changes, until the task ends or waits for a person.

        An execution that ended without the workflow saying so (terminated, timed out) ends
        the watch too; ``execution_state`` tells how.
        """
        stop = FINAL_STATES | (WAITING_STATES if until_waiting else frozenset())
        async for status in self._changes(
            workflow_id, self.status, {"ignored_messages"}, stop, interval_s
        ):
            yield status

    async def _changes(
        self,
        workflow_id: str,
        read: Callable[[str], Awaitable[M]],
        exclude: set[str],
        stop: frozenset[str],
        interval_s: float,
    ) -> AsyncIterator[M]:
        """Poll ``read`` and yield what changed (``exclude`` aside) until its ``state`` is in
        ``stop`` or the execution ended without the workflow saying so."""
        last: str | None = None
        while True:
            status = await read(workflow_id)
            snapshot = status.model_dump_json(exclude=exclude)
            if snapshot != last:
                last = snapshot
                yield status
            if getattr(status, "state", None) in stop:
                return
            if await self.execution_state(workflow_id) != "running":
                return
            await asyncio.sleep(interval_s)

    async def diff(
        self,
        workflow_id: str,
        phase: str | None = None,
        round: int | None = None,
        stat: bool = False,
    ) -> RoundDiff:
        """A phase round's diff from the task branch (default: the latest round).

        The round's commit is found by its trailers (``Implflow-Phase``, ``Implflow-Round``);
        implflow's own bookkeeping (``.implflow/runs``, ``.implflow/logs``) is left out.
        The repository must be readable from here: a path on this machine or a git URL.
        """
        from implflow.layout import branch_name, is_url

        repo = (await self.task_input(workflow_id)).repo
        branch = branch_name(workflow_id)
        return await asyncio.to_thread(
            _round_diff, repo, is_url(repo), branch, workflow_id, phase, round, stat
        )


_Located = TypeVar("_Located", ImplementationInput, PlanInput)


def _here(inp: _Located) -> _Located:
    """A relative (or ``~``) repository path is this program's, as on the command line:
    made absolute here, since a worker would resolve it against its own directory."""
    if not relative_repo(inp.repo):
        return inp
    return inp.model_copy(update={"repo": str(Path(inp.repo).expanduser().resolve())})


def _age_s(now: datetime, started: datetime | None) -> int | None:
    return round((now - started).total_seconds()) if started else None


def _git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )
    if proc.returncode != 0:
        raise ImplflowError(f"git {args[0]} failed: {proc.stderr.strip()[-300:]}")
    return proc.stdout


def _round_diff(
    repo: str,
    url: bool,
    branch: str,
    workflow_id: str,
    phase: str | None,
    round_no: int | None,
    stat: bool,
) -> RoundDiff:
    with tempfile.TemporaryDirectory(prefix="implflow-diff-") as scratch:
        if url:
            where = Path(scratch) / "branch.git"
            _git(
                Path(scratch),
                "clone",
                "--quiet",
                "--bare",
                "--single-branch",
                "--branch",
                branch,
                "--",
                repo,
                str(where),
            )
        else:
            where = Path(repo).expanduser()
            if not where.is_dir():
                raise ImplflowError(
                    f"repository {repo} is not on this machine: run `implflow diff` where it "
                    f"is, or read branch {branch} there with git"
                )
        ref = f"refs/heads/{branch}"
        if subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", ref], cwd=where, capture_output=True
        ).returncode:
            raise ImplflowError(f"branch {branch} is not in {repo} yet: no phase has finished")
        rounds = _rounds(
            _git(where, "log", "--reverse", f"--format={ROUNDS_LOG_FORMAT}", ref), workflow_id
        )
        chosen = [
            r
            for r in rounds
            if (phase is None or r[0] == phase) and (round_no is None or r[1] == round_no)
        ]
        if not chosen:
            seen = ", ".join(f"{p} r{n}" for p, n, _ in rounds) or "none"
            want = f"{phase or 'any phase'}" + (f" round {round_no}" if round_no else "")
            raise ImplflowError(f"no commit for {want} on {branch}; rounds there: {seen}")
        name, number, sha = chosen[-1]
        text = _git(
            where,
            "diff",
            "--no-color",
            *(["--stat"] if stat else []),
            f"{sha}^",
            sha,
            "--",
            ".",
            ":(exclude).implflow/runs",
            ":(exclude).implflow/logs",
        )
        return RoundDiff(phase=name, round=number, commit=sha, branch=branch, text=text)


ROUNDS_LOG_FORMAT = f"%H%x1f{TRAILERS_FORMAT}%x1e"
"""``git log --format`` that ``_rounds`` reads: each commit's sha and its trailer block."""


def _rounds(log: str, workflow_id: str) -> list[tuple[str, int, str]]:
    """(phase, round, commit) of every phase-round commit in ``log``, oldest first.

    ``log`` is ``git log --format=ROUNDS_LOG_FORMAT``: only each message's trailer block, as
    git parses it, counts; never a line of the summary above it.
    """
    found: list[tuple[str, int, str]] = []
    for entry in log.split("\x1e"):
        sha, _, block = entry.strip().partition("\x1f")
        trailers = parse_trailers(block)
        phase, number = trailers.get("Implflow-Phase"), trailers.get("Implflow-Round", "")
        if (
            sha
            and phase
            and trailers.get("Implflow-Workflow") == workflow_id
            and trailers.get("Implflow-Gate") != "yes"
            and number.isdigit()
        ):
            found.append((phase, int(number), sha))
    return found


# --- plans ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanStart:
    """What ``start_plan`` did: started ``plan_id``, or found it running the same plan."""

    plan_id: str
    started: bool


def check_plan_executors(plan: PlanInput) -> None:
    """Refuse an executor name no worker knows in any task (or candidate) of ``plan``."""
    for task in plan.tasks:
        for candidate in range(1, task.count + 1):
            check_executor(plan.task_input(task, candidate))


class PlanClient(ImplflowClient):
    """Start, steer and observe plans (``PlanWorkflow``), and their tasks.

    Id policy: a plan id that is running the same plan is followed, not started again; a
    running id with a different plan is refused; a completed plan's id is refused; a failed
    or cancelled plan's id starts again (the new run takes over its finished tasks).
    """

    async def start_plan(
        self, plan: PlanInput | Mapping[str, Any] | str, plan_id: str | None = None
    ) -> PlanStart:
        """Start a plan (default id: ``default_plan_id``, the same for the same content)."""
        inp = _here(plan if isinstance(plan, PlanInput) else parse_plan(plan))
        check_plan_executors(inp)
        pid = plan_id or default_plan_id(inp)
        if not re.match(PLAN_ID_PATTERN, pid):
            raise InvalidInputError(
                f"invalid input: --id: {pid!r}: use letters, digits, '-' and '_' (at most 80)"
            )
        digest = plan_digest(inp)
        try:
            desc = await self._handle(pid).describe()
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            desc = None
        if desc is not None and desc.status == WorkflowExecutionStatus.RUNNING:
            if await desc.memo_value("plan_digest", None) != digest:
                raise ImplflowError(
                    f"plan {pid} is already running a different plan; "
                    "give another --id, or cancel it first"
                )
            return PlanStart(plan_id=pid, started=False)
        if desc is not None and desc.status == WorkflowExecutionStatus.COMPLETED:
            raise ImplflowError(
                f"plan {pid} already completed (its result is branch {integration_branch(pid)}); "
                "give another --id to run it again"
            )
        started = await self._start(  # not started: by someone else meanwhile
            PLAN_WORKFLOW_TYPE,
            inp,
            pid,
            inp.title,
            memo={"plan_digest": digest},
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
        )
        return PlanStart(plan_id=pid, started=started)

    async def plan_status(self, plan_id: str) -> PlanStatus:
        """Query the plan's ``status`` (works on running and closed plans)."""
        return await self._query(plan_id, "status", PlanStatus)

    async def plan_result(self, plan_id: str) -> PlanResult:
        """Wait for the plan to end and return its result (raises if it failed)."""
        return await self._result(plan_id, PlanResult)

    async def cancel_plan(self, plan_id: str) -> None:
        """Cancel the plan: it cancels its running tasks, waits for them, records it."""
        await self.cancel(plan_id)

    async def decide_plan(
        self,
        plan_id: str,
        task: str,
        phase: str,
        decision: Literal["approve", "waive", "abort"],
        approver: str,
        comment: str = "",
        candidate: int | None = None,
        budget_usd: float | None = None,
    ) -> PlanDecision:
        """Update ``decide`` of the plan: its own decisions (merge, pick, budget, integrate)."""
        msg = parse(
            PlanDecideInput,
            {
                "task": task,
                "phase": phase,
                "decision": decision,
                "approver": approver,
                "comment": comment,
                "candidate": candidate,
                "budget_usd": budget_usd,
            },
        )
        return await self._decide_update(plan_id, msg, PlanDecision)

    async def approve_task(
        self,
        plan_id: str,
        task: str,
        phase: str,
        approver: str,
        comment: str = "",
        candidate: int | None = None,
        budget_usd: float | None = None,
    ) -> Decision | PlanDecision:
        """Approve what ``task`` of the plan waits for at ``phase``.

        The plan's own decision when it waits for one there (``merge``, ``pick``, ``budget``,
        ``integrate``); else the task's workflow (the candidate's, with ``candidate``) gets the
        validated ``decide`` update: ``approve``, or ``waive`` on a failed gate (``comment``
        is the reason).
        """
        status = await self.plan_status(plan_id)
        pending = status.pending
        if pending is not None and (pending.task, pending.phase) == (task, phase):
            return await self.decide_plan(
                plan_id, task, phase, "approve", approver, comment, candidate, budget_usd
            )
        found = status.task(task)
        if found is None:
            known = ", ".join(t.id for t in status.tasks[:20])
            raise InvalidInputError(
                f"invalid input: task: plan {plan_id} has no task {task!r}; tasks: {known}"
            )
        runs = [
            r for r in found.runs if r.started and not r.closed and candidate in (None, r.candidate)
        ]
        waiting = [r for r in runs if r.pending_phase == phase]
        if len(waiting) > 1:
            raise InvalidInputError(
                f"invalid input: --candidate: {len(waiting)} candidates of {task} wait at {phase}"
            )
        target = waiting[0] if waiting else (runs[0] if len(runs) == 1 else None)
        if target is None:  # the task's own validator explains single runs; here, nothing runs
            raise ImplflowError(
                f"task {task} is not waiting at {phase} (state {found.state.value}"
                + (f", waiting for {found.waiting}" if found.waiting else "")
                + ")"
            )
        return await self.decide(
            target.workflow_id,
            phase,
            "waive" if target.pending_kind == "gate" else "approve",
            approver,
            comment=comment,
            budget_usd=budget_usd,
        )

    async def list_plans(self, limit: int = 50) -> list[dict[str, Any]]:
        """Plans, newest first: id, state, stage, start time."""
        rows: list[dict[str, Any]] = []
        # One row per plan: the runs a plan continued-as-new from are history, not plans.
        query = f"WorkflowType = '{PLAN_WORKFLOW_TYPE}' AND ExecutionStatus != 'ContinuedAsNew'"
        async for wf in self.client.list_workflows(query, limit=limit):
            sa = wf.search_attributes
            impl_state = (sa.get("ImplState") or [None])[0]
            rows.append(
                {
                    "plan_id": wf.id,
                    "state": execution_state(wf.status, str(impl_state) if impl_state else None),
                    "stage": (sa.get("ImplPhase") or [None])[0],
                    "started": wf.start_time.isoformat() if wf.start_time else None,
                }
            )
        return rows

    async def watch_plan(self, plan_id: str, interval_s: float = 1.0) -> AsyncIterator[PlanStatus]:
        """Yield the plan's status whenever it changes, until the plan has ended."""
        async for status in self._changes(
            plan_id, self.plan_status, {"decisions"}, FINAL_STATES, interval_s
        ):
            yield status
