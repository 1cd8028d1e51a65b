"""How fast can the load tool go? Drive a trivial endpoint on 127.0.0.1 and record it.

The load probe is only meaningful if its load generator outruns the service: the issue
asks for at least 2x the 1000 req/s target (2000 req/s) on loopback against an endpoint
that costs next to nothing. This starts such an endpoint (a raw asyncio protocol that
answers every request with a fixed ``200 ok``, in its own process), drives it with each
requested tool for a bounded time, and writes ``bench/results/loadtool_ceiling.json``.

The chosen tool (``wrk``) is driven through ``run_load_probe`` itself, so the number is
the ceiling of the probe as the gates run it (psutil sampling included). The endpoint
and the tool share the machine's cores, so every figure is a lower bound of the tool's
own ceiling.

    python bench/loadtool_ceiling.py                      # wrk only, 10 s
    python bench/loadtool_ceiling.py --tools wrk,hey,autocannon,locust

Other tools are looked up on PATH (``--autocannon``/``--locust`` point at a binary
elsewhere). Exit status 1 when the probe's tool stays below the required rate.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from activities.gates.loadprobe import LOAD_TOOL, LoadProbeSpec, run_load_probe  # noqa: E402

HOST = "127.0.0.1"
TARGET_RPS = 1000.0
REQUIRED_RPS = 2 * TARGET_RPS
RESULTS = ROOT / "bench" / "results" / "loadtool_ceiling.json"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"


# --- the trivial endpoint ---------------------------------------------------------------


class _FixedResponse(asyncio.Protocol):
    """Answers each request head (``\\r\\n\\r\\n``) with ``RESPONSE``; keep-alive, pipelining."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # TCP: always a Transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        heads = self.buffer.count(b"\r\n\r\n")
        if heads:
            self.transport.write(RESPONSE * heads)
            self.buffer = self.buffer[self.buffer.rfind(b"\r\n\r\n") + 4 :]


async def serve(port: int) -> None:
    """Run the trivial endpoint on 127.0.0.1:``port`` until SIGTERM."""
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    server = await loop.create_server(_FixedResponse, HOST, port, backlog=1024)
    async with server:
        await stop


