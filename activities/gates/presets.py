"""Gate presets: the default checks of each phase for a Python or a Node project.

Python: what imports the target's code runs with ``{python}``, the task environment's
interpreter (``activities/environments.py``: the target's dependencies, plus pytest and
coverage): compile, import, the tests under coverage, the service. What only reads the
code runs with ``{worker_python}``, implflow's own environment: ruff, bandit, and mypy,
which gets ``--python-executable {python}`` so it resolves the target's imports from the
task environment. The target's code runs from its checkout (the repository root, and
``src/`` for a src layout, on ``sys.path``). Node tools run from the project's own
``node_modules/.bin`` (``npm ci`` first). The service command is detected from the files
(``services.py``).

Which phase checks what:

======== ================================================================================
review   ``.implflow/review.md`` exists and has no unanswered ``[blocking]`` open question
design   ``.implflow/design.md`` exists; the OpenAPI contract (``openapi.yaml``) is valid; a
         service command is found or proposed (``.implflow/service.toml``)
implement the code compiles and imports (python) / builds (node); the tests pass
validate lint (no findings), types (no errors), security scan (no high findings)
optimize load probe: no regression against the baseline passed in (p95, req/s within 30 %)
test     every test passes (at least one ran), line coverage ≥ the threshold (80 %)
document README changed against ``base_ref``; docstring coverage ≥ 80 % (python)
verify   load probe meets p95 / req/s / RSS / CPU / error-rate targets; security scan clean
======== ================================================================================

The review file's format: a heading ``## Open questions`` followed by list items; an
item starting with ``[blocking]`` is answered once it (or an indented line or sub-item
under it) holds ``Answer:`` followed by text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from activities.environments import read_recipe
from activities.gates.schema import CheckConfig, CheckLimits, ServiceConfig
from activities.gates.services import (
    DetectedService,
    detect_node_service,
    detect_python_service,
    django_settings_module,
    python_packages,
)
from implflow.layout import API_CONTRACT, API_CONTRACT_CANDIDATES, DESIGN_DOC, REVIEW_DOC
from implflow.models import ProjectKind

__all__ = ["OPENAPI_CANDIDATES", "Preset", "detect_kind", "preset_for", "python_packages"]

OPENAPI_CANDIDATES = API_CONTRACT_CANDIDATES
"""Where the design gate looks for the contract (``implflow/layout.py``): the first present."""

README_NAMES = ["README.md", "README.rst", "README.txt", "README"]
_SKIP_DIRS = r"(^|/)(\.git|\.venv|venv|node_modules|\.implflow|build|dist)(/|$)"


@dataclass(frozen=True)
class Preset:
    """A preset: checks per phase and, when it can be guessed, how to start the service."""

    phases: dict[str, list[CheckConfig]] = field(default_factory=dict)
    service: ServiceConfig | None = None
    service_source: str = ""
    """What the service command was detected from (``detected: FastAPI app app.main:app``)."""


def detect_kind(workdir: Path) -> ProjectKind:
    """python (pyproject.toml, setup.py, setup.cfg), node (package.json), else python for a
    repository whose only metadata is ``requirements*.txt`` (or ``requirements/*.txt``: the
    files the task environment installs from), else none."""
    if any((workdir / name).is_file() for name in ("pyproject.toml", "setup.py", "setup.cfg")):
        return "python"
    if (workdir / "package.json").is_file():
        return "node"
    requirements = [*workdir.glob("requirements*.txt"), *workdir.glob("requirements/*.txt")]
    if any(path.is_file() for path in requirements):
        return "python"
    return "none"


def preset_for(kind: ProjectKind, workdir: Path) -> Preset:
    """The preset of ``kind`` for the project in ``workdir`` (``none``: no checks)."""
    if kind == "python":
        return python_preset(workdir)
    if kind == "node":
        return node_preset(workdir)
    return Preset()


# --------------------------------------------------------------------------- shared


def _review_and_design(workdir: Path) -> dict[str, list[CheckConfig]]:
    contract = next((c for c in OPENAPI_CANDIDATES if (workdir / c).is_file()), API_CONTRACT)
    return {
        "review": [CheckConfig(name="review", format="review", report=REVIEW_DOC)],
        "design": [
            CheckConfig(name="design-doc", format="exists", report=DESIGN_DOC),
            CheckConfig(name="contract", format="openapi", report=contract),
            # Found in the code or proposed by the agent; shown to the person who approves.
            CheckConfig(name="service", format="service"),
        ],
    }


_PYTEST_CONFIGS = ("pytest.ini", "pyproject.toml", "setup.cfg", "tox.ini")


def django_settings(workdir: Path, declared: frozenset[str]) -> list[str]:
    """pytest options for a Django project (``django`` declared, ``manage.py`` naming its
    settings module): its plugin (installed into the task environment), the settings, and
    Django's own test file names (``tests.py``, ``test*.py``) unless the project's pytest
    configuration names them."""
    settings = django_settings_module(workdir) if "django" in declared else None
    if settings is None:
        return []
    options = ["-p", "pytest_django", f"--ds={settings}"]
    if not any("python_files" in _text(workdir / name) for name in _PYTEST_CONFIGS):
        options += ["-o", "python_files=test*.py *_test.py tests.py"]
    return options


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[:200_000]
    except OSError:
        return ""


def _readme(workdir: Path) -> CheckConfig:
    present = [name for name in README_NAMES if (workdir / name).exists()]
    return CheckConfig(name="readme", format="changed", paths=present or ["README.md"])


def _probes() -> dict[str, CheckConfig]:
    return {
        # The implement round measures the service so optimize has a baseline to beat.
        "implement": CheckConfig(name="load", format="loadprobe", against="measure", timeout_s=300),
        "optimize": CheckConfig(name="load", format="loadprobe", against="baseline", timeout_s=300),
        "verify": CheckConfig(name="load", format="loadprobe", against="thresholds", timeout_s=300),
    }


# --------------------------------------------------------------------------- python


def python_preset(workdir: Path) -> Preset:
    """ruff (SARIF), mypy (JUnit), bandit (SARIF), pytest (JUnit) + coverage (Cobertura)."""
    py = "{python}"  # the task environment: the target's packages import
    tool = "{worker_python}"  # implflow's environment: tools that only read the code
    packages, src_layout = python_packages(workdir)
    targets = [f"src/{p}" if src_layout else p for p in packages] or ["."]
    env = {"PYTHONPATH": "src"} if src_layout else {}
    source = ",".join(targets)

    recipe = read_recipe(workdir)
    django = django_settings(workdir, recipe.declared)

    def tests(name: str, min_tests: int) -> CheckConfig:
        return CheckConfig(
            name=name,
            format="junit",
            argv=[
                py,
                "-m",
                "coverage",
                "run",
                "--data-file={tmp}/.coverage",
                f"--source={source}",
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                *django,
                "--junitxml={report}",
            ],
            report="{report_dir}/junit.xml",
            env=env,
            requires=["pytest", "coverage"],
            install="pip install pytest coverage",
            thresholds=CheckLimits(max_failures=0, min_tests=min_tests),
        )

    coverage = CheckConfig(
        name="coverage",
        format="cobertura",
        argv=[py, "-m", "coverage", "xml", "-q", "--data-file={tmp}/.coverage", "-o", "{report}"],
        report="{report_dir}/coverage.xml",
        timeout_s=120,
        requires=["coverage"],
        install="pip install coverage",
    )
    ruff = CheckConfig(
        name="ruff",
        format="sarif",
        argv=[
            tool,
            "-m",
            "ruff",
            "check",
            "--no-cache",
            "--output-format=sarif",
            "--output-file={report}",
            ".",
        ],
        report="{report_dir}/ruff.sarif",
        timeout_s=300,
        requires=["ruff"],
        install="pip install ruff",
        thresholds=CheckLimits(max_findings=0),
        scope="changed",  # what the task touched is clean; the rest of the repo is not its own
    )
    mypy = CheckConfig(
        name="mypy",
        format="junit",
        argv=[
            tool,
            "-m",
            "mypy",
            "--python-executable={python}",
            "--junit-xml={report}",
            "--junit-format=per_file",  # one case per file with messages: each one is named
            # A dependency without type information is not the task's mistake.
            "--disable-error-code=import-untyped",
            "--cache-dir={cache_dir}/mypy",
            *targets,
        ],
        report="{report_dir}/mypy.xml",
        env=env,
        requires=["mypy"],
        install="pip install mypy",
        thresholds=CheckLimits(max_failures=0, min_tests=0),
    )
    bandit = CheckConfig(
        name="bandit",
        format="sarif",
        argv=[
            tool,
            "-m",
            "bandit",
            "-q",
            "-r",
            "-f",
            "sarif",
            "-o",
            "{report}",
            "-x",
            "./tests,./test,./.venv,./venv,./node_modules,./.implflow",
            *targets,
        ],
        report="{report_dir}/bandit.sarif",
        timeout_s=300,
        requires=["bandit", "sarif_om"],
        install="pip install 'bandit[sarif]'",
        thresholds=CheckLimits(max_high=0),
    )
    implement = [
        CheckConfig(
            name="compile",
            format="exit-code",
            argv=[py, "-m", "compileall", "-q", "-x", _SKIP_DIRS, "."],
            timeout_s=300,
        )
    ]
    if packages:
        implement.append(
            CheckConfig(
                name="import",
                format="exit-code",
                argv=[py, "-c", "import " + ", ".join(packages)],
                env=env,
                timeout_s=120,
            )
        )
    implement.append(tests("tests", min_tests=0))
    probes = _probes()
    phases = {
        **_review_and_design(workdir),
        "implement": [*implement, probes["implement"]],
        "validate": [ruff, mypy, bandit],
        "optimize": [probes["optimize"]],
        "test": [tests("tests", min_tests=1), coverage],
        "document": [
            _readme(workdir),
            CheckConfig(name="docstrings", format="docstrings", paths=targets),
        ],
        "verify": [probes["verify"], bandit],
    }
    return _with_service(phases, detect_python_service(workdir, recipe.declared))


def _with_service(phases: dict[str, list[CheckConfig]], found: DetectedService | None) -> Preset:
    if found is None:
        return Preset(phases=phases)  # nothing to guess from: design proposes a command
    service = ServiceConfig(command=found.command, env=found.env, health_path=found.health_path)
    return Preset(phases=phases, service=service, service_source=f"detected: {found.source}")


# --------------------------------------------------------------------------- node


def _package_json(workdir: Path) -> dict[str, object]:
    try:
        data = json.loads((workdir / "package.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def node_preset(workdir: Path) -> Preset:
    """eslint (SARIF), tsc --noEmit (exit code), vitest or jest (JUnit + Cobertura)."""
    package = _package_json(workdir)
    deps: set[str] = set()
    for key in ("dependencies", "devDependencies"):
        section = package.get(key)
        if isinstance(section, dict):
            deps.update(str(name) for name in section)
    scripts = package.get("scripts")
    scripts = scripts if isinstance(scripts, dict) else {}

    def bin_(tool: str) -> str:
        return f"node_modules/.bin/{tool}"

    eslint = CheckConfig(
        name="eslint",
        format="sarif",
        argv=[
            bin_("eslint"),
            "--format",
            "@microsoft/eslint-formatter-sarif",
            "--output-file",
            "{report}",
            ".",
        ],
        report="{report_dir}/eslint.sarif",
        timeout_s=300,
        install="npm install --save-dev eslint @microsoft/eslint-formatter-sarif",
        # eslint rates its own findings: severity 2 is SARIF level "error", which fails.
        thresholds=CheckLimits(max_errors=0),
        scope="changed",
    )
    tsc = CheckConfig(
        name="tsc",
        format="exit-code",
        argv=[bin_("tsc"), "--noEmit"],
        timeout_s=300,
        install="npm install --save-dev typescript",
    )
    typed = (workdir / "tsconfig.json").is_file()

    if "vitest" in deps:
        runner = CheckConfig(
            name="tests",
            format="junit",
            argv=[
                bin_("vitest"),
                "run",
                "--reporter=junit",
                "--outputFile={report}",
                "--coverage",
                "--coverage.reporter=cobertura",
                "--coverage.reportsDirectory={report_dir}/coverage",
            ],
            report="{report_dir}/junit.xml",
            install="npm install --save-dev vitest @vitest/coverage-v8",
            thresholds=CheckLimits(max_failures=0, min_tests=1),
        )
    else:
        runner = CheckConfig(
            name="tests",
            format="junit",
            argv=[
                bin_("jest"),
                "--ci",
                "--coverage",
                "--coverageReporters=cobertura",
                "--coverageDirectory={report_dir}/coverage",
                "--reporters=default",
                "--reporters=jest-junit",
            ],
            env={"JEST_JUNIT_OUTPUT_FILE": "{report}"},
            report="{report_dir}/junit.xml",
            install="npm install --save-dev jest jest-junit",
            thresholds=CheckLimits(max_failures=0, min_tests=1),
        )
    coverage = CheckConfig(
        name="coverage",
        format="cobertura",
        report="{report_dir}/coverage/cobertura-coverage.xml",
    )
    # Gates run in a fresh checkout: install the project's own dependencies first (lockfile
    # when there is one; no install scripts), and build before a probe needs `npm start`.
    setup: list[CheckConfig] = []
    if not (workdir / "node_modules" / ".bin").is_dir():
        lock = (workdir / "package-lock.json").is_file()
        setup.append(
            CheckConfig(
                name="deps",
                format="exit-code",
                argv=[
                    "npm",
                    "ci" if lock else "install",
                    "--no-audit",
                    "--no-fund",
                    "--ignore-scripts",
                ],
                timeout_s=600,
                install="install Node.js and npm on the worker",
                setup=True,  # an install that fails is the environment's, not the agent's
            )
        )
    build = [CheckConfig(name="build", format="exit-code", argv=["npm", "run", "build"])]
    built = [*setup, *(build if "build" in scripts else [])]
    implement: list[CheckConfig] = [*built, *([tsc] if typed else [])]
    implement.append(runner.model_copy(update={"thresholds": CheckLimits(max_failures=0)}))
    probes = _probes()
    phases = {
        **_review_and_design(workdir),
        "implement": [*implement, probes["implement"]],
        "validate": [*setup, eslint, *([tsc] if typed else [])],
        "optimize": [*built, probes["optimize"]],
        "test": [*setup, runner, coverage],
        "document": [_readme(workdir)],
        "verify": [*built, probes["verify"], eslint],
    }
    return _with_service(phases, detect_node_service(workdir))
