"""The report tells the story: the scenario's description and expected outcome first, the check of the
outcome (``[expect]``) last, the Attacks table listing every attacker; all recomputed from the run directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from evsim.cli import main
from evsim.errors import ConfigError
from evsim.metrics.outcome import Expectation, outcome_checks, outcome_table, scenario_table
from evsim.metrics.rundir import rerender
from evsim.metrics.summary import summarize
from evsim.metrics.topology import Topology
from evsim.scenario.loader import loads_scenario

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"


def _ev(t: float, node: str, kind: str, **data: Any) -> dict[str, Any]:
    return {"t": t, "node": node, "seq": 0, "kind": kind, **data}


EVENTS = [
    _ev(0.0, "ST-1", "booted"),
    _ev(0.0, "main", "booted", station="ST-1"),
    _ev(
        0.0,
        "ST-2",
        "handshake_failed",
        reason="cert_invalid:unknown_ca",
        security_event="InvalidCsmsCertificate",
    ),
    _ev(1.0, "ST-1", "tx_started", tx="a"),
    _ev(2.0, "ST-1", "tx_ended", tx="a"),  # the CSMS never records it: a lost transaction
]


TOPOLOGY = Topology(groups={"ST-1": "fleet", "ST-2": "fleet"}, links={"fleet": "main"})


def _checks(expect: Expectation, events: list[dict[str, Any]] = EVENTS) -> dict[str, bool]:
    summary = summarize(events, TOPOLOGY)
    return {c.name: c.ok for c in outcome_checks(events, expect, summary=summary, topology=TOPOLOGY)}


def test_outcome_checks_pass_and_fail_from_the_events() -> None:
    failing = _checks(
        Expectation(
            all_booted=True,
            no_tx_lost=True,
            reasons=("downgrade_refused",),
            no_reasons=("cert_invalid:unknown_ca",),
            security_events=("InvalidTLSVersion",),
            kinds=("pin_promoted",),
        )
    )
    assert failing == {
        "run completed": True,
        "all stations booted": False,  # ST-2 never booted
        "no transaction lost": False,
        "reason downgrade_refused occurs": False,
        "reason cert_invalid:unknown_ca absent": False,
        "security event InvalidTLSVersion": False,
        "event pin_promoted occurs": False,
    }
    fixed = [
        *EVENTS,
        _ev(5.0, "ST-2", "booted"),
        _ev(1.5, "main", "tx_event", station="ST-1", tx="a", type="Started"),
        _ev(2.5, "main", "tx_event", station="ST-1", tx="a", type="Ended"),
    ]
    passing = _checks(
        Expectation(
            all_booted=True,
            no_tx_lost=True,
            reasons=("cert_invalid:unknown_ca",),
            no_reasons=("downgrade_refused",),
            security_events=("InvalidCsmsCertificate",),
            kinds=("tx_ended",),
        ),
        fixed,
    )
    assert all(passing.values()) and len(passing) == 7
    (completed,) = outcome_checks(EVENTS, None, summary=summarize(EVENTS), run_outcome="interrupted")
    assert not completed.ok and completed.evidence == "outcome: interrupted"
    table = outcome_table([completed], stated=False)
    assert table.title == "Outcome check (1 check(s) FAILED)" and "no [expect] table" in table.note


def test_expectation_round_trips_through_meta_json() -> None:
    e = Expectation(all_booted=True, reasons=("a", "b"))
    assert e.as_json() == {"all_booted": True, "reasons": ["a", "b"]}
    assert Expectation.from_json(json.loads(json.dumps(e.as_json()))) == e
    assert Expectation.from_json(None) is None
    assert scenario_table({}) is None
    long = scenario_table({"description": "d", "expected_outcome": "word " * 60})
    assert long is not None and [r[0] for r in long.rows] == ["description", "expected outcome", "", ""]


BASE = """
[simulation]
duration = "1m"
[csms.main]
[stations.fleet]
count = 1
"""


def test_the_expect_table_loads_and_refuses_unknown_keys() -> None:
    sc = loads_scenario(BASE + '[expect]\nall_booted = true\nreasons = ["link_lost"]\n')
    assert sc.simulation.expect == Expectation(all_booted=True, reasons=("link_lost",))
    assert loads_scenario(BASE).simulation.expect is None
    with pytest.raises(ConfigError, match="expect"):
        loads_scenario(BASE + "[expect]\nall_boted = true\n")


def test_the_report_opens_with_the_scenario_and_closes_with_the_checked_outcome(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(
            ["run", str(SCENARIOS / "wrong_ca_mitm.toml"), "--out", str(tmp_path), "--no-live", "--no-plots"]
        )
        == 0
    )
    printed = capsys.readouterr().out
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    summary = (run_dir / "summary.txt").read_text()
    assert summary.split("\n\n")[1].startswith("Scenario (what it is and what it should show)")
    assert "Impostor CSMS and man-in-the-middle relay" in summary.split("\n\n")[1]
    last = summary.rstrip().split("\n\n")[-1]
    assert last.startswith("Outcome check (as expected)")
    for check in (
        "all stations booted",
        "reason cert_invalid:unknown_ca occurs",
        "security event InvalidCsmsCertificate",
    ):
        assert check in last
    assert last in printed
    doc = json.loads((run_dir / "summary.json").read_text())
    keys = [t["key"] for t in doc["tables"]]
    assert keys[0] == "scenario" and keys[-1] == "outcome_check"
    # the Attacks table lists the impostor as well as the relay, recomputed from the events
    attacks = summary.split("Attacks\n", 1)[1].split("\n\n", 1)[0]
    assert "attacker-impostor  refused  peer_alert:unknown_ca" in attacks
    assert "attacker-mitm      refused  peer_alert:unknown_ca" in attacks
    # rebuilt from the run directory alone: the same report
    text, _ = rerender(run_dir, plots=False)
    assert text.rstrip() == summary.rstrip()
