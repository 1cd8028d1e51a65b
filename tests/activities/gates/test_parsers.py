"""Report parsers on reports written by the real tools during this run, plus broken ones.

The real tools (pytest + coverage, ruff, bandit) run once per module in a subprocess on a
tiny generated project; hand-written fixtures cover the jest/vitest/istanbul/CodeQL
shapes that no tool installed here writes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from activities.gates.parsers import (
    ReportError,
    parse_cobertura,
    parse_junit,
    parse_openapi,
    parse_sarif,
)
from activities.gates.report_models import MAX_LISTED

TOOL_TIMEOUT_S = 60

Parser = Callable[[Path], object]

CALC = """\
def add(a, b):
    return a + b


def div(a, b):
    if b == 0:
        raise ZeroDivisionError("b")
    return a / b


def unused(x):
    if x:
        return 1
    return 2
"""

TEST_CALC = """\
import pytest

import calc


def test_add():
    assert calc.add(1, 2) == 3


@pytest.fixture
def broken():
    raise RuntimeError("fixture broke")


def test_error(broken):
    pass


@pytest.mark.parametrize("n", range(22))
def test_fails(n):
    assert calc.add(n, 1) == -1, "wrong on purpose"


@pytest.mark.skip(reason="not today")
def test_skipped():
    pass
"""

LINTED = """\
import os
import sys


def f(x):
    l = 1
    return eval(x)
"""
# ruff --select E,F,S: F401 x2 (os, sys), E741 (l), F841 (l unused), S307 (eval)
RUFF_RULES = {"F401", "E741", "F841", "S307"}

INSECURE = """\
import subprocess


def run(cmd):
    return subprocess.call(cmd, shell=True)
"""

OPENAPI_GOOD = {
    "openapi": "3.1.0",
    "info": {"title": "Todo API", "version": "1.0.0"},
    "paths": {
        "/todos": {
            "get": {
                "responses": {
                    "200": {
                        "description": "all todos",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "array",
                                    "items": {"$ref": "#/components/schemas/Todo"},
                                }
                            }
                        },
                    }
                }
            }
        },
        "/todos/{id}": {
            "get": {
                "parameters": [
                    {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}
                ],
                "responses": {
                    "200": {
                        "description": "one todo",
                        "content": {"application/json": {"schema": {"$ref": "schemas.yaml#/Todo"}}},
                    },
                    "404": {"description": "not found"},
                },
            }
        },
    },
    "components": {
        "schemas": {
            "Todo": {
                "type": "object",
                "required": ["id", "title"],
                "properties": {"id": {"type": "integer"}, "title": {"type": "string"}},
            }
        }
    },
}

OPENAPI_BAD_YAML = """\
openapi: 3.0.3
info:
  title: Todo API
paths:
  /todos/{id}:
    get:
      responses:
        "200":
          description: one todo
"""


# 10**8 values once the aliases are expanded (a "billion laughs" in YAML)
YAML_BOMB = """\
openapi: 3.0.0
a: &a [x, x, x, x, x, x, x, x, x, x]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]
"""


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COVERAGE_"))}
    return subprocess.run(
        argv,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_S,
        check=False,
    )


def _tool(module: str) -> list[str]:
    return [sys.executable, "-m", module]


def _truncated(report: Path) -> Path:
    data = report.read_bytes()
    half = report.with_name(f"truncated-{report.name}")
    half.write_bytes(data[: len(data) // 2])
    return half


def _assert_report_error(parse: Parser, path: Path, *words: str) -> ReportError:
    with pytest.raises(ReportError) as caught:
        parse(path)
    message = str(caught.value)
    assert path.name in message
    assert "\n" not in message
    for word in words:
        assert word in message.lower()
    return caught.value


# --------------------------------------------------------------------------- real reports


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny project whose tests were run by real pytest under real coverage."""
    pytest.importorskip("coverage", reason="coverage is needed to produce a Cobertura report")
    root = tmp_path_factory.mktemp("project")
    (root / "calc.py").write_text(CALC)
    (root / "test_calc.py").write_text(TEST_CALC)
    (root / "pytest.ini").write_text("[pytest]\n")  # anchors rootdir here
    run = _run(
        [
            *_tool("coverage"),
            "run",
            "--branch",
            "--include=calc.py",
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--junitxml=junit.xml",
            "test_calc.py",
        ],
        root,
    )
    assert run.returncode == 1, run.stdout + run.stderr  # 1 = some tests failed
    xml = _run([*_tool("coverage"), "xml", "-o", "coverage.xml"], root)
    assert xml.returncode == 0, xml.stdout + xml.stderr
    # A second measurement without --branch, to see a report with no branch data.
    (root / "main.py").write_text("import calc\n\nprint(calc.add(1, 2))\n")
    plain = _run(
        [*_tool("coverage"), "run", "--data-file=.coverage-plain", "--include=calc.py", "main.py"],
        root,
    )
    assert plain.returncode == 0, plain.stdout + plain.stderr
    xml = _run(
        [*_tool("coverage"), "xml", "--data-file=.coverage-plain", "-o", "coverage-plain.xml"],
        root,
    )
    assert xml.returncode == 0, xml.stdout + xml.stderr
    return root


