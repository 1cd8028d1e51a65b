"""What a plan knows and the rules it decides by: ``PlanBook``.

The plan's state (``PlanState``: the tasks, their runs, the pending decision, the decisions
taken, the budget) and the rules that change it from what the plan learns — a run's state as
``observe_tasks`` saw it, a person's answer — with no effect of their own: no activity, no
timer, no message to another workflow. ``PlanWorkflow`` (``workflows/plan.py``) does the
effects and asks the book what follows; a test can drive the book with plain values.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from implflow.models import TaskState
    from implflow.plans import (
        IntegrationStatus,
        PlanDecideInput,
        PlanDecision,
        PlanInput,
        PlanPending,
        PlanState,
        PlanStatus,
        PlanTask,
        PlanTaskStatus,
        PlanTotals,
        TaskRun,
        child_id,
        rank_runs,
        ranking_evidence,
        task_branch,
        topological_order,
    )

_LOST = (TaskState.FAILED, TaskState.CANCELLED, TaskState.BLOCKED)
"""A task in one of these states will not complete: what depends on it is blocked."""


class PlanBook:
    """The plan's state and rules; ``s`` is what continue-as-new carries."""

    def __init__(self, plan: PlanInput) -> None:
        self.plan = plan
        self.order = topological_order(plan.tasks)
        self.s = plan.state or PlanState(tasks=[new_task(plan, t) for t in plan.tasks])
        self.tasks = {t.id: t for t in self.s.tasks}
        self.answer: PlanDecideInput | None = None
        """A person's answer to ``s.pending``, taken in by ``take_answer``."""

    @property
    def plan_id(self) -> str:
        return workflow.info().workflow_id

    def apply(self, runs: list[TaskRun]) -> None:
        """Take in what ``observe_tasks`` saw (or ``prepare_plan`` found)."""
        by_id = {r.workflow_id: r for t in self.tasks.values() for r in t.runs}
        for seen in runs:
            run = by_id.get(seen.workflow_id)
            if run is None:
                continue
            for field in TaskRun.model_fields:
                if field not in ("candidate", "label"):  # the plan's own, not the task's
                    setattr(run, field, getattr(seen, field))

    def settle(self) -> None:
        """Each task's state from its runs: completed, failed, or waiting for a pick."""
        for task_id in self.order:
            task = self.tasks[task_id]
            started = [r for r in task.runs if r.started]
            if started:
                summarize(task)
            if task.closed or not started or any(not r.closed for r in task.runs):
                continue
            done = rank_runs(task.runs)
            if not done:
                cancelled = all(r.state == TaskState.CANCELLED for r in task.runs)
                task.state = TaskState.CANCELLED if cancelled else TaskState.FAILED
                task.error = next((r.error for r in task.runs if r.error), None) or "failed"
                if self.plan.on_failure == "stop" and not self.s.stop_reason:
                    self.s.stop_reason = f"task {task.id} failed: {task.error}"
            elif len(task.runs) == 1:
                self.complete(task, done[0])
            elif task.picked is None:
                task.ranking = [r.candidate for r in done]
                task.state = TaskState.AWAITING_APPROVAL
                task.waiting = f"a pick among {len(done)} candidates"
                if self.plan.task(task_id).auto_pick == "best":
                    self.pick(task, done[0].candidate, "auto_pick: best")
        # What can no longer run: in dependency order, so blocking reaches every dependent.
        for task_id in self.order:
            task = self.tasks[task_id]
            lost = [d for d in task.depends_on if self.tasks[d].state in _LOST]
            if task.state == TaskState.PENDING and lost:
                task.state, task.waiting = TaskState.BLOCKED, None
                task.error = f"{', '.join(lost)} did not complete"

    def complete(self, task: PlanTaskStatus, run: TaskRun) -> None:
        task.state = TaskState.COMPLETED
        task.branch = run.branch or task_branch(run.workflow_id)
        task.head_commit = run.head_commit
        task.waiting = None

    def pick(self, task: PlanTaskStatus, candidate: int, by: str) -> None:
        chosen = task.runs[candidate - 1]
        for run in task.runs:
            run.label = "picked" if run is chosen else "not picked"
        task.picked = candidate
        self.complete(task, chosen)
        workflow.logger.info("candidate picked", extra={"task": task.id, "candidate": candidate})
        if by.startswith("auto_pick"):
            self.s.decisions.append(
                PlanDecision(
                    task=task.id,
                    phase="pick",
                    decision="approve",
                    approver=by,
                    at=workflow.now(),
                    candidate=candidate,
                )
            )

    def check_budget(self) -> None:
        cap = self.plan.budget.max_usd_total
        spent = sum(t.cost_usd for t in self.tasks.values())
        if cap and not self.s.budget_stopped and spent > cap + self.s.extra_usd:
            self.s.budget_stopped = True
            workflow.logger.info("plan budget reached", extra={"spent": spent})

    def ensure_pending(self) -> None:
        """Ask a person for the first decision the plan needs, if none is asked already."""
        if self.s.pending is not None or self.s.stop_reason:
            return
        now = workflow.now()
        if self.s.budget_stopped:
            cap = (self.plan.budget.max_usd_total or 0) + self.s.extra_usd
            spent = sum(t.cost_usd for t in self.tasks.values())
            self.s.pending = PlanPending(
                task="plan",
                phase="budget",
                since=now,
                options=["approve", "abort"],
                evidence=f"the plan spent ${spent:.2f} of ${cap:.2f} (budget.max_usd_total); "
                "its running tasks are paused",
            )
            return
        for task_id in self.order:
            task = self.tasks[task_id]
            if task.state == TaskState.AWAITING_APPROVAL and task.picked is None and task.ranking:
                done = [task.runs[c - 1] for c in task.ranking]
                others = [r for r in task.runs if r not in done]
                self.s.pending = PlanPending(
                    task=task_id,
                    phase="pick",
                    since=now,
                    options=["approve", "abort"],
                    candidates=list(task.ranking),
                    evidence=ranking_evidence(task_id, done, others),
                )
                return
            if task.conflict_files:
                self.s.pending = PlanPending(
                    task=task_id,
                    phase="merge",
                    since=now,
                    options=["approve", "abort"],
                    evidence=(
                        f"merging {task.conflict_with} for {task_id} conflicts in:\n"
                        + "\n".join(task.conflict_files[:50])
                        + f"\nresolve it on {task_branch(task.runs[0].workflow_id)}, push, approve"
                    ),
                )
                return

    def take_answer(self) -> None:
        """Apply the answer to the pending decision (the ``decide`` update checked it fits)."""
        msg, pending = self.answer, self.s.pending
        if msg is None or pending is None:
            return
        self.answer, self.s.pending = None, None
        if msg.decision == "abort":
            self.s.stop_reason = f"aborted at {msg.phase} of {msg.task} by {msg.approver}"
            self.s.stop_now = True
        elif msg.phase == "budget":
            self.s.extra_usd += msg.budget_usd or self.plan.budget.max_usd_total or 0.0
            self.s.budget_stopped = False
        elif msg.phase == "pick" and msg.candidate is not None:
            self.pick(self.tasks[msg.task], msg.candidate, msg.approver)
        elif msg.phase == "merge":  # resolved by hand: the branch is taken as it is pushed
            task = self.tasks[msg.task]
            task.conflict_files, task.conflict_with, task.waiting = [], None, None
            task.state = TaskState.PENDING

    def ready(
        self, free: int
    ) -> list[tuple[PlanTaskStatus, PlanTask, list[PlanTaskStatus], list[TaskRun]]]:
        """The tasks that may start now, in file order, with the runs that fit in ``free``
        slots: dependencies completed, no conflict waiting for a person."""
        batch = []
        for task_id in self.order:
            if free <= 0:
                break
            task = self.tasks[task_id]
            if task.closed or task.conflict_files or all(r.started for r in task.runs):
                continue
            deps = [self.tasks[d] for d in task.depends_on]
            if any(d.state != TaskState.COMPLETED for d in deps):
                continue
            runs = [r for r in task.runs if not r.started][:free]
            free -= len(runs)
            batch.append((task, self.plan.task(task_id), deps, runs))
        return batch

    def open_runs(self) -> list[TaskRun]:
        return [r for t in self.tasks.values() for r in t.runs if r.started and not r.closed]

    def finished(self) -> bool:
        return (
            self.s.pending is None
            and not self.open_runs()
            and all(t.closed for t in self.tasks.values())
        )

    def describe_failure(self, task_id: str) -> str:
        task = self.tasks[task_id]
        return f"{task_id} ({task.state.value}{': ' + task.error if task.error else ''})"

    def decision_problem(self, msg: PlanDecideInput) -> str | None:
        """Why ``msg`` does not answer the pending decision (``None``: it does)."""
        pending = self.s.pending
        if pending is None:
            return "the plan is not waiting for a decision"
        if (msg.task, msg.phase) != (pending.task, pending.phase):
            return (
                f"the plan waits for {pending.phase} of {pending.task!r}, "
                f"not {msg.phase} of {msg.task!r}"
            )
        if self.answer is not None:
            return "this decision was already taken"
        if msg.decision not in pending.options:
            return f"{pending.phase}: decide one of {', '.join(pending.options)}"
        if pending.phase == "pick" and msg.decision == "approve":
            if msg.candidate not in pending.candidates:
                return f"pick: give a candidate that completed: {pending.candidates} (--candidate)"
        elif msg.candidate is not None:
            return "candidate only answers a pick"
        if msg.budget_usd is not None and pending.phase != "budget":
            return "budget_usd only answers a budget stop"
        return None

    def record(self, msg: PlanDecideInput) -> PlanDecision:
        """Take a person's answer: recorded now; applied by ``take_answer`` (or the workflow's
        ``_ask``, for the decisions of the integration)."""
        decision = PlanDecision(
            task=msg.task,
            phase=msg.phase,
            decision=msg.decision,
            approver=msg.approver,
            at=workflow.now(),
            comment=msg.comment,
            candidate=msg.candidate,
            budget_usd=msg.budget_usd,
        )
        self.s.decisions.append(decision)
        self.answer = msg
        return decision

    def status(
        self,
        state: TaskState,
        stage: str,
        integration: IntegrationStatus | None,
        error: str | None,
    ) -> PlanStatus:
        tasks = list(self.tasks.values())
        totals = PlanTotals(
            tasks=len(tasks),
            pending=sum(t.state == TaskState.PENDING for t in tasks),
            running=sum(t.state in (TaskState.RUNNING, TaskState.REPAIRING) for t in tasks),
            waiting=sum(t.state in (TaskState.AWAITING_APPROVAL, TaskState.PAUSED) for t in tasks),
            completed=sum(t.state == TaskState.COMPLETED for t in tasks),
            failed=sum(t.state == TaskState.FAILED for t in tasks),
            blocked=sum(t.state == TaskState.BLOCKED for t in tasks),
            cancelled=sum(t.state == TaskState.CANCELLED for t in tasks),
            cost_usd=round(sum(t.cost_usd for t in tasks), 6),
        )
        budget = self.plan.budget.max_usd_total
        return PlanStatus(
            plan_id=self.plan_id,
            title=self.plan.title,
            state=state,
            stage=stage,
            tasks=tasks,
            totals=totals,
            pending=self.s.pending,
            decisions=self.s.decisions,
            integration=integration,
            budget_usd_total=budget + self.s.extra_usd if budget else None,
            concurrency=self.plan.concurrency,
            continued=self.s.continued,
            error=error or self.s.stop_reason,
        )


