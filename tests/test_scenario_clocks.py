"""Station clocks in scenario files: the ``clock`` table and ``[nts.<name>]`` (did-you-mean errors), the
``clock_step`` action, the shipped ``clock_drift_nts`` scenario's outcome, and its clock report recomputed
from ``events.jsonl``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evsim.cli import main
from evsim.errors import ConfigError
from evsim.metrics.clocks import clock_tables, offset_series
from evsim.scenario.document import validate_scenario
from evsim.scenario.golden import shipped
from evsim.scenario.loader import load_scenario, loads_scenario
from evsim.scenario.runner import run_scenario
from evsim.world.actions import ClockStep

SCENARIO = next(p for p in shipped() if p.stem == "clock_drift_nts")

BASE = """
[simulation]
duration = "1h"
[pki.roots.foreign]
[nts.time1]
[nts.odd]
root = "foreign"
[csms.main]
[stations.fleet]
count = 2
"""


def _load(clock: str, extra: str = "") -> object:
    return loads_scenario(BASE + f"clock = {clock}\n" + extra)


def test_clock_table_and_nts_servers_load() -> None:
    sc = loads_scenario(
        BASE
        + 'clock = { offset = "-3d", offset_spread = "1h", drift_ppm = 50, drift_spread_ppm = 20, '
        + 'nts = ["odd", "time1"], nts_roots = ["root"], nts_time_check = "skip_until_clock_synced", '
        + 'time_source = ["NTP", "Heartbeat"], report_threshold = 60 }\n'
        + '[[timeline]]\nat = "10m"\naction = "clock_step"\ntarget = "fleet"\nby = "-26h"\n'
        + '[[timeline]]\nat = "20m"\naction = "stop"\ntarget = "time1"\n'
    )
    clock = sc.stations["fleet"].clock
    assert clock is not None and clock.offset == -3 * 86_400 and clock.nts == ("odd", "time1")
    assert clock.settings().time_source == ("NTP", "Heartbeat")
    assert sc.nts_servers["odd"].root == "foreign"
    assert sc.timeline[0].action == ClockStep(target="fleet", by=-26 * 3600.0)
    assert validate_scenario(sc).stations["fleet"].clock == clock  # the document round trip keeps it


@pytest.mark.parametrize(
    ("clock", "message", "fix"),
    [
        ('{ ofset = "1h" }', "unknown key", "offset"),
        ('{ nts = ["time2"] }', "undefined NTS server", "time1"),
        ('{ nts = ["time1"], nts_roots = ["roots"] }', "unknown value", "root"),
        ('{ time_source = ["Heartbeat", "Sundial"] }', "unknown value", "Heartbeat"),
        ('{ nts_time_check = "skip" }', "unknown value", "skip_until_clock_synced"),
        ('{ nts_roots = ["root"] }', "NTS settings without NTS servers", "nts"),
        ('{ set_to = "yesterday" }', "", ""),
        ("{ drift_ppm = 1e9 }", "must be", ""),
    ],
)
def test_bad_clock_tables_are_refused_with_a_fix(clock: str, message: str, fix: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(clock)
    assert message in info.value.message
    assert fix in (info.value.fix or "")
    assert info.value.line == BASE.count("\n") + 1


def test_clock_step_needs_a_station_target_and_nts_server_names_are_unique() -> None:
    with pytest.raises(ConfigError, match="clock_step needs"):
        loads_scenario(BASE + '[[timeline]]\nat = "1m"\naction = "clock_step"\ntarget = "main"\nby = "1h"\n')
    with pytest.raises(ConfigError, match="names another node"):
        loads_scenario(BASE.replace("[nts.odd]", "[nts.fleet]"))
    with pytest.raises(ConfigError, match="undefined node") as info:
        loads_scenario(BASE + '[[timeline]]\nat = "1m"\naction = "stop"\ntarget = "time2"\n')
    assert "time1" in (info.value.fix or "")


def test_clock_drift_nts_outcome() -> None:
    result = run_scenario(load_scenario(SCENARIO))
    assert result.ok, (result.outcome, result.error)
    events = list(result.recorder.events)

    def of(kind: str, node: str | None = None) -> list[dict[str, object]]:
        return [{"t": e.t, **e.data} for e in events if e.kind == kind and (node is None or e.node == node)]

    for sid in ("DEAD-01", "DEAD-02", "DEAD-03", "DEAD-04"):
        refused = of("handshake_failed", sid)
        assert refused and refused[0]["reason"] == "cert_invalid:not_yet_valid"
        rogue = of("nts_ke_failed", sid)
        assert rogue[0]["source"] == "rogue_time" and rogue[0]["reason"] == "tls:cert_invalid:unknown_ca"
        step = of("clock_adjusted", sid)[0]
        assert step["mode"] == "step" and float(step["delta"]) > 25 * 365 * 86_400  # type: ignore[arg-type]
        assert float(of("booted", sid)[0]["t"]) > float(step["t"])  # type: ignore[arg-type]
    failovers = [e for e in of("nts_failover") if e["reason"] == "no_response"]
    assert len(failovers) == 10 and all(e["to"] == "time2" for e in failovers)
    received = [e["type"] for e in of("security_event_received")]
    assert received.count("SettingSystemTime") == 4 + 6 + 6  # dead clocks set; the step at 40 min and back
    end = result.sim_elapsed
    assert all(abs(st.clock.offset(st.clock.t0 + end)) < 0.01 for st in result.stations.values())


def test_clock_report_is_recomputed_from_events_jsonl(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", str(SCENARIO), "--out", str(tmp_path), "--no-live"]) == 0
    capsys.readouterr()
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    (table,) = clock_tables(events)
    assert table.render() in (run_dir / "summary.txt").read_text()
    assert table.rows[0][1:] == ("10", "3.57 s", "9497.0 d", "9497.0 d", "9497.0 d")
    assert (run_dir / "plots" / "clock_offsets.png").read_bytes()[:4] == b"\x89PNG"
    # the replay agrees with the stations' own clocks (to the microsecond the events are rounded to)
    result = run_scenario(load_scenario(SCENARIO))
    end = result.sim_elapsed
    replayed = offset_series(events, [end])
    for sid, station in result.stations.items():
        assert replayed[sid][0] == pytest.approx(station.clock.offset(station.clock.t0 + end), abs=1e-5)


def test_a_controller_clock_loads_and_takes_a_clock_step() -> None:
    sc = loads_scenario(
        BASE.replace("[stations.fleet]", '[controllers.lc]\nupstream = [{ csms = "main" }]\n'
                     'clock = { offset = "-1h", nts = ["time1"] }\n[stations.fleet]\ncsms = "main"')
        + '[[timeline]]\nat = "10m"\naction = "clock_step"\ntarget = "lc"\nby = "1h"\n'
    )  # fmt: skip
    clock = sc.controllers["lc"].clock
    assert clock is not None and clock.offset == -3600.0 and clock.nts == ("time1",)
    assert sc.timeline[0].action == ClockStep(target="lc", by=3600.0)
    assert validate_scenario(sc).controllers["lc"].clock == clock
