"""What the scripted model servers share: a script of turns served over local HTTP.

``ScriptedServer`` runs a ``ThreadingHTTPServer`` on a free port of 127.0.0.1,
hands each request the next scripted turn (then the default, then a "script
exhausted" answer), records every request, and on ``stop`` releases handlers
waiting out a scripted delay. ``ScriptedHandler`` does the HTTP side common to
both APIs: read the JSON body, answer what the API does not serve with a 404,
wait out the turn's delay, answer a scripted HTTP error, else let the subclass
answer; JSON and server-sent-event writers included. Each API module keeps its
own turns, error bodies and event stream.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Generic, Self, TypeVar


@dataclass(frozen=True)
class ScriptedTurn:
    """One scripted model response (one request of the client); each API adds its fields."""

    text: str = ""
    tool_name: str | None = None
    status: int = 200
    """Anything but 200 answers with the API's JSON error body instead of a stream."""
    delay_s: float = 0.0
    """Wait this long before answering (the server's ``stop`` cuts the wait short)."""
    input_tokens: int = 40
    output_tokens: int = 12


TurnT = TypeVar("TurnT", bound=ScriptedTurn)


@dataclass
class RecordedRequest:
    path: str
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    """Lower-case names."""


@dataclass
class _Script(Generic[TurnT]):
    turns: list[TurnT] = field(default_factory=list)
    default: TurnT | None = None
    served: int = 0


class ScriptedServer(Generic[TurnT]):
    """Serve a script of turns; use as a context manager or ``start()`` / ``stop()``."""

    handler: ClassVar[type[ScriptedHandler]]
    """The API's request handler (a subclass of ``ScriptedHandler``)."""
    thread_name: ClassVar[str] = "fake-model-server"

    def __init__(self, turns: Sequence[TurnT] = (), *, default: TurnT | None = None) -> None:
        self._lock = threading.Lock()
        self._script = _Script(list(turns), default)
        self.stopping = threading.Event()
        self.requests: list[RecordedRequest] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def exhausted(self, served: int) -> TurnT:
        """The answer once the script and its default are used up."""
        raise NotImplementedError

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> Self:
        handler = type("_BoundHandler", (self.handler,), {"fake": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name=self.thread_name, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()  # release handlers waiting out a scripted delay
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def root_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    # --- script ----------------------------------------------------------------------

    def load(self, turns: Sequence[TurnT], *, default: TurnT | None = None) -> None:
        """Replace the script; the next request gets ``turns[0]``."""
        with self._lock:
            self._script = _Script(list(turns), default)

    def requests_to(self, prefix: str) -> list[RecordedRequest]:
        """The recorded requests whose path starts with ``prefix``."""
        with self._lock:
            return [r for r in self.requests if r.path.startswith(prefix)]

    def record(self, request: RecordedRequest) -> None:
        """Record a request that gets no turn (a path the API does not serve)."""
        with self._lock:
            self.requests.append(request)

    def next_turn(self, request: RecordedRequest) -> TurnT:
        """Record ``request`` and hand it the next turn of the script."""
        with self._lock:
            self.requests.append(request)
            script = self._script
            index = script.served
            script.served += 1
            if index < len(script.turns):
                return script.turns[index]
            if script.default is not None:
                return script.default
            return self.exhausted(len(script.turns))


class ScriptedHandler(BaseHTTPRequestHandler):
    """Answers a ``POST`` with the next turn; subclasses say what they serve and how."""

    fake: ScriptedServer[Any]  # set on the per-server subclass
    request_id_header: ClassVar[str] = "request-id"

    def serves(self, path: str) -> bool:
        """Whether ``path`` gets a scripted turn (else a recorded 404)."""
        raise NotImplementedError

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        """The API's JSON error body."""
        raise NotImplementedError

    def answer(self, turn: Any, body: dict[str, Any]) -> None:
        """Answer a turn with status 200 (a stream, or a JSON body)."""
        raise NotImplementedError

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: pytest shows the recorded requests when a test needs them."""

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {}
        request = RecordedRequest(self.path, body, request_headers(self))
        if not self.serves(self.path):
            self.fake.record(request)
            self.send_json(404, self.error_body(404, f"fake server does not serve {self.path}"))
            return
        turn = self.fake.next_turn(request)
        if turn.delay_s and self.fake.stopping.wait(turn.delay_s):
            return  # server stopping: drop the connection unanswered
        if turn.status != 200:
            self.send_json(turn.status, self.error_body(turn.status, "scripted failure"))
            return
        self.answer(turn, body)

    def send_json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header(self.request_id_header, f"req_{uuid.uuid4().hex[:20]}")
        self.end_headers()
        self.wfile.write(data)

    def send_events(self, events: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Server-sent events, each ``(name, data)``; the connection closes after them."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.send_header(self.request_id_header, f"req_{uuid.uuid4().hex[:20]}")
        self.end_headers()
        try:
            for name, data in events:
                self.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client was killed mid-stream; that is what some tests do
        self.close_connection = True


def request_headers(handler: BaseHTTPRequestHandler) -> dict[str, str]:
    """Request headers with lower-case names (HTTP header names are case-insensitive)."""
    return {name.lower(): value for name, value in handler.headers.items()}


def chunks(value: str, size: int) -> Iterator[str]:
    """``value`` in pieces of ``size`` characters, as a stream delivers it."""
    for i in range(0, len(value), size):
        yield value[i : i + size]
