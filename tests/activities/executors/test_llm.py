"""Contract tests of the ``llm`` executor with pydantic-ai's own test models.

``FunctionModel`` scripts the model's turns (tool calls, then a final answer),
so the tests exercise the real agent loop and the real tools on a real
workspace, offline and deterministically.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic_ai import ModelHTTPError
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.models.test import TestModel
from pydantic_ai.usage import RequestUsage
from temporalio.exceptions import ApplicationError

from activities.executors import llm
from activities.executors.base import ExecutionContext
from activities.executors.llm import LlmExecutor, LlmSettings, build_model
from implflow.errors import AGENT_API_ERROR, BUDGET_EXCEEDED, EXECUTOR_UNAVAILABLE
from implflow.models import Budget, PhaseInput, PhaseSpec
from implflow.settings import Settings

Step = ToolCallPart | str


class Script:
    """A scripted model: each request answers with the next step; records tool results."""

    def __init__(self, *steps: Step) -> None:
        self.steps = list(steps)
        self.tool_results: list[str] = []
        self.prompt = ""

    def __call__(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        last = messages[-1]
        assert isinstance(last, ModelRequest)
        for part in last.parts:
            if isinstance(part, ToolReturnPart):
                self.tool_results.append(str(part.content))
            elif isinstance(part, UserPromptPart) and isinstance(part.content, str):
                self.prompt = part.content
        step = self.steps.pop(0) if self.steps else "done"
        usage = RequestUsage(input_tokens=100, output_tokens=10)
        if isinstance(step, str):
            return ModelResponse(parts=[TextPart(step)], usage=usage)
        return ModelResponse(parts=[step], usage=usage)


def call(tool: str, **args: object) -> ToolCallPart:
    return ToolCallPart(tool_name=tool, args=args)


def make_ctx(
    tmp_path: Path,
    beats: list[dict[str, object]],
    *,
    description: str = "Add a function f that returns 2.",
    budget: Budget | None = None,
) -> ExecutionContext:
    workdir = tmp_path / "a" / "ws"
    workdir.mkdir(parents=True)
    pin = PhaseInput(
        workflow_id="wf-1",
        title="Small change",
        description=description,
        repo=str(workdir),
        executor="llm",
        phase=PhaseSpec(name="implement", heartbeat_s=4),
        round=1,
        budget=budget or Budget(),
    )
    return ExecutionContext(
        phase_input=pin,
        attempt=1,
        workdir=workdir,
        context_file=tmp_path / "context.json",
        log_dir=tmp_path / "logs",
        env_allowlist=("PATH",),
        heartbeat=beats.append,
    )


def _text(path: Path) -> str:
    return path.read_text()


def executor(model: FunctionModel | TestModel, **settings: object) -> LlmExecutor:
    return LlmExecutor(LlmSettings(**settings), model=model)  # type: ignore[arg-type]


async def test_scripted_run_writes_and_edits_a_real_file(tmp_path: Path) -> None:
    beats: list[dict[str, object]] = []
    ctx = make_ctx(tmp_path, beats)
    script = Script(
        call("write_file", path="src/app.py", content="def f():\n    return 1\n"),
        call("edit_file", path="src/app.py", old="return 1", new="return 2"),
        call("edit_file", path="src/app.py", old="nowhere", new="x"),
        call("list_dir", path="src"),
        "Added f() returning 2.",
    )
    outcome = await executor(FunctionModel(script)).execute(ctx)

    assert (ctx.workdir / "src" / "app.py").read_text() == "def f():\n    return 2\n"
    assert script.tool_results[:2] == [
        "wrote 22 bytes to src/app.py",
        "edited src/app.py: replaced 1 occurrence",
    ]
    assert "must match exactly once" in script.tool_results[2]
    assert script.tool_results[3] == "app.py"
    assert "Add a function f that returns 2." in script.prompt
    assert outcome.outcome == "done"
    assert "5 model requests, 4 tool calls (1 refused)" in outcome.summary
    assert "500 input / 50 output tokens" in outcome.summary
    assert outcome.summary.endswith("Added f() returning 2.")
    transcript = Path(outcome.artifacts[0])
    assert transcript.parent == ctx.log_dir and "write_file" in _text(transcript)
    # One heartbeat per model request and per tool call, with counts and no file contents.
    assert len(beats) == 9
    # The last beat comes as the 5th request starts: 4 responses so far.
    assert beats[-1]["turns"] == 4 and beats[-1]["tool_calls"] == 4
    assert all("return 1" not in json.dumps(b) for b in beats)


async def test_traversal_is_refused_back_to_the_model_and_nothing_outside_changes(
    tmp_path: Path,
) -> None:
    beats: list[dict[str, object]] = []
    ctx = make_ctx(tmp_path, beats)
    (tmp_path / "etc").mkdir()
    (ctx.workdir / "sneaky").symlink_to(tmp_path / "etc")
    script = Script(
        call("read_file", path="../../etc/passwd"),
        call("write_file", path="../../outside.txt", content="x"),
        call("write_file", path="/tmp/abs.txt", content="x"),
        call("write_file", path="sneaky/planted", content="x"),
        call("edit_file", path=".git/config", old="a", new="b"),
        "gave up",
    )
    outcome = await executor(FunctionModel(script)).execute(ctx)

    assert len(script.tool_results) == 5
    assert all(r.startswith("ERROR (") and "refused" in r for r in script.tool_results)
    assert "uses '..' to leave the workspace" in script.tool_results[0]
    assert "is absolute" in script.tool_results[2]
    assert "symlink" in script.tool_results[3]
    assert "inside .git/" in script.tool_results[4]
    assert not (tmp_path / "outside.txt").exists()
    assert list((tmp_path / "etc").iterdir()) == []
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["ws"]
    assert "(5 refused)" in outcome.summary


async def test_run_command_passes_task_text_as_argv_without_a_shell(tmp_path: Path) -> None:
    hostile = "x; touch pwned && echo $(id) > pwned2 | cat `id` 'q\" $HOME *"
    beats: list[dict[str, object]] = []
    ctx = make_ctx(tmp_path, beats, description=hostile)
    record = "import json, sys; open('argv.json', 'w').write(json.dumps(sys.argv[1:])); print('ok')"
    script = Script(
        call("run_command", argv=[sys.executable, "-c", record, hostile, "*"]),
        call("run_command", argv=["no-such-program-xyz"]),
        "ran it",
    )
    await executor(FunctionModel(script)).execute(ctx)

    assert json.loads((ctx.workdir / "argv.json").read_text()) == [hostile, "*"]
    assert not (ctx.workdir / "pwned").exists() and not (ctx.workdir / "pwned2").exists()
    assert script.tool_results[0] == "exit code 0\nok"
    assert "not found" in script.tool_results[1]


async def test_run_command_has_a_scrubbed_env_and_a_time_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-canary-must-not-leak")
    beats: list[dict[str, object]] = []
    ctx = make_ctx(tmp_path, beats)
    dump = "import os; print(sorted(os.environ))"
    script = Script(
        call("run_command", argv=[sys.executable, "-c", dump]),
        call("run_command", argv=[sys.executable, "-c", "import time; time.sleep(30)"]),
        "ok",
    )
    await executor(FunctionModel(script), command_timeout_s=0.5).execute(ctx)

    assert "OPENAI_API_KEY" not in script.tool_results[0]
    assert script.tool_results[1].startswith("killed after 0.5s")


async def test_turn_budget_exceeded_is_non_retryable(tmp_path: Path) -> None:
    beats: list[dict[str, object]] = []
    ctx = make_ctx(tmp_path, beats, budget=Budget(max_turns_per_phase=2))
    script = Script(*[call("list_dir", path=".") for _ in range(10)])

    with pytest.raises(ApplicationError) as caught:
        await executor(FunctionModel(script), max_turns=40).execute(ctx)

    err = caught.value
    assert err.type == BUDGET_EXCEEDED and err.non_retryable
    assert "request_limit of 2" in str(err) and "2 model requests" in str(err)
    assert err.details[0]["turns"] == 2
    assert err.details[0]["input_tokens"] == 200
    assert (ctx.log_dir / "implement-r1-a1.llm.json").is_file()


async def test_tool_call_cap_is_a_budget_too(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, [])
    script = Script(*[call("list_dir", path=".") for _ in range(10)])
    with pytest.raises(ApplicationError) as caught:
        await executor(FunctionModel(script), max_tool_calls=3).execute(ctx)
    assert caught.value.type == BUDGET_EXCEEDED and caught.value.non_retryable


async def test_test_model_smoke(tmp_path: Path) -> None:
    """pydantic-ai's ``TestModel`` calls the tool with generated arguments, then answers."""
    ctx = make_ctx(tmp_path, [])
    outcome = await executor(TestModel(call_tools=["list_dir"])).execute(ctx)
    assert outcome.outcome == "done" and "1 tool calls" in outcome.summary


