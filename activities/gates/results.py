"""Building a check's result: judged against a rule, failed for a reason, or skipped.

Every judge returns a :class:`~implflow.models.GateCheck` through these helpers, so each
summary is one line and details go only with a failure. The model itself bounds lengths.
"""

from __future__ import annotations

from activities.gates.schema import CheckConfig
from implflow.models import FailureClass, GateCheck, GateFigure

__all__ = ["failed", "judged", "last_line", "one_line", "skipped"]


def judged(
    check: CheckConfig,
    passed: bool,
    summary: str,
    figures: dict[str, GateFigure],
    threshold: str,
    report: str | None,
    details: list[str] | None = None,
    failure_class: FailureClass = "agent",
) -> GateCheck:
    """The check's figures held to ``threshold``; ``details`` are kept only on failure.

    A figure that misses its rule is the agent's to fix unless the judge knows better
    (``failure_class``: e.g. a target this machine cannot reach is ``environment``).
    """
    return GateCheck(
        name=check.name,
        passed=passed,
        figures=figures,
        threshold=threshold,
        summary=one_line(summary),
        details=[one_line(d) for d in details or []] if not passed else [],
        report=report,
        failure_class=None if passed else failure_class,
    )


def failed(
    check: CheckConfig,
    summary: str,
    *,
    figures: dict[str, GateFigure] | None = None,
    report: str | None = None,
    log: str | None = None,
    failure_class: FailureClass = "agent",
) -> GateCheck:
    """The check could not be judged (missing tool, timeout, no report): what to do.

    ``failure_class`` says who can fix it: ``environment`` for what no agent can (a missing
    tool, an install that failed, no service command); ``agent`` otherwise (a tool that hangs
    on the agent's code, a report it never wrote), which the runner may still reclassify
    from the tool's log (``failures.classify``).
    """
    return GateCheck(
        name=check.name,
        passed=False,
        figures=figures or {},
        summary=one_line(summary),
        details=[f"log: {log}"] if log else [],
        report=report,
        failure_class=failure_class,
    )


def skipped(check: CheckConfig, threshold: str, summary: str) -> GateCheck:
    """The check does not apply here (e.g. nothing to diff against); it counts as passed."""
    return GateCheck(
        name=check.name, passed=True, skipped=True, threshold=threshold, summary=summary
    )


def one_line(text: str) -> str:
    """Whitespace collapsed, so a summary or detail stays on one line."""
    return " ".join(text.split())


def last_line(text: str) -> str:
    """The last non-blank line of a tool's output (``(no output)`` when there is none)."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"
