"""`implflow demo` as a new user runs it: in a terminal (a pseudo-terminal here), and piped.

While the demo asks for the design approval, its in-process worker must keep answering:
queries through the Temporal CLI and the UI's metadata query, and a decision given from
another process, which the demo notices and follows to the end. Ctrl-C, SIGTERM and SIGHUP
must leave nothing behind: no dev server, no worker, no probed service.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import psutil
import pytest
from temporalio.api.sdk.v1 import WorkflowMetadata

from implflow.binaries import find_binary
from implflow.connection import connect
from implflow.models import PHASES
from implflow.server import free_port, port_open

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
PROMPT = r"approve design\? \[y\]es / \[r\]eject with feedback / \[a\]bort \[y\]: "
WID = r"started \S*?(demo-[0-9a-f]{8})"  # rich may wrap the id in a bold escape


class Demo:
    """One `implflow demo` on its own ports and data directory."""

    def __init__(self, tmp_path: Path) -> None:
        self.port, self.ui_port = free_port(), free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "IMPLFLOW_DATA_DIR": str(tmp_path / "data"),
            "IMPLFLOW_SERVER_PORT": str(self.port),
            "IMPLFLOW_UI_PORT": str(self.ui_port),
            "TEMPORAL_ADDRESS": self.address,
            "COLUMNS": "160",
            "NO_COLOR": "1",
        }
        self.log = tmp_path / "demo.log"

    def spawn(self, *args: str, timeout: float = 240) -> pexpect.spawn[str]:
        child = pexpect.spawn(
            sys.executable,
            ["-m", "implflow.cli", "demo", *args],
            env=self.env,
            cwd=str(ROOT),
            encoding="utf-8",
            timeout=timeout,
            dimensions=(50, 160),
        )
        child.logfile_read = self.log.open("w")
        return child

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "implflow.cli", "demo", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=400,
            env=self.env,
            cwd=ROOT,
            check=False,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    d = Demo(tmp_path)
    yield d
    # Whatever a failed test left: nothing of the demo may outlive it.
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(tmp_path / "data") in cmdline and "start-dev" in cmdline:
            proc.kill()


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:
        return ""


def _gone(procs: list[psutil.Process], timeout: float) -> list[str]:
    """Command lines of ``procs`` still alive after ``timeout`` (zombies count as gone)."""
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    return [_cmdline(p) for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def _current_details(address: str, wid: str) -> str:
    """The UI's *current details*, read as the UI reads them: the SDK's metadata query."""

    async def go() -> str:
        client = await connect(address)
        meta = await client.get_workflow_handle(wid).query(
            "__temporal_workflow_metadata", result_type=WorkflowMetadata
        )
        return str(meta.current_details)

    return asyncio.run(go())


def _started_id(child: pexpect.spawn[str]) -> str:
    """Wait for the demo to say which task it started; its workflow id."""
    child.expect(WID)
    assert isinstance(child.match, re.Match)
    return str(child.match.group(1))


def test_prompt_never_blocks_the_worker_and_a_decision_elsewhere_is_followed(
    demo: Demo,
) -> None:
    child = demo.spawn()
    try:
        wid = _started_id(child)
        child.expect(PROMPT)

        # While the prompt waits: the Temporal CLI's query is answered at once ...
        started = time.monotonic()
        query = subprocess.run(
            [
                find_binary("temporal"),
                *("workflow", "query", "--workflow-id", wid, "--type", "status"),
                *("--address", demo.address, "-o", "json"),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert query.returncode == 0, query.stderr
        assert time.monotonic() - started < 5
        status = json.loads(query.stdout)["queryResult"][0]
        assert status["state"] == "awaiting_approval"
        assert status["pending_approval"]["phase"] == "design"

        # ... the UI's checklist is there ...
        details = _current_details(demo.address, wid)
        assert "**design**" in details and "awaiting approval" in details

        # ... and an approval from another terminal, sent as the UI's signal dialog sends it,
        # is taken and noticed.
        signalled = subprocess.run(
            [
                find_binary("temporal"),
                *("workflow", "signal", "--workflow-id", wid, "--name", "approve"),
                *("--input", json.dumps({"phase": "design", "approver": "lead"})),
                *("--address", demo.address),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert signalled.returncode == 0, signalled.stderr
        child.expect(r"design: approve by lead \(via a signal\), given elsewhere")
        child.expect(pexpect.EOF, timeout=300)
    finally:
        child.close(force=True)
    out = demo.output()
    assert child.exitstatus == 0, out[-3000:]
    assert "decision: design approve by lead" in out
    assert "completed" in out
    assert "Query not found" not in out and "Traceback" not in out


@pytest.mark.parametrize(
    ("sig", "when"),
    [
        # At the prompt: the dev server and the worker must go.
        (signal.SIGINT, "prompt"),  # Ctrl-C, typed on the terminal
        (signal.SIGHUP, "prompt"),  # the terminal closed
        # While a gate probes the running service: that service must go too.
        (signal.SIGTERM, "service"),
    ],
)
def test_a_signal_cleans_up_like_ctrl_c(demo: Demo, sig: signal.Signals, when: str) -> None:
    child = demo.spawn(*(["--auto-approve"] if when == "service" else []))
    assert child.pid is not None
    try:
        wid = _started_id(child)
        if when == "prompt":
            child.expect(PROMPT)
        else:
            deadline = time.monotonic() + 180
            while not any(
                "-m todo_service" in _cmdline(p) for p in _descendants(child.pid)
            ):  # the implement gate measures the service (the optimize baseline)
                assert time.monotonic() < deadline, demo.output()[-2000:]
                time.sleep(0.2)
        tree = _descendants(child.pid)
        assert any("start-dev" in _cmdline(p) for p in tree)
        if sig == signal.SIGINT:
            child.sendintr()
        else:
            child.kill(sig)
        child.expect(pexpect.EOF, timeout=60)
    finally:
        child.close(force=True)
    assert child.exitstatus == 128 + sig, demo.output()[-3000:]
    assert _gone(tree, timeout=15) == []
    assert not port_open("127.0.0.1", demo.port)
    out = demo.output()
    assert f"interrupted: terminated {wid}" in out
    assert "Traceback" not in out


def test_demo_runs_real_gates_with_one_repair_round(demo: Demo, tmp_path: Path) -> None:
    proc = demo.run("--auto-approve")
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    for phase in PHASES:
        assert f"implflow: {phase} (round 1)" in out  # one commit per phase round
        assert f"implflow: gate {phase} passed" in out  # every gate ran for real and passed
    # The cassette's first test round misses the coverage target; the repair round fixes it.
    assert "implflow: gate test failed (round 1)" in out
    assert "implflow: test (round 2)" in out
    assert "FAIL coverage" in out and "line_rate_pct >= 80" in out
    assert "PASS load" in out
    assert out.count("decision: design approve") == 1 and "completed" in out
    assert (tmp_path / "data" / "temporal.db").exists()  # persistent embedded server


def test_piped_answers_reject_then_approve(demo: Demo) -> None:
    proc = demo.run(stdin="r\nname the overdue rule\ny\n")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "implflow: design (round 2)" in proc.stdout
    assert "decision: design reject" in proc.stdout and "decision: design approve" in proc.stdout
