"""How load figures are judged, on figures made up to the point (no service, no wrk).

Against a baseline: medians, the noise both measurements showed, and the machine's own
slowdown (the calibration endpoint) decide; against targets: a target even the calibration
endpoint misses is this machine's limit (``environment``). The real probes run in
``test_runner.py`` and ``test_task_environment.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from activities.gates.checks.load import _against_baseline, _against_targets
from activities.gates.context import GateContext
from activities.gates.loadprobe import LoadProbeResult, combine
from activities.gates.loadprobe_models import CalibrationFigures, LatencyMs, WindowFigures
from activities.gates.schema import CheckConfig, GateConfig
from implflow.models import Thresholds

CHECK = CheckConfig(name="load", format="loadprobe", against="baseline")
BASELINE = {
    "p95_ms": 12.0,
    "p95_ms_spread": 4.0,
    "requests_per_s": 3000.0,
    "requests_per_s_spread": 600.0,
    "calibration_requests_per_s": 40000.0,
    "calibration_p95_ms": 1.5,
}


def window(rps: float, p95: float) -> WindowFigures:
    latency = LatencyMs(p50=p95 / 2, p90=p95, p95=p95, p99=p95, mean=p95 / 2, max=p95 * 2)
    requests = int(rps * 2)
    return WindowFigures(
        duration_s=2,
        requests=requests,
        attempts=requests,
        errors=0,
        requests_per_s=rps,
        latency_ms=latency,
    )


def measured(
    windows: list[tuple[float, float]], calibration: tuple[float, float] | None = (40000, 1.5)
) -> LoadProbeResult:
    ws = [window(rps, p95) for rps, p95 in windows]
    cal = None
    if calibration is not None:
        cal_windows = [window(*calibration)] * len(ws)
        cal = CalibrationFigures(
            requests_per_s=calibration[0],
            p95_ms=calibration[1],
            requests_per_s_spread=0,
            p95_ms_spread=0,
            windows=cal_windows,
        )
    one = LoadProbeResult(
        tool="wrk",
        tool_version="t",
        port=1,
        paths=["/"],
        connections=32,
        duration_s=0,
        requests=0,
        errors=0,
        error_breakdown={},
        error_rate=0,
        requests_per_s=0,
        latency_ms=ws[0].latency_ms,
        peak_rss_mib=1,
        peak_cpu_percent=1,
        mean_cpu_percent=1,
        cpu_count=2,
        samples=1,
        service_pids=[],
        windows=ws,
        calibration=cal,
    )
    return combine([one, one.model_copy(update={"windows": []})])  # medians from the windows


def ctx(tmp_path: Path, baseline: dict[str, float] | None = None) -> GateContext:
    return GateContext(
        workdir=tmp_path,
        report_dir=tmp_path,
        tmp=tmp_path,
        cache_dir=tmp_path,
        thresholds=Thresholds(),
        base_ref=None,
        baseline=baseline or BASELINE,
        config=GateConfig(source="none", kind="none"),
        beat=lambda _info: None,
    )


def test_medians_and_spreads_come_from_the_windows() -> None:
    result = measured([(2800, 11), (3100, 13), (2500, 30)])
    assert (result.requests_per_s, result.latency_ms.p95) == (2800, 13)
    assert (result.requests_per_s_spread, result.p95_ms_spread) == (600, 19)


def test_a_no_change_rerun_within_the_noise_passes(tmp_path: Path) -> None:
    verdict = _against_baseline(
        CHECK, ctx(tmp_path), measured([(2500, 14), (2700, 15), (2300, 16)])
    )
    assert verdict.passed, verdict.summary
    assert verdict.extra is not None and verdict.extra["machine_factor"] == 1.0


def test_a_busier_machine_scales_the_baseline(tmp_path: Path) -> None:
    # Half the throughput and three times the tail, and the trivial endpoint slowed alike.
    busy = measured([(1500, 36), (1600, 34), (1400, 38)], calibration=(20000, 4.5))
    verdict = _against_baseline(CHECK, ctx(tmp_path), busy)
    assert verdict.passed, verdict.summary
    assert "this machine is slower now" in verdict.summary
    assert verdict.extra is not None
    assert (verdict.extra["machine_factor"], verdict.extra["latency_factor"]) == (2.0, 3.0)
    # The same figures on a machine as calm as at the baseline are a regression.
    calm = measured([(1500, 36), (1600, 34), (1400, 38)])
    verdict = _against_baseline(CHECK, ctx(tmp_path), calm)
    assert not verdict.passed
    assert verdict.failure_class == "agent"
    assert "p95 36 ms regressed from 12 ms" in verdict.summary


def test_noise_widens_the_allowance_only_so_far(tmp_path: Path) -> None:
    # Wildly varying windows: the allowance grows with them, but not past 60 %.
    noisy = measured([(300, 110), (3000, 12), (900, 40)])
    verdict = _against_baseline(CHECK, ctx(tmp_path), noisy)
    assert not verdict.passed
    assert verdict.extra is not None and verdict.extra["rps_allowed_pct"] == 60.0
    # A ten-times slower service is a regression even on a machine four times busier.
    sleepy = measured([(290, 110), (300, 108), (295, 112)], calibration=(8000, 6.0))
    verdict = _against_baseline(CHECK, ctx(tmp_path), sleepy)
    assert not verdict.passed
    assert "throughput 295 req/s regressed from 3000" in verdict.summary


@pytest.mark.parametrize(
    ("calibration", "failure_class", "phrase"),
    [
        ((800, 2.0), "environment", "beyond this machine: a trivial endpoint on it reaches 800"),
        ((40000, 1.5), "agent", "requests_per_s 600 (target >= 1000): FAIL"),
    ],
)
def test_a_throughput_target_the_machine_cannot_reach(
    tmp_path: Path, calibration: tuple[float, float], failure_class: str, phrase: str
) -> None:
    check = CheckConfig(name="load", format="loadprobe", against="thresholds")
    result = measured([(600, 40), (620, 41), (590, 42)], calibration=calibration)
    verdict = _against_targets(check, ctx(tmp_path), result)
    assert not verdict.passed
    assert verdict.failure_class == failure_class
    assert phrase in verdict.summary
    assert "(the service: 600 req/s)" in verdict.summary or failure_class == "agent"
