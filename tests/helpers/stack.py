"""A dev server + worker stack for end-to-end tests, and polling."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from implflow.binaries import find_binary

ROOT = Path(__file__).resolve().parents[2]


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
            env={**self.env, "COLUMNS": "250"},  # long lines (paths, commands) unwrapped
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


@contextlib.contextmanager
def running_worker(env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``python worker.py`` with ``env``, logging to ``log_path``: started (its start line
    seen), then stopped with SIGTERM, which must end it with exit status 0."""
    with log_path.open("w") as log:
        worker = subprocess.Popen(
            [sys.executable, "worker.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            eventually(lambda: "worker started" in log_path.read_text(), 30, "worker start")
            yield worker
        finally:
            worker.send_signal(signal.SIGTERM)
            code = worker.wait(timeout=60)
    assert code == 0, log_path.read_text()[-2000:]
