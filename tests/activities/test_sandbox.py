"""The sandbox with the real bubblewrap: what a phase or gate command can and cannot reach.

Commands run through the real ``run_phase`` / ``run_gate`` activities (shell executor) in a
worker whose home and data directory are the test's own. What a command found is written
into the checkout, so it comes back on the task branch. The kill -9 tests start
``python worker.py`` against a dev server and look for the executor in the host's
``/proc`` after the worker is gone, in both modes (bwrap, and off: ``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.testing import ActivityEnvironment

from activities.executors.base import ExecutionContext
from activities.executors.codex import CodexExecutor, CodexSettings
from activities.gates.loadprobe import _get
from activities.phases import ImplActivities
from activities.process import (
    LOCK_FILE,
    CheckoutLock,
    run_process,
    scrubbed_env,
    start_process,
    start_ticks,
    stop_group,
)
from activities.sandbox import SandboxPolicy, _tools_under, bwrap_argv, in_scope_network
from implflow.converter import data_converter
from implflow.models import GateInput, PhaseInput
from implflow.server import dev_server
from implflow.settings import Settings
from tests.helpers import alive, branch_file, git_repo, shell_phase
from tests.helpers.stack import ROOT, eventually

CANARY = f"canary-{uuid.uuid4().hex}-must-not-leak"


@pytest.fixture(scope="module", autouse=True)
def _bwrap_works() -> None:
    # The sandbox is the point of these tests: without bubblewrap they fail, never skip.
    SandboxPolicy.resolve("bwrap")


@pytest.fixture
def worker_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The worker's home (with an ssh key planted in it) and a secret in its environment."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text(f"PRIVATE KEY {CANARY}\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("IMPLFLOW_TEST_SECRET", CANARY)
    return home


@pytest.fixture
def acts(tmp_path: Path, worker_home: Path) -> ImplActivities:
    acts = ImplActivities(Settings(data_dir=tmp_path / "data", sandbox="bwrap"))
    assert acts.sandbox.mode == "bwrap"
    return acts


def phase_input(repo: Path, script: str, *args: str, workflow_id: str = "wf-box") -> PhaseInput:
    inp = shell_phase(repo, script, workflow_id=workflow_id)
    return inp.model_copy(update={"command": [sys.executable, "-c", script, *args]})


def branch_text(repo: Path, workflow_id: str = "wf-box") -> str:
    """Everything on the task branch: every commit's patch, logs included."""
    return subprocess.run(
        ["git", "log", "-p", f"implflow/{workflow_id}"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


# Tries each write and read it is given; records what happened in found.json (checkout).
PROBE = """
import json, os, sys
found = {}
for path in json.loads(sys.argv[1]):
    try:
        with open(path, "w") as fh:
            fh.write("escaped")
        found["write " + path] = "written"
    except OSError as err:
        found["write " + path] = type(err).__name__
for path in json.loads(sys.argv[2]):
    try:
        found["read " + path] = open(path, "rb").read().decode("utf-8", "replace")
    except OSError as err:
        found["read " + path] = type(err).__name__
open("inside.txt", "w").write("the checkout is writable")
json.dump(found, open("found.json", "w"), indent=1)
print("probed")
"""


async def test_a_phase_command_cannot_write_outside_the_checkout(
    acts: ImplActivities, repo: Path, tmp_path: Path, worker_home: Path
) -> None:
    name = f"escaped-{uuid.uuid4().hex}"
    targets = [
        worker_home / name,
        ROOT / name,  # the worker's own code (/work/...)
        tmp_path / name,  # the worker's /tmp
        acts.settings.data_dir / name,
        acts.settings.folder("workspaces") / name,
    ]
    try:
        result = await ActivityEnvironment().run(
            acts.run_phase, phase_input(repo, PROBE, json.dumps([str(t) for t in targets]), "[]")
        )
        assert result.outcome == "done" and result.summary == "probed"
        assert [t for t in targets if t.exists()] == []  # nothing appeared outside
    finally:
        for target in targets:
            target.unlink(missing_ok=True)
    assert branch_file(repo, "wf-box", "inside.txt") == "the checkout is writable"
    found = json.loads(branch_file(repo, "wf-box", "found.json"))
    assert set(found) == {f"write {t}" for t in targets}
    # Inside, a path under the private /tmp or a hidden tree may be writable (a tmpfs):
    # what counts is that none of it reached the worker's filesystem, checked above.
    assert found[f"write {ROOT / name}"] == "OSError"  # read-only root: EROFS


async def test_a_phase_command_cannot_read_the_worker_or_other_tasks(
    acts: ImplActivities, repo: Path, worker_home: Path
) -> None:
    other = acts.settings.folder("workspaces") / "wf-other" / "checkout"
    other.mkdir(parents=True)
    (other / "their-secret.txt").write_text(f"other task {CANARY}\n")
    data_file = acts.settings.data_dir / "server.db"
    data_file.write_text(f"history {CANARY}\n")
    reads = [
        str(worker_home / ".ssh" / "id_ed25519"),
        str(other / "their-secret.txt"),
        str(data_file),
        "/proc/1/environ",
        f"/proc/{os.getpid()}/environ",  # the worker's pid as the host numbers it
        "/proc/self/environ",
    ]
    script = PROBE + (
        "found['ppid environ'] = open(f'/proc/{os.getppid()}/environ', 'rb').read().decode()\n"
        "json.dump(found, open('found.json', 'w'), indent=1)\n"
    )
    result = await ActivityEnvironment().run(
        acts.run_phase, phase_input(repo, script, "[]", json.dumps(reads))
    )
    assert result.outcome == "done"
    found = json.loads(branch_file(repo, "wf-box", "found.json"))
    assert found[f"read {reads[0]}"] == "FileNotFoundError"  # home: an empty tmpfs
    assert found[f"read {reads[1]}"] == "FileNotFoundError"  # other workspaces hidden
    assert found[f"read {reads[2]}"] == "FileNotFoundError"  # the data dir hidden
    # /proc is the sandbox's own: pid 1 and the parent are bwrap, with the scrubbed env.
    assert "IMPLFLOW_PHASE=implement" in found["read /proc/self/environ"]
    assert "PATH=" in found["read /proc/1/environ"] and "PATH=" in found["ppid environ"]
    # The whole branch (found.json, the command's log, the records) and the phase log.
    log = (acts.settings.folder("workspaces") / "wf-box" / "checkout" / ".implflow" / "logs").glob(
        "*.log"
    )
    for where, text in [("branch", branch_text(repo))] + [(p.name, p.read_text()) for p in log]:
        assert CANARY not in text, f"the worker's secret reached the {where}"
        assert "IMPLFLOW_TEST_SECRET" not in text


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"outside")

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def outside_server() -> Iterator[int]:
    """An HTTP server on the host's 127.0.0.1, outside every sandbox; yields its port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


CONNECT = """
import socket, sys
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=3).close()
    outcome = "connected"
