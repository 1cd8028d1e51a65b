"""The ``claude-code`` executor: Claude Code headless does a phase's work.

Runs ``claude -p --output-format stream-json --verbose ... -- <prompt>`` in the
workspace, under the discipline of ``stream.py``: argv list (the prompt is one
argv element after ``--``, never shell text), stdin from /dev/null, a scrubbed
environment plus ``ANTHROPIC_API_KEY`` / ``ANTHROPIC_BASE_URL`` taken by name
from the worker's environment, its own process group killed on cancellation,
timeout, stall, or when it lingers after its ``result`` event.

The raw event log goes to ``ctx.log_dir``; only a short summary returns. The
``result`` event decides: ``error_max_turns`` / ``error_max_budget_usd`` are
``BudgetExceeded`` (non-retryable), any other ``is_error`` is an API error or a
failure (retryable), and a "successful" run with ``permission_denials`` is a
failure too (Claude Code reports success after silently refusing a write).

On a retry the executor resumes the session the previous attempt recorded (in
its heartbeat details, or the session file in ``ctx.log_dir``) when that attempt's files
were all restored; if they were not, or this worker does not know that session, it starts
afresh. In the sandbox its ``HOME`` is a per-task directory beside the context files, so
the sessions it keeps there outlive a run.

Tokens and dollars are Claude Code's own: the ``result`` event's ``usage`` (this run) and
``total_cost_usd``, less what the ledger already holds for a resumed session.

Settings (environment, prefix ``IMPLFLOW_CLAUDE_``): ``BIN``, ``PERMISSION_MODE``
(default ``acceptEdits``; ``bypassPermissions`` as root also needs ``IS_SANDBOX``
in the env allowlist), ``ALLOWED_TOOLS`` (JSON list), ``MODEL``, ``MAX_TURNS``,
``MAX_BUDGET_USD``, ``STALL_S``, ``LINGER_S``, ``APPEND_SYSTEM_PROMPT_FILE``.
The task's ``budget`` (turns and dollars per phase) overrides the defaults.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict
from temporalio.exceptions import ApplicationError

from activities.executors import agent_common as common
from activities.executors.base import ExecutionContext, ExecutionOutcome
from activities.executors.stream import Event, StreamResult
from activities.process import scrubbed_env
from activities.sandbox import current_scope
from implflow.errors import (
    AGENT_API_ERROR,
    AGENT_FAILED,
    AGENT_PERMISSION_DENIED,
    BUDGET_EXCEEDED,
)
from implflow.models import PhaseInput

CLAUDE_CODE_VERSION = "2.1.332"
"""The Claude Code release implflow is tested against (its event fields change between releases)."""

INSTALL_HINT = f"npm install -g @anthropic-ai/claude-code@{CLAUDE_CODE_VERSION}"

PASSED_BY_NAME = ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL")
"""Worker variables handed to the agent when set (values never enter history or logs)."""

_BUDGET_SUBTYPES = {
    "error_max_turns": "turn limit",
    "error_max_budget_usd": "dollar budget",
}


class ClaudeCodeSettings(common.AgentSettings):
    """How this worker runs Claude Code; environment prefix ``IMPLFLOW_CLAUDE_``."""

    model_config = SettingsConfigDict(env_prefix="IMPLFLOW_CLAUDE_", extra="ignore")

    bin: str = Field(default="claude", min_length=1)
    permission_mode: Literal[
        "acceptEdits", "auto", "bypassPermissions", "default", "dontAsk", "manual", "plan"
    ] = "acceptEdits"
    allowed_tools: list[str] = Field(default_factory=list, description="--allowedTools entries.")
    model: str | None = None
    max_turns: int = Field(default=50, gt=0, description="Unless the task's budget sets one.")
    max_budget_usd: float | None = Field(
        default=None, gt=0, description="Unless the task's budget sets one."
    )
    append_system_prompt_file: Path | None = Field(
        default=None, description="Specialist text appended to Claude Code's system prompt."
    )


@dataclass
class _Session(common.AgentState):
    """What the event stream has told us so far.

    Tokens are Claude Code's own totals from its ``result`` event (``usage``: this run's),
    and until that arrives a running count of the messages streamed (whose usage is only
    what the message started with). A resumed session's ``total_cost_usd`` includes its
    earlier runs: ``prior_cost_usd`` (what the ledger already holds for it) is taken off,
    so each attempt reports only its own spend.
    """

    session_id: str | None = None
    saw_init: bool = False
    version: str | None = None
    message_ids: set[str] = field(default_factory=set)
    streamed_input_tokens: int = 0
    streamed_output_tokens: int = 0
    api_retries: int = 0
    result: Event | None = None
    prior_cost_usd: float = 0.0

    def on_event(self, event: Event) -> None:
        kind, subtype = event.get("type"), event.get("subtype")
        if isinstance(event.get("session_id"), str):
            self.session_id = event["session_id"]
        if kind == "system" and subtype == "init":
            self.saw_init = True
            self.version = str(event.get("claude_code_version") or "") or None
        elif kind == "system" and subtype == "api_retry":
            self.api_retries += 1
        elif kind == "assistant":
            message = event.get("message") or {}
            message_id = message.get("id")
            # One API message may arrive as several events (one per content block).
            if isinstance(message_id, str) and message_id not in self.message_ids:
                self.message_ids.add(message_id)
                usage = message.get("usage") or {}
                self.streamed_input_tokens += common.as_int(usage.get("input_tokens"))
                self.streamed_output_tokens += common.as_int(usage.get("output_tokens"))
        elif kind == "result":
            self.result = event

    def _result_usage(self) -> Mapping[str, Any] | None:
        usage = self.result.get("usage") if self.result is not None else None
        return usage if isinstance(usage, Mapping) else None

    @property
    def input_tokens(self) -> int:
        usage = self._result_usage()
        return common.as_int(usage.get("input_tokens")) if usage else self.streamed_input_tokens

    @property
    def output_tokens(self) -> int:
        usage = self._result_usage()
        return common.as_int(usage.get("output_tokens")) if usage else self.streamed_output_tokens

    @property
    def turns(self) -> int:
        if self.result is not None:
            return common.as_int(self.result.get("num_turns"))
        return len(self.message_ids)

    @property
    def cost_usd(self) -> float | None:
        """This run's dollars: Claude Code prices a run only in its ``result`` event."""
        if self.result is None:
            return None
        total = float(self.result.get("total_cost_usd") or 0.0)
        if self.prior_cost_usd and self._includes_earlier_runs():
            total = max(0.0, total - self.prior_cost_usd)
        return total

    def _includes_earlier_runs(self) -> bool:
        """Whether the result's totals carry a resumed session's earlier runs: its per-model
        totals (whole session) then exceed its ``usage`` (this run)."""
        models = self.result.get("modelUsage") if self.result is not None else None
        if not isinstance(models, Mapping):
            return False
        session = sum(
            common.as_int(m.get("inputTokens")) + common.as_int(m.get("outputTokens"))
            for m in models.values()
            if isinstance(m, Mapping)
        )
        return session > self.input_tokens + self.output_tokens


