"""The contracts: one pydantic model per workflow, activity, signal and update call.

Everything that crosses the Temporal boundary is defined here, so a reader (or a
script author) finds the whole public shape of implflow in one file. Models are
passed through the workflow sandbox (see ``workflows/implementation.py``).

Rules kept here:
- inputs forbid unknown fields, so a typo (``"titel"``) fails at once and names the field;
- every optional field has a documented default, so new fields never break running work;
- no model carries a secret value: settings and keys stay on the worker.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

PHASES: tuple[str, ...] = (
    "review",
    "design",
    "implement",
    "validate",
    "optimize",
    "test",
    "document",
    "verify",
)
"""The default pipeline, in order."""

MAX_DESCRIPTION_CHARS = 20_000
"""Task text travels in history; keep it well under Temporal's payload limits."""

PHASE_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,39}$"
"""The one spelling of a safe phase name (it becomes part of file and ref paths)."""

PhaseName = Annotated[str, StringConstraints(strip_whitespace=True, pattern=PHASE_NAME_PATTERN)]
"""Lower-case letters, digits, ``-`` and ``_``: phase names become file and branch paths."""
ApprovalKind = Literal["approval", "gate", "budget", "question"]
"""Why a task waits for a person: a configured approval, a failed gate, a budget stop, or the
review's blocking questions."""

ProjectKind = Literal["python", "node", "none"]
"""What kind of project a gate preset was chosen for."""


def _program_named(argv: list[str]) -> list[str]:
    if not argv[0].strip():
        raise ValueError("the first element names the program to run: it may not be empty")
    return argv


Argv = Annotated[
    list[Annotated[str, StringConstraints(max_length=4096, pattern=r"^[^\x00]*$")]],
    Field(min_length=1),
    AfterValidator(_program_named),
]
"""A program and its arguments (never a shell string); no NUL byte, which no argv can hold."""


MAX_WAIT_S = 366 * 86400.0
"""The longest approval wait or reminder delay accepted: one year (a finite timer)."""


class _Input(BaseModel):
    """Base for everything a user or another program sends in.

    Strict: no string-to-number or string-to-bool coercion (``"3"`` is not 3, ``"yes"`` is not
    true); no NaN or infinity; unknown fields refused.
    """

    model_config = ConfigDict(extra="forbid", frozen=False, strict=True, allow_inf_nan=False)


class _Record(BaseModel):
    """Base for what implflow reports back; tolerant of fields added later."""

    model_config = ConfigDict(extra="ignore")


Label = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
"""A title or a person's name: one line of text, at most 200 characters."""
Comment = Annotated[str, Field(max_length=4000)]
"""A person's comment on a decision."""


class TaskState(StrEnum):
    """A task's state: the values of the ``ImplState`` search attribute, and in a plan's
    status also ``pending`` (its dependencies have not completed) and ``blocked`` (one of
    them failed or was cancelled), which only a plan gives a task that has not started."""

    PENDING = "pending"
    BLOCKED = "blocked"
    RUNNING = "running"
    REPAIRING = "repairing"
    AWAITING_APPROVAL = "awaiting_approval"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


