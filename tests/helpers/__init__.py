"""Helpers shared by the test modules (no test module imports another)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from temporalio.worker import Worker

from implflow.models import PhaseInput, PhaseSpec

AGENT = [sys.executable, "-m", "implflow.demo_agent"]


WorkerFactory = Callable[..., AbstractAsyncContextManager[tuple[Worker, str]]]


def git_out(cwd: Path, *args: str, check: bool = True) -> str:
    """``git args`` in ``cwd``: its stripped output."""
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=check)
    return done.stdout.strip()


def shell_phase(
    repo: Path,
    script: str | None,
    *,
    workflow_id: str = "wf-1",
    name: str = "implement",
    **spec: Any,
) -> PhaseInput:
    """One round of a shell-executor phase whose command runs the Python ``script``."""
    return PhaseInput(
        workflow_id=workflow_id,
        title="t",
        description="d",
        repo=str(repo),
        executor="shell",
        phase=PhaseSpec(name=name, **spec),
        round=1,
        command=[sys.executable, "-c", script] if script is not None else None,
    )


def git_repo(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "init", "-q", "-b", "main"], cwd=path, check=True)
    (path / "README.md").write_text("target\n")
    subprocess.run([*git, "add", "."], cwd=path, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "init"], cwd=path, check=True)
    return path


def branch_file(repo: Path, workflow_id: str, path: str) -> str:
    """A file as committed on the task branch ``implflow/<workflow id>``."""
    return subprocess.run(
        ["git", "show", f"implflow/{workflow_id}:{path}"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def branch_log(repo: Path, workflow_id: str) -> list[str]:
    """Subjects of the task branch's own commits, oldest first."""
    out = subprocess.run(
        ["git", "log", "--reverse", "--format=%s", f"main..implflow/{workflow_id}"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.splitlines()


def alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (killed, not yet reaped by init) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def marked(marker: str) -> list[int]:
    """Host pids of live processes with ``marker`` on their command line.

    A pid a sandboxed command reports is its PID namespace's, not the host's: look here.
    """
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker in cmdline.read_text() and alive(int(cmdline.parent.name)):
                found.append(int(cmdline.parent.name))
        except (OSError, ValueError):
            continue
    return found


def new_id(prefix: str = "wf") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"
