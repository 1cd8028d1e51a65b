"""Find how a repository's service starts, by reading its files: the load probe's command.

Static only: Python files are parsed with ``ast``, JavaScript and ``package.json`` read as
text; nothing of the target is imported or run in the worker. The shapes found, first
match wins:

==================== ===================================================================
ASGI app             ``app = FastAPI()`` / ``Starlette()`` / ``Quart()`` at module level,
                     or a ``create_app()``-style factory returning one:
                     ``{python} -m uvicorn mod:app --host 127.0.0.1 --port {port}``
                     (hypercorn when only that is declared)
WSGI app             ``app = Flask(__name__)``: gunicorn or waitress when declared, else
                     ``flask --app mod:app run``
aiohttp              a factory (``def make_app(argv)``) run by ``python -m aiohttp.web``,
                     or ``web.Application()`` under gunicorn's aiohttp worker
Django               ``manage.py`` naming ``DJANGO_SETTINGS_MODULE``: ``runserver --noreload``
``__main__``         exactly one package with ``__main__.py``: ``python -m pkg --port {port}``
``[project.scripts]`` a server-looking entry point, called with ``--port {port}``
Node                 ``npm start`` when ``scripts.start`` exists, else ``node <main>``
==================== ===================================================================

Readiness: a health-looking route the code declares (``/health``, ``/healthz``, ``/ready``,
…; on the app, or on a Flask ``Blueprint`` / FastAPI ``APIRouter`` in its own module, with
their literal prefixes), else for FastAPI its ``/openapi.json``, else a parameterless GET
route, else ``/``. Every command binds 127.0.0.1 and takes its port from ``{port}`` (and
``PORT={port}`` in the environment).
"""

from __future__ import annotations

import ast
import json
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from activities.gates.schema import ServiceProposal
from implflow.layout import SERVICE_FILE

__all__ = [
    "DetectedService",
    "detect_node_service",
    "detect_python_service",
    "own_modules",
    "python_packages",
    "read_proposal",
]

MAX_SCANNED_FILES = 2000
MAX_FILE_BYTES = 1024 * 1024
HEALTH_PATHS = (
    "/health",
    "/healthz",
    "/health/",
    "/healthcheck",
    "/api/health",
    "/ready",
    "/readyz",
    "/livez",
    "/ping",
    "/status",
)
"""Readiness paths, best first, when the code declares one."""

_NOT_PACKAGES = {"tests", "test", "docs", "doc", "examples", "scripts", "build", "dist"}
_SKIP_PARTS = {
    ".git",
    ".venv",
    "venv",
    "env",
    "node_modules",
    ".implflow",
    "build",
    "dist",
    "tests",
    "test",
    "migrations",
    "__pycache__",
    "site-packages",
}
_ASGI = {"FastAPI", "Starlette", "Quart"}
_ROUTERS = {"Blueprint": "url_prefix", "APIRouter": "prefix"}
"""Router constructors, and the keyword that gives their prefix."""
_MOUNTS = {"register_blueprint": "url_prefix", "include_router": "prefix"}
"""Calls that mount a router on the app, and the keyword of the prefix they add."""
_WSGI = {"Flask"}
_FACTORY_NAMES = {
    "create_app",
    "make_app",
    "build_app",
    "get_app",
    "app_factory",
    "get_application",
    "create_application",
    "init_app",
}
_PREFERRED_FILES = ("main", "app", "asgi", "wsgi", "server", "api", "application", "__init__")
_SERVER_WORDS = ("serve", "server", "api", "web", "app", "run", "start", "http")
_ROUTE_METHODS = {"get", "route", "api_route", "add_get", "add_route"}
_PLAIN_PATH = re.compile(r"^/[A-Za-z0-9._~/-]*$")
_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_JS_HEALTH = re.compile(r"""["'`](/(?:api/)?(?:health|healthz|ready|readyz|livez|ping))["'`]""")


@dataclass(frozen=True)
class DetectedService:
    """A service command found in the repository's files (argv with placeholders)."""

    command: list[str]
    source: str
    """What was found, e.g. ``FastAPI app app.main:app (uvicorn)``."""
    health_path: str = "/"
    env: dict[str, str] = field(default_factory=dict)


def python_packages(workdir: Path) -> tuple[list[str], bool]:
    """Top-level import packages (root or ``src/``) and whether it is a src layout."""
    for base, src in ((workdir / "src", True), (workdir, False)):
        if not base.is_dir():
            continue
        found = sorted(
            d.name
            for d in base.iterdir()
            if d.is_dir()
            and d.name.isidentifier()
            and d.name not in _NOT_PACKAGES
            and (d / "__init__.py").is_file()
        )
        if found:
            return found, src
    return [], False


