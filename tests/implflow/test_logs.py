"""Logging: JSON lines off a terminal, Temporal's context flattened onto every line."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from implflow.logs import configure_logging, get_logger


@pytest.fixture(autouse=True)
def _restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def test_json_lines_carry_workflow_id_phase_and_attempt(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", "INFO")
    # What temporalio's activity.logger / workflow.logger attach to each record.
    logging.getLogger("temporalio.activity").info(
        "from the sdk",
        extra={
            "temporal_activity": {
                "workflow_id": "wf-1",
                "attempt": 2,
                "activity_type": "run_phase",
            },
            "phase": "design",
        },
    )
    get_logger("implflow.activities").info("ours", workflow_id="wf-1", phase="test", attempt=1)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [line["event"] for line in lines] == ["from the sdk", "ours"]
    sdk, ours = lines
    assert (sdk["workflow_id"], sdk["attempt"], sdk["phase"]) == ("wf-1", 2, "design")
    assert "temporal_activity" not in sdk
    assert (ours["workflow_id"], ours["phase"], ours["attempt"]) == ("wf-1", "test", 1)
    assert all(line["level"] == "info" and "timestamp" in line for line in lines)


def test_console_format_is_not_json(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("console", "INFO")
    get_logger().warning("readable", phase="review")
    err = capsys.readouterr().err
    assert "readable" in err and "phase" in err
    with pytest.raises(json.JSONDecodeError):
        json.loads(err.splitlines()[-1])
