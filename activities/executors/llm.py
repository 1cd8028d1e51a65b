"""The ``llm`` executor: any chat model drives a small, confined coding agent.

Built on pydantic-ai. The model is an OpenAI or Anthropic endpoint, hosted or
local (Ollama, vLLM, anything OpenAI-compatible), chosen on the worker:

- ``IMPLFLOW_LLM_MODEL``: ``provider:model`` (``openai:gpt-4o``,
  ``anthropic:claude-sonnet-4-5``, any pydantic-ai model id), or a bare model
  name together with ``IMPLFLOW_LLM_BASE_URL`` for an OpenAI-compatible server.
- ``IMPLFLOW_LLM_BASE_URL``: the endpoint, for local or proxied models.
- ``IMPLFLOW_LLM_API_KEY_ENV``: the *name* of the worker variable that holds
  the key (default: the provider's own, e.g. ``OPENAI_API_KEY``). The value is
  read on the worker only; it never enters inputs, history, heartbeats or logs.
- ``IMPLFLOW_LLM_MAX_TURNS`` (model requests per phase, unless the task's
  budget sets ``max_turns_per_phase``), ``IMPLFLOW_LLM_MAX_TOOL_CALLS``,
  ``IMPLFLOW_LLM_REQUEST_TIMEOUT_S``, ``IMPLFLOW_LLM_COMMAND_TIMEOUT_S``.

The agent's tools (``read_file``, ``write_file``, ``edit_file``, ``list_dir``,
``run_command``) act only inside ``ctx.workdir``: paths go through
``activities.confine``, commands are argv lists run without a shell in a
scrubbed environment (no model key) with a time limit. A refused tool call is
answered with the reason, so the model can correct itself.

Temporal owns retrying: the provider SDK's retries are off. Exceeding the turn
or tool-call cap is ``BudgetExceeded`` (non-retryable); API failures are
``AgentApiError`` (retried by the phase's policy); a rejected key or unknown
model is ``ExecutorUnavailable``. The transcript goes to ``ctx.log_dir``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from temporalio.exceptions import ApplicationError

from activities import confine
from activities.executors.agent_common import (
    EnvVarName,
    load_settings,
    phase_prompt,
    specialist_prompt,
)
from activities.executors.base import ExecutionContext, ExecutionOutcome
from activities.process import heartbeat_every_s, run_process, scrubbed_env
from implflow.errors import AGENT_API_ERROR, AGENT_FAILED, BUDGET_EXCEEDED, EXECUTOR_UNAVAILABLE
from implflow.settings import Settings

try:
    from pydantic_ai import (
        Agent,
        ModelAPIError,
        ModelHTTPError,
        ModelMessagesTypeAdapter,
        ModelSettings,
        Tool,
        UnexpectedModelBehavior,
        UsageLimitExceeded,
        UsageLimits,
        UserError,
        capture_run_messages,
    )

    _MISSING: str | None = None
except ImportError as _err:  # the optional `llm` extra is not installed on this worker
    _MISSING = str(_err)

if TYPE_CHECKING:
    from pydantic_ai.messages import ModelMessage
    from pydantic_ai.models import Model
    from pydantic_ai.usage import RunUsage

INSTALL_HINT = "pip install 'implflow[llm]' (pydantic-ai-slim with the openai and anthropic extras)"

TOOL_ARG_RETRIES = 2
"""Times the model may resend a tool call whose arguments failed validation.
These are the model correcting its own input, not transport retries."""

INSTRUCTIONS = """\
You are a careful software engineer working as a coding agent in a repository.
You act only through your tools: read_file, write_file, edit_file, list_dir, run_command.
Paths are relative to the repository root. Absolute paths, '..' that leaves the repository,
symlinks that lead outside it and the .git directory are refused.
run_command takes an argv list and runs it WITHOUT a shell: no pipes, redirection, globbing,
'&&' or variable expansion; each list element is passed to the program as is.
Do the work the phase asks for, check it (for example run the tests), and do not commit.
End with a short plain-text summary of what you changed."""


class LlmSettings(BaseSettings):
    """How this worker talks to a model; environment prefix ``IMPLFLOW_LLM_``."""

    model_config = SettingsConfigDict(env_prefix="IMPLFLOW_LLM_", extra="ignore")

    model: str | None = Field(
        default=None,
        description="provider:model (openai:gpt-4o, anthropic:claude-sonnet-4-5), "
        "or a bare model name with BASE_URL.",
    )
    base_url: str | None = Field(
        default=None, description="OpenAI-compatible (or Anthropic) endpoint, e.g. Ollama."
    )
    api_key_env: EnvVarName | None = Field(
        default=None, description="NAME of the worker variable holding the API key."
    )
    max_turns: int = Field(default=50, gt=0, description="Model requests per phase.")
    max_tool_calls: int | None = Field(default=200, gt=0, description="Tool calls per phase.")
    request_timeout_s: float = Field(default=300.0, gt=0, description="One model request.")
    command_timeout_s: float = Field(default=600.0, gt=0, description="One run_command.")
    read_max_bytes: int = Field(default=200_000, gt=0, description="read_file returns at most.")
    list_max_entries: int = Field(default=500, gt=0, description="list_dir returns at most.")

    @field_validator("base_url")
    @classmethod
    def _is_http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value


def _unavailable(message: str) -> ApplicationError:
    return ApplicationError(
        f"llm executor: {message}", type=EXECUTOR_UNAVAILABLE, non_retryable=True
    )


@dataclass
class _Progress:
    """Counts reported in heartbeats, failure details and the summary."""

    model_requests: int = 0
    tool_calls: int = 0
    refused: int = 0
    commands: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    last_tool: str | None = None

    def take_usage(self, usage: RunUsage) -> None:
        self.model_requests = usage.requests  # responses received, not requests refused
        self.input_tokens = usage.input_tokens
        self.output_tokens = usage.output_tokens

    def details(self) -> dict[str, object]:
        return {
            "executor": "llm",
            "turns": self.model_requests,
            "tool_calls": self.tool_calls,
            "refused_tool_calls": self.refused,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "last_tool": self.last_tool,
        }

    def facts(self) -> str:
        return (
            f"{self.model_requests} model requests, {self.tool_calls} tool calls "
            f"({self.refused} refused), {self.input_tokens} input / "
            f"{self.output_tokens} output tokens"
        )


class _Toolbox:
    """The agent's tools for one phase attempt, bound to its workspace."""

    def __init__(self, ctx: ExecutionContext, settings: LlmSettings, progress: _Progress) -> None:
        self.ctx = ctx
        self.settings = settings
        self.progress = progress
        self.workdir = ctx.workdir

    def _started(self, name: str) -> None:
        self.progress.tool_calls += 1
        self.progress.last_tool = name
        self.ctx.heartbeat(self.progress.details())

    def _refused(self, tool: str, reason: object) -> str:
        self.progress.refused += 1
        return f"ERROR ({tool} refused): {reason}"

    async def read_file(self, path: str) -> str:
        """Read a text file.

        Args:
            path: File path relative to the repository root.
        """
        self._started("read_file")
        try:
            got = confine.read_text(self.workdir, path, max_bytes=self.settings.read_max_bytes)
        except (confine.PathEscapeError, OSError) as err:
            return self._refused("read_file", _os_reason(err))
        if got.truncated:
            shown = self.settings.read_max_bytes
            return f"{got.text}\n[truncated: showed {shown} of {got.size} bytes]"
        return got.text

    async def write_file(self, path: str, content: str) -> str:
        """Create or overwrite a text file (parent directories are created).

        Args:
            path: File path relative to the repository root.
            content: The complete new content of the file.
        """
        self._started("write_file")
        try:
            written = confine.write_text(self.workdir, path, content)
        except (confine.PathEscapeError, OSError) as err:
            return self._refused("write_file", _os_reason(err))
        name = confine.relative_name(self.workdir, written)
        return f"wrote {len(content.encode('utf-8'))} bytes to {name}"

    async def edit_file(self, path: str, old: str, new: str) -> str:
        """Replace one exact occurrence of ``old`` with ``new`` in a file.

        Args:
            path: File path relative to the repository root.
            old: Text to replace; must occur exactly once (include surrounding lines to be unique).
            new: Replacement text.
        """
        self._started("edit_file")
        if not old:
            return self._refused("edit_file", "'old' is empty; use write_file to create a file")
        try:
            got = confine.read_text(self.workdir, path, max_bytes=self.settings.read_max_bytes)
            if got.truncated:
                return self._refused("edit_file", f"{path!r} is too large to edit here")
            count = got.text.count(old)
            if count != 1:
                where = "does not occur" if count == 0 else f"occurs {count} times"
                return self._refused(
                    "edit_file", f"'old' {where} in {path!r}; it must match exactly once"
                )
            confine.write_text(self.workdir, path, got.text.replace(old, new, 1))
        except (confine.PathEscapeError, OSError) as err:
            return self._refused("edit_file", _os_reason(err))
        return f"edited {path}: replaced 1 occurrence"

    async def list_dir(self, path: str = ".") -> str:
        """List a directory (directories end in '/', symlinks in '@').

        Args:
            path: Directory relative to the repository root; '.' is the root.
        """
        self._started("list_dir")
        try:
            listing = confine.list_dir(
                self.workdir, path, max_entries=self.settings.list_max_entries
            )
        except (confine.PathEscapeError, OSError) as err:
            return self._refused("list_dir", _os_reason(err))
        more = f"\n[{listing.total - len(listing.entries)} more]" if listing.truncated else ""
        return ("\n".join(listing.entries) or "(empty)") + more

    async def run_command(self, argv: list[str], timeout_s: float | None = None) -> str:
        """Run a program in the repository root, without a shell, and return its exit code
        and the tail of its output.

        Args:
            argv: Program and arguments, e.g. ["python", "-m", "pytest", "-q"].
            timeout_s: Seconds before the command is killed (capped by the worker's limit).
        """
        self._started("run_command")
        if not argv or not argv[0]:
            return self._refused("run_command", "argv is empty")
        if any("\0" in arg for arg in argv):
            return self._refused("run_command", "an argument contains a NUL byte")
        limit = self.settings.command_timeout_s
        timeout = min(timeout_s, limit) if timeout_s and timeout_s > 0 else limit
        self.progress.commands += 1
        pin = self.ctx.phase_input
        log_path = self.ctx.log_dir / (
            f"{pin.phase.name}-r{pin.round}-a{self.ctx.attempt}.llm-cmd{self.progress.commands}.log"
        )

        def beat(details: dict[str, object]) -> None:
            self.ctx.heartbeat({**self.progress.details(), **details})

        try:
            result = await run_process(
                argv,
                cwd=self.workdir,
                env=scrubbed_env(self.ctx.env_allowlist, self.ctx.task_env),
                log_path=log_path,
                timeout_s=timeout,
                heartbeat=beat,
                heartbeat_every_s=heartbeat_every_s(pin.phase.heartbeat_s),
            )
        except FileNotFoundError:
            return self._refused("run_command", f"program {argv[0]!r} not found")
        except PermissionError:
            return self._refused("run_command", f"program {argv[0]!r} is not executable")
        except TimeoutError:
            return f"killed after {timeout:g}s (time limit); see the output of a shorter run"
        return f"exit code {result.returncode}\n{result.tail}"

    def tools(self) -> list[Tool[None]]:
        # Sequential: two edits of one file in the same model turn must not interleave.
        return [
            Tool(fn, takes_ctx=False, sequential=True, max_retries=TOOL_ARG_RETRIES)
            for fn in (
                self.read_file,
                self.write_file,
                self.edit_file,
                self.list_dir,
                self.run_command,
            )
        ]


