"""What the coding-agent executors (claude-code, codex) share besides ``stream.py``.

The phase prompt (task text stays data: it travels as one argv element after
``--``), the prompt of a resumed attempt, and where a retry finds the agent
session the previous attempt left: the last heartbeat of that attempt (reaches
any worker), else the session file this worker wrote as soon as the session was
known. ``AgentExecutor`` is their common base: settings that fail to load and a
missing CLI are ``EXECUTOR_UNAVAILABLE``, a retry resumes the earlier session (or
starts afresh when this worker does not know it, or when the interrupted attempt's files
could not all be restored: see ``activities/checkpoints.py``), and one run of the CLI goes
through ``run_event_stream`` with the log files and limits both use.

An agent executor is built once per worker (``from_settings``: its ``IMPLFLOW_<AGENT>_*``
variables are read then, and only then) and shared by concurrent activities, so the
specialist text of a run is worked out per run and passed along, never kept on ``self``.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Generic, Self, TypeVar, cast

import structlog
from pydantic import AfterValidator, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.executors.base import ExecutionContext
from activities.executors.stream import (
    Event,
    StreamLimits,
    StreamResult,
    StreamStalled,
    run_event_stream,
)
from activities.process import heartbeat_every_s
from activities.prompts import build_prompt
from activities.specialists import DEFAULT_SPECIALIST, SpecialistError, find_specialist
from implflow.errors import AGENT_FAILED, AGENT_STALLED, EXECUTOR_UNAVAILABLE, INVALID_INPUT
from implflow.models import AgentUsage, PhaseInput
from implflow.settings import Settings

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _variable_name(value: str) -> str:
    # Anything but a variable name is refused, so a key pasted here is never echoed back.
    if not _ENV_NAME.fullmatch(value):
        raise ValueError(
            "must be the NAME of an environment variable (like OPENAI_API_KEY), not the key itself"
        )
    return value


EnvVarName = Annotated[str, AfterValidator(_variable_name)]
"""A setting that names the worker variable holding a key: never the key itself."""

RESUME_PROMPT = (
    "The previous attempt at this phase was interrupted. Continue where it stopped "
    "and finish the phase, then give a short summary."
)


def phase_prompt(pin: PhaseInput, workdir: Path | None = None) -> str:
    """The user prompt of a phase round: task, phase, artifacts, guidelines, feedback.

    Built by ``activities.prompts.build_prompt`` from the checkout in ``workdir``
    (task text stays data: the prompt travels as one argv element after ``--``). On a retry
    that starts afresh it ends with what was restored of the interrupted attempt.
    """
    prompt = build_prompt(pin, workdir if workdir is not None else Path("/nonexistent"))
    return f"{prompt}\n\n{pin.earlier_work}" if pin.earlier_work else prompt


def resume_prompt(pin: PhaseInput) -> str:
    """The prompt of a resumed session: continue, and what was restored of its files."""
    return f"{RESUME_PROMPT} {pin.earlier_work}" if pin.earlier_work else RESUME_PROMPT


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


def dollars(cost_usd: float | None) -> str:
    """A run's cost for messages: ``$0.0123``, or ``cost unknown`` when it was not priced."""
    return f"${cost_usd:.4f}" if cost_usd is not None else "cost unknown"


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


LoadedT = TypeVar("LoadedT", bound=BaseSettings)


def load_settings(settings_type: type[LoadedT], *, executor: str, prefix: str) -> LoadedT:
    """An executor's settings read from the worker's environment, once, by the worker.

    A bad value is a non-retryable ``EXECUTOR_UNAVAILABLE`` naming the variable. The
    message leaves the value out: a key pasted into the wrong variable is not echoed.
    """
    try:
        return settings_type()
    except ValidationError as err:
        problems = "; ".join(
            _variable(prefix, problem["loc"]) + f": {problem['msg']}"
            for problem in err.errors(include_input=False, include_url=False)
        )
        raise ApplicationError(
            f"{executor} executor: bad setting: {problems}",
            type=EXECUTOR_UNAVAILABLE,
            non_retryable=True,
        ) from None
    except SettingsError as err:  # a JSON-valued variable that is not JSON at all
        raise ApplicationError(
            f"{executor} executor: bad {prefix}* setting: {err}",
            type=EXECUTOR_UNAVAILABLE,
            non_retryable=True,
        ) from None


