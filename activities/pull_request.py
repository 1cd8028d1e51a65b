"""Open a pull request: run the worker's ``IMPLFLOW_PR_COMMAND`` in a checkout of a branch.

One runner for a task's branch (``ImplActivities.open_pull_request``) and a plan's
integration branch (``PlanActivities.open_plan_pull_request``). Placeholders ``{branch}``,
``{title}``, ``{description}`` and ``{workflow_id}`` each fill one argv element: task text
never becomes shell syntax.
"""

from __future__ import annotations

from pathlib import Path

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.process import run_process, scrubbed_env
from implflow.errors import EXECUTOR_UNAVAILABLE, PULL_REQUEST_FAILED
from implflow.models import PullRequestInput
from implflow.settings import Settings

EXAMPLE = (
    '["gh", "pr", "create", "--head", "{branch}", "--title", "{title}", "--body", "{description}"]'
)


def pr_command(settings: Settings, asked_by: str) -> list[str]:
    """The worker's pull-request command; none is a setup problem, never retried."""
    if not settings.pr_command:
        raise ApplicationError(
            f"{asked_by} was asked for but this worker has no IMPLFLOW_PR_COMMAND (e.g. {EXAMPLE})",
            type=EXECUTOR_UNAVAILABLE,
            non_retryable=True,
        )
    return list(settings.pr_command)


def fill(template: str, values: dict[str, str]) -> str:
    """Replace the known ``{placeholder}``s in one argv element; others stay as typed."""
    for key, value in values.items():
        template = template.replace("{" + key + "}", value)
    return template


async def open_pull_request(
    command: list[str], inp: PullRequestInput, cwd: Path, log_path: Path, settings: Settings
) -> str:
    """Run ``command`` for ``inp.branch`` in ``cwd``; its last output line (the PR's URL)."""
    values = {
        "branch": inp.branch,
        "title": inp.title,
        "description": inp.description,
        "workflow_id": inp.workflow_id,
    }
    argv = [fill(part, values) for part in command]
    try:
        result = await run_process(
            argv,
            cwd=cwd,
            env=scrubbed_env(settings.env_allowlist, {}),
            log_path=log_path,
            timeout_s=240,
            heartbeat=activity.heartbeat,
        )
    except FileNotFoundError:
        raise ApplicationError(
            f"IMPLFLOW_PR_COMMAND: {command[0]!r} is not installed on this worker",
            type=EXECUTOR_UNAVAILABLE,
            non_retryable=True,
        ) from None
    if result.returncode != 0:
        raise ApplicationError(
            f"pull request command exited {result.returncode}: {result.tail[-300:]}",
            type=PULL_REQUEST_FAILED,
        )
    lines = result.tail.strip().splitlines()
    return lines[-1][:500] if lines else ""
