"""Gate configuration: detection, presets, ``.implflow/gates.toml`` over them, bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from activities.gates.checks.docstrings import count_docstrings
from activities.gates.checks.review import open_questions
from activities.gates.config import GateConfigError, load_gate_config
from activities.gates.presets import detect_kind
from implflow.layout import GATES_FILE
from tests.helpers.gates import copy_example


@pytest.fixture
def todo_repo(tmp_path: Path) -> Path:
    return copy_example(tmp_path)


def write_config(repo: Path, text: str) -> None:
    path = repo / GATES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_python_preset_detected_without_a_config_file(todo_repo: Path) -> None:
    config = load_gate_config(todo_repo)
    assert config.source == "preset:python"
    assert config.kind == "python"
    names = {phase: [c.name for c in config.checks_for(phase)] for phase in config.phases}
    assert names == {
        "review": ["review"],
        "design": ["design-doc", "contract", "service"],
        "implement": ["compile", "import", "tests", "load"],
        "validate": ["ruff", "mypy", "bandit"],
        "optimize": ["load"],
        "test": ["tests", "coverage"],
        "document": ["readme", "docstrings"],
        "verify": ["load", "bandit"],
    }
    # Tools that only read the code run from the worker's own interpreter; what imports the
    # target's code (tests, mypy's view of its packages, the service) from the task's.
    ruff, mypy, _ = config.checks_for("validate")
    assert ruff.argv is not None
    assert ruff.argv[:3] == ["{worker_python}", "-m", "ruff"]
    assert mypy.argv is not None
    assert mypy.argv[:4] == ["{worker_python}", "-m", "mypy", "--python-executable={python}"]
    tests = config.checks_for("test")[0]
    assert tests.argv is not None
    assert tests.argv[:3] == ["{python}", "-m", "coverage"]
    # The service command is found in todo_service/__main__.py.
    assert config.service is not None
    assert config.service.command == ["{python}", "-m", "todo_service", "--port", "{port}"]
    assert config.service_source == "detected: package todo_service with __main__.py"
    assert config.checks_for("no-such-phase") == []


@pytest.mark.parametrize("requirements", ["requirements.txt", "requirements/base.txt"])
def test_a_repository_with_only_requirements_files_is_python(
    tmp_path: Path, requirements: str
) -> None:
    # No pyproject.toml, setup.py or setup.cfg: the requirements files are its metadata (the
    # task environment installs them), so the Python preset applies, not "no checks at all".
    assert detect_kind(tmp_path) == "none"
    (tmp_path / "requirements").mkdir()
    (tmp_path / "requirements" / "notes.md").write_text("not a requirements file\n")
    assert detect_kind(tmp_path) == "none"
    (tmp_path / requirements).write_text("flask==3.1.3\n")
    (tmp_path / "src" / "svc").mkdir(parents=True)
    (tmp_path / "src" / "svc" / "__init__.py").write_text("")
    assert detect_kind(tmp_path) == "python"
    config = load_gate_config(tmp_path)
    assert (config.source, config.kind) == ("preset:python", "python")
    tests = config.checks_for("test")[0]
    assert tests.argv is not None and "--source=src/svc" in tests.argv
    assert tests.env == {"PYTHONPATH": "src"}
    (tmp_path / "package.json").write_text("{}")  # a package.json still says node
    assert detect_kind(tmp_path) == "node"


def test_node_preset_in_the_same_shape(tmp_path: Path) -> None:
    package = {
        "name": "api",
        "scripts": {"start": "node server.js", "build": "tsc"},
        "devDependencies": {"vitest": "^2", "eslint": "^9", "typescript": "^5"},
    }
    (tmp_path / "package.json").write_text(json.dumps(package))
    (tmp_path / "tsconfig.json").write_text("{}")
    assert detect_kind(tmp_path) == "node"
    config = load_gate_config(tmp_path)
    assert config.source == "preset:node"
    # A fresh checkout has no node_modules: every tool phase installs the dependencies first
    # (from the lockfile when there is one), and the probes build before `npm start`.
    assert [c.name for c in config.checks_for("validate")] == ["deps", "eslint", "tsc"]
    implement = config.checks_for("implement")
    assert [c.name for c in implement] == ["deps", "build", "tsc", "tests", "load"]
    assert implement[0].argv == ["npm", "install", "--no-audit", "--no-fund", "--ignore-scripts"]
    assert [c.name for c in config.checks_for("verify")] == ["deps", "build", "load", "eslint"]
    (tmp_path / "package-lock.json").write_text("{}")
    assert load_gate_config(tmp_path).checks_for("test")[0].argv[:2] == ["npm", "ci"]  # type: ignore[index]
    (tmp_path / "node_modules" / ".bin").mkdir(parents=True)  # already installed: no deps step
    assert [c.name for c in load_gate_config(tmp_path).checks_for("validate")] == ["eslint", "tsc"]
    tests, coverage = config.checks_for("test")[1:]
    assert tests.argv is not None
    assert tests.argv[0] == "node_modules/.bin/vitest"
    assert coverage.format == "cobertura"
    assert config.service is not None
    assert config.service.command == ["npm", "start"]

    package["devDependencies"] = {"jest": "^29", "jest-junit": "^16"}
    (tmp_path / "package.json").write_text(json.dumps(package))
    jest = load_gate_config(tmp_path).checks_for("test")[0]
    assert jest.argv is not None
    assert jest.argv[0] == "node_modules/.bin/jest"
    assert jest.env["JEST_JUNIT_OUTPUT_FILE"] == "{report}"


def test_unknown_project_kind_has_no_checks(tmp_path: Path) -> None:
    config = load_gate_config(tmp_path)
    assert (config.kind, config.source, config.phases) == ("none", "none", {})


def test_config_file_replaces_named_phases_and_keeps_the_rest(todo_repo: Path) -> None:
    write_config(
        todo_repo,
        """