def _is_result(event: Event) -> bool:
    return event.get("type") == "result"


class ClaudeCodeExecutor(common.AgentExecutor[ClaudeCodeSettings]):
    """Claude Code headless: one ``claude -p`` run per phase attempt."""

    name = "claude-code"
    install_hint = INSTALL_HINT
    settings_type = ClaudeCodeSettings
    log_tag = "claude"

    def argv(
        self,
        binary: str,
        pin: PhaseInput,
        *,
        resume: str | None,
        workdir: Path | None = None,
        system_prompt: str | None = None,
    ) -> list[str]:
        """The command line; the prompt is the last element, after ``--``.

        ``system_prompt`` is this run's specialist text (default: the fixed one, if any).
        """
        s = self.settings
        max_turns = pin.budget.max_turns_per_phase or s.max_turns
        budget_usd = pin.budget.max_usd_per_phase or s.max_budget_usd
        argv = [binary, "-p", "--output-format", "stream-json", "--verbose"]
        argv += ["--permission-mode", s.permission_mode, "--max-turns", str(max_turns)]
        if budget_usd is not None:
            argv += ["--max-budget-usd", f"{budget_usd:g}"]
        if s.model:
            argv += ["--model", s.model]
        if s.allowed_tools:
            # One "--opt=value" element: a variadic option can never swallow the prompt.
            argv.append("--allowedTools=" + ",".join(s.allowed_tools))
        if system_prompt is None:
            system_prompt = self._fixed_system_prompt()
        if system_prompt:
            argv += ["--append-system-prompt", system_prompt]
        if resume:
            argv += ["--resume", resume]
        # "--" ends the options: task text starting with "-" is still only the prompt.
        argv += ["--", common.resume_prompt(pin) if resume else common.phase_prompt(pin, workdir)]
        return argv

    def _fixed_system_prompt(self) -> str | None:
        """The text given to the executor or in ``APPEND_SYSTEM_PROMPT_FILE``, if any."""
        if self.system_prompt is not None:
            return self.system_prompt
        path = self.settings.append_system_prompt_file
        return path.read_text(encoding="utf-8") if path is not None else None

    async def execute(self, ctx: ExecutionContext) -> ExecutionOutcome:
        """Run Claude Code on the phase; raise ``ApplicationError`` on any failed run."""
        pin = ctx.phase_input
        binary = self._binary()
        system_prompt = self._fixed_system_prompt()
        if system_prompt is None:
            system_prompt = self.specialist_text(ctx)
        session, result = await self._run_resuming(
            ctx,
            lambda resume: self._run(ctx, binary, system_prompt, resume=resume),
            # Claude Code without such a session fails at once, before any init event.
            lambda session: session.saw_init or not _failed(session, "error_during_execution"),
        )
        return _judge(session, result, pin, self.settings.permission_mode)

    async def _run(
        self, ctx: ExecutionContext, binary: str, system_prompt: str, *, resume: str | None
    ) -> tuple[_Session, StreamResult]:
        prior = ctx.earlier.session_costs.get(resume, 0.0) if resume else 0.0
        session = _Session(prior_cost_usd=prior)
        session_file = self._session_file(ctx)

        def on_event(event: Event) -> None:
            known = session.session_id
            session.on_event(event)
            if session.session_id and session.session_id != known:
                common.record_session(session_file, session.session_id, ctx.attempt)

        result = await self._stream(
            ctx,
            binary,
            session,
            argv=self.argv(
                binary,
                ctx.phase_input,
                resume=resume,
                workdir=ctx.workdir,
                system_prompt=system_prompt,
            ),
            env={**_agent_env(ctx.env_allowlist, _sandboxed_home(ctx)), **ctx.task_env},
            resume=resume,
            on_event=on_event,
            is_final=_is_result,
        )
        return session, result


