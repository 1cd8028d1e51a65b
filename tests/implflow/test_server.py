"""The dev server is ready when a client connects, not when its port opens.

The frontend listens before it is healthy ("Frontend is not healthy yet"); a caller handed the
address at that moment failed its first connect (the demo did, once, in CI).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest

from implflow.errors import ImplflowError
from implflow.server import free_port, wait_until_serving


async def _listener_that_is_not_temporal(port: int) -> asyncio.Server:
    """A port that accepts connections and answers nothing a gRPC client can use."""

    async def hang_up(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    return await asyncio.start_server(hang_up, "127.0.0.1", port)


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


async def test_an_open_port_that_does_not_serve_is_not_ready() -> None:
    port = free_port()
    server = await _listener_that_is_not_temporal(port)
    proc = _sleeper()
    started = time.monotonic()
    try:
        with pytest.raises(ImplflowError, match=rf"not ready on 127\.0\.0\.1:{port}: ") as err:
            await wait_until_serving(f"127.0.0.1:{port}", proc, timeout_s=2)
    finally:
        proc.kill()
        proc.wait()
        server.close()
        await server.wait_closed()
    assert time.monotonic() - started >= 2
    assert "port not open" not in str(err.value)  # it got as far as trying a client


async def test_a_server_process_that_exits_is_reported_at_once() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait()
    with pytest.raises(ImplflowError, match="exited with code 3"):
        await wait_until_serving(f"127.0.0.1:{free_port()}", proc, timeout_s=30)
