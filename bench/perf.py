"""The benchmarks of ``python -m bench``, each run interleaved with its baseline.

Every figure comes from one dev server (file database) and real worker processes
(``python worker.py``; the baseline ``python -m bench.bare`` with the same worker settings).
Durations are the server's own timestamps (workflow start to close, signal to activity
start), so the client's polling does not enter them.

Sections (each returns a dict that goes into the JSON as it is):

- ``overhead``: an 8-phase task (shell executor, no commands, gates off, no approvals)
  against ``BareWorkflow`` of 9 no-op activities (prepare + 8 phases), in interleaved rounds;
- ``branches``: the same task on an origin holding 1 task branch against one holding N more
  (``implflow/*`` branches written with ``git fast-import``), in the same rounds;
- ``approval``: approval -> next phase start, idle (interleaved with the bare baseline) and
  when every parked task is approved at once;
- ``load``: W parked + R running tasks, slots 4 vs 16, one vs two workers, and the bare
  baseline: completions per minute, worker peak RSS, CPU seconds, timeouts;
- ``crash``: kill -9 of the worker mid-phase, a standby worker resumes the phase;
- ``peer``: LangGraph + its SQLite checkpointer, the same 8 steps and 1 interrupt
  (``bench/peer.py``), interleaved with bare Temporal doing the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

from bench import peer
from bench.bare import BareInput
from bench.harness import (
    BARE_TASK_QUEUE,
    BenchError,
    DevServer,
    Processes,
    RoundCommit,
    Sampler,
    WorkerProc,
    activity_starts,
    add_task_branches,
    connect,
    count_events,
    descends_from,
    duplicate_rounds,
    event_time,
    history,
    kill_marked,
    make_origin,
    marked_processes,
    outlived_worker,
    phase_waits,
    round_commits,
    signal_times,
    start_worker,
    sticky_handovers,
    stop_worker,
    summary,
    wait_until,
)
from bench.tasks import (
    new_id,
    phase_command,
    plain_task,
    read_ledgers,
)
from implflow import TASK_QUEUE, WORKFLOW_TYPE
from implflow.models import PHASES

IMPL_PLAN = SearchAttributeKey.for_keyword("ImplPlan")
STEPS = len(PHASES) + 1
"""Activities of an 8-phase task with no gates and no approvals: prepare + 8 phases."""
START_CONCURRENCY = 32
"""Starts, signals and queries in flight at once in a burst (the client side stays cheap)."""


@dataclass(frozen=True)
class Sizes:
    """How much each benchmark does; defaults fit 15 minutes on 2 cores with room to spare."""

    rounds: int = 10
    """Interleaved rounds of overhead/branches (each: bare, 1-branch task, N-branch task)."""
    extra_branches: int = 250
    idle_pairs: int = 10
    """Idle approval latency: implflow and bare, alternately."""
    parked: int = 200
    """Tasks waiting for approval during ``load``, then approved at once (the burst)."""
    running: int = 50
    """Tasks run to completion per ``load`` variant."""
    crash_runs: int = 3
    peer_runs: int = 20
    backlog: int = 20
    """Parked tasks approved while the running tasks' phases queue (people first)."""

    @classmethod
    def quick(cls) -> Sizes:
        """A smoke size: every section runs, in about a minute."""
        return cls(
            rounds=2,
            extra_branches=10,
            idle_pairs=2,
            parked=4,
            running=3,
            crash_runs=1,
            peer_runs=3,
            backlog=2,
        )

    def scaled(self, factor: float) -> Sizes:
        """Every count times ``factor`` (at least 1; at least 2 where a spread is taken)."""
        return Sizes(
            **{
                f.name: max(_AT_LEAST.get(f.name, 1), round(getattr(self, f.name) * factor))
                for f in fields(self)
            }
        )


_AT_LEAST = {"rounds": 2, "idle_pairs": 2, "peer_runs": 2}
"""Counts that stay at 2 or more when scaled: their figures are a min/median/max."""


