"""The ``codex`` executor: the Codex CLI (``codex exec --json``) does a phase's work.

Same discipline as ``claude-code``, through the same runner (``stream.py``): argv
list with the prompt as one element after ``--``, stdin from /dev/null (Codex
would otherwise wait for more input), a scrubbed environment, its own process
group killed on cancellation, timeout, stall, or when it lingers after its final
event. Stall detection and the phase timeout are essential here: with its model
server unreachable Codex retries for ever by default.

Each task gets an isolated ``CODEX_HOME`` in the worker's scratch space for the
task (beside the context file, never inside the checkout: the agent cannot edit
its own configuration and Codex's databases are never committed). implflow
writes its ``config.toml`` before every run: one model provider (``base_url``,
``env_key`` = the *name* of the key variable, ``wire_api = "responses"``), the
``workspace-write`` sandbox with ``/tmp`` and ``$TMPDIR`` excluded and no network
(the checkout is the only writable tree), approval policy ``never`` (a command
needing more is refused, never asked about), analytics, plugins and unbounded
connection retries off. ``--strict-config`` makes Codex refuse any key it does
not know, so a version change cannot silently drop a sandbox setting.

Inside implflow's own sandbox (``activities/sandbox.py``, bwrap) Codex runs with
``sandbox_mode = "danger-full-access"`` instead: ours is the boundary (the checkout and
the task's scratch space the only writable trees), and Codex's bubblewrap cannot nest in
ours. The cost: the commands Codex runs share the agent's network, which ours leaves on
for the model API. Codex gets ``TMPDIR`` beside its home (``codex-home-tmp``): it refuses
to create its helper binaries (``codex-linux-sandbox``) under the temporary directory,
and a ``CODEX_HOME`` under ``/tmp`` would otherwise leave its own sandbox unable to start.

Events (Codex 0.169, ``CODEX_VERSION``): ``thread.started`` (``thread_id``, the
session), ``turn.started``, ``item.started`` / ``item.completed``
(``command_execution``, ``agent_message``, ``file_change``, ``error``, ...), then
one final ``turn.completed`` (``usage``: input, cached input and output tokens of
the whole thread) or ``turn.failed`` (``error.message``; API errors end this way,
exit 1). Codex reports tokens but no dollars: they are priced with
``IMPLFLOW_CODEX_PRICES``. For a running total the executor also reads the
``token_count`` records Codex writes to the thread's rollout file after every
model response, so a dollar or turn cap kills the run mid-way (checked on every
event; ``BudgetExceeded``, non-retryable), not only at the end. A "turn" here is
one model response.

On a retry the executor resumes the thread the previous attempt recorded
(``codex exec resume <thread_id>``, works offline). Rollouts live in this
worker's ``CODEX_HOME``: another worker does not have them, Codex exits without
any event, and the executor starts afresh. Usage and cost reported for a resumed
attempt are its own (the thread's total minus what it had before); the dollar
cap applies to the thread's total.

Settings (environment, prefix ``IMPLFLOW_CODEX_``): ``BIN``, ``MODEL``,
``BASE_URL`` (default: the worker's ``OPENAI_BASE_URL``, else the OpenAI API),
``API_KEY_ENV`` (the variable holding the key, default ``OPENAI_API_KEY``; its
value is passed to Codex by name and never written anywhere), ``PRICES`` (JSON
``{model: {input_per_mtok, output_per_mtok, cached_input_per_mtok}}`` in USD,
merged over ``DEFAULT_PRICES``), ``MAX_USD_PER_PHASE``, ``MAX_TURNS``,
``REQUEST_MAX_RETRIES``, ``STREAM_MAX_RETRIES``, ``STALL_S``, ``LINGER_S``,
``HOME_ROOT``. The task's ``budget`` overrides the caps.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, Field
from pydantic_settings import SettingsConfigDict
from temporalio.exceptions import ApplicationError

from activities.executors import agent_common as common
from activities.executors.base import ExecutionContext, ExecutionOutcome
from activities.executors.stream import Event, StreamResult
from activities.process import scrubbed_env
from activities.sandbox import allow as sandbox_allow
from activities.sandbox import current_scope
from activities.workspace import safe_name
from implflow.errors import (
    AGENT_API_ERROR,
    BUDGET_EXCEEDED,
    EXECUTOR_UNAVAILABLE,
    ImplflowError,
)
from implflow.models import PhaseInput

CODEX_VERSION = "0.169.0"
"""The Codex CLI release implflow is tested against (events and config keys change)."""

INSTALL_HINT = f"npm install -g @openai/codex@{CODEX_VERSION}"

PROVIDER_ID = "implflow"
"""The model provider implflow defines in the generated ``config.toml``."""


class ModelPrice(BaseModel):
    """USD per million tokens. OpenAI counts cached input inside ``input_tokens``."""

    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)
    cached_input_per_mtok: float | None = Field(
        default=None, ge=0, description="Default: the input price."
    )


DEFAULT_PRICES: dict[str, ModelPrice] = {
    "gpt-5": ModelPrice(input_per_mtok=1.25, output_per_mtok=10.0, cached_input_per_mtok=0.125),
    "gpt-5-codex": ModelPrice(
        input_per_mtok=1.25, output_per_mtok=10.0, cached_input_per_mtok=0.125
    ),
    "gpt-5.1-codex": ModelPrice(
        input_per_mtok=1.25, output_per_mtok=10.0, cached_input_per_mtok=0.125
    ),
    "gpt-5-mini": ModelPrice(input_per_mtok=0.25, output_per_mtok=2.0, cached_input_per_mtok=0.025),
}
"""OpenAI list prices (USD per million tokens) when this was written; check and override
with ``IMPLFLOW_CODEX_PRICES``. A model without a price runs unpriced (cost unknown),
unless a dollar cap is set: then the run is refused, since the cap could not be enforced."""


class CodexSettings(common.AgentSettings):
    """How this worker runs Codex; environment prefix ``IMPLFLOW_CODEX_``."""

    model_config = SettingsConfigDict(env_prefix="IMPLFLOW_CODEX_", extra="ignore")

    bin: str = Field(default="codex", min_length=1)
    model: str = Field(default="gpt-5-codex", min_length=1)
    base_url: str | None = Field(
        default=None, description="Responses API base URL; default OPENAI_BASE_URL or OpenAI."
    )
    api_key_env: common.EnvVarName = Field(
        default="OPENAI_API_KEY", description="NAME of the worker variable holding the key."
    )
    prices: dict[str, ModelPrice] = Field(
        default_factory=dict, description="Merged over DEFAULT_PRICES (USD per Mtok)."
    )
    max_usd_per_phase: float | None = Field(
        default=None, gt=0, description="Unless the task's budget sets one."
    )
    max_turns: int | None = Field(
        default=None, gt=0, description="Model responses per run, unless the task sets one."
    )
    request_max_retries: int = Field(default=2, ge=0, le=20)
    stream_max_retries: int = Field(default=2, ge=0, le=20)
    home_root: Path | None = Field(
        default=None, description="Where per-task CODEX_HOMEs live; default: task scratch dir."
    )

    def price(self, model: str) -> ModelPrice | None:
        return {**DEFAULT_PRICES, **self.prices}.get(model)


@dataclass
class Usage:
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0

    @classmethod
    def of(cls, raw: object) -> Usage:
        data = raw if isinstance(raw, dict) else {}
        return cls(
            common.as_int(data.get("input_tokens")),
            common.as_int(data.get("cached_input_tokens")),
            common.as_int(data.get("output_tokens")),
        )

    def minus(self, other: Usage) -> Usage:
        return Usage(
            max(0, self.input_tokens - other.input_tokens),
            max(0, self.cached_input_tokens - other.cached_input_tokens),
            max(0, self.output_tokens - other.output_tokens),
        )

    def cost(self, price: ModelPrice | None) -> float | None:
        if price is None:
            return None
        cached = min(self.cached_input_tokens, self.input_tokens)
        cached_price = price.cached_input_per_mtok
        if cached_price is None:
            cached_price = price.input_per_mtok
        dollars = (
            (self.input_tokens - cached) * price.input_per_mtok
            + cached * cached_price
            + self.output_tokens * price.output_per_mtok
        )
        return dollars / 1_000_000


class _OverBudget(ImplflowError):
    """Raised from the event callback: the runner kills the process group and re-raises."""


@dataclass
class _Rollout:
    """Codex's record of a thread (``CODEX_HOME/sessions/**/rollout-*-<id>.jsonl``).

    Read incrementally for the ``token_count`` records Codex appends after each
    model response: the only running token total it offers.
    """

    home: Path
    thread_id: str
    path: Path | None = None
    offset: int = 0
    responses: int = 0
    total: Usage = field(default_factory=Usage)

    def poll(self) -> None:
        if self.path is None:
            found = sorted(self.home.glob(f"sessions/**/rollout-*-{self.thread_id}.jsonl"))
            if not found:
                return
            self.path = found[-1]
        try:
            with self.path.open("rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read()
        except OSError:
            return
        end = chunk.rfind(b"\n") + 1  # only whole lines; a half-written one waits
        self.offset += end
        for line in chunk[:end].splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            payload = record.get("payload") if isinstance(record, dict) else None
            if not isinstance(payload, dict) or payload.get("type") != "token_count":
                continue
            info = payload.get("info")
            if isinstance(info, dict) and isinstance(info.get("total_token_usage"), dict):
                self.responses += 1
                self.total = Usage.of(info["total_token_usage"])


@dataclass
class _Run(common.AgentState):
    """What one ``codex exec`` run has told us so far."""

    home: Path
    price: ModelPrice | None
    max_usd: float | None
    max_turns: int | None
    session_id: str | None = None
    """Codex's thread id."""
    saw_thread: bool = False
    rollout: _Rollout | None = None
    baseline: Usage = field(default_factory=Usage)
    """The thread's usage before this run (non-zero when resuming)."""
    baseline_responses: int = 0
    final_usage: Usage | None = None
    commands: int = 0
    failed_commands: int = 0
    last_message: str = ""
    last_error: str = ""
    final: Event | None = None

    def start_from(self, thread_id: str) -> None:
        """Resuming ``thread_id``: what its rollout already holds is not this run's."""
        self.session_id = thread_id
        self.rollout = _Rollout(self.home, thread_id)
        self.rollout.poll()
        self.baseline = self.rollout.total
        self.baseline_responses = self.rollout.responses

    def on_event(self, event: Event) -> None:
        kind = event.get("type")
        if kind == "thread.started" and isinstance(event.get("thread_id"), str):
            self.saw_thread = True
            if event["thread_id"] != self.session_id:
                self.session_id = event["thread_id"]
                self.rollout = _Rollout(self.home, self.session_id)
        elif kind in ("item.started", "item.completed"):
            self._on_item(kind, event.get("item"))
        elif kind == "error":
            self.last_error = str(event.get("message") or "")
        elif kind == "turn.completed":
            self.final = event
            self.final_usage = Usage.of(event.get("usage"))
        elif kind == "turn.failed":
            self.final = event
            error = event.get("error")
            if isinstance(error, dict) and error.get("message"):
                self.last_error = str(error["message"])
        if self.rollout is not None:
            self.rollout.poll()
        self.check_caps()

    def _on_item(self, kind: str, item: object) -> None:
        if not isinstance(item, dict) or kind != "item.completed":
            return
        item_type = item.get("type")
        if item_type == "agent_message":
            self.last_message = str(item.get("text") or "")
        elif item_type == "command_execution":
            self.commands += 1
            if item.get("exit_code") not in (0, None):
                self.failed_commands += 1

    @property
    def total(self) -> Usage:
        """The thread's usage so far (``turn.completed`` is authoritative once it came)."""
        if self.final_usage is not None:
            return self.final_usage
        return self.rollout.total if self.rollout is not None else Usage()

    @property
    def usage(self) -> Usage:
        """This run's own usage."""
        return self.total.minus(self.baseline)

    @property
    def turns(self) -> int:
        return self.rollout.responses - self.baseline_responses if self.rollout else 0

    @property
    def cost_usd(self) -> float | None:
        return self.usage.cost(self.price)

    def check_caps(self) -> None:
        thread_cost = self.total.cost(self.price)
        if self.max_usd is not None and thread_cost is not None and thread_cost > self.max_usd:
            raise _OverBudget(f"dollar budget: ${thread_cost:.4f} > ${self.max_usd:g}")
        if self.max_turns is not None and self.turns > self.max_turns:
            raise _OverBudget(f"turn limit: {self.turns} model responses > {self.max_turns}")

    @property
    def input_tokens(self) -> int:
        return self.usage.input_tokens

    @property
    def output_tokens(self) -> int:
        return self.usage.output_tokens

    def progress(self) -> dict[str, object]:
        if self.rollout is not None:
            self.rollout.poll()
        return self.details()


