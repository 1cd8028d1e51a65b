"""An environment per task: the target's own dependencies, isolated, built once per recipe.

Gates run the target's tests, type check and service. With the worker's own interpreter a
FastAPI repository fails with ``ModuleNotFoundError: No module named 'fastapi'`` — nobody's
code is wrong, the packages are simply not there. So for a Python target the gates (and the
agent's own commands, through :func:`env_vars_for`) use a virtual environment built with
`uv <https://docs.astral.sh/uv/>`_ (the ``uv`` package from PyPI, installed with implflow:
nothing is downloaded at run time) from the target's own metadata.

What goes in (:func:`read_recipe`):

- ``[project.dependencies]``, the extras named ``test``/``tests``/``testing``/``dev``/
  ``develop``/``development`` (a self-reference such as ``myproj[test]`` is followed), the
  ``[dependency-groups]`` of those names (``include-group`` followed) and uv's legacy
  ``[tool.uv] dev-dependencies``; ``setup.cfg``'s ``install_requires`` and those extras;
- Poetry's ``[tool.poetry.dependencies]`` and its dev groups (``^``/``~`` constraints turned
  into PEP 440 ranges; optional, path, git and URL dependencies are declared, not installed);
- ``requirements*.txt`` at the root and ``requirements/*.txt`` (``-r`` and ``-c`` inside the
  checkout followed; index options kept);
- with a ``uv.lock``, exactly what it locks for those extras and groups (``uv export
  --frozen``): the lock, not a fresh resolution, decides the versions.

The project itself is never installed (editable or path requirements are dropped): the
gates run its code from the checkout (root, or ``src/`` on ``PYTHONPATH``), so one
environment serves every commit with the same dependencies. A target that declares no
dependency besides the gate tools gets no environment: the worker's interpreter serves.

**Cache.** The key is a hash of what decides the install — the requirement lines (or the
lock and the selected extras and groups), the worker's Python version and the gate tools'
versions — so an edit to ``[tool.ruff]`` builds nothing, a new dependency builds a new
environment, and a second task on the same repository builds nothing. Environments live in
``<data_dir>/envs/<key>/`` (``Settings.folder("envs")``); a marker file written last says one is
complete, and a file lock per key lets two gates on one worker (or two workers sharing the
directory) build it once. uv's own cache is ``<data_dir>/uv-cache`` (``UV_CACHE_DIR``), so
a rebuild is mostly links from the cache; Python downloads are off (the environment uses the
worker's interpreter) and ``IMPLFLOW_ENV_OFFLINE=true`` adds ``--offline``: cache only.

**The gate tools.** ruff, bandit and mypy run from the worker's interpreter (implflow's own
environment): they read the code and never import it; mypy gets ``--python-executable
<environment python>`` and so resolves the target's imports from the task environment.
pytest and coverage must import the target's code *and* its packages in one interpreter,
so they run with the environment's interpreter; when the target does not bring them they
are installed into the environment at the worker's own versions (from uv's cache once
seen), so the figures come from the tool versions implflow's parsers are tested with. The
other choice — running the worker's pytest with the environment's ``site-packages`` added
to its path — was rejected: the worker's own packages (pydantic, temporalio, …) would then
satisfy or shadow the target's imports, and the environment would not be isolated.

**Node** keeps ``npm ci`` as the preset's first gate step (``node_modules`` in the
checkout); :func:`env_vars_for` puts ``node_modules/.bin`` on ``PATH``.

**Failures.** An install that fails raises :class:`EnvironmentBuildError`, whose message is
one line with the installer's own words (``uv: No solution found when resolving
dependencies: Because this-package-… was not found in the package registry …``) and whose
``tail`` holds its last lines; the gate turns it into an ``environment`` failure: a person,
at once, with that line.
"""

from __future__ import annotations

import asyncio
import configparser
import contextlib
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import sys
import time
import tomllib
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from activities.process import log_tail, run_process, scrubbed_env
from activities.sandbox import widened
from implflow.errors import ImplflowError
from implflow.models import ProjectKind
from implflow.settings import DEFAULT_ENV_ALLOWLIST, Settings

__all__ = [
    "DEV_EXTRAS",
    "GATE_TOOLS",
    "EnvironmentBuildError",
    "EnvironmentStore",
    "Recipe",
    "TaskEnvironment",
    "env_vars_for",
    "prepare_environment",
    "read_recipe",
]

