"""Task environments: what a target declares, built once with uv, reused by hash.

The recipe tests read files only. The build tests run the real ``uv`` from the worker's
environment against PyPI (the FastAPI fixture's fastapi, uvicorn and httpx), with uv's
cache kept between sessions (``tests.fixtures.UV_CACHE``): the first session on a machine
downloads, later ones build from the cache in about a second.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest

from activities.environments import (
    MARKER,
    EnvironmentBuildError,
    EnvironmentStore,
    _cause,
    env_vars_for,
    prepare_environment,
    read_recipe,
)
from tests.fixtures import FASTAPI_NOTES, UV_CACHE, copy_repo, write_tree


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> EnvironmentStore:
    """Environments of this module's tests; uv's cache shared across sessions."""
    return EnvironmentStore(root=tmp_path_factory.mktemp("envs"), uv_cache=UV_CACHE)


# --------------------------------------------------------------------------- the recipe


def test_recipe_reads_runtime_test_extras_groups_and_requirement_files(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {
            "pyproject.toml": """
                [project]
                name = "My_Proj"
                version = "1"
                dependencies = ["fastapi>=0.100", "my-proj[tests]"]

                [project.optional-dependencies]
                tests = ["pytest-asyncio"]
                dev = ["black"]
                docs = ["sphinx"]

                [dependency-groups]
                lint = ["ruff"]
                test = [{include-group = "lint"}, "hypothesis"]
            """,
            "requirements.txt": """
                --index-url https://pypi.example/simple
                -r requirements/base.txt
                -e .
                ./libs/local
                requests==2.32.0  # pinned
            """,
            "requirements/base.txt": "-c ../constraints.txt\nidna\n",
            "constraints.txt": "idna<4\n",
        },
    )
    recipe = read_recipe(tmp_path)
    assert recipe.kind == "python"
    assert recipe.project == "my-proj"
    # The project itself never: it runs from the checkout.
    assert recipe.requirements == (
        "fastapi>=0.100",
        "black",
        "pytest-asyncio",
        "ruff",
        "hypothesis",
        "idna",
        "requests==2.32.0",
    )
    assert recipe.extras == ("dev", "tests")
    assert recipe.groups == ("test",)
    assert recipe.options == ("--index-url https://pypi.example/simple",)
    assert recipe.constraints == ("idna<4",)
    assert "sphinx" in recipe.declared and "fastapi" in recipe.declared
    assert recipe.sources == (
        "pyproject.toml",
        "requirements.txt",
        "requirements/base.txt",
        "constraints.txt",
    )
    assert recipe.needs_environment


def test_a_poetry_project_is_read_from_its_tool_poetry_tables(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {
            "pyproject.toml": """
                [tool.poetry]
                name = "url_shortener"
                version = "0.1.0"

                [tool.poetry.dependencies]
                python = "^3.11"
                flask = "^3.0"
                sqlalchemy = {version = "~2.0.30", extras = ["asyncio"]}
                redis = {version = "^5", optional = true}
                shared = {path = "../shared"}
                itsdangerous = "2.2.0"

                [tool.poetry.group.dev.dependencies]
                pytest = ">=8,<9"

                [tool.poetry.group.docs.dependencies]
                mkdocs = "*"

                [build-system]
                requires = ["poetry-core"]
                build-backend = "poetry.core.masonry.api"
            """,
        },
    )
    recipe = read_recipe(tmp_path)
    assert recipe.project == "url-shortener"
    assert recipe.requirements == (
        "flask>=3.0,<4",
        "sqlalchemy[asyncio]>=2.0.30,<2.1",
        "itsdangerous==2.2.0",
        "pytest>=8,<9",
    )
    assert {"flask", "redis", "shared", "mkdocs", "pytest"} <= recipe.declared
    assert "python" not in recipe.declared
    assert recipe.needs_environment


def test_setup_cfg_and_what_needs_no_environment(tmp_path: Path) -> None:
    cfg = write_tree(
        tmp_path / "cfg",
        {
            "setup.cfg": """
                [options]
                install_requires =
                    flask>=3

                [options.extras_require]
                test = pytest-flask
            """,
        },
    )
    assert read_recipe(cfg).requirements == ("flask>=3", "pytest-flask")
    # Only implflow's own gate tools declared: the worker's interpreter serves.
    tools = write_tree(
        tmp_path / "tools",
        {
            "pyproject.toml": """
                [project]
                name = "t"
                dependencies = []
                [project.optional-dependencies]
                dev = ["pytest>=8", "coverage>=7"]
            """
        },
    )
    assert not read_recipe(tools).needs_environment
    node = write_tree(tmp_path / "node", {"package.json": "{}"})
    assert read_recipe(node).kind == "node"
    assert not read_recipe(node).needs_environment


def test_the_key_follows_what_is_installed_not_the_rest_of_the_file(tmp_path: Path) -> None:
    base = '[project]\nname = "k"\ndependencies = ["fastapi"]\n'
    (tmp_path / "pyproject.toml").write_text(base)
    first = read_recipe(tmp_path).key()
    (tmp_path / "pyproject.toml").write_text(base + "\n[tool.ruff]\nline-length = 99\n")
    assert read_recipe(tmp_path).key() == first  # a lint setting builds nothing new
    (tmp_path / "pyproject.toml").write_text(base.replace('"fastapi"', '"fastapi", "httpx"'))
    second = read_recipe(tmp_path).key()
    assert second != first
    (tmp_path / "uv.lock").write_text("version = 1\n")
    assert read_recipe(tmp_path).key() not in (first, second)


def test_the_installers_cause_in_one_line() -> None:
    output = (
        "Using Python 3.11.7 environment at: /e\n"
        "error: No solution found when resolving dependencies:\n"
        "  cause: Because nope was not found in the package registry and you require nope==1.0,"
        " we can conclude that your requirements are unsatisfiable.\n"
    )
    assert _cause(output) == (
        "No solution found when resolving dependencies: Because nope was not found in the "
        "package registry and you require nope==1.0, we can conclude that your requirements "
        "are unsatisfiable."
    )
    assert _cause("something broke\n") == "something broke"


def test_env_vars_for_node_and_an_unbuilt_python_env(
    tmp_path: Path, store: EnvironmentStore
) -> None:
    node = write_tree(tmp_path / "node", {"package.json": "{}"})
    assert env_vars_for(node, store) == {}
    (node / "node_modules" / ".bin").mkdir(parents=True)
    path = env_vars_for(node, store)["PATH"]
    assert path.split(os.pathsep)[0] == str(node / "node_modules" / ".bin")
    python = write_tree(tmp_path / "py", {"requirements.txt": "never-built-implflow\n"})
    assert env_vars_for(python, store) == {}  # nothing is built just to set a PATH


# --------------------------------------------------------------------------- building


async def test_fastapi_environment_is_built_once_and_reused(
    tmp_path: Path, store: EnvironmentStore
) -> None:
    repo = copy_repo(FASTAPI_NOTES, tmp_path / "notes")
    log = tmp_path / "env.log"
    first = await prepare_environment(repo, store, log_path=log)
    assert first.built and first.path is not None
    assert first.path == store.root / first.key
    assert (first.path / MARKER).is_file()
    marker = json.loads((first.path / MARKER).read_text())
    assert marker["sources"] == ["pyproject.toml"]
    probe = subprocess.run(
        [
            first.python,
            "-c",
            "import sys, fastapi, uvicorn, httpx, pytest, coverage; print(sys.prefix)",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr
    assert Path(probe.stdout.strip()) == first.path  # the task's own interpreter, isolated
    if importlib.util.find_spec("fastapi") is None:  # the point: the worker lacks them
        assert "fastapi" not in os.environ.get("PYTHONPATH", "")

    # A second task on the same repository (another checkout) builds nothing.
    other = copy_repo(FASTAPI_NOTES, tmp_path / "notes-2")
    mtime = (first.path / MARKER).stat().st_mtime_ns
    size = log.stat().st_size
    again = await prepare_environment(other, store, log_path=log)
    assert (again.built, again.path, again.key) == (False, first.path, first.key)
    assert (first.path / MARKER).stat().st_mtime_ns == mtime
    assert log.stat().st_size == size  # uv never ran

    # The agent's own commands get the same environment on PATH.
    env = env_vars_for(other, store)
    assert env["VIRTUAL_ENV"] == str(first.path)
    assert env["PATH"].split(os.pathsep)[0] == str(first.path / "bin")


async def test_two_gates_at_once_build_one_environment(
    tmp_path: Path, store: EnvironmentStore
) -> None:
    repo = write_tree(
        tmp_path / "small",
        {"pyproject.toml": '[project]\nname = "s"\ndependencies = ["iniconfig", "packaging"]\n'},
    )
    envs = await asyncio.gather(
        prepare_environment(repo, store, log_path=tmp_path / "a.log"),
        prepare_environment(repo, store, log_path=tmp_path / "b.log"),
    )
    assert sorted(env.built for env in envs) == [False, True]
    assert envs[0].path == envs[1].path


async def test_an_install_that_fails_says_why_and_leaves_nothing(
    tmp_path: Path, store: EnvironmentStore
) -> None:
    repo = write_tree(
        tmp_path / "broken",
        {
            "pyproject.toml": """
                [project]
                name = "broken"
                dependencies = ["this-package-does-not-exist-implflow==1.0"]
            """
        },
    )
    with pytest.raises(EnvironmentBuildError) as caught:
        await prepare_environment(repo, store, log_path=tmp_path / "uv.log")
    message = str(caught.value)
    assert message.startswith("dependencies could not be installed (installing the dependencies)")
    assert "this-package-does-not-exist-implflow" in message
    assert "\n" not in message
    assert "this-package-does-not-exist-implflow" in caught.value.tail
    assert not (store.root / read_recipe(repo).key()).exists()
