"""Static checks of deploy/: compose file, Dockerfile and Kubernetes manifests.

No Docker engine or cluster is needed. The compose file is validated against the official
compose-spec JSON schema that check-jsonschema vendors, then against the properties this
project relies on (start order, loopback-only ports, required secrets, search attributes).
Each checker is also shown a bad input, so a vacuous checker fails here.
"""

from __future__ import annotations

import fnmatch
import importlib.resources
import json
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from implflow import TASK_QUEUE
from implflow.server import SEARCH_ATTRIBUTES as WORKER_CHECKS_FOR

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
K8S_DIR = DEPLOY / "k8s"

WORKER_ARGV = ["python", "worker.py"]
# What the worker refuses to start without (implflow/server.py), all Keyword per DESIGN.md.
SEARCH_ATTRIBUTES = dict.fromkeys(WORKER_CHECKS_FOR, "Keyword")
SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|PWD|SECRET|TOKEN|API_KEY)$")
ONE_SHOT_CONDITION = "service_completed_successfully"
WAIT_CONDITIONS = {"service_healthy", ONE_SHOT_CONDITION}


# --- helpers ----------------------------------------------------------------------------

_INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)


class InterpolationError(ValueError):
    """A compose variable reference that `docker compose` would refuse."""


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose-style ``$VAR``/``${VAR:-d}``/``${VAR:?msg}`` substitution, ``$$`` escapes."""
    out: list[str] = []
    pos = 0
    for match in _INTERPOLATION.finditer(text):
        if "$" in text[pos : match.start()]:
            raise InterpolationError(f"invalid interpolation near {text[pos : match.end()]!r}")
        out.append(text[pos : match.start()])
        pos = match.end()
        if match["escaped"]:
            out.append("$")
            continue
        name = match["braced"] or match["named"]
        op, arg = match["op"], match["arg"]
        is_set = name in env
        value = env.get(name, "")
        filled = is_set and (value != "" or not (op or "").startswith(":"))
        if op in (":?", "?") and not filled:
            raise InterpolationError(f"required variable {name} is missing a value: {arg}")
        if op in (":-", "-"):
            value = value if filled else arg
        elif op in (":+", "+"):
            value = arg if filled else ""
        out.append(value)
    if "$" in text[pos:]:
        raise InterpolationError(f"invalid interpolation near {text[pos:]!r}")
    out.append(text[pos:])
    return "".join(out)


def interpolate_tree(node: Any, env: dict[str, str]) -> Any:
    """Interpolate every string value (not keys) of a parsed compose document."""
    if isinstance(node, dict):
        return {key: interpolate_tree(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(value, env) for value in node]
    if isinstance(node, str):
        return interpolate(node, env)
    return node


def port_problems(port: Any) -> list[str]:
    """Why a compose `ports` entry would be reachable from other machines (empty: fine)."""
    if isinstance(port, dict):
        if "published" in port and port.get("host_ip") != "127.0.0.1":
            return [f"{port}: long syntax without host_ip 127.0.0.1"]
        return []
    parts = str(port).split(":")
    if len(parts) < 3 or parts[0] != "127.0.0.1":
        return [f"{port!r}: publish as 127.0.0.1:HOST:CONTAINER"]
    return []


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs; continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        pending = ""
    assert not pending, "Dockerfile ends inside a line continuation"
    return instructions


def compose_env(**extra: str) -> dict[str, str]:
    return {"POSTGRES_PASSWORD": "not-a-real-password", **extra}


def service_command_text(service: dict[str, Any]) -> str:
    command = service.get("command", "")
    return "\n".join(command) if isinstance(command, list) else str(command)


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose_raw() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose(compose_raw: dict[str, Any]) -> dict[str, Any]:
    """The compose file as `docker compose config` would see it with the variables set."""
    return interpolate_tree(compose_raw, compose_env())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def compose_schema_validator() -> Any:
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema = json.loads((vendor / "compose-spec.json").read_text(encoding="utf-8"))
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    return validator_cls(schema)


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def k8s_docs() -> dict[str, list[dict[str, Any]]]:
    docs: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(K8S_DIR.glob("*.y*ml")):
        loaded = yaml.safe_load_all(path.read_text(encoding="utf-8"))
        docs[path.name] = [doc for doc in loaded if doc is not None]
    return docs


def k8s_kind(docs: dict[str, list[dict[str, Any]]], kind: str) -> list[dict[str, Any]]:
    return [doc for file_docs in docs.values() for doc in file_docs if doc.get("kind") == kind]


# --- the checkers reject bad input --------------------------------------------------------


@pytest.mark.parametrize(
    "port", ["7233:7233", "0.0.0.0:8233:8080", 8080, {"target": 80, "published": 8080}]
)
def test_port_checker_rejects_public_ports(port: Any) -> None:
    assert port_problems(port)


@pytest.mark.parametrize("text", ["echo $(date)", "n=$((n + 1))", "${unclosed", "cost: 5$"])
def test_interpolation_rejects_what_compose_rejects(text: str) -> None:
    with pytest.raises(InterpolationError):
        interpolate(text, {})


def test_interpolation_follows_compose_rules() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("$$x ${SET} ${MISSING:-d} ${EMPTY:-d} ${EMPTY-d} ${SET:+a}", env) == (
        "$x x d d  a"
    )
    with pytest.raises(InterpolationError, match="EMPTY"):
        interpolate("${EMPTY:?say so}", env)


def test_schema_validator_rejects_a_bad_compose_file(compose_schema_validator: Any) -> None:
    bad = {"services": {"a": {"image": "x", "depends_on": {"b": {"condition": "whenever"}}}}}
    assert list(compose_schema_validator.iter_errors(bad))


def test_dockerfile_parser_joins_continuations() -> None:
    parsed = parse_dockerfile("FROM a\n# note\nRUN one \\\n    two\nUSER 1\n")
    assert parsed == [("FROM", "a"), ("RUN", "one  two"), ("USER", "1")]


# --- docker-compose.yml ---------------------------------------------------------------------


def test_compose_file_matches_the_compose_spec_schema(
    compose_raw: dict[str, Any], compose_schema_validator: Any
) -> None:
    errors = [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in compose_schema_validator.iter_errors(compose_raw)
    ]
    assert not errors, "\n".join(errors)


def test_compose_file_interpolates_only_with_the_password_set(compose_raw: dict[str, Any]) -> None:
    with pytest.raises(InterpolationError, match="POSTGRES_PASSWORD"):
        interpolate_tree(compose_raw, {})
    with pytest.raises(InterpolationError, match="POSTGRES_PASSWORD"):
        interpolate_tree(compose_raw, {"POSTGRES_PASSWORD": ""})


def test_every_dependency_waits_for_a_condition(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        depends_on = service.get("depends_on", {})
        assert isinstance(depends_on, dict), f"{name}: depends_on must name a condition"
        for target, spec in depends_on.items():
            assert target in services, f"{name} depends on unknown service {target}"
            assert spec.get("condition") in WAIT_CONDITIONS, f"{name} -> {target}: {spec}"


def test_services_with_dependents_are_healthchecked_or_one_shot(
    services: dict[str, dict[str, Any]],
) -> None:
    """A long-running dependency has a healthcheck; a one-shot one must be able to exit."""
    waited_on = {
        (target, spec["condition"])
        for service in services.values()
        for target, spec in service.get("depends_on", {}).items()
    }
    assert waited_on, "no service waits on another"
    for target, condition in waited_on:
        service = services[target]
        if condition == ONE_SHOT_CONDITION:
            assert service.get("restart", "no") in ("no", "on-failure") or str(
                service.get("restart")
            ).startswith("on-failure:"), f"{target} restarts forever, so it never completes"
            assert "healthcheck" not in service or service["healthcheck"].get("disable")
        else:
            check = service.get("healthcheck", {})
            assert check.get("test"), f"{target} has no healthcheck"
            assert not check.get("disable"), f"{target} disables its healthcheck"


def test_long_running_services_restart(services: dict[str, dict[str, Any]]) -> None:
    one_shots = {
        target
        for service in services.values()
        for target, spec in service.get("depends_on", {}).items()
        if spec["condition"] == ONE_SHOT_CONDITION
    }
    for name, service in services.items():
        if name not in one_shots:
            assert service.get("restart") in ("unless-stopped", "always"), name


def test_no_port_is_published_beyond_loopback(services: dict[str, dict[str, Any]]) -> None:
    problems = [
        f"{name}: {problem}"
        for name, service in services.items()
        for port in service.get("ports", [])
        for problem in port_problems(port)
    ]
    assert not problems, problems
    assert all(service.get("network_mode") != "host" for service in services.values())


def test_secrets_are_required_or_passed_through(compose_raw: dict[str, Any]) -> None:
    """A secret is either `${VAR:?message}` or a bare pass-through: never a literal/default."""
    required = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*):\?[^}]+\}$")
    seen_required = set()
    for name, service in compose_raw["services"].items():
        environment = service.get("environment", {})
        assert isinstance(environment, dict), f"{name}: use the mapping form of environment"
        for key, value in environment.items():
            if not SECRET_NAME.search(key) or value is None:
                continue
            match = required.match(str(value))
            assert match, f"{name}.{key} = {value!r}: use ${{VAR:?message}}"
            seen_required.add(match[1])
    assert "POSTGRES_PASSWORD" in seen_required


def test_inline_scripts_escape_their_shell_variables(compose_raw: dict[str, Any]) -> None:
    """A `$x` meant for the container's shell must be `$$x`, or compose substitutes it."""
    for name, service in compose_raw["services"].items():
        script = service_command_text(service)
        unescaped = [m[0] for m in _INTERPOLATION.finditer(script) if not m["escaped"]]
        assert not unescaped, f"{name}: compose would substitute {unescaped}"


