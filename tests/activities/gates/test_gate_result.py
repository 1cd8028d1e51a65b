"""The one gate-result contract: bounded as the workflow keeps it, tolerant of old shapes."""

from __future__ import annotations

from activities.gates.checks import JUDGES
from activities.gates.schema import FORMATS
from implflow.models import (
    MAX_CHECK_DETAILS,
    MAX_CHECK_SUMMARY_CHARS,
    MAX_FAILURE_SUMMARY_CHARS,
    GateCheck,
    GateResult,
)


def test_every_format_has_exactly_one_judge() -> None:
    assert sorted(JUDGES) == sorted(FORMATS)


def test_a_check_bounds_itself() -> None:
    check = GateCheck.model_validate(
        {
            "name": "lint",
            "passed": False,
            "summary": "x" * 1000,
            "figures": {"total": 3, "rate": 0.5, "tool": "ruff", "nested": {"a": 1}, "list": [1]},
            "details": [f"finding {i} " + "y" * 400 for i in range(25)],
        }
    )
    assert len(check.summary) == MAX_CHECK_SUMMARY_CHARS and check.summary.endswith("…")
    assert check.figures == {"total": 3, "rate": 0.5, "tool": "ruff"}  # scalars only
    assert len(check.details) == MAX_CHECK_DETAILS
    assert check.details[0].startswith("finding 0 ") and len(check.details[0]) == 300


def test_a_result_bounds_its_feedback_and_questions() -> None:
    result = GateResult(
        phase="review",
        round=1,
        passed=False,
        failure_summary="z" * 5000,
        questions=[f"q{i}" + "?" * 600 for i in range(30)],
    )
    assert len(result.failure_summary) == MAX_FAILURE_SUMMARY_CHARS
    assert len(result.questions) == 20 and all(len(q) == 500 for q in result.questions)


def test_questions_come_from_a_failed_check_with_unanswered_blocking_ones() -> None:
    review = GateCheck(
        name="docs-review",  # any name: the figure says what the details are
        passed=False,
        figures={"unanswered_blocking": 2},
        details=["Soft delete?", "Token lifetime?"],
    )
    lint = GateCheck(name="review", passed=False, figures={"total": 1}, details=["E501 a.py:1"])
    result = GateResult(phase="review", round=1, passed=False, checks=[review, lint])
    assert result.questions == ["Soft delete?", "Token lifetime?"]
    # Given explicitly (as every result written since has them), they are kept as they are.
    assert (
        GateResult(phase="review", round=1, passed=False, checks=[review], questions=[]).questions
        == []
    )


def test_a_result_from_an_old_history_still_reads() -> None:
    """The shape saved in tests/histories: no questions, no config source, float figures."""
    old = (
        '{"phase":"test","round":2,"passed":false,"checks":[{"name":"coverage","passed":false,'
        '"summary":"line coverage 61.5 %","figures":{"line_rate_pct":61.5,"total":3.0},'
        '"threshold":"line_rate_pct >= 80"}],"failure_summary":"coverage 61.5 % is below 80 %",'
        '"report_dir":".implflow/reports/test/2","commit":null}'
    )
    result = GateResult.model_validate_json(old)
    assert (result.passed, result.questions, result.config_source) == (False, [], "")
    assert result.checks[0].figures == {"line_rate_pct": 61.5, "total": 3.0}
    assert result.checks[0].details == [] and not result.checks[0].skipped
    assert result.evidence().splitlines()[0] == (
        "FAIL coverage: line coverage 61.5 % (target line_rate_pct >= 80)"
    )