@dataclass
class Bench:
    """One run's server, client, workers and scratch space."""

    procs: Processes
    server: DevServer
    client: Client
    tmp: Path
    sizes: Sizes
    impl_workers: list[WorkerProc]
    bare_worker: WorkerProc
    _worker_seq: int = 0

    async def set_impl_workers(self, count: int, slots: int) -> list[WorkerProc]:
        """``count`` implflow workers with ``slots``: kept when they are that already, else
        the old ones stop (gracefully) and new ones start side by side."""
        live = [w for w in self.impl_workers if w.alive()]
        if len(live) == count and all(w.slots == slots for w in live):
            return live
        await asyncio.gather(*(stop_worker(self.procs, w) for w in self.impl_workers))
        self.impl_workers = list(
            await asyncio.gather(*(self.new_worker(slots) for _ in range(count)))
        )
        return self.impl_workers

    async def new_worker(self, slots: int) -> WorkerProc:
        """One more implflow worker with its own workspace root."""
        self._worker_seq += 1
        root = self.tmp / f"worker-{self._worker_seq}"
        return await start_worker(self.procs, self.server.address, root, slots=slots)


# --- running one workflow ------------------------------------------------------------------


async def run_impl(
    client: Client, task: dict[str, Any], prefix: str, plan: str | None = None
) -> tuple[str, float]:
    """Start an ImplementationWorkflow, wait for it; ``(workflow id, server-side seconds)``."""
    wid = await start_impl(client, task, prefix, plan)
    return wid, await finished(client, wid)


async def start_impl(
    client: Client, task: dict[str, Any], prefix: str, plan: str | None = None
) -> str:
    wid = new_id(prefix)
    attrs = TypedSearchAttributes([SearchAttributePair(IMPL_PLAN, plan)]) if plan else None
    await client.start_workflow(
        WORKFLOW_TYPE, task, id=wid, task_queue=TASK_QUEUE, search_attributes=attrs
    )
    return wid


async def start_bare(client: Client, inp: BareInput, prefix: str, plan: str | None = None) -> str:
    wid = new_id(prefix)
    attrs = TypedSearchAttributes([SearchAttributePair(IMPL_PLAN, plan)]) if plan else None
    await client.start_workflow(
        "BareWorkflow", inp, id=wid, task_queue=BARE_TASK_QUEUE, search_attributes=attrs
    )
    return wid


async def run_bare(client: Client, inp: BareInput, prefix: str = "bare") -> tuple[str, float]:
    wid = await start_bare(client, inp, prefix)
    return wid, await finished(client, wid)


async def finished(client: Client, wid: str, timeout_s: float = 600) -> float:
    """Wait for the workflow's result; the seconds from its start to its close (server)."""
    handle = client.get_workflow_handle(wid)
    try:
        await asyncio.wait_for(handle.result(), timeout_s)
    except WorkflowFailureError as err:
        raise BenchError(f"{wid} failed: {err.cause}") from None
    except TimeoutError:
        raise BenchError(f"{wid} did not finish within {timeout_s:.0f} s") from None
    desc = await handle.describe()
    if desc.close_time is None:
        raise BenchError(f"{wid} has no close time")
    return (desc.close_time - desc.start_time).total_seconds()


async def bounded(items: Sequence[Any], fn: Callable[[Any], Awaitable[Any]]) -> list[Any]:
    """``fn`` over ``items`` with at most ``START_CONCURRENCY`` in flight."""
    gate = asyncio.Semaphore(START_CONCURRENCY)

    async def one(item: Any) -> Any:
        async with gate:
            return await fn(item)

    return list(await asyncio.gather(*(one(i) for i in items)))


async def waiting_count(client: Client, plan: str) -> int:
    resp = await client.count_workflows(
        f"ImplPlan = '{plan}' AND ImplState = 'awaiting_approval' AND ExecutionStatus = 'Running'"
    )
    return int(resp.count)


def ratio_summary(pairs: Sequence[tuple[float, float]]) -> dict[str, float | int]:
    """min/median/max of ``a / b`` over pairs measured side by side."""
    return summary([a / b for a, b in pairs if b > 0], 3)


# --- (a) + (b): per-phase overhead, and growth with the number of task branches ---------------


