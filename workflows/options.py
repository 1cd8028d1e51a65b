"""Activity options: one named configuration per activity, passed as ``**config``.

In the shape of pydantic-ai's ``ActivityConfig``: a typed dict of the keyword arguments of
``workflow.execute_activity_method``, so timeouts and retry policies are read in one place.
A phase's options depend on its spec and are built by ``phase_config``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TypedDict

from temporalio import workflow
from temporalio.common import Priority, RetryPolicy

from implflow import errors
from implflow.models import PhaseSpec
from implflow.pipeline import retry_policy


class ActivityConfig(TypedDict, total=False):
    """Keyword arguments of ``execute_activity_method`` that implflow sets."""

    start_to_close_timeout: timedelta
    heartbeat_timeout: timedelta
    retry_policy: RetryPolicy
    cancellation_type: workflow.ActivityCancellationType
    priority: Priority


AFTER_A_DECISION = Priority(priority_key=1)
"""Work that resumes right after a person's decision goes ahead of queued work (default 3):
people wait on it, a backlog of agent phases does not."""


PREPARE = ActivityConfig(
    start_to_close_timeout=timedelta(minutes=10),
    heartbeat_timeout=timedelta(seconds=60),
    retry_policy=RetryPolicy(
        maximum_attempts=3, non_retryable_error_types=list(errors.NON_RETRYABLE_PHASE_ERRORS)
    ),
)
"""Check the repo, the executor and the commands; clone the task branch (heartbeating): a
few tries, bad config never retried."""

PULL_REQUEST = ActivityConfig(
    start_to_close_timeout=timedelta(minutes=5), retry_policy=PREPARE["retry_policy"]
)
"""Run the configured pull-request command once the pipeline is through."""

GATE = ActivityConfig(
    start_to_close_timeout=timedelta(minutes=30),
    heartbeat_timeout=timedelta(minutes=2),
    retry_policy=RetryPolicy(maximum_attempts=2, initial_interval=timedelta(seconds=10)),
)
"""A phase's quality checks: real tools, up to half an hour, heartbeating."""

REMINDER = ActivityConfig(
    start_to_close_timeout=timedelta(seconds=30),
    retry_policy=RetryPolicy(maximum_attempts=5, initial_interval=timedelta(seconds=10)),
)
"""Tell people an approval is overdue (log line, webhook)."""


def phase_config(spec: PhaseSpec, after_decision: bool = False) -> ActivityConfig:
    """A phase round: the spec's timeout and heartbeat, its named retry policy; a cancel waits
    for the executor to be stopped. Right after a person's decision it runs first."""
    config = ActivityConfig(
        start_to_close_timeout=timedelta(seconds=spec.timeout_s + 60),
        heartbeat_timeout=timedelta(seconds=spec.heartbeat_s),
        retry_policy=retry_policy(spec),
        cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
    )
    if after_decision:
        config["priority"] = AFTER_A_DECISION
    return config


# --- the plan's activities (workflows/plan.py) ---------------------------------------------

_GIT_RETRY = RetryPolicy(
    maximum_attempts=5,
    initial_interval=timedelta(seconds=5),
    non_retryable_error_types=list(errors.NON_RETRYABLE_PHASE_ERRORS),
)

PLAN_PREPARE = ActivityConfig(
    start_to_close_timeout=timedelta(minutes=5), retry_policy=PREPARE["retry_policy"]
)
"""Check the plan's repo, base and specialists; find the tasks an earlier run started."""

TASK_BRANCH = ActivityConfig(start_to_close_timeout=timedelta(minutes=10), retry_policy=_GIT_RETRY)
"""Create a task's branch from its dependencies' results (a merge)."""

INTEGRATE = ActivityConfig(
    start_to_close_timeout=timedelta(hours=2),
    heartbeat_timeout=timedelta(minutes=5),
    retry_policy=_GIT_RETRY,
)
"""Merge the task branches into the plan's branch and test it once more."""


def observe_config(wait_s: float) -> ActivityConfig:
    """Follow the plan's running tasks: a long poll of ``wait_s``, heartbeating, retried
    without end (read-only, and the plan cannot go on without knowing its tasks)."""
    return ActivityConfig(
        start_to_close_timeout=timedelta(seconds=wait_s + 120),
        heartbeat_timeout=timedelta(seconds=60),
        retry_policy=RetryPolicy(
            initial_interval=timedelta(seconds=5), maximum_interval=timedelta(seconds=60)
        ),
    )
