"""PlanWorkflow on the time-skipping test server, with the real activities and the shell executor.

Every task runs a one- or two-phase pipeline whose command writes ``<task>.txt`` and records
when it ran (``trace.jsonl`` beside the repository), so order and concurrency are measured.
Writing outside the checkout is what the sandbox forbids, so these workers run with
``sandbox="off"``: the plan's logic is under test here, the sandbox in tests/activities.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from implflow.client import ImplflowClient, PlanClient
from implflow.converter import data_converter
from implflow.models import TaskState
from implflow.plans import (
    PlanInput,
    PlanResult,
    PlanStatus,
    parse_plan,
)
from tests.helpers import WorkerFactory, new_id
from workflows.plan import PlanWorkflow

HISTORIES = Path(__file__).parents[1] / "histories" / "plans"

TRACE = (
    "import json, sys, time, pathlib\n"
    "task, log, pause, code = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])\n"
    "with open(log, 'a') as f: f.write(json.dumps(['start', task, time.time()]) + '\\n')\n"
    "time.sleep(pause)\n"
    "pathlib.Path(f'{task}.txt').write_text(task + '\\n')\n"
    "with open(log, 'a') as f: f.write(json.dumps(['end', task, time.time()]) + '\\n')\n"
    "sys.exit(code)\n"
)
ONE_PHASE = [{"name": "implement", "retry": {"maximum_attempts": 1}}]
TWO_PHASES = [*ONE_PHASE, {"name": "test", "retry": {"maximum_attempts": 1}}]


def work(task: str, log: Path, pause: float = 0.3, code: int = 0) -> list[str]:
    """argv of a phase that writes ``<task>.txt``, records when it ran, exits ``code``."""
    return [sys.executable, "-c", TRACE, task, str(log), str(pause), str(code)]


def shell_task(
    task: str, log: Path, depends_on: tuple[str, ...] = (), **extra: Any
) -> dict[str, Any]:
    pause, code = extra.pop("pause", 0.3), extra.pop("code", 0)
    return {
        "id": task,
        "title": f"Task {task}",
        "depends_on": list(depends_on),
        "commands": {"implement": work(task, log, pause, code)},
        **extra,
    }


def plan(repo: Path, tasks: list[dict[str, Any]], **extra: Any) -> PlanInput:
    defaults = {"executor": "shell", "phases": ONE_PHASE, **extra.pop("defaults", {})}
    return parse_plan(
        {"title": "Diamond", "repo": str(repo), "defaults": defaults, "tasks": tasks, **extra}
    )


async def start(
    env: WorkflowEnvironment, tq: str, inp: PlanInput
) -> WorkflowHandle[Any, PlanResult]:
    return await env.client.start_workflow(
        "PlanWorkflow", inp, id=new_id("plan"), task_queue=tq, result_type=PlanResult
    )


async def wait_status(
    h: WorkflowHandle[Any, Any], ok: Callable[[PlanStatus], bool], timeout: float = 40.0
) -> PlanStatus:
    deadline = time.monotonic() + timeout
    while True:
        st = await h.query("status", result_type=PlanStatus)
        if ok(st):
            return st
        assert time.monotonic() < deadline, f"condition never met; last: {st.model_dump_json()}"
        await asyncio.sleep(0.2)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()


def intervals(log: Path) -> dict[str, tuple[float, float]]:
    starts: dict[str, float] = {}
    spans: dict[str, tuple[float, float]] = {}
    for line in log.read_text().splitlines():
        kind, task, at = json.loads(line)
        if kind == "start":
            starts[task] = at
        else:
            spans[task] = (starts[task], at)
    return spans


def peak(spans: dict[str, tuple[float, float]]) -> int:
    """The most tasks whose commands ran at the same time."""
    events = sorted([(s, 1) for s, _ in spans.values()] + [(e, -1) for _, e in spans.values()])
    running = most = 0
    for _, step in events:
        running += step
        most = max(most, running)
    return most


def by_id(status: PlanStatus | PlanResult) -> dict[str, Any]:
    return {t.id: t for t in status.tasks}


async def test_diamond_runs_in_order_stacked_and_integrated(
    ts_env: WorkflowEnvironment, run_worker: WorkerFactory, repo: Path, tmp_path: Path
) -> None:
    log = tmp_path / "trace.jsonl"
    inp = plan(
        repo,
        [
            shell_task("A", log),
            shell_task("B", log, ("A",), pause=1.0),
            shell_task("C", log, ("A",), pause=1.0),
            shell_task("D", log, ("B", "C")),
            shell_task("E", log, pause=1.0),
        ],
        concurrency=2,
    )
    async with run_worker(sandbox="off") as (_, tq):
        h = await start(ts_env, tq, inp)
        result = await asyncio.wait_for(h.result(), 60)
        status = await h.query("status", result_type=PlanStatus)
    assert result.state == TaskState.COMPLETED and result.totals.completed == 5
    spans = intervals(log)
    assert spans["A"][1] <= min(spans["B"][0], spans["C"][0])
    assert max(spans["B"][1], spans["C"][1]) <= spans["D"][0]
    assert peak(spans) == 2  # never three at once, though B, C and E could all run
    pid, tasks = h.id, by_id(result)
    b_tip, c_tip = (git(repo, "rev-parse", f"implflow/{pid}.{t}") for t in "BC")
    d_start = tasks["D"].start_commit
    assert sorted(git(repo, "rev-list", "--parents", "-n", "1", d_start).split()[1:]) == sorted(
        [b_tip, c_tip]
    )  # D started from the merge of B's and C's results
    assert tasks["D"].stacked_on == ["B", "C"]
    assert tasks["B"].start_commit == git(repo, "rev-parse", f"implflow/{pid}.A")
    assert tasks["E"].start_commit == git(repo, "rev-parse", "main")  # no dependency: the base
    integration = f"implflow/plan/{pid}"
    for task in "ABCDE":
        git(repo, "merge-base", "--is-ancestor", f"implflow/{pid}.{task}", integration)
        assert git(repo, "show", f"{integration}:{task}.txt") == task
    assert result.integration is not None
    assert result.integration.merged == ["A", "B", "C", "D", "E"]  # dependency order
    assert result.integration.test_passed is True  # no project kind: no checks to fail
    assert "integration test passed" in git(repo, "log", "-1", "--format=%s", integration)
    assert [t.state for t in status.tasks] == [TaskState.COMPLETED] * 5
    assert all(t.branch == f"implflow/{pid}.{t.id}" for t in status.tasks)


async def test_stop_lets_running_tasks_finish_their_phase_then_fails_naming_the_task(
    ts_env: WorkflowEnvironment, run_worker: WorkerFactory, repo: Path, tmp_path: Path
) -> None:
    log = tmp_path / "trace.jsonl"
    slow = shell_task("S", log, pause=2.0, phases=TWO_PHASES)
    slow["commands"]["test"] = work("S-test", log)
    inp = plan(
        repo,
        [shell_task("F", log, code=3), slow, shell_task("Y", log, ("S",))],
        concurrency=2,
    )
    async with run_worker(sandbox="off") as (_, tq):
        h = await start(ts_env, tq, inp)
        with pytest.raises(WorkflowFailureError) as failed:
            await asyncio.wait_for(h.result(), 60)
        status = await h.query("status", result_type=PlanStatus)
        s_run = await ts_env.client.get_workflow_handle(f"{h.id}.S").describe()
    assert isinstance(failed.value.cause, ApplicationError)
    assert "task F failed" in failed.value.cause.message
    assert "exited 3" in failed.value.cause.message
    tasks = by_id(status)
    assert tasks["F"].state == TaskState.FAILED
    assert tasks["S"].state == TaskState.CANCELLED  # paused after its phase, then cancelled
    assert s_run.status == WorkflowExecutionStatus.CANCELED
    assert "S" in intervals(log) and "S-test" not in intervals(log)  # implement ran to its end
    assert tasks["Y"].state == TaskState.BLOCKED  # what it needs was cancelled
    assert "Y" not in intervals(log)
    assert status.state == TaskState.FAILED and status.integration is None


async def test_continue_finishes_the_independent_tasks_and_integrates_them(
    ts_env: WorkflowEnvironment, run_worker: WorkerFactory, repo: Path, tmp_path: Path
) -> None:
    log = tmp_path / "trace.jsonl"
    inp = plan(
        repo,
        [
            shell_task("F", log, code=3),
            shell_task("X", log, ("F",)),
            shell_task("S", log),
            shell_task("Y", log, ("S",)),
        ],
        on_failure="continue",
    )
    async with run_worker(sandbox="off") as (_, tq):
        h = await start(ts_env, tq, inp)
        with pytest.raises(WorkflowFailureError) as failed:
            await asyncio.wait_for(h.result(), 60)
        status = await h.query("status", result_type=PlanStatus)
    message = failed.value.cause.message  # type: ignore[union-attr]
    assert "F (failed" in message and "X (blocked" in message
    tasks = by_id(status)
    assert [tasks[t].state for t in "FXSY"] == [
        TaskState.FAILED,
        TaskState.BLOCKED,
        TaskState.COMPLETED,
        TaskState.COMPLETED,
    ]
    assert set(intervals(log)) == {"F", "S", "Y"}
    assert status.integration is not None and status.integration.merged == ["S", "Y"]
    assert git(repo, "show", f"implflow/plan/{h.id}:Y.txt") == "Y"


async def test_approvals_through_the_plan_and_to_the_task_directly(
    ts_env: WorkflowEnvironment, run_worker: WorkerFactory, repo: Path, tmp_path: Path
) -> None:
    log = tmp_path / "trace.jsonl"
    gated = {"phases": [{"name": "design"}, *ONE_PHASE], "approval": {"after": ["design"]}}
    inp = plan(
        repo,
        [shell_task("A", log, **gated), shell_task("B", log, **gated)],
        concurrency=2,
    )
    async with run_worker(sandbox="off") as (_, tq):
        flow = PlanClient(ts_env.client, tq)
        h = await start(ts_env, tq, inp)
        st = await wait_status(h, lambda s: all(t.waiting == "approval of design" for t in s.tasks))
        assert [t.state for t in st.tasks] == [TaskState.AWAITING_APPROVAL] * 2
        through_plan = await flow.approve_task(h.id, "A", "design", "lead", "fine")
        direct = await ImplflowClient(ts_env.client, tq).decide(
            f"{h.id}.B", "design", "approve", "qa"
        )
        seen = await wait_status(h, lambda s: all(r.last_decision for t in s.tasks for r in t.runs))
        result = await asyncio.wait_for(h.result(), 60)
    assert through_plan.approver == "lead" and direct.approver == "qa"
    runs = {t.id: t.runs[0] for t in seen.tasks}
    assert runs["A"].last_decision == "design approve by lead"  # reached the right child
    assert runs["B"].last_decision == "design approve by qa"  # the plan saw it
    assert result.totals.completed == 2


async def test_cancelling_the_plan_cancels_its_running_tasks(
    ts_env: WorkflowEnvironment, run_worker: WorkerFactory, repo: Path, tmp_path: Path
) -> None:
    log = tmp_path / "trace.jsonl"
    inp = plan(repo, [shell_task("A", log, pause=30.0), shell_task("B", log, ("A",))])
    async with run_worker(sandbox="off") as (_, tq):
        h = await start(ts_env, tq, inp)
        await wait_status(h, lambda s: by_id(s)["A"].phase == "implement")
        await PlanClient(ts_env.client, tq).cancel_plan(h.id)
        with pytest.raises(WorkflowFailureError):
            await asyncio.wait_for(h.result(), 40)
        status = await h.query("status", result_type=PlanStatus)
        child = await ts_env.client.get_workflow_handle(f"{h.id}.A").describe()
    assert child.status == WorkflowExecutionStatus.CANCELED
    assert status.state == TaskState.CANCELLED
    assert status.error == "the plan was cancelled"
    assert by_id(status)["A"].state == TaskState.CANCELLED
    assert by_id(status)["B"].state == TaskState.PENDING


SHOW_CHECKOUT = (
    "import glob, subprocess, sys\n"
    "head = subprocess.run(['git', 'rev-parse', '--abbrev-ref', 'HEAD'], capture_output=True,"
    " text=True).stdout.strip()\n"
    "print('opening')\n"
    "print(head, *sys.argv[1:], *sorted(glob.glob('*.txt')))\n"
)


async def test_the_pull_request_is_opened_on_a_checkout_of_the_integration_branch(
    ts_env: WorkflowEnvironment, run_worker: WorkerFactory, repo: Path, tmp_path: Path
) -> None:
    log = tmp_path / "trace.jsonl"
    inp = plan(
        repo,
        [shell_task("A", log), shell_task("B", log, ("A",))],
        integrate={"pull_request": True},
    )
    command = [sys.executable, "-c", SHOW_CHECKOUT, "{branch}", "{title}", "{workflow_id}"]
    async with run_worker(sandbox="off", pr_command=command) as (_, tq):
        h = await start(ts_env, tq, inp)
        result = await asyncio.wait_for(h.result(), 60)
    branch = f"implflow/plan/{h.id}"
    assert result.integration is not None
    # The command's last line: the checkout's branch, its arguments, the tasks' files there.
    assert result.integration.pull_request == f"{branch} {branch} Diamond {h.id} A.txt B.txt"
    assert git(repo, "branch", "--list", f"implflow/{h.id}") == ""  # no branch of the plan id


COVERAGE = (
    "import sys, pathlib\n"
    "pathlib.Path('coverage.xml').write_text("
    'f\'<coverage lines-valid="100" lines-covered="{sys.argv[1]}" version="1"/>\')\n'
)
GATES = """kind = "none"

