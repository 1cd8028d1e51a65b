"""Load probe for the optimize and verify gates: start the service, load it, measure, stop it.

The service runs from the clone with the configured argv in its own process group and a
scrubbed environment, bound to 127.0.0.1. Once its health URL answers, ``wrk`` (a
maintained C load generator, Debian package ``wrk``) drives keep-alive HTTP load at it
from a separate process, and a Lua ``done()`` hook prints the figures as one JSON line.
Meanwhile psutil samples the whole service tree (children included) for resident memory
and CPU. Whatever happens — success, error, timeout or asyncio cancellation — the
service's group gets SIGTERM, then SIGKILL, and every process of the tree the sampler
saw is killed too.

With ``windows`` > 1 the measured time is split into windows and the figures are their
medians, with the spread (max - min) beside them; with ``calibrate`` a trivial endpoint
(``calibration.py``) runs beside the service and gets a short window of the same load
before each service window, so the probe also says what this machine reaches right now.

Why wrk: on this project's 2-core machine it sustains about 10x the 1000 req/s target
against a trivial endpoint (``bench/loadtool_ceiling.py``, numbers in ``bench/README.md``),
so the figures describe the service, not the load generator.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil

from activities.gates.loadprobe_models import (
    PORT_PLACEHOLDER,
    PROBE_HOST,
    CalibrationFigures,
    FigureCheck,
    LatencyMs,
    LoadProbeResult,
    LoadProbeSpec,
    LoadThresholds,
    WindowFigures,
    check_load_thresholds,
)
from activities.process import _tail, run_process, scrubbed_env, start_process
from activities.sandbox import in_scope_network
from implflow.errors import (
    LOAD_PROBE_FAILED,
    LOAD_TOOL_UNAVAILABLE,
    SERVICE_NOT_HEALTHY,
    ImplflowError,
)
from implflow.settings import DEFAULT_ENV_ALLOWLIST

__all__ = [
    "CALIBRATION_SCRIPT",
    "LOAD_PROBE_FAILED",
    "LOAD_TOOL",
    "LOAD_TOOL_UNAVAILABLE",
    "SERVICE_NOT_HEALTHY",
    "FigureCheck",
    "Heartbeat",
    "LoadProbeError",
    "LoadProbeResult",
    "LoadProbeSpec",
    "LoadThresholds",
    "LoadToolUnavailableError",
    "ServiceNotHealthyError",
    "check_load_thresholds",
    "combine",
    "run_load_probe",
]

LOAD_TOOL = "wrk"
"""The load generator's executable, looked up on PATH."""

LOAD_TOOL_INSTALL = "apt-get install -y wrk"

_MARKER = "IMPLFLOW_WRK_RESULT "
_ERROR_KINDS = ("status", "connect", "read", "write", "timeout")
CALIBRATION_SCRIPT = Path(__file__).with_name("calibration.py")
"""The trivial endpoint a calibrating probe runs beside the service."""
_HEALTH_POLL_S = 0.1
_TOOL_SLACK_S = 30.0
"""How much longer than its ``-d`` the load tool may take before it counts as hung."""
_MIB = 1024 * 1024
_PEAK_MIN_INTERVAL_S = 0.25
"""The shortest sampling interval the peak CPU figure is taken over."""
_KILL_WAIT_S = 5.0
"""How long the probe waits for SIGKILLed processes to disappear."""

Heartbeat = Callable[[dict[str, object]], None]


class LoadProbeError(ImplflowError):
    """The probe could not produce figures. ``error_type`` is the ApplicationError type."""

    error_type = LOAD_PROBE_FAILED


class ServiceNotHealthyError(LoadProbeError):
    """The service exited, or never answered its health URL within the bounded wait."""

    error_type = SERVICE_NOT_HEALTHY


class LoadToolUnavailableError(LoadProbeError):
    """The load tool is not installed on this worker."""

    error_type = LOAD_TOOL_UNAVAILABLE


