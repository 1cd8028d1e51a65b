"""Checkpoints: nothing an attempt did is lost when it fails, is cancelled or its worker dies.

The retry semantics of a phase round, for every executor (README, "Retry semantics"):

- **Checkpoint.** While an attempt runs, its working tree is saved every
  ``checkpoint_every_s(heartbeat_s)`` seconds when it changed since the last save, and once
  more when the attempt fails or is cancelled (the *final* checkpoint), to the origin's ref
  ``refs/implflow/wip/<key>/<phase>-r<round>``: a commit on the round's start commit, built
  with plumbing from a temporary index (``GIT_INDEX_FILE``, ``add``, ``write-tree``,
  ``commit-tree``) and force-pushed to that ref only. The real index, HEAD and the branch are
  never touched, so an agent's own git use is undisturbed. The commit's message carries the
  round's failed attempts so far (error and spend), so they survive any worker.
- **Restore.** A retry, on any worker, restores that tree (``git restore --source``) before
  the executor runs, and the agent is told what was restored (``PhaseInput.earlier_work``,
  in its prompt). It resumes the agent's session only when the restored checkpoint is the
  interrupted attempt's final one (everything the session did is on disk); after a kill of
  the worker (only a periodic checkpoint, or none) it starts a fresh session on the
  restored files, so the agent never believes in writes that are not there.
- **Commit.** The round's one commit holds everything, the failed attempts' event logs and
  stderr under ``.implflow/logs/`` included; the checkpoint ref is deleted once the round is
  pushed. The round record keeps each failed attempt's error and spend, and the phase's
  result (``cost_usd``, ``tokens``, ``turns``) includes them.

Only a change since the last save costs a push: an unchanged tree is two local git commands
per interval (``add`` on the temporary index, ``write-tree``), and a phase shorter than the
interval that does not fail costs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.executors.base import EarlierWork
from activities.workspace import (
    CHECKPOINT_REFS,
    DEFAULT_GITIGNORE,
    IDENTITY,
    GitError,
    RoundKey,
    TaskCheckout,
)
from implflow.errors import PHASE_TIMEOUT
from implflow.layout import LOGS_DIR
from implflow.models import AgentUsage, AttemptFailure

log = structlog.stdlib.get_logger("implflow.checkpoints")

CHECKPOINT_MAX_EVERY_S = 15.0
"""The longest time between two looks at an attempt's working tree."""

NO_RESULT = "no result (the worker stopped or the attempt's heartbeat timed out)"
"""The error recorded for an attempt that ended without reporting one (``kill -9``)."""

_USAGE_KEYS = ("session_id", "cost_usd", "input_tokens", "output_tokens", "turns")
_NAMES_SHOWN = 10


def checkpoint_every_s(heartbeat_timeout_s: float) -> float:
    """How often an attempt's tree is looked at: half its heartbeat timeout, 1 to 15 s."""
    return max(1.0, min(heartbeat_timeout_s / 2, CHECKPOINT_MAX_EVERY_S))


def checkpoint_ref(checkout: TaskCheckout, key: RoundKey) -> str:
    """``refs/implflow/wip/<key>/<phase>-r<round>``: the round's checkpoint on the origin."""
    return f"{CHECKPOINT_REFS}/{checkout.key}/{key.phase}-r{key.round}"


def checkpoint_refs(checkout: TaskCheckout, key: RoundKey) -> list[str]:
    """The round's checkpoint ref, if the origin has one (as last fetched)."""
    ref = checkpoint_ref(checkout, key)
    return [ref] if ref in checkout.synced.checkpoints else []


def attempt_failure(err: BaseException, attempt: int) -> AttemptFailure:
    """What is kept of a failed attempt: its error type and one line, and what it spent."""
    usage: AgentUsage | None = None
    if isinstance(err, ApplicationError):
        kind, message = err.type or "ApplicationError", err.message
        details = err.details[0] if err.details else None
        if isinstance(details, Mapping):
            usage = usage_of(details)
    elif isinstance(err, asyncio.CancelledError):
        kind, message = "Cancelled", "the attempt was cancelled (cancel request or shutdown)"
    elif isinstance(err, TimeoutError):
        kind, message = PHASE_TIMEOUT, str(err) or "the phase ran past its timeout"
    else:
        kind, message = type(err).__name__, str(err)
    line = re.sub(r"^phase '[^']*': ", "", " ".join(message.split()))
    # The one line says what went wrong; where its log is, the round's commit already says.
    line = re.sub(r"; log \S+?\.(?:log|jsonl)(?=;|$)", "", line)
    return AttemptFailure(attempt=attempt, error=f"{kind}: {line}"[:200], usage=usage)


def usage_of(details: Mapping[str, Any]) -> AgentUsage | None:
    """The spend an executor reported in a heartbeat or a failure's details, if any."""
    known = {k: details[k] for k in _USAGE_KEYS if details.get(k) is not None}
    if not known:
        return None
    try:
        return AgentUsage.model_validate(known)
    except ValidationError:
        return None