RECIPE_VERSION = "1"
"""Part of every key: bump it when what goes into an environment changes."""

DEV_EXTRAS = frozenset({"test", "tests", "testing", "dev", "develop", "development"})
"""Extras and dependency groups installed besides the runtime dependencies."""

GATE_TOOLS = frozenset({"pytest", "coverage", "ruff", "mypy", "bandit"})
"""Distributions implflow brings itself; a target that declares only these needs no env."""

INSTALLED_TOOLS = ("pytest", "coverage")
"""Gate tools that must run inside the environment (they import the target's code)."""

FRAMEWORK_TOOLS = {"django": ("pytest-django",)}
"""More such tools for a target that declares the framework: Django's tests need its plugin."""

MARKER = "implflow-env.json"
"""Written last into a complete environment: its key, sources and build time."""

INSTALLER_ENV = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "UV_INDEX",
    "UV_INDEX_URL",
    "UV_DEFAULT_INDEX",
    "UV_EXTRA_INDEX_URL",
    "UV_FIND_LINKS",
)
"""Worker variables uv may see besides the allowlist: how this machine reaches an index."""

_MAX_REQUIREMENT_FILES = 32
_MAX_INCLUDE_DEPTH = 5
_LOCK_POLL_S = 0.5
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")

Heartbeat = Callable[[dict[str, object]], None]


class EnvironmentBuildError(ImplflowError):
    """The task environment could not be built. ``str()`` is one line: the installer's cause.

    ``tail`` holds the installer's last lines and ``log`` the full log file, when there is one.
    """

    def __init__(self, message: str, tail: str = "", log: Path | None = None) -> None:
        super().__init__(message)
        self.tail = tail
        self.log = log


@dataclass(frozen=True)
class EnvironmentStore:
    """Where task environments are kept and how uv builds them (one per worker)."""

    root: Path
    """``<data_dir>/envs``: one directory per key."""
    uv_cache: Path
    """uv's package cache (``UV_CACHE_DIR``)."""
    offline: bool = False
    """Install from uv's cache only."""
    timeout_s: float = 900.0
    """Bound on one build step (venv, export, install)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> EnvironmentStore:
        """The store a worker's settings describe."""
        return cls(
            root=settings.folder("envs"),
            uv_cache=settings.folder("uv-cache"),
            offline=settings.env_offline,
            timeout_s=settings.env_build_timeout_s,
        )


@dataclass(frozen=True)
class Recipe:
    """What a target declares: the input of an environment build, and its cache key."""

    kind: ProjectKind
    requirements: tuple[str, ...] = ()
    """PEP 508 lines to install (without the project itself), or the lock's export later."""
    options: tuple[str, ...] = ()
    """Index options from requirement files (``--index-url …``, ``--find-links …``)."""
    constraints: tuple[str, ...] = ()
    lock: bytes | None = None
    """``uv.lock``'s bytes, when there is one: it decides the versions."""
    extras: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    """The files read, relative to the checkout."""
    declared: frozenset[str] = frozenset()
    """Every distribution named anywhere in the metadata (all extras and groups), normalized:
    tells an undeclared import (the agent's to fix) from a declared one that is missing."""
    project: str | None = None
    """The project's own normalized name."""

    @property
    def tools(self) -> tuple[str, ...]:
        """The gate tools installed into this target's environment."""
        extra = [
            t for name, tools in FRAMEWORK_TOOLS.items() if name in self.declared for t in tools
        ]
        return (*INSTALLED_TOOLS, *extra)

    @property
    def needs_environment(self) -> bool:
        """A Python target that declares something besides implflow's own gate tools."""
        if self.kind != "python":
            return False
        return any(_normalize(_req_name(r) or "") not in GATE_TOOLS for r in self.requirements)

    def key(self) -> str:
        """The cache key: a hash of everything that decides what gets installed."""
        digest = hashlib.sha256()
        tools = {name: _version(name) for name in self.tools}
        head = {
            "recipe": RECIPE_VERSION,
            "python": list(sys.version_info[:3]),
            "implementation": sys.implementation.name,
            "platform": sys.platform,
            "machine": os.uname().machine,
            "tools": tools,
            "extras": list(self.extras),
            "groups": list(self.groups),
        }
        digest.update(json.dumps(head, sort_keys=True).encode())
        if self.lock is not None:
            digest.update(b"\0lock\0" + self.lock)
        for section, lines in (
            ("requirements", self.requirements),
            ("options", self.options),
            ("constraints", self.constraints),
        ):
            digest.update(f"\0{section}\0".encode() + "\n".join(lines).encode())
        return digest.hexdigest()[:24]


