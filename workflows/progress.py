"""Progress bookkeeping for ``ImplementationWorkflow``: deterministic, no I/O.

Keeps the per-phase status list and renders the markdown checklist shown as the
workflow's *current details* in the Temporal UI.
"""

from __future__ import annotations

import shlex
from datetime import datetime

from implflow.layout import ARTIFACT_FILES
from implflow.models import (
    AttemptReport,
    GateResult,
    Ledger,
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
        self.ledger = Ledger()

    def get(self, name: str) -> PhaseStatus:
        return next(p for p in self.phases if p.name == name)

    def started(self, name: str, now: datetime) -> int:
        """Mark a phase running; returns its round number."""
        p = self.get(name)
        p.status = PhaseStatusValue.RUNNING
        p.rounds += 1
        p.attempt, p.failed_attempts = 1, []
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
        p.artifacts = sorted({*p.artifacts, *result.artifacts})[:20]
        p.failed_attempts = result.failed_attempts[-5:]
        p.attempt = result.attempt
        p.finished_at = now
        p.cost_usd = round(p.cost_usd + result.cost_usd, 6)
        p.tokens += result.tokens
        self.ledger.cost_usd = round(self.ledger.cost_usd + result.cost_usd, 6)
        self.ledger.tokens += result.tokens
        self.ledger.turns += result.turns
        self.ledger.wall_s = round(self.ledger.wall_s + result.duration_s, 3)

    def retrying(self, report: AttemptReport) -> bool:
        """A retried attempt of the running round started: show it and what failed before."""
        p = self.get(report.phase)
        if p.status != PhaseStatusValue.RUNNING or p.rounds != report.round:
            return False  # late: that round is over, its own record says what happened
        p.attempt = max(p.attempt, report.attempt)
        p.failed_attempts = report.failures[-5:]
        return True

    def gated(self, gate: GateResult) -> None:
        """Record a gate verdict; a failed gate marks the phase failed until it is repaired."""
        p = self.get(gate.phase)
        p.gate = gate
        if not gate.passed:
            p.status = PhaseStatusValue.FAILED

    def ended(self, name: str, status: PhaseStatusValue, outcome: str, now: datetime) -> None:
        """The phase stopped without a result (failed, cancelled): its round's attempts count."""
        p = self.get(name)
        if p.status == PhaseStatusValue.RUNNING:  # the round in flight: every attempt it made
            p.attempts += p.attempt
        p.status = status
        p.outcome = outcome[:500]
        p.finished_at = now

    def documents(self) -> list[str]:
        """The documents on the branch so far: the review and design docs a phase wrote."""
        written = {a for p in self.phases for a in p.artifacts}
        return [doc for doc in ARTIFACT_FILES if doc in written]

    def rewound(self, names: list[str]) -> None:
        """Phases that will run again after a rejection go back to pending."""
        for n in names:
            self.get(n).status = PhaseStatusValue.PENDING

    def checklist(
        self,
        title: str,
        state: TaskState,
        pending: PendingApproval | None,
        paused: bool,
        workflow_id: str = "<id>",
        where: tuple[str, str | None] | None = None,
    ) -> str:
        """Markdown for the Temporal UI's *current details*."""
        lines = [f"**{title}** — `{state.value}`" + (" (paused)" if paused else ""), ""]
        if where:
            repo, branch = where
            docs = ", ".join(f"`{d}`" for d in self.documents())
            lines += [
                f"Repo `{repo}`"
                + (f" · branch `{branch}`" if branch else "")
                + (f" · read {docs} on it" if docs else ""),
                "",
            ]
        for p in self.phases:
            text = f"- {_MARK[p.status]} **{p.name}** — {p.status.value}"
            if p.rounds:
                text += f", round {p.rounds}"
            if p.status == PhaseStatusValue.RUNNING and p.attempt > 1:
                text += f", attempt {p.attempt}"
            elif p.attempts > p.rounds:
                text += f", {p.attempts} attempts"
            if p.duration_s:
                text += f", {p.duration_s:.1f}s"
            if p.repairs:
                text += f", {p.repairs} repair round{'s' if p.repairs > 1 else ''}"
            if p.gate is not None:
                failed = [c.name for c in p.gate.checks if not c.passed]
                text += " — gate " + ("passed" if p.gate.passed else f"failed: {', '.join(failed)}")
            if pending and pending.phase == p.name:
                text += " — **awaiting approval**"
            lines.append(text)
            lines.extend(f"  - retried: {line[:200]}" for line in p.failed_attempts)
        if self.ledger.cost_usd or self.ledger.tokens:
            lines += ["", f"Spent: ${self.ledger.cost_usd:.2f}, {self.ledger.tokens} tokens"]
        if pending:
            lines += ["", _waiting_line(pending, workflow_id)]
            if pending.evidence:
                lines += ["", "```", pending.evidence, "```"]
        return "\n".join(lines)


def _waiting_line(pending: PendingApproval, workflow_id: str) -> str:
    """What the task waits for and the exact commands that answer it."""
    phase, wid = shlex.quote(pending.phase), shlex.quote(workflow_id)  # pasted into a shell
    what = {
        "approval": "approval",
        "gate": "a failed gate",
        "budget": "a budget stop",
        "question": "answers to the review's blocking questions",
    }[pending.kind]
    how = {
        "approval": f"`implflow approve {wid} --phase {phase}` or "
        f'`implflow reject {wid} --phase {phase} --feedback "..."`',
        "gate": f'`implflow waive {wid} --phase {phase} --reason "..."` (the reason is '
        f'recorded), `implflow reject {wid} --phase {phase} --feedback "..."` or '
        f"`implflow abort {wid} --phase {phase}` (or the `decide` update with decision waive, "
        "reject or abort; approve does not answer a failed gate)",
        "budget": f"`implflow approve {wid} --phase {phase} --budget-usd N` or "
        f"`implflow abort {wid} --phase {phase}`",
        "question": f"`implflow approve {wid} --phase {phase} --comment '<answers>'` or "
        f'`implflow reject {wid} --phase {phase} --feedback "..."`',
    }[pending.kind]
    return (
        f"Waiting since {pending.since.isoformat(timespec='seconds')} for a decision on "
        f"**{phase}** — {what}: {how}."
    )
