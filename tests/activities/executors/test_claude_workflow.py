"""A whole task with the real Claude Code CLI: workflow, branch commits, ledger.

The time-skipping test server runs ImplementationWorkflow with the real activities;
every phase is done by the pinned ``claude`` binary talking to the scripted Messages
API on 127.0.0.1 (no key, no network). Each phase round must end in one commit on
``implflow/<id>`` with the agent's session id in its trailers, and the dollars Claude
Code computed from the served token counts must add up in ``status``.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from implflow.models import ImplementationInput, TaskState
from implflow.settings import Settings
from implflow.worker import build_worker
from tests.fakes.anthropic_server import FakeAnthropicServer, text, write_file
from tests.helpers import branch_file, branch_log, git_repo
from tests.helpers.executors import CLAUDE_BIN, isolated_home, needs_cli
from tests.helpers.workflow import start

pytestmark = needs_cli
PHASES = ["review", "design", "implement"]


async def test_claude_code_task_commits_each_round_and_adds_up_its_cost(
    ts_env: WorkflowEnvironment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = git_repo(tmp_path / "repo")
    wid = f"claude-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        data_dir=tmp_path / "data", env_allowlist=["PATH", "HOME", "CLAUDE_CODE_MAX_RETRIES"]
    )
    checkout = settings.folder("workspaces") / wid / "checkout"
    turns = []
    for phase in PHASES:  # per phase: write the artifact, then answer
        turns += [
            write_file(str(checkout / ".implflow" / f"{phase}.md"), f"# {phase}\n"),
            text(f"{phase} written"),
        ]
    isolated_home(tmp_path, monkeypatch)
    monkeypatch.setenv("IMPLFLOW_CLAUDE_BIN", str(CLAUDE_BIN))
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-not-a-real-key")
    monkeypatch.setenv("CLAUDE_CODE_MAX_RETRIES", "1")
    with FakeAnthropicServer(turns) as fake:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
        task = ImplementationInput.model_validate(
            {
                "title": "Artifacts",
                "description": "Write one artifact per phase.",
                "repo": str(repo),
                "executor": "claude-code",
                "gates": "off",
                "approval": {"after": []},
                "phases": [{"name": p} for p in PHASES],
                "budget": {"max_usd_per_phase": 1.0},
            }
        )
        tq = f"tq-{uuid.uuid4().hex}"
        async with build_worker(ts_env.client, settings, tq):
            handle = await start(ts_env, tq, task, wid)
            result = await handle.result()
        served = len(fake.requests_to("/v1/messages"))
    assert result.state == TaskState.COMPLETED
    assert branch_log(repo, wid) == [f"implflow: {p} (round 1)" for p in PHASES]
    bodies = subprocess.run(
        ["git", "log", "--format=%B", f"implflow/{wid}"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert bodies.count("Implflow-Executor: claude-code") == 3
    assert bodies.count("Implflow-Session: ") == 3  # the agent's session id, per round
    assert served == 6  # one request per turn: no phase ran twice
    assert result.ledger.cost_usd > 0 and result.ledger.turns >= 6
    assert result.ledger.tokens > 0
    assert all(p.cost_usd > 0 for p in result.phases)
    assert result.ledger.cost_usd == pytest.approx(sum(p.cost_usd for p in result.phases))
    assert branch_file(repo, wid, ".implflow/review.md") == "# review\n"
