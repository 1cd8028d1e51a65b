"""Judge the service under load: start it, drive it with the probe, hold its figures.

``against`` picks the rule: ``thresholds`` (verify: p95, req/s, RSS, CPU and error-rate
targets), ``baseline`` (optimize: no regression against the figures passed in) or
``measure`` (implement: record the figures that become optimize's baseline). The probe
engine is ``activities/gates/loadprobe.py``; a service process left running afterwards
fails the check whatever the figures say.

**Noise is measured, not guessed.** The probe measures the service in several windows
(``[service] windows``, 5) and judges their medians; their spread (max - min) is part of
the allowance, and so is the baseline's own spread. Beside the service, a trivial endpoint
(``calibration.py``) gets the same load in short windows alternating with the service's:

- against a baseline, a busier machine than when the baseline was measured (the trivial
  endpoint slower by a factor *m* > 1: its req/s ratio for throughput, the larger of that
  and its p95 ratio for latency) scales the baseline by *m* before comparing; a calmer
  machine never tightens the limit. The allowed change is the larger of the tolerance (30 %)
  and the noise both measurements showed (each one's half range over its median), at most
  60 %;
- against targets, a throughput target that even the trivial endpoint misses (or a p95
  target it misses) is this machine's limit: an ``environment`` failure with both figures.

A figure that still misses is measured once more (a second probe); the verdict is then on
all windows together: within the limit → passed (the first miss was noise); beyond it in
both probes → a regression, ``agent``; beyond it together but not in the second probe
alone → ``noise``: the gate could not tell, and a person decides.

Where no service command is known (no ``[service]``, none approved, none detected), the
implement gate only notes it; optimize and verify fail as ``environment``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from activities.gates.context import Evidence, GateContext
from activities.gates.failures import find_cause
from activities.gates.loadprobe import (
    LoadProbeError,
    LoadProbeResult,
    LoadProbeSpec,
    LoadThresholds,
    LoadToolUnavailableError,
    ServiceNotHealthyError,
    check_load_thresholds,
    combine,
    run_load_probe,
)
from activities.gates.results import failed, judged, skipped
from activities.gates.schema import CheckConfig
from implflow.layout import GATES_FILE, SERVICE_FILE
from implflow.models import FailureClass, GateCheck, GateFigure

__all__ = [
    "DEFAULT_REGRESSION_PCT",
    "MACHINE_FACTOR_MAX",
    "MAX_ERROR_RATE",
    "P95_SLACK_MS",
    "judge_load",
]

DEFAULT_REGRESSION_PCT = 30.0
"""Allowed p95 rise / throughput drop besides the measured spread: loopback figures on a
shared 2-core machine vary by ±20 %."""
P95_SLACK_MS = 2.0
"""A p95 rise smaller than this is noise, not a regression (sub-millisecond baselines)."""
MAX_ERROR_RATE = 0.01
MACHINE_FACTOR_MAX = 4.0
"""A machine more than this much slower than at the baseline is not scaled further."""
MAX_ALLOWED_CHANGE = 0.6
"""However noisy the windows, a p95 60 % above or a throughput 60 % below the (scaled)
baseline is a regression: noise that large leaves nothing to compare."""


@dataclass(frozen=True)
class Verdict:
    """One way of holding the figures: the outcome, its one line, the rule and details."""

    passed: bool
    summary: str
    rule: str
    details: list[str]
    failure_class: FailureClass = "agent"
    extra: Mapping[str, GateFigure] | None = None


async def judge_load(check: CheckConfig, ctx: GateContext, evidence: Evidence) -> GateCheck:
    """Probe the service and hold its figures to the rule ``against`` names."""
    service = ctx.service
    if service is None or service.command is None:
        if check.against == "measure":
            return skipped(
                check,
                "measure only",
                "skipped: no service to measure (no baseline for the optimize gate)",
            )
        return failed(
            check,
            "no service command: none was found in the repository (ASGI/WSGI app, manage.py, "
            "__main__, [project.scripts], npm start), approved with the design "
            f"({SERVICE_FILE}) or configured ([service] command in {GATES_FILE})",
            failure_class="environment",
        )
    if ctx.environment_error and "{python}" in " ".join(service.command):
        return failed(check, ctx.environment_error, failure_class="environment")
    try:
        spec = LoadProbeSpec(
            command=[ctx.expand(arg) for arg in service.command],
            env={
                "PYTHONPYCACHEPREFIX": str(ctx.tmp / "pycache"),
                **ctx.env_vars,
                **{key: ctx.expand(value) for key, value in service.env.items()},
            },
            health_path=service.health_path,
            paths=service.paths or [service.health_path],
            duration_s=service.duration_s,
            warmup_s=service.warmup_s,
            connections=service.connections,
            health_timeout_s=service.health_timeout_s,
            windows=service.windows,
            calibrate=service.calibrate,
        )
    except ValueError as err:
        return failed(check, f"[service] is not a valid probe: {err}", failure_class="environment")
    log_dir = ctx.report_dir / check.name
    first = await _probe(check, ctx, spec, log_dir)
    if isinstance(first, GateCheck):
        return first
    verdict = _judge(check, ctx, first)
    result = first
    remeasured = False
    if not verdict.passed and check.against != "measure" and verdict.failure_class == "agent":
        # One more probe before anything is blamed: a miss must survive a re-measurement.
        second = await _probe(check, ctx, spec, ctx.report_dir / f"{check.name}-again")
        if isinstance(second, GateCheck):
            return second
        remeasured = True
        result = combine([first, second])
        together = _judge(check, ctx, result)
        alone = _judge(check, ctx, second)
        if together.passed:
            verdict = Verdict(
                True,
                together.summary + " (re-measured: the first probe's miss was noise)",
                together.rule,
                [],
                extra=together.extra,
            )
        elif alone.passed and together.failure_class == "agent":
            verdict = Verdict(
                False,
                f"{together.summary} — but the re-measurement alone passed: this machine's "
                "noise is as large as the difference",
                together.rule,
                together.details,
                failure_class="noise",
                extra=together.extra,
            )
        else:
            verdict = together
    report = ctx.report_dir / f"{check.name}.json"
    await asyncio.to_thread(report.write_text, result.model_dump_json(indent=2), encoding="utf-8")
    strays = _strays(result)
    figures = _figures(result, strays, remeasured)
    figures.update(verdict.extra or {})
    passed, summary, failure_class = verdict.passed, verdict.summary, verdict.failure_class
    if strays:
        passed, failure_class = False, "agent"
        summary = f"{strays} service process(es) still running after the probe; " + summary
    return judged(
        check,
        passed,
        summary,
        figures,
        verdict.rule,
        ctx.rel(report),
        verdict.details,
        failure_class=failure_class,
    )


async def _probe(
    check: CheckConfig, ctx: GateContext, spec: LoadProbeSpec, log_dir: Path
) -> LoadProbeResult | GateCheck:
    """One probe, or the failed check that says why it produced no figures, and whose."""
    try:
        return await asyncio.wait_for(
            run_load_probe(spec, ctx.workdir, ctx.check_beat(check), log_dir=log_dir),
            check.timeout_s,
        )
    except LoadToolUnavailableError as err:
        return failed(check, f"missing tool: {err}", failure_class="environment")
    except ServiceNotHealthyError as err:
        text = _read(log_dir / "service.log") + "\n" + str(err)
        cause = find_cause("service", text, ctx.owner)
        where = f"{ctx.rel(log_dir)}/service.log"
        if "did not start" in str(err):  # the program itself is missing or not executable
            return failed(
                check, f"load probe failed: {err}", report=where, failure_class="environment"
            )
        if cause is not None:
            summary = cause.summary.replace("service failed", "the service did not start")
            return failed(check, summary, report=where, failure_class=cause.failure_class)
        error = _last_exception(text)
        if error is not None and "exited with code" in str(err):
            return failed(check, f"the service exited before it was ready: {error}", report=where)
        return failed(check, f"load probe failed: {err}", report=where)
    except LoadProbeError as err:
        # The port taken before the service started, or the load tool itself failing.
        return failed(
            check, f"load probe failed: {err}", report=ctx.rel(log_dir), failure_class="environment"
        )
    except TimeoutError:
        return failed(check, f"load probe ran longer than {check.timeout_s:g}s")


def _judge(check: CheckConfig, ctx: GateContext, result: LoadProbeResult) -> Verdict:
    if check.against == "measure":
        return _measured(result)
    if check.against == "baseline":
        return _against_baseline(check, ctx, result)
    return _against_targets(check, ctx, result)


def _figures(result: LoadProbeResult, strays: int, remeasured: bool) -> dict[str, GateFigure]:
    figures: dict[str, GateFigure] = {
        "requests_per_s": result.requests_per_s,
        "requests_per_s_spread": result.requests_per_s_spread,
        "p50_ms": result.latency_ms.p50,
        "p95_ms": result.latency_ms.p95,
        "p95_ms_spread": result.p95_ms_spread,
        "p99_ms": result.latency_ms.p99,
        "error_rate": result.error_rate,
        "requests": result.requests,
        "windows": len(result.windows),
        "peak_rss_mib": result.peak_rss_mib,
        "peak_cpu_percent": result.peak_cpu_percent,
        "mean_cpu_percent": result.mean_cpu_percent,
        "stray_processes": strays,
        "remeasured": int(remeasured),
    }
    if result.calibration is not None:
        figures["calibration_requests_per_s"] = result.calibration.requests_per_s
        figures["calibration_p95_ms"] = result.calibration.p95_ms
    return figures


def _strays(result: LoadProbeResult) -> int:
    count = 0
    for pid in result.service_pids:
        with contextlib.suppress(psutil.Error):
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                count += 1
    return count


def _head(result: LoadProbeResult) -> str:
    """``1234 req/s (±56), p95 12.3 ms (±1.2)``: medians and spreads over the windows."""
    return (
        f"{result.requests_per_s:g} req/s (±{result.requests_per_s_spread / 2:g}), "
        f"p95 {result.latency_ms.p95:g} ms (±{result.p95_ms_spread / 2:g})"
    )


def _measured(result: LoadProbeResult) -> Verdict:
    """The implement round's figures: the optimize baseline; only errors can fail it."""
    calibration = (
        f"; this machine's trivial endpoint: {result.calibration.requests_per_s:g} req/s"
        if result.calibration
        else ""
    )
    summary = (
        f"{_head(result)} over {len(result.windows)} windows (baseline for optimize), "
        f"error rate {result.error_rate:g}{calibration}"
    )
    rule = f"measure only; error rate <= {MAX_ERROR_RATE:g}"
    return Verdict(result.error_rate <= MAX_ERROR_RATE, summary, rule, [])


