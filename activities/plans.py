"""Plan activities: every side effect of ``PlanWorkflow`` lives here.

``PlanActivities`` receives the worker's settings and its Temporal client (the plan follows
its tasks through their ``status`` queries); its methods are the activities:

- ``prepare_plan``        — check the repo, resolve the base commit, check every task's
                            specialist, and find the tasks an earlier run of this plan id
                            already started (they are followed, never started twice);
- ``prepare_task_branch`` — create a task's branch ``implflow/<plan>.<task>`` in the origin,
                            from its dependencies' result branches (merged when several) or the
                            plan's base: ``ImplementationWorkflow`` then starts from it;
- ``observe_tasks``       — long poll: return as soon as one of the running tasks changed
                            (state, phase, what it waits for, cost) or closed, with its result;
- ``integrate_plan``      — merge the task branches in dependency order into
                            ``implflow/plan/<plan>``, then run the repository's tests once more;
- ``open_plan_pull_request`` — run the worker's pull-request command in a checkout of
                            ``implflow/plan/<plan>`` as pushed (``{branch}`` is that branch).

Merges never conflict on implflow's own records (``.implflow/``): every task writes the same
file names there, so the branch being merged into keeps its own (a merge driver that keeps
"ours", configured in the plan's disposable clone only).
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import structlog
from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities.git_threads import GitThreads
from activities.process import CheckoutLock, run_process, scrubbed_env
from activities.pull_request import open_pull_request, pr_command
from activities.specialists import list_specialists
from activities.workspace import IDENTITY, GitError, check_repo, git, origin_url
from implflow.errors import (
    GATE_CONFIG_INVALID,
    INVALID_INPUT,
    REPO_UNAVAILABLE,
)
from implflow.layout import GATES_FILE, IMPLFLOW_DIR, REPORTS_DIR, relative_repo
from implflow.models import Decision, ImplementationResult, PullRequestInput, TaskState, TaskStatus
from implflow.plans import (
    IntegrateInput,
    IntegrateResult,
    ObserveInput,
    ObserveResult,
    PreparePlanInput,
    PreparePlanResult,
    TaskBranchInput,
    TaskBranchResult,
    TaskRun,
    candidate_figures,
    integration_branch,
)
from implflow.settings import Settings

log = structlog.stdlib.get_logger("implflow.activities.plans")

KEEP_OURS_DRIVER = "implflow-keep-ours"
_CLOSED = {
    WorkflowExecutionStatus.COMPLETED: TaskState.COMPLETED,
    WorkflowExecutionStatus.FAILED: TaskState.FAILED,
    WorkflowExecutionStatus.CANCELED: TaskState.CANCELLED,
    WorkflowExecutionStatus.TERMINATED: TaskState.FAILED,
    WorkflowExecutionStatus.TIMED_OUT: TaskState.FAILED,
}
_WAITING = {
    "approval": "approval of {phase}",
    "gate": "a decision on the failed {phase} gate",
    "budget": "more budget at {phase}",
    "question": "answers to the {phase} questions",
}


class PlanCheckout:
    """A disposable clone of the plan's repository for merging (one per purpose)."""

    def __init__(self, repo: str, plan_id: str, workspaces: Path, purpose: str) -> None:
        self.origin = origin_url(repo)
        self.dir = workspaces / "plans" / plan_id / purpose

    def fetch(self) -> None:
        """Clone on first use, then fetch every branch of the origin."""
        if not (self.dir / ".git").exists():
            self.dir.parent.mkdir(parents=True, exist_ok=True)
            git(
                self.dir.parent,
                "clone",
                "--quiet",
                "--no-checkout",
                "--",
                self.origin,
                str(self.dir),
            )
            git(self.dir, "config", f"merge.{KEEP_OURS_DRIVER}.driver", "true")
            attributes = self.dir / ".git" / "info" / "attributes"
            attributes.parent.mkdir(parents=True, exist_ok=True)
            attributes.write_text(f"{IMPLFLOW_DIR}/** merge={KEEP_OURS_DRIVER}\n", encoding="utf-8")
        git(self.dir, "fetch", "--quiet", "--prune", "origin")

    def tip(self, branch: str) -> str | None:
        """The origin's commit of ``branch`` as last fetched, or None."""
        return (
            git(
                self.dir,
                "rev-parse",
                "--verify",
                "--quiet",
                f"refs/remotes/origin/{branch}^{{commit}}",
                check=False,
            )
            or None
        )

    def start(self, branch: str, commit: str) -> None:
        """Check out ``commit`` as local ``branch``, clean."""
        git(self.dir, "checkout", "--quiet", "--force", "-B", branch, commit)
        git(self.dir, "reset", "--quiet", "--hard", commit)
        git(self.dir, "clean", "-qfdx")

    def head(self) -> str:
        return git(self.dir, "rev-parse", "HEAD")

    def contains(self, commit: str) -> bool:
        """Whether HEAD already holds ``commit``."""
        return _returncode(self.dir, "merge-base", "--is-ancestor", commit, "HEAD") == 0

    def merge(self, commit: str, message: str) -> list[str]:
        """Merge ``commit`` into HEAD with one merge commit; the conflicting files, or ``[]``.

        On a conflict the merge is aborted and the checkout is left as before.
        """
        if self.contains(commit):
            return []
        git(self.dir, *IDENTITY, "merge", "--quiet", "--no-ff", "--no-commit", commit, check=False)
        if _returncode(self.dir, "rev-parse", "--verify", "--quiet", "MERGE_HEAD") != 0:
            raise GitError("merge", f"could not merge {commit[:12]} into {self.head()[:12]}")
        unmerged = git(self.dir, "diff", "--name-only", "--diff-filter=U").splitlines()
        ours = [p for p in unmerged if p.startswith(f"{IMPLFLOW_DIR}/")]
        for path in ours:  # e.g. deleted on one side: implflow's records keep ours as well
            if _returncode(self.dir, "checkout", "--ours", "--", path) == 0:
                git(self.dir, "add", "--force", "--", path)
            else:
                git(self.dir, "rm", "--quiet", "--cached", "--", path)
        conflicts = [p for p in unmerged if p not in ours]
        if conflicts:
            git(self.dir, "merge", "--abort")
            return conflicts
        git(self.dir, *IDENTITY, "commit", "--quiet", "--no-verify", "-m", message)
        return []

    def push(self, commit: str, branch: str) -> None:
        git(self.dir, "push", "--quiet", "origin", f"{commit}:refs/heads/{branch}")

    def pin(self, path: str, commit: str) -> None:
        """Make ``path`` what it was at ``commit`` (absent if it was absent); not committed."""
        if _returncode(self.dir, "cat-file", "-e", f"{commit}:{path}") == 0:
            git(self.dir, "checkout", commit, "--", path)
        elif (self.dir / path).exists():
            (self.dir / path).unlink()

    def commit_reports(self, reports: str, passed: bool, plan_id: str) -> None:
        """One commit with the integration test's reports (and nothing else)."""
        git(self.dir, "add", "--force", "--", reports)
        outcome = "passed" if passed else "failed"
        message = f"implflow plan {plan_id}: integration test {outcome}"
        git(self.dir, *IDENTITY, "commit", "--quiet", "--no-verify", "--allow-empty", "-m", message)


