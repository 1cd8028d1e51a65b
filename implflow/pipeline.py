"""The default pipeline as data, and how an input turns into the list of phases to run.

Pure functions only: the workflow calls them, so they must be deterministic.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy

from implflow import errors
from implflow.models import (
    PHASES,
    Budget,
    ImplementationInput,
    PhaseInput,
    PhaseSpec,
    PhaseStatus,
    PhaseSummary,
    PrepareInput,
    PullRequestInput,
    RetrySpec,
)

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


def retry_policy(spec: PhaseSpec) -> RetryPolicy:
    """The Temporal retry policy of a phase's named, bounded ``RetrySpec``."""
    r = spec.retry
    return RetryPolicy(
        maximum_attempts=r.maximum_attempts,
        initial_interval=timedelta(seconds=r.initial_interval_s),
        backoff_coefficient=r.backoff,
        maximum_interval=timedelta(seconds=r.maximum_interval_s),
        non_retryable_error_types=list(errors.NON_RETRYABLE_PHASE_ERRORS),
    )


def prepare_input(workflow_id: str, task: ImplementationInput) -> PrepareInput:
    """What prepare checks before the first phase: the repo, the executor, its commands."""
    return PrepareInput(
        workflow_id=workflow_id,
        repo=task.repo,
        executor=task.executor,
        commands={k: list(v) for k, v in task.commands.items()},
        pull_request=task.pull_request,
    )


def pull_request_input(
    workflow_id: str, task: ImplementationInput, branch: str
) -> PullRequestInput:
    """The pull request opened for the task branch when the pipeline is through."""
    return PullRequestInput(
        workflow_id=workflow_id,
        repo=task.repo,
        branch=branch,
        title=task.title,
        description=task.description,
    )


def phase_input(
    workflow_id: str,
    task: ImplementationInput,
    spec: PhaseSpec,
    round: int,
    executor: str,
    feedback: list[str],
    done: list[PhaseStatus],
    budget: Budget,
    branch_tip: str | None = None,
) -> PhaseInput:
    """What one phase round is given: the task, its phase spec, feedback and what came before."""
    return PhaseInput(
        workflow_id=workflow_id,
        title=task.title,
        description=task.description,
        repo=task.repo,
        executor=executor,
        phase=spec,
        round=round,
        feedback=list(feedback),
        previous=[PhaseSummary(name=p.name, round=p.rounds, summary=p.outcome) for p in done],
        command=task.commands.get(spec.name),
        budget=budget,
        branch_tip=branch_tip,
        cassette=task.cassette,
        record=task.record,
        specialist=task.specialist,
    )