async def run_load_probe(
    spec: LoadProbeSpec,
    cwd: Path,
    heartbeat: Heartbeat | None,
    *,
    log_dir: Path | None = None,
) -> LoadProbeResult:
    """Start ``spec.command`` in ``cwd``, load it at 127.0.0.1 with wrk, measure, stop it.

    ``heartbeat`` (e.g. ``activity.heartbeat``) is called about once a second with the
    stage and progress. Logs (``service.log``, ``wrk.log``) go to ``log_dir`` when given,
    else to a temporary directory removed afterwards.

    Raises ``ServiceNotHealthyError`` when the service exits or is not healthy within
    ``spec.health_timeout_s``, ``LoadToolUnavailableError`` when wrk is missing, and
    ``LoadProbeError`` when the port is taken or wrk fails. On every path out, including
    ``asyncio.CancelledError``, the service's whole process tree is stopped first.
    """
    beat: Heartbeat = heartbeat or _no_heartbeat
    tool = shutil.which(LOAD_TOOL)
    if tool is None:
        raise LoadToolUnavailableError(
            f"load tool {LOAD_TOOL!r} not found on PATH (install it: {LOAD_TOOL_INSTALL})"
        )
    port = spec.port or _free_port()
    if _port_taken(port):
        raise LoadProbeError(
            f"port {port} on {PROBE_HOST} is already in use: the probe would measure "
            "another process (stop it or choose another port)"
        )
    with _work_dir(log_dir) as work:
        return await _probe(spec, cwd, beat, tool, port, work)


async def _probe(
    spec: LoadProbeSpec, cwd: Path, beat: Heartbeat, tool: str, port: int, work: Path
) -> LoadProbeResult:
    version = await _tool_version(tool)
    script = work / "probe.lua"
    script.write_text(_wrk_script(spec.paths), encoding="utf-8")
    calibration_script = work / "calibration.lua"
    calibration_script.write_text(_wrk_script(["/"]), encoding="utf-8")
    service_log = work / "service.log"
    argv = [arg.replace(PORT_PLACEHOLDER, str(port)) for arg in spec.command]
    env = scrubbed_env(
        spec.env_allowlist,
        {key: value.replace(PORT_PLACEHOLDER, str(port)) for key, value in spec.env.items()},
    )
    beat({"stage": "starting", "port": port})
    with service_log.open("ab") as log:
        service = await _start(argv, cwd, env, log, "service command")
        tree = _ServiceTree(service.pid)
        calibration: _Calibration | None = None
        try:
            await _wait_healthy(service, port, spec.health_path, spec, service_log, beat)
            close_delimited = await in_scope_network(_close_delimited, port, spec.health_path)
            tree.refresh()
            if spec.calibrate:
                calibration = await _Calibration.start(spec, tool, work, beat)
            if spec.warmup_s:
                beat({"stage": "warmup", "seconds": spec.warmup_s})
                await _run_wrk(
                    tool, spec, spec.warmup_s, port, script, work / "wrk-warmup.log", beat
                )
            windows: list[dict[str, float]] = []
            calibration_windows: list[dict[str, float]] = []
            for index in range(spec.window_count):
                if calibration is not None:
                    calibration_windows.append(
                        await calibration.window(tool, calibration_script, index, beat)
                    )
                name = "wrk.log" if spec.window_count == 1 else f"wrk-{index + 1}.log"
                windows.append(
                    await _measure(tool, spec, port, script, work / name, tree, beat, index)
                )
        finally:
            if calibration is not None:
                await calibration.stop()
            await _stop_tree(service, tree, spec.stop_grace_s)
    beat({"stage": "done", "port": port})
    return _result(spec, version, port, windows, calibration_windows, tree, close_delimited)


async def _start(
    argv: list[str], cwd: Path, env: dict[str, str], log: Any, what: str
) -> asyncio.subprocess.Process:
    try:
        # In the gate's sandbox (own group: killpg reaches every child), beside the load tool.
        return await start_process(
            argv, cwd=cwd, env=env, stdout=log, stderr=asyncio.subprocess.STDOUT
        )
    except OSError as err:  # missing program, not executable, bad cwd
        raise ServiceNotHealthyError(f"{what} {argv[0]!r} did not start: {err}") from err