class PhaseStatusValue(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


def _in_order(model: BaseModel, where: str, low: str, high: str) -> None:
    """``high`` may not be below ``low`` (two fields of ``model``, a part of the input)."""
    if getattr(model, high) < getattr(model, low):
        raise ValueError(f"{where}.{high} must be >= {where}.{low}")


class RetrySpec(_Input):
    """A bounded retry policy for one phase activity."""

    name: str = "phase-default"
    maximum_attempts: int = Field(default=3, ge=1, le=20)
    initial_interval_s: float = Field(default=5.0, gt=0, le=3600)
    backoff: float = Field(default=2.0, ge=1.0, le=10.0)
    maximum_interval_s: float = Field(default=120.0, gt=0, le=86400)

    @model_validator(mode="after")
    def _intervals_consistent(self) -> RetrySpec:
        _in_order(self, "retry", "initial_interval_s", "maximum_interval_s")
        return self


class PhaseSpec(_Input):
    """One step of the pipeline. The pipeline is a list of these: data, not code."""

    name: PhaseName
    instructions: str = Field(default="", max_length=8000)
    approval: bool = False
    timeout_s: float = Field(default=3600.0, gt=0, le=7 * 86400)
    heartbeat_s: float = Field(default=60.0, gt=0, le=3600)
    retry: RetrySpec = Field(default_factory=RetrySpec)


class ApprovalPolicy(_Input):
    """Where the workflow waits for a person, and what happens when nobody answers."""

    after: list[PhaseName] | None = Field(
        default=None,
        description="Phases followed by an approval wait. Default: design and verify.",
    )
    approvers: list[str] = Field(
        default_factory=list, description="Allowlist for the `decide` update; empty = anyone."
    )
    remind_after_s: float = Field(
        default=86400.0, gt=0, le=MAX_WAIT_S, description="Reminder after 1 day (at most 366)."
    )
    deadline_s: float = Field(
        default=3 * 86400.0, gt=0, le=MAX_WAIT_S, description="Expiry after 3 days (at most 366)."
    )
    on_expiry: Literal["fail", "wait"] = "fail"
    max_rejections: int = Field(default=3, ge=0, le=50, description="Rejections per gate.")

    @model_validator(mode="after")
    def _deadline_after_reminder(self) -> ApprovalPolicy:
        _in_order(self, "approval", "remind_after_s", "deadline_s")
        return self


class Budget(_Input):
    """Caps for agent executors (enforced by the executors that spend money)."""

    max_usd_per_phase: float | None = Field(default=None, gt=0, le=1_000_000)
    max_usd_total: float | None = Field(default=None, gt=0, le=1_000_000)
    max_turns_per_phase: int | None = Field(default=None, gt=0, le=100_000)


class Thresholds(_Input):
    """Gate thresholds; defaults are the backend specialist's targets."""

    coverage_min_pct: float = Field(default=80.0, ge=0, le=100)
    p95_ms_max: float = Field(default=200.0, gt=0)
    rps_min: float = Field(default=1000.0, gt=0)
    rss_mb_max: float = Field(default=512.0, gt=0)
    cpu_pct_max: float = Field(default=70.0, gt=0)


class ImplementationInput(_Input):
    """Input of ``ImplementationWorkflow``. Only title, description and repo are required."""

    title: Label
    description: Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_DESCRIPTION_CHARS),
    ]
    repo: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2048)]
    executor: Annotated[str, StringConstraints(min_length=1, max_length=40)] | None = Field(
        default=None, description="Executor name; default: the worker's IMPLFLOW_EXECUTOR."
    )
    phases: list[PhaseSpec] | None = Field(
        default=None, description="A whole custom pipeline; default: the eight phases."
    )
    skip: list[PhaseName] = Field(default_factory=list, description="Phase names to leave out.")
    approval: ApprovalPolicy = Field(default_factory=ApprovalPolicy)
    commands: dict[PhaseName, Argv] = Field(
        default_factory=dict,
        description="shell executor: argv per phase (no shell string is ever built).",
    )
    budget: Budget = Field(default_factory=Budget)
    thresholds: Thresholds = Field(default_factory=Thresholds)
    cassette: Annotated[str, StringConstraints(min_length=1, max_length=2048)] | None = Field(
        default=None, description="replay executor: directory of recorded patches on the worker."
    )
    record: bool = Field(
        default=False,
        description="Write every phase round's diff as a cassette under IMPLFLOW_RECORD_DIR.",
    )
    specialist: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")] | None = (
        Field(default=None, description="Agent specialist name; default backend-implementer.")
    )
    gates: Literal["auto", "on", "off"] = Field(
        default="auto", description="Quality gates after each phase; auto = on unless shell."
    )
    pull_request: bool = Field(
        default=False, description="Open a pull request at the end (IMPLFLOW_PR_COMMAND)."
    )
    max_repair_rounds: int = Field(
        default=3, ge=0, le=10, description="Repair rounds per phase before a person decides."
    )

    @field_validator("repo")
    @classmethod
    def _repo_has_no_control_chars(cls, value: str) -> str:
        if any(ord(c) < 32 for c in value):
            raise ValueError("must not contain control characters")
        return value

    @model_validator(mode="after")
    def _phase_names_are_known(self) -> ImplementationInput:
        names = [p.name for p in self.phases] if self.phases is not None else list(PHASES)
        if self.phases is not None:
            if not self.phases:
                raise ValueError("phases: must name at least one phase")
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"phases: duplicate phase name(s) {dupes}")
        known = set(names)
        for field, values in (
            ("skip", self.skip),
            ("approval.after", self.approval.after or []),
            ("commands", list(self.commands)),
        ):
            unknown = [v for v in values if v not in known]
            if unknown:
                raise ValueError(f"{field}: unknown phase name(s) {unknown}; known: {names}")
        if len(set(self.skip)) >= len(known):
            raise ValueError("skip: cannot skip every phase")
        skipped_gates = [p for p in self.approval.after or [] if p in self.skip]
        if skipped_gates:  # a person asked to approve a phase that will never run
            raise ValueError(
                f"approval.after: {skipped_gates} also in skip; an approval after a skipped "
                "phase would never be asked for"
            )
        return self


