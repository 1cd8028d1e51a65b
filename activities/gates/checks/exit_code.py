"""Judge a command by its exit code (build, compile, import, ``tsc --noEmit``, ``npm ci``)."""

from __future__ import annotations

from activities.gates.context import Evidence, GateContext
from activities.gates.results import judged, last_line
from activities.gates.schema import CheckConfig
from implflow.models import GateCheck, GateFigure

__all__ = ["judge_exit_code"]


def judge_exit_code(check: CheckConfig, ctx: GateContext, evidence: Evidence) -> GateCheck:
    """The command exited with one of ``ok_exit_codes``; on failure, its last output lines."""
    run = evidence.tool_run()
    passed = run.returncode in check.ok_exit_codes
    summary = f"exit code {run.returncode}"
    if not passed and run.tail:
        summary += f": {last_line(run.tail)}"
    codes = " or ".join(str(code) for code in check.ok_exit_codes)
    details = run.tail.splitlines()[-5:] if not passed else []
    figures: dict[str, GateFigure] = {"exit_code": run.returncode, "duration_s": run.duration_s}
    return judged(check, passed, summary, figures, f"exit code {codes}", run.log, details)