def _variable(prefix: str, loc: tuple[int | str, ...]) -> str:
    """``IMPLFLOW_CODEX_PRICES (gpt-5.input_per_mtok)``: the variable, then where inside it."""
    name = f"{prefix}{str(loc[0]).upper()}" if loc else prefix.rstrip("_")
    inner = ".".join(str(part) for part in loc[1:])
    return f"{name} ({inner})" if inner else name


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


class AgentSettings(BaseSettings):
    """The settings every agent executor has (each subclass under its own environment
    prefix, e.g. ``IMPLFLOW_CLAUDE_``, and with its own default ``bin``)."""

    bin: str = Field(min_length=1, description="Program name or path.")
    stall_s: float = Field(
        default=600.0, gt=0, description="No event for this long kills the agent (AgentStalled)."
    )
    linger_s: float = Field(
        default=30.0, gt=0, description="Alive this long after its final event: killed."
    )


class AgentState:
    """What an executor learns from one run's events, as far as the shared run needs it.

    Each executor reads its own event stream into a subclass that gives ``session_id``,
    ``turns``, ``cost_usd`` and this run's ``input_tokens`` / ``output_tokens``; the heartbeat
    details, the ledger's usage and the one-line facts are built from those here, once.
    """

    session_id: str | None

    @property
    def turns(self) -> int:
        raise NotImplementedError

    @property
    def cost_usd(self) -> float | None:
        raise NotImplementedError

    @property
    def input_tokens(self) -> int:
        raise NotImplementedError

    @property
    def output_tokens(self) -> int:
        raise NotImplementedError

    def progress(self) -> dict[str, object]:
        """Added to each heartbeat (session id, turns, cost, tokens)."""
        return self.details()

    def details(self) -> dict[str, Any]:
        """Small facts for a failure (the workflow's cost ledger reads them)."""
        return {
            "session_id": self.session_id,
            "turns": self.turns,
            "cost_usd": self.cost_usd,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
        }

    def agent_usage(self) -> AgentUsage:
        return AgentUsage.model_validate(self.details())

    def facts(self) -> str:
        """One line for messages: turns, tokens, cost, session."""
        tokens = f"{self.input_tokens} in / {self.output_tokens} out tokens"
        session = self.session_id or "none"
        return f"{self.turns} turns, {tokens}, {dollars(self.cost_usd)}, session {session}"


SettingsT = TypeVar("SettingsT", bound=AgentSettings)
StateT = TypeVar("StateT", bound=AgentState)