def _returncode(cwd: Path, *args: str) -> int:
    """git's exit code, for the commands whose answer is their exit code."""
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=600).returncode


class PlanActivities:
    """The activities of ``PlanWorkflow``, bound to one worker's settings and client."""

    def __init__(self, settings: Settings, client: Client) -> None:
        self.settings = settings
        self.client = client
        self.threads = GitThreads(settings.max_concurrent_activities)
        self._turns: dict[Path, asyncio.Lock] = {}

    def all(self) -> list[Callable[..., Any]]:
        """Every plan activity, for the worker's list."""
        return [
            self.prepare_plan,
            self.prepare_task_branch,
            self.observe_tasks,
            self.integrate_plan,
            self.open_plan_pull_request,
        ]

    def _checkout(self, repo: str, plan_id: str, purpose: str) -> PlanCheckout:
        return PlanCheckout(repo, plan_id, self.settings.folder("workspaces"), purpose)

    @contextlib.asynccontextmanager
    async def _one_at_a_time(self, checkout: PlanCheckout) -> AsyncIterator[None]:
        """This activity alone works in ``checkout``: in turn within this worker (no polling),
        and against another worker process on the same workspace root (its file lock)."""
        turn = self._turns.setdefault(checkout.dir, asyncio.Lock())
        async with turn, CheckoutLock(checkout.dir.with_name(f"{checkout.dir.name}.lock")):
            yield

    @activity.defn(name="prepare_plan")
    async def prepare_plan(self, inp: PreparePlanInput) -> PreparePlanResult:
        """Check the repo, the base and the specialists; find tasks already started."""
        refused = relative_repo(inp.repo)
        if refused:
            raise ApplicationError(refused, type=INVALID_INPUT, non_retryable=True)
        _, head = await self.threads.run(check_repo, inp.repo)
        checkout = self._checkout(inp.repo, inp.plan_id, "prepare")
        await self.threads.git(checkout.fetch)
        base = head
        if inp.base:
            base = await _required_tip(self.threads, checkout, inp.base, "base")
        if base is None:
            raise ApplicationError(
                f"repo: {inp.repo} has no commit to start from",
                type=REPO_UNAVAILABLE,
                non_retryable=True,
            )
        if inp.specialists:  # the repo's own agents as of the base, then the worker's
            await self.threads.git(checkout.start, "implflow-plan-base", base)
            available = list_specialists(checkout.dir, self.settings.specialists_dir)
            for name, task_id in inp.specialists.items():
                if name not in available:
                    raise ApplicationError(
                        f"task {task_id}: specialist: unknown specialist {name!r}; "
                        f"available: {', '.join(available)}",
                        type=INVALID_INPUT,
                        non_retryable=True,
                    )
        adopted = [run for run in [await self._run(wid) for wid in inp.children] if run]
        log.info("plan prepared", plan_id=inp.plan_id, base=base[:12], adopted=len(adopted))
        return PreparePlanResult(base_commit=base, adopted=adopted)

    @activity.defn(name="prepare_task_branch")
    async def prepare_task_branch(self, inp: TaskBranchInput) -> TaskBranchResult:
        """Create the task's branches from its dependencies' results (or the plan's base).

        One clone per plan on this worker serves every task's branches, one activity at a
        time (a plan of hundreds of tasks kept a clone per task, never removed).
        """
        checkout = self._checkout(inp.repo, inp.plan_id, "branches")
        async with self._one_at_a_time(checkout):
            return await self._prepare_task_branch(inp, checkout)

    async def _prepare_task_branch(
        self, inp: TaskBranchInput, checkout: PlanCheckout
    ) -> TaskBranchResult:
        await self.threads.git(checkout.fetch)
        existing = [await self.threads.git(checkout.tip, b) for b in inp.branches]
        if all(existing):  # prepared before (a retry, or an earlier run of this plan)
            return TaskBranchResult(start_commit=existing[0])
        tips = [
            await _required_tip(self.threads, checkout, s, f"task {inp.task_id}")
            for s in inp.sources
        ]
        start = tips[0] if tips else inp.base_commit
        if len(tips) > 1:
            await self.threads.git(checkout.start, "implflow-stack", tips[0])
            for source, tip in zip(inp.sources[1:], tips[1:], strict=True):
                conflicts = await self.threads.git(
                    checkout.merge, tip, f"implflow: stack {inp.task_id} on {source}"
                )
                if conflicts:
                    return TaskBranchResult(conflict_files=conflicts, conflict_with=source)
            start = await self.threads.git(checkout.head)
        for branch, found in zip(inp.branches, existing, strict=True):
            if found is None:
                await self.threads.git(checkout.push, start, branch)
        log.info("task branch prepared", task=inp.task_id, start=start[:12], sources=inp.sources)
        return TaskBranchResult(start_commit=start)

    @activity.defn(name="observe_tasks")
    async def observe_tasks(self, inp: ObserveInput) -> ObserveResult:
        """Return the tasks that changed since ``known`` as soon as one did (or at ``wait_s``)."""
        deadline = time.monotonic() + inp.wait_s
        while True:
            changed: list[TaskRun] = []
            for wid in inp.workflow_ids:
                run = await self._run(wid)
                if run is not None and run.fingerprint != inp.known.get(wid):
                    changed.append(run)
            if changed or time.monotonic() >= deadline:
                return ObserveResult(runs=changed)
            activity.heartbeat({"watching": len(inp.workflow_ids)})
            await asyncio.sleep(inp.poll_s)

    async def _run(self, workflow_id: str) -> TaskRun | None:
        """What a task workflow shows now; None if it does not exist (yet)."""
        handle = self.client.get_workflow_handle(workflow_id, result_type=ImplementationResult)
        try:
            desc = await handle.describe()
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return None
            raise
        run = TaskRun(workflow_id=workflow_id, started=True, state=TaskState.RUNNING)
        closed = _CLOSED.get(desc.status) if desc.status is not None else None
        if closed is None:
            status = await self._status(workflow_id)
            return (_from_status(run, status) if status else run).fingerprinted()
        run.closed, run.state = True, closed
        if closed == TaskState.COMPLETED:
            result = await handle.result()
            run.branch, run.head_commit = result.branch, result.head_commit
            run.cost_usd = result.ledger.cost_usd
            run.figures = candidate_figures(result)
            run.decisions = len(result.decisions)
            run.last_decision = _last_decision(result.decisions)
            run.phase = next((p.name for p in reversed(result.phases) if p.commit), None)
            return run.fingerprinted()
        status = await self._status(workflow_id)  # closed workflows answer queries too
        if status is not None:
            run = _from_status(run, status)
            run.state, run.waiting, run.pending_phase, run.pending_kind = closed, None, None, None
        if desc.status == WorkflowExecutionStatus.FAILED:
            try:
                await handle.result()
            except WorkflowFailureError as err:
                run.error = str(getattr(err.cause, "message", None) or err.cause or err)[:500]
        elif desc.status is not None:
            run.error = run.error or desc.status.name.lower()
        return run.fingerprinted()

    async def _status(self, workflow_id: str) -> TaskStatus | None:
        try:
            status: TaskStatus = await self.client.get_workflow_handle(workflow_id).query(
                "status", result_type=TaskStatus
            )
        except Exception as err:  # not answering yet (first task not run), or gone: no news
            log.debug("status query failed", workflow_id=workflow_id, error=str(err))
            return None
        return status

    @activity.defn(name="integrate_plan")
    async def integrate_plan(self, inp: IntegrateInput) -> IntegrateResult:
        """Merge the task branches in order into ``implflow/plan/<id>``; test the result."""
        branch = integration_branch(inp.plan_id)
        checkout = self._checkout(inp.repo, inp.plan_id, "integrate")
        await self.threads.git(checkout.fetch)
        await self.threads.git(
            checkout.start, branch, await self.threads.git(checkout.tip, branch) or inp.base_commit
        )
        merged: list[str] = []
        for item in inp.merges:
            if item.task_id in inp.left_out:
                continue
            tip = await _required_tip(self.threads, checkout, item.branch, item.task_id)
            conflicts = await self.threads.git(
                checkout.merge,
                tip,
                f"implflow plan {inp.plan_id}: merge {item.task_id} ({item.branch})",
            )
            if conflicts:
                await self.threads.git(checkout.push, "HEAD", branch)  # what merged so far is kept
                return IntegrateResult(
                    branch=branch,
                    commit=await self.threads.git(checkout.head),
                    merged=merged,
                    conflict_task=item.task_id,
                    conflict_files=conflicts[:50],
                    evidence=f"merging {item.branch} into {branch} conflicts in:\n"
                    + "\n".join(conflicts[:50]),
                )
            merged.append(item.task_id)
        await self.threads.git(checkout.push, "HEAD", branch)
        result = IntegrateResult(
            branch=branch, commit=await self.threads.git(checkout.head), merged=merged
        )
        if not inp.run_test or (inp.gate is None and inp.command is None):
            return result
        passed, summary, evidence, reports = await self._test(checkout, inp)
        await self.threads.git(checkout.commit_reports, reports, passed, inp.plan_id)
        await self.threads.git(checkout.push, "HEAD", branch)
        log.info("plan integrated", plan_id=inp.plan_id, merged=merged, test_passed=passed)
        return result.model_copy(
            update={
                "commit": await self.threads.git(checkout.head),
                "test_passed": passed,
                "test_summary": summary,
                "evidence": evidence,
            }
        )

    @activity.defn(name="open_plan_pull_request")
    async def open_plan_pull_request(self, inp: PullRequestInput) -> str:
        """Run ``IMPLFLOW_PR_COMMAND`` in a checkout of the integration branch as pushed;
        returns its last output line (``inp.workflow_id`` is the plan's id)."""
        command = pr_command(self.settings, "integrate.pull_request")
        checkout = self._checkout(inp.repo, inp.workflow_id, "pull-request")
        await self.threads.git(checkout.fetch)
        tip = await _required_tip(self.threads, checkout, inp.branch, "pull request")
        await self.threads.git(checkout.start, inp.branch, tip)
        log_path = checkout.dir.parent / "pull-request.log"
        opened = await open_pull_request(command, inp, checkout.dir, log_path, self.settings)
        log.info("plan pull request opened", plan_id=inp.workflow_id, branch=inp.branch)
        return opened

    async def _test(
        self, checkout: PlanCheckout, inp: IntegrateInput
    ) -> tuple[bool, str, str, str]:
        """The tests once more on the merged tree: passed, summary, evidence, reports dir."""
        if inp.command:
            reports = f"{REPORTS_DIR}/integrate"
            log_path = checkout.dir / reports / "command.log"
            argv = [part.replace("{python}", sys.executable) for part in inp.command]
            try:
                run = await run_process(
                    argv,
                    cwd=checkout.dir,
                    env=scrubbed_env(self.settings.env_allowlist, {}),
                    log_path=log_path,
                    timeout_s=3600,
                    heartbeat=activity.heartbeat,
                )
            except FileNotFoundError:
                raise ApplicationError(
                    f"integrate.command: {inp.command[0]!r} is not installed on this worker",
                    type=INVALID_INPUT,
                    non_retryable=True,
                ) from None
            passed = run.returncode == 0
            summary = f"{inp.command[0]} exited {run.returncode}"
            return passed, summary, f"{summary}; last output:\n{run.tail[-1500:]}", reports
        from activities.gates.config import GateConfigError  # tools only a gate needs
        from activities.gates.runner import run_gate

        gate = inp.gate or "test"
        # The merged tree may carry a task's gates.toml: the plan's base decides, as for tasks.
        await self.threads.git(checkout.pin, GATES_FILE, inp.base_commit)
        try:
            verdict = await run_gate(
                gate,
                checkout.dir,
                0,  # round 0: the tasks' own reports (rounds 1, 2, ...) stay as they are
                inp.thresholds,
                base_ref=inp.base_commit,
                heartbeat=activity.heartbeat,
            )
        except GateConfigError as err:
            raise ApplicationError(str(err), type=GATE_CONFIG_INVALID, non_retryable=True) from None
        summary = (
            verdict.failure_summary.splitlines()[0][:300]
            if not verdict.passed and verdict.failure_summary
            else f"{gate} gate {'passed' if verdict.passed else 'failed'}: "
            f"{len(verdict.checks)} check(s)"
        )
        return verdict.passed, summary, verdict.evidence(), verdict.report_dir or REPORTS_DIR


