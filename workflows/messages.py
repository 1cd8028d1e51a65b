"""Payloads of the workflow's input and handlers, taken defensively.

Handlers declare untyped ``*args`` and decode here, so a message that is missing, doubled, of
another encoding, too large or invalid becomes a one-line reason the workflow records and
drops — never an exception inside a workflow task (which would wedge the task for good).
A payload whose encoding no converter knows is dropped by the SDK itself, with a log line.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from implflow.converter import describe_validation_error
from implflow.models import ImplementationInput

MAX_MESSAGE_BYTES = 64 * 1024
"""A signal or update payload above this size (as JSON) is refused: history stays small."""

M = TypeVar("M", bound=BaseModel)


MAX_INPUT_BYTES = 512 * 1024
"""The workflow input's limit (a custom pipeline carries instructions per phase)."""


def parse_payload(
    model: type[M], args: tuple[Any, ...], max_bytes: int = MAX_MESSAGE_BYTES
) -> tuple[M | None, str | None]:
    """``(message, None)`` for exactly one valid payload, else ``(None, why)``."""
    if len(args) != 1:
        return None, f"expected one {model.__name__} payload, got {len(args)}"
    raw = args[0]
    if isinstance(raw, model):
        return raw, None
    if not isinstance(raw, dict):
        kind = "no value" if raw is None else type(raw).__name__
        return None, f"payload must be a JSON object ({model.__name__}), got {kind}"
    text = json.dumps(raw, default=str)
    if len(text) > max_bytes:
        return None, f"payload of {len(text)} bytes is over the {max_bytes}-byte limit"
    try:  # as JSON, so strict models accept what a JSON client sends (ISO dates and the like)
        return model.model_validate_json(text), None
    except ValidationError as err:
        return None, describe_validation_error(err)


def optional_payload_problem(model: type[BaseModel], args: tuple[Any, ...]) -> str | None:
    """For handlers whose payload is optional: None for nothing or one valid payload."""
    if not args or args == (None,):
        return None
    return parse_payload(model, args)[1]


def placeholder_input() -> ImplementationInput:
    """Stands in for a workflow input that failed to decode, so queries answer until ``run``
    fails the workflow with the reason."""
    return ImplementationInput.model_construct(
        title="(invalid input)", description="", repo="", phases=[]
    )
