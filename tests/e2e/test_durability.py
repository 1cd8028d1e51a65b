"""Crash durability on a real dev server: kill -9 a worker mid-phase, another one finishes.

Two worker processes with separate workspace roots share one task: worker A is
SIGKILLed while ``implement`` runs; worker B picks the task up after the heartbeat
timeout. Every phase round must end in exactly one commit on the task branch, and no
phase that had completed runs again. A canary secret in the workers' environment must
appear nowhere: not in history, not in worker logs, not on the branch.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from implflow.models import PHASES as DEFAULT_PHASES
from implflow.server import dev_server
from tests.helpers import branch_log, git_repo, new_id
from tests.helpers.stack import ROOT, Stack, eventually

pytestmark = pytest.mark.e2e
CANARY = "canary-5e3c7a1f-do-not-leak"
PHASES = list(DEFAULT_PHASES)

# Each phase appends "<phase> <round> <attempt>" to a ledger outside the repo, dumps the
# environment it was given (proving the scrub), and writes one file into the checkout.
# implement waits long enough for the test to kill the worker in the middle of it.
PHASE_SCRIPT = """
import json, os, sys, time
env = os.environ
phase, rnd, attempt = env["IMPLFLOW_PHASE"], env["IMPLFLOW_ROUND"], env["IMPLFLOW_ATTEMPT"]
with open(sys.argv[1], "a") as ledger:
    ledger.write(f"{phase} {rnd} {attempt}\\n")
print(json.dumps(sorted(os.environ)))
if phase == "implement" and attempt == "1":
    open(sys.argv[1] + ".pid", "w").write(str(os.getpid()))
    time.sleep(60)
open(f"{phase}.txt", "w").write(f"{phase} done\\n")
"""


@pytest_asyncio.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    tmp = tmp_path_factory.mktemp("durability")
    async with dev_server(headless=True, log_file=tmp / "server.log") as address:
        yield address


def start_worker(address: str, data_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": address,
        "IMPLFLOW_EXECUTOR": "shell",
        "IMPLFLOW_DATA_DIR": str(data_dir),
        "IMPLFLOW_LOG_FORMAT": "json",
        "IMPLFLOW_SHUTDOWN_GRACE_S": "2",
        # The phase script keeps its ledger outside the checkout, which the sandbox forbids;
        # tests/activities/test_sandbox.py covers kill -9 with the sandbox on.
        "IMPLFLOW_SANDBOX": "off",
        "ANTHROPIC_API_KEY": CANARY,
        "IMPLFLOW_TEST_CANARY": CANARY,
    }
    proc = subprocess.Popen(
        [sys.executable, "worker.py"],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    eventually(lambda: "worker started" in log.read_text(), 30, "worker start")
    return proc


def test_kill_9_mid_phase_and_a_second_worker_finishes(server: str, tmp_path: Path) -> None:
    repo = git_repo(tmp_path / "repo")
    ledger = tmp_path / "ledger.txt"
    script = tmp_path / "phase.py"
    script.write_text(PHASE_SCRIPT)
    wid = new_id("crash")
    task = {
        "title": "Crash test",
        "repo": str(repo),
        "executor": "shell",
        "description": "Survive $(touch pwned) `id`; rm -rf ~ && echo done",  # inert text
        "approval": {"after": []},
        "phases": [
            {"name": p, "heartbeat_s": 3, "retry": {"maximum_attempts": 3, "initial_interval_s": 1}}
            for p in PHASES
        ],
        "commands": {p: [sys.executable, str(script), str(ledger)] for p in PHASES},
    }
    worker_a = start_worker(server, tmp_path / "worker-a", tmp_path / "a.log")
    worker_b: subprocess.Popen[bytes] | None = None
    stack = Stack(server, dict(os.environ), tmp_path)
    try:
        stack.start(wid, task)
        eventually(
            lambda: ledger.exists() and "implement 1 1" in ledger.read_text(),
            60,
            "implement to start",
        )
        worker_a.send_signal(signal.SIGKILL)  # no graceful anything
        worker_a.wait(10)
        worker_b = start_worker(server, tmp_path / "worker-b", tmp_path / "b.log")
        result = stack.temporal(
            "workflow", "result", "--workflow-id", wid, "-o", "json", check=False, timeout=180
        )
        assert result.returncode == 0, result.stdout + result.stderr
        history = stack.temporal("workflow", "show", "--workflow-id", wid, "-o", "json").stdout
        status = stack.temporal(
            "workflow", "query", "--workflow-id", wid, "--type", "status", "-o", "json"
        ).stdout
    finally:
        for proc in (worker_a, worker_b):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
        # The killed worker's executor child is an orphan now (kill -9 runs no cleanup): end it.
        orphan = Path(f"{ledger}.pid")
        if orphan.exists():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(orphan.read_text()), signal.SIGKILL)

    # The killed attempt is named with the server's reason, in status and the round record.
    implement = next(
        p for p in json.loads(status)["queryResult"][0]["phases"] if p["name"] == "implement"
    )
    assert implement["attempt"] == 2
    assert implement["failed_attempts"][0].startswith("attempt 1: no result"), implement
    assert "heartbeat" in implement["failed_attempts"][0].lower(), implement
    runs = [line.split() for line in ledger.read_text().splitlines()]
    # Completed phases ran once; implement ran twice: the killed attempt and its retry on B.
    assert [r[0] for r in runs].count("implement") == 2
    assert all([r[0] for r in runs].count(p) == 1 for p in PHASES if p != "implement")
    # Exactly one commit per phase round on the branch, in order.
    assert branch_log(repo, wid) == [f"implflow: {p} (round 1)" for p in PHASES]
    # Both workers did part of the task, each in its own workspace root.
    assert (tmp_path / "worker-a" / "workspaces").exists()
    assert (tmp_path / "worker-b" / "workspaces").exists()
    b_log = (tmp_path / "b.log").read_text()
    assert '"phase": "verify"' in b_log and '"phase": "review"' not in b_log
    # Task text was data, never shell: nothing was created from it.
    assert not (repo / "pwned").exists() and not (ROOT / "pwned").exists()
    # The canary is nowhere: history, worker logs, or anything on the branch.
    patch = subprocess.run(
        ["git", "log", "-p", f"implflow/{wid}"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "IMPLFLOW_TEST_CANARY" not in patch  # the executor's env was scrubbed
    for where, text in (
        ("history", history),
        ("worker A log", (tmp_path / "a.log").read_text()),
        ("worker B log", b_log),
        ("branch", patch),
    ):
        assert CANARY not in text, f"canary secret leaked into {where}"
