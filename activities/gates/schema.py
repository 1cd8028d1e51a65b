"""The schema of ``.implflow/gates.toml`` and of the configuration a gate runs with.

Pure pydantic: ``config`` reads a file into these models and ``presets`` builds them, so
both import this module and neither imports the other.

Schema (every key optional; unknown keys are refused)::

    kind = "python"                  # python | node | none: force a preset (none: no preset)

    [service]                        # how the load probe (optimize, verify) starts the service
    command = ["{python}", "-m", "todo_service", "--port", "{port}"]   # argv, never a shell
    env = { PORT = "{port}" }
    health_path = "/health"          # GET until 2xx/3xx before the load starts
    paths = ["/todos"]               # load spread over these, round robin
    duration_s = 10                  # measured load; plus warmup_s (2) before it
    warmup_s = 2
    connections = 32
    health_timeout_s = 30
    windows = 5                      # the load is measured in this many windows (medians, spread)
    calibrate = true                 # also measure a trivial endpoint: the machine's own figures

    [[phases.test.checks]]           # a list of checks per phase, run in order
    name = "pytest"                  # letters, digits, . _ -: also the log file's name
    argv = ["{python}", "-m", "pytest", "--junitxml={report}"]   # optional for some formats
    report = "{report_dir}/junit.xml"   # relative to the repository
    format = "junit"                 # see FORMATS below
    timeout_s = 600                  # per check, bounded (≤ 3600)
    env = { KEY = "value" }          # added to the scrubbed environment
    ok_exit_codes = [0]              # exit-code format: which codes pass
    paths = []                       # docstrings: source dirs; changed: one must change
    against = "thresholds"           # loadprobe: "thresholds" (targets), "baseline", or "measure"
    install = "pip install pytest"   # shown when the tool is missing
    requires = ["pytest"]            # Python modules the worker's interpreter must have
    setup = false                    # true: an install step; its failure is `environment`
    thresholds = { max_failures = 0 }   # per-check overrides, see CheckLimits

Placeholders in ``argv``, ``env``, ``report`` and ``paths``: ``{python}`` (the task
environment's interpreter: the target's dependencies are installed there; the worker's own
when the target declares none), ``{worker_python}`` (the worker's interpreter: implflow's
tools, never the target's packages), ``{workdir}``, ``{report_dir}``, ``{report}`` (the
check's report path), ``{tmp}`` (a scratch directory removed after the gate),
``{cache_dir}`` (a tool cache outside the repository, kept between gates), and in
``[service]`` ``{port}``.

Thresholds: a run's explicitly set ``Thresholds`` win over a check's ``thresholds``, which
win over the defaults (the backend specialist's card).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from implflow.models import PHASE_NAME_PATTERN, ProjectKind

__all__ = [
    "FORMATS",
    "CheckConfig",
    "CheckFormat",
    "CheckLimits",
    "GateConfig",
    "GateFile",
    "PhaseChecks",
    "ServiceConfig",
    "ServiceProposal",
]

CheckFormat = Literal[
    "junit",  # JUnit XML from the tool: no failures or errors, enough tests
    "cobertura",  # Cobertura XML: line coverage >= coverage_min_pct
    "sarif",  # SARIF 2.1.0: at most max_high high findings (and max_findings in all)
    "openapi",  # an OpenAPI 3.x document in the repo, valid per openapi-spec-validator
    "loadprobe",  # start [service], load it with wrk, hold figures to targets or a baseline
    "exists",  # the report path exists and is not empty
    "exit-code",  # argv exits with one of ok_exit_codes
    "review",  # a review markdown file with no unanswered [blocking] open question
    "docstrings",  # docstring coverage of the Python files under paths >= docstring_min_pct
    "changed",  # at least one of paths changed against base_ref
    "service",  # design: a service command was found or proposed (.implflow/service.toml)
]
FORMATS: tuple[str, ...] = CheckFormat.__args__  # type: ignore[attr-defined]

_NEEDS_REPORT = {"junit", "cobertura", "sarif", "openapi", "exists", "review"}
_NEEDS_ARGV = {"exit-code"}
_NEEDS_PATHS = {"docstrings", "changed"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,59}$")
_PHASE = re.compile(PHASE_NAME_PATTERN)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CheckLimits(_Strict):
    """Per-check threshold overrides; ``None`` means the run's (or the default) value."""

    coverage_min_pct: float | None = Field(default=None, ge=0, le=100)
    p95_ms_max: float | None = Field(default=None, gt=0)
    rps_min: float | None = Field(default=None, ge=0)
    rss_mb_max: float | None = Field(default=None, gt=0)
    cpu_pct_max: float | None = Field(default=None, gt=0, le=100)
    error_rate_max: float | None = Field(default=None, ge=0, le=1)
    max_high: int | None = Field(default=None, ge=0)
    """SARIF: most high-severity findings allowed (default 0 when max_findings is unset)."""
    max_findings: int | None = Field(default=None, ge=0)
    """SARIF: most findings of any severity allowed (default: no limit)."""
    max_errors: int | None = Field(default=None, ge=0)
    """SARIF: most findings the tool itself rates ``error`` (a lint error, not a security
    rating) allowed (default: no limit)."""
    max_failures: int | None = Field(default=None, ge=0)
    """JUnit: most failed or errored tests allowed (default 0)."""
    min_tests: int | None = Field(default=None, ge=0)
    """JUnit: fewest tests that must run (default 1)."""
    docstring_min_pct: float | None = Field(default=None, ge=0, le=100)
    """Docstrings: least share of documented modules, classes and functions (default 80)."""
    regression_pct: float | None = Field(default=None, ge=0, le=1000)
    """Load probe against a baseline: allowed p95 rise / throughput drop in % (default 30)."""


