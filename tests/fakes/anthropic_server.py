"""A scripted Anthropic Messages API on 127.0.0.1, for driving the real Claude Code CLI offline.

The server answers ``POST /v1/messages`` (Claude Code adds ``?beta=true``) with the
next scripted ``Turn``, streamed as server-sent events the way the real API does:
``message_start``, per content block ``content_block_start`` / ``content_block_delta``
(``text_delta`` or, for ``tool_use``, ``input_json_delta``) / ``content_block_stop``,
then ``message_delta`` (stop reason and usage) and ``message_stop``.

A turn may instead be an HTTP error (500 ``api_error``, 529 ``overloaded_error``), or
wait before answering (a stalled model). Every request is recorded, so tests can count
turns and look at what the client sent (e.g. the history a resumed session carries).
Only the standard library is used: ``ThreadingHTTPServer`` on a free port.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_ERROR_TYPES = {400: "invalid_request_error", 429: "rate_limit_error", 529: "overloaded_error"}


@dataclass(frozen=True)
class Turn:
    """One scripted model response (one request of the client)."""

    text: str = ""
    tool_name: str | None = None
    tool_input: dict[str, Any] | None = None
    status: int = 200
    """Anything but 200 answers with an Anthropic JSON error body instead of a stream."""
    delay_s: float = 0.0
    """Wait this long before answering (the server's ``stop`` cuts the wait short)."""
    input_tokens: int = 40
    output_tokens: int = 12


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


@dataclass
class RecordedRequest:
    path: str
    body: dict[str, Any]


@dataclass
class _Script:
    turns: list[Turn] = field(default_factory=list)
    default: Turn | None = None
    served: int = 0


class FakeAnthropicServer:
    """Serve a script of turns; use as a context manager or ``start()`` / ``stop()``."""

    def __init__(self, turns: Sequence[Turn] = (), *, default: Turn | None = None) -> None:
        self._lock = threading.Lock()
        self._script = _Script(list(turns), default)
        self._stopping = threading.Event()
        self.requests: list[RecordedRequest] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> FakeAnthropicServer:
        handler = type("_BoundHandler", (_Handler,), {"fake": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="fake-anthropic", daemon=True
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

    def __enter__(self) -> FakeAnthropicServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    # --- script ----------------------------------------------------------------------

    def load(self, turns: Sequence[Turn], *, default: Turn | None = None) -> None:
        """Replace the script; the next request gets ``turns[0]``."""
        with self._lock:
            self._script = _Script(list(turns), default)

    @property
    def message_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path.startswith("/v1/messages")]

    def _next_turn(self, path: str, body: dict[str, Any]) -> Turn:
        with self._lock:
            self.requests.append(RecordedRequest(path, body))
            script = self._script
            index = script.served
            script.served += 1
            if index < len(script.turns):
                return script.turns[index]
            if script.default is not None:
                return script.default
            return text(f"(script exhausted after {len(script.turns)} turns)")


class _Handler(BaseHTTPRequestHandler):
    fake: FakeAnthropicServer  # set on the per-server subclass

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: pytest shows the recorded requests when a test needs them."""

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {}
        if not self.path.startswith("/v1/messages") or self.path.startswith(
            "/v1/messages/count_tokens"
        ):
            self.fake.requests.append(RecordedRequest(self.path, body))
            self._json(404, _error_body(404, f"fake server does not serve {self.path}"))
            return
        turn = self.fake._next_turn(self.path, body)
        if turn.delay_s and self.fake._stopping.wait(turn.delay_s):
            return  # server stopping: drop the connection unanswered
        if turn.status != 200:
            self._json(turn.status, _error_body(turn.status, "scripted failure"))
            return
        model = str(body.get("model") or "claude-fake")
        if body.get("stream"):
            self._stream(_events(turn, model))
        else:
            self._json(200, _message(turn, model))

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("request-id", f"req_{uuid.uuid4().hex[:20]}")
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, events: Iterator[tuple[str, dict[str, Any]]]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.send_header("request-id", f"req_{uuid.uuid4().hex[:20]}")
        self.end_headers()
        try:
            for name, data in events:
                self.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client was killed mid-stream; that is what some tests do
        self.close_connection = True


def _error_body(status: int, message: str) -> dict[str, Any]:
    kind = _ERROR_TYPES.get(status, "not_found_error" if status == 404 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


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
            deltas = [{"type": "text_delta", "text": p} for p in _chunks(block["text"], 40)]
        else:  # tool_use: the input arrives as JSON text in pieces
            empty = {**block, "input": {}}
            pieces = _chunks(json.dumps(block["input"]), 30)
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


def _chunks(value: str, size: int) -> Iterator[str]:
    for i in range(0, len(value), size):
        yield value[i : i + size]