def _is_final(event: Event) -> bool:
    return event.get("type") in ("turn.completed", "turn.failed")


def toml_string(value: str) -> str:
    """A TOML basic string. JSON's escapes are TOML's, except DEL must be escaped too."""
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


class CodexExecutor(common.AgentExecutor[CodexSettings]):
    """The Codex CLI: one ``codex exec --json`` run per phase attempt."""

    name = "codex"
    install_hint = INSTALL_HINT
    settings_type = CodexSettings
    log_tag = "codex"
    session_noun = "thread"

    def argv(
        self, binary: str, pin: PhaseInput, *, resume: str | None, workdir: Path | None = None
    ) -> list[str]:
        """The command line; the prompt is the last element, after ``--``."""
        argv = [binary, "exec"]
        if resume:
            argv.append("resume")
        argv += ["--json", "--skip-git-repo-check", "--strict-config"]
        argv += ["--model", self.settings.model]
        if resume:
            argv.append(resume)
        # "--" ends the options: task text starting with "-" is still only the prompt.
        argv += ["--", common.resume_prompt(pin) if resume else common.phase_prompt(pin, workdir)]
        return argv

    def config_toml(self, system_prompt: str | None = None, *, own_sandbox: bool = True) -> str:
        """The whole ``config.toml`` of the isolated ``CODEX_HOME`` (no secret in it).

        ``system_prompt`` is this run's specialist text (default: the fixed one, if any).
        ``own_sandbox=False``: implflow's sandbox confines Codex, so Codex's own is off.
        """
        s = self.settings
        if system_prompt is None:
            system_prompt = self.system_prompt
        base_url = s.base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        lines = [
            "# Written by implflow before each run; edits are overwritten.",
            f"model = {toml_string(s.model)}",
            f"model_provider = {toml_string(PROVIDER_ID)}",
            'approval_policy = "never"',
            f'sandbox_mode = "{"workspace-write" if own_sandbox else "danger-full-access"}"',
        ]
        if system_prompt:
            lines.append(f"developer_instructions = {toml_string(system_prompt)}")
        if own_sandbox:
            lines += [
                "",
                "[sandbox_workspace_write]",
                "network_access = false",
                "exclude_slash_tmp = true",
                "exclude_tmpdir_env_var = true",
            ]
        lines += [
            "",
            f"[model_providers.{PROVIDER_ID}]",
            'name = "implflow"',
            f"base_url = {toml_string(base_url)}",
            f"env_key = {toml_string(s.api_key_env)}",
            'wire_api = "responses"',
            f"request_max_retries = {s.request_max_retries}",
            f"stream_max_retries = {s.stream_max_retries}",
            f"stream_idle_timeout_ms = {int(s.stall_s * 1000)}",
            "",
            # Commands the agent runs inherit Codex's environment; keep the key out of it.
            "[shell_environment_policy]",
            "ignore_default_excludes = false",
            f"exclude = [{toml_string(s.api_key_env)}]",
            "",
            "[analytics]",
            "enabled = false",
            "",
            "[features]",
            "plugins = false",
            "unbounded_connection_retries = false",
            "",
        ]
        return "\n".join(lines)

    def codex_home(self, ctx: ExecutionContext, system_prompt: str | None = None) -> Path:
        """Per task, on this worker, outside the checkout (kept across attempts for resume)."""
        if self.settings.home_root is not None:
            home = self.settings.home_root / safe_name(ctx.phase_input.workflow_id)
        else:
            home = ctx.context_file.parent / "codex-home"
        if home.resolve().is_relative_to(ctx.workdir.resolve()):
            raise ApplicationError(
                f"codex executor: CODEX_HOME {home} would be inside the workspace",
                type=EXECUTOR_UNAVAILABLE,
                non_retryable=True,
            )
        home.mkdir(parents=True, exist_ok=True)
        _tmpdir(home).mkdir(exist_ok=True)
        scope = current_scope()
        confined = scope is not None and scope.confines
        sandbox_allow(write=[home, _tmpdir(home)])  # HOME_ROOT may lie outside the scope
        (home / "config.toml").write_text(
            self.config_toml(system_prompt, own_sandbox=not confined), encoding="utf-8"
        )
        return home

    async def execute(self, ctx: ExecutionContext) -> ExecutionOutcome:
        """Run Codex on the phase; raise ``ApplicationError`` on any failed run."""
        pin = ctx.phase_input
        binary = self._binary()
        system_prompt = self.specialist_text(ctx)
        max_usd = pin.budget.max_usd_per_phase or self.settings.max_usd_per_phase
        price = self.settings.price(self.settings.model)
        if max_usd is not None and price is None:
            raise ApplicationError(
                f"codex executor: model {self.settings.model!r} has no price in "
                "IMPLFLOW_CODEX_PRICES, so the dollar budget cannot be enforced",
                type=EXECUTOR_UNAVAILABLE,
                non_retryable=True,
            )
        home = self.codex_home(ctx, system_prompt)
        run, result = await self._run_resuming(
            ctx,
            lambda resume: self._run(ctx, binary, home, price, resume=resume),
            # Not this worker's thread (its rollout is elsewhere): Codex exits without events.
            lambda run: run.saw_thread,
        )
        return _judge(run, result, pin)

    async def _run(
        self,
        ctx: ExecutionContext,
        binary: str,
        home: Path,
        price: ModelPrice | None,
        *,
        resume: str | None,
    ) -> tuple[_Run, StreamResult]:
        pin = ctx.phase_input
        run = _Run(
            home=home,
            price=price,
            max_usd=pin.budget.max_usd_per_phase or self.settings.max_usd_per_phase,
            max_turns=pin.budget.max_turns_per_phase or self.settings.max_turns,
        )
        if resume:
            run.start_from(resume)
        session_file = self._session_file(ctx)

        def on_event(event: Event) -> None:
            try:
                run.on_event(event)
            finally:
                if event.get("type") == "thread.started" and run.session_id:
                    common.record_session(session_file, run.session_id, ctx.attempt)

        try:
            result = await self._stream(
                ctx,
                binary,
                run,
                argv=self.argv(binary, pin, resume=resume, workdir=ctx.workdir),
                env={**self._env(ctx.env_allowlist, home), **ctx.task_env},
                resume=resume,
                on_event=on_event,
                is_final=_is_final,
            )
        except _OverBudget as err:
            raise ApplicationError(
                f"phase {pin.phase.name!r}: codex hit its {err}; process group killed "
                f"({run.facts()})",
                run.details(),
                type=BUDGET_EXCEEDED,
                non_retryable=True,
            ) from None
        return run, result

    def _env(self, allowlist: tuple[str, ...], home: Path) -> dict[str, str]:
        """Allowlisted variables, CODEX_HOME, and the API key under its own name."""
        key_name = self.settings.api_key_env
        extra = {"CODEX_HOME": str(home), "TMPDIR": str(_tmpdir(home))}
        if os.environ.get(key_name):
            extra[key_name] = os.environ[key_name]
        return scrubbed_env(allowlist, extra)


def _tmpdir(home: Path) -> Path:
    """Codex's ``TMPDIR``: beside its home, so the home is never under the temp dir."""
    return home.with_name(f"{home.name}-tmp")


def _judge(run: _Run, result: StreamResult, pin: PhaseInput) -> ExecutionOutcome:
    """Turn the final event into an outcome or an ``ApplicationError``."""
    where = f"phase {pin.phase.name!r}: codex"
    final = run.final
    if final is None:
        raise common.no_final_event(where, "final", run, result)
    if final.get("type") == "turn.failed":
        # Codex ends a turn this way when the model API fails (after its own retries).
        raise ApplicationError(
            f"{where} failed: {run.last_error[:300] or 'turn.failed'} ({run.facts()})",
            run.details(),
            type=AGENT_API_ERROR,
        )
    text = " ".join(run.last_message.split())[:300]
    lingered = "; killed after lingering" if result.lingered else ""
    commands = f", {run.commands} commands ({run.failed_commands} failed)" if run.commands else ""
    return ExecutionOutcome(
        outcome="done",
        summary=f"codex completed: {run.facts()}{commands}{lingered}. {text}".strip(),
        artifacts=[str(result.log_path)],
        usage=run.agent_usage(),
    )