except OSError as err:
    outcome = f"{type(err).__name__}: {err}"
open(sys.argv[2], "w").write(outcome)
print(outcome)
"""

NET_GATE = """kind = "none"

[[phases.implement.checks]]
name = "net"
argv = ["{{worker_python}}", "-c", {script}, "{port}", "{{report_dir}}/net.txt"]
format = "exit-code"
"""


async def test_network_is_off_in_a_gate_and_on_for_the_agent(
    acts: ImplActivities, repo: Path, outside_server: int
) -> None:
    gates = NET_GATE.format(script=json.dumps(CONNECT), port=outside_server)
    (repo / ".implflow").mkdir()
    (repo / ".implflow" / "gates.toml").write_text(gates)
    subprocess.run(["git", "add", "--force", ".implflow"], cwd=repo, check=True)
    ident = ["-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run(["git", *ident, "commit", "-qm", "gates"], cwd=repo, check=True)

    agent = await ActivityEnvironment().run(
        acts.run_phase, phase_input(repo, CONNECT, str(outside_server), "agent-net.txt")
    )
    assert agent.summary == "connected"  # the agent reaches the host (its model API)
    verdict = await ActivityEnvironment().run(
        acts.run_gate, GateInput(workflow_id="wf-box", repo=str(repo), phase="implement", round=1)
    )
    gate_saw = branch_file(repo, "wf-box", f"{verdict.report_dir}/net.txt")
    assert gate_saw.startswith("ConnectionRefusedError"), gate_saw  # its own loopback only


async def test_a_gates_service_is_reachable_from_its_load_tool_and_health_check(
    tmp_path: Path, worker_home: Path, outside_server: int
) -> None:
    policy = SandboxPolicy.from_settings(Settings(data_dir=tmp_path / "data", sandbox="bwrap"))
    assert policy.private_network
    work = tmp_path / "work"
    work.mkdir()
    env = scrubbed_env(["PATH", "HOME"], {})
    with policy.scope(writable=[work], network=False):
        with (work / "service.log").open("ab") as log:
            service = await start_process(
                [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "18081"],
                cwd=work,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            url = "http://127.0.0.1:18081/"
            for _ in range(100):  # the worker's health check, from inside the namespace
                healthy, _why = await in_scope_network(_get, url, 1.0)
                if healthy:
                    break
                await asyncio.sleep(0.1)
            assert healthy
            assert not (await asyncio.to_thread(_get, url, 1.0))[0]  # the host cannot see it
            # A second program of the scope (the load tool) shares the namespace.
            client = await run_process(
                [
                    sys.executable,
                    "-c",
                    f"import urllib.request as u; print(u.urlopen({url!r}).status)",
                ],
                cwd=work,
                env=env,
                log_path=work / "client.log",
                timeout_s=30,
                heartbeat=lambda _: None,
            )
            assert client.returncode == 0 and client.tail.endswith("200")
            outside = await run_process(
                [sys.executable, "-c", CONNECT, str(outside_server), "out.txt"],
                cwd=work,
                env=env,
                log_path=work / "outside.log",
                timeout_s=30,
                heartbeat=lambda _: None,
            )
            assert "ConnectionRefusedError" in outside.tail
        finally:
            await stop_group(service)


async def test_a_missing_program_is_still_file_not_found_inside_bwrap(
    tmp_path: Path, worker_home: Path
) -> None:
    policy = SandboxPolicy.resolve("bwrap")
    with policy.scope(writable=[tmp_path], network=False), pytest.raises(FileNotFoundError):
        await run_process(
            ["no-such-program-xyz"],
            cwd=tmp_path,
            env=scrubbed_env(["PATH"], {}),
            log_path=tmp_path / "log",
            timeout_s=10,
            heartbeat=lambda _: None,
        )


def test_deeper_mounts_land_on_top_of_the_trees_that_hide_them(tmp_path: Path) -> None:
    home = tmp_path / "home"
    data = home / ".implflow"
    checkout = data / "workspaces" / "t" / "checkout"
    checkout.mkdir(parents=True)
    policy = SandboxPolicy("bwrap", "test", bwrap="bwrap", hidden=(Path("/run"), home, data))
    argv = bwrap_argv(
        policy, ["true"], cwd=checkout, writable=[checkout], readable=[data], unshare_net=True
    )
    kinds = ("--tmpfs", "--bind", "--ro-bind")
    # The worker's own interpreter comes back read-only when it lives under a hidden tree (a
    # checkout under /tmp, a pyenv in the home): where it lives is this machine's business.
    tools = {str(p) for p in _tools_under([Path("/tmp"), Path("/run"), home, data], "")}
    mounts = [
        argv[i : i + 2]
        for i, arg in enumerate(argv)
        if arg in kinds and not (arg == "--ro-bind" and argv[i + 1] in tools)
    ]
    # Parents first: the private /tmp (it already covers the home), then what comes back.
    assert mounts == [
        ["--ro-bind", "/"],
        ["--tmpfs", "/tmp"],
        ["--tmpfs", "/run"],
        ["--ro-bind", str(data)],
        ["--bind", str(checkout)],
    ]
    assert "--unshare-net" in argv and "--new-session" not in argv
    assert argv[argv.index("--chdir") + 1] == str(checkout)
    assert argv[-2:] == ["--", "true"]


async def test_codex_drops_its_own_sandbox_inside_ours(tmp_path: Path, worker_home: Path) -> None:
    executor = CodexExecutor(CodexSettings())
    pin = phase_input(tmp_path, "")
    ctx = ExecutionContext(
        phase_input=pin,
        attempt=1,
        workdir=tmp_path / "checkout",
        context_file=tmp_path / "context" / "implement-r1.json",
        log_dir=tmp_path / "logs",
        env_allowlist=("PATH",),
        heartbeat=lambda _: None,
    )
    ctx.workdir.mkdir()
    outside = (executor.codex_home(ctx) / "config.toml").read_text()
    assert 'sandbox_mode = "workspace-write"' in outside
    with SandboxPolicy.resolve("bwrap").scope(writable=[ctx.workdir], network=True) as scope:
        inside = (executor.codex_home(ctx) / "config.toml").read_text()
        home = ctx.context_file.parent / "codex-home"
        assert home.resolve() in [p.resolve() for p in scope.writable]  # its home stays usable
    assert 'sandbox_mode = "danger-full-access"' in inside
    assert "[sandbox_workspace_write]" not in inside


# --------------------------------------------------------------------------- the lock


def _group(marker: str) -> subprocess.Popen[bytes]:
    """A process group like an executor's orphan: a leader and a child, both marked."""
    code = (
        "import subprocess, sys, time; "
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)', {marker!r}]); "
        "time.sleep(120)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, marker], start_new_session=True)
    eventually(lambda: len(marked(marker)) == 2, 10, "the group to start")
    return proc


