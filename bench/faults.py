"""The fault suite: ``python -m bench.faults [--runs N] [--seed S] [--kinds a,b]``.

N runs (default 30) of a small shell-executor task — four phases whose command sleeps a
little, one approval after ``design`` — on its own dev server (file database) and a real
``python worker.py``. In each run one fault strikes at a random moment:

- ``kill9_new_root``: kill -9 of the worker; the replacement has a new workspace root;
- ``kill9_same_root``: the same, the replacement reuses the root (a restarted host);
- ``sigterm``: SIGTERM of the worker (graceful shutdown), replacement on the same root;
- ``server_restart``: the dev server is stopped and started again on its database file;
- ``push_rejected``: the origin's ``pre-receive`` hook refuses pushes for a few seconds;
- ``executor_crash``: the running phase command is killed (SIGKILL);
- ``approve_then_kill9``: the approval is signalled, then within 150 ms the worker is
  killed with -9 and replaced;
- ``malformed_signal``: ``approve``/``reject``/``abort``/``pause`` with a binary payload,
  a null payload, no payload, two payloads or a JSON string.

Per fault kind: runs, completed, duplicate phase commits (two commits for one phase round,
counted by the ``Implflow-Phase``/``Implflow-Round`` trailers), lost approvals (the task
still waits for an approval it was sent), stuck tasks (not finished within the bound),
orphaned processes (a phase command alive with no live worker above it, or anything alive
after the run), foreign writes (a round's commit holding a file another attempt wrote) and
recovery time (from the end of the fault to the next phase command start, or the close).
Results go to ``bench/results/faults.json`` and ``faults.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import re
import shlex
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.common import SearchAttributeKey
from temporalio.service import RPCError

from bench.harness import (
    RESULTS,
    BenchError,
    DevServer,
    Processes,
    WorkerProc,
    connect,
    count_events,
    descends_from,
    duplicate_rounds,
    end_run,
    files_of,
    history,
    kill_marked,
    make_origin,
    marked_processes,
    outlived_worker,
    round_commits,
    start_results,
    start_worker,
    summary,
    sweep_on_sigterm,
    write_results,
)
from bench.report import faults_markdown
from bench.tasks import new_id, phase_command, plain_task, read_ledgers
from implflow import TASK_QUEUE, WORKFLOW_TYPE

KINDS = (
    "kill9_new_root",
    "kill9_same_root",
    "sigterm",
    "server_restart",
    "push_rejected",
    "executor_crash",
    "approve_then_kill9",
    "malformed_signal",
)
PHASES = ("review", "design", "implement", "test")
APPROVAL_PHASE = "design"
PHASE_SLEEP_S = 1.0
HEARTBEAT_S = 3.0
ATTEMPTS = 6
"""Enough for a push outage of up to 10 s with the 1 s initial retry interval and backoff 2."""
STRIKE_WINDOW_S = (0.3, 5.0)
"""When the fault strikes, seconds after the start: the task takes about 5 s undisturbed."""
RUN_BOUND_S = 120.0
"""A task not finished this long after its start is stuck."""
ORPHAN_GRACE_S = 0.5
"""How long after a worker died a phase command it started may still be seen running."""
IMPL_STATE = SearchAttributeKey.for_keyword("ImplState")
IMPL_PHASE = SearchAttributeKey.for_keyword("ImplPhase")
MALFORMED: tuple[tuple[str, str], ...] = (
    ("approve", "binary"),
    ("approve", "null"),
    ("approve", "none"),
    ("approve", "two"),
    ("approve", "string"),
    ("reject", "binary"),
    ("abort", "null"),
    ("pause", "binary"),
)
"""(signal, payload shape) of the malformed-signal fault."""


@dataclass
class Suite:
    """The server, client and current worker shared by the runs."""

    procs: Processes
    server: DevServer
    client: Client
    tmp: Path
    rng: random.Random
    worker: WorkerProc | None = None
    roots: int = 0

    def new_root(self) -> Path:
        self.roots += 1
        return self.tmp / f"root-{self.roots}"

    async def replace_worker(self, same_root: bool) -> WorkerProc:
        root = self.worker.data_dir if (same_root and self.worker) else self.new_root()
        log = root / f"worker-{time.monotonic_ns()}.log"
        self.worker = await start_worker(self.procs, self.server.address, root, slots=4, log=log)
        return self.worker

    async def ensure_worker(self) -> WorkerProc:
        if self.worker is None or not self.worker.alive():
            return await self.replace_worker(same_root=self.worker is not None)
        return self.worker


@dataclass
class Run:
    """What happened in one run."""

    index: int
    kind: str
    workflow_id: str = ""
    strike_s: float = 0.0
    struck: bool = False
    fault_end: float | None = None
    notes: list[str] = field(default_factory=list)
    approval_sent: bool = False
    dead_workers: list[int] = field(default_factory=list)
    deaths: list[float] = field(default_factory=list)
    """When a worker of this run died (kill -9) or had exited (SIGTERM), epoch seconds."""
    orphan_pids: set[int] = field(default_factory=set)
    """Phase commands seen running with no live worker above them."""


# --- the faults ------------------------------------------------------------------------------


async def scan_orphans(s: Suite, run: Run, marker: str) -> None:
    """After ``ORPHAN_GRACE_S``: phase commands of this run with no live worker above them
    (a replacement worker that is starting counts as live: its commands are its own)."""
    await asyncio.sleep(ORPHAN_GRACE_S)
    keep = s.procs.live_pids()
    for proc in await asyncio.to_thread(marked_processes, marker, True):
        if not descends_from(proc, keep):
            run.orphan_pids.add(proc.pid)


async def kill_worker(s: Suite, run: Run, marker: str, same_root: bool) -> None:
    if s.worker is None:
        return
    run.dead_workers.append(s.worker.pid)
    s.procs.kill9(s.worker.proc)
    run.fault_end = time.time()
    run.deaths.append(run.fault_end)
    replacement = asyncio.ensure_future(s.replace_worker(same_root))
    await scan_orphans(s, run, marker)
    await replacement


async def strike(s: Suite, run: Run, wid: str, marker: str, flag: Path, started: float) -> None:
    """Wait for the random moment, then do this run's fault."""
    handle = s.client.get_workflow_handle(wid)
    if run.kind == "approve_then_kill9":
        await wait_for_approval(s, wid, RUN_BOUND_S / 2)
        run.strike_s = time.time() - started
        await handle.signal("approve", {"phase": APPROVAL_PHASE, "approver": "faults"})
        run.approval_sent = True
        gap = s.rng.uniform(0.0, 0.15)
        run.notes.append(f"kill -9 {gap * 1000:.0f} ms after the approval")
        await asyncio.sleep(gap)
        run.struck = True
        await kill_worker(s, run, marker, same_root=s.rng.random() < 0.5)
        return
    if run.kind == "none":
        return
    await asyncio.sleep(max(0.0, started + run.strike_s - time.time()))
    desc = await handle.describe()
    if desc.status != WorkflowExecutionStatus.RUNNING:
        run.notes.append("the task had finished before the fault")
        return
    run.struck = True
    if run.kind in ("kill9_new_root", "kill9_same_root"):
        await kill_worker(s, run, marker, same_root=run.kind == "kill9_same_root")
    elif run.kind == "sigterm":
        if s.worker is not None:
            run.dead_workers.append(s.worker.pid)
            await asyncio.to_thread(s.procs.end, s.worker.proc, signal.SIGTERM, 30)
            run.fault_end = time.time()
            run.deaths.append(run.fault_end)
            replacement = asyncio.ensure_future(s.replace_worker(same_root=True))
            await scan_orphans(s, run, marker)
            await replacement
    elif run.kind == "server_restart":
        down = s.rng.uniform(0.5, 3.0)
        run.notes.append(f"server down {down:.1f} s")
        await s.server.restart(down)
        run.fault_end = time.time()
    elif run.kind == "push_rejected":
        outage = s.rng.uniform(3.0, 10.0)
        run.notes.append(f"pushes refused for {outage:.1f} s")
        await asyncio.to_thread(flag.touch)
        try:
            await asyncio.sleep(outage)
        finally:
            await asyncio.to_thread(flag.unlink, True)
        run.fault_end = time.time()
    elif run.kind == "executor_crash":
        victim = await running_command(marker, 15.0)
        if victim is None:
            run.notes.append("no phase command ran within 15 s of the strike")
            run.struck = False
            return
        with contextlib.suppress(ProcessLookupError):
            victim.kill()
        run.fault_end = time.time()
    elif run.kind == "malformed_signal":
        name, shape = s.rng.choice(MALFORMED)
        run.notes.append(f"{name} with {shape} payload")
        await send_malformed(s.client, wid, name, shape)
        run.fault_end = time.time()