# --- messages sent to a running workflow ------------------------------------------------


class _Answer(_Input):
    """Who answers which phase's pending decision, and their comment."""

    phase: PhaseName
    approver: Label
    comment: Comment = ""


class ApproveSignal(_Answer):
    """Signal ``approve``."""


class AbortSignal(_Answer):
    """Signal ``abort``: end the task at the pending decision point."""


class RejectSignal(_Answer):
    """Signal ``reject``: re-run ``rewind_to`` (default: the gated phase) and all later phases."""

    feedback: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=8000)
    ]
    rewind_to: PhaseName | None = None


class DecideInput(_Answer):
    """Update ``decide``: validated before it enters history.

    ``approve`` passes an approval (on a budget stop: more budget, ``budget_usd`` the extra
    dollars; on the review's questions: ``comment`` holds the answers); ``waive`` accepts a
    failed quality gate, ``comment`` the reason (required); ``reject`` rewinds with
    ``feedback``; ``abort`` ends the task. A failed gate is never answered by ``approve``.
    (The waive reason is checked by the workflow's rules, not here, so histories of tasks that
    waived without one before that rule still replay.)
    """

    decision: Literal["approve", "reject", "waive", "abort"]
    feedback: str = Field(default="", max_length=8000)
    rewind_to: PhaseName | None = None
    budget_usd: float | None = Field(default=None, gt=0, le=10_000)

    @model_validator(mode="after")
    def _reject_needs_feedback(self) -> DecideInput:
        if self.decision == "reject" and not self.feedback.strip():
            raise ValueError("feedback: required when decision is 'reject'")
        return self


class PauseSignal(_Input):
    """Signals ``pause`` / ``resume`` (both optional-bodied)."""

    by: str = Field(default="", max_length=200)
    reason: str = Field(default="", max_length=2000)


class Decision(_Record):
    """A recorded approval decision."""

    phase: str
    decision: Literal["approve", "reject", "waive", "abort", "expired"]
    approver: str
    at: datetime
    kind: ApprovalKind = "approval"
    comment: str = ""
    feedback: str = ""
    rewind_to: str | None = None
    budget_usd: float | None = None
    commit: str | None = None
    via: Literal["signal", "update", "deadline"] = "signal"


# --- activity contracts ----------------------------------------------------------------


class AgentUsage(_Record):
    """What an agent run cost; recorded on the branch and added up in the workflow's ledger."""

    session_id: str | None = None
    cost_usd: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    turns: int = 0


class PrepareInput(_Input):
    workflow_id: str
    repo: str
    executor: str | None = None
    commands: dict[str, list[str]] = Field(default_factory=dict)
    """The task's shell commands: each program must be on the worker before review runs."""
    pull_request: bool = False
    """The task asks for a pull request at the end: the worker must have a command for it."""


class PrepareResult(_Record):
    executor: str
    repo_kind: Literal["path", "url"]
    base_commit: str | None = None
    branch: str | None = None
    """The task branch (``implflow/<key>``: see ``activities.workspace.branch_key``)."""
    earlier_run_branch: str | None = None
    """Where an earlier run's branch of this workflow id was moved (kept) before this run
    started a fresh one: ``implflow/<key>@<run>``."""


class PhaseInput(_Input):
    """What one phase activity needs: the task, the phase, and what came before."""

    workflow_id: str
    title: str
    description: str
    repo: str
    executor: str
    phase: PhaseSpec
    round: int = Field(ge=1)
    feedback: list[str] = Field(default_factory=list)
    previous: list[PhaseSummary] = Field(default_factory=list)
    command: list[str] | None = None
    budget: Budget = Field(default_factory=Budget)
    cassette: str | None = None
    record: bool = False
    specialist: str | None = None
    branch_tip: str | None = Field(default=None, max_length=64)
    """The task branch's newest commit as the workflow knows it (the last round's or gate's
    commit): a first attempt whose checkout is already there fetches nothing."""
    earlier_work: str = Field(default="", max_length=4000)
    """Set by the worker on a retry, never by the workflow: what was restored of the
    interrupted attempts (the agent's prompt includes it)."""