def _from_status(run: TaskRun, status: TaskStatus) -> TaskRun:
    """A running task as its ``status`` query shows it."""
    pending = status.pending_approval
    waiting = _WAITING[pending.kind].format(phase=pending.phase) if pending else None
    return run.model_copy(
        update={
            "state": status.state,
            "phase": status.current_phase,
            "waiting": waiting or ("paused" if status.paused else None),
            "pending_phase": pending.phase if pending else None,
            "pending_kind": pending.kind if pending else None,
            "branch": status.branch,
            "cost_usd": status.ledger.cost_usd,
            "error": status.error,
            "decisions": len(status.decisions),
            "last_decision": _last_decision(status.decisions),
        }
    )


def _last_decision(decisions: list[Decision]) -> str | None:
    last = decisions[-1] if decisions else None
    return f"{last.phase} {last.decision} by {last.approver}" if last else None


async def _required_tip(threads: GitThreads, checkout: PlanCheckout, branch: str, what: str) -> str:
    """The origin's commit of ``branch``; a missing branch is not worth retrying."""
    tip = await threads.git(checkout.tip, branch)
    if tip is None:
        raise ApplicationError(
            f"{what}: branch {branch} is not in the repository",
            type=REPO_UNAVAILABLE,
            non_retryable=True,
        )
    return tip