async def overhead_and_branches(b: Bench) -> dict[str, Any]:
    """Interleaved rounds of: bare (9 no-op activities), task on a 1-branch origin, task on
    an origin with ``extra_branches`` more task branches. The order rotates every round."""
    many = make_origin(b.tmp / "origin-many")
    fill_s = add_task_branches(many, b.sizes.extra_branches, PHASES)
    task_many = plain_task(many)
    # The same branches with their refs packed, as a git server keeps them: git's own
    # receive-pack reads every loose ref file of the origin on each push.
    packed = make_origin(b.tmp / "origin-packed")
    add_task_branches(packed, b.sizes.extra_branches, PHASES, pack_refs=True)
    task_packed = plain_task(packed)
    singles: dict[str, Path] = {}  # a fresh origin per task: it holds that task's branch only

    async def bare() -> tuple[str, float]:
        return await run_bare(b.client, BareInput(steps=STEPS))

    async def impl_one() -> tuple[str, float]:
        origin = make_origin(b.tmp / f"origin-1-{len(singles)}")
        wid, seconds = await run_impl(b.client, plain_task(origin), "ovh1")
        singles[wid] = origin
        return wid, seconds

    async def impl_many() -> tuple[str, float]:
        return await run_impl(b.client, task_many, "ovhn")

    async def impl_packed() -> tuple[str, float]:
        return await run_impl(b.client, task_packed, "ovhp")

    kinds: list[tuple[str, Callable[[], Awaitable[tuple[str, float]]]]] = [
        ("bare", bare),
        ("one", impl_one),
        ("many", impl_many),
        ("packed", impl_packed),
    ]
    for _, fn in kinds:  # warm-up, not counted: first imports, first clones, caches
        await fn()
    times: dict[str, list[float]] = {k: [] for k, _ in kinds}
    wids: dict[str, list[str]] = {k: [] for k, _ in kinds}
    for r in range(b.sizes.rounds):
        order = kinds[r % len(kinds) :] + kinds[: r % len(kinds)]
        for name, fn in order:
            wid, seconds = await fn()
            times[name].append(seconds)
            wids[name].append(wid)
    body = {name: await activity_bodies(b.client, wids[name]) for name, _ in kinds}
    commits_ok = await commits_per_round_ok(many, wids["many"])
    for wid in wids["one"]:
        commits_ok = commits_ok and await commits_per_round_ok(singles[wid], [wid])
    per_activity_bare = [t / STEPS for t in times["bare"]]
    per_activity_one = [t / STEPS for t in times["one"]]
    bare_med = summary(per_activity_bare)["median"]
    one_med = summary(per_activity_one)["median"]
    target = 1.3 * float(bare_med) + 0.150
    overhead = {
        "rounds": b.sizes.rounds,
        "task_s": {"implflow": summary(times["one"]), "bare": summary(times["bare"])},
        "per_activity_ms": {
            "implflow": summary([t * 1000 for t in per_activity_one], 1),
            "bare": summary([t * 1000 for t in per_activity_bare], 1),
        },
        "activity_body_ms": {"implflow": body["one"], "bare": body["bare"]},
        "ratio": ratio_summary(list(zip(times["one"], times["bare"], strict=True))),
        "target_per_phase_ms": round(target * 1000, 1),
        "target_met": float(one_med) <= target,
        "one_commit_per_round": commits_ok,
    }
    branches: dict[str, Any] = {
        "rounds": b.sizes.rounds,
        "extra_branches": b.sizes.extra_branches,
        "fill_s": round(fill_s, 2),
        "task_s": {"one_branch": summary(times["one"]), "many_branches": summary(times["many"])},
        "activity_body_ms": {"one_branch": body["one"], "many_branches": body["many"]},
        "growth": ratio_summary(list(zip(times["many"], times["one"], strict=True))),
        "packed_task_s": summary(times["packed"]),
        "packed_growth": ratio_summary(list(zip(times["packed"], times["one"], strict=True))),
        "ratio_to_bare": ratio_summary(list(zip(times["many"], times["bare"], strict=True))),
    }
    branches["target_met"] = float(branches["growth"].get("median", 99)) <= 1.10
    branches["packed_target_met"] = float(branches["packed_growth"].get("median", 99)) <= 1.10
    return {"overhead": overhead, "branches": branches}