class CheckConfig(_Strict):
    """One check: an optional argv command plus how its result is judged."""

    name: str
    format: CheckFormat
    argv: list[str] | None = Field(default=None, min_length=1, max_length=256)
    report: str | None = Field(default=None, min_length=1, max_length=1024)
    timeout_s: float = Field(default=600.0, gt=0, le=3600)
    env: dict[str, str] = Field(default_factory=dict)
    ok_exit_codes: list[int] = Field(default_factory=lambda: [0], min_length=1)
    paths: list[str] = Field(default_factory=list, max_length=64)
    against: Literal["thresholds", "baseline", "measure"] = "thresholds"
    install: str | None = Field(default=None, max_length=300)
    requires: list[str] = Field(default_factory=list, max_length=16)
    thresholds: CheckLimits = Field(default_factory=CheckLimits)
    setup: bool = False
    """A setup step (e.g. ``npm ci``): when it fails, the environment failed, not the agent."""
    scope: Literal["all", "changed"] = "all"
    """SARIF: ``changed`` counts only the findings in files the task changed against its base
    commit (a lint run over a repository that was not clean before the task: the agent answers
    for what it touched); ``all`` every finding. Without a base commit: ``all``."""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"{value!r}: use 1-60 letters, digits, '.', '_' or '-'")
        return value

    @field_validator("argv")
    @classmethod
    def _argv(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value[0].strip():
            raise ValueError("argv[0] must name a program")
        return value

    @model_validator(mode="after")
    def _fits_format(self) -> CheckConfig:
        if self.format in _NEEDS_REPORT and self.report is None:
            raise ValueError(f"format {self.format!r} needs 'report'")
        if self.format in _NEEDS_ARGV and self.argv is None:
            raise ValueError(f"format {self.format!r} needs 'argv'")
        if self.format in _NEEDS_PATHS and not self.paths:
            raise ValueError(f"format {self.format!r} needs 'paths'")
        return self


class PhaseChecks(_Strict):
    """The checks of one phase, run in order."""

    checks: list[CheckConfig] = Field(default_factory=list, max_length=32)

    @field_validator("checks")
    @classmethod
    def _unique(cls, value: list[CheckConfig]) -> list[CheckConfig]:
        seen: set[str] = set()
        for check in value:
            if check.name in seen:
                raise ValueError(f"check name {check.name!r} is used twice")
            seen.add(check.name)
        return value


class ServiceConfig(_Strict):
    """How the load probe starts the service and drives it (see ``LoadProbeSpec``)."""

    command: list[str] | None = Field(default=None, min_length=1, max_length=256)
    env: dict[str, str] = Field(default_factory=dict)
    health_path: str = "/health"
    paths: list[str] | None = Field(default=None, min_length=1, max_length=32)
    """Default: the health path."""
    duration_s: int = Field(default=10, ge=1, le=120)
    warmup_s: int = Field(default=2, ge=0, le=30)
    connections: int = Field(default=32, ge=1, le=1024)
    health_timeout_s: float = Field(default=30.0, gt=0, le=300)
    windows: int = Field(default=5, ge=1, le=20)
    """The measured load is split into this many windows: medians and their spread are judged,
    so one noisy second does not fail a gate."""
    calibrate: bool = True
    """Measure a trivial endpoint in the same gate, window for window: how fast this machine is
    right now (a baseline from a calmer moment is scaled by it; a target that even the trivial
    endpoint misses is an ``environment`` failure)."""

    def merged_over(self, base: ServiceConfig | None) -> ServiceConfig:
        """This section's explicitly set keys over ``base`` (a preset's guess)."""
        if base is None:
            return self
        data = base.model_dump()
        data.update(self.model_dump(include=self.model_fields_set))
        return ServiceConfig.model_validate(data)


class GateFile(_Strict):
    """The document ``.implflow/gates.toml`` holds."""

    kind: ProjectKind | None = None
    service: ServiceConfig | None = None
    phases: dict[str, PhaseChecks] = Field(default_factory=dict)

    @field_validator("phases")
    @classmethod
    def _phase_names(cls, value: dict[str, PhaseChecks]) -> dict[str, PhaseChecks]:
        for name in value:
            if not _PHASE.match(name):
                raise ValueError(f"phase name {name!r}: use lower-case letters, digits, '_' or '-'")
        return value


class GateConfig(BaseModel):
    """The configuration in force for one repository: file over preset."""

    model_config = ConfigDict(frozen=True)

    source: str
    """``.implflow/gates.toml``, ``preset:python``, ``preset:node`` or ``none``."""
    kind: ProjectKind
    service: ServiceConfig | None = None
    service_source: str = ""
    """Where ``service.command`` came from: ``.implflow/gates.toml`` or what the preset
    detected (e.g. ``detected: FastAPI app app.main:app``); empty without a command."""
    phases: dict[str, list[CheckConfig]] = Field(default_factory=dict)

    def checks_for(self, phase: str) -> list[CheckConfig]:
        """The phase's checks; an unknown phase has none (its gate passes empty)."""
        return list(self.phases.get(phase, []))


class ServiceProposal(_Strict):
    """``.implflow/service.toml``: the design phase's proposed service command.

    Written by the agent only when the gate finds no service itself; the design gate shows it
    to the person approving the design, and once approved every later gate uses it.
    """

    command: list[str] = Field(min_length=1, max_length=64)
    """argv (never a shell string) with ``{port}``; ``{python}`` is the task's interpreter."""
    health_path: str = Field(default="/", max_length=200)
    paths: list[str] | None = Field(default=None, min_length=1, max_length=32)

    @field_validator("command")
    @classmethod
    def _argv_with_port(cls, value: list[str]) -> list[str]:
        if not value[0].strip():
            raise ValueError("command[0] must name a program")
        if not any("{port}" in part for part in value):
            raise ValueError("command must contain {port}: the gate picks the port")
        return value

    @field_validator("health_path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/") or any(c in value for c in " \"'\\"):
            raise ValueError(f"{value!r} is not a URL path (start with '/')")
        return value
