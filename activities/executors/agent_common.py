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

from activities.specialists import (
    DEFAULT_SPECIALIST,
    SpecialistError,
    build_prompt,
    find_specialist,
)
from implflow.errors import EXECUTOR_UNAVAILABLE, INVALID_INPUT
from implflow.models import PhaseInput

RESUME_PROMPT = (
    "The previous attempt at this phase was interrupted. Continue where it stopped "
    "and finish the phase, then give a short summary."
)


def phase_prompt(pin: PhaseInput, workdir: Path | None = None) -> str:
    """The user prompt of a phase round: task, phase, artifacts, guidelines, feedback.

    Built by ``activities.specialists.build_prompt`` from the checkout in ``workdir``
    (task text stays data: the prompt travels as one argv element after ``--``).
    """
    return build_prompt(pin, workdir if workdir is not None else Path("/nonexistent"))


def specialist_prompt(pin: PhaseInput, workdir: Path, specialists_dir: Path | None) -> str:
    """The specialist's text (repo ``.claude/agents``, then settings dir, then bundled)."""
    try:
        found = find_specialist(pin.specialist or DEFAULT_SPECIALIST, workdir, specialists_dir)
    except SpecialistError as err:
        raise ApplicationError(str(err), type=INVALID_INPUT, non_retryable=True) from None
    return found.system_prompt()


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
