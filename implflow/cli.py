"""The ``implflow`` command line: thin commands over ``implflow.client.ImplflowClient``.

Exit codes (the README has the same table):

- 0: done; for ``start --watch``, ``watch`` and ``status``: the task completed, is running,
  or waits for a person;
- 1: runtime error (server unreachable, no worker, decision refused), or for ``start
  --watch``, ``watch`` and ``status``: the task failed, was cancelled or terminated;
- 2: bad input, one line on stderr naming the field, checked before anything is started.

Every task command takes ``--json``. Imports of temporalio, pydantic and rich happen inside
the commands that need them, so ``implflow --help`` starts at once.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import typer

from implflow import TASK_QUEUE
from implflow.errors import ImplflowError, InvalidInputError
from implflow.exit import hard_exit

if TYPE_CHECKING:
    from rich.console import Console

    from implflow.client import ImplflowClient
    from implflow.models import ImplementationInput, PendingApproval, TaskStatus

if __name__ == "__main__":
    # `python -m implflow.cli`: one module object, so a sub-app's `from implflow import cli`
    # finds this one instead of running the file a second time (a circular import).
    sys.modules.setdefault("implflow.cli", sys.modules[__name__])

app = typer.Typer(
    name="implflow",
    help="Durable AI-assisted implementation on Temporal: start, approve and watch tasks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
T = TypeVar("T")

# Client factory; tests replace it to inject a client connected to their own server.
ClientFactory = Callable[[], Awaitable["ImplflowClient"]]

FAILED_STATES = frozenset({"failed", "cancelled", "terminated", "timed_out"})
"""How a task can end other than completed: ``start --watch``, ``watch`` and ``status`` exit 1."""


async def _default_factory() -> ImplflowClient:
    from implflow.client import ImplflowClient

    return await ImplflowClient.connect(
        task_queue=os.environ.get("IMPLFLOW_TASK_QUEUE", TASK_QUEUE)
    )


client_factory: ClientFactory = _default_factory

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]
IdArg = Annotated[str, typer.Argument(help="Workflow id of the task.")]
Approver = Annotated[str, typer.Option(help="Who decides (default: your user name).")]

_console: Console | None = None


def console() -> Console:
    """The rich console for people (created on first use: rich is imported only then)."""
    global _console
    if _console is None:
        from rich.console import Console

        _console = Console()
    return _console


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
    text = visible(" ".join(str(e).split()))
    sys.stderr.write(f"error: {text}\n")


_SHOWN = {0x0A: "\\n", 0x0D: "\\r"}
_CONTROLS = {
    c: _SHOWN.get(c, f"\\x{c:02x}")
    for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))
    if c != 0x09  # a tab is only white space
}
_CONTROLS_BUT_NEWLINE = {c: shown for c, shown in _CONTROLS.items() if c != 0x0A}


def visible(text: object, *, multiline: bool = False) -> str:
    """Text the CLI did not write, safe for a terminal: control characters shown as ``\\x1b``.

    ESC and the other C0/C1 controls (and a newline, unless ``multiline``) cannot move the
    cursor, clear the screen or retitle the window. Only for people: ``--json`` is exact.
    """
    return str(text).translate(_CONTROLS_BUT_NEWLINE if multiline else _CONTROLS)


def plain(text: object, *, multiline: bool = False, out: Console | None = None) -> None:
    """Print data as it is (ids, titles, program output): never markup, control characters
    shown (``visible``)."""
    (out or console()).print(visible(text, multiline=multiline), markup=False, highlight=False)


def safe(text: object, *, multiline: bool = False) -> str:
    """Text the CLI did not write, for a rich markup string: visible and markup-escaped."""
    from rich.markup import escape

    return escape(visible(text, multiline=multiline))


def cell(text: object) -> Any:
    """A table cell of data: a ``rich.text.Text``, never parsed as markup."""
    from rich.text import Text

    return Text(visible(text))


def _emit_json(data: Any, indent: int | None = 2) -> None:
    sys.stdout.write(json.dumps(data, indent=indent, default=str) + "\n")
    sys.stdout.flush()


def _report(as_json: bool, data: Any, text: str) -> None:
    """``data`` as JSON for scripts, else ``text`` for people."""
    if as_json:
        _emit_json(data)
    else:
        # ``text`` carries ids, phases, approvers: never markup, never terminal controls.
        plain(text, multiline=True)


def _bad_input(message: str) -> typer.Exit:
    say_error(f"invalid input: {message}")
    return typer.Exit(2)


def next_step(workflow_id: str, pending: PendingApproval) -> str:
    """What answers the pending decision, as commands: the one wording CLI and demo share.

    A failed gate is answered only by waive (with a reason), reject or abort: ``approve``
    would pass it without recording why.
    """
    p, wid = shlex.quote(pending.phase), shlex.quote(workflow_id)  # pasted into a shell
    reject = f'`implflow reject {wid} --phase {p} --feedback "..."`'
    abort = f"`implflow abort {wid} --phase {p}`"
    if pending.kind == "gate":
        return (
            f"the {p} gate failed after its repair rounds; answer with "
            f'`implflow waive {wid} --phase {p} --reason "..."` (the reason is recorded), '
            f"{reject} or {abort}"
        )
    if pending.kind == "budget":
        return (
            f"{p} reached its budget; answer with "
            f"`implflow approve {wid} --phase {p} --budget-usd <dollars>` or {abort}"
        )
    if pending.kind == "question":
        return (
            f"the review asks blocking questions; answer them with "
            f'`implflow approve {wid} --phase {p} --comment "<answers>"`, or {reject} or {abort}'
        )
    return f"{p} waits for approval: `implflow approve {wid} --phase {p}` or {reject}"


def _load_input(value: str) -> str:
    if value.startswith("@"):
        path = Path(value[1:])
        if not path.exists():
            raise InvalidInputError(f"invalid input: --input: file {path} not found")
        if path.is_dir():
            raise InvalidInputError(f"invalid input: --input: {path} is a directory, not a file")
        try:  # any readable file: a regular one, /dev/stdin, a pipe
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            reason = "not UTF-8 text" if isinstance(err, UnicodeDecodeError) else err.strerror
            raise InvalidInputError(
                f"invalid input: --input: cannot read {path}: {reason}"
            ) from None
        if not text.strip():
            raise InvalidInputError(f"invalid input: --input: {path} is empty")
        return text
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
    from implflow.client import check_executor, parse
    from implflow.models import ImplementationInput

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
    repo_value = data.get("repo")
    # Only a string is a path to resolve: `"repo": 5` is refused by the model, never `<cwd>/5`;
    # a control character is refused by the model's own check before any path is made of it.
    if (
        isinstance(repo_value, str)
        and repo_value.strip()
        and not any(ord(c) < 32 for c in repo_value)
        and "://" not in repo_value
        and "@" not in repo_value
    ):
        data["repo"] = str(Path(repo_value.strip()).expanduser().resolve())
    task = parse(ImplementationInput, data)
    check_executor(task)
    return task


def _done_count(status: TaskStatus) -> tuple[int, int]:
    """(done, total) phases; a phase whose gate still runs or is being repaired is not done.

    Counting only finished phases keeps the counter from going backwards during repairs.
    """
    from implflow.models import PhaseStatusValue, TaskState

    active = status.state in (TaskState.RUNNING, TaskState.REPAIRING)
    phases = [p for p in status.phases if p.status != PhaseStatusValue.SKIPPED]
    done = sum(
        1
        for p in phases
        if p.status == PhaseStatusValue.DONE and not (active and p.name == status.current_phase)
    )
    return done, len(phases)


def _state_of(status: TaskStatus, execution: str) -> str:
    """Temporal's word once the execution ended, else the workflow's own state."""
    return execution if execution != "running" else status.state.value


def _documents(status: TaskStatus, repo: str | None, branch: str) -> list[str]:
    """The review and design documents on the task branch, for reading before approving.

    For a repository on this machine, the ones the branch really has (a phase may have
    written none); else what the workflow reports.
    """
    from implflow.layout import ARTIFACT_FILES

    reported = list(getattr(status, "documents", None) or [])
    if not repo or not Path(repo).is_dir():
        return reported
    import subprocess

    return [
        doc
        for doc in reported or ARTIFACT_FILES
        if subprocess.run(
            ["git", "cat-file", "-e", f"refs/heads/{branch}:{doc}"],
            cwd=repo,
            capture_output=True,
            timeout=30,
            check=False,
        ).returncode
        == 0
    ]


def render_status(status: TaskStatus, execution: str = "running", repo: str | None = None) -> None:
    """The whole status for a person: phases, gates, spend, where the work is, what waits."""
    from rich.table import Table

    from implflow.models import PhaseStatusValue

    out = console()
    state = _state_of(status, execution)
    ended_early = execution != "running" and state != status.state.value
    # Everything from the task (titles, outcomes, errors, approvers, comments, ids) is
    # escaped or printed without markup: `[/]` in a title is shown, not parsed.
    out.print(f"[bold]{safe(status.title)}[/bold]  ({safe(status.workflow_id)})", highlight=False)
    out.print(
        f"state: [bold]{safe(state)}[/bold]"
        + (f" (last reported: {safe(status.state.value)})" if ended_early else "")
        + f"  phase: {safe(status.current_phase or '-')}"
        + f"  executor: {safe(status.executor or '-')}"
        + ("  [yellow]paused[/yellow]" if status.paused else ""),
        highlight=False,
    )
    repo = getattr(status, "repo", None) or repo
    from implflow.layout import branch_name

    branch = status.branch or branch_name(status.workflow_id)
    plain(f"repo: {repo or '-'}  branch: {branch}", out=out)
    for doc in _documents(status, repo, branch):
        where = f"git -C {repo} show {branch}:{doc}" if repo else f"{branch}:{doc}"
        plain(f"document: {doc}  (read it: {where})", out=out)
    table = Table("phase", "status", "rounds", "attempts", "duration", "gate", "outcome")
    for p in status.phases:
        gate = ""
        if p.gate is not None:
            gate = "passed" if p.gate.passed else "failed"
            gate += f" ({p.repairs} repair)" if p.repairs == 1 else ""
            gate += f" ({p.repairs} repairs)" if p.repairs > 1 else ""
        table.add_row(
            cell(p.name),
            cell(p.status.value),
            str(p.rounds),
            f"{p.attempts} (now {p.attempt})"
            if p.status == PhaseStatusValue.RUNNING and p.attempt > 1
            else str(p.attempts),
            f"{p.duration_s:.1f}s" if p.duration_s else "",
            gate,
            cell(p.outcome[:60]),
        )
    out.print(table)
    for p in status.phases:  # what the retried attempts of a round ran into
        for line in p.failed_attempts:
            plain(f"retried: {p.name} {line}", out=out)
    if status.ledger.cost_usd or status.ledger.tokens:
        led = status.ledger
        out.print(f"spent: ${led.cost_usd:.2f}, {led.tokens} tokens, {led.turns} turns")
    if status.pending_approval and not ended_early:
        pa = status.pending_approval
        if pa.evidence:
            plain(pa.evidence, multiline=True, out=out)
        out.print(
            f"[yellow]awaiting a decision on {safe(pa.phase)}[/yellow] ({safe(pa.kind)}) since "
            f"{pa.since.isoformat(timespec='seconds')}"
            + (f" (commit {safe(pa.commit[:10])})" if pa.commit else ""),
            highlight=False,
        )
        plain(next_step(status.workflow_id, pa), out=out)
    for d in status.decisions:
        plain(
            f"decision: {d.phase} {d.decision} by {d.approver} at "
            f"{d.at.isoformat(timespec='seconds')}"
            + (f" — {d.comment or d.feedback}" if (d.comment or d.feedback) else ""),
            out=out,
        )
    if status.error:
        out.print(f"[red]error:[/red] {safe(status.error, multiline=True)}", highlight=False)


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
    worker_check: Annotated[
        bool,
        typer.Option(
            "--worker-check/--no-worker-check",
            help="Refuse to start when no worker polls the task queue.",
        ),
    ] = True,
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

    async def go(flow: ImplflowClient) -> int:
        if worker_check:
            await flow.require_worker()
        wid = await flow.start(task, workflow_id)
        if as_json:
            # One line, so `--json --watch` output is JSON lines.
            _emit_json({"workflow_id": wid, "task_queue": flow.task_queue}, indent=None)
        else:
            plain(f"started {wid}")
        if watch_:
            return await _watch(flow, wid, as_json)
        return 0

    raise typer.Exit(_run(go))


async def _watch(flow: ImplflowClient, wid: str, as_json: bool) -> int:
    """Follow the task until it ends or waits for a person; returns the exit code."""
    from implflow.client import FINAL_STATES

    last: TaskStatus | None = None
    async for status in flow.watch(wid):
        last = status
        if as_json:
            _emit_json(status.model_dump(mode="json"), indent=None)
            continue
        done, total = _done_count(status)
        plain(f"[{done}/{total}] {status.state.value:<18} {status.current_phase or '-'}")
    if last is None:  # pragma: no cover - watch always yields the first status
        return 1
    execution = "running" if last.state in FINAL_STATES else await flow.execution_state(wid)
    state = _state_of(last, execution)
    if not as_json:
        if execution != "running" and last.state not in FINAL_STATES:
            plain(f"{wid} ended: {state}")
        elif last.pending_approval:
            step = next_step(wid, last.pending_approval)
            plain(step)
        elif last.state in FINAL_STATES:
            render_status(last)
    return 1 if state in FAILED_STATES else 0


@app.command()
def watch(workflow_id: IdArg, as_json: JsonOpt = False) -> None:
    """Show live phase progress until the task ends or waits for a person (exit 1 if it failed)."""
    raise typer.Exit(_run(lambda flow: _watch(flow, workflow_id, as_json)))


@app.command()
def status(workflow_id: IdArg, as_json: JsonOpt = False) -> None:
    """Phases, gates, repo and branch, the pending decision, decisions (exit 1 if it failed)."""

    async def go(flow: ImplflowClient) -> tuple[TaskStatus, str, str]:
        st, execution, task = await asyncio.gather(
            flow.status(workflow_id),
            flow.execution_state(workflow_id),
            flow.task_input(workflow_id),
        )
        return st, execution, task.repo

    st, execution, repo = _run(go)
    state = _state_of(st, execution)
    if as_json:
        data = st.model_dump(mode="json")
        data.setdefault("repo", repo)
        from implflow.layout import branch_name

        data["documents"] = _documents(st, repo, st.branch or branch_name(workflow_id))
        data["execution_state"] = execution
        _emit_json(data)
    else:
        render_status(st, execution, repo)
    raise typer.Exit(1 if state in FAILED_STATES else 0)


DecisionPhase = Annotated[str, typer.Option(help="The phase waiting for a decision.")]
SignalOpt = Annotated[
    bool,
    typer.Option(
        "--signal",
        help="Send the signal of the command's name instead of the validated `decide` update.",
    ),
]


def _answer(
    workflow_id: str,
    phase: str,
    kind: Literal["approve", "reject", "waive", "abort"],
    approver: str,
    as_json: bool,
    signal: bool = False,
    **fields: Any,
) -> None:
    """Answer the pending decision: the ``decide`` update (told if refused), or a signal."""
    who = approver or _user()

    async def go(flow: ImplflowClient) -> None:
        if kind == "approve":
            pending = (await flow.status(workflow_id)).pending_approval
            if pending is not None and pending.kind == "gate" and pending.phase == phase:
                raise ImplflowError(
                    f"approve does not answer a failed gate: {next_step(workflow_id, pending)}"
                )
        if signal and kind == "approve":
            await flow.approve(workflow_id, phase, who, fields["comment"])
        elif signal:
            await flow.reject(workflow_id, phase, who, fields["feedback"], fields["rewind_to"])
        if signal:
            return _report(as_json, {"sent": kind}, f"{kind} signal sent")
        d = await flow.decide(workflow_id, phase, kind, who, **fields)
        said = {
            "approve": f"approved {phase} as {who} (commit {d.commit or '-'})",
            "reject": f"rejected {phase}; re-running from {d.rewind_to or phase}",
            "waive": f"waived the {phase} gate as {who}",
            "abort": f"aborted {workflow_id} at {phase}",
        }
        _report(as_json, d.model_dump(mode="json"), said[kind])

    _run(go)


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
    signal: SignalOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Approve what is pending: an approval point, review answers, or more budget.

    A failed gate is not approved: it is waived (with a reason), rejected or aborted.
    """
    fields = {"comment": comment, "budget_usd": budget_usd}
    _answer(workflow_id, phase, "approve", approver, as_json, signal, **fields)