async def running_command(marker: str, timeout_s: float) -> Any:
    """The first phase-command process (the command itself, not its sandbox) of this run."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for proc in await asyncio.to_thread(marked_processes, marker, True):
            with contextlib.suppress(Exception):
                cmd = proc.cmdline()
                if len(cmd) > 2 and Path(cmd[0]).name.startswith("python") and cmd[1] == "-c":
                    return proc
        await asyncio.sleep(0.05)
    return None


async def send_malformed(client: Client, wid: str, name: str, shape: str) -> None:
    """A signal whose payload does not fit: the workflow must drop it with a reason."""
    handle = client.get_workflow_handle(wid)
    if shape == "binary":
        await handle.signal(name, b"\x00\xffnot json")  # encoding binary/plain
    elif shape == "null":
        await handle.signal(name, None)  # encoding binary/null
    elif shape == "none":
        await handle.signal(name)
    elif shape == "two":
        msg = {"phase": APPROVAL_PHASE, "approver": "faults"}
        await handle.signal(name, args=[msg, msg])
    else:
        await handle.signal(name, "approve please")


async def task_state(client: Client, wid: str) -> tuple[str | None, str | None]:
    """(ImplState, ImplPhase) from visibility: answers with no worker running."""
    desc = await client.get_workflow_handle(wid).describe(rpc_timeout=timedelta(seconds=5))
    attrs = desc.typed_search_attributes
    return attrs.get(IMPL_STATE), attrs.get(IMPL_PHASE)


async def wait_for_approval(s: Suite, wid: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(RPCError, RuntimeError):
            state, phase = await task_state(s.client, wid)
            if state == "awaiting_approval" and phase == APPROVAL_PHASE:
                return
        await asyncio.sleep(0.05)
    raise BenchError(f"{wid} never waited for the {APPROVAL_PHASE} approval")


async def approver(s: Suite, run: Run, wid: str) -> None:
    """A person: approves the design once, as soon as the task asks (never twice)."""
    while not run.approval_sent:
        with contextlib.suppress(RPCError, RuntimeError):
            state, phase = await task_state(s.client, wid)
            if state == "awaiting_approval" and phase == APPROVAL_PHASE:
                await s.client.get_workflow_handle(wid).signal(
                    "approve", {"phase": APPROVAL_PHASE, "approver": "faults"}
                )
                run.approval_sent = True
                return
        await asyncio.sleep(0.1)


# --- one run ---------------------------------------------------------------------------------


def install_outage_hook(origin: Path, flag: Path) -> None:
    """A ``pre-receive`` hook in the bare origin that refuses every push while ``flag`` exists."""
    hook = origin / "hooks" / "pre-receive"
    hook.write_text(
        "#!/bin/sh\n"
        f"if [ -e {shlex.quote(str(flag))} ]; then\n"
        "  echo 'bench: the origin refuses pushes (simulated outage)' >&2\n"
        "  exit 1\n"
        "fi\n"
        "cat >/dev/null\n",
        encoding="utf-8",
    )
    hook.chmod(0o755)


async def wait_closed(client: Client, wid: str, deadline: float) -> WorkflowExecutionStatus | None:
    """The workflow's final status, or None if it is still running at ``deadline``."""
    handle = client.get_workflow_handle(wid)
    while time.time() < deadline:
        try:
            await asyncio.wait_for(handle.result(), max(0.5, min(10.0, deadline - time.time())))
        except WorkflowFailureError:
            pass
        except (TimeoutError, RPCError, RuntimeError):
            continue  # a restarting server, or the bound: look again
        with contextlib.suppress(RPCError, RuntimeError):
            return (await handle.describe()).status
        await asyncio.sleep(0.2)
    return None


