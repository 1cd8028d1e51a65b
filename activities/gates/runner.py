"""Run one phase's gate in a checkout: the configured checks, their reports, one verdict.

Each check is an argv command (never a shell string) run in the work directory with a
scrubbed environment, its own process group and a bounded timeout, followed by a parser
for the report it wrote (JUnit, Cobertura, SARIF, OpenAPI, the load probe's figures, …).
Reports and tool logs go to ``.implflow/reports/<phase>/<round>/`` in the work directory,
so they can be committed to the task branch; the verdict carries only figures and one-line
summaries. A missing tool, a timeout, or a malformed or missing report is a failed check
with a message that says what to do, never an exception out of the gate.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import importlib.util
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from activities.gates.config import CheckConfig, GateConfig, load_gate_config
from activities.gates.gate_models import (
    MAX_FAILURE_SUMMARY_CHARS,
    MAX_SUMMARY_CHARS,
    CheckResult,
    Figure,
    GateVerdict,
)
from activities.gates.loadprobe import (
    LoadProbeError,
    LoadProbeResult,
    LoadProbeSpec,
    LoadThresholds,
    LoadToolUnavailableError,
    check_load_thresholds,
    run_load_probe,
)
from activities.gates.loadprobe_models import DEFAULT_ENV_ALLOWLIST
from activities.gates.reports import (
    ReportError,
    parse_cobertura,
    parse_junit,
    parse_openapi,
    parse_sarif,
)
from activities.process import run_process, scrubbed_env
from implflow.models import Thresholds

__all__ = [
    "DEFAULT_DOCSTRING_MIN_PCT",
    "DEFAULT_REGRESSION_PCT",
    "REPORTS_DIR",
    "Heartbeat",
    "count_docstrings",
    "open_questions",
    "run_gate",
]

REPORTS_DIR = ".implflow/reports"
DEFAULT_DOCSTRING_MIN_PCT = 80.0
DEFAULT_REGRESSION_PCT = 30.0
P95_SLACK_MS = 2.0
"""A p95 rise smaller than this is noise, not a regression (sub-millisecond baselines)."""
MAX_ERROR_RATE = 0.01
GIT_TIMEOUT_S = 60.0
MAX_SCANNED_FILES = 5000

Heartbeat = Callable[[dict[str, object]], None]

_PHASE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")


async def run_gate(
    phase: str,
    workdir: Path,
    round: int,
    thresholds: Thresholds,
    *,
    base_ref: str | None = None,
    baseline: Mapping[str, Any] | None = None,
    heartbeat: Heartbeat | None = None,
) -> GateVerdict:
    """Run ``phase``'s checks in ``workdir`` (an existing checkout) and judge their reports.

    ``base_ref`` is the commit the phase started from (the document gate's README check
    diffs against it). ``baseline`` holds earlier load figures for the optimize gate —
    ``GateVerdict.figures()`` of an earlier gate, or one check's figures. ``heartbeat``
    (e.g. ``activity.heartbeat``) is called while checks run.

    Raises ``GateConfigError`` for an invalid ``.implflow/gates.toml`` and ``ValueError``
    for a bad phase name or round; every problem of a check is a failed check instead.
    """
    if not _PHASE.match(phase):
        raise ValueError(f"phase {phase!r}: use letters, digits, '_' or '-'")
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

    results: list[CheckResult] = []
    with tempfile.TemporaryDirectory(prefix="implflow-gate-") as tmp:
        ctx = _Context(
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
                result = _fail(check, f"gate error: {type(exc).__name__}: {exc}")
            results.append(result)

    verdict = GateVerdict(
        phase=phase,
        round=round,
        passed=all(r.passed for r in results),
        checks=results,
        failure_summary=_failure_summary(results),
        report_dir=report_rel,
        config_source=config.source,
    )
    (report_dir / "verdict.json").write_text(verdict.model_dump_json(indent=2), encoding="utf-8")
    return verdict


# --------------------------------------------------------------------------- context


@dataclass
class _Context:
    workdir: Path
    report_dir: Path
    tmp: Path
    cache_dir: Path
    thresholds: Thresholds
    base_ref: str | None
    baseline: Mapping[str, Any] | None
    config: GateConfig
    beat: Heartbeat

    def expand(self, text: str, report: Path | None = None) -> str:
        """Replace the placeholders this gate knows; ``{port}`` is left to the probe."""
        values = {
            "{python}": sys.executable,
            "{workdir}": str(self.workdir),
            "{report_dir}": str(self.report_dir),
            "{tmp}": str(self.tmp),
            "{cache_dir}": str(self.cache_dir),
        }
        if report is not None:
            values["{report}"] = str(report)
        for key, value in values.items():
            text = text.replace(key, value)
        return text

    def limit(self, check: CheckConfig, name: str) -> Any:
        """A run's explicitly set threshold, else the check's override, else ``None``."""
        if name in self.thresholds.model_fields_set:
            return getattr(self.thresholds, name)
        override = getattr(check.thresholds, name)
        if override is not None:
            return override
        return getattr(self.thresholds, name, None)

    def rel(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.workdir))
        except ValueError:
            return str(path)


def _no_heartbeat(_info: dict[str, object]) -> None:
    return None


# --------------------------------------------------------------------------- one check


async def _run_check(check: CheckConfig, ctx: _Context) -> CheckResult:
    report = _report_path(check, ctx)
    if isinstance(report, CheckResult):
        return report
    if check.format == "loadprobe":
        return await _load_probe(check, ctx)
    if check.format == "changed":
        return await _changed(check, ctx)
    if check.format == "docstrings":
        return _docstrings(check, ctx)

    if check.argv is None:
        if report is None:  # unreachable: the config requires argv or a report
            return _fail(check, f"format {check.format!r} needs argv or a report")
        return _judge_report(check, ctx, report)
    if report is not None:
        report.unlink(missing_ok=True)  # only what the tool writes now counts
    run = await _execute(check, check.argv, ctx, report)
    if isinstance(run, CheckResult):
        return run
    if check.format == "exit-code" or report is None:
        return _exit_code(check, run)
    if not report.exists():
        return _fail(
            check,
            f"{Path(check.argv[0]).name} wrote no report {ctx.rel(report)} "
            f"(exit code {run.returncode}): {_last_line(run.tail)}",
            report=ctx.rel(report),
            log=run.log,
        )
    return _judge_report(check, ctx, report)


def _judge_report(check: CheckConfig, ctx: _Context, report: Path) -> CheckResult:
    try:
        return _judge(check, ctx, report)
    except ReportError as err:
        return _fail(check, f"unusable report: {err}", report=ctx.rel(report))


def _report_path(check: CheckConfig, ctx: _Context) -> Path | CheckResult | None:
    """The check's report path inside the work directory (a failed check when outside)."""
    if check.report is None:
        return None
    path = (ctx.workdir / ctx.expand(check.report)).resolve()
    if not path.is_relative_to(ctx.workdir):
        return _fail(check, f"report path {check.report!r} is outside the work directory")
    return path


