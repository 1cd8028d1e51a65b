"""Phase activities: every side effect of a task lives here, never in the workflow.

``ImplActivities`` receives the worker's settings in its constructor; its
methods are the activities, registered under stable names:

- ``prepare_task``  — fail fast on a repo or executor this worker cannot use;
- ``run_phase``     — one phase round: hand the context to the executor, heartbeat,
                      honour cancellation, report a short result;
- ``send_reminder`` — an approval is overdue: log it, POST the webhook if configured.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.executors import ExecutionContext, get_executor
from activities.workspace import check_repo, head_commit, resolve_workdir, task_dir
from implflow.models import PhaseInput, PhaseResult, PrepareInput, PrepareResult, ReminderInput
from implflow.settings import Settings

log = structlog.stdlib.get_logger("implflow.activities")


class ImplActivities:
    """The activities of ``ImplementationWorkflow``, bound to one worker's settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @activity.defn(name="prepare_task")
    async def prepare_task(self, inp: PrepareInput) -> PrepareResult:
        """Resolve the executor (input, else the worker default) and check it and the repo."""
        name = (inp.executor or self.settings.executor).strip().lower()
        get_executor(name)  # raises a non-retryable error naming what to install or set
        kind = check_repo(inp.repo)
        log.info("task prepared", workflow_id=inp.workflow_id, executor=name, repo_kind=kind)
        return PrepareResult(executor=name, repo_kind="url" if kind == "url" else "path")

    @activity.defn(name="run_phase")
    async def run_phase(self, inp: PhaseInput) -> PhaseResult:
        """Run one phase round with the chosen executor."""
        info = activity.info()
        bound = log.bind(
            workflow_id=inp.workflow_id, phase=inp.phase.name, round=inp.round, attempt=info.attempt
        )
        started = time.monotonic()
        executor = get_executor(inp.executor)
        workdir = await asyncio.to_thread(
            resolve_workdir, inp.repo, inp.workflow_id, self.settings.workspaces
        )
        scratch = task_dir(inp.workflow_id, self.settings.workspaces)
        context_file = scratch / "context" / f"{inp.phase.name}-r{inp.round}.json"
        context_file.parent.mkdir(parents=True, exist_ok=True)
        context_file.write_text(inp.model_dump_json(indent=2), encoding="utf-8")

        def beat(details: dict[str, object]) -> None:
            activity.heartbeat({"phase": inp.phase.name, "round": inp.round, **details})

        bound.info("phase started", executor=executor.name, workdir=str(workdir))
        beat({"state": "started"})
        try:
            outcome = await executor.execute(
                ExecutionContext(
                    phase_input=inp,
                    attempt=info.attempt,
                    workdir=workdir,
                    context_file=context_file,
                    log_dir=scratch / "logs",
                    env_allowlist=tuple(self.settings.env_allowlist),
                    heartbeat=beat,
                )
            )
        except asyncio.CancelledError:
            bound.warning("phase cancelled; executor stopped")
            raise
        except TimeoutError as err:
            raise ApplicationError(str(err), type="PhaseTimeout") from None
        duration = time.monotonic() - started
        commit = await asyncio.to_thread(head_commit, workdir)
        bound.info("phase finished", outcome=outcome.outcome, duration_s=round(duration, 2))
        return PhaseResult(
            phase=inp.phase.name,
            round=inp.round,
            attempt=info.attempt,
            outcome=outcome.outcome,
            summary=outcome.summary[:2000],
            commit=commit,
            duration_s=round(duration, 3),
            artifacts=outcome.artifacts,
        )

    @activity.defn(name="send_reminder")
    async def send_reminder(self, inp: ReminderInput) -> None:
        """Tell people an approval is overdue: always a log line, a webhook when configured."""
        log.warning(
            "approval overdue",
            workflow_id=inp.workflow_id,
            phase=inp.phase,
            waiting_since=inp.waiting_since.isoformat(),
            deadline=inp.deadline.isoformat(),
            on_expiry=inp.on_expiry,
        )
        if self.settings.webhook_url is None:
            return
        body = json.dumps(
            {
                "event": "approval_overdue",
                "workflow_id": inp.workflow_id,
                "title": inp.title,
                "phase": inp.phase,
                "waiting_since": inp.waiting_since.isoformat(),
                "deadline": inp.deadline.isoformat(),
                "on_expiry": inp.on_expiry,
            }
        ).encode()
        request = urllib.request.Request(  # noqa: S310 - URL is an operator-set http(s) setting
            str(self.settings.webhook_url),
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )

        def post() -> int:
            with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310
                return int(resp.status)

        status = await asyncio.to_thread(post)
        log.info("reminder webhook sent", workflow_id=inp.workflow_id, status=status)
