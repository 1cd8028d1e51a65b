"""Helpers of the bench smoke tests: run a bench command, collect what it left running."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[2]


def run_module(module: str, *args: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
    """``python -m <module> args`` from the checkout, bounded in time."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def scratch_of(stdout: str) -> str:
    """The scratch directory the run printed first (``scratch: /tmp/...``)."""
    first = stdout.splitlines()[0]
    assert first.startswith("scratch: "), stdout[:500]
    return first.removeprefix("scratch: ").strip()


def processes_naming(text: str) -> list[str]:
    """Command lines of live processes that mention ``text`` (e.g. the run's scratch dir) in
    their command line (the dev server's database) or environment (a worker's data dir)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            cmd = " ".join(proc.info["cmdline"] or ())
            env = " ".join(proc.environ().values()) if text not in cmd else ""
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if text in cmd or text in env:
            found.append(cmd)
    return found


def numbers(obj: Any) -> Iterator[float]:
    """Every int/float (not bool) anywhere in a JSON value."""
    if isinstance(obj, bool):
        return
    if isinstance(obj, (int, float)):
        yield float(obj)
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from numbers(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from numbers(value)
