"""The implflow worker: workflows + activities on the ``implflow`` task queue.

Stops gracefully on SIGTERM/SIGINT: no new tasks are taken, running activities
get ``IMPLFLOW_SHUTDOWN_GRACE_S`` seconds, then are cancelled (which kills their
executor process groups). Anything unfinished is retried by another worker.

This module is the composition root: a worker is ``workflows/`` and ``activities/``
joined to a client and the settings, so whatever builds it must import every layer.
The rest of the package (contracts, settings, client, CLI) sits below both layers, and
the CLI's ``worker`` and ``demo`` commands reach them only through here. It stays inside
the package rather than in the top-level ``worker.py`` because the installed console
script (``implflow worker``, ``implflow demo``) needs it: moving it out would not remove
that edge, only route it through a module named ``worker`` at the top of site-packages.
"""

from __future__ import annotations

import asyncio
import signal
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Worker

from activities import ImplActivities
from activities.plans import PlanActivities
from implflow.connection import connect
from implflow.errors import ImplflowError
from implflow.exit import hard_exit
from implflow.logs import configure_logging, get_logger
from implflow.server import ensure_search_attributes
from implflow.settings import Settings
from workflows import WORKFLOWS
from workflows.plan import PlanWorkflow

log = get_logger("implflow.worker")

HEARTBEAT_THROTTLE = timedelta(seconds=2)
"""Heartbeats reach the server at most this often: cancellation latency is about this long."""


def build_worker(client: Client, settings: Settings, task_queue: str | None = None) -> Worker:
    """A worker for ``client``; tests use this with their own client and task queue."""
    acts = ImplActivities(settings)
    return Worker(
        client,
        task_queue=task_queue or settings.task_queue,
        workflows=[*WORKFLOWS, PlanWorkflow],
        activities=[
            acts.prepare_task,
            acts.run_phase,
            acts.run_gate,
            acts.open_pull_request,
            acts.send_reminder,
            *PlanActivities(settings, client).all(),
        ],
        max_concurrent_activities=settings.max_concurrent_activities,
        graceful_shutdown_timeout=timedelta(seconds=settings.shutdown_grace_s),
        # A cancel reaches an activity only in the answer to a heartbeat the SDK sends; its
        # default throttle (80 % of the heartbeat timeout) made a cancel wait ~48 s.
        max_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
        # A killed worker's sticky queue holds a workflow's next task this long before another
        # worker may take it (SDK default 10 s: measured as the bulk of kill -9 recovery).
        sticky_queue_schedule_to_start_timeout=timedelta(seconds=2),
        default_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
    )


async def run_worker(
    settings: Settings | None = None,
    stop: asyncio.Event | None = None,
    client: Client | None = None,
    handle_signals: bool = True,
) -> None:
    """Connect, run until ``stop`` is set or SIGTERM/SIGINT arrives, then shut down gracefully."""
    settings = settings or Settings()
    client = client or await connect()
    await ensure_search_attributes(client)
    stop = stop or asyncio.Event()
    if handle_signals:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    worker = build_worker(client, settings)
    log.info(
        "worker started",
        task_queue=settings.task_queue,
        default_executor=settings.executor,
        address=client.service_client.config.target_host,
        namespace=client.namespace,
    )
    async with worker:
        await stop.wait()
        log.info("worker stopping", grace_s=settings.shutdown_grace_s)
    log.info("worker stopped")


def main() -> None:
    """Entry point of ``python worker.py``: exits non-zero with one line on a setup error."""
    settings = Settings()
    configure_logging(settings.log_format, settings.log_level)
    code = 0
    try:
        asyncio.run(run_worker(settings))
    except (ImplflowError, RuntimeError) as err:
        log.error("worker could not start", error=str(err))
        code = 1
    hard_exit(code)  # see its docstring: avoids a crash at interpreter finalization