def _against_targets(check: CheckConfig, ctx: GateContext, result: LoadProbeResult) -> Verdict:
    targets = LoadThresholds(
        max_p95_ms=float(ctx.limit(check, "p95_ms_max")),
        min_requests_per_s=float(ctx.limit(check, "rps_min")),
        max_rss_mib=float(ctx.limit(check, "rss_mb_max")),
        max_cpu_percent=min(float(ctx.limit(check, "cpu_pct_max")), 100.0),
        max_error_rate=float(ctx.limit(check, "error_rate_max") or MAX_ERROR_RATE),
    )
    figures = check_load_thresholds(result, targets)
    missed = [f for f in figures if not f.passed]
    rule = ", ".join(f"{f.figure} {f.comparison} {f.threshold:g}" for f in figures)
    head = f"{_head(result)}, RSS {result.peak_rss_mib:g} MiB, CPU {result.peak_cpu_percent:g} %"
    details = [f.describe() for f in figures]
    cal = result.calibration
    beyond: dict[str, str] = {}
    if cal is not None:
        for f in missed:
            if f.figure == "requests_per_s" and cal.requests_per_s < f.threshold:
                beyond[f.figure] = (
                    f"throughput target >= {f.threshold:g} req/s is beyond this machine: a "
                    f"trivial endpoint on it reaches {cal.requests_per_s:g} req/s under the same "
                    f"probe (the service: {result.requests_per_s:g} req/s)"
                )
            if f.figure == "p95_ms" and cal.p95_ms >= f.threshold:
                beyond[f.figure] = (
                    f"p95 target < {f.threshold:g} ms is beyond this machine: a trivial "
                    f"endpoint on it answers in p95 {cal.p95_ms:g} ms under the same probe "
                    f"(the service: {result.latency_ms.p95:g} ms)"
                )
    extra: dict[str, GateFigure] = {}
    if cal is not None:
        extra["calibration_requests_per_s"] = cal.requests_per_s
        extra["calibration_p95_ms"] = cal.p95_ms
    if missed and all(f.figure in beyond for f in missed):
        # Every miss is one this machine cannot do better on: nothing for an agent to fix.
        return Verdict(False, "; ".join(beyond.values()), rule, details, "environment", extra)
    notes = [f.describe() for f in missed if f.figure not in beyond] + list(beyond.values())
    summary = f"{head}: " + ("; ".join(notes) if missed else "all targets met")
    return Verdict(not missed, summary, rule, details, extra=extra)


