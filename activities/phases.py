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
import contextlib
import functools
import json
import os
import shutil
import time
import urllib.request
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.checkpoints import (
    NO_RESULT,
    AttemptBeat,
    Checkpointer,
    attempt_failure,
    checkpoint_every_s,
    checkpoint_refs,
    restore,
)
from activities.executors import ExecutionContext, ExecutionOutcome, ExecutorRegistry
from activities.git_threads import GitThreads
from activities.process import CheckoutLock
from activities.pull_request import open_pull_request, pr_command
from activities.sandbox import SandboxPolicy
from activities.workspace import (
    GitError,
    RoundKey,
    TaskCheckout,
    check_repo,
    is_race_lost,
    record_round,
    task_dir,
)
from implflow.errors import (
    EXECUTOR_UNAVAILABLE,
    GATE_CONFIG_INVALID,
    GIT_PUSH_FAILED,
    INVALID_INPUT,
    PHASE_TIMEOUT,
)
from implflow.layout import ARTIFACT_FILES, GATES_FILE, LOGS_DIR, relative_repo
from implflow.models import (
    AttemptFailure,
    AttemptReport,
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

FINAL_CHECKPOINT_S = 60.0
"""How long a failed or cancelled attempt may take to save its final checkpoint."""
RETRY_REPORT_TIMEOUT_S = 5.0
"""Bound on telling the workflow a retried attempt started (``_report_retry``)."""


class ImplActivities:
    """The activities of ``ImplementationWorkflow``, bound to one worker's settings.

    The worker's executors are built from the same settings, once, on first use.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.executors = ExecutorRegistry(settings)
        self.sandbox = SandboxPolicy.from_settings(settings)
        """Where executor and gate programs run (``IMPLFLOW_SANDBOX``), decided at start."""
        self.threads = GitThreads(settings.max_concurrent_activities)
        """Git work (clone, fetch, checkpoints, commit, push) runs here, off the event loop."""

    @activity.defn(name="prepare_task")
    async def prepare_task(self, inp: PrepareInput) -> PrepareResult:
        """Resolve the executor (input, else the worker default) and check it and the repo."""
        name = (inp.executor or self.settings.executor).strip().lower()
        self.executors.get(name)  # raises a non-retryable error naming what to install or set
        refused = relative_repo(inp.repo)
        if refused:
            raise ApplicationError(refused, type=INVALID_INPUT, non_retryable=True)
        if name == "shell":
            _check_commands(inp.commands)
        if inp.pull_request:  # found now, not after every phase ran and was paid for
            pr_command(self.settings, "pull_request")
        kind, base = await self.threads.run(check_repo, inp.repo)
        # A reused workflow id: an earlier run's branch is moved aside (kept), never reused.
        async with self._checkout_lock(inp.workflow_id):
            claim = await self.threads.git(
                TaskCheckout(inp.repo, inp.workflow_id, self.settings.folder("workspaces")).claim
            )
        log.info(
            "task prepared",
            workflow_id=inp.workflow_id,
            executor=name,
            repo_kind=kind,
            branch=claim.branch,
            earlier_run_branch=claim.moved_to,
        )
        return PrepareResult(
            executor=name,
            repo_kind=kind,
            # A branch a plan prepared (stacked on the task's dependencies) is where this task
            # starts: gates pin their config and compare changed files against it.
            base_commit=claim.adopted or base,
            branch=claim.branch,
            earlier_run_branch=claim.moved_to,
        )

    @activity.defn(name="run_phase")
    async def run_phase(self, inp: PhaseInput) -> PhaseResult:
        """Run one phase round on the task branch; exactly one commit per round."""
        async with self._checkout_lock(inp.workflow_id):
            return await self._run_phase(inp)

    def _task_env(self, workdir: Path) -> dict[str, str]:
        """The task's environment (built by its gates) on the agent's PATH, if there is one."""
        from activities.environments import EnvironmentStore, env_vars_for

        return env_vars_for(workdir, EnvironmentStore.from_settings(self.settings))

    def _checkout_lock(self, workflow_id: str) -> CheckoutLock:
        """Held while an activity works on the task's checkout; a new holder first ends
        the process groups a killed worker left running there (see ``process.py``)."""
        return CheckoutLock(
            task_dir(workflow_id, self.settings.folder("workspaces")), heartbeat=activity.heartbeat
        )

    async def _run_phase(self, inp: PhaseInput) -> PhaseResult:
        info = activity.info()
        bound = log.bind(
            workflow_id=inp.workflow_id, phase=inp.phase.name, round=inp.round, attempt=info.attempt
        )
        started = time.monotonic()
        executor = self.executors.get(inp.executor)
        checkout = TaskCheckout(
            inp.repo,
            inp.workflow_id,
            self.settings.folder("workspaces"),
            run_id=info.workflow_run_id,
        )
        key = RoundKey(inp.workflow_id, inp.phase.name, inp.round)
        beat = AttemptBeat(inp.phase.name, inp.round, info.attempt)
        tip = inp.branch_tip if info.attempt == 1 else None  # a retry always fetches
        start = await self.threads.git(checkout.sync, tip, beat=beat)
        recorded = await self.threads.git(checkout.recorded, key, beat=beat)
        if recorded is not None:
            bound.info("phase round already committed; returning the recorded outcome")
            await self.threads.run(checkout.drop, checkpoint_refs(checkout, key), beat=beat)
            return recorded.phase_result(inp, attempt=info.attempt, branch=checkout.branch)
        # What an interrupted attempt of this round left goes back first (checkpoints.py).
        restored = await self.threads.git(
            restore, checkout, key, info.attempt, info.heartbeat_details, beat=beat
        )
        checkpoints = beat.checkpointer = Checkpointer(checkout, key, info.attempt, restored)
        if info.attempt > 1:
            lost = checkpoints.failures[-1] if checkpoints.failures else None
            if lost is not None and lost.error == NO_RESULT:  # killed: the server knows why
                cause = await _server_last_failure(inp.workflow_id, info.activity_id)
                if cause:
                    checkpoints.failures[-1] = lost.model_copy(update={"error": cause})
            await _report_retry(inp, info.attempt, checkpoints.failures)
        pin = inp.model_copy(update={"earlier_work": restored.note}) if restored.note else inp
        scratch = task_dir(inp.workflow_id, self.settings.folder("workspaces"))
        context_file = scratch / "context" / f"{inp.phase.name}-r{inp.round}.json"
        context_file.parent.mkdir(parents=True, exist_ok=True)
        context_file.write_text(pin.model_dump_json(indent=2), encoding="utf-8")
        bound.info(
            "phase started",
            executor=executor.name,
            branch=checkout.branch,
            restored_files=len(restored.files),
        )
        beat({"state": "started"})
        ctx = ExecutionContext(
            phase_input=pin,
            attempt=info.attempt,
            workdir=checkout.dir,
            context_file=context_file,
            log_dir=checkout.dir / LOGS_DIR,
            env_allowlist=tuple(self.settings.env_allowlist),
            heartbeat=beat,
            earlier=restored.earlier_work(),
            task_env=await asyncio.to_thread(self._task_env, checkout.dir),
        )
        try:
            # The agent sees its checkout and scratch space only; network on for its model API.
            with self.sandbox.scope(writable=(checkout.dir, context_file.parent), network=True):
                outcome = await self._checkpointing(
                    executor.execute(ctx), checkpoints, checkpoint_every_s(inp.phase.heartbeat_s)
                )
        except BaseException as err:
            # Failed, timed out or cancelled: its tree, logs and spend go to the checkpoint.
            failure = attempt_failure(err, info.attempt)
            bound.warning("phase attempt failed", error=failure.error)
            await self._final_checkpoint(checkpoints, failure, beat)
            if isinstance(err, TimeoutError):
                raise ApplicationError(str(err), type=PHASE_TIMEOUT) from None
            raise
        record = RoundRecord(
            phase=inp.phase.name,
            round=inp.round,
            attempt=info.attempt,
            executor=executor.name,
            outcome=outcome.outcome,
            summary=outcome.summary[:2000],
            duration_s=round(time.monotonic() - started, 3),
            artifacts=[_relative(a, checkout.dir) for a in outcome.artifacts]
            + [doc for doc in ARTIFACT_FILES if (checkout.dir / doc).is_file()],
            usage=outcome.usage,
            failed_attempts=checkpoints.failures,
        )
        drop = [checkpoints.ref] if checkpoints.on_origin else []
        try:
            commit = await self.threads.run(
                functools.partial(checkout.commit_round, key, start, record, drop=drop), beat=beat
            )
        except GitError as err:
            # Lost a race: another attempt pushed this round first, and its outcome stands.
            # Any other failure leaves the commit in this checkout: a retry here only pushes;
            # one elsewhere finds the tree and this attempt's spend in the final checkpoint.
            if is_race_lost(err):
                await self.threads.git(checkout.sync, beat=beat)
                again = await self.threads.git(checkout.recorded, key, beat=beat)
                if again is not None:
                    return again.phase_result(inp, attempt=info.attempt, branch=checkout.branch)
            failed = ApplicationError(str(err), *_spent(outcome), type=GIT_PUSH_FAILED)
            await self._final_checkpoint(checkpoints, attempt_failure(failed, info.attempt), beat)
            raise failed from None
        bound.info("phase committed", outcome=outcome.outcome, commit=commit[:12])
        if inp.record:
            where = await self.threads.git(
                record_round,
                checkout,
                key,
                start,
                commit,
                record.summary,
                self.settings.folder("cassettes"),
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
        async with self._checkout_lock(inp.workflow_id):
            return await self._run_gate(inp)

    async def _run_gate(self, inp: GateInput) -> GateResult:
        # Tools only a gate needs.
        from activities.environments import EnvironmentStore
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
        checkout = TaskCheckout(inp.repo, inp.workflow_id, self.settings.folder("workspaces"))
        key = RoundKey(inp.workflow_id, inp.phase, inp.round)
        start = await self.threads.git(checkout.sync, inp.branch_tip if info.attempt == 1 else None)
        recorded = await self.threads.git(checkout.recorded_verdict, key)
        if recorded is not None:
            bound.info("gate already recorded; returning its verdict")
            return GateResult.model_validate(recorded)

        def beat(details: dict[str, object]) -> None:
            activity.heartbeat({"gate": inp.phase, "round": inp.round, **details})

        beat({"state": "started"})
        if inp.base_commit:  # the agent may not loosen its own gates: the task's base decides
            await self.threads.git(checkout.pin_file, GATES_FILE, inp.base_commit)
        try:
            # The target's tests and service: the checkout writable, no network but loopback.
            with self.sandbox.scope(writable=(checkout.dir,), network=False):
                verdict = await run_checks(
                    inp.phase,
                    checkout.dir,
                    inp.round,
                    inp.thresholds,
                    base_ref=inp.base_commit,
                    baseline=inp.baseline or None,
                    heartbeat=beat,
                    # The target's dependencies, isolated per task and cached by their hash.
                    environments=EnvironmentStore.from_settings(self.settings),
                    # Fixed once the design is approved: the agent cannot change how it is
                    # measured.
                    service_command=inp.service_command,
                    service_health_path=inp.service_health_path,
                )
        except GateConfigError as err:
            raise ApplicationError(str(err), type=GATE_CONFIG_INVALID, non_retryable=True) from None
        # A record cannot name the commit it is part of: ``recorded_verdict`` adds it.
        record = verdict.model_dump(mode="json", exclude={"commit"})
        try:
            commit = await self.threads.run(checkout.commit_gate, key, start, record)
        except GitError as err:
            raise ApplicationError(str(err), type=GIT_PUSH_FAILED) from None
        bound.info("gate done", passed=verdict.passed, commit=commit[:12])
        return verdict.model_copy(update={"commit": commit})

    async def _checkpointing(
        self, work: Awaitable[T], checkpoints: Checkpointer, every_s: float
    ) -> T:
        """Await the executor; meanwhile checkpoint its tree whenever it changed."""
        task = asyncio.ensure_future(work)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=every_s)
                if done:
                    return task.result()
                await self.threads.run(checkpoints.save)
        finally:
            if not task.done():  # cancelled meanwhile: the executor stops its process group
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task

    async def _final_checkpoint(
        self, checkpoints: Checkpointer, failure: AttemptFailure, beat: AttemptBeat
    ) -> None:
        """Save the failed attempt's tree and record; never hides the attempt's own error."""
        try:
            await asyncio.wait_for(
                self.threads.run(checkpoints.save, failure, beat=beat), FINAL_CHECKPOINT_S
            )
        except BaseException as err:  # the original failure is re-raised by the caller
            log.warning("final checkpoint not saved", error=str(err) or type(err).__name__)
        beat({})  # the failure also travels with the last heartbeat

    @activity.defn(name="open_pull_request")
    async def open_pull_request(self, inp: PullRequestInput) -> str:
        """Run ``IMPLFLOW_PR_COMMAND`` in the task's checkout; returns its last output line."""
        command = pr_command(self.settings, "pull_request")
        checkout = TaskCheckout(inp.repo, inp.workflow_id, self.settings.folder("workspaces"))
        await self.threads.git(checkout.sync)
        scratch = task_dir(inp.workflow_id, self.settings.folder("workspaces"))
        return await open_pull_request(
            command, inp, checkout.dir, scratch / "pull-request.log", self.settings
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
        # The same reminder retried (or re-sent after a worker crash mid-POST) carries the
        # same key: receivers de-duplicate on it (at-least-once delivery, exactly-once effect).
        key = f"{inp.workflow_id}:{inp.phase}:{inp.waiting_since.isoformat()}:overdue"
        body = json.dumps(
            {
                "event": "approval_overdue",
                "idempotency_key": key,
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
            headers={"Content-Type": "application/json", "Idempotency-Key": key},
            method="POST",
        )

        def post() -> int:
            with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310
                return int(resp.status)

        status = await asyncio.to_thread(post)
        log.info("reminder webhook sent", workflow_id=inp.workflow_id, status=status)


def _check_commands(commands: dict[str, list[str]]) -> None:
    """Every phase command's program exists on this worker (found before review, not after
    the design approval); a missing one fails the task at once, naming the phase."""
    for phase, argv in commands.items():
        program = argv[0] if argv else ""
        if "/" in program and not program.startswith("/"):
            continue  # relative to the checkout (a script of the repo, or one a phase writes)
        found = (
            Path(program).is_file() and os.access(program, os.X_OK)
            if "/" in program
            else shutil.which(program) is not None
        )
        if not found:
            raise ApplicationError(
                f"commands.{phase}: {program!r} is not installed on this worker "
                "(not on its PATH); install it or give its full path",
                type=EXECUTOR_UNAVAILABLE,
                non_retryable=True,
            )


def _spent(outcome: ExecutionOutcome) -> list[dict[str, object]]:
    """An outcome's usage as failure details (what a failed push must not drop)."""
    return [outcome.usage.model_dump(mode="json")] if outcome.usage else []


def _relative(path: str, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return path


async def _server_last_failure(workflow_id: str, activity_id: str) -> str | None:
    """The server's last failure of this (pending) activity: why an attempt that could not
    say so itself ended (``activity Heartbeat timeout`` after a ``kill -9``)."""
    try:
        handle = activity.client().get_workflow_handle(workflow_id)
        desc = await asyncio.wait_for(handle.describe(), RETRY_REPORT_TIMEOUT_S)
    except Exception as err:
        log.warning("could not ask the server why the last attempt ended", error=str(err)[:300])
        return None
    for pending in desc.raw_description.pending_activities:
        if pending.activity_id == activity_id and pending.last_failure.message:
            cause = " ".join(pending.last_failure.message.split())
            return f"{NO_RESULT}: {cause}"[:200]
    return None


async def _report_retry(inp: PhaseInput, attempt: int, failures: list[AttemptFailure]) -> None:
    """Tell the workflow this retried attempt started, and what the earlier ones ran into, so
    ``status`` and the UI show it while the attempt runs (not only once the round is over).
    Best effort: a report that cannot be sent is logged, never a reason to fail the attempt.
    """
    report = AttemptReport(
        phase=inp.phase.name,
        round=inp.round,
        attempt=attempt,
        failures=[f.line()[:300] for f in failures][-20:],
    )
    try:
        handle = activity.client().get_workflow_handle(inp.workflow_id)
        await asyncio.wait_for(handle.signal("attempt_retried", report), RETRY_REPORT_TIMEOUT_S)
    except Exception as err:
        log.warning("retry not reported to the workflow", error=str(err)[:300])
