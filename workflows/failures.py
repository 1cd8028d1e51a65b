"""What actually went wrong behind a Temporal failure: the root cause, its type and one line.

Activity failures arrive wrapped (``ActivityError`` around the activity's ``ApplicationError``);
the workflow decides on the innermost one. Pure functions, safe in the workflow sandbox.
"""

from __future__ import annotations

from temporalio.exceptions import ActivityError, ApplicationError

from implflow import errors

MAX_MESSAGE_CHARS = 1000


def root_failure(err: BaseException) -> BaseException:
    """The innermost failure behind activity errors."""
    while isinstance(err, ActivityError) and err.cause is not None:
        err = err.cause
    return err


def failure_type(err: BaseException) -> str | None:
    """The root cause's ``ApplicationError`` type (an ``implflow.errors`` constant), if any."""
    root = root_failure(err)
    return root.type if isinstance(root, ApplicationError) else None


def failure_message(err: BaseException) -> str:
    """The root cause's message, bounded so it can go into status and history."""
    root = root_failure(err)
    return str(getattr(root, "message", None) or root)[:MAX_MESSAGE_CHARS]


def task_failure(
    err: ActivityError | ApplicationError, phase: str | None, prepared: bool
) -> ApplicationError:
    """How the task fails: non-retryable, with the root cause's type (else ``PhaseFailed``)
    and its message, naming the phase that failed, or ``prepare`` when the task was not
    prepared yet (the repo, executor and commands check, before any phase ran)."""
    message = failure_message(err)
    if not prepared:
        message = f"prepare failed: {message}"
    elif phase and isinstance(err, ActivityError):
        message = f"phase {phase} failed: {message}"
    return ApplicationError(
        message, type=failure_type(err) or errors.PHASE_FAILED, non_retryable=True
    )
