"""``ImplementationWorkflow``: one task through the pipeline, with people at the gates.

The story, top to bottom: prepare (check repo and executor) → for each phase: run it within
budget → gate it → repair it or ask a person → approval where due → publish (pull request).

Handlers (payloads are decoded defensively: see ``workflows/messages.py``):
- signal ``approve`` {phase, approver, comment} and ``reject`` {phase, approver, feedback,
  rewind_to?} answer the pending approval; a message that does not fit (wrong phase, already
  decided, approver not allowed, unknown rewind target, malformed) is recorded in
  ``ignored_messages`` and dropped.
- update ``decide`` does the same, but its validator refuses such a message before it
  enters history and the caller gets the recorded ``Decision`` back.
- signal ``abort`` {phase, approver, comment} ends the task at the pending decision point.
- signals ``pause`` / ``resume``: a paused task finishes its running phase, then waits.
- query ``status``: phases, rounds, attempts, durations, gates, the ledger, the pending
  approval (with its evidence), decisions, ignored messages.

Decisions only: every effect (executor runs, gates, reminders) is an activity. The rules and
bookkeeping live beside it: ``approvals.py``, ``budget.py``, ``failures.py``, ``options.py``,
``progress.py`` (status and the UI checklist).
"""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeKey
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    # Models and pure helpers: pydantic classes must be the same objects inside the sandbox.
    from activities.phases import ImplActivities
    from implflow import errors
    from implflow.models import (
        AbortSignal,
        ApprovalKind,
        ApproveSignal,
        AttemptReport,
        DecideInput,
        Decision,
        GateResult,
        ImplementationInput,
        ImplementationResult,
        PauseSignal,
        PhaseResult,
        PhaseSpec,
        PhaseStatusValue,
        RejectSignal,
        TaskState,
        TaskStatus,
    )
    from implflow.pipeline import build_pipeline, phase_input, prepare_input, pull_request_input
    from workflows import options
    from workflows.approvals import Approvals
    from workflows.budget import BudgetKeeper
    from workflows.failures import failure_message, failure_type, task_failure
    from workflows.messages import (
        MAX_INPUT_BYTES,
        optional_payload_problem,
        parse_payload,
        placeholder_input,
    )
    from workflows.patches import (
        PATCH_CANCELLING,
        PATCH_GATE_DECISIONS,
        PATCH_GATES_AND_BUDGETS,
        PATCH_PULL_REQUEST,
        PATCH_REPAIRING_STATE,
    )
    from workflows.progress import Progress
    from workflows.run_facts import RunFacts

_STOPPED_BY_A_CANCEL = (PhaseStatusValue.RUNNING, PhaseStatusValue.FAILED)
"""What a cancel may relabel: the round it stopped, never a phase that was done or waiting."""

IMPL_PHASE = SearchAttributeKey.for_keyword("ImplPhase")
IMPL_STATE = SearchAttributeKey.for_keyword("ImplState")


