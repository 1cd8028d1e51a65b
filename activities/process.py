"""Running a subprocess under discipline, for every activity that starts a program.

The shell and coding-agent executors, the gate tools and the pull-request command all
go through here: argv lists only (never a shell string), a scrubbed environment, its
own process group so cancellation, timeout or shutdown kills the whole tree, output
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


HEARTBEAT_CADENCE_S = 1.0
"""Executors heartbeat at least this often, whatever the phase's heartbeat timeout: a cancel
request arrives with a heartbeat's answer, so this bounds how long a cancel takes."""


def heartbeat_every_s(heartbeat_timeout_s: float) -> float:
    """How often to heartbeat: the cadence above, or more often for a very short timeout."""
    return max(0.25, min(heartbeat_timeout_s / 4, HEARTBEAT_CADENCE_S))


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


def log_tail(path: Path, limit: int = 800) -> str:
    """The last ``limit`` bytes of a log file as text; ``""`` when it cannot be read."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - limit))
            return fh.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""


_tail = log_tail  # the old private name, still imported by activities/gates/loadprobe.py


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
        tail=log_tail(log_path),
    )
