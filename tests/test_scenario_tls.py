"""The TLS model in scenario files: [tls.pins], [tls.change], trust-store knobs, group references, the TLS
timeline actions, and what the runner does with them (one PeerPolicy per station, events on the wire)."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import trio
from OpenSSL import SSL

from evsim.errors import ConfigError
from evsim.scenario import vocabulary
from evsim.scenario.loader import loads_scenario
from evsim.scenario.model import PinSpec
from evsim.scenario.runner import RunResult, preflight, run_scenario
from evsim.tls import ClientTls, ServerTls, TlsProfile, TlsStream, context
from evsim.world.attacks import downgrade_profile
from tests.pki_fixtures import make_test_pki, tls_pair

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
PKI = make_test_pki()

PINNED = """\
[simulation]
duration = "30m"

[csms.main]
heartbeat_interval = "60s"

[tls.pins.leaf]
pins = [
  { target = "leaf", cert = "csms.main" },
  { target = "leaf", cert = "csms.main", key = "next", state = "pending" },
  { target = "root", root = "root", state = "backup" },
]

[tls.change.watch]
on_peer_key_change = "warn"
on_peer_cert_change_same_key = "warn"

[stations.fleet]
count = 2
sessions = 0
pins = "leaf"
change = "watch"
retry_backoff = { wait_minimum = "5s", random_range = "5s", repeat_times = 2 }
"""


def load_error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        loads_scenario(text, source="s.toml")
    return info.value


# ---------------------------------------------------------------- loading


def test_pins_change_and_group_references_load() -> None:
    s = loads_scenario(PINNED, source="s.toml")
    pins = s.pin_sets["leaf"]
    assert pins.enforcement == "enforce" and not pins.tofu
    assert pins.pins == (
        PinSpec(target="leaf", csms="main", key=0),
        PinSpec(target="leaf", state="pending", csms="main", key=1),
        PinSpec(target="root", state="backup", root="root"),
    )
    change = s.change_policies["watch"]
    assert (change.on_peer_key_change, change.on_peer_cert_change_same_key) == ("warn", "warn")
    assert (s.stations["fleet"].pins, s.stations["fleet"].change) == ("leaf", "watch")


def test_literal_pins_report_only_tofu_and_trust_modes() -> None:
    text = PINNED.replace(
        "[tls.change.watch]",
        '[tls.pins.lit]\nenforcement = "report_only"\n'
        'pins = [{ target = "any", spki_sha256 = "AB:' + "cd" * 31 + '", not_after = "10m" }]\n\n'
        "[tls.pins.first]\ntofu = true\n\n"
        '[tls.trust.tofu]\nmode = "tofu"\ntime_check = "off"\n\n[tls.change.watch]',
    ).replace('pins = "leaf"', 'pins = "first"\ntrust = "tofu"')
    s = loads_scenario(text, source="s.toml")
    (lit,) = s.pin_sets["lit"].pins
    assert lit.spki_sha256 == "ab" + "cd" * 31 and lit.not_after == 600
    assert s.pin_sets["lit"].enforcement == "report_only"
    assert s.trust_stores["tofu"].mode == "tofu" and s.trust_stores["tofu"].roots == ()
    assert s.trust_stores["tofu"].time_check == "off"


def test_release_pin_event_params() -> None:
    s = loads_scenario(
        PINNED + '\n[[timeline]]\nat = "1m"\naction = "release_pin"\ntarget = "fleet"\n'
        'cert = "csms.main"\nkey = "next"\n',
        source="s.toml",
    )
    (ev,) = s.timeline
    assert dict(ev.params) == {"target": "fleet", "cert": "csms.main", "key": 1}


BAD = [
    # (replace this, with this, line, field path, words in the message or fix)
    (
        'cert = "csms.main" },',
        'cert = "csms.mian" },',
        9,
        "tls.pins.leaf.pins[0].cert",
        "did you mean 'csms.main'",
    ),
    ('state = "pending"', 'state = "pendng"', 10, "tls.pins.leaf.pins[1].state", "did you mean 'pending'"),
    ('key = "next"', 'key = "later"', 10, "tls.pins.leaf.pins[1].key", '"next"'),
    ('key = "next"', "key = 99", 10, "tls.pins.leaf.pins[1].key", "0..16"),
    (
        '{ target = "leaf", cert = "csms.main" },',
        '{ target = "root", cert = "csms.main" },',
        9,
        "tls.pins.leaf.pins[0].target",
        "only ever the leaf",
    ),
    (
        '{ target = "root", root = "root"',
        '{ target = "intermediate", root = "root"',
        11,
        "tls.pins.leaf.pins[2].target",
        "name it with intermediate",
    ),
    ('root = "root", state', 'root = "rogue", state', 11, "tls.pins.leaf.pins[2].root", "undefined root"),
    (
        'root = "root", state',
        'root = "root", cert = "csms.main", state',
        11,
        "tls.pins.leaf.pins[2].root",
        "exactly one of cert, root, intermediate, spki_sha256",
    ),
    (
        '{ target = "leaf", cert = "csms.main" },',
        '{ target = "leaf", spki_sha256 = "abc" },',
        9,
        "tls.pins.leaf.pins[0].spki_sha256",
        "64 hex digits",
    ),
    (
        '{ target = "leaf", cert = "csms.main" },',
        '{ cert = "csms.main" },',
        9,
        "tls.pins.leaf.pins[0].target",
        "missing required key",
    ),
    (
        '{ target = "leaf", cert = "csms.main" },',
        '{ target = "leaf", cert = "csms.main", colour = 1 },',
        9,
        "tls.pins.leaf.pins[0].colour",
        "unknown key",
    ),
    # the TLS layer's own rules (PinSet), relocated to the file
    (
        '{ target = "leaf", cert = "csms.main" },',
        '{ target = "leaf", cert = "csms.main", state = "backup" },',
        8,
        "tls.pins.leaf.pins",
        "at least one active pin",
    ),
    (
        '{ target = "root", root = "root", state = "backup" },',
        '{ target = "leaf", cert = "csms.main" },',
        11,
        "tls.pins.leaf.pins[2].cert",
        "pinned twice",
    ),
    (
        'on_peer_key_change = "warn"',
        'on_peer_key_change = "wran"',
        15,
        "tls.change.watch.on_peer_key_change",
        "did you mean 'warn'",
    ),
    (
        'on_peer_key_change = "warn"',
        'on_key_change = "warn"',
        15,
        "tls.change.watch.on_key_change",
        "did you mean 'on_peer_key_change'",
    ),
    ('pins = "leaf"', 'pins = "lef"', 21, "stations.fleet.pins", "did you mean 'leaf'"),
    ('change = "watch"', 'change = "wach"', 22, "stations.fleet.change", "did you mean 'watch'"),
    (
        "[csms.main]",
        "[csms.main]\nsecurity_profile = 1\ninsecure_allow_plain_ws = true",
        11,
        "tls.pins.leaf.pins[0].cert",
        "security profile 1",
    ),
]


def test_bad_trust_modes_and_references() -> None:
    tofu_without_pins = PINNED + '\n[tls.trust.t]\nmode = "tofu"\n'
    text = tofu_without_pins.replace('pins = "leaf"\n', 'trust = "t"\n')
    err = load_error(text)
    assert err.path == "stations.fleet.trust" and "tofu" in err.message and "tofu = true" in err.fix
    err = load_error(PINNED + '\n[tls.trust.t]\nmode = "pinned_peers"\nroots = ["root"]\n')
    assert err.path == "tls.trust.t.roots" and err.line == 27
    err = load_error(PINNED + '\n[tls.trust.t]\nmode = "pki-ish"\n')
    assert err.path == "tls.trust.t.mode" and "did you mean 'pki'" in str(err)
    err = load_error(PINNED + '\n[tls.trust.t]\ntime_check = "sometimes"\n')
    assert err.path == "tls.trust.t.time_check"
    err = load_error(PINNED.replace("[csms.main]", "[csms.main]\nocsp_stapling = 1"))
    assert err.path == "csms.main.ocsp_stapling" and "boolean" in err.message


def test_bad_release_pin_events() -> None:
    event = '\n[[timeline]]\nat = "1m"\naction = "release_pin"\n'
    err = load_error(PINNED + event + 'target = "fleet"\nroot = "rogue"\n')
    assert err.path == "timeline[0].root" and "undefined root" in err.message
    err = load_error(PINNED + event + 'target = "fleet"\ncert = "csms.main"\nkey = 3\n')
    assert err.path == "timeline[0].cert" and "no pin for this key" in err.message
    err = load_error(PINNED + event + 'target = "main"\nroot = "root"\n')
    assert err.path == "timeline[0].target" and "station group" in str(err)
    err = load_error(PINNED.replace('pins = "leaf"\n', "") + event + 'target = "fleet"\nroot = "root"\n')
    assert err.path == "timeline[0].target" and "has no pin set" in err.message
    err = load_error(PINNED + event + 'target = "fleet"\n')
    assert err.path == "timeline[0]" and "exactly one of" in err.message


# ---------------------------------------------------------------- running


@functools.cache
def _run(text: str) -> RunResult:
    result = run_scenario(loads_scenario(text, source="run.toml"))
    assert result.ok, (result.outcome, result.error)
    return result


RESETS = '\n[[links]]\nbetween = ["fleet", "main"]\nreset = { every = "5m" }\n'


def _events(r: RunResult, kind: str) -> list[tuple[float, str]]:
    return [(e.t, e.node) for e in r.recorder.of_kind(kind)]


def _received(r: RunResult) -> list[str]:
    return [e["type"] for rec in r.csms["main"].stations.values() for e in rec.security_events]


def test_rotation_to_the_announced_key_promotes_the_pending_pin() -> None:
    r = _run(PINNED + RESETS + '\n[[timeline]]\nat = "7m"\naction = "rotate_certificate"\ntarget = "main"\n')
    promoted = _events(r, "pin_promoted")
    assert sorted(node for _, node in promoted) == ["fleet-0001", "fleet-0002"]
    assert all(600 <= t < 700 for t, _ in promoted)  # at the first reconnect after the 10 min reset
    assert len(_events(r, "peer_key_changed")) == 2  # the watch policy reports the key change, accepting it
    assert not r.recorder.of_kind("handshake_failed")
    received = _received(r)
    assert received.count("ReconfigurationOfSecurityParameters") == 4  # promoted + old leaf pin released, x2
    assert received.count("evsim:PeerKeyChanged") == 2
    assert all(st.connects_ok >= 3 for st in r.stations.values())  # start, 5 min and 10 min resets


def test_same_key_rotation_is_a_cert_change_and_an_unannounced_key_is_refused() -> None:
    text = (
        PINNED.replace('  { target = "root", root = "root", state = "backup" },\n', "")
        + RESETS
        + '\n[[timeline]]\nat = "7m"\naction = "rotate_certificate"\ntarget = "main"\nnew_key = false\n'
        + '\n[[timeline]]\nat = "12m"\naction = "rotate_certificate"\ntarget = "main"\n'
        + '\n[[timeline]]\nat = "13m"\naction = "rotate_certificate"\ntarget = "main"\n'
    )
    r = _run(text)
    changed = list(r.recorder.of_kind("peer_cert_changed"))
    assert sorted(e.node for e in changed) == ["fleet-0001", "fleet-0002"]
    assert all(600 <= e.t < 700 and e.data["severity"] == "warn" for e in changed)
    refusals = [e for e in r.recorder.of_kind("handshake_failed") if e.node.startswith("fleet")]
    assert refusals and {e.data["reason"] for e in refusals} == {"pin_mismatch"}
    assert all(e.t >= 900 for e in refusals)  # key 2 was never announced: refused from the 15 min reset on
    # the refusal is queued once per failure streak, never delivered (the stations stay refused)
    assert all(st.security_events_queued >= 1 for st in r.stations.values())
    assert "InvalidCsmsCertificate" not in _received(r)


def test_release_pin_takes_effect_on_the_next_connection() -> None:
    text = PINNED.replace(
        'pins = [\n  { target = "leaf", cert = "csms.main" },\n  { target = "leaf", cert = "csms.main", '
        'key = "next", state = "pending" },\n',
        'pins = [\n  { target = "leaf", cert = "csms.main" },\n',
    ).replace('{ target = "root", root = "root", state = "backup" }', '{ target = "root", root = "root" }')
    text += (
        RESETS + '\n[[timeline]]\nat = "7m"\naction = "release_pin"\ntarget = "fleet-0001"\nroot = "root"\n'
    )
    text += '\n[[timeline]]\nat = "8m"\naction = "release_pin"\ntarget = "fleet-0001"\ncert = "csms.main"\n'
    r = _run(text)
    released = _events(r, "pin_released")
    assert released == [(420.0, "fleet-0001"), (480.0, "fleet-0001")]
    # its connection stays up until the 10 min reset; then no live pin is left: refused
    refusals = [e for e in r.recorder.of_kind("handshake_failed") if e.node.startswith("fleet")]
    assert {e.node for e in refusals} == {"fleet-0001"} and min(e.t for e in refusals) >= 600
    assert {e.data["reason"] for e in refusals} == {"pin_mismatch"}
    assert r.stations["fleet-0002"].connects_ok >= 3  # its own pins, untouched


def test_report_only_mismatch_is_reported_once_per_key_and_lets_the_connection_through() -> None:
    text = (
        PINNED.replace("[tls.pins.leaf]", '[tls.pins.leaf]\nenforcement = "report_only"')
        .replace(
            '  { target = "leaf", cert = "csms.main" },\n  { target = "leaf", cert = "csms.main", key = "next", '
            'state = "pending" },\n',
            '  { target = "leaf", cert = "csms.main", key = "next" },\n',
        )
        .replace(', state = "backup" }', ', state = "backup", not_after = "1m" }')
    )
    r = _run(text + RESETS)
    mismatches = [e for e in r.recorder.of_kind("pin_mismatch") if e.node == "fleet-0001"]
    # the backup root pin matched the first connection; it expired after 1 min: every reset since mismatches
    assert [round(e.t // 300) for e in mismatches] == [1, 2, 3, 4, 5]
    assert all(not e.data["refused"] for e in mismatches)
    assert not r.recorder.of_kind("handshake_failed")
    assert _received(r).count("evsim:PinMismatch") == 2  # once per station for that key


def test_shipped_pin_rotation_outcome() -> None:
    r = run_scenario(
        loads_scenario((SCENARIOS / "pin_rotation.toml").read_text(), source="pin_rotation.toml")
    )
    assert r.ok, r.error
    promoted = {e.node for e in r.recorder.of_kind("pin_promoted")}
    assert promoted == {f"PIN-0{n}" for n in (1, 2, 3)} | {f"WATCH-0{n}" for n in (1, 2, 3)}
    refused = [e for e in r.recorder.of_kind("handshake_failed") if not e.node.startswith("main")]
    by_reason = {(e.node.split("-")[0], e.data["reason"]) for e in refused}
    assert by_reason == {("PIN", "pin_mismatch"), ("WATCH", "pin_mismatch"), ("STRICT", "peer_key_changed")}
    assert all(e.t >= 19 * 60 for e in refused if e.data["reason"] == "pin_mismatch")
    assert r.samples[-1].connected_stations == 0


def test_readme_documents_every_tls_model_key() -> None:
    readme = (SCENARIOS / "README.md").read_text()
    documented = {
        *vocabulary.PINSET_KEYS,
        *vocabulary.PIN_KEYS,
        *vocabulary.CHANGE_KEYS,
        *vocabulary.TRUST_KEYS,
    }
    documented |= {
        "ocsp_stapling",
        "pins",
        "change",
        "release_pin",
        "[tls.pins.<name>]",
        "[tls.change.<name>]",
    }
    missing = [key for key in sorted(documented) if f"`{key}`" not in readme]
    assert not missing


def _readme_tls_examples() -> list[str]:
    readme = (SCENARIOS.parent / "README.md").read_text()
    section = readme.split("## Configuring TLS\n", 1)[1].split("\n## ", 1)[0]
    return [block.split("```", 1)[0] for block in section.split("```toml\n")[1:]]


def test_the_readme_tls_section_has_an_example_per_topic() -> None:
    readme = (SCENARIOS.parent / "README.md").read_text()
    section = readme.split("## Configuring TLS\n", 1)[1].split("\n## ", 1)[0]
    for topic in ("Versions", "Cipher suites", "CA groups", "Pairing", "Pinning and release",
                  "Change notification", "Buffer size", "Tickets and timeouts", "Certificate checks"):  # fmt: skip
        assert f"**{topic}" in section, topic
    assert len(_readme_tls_examples()) >= 9


@pytest.mark.parametrize("index", range(len(_readme_tls_examples())))
def test_readme_tls_examples_load_and_run_preflight(index: int) -> None:
    example = _readme_tls_examples()[index]
    text = '[simulation]\nduration = "1h"\n\n' + example
    if example.startswith("# refused"):
        with pytest.raises(ConfigError) as info:
            preflight(loads_scenario(text, source="README.md"))
        assert example.splitlines()[0].removeprefix("# refused: ") in str(info.value)
        return
    preflight(loads_scenario(text, source="README.md"))


# ---------------------------------------------------------------- engine knobs: profiles, trust, revocation

KNOBS = """\
[simulation]
duration = "30m"

