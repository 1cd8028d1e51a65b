"""Executors by name. Add one here to make it selectable with ``executor=``."""

from __future__ import annotations

from temporalio.exceptions import ApplicationError

from activities.executors.base import ExecutionContext, ExecutionOutcome, Executor
from activities.executors.claude_code import ClaudeCodeExecutor
from activities.executors.codex import CodexExecutor
from activities.executors.llm import LlmExecutor
from activities.executors.replay import ReplayExecutor
from activities.executors.shell import ShellExecutor
from implflow.errors import EXECUTOR_UNAVAILABLE

EXECUTORS: dict[str, type[Executor]] = {
    "shell": ShellExecutor,
    "claude-code": ClaudeCodeExecutor,
    "replay": ReplayExecutor,
    "llm": LlmExecutor,
    "codex": CodexExecutor,
}


def get_executor(name: str) -> Executor:
    """The executor called ``name``, or a non-retryable error saying what to do."""
    cls = EXECUTORS.get(name)
    if cls is None:
        raise ApplicationError(
            f"unknown executor {name!r}; available: {sorted(EXECUTORS)}. "
            "Pass executor='shell' in the input or set IMPLFLOW_EXECUTOR=shell on the worker.",
            type=EXECUTOR_UNAVAILABLE,
            non_retryable=True,
        )
    executor = cls()
    executor.check_available()
    return executor


__all__ = ["EXECUTORS", "ExecutionContext", "ExecutionOutcome", "Executor", "get_executor"]