@dataclass
class Restored:
    """What a retry found of the attempts before it, and what it put back."""

    resumable: bool = True
    note: str = ""
    failures: list[AttemptFailure] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    tree: str | None = None
    """The restored checkpoint's tree: what a later retry would get without a new save."""

    def earlier_work(self) -> EarlierWork:
        """For the executor: may it resume, and what its sessions already cost."""
        costs: dict[str, float] = {}
        for failure in self.failures:
            usage = failure.usage
            if usage is not None and usage.session_id and usage.cost_usd:
                costs[usage.session_id] = costs.get(usage.session_id, 0.0) + usage.cost_usd
        return EarlierWork(resumable=self.resumable, session_costs=costs)


def restore(
    checkout: TaskCheckout, key: RoundKey, attempt: int, heartbeat_details: Sequence[Any]
) -> Restored:
    """Put the round's checkpoint (if this run left one) into the freshly synced checkout."""
    state = checkout.synced
    beat = _last_beat(heartbeat_details, key)
    failures = {f.attempt: f for f in _failures_in(beat)}
    found = state.checkpoints.get(checkpoint_ref(checkout, key))
    if found is None or not checkout.is_this_run(found.run):
        if attempt == 1:
            return Restored()
        restored = Restored(resumable=False, failures=_complete(failures, attempt, beat))
        restored.note = _note(restored, attempt - 1, final=False, lost=True)
        return restored
    parent, final, of_attempt, saved = _read_checkpoint(checkout, found.sha)
    for failure in saved:
        failures.setdefault(failure.attempt, failure)
    restored = Restored(failures=_complete(failures, attempt, beat), tree=found.tree)
    if parent != state.start:  # taken on another commit: applying it would undo that one
        restored.resumable, restored.tree = False, None
        restored.note = _note(restored, of_attempt, final=False, lost=True)
        return restored
    if found.tree != state.start_tree:
        changes = checkout.changed_paths(state.start, found.sha)
        checkout.restore_tree(found.sha)
        restored.files = [p for p in changes if not p.startswith(LOGS_DIR + "/")]
    restored.resumable = final
    restored.note = _note(restored, of_attempt, final=final, lost=False)
    log.info(
        "checkpoint restored",
        workflow_id=key.workflow_id,
        phase=key.phase,
        round=key.round,
        files=len(restored.files),
        final=final,
    )
    return restored


def _last_beat(details: Sequence[Any], key: RoundKey) -> Mapping[str, Any]:
    for entry in reversed(details):
        if isinstance(entry, Mapping) and entry.get("phase") in (None, key.phase):
            return entry
    return {}


def _failures_in(source: Mapping[str, Any]) -> list[AttemptFailure]:
    raw = source.get("failures") or source.get("failed_attempts") or []
    found = []
    for item in raw if isinstance(raw, list) else []:
        with contextlib.suppress(ValidationError):
            found.append(AttemptFailure.model_validate(item))
    return found


def _complete(
    failures: dict[int, AttemptFailure], attempt: int, beat: Mapping[str, Any]
) -> list[AttemptFailure]:
    """Every earlier attempt, in order: one that left no record ended without a result."""
    for n in range(1, attempt):
        if n not in failures:
            usage = usage_of(beat) if beat.get("attempt") == n else None
            failures[n] = AttemptFailure(attempt=n, error=NO_RESULT, usage=usage)
    return [failures[n] for n in sorted(failures) if n < attempt]


def _read_checkpoint(
    checkout: TaskCheckout, sha: str
) -> tuple[str, bool, int, list[AttemptFailure]]:
    """A checkpoint commit's parent, whether it is final, its attempt and failed attempts."""
    raw = checkout.cat_commit(sha)
    headers, _, message = raw.partition("\n\n")
    parent = next((h[7:] for h in headers.splitlines() if h.startswith("parent ")), "")
    final = "Implflow-Checkpoint: final" in message.splitlines()
    attempt = next(
        (
            int(line.removeprefix("Implflow-Attempt: "))
            for line in message.splitlines()
            if line.startswith("Implflow-Attempt: ") and line[18:].isdigit()
        ),
        0,
    )
    failures: list[AttemptFailure] = []
    for line in message.splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                data = json.loads(line)
                failures = _failures_in(data) if isinstance(data, dict) else []
            break
    return parent, final, attempt, failures


def _note(restored: Restored, of_attempt: int, *, final: bool, lost: bool) -> str:
    """What the agent is told about the attempts before it."""
    which = f"the interrupted attempt {of_attempt}" if of_attempt else "the interrupted attempt"
    if lost:
        text = (
            f"The files of {which} could not be restored; this attempt starts again from "
            "the task branch."
        )
    elif restored.files:
        names = ", ".join(restored.files[:_NAMES_SHOWN])
        more = len(restored.files) - _NAMES_SHOWN
        names += f" and {more} more" if more > 0 else ""
        count = len(restored.files)
        text = f"Restored {count} file{'s' if count != 1 else ''} from {which}: {names}."
        if not final:
            text += (
                " They are as of its last checkpoint, taken while it ran: its latest changes "
                "may be missing, so check them before you continue."
            )
    else:
        text = f"{which[0].upper()}{which[1:]} changed no files."
    if restored.failures:
        text += " Earlier attempts: " + "; ".join(f.line() for f in restored.failures) + "."
    return text[:4000]


