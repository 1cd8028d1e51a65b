"""``implflow plan ...``: thin commands over ``implflow.client.PlanClient``.

Same conventions as the rest of the CLI (``implflow.cli``): exit 0 ok, 1 runtime error,
2 bad input (one line on stderr naming the task and field, before anything starts);
``--json`` prints machine output.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:  # the commands import these when they run: `implflow --help` stays fast
    from implflow.client import ImplflowClient, PlanClient
    from implflow.plans import PlanInput, PlanStatus

plan_app = typer.Typer(
    name="plan",
    help="Plans: many tasks in dependency order, merged into one branch at the end.",
    no_args_is_help=True,
    add_completion=False,
)

FileArg = Annotated[Path, typer.Argument(help="Plan file: YAML, or a markdown task list (.md).")]
PlanIdArg = Annotated[str, typer.Argument(help="Plan id (the plan's workflow id).")]
RepoOpt = Annotated[
    str | None, typer.Option("--repo", help="Repository (path or git URL) instead of the file's.")
]


def _plans(flow: ImplflowClient) -> PlanClient:
    from implflow.client import PlanClient

    return PlanClient(flow.client, flow.task_queue)


def _load(file: Path, repo: str | None) -> PlanInput:
    """The validated plan, or exit 2 with one line naming the task and field."""
    from implflow.client import check_plan_executors
    from implflow.errors import InvalidInputError
    from implflow.plans import check_specialists, load_plan
    from implflow.settings import Settings

    if repo and "://" not in repo and "@" not in repo:
        repo = str(Path(repo).expanduser().resolve())
    try:
        plan = load_plan(file, repo)
        check_plan_executors(plan)
        check_specialists(plan, Settings().specialists_dir)
    except InvalidInputError as err:
        cli.say_error(err)
        raise typer.Exit(2) from None
    return plan


@plan_app.command()
def check(file: FileArg, repo: RepoOpt = None, as_json: cli.JsonOpt = False) -> None:
    """Validate a plan file without starting it; --json prints what PlanWorkflow takes."""
    from implflow.plans import plan_json, topological_order

    plan = _load(file, repo)
    if as_json:
        sys.stdout.write(plan_json(plan) + "\n")
        return
    order = topological_order(plan.tasks)
    # The title and ids come from the file: never markup, never terminal controls.
    cli.plain(
        f"{plan.title}: {len(plan.tasks)} tasks, concurrency {plan.concurrency}, "
        f"on_failure {plan.on_failure}; order: {', '.join(order)}"
    )


@plan_app.command()
def run(
    file: FileArg,
    plan_id: Annotated[
        str | None, typer.Option("--id", help="Plan id (default: from the title and content).")
    ] = None,
    repo: RepoOpt = None,
    watch_: Annotated[
        bool, typer.Option("--watch", help="Follow it; exit 0 only if it completes.")
    ] = False,
    as_json: cli.JsonOpt = False,
) -> None:
    """Start a plan (validated first: bad input exits 2 and starts nothing); print its id."""
    plan = _load(file, repo)

    async def go(flow: ImplflowClient) -> int:
        plans = _plans(flow)
        started = await plans.start_plan(plan, plan_id)
        pid = started.plan_id
        if as_json:
            cli._emit_json({"plan_id": pid, "started": started.started}, indent=None)
        elif started.started:
            cli.plain(f"started plan {pid}")
        else:
            cli.plain(f"plan {pid} is already running this plan; following it")
        return await _watch(plans, pid, as_json) if watch_ else 0

    raise typer.Exit(cli._run(go))


async def _watch(plans: PlanClient, plan_id: str, as_json: bool) -> int:
    """Print each task's state and phase as they change; 0 only if the plan completed."""
    from implflow.models import TaskState

    shown: dict[str, tuple[str, str, str]] = {}
    width = 0
    asked = None
    last: PlanStatus | None = None
    async for status in plans.watch_plan(plan_id):
        last = status
        if as_json:
            sys.stdout.write(status.model_dump_json() + "\n")
            sys.stdout.flush()
            continue
        done = status.totals.completed
        width = width or max(len(t.id) for t in status.tasks)
        for task in status.tasks:
            now = (task.state.value, task.phase or "", task.waiting or "")
            if shown.get(task.id) != now:
                shown[task.id] = now
                waiting = f" — waiting for {task.waiting}" if task.waiting else ""
                cli.plain(
                    f"[{done}/{status.totals.tasks}] {task.id:<{width}}  "
                    f"{task.state.value:<18} {task.phase or '-'}{waiting}"
                )
        if status.pending and status.pending.model_dump() != asked:
            asked = status.pending.model_dump()
            p = status.pending
            cli.plain(
                f"the plan waits for {p.phase} of {p.task}: implflow plan approve {plan_id} "
                f"{p.task} --phase {p.phase}" + (" --candidate N" if p.phase == "pick" else "")
            )
    if last is None:
        return 1
    if not as_json:
        render_plan(last)
    return 0 if last.state == TaskState.COMPLETED else 1


