"""``ImplementationWorkflow``: one task through the pipeline, with people at the gates.

Handlers:
- signal ``approve`` {phase, approver, comment} and ``reject`` {phase, approver, feedback,
  rewind_to?} answer the pending approval; a message that does not fit (wrong phase,
  already decided, approver not allowed, unknown rewind target) is logged and ignored.
- update ``decide`` does the same, but its validator refuses such a message before it
  enters history and the caller gets the recorded ``Decision`` back.
- signal ``abort`` {phase, approver, comment} ends the task at the pending decision point.
- signals ``pause`` / ``resume``: a paused task finishes its running phase, then waits.
- query ``status``: phases, rounds, attempts, durations, gates, the ledger, the pending
  approval (with its evidence), decisions.

With quality gates on, a phase is done only when its gate passes: a failed gate re-runs
the phase with the failure as feedback (``max_repair_rounds``), then a person decides
(waive, reject and rewind, abort). A budget cap reached asks a person too.

Decisions only: every effect (executor runs, gates, reminders) is an activity.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Literal

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    # Models and pure helpers: pydantic classes must be the same objects inside the sandbox.
    from activities.phases import ImplActivities
    from implflow import errors
    from implflow.models import (
        AbortSignal,
        ApproveSignal,
        Budget,
        DecideInput,
        Decision,
        GateInput,
        GateResult,
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
        PullRequestInput,
        RejectSignal,
        ReminderInput,
        TaskState,
        TaskStatus,
    )
    from implflow.pipeline import build_pipeline
    from workflows.approvals import decision_problem
    from workflows.progress import Progress

IMPL_PHASE = SearchAttributeKey.for_keyword("ImplPhase")
IMPL_STATE = SearchAttributeKey.for_keyword("ImplState")

PREPARE_RETRY = RetryPolicy(
    maximum_attempts=3, non_retryable_error_types=list(errors.NON_RETRYABLE_PHASE_ERRORS)
)
REMINDER_RETRY = RetryPolicy(maximum_attempts=5, initial_interval=timedelta(seconds=10))
GATE_RETRY = RetryPolicy(maximum_attempts=2, initial_interval=timedelta(seconds=10))

PATCH_GATES_AND_BUDGETS = "gates-and-budgets-v1"
"""Workflows started before this patch run without gates and budget stops, as they began."""
PATCH_PULL_REQUEST = "pull-request-v1"
"""Workflows started before this patch never open a pull request."""


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
        self._v2 = False
        self._gates = False
        self._base_commit: str | None = None
        self._baseline: dict[str, float] = {}
        self._extra_usd = 0.0
        self._branch: str | None = None
        self._pull_request: str | None = None

    @workflow.run
    async def run(self, task: ImplementationInput) -> ImplementationResult:
        self._v2 = workflow.patched(PATCH_GATES_AND_BUDGETS)
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
            self._base_commit = prep.base_commit
            self._gates = self._v2 and (
                task.gates == "on" or (task.gates == "auto" and prep.executor != "shell")
            )
            await self._run_pipeline()
            if task.pull_request and self._branch and workflow.patched(PATCH_PULL_REQUEST):
                self._pull_request = await workflow.execute_activity_method(
                    ImplActivities.open_pull_request,
                    PullRequestInput(
                        workflow_id=wid,
                        repo=task.repo,
                        branch=self._branch,
                        title=task.title,
                        description=task.description,
                    ),
                    start_to_close_timeout=timedelta(minutes=5),
                    retry_policy=PREPARE_RETRY,
                    summary=f"pull request for {self._branch}",
                )
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
            branch=self._branch,
            ledger=self._progress.ledger,
            pull_request=self._pull_request,
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
            outcome = await self._phase_step(spec, feedback)
            if isinstance(outcome, PhaseResult) and spec.approval:
                outcome = await self._await_approval(spec.name, outcome.commit)
            if isinstance(outcome, PhaseResult) or outcome.decision in ("approve", "waive"):
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
            feedback.append(f"{spec.name} rejected by {outcome.approver}: {outcome.feedback}")
            i = self._index(outcome.rewind_to or spec.name)
            self._progress.rewound([p.name for p in self._pipeline[i:]])

    async def _phase_step(self, spec: PhaseSpec, feedback: list[str]) -> PhaseResult | Decision:
        """The phase's work; with gates on, repaired until its gate passes or a person decides."""
        notes = list(feedback)
        repairs = 0
        while True:
            result = await self._run_phase_within_budget(spec, notes)
            if not self._gates:
                return result
            gate = await self._run_gate(spec, result)
            if gate.passed:
                return result
            if gate.questions:  # only a person can answer the review's blocking questions
                decision = await self._await_approval(
                    spec.name, gate.commit, kind="question", evidence="\n".join(gate.questions)
                )
                if decision.decision == "reject":
                    return decision
                feedback.append(
                    f"Answers to the open questions ({decision.approver}): {decision.comment}"
                )
                self._progress.get(spec.name).status = PhaseStatusValue.DONE
                return result
            if repairs < self._task.max_repair_rounds:
                repairs += 1
                self._progress.get(spec.name).repairs = repairs
                self._set(TaskState.REPAIRING, spec.name)
                notes = [
                    *feedback,
                    f"The {spec.name} gate failed in round {gate.round}: {gate.failure_summary}",
                ]
                continue
            decision = await self._await_approval(
                spec.name, gate.commit or result.commit, kind="gate", evidence=gate.evidence()
            )
            if decision.decision not in ("approve", "waive"):
                return decision
            self._progress.get(spec.name).status = PhaseStatusValue.DONE  # waived: done
            return result

    async def _run_phase_within_budget(self, spec: PhaseSpec, notes: list[str]) -> PhaseResult:
        """Run the phase; a budget cap reached (by the agent or the ledger) asks a person."""
        while True:
            try:
                result = await self._run_phase(spec, notes)
            except ActivityError as err:
                if not self._v2 or _cause_type(err) != errors.BUDGET_EXCEEDED:
                    raise
                await self._budget_stop(spec.name, _cause(err))
                continue
            over = self._over_budget(spec.name)
            if over:
                await self._budget_stop(spec.name, over)
            return result

    async def _budget_stop(self, phase: str, why: str) -> None:
        decision = await self._await_approval(phase, None, kind="budget", evidence=why)
        if decision.decision != "approve":
            raise ApplicationError(
                f"budget stop at {phase}: {why}", type=errors.BUDGET_EXCEEDED, non_retryable=True
            )
        cap = self._task.budget.max_usd_per_phase or self._task.budget.max_usd_total or 1.0
        self._extra_usd += decision.budget_usd or cap

    def _over_budget(self, phase: str) -> str | None:
        budget, extra = self._task.budget, self._extra_usd
        spent, total = self._progress.get(phase).cost_usd, self._progress.ledger.cost_usd
        if budget.max_usd_per_phase and spent > budget.max_usd_per_phase + extra:
            return f"{phase} spent ${spent:.2f} of ${budget.max_usd_per_phase + extra:.2f}"
        if budget.max_usd_total and total > budget.max_usd_total + extra:
            return f"task spent ${total:.2f} of ${budget.max_usd_total + extra:.2f}"
        return None

    async def _run_gate(self, spec: PhaseSpec, result: PhaseResult) -> GateResult:
        gate = await workflow.execute_activity_method(
            ImplActivities.run_gate,
            GateInput(
                workflow_id=workflow.info().workflow_id,
                repo=self._task.repo,
                phase=spec.name,
                round=result.round,
                thresholds=self._task.thresholds,
                base_commit=self._base_commit,
                baseline=self._baseline,
            ),
            start_to_close_timeout=timedelta(minutes=30),
            heartbeat_timeout=timedelta(minutes=2),
            retry_policy=GATE_RETRY,
            summary=f"gate {spec.name} · round {result.round}",
        )
        for check in gate.checks:  # the first load figures measured become the baseline
            for key in ("p95_ms", "requests_per_s"):
                value = check.figures.get(key)
                if isinstance(value, (int, float)) and key not in self._baseline:
                    self._baseline[key] = float(value)
        self._progress.gated(gate)
        self._refresh()
        return gate

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
            budget=self._phase_budget(),
            cassette=self._task.cassette,
            record=self._task.record,
            specialist=self._task.specialist,
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
        self._branch = result.branch or self._branch
        workflow.logger.info(
            "phase done", extra={"phase": spec.name, "round": rnd, "attempt": result.attempt}
        )
        return result

    async def _await_approval(
        self,
        phase: str,
        commit: str | None,
        kind: Literal["approval", "gate", "budget", "question"] = "approval",
        evidence: str = "",
    ) -> Decision:
        policy = self._task.approval
        since = workflow.now()
        deadline = since + timedelta(seconds=policy.deadline_s)
        self._pending = PendingApproval(
            phase=phase, kind=kind, evidence=evidence, since=since, commit=commit, deadline=deadline
        )
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
        if decision.decision == "abort":
            raise ApplicationError(
                f"aborted at {phase} by {decision.approver}: {decision.comment}",
                type=errors.ABORTED,
                non_retryable=True,
            )
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

    @workflow.signal
    def abort(self, msg: AbortSignal) -> None:
        self._accept("signal", DecideInput(decision="abort", **msg.model_dump()))

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
            ledger=self._progress.ledger,
            branch=self._branch,
        )

    # --- helpers --------------------------------------------------------------------

    def _problem(self, msg: DecideInput) -> str | None:
        """Why a decision cannot be taken now, or None when it can."""
        return decision_problem(
            msg,
            self._pending,
            self._answer,
            self._task.approval.approvers,
            [p.name for p in self._pipeline],
        )

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
            budget_usd=msg.budget_usd,
            kind=self._pending.kind if self._pending else "approval",
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

    def _phase_budget(self) -> Budget:
        """The task's budget, with any extra dollars a person approved at a budget stop."""
        budget = self._task.budget
        if not self._extra_usd or budget.max_usd_per_phase is None:
            return budget
        return budget.model_copy(
            update={"max_usd_per_phase": budget.max_usd_per_phase + self._extra_usd}
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
        return ApplicationError(message, type=_cause_type(err) or "PhaseFailed", non_retryable=True)

    def _set(self, state: TaskState, phase: str | None = None) -> None:
        self._state = state
        self._phase = phase or self._phase
        workflow.upsert_search_attributes(
            [IMPL_STATE.value_set(state.value), IMPL_PHASE.value_set(self._phase or "")]
        )
        self._refresh()

    def _refresh(self) -> None:
        workflow.set_current_details(
            self._progress.checklist(
                self._task.title,
                self._state,
                self._pending,
                self._paused,
                workflow.info().workflow_id,
            )
        )


def _root(err: BaseException) -> BaseException:
    """The innermost failure behind activity errors: what actually went wrong."""
    while isinstance(err, ActivityError) and err.cause is not None:
        err = err.cause
    return err


def _cause_type(err: BaseException) -> str | None:
    root = _root(err)
    return root.type if isinstance(root, ApplicationError) else None


def _cause(err: BaseException) -> str:
    root = _root(err)
    return str(getattr(root, "message", None) or root)[:1000]