@app.command()
def reject(
    workflow_id: IdArg,
    phase: DecisionPhase,
    feedback: Annotated[str, typer.Option(help="What must change (handed to the executor).")],
    approver: Approver = "",
    rewind_to: Annotated[str | None, typer.Option(help="Re-run from this earlier phase.")] = None,
    signal: SignalOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Reject the pending decision with feedback; the rewound phase and all later ones run again."""
    fields = {"feedback": feedback, "rewind_to": rewind_to}
    _answer(workflow_id, phase, "reject", approver, as_json, signal, **fields)


@app.command()
def waive(
    workflow_id: IdArg,
    reason: Annotated[str, typer.Option(help="Why the failed gate is acceptable (recorded).")],
    phase: DecisionPhase,
    approver: Approver = "",
    as_json: JsonOpt = False,
) -> None:
    """Waive a failed quality gate after its repair rounds; the reason is required and recorded."""
    if not reason.strip():
        raise _bad_input("--reason: say why the failed gate is acceptable (it is recorded)")
    _answer(workflow_id, phase, "waive", approver, as_json, comment=reason)


@app.command()
def abort(
    workflow_id: IdArg,
    phase: DecisionPhase,
    comment: Annotated[str, typer.Option(help="Why.")] = "",
    approver: Approver = "",
    as_json: JsonOpt = False,
) -> None:
    """Abort the task at its pending decision (failed gate, budget stop, approval)."""
    _answer(workflow_id, phase, "abort", approver, as_json, comment=comment)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


@app.command("list")
def list_(
    state: Annotated[
        str | None, typer.Option(help="Filter by state, e.g. awaiting_approval.")
    ] = None,
    query: Annotated[str | None, typer.Option(help="Extra visibility query.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    as_json: JsonOpt = False,
) -> None:
    """List tasks, newest first: title, state (Temporal's once ended), phase, age."""
    from implflow.models import TaskState

    valid = {s.value for s in TaskState}
    if state is not None and state not in valid:
        raise _bad_input(f"--state: must be one of {sorted(valid)}")
    rows = _run(lambda flow: flow.list(state, query, limit))
    if as_json:
        _emit_json(rows)
        return
    from rich.table import Table

    table = Table("workflow id", "title", "state", "phase", "age")
    for r in rows:
        table.add_row(
            cell(r["workflow_id"]),
            cell(r["title"]),
            cell(r["state"]),
            cell(r["phase"] or ""),
            _age(r["age_s"]),
        )
    console().print(table)


@app.command()
def diff(
    workflow_id: IdArg,
    phase: Annotated[str | None, typer.Option(help="Phase (default: the latest round).")] = None,
    round_: Annotated[
        int | None, typer.Option("--round", min=1, help="Round (default: the phase's latest).")
    ] = None,
    stat: Annotated[bool, typer.Option("--stat", help="Files changed, not the diff.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Print a phase round's diff from the task branch (implflow's own logs left out)."""

    async def go(flow: ImplflowClient) -> None:
        d = await flow.diff(workflow_id, phase, round_, stat)
        if as_json:
            _emit_json(
                {
                    "phase": d.phase,
                    "round": d.round,
                    "commit": d.commit,
                    "branch": d.branch,
                    "stat" if stat else "diff": d.text,
                }
            )
            return
        # The header goes to stderr, so stdout is a patch `git apply` takes as it is.
        header = f"{d.phase} round {d.round}: commit {d.commit[:12]} on {d.branch}"
        sys.stderr.write(visible(header) + "\n")
        sys.stdout.write(d.text)
        sys.stdout.flush()

    _run(go)


def _sent(as_json: bool, workflow_id: str, what: str, text: str) -> None:
    _report(as_json, {"workflow_id": workflow_id, "sent": what}, text)


@app.command()
def cancel(workflow_id: IdArg, as_json: JsonOpt = False) -> None:
    """Cancel a task: the running phase is stopped and the task ends `cancelled`.

    A task that already ended is not cancelled (Temporal would accept the request and do
    nothing): one line says how it ended, exit 1.
    """

    async def go(flow: ImplflowClient) -> None:
        execution = await flow.execution_state(workflow_id)
        if execution != "running":
            raise ImplflowError(
                f"task {workflow_id} already ended ({execution}); there is nothing to cancel"
            )
        await flow.cancel(workflow_id)

    _run(go)
    _sent(as_json, workflow_id, "cancel", f"cancellation requested for {workflow_id}")


@app.command()
def pause(workflow_id: IdArg, as_json: JsonOpt = False) -> None:
    """Pause after the running phase."""
    _run(lambda flow: flow.pause(workflow_id, by=_user()))
    _sent(as_json, workflow_id, "pause", f"pause requested for {workflow_id}")


@app.command()
def resume(workflow_id: IdArg, as_json: JsonOpt = False) -> None:
    """Resume a paused task."""
    _run(lambda flow: flow.resume(workflow_id, by=_user()))
    _sent(as_json, workflow_id, "resume", f"resumed {workflow_id}")


def _user() -> str:
    import getpass

    return getpass.getuser()


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
        code = asyncio.run(run_demo(auto_approve=auto_approve, console=console()))
    except ImplflowError as e:
        say_error(e)
        raise typer.Exit(1) from None
    raise typer.Exit(code)


from implflow.cli_plan import plan_app  # noqa: E402 - the sub-app uses the helpers above

app.add_typer(plan_app, name="plan")

from implflow.cli_bench import bench  # noqa: E402 - light: imports nothing heavy at the top

app.command()(bench)


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