@pytest.mark.parametrize(
    ("status", "error_type", "non_retryable"),
    [(401, EXECUTOR_UNAVAILABLE, True), (503, AGENT_API_ERROR, False)],
)
async def test_http_errors_are_mapped(
    tmp_path: Path, status: int, error_type: str, non_retryable: bool
) -> None:
    def failing(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        raise ModelHTTPError(status, "m", body={"error": "Incorrect API key sk-abc***xyz"})

    with pytest.raises(ApplicationError) as caught:
        await executor(FunctionModel(failing)).execute(make_ctx(tmp_path, []))
    assert (caught.value.type, caught.value.non_retryable) == (error_type, non_retryable)
    assert "sk-abc" not in str(caught.value)


def unavailable(fn: Callable[[], object]) -> ApplicationError:
    with pytest.raises(ApplicationError) as caught:
        fn()
    assert caught.value.type == EXECUTOR_UNAVAILABLE and caught.value.non_retryable
    return caught.value


def test_missing_config_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("IMPLFLOW_LLM_MODEL", "IMPLFLOW_LLM_BASE_URL", "IMPLFLOW_LLM_API_KEY_ENV"):
        monkeypatch.delenv(name, raising=False)
    assert "set IMPLFLOW_LLM_MODEL" in str(unavailable(LlmExecutor(LlmSettings()).check_available))
    bare = LlmExecutor(LlmSettings(model="llama3"))
    assert "names no provider" in str(unavailable(bare.check_available))
    monkeypatch.delenv("MY_KEY", raising=False)
    keyless = LlmExecutor(LlmSettings(model="openai:gpt-4o", api_key_env="MY_KEY"))
    assert "names MY_KEY, which is not set" in str(unavailable(keyless.check_available))


def test_a_pasted_key_is_refused_without_echoing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMPLFLOW_LLM_API_KEY_ENV", "sk-proj-SECRETVALUE123")
    err = unavailable(lambda: LlmExecutor.from_settings(Settings(data_dir=tmp_path)))
    assert "IMPLFLOW_LLM_API_KEY_ENV:" in str(err)
    assert "NAME of an environment variable" in str(err)
    assert "SECRETVALUE" not in str(err)


def test_missing_pydantic_ai_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llm, "_MISSING", "No module named 'pydantic_ai'")
    err = unavailable(LlmExecutor(LlmSettings(model="openai:gpt-4o")).check_available)
    assert "implflow[llm]" in str(err)


def test_models_are_built_from_settings_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    local = build_model(LlmSettings(model="llama3.2", base_url="http://127.0.0.1:11434/v1"))
    assert (local.system, local.model_name) == ("openai", "llama3.2")
    monkeypatch.setenv("TEAM_ANTHROPIC_KEY", "sk-ant-dummy")
    claude = build_model(
        LlmSettings(model="anthropic:claude-sonnet-4-5", api_key_env="TEAM_ANTHROPIC_KEY")
    )
    assert (claude.system, claude.model_name) == ("anthropic", "claude-sonnet-4-5")