class AgentExecutor(Generic[SettingsT]):
    """The base of the coding-agent executors; each keeps its argv, events and judging."""

    name: str
    install_hint: ClassVar[str]
    settings_type: ClassVar[type[AgentSettings]]
    """The executor's own settings class, read from the worker's environment (its
    ``env_prefix``, e.g. ``IMPLFLOW_CLAUDE_``, names the variables)."""
    log_tag: ClassVar[str]
    """Names its files in ``ctx.log_dir`` (``<phase>-r<round>-a<attempt>.<tag>.jsonl``)
    and its logger (``implflow.executors.<tag>``)."""
    session_noun: ClassVar[str] = "session"

    def __init__(
        self,
        settings: SettingsT,
        *,
        specialists_dir: Path | None = None,
        system_prompt: str | None = None,
    ) -> None:
        self.settings: SettingsT = settings
        self.specialists_dir = specialists_dir
        """The worker's specialist files, looked up after the repo's ``.claude/agents``."""
        self.system_prompt = system_prompt
        """Fixed specialist text for every run; ``None``: each task's specialist is looked up."""

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        """Reads the executor's ``env_prefix`` variables once, for the life of the worker."""
        own = load_settings(cls.settings_type, executor=cls.name, prefix=cls.env_prefix())
        return cls(cast(SettingsT, own), specialists_dir=settings.specialists_dir)

    @classmethod
    def env_prefix(cls) -> str:
        return str(cls.settings_type.model_config.get("env_prefix", ""))

    @property
    def log(self) -> Any:
        """The executor's structlog logger."""
        return structlog.stdlib.get_logger(f"implflow.executors.{self.log_tag}")

    def specialist_text(self, ctx: ExecutionContext) -> str:
        """The specialist text of this run: the fixed one, else the task's specialist."""
        if self.system_prompt is not None:
            return self.system_prompt
        return specialist_prompt(ctx.phase_input, ctx.workdir, self.specialists_dir)

    def check_available(self) -> None:
        """Raise a non-retryable ``EXECUTOR_UNAVAILABLE`` when the CLI is not installed."""
        self._binary()

    def _binary(self) -> str:
        return find_binary(
            self.settings.bin,
            executor=self.name,
            install_hint=self.install_hint,
            setting=f"{self.env_prefix()}BIN",
        )

    def _session_file(self, ctx: ExecutionContext) -> Path:
        pin = ctx.phase_input
        return ctx.log_dir / f"{pin.phase.name}-r{pin.round}.{self.log_tag}-session.json"

    async def _run_resuming(
        self,
        ctx: ExecutionContext,
        run: Callable[[str | None], Awaitable[tuple[StateT, StreamResult]]],
        found: Callable[[StateT], bool],
    ) -> tuple[StateT, StreamResult]:
        """``run``, resuming on a retry the session an earlier attempt left.

        Only when that attempt's files were all restored (``ctx.earlier.resumable``): a
        session resumed on a tree that lost some of its writes would build on files that
        are not there, so such a retry starts a fresh session. When ``found`` says the agent
        did not know the session (another worker ran the attempt), run again afresh.
        """
        resume = None
        if ctx.attempt > 1:
            resume = previous_session(self._session_file(ctx))
            if resume and not ctx.earlier.resumable:
                self.log.warning(
                    f"earlier attempt's files not all restored; not resuming its "
                    f"{self.session_noun}, starting afresh",
                    session_id=resume,
                )
                resume = None
        state, result = await run(resume)
        if resume and not found(state):
            self.log.warning(
                f"{self.session_noun} to resume not found; starting afresh", session_id=resume
            )
            state, result = await run(None)
        return state, result

    async def _stream(
        self,
        ctx: ExecutionContext,
        binary: str,
        state: AgentState,
        *,
        argv: list[str],
        env: dict[str, str],
        resume: str | None,
        on_event: Callable[[Event], None],
        is_final: Callable[[Event], bool],
    ) -> StreamResult:
        """One run of the CLI in the workspace; a stall is ``AGENT_STALLED`` (retryable)."""
        pin = ctx.phase_input
        stem = (
            f"{pin.phase.name}-r{pin.round}-a{ctx.attempt}{'-resume' if resume else ''}"
            f".{self.log_tag}"
        )
        try:
            return await run_event_stream(
                argv,
                cwd=ctx.workdir,
                env=env,
                log_path=ctx.log_dir / f"{stem}.jsonl",
                stderr_path=ctx.log_dir / f"{stem}.stderr.log",
                limits=StreamLimits(
                    timeout_s=pin.phase.timeout_s,
                    stall_s=self.settings.stall_s,
                    linger_s=self.settings.linger_s,
                    heartbeat_every_s=heartbeat_every_s(pin.phase.heartbeat_s),
                ),
                on_event=on_event,
                is_final=is_final,
                heartbeat=ctx.heartbeat,
                progress=state.progress,
            )
        except FileNotFoundError:
            raise ApplicationError(
                f"{self.name} executor: {binary!r} disappeared; install with: {self.install_hint}",
                type=EXECUTOR_UNAVAILABLE,
                non_retryable=True,
            ) from None
        except StreamStalled as err:
            raise ApplicationError(
                f"phase {pin.phase.name!r}: {err} ({state.facts()})",
                state.details(),
                type=AGENT_STALLED,
            ) from None


def no_final_event(
    where: str, event: str, state: AgentState, run: StreamResult
) -> ApplicationError:
    """The CLI exited before its final ``event``: ``AGENT_FAILED`` (retryable), with its log."""
    return ApplicationError(
        f"{where} exited {run.returncode} without a {event} event ({state.facts()}); "
        f"log {run.log_path}; stderr: {run.stderr_tail[-300:]}",
        state.details(),
        type=AGENT_FAILED,
    )