[tls.profiles.p]
groups = ["X25519", "secp256r1"]
signature_algorithms = ["ecdsa_secp256r1_sha256"]
alpn = ["ocpp"]
suite_preference = "client"
session = { resumption = "tickets", lifetime = "30m", cache_entries = 100 }
record = { max_fragment_length = 2048, record_size_limit = 2048 }
max_send_fragment = 1024
enforce = ["record.max_send_fragment", "alpn"]

[tls.trust.checked]
revocation = { crl = "leaf", ocsp = "request", on_unknown = "soft_fail" }
max_depth = 2
time_check = "skip_until_clock_synced"

[csms.main]
tls_profile = "p"
ocsp_stapling = true

[stations.fleet]
count = 2
sessions = 0
tls_profile = "p"
trust = "checked"
"""


def test_profile_engine_knobs_load_into_the_tls_layers_profile() -> None:
    s = loads_scenario(KNOBS, source="s.toml")
    tls = s.tls_profiles["p"].tls
    assert tls is not None
    assert (tls.groups, tls.signature_algorithms, tls.alpn) == (
        ("X25519", "secp256r1"),
        ("ecdsa_secp256r1_sha256",),
        ("ocpp",),
    )
    assert tls.suite_preference == "client" and not tls.alpn_require
    assert (tls.session.resumption, tls.session.lifetime_s, tls.session.cache_entries) == (
        "tickets",
        1800,
        100,
    )
    assert (tls.max_send_fragment, tls.max_fragment_length, tls.record_size_limit) == (1024, 2048, 2048)
    assert tls.enforce == ("record.max_send_fragment", "alpn")
    trust = s.trust_stores["checked"]
    assert (trust.crl, trust.ocsp, trust.on_unknown, trust.max_depth) == ("leaf", "request", "soft_fail", 2)
    assert trust.time_check == "skip_until_clock_synced"
    assert s.csms["main"].ocsp_stapling
    assert s.tls_profiles["default"].tls is None  # built in code: the runner's defaults


KNOB_ERRORS = [
    (
        '"X25519", "secp256r1"',
        '"X25519", "secp256r2"',
        5,
        "tls.profiles.p.groups[1]",
        "did you mean 'secp256r1'",
    ),
    ('"ecdsa_secp256r1_sha256"]', '"ecdsa_sha1"]', 6, "tls.profiles.p.signature_algorithms[0]", "unknown"),
    ('"alpn"]', '"record.max_fragment_length"]', 12, "tls.profiles.p.enforce[1]", "cannot enforce"),
    ('"alpn"]', '"alpm"]', 12, "tls.profiles.p.enforce[1]", "unknown knob"),
    (
        "[tls.profiles.p]",
        '[tls.profiles.p]\nversions = ["1.2", "1.3"]',
        5,
        "tls.profiles.p.versions",
        "newest first",
    ),
    ('"alpn"]', '"versions.order"]', 12, "tls.profiles.p.enforce[1]", "ClientHello callback"),
    ('lifetime = "30m"', 'lifetime = "30d"', 9, "tls.profiles.p.session.lifetime", "seven days"),
    ('resumption = "tickets"', 'resumption = "ticket"', 9, "tls.profiles.p.session.resumption", "'tickets'"),
    ("cache_entries = 100", "cache_entry = 100", 9, "tls.profiles.p.session.cache_entry", "'cache_entries'"),
    ('alpn = ["ocpp"]', "alpn_require = true", 7, "tls.profiles.p.alpn_require", "no ALPN protocol"),
    (
        "max_fragment_length = 2048",
        "max_fragment_length = 3000",
        10,
        "tls.profiles.p.record.max_fragment_length",
        "RFC 6066",
    ),
    (
        "record = { max_fragment_length",
        "record = { max_send_fragment = 512, max_fragment_length",
        10,
        "tls.profiles.p.record.max_send_fragment",
        "given twice",
    ),
    (
        "max_send_fragment = 1024",
        "max_send_fragment = 10",
        11,
        "tls.profiles.p.max_send_fragment",
        "64..16384",
    ),
    (
        'suite_preference = "client"',
        'suite_preference = "clients"',
        8,
        "tls.profiles.p.suite_preference",
        "'client'",
    ),
    ('crl = "leaf"', 'crl = "leafs"', 15, "tls.trust.checked.revocation.crl", "did you mean 'leaf'"),
    ('ocsp = "request"', 'ocsp = "required"', 15, "tls.trust.checked.revocation.ocsp", "'require'"),
    (
        'on_unknown = "soft_fail"',
        'unknown = "fail"',
        15,
        "tls.trust.checked.revocation.unknown",
        "on_unknown",
    ),
    ("max_depth = 2", "max_depth = 101", 16, "tls.trust.checked.max_depth", "0..100"),
    ("ocsp_stapling = true", 'ocsp_stapling = "yes"', 21, "csms.main.ocsp_stapling", "boolean"),
]


LOCATED = [(PINNED, *case) for case in BAD] + [(KNOBS, *case) for case in KNOB_ERRORS]


@pytest.mark.parametrize(
    ("base", "old", "new", "line", "path", "words"), LOCATED, ids=[c[4] + ":" + c[5] for c in LOCATED]
)
def test_bad_tls_model_values_name_file_line_field_and_fix(
    base: str, old: str, new: str, line: int, path: str, words: str
) -> None:
    """Each bad value of a new table (pins, change, trust knobs, profile engine knobs) is located."""
    assert old in base
    err = load_error(base.replace(old, new, 1))
    assert (err.file, err.line, err.path) == ("s.toml", line, path), str(err)
    assert words in str(err)
    assert err.fix


def test_revocation_needs_a_ca() -> None:
    text = KNOBS.replace("[tls.trust.checked]", '[tls.trust.checked]\nmode = "tofu"')
    err = load_error(text)
    assert err.path == "tls.trust.checked.revocation" and "no CA" in err.message


def test_sessions_are_resumed_only_with_a_session_table() -> None:
    base = PINNED.replace(
        "[tls.pins.leaf]", '[tls.profiles.resume]\nsession = { resumption = "both" }\n\n[tls.pins.leaf]'
    ).replace('pins = "leaf"', 'pins = "leaf"\ntls_profile = "resume"')
    r = _run(base + RESETS)
    resumed = [e.data["resumed"] for e in r.recorder.of_kind("handshake_ok") if e.node == "fleet-0001"]
    assert resumed[0] is False and all(resumed[1:]) and len(resumed) >= 5
    plain = _run(PINNED + RESETS)
    assert not any(e.data["resumed"] for e in plain.recorder.of_kind("handshake_ok"))


def test_revoked_csms_certificate_is_refused_by_crl_and_ocsp_stations_only() -> None:
    r = run_scenario(
        loads_scenario(
            (SCENARIOS / "certificate_revocation.toml").read_text(), source="certificate_revocation"
        )
    )
    assert r.ok, r.error
    refused = [e for e in r.recorder.of_kind("handshake_failed") if e.node != "main"]
    assert {e.node.split("-")[0] for e in refused} == {"CRL", "OCSP"}
    assert {e.data["reason"] for e in refused} == {"cert_invalid:revoked"}
    assert all(600 <= e.t < 1200 for e in refused)  # between the revocation and the new certificate
    plain = {e.node for e in r.recorder.of_kind("handshake_ok") if 600 <= e.t < 1200}
    assert plain == {"PLAIN-01", "PLAIN-02"}  # no revocation check: still connecting to a revoked certificate
    received = list(r.recorder.of_kind("security_event_received"))
    assert sorted(e.data["station"] for e in received) == sorted(
        [f"CRL-0{n}" for n in (1, 2, 3)] + [f"OCSP-0{n}" for n in (1, 2, 3)]
    )
    assert all(e.data["type"] == "InvalidCsmsCertificate" and e.t >= 1200 for e in received)
    assert {e.node for e in r.recorder.of_kind("handshake_ok") if e.t >= 1200} == set(r.stations)


def test_revocation_leaves_open_connections_alone_and_unchecked_stores_ignore_it() -> None:
    text = (
        KNOBS.replace('ocsp = "request", on_unknown = "soft_fail"', 'ocsp = "off"')
        .replace('enforce = ["record.max_send_fragment", "alpn"]', "")
        .replace('alpn = ["ocpp"]\n', "")
    )
    text += '\n[[timeline]]\nat = "5m"\naction = "revoke_certificate"\ntarget = "main"\n'
    r = _run(text)  # no resets: the connections made at the start survive the revocation
    assert not r.recorder.of_kind("handshake_failed")
    assert r.samples[-1].connected_stations == 2
    with_reset = _run(
        text + '\n[[timeline]]\nat = "6m"\naction = "partition"\nbetween = ["fleet", "main"]\n'
        '\n[[timeline]]\nat = "7m"\naction = "heal"\nbetween = ["fleet", "main"]\n'
    )
    reasons = {e.data["reason"] for e in with_reset.recorder.of_kind("handshake_failed") if e.node != "main"}
    assert reasons == {"cert_invalid:revoked"}


def test_preflight_accepts_revoking_station_certificates() -> None:
    text = PINNED + '\n[[timeline]]\nat = "1m"\naction = "revoke_certificate"\ntarget = "fleet"\n'
    preflight(loads_scenario(text, source="r.toml"))  # the CSMS's client trust decides what it means


def test_tofu_pins_the_first_csms_key_and_refuses_a_new_one() -> None:
    text = PINNED.replace(
        "[tls.pins.leaf]",
        '[tls.trust.first]\nmode = "tofu"\n\n[tls.pins.learned]\ntofu = true\n\n[tls.pins.leaf]',
    ).replace('pins = "leaf"\nchange = "watch"', 'pins = "learned"\ntrust = "first"')
    r = _run(text + RESETS + '\n[[timeline]]\nat = "7m"\naction = "rotate_certificate"\ntarget = "main"\n')
    added = list(r.recorder.of_kind("pin_added"))
    assert sorted(e.node for e in added) == ["fleet-0001", "fleet-0002"] and all(e.t < 1 for e in added)
    refusals = [e for e in r.recorder.of_kind("handshake_failed") if e.node.startswith("fleet")]
    assert refusals and {e.data["reason"] for e in refusals} == {"pin_mismatch"}
    assert min(e.t for e in refusals) >= 600  # the learned key served until the rotation met a reconnect


def test_trust_knobs_reach_each_stations_trust_store() -> None:
    """max_depth, time_check and the revocation policy arrive in the compiled ClientTls (scenario CSMS chains are
    leaf + root, within any max_depth, so no scenario run can show a depth refusal: checked here by value)."""
    text = PINNED.replace(
        "[tls.pins.leaf]",
        '[tls.trust.shallow]\nmax_depth = 0\ntime_check = "off"\nrevocation = { crl = "chain", ocsp = "request" }\n\n'
        "[tls.pins.leaf]",
    ).replace('pins = "leaf"\nchange = "watch"', 'trust = "shallow"')
    r = _run(text)
    client_tls = r.stations["fleet-0001"].client_tls
    assert client_tls is not None
    trust = client_tls.trust
    assert (trust.max_depth, trust.time_check) == (0, "off")
    assert (trust.revocation.crl, trust.revocation.ocsp, len(trust.revocation.crls)) == (
        "chain",
        "request",
        1,
    )
    assert r.recorder.counts["handshake_ok"] >= 2


MUTUAL = """\
[simulation]
duration = "20m"

