"""The shipped ``eebus_pairing`` scenario: its promised outcome, and the pairing tables recomputed from the run
directory's ``events.jsonl`` alone (the golden log itself is checked with every shipped scenario)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

from evsim.cli import main
from evsim.errors import ConfigError
from evsim.metrics.pairing import pairing_states, pairing_tables
from evsim.scenario.golden import shipped
from evsim.scenario.loader import load_scenario, loads_scenario
from evsim.scenario.runner import RunResult, run_scenario

SCENARIO = next(p for p in shipped() if p.stem == "eebus_pairing")


@functools.cache
def _run() -> RunResult:
    result = run_scenario(load_scenario(SCENARIO))
    assert result.ok, (result.outcome, result.error)
    return result


def _events() -> list[dict[str, object]]:
    return sorted((e.as_json() for e in _run().recorder.events), key=lambda e: (e["t"], e["node"], e["seq"]))


def test_eebus_pairing_outcome() -> None:
    rows = pairing_states(_events())
    by_state: dict[str, list[tuple[str, str, str]]] = {}
    for manager, device, _ski, state, reason, _since in rows:
        assert manager == "hems"
        by_state.setdefault(state, []).append((device, reason, _ski))
    paired = sorted(d for d, _, _ in by_state["paired"])
    assert paired == [f"ST-{n:04d}" for n in range(1, 10)]  # ST-0003 with its new key, ST-0010 unpaired
    assert [(d, r[:10]) for d, r, _ in by_state["replaced"]] == [("ST-0003", "re-paired ")]
    assert [(d, r) for d, r, _ in by_state["refused"]] == [("ST-0007", "pairing_refused:unknown")]
    assert [(d, r) for d, r, _ in by_state["unpaired"]] == [("ST-0010", "pairing_refused:denied")]
    assert "pending" not in by_state
    # the impostor's key is not the real ST-0007's, which stays paired and connected
    real = next(ski for d, _, ski in by_state["paired"] if d == "ST-0007")
    assert by_state["refused"][0][2] != real
    events = _events()
    requested = [e for e in events if e["kind"] == "pairing_requested"]
    assert {e["device"] for e in requested} == {f"ST-{n:04d}" for n in range(1, 11)}
    assert all(float(str(e["t"])) < 60 for e in requested)  # before the first window only
    paired_at = sorted(float(str(e["t"])) for e in events if e["kind"] == "paired" and e["node"] == "hems")
    assert paired_at == [90.0] * 10 + [690.0]
    # each newly paired device waits 45 s for the user's confirmation (SHIP hello pending, one prolongation)
    connected_at = sorted(
        float(str(e["t"])) for e in events if e["kind"] == "ship_connected" and e["node"] == "hems"
    )
    assert connected_at == [135.0] * 10 + [735.0]
    steps = [e["step"] for e in events if e["kind"] == "ship_hello" and e["node"] == "ST-0001"]
    assert steps == ["peer_pending", "prolongation_granted"]
    refused = [e for e in events if e["kind"] == "pairing_refused" and e["device"] == "ST-0003"]
    assert refused and all("re-pairing needs a pairing window" in str(e["detail"]) for e in refused)


def test_pairing_tables_are_recomputed_from_events_jsonl(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", str(SCENARIO), "--out", str(tmp_path), "--no-live", "--no-plots"]) == 0
    capsys.readouterr()
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    lines = (run_dir / "events.jsonl").read_text().splitlines()
    events = sorted((json.loads(line) for line in lines), key=lambda e: (e["t"], e["node"], e["seq"]))
    tables = pairing_tables(events)
    assert [t.title for t in tables] == [
        "Pairing states (energy managers and pairing listeners)",
        "Energy managers",
    ]
    summary = (run_dir / "summary.txt").read_text()
    for t in tables:
        assert t.render() in summary
    assert main(["report", str(run_dir), "--no-plots"]) == 0
    assert tables[0].render() in capsys.readouterr().out
    (hems,) = tables[1].rows
    assert hems[:7] == ("hems", 9, 0, 1, 2, 2, 11)


def test_scenario_keys_are_checked() -> None:
    base = """