def test_temporal_runs_on_postgres_and_ui_on_8233(services: dict[str, dict[str, Any]]) -> None:
    temporal = services["temporal"]
    assert temporal["image"].startswith("temporalio/server:")
    assert temporal["environment"]["DB"] == "postgres12"
    assert temporal["environment"]["POSTGRES_SEEDS"] in services
    ui = services["temporal-ui"]
    assert ui["image"].startswith("temporalio/ui:")
    assert "127.0.0.1:8233:8080" in ui["ports"]
    assert ui["environment"]["TEMPORAL_ADDRESS"] == "temporal:7233"


def test_worker_builds_from_the_dockerfile_and_runs_worker_py(
    services: dict[str, dict[str, Any]],
) -> None:
    worker = services["worker"]
    build = worker["build"]
    context = (COMPOSE_FILE.parent / build["context"]).resolve()
    assert context == ROOT
    assert (context / build["dockerfile"]).resolve() == DOCKERFILE
    assert worker["command"] == WORKER_ARGV
    assert int(worker["deploy"]["replicas"]) >= 2
    environment = worker["environment"]
    assert environment["IMPLFLOW_TASK_QUEUE"] == TASK_QUEUE
    assert environment["TEMPORAL_ADDRESS"] == "temporal:7233"
    grace = float(environment["IMPLFLOW_SHUTDOWN_GRACE_S"])
    stop_grace = worker["stop_grace_period"]
    assert stop_grace.endswith("s")
    assert float(stop_grace[:-1]) > grace, "SIGKILL would cut the graceful shutdown short"