async def one_run(s: Suite, index: int, kind: str) -> dict[str, Any]:
    """Start the task, strike, wait (bounded), then count what went wrong."""
    run = Run(index=index, kind=kind, strike_s=s.rng.uniform(*STRIKE_WINDOW_S))
    origin = make_origin(s.tmp / f"origin-{index}.git", bare=True)
    flag = s.tmp / f"outage-{index}.flag"
    install_outage_hook(origin, flag)
    marker = new_id("implflow-fault-marker")
    ledger = f"{marker}.ledger"
    task = plain_task(
        origin,
        phases=PHASES,
        approval_after=(APPROVAL_PHASE,),
        commands={p: phase_command(ledger, marker, PHASE_SLEEP_S) for p in PHASES},
        heartbeat_s=HEARTBEAT_S,
        attempts=ATTEMPTS,
    )
    await s.ensure_worker()
    wid = new_id(f"fault-{kind.replace('_', '-')}")
    run.workflow_id = wid
    started = time.time()
    await s.client.start_workflow(WORKFLOW_TYPE, task, id=wid, task_queue=TASK_QUEUE)
    # In approve_then_kill9 the fault itself is the person: it approves, then kills.
    person = asyncio.ensure_future(
        approver(s, run, wid) if kind != "approve_then_kill9" else asyncio.sleep(0)
    )
    fault = asyncio.ensure_future(strike(s, run, wid, marker, flag, started))
    status = await wait_closed(s.client, wid, started + RUN_BOUND_S)
    for job in (person, fault):
        job.cancel()
    await asyncio.wait([person, fault])  # a cancel of this run itself still propagates
    await asyncio.to_thread(flag.unlink, True)
    if not fault.cancelled() and fault.exception() is not None:
        run.notes.append(f"fault raised: {fault.exception()}")
    await s.ensure_worker()  # a later query, and the next run, need one
    return await assess(s, run, status, origin, ledger, marker, started)


