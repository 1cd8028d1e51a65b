"""The harness of the coding-agent executor tests (claude-code, codex) with the real CLIs.

Where the pinned CLI is (``.tools/npm`` or the ``IMPLFLOW_*_BIN`` variable) and the
skip marker when it is not; the worker environment both agents start from (an
isolated HOME and a canary secret that must never reach the agent); a phase's
``ExecutionContext`` whose heartbeats are recorded; waiting for a condition; the
event log; the check that no process of a run survived it; and the steps of the
cancellation and retry scenarios both executors go through.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import ActivityEnvironment

from activities.executors.base import ExecutionContext, ExecutionOutcome
from implflow.models import Budget, PhaseInput, PhaseSpec

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCAL_BIN = REPO_ROOT / ".tools" / "npm" / "node_modules" / ".bin"


def cli_binary(program: str, setting: str) -> str | None:
    """The CLI the tests run: ``$setting`` if it names a file, else ``.tools/npm``'s."""
    configured = os.environ.get(setting)
    if configured:
        return configured if Path(configured).is_file() else None
    local = LOCAL_BIN / program
    return str(local) if local.is_file() else None


def cli_marker(
    binary: str | None, reason: str, *, required_in_ci: bool = False
) -> pytest.MarkDecorator:
    """Skip a test without the CLI (with ``required_in_ci``, not when ``CI`` is set)."""
    missing = binary is None and not (required_in_ci and os.environ.get("CI"))
    return pytest.mark.skipif(missing, reason=reason)


def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty HOME for the agent, and a secret that must never reach it."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("CANARY_SECRET", "canary-must-not-leak")


@dataclasses.dataclass
class Harness:
    tmp: Path
    allow: tuple[str, ...]
    executor: str
    workflow_id: str
    context_file: str = "context.json"
    """Relative to ``tmp``."""
    beats: list[dict[str, object]] = dataclasses.field(default_factory=list)

    @property
    def workdir(self) -> Path:
        return self.tmp / "repo"

    def ctx(
        self, *, attempt: int = 1, budget: Budget | None = None, log_dir: str = "logs"
    ) -> ExecutionContext:
        self.workdir.mkdir(exist_ok=True)
        pin = PhaseInput(
            workflow_id=self.workflow_id,
            title="Add a greeting file",
            description="Create hello.txt. Untrusted text: $(touch pwned); `id` && echo hi",
            repo=str(self.workdir),
            executor=self.executor,
            phase=PhaseSpec(name="implement", instructions="Write the file.", heartbeat_s=4),
            round=1,
            feedback=["-rf: a feedback line that looks like a flag"],
            budget=budget or Budget(),
        )
        return ExecutionContext(
            phase_input=pin,
            attempt=attempt,
            workdir=self.workdir,
            context_file=self.tmp / self.context_file,
            log_dir=self.tmp / log_dir,
            env_allowlist=self.allow,
            heartbeat=self.beats.append,
        )

    def pids(self) -> set[int]:
        return {pid for b in self.beats if isinstance(pid := b.get("pid"), int)}


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(stat.parent.name))
    return members


def assert_group_gone(pgid: int) -> None:
    """SIGKILL lands asynchronously: give a killed grandchild a moment to finish dying."""
    deadline = time.monotonic() + 3
    while (members := group_members(pgid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert members == [], f"process group {pgid} survived: {members}"


def assert_no_strays(h: Harness) -> None:
    """Each run led its own process group (the CLI, its children, the commands it ran)."""
    assert h.pids(), "no heartbeat carried the agent's pid"
    for pid in h.pids():
        assert_group_gone(pid)


async def wait_for(predicate: Callable[[], bool], within_s: float = 30.0) -> None:
    deadline = time.monotonic() + within_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


def event_log(h: Harness, log_dir: str = "logs") -> list[dict[str, Any]]:
    logs = sorted((h.tmp / log_dir).glob("*.jsonl"))
    return [json.loads(line) for path in logs for line in path.read_text().splitlines()]


async def assert_cancel_kills(h: Harness, task: asyncio.Future[Any]) -> None:
    """Cancelling a running attempt ends it at once, and its whole process group."""
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 10
    assert_no_strays(h)


async def interrupt_first_attempt(
    h: Harness,
    env: ActivityEnvironment,
    execute: Callable[[ExecutionContext], Awaitable[ExecutionOutcome]],
    reached: Callable[[], bool],
) -> dict[str, object]:
    """Run attempt 1 as an activity until ``reached``, then cancel it; its last heartbeat.

    That heartbeat names the agent's session: where a retry on another worker finds it.
    """
    first = asyncio.ensure_future(env.run(execute, h.ctx(attempt=1)))
    await wait_for(reached)
    await wait_for(lambda: any(b.get("session_id") for b in h.beats))
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    last_beat = h.beats[-1]
    assert isinstance(last_beat["session_id"], str)
    return last_beat


async def retry_elsewhere(
    h: Harness,
    env: ActivityEnvironment,
    execute: Callable[[ExecutionContext], Awaitable[ExecutionOutcome]],
    last_beat: dict[str, object],
) -> ExecutionOutcome:
    """Attempt 2 with attempt 1's last heartbeat, and a log directory of its own."""
    env.info = dataclasses.replace(env.info, attempt=2, heartbeat_details=[last_beat])
    return await env.run(execute, h.ctx(attempt=2, log_dir="other-worker-logs"))


def leave_unknown_session(ctx: ExecutionContext, log_tag: str) -> None:
    """A session file naming a session this worker's agent never heard of."""
    ctx.log_dir.mkdir(parents=True)
    (ctx.log_dir / f"implement-r1.{log_tag}-session.json").write_text(
        json.dumps({"session_id": "0b7e1c2a-0000-4000-8000-000000000000", "attempt": 1})
    )


def event_log_names(ctx: ExecutionContext) -> list[str]:
    return sorted(p.name for p in ctx.log_dir.glob("*.jsonl"))


from activities.executors.claude_code import CLAUDE_CODE_VERSION  # noqa: E402

CLAUDE_BIN = cli_binary("claude", "IMPLFLOW_CLAUDE_BIN")


needs_cli = cli_marker(
    CLAUDE_BIN,
    "Claude Code CLI not installed: run `npm install --prefix .tools/npm "
    f"@anthropic-ai/claude-code@{CLAUDE_CODE_VERSION}` or set IMPLFLOW_CLAUDE_BIN",
)