def _baseline_figures(check: CheckConfig, baseline: Mapping[str, Any]) -> Mapping[str, Any]:
    """The check's own figures when the baseline is ``GateResult.figures()``, else as given."""
    nested = baseline.get(check.name)
    return nested if isinstance(nested, Mapping) else baseline


def _against_baseline(check: CheckConfig, ctx: GateContext, result: LoadProbeResult) -> Verdict:
    tolerance = float(ctx.limit(check, "regression_pct") or DEFAULT_REGRESSION_PCT)
    max_errors = float(ctx.limit(check, "error_rate_max") or MAX_ERROR_RATE)
    rule = (
        f"p95 <= baseline + max({tolerance:g} %, spread) + {P95_SLACK_MS:g} ms, req/s >= "
        f"baseline - max({tolerance:g} %, spread); baseline scaled by how much slower the "
        "machine is now"
    )
    head = _head(result)
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
        return Verdict(not problems, summary, rule, problems)
    factor, latency_factor = _machine_factors(base, result)
    # Allowed change, relative: the tolerance, or the noise both measurements showed (each
    # one's half range over its median), whichever is larger, never more than MAX_ALLOWED.
    p95_noise = _relative_half_range(result.p95_ms_spread, result.latency_ms.p95) + (
        _relative_half_range(_float(base.get("p95_ms_spread")), base_p95)
    )
    rps_noise = _relative_half_range(result.requests_per_s_spread, result.requests_per_s) + (
        _relative_half_range(_float(base.get("requests_per_s_spread")), base_rps)
    )
    p95_allowed = min(max(tolerance / 100, p95_noise), MAX_ALLOWED_CHANGE)
    rps_allowed = min(max(tolerance / 100, rps_noise), MAX_ALLOWED_CHANGE)
    p95_limit = base_p95 * latency_factor * (1 + p95_allowed) + P95_SLACK_MS
    rps_limit = base_rps / factor * (1 - rps_allowed)
    scaled = (
        f" (baseline scaled x{factor:.2f}, p95 x{latency_factor:.2f}: this machine is slower now)"
        if latency_factor > 1
        else ""
    )
    if result.latency_ms.p95 > p95_limit:
        problems.append(
            f"p95 {result.latency_ms.p95:g} ms regressed from {base_p95:g} ms "
            f"(limit {p95_limit:.1f} ms{scaled})"
        )
    if result.requests_per_s < rps_limit:
        problems.append(
            f"throughput {result.requests_per_s:g} req/s regressed from {base_rps:g} "
            f"(limit {max(rps_limit, 0):.0f}{scaled})"
        )
    verdict = "; ".join(problems) if problems else f"no regression vs {base_rps:g} req/s{scaled}"
    extra: dict[str, GateFigure] = {
        "machine_factor": round(factor, 3),
        "latency_factor": round(latency_factor, 3),
        "p95_limit_ms": round(p95_limit, 2),
        "rps_limit": round(max(rps_limit, 0.0), 1),
        "p95_allowed_pct": round(100 * p95_allowed, 1),
        "rps_allowed_pct": round(100 * rps_allowed, 1),
    }
    return Verdict(not problems, f"{head}: {verdict}", rule, problems, extra=extra)