async def assess(
    s: Suite,
    run: Run,
    status: WorkflowExecutionStatus | None,
    origin: Path,
    ledger: str,
    marker: str,
    started: float,
) -> dict[str, Any]:
    wid = run.workflow_id
    handle = s.client.get_workflow_handle(wid)
    stuck = status is None
    state = phase = None
    with contextlib.suppress(RPCError, RuntimeError):
        state, phase = await task_state(s.client, wid)
    if stuck:
        with contextlib.suppress(RPCError, RuntimeError):
            await handle.terminate("bench.faults: stuck past the bound")
    completed = status == WorkflowExecutionStatus.COMPLETED
    lost = run.approval_sent and (
        (state == "awaiting_approval" and phase == APPROVAL_PHASE)
        or (completed and not await approved_in_result(s.client, wid))
    )
    # Orphans: what the scans after a worker died saw, and anything of this run still alive.
    await asyncio.sleep(0.5)
    for proc in await asyncio.to_thread(marked_processes, marker, True):
        run.orphan_pids.add(proc.pid)
    kill_marked(marker)
    commits = await asyncio.to_thread(round_commits, origin, wid)
    foreign = 0
    for c in commits:
        if c.gate:
            continue
        for path in await asyncio.to_thread(files_of, origin, c.sha):
            m = re.fullmatch(r"([a-z0-9_-]+)-attempt(\d+)\.txt", path)
            if m and (m.group(1), int(m.group(2))) != (c.phase, c.attempt):
                foreign += 1
                run.notes.append(f"{c.phase} round {c.round} commit holds {path}")
    rows = await asyncio.to_thread(read_ledgers, s.tmp, ledger)
    starts = [r for r in rows if r[0] == "start"]
    # The same orphan may be seen both running and by its late ledger line: count the larger.
    orphans = max(len(run.orphan_pids), len(outlived_worker(rows, run.deaths)))
    extra = max(0, len(starts) - len({(r[1], r[2]) for r in starts}))
    recovery = None
    if run.struck and run.fault_end is not None:
        later = [r[5] for r in starts if r[5] > run.fault_end]
        closed = None
        with contextlib.suppress(RPCError, RuntimeError):
            desc = await handle.describe()
            closed = desc.close_time.timestamp() if desc.close_time else None
        nxt = min([*later, *([closed] if closed else [])], default=None)
        recovery = round(nxt - run.fault_end, 2) if nxt else None
    wft_timeouts = 0
    with contextlib.suppress(RPCError, RuntimeError):
        wft_timeouts = count_events(
            await history(s.client, wid), EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT
        )
    ignored_ok = None
    if run.kind == "malformed_signal" and run.struck and not stuck:
        ignored_ok = await malformed_recorded(s.client, wid)
    problems = []
    if not completed:
        problems.append(f"ended {status.name.lower() if status else 'stuck'} (state {state})")
    if duplicate_rounds(commits):
        problems.append(f"{duplicate_rounds(commits)} duplicate phase commits")
    if lost:
        problems.append("approval lost")
    if orphans:
        problems.append(f"{orphans} orphaned phase command(s)")
    if foreign:
        problems.append(f"{foreign} file(s) of another attempt in a round's commit")
    if ignored_ok is False:
        problems.append("malformed signal not listed in ignored_messages")
    return {
        "run": run.index,
        "kind": run.kind,
        "workflow_id": wid,
        "strike_s": round(run.strike_s, 2),
        "struck": run.struck,
        "completed": completed,
        "final_status": status.name.lower() if status else "stuck",
        "duplicate_commits": duplicate_rounds(commits),
        "lost_approval": bool(lost),
        "stuck": stuck,
        "orphans": orphans,
        "foreign_writes": foreign,
        "extra_executions": extra,
        "recovery_s": recovery,
        "task_s": round(time.time() - started, 1),
        "workflow_task_timeouts": wft_timeouts,
        "ignored_recorded": ignored_ok,
        "notes": run.notes,
        "problem": "; ".join(problems),
    }


