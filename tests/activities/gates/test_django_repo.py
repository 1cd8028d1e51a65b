"""A Django project as users have them: tests in ``polls/tests.py`` as ``TestCase``s, the
settings module named by ``manage.py``, dependencies only in ``requirements.txt``.

pytest alone collects no ``tests.py`` and cannot run a Django ``TestCase`` without
pytest-django: the gate used to pass implement on "0 of 0" and fail test on "0 tests ran",
an agent's repair round for nothing. The task environment gets pytest-django from PyPI
(uv's cache kept between sessions, ``tests.fixtures.UV_CACHE``).
"""

from __future__ import annotations

from pathlib import Path

from activities.environments import EnvironmentStore, read_recipe
from activities.gates.presets import django_settings
from activities.gates.runner import run_gate
from implflow.models import Thresholds
from tests.fixtures import DJANGO_POLLS, UV_CACHE, copy_repo, write_tree


def test_django_projects_run_with_their_plugin_settings_and_test_files(tmp_path: Path) -> None:
    repo = copy_repo(DJANGO_POLLS, tmp_path / "polls")
    assert django_settings(repo, read_recipe(repo).declared) == [
        *("-p", "pytest_django", "--ds=mysite.settings"),
        *("-o", "python_files=test*.py *_test.py tests.py"),
    ]
    assert "pytest-django" in read_recipe(repo).tools
    # The project's own pytest configuration names its test files: kept.
    write_tree(repo, {"pytest.ini": "[pytest]\npython_files = check_*.py\n"})
    assert django_settings(repo, read_recipe(repo).declared) == [
        "-p",
        "pytest_django",
        "--ds=mysite.settings",
    ]
    # Not a Django project: nothing changes.
    plain = write_tree(tmp_path / "plain", {"requirements.txt": "flask\n", "manage.py": ""})
    assert django_settings(plain, read_recipe(plain).declared) == []
    assert read_recipe(plain).tools == ("pytest", "coverage")


async def test_a_django_projects_tests_run_and_are_measured(tmp_path: Path) -> None:
    repo = copy_repo(DJANGO_POLLS, tmp_path / "polls")
    store = EnvironmentStore(root=tmp_path / "envs", uv_cache=UV_CACHE)

    verdict = await run_gate("test", repo, 1, Thresholds(), environments=store)

    checks = {c.name: c for c in verdict.checks}
    assert checks["tests"].passed, checks["tests"].summary
    assert (checks["tests"].figures["total"], checks["tests"].figures["passed"]) == (2, 2)
    assert checks["coverage"].passed, checks["coverage"].summary
    assert verdict.passed, verdict.failure_summary