def _os_reason(err: Exception) -> str:
    if isinstance(err, confine.PathEscapeError):
        return str(err)
    if isinstance(err, OSError):
        # Never the absolute path: the model sees workspace-relative names only.
        return err.strerror or type(err).__name__
    return type(err).__name__


class LlmExecutor:
    """A pydantic-ai agent with confined file and command tools; one run per phase attempt."""

    name = "llm"

    def __init__(
        self,
        settings: LlmSettings,
        *,
        model: Model | None = None,
        specialists_dir: Path | None = None,
        system_prompt: str | None = None,
    ) -> None:
        self.settings = settings
        self._model = model
        """A model object to use instead of building one from the settings (tests)."""
        self.specialists_dir = specialists_dir
        self.system_prompt = system_prompt
        """Fixed specialist text for every run; ``None``: each task's specialist is looked up."""

    @classmethod
    def from_settings(cls, settings: Settings) -> LlmExecutor:
        """Reads ``IMPLFLOW_LLM_*`` once, for the life of the worker."""
        own = load_settings(LlmSettings, executor=cls.name, prefix="IMPLFLOW_LLM_")
        return cls(own, specialists_dir=settings.specialists_dir)

    def check_available(self) -> None:
        """Raise a non-retryable ``EXECUTOR_UNAVAILABLE`` saying what to install or set."""
        self._resolve_model()

    def _resolve_model(self) -> Model:
        if _MISSING is not None:
            raise _unavailable(f"pydantic-ai is not installed ({_MISSING}); {INSTALL_HINT}")
        if self._model is not None:
            return self._model
        return build_model(self.settings)

    async def execute(self, ctx: ExecutionContext) -> ExecutionOutcome:
        """Run the agent on the phase in ``ctx.workdir``; raise ``ApplicationError`` on failure."""
        model = self._resolve_model()
        pin = ctx.phase_input
        progress = _Progress()
        toolbox = _Toolbox(ctx, self.settings, progress)
        instructions = INSTRUCTIONS
        specialist = self.system_prompt or specialist_prompt(pin, ctx.workdir, self.specialists_dir)
        instructions += "\n\n" + specialist
        agent: Agent[None, str] = Agent(
            model,
            instructions=instructions,
            tools=toolbox.tools(),
            retries={"tools": TOOL_ARG_RETRIES, "output": 1},
            name="implflow-llm",
        )
        limits = UsageLimits(
            request_limit=pin.budget.max_turns_per_phase or self.settings.max_turns,
            tool_calls_limit=self.settings.max_tool_calls,
        )
        model_settings = ModelSettings(
            max_retries=0,  # Temporal's retry policy owns retrying, not the provider SDK
            request_timeout=self.settings.request_timeout_s,
        )
        where = f"phase {pin.phase.name!r}: llm ({_model_label(model)})"
        transcript = ctx.log_dir / f"{pin.phase.name}-r{pin.round}-a{ctx.attempt}.llm.json"
        output: str | None = None
        with capture_run_messages() as messages:
            try:
                async with agent.iter(
                    phase_prompt(pin, ctx.workdir),
                    usage_limits=limits,
                    model_settings=model_settings,
                ) as run:
                    async for node in run:
                        progress.take_usage(run.usage)
                        if Agent.is_model_request_node(node):
                            ctx.heartbeat(progress.details())
                    progress.take_usage(run.usage)
                    if run.result is not None:
                        output = run.result.output
            except (UsageLimitExceeded, ModelAPIError, UnexpectedModelBehavior, UserError) as err:
                raise _run_error(where, err, progress) from None
            finally:
                _save(transcript, messages)  # also of a failed run: it says what went wrong
        if output is None:
            raise ApplicationError(
                f"{where} ended without a final answer ({progress.facts()})",
                progress.details(),
                type=AGENT_FAILED,
            )
        text = " ".join(output.split())[:300]
        return ExecutionOutcome(
            outcome="done",
            summary=f"llm {_model_label(model)}: {progress.facts()}. {text}".strip()[:1500],
            artifacts=[str(transcript)],
        )


