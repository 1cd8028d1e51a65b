"""Running an executor's subprocess under discipline.

Shared by every executor that drives a program (shell today; coding-agent CLIs
next): argv lists only (never a shell string), a scrubbed environment, its own
process group so cancellation, timeout or shutdown kills the whole tree, output
streamed to a log file (not into history), and a heartbeat while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

KILL_GRACE_S = 5.0
"""Time between SIGTERM and SIGKILL for the process group."""


@dataclass(frozen=True)
class ProcessResult:
    returncode: int
    duration_s: float
    log_path: Path
    tail: str


def heartbeat_every_s(heartbeat_timeout_s: float) -> float:
    """How often to heartbeat: four times per heartbeat timeout, between 0.5 s and 15 s."""
    return max(0.5, min(heartbeat_timeout_s / 4, 15.0))


def scrubbed_env(allow: Sequence[str], extra: Mapping[str, str]) -> dict[str, str]:
    """Only the allowed variables of this process, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k in set(allow)}
    env.update(extra)
    return env


def kill_group(proc: asyncio.subprocess.Process, sig: int) -> None:
    """Send ``sig`` to ``proc``'s whole process group; a group already gone is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


async def stop_group(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM the group, wait a little, then SIGKILL whatever is left."""
    kill_group(proc, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), KILL_GRACE_S)
    # Children may outlive the leader; the group kill catches them too.
    kill_group(proc, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        await proc.wait()


def _tail(path: Path, limit: int = 800) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - limit))
            return fh.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""


async def run_process(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    log_path: Path,
    timeout_s: float,
    heartbeat: Callable[[dict[str, object]], None],
    heartbeat_every_s: float = 10.0,
) -> ProcessResult:
    """Run ``argv`` to completion, heartbeating; kill its process group on cancel or timeout.

    Raises ``FileNotFoundError`` when the program does not exist, ``TimeoutError``
    on timeout, and re-raises ``asyncio.CancelledError`` after killing the tree.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with log_path.open("ab") as log:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=str(cwd),
            env=dict(env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # own process group: killpg reaches every child
        )
        deadline = started + timeout_s
        waiter = asyncio.ensure_future(proc.wait())
        try:
            while not waiter.done():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{argv[0]} ran longer than {timeout_s:.0f}s")
                await asyncio.wait({waiter}, timeout=min(heartbeat_every_s, remaining))
                if not waiter.done():
                    heartbeat({"pid": proc.pid, "elapsed_s": round(time.monotonic() - started, 1)})
        except BaseException:
            await stop_group(proc)
            waiter.cancel()
            raise
        finally:
            # The leader exited but a child may linger in the group: never leave strays.
            kill_group(proc, signal.SIGKILL)
    return ProcessResult(
        returncode=proc.returncode if proc.returncode is not None else -1,
        duration_s=time.monotonic() - started,
        log_path=log_path,
        tail=_tail(log_path),
    )
