"""An unseen FastAPI service with no implflow configuration: every gate in its own environment.

``tests/fixtures/fastapi_notes`` depends on fastapi, uvicorn and httpx from PyPI, which the
worker's interpreter does not have. The gates build the task environment with uv (uv's
cache kept between sessions, ``tests.fixtures.UV_CACHE``), run the tests, the type check and
the service there, find the uvicorn app without a ``gates.toml``, and reuse the environment
for the next gate and the next task. Also: an uninstallable dependency is an
``environment`` failure with uv's own message; the optimize gate does not fail a no-change
re-run on a busy machine but does fail a real regression; and the acceptance variant (a
``shell=True`` handler, half the code untested) fails with the bandit finding and the
coverage figure, as the agent's to fix. The module takes about 90 s (the load probes).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from activities.environments import EnvironmentStore
from activities.gates.runner import ENVIRONMENT_LOG, run_gate
from implflow.layout import GATES_FILE
from implflow.models import GateCheck, GateResult, Thresholds
from tests.fixtures import FASTAPI_NOTES, UV_CACHE, copy_repo, untested_helpers

pytestmark = pytest.mark.skipif(
    shutil.which("wrk") is None and not os.environ.get("CI"),
    reason="wrk not installed (apt-get install -y wrk); in CI a missing wrk fails instead",
)

UVICORN = ["{python}", "-m", "uvicorn", "notes_api.main:app", "--host", "127.0.0.1"]

# Proves the tests ran with the task environment's interpreter, whatever the worker has.
ENV_TEST = """
import os
import sys


def test_runs_in_the_task_environment() -> None:
    assert os.environ["VIRTUAL_ENV"] == sys.prefix
