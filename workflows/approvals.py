"""Approvals: who may decide what, when, and the bookkeeping of one task's decisions.

``decision_problem`` is the single rule set: the ``decide`` update's validator and the
approve/reject/abort signal handlers both apply it, so a signal is ignored for exactly the
reasons an update is refused. ``Approvals`` owns the state around it: the pending approval,
the answer given to it, every decision recorded, and the messages that were ignored.
Deterministic, no I/O; the workflow does the waiting.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from temporalio import workflow
from temporalio.exceptions import ApplicationError

from activities.phases import ImplActivities
from implflow import errors
from implflow.models import (
    ApprovalKind,
    ApprovalPolicy,
    DecideInput,
    Decision,
    PendingApproval,
    ReminderInput,
)
from workflows import options
from workflows.messages import parse_payload

MAX_IGNORED = 50
"""Ignored messages kept in state (newest last); older ones are only in the worker log."""


def decision_problem(
    msg: DecideInput,
    pending: PendingApproval | None,
    answer: Decision | None,
    approvers: list[str],
    phase_names: list[str],
    strict_gate_answers: bool = True,
) -> str | None:
    """Why ``msg`` cannot be taken now, or None when it can.

    ``strict_gate_answers`` (workflows started since patch ``gate-answers-v1``): a failed gate
    is answered only by waive with a reason, reject or abort, never by a plain approve.
    """
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
    if strict_gate_answers and pending.kind == "gate" and msg.decision == "approve":
        return "a failed gate is answered by waive (with a reason), reject or abort"
    if strict_gate_answers and msg.decision == "waive" and not msg.comment.strip():
        return "waive needs a reason in comment"
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


class Approvals:
    """The pending approval, its answer, the decisions so far and the ignored messages."""

    def __init__(self, approvers: list[str], phase_names: list[str]) -> None:
        self.approvers = approvers
        self.phase_names = phase_names
        self.pending: PendingApproval | None = None
        self.answer: Decision | None = None
        self.decisions: list[Decision] = []
        self.ignored: list[str] = []
        self.strict_gate_answers = False
        """Set by the workflow from its patch; see ``decision_problem``."""
        self.rejections: dict[str, int] = {}

    def open(
        self,
        phase: str,
        kind: ApprovalKind,
        evidence: str,
        since: datetime,
        commit: str | None,
        deadline_s: float,
    ) -> PendingApproval:
        """Start waiting for a decision on ``phase``."""
        self.pending = PendingApproval(
            phase=phase,
            kind=kind,
            evidence=evidence,
            since=since,
            commit=commit,
            deadline=since + timedelta(seconds=deadline_s),
        )
        return self.pending

    async def wait(
        self, policy: ApprovalPolicy, title: str, on_change: Callable[[], None]
    ) -> Decision:
        """The answer to the pending approval: after ``remind_after_s`` people are reminded
        (``send_reminder``: a log line, the webhook); at ``deadline_s`` the policy fails the
        task (``APPROVAL_EXPIRED``) or keeps waiting."""
        pending = self.pending
        if pending is None:
            raise ApplicationError("no approval is pending", non_retryable=True)
        answered = await self._wait_answer(policy.remind_after_s)
        if not answered:
            await workflow.execute_activity_method(
                ImplActivities.send_reminder,
                ReminderInput(
                    workflow_id=workflow.info().workflow_id,
                    title=title,
                    phase=pending.phase,
                    waiting_since=pending.since,
                    deadline=pending.deadline or pending.since,
                    on_expiry=policy.on_expiry,
                ),
                **options.REMINDER,
                summary=f"reminder: {pending.phase} approval overdue",
            )
            pending.reminded = True
            on_change()
            answered = await self._wait_answer(policy.deadline_s - policy.remind_after_s)
        if not answered and policy.on_expiry == "fail":
            self.expire(pending.phase, pending.commit, workflow.now())
            raise ApplicationError(
                f"approval of {pending.phase} expired after {policy.deadline_s:.0f}s "
                "without a decision",
                type=errors.APPROVAL_EXPIRED,
                non_retryable=True,
            )
        if not answered:
            await workflow.wait_condition(lambda: self.answered)
        answer = self.close()
        if answer is None:  # unreachable: every path above waited for an answer
            raise ApplicationError("approval wait ended without a decision", non_retryable=True)
        return answer

    async def _wait_answer(self, seconds: float) -> bool:
        if seconds <= 0:
            return self.answered
        try:
            await workflow.wait_condition(lambda: self.answered, timeout=timedelta(seconds=seconds))
        except TimeoutError:
            return False
        return True

    @property
    def answered(self) -> bool:
        return self.answer is not None

    def problem(self, msg: DecideInput) -> str | None:
        """Why a decision cannot be taken now, or None when it can."""
        return decision_problem(
            msg,
            self.pending,
            self.answer,
            self.approvers,
            self.phase_names,
            self.strict_gate_answers,
        )

    def offer(self, msg: DecideInput, now: datetime) -> None:
        """A decision sent by signal: taken when it fits, else recorded as ignored."""
        problem = self.problem(msg)
        if problem:
            self.ignore(f"{msg.decision} from {msg.approver}", problem)
            return
        self.take_answer(msg, "signal", now)

    def offer_signal(
        self,
        decision: Literal["approve", "reject", "abort"],
        model: type[BaseModel],
        args: tuple[Any, ...],
        now: datetime,
    ) -> None:
        """The approve/reject/abort signals: decode defensively, then ``offer``."""
        msg, problem = parse_payload(model, args)
        if msg is None:
            self.ignore(f"{decision} signal", problem or "malformed")
            return
        try:
            decide = DecideInput(decision=decision, **msg.model_dump())
        except ValidationError as err:  # unreachable for the signal models; kept defensive
            self.ignore(f"{decision} signal", str(err).splitlines()[0])
            return
        self.offer(decide, now)

    def take_answer(
        self, msg: DecideInput, via: Literal["signal", "update"], now: datetime
    ) -> Decision:
        """Record an answer already known to fit (the update's validator checked it)."""
        pending = self.pending
        self.answer = Decision(
            phase=msg.phase,
            decision=msg.decision,
            approver=msg.approver,
            at=now,
            comment=msg.comment,
            feedback=msg.feedback,
            rewind_to=msg.rewind_to,
            budget_usd=msg.budget_usd,
            kind=pending.kind if pending else "approval",
            commit=pending.commit if pending else None,
            via=via,
        )
        self.record(self.answer)
        return self.answer

    def expire(self, phase: str, commit: str | None, now: datetime) -> None:
        """Nobody decided before the deadline: record that as a decision of its own."""
        self.record(
            Decision(
                phase=phase,
                decision="expired",
                approver="deadline",
                at=now,
                commit=commit,
                via="deadline",
            )
        )

    def close(self) -> Decision | None:
        """The answer to the pending approval; nothing is pending afterwards."""
        answer, self.answer, self.pending = self.answer, None, None
        return answer

    def record(self, decision: Decision) -> None:
        self.decisions.append(decision)
        workflow.logger.info(
            "decision recorded",
            extra={
                "phase": decision.phase,
                "decision": decision.decision,
                "approver": decision.approver,
            },
        )

    def count_rejection(self, phase: str, limit: int) -> None:
        """One more rejection of ``phase``; more than ``limit`` (``approval.max_rejections``)
        fails the task."""
        self.rejections[phase] = self.rejections.get(phase, 0) + 1
        if self.rejections[phase] > limit:
            raise ApplicationError(
                f"{phase} was rejected {self.rejections[phase]} times "
                f"(approval.max_rejections={limit})",
                type=errors.REJECTION_LIMIT,
                non_retryable=True,
            )

    def ignore(self, what: str, why: str) -> None:
        """A message that does not fit is dropped, with the reason kept for ``status``."""
        self.ignored = [*self.ignored[-(MAX_IGNORED - 1) :], f"{what}: {why}"]
        workflow.logger.warning("ignored %s: %s", what, why)
