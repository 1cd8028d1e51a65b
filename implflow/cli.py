"""The ``implflow`` command line: thin commands over ``implflow.client.ImplflowClient``.

Exit codes: 0 ok, 1 runtime error (server unreachable, refused decision, failed task),
2 bad input (one line on stderr naming the field). ``--json`` prints machine output.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from implflow import TASK_QUEUE
from implflow.client import FINAL_STATES, ImplflowClient, parse
from implflow.errors import ImplflowError, InvalidInputError
from implflow.exit import hard_exit
from implflow.models import ImplementationInput, TaskState, TaskStatus

app = typer.Typer(
    name="implflow",
    help="Durable AI-assisted implementation on Temporal: start, approve and watch tasks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
T = TypeVar("T")

# Client factory; tests replace it to inject a client connected to their own server.
ClientFactory = Callable[[], Awaitable[ImplflowClient]]


async def _default_factory() -> ImplflowClient:
    return await ImplflowClient.connect(
        task_queue=os.environ.get("IMPLFLOW_TASK_QUEUE", TASK_QUEUE)
    )


client_factory: ClientFactory = _default_factory

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]
IdArg = Annotated[str, typer.Argument(help="Workflow id of the task.")]


def _run(coro_fn: Callable[[ImplflowClient], Coroutine[Any, Any, T]]) -> T:
    """Connect, run, and turn implflow errors into one-line messages and exit codes."""

    async def go() -> T:
        try:
            flow = await client_factory()
        except RuntimeError as e:
            reason = "connection refused" if "refused" in str(e).lower() else str(e).split(":")[0]
            raise ImplflowError(
                f"cannot reach Temporal ({reason}); start one with `implflow server` "
                "or set TEMPORAL_ADDRESS"
            ) from None
        return await coro_fn(flow)

    try:
        return asyncio.run(go())
    except InvalidInputError as e:
        say_error(e)
        raise typer.Exit(2) from None
    except ImplflowError as e:
        say_error(e)
        raise typer.Exit(1) from None
    except Exception as e:  # RPC errors etc.: one line, not a traceback
        msg = getattr(e, "message", None) or str(e) or type(e).__name__
        say_error(msg)
        raise typer.Exit(1) from None


def say_error(e: object) -> None:
    """One plain line on stderr (no wrapping, no markup), whatever the terminal width."""
    text = " ".join(str(e).split())
    sys.stderr.write(f"error: {text}\n")


def _emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _report(as_json: bool, data: Any, text: str) -> None:
    """``data`` as JSON for scripts, else ``text`` for people."""
    if as_json:
        _emit_json(data)
    else:
        out.print(text)


def _load_input(value: str) -> str:
    if value.startswith("@"):
        path = Path(value[1:])
        if not path.is_file():
            raise InvalidInputError(f"invalid input: --input: file {path} not found")
        return path.read_text(encoding="utf-8")
    return value


def build_input(
    title: str | None,
    description: str | None,
    repo: str | None,
    executor: str | None,
    input_json: str | None,
    skip: list[str],
    approve_after: list[str] | None,
    commands: list[str],
) -> ImplementationInput:
    """Merge ``--input`` JSON with the flags (flags win) and validate once."""
    data: dict[str, Any] = {}
    if input_json:
        try:
            loaded = json.loads(_load_input(input_json))
        except json.JSONDecodeError as e:
            raise InvalidInputError(f"invalid input: --input: not valid JSON ({e.msg})") from None
        if not isinstance(loaded, dict):
            raise InvalidInputError("invalid input: --input: must be a JSON object")
        data.update(loaded)
    for key, val in (
        ("title", title),
        ("description", description),
        ("repo", repo),
        ("executor", executor),
    ):
        if val is not None:
            data[key] = val
    if skip:
        data["skip"] = skip
    if approve_after is not None:
        data.setdefault("approval", {})["after"] = [p for p in approve_after if p]
    for spec in commands:
        phase, sep, argv = spec.partition("=")
        if not sep:
            raise InvalidInputError(
                f"invalid input: --command: expected PHASE=JSON_ARGV, got {spec!r}"
            )
        try:
            data.setdefault("commands", {})[phase] = json.loads(argv)
        except json.JSONDecodeError:
            raise InvalidInputError(
                f"invalid input: --command {phase}: argv must be a JSON list, "
                'e.g. \'["make", "test"]\''
            ) from None
    if (
        "repo" in data
        and data["repo"]
        and "://" not in str(data["repo"])
        and "@" not in str(data["repo"])
    ):
        data["repo"] = str(Path(str(data["repo"])).expanduser().resolve())
    return parse(ImplementationInput, data)


def render_status(status: TaskStatus) -> None:
    out.print(f"[bold]{status.title}[/bold]  ({status.workflow_id})")
    out.print(
        f"state: [bold]{status.state.value}[/bold]  phase: {status.current_phase or '-'}"
        f"  executor: {status.executor or '-'}"
        + ("  [yellow]paused[/yellow]" if status.paused else "")
    )
    table = Table("phase", "status", "rounds", "attempts", "duration", "gate", "outcome")
    for p in status.phases:
        gate = ""
        if p.gate is not None:
            gate = "passed" if p.gate.passed else "failed"
            gate += f" ({p.repairs} repair)" if p.repairs == 1 else ""
            gate += f" ({p.repairs} repairs)" if p.repairs > 1 else ""
        table.add_row(
            p.name,
            p.status.value,
            str(p.rounds),
            str(p.attempts),
            f"{p.duration_s:.1f}s" if p.duration_s else "",
            gate,
            p.outcome[:60],
        )
    out.print(table)
    if status.ledger.cost_usd or status.ledger.tokens:
        led = status.ledger
        out.print(f"spent: ${led.cost_usd:.2f}, {led.tokens} tokens, {led.turns} turns")
    if status.branch:
        out.print(f"branch: {status.branch}")
    if status.pending_approval:
        pa = status.pending_approval
        if pa.evidence:
            out.print(pa.evidence, markup=False, highlight=False)
        out.print(
            f"[yellow]awaiting approval of {pa.phase}[/yellow] since "
            f"{pa.since.isoformat(timespec='seconds')}"
            + (f" (commit {pa.commit[:10]})" if pa.commit else "")
        )
    for d in status.decisions:
        out.print(
            f"decision: {d.phase} {d.decision} by {d.approver} at "
            f"{d.at.isoformat(timespec='seconds')}"
            + (f" — {d.comment or d.feedback}" if (d.comment or d.feedback) else "")
        )
    if status.error:
        out.print(f"[red]error:[/red] {status.error}", highlight=False)


@app.command()
def start(
    title: Annotated[str | None, typer.Option(help="Short task title (shown in the UI).")] = None,
    description: Annotated[str | None, typer.Option(help="What to build.")] = None,
    repo: Annotated[str | None, typer.Option(help="Path or git URL of the target repo.")] = None,
    executor: Annotated[str | None, typer.Option(help="Executor (default: the worker's).")] = None,
    input_json: Annotated[
        str | None, typer.Option("--input", help="Full input as JSON, or @file.json.")
    ] = None,
    skip: Annotated[list[str] | None, typer.Option(help="Phase to skip (repeatable).")] = None,
    approve_after: Annotated[
        list[str] | None,
        typer.Option(
            help="Phase followed by an approval (repeatable; replaces the default design+verify)."
        ),
    ] = None,
    command: Annotated[
        list[str] | None,
        typer.Option(help='shell executor: PHASE=\'["argv", "..."]\' (repeatable).'),
    ] = None,
    workflow_id: Annotated[
        str | None, typer.Option("--id", help="Workflow id (default impl-<random>).")
    ] = None,
    watch_: Annotated[bool, typer.Option("--watch", help="Watch progress after starting.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Start a task. Input is validated here first: bad input exits 2 naming the field."""
    try:
        task = build_input(
            title, description, repo, executor, input_json, skip or [], approve_after, command or []
        )
    except InvalidInputError as e:
        say_error(e)
        raise typer.Exit(2) from None

    async def go(flow: ImplflowClient) -> None:
        wid = await flow.start(task, workflow_id)
        if as_json:
            # One line, so `--json --watch` output is JSON lines.
            sys.stdout.write(json.dumps({"workflow_id": wid, "task_queue": flow.task_queue}) + "\n")
        else:
            out.print(f"started {wid}")
        if watch_:
            await _watch(flow, wid, as_json)

    _run(go)