class PhaseSummary(_Record):
    name: str
    round: int
    summary: str


class PhaseResult(_Record):
    """What a phase activity reports back: short; full logs stay out of history."""

    phase: str
    round: int
    attempt: int
    outcome: Literal["done", "nothing-to-do"]
    summary: str = Field(default="", max_length=2000)
    commit: str | None = None
    branch: str | None = None
    reused: bool = False
    duration_s: float = 0.0
    artifacts: list[str] = Field(default_factory=list)
    cost_usd: float = 0.0
    tokens: int = 0
    turns: int = 0
    session_id: str | None = None
    failed_attempts: list[str] = Field(default_factory=list)
    """One line per failed attempt of the round, e.g. ``attempt 1: AgentApiError: ...``; their
    spend is included in ``cost_usd``, ``tokens`` and ``turns``."""


class AttemptFailure(_Record):
    """A failed attempt of a phase round, kept with the round: its error and what it spent."""

    attempt: int = 0
    error: str = ""
    """The error type and one line: ``AgentApiError: claude-code failed (API error 529)``."""
    usage: AgentUsage | None = None

    def line(self) -> str:
        """``attempt 1: AgentApiError: ...`` (for status)."""
        return f"attempt {self.attempt}: {self.error}"


class RoundRecord(_Record):
    """One phase round's outcome, stored on the task branch as ``<RUNS_DIR>/<phase>-r<round>.json``.

    The phase activity commits it with the round's work; a retry that finds the commit
    returns it (``phase_result``) instead of paying the agent twice. Every field has a
    default: records written by earlier versions, or a file that no longer parses, still
    read as "this round is done".
    """

    phase: str = ""
    round: int = 0
    attempt: int = 0
    """The attempt that did the work (the trailer ``Implflow-Attempt``)."""
    executor: str = ""
    outcome: Literal["done", "nothing-to-do"] = "done"
    summary: str = ""
    duration_s: float = 0.0
    artifacts: list[str] = Field(default_factory=list)
    """Files the executor wrote (logs, transcripts), relative to the checkout where possible."""
    usage: AgentUsage | None = None
    commit: str | None = Field(default=None, exclude=True)
    """The commit holding this record: known once pushed, so never stored in the file."""
    failed_attempts: list[AttemptFailure] = Field(default_factory=list)
    """The round's attempts that failed before ``attempt`` did the work (stored only when
    there were any); their spend stays in the ledger."""

    def phase_result(
        self, inp: PhaseInput, *, attempt: int, branch: str, reused: bool = True
    ) -> PhaseResult:
        """What the activity returns for the round (``reused``: found on the branch)."""
        usage = self.usage or AgentUsage()
        failed = [f.usage or AgentUsage() for f in self.failed_attempts]
        return PhaseResult(
            phase=inp.phase.name,
            round=inp.round,
            attempt=attempt,
            outcome=self.outcome,
            summary=self.summary[:2000],  # PhaseResult's bound
            commit=self.commit,
            branch=branch,
            reused=reused,
            duration_s=self.duration_s,
            artifacts=self.artifacts,
            cost_usd=sum(u.cost_usd or 0.0 for u in [usage, *failed]),
            tokens=sum(u.input_tokens + u.output_tokens for u in [usage, *failed]),
            turns=sum(u.turns for u in [usage, *failed]),
            session_id=usage.session_id,
            failed_attempts=[f.line() for f in self.failed_attempts],
        )


class PullRequestInput(_Input):
    workflow_id: str
    repo: str
    branch: str
    title: str
    description: str


