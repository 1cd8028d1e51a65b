"""Gates run for real on a git copy of ``examples/todo-service``: real tools, real reports.

Each test runs one phase's gate (the Python preset unless a test writes a
``.implflow/gates.toml``) and checks the verdict's figures, not just pass/fail. The load
probe runs 2 s against the example service with wrk. The module takes about 40 s.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from activities.gates.config import GateConfigError, load_gate_config
from activities.gates.runner import run_gate
from implflow.layout import GATES_FILE
from implflow.models import (
    MAX_FAILURE_SUMMARY_CHARS,
    GateCheck,
    GateFigure,
    GateResult,
    Thresholds,
)
from tests.helpers.gates import copy_example, git

needs_wrk = pytest.mark.skipif(
    shutil.which("wrk") is None and not os.environ.get("CI"),
    reason="wrk not installed (apt-get install -y wrk); in CI a missing wrk fails instead",
)


@pytest.fixture
def todo_repo(tmp_path: Path) -> Path:
    return copy_example(tmp_path)


def write(repo: Path, relpath: str, text: str) -> Path:
    path = repo / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


async def gate(
    phase: str,
    repo: Path,
    round: int = 1,
    thresholds: Thresholds | None = None,
    **kwargs: object,
) -> GateResult:
    beats: list[dict[str, object]] = []
    verdict = await run_gate(
        phase,
        repo,
        round,
        thresholds or Thresholds(),
        base_ref=kwargs.get("base_ref"),  # type: ignore[arg-type]
        baseline=kwargs.get("baseline"),  # type: ignore[arg-type]
        heartbeat=beats.append,
    )
    assert beats or not verdict.checks, "the gate heartbeats while checks run"
    assert verdict.report_dir == f".implflow/reports/{phase}/{round}"
    saved = json.loads((repo / verdict.report_dir / "verdict.json").read_text())
    assert saved["passed"] == verdict.passed
    assert len(verdict.failure_summary) <= MAX_FAILURE_SUMMARY_CHARS
    return verdict


def check(verdict: GateResult, name: str) -> GateCheck:
    return next(c for c in verdict.checks if c.name == name)


# Tests a "test" phase would add: the HTTP layer, end to end on a real socket.
API_TESTS = """
import http.client
import json
import threading

import pytest

from todo_service.app import build_server, main


