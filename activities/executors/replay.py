"""The ``replay`` executor: apply recorded per-phase patches from a cassette directory.

A cassette is a directory of ``<phase>-r<round>.patch`` files (``git diff`` output,
as written by the ``record`` option of any executor), optionally with a
``<phase>-r<round>.json`` beside each (``{"summary": "..."}``). Round ``n`` uses
``<phase>-r<n>.patch``, else ``<phase>.patch``; a phase with neither has nothing
to do. Demos and tests run offline and deterministically with it.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

from temporalio.exceptions import ApplicationError

from activities.executors.base import ExecutionContext, ExecutionOutcome, WithoutSettings
from activities.workspace import GitError, git
from implflow.errors import EXECUTOR_UNAVAILABLE, INVALID_INPUT, REPLAY_PATCH_FAILED
from implflow.models import PHASE_NAME_PATTERN

_PHASE_NAME = re.compile(PHASE_NAME_PATTERN)


def cassette_files(cassette: Path, phase: str, rnd: int) -> tuple[Path | None, Path | None]:
    """The patch (and its metadata) for a phase round, or ``(None, None)``."""
    if not _PHASE_NAME.fullmatch(phase):  # it becomes a file name below
        raise ApplicationError(
            f"phase name {phase!r} is not a safe file name", type=INVALID_INPUT, non_retryable=True
        )
    for stem in (f"{phase}-r{rnd}", phase):
        patch = cassette / f"{stem}.patch"
        if patch.is_file():
            meta = cassette / f"{stem}.json"
            return patch, meta if meta.is_file() else None
    return None, None


class ReplayExecutor(WithoutSettings):
    """Applies the cassette's patch for the phase round to the checkout."""

    name = "replay"

    def check_available(self) -> None:
        """Needs only git, which every worker has."""

    async def execute(self, ctx: ExecutionContext) -> ExecutionOutcome:
        ctx.heartbeat({"state": "applying"})  # here, on the event loop: never from the thread
        return await asyncio.to_thread(self._apply, ctx)

    def _apply(self, ctx: ExecutionContext) -> ExecutionOutcome:
        pin = ctx.phase_input
        if not pin.cassette:
            raise ApplicationError(
                'replay executor: the input names no cassette (set "cassette" to a directory '
                "of <phase>-r<round>.patch files on the worker)",
                type=EXECUTOR_UNAVAILABLE,
                non_retryable=True,
            )
        cassette = Path(pin.cassette).expanduser()
        if not cassette.is_dir():
            raise ApplicationError(
                f"replay executor: cassette {cassette} is not a directory",
                type=EXECUTOR_UNAVAILABLE,
                non_retryable=True,
            )
        patch, meta = cassette_files(cassette, pin.phase.name, pin.round)
        if patch is None:
            return ExecutionOutcome(
                outcome="nothing-to-do", summary=f"cassette has no patch for {pin.phase.name}"
            )
        try:
            git(ctx.workdir, "apply", "--whitespace=nowarn", "--", str(patch.resolve()))
        except GitError as err:
            raise ApplicationError(
                f"replay executor: {patch.name} does not apply: {err}",
                type=REPLAY_PATCH_FAILED,
                non_retryable=True,
            ) from None
        summary = f"applied {patch.name}"
        if meta is not None:
            summary = str(json.loads(meta.read_text(encoding="utf-8")).get("summary", summary))
        return ExecutionOutcome(outcome="done", summary=summary[:2000])
