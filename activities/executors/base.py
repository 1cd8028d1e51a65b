"""The executor interface: what does a phase's work.

An executor gets a prepared working directory and the phase context, does the
work (run commands, drive a coding agent, ...), and returns a short outcome.
Everything long (logs, transcripts) goes to files; only the outcome enters
Temporal history. New executors (claude-code, codex, llm, replay) implement
``Executor`` and register in ``activities/executors/__init__.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from implflow.models import AgentUsage, PhaseInput


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


@dataclass
class ExecutionOutcome:
    outcome: Literal["done", "nothing-to-do"]
    summary: str
    artifacts: list[str] = field(default_factory=list)
    usage: AgentUsage | None = None
    """Agent executors report session, cost, tokens and turns here."""


class Executor(Protocol):
    """Does one phase's work. Raise ``ApplicationError`` with an ``implflow.errors`` type."""

    name: str

    def check_available(self) -> None:
        """Raise ``ApplicationError(type=EXECUTOR_UNAVAILABLE, non_retryable=True)`` if unusable."""

    async def execute(self, ctx: ExecutionContext) -> ExecutionOutcome:
        """Do the phase's work in ``ctx.workdir``."""
        ...
