"""Run one phase's gate in a checkout: its configured checks, one ``GateResult``.

For each check the runner gathers the evidence its kind needs (runs the check's ``argv``,
finds the report it wrote) and hands it to the kind's judge (``checks.JUDGES``). Reports
and tool logs go to ``.implflow/reports/<phase>/<round>/`` so they can be committed to the
task branch; the result carries only figures and one-line summaries. A missing tool, a
timeout, or a malformed or missing report is a failed check that says what to do, never
an exception out of the gate; only an invalid ``.implflow/gates.toml`` raises.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from activities.gates.checks import JUDGES
from activities.gates.config import load_gate_config
from activities.gates.context import Evidence, GateContext, Heartbeat, ToolRun
from activities.gates.parsers import ReportError
from activities.gates.results import failed, last_line
from activities.gates.schema import CheckConfig
from activities.gates.tools import run_tool
from implflow.layout import REPORTS_DIR
from implflow.models import PHASE_NAME_PATTERN, GateCheck, GateResult, Thresholds

__all__ = ["VERDICT_FILE", "run_gate"]

VERDICT_FILE = "verdict.json"
"""The gate's result, written beside its reports."""

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
) -> GateResult:
    """Run ``phase``'s checks in ``workdir`` (an existing checkout) and judge their reports.

    ``base_ref`` is the commit the phase started from (the document gate's README check
    diffs against it). ``baseline`` holds earlier load figures for the optimize gate —
    ``GateResult.figures()`` of an earlier gate, or one check's figures. ``heartbeat``
    (e.g. ``activity.heartbeat``) is called while checks run.

    Raises ``GateConfigError`` for an invalid ``.implflow/gates.toml`` and ``ValueError``
    for a bad phase name or round; every problem of a check is a failed check instead.
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

    results: list[GateCheck] = []
    with tempfile.TemporaryDirectory(prefix="implflow-gate-") as tmp:
        ctx = GateContext(
            workdir=workdir,
            report_dir=report_dir,
            tmp=Path(tmp),
            cache_dir=Path(tempfile.gettempdir()) / "implflow-gate-cache",
            thresholds=thresholds,
            base_ref=base_ref,
            baseline=baseline,
            config=config,
            beat=beat,
        )
        for check in config.checks_for(phase):
            beat({"phase": phase, "round": round, "check": check.name})
            try:
                result = await _run_check(check, ctx)
            except Exception as exc:  # a gate never crashes on one check: it reports it
                result = failed(check, f"gate error: {type(exc).__name__}: {exc}")
            results.append(result)

    # The review's unanswered questions are not passed: GateResult reads them off the checks.
    verdict = GateResult(
        phase=phase,
        round=round,
        passed=all(r.passed for r in results),
        checks=results,
        failure_summary=_failure_summary(results),
        report_dir=report_rel,
        config_source=config.source,
    )
    (report_dir / VERDICT_FILE).write_text(verdict.model_dump_json(indent=2), encoding="utf-8")
    return verdict


def _no_heartbeat(_info: dict[str, object]) -> None:
    return None


async def _run_check(check: CheckConfig, ctx: GateContext) -> GateCheck:
    """Gather the evidence the check's kind needs, then judge it."""
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
            return failed(
                check,
                f"{Path(check.argv[0]).name} wrote no report {ctx.rel(report)} "
                f"(exit code {run.returncode}): {last_line(run.tail)}",
                report=ctx.rel(report),
                log=run.log,
            )
    try:
        return await kind.judge(check, ctx, Evidence(report=report, run=run))
    except ReportError as err:
        where = ctx.rel(report) if report is not None else None
        return failed(check, f"unusable report: {err}", report=where)


def _report_path(check: CheckConfig, ctx: GateContext) -> Path | GateCheck | None:
    """The check's report path inside the work directory (a failed check when outside)."""
    if check.report is None:
        return None
    path = (ctx.workdir / ctx.expand(check.report)).resolve()
    if not path.is_relative_to(ctx.workdir):
        return failed(check, f"report path {check.report!r} is outside the work directory")
    return path


def _failure_summary(results: list[GateCheck]) -> str:
    """Feedback for a repair round: each failed check, then its first examples."""
    lines: list[str] = []
    for result in results:
        if result.passed:
            continue
        lines.append(f"- {result.name}: {result.summary}")
        lines.extend(f"    {detail}" for detail in result.details[:5])
        if result.report:
            lines.append(f"    report: {result.report}")
    return "\n".join(lines)
