"""Gates, repair rounds and budget stops in ImplementationWorkflow (time-skipping server).

The phase work is real (shell executor on a git branch); the gate and, for budget
tests, the phase activity are stubs registered under the real activity names, so
each test scripts exactly which verdicts and costs the workflow sees.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.phases import ImplActivities
from implflow.models import (
    DecideInput,
    Decision,
    GateCheck,
    GateInput,
    GateResult,
    PhaseInput,
    PhaseResult,
    TaskState,
)
from implflow.settings import Settings
from tests.helpers import branch_file, branch_log
from tests.helpers.workflow import ALL, start, task, wait_for
from workflows import WORKFLOWS


def verdict(inp: GateInput, passed: bool) -> GateResult:
    figures: dict[str, float | str] = {"line_rate_pct": 91.0 if passed else 61.5}
    return GateResult(
        phase=inp.phase,
        round=inp.round,
        passed=passed,
        checks=[
            GateCheck(
                name="coverage",
                passed=passed,
                figures=figures,
                summary=f"line coverage {figures['line_rate_pct']} %",
                threshold="line_rate_pct >= 80",
            )
        ],
        failure_summary="" if passed else "coverage 61.5 % is below 80 %",
        report_dir=f".implflow/reports/{inp.phase}/{inp.round}",
        commit="c0ffee",
    )


@asynccontextmanager
async def worker(
    env: WorkflowEnvironment,
    tmp_path: Path,
    gate: Callable[[GateInput], bool],
    run_phase: Any = None,
) -> AsyncIterator[str]:
    acts = ImplActivities(Settings(data_dir=tmp_path / "data"))
    calls: list[tuple[str, int]] = []

    @activity.defn(name="run_gate")
    async def stub_gate(inp: GateInput) -> GateResult:
        calls.append((inp.phase, inp.round))
        return verdict(inp, gate(inp))

    tq = f"tq-{uuid.uuid4().hex}"
    async with Worker(
        env.client,
        task_queue=tq,
        workflows=WORKFLOWS,
        activities=[acts.prepare_task, run_phase or acts.run_phase, stub_gate, acts.send_reminder],
    ):
        yield tq


async def test_failed_gate_repairs_with_feedback_then_passes(
    ts_env: WorkflowEnvironment, repo: Path, tmp_path: Path
) -> None:
    def gate(inp: GateInput) -> bool:
        return not (inp.phase == "test" and inp.round == 1)

    async with worker(ts_env, tmp_path, gate) as tq:
        h = await start(ts_env, tq, task(repo, gates="on", approval={"after": []}))
        result = await h.result()
    phases = {p.name: p for p in result.phases}
    assert (phases["test"].rounds, phases["test"].repairs) == (2, 1)
    assert phases["test"].gate is not None and phases["test"].gate.passed
    assert all(phases[n].rounds == 1 for n in ALL if n != "test")
    assert "coverage 61.5 % is below 80 %" in branch_file(repo, h.id, ".implflow/test.md")
    subjects = branch_log(repo, h.id)
    assert subjects.count("implflow: test (round 1)") == 1
    assert subjects.count("implflow: test (round 2)") == 1
    # ImplState as each phase round was scheduled (what `implflow list --state` filters on).
    state, at_rounds = "", []
    async for event in h.fetch_history_events():
        if event.HasField("upsert_workflow_search_attributes_event_attributes"):
            fields = event.upsert_workflow_search_attributes_event_attributes
            payload = fields.search_attributes.indexed_fields.get("ImplState")
            state = json.loads(payload.data) if payload is not None else state
        attrs = event.activity_task_scheduled_event_attributes
        if event.HasField("activity_task_scheduled_event_attributes") and (
            attrs.activity_type.name == "run_phase"
        ):
            at_rounds.append(state)
    # review .. optimize, test round 1, test round 2 (the repair), document, verify
    assert at_rounds == ["running"] * 6 + ["repairing"] + ["running"] * 2


async def test_exhausted_repairs_wait_for_a_person_who_can_waive(
    ts_env: WorkflowEnvironment, repo: Path, tmp_path: Path
) -> None:
    async with worker(ts_env, tmp_path, lambda inp: inp.phase != "validate") as tq:
        h = await start(
            ts_env, tq, task(repo, gates="on", max_repair_rounds=1, approval={"after": []})
        )
        st = await wait_for(h, TaskState.AWAITING_APPROVAL, "validate")
        pending = st.pending_approval
        assert pending is not None and pending.kind == "gate"
        assert "FAIL coverage: line coverage 61.5 %" in pending.evidence  # figures for the reviewer
        assert "target line_rate_pct >= 80" in pending.evidence
        assert st.phases[3].repairs == 1 and st.phases[3].rounds == 2
        waived = await h.execute_update(
            "decide",
            DecideInput(
                phase="validate", decision="waive", approver="lead", comment="known false positive"
            ),
            result_type=Decision,
        )
        assert (waived.kind, waived.decision) == ("gate", "waive")
        result = await h.result()
    assert result.state == TaskState.COMPLETED
    assert result.decisions[-1].comment == "known false positive"
    assert all(p.status == "done" for p in result.phases)  # the waived phase counts as done


async def test_exhausted_repairs_reject_rewinds_and_abort_ends(
    ts_env: WorkflowEnvironment, repo: Path, tmp_path: Path
) -> None:
    async with worker(ts_env, tmp_path, lambda inp: inp.phase != "validate") as tq:
        h = await start(
            ts_env, tq, task(repo, gates="on", max_repair_rounds=0, approval={"after": []})
        )
        await wait_for(h, TaskState.AWAITING_APPROVAL, "validate")
        await h.execute_update(
            "decide",
            DecideInput(
                phase="validate",
                decision="reject",
                approver="lead",
                feedback="use pydantic",
                rewind_to="implement",
            ),
        )
        st = await wait_for(h, TaskState.AWAITING_APPROVAL, "validate")
        assert [(p.name, p.rounds) for p in st.phases[2:4]] == [("implement", 2), ("validate", 2)]
        assert "use pydantic" in branch_file(repo, h.id, ".implflow/implement.md")
        await h.signal("abort", {"phase": "validate", "approver": "lead", "comment": "stop"})
        with pytest.raises(WorkflowFailureError) as info:
            await h.result()
    cause = info.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "Aborted"
    assert "stop" in cause.message


async def test_waive_is_refused_outside_a_failed_gate(
    ts_env: WorkflowEnvironment, repo: Path, tmp_path: Path
) -> None:
    async with worker(ts_env, tmp_path, lambda inp: True) as tq:
        h = await start(ts_env, tq, task(repo, gates="on", approval={"after": ["design"]}))
        await wait_for(h, TaskState.AWAITING_APPROVAL, "design")
        from temporalio.client import WorkflowUpdateFailedError

        with pytest.raises(WorkflowUpdateFailedError) as info:
            await h.execute_update(
                "decide", DecideInput(phase="design", decision="waive", approver="x")
            )
        assert "only a failed quality gate can be waived" in str(info.value.cause)
        await h.execute_update(
            "decide", DecideInput(phase="design", decision="approve", approver="x")
        )
        assert (await h.result()).state == TaskState.COMPLETED


def costly_phase(cost: float, fail_first: set[str]) -> Any:
    """A run_phase stand-in that spends ``cost`` dollars; phases in ``fail_first`` first hit
    the agent's own budget cap (non-retryable BudgetExceeded)."""
    seen: set[str] = set()

    @activity.defn(name="run_phase")
    async def run_phase(inp: PhaseInput) -> PhaseResult:
        if inp.phase.name in fail_first and inp.phase.name not in seen:
            seen.add(inp.phase.name)
            raise ApplicationError(
                "agent stopped: error_max_budget_usd", type="BudgetExceeded", non_retryable=True
            )
        return PhaseResult(
            phase=inp.phase.name,
            round=inp.round,
            attempt=1,
            outcome="done",
            summary=f"spent with budget {inp.budget.max_usd_per_phase}",
            cost_usd=cost,
            tokens=1000,
            turns=3,
        )

    return run_phase


