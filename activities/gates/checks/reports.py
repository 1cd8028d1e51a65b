"""Judge the reports real tools wrote: tests (JUnit), coverage (Cobertura), lint and
security findings (SARIF), the API contract (OpenAPI), and a file that must exist.

The parsing is ``activities/gates/parsers.py``; here each report's figures are held to
the check's thresholds. A report the parser refuses raises ``ReportError``, which the
runner turns into a failed check ("unusable report").
"""

from __future__ import annotations

import asyncio
from typing import Any

from activities.gates.checks.changed import changed_files
from activities.gates.context import Evidence, GateContext
from activities.gates.parsers import parse_cobertura, parse_junit, parse_openapi, parse_sarif
from activities.gates.results import failed, judged
from activities.gates.schema import CheckConfig
from implflow.models import GateCheck, GateFigure

__all__ = [
    "judge_cobertura",
    "judge_exists",
    "judge_junit",
    "judge_openapi",
    "judge_sarif",
    "judge_sarif_scoped",
]


def judge_junit(check: CheckConfig, ctx: GateContext, evidence: Evidence) -> GateCheck:
    """No more failed or errored tests than ``max_failures`` (0), at least ``min_tests`` (1)."""
    report = evidence.report_file()
    tests = parse_junit(report)
    max_failures = _int(ctx.limit(check, "max_failures"), 0)
    min_tests = _int(ctx.limit(check, "min_tests"), 1)
    bad = tests.failures + tests.errors
    passed = bad <= max_failures and tests.total >= min_tests
    figures: dict[str, GateFigure] = {
        "total": tests.total,
        "passed": tests.passed,
        "failures": tests.failures,
        "errors": tests.errors,
        "skipped": tests.skipped,
        "duration_s": tests.duration_s,
    }
    if tests.total < min_tests:
        summary = f"{tests.total} tests ran, at least {min_tests} required"
    elif bad:
        summary = f"{bad} of {tests.total} failed or errored"
        if tests.failed_cases:
            summary += f"; first: {tests.failed_cases[0]}"
    else:
        summary = f"{tests.passed} of {tests.total} passed ({tests.skipped} skipped)"
    rule = f"failures+errors <= {max_failures}, tests >= {min_tests}"
    return judged(check, passed, summary, figures, rule, ctx.rel(report), tests.failed_cases)


def judge_cobertura(check: CheckConfig, ctx: GateContext, evidence: Evidence) -> GateCheck:
    """Line coverage at least ``coverage_min_pct``."""
    report = evidence.report_file()
    coverage = parse_cobertura(report)
    minimum = float(ctx.limit(check, "coverage_min_pct"))
    passed = coverage.line_rate_pct >= minimum
    figures: dict[str, GateFigure] = {
        "line_rate_pct": coverage.line_rate_pct,
        "lines_valid": coverage.lines_valid,
        "lines_covered": coverage.lines_covered,
    }
    if coverage.branch_rate_pct is not None:
        figures["branch_rate_pct"] = coverage.branch_rate_pct
    summary = (
        f"line coverage {coverage.line_rate_pct:g} % "
        f"({coverage.lines_covered}/{coverage.lines_valid} lines), "
        f"{'meets' if passed else 'below'} the {minimum:g} % threshold"
    )
    rule = f"line_rate_pct >= {minimum:g}"
    return judged(check, passed, summary, figures, rule, ctx.rel(report))


async def judge_sarif_scoped(check: CheckConfig, ctx: GateContext, evidence: Evidence) -> GateCheck:
    """``judge_sarif`` over the files the check's ``scope`` names (changed ones, or all)."""
    only = await changed_files(ctx) if check.scope == "changed" else None
    return await asyncio.to_thread(judge_sarif, check, ctx, evidence, only)


def judge_sarif(
    check: CheckConfig, ctx: GateContext, evidence: Evidence, only: set[str] | None = None
) -> GateCheck:
    """At most ``max_high`` security-high findings (0 unless another limit is set), at most
    ``max_errors`` findings the tool rates ``error``, and ``max_findings`` in all.

    Each finding keeps its tool's own rating: bandit's high/medium/low, ruff's and eslint's
    SARIF levels (error/warning/note); a lint error is never reported as a high finding.
    """
    report = evidence.report_file()
    findings = parse_sarif(report, root=ctx.workdir, only=only)
    max_findings = ctx.limit(check, "max_findings")
    max_high = ctx.limit(check, "max_high")
    max_errors = ctx.limit(check, "max_errors")
    if max_high is None and max_findings is None and max_errors is None:
        max_high = 0
    problems: list[str] = []
    rules: list[str] = []
    if max_high is not None:
        rules.append(f"high <= {max_high}")
        if findings.high > max_high:
            problems.append(f"{findings.high} high-severity findings (max {max_high})")
    if max_errors is not None:
        rules.append(f"errors <= {max_errors}")
        if findings.errors > max_errors:
            problems.append(f"{findings.errors} findings at level error (max {max_errors})")
    if max_findings is not None:
        rules.append(f"findings <= {max_findings}")
        if findings.total > max_findings:
            problems.append(f"{findings.total} findings (max {max_findings})")
    figures: dict[str, GateFigure] = {
        "total": findings.total,
        **findings.by_severity,
        **findings.by_level,
    }
    if problems:
        summary = f"{findings.tool}: " + ", ".join(problems)
        if findings.top:
            summary += f"; first: {findings.top[0]}"
    else:
        summary = f"{findings.tool}: {findings.total} findings, {findings.high} high"
    if only is not None:
        summary += f" (in the {len(only)} files changed since {str(ctx.base_ref)[:12]})"
        rules.append("in changed files")
    rule = ", ".join(rules)
    return judged(check, not problems, summary, figures, rule, ctx.rel(report), findings.top)


def judge_openapi(check: CheckConfig, ctx: GateContext, evidence: Evidence) -> GateCheck:
    """The contract is a valid OpenAPI 3.x document."""
    report = evidence.report_file()
    rel = ctx.rel(report)
    if not report.exists():
        return failed(check, f"no API contract: {rel} does not exist", report=rel)
    contract = parse_openapi(report)
    figures: dict[str, GateFigure] = {"valid": str(contract.valid), "paths": contract.paths}
    if contract.openapi_version:
        figures["openapi_version"] = contract.openapi_version
    summary = (
        f"{rel}: valid OpenAPI {contract.openapi_version} with {contract.paths} paths"
        if contract.valid
        else f"{rel}: invalid contract: {contract.errors[0] if contract.errors else '?'}"
    )
    return judged(
        check, contract.valid, summary, figures, "valid OpenAPI 3.x", rel, contract.errors
    )


def judge_exists(check: CheckConfig, ctx: GateContext, evidence: Evidence) -> GateCheck:
    """The report path is a file that is not empty (e.g. the design document)."""
    report = evidence.report_file()
    rel = ctx.rel(report)
    size = report.stat().st_size if report.is_file() else -1
    passed = size > 0
    summary = f"{rel} present ({size} bytes)" if passed else f"{rel} is missing or empty"
    return judged(check, passed, summary, {"bytes": max(size, 0)}, "exists, not empty", rel)


def _int(value: Any, default: int) -> int:
    return default if value is None else int(value)