[service]
paths = ["/todos"]
duration_s = 3

[[phases.test.checks]]
name = "unit"
argv = ["{python}", "-m", "pytest", "-q", "--junitxml={report}"]
report = "{report_dir}/unit.xml"
format = "junit"
thresholds = { min_tests = 2 }
""",
    )
    config = load_gate_config(todo_repo)
    assert config.source == f"{GATES_FILE} over preset:python"
    assert [c.name for c in config.checks_for("test")] == ["unit"]
    assert config.checks_for("test")[0].thresholds.min_tests == 2
    assert [c.name for c in config.checks_for("validate")] == ["ruff", "mypy", "bandit"]
    # [service] keys merge over the preset's guess.
    assert config.service is not None
    assert config.service.paths == ["/todos"]
    assert config.service.duration_s == 3
    assert config.service.command is not None
    assert config.service.command[-1] == "{port}"


def test_kind_none_turns_the_preset_off(todo_repo: Path) -> None:
    write_config(
        todo_repo,
        'kind = "none"\n[[phases.test.checks]]\nname = "t"\n'
        'format = "exit-code"\nargv = ["true"]\n',
    )
    config = load_gate_config(todo_repo)
    assert config.source == GATES_FILE
    assert list(config.phases) == ["test"]


@pytest.mark.parametrize(
    ("text", "names"),
    [
        (
            '[[phases.test.checks]]\nname = "t"\nformat = "xunit"\nreport = "r.xml"\n',
            "phases.test.checks[0].format",
        ),
        (
            '[[phases.test.checks]]\nname = "t"\nformat = "junit"\nreport = "r"\ntimeout = 5\n',
            "phases.test.checks[0].timeout",
        ),
        ('[[phases.test.checks]]\nname = "t"\nformat = "junit"\n', "needs 'report'"),
        ('[[phases.test.checks]]\nname = "t"\nformat = "exit-code"\n', "needs 'argv'"),
        ("[service]\nduration_s = 0\n", "service.duration_s"),
        ('[service]\ncommand = "python -m app"\n', "service.command"),
        ('kind = "rust"\n', "kind"),
        ("colour = 1\n", "colour"),
        ('[[phases.test.checks]]\nname = "a b"\nformat = "exists"\nreport = "x"\n', "name"),
        ("[phases\n", "invalid TOML"),
    ],
)
def test_invalid_config_names_the_key(todo_repo: Path, text: str, names: str) -> None:
    write_config(todo_repo, text)
    with pytest.raises(GateConfigError) as caught:
        load_gate_config(todo_repo)
    message = str(caught.value)
    assert message.startswith(GATES_FILE)
    assert names in message
    assert "\n" not in message


def test_open_questions_marker_format() -> None:
    text = """# Review

## Requirements
- [blocking] not a question: outside the section

## Open questions
- [blocking] Which token lifetime?
  Answer: 15 minutes
- [blocking] Should logout revoke every session?
- [BLOCKING] Rate limits per user or per IP?
  - Answer: per IP
- Nice to have: audit log?
1. [blocking] Answer: is not an answer when empty?
   Answer:

## Risks
- [blocking] outside again
"""
    found = open_questions(text)
    assert [(blocking, answered) for _, blocking, answered in found] == [
        (True, True),
        (True, False),
        (True, True),
        (False, False),
        (True, True),
    ]
    assert found[1][0] == "Should logout revoke every session?"


def test_docstring_counter(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text(
        '"""Module."""\n\n'
        "class A:\n"
        '    """A."""\n\n'
        "    def f(self):\n        pass\n\n"
        "    def _private(self):\n        pass\n\n"
        "def g():\n"
        '    """G."""\n\n'
        "    def inner():\n        pass\n"
    )
    (tmp_path / "empty.py").write_text("")
    documented, total, missing = count_docstrings([tmp_path])
    assert (documented, total, missing) == (3, 4, ["m.A.f"])


def test_docstrings_are_not_counted_in_tests_and_migrations(tmp_path: Path) -> None:
    package = tmp_path / "polls"
    for name in ("migrations/0001_initial.py", "tests/test_views.py", "tests.py", "test_x.py"):
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text("class Migration:\n    pass\n")
    (package / "views.py").write_text('"""Views."""\n\ndef index():\n    """The index."""\n')
    assert count_docstrings([package]) == (2, 2, [])
    # A file named explicitly is counted whatever its name.
    assert count_docstrings([package / "tests.py"]) == (0, 2, ["tests.py", "tests.Migration"])