[tls.change.strict]
on_peer_key_change = "reject"

[tls.pins.operator_root]
pins = [{ target = "root", root = "root" }]

[csms.main]
security_profile = 3
change = "strict"
pins = "operator_root"

[stations.fleet]
count = 2
sessions = 0
retry_backoff = { wait_minimum = "5s", random_range = "5s", repeat_times = 2 }

[[links]]
between = ["fleet", "main"]
reset = { every = "5m" }

[[timeline]]
at = "7m"
action = "rotate_certificate"
target = "fleet-0001"
"""


def test_csms_checks_station_certificates_with_its_own_pins_and_change_policy() -> None:
    s = loads_scenario(MUTUAL, source="m.toml")
    assert (s.csms["main"].pins, s.csms["main"].change) == ("operator_root", "strict")
    r = _run(MUTUAL)
    refused = [e for e in r.recorder.of_kind("peer_key_changed") if e.node == "main"]
    assert refused and all(e.data["refused"] and e.data["peer"] == "fleet-0001" for e in refused)
    assert min(e.t for e in refused) >= 600  # the station's new key, met at the 10 min reset
    assert all(e.data["security_event"] == "InvalidChargingStationCertificate" for e in refused)
    assert not [e for e in r.recorder.of_kind("peer_key_changed") if e.data["peer"] == "fleet-0002"]
    assert r.stations["fleet-0002"].connects_ok >= 4  # start and three resets, its key unchanged


@pytest.mark.parametrize(
    ("old", "new", "path", "words"),
    [
        ("security_profile = 3\n", "", "csms.main.pins", "security profile 3"),
        ('pins = "operator_root"', 'pins = "operator_rot"', "csms.main.pins", "did you mean 'operator_root'"),
        ('change = "strict"', 'change = "stict"', "csms.main.change", "did you mean 'strict'"),
        (
            'root = "root" }]',
            'root = "root" }, { target = "leaf", cert = "csms.main" }]',
            "csms.main.pins",
            "checks station certificates",
        ),
    ],
)
def test_bad_csms_pins_and_change(old: str, new: str, path: str, words: str) -> None:
    assert old in MUTUAL
    err = load_error(MUTUAL.replace(old, new, 1))
    assert err.path == path and words in str(err), str(err)
    assert err.line is not None and err.fix


# ---------------------------------------------------------------- pins on every network-profile slot

FAILOVER_PINNED = """\
[simulation]
duration = "10m"