def new_task(plan: PlanInput, spec: PlanTask) -> PlanTaskStatus:
    plan_id = workflow.info().workflow_id
    return PlanTaskStatus(
        id=spec.id,
        title=spec.title,
        specialist=plan.task_input(spec).specialist or "backend-implementer",
        depends_on=list(spec.depends_on),
        runs=[
            TaskRun(workflow_id=child_id(plan_id, spec.id, k, spec.count), candidate=k)
            for k in range(1, spec.count + 1)
        ],
    )


def summarize(task: PlanTaskStatus) -> None:
    """A running task's phase, state, what it waits for and cost, from its runs."""
    task.cost_usd = round(sum(r.cost_usd for r in task.runs), 6)
    open_runs = [r for r in task.runs if r.started and not r.closed]
    many = len(task.runs) > 1
    if not open_runs:
        task.phase = next((r.phase for r in task.runs if r.phase), task.phase)
        if task.state not in (TaskState.AWAITING_APPROVAL,) and not task.conflict_files:
            task.waiting = None
        return
    states = {r.state for r in open_runs}
    if TaskState.AWAITING_APPROVAL in states:
        task.state = TaskState.AWAITING_APPROVAL
    elif TaskState.REPAIRING in states:
        task.state = TaskState.REPAIRING
    elif states == {TaskState.PAUSED}:
        task.state = TaskState.PAUSED
    else:
        task.state = TaskState.RUNNING
    task.phase = ", ".join(
        (f"c{r.candidate}: " if many else "") + (r.phase or "starting") for r in open_runs
    )
    waiting = next((r for r in open_runs if r.waiting), None)
    task.waiting = (
        (f"candidate {waiting.candidate}: " if many else "") + (waiting.waiting or "")
        if waiting
        else None
    )
    if not many:
        task.branch = open_runs[0].branch
