"""`implflow plan ...`: one-line errors that start nothing, and the commands on a real server."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import Result
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

import implflow.cli
from implflow.cli import app
from implflow.client import ImplflowClient, PlanClient
from implflow.plans import TaskState
from tests.helpers import WorkerFactory, new_id

runner = CliRunner()
NOWHERE = {"TEMPORAL_ADDRESS": "127.0.0.1:1"}  # nothing can start: no server there


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _yaml(
    tmp_path: Path, tasks: list[dict[str, Any]], name: str = "plan.yaml", **extra: Any
) -> Path:
    data = {"title": "Plan", "repo": str(tmp_path), "tasks": tasks, **extra}
    return _write(tmp_path / name, yaml.safe_dump(data))


BAD_PLANS: list[tuple[str, str, str]] = [
    (
        "plan.yaml",
        "title: P\nrepo: .\ntasks:\n- {id: a, title: A, depends_on: [b]}\n"
        "- {id: b, title: B, depends_on: [a]}\n",
        "depends_on: cycle a -> b -> a",
    ),
    (
        "plan.yaml",
        "title: P\nrepo: .\ntasks:\n- {id: a, title: A, depends_on: [ghost]}\n",
        "tasks[0] (a): depends_on: unknown task 'ghost'",
    ),
    (
        "plan.yaml",
        "title: P\nrepo: .\ntasks:\n- {id: a, title: A}\n- {id: a, title: B}\n",
        "tasks[1] (a): id: duplicate of tasks[0]",
    ),
    ("plan.yaml", "title: P\nrepo: .\ntasks: [{id: a, title: A}\n", "plan.yaml:"),
    ("plan.yaml", "title: P\nrepo: .\ntasks:\n- {id: a, title: A, executr: shell}\n", "executr"),
    (
        "plan.yaml",
        "title: P\nrepo: .\ntasks:\n- {id: a, title: A, specialist: api-guru}\n",
        "tasks[0] (a): specialist: unknown specialist 'api-guru'",
    ),
    (
        "plan.yaml",
        "title: P\nrepo: .\ntasks:\n- {id: a, title: A, executor: clod}\n",
        "unknown executor 'clod'",
    ),
    (
        "tasks.md",
        "---\nrepo: .\n---\n# Tasks: P\n\n## Phase 1\n\n- [ ] T001 Model\n"
        "- [ ] T002 API (depends on T010)\n",
        "tasks.md:9: T002 depends on T010, which is not in the file",
    ),
]


@pytest.mark.parametrize(("name", "text", "expected"), BAD_PLANS, ids=lambda v: str(v)[:20])
@pytest.mark.parametrize("command", ["run", "check"])
def test_bad_plans_are_one_line_exit_2_and_start_nothing(
    tmp_path: Path, command: str, name: str, text: str, expected: str
) -> None:
    (tmp_path / ".git").mkdir()  # the repo "." is this directory
    result = runner.invoke(app, ["plan", command, str(_write(tmp_path / name, text))], env=NOWHERE)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: invalid input: "), result.output
    assert expected in lines[0]


def test_a_missing_file_is_one_line_exit_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["plan", "run", str(tmp_path / "nope.yaml")], env=NOWHERE)
    assert result.exit_code == 2 and "no such file" in result.output


def test_check_prints_the_order_and_the_json_temporal_takes(tmp_path: Path) -> None:
    path = _yaml(
        tmp_path,
        [
            {"id": "api", "title": "API", "depends_on": ["model"]},
            {"id": "model", "title": "Model"},
        ],
    )
    result = runner.invoke(app, ["plan", "check", str(path)], env=NOWHERE)
    assert result.exit_code == 0, result.output
    assert "2 tasks" in result.output and "order: model, api" in result.output
    as_json = runner.invoke(app, ["plan", "check", str(path), "--json"], env=NOWHERE)
    assert json.loads(as_json.output)["tasks"][0]["depends_on"] == ["model"]


def test_an_unreachable_server_is_one_line_exit_1(tmp_path: Path) -> None:
    path = _yaml(tmp_path, [{"id": "a", "title": "A"}])
    result = runner.invoke(app, ["plan", "run", str(path)], env=NOWHERE)
    assert result.exit_code == 1 and "cannot reach Temporal" in result.output


# --- on the time-skipping server ---------------------------------------------------------


@pytest.fixture
def cli_on(ts_env: WorkflowEnvironment) -> Iterator[Any]:
    """Point the CLI's client at the test server and a task queue, for calls from a thread."""
    address = ts_env.client.service_client.config.target_host
    saved = implflow.cli.client_factory

    def use(task_queue: str) -> None:
        async def factory() -> ImplflowClient:
            return await ImplflowClient.connect(address, task_queue=task_queue)

        implflow.cli.client_factory = factory

    yield use
    implflow.cli.client_factory = saved


async def _invoke(*args: str) -> Result:
    return await asyncio.to_thread(runner.invoke, app, list(args))


async def test_run_approve_rerun_and_watch_through_the_cli(
    ts_env: WorkflowEnvironment, run_worker: WorkerFactory, repo: Path, tmp_path: Path, cli_on: Any
) -> None:
    write = [sys.executable, "-c", "import pathlib; pathlib.Path('done.txt').write_text('x')"]
    path = _yaml(
        tmp_path,
        [
            {"id": "model", "title": "Model", "commands": {"implement": write}},
            {
                "id": "api",
                "title": "API",
                "depends_on": ["model"],
                "phases": [{"name": "design"}, {"name": "implement"}],
                "approval": {"after": ["design"]},
            },
        ],
        repo=str(repo),
        defaults={"executor": "shell", "phases": [{"name": "implement"}]},
    )
    pid = new_id("plan")
    async with run_worker() as (_, tq):
        cli_on(tq)
        started = await _invoke("plan", "run", str(path), "--id", pid)
        assert started.exit_code == 0 and f"started plan {pid}" in started.output
        again = await _invoke("plan", "run", str(path), "--id", pid, "--json")
        # Worker logs share the captured stdout: pick the command's own JSON line.
        line = next(x for x in again.output.splitlines() if x.startswith('{"plan_id"'))
        assert json.loads(line) == {"plan_id": pid, "started": False}  # no second run
        other = _yaml(tmp_path, [{"id": "x", "title": "X"}], "other.yaml", repo=str(repo))
        refused = await _invoke("plan", "run", str(other), "--id", pid)
        assert refused.exit_code == 1 and "already running a different plan" in refused.output
        plans = PlanClient(ts_env.client, tq)
        for _ in range(200):
            status = await plans.plan_status(pid)
            if status.task("api").waiting == "approval of design":  # type: ignore[union-attr]
                break
            await asyncio.sleep(0.2)
        table = await _invoke("plan", "status", pid)
        assert "awaiting_approval" in table.output and "approval of" in table.output
        wrong = await _invoke("plan", "approve", pid, "api", "--phase", "implement")
        assert wrong.exit_code == 1 and "decision refused" in wrong.output
        approved = await _invoke(
            "plan", "approve", pid, "api", "--phase", "design", "--approver", "lead"
        )
        assert approved.exit_code == 0, approved.output
        watched = await _invoke("plan", "run", str(path), "--id", pid, "--watch")
        final = await plans.plan_status(pid)
    assert watched.exit_code == 0, watched.output
    assert "already running this plan; following it" in watched.output
    assert "completed" in watched.output and f"implflow/plan/{pid}" in watched.output
    assert [t.state for t in final.tasks] == [TaskState.COMPLETED] * 2
    assert final.task("api").runs[0].last_decision == "design approve by lead"  # type: ignore[union-attr]
