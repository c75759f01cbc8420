"""Lessons (scenarios/lessons): each runs, matches its golden log, shows the effect its README names, and its
README and scenario name the expected outcome; the README's "Configuring TLS" examples each show their effect.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from evsim.cli import main
from evsim.errors import ConfigError
from evsim.metrics.canonical import canonical_log
from evsim.recorder import Event
from evsim.scenario.golden import (
    GOLDEN_DIR,
    LESSONS_DIR,
    deterministic_events,
    golden_diff,
    golden_name,
    golden_path,
    golden_text,
    lessons,
)
from evsim.scenario.loader import load_scenario, loads_scenario
from evsim.scenario.runner import RunResult, preflight, run_scenario
from evsim.tls.knobs import KNOB_STATES

LESSONS = {p.parent.name: p for p in lessons()}
ROOT = LESSONS_DIR.parent.parent


@functools.cache
def _run(name: str) -> RunResult:
    result = run_scenario(load_scenario(LESSONS[name]))
    assert result.ok, (result.outcome, result.error)
    return result


def _of(r: RunResult, kind: str, node: str = "", **data: object) -> list[Event]:
    """Events of ``kind`` whose node starts with ``node`` and whose data has every given item."""
    return [
        e
        for e in r.recorder.of_kind(kind)
        if e.node.startswith(node) and all(e.data.get(k) == v for k, v in data.items())
    ]


def _nodes(events: list[Event]) -> set[str]:
    return {e.node for e in events}


# ---------------------------------------------------------------- the effect each lesson promises


def _basics(r: RunResult) -> None:
    ok = _of(r, "handshake_ok", "TRUST-", version="TLSv1.3", suite="TLS_AES_256_GCM_SHA384")
    assert _nodes(ok) == {"TRUST-01", "TRUST-02"}
    refused = _of(r, "handshake_failed", "STRANGER-", reason="cert_invalid:unknown_ca")
    assert len(refused) >= 3 and not _of(r, "handshake_ok", "STRANGER-") and not _of(r, "booted", "STRANGER-")


def _versions(r: RunResult) -> None:
    assert _nodes(_of(r, "handshake_ok", "MODERN-", version="TLSv1.3")) == {"MODERN-01", "MODERN-02"}
    legacy = _of(
        r, "handshake_failed", "LEGACY-", reason="downgrade_refused", security_event="InvalidTLSVersion"
    )
    assert len(legacy) >= 3 and not _of(r, "handshake_ok", "LEGACY-")
    attacks = _of(r, "attack_result", outcome="refused", reason="downgrade_refused")
    assert [e.t for e in attacks] == [60.0, 60.0]


def _ciphers(r: RunResult) -> None:
    t13 = _of(r, "handshake_ok", "T13-", version="TLSv1.3", suite="TLS_AES_256_GCM_SHA384")
    t12 = _of(r, "handshake_ok", "T12-", version="TLSv1.2", suite="TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384")
    assert _nodes(t13) == {"T13-01", "T13-02"} and _nodes(t12) == {"T12-01"}
    assert _of(
        r, "handshake_failed", "CHACHA-", reason="cipher_refused", security_event="InvalidTLSCipherSuite"
    )
    assert not _of(r, "handshake_ok", "CHACHA-")


def _roots(r: RunResult) -> None:
    refused = _of(r, "handshake_failed", "LEGACY-", reason="cert_invalid:unknown_ca")
    assert _nodes(refused) == {"LEGACY-01", "LEGACY-02"}
    assert all(180 < e.t < 360 for e in refused)  # after the switch and reset, before install_root
    assert _nodes([e for e in _of(r, "handshake_ok", "LEGACY-") if e.t > 360]) == {"LEGACY-01", "LEGACY-02"}
    assert not _of(r, "handshake_failed", "READY-")


def _pairing(r: RunResult) -> None:
    assert _nodes(_of(r, "handshake_ok", "ST-")) == {"ST-01", "ST-02", "ST-03"}  # mutual TLS to the CSMS
    pending = [e for e in _of(r, "pairing_requested", "hems", reason="pairing_refused:pending") if e.t < 60]
    assert {e.data["device"] for e in pending} == {"ST-01", "ST-02", "ST-03"}
    paired = _of(r, "paired", "hems")
    assert {e.data["device"] for e in paired if 60 < e.t < 120} == {"ST-01", "ST-02", "ST-03"}
    unknown = _of(r, "pairing_refused", "hems", device="ST-02", reason="pairing_refused:unknown")
    assert unknown and all(240 <= e.t < 360 for e in unknown)
    assert [e.t for e in paired if e.data["device"] == "ST-02" and e.t > 360]
    assert [e for e in _of(r, "ship_connected", "ST-02") if e.t > 360]


def _pins(r: RunResult) -> None:
    released = _of(r, "pin_released", "PIN-")
    assert _nodes(released) == {"PIN-01", "PIN-02"} and [e.t for e in released if e.t < 180] == [60.0, 60.0]
    promoted = _of(r, "pin_promoted")
    assert _nodes(promoted) == {"PIN-01", "PIN-02", "OBSERVE-01"} and all(180 < e.t < 300 for e in promoted)
    refused = _of(r, "pin_mismatch", "PIN-", refused=True)
    assert _nodes(refused) == {"PIN-01", "PIN-02"} and all(e.t > 360 for e in refused)
    assert _of(r, "pin_mismatch", "OBSERVE-", refused=False) and not _of(
        r, "pin_mismatch", "OBSERVE-", refused=True
    )


def _change(r: RunResult) -> None:
    assert _of(r, "peer_cert_changed", "LENIENT-", severity="info")
    assert _of(r, "peer_cert_changed", "STRICT-", severity="warn")
    assert _of(r, "peer_key_changed", "LENIENT-", refused=False, security_event="evsim:PeerKeyChanged")
    assert _of(r, "peer_key_changed", "STRICT-", refused=True, security_event="InvalidCsmsCertificate")
    assert _of(r, "handshake_failed", "STRICT-", reason="peer_key_changed")
    assert not [e for e in r.recorder.events if e.node.startswith("PLAIN-") and e.kind.startswith("peer_")]


def _records(r: RunResult) -> None:
    done = {e.node: e for e in _of(r, "transfer_done", status=200)}
    assert set(done) == {"SMALL-01", "SMALL-02", "FULL-01", "FULL-02"}
    assert len({e.data["bytes"] for e in done.values()}) == 1  # the same download
    small = min(e.t for n, e in done.items() if n.startswith("SMALL-"))
    full = max(e.t for n, e in done.items() if n.startswith("FULL-"))
    assert small - full > 10  # 64-byte records: a third more bytes on a 1200 B/s link


def _sessions(r: RunResult) -> None:
    for sid in ("TICKET-01", "TICKET-02"):
        resumed = [e.data["resumed"] for e in _of(r, "handshake_ok", sid)]
        assert resumed == [False, True, True, False, True], sid  # the 5 min lifetime ends before 6 min
    assert [e.data["resumed"] for e in _of(r, "handshake_ok", "PLAIN-")] == [False] * 5
    hasty = _of(r, "handshake_failed", "HASTY-")
    assert hasty and {e.data["reason"] for e in hasty} == {"timeout"} and not _of(r, "handshake_ok", "HASTY-")


def _revocation(r: RunResult) -> None:
    revoked = _of(
        r, "handshake_failed", reason="cert_invalid:revoked", security_event="InvalidCsmsCertificate"
    )
    assert _nodes(revoked) == {"CRL-01", "OCSP-01"} and all(180 < e.t < 300 for e in revoked)
    assert _nodes([e for e in _of(r, "handshake_ok") if e.t > 300]) >= {"CRL-01", "OCSP-01"}
    assert not _of(r, "handshake_failed", "NOCHECK-")


def _failover(r: RunResult) -> None:
    moved = [e for e in _of(r, "network_slot_switched", slot=1) if 60 < e.t < 240]
    assert _nodes(moved) == {"HOME-01", "HOME-02", "STICKY-01", "STICKY-02"}
    back = [e for e in _of(r, "network_slot_switched", slot=0) if e.t >= 360]
    assert _nodes(back) == {"HOME-01", "HOME-02"}
    stayed = [e for e in _of(r, "handshake_ok", "STICKY-", endpoint="secondary.evsim.test") if e.t >= 360]
    assert _nodes(stayed) == {"STICKY-01", "STICKY-02"}


def _rotation(r: RunResult) -> None:
    fleet = {"ST-01", "ST-02", "ST-03"}
    assert {e.data["station"] for e in _of(r, "certificate_signed", "main", status="Accepted")} == fleet
    assert _nodes(_of(r, "client_certificate_switched")) == fleet
    expired = _of(r, "handshake_failed", "ST-", reason="cert_invalid:expired")
    assert _nodes(expired) == fleet and all(240 <= e.t < 360 for e in expired)
    changed = _of(r, "peer_key_changed", "ST-", refused=False)
    assert _nodes(changed) == fleet and all(e.t > 360 for e in changed)


EFFECTS: dict[str, Callable[[RunResult], None]] = {
    "01_basics": _basics,
    "02_versions_downgrade": _versions,
    "03_cipher_suites": _ciphers,
    "04_root_ca_groups": _roots,
    "05_mutual_tls_pairing": _pairing,
    "06_pinning_release": _pins,
    "07_change_notification": _change,
    "08_record_size": _records,
    "09_resumption_timeouts": _sessions,
    "10_revocation": _revocation,
    "11_failover_endpoints": _failover,
    "12_certificate_rotation": _rotation,
}

KEY_EVENTS: dict[str, tuple[str, ...]] = {
    "01_basics": ("handshake_ok", "cert_invalid:unknown_ca"),
    "02_versions_downgrade": ("downgrade_refused",),
    "03_cipher_suites": ("cipher_refused",),
    "04_root_ca_groups": ("cert_invalid:unknown_ca", "install_root"),
    "05_mutual_tls_pairing": ("pairing_requested", "paired", "pairing_refused:unknown"),
    "06_pinning_release": ("pin_released", "pin_promoted", "pin_mismatch"),
    "07_change_notification": ("peer_cert_changed", "peer_key_changed"),
    "08_record_size": ("transfer_done",),
    "09_resumption_timeouts": ("resumed", "timeout"),
    "10_revocation": ("cert_invalid:revoked",),
    "11_failover_endpoints": ("network_slot_switched",),
    "12_certificate_rotation": ("certificate_signed", "cert_invalid:expired", "peer_key_changed"),
}
"""What each lesson's expected outcome names: its README's "Expected outcome:" line, its scenario's description
and outcome, and its ``evsim explain`` story must mention each of these."""

TOPICS = (
    "basics",
    "versions",
    "cipher",
    "root_ca",
    "pairing",
    "pinning",
    "change",
    "record_size",
    "resumption",
    "revocation",
    "failover",
    "rotation",
)
"""The topics of the TLS documents (issue 13 item 5), each in a lesson's directory name."""