def marked(marker: str) -> list[int]:
    """Host pids of live processes with ``marker`` on their command line."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError, ValueError):
            if marker in cmdline.read_text() and alive(int(cmdline.parent.name)):
                found.append(int(cmdline.parent.name))
    return found


async def test_the_next_holder_of_a_checkout_ends_the_groups_left_there(tmp_path: Path) -> None:
    marker = f"orphan-{uuid.uuid4().hex}"
    orphan = _group(marker)
    reused = _group(f"{marker}-reused")
    try:
        # What a worker killed with -9 left: its lock file naming the groups it ran. The
        # second group's recorded start time differs: its pid was reused, it is not ours.
        lock = tmp_path / LOCK_FILE
        lock.write_text(
            json.dumps(
                {
                    "host": socket.gethostname(),
                    "pid": 999999,
                    "groups": [
                        [orphan.pid, start_ticks(orphan.pid)],
                        [reused.pid, (start_ticks(reused.pid) or 0) - 1],
                    ],
                }
            )
        )
        async with CheckoutLock(tmp_path) as held:
            reused_pids = marked(f"{marker}-reused")
            assert len(reused_pids) == 2  # left alone
            assert sorted(marked(marker)) == sorted(reused_pids)  # the orphans are gone
            record = json.loads(lock.read_text())
            assert record["pid"] == os.getpid() and record["groups"] == []
            assert held.path == lock
        assert lock.read_text() == ""  # released: nothing running
    finally:
        for proc in (orphan, reused):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


async def test_the_lock_records_running_groups_and_ends_them_at_release(tmp_path: Path) -> None:
    marker = f"running-{uuid.uuid4().hex}"
    async with CheckoutLock(tmp_path / "task"):
        with (tmp_path / "out.log").open("ab") as log:
            proc = await start_process(
                [sys.executable, "-c", "import time; time.sleep(120)", marker],
                cwd=tmp_path,
                env=scrubbed_env(["PATH"], {}),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        record = json.loads((tmp_path / "task" / LOCK_FILE).read_text())
        assert [group[0] for group in record["groups"]] == [proc.pid]
    await asyncio.wait_for(proc.wait(), 10)  # never left running past the activity
    assert marked(marker) == []


# --------------------------------------------------------------------------- kill -9


@pytest_asyncio.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    tmp = tmp_path_factory.mktemp("sandbox-server")
    async with dev_server(headless=True, log_file=tmp / "server.log") as address:
        yield address


@pytest.mark.e2e
@pytest.mark.parametrize("mode", ["bwrap", "off"])
async def test_kill_9_of_the_worker_leaves_no_executor_behind(
    server: str, tmp_path: Path, mode: str
) -> None:
    repo = git_repo(tmp_path / "repo")
    marker = f"executor-{mode}-{uuid.uuid4().hex}"
    queue = f"tq-{uuid.uuid4().hex}"
    wid = f"kill-{uuid.uuid4().hex[:12]}"
    log = tmp_path / "worker.log"
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": server,
        "IMPLFLOW_TASK_QUEUE": queue,
        "IMPLFLOW_DATA_DIR": str(tmp_path / "data"),
        "IMPLFLOW_SANDBOX": mode,
        "IMPLFLOW_LOG_FORMAT": "json",
    }
    worker = subprocess.Popen(
        [sys.executable, "worker.py"],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=log.open("ab"),
    )
    client = await Client.connect(server, data_converter=data_converter)
    try:
        eventually(lambda: "worker started" in log.read_text(), 30, "the worker to start")
        assert f'"sandbox: {mode}"' in log.read_text()  # the one line saying which
        task = {
            "title": "Kill test",
            "description": "d",
            "repo": str(repo),
            "executor": "shell",
            "approval": {"after": []},
            "phases": [{"name": "review", "heartbeat_s": 5}],
            "commands": {"review": [sys.executable, "-c", "import time; time.sleep(300)", marker]},
        }
        await client.start_workflow("ImplementationWorkflow", task, id=wid, task_queue=queue)
        eventually(lambda: marked(marker), 60, "the executor to start")
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        # SIGKILL reaches the sandbox (or the PDEATHSIG child) at once; allow a moment.
        await asyncio.sleep(0.5)
        eventually(lambda: not marked(marker), 10, f"the executor to die with the worker ({mode})")
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
        for pid in marked(marker):  # only if the assertion above failed
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            await client.get_workflow_handle(wid).terminate("test over")
