"""``implflow demo``: embedded server + worker + one real task through all eight phases.

The target is ``examples/todo-service`` (a small HTTP service with SQLite), copied
into a fresh git repository. The work of each phase comes from a recorded cassette
(``examples/cassettes/todo-due-dates``) through the ``replay`` executor, so the demo
runs offline with no API key; the quality gates are real (ruff, mypy, bandit,
pytest with coverage, OpenAPI validation, a wrk load probe). The cassette's first
``test`` round misses the coverage target on purpose: the gate fails, the phase is
repaired with the failure as feedback, and the second round passes. The task stops
once, for approval of the design.

The worker runs in this process, on the same event loop as the demo, so nothing here may
block that loop: the question is read from stdin by a daemon thread, and while it waits the
worker answers queries (the UI's checklist, ``implflow status``) and takes decisions given
anywhere else (``implflow approve`` in another terminal, ``temporal workflow signal``, the
UI's signal dialog). The demo notices such a decision, says who made it and follows the task
to the end. Ctrl-C, SIGTERM and SIGHUP all end the demo's task and stop the worker (which
stops a probed service) and the embedded server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

from rich.console import Console
from rich.table import Table
from rich.text import Text

from implflow.cli import next_step, plain, safe, visible
from implflow.client import FINAL_STATES, ImplflowClient
from implflow.connection import connect
from implflow.errors import ImplflowError
from implflow.layout import DESIGN_DOC, branch_name
from implflow.logs import configure_logging
from implflow.models import (
    ApprovalPolicy,
    Decision,
    ImplementationInput,
    PendingApproval,
    TaskState,
    TaskStatus,
)
from implflow.server import dev_server, ensure_search_attributes, port_open
from implflow.settings import Settings
from implflow.worker import run_worker

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
DEMO_TITLE = "Add due dates to the todo API"
DEMO_DESCRIPTION = (
    "Todos get an optional due_date (ISO 8601 date). GET /todos?overdue=true lists open "
    "todos whose due date has passed. Validate input and return 400 with a clear message "
    "on bad data."
)
GIT = ["git", "-c", "user.name=implflow demo", "-c", "user.email=demo@implflow.invalid"]
DEMO_SHUTDOWN_GRACE_S = 2.0
"""The demo's worker gives running activities this long when the demo is interrupted."""
POLL_S = 0.5

DecisionWord = Literal["approve", "reject", "waive", "abort"]


def make_demo_repo(parent: Path) -> Path:
    """``examples/todo-service`` as a fresh git repository (the task's origin)."""
    source = EXAMPLES / "todo-service"
    if not source.is_dir():
        raise ImplflowError(f"{source} not found: run the demo from a source checkout of implflow")
    repo = parent / "todo-service"
    shutil.copytree(
        source,
        repo,
        ignore=shutil.ignore_patterns(
            "__pycache__", ".coverage", ".implflow", "*.sqlite3", ".pytest_cache"
        ),
    )
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "baseline"]):
        subprocess.run([*GIT, *args], cwd=repo, check=True, capture_output=True)
    return repo


def demo_input(repo: Path) -> ImplementationInput:
    """The demo task: replayed agent work, real gates, one approval (the design)."""
    return ImplementationInput(
        title=DEMO_TITLE,
        description=DEMO_DESCRIPTION,
        repo=str(repo),
        executor="replay",
        cassette=str(EXAMPLES / "cassettes" / "todo-due-dates"),
        gates="on",
        approval=ApprovalPolicy(after=["design"]),
    )