@dataclass(frozen=True)
class TaskEnvironment:
    """The interpreter a gate runs the target's code with, and how to put it on ``PATH``."""

    python: str
    """The environment's interpreter (the worker's own when none is needed)."""
    path: Path | None = None
    """The virtual environment; ``None``: the target needs none (or is not Python)."""
    key: str = ""
    built: bool = False
    """This call built it (``False``: it came from the cache, or none was needed)."""
    duration_s: float = 0.0
    sources: tuple[str, ...] = ()
    recipe: Recipe | None = field(default=None, compare=False)

    def env_vars(self, base_path: str | None = None) -> dict[str, str]:
        """``VIRTUAL_ENV`` and ``PATH`` with the environment's ``bin`` first (empty: none)."""
        if self.path is None:
            return {}
        rest = os.environ.get("PATH", "") if base_path is None else base_path
        return {
            "VIRTUAL_ENV": str(self.path),
            "PATH": os.pathsep.join(p for p in (str(self.path / "bin"), rest) if p),
        }

    def provides(self, module: str) -> bool:
        """Whether the top-level ``module`` is importable from the environment's packages."""
        top = module.split(".")[0]
        if self.path is None:
            return importlib.util.find_spec(top) is not None
        for site in self.path.glob("lib/python*/site-packages"):
            if (site / top).is_dir() or any(site.glob(f"{top}.*")):
                return True
        return False


def worker_environment(recipe: Recipe | None = None) -> TaskEnvironment:
    """The worker's own interpreter, for targets that need no environment of their own."""
    return TaskEnvironment(python=sys.executable, recipe=recipe)


# --------------------------------------------------------------------------- the recipe


def read_recipe(workdir: Path) -> Recipe:
    """What the target in ``workdir`` declares (files only; nothing of it is imported or run)."""
    pyproject = _toml(workdir / "pyproject.toml")
    python = pyproject is not None or any(
        (workdir / name).is_file() for name in ("setup.py", "setup.cfg")
    )
    if not python:
        if (workdir / "package.json").is_file():
            return Recipe(kind="node", sources=("package.json",))
        if not _requirement_files(workdir):
            return Recipe(kind="none")
    sources: list[str] = []
    reader = _Requirements(workdir)
    declared: set[str] = set()
    extras: set[str] = set()
    groups: list[str] = []
    project_name: str | None = None
    if pyproject is not None:
        sources.append("pyproject.toml")
        project = _table(pyproject.get("project"))
        name = project.get("name")
        project_name = _normalize(name) if isinstance(name, str) else None
        optional = {
            _normalize(k): _strings(v)
            for k, v in _table(project.get("optional-dependencies")).items()
        }
        for reqs in optional.values():
            declared.update(_names(reqs))
        wanted = {extra for extra in optional if extra in DEV_EXTRAS}
        runtime = _strings(project.get("dependencies"))
        # A self-reference (``myproj[test]``) pulls in the project's own extras.
        extras = _follow_extras(wanted, optional, project_name, runtime)
        for req in runtime:
            reader.add(req, project_name)
        for extra in sorted(extras):
            for req in optional.get(extra, []):
                reader.add(req, project_name)
        dependency_groups = _table(pyproject.get("dependency-groups"))
        for group_name in dependency_groups:
            members = _group(dependency_groups, group_name, set())
            declared.update(_names(members))
            if _normalize(group_name) in DEV_EXTRAS:
                groups.append(group_name)
                for req in members:
                    reader.add(req, project_name)
        legacy = _strings(_table(_table(pyproject.get("tool")).get("uv")).get("dev-dependencies"))
        declared.update(_names(legacy))
        for req in legacy:
            reader.add(req, project_name)
        poetry = _table(_table(pyproject.get("tool")).get("poetry"))
        if poetry:
            name = poetry.get("name")
            project_name = project_name or (_normalize(name) if isinstance(name, str) else None)
            for req in _poetry_dependencies(poetry, declared):
                reader.add(req, project_name)
    cfg = workdir / "setup.cfg"
    if cfg.is_file():
        sources.append("setup.cfg")
        install, cfg_extras = _setup_cfg(cfg)
        for req in install:
            reader.add(req, project_name)
        for extra, reqs in cfg_extras.items():
            declared.update(_names(reqs))
            if extra in DEV_EXTRAS:
                for req in reqs:
                    reader.add(req, project_name)
    for path in _requirement_files(workdir):
        reader.read_file(path, depth=0)
    sources.extend(reader.sources)
    lock_path = workdir / "uv.lock"
    lock = None
    if lock_path.is_file() and pyproject is not None:
        lock = lock_path.read_bytes()
        sources.append("uv.lock")
    declared.update(_names(list(reader.lines)))
    return Recipe(
        kind="python",
        requirements=tuple(reader.lines),
        options=tuple(reader.options),
        constraints=tuple(reader.constraints),
        lock=lock,
        extras=tuple(sorted(extras)),
        groups=tuple(sorted(groups)),
        sources=tuple(dict.fromkeys(sources)),
        declared=frozenset(declared),
        project=project_name,
    )


