"""Contract tests of the ``codex`` executor with the REAL Codex CLI.

The CLI (pinned, see ``CODEX_VERSION``) talks to ``FakeResponsesServer`` on
127.0.0.1 through the provider implflow writes into an isolated ``CODEX_HOME``,
with a dummy key: no network, no spend. Install:

    npm install --prefix .tools/npm --no-audit --no-fund @openai/codex@0.169.0

or point ``IMPLFLOW_CODEX_BIN`` at a ``codex`` binary of that version. Without
either, the CLI tests are skipped (and say so), unless ``CI`` is set: then the
missing CLI is a failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.executors.codex import (
    CODEX_VERSION,
    CodexExecutor,
    CodexSettings,
    ModelPrice,
    Usage,
)
from implflow.errors import AGENT_API_ERROR, AGENT_STALLED, BUDGET_EXCEEDED, EXECUTOR_UNAVAILABLE
from implflow.models import Budget
from implflow.settings import Settings
from tests.fakes.openai_responses_server import (
    FakeResponsesServer,
    Turn,
    api_error,
    exec_command,
    text,
    write_file,
)
from tests.helpers.executors import (
    Harness,
    assert_cancel_kills,
    assert_no_strays,
    cli_binary,
    cli_marker,
    event_log,
    event_log_names,
    interrupt_first_attempt,
    isolated_home,
    leave_unknown_session,
    retry_elsewhere,
    wait_for,
)

INSTALL = f"npm install --prefix .tools/npm --no-audit --no-fund @openai/codex@{CODEX_VERSION}"
STALLED = Turn(text="too late", delay_s=120)  # the server "thinks" far longer than any test
FAKE_KEY = "sk-test-not-a-real-openai-key"
FAKE_MODEL = "gpt-fake"
FAKE_PRICE = ModelPrice(input_per_mtok=1.0, output_per_mtok=4.0, cached_input_per_mtok=0.5)
CODEX_BIN = cli_binary("codex", "IMPLFLOW_CODEX_BIN")
needs_cli = cli_marker(
    CODEX_BIN,
    f"Codex CLI not installed: run `{INSTALL}` or set IMPLFLOW_CODEX_BIN",
    required_in_ci=True,
)


@pytest.fixture
def fake() -> Iterator[FakeResponsesServer]:
    with FakeResponsesServer() as server:
        yield server


@pytest.fixture
def agent_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, ...]:
    """The worker environment the executor picks variables from; returns the allowlist."""
    isolated_home(tmp_path, monkeypatch)
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    return ("PATH", "HOME")


def harness(tmp_path: Path, allow: tuple[str, ...]) -> Harness:
    return Harness(
        tmp_path,
        allow,
        executor="codex",
        workflow_id="wf-codex",
        context_file="context/implement-r1.json",
    )


@pytest.fixture
def h(tmp_path: Path, agent_env: tuple[str, ...]) -> Harness:
    return harness(tmp_path, agent_env)


def executor(
    fake: FakeResponsesServer | None = None, system_prompt: str | None = None, **settings: Any
) -> CodexExecutor:
    defaults: dict[str, Any] = {
        "bin": CODEX_BIN or "codex",
        "model": FAKE_MODEL,
        "base_url": fake.base_url if fake else "http://127.0.0.1:9/v1",
        "prices": {FAKE_MODEL: FAKE_PRICE},
        "request_max_retries": 0,
        "stream_max_retries": 0,
    }
    return CodexExecutor(CodexSettings(**{**defaults, **settings}), system_prompt=system_prompt)


# --- without the CLI -------------------------------------------------------------------


def test_missing_binary_is_unavailable_and_says_how_to_install() -> None:
    missing = CodexExecutor(CodexSettings(bin="/nonexistent/codex"))
    with pytest.raises(ApplicationError) as err:
        missing.check_available()
    assert err.value.type == EXECUTOR_UNAVAILABLE
    assert err.value.non_retryable
    assert f"npm install -g @openai/codex@{CODEX_VERSION}" in str(err.value)


def test_argv_keeps_task_text_as_one_element_after_double_dash(tmp_path: Path) -> None:
    pin = harness(tmp_path, ("PATH",)).ctx().phase_input
    ex = executor()
    argv = ex.argv("/bin/codex", pin, resume=None)
    assert argv[:2] == ["/bin/codex", "exec"]
    assert {"--json", "--skip-git-repo-check", "--strict-config"} <= set(argv)
    assert argv[argv.index("--model") + 1] == FAKE_MODEL
    assert argv[-2] == "--"
    assert "$(touch pwned)" in argv[-1]
    assert pin.title in argv[-1]
    resumed = ex.argv("/bin/codex", pin, resume="thread-1")
    assert resumed[:3] == ["/bin/codex", "exec", "resume"]
    assert resumed[-3:-1] == ["thread-1", "--"]
    assert "interrupted" in resumed[-1]


def test_config_names_the_key_variable_and_confines_the_sandbox() -> None:
    tricky = 'Specialist "quoted"\nline two \\ backslash \x7f del \U0001f600'
    ex = CodexExecutor(
        CodexSettings(base_url="http://127.0.0.1:1/v1", api_key_env="MY_KEY"),
        system_prompt=tricky,
    )
    config = tomllib.loads(ex.config_toml())
    provider = config["model_providers"][config["model_provider"]]
    assert provider["env_key"] == "MY_KEY"
    assert provider["wire_api"] == "responses"
    assert provider["base_url"] == "http://127.0.0.1:1/v1"
    assert config["developer_instructions"] == tricky
    assert config["sandbox_mode"] == "workspace-write"
    assert config["approval_policy"] == "never"
    assert config["sandbox_workspace_write"] == {
        "network_access": False,
        "exclude_slash_tmp": True,
        "exclude_tmpdir_env_var": True,
    }
    assert config["analytics"] == {"enabled": False}
    assert config["features"]["unbounded_connection_retries"] is False


def test_api_key_setting_must_be_a_name_not_a_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMPLFLOW_CODEX_API_KEY_ENV", "sk-proj-abc123")
    with pytest.raises(ApplicationError) as err:
        CodexExecutor.from_settings(Settings(data_dir=tmp_path))
    assert err.value.type == EXECUTOR_UNAVAILABLE and err.value.non_retryable
    assert "IMPLFLOW_CODEX_API_KEY_ENV: Value error, must be the NAME" in str(err.value)
    assert "sk-proj" not in str(err.value)


def test_prices_come_from_the_table_and_cached_input_is_cheaper() -> None:
    usage = Usage(input_tokens=2_000_000, cached_input_tokens=1_000_000, output_tokens=500_000)
    assert usage.cost(FAKE_PRICE) == pytest.approx(1.0 + 0.5 + 2.0)
    assert usage.cost(None) is None
    settings = CodexSettings(prices={"gpt-5": {"input_per_mtok": 9, "output_per_mtok": 9}})
    assert settings.price("gpt-5") == ModelPrice(input_per_mtok=9, output_per_mtok=9)
    assert settings.price("gpt-5-mini") is not None  # defaults stay
    assert settings.price("unknown-model") is None


def test_bad_setting_is_unavailable_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMPLFLOW_CODEX_PRICES", "not json")
    with pytest.raises(ApplicationError) as err:
        CodexExecutor.from_settings(Settings(data_dir=tmp_path))
    assert err.value.type == EXECUTOR_UNAVAILABLE and err.value.non_retryable
    assert "IMPLFLOW_CODEX_" in str(err.value)
    monkeypatch.setenv("IMPLFLOW_CODEX_PRICES", '{"gpt-5": {"input_per_mtok": -1}}')
    with pytest.raises(ApplicationError) as err:
        CodexExecutor.from_settings(Settings(data_dir=tmp_path))
    # The variable, then where inside its JSON value the problem is.
    assert "IMPLFLOW_CODEX_PRICES (gpt-5.input_per_mtok): Input should be" in str(err.value)


# --- with the real CLI -----------------------------------------------------------------


@needs_cli
async def test_writes_a_real_file_and_reports_tokens_cost_session(
    h: Harness, fake: FakeResponsesServer
) -> None:
    # The pause before the last turn lets a periodic heartbeat report the first turn.
    fake.load(
        [
            write_file(str(h.workdir / "hello.txt"), "hello from codex\n", input_tokens=1000),
            text("Done.", delay_s=2, input_tokens=2000, cached_input_tokens=1000),
        ]
    )
    ex = executor(fake, system_prompt="SPECIALIST-MARKER: you are the backend specialist.")
    ctx = h.ctx()
    outcome = await ex.execute(ctx)

    assert (h.workdir / "hello.txt").read_text() == "hello from codex\n"
    assert not (h.workdir / "pwned").exists()
    assert outcome.outcome == "done"
    events = event_log(h)
    thread = next(e["thread_id"] for e in events if e["type"] == "thread.started")
    assert events[-1]["type"] == "turn.completed"
    assert outcome.usage is not None
    assert outcome.usage.session_id == thread
    assert outcome.usage.turns == 2
    assert (outcome.usage.input_tokens, outcome.usage.output_tokens) == (3000, 24)
    # 2000 uncached + 1000 cached input tokens, 24 output tokens, at the table's prices.
    assert outcome.usage.cost_usd == pytest.approx((2000 * 1.0 + 1000 * 0.5 + 24 * 4.0) / 1e6)
    assert f"session {thread}" in outcome.summary
    assert "Done." in outcome.summary
    assert outcome.artifacts == [str(h.tmp / "logs" / "implement-r1-a1.codex.jsonl")]

    requests = fake.response_requests
    assert len(requests) == 2
    assert all(r.path == "/v1/responses" for r in requests)
    assert requests[0].headers.get("authorization") == f"Bearer {FAKE_KEY}"
    first = json.dumps(requests[0].body["input"])
    assert "SPECIALIST-MARKER" in first
    assert "$(touch pwned)" in first  # task text arrived verbatim, never through a shell
    home = ctx.context_file.parent / "codex-home"
    assert FAKE_KEY not in (home / "config.toml").read_text()  # the key travels by name only
    assert not any(p.name == "config.toml" for p in h.workdir.rglob("*"))
    first_event_beat = next(b for b in h.beats if b["events"] == 1)
    assert first_event_beat["session_id"] == thread  # known from the first event on
    assert any(b["turns"] == 1 and b["last_event_at"] for b in h.beats), h.beats
    assert_no_strays(h)


@needs_cli
async def test_sandbox_refuses_writes_outside_the_workspace(
    h: Harness, fake: FakeResponsesServer
) -> None:
    outside = h.tmp / "outside.txt"
    fake.load([write_file(str(outside), "escaped"), text("Tried.")])
    outcome = await executor(fake).execute(h.ctx())
    assert not outside.exists()
    output = json.dumps(fake.response_requests[-1].body["input"][-2:])
    assert "Read-only file system" in output
    assert "1 failed" in outcome.summary or "commands" not in outcome.summary


@needs_cli
async def test_budget_exceeded_kills_the_run_and_is_non_retryable(
    h: Harness, fake: FakeResponsesServer
) -> None:
    # Without the cap this would loop for ever: every response asks for another command.
    fake.load([], default=write_file(str(h.workdir / "a.txt"), "x", input_tokens=400_000))
    started = time.monotonic()
    with pytest.raises(ApplicationError) as err:
        await executor(fake).execute(h.ctx(budget=Budget(max_usd_per_phase=0.5)))
    assert err.value.type == BUDGET_EXCEEDED
    assert err.value.non_retryable
    assert "dollar budget" in str(err.value)
    assert err.value.details[0]["cost_usd"] > 0.5
    assert len(fake.response_requests) <= 4  # $0.40 a response: killed soon after the cap
    assert time.monotonic() - started < 20
    assert_no_strays(h)


@needs_cli
async def test_turn_limit_is_budget_exceeded(h: Harness, fake: FakeResponsesServer) -> None:
    fake.load([], default=write_file(str(h.workdir / "loop.txt"), "again"))
    with pytest.raises(ApplicationError) as err:
        await executor(fake).execute(h.ctx(budget=Budget(max_turns_per_phase=2)))
    assert err.value.type == BUDGET_EXCEEDED
    assert err.value.non_retryable
    assert "turn limit" in str(err.value)
    assert len(fake.response_requests) <= 4
    assert_no_strays(h)


@needs_cli
async def test_unpriced_model_with_a_dollar_cap_is_refused(h: Harness) -> None:
    with pytest.raises(ApplicationError) as err:
        await executor(prices={}).execute(h.ctx(budget=Budget(max_usd_per_phase=1)))
    assert err.value.type == EXECUTOR_UNAVAILABLE
    assert FAKE_MODEL in str(err.value)


@needs_cli
async def test_api_error_is_retryable(h: Harness, fake: FakeResponsesServer) -> None:
    fake.load([], default=api_error(401))
    with pytest.raises(ApplicationError) as err:
        await executor(fake).execute(h.ctx())
    assert err.value.type == AGENT_API_ERROR
    assert not err.value.non_retryable
    assert "401" in str(err.value)
    assert len(fake.response_requests) == 1  # request_max_retries=0


@needs_cli
async def test_server_down_fails_fast_instead_of_waiting_for_ever(h: Harness) -> None:
    started = time.monotonic()
    with pytest.raises(ApplicationError) as err:
        await executor(None, stall_s=20).execute(h.ctx())  # base_url: a closed port
    assert err.value.type == AGENT_API_ERROR
    assert time.monotonic() - started < 15


@needs_cli
async def test_stall_kills_the_process_group(h: Harness, fake: FakeResponsesServer) -> None:
    fake.load([STALLED])
    started = time.monotonic()
    with pytest.raises(ApplicationError) as err:
        await executor(fake, stall_s=3).execute(h.ctx())
    assert err.value.type == AGENT_STALLED
    assert not err.value.non_retryable
    assert time.monotonic() - started < 20
    assert len(fake.response_requests) == 1
    assert_no_strays(h)


@needs_cli
async def test_cancellation_mid_run_kills_the_process_group(
    h: Harness, fake: FakeResponsesServer
) -> None:
    fake.load([STALLED])
    task = asyncio.ensure_future(executor(fake).execute(h.ctx()))
    await wait_for(lambda: len(fake.response_requests) == 1 and bool(h.pids()))
    await assert_cancel_kills(h, task)


@needs_cli
async def test_retry_resumes_the_thread_of_a_killed_attempt(
    h: Harness, fake: FakeResponsesServer
) -> None:
    """Attempt 1 writes a file, then is cancelled; attempt 2 resumes the same thread.

    Runs inside an ``ActivityEnvironment`` so attempt 2 finds the thread where a
    retry finds it: in the last heartbeat of attempt 1 (its log directory differs).
    """
    fake.load([write_file(str(h.workdir / "first.txt"), "from attempt 1"), STALLED])
    env = ActivityEnvironment()
    ex = executor(fake)
    last_beat = await interrupt_first_attempt(
        h, env, ex.execute, lambda: len(fake.response_requests) == 2
    )
    assert (h.workdir / "first.txt").is_file()  # attempt 1 wrote it, then was "thinking"
    thread = last_beat["session_id"]

    fake.load([text("Resumed and finished.", input_tokens=100, output_tokens=10)])
    outcome = await retry_elsewhere(h, env, ex.execute, last_beat)

    assert outcome.outcome == "done"
    assert "Resumed and finished." in outcome.summary
    assert outcome.usage is not None
    assert outcome.usage.session_id == thread
    assert (outcome.usage.input_tokens, outcome.usage.output_tokens) == (100, 10)  # its own
    resumed = json.dumps(fake.response_requests[-1].body["input"])
    assert "first.txt" in resumed  # the earlier tool call is in the thread's history
    assert "Add a greeting file" in resumed
    assert "interrupted" in resumed  # and the continuation prompt
    assert_no_strays(h)


@needs_cli
async def test_resume_of_an_unknown_thread_starts_afresh(
    h: Harness, fake: FakeResponsesServer
) -> None:
    ctx = h.ctx(attempt=2)
    leave_unknown_session(ctx, "codex")
    fake.load([write_file(str(h.workdir / "hello.txt"), "fresh\n"), text("Done afresh.")])
    outcome = await executor(fake).execute(ctx)
    assert outcome.outcome == "done"
    assert (h.workdir / "hello.txt").read_text() == "fresh\n"
    assert "Add a greeting file" in json.dumps(fake.response_requests[0].body["input"])
    assert event_log_names(ctx) == [
        "implement-r1-a2-resume.codex.jsonl",
        "implement-r1-a2.codex.jsonl",
    ]


@needs_cli
async def test_agent_gets_a_scrubbed_environment(h: Harness, fake: FakeResponsesServer) -> None:
    dump = h.workdir / "env.txt"
    fake.load([exec_command(f"env > {dump}"), text("Dumped.")])
    await executor(fake).execute(h.ctx())
    dumped = dump.read_text()
    env = dict(line.split("=", 1) for line in dumped.splitlines() if "=" in line)
    assert "CANARY_SECRET" not in env  # not on the allowlist: never reaches the agent
    assert "canary-must-not-leak" not in dumped
    assert FAKE_KEY not in dumped  # Codex keeps the provider key from its commands
    assert env["HOME"] == os.environ["HOME"]  # allowlisted