class _Calibration:
    """The trivial endpoint (``calibration.py``), run beside the service for the whole probe."""

    def __init__(
        self, spec: LoadProbeSpec, port: int, proc: asyncio.subprocess.Process, log: Path
    ) -> None:
        self.spec = spec
        self.port = port
        self.proc = proc
        self.tree = _ServiceTree(proc.pid)
        self.log = log

    @classmethod
    async def start(
        cls, spec: LoadProbeSpec, tool: str, work: Path, beat: Heartbeat
    ) -> _Calibration:
        port = _free_port()
        log = work / "calibration.log"
        with log.open("ab") as out:
            proc = await _start(
                [sys.executable, str(CALIBRATION_SCRIPT), str(port)],
                work,
                scrubbed_env(DEFAULT_ENV_ALLOWLIST, {}),
                out,
                "calibration endpoint",
            )
        calibration = cls(spec, port, proc, log)
        try:
            await _wait_healthy(proc, port, "/", spec, log, beat)
            if spec.warmup_s:
                await _run_wrk(
                    tool,
                    spec,
                    1,
                    port,
                    work / "calibration.lua",
                    work / "wrk-calibration-warmup.log",
                    beat,
                )
        except BaseException:
            await calibration.stop()
            raise
        return calibration

    async def window(
        self, tool: str, script: Path, index: int, beat: Heartbeat
    ) -> dict[str, float]:
        beat({"stage": "calibration", "window": index + 1})
        log = self.log.parent / f"wrk-calibration-{index + 1}.log"
        return await _run_wrk(
            tool, self.spec, self.spec.calibration_window_s, self.port, script, log, beat
        )

    async def stop(self) -> None:
        await _stop_tree(self.proc, self.tree, 1.0)


async def _measure(
    tool: str,
    spec: LoadProbeSpec,
    port: int,
    script: Path,
    log: Path,
    tree: _ServiceTree,
    beat: Heartbeat,
    index: int,
) -> dict[str, float]:
    """One measured window, with the tree sampled alongside it."""
    beat({"stage": "load", "seconds": spec.window_s, "window": index + 1})
    tree.sample(count=False)  # the window's start: CPU deltas count from here
    sampler = asyncio.create_task(_sample_forever(tree, spec.sample_interval_s))
    try:
        summary = await _run_wrk(tool, spec, spec.window_s, port, script, log, beat)
    finally:
        sampler.cancel()
        # wait() rather than await: a cancellation of *this* task must not be swallowed.
        await asyncio.wait({sampler})
    tree.sample()  # the end of the window, so even a 1 s window has a CPU figure
    return summary


def _counted(s: dict[str, float], close_delimited: bool) -> dict[str, float]:
    """wrk's figures with the read errors a close-delimited response always causes left out.

    A body that ends when the server closes the connection (no length, ``Connection:
    close``: Django's runserver, HTTP/1.0 servers) gives wrk one read error per complete
    response; only read errors beyond the responses received are failed requests then.
    """
    if not close_delimited:
        return s
    return {**s, "read": max(0.0, s["read"] - s["requests"])}


def _window(s: dict[str, float]) -> WindowFigures:
    attempts = int(s["requests"]) + int(s["connect"]) + int(s["read"]) + int(s["write"])
    errors = sum(int(s[k]) for k in _ERROR_KINDS)
    duration_s = s["duration_us"] / 1e6
    return WindowFigures(
        duration_s=round(duration_s, 3),
        requests=int(s["requests"]),
        attempts=attempts,
        errors=min(errors, attempts),
        requests_per_s=round(s["requests"] / duration_s, 1) if duration_s > 0 else 0.0,
        latency_ms=LatencyMs(
            p50=s["p50"] / 1000,
            p90=s["p90"] / 1000,
            p95=s["p95"] / 1000,
            p99=s["p99"] / 1000,
            mean=round(s["mean"] / 1000, 3),
            max=s["max"] / 1000,
        ),
    )


