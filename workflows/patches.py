"""The named patches of ``ImplementationWorkflow``: one per change that alters its history.

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
