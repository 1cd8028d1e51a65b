"""Failure classes: who can fix a failed check, and the one-line cause a person reads.

The classifier reads what real tools print (pytest's collection errors, mypy's missing
modules, a taken port); the result model takes the worst class of its checks. The gates'
own end-to-end classification (an install that fails, a regression, a target beyond this
machine) is in ``test_task_environment.py`` and ``test_runner.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from activities.gates.failures import ModuleOwner, classify, find_cause
from implflow.models import GateCheck, GateResult

OWNER = ModuleOwner(
    own=frozenset({"notes_api", "tests"}),
    declared=frozenset({"fastapi", "uvicorn", "pyyaml"}),
    from_metadata=True,
)

PYTEST_COLLECTION = """\
==================================== ERRORS ====================================
______________________ ERROR collecting tests/test_api.py ______________________
ImportError while importing test module '/w/tests/test_api.py'.
tests/test_api.py:1: in <module>
    from {module} import thing
E   ModuleNotFoundError: No module named '{module}'
=========================== short test summary info ============================
ERROR tests/test_api.py
!!!!!!!!!!!!!!!!!!!! Interrupted: 1 error during collection !!!!!!!!!!!!!!!!!!!!
"""


@pytest.mark.parametrize(
    ("module", "owner", "failure_class", "hint"),
    [
        ("fastapi", OWNER, "environment", "declared by the project, not installed"),
        ("requests", OWNER, "agent", "the project does not declare it"),
        ("notes_api", OWNER, "agent", ""),
        ("requests", ModuleOwner(frozenset(), frozenset(), False), "environment", "not installed"),
    ],
)
def test_a_missing_module_at_collection(
    module: str, owner: ModuleOwner, failure_class: str, hint: str
) -> None:
    cause = find_cause("tests", PYTEST_COLLECTION.format(module=module), owner)
    assert cause is not None
    assert cause.failure_class == failure_class
    assert cause.summary.startswith(
        f"tests could not be collected: ModuleNotFoundError: No module named '{module}'"
    )
    assert hint in cause.summary


def test_a_server_module_python_cannot_run() -> None:
    # `python -m uvicorn app:app` with uvicorn missing: no exception, no quotes around the name.
    log = "INFO starting\n/tmp/envs/ab12/bin/python: No module named uvicorn\n"
    undeclared = ModuleOwner(frozenset({"notes_api"}), frozenset({"fastapi"}), True)
    cause = find_cause("service", log, undeclared)
    assert cause is not None
    assert (cause.failure_class, cause.summary) == (
        "agent",
        "service failed: python -m uvicorn: not installed (the project does not declare it: "
        "add it to its dependencies)",
    )
    declared = find_cause("service", log, OWNER)
    assert declared is not None and declared.failure_class == "environment"


def test_other_causes_tools_print() -> None:
    mypy = 'app.py:1: error: Cannot find implementation or library stub for module named "yaml"'
    cause = find_cause("mypy", mypy, OWNER)
    assert cause is not None
    assert (cause.failure_class, cause.summary) == (
        "environment",
        "mypy cannot find module 'yaml' (declared by the project, not installed in the task "
        "environment)",
    )
    port = find_cause("tests", "OSError: [Errno 98] Address already in use", OWNER)
    assert port is not None and port.failure_class == "environment"
    plugin = find_cause("tests", "pytest: error: unrecognized arguments: --cov=app", OWNER)
    assert plugin is not None and plugin.failure_class == "environment"
    syntax = (
        "_____ ERROR collecting tests/test_x.py _____\n"
        'E     File "/w/app.py", line 3\nE   SyntaxError: invalid syntax\n'
    )
    cause = find_cause("tests", syntax, OWNER)
    assert cause is not None
    assert cause.failure_class == "agent"
    assert cause.summary == "tests could not be collected: SyntaxError: invalid syntax"
    assert find_cause("tests", "1 failed, 3 passed", OWNER) is None


def test_classify_rewrites_the_summary_from_the_log(tmp_path: Path) -> None:
    log = tmp_path / "tests.log"
    log.write_text(PYTEST_COLLECTION.format(module="fastapi"))
    check = GateCheck(
        name="tests", passed=False, summary="1 of 1 failed or errored; first: x: collection failure"
    )
    classified = classify(check, log, None, OWNER)
    assert classified.failure_class == "environment"
    assert "No module named 'fastapi'" in classified.summary
    assert "collection failure" not in classified.summary
    passed = GateCheck(name="tests", passed=True)
    assert classify(passed, log, None, OWNER) is passed  # a passed check has no class
    assert passed.failure_class is None


def test_the_gate_takes_the_worst_class_and_quotes_its_cause() -> None:
    checks = [
        GateCheck(name="ruff", passed=False, summary="ruff: 2 findings (max 0)"),
        GateCheck(
            name="tests",
            passed=False,
            summary="tests could not be collected: ModuleNotFoundError: No module named 'x'",
            failure_class="environment",
        ),
        GateCheck(name="load", passed=False, summary="cannot tell", failure_class="noise"),
    ]
    result = GateResult(phase="test", round=1, passed=False, checks=checks)
    assert result.failure_class == "environment"
    assert result.root_cause == checks[1].summary
    assert result.evidence().splitlines()[0] == f"root cause (environment): {checks[1].summary}"
    assert "[environment]" in result.evidence()

    agent_only = GateResult(phase="test", round=1, passed=False, checks=[checks[0], checks[2]])
    assert (agent_only.failure_class, agent_only.root_cause) == ("agent", checks[0].summary)
    noise_only = GateResult(phase="optimize", round=1, passed=False, checks=[checks[2]])
    assert noise_only.failure_class == "noise"
    passed = GateResult(phase="test", round=1, passed=True, checks=[], failure_class="agent")
    assert (passed.failure_class, passed.root_cause) == (None, "")


def test_load_baseline_keeps_the_spread_and_the_calibration() -> None:
    load = GateCheck(
        name="load",
        passed=True,
        figures={
            "p95_ms": 12.5,
            "p95_ms_spread": 3.0,
            "requests_per_s": 2000.0,
            "requests_per_s_spread": 150.0,
            "calibration_requests_per_s": 40000.0,
            "calibration_p95_ms": 1.5,
            "peak_rss_mib": 50.0,
        },
    )
    result = GateResult(phase="implement", round=1, passed=True, checks=[load])
    assert result.load_baseline() == {
        "p95_ms": 12.5,
        "p95_ms_spread": 3.0,
        "requests_per_s": 2000.0,
        "requests_per_s_spread": 150.0,
        "calibration_requests_per_s": 40000.0,
        "calibration_p95_ms": 1.5,
    }
    assert GateResult(phase="test", round=1, passed=True).load_baseline() == {}
