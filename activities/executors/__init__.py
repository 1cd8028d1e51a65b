"""Executors by name, each built from the worker's settings.

To add an executor: a class with ``from_settings(settings)`` (see ``base.py``), registered in
``EXECUTORS`` below; it is then selectable with ``executor=`` in a task's input.
"""

from __future__ import annotations

from collections.abc import Callable

from temporalio.exceptions import ApplicationError

from activities.executors.base import ExecutionContext, ExecutionOutcome, Executor
from activities.executors.claude_code import ClaudeCodeExecutor
from activities.executors.codex import CodexExecutor
from activities.executors.llm import LlmExecutor
from activities.executors.replay import ReplayExecutor
from activities.executors.shell import ShellExecutor
from implflow.errors import EXECUTOR_UNAVAILABLE
from implflow.settings import Settings

ExecutorFactory = Callable[[Settings], Executor]
"""Builds an executor from the worker's settings; a bad setting is ``EXECUTOR_UNAVAILABLE``."""

EXECUTORS: dict[str, ExecutorFactory] = {
    "shell": ShellExecutor.from_settings,
    "claude-code": ClaudeCodeExecutor.from_settings,
    "replay": ReplayExecutor.from_settings,
    "llm": LlmExecutor.from_settings,
    "codex": CodexExecutor.from_settings,
}


def build_executor(name: str, settings: Settings) -> Executor:
    """A new executor called ``name``, or a non-retryable error saying what to do."""
    factory = EXECUTORS.get(name)
    if factory is None:
        raise ApplicationError(
            f"unknown executor {name!r}; available: {sorted(EXECUTORS)}. "
            "Pass executor='shell' in the input or set IMPLFLOW_EXECUTOR=shell on the worker.",
            type=EXECUTOR_UNAVAILABLE,
            non_retryable=True,
        )
    return factory(settings)


def get_executor(name: str, settings: Settings) -> Executor:
    """A new executor called ``name``, checked to be usable on this worker."""
    executor = build_executor(name, settings)
    executor.check_available()  # raises a non-retryable error naming what to install or set
    return executor


class ExecutorRegistry:
    """One worker's executors: each built on first use from the worker's settings, then kept.

    Built lazily, so a bad ``IMPLFLOW_CLAUDE_*`` value fails only the tasks that ask for
    ``claude-code`` (non-retryable, naming the variable) and not the whole worker. Executors
    keep no per-task state, so concurrent activities share one. Availability is checked on
    every use: a CLI can be removed from a running worker.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._built: dict[str, Executor] = {}

    def get(self, name: str) -> Executor:
        """The executor called ``name``, checked to be usable on this worker now."""
        executor = self._built.get(name)
        if executor is None:
            executor = self._built[name] = build_executor(name, self._settings)
        executor.check_available()
        return executor


__all__ = [
    "EXECUTORS",
    "ExecutionContext",
    "ExecutionOutcome",
    "Executor",
    "ExecutorFactory",
    "ExecutorRegistry",
    "build_executor",
    "get_executor",
]
