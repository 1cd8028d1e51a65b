"""Running a subprocess under discipline, for every activity that starts a program.

The shell and coding-agent executors, the gate tools and the pull-request command all
go through here: argv lists only (never a shell string), a scrubbed environment, its
own process group so cancellation, timeout or shutdown kills the whole tree, output
streamed to a log file (not into history), and a heartbeat while it runs.

Every start goes through :func:`start_process`, which launches the program in the
activity's sandbox scope (``activities/sandbox.py``: inside bubblewrap, or with
``PR_SET_PDEATHSIG`` when the sandbox is off) and records its process group with the
activity's :class:`CheckoutLock`: ``<task dir>/checkout.lock`` names the worker that
holds the checkout and the groups it runs, so a worker that takes the checkout after a
``kill -9`` of the previous one ends whatever that one left behind before it touches the
checkout (an orphan writing into the retry's commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import fcntl
import json
import os
import signal
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import structlog

from activities.sandbox import launch
from implflow.errors import ImplflowError

log = structlog.stdlib.get_logger("implflow.process")

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


_SANDBOXED: set[int] = set()
"""Pids of running programs that are bwrap (the sandbox) rather than the program itself."""


async def start_process(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    stdout: int | IO[Any],
    stderr: int | IO[Any],
    limit: int = 2**16,
) -> asyncio.subprocess.Process:
    """Start ``argv`` in the activity's sandbox, leading its own process group.

    stdin is /dev/null. The group is recorded with the activity's checkout lock. Raises
    ``FileNotFoundError`` / ``PermissionError`` when the program is missing or cannot run.
    ``limit`` bounds one line read from a piped stdout (asyncio's default: 64 KiB).
    """
    how = launch(argv, cwd=cwd, env=env)
    proc = await asyncio.create_subprocess_exec(
        *how.argv,
        cwd=str(cwd),
        env=how.env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,  # own process group: killpg reaches every child
        preexec_fn=how.preexec,
        limit=limit,
    )
    if how.sandboxed:
        _SANDBOXED.add(proc.pid)
    tracker = _TRACKER.get()
    if tracker is not None:
        tracker.started(proc.pid)
    return proc


def forget_process(proc: asyncio.subprocess.Process) -> None:
    """``proc`` and its group are gone: drop it from the sandbox set and the checkout lock."""
    _SANDBOXED.discard(proc.pid)
    tracker = _TRACKER.get()
    if tracker is not None:
        tracker.ended(proc.pid)


def _terminate(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM the program's group. For a sandboxed one, every member but bwrap itself:
    bwrap dies of SIGTERM at once and takes the sandbox with it (``--die-with-parent``),
    which would leave the agent no grace at all."""
    if proc.pid not in _SANDBOXED:
        kill_group(proc, signal.SIGTERM)
        return
    for pid in group_members(proc.pid):
        if not _is_bwrap(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)


def _is_bwrap(pid: int) -> bool:
    try:
        return os.path.basename(os.readlink(f"/proc/{pid}/exe")) == "bwrap"
    except OSError:
        return False


async def stop_group(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM the group, wait a little, then SIGKILL whatever is left."""
    _terminate(proc)
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
        proc = await start_process(
            argv, cwd=cwd, env=env, stdout=log, stderr=asyncio.subprocess.STDOUT
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
            forget_process(proc)
    return ProcessResult(
        returncode=proc.returncode if proc.returncode is not None else -1,
        duration_s=time.monotonic() - started,
        log_path=log_path,
        tail=log_tail(log_path),
    )


# --------------------------------------------------------------------------- leftovers


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``, from ``/proc``."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        fields = _stat_fields(stat)
        if fields and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(stat.parent.name))
    return members


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot): tells a reused pid apart."""
    fields = _stat_fields(Path(f"/proc/{pid}/stat"))
    return int(fields[19]) if fields else None


def _stat_fields(stat: Path) -> list[str] | None:
    """``/proc/<pid>/stat`` after the command name (state is field 0)."""
    try:
        return stat.read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


class GroupTracker:
    """What :func:`start_process` tells about the groups it starts (the checkout lock)."""

    def started(self, pgid: int) -> None:
        """A program leading group ``pgid`` started."""

    def ended(self, pgid: int) -> None:
        """Group ``pgid`` has been killed."""


_TRACKER: contextvars.ContextVar[GroupTracker | None] = contextvars.ContextVar(
    "implflow_group_tracker", default=None
)

LOCK_FILE = "checkout.lock"
"""Beside the checkout, in the task's directory on this worker."""
LOCK_WAIT_S = 120.0
"""How long an activity waits for another one on this worker to release the checkout."""
_LOCK_POLL_S = 0.5


class CheckoutBusyError(ImplflowError):
    """Another activity on this worker held the checkout for ``LOCK_WAIT_S`` (retryable)."""


class CheckoutLock(GroupTracker):
    """``async with CheckoutLock(task_dir):`` — this activity alone works on the checkout.

    An ``flock`` on ``<task dir>/checkout.lock`` (released by the kernel when the worker
    dies, even by ``kill -9``), and in the file, as JSON: the holder's host, pid and start
    time and the process groups it runs (``[pgid, start ticks]``), rewritten as programs
    start and end. Whoever takes the lock next first ends every group still listed: after a
    ``kill -9`` those are orphans (an executor's children when the sandbox is off) that
    would otherwise keep writing into the checkout. On release, groups still listed are
    killed too. Groups recorded by another host are left alone (their pids mean nothing
    here); a workspace root shared between hosts needs its own locking.
    """

    def __init__(
        self,
        task_dir: Path,
        *,
        heartbeat: Callable[[dict[str, object]], None] | None = None,
        wait_s: float = LOCK_WAIT_S,
    ) -> None:
        self.path = task_dir / LOCK_FILE
        self.heartbeat = heartbeat
        self.wait_s = wait_s
        self.groups: dict[int, int | None] = {}
        self._fd: int | None = None
        self._token: contextvars.Token[GroupTracker | None] | None = None

    async def __aenter__(self) -> CheckoutLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            deadline = time.monotonic() + self.wait_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise CheckoutBusyError(
                            f"{self.path} is held by another activity on this worker "
                            f"(waited {self.wait_s:g}s)"
                        ) from None
                    if self.heartbeat is not None:
                        self.heartbeat({"state": "waiting for the checkout lock"})
                    await asyncio.sleep(_LOCK_POLL_S)
            self._fd = fd
            await asyncio.to_thread(self._end_leftovers, self._read())
            self._write()
        except BaseException:
            os.close(fd)
            self._fd = None
            raise
        self._token = _TRACKER.set(self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is not None:
            _TRACKER.reset(self._token)
            self._token = None
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            # Every program of the activity should be gone by now; make sure of it.
            await asyncio.to_thread(self._end_leftovers, self._record(), "still running at release")
            self.groups.clear()
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # releases the flock

    def started(self, pgid: int) -> None:
        """Record a group this activity started (written at once: a crash may follow)."""
        self.groups[pgid] = start_ticks(pgid)
        self._write()

    def ended(self, pgid: int) -> None:
        """Drop a group that has been killed."""
        self.groups.pop(pgid, None)
        self._write()

    def _record(self) -> dict[str, Any]:
        return {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "pid_start": start_ticks(os.getpid()),
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
            "groups": [[pgid, ticks] for pgid, ticks in self.groups.items()],
        }

    def _write(self) -> None:
        if self._fd is None:
            return
        data = json.dumps(self._record()).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def _read(self) -> dict[str, Any]:
        if self._fd is None:
            return {}
        size = os.fstat(self._fd).st_size
        try:
            raw = json.loads(os.pread(self._fd, size, 0) or b"{}")
        except ValueError:
            return {}
        return raw if isinstance(raw, dict) else {}

    def _end_leftovers(
        self, record: dict[str, Any], why: str = "left by an earlier worker"
    ) -> None:
        """SIGKILL every listed group that still has members, and wait until it is gone."""
        if record.get("host") not in (None, socket.gethostname()):
            return
        groups = record.get("groups")
        for entry in groups if isinstance(groups, list) else []:
            if not (isinstance(entry, list) and entry and isinstance(entry[0], int)):
                continue
            pgid, ticks = entry[0], entry[1] if len(entry) > 1 else None
            if pgid <= 1 or pgid == os.getpgid(0):
                continue
            leader_start = start_ticks(pgid)
            # A live leader that started at another time is a reused pid: not ours. A dead
            # leader's group number cannot be reused while members remain.
            if leader_start is not None and ticks is not None and leader_start != ticks:
                continue
            members = group_members(pgid)
            if not members:
                continue
            log.warning(
                "ending leftover process group",
                pgid=pgid,
                members=len(members),
                owner_pid=record.get("pid"),
                why=why,
                lock=str(self.path),
            )
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
            deadline = time.monotonic() + KILL_GRACE_S
            while group_members(pgid) and time.monotonic() < deadline:
                time.sleep(0.05)