class StdinLines:
    """Lines from stdin, read by a daemon thread so the event loop never waits for a person.

    A thread blocked in ``readline`` cannot be interrupted, but a daemon thread does not keep
    the process alive, and a question that was answered elsewhere simply stops waiting for
    the queue. On a terminal, lines typed while no question was asked are dropped at the next
    question (a late answer to an old question must not decide a new one); from a pipe, every
    line is an answer, in order.
    """

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[tuple[float, str | None]] = asyncio.Queue()
        self._tty = sys.stdin.isatty()
        self._eof = False
        threading.Thread(target=self._read, name="demo-stdin", daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                line = sys.stdin.readline()
            except (OSError, ValueError):
                line = ""
            try:
                self._loop.call_soon_threadsafe(
                    self._queue.put_nowait, (time.monotonic(), line or None)
                )
            except RuntimeError:  # the loop is closed: the demo is over
                return
            if not line:
                return

    async def ask(self, console: Console, question: str) -> str | None:
        """Print ``question`` and return the next line (stripped); None once stdin is closed."""
        if self._eof:
            return None
        if self._tty:
            asked = time.monotonic()
            while not self._queue.empty():
                at, line = self._queue.get_nowait()
                if line is None or at >= asked:
                    self._queue.put_nowait((at, line))
                    break
        console.print(visible(question), end="", highlight=False, markup=False)
        sys.stdout.flush()
        _, line = await self._queue.get()
        if line is None:
            self._eof = True
            return None
        return line.strip()


@contextlib.asynccontextmanager
async def _server(settings: Settings, console: Console) -> AsyncIterator[str]:
    """Reuse a server already on localhost:7233, else run the embedded one for the demo."""
    if port_open("127.0.0.1", settings.server_port):
        console.print(f"using the Temporal server already on localhost:{settings.server_port}")
        yield f"localhost:{settings.server_port}"
        return
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    plain(
        f"starting the embedded Temporal dev server (data in {settings.data_dir}) ...", out=console
    )
    async with dev_server(
        db_file=settings.data_dir / "temporal.db",
        port=settings.server_port,
        ui_port=settings.ui_port,
        log_file=settings.data_dir / "temporal-server.log",
    ) as address:
        yield address


async def _answer_here(
    lines: StdinLines, pending: PendingApproval, console: Console
) -> tuple[DecisionWord, str] | None:
    """Ask in the terminal: (decision, comment or feedback), or None once stdin is closed."""
    phase = pending.phase
    if pending.kind == "gate":
        question = f"{phase} gate: [w]aive with a reason / [r]eject with feedback / [a]bort: "
        choices = {"w": "waive", "r": "reject", "a": "abort"}
    else:
        question = f"approve {phase}? [y]es / [r]eject with feedback / [a]bort [y]: "
        choices = {"y": "approve", "": "approve", "r": "reject", "a": "abort"}
    while True:
        answer = await lines.ask(console, question)
        if answer is None:
            return None
        word = choices.get(answer[:1].lower())
        if word is not None:
            break
    if word == "reject":
        text = await lines.ask(console, "feedback for the agent: ")
        return None if text is None else ("reject", text or "rejected in the demo")
    if word == "waive":
        text = await lines.ask(console, "why is the failed gate acceptable? ")
        return None if text is None else ("waive", text or "waived in the demo")
    if word == "abort":
        return "abort", "aborted in the demo"
    if pending.kind == "question":
        text = await lines.ask(console, "your answers to the review's questions: ")
        return None if text is None else ("approve", text or "approved in the demo")
    return "approve", "approved in the demo"


async def _decided_elsewhere(
    flow: ImplflowClient, wid: str, pending: PendingApproval
) -> Decision | None:
    """Poll until ``pending`` is no longer pending; the decision that ended it, if recorded."""
    while True:
        await asyncio.sleep(POLL_S)
        status = await flow.status(wid)
        now = status.pending_approval
        if now is None or now.since != pending.since or status.state in FINAL_STATES:
            found = [
                d for d in status.decisions if d.phase == pending.phase and d.at >= pending.since
            ]
            return found[-1] if found else None
        if await flow.execution_state(wid) != "running":
            return None


async def _decide(
    flow: ImplflowClient,
    wid: str,
    status: TaskStatus,
    lines: StdinLines | None,
    repo: Path,
    console: Console,
) -> None:
    """Answer the pending decision: here (or automatically), or notice it was given elsewhere."""
    pending = status.pending_approval
    if pending is None:
        return
    phase = pending.phase
    # What the task reports (phases, evidence, commits, approvers, errors) and the paths are
    # escaped or printed without markup, with terminal controls shown visibly.
    console.print(
        f"\n[bold yellow]{safe(phase)} is waiting for you[/bold yellow] ({safe(pending.kind)}; "
        f"commit {safe((pending.commit or '-')[:10])} on branch {safe(branch_name(wid))})"
    )
    if pending.evidence:
        plain(pending.evidence, multiline=True, out=console)
    if phase == "design":
        plain(f"read the design: git -C {repo} show {branch_name(wid)}:{DESIGN_DOC}", out=console)
    if lines is None:  # --auto-approve
        word: DecisionWord = "waive" if pending.kind == "gate" else "approve"
        await flow.decide(wid, phase, word, "demo", comment="auto-approved by the demo")
        plain(f"auto-{word}d {phase}", out=console)
        return
    plain(f"answer here, or from anywhere else: {next_step(wid, pending)}", out=console)
    here = asyncio.create_task(_answer_here(lines, pending, console))
    elsewhere = asyncio.create_task(_decided_elsewhere(flow, wid, pending))
    try:
        await asyncio.wait({here, elsewhere}, return_when=asyncio.FIRST_COMPLETED)
        answer = here.result() if here.done() else None
        if answer is None:
            if not elsewhere.done():
                console.print(
                    "\nstdin is closed: waiting for a decision from elsewhere (Ctrl-C ends)",
                    highlight=False,
                )
            _say_decided_elsewhere(await elsewhere, phase, console)
            return
    finally:
        for task in (here, elsewhere):
            task.cancel()
        await asyncio.gather(here, elsewhere, return_exceptions=True)
    word, text = answer
    try:
        await flow.decide(
            wid,
            phase,
            word,
            "you",
            comment="" if word == "reject" else text,
            feedback=text if word == "reject" else "",
        )
    except ImplflowError as err:  # e.g. decided elsewhere a moment earlier
        plain(f"not recorded: {err}", out=console)
        return
    console.print(
        visible(f"{word}d {phase}")
        + ("; it runs again with your feedback" if word == "reject" else ""),
        markup=False,
        highlight=False,
    )


def _say_decided_elsewhere(decision: Decision | None, phase: str, console: Console) -> None:
    if decision is None:
        plain(f"\n{phase} is no longer waiting; following the task", multiline=True, out=console)
        return
    how = {"signal": "a signal", "update": "the decide update"}.get(decision.via, decision.via)
    console.print(
        "\n"
        + visible(
            f"{phase}: {decision.decision} by {decision.approver} (via {how}), "
            "given elsewhere; following the task"
        ),
        markup=False,
        highlight=False,
    )


async def run_demo(auto_approve: bool, console: Console) -> int:
    """Run the demo; returns the process exit code (0 when the task completed).

    Ctrl-C, SIGTERM and SIGHUP cancel this coroutine; its cleanup ends the task, stops the
    worker and the server, and the exit code is 128 + the signal number.
    """
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    received: list[int] = []

    def on_signal(sig: int) -> None:
        if received:  # a second signal: cleanup is already under way and stays bounded
            return
        received.append(sig)
        if main is not None:
            main.cancel()

    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    for sig in handled:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        return await _run_demo(auto_approve, console)
    except asyncio.CancelledError:
        if not received:
            raise
        if main is not None:
            main.uncancel()
        return 128 + received[0]
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)


