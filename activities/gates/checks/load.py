"""Judge the service under load: start ``[service]``, drive it with the probe, hold figures.

``against`` picks the rule: ``thresholds`` (verify: p95, req/s, RSS, CPU and error-rate
targets), ``baseline`` (optimize: no regression against the figures passed in) or
``measure`` (implement: record the figures that become optimize's baseline). The probe
engine is ``activities/gates/loadprobe.py``; a service process left running afterwards
fails the check whatever the figures say.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

import psutil

from activities.gates.context import Evidence, GateContext
from activities.gates.loadprobe import (
    LoadProbeError,
    LoadProbeResult,
    LoadProbeSpec,
    LoadThresholds,
    LoadToolUnavailableError,
    check_load_thresholds,
    run_load_probe,
)
from activities.gates.results import failed, judged, skipped
from activities.gates.schema import CheckConfig
from implflow.layout import GATES_FILE
from implflow.models import GateCheck, GateFigure

__all__ = ["DEFAULT_REGRESSION_PCT", "MAX_ERROR_RATE", "P95_SLACK_MS", "judge_load"]

DEFAULT_REGRESSION_PCT = 30.0
"""Loopback figures on a shared 2-core machine vary by ±20 %: 30 % is a real regression."""
P95_SLACK_MS = 2.0
"""A p95 rise smaller than this is noise, not a regression (sub-millisecond baselines)."""
MAX_ERROR_RATE = 0.01

Verdict = tuple[bool, str, str, list[str]]
"""``(passed, summary, rule, details)`` of one way of holding the figures."""


async def judge_load(check: CheckConfig, ctx: GateContext, evidence: Evidence) -> GateCheck:
    """Probe the service and hold its figures to the rule ``against`` names."""
    service = ctx.config.service
    if service is None or service.command is None:
        if check.against == "measure":
            return skipped(
                check,
                "measure only",
                "skipped: no service to measure (no baseline for the optimize gate)",
            )
        return failed(
            check,
            f"no service to probe: add [service] command = [...] (argv with {{port}}) to "
            f"{GATES_FILE}",
        )
    try:
        spec = LoadProbeSpec(
            command=[ctx.expand(arg) for arg in service.command],
            env={
                "PYTHONPYCACHEPREFIX": str(ctx.tmp / "pycache"),
                **{key: ctx.expand(value) for key, value in service.env.items()},
            },
            health_path=service.health_path,
            paths=service.paths or [service.health_path],
            duration_s=service.duration_s,
            warmup_s=service.warmup_s,
            connections=service.connections,
            health_timeout_s=service.health_timeout_s,
        )
    except ValueError as err:
        return failed(check, f"[service] is not a valid probe: {err}")
    log_dir = ctx.report_dir / check.name
    report = ctx.report_dir / f"{check.name}.json"
    try:
        result = await asyncio.wait_for(
            run_load_probe(spec, ctx.workdir, ctx.check_beat(check), log_dir=log_dir),
            check.timeout_s,
        )
    except LoadToolUnavailableError as err:
        return failed(check, f"missing tool: {err}")
    except LoadProbeError as err:
        return failed(check, f"load probe failed: {err}", report=ctx.rel(log_dir))
    except TimeoutError:
        return failed(check, f"load probe ran longer than {check.timeout_s:g}s")
    report.write_text(result.model_dump_json(indent=2), encoding="utf-8")
    strays = _strays(result)
    figures: dict[str, GateFigure] = {
        "requests_per_s": result.requests_per_s,
        "p50_ms": result.latency_ms.p50,
        "p95_ms": result.latency_ms.p95,
        "p99_ms": result.latency_ms.p99,
        "error_rate": result.error_rate,
        "requests": result.requests,
        "peak_rss_mib": result.peak_rss_mib,
        "peak_cpu_percent": result.peak_cpu_percent,
        "mean_cpu_percent": result.mean_cpu_percent,
        "stray_processes": strays,
    }
    if check.against == "measure":
        passed, summary, rule, details = _measured(result)
    elif check.against == "baseline":
        passed, summary, rule, details = _against_baseline(check, ctx, result)
    else:
        passed, summary, rule, details = _against_targets(check, ctx, result)
    if strays:
        passed = False
        summary = f"{strays} service process(es) still running after the probe; " + summary
    return judged(check, passed, summary, figures, rule, ctx.rel(report), details)


def _strays(result: LoadProbeResult) -> int:
    count = 0
    for pid in result.service_pids:
        with contextlib.suppress(psutil.Error):
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                count += 1
    return count


def _measured(result: LoadProbeResult) -> Verdict:
    """The implement round's figures: the optimize baseline; only errors can fail it."""
    summary = (
        f"{result.requests_per_s:g} req/s, p95 {result.latency_ms.p95:g} ms "
        f"(baseline for optimize), error rate {result.error_rate:g}"
    )
    rule = f"measure only; error rate <= {MAX_ERROR_RATE:g}"
    return result.error_rate <= MAX_ERROR_RATE, summary, rule, []


