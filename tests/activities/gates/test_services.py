"""Finding the service in a repository's files: the common shapes, statically.

Every repository here is a few files in ``tmp_path``; nothing of them is imported (the
frameworks are not even installed in the worker), which is the point: detection reads.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from activities.gates.config import load_gate_config
from activities.gates.services import (
    detect_node_service,
    detect_python_service,
    own_modules,
    read_proposal,
)
from implflow.layout import SERVICE_FILE
from tests.fixtures import write_tree

PYPROJECT = "[project]\nname = 'svc'\nversion = '0'\n"


def test_fastapi_app_under_uvicorn_with_its_health_route(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {
            "pyproject.toml": PYPROJECT,
            "svc/__init__.py": "",
            "svc/main.py": """
                from fastapi import FastAPI

                app = FastAPI()

                @app.get("/healthz")
                def health():
                    return {}

                @app.get("/items/{item_id}")
                def item(item_id: int):
                    return {}
            """,
            "tests/test_x.py": "from fastapi import FastAPI\napp = FastAPI()\n",
        },
    )
    found = detect_python_service(tmp_path)
    assert found is not None
    assert found.command[:4] == ["{python}", "-m", "uvicorn", "svc.main:app"]
    assert "--port" in found.command and "{port}" in found.command
    assert found.command[found.command.index("--host") + 1] == "127.0.0.1"
    assert found.health_path == "/healthz"
    assert found.source == "FastAPI app svc.main:app (uvicorn)"


def test_fastapi_without_a_health_route_is_ready_at_its_schema(tmp_path: Path) -> None:
    write_tree(tmp_path, {"app.py": "import fastapi\napi = fastapi.FastAPI()\n", "setup.py": ""})
    found = detect_python_service(tmp_path)
    assert found is not None
    assert found.command[3] == "app:api"
    assert found.health_path == "/openapi.json"


def test_src_layout_factory_runs_with_factory_flag_and_pythonpath(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {
            "pyproject.toml": PYPROJECT,
            "src/svc/__init__.py": "",
            "src/svc/web.py": """
                from starlette.applications import Starlette

                def create_app():
                    return Starlette(routes=[])
            """,
        },
    )
    found = detect_python_service(tmp_path)
    assert found is not None
    assert found.command[3] == "svc.web:create_app"
    assert found.command[-1] == "--factory"
    assert found.env["PYTHONPATH"] == "src"


@pytest.mark.parametrize(
    ("declared", "server"),
    [(frozenset({"gunicorn"}), "gunicorn"), (frozenset(), "flask")],
)
def test_flask_app_under_the_declared_wsgi_server(
    tmp_path: Path, declared: frozenset[str], server: str
) -> None:
    write_tree(
        tmp_path,
        {
            "pyproject.toml": PYPROJECT,
            "wsgi.py": """
                from flask import Flask

                app = Flask(__name__)

                @app.route("/ping")
                def ping():
                    return "pong"
            """,
        },
    )
    found = detect_python_service(tmp_path, declared)
    assert found is not None
    assert found.command[:3] == ["{python}", "-m", server]
    assert any("wsgi:app" in part for part in found.command)
    assert found.health_path == "/ping"


def test_flask_factory_with_its_routes_on_blueprints(tmp_path: Path) -> None:
    # Flask's own tutorial shape: the factory declares no route, the blueprints do.
    write_tree(
        tmp_path,
        {
            "requirements.txt": "flask\ngunicorn\n",
            "src/shop/__init__.py": """
                from flask import Flask

                from shop import admin, routes

                def create_app():
                    app = Flask(__name__)
                    app.register_blueprint(routes.api)
                    app.register_blueprint(admin.bp, url_prefix="/admin")
                    return app
            """,
            "src/shop/routes.py": """
                from flask import Blueprint

                api = Blueprint("api", __name__, url_prefix="/v1")

                @api.get("/items")
                def items():
                    return []

                @api.get("/healthz")
                def health():
                    return {}
            """,
            "src/shop/admin.py": """
                from flask import Blueprint

                bp = Blueprint("admin", __name__)

                @bp.route("/health")
                def health():
                    return {}
            """,
        },
    )
    found = detect_python_service(tmp_path, frozenset({"gunicorn"}))
    assert found is not None
    assert found.command[-1] == "shop:create_app()"
    assert found.env["PYTHONPATH"] == "src"
    # Both prefixes count: the blueprint's own and the one it is registered with.
    assert found.health_path == "/admin/health"
    admin = tmp_path / "src" / "shop" / "admin.py"
    admin.write_text(admin.read_text().replace("/health", "/status-page"))
    assert detect_python_service(tmp_path).health_path == "/v1/healthz"  # type: ignore[union-attr]
    # A prefix that is not a literal: those paths are unknown, and not guessed.
    init = tmp_path / "src" / "shop" / "__init__.py"
    init.write_text(
        init.read_text().replace(
            "app.register_blueprint(routes.api)",
            "app.register_blueprint(routes.api, url_prefix=PREFIX)",
        )
    )
    assert detect_python_service(tmp_path).health_path == "/admin/status-page"  # type: ignore[union-attr]


def test_a_fastapi_router_health_route_beats_the_schema(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {
            "pyproject.toml": PYPROJECT,
            "svc/__init__.py": "",
            "svc/main.py": """
                from fastapi import FastAPI

                from svc import ops

                app = FastAPI()
                app.include_router(ops.router, prefix="/ops")
            """,
            "svc/ops.py": """
                from fastapi import APIRouter

                router = APIRouter()

                @router.get("/health")
                def health():
                    return {}
            """,
            "svc/client.py": """
                import httpx

                def fetch(session):
                    return session.get("/health")  # not a route: no router receives it
            """,
        },
    )
    found = detect_python_service(tmp_path)
    assert found is not None and found.health_path == "/ops/health"
    (tmp_path / "svc" / "main.py").write_text(
        "from fastapi import FastAPI\nfrom svc import ops\n"
        "app = FastAPI()\napp.include_router(ops.router, prefix=settings.PREFIX)\n"
    )
    assert detect_python_service(tmp_path).health_path == "/openapi.json"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("main", "health"),
    [
        # Each module's `router`, told apart by its module.
        (
            'app.include_router(users.router, prefix="/users")\n'
            'app.include_router(ops.router, prefix="/ops")\n',
            "/ops/health",
        ),
        # A bare name two modules declare: which one is meant is not known.
        ('app.include_router(router, prefix="/ops")\n', "/openapi.json"),
        # Never mounted: the route is not served.
        ('app.include_router(users.router, prefix="/users")\n', "/openapi.json"),
        # Mounted on another router, whose own mount is what counts: not followed.
        (
            "users.router.include_router(ops.router)\napp.include_router(users.router)\n",
            "/openapi.json",
        ),
    ],
)
def test_router_paths_count_only_when_their_mount_is_certain(
    tmp_path: Path, main: str, health: str
) -> None:
    router = """
        from fastapi import APIRouter

        router = APIRouter()

        @router.get("/health")
        def health():
            return {}
    """
    write_tree(
        tmp_path,
        {
            "pyproject.toml": PYPROJECT,
            "svc/__init__.py": "",
            "svc/main.py": "from fastapi import FastAPI\nfrom svc import ops, users\n"
            "app = FastAPI()\n" + main,
            "svc/ops.py": router,
            "svc/users.py": router.replace("/health", "/"),
        },
    )
    found = detect_python_service(tmp_path)
    assert found is not None and found.health_path == health


def test_aiohttp_factory_and_django_manage_py(tmp_path: Path) -> None:
    aio = write_tree(
        tmp_path / "aio",
        {
            "server.py": """
                from aiohttp import web

                def make_app(argv):
                    app = web.Application()
                    app.router.add_get("/health", lambda r: web.Response())
                    return app
            """,
        },
    )
    found = detect_python_service(aio)
    assert found is not None
    assert found.command == [
        "{python}",
        "-m",
        "aiohttp.web",
        "-H",
        "127.0.0.1",
        "-P",
        "{port}",
        "server:make_app",
    ]
    assert found.health_path == "/health"

    django = write_tree(
        tmp_path / "dj",
        {
            "manage.py": "import os\nos.environ.setdefault('DJANGO_SETTINGS_MODULE', 's')\n",
            "site/urls.py": "from django.urls import path\nurlpatterns = [path('status/', v)]\n",
        },
    )
    found = detect_python_service(django)
    assert found is not None
    assert found.command == [
        "{python}",
        "manage.py",
        "runserver",
        "127.0.0.1:{port}",
        "--noreload",
    ]
    assert found.health_path == "/status/"


def test_main_package_then_project_scripts(tmp_path: Path) -> None:
    main = write_tree(
        tmp_path / "main",
        {"pyproject.toml": PYPROJECT, "svc/__init__.py": "", "svc/__main__.py": "print(1)\n"},
    )
    found = detect_python_service(main)
    assert found is not None
    assert found.command == ["{python}", "-m", "svc", "--port", "{port}"]
    assert found.env == {"PORT": "{port}"}

    scripts = write_tree(
        tmp_path / "scripts",
        {
            "pyproject.toml": PYPROJECT
            + "[project.scripts]\nsvc-migrate = 'svc.db:migrate'\nsvc-serve = 'svc.cli:serve'\n",
            "svc/__init__.py": "",
            "svc/cli.py": "def serve():\n    pass\n",
        },
    )
    found = detect_python_service(scripts)
    assert found is not None
    assert found.command[:2] == ["{python}", "-c"]
    assert "from svc.cli import serve" in found.command[2]
    assert found.command[-2:] == ["--port", "{port}"]


def test_nothing_to_find_and_what_is_own_code(tmp_path: Path) -> None:
    write_tree(tmp_path, {"pyproject.toml": PYPROJECT, "lib/__init__.py": "", "tool.py": "x = 1\n"})
    assert detect_python_service(tmp_path) is None
    assert own_modules(tmp_path) == {"lib", "tool"}
    config = load_gate_config(tmp_path)
    assert (config.service, config.service_source) == (None, "")


def test_node_start_script_or_main(tmp_path: Path) -> None:
    write_tree(tmp_path, {"src/app.js": "if (url === '/healthz') {}\n"})
    (tmp_path / "package.json").write_text(json.dumps({"scripts": {"start": "node src/app.js"}}))
    found = detect_node_service(tmp_path)
    assert found is not None
    assert (found.command, found.health_path, found.env) == (
        ["npm", "start"],
        "/healthz",
        {"PORT": "{port}"},
    )
    (tmp_path / "package.json").write_text(json.dumps({"main": "src/app.js"}))
    found = detect_node_service(tmp_path)
    assert found is not None
    assert found.command == ["node", "src/app.js"]
    (tmp_path / "package.json").write_text(json.dumps({"main": "../outside.js"}))
    assert detect_node_service(tmp_path) is None


def test_the_proposal_file(tmp_path: Path) -> None:
    assert read_proposal(tmp_path) is None
    path = tmp_path / SERVICE_FILE
    path.parent.mkdir()
    path.write_text('command = ["{python}", "-m", "app"]\n')
    problem = read_proposal(tmp_path)
    assert isinstance(problem, str)
    assert problem.startswith(f"{SERVICE_FILE}: command: ") and "{port}" in problem
    path.write_text('command = "python -m app"\n')
    assert isinstance(read_proposal(tmp_path), str)  # a shell string is refused
    path.write_text(
        'command = ["{python}", "-m", "app", "--port", "{port}"]\nhealth_path = "/up"\n'
    )
    proposal = read_proposal(tmp_path)
    assert not isinstance(proposal, str) and proposal is not None
    assert (proposal.command[-1], proposal.health_path) == ("{port}", "/up")