def _calibration(windows: list[WindowFigures]) -> CalibrationFigures | None:
    if not windows:
        return None
    rps = [w.requests_per_s for w in windows]
    p95 = [w.latency_ms.p95 for w in windows]
    return CalibrationFigures(
        requests_per_s=round(statistics.median(rps), 1),
        p95_ms=round(statistics.median(p95), 3),
        requests_per_s_spread=round(max(rps) - min(rps), 1),
        p95_ms_spread=round(max(p95) - min(p95), 3),
        windows=windows,
    )


def _result(
    spec: LoadProbeSpec,
    version: str,
    port: int,
    summaries: list[dict[str, float]],
    calibration: list[dict[str, float]],
    tree: _ServiceTree,
    close_delimited: bool = False,
) -> LoadProbeResult:
    # wrk counts a response slower than --timeout both as a request and as a timeout, and
    # never completes a request that hit a socket error: the denominator is every attempt.
    summaries = [_counted(s, close_delimited) for s in summaries]
    breakdown = {k: sum(int(s[k]) for s in summaries) for k in _ERROR_KINDS}
    windows = [_window(s) for s in summaries]
    return _aggregate(
        windows,
        breakdown,
        tool_version=version,
        port=port,
        paths=list(spec.paths),
        connections=spec.connections,
        peak_rss_mib=round(tree.peak_rss / _MIB, 1),
        peak_cpu_percent=round(tree.peak_cpu_percent, 1),
        mean_cpu_percent=round(tree.mean_cpu_percent, 1),
        cpu_count=tree.cpu_count,
        samples=tree.samples,
        service_pids=sorted(tree.pids),
        calibration=_calibration([_window(s) for s in calibration]),
    )


def _aggregate(
    windows: list[WindowFigures], breakdown: dict[str, int], **rest: Any
) -> LoadProbeResult:
    """The probe's figures from its windows: medians and spreads, totals of the counts."""
    attempts = sum(w.attempts for w in windows)
    errors = min(sum(breakdown.values()), attempts)
    rps = [w.requests_per_s for w in windows]
    p95 = [w.latency_ms.p95 for w in windows]

    def median(values: list[float]) -> float:
        return round(statistics.median(values), 3) if values else 0.0

    latency = LatencyMs(
        p50=median([w.latency_ms.p50 for w in windows]),
        p90=median([w.latency_ms.p90 for w in windows]),
        p95=median(p95),
        p99=median([w.latency_ms.p99 for w in windows]),
        mean=median([w.latency_ms.mean for w in windows]),
        max=max((w.latency_ms.max for w in windows), default=0.0),
    )
    return LoadProbeResult(
        tool=LOAD_TOOL,
        duration_s=round(sum(w.duration_s for w in windows), 3),
        requests=sum(w.requests for w in windows),
        errors=errors,
        error_breakdown=breakdown,
        error_rate=round(errors / attempts, 6) if attempts else 1.0,
        requests_per_s=round(statistics.median(rps), 1) if rps else 0.0,
        latency_ms=latency,
        windows=windows,
        p95_ms_spread=round(max(p95) - min(p95), 3) if p95 else 0.0,
        requests_per_s_spread=round(max(rps) - min(rps), 1) if rps else 0.0,
        **rest,
    )


def combine(results: list[LoadProbeResult]) -> LoadProbeResult:
    """Several probes of one service as one: every window counts (a re-measurement)."""
    if len(results) == 1:
        return results[0]
    first = results[0]
    windows = [w for r in results for w in r.windows]
    breakdown = {k: sum(r.error_breakdown.get(k, 0) for r in results) for k in _ERROR_KINDS}
    calibration = [w for r in results if r.calibration for w in r.calibration.windows]
    return _aggregate(
        windows,
        breakdown,
        tool_version=first.tool_version,
        port=first.port,
        paths=first.paths,
        connections=first.connections,
        peak_rss_mib=max(r.peak_rss_mib for r in results),
        peak_cpu_percent=max(r.peak_cpu_percent for r in results),
        mean_cpu_percent=round(statistics.mean(r.mean_cpu_percent for r in results), 1),
        cpu_count=first.cpu_count,
        samples=sum(r.samples for r in results),
        service_pids=sorted({pid for r in results for pid in r.service_pids}),
        calibration=_calibration(calibration),
    )