class Checkpointer:
    """Saves one attempt's working tree to the round's checkpoint ref when it changed.

    ``save`` runs git (call it off the event loop); periodic and final saves never overlap.
    A save that fails is logged and skipped: a checkpoint never fails the phase.
    """

    def __init__(
        self, checkout: TaskCheckout, key: RoundKey, attempt: int, restored: Restored
    ) -> None:
        state = checkout.synced
        self.checkout = checkout
        self.key = key
        self.attempt = attempt
        self.ref = checkpoint_ref(checkout, key)
        self.start = state.start
        self.failures = list(restored.failures)
        self.baseline = restored.tree or state.start_tree
        self.saved: str | None = None
        self.saved_tree: str | None = None
        self.unsaved: bool | None = None
        """Whether the tree differs from what a retry would restore (None: not looked yet)."""
        self.on_origin = self.ref in state.checkpoints
        self.index = checkout.root / f"checkpoint-{key.phase}-r{key.round}.index"
        self.excludes = None if state.had_gitignore else checkout.root / "default-ignores"
        self._lock = threading.Lock()
        with contextlib.suppress(FileNotFoundError):
            self.index.unlink()  # each attempt starts from the real index (the start commit)

    def state(self) -> dict[str, object]:
        """For heartbeats: the last checkpoint saved and whether changes are unsaved."""
        return {"checkpoint": self.saved, "unsaved": self.unsaved}

    def save(self, failure: AttemptFailure | None = None) -> bool:
        """Checkpoint the tree if it changed (always with a ``failure``: the final one)."""
        with self._lock:
            if failure is not None:  # kept even if the save below fails
                self.failures = [f for f in self.failures if f.attempt != failure.attempt]
                self.failures.append(failure)
            try:
                return self._save(failure)
            except (GitError, OSError) as err:
                log.warning(
                    "checkpoint not saved",
                    workflow_id=self.key.workflow_id,
                    phase=self.key.phase,
                    round=self.key.round,
                    error=str(err),
                )
                return False

    def _save(self, failure: AttemptFailure | None) -> bool:
        checkout = self.checkout
        checkout.restore_config()
        if not self.index.exists():
            real = checkout.dir / ".git" / "index"
            if real.is_file():
                shutil.copyfile(real, self.index)
        if self.excludes is not None and not self.excludes.exists():
            self.excludes.write_text(DEFAULT_GITIGNORE, encoding="utf-8")
        tree = checkout.stage_all(index=self.index, excludes=self.excludes)
        if self.baseline is None:
            self.baseline = checkout.tree_of(self.start)
        self.unsaved = tree != (self.saved_tree or self.baseline)
        if failure is None and not self.unsaved:
            return False
        final = failure is not None
        record = json.dumps({"failed_attempts": [f.model_dump(mode="json") for f in self.failures]})
        trailers = {
            "Workflow": self.key.workflow_id,
            "Run": checkout.run_id,
            "Phase": self.key.phase,
            "Round": str(self.key.round),
            "Attempt": str(self.attempt),
            "Checkpoint": "final" if final else "running",
        }
        lines = "".join(f"Implflow-{k}: {v}\n" for k, v in trailers.items() if v)
        subject = f"implflow: checkpoint {self.key.phase} (round {self.key.round}, "
        subject += f"attempt {self.attempt})"
        sha = git_commit_tree(checkout, tree, self.start, f"{subject}\n\n{record}\n\n{lines}")
        checkout.push([f"+{sha}:{self.ref}"])  # forced: this ref only, never the branch
        self.saved, self.saved_tree, self.unsaved, self.on_origin = sha, tree, False, True
        return True


def git_commit_tree(checkout: TaskCheckout, tree: str, parent: str, message: str) -> str:
    """A commit of ``tree`` on ``parent`` (plumbing: no hook, no index, no ref moves)."""
    return checkout.git(*IDENTITY, "commit-tree", tree, "-p", parent, "-m", message)


class AttemptBeat:
    """The heartbeats of one phase attempt: each carries what a retry elsewhere needs.

    The executor's latest facts (its session id, spend so far), the checkpoint state and the
    round's failed attempts; a heartbeat sent during long git work repeats them, so the last
    one a retry reads never loses them.
    """

    def __init__(self, phase: str, rnd: int, attempt: int) -> None:
        self.base: dict[str, object] = {"phase": phase, "round": rnd, "attempt": attempt}
        self.latest: dict[str, object] = {}
        self.checkpointer: Checkpointer | None = None
        self.failures: list[AttemptFailure] = []

    def __call__(self, details: Mapping[str, object] | None = None) -> None:
        if details:
            self.latest.update(details)
        extra: dict[str, object] = {}
        failures = self.failures
        if self.checkpointer is not None:
            extra["tree"] = self.checkpointer.state()
            failures = self.checkpointer.failures
        extra["failures"] = [f.model_dump(mode="json") for f in failures]
        activity.heartbeat({**self.base, **self.latest, **extra})
