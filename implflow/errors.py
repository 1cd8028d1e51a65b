"""Error types shared by workflows, activities, the client and the CLI.

Temporal matches non-retryable errors by their type string, so the strings are
constants here and nowhere else. The values are part of implflow's public shape: they are in
saved histories and in users' scripts (``temporal workflow list --query``, retry policies), so
a constant may be renamed but its string never changes.
"""

from __future__ import annotations

INVALID_INPUT = "InvalidInput"
"""The workflow input (or a message to it) failed validation. Never retried."""

EXECUTOR_UNAVAILABLE = "ExecutorUnavailable"
"""The chosen executor cannot run on this worker (binary missing, unknown name)."""

REPO_UNAVAILABLE = "RepoUnavailable"
"""The repository path does not exist or is not a directory."""

PHASE_COMMAND_FAILED = "PhaseCommandFailed"
"""An executor's command exited non-zero (retryable by the phase's policy)."""

APPROVAL_EXPIRED = "ApprovalExpired"
"""Nobody decided before the approval deadline and the policy says fail."""

REJECTION_LIMIT = "RejectionLimitReached"
"""A gate was rejected more often than the approval policy allows."""

BUDGET_EXCEEDED = "BudgetExceeded"
"""An agent or the task ledger reached a budget cap; a person decides (more budget, abort)."""

PHASE_FAILED = "PhaseFailed"
"""A task failed for a reason that carried no type of its own."""

PHASE_TIMEOUT = "PhaseTimeout"
"""A phase's executor ran past the phase's ``timeout_s``; its process group was killed."""

GIT_FAILED = "GitFailed"
"""A git command on the task's checkout failed (fetch, checkout, show); retryable."""

GIT_PUSH_FAILED = "GitPushFailed"
"""Committing or pushing a round to the task branch failed and no other attempt had pushed it."""

PULL_REQUEST_FAILED = "PullRequestFailed"
"""The worker's ``IMPLFLOW_PR_COMMAND`` exited non-zero; retryable."""

REPLAY_PATCH_FAILED = "ReplayPatchFailed"
"""A cassette's patch does not apply to the checkout: the cassette and the repo disagree."""

AGENT_PERMISSION_DENIED = "AgentPermissionDenied"
"""The agent was refused tool calls (permission mode / allowed tools). Never retried:
the same settings would refuse them again; fix the configuration."""

AGENT_STALLED = "AgentStalled"
"""No event from the agent for the configured stall time; its process group was killed."""

AGENT_API_ERROR = "AgentApiError"
"""The model API failed (HTTP 5xx, overload, network) after the agent's own retries."""

AGENT_FAILED = "AgentFailed"
"""The agent ended without a usable result (crash, error during execution)."""

ABORTED = "Aborted"
"""A person aborted the task at a decision point."""

GATE_CONFIG_INVALID = "GateConfigInvalid"
"""The repository's ``.implflow/gates.toml`` is invalid: a person fixes it, never a retry."""

LOAD_PROBE_FAILED = "LoadProbeFailed"
"""The load probe could not measure: port taken, load tool crashed or printed no figures."""

SERVICE_NOT_HEALTHY = "LoadProbeServiceNotHealthy"
"""The probed service exited or its health URL did not answer in time: the service's fault."""

LOAD_TOOL_UNAVAILABLE = "LoadToolUnavailable"
"""``wrk`` is not installed on this worker: a setup problem, never worth a retry."""

NON_RETRYABLE_PHASE_ERRORS: tuple[str, ...] = (
    INVALID_INPUT,
    EXECUTOR_UNAVAILABLE,
    REPO_UNAVAILABLE,
    BUDGET_EXCEEDED,
)
"""Error types a phase activity never retries: bad config, missing binary."""


class ImplflowError(Exception):
    """Base class of implflow's own (non-Temporal) errors: client, CLI, activities' internals.

    Activities turn these into ``ApplicationError`` with a type above before they leave the
    activity; workflow code raises ``ApplicationError`` only.
    """


class InvalidInputError(ImplflowError, ValueError):
    """Bad input caught before anything is started. ``str()`` is one line naming the field."""
