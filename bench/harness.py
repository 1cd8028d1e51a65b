"""What every benchmark and fault run stands on: a dev server, workers, origins, records.

Every process started here (dev server, ``python worker.py``, the bare worker) runs in its
own session and is registered with ``Processes``, which ends them all when the block exits,
on an exception or Ctrl-C alike. Phase commands carry a marker string in their argv, so a
process left behind by a killed worker is found (and ended) by its command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import psutil
from temporalio.api.enums.v1 import EventType, TimeoutType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client
from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter

from implflow.binaries import find_binary
from implflow.converter import data_converter
from implflow.errors import ImplflowError
from implflow.server import (
    dev_server_argv,
    ensure_search_attributes,
    free_port,
    wait_until_serving,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
BARE_TASK_QUEUE = "bench-bare"
SEARCH_ATTRIBUTES = ("ImplPhase", "ImplState", "ImplPlan")
"""Registered on the bench's server whatever ``implflow.server`` registers by itself."""
WORKER_READY_LINE = "worker started"
"""Both ``python worker.py`` and the bare worker log this once they poll."""

T = TypeVar("T")


class BenchError(RuntimeError):
    """The bench could not set something up (a server, a worker); one line."""


# --- processes ---------------------------------------------------------------------------


class Processes:
    """The processes a run started, each the leader of its own session, ended on exit.

    ``with Processes() as procs:`` — leaving the block (normally, by an exception, by
    KeyboardInterrupt) sends SIGTERM to each process group still alive, then SIGKILL.
    """

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []
        self._logs: list[Any] = []

    def __enter__(self) -> Processes:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def spawn(
        self, argv: Sequence[str], *, env: Mapping[str, str], log: Path, cwd: Path = ROOT
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` in its own session, output appended to ``log``."""
        log.parent.mkdir(parents=True, exist_ok=True)
        out = log.open("ab")
        self._logs.append(out)
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._procs.append(proc)
        return proc

    def live_pids(self) -> set[int]:
        """Pids of the processes started here that still run."""
        return {p.pid for p in self._procs if p.poll() is None}

    @staticmethod
    def end(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout_s: float = 30) -> int:
        """Send ``sig`` to the process group, wait up to ``timeout_s``, then SIGKILL it."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            return proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            return proc.wait(10)

    @staticmethod
    def kill9(proc: subprocess.Popen[bytes]) -> None:
        """``kill -9`` of the process itself (not its group): no cleanup of any kind runs."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def close(self) -> None:
        """End every process group still alive (SIGTERM, then SIGKILL after 10 s)."""
        alive = [p for p in self._procs if p.poll() is None]
        for proc in alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in alive:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5)
        # A killed leader's group may still hold children (git): end those too.
        for proc in self._procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        for out in self._logs:
            out.close()
        self._logs.clear()


def marked_processes(marker: str, commands_only: bool = False) -> list[psutil.Process]:
    """Live processes (not zombies) whose command line contains ``marker``; with
    ``commands_only``, not the sandbox (``bwrap``) that carries the same command line."""
    found = []
    me = os.getpid()
    for proc in psutil.process_iter(["cmdline", "status", "name"]):
        try:
            if proc.pid == me or proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if commands_only and proc.info["name"] == "bwrap":
                continue
            if any(marker in part for part in proc.info["cmdline"] or ()):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def kill_marked(marker: str) -> int:
    """SIGKILL every process whose command line names ``marker``; returns how many."""
    procs = marked_processes(marker)
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(procs, timeout=5)
    return len(procs)


def descends_from(proc: psutil.Process, ancestors: set[int]) -> bool:
    """True when one of ``proc``'s ancestors (or itself) has a pid in ``ancestors``."""
    try:
        chain = [proc, *proc.parents()]
    except psutil.NoSuchProcess:
        return False
    return any(p.pid in ancestors for p in chain)


OUTLIVE_SLACK_S = 0.3
"""A phase command that ends this long after its worker died was not stopped with it."""


def outlived_worker(
    rows: Sequence[tuple[str, str, int, int, str, float]], deaths: Sequence[float]
) -> set[str]:
    """Phase commands that a worker started before it died and that still finished their
    work (wrote their file, noted their end) after it: nothing stopped them."""
    ends = {r[4]: r[5] for r in rows if r[0] == "end"}
    found: set[str] = set()
    for kind, _, _, _, pid, began in rows:
        end = ends.get(pid)
        if (
            kind == "start"
            and end is not None
            and any(began < death and end > death + OUTLIVE_SLACK_S for death in deaths)
        ):
            found.add(pid)
    return found


def sweep_on_sigterm() -> None:
    """Make SIGTERM behave like Ctrl-C, so ``finally`` blocks end what was started."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)


# --- the dev server -----------------------------------------------------------------------


@functools.cache
def _quiet_runtime() -> Runtime:
    filt = TelemetryFilter(core_level="ERROR", other_level="ERROR")
    return Runtime(telemetry=TelemetryConfig(logging=LoggingConfig(filter=filt)))


async def connect(address: str) -> Client:
    """A client of the bench's server with implflow's data converter. Its SDK core logs
    errors only: a server restarted on purpose is retried without a warning per call."""
    return await Client.connect(
        address, namespace="default", data_converter=data_converter, runtime=_quiet_runtime()
    )


class DevServer:
    """``temporal server start-dev`` on free 127.0.0.1 ports with a file database."""

    def __init__(self, procs: Processes, workdir: Path) -> None:
        self.procs = procs
        self.workdir = workdir
        self.db = workdir / "temporal.db"
        self.log = workdir / "server.log"
        self.port = free_port()
        self.ui_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        argv = dev_server_argv(self.db, port=self.port, ui_port=self.ui_port, headless=True)
        for name in SEARCH_ATTRIBUTES:
            if f"{name}=Keyword" not in argv:
                argv += ["--search-attribute", f"{name}=Keyword"]
        return argv

    async def start(self, ready_timeout_s: float = 60) -> None:
        """Start (or start again, on the same database and port) and wait until it answers."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = self.procs.spawn(self.argv(), env=dict(os.environ), log=self.log)
        try:
            await wait_until_serving(self.address, self.proc, ready_timeout_s)
        except ImplflowError as err:
            raise BenchError(f"{err}: {tail(self.log)}") from None
        await ensure_search_attributes(await connect(self.address), register=True)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            await asyncio.to_thread(self.procs.end, self.proc, signal.SIGTERM, 30)

    async def restart(self, down_s: float = 0.0) -> None:
        """Stop the server gracefully, stay down ``down_s``, start it on the same database."""
        await self.stop()
        await asyncio.sleep(down_s)
        await self.start()
        self.restarts += 1


# --- workers -----------------------------------------------------------------------------


def base_env(address: str) -> dict[str, str]:
    """This process's environment without any TEMPORAL_* or IMPLFLOW_* setting, plus the
    server's address: a run does not depend on what the caller's shell had set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "IMPLFLOW_"))}
    env["TEMPORAL_ADDRESS"] = address
    env["TEMPORAL_NAMESPACE"] = "default"
    return env


@dataclass
class WorkerProc:
    """A worker process the bench started."""

    proc: subprocess.Popen[bytes]
    log: Path
    data_dir: Path
    kind: str
    slots: int

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None


async def start_worker(
    procs: Processes,
    address: str,
    data_dir: Path,
    *,
    kind: str = "implflow",
    slots: int = 4,
    log: Path | None = None,
    extra_env: Mapping[str, str] | None = None,
    ready_timeout_s: float = 60,
) -> WorkerProc:
    """``python worker.py`` (kind ``implflow``) or ``python -m bench.bare`` (kind ``bare``),
    configured through IMPLFLOW_* variables, once it polls its task queue."""
    log = log or data_dir / "worker.log"
    await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
    env = {
        **base_env(address),
        "IMPLFLOW_EXECUTOR": "shell",
        "IMPLFLOW_DATA_DIR": str(data_dir),
        "IMPLFLOW_LOG_FORMAT": "json",
        "IMPLFLOW_LOG_LEVEL": "INFO",
        "IMPLFLOW_MAX_CONCURRENT_ACTIVITIES": str(slots),
        "IMPLFLOW_SHUTDOWN_GRACE_S": "2",
        **(extra_env or {}),
    }
    argv = (
        [sys.executable, "worker.py"]
        if kind == "implflow"
        else [sys.executable, "-m", "bench.bare"]
    )
    offset = log.stat().st_size if log.exists() else 0
    proc = procs.spawn(argv, env=env, log=log)
    deadline = time.monotonic() + ready_timeout_s
    while WORKER_READY_LINE not in read_from(log, offset):
        if proc.poll() is not None:
            raise BenchError(f"{kind} worker exited {proc.returncode}: {tail(log)}")
        if time.monotonic() > deadline:
            raise BenchError(f"{kind} worker not ready after {ready_timeout_s:.0f} s: {tail(log)}")
        await asyncio.sleep(0.1)
    return WorkerProc(proc=proc, log=log, data_dir=data_dir, kind=kind, slots=slots)


async def stop_worker(procs: Processes, worker: WorkerProc, timeout_s: float = 30) -> int:
    """SIGTERM (graceful shutdown), then SIGKILL of the group after ``timeout_s``."""
    return await asyncio.to_thread(procs.end, worker.proc, signal.SIGTERM, timeout_s)


def read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def tail(path: Path, limit: int = 600) -> str:
    """The end of a log file on one line."""
    text = read_from(path, max(0, path.stat().st_size - limit)) if path.exists() else ""
    return " ".join(text.split())[-limit:]


# --- origins and their branches ------------------------------------------------------------

GIT_ID = ("-c", "user.name=bench", "-c", "user.email=bench@localhost")


def git(cwd: Path, *args: str, stdin: bytes | None = None, timeout_s: float = 120) -> str:
    """Run git; raise ``BenchError`` with its message on failure."""
    proc = subprocess.run(
        ["git", *GIT_ID, *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        timeout=timeout_s,
        check=False,
    )
    if proc.returncode != 0:
        raise BenchError(f"git {args[0]} failed: {proc.stderr.decode(errors='replace')[-300:]}")
    return proc.stdout.decode("utf-8", "replace").strip()


def make_origin(path: Path, *, bare: bool = False) -> Path:
    """A repository with one commit on ``main``; bare (a server's shape) when asked."""
    work = path if not bare else path.with_name(path.name + "-seed")
    work.mkdir(parents=True, exist_ok=True)
    git(work, "init", "-q", "-b", "main")
    (work / "README.md").write_text("bench target\n", encoding="utf-8")
    git(work, "add", "README.md")
    git(work, "commit", "-q", "-m", "init")
    if bare:
        git(work.parent, "clone", "-q", "--bare", str(work), str(path))
        subprocess.run(["rm", "-rf", str(work)], check=True)
    return path


def add_task_branches(
    origin: Path, count: int, phases: Sequence[str], *, pack_refs: bool = False
) -> float:
    """``count`` finished-looking task branches ``implflow/fill-NNNN`` in ``origin``, each one
    commit per phase with a round record, written with ``git fast-import`` (no checkout),
    their refs loose (as pushes leave them) or packed (``pack_refs``, as a git server keeps
    them). Returns the seconds it took."""
    started = time.monotonic()
    base = git(origin, "rev-parse", "refs/heads/main")
    chunks: list[bytes] = []

    def data(text: str) -> None:
        raw = text.encode()
        chunks.append(b"data %d\n" % len(raw) + raw + b"\n")

    for i in range(count):
        wid = f"fill-{i:04d}"
        ref = f"refs/heads/implflow/{wid}"
        for n, phase in enumerate(phases):
            chunks.append(f"commit {ref}\n".encode())
            chunks.append(
                f"committer implflow <implflow@localhost> {1_700_000_000 + n} +0000\n".encode()
            )
            data(
                f"implflow: {phase} (round 1)\n\nfilled by the bench\n\n"
                f"Implflow-Workflow: {wid}\nImplflow-Phase: {phase}\nImplflow-Round: 1\n"
                "Implflow-Attempt: 1\nImplflow-Executor: shell\n"
            )
            if n == 0:
                chunks.append(f"from {base}\n".encode())
            record = json.dumps({"phase": phase, "round": 1, "task": wid, "summary": "x" * 64})
            chunks.append(f"M 100644 inline .implflow/runs/{phase}-r1.json\n".encode())
            data(record)
    git(origin, "fast-import", "--quiet", stdin=b"".join(chunks), timeout_s=300)
    if pack_refs:
        git(origin, "pack-refs", "--all")
    return time.monotonic() - started


@dataclass(frozen=True)
class RoundCommit:
    """One commit on a branch of the origin that carries a task's round trailers."""

    sha: str
    phase: str
    round: int
    attempt: int
    gate: bool


def round_commits(origin: Path, workflow_id: str) -> list[RoundCommit]:
    """Every commit on any branch of ``origin`` whose ``Implflow-Workflow`` is ``workflow_id``
    (trailers as ``activities/workspace.py`` writes them), oldest first."""
    try:
        out = git(
            origin,
            "log",
            "--branches",
            "--reverse",
            "--fixed-strings",
            f"--grep=Implflow-Workflow: {workflow_id}",
            "--format=%H%x1f%B%x1e",
        )
    except BenchError:
        return []
    found = []
    for entry in out.split("\x1e"):
        sha, _, body = entry.strip().partition("\x1f")
        trailers = dict(
            (k, v) for k, sep, v in (line.partition(": ") for line in body.splitlines()) if sep
        )
        if not sha or trailers.get("Implflow-Workflow") != workflow_id:
            continue
        if not trailers.get("Implflow-Round", "").isdigit():
            continue
        found.append(
            RoundCommit(
                sha=sha,
                phase=trailers.get("Implflow-Phase", ""),
                round=int(trailers["Implflow-Round"]),
                attempt=int(trailers.get("Implflow-Attempt", "0") or 0)
                if trailers.get("Implflow-Attempt", "0").isdigit()
                else 0,
                gate=trailers.get("Implflow-Gate") == "yes",
            )
        )
    return found


def duplicate_rounds(commits: Iterable[RoundCommit]) -> int:
    """Phase-round commits beyond the first for the same (phase, round): must be 0."""
    seen: dict[tuple[str, int], int] = {}
    for c in commits:
        if not c.gate:
            seen[(c.phase, c.round)] = seen.get((c.phase, c.round), 0) + 1
    return sum(n - 1 for n in seen.values())


def files_of(origin: Path, sha: str) -> list[str]:
    """Paths a commit changed (against its first parent)."""
    out = git(origin, "diff-tree", "--no-commit-id", "--name-only", "-r", sha)
    return out.splitlines()


# --- Temporal histories --------------------------------------------------------------------


async def history(client: Client, workflow_id: str) -> list[HistoryEvent]:
    hist = await client.get_workflow_handle(workflow_id).fetch_history()
    return list(hist.events)


def event_time(event: HistoryEvent) -> float:
    """The event's server timestamp as epoch seconds."""
    return float(event.event_time.seconds) + event.event_time.nanos / 1e9


def activity_starts(events: Sequence[HistoryEvent]) -> list[tuple[str, str, int, float]]:
    """``(activity type, phase, round, started at)`` of every activity that started.

    The phase and round come from the scheduled event's input (``PhaseInput`` JSON); other
    activities carry ``""`` and 0.
    """
    scheduled: dict[int, tuple[str, str, int]] = {}
    starts = []
    for ev in events:
        if ev.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = ev.activity_task_scheduled_event_attributes
            phase, rnd = "", 0
            with contextlib.suppress(ValueError, IndexError, KeyError, TypeError, AttributeError):
                payload = json.loads(attrs.input.payloads[0].data)
                spec = payload.get("phase", payload.get("step"))
                phase = spec.get("name", "") if isinstance(spec, dict) else str(spec or "")
                rnd = int(payload.get("round", 0))
            scheduled[ev.event_id] = (attrs.activity_type.name, phase, rnd)
        elif ev.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            attrs_s = ev.activity_task_started_event_attributes
            kind, phase, rnd = scheduled.get(attrs_s.scheduled_event_id, ("", "", 0))
            starts.append((kind, phase, rnd, event_time(ev)))
    return starts


def phase_waits(events: Sequence[HistoryEvent]) -> list[tuple[str, float, float]]:
    """``(phase, scheduled at, started at)`` of every phase (or bare step) activity that
    started: the time between the two is its wait in the task queue for a free slot."""
    scheduled = {
        ev.event_id: event_time(ev)
        for ev in events
        if ev.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    }
    started = [
        ev.activity_task_started_event_attributes.scheduled_event_id
        for ev in events
        if ev.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
    ]
    return [
        (phase, scheduled[sched_id], at)
        for (_, phase, _, at), sched_id in zip(activity_starts(events), started, strict=True)
        if phase and sched_id in scheduled
    ]


def signal_times(events: Sequence[HistoryEvent], name: str) -> list[float]:
    return [
        event_time(ev)
        for ev in events
        if ev.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
        and ev.workflow_execution_signaled_event_attributes.signal_name == name
    ]


def count_events(events: Sequence[HistoryEvent], kind: EventType.ValueType) -> int:
    return sum(1 for ev in events if ev.event_type == kind)


def sticky_handovers(events: Sequence[HistoryEvent]) -> int:
    """Workflow-task timeouts that are schedule-to-start on the worker's sticky queue: the
    worker did not poll it within the sticky timeout (2 s) and the server handed the task to
    the normal queue. Not a lost workflow task; ``count_events`` counts them as timeouts."""
    return sum(
        1
        for ev in events
        if ev.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT
        and ev.workflow_task_timed_out_event_attributes.timeout_type
        == TimeoutType.TIMEOUT_TYPE_SCHEDULE_TO_START
    )


# --- figures -------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary(values: Sequence[float], digits: int = 4) -> dict[str, float | int]:
    """n, min, median, p95 and max of ``values`` (rounded); ``{"n": 0}`` when empty."""
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "min": round(min(values), digits),
        "median": round(statistics.median(values), digits),
        "p95": round(percentile(values, 95), digits),
        "max": round(max(values), digits),
    }


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    temporal = subprocess.run(
        [find_binary("temporal"), "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    git_version = subprocess.run(
        ["git", "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    cpu = ""
    with contextlib.suppress(OSError):
        match = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        cpu = match.group(1).strip() if match else ""
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "temporal_cli": temporal,
        "git": git_version.removeprefix("git version "),
        "os": platform.platform(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


async def wait_until(
    check: Callable[[], Awaitable[T | None]], timeout_s: float, what: str, every_s: float = 0.1
) -> T:
    """Poll ``check`` until it returns something truthy; ``BenchError`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(every_s)


@dataclass
class Sampler:
    """Samples the RSS and CPU time of some processes (and their children) while it runs."""

    pids: list[int]
    every_s: float = 0.25
    peak_rss: dict[int, int] = field(default_factory=dict)
    peak_tree_rss: int = 0
    _cpu0: dict[int, float] = field(default_factory=dict)
    _cpu1: dict[int, float] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None
    _host0: tuple[float, float] = (0.0, 0.0)
    host_busy_pct: float = 0.0

    @staticmethod
    def _cpu(proc: psutil.Process) -> float:
        t = proc.cpu_times()
        return float(t.user + t.system + t.children_user + t.children_system)

    def _sample(self) -> None:
        tree = 0
        for pid in self.pids:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                proc = psutil.Process(pid)
                rss = int(proc.memory_info().rss)
                self.peak_rss[pid] = max(self.peak_rss.get(pid, 0), rss)
                tree += rss
                for child in proc.children(recursive=True):
                    with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                        tree += int(child.memory_info().rss)
                self._cpu1[pid] = self._cpu(proc)
        self.peak_tree_rss = max(self.peak_tree_rss, tree)

    async def _loop(self) -> None:
        while True:
            await asyncio.to_thread(self._sample)
            await asyncio.sleep(self.every_s)

    def start(self) -> None:
        for pid in self.pids:
            with contextlib.suppress(psutil.NoSuchProcess):
                self._cpu0[pid] = self._cpu(psutil.Process(pid))
        times = psutil.cpu_times()
        self._host0 = (time.monotonic(), float(times.idle + getattr(times, "iowait", 0.0)))
        self._task = asyncio.ensure_future(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])  # a cancel of the caller still propagates
        self._sample()
        wall = time.monotonic() - self._host0[0]
        times = psutil.cpu_times()
        idle = float(times.idle + getattr(times, "iowait", 0.0)) - self._host0[1]
        cores = os.cpu_count() or 1
        if wall > 0:
            self.host_busy_pct = max(0.0, min(100.0, 100 * (1 - idle / (wall * cores))))

    @property
    def cpu_s(self) -> float:
        """CPU seconds of the sampled processes and their reaped children (git, executors)."""
        return sum(self.cpu_of(p) for p in self._cpu0)

    def cpu_of(self, pid: int) -> float:
        """CPU seconds of one sampled process and its reaped children."""
        return self._cpu1.get(pid, self._cpu0.get(pid, 0.0)) - self._cpu0.get(pid, 0.0)


def start_results(
    program: str, shown: Sequence[str], scratch_prefix: str
) -> tuple[dict[str, Any], Path]:
    """The head of a run's results (the command as typed, when, on what) and a fresh
    scratch directory for it (printed, so a run that is stopped can be looked into)."""
    results: dict[str, Any] = {
        "command": " ".join([program, *(shlex.quote(a) for a in shown)]),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
    }
    tmp = Path(tempfile.mkdtemp(prefix=scratch_prefix))
    print(f"scratch: {tmp}", flush=True)
    return results, tmp


def write_results(
    results: dict[str, Any], out: Path, name: str, table: str, kept: Path | None
) -> None:
    """``<out>/<name>.json`` and ``.md``; the table printed, and where the files are."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (out / f"{name}.md").write_text(table, encoding="utf-8")
    print(table)
    print(f"written: {out / name}.json, .md" + (f"; scratch kept in {kept}" if kept else ""))


def end_run(results: dict[str, Any], began: float, tmp: Path, keep: bool) -> None:
    """The run's wall time into ``results``; its scratch directory removed unless kept."""
    results["total_s"] = round(time.monotonic() - began, 1)
    if not keep:
        shutil.rmtree(tmp, ignore_errors=True)