class _Requirements:
    """Collects requirement lines, dropping the project itself and local paths."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir.resolve()
        self.lines: list[str] = []
        self.options: list[str] = []
        self.constraints: list[str] = []
        self.sources: list[str] = []
        self._seen_files: set[Path] = set()

    def add(self, requirement: str, project: str | None) -> None:
        line = requirement.strip()
        if not line or _is_local(line):
            return
        name = _req_name(line)
        if name is None or (project is not None and _normalize(name) == project):
            return  # the project itself runs from the checkout
        if line not in self.lines:
            self.lines.append(line)

    def read_file(self, path: Path, depth: int, constraints: bool = False) -> None:
        path = path.resolve()
        if (
            path in self._seen_files
            or depth > _MAX_INCLUDE_DEPTH
            or not path.is_relative_to(self.workdir)
            or not path.is_file()
        ):
            return
        self._seen_files.add(path)
        self.sources.append(str(path.relative_to(self.workdir)))
        text = path.read_text(encoding="utf-8", errors="replace").replace("\\\n", " ")
        for raw in text.splitlines():
            line = re.sub(r"(^|\s)#.*$", "", raw).strip()
            if not line:
                continue
            include = re.match(r"^(-r|--requirement|-c|--constraint)[\s=]+(\S+)$", line)
            if include:
                is_constraint = include.group(1) in ("-c", "--constraint")
                self.read_file(path.parent / include.group(2), depth + 1, is_constraint)
                continue
            if line.startswith(("-e", "--editable")):
                continue  # an editable install is the project (or a local package)
            if line.startswith("-"):
                if line not in self.options:
                    self.options.append(line)
                continue
            if constraints:
                if not _is_local(line) and line not in self.constraints:
                    self.constraints.append(line)
            else:
                self.add(line, None)


def _requirement_files(workdir: Path) -> list[Path]:
    found = sorted(workdir.glob("requirements*.txt")) + sorted(workdir.glob("requirements/*.txt"))
    return [p for p in found if p.is_file()][:_MAX_REQUIREMENT_FILES]


def _follow_extras(
    wanted: set[str], optional: Mapping[str, list[str]], project: str | None, runtime: list[str]
) -> set[str]:
    extras = set(wanted)
    todo = [*runtime, *(r for e in wanted for r in optional.get(e, []))]
    while todo:
        req = todo.pop()
        match = _NAME.match(req)
        if not match or project is None or _normalize(match.group(1)) != project:
            continue
        for extra in (match.group(2) or "").split(","):
            extra = _normalize(extra.strip())
            if extra and extra not in extras and extra in optional:
                extras.add(extra)
                todo.extend(optional[extra])
    return extras


def _group(groups: Mapping[str, Any], name: str, seen: set[str]) -> list[str]:
    """A dependency group's requirements, ``include-group`` entries followed (PEP 735)."""
    if name in seen:
        return []
    seen.add(name)
    out: list[str] = []
    entries = groups.get(name)
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, str):
            out.append(entry)
        elif isinstance(entry, dict) and isinstance(entry.get("include-group"), str):
            out.extend(_group(groups, entry["include-group"], seen))
    return out