def render_plan(status: PlanStatus) -> None:
    """The plan for people: the table of tasks, totals, the pending decision, the result.

    Everything from the plan (titles, ids, states, evidence, branches, errors) is escaped or
    printed without markup: `[/]` in a title is shown, not parsed; controls are shown visibly.
    """
    from rich.table import Table

    safe, cell = cli.safe, cli.cell
    con = cli.console()
    con.print(f"[bold]{safe(status.title)}[/bold]  ({safe(status.plan_id)})", highlight=False)
    t = status.totals
    con.print(
        f"state: [bold]{safe(status.state.value)}[/bold]  stage: {safe(status.stage)}  "
        f"{t.completed}/{t.tasks} completed, {t.running} running, {t.waiting} waiting, "
        f"{t.failed} failed, {t.blocked} blocked  spent ${t.cost_usd:.2f}"
        + (f" of ${status.budget_usd_total:.2f}" if status.budget_usd_total else ""),
        highlight=False,
    )
    table = Table("task", "specialist")
    table.add_column("state", no_wrap=True)
    for name in ("phase", "waiting for", "cost"):
        table.add_column(name)
    for task in status.tasks:
        table.add_row(
            cell(task.id),
            cell(task.specialist),
            cell(task.state.value),
            cell(task.phase or ""),
            cell(task.waiting or ""),
            f"${task.cost_usd:.2f}",
        )
    con.print(table)
    cli.plain(f"task branches: implflow/{status.plan_id}.<task>", out=con)
    for task in status.tasks:
        if len(task.runs) > 1:
            for run in task.runs:
                figures = run.figures.line() if run.figures else ""
                cli.plain(
                    f"  {task.id} candidate {run.candidate}: {run.state or 'not started'} "
                    f"{run.label} {figures}",
                    out=con,
                )
    if status.pending:
        p = status.pending
        if p.evidence:
            cli.plain(p.evidence, multiline=True, out=con)
        con.print(
            f"[yellow]waiting for {safe(p.phase)} of {safe(p.task)}[/yellow]: "
            + safe(f"implflow plan approve {status.plan_id} {p.task} --phase {p.phase}"),
            highlight=False,
        )
    i = status.integration
    if i is not None and i.commit:
        test = {True: "passed", False: "failed", None: "not run"}[i.test_passed]
        cli.plain(
            f"integration: {i.branch} @ {i.commit[:12]} (merged {', '.join(i.merged)}; "
            f"tests {test})",
            out=con,
        )
    if status.error:
        con.print(f"[red]error:[/red] {safe(status.error, multiline=True)}", highlight=False)


@plan_app.command()
def status(plan_id: PlanIdArg, as_json: cli.JsonOpt = False) -> None:
    """The table of tasks (state, phase, waiting for, branch, cost), totals, what waits."""
    st = cli._run(lambda flow: _plans(flow).plan_status(plan_id))
    if as_json:
        sys.stdout.write(st.model_dump_json(indent=2) + "\n")
    else:
        render_plan(st)


@plan_app.command()
def approve(
    plan_id: PlanIdArg,
    task: Annotated[str, typer.Argument(help="Task id (or 'plan' for the budget).")],
    phase: Annotated[
        str, typer.Option(help="The phase it waits at (or merge, pick, budget, integrate).")
    ],
    approver: cli.Approver = "",
    comment: Annotated[str, typer.Option(help="Comment; on a failed gate, the reason.")] = "",
    candidate: Annotated[
        int | None, typer.Option(help="Which candidate (a pick, or a candidate's approval).")
    ] = None,
    budget_usd: Annotated[
        float | None, typer.Option(help="At a budget stop: the extra dollars granted.")
    ] = None,
    as_json: cli.JsonOpt = False,
) -> None:
    """Approve what a task waits for (routed to its workflow), or the plan's own decision."""
    who = approver or cli._user()

    async def go(flow: ImplflowClient) -> Any:
        return await _plans(flow).approve_task(
            plan_id, task, phase, who, comment, candidate=candidate, budget_usd=budget_usd
        )

    decision = cli._run(go)
    cli._report(
        as_json,
        decision.model_dump(mode="json"),
        f"{decision.decision} {task} at {phase} as {who}",
    )


@plan_app.command()
def cancel(plan_id: PlanIdArg, as_json: cli.JsonOpt = False) -> None:
    """Cancel a plan: its running tasks are cancelled cleanly and the plan records it."""
    cli._run(lambda flow: _plans(flow).cancel_plan(plan_id))
    cli._report(as_json, {"plan_id": plan_id, "sent": "cancel"}, f"cancelling plan {plan_id}")


@plan_app.command("list")
def list_(
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50, as_json: cli.JsonOpt = False
) -> None:
    """List plans (newest first)."""
    rows = cli._run(lambda flow: _plans(flow).list_plans(limit))
    if as_json:
        cli._emit_json(rows)
        return
    from rich.table import Table

    table = Table("plan id", "state", "stage", "started")
    for row in rows:
        table.add_row(*(cli.cell(row[k] or "") for k in ("plan_id", "state", "stage", "started")))
    cli.console().print(table)


# Last, so that either module may be imported first: ``implflow.cli`` adds ``plan_app`` at its
# end, and these commands use its helpers (``cli._run``, ``cli.console``) only when they run.
from implflow import cli  # noqa: E402
