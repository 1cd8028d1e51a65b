"""The gate configuration in force for a checkout: ``.implflow/gates.toml`` over a preset.

Without a file, the project kind is detected (``pyproject.toml`` / ``setup.py`` /
``setup.cfg`` → python, ``package.json`` → node, else ``requirements*.txt`` → python) and
that kind's preset applies. With one,
every phase the file names replaces the preset's checks for that phase; the other phases
keep the preset's, and ``[service]`` keys merge over the preset's guess. The file's schema
is in ``schema.py``; a file it refuses raises :class:`GateConfigError`.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import ValidationError

from activities.gates.presets import detect_kind, preset_for
from activities.gates.schema import GateConfig, GateFile
from implflow.errors import ImplflowError
from implflow.layout import GATES_FILE

__all__ = ["MAX_CONFIG_BYTES", "GateConfigError", "load_gate_config", "parse_gate_file"]

MAX_CONFIG_BYTES = 256 * 1024


class GateConfigError(ImplflowError, ValueError):
    """The gate configuration is invalid. ``str()`` is one line naming the file and key.

    The gate activity raises it on as a non-retryable ``GATE_CONFIG_INVALID``: only a
    person fixing the file helps.
    """


def load_gate_config(workdir: Path) -> GateConfig:
    """The gate configuration in force in ``workdir``: ``.implflow/gates.toml`` over a preset.

    Raises :class:`GateConfigError` (one line naming the key) for an unreadable file,
    invalid TOML, or a value the schema refuses.
    """
    file = _read_file(workdir)
    kind = (file.kind if file and file.kind else None) or detect_kind(workdir)
    preset = preset_for(kind, workdir)
    phases = dict(preset.phases)
    service = preset.service
    service_source = preset.service_source
    source = f"preset:{kind}" if kind != "none" else "none"
    if file is not None:
        source = GATES_FILE if kind == "none" else f"{GATES_FILE} over preset:{kind}"
        phases.update({name: list(spec.checks) for name, spec in file.phases.items()})
        if file.service is not None:
            service = file.service.merged_over(service)
            if "command" in file.service.model_fields_set and file.service.command:
                service_source = GATES_FILE
    if service is None or service.command is None:
        service_source = ""
    return GateConfig(
        source=source, kind=kind, service=service, service_source=service_source, phases=phases
    )


def parse_gate_file(text: str, source: str = GATES_FILE) -> GateFile:
    """Parse and validate the TOML text of a gates file."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise GateConfigError(f"{source}: invalid TOML: {exc}") from None
    try:
        return GateFile.model_validate(data)
    except ValidationError as exc:
        raise GateConfigError(f"{source}: {_first_error(exc)}") from None


def _read_file(workdir: Path) -> GateFile | None:
    path = workdir / GATES_FILE
    if not path.exists():
        return None
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise GateConfigError(f"{GATES_FILE}: larger than {MAX_CONFIG_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GateConfigError(f"{GATES_FILE}: cannot read: {exc}") from None
    return parse_gate_file(text)


def _first_error(exc: ValidationError) -> str:
    """``phases.test.checks[0].format: Input should be 'junit', ...`` — one line."""
    error = exc.errors()[0]
    where = ""
    for part in error["loc"]:
        if isinstance(part, int):
            where += f"[{part}]"
        else:
            where += f".{part}" if where else str(part)
    message = " ".join(str(error["msg"]).split()).removeprefix("Value error, ")
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where or '<top level>'}: {message}{more}"