def _setup_cfg(path: Path) -> tuple[list[str], dict[str, list[str]]]:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except configparser.Error:
        return [], {}

    def lines(text: str) -> list[str]:
        return [line.strip() for line in text.splitlines() if line.strip()]

    install = lines(parser.get("options", "install_requires", fallback=""))
    extras: dict[str, list[str]] = {}
    if parser.has_section("options.extras_require"):
        for key, value in parser.items("options.extras_require"):
            extras[_normalize(key)] = lines(value)
    return install, extras


def _is_local(line: str) -> bool:
    """A path or file URL requirement: local code, never fetched from an index."""
    return (
        line.startswith((".", "/", "~", "file:"))
        or " @ file:" in line
        or "@file:" in line
        or (line.endswith((".whl", ".tar.gz", ".zip")) and "://" not in line)
    )


def _req_name(line: str) -> str | None:
    match = _NAME.match(line)
    return match.group(1) if match else None


def _poetry_dependencies(poetry: dict[str, Any], declared: set[str]) -> list[str]:
    """A Poetry project's runtime and dev-group dependencies as PEP 508 requirements.

    Every name goes into ``declared``; optional ones, ``python`` and path, git or URL
    sources are not installed.
    """
    tables = [_table(poetry.get("dependencies")), _table(poetry.get("dev-dependencies"))]
    for group, body in _table(poetry.get("group")).items():
        members = _table(_table(body).get("dependencies"))
        declared.update(_normalize(name) for name in members)
        if _normalize(group) in DEV_EXTRAS:
            tables.append(members)
    wanted: list[str] = []
    for table in tables:
        for name, spec in table.items():
            if _normalize(name) == "python":
                continue
            declared.add(_normalize(name))
            if isinstance(spec, dict):
                if spec.get("optional") or any(k in spec for k in ("path", "git", "url")):
                    continue
                extras = ",".join(_strings(spec.get("extras")))
                name = f"{name}[{extras}]" if extras else name
                spec = spec.get("version", "*")
            wanted.append(name + (_poetry_version(spec) if isinstance(spec, str) else ""))
    return wanted


def _poetry_version(constraint: str) -> str:
    """Poetry's ``^1.2`` / ``~1.2`` / ``1.2.*`` / ``1.2`` as a PEP 440 specifier ("" if any)."""
    text = constraint.strip()
    if text in ("", "*") or "||" in text:
        return ""  # any version; alternatives have no PEP 440 spelling: let the resolver pick
    if re.fullmatch(r"[\^~]\s*\d+(\.\d+){0,2}", text):  # not "~=": that is PEP 440's
        parts = [int(p) for p in re.findall(r"\d+", text)]
        if text[0] == "^":  # the first non-zero part may not change
            bump = next((i for i, p in enumerate(parts) if p), len(parts) - 1)
        else:  # ~1.2.3 and ~1.2: the minor may not change; ~1: the major
            bump = 1 if len(parts) > 1 else 0
        upper = [*parts[:bump], parts[bump] + 1]
        lower = ".".join(map(str, parts))
        return f">={lower},<{'.'.join(map(str, upper))}"
    if re.fullmatch(r"\d+(\.\d+)*(\.\*)?", text):
        return f"=={text}"
    return text  # already PEP 440 (">=1.2,<2", "!=1.3")


def _names(requirements: list[str]) -> set[str]:
    return {_normalize(n) for r in requirements if (n := _req_name(r))}


