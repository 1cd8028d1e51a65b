"""Error types shared by workflows, activities, the client and the CLI.

Temporal matches non-retryable errors by their type string, so the strings are
constants here and nowhere else.
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

ABORTED = "Aborted"
"""A person aborted the task at a decision point."""

NON_RETRYABLE_PHASE_ERRORS: tuple[str, ...] = (
    INVALID_INPUT,
    EXECUTOR_UNAVAILABLE,
    REPO_UNAVAILABLE,
    BUDGET_EXCEEDED,
)
"""Error types a phase activity never retries: bad config, missing binary."""


class ImplflowError(Exception):
    """Base class of implflow's own (non-Temporal) errors, e.g. in the client and CLI."""


class InvalidInputError(ImplflowError, ValueError):
    """Bad input caught before anything is started. ``str()`` is one line naming the field."""
