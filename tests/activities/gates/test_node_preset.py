"""A small TypeScript service with no gate configuration: the Node preset, with the real tools.

The project is ``node_fixture/`` (package.json with exact versions and its lockfile,
tsconfig, an eslint flat config, one vitest file, ``GET /health`` on 127.0.0.1:$PORT).
Each copy starts without ``node_modules``, as a gate's fresh checkout does: the preset's
``deps`` step runs ``npm ci`` (lockfile, no install scripts) before the tools. npm's
cache (``$npm_config_cache`` or ``~/.npm``) is shared across runs.

Without ``npm`` the tests skip, unless ``$CI`` is set: then they fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from activities.gates.runner import run_gate
from implflow.models import GateResult, Thresholds

FIXTURE = Path(__file__).parent / "node_fixture"

# Planted into src/app.ts by the failure test: an unused variable (eslint error
# @typescript-eslint/no-unused-vars; tsc does not mind) and an untested function that
# drags line coverage from ~89 % to well below 80 %.
PLANTED = """
const planted = "never used";

/** Untested on purpose. */
export function farewell(name: string, formal: boolean): string {
  const trimmed = name.trim();
  if (!trimmed) {
    return "goodbye";
  }
  if (formal) {
    const title = trimmed.length > 3 ? "Dr." : "Mx.";
    return `farewell, ${title} ${trimmed}`;
  }
  const upper = trimmed.toUpperCase();
  return `bye, ${upper}`;
}
"""


def require_npm() -> None:
    if shutil.which("npm") is None:
        if os.environ.get("CI"):
            pytest.fail("npm is not on PATH: the CI image must provide Node 20+ and npm")
        pytest.skip("npm is not on PATH (install Node 20+ to run the Node preset tests)")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A fresh copy of the project in a new git repository, without node_modules: the
    preset's first gate installs them (``npm ci`` from the lockfile, npm's shared cache)."""
    require_npm()
    repo = tmp_path / "greeter-node"
    shutil.copytree(FIXTURE, repo, ignore=shutil.ignore_patterns("node_modules", "dist"))
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    assert not (repo / ".implflow").exists()  # no gates.toml: detection and presets only
    return repo


def names(verdict: GateResult) -> list[str]:
    return [check.name for check in verdict.checks]


async def test_node_preset_passes_with_the_real_tools(repo: Path) -> None:
    implemented = await run_gate("implement", repo, 1, Thresholds())
    assert implemented.config_source == "preset:node"
    # A fresh checkout: the first gate installs the dependencies itself.
    assert names(implemented) == ["deps", "build", "tsc", "tests", "load"]
    assert implemented.passed, implemented.failure_summary
    assert (repo / "node_modules" / ".bin" / "vitest").exists()
    assert (repo / "dist/src/main.js").is_file()  # npm run build ran tsc; npm start needs it
    baseline = next(c for c in implemented.checks if c.name == "load")
    assert not baseline.skipped and float(baseline.figures["requests_per_s"]) > 0

    validated = await run_gate("validate", repo, 1, Thresholds())
    assert validated.config_source == "preset:node"
    assert names(validated) == ["eslint", "tsc"]
    assert validated.passed, validated.failure_summary
    eslint = validated.checks[0]
    assert eslint.summary.startswith("ESLint: 0 findings"), eslint.summary
    assert (repo / validated.report_dir / "eslint.sarif").is_file()

    tested = await run_gate("test", repo, 1, Thresholds())
    assert tested.config_source == "preset:node"
    assert names(tested) == ["tests", "coverage"]
    assert tested.passed, tested.failure_summary
    tests, coverage = tested.checks
    assert tests.figures["total"] == 3 and tests.figures["failures"] == 0
    assert float(coverage.figures["line_rate_pct"]) >= 80
    assert (repo / tested.report_dir / "coverage/cobertura-coverage.xml").is_file()

    verified = await run_gate("verify", repo, 1, Thresholds())
    assert verified.config_source == "preset:node"
    assert names(verified) == ["build", "load", "eslint"]  # builds before `npm start`
    assert verified.passed, verified.failure_summary
    load = next(c for c in verified.checks if c.name == "load")
    assert float(load.figures["requests_per_s"]) >= 1000
    assert float(load.figures["p95_ms"]) < 200
    assert load.figures["stray_processes"] == 0  # npm start, sh and node: the whole tree


async def test_node_preset_reports_a_lint_error_and_low_coverage(repo: Path) -> None:
    app = repo / "src/app.ts"
    app.write_text(app.read_text(encoding="utf-8") + PLANTED, encoding="utf-8")
    line = 1 + app.read_text(encoding="utf-8").splitlines().index('const planted = "never used";')

    validated = await run_gate("validate", repo, 1, Thresholds())
    assert validated.config_source == "preset:node"
    assert not validated.passed
    assert names(validated) == ["deps", "eslint", "tsc"]  # a fresh checkout installs first
    deps, eslint, tsc = validated.checks
    assert deps.passed
    assert not eslint.passed and tsc.passed  # an unused variable is lint, not a type error
    # eslint's own rating: an error-level lint finding, not a high-severity security one.
    assert (eslint.figures["error"], eslint.figures["high"]) == (1, 0)
    assert "1 findings at level error" in eslint.summary
    assert "error @typescript-eslint/no-unused-vars" in eslint.summary
    assert f"src/app.ts:{line}" in validated.failure_summary
    assert "'planted' is assigned a value but never used" in validated.failure_summary

    tested = await run_gate("test", repo, 1, Thresholds())
    assert tested.config_source == "preset:node"
    tests, coverage = tested.checks
    assert tests.passed and not coverage.passed and not tested.passed
    pct = float(coverage.figures["line_rate_pct"])
    assert pct < 80
    assert f"line coverage {pct:g} %" in tested.failure_summary
    assert "below the 80 % threshold" in tested.failure_summary
