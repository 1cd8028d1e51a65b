"""Opt-in live tests against the real model APIs (they cost a few cents).

Skipped unless asked for: ``IMPLFLOW_LIVE_TESTS=1`` plus the provider's key
(``ANTHROPIC_API_KEY`` for claude-code, ``OPENAI_API_KEY`` for codex) and the CLI.
CI has no keys, so these report as skipped there, with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from activities.executors import get_executor
from activities.executors.base import ExecutionContext
from implflow.models import Budget, PhaseInput, PhaseSpec
from implflow.settings import Settings

ROOT = Path(__file__).resolve().parents[3]


def _needs(key: str, binary: str, setting: str) -> None:
    if os.environ.get("IMPLFLOW_LIVE_TESTS") != "1":
        pytest.skip("live test: set IMPLFLOW_LIVE_TESTS=1 (and a real API key) to run it")
    if not os.environ.get(key):
        pytest.skip(f"live test: {key} is not set")
    local = ROOT / ".tools" / "npm" / "node_modules" / ".bin" / binary
    if not (os.environ.get(setting) or shutil.which(binary) or local.exists()):
        pytest.skip(f"live test: `{binary}` not installed")
    if local.exists():
        os.environ.setdefault(setting, str(local))


async def _run(executor_name: str, key: str, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    pin = PhaseInput(
        workflow_id="live",
        title="Say hello",
        description="Create hello.txt containing: hello",
        repo=str(work),
        executor=executor_name,
        phase=PhaseSpec(name="implement", instructions="Create the file, nothing else."),
        round=1,
        budget=Budget(max_usd_per_phase=0.5, max_turns_per_phase=6),
    )
    beats: list[dict[str, object]] = []
    ctx = ExecutionContext(
        phase_input=pin,
        attempt=1,
        workdir=work,
        context_file=tmp_path / "ctx.json",
        log_dir=tmp_path / "logs",
        env_allowlist=("PATH", "HOME", key),
        heartbeat=beats.append,
    )
    executor = get_executor(executor_name, Settings(data_dir=tmp_path / "data"))
    outcome = await executor.execute(ctx)
    assert (work / "hello.txt").read_text().strip().lower().startswith("hello")
    assert outcome.usage is not None and outcome.usage.session_id
    assert beats


async def test_live_claude_code_writes_a_file(tmp_path: Path) -> None:
    _needs("ANTHROPIC_API_KEY", "claude", "IMPLFLOW_CLAUDE_BIN")
    await _run("claude-code", "ANTHROPIC_API_KEY", tmp_path)


async def test_live_codex_writes_a_file(tmp_path: Path) -> None:
    _needs("OPENAI_API_KEY", "codex", "IMPLFLOW_CODEX_BIN")
    await _run("codex", "OPENAI_API_KEY", tmp_path)
