"""The baseline: bare Temporal workflows of no-op activities, and their worker.

``python -m bench.bare`` runs a worker on task queue ``bench-bare`` with the same worker
settings as ``python worker.py`` (``IMPLFLOW_MAX_CONCURRENT_ACTIVITIES``, the graceful
shutdown time, implflow's pydantic data converter), so a comparison on one server measures
what implflow's activity bodies and workflow add, not a different configuration.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from datetime import timedelta

from pydantic import BaseModel
from temporalio import activity
from temporalio.worker import Worker

from bench.harness import BARE_TASK_QUEUE, WORKER_READY_LINE


class StepInput(BaseModel):
    """What a no-op step receives (shaped like a phase input: a name and a round)."""

    workflow_id: str
    step: str
    round: int = 1


class StepResult(BaseModel):
    step: str
    round: int


class BareInput(BaseModel):
    """``steps`` no-op activities; with ``approval_after`` set, a wait for signal ``approve``
    after that many steps (the shape of an implflow approval point)."""

    steps: int = 9
    approval_after: int | None = None


class Approve(BaseModel):
    by: str = ""


@activity.defn(name="bare_step")
async def bare_step(inp: StepInput) -> StepResult:
    """Does nothing: the cost of one activity round trip through Temporal."""
    return StepResult(step=inp.step, round=inp.round)


async def serve() -> None:
    """Run the bare worker until SIGTERM/SIGINT (graceful shutdown as implflow's worker)."""
    from bench.bare_workflows import BareWorkflow
    from implflow.connection import connect
    from implflow.settings import Settings

    settings = Settings()
    client = await connect()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    worker = Worker(
        client,
        task_queue=BARE_TASK_QUEUE,
        workflows=[BareWorkflow],
        activities=[bare_step],
        max_concurrent_activities=settings.max_concurrent_activities,
        graceful_shutdown_timeout=timedelta(seconds=settings.shutdown_grace_s),
    )
    async with worker:
        print(WORKER_READY_LINE, BARE_TASK_QUEUE, flush=True)
        await stop.wait()
    print("worker stopped", flush=True)


if __name__ == "__main__":
    from implflow.exit import hard_exit

    asyncio.run(serve())
    sys.stdout.flush()
    hard_exit(0)