# --- the service ------------------------------------------------------------------------


async def _wait_healthy(
    service: asyncio.subprocess.Process,
    port: int,
    health_path: str,
    spec: LoadProbeSpec,
    service_log: Path,
    beat: Heartbeat,
) -> None:
    """Poll the health URL until it answers 2xx/3xx; fail early if the service exits."""
    url = f"http://{PROBE_HOST}:{port}{health_path}"
    started = time.monotonic()
    deadline = started + spec.health_timeout_s
    last = "no answer yet"
    next_beat = started
    while True:
        if service.returncode is not None:
            raise ServiceNotHealthyError(
                f"service exited with code {service.returncode} before {url} answered; "
                f"log tail: {_tail(service_log)!r}"
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ServiceNotHealthyError(
                f"service did not answer 2xx/3xx at {url} within {spec.health_timeout_s:g}s "
                f"(last: {last}); log tail: {_tail(service_log)!r}"
            )
        # From inside the sandbox's network namespace: its 127.0.0.1 is the service's.
        healthy, last = await in_scope_network(_get, url, min(1.0, remaining))
        if healthy:
            return
        if time.monotonic() >= next_beat:
            beat({"stage": "health", "waited_s": round(time.monotonic() - started, 1)})
            next_beat = time.monotonic() + 1.0
        await asyncio.sleep(_HEALTH_POLL_S)


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""Loopback requests must never go through a proxy named in the worker's environment."""


def _get(url: str, timeout: float) -> tuple[bool, str]:
    """(answered 2xx/3xx, what happened) for one GET; never raises."""
    try:
        # The URL is always http://127.0.0.1:<port><validated path>.
        with _NO_PROXY.open(url, timeout=timeout) as response:
            return 200 <= response.status < 400, f"HTTP {response.status}"
    except urllib.error.HTTPError as err:
        return False, f"HTTP {err.code}"
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        return False, str(reason)


def _close_delimited(port: int, path: str, timeout: float = 2.0) -> bool:
    """Whether the service ends each response by closing the connection (no length, no
    chunks), asked as a keep-alive client asks; never raises."""
    connection = http.client.HTTPConnection(PROBE_HOST, port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return bool(response.will_close and response.length is None and not response.chunked)
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


class _ServiceTree:
    """The service's processes (leader and descendants) with their peak RSS and CPU."""

    def __init__(self, pid: int) -> None:
        self.root_pid = pid
        self.procs: dict[tuple[int, float], psutil.Process] = {}
        self.cpu_count = _cpu_count()
        self.peak_rss = 0
        self.peak_cpu_percent = 0.0
        self.samples = 0
        self._cpu: dict[tuple[int, float], float] = {}
        self._first_t: float | None = None
        self._last_t = 0.0
        self._cpu_used = 0.0
        self._idle_s = 0.0
        with contextlib.suppress(psutil.Error):
            self._add(psutil.Process(pid))

    @property
    def pids(self) -> set[int]:
        return {pid for pid, _ in self.procs}

    @property
    def mean_cpu_percent(self) -> float:
        measured = self._last_t - (self._first_t or 0.0) - self._idle_s
        if self._first_t is None or measured <= 0:
            return 0.0
        return 100.0 * self._cpu_used / measured / self.cpu_count

    def _add(self, proc: psutil.Process) -> tuple[int, float]:
        key = (proc.pid, proc.create_time())  # create_time tells a reused pid apart
        self.procs.setdefault(key, proc)
        return key

    def refresh(self) -> list[tuple[tuple[int, float], psutil.Process]]:
        """Every live process of the tree, adding descendants that appeared since."""
        for key, proc in list(self.procs.items()):
            if key[0] == self.root_pid or _alive(proc):
                with contextlib.suppress(psutil.Error):
                    for child in proc.children(recursive=True):
                        with contextlib.suppress(psutil.Error):
                            self._add(child)
        return [(key, proc) for key, proc in self.procs.items() if _alive(proc)]

    def sample(self, count: bool = True) -> None:
        """One RSS sum and one CPU-time delta over the live tree.

        ``count=False`` starts a measured window: the CPU used since the last sample (while
        the probe measured something else) is not counted, nor the time it took.
        """
        now = time.monotonic()
        rss = 0
        used = 0.0
        cpu: dict[tuple[int, float], float] = {}
        for key, proc in self.refresh():
            try:
                with proc.oneshot():
                    times = proc.cpu_times()
                    rss += proc.memory_info().rss
            except psutil.Error:
                continue
            cpu[key] = times.user + times.system
            # A process born since the last sample contributes all its CPU time so far.
            used += max(cpu[key] - self._cpu.get(key, 0.0), 0.0)
        self.samples += 1
        self.peak_rss = max(self.peak_rss, rss)
        if self._first_t is None:
            self._first_t = now
        elif not count:
            self._idle_s += now - self._last_t
        elif now > self._last_t:
            # CPU times tick in 10 ms steps: an interval much shorter than a sampling period
            # (the end of a window, just after the sampler's last beat) would read 200 %.
            if now - self._last_t >= _PEAK_MIN_INTERVAL_S:
                self.peak_cpu_percent = max(
                    self.peak_cpu_percent, 100.0 * used / (now - self._last_t) / self.cpu_count
                )
            self._cpu_used += used
        self._cpu = cpu
        self._last_t = now


async def _sample_forever(tree: _ServiceTree, interval_s: float) -> None:
    # psutil reads a few /proc files per process: well under a millisecond, so the
    # samples run on the loop rather than in a thread that could outlive cancellation.
    while True:
        await asyncio.sleep(interval_s)
        tree.sample()


async def _stop_tree(
    service: asyncio.subprocess.Process, tree: _ServiceTree, grace_s: float
) -> None:
    """SIGTERM the group and every known tree process, wait ``grace_s``, SIGKILL the rest.

    Runs inside ``finally`` and so also on cancellation; a second cancellation while it
    waits cuts the grace short but never skips the SIGKILL.
    """
    group = service.pid
    members = [proc for _, proc in tree.refresh()]
    _signal_group(group, signal.SIGTERM)
    for proc in members:
        # Processes that left the group (setsid) still belong to the tree.
        if _pgid(proc) != group:
            _signal(proc, signal.SIGTERM)
    try:
        deadline = time.monotonic() + grace_s
        # Exits of processes that are not our children have nothing to await: poll.
        while time.monotonic() < deadline and (  # noqa: ASYNC110
            service.returncode is None or any(_alive(proc) for proc in members)
        ):
            await asyncio.sleep(0.05)
    finally:
        _signal_group(group, signal.SIGKILL)
        for proc in members:
            if _alive(proc):
                _signal(proc, signal.SIGKILL)
        with contextlib.suppress(TimeoutError, ProcessLookupError):
            await asyncio.wait_for(service.wait(), _KILL_WAIT_S)  # reap the leader: no zombie
        # SIGKILL is delivered asynchronously: return only once the tree is really gone.
        deadline = time.monotonic() + _KILL_WAIT_S
        while time.monotonic() < deadline and any(_alive(proc) for proc in members):  # noqa: ASYNC110
            await asyncio.sleep(0.02)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _signal(proc: psutil.Process, sig: int) -> None:
    with contextlib.suppress(psutil.Error):
        proc.send_signal(sig)  # psutil checks the pid was not reused


def _pgid(proc: psutil.Process) -> int | None:
    try:
        return os.getpgid(proc.pid)
    except ProcessLookupError:
        return None


def _alive(proc: psutil.Process) -> bool:
    """Running and not a zombie (a zombie has exited; only its parent has not reaped it)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


# --- the load tool ----------------------------------------------------------------------


def _wrk_script(paths: list[str]) -> str:
    """Lua for wrk: round robin over ``paths`` and one JSON line of figures at the end."""
    # Paths are validated to hold no quote or backslash, so they are safe Lua literals.
    literals = ", ".join(f'"{path}"' for path in paths)
    return (
        f"local paths = {{{literals}}}\n"
        + """\
local n = 0
if #paths > 1 then
  request = function()
    n = n % #paths + 1
    return wrk.format(nil, paths[n])
  end
end

done = function(summary, latency, requests)
  local e = summary.errors
  local mean = latency.mean
  if mean ~= mean then mean = 0 end  -- NaN when nothing was measured
  io.write(string.format(
    '"""
        + _MARKER
        + """{"duration_us":%.0f,"requests":%.0f,"status":%.0f,"connect":%.0f,' ..
    '"read":%.0f,"write":%.0f,"timeout":%.0f,"p50":%.0f,"p90":%.0f,"p95":%.0f,' ..
    '"p99":%.0f,"mean":%.3f,"max":%.0f}\\n',
    summary.duration, summary.requests, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(95),
    latency:percentile(99), mean, latency.max))
end
"""
    )


async def _run_wrk(
    tool: str,
    spec: LoadProbeSpec,
    seconds: int,
    port: int,
    script: Path,
    log_path: Path,
    beat: Heartbeat,
) -> dict[str, float]:
    """One wrk run in its own process group; the figures its Lua hook printed."""
    argv = [
        tool,
        f"--threads={spec.threads}",
        f"--connections={spec.connections}",
        f"--duration={seconds}s",
        f"--timeout={spec.request_timeout_s}s",
        f"--script={script}",
        f"http://{PROBE_HOST}:{port}{spec.paths[0]}",
    ]
    started = time.monotonic()

    def progress(info: dict[str, object]) -> None:
        beat({"stage": "load", "elapsed_s": round(time.monotonic() - started, 1), **info})

    try:
        result = await run_process(
            argv,
            cwd=script.parent,
            env=scrubbed_env(DEFAULT_ENV_ALLOWLIST, {}),
            log_path=log_path,
            timeout_s=seconds + spec.request_timeout_s + _TOOL_SLACK_S,
            heartbeat=progress,
            heartbeat_every_s=1.0,
        )
    except FileNotFoundError as err:
        raise LoadToolUnavailableError(f"{tool}: {err} (install it: {LOAD_TOOL_INSTALL})") from err
    except TimeoutError as err:
        raise LoadProbeError(f"load tool hung: {err}") from err
    output = await asyncio.to_thread(log_path.read_text, encoding="utf-8", errors="replace")
    line = next((ln for ln in output.splitlines() if ln.startswith(_MARKER)), None)
    if result.returncode != 0 or line is None:
        raise LoadProbeError(
            f"{LOAD_TOOL} exited with code {result.returncode} without figures: {result.tail!r}"
        )
    figures = json.loads(line[len(_MARKER) :])
    return {key: float(value) for key, value in figures.items()}


async def _tool_version(tool: str) -> str:
    """``debian/4.1.0-3+b2 [epoll]`` from wrk's banner (``--version`` exits 1 by design)."""
    proc = await asyncio.create_subprocess_exec(
        tool,
        "--version",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    first = out.decode("utf-8", "replace").splitlines()[:1] or ["unknown"]
    return first[0].split("Copyright")[0].removeprefix("wrk").strip() or "unknown"


# --- small helpers ----------------------------------------------------------------------


def _no_heartbeat(_info: dict[str, object]) -> None:
    return None


@contextlib.contextmanager
def _work_dir(log_dir: Path | None) -> Iterator[Path]:
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        yield log_dir
        return
    with tempfile.TemporaryDirectory(prefix="implflow-loadprobe-") as tmp:
        yield Path(tmp)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((PROBE_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((PROBE_HOST, port))
        except OSError:
            return True
        return False


def _cpu_count() -> int:
    """Cores this worker may run on (affinity), the 100 % of the CPU figures."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return psutil.cpu_count() or 1
