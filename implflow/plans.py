"""Plans: many tasks in dependency order. The contracts, their validation, the file formats.

A plan is one ``PlanInput``: a repository, a base, and a list of tasks with ``depends_on``
edges; ``PlanWorkflow`` (``workflows/plan.py``) runs one ``ImplementationWorkflow`` child per
task. The plan contracts live here rather than in ``implflow.models`` because they carry their
own validation (unknown dependencies, cycles with their path, every task's merged input),
which the file loader, the workflow (a start from the Temporal CLI) and the client share;
``implflow.models`` stays the contract of one task.

Two file formats turn into the same ``PlanInput`` (see the README's *Plans* section):

- YAML: ``title``, ``repo``, ``base``, ``concurrency``, ``on_failure``, ``integrate``,
  ``budget``, ``defaults`` and ``tasks``;
- Markdown task lists as spec-driven tools write them (``tasks.md``): checklist items or
  headings with ids like ``T001``, ``[P]`` marks, phases, ``depends on T00x`` text.

Everything a person can get wrong is reported as one line naming the task and the field.
The pure helpers the workflow uses (order, ranking, the table of tasks) are here too, so they
are tested without a server.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import yaml
from pydantic import ConfigDict, Field, StringConstraints, field_validator, model_validator

from implflow.converter import describe_validation_error
from implflow.errors import InvalidInputError
from implflow.layout import branch_name
from implflow.models import (
    PHASE_NAME_PATTERN,
    Argv,
    Comment,
    ImplementationInput,
    ImplementationResult,
    Label,
    TaskState,
    Thresholds,
    _Input,
    _Record,
)

PLAN_WORKFLOW_TYPE = "PlanWorkflow"
PLAN_SEARCH_ATTRIBUTE = "ImplPlan"
"""Keyword search attribute on the plan and every task of it: the plan id."""

TASK_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,47}$"
PLAN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,79}$"
"""Plan and task ids become workflow ids and branch names: no dots, slashes or spaces."""
_BASE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$"

TaskId = Annotated[str, StringConstraints(strip_whitespace=True, pattern=TASK_ID_PATTERN)]

MAX_TASKS = 1000
MAX_CANDIDATES = 5
PLAN_ONLY_FIELDS = ("stack", "auto_pick", "candidates")
"""Task fields that steer the plan, not the task's own workflow; allowed in ``defaults``."""
TASK_INPUT_FIELDS = frozenset(ImplementationInput.model_fields) - {"title", "description", "repo"}
"""Fields of ``ImplementationInput`` a plan task (or ``defaults``) may set."""
INTEGRATION_BRANCH_PREFIX = "implflow/plan/"


def child_id(plan_id: str, task_id: str, candidate: int = 1, candidates: int = 1) -> str:
    """Workflow id of a task's child: ``<plan>.<task>``, or ``<plan>.<task>.c<k>`` for N > 1."""
    return f"{plan_id}.{task_id}" if candidates == 1 else f"{plan_id}.{task_id}.c{candidate}"


def task_branch(workflow_id: str) -> str:
    """The branch a task workflow works on (``implflow.layout.branch_name``)."""
    return branch_name(workflow_id)


def integration_branch(plan_id: str) -> str:
    """The branch that holds the whole plan's result."""
    return f"{INTEGRATION_BRANCH_PREFIX}{plan_id}"


# --- what a person writes -----------------------------------------------------------------


class IntegrateSpec(_Input):
    """How the plan ends: merge the task branches into ``implflow/plan/<id>``, test once more."""

    enabled: bool = True
    gate: Annotated[str, StringConstraints(pattern=PHASE_NAME_PATTERN)] | None = Field(
        default="test",
        description="Run this phase's gate checks on the merged result (preset or gates.toml).",
    )
    command: Argv | None = Field(
        default=None,
        description="Instead of a gate: an argv run in the merged checkout, exit 0 passes; "
        "{python} is the worker's interpreter.",
    )
    pull_request: bool = Field(
        default=False, description="Open a pull request for the integration branch at the end."
    )