"""

# A shorter probe for the optimize re-runs; the command is still the detected one.
SHORT_PROBE = "[service]\nduration_s = 6\nwindows = 3\nwarmup_s = 1\n"

SLEEPY_HEALTH = '''    """Liveness: the process answers."""
    await asyncio.sleep(0.1)
'''

# The acceptance variant: a shell=True handler (bandit B602, high) and code no test runs.
ADMIN = '''
"""Admin helpers."""

import subprocess

from notes_api.main import app


@app.get("/admin/disk")
async def disk(path: str = ".") -> dict[str, str]:
    """Disk usage of a path."""
    out = subprocess.run(f"du -sh {path}", shell=True, capture_output=True, text=True)
    return {"usage": out.stdout}

''' + untested_helpers("notes")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> EnvironmentStore:
    """This module's task environments; uv's cache shared across sessions."""
    return EnvironmentStore(root=tmp_path_factory.mktemp("envs"), uv_cache=UV_CACHE)


def notes_copy(root: Path, name: str = "notes") -> Path:
    repo = copy_repo(FASTAPI_NOTES, root / name)
    (repo / "tests" / "test_env.py").write_text(ENV_TEST.lstrip(), encoding="utf-8")
    return repo


async def gate(
    phase: str,
    repo: Path,
    store: EnvironmentStore,
    round: int = 1,
    **kwargs: object,
) -> GateResult:
    return await run_gate(
        phase,
        repo,
        round,
        Thresholds(),
        environments=store,
        baseline=kwargs.get("baseline"),  # type: ignore[arg-type]
        service_command=kwargs.get("service_command"),  # type: ignore[arg-type]
    )


def check(verdict: GateResult, name: str) -> GateCheck:
    return next(c for c in verdict.checks if c.name == name)


@pytest.fixture(scope="module")
async def implemented(
    tmp_path_factory: pytest.TempPathFactory, store: EnvironmentStore
) -> tuple[Path, GateResult]:
    """The notes service after its implement gate: the environment built, the baseline."""
    repo = notes_copy(tmp_path_factory.mktemp("impl"))
    assert not (repo / GATES_FILE).exists()  # no implflow configuration at all
    return repo, await gate("implement", repo, store)


async def test_every_gate_runs_in_the_task_environment_with_real_figures(
    implemented: tuple[Path, GateResult], store: EnvironmentStore
) -> None:
    repo, verdict = implemented
    assert verdict.config_source == "preset:python"
    assert verdict.passed, verdict.failure_summary
    tests = check(verdict, "tests")
    assert (tests.figures["total"], tests.figures["passed"]) == (4, 4)  # test_env.py included
    assert (repo / verdict.report_dir / ENVIRONMENT_LOG).is_file()  # built here
    # The uvicorn app was found without configuration and measured for real.
    load = check(verdict, "load")
    assert not load.skipped
    assert float(load.figures["requests_per_s"]) > 50
    assert float(load.figures["p95_ms"]) > 0
    assert load.figures["windows"] == 5
    assert float(load.figures["calibration_requests_per_s"]) > 0
    assert set(verdict.load_baseline()) >= {"p95_ms", "p95_ms_spread", "requests_per_s"}
    if importlib.util.find_spec("fastapi") is None:
        # The worker itself could not have run this service or these tests.
        probe = subprocess.run([sys.executable, "-c", "import fastapi"], check=False)
        assert probe.returncode != 0

    design = await gate("design", repo, store)
    assert design.service_command is not None
    assert design.service_command[: len(UVICORN)] == UVICORN
    assert design.service_health_path == "/health"
    assert "service command: {python} -m uvicorn notes_api.main:app" in design.evidence()

    # The next gates reuse the environment: nothing is installed again.
    for phase in ("validate", "test"):
        result = await gate(phase, repo, store)
        assert result.passed, f"{phase}: {result.failure_summary}"
        assert not (repo / result.report_dir / ENVIRONMENT_LOG).exists()
    assert float(check(result, "coverage").figures["line_rate_pct"]) >= 80
    assert len([p for p in store.root.iterdir() if p.is_dir()]) == 1

    # A second task on the same repository (its own checkout) reuses it too.
    other = notes_copy(repo.parent, "notes-task-2")
    second = await gate("test", other, store)
    assert second.passed, second.failure_summary
    assert not (other / second.report_dir / ENVIRONMENT_LOG).exists()


async def test_optimize_ignores_a_busy_machine_and_catches_a_real_regression(
    implemented: tuple[Path, GateResult], store: EnvironmentStore, tmp_path: Path
) -> None:
    _, verdict = implemented
    baseline = verdict.load_baseline()
    repo = notes_copy(tmp_path)
    (repo / GATES_FILE).parent.mkdir(exist_ok=True)
    (repo / GATES_FILE).write_text(SHORT_PROBE)

    # No change, but a process burns a core while the gate measures.
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        busy = await gate("optimize", repo, store, baseline=baseline)
    finally:
        burner.kill()
        burner.wait()
    assert busy.passed, f"{busy.failure_summary} {check(busy, 'load').figures} {baseline}"
    assert "no regression" in check(busy, "load").summary or "noise" in check(busy, "load").summary

    main = repo / "notes_api" / "main.py"
    source = main.read_text()
    slow = source.replace('    """Liveness: the process answers."""\n', SLEEPY_HEALTH)
    future = "from __future__ import annotations\n"
    main.write_text(slow.replace(future, future + "\nimport asyncio\n", 1))
    regressed = await gate("optimize", repo, store, round=2, baseline=baseline)
    assert not regressed.passed, f"{regressed.evidence()} {check(regressed, 'load').figures}"
    load = check(regressed, "load")
    assert (load.failure_class, regressed.failure_class) == ("agent", "agent")
    assert "regressed from" in load.summary
    assert load.figures["remeasured"] == 1  # measured twice before it was blamed
    assert "regressed from" in regressed.failure_summary


async def test_an_uninstallable_dependency_goes_to_a_person_with_uvs_message(
    tmp_path: Path, store: EnvironmentStore
) -> None:
    repo = notes_copy(tmp_path)
    pyproject = repo / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace(
            '"uvicorn==0.54.0",',
            '"uvicorn==0.54.0",\n    "this-package-does-not-exist-implflow==1.0",',
        )
    )
    verdict = await gate("implement", repo, store)
    assert not verdict.passed
    assert verdict.failure_class == "environment"
    assert "this-package-does-not-exist-implflow" in verdict.root_cause
    assert "not found in the package registry" in verdict.root_cause
    assert verdict.root_cause.startswith("dependencies could not be installed")
    assert {c.failure_class for c in verdict.checks} == {"environment"}
    assert verdict.failure_summary.startswith(f"root cause (environment): {verdict.root_cause}")
    assert (
        "this-package-does-not-exist-implflow"
        in (repo / verdict.report_dir / ENVIRONMENT_LOG).read_text()
    )


async def test_a_shell_true_handler_and_half_the_code_untested_are_the_agents_to_fix(
    tmp_path: Path, store: EnvironmentStore
) -> None:
    repo = notes_copy(tmp_path)
    (repo / "notes_api" / "admin.py").write_text(ADMIN.lstrip(), encoding="utf-8")

    validate = await gate("validate", repo, store)
    assert not validate.passed
    bandit = check(validate, "bandit")
    assert (bandit.failure_class, validate.failure_class) == ("agent", "agent")
    assert bandit.figures["high"] == 1
    assert "high B602" in bandit.summary
    assert "high B602 notes_api/admin.py" in validate.failure_summary

    tested = await gate("test", repo, store)
    assert not tested.passed
    coverage = check(tested, "coverage")
    assert coverage.failure_class == "agent"
    pct = float(coverage.figures["line_rate_pct"])
    assert 30 < pct < 80
    assert f"line coverage {pct:g} %" in tested.failure_summary
    assert check(tested, "tests").passed  # the tests themselves pass: coverage is the miss