async def test_budget_stops_ask_for_more_budget_and_the_ledger_adds_up(
    ts_env: WorkflowEnvironment, repo: Path, tmp_path: Path
) -> None:
    async with worker(
        ts_env, tmp_path, lambda inp: True, run_phase=costly_phase(2.0, fail_first={"implement"})
    ) as tq:
        h = await start(
            ts_env,
            tq,
            task(repo, gates="off", approval={"after": []}, budget={"max_usd_per_phase": 1.0}),
        )
        # review costs $2 > $1: the ledger stops the task at review.
        st = await wait_for(h, TaskState.AWAITING_APPROVAL, "review")
        assert st.pending_approval is not None and st.pending_approval.kind == "budget"
        assert "review spent $2.00 of $1.00" in st.pending_approval.evidence
        await h.execute_update(
            "decide",
            DecideInput(phase="review", decision="approve", approver="lead", budget_usd=5.0),
        )
        # implement: the agent itself hits its cap -> a person again; approve without a figure.
        st = await wait_for(h, TaskState.AWAITING_APPROVAL, "implement")
        assert "error_max_budget_usd" in st.pending_approval.evidence  # type: ignore[union-attr]
        await h.signal("approve", {"phase": "implement", "approver": "lead"})
        result = await h.result()
    assert result.ledger.cost_usd == pytest.approx(16.0)  # 8 phases x $2
    assert result.ledger.tokens == 8000 and result.ledger.turns == 24
    assert [(d.phase, d.kind) for d in result.decisions] == [
        ("review", "budget"),
        ("implement", "budget"),
    ]


