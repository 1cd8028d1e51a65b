"""Error types raised by the coding-agent executors (claude-code, codex, llm).

Shared constants, like ``implflow.errors``: Temporal matches non-retryable
errors by these strings, and the workflow routes them (a person decides on a
budget; a stall or an API hiccup is retried by the phase's retry policy).
"""

from __future__ import annotations

from implflow.errors import BUDGET_EXCEEDED  # the workflow routes it: a person decides

__all__ = ["BUDGET_EXCEEDED"]

AGENT_PERMISSION_DENIED = "AgentPermissionDenied"
"""The agent was refused tool calls (permission mode / allowed tools). Never retried:
the same settings would refuse them again; fix the configuration."""

AGENT_STALLED = "AgentStalled"
"""No event from the agent for the configured stall time; its process group was killed."""

AGENT_API_ERROR = "AgentApiError"
"""The model API failed (HTTP 5xx, overload, network) after the agent's own retries."""

AGENT_FAILED = "AgentFailed"
"""The agent ended without a usable result (crash, error during execution)."""

NON_RETRYABLE_AGENT_ERRORS: tuple[str, ...] = (BUDGET_EXCEEDED, AGENT_PERMISSION_DENIED)
"""Agent error types a phase never retries (besides ``EXECUTOR_UNAVAILABLE``)."""
