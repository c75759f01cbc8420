"""The CPU-model bench's arithmetic (``bench/cpu_model.py``): shares, the scales of the model run at the real
costs, the table. Shape only, never timings."""

from __future__ import annotations

import pytest

from bench.cpu_model import as_real, render, share, shares_only


def _real(**over: float) -> dict[str, float]:
    base = {
        "drain_s": 10.0,
        "first_boot_p50": 5.0,
        "first_boot_p95": 9.5,
        "booted": 100.0,
        "retries": 0.0,
        "wall_s": 12.0,
        "cpu_stations_s": 2.0,
        "cpu_csms_s": 1.0,
        "cpu_stations_total_s": 2.5,
        "cpu_csms_total_s": 1.2,
        "wait_stations_s": 6.0,
        "wait_csms_s": 0.0,
    }
    return {**base, **over}


def test_share_is_the_time_a_process_ran_over_the_time_it_could_run() -> None:
    r = _real()
    assert share(r, "stations") == pytest.approx(0.25)  # ran 2 s, waited 6 s for a core
    assert share(r, "csms") == 1.0  # never waited
    assert share(_real(wait_csms_s=float("nan")), "csms") == 1.0  # no schedstat (not Linux)


def test_the_model_at_the_real_costs_scales_each_process_by_its_cpu_and_share() -> None:
    model = {"cpu_stations_s": 1.0, "cpu_csms_s": 0.5}
    scales = as_real(model, _real())
    # stations: twice the CPU the model charged, a quarter of the time on a core -> 8x slower
    assert scales == pytest.approx({"stations_scale": 8.0, "csms_scale": 2.0})


def test_the_table_shows_ratios_and_whether_they_are_within_the_target() -> None:
    model = {**_real(drain_s=11.0, first_boot_p95=14.0, cpu_stations_s=1.0, cpu_csms_s=0.5)}
    text = render(100, model, _real(), _real(drain_s=10.2, first_boot_p95=9.0))
    lines = {line.split("  ")[0]: line for line in text.splitlines()}
    assert "1.10" in lines["time to drain s"] and lines["time to drain s"].rstrip().endswith("yes")
    assert "1.47" in lines["time to first boot p95 s"] and lines[
        "time to first boot p95 s"
    ].rstrip().endswith("no")
    assert "0.25 / 1.00" in lines["CPU share (ran / runnable), stations / CSMS"]
    assert "0.50 / 0.20" in lines["CPU s after the drain (closing), stations / CSMS"]
    assert lines["time to drain, model at the real costs and shares s"].rstrip().endswith("yes")


def test_the_model_at_the_real_shares_only_slows_each_process_by_its_share() -> None:
    assert shares_only(_real()) == pytest.approx({"stations_scale": 4.0, "csms_scale": 1.0})
    model = _real(drain_s=2.5, first_boot_p95=2.4, cpu_stations_s=2.0, cpu_csms_s=1.0)
    text = render(100, model, _real(), _real(), shared=_real(drain_s=10.5, first_boot_p95=9.0))
    lines = {line.split("  ")[0]: line for line in text.splitlines()}
    assert lines["time to drain, model at the real shares s"].rstrip().endswith("yes")
    assert "0.95" in lines["p95, model at the real shares s"]
    assert "time to drain, model at the real shares s" not in render(100, model, _real(), _real())
