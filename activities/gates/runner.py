"""Run one phase's gate in a checkout: its configured checks, one ``GateResult``.

For each check the runner gathers the evidence its kind needs (runs the check's ``argv``,
finds the report it wrote) and hands it to the kind's judge (``checks.JUDGES``). Reports
and tool logs go to ``.implflow/reports/<phase>/<round>/`` so they can be committed to the
task branch; the result carries only figures and one-line summaries. A missing tool, a
timeout, or a malformed or missing report is a failed check that says what to do, never
an exception out of the gate; only an invalid ``.implflow/gates.toml`` raises.

Before the first check that runs the target's code, the runner gets the task environment
(``activities/environments.py``: built from the target's metadata, or from the cache); an
install that fails fails those checks as ``environment`` with the installer's cause. After
each judge, ``failures.classify`` reads the tool's output for what the figures cannot say
(a package that is not installed, a port in use) and names the cause in one line.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from activities.environments import (
    EnvironmentBuildError,
    EnvironmentStore,
    TaskEnvironment,
    prepare_environment,
    read_recipe,
    worker_environment,
)
from activities.gates.checks import JUDGES
from activities.gates.checks.service import design_service, resolve_service
from activities.gates.config import load_gate_config
from activities.gates.context import Evidence, GateContext, Heartbeat, ToolRun
from activities.gates.failures import ModuleOwner, classify
from activities.gates.parsers import ReportError
from activities.gates.results import failed, last_line
from activities.gates.schema import CheckConfig, ServiceConfig
from activities.gates.services import own_modules
from activities.gates.tools import run_tool
from activities.sandbox import allow as sandbox_allow
from implflow.layout import REPORTS_DIR
from implflow.models import PHASE_NAME_PATTERN, GateCheck, GateResult, Thresholds

__all__ = ["ENVIRONMENT_LOG", "VERDICT_FILE", "run_gate"]

VERDICT_FILE = "verdict.json"
"""The gate's result, written beside its reports."""

ENVIRONMENT_LOG = "environment.log"
"""uv's output when the gate built the task environment, beside the reports."""

_PHASE = re.compile(PHASE_NAME_PATTERN)


async def run_gate(
    phase: str,
    workdir: Path,
    round: int,
    thresholds: Thresholds,
    *,
    base_ref: str | None = None,
    baseline: Mapping[str, Any] | None = None,
    heartbeat: Heartbeat | None = None,
    environments: EnvironmentStore | None = None,
    service_command: list[str] | None = None,
    service_health_path: str | None = None,
) -> GateResult:
    """Run ``phase``'s checks in ``workdir`` (an existing checkout) and judge their reports.

    ``base_ref`` is the commit the phase started from (the document gate's README check
    diffs against it). ``baseline`` holds earlier load figures for the optimize gate —
    ``GateResult.load_baseline()`` of an earlier gate, or one check's figures. ``heartbeat``
    (e.g. ``activity.heartbeat``) is called while checks run.

    ``environments``: where task environments are built (``activities/environments.py``);
    with it, ``{python}`` is the task environment's interpreter, built from the target's
    metadata before the first check that needs it; without it (``None``), the worker's.
    ``service_command`` / ``service_health_path``: the service command approved with the
    design (``GateInput.service_command``), used unless ``[service] command`` is configured.

    Raises ``GateConfigError`` for an invalid ``.implflow/gates.toml`` and ``ValueError``
    for a bad phase name or round; every problem of a check is a failed check instead, with
    its failure class (``agent``, ``environment`` or ``noise``).
    """
    if not _PHASE.match(phase):
        raise ValueError(f"phase {phase!r}: use lower-case letters, digits, '_' or '-'")
    if round < 0:
        raise ValueError(f"round must be >= 0, not {round}")
    workdir = workdir.resolve()  # noqa: ASYNC240 - one stat, before any work starts
    if not workdir.is_dir():
        raise ValueError(f"workdir {workdir} is not a directory")
    beat: Heartbeat = heartbeat or _no_heartbeat
    config = load_gate_config(workdir)
    report_rel = f"{REPORTS_DIR}/{phase}/{round}"
    report_dir = workdir / report_rel
    shutil.rmtree(report_dir, ignore_errors=True)  # stale or planted reports never count
    report_dir.mkdir(parents=True)
    checks = config.checks_for(phase)
    service, service_source = resolve_service(config, workdir, service_command, service_health_path)
    recipe = await asyncio.to_thread(read_recipe, workdir)
    environment: TaskEnvironment = worker_environment(recipe)
    environment_error: str | None = None
    if environments is not None and any(_needs_env(c, service) for c in checks):
        beat({"phase": phase, "round": round, "check": "environment"})
        try:
            environment = await prepare_environment(
                workdir,
                environments,
                heartbeat=beat,
                log_path=report_dir / ENVIRONMENT_LOG,
            )
        except EnvironmentBuildError as err:
            environment_error = str(err)
    owner = ModuleOwner(
        own=frozenset(await asyncio.to_thread(own_modules, workdir)),
        declared=recipe.declared,
        from_metadata=environments is not None and environment_error is None,
    )

    results: list[GateCheck] = []
    with tempfile.TemporaryDirectory(prefix="implflow-gate-") as tmp:
        cache_dir = Path(tempfile.gettempdir()) / "implflow-gate-cache"
        cache_dir.mkdir(exist_ok=True)
        # {tmp} and {cache_dir} are shared by the gate's programs: visible in its sandbox.
        sandbox_allow(write=[Path(tmp), cache_dir])
        ctx = GateContext(
            workdir=workdir,
            report_dir=report_dir,
            tmp=Path(tmp),
            cache_dir=cache_dir,
            thresholds=thresholds,
            base_ref=base_ref,
            baseline=baseline,
            config=config,
            beat=beat,
            python=environment.python,
            env_vars=environment.env_vars(),
            environment_error=environment_error,
            owner=owner,
            service=service,
            service_source=service_source,
        )
        for check in checks:
            beat({"phase": phase, "round": round, "check": check.name})
            try:
                result = await _run_check(check, ctx)
            except Exception as exc:  # a gate never crashes on one check: it reports it
                result = failed(check, f"gate error: {type(exc).__name__}: {exc}")
            results.append(result)
        choice = (
            design_service(ctx)
            if any(c.format == "service" and r.passed for c, r in zip(checks, results, strict=True))
            else None
        )

    # The review's unanswered questions are not passed: GateResult reads them off the checks.
    verdict = GateResult(
        phase=phase,
        round=round,
        passed=all(r.passed for r in results),
        checks=results,
        report_dir=report_rel,
        config_source=config.source,
        service_command=choice.command if choice else None,
        service_health_path=choice.health_path if choice else None,
    )
    verdict = verdict.model_copy(update={"failure_summary": _failure_summary(verdict)})
    (report_dir / VERDICT_FILE).write_text(verdict.model_dump_json(indent=2), encoding="utf-8")
    return verdict


