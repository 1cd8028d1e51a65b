"""Parse the standard machine reports that real tools write into small report models.

Supported formats:

- JUnit XML (pytest ``--junitxml``, vitest and jest junit reporters): :func:`parse_junit`
- Cobertura XML (``coverage xml``, istanbul/c8 ``cobertura``): :func:`parse_cobertura`
- SARIF 2.1.0 (``ruff --output-format sarif``, ``bandit -f sarif``, CodeQL, …): :func:`parse_sarif`
- OpenAPI 3.x documents, YAML or JSON (``openapi-spec-validator``): :func:`parse_openapi`

Reports are untrusted input (an agent may have written them): XML goes through
``defusedxml``, every file is size-capped, and whatever is malformed, truncated, empty
or of the wrong kind raises :class:`ReportError` with one line naming the file.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import xml.etree.ElementTree as ET  # types and ParseError only; parsing uses defusedxml
from collections.abc import Collection, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import defusedxml
import defusedxml.ElementTree as SafeET
import yaml

from activities.gates.report_models import (
    LEVELS,
    MAX_ITEM_CHARS,
    MAX_LISTED,
    SEVERITIES,
    ContractReport,
    CoverageReport,
    FindingsReport,
    Level,
    Severity,
    TestReport,
)
from implflow.errors import ImplflowError

MAX_REPORT_BYTES = 64 * 1024 * 1024
"""Larger files are refused rather than parsed: no real gate report comes close."""

MAX_DOCUMENT_NODES = 2_000_000
"""An OpenAPI document (aliases expanded) with more values than this is refused."""

__all__ = [
    "MAX_REPORT_BYTES",
    "ReportError",
    "parse_cobertura",
    "parse_junit",
    "parse_openapi",
    "parse_sarif",
]


class ReportError(ImplflowError, ValueError):
    """A report cannot be used: missing, empty, malformed, truncated or of the wrong kind.

    ``str()`` is one line: ``<file>: <what is wrong>``.
    """

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = str(path)
        self.problem = _one_line(problem)
        super().__init__(f"{self.path}: {self.problem}")


# --------------------------------------------------------------------------- helpers


def _one_line(text: str, limit: int = MAX_ITEM_CHARS) -> str:
    """Collapse whitespace (so messages stay one line) and cut to ``limit`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _read(path: Path | str) -> bytes:
    """The file's bytes; refuse missing, unreadable, empty and oversized files."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if not p.is_file():
            raise ReportError(p, "is not a regular file")
        if size > MAX_REPORT_BYTES:
            raise ReportError(p, f"is {size} bytes, over the {MAX_REPORT_BYTES}-byte limit")
        data = p.read_bytes()
    except FileNotFoundError:
        raise ReportError(p, "report file not found") from None
    except OSError as exc:
        raise ReportError(p, f"cannot read report: {exc.strerror or exc}") from None
    if not data.strip():
        raise ReportError(p, "report is empty")
    return data


def _local(tag: str) -> str:
    """Tag name without an XML namespace (``{ns}testsuite`` → ``testsuite``)."""
    return tag.rsplit("}", 1)[-1]


def _xml_root(path: Path | str, expected: Iterable[str], kind: str) -> ET.Element:
    """Parse XML safely and check the root element is one of ``expected``."""
    data = _read(path)
    try:
        root = SafeET.fromstring(data)
    except ET.ParseError as exc:
        raise ReportError(path, f"malformed or truncated {kind} XML ({exc})") from None
    except defusedxml.DefusedXmlException as exc:
        raise ReportError(path, f"refused unsafe {kind} XML ({type(exc).__name__})") from None
    allowed = tuple(expected)
    if _local(root.tag) not in allowed:
        want = " or ".join(f"<{name}>" for name in allowed)
        raise ReportError(
            path, f"not a {kind} report: root element is <{_local(root.tag)}>, expected {want}"
        )
    return root


def _children(element: ET.Element, name: str) -> Iterator[ET.Element]:
    return (child for child in element if _local(child.tag) == name)


def _descendants(element: ET.Element, name: str) -> Iterator[ET.Element]:
    return (node for node in element.iter() if _local(node.tag) == name)


_THOUSANDS = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?")


def _number(path: Path | str, element: ET.Element, attr: str) -> float | None:
    """A finite, non-negative numeric attribute, ``None`` when absent or blank."""
    raw = element.get(attr)
    if raw is None or not raw.strip():
        return None
    text = raw.strip()
    if _THOUSANDS.fullmatch(text):  # some runners write times as "1,234.5"
        text = text.replace(",", "")
    try:
        value = float(text)
    except ValueError:
        raise ReportError(
            path, f"<{_local(element.tag)}> attribute {attr}={raw!r} is not a number"
        ) from None
    if not math.isfinite(value) or value < 0:
        raise ReportError(
            path, f"<{_local(element.tag)}> attribute {attr}={raw!r} is not a non-negative number"
        )
    return value


def _count(path: Path | str, element: ET.Element, attr: str) -> int:
    value = _number(path, element, attr)
    return 0 if value is None else int(value)


def _capped(items: Iterable[str]) -> list[str]:
    out: list[str] = []
    for item in items:
        if len(out) == MAX_LISTED:
            break
        out.append(_one_line(item))
    return out


# --------------------------------------------------------------------------- JUnit XML


def parse_junit(path: Path | str) -> TestReport:
    """Parse a JUnit XML report (``<testsuites>`` root or a single ``<testsuite>``).

    Counts come from the ``<testcase>`` elements when there are any (each case counted
    once: error, else failure, else skipped), otherwise from the suites' attributes.
    """
    root = _xml_root(path, ("testsuites", "testsuite"), "JUnit")
    suites = [root] if _local(root.tag) == "testsuite" else list(_children(root, "testsuite"))
    cases = list(_descendants(root, "testcase"))

    failed: list[str] = []
    if cases:
        total = len(cases)
        failures = errors = skipped = 0
        for case in cases:
            error = next(_children(case, "error"), None)
            failure = next(_children(case, "failure"), None)
            problem = error if error is not None else failure
            if problem is not None:
                if error is not None:
                    errors += 1
                else:
                    failures += 1
                failed.append(_case_line(case, problem))
            elif next(_children(case, "skipped"), None) is not None:
                skipped += 1
    else:
        total = sum(_count(path, s, "tests") for s in suites)
        failures = sum(_count(path, s, "failures") for s in suites)
        errors = sum(_count(path, s, "errors") for s in suites)
        skipped = sum(_count(path, s, "skipped") + _count(path, s, "disabled") for s in suites)

    duration = _number(path, root, "time")
    if duration is None:
        suite_times = [_number(path, s, "time") for s in suites]
        if any(t is not None for t in suite_times):
            duration = sum(t or 0.0 for t in suite_times)
        else:
            duration = sum(_number(path, c, "time") or 0.0 for c in cases)

    return TestReport(
        total=total,
        failures=failures,
        errors=errors,
        skipped=skipped,
        duration_s=round(duration, 3),
        failed_cases=_capped(failed),
    )


def _case_line(case: ET.Element, problem: ET.Element) -> str:
    """``classname::name: first line of the failure message``."""
    name = case.get("name") or "?"
    classname = case.get("classname") or ""
    label = f"{classname}::{name}" if classname else name
    message = (problem.get("message") or "").strip()
    if not message or message in _GENERIC_MESSAGES:  # the details are in the element's text
        message = (problem.text or "").strip() or message
    first = message.splitlines()[0] if message else _local(problem.tag)
    return f"{label}: {first}"


_GENERIC_MESSAGES = frozenset({"mypy produced messages"})
"""Failure messages that say nothing: the first line of the failure's text is shown instead."""


# --------------------------------------------------------------------------- Cobertura XML


def parse_cobertura(path: Path | str) -> CoverageReport:
    """Parse a Cobertura XML coverage report (``<coverage>`` root).

    Line coverage is ``lines-covered / lines-valid`` when the totals are present (more
    precise than the rounded ``line-rate``); reports without totals are counted from
    their ``<line>`` elements. Branch coverage is ``None`` when no branch was measured.
    """
    root = _xml_root(path, ("coverage",), "Cobertura")
    lines_valid_attr = _number(path, root, "lines-valid")
    lines_covered_attr = _number(path, root, "lines-covered")

    if lines_valid_attr is not None and lines_covered_attr is not None:
        lines_valid, lines_covered = int(lines_valid_attr), int(lines_covered_attr)
    else:
        lines_valid, lines_covered = _count_lines(path, root)
    if lines_covered > lines_valid:
        raise ReportError(
            path, f"lines-covered ({lines_covered}) is more than lines-valid ({lines_valid})"
        )

    if lines_valid:
        line_pct = 100.0 * lines_covered / lines_valid
    else:
        rate = _number(path, root, "line-rate")
        if rate is None:
            raise ReportError(path, "Cobertura report has no lines and no line-rate")
        line_pct = 100.0 * rate
    if line_pct > 100.0:
        raise ReportError(path, f"line-rate {line_pct / 100:g} is above 1")

    branches_valid = _number(path, root, "branches-valid")
    branches_covered = _number(path, root, "branches-covered")
    branch_pct: float | None = None
    if branches_valid and branches_covered is not None:
        branch_pct = 100.0 * branches_covered / branches_valid
    elif branches_valid is None and (rate := _number(path, root, "branch-rate")) is not None:
        branch_pct = 100.0 * rate  # old reports: a rate without totals
    if branch_pct is not None and branch_pct > 100.0:
        raise ReportError(path, f"branch coverage {branch_pct:.2f} % is above 100 %")

    return CoverageReport(
        line_rate_pct=round(line_pct, 2),
        branch_rate_pct=None if branch_pct is None else round(branch_pct, 2),
        lines_valid=lines_valid,
        lines_covered=lines_covered,
    )


def _count_lines(path: Path | str, root: ET.Element) -> tuple[int, int]:
    """(valid, covered) from ``<class filename><lines><line number hits>`` elements."""
    hits_by_line: dict[tuple[str, str], int] = {}
    for cls in _descendants(root, "class"):
        filename = cls.get("filename") or cls.get("name") or ""
        for lines in _children(cls, "lines"):
            for line in _children(lines, "line"):
                key = (filename, line.get("number") or "")
                hits = _count(path, line, "hits")
                hits_by_line[key] = max(hits_by_line.get(key, 0), hits)
    return len(hits_by_line), sum(1 for hits in hits_by_line.values() if hits > 0)


# --------------------------------------------------------------------------- SARIF

_LEVELS: Mapping[str, Level] = {
    "error": "error",
    "warning": "warning",
    "note": "note",
    "none": "note",
}
_NAMED_SEVERITY: Mapping[str, Severity] = {
    "critical": "high",
    "high": "high",
    "medium": "medium",
    "moderate": "medium",
    "low": "low",
    "info": "low",
    "undefined": "low",
}
# Most severe first: a security rating outranks a lint level of the same weight.
_RANK: Mapping[str, int] = {
    "high": 0,
    "error": 1,
    "medium": 2,
    "warning": 3,
    "low": 4,
    "note": 5,
}


def parse_sarif(
    path: Path | str, root: Path | None = None, only: Collection[str] | None = None
) -> FindingsReport:
    """Parse a SARIF 2.1.0 log and count its findings as the tools rated them.

    ``root``: the checkout the tool ran in. A finding's file under it is named relative to
    it (ruff writes absolute ``file://`` URIs, bandit relative paths), so the feedback and
    the evidence name ``src/app.py:5``, never the worker's workspace path. ``only``: count
    just the findings in these files (paths relative to ``root``), e.g. those a task changed.

    Each finding has a SARIF level: the result's ``level``, else its rule's default level,
    else ``warning`` (SARIF's default); ``none`` counts as ``note``. A finding also has a
    security severity when the tool gives one, first found wins: a numeric
    ``security-severity`` property on the result or its rule (CVSS-like: ≥ 7 high, ≥ 4
    medium, else low), then bandit's ``issue_severity``. A level is never turned into a
    security severity: ruff writes every lint result at level ``error``, and an unused
    import is not a high-severity finding. Suppressed results and results whose ``kind`` is
    not ``fail`` are not findings.
    """
    data = _read(path)
    try:
        log = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(path, f"malformed or truncated SARIF JSON ({exc})") from None
    if not isinstance(log, dict):
        raise ReportError(path, f"not a SARIF log: top level is {type(log).__name__}")
    version = log.get("version")
    if version != "2.1.0":
        raise ReportError(path, f"not a SARIF 2.1.0 log: version is {version!r}")
    runs = log.get("runs")
    if not isinstance(runs, list):
        raise ReportError(path, "not a SARIF log: 'runs' is missing or not a list")

    severities: dict[str, int] = dict.fromkeys(SEVERITIES, 0)
    levels: dict[str, int] = dict.fromkeys(LEVELS, 0)
    findings: list[tuple[int, str]] = []
    tools: list[str] = []
    total = 0
    for index, run in enumerate(runs):
        if not isinstance(run, dict):
            raise ReportError(path, f"runs[{index}] is not an object")
        driver = _obj(_obj(run.get("tool")).get("driver"))
        name = driver.get("name")
        if isinstance(name, str) and name and name not in tools:
            tools.append(name)
        rules = [r for r in _list(driver.get("rules")) if isinstance(r, dict)]
        rules_by_id = {r["id"]: r for r in rules if isinstance(r.get("id"), str)}
        results = run.get("results", [])
        if not isinstance(results, list):
            raise ReportError(path, f"runs[{index}].results is not a list")
        for result in results:
            if not isinstance(result, dict):
                raise ReportError(path, f"runs[{index}].results has an entry that is not an object")
            if result.get("kind", "fail") != "fail" or _suppressed(result):
                continue
            if only is not None and _finding_file(result, root) not in only:
                continue
            rule = _rule_of(result, rules, rules_by_id)
            total += 1
            level = _level(result, rule)
            levels[level] += 1
            severity = _security_severity(result, rule)
            if severity is not None:
                severities[severity] += 1
            rating = severity or level
            line = _finding_line(rating, result, rule, root)
            findings.append((min(_RANK[rating], _RANK[level]), line))

    findings.sort(key=lambda item: item[0])  # stable: keeps the tool's order within a rank
    return FindingsReport(
        tool=", ".join(tools) or "unknown",
        total=total,
        by_severity=severities,
        high=severities["high"],
        by_level=levels,
        errors=levels["error"],
        top=_capped(line for _, line in findings),
    )


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _suppressed(result: dict[str, Any]) -> bool:
    """SARIF: a result with a suppression whose status is not rejected/underReview."""
    return any(
        isinstance(s, dict) and s.get("status", "accepted") == "accepted"
        for s in _list(result.get("suppressions"))
    )


def _rule_of(
    result: dict[str, Any], rules: list[dict[str, Any]], rules_by_id: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    index = result.get("ruleIndex")
    if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(rules):
        return rules[index]
    rule_id = result.get("ruleId")
    return rules_by_id.get(rule_id, {}) if isinstance(rule_id, str) else {}


def _security_severity(result: dict[str, Any], rule: dict[str, Any]) -> Severity | None:
    """The tool's security rating of a finding; ``None`` for a finding without one (lint)."""
    for props in (_obj(result.get("properties")), _obj(rule.get("properties"))):
        score = _security_score(props.get("security-severity"))
        if score is not None:
            return "high" if score >= 7.0 else "medium" if score >= 4.0 else "low"
    named = _obj(result.get("properties")).get("issue_severity")  # bandit
    if isinstance(named, str) and named.lower() in _NAMED_SEVERITY:
        return _NAMED_SEVERITY[named.lower()]
    return None


def _level(result: dict[str, Any], rule: dict[str, Any]) -> Level:
    """The result's SARIF level as the tool wrote it (or its rule's default, else warning)."""
    level = result.get("level")
    if not isinstance(level, str):
        level = _obj(rule.get("defaultConfiguration")).get("level")
    if not isinstance(level, str):
        level = "warning"
    return _LEVELS.get(level, "warning")


def _security_score(value: Any) -> float | None:
    """GitHub's ``security-severity``: a CVSS-like score written as a string or number."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    try:
        score = float(value)
    except ValueError:
        return None
    return score if math.isfinite(score) else None


def _finding_line(
    rating: str, result: dict[str, Any], rule: dict[str, Any], root: Path | None = None
) -> str:
    """``high B602 app.py:5 subprocess call with shell=True identified, security issue.`` or,
    for a lint finding, ``error F401 app.py:1 `os` imported but unused``."""
    rule_id = result.get("ruleId") or rule.get("id") or "?"
    message = _obj(result.get("message")).get("text")
    if not isinstance(message, str) or not message.strip():
        message = _obj(rule.get("shortDescription")).get("text") or ""
    where = ""
    for location in _list(result.get("locations"))[:1]:
        physical = _obj(_obj(location).get("physicalLocation"))
        uri = _obj(physical.get("artifactLocation")).get("uri")
        line = _obj(physical.get("region")).get("startLine")
        if isinstance(uri, str) and uri:
            where = _where(uri, root)
            if isinstance(line, int):
                where += f":{line}"
    return " ".join(part for part in (rating, str(rule_id), where, str(message)) if part)


def _finding_file(result: dict[str, Any], root: Path | None) -> str | None:
    """The file of a finding's first location, named as ``_where`` names it."""
    for location in _list(result.get("locations"))[:1]:
        physical = _obj(_obj(location).get("physicalLocation"))
        uri = _obj(physical.get("artifactLocation")).get("uri")
        if isinstance(uri, str) and uri:
            return _where(uri, root)
    return None


def _where(uri: str, root: Path | None) -> str:
    """A finding's file: relative to ``root`` when it lies under it, else as the tool wrote it
    (without ``file://``)."""
    where = unquote(uri.removeprefix("file://")) if uri.startswith("file://") else uri
    if root is None or not where.startswith("/"):
        return where
    for base in (root, root.resolve()):
        with contextlib.suppress(ValueError):
            return Path(where).relative_to(base).as_posix()
    return where


# --------------------------------------------------------------------------- OpenAPI


def parse_openapi(path: Path | str) -> ContractReport:
    """Validate an OpenAPI 3.x document (YAML or JSON) with openapi-spec-validator.

    A document that breaks the specification (Swagger 2.0 included) is a verdict,
    ``valid=False`` with the errors; a file that is not a YAML/JSON mapping with an
    ``openapi`` or ``swagger`` field raises :class:`ReportError`.
    ``$ref`` is followed only to files beside the document (never over the network).
    """
    data = _read(path)
    document = _load_document(path, data)
    paths_obj = document.get("paths")
    n_paths = len(paths_obj) if isinstance(paths_obj, dict) else 0
    version = document.get("openapi")
    version_text = None if version is None else str(version)

    if version_text is None:
        if "swagger" not in document:
            raise ReportError(path, "not an OpenAPI document: no 'openapi' (or 'swagger') field")
        problem = f"Swagger {document['swagger']} document; an OpenAPI 3.x contract is required"
        return ContractReport(valid=False, openapi_version=None, paths=n_paths, errors=[problem])
    if not version_text.startswith("3."):
        return ContractReport(
            valid=False,
            openapi_version=version_text,
            paths=n_paths,
            errors=[f"openapi {version_text!r} is not a 3.x version"],
        )

    errors = _openapi_errors(Path(path), document, version_text)
    return ContractReport(
        valid=not errors, openapi_version=version_text, paths=n_paths, errors=_capped(errors)
    )


def _load_document(path: Path | str, data: bytes) -> dict[str, Any]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ReportError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    syntax = "JSON" if Path(path).suffix.lower() == ".json" else "YAML"
    try:
        # JSON is YAML too; safe_load builds plain data only, never Python objects.
        document = json.loads(text) if syntax == "JSON" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ReportError(path, f"malformed or truncated {syntax} ({exc})") from None
    except RecursionError:
        raise ReportError(path, "document is nested too deeply") from None
    if not isinstance(document, dict):
        raise ReportError(
            path, f"not an OpenAPI document: top level is {type(document).__name__}, not a mapping"
        )
    if _too_many_nodes(document):
        raise ReportError(
            path, f"document expands to over {MAX_DOCUMENT_NODES} values (YAML alias bomb?)"
        )
    return {str(key): value for key, value in document.items()}


def _too_many_nodes(document: Any) -> bool:
    """Count values as the validator would walk them: YAML aliases count every time."""
    stack = [document]
    seen = 0
    while stack:
        node = stack.pop()
        seen += 1
        if seen > MAX_DOCUMENT_NODES:
            return True
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def _openapi_errors(path: Path, document: dict[str, Any], version: str) -> list[str]:
    # Imported here: the validator pulls in jsonschema and friends, which only the
    # design gate needs.
    from jsonschema_path import SchemaPath
    from openapi_spec_validator import (
        OpenAPIV30SpecValidator,
        OpenAPIV31SpecValidator,
        OpenAPIV32SpecValidator,
    )

    validators = {
        "3.0": OpenAPIV30SpecValidator,
        "3.1": OpenAPIV31SpecValidator,
        "3.2": OpenAPIV32SpecValidator,
    }
    minor = ".".join(version.split(".")[:2])
    validator_cls = validators.get(minor)
    if validator_cls is None:
        return [f"openapi {version!r}: unknown 3.x minor version (known: 3.0, 3.1, 3.2)"]

    directory = path.resolve().parent
    spec = SchemaPath.from_dict(
        document,
        base_uri=path.resolve().as_uri(),
        handlers=_ConfinedHandlers(_ConfinedFileHandler(directory)),
    )
    errors: list[str] = []
    try:
        for error in validator_cls(spec).iter_errors():
            where = "/".join(str(part) for part in error.absolute_path)
            errors.append(f"{where}: {error.message}" if where else error.message)
            if len(errors) == MAX_LISTED:
                break
    except RecursionError:
        errors.append(
            "document is nested too deeply (or has a $ref cycle the validator cannot follow)"
        )
    except Exception as exc:  # the validator's own failure on hostile input is a verdict
        ref = getattr(exc, "ref", None)  # referencing.exceptions.Unresolvable
        errors.append(
            f"$ref {ref!r} cannot be resolved (only files beside the contract are followed)"
            if isinstance(ref, str)
            else f"cannot validate: {type(exc).__name__}: {exc}"
        )
    return errors


class _ConfinedHandlers(Mapping[str, Any]):
    """One handler for every URI scheme.

    jsonschema-path falls back to ``urlopen`` for a scheme it has no handler for, so
    this mapping claims them all and lets :class:`_ConfinedFileHandler` refuse.
    """

    def __init__(self, handler: _ConfinedFileHandler) -> None:
        self.handler = handler

    def __contains__(self, scheme: object) -> bool:
        return True

    def __getitem__(self, scheme: str) -> _ConfinedFileHandler:
        return self.handler

    def __iter__(self) -> Iterator[str]:
        return iter(("file",))

    def __len__(self) -> int:
        return 1


class _ConfinedFileHandler:
    """Resolves ``file:`` ``$ref`` targets, but only inside the contract's own directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def __call__(self, uri: str) -> Any:
        parsed = urlparse(uri)
        if parsed.scheme != "file":
            raise ValueError(f"$ref {uri!r}: only files beside the contract are followed")
        target = Path(unquote(parsed.path)).resolve()
        if not target.is_relative_to(self.directory):
            raise ValueError(f"$ref {uri!r} points outside the contract's directory")
        if not target.is_file() or target.stat().st_size > MAX_REPORT_BYTES:
            raise ValueError(f"$ref {uri!r}: no such file (or too large)")
        text = target.read_text(encoding="utf-8-sig")
        return json.loads(text) if target.suffix.lower() == ".json" else yaml.safe_load(text)
