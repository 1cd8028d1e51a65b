"""Judge that the service's start command is known: found, configured, or proposed.

The design gate runs this check, so the person approving the design sees how the service
will be measured: the repository's ``[service] command`` (``.implflow/gates.toml``), else
what the preset detected in the code (``services.py``), else the command the agent
proposed in ``.implflow/service.toml``. The chosen command travels on the design's
``GateResult.service_command``; once the design is approved the workflow passes it to
every later gate (``GateInput.service_command``), so the agent cannot change afterwards
how its service is measured (:func:`resolve_service`).

Nothing found and nothing proposed is the agent's to fix: its instructions say to propose
a command when the gate finds none.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from activities.gates.context import Evidence, GateContext
from activities.gates.results import failed, judged
from activities.gates.schema import CheckConfig, GateConfig, ServiceConfig
from activities.gates.services import python_packages, read_proposal
from implflow.layout import GATES_FILE, SERVICE_FILE
from implflow.models import GateCheck, GateFigure

__all__ = ["APPROVED", "ServiceChoice", "design_service", "judge_service", "resolve_service"]

APPROVED = "approved with the design"

_EXAMPLE = '["{python}", "-m", "uvicorn", "app.main:app", "--port", "{port}"]'


@dataclass(frozen=True)
class ServiceChoice:
    """The service command a design gate puts before the person approving the design."""

    command: list[str] | None
    health_path: str | None
    source: str
    problem: str = ""
    """Why there is none (empty when ``command`` is set)."""


def resolve_service(
    config: GateConfig,
    workdir: Path,
    approved: list[str] | None,
    approved_health: str | None,
) -> tuple[ServiceConfig | None, str]:
    """The service a gate probes, and where its command came from.

    The repository's ``[service] command`` wins (it is read as of the task's base commit);
    then the command approved with the design; then what the preset detected.
    """
    if config.service_source == GATES_FILE or not approved:
        return config.service, config.service_source
    _, src_layout = python_packages(workdir)
    base = config.service or ServiceConfig()
    env = dict(base.env) or {"PORT": "{port}", **({"PYTHONPATH": "src"} if src_layout else {})}
    update: dict[str, object] = {"command": list(approved), "env": env}
    if approved_health:
        update["health_path"] = approved_health
    return ServiceConfig.model_validate({**base.model_dump(), **update}), APPROVED


def design_service(ctx: GateContext) -> ServiceChoice:
    """What the design gate proposes for approval: configured, detected, else proposed."""
    service = ctx.service
    if service is not None and service.command:
        return ServiceChoice(list(service.command), service.health_path, ctx.service_source)
    proposal = read_proposal(ctx.workdir)
    if isinstance(proposal, str):
        return ServiceChoice(None, None, SERVICE_FILE, problem=proposal)
    if proposal is None:
        return ServiceChoice(
            None,
            None,
            "",
            problem=(
                "no service command: none was found in the code (ASGI/WSGI app, manage.py, "
                "__main__, [project.scripts], npm start): propose one in "
                f'{SERVICE_FILE}, e.g. command = {_EXAMPLE} and health_path = "/health"'
            ),
        )
    return ServiceChoice(
        list(proposal.command), proposal.health_path, f"proposed in {SERVICE_FILE}"
    )


def judge_service(check: CheckConfig, ctx: GateContext, evidence: Evidence) -> GateCheck:
    """A service command is known, so the person approving the design can see it."""
    choice = design_service(ctx)
    rule = "a service command is configured, detected or proposed"
    if choice.command is None:
        return failed(check, choice.problem, report=SERVICE_FILE if choice.source else None)
    figures: dict[str, GateFigure] = {
        "command": " ".join(choice.command),
        "source": choice.source,
        "health_path": choice.health_path or "",
    }
    summary = f"{choice.source}: {' '.join(choice.command)} (ready at {choice.health_path})"
    return judged(check, True, summary, figures, rule, None)