async def approved_in_result(client: Client, wid: str) -> bool:
    """The completed task's decisions hold the design approval."""
    try:
        result = await client.get_workflow_handle(wid).result(rpc_timeout=timedelta(seconds=10))
    except (WorkflowFailureError, RPCError, RuntimeError):
        return False
    decisions = result.get("decisions", []) if isinstance(result, dict) else []
    return any(
        d.get("phase") == APPROVAL_PHASE and d.get("decision") == "approve" for d in decisions
    )


async def malformed_recorded(client: Client, wid: str) -> bool:
    """The status query lists the malformed signal under ``ignored_messages``."""
    try:
        status = await client.get_workflow_handle(wid).query(
            "status", rpc_timeout=timedelta(seconds=15)
        )
    except (RPCError, RuntimeError):
        return False
    ignored = status.get("ignored_messages", []) if isinstance(status, dict) else []
    return bool(ignored)


# --- the suite --------------------------------------------------------------------------------


def plan_kinds(runs: int, kinds: Sequence[str], rng: random.Random) -> list[str]:
    """Every kind equally often (shuffled blocks), so a short suite still covers them all."""
    order: list[str] = []
    while len(order) < runs:
        block = list(kinds)
        rng.shuffle(block)
        order += block
    return order[:runs]


def tally(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {
        "runs": len(rows),
        "struck": sum(1 for r in rows if r["struck"]),
        "completed": sum(1 for r in rows if r["completed"]),
        "duplicate_commits": sum(int(r["duplicate_commits"]) for r in rows),
        "lost_approvals": sum(1 for r in rows if r["lost_approval"]),
        "stuck": sum(1 for r in rows if r["stuck"]),
        "orphans": sum(int(r["orphans"]) for r in rows),
        "foreign_writes": sum(int(r["foreign_writes"]) for r in rows),
        "extra_executions": sum(int(r["extra_executions"]) for r in rows),
        "recovery_s": summary([float(r["recovery_s"]) for r in rows if r["recovery_s"]], 2),
        "task_s": summary([float(r["task_s"]) for r in rows], 1),
        "workflow_task_timeouts": sum(int(r["workflow_task_timeouts"]) for r in rows),
    }


async def run_suite(
    procs: Processes, tmp: Path, runs: int, seed: int, kinds: Sequence[str]
) -> dict[str, Any]:
    rng = random.Random(seed)  # noqa: S311 - chooses faults and moments, not secrets
    server = DevServer(procs, tmp / "server")
    await server.start()
    client = await connect(server.address)
    suite = Suite(procs, server, client, tmp, rng)
    # One undisturbed run first: the reference for task time (and a warm-up).
    control = await one_run(suite, -1, "none")
    rows = []
    for index, kind in enumerate(plan_kinds(runs, kinds, rng)):
        row = await one_run(suite, index, kind)
        rows.append(row)
        mark = "ok" if not row["problem"] else row["problem"]
        print(f"run {index + 1}/{runs} {kind}: {mark}", file=sys.stderr, flush=True)
    by_kind = {k: tally([r for r in rows if r["kind"] == k]) for k in kinds}
    return {
        "seed": seed,
        "runs_requested": runs,
        "control": tally([control]),
        "kinds": {k: v for k, v in by_kind.items() if v["runs"]},
        "totals": tally(rows),
        "runs": rows,
        "settings": {
            "phases": list(PHASES),
            "approval_after": APPROVAL_PHASE,
            "phase_sleep_s": PHASE_SLEEP_S,
            "heartbeat_s": HEARTBEAT_S,
            "attempts": ATTEMPTS,
            "strike_window_s": list(STRIKE_WINDOW_S),
            "run_bound_s": RUN_BOUND_S,
        },
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--seed", type=int, default=None, help="default: random (printed)")
    p.add_argument("--kinds", default=",".join(KINDS), help="comma-separated fault kinds")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--name", default="faults", help="file stem of the results")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = p.parse_args(argv)
    args.kind_list = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = [k for k in args.kind_list if k not in KINDS]
    if unknown or not args.kind_list:
        p.error(f"--kinds: unknown {unknown}; known: {', '.join(KINDS)}")
    if not 1 <= args.runs <= 1000:
        p.error("--runs: between 1 and 1000")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the suite; exit 1 when any run had a problem."""
    args = parse_args(argv)
    sweep_on_sigterm()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    shown = [*(argv if argv is not None else sys.argv[1:])]
    if args.seed is None:
        shown += ["--seed", str(seed)]
    results, tmp = start_results("python -m bench.faults", shown, "implflow-faults-")
    began = time.monotonic()
    try:
        with Processes() as procs:
            bound = args.runs * (RUN_BOUND_S + 60) + 120
            results.update(
                asyncio.run(
                    asyncio.wait_for(run_suite(procs, tmp, args.runs, seed, args.kind_list), bound)
                )
            )
    except KeyboardInterrupt:
        print("interrupted: every process the suite started was stopped", file=sys.stderr)
        return 130
    finally:
        end_run(results, began, tmp, args.keep)
    kept = tmp if args.keep else None
    write_results(results, args.out, args.name, faults_markdown(results), kept)
    return 1 if any(r["problem"] for r in results.get("runs", [])) else 0


if __name__ == "__main__":
    from implflow.exit import hard_exit

    hard_exit(main())