@dataclass
class _Run:
    returncode: int
    tail: str
    log: str
    duration_s: float


async def _execute(
    check: CheckConfig, argv_template: list[str], ctx: _Context, report: Path | None
) -> _Run | CheckResult:
    argv = [ctx.expand(arg, report) for arg in argv_template]
    missing = _missing_tool(check, argv, ctx.workdir)
    if missing is not None:
        return _fail(check, missing)
    if not Path(argv[0]).is_absolute() and "/" in argv[0]:
        argv[0] = str(ctx.workdir / argv[0])  # node_modules/.bin/eslint and the like
    env = scrubbed_env(
        DEFAULT_ENV_ALLOWLIST,
        {
            # Bytecode goes to the scratch dir, not into the checkout that gets committed.
            "PYTHONPYCACHEPREFIX": str(ctx.tmp / "pycache"),
            **{key: ctx.expand(value, report) for key, value in check.env.items()},
        },
    )
    log_path = ctx.report_dir / f"{check.name}.log"
    started = time.monotonic()

    def beat(info: dict[str, object]) -> None:
        ctx.beat({"check": check.name, **info})

    try:
        result = await run_process(
            argv,
            cwd=ctx.workdir,
            env=env,
            log_path=log_path,
            timeout_s=check.timeout_s,
            heartbeat=beat,
            heartbeat_every_s=5.0,
        )
    except FileNotFoundError as err:
        hint = f" (install: {check.install})" if check.install else ""
        return _fail(check, f"missing tool: {argv[0]!r} cannot be run: {err.strerror}{hint}")
    except PermissionError as err:
        return _fail(check, f"{argv[0]!r} cannot be run: {err.strerror}")
    except TimeoutError:
        return _fail(
            check,
            f"timed out after {check.timeout_s:g}s (log: {ctx.rel(log_path)})",
            figures={"timeout_s": check.timeout_s},
            log=ctx.rel(log_path),
        )
    return _Run(
        returncode=result.returncode,
        tail=result.tail,
        log=ctx.rel(log_path),
        duration_s=round(time.monotonic() - started, 2),
    )


