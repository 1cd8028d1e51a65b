"""``python -m bench``: every benchmark on its own dev server; JSON + markdown in bench/results/.

    python -m bench              # the default sizes (about 4 minutes on 2 cores)
    python -m bench --quick      # a smoke size (about a minute)
    python -m bench --scale 0.5  # every count halved
    python -m bench --parked 100 --running 20

The dev server (file database, free 127.0.0.1 ports) and every worker are started here and
stopped again on exit, Ctrl-C and SIGTERM included.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

from bench.harness import (
    RESULTS,
    Processes,
    end_run,
    start_results,
    sweep_on_sigterm,
    write_results,
)
from bench.perf import Sizes, replace_sizes, run_all
from bench.report import bench_markdown

SIZE_HELP = {
    "rounds": "interleaved rounds of the overhead/branches benchmark",
    "extra_branches": "extra task branches in the origin for (b)",
    "idle_pairs": "idle approvals (each of implflow and bare)",
    "parked": "tasks parked at an approval, then approved at once",
    "running": "tasks run per load set-up",
    "crash_runs": "kill -9 runs",
    "peer_runs": "LangGraph / bare runs",
    "backlog": "parked tasks approved while the running tasks' phases queue",
}
"""``--<size>`` options: one per field of ``Sizes``."""

MAX_MINUTES = 30.0
"""A hard bound on the whole run: past it, everything is stopped."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every count (e.g. 0.5)")
    for size in fields(Sizes):
        p.add_argument(
            f"--{size.name.replace('_', '-')}", type=int, default=None, help=SIZE_HELP[size.name]
        )
    p.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    p.add_argument("--name", default=None, help="file stem (default bench, or bench-quick)")
    p.add_argument("--max-minutes", type=float, default=MAX_MINUTES, help="hard time bound")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    return p.parse_args(argv)


def sizes_from(args: argparse.Namespace) -> Sizes:
    sizes = Sizes.quick() if args.quick else Sizes()
    if args.scale != 1.0:
        sizes = sizes.scaled(args.scale)
    return replace_sizes(sizes, **{size.name: getattr(args, size.name) for size in fields(Sizes)})


async def _run(args: argparse.Namespace, tmp: Path, procs: Processes) -> dict[str, Any]:
    return await asyncio.wait_for(run_all(procs, tmp, sizes_from(args)), args.max_minutes * 60)


def main(argv: list[str] | None = None) -> int:
    """Run the bench; write ``<out>/<name>.json`` and ``.md``; print the table."""
    args = parse_args(argv)
    sweep_on_sigterm()
    shown = argv if argv is not None else sys.argv[1:]
    results, tmp = start_results("python -m bench", shown, "implflow-bench-")
    began = time.monotonic()
    code = 0
    try:
        with Processes() as procs:
            results.update(asyncio.run(_run(args, tmp, procs)))
    except TimeoutError:
        results["error"] = f"stopped after the {args.max_minutes:.0f}-minute bound"
        code = 1
    except KeyboardInterrupt:
        print("interrupted: every process the bench started was stopped", file=sys.stderr)
        return 130
    finally:
        end_run(results, began, tmp, args.keep)
    if any(isinstance(v, dict) and "error" in v for v in results.values()):
        code = 1
    name = args.name or ("bench-quick" if args.quick else "bench")
    write_results(results, args.out, name, bench_markdown(results), tmp if args.keep else None)
    return code


if __name__ == "__main__":
    from implflow.exit import hard_exit

    hard_exit(main())
