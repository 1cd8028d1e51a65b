"""Input contracts: what is accepted, and one-line errors that name the field."""

from __future__ import annotations

from typing import Any

import pytest

from implflow.client import parse
from implflow.errors import InvalidInputError
from implflow.models import PHASES, ImplementationInput
from implflow.pipeline import build_pipeline

MINIMAL = {"title": "t", "description": "d", "repo": "/srv/repo"}


def test_minimal_input_gets_documented_defaults() -> None:
    inp = parse(ImplementationInput, MINIMAL)
    assert inp.executor is None and inp.skip == [] and inp.commands == {}
    assert inp.approval.after is None and inp.approval.on_expiry == "fail"
    assert inp.approval.max_rejections == 3 and inp.thresholds.coverage_min_pct == 80
    pipeline = build_pipeline(inp)
    assert [p.name for p in pipeline] == list(PHASES)
    assert [p.name for p in pipeline if p.approval] == ["design", "verify"]
    assert all(1 <= p.retry.maximum_attempts <= 20 for p in pipeline)


def test_skip_and_approval_points_shape_the_pipeline() -> None:
    inp = parse(
        ImplementationInput,
        {**MINIMAL, "skip": ["optimize", "document"], "approval": {"after": ["review", "test"]}},
    )
    pipeline = build_pipeline(inp)
    assert [p.name for p in pipeline] == [
        "review",
        "design",
        "implement",
        "validate",
        "test",
        "verify",
    ]
    assert [p.name for p in pipeline if p.approval] == ["review", "test"]


def test_custom_pipeline_is_data() -> None:
    inp = parse(
        ImplementationInput,
        {
            **MINIMAL,
            "phases": [
                {"name": "spike", "instructions": "try it", "approval": True, "timeout_s": 60}
            ],
        },
    )
    [spec] = build_pipeline(inp)
    assert (spec.name, spec.approval, spec.timeout_s) == ("spike", True, 60)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"description": "d", "repo": "r"}, "title"),
        ({**MINIMAL, "title": "  "}, "title"),
        ({**MINIMAL, "repo": ""}, "repo"),
        ({"title": "t", "description": "d"}, "repo"),
        ({**MINIMAL, "description": "x" * 20_001}, "description"),
        ({**MINIMAL, "skip": ["deploy"]}, "skip"),
        ({**MINIMAL, "approval": {"after": ["ship"]}}, "approval.after"),
        ({**MINIMAL, "commands": {"review": "make review"}}, "commands.review"),
        ({**MINIMAL, "title": ["a"]}, "title"),
        ({**MINIMAL, "titel": "typo"}, "titel"),
        ({**MINIMAL, "skip": list(PHASES)}, "skip"),
        ({**MINIMAL, "approval": {"remind_after_s": 10, "deadline_s": 5}}, "deadline_s"),
        ({**MINIMAL, "phases": [{"name": "a"}, {"name": "a"}]}, "duplicate"),
        ({**MINIMAL, "commands": {"review": [""]}}, "commands.review"),
        ({**MINIMAL, "commands": {"review": ["make", "a\x00b"]}}, "commands.review.1"),
        # A person's approval after a phase that is skipped would never be asked for.
        ({**MINIMAL, "skip": ["design"], "approval": {"after": ["design"]}}, "approval.after"),
    ],
)
def test_bad_input_is_one_line_naming_the_field(data: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        parse(ImplementationInput, data)
    message = str(info.value)
    assert message.startswith("invalid input: ")
    assert field in message and "\n" not in message


def test_json_text_is_accepted_and_bad_json_is_named() -> None:
    assert parse(ImplementationInput, '{"title":"t","description":"d","repo":"r"}').title == "t"
    with pytest.raises(InvalidInputError, match="invalid input"):
        parse(ImplementationInput, "{not json")