@workflow.defn(name="ImplementationWorkflow")
class ImplementationWorkflow:
    @workflow.init
    def __init__(self, *args: Any) -> None:
        # Runs before any handler, so signals and queries always see a complete state. The
        # input is decoded here (not by the SDK) so a missing or malformed one fails the
        # workflow in ``run`` instead of failing every workflow task forever.
        task, self._input_problem = parse_payload(ImplementationInput, args, MAX_INPUT_BYTES)
        self._task = task or placeholder_input()
        self._pipeline: list[PhaseSpec] = build_pipeline(self._task)
        names = [p.name for p in self._pipeline]
        self._progress = Progress(names, [n for n in self._task.skip if n not in names])
        self._approvals = Approvals(self._task.approval.approvers, names)
        self._budget = BudgetKeeper(self._task.budget)
        self._run = RunFacts()
        self._feedback: list[str] = []  # for every later round: rejections, answers
        self._state = TaskState.RUNNING
        self._phase: str | None = names[0] if names else None
        self._paused = False
        self._error: str | None = None

    @workflow.run
    async def run(self, *args: Any) -> ImplementationResult:
        if self._input_problem:
            self._error = self._input_problem
            self._set(TaskState.FAILED)
            raise ApplicationError(self._error, type=errors.INVALID_INPUT, non_retryable=True)
        task = self._task
        self._run.with_gates_and_budgets = workflow.patched(PATCH_GATES_AND_BUDGETS)
        self._run.gate_decisions = workflow.patched(PATCH_GATE_DECISIONS)
        self._approvals.strict_gate_answers = self._run.gate_decisions
        self._set(TaskState.RUNNING)
        wid = workflow.info().workflow_id
        try:
            await self._prepare(wid)
            await self._run_pipeline()
            await self._publish(wid)
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
            decisions=self._approvals.decisions,
            head_commit=self._run.tip,
            branch=self._run.branch,
            ledger=self._progress.ledger,
            pull_request=self._run.pull_request,
        )

    async def _prepare(self, wid: str) -> None:
        """Fail fast on a repo or executor this worker cannot use; decide whether gates run."""
        prep = await workflow.execute_activity_method(
            ImplActivities.prepare_task,
            prepare_input(wid, self._task),
            **options.PREPARE,
            summary="prepare: check repo and executor",
        )
        self._run.prepared_with(prep, self._task)

    async def _run_pipeline(self) -> None:
        """Each phase in order; a rejection rewinds (bounded by ``approval.max_rejections``)."""
        i = 0
        while i < len(self._pipeline):
            spec = self._pipeline[i]
            if self._paused:
                self._set(TaskState.PAUSED, spec.name)
                await workflow.wait_condition(lambda: not self._paused)
            rejected = await self._phase_step(spec)
            if rejected is None and spec.approval:
                status = self._progress.get(spec.name)
                evidence = status.gate.evidence() if status.gate else ""
                answer = await self._ask(spec.name, status.commit, evidence=evidence)
                rejected = None if answer.decision in ("approve", "waive") else answer
            if rejected is None:
                i += 1
                continue
            self._approvals.count_rejection(spec.name, self._task.approval.max_rejections)
            self._feedback.append(
                f"{spec.name} rejected by {rejected.approver}: {rejected.feedback}"
            )
            i = self._index(rejected.rewind_to or spec.name)
            self._progress.rewound([p.name for p in self._pipeline[i:]])

    async def _phase_step(self, spec: PhaseSpec) -> Decision | None:
        """The phase's work; with gates on, repaired until its gate passes or a person decides.

        Returns the rejection when a person rejected the phase, None when it is done.
        """
        notes = list(self._feedback)
        repairs = 0
        while True:
            result = await self._run_within_budget(spec, notes, repairs > 0)
            if not self._run.gates:
                return None
            gate = await self._gate(spec, result)
            if gate.passed:
                return None
            if gate.questions:  # only a person can answer the review's blocking questions
                answer = await self._ask(
                    spec.name, gate.commit, kind="question", evidence="\n".join(gate.questions)
                )
                if answer.decision == "reject":
                    return answer
                self._feedback.append(
                    f"Answers to the open questions ({answer.approver}): {answer.comment}"
                )
                self._progress.get(spec.name).status = PhaseStatusValue.DONE
                return None
            # Only an agent's mistakes get repair rounds: nothing to do, a broken environment or
            # unresolved measurement noise go to a person at once, with the root cause.
            repairable = not self._run.gate_decisions or (
                result.outcome != "nothing-to-do" and gate.failure_class in (None, "agent")
            )
            if repairable and repairs < self._task.max_repair_rounds:
                repairs += 1
                self._progress.get(spec.name).repairs = repairs
                self._set(TaskState.REPAIRING, spec.name)
                notes = [
                    *self._feedback,
                    f"The {spec.name} gate failed in round {gate.round}: {gate.failure_summary}",
                ]
                continue
            answer = await self._ask(
                spec.name, gate.commit or result.commit, kind="gate", evidence=gate.evidence()
            )
            if answer.decision not in ("approve", "waive"):
                return answer
            self._progress.get(spec.name).status = PhaseStatusValue.DONE  # waived: done
            return None

    async def _run_within_budget(
        self, spec: PhaseSpec, notes: list[str], repairing: bool
    ) -> PhaseResult:
        """Run the phase; a budget cap reached (by the agent or the ledger) asks a person."""
        while True:
            try:
                result = await self._run_phase(spec, notes, repairing)
            except ActivityError as err:
                if (
                    not self._run.with_gates_and_budgets
                    or failure_type(err) != errors.BUDGET_EXCEEDED
                ):
                    raise
                await self._budget_stop(spec.name, failure_message(err))
                continue
            over = self._budget.over(
                spec.name, self._progress.get(spec.name).cost_usd, self._progress.ledger.cost_usd
            )
            if over:
                await self._budget_stop(spec.name, over)
            return result

    async def _budget_stop(self, phase: str, why: str) -> None:
        answer = await self._ask(phase, None, kind="budget", evidence=why)
        if answer.decision != "approve":
            raise ApplicationError(
                f"budget stop at {phase}: {why}", type=errors.BUDGET_EXCEEDED, non_retryable=True
            )
        self._budget.grant(answer.budget_usd)

    async def _run_phase(self, spec: PhaseSpec, notes: list[str], repairing: bool) -> PhaseResult:
        """One round of the phase's activity; the outcome goes into progress and the ledger."""
        repair = repairing and workflow.patched(PATCH_REPAIRING_STATE)
        self._set(TaskState.REPAIRING if repair else TaskState.RUNNING, spec.name)
        rnd = self._progress.started(spec.name, workflow.now())
        self._refresh()
        done = [p for p in self._progress.phases if p.status == PhaseStatusValue.DONE]
        inp = phase_input(
            workflow.info().workflow_id,
            self._task,
            spec,
            rnd,
            self._run.executor,
            notes,
            done,
            self._budget.for_phase(),
            self._run.tip,
        )
        try:
            result = await self._until_done_or_cancelled(
                workflow.start_activity_method(
                    ImplActivities.run_phase,
                    inp,
                    **options.phase_config(spec, self._run.take_decided()),
                    summary=f"{spec.name} · round {rnd} · {self._run.executor}",
                )
            )
        except ActivityError as err:
            self._progress.ended(
                spec.name, PhaseStatusValue.FAILED, failure_message(err), workflow.now()
            )
            raise
        self._progress.finished(result, workflow.now())
        self._run.branch = result.branch or self._run.branch
        self._run.tip = result.commit or self._run.tip
        workflow.logger.info(
            "phase done", extra={"phase": spec.name, "round": rnd, "attempt": result.attempt}
        )
        return result

    async def _until_done_or_cancelled(
        self, handle: workflow.ActivityHandle[PhaseResult]
    ) -> PhaseResult:
        """Await an activity; on a cancel request show ``cancelling`` while its work stops."""
        try:
            return await asyncio.shield(handle)
        except asyncio.CancelledError:
            if workflow.patched(PATCH_CANCELLING):
                self._set(TaskState.CANCELLING)
            handle.cancel()
            return await handle

    async def _gate(self, spec: PhaseSpec, result: PhaseResult) -> GateResult:
        """The phase's quality checks; what they measured is kept for the later gates."""
        gate = await workflow.execute_activity_method(
            ImplActivities.run_gate,
            self._run.gate_input(workflow.info().workflow_id, self._task, spec.name, result.round),
            **options.GATE,
            summary=f"gate {spec.name} · round {result.round}",
        )
        self._run.learn(spec.name, gate)
        self._progress.gated(gate)
        self._refresh()
        return gate

    async def _ask(
        self,
        phase: str,
        commit: str | None,
        kind: ApprovalKind = "approval",
        evidence: str = "",
    ) -> Decision:
        """Wait durably for a person's decision (reminded once, then expired or waited on)."""
        policy = self._task.approval
        self._approvals.open(phase, kind, evidence, workflow.now(), commit, policy.deadline_s)
        self._set(TaskState.AWAITING_APPROVAL, phase)
        answer = await self._approvals.wait(policy, self._task.title, self._refresh)
        self._run.decided = True
        if answer.decision == "abort":
            raise ApplicationError(
                f"aborted at {phase} by {answer.approver}: {answer.comment}",
                type=errors.ABORTED,
                non_retryable=True,
            )
        self._set(TaskState.RUNNING, phase)
        return answer

    async def _publish(self, wid: str) -> None:
        """The pull request for the task branch, when the task asked for one."""
        branch = self._run.branch
        if self._task.pull_request and branch and workflow.patched(PATCH_PULL_REQUEST):
            self._run.pull_request = await workflow.execute_activity_method(
                ImplActivities.open_pull_request,
                pull_request_input(wid, self._task, branch),
                **options.PULL_REQUEST,
                summary=f"pull request for {branch}",
            )

    # --- handlers -------------------------------------------------------------------

    @workflow.signal
    def approve(self, *args: Any) -> None:
        self._approvals.offer_signal("approve", ApproveSignal, args, workflow.now())

    @workflow.signal
    def reject(self, *args: Any) -> None:
        self._approvals.offer_signal("reject", RejectSignal, args, workflow.now())

    @workflow.signal
    def abort(self, *args: Any) -> None:
        self._approvals.offer_signal("abort", AbortSignal, args, workflow.now())

    @workflow.update
    def decide(self, msg: DecideInput) -> Decision:
        return self._approvals.take_answer(msg, "update", workflow.now())

    @decide.validator
    def _validate_decide(self, msg: DecideInput) -> None:
        if not isinstance(msg, DecideInput):  # another encoding decodes to another type
            raise ValueError(f"decide takes one DecideInput, got {type(msg).__name__}")
        problem = self._approvals.problem(msg)
        if problem:
            raise ValueError(problem)

    @workflow.signal
    def pause(self, *args: Any) -> None:
        if self._dropped("pause", args):
            return
        self._paused = True
        self._refresh()

    @workflow.signal
    def resume(self, *args: Any) -> None:
        if self._dropped("resume", args):
            return
        self._paused = False
        if self._state == TaskState.PAUSED:
            self._set(TaskState.RUNNING, self._phase)
        self._refresh()

    @workflow.signal
    def attempt_retried(self, *args: Any) -> None:
        """Sent by a retried phase attempt as it starts: the attempt and what failed before."""
        report, problem = parse_payload(AttemptReport, args, 16_000)
        if report is None:
            self._approvals.ignore("attempt_retried signal", problem or "malformed")
        elif self._progress.retrying(report):
            self._refresh()

    @workflow.query
    def status(self) -> TaskStatus:
        return TaskStatus(
            workflow_id=workflow.info().workflow_id,
            title=self._task.title,
            state=self._state,
            current_phase=self._phase,
            executor=self._run.executor or None,
            paused=self._paused,
            phases=self._progress.phases,
            pending_approval=self._approvals.pending,
            decisions=self._approvals.decisions,
            ignored_messages=self._approvals.ignored[-20:],
            error=self._error,
            ledger=self._progress.ledger,
            branch=self._run.branch,
            repo=self._task.repo,
            documents=self._progress.documents(),
        )

    # --- helpers --------------------------------------------------------------------

    def _dropped(self, name: str, args: tuple[Any, ...]) -> bool:
        """``pause``/``resume`` take nothing or one ``PauseSignal``; anything else is dropped."""
        problem = optional_payload_problem(PauseSignal, args)
        if problem:
            self._approvals.ignore(f"{name} signal", problem)
        return problem is not None

    def _index(self, name: str) -> int:
        return [p.name for p in self._pipeline].index(name)

    def _cancelled(self) -> None:
        self._error = "cancelled"
        self._approvals.close()  # a cancelled task waits for nobody
        if self._phase and self._progress.get(self._phase).status in _STOPPED_BY_A_CANCEL:
            self._progress.ended(
                self._phase, PhaseStatusValue.CANCELLED, "cancelled", workflow.now()
            )
        self._set(TaskState.CANCELLED)
        workflow.logger.info("task cancelled", extra={"phase": self._phase})

    def _failed(self, err: ActivityError | ApplicationError) -> ApplicationError:
        failure = task_failure(err, self._phase, self._run.prepared)
        self._error = failure.message
        self._approvals.close()  # a failed task waits for nobody
        self._set(TaskState.FAILED, self._phase)
        return failure

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
                self._approvals.pending,
                self._paused,
                workflow.info().workflow_id,
                where=(self._task.repo, self._run.branch),
            )
        )
