"""``python -m bench --quick``: every section runs and reports figures, with units, in a table.

The bench starts its own dev server (file database) and workers; the run must leave none of
them behind. Sizes are tiny: this proves the machinery, not the performance.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import peer
from tests.helpers.bench import numbers, processes_naming, run_module, scratch_of

pytestmark = pytest.mark.e2e

SECTIONS = ("overhead", "branches", "approval", "load", "crash", "peer")


def positive(summary: dict[str, float]) -> bool:
    return summary.get("n", 0) > 0 and summary["median"] > 0


def test_quick_bench_reports_every_section(tmp_path: Path) -> None:
    proc = run_module("bench", "--quick", "--out", str(tmp_path), "--name", "smoke", timeout_s=90)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not processes_naming(scratch_of(proc.stdout)), "the bench left processes running"
    results = json.loads((tmp_path / "smoke.json").read_text())
    sizes = results["sizes"]
    for name in SECTIONS:
        assert name in results and "error" not in results[name], results.get(name)
        assert any(True for _ in numbers(results[name])), f"{name} has no figures"

    overhead = results["overhead"]
    assert positive(overhead["task_s"]["implflow"]) and positive(overhead["task_s"]["bare"])
    assert overhead["task_s"]["implflow"]["n"] == sizes["rounds"]
    assert positive(overhead["ratio"]) and overhead["one_commit_per_round"] is True
    assert isinstance(overhead["target_met"], bool)
    branches = results["branches"]
    assert branches["extra_branches"] == sizes["extra_branches"] and positive(branches["growth"])

    approval = results["approval"]
    assert approval["idle"]["implflow_ms"]["n"] == sizes["idle_pairs"]
    assert positive(approval["idle"]["implflow_ms"]) and positive(approval["idle"]["bare_ms"])
    burst = approval["burst"]
    assert burst["implflow"]["approvals"] == sizes["parked"]
    assert burst["implflow"]["latency_ms"]["n"] == sizes["parked"]
    assert burst["bare"]["latency_ms"]["n"] == sizes["parked"]

    variants = results["load"]["variants"]
    assert [v["variant"] for v in variants] == [
        "slots 4, 1 worker",
        "slots 16, 1 worker",
        "slots 4, 2 workers",
        "bare, slots 4, 1 worker",
    ]
    for v in variants:
        assert v["running"] == sizes["running"]
        assert v["completions_per_min"] > 0 and v["peak_rss_mb"] > 0 and v["cpu_s"] > 0
        assert v["one_commit_per_round"] in (True, None)  # None: the bare baseline has none

    crash = results["crash"]
    assert crash["runs"] == sizes["crash_runs"] and positive(crash["resume_s"])
    assert crash["duplicate_commits"] == 0 and crash["completed_phases_rerun"] == 0
    assert crash["one_commit_per_round"] is True

    found = results["peer"]
    assert positive(found["bare_per_step_ms"])
    if peer.available()[0]:
        assert found["available"] is True and positive(found["langgraph_per_step_ms"])
    else:
        assert found["available"] is False and "pip install" in found["reason"]

    table = (tmp_path / "smoke.md").read_text()
    assert table in proc.stdout
    assert f"{results['machine']['cores']} cores" in table and "python -m bench --quick" in table
    for label in ("(a)", "(b)", "(c)", "(d)", "(e)", "(f)"):
        assert f"| {label} " in table
    assert "| set-up | completions/min |" in table
