"""A scripted Anthropic Messages API on 127.0.0.1, for driving the real Claude Code CLI offline.

The server answers ``POST /v1/messages`` (Claude Code adds ``?beta=true``) with the
next scripted ``Turn``, streamed as server-sent events the way the real API does:
``message_start``, per content block ``content_block_start`` / ``content_block_delta``
(``text_delta`` or, for ``tool_use``, ``input_json_delta``) / ``content_block_stop``,
then ``message_delta`` (stop reason and usage) and ``message_stop``.

A turn may instead be an HTTP error (500 ``api_error``, 529 ``overloaded_error``), or
wait before answering (a stalled model). Every request is recorded, so tests can count
turns and look at what the client sent (e.g. the history a resumed session carries).
The HTTP plumbing is ``scripted_server.ScriptedServer`` (standard library only).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tests.fakes.scripted_server import (
    RecordedRequest,
    ScriptedHandler,
    ScriptedServer,
    ScriptedTurn,
    chunks,
)

_ERROR_TYPES = {400: "invalid_request_error", 429: "rate_limit_error", 529: "overloaded_error"}


@dataclass(frozen=True)
class Turn(ScriptedTurn):
    """A Messages API turn: text and/or one ``tool_use`` block (``tool_name``, ``tool_input``).

    A ``status`` other than 200 answers with an Anthropic JSON error body instead.
    """

    tool_input: dict[str, Any] | None = None


def text(message: str, **kw: Any) -> Turn:
    """A final assistant answer (stop reason ``end_turn``)."""
    return Turn(text=message, **kw)


def tool_use(name: str, tool_input: dict[str, Any], **kw: Any) -> Turn:
    """An assistant turn that calls tool ``name`` (stop reason ``tool_use``)."""
    return Turn(tool_name=name, tool_input=tool_input, **kw)


def write_file(file_path: str, content: str, **kw: Any) -> Turn:
    """Claude Code's ``Write`` tool; it insists on an absolute ``file_path``."""
    return tool_use("Write", {"file_path": file_path, "content": content}, **kw)


def api_error(status: int = 500, **kw: Any) -> Turn:
    """An HTTP error answer (500 ``api_error``, 529 ``overloaded_error``, ...)."""
    return Turn(status=status, **kw)


class _Handler(ScriptedHandler):
    def serves(self, path: str) -> bool:
        return path.startswith("/v1/messages") and not path.startswith("/v1/messages/count_tokens")

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        kind = _ERROR_TYPES.get(status, "not_found_error" if status == 404 else "api_error")
        return {"type": "error", "error": {"type": kind, "message": message}}

    def answer(self, turn: Turn, body: dict[str, Any]) -> None:
        model = str(body.get("model") or "claude-fake")
        if body.get("stream"):
            self.send_events(_events(turn, model))
        else:
            self.send_json(200, _message(turn, model))


class FakeAnthropicServer(ScriptedServer[Turn]):
    """Serve a script of turns; use as a context manager or ``start()`` / ``stop()``."""

    handler = _Handler
    thread_name = "fake-anthropic"

    @property
    def base_url(self) -> str:
        return self.root_url

    @property
    def message_requests(self) -> list[RecordedRequest]:
        return self.requests_to("/v1/messages")

    def exhausted(self, served: int) -> Turn:
        return text(f"(script exhausted after {served} turns)")


def _usage(turn: Turn, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": turn.input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def _message(turn: Turn, model: str) -> dict[str, Any]:
    """The whole message; also the answer to a non-streaming call (Claude Code never makes one)."""
    content: list[dict[str, Any]] = []
    if turn.text:
        content.append({"type": "text", "text": turn.text})
    if turn.tool_name:
        content.append(
            {
                "type": "tool_use",
                "id": f"toolu_{uuid.uuid4().hex[:24]}",
                "name": turn.tool_name,
                "input": turn.tool_input or {},
            }
        )
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": "tool_use" if turn.tool_name else "end_turn",
        "stop_sequence": None,
        "usage": _usage(turn, turn.output_tokens),
    }


def _events(turn: Turn, model: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """The message as the streaming API sends it: each block opened empty, then filled."""
    message = _message(turn, model)
    start = {**message, "content": [], "stop_reason": None, "usage": _usage(turn, 1)}
    yield "message_start", {"type": "message_start", "message": start}
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            empty = {**block, "text": ""}
            deltas = [{"type": "text_delta", "text": p} for p in chunks(block["text"], 40)]
        else:  # tool_use: the input arrives as JSON text in pieces
            empty = {**block, "input": {}}
            pieces = chunks(json.dumps(block["input"]), 30)
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in pieces]
        yield "content_block_start", _typed("content_block_start", index, content_block=empty)
        for delta in deltas:
            yield "content_block_delta", _typed("content_block_delta", index, delta=delta)
        yield "content_block_stop", _typed("content_block_stop", index)
    stop = {"stop_reason": message["stop_reason"], "stop_sequence": None}
    usage = {"output_tokens": turn.output_tokens}
    yield "message_delta", {"type": "message_delta", "delta": stop, "usage": usage}
    yield "message_stop", {"type": "message_stop"}


def _typed(kind: str, index: int, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "index": index, **fields}
