"""Judge that a file changed in the phase: at least one of ``paths`` differs from ``base_ref``.

The document gate uses it for the README. Changes count whether committed, staged or
untracked; the gate's own reports do not. Without a ``base_ref`` the check is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from activities.gates.context import Evidence, GateContext
from activities.gates.results import failed, judged, last_line, skipped
from activities.gates.schema import CheckConfig
from implflow.layout import REPORTS_DIR
from implflow.models import GateCheck, GateFigure

__all__ = ["GIT_TIMEOUT_S", "changed_files", "judge_changed"]

GIT_TIMEOUT_S = 60.0


async def judge_changed(check: CheckConfig, ctx: GateContext, evidence: Evidence) -> GateCheck:
    """One of the check's ``paths`` changed against ``base_ref``."""
    wanted = [ctx.expand(p) for p in check.paths]
    rule = f"one of {', '.join(wanted)} changed against base_ref"
    if ctx.base_ref is None:
        return skipped(check, rule, "skipped: no base_ref given to diff against")
    if ctx.base_ref.startswith("-") or not ctx.base_ref.strip():
        return failed(check, f"base_ref {ctx.base_ref!r} is not a git revision")
    try:
        changed = await _changed(ctx.workdir, ctx.base_ref)
    except _DiffFailed as err:
        return failed(check, f"git diff against {ctx.base_ref!r} failed: {err}")
    hits = sorted(p for p in wanted if p in changed)
    figures: dict[str, GateFigure] = {"changed_files": len(changed), "matched": ", ".join(hits)}
    summary = (
        f"changed since {ctx.base_ref[:12]}: {', '.join(hits)}"
        if hits
        else f"none of {', '.join(wanted)} changed since {ctx.base_ref[:12]}"
    )
    return judged(check, bool(hits), summary, figures, rule, None)


class _DiffFailed(Exception):
    pass


async def changed_files(ctx: GateContext) -> set[str] | None:
    """Files that differ from ``base_ref`` (committed, staged or untracked; the gate's reports
    aside), or ``None`` when there is no usable base to compare with."""
    if ctx.base_ref is None or ctx.base_ref.startswith("-") or not ctx.base_ref.strip():
        return None
    try:
        return await _changed(ctx.workdir, ctx.base_ref)
    except _DiffFailed:
        return None


async def _changed(workdir: Path, base_ref: str) -> set[str]:
    code, diff = await _git(workdir, "diff", "--name-only", base_ref, "--")
    if code != 0:
        raise _DiffFailed(last_line(diff))
    code2, untracked = await _git(workdir, "ls-files", "--others", "--exclude-standard")
    changed = set(diff.splitlines()) | (set(untracked.splitlines()) if code2 == 0 else set())
    return {path for path in changed if not path.startswith(REPORTS_DIR + "/")}


async def _git(workdir: Path, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "git",
        *args,
        cwd=str(workdir),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), GIT_TIMEOUT_S)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode("utf-8", "replace")