async def _run_demo(auto_approve: bool, console: Console) -> int:
    settings = Settings()
    configure_logging("console" if sys.stderr.isatty() else "json", "WARNING")
    work = Path(tempfile.mkdtemp(prefix="implflow-demo-"))
    repo = make_demo_repo(work)
    async with _server(settings, console) as address:
        client = await connect(address)
        await ensure_search_attributes(client, register=True)
        stop = asyncio.Event()
        worker_settings = settings.model_copy(
            update={
                "workspace_root": work / "workspaces",
                "shutdown_grace_s": DEMO_SHUTDOWN_GRACE_S,
            }
        )
        worker = asyncio.create_task(
            run_worker(worker_settings, stop=stop, client=client, handle_signals=False)
        )
        flow = ImplflowClient(client, settings.task_queue)
        wid = f"demo-{uuid.uuid4().hex[:8]}"
        try:
            await flow.start(demo_input(repo), wid)
            ui = (
                f"http://localhost:{settings.ui_port}/namespaces/{client.namespace}/workflows/{wid}"
            )
            console.print(f"started [bold]{safe(wid)}[/bold]: {safe(DEMO_TITLE)}", highlight=False)
            console.print(visible(f"watch it in the Temporal UI: {ui}"), markup=False)
            lines = None if auto_approve else StdinLines()
            final, state = await _follow(flow, wid, lines, repo, console)
        except asyncio.CancelledError:
            await _end_task(flow, wid, console)
            raise
        finally:
            stop.set()
            await worker
    _summary(final, state, repo, console)
    return 0 if state == TaskState.COMPLETED.value else 1