def _agent_env(allowlist: tuple[str, ...], home: Path | None = None) -> dict[str, str]:
    extra = {name: os.environ[name] for name in PASSED_BY_NAME if os.environ.get(name)}
    extra["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] = "1"
    if home is not None:
        extra["HOME"] = str(home)
    return scrubbed_env(allowlist, extra)


def _sandboxed_home(ctx: ExecutionContext) -> Path | None:
    """Claude Code's home inside the sandbox: per task, beside the context files.

    The sandbox hides the worker's home under an empty tmpfs that ends with each run, and
    with it the sessions Claude Code keeps there: no retry could resume one. Outside the
    sandbox the worker's ``HOME`` (if allowlisted) stays.
    """
    scope = current_scope()
    if scope is None or not scope.confines:
        return None
    home = ctx.context_file.parent / "claude-home"
    home.mkdir(parents=True, exist_ok=True)
    return home


def _failed(session: _Session, subtype: str) -> bool:
    return session.result is not None and session.result.get("subtype") == subtype


def _judge(
    session: _Session, run: StreamResult, pin: PhaseInput, permission_mode: str
) -> ExecutionOutcome:
    """Turn the ``result`` event into an outcome or an ``ApplicationError``."""
    where = f"phase {pin.phase.name!r}: claude-code"
    res = session.result
    if res is None:
        raise common.no_final_event(where, "result", session, run)
    subtype = str(res.get("subtype") or "")
    errors = "; ".join(str(e) for e in res.get("errors") or [])[:300]
    if subtype in _BUDGET_SUBTYPES:
        raise ApplicationError(
            f"{where} hit its {_BUDGET_SUBTYPES[subtype]} ({errors or subtype}; {session.facts()})",
            session.details(),
            type=BUDGET_EXCEEDED,
            non_retryable=True,
        )
    if res.get("is_error"):
        message = " ".join(str(res.get("result") or errors or subtype).split())[:300]
        status = res.get("api_error_status")
        reason = str(res.get("terminal_reason") or "")
        api = status is not None or reason == "api_error"
        # Claude Code reports an API failure as subtype "success" with is_error set.
        label = f"API error {status}" if status is not None else "API error" if api else ""
        label = label or (subtype if subtype not in ("", "success") else reason or "error")
        raise ApplicationError(
            f"{where} failed ({label}): {message} ({session.facts()})",
            session.details(),
            type=AGENT_API_ERROR if api else AGENT_FAILED,
        )
    denials = res.get("permission_denials") or []
    if denials:
        refused = ", ".join(sorted({_denied(d) for d in denials}))[:300]
        raise ApplicationError(
            f"{where} was refused {len(denials)} tool call(s): {refused} "
            f"(permission mode {permission_mode}; {session.facts()})",
            session.details(),
            type=AGENT_PERMISSION_DENIED,
            non_retryable=True,
        )
    text = " ".join(str(res.get("result") or "").split())[:300]
    lingered = "; killed after lingering" if run.lingered else ""
    return ExecutionOutcome(
        outcome="done",
        summary=f"claude-code {subtype}: {session.facts()}{lingered}. {text}".strip(),
        artifacts=[str(run.log_path)],
        usage=session.agent_usage(),
    )


def _denied(denial: object) -> str:
    if not isinstance(denial, Mapping):
        return "?"
    tool = str(denial.get("tool_name") or "?")
    tool_input = denial.get("tool_input")
    target = tool_input.get("file_path") if isinstance(tool_input, Mapping) else None
    return f"{tool}({Path(str(target)).name})" if target else tool