def test_search_attributes_are_registered_before_workers_start(
    services: dict[str, dict[str, Any]],
) -> None:
    registrars = [
        name
        for name, service in services.items()
        if "search-attribute create" in service_command_text(service)
    ]
    assert len(registrars) == 1, registrars
    registrar = services[registrars[0]]
    assert registrar["image"].startswith("temporalio/admin-tools:")
    line = next(
        line
        for line in service_command_text(registrar).splitlines()
        if "search-attribute create" in line
    )
    argv = shlex.split(line.partition("&&")[0])
    names = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--name"]
    types = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--type"]
    assert dict(zip(names, types, strict=True)) == SEARCH_ATTRIBUTES
    assert (
        argv[argv.index("--namespace") + 1]
        == services["worker"]["environment"]["TEMPORAL_NAMESPACE"]
    )
    worker_waits = services["worker"]["depends_on"]
    assert worker_waits[registrars[0]]["condition"] == ONE_SHOT_CONDITION


# --- Dockerfile -------------------------------------------------------------------------------


def test_base_image_is_pinned_python_311(dockerfile: list[tuple[str, str]]) -> None:
    bases = [args.split()[0] for keyword, args in dockerfile if keyword == "FROM"]
    assert bases, "no FROM"
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?", bases[-1])


def test_image_runs_as_non_root_after_the_last_build_step(
    dockerfile: list[tuple[str, str]],
) -> None:
    keywords = [keyword for keyword, _ in dockerfile]
    assert "USER" in keywords
    last_user = len(keywords) - 1 - keywords[::-1].index("USER")
    assert "RUN" not in keywords[last_user:], "a RUN after the final USER runs as that user"
    user = dockerfile[last_user][1].split(":")[0]
    assert user not in ("root", "0")


def test_image_runs_worker_py_in_exec_form(dockerfile: list[tuple[str, str]]) -> None:
    instructions = dict(dockerfile)
    cmd = json.loads(instructions["CMD"])  # exec form: SIGTERM reaches the process
    assert cmd == WORKER_ARGV
    entrypoint = json.loads(instructions.get("ENTRYPOINT", "[]"))
    assert "worker.py" not in entrypoint


