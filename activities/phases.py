"""Phase activities: every side effect of a task lives here, never in the workflow.

``ImplActivities`` receives the worker's settings in its constructor; its
methods are the activities, registered under stable names:

- ``prepare_task``      — fail fast on a repo or executor this worker cannot use;
- ``run_phase``         — one phase round on the task branch: hand the context to the
                          executor, heartbeat, honour cancellation, commit, report briefly;
- ``run_gate``          — the phase's quality checks; reports committed, a small verdict back;
- ``open_pull_request`` — run the configured pull-request command at the end;
- ``send_reminder``     — an approval is overdue: log it, POST the webhook if configured.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.executors import ExecutionContext, ExecutorRegistry
from activities.process import run_process, scrubbed_env
from activities.workspace import (
    GitError,
    RoundKey,
    TaskCheckout,
    check_repo,
    record_round,
    task_dir,
)
from implflow.errors import (
    EXECUTOR_UNAVAILABLE,
    GATE_CONFIG_INVALID,
    GIT_FAILED,
    GIT_PUSH_FAILED,
    PHASE_TIMEOUT,
    PULL_REQUEST_FAILED,
)
from implflow.layout import GATES_FILE, LOGS_DIR
from implflow.models import (
    GateInput,
    GateResult,
    PhaseInput,
    PhaseResult,
    PrepareInput,
    PrepareResult,
    PullRequestInput,
    ReminderInput,
    RoundRecord,
)
from implflow.settings import Settings

log = structlog.stdlib.get_logger("implflow.activities")
T = TypeVar("T")


class ImplActivities:
    """The activities of ``ImplementationWorkflow``, bound to one worker's settings.

    The worker's executors are built from the same settings, once, on first use.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.executors = ExecutorRegistry(settings)

    @activity.defn(name="prepare_task")
    async def prepare_task(self, inp: PrepareInput) -> PrepareResult:
        """Resolve the executor (input, else the worker default) and check it and the repo."""
        name = (inp.executor or self.settings.executor).strip().lower()
        self.executors.get(name)  # raises a non-retryable error naming what to install or set
        kind, base = await asyncio.to_thread(check_repo, inp.repo)
        log.info("task prepared", workflow_id=inp.workflow_id, executor=name, repo_kind=kind)
        return PrepareResult(executor=name, repo_kind=kind, base_commit=base)

    @activity.defn(name="run_phase")
    async def run_phase(self, inp: PhaseInput) -> PhaseResult:
        """Run one phase round on the task branch; exactly one commit per round."""
        info = activity.info()
        bound = log.bind(
            workflow_id=inp.workflow_id, phase=inp.phase.name, round=inp.round, attempt=info.attempt
        )
        started = time.monotonic()
        executor = self.executors.get(inp.executor)
        checkout = TaskCheckout(inp.repo, inp.workflow_id, self.settings.workspaces)
        key = RoundKey(inp.workflow_id, inp.phase.name, inp.round)
        start = await self._git(checkout.sync)
        recorded = await self._git(checkout.recorded, key)
        if recorded is not None:
            bound.info("phase round already committed; returning the recorded outcome")
            return recorded.phase_result(inp, attempt=info.attempt, branch=checkout.branch)
        scratch = task_dir(inp.workflow_id, self.settings.workspaces)
        context_file = scratch / "context" / f"{inp.phase.name}-r{inp.round}.json"
        context_file.parent.mkdir(parents=True, exist_ok=True)
        context_file.write_text(inp.model_dump_json(indent=2), encoding="utf-8")

        def beat(details: dict[str, object]) -> None:
            activity.heartbeat({"phase": inp.phase.name, "round": inp.round, **details})

        bound.info("phase started", executor=executor.name, branch=checkout.branch)
        beat({"state": "started"})
        try:
            outcome = await executor.execute(
                ExecutionContext(
                    phase_input=inp,
                    attempt=info.attempt,
                    workdir=checkout.dir,
                    context_file=context_file,
                    log_dir=checkout.dir / LOGS_DIR,
                    env_allowlist=tuple(self.settings.env_allowlist),
                    heartbeat=beat,
                )
            )
        except asyncio.CancelledError:
            bound.warning("phase cancelled; executor stopped")
            raise
        except TimeoutError as err:
            raise ApplicationError(str(err), type=PHASE_TIMEOUT) from None
        record = RoundRecord(
            phase=inp.phase.name,
            round=inp.round,
            attempt=info.attempt,
            executor=executor.name,
            outcome=outcome.outcome,
            summary=outcome.summary[:2000],
            duration_s=round(time.monotonic() - started, 3),
            artifacts=[_relative(a, checkout.dir) for a in outcome.artifacts],
            usage=outcome.usage,
        )
        try:
            commit = await asyncio.to_thread(checkout.commit_round, key, start, record)
        except GitError as err:
            # Another attempt may have pushed this round first: then its outcome stands.
            await self._git(checkout.sync)
            again = await self._git(checkout.recorded, key)
            if again is not None:
                return again.phase_result(inp, attempt=info.attempt, branch=checkout.branch)
            raise ApplicationError(str(err), type=GIT_PUSH_FAILED) from None
        bound.info("phase committed", outcome=outcome.outcome, commit=commit[:12])
        if inp.record:
            where = await self._git(
                record_round,
                checkout,
                key,
                start,
                commit,
                record.summary,
                self.settings.cassettes,
            )
            bound.info("round recorded to cassette", cassette=str(where))
        committed = record.model_copy(update={"commit": commit})
        return committed.phase_result(
            inp, attempt=info.attempt, branch=checkout.branch, reused=False
        )

    @activity.defn(name="run_gate")
    async def run_gate(self, inp: GateInput) -> GateResult:
        """Run the phase's checks on the task branch; reports are committed, not returned.

        An invalid ``.implflow/gates.toml`` fails the task at once (``GATE_CONFIG_INVALID``,
        never retried): only a person fixing the file on the main line helps.
        """
        # Tools only a gate needs.
        from activities.gates.config import GateConfigError
        from activities.gates.runner import run_gate as run_checks

        info = activity.info()
        bound = log.bind(
            workflow_id=inp.workflow_id,
            phase=inp.phase,
            round=inp.round,
            attempt=info.attempt,
            step="gate",
        )
        checkout = TaskCheckout(inp.repo, inp.workflow_id, self.settings.workspaces)
        key = RoundKey(inp.workflow_id, inp.phase, inp.round)
        start = await self._git(checkout.sync)
        recorded = await self._git(checkout.recorded_verdict, key)
        if recorded is not None:
            bound.info("gate already recorded; returning its verdict")
            return GateResult.model_validate(recorded)

        def beat(details: dict[str, object]) -> None:
            activity.heartbeat({"gate": inp.phase, "round": inp.round, **details})

        beat({"state": "started"})
        if inp.base_commit:  # the agent may not loosen its own gates: the task's base decides
            await self._git(checkout.pin_file, GATES_FILE, inp.base_commit)
        try:
            verdict = await run_checks(
                inp.phase,
                checkout.dir,
                inp.round,
                inp.thresholds,
                base_ref=inp.base_commit,
                baseline=inp.baseline or None,
                heartbeat=beat,
            )
        except GateConfigError as err:
            raise ApplicationError(str(err), type=GATE_CONFIG_INVALID, non_retryable=True) from None
        # A record cannot name the commit it is part of: ``recorded_verdict`` adds it.
        record = verdict.model_dump(mode="json", exclude={"commit"})
        try:
            commit = await asyncio.to_thread(checkout.commit_gate, key, start, record)
        except GitError as err:
            raise ApplicationError(str(err), type=GIT_PUSH_FAILED) from None
        bound.info("gate done", passed=verdict.passed, commit=commit[:12])
        return verdict.model_copy(update={"commit": commit})

    async def _git(self, fn: Callable[..., T], *args: Any) -> T:
        """Git work off the event loop; git failures become retryable activity errors."""
        try:
            return await asyncio.to_thread(fn, *args)
        except GitError as err:
            raise ApplicationError(str(err), type=GIT_FAILED) from None

    @activity.defn(name="open_pull_request")
    async def open_pull_request(self, inp: PullRequestInput) -> str:
        """Run ``IMPLFLOW_PR_COMMAND`` in the task's checkout; returns its last output line."""
        command = self.settings.pr_command
        if not command:
            raise ApplicationError(
                "pull_request was asked for but this worker has no IMPLFLOW_PR_COMMAND "
                '(e.g. ["gh", "pr", "create", "--head", "{branch}", "--title", "{title}", '
                '"--body", "{description}"])',
                type=EXECUTOR_UNAVAILABLE,
                non_retryable=True,
            )
        checkout = TaskCheckout(inp.repo, inp.workflow_id, self.settings.workspaces)
        await self._git(checkout.sync)
        values = {
            "branch": inp.branch,
            "title": inp.title,
            "description": inp.description,
            "workflow_id": inp.workflow_id,
        }
        # Each placeholder fills one argv element: task text never becomes shell syntax.
        argv = [_fill(part, values) for part in command]
        result = await run_process(
            argv,
            cwd=checkout.dir,
            env=scrubbed_env(self.settings.env_allowlist, {}),
            log_path=task_dir(inp.workflow_id, self.settings.workspaces) / "pull-request.log",
            timeout_s=240,
            heartbeat=activity.heartbeat,
        )
        if result.returncode != 0:
            raise ApplicationError(
                f"pull request command exited {result.returncode}: {result.tail[-300:]}",
                type=PULL_REQUEST_FAILED,
            )
        lines = result.tail.strip().splitlines()
        return lines[-1][:500] if lines else ""

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


def _relative(path: str, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return path


def _fill(template: str, values: dict[str, str]) -> str:
    """Replace ``{name}`` placeholders; any other brace text stays as it is."""
    for key, value in values.items():
        template = template.replace("{" + key + "}", value)
    return template
