"""ImplementationWorkflow on the time-skipping test server, with the real activities."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import WorkflowFailureError, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.testing import WorkflowEnvironment

from implflow.models import (
    ApproveSignal,
    DecideInput,
    Decision,
    PhaseStatusValue,
    RejectSignal,
    TaskState,
    TaskStatus,
)
from tests.helpers import (
    WorkerFactory,
    alive,
    branch_file,
    branch_log,
    marked,
)
from tests.helpers.workflow import ALL, start, task, wait_for


async def test_approve_path_runs_all_phases_and_records_decisions(
    ts_env: WorkflowEnvironment, run_worker: WorkerFactory, repo: Path
) -> None:
    async with run_worker() as (_, tq):
        h = await start(ts_env, tq, task(repo))
        st = await wait_for(h, TaskState.AWAITING_APPROVAL, "design")
        assert st.pending_approval is not None and st.pending_approval.commit
        assert [p.status for p in st.phases[:2]] == [PhaseStatusValue.DONE] * 2
        await h.signal("approve", ApproveSignal(phase="design", approver="lead", comment="ok"))
        await wait_for(h, TaskState.AWAITING_APPROVAL, "verify")
        decision = await h.execute_update(
            "decide",
            DecideInput(phase="verify", decision="approve", approver="qa"),
            result_type=Decision,
        )
        assert decision.approver == "qa"
        result = await h.result()
    assert result.state == TaskState.COMPLETED
    assert [p.name for p in result.phases] == ALL
    assert all(p.status == PhaseStatusValue.DONE and p.rounds == 1 for p in result.phases)
    assert [(d.phase, d.decision, d.approver, d.via) for d in result.decisions] == [
        ("design", "approve", "lead", "signal"),
        ("verify", "approve", "qa", "update"),
    ]
    design_commit = next(p.commit for p in result.phases if p.name == "design")
    assert result.decisions[0].commit == design_commit
    assert result.decisions[0].comment == "ok"
    assert "Verification" in branch_file(repo, h.id, ".implflow/verify.md")
    assert branch_log(repo, h.id) == [f"implflow: {p} (round 1)" for p in ALL]
    assert not (repo / ".implflow").exists()  # the user's working tree is never touched
    tip = subprocess.run(
        ["git", "rev-parse", result.branch or ""], cwd=repo, capture_output=True, text=True
    ).stdout.strip()
    assert result.head_commit == tip  # the result names the branch tip


async def test_reject_rewinds_and_hands_feedback_to_the_executor(
    ts_env: WorkflowEnvironment, run_worker: WorkerFactory, repo: Path
) -> None:
    async with run_worker() as (_, tq):
        h = await start(ts_env, tq, task(repo, approval={"after": ["design"]}))
        await wait_for(h, TaskState.AWAITING_APPROVAL, "design")
        await h.signal(
            "reject",
            RejectSignal(
                phase="design",
                approver="lead",
                feedback="add rate limiting; $(touch pwned) `touch pwned2`",  # data, not shell
                rewind_to="review",
            ),
        )
        st = await wait_for(h, TaskState.AWAITING_APPROVAL, "design")
        assert not list(repo.parent.rglob("pwned*"))
        assert [(p.name, p.rounds) for p in st.phases[:2]] == [("review", 2), ("design", 2)]
        assert "add rate limiting" in branch_file(repo, h.id, ".implflow/design.md")
        assert "add rate limiting" in branch_file(repo, h.id, ".implflow/review.md")
        await h.signal("approve", ApproveSignal(phase="design", approver="lead"))
        result = await h.result()
    assert [d.decision for d in result.decisions] == ["reject", "approve"]
    assert result.decisions[0].rewind_to == "review"
    assert {p.name: p.rounds for p in result.phases}["implement"] == 1
    assert branch_log(repo, h.id)[:5] == [
        "implflow: review (round 1)",
        "implflow: design (round 1)",
        "implflow: review (round 2)",
        "implflow: design (round 2)",
        "implflow: implement (round 1)",
    ]


async def test_rejections_per_gate_are_bounded(
    ts_env: WorkflowEnvironment, run_worker: WorkerFactory, repo: Path
) -> None:
    async with run_worker() as (_, tq):
        h = await start(ts_env, tq, task(repo, approval={"after": ["review"], "max_rejections": 1}))
        for _ in range(2):
            await wait_for(h, TaskState.AWAITING_APPROVAL, "review")
            await h.signal("reject", RejectSignal(phase="review", approver="a", feedback="no"))
        with pytest.raises(WorkflowFailureError) as info:
            await h.result()
        assert (await h.query("status", result_type=TaskStatus)).state == TaskState.FAILED
    cause = info.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "RejectionLimitReached"


async def test_decide_validator_refuses_bad_decisions(
    ts_env: WorkflowEnvironment, run_worker: WorkerFactory, repo: Path
) -> None:
    async with run_worker() as (_, tq):
        h = await start(
            ts_env, tq, task(repo, approval={"after": ["design"], "approvers": ["lead"]})
        )
        await wait_for(h, TaskState.AWAITING_APPROVAL, "design")
        cases = [
            (DecideInput(phase="review", decision="approve", approver="lead"), "not waiting"),
            (DecideInput(phase="design", decision="approve", approver="mallory"), "allowlist"),
            (
                DecideInput(
                    phase="design",
                    decision="reject",
                    approver="lead",
                    feedback="x",
                    rewind_to="test",
                ),
                "earlier phase",
            ),
        ]
        for msg, reason in cases:
            with pytest.raises(WorkflowUpdateFailedError) as info:
                await h.execute_update("decide", msg)
            assert reason in str(info.value.cause)
        # Refused updates never entered history: nothing was decided.
        assert (await h.query("status", result_type=TaskStatus)).decisions == []
        ok = await h.execute_update(
            "decide",
            DecideInput(phase="design", decision="approve", approver="lead"),
            result_type=Decision,
        )
        assert ok.decision == "approve"
        with pytest.raises(WorkflowUpdateFailedError):  # already decided, nothing pending
            await h.execute_update(
                "decide", DecideInput(phase="design", decision="approve", approver="lead")
            )
        await h.result()


async def test_bad_and_malformed_signals_are_ignored(
    ts_env: WorkflowEnvironment, run_worker: WorkerFactory, repo: Path
) -> None:
    async with run_worker() as (_, tq):
        h = await start(ts_env, tq, task(repo, approval={"after": ["design"]}))
        await wait_for(h, TaskState.AWAITING_APPROVAL, "design")
        await h.signal("approve", {"bogus": True})  # fails validation: recorded and dropped
        await h.signal("approve", "not even an object")
        await h.signal("approve", ApproveSignal(phase="verify", approver="x"))  # wrong phase
        await h.signal(
            "reject", RejectSignal(phase="design", approver="x", feedback="f", rewind_to="nope")
        )
        st = await wait_for(h, TaskState.AWAITING_APPROVAL, "design")
        assert st.decisions == []
        assert len(st.ignored_messages) == 4, st.ignored_messages
        assert "phase: Field required" in st.ignored_messages[0]
        assert "must be a JSON object" in st.ignored_messages[1]
        assert "not waiting for approval" in st.ignored_messages[2]
        assert "rewind_to 'nope'" in st.ignored_messages[3]
        await h.signal("approve", ApproveSignal(phase="design", approver="lead"))
        assert (await h.result()).state == TaskState.COMPLETED


class _Hook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append({**json.loads(body), "header_key": self.headers["Idempotency-Key"]})
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


async def test_deadline_reminds_then_fails(
    ts_env: WorkflowEnvironment, run_worker: WorkerFactory, repo: Path
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Hook.received.clear()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        async with run_worker(webhook_url=url) as (_, tq):
            h = await start(
                ts_env,
                tq,
                task(
                    repo,
                    approval={"after": ["design"], "remind_after_s": 3600, "deadline_s": 2 * 86400},
                ),
            )
            await wait_for(h, TaskState.AWAITING_APPROVAL, "design")
            with pytest.raises(WorkflowFailureError) as info:
                await h.result()  # time skips: reminder after 1 h, expiry after 2 days
            st = await h.query("status", result_type=TaskStatus)
    finally:
        server.shutdown()
    cause = info.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "ApprovalExpired"
    assert [r["event"] for r in _Hook.received] == ["approval_overdue"]
    assert _Hook.received[0]["phase"] == "design"
    key = _Hook.received[0]["idempotency_key"]  # a resent reminder repeats it: de-duplicable
    assert key.startswith(f"{h.id}:design:") and _Hook.received[0]["header_key"] == key
    # The task failed: nothing waits for a person any more (status and the UI say so).
    assert st.decisions[-1].decision == "expired" and st.pending_approval is None
    assert st.state == TaskState.FAILED


async def test_deadline_keep_waiting_then_approve(
    ts_env: WorkflowEnvironment, run_worker: WorkerFactory, repo: Path
) -> None:
    async with run_worker() as (_, tq):
        h = await start(
            ts_env,
            tq,
            task(
                repo,
                approval={
                    "after": ["design"],
                    "remind_after_s": 60,
                    "deadline_s": 120,
                    "on_expiry": "wait",
                },
            ),
        )
        await wait_for(h, TaskState.AWAITING_APPROVAL, "design")
        await ts_env.sleep(timedelta(days=5))
        st = await wait_for(h, TaskState.AWAITING_APPROVAL, "design")
        assert st.pending_approval is not None and st.pending_approval.reminded
        await h.signal("approve", ApproveSignal(phase="design", approver="late"))
        assert (await h.result()).state == TaskState.COMPLETED


async def test_pause_and_resume(
    ts_env: WorkflowEnvironment, run_worker: WorkerFactory, repo: Path
) -> None:
    async with run_worker() as (_, tq):
        h = await start(ts_env, tq, task(repo, approval={"after": ["review"]}))
        await wait_for(h, TaskState.AWAITING_APPROVAL, "review")
        await h.signal("pause")
        await h.signal("approve", ApproveSignal(phase="review", approver="lead"))
        st = await wait_for(h, TaskState.PAUSED, "design")
        assert st.paused and st.phases[1].status == PhaseStatusValue.PENDING
        await asyncio.sleep(0.5)
        assert (await h.query("status", result_type=TaskStatus)).state == TaskState.PAUSED
        await h.signal("resume")
        assert (await h.result()).state == TaskState.COMPLETED


async def test_a_task_cancelled_while_it_waits_waits_for_nobody(
    ts_env: WorkflowEnvironment, run_worker: WorkerFactory, repo: Path
) -> None:
    async with run_worker() as (_, tq):
        h = await start(ts_env, tq, task(repo, approval={"after": ["review"]}))
        await wait_for(h, TaskState.AWAITING_APPROVAL, "review")
        await h.cancel()
        with pytest.raises(WorkflowFailureError):
            await h.result()
        st = await h.query("status", result_type=TaskStatus)
    assert st.state == TaskState.CANCELLED and st.pending_approval is None
    assert st.phases[0].status == PhaseStatusValue.DONE  # review was done and committed


async def _one_marked(marker: str) -> int:
    for _ in range(100):
        pids = marked(marker)
        if pids:
            return pids[0]
        await asyncio.sleep(0.1)
    raise AssertionError(f"no process with {marker!r} started")


async def test_cancel_stops_the_running_phase_and_its_processes(
    ts_env: WorkflowEnvironment, run_worker: WorkerFactory, repo: Path, tmp_path: Path
) -> None:
    # Found by a marker on its command line: a sandboxed command sees its own PID namespace.
    marker = f"slow-{tmp_path.name}"
    slow = task(
        repo,
        commands={"implement": ["python3", "-c", "import time; time.sleep(300)", marker]},
        phases=[{"name": "implement", "heartbeat_s": 2}],
    )
    async with run_worker() as (_, tq):
        h = await start(ts_env, tq, slow)
        await wait_for(h, TaskState.RUNNING, "implement")
        pid = await _one_marked(marker)
        await h.cancel()
        with pytest.raises(WorkflowFailureError) as info:
            await h.result()
        st = await h.query("status", result_type=TaskStatus)
    assert isinstance(info.value.cause, CancelledError)
    assert st.state == TaskState.CANCELLED
    assert st.phases[0].status == PhaseStatusValue.CANCELLED
    assert not alive(pid)


async def test_cancel_shows_cancelling_and_stops_a_long_command_within_seconds(
    ts_env: WorkflowEnvironment, run_worker: WorkerFactory, repo: Path, tmp_path: Path
) -> None:
    # The phase keeps the default 60 s heartbeat timeout: cancellation must not wait for it.
    marker = f"slow-{tmp_path.name}"
    slow = task(
        repo,
        commands={"implement": ["python3", "-c", "import time; time.sleep(60)", marker]},
        phases=[{"name": "implement"}],
    )
    async with run_worker() as (_, tq):
        h = await start(ts_env, tq, slow)
        await wait_for(h, TaskState.RUNNING, "implement")
        pid = await _one_marked(marker)
        began = time.monotonic()
        await h.cancel()
        states = set()
        for _ in range(40):
            try:
                states.add((await h.query("status", result_type=TaskStatus)).state)
            except Exception:  # the run may close between two queries
                break
            if TaskState.CANCELLED in states:
                break
            await asyncio.sleep(0.05)
        with pytest.raises(WorkflowFailureError):
            await h.result()
        stopped_after = time.monotonic() - began
    assert TaskState.CANCELLING in states
    assert stopped_after < 10, f"cancel took {stopped_after:.1f}s"
    assert not alive(pid)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"description": "d", "repo": "/tmp"}, "title"),
        ({"title": "t", "description": "d", "repo": ""}, "repo"),
        ({"title": "t", "description": "d"}, "repo"),
        ({"title": "t", "description": "x" * 20_001, "repo": "/tmp"}, "description"),
        ({"title": "t", "description": "d", "repo": "/tmp", "skip": ["deploy"]}, "skip"),
        ({"title": 5, "description": "d", "repo": "/tmp"}, "title"),
    ],
)
async def test_bad_input_fails_at_once_naming_the_field(
    ts_env: WorkflowEnvironment, run_worker: WorkerFactory, payload: dict[str, Any], field: str
) -> None:
    async with run_worker() as (_, tq):
        h = await start(ts_env, tq, payload)
        with pytest.raises(WorkflowFailureError) as info:
            await asyncio.wait_for(h.result(), 20)
    cause = info.value.cause
    assert isinstance(cause, ApplicationError)
    assert cause.type == "InvalidInput" and cause.non_retryable
    assert field in cause.message and "\n" not in cause.message


@pytest.mark.parametrize(
    ("extra", "error_type", "words"),
    [
        ({"executor": "gpt-magic"}, "ExecutorUnavailable", "IMPLFLOW_EXECUTOR"),
        ({"executor": "claude-code"}, "ExecutorUnavailable", "npm install"),
        ({"repo": "/nonexistent/repo"}, "RepoUnavailable", "not a directory"),
        # A worker would resolve it against its own directory (started raw, not by the CLI).
        ({"repo": "notes-api"}, "InvalidInput", "must be an absolute path or a git URL"),
        ({"commands": {"review": ["no-such-program-xyz"]}}, "ExecutorUnavailable", "not installed"),
    ],
)
async def test_unusable_setup_fails_fast_without_retrying(
    ts_env: WorkflowEnvironment,
    run_worker: WorkerFactory,
    repo: Path,
    extra: dict[str, Any],
    error_type: str,
    words: str,
) -> None:
    async with run_worker() as (_, tq):
        h = await start(ts_env, tq, task(repo).model_copy(update=extra))
        with pytest.raises(WorkflowFailureError) as info:
            await asyncio.wait_for(h.result(), 20)
        st = await h.query("status", result_type=TaskStatus)
    cause = info.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == error_type
    assert words in cause.message
    # Found by prepare, before any phase ran (not after the design approval).
    assert cause.message.startswith("prepare failed: ")
    assert all(p.rounds == 0 for p in st.phases)


async def test_a_command_may_be_a_script_of_the_repository(
    ts_env: WorkflowEnvironment, run_worker: WorkerFactory, repo: Path
) -> None:
    script = repo / "scripts" / "implement.sh"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\necho implemented > implemented.txt\n")
    script.chmod(0o755)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    for args in (["add", "scripts"], ["commit", "-qm", "a script"]):
        subprocess.run([*git, *args], cwd=repo, check=True, capture_output=True)
    scripted = task(repo, commands={"implement": ["./scripts/implement.sh"]})
    async with run_worker() as (_, tq):
        h = await start(ts_env, tq, scripted.model_copy(update={"approval": {"after": []}}))
        result = await asyncio.wait_for(h.result(), 60)
    assert result.state == TaskState.COMPLETED
    assert branch_file(repo, h.id, "implemented.txt") == "implemented\n"


async def test_failing_command_is_retried_then_fails_the_task(
    ts_env: WorkflowEnvironment, run_worker: WorkerFactory, repo: Path
) -> None:
    failing = task(
        repo,
        phases=[{"name": "test", "retry": {"maximum_attempts": 2, "initial_interval_s": 1}}],
        commands={"test": ["python3", "-c", "import sys; print('boom'); sys.exit(3)"]},
    )
    async with run_worker() as (_, tq):
        h = await start(ts_env, tq, failing)
        with pytest.raises(WorkflowFailureError) as info:
            await h.result()
        st = await h.query("status", result_type=TaskStatus)
    cause = info.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "PhaseCommandFailed"
    assert "exited 3" in cause.message and "boom" in cause.message
    assert st.state == TaskState.FAILED and st.phases[0].status == PhaseStatusValue.FAILED
    assert st.phases[0].attempts == 2  # both attempts of the failed round are counted


RETRY_THEN_WAIT = """
import pathlib, sys, time
count, release = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
n = int(count.read_text()) if count.exists() else 0
count.write_text(str(n + 1))
if n == 0:
    print("boom: the first attempt fails")
    sys.exit(3)
