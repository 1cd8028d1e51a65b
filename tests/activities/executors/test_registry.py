"""Executors by name: built once per worker from its settings, shared, and free of task state."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError

from activities.executors import ExecutorRegistry, get_executor
from activities.executors.base import ExecutionContext
from activities.executors.claude_code import ClaudeCodeExecutor
from activities.executors.codex import CodexExecutor
from implflow.errors import EXECUTOR_UNAVAILABLE
from implflow.settings import Settings
from tests.helpers.executors import Harness


def _agent_file(path: Path, name: str, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"---\nname: {name}\ndescription: d\n---\n{body}\n", encoding="utf-8")


def _with_specialist(ctx: ExecutionContext, name: str) -> ExecutionContext:
    pin = ctx.phase_input.model_copy(update={"specialist": name})
    return dataclasses.replace(ctx, phase_input=pin)


def test_each_executor_is_built_once_and_shared(tmp_path: Path) -> None:
    registry = ExecutorRegistry(Settings(data_dir=tmp_path))
    shell = registry.get("shell")
    assert registry.get("shell") is shell
    assert registry.get("replay") is not shell
    assert get_executor("shell", Settings(data_dir=tmp_path)) is not shell  # a new one


def test_unknown_executor_is_unavailable_and_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ApplicationError) as err:
        ExecutorRegistry(Settings(data_dir=tmp_path)).get("cobol")
    assert err.value.type == EXECUTOR_UNAVAILABLE and err.value.non_retryable
    assert "'claude-code'" in str(err.value) and "'shell'" in str(err.value)


def test_a_bad_agent_setting_fails_only_the_tasks_that_use_that_agent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMPLFLOW_CLAUDE_MAX_TURNS", "-3")
    registry = ExecutorRegistry(Settings(data_dir=tmp_path))  # the worker still starts
    with pytest.raises(ApplicationError) as err:
        registry.get("claude-code")
    assert err.value.type == EXECUTOR_UNAVAILABLE and err.value.non_retryable
    assert "IMPLFLOW_CLAUDE_MAX_TURNS" in str(err.value)
    assert registry.get("shell").name == "shell"


def test_agent_settings_are_read_when_built_not_at_each_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMPLFLOW_CLAUDE_MODEL", "model-at-start")
    built = ClaudeCodeExecutor.from_settings(Settings(data_dir=tmp_path))
    monkeypatch.setenv("IMPLFLOW_CLAUDE_MODEL", "model-changed-later")
    assert built.settings.model == "model-at-start"


def test_a_shared_executor_gives_each_task_its_own_specialist(tmp_path: Path) -> None:
    extra = tmp_path / "worker-specialists"
    _agent_file(extra / "alpha.md", "alpha", "ALPHA FROM THE WORKER'S DIRECTORY.")
    h = Harness(tmp_path, ("PATH",), executor="codex", workflow_id="wf-shared")
    _agent_file(h.workdir / ".claude/agents/beta.md", "beta", "BETA FROM THE REPO.")
    codex = CodexExecutor.from_settings(Settings(data_dir=tmp_path, specialists_dir=extra))

    alpha = codex.specialist_text(_with_specialist(h.ctx(), "alpha"))
    beta = codex.specialist_text(_with_specialist(h.ctx(), "beta"))

    assert "ALPHA FROM THE WORKER'S DIRECTORY." in alpha
    assert "BETA FROM THE REPO." in beta
    assert codex.system_prompt is None  # nothing of either task stayed on the executor
    config = tomllib.loads(codex.config_toml(beta))
    assert config["developer_instructions"] == beta
    assert "developer_instructions" not in tomllib.loads(codex.config_toml())
