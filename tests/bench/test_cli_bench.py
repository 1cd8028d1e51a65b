"""``implflow bench``: a thin command that runs ``python -m bench`` / ``bench.faults``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from implflow import cli_bench


def app() -> typer.Typer:
    root = typer.Typer()
    root.command()(cli_bench.bench)

    @root.command()
    def other() -> None:  # a second command, so typer keeps `bench` as a subcommand
        """Nothing."""

    return root


def test_options_become_the_module_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[list[str], Path]] = []

    def call(argv: list[str], cwd: Path) -> int:
        calls.append((argv, cwd))
        return 3

    monkeypatch.setattr(subprocess, "call", call)
    runner = CliRunner()
    quick = runner.invoke(app(), ["bench", "--quick", "--scale", "0.5"])
    faults = runner.invoke(app(), ["bench", "--faults", "--runs", "4", "--seed", "9"])
    assert (quick.exit_code, faults.exit_code) == (3, 3)  # the module's exit status
    assert calls == [
        ([sys.executable, "-m", "bench", "--quick", "--scale", "0.5"], cli_bench.CHECKOUT),
        ([sys.executable, "-m", "bench.faults", "--runs", "4", "--seed", "9"], cli_bench.CHECKOUT),
    ]


def test_outside_a_checkout_it_says_so_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(cli_bench, "CHECKOUT", tmp_path)
    result = CliRunner().invoke(app(), ["bench", "--quick"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "runs from a checkout" in lines[0]