def build_model(settings: LlmSettings) -> Model:
    """The pydantic-ai model the settings describe (the key is read here, by name)."""
    spec = settings.model
    if not spec:
        raise _unavailable(
            "no model configured; set IMPLFLOW_LLM_MODEL (e.g. openai:gpt-4o or "
            "anthropic:claude-sonnet-4-5), or a model name plus IMPLFLOW_LLM_BASE_URL for an "
            "OpenAI-compatible server such as Ollama or vLLM"
        )
    provider, sep, name = spec.partition(":")
    if not sep:
        if not settings.base_url:
            raise _unavailable(
                f"IMPLFLOW_LLM_MODEL={spec!r} names no provider; write provider:model "
                "(openai:gpt-4o) or set IMPLFLOW_LLM_BASE_URL for an OpenAI-compatible server"
            )
        provider, name = "openai", spec
    api_key = _api_key(settings)
    try:
        if provider == "anthropic":
            from pydantic_ai.models.anthropic import AnthropicModel
            from pydantic_ai.providers.anthropic import AnthropicProvider

            return AnthropicModel(
                name, provider=AnthropicProvider(api_key=api_key, base_url=settings.base_url)
            )
        if provider in ("openai", "openai-chat") or settings.base_url:
            from pydantic_ai.models.openai import OpenAIChatModel
            from pydantic_ai.providers.openai import OpenAIProvider

            return OpenAIChatModel(
                name, provider=OpenAIProvider(base_url=settings.base_url, api_key=api_key)
            )
        if api_key is not None:
            raise _unavailable(
                "IMPLFLOW_LLM_API_KEY_ENV applies to openai and anthropic models or a BASE_URL; "
                f"provider {provider!r} reads its own standard variable"
            )
        from pydantic_ai.models import infer_model

        return infer_model(spec)
    except ApplicationError:
        raise
    except ImportError as err:
        raise _unavailable(
            f"the {provider!r} model client is not installed ({err}); {INSTALL_HINT}"
        ) from None
    except (UserError, ValueError) as err:
        # pydantic-ai's own message names the variable to set, never its value.
        raise _unavailable(
            f"cannot use model {spec!r} (a key variable can be named in "
            f"IMPLFLOW_LLM_API_KEY_ENV): {str(err)[:300]}"
        ) from None


