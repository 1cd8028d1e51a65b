"""Contracts of the load probe: what to start and drive, what was measured, how it compares.

Pure pydantic and arithmetic (no I/O), so a workflow may import these models and
``check_load_thresholds`` through ``imports_passed_through()``.

Every address is ``127.0.0.1``: the spec names a port and paths, never a host, so a
probe cannot be pointed at another machine.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from implflow.settings import DEFAULT_ENV_ALLOWLIST

PROBE_HOST = "127.0.0.1"
"""The only address a probed service binds to and the load tool targets."""

PORT_PLACEHOLDER = "{port}"
"""Replaced by the probe's port in the service argv and in env values."""

# Path and query characters of RFC 3986, minus quotes and backslash: a path is embedded
# in the load tool's Lua script as a string literal, so it must not be able to end one.
_PATH = re.compile(r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*$")


class LoadProbeSpec(BaseModel):
    """What to start, where to check it is up, and how hard and how long to drive it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    command: list[str] = Field(min_length=1)
    """Service argv (never a shell string), run in the clone. ``{port}`` is substituted."""
    env: dict[str, str] = Field(default_factory=dict)
    """Added to the scrubbed environment; ``{port}`` in values is substituted."""
    env_allowlist: list[str] = Field(default_factory=lambda: list(DEFAULT_ENV_ALLOWLIST))
    """Worker variables the service inherits (pass the settings' ``env_allowlist``)."""
    port: int | None = Field(default=None, ge=1024, le=65535)
    """Port the service listens on at 127.0.0.1; ``None`` picks a free one."""
    health_path: str = "/health"
    """GET until it answers 2xx/3xx, within ``health_timeout_s``."""
    paths: list[str] = Field(default_factory=lambda: ["/"], min_length=1, max_length=32)
    """Paths the load is spread over, round robin."""
    duration_s: int = Field(default=10, ge=1, le=120)
    """Measured load time; the probe as a whole is bounded by this plus the waits."""
    warmup_s: int = Field(default=2, ge=0, le=30)
    """Load driven before measuring and then discarded (0: none)."""
    connections: int = Field(default=32, ge=1, le=1024)
    """Concurrent keep-alive connections (the load's concurrency)."""
    threads: int = Field(default=1, ge=1, le=16)
    """Load tool threads; one sustains well over 2x the throughput target (bench/README.md)."""
    request_timeout_s: int = Field(default=2, ge=1, le=30)
    """A response slower than this counts as a timeout error."""
    health_timeout_s: float = Field(default=30.0, gt=0, le=300)
    stop_grace_s: float = Field(default=5.0, ge=0, le=60)
    """Between SIGTERM and SIGKILL of the service's process tree."""
    sample_interval_s: float = Field(default=0.5, ge=0.1, le=5)
    """How often the service tree's RSS and CPU are sampled; CPU % is per interval."""
    windows: int = Field(default=1, ge=1, le=20)
    """The measured load is split into this many windows of ``duration_s / windows`` seconds
    (at least 1 s each, so at most ``duration_s`` windows): the figures are their medians,
    and the spread (max - min) says how much they vary on this machine right now."""
    calibrate: bool = False
    """Also drive a trivial endpoint (``calibration.py``) in the same probe, one short window
    before each service window: what this machine reaches at all, right now."""
    calibration_window_s: int = Field(default=1, ge=1, le=30)

    @property
    def window_count(self) -> int:
        """Windows actually measured: at most one per second of ``duration_s``."""
        return min(self.windows, self.duration_s)

    @property
    def window_s(self) -> int:
        """Seconds per measured window."""
        return max(1, round(self.duration_s / self.window_count))

    @field_validator("command")
    @classmethod
    def _argv_not_blank(cls, value: list[str]) -> list[str]:
        if not value[0].strip():
            raise ValueError("command[0] must name a program")
        return value

    @field_validator("health_path")
    @classmethod
    def _health_path(cls, value: str) -> str:
        return _check_path(value)

    @field_validator("paths")
    @classmethod
    def _paths(cls, value: list[str]) -> list[str]:
        return [_check_path(path) for path in value]

    @model_validator(mode="after")
    def _consistent(self) -> LoadProbeSpec:
        if self.threads > self.connections:
            raise ValueError("threads must not exceed connections")
        if self.port is None and not any(
            PORT_PLACEHOLDER in text for text in [*self.command, *self.env.values()]
        ):
            raise ValueError(
                f"port: give one, or put {PORT_PLACEHOLDER} in command or env so the service "
                "listens where the probe looks"
            )
        return self


def _check_path(value: str) -> str:
    if not _PATH.match(value):
        raise ValueError(f"{value!r} is not a URL path (start with '/', no host, quotes or spaces)")
    return value


class LatencyMs(BaseModel):
    """Response latency percentiles over the measured window, in milliseconds."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    p50: float = Field(ge=0)
    p90: float = Field(ge=0)
    p95: float = Field(ge=0)
    p99: float = Field(ge=0)
    mean: float = Field(ge=0)
    max: float = Field(ge=0)


class WindowFigures(BaseModel):
    """One measured window: what the load tool saw in it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    duration_s: float = Field(ge=0)
    requests: int = Field(ge=0)
    attempts: int = Field(ge=0)
    """Requests plus connect, read and write errors (the error rate's denominator)."""
    errors: int = Field(ge=0)
    requests_per_s: float = Field(ge=0)
    latency_ms: LatencyMs


class CalibrationFigures(BaseModel):
    """The trivial endpoint's figures over the same probe: this machine's ceiling, right now."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    requests_per_s: float = Field(ge=0)
    """Median over the calibration windows."""
    p95_ms: float = Field(ge=0)
    requests_per_s_spread: float = Field(ge=0)
    p95_ms_spread: float = Field(ge=0)
    windows: list[WindowFigures] = Field(default_factory=list)


class LoadProbeResult(BaseModel):
    """What one probe measured. Small: fits in workflow history as it is.

    With several windows, ``requests_per_s`` and the latency percentiles are the windows'
    medians, ``*_spread`` their range (max - min); ``requests`` and the errors are totals.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    tool: str
    tool_version: str
    port: int
    paths: list[str]
    connections: int
    duration_s: float = Field(ge=0)
    """Measured window as the load tool timed it."""
    requests: int = Field(ge=0)
    """Responses received (any status)."""
    errors: int = Field(ge=0)
    """Failed requests: non-2xx/3xx responses plus connect, read, write and timeout errors."""
    error_breakdown: dict[str, int]
    error_rate: float = Field(ge=0, le=1)
    requests_per_s: float = Field(ge=0)
    latency_ms: LatencyMs
    peak_rss_mib: float = Field(ge=0)
    """Largest sum of resident memory over the service's process tree, children included."""
    peak_cpu_percent: float = Field(ge=0)
    """Busiest sampling interval of the whole tree, as % of all ``cpu_count`` cores."""
    mean_cpu_percent: float = Field(ge=0)
    """Tree CPU time over the measured window, as % of all ``cpu_count`` cores."""
    cpu_count: int = Field(ge=1)
    samples: int = Field(ge=0)
    service_pids: list[int]
    """Every process of the service tree the probe saw (all stopped afterwards)."""
    windows: list[WindowFigures] = Field(default_factory=list)
    p95_ms_spread: float = Field(default=0.0, ge=0)
    requests_per_s_spread: float = Field(default=0.0, ge=0)
    calibration: CalibrationFigures | None = None
    """The trivial endpoint's figures, when the probe calibrated."""


class LoadThresholds(BaseModel):
    """Targets of the backend specialist's card; each overridable per run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_p95_ms: float = Field(default=200.0, gt=0)
    min_requests_per_s: float = Field(default=1000.0, ge=0)
    max_rss_mib: float = Field(default=512.0, gt=0)
    max_cpu_percent: float = Field(default=70.0, gt=0, le=100)
    max_error_rate: float = Field(default=0.01, ge=0, le=1)


class FigureCheck(BaseModel):
    """One measured figure next to its threshold."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    figure: Literal["p95_ms", "requests_per_s", "peak_rss_mib", "peak_cpu_percent", "error_rate"]
    measured: float
    threshold: float
    comparison: Literal["<", "<=", ">="]
    passed: bool

    def describe(self) -> str:
        """``p95_ms 312.4 (target < 200): FAIL``: one line for summaries and feedback."""
        verdict = "pass" if self.passed else "FAIL"
        return (
            f"{self.figure} {self.measured:g} (target {self.comparison} {self.threshold:g}): "
            f"{verdict}"
        )


_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">=": operator.ge,
}


def check_load_thresholds(
    result: LoadProbeResult, thresholds: LoadThresholds | None = None
) -> list[FigureCheck]:
    """Pass/fail per figure: p95 latency, throughput, peak RSS, peak CPU and error rate."""
    t = thresholds or LoadThresholds()
    figures: list[tuple[str, float, str, float]] = [
        ("p95_ms", result.latency_ms.p95, "<", t.max_p95_ms),
        ("requests_per_s", result.requests_per_s, ">=", t.min_requests_per_s),
        ("peak_rss_mib", result.peak_rss_mib, "<", t.max_rss_mib),
        ("peak_cpu_percent", result.peak_cpu_percent, "<", t.max_cpu_percent),
        # "At most 1 % errors": a limit of 0 then demands no errors at all.
        ("error_rate", result.error_rate, "<=", t.max_error_rate),
    ]
    return [
        FigureCheck.model_validate(
            {
                "figure": figure,
                "measured": round(measured, 6),
                "threshold": threshold,
                "comparison": comparison,
                "passed": _COMPARE[comparison](measured, threshold),
            }
        )
        for figure, measured, comparison, threshold in figures
    ]
