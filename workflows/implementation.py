"""``ImplementationWorkflow``: one task through the pipeline, with people at the gates.

Handlers:
- signal ``approve`` {phase, approver, comment} and ``reject`` {phase, approver, feedback,
  rewind_to?} answer the pending approval; a message that does not fit (wrong phase,
  already decided, approver not allowed, unknown rewind target) is logged and ignored.
- update ``decide`` does the same, but its validator refuses such a message before it
  enters history and the caller gets the recorded ``Decision`` back.
- signals ``pause`` / ``resume``: a paused task finishes its running phase, then waits.
- query ``status``: phases, rounds, attempts, durations, the pending approval, decisions.

Decisions only: every effect (executor runs, reminders) is an activity.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    # Models and pure helpers: pydantic classes must be the same objects inside the sandbox.
    from activities.phases import ImplActivities
    from implflow import errors
    from implflow.models import (
        ApproveSignal,
        DecideInput,
        Decision,
        ImplementationInput,
        ImplementationResult,
        PauseSignal,
        PendingApproval,
        PhaseInput,
        PhaseResult,
        PhaseSpec,
        PhaseStatusValue,
        PhaseSummary,
        PrepareInput,
        RejectSignal,
        ReminderInput,
        TaskState,
        TaskStatus,
    )
    from implflow.pipeline import build_pipeline
    from workflows.progress import Progress

IMPL_PHASE = SearchAttributeKey.for_keyword("ImplPhase")
IMPL_STATE = SearchAttributeKey.for_keyword("ImplState")

PREPARE_RETRY = RetryPolicy(
    maximum_attempts=3, non_retryable_error_types=list(errors.NON_RETRYABLE_PHASE_ERRORS)
)
REMINDER_RETRY = RetryPolicy(maximum_attempts=5, initial_interval=timedelta(seconds=10))


@workflow.defn(name="ImplementationWorkflow")
class ImplementationWorkflow:
    @workflow.init
    def __init__(self, task: ImplementationInput) -> None:
        # Runs before any handler, so signals/queries always see a complete state.
        self._task = task
        self._pipeline: list[PhaseSpec] = build_pipeline(task)
        names = [p.name for p in self._pipeline]
        self._progress = Progress(names, [n for n in task.skip if n not in names])
        self._state = TaskState.RUNNING
        self._phase: str | None = names[0]
        self._executor = ""
        self._pending: PendingApproval | None = None
        self._answer: Decision | None = None
        self._decisions: list[Decision] = []
        self._paused = False
        self._ignored: list[str] = []
        self._error: str | None = None

    @workflow.run
    async def run(self, task: ImplementationInput) -> ImplementationResult:
        self._set(TaskState.RUNNING)
        wid = workflow.info().workflow_id
        try:
            prep = await workflow.execute_activity_method(
                ImplActivities.prepare_task,
                PrepareInput(workflow_id=wid, repo=task.repo, executor=task.executor),
                start_to_close_timeout=timedelta(minutes=2),
                retry_policy=PREPARE_RETRY,
                summary="prepare: check repo and executor",
            )
            self._executor = prep.executor
            await self._run_pipeline()
        except (asyncio.CancelledError, ActivityError, ApplicationError) as err:
            if is_cancelled_exception(err):
                self._cancelled()
                raise
            if isinstance(err, asyncio.CancelledError):
                raise
            raise self._failed(err) from err
        self._set(TaskState.COMPLETED, self._phase)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return ImplementationResult(
            workflow_id=wid,
            title=task.title,
            state=self._state,
            phases=self._progress.phases,
            decisions=self._decisions,
            head_commit=next((p.commit for p in reversed(self._progress.phases) if p.commit), None),
        )

    async def _run_pipeline(self) -> None:
        feedback: list[str] = []
        rejections: dict[str, int] = {}
        i = 0
        while i < len(self._pipeline):
            spec = self._pipeline[i]
            if self._paused:
                self._set(TaskState.PAUSED, spec.name)
                await workflow.wait_condition(lambda: not self._paused)
            result = await self._run_phase(spec, feedback)
            if not spec.approval:
                i += 1
                continue
            decision = await self._await_approval(spec.name, result.commit)
            if decision.decision == "approve":
                i += 1
                continue
            rejections[spec.name] = rejections.get(spec.name, 0) + 1
            if rejections[spec.name] > self._task.approval.max_rejections:
                raise ApplicationError(
                    f"{spec.name} was rejected {rejections[spec.name]} times "
                    f"(approval.max_rejections={self._task.approval.max_rejections})",
                    type=errors.REJECTION_LIMIT,
                    non_retryable=True,
                )
            feedback.append(f"{spec.name} rejected by {decision.approver}: {decision.feedback}")
            i = self._index(decision.rewind_to or spec.name)
            self._progress.rewound([p.name for p in self._pipeline[i:]])

    async def _run_phase(self, spec: PhaseSpec, feedback: list[str]) -> PhaseResult:
        self._set(TaskState.RUNNING, spec.name)
        rnd = self._progress.started(spec.name, workflow.now())
        self._refresh()
        done = [p for p in self._progress.phases if p.status == PhaseStatusValue.DONE]
        inp = PhaseInput(
            workflow_id=workflow.info().workflow_id,
            title=self._task.title,
            description=self._task.description,
            repo=self._task.repo,
            executor=self._executor,
            phase=spec,
            round=rnd,
            feedback=list(feedback),
            previous=[PhaseSummary(name=p.name, round=p.rounds, summary=p.outcome) for p in done],
            command=self._task.commands.get(spec.name),
            budget=self._task.budget,
            cassette=self._task.cassette,
            record=self._task.record,
        )
        r = spec.retry
        try:
            result = await workflow.execute_activity_method(
                ImplActivities.run_phase,
                inp,
                start_to_close_timeout=timedelta(seconds=spec.timeout_s + 60),
                heartbeat_timeout=timedelta(seconds=spec.heartbeat_s),
                retry_policy=RetryPolicy(
                    maximum_attempts=r.maximum_attempts,
                    initial_interval=timedelta(seconds=r.initial_interval_s),
                    backoff_coefficient=r.backoff,
                    maximum_interval=timedelta(seconds=r.maximum_interval_s),
                    non_retryable_error_types=list(errors.NON_RETRYABLE_PHASE_ERRORS),
                ),
                cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                summary=f"{spec.name} · round {rnd} · {self._executor}",
            )
        except ActivityError as err:
            self._progress.ended(spec.name, PhaseStatusValue.FAILED, _cause(err), workflow.now())
            raise
        self._progress.finished(result, workflow.now())
        workflow.logger.info(
            "phase done", extra={"phase": spec.name, "round": rnd, "attempt": result.attempt}
        )
        return result

    async def _await_approval(self, phase: str, commit: str | None) -> Decision:
        policy = self._task.approval
        since = workflow.now()
        deadline = since + timedelta(seconds=policy.deadline_s)
        self._pending = PendingApproval(phase=phase, since=since, commit=commit, deadline=deadline)
        self._set(TaskState.AWAITING_APPROVAL, phase)
        answered = await self._wait_answer(policy.remind_after_s)
        if not answered:
            await workflow.execute_activity_method(
                ImplActivities.send_reminder,
                ReminderInput(
                    workflow_id=workflow.info().workflow_id,
                    title=self._task.title,
                    phase=phase,
                    waiting_since=since,
                    deadline=deadline,
                    on_expiry=policy.on_expiry,
                ),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=REMINDER_RETRY,
                summary=f"reminder: {phase} approval overdue",
            )
            self._pending.reminded = True
            self._refresh()
            answered = await self._wait_answer(policy.deadline_s - policy.remind_after_s)
        if not answered and policy.on_expiry == "fail":
            self._record(
                Decision(
                    phase=phase,
                    decision="expired",
                    approver="deadline",
                    at=workflow.now(),
                    commit=commit,
                    via="deadline",
                )
            )
            raise ApplicationError(
                f"approval of {phase} expired after {policy.deadline_s:.0f}s without a decision",
                type=errors.APPROVAL_EXPIRED,
                non_retryable=True,
            )
        if not answered:
            await workflow.wait_condition(lambda: self._answer is not None)
        decision = self._answer
        if decision is None:  # unreachable: every path above waited for an answer
            raise ApplicationError("approval wait ended without a decision", non_retryable=True)
        self._answer, self._pending = None, None
        self._set(TaskState.RUNNING, phase)
        return decision

    async def _wait_answer(self, seconds: float) -> bool:
        if seconds <= 0:
            return self._answer is not None
        try:
            await workflow.wait_condition(
                lambda: self._answer is not None, timeout=timedelta(seconds=seconds)
            )
        except TimeoutError:
            return False
        return True

    # --- handlers -------------------------------------------------------------------

    @workflow.signal
    def approve(self, msg: ApproveSignal) -> None:
        self._accept("signal", DecideInput(decision="approve", **msg.model_dump()))

    @workflow.signal
    def reject(self, msg: RejectSignal) -> None:
        self._accept("signal", DecideInput(decision="reject", **msg.model_dump()))

    @workflow.update
    def decide(self, msg: DecideInput) -> Decision:
        return self._record_answer(msg, "update")

    @decide.validator
    def _validate_decide(self, msg: DecideInput) -> None:
        problem = self._problem(msg)
        if problem:
            raise ValueError(problem)

    @workflow.signal
    def pause(self, msg: PauseSignal | None = None) -> None:
        self._paused = True
        self._refresh()

    @workflow.signal
    def resume(self, msg: PauseSignal | None = None) -> None:
        self._paused = False
        if self._state == TaskState.PAUSED:
            self._set(TaskState.RUNNING, self._phase)
        self._refresh()

    @workflow.query
    def status(self) -> TaskStatus:
        return TaskStatus(
            workflow_id=workflow.info().workflow_id,
            title=self._task.title,
            state=self._state,
            current_phase=self._phase,
            executor=self._executor or None,
            paused=self._paused,
            phases=self._progress.phases,
            pending_approval=self._pending,
            decisions=self._decisions,
            ignored_messages=self._ignored[-20:],
            error=self._error,
        )

    # --- helpers --------------------------------------------------------------------

    def _problem(self, msg: DecideInput) -> str | None:
        """Why a decision cannot be taken now, or None when it can."""
        pending = self._pending
        if pending is None:
            return f"no approval is pending (phase {msg.phase!r} is not waiting)"
        if msg.phase != pending.phase:
            return f"phase {msg.phase!r} is not waiting for approval; {pending.phase!r} is"
        if self._answer is not None:
            return f"the {pending.phase} gate was already decided by {self._answer.approver}"
        allow = self._task.approval.approvers
        if allow and msg.approver not in allow:
            return f"approver {msg.approver!r} is not on the approvers allowlist"
        if msg.rewind_to is not None:
            names = [p.name for p in self._pipeline]
            if msg.rewind_to not in names or names.index(msg.rewind_to) > names.index(msg.phase):
                return f"rewind_to {msg.rewind_to!r} must be {msg.phase!r} or an earlier phase"
        return None

    def _accept(self, via: str, msg: DecideInput) -> None:
        problem = self._problem(msg)
        if problem:
            self._ignored.append(f"{msg.decision} from {msg.approver}: {problem}")
            workflow.logger.warning("ignored %s signal: %s", msg.decision, problem)
            return
        self._record_answer(msg, via)

    def _record_answer(self, msg: DecideInput, via: str) -> Decision:
        self._answer = Decision(
            phase=msg.phase,
            decision=msg.decision,
            approver=msg.approver,
            at=workflow.now(),
            comment=msg.comment,
            feedback=msg.feedback,
            rewind_to=msg.rewind_to,
            commit=self._pending.commit if self._pending else None,
            via="update" if via == "update" else "signal",
        )
        self._record(self._answer)
        return self._answer

    def _record(self, decision: Decision) -> None:
        self._decisions.append(decision)
        workflow.logger.info(
            "decision recorded",
            extra={
                "phase": decision.phase,
                "decision": decision.decision,
                "approver": decision.approver,
            },
        )

    def _index(self, name: str) -> int:
        return [p.name for p in self._pipeline].index(name)

    def _cancelled(self) -> None:
        self._error = "cancelled"
        if self._phase:
            self._progress.ended(
                self._phase, PhaseStatusValue.CANCELLED, "cancelled", workflow.now()
            )
        self._set(TaskState.CANCELLED)
        workflow.logger.info("task cancelled", extra={"phase": self._phase})

    def _failed(self, err: ActivityError | ApplicationError) -> ApplicationError:
        message = _cause(err)
        if self._phase and isinstance(err, ActivityError):
            message = f"phase {self._phase} failed: {message}"
        self._error = message
        self._set(TaskState.FAILED, self._phase)
        kind = err.cause.type if isinstance(err.cause, ApplicationError) else None
        kind = err.type if isinstance(err, ApplicationError) else kind
        return ApplicationError(message, type=kind or "PhaseFailed", non_retryable=True)

    def _set(self, state: TaskState, phase: str | None = None) -> None:
        self._state = state
        self._phase = phase or self._phase
        workflow.upsert_search_attributes(
            [IMPL_STATE.value_set(state.value), IMPL_PHASE.value_set(self._phase or "")]
        )
        self._refresh()

    def _refresh(self) -> None:
        workflow.set_current_details(
            self._progress.checklist(self._task.title, self._state, self._pending, self._paused)
        )


def _cause(err: BaseException) -> str:
    """The innermost failure message: what actually went wrong."""
    while isinstance(err, ActivityError) and err.cause is not None:
        err = err.cause
    return str(getattr(err, "message", None) or err)[:1000]
