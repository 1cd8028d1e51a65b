"""Running an agent CLI that reports progress as a stream of JSON lines.

Coding-agent CLIs (``claude -p --output-format stream-json``, ``codex exec --json``)
print one JSON event per line on stdout and end with a final event. This runner
keeps the discipline of ``process.py`` (argv list, scrubbed environment given by
the caller, stdin from /dev/null, own process group killed on cancel or timeout,
started through ``start_process`` and so inside the activity's sandbox scope) and
adds what a long-running agent needs:

- every stdout line goes verbatim to an event log file, and each JSON object is
  handed to a callback as it arrives;
- **stall**: no line for ``stall_s`` seconds before the final event kills the
  group and raises ``StreamStalled``;
- **linger**: a process still alive ``linger_s`` seconds after its final event is
  killed (the result is already in hand, so the run still counts);
- a heartbeat at least every ``heartbeat_every_s`` seconds, and on the first
  event (which names the agent's session, so a retry can resume it), with the
  pid, the event count, the last event time and whatever the caller's
  ``progress()`` adds (session id, turns, cost).
"""

from __future__ import annotations

import asyncio
import json
import math
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, cast

from activities.process import forget_process, kill_group, log_tail, start_process, stop_group
from implflow.errors import ImplflowError

MAX_LINE_BYTES = 64 * 1024 * 1024
"""One event may carry a whole file (a tool result); refuse only absurd lines."""

Event = dict[str, Any]


class StreamStalled(ImplflowError):
    """No event arrived for ``stall_s`` seconds; the process group has been killed."""


@dataclass(frozen=True)
class StreamLimits:
    """Time limits of one agent run, in seconds."""

    timeout_s: float
    """Wall time for the whole run; exceeding it raises ``TimeoutError``."""
    stall_s: float
    """Longest silence allowed before the final event."""
    linger_s: float
    """Longest life allowed after the final event."""
    heartbeat_every_s: float = 10.0


@dataclass(frozen=True)
class StreamResult:
    returncode: int
    """The exit code; negative when killed by a signal (e.g. after lingering)."""
    duration_s: float
    events: int
    lingered: bool
    """True when the process outlived its final event by ``linger_s`` and was killed."""
    log_path: Path
    stderr_tail: str


@dataclass
class _Watch:
    """What the reader saw, shared with the supervising loop."""

    started: float
    heartbeat: Callable[[dict[str, object]], None]
    progress: Callable[[], Mapping[str, object]]
    every_s: float
    pid: int
    events: int = 0
    last_event: float = 0.0
    last_event_wall: str | None = None
    final_at: float | None = None
    last_beat: float = field(default=-math.inf)

    def beat_if_due(self, now: float, *, force: bool = False) -> None:
        if not force and now - self.last_beat < self.every_s:
            return
        self.last_beat = now
        self.heartbeat(
            {
                "pid": self.pid,
                "elapsed_s": round(now - self.started, 1),
                "events": self.events,
                "last_event_at": self.last_event_wall,
                **self.progress(),
            }
        )


async def _read_events(
    stdout: asyncio.StreamReader,
    log: IO[bytes],
    watch: _Watch,
    on_event: Callable[[Event], None],
    is_final: Callable[[Event], bool],
) -> None:
    while line := await stdout.readline():
        log.write(line if line.endswith(b"\n") else line + b"\n")
        log.flush()
        now = time.monotonic()
        watch.last_event = now
        watch.last_event_wall = datetime.now(UTC).isoformat(timespec="seconds")
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a stray non-JSON line still proves the process is alive
        if not isinstance(event, dict):
            continue
        watch.events += 1
        on_event(event)
        if watch.final_at is None and is_final(event):
            watch.final_at = now
        # The first event (an agent's "init") names the session: tell Temporal at once.
        watch.beat_if_due(now, force=watch.events == 1)


def _raise_if_failed(reader: asyncio.Future[None]) -> None:
    """Surface a failure of the reader (a callback raised, a line over the limit)."""
    if reader.done() and not reader.cancelled():
        error = reader.exception()
        if error is not None:
            raise error


async def run_event_stream(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    log_path: Path,
    stderr_path: Path,
    limits: StreamLimits,
    on_event: Callable[[Event], None],
    is_final: Callable[[Event], bool],
    heartbeat: Callable[[dict[str, object]], None],
    progress: Callable[[], Mapping[str, object]] = dict,
) -> StreamResult:
    """Run ``argv``, feeding each JSON line of its stdout to ``on_event``.

    Returns when the process has exited (or was killed for lingering after its
    final event). Raises ``FileNotFoundError`` when the program does not exist,
    ``StreamStalled`` on a stall, ``TimeoutError`` past ``limits.timeout_s``, and
    re-raises ``asyncio.CancelledError``; in every case the process group is
    killed first.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    stderr_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with log_path.open("ab") as log, stderr_path.open("ab") as err:
        proc = await start_process(
            argv,
            cwd=cwd,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
            limit=MAX_LINE_BYTES,
        )
        stdout = cast(asyncio.StreamReader, proc.stdout)  # stdout=PIPE: always set
        watch = _Watch(
            started=started,
            heartbeat=heartbeat,
            progress=progress,
            every_s=limits.heartbeat_every_s,
            pid=proc.pid,
            last_event=started,
        )
        reader = asyncio.ensure_future(_read_events(stdout, log, watch, on_event, is_final))
        waiter = asyncio.ensure_future(proc.wait())
        lingered = False
        try:
            while not (reader.done() and waiter.done()):
                _raise_if_failed(reader)
                now = time.monotonic()
                deadline = started + limits.timeout_s
                if now >= deadline:
                    raise TimeoutError(f"{argv[0]} ran longer than {limits.timeout_s:.0f}s")
                if watch.final_at is None:
                    silent_until = watch.last_event + limits.stall_s
                    if now >= silent_until:
                        raise StreamStalled(
                            f"{Path(argv[0]).name}: no event for {limits.stall_s:.0f}s "
                            f"(after {watch.events} events); process group killed"
                        )
                else:
                    silent_until = watch.final_at + limits.linger_s
                    if now >= silent_until:
                        lingered = True
                        await stop_group(proc)
                        break
                watch.beat_if_due(now)
                wake = min(deadline, silent_until, watch.last_beat + limits.heartbeat_every_s)
                pending = {task for task in (reader, waiter) if not task.done()}
                await asyncio.wait(
                    pending, timeout=max(0.0, wake - now), return_when=asyncio.FIRST_COMPLETED
                )
            _raise_if_failed(reader)
        except BaseException:
            await stop_group(proc)
            raise
        finally:
            # The leader may be gone while a child lingers in the group: never leave strays.
            kill_group(proc, signal.SIGKILL)
            forget_process(proc)
            for task in (reader, waiter):
                task.cancel()
            await asyncio.wait({reader, waiter})
    return StreamResult(
        returncode=proc.returncode if proc.returncode is not None else -1,
        duration_s=time.monotonic() - started,
        events=watch.events,
        lingered=lingered,
        log_path=log_path,
        stderr_tail=log_tail(stderr_path),
    )