def _missing_tool(check: CheckConfig, argv: list[str], workdir: Path) -> str | None:
    """What to install when the check's program or a required Python module is absent."""
    hint = f"; install: {check.install}" if check.install else ""
    program = argv[0]
    if "/" in program:
        path = Path(program) if Path(program).is_absolute() else workdir / program
        if not path.is_file():
            return f"missing tool: {program} not found{hint}"
    elif shutil.which(program) is None:
        return f"missing tool: {program!r} not found on PATH{hint}"
    modules = list(check.requires)
    if program == sys.executable and len(argv) > 2 and argv[1] == "-m":
        modules.insert(0, argv[2])
    for module in modules:
        if importlib.util.find_spec(module) is None:
            return (
                f"missing tool: Python module {module!r} is not installed in the worker's "
                f"environment ({sys.executable}){hint}"
            )
    return None


# --------------------------------------------------------------------------- judging


def _judge(check: CheckConfig, ctx: _Context, report: Path) -> CheckResult:
    rel = ctx.rel(report)
    if check.format == "junit":
        return _junit(check, ctx, report, rel)
    if check.format == "cobertura":
        coverage = parse_cobertura(report)
        minimum = float(ctx.limit(check, "coverage_min_pct"))
        passed = coverage.line_rate_pct >= minimum
        figures: dict[str, Figure] = {
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
        return _result(check, passed, summary, figures, f"line_rate_pct >= {minimum:g}", rel)
    if check.format == "sarif":
        return _sarif(check, ctx, report, rel)
    if check.format == "openapi":
        if not report.exists():
            return _fail(check, f"no API contract: {rel} does not exist", report=rel)
        contract = parse_openapi(report)
        figures = {"valid": str(contract.valid), "paths": contract.paths}
        if contract.openapi_version:
            figures["openapi_version"] = contract.openapi_version
        summary = (
            f"{rel}: valid OpenAPI {contract.openapi_version} with {contract.paths} paths"
            if contract.valid
            else f"{rel}: invalid contract: {contract.errors[0] if contract.errors else '?'}"
        )
        return _result(
            check, contract.valid, summary, figures, "valid OpenAPI 3.x", rel, contract.errors
        )
    if check.format == "exists":
        size = report.stat().st_size if report.is_file() else -1
        passed = size > 0
        summary = f"{rel} present ({size} bytes)" if passed else f"{rel} is missing or empty"
        return _result(check, passed, summary, {"bytes": max(size, 0)}, "exists, not empty", rel)
    if check.format == "review":
        return _review(check, report, rel)
    raise ValueError(f"unknown format {check.format!r}")  # unreachable: the config validates


def _junit(check: CheckConfig, ctx: _Context, report: Path, rel: str) -> CheckResult:
    tests = parse_junit(report)
    max_failures = _int(ctx.limit(check, "max_failures"), 0)
    min_tests = _int(ctx.limit(check, "min_tests"), 1)
    bad = tests.failures + tests.errors
    passed = bad <= max_failures and tests.total >= min_tests
    figures: dict[str, Figure] = {
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
    return _result(check, passed, summary, figures, rule, rel, tests.failed_cases)


def _sarif(check: CheckConfig, ctx: _Context, report: Path, rel: str) -> CheckResult:
    findings = parse_sarif(report)
    max_findings = ctx.limit(check, "max_findings")
    max_high = ctx.limit(check, "max_high")
    if max_high is None and max_findings is None:
        max_high = 0
    problems: list[str] = []
    rules: list[str] = []
    if max_high is not None:
        rules.append(f"high <= {max_high}")
        if findings.high > max_high:
            problems.append(f"{findings.high} high-severity findings (max {max_high})")
    if max_findings is not None:
        rules.append(f"findings <= {max_findings}")
        if findings.total > max_findings:
            problems.append(f"{findings.total} findings (max {max_findings})")
    figures: dict[str, Figure] = {"total": findings.total, **findings.by_severity}
    if problems:
        summary = f"{findings.tool}: " + ", ".join(problems)
        if findings.top:
            summary += f"; first: {findings.top[0]}"
    else:
        summary = f"{findings.tool}: {findings.total} findings, {findings.high} high"
    return _result(check, not problems, summary, figures, ", ".join(rules), rel, findings.top)


def _exit_code(check: CheckConfig, run: _Run) -> CheckResult:
    passed = run.returncode in check.ok_exit_codes
    summary = f"exit code {run.returncode}"
    if not passed and run.tail:
        summary += f": {_last_line(run.tail)}"
    codes = " or ".join(str(code) for code in check.ok_exit_codes)
    details = run.tail.splitlines()[-5:] if not passed else []
    return _result(
        check,
        passed,
        summary,
        {"exit_code": run.returncode, "duration_s": run.duration_s},
        f"exit code {codes}",
        run.log,
        details,
    )


# --------------------------------------------------------------------------- review file

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_ITEM = re.compile(r"^(\s*)(?:[-*+]|\d+[.)])\s+(.*)$")
_BLOCKING = re.compile(r"^\[blocking\]\s*", re.IGNORECASE)
_ANSWER = re.compile(r"\banswer\s*:\s*\S", re.IGNORECASE)


def open_questions(text: str) -> list[tuple[str, bool, bool]]:
    """``(question, blocking, answered)`` for each item under an "Open questions" heading.

    An item (``-``, ``*``, ``+`` or ``1.``) belongs to the section until the next heading;
    indented lines and sub-items belong to the item above them, and an item counts as
    answered when its text holds ``Answer:`` followed by something.
    """
    items: list[list[str]] = []
    in_section = False
    top_indent: int | None = None
    for line in text.splitlines():
        heading = _HEADING.match(line)
        if heading:
            in_section = heading.group(2).strip().lower().rstrip(":") == "open questions"
            top_indent = None
            continue
        if not in_section or not line.strip():
            continue
        item = _ITEM.match(line)
        indent = len(line) - len(line.lstrip())
        if item and (top_indent is None or indent <= top_indent):
            top_indent = indent if top_indent is None else top_indent
            items.append([item.group(2).strip()])
        elif items:
            items[-1].append(line.strip())
    result = []
    for lines in items:
        question = lines[0]
        blocking = bool(_BLOCKING.match(question))
        answered = any(_ANSWER.search(part) for part in lines)
        result.append((_BLOCKING.sub("", question), blocking, answered))
    return result


def _review(check: CheckConfig, report: Path, rel: str) -> CheckResult:
    if not report.is_file():
        return _fail(check, f"no review: {rel} does not exist", report=rel)
    text = report.read_text(encoding="utf-8", errors="replace")
    if not any(_HEADING.match(line) for line in text.splitlines()):
        return _fail(check, f"{rel} has no markdown headings: not a structured review", report=rel)
    questions = open_questions(text)
    unanswered = [q for q, blocking, answered in questions if blocking and not answered]
    figures: dict[str, Figure] = {
        "open_questions": len(questions),
        "blocking": sum(1 for _, blocking, _ in questions if blocking),
        "unanswered_blocking": len(unanswered),
    }
    if unanswered:
        summary = f"{len(unanswered)} unanswered blocking question(s); first: {unanswered[0]}"
    else:
        summary = f"review present, {len(questions)} open question(s), none blocking unanswered"
    return _result(
        check, not unanswered, summary, figures, "unanswered_blocking == 0", rel, unanswered
    )


# --------------------------------------------------------------------------- docstrings


def count_docstrings(paths: list[Path]) -> tuple[int, int, list[str]]:
    """(documented, total, undocumented names) over modules, public classes and functions.

    A small ``ast`` walk rather than ``interrogate``: interrogate prints a table and a
    badge but no machine-readable report, so the gate would scrape text; this counter
    never imports or runs the code and gives the exact figures. Empty modules, names
    starting with ``_`` and functions nested in functions are not counted.
    """
    documented = total = 0
    missing: list[str] = []
    files: list[Path] = []
    for path in paths:
        if path.is_file() and path.suffix == ".py":
            files.append(path)
        elif path.is_dir():
            files.extend(p for p in sorted(path.rglob("*.py")) if "__pycache__" not in p.parts)
    for file in files[:MAX_SCANNED_FILES]:
        source = file.read_text(encoding="utf-8", errors="replace")
        if not source.strip():
            continue
        try:
            tree = ast.parse(source, filename=str(file))
        except SyntaxError as err:
            missing.append(f"{file.name}: syntax error line {err.lineno}")
            total += 1
            continue
        nodes: list[tuple[str, ast.AST]] = [(file.name, tree)]
        for node in ast.iter_child_nodes(tree):
            nodes.extend(_public_defs(node, file.stem))
        for name, node in nodes:
            total += 1
            if ast.get_docstring(node) is not None:  # type: ignore[arg-type]
                documented += 1
            else:
                missing.append(name)
    return documented, total, missing


def _public_defs(node: ast.AST, prefix: str) -> list[tuple[str, ast.AST]]:
    if not isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
        return []
    if node.name.startswith("_"):
        return []
    name = f"{prefix}.{node.name}"
    found: list[tuple[str, ast.AST]] = [(name, node)]
    if isinstance(node, ast.ClassDef):
        for child in node.body:
            found.extend(_public_defs(child, name))
    return found


def _docstrings(check: CheckConfig, ctx: _Context) -> CheckResult:
    paths = [(ctx.workdir / ctx.expand(p)).resolve() for p in check.paths]
    paths = [p for p in paths if p.is_relative_to(ctx.workdir)]
    documented, total, missing = count_docstrings(paths)
    minimum = float(ctx.limit(check, "docstring_min_pct") or DEFAULT_DOCSTRING_MIN_PCT)
    pct = round(100.0 * documented / total, 2) if total else 100.0
    passed = pct >= minimum
    summary = (
        f"docstring coverage {pct:g} % ({documented}/{total}), "
        f"{'meets' if passed else 'below'} the {minimum:g} % threshold"
    )
    if not passed and missing:
        summary += f"; e.g. {', '.join(missing[:3])}"
    figures: dict[str, Figure] = {"docstring_pct": pct, "documented": documented, "total": total}
    return _result(check, passed, summary, figures, f"docstring_pct >= {minimum:g}", None, missing)


# --------------------------------------------------------------------------- changed files


async def _changed(check: CheckConfig, ctx: _Context) -> CheckResult:
    wanted = [ctx.expand(p) for p in check.paths]
    rule = f"one of {', '.join(wanted)} changed against base_ref"
    if ctx.base_ref is None:
        return CheckResult(
            name=check.name,
            passed=True,
            skipped=True,
            threshold=rule,
            summary="skipped: no base_ref given to diff against",
        )
    if ctx.base_ref.startswith("-") or not ctx.base_ref.strip():
        return _fail(check, f"base_ref {ctx.base_ref!r} is not a git revision")
    code, diff = await _git(ctx.workdir, "diff", "--name-only", ctx.base_ref, "--")
    if code != 0:
        return _fail(check, f"git diff against {ctx.base_ref!r} failed: {_last_line(diff)}")
    code2, untracked = await _git(ctx.workdir, "ls-files", "--others", "--exclude-standard")
    changed = set(diff.splitlines()) | (set(untracked.splitlines()) if code2 == 0 else set())
    changed = {path for path in changed if not path.startswith(REPORTS_DIR + "/")}
    hits = sorted(p for p in wanted if p in changed)
    figures: dict[str, Figure] = {"changed_files": len(changed), "matched": ", ".join(hits)}
    summary = (
        f"changed since {ctx.base_ref[:12]}: {', '.join(hits)}"
        if hits
        else f"none of {', '.join(wanted)} changed since {ctx.base_ref[:12]}"
    )
    return _result(check, bool(hits), summary, figures, rule, None)


async def _git(workdir: Path, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "git",
        *args,
        cwd=str(workdir),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), GIT_TIMEOUT_S)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode("utf-8", "replace")


# --------------------------------------------------------------------------- load probe


async def _load_probe(check: CheckConfig, ctx: _Context) -> CheckResult:
    service = ctx.config.service
    if (service is None or service.command is None) and check.against == "measure":
        return CheckResult(
            name=check.name,
            passed=True,
            skipped=True,
            threshold="measure only",
            summary="skipped: no service to measure (no baseline for the optimize gate)",
        )
    if service is None or service.command is None:
        return _fail(
            check,
            "no service to probe: add [service] command = [...] (argv with {port}) to "
            ".implflow/gates.toml",
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
        return _fail(check, f"[service] is not a valid probe: {' '.join(str(err).split())}")
    log_dir = ctx.report_dir / check.name
    report = ctx.report_dir / f"{check.name}.json"
    rel = ctx.rel(report)

    def beat(info: dict[str, object]) -> None:
        ctx.beat({"check": check.name, **info})

    try:
        result = await asyncio.wait_for(
            run_load_probe(spec, ctx.workdir, beat, log_dir=log_dir), check.timeout_s
        )
    except LoadToolUnavailableError as err:
        return _fail(check, f"missing tool: {err}")
    except LoadProbeError as err:
        return _fail(check, f"load probe failed: {err}", report=ctx.rel(log_dir))
    except TimeoutError:
        return _fail(check, f"load probe ran longer than {check.timeout_s:g}s")
    report.write_text(result.model_dump_json(indent=2), encoding="utf-8")
    strays = _strays(result)
    figures: dict[str, Figure] = {
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
    if check.against == "measure":  # the implement round's figures: the optimize baseline
        passed = result.error_rate <= MAX_ERROR_RATE
        summary = (
            f"{result.requests_per_s:g} req/s, p95 {result.latency_ms.p95:g} ms "
            f"(baseline for optimize), error rate {result.error_rate:g}"
        )
        rule = f"measure only; error rate <= {MAX_ERROR_RATE:g}"
        details: list[str] = []
    elif check.against == "baseline":
        passed, summary, rule, details = _against_baseline(check, ctx, result)
    else:
        passed, summary, rule, details = _against_targets(check, ctx, result)
    if strays:
        passed = False
        summary = f"{strays} service process(es) still running after the probe; " + summary
    return _result(check, passed, summary, figures, rule, rel, details)


def _strays(result: LoadProbeResult) -> int:
    count = 0
    for pid in result.service_pids:
        with contextlib.suppress(psutil.Error):
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                count += 1
    return count


def _against_targets(
    check: CheckConfig, ctx: _Context, result: LoadProbeResult
) -> tuple[bool, str, str, list[str]]:
    targets = LoadThresholds(
        max_p95_ms=float(ctx.limit(check, "p95_ms_max")),
        min_requests_per_s=float(ctx.limit(check, "rps_min")),
        max_rss_mib=float(ctx.limit(check, "rss_mb_max")),
        max_cpu_percent=min(float(ctx.limit(check, "cpu_pct_max")), 100.0),
        max_error_rate=float(ctx.limit(check, "error_rate_max") or MAX_ERROR_RATE),
    )
    figures = check_load_thresholds(result, targets)
    failed = [f.describe() for f in figures if not f.passed]
    rule = ", ".join(f"{f.figure} {f.comparison} {f.threshold:g}" for f in figures)
    head = (
        f"{result.requests_per_s:g} req/s, p95 {result.latency_ms.p95:g} ms, "
        f"RSS {result.peak_rss_mib:g} MiB, CPU {result.peak_cpu_percent:g} %"
    )
    summary = f"{head}: " + ("; ".join(failed) if failed else "all targets met")
    return not failed, summary, rule, [f.describe() for f in figures]


def _baseline_figures(check: CheckConfig, baseline: Mapping[str, Any]) -> Mapping[str, Any]:
    nested = baseline.get(check.name)
    return nested if isinstance(nested, Mapping) else baseline


def _against_baseline(
    check: CheckConfig, ctx: _Context, result: LoadProbeResult
) -> tuple[bool, str, str, list[str]]:
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


# --------------------------------------------------------------------------- helpers


def _result(
    check: CheckConfig,
    passed: bool,
    summary: str,
    figures: dict[str, Figure],
    threshold: str,
    report: str | None,
    details: list[str] | None = None,
) -> CheckResult:
    return CheckResult(
        name=check.name,
        passed=passed,
        figures=figures,
        threshold=threshold,
        summary=_cut(summary, MAX_SUMMARY_CHARS),
        details=[_cut(d, 300) for d in (details or [])[:10]] if not passed else [],
        report=report,
    )


def _fail(
    check: CheckConfig,
    summary: str,
    *,
    figures: dict[str, Figure] | None = None,
    report: str | None = None,
    log: str | None = None,
) -> CheckResult:
    details = [f"log: {log}"] if log else []
    return CheckResult(
        name=check.name,
        passed=False,
        figures=figures or {},
        threshold="",
        summary=_cut(summary, MAX_SUMMARY_CHARS),
        details=details,
        report=report,
    )


def _failure_summary(results: list[CheckResult]) -> str:
    """Feedback for a repair round: each failed check, then its first examples."""
    lines: list[str] = []
    for result in results:
        if result.passed:
            continue
        lines.append(f"- {result.name}: {result.summary}")
        lines.extend(f"    {detail}" for detail in result.details[:5])
        if result.report:
            lines.append(f"    report: {result.report}")
    return _cut("\n".join(lines), MAX_FAILURE_SUMMARY_CHARS, one_line=False)


def _cut(text: str, limit: int, *, one_line: bool = True) -> str:
    if one_line:
        text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def _int(value: Any, default: int) -> int:
    return default if value is None else int(value)


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return float(value)
    except ValueError:
        return None