async def _watch(flow: ImplflowClient, wid: str, as_json: bool) -> TaskStatus | None:
    last: TaskStatus | None = None
    async for status in flow.watch(wid):
        last = status
        if as_json:
            sys.stdout.write(status.model_dump_json() + "\n")
            sys.stdout.flush()
            continue
        done = sum(1 for p in status.phases if p.status.value == "done")
        out.print(
            f"[{done}/{len(status.phases)}] {status.state.value:<18} {status.current_phase or '-'}",
            highlight=False,
        )
    if last and not as_json:
        if last.pending_approval:
            out.print(
                f"waiting for approval of [bold]{last.pending_approval.phase}[/bold]: "
                f"implflow approve {wid} --phase {last.pending_approval.phase}"
            )
        elif last.state in FINAL_STATES:
            render_status(last)
    return last


@app.command()
def watch(workflow_id: IdArg, as_json: JsonOpt = False) -> None:
    """Show live phase progress until the task finishes or waits for a person."""
    _run(lambda flow: _watch(flow, workflow_id, as_json))


@app.command()
def status(workflow_id: IdArg, as_json: JsonOpt = False) -> None:
    """Phases, rounds, attempts, durations, the pending approval and the decision log."""
    st = _run(lambda flow: flow.status(workflow_id))
    if as_json:
        sys.stdout.write(st.model_dump_json(indent=2) + "\n")
    else:
        render_status(st)