class PlanBudget(_Input):
    """Caps across every task of the plan; reaching one waits for a person."""

    max_usd_total: float | None = Field(default=None, gt=0)


class PlanTask(_Input):
    """One task of a plan: its place in the graph, plus any task-input field (``executor``...)."""

    model_config = ConfigDict(extra="allow")  # the task-input fields, checked below

    id: TaskId
    title: Label
    description: str = Field(default="", max_length=20_000)
    depends_on: list[TaskId] = Field(default_factory=list)
    specialist: str | None = Field(default=None, description="Default: backend-implementer.")
    candidates: (
        Annotated[int, Field(ge=1, le=MAX_CANDIDATES)]
        | Annotated[list[dict[str, Any]], Field(min_length=1, max_length=MAX_CANDIDATES)]
    ) = Field(default=1, description="N children side by side, or a list of input overrides.")
    auto_pick: Literal["best"] | None = None
    stack: bool = Field(default=True, description="Start from the dependencies' results.")

    @model_validator(mode="after")
    def _extra_fields_are_task_inputs(self) -> PlanTask:
        unknown = sorted(set(self.model_extra or {}) - TASK_INPUT_FIELDS)
        if unknown:
            raise ValueError(
                f"unknown field(s) {unknown} (a task takes: id, title, description, depends_on, "
                "specialist, candidates, auto_pick, stack, and the task-input fields)"
            )
        if len(set(self.depends_on)) != len(self.depends_on):
            raise ValueError("depends_on: lists a task twice")
        for index, override in enumerate(self.candidate_overrides(), 1):
            bad = sorted(set(override) - TASK_INPUT_FIELDS)
            if bad:
                raise ValueError(f"candidates[{index}]: unknown field(s) {bad}")
        return self

    @property
    def count(self) -> int:
        """How many children run this task."""
        return self.candidates if isinstance(self.candidates, int) else len(self.candidates)

    def candidate_overrides(self) -> list[dict[str, Any]]:
        """The input overrides of each candidate (empty mappings for ``candidates: N``)."""
        if isinstance(self.candidates, int):
            return [{} for _ in range(self.candidates)]
        return [dict(c) for c in self.candidates]


