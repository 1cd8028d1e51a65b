"""What every check is judged with: the gate's context and the evidence gathered for it.

The runner builds one :class:`GateContext` per gate (paths, placeholders, thresholds,
heartbeat) and, per check, the :class:`Evidence` (the report path and, when the check's
``argv`` ran, the :class:`ToolRun`) that the check's judge receives.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from activities.gates.failures import ModuleOwner
from activities.gates.loadprobe import Heartbeat
from activities.gates.schema import CheckConfig, GateConfig, ServiceConfig
from implflow.models import Thresholds

__all__ = ["Evidence", "GateContext", "Heartbeat", "ToolRun"]


@dataclass(frozen=True)
class GateContext:
    """One gate's surroundings: where it runs and writes, and what it holds checks to."""

    workdir: Path
    report_dir: Path
    tmp: Path
    cache_dir: Path
    thresholds: Thresholds
    base_ref: str | None
    baseline: Mapping[str, Any] | None
    config: GateConfig
    beat: Heartbeat
    python: str = sys.executable
    """``{python}``: the task environment's interpreter (the worker's when none is needed)."""
    env_vars: Mapping[str, str] = field(default_factory=dict)
    """Added to every tool's and the service's environment: the task environment on PATH."""
    environment_error: str | None = None
    """Why the task environment could not be built: every check needing it fails with this."""
    owner: ModuleOwner = field(
        default_factory=lambda: ModuleOwner(frozenset(), frozenset(), from_metadata=False)
    )
    """Tells the repository's own modules from third-party ones (``failures``)."""
    service: ServiceConfig | None = None
    """How the load probe starts the service: the repository's ``[service]`` command, else
    the approved one (``GateInput.service_command``), else the detected one."""
    service_source: str = ""

    def expand(self, text: str, report: Path | None = None) -> str:
        """Replace the placeholders this gate knows; ``{port}`` is left to the probe."""
        values = {
            "{python}": self.python,
            "{worker_python}": sys.executable,
            "{workdir}": str(self.workdir),
            "{report_dir}": str(self.report_dir),
            "{tmp}": str(self.tmp),
            "{cache_dir}": str(self.cache_dir),
        }
        if report is not None:
            values["{report}"] = str(report)
        for key, value in values.items():
            text = text.replace(key, value)
        return text

    def limit(self, check: CheckConfig, name: str) -> Any:
        """A run's explicitly set threshold, else the check's override, else the default.

        ``None`` when neither sets it and ``Thresholds`` has no such field: the judge's own
        default applies.
        """
        if name in self.thresholds.model_fields_set:
            return getattr(self.thresholds, name)
        override = getattr(check.thresholds, name)
        if override is not None:
            return override
        return getattr(self.thresholds, name, None)

    def rel(self, path: Path) -> str:
        """``path`` relative to the work directory (as it is when outside it)."""
        try:
            return str(path.relative_to(self.workdir))
        except ValueError:
            return str(path)

    def check_beat(self, check: CheckConfig) -> Heartbeat:
        """The gate's heartbeat, with the check's name added to every beat."""

        def beat(info: dict[str, object]) -> None:
            self.beat({"check": check.name, **info})

        return beat


@dataclass(frozen=True)
class ToolRun:
    """How a check's ``argv`` ended: exit code, the last lines it printed, its log."""

    returncode: int
    tail: str
    log: str
    """The log file, relative to the work directory."""
    duration_s: float


@dataclass(frozen=True)
class Evidence:
    """What the runner gathered for a judge: the report path and the tool's run, if any."""

    report: Path | None = None
    """The check's report inside the work directory; ``None`` when the check has none."""
    run: ToolRun | None = None
    """How the check's ``argv`` ended; ``None`` when it has none or its kind runs none."""

    def report_file(self) -> Path:
        """The report path, for the formats whose schema requires one."""
        if self.report is None:  # unreachable: the schema requires a report for these
            raise ValueError("this format needs a report path")
        return self.report

    def tool_run(self) -> ToolRun:
        """The tool's run, for the formats whose schema requires ``argv``."""
        if self.run is None:  # unreachable: the schema requires argv for these
            raise ValueError("this format needs argv")
        return self.run