[[phases.implement.checks]]
name = "coverage"
format = "cobertura"
report = "coverage.xml"
"""


def candidates_plan(repo: Path, **extra: Any) -> PlanInput:
    (repo / ".implflow").mkdir()
    (repo / ".implflow" / "gates.toml").write_text(GATES)
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qm", "gates")
    cover = [sys.executable, "-c", COVERAGE]
    return plan(
        repo,
        [
            {
                "id": "api",
                "title": "Auth API",
                "candidates": [
                    {"commands": {"implement": [*cover, "82"]}},
                    {"commands": {"implement": [*cover, "95"]}},
                ],
                **extra,
            }
        ],
        defaults={"gates": "on"},
    )


async def test_candidates_are_ranked_by_coverage_and_a_person_picks(
    ts_env: WorkflowEnvironment, run_worker: WorkerFactory, repo: Path
) -> None:
    async with run_worker(sandbox="off") as (_, tq):
        h = await start(ts_env, tq, candidates_plan(repo))
        st = await wait_status(h, lambda s: s.pending is not None)
        assert st.pending is not None and st.pending.phase == "pick"
        assert st.pending.candidates == [2, 1]  # 95 % before 82 %
        assert "1. candidate 2" in st.pending.evidence and "coverage 95 %" in st.pending.evidence
        flow = PlanClient(ts_env.client, tq)
        with pytest.raises(Exception, match="give a candidate that completed"):
            await flow.approve_task(h.id, "api", "pick", "lead", candidate=3)
        await flow.approve_task(h.id, "api", "pick", "lead", "the leaner one", candidate=1)
        result = await asyncio.wait_for(h.result(), 60)
    task = by_id(result)["api"]
    assert task.picked == 1 and task.branch == f"implflow/{h.id}.api.c1"
    assert [r.label for r in task.runs] == ["picked", "not picked"]
    assert [r.figures.coverage_pct for r in task.runs] == [82.0, 95.0]  # type: ignore[union-attr]
    assert [(d.phase, d.approver, d.candidate) for d in result.decisions] == [("pick", "lead", 1)]
    integration = f"implflow/plan/{h.id}"
    assert "82" in git(repo, "show", f"{integration}:coverage.xml")
    git(repo, "rev-parse", "--verify", f"implflow/{h.id}.api.c2")  # the other one is kept


async def test_auto_pick_takes_the_better_candidate(
    ts_env: WorkflowEnvironment, run_worker: WorkerFactory, repo: Path
) -> None:
    async with run_worker(sandbox="off") as (_, tq):
        h = await start(ts_env, tq, candidates_plan(repo, auto_pick="best"))
        result = await asyncio.wait_for(h.result(), 60)
    task = by_id(result)["api"]
    assert task.picked == 2 and task.ranking == [2, 1]
    assert [(d.phase, d.approver, d.candidate) for d in result.decisions] == [
        ("pick", "auto_pick: best", 2)
    ]


async def test_a_long_plan_continues_as_new_and_its_tasks_keep_running(
    ts_env: WorkflowEnvironment, run_worker: WorkerFactory, repo: Path, tmp_path: Path
) -> None:
    log = tmp_path / "trace.jsonl"
    tasks = [shell_task(f"T{i}", log, pause=0.1) for i in range(12)]
    inp = plan(repo, tasks, concurrency=4, continue_as_new_after=200)
    async with run_worker(sandbox="off") as (_, tq):
        h = await start(ts_env, tq, inp)
        result = await asyncio.wait_for(h.result(), 60)
        status = await h.query("status", result_type=PlanStatus)
    assert result.totals.completed == 12
    assert status.continued >= 1
    assert set(intervals(log)) == {f"T{i}" for i in range(12)}  # each ran exactly once
    assert len(log.read_text().splitlines()) == 24


@pytest.mark.parametrize("path", sorted(HISTORIES.glob("*.json")), ids=lambda p: p.stem)
async def test_saved_plan_history_replays(path: Path) -> None:
    from temporalio.client import WorkflowHistory

    text = await asyncio.to_thread(path.read_text, "utf-8")
    history = WorkflowHistory.from_json(f"replay-plan-{path.stem}", text)
    replayer = Replayer(workflows=[PlanWorkflow], data_converter=data_converter)
    await replayer.replay_workflow(history)


def test_a_plan_history_is_saved() -> None:
    assert (HISTORIES / "diamond.json").is_file()


async def test_the_example_plan_runs_offline_with_the_replay_executor(
    ts_env: WorkflowEnvironment, run_worker: WorkerFactory, tmp_path: Path
) -> None:
    from implflow.demo import make_demo_repo
    from implflow.plans import load_plan

    repo = make_demo_repo(tmp_path)
    example = Path(__file__).parents[2] / "examples" / "plans" / "todo-priorities.yaml"
    inp = load_plan(example, repo=str(repo))
    async with run_worker(sandbox="off") as (_, tq):
        h = await start(ts_env, tq, inp)
        result = await asyncio.wait_for(h.result(), 90)
    assert [t.state for t in result.tasks] == [TaskState.COMPLETED] * 3
    assert [t.specialist for t in result.tasks] == [
        "database-implementer",
        "api-designer",
        "test-engineer",
    ]
    integration = result.integration
    assert integration is not None and integration.test_passed is True
    assert integration.merged == ["priority-store", "priority-api", "priority-tests"]
    branch = f"implflow/plan/{h.id}"
    assert "PRIORITIES" in git(repo, "show", f"{branch}:todo_service/app.py")
    assert "old_database" in git(repo, "show", f"{branch}:tests/test_priority.py").replace(
        "an_old_database", "old_database"
    )
    assert "5 passed" in git(repo, "show", f"{branch}:.implflow/reports/integrate/command.log")


SHARED = "import pathlib, sys; pathlib.Path('shared.txt').write_text(sys.argv[1] + '\\n')"


async def test_merge_conflicts_wait_for_a_person_with_the_files_as_evidence(
    ts_env: WorkflowEnvironment, run_worker: WorkerFactory, repo: Path, tmp_path: Path
) -> None:
    def writes_shared(task: str, *deps: str) -> dict[str, Any]:
        return {
            "id": task,
            "title": f"Task {task}",
            "depends_on": list(deps),
            "commands": {"implement": [sys.executable, "-c", SHARED, task]},
        }

    inp = plan(repo, [writes_shared("B"), writes_shared("C"), writes_shared("D", "B", "C")])
    async with run_worker(sandbox="off") as (_, tq):
        flow = PlanClient(ts_env.client, tq)
        h = await start(ts_env, tq, inp)
        st = await wait_status(h, lambda s: s.pending is not None)
        assert st.pending is not None and (st.pending.task, st.pending.phase) == ("D", "merge")
        assert "shared.txt" in st.pending.evidence  # stacking D on B and C conflicts
        assert by_id(st)["D"].conflict_files == ["shared.txt"]
        with pytest.raises(Exception, match="decide one of approve, abort"):  # no waive here
            await flow.decide_plan(h.id, "D", "merge", "waive", "lead")
        git(repo, "branch", f"implflow/{h.id}.D", f"implflow/{h.id}.B")  # resolved: take B's
        await flow.approve_task(h.id, "D", "merge", "lead", "took B's version")
        st = await wait_status(h, lambda s: s.pending is not None and s.pending.task == "C")
        assert st.pending is not None and st.pending.phase == "merge" and st.stage == "integrate"
        assert "conflicts in:\nshared.txt" in st.pending.evidence
        await flow.decide_plan(h.id, "C", "merge", "waive", "lead", "C is superseded by D")
        result = await asyncio.wait_for(h.result(), 60)
    assert result.state == TaskState.COMPLETED
    assert by_id(result)["D"].start_commit == git(repo, "rev-parse", f"implflow/{h.id}.B")
    assert result.integration is not None
    assert result.integration.merged == ["B", "D"] and result.integration.left_out == ["C"]
    assert git(repo, "show", f"implflow/plan/{h.id}:shared.txt") == "D"
    assert [(d.task, d.phase, d.decision) for d in result.decisions] == [
        ("D", "merge", "approve"),
        ("C", "merge", "waive"),
    ]


async def test_the_plan_budget_pauses_its_tasks_until_a_person_grants_more(
    ts_env: WorkflowEnvironment, tmp_path: Path, repo: Path
) -> None:
    from temporalio.worker import Worker

    from activities.phases import ImplActivities
    from activities.plans import PlanActivities
    from implflow.plans import TaskRun
    from implflow.settings import Settings
    from workflows import ImplementationWorkflow

    class ThreeDollarTasks(PlanActivities):
        """Every task is seen spending $3 (the shell executor spends nothing)."""

        async def _run(self, workflow_id: str) -> TaskRun | None:
            run = await super()._run(workflow_id)
            return run.model_copy(update={"cost_usd": 3.0}).fingerprinted() if run else None

    log = tmp_path / "trace.jsonl"
    second = shell_task("B", log, ("A",), pause=1.0, phases=TWO_PHASES)
    second["commands"]["test"] = work("B-test", log)
    inp = plan(repo, [shell_task("A", log), second], budget={"max_usd_total": 5})
    settings = Settings(data_dir=tmp_path / "data", sandbox="off")
    impl = ImplActivities(settings)
    tq = new_id("tq")
    async with Worker(
        ts_env.client,
        task_queue=tq,
        workflows=[ImplementationWorkflow, PlanWorkflow],
        activities=[
            impl.prepare_task,
            impl.run_phase,
            impl.run_gate,
            impl.send_reminder,
            *ThreeDollarTasks(settings, ts_env.client).all(),
        ],
    ):
        h = await start(ts_env, tq, inp)
        st = await wait_status(
            h, lambda s: s.pending is not None and by_id(s)["B"].state == TaskState.PAUSED
        )
        assert st.pending is not None and (st.pending.task, st.pending.phase) == ("plan", "budget")
        assert "spent $6.00 of $5.00" in st.pending.evidence
        assert st.state == TaskState.AWAITING_APPROVAL
        assert "B-test" not in intervals(log)  # paused after its first phase
        await PlanClient(ts_env.client, tq).approve_task(
            h.id, "plan", "budget", "lead", budget_usd=10
        )
        result = await asyncio.wait_for(h.result(), 60)
    assert result.totals.completed == 2 and result.totals.cost_usd == 6.0
    assert "B-test" in intervals(log)  # resumed
    assert [(d.phase, d.budget_usd) for d in result.decisions] == [("budget", 10.0)]
