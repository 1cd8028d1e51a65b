"""``implflow demo``: embedded server + worker + one real task through all eight phases.

The target is ``examples/todo-service`` (a small HTTP service with SQLite), copied
into a fresh git repository. The work of each phase comes from a recorded cassette
(``examples/cassettes/todo-due-dates``) through the ``replay`` executor, so the demo
runs offline with no API key; the quality gates are real (ruff, mypy, bandit,
pytest with coverage, OpenAPI validation, a wrk load probe). The cassette's first
``test`` round misses the coverage target on purpose: the gate fails, the phase is
repaired with the failure as feedback, and the second round passes. The task stops
once, for approval of the design (answered in the terminal, or ``--auto-approve``).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

import typer
from rich.console import Console
from rich.table import Table

from implflow.client import FINAL_STATES, ImplflowClient
from implflow.connection import connect
from implflow.errors import ImplflowError
from implflow.logs import configure_logging
from implflow.models import ApprovalPolicy, ImplementationInput, TaskState, TaskStatus
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
    return ImplementationInput(
        title=DEMO_TITLE,
        description=DEMO_DESCRIPTION,
        repo=str(repo),
        executor="replay",
        cassette=str(EXAMPLES / "cassettes" / "todo-due-dates"),
        gates="on",
        approval=ApprovalPolicy(after=["design"]),
    )


@contextlib.asynccontextmanager
async def _server(settings: Settings, console: Console) -> AsyncIterator[str]:
    """Reuse a server already on localhost:7233, else run the embedded one for the demo."""
    if port_open("127.0.0.1", settings.server_port):
        console.print(f"using the Temporal server already on localhost:{settings.server_port}")
        yield f"localhost:{settings.server_port}"
        return
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    console.print(f"starting the embedded Temporal dev server (data in {settings.data_dir}) ...")
    async with dev_server(
        db_file=settings.data_dir / "temporal.db",
        port=settings.server_port,
        ui_port=settings.ui_port,
        log_file=settings.data_dir / "temporal-server.log",
    ) as address:
        yield address


async def _decide(
    flow: ImplflowClient, wid: str, status: TaskStatus, auto: bool, console: Console
) -> None:
    pending = status.pending_approval
    if pending is None:
        return
    phase = pending.phase
    console.print(
        f"\n[bold yellow]{phase} is waiting for you[/bold yellow] ({pending.kind}; "
        f"commit {(pending.commit or '-')[:10]} on branch implflow/{wid})"
    )
    if pending.evidence:
        console.print(pending.evidence, markup=False, highlight=False)
    if auto:
        decision: Literal["waive", "approve"] = "waive" if pending.kind == "gate" else "approve"
        await flow.decide(wid, phase, decision, "demo", comment="auto-approved by the demo")
        console.print(f"auto-{decision}d {phase}")
        return
    answer = typer.prompt("approve? [y]es / [r]eject with feedback", default="y").strip().lower()
    if answer.startswith("r"):
        feedback = typer.prompt("feedback for the agent")
        await flow.decide(wid, phase, "reject", "you", feedback=feedback)
        console.print(f"rejected {phase}; it runs again with your feedback")
    else:
        chosen: Literal["waive", "approve"] = "waive" if pending.kind == "gate" else "approve"
        await flow.decide(wid, phase, chosen, "you", comment="approved in the demo")
        console.print(f"{chosen}d {phase}")


async def run_demo(auto_approve: bool, console: Console) -> int:
    """Run the demo; returns the process exit code (0 when the task completed)."""
    settings = Settings()
    configure_logging("console" if sys.stderr.isatty() else "json", "WARNING")
    work = Path(tempfile.mkdtemp(prefix="implflow-demo-"))
    repo = make_demo_repo(work)
    async with _server(settings, console) as address:
        client = await connect(address)
        await ensure_search_attributes(client, register=True)
        stop = asyncio.Event()
        worker_settings = settings.model_copy(update={"workspace_root": work / "workspaces"})
        worker = asyncio.create_task(
            run_worker(worker_settings, stop=stop, client=client, handle_signals=False)
        )
        try:
            flow = ImplflowClient(client, settings.task_queue)
            wid = await flow.start(demo_input(repo), f"demo-{uuid.uuid4().hex[:8]}")
            ui = (
                f"http://localhost:{settings.ui_port}/namespaces/{client.namespace}/workflows/{wid}"
            )
            console.print(f"started [bold]{wid}[/bold]: {DEMO_TITLE}")
            console.print(f"watch it in the Temporal UI: {ui}")
            final = await _follow(flow, wid, auto_approve, console)
        finally:
            stop.set()
            await worker
    _summary(final, repo, console)
    return 0 if final.state == TaskState.COMPLETED else 1


async def _follow(flow: ImplflowClient, wid: str, auto: bool, console: Console) -> TaskStatus:
    seen: set[tuple[str, int, bool]] = set()
    running: str | None = None
    while True:
        status = await flow.status(wid)
        if status.current_phase != running and status.state.value in ("running", "repairing"):
            running = status.current_phase
            console.print(f"  … {running} ({status.state.value})", highlight=False)
        for p in status.phases:
            gate = p.gate
            if gate is not None and (p.name, gate.round, gate.passed) not in seen:
                seen.add((p.name, gate.round, gate.passed))
                mark = "[green]✓[/green]" if gate.passed else "[red]✗[/red]"
                console.print(
                    f"  {mark} {p.name:<10} round {gate.round}  gate "
                    f"{'passed' if gate.passed else 'FAILED'}"
                )
                for check in gate.checks:
                    console.print(
                        f"      {'PASS' if check.passed else 'FAIL'} {check.name}: "
                        f"{check.summary}"
                        + (f"  [target {check.threshold}]" if check.threshold else ""),
                        markup=False,
                        highlight=False,
                    )
                if not gate.passed and p.repairs < 4:
                    console.print(
                        "      → repair round with the failure as feedback", highlight=False
                    )
        if status.state in FINAL_STATES:
            return status
        if status.state == TaskState.AWAITING_APPROVAL:
            await _decide(flow, wid, status, auto, console)
        await asyncio.sleep(0.3)


def _summary(status: TaskStatus, repo: Path, console: Console) -> None:
    table = Table("phase", "rounds", "repairs", "gate", "measured", "target", title="Summary")
    for p in status.phases:
        checks = p.gate.checks if p.gate else []
        measured = "; ".join(c.summary for c in checks)[:120]
        targets = "; ".join(c.threshold for c in checks if c.threshold)[:80]
        gate = "-" if p.gate is None else ("passed" if p.gate.passed else "failed")
        table.add_row(p.name, str(p.rounds), str(p.repairs), gate, measured, targets)
    console.print(table)
    for d in status.decisions:
        console.print(
            f"decision: {d.phase} {d.decision} by {d.approver} (commit {(d.commit or '-')[:10]})"
        )
    branch = f"implflow/{status.workflow_id}"
    log = subprocess.run(
        ["git", "log", "--oneline", "--reverse", f"main..{branch}"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    console.print(
        f"\n[bold]{status.state.value}[/bold] — branch {branch} of {repo} "
        "(one commit per phase round, one per gate):"
    )
    console.print(log.stdout.rstrip(), highlight=False)
    if status.error:
        console.print(f"[red]error:[/red] {status.error}", highlight=False)