[pki.roots.backup]

[tls.trust.both]
roots = ["root", "backup"]

[tls.pins.primary_only]
pins = [{ target = "leaf", cert = "csms.primary" }]

[tls.pins.both_keys]
pins = [{ target = "leaf", cert = "csms.primary" }, { target = "leaf", cert = "csms.secondary" }]

[csms.primary]
heartbeat_interval = "60s"

[csms.secondary]
secondary_of = "primary"
heartbeat_interval = "60s"
certificate = { root = "backup" }

[stations.fleet]
count = 2
sessions = 0
endpoints = [{ csms = "primary", priority = 1 }, { csms = "secondary", priority = 2, trust = "both" }]
network_attempts = 1
pins = "PINS"
retry_backoff = { wait_minimum = "2s", random_range = "2s", repeat_times = 2 }

[[timeline]]
at = "60s"
action = "stop"
target = "primary"
"""


@pytest.mark.parametrize(("pins", "moved"), [("primary_only", False), ("both_keys", True)])
def test_group_pins_apply_on_a_slot_with_its_own_tls_settings(pins: str, moved: bool) -> None:
    """The secondary's slot has its own trust store (so its own TLS bundle): the station's pins must still
    be checked there. Pinning only the primary's key refuses the secondary with pin_mismatch."""
    r = run_scenario(loads_scenario(FAILOVER_PINNED.replace("PINS", pins), source="run.toml"))
    refused = [e for e in r.recorder.of_kind("handshake_failed") if e.data.get("reason") == "pin_mismatch"]
    host = r.scenario.csms["secondary"].host
    secondary = {e.node for e in r.recorder.of_kind("handshake_ok") if e.data.get("endpoint") == host}
    if moved:
        assert not refused
        assert secondary == {"fleet-0001", "fleet-0002"}
    else:
        assert {e.node for e in refused} == {"fleet-0001", "fleet-0002"}
        assert not secondary


