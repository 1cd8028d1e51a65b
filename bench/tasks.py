"""Task inputs the benchmarks and the fault suite start (shell executor, gates off)."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from implflow.models import PHASES


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def phase_specs(
    names: Sequence[str], *, heartbeat_s: float = 60.0, attempts: int = 3, initial_s: float = 1.0
) -> list[dict[str, Any]]:
    return [
        {
            "name": n,
            "heartbeat_s": heartbeat_s,
            "retry": {
                "maximum_attempts": attempts,
                "initial_interval_s": initial_s,
                "maximum_interval_s": max(initial_s, 10.0),
            },
        }
        for n in names
    ]


def plain_task(
    repo: Path,
    *,
    phases: Sequence[str] = PHASES,
    approval_after: Sequence[str] = (),
    commands: dict[str, list[str]] | None = None,
    heartbeat_s: float = 60.0,
    attempts: int = 3,
) -> dict[str, Any]:
    """A shell-executor task with gates off: with no commands every phase is "nothing to do",
    so what it costs is implflow's own work per phase (git, records, Temporal)."""
    return {
        "title": "bench task",
        "description": "benchmark: implflow's own cost per phase",
        "repo": str(repo),
        "executor": "shell",
        "gates": "off",
        "approval": {"after": list(approval_after)},
        "phases": phase_specs(phases, heartbeat_s=heartbeat_s, attempts=attempts),
        "commands": commands or {},
    }


PHASE_SCRIPT = """
import os, sys, time, uuid
name, marker, sleep_s = sys.argv[1], sys.argv[2], float(sys.argv[3])
env = os.environ
phase, rnd, attempt = env["IMPLFLOW_PHASE"], env["IMPLFLOW_ROUND"], env["IMPLFLOW_ATTEMPT"]
ledger = os.path.join(os.path.dirname(env["IMPLFLOW_CONTEXT_FILE"]), name)
run = uuid.uuid4().hex[:12]
def note(what):
    with open(ledger, "a") as fh:
        fh.write(f"{what} {phase} {rnd} {attempt} {run} {time.time():.6f}\\n")
note("start")
time.sleep(sleep_s)
with open(f"{phase}-attempt{attempt}.txt", "w") as fh:
    fh.write(f"{phase} round {rnd} attempt {attempt} run {run}\\n")
note("end")
"""
"""A phase command (``python -c``: no file to make visible inside the sandbox). It notes its
start and end in a ledger beside the phase's context file (the task's scratch space, which
the sandbox keeps writable, outside the checkout), sleeps, and writes one file named after
its attempt into the checkout. ``marker`` is only there so the process can be found by its
command line; each invocation has its own id (a pid means little in a PID namespace)."""

LedgerRow = tuple[str, str, int, int, str, float]
"""``(start|end, phase, round, attempt, invocation id, epoch seconds)``."""


def phase_command(ledger_name: str, marker: str, sleep_s: float) -> list[str]:
    return [sys.executable, "-c", PHASE_SCRIPT, ledger_name, marker, f"{sleep_s:.3f}"]


SKIP_DIRS = frozenset({".git", "checkout", "node_modules", ".venv", "objects"})
"""Trees a ledger is never in (checkouts, repositories): a search that enters them would
take seconds once a run holds hundreds of tasks."""


def find_named(root: Path, name: str, max_depth: int = 6) -> list[Path]:
    """Files called ``name`` under ``root``, at most ``max_depth`` levels down, outside
    ``SKIP_DIRS`` and bare repositories (``*.git``)."""
    found: list[Path] = []
    level = [root]
    for _ in range(max_depth):
        below: list[Path] = []
        for directory in level:
            try:
                entries = list(os.scandir(directory))
            except OSError:
                continue
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    if entry.name not in SKIP_DIRS and not entry.name.endswith(".git"):
                        below.append(Path(entry.path))
                elif entry.name == name:
                    found.append(Path(entry.path))
        level = below
    return found


def read_ledgers(root: Path, ledger_name: str) -> list[LedgerRow]:
    """Every ledger line of ``ledger_name`` under ``root`` (each worker root has its own
    scratch space), oldest first."""
    rows: list[LedgerRow] = []
    for ledger in find_named(root, ledger_name):
        for line in ledger.read_text(encoding="utf-8").splitlines():
            parts = line.split()
            if len(parts) == 6:
                rows.append(
                    (parts[0], parts[1], int(parts[2]), int(parts[3]), parts[4], float(parts[5]))
                )
    return sorted(rows, key=lambda r: r[5])