def test_image_installs_git_and_the_package(dockerfile: list[tuple[str, str]]) -> None:
    runs = [args for keyword, args in dockerfile if keyword == "RUN"]
    assert any(re.search(r"apt-get install .*\bgit\b", run) for run in runs)
    assert any(re.search(r"pip install (\.|'\.\[[a-z,]+\]')(\s|$)", run) for run in runs)


def test_copy_sources_exist_and_are_not_ignored(dockerfile: list[tuple[str, str]]) -> None:
    ignore_file = DOCKERFILE.with_name(DOCKERFILE.name + ".dockerignore")
    ignored = [
        line.strip()
        for line in ignore_file.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = []
    for keyword, args in dockerfile:
        if keyword not in ("COPY", "ADD"):
            continue
        parts = [part for part in shlex.split(args) if not part.startswith("--")]
        assert not any(part.startswith("--from") for part in shlex.split(args))
        copied.extend(parts[:-1])
    assert "pyproject.toml" in copied
    assert "worker.py" in copied
    for source in copied:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
        assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), source
    for package in ("implflow", "workflows", "activities"):
        assert package in copied, f"{package}/ is not copied into the image"


# --- Kubernetes -------------------------------------------------------------------------------

API_VERSIONS = {
    "Deployment": "apps/v1",
    "ConfigMap": "v1",
    "Kustomization": "kustomize.config.k8s.io/v1beta1",
}


def test_k8s_documents_have_known_kinds_and_names(
    k8s_docs: dict[str, list[dict[str, Any]]],
) -> None:
    assert k8s_docs, "no manifests in deploy/k8s"
    for file, docs in k8s_docs.items():
        assert docs, f"{file} is empty"
        for doc in docs:
            kind = doc.get("kind")
            assert API_VERSIONS.get(kind) == doc.get("apiVersion"), f"{file}: {kind}"
            if kind != "Kustomization":
                assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])


def test_kustomization_lists_every_manifest(k8s_docs: dict[str, list[dict[str, Any]]]) -> None:
    (kustomization,) = k8s_kind(k8s_docs, "Kustomization")
    manifests = {file for file, docs in k8s_docs.items() if docs[0]["kind"] != "Kustomization"}
    assert set(kustomization["resources"]) == manifests


def test_configmap_holds_strings_and_no_secrets(k8s_docs: dict[str, list[dict[str, Any]]]) -> None:
    for configmap in k8s_kind(k8s_docs, "ConfigMap"):
        for key, value in configmap["data"].items():
            assert isinstance(value, str), f"{key}: ConfigMap values must be strings"
            assert not SECRET_NAME.search(key), f"{key} belongs in a Secret"
    (configmap,) = k8s_kind(k8s_docs, "ConfigMap")
    assert configmap["data"]["IMPLFLOW_TASK_QUEUE"] == TASK_QUEUE
    assert re.fullmatch(r"[a-z0-9.-]+:\d+", configmap["data"]["TEMPORAL_ADDRESS"])


def test_worker_deployment(k8s_docs: dict[str, list[dict[str, Any]]]) -> None:
    (deployment,) = k8s_kind(k8s_docs, "Deployment")
    configmaps = {cm["metadata"]["name"]: cm["data"] for cm in k8s_kind(k8s_docs, "ConfigMap")}
    spec = deployment["spec"]
    assert isinstance(spec["replicas"], int)
    assert spec["replicas"] >= 2
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()

    (container,) = pod["containers"]
    assert "command" not in container, "command replaces the image's tini entrypoint"
    assert container["args"] == WORKER_ARGV
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= container["resources"][kind].keys()

    (source,) = container["envFrom"]
    settings = configmaps[source["configMapRef"]["name"]]
    for var in container.get("env", []):
        assert "value" not in var or not SECRET_NAME.search(var["name"]), var["name"]
        if SECRET_NAME.search(var["name"]):
            assert var["valueFrom"]["secretKeyRef"]["name"]

    grace = float(settings["IMPLFLOW_SHUTDOWN_GRACE_S"])
    assert pod["terminationGracePeriodSeconds"] >= grace + 10

    security = pod["securityContext"]
    user = [args for keyword, args in parse_dockerfile(DOCKERFILE.read_text()) if keyword == "USER"]
    assert security["runAsNonRoot"] is True
    assert str(security["runAsUser"]) == user[-1].split(":")[0]

    volumes = {volume["name"] for volume in pod["volumes"]}
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    assert set(mounts.values()) <= volumes
    if container["securityContext"].get("readOnlyRootFilesystem"):
        data_dir = Path(settings["IMPLFLOW_DATA_DIR"])
        assert any(data_dir.is_relative_to(path) for path in mounts), "data dir is read-only"
        assert "/tmp" in mounts