def test_readme_pairing_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """The README's Python pairing example runs and prints the verdicts its comments promise."""
    readme = (SCENARIOS.parent / "README.md").read_text()
    section = readme.split("## Configuring TLS\n", 1)[1].split("\n## ", 1)[0]
    (code,) = [block.split("```", 1)[0] for block in section.split("```python\n")[1:]]
    exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})  # our own README block
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":", 1)[1].strip() for line in lines[:4]] == [
        "pairing_refused:pending",
        "ok",
        "ok",
        "pairing_refused:denied",
    ]
    assert lines[4] == "['pairing_requested', 'paired', 'unpaired', 'pairing_refused']"


def test_an_endpoint_with_its_own_pins_is_checked_with_them() -> None:
    """Group pins name only the primary's key; the secondary endpoint brings its own pin set, so the move
    succeeds; with a wrong own pin set it is refused (its own pins, not the group's, decide)."""
    text = FAILOVER_PINNED.replace("PINS", "primary_only")
    ok = text.replace('trust = "both" }', 'trust = "both", pins = "secondary_key" }') + (
        '\n[tls.pins.secondary_key]\npins = [{ target = "leaf", cert = "csms.secondary" }]\n'
    )
    wrong = text.replace('trust = "both" }', 'trust = "both", pins = "other" }') + (
        '\n[tls.pins.other]\npins = [{ target = "leaf", cert = "csms.primary", key = "next" }]\n'
    )
    host = loads_scenario(text, source="run.toml").csms["secondary"].host
    for variant, moved in ((ok, True), (wrong, False)):
        r = run_scenario(loads_scenario(variant, source="run.toml"))
        on_secondary = {e.node for e in r.recorder.of_kind("handshake_ok") if e.data.get("endpoint") == host}
        refused = {
            e.node for e in r.recorder.of_kind("handshake_failed") if e.data.get("reason") == "pin_mismatch"
        }
        assert on_secondary == ({"fleet-0001", "fleet-0002"} if moved else set())
        assert refused == (set() if moved else {"fleet-0001", "fleet-0002"})