def _api_key(settings: LlmSettings) -> str | None:
    name = settings.api_key_env
    if name is None:
        return None
    value = os.environ.get(name, "")
    if not value:
        raise _unavailable(
            f"IMPLFLOW_LLM_API_KEY_ENV names {name}, which is not set on this worker"
        )
    return value


def _model_label(model: Model) -> str:
    return f"{model.system}:{model.model_name}"


def _run_error(where: str, err: Exception, progress: _Progress) -> ApplicationError:
    """The activity error for an agent run that pydantic-ai ended with ``err``."""
    if isinstance(err, UsageLimitExceeded):
        reason = str(err).split(". Consider")[0]
        return ApplicationError(
            f"{where} hit its budget: {reason} ({progress.facts()})",
            progress.details(),
            type=BUDGET_EXCEEDED,
            non_retryable=True,
        )
    if isinstance(err, ModelHTTPError):
        return _http_error(where, err, progress)
    if isinstance(err, ModelAPIError):
        message, kind = f"{where}: model API failed: {type(err).__name__}", AGENT_API_ERROR
    else:  # UnexpectedModelBehavior, UserError
        message, kind = f"{where} failed: {str(err)[:300]}", AGENT_FAILED
    return ApplicationError(f"{message} ({progress.facts()})", progress.details(), type=kind)


def _http_error(where: str, err: ModelHTTPError, progress: _Progress) -> ApplicationError:
    status = err.status_code
    if status in (401, 403, 404):
        # Configuration, not luck: retrying cannot help. The body is left out on purpose
        # (an auth error may echo part of the key).
        what = {401: "rejected the API key", 403: "refused access", 404: "does not know"}[status]
        return ApplicationError(
            f"{where}: the endpoint {what} (HTTP {status}); check IMPLFLOW_LLM_MODEL, "
            "IMPLFLOW_LLM_BASE_URL and the key variable",
            progress.details(),
            type=EXECUTOR_UNAVAILABLE,
            non_retryable=True,
        )
    return ApplicationError(
        f"{where}: model API error HTTP {status} ({progress.facts()})",
        progress.details(),
        type=AGENT_API_ERROR,
    )


def _save(path: Path, messages: list[ModelMessage]) -> None:
    """The transcript as a file next to the other logs (never in history)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(ModelMessagesTypeAdapter.dump_json(messages, indent=1))


__all__ = ["LlmExecutor", "LlmSettings", "build_model"]