[simulation]
duration = "1m"
[csms.main]
[stations.fleet]
count = 2
sessions = 0
"""
    with pytest.raises(ConfigError, match="not a station group or station id") as info:
        loads_scenario(base + '[energy_managers.hems]\nstations = ["flet"]\n')
    assert "fleet" in (info.value.fix or "")
    with pytest.raises(ConfigError, match="already linked"):
        loads_scenario(
            base
            + '[energy_managers.a]\nstations = ["fleet"]\n[energy_managers.b]\nstations = ["fleet-0001"]\n'
        )
    with pytest.raises(ConfigError, match="already the name"):
        loads_scenario(base + "[energy_managers.main]\n")
    with pytest.raises(ConfigError, match="unknown key"):
        loads_scenario(base + "[energy_managers.hems]\nauto_acept = true\n")
    with pytest.raises(ConfigError, match="an energy manager"):
        loads_scenario(
            base
            + '[energy_managers.hems]\n[[timeline]]\nat = "10s"\naction = "open_pairing_window"\ntarget = "main"\n'
        )
    sc = loads_scenario(
        base
        + '[energy_managers.hems]\nstations = ["fleet"]\nauto_accept = true\npairing_window = "5m"\n'
        + '[[timeline]]\nat = "10s"\naction = "unpair"\ntarget = "hems"\nstation = "fleet-0002"\n'
    )
    spec = sc.energy_managers["hems"]
    assert (spec.stations, spec.auto_accept, spec.pairing_window, spec.station_trust) == (
        ("fleet",),
        True,
        300.0,
        "register",
    )


def test_controller_listener_with_client_auth_pairing() -> None:
    """A scenario controller with ``client_auth = "pairing"``: its stations present self-signed
    certificates, are refused until the pairing window at 30 s, then pair and boot through it."""
    text = """
[simulation]
duration = "3m"
[csms.main]
[controllers.site]
security_profile = 3
upstream = [{ csms = "main" }]
client_auth = "pairing"
pairing_window = "1m"
[stations.fleet]
count = 3
sessions = 0
endpoints = [{ controller = "site" }]
retry_backoff = { wait_minimum = "10s", random_range = "0s", repeat_times = 1 }
[[timeline]]
at = "30s"
action = "open_pairing_window"
target = "site"
"""
    result = run_scenario(loads_scenario(text))
    assert result.ok, (result.outcome, result.error)
    events = sorted(
        (e.as_json() for e in result.recorder.events), key=lambda e: (e["t"], e["node"], e["seq"])
    )
    rows = pairing_states(events)
    assert [(node, device, state) for node, device, _, state, _, _ in rows] == [
        ("site", f"fleet-{n:04d}", "paired") for n in range(1, 4)
    ]
    assert all(float(str(e["t"])) < 30 for e in events if e["kind"] == "pairing_requested")
    booted = {e["station"] for e in events if e["kind"] == "booted" and e["node"] == "main"}
    assert booted == {f"fleet-{n:04d}" for n in range(1, 4)}
    (table,) = pairing_tables(events)  # no energy manager: the states table only
    assert len(table.rows) == 3


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ('client_auth = "pairing"\n', "only security profile 3"),
        ("security_profile = 3\nauto_accept = true\n", 'needs client_auth = "pairing"'),
        ('security_profile = 3\nclient_auth = "pairing"\nclient_trust = "default"\n', "checks no CA"),
        ('security_profile = 3\nclient_auth = "pin"\n', "client_auth"),
    ],
)
def test_controller_pairing_keys_are_checked(extra: str, words: str) -> None:
    text = '[simulation]\nduration = "1m"\n[csms.main]\n[controllers.site]\nupstream = [{ csms = "main" }]\n'
    with pytest.raises(ConfigError) as info:
        loads_scenario(text + extra)
    assert words in str(info.value)
