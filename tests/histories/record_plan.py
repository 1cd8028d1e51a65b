"""Record the plan history the replay test checks: ``python -m tests.histories.record_plan``.

A diamond (A; B and C after A; D after both) whose task D has two candidates and a person's
pick, on the time-skipping server with the real activities and the shell executor. As with
``record.py``: an existing recording is kept (``--all`` re-records), because a history made by
an older version is what proves a change is still replay-compatible. ``--name NAME`` records
``plans/NAME.json`` (workflow id ``replay-plan-NAME``) beside the others: one recording per
patched behaviour (``diamond``: before ``plan-parallel-starts-v1``; ``diamond-parallel``: after).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import uuid
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from implflow.binaries import find_binary
from implflow.converter import data_converter
from implflow.plans import PlanDecideInput, PlanStatus, parse_plan
from implflow.server import ensure_search_attributes
from implflow.settings import Settings
from implflow.worker import build_worker
from tests.helpers import git_repo

NAME = sys.argv[sys.argv.index("--name") + 1] if "--name" in sys.argv else "diamond"
TARGET = Path(__file__).parent / "plans" / f"{NAME}.json"
WRITE = "import pathlib, sys; pathlib.Path(sys.argv[1] + '.txt').write_text(sys.argv[1])"


def _task(task: str, *deps: str, **extra: object) -> dict[str, object]:
    return {
        "id": task,
        "title": f"Task {task}",
        "depends_on": list(deps),
        "commands": {"implement": [sys.executable, "-c", WRITE, task]},
        **extra,
    }


async def main() -> None:
    if TARGET.exists() and "--all" not in sys.argv:
        print(f"{TARGET.name} exists; keep it (--all re-records)")
        return
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=find_binary("temporal-test-server"),
        data_converter=data_converter,
    )
    await ensure_search_attributes(env.client, register=True)
    async with env:
        with tempfile.TemporaryDirectory() as tmp:
            repo = git_repo(Path(tmp) / "repo")
            plan = parse_plan(
                {
                    "title": "Replay: diamond",
                    "repo": str(repo),
                    "defaults": {"executor": "shell", "phases": [{"name": "implement"}]},
                    "tasks": [
                        _task("A"),
                        _task("B", "A"),
                        _task("C", "A"),
                        _task("D", "B", "C", candidates=2),
                    ],
                }
            )
            tq = f"record-{uuid.uuid4().hex[:8]}"
            async with build_worker(env.client, Settings(data_dir=Path(tmp) / "data"), tq):
                h = await env.client.start_workflow(
                    "PlanWorkflow", plan, id=f"replay-plan-{NAME}", task_queue=tq
                )
                for _ in range(600):
                    st = await h.query("status", result_type=PlanStatus)
                    if st.pending is not None:
                        break
                    await asyncio.sleep(0.1)
                await h.execute_update(
                    "decide",
                    PlanDecideInput(
                        task="D", phase="pick", decision="approve", approver="lead", candidate=2
                    ),
                )
                await h.result()
                history = await h.fetch_history()
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    TARGET.write_text(history.to_json(), encoding="utf-8")
    print(f"recorded {TARGET.name}: {len(history.events)} events")


if __name__ == "__main__":
    asyncio.run(main())
