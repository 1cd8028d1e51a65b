"""Progress bookkeeping for ``ImplementationWorkflow``: deterministic, no I/O.

Keeps the per-phase status list and renders the markdown checklist shown as the
workflow's *current details* in the Temporal UI.
"""

from __future__ import annotations

from datetime import datetime

from implflow.models import (
    PendingApproval,
    PhaseResult,
    PhaseStatus,
    PhaseStatusValue,
    TaskState,
)

_MARK = {
    PhaseStatusValue.DONE: "[x]",
    PhaseStatusValue.RUNNING: "[ ]",
    PhaseStatusValue.FAILED: "[ ]",
    PhaseStatusValue.CANCELLED: "[ ]",
    PhaseStatusValue.PENDING: "[ ]",
    PhaseStatusValue.SKIPPED: "[-]",
}


class Progress:
    """Phase statuses in pipeline order."""

    def __init__(self, names: list[str], skipped: list[str]) -> None:
        self.phases = [PhaseStatus(name=n) for n in names] + [
            PhaseStatus(name=n, status=PhaseStatusValue.SKIPPED) for n in skipped
        ]

    def get(self, name: str) -> PhaseStatus:
        return next(p for p in self.phases if p.name == name)

    def started(self, name: str, now: datetime) -> int:
        """Mark a phase running; returns its round number."""
        p = self.get(name)
        p.status = PhaseStatusValue.RUNNING
        p.rounds += 1
        p.started_at = now
        p.finished_at = None
        return p.rounds

    def finished(self, result: PhaseResult, now: datetime) -> None:
        p = self.get(result.phase)
        p.status = PhaseStatusValue.DONE
        p.attempts += result.attempt
        p.duration_s = round(p.duration_s + result.duration_s, 3)
        p.outcome = result.summary
        p.commit = result.commit
        p.finished_at = now

    def ended(self, name: str, status: PhaseStatusValue, outcome: str, now: datetime) -> None:
        p = self.get(name)
        p.status = status
        p.outcome = outcome[:500]
        p.finished_at = now

    def rewound(self, names: list[str]) -> None:
        """Phases that will run again after a rejection go back to pending."""
        for n in names:
            self.get(n).status = PhaseStatusValue.PENDING

    def checklist(
        self, title: str, state: TaskState, pending: PendingApproval | None, paused: bool
    ) -> str:
        """Markdown for the Temporal UI's *current details*."""
        lines = [f"**{title}** — `{state.value}`" + (" (paused)" if paused else ""), ""]
        for p in self.phases:
            text = f"- {_MARK[p.status]} **{p.name}** — {p.status.value}"
            if p.rounds:
                text += f", round {p.rounds}"
            if p.attempts > p.rounds:
                text += f", {p.attempts} attempts"
            if p.duration_s:
                text += f", {p.duration_s:.1f}s"
            if pending and pending.phase == p.name:
                text += " — **awaiting approval**"
            lines.append(text)
        if pending:
            lines += [
                "",
                f"Waiting since {pending.since.isoformat(timespec='seconds')} for a decision on "
                f"**{pending.phase}**: `implflow approve <id> --phase {pending.phase}` or signal "
                f'`approve` with `{{"phase": "{pending.phase}", "approver": "<you>"}}`.',
            ]
        return "\n".join(lines)
