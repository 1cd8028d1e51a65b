"""The data converter every implflow client and worker uses.

It is temporalio's ``pydantic_data_converter`` with one addition: a payload that
fails model validation raises a *non-retryable* ``ApplicationError`` whose
message is one line naming the field. Without this, a bad ``--input`` given to
``temporal workflow start`` would fail the workflow task and be retried forever.
The same for a payload that cannot be decoded at all (an unknown encoding, broken JSON).
The workflow's own handlers decode their payloads themselves (``workflows/messages.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pydantic
import temporalio.api.common.v1
from temporalio.contrib.pydantic import PydanticPayloadConverter
from temporalio.converter import DataConverter
from temporalio.exceptions import ApplicationError

from implflow.errors import INVALID_INPUT


def describe_validation_error(err: pydantic.ValidationError) -> str:
    """One line, every problem, each prefixed by its field path (``approval.deadline_s``)."""
    parts = []
    for e in err.errors(include_url=False):
        loc = ".".join(str(x) for x in e["loc"]) or "input"
        msg = str(e["msg"]).replace("\n", " ")
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        # A model-level validator already names its field at the start of the message.
        parts.append(msg if loc == "input" and ":" in msg else f"{loc}: {msg}")
    return "invalid input: " + "; ".join(parts)


class ImplflowPayloadConverter(PydanticPayloadConverter):
    """Pydantic JSON payloads; validation failures become non-retryable errors."""

    def from_payloads(
        self,
        payloads: Sequence[temporalio.api.common.v1.Payload],
        type_hints: list[type] | None = None,
    ) -> list[Any]:
        try:
            return super().from_payloads(payloads, type_hints)
        except pydantic.ValidationError as err:
            raise ApplicationError(
                describe_validation_error(err), type=INVALID_INPUT, non_retryable=True
            ) from None
        except (KeyError, ValueError, RuntimeError, TypeError) as err:
            # An unknown encoding or a payload that is not what its encoding says: refused
            # once (a workflow fails, a signal is dropped), never a workflow task retried.
            what = str(err).splitlines()[0][:300] if str(err) else type(err).__name__
            raise ApplicationError(
                f"invalid input: undecodable payload: {what}",
                type=INVALID_INPUT,
                non_retryable=True,
            ) from None


data_converter = DataConverter(payload_converter_class=ImplflowPayloadConverter)
"""Pass this as ``data_converter=`` to every ``Client.connect``."""