def test_junit_from_real_pytest(project: Path) -> None:
    report = parse_junit(project / "junit.xml")

    assert (report.total, report.failures, report.errors, report.skipped) == (25, 22, 1, 1)
    assert report.passed == 1
    assert report.duration_s >= 0
    assert len(report.failed_cases) == MAX_LISTED
    assert any(
        case.startswith("test_calc::test_error") and "fixture broke" in case
        for case in report.failed_cases
    )
    assert "test_calc::test_fails[0]: AssertionError: wrong on purpose" in report.failed_cases


def test_cobertura_from_real_coverage(project: Path) -> None:
    report = parse_cobertura(project / "coverage.xml")

    # calc.py has 10 statements; importing it runs the 3 `def`s, test_add runs 1 return.
    assert (report.lines_valid, report.lines_covered) == (10, 4)
    assert report.line_rate_pct == 40.0
    assert report.branch_rate_pct == 0.0  # 4 branches measured, none taken


def test_cobertura_without_branch_measurement(project: Path) -> None:
    report = parse_cobertura(project / "coverage-plain.xml")

    assert (report.lines_valid, report.lines_covered) == (10, 4)
    assert report.branch_rate_pct is None


@pytest.fixture(scope="module")
def ruff_sarif(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ruff")
    (root / "linted.py").write_text(LINTED)
    out = root / "ruff.sarif"
    run = _run(
        [
            *_tool("ruff"),
            "check",
            "--no-cache",
            "--isolated",
            "--select",
            "E,F,S",
            "--output-format",
            "sarif",
            "--output-file",
            str(out),
            "linted.py",
        ],
        root,
    )
    assert run.returncode == 1, run.stdout + run.stderr  # 1 = findings
    return out


def test_sarif_from_real_ruff(ruff_sarif: Path) -> None:
    report = parse_sarif(ruff_sarif)

    assert report.tool == "ruff"
    assert report.total == 5
    # ruff writes every result at level "error": a lint error, not a security rating
    assert report.by_level == {"error": 5, "warning": 0, "note": 0}
    assert report.errors == 5
    assert report.by_severity == {"high": 0, "medium": 0, "low": 0}
    assert report.high == 0
    assert all(line.startswith("error ") for line in report.top)
    assert {line.split()[1] for line in report.top} == RUFF_RULES
    assert any("linted.py:7" in line and "S307" in line for line in report.top)


def test_sarif_findings_are_named_relative_to_the_checkout(ruff_sarif: Path) -> None:
    # ruff writes absolute file:// URIs; a finding in feedback names the file in the repo.
    assert any(f"{ruff_sarif.parent}/linted.py:7" in line for line in parse_sarif(ruff_sarif).top)
    report = parse_sarif(ruff_sarif, root=ruff_sarif.parent)
    assert any(line.startswith("error S307 linted.py:7 ") for line in report.top), report.top
    assert not any(str(ruff_sarif.parent) in line for line in report.top)
    elsewhere = parse_sarif(ruff_sarif, root=ruff_sarif.parent / "src")  # not under it: as is
    assert any(f"{ruff_sarif.parent}/linted.py:7" in line for line in elsewhere.top)
    # Only the files a task changed: the others' findings are not counted.
    assert parse_sarif(ruff_sarif, root=ruff_sarif.parent, only={"other.py"}).total == 0
    mine = parse_sarif(ruff_sarif, root=ruff_sarif.parent, only={"linted.py"})
    assert mine.total == report.total > 0


@pytest.fixture(scope="module")
def bandit_sarif(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("bandit", reason="bandit is the Python preset's security scanner")
    pytest.importorskip("sarif_om", reason="bandit's SARIF output needs bandit[sarif]")
    root = tmp_path_factory.mktemp("bandit")
    (root / "insecure.py").write_text(INSECURE)
    out = root / "bandit.sarif"
    run = _run([*_tool("bandit"), "-q", "-f", "sarif", "-o", str(out), "insecure.py"], root)
    assert run.returncode == 1, run.stdout + run.stderr  # 1 = issues found
    return out


def test_sarif_from_real_bandit(bandit_sarif: Path) -> None:
    report = parse_sarif(bandit_sarif)

    assert report.tool == "Bandit"
    # B602 (shell=True) is HIGH; B404 (import subprocess) is LOW although its level is "note"
    assert report.high == 1
    assert report.by_severity == {"high": 1, "medium": 0, "low": 1}
    assert report.by_level == {"error": 1, "warning": 0, "note": 1}
    assert report.top[0].startswith("high B602 insecure.py:5")
    assert report.top[1].startswith("low B404 insecure.py:1")


@pytest.fixture(scope="module")
def contracts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("contracts")
    (root / "openapi.json").write_text(json.dumps(OPENAPI_GOOD, indent=2))
    (root / "schemas.yaml").write_text("Todo:\n  type: object\n")
    (root / "bad.yaml").write_text(OPENAPI_BAD_YAML)
    return root


def test_openapi_valid_document(contracts: Path) -> None:
    report = parse_openapi(contracts / "openapi.json")

    assert report.valid, report.errors
    assert report.openapi_version == "3.1.0"
    assert report.paths == 2
    assert report.errors == []


def test_openapi_invalid_document(contracts: Path) -> None:
    report = parse_openapi(contracts / "bad.yaml")

    assert not report.valid
    assert report.openapi_version == "3.0.3"
    assert report.paths == 1
    assert any("'version' is a required property" in e for e in report.errors)
    assert any("Path parameter 'id'" in e for e in report.errors)


def test_openapi_refs_stay_beside_the_contract(tmp_path: Path) -> None:
    doc = json.loads(json.dumps(OPENAPI_GOOD))
    schema = doc["paths"]["/todos/{id}"]["get"]["responses"]["200"]["content"]
    schema["application/json"]["schema"] = {"$ref": "../outside.yaml#/Todo"}
    (tmp_path / "outside.yaml").write_text("Todo:\n  type: object\n")
    (tmp_path / "api").mkdir()
    contract = tmp_path / "api" / "openapi.yaml"
    contract.write_text(json.dumps(doc))

    report = parse_openapi(contract)

    assert not report.valid
    assert any("outside.yaml" in e for e in report.errors)


def test_openapi_swagger_2_is_an_invalid_contract(tmp_path: Path) -> None:
    contract = tmp_path / "swagger.yaml"
    contract.write_text("swagger: '2.0'\ninfo: {title: t, version: '1'}\npaths: {}\n")

    report = parse_openapi(contract)

    assert not report.valid
    assert "OpenAPI 3.x contract is required" in report.errors[0]


# --------------------------------------------------------------------------- broken reports


@pytest.mark.parametrize(
    ("fixture", "parse"),
    [
        ("junit", parse_junit),
        ("coverage", parse_cobertura),
        ("ruff", parse_sarif),
        ("bandit", parse_sarif),
        ("openapi", parse_openapi),
    ],
)
def test_truncated_real_reports_raise_report_error(
    request: pytest.FixtureRequest, fixture: str, parse: Parser
) -> None:
    sources = {
        "junit": lambda: request.getfixturevalue("project") / "junit.xml",
        "coverage": lambda: request.getfixturevalue("project") / "coverage.xml",
        "ruff": lambda: request.getfixturevalue("ruff_sarif"),
        "bandit": lambda: request.getfixturevalue("bandit_sarif"),
        "openapi": lambda: request.getfixturevalue("contracts") / "openapi.json",
    }
    half = _truncated(sources[fixture]())

    _assert_report_error(parse, half, "truncated")


@pytest.mark.parametrize("parse", [parse_junit, parse_cobertura, parse_sarif, parse_openapi])
@pytest.mark.parametrize("content", ["", "  \n\t\n"])
def test_empty_reports_raise_report_error(tmp_path: Path, parse: Parser, content: str) -> None:
    empty = tmp_path / "empty-report"
    empty.write_text(content)

    _assert_report_error(parse, empty, "empty")


@pytest.mark.parametrize("parse", [parse_junit, parse_cobertura, parse_sarif, parse_openapi])
def test_missing_report_raises_report_error(tmp_path: Path, parse: Parser) -> None:
    _assert_report_error(parse, tmp_path / "never-written.xml", "not found")


def test_directory_instead_of_report(tmp_path: Path) -> None:
    _assert_report_error(parse_junit, tmp_path, "not a regular file")


def test_wrong_kind_of_report(project: Path, ruff_sarif: Path) -> None:
    error = _assert_report_error(parse_junit, project / "coverage.xml", "<coverage>")
    assert "<testsuites> or <testsuite>" in str(error)
    _assert_report_error(parse_cobertura, project / "junit.xml", "<testsuites>")
    _assert_report_error(parse_sarif, project / "junit.xml", "malformed")
    _assert_report_error(parse_openapi, ruff_sarif, "no 'openapi'")


@pytest.mark.parametrize(
    ("name", "content", "parse", "words"),
    [
        ("not-xml.xml", "this is not xml", parse_junit, ("malformed",)),
        (
            "bomb.xml",
            '<!DOCTYPE t [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><testsuites>&b;</testsuites>',
            parse_junit,
            ("unsafe",),
        ),
        ("nan.xml", '<testsuite tests="many"/>', parse_junit, ("tests='many'", "not a number")),
        ("neg.xml", '<coverage lines-valid="-3" lines-covered="1"/>', parse_cobertura, ("-3",)),
        (
            "over.xml",
            '<coverage lines-valid="3" lines-covered="5" line-rate="1.6"/>',
            parse_cobertura,
            ("more than",),
        ),
        ("list.sarif", "[]", parse_sarif, ("top level is list",)),
        ("v2.sarif", '{"version": "2.0.0", "runs": []}', parse_sarif, ("2.1.0",)),
        ("noruns.sarif", '{"version": "2.1.0"}', parse_sarif, ("'runs'",)),
        ("badrun.sarif", '{"version": "2.1.0", "runs": [3]}', parse_sarif, ("runs[0]",)),
        ("scalar.yaml", "just a string\n", parse_openapi, ("top level is str",)),
        ("broken.yaml", "openapi: [3.0.0\ninfo: {", parse_openapi, ("malformed",)),
        ("bomb.yaml", YAML_BOMB, parse_openapi, ("alias bomb",)),
        ("latin1.yaml", b"openapi: '3.0.0'\ntitle: caf\xe9\n", parse_openapi, ("utf-8",)),
    ],
)
def test_malformed_reports_raise_report_error(
    tmp_path: Path, name: str, content: str | bytes, parse: Parser, words: tuple[str, ...]
) -> None:
    report = tmp_path / name
    if isinstance(content, bytes):
        report.write_bytes(content)
    else:
        report.write_text(content)

    _assert_report_error(parse, report, *words)


# --------------------------------------------------------------------------- other tools' shapes

JEST_JUNIT = """\
<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="jest tests" tests="4" failures="1" errors="0" time="1.234">
  <testsuite name="todos" errors="0" failures="1" skipped="1" timestamp="2024-05-01T10:00:00"
             time="0.9" tests="3">
    <testcase classname="todos creates a todo" name="todos creates a todo" time="0.01">
    </testcase>
    <testcase classname="todos rejects an empty title" name="todos rejects an empty title"
              time="0.02">
      <failure>Error: expect(received).toBe(expected) // Object.is equality

Expected: 400
Received: 201
    at Object.&lt;anonymous&gt; (todos.test.js:12:25)</failure>
    </testcase>
    <testcase classname="todos later" name="todos later" time="0">
      <skipped/>
    </testcase>
  </testsuite>
  <testsuite name="health" errors="0" failures="0" skipped="0" time="0.3" tests="1">
    <testcase classname="health ok" name="health ok" time="0.003"/>
  </testsuite>
</testsuites>
"""

VITEST_JUNIT = """\
<?xml version="1.0" encoding="UTF-8" ?>
<testsuites name="vitest tests" tests="2" failures="0" errors="1" time="0.52">
    <testsuite name="src/api.test.ts" timestamp="2024-05-01T10:00:00.000Z" hostname="ci"
               tests="2" failures="0" errors="1" skipped="0" time="0.02">
        <testcase classname="src/api.test.ts" name="api &gt; lists todos" time="0.004"/>
        <testcase classname="src/api.test.ts" name="api &gt; boots" time="0.001">
            <error message="connect ECONNREFUSED 127.0.0.1:5432" type="Error">
Error: connect ECONNREFUSED 127.0.0.1:5432
            </error>
        </testcase>
    </testsuite>
</testsuites>
"""

SUMMARY_ONLY_JUNIT = (
    '<testsuite name="s" tests="7" failures="2" errors="0" skipped="1" time="3.5"/>'
)

ISTANBUL_COBERTURA = """\
<?xml version="1.0" ?>
<!DOCTYPE coverage SYSTEM "http://cobertura.sourceforge.net/xml/coverage-04.dtd">
<coverage lines-valid="40" lines-covered="33" line-rate="0.825" branches-valid="12"
          branches-covered="9" branch-rate="0.75" timestamp="1714557600000" complexity="0"
          version="0.1">
  <sources><source>/repo</source></sources>
  <packages><package name="src" line-rate="0.825" branch-rate="0.75"><classes/></package></packages>
</coverage>
"""

OLD_COBERTURA = """\
<coverage line-rate="0.5" branch-rate="0.25" version="1.9">
  <packages><package name="p"><classes>
    <class name="a" filename="a.py"><lines>
      <line number="1" hits="3"/><line number="2" hits="0"/>
    </lines></class>
    <class name="b" filename="b.py"><lines>
      <line number="1" hits="1"/><line number="2" hits="0"/>
    </lines></class>
  </classes></package></packages>
</coverage>
"""

CODEQL_SARIF = {
    "version": "2.1.0",
    "runs": [
        {
            "tool": {
                "driver": {
                    "name": "CodeQL",
                    "rules": [
                        {"id": "js/sql-injection", "properties": {"security-severity": "8.8"}},
                        {"id": "js/weak-crypto", "properties": {"security-severity": "5.0"}},
                    ],
                }
            },
            "results": [
                {
                    "ruleId": "js/weak-crypto",
                    "ruleIndex": 1,
                    "level": "warning",
                    "message": {"text": "weak hash"},
                },
                {
                    "ruleId": "js/sql-injection",
                    "ruleIndex": 0,
                    "level": "error",
                    "message": {"text": "query built from user input"},
                    "locations": [
                        {
                            "physicalLocation": {
                                "artifactLocation": {"uri": "src/db.js"},
                                "region": {"startLine": 42},
                            }
                        }
                    ],
                },
                {
                    "ruleId": "js/sql-injection",
                    "message": {"text": "reviewed, not reachable"},
                    "suppressions": [{"kind": "inSource"}],
                },
                {"ruleId": "x/pass", "kind": "pass", "message": {"text": "checked"}},
            ],
        },
        {"tool": {"driver": {"name": "eslint"}}, "results": [{"message": {"text": "no level"}}]},
    ],
}


@pytest.mark.parametrize(
    ("name", "content", "counts", "duration_s", "failed_cases"),
    [
        (
            "jest-junit.xml",
            JEST_JUNIT,
            (4, 1, 0, 1),
            1.234,
            [
                "todos rejects an empty title::todos rejects an empty title: "
                "Error: expect(received).toBe(expected) // Object.is equality"
            ],
        ),
        (
            "vitest-junit.xml",
            VITEST_JUNIT,
            (2, 0, 1, 0),
            0.52,
            ["src/api.test.ts::api > boots: connect ECONNREFUSED 127.0.0.1:5432"],
        ),
        ("summary-only.xml", SUMMARY_ONLY_JUNIT, (7, 2, 0, 1), 3.5, []),
    ],
)
def test_junit_from_other_runners(
    tmp_path: Path,
    name: str,
    content: str,
    counts: tuple[int, int, int, int],
    duration_s: float,
    failed_cases: list[str],
) -> None:
    path = tmp_path / name
    path.write_text(content)

    report = parse_junit(path)

    assert (report.total, report.failures, report.errors, report.skipped) == counts
    assert report.duration_s == duration_s
    assert report.failed_cases == failed_cases


def test_istanbul_shaped_cobertura_with_doctype(tmp_path: Path) -> None:
    path = tmp_path / "cobertura-coverage.xml"
    path.write_text(ISTANBUL_COBERTURA)

    report = parse_cobertura(path)

    assert report.line_rate_pct == 82.5
    assert report.branch_rate_pct == 75.0
    assert (report.lines_valid, report.lines_covered) == (40, 33)


def test_cobertura_without_totals_counts_lines(tmp_path: Path) -> None:
    path = tmp_path / "old.xml"
    path.write_text(OLD_COBERTURA)

    report = parse_cobertura(path)

    assert (report.lines_valid, report.lines_covered) == (4, 2)
    assert report.line_rate_pct == 50.0
    assert report.branch_rate_pct == 25.0


def test_sarif_security_severity_suppressions_and_defaults(tmp_path: Path) -> None:
    path = tmp_path / "codeql.sarif"
    path.write_text(json.dumps(CODEQL_SARIF))

    report = parse_sarif(path)

    assert report.tool == "CodeQL, eslint"
    # CodeQL rates security; eslint's result has only a level (none given → warning).
    assert report.by_severity == {"high": 1, "medium": 1, "low": 0}
    assert report.by_level == {"error": 1, "warning": 2, "note": 0}
    assert report.top[0] == "high js/sql-injection src/db.js:42 query built from user input"
    assert report.top[-1] == "warning ? no level"


def test_sarif_findings_are_capped(tmp_path: Path) -> None:
    results = [{"ruleId": f"R{i}", "level": "note", "message": {"text": "x"}} for i in range(50)]
    results.append({"ruleId": "BIG", "level": "error", "message": {"text": "y" * 5000}})
    path = tmp_path / "many.sarif"
    path.write_text(json.dumps({"version": "2.1.0", "runs": [{"results": results}]}))

    report = parse_sarif(path)

    assert report.total == 51
    assert report.tool == "unknown"
    assert len(report.top) == MAX_LISTED
    assert report.top[0].startswith("error BIG")  # the tool's own level, not "high"
    assert len(report.top[0]) <= 300


def test_report_error_is_a_value_error() -> None:
    error = ReportError(Path("r.xml"), "bad\nthing")

    assert isinstance(error, ValueError)
    assert str(error) == "r.xml: bad thing"


def test_clean_sarif_has_no_findings(tmp_path: Path) -> None:
    path = tmp_path / "clean.sarif"
    path.write_text(textwrap.dedent('{"version": "2.1.0", "runs": [{"results": []}]}'))

    report = parse_sarif(path)

    assert report.total == report.high == 0
    assert report.top == []


def test_mypy_junit_names_the_first_error_not_its_generic_message(tmp_path: Path) -> None:
    (tmp_path / "api.py").write_text('def count() -> int:\n    return "three"\n')
    report = tmp_path / "mypy.xml"
    argv = [sys.executable, "-m", "mypy", "--junit-format=per_file", f"--junit-xml={report}"]
    subprocess.run(
        [*argv, "--cache-dir", str(tmp_path / "cache"), "api.py"],
        cwd=tmp_path,
        capture_output=True,
        timeout=TOOL_TIMEOUT_S,
        check=False,
    )

    junit = parse_junit(report)

    assert junit.failures == 1
    [case] = junit.failed_cases
    assert "api.py:2: error: Incompatible return value type" in case, case
    assert "mypy produced messages" not in case