@pytest.fixture
def server():
    srv = build_server(0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def call(srv, method, path, body=None, raw=None):
    conn = http.client.HTTPConnection("127.0.0.1", srv.server_port, timeout=5)
    data = raw if raw is not None else (None if body is None else json.dumps(body))
    conn.request(method, path, body=data)
    resp = conn.getresponse()
    payload = resp.read()
    conn.close()
    return resp.status, (json.loads(payload) if payload else None)


def test_crud(server):
    assert call(server, "GET", "/health") == (200, {"status": "ok"})
    status, todo = call(server, "POST", "/todos", {"title": "write tests"})
    assert status == 201 and todo["title"] == "write tests"
    assert call(server, "GET", f"/todos/{todo['id']}")[1]["id"] == todo["id"]
    assert call(server, "PATCH", f"/todos/{todo['id']}", {"done": True})[1]["done"] is True
    assert call(server, "PATCH", f"/todos/{todo['id']}", {"title": "t2"})[1]["title"] == "t2"
    assert len(call(server, "GET", "/todos?done=true")[1]) == 1
    assert call(server, "GET", "/todos?done=false")[1] == []
    assert call(server, "GET", "/todos")[0] == 200
    assert call(server, "DELETE", f"/todos/{todo['id']}")[0] == 204
    assert call(server, "DELETE", f"/todos/{todo['id']}")[0] == 404


def test_errors(server):
    assert call(server, "GET", "/nope")[0] == 404
    assert call(server, "GET", "/todos/99")[0] == 404
    assert call(server, "POST", "/nope", {})[0] == 404
    assert call(server, "POST", "/todos", {"title": " "})[0] == 400
    assert call(server, "POST", "/todos", raw="{not json")[0] == 400
    assert call(server, "POST", "/todos", raw="[1]")[0] == 400
    assert call(server, "POST", "/todos", raw="x" * 70000)[0] == 413
    assert call(server, "PATCH", "/nope", {})[0] == 404
    assert call(server, "PATCH", "/todos/99", {"done": True})[0] == 404
    assert call(server, "PATCH", "/todos/1", raw="{bad")[0] == 400


def test_main_serves_until_interrupted(monkeypatch, tmp_path):
    from todo_service.app import TodoServer

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(TodoServer, "serve_forever", interrupted)
    main(["--port", "0", "--db", str(tmp_path / "todos.sqlite3")])
"""


async def test_test_gate_fails_at_baseline_coverage_and_passes_with_more_tests(
    todo_repo: Path,
) -> None:
    verdict = await gate("test", todo_repo)
    assert verdict.config_source == "preset:python"
    tests, coverage = verdict.checks
    assert tests.passed
    assert tests.figures["total"] == 2
    assert not coverage.passed
    assert float(coverage.figures["line_rate_pct"]) < 80
    assert coverage.threshold == "line_rate_pct >= 80"
    assert "below the 80 % threshold" in verdict.failure_summary
    assert (todo_repo / ".implflow/reports/test/1/junit.xml").is_file()
    assert (todo_repo / ".implflow/reports/test/1/coverage.xml").is_file()
    # The checkout is not dirtied outside the reports: no caches, no bytecode.
    status = git(todo_repo, "status", "--porcelain", "--untracked-files=all").splitlines()
    assert all(line.startswith("?? .implflow/reports/") for line in status), status

    write(todo_repo, "tests/test_api.py", API_TESTS)
    verdict = await gate("test", todo_repo, round=2)
    assert verdict.passed, verdict.failure_summary
    assert check(verdict, "tests").figures["total"] == 5
    assert float(check(verdict, "coverage").figures["line_rate_pct"]) >= 80

    # A run's explicit threshold wins; a failing test fails the gate with its name.
    write(todo_repo, "tests/test_broken.py", "def test_broken():\n    assert 1 == 2\n")
    verdict = await gate("test", todo_repo, round=3, thresholds=Thresholds(coverage_min_pct=99))
    assert not verdict.passed
    assert "test_broken" in check(verdict, "tests").summary
    assert check(verdict, "coverage").threshold == "line_rate_pct >= 99"


async def test_validate_gate_finds_a_planted_high_severity_issue(todo_repo: Path) -> None:
    planted = write(
        todo_repo,
        "todo_service/maintenance.py",
        '"""Maintenance commands."""\n\nimport subprocess\n\n\n'
        "def run(command: str) -> int:\n"
        "    return subprocess.call(command, shell=True)\n",
    )
    verdict = await gate("validate", todo_repo)
    assert not verdict.passed
    assert check(verdict, "ruff").passed
    assert check(verdict, "mypy").passed
    bandit = check(verdict, "bandit")
    assert not bandit.passed
    assert int(bandit.figures["high"]) >= 1
    assert "B602" in bandit.summary
    assert "maintenance.py" in verdict.failure_summary

    planted.unlink()
    verdict = await gate("validate", todo_repo, round=2)
    assert verdict.passed, verdict.failure_summary
    assert check(verdict, "bandit").figures["high"] == 0


async def test_lint_counts_what_the_task_changed_not_the_repository_as_it_was(
    todo_repo: Path,
) -> None:
    # The target came with a lint finding of its own (an unused import), committed.
    write(todo_repo, "todo_service/legacy.py", '"""Old code."""\n\nimport os\n')
    git(todo_repo, "add", "-A")
    git(todo_repo, "commit", "-qm", "legacy")
    base = git(todo_repo, "rev-parse", "HEAD")
    verdict = await gate("validate", todo_repo, base_ref=base)
    ruff = check(verdict, "ruff")
    assert ruff.passed, ruff.summary  # not the task's to fix
    assert "changed since" in ruff.summary and "in changed files" in ruff.threshold
    # A finding in a file the task touched is the task's.
    write(todo_repo, "todo_service/new.py", '"""New code."""\n\nimport sys\n')
    verdict = await gate("validate", todo_repo, round=2, base_ref=base)
    ruff = check(verdict, "ruff")
    assert not ruff.passed and ruff.figures["total"] == 1, ruff.summary
    assert "todo_service/new.py" in ruff.summary and "legacy.py" not in ruff.summary
    # Without a base commit every finding counts.
    verdict = await gate("validate", todo_repo, round=3)
    assert check(verdict, "ruff").figures["total"] == 2


async def test_design_gate_needs_a_valid_contract(todo_repo: Path) -> None:
    write(todo_repo, ".implflow/design.md", "# Design\n\nA todo API.\n")
    verdict = await gate("design", todo_repo)
    assert not verdict.passed
    assert check(verdict, "design-doc").passed
    assert "openapi.yaml does not exist" in check(verdict, "contract").summary

    write(todo_repo, "openapi.yaml", "openapi: 3.0.3\ninfo: {title: Todo}\npaths: {}\n")
    verdict = await gate("design", todo_repo, round=2)
    assert not verdict.passed
    assert "invalid contract" in check(verdict, "contract").summary

    write(
        todo_repo,
        "openapi.yaml",
        """openapi: 3.0.3
info: {title: Todo API, version: "1.0"}
paths:
  /health:
    get:
      responses:
        "200": {description: ok}
  /todos:
    get:
      responses:
        "200": {description: the todos}
""",
    )
    verdict = await gate("design", todo_repo, round=3)
    assert verdict.passed, verdict.failure_summary
    assert check(verdict, "contract").figures == {
        "valid": "True",
        "paths": 2,
        "openapi_version": "3.0.3",
    }


async def test_review_gate_catches_an_unanswered_blocking_question(todo_repo: Path) -> None:
    verdict = await gate("review", todo_repo)
    assert "does not exist" in verdict.failure_summary
    review = """# Review: todo API

## Requirements
- CRUD on todos

## Open questions
- [blocking] Should deleting a todo be a soft delete?
- [blocking] Which fields are required?
  Answer: only title
- Should we paginate later?
"""
    write(todo_repo, ".implflow/review.md", review)
    verdict = await gate("review", todo_repo, round=2)
    assert not verdict.passed
    result = check(verdict, "review")
    assert result.figures == {"open_questions": 3, "blocking": 2, "unanswered_blocking": 1}
    assert result.details == ["Should deleting a todo be a soft delete?"]

    write(todo_repo, ".implflow/review.md", review.replace("delete?\n", "delete?\n  Answer: no\n"))
    verdict = await gate("review", todo_repo, round=3)
    assert verdict.passed, verdict.failure_summary


async def test_implement_and_document_gates(todo_repo: Path) -> None:
    base = git(todo_repo, "rev-parse", "HEAD")
    probe_config(todo_repo)  # a short probe: implement measures the optimize baseline
    verdict = await gate("implement", todo_repo)
    assert verdict.passed, verdict.failure_summary
    assert [c.name for c in verdict.checks] == ["compile", "import", "tests", "load"]
    load = check(verdict, "load")
    assert load.threshold.startswith("measure only")
    assert_probe_figures(load.figures)

    write(todo_repo, "todo_service/broken.py", "def f(:\n")
    verdict = await gate("implement", todo_repo, round=2)
    assert not check(verdict, "compile").passed
    (todo_repo / "todo_service/broken.py").unlink()

    verdict = await gate("document", todo_repo)
    readme = check(verdict, "readme")
    assert readme.passed and readme.skipped  # no base_ref: nothing to diff against
    docstrings = check(verdict, "docstrings")
    assert not docstrings.passed
    assert float(docstrings.figures["docstring_pct"]) < 80

    with (todo_repo / "README.md").open("a") as fh:
        fh.write("\n## API\n\nSee `openapi.yaml`.\n")
    verdict = await gate("document", todo_repo, round=2, base_ref=base)
    readme = check(verdict, "readme")
    assert readme.passed and not readme.skipped
    assert readme.figures["matched"] == "README.md"

    git(todo_repo, "checkout", "README.md")
    verdict = await gate("document", todo_repo, round=3, base_ref=base)
    assert not check(verdict, "readme").passed


def probe_config(repo: Path, extra: str = "") -> None:
    write(
        repo,
        GATES_FILE,
        f"""
[service]
paths = ["/todos", "/health"]
duration_s = 2
warmup_s = 0
connections = 16
{extra}
""",
    )


def assert_probe_figures(figures: dict[str, GateFigure]) -> None:
    assert float(figures["requests_per_s"]) > 0
    assert float(figures["p95_ms"]) > 0
    assert float(figures["peak_rss_mib"]) > 0
    assert figures["error_rate"] == 0
    assert figures["stray_processes"] == 0


@needs_wrk
async def test_verify_gate_load_probe_against_the_example_service(todo_repo: Path) -> None:
    probe_config(todo_repo)
    # Targets any machine meets, so the test checks the plumbing, not this machine's speed.
    easy = Thresholds(p95_ms_max=5000, rps_min=1, rss_mb_max=4096, cpu_pct_max=100)
    verdict = await gate("verify", todo_repo, thresholds=easy)
    assert verdict.passed, verdict.failure_summary
    load = check(verdict, "load")
    assert_probe_figures(load.figures)
    assert "p95_ms < 5000" in load.threshold
    result = json.loads((todo_repo / ".implflow/reports/verify/1/load.json").read_text())
    assert result["service_pids"]
    assert not any(
        psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        for pid in result["service_pids"]
    )
    assert (todo_repo / ".implflow/reports/verify/1/load/service.log").is_file()

    # A target even the trivial calibration endpoint misses is this machine's limit, not the
    # agent's: an environment failure naming both figures, measured once (no re-measure).
    verdict = await gate("verify", todo_repo, round=2, thresholds=Thresholds(p95_ms_max=0.001))
    assert not verdict.passed
    load = check(verdict, "load")
    assert (load.failure_class, verdict.failure_class) == ("environment", "environment")
    assert "p95 target < 0.001 ms is beyond this machine" in load.summary
    assert "the service:" in load.summary
    assert load.figures["calibration_p95_ms"] > 0.001
    assert load.figures["remeasured"] == 0
    assert verdict.failure_summary.startswith("root cause (environment): p95 target")


@needs_wrk
async def test_optimize_gate_compares_with_a_baseline(todo_repo: Path) -> None:
    probe_config(todo_repo)
    impossible = {"load": {"requests_per_s": 1e9, "p95_ms": 0.0001}}
    verdict = await gate("optimize", todo_repo, baseline=impossible)
    assert not verdict.passed
    load = check(verdict, "load")
    assert_probe_figures(load.figures)
    assert "regressed" in load.summary

    verdict = await gate("optimize", todo_repo, round=2, baseline=None)
    assert verdict.passed, verdict.failure_summary
    assert "these figures are the baseline" in check(verdict, "load").summary
    # The verdict's figures are the next run's baseline.
    verdict = await gate(
        "optimize", todo_repo, round=3, baseline={"load": {"p95_ms": 5000, "requests_per_s": 1}}
    )
    assert verdict.passed, verdict.failure_summary


async def test_probe_without_a_service_command_says_what_to_add(tmp_path: Path) -> None:
    write(tmp_path, "pyproject.toml", "[project]\nname = 'x'\nversion = '0'\n")
    verdict = await gate("verify", tmp_path)
    assert not verdict.passed
    assert "[service] command" in check(verdict, "load").summary


async def test_custom_config_overrides_the_preset(todo_repo: Path) -> None:
    write(
        todo_repo,
        GATES_FILE,
        """
[[phases.test.checks]]
name = "tests"
argv = ["{python}", "-m", "coverage", "run", "--data-file={tmp}/cov", "--source=todo_service",
        "-m", "pytest", "-q", "-p", "no:cacheprovider", "--junitxml={report}"]
report = "{report_dir}/junit.xml"
format = "junit"

[[phases.test.checks]]
name = "coverage"
argv = ["{python}", "-m", "coverage", "xml", "--data-file={tmp}/cov", "-o", "{report}"]
report = "{report_dir}/coverage.xml"
format = "cobertura"
thresholds = { coverage_min_pct = 20 }

[[phases.test.checks]]
name = "notes"
format = "exists"
report = "NOTES.md"
""",
    )
    verdict = await gate("test", todo_repo)
    assert verdict.config_source == f"{GATES_FILE} over preset:python"
    assert [c.name for c in verdict.checks] == ["tests", "coverage", "notes"]
    assert check(verdict, "coverage").passed  # 20 % from the file, not the preset's 80 %
    assert check(verdict, "coverage").threshold == "line_rate_pct >= 20"
    assert not check(verdict, "notes").passed
    # The phases the file does not name keep the preset.
    names = [c.name for c in load_gate_config(todo_repo).checks_for("implement")]
    assert names == ["compile", "import", "tests", "load"]


async def test_invalid_config_fails_the_gate_naming_the_key(todo_repo: Path) -> None:
    write(todo_repo, GATES_FILE, "[service]\nhealth_timeout_s = -1\n")
    with pytest.raises(GateConfigError, match=r"service\.health_timeout_s"):
        await run_gate(
            "test", todo_repo, 1, Thresholds(), base_ref=None, baseline=None, heartbeat=None
        )


async def test_missing_tools_malformed_reports_and_timeouts_are_failed_checks(
    tmp_path: Path,
) -> None:
    py = "{python}"
    write(
        tmp_path,
        GATES_FILE,
        f"""
kind = "none"
[[phases.x.checks]]
name = "no-program"
format = "exit-code"
argv = ["implflow-no-such-tool", "--version"]
install = "apt-get install implflow-no-such-tool"

[[phases.x.checks]]
name = "no-module"
format = "sarif"
argv = ["{py}", "-m", "implflow_no_such_module"]
report = "{{report_dir}}/x.sarif"
install = "pip install implflow-no-such-module"

[[phases.x.checks]]
name = "truncated"
format = "junit"
argv = ["{py}", "-c", "import sys; open(sys.argv[1], 'w').write('<testsuite><testcase')",
        "{{report}}"]
report = "{{report_dir}}/junit.xml"

[[phases.x.checks]]
name = "no-report"
format = "cobertura"
argv = ["{py}", "-c", "import sys; print('boom'); sys.exit(3)"]
report = "{{report_dir}}/coverage.xml"

[[phases.x.checks]]
name = "slow"
format = "exit-code"
argv = ["{py}", "-c", "import time; time.sleep(30)"]
timeout_s = 1

[[phases.x.checks]]
name = "fine"
format = "exit-code"
argv = ["{py}", "-c", "print('ok')"]

[[phases.x.checks]]
name = "outside"
format = "exists"
report = "../elsewhere.txt"
""",
    )
    verdict = await gate("x", tmp_path)
    results = {c.name: c for c in verdict.checks}
    assert not verdict.passed
    assert results["fine"].passed
    assert "missing tool" in results["no-program"].summary
    assert "apt-get install implflow-no-such-tool" in results["no-program"].summary
    assert "'implflow_no_such_module' is not installed" in results["no-module"].summary
    assert "pip install implflow-no-such-module" in results["no-module"].summary
    assert "unusable report" in results["truncated"].summary
    assert "malformed or truncated JUnit XML" in results["truncated"].summary
    assert "wrote no report" in results["no-report"].summary
    assert "exit code 3" in results["no-report"].summary
    assert "boom" in results["no-report"].summary
    assert "timed out after 1s" in results["slow"].summary
    assert "outside the work directory" in results["outside"].summary
    for name in ("no-program", "no-module", "truncated", "no-report", "slow", "outside"):
        assert f"- {name}:" in verdict.failure_summary


async def test_a_phase_without_checks_passes_empty(tmp_path: Path) -> None:
    verdict = await gate("review", tmp_path)
    assert verdict.passed
    assert verdict.checks == []
    assert verdict.config_source == "none"


async def test_bad_phase_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="phase"):
        await run_gate(
            "../x", tmp_path, 1, Thresholds(), base_ref=None, baseline=None, heartbeat=None
        )


def test_example_service_starts_from_its_own_command(todo_repo: Path) -> None:
    """The start command the preset guesses really serves (and the test suite is green)."""
    out = subprocess.run(
        [sys.executable, "-m", "todo_service", "--help"],
        cwd=todo_repo,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--port" in out.stdout
