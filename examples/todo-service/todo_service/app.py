"""The HTTP layer: routing, JSON in and out, and the command line."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from todo_service.store import TodoStore

HOST = "127.0.0.1"
MAX_BODY = 64 * 1024
_ITEM = re.compile(r"^/todos/(\d+)$")


class TodoServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], store: TodoStore) -> None:
        self.store = store
        super().__init__(address, TodoHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # a client hung up (load tools do at the end of a run): not an error
        super().handle_error(request, client_address)


class TodoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms ACK wait
    server: TodoServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet under load

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/health":
            self._send(200, {"status": "ok"})
        elif url.path == "/todos":
            done = parse_qs(url.query).get("done", [None])[0]
            flag = None if done is None else done == "true"
            self._send(200, [t.to_dict() for t in self.server.store.list(flag)])
        elif match := _ITEM.match(url.path):
            todo = self.server.store.get(int(match.group(1)))
            if todo is None:
                self._send(404, {"error": "not found"})
            else:
                self._send(200, todo.to_dict())
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self) -> None:
        if urlsplit(self.path).path != "/todos":
            self._send(404, {"error": "not found"})
            return
        body = self._json()
        if body is None:
            return
        title = body.get("title")
        if not isinstance(title, str) or not title.strip():
            self._send(400, {"error": "title is required"})
            return
        todo = self.server.store.add(title.strip(), bool(body.get("done", False)))
        self._send(201, todo.to_dict())

    def do_PATCH(self) -> None:
        match = _ITEM.match(urlsplit(self.path).path)
        if not match:
            self._send(404, {"error": "not found"})
            return
        body = self._json()
        if body is None:
            return
        title = body.get("title")
        done = body.get("done")
        todo = self.server.store.update(int(match.group(1)), title, done)
        if todo is None:
            self._send(404, {"error": "not found"})
        else:
            self._send(200, todo.to_dict())

    def do_DELETE(self) -> None:
        match = _ITEM.match(urlsplit(self.path).path)
        if match and self.server.store.delete(int(match.group(1))):
            self._send(204, None)
        else:
            self._send(404, {"error": "not found"})

    def _json(self) -> dict[str, Any] | None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._send(413, {"error": "body too large"})
            return None
        try:
            data = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self._send(400, {"error": "body is not JSON"})
            return None
        if not isinstance(data, dict):
            self._send(400, {"error": "body must be a JSON object"})
            return None
        return data

    def _send(self, status: int, payload: Any) -> None:
        body = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        if payload is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def build_server(port: int, db: str | None = None) -> TodoServer:
    return TodoServer((HOST, port), TodoStore(db))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="todo_service", description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--db", default=os.environ.get("TODO_DB"), help="SQLite file")
    args = parser.parse_args(argv)
    server = build_server(args.port, args.db)
    print(f"todo-service on http://{HOST}:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
