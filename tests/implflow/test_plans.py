"""Plan files: YAML and markdown task lists into one PlanInput; one-line errors; pure helpers."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from activities.specialists import find_specialist
from implflow.errors import InvalidInputError
from implflow.models import (
    GateCheck,
    GateResult,
    ImplementationResult,
    Ledger,
    PhaseStatus,
    TaskState,
)
from implflow.plan_markdown import parse_task_list
from implflow.plans import (
    CandidateFigures,
    PlanPending,
    PlanState,
    PlanStatus,
    PlanTaskStatus,
    TaskRun,
    candidate_figures,
    check_specialists,
    default_plan_id,
    find_cycle,
    load_plan,
    parse_plan,
    plan_json,
    plan_table,
    rank_runs,
    topological_order,
)

EXAMPLES = Path(__file__).parents[2] / "examples" / "plans"
NEW_SPECIALISTS = ("database-implementer", "api-designer", "test-engineer", "frontend-implementer")

TASKS_MD = """\
---
description: "Task list for feature implementation"
implflow:
  repo: ./album
  concurrency: 3
  defaults:
    executor: codex
---

# Tasks: Photo albums

**Input**: Design documents from `/specs/003-photo-albums/`

## Format: `[ID] [P?] [Story] Description`
- **[P]**: Can run in parallel (different files, no dependencies)

## Phase 1: Setup

- [X] T001 Create the albums package skeleton
- [ ] T002 Add Pillow and python-multipart to pyproject.toml

## Phase 2: Foundational (specialist: database-implementer)

- [ ] T003 [P] Album table and migration in src/db/migrations/004_albums.py
- [ ] T004 [P] Photo table with a foreign key to albums in src/db/migrations/005_photos.py
- [ ] T005 Repository for albums and photos in src/repositories/albums.py

## Phase 3: User Story 1 - Upload photos (Priority: P1)

- [ ] T006 [P] [US1] Contract tests for POST /albums/{id}/photos (specialist: test-engineer)
- [ ] T007 [US1] Upload endpoint with size and type limits in src/api/photos.py
  - Reject files over 20 MB with 413.
  - Thumbnails are made after the response (depends on T004).
- [ ] T008 [P] [US1] Thumbnail worker in src/workers/thumbs.py

### T009 [US1] Album sharing links

Signed, expiring links for one album; revoking a link is immediate.
This needs the repository first, after T005.

## Dependencies

- T008 depends on T007
- T002 blocks T006-T008