class PlanInput(_Input):
    """Input of ``PlanWorkflow``: the JSON form of a plan file."""

    title: Label
    repo: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2048)]
    base: Annotated[str, StringConstraints(pattern=_BASE_PATTERN)] | None = Field(
        default=None, description="Branch the plan starts from; default: the repo's HEAD."
    )
    concurrency: int = Field(default=2, ge=1, le=50)
    on_failure: Literal["stop", "continue"] = "stop"
    integrate: IntegrateSpec = Field(default_factory=IntegrateSpec)
    budget: PlanBudget = Field(default_factory=PlanBudget)
    defaults: dict[str, Any] = Field(default_factory=dict)
    tasks: list[PlanTask] = Field(min_length=1, max_length=MAX_TASKS)
    continue_as_new_after: int = Field(
        default=10_000,
        ge=200,
        le=40_000,
        description="History events after which the plan continues as new (its state only).",
    )
    state: PlanState | None = Field(
        default=None, description="Carried across continue-as-new; never set by hand."
    )

    @field_validator("base")
    @classmethod
    def _base_is_a_branch_name(cls, value: str | None) -> str | None:
        if value is not None and (
            ".." in value or "//" in value or value.endswith(("/", ".", ".lock"))
        ):
            raise ValueError(f"{value!r} is not a valid branch name")
        return value

    @model_validator(mode="before")
    @classmethod
    def _tasks_named_in_errors(cls, data: Any) -> Any:
        """Validate each task first, so an error names the task, not only its list index."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if isinstance(data.get("integrate"), bool):
            data["integrate"] = {"enabled": data["integrate"]}
        defaults = data.get("defaults")
        if isinstance(defaults, dict):
            unknown = sorted(set(defaults) - TASK_INPUT_FIELDS - set(PLAN_ONLY_FIELDS))
            if unknown:
                raise ValueError(f"defaults: unknown field(s) {unknown}")
        tasks = data.get("tasks")
        if isinstance(tasks, list):
            inherited = {
                k: v for k, v in (defaults or {}).items() if k in PLAN_ONLY_FIELDS
            }  # stack / auto_pick / candidates from defaults, unless the task sets them
            checked: list[Any] = []
            for index, raw in enumerate(tasks):
                if isinstance(raw, PlanTask):
                    checked.append(raw)
                    continue
                if not isinstance(raw, dict):
                    raise ValueError(f"tasks[{index}]: must be a mapping of fields")
                try:
                    checked.append(PlanTask.model_validate({**inherited, **raw}))
                except pydantic.ValidationError as err:
                    raise ValueError(f"{_task_label(index, raw)}: {_problems(err)}") from None
            data["tasks"] = checked
        return data

    @model_validator(mode="after")
    def _graph_and_inputs_are_sound(self) -> PlanInput:
        seen: dict[str, int] = {}
        for index, task in enumerate(self.tasks):
            if task.id in seen:
                raise ValueError(
                    f"{_task_label(index, task)}: id: duplicate of tasks[{seen[task.id]}]"
                )
            seen[task.id] = index
        for index, task in enumerate(self.tasks):
            for dep in task.depends_on:
                if dep == task.id:
                    raise ValueError(f"{_task_label(index, task)}: depends_on: itself")
                if dep not in seen:
                    known = ", ".join(t.id for t in self.tasks[:20])
                    raise ValueError(
                        f"{_task_label(index, task)}: depends_on: unknown task {dep!r}; "
                        f"known: {known}{', ...' if len(self.tasks) > 20 else ''}"
                    )
        cycle = find_cycle(self.tasks)
        if cycle:
            raise ValueError(f"depends_on: cycle {' -> '.join(cycle)}")
        for index, task in enumerate(self.tasks):
            for candidate, override in enumerate(task.candidate_overrides(), 1):
                try:
                    self.task_input(task, candidate)
                except pydantic.ValidationError as err:
                    where = f"candidates[{candidate}]: " if override else ""
                    raise ValueError(
                        f"{_task_label(index, task)}: {where}{_problems(err)}"
                    ) from None
        return self

    def task(self, task_id: str) -> PlanTask:
        """The task named ``task_id``."""
        return next(t for t in self.tasks if t.id == task_id)

    def task_input(self, task: PlanTask, candidate: int = 1) -> ImplementationInput:
        """The child's input: ``defaults`` < the task's fields < the candidate's overrides."""
        base = {k: v for k, v in self.defaults.items() if k not in PLAN_ONLY_FIELDS}
        data = _merged(base, dict(task.model_extra or {}))
        data = _merged(data, task.candidate_overrides()[candidate - 1])
        if task.specialist:
            data["specialist"] = task.specialist
        data.update(title=task.title, description=self._described(task), repo=self.repo)
        return ImplementationInput.model_validate(data)

    def thresholds(self) -> Thresholds:
        """Gate targets of the integration test: the defaults' ``thresholds``."""
        return Thresholds.model_validate(self.defaults.get("thresholds") or {})

    def _described(self, task: PlanTask) -> str:
        """The task's text, with the plan around it: what it belongs to, what it builds on."""
        text = (task.description or task.title).strip()
        context = f'This task is part of the plan "{self.title}" ({len(self.tasks)} tasks).'
        if task.depends_on:
            titles = "; ".join(f"{d}: {self.task(d).title}" for d in task.depends_on)
            context += (
                f" Its branch starts from the results of {titles}."
                if task.stack
                else f" It runs after {titles}, from the plan's base."
            )
        return f"{text[: 20_000 - len(context) - 2]}\n\n{context}"


