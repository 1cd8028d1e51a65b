"""What actually went wrong behind a Temporal failure: the root cause, its type and one line.

Activity failures arrive wrapped (``ActivityError`` around the activity's ``ApplicationError``);
the workflow decides on the innermost one. Pure functions, safe in the workflow sandbox.
"""

from __future__ import annotations

from temporalio.exceptions import ActivityError, ApplicationError

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