```text
- [ ] T099 an example inside a code block: not a task
T010 depends on T099
```
"""


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _plan(**extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "title": "Auth service",
        "repo": "/srv/auth",
        "tasks": [
            {"id": "model", "title": "Data model"},
            {"id": "api", "title": "Auth API", "depends_on": ["model"]},
        ],
    }
    data.update(extra)
    return data


def _error(data: dict[str, Any]) -> str:
    with pytest.raises(InvalidInputError) as caught:
        parse_plan(data)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("invalid input: ")
    return message


# --- YAML ---------------------------------------------------------------------------------


def test_the_yaml_examples_load(tmp_path: Path) -> None:
    plan = load_plan(EXAMPLES / "auth-service.yaml")
    assert [t.id for t in plan.tasks] == [
        "data-model",
        "auth-api-contract",
        "auth-api",
        "users",
        "auth-tests",
    ]
    assert plan.repo == str((EXAMPLES / "../../../auth-service").resolve())  # against the file
    assert plan.budget.max_usd_total == 60 and plan.integrate.pull_request
    api = plan.task("auth-api")
    assert api.count == 2 and api.depends_on == ["data-model", "auth-api-contract"]
    child = plan.task_input(api, 2)
    assert child.executor == "claude-code" and child.budget.max_usd_per_phase == 4
    assert child.approval.after == ["design", "verify"]
    assert plan.task_input(plan.task("auth-api-contract")).skip == ["optimize"]
    assert "Its branch starts from the results of data-model" in child.description

    todo = load_plan(EXAMPLES / "todo-priorities.yaml", repo=str(tmp_path))
    assert todo.repo == str(tmp_path)
    cassette = todo.task_input(todo.task("priority-api")).cassette
    assert cassette == str(EXAMPLES / "cassettes" / "priority-api")
    assert Path(cassette, "implement-r1.patch").is_file()
    assert todo.task_input(todo.tasks[0]).gates == "off"


def test_defaults_merge_key_by_key_and_tasks_win() -> None:
    plan = parse_plan(
        _plan(
            defaults={
                "executor": "shell",
                "approval": {"after": ["design"], "remind_after_s": 3600, "deadline_s": 7200},
                "stack": False,
            },
            tasks=[
                {"id": "a", "title": "A", "approval": {"deadline_s": 90000}, "gates": "on"},
                {"id": "b", "title": "B", "stack": True},
            ],
        )
    )
    a = plan.task_input(plan.tasks[0])
    assert a.approval.after == ["design"] and a.approval.deadline_s == 90000
    assert a.executor == "shell" and a.gates == "on"
    assert [t.stack for t in plan.tasks] == [False, True]
    assert a.description.startswith("A\n\nThis task is part of the plan")  # title by default


def test_the_json_form_is_what_the_temporal_cli_takes() -> None:
    plan = load_plan(EXAMPLES / "auth-service.yaml")
    again = parse_plan(plan_json(plan))
    assert again.model_dump() == plan.model_dump()


def test_the_same_content_gets_the_same_default_id() -> None:
    first, second = parse_plan(_plan()), parse_plan(_plan())
    assert default_plan_id(first) == default_plan_id(second)
    assert default_plan_id(first).startswith("plan-auth-service-")
    changed = parse_plan(_plan(concurrency=3))
    assert default_plan_id(changed) != default_plan_id(first)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"tasks": [{"id": "a", "title": "A", "depends_on": ["zz"]}]},
            "tasks[0] (a): depends_on: unknown task 'zz'; known: a",
        ),
        (
            {
                "tasks": [
                    {"id": "a", "title": "A", "depends_on": ["c"]},
                    {"id": "b", "title": "B", "depends_on": ["a"]},
                    {"id": "c", "title": "C", "depends_on": ["b"]},
                ]
            },
            "depends_on: cycle a -> c -> b -> a",
        ),
        (
            {"tasks": [{"id": "a", "title": "A"}, {"id": "a", "title": "Again"}]},
            "tasks[1] (a): id: duplicate of tasks[0]",
        ),
        ({"tasks": [{"id": "a", "titel": "A"}]}, "tasks[0] (a): "),
        (
            {"tasks": [{"id": "a", "title": "A", "titel": "x"}]},
            "tasks[0] (a): unknown field(s) ['titel']",
        ),
        ({"tasks": [{"id": "a b", "title": "A"}]}, "tasks[0] (a b): id:"),
        ({"tasks": [{"id": "a", "title": "A", "depends_on": ["a"]}]}, "depends_on: itself"),
        (
            {"tasks": [{"id": "a", "title": "A", "skip": ["shipping"]}]},
            "tasks[0] (a): skip: unknown phase name(s) ['shipping']",
        ),
        (
            {"tasks": [{"id": "a", "title": "A", "candidates": [{"cassete": "x"}]}]},
            "tasks[0] (a): candidates[1]: unknown field(s) ['cassete']",
        ),
        (
            {"tasks": [{"id": "a", "title": "A", "candidates": 9}]},
            "tasks[0] (a): candidates",
        ),
        ({"concurrency": 0}, "concurrency:"),
        ({"on_failure": "retry"}, "on_failure:"),
        ({"defaults": {"executr": "shell"}}, "defaults: unknown field(s) ['executr']"),
        ({"defaults": {"gates": False}}, "tasks[0] (model): gates:"),
        ({"base": "../main"}, "base:"),
        ({"tasks": []}, "tasks:"),
        ({"colour": "red"}, "colour:"),
    ],
)
def test_bad_plans_are_one_line_naming_the_task_and_field(
    change: dict[str, Any], expected: str
) -> None:
    assert expected in _error(_plan(**change))


def test_a_long_cycle_is_reported_with_its_path() -> None:
    tasks = [{"id": f"t{i}", "title": f"T{i}", "depends_on": [f"t{i + 1}"]} for i in range(5)]
    tasks.append({"id": "t5", "title": "T5", "depends_on": ["t2"]})
    assert "depends_on: cycle t2 -> t3 -> t4 -> t5 -> t2" in _error(_plan(tasks=tasks))


def test_unknown_specialist_names_the_task_and_lists_the_available(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _write(repo / ".claude/agents/security-reviewer.md", "---\nname: security-reviewer\n---\nx\n")
    plan = parse_plan(
        _plan(
            repo=str(repo),
            tasks=[
                {"id": "a", "title": "A", "specialist": "security-reviewer"},
                {"id": "b", "title": "B", "specialist": "api-guru"},
            ],
        )
    )
    with pytest.raises(InvalidInputError) as caught:
        check_specialists(plan)
    message = str(caught.value)
    assert message.startswith("invalid input: tasks[1] (b): specialist: unknown specialist")
    assert "'api-guru'" in message and "security-reviewer" in message
    assert all(name in message for name in NEW_SPECIALISTS)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("title: x\ntasks: [\n", "plan.yaml:3: not valid YAML"),
        ("- just\n- a list\n", "plan.yaml: must be a mapping"),
        ("title: x\ntasks: [{id: a, title: A}]\n", "plan.yaml: repo: required"),
    ],
)
def test_bad_files_are_one_line(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(InvalidInputError, match=r"^invalid input: ") as caught:
        load_plan(_write(tmp_path / "plan.yaml", text))
    assert expected in str(caught.value) and "\n" not in str(caught.value)


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="no such file"):
        load_plan(tmp_path / "nope.yaml")


# --- markdown task lists ---------------------------------------------------------------------


def test_a_spec_kit_task_list_maps_to_a_plan(tmp_path: Path) -> None:
    plan = load_plan(_write(tmp_path / "specs" / "tasks.md", TASKS_MD))
    assert plan.title == "Photo albums"
    assert plan.repo == str((tmp_path / "specs" / "album").resolve())
    assert plan.concurrency == 3 and plan.defaults == {"executor": "codex"}
    deps = {t.id: t.depends_on for t in plan.tasks}
    assert deps == {
        "T002": [],  # T001 is done: left out, and its dependency counts as met
        "T003": ["T002"],  # a phase starts after the previous phase's last tasks
        "T004": ["T002"],  # [P]: side by side with T003
        "T005": ["T003", "T004"],  # not [P]: after the [P] tasks before it
        "T006": ["T005", "T002"],  # [P] after the phase; "T002 blocks T006-T008"
        "T007": ["T006", "T004", "T002"],  # after the [P] task before it; "(depends on T004)"
        "T008": ["T007", "T002"],  # [P] after T007 (not [P]), and "T008 depends on T007"
        "T009": ["T008", "T005"],  # a heading task; "after T005" in its text
    }
    specialists = {t.id: t.specialist for t in plan.tasks}
    assert specialists["T003"] == "database-implementer"  # from the phase heading
    assert specialists["T006"] == "test-engineer"  # from the item
    assert specialists["T002"] is None and specialists["T007"] is None
    t007 = plan.task("T007")
    assert t007.title == "Upload endpoint with size and type limits in src/api/photos.py"
    assert "Reject files over 20 MB with 413." in t007.description
    assert "Labels: US1" in t007.description
    assert "Phase: Phase 3: User Story 1 - Upload photos (Priority: P1)" in t007.description
    t009 = plan.task("T009")
    assert t009.title == "Album sharing links"
    assert "revoking a link is immediate" in t009.description
    assert "T099" not in {t.id for t in plan.tasks}  # inside a code block


def test_the_markdown_example_loads() -> None:
    plan = load_plan(EXAMPLES / "tasks.md")
    assert len(plan.tasks) == 11 and plan.tasks[0].id == "T002"
    assert plan.task("T011").depends_on == ["T010", "T006"]
    assert topological_order(plan.tasks)[-1] == "T012"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "# Tasks: x\n\n## Phase 1\n\n- [ ] T001 one\n- [ ] T002 two (depends on T099)\n",
            "tasks.md:6: T002 depends on T099, which is not in the file",
        ),
        (
            "## Phase 1\n\n- [ ] T001 one\n\n## Dependencies\n\n- T001 depends on T007\n",
            "tasks.md:7: T001 depends on T007, which is not in the file",
        ),
        ("## Phase 1\n\n- [ ] T001 one\n- [ ] T001 again\n", "tasks.md:4: task T001 appears twice"),
        ("# Tasks\n\nNothing to do here.\n", "tasks.md: no tasks found"),
        ("- [x] T001 done\n", "every task is already checked off"),
        ("---\nrepo: [\n---\n- [ ] T001 a\n", "tasks.md: front matter:"),
        (
            "- [ ] T001 a\n- [ ] T002 b\n\nT002 blocks T001\n",
            "depends_on: cycle T001 -> T002 -> T001",
        ),
    ],
)
def test_bad_task_lists_are_one_line(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        load_plan(_write(tmp_path / "tasks.md", text), repo=str(tmp_path))
    assert expected in str(caught.value) and "\n" not in str(caught.value)


def test_headings_and_ranges() -> None:
    data = parse_task_list(
        "## Build\n\n### T010: Schema\n\nTables.\n\n### T011 Models [P]\n\n"
        "- [ ] T012 [P] Views\n- [ ] T013 Wire up\n\n## Dependencies\n\nT013 depends on T010-T012\n"
    )
    deps = {t["id"]: t["depends_on"] for t in data["tasks"]}
    assert deps == {
        "T010": [],
        "T011": ["T010"],  # [P]: after the previous task without [P]
        "T012": ["T010"],
        "T013": ["T011", "T012", "T010"],  # after the [P] tasks; the range adds T010
    }
    assert data["tasks"][0]["description"].startswith("Schema\n\nTables.")


# --- helpers the workflow uses ---------------------------------------------------------------


def _result(coverage: float, findings: int, cost: float, waived: bool = False) -> Any:
    checks = [
        GateCheck(name="coverage", passed=True, figures={"line_rate_pct": coverage}),
        GateCheck(name="bandit", passed=True, figures={"total": findings, "high": 0}),
    ]
    phases = [
        PhaseStatus(
            name="test", gate=GateResult(phase="test", round=1, passed=True, checks=checks)
        ),
        PhaseStatus(
            name="verify",
            gate=GateResult(
                phase="verify",
                round=1,
                passed=not waived,
                checks=[GateCheck(name="load", passed=not waived, figures={"p95_ms": 12.5})],
            ),
        ),
    ]
    return ImplementationResult(
        workflow_id="w",
        title="t",
        state=TaskState.COMPLETED,
        phases=phases,
        decisions=[],
        ledger=Ledger(cost_usd=cost),
    )


def test_candidate_figures_come_from_the_final_gates() -> None:
    figures = candidate_figures(_result(88.5, 3, 1.25))
    assert figures == CandidateFigures(
        gates_passed=2, gates_waived=0, coverage_pct=88.5, findings=3, p95_ms=12.5, cost_usd=1.25
    )
    assert candidate_figures(_result(88.5, 3, 1.25, waived=True)).gates_waived == 1


def test_ranking_prefers_no_waivers_then_coverage_findings_p95_cost() -> None:
    def run(k: int, result: Any, state: TaskState = TaskState.COMPLETED) -> TaskRun:
        return TaskRun(
            workflow_id=f"c{k}", candidate=k, state=state, figures=candidate_figures(result)
        )

    runs = [
        run(1, _result(90, 0, 1.0, waived=True)),  # best coverage, but a waived gate
        run(2, _result(85, 2, 1.0)),
        run(3, _result(85, 1, 3.0)),  # same coverage as 2, fewer findings
        run(4, _result(99, 0, 0.1), TaskState.FAILED),  # not completed: not ranked
    ]
    assert [r.candidate for r in rank_runs(runs)] == [3, 2, 1]


def test_find_cycle_and_order_are_deterministic() -> None:
    plan = parse_plan(
        _plan(
            tasks=[
                {"id": "d", "title": "D", "depends_on": ["b", "c"]},
                {"id": "b", "title": "B", "depends_on": ["a"]},
                {"id": "c", "title": "C", "depends_on": ["a"]},
                {"id": "a", "title": "A"},
            ]
        )
    )
    assert topological_order(plan.tasks) == ["a", "b", "c", "d"]
    assert find_cycle(plan.tasks) is None


def test_the_plan_table_lists_every_task() -> None:
    status = PlanStatus(
        plan_id="p",
        title="Auth",
        state=TaskState.RUNNING,
        tasks=[
            PlanTaskStatus(id="a", title="A", phase="design", waiting="approval of design"),
            PlanTaskStatus(id="b", title="B", specialist="test-engineer"),
        ],
    )
    table = plan_table(status)
    assert "| a | backend-implementer | pending | design | approval of design |" in table
    assert "| b | test-engineer | pending |" in table


# --- the bundled specialists -----------------------------------------------------------------


@pytest.mark.parametrize("name", NEW_SPECIALISTS)
def test_bundled_specialists_parse_and_state_their_work(name: str, tmp_path: Path) -> None:
    spec = find_specialist(name, tmp_path)
    assert spec.name == name and spec.source == f"bundled:{name}.md"
    assert spec.model == "sonnet" and "Bash" in spec.tools
    for artifact in (".implflow/review.md", ".implflow/design.md", ".implflow/verify.md"):
        assert artifact in spec.body
    assert "Default targets" in spec.body and "80 %" in spec.body
    assert "Do not commit, push" in spec.body
    text = (Path(__file__).parents[2] / "implflow" / "specialists" / f"{name}.md").read_text()
    assert yaml.safe_load(text.split("---")[1])["name"] == name  # the file name is its name


def test_a_repo_agent_overrides_a_bundled_specialist(tmp_path: Path) -> None:
    _write(tmp_path / ".claude/agents/test-engineer.md", "---\nname: ours\n---\nOur rules.\n")
    assert find_specialist("test-engineer", tmp_path).body == "Our rules."


def test_plan_state_survives_continue_as_new_as_json() -> None:
    plan = parse_plan(_plan())
    state = PlanState(
        tasks=[PlanTaskStatus(id="model", title="Data model", state=TaskState.COMPLETED)],
        pending=PlanPending(
            task="api", phase="pick", since=datetime(2026, 1, 2, tzinfo=UTC), candidates=[2, 1]
        ),
        extra_usd=5.0,
    )
    carried = parse_plan(plan.model_copy(update={"state": state}).model_dump_json())
    assert carried.state == state
