"""What a gate returns: one small verdict per phase round, made of one result per check.

Pure pydantic (no I/O), so the workflow may import these models through
``imports_passed_through()``. The full reports and tool logs stay on the branch under
``report_dir``; the verdict carries only figures and one-line summaries.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

MAX_FAILURE_SUMMARY_CHARS = 2000
"""The feedback text of a repair round is cut to this many characters."""

MAX_SUMMARY_CHARS = 300
"""A check's one-line summary is cut to this many characters."""

Figure = int | float | str


class CheckResult(BaseModel):
    """One check of a gate: what was measured, against which threshold, and the outcome."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    passed: bool
    skipped: bool = False
    """The check could not apply (e.g. no ``base_ref`` to diff against); counts as passed."""
    figures: dict[str, Figure] = Field(default_factory=dict)
    """Key figures, e.g. ``{"line_rate_pct": 71.4}`` or ``{"high": 1, "total": 3}``."""
    threshold: str = ""
    """The rule the figures were held to, e.g. ``line_rate_pct >= 80``."""
    summary: str = Field(default="", max_length=MAX_SUMMARY_CHARS)
    """One line: what passed or what is wrong (and, for a missing tool, what to install)."""
    details: list[str] = Field(default_factory=list, max_length=10)
    """A few examples behind a failure: failed tests, top findings, contract errors."""
    report: str | None = None
    """The report file, relative to the work directory (``None`` for checks without one)."""


class GateVerdict(BaseModel):
    """The outcome of one phase's gate in one round. Small: it travels in workflow history."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    phase: str
    round: int = Field(ge=0)
    passed: bool
    checks: list[CheckResult] = Field(default_factory=list)
    failure_summary: str = Field(default="", max_length=MAX_FAILURE_SUMMARY_CHARS)
    """Feedback for a repair round: each failed check and its first examples."""
    report_dir: str
    """Where reports and logs were written, relative to the work directory."""
    config_source: str = "preset"
    """``preset:python``, ``preset:node``, ``.implflow/gates.toml`` or ``none``."""

    def figures(self) -> dict[str, dict[str, Figure]]:
        """``{check name: figures}``: e.g. the baseline an optimize gate compares against."""
        return {check.name: dict(check.figures) for check in self.checks}