class GateInput(_Input):
    """What the gate activity needs to check one phase round on the task branch."""

    workflow_id: str
    repo: str
    phase: str
    round: int = Field(ge=1)
    thresholds: Thresholds = Field(default_factory=Thresholds)
    base_commit: str | None = None
    baseline: dict[str, float] = Field(default_factory=dict)
    """Load figures the optimize gate compares against: ``GateResult.load_baseline()`` of the
    first gate that measured the service (medians, their spreads, the machine calibration)."""
    service_command: Argv | None = None
    """The service command the design gate found or the agent proposed, as the person approved
    it (``GateResult.service_command`` of the approved design gate): every later load probe
    starts the service with it, whatever the agent changes afterwards. ``None``: the
    repository's ``[service]`` or what the gate detects. Placeholders ``{python}``, ``{port}``."""
    service_health_path: str | None = Field(default=None, max_length=200)
    """Readiness path that goes with ``service_command`` (``GateResult.service_health_path``)."""
    branch_tip: str | None = Field(default=None, max_length=64)
    """The round's commit: a first attempt whose checkout is already there fetches nothing."""


FailureClass = Literal["agent", "environment", "noise"]
"""Why a check failed, which decides what happens next:

- ``agent``: the agent can fix it (a failing test, a lint, type or security finding, coverage
  below target, a real regression): a repair round with the failure as feedback;
- ``environment``: nobody's code is wrong (a dependency that does not install, a missing tool,
  no service command, a port or permission problem, a target this machine cannot reach): a
  person, at once, with ``GateResult.root_cause``;
- ``noise``: measurements that still could not tell a regression from noise after the gate
  re-measured them: a person (another agent round would change nothing)."""

FAILURE_CLASS_ORDER: tuple[FailureClass, ...] = ("environment", "agent", "noise")
"""Worst first: a gate's class is the worst of its failed checks'."""

LOAD_BASELINE_FIGURES: tuple[str, ...] = (
    "p95_ms",
    "p95_ms_spread",
    "requests_per_s",
    "requests_per_s_spread",
    "calibration_requests_per_s",
    "calibration_p95_ms",
)
"""The load figures a later gate compares against (``GateInput.baseline``)."""


GateFigure = int | float | str
"""A check's key figure: a count, a measurement or a short label (never a list or mapping)."""

MAX_CHECK_SUMMARY_CHARS = 300
"""A check's one-line summary (and its threshold text) is cut to this many characters."""

MAX_CHECK_DETAILS = 10
MAX_DETAIL_CHARS = 300
"""A check keeps at most this many detail lines (failed tests, findings), each this long."""

MAX_FAILURE_SUMMARY_CHARS = 2000
"""The feedback text of a repair round is cut to this many characters."""

MAX_QUESTIONS = 20
MAX_QUESTION_CHARS = 500

UNANSWERED_BLOCKING = "unanswered_blocking"
"""The figure a review check counts its unanswered ``[blocking]`` questions in; a failed
check with it above zero lists those questions in its ``details``."""


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class GateCheck(_Record):
    """One check of a gate: what was measured, the rule it was held to, and the outcome.

    The gate runner builds it and the workflow keeps it, so it bounds itself: text is cut,
    figures keep scalars only, details are capped. The full reports stay on the branch.
    """

    name: str
    passed: bool
    summary: str = ""
    """One line: what passed or what is wrong (and, for a missing tool, what to install)."""
    figures: dict[str, GateFigure] = Field(default_factory=dict)
    """Key figures, e.g. ``{"line_rate_pct": 71.4}`` or ``{"high": 1, "total": 3}``."""
    threshold: str = ""
    """The rule the figures were held to, e.g. ``line_rate_pct >= 80``."""
    skipped: bool = False
    """The check could not apply (e.g. no ``base_ref`` to diff against); counts as passed."""
    details: list[str] = Field(default_factory=list)
    """A few examples behind a failure: failed tests, top findings, contract errors."""
    report: str | None = None
    """The report (or log) file, relative to the checkout; ``None`` for checks without one."""
    failure_class: FailureClass | None = None
    """Why it failed (see ``FailureClass``); ``None`` when it passed. A failed check recorded
    before this field existed reads as ``agent``, as it was treated then."""

    @model_validator(mode="after")
    def _class_only_when_failed(self) -> GateCheck:
        if self.passed:
            self.failure_class = None
        elif self.failure_class is None:
            self.failure_class = "agent"
        return self

    @field_validator("summary", "threshold")
    @classmethod
    def _one_short_line(cls, value: str) -> str:
        return _clip(value, MAX_CHECK_SUMMARY_CHARS)

    @field_validator("figures", mode="before")
    @classmethod
    def _scalar_figures(cls, value: object) -> object:
        if isinstance(value, dict):
            return {k: v for k, v in value.items() if isinstance(v, int | float | str)}
        return value

    @field_validator("details")
    @classmethod
    def _few_details(cls, value: list[str]) -> list[str]:
        return [_clip(line, MAX_DETAIL_CHARS) for line in value[:MAX_CHECK_DETAILS]]