Approver = Annotated[str, typer.Option(help="Who decides (default: your user name).")]


@app.command()
def approve(
    workflow_id: IdArg,
    phase: Annotated[str, typer.Option(help="The phase waiting for approval.")],
    approver: Approver = "",
    comment: Annotated[
        str, typer.Option(help="Comment; the answers when the review asked questions.")
    ] = "",
    budget_usd: Annotated[
        float | None, typer.Option(help="At a budget stop: the extra dollars granted.")
    ] = None,
    signal: Annotated[
        bool,
        typer.Option(
            "--signal", help="Send the `approve` signal instead of the validated `decide` update."
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Approve what is pending: an approval point, review answers, or more budget."""
    who = approver or getpass.getuser()

    async def go(flow: ImplflowClient) -> None:
        if signal:
            await flow.approve(workflow_id, phase, who, comment)
            _report(as_json, {"sent": "approve"}, "approve signal sent")
            return
        d = await flow.decide(
            workflow_id, phase, "approve", who, comment=comment, budget_usd=budget_usd
        )
        _report(
            as_json,
            d.model_dump(mode="json"),
            f"approved {phase} as {who} (commit {d.commit or '-'})",
        )

    _run(go)


@app.command()
def reject(
    workflow_id: IdArg,
    phase: Annotated[str, typer.Option(help="The phase waiting for approval.")],
    feedback: Annotated[str, typer.Option(help="What must change (handed to the executor).")],
    approver: Approver = "",
    rewind_to: Annotated[str | None, typer.Option(help="Re-run from this earlier phase.")] = None,
    signal: Annotated[
        bool,
        typer.Option("--signal", help="Send the `reject` signal instead of the `decide` update."),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Reject the pending gate with feedback; the rewound phase and all later ones run again."""
    who = approver or getpass.getuser()

    async def go(flow: ImplflowClient) -> None:
        if signal:
            await flow.reject(workflow_id, phase, who, feedback, rewind_to)
            _report(as_json, {"sent": "reject"}, "reject signal sent")
            return
        d = await flow.decide(
            workflow_id, phase, "reject", who, feedback=feedback, rewind_to=rewind_to
        )
        _report(
            as_json,
            d.model_dump(mode="json"),
            f"rejected {phase}; re-running from {d.rewind_to or phase}",
        )

    _run(go)


@app.command()
def waive(
    workflow_id: IdArg,
    phase: Annotated[str, typer.Option(help="The phase whose gate failed.")],
    reason: Annotated[str, typer.Option(help="Why the failed gate is acceptable (recorded).")],
    approver: Approver = "",
    as_json: JsonOpt = False,
) -> None:
    """Waive a failed quality gate after its repair rounds; the reason is recorded."""
    who = approver or getpass.getuser()

    async def go(flow: ImplflowClient) -> None:
        d = await flow.decide(workflow_id, phase, "waive", who, comment=reason)
        _report(as_json, d.model_dump(mode="json"), f"waived {phase} gate")

    _run(go)


@app.command()
def abort(
    workflow_id: IdArg,
    phase: Annotated[str, typer.Option(help="The phase waiting for a decision.")],
    comment: Annotated[str, typer.Option(help="Why.")] = "",
    approver: Approver = "",
) -> None:
    """Abort the task at its pending decision (failed gate, budget stop, approval)."""
    who = approver or getpass.getuser()
    _run(lambda flow: flow.decide(workflow_id, phase, "abort", who, comment=comment))
    out.print(f"aborted {workflow_id} at {phase}")


@app.command("list")
def list_(
    state: Annotated[
        str | None, typer.Option(help="Filter by ImplState, e.g. awaiting_approval.")
    ] = None,
    query: Annotated[str | None, typer.Option(help="Extra visibility query.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    as_json: JsonOpt = False,
) -> None:
    """List tasks (newest first)."""
    valid = {s.value for s in TaskState}
    if state is not None and state not in valid:
        say_error(f"invalid input: --state: must be one of {sorted(valid)}")
        raise typer.Exit(2)
    rows = _run(lambda flow: flow.list(state, query, limit))
    if as_json:
        _emit_json(rows)
        return
    table = Table("workflow id", "status", "state", "phase", "started")
    for r in rows:
        table.add_row(
            *(str(r[k] or "") for k in ("workflow_id", "status", "state", "phase", "started"))
        )
    out.print(table)


@app.command()
def cancel(workflow_id: IdArg) -> None:
    """Cancel a task: the running phase is stopped and the task ends `cancelled`."""
    _run(lambda flow: flow.cancel(workflow_id))
    out.print(f"cancellation requested for {workflow_id}")


@app.command()
def pause(workflow_id: IdArg) -> None:
    """Pause after the running phase."""
    _run(lambda flow: flow.pause(workflow_id, by=getpass.getuser()))
    out.print(f"pause requested for {workflow_id}")


@app.command()
def resume(workflow_id: IdArg) -> None:
    """Resume a paused task."""
    _run(lambda flow: flow.resume(workflow_id, by=getpass.getuser()))
    out.print(f"resumed {workflow_id}")


@app.command()
def worker() -> None:
    """Run a worker (same as `python worker.py`)."""
    from implflow.worker import main as worker_main

    worker_main()


@app.command()
def server(
    data_dir: Annotated[
        Path | None, typer.Option(help="Where the database file lives (default IMPLFLOW_DATA_DIR).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="gRPC port (default 7233).")] = None,
    ui_port: Annotated[int | None, typer.Option(help="Web UI port (default 8233).")] = None,
    headless: Annotated[bool, typer.Option(help="No Web UI.")] = False,
) -> None:
    """Run the embedded Temporal dev server (persistent, search attributes registered)."""
    from implflow.server import dev_server_argv
    from implflow.settings import Settings

    settings = Settings()
    directory = data_dir or settings.data_dir
    directory.mkdir(parents=True, exist_ok=True)
    try:
        argv = dev_server_argv(
            directory / "temporal.db",
            port=port or settings.server_port,
            ui_port=ui_port or settings.ui_port,
            headless=headless,
        )
    except ImplflowError as e:
        say_error(e)
        raise typer.Exit(1) from None
    sys.stderr.write(
        f"Temporal dev server on 127.0.0.1:{port or settings.server_port}, "
        f"UI http://localhost:{ui_port or settings.ui_port}, data {directory}\n"
    )
    sys.stderr.flush()
    # The server owns this process: Ctrl-C and SIGTERM reach it directly.
    os.execv(argv[0], argv)  # noqa: S606 - argv list from find_binary, no shell


@app.command()
def demo(
    auto_approve: Annotated[
        bool, typer.Option("--auto-approve", help="Approve the design without asking.")
    ] = False,
) -> None:
    """Run it all locally: embedded server, a worker, a demo task through the eight phases."""
    from implflow.demo import run_demo

    try:
        code = asyncio.run(run_demo(auto_approve=auto_approve, console=out))
    except ImplflowError as e:
        say_error(e)
        raise typer.Exit(1) from None
    raise typer.Exit(code)


def main() -> None:
    """Console-script entry point."""
    code = 0
    try:
        app()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    hard_exit(code)


if __name__ == "__main__":
    main()