while not release.exists():
    time.sleep(0.05)
"""


async def test_a_retried_attempt_shows_the_last_failure_while_it_runs(
    ts_env: WorkflowEnvironment, run_worker: WorkerFactory, repo: Path, tmp_path: Path
) -> None:
    count, release = tmp_path / "count", tmp_path / "release"
    flaky = task(
        repo,
        approval={"after": []},
        phases=[{"name": "test", "retry": {"maximum_attempts": 3, "initial_interval_s": 1}}],
        commands={"test": ["python3", "-c", RETRY_THEN_WAIT, str(count), str(release)]},
    )
    async with run_worker(sandbox="off") as (_, tq):
        h = await start(ts_env, tq, flaky)
        deadline = time.monotonic() + 30
        while True:  # attempt 2 runs (and waits): its status already says why it is a retry
            st = await h.query("status", result_type=TaskStatus)
            if st.phases[0].attempt == 2:
                break
            assert time.monotonic() < deadline, st
            await asyncio.sleep(0.1)
        phase = st.phases[0]
        assert phase.status == PhaseStatusValue.RUNNING
        assert len(phase.failed_attempts) == 1
        assert phase.failed_attempts[0].startswith("attempt 1: PhaseCommandFailed: ")
        assert "boom: the first attempt fails" in phase.failed_attempts[0]
        meta = await h.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
        assert "**test** — running, round 1, attempt 2" in meta.current_details
        assert "retried: attempt 1: PhaseCommandFailed" in meta.current_details
        # A malformed report is recorded and dropped, never applied.
        await h.signal("attempt_retried", {"phase": "test", "round": 1, "attempt": 0})
        release.write_text("go")
        result = await h.result()
        st = await h.query("status", result_type=TaskStatus)
    assert (
        result.phases[0].attempt == 2 and result.phases[0].failed_attempts == phase.failed_attempts
    )
    assert any("attempt_retried signal" in m for m in st.ignored_messages)


async def test_pull_request_step_runs_the_configured_command(
    ts_env: WorkflowEnvironment, run_worker: WorkerFactory, repo: Path
) -> None:
    command = [
        sys.executable,
        "-c",
        "import sys; print('opened', *sys.argv[1:])",
        "{branch}",
        "{title}",
        "{not-a-placeholder}",
    ]
    async with run_worker(pr_command=command) as (_, tq):
        h = await start(ts_env, tq, task(repo, approval={"after": []}, pull_request=True))
        result = await h.result()
    assert result.pull_request == f"opened implflow/{h.id} Auth API {{not-a-placeholder}}"
    assert result.branch == f"implflow/{h.id}"


async def test_pull_request_without_a_command_fails_clearly(
    ts_env: WorkflowEnvironment, run_worker: WorkerFactory, repo: Path
) -> None:
    async with run_worker() as (_, tq):
        h = await start(ts_env, tq, task(repo, approval={"after": []}, pull_request=True))
        with pytest.raises(WorkflowFailureError) as info:
            await h.result()
        st = await h.query("status", result_type=TaskStatus)
    cause = info.value.cause
    assert isinstance(cause, ApplicationError) and "IMPLFLOW_PR_COMMAND" in cause.message
    # Found by prepare, before any phase ran and was paid for.
    assert cause.message.startswith("prepare failed: ")
    assert all(p.rounds == 0 for p in st.phases)
