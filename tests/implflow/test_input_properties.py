"""Property-based: every input either makes a runnable task or is refused in one line.

Random JSON documents shaped like ``ImplementationInput`` (right and wrong types, huge and
non-finite numbers, nested policies) go through the CLI's validation (``build_input``); each is
either refused with a one-line ``InvalidInputError`` or accepted — and then the workflow's own
decoding accepts it too, and every timer and retry policy it implies can be scheduled (what
used to fail a workflow task forever: an overflowing timer, inconsistent retry intervals).
Random signal payloads never raise in the workflow's decoding.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from temporalio.api.common.v1 import RetryPolicy as RetryPolicyProto
from typer.testing import CliRunner

from implflow.cli import app, build_input
from implflow.errors import InvalidInputError
from implflow.models import (
    AbortSignal,
    ApproveSignal,
    DecideInput,
    ImplementationInput,
    PauseSignal,
    RejectSignal,
)
from implflow.pipeline import build_pipeline, retry_policy
from workflows.messages import MAX_INPUT_BYTES, parse_payload

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**15), max_value=10**15),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
)
NUMBERISH = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**13), max_value=10**13),
    st.sampled_from(["3", "1e12", "Infinity", "yes"]),
)
PHASE = st.sampled_from(["review", "design", "implement", "test", "verify", "x", "BAD", "a/b"])


def retry() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {},
        optional={
            "maximum_attempts": NUMBERISH,
            "initial_interval_s": NUMBERISH,
            "maximum_interval_s": NUMBERISH,
            "backoff": NUMBERISH,
        },
    )


TASKS = st.fixed_dictionaries(
    {
        "title": st.one_of(st.text(max_size=20), SCALARS),
        "description": st.one_of(st.text(min_size=1, max_size=20), SCALARS),
        "repo": st.one_of(st.sampled_from(["/srv/repo", "https://git.invalid/r.git"]), SCALARS),
    },
    optional={
        "executor": st.one_of(st.sampled_from(["shell", "replay", "nope"]), SCALARS),
        "record": st.one_of(st.booleans(), SCALARS),
        "max_repair_rounds": NUMBERISH,
        "gates": st.one_of(st.sampled_from(["auto", "on", "off"]), SCALARS),
        "skip": st.lists(PHASE, max_size=3),
        "approval": st.fixed_dictionaries(
            {},
            optional={
                "after": st.lists(PHASE, max_size=3),
                "remind_after_s": NUMBERISH,
                "deadline_s": NUMBERISH,
                "on_expiry": st.sampled_from(["fail", "wait", "later"]),
                "max_rejections": NUMBERISH,
            },
        ),
        "budget": st.fixed_dictionaries(
            {}, optional={"max_usd_total": NUMBERISH, "max_turns_per_phase": NUMBERISH}
        ),
        "phases": st.lists(
            st.fixed_dictionaries(
                {"name": PHASE},
                optional={"timeout_s": NUMBERISH, "heartbeat_s": NUMBERISH, "retry": retry()},
            ),
            max_size=3,
        ),
        "commands": st.dictionaries(PHASE, st.lists(st.text(max_size=8), max_size=3), max_size=2),
        "bogus": SCALARS,
    },
)


def _runnable(task: ImplementationInput) -> None:
    """Everything the workflow will schedule from this input can be scheduled."""
    decoded, problem = parse_payload(
        ImplementationInput, (json.loads(task.model_dump_json()),), MAX_INPUT_BYTES
    )
    assert problem is None and decoded == task
    timedelta(seconds=task.approval.deadline_s)
    timedelta(seconds=task.approval.remind_after_s)
    for spec in build_pipeline(task):
        timedelta(seconds=spec.timeout_s + 60)
        timedelta(seconds=spec.heartbeat_s)
        retry_policy(spec).apply_to_proto(RetryPolicyProto())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TASKS)
def test_every_input_is_runnable_or_refused_in_one_line(data: dict[str, Any]) -> None:
    text = json.dumps(data)
    try:
        task = build_input(None, None, None, None, text, [], None, [])
    except InvalidInputError as err:
        message = str(err)
    else:
        _runnable(task)
        return
    assert message.startswith("invalid input")
    assert "\n" not in message


@settings(max_examples=60, deadline=None)
@given(st.one_of(TASKS, st.text(max_size=40), st.sampled_from(["@/bin/true", "@/nonexistent"])))
def test_the_cli_never_prints_a_traceback_for_bad_input(data: dict[str, Any] | str) -> None:
    text = data if isinstance(data, str) else json.dumps({**data, "title": 5})  # always invalid
    result = CliRunner().invoke(app, ["start", "--input", text])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


SIGNAL_PAYLOADS = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(SIGNAL_PAYLOADS, max_size=3))
def test_signal_payloads_are_decoded_or_refused_never_raised(args: list[Any]) -> None:
    for model in (ApproveSignal, RejectSignal, AbortSignal, PauseSignal, DecideInput):
        message, problem = parse_payload(model, tuple(args))
        assert (message is None) != (problem is None)
        if problem is not None:
            assert isinstance(problem, str) and problem


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"repo": 5}, "repo"),
        ({"repo": "/r\x00x"}, "repo"),
        ({"record": "yes"}, "record"),
        ({"max_repair_rounds": "3"}, "max_repair_rounds"),
        ({"approval": {"deadline_s": 1e12}}, "deadline_s"),
    ],
)
def test_the_reported_cases_are_refused_in_one_line(extra: dict[str, Any], field: str) -> None:
    data = {"title": "t", "description": "d", "repo": "/r", **extra}
    with pytest.raises(InvalidInputError) as info:
        build_input(None, None, None, None, json.dumps(data), [], None, [])
    assert field in str(info.value) and "\n" not in str(info.value)
