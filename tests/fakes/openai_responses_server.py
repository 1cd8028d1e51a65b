"""A scripted OpenAI Responses API on 127.0.0.1, for driving the real Codex CLI offline.

The server answers ``POST /v1/responses`` with the next scripted ``Turn``, streamed
as server-sent events the way the real API does: ``response.created``,
``response.in_progress``, per output item ``response.output_item.added`` /
deltas (``response.output_text.delta`` for a message,
``response.function_call_arguments.delta`` for a function call) /
``response.output_item.done``, then ``response.completed`` carrying the usage
(input, cached input and output tokens) that Codex reports in ``turn.completed``.

Codex 0.169 offers the model a function tool ``exec_command`` (``{"cmd": ...}``)
for shell work, so ``write_file`` is an ``exec_command`` call whose command writes
the file: the CLI runs it in its own sandbox and sends the output back as a
``function_call_output`` item of its next request.

A turn may instead be an HTTP error (500, 429, ...), wait before answering (a
stalled model), or fail inside the stream (``response.failed``). Every request is
recorded, so tests can count turns and look at what the client sent. The HTTP
plumbing is ``scripted_server.ScriptedServer`` (standard library only).
"""

from __future__ import annotations

import json
import shlex
import time
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
    request_headers,
)

_ERROR_CODES = {400: "invalid_request_error", 401: "invalid_api_key", 429: "rate_limit_exceeded"}


@dataclass(frozen=True)
class Turn(ScriptedTurn):
    """A Responses API turn: a message and/or one function call (``tool_name``, arguments).

    A ``status`` other than 200 answers with an OpenAI JSON error body instead.
    """

    tool_arguments: dict[str, Any] | None = None
    fail_in_stream: str | None = None
    """Stream ``response.failed`` with this message instead of ``response.completed``."""
    cached_input_tokens: int = 0


def text(message: str, **kw: Any) -> Turn:
    """A final assistant message (no tool call: the agent's turn ends)."""
    return Turn(text=message, **kw)


def function_call(name: str, arguments: dict[str, Any], **kw: Any) -> Turn:
    """A response whose output is one call of function tool ``name``."""
    return Turn(tool_name=name, tool_arguments=arguments, **kw)


def exec_command(cmd: str, **kw: Any) -> Turn:
    """Codex's shell tool: run ``cmd`` (a shell command line) in the turn's cwd."""
    return function_call("exec_command", {"cmd": cmd, "tty": False, "login": False}, **kw)


def write_file(path: str, content: str, **kw: Any) -> Turn:
    """Write ``content`` to ``path`` through ``exec_command`` (quoted: the test's own text)."""
    return exec_command(f"printf %s {shlex.quote(content)} > {shlex.quote(path)}", **kw)


def api_error(status: int = 500, **kw: Any) -> Turn:
    """An HTTP error answer (500 ``server_error``, 429 ``rate_limit_exceeded``, ...)."""
    return Turn(status=status, **kw)


class _Handler(ScriptedHandler):
    request_id_header = "x-request-id"

    def serves(self, path: str) -> bool:
        return path.split("?")[0] == "/v1/responses"

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        code = _ERROR_CODES.get(status, "not_found" if status == 404 else "server_error")
        kind = "invalid_request_error" if 400 <= status < 500 else "server_error"
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}

    def answer(self, turn: Turn, body: dict[str, Any]) -> None:
        events = _events(turn, str(body.get("model") or "gpt-fake"))
        self.send_events(
            (event["type"], {**event, "sequence_number": sequence})
            for sequence, event in enumerate(events)
        )

    def do_GET(self) -> None:
        # Codex may ask for /v1/models; it copes with a 404 and uses fallback metadata.
        self.fake.record(RecordedRequest(self.path, {}, request_headers(self)))
        self.send_json(404, self.error_body(404, f"fake server does not serve GET {self.path}"))


