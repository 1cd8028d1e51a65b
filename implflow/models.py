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

Argv = Annotated[list[Annotated[str, StringConstraints(max_length=4096)]], Field(min_length=1)]


class _Input(BaseModel):
    """Base for everything a user or another program sends in."""

    model_config = ConfigDict(extra="forbid", frozen=False)


class _Record(BaseModel):
    """Base for what implflow reports back; tolerant of fields added later."""

    model_config = ConfigDict(extra="ignore")


class TaskState(StrEnum):
    """Values of the ``ImplState`` search attribute."""

    RUNNING = "running"
    REPAIRING = "repairing"
    AWAITING_APPROVAL = "awaiting_approval"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class PhaseStatusValue(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


class RetrySpec(_Input):
    """A bounded retry policy for one phase activity."""

    name: str = "phase-default"
    maximum_attempts: int = Field(default=3, ge=1, le=20)
    initial_interval_s: float = Field(default=5.0, gt=0, le=3600)
    backoff: float = Field(default=2.0, ge=1.0, le=10.0)
    maximum_interval_s: float = Field(default=120.0, gt=0, le=86400)


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
    remind_after_s: float = Field(default=86400.0, gt=0, description="Reminder after 1 day.")
    deadline_s: float = Field(default=3 * 86400.0, gt=0, description="Expiry after 3 days.")
    on_expiry: Literal["fail", "wait"] = "fail"
    max_rejections: int = Field(default=3, ge=0, le=50, description="Rejections per gate.")

    @model_validator(mode="after")
    def _deadline_after_reminder(self) -> ApprovalPolicy:
        if self.deadline_s < self.remind_after_s:
            raise ValueError("approval.deadline_s must be >= approval.remind_after_s")
        return self


class Budget(_Input):
    """Caps for agent executors (enforced by the executors that spend money)."""

    max_usd_per_phase: float | None = Field(default=None, gt=0)
    max_usd_total: float | None = Field(default=None, gt=0)
    max_turns_per_phase: int | None = Field(default=None, gt=0)


class Thresholds(_Input):
    """Gate thresholds; defaults are the backend specialist's targets."""

    coverage_min_pct: float = Field(default=80.0, ge=0, le=100)
    p95_ms_max: float = Field(default=200.0, gt=0)
    rps_min: float = Field(default=1000.0, gt=0)
    rss_mb_max: float = Field(default=512.0, gt=0)
    cpu_pct_max: float = Field(default=70.0, gt=0)


class ImplementationInput(_Input):
    """Input of ``ImplementationWorkflow``. Only title, description and repo are required."""

    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
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
        return self


# --- messages sent to a running workflow ------------------------------------------------


class ApproveSignal(_Input):
    """Signal ``approve``."""

    phase: PhaseName
    approver: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    comment: str = Field(default="", max_length=4000)


class RejectSignal(_Input):
    """Signal ``reject``: re-run ``rewind_to`` (default: the gated phase) and all later phases."""

    phase: PhaseName
    approver: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    feedback: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=8000)
    ]
    rewind_to: PhaseName | None = None


class DecideInput(_Input):
    """Update ``decide``: validated before it enters history.

    ``approve`` passes the gate (on a failed quality gate: a waiver, ``comment`` is the
    reason; on a budget stop: more budget, ``budget_usd`` the new per-phase cap);
    ``reject`` rewinds with ``feedback``; ``abort`` ends the task.
    """

    phase: PhaseName
    decision: Literal["approve", "reject", "waive", "abort"]
    approver: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    comment: str = Field(default="", max_length=4000)
    feedback: str = Field(default="", max_length=8000)
    rewind_to: PhaseName | None = None
    budget_usd: float | None = Field(default=None, gt=0, le=10_000)

    @model_validator(mode="after")
    def _reject_needs_feedback(self) -> DecideInput:
        if self.decision == "reject" and not self.feedback.strip():
            raise ValueError("feedback: required when decision is 'reject'")
        return self


class AbortSignal(_Input):
    """Signal ``abort``: end the task at the pending decision point."""

    phase: PhaseName
    approver: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    comment: str = Field(default="", max_length=4000)


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


class PrepareResult(_Record):
    executor: str
    repo_kind: Literal["path", "url"]
    base_commit: str | None = None


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


class GateCheck(_Record):
    name: str
    passed: bool
    summary: str = ""
    figures: dict[str, float | str] = Field(default_factory=dict)
    threshold: str = ""


class GateResult(_Record):
    """A gate's verdict: small; the full reports are on the branch under ``report_dir``."""

    phase: str
    round: int
    passed: bool
    checks: list[GateCheck] = Field(default_factory=list)
    failure_summary: str = Field(default="", max_length=4000)
    report_dir: str | None = None
    commit: str | None = None
    questions: list[str] = Field(default_factory=list)
    """Unanswered blocking questions of the review: only a person can answer them."""

    def evidence(self) -> str:
        """One line per check: what was measured against what, and where the reports are."""
        lines = [
            f"{'PASS' if c.passed else 'FAIL'} {c.name}: {c.summary}"
            + (f" (target {c.threshold})" if c.threshold else "")
            for c in self.checks
        ]
        if self.report_dir:
            lines.append(f"reports: {self.report_dir} @ {(self.commit or '')[:12]}")
        return "\n".join(lines)[:3000]


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