def _against_targets(check: CheckConfig, ctx: GateContext, result: LoadProbeResult) -> Verdict:
    targets = LoadThresholds(
        max_p95_ms=float(ctx.limit(check, "p95_ms_max")),
        min_requests_per_s=float(ctx.limit(check, "rps_min")),
        max_rss_mib=float(ctx.limit(check, "rss_mb_max")),
        max_cpu_percent=min(float(ctx.limit(check, "cpu_pct_max")), 100.0),
        max_error_rate=float(ctx.limit(check, "error_rate_max") or MAX_ERROR_RATE),
    )
    figures = check_load_thresholds(result, targets)
    failures = [f.describe() for f in figures if not f.passed]
    rule = ", ".join(f"{f.figure} {f.comparison} {f.threshold:g}" for f in figures)
    head = (
        f"{result.requests_per_s:g} req/s, p95 {result.latency_ms.p95:g} ms, "
        f"RSS {result.peak_rss_mib:g} MiB, CPU {result.peak_cpu_percent:g} %"
    )
    summary = f"{head}: " + ("; ".join(failures) if failures else "all targets met")
    return not failures, summary, rule, [f.describe() for f in figures]


def _baseline_figures(check: CheckConfig, baseline: Mapping[str, Any]) -> Mapping[str, Any]:
    """The check's own figures when the baseline is ``GateResult.figures()``, else as given."""
    nested = baseline.get(check.name)
    return nested if isinstance(nested, Mapping) else baseline


def _against_baseline(check: CheckConfig, ctx: GateContext, result: LoadProbeResult) -> Verdict:
    tolerance = float(ctx.limit(check, "regression_pct") or DEFAULT_REGRESSION_PCT)
    max_errors = float(ctx.limit(check, "error_rate_max") or MAX_ERROR_RATE)
    rule = f"p95 <= baseline +{tolerance:g} %, req/s >= baseline -{tolerance:g} %"
    head = f"{result.requests_per_s:g} req/s, p95 {result.latency_ms.p95:g} ms"
    problems: list[str] = []
    if result.error_rate > max_errors:
        problems.append(f"error rate {result.error_rate:g} above {max_errors:g}")
    base = _baseline_figures(check, ctx.baseline or {})
    base_p95 = _float(base.get("p95_ms"))
    base_rps = _float(base.get("requests_per_s"))
    if base_p95 is None or base_rps is None:
        summary = f"{head}; no baseline given: these figures are the baseline"
        if problems:
            summary = f"{head}; " + "; ".join(problems)
        return not problems, summary, rule, problems
    p95_limit = base_p95 * (1 + tolerance / 100) + P95_SLACK_MS
    rps_limit = base_rps * (1 - tolerance / 100)
    if result.latency_ms.p95 > p95_limit:
        problems.append(
            f"p95 {result.latency_ms.p95:g} ms regressed from {base_p95:g} ms "
            f"(limit {p95_limit:.1f} ms)"
        )
    if result.requests_per_s < rps_limit:
        problems.append(
            f"throughput {result.requests_per_s:g} req/s regressed from {base_rps:g} "
            f"(limit {rps_limit:.0f})"
        )
    verdict = "; ".join(problems) if problems else f"no regression vs {base_rps:g} req/s"
    return not problems, f"{head}: {verdict}", rule, problems


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return float(value)
    except ValueError:
        return None
