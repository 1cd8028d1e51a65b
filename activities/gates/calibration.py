"""The calibration endpoint: the most trivial HTTP service this machine can run.

The load probe starts it beside the service under test (``python calibration.py <port>``,
bound to 127.0.0.1) and drives it with the same load tool, connections and window length,
alternating windows with the service. Its figures say what this machine reaches right now
with nothing behind the socket: a throughput target it cannot reach is the machine's
limit, not the service's (an ``environment`` failure), and its change between the baseline
and a later gate tells a busier machine from a slower service.

Every request gets ``200 ok`` (keep-alive, no parsing beyond the end of the headers), from
one asyncio process — the shape of the usual single-process Python service, minus the app.
Standard library only: it runs with the worker's interpreter, never the target's.
"""

from __future__ import annotations

import asyncio
import signal
import sys

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
_END = b"\r\n\r\n"
_MAX_BUFFER = 64 * 1024


class _Ok(asyncio.Protocol):
    """Answers every complete request head on the connection with ``RESPONSE``."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if isinstance(transport, asyncio.Transport):
            self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        complete = self.buffer.count(_END)
        if complete and self.transport is not None:
            self.buffer = self.buffer[self.buffer.rfind(_END) + len(_END) :]
            self.transport.write(RESPONSE * complete)
        elif len(self.buffer) > _MAX_BUFFER and self.transport is not None:
            self.transport.close()  # not HTTP: nothing to calibrate against


async def serve(port: int) -> None:
    """Serve on 127.0.0.1:``port`` until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Ok, "127.0.0.1", port, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str]) -> int:
    """``calibration.py <port>``."""
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: calibration.py <port>", file=sys.stderr)
        return 2
    asyncio.run(serve(int(argv[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