def _task_label(index: int, task: PlanTask | Mapping[str, Any]) -> str:
    ident = task.id if isinstance(task, PlanTask) else task.get("id")
    return f"tasks[{index}] ({ident})" if isinstance(ident, str) and ident else f"tasks[{index}]"


def _problems(err: pydantic.ValidationError) -> str:
    return describe_validation_error(err).removeprefix("invalid input: ")


def _merged(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``; mappings are merged key by key, anything else replaced."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


# --- the graph ----------------------------------------------------------------------------


def find_cycle(tasks: list[PlanTask]) -> list[str] | None:
    """A dependency cycle as a path ``[a, b, ..., a]``, or None; deterministic (file order)."""
    deps = {t.id: [d for d in t.depends_on] for t in tasks}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    for root in deps:
        if state.get(root):
            continue
        path: list[str] = [root]
        stack = [iter(deps[root])]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
                continue
            if nxt not in deps or state.get(nxt) == 2:
                continue
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            state[nxt] = 1
            path.append(nxt)
            stack.append(iter(deps[nxt]))
    return None


def topological_order(tasks: list[PlanTask]) -> list[str]:
    """Task ids with every dependency before its dependents; file order among equals."""
    done: set[str] = set()
    order: list[str] = []
    remaining = list(tasks)
    while remaining:
        ready = next(t for t in remaining if all(d in done for d in t.depends_on))
        remaining.remove(ready)
        done.add(ready.id)
        order.append(ready.id)
    return order


# --- what the plan reports (and carries across continue-as-new) -------------------------


CLOSED_TASK_STATES = {
    TaskState.COMPLETED,
    TaskState.FAILED,
    TaskState.CANCELLED,
    TaskState.BLOCKED,
}


class CandidateFigures(_Record):
    """What the gates measured on one finished child: the figures candidates are ranked by."""

    gates_passed: int = 0
    gates_waived: int = 0
    coverage_pct: float | None = None
    findings: int | None = None
    p95_ms: float | None = None
    cost_usd: float = 0.0

    def line(self) -> str:
        """One line for the ranking evidence."""
        cov = f"{self.coverage_pct:g} %" if self.coverage_pct is not None else "-"
        p95 = f"{self.p95_ms:g} ms" if self.p95_ms is not None else "-"
        findings = str(self.findings) if self.findings is not None else "-"
        return (
            f"gates {self.gates_passed} passed, {self.gates_waived} waived; coverage {cov}; "
            f"findings {findings}; p95 {p95}; ${self.cost_usd:.2f}"
        )


class TaskRun(_Record):
    """One child workflow of a task (one candidate, when there are several)."""

    workflow_id: str
    candidate: int = 1
    started: bool = False
    closed: bool = False
    state: TaskState | None = None
    phase: str | None = None
    waiting: str | None = None
    """What it waits for, e.g. ``approval of design`` or ``a failed gate at test``."""
    pending_phase: str | None = None
    pending_kind: str | None = None
    branch: str | None = None
    head_commit: str | None = None
    cost_usd: float = 0.0
    error: str | None = None
    last_decision: str | None = None
    decisions: int = 0
    figures: CandidateFigures | None = None
    fingerprint: str = ""
    label: str = ""
    """``picked`` / ``not picked`` once a candidate was chosen."""

    def fingerprinted(self) -> TaskRun:
        """A copy whose ``fingerprint`` sums up what a person would see change."""
        body = self.model_dump_json(exclude={"fingerprint", "label"})
        digest = hashlib.sha256(body.encode()).hexdigest()[:16]
        return self.model_copy(update={"fingerprint": digest})


class PlanTaskStatus(_Record):
    """One task of the plan: its state, phase, what it waits for, branch and cost."""

    id: str
    title: str
    specialist: str = "backend-implementer"
    depends_on: list[str] = Field(default_factory=list)
    state: TaskState = TaskState.PENDING
    phase: str | None = None
    waiting: str | None = None
    runs: list[TaskRun] = Field(default_factory=list)
    start_commit: str | None = None
    stacked_on: list[str] = Field(default_factory=list)
    """The tasks whose results its branch started from (empty: the plan's base)."""
    branch: str | None = None
    """The task's result branch (the picked candidate's)."""
    head_commit: str | None = None
    cost_usd: float = 0.0
    picked: int | None = None
    ranking: list[int] = Field(default_factory=list)
    conflict_files: list[str] = Field(default_factory=list)
    """Merging its dependencies' results conflicted in these files: a person resolves it."""
    conflict_with: str | None = None
    error: str | None = None

    @property
    def closed(self) -> bool:
        """Finished, one way or another: nothing of it runs or will run."""
        return self.state in CLOSED_TASK_STATES


PlanDecisionPhase = Literal["budget", "merge", "pick", "integrate"]


class PlanPending(_Record):
    """A decision only a person can take for the plan (not for one task's phase)."""

    task: str
    """The task it concerns, or ``plan``."""
    phase: PlanDecisionPhase
    evidence: str = ""
    since: datetime
    options: list[str] = Field(default_factory=list)
    candidates: list[int] = Field(default_factory=list)


class PlanDecideInput(_Input):
    """Update ``decide`` of ``PlanWorkflow``: answers the plan's pending decision.

    ``merge``: approve (resolved and pushed by hand: merge again), waive (leave the task
    out of the integration), abort. ``pick``: approve with ``candidate``. ``budget``:
    approve with ``budget_usd`` more dollars (default: the cap again), abort.
    ``integrate`` (the tests failed on the merged result): approve (accept), abort.
    """

    task: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
    phase: PlanDecisionPhase
    decision: Literal["approve", "waive", "abort"]
    approver: Label
    comment: Comment = ""
    candidate: int | None = Field(default=None, ge=1, le=MAX_CANDIDATES)
    budget_usd: float | None = Field(default=None, gt=0, le=100_000)


class PlanDecision(_Record):
    """A recorded plan-level decision (task decisions are recorded by the tasks)."""

    task: str
    phase: str
    decision: str
    approver: str
    at: datetime
    comment: str = ""
    candidate: int | None = None
    budget_usd: float | None = None


class IntegrationStatus(_Record):
    """The integration branch: what was merged into it and how its test run went."""

    branch: str
    commit: str | None = None
    merged: list[str] = Field(default_factory=list)
    left_out: list[str] = Field(default_factory=list)
    conflict_task: str | None = None
    conflict_files: list[str] = Field(default_factory=list)
    test_passed: bool | None = None
    test_summary: str = ""
    accepted_by: str | None = None
    pull_request: str | None = None


class PlanTotals(_Record):
    tasks: int = 0
    pending: int = 0
    running: int = 0
    waiting: int = 0
    completed: int = 0
    failed: int = 0
    blocked: int = 0
    cancelled: int = 0
    cost_usd: float = 0.0


class PlanState(_Record):
    """Everything the plan knows, small enough to carry across continue-as-new."""

    tasks: list[PlanTaskStatus]
    base_commit: str | None = None
    pending: PlanPending | None = None
    decisions: list[PlanDecision] = Field(default_factory=list)
    extra_usd: float = 0.0
    budget_stopped: bool = False
    stop_reason: str | None = None
    """Why the plan stops (a task failed under ``stop``, or a person aborted)."""
    stop_now: bool = False
    """Cancel the running tasks at once (abort), rather than after their phase (``stop``)."""
    signalled: dict[str, str] = Field(default_factory=dict)
    """Workflow id -> the last control message the plan sent it (pause, resume, cancel)."""
    continued: int = 0


class PlanStatus(_Record):
    """Answer of ``PlanWorkflow``'s ``status`` query."""

    plan_id: str
    title: str
    state: TaskState
    stage: Literal["tasks", "integrate", "done"] = "tasks"
    tasks: list[PlanTaskStatus] = Field(default_factory=list)
    totals: PlanTotals = Field(default_factory=PlanTotals)
    pending: PlanPending | None = None
    decisions: list[PlanDecision] = Field(default_factory=list)
    integration: IntegrationStatus | None = None
    budget_usd_total: float | None = None
    concurrency: int = 2
    continued: int = 0
    error: str | None = None

    def task(self, task_id: str) -> PlanTaskStatus | None:
        """The task named ``task_id``, if the plan has it."""
        return next((t for t in self.tasks if t.id == task_id), None)


class PlanResult(_Record):
    """Result of ``PlanWorkflow``."""

    plan_id: str
    title: str
    state: TaskState
    tasks: list[PlanTaskStatus]
    totals: PlanTotals
    integration: IntegrationStatus | None = None
    decisions: list[PlanDecision] = Field(default_factory=list)


# --- activity contracts -------------------------------------------------------------------


class PreparePlanInput(_Input):
    plan_id: str
    repo: str
    base: str | None = None
    specialists: dict[str, str] = Field(default_factory=dict)
    """Specialist name -> a task that names it: checked before anything starts."""
    children: list[str] = Field(default_factory=list)
    """Child workflow ids an earlier run of this plan id may have started."""


class PreparePlanResult(_Record):
    base_commit: str
    adopted: list[TaskRun] = Field(default_factory=list)


class TaskBranchInput(_Input):
    plan_id: str
    task_id: str
    repo: str
    branches: list[str]
    """The branches to create (one per candidate), unless they exist already."""
    sources: list[str] = Field(default_factory=list)
    """The dependencies' result branches, in dependency order; empty: ``base_commit``."""
    base_commit: str


class TaskBranchResult(_Record):
    start_commit: str | None = None
    conflict_files: list[str] = Field(default_factory=list)
    conflict_with: str | None = None


class ObserveInput(_Input):
    workflow_ids: list[str]
    known: dict[str, str] = Field(default_factory=dict)
    """Workflow id -> fingerprint last seen: only changes are reported."""
    wait_s: float = Field(default=300.0, gt=0, le=3600)
    poll_s: float = Field(default=1.0, gt=0, le=60)


class ObserveResult(_Record):
    runs: list[TaskRun] = Field(default_factory=list)


class MergeItem(_Input):
    task_id: str
    branch: str


class IntegrateInput(_Input):
    plan_id: str
    repo: str
    base_commit: str
    merges: list[MergeItem]
    left_out: list[str] = Field(default_factory=list)
    gate: str | None = "test"
    command: list[str] | None = None
    thresholds: Thresholds = Field(default_factory=Thresholds)
    run_test: bool = True


class IntegrateResult(_Record):
    branch: str
    commit: str
    merged: list[str] = Field(default_factory=list)
    conflict_task: str | None = None
    conflict_files: list[str] = Field(default_factory=list)
    test_passed: bool | None = None
    test_summary: str = ""
    evidence: str = ""


PlanInput.model_rebuild()


# --- pure helpers the workflow and the activities use -----------------------------------


def candidate_figures(result: ImplementationResult) -> CandidateFigures:
    """The ranking figures of a finished child, from its gates' final verdicts and ledger."""
    figures = CandidateFigures(cost_usd=result.ledger.cost_usd)
    findings: int | None = None
    for phase in result.phases:
        gate = phase.gate
        if gate is None:
            continue
        if gate.passed:
            figures.gates_passed += 1
        else:  # the phase is done with a failed final gate: a person waived it
            figures.gates_waived += 1
        for check in gate.checks:
            got = check.figures
            if isinstance(got.get("line_rate_pct"), (int, float)):
                figures.coverage_pct = float(got["line_rate_pct"])
            if "high" in got and isinstance(got.get("total"), int):  # a SARIF scan
                findings = (findings or 0) + int(got["total"])
            if isinstance(got.get("p95_ms"), (int, float)):
                figures.p95_ms = float(got["p95_ms"])
    figures.findings = findings
    return figures


def rank_runs(runs: Iterable[TaskRun]) -> list[TaskRun]:
    """Completed runs, best first: fewer waived gates, more passed, higher coverage, fewer
    findings, lower p95, lower cost, then the candidate number."""

    def key(run: TaskRun) -> tuple[float, ...]:
        f = run.figures or CandidateFigures(cost_usd=run.cost_usd)
        return (
            f.gates_waived,
            -f.gates_passed,
            -(f.coverage_pct if f.coverage_pct is not None else -1.0),
            f.findings if f.findings is not None else float("inf"),
            f.p95_ms if f.p95_ms is not None else float("inf"),
            f.cost_usd,
            run.candidate,
        )

    return sorted((r for r in runs if r.state == TaskState.COMPLETED), key=key)


def ranking_evidence(task_id: str, ranked: list[TaskRun], others: list[TaskRun]) -> str:
    """The ranking as the evidence of the pick decision."""
    lines = [f"candidates of {task_id}, best first (by waived gates, passed gates, coverage, "]
    lines[0] += "findings, p95, cost):"
    for place, run in enumerate(ranked, 1):
        figures = run.figures.line() if run.figures else f"${run.cost_usd:.2f}"
        lines.append(f"{place}. candidate {run.candidate} ({run.branch or '-'}): {figures}")
    for run in others:
        lines.append(f"-  candidate {run.candidate}: {run.state or 'not run'} {run.error or ''}")
    return "\n".join(lines).strip()[:3000]


def plan_table(status: PlanStatus) -> str:
    """Markdown for the plan's *current details*: a table of tasks, totals, what waits."""
    t = status.totals
    lines = [
        f"**{status.title}** — `{status.state.value}` · {status.stage}",
        "",
        f"{t.completed}/{t.tasks} completed · {t.running} running · {t.waiting} waiting · "
        f"{t.failed} failed · {t.blocked} blocked · ${t.cost_usd:.2f}"
        + (f" of ${status.budget_usd_total:.2f}" if status.budget_usd_total else ""),
        "",
        "| task | specialist | state | phase | waiting for | branch | cost |",
        "|---|---|---|---|---|---|---|",
    ]
    for task in status.tasks[:200]:
        lines.append(
            f"| {task.id} | {task.specialist} | {task.state.value} | {task.phase or ''} | "
            f"{(task.waiting or '').replace('|', '/')} | {task.branch or ''} | "
            f"${task.cost_usd:.2f} |"
        )
    if len(status.tasks) > 200:
        lines.append(f"| … {len(status.tasks) - 200} more | | | | | | |")
    if status.pending:
        p = status.pending
        lines += [
            "",
            f"**Waiting for a decision:** {p.phase} of `{p.task}` ({', '.join(p.options)}): "
            f"`implflow plan approve {status.plan_id} {p.task} --phase {p.phase}`",
        ]
        if p.evidence:
            lines += ["", "```", p.evidence, "```"]
    i = status.integration
    if i is not None and i.commit:
        lines += ["", f"Integration: `{i.branch}` @ {i.commit[:12]}, merged {', '.join(i.merged)}"]
    if status.error:
        lines += ["", f"**Error:** {status.error}"]
    return "\n".join(lines)


def plan_digest(plan: PlanInput) -> str:
    """A short digest of what the plan asks for (its state excluded)."""
    body = plan.model_dump_json(exclude={"state", "continue_as_new_after"})
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def default_plan_id(plan: PlanInput) -> str:
    """``plan-<title>-<8 hex of the content>``: the same file gets the same id."""
    slug = re.sub(r"[^a-z0-9]+", "-", plan.title.lower()).strip("-")[:40].strip("-") or "plan"
    return f"plan-{slug}-{plan_digest(plan)[:8]}"


# --- files ----------------------------------------------------------------------------


def parse_plan(data: Mapping[str, Any] | str) -> PlanInput:
    """Validate a plan (mapping or JSON); ``InvalidInputError`` is one line naming the field."""
    try:
        if isinstance(data, str):
            return PlanInput.model_validate_json(data)
        return PlanInput.model_validate(dict(data))
    except pydantic.ValidationError as err:
        raise InvalidInputError(f"invalid input: {_problems(err)}") from None


def load_plan(path: str | Path, repo: str | None = None) -> PlanInput:
    """Read a plan file (``.md``: a task list; anything else: YAML) and validate it.

    Relative ``repo`` and ``cassette`` paths are resolved against the file's directory;
    ``repo`` (e.g. ``--repo``) replaces the file's. Every error is one line.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInputError(f"invalid input: {file}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise InvalidInputError(f"invalid input: {file}: cannot read ({err})") from None
    if file.suffix.lower() in (".md", ".markdown"):
        from implflow.plan_markdown import parse_task_list

        data = parse_task_list(text, file.name)
    else:
        data = _yaml_mapping(text, file.name)
    if repo is not None:
        data["repo"] = repo
    if "repo" not in data:
        raise InvalidInputError(f"invalid input: {file.name}: repo: required (or give --repo)")
    return parse_plan(_resolved_paths(data, file.resolve().parent))


def _yaml_mapping(text: str, name: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise InvalidInputError(
            f"invalid input: {name}{where}: not valid YAML ({' '.join(str(problem).split())})"
        ) from None
    if not isinstance(data, dict):
        raise InvalidInputError(f"invalid input: {name}: must be a mapping (title, repo, tasks)")
    return data


def _resolved_paths(data: dict[str, Any], here: Path) -> dict[str, Any]:
    """Relative ``repo`` and ``cassette`` paths, made absolute against the file's directory."""
    from implflow.layout import is_url  # the one spelling of "is this a git URL"

    def local(value: Any) -> Any:
        if isinstance(value, str) and value and not is_url(value):
            return str((here / Path(value).expanduser()).resolve())
        return value

    out = dict(data)
    if "repo" in out:
        out["repo"] = local(out["repo"])
    holders: list[Any] = [out.get("defaults")]
    # Only a list holds tasks: anything else (`tasks: 5`) is left as it is for the model
    # to refuse in one line naming `tasks`, never iterated here.
    tasks = out.get("tasks")
    for task in tasks if isinstance(tasks, list) else []:
        holders.append(task)
        if isinstance(task, dict) and isinstance(task.get("candidates"), list):
            holders.extend(task["candidates"])
    for holder in holders:
        if isinstance(holder, dict) and isinstance(holder.get("cassette"), str):
            holder["cassette"] = local(holder["cassette"])
    return out


def check_specialists(plan: PlanInput, extra_dir: Path | None = None) -> None:
    """Every task's specialist exists (repo's ``.claude/agents``, ``extra_dir``, bundled).

    Only for a repository on this machine; the worker checks every plan again before it starts.
    """
    from activities.specialists import list_specialists
    from implflow.layout import is_url

    if is_url(plan.repo) or not Path(plan.repo).is_dir():
        return
    available = list_specialists(Path(plan.repo), extra_dir)
    for index, name in specialists_of(plan):
        if name not in available:
            raise InvalidInputError(
                f"invalid input: {_task_label(index, plan.tasks[index])}: specialist: unknown "
                f"specialist {name!r}; available: {', '.join(available)}"
            )


def specialists_of(plan: PlanInput) -> list[tuple[int, str]]:
    """(task index, specialist) for every child the plan would start that names one."""
    found: list[tuple[int, str]] = []
    for index, task in enumerate(plan.tasks):
        for candidate in range(1, task.count + 1):
            name = plan.task_input(task, candidate).specialist
            if name and (index, name) not in found:
                found.append((index, name))
    return found


def plan_json(plan: PlanInput) -> str:
    """The JSON form a ``temporal workflow start --type PlanWorkflow --input`` takes."""
    return json.dumps(plan.model_dump(mode="json", exclude={"state"}, exclude_defaults=True))
