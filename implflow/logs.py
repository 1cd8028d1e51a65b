"""structlog set-up: JSON when not on a terminal, readable console on one.

Standard-library records (temporalio's own, and the replay-safe
``workflow.logger``/``activity.logger``) are rendered by the same processors via
``ProcessorFormatter``, so every line has the same shape. Temporal's extra
``temporal_workflow`` / ``temporal_activity`` dicts are flattened so the
workflow id, phase and attempt sit on every line as top-level keys.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from structlog.typing import EventDict, Processor

_TEMPORAL_KEYS = {
    "workflow_id": "workflow_id",
    "run_id": "run_id",
    "activity_type": "activity",
    "attempt": "attempt",
    "workflow_type": "workflow_type",
}


def _flatten_temporal(_: Any, __: str, event: EventDict) -> EventDict:
    for extra in ("temporal_workflow", "temporal_activity"):
        details = event.pop(extra, None)
        if isinstance(details, dict):
            for src, dst in _TEMPORAL_KEYS.items():
                if src in details and dst not in event:
                    event[dst] = details[src]
    return event


def configure_logging(fmt: str = "auto", level: str = "INFO") -> None:
    """Idempotent. ``fmt`` is ``auto`` (JSON unless stderr is a TTY), ``json`` or ``console``."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        _flatten_temporal,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *([structlog.processors.format_exc_info] if use_json else []),
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_implflow", False):
            root.removeHandler(old)
    handler._implflow = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())


def get_logger(name: str = "implflow") -> structlog.stdlib.BoundLogger:
    return structlog.stdlib.get_logger(name)