def test_one_lesson_per_topic() -> None:
    assert set(LESSONS) == set(EFFECTS) == set(KEY_EVENTS)
    for topic in TOPICS:
        assert [n for n in LESSONS if topic in n], topic


def test_lessons_have_golden_logs_and_only_they() -> None:
    assert {golden_path(p) for p in LESSONS.values()} == set((GOLDEN_DIR / "lessons").glob("*.log"))
    assert golden_name(LESSONS["01_basics"]) == "lessons/01_basics"


@pytest.mark.parametrize("name", sorted(LESSONS))
def test_lesson_matches_its_golden_log(name: str) -> None:
    lines = canonical_log(deterministic_events(list(_run(name).recorder.events)))
    golden = golden_path(LESSONS[name]).read_text()
    assert golden_text(lines) == golden, (
        f"{name} no longer matches its golden log; if the change is intended, run python -m "
        f"evsim.scenario.golden --update lessons/{name} and review the diff:\n{golden_diff(golden, lines)}"
    )


@pytest.mark.parametrize("name", sorted(LESSONS))
def test_lesson_shows_its_effect(name: str) -> None:
    EFFECTS[name](_run(name))


@pytest.mark.parametrize("name", sorted(LESSONS))
def test_lesson_is_small(name: str) -> None:
    """A handful of stations for minutes of virtual time: a lesson runs in seconds (wall time is not asserted)."""
    sc = load_scenario(LESSONS[name])
    assert sc.station_count() <= 6 and sc.simulation.duration <= 15 * 60


