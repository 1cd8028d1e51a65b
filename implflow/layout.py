"""Where implflow keeps things on a task branch: one declaration, read by prompts and gates.

Every path here is relative to the root of the task's checkout. The specialist prompts tell
the agent to write these files and the default gates look for the same names, so an agent
that follows its instructions literally satisfies the gates' file expectations.
"""

from __future__ import annotations

IMPLFLOW_DIR = ".implflow"
"""implflow's own tree on the task branch (always committed, even when the repo ignores it)."""

GATES_FILE = f"{IMPLFLOW_DIR}/gates.toml"
"""The repository's gate configuration; always read as of the task's base commit."""

RUNS_DIR = f"{IMPLFLOW_DIR}/runs"
"""One outcome record per phase round (``<phase>-r<round>.json``)."""

REPORTS_DIR = f"{IMPLFLOW_DIR}/reports"
"""Gate reports and tool logs, ``<phase>/<round>/``."""

LOGS_DIR = f"{IMPLFLOW_DIR}/logs"
"""Executor event logs and stderr."""

REVIEW_DOC = f"{IMPLFLOW_DIR}/review.md"
"""The review phase's structured review (requirements, criteria, risks, open questions)."""

DESIGN_DOC = f"{IMPLFLOW_DIR}/design.md"
"""The design phase's service design."""

ARTIFACT_FILES: tuple[str, ...] = (REVIEW_DOC, DESIGN_DOC)
"""Documents later phases read as context."""
