"""The `implflow` CLI: input checks without a server, and the demo as a new user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from implflow.cli import app
from implflow.models import PHASES
from implflow.server import free_port

runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--description", "d", "--repo", "/tmp"], "title"),
        (["--title", "t", "--description", "d", "--repo", ""], "repo"),
        (["--title", "t", "--description", "d"], "repo"),
        (["--title", "t", "--description", "d", "--repo", "/tmp", "--skip", "ship"], "skip"),
        (
            ["--title", "t", "--description", "d", "--repo", "/tmp", "--approve-after", "x"],
            "approval.after",
        ),
        (
            ["--title", "t", "--description", "d", "--repo", "/tmp", "--command", "review=make"],
            "--command review",
        ),
        (
            ["--title", "t", "--description", "d", "--repo", "/tmp", "--command", "nope"],
            "--command",
        ),
        (["--input", "{bad json"], "--input"),
        (["--input", "@/nonexistent.json"], "--input"),
        (["--input", '{"title": "t", "description": "d", "repo": "/tmp", "budget": 5}'], "budget"),
    ],
)
def test_start_rejects_bad_input_before_connecting(args: list[str], field: str) -> None:
    # TEMPORAL_ADDRESS points nowhere: validation must fail first, without a server.
    result = runner.invoke(app, ["start", *args], env={"TEMPORAL_ADDRESS": "127.0.0.1:1"})
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: invalid input")
    assert field in lines[0]


def test_unreachable_server_is_one_line_exit_1() -> None:
    result = runner.invoke(app, ["status", "some-id"], env={"TEMPORAL_ADDRESS": "127.0.0.1:1"})
    assert result.exit_code == 1
    assert "cannot reach Temporal" in result.output and "implflow server" in result.output


def test_list_rejects_unknown_state_naming_it() -> None:
    env = {"TEMPORAL_ADDRESS": "127.0.0.1:1"}
    result = runner.invoke(app, ["list", "--state", "sleeping"], env=env)
    assert result.exit_code == 2
    assert result.output.startswith("error: invalid input: --state")


def test_help_lists_the_public_commands() -> None:
    result = runner.invoke(app, ["--help"])
    for command in (
        "server",
        "worker",
        "start",
        "approve",
        "reject",
        "status",
        "list",
        "watch",
        "cancel",
        "demo",
    ):
        assert command in result.output


def _demo(tmp_path: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "IMPLFLOW_DATA_DIR": str(tmp_path / "data"),
        "IMPLFLOW_SERVER_PORT": str(free_port()),
        "IMPLFLOW_UI_PORT": str(free_port()),
        "COLUMNS": "160",
    }
    return subprocess.run(
        [sys.executable, "-m", "implflow.cli", "demo", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=400,
        env=env,
        check=False,
    )


@pytest.mark.e2e
def test_demo_runs_real_gates_with_one_repair_round(tmp_path: Path) -> None:
    proc = _demo(tmp_path, "--auto-approve")
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    for phase in PHASES:
        assert f"implflow: {phase} (round 1)" in out  # one commit per phase round
        assert f"implflow: gate {phase} passed" in out  # every gate ran for real and passed
    # The cassette's first test round misses the coverage target; the repair round fixes it.
    assert "implflow: gate test failed (round 1)" in out
    assert "implflow: test (round 2)" in out
    assert "FAIL coverage" in out and "line_rate_pct >= 80" in out
    assert "PASS load" in out
    assert out.count("decision: design approve") == 1 and "completed" in out
    assert (tmp_path / "data" / "temporal.db").exists()  # persistent embedded server


@pytest.mark.e2e
def test_demo_asks_in_the_terminal_and_a_rejection_reruns_design(tmp_path: Path) -> None:
    proc = _demo(tmp_path, stdin="r\nname the overdue rule\ny\n")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "implflow: design (round 2)" in proc.stdout
    assert "decision: design reject" in proc.stdout and "decision: design approve" in proc.stdout
