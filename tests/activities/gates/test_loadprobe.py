"""The load probe against real services it starts itself, driven by the real wrk.

Each service is a tiny asyncio HTTP server (written to ``tmp_path``) that also starts a
child process, so "no strays" covers the whole tree, not just the leader. Probes are
2 s long; the file runs in about 20 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import sys
import time
from pathlib import Path

import psutil
import pytest
from pydantic import ValidationError

from activities.gates import loadprobe
from activities.gates.loadprobe import (
    Heartbeat,
    LoadProbeError,
    LoadProbeResult,
    LoadProbeSpec,
    LoadThresholds,
    LoadToolUnavailableError,
    ServiceNotHealthyError,
    check_load_thresholds,
    run_load_probe,
)
from activities.gates.loadprobe_models import LatencyMs

needs_wrk = pytest.mark.skipif(
    shutil.which("wrk") is None and not os.environ.get("CI"),
    reason="wrk not installed (apt-get install -y wrk); in CI a missing wrk fails instead",
)

SERVICE = r'''
"""Test service: GET /health -> 200 (503 when unhealthy), anything else -> 200 after DELAY s.

argv: PORT DELAY MODE, MODE in ok | unhealthy | stubborn (ignores SIGTERM and starts a
child that leaves the process group) | close (each body ends by closing the connection).
Every service starts a sleeping child: "child".
"""
import asyncio
import os
import signal
import subprocess
import sys
import time

if sys.argv[1] == "child":
    if sys.argv[2] == "stubborn":
        os.setsid()
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(600)
    sys.exit(0)

PORT, DELAY, MODE = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
if MODE == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
subprocess.Popen([sys.executable, __file__, "child", MODE])


async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1]
            if path == b"/health":
                status = b"503 Service Unavailable" if MODE == "unhealthy" else b"200 OK"
            else:
                status = b"200 OK"
                if DELAY:
                    await asyncio.sleep(DELAY)
            if MODE == "close":  # the body ends with the connection (Django's runserver)
                writer.write(b"HTTP/1.1 " + status + b"\r\nConnection: close\r\n\r\nok")
                await writer.drain()
                writer.close()
                return
            writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 2\r\n\r\nok")
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", PORT)
    async with server:
        await server.serve_forever()


asyncio.run(main())
'''


@pytest.fixture
def service(tmp_path: Path) -> Path:
    """The service script; its (unique) path marks every process it starts."""
    script = tmp_path / "probe_service.py"
    script.write_text(SERVICE, encoding="utf-8")
    return script


def spec_for(script: Path, delay: float = 0.0, mode: str = "ok", **kw: object) -> LoadProbeSpec:
    fields: dict[str, object] = {
        "command": [sys.executable, str(script), "{port}", str(delay), mode],
        "duration_s": 2,
        "warmup_s": 0,
        "connections": 8,
        "health_timeout_s": 15,
        "stop_grace_s": 2,
        "sample_interval_s": 0.25,
    }
    fields.update(kw)
    return LoadProbeSpec.model_validate(fields)


async def probe(
    script: Path, spec: LoadProbeSpec, beat: Heartbeat | None = None
) -> LoadProbeResult:
    """Run the probe with its logs (and wrk's Lua script) beside ``script``."""
    return await run_load_probe(spec, script.parent, beat, log_dir=script.parent / "probe")


def strays(script: Path) -> list[psutil.Process]:
    """Live (non-zombie) processes of this test: its services and its wrk runs.

    Both name a file in the test's own ``tmp_path`` (the service script, the Lua script),
    so probes of other tests or sessions running at the same time never count.
    """
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if proc.info["status"] != psutil.STATUS_ZOMBIE and str(script.parent) in cmdline:
            found.append(proc)
    return found


def assert_gone(result: LoadProbeResult, script: Path) -> None:
    assert len(result.service_pids) >= 2, "the leader and its child were both seen"
    assert strays(script) == []
    for pid in result.service_pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc = psutil.Process(pid)  # still there: must be a zombie, or a reused pid
            cmdline = " ".join(proc.cmdline()) if proc.status() != psutil.STATUS_ZOMBIE else ""
            assert str(script) not in cmdline


@needs_wrk
async def test_a_body_that_ends_with_the_connection_is_not_a_read_error(service: Path) -> None:
    # wrk counts one read error per such response; every response here was a complete 200.
    result = await probe(service, spec_for(service, mode="close"))

    assert result.requests > 0
    assert result.error_breakdown["read"] == 0 and result.errors == 0
    assert {c.figure: c for c in check_load_thresholds(result)}["error_rate"].passed
    assert_gone(result, service)


@needs_wrk
async def test_slow_endpoint_fails_p95(service: Path) -> None:
    result = await probe(service, spec_for(service, delay=0.3))

    assert result.requests > 0
    assert result.latency_ms.p95 >= 290
    checks = {c.figure: c for c in check_load_thresholds(result)}
    assert not checks["p95_ms"].passed
    assert "FAIL" in checks["p95_ms"].describe()
    assert_gone(result, service)


@needs_wrk
async def test_fast_endpoint_passes_latency(service: Path) -> None:
    beats: list[dict[str, object]] = []
    result = await probe(
        service, spec_for(service, warmup_s=1, paths=["/", "/items?page=2"]), beats.append
    )

    checks = {c.figure: c for c in check_load_thresholds(result)}
    assert checks["p95_ms"].passed, checks["p95_ms"].describe()
    assert checks["error_rate"].passed
    assert result.errors == 0
    assert result.requests_per_s > 0
    assert 0 < result.latency_ms.p50 <= result.latency_ms.p95 <= result.latency_ms.p99
    assert result.peak_rss_mib > 0
    assert result.peak_cpu_percent > 0
    assert result.mean_cpu_percent > 0
    assert result.samples >= 3
    assert 1.5 <= result.duration_s <= 3
    assert result.tool == "wrk"
    assert {"starting", "load", "done"} <= {b["stage"] for b in beats}
    assert_gone(result, service)


@needs_wrk
async def test_cancelled_probe_leaves_no_strays(service: Path) -> None:
    loading = asyncio.Event()

    def beat(info: dict[str, object]) -> None:
        if info["stage"] == "load":
            loading.set()

    task = asyncio.create_task(probe(service, spec_for(service, duration_s=60), beat))
    await asyncio.wait_for(loading.wait(), 20)
    await asyncio.sleep(0.5)
    assert strays(service), "service and wrk run while loading"
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 10
    assert strays(service) == []


@needs_wrk
async def test_stubborn_tree_is_killed(service: Path) -> None:
    """A service ignoring SIGTERM, with a child that left its process group, still goes."""
    spec = spec_for(service, mode="stubborn", duration_s=1, stop_grace_s=0.5)
    result = await probe(service, spec)

    assert result.requests > 0
    assert_gone(result, service)


@needs_wrk
async def test_never_healthy_service_fails_within_the_wait(service: Path) -> None:
    started = time.monotonic()
    with pytest.raises(ServiceNotHealthyError, match=r"within 2s \(last: HTTP 503\)"):
        await probe(service, spec_for(service, mode="unhealthy", health_timeout_s=2))
    assert time.monotonic() - started < 8
    assert strays(service) == []


@needs_wrk
async def test_service_that_exits_fails_fast(tmp_path: Path) -> None:
    spec = LoadProbeSpec(
        command=[sys.executable, "-c", "import sys; print('no database'); sys.exit(3)", "{port}"]
    )
    started = time.monotonic()
    with pytest.raises(ServiceNotHealthyError, match=r"exited with code 3.*no database"):
        await run_load_probe(spec, tmp_path, None, log_dir=tmp_path / "logs")
    assert time.monotonic() - started < 10
    assert (tmp_path / "logs" / "service.log").read_text().strip() == "no database"


@needs_wrk
async def test_missing_service_program_is_a_clear_error(tmp_path: Path) -> None:
    spec = LoadProbeSpec(command=["/nonexistent/service-binary", "{port}"])
    with pytest.raises(ServiceNotHealthyError, match="did not start"):
        await run_load_probe(spec, tmp_path, None)


async def test_missing_load_tool_says_how_to_install(
    service: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loadprobe, "LOAD_TOOL", "wrk-not-installed-here")
    with pytest.raises(LoadToolUnavailableError, match="apt-get install -y wrk"):
        await probe(service, spec_for(service))
    assert strays(service) == []


async def test_taken_port_is_refused_before_anything_starts(service: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(LoadProbeError, match=f"port {port} .* already in use"):
            await probe(service, spec_for(service, port=port))
    assert strays(service) == []


def test_thresholds_pass_and_fail_per_figure() -> None:
    result = LoadProbeResult(
        tool="wrk",
        tool_version="4.1.0",
        port=8000,
        paths=["/"],
        connections=32,
        duration_s=10,
        requests=12_000,
        errors=0,
        error_breakdown={},
        error_rate=0.0,
        requests_per_s=1200,
        latency_ms=LatencyMs(p50=20, p90=150, p95=250, p99=400, mean=40, max=900),
        peak_rss_mib=600,
        peak_cpu_percent=50,
        mean_cpu_percent=30,
        cpu_count=2,
        samples=20,
        service_pids=[1234],
    )
    verdict = {c.figure: c.passed for c in check_load_thresholds(result)}
    assert verdict == {
        "p95_ms": False,
        "requests_per_s": True,
        "peak_rss_mib": False,
        "peak_cpu_percent": True,
        "error_rate": True,
    }
    relaxed = LoadThresholds(max_p95_ms=300, max_rss_mib=1024, min_requests_per_s=1500)
    verdict = {c.figure: c.passed for c in check_load_thresholds(result, relaxed)}
    assert verdict["p95_ms"] and verdict["peak_rss_mib"] and not verdict["requests_per_s"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("paths", ['/"; os.exit()']),
        ("paths", ["http://10.0.0.1/"]),
        ("health_path", "health"),
        ("duration_s", 121),
        ("connections", 0),
    ],
)
def test_spec_refuses_bad_values(field: str, value: object) -> None:
    with pytest.raises(ValidationError, match=field):
        LoadProbeSpec.model_validate({"command": ["svc", "{port}"], field: value})


def test_spec_refuses_more_threads_than_connections() -> None:
    with pytest.raises(ValidationError, match="threads"):
        LoadProbeSpec(command=["svc", "--port={port}"], threads=4, connections=2)


def test_spec_needs_a_port_or_the_placeholder() -> None:
    with pytest.raises(ValidationError, match="port"):
        LoadProbeSpec(command=["uvicorn", "app:app"])
    assert LoadProbeSpec(command=["svc"], env={"PORT": "{port}"}).port is None
    assert LoadProbeSpec(command=["svc"], port=8080).port == 8080