def _needs_env(check: CheckConfig, service: ServiceConfig | None) -> bool:
    """The check runs the target's code with ``{python}`` (its argv, or the probed service)."""
    if check.format == "loadprobe":
        return service is not None and "{python}" in " ".join(service.command or [])
    return check.argv is not None and any("{python}" in arg for arg in check.argv)


def _no_heartbeat(_info: dict[str, object]) -> None:
    return None


async def _run_check(check: CheckConfig, ctx: GateContext) -> GateCheck:
    """Gather the evidence the check's kind needs, judge it, and say whose failure it is."""
    if ctx.environment_error and _needs_env(check, ctx.service) and check.format != "loadprobe":
        return failed(check, ctx.environment_error, failure_class="environment")
    kind = JUDGES[check.format]
    report = _report_path(check, ctx)
    if isinstance(report, GateCheck):
        return report
    run: ToolRun | None = None
    if kind.runs_argv and check.argv is not None:
        if report is not None:
            report.unlink(missing_ok=True)  # only what the tool writes now counts
        outcome = await run_tool(check, check.argv, ctx, report)
        if isinstance(outcome, GateCheck):
            return outcome
        run = outcome
        if kind.reads_report and report is not None and not report.exists():
            result = failed(
                check,
                f"{Path(check.argv[0]).name} wrote no report {ctx.rel(report)} "
                f"(exit code {run.returncode}): {last_line(run.tail)}",
                report=ctx.rel(report),
                log=run.log,
            )
            return _classified(check, result, ctx, run, None)
    try:
        result = await kind.judge(check, ctx, Evidence(report=report, run=run))
    except ReportError as err:
        where = ctx.rel(report) if report is not None else None
        result = failed(check, f"unusable report: {err}", report=where)
    return _classified(check, result, ctx, run, report)


def _classified(
    check: CheckConfig,
    result: GateCheck,
    ctx: GateContext,
    run: ToolRun | None,
    report: Path | None,
) -> GateCheck:
    """The failed check's class and cause from its tool's output; a setup step's is the
    environment's (an install that fails)."""
    if result.passed:
        return result
    log = ctx.workdir / run.log if run is not None else None
    result = classify(
        result, log, report if report is not None and report.is_file() else None, ctx.owner
    )
    if check.setup and result.failure_class == "agent":
        result = result.model_copy(update={"failure_class": "environment"})
    return result


def _report_path(check: CheckConfig, ctx: GateContext) -> Path | GateCheck | None:
    """The check's report path inside the work directory (a failed check when outside)."""
    if check.report is None:
        return None
    path = (ctx.workdir / ctx.expand(check.report)).resolve()
    if not path.is_relative_to(ctx.workdir):
        return failed(check, f"report path {check.report!r} is outside the work directory")
    return path


def _failure_summary(verdict: GateResult) -> str:
    """Feedback for a repair round: the root cause when nobody's code is to blame, then
    each failed check and its first examples."""
    lines: list[str] = []
    if verdict.failure_class in ("environment", "noise") and verdict.root_cause:
        lines.append(f"root cause ({verdict.failure_class}): {verdict.root_cause}")
    for result in verdict.checks:
        if result.passed:
            continue
        lines.append(f"- {result.name}: {result.summary}")
        lines.extend(f"    {detail}" for detail in result.details[:5])
        if result.report:
            lines.append(f"    report: {result.report}")
    return "\n".join(lines)
