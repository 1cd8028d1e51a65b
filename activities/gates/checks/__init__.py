"""The check kinds a gate knows, one module each, and the one table that dispatches to them.

=================== =================================================================
``reports``         tests (JUnit), coverage (Cobertura), findings (SARIF), the OpenAPI
                    contract, a file that must exist
``exit_code``       a command's exit code
``review``          the review document and its blocking open questions
``docstrings``      docstring coverage
``changed``         a file (the README) changed against the phase's base commit
``load``            the service under load: targets, baseline, or measure only
``service``         the service's start command is known (design: shown for approval)
=================== =================================================================

A new kind: a module here with a judge function, a ``CheckFormat`` value in
``schema.py``, and one line in :data:`JUDGES`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from activities.gates.checks.changed import judge_changed
from activities.gates.checks.docstrings import judge_docstrings
from activities.gates.checks.exit_code import judge_exit_code
from activities.gates.checks.load import judge_load
from activities.gates.checks.reports import (
    judge_cobertura,
    judge_exists,
    judge_junit,
    judge_openapi,
    judge_sarif_scoped,
)
from activities.gates.checks.review import judge_review
from activities.gates.checks.service import judge_service
from activities.gates.context import Evidence, GateContext
from activities.gates.schema import CheckConfig, CheckFormat
from implflow.models import GateCheck

__all__ = ["JUDGES", "CheckKind", "Judge"]

Judge = Callable[[CheckConfig, GateContext, Evidence], Awaitable[GateCheck]]
FileJudge = Callable[[CheckConfig, GateContext, Evidence], GateCheck]


@dataclass(frozen=True)
class CheckKind:
    """How the runner gathers one format's evidence, and the function that judges it."""

    judge: Judge
    runs_argv: bool = True
    """The check's ``argv``, when it has one, runs first; ``False``: the judge does its work."""
    reads_report: bool = True
    """The judge reads the report ``argv`` wrote, so a tool that wrote none fails the check."""


def in_thread(judge: FileJudge) -> Judge:
    """A synchronous judge (most read files), run in a worker thread: heartbeats keep flowing."""

    async def run(check: CheckConfig, ctx: GateContext, evidence: Evidence) -> GateCheck:
        return await asyncio.to_thread(judge, check, ctx, evidence)

    return run


JUDGES: Mapping[CheckFormat, CheckKind] = {
    "junit": CheckKind(in_thread(judge_junit)),
    "cobertura": CheckKind(in_thread(judge_cobertura)),
    "sarif": CheckKind(judge_sarif_scoped),
    "openapi": CheckKind(in_thread(judge_openapi)),
    "exists": CheckKind(in_thread(judge_exists)),
    "review": CheckKind(in_thread(judge_review)),
    "exit-code": CheckKind(in_thread(judge_exit_code), reads_report=False),
    "docstrings": CheckKind(in_thread(judge_docstrings), runs_argv=False, reads_report=False),
    "changed": CheckKind(judge_changed, runs_argv=False, reads_report=False),
    "loadprobe": CheckKind(judge_load, runs_argv=False, reads_report=False),
    "service": CheckKind(in_thread(judge_service), runs_argv=False, reads_report=False),
}
"""Check format → how it is judged: the runner's only dispatch."""
