"""``implflow demo``: embedded server + worker + one task through all eight phases.

Uses the ``shell`` executor with ``implflow.demo_agent`` as every phase's
command, on a fresh git repository, so it runs offline with no API key. The
task stops once, for approval of the design (answered in the terminal, or
``--auto-approve``), then finishes and prints a summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from implflow.client import FINAL_STATES, ImplflowClient
from implflow.connection import connect
from implflow.logs import configure_logging
from implflow.models import ApprovalPolicy, ImplementationInput, TaskState, TaskStatus
from implflow.server import dev_server, ensure_search_attributes, port_open
from implflow.settings import Settings
from implflow.worker import run_worker

DEMO_TITLE = "Create a secure authentication API"
DEMO_DESCRIPTION = "Create a secure authentication API with login, logout and token refresh."


def make_demo_repo(parent: Path) -> Path:
    """A small git repository for the demo task to work on."""
    repo = parent / "demo-service"
    repo.mkdir(parents=True)
    (repo / "README.md").write_text("# demo-service\n\nTarget repository of the implflow demo.\n")
    git = ["git", "-c", "user.name=implflow demo", "-c", "user.email=demo@implflow.invalid"]
    for args in (
        ["init", "-q", "-b", "main"],
        ["add", "README.md"],
        ["commit", "-q", "-m", "init"],
    ):
        subprocess.run([*git, *args], cwd=repo, check=True, capture_output=True)
    return repo


def demo_input(repo: Path) -> ImplementationInput:
    agent = [sys.executable, "-m", "implflow.demo_agent"]
    return ImplementationInput(
        title=DEMO_TITLE,
        description=DEMO_DESCRIPTION,
        repo=str(repo),
        executor="shell",
        approval=ApprovalPolicy(after=["design"]),
        commands=dict.fromkeys(
            ("review", "design", "implement", "validate", "optimize", "test", "document", "verify"),
            agent,
        ),
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
    if status.pending_approval is None:
        return
    phase = status.pending_approval.phase
    artifact = Path(".implflow") / f"{phase}.md"
    console.print(
        f"\n[bold yellow]{phase} is waiting for your approval[/bold yellow] "
        f"(commit {status.pending_approval.commit or '-'}, artifact {artifact})"
    )
    if auto:
        await flow.decide(wid, phase, "approve", "demo", comment="auto-approved by the demo")
        console.print(f"auto-approved {phase}")
        return
    answer = typer.prompt("approve? [y]es / [r]eject with feedback", default="y").strip().lower()
    if answer.startswith("r"):
        feedback = typer.prompt("feedback for the agent")
        await flow.decide(wid, phase, "reject", "you", feedback=feedback)
        console.print(f"rejected {phase}; it runs again with your feedback")
    else:
        await flow.decide(wid, phase, "approve", "you", comment="approved in the demo")
        console.print(f"approved {phase}")


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
            console.print(f"started [bold]{wid}[/bold] — watch it in the Temporal UI: {ui}")
            final = await _follow(flow, wid, auto_approve, console)
        finally:
            stop.set()
            await worker
    _summary(final, repo, console)
    return 0 if final.state == TaskState.COMPLETED else 1


async def _follow(flow: ImplflowClient, wid: str, auto: bool, console: Console) -> TaskStatus:
    seen: set[tuple[str, int]] = set()
    while True:
        status = await flow.status(wid)
        for p in status.phases:
            if p.status.value == "done" and (p.name, p.rounds) not in seen:
                seen.add((p.name, p.rounds))
                console.print(
                    f"  [green]✓[/green] {p.name:<10} round {p.rounds}  "
                    f"{p.duration_s:5.2f}s  {p.outcome}",
                    highlight=False,
                )
        if status.state in FINAL_STATES:
            return status
        if status.state == TaskState.AWAITING_APPROVAL:
            await _decide(flow, wid, status, auto, console)
        await asyncio.sleep(0.3)


def _summary(status: TaskStatus, repo: Path, console: Console) -> None:
    table = Table("phase", "status", "rounds", "attempts", "duration", "commit", title="Summary")
    for p in status.phases:
        table.add_row(
            p.name,
            p.status.value,
            str(p.rounds),
            str(p.attempts),
            f"{p.duration_s:.2f}s",
            (p.commit or "")[:10],
        )
    console.print(table)
    for d in status.decisions:
        console.print(
            f"decision: {d.phase} {d.decision} by {d.approver} (commit {(d.commit or '-')[:10]})"
        )
    branch = f"implflow/{status.workflow_id}"
    log = subprocess.run(
        ["git", "log", "--oneline", f"main..{branch}"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    console.print(
        f"\n[bold]{status.state.value}[/bold] — one commit per phase round on branch {branch} "
        f"of {repo}:"
    )
    console.print(log.stdout.rstrip(), highlight=False)
