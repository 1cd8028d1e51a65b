"""``PlanWorkflow``: many tasks as ``ImplementationWorkflow`` children, in dependency order.

A task starts when its dependencies completed, at most ``concurrency`` children at once, on a
branch the plan prepared from its dependencies' results (``stack``). Children are started with
parent-close policy *abandon* and followed through the ``observe_tasks`` long poll, so the plan
can continue-as-new with its state only while they keep running. At the end the task branches
are merged in dependency order into ``implflow/plan/<id>`` and tested once more.

Handlers:
- update ``decide`` (``PlanDecideInput``) answers the plan's own decision: a merge conflict, the
  pick among candidates, a budget stop, a failed integration test. Its validator refuses what
  does not fit before it enters history. A task's own decisions go to the task's workflow
  (``implflow plan approve`` routes them); the plan sees them through ``observe_tasks``.
- query ``status`` -> ``PlanStatus``: per task state, phase, what it waits for, branch, cost.

Decisions only: every effect (git, following the tasks, tests) is an activity.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, Literal

from temporalio import workflow
from temporalio.common import (
    SearchAttributeKey,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    FailureError,
    WorkflowAlreadyStartedError,
    is_cancelled_exception,
)

with workflow.unsafe.imports_passed_through():
    # Models and pure helpers: pydantic classes must be the same objects inside the sandbox.
    from activities.plans import PlanActivities
    from implflow import WORKFLOW_TYPE, errors
    from implflow.models import ImplementationResult, PauseSignal, PullRequestInput, TaskState
    from implflow.plans import (
        PLAN_ID_PATTERN,
        PLAN_SEARCH_ATTRIBUTE,
        IntegrateInput,
        IntegrationStatus,
        MergeItem,
        ObserveInput,
        PlanDecideInput,
        PlanDecision,
        PlanDecisionPhase,
        PlanInput,
        PlanPending,
        PlanResult,
        PlanStatus,
        PlanTask,
        PlanTaskStatus,
        PreparePlanInput,
        TaskBranchInput,
        TaskRun,
        plan_table,
        specialists_of,
        task_branch,
    )
    from workflows import options
    from workflows.failures import failure_message, failure_type
    from workflows.messages import parse_payload
    from workflows.patches import PATCH_PLAN_PARALLEL_STARTS, PATCH_PLAN_PULL_REQUEST
    from workflows.plan_book import PlanBook, summarize

IMPL_PHASE = SearchAttributeKey.for_keyword("ImplPhase")
IMPL_STATE = SearchAttributeKey.for_keyword("ImplState")
IMPL_PLAN = SearchAttributeKey.for_keyword(PLAN_SEARCH_ATTRIBUTE)

PLAN_TASK_FAILED = "PlanTaskFailed"
OBSERVE_WAIT_S = 300.0
MAX_PLAN_BYTES = 1_500_000
"""A plan's input (and its continue-as-new state) stays under Temporal's 2 MB payload limit."""

CANCEL_ROUNDS = 20
"""Observations (of up to 30 s each) spent waiting for cancelled tasks to close."""


@workflow.defn(name="PlanWorkflow")
class PlanWorkflow:
    @workflow.init
    def __init__(self, *args: Any) -> None:
        # Runs before any handler, so queries and updates always see a complete state. The
        # input is decoded here, so a missing or malformed one fails the plan in ``run``
        # instead of failing every workflow task forever (see workflows/messages.py).
        decoded, self._input_problem = parse_payload(PlanInput, args, MAX_PLAN_BYTES)
        plan = decoded or PlanInput.model_construct(title="(invalid input)", repo="", tasks=[])
        self._plan = plan
        self._book = PlanBook(plan)
        self._s = self._book.s
        self._tasks = self._book.tasks
        self._state = TaskState.RUNNING
        self._stage: Literal["tasks", "integrate", "done"] = "tasks"
        self._shown: tuple[TaskState, str] | None = None
        self._integration: IntegrationStatus | None = None
        self._error: str | None = None
        self._observer: asyncio.Task[None] | None = None
        self._wake = False

    @workflow.run
    async def run(self, *args: Any) -> PlanResult:
        if self._input_problem:
            self._error = self._input_problem
            self._set(TaskState.FAILED)
            raise ApplicationError(self._error, type=errors.INVALID_INPUT, non_retryable=True)
        plan = self._plan
        if not re.match(PLAN_ID_PATTERN, self._id):
            raise ApplicationError(
                f"plan id {self._id!r}: use letters, digits, '-' and '_' (it names branches)",
                type=errors.INVALID_INPUT,
                non_retryable=True,
            )
        self._set(TaskState.RUNNING)
        try:
            if plan.state is None:
                await self._prepare()
            await self._run_tasks()
            if plan.integrate.enabled and any(
                t.state == TaskState.COMPLETED for t in self._tasks.values()
            ):
                await self._integrate()
        except (asyncio.CancelledError, ActivityError, ApplicationError) as err:
            if is_cancelled_exception(err):
                await self._stop_all("the plan was cancelled")
                self._set(TaskState.CANCELLED)
                raise
            if isinstance(err, asyncio.CancelledError):
                raise
            await self._stop_all(failure_message(err))
            self._set(TaskState.FAILED)
            raise ApplicationError(
                self._error or failure_message(err),
                type=failure_type(err) or PLAN_TASK_FAILED,
                non_retryable=True,
            ) from err
        failed = [t.id for t in self._tasks.values() if t.state != TaskState.COMPLETED]
        if failed:
            self._error = (
                f"not completed: {', '.join(self._book.describe_failure(i) for i in failed)}"
            )
            self._set(TaskState.FAILED)
            raise ApplicationError(self._error, type=PLAN_TASK_FAILED, non_retryable=True)
        self._stage = "done"
        self._set(TaskState.COMPLETED)
        await workflow.wait_condition(workflow.all_handlers_finished)
        status = self._status()
        return PlanResult(
            plan_id=self._id,
            title=plan.title,
            state=self._state,
            tasks=status.tasks,
            totals=status.totals,
            integration=self._integration,
            decisions=self._s.decisions,
        )

    # --- the tasks ------------------------------------------------------------------------

    async def _prepare(self) -> None:
        prep = await workflow.execute_activity_method(
            PlanActivities.prepare_plan,
            PreparePlanInput(
                plan_id=self._id,
                repo=self._plan.repo,
                base=self._plan.base,
                specialists={
                    name: self._plan.tasks[index].id
                    for index, name in reversed(specialists_of(self._plan))
                },
                children=[r.workflow_id for t in self._tasks.values() for r in t.runs],
            ),
            **options.PLAN_PREPARE,
            summary="prepare: repo, base, specialists, tasks already started",
        )
        self._s.base_commit = prep.base_commit
        # Running or completed tasks of an earlier run are followed; failed ones start again.
        self._book.apply(
            [r for r in prep.adopted if not r.closed or r.state == TaskState.COMPLETED]
        )

    async def _run_tasks(self) -> None:
        """Start, follow and steer the tasks until each is finished (or the plan stops)."""
        while True:
            self._book.take_answer()
            self._book.settle()
            self._book.check_budget()
            await self._control_runs()
            if self._s.stop_reason and not self._book.open_runs():
                raise ApplicationError(self._s.stop_reason, type=PLAN_TASK_FAILED)
            if not self._s.stop_reason and not self._s.budget_stopped:
                await self._start_ready()
            self._book.ensure_pending()
            self._set(TaskState.AWAITING_APPROVAL if self._s.pending else TaskState.RUNNING)
            if self._book.finished():
                return
            if self._observer is None and self._book.answer is None and self._history_is_long():
                await workflow.wait_condition(workflow.all_handlers_finished)
                self._s.continued += 1
                workflow.continue_as_new(self._plan.model_copy(update={"state": self._s}))
            if self._observer is None and self._book.open_runs():
                self._observer = asyncio.create_task(self._observe(OBSERVE_WAIT_S))
            self._wake = False
            await workflow.wait_condition(lambda: self._wake)

    async def _start_ready(self) -> None:
        """Start what may start: dependencies completed, within ``concurrency``, file order;
        the branches of a batch are prepared side by side, then its tasks start together."""
        if not workflow.patched(PATCH_PLAN_PARALLEL_STARTS):
            return await self._start_ready_one_by_one()
        while batch := self._book.ready(self._plan.concurrency - len(self._book.open_runs())):
            ready = await asyncio.gather(*(self._branch_ready(t, s, d) for t, s, d, _ in batch))
            await asyncio.gather(
                *(
                    self._start_child(spec, task, run)
                    for (task, spec, _, runs), ok in zip(batch, ready, strict=True)
                    if ok
                    for run in runs
                )
            )
            if all(ready):  # else a conflict left slots free: fill them with the next ones
                return

    async def _branch_ready(
        self, task: PlanTaskStatus, spec: PlanTask, deps: list[PlanTaskStatus]
    ) -> bool:
        return task.start_commit is not None or await self._prepare_branch(task, spec, deps)

    async def _start_ready_one_by_one(self) -> None:
        """Before ``plan-parallel-starts-v1``: one branch, then one child, at a time."""
        while batch := self._book.ready(self._plan.concurrency - len(self._book.open_runs())):
            task, spec, deps, runs = batch[0]
            if await self._branch_ready(task, spec, deps):  # else: a conflict, skipped next
                for run in runs:
                    await self._start_child(spec, task, run)

    async def _prepare_branch(
        self, task: PlanTaskStatus, spec: PlanTask, deps: list[PlanTaskStatus]
    ) -> bool:
        """Create the task's branch(es) from its dependencies' results; False on a conflict."""
        sources = [d.branch for d in deps if d.branch] if spec.stack else []
        result = await workflow.execute_activity_method(
            PlanActivities.prepare_task_branch,
            TaskBranchInput(
                plan_id=self._id,
                task_id=task.id,
                repo=self._plan.repo,
                branches=[task_branch(r.workflow_id) for r in task.runs],
                sources=sources,
                base_commit=self._s.base_commit or "HEAD",
            ),
            **options.TASK_BRANCH,
            summary=f"branch for {task.id}" + (f" from {', '.join(sources)}" if sources else ""),
        )
        if result.conflict_files:
            task.conflict_files, task.conflict_with = result.conflict_files, result.conflict_with
            task.state = TaskState.AWAITING_APPROVAL
            task.waiting = f"a person to merge its dependencies ({len(task.conflict_files)} files)"
            return False
        task.start_commit = result.start_commit
        task.stacked_on = [d.id for d in deps] if spec.stack else []
        return True

    async def _start_child(self, spec: PlanTask, task: PlanTaskStatus, run: TaskRun) -> None:
        label = f" · candidate {run.candidate}" if len(task.runs) > 1 else ""
        try:
            handle = await workflow.start_child_workflow(
                WORKFLOW_TYPE,
                self._plan.task_input(spec, run.candidate),
                id=run.workflow_id,
                task_queue=workflow.info().task_queue,
                result_type=ImplementationResult,
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
                search_attributes=TypedSearchAttributes([SearchAttributePair(IMPL_PLAN, self._id)]),
                static_summary=f"plan {self._id} · {spec.id}: {spec.title}{label}"[:400],
            )
            handle.add_done_callback(_retrieved)  # followed by observe_tasks, not awaited
        except WorkflowAlreadyStartedError:  # an earlier run of this plan started it: follow it
            workflow.logger.info("task already started", extra={"workflow_id": run.workflow_id})
        run.started = True
        run.state = run.state or TaskState.RUNNING
        task.state = TaskState.RUNNING

    async def _observe(self, wait_s: float) -> None:
        runs = self._book.open_runs()
        try:
            result = await workflow.execute_activity_method(
                PlanActivities.observe_tasks,
                ObserveInput(
                    workflow_ids=[r.workflow_id for r in runs],
                    known={r.workflow_id: r.fingerprint for r in runs},
                    wait_s=wait_s,
                ),
                **options.observe_config(wait_s),
                summary=f"follow {len(runs)} task(s)",
            )
            self._book.apply(result.runs)
        finally:
            self._observer = None
            self._wake = True

    async def _control_runs(self) -> None:
        """Pause, resume or cancel running tasks as the plan's state asks."""
        halt = self._s.stop_reason is not None
        for run in self._book.open_runs():
            sent = self._s.signalled.get(run.workflow_id)
            between_phases = run.state in (TaskState.PAUSED, TaskState.AWAITING_APPROVAL)
            if halt and (self._s.stop_now or between_phases):
                if sent != "cancel":
                    await self._send(run.workflow_id, "cancel")
            elif halt or self._s.budget_stopped:
                if sent not in ("pause", "cancel"):
                    await self._send(run.workflow_id, "pause")
            elif sent == "pause":
                await self._send(run.workflow_id, "resume")

    async def _send(self, workflow_id: str, what: str) -> None:
        handle = workflow.get_external_workflow_handle(workflow_id)
        try:
            if what == "cancel":
                await handle.cancel()
            else:
                reason = self._s.stop_reason or "plan budget reached"
                await handle.signal(what, PauseSignal(by=f"plan {self._id}", reason=reason))
        except FailureError as err:  # it closed meanwhile: observe_tasks will say so
            workflow.logger.info("control message not delivered", extra={"error": str(err)})
        self._s.signalled[workflow_id] = what

    async def _stop_all(self, reason: str) -> None:
        """Cancel every running task and wait (bounded) until they closed; record why."""
        if self._observer is not None:
            self._observer.cancel()
            self._observer = None
        self._error = self._error or reason
        for run in self._book.open_runs():
            await self._send(run.workflow_id, "cancel")
        for _ in range(CANCEL_ROUNDS):
            if not self._book.open_runs():
                break
            self._wake = False
            await self._observe(30.0)
        for task in self._tasks.values():
            if task.runs and any(r.started for r in task.runs):
                summarize(task)
                if all(r.closed for r in task.runs) and not task.closed:
                    task.state = TaskState.CANCELLED
        self._refresh()

    # --- the end ------------------------------------------------------------------------

    async def _integrate(self) -> None:
        """Merge the completed tasks in dependency order; test; a person decides on trouble."""
        self._stage = "integrate"
        self._set(TaskState.RUNNING)
        spec = self._plan.integrate
        merges = [
            MergeItem(task_id=tid, branch=self._tasks[tid].branch or "")
            for tid in self._book.order
            if self._tasks[tid].state == TaskState.COMPLETED and self._tasks[tid].branch
        ]
        left_out: list[str] = []
        while True:
            result = await workflow.execute_activity_method(
                PlanActivities.integrate_plan,
                IntegrateInput(
                    plan_id=self._id,
                    repo=self._plan.repo,
                    base_commit=self._s.base_commit or "HEAD",
                    merges=merges,
                    left_out=left_out,
                    gate=spec.gate,
                    command=spec.command,
                    thresholds=self._plan.thresholds(),
                ),
                **options.INTEGRATE,
                summary=f"integrate {len(merges) - len(left_out)} task(s)",
            )
            self._integration = IntegrationStatus(
                branch=result.branch,
                commit=result.commit,
                merged=result.merged,
                left_out=list(left_out),
                conflict_task=result.conflict_task,
                conflict_files=result.conflict_files,
                test_passed=result.test_passed,
                test_summary=result.test_summary,
            )
            self._refresh()
            if result.conflict_task:
                answer = await self._ask(
                    result.conflict_task, "merge", result.evidence, ["approve", "waive", "abort"]
                )
                if answer.decision == "waive":
                    left_out.append(result.conflict_task)
                continue
            if result.test_passed is False:
                answer = await self._ask("plan", "integrate", result.evidence, ["approve", "abort"])
                self._integration.accepted_by = answer.approver
            break
        if spec.pull_request:
            description = "\n".join(f"- {t.id}: {t.title}" for t in self._plan.tasks)[:8000]
            # Before the patch the task's activity ran it, on a checkout of the plan's base.
            patched = workflow.patched(PATCH_PLAN_PULL_REQUEST)
            opener = "open_plan_pull_request" if patched else "open_pull_request"
            self._integration.pull_request = await workflow.execute_activity(
                opener,
                PullRequestInput(
                    workflow_id=self._id,
                    repo=self._plan.repo,
                    branch=result.branch,
                    title=self._plan.title,
                    description=description,
                ),
                result_type=str,
                **options.PULL_REQUEST,
                summary=f"pull request for {result.branch}",
            )

    async def _ask(
        self, task: str, phase: PlanDecisionPhase, evidence: str, options: list[str]
    ) -> PlanDecideInput:
        """Wait for a person's answer to one plan decision; abort ends the plan."""
        self._s.pending = PlanPending(
            task=task,
            phase=phase,
            evidence=evidence,
            since=workflow.now(),
            options=options,
        )
        self._set(TaskState.AWAITING_APPROVAL)
        await workflow.wait_condition(lambda: self._book.answer is not None)
        answer, self._book.answer, self._s.pending = self._book.answer, None, None
        if answer is None:  # unreachable: the wait ended because there is an answer
            raise ApplicationError("decision wait ended without an answer", non_retryable=True)
        if answer.decision == "abort":
            raise ApplicationError(
                f"aborted at {phase} of {task} by {answer.approver}",
                type=errors.ABORTED,
                non_retryable=True,
            )
        self._set(TaskState.RUNNING)
        return answer

    # --- handlers -----------------------------------------------------------------------

    @workflow.update
    def decide(self, msg: PlanDecideInput) -> PlanDecision:
        decision = self._book.record(msg)
        self._wake = True
        workflow.logger.info(
            "plan decision recorded",
            extra={"task": msg.task, "phase": msg.phase, "decision": msg.decision},
        )
        return decision

    @decide.validator
    def _validate_decide(self, msg: PlanDecideInput) -> None:
        problem = self._book.decision_problem(msg)
        if problem:
            raise ValueError(problem)

    @workflow.query
    def status(self) -> PlanStatus:
        return self._status()

    # --- helpers ------------------------------------------------------------------------

    @property
    def _id(self) -> str:
        return workflow.info().workflow_id

    def _history_is_long(self) -> bool:
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() > self._plan.continue_as_new_after
        )

    def _status(self) -> PlanStatus:
        return self._book.status(self._state, self._stage, self._integration, self._error)

    def _set(self, state: TaskState) -> None:
        if (state, self._stage) != self._shown:
            self._shown = (state, self._stage)
            self._state = state
            workflow.upsert_search_attributes(
                [
                    IMPL_STATE.value_set(state.value),
                    IMPL_PHASE.value_set(self._stage),
                    IMPL_PLAN.value_set(self._id),
                ]
            )
        self._refresh()

    def _refresh(self) -> None:
        workflow.set_current_details(plan_table(self._status()))


def _retrieved(handle: asyncio.Future[ImplementationResult]) -> None:
    """Child outcomes reach the plan through observe_tasks; mark the handle's as seen."""
    if not handle.cancelled():
        handle.exception()