class GateResult(_Record):
    """A gate's verdict for one phase round, from the gate runner to the workflow as it is.

    Small: it travels in history; the full reports are on the branch under ``report_dir``.
    """

    phase: str
    round: int
    passed: bool
    checks: list[GateCheck] = Field(default_factory=list)
    failure_summary: str = ""
    """Feedback for a repair round: each failed check and its first examples."""
    report_dir: str | None = None
    """Where reports and logs were written, relative to the checkout."""
    commit: str | None = None
    """The gate's commit on the task branch (set by the activity once it is pushed)."""
    questions: list[str] = Field(default_factory=list)
    """Unanswered blocking questions of the review: only a person can answer them.
    When not given, they are read from the checks (see ``UNANSWERED_BLOCKING``), which is
    also how a verdict recorded on the branch before this field existed is read."""
    config_source: str = ""
    """``preset:python``, ``preset:node``, ``.implflow/gates.toml [over preset:…]`` or ``none``."""
    failure_class: FailureClass | None = None
    """The worst class of the failed checks (environment > agent > noise); ``None`` when the
    gate passed. The workflow gives repair rounds only for ``agent``."""
    root_cause: str = ""
    """One line: the first failure of the worst class, e.g. ``tests could not be collected:
    ModuleNotFoundError: No module named 'fastapi'``; empty when the gate passed."""
    service_command: list[str] | None = None
    """The design gate: the service command found or proposed (argv with ``{python}`` and
    ``{port}``), shown to the person approving the design; once approved, the workflow passes
    it to every later gate as ``GateInput.service_command``."""
    service_health_path: str | None = None
    """The readiness path that goes with ``service_command``."""

    @field_validator("failure_summary", "root_cause")
    @classmethod
    def _short_feedback(cls, value: str) -> str:
        return _clip(value, MAX_FAILURE_SUMMARY_CHARS)

    @model_validator(mode="after")
    def _class_from_checks(self) -> GateResult:
        failed = [check for check in self.checks if not check.passed]
        if self.passed:
            self.failure_class = None
            self.root_cause = ""
            return self
        if self.failure_class is None:
            classes = {check.failure_class or "agent" for check in failed}
            # A failed gate without failed checks (an old or hand-made record): as before, agent.
            self.failure_class = next((c for c in FAILURE_CLASS_ORDER if c in classes), "agent")
        if not self.root_cause:
            first = next((c for c in failed if c.failure_class == self.failure_class), None)
            if first is not None:
                self.root_cause = _clip(first.summary or first.name, MAX_CHECK_SUMMARY_CHARS)
        return self

    @field_validator("questions")
    @classmethod
    def _few_questions(cls, value: list[str]) -> list[str]:
        return _bounded_questions(value)

    @model_validator(mode="after")
    def _questions_from_checks(self) -> GateResult:
        if "questions" not in self.model_fields_set:
            found = [
                question
                for check in self.checks
                if not check.passed and _positive(check.figures.get(UNANSWERED_BLOCKING))
                for question in check.details
            ]
            self.questions = _bounded_questions(found)
        return self

    def figures(self) -> dict[str, dict[str, GateFigure]]:
        """``{check name: figures}``: e.g. the baseline an optimize gate compares against."""
        return {check.name: dict(check.figures) for check in self.checks}

    def load_baseline(self) -> dict[str, float]:
        """The first load check's baseline figures (``LOAD_BASELINE_FIGURES``), flat: what the
        workflow keeps from the first gate that measured the service and passes to later gates
        as ``GateInput.baseline``. Empty when no check measured load."""
        for check in self.checks:
            figures = {
                key: float(value)
                for key in LOAD_BASELINE_FIGURES
                if isinstance(value := check.figures.get(key), int | float)
            }
            if "p95_ms" in figures and "requests_per_s" in figures:
                return figures
        return {}

    def evidence(self) -> str:
        """One line per check: what was measured against what, and where the reports are.

        A failed gate starts with its class and root cause, so the person reading the pending
        approval sees the cause first; a design gate names the service command to approve.
        """
        lines: list[str] = []
        if not self.passed and self.root_cause and self.failure_class != "agent":
            # Nobody's code is to blame: the cause comes first, before the checks' lines.
            lines.append(f"root cause ({self.failure_class}): {self.root_cause}")
        if self.service_command:
            health = f" (ready at {self.service_health_path})" if self.service_health_path else ""
            lines.append(f"service command: {' '.join(self.service_command)}{health}")
        lines.extend(
            f"{'PASS' if c.passed else 'FAIL'} {c.name}: {c.summary}"
            + (f" (target {c.threshold})" if c.threshold else "")
            + (f" [{c.failure_class}]" if c.failure_class and c.failure_class != "agent" else "")
            for c in self.checks
        )
        if self.report_dir:
            lines.append(f"reports: {self.report_dir} @ {(self.commit or '')[:12]}")
        return "\n".join(lines)[:3000]