def _endpoint_argv(port: int | str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--serve", str(port)]


@contextmanager
def _endpoint() -> Iterator[str]:
    """A running trivial endpoint (own process group), as its base URL."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(_endpoint_argv(port), start_new_session=True)
    try:
        deadline = time.monotonic() + 15
        while True:
            with socket.socket() as probe:
                if probe.connect_ex((HOST, port)) == 0:
                    break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("trivial endpoint did not start")
            time.sleep(0.05)
        yield f"http://{HOST}:{port}/"
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# --- drivers: one per candidate tool ----------------------------------------------------


def _run(argv: list[str], timeout: float) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited {done.returncode}: {done.stderr[-500:]}")
    return done.stdout


def bench_wrk(args: argparse.Namespace) -> dict[str, Any]:
    """wrk through the load probe itself: service start, health wait, sampling and all."""
    spec = LoadProbeSpec(
        command=_endpoint_argv("{port}"),
        health_path="/",
        duration_s=args.duration,
        warmup_s=1,
        connections=args.connections,
        threads=args.threads,
    )
    result = asyncio.run(run_load_probe(spec, ROOT, None))
    return {
        "tool": "wrk",
        "version": result.tool_version,
        "requests_per_s": result.requests_per_s,
        "p50_ms": result.latency_ms.p50,
        "p95_ms": result.latency_ms.p95,
        "p99_ms": result.latency_ms.p99,
        "errors": result.errors,
        "settings": f"--threads={args.threads} --connections={args.connections} (run_load_probe)",
    }


def bench_hey(args: argparse.Namespace) -> dict[str, Any]:
    with _endpoint() as url:
        out = _run(
            ["hey", "-z", f"{args.duration}s", "-c", str(args.connections), url],
            args.duration + 60,
        )
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p95 = re.search(r"95%+ in ([\d.]+) secs", out)
    p50 = re.search(r"50%+ in ([\d.]+) secs", out)
    p99 = re.search(r"99%+ in ([\d.]+) secs", out)
    return {
        "tool": "hey",
        "version": _dpkg_version("hey"),
        "requests_per_s": round(float(rps.group(1)), 1) if rps else None,
        "p50_ms": float(p50.group(1)) * 1000 if p50 else None,
        "p95_ms": float(p95.group(1)) * 1000 if p95 else None,
        "p99_ms": float(p99.group(1)) * 1000 if p99 else None,
        "settings": f"-c {args.connections}",
    }


def bench_autocannon(args: argparse.Namespace) -> dict[str, Any]:
    binary = args.autocannon or "autocannon"
    with _endpoint() as url:
        out = _run(
            [binary, "-j", "-d", str(args.duration), "-c", str(args.connections), url],
            args.duration + 60,
        )
    report = json.loads(out)
    latency = report["latency"]
    return {
        "tool": "autocannon",
        "version": _run([binary, "--version"], 30)
        .splitlines()[0]
        .strip()
        .removeprefix("autocannon v"),
        "requests_per_s": round(report["requests"]["total"] / args.duration, 1),
        "p50_ms": latency.get("p50"),
        "p95_ms": None,  # autocannon reports p90 and p97.5, no p95
        "p90_ms": latency.get("p90"),
        "p97_5_ms": latency.get("p97_5"),
        "p99_ms": latency.get("p99"),
        "settings": f"-c {args.connections}",
    }


LOCUSTFILE = """\
from locust import FastHttpUser, constant, task

class Hit(FastHttpUser):
    wait_time = constant(0)

    @task
    def root(self):
        self.client.get("/")
"""


def bench_locust(args: argparse.Namespace) -> dict[str, Any]:
    binary = args.locust or "locust"
    users = str(args.connections)
    with tempfile.TemporaryDirectory() as tmp, _endpoint() as url:
        locustfile = Path(tmp) / "locustfile.py"
        locustfile.write_text(LOCUSTFILE, encoding="utf-8")
        argv = [binary, "-f", str(locustfile), "--headless", "--only-summary"]
        argv += ["-u", users, "-r", users, "-t", f"{args.duration}s", "--host", url.rstrip("/")]
        argv += ["--csv", str(Path(tmp) / "run"), "--loglevel", "WARNING"]
        if args.locust_processes > 1:
            argv += ["--processes", str(args.locust_processes)]
        _run(argv, args.duration + 60)
        with (Path(tmp) / "run_stats.csv").open(encoding="utf-8") as fh:
            row = next(r for r in csv.DictReader(fh) if r["Name"] == "Aggregated")
    version = _run([binary, "--version"], 60).split()[1]
    return {
        "tool": "locust",
        "version": version,
        "requests_per_s": round(float(row["Requests/s"]), 1),
        "p50_ms": float(row["50%"]),
        "p95_ms": float(row["95%"]),
        "p99_ms": float(row["99%"]),
        "settings": f"FastHttpUser, {users} users, {args.locust_processes} process(es)",
    }


def _dpkg_version(package: str) -> str:
    with suppress(OSError, RuntimeError):
        return _run(["dpkg-query", "-W", "-f=${Version}", package], 30).strip()
    return "unknown"


DRIVERS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "wrk": bench_wrk,
    "hey": bench_hey,
    "autocannon": bench_autocannon,
    "locust": bench_locust,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # the endpoint itself
    parser.add_argument("--tools", default=LOAD_TOOL, help="comma-separated: " + ",".join(DRIVERS))
    parser.add_argument("--duration", type=int, default=10, choices=range(1, 61), metavar="S")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--locust-processes", type=int, default=1)
    parser.add_argument("--autocannon", help="path of the autocannon binary")
    parser.add_argument("--locust", help="path of the locust binary")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.serve is not None:
        asyncio.run(serve(args.serve))
        return 0

    results = []
    for tool in [t.strip() for t in args.tools.split(",") if t.strip()]:
        if tool not in DRIVERS:
            parser.error(f"unknown tool {tool!r}")
        binary = {"autocannon": args.autocannon, "locust": args.locust}.get(tool) or tool
        if tool != "wrk" and shutil.which(binary) is None:
            print(f"{tool}: not installed, skipped", file=sys.stderr)
            continue
        print(f"{tool}: driving the trivial endpoint for {args.duration}s ...", file=sys.stderr)
        row = DRIVERS[tool](args)
        rps = row["requests_per_s"] or 0.0
        row["sustains_2x_target"] = rps >= REQUIRED_RPS
        results.append(row)
        print(f"{tool}: {rps:.0f} req/s, p95 {row['p95_ms']} ms", file=sys.stderr)

    report = {
        "benchmark": "loadtool_ceiling",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "endpoint": "asyncio protocol, fixed 200 response, own process, 127.0.0.1",
        "duration_s": args.duration,
        "connections": args.connections,
        "target_rps": TARGET_RPS,
        "required_rps": REQUIRED_RPS,
        "chosen_tool": LOAD_TOOL,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))
    chosen = [r for r in results if r["tool"] == LOAD_TOOL]
    return 1 if any(not r["sustains_2x_target"] for r in chosen) else 0


if __name__ == "__main__":
    sys.exit(main())