def _relative_half_range(spread: float | None, median: float) -> float:
    """Half the windows' range as a share of their median (0 without a spread)."""
    return (spread or 0.0) / 2 / median if median > 0 else 0.0


def _machine_factors(base: Mapping[str, Any], result: LoadProbeResult) -> tuple[float, float]:
    """How much slower the trivial endpoint is now than at the baseline: for throughput (its
    req/s ratio) and for latency (also its p95 ratio: contention delays the tail more than it
    cuts throughput). 1 each when it is not slower or either probe did not calibrate."""
    cal = result.calibration
    then_rps = _float(base.get("calibration_requests_per_s"))
    if cal is None or not then_rps or cal.requests_per_s <= 0:
        return 1.0, 1.0
    throughput = _clamp(then_rps / cal.requests_per_s)
    then_p95 = _float(base.get("calibration_p95_ms"))
    latency = _clamp(cal.p95_ms / then_p95) if then_p95 else 1.0
    return throughput, max(throughput, latency)


def _clamp(factor: float) -> float:
    """A calmer machine never tightens a limit; a much busier one loosens it only so far."""
    return min(max(factor, 1.0), MACHINE_FACTOR_MAX)


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return float(value)
    except ValueError:
        return None


_EXCEPTION = re.compile(r"^(\w+(?:Error|Exception)\b.*)$", re.MULTILINE)


def _last_exception(text: str) -> str | None:
    """The last ``SomethingError: …`` line a crashed service printed."""
    found = _EXCEPTION.findall(text)
    return found[-1].strip() if found else None


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-64 * 1024 :]
    except OSError:
        return ""