def _positive(figure: GateFigure | None) -> bool:
    return isinstance(figure, int | float) and figure > 0


def _bounded_questions(questions: list[str]) -> list[str]:
    return [_clip(q, MAX_QUESTION_CHARS) for q in questions[:MAX_QUESTIONS]]


class ReminderInput(_Input):
    workflow_id: str
    title: str
    phase: str
    waiting_since: datetime
    deadline: datetime
    on_expiry: str


# --- what the workflow reports ------------------------------------------------------


class PhaseStatus(_Record):
    name: str
    status: PhaseStatusValue = PhaseStatusValue.PENDING
    rounds: int = 0
    attempts: int = 0
    duration_s: float = 0.0
    outcome: str = ""
    commit: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    repairs: int = 0
    gate: GateResult | None = None
    cost_usd: float = 0.0
    tokens: int = 0
    artifacts: list[str] = Field(default_factory=list)
    """Files the phase reported writing (paths in the checkout), e.g. its review or design."""
    failed_attempts: list[str] = Field(default_factory=list)
    """The last round's failed attempts, one line each (``attempt 1: AgentApiError: ...``):
    while a retry runs, as its attempt reported them (``AttemptReport``)."""
    attempt: int = 0
    """The attempt of the last round: the one running, or the one that completed it."""


class AttemptReport(_Input):
    """Signal ``attempt_retried``: a retried attempt of a phase round has started, after
    these failed ones (sent by that attempt, so ``status`` shows them while it runs)."""

    phase: PhaseName
    round: int = Field(ge=1, le=10_000)
    attempt: int = Field(ge=2, le=1_000)
    failures: list[Annotated[str, StringConstraints(max_length=300)]] = Field(
        default_factory=list, max_length=20
    )


class Ledger(_Record):
    """What the task has spent so far (agent dollars, tokens, turns; phase wall time)."""

    cost_usd: float = 0.0
    tokens: int = 0
    turns: int = 0
    wall_s: float = 0.0


class PendingApproval(_Record):
    phase: str
    kind: ApprovalKind = "approval"
    evidence: str = ""
    since: datetime
    commit: str | None = None
    reminded: bool = False
    deadline: datetime | None = None


class TaskStatus(_Record):
    """Answer of the ``status`` query."""

    workflow_id: str
    title: str
    state: TaskState
    current_phase: str | None = None
    executor: str | None = None
    paused: bool = False
    phases: list[PhaseStatus] = Field(default_factory=list)
    pending_approval: PendingApproval | None = None
    decisions: list[Decision] = Field(default_factory=list)
    ignored_messages: list[str] = Field(default_factory=list)
    error: str | None = None
    ledger: Ledger = Field(default_factory=Ledger)
    branch: str | None = None
    repo: str | None = None
    documents: list[str] = Field(default_factory=list)
    """Paths on ``branch`` of the documents written so far (the review, the design)."""


class ImplementationResult(_Record):
    """Result of ``ImplementationWorkflow``."""

    workflow_id: str
    title: str
    state: TaskState
    phases: list[PhaseStatus]
    decisions: list[Decision]
    head_commit: str | None = None
    branch: str | None = None
    ledger: Ledger = Field(default_factory=Ledger)
    pull_request: str | None = None
    """What the pull-request command printed last (usually the PR's URL)."""


PhaseInput.model_rebuild()
