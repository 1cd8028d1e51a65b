"""What the coding-agent executors (claude-code, codex) share besides ``stream.py``.

The phase prompt (task text stays data: it travels as one argv element after
``--``), the prompt of a resumed attempt, and where a retry finds the agent
session the previous attempt left: the last heartbeat of that attempt (reaches
any worker), else the session file this worker wrote as soon as the session was
known.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path

from temporalio import activity
from temporalio.exceptions import ApplicationError

from implflow.errors import EXECUTOR_UNAVAILABLE
from implflow.models import PhaseInput

RESUME_PROMPT = (
    "The previous attempt at this phase was interrupted. Continue where it stopped "
    "and finish the phase, then give a short summary."
)


def phase_prompt(pin: PhaseInput) -> str:
    """The user prompt for one phase round (task text stays data: one argv element)."""
    parts = [
        f"You are doing the {pin.phase.name!r} phase (round {pin.round}) of a software "
        "implementation task in the repository that is your working directory.",
        f"# Task: {pin.title}\n\n{pin.description}",
    ]
    if pin.phase.instructions.strip():
        parts.append(f"# What this phase must do\n\n{pin.phase.instructions.strip()}")
    if pin.previous:
        done = "\n".join(f"- {p.name} (round {p.round}): {p.summary}" for p in pin.previous)
        parts.append(f"# Earlier phases\n\n{done}")
    if pin.feedback:
        notes = "\n".join(f"- {note}" for note in pin.feedback)
        parts.append(f"# Feedback to address (failed checks or a reviewer)\n\n{notes}")
    parts.append(
        "Change files only inside the working directory. Do not commit or push: "
        "implflow commits your changes when the phase ends. Finish with a short summary."
    )
    return "\n\n".join(parts)


def as_int(value: object) -> int:
    """A count from an agent event; anything but an int (absent, null, text) counts 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def record_session(path: Path, session_id: str, attempt: int) -> None:
    """Written as soon as the session is known, so a retry after a crash can resume it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"session_id": session_id, "attempt": attempt}), encoding="utf-8")


def previous_session(session_file: Path) -> str | None:
    """The session an earlier attempt left: its last heartbeat, else this worker's file."""
    if activity.in_activity():
        for details in reversed(activity.info().heartbeat_details):
            if isinstance(details, Mapping) and isinstance(details.get("session_id"), str):
                return str(details["session_id"])
    try:
        recorded = json.loads(session_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = recorded.get("session_id") if isinstance(recorded, dict) else None
    return value if isinstance(value, str) and value else None


def find_binary(program: str, *, executor: str, install_hint: str, setting: str) -> str:
    """The agent CLI's path, or a non-retryable ``EXECUTOR_UNAVAILABLE`` saying how to get it."""
    found = shutil.which(program)
    if found is None:
        raise ApplicationError(
            f"{executor} executor: {program!r} is not installed on this worker; "
            f"install with: {install_hint} (or set {setting} to its path)",
            type=EXECUTOR_UNAVAILABLE,
            non_retryable=True,
        )
    return found
