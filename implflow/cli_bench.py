"""``implflow bench``: the benchmarks (or the fault suite) of the checkout implflow runs from.

A thin command over ``python -m bench`` and ``python -m bench.faults``: ``bench/`` lives
beside the package in a checkout (it is not installed), and runs in its own process with
its own dev server and workers, so nothing of it is imported here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

CHECKOUT = Path(__file__).resolve().parents[1]


def bench_argv(
    faults: bool = False,
    quick: bool = False,
    scale: float | None = None,
    runs: int | None = None,
    seed: int | None = None,
    out: Path | None = None,
) -> list[str]:
    """The ``python -m bench`` (or ``bench.faults``) command line for these options."""
    argv = [sys.executable, "-m", "bench.faults" if faults else "bench"]
    if faults:
        if runs is not None:
            argv += ["--runs", str(runs)]
        if seed is not None:
            argv += ["--seed", str(seed)]
    else:
        if quick:
            argv.append("--quick")
        if scale is not None:
            argv += ["--scale", str(scale)]
    if out is not None:
        argv += ["--out", str(out)]
    return argv


def bench(
    faults: Annotated[
        bool, typer.Option("--faults", help="Run the fault suite instead of the benchmarks.")
    ] = False,
    quick: Annotated[bool, typer.Option("--quick", help="Benchmarks at a smoke size.")] = False,
    scale: Annotated[
        float | None, typer.Option(min=0.01, max=10.0, help="Multiply every benchmark count.")
    ] = None,
    runs: Annotated[int | None, typer.Option(min=1, max=1000, help="Fault runs (30).")] = None,
    seed: Annotated[int | None, typer.Option(help="Fault suite seed (default random).")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Results directory (default bench/results).")
    ] = None,
) -> None:
    """Run the benchmarks (python -m bench) or the fault suite; results in bench/results/."""
    if not (CHECKOUT / "bench" / "__main__.py").is_file():
        sys.stderr.write(
            f"error: bench/ is not beside this implflow ({CHECKOUT}): `implflow bench` runs "
            "from a checkout (git clone, then pip install -e '.[bench]')\n"
        )
        raise typer.Exit(1)
    argv = bench_argv(faults, quick, scale, runs, seed, out)
    raise typer.Exit(subprocess.call(argv, cwd=CHECKOUT))
