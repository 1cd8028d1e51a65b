"""Judge docstring coverage: the share of documented modules, public classes and functions.

A small ``ast`` counter rather than ``interrogate``: interrogate prints a table and a badge
but no machine-readable report, so the gate would scrape text; this counter never imports
or runs the code and gives the exact figures.
"""

from __future__ import annotations

import ast
from pathlib import Path

from activities.gates.context import Evidence, GateContext
from activities.gates.results import judged
from activities.gates.schema import CheckConfig
from implflow.models import GateCheck, GateFigure

__all__ = ["DEFAULT_DOCSTRING_MIN_PCT", "MAX_SCANNED_FILES", "count_docstrings", "judge_docstrings"]

DEFAULT_DOCSTRING_MIN_PCT = 80.0
MAX_SCANNED_FILES = 5000


def count_docstrings(paths: list[Path]) -> tuple[int, int, list[str]]:
    """(documented, total, undocumented names) over modules, public classes and functions.

    Empty modules, names starting with ``_`` and functions nested in functions are not
    counted; a file that does not parse counts as one undocumented item.
    """
    documented = total = 0
    missing: list[str] = []
    files: list[Path] = []
    for path in paths:
        if path.is_file() and path.suffix == ".py":
            files.append(path)
        elif path.is_dir():
            files.extend(p for p in sorted(path.rglob("*.py")) if _documented_code(p, path))
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


_NOT_DOCUMENTED_CODE = frozenset({"__pycache__", "migrations", "tests", "test"})
"""Folders a package's documentation is not measured in: generated migrations and tests."""


def _documented_code(file: Path, root: Path) -> bool:
    """Whether a file found under ``root`` is code whose docstrings count (not a test)."""
    if _NOT_DOCUMENTED_CODE & set(file.relative_to(root).parts[:-1]):
        return False
    name = file.name
    return not (
        name.startswith("test_") or name.endswith("_test.py") or name in ("tests.py", "conftest.py")
    )


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


def judge_docstrings(check: CheckConfig, ctx: GateContext, evidence: Evidence) -> GateCheck:
    """Docstring coverage of the Python files under the check's ``paths`` (inside the checkout)."""
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
    figures: dict[str, GateFigure] = {
        "docstring_pct": pct,
        "documented": documented,
        "total": total,
    }
    rule = f"docstring_pct >= {minimum:g}"
    return judged(check, passed, summary, figures, rule, None, missing)