def own_modules(workdir: Path) -> set[str]:
    """Top-level names the repository itself provides (packages, modules, test dirs)."""
    names: set[str] = set()
    for base in (workdir, workdir / "src"):
        if not base.is_dir():
            continue
        for entry in base.iterdir():
            if entry.is_dir() and entry.name.isidentifier() and not entry.name.startswith("."):
                if any(entry.glob("*.py")):
                    names.add(entry.name)
            elif entry.suffix == ".py" and entry.stem.isidentifier():
                names.add(entry.stem)
    return names


# --------------------------------------------------------------------------- python


@dataclass
class _App:
    module: str
    attr: str
    framework: str
    factory: bool
    file: Path
    routes: list[str]


def detect_python_service(
    workdir: Path, declared: frozenset[str] = frozenset()
) -> DetectedService | None:
    """The Python service in ``workdir``, or ``None``. ``declared``: normalized distribution
    names the project declares (which server to run an app with)."""
    packages, src_layout = python_packages(workdir)
    env = {"PORT": "{port}", **({"PYTHONPATH": "src"} if src_layout else {})}
    apps = list(_find_apps(workdir, src_layout))
    if apps:
        app = _pick(apps)
        command = _app_command(app, declared)
        if command is not None:
            argv, server = command
            target = f"{app.module}:{app.attr}"
            return DetectedService(
                command=argv,
                source=f"{app.framework} app {target} ({server})",
                health_path=_health_path(app, apps, _router_routes(workdir)),
                env=env,
            )
    django = _django(workdir)
    if django is not None:
        return DetectedService(
            command=["{python}", "manage.py", "runserver", "127.0.0.1:{port}", "--noreload"],
            source="Django project manage.py (runserver)",
            health_path=django,
            env=env,
        )
    root = workdir / "src" if src_layout else workdir
    runnable = [p for p in packages if (root / p / "__main__.py").is_file()]
    if len(runnable) == 1:
        return DetectedService(
            command=["{python}", "-m", runnable[0], "--port", "{port}"],
            source=f"package {runnable[0]} with __main__.py",
            health_path=_literal_health(root / runnable[0]) or "/health",
            env=env,
        )
    script = _script(workdir)
    if script is not None:
        name, module, func = script
        code = (
            f"import sys; from {module} import {func}; sys.argv[0] = {name!r}; sys.exit({func}())"
        )
        return DetectedService(
            command=["{python}", "-c", code, "--port", "{port}"],
            source=f"[project.scripts] {name} = {module}:{func}",
            health_path=_literal_health(root) or "/health",
            env=env,
        )
    return None


def _python_files(workdir: Path) -> Iterator[tuple[Path, str]]:
    count = 0
    for path in sorted(workdir.rglob("*.py")):
        rel = path.relative_to(workdir)
        if any(part in _SKIP_PARTS or part.startswith(".") for part in rel.parts[:-1]):
            continue
        if rel.name.startswith("test_") or rel.name == "conftest.py" or rel.name == "setup.py":
            continue
        count += 1
        if count > MAX_SCANNED_FILES:
            return
        try:
            if path.stat().st_size > MAX_FILE_BYTES:
                continue
            yield path, path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue


def _module_name(workdir: Path, path: Path, src_layout: bool) -> str | None:
    rel = path.relative_to(workdir)
    parts = list(rel.with_suffix("").parts)
    if src_layout and parts and parts[0] == "src":
        parts = parts[1:]
    if parts and parts[-1] == "__init__":
        parts = parts[:-1]
    name = ".".join(parts)
    return name if parts and _DOTTED.match(name) else None


def _find_apps(workdir: Path, src_layout: bool) -> Iterator[_App]:
    for path, text in _python_files(workdir):
        if not any(word in text for word in (*_ASGI, *_WSGI, "web.Application", "Application(")):
            continue
        try:
            tree = ast.parse(text, filename=str(path))
        except (SyntaxError, ValueError):
            continue
        module = _module_name(workdir, path, src_layout)
        if module is None:
            continue
        aiohttp = "aiohttp" in text
        routes = _routes(tree)
        for node in tree.body:
            found = _app_assignment(node, aiohttp)
            if found is not None:
                attr, framework = found
                yield _App(module, attr, framework, False, path, routes)
                continue
            factory = _app_factory(node, aiohttp)
            if factory is not None:
                attr, framework = factory
                yield _App(module, attr, framework, True, path, routes)


