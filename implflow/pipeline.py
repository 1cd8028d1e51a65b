"""The default pipeline as data, and how an input turns into the list of phases to run.

Pure functions only: the workflow calls them, so they must be deterministic.
"""

from __future__ import annotations

from implflow.models import PHASES, ImplementationInput, PhaseSpec, RetrySpec

DEFAULT_APPROVALS: tuple[str, ...] = ("design", "verify")

# Named, bounded retry policies. Agent phases are expensive: few attempts, long backoff.
AGENT_RETRY = RetrySpec(name="agent-phase", maximum_attempts=3, initial_interval_s=10.0)
CHECK_RETRY = RetrySpec(name="check-phase", maximum_attempts=2, initial_interval_s=5.0)

_INSTRUCTIONS: dict[str, str] = {
    "review": (
        "Read the task, the repository and its guidelines. Write a structured review: "
        "requirements, acceptance criteria, risks, open questions (mark blocking ones)."
    ),
    "design": "Write the service design and the API contract (OpenAPI or equivalent).",
    "implement": "Implement the business logic behind the contract.",
    "validate": "Add input validation and error handling at every boundary.",
    "optimize": "Remove N+1 queries; add indexes and caching where they pay off.",
    "test": "Write unit and integration tests; reach the coverage threshold.",
    "document": "Document the API and the complex logic; update the README.",
    "verify": "Check the performance and security targets and report the figures.",
}

_TIMEOUTS_S: dict[str, float] = {
    "review": 1800.0,
    "design": 2700.0,
    "implement": 5400.0,
    "validate": 3600.0,
    "optimize": 3600.0,
    "test": 5400.0,
    "document": 2700.0,
    "verify": 3600.0,
}


def default_phases() -> list[PhaseSpec]:
    """The eight phases with their instructions, timeouts and retry policies."""
    return [
        PhaseSpec(
            name=name,
            instructions=_INSTRUCTIONS[name],
            approval=name in DEFAULT_APPROVALS,
            timeout_s=_TIMEOUTS_S[name],
            heartbeat_s=60.0,
            retry=CHECK_RETRY if name == "verify" else AGENT_RETRY,
        )
        for name in PHASES
    ]


def build_pipeline(task: ImplementationInput) -> list[PhaseSpec]:
    """The phases this task runs, in order: custom or default, minus skips, with approvals set."""
    phases = [p.model_copy(deep=True) for p in (task.phases or default_phases())]
    if task.approval.after is not None:
        wanted = set(task.approval.after)
        for p in phases:
            p.approval = p.name in wanted
    return [p for p in phases if p.name not in set(task.skip)]
