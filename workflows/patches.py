"""The named patches of the workflows: one per change that alters their history.

Each is read once per run with ``workflow.patched``; a history recorded before the patch
replays the old way (tests/workflows/test_replay.py replays saved histories of each, and
a negative test shows that dropping a patch breaks them).
"""

PATCH_GATES_AND_BUDGETS = "gates-and-budgets-v1"
"""Workflows started before this patch run without gates and budget stops, as they began."""
PATCH_PULL_REQUEST = "pull-request-v1"
"""Workflows started before this patch never open a pull request."""
PATCH_GATE_DECISIONS = "gate-decisions-v1"
"""Since this patch a failed gate takes waive (with a reason), reject or abort, never a plain
approve; and a phase whose executor had nothing to do gets no repair rounds (a person decides
at once: re-running it cannot change the result)."""

PATCH_CANCELLING = "cancelling-state-v1"
"""Since this patch a cancel request shows ``ImplState=cancelling`` until the executor stops."""

PATCH_REPAIRING_STATE = "repairing-state-v1"
"""Since this patch a repair round shows ``ImplState=repairing`` while it runs (before, the
round's start set ``running`` right after ``repairing``: ``list --state repairing`` found none)."""


# --- PlanWorkflow ----------------------------------------------------------------------

PATCH_PLAN_PULL_REQUEST = "plan-pull-request-v1"
"""Since this patch the plan's pull request is opened by ``open_plan_pull_request``, in a
checkout of ``implflow/plan/<id>``; before it, the task activity ran it on a checkout of a
branch named after the plan id (the plan's base, not its result)."""

PATCH_PLAN_PARALLEL_STARTS = "plan-parallel-starts-v1"
"""Since this patch the ready tasks' branches are prepared side by side and their children
started together (before: one branch, then one child, at a time: about 1.5 tasks ran at once
whatever the ``concurrency``)."""