@pytest.mark.parametrize("name", sorted(LESSONS))
def test_lesson_readme_and_scenario_name_the_expected_outcome(name: str) -> None:
    path = LESSONS[name]
    readme = (path.parent / "README.md").read_text()
    assert len([text for text in readme.splitlines() if text.startswith("Expected outcome:")]) == 1
    paragraph = readme.split("\nExpected outcome:", 1)[1].split("\n\n", 1)[0]
    sc = load_scenario(path)
    assert sc.simulation.description and sc.simulation.outcome
    for key in KEY_EVENTS[name]:
        assert key in paragraph, (name, key)
        assert key in sc.simulation.description + sc.simulation.outcome, (name, key)
    assert f"scenarios/lessons/{name}/lesson.toml" in readme  # what to run
    assert "**Questions.**" in readme and "\n## Answers\n" in readme
    assert readme.index("**Questions.**") < readme.index("## Answers")


_KNOB_MENTION = re.compile(
    r"`([a-z_.]+)` \((enforced|partial|declared)\b|\| `([a-z_.]+)` \| (enforced|partial|declared) \|"
)


def test_lesson_knob_states_match_the_engine() -> None:
    """A lesson that names a knob's state says what evsim/tls/knobs.py says."""
    seen = 0
    for path in LESSONS.values():
        for m in _KNOB_MENTION.finditer((path.parent / "README.md").read_text()):
            knob, state = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
            assert KNOB_STATES.get(knob) == state, (path.parent.name, knob, state)
            seen += 1
    assert seen >= 20
    assert "record.max_fragment_length" in (LESSONS["08_record_size"].parent / "README.md").read_text()


