"""The executor interface: what does a phase's work.

An executor gets a prepared working directory and the phase context, does the
work (run commands, drive a coding agent, ...), and returns a short outcome.
Everything long (logs, transcripts) goes to files; only the outcome enters
Temporal history. New executors implement ``Executor``, have a
``from_settings(settings)`` constructor, and register in ``activities/executors/__init__.py``.

A worker builds each executor once and shares it between concurrent activities: everything
that belongs to one task or one attempt travels in ``ExecutionContext``, never on ``self``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, Self

from implflow.models import AgentUsage, PhaseInput
from implflow.settings import Settings


@dataclass(frozen=True)
class EarlierWork:
    """What a retry knows of the attempts before it (see ``activities/checkpoints.py``)."""

    resumable: bool = True
    """The interrupted attempt's files are all in the checkout (its final checkpoint was
    restored): its agent session may be resumed. False: start a fresh session."""
    session_costs: Mapping[str, float] = field(default_factory=dict)
    """Dollars already on the ledger, by agent session (a resumed session's totals include
    them)."""


@dataclass(frozen=True)
class ExecutionContext:
    """What an executor is handed for one phase attempt."""

    phase_input: PhaseInput
    attempt: int
    workdir: Path
    """The checkout the executor works in (its only writable tree)."""
    context_file: Path
    """JSON of ``phase_input`` (task, phase, round, feedback, earlier phases)."""
    log_dir: Path
    env_allowlist: tuple[str, ...]
    heartbeat: Callable[[dict[str, object]], None]
    earlier: EarlierWork = field(default_factory=EarlierWork)
    """On a retry: whether the earlier session may be resumed, and what it already cost."""
    task_env: Mapping[str, str] = field(default_factory=dict)
    """The task's own environment on ``PATH`` (``activities.environments.env_vars_for``): the
    agent's commands run the target's packages from the same environment as the gates."""


@dataclass
class ExecutionOutcome:
    """What an executor reports for one attempt (the activity stores it on the branch)."""

    outcome: Literal["done", "nothing-to-do"]
    summary: str
    artifacts: list[str] = field(default_factory=list)
    usage: AgentUsage | None = None
    """Agent executors report session, cost, tokens and turns here."""


class Executor(Protocol):
    """Does one phase's work. Raise ``ApplicationError`` with an ``implflow.errors`` type.

    Built once per worker (from the worker's settings) and shared by concurrent activities,
    so ``execute`` must not keep task state on the instance.
    """

    name: str

    def check_available(self) -> None:
        """Raise ``ApplicationError(type=EXECUTOR_UNAVAILABLE, non_retryable=True)`` if unusable."""

    async def execute(self, ctx: ExecutionContext) -> ExecutionOutcome:
        """Do the phase's work in ``ctx.workdir``."""
        ...


class WithoutSettings:
    """Base of executors with no settings of their own (the phase input says what to do)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        """The executor; the worker's settings only reach it through ``ExecutionContext``."""
        return cls()