class FakeResponsesServer(ScriptedServer[Turn]):
    """Serve a script of turns; use as a context manager or ``start()`` / ``stop()``."""

    handler = _Handler
    thread_name = "fake-openai-responses"

    @property
    def base_url(self) -> str:
        """The provider ``base_url`` for Codex (it appends ``/responses``)."""
        return f"{self.root_url}/v1"

    @property
    def response_requests(self) -> list[RecordedRequest]:
        return self.requests_to("/v1/responses")

    def exhausted(self, served: int) -> Turn:
        return text(f"(script exhausted after {served} turns)")


def _usage(turn: Turn) -> dict[str, Any]:
    return {
        "input_tokens": turn.input_tokens,
        "input_tokens_details": {"cached_tokens": turn.cached_input_tokens},
        "output_tokens": turn.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": turn.input_tokens + turn.output_tokens,
    }


def _output(turn: Turn) -> list[dict[str, Any]]:
    """The finished output items of the response."""
    items: list[dict[str, Any]] = []
    if turn.text:
        items.append(
            {
                "type": "message",
                "id": f"msg_{uuid.uuid4().hex[:24]}",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": turn.text, "annotations": []}],
            }
        )
    if turn.tool_name:
        items.append(
            {
                "type": "function_call",
                "id": f"fc_{uuid.uuid4().hex[:24]}",
                "call_id": f"call_{uuid.uuid4().hex[:24]}",
                "name": turn.tool_name,
                "arguments": json.dumps(turn.tool_arguments or {}),
                "status": "completed",
            }
        )
    return items


def _events(turn: Turn, model: str) -> Iterator[dict[str, Any]]:
    """The response as the streaming API sends it: each item opened empty, then filled."""
    response: dict[str, Any] = {
        "id": f"resp_{uuid.uuid4().hex[:24]}",
        "object": "response",
        "created_at": int(time.time()),
        "status": "in_progress",
        "model": model,
        "output": [],
        "usage": None,
    }
    yield {"type": "response.created", "response": response}
    yield {"type": "response.in_progress", "response": response}
    output = _output(turn)
    for index, item in enumerate(output):
        if item["type"] == "message":
            yield from _message_events(index, item)
        else:
            yield from _function_call_events(index, item)
    if turn.fail_in_stream is not None:
        error = {"code": "server_error", "message": turn.fail_in_stream}
        yield {
            "type": "response.failed",
            "response": {**response, "status": "failed", "error": error},
        }
        return
    done = {**response, "status": "completed", "output": output, "usage": _usage(turn)}
    yield {"type": "response.completed", "response": done}


def _message_events(index: int, item: dict[str, Any]) -> Iterator[dict[str, Any]]:
    text_value = item["content"][0]["text"]
    where = {"item_id": item["id"], "output_index": index, "content_index": 0}
    yield {
        "type": "response.output_item.added",
        "output_index": index,
        "item": {**item, "status": "in_progress", "content": []},
    }
    part = {"type": "output_text", "text": "", "annotations": []}
    yield {"type": "response.content_part.added", **where, "part": part}
    for piece in chunks(text_value, 40):
        yield {"type": "response.output_text.delta", **where, "delta": piece}
    yield {"type": "response.output_text.done", **where, "text": text_value}
    yield {"type": "response.content_part.done", **where, "part": item["content"][0]}
    yield {"type": "response.output_item.done", "output_index": index, "item": item}


def _function_call_events(index: int, item: dict[str, Any]) -> Iterator[dict[str, Any]]:
    where = {"item_id": item["id"], "output_index": index}
    yield {
        "type": "response.output_item.added",
        "output_index": index,
        "item": {**item, "status": "in_progress", "arguments": ""},
    }
    for piece in chunks(item["arguments"], 30):
        yield {"type": "response.function_call_arguments.delta", **where, "delta": piece}
    yield {"type": "response.function_call_arguments.done", **where, "arguments": item["arguments"]}
    yield {"type": "response.output_item.done", "output_index": index, "item": item}