@pytest.mark.parametrize(
    ("old", "new", "field", "message"),
    [
        ('trust = "both" }', 'trust = "both", pins = "nope" }', "stations.fleet.endpoints[1].pins", "nope"),
        ('pins = "PINS"\n', "", "stations.fleet.endpoints[1].trust", "needs pins"),
    ],
)
def test_endpoint_pins_errors_name_the_field(old: str, new: str, field: str, message: str) -> None:
    text = FAILOVER_PINNED.replace(old, new).replace("PINS", "primary_only")
    assert text != FAILOVER_PINNED.replace("PINS", "primary_only")
    if "needs pins" in message:
        text = text.replace('[tls.trust.both]\nroots = ["root", "backup"]', '[tls.trust.both]\nmode = "tofu"')
    err = load_error(text)
    assert field in str(err) and message in str(err)


# ---------------------------------------------------------------- downgrade attacks with legacy versions

LEGACY_DOWNGRADE = """\
[simulation]
duration = "3m"

[csms.main]

[stations.honest]
count = 1
sessions = 0

[[timeline]]
at = "1m"
action = "attack_downgrade"
target = "main"
count = 2
versions = {versions}
"""


@pytest.mark.parametrize("versions", ['["1.0"]', '["1.1"]', '["1.1", "1.0"]'])
def test_legacy_downgrade_attack_runs_and_is_refused(versions: str) -> None:
    r = _run(LEGACY_DOWNGRADE.format(versions=versions))
    assert r.outcome == "completed"
    attacks = r.recorder.of_kind("attack_result")
    assert [(e.data["outcome"], e.data["reason"]) for e in attacks] == [("refused", "downgrade_refused")] * 2
    csms_side = [e for e in r.recorder.of_kind("handshake_failed") if e.node == "main"]
    assert [(e.data["reason"], e.data["security_event"]) for e in csms_side] == [
        ("downgrade_refused", "InvalidTLSVersion")
    ] * 2


