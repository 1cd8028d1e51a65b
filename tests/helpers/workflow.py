"""Start and follow ImplementationWorkflow on the time-skipping server."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from implflow.models import (
    PHASES,
    ImplementationInput,
    ImplementationResult,
    TaskState,
    TaskStatus,
)
from tests.helpers import (
    AGENT,
    new_id,
)

ALL = list(PHASES)


def task(repo: Path, **extra: Any) -> ImplementationInput:
    data: dict[str, Any] = {
        "title": "Auth API",
        "description": "Create a secure authentication API with login, logout and refresh.",
        "repo": str(repo),
        "executor": "shell",
        "commands": dict.fromkeys(ALL, AGENT),
    }
    data.update(extra)
    return ImplementationInput.model_validate(data)


async def start(
    env: WorkflowEnvironment,
    tq: str,
    inp: ImplementationInput | dict[str, Any],
    workflow_id: str | None = None,
) -> WorkflowHandle[Any, ImplementationResult]:
    return await env.client.start_workflow(
        "ImplementationWorkflow",
        inp,
        id=workflow_id or new_id(),
        task_queue=tq,
        result_type=ImplementationResult,
    )


async def wait_for(
    handle: WorkflowHandle[Any, Any],
    state: TaskState,
    phase: str | None = None,
    timeout: float = 30.0,
) -> TaskStatus:
    deadline = time.monotonic() + timeout
    while True:
        st = await handle.query("status", result_type=TaskStatus)
        if st.state == state and (phase is None or st.current_phase == phase):
            return st
        assert time.monotonic() < deadline, f"never reached {state}/{phase}; last: {st}"
        await asyncio.sleep(0.1)
