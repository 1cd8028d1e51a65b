"""Git work off the event loop, shared by task and plan activities (activities/git_threads.py)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from unittest.mock import MagicMock

import pytest
from temporalio.exceptions import ApplicationError

from activities.git_threads import GitThreads
from activities.plans import PlanActivities
from activities.workspace import GitError
from implflow.errors import GIT_FAILED
from implflow.settings import Settings


async def test_git_work_runs_on_its_own_threads_and_heartbeats_while_it_runs() -> None:
    threads = GitThreads(slots=1)
    beats: list[dict[str, object]] = []

    def slow() -> str:
        time.sleep(2.3)  # past two heartbeat cadences (1 s)
        return threading.current_thread().name

    name = await threads.run(slow, beat=beats.append)
    assert name.startswith("implflow-git")
    assert len(beats) >= 2


async def test_a_git_error_is_a_retryable_git_failure() -> None:
    def broken() -> None:
        raise GitError("fetch origin", "fatal: unable to access")

    with pytest.raises(ApplicationError) as err:
        await GitThreads(slots=1).git(broken)
    assert err.value.type == GIT_FAILED and not err.value.non_retryable
    assert "unable to access" in str(err.value)


def test_plan_activities_git_work_is_sized_to_the_slots(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, max_concurrent_activities=12)
    assert PlanActivities(settings, MagicMock()).threads.pool._max_workers == 14
