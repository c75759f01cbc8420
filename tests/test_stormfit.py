"""Fitting the CPU model's costs to a real boot storm (evsim/stormfit.py): which side each kind is charged
to, the fit's arithmetic proven by running the model again on the fitted profile, and one tiny real storm
over loopback through ``evsim calibrate --storm``. No timing is asserted: only the model's own accounting."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from evsim.cli import main as cli_main
from evsim.cpu import load_profile
from evsim.stormfit import fit, model_storm, side_of


def test_each_kind_is_charged_to_the_stations_the_csms_or_both() -> None:
    assert side_of("tls/client/mutual") == side_of("ocpp/call/Heartbeat") == "stations"
    assert side_of("conn/client") == side_of("ws/client") == "stations"
    assert side_of("tls/server") == side_of("ocpp/serve/BootNotification") == "csms"
    assert side_of("conn/server") == side_of("ws/server") == "csms"
    # what both processes charge, and the short prefixes that stand for either side
    for kind in ("validate/BootNotification", "relay/station", "tls", "conn", "ocpp", "ws", "ocpp/callx"):
        assert side_of(kind) == "shared", kind


def test_the_fitted_profile_makes_the_model_spend_what_each_real_process_spent(tmp_path: Path) -> None:
    profile = load_profile("reference")
    n = 12
    model = model_storm(n, "reference", 4)
    bare = model_storm(n, "reference", 4, no_validation_cost=True)
    assert 0 < bare["cpu_stations_s"] < model["cpu_stations_s"]  # validation is charged on both sides
    assert 0 < bare["cpu_csms_s"] < model["cpu_csms_s"]
    # a "real" storm in which the stations' process spent 2.5x the model, the CSMS's 1.5x
    real = {"cpu_stations_s": 2.5 * model["cpu_stations_s"], "cpu_csms_s": 1.5 * model["cpu_csms_s"]}
    fitted, found = fit(profile, real, model, bare, n)
    assert found.stations > found.shared > found.csms
    assert "fitted to a real boot storm of 12 stations" in fitted.measured["storm_fit"]
    # the proportions within a side stay as measured alone
    ratio = fitted.costs["tls/client/mutual"] / fitted.costs["tls/client/full"]
    assert ratio == pytest.approx(
        profile.costs["tls/client/mutual"] / profile.costs["tls/client/full"], rel=1e-3
    )
    path = tmp_path / "fitted.json"
    path.write_text(json.dumps(fitted.to_json()), encoding="utf-8")
    again = model_storm(n, str(path), 4)
    assert again["cpu_stations_s"] == pytest.approx(real["cpu_stations_s"], rel=0.01)
    assert again["cpu_csms_s"] == pytest.approx(real["cpu_csms_s"], rel=0.01)
    assert again["booted"] == n


def test_a_fit_without_figures_is_refused() -> None:
    profile = load_profile("reference")
    ok = {"cpu_stations_s": 1.0, "cpu_csms_s": 1.0}
    with pytest.raises(ValueError, match="cannot fit"):
        fit(profile, {"cpu_stations_s": math.nan, "cpu_csms_s": 1.0}, ok, ok, 10)
    with pytest.raises(ValueError, match="cannot fit"):
        fit(profile, ok, {"cpu_stations_s": 0.0, "cpu_csms_s": 0.0}, ok, 10)


@pytest.mark.slow
def test_calibrate_fits_the_profile_to_a_real_storm_over_loopback(tmp_path: Path) -> None:
    out = tmp_path / "fitted.json"
    argv = ["calibrate", "--iterations", "1", "--rounds", "1", "--storm", "4", "--out", str(out)]
    assert cli_main(argv) == 0
    profile = load_profile(str(out))
    assert "fitted to a real boot storm of 4 stations" in profile.measured["storm_fit"]
    assert profile.cost(("tls", "client", "full")) > 0


@pytest.mark.parametrize("storm", ["-1", "10001", "99999999"])
def test_a_storm_out_of_range_is_refused_with_the_flag_to_use(
    storm: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["calibrate", "--storm", storm, "--out", "/nonexistent/x.json"]) != 0
    err = capsys.readouterr().err
    assert "--storm" in err and "10,000" in err
