"""Contract tests of the ``claude-code`` executor with the REAL Claude Code CLI.

The CLI (pinned, see ``CLAUDE_CODE_VERSION``) talks to ``FakeAnthropicServer`` on
127.0.0.1, with an isolated HOME and a dummy key: no network, no spend. Install:

    npm install --prefix .tools/npm @anthropic-ai/claude-code@2.1.332

or point ``IMPLFLOW_CLAUDE_BIN`` at a ``claude`` binary of that version. Without
either, the CLI tests are skipped (and say so).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.executors.claude_code import (
    CLAUDE_CODE_VERSION,
    ClaudeCodeExecutor,
    ClaudeCodeSettings,
)
from activities.executors.stream import StreamLimits, run_event_stream
from implflow.errors import (
    AGENT_API_ERROR,
    AGENT_PERMISSION_DENIED,
    AGENT_STALLED,
    BUDGET_EXCEEDED,
    EXECUTOR_UNAVAILABLE,
)
from implflow.models import Budget
from implflow.settings import Settings
from tests.fakes.anthropic_server import (
    FakeAnthropicServer,
    Turn,
    api_error,
    text,
    tool_use,
    write_file,
)
from tests.helpers.executors import (
    CLAUDE_BIN,
    Harness,
    assert_cancel_kills,
    assert_group_gone,
    assert_no_strays,
    event_log,
    event_log_names,
    interrupt_first_attempt,
    isolated_home,
    leave_unknown_session,
    needs_cli,
    retry_elsewhere,
    wait_for,
)

STALLED = Turn(text="too late", delay_s=120)  # the server "thinks" far longer than any test


@pytest.fixture
def fake() -> Iterator[FakeAnthropicServer]:
    with FakeAnthropicServer() as server:
        yield server


@pytest.fixture
def agent_env(
    fake: FakeAnthropicServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, ...]:
    """The worker environment the executor picks variables from; returns the allowlist."""
    isolated_home(tmp_path, monkeypatch)  # Claude Code keeps sessions and config under HOME
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-not-a-real-key")
    monkeypatch.setenv("CLAUDE_CODE_MAX_RETRIES", "1")  # default 10 retries take ~3 min
    return ("PATH", "HOME", "CLAUDE_CODE_MAX_RETRIES")


def harness(tmp_path: Path, allow: tuple[str, ...]) -> Harness:
    return Harness(tmp_path, allow, executor="claude-code", workflow_id="wf-claude")


@pytest.fixture
def h(tmp_path: Path, agent_env: tuple[str, ...]) -> Harness:
    return harness(tmp_path, agent_env)


def executor(system_prompt: str | None = None, **settings: Any) -> ClaudeCodeExecutor:
    return ClaudeCodeExecutor(
        ClaudeCodeSettings(bin=CLAUDE_BIN or "claude", **settings), system_prompt=system_prompt
    )


# --- without the CLI -------------------------------------------------------------------


def test_missing_binary_is_unavailable_and_says_how_to_install() -> None:
    missing = ClaudeCodeExecutor(ClaudeCodeSettings(bin="/nonexistent/claude"))
    with pytest.raises(ApplicationError) as err:
        missing.check_available()
    assert err.value.type == EXECUTOR_UNAVAILABLE
    assert err.value.non_retryable
    assert f"npm install -g @anthropic-ai/claude-code@{CLAUDE_CODE_VERSION}" in str(err.value)


def test_argv_keeps_task_text_as_one_element_after_double_dash(tmp_path: Path) -> None:
    h = harness(tmp_path, ("PATH",))
    ex = ClaudeCodeExecutor(
        ClaudeCodeSettings(bin="claude", allowed_tools=["Read", "Write"], max_budget_usd=3),
        system_prompt="You are the backend specialist.",
    )
    pin = h.ctx(budget=Budget(max_turns_per_phase=7, max_usd_per_phase=1.5)).phase_input
    argv = ex.argv("/bin/claude", pin, resume=None)
    assert argv[:5] == ["/bin/claude", "-p", "--output-format", "stream-json", "--verbose"]
    assert argv[argv.index("--permission-mode") + 1] == "acceptEdits"
    assert argv[argv.index("--max-turns") + 1] == "7"  # the task's budget wins
    assert argv[argv.index("--max-budget-usd") + 1] == "1.5"
    assert "--allowedTools=Read,Write" in argv
    assert argv[argv.index("--append-system-prompt") + 1] == "You are the backend specialist."
    assert argv[-2] == "--"
    assert "$(touch pwned)" in argv[-1]
    assert pin.title in argv[-1]
    resumed = ex.argv("/bin/claude", pin, resume="sess-1")
    assert resumed[resumed.index("--resume") + 1] == "sess-1"


async def test_stream_runner_kills_a_process_that_lingers_after_its_result(
    tmp_path: Path,
) -> None:
    script = (
        "import json, subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(json.dumps({'type': 'result', 'subtype': 'success'}), flush=True)\n"
        "time.sleep(60)\n"
    )
    events: list[dict[str, Any]] = []
    beats: list[dict[str, object]] = []
    started = time.monotonic()
    result = await run_event_stream(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"]},
        log_path=tmp_path / "events.jsonl",
        stderr_path=tmp_path / "stderr.log",
        limits=StreamLimits(timeout_s=30, stall_s=10, linger_s=1, heartbeat_every_s=0.5),
        on_event=events.append,
        is_final=lambda e: e.get("type") == "result",
        heartbeat=beats.append,
    )
    assert result.lingered
    assert result.events == 1
    assert events[0]["subtype"] == "success"
    assert time.monotonic() - started < 10
    pid = beats[0]["pid"]
    assert isinstance(pid, int)
    assert_group_gone(pid)  # the child it spawned went with it


# --- with the real CLI -----------------------------------------------------------------


@needs_cli
async def test_writes_a_real_file_and_reports_cost_turns_session(
    h: Harness, fake: FakeAnthropicServer
) -> None:
    # The pause before the last turn lets a periodic heartbeat report the first turn.
    turns = [write_file(str(h.workdir / "hello.txt"), "hello from the agent\n")]
    fake.load([*turns, text("Done.", delay_s=2)])
    ex = executor(system_prompt="SPECIALIST-MARKER: you are the backend specialist.")
    outcome = await ex.execute(h.ctx())

    assert (h.workdir / "hello.txt").read_text() == "hello from the agent\n"
    assert not (h.workdir / "pwned").exists()
    assert outcome.outcome == "done"
    result = next(e for e in event_log(h) if e["type"] == "result")
    session = result["session_id"]
    assert f"session {session}" in outcome.summary
    assert "2 turns" in outcome.summary
    assert f"${result['total_cost_usd']:.4f}" in outcome.summary
    assert "Done." in outcome.summary
    assert outcome.artifacts == [str(h.tmp / "logs" / "implement-r1-a1.claude.jsonl")]

    requests = fake.message_requests
    assert len(requests) == 2
    assert all(r.path == "/v1/messages?beta=true" for r in requests)
    first = requests[0].body
    assert "SPECIALIST-MARKER" in json.dumps(first["system"])
    assert "$(touch pwned)" in json.dumps(first["messages"])  # task text arrived verbatim
    first_event_beat = next(b for b in h.beats if b["events"] == 1)
    assert first_event_beat["session_id"] == session  # known from the first event on
    assert any(b["turns"] == 1 and b["last_event_at"] for b in h.beats), h.beats
    assert_no_strays(h)


@needs_cli
async def test_budget_exceeded_is_non_retryable(h: Harness, fake: FakeAnthropicServer) -> None:
    # 5M input tokens cost dollars at any list price; the cap is fifty cents.
    fake.load([write_file(str(h.workdir / "a.txt"), "x", input_tokens=5_000_000), text("ok")])
    with pytest.raises(ApplicationError) as err:
        await executor().execute(h.ctx(budget=Budget(max_usd_per_phase=0.5)))
    assert err.value.type == BUDGET_EXCEEDED
    assert err.value.non_retryable
    assert "dollar budget" in str(err.value)
    assert err.value.details[0]["cost_usd"] > 0.5


@needs_cli
async def test_max_turns_is_budget_exceeded(h: Harness, fake: FakeAnthropicServer) -> None:
    fake.load([], default=write_file(str(h.workdir / "loop.txt"), "again"))
    with pytest.raises(ApplicationError) as err:
        await executor().execute(h.ctx(budget=Budget(max_turns_per_phase=2)))
    assert err.value.type == BUDGET_EXCEEDED
    assert err.value.non_retryable
    assert "turn limit" in str(err.value)
    assert len(fake.message_requests) == 2


@needs_cli
async def test_api_error_is_retryable(h: Harness, fake: FakeAnthropicServer) -> None:
    fake.load([], default=api_error(529))
    with pytest.raises(ApplicationError) as err:
        await executor().execute(h.ctx())
    assert err.value.type == AGENT_API_ERROR
    assert not err.value.non_retryable
    assert "529" in str(err.value)
    assert len(fake.message_requests) == 2  # one try plus CLAUDE_CODE_MAX_RETRIES=1


@needs_cli
async def test_permission_denials_fail_although_claude_reports_success(
    h: Harness, fake: FakeAnthropicServer
) -> None:
    fake.load([write_file(str(h.workdir / "denied.txt"), "x"), text("I wrote it.")])
    with pytest.raises(ApplicationError) as err:
        await executor(permission_mode="dontAsk").execute(h.ctx())
    assert err.value.type == AGENT_PERMISSION_DENIED
    assert err.value.non_retryable
    assert "Write(denied.txt)" in str(err.value)
    assert not (h.workdir / "denied.txt").exists()


@needs_cli
async def test_stall_kills_the_process_group(h: Harness, fake: FakeAnthropicServer) -> None:
    fake.load([STALLED])
    started = time.monotonic()
    with pytest.raises(ApplicationError) as err:
        await executor(stall_s=3).execute(h.ctx())
    assert err.value.type == AGENT_STALLED
    assert not err.value.non_retryable
    assert time.monotonic() - started < 20
    assert len(fake.message_requests) == 1
    assert_no_strays(h)


@needs_cli
async def test_cancellation_mid_run_kills_the_process_group(
    h: Harness, fake: FakeAnthropicServer
) -> None:
    fake.load([STALLED])
    task = asyncio.ensure_future(executor().execute(h.ctx()))
    await wait_for(lambda: len(fake.message_requests) == 1 and bool(h.pids()))
    await assert_cancel_kills(h, task)


@needs_cli
async def test_retry_resumes_the_session_of_a_killed_attempt(
    h: Harness, fake: FakeAnthropicServer
) -> None:
    """Attempt 1 writes a file, then is cancelled; attempt 2 resumes the same conversation.

    Runs inside an ``ActivityEnvironment`` so attempt 2 finds the session where a
    retry on another worker would: in the last heartbeat of attempt 1 (its log
    directory is not shared).
    """
    fake.load([write_file(str(h.workdir / "first.txt"), "from attempt 1"), STALLED])
    env = ActivityEnvironment()
    ex = executor()
    last_beat = await interrupt_first_attempt(
        h, env, ex.execute, lambda: len(fake.message_requests) == 2
    )
    assert (h.workdir / "first.txt").is_file()  # attempt 1 wrote it, then was "thinking"

    fake.load([text("Resumed and finished.")])
    outcome = await retry_elsewhere(h, env, ex.execute, last_beat)

    assert outcome.outcome == "done"
    assert "Resumed and finished." in outcome.summary
    resumed = json.dumps(fake.message_requests[-1].body["messages"])
    assert "first.txt" in resumed
    assert "Add a greeting file" in resumed
    assert "interrupted" in resumed  # and the continuation prompt
    assert_no_strays(h)


@needs_cli
async def test_resume_of_an_unknown_session_starts_afresh(
    h: Harness, fake: FakeAnthropicServer
) -> None:
    ctx = h.ctx(attempt=2)
    leave_unknown_session(ctx, "claude")
    fake.load([write_file(str(h.workdir / "hello.txt"), "fresh\n"), text("Done afresh.")])
    outcome = await executor().execute(ctx)
    assert outcome.outcome == "done"
    assert (h.workdir / "hello.txt").read_text() == "fresh\n"
    assert "Add a greeting file" in json.dumps(fake.message_requests[0].body["messages"])
    assert event_log_names(ctx) == [
        "implement-r1-a2-resume.claude.jsonl",
        "implement-r1-a2.claude.jsonl",
    ]


@needs_cli
async def test_agent_gets_a_scrubbed_environment(h: Harness, fake: FakeAnthropicServer) -> None:
    dump = h.workdir / "env.txt"
    fake.load(
        [
            tool_use("Bash", {"command": f"env > {dump}", "description": "Dump the environment"}),
            text("Dumped."),
        ]
    )
    await executor(allowed_tools=["Bash"]).execute(h.ctx())
    env = dict(line.split("=", 1) for line in dump.read_text().splitlines() if "=" in line)
    assert "CANARY_SECRET" not in env  # not on the allowlist: never reaches the agent
    assert env["HOME"] == os.environ["HOME"]  # allowlisted
    assert env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    assert "canary-must-not-leak" not in dump.read_text()


def test_bad_setting_is_unavailable_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMPLFLOW_CLAUDE_PERMISSION_MODE", "yolo")
    with pytest.raises(ApplicationError) as err:
        ClaudeCodeExecutor.from_settings(Settings(data_dir=tmp_path))
    assert err.value.type == EXECUTOR_UNAVAILABLE and err.value.non_retryable
    assert "IMPLFLOW_CLAUDE_PERMISSION_MODE: Input should be" in str(err.value)
    assert "yolo" not in str(err.value)  # the value is never echoed (it could be a key)


def test_setting_that_is_not_json_is_unavailable_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMPLFLOW_CLAUDE_ALLOWED_TOOLS", "not json")  # pydantic's SettingsError
    with pytest.raises(ApplicationError) as err:
        ClaudeCodeExecutor.from_settings(Settings(data_dir=tmp_path))
    assert err.value.type == EXECUTOR_UNAVAILABLE
    assert "IMPLFLOW_CLAUDE_" in str(err.value)
