"""Git work off the event loop: threads sized to the activity slots, heartbeating meanwhile.

Task and plan activities both clone, fetch, merge and push. The default ``asyncio.to_thread``
pool has ``min(32, cpus + 4)`` threads shared with everything else, so with more slots than
that git work queued behind other tasks' and activities timed out without a heartbeat.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.process import HEARTBEAT_CADENCE_S
from activities.workspace import GitError
from implflow.errors import GIT_FAILED

__all__ = ["Beat", "GitThreads"]

T = TypeVar("T")
Beat = Callable[[dict[str, object]], None]


class GitThreads:
    """A thread per activity slot (and two spare), so git work never queues behind another
    task's; while it runs the activity heartbeats, so a long clone or a retried push keeps
    it alive."""

    def __init__(self, slots: int) -> None:
        self.pool = ThreadPoolExecutor(max_workers=slots + 2, thread_name_prefix="implflow-git")

    async def run(self, fn: Callable[..., T], *args: Any, beat: Beat | None = None) -> T:
        """``fn(*args)`` on these threads; ``beat`` (else the activity's heartbeat) meanwhile."""
        future = asyncio.get_running_loop().run_in_executor(self.pool, functools.partial(fn, *args))
        while True:
            done, _ = await asyncio.wait({future}, timeout=HEARTBEAT_CADENCE_S)
            if done:
                return future.result()
            if beat is not None:
                beat({})
            elif activity.in_activity():
                activity.heartbeat({"git": getattr(fn, "__name__", "git")})

    async def git(self, fn: Callable[..., T], *args: Any, beat: Beat | None = None) -> T:
        """As ``run``; a ``GitError`` becomes a retryable ``GitFailed`` activity error."""
        try:
            return await self.run(fn, *args, beat=beat)
        except GitError as err:
            raise ApplicationError(str(err), type=GIT_FAILED) from None
