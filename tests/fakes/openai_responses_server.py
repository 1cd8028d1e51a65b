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
recorded, so tests can count turns and look at what the client sent. Only the
standard library is used: ``ThreadingHTTPServer`` on a free port.
"""

from __future__ import annotations

import json
import shlex
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_ERROR_CODES = {400: "invalid_request_error", 401: "invalid_api_key", 429: "rate_limit_exceeded"}


@dataclass(frozen=True)
class Turn:
    """One scripted model response (one request of the client)."""

    text: str = ""
    tool_name: str | None = None
    tool_arguments: dict[str, Any] | None = None
    status: int = 200
    """Anything but 200 answers with an OpenAI JSON error body instead of a stream."""
    fail_in_stream: str | None = None
    """Stream ``response.failed`` with this message instead of ``response.completed``."""
    delay_s: float = 0.0
    """Wait this long before answering (the server's ``stop`` cuts the wait short)."""
    input_tokens: int = 40
    cached_input_tokens: int = 0
    output_tokens: int = 12


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


@dataclass
class RecordedRequest:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    """Lower-case names."""


@dataclass
class _Script:
    turns: list[Turn] = field(default_factory=list)
    default: Turn | None = None
    served: int = 0


class FakeResponsesServer:
    """Serve a script of turns; use as a context manager or ``start()`` / ``stop()``."""

    def __init__(self, turns: Sequence[Turn] = (), *, default: Turn | None = None) -> None:
        self._lock = threading.Lock()
        self._script = _Script(list(turns), default)
        self._stopping = threading.Event()
        self.requests: list[RecordedRequest] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> FakeResponsesServer:
        handler = type("_BoundHandler", (_Handler,), {"fake": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="fake-openai-responses", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # release handlers waiting out a scripted delay
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeResponsesServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """The provider ``base_url`` for Codex (it appends ``/responses``)."""
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    # --- script ----------------------------------------------------------------------

    def load(self, turns: Sequence[Turn], *, default: Turn | None = None) -> None:
        """Replace the script; the next request gets ``turns[0]``."""
        with self._lock:
            self._script = _Script(list(turns), default)

    @property
    def response_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path.startswith("/v1/responses")]

    def _next_turn(self, request: RecordedRequest) -> Turn:
        with self._lock:
            self.requests.append(request)
            script = self._script
            index = script.served
            script.served += 1
            if index < len(script.turns):
                return script.turns[index]
            if script.default is not None:
                return script.default
            return text(f"(script exhausted after {len(script.turns)} turns)")


class _Handler(BaseHTTPRequestHandler):
    fake: FakeResponsesServer  # set on the per-server subclass

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: pytest shows the recorded requests when a test needs them."""

    def do_GET(self) -> None:
        # Codex may ask for /v1/models; it copes with a 404 and uses fallback metadata.
        with self.fake._lock:
            self.fake.requests.append(RecordedRequest(self.path, {}, _headers(self)))
        self._json(404, _error_body(404, f"fake server does not serve GET {self.path}"))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {}
        request = RecordedRequest(self.path, body, _headers(self))
        if self.path.split("?")[0] != "/v1/responses":
            with self.fake._lock:
                self.fake.requests.append(request)
            self._json(404, _error_body(404, f"fake server does not serve {self.path}"))
            return
        turn = self.fake._next_turn(request)
        if turn.delay_s and self.fake._stopping.wait(turn.delay_s):
            return  # server stopping: drop the connection unanswered
        if turn.status != 200:
            self._json(turn.status, _error_body(turn.status, "scripted failure"))
            return
        self._stream(_events(turn, str(body.get("model") or "gpt-fake")))

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-request-id", f"req_{uuid.uuid4().hex[:20]}")
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, events: Iterator[dict[str, Any]]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.send_header("x-request-id", f"req_{uuid.uuid4().hex[:20]}")
        self.end_headers()
        try:
            for sequence, event in enumerate(events):
                data = json.dumps({**event, "sequence_number": sequence})
                self.wfile.write(f"event: {event['type']}\ndata: {data}\n\n".encode())
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client was killed mid-stream; that is what some tests do
        self.close_connection = True


def _headers(handler: BaseHTTPRequestHandler) -> dict[str, str]:
    """Request headers with lower-case names (HTTP header names are case-insensitive)."""
    return {name.lower(): value for name, value in handler.headers.items()}


def _error_body(status: int, message: str) -> dict[str, Any]:
    code = _ERROR_CODES.get(status, "not_found" if status == 404 else "server_error")
    kind = "invalid_request_error" if 400 <= status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


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
    for piece in _chunks(text_value, 40):
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
    for piece in _chunks(item["arguments"], 30):
        yield {"type": "response.function_call_arguments.delta", **where, "delta": piece}
    yield {"type": "response.function_call_arguments.done", **where, "arguments": item["arguments"]}
    yield {"type": "response.output_item.done", "output_index": index, "item": item}


def _chunks(value: str, size: int) -> Iterator[str]:
    for i in range(0, len(value), size):
        yield value[i : i + size]
