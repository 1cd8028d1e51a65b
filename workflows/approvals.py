"""Who may decide what, when: the rules shared by the approval signals and ``decide``.

Pure functions of the workflow's state, so the update validator and the signal
handlers apply exactly the same rules.
"""

from __future__ import annotations

from implflow.models import DecideInput, Decision, PendingApproval


def decision_problem(
    msg: DecideInput,
    pending: PendingApproval | None,
    answer: Decision | None,
    approvers: list[str],
    phase_names: list[str],
) -> str | None:
    """Why ``msg`` cannot be taken now, or None when it can."""
    if pending is None:
        return f"no approval is pending (phase {msg.phase!r} is not waiting)"
    if msg.phase != pending.phase:
        return f"phase {msg.phase!r} is not waiting for approval; {pending.phase!r} is"
    if answer is not None:
        return f"the {pending.phase} gate was already decided by {answer.approver}"
    if approvers and msg.approver not in approvers:
        return f"approver {msg.approver!r} is not on the approvers allowlist"
    if msg.decision == "waive" and pending.kind != "gate":
        return f"only a failed quality gate can be waived; {pending.phase} awaits {pending.kind}"
    if pending.kind == "question" and msg.decision in ("approve", "waive") and not msg.comment:
        return "answer the open questions in comment (they go to the next phases as feedback)"
    if msg.budget_usd is not None and pending.kind != "budget":
        return "budget_usd only answers a budget stop"
    names = phase_names
    if msg.rewind_to is not None and (
        msg.rewind_to not in names or names.index(msg.rewind_to) > names.index(msg.phase)
    ):
        return f"rewind_to {msg.rewind_to!r} must be {msg.phase!r} or an earlier phase"
    return None