async def activity_bodies(client: Client, wids: Sequence[str]) -> dict[str, float | int]:
    """Median per workflow of (activity completed - activity started), in ms."""
    medians = []
    for wid in wids:
        spans = []
        starts: dict[int, float] = {}
        for ev in await history(client, wid):
            if ev.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                starts[ev.event_id] = event_time(ev)
            elif ev.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                started = starts.get(ev.activity_task_completed_event_attributes.started_event_id)
                if started is not None:
                    spans.append((event_time(ev) - started) * 1000)
        if spans:
            medians.append(sorted(spans)[len(spans) // 2])
    return summary(medians, 1)


async def commits_per_round_ok(origin: Path, wids: Sequence[str]) -> bool:
    """Every task has exactly one commit per phase round, for each of the 8 phases."""
    for wid in wids:
        commits: list[RoundCommit] = await asyncio.to_thread(round_commits, origin, wid)
        rounds = {(c.phase, c.round) for c in commits if not c.gate}
        if duplicate_rounds(commits) or rounds != {(p, 1) for p in PHASES}:
            return False
    return True


# --- (c) approval -> next phase -------------------------------------------------------------

APPROVAL_PHASES = ("design", "implement")
"""The parked and the idle-approval tasks: a phase, an approval point, a phase."""


def approval_task(origin: Path) -> dict[str, Any]:
    return plain_task(origin, phases=APPROVAL_PHASES, approval_after=("design",))


def impl_latency(events: Sequence[Any]) -> float | None:
    """Seconds from the ``approve`` signal to the start of the next phase's activity."""
    signals = signal_times(events, "approve")
    nxt = [t for kind, phase, _, t in activity_starts(events) if phase == APPROVAL_PHASES[1]]
    if not signals or not nxt:
        return None
    return nxt[0] - signals[0]


def approval_split(events: Sequence[Any], step: str) -> tuple[float, float] | None:
    """Where approval -> next ``step`` start went: (signal -> the step's activity scheduled,
    scheduled -> started). The first is the workflow task that takes in the signal (the
    worker's workflow side); the second is the wait for a free activity slot."""
    signals = signal_times(events, "approve")
    nxt = [(sched, at) for phase, sched, at in phase_waits(events) if phase == step]
    if not signals or not nxt:
        return None
    sched, at = nxt[0]
    return sched - signals[0], at - sched


def bare_latency(events: Sequence[Any]) -> float | None:
    """Seconds from the ``approve`` signal to the start of the step after the approval."""
    signals = signal_times(events, "approve")
    nxt = [t for kind, step, _, t in activity_starts(events) if step == "step-1"]
    if not signals or not nxt:
        return None
    return nxt[0] - signals[0]


async def approval_idle(b: Bench) -> dict[str, Any]:
    """One task at a time waits, is approved, runs on: implflow and bare, alternately."""
    origin = make_origin(b.tmp / "origin-idle")
    impl: list[float] = []
    bare: list[float] = []
    for i in range(b.sizes.idle_pairs):
        for kind in ("impl", "bare") if i % 2 == 0 else ("bare", "impl"):
            plan = new_id("idle")
            if kind == "impl":
                wid = await start_impl(b.client, approval_task(origin), "idle", plan)
            else:
                wid = await start_bare(
                    b.client, BareInput(steps=2, approval_after=1), "idleb", plan
                )

            async def parked(plan: str = plan) -> int:
                return await waiting_count(b.client, plan)

            await wait_until(parked, 60, f"{wid} to wait for approval", every_s=0.05)
            await asyncio.sleep(0.3)  # idle: nothing else is happening
            handle = b.client.get_workflow_handle(wid)
            if kind == "impl":
                await handle.signal("approve", {"phase": "design", "approver": "bench"})
            else:
                await handle.signal("approve", {"by": "bench"})
            await finished(b.client, wid)
            events = await history(b.client, wid)
            latency = impl_latency(events) if kind == "impl" else bare_latency(events)
            if latency is None:
                raise BenchError(f"{wid}: no approval -> next step in its history")
            (impl if kind == "impl" else bare).append(latency * 1000)
    return {
        "pairs": b.sizes.idle_pairs,
        "implflow_ms": summary(impl, 1),
        "bare_ms": summary(bare, 1),
    }


async def park(b: Bench, origin: Path, count: int, plan: str, bare: bool) -> list[str]:
    """Start ``count`` tasks that run one phase and wait for approval; wait until all do."""

    async def one(_: int) -> str:
        if bare:
            return await start_bare(b.client, BareInput(steps=2, approval_after=1), "parkb", plan)
        return await start_impl(b.client, approval_task(origin), "park", plan)

    wids = await bounded(range(count), one)

    async def all_parked() -> bool:
        return await waiting_count(b.client, plan) >= count

    await wait_until(all_parked, 120 + count * 2.0, f"{count} tasks to wait for approval", 0.5)
    return wids


async def warm(b: Bench, wids: Sequence[str]) -> None:
    """Query each parked task once, so the current workers hold it in their caches (as the
    workers that parked them did): RSS with W parked tasks means W workflows in memory."""

    async def one(wid: str) -> None:
        # The SDK's built-in metadata query: every workflow answers it, bare ones too.
        await b.client.get_workflow_handle(wid).query(
            "__temporal_workflow_metadata", rpc_timeout=timedelta(seconds=30)
        )

    await bounded(wids, one)


async def approve_all(
    b: Bench, wids: Sequence[str], bare: bool, latency: Callable[[Sequence[Any]], float | None]
) -> dict[str, Any]:
    """Approve every parked task at once; approval -> next phase start of each, in ms."""
    payload = {"by": "bench"} if bare else {"phase": "design", "approver": "bench"}
    server = b.server.proc.pid if b.server.proc else None
    workers = [b.bare_worker.pid] if bare else [w.pid for w in b.impl_workers]
    sampler = Sampler([*([server] if server else []), *workers])
    sampler.start()
    sent = time.monotonic()

    async def one(wid: str) -> None:
        await b.client.get_workflow_handle(wid).signal("approve", payload)

    await bounded(wids, one)
    signal_s = time.monotonic() - sent

    async def done(wid: str) -> float:
        return await finished(b.client, wid, timeout_s=300 + len(wids))

    await bounded(wids, done)
    drained_s = time.monotonic() - sent
    await sampler.stop()
    return {
        **await approval_figures(b, wids, bare, latency),
        "signals_sent_s": round(signal_s, 2),
        "all_done_s": round(drained_s, 2),
        # What the host spent on the burst: what limits it when the host is busy throughout.
        "host_busy_pct": round(sampler.host_busy_pct, 1),
        "server_cpu_s": round(sampler.cpu_of(server), 1) if server else None,
        "worker_cpu_s": round(sum(sampler.cpu_of(w) for w in workers), 1),
    }


async def approval_figures(
    b: Bench, wids: Sequence[str], bare: bool, latency: Callable[[Sequence[Any]], float | None]
) -> dict[str, Any]:
    """Approval -> next step start of each task, and the two parts of it, in ms."""
    values, to_scheduled, queued = [], [], []
    for wid in wids:
        events = await history(b.client, wid)
        value = latency(events)
        if value is not None:
            values.append(value * 1000)
        split = approval_split(events, "step-1" if bare else APPROVAL_PHASES[1])
        if split is not None:
            to_scheduled.append(split[0] * 1000)
            queued.append(split[1] * 1000)
    return {
        "approvals": len(wids),
        "latency_ms": summary(values, 1),
        "to_scheduled_ms": summary(to_scheduled, 1),
        "queued_ms": summary(queued, 1),
    }


# --- (d) many waiting + some running -----------------------------------------------------------


async def load_variant(
    b: Bench,
    label: str,
    workers: Sequence[WorkerProc],
    start: Callable[[int], Awaitable[str]],
    origin: Path | None = None,
    during: Callable[[], Awaitable[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """Start ``running`` workflows at once and measure until all are done; with ``origin``,
    check that each task left exactly one commit per phase round there. ``during`` runs
    once they are started (its figures go under ``during``)."""
    sampler = Sampler([w.pid for w in workers])
    sampler.start()
    began = time.monotonic()
    wids = await bounded(range(b.sizes.running), start)
    side = asyncio.ensure_future(during()) if during is not None else None
    durations = await bounded(wids, lambda wid: finished(b.client, wid, timeout_s=900))
    extra = {"during": await side} if side is not None else {}
    wall = time.monotonic() - began
    await sampler.stop()
    wft_timeouts = wft_failures = retries = handovers = 0
    for wid in wids:
        events = await history(b.client, wid)
        handover = sticky_handovers(events)
        handovers += handover
        wft_timeouts += (
            count_events(events, EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT) - handover
        )
        wft_failures += count_events(events, EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED)
        retries += sum(
            1
            for ev in events
            if ev.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
            and ev.activity_task_started_event_attributes.attempt > 1
        )
    return {
        "variant": label,
        "workers": len(workers),
        "slots": workers[0].slots if workers else 0,
        "running": len(wids),
        "wall_s": round(wall, 2),
        "completions_per_min": round(len(wids) / wall * 60, 1),
        "task_s": summary(durations, 2),
        "peak_rss_mb": round(max(sampler.peak_rss.values(), default=0) / 2**20, 1),
        "peak_tree_rss_mb": round(sampler.peak_tree_rss / 2**20, 1),
        "cpu_s": round(sampler.cpu_s, 2),
        "cpu_s_per_task": round(sampler.cpu_s / max(1, len(wids)), 3),
        "host_busy_pct": round(sampler.host_busy_pct, 1),
        "workflow_task_timeouts": wft_timeouts,
        "sticky_handovers": handovers,
        "workflow_task_failures": wft_failures,
        "activity_retries": retries,
        "one_commit_per_round": await commits_per_round_ok(origin, wids) if origin else None,
        "queued_ms": summary(await queue_waits(b, wids), 1),
        **extra,
    }


async def queue_waits(b: Bench, wids: Sequence[str]) -> list[float]:
    """How long each phase of ``wids`` waited in the task queue for a slot, in ms."""
    waits = []
    for wid in wids:
        waits += [(at - sched) * 1000 for _, sched, at in phase_waits(await history(b.client, wid))]
    return waits


async def approve_into_backlog(b: Bench, wids: Sequence[str]) -> dict[str, Any]:
    """Once the running tasks' phases queue for the slots, approve ``wids`` (parked tasks):
    their next phases are a person's, and go ahead of the queue (task priority)."""
    await asyncio.sleep(BACKLOG_DELAY_S)
    await bounded(
        wids,
        lambda wid: b.client.get_workflow_handle(wid).signal(
            "approve", {"phase": "design", "approver": "bench"}
        ),
    )
    await bounded(wids, lambda wid: finished(b.client, wid, timeout_s=600))
    return await approval_figures(b, wids, bare=False, latency=impl_latency)


BACKLOG_DELAY_S = 3.0
"""After the running tasks start: their phases queue for the 4 slots by then."""


async def load_and_burst(b: Bench) -> dict[str, Any]:
    """``parked`` tasks wait for approval while ``running`` tasks run, for each worker set-up;
    then every parked task is approved at once (the burst), with the baseline's equivalent."""
    sizes = b.sizes
    parked_origin = make_origin(b.tmp / "origin-parked")
    plan_impl, plan_bare = new_id("bench-park"), new_id("bench-parkb")
    parked_at = time.monotonic()
    parked = await park(b, parked_origin, sizes.parked + sizes.backlog, plan_impl, bare=False)
    parked, backlog = parked[: sizes.parked], parked[sizes.parked :]
    park_s = time.monotonic() - parked_at
    parked_bare = await park(b, parked_origin, sizes.parked, plan_bare, bare=True)
    variants = []
    # Shown in this order; run with the default set-up last, so the burst that follows
    # needs no restart and the parked tasks stay in that worker's cache.
    set_ups = [
        ("slots 4, 1 worker", 1, 4),
        ("slots 16, 1 worker", 1, 16),
        ("slots 4, 2 workers", 2, 4),
    ]
    for label, count, slots in [*set_ups[1:], set_ups[0]]:
        workers = await b.set_impl_workers(count, slots)
        await warm(b, parked)
        origin = make_origin(b.tmp / f"origin-run-{count}x{slots}")
        task = plain_task(origin)

        async def start(_: int, task: dict[str, Any] = task) -> str:
            return await start_impl(b.client, task, "run")

        def into_backlog() -> Awaitable[dict[str, Any]]:
            return approve_into_backlog(b, backlog)

        people_first = into_backlog if (count, slots) == (1, 4) and backlog else None
        variants.append(await load_variant(b, label, workers, start, origin, people_first))
    variants = [variants[-1], *variants[:-1]]
    await warm(b, parked_bare)

    async def start_bare_run(_: int) -> str:
        return await start_bare(b.client, BareInput(steps=STEPS), "runb")

    variants.append(
        await load_variant(b, "bare, slots 4, 1 worker", [b.bare_worker], start_bare_run)
    )
    # The burst, on the default set-up: one worker, 4 slots.
    await b.set_impl_workers(1, 4)
    burst_impl = await approve_all(b, parked, bare=False, latency=impl_latency)
    burst_bare = await approve_all(b, parked_bare, bare=True, latency=bare_latency)
    base = variants[0]["completions_per_min"] or 1.0
    return {
        "load": {
            "parked": sizes.parked,
            "park_s": round(park_s, 1),
            "variants": variants,
            "slots16_vs_4": round(variants[1]["completions_per_min"] / base, 2),
            "two_vs_one_worker": round(variants[2]["completions_per_min"] / base, 2),
        },
        "burst": {"implflow": burst_impl, "bare": burst_bare},
    }


# --- (e) crash recovery ------------------------------------------------------------------------

CRASH_PHASES = ("review", "design", "implement", "test")
CRASH_PHASE = "implement"
CRASH_HEARTBEAT_S = 2.0
CRASH_SLEEP_S = 2.5
"""How long ``implement``'s command runs: the kill lands about 0.3 s into it."""


async def crash_recovery(b: Bench) -> dict[str, Any]:
    """Two workers (each its own workspace root) poll the queue; kill -9 of the one that runs
    ``implement``, mid-phase; the other resumes it. Resume time, executions per phase,
    commits per round, executors left running."""
    runs: list[dict[str, Any]] = []
    for r in range(b.sizes.crash_runs):
        live = [w for w in b.impl_workers if w.alive()]
        missing = max(0, 2 - len(live))
        b.impl_workers = live + list(
            await asyncio.gather(*(b.new_worker(4) for _ in range(missing)))
        )
        origin = make_origin(b.tmp / f"origin-crash-{r}")
        marker = new_id("bench-crash-marker")
        ledger = f"{marker}.ledger"
        commands = {
            p: phase_command(ledger, marker, CRASH_SLEEP_S if p == CRASH_PHASE else 0.1)
            for p in CRASH_PHASES
        }
        task = plain_task(
            origin,
            phases=CRASH_PHASES,
            commands=commands,
            heartbeat_s=CRASH_HEARTBEAT_S,
            attempts=3,
        )
        wid = await start_impl(b.client, task, "crash")

        async def running_on(marker: str = marker, ledger: str = ledger) -> WorkerProc | None:
            """The worker above ``implement``'s command, once that runs (the only one then)."""
            rows = await asyncio.to_thread(read_ledgers, b.tmp, ledger)
            if not any(row[0] == "start" and row[1] == CRASH_PHASE for row in rows):
                return None
            for proc in await asyncio.to_thread(marked_processes, marker, True):
                for worker in b.impl_workers:
                    if worker.alive() and descends_from(proc, {worker.pid}):
                        return worker
            return None

        victim = await wait_until(running_on, 60, "implement to start", every_s=0.05)
        await asyncio.sleep(0.3)
        killed_at = time.time()
        b.procs.kill9(victim.proc)
        b.impl_workers = [w for w in b.impl_workers if w is not victim]
        await asyncio.sleep(1.0)
        orphans = len(marked_processes(marker, commands_only=True))
        seconds = await finished(b.client, wid, timeout_s=120)
        events = await history(b.client, wid)
        rows = await asyncio.to_thread(read_ledgers, b.tmp, ledger)
        orphans = max(orphans, len(outlived_worker(rows, [killed_at])))
        starts = [row for row in rows if row[0] == "start"]
        resumed = [row[5] for row in starts if row[1] == CRASH_PHASE and row[5] > killed_at]
        lost_work = [
            killed_at - row[5] for row in starts if row[1] == CRASH_PHASE and row[5] < killed_at
        ]
        commits = await asyncio.to_thread(round_commits, origin, wid)
        executions = {p: sum(1 for row in starts if row[1] == p) for p in CRASH_PHASES}
        runs.append(
            {
                "task_s": round(seconds, 2),
                "resume_s": round(resumed[0] - killed_at, 2) if resumed else None,
                "killed_attempt_work_s": round(lost_work[0], 2) if lost_work else None,
                "executions": executions,
                "completed_phases_rerun": sum(
                    n - 1 for p, n in executions.items() if p != CRASH_PHASE and n > 1
                ),
                "commits": len([c for c in commits if not c.gate]),
                "duplicate_commits": duplicate_rounds(commits),
                "orphans_after_kill": orphans,
                "workflow_task_timeouts": count_events(
                    events, EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT
                ),
            }
        )
        kill_marked(marker)
    resume = [float(r["resume_s"]) for r in runs if r["resume_s"] is not None]
    return {
        "runs": len(runs),
        "heartbeat_timeout_s": CRASH_HEARTBEAT_S,
        "resume_s": summary(resume, 2),
        "completed_phases_rerun": sum(int(r["completed_phases_rerun"]) for r in runs),
        "duplicate_commits": sum(int(r["duplicate_commits"]) for r in runs),
        "one_commit_per_round": all(
            r["commits"] == len(CRASH_PHASES) and not r["duplicate_commits"] for r in runs
        ),
        "orphans_after_kill": sum(int(r["orphans_after_kill"]) for r in runs),
        "task_s": summary([float(r["task_s"]) for r in runs], 2),
        "workflow_task_timeouts": sum(int(r["workflow_task_timeouts"]) for r in runs),
        "detail": runs,
    }


# --- (f) the peer --------------------------------------------------------------------------------


async def peer_section(b: Bench, implflow_task_s: float | None) -> dict[str, Any]:
    """LangGraph + SQLite, the same 8 steps and one interrupt, interleaved with bare Temporal
    doing the same (8 no-op activities, an approval signal after the second)."""
    available, why = peer.available()
    bare: list[float] = []
    graph: list[float] = []
    resume: list[float] = []
    runner = peer.PeerRunner(b.tmp / "peer.sqlite") if available else None
    try:
        for i in range(b.sizes.peer_runs):
            if runner is not None:
                run = await asyncio.to_thread(runner.run_once, f"run-{i}")
                graph.append(run.total_s * 1000)
                resume.append(run.resume_to_next_s * 1000)
            wid = await start_bare(b.client, BareInput(steps=8, approval_after=2), "peerb")
            # The signal is sent at once: it waits in the workflow until the approval point.
            await b.client.get_workflow_handle(wid).signal("approve", {"by": "bench"})
            bare.append(await finished(b.client, wid) * 1000)
    finally:
        if runner is not None:
            runner.close()
    steps = len(PHASES)
    out: dict[str, Any] = {
        "available": available,
        "versions": peer.versions() if available else {},
        "runs": b.sizes.peer_runs,
        "bare_run_ms": summary(bare, 1),
        "bare_per_step_ms": summary([x / steps for x in bare], 2),
    }
    if implflow_task_s is not None:
        out["implflow_per_step_ms"] = round(implflow_task_s * 1000 / STEPS, 1)
    if available:
        out["langgraph_run_ms"] = summary(graph, 2)
        out["langgraph_per_step_ms"] = summary([x / steps for x in graph], 3)
        out["langgraph_resume_to_next_ms"] = summary(resume, 3)
    else:
        out["reason"] = why
    return out


# --- all of it -----------------------------------------------------------------------------------

SECTIONS = ("overhead", "branches", "approval", "load", "crash", "peer")


async def run_all(procs: Processes, tmp: Path, sizes: Sizes) -> dict[str, Any]:
    """Start a server and workers, run every section, return the results (JSON-ready)."""
    server = DevServer(procs, tmp / "server")
    await server.start()
    client = await connect(server.address)
    impl = await start_worker(procs, server.address, tmp / "worker-0", slots=4)
    bare = await start_worker(procs, server.address, tmp / "worker-bare", kind="bare", slots=4)
    b = Bench(procs, server, client, tmp, sizes, [impl], bare)
    results: dict[str, Any] = {"sizes": asdict(sizes)}
    timings: dict[str, float] = {}

    async def section(name: str, fn: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        began = time.monotonic()
        try:
            results.update(await fn())
        except Exception as err:  # one section's failure is reported; the others still run
            results[name] = {"error": f"{type(err).__name__}: {str(err)[:500]}"}
        timings[name] = round(time.monotonic() - began, 1)

    await section("overhead", lambda: overhead_and_branches(b))
    if "error" in results.get("overhead", {}):
        results["branches"] = results["overhead"]

    async def idle() -> dict[str, Any]:
        return {"approval": {"idle": await approval_idle(b)}}

    await section("approval", idle)

    async def load() -> dict[str, Any]:
        out = await load_and_burst(b)
        approval = results.setdefault("approval", {})
        if isinstance(approval, dict) and "error" not in approval:
            approval["burst"] = out.pop("burst")
            backlog = next(
                (v.pop("during") for v in out["load"]["variants"] if "during" in v), None
            )
            if backlog is not None:
                default = out["load"]["variants"][0]
                approval["backlog"] = {
                    **backlog,
                    "running": default["running"],
                    "running_queued_ms": default["queued_ms"],
                    "host_busy_pct": default["host_busy_pct"],
                }
        else:
            out.pop("burst")
        return out

    await section("load", load)

    async def crash() -> dict[str, Any]:
        return {"crash": await crash_recovery(b)}

    await section("crash", crash)
    task_s = None
    with contextlib.suppress(KeyError, TypeError):
        task_s = float(results["overhead"]["task_s"]["implflow"]["median"])

    async def peer_() -> dict[str, Any]:
        return {"peer": await peer_section(b, task_s)}

    await section("peer", peer_)
    results["section_s"] = timings
    return results


def replace_sizes(sizes: Sizes, **changes: int) -> Sizes:
    """``sizes`` with some counts changed (``--rounds 4`` and the like)."""
    return replace(sizes, **{k: v for k, v in changes.items() if v is not None})
