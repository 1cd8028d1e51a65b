"""``python -m bench.faults`` with a fixed seed: kill -9, approval before kill -9, malformed
signal. Every run completes with no duplicate phase commit, no lost approval, nothing stuck."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.bench import processes_naming, run_module, scratch_of

pytestmark = pytest.mark.e2e

KINDS = ("kill9_same_root", "approve_then_kill9", "malformed_signal")


def test_faults_smoke_completes_every_run(tmp_path: Path) -> None:
    proc = run_module(
        "bench.faults",
        "--runs",
        str(len(KINDS)),
        "--seed",
        "11",
        "--kinds",
        ",".join(KINDS),
        "--out",
        str(tmp_path),
        "--name",
        "smoke",
        timeout_s=120,
    )
    results = json.loads((tmp_path / "smoke.json").read_text())
    runs = results["runs"]
    # Exit status 1 means some run had a problem (orphans count), 0 that none had.
    assert proc.returncode == (1 if any(r["problem"] for r in runs) else 0), proc.stderr[-2000:]
    assert not processes_naming(scratch_of(proc.stdout)), "the suite left processes running"
    assert sorted(r["kind"] for r in runs) == sorted(KINDS)
    assert all(r["struck"] for r in runs), [r["notes"] for r in runs]
    totals = results["totals"]
    assert totals["runs"] == len(KINDS) and totals["completed"] == len(KINDS), runs
    assert totals["duplicate_commits"] == 0
    assert totals["lost_approvals"] == 0
    assert totals["stuck"] == 0
    malformed = next(r for r in runs if r["kind"] == "malformed_signal")
    assert malformed["ignored_recorded"] is True, malformed
    assert results["control"]["completed"] == 1
    table = (tmp_path / "smoke.md").read_text()
    for kind in KINDS:
        assert f"| {kind} | 1 | 1 | 0 | 0 | 0 |" in table
    assert "| **all faults** | 3 | 3 | 0 | 0 | 0 |" in table
