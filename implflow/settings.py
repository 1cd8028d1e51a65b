"""Worker and client settings: one pydantic-settings class, ``IMPLFLOW_`` prefix.

The Temporal connection itself (address, namespace, TLS, API key) comes from
Temporal's own environment configuration (``TEMPORAL_ADDRESS``,
``TEMPORAL_NAMESPACE``, ``TEMPORAL_API_KEY``, ``TEMPORAL_TLS*``, profiles in
``temporal.toml``), read by ``temporalio.envconfig`` — see ``connection.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, HttpUrl, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from implflow import TASK_QUEUE

DEFAULT_ENV_ALLOWLIST: tuple[str, ...] = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")
"""The only worker environment variables a subprocess (agent, gate tool, service) inherits."""


class Settings(BaseSettings):
    """Everything a worker or the CLI reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="IMPLFLOW_", extra="ignore")

    task_queue: str = Field(default=TASK_QUEUE, min_length=1)
    executor: str = Field(
        default="shell",
        description="Executor used when a task names none. 'shell' works everywhere.",
    )
    data_dir: Path = Field(
        default=Path.home() / ".implflow",
        description="Embedded server database and worker workspaces live here.",
    )
    workspace_root: Path | None = Field(
        default=None, description="Disposable clones; default: <data_dir>/workspaces."
    )
    record_dir: Path | None = Field(
        default=None,
        description="Cassettes of tasks started with record=true; default <data_dir>/cassettes.",
    )
    specialists_dir: Path | None = Field(
        default=None,
        description="Specialist files (<name>.md), looked up after the repo's .claude/agents.",
    )
    pr_command: list[str] | None = Field(
        default=None,
        description=(
            "argv run in the task's checkout to open a pull request, e.g. "
            '["gh", "pr", "create", "--head", "{branch}", "--title", "{title}", "--body", '
            '"{description}"]; placeholders {branch} {title} {description} {workflow_id}.'
        ),
    )
    webhook_url: HttpUrl | None = Field(
        default=None, description="POSTed a JSON reminder when an approval is overdue."
    )
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: str = "INFO"
    shutdown_grace_s: float = Field(default=30.0, ge=0)
    max_concurrent_activities: int = Field(default=4, ge=1)
    server_port: int = Field(default=7233, ge=1, le=65535)
    ui_port: int = Field(default=8233, ge=1, le=65535)
    env_allowlist: list[str] = Field(
        default_factory=lambda: list(DEFAULT_ENV_ALLOWLIST),
        description="Variables an executor subprocess inherits; everything else is scrubbed.",
    )
    env_root: Path | None = Field(
        default=None,
        description="Per-task environments (the target's dependencies), one per dependency "
        "hash; default <data_dir>/envs.",
    )
    uv_cache_dir: Path | None = Field(
        default=None, description="uv's package cache (UV_CACHE_DIR); default <data_dir>/uv-cache."
    )
    env_offline: bool = Field(
        default=False,
        description="Build task environments from uv's cache only (uv --offline): no index.",
    )
    env_build_timeout_s: float = Field(
        default=900.0, gt=0, le=7200, description="Bound on building one task environment."
    )
    sandbox: Literal["auto", "bwrap", "off"] = Field(
        default="auto",
        description="Executor and gate programs run inside bubblewrap: 'bwrap' requires it, "
        "'auto' uses it when it works here, 'off' never (activities/sandbox.py).",
    )

    @field_validator("executor")
    @classmethod
    def _executor_lower(cls, value: str) -> str:
        return value.strip().lower()

    def folder(self, name: Literal["workspaces", "cassettes", "envs", "uv-cache"]) -> Path:
        """A working folder: its own setting when given, else ``<data_dir>/<name>``."""
        given = {
            "workspaces": self.workspace_root,
            "cassettes": self.record_dir,
            "envs": self.env_root,
            "uv-cache": self.uv_cache_dir,
        }[name]
        return given or self.data_dir / name
