"""``evsim explain RUN_DIR`` / ``evsim run --explain``: episodes and findings (pure), the references table, and
the story of the small shipped scenarios told from their run directories."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from evsim.cli import main
from evsim.explain.episodes import compress_names, findings, split_episodes
from evsim.explain.references import reference_for
from evsim.explain.run_story import build_story, render_text
from evsim.explain.run_story import main as explain_main
from evsim.metrics.rundir import load

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"


def _ev(t: float, node: str, kind: str, **data: Any) -> dict[str, Any]:
    return {"t": t, "node": node, "seq": 0, "kind": kind, **data}


ROLES = {"ST-1": "station", "ST-2": "station", "main": "csms", "timeline": "control"}


def test_episodes_start_at_zero_and_at_each_timeline_instant() -> None:
    events = [
        _ev(0.0, "ST-1", "booted"),
        _ev(60.0, "timeline", "partition", target="fleet"),
        _ev(61.0, "ST-1", "connection_lost", reason="link_lost"),
        _ev(61.0, "ST-2", "connection_lost", reason="link_lost"),
        _ev(120.0, "timeline", "heal", target="fleet"),
        _ev(121.0, "ST-1", "booted"),
    ]
    eps = split_episodes(events, ROLES, end=300.0)
    assert [(e.kind, e.start, e.end) for e in eps] == [
        ("start-up", 0.0, 60.0),
        ("outage", 60.0, 120.0),
        ("recovery", 120.0, 300.0),
    ]
    (lost,) = eps[1].findings
    assert (lost.side, lost.kind, lost.reason, lost.nodes, lost.count) == (
        "station",
        "connection_lost",
        "link_lost",
        ("ST-1", "ST-2"),
        2,
    )
    assert sum(len(e.events) for e in eps) == len(events)


def test_findings_leave_out_routine_traffic_and_name_attackers() -> None:
    events = [
        _ev(1.0, "main", "tx_event", station="ST-1"),
        _ev(1.0, "main", "tls_accepted"),
        _ev(2.0, "attacker-impostor", "handshake_failed", reason="peer_alert:unknown_ca", peer="ST-1:4000"),
        _ev(2.0, "ST-1", "handshake_failed", reason="cert_invalid:unknown_ca", security_event="X"),
        _ev(3.0, "ST-1", "reconnect_wait", seconds=5.0),
        _ev(9.0, "ST-1", "reconnect_wait", seconds=10.0),
    ]
    found = findings(events, {**ROLES, "attacker-impostor": "csms"})
    assert [(f.side, f.kind) for f in found] == [
        ("attacker", "handshake_failed"),
        ("station", "handshake_failed"),
        ("station", "reconnect_wait"),
    ]
    assert found[0].sample["peers"] == ["ST-1"]
    assert found[1].security_event == "X"
    assert (found[2].sample["seconds_min"], found[2].sample["seconds_max"]) == (5.0, 10.0)


def test_references_follow_reason_then_security_event_then_kind() -> None:
    unknown_ca = reference_for("handshake_failed", "tls:cert_invalid:unknown_ca")
    assert unknown_ca is not None and "RFC 5280 §6" in unknown_ca.source and "A00.FR.310" in unknown_ca.source
    downgrade = reference_for("handshake_failed", "downgrade_refused")
    assert downgrade is not None and "§4.1.3" in downgrade.source and "RFC 8446 §4.2.1" in downgrade.source
    alert = reference_for("handshake_failed", "peer_alert:certificate_expired")
    assert alert is not None and "RFC 8446 §6.2" in alert.source
    backoff = reference_for("reconnect_wait")
    assert backoff is not None and "RetryBackOffWaitMinimum" in backoff.source
    sec = reference_for("security_event_received", "", "InvalidChargingStationCertificate")
    assert sec is not None and "A00.FR.407" in sec.source
    hop = reference_for("upstream_lost", "link_lost")
    assert hop is not None and "§6.2-6.3 (Local Controller)" in hop.source
    assert reference_for("something_new", "nothing known") is None
    assert compress_names(["a", "b", "c"], limit=2) == "a, b and 1 more"


def _run(name: str, tmp_path_factory: pytest.TempPathFactory, *extra: str) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp(name)
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert (
            main(
                ["run", str(SCENARIOS / f"{name}.toml"), "--out", str(out), "--no-live", "--no-plots", *extra]
            )
            == 0
        )
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return run_dir, buf.getvalue()


@pytest.fixture(scope="module")
def mitm(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return _run("wrong_ca_mitm", tmp_path_factory, "--explain", "1")


@pytest.fixture(scope="module")
def downgrade(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return _run("tls_downgrade_attack", tmp_path_factory)


def test_the_mitm_story_names_both_attacks_the_refusals_and_their_rules(mitm: tuple[Path, str]) -> None:
    run_dir, _ = mitm
    story = build_story(load(run_dir), 2)
    assert [c.kind for c in story.chapters] == ["start-up", "attack", "recovery", "attack", "recovery"]
    text = render_text(story)
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["description"] in text
    assert " ".join(meta["expected_outcome"].split()) in text
    impostor, mitm_attack = story.chapters[1], story.chapters[3]
    for chapter, attacker in ((impostor, "attacker-impostor"), (mitm_attack, "attacker-mitm")):
        refused = [i for i in chapter.items if i.reason == "cert_invalid:unknown_ca"]
        assert len(refused) == 1 and refused[0].nodes == 5
        assert "no trust anchor" in refused[0].why and "trust store" in refused[0].knob
        assert refused[0].reference is not None and "RFC 5280 §6" in refused[0].reference.source
        assert (
            "back off" in refused[0].next and "InvalidCsmsCertificate, delivered to main" in refused[0].next
        )
        assert any(attacker in i.who and "no OCPP message" in i.next for i in chapter.items)
    recovered = story.chapters[2].items
    assert any(i.kind == "security_event_received" and i.nodes == 1 and "ST-" in i.who for i in recovered)
    assert "Outcome: as expected" in text
    assert "first:" in text and "handshake_failed reason=cert_invalid:unknown_ca" in text


def test_run_explain_prints_the_one_page_story_after_the_report(mitm: tuple[Path, str]) -> None:
    run_dir, printed = mitm
    report_end = printed.index(f"run directory: {run_dir}")
    story_at = printed.index("The story of wrong_ca_mitm")
    assert report_end < story_at
    assert printed[story_at:].rstrip() == render_text(build_story(load(run_dir), 1))
    assert "rule:" not in printed[story_at:]  # depth 1 tells, depth 2 cites


def test_depths_grow_and_depth_3_lists_every_handshake(
    downgrade: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir, _ = downgrade
    texts = {d: render_text(build_story(load(run_dir), d)) for d in (1, 2, 3)}
    assert len(texts[1]) < len(texts[2]) < len(texts[3])
    events = load(run_dir).events
    handshakes = [e for e in events if e["kind"] == "handshake_ok"]
    assert texts[3].count(" handshake_ok ") == len(handshakes) == 5
    assert "downgrade_refused" in texts[1] and "InvalidTLSVersion" in texts[2]
    assert "RFC 8446 §4.2.1" in texts[2] and "A00.FR.313-316" in texts[2]
    assert explain_main(argparse.Namespace(run_dir=str(run_dir), depth=2, json=True)) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["scenario"] == "tls_downgrade_attack" and doc["depth"] == 2
    attack = doc["episodes"][1]
    assert attack["kind"] == "attack" and attack["title"].startswith("attack_downgrade")
    assert {c["check"] for c in doc["outcome_check"]} >= {
        "reason downgrade_refused occurs",
        "all stations booted",
    }
    assert all(c["ok"] for c in doc["outcome_check"])


FAST = [
    "default",
    "partition_heal",
    "pin_rotation",
    "root_rollover",
    "station_revocation",
    "certificate_revocation",
]
SLOWER = ["certificate_expiry", "clock_drift_nts", "lc_upstream_failover", "multi_hop", "log_collection"]


@pytest.mark.parametrize("name", [*FAST, *(pytest.param(n, marks=pytest.mark.slow) for n in SLOWER)])
def test_each_small_shipped_scenario_tells_its_expected_outcome_and_the_events_proving_it(
    name: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    run_dir, _ = _run(name, tmp_path_factory)
    run = load(run_dir)
    story = build_story(run, 2)
    text = render_text(story)
    expected = " ".join(str(run.meta["expected_outcome"]).split())
    assert expected and f"What it should show: {expected}" in text
    # one episode for the start and one per instant the timeline acted
    instants = {e["t"] for e in run.events if e["node"] == "timeline" and e["kind"] != "certificate_not_sent"}
    assert len(story.chapters) == 1 + len(instants)
    # the outcome holds, and each stated expectation names the first event that proves it
    expect = run.meta["expect"]
    assert story.proofs and all(p.ok for p in story.proofs), [p for p in story.proofs if not p.ok]
    for p in story.proofs[1:]:
        if not p.check.startswith(("all stations", "no transaction")):
            assert p.first_event and f"first: {p.first_event.strip()}" in text
    # the narrative itself tells every expected failure reason, in the episode where it happened
    items = [i for c in story.chapters for i in c.items]
    for reason in expect.get("reasons", []):
        told = [i for i in items if i.reason == reason]
        assert told and all(i.why for i in told), reason
    one_page = render_text(build_story(run, 1))
    assert len(one_page.splitlines()) <= 60


def test_run_json_explain_carries_the_story(tmp_path_factory: pytest.TempPathFactory) -> None:
    run_dir, printed = _run("tls_downgrade_attack", tmp_path_factory, "--json", "--explain", "3")
    doc = json.loads(printed)
    assert doc["run_directory"] == str(run_dir)
    assert doc["story"] == build_story(load(run_dir), 3).as_json()
    assert doc["summary"]["tables"][-1]["key"] == "outcome_check"