@pytest.mark.parametrize(("versions", "negotiated"), [(("1.0",), "TLSv1"), (("1.1",), "TLSv1.1")])
async def test_the_downgrade_attacker_really_offers_the_legacy_version(
    versions: tuple[str, ...], negotiated: str
) -> None:
    """Against a (deliberately weak) server that still allows it, the attacker negotiates its legacy version:
    the refusals above are the honest CSMS refusing the version, not the attacker failing to speak it."""
    weak = TlsProfile(
        versions=("1.2", "1.1", "1.0"),
        insecure_legacy_versions=True,
        cipher_suites={"1.2": ["TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", "TLS_RSA_WITH_AES_128_CBC_SHA"]},
    )
    with trio.fail_after(10):
        c, s = await tls_pair(
            ClientTls.build(downgrade_profile(versions), PKI.csms_trust()),
            ServerTls.build(weak, PKI.server_identity()),
        )
    assert isinstance(c, TlsStream) and isinstance(s, TlsStream)
    assert c.info.version == s.info.version == negotiated


def test_a_build_without_legacy_tls_refuses_the_attack_at_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    """An OpenSSL built without TLS 1.0/1.1 (simulated with OP_NO_TLSv1*) cannot send the attacker's
    ClientHello: preflight says so, with the field and the fix, before anything runs."""
    base = context._base_context

    def no_legacy(*args: object, **kwargs: object) -> SSL.Context:
        ctx = base(*args, **kwargs)  # type: ignore[arg-type]
        ctx.set_options(SSL.OP_NO_TLSv1 | SSL.OP_NO_TLSv1_1)
        return ctx

    monkeypatch.setattr(context, "_base_context", no_legacy)
    context.check_client_hello.cache_clear()
    try:
        sc = loads_scenario(LEGACY_DOWNGRADE.format(versions='["1.0"]'), source="s.toml")
        with pytest.raises(ConfigError) as info:
            preflight(sc)
        err = info.value
        assert err.path == "timeline[0].versions" and err.file == "s.toml" and err.line
        assert "cannot offer TLS 1.0" in err.message and "no protocols available" in err.message
        assert "TLS 1.2 or 1.3" in err.fix
        preflight(loads_scenario(LEGACY_DOWNGRADE.format(versions='["1.2"]'), source="s.toml"))
    finally:
        context.check_client_hello.cache_clear()
