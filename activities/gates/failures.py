"""Who can fix a failed check: the agent, a person (the environment), or nobody (noise).

Judges set the class where the figures say it (a failing test, a finding, coverage below
target: ``agent``; a target even a trivial endpoint on this machine misses:
``environment``). What only a tool's output tells — a test module that cannot be imported
because a package is missing, a type checker that cannot find a library, a port already
taken — is read here from the check's log and report, after the judge, by
:func:`classify`, which also rewrites the check's summary to the cause in one line
(``tests could not be collected: ModuleNotFoundError: No module named 'fastapi'``) instead
of the report's "collection failure".

A missing module is ``environment`` when it is third-party (not the repository's own code)
and either the project declares it (it should have been installed) or no environment was
built from the project's metadata; it is the agent's to fix when the environment *was*
built from the metadata and the project does not declare it: the agent imported a package
without adding it to the dependencies (the next gate's environment, keyed by the
dependencies, will have it). A missing module of the repository's own is the agent's.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

from activities.gates.results import one_line
from implflow.models import FailureClass, GateCheck

__all__ = ["Cause", "ModuleOwner", "classify", "find_cause"]

_MAX_SCAN_BYTES = 512 * 1024
_MISSING_MODULE = re.compile(r"\b(ModuleNotFoundError|ImportError): No module named '([\w.]+)'")
_NO_MODULE_TO_RUN = re.compile(r"^\S*python[\d.]*: No module named ([\w.]+)\s*$", re.MULTILINE)
"""``python -m uvicorn`` where uvicorn is not installed: no exception, no quotes."""
_CANNOT_IMPORT = re.compile(r"\bImportError: cannot import name '(\w+)' from '([\w.]+)'")
_MYPY_MISSING = re.compile(
    r'error: Cannot find implementation or library stub for module named "([\w.]+)"'
)
_PORT_TAKEN = re.compile(r"(Address already in use|\[Errno 98\]|EADDRINUSE)")
_COLLECTING = re.compile(r"(ERROR collecting|collection failure|errors during collection)")
_FIRST_E_LINE = re.compile(r"^E\s+(\w+(?:Error|Exception)\b.*)$", re.MULTILINE)
_UNRECOGNIZED = re.compile(r"error: unrecognized arguments: (.+)")


@dataclass(frozen=True)
class ModuleOwner:
    """What tells the repository's own modules from third-party ones, and declared from not."""

    own: frozenset[str]
    """Top-level names the checkout provides (packages, modules, test directories)."""
    declared: frozenset[str]
    """Normalized distribution names the project's metadata declares anywhere."""
    from_metadata: bool
    """An environment was built from the metadata: an undeclared package is the agent's."""

    def missing(self, module: str) -> tuple[FailureClass, str]:
        """The class of ``No module named <module>`` and a hint for the one-line cause."""
        top = module.split(".")[0]
        if top in self.own:
            return "agent", ""
        if top in sys.stdlib_module_names:
            return "environment", " (a standard-library module the worker's Python lacks)"
        if _distributions(top) & self.declared:
            return (
                "environment",
                " (declared by the project, not installed in the task environment)",
            )
        if self.from_metadata:
            return "agent", " (the project does not declare it: add it to its dependencies)"
        return "environment", " (not installed in the task environment)"


_IMPORT_ALIASES = {
    "yaml": "pyyaml",
    "PIL": "pillow",
    "cv2": "opencv-python",
    "sklearn": "scikit-learn",
    "bs4": "beautifulsoup4",
    "dateutil": "python-dateutil",
    "jwt": "pyjwt",
    "dotenv": "python-dotenv",
    "jose": "python-jose",
    "multipart": "python-multipart",
    "psycopg2": "psycopg2-binary",
}
"""Import names whose distribution is named otherwise (the common ones)."""


def _distributions(module: str) -> set[str]:
    """Distribution names (normalized) that may provide the top-level ``module``."""
    name = re.sub(r"[-_.]+", "-", module).lower()
    names = {name, f"py{name}", f"python-{name}", f"{name}-python"}
    if module in _IMPORT_ALIASES:
        names.add(_IMPORT_ALIASES[module])
    return names


@dataclass(frozen=True)
class Cause:
    """A failure's class and its cause in one line."""

    failure_class: FailureClass
    summary: str


def find_cause(check_name: str, text: str, owner: ModuleOwner) -> Cause | None:
    """The cause a tool's output shows, when it shows one this module knows."""
    collecting = bool(_COLLECTING.search(text))
    missing = _MISSING_MODULE.search(text)
    if missing:
        failure_class, hint = owner.missing(missing.group(2))
        what = "tests could not be collected" if collecting else f"{check_name} failed"
        return Cause(
            failure_class, f"{what}: {missing.group(1)}: No module named '{missing.group(2)}'{hint}"
        )
    to_run = _NO_MODULE_TO_RUN.search(text)
    if to_run:
        failure_class, hint = owner.missing(to_run.group(1))
        return Cause(
            failure_class, f"{check_name} failed: python -m {to_run.group(1)}: not installed{hint}"
        )
    mypy = _MYPY_MISSING.search(text)
    if mypy:
        failure_class, hint = owner.missing(mypy.group(1))
        return Cause(
            failure_class,
            f"{check_name} cannot find module '{mypy.group(1)}'{hint}",
        )
    unrecognized = _UNRECOGNIZED.search(text)
    if unrecognized and "pytest" in text:
        return Cause(
            "environment",
            f"{check_name}: pytest does not know {unrecognized.group(1).strip()} "
            "(a plugin the configuration needs is not installed)",
        )
    if _PORT_TAKEN.search(text):
        return Cause("environment", f"{check_name}: a port it needs is already in use")
    if collecting:
        error = _FIRST_E_LINE.search(text)
        cannot = _CANNOT_IMPORT.search(text)
        line = error.group(1) if error else cannot.group(0) if cannot else None
        if line:
            return Cause("agent", f"tests could not be collected: {one_line(line)}")
    return None


def classify(
    check: GateCheck, log: Path | None, report: Path | None, owner: ModuleOwner
) -> GateCheck:
    """``check`` with the class and one-line cause its tool's output shows (as it is when
    passed, already ``environment``/``noise``, or when the output shows nothing known)."""
    if check.passed or check.failure_class != "agent":
        return check
    text = "\n".join(_read(path) for path in (log, report) if path is not None)
    if not text:
        return check
    cause = find_cause(check.name, text, owner)
    if cause is None:
        return check
    return check.model_copy(
        update={"failure_class": cause.failure_class, "summary": one_line(cause.summary)[:300]}
    )


def _read(path: Path) -> str:
    try:
        with path.open("rb") as fh:
            return fh.read(_MAX_SCAN_BYTES).decode("utf-8", "replace")
    except OSError:
        return ""