def test_the_lesson_index_lists_every_lesson() -> None:
    index = (LESSONS_DIR / "README.md").read_text()
    scenarios_readme = (LESSONS_DIR.parent / "README.md").read_text()
    for name in LESSONS:
        assert f"]({name}/README.md)" in index, name
        assert f"`lessons/{name}`" in scenarios_readme, name


@pytest.mark.skipif(
    importlib.util.find_spec("evsim.explain") is None
    or importlib.util.find_spec("evsim.explain.run_story") is None,
    reason="evsim explain (evsim/explain/run_story.py) is not in this tree yet; the integrator enables this check",
)
@pytest.mark.parametrize("name", sorted(LESSONS))
def test_lesson_explain_names_the_expected_outcome(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``evsim explain RUN_DIR`` of a lesson's run tells the story with the events that prove its outcome."""
    assert main(["run", str(LESSONS[name]), "--out", str(tmp_path), "--no-live", "--no-plots", "-q"]) == 0
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    capsys.readouterr()
    assert main(["explain", str(run_dir)]) == 0
    story = capsys.readouterr().out
    for key in KEY_EVENTS[name]:
        assert key in story, (name, key)


# ---------------------------------------------------------------- README "Configuring TLS": every example shows its effect


def _readme_tls_examples() -> list[tuple[str, str]]:
    """(topic, TOML) of each TOML example of the README's "Configuring TLS" section; the topic is the bold
    heading (``**Versions (anti-downgrade).**`` -> ``Versions``) of the paragraph the example belongs to."""
    section = (ROOT / "README.md").read_text().split("## Configuring TLS\n", 1)[1].split("\n## ", 1)[0]
    headings = [
        (m.start(), m.group(1).strip()) for m in re.finditer(r"^\*\*([^*.(]+)", section, re.MULTILINE)
    ]
    out = []
    for m in re.finditer(r"```toml\n(.*?)```", section, re.DOTALL):
        topic = [name for start, name in headings if start < m.start()][-1]
        out.append((topic, m.group(1)))
    return out


def _readme_run(toml: str) -> RunResult:
    r = run_scenario(loads_scenario('[simulation]\nduration = "1h"\n\n' + toml, source="README.md"))
    assert r.ok, (r.outcome, r.error)
    return r


def _after(events: list[Event], t: float) -> list[Event]:
    return [e for e in events if e.t >= t]


README_EFFECTS: dict[str, Callable[[RunResult], object]] = {
    "Versions": lambda r: _of(r, "attack_result", outcome="refused", reason="downgrade_refused"),
    "Cipher suites": lambda r: _of(
        r, "handshake_ok", "fleet-", version="TLSv1.3", suite="TLS_AES_256_GCM_SHA384"
    ),
    "CA groups": lambda r: (
        _of(r, "handshake_failed", "fleet-", reason="cert_invalid:unknown_ca")
        and _after(_of(r, "handshake_ok", "fleet-"), 600)
    ),
    "Pairing": lambda r: (
        _of(r, "pin_added", "fleet-") and _after(_of(r, "pin_mismatch", "fleet-", refused=True), 1200)
    ),
    "Pinning and release": lambda r: (
        _after(_of(r, "pin_promoted", "fleet-"), 1200) and _after(_of(r, "pin_released", "fleet-"), 2400)
    ),
    "Change notification": lambda r: _after(_of(r, "peer_cert_changed", "fleet-", severity="warn"), 1200),
    "Tickets and timeouts": lambda r: _of(r, "handshake_ok", "fleet-", resumed=True),
    "Certificate checks": lambda r: _after(
        _of(r, "handshake_failed", "fleet-", reason="cert_invalid:revoked"), 1800
    ),
}
"""What each topic's example must show in its run (the effect its paragraph names)."""


def test_every_readme_tls_example_has_a_checked_effect() -> None:
    topics = [topic for topic, _ in _readme_tls_examples()]
    assert set(topics) == {*README_EFFECTS, "Buffer size"}, topics


@pytest.mark.parametrize("index", range(len(_readme_tls_examples())))
def test_readme_tls_example_shows_its_effect(index: int) -> None:
    topic, toml = _readme_tls_examples()[index]
    if topic == "Buffer size":
        # records are not events: the paragraph points to lesson 08, whose effect test_lesson_shows_its_effect
        # checks; the refused example must not load, the other must run
        if toml.startswith("# refused"):
            with pytest.raises(ConfigError):
                preflight(loads_scenario('[simulation]\nduration = "1h"\n\n' + toml, source="README.md"))
            return
        assert _of(_readme_run(toml), "handshake_ok", "fleet-")
        section = (ROOT / "README.md").read_text().split("**Buffer size.**", 1)[1].split("```", 1)[0]
        assert "scenarios/lessons/08_record_size/lesson.toml" in section
        return
    assert README_EFFECTS[topic](_readme_run(toml)), topic
