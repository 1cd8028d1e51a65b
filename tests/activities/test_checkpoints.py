"""Nothing an attempt did is lost: checkpoints, restore on another worker, the failed
attempts' logs and spend kept with the round (``activities/checkpoints.py``).

The shell executor goes through the real ``run_phase`` in an ``ActivityEnvironment``; a
retry "on another worker" is a second ``ImplActivities`` with its own workspace root. The
real Claude Code CLI (against the scripted Messages API) goes through a whole workflow on
the time-skipping server.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

import activities.workspace as workspace
from activities.checkpoints import NO_RESULT, Checkpointer, Restored, restore
from activities.executors.base import EarlierWork
from activities.executors.claude_code import ClaudeCodeExecutor, ClaudeCodeSettings
from activities.phases import ImplActivities
from activities.workspace import RoundKey, TaskCheckout
from implflow.models import (
    AgentUsage,
    AttemptFailure,
    ImplementationInput,
    PhaseInput,
    TaskState,
)
from implflow.settings import Settings
from implflow.worker import build_worker
from tests.fakes.anthropic_server import FakeAnthropicServer, api_error, text, write_file
from tests.helpers import branch_file, git_out, git_repo, shell_phase
from tests.helpers.executors import (
    CLAUDE_BIN,
    Harness,
    isolated_home,
    leave_unknown_session,
    needs_cli,
)
from tests.helpers.workflow import start

WIP = "refs/implflow/wip/wf-c/implement-r1"
KILLED = r"exited (-9|137)\b"  # SIGKILL, as the process or the sandbox around it reports it


git = git_out


def phase_input(repo: Path, script: str, **spec: Any) -> PhaseInput:
    return shell_phase(repo, script, workflow_id="wf-c", **spec)


def worker(tmp_path: Path, name: str) -> ImplActivities:
    """A worker with a workspace root of its own."""
    return ImplActivities(Settings(data_dir=tmp_path / name))


def attempt(n: int, details: list[Any] | None = None) -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=n, heartbeat_details=details or [])
    return env


KILLED_AFTER_A_WRITE = """
import os, pathlib, signal
attempt = os.environ["IMPLFLOW_ATTEMPT"]
if attempt == "1":
    pathlib.Path("half.txt").write_text("written by attempt 1\\n")
    print("attempt 1 wrote half.txt", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
assert pathlib.Path("half.txt").read_text() == "written by attempt 1\\n", "half.txt was lost"
pathlib.Path("rest.txt").write_text("attempt " + attempt + "\\n")
print("found half.txt")
"""


async def test_a_killed_attempt_keeps_its_files_on_another_worker(
    repo: Path, tmp_path: Path
) -> None:
    beats: list[Any] = []
    first = attempt(1)
    first.on_heartbeat = lambda *details: beats.extend(details)
    with pytest.raises(ApplicationError) as err:
        await first.run(worker(tmp_path, "a").run_phase, phase_input(repo, KILLED_AFTER_A_WRITE))
    assert err.value.type == "PhaseCommandFailed"
    assert re.search(KILLED, err.value.message)
    assert git(repo, "show", f"{WIP}:half.txt") == "written by attempt 1"  # on the origin
    assert "PhaseCommandFailed" in json.dumps(beats[-1]["failures"])  # and in the last beat

    # Worker B (its own root) retries, without even the heartbeat: the checkpoint suffices.
    result = await attempt(2).run(
        worker(tmp_path, "b").run_phase, phase_input(repo, KILLED_AFTER_A_WRITE)
    )
    assert result.summary == "found half.txt" and result.attempt == 2
    assert len(result.failed_attempts) == 1
    assert result.failed_attempts[0].startswith("attempt 1: PhaseCommandFailed: ")
    assert re.search(KILLED, result.failed_attempts[0])
    # The round's one commit has attempt 1's file and log, and attempt 2's.
    assert branch_file(repo, "wf-c", "half.txt") == "written by attempt 1\n"
    assert branch_file(repo, "wf-c", "rest.txt") == "attempt 2\n"
    first_log = branch_file(repo, "wf-c", ".implflow/logs/implement-r1-a1.log")
    assert "attempt 1 wrote half.txt" in first_log
    assert "found half.txt" in branch_file(repo, "wf-c", ".implflow/logs/implement-r1-a2.log")
    record = json.loads(branch_file(repo, "wf-c", ".implflow/runs/implement-r1.json"))
    assert record["failed_attempts"][0]["attempt"] == 1
    assert git(repo, "rev-parse", "--verify", "-q", WIP, check=False) == ""  # removed


WRITE_THEN_WAIT = """
import os, pathlib, time
if os.environ["IMPLFLOW_ATTEMPT"] == "1":
    pathlib.Path("draft.txt").write_text("draft\\n")
    time.sleep(60)
print("draft is", pathlib.Path("draft.txt").read_text().strip())
"""


async def test_a_running_attempt_is_checkpointed_when_it_changed_and_when_cancelled(
    repo: Path, tmp_path: Path
) -> None:
    inp = phase_input(repo, WRITE_THEN_WAIT, heartbeat_s=2.0)  # a look every second
    env = attempt(1)
    task = asyncio.create_task(env.run(worker(tmp_path, "a").run_phase, inp))
    for _ in range(200):
        if git(repo, "rev-parse", "--verify", "-q", WIP, check=False):
            break
        await asyncio.sleep(0.05)
    assert git(repo, "show", f"{WIP}:draft.txt") == "draft"  # while attempt 1 still runs
    workspace.calls.clear()
    await asyncio.sleep(2.5)  # more looks at an unchanged tree: nothing pushed
    assert workspace.calls["push"] == 0 and workspace.calls["write-tree"] >= 2
    message = git(repo, "log", "-1", "--format=%B", WIP)
    assert "Implflow-Checkpoint: running" in message
    env.cancel()
    with pytest.raises(BaseException):  # noqa: B017,PT011 - the cancellation surfaces
        await task
    message = git(repo, "log", "-1", "--format=%B", WIP)
    assert "Implflow-Checkpoint: final" in message and "Cancelled" in message

    result = await attempt(2).run(worker(tmp_path, "b").run_phase, inp)
    assert result.summary == "draft is draft"
    assert result.failed_attempts == [
        "attempt 1: Cancelled: the attempt was cancelled (cancel request or shutdown)"
    ]


def synced(repo: Path, root: Path, run_id: str = "run-1") -> TaskCheckout:
    checkout = TaskCheckout(str(repo), "wf-c", root, run_id=run_id)
    checkout.sync()
    return checkout


KEY = RoundKey("wf-c", "implement", 1)


def test_a_checkpoint_taken_while_running_restores_files_but_not_the_session(
    repo: Path, tmp_path: Path
) -> None:
    ran = synced(repo, tmp_path / "a")
    (ran.dir / "a.txt").write_text("x\n")
    checkpoints = Checkpointer(ran, KEY, 1, Restored())
    assert checkpoints.save() is True
    assert checkpoints.save() is False  # unchanged since: nothing pushed
    # The worker dies (kill -9): no final checkpoint. Its last heartbeat told what it spent.
    beat = {"phase": "implement", "round": 1, "attempt": 1, "session_id": "s-1", "cost_usd": 0.5}
    retry = synced(repo, tmp_path / "b")
    restored = restore(retry, KEY, 2, [beat])
    assert (retry.dir / "a.txt").read_text() == "x\n"
    assert restored.files == ["a.txt"] and not restored.resumable  # later writes may be lost
    assert "Restored 1 file from the interrupted attempt 1: a.txt" in restored.note
    assert "latest changes may be missing" in restored.note
    usage = AgentUsage(session_id="s-1", cost_usd=0.5)
    assert restored.failures == [AttemptFailure(attempt=1, error=NO_RESULT, usage=usage)]
    assert restored.earlier_work().session_costs == {"s-1": 0.5}

    # Another run of the same workflow id never gets this run's checkpoint.
    other_run = synced(repo, tmp_path / "c", run_id="run-2")
    assert restore(other_run, KEY, 1, []).files == []
    assert not (other_run.dir / "a.txt").exists()


def test_a_retry_without_a_checkpoint_starts_afresh(repo: Path, tmp_path: Path) -> None:
    retry = synced(repo, tmp_path / "b")
    restored = restore(retry, KEY, 3, [])
    assert not restored.resumable and "could not be restored" in restored.note
    assert [f.line() for f in restored.failures] == [
        f"attempt 1: {NO_RESULT}",
        f"attempt 2: {NO_RESULT}",
    ]
    assert restore(retry, KEY, 1, []) == Restored()  # a first attempt: nothing to say


async def test_a_session_is_resumed_only_when_its_files_were_all_restored(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path, ("PATH",), executor="claude-code", workflow_id="wf-r")
    ctx = h.ctx(attempt=2)
    leave_unknown_session(ctx, "claude")
    ex = ClaudeCodeExecutor(ClaudeCodeSettings(bin="claude"))
    seen: list[str | None] = []

    async def run(resume: str | None) -> tuple[object, object]:
        seen.append(resume)
        return object(), object()

    await ex._run_resuming(ctx, run, lambda _: True)  # type: ignore[arg-type]
    lost = dataclasses.replace(ctx, earlier=EarlierWork(resumable=False))
    await ex._run_resuming(lost, run, lambda _: True)  # type: ignore[arg-type]
    assert seen == ["0b7e1c2a-0000-4000-8000-000000000000", None]


# --- the real Claude Code CLI --------------------------------------------------------------


@needs_cli
async def test_claude_code_api_errors_after_a_write_lose_nothing_and_count_every_token(
    ts_env: WorkflowEnvironment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = git_repo(tmp_path / "repo")
    wid = f"claude-retry-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        data_dir=tmp_path / "data", env_allowlist=["PATH", "HOME", "CLAUDE_CODE_MAX_RETRIES"]
    )
    checkout = settings.folder("workspaces") / wid / "checkout"
    turns = [
        write_file(str(checkout / "feature.py"), "def f():\n    return 1\n", output_tokens=30),
        api_error(500),  # attempt 1: the API fails after the write (and on Claude's retry)
        api_error(500),
        text("Resumed: feature.py is there.", output_tokens=7),  # attempt 2, resumed
    ]
    served_tokens = sum(t.input_tokens + t.output_tokens for t in turns if t.status == 200)
    isolated_home(tmp_path, monkeypatch)
    monkeypatch.setenv("IMPLFLOW_CLAUDE_BIN", str(CLAUDE_BIN))
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-not-a-real-key")
    monkeypatch.setenv("CLAUDE_CODE_MAX_RETRIES", "1")
    with FakeAnthropicServer(turns) as fake:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
        task = ImplementationInput.model_validate(
            {
                "title": "Feature",
                "description": "Write feature.py.",
                "repo": str(repo),
                "executor": "claude-code",
                "gates": "off",
                "approval": {"after": []},
                "phases": [
                    {"name": "implement", "retry": {"maximum_attempts": 3, "initial_interval_s": 1}}
                ],
                "budget": {"max_usd_per_phase": 1.0},
            }
        )
        tq = f"tq-{uuid.uuid4().hex}"
        async with build_worker(ts_env.client, settings, tq):
            handle = await start(ts_env, tq, task, wid)
            result = await handle.result()
        resumed_prompt = json.dumps(fake.message_requests[-1].body["messages"])
    assert result.state == TaskState.COMPLETED
    assert branch_file(repo, wid, "feature.py") == "def f():\n    return 1\n"
    logs = git(repo, "ls-tree", "-r", "--name-only", f"implflow/{wid}", ".implflow/logs")
    assert "implement-r1-a1.claude.jsonl" in logs  # the failed attempt's events, committed
    assert "implement-r1-a1.claude.stderr.log" in logs
    assert "implement-r1-a2-resume.claude.jsonl" in logs  # attempt 2 resumed the session
    assert "implement-r1-a2.claude.jsonl" not in logs  # (and did not have to start afresh)
    record = json.loads(branch_file(repo, wid, ".implflow/runs/implement-r1.json"))
    (failed,) = record["failed_attempts"]
    assert failed["error"].startswith("AgentApiError: claude-code failed (API error")
    assert "(success)" not in failed["error"]
    assert "Restored 1 file from the interrupted attempt 1: feature.py" in resumed_prompt
    # Spend: Claude Code's own final totals, both attempts, nothing counted twice.
    assert result.ledger.tokens == served_tokens
    last = [
        json.loads(line)
        for line in branch_file(
            repo, wid, ".implflow/logs/implement-r1-a2-resume.claude.jsonl"
        ).splitlines()
        if line.startswith("{")
    ][-1]
    assert (last["type"], last["is_error"]) == ("result", False)
    assert result.ledger.cost_usd == pytest.approx(last["total_cost_usd"])  # the session's total
    assert result.phases[0].cost_usd == pytest.approx(last["total_cost_usd"])