async def test_budget_stop_abort_fails_the_task(
    ts_env: WorkflowEnvironment, repo: Path, tmp_path: Path
) -> None:
    async with worker(
        ts_env, tmp_path, lambda inp: True, run_phase=costly_phase(0.5, fail_first=set())
    ) as tq:
        h = await start(
            ts_env,
            tq,
            task(repo, gates="off", approval={"after": []}, budget={"max_usd_total": 1.0}),
        )
        st = await wait_for(h, TaskState.AWAITING_APPROVAL, "implement")  # $1.50 > $1 total
        assert "task spent $1.50 of $1.00" in st.pending_approval.evidence  # type: ignore[union-attr]
        await h.execute_update(
            "decide",
            DecideInput(phase="implement", decision="abort", approver="lead", comment="too costly"),
        )
        with pytest.raises(WorkflowFailureError) as info:
            await h.result()
    cause = info.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "Aborted"


async def test_blocking_review_questions_wait_for_answers_that_reach_later_phases(
    ts_env: WorkflowEnvironment, repo: Path, tmp_path: Path
) -> None:
    acts = ImplActivities(Settings(data_dir=tmp_path / "data"))

    @activity.defn(name="run_gate")
    async def review_asks(inp: GateInput) -> GateResult:
        if inp.phase != "review":
            return verdict(inp, True)
        return GateResult(
            phase="review",
            round=inp.round,
            passed=False,
            questions=["[blocking] Is a due date in the past allowed on create?"],
            failure_summary="1 unanswered blocking question",
        )

    tq = f"tq-{uuid.uuid4().hex}"
    async with Worker(
        ts_env.client,
        task_queue=tq,
        workflows=WORKFLOWS,
        activities=[acts.prepare_task, acts.run_phase, review_asks, acts.send_reminder],
    ):
        h = await start(ts_env, tq, task(repo, gates="on", approval={"after": []}))
        st = await wait_for(h, TaskState.AWAITING_APPROVAL, "review")
        assert st.pending_approval is not None and st.pending_approval.kind == "question"
        assert "due date in the past" in st.pending_approval.evidence
        assert st.phases[0].repairs == 0  # an agent cannot answer for the people: no repair
        from temporalio.client import WorkflowUpdateFailedError

        with pytest.raises(WorkflowUpdateFailedError):  # approving needs the answers
            await h.execute_update(
                "decide", DecideInput(phase="review", decision="approve", approver="lead")
            )
        await h.execute_update(
            "decide",
            DecideInput(
                phase="review",
                decision="approve",
                approver="lead",
                comment="No: reject past due dates with 400.",
            ),
        )
        result = await h.result()
    assert result.state == TaskState.COMPLETED
    assert "reject past due dates with 400" in branch_file(repo, h.id, ".implflow/design.md")


async def test_an_environment_failure_goes_to_a_person_at_once_with_its_root_cause(
    ts_env: WorkflowEnvironment, repo: Path, tmp_path: Path
) -> None:
    acts = ImplActivities(Settings(data_dir=tmp_path / "data"))
    gated: list[int] = []

    @activity.defn(name="run_gate")
    async def broken_env(inp: GateInput) -> GateResult:
        if inp.phase != "test":
            return verdict(inp, True)
        gated.append(inp.round)
        cause = "tests could not be collected: ModuleNotFoundError: No module named 'fastapi'"
        return GateResult(
            phase=inp.phase,
            round=inp.round,
            passed=False,
            checks=[
                GateCheck(name="tests", passed=False, summary=cause, failure_class="environment")
            ],
            failure_summary=cause,
        )

    tq = f"tq-{uuid.uuid4().hex}"
    async with Worker(
        ts_env.client,
        task_queue=tq,
        workflows=WORKFLOWS,
        activities=[acts.prepare_task, acts.run_phase, broken_env, acts.send_reminder],
    ):
        h = await start(ts_env, tq, task(repo, gates="on", approval={"after": []}))
        st = await wait_for(h, TaskState.AWAITING_APPROVAL, "test")
        assert st.pending_approval is not None and st.pending_approval.kind == "gate"
        assert "root cause (environment): tests could not be collected" in (
            st.pending_approval.evidence
        )
        await h.execute_update(
            "decide",
            DecideInput(phase="test", decision="abort", approver="lead", comment="fix the deps"),
        )
        with pytest.raises(WorkflowFailureError):
            await h.result()
    assert gated == [1]  # no repair round was spent on what no agent can fix
    phases = {p.name: p for p in st.phases}
    assert phases["test"].repairs == 0