def _called(call: ast.Call) -> str:
    """The called name: ``FastAPI`` for ``FastAPI()`` and ``fastapi.FastAPI()`` alike."""
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def _framework(call: ast.expr, aiohttp: bool) -> str | None:
    if not isinstance(call, ast.Call):
        return None
    name = _called(call)
    if name in _ASGI or name in _WSGI:
        return name
    if name == "Application" and aiohttp:
        return "aiohttp"
    return None


def _app_assignment(node: ast.stmt, aiohttp: bool) -> tuple[str, str] | None:
    if isinstance(node, ast.Assign) and len(node.targets) == 1:
        target, value = node.targets[0], node.value
    elif isinstance(node, ast.AnnAssign) and node.value is not None:
        target, value = node.target, node.value
    else:
        return None
    framework = _framework(value, aiohttp)
    if framework is None or not isinstance(target, ast.Name):
        return None
    return target.id, framework


def _app_factory(node: ast.stmt, aiohttp: bool) -> tuple[str, str] | None:
    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return None
    if node.name not in _FACTORY_NAMES:
        return None
    for child in ast.walk(node):
        framework = _framework(child, aiohttp) if isinstance(child, ast.Call) else None
        if framework is not None:
            return node.name, framework
    return None


def _routes(tree: ast.Module) -> list[str]:
    """GET paths declared without parameters: decorators, ``add_get``, ``Route(...)``."""
    paths: list[str] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        name = _called(node)
        if name not in _ROUTE_METHODS and name not in ("Route", "path"):
            continue
        first = node.args[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            value = first.value
            if name == "path" and not value.startswith("/"):
                value = "/" + value  # Django: path("health/", ...)
            if _PLAIN_PATH.match(value) and value not in paths:
                paths.append(value)
    return paths


def _pick(apps: list[_App]) -> _App:
    """The app most likely to be *the* service: a preferred file name, then the shallowest."""

    def rank(app: _App) -> tuple[int, int, int, str]:
        stem = app.file.stem
        preferred = (
            _PREFERRED_FILES.index(stem) if stem in _PREFERRED_FILES else len(_PREFERRED_FILES)
        )
        return (preferred, len(app.module.split(".")), int(app.factory), app.module)

    return sorted(apps, key=rank)[0]


def _app_command(app: _App, declared: frozenset[str]) -> tuple[list[str], str] | None:
    target = f"{app.module}:{app.attr}"
    if app.framework in _ASGI:
        if "hypercorn" in declared and "uvicorn" not in declared:
            argv = ["{python}", "-m", "hypercorn", target, "--bind", "127.0.0.1:{port}"]
            return argv, "hypercorn"
        argv = [
            "{python}",
            "-m",
            "uvicorn",
            target,
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
            "--no-access-log",  # a log line per request would be measured too
            "--log-level",
            "warning",
        ]
        if app.factory:
            argv.append("--factory")
        return argv, "uvicorn"
    if app.framework in _WSGI:
        wsgi = f"{app.module}:{app.attr}()" if app.factory else target
        if "gunicorn" in declared:
            return ["{python}", "-m", "gunicorn", "--bind", "127.0.0.1:{port}", wsgi], "gunicorn"
        if "waitress" in declared and not app.factory:
            return ["{python}", "-m", "waitress", "--listen=127.0.0.1:{port}", target], "waitress"
        argv = ["{python}", "-m", "flask", "--app", wsgi, "run", "--host", "127.0.0.1"]
        return [*argv, "--port", "{port}"], "flask run"
    if app.framework == "aiohttp":
        if app.factory:
            argv = ["{python}", "-m", "aiohttp.web", "-H", "127.0.0.1", "-P", "{port}", target]
            return argv, "aiohttp.web"
        if "gunicorn" in declared:
            argv = ["{python}", "-m", "gunicorn", "--bind", "127.0.0.1:{port}"]
            return [*argv, "--worker-class", "aiohttp.GunicornWebWorker", target], "gunicorn"
    return None


def _health_path(app: _App, apps: list[_App], routed: list[str]) -> str:
    routes = [r for a in apps for r in (a.routes if a.file == app.file else [])]
    routes += [r for a in apps if a.file != app.file for r in a.routes]
    routes += [r for r in routed if r not in routes]
    return _best_path(routes, fastapi=app.framework == "FastAPI")


def _router_routes(workdir: Path) -> list[str]:
    """GET paths declared on routers in their own modules (a Flask ``Blueprint``, a FastAPI
    ``APIRouter``), with the router's prefix and the one the app mounts it with.

    The application factory often declares no route itself (Flask's own tutorial registers
    blueprints): without these, readiness would wait on ``/``, which such an app answers
    with 404. Only paths that are certain count: a router the app mounts exactly once (or
    always with the same literal prefix), found by its module and name (``routes.api``, or
    a bare name only one module declares). A router never mounted, mounted on another
    router, or with a prefix that is not a string literal is left out: its paths are unknown.
    """
    declared: list[tuple[str, str, str]] = []  # (module, router, path with its own prefix)
    mounts: list[tuple[str | None, str, str | None, str | None]] = []
    # ^ (qualifier: ``routes`` of ``routes.api``, router name, prefix, what it is mounted on)
    words = (*_ROUTERS, *_MOUNTS)
    for path, text in _python_files(workdir):
        if not any(word in text for word in words):
            continue
        try:
            tree = ast.parse(text, filename=str(path))
        except (SyntaxError, ValueError):
            continue
        module = path.parent.name if path.stem == "__init__" else path.stem
        prefixes = _router_prefixes(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            func = node.func
            if func.attr in _MOUNTS and node.args:
                mounted = node.args[0]
                qualifier = (
                    _last_name(mounted.value) if isinstance(mounted, ast.Attribute) else None
                )
                name = _last_name(mounted)
                if name is not None:
                    prefix = _keyword(node, _MOUNTS[func.attr])
                    mounts.append((qualifier, name, prefix, _last_name(func.value)))
                continue
            if func.attr not in _ROUTE_METHODS or not isinstance(func.value, ast.Name):
                continue
            own = prefixes.get(func.value.id, None)
            first = node.args[0] if node.args else None
            if own is None or not isinstance(first, ast.Constant):
                continue
            if isinstance(first.value, str):
                declared.append((module, func.value.id, _joined(own, first.value)))
    routers = {(module, name) for module, name, _ in declared}
    names = [name for _, name in routers]
    routes: list[str] = []
    for module, name, route in declared:
        found = [
            (prefix, on)
            for qualifier, mounted, prefix, on in mounts
            if mounted == name
            and (qualifier == module or (qualifier is None and names.count(name) == 1))
        ]
        mounted_with = {prefix for prefix, _ in found}
        if len(mounted_with) != 1 or any(on in names for _, on in found):
            continue  # never mounted, mounted with different prefixes, or inside a router
        mount = mounted_with.pop()
        full = _joined(mount, route) if mount is not None else ""
        if _PLAIN_PATH.match(full) and full not in routes:
            routes.append(full)
    return routes


def _router_prefixes(tree: ast.Module) -> dict[str, str | None]:
    """Module-level routers and their own prefix (``None``: not a string literal)."""
    found: dict[str, str | None] = {}
    for node in tree.body:
        if not isinstance(node, ast.Assign | ast.AnnAssign) or node.value is None:
            continue
        target = node.targets[0] if isinstance(node, ast.Assign) else node.target
        value = node.value
        if isinstance(target, ast.Name) and isinstance(value, ast.Call):
            keyword = _ROUTERS.get(_called(value))
            if keyword is not None:
                found[target.id] = _keyword(value, keyword)
    return found


def _keyword(call: ast.Call, name: str) -> str | None:
    """A call's keyword argument ``name`` as a string: ``""`` when absent, ``None`` when it is
    not a string literal."""
    for keyword in call.keywords:
        if keyword.arg == name:
            value = keyword.value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                return value.value
            if isinstance(value, ast.Constant) and value.value is None:
                return ""
            return None
    return ""


def _last_name(node: ast.expr) -> str | None:
    """``api`` for ``api`` and ``routes.api`` alike."""
    if isinstance(node, ast.Name):
        return node.id
    return node.attr if isinstance(node, ast.Attribute) else None


def _joined(prefix: str, path: str) -> str:
    if not prefix:
        return path
    return prefix.rstrip("/") + "/" + path.lstrip("/")


def _best_path(routes: list[str], fastapi: bool = False) -> str:
    for wanted in HEALTH_PATHS:
        if wanted in routes:
            return wanted
    for route in routes:
        if "health" in route:
            return route
    if fastapi:
        return "/openapi.json"  # FastAPI serves its schema unless told not to
    if "/" in routes:
        return "/"
    return routes[0] if routes else "/"


_DJANGO_SETTINGS = re.compile(r"""DJANGO_SETTINGS_MODULE["']\s*,\s*["']([\w.]+)["']""")


def django_settings_module(workdir: Path) -> str | None:
    """The settings module ``manage.py`` sets by default (``setdefault(..., "x.settings")``),
    or ``None``."""
    try:
        text = (workdir / "manage.py").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    found = _DJANGO_SETTINGS.search(text)
    return found.group(1) if found else None


def _django(workdir: Path) -> str | None:
    manage = workdir / "manage.py"
    try:
        if "DJANGO_SETTINGS_MODULE" not in manage.read_text(encoding="utf-8", errors="replace"):
            return None
    except OSError:
        return None
    routes: list[str] = []
    for path in sorted(workdir.rglob("urls.py"))[:50]:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
        except (OSError, SyntaxError, ValueError):
            continue
        routes.extend(r for r in _routes(tree) if r not in routes)
    return _best_path(routes)


def _literal_health(root: Path) -> str | None:
    """A health-looking path written as a string literal in the code under ``root``."""
    if not root.is_dir():
        return None
    for _path, text in _python_files(root):
        for wanted in HEALTH_PATHS:
            if f'"{wanted}"' in text or f"'{wanted}'" in text:
                return wanted
    return None


def _script(workdir: Path) -> tuple[str, str, str] | None:
    """A ``[project.scripts]`` entry that looks like it serves: (name, module, function)."""
    try:
        data = tomllib.loads((workdir / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    project = data.get("project")
    scripts = project.get("scripts") if isinstance(project, dict) else None
    if not isinstance(scripts, dict):
        return None
    candidates: list[tuple[str, str, str]] = []
    for name, spec in scripts.items():
        if not isinstance(spec, str) or ":" not in spec:
            continue
        module, _, func = spec.partition(":")
        module, func = module.strip(), func.strip()
        if _DOTTED.match(module) and func.isidentifier() and re.fullmatch(r"[\w.-]+", name):
            candidates.append((name, module, func))
    serving = [c for c in candidates if any(word in c[0].lower() for word in _SERVER_WORDS)]
    if len(serving) == 1:
        return serving[0]
    if len(candidates) == 1:
        return candidates[0]
    return None


# --------------------------------------------------------------------------- node


def detect_node_service(workdir: Path) -> DetectedService | None:
    """``npm start`` when package.json has a start script, else ``node <main>``; or ``None``."""
    try:
        package = json.loads((workdir / "package.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(package, dict):
        return None
    scripts = package.get("scripts")
    health = _node_health(workdir) or "/"
    if isinstance(scripts, dict) and isinstance(scripts.get("start"), str):
        return DetectedService(
            command=["npm", "start"], source="npm start", health_path=health, env={"PORT": "{port}"}
        )
    main = package.get("main")
    if (
        isinstance(main, str)
        and re.fullmatch(r"[\w./-]+\.(c|m)?js", main)
        and ".." not in main
        and (workdir / main).is_file()
    ):
        return DetectedService(
            command=["node", main],
            source=f"node {main} (package.json main)",
            health_path=health,
            env={"PORT": "{port}"},
        )
    return None


def _node_health(workdir: Path) -> str | None:
    count = 0
    for pattern in ("src/**/*.ts", "src/**/*.js", "*.js", "*.ts", "lib/**/*.js", "app/**/*.js"):
        for path in sorted(workdir.glob(pattern)):
            if "node_modules" in path.parts or ".test." in path.name:
                continue
            count += 1
            if count > MAX_SCANNED_FILES:
                return None
            try:
                match = _JS_HEALTH.search(path.read_text(encoding="utf-8", errors="replace"))
            except OSError:
                continue
            if match:
                return match.group(1)
    return None


# --------------------------------------------------------------------------- proposal


def read_proposal(workdir: Path) -> ServiceProposal | str | None:
    """The design phase's proposed service (``.implflow/service.toml``): the proposal, one
    line saying what is wrong with the file, or ``None`` when there is none."""
    path = workdir / SERVICE_FILE
    if not path.is_file():
        return None
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        return f"{SERVICE_FILE}: not valid TOML: {err}"
    try:
        return ServiceProposal.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "<top level>"
        message = str(first["msg"]).removeprefix("Value error, ")
        return f"{SERVICE_FILE}: {where}: {message}"