async def _end_task(flow: ImplflowClient, wid: str, console: Console) -> None:
    """Interrupted: terminate the demo's task, so no orphan waits in the persistent server."""
    # The activities the worker is about to cancel would each log a long traceback: the
    # person who interrupted the demo knows why they stop.
    logging.getLogger("temporalio").setLevel(logging.ERROR)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(
            flow.client.get_workflow_handle(wid).terminate(reason="implflow demo interrupted"),
            10,
        )
    with contextlib.suppress(OSError):  # the terminal may be gone (SIGHUP)
        console.print(
            f"\ninterrupted: terminated {wid}; stopping the worker and the server", highlight=False
        )


async def _follow(
    flow: ImplflowClient,
    wid: str,
    lines: StdinLines | None,
    repo: Path,
    console: Console,
) -> tuple[TaskStatus, str]:
    """Print progress until the task ends; returns its last status and how it ended."""
    seen: set[tuple[str, int, bool]] = set()
    asked: set[tuple[str, str]] = set()  # (phase, since) of decisions already answered
    running: str | None = None
    while True:
        status = await flow.status(wid)
        if status.current_phase != running and status.state.value in ("running", "repairing"):
            running = status.current_phase
            plain(f"  … {running} ({status.state.value})", out=console)
        for p in status.phases:
            gate = p.gate
            if gate is not None and (p.name, gate.round, gate.passed) not in seen:
                seen.add((p.name, gate.round, gate.passed))
                mark = "[green]✓[/green]" if gate.passed else "[red]✗[/red]"
                console.print(
                    f"  {mark} {safe(f'{p.name:<10}')} round {gate.round}  gate "
                    f"{'passed' if gate.passed else 'FAILED'}",
                    highlight=False,
                )
                for check in gate.checks:
                    plain(
                        f"      {'PASS' if check.passed else 'FAIL'} {check.name}: "
                        f"{check.summary}"
                        + (f"  [target {check.threshold}]" if check.threshold else ""),
                        out=console,
                    )
                if not gate.passed and p.repairs < 4:
                    console.print(
                        "      → repair round with the failure as feedback", highlight=False
                    )
        if status.state in FINAL_STATES:
            return status, status.state.value
        execution = await flow.execution_state(wid)
        if execution != "running":  # ended without the workflow saying so (terminated)
            return status, execution
        pending = status.pending_approval
        if status.state == TaskState.AWAITING_APPROVAL and pending is not None:
            key = (pending.phase, pending.since.isoformat())
            if key not in asked:
                asked.add(key)
                await _decide(flow, wid, status, lines, repo, console)
        await asyncio.sleep(0.3)


def _summary(status: TaskStatus, state: str, repo: Path, console: Console) -> None:
    # One line per check inside the cells, so measured figures and their targets line up
    # and nothing is cut off: the table wraps to the terminal instead.
    table = Table("phase", "rounds", "repairs", "gate", "measured", "target", title="Summary")
    for p in status.phases:
        checks = p.gate.checks if p.gate else []
        # Cells of data are Text, never markup; one line per check, controls shown visibly.
        measured = Text("\n".join(visible(c.summary) for c in checks))
        targets = Text("\n".join(visible(c.threshold or "-") for c in checks))
        gate = "-" if p.gate is None else ("passed" if p.gate.passed else "failed")
        table.add_row(Text(visible(p.name)), str(p.rounds), str(p.repairs), gate, measured, targets)
    console.print(table)
    for d in status.decisions:
        plain(
            f"decision: {d.phase} {d.decision} by {d.approver} (commit {(d.commit or '-')[:10]})",
            out=console,
        )
    branch = status.branch or branch_name(status.workflow_id)
    log = subprocess.run(
        ["git", "log", "--oneline", "--reverse", f"main..{branch}"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    console.print(
        f"\n[bold]{safe(state)}[/bold] — branch {safe(branch)} of {safe(repo)} "
        "(one commit per phase round, one per gate):",
        highlight=False,
    )
    # Commit subjects are the agents' text: shown as written, never markup.
    plain(log.stdout.rstrip(), multiline=True, out=console)
    if status.error:
        console.print(f"[red]error:[/red] {safe(status.error, multiline=True)}", highlight=False)