def _normalize(name: str) -> str:
    """PEP 503 name normalization (``Foo_Bar.baz`` → ``foo-bar-baz``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _toml(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}


def _table(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


# --------------------------------------------------------------------------- building


async def prepare_environment(
    workdir: Path,
    store: EnvironmentStore,
    *,
    heartbeat: Heartbeat | None = None,
    log_path: Path | None = None,
) -> TaskEnvironment:
    """The task environment of the target in ``workdir``: from the cache, else built now.

    ``log_path`` receives uv's output when a build runs (default: beside the environment).
    Raises :class:`EnvironmentBuildError` (one line: the installer's cause) when uv is
    missing or an install step fails; a failed build leaves nothing in the cache.
    """
    beat: Heartbeat = heartbeat or _no_heartbeat
    recipe = await asyncio.to_thread(read_recipe, workdir)
    if not recipe.needs_environment:
        return worker_environment(recipe)
    key = recipe.key()
    target = store.root / key
    store.root.mkdir(parents=True, exist_ok=True)
    log = log_path or store.root / f"{key}.log"
    started = time.monotonic()
    async with _locked(store.root / f"{key}.lock", store.timeout_s, beat):
        if (target / MARKER).is_file():
            return _environment(target, key, recipe, built=False)
        shutil.rmtree(target, ignore_errors=True)  # a build that died half way
        try:
            await _build(workdir, store, recipe, target, log, beat)
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
        marker = {
            "key": key,
            "sources": list(recipe.sources),
            "python": sys.version.split()[0],
            "built_at": time.time(),
            "build_s": round(time.monotonic() - started, 2),
        }
        (target / MARKER).write_text(json.dumps(marker, indent=2), encoding="utf-8")
    return _environment(
        target, key, recipe, built=True, duration_s=round(time.monotonic() - started, 2)
    )


def _environment(
    target: Path, key: str, recipe: Recipe, *, built: bool, duration_s: float = 0.0
) -> TaskEnvironment:
    return TaskEnvironment(
        python=str(target / "bin" / "python"),
        path=target,
        key=key,
        built=built,
        duration_s=duration_s,
        sources=recipe.sources,
        recipe=recipe,
    )


async def _build(
    workdir: Path,
    store: EnvironmentStore,
    recipe: Recipe,
    target: Path,
    log: Path,
    beat: Heartbeat,
) -> None:
    uv = _uv_argv()
    python = str(target / "bin" / "python")
    offline = ["--offline"] if store.offline else []
    await _uv(
        [*uv, "venv", "--quiet", "--no-project", "--python", sys.executable, str(target)],
        "creating the environment",
        workdir,
        store,
        log,
        beat,
    )
    requirements = target / "implflow-requirements.txt"
    if recipe.lock is not None:
        extras = [f"--extra={extra}" for extra in recipe.extras]
        selection = extras + [f"--group={group}" for group in recipe.groups]
        await _uv(
            [
                *uv,
                "export",
                "--frozen",
                "--format=requirements.txt",
                "--no-hashes",
                "--no-header",
                "--no-emit-project",
                "--no-emit-workspace",
                "--no-emit-local",
                *selection,
                f"--output-file={requirements}",
            ],
            "reading uv.lock",
            workdir,
            store,
            log,
            beat,
        )
    else:
        requirements.write_text(
            "\n".join([*recipe.options, *recipe.requirements]) + "\n", encoding="utf-8"
        )
    install = [*uv, "pip", "install", *offline, "--python", python, "-r", str(requirements)]
    if recipe.constraints:
        constraints = target / "implflow-constraints.txt"
        constraints.write_text("\n".join(recipe.constraints) + "\n", encoding="utf-8")
        install += ["-c", str(constraints)]
    await _uv(install, "installing the dependencies", workdir, store, log, beat)
    missing = [
        f"{name}=={version}" if (version := _version(name)) else name
        for name in recipe.tools
        if not _installed(target, name)
    ]
    if missing:
        await _uv(
            [*uv, "pip", "install", *offline, "--python", python, *missing],
            "installing the gate tools",
            workdir,
            store,
            log,
            beat,
        )


def _installed(target: Path, distribution: str) -> bool:
    wheel_name = distribution.replace("-", "_")  # dist-info directories use the wheel's name
    return any(target.glob(f"lib/python*/site-packages/{wheel_name}-*.dist-info"))


async def _uv(
    argv: list[str],
    step: str,
    workdir: Path,
    store: EnvironmentStore,
    log: Path,
    beat: Heartbeat,
) -> None:
    extra = {
        "UV_CACHE_DIR": str(store.uv_cache),
        "UV_PYTHON_DOWNLOADS": "never",  # the worker's interpreter, never a download
        "UV_NO_PROGRESS": "1",
        "NO_COLOR": "1",
        **{key: os.environ[key] for key in INSTALLER_ENV if key in os.environ},
    }
    if store.offline:
        extra["UV_OFFLINE"] = "1"
    with log.open("a", encoding="utf-8") as fh:
        fh.write(f"$ {' '.join(argv)}\n")
        start = fh.tell()
    store.uv_cache.mkdir(parents=True, exist_ok=True)
    try:
        # Inside a gate's sandbox: uv writes the store and its cache and needs the index.
        with widened(write=[store.root, store.uv_cache], network=not store.offline):
            result = await run_process(
                argv,
                cwd=workdir,
                env=scrubbed_env(DEFAULT_ENV_ALLOWLIST, extra),
                log_path=log,
                timeout_s=store.timeout_s,
                heartbeat=lambda info: beat({"stage": "environment", "step": step, **info}),
                heartbeat_every_s=2.0,
            )
    except FileNotFoundError as err:
        raise EnvironmentBuildError(
            f"missing tool: uv cannot be run ({err.strerror}): pip install uv", log=log
        ) from None
    except TimeoutError:
        raise EnvironmentBuildError(
            f"{step} took longer than {store.timeout_s:g}s (uv log: {log})", log=log
        ) from None
    if result.returncode != 0:
        output = _since(log, start)
        raise EnvironmentBuildError(
            f"dependencies could not be installed ({step}): uv: {_cause(output)}",
            tail="\n".join(output.strip().splitlines()[-12:]),
            log=log,
        )


def _since(log: Path, offset: int) -> str:
    try:
        with log.open("rb") as fh:
            fh.seek(offset)
            return fh.read(256 * 1024).decode("utf-8", "replace")
    except OSError:
        return log_tail(log)


def _cause(output: str) -> str:
    """uv's own words in one line: its last ``error:`` line and the ``cause:`` lines under it."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [i for i, line in enumerate(lines) if line.startswith("error:")]
    if not errors:
        return lines[-1] if lines else "(no output)"
    head = lines[errors[-1]].removeprefix("error:").strip().rstrip(":")
    rest = [re.sub(r"^(cause|hint|help):\s*", "", line) for line in lines[errors[-1] + 1 :]]
    return " ".join((head + (": " + " ".join(rest) if rest else "")).split())


def _uv_argv() -> list[str]:
    """uv from the worker's environment: the binary beside its interpreter, else on PATH."""
    beside = Path(sys.executable).parent / "uv"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    found = shutil.which("uv")
    if found:
        return [found]
    if importlib.util.find_spec("uv") is not None:
        return [sys.executable, "-m", "uv"]
    raise EnvironmentBuildError(
        "missing tool: uv is not installed in the worker's environment (pip install uv)"
    )


@contextlib.asynccontextmanager
async def _locked(path: Path, timeout_s: float, beat: Heartbeat) -> AsyncIterator[None]:
    """An exclusive file lock, polled so heartbeats keep flowing while another build runs."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise EnvironmentBuildError(
                        f"another build of this environment held {path} for {timeout_s:g}s"
                    ) from None
                beat({"stage": "environment", "step": "waiting for another build"})
                await asyncio.sleep(_LOCK_POLL_S)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _no_heartbeat(_info: dict[str, object]) -> None:
    return None


# --------------------------------------------------------------------------- agents


def env_vars_for(workdir: Path, store: EnvironmentStore) -> dict[str, str]:
    """Environment variables that put the task's environment first on ``PATH``.

    For the agent executors: merge the result into the agent's (scrubbed) environment, so
    the agent's own commands (Claude Code's Bash tool, the llm executor's command tool)
    run ``python``, ``pytest`` and the target's packages from the same environment as the
    gates. Python: ``VIRTUAL_ENV`` and ``PATH`` with ``<env>/bin`` first, once the gates
    have built the environment (nothing is built here: this only reads files); Node:
    ``PATH`` with ``node_modules/.bin`` first. Empty when there is nothing to add.
    ``store`` is the worker's (``EnvironmentStore.from_settings``).
    """
    recipe = read_recipe(workdir)
    base = os.environ.get("PATH", "")
    if recipe.kind == "node":
        bin_dir = workdir / "node_modules" / ".bin"
        return {"PATH": os.pathsep.join([str(bin_dir), base])} if bin_dir.is_dir() else {}
    if not recipe.needs_environment:
        return {}
    target = store.root / recipe.key()
    if not (target / MARKER).is_file():
        return {}
    return _environment(target, recipe.key(), recipe, built=False).env_vars(base)


def cached_environments(store: EnvironmentStore) -> Iterator[Path]:
    """Complete environments in the store (for an operator's cleanup)."""
    if store.root.is_dir():
        yield from (p for p in sorted(store.root.iterdir()) if (p / MARKER).is_file())
