"""Certificate pins (sans-IO): validation, TOML loading, target semantics, enforcement, transitions, history."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import tomllib
from typing import cast

import attrs
import pytest
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from evsim.errors import ConfigError
from evsim.pki import CertificateAuthority
from evsim.tls import events
from evsim.tls.pins import (
    ENFORCEMENTS,
    ORIGINS,
    PIN_ADDED,
    STATES,
    TARGETS,
    Pin,
    PinEvent,
    PinSet,
    add_tofu,
    as_utc,
    changes,
    check,
    expire,
    is_self_signed,
    promote_pending,
    release,
    repin,
    spki_hex,
)

NOW = dt.datetime(2030, 6, 1, 12, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)

ROOT = CertificateAuthority.create_root("Pin Test Root", now=NOW)
SUB = ROOT.create_sub_ca("Pin Test Sub", now=NOW)
LEAF = SUB.issue_server("csms.evsim.test", now=NOW)
LEAF_NEW_KEY = SUB.issue_server("csms.evsim.test", now=NOW)
LEAF_SAME_KEY = SUB.issue_server("csms.evsim.test", now=NOW, key=LEAF.key)
OTHER_ROOT = CertificateAuthority.create_root("Other Root", now=NOW)
OTHER_LEAF = OTHER_ROOT.issue_server("evil.evsim.test", now=NOW)
RSA_ROOT = CertificateAuthority.create_root("RSA Root", now=NOW, key_type="rsa")


def ed25519_self_signed() -> x509.Certificate:
    """A key type evsim.pki does not issue (cryptography loads it; OCPP does not use it)."""
    key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ed25519")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - DAY)
        .not_valid_after(NOW + DAY)
        .sign(key, None)
    )


ED25519 = ed25519_self_signed()

CHAIN = LEAF.chain  # (leaf, sub): what the peer sends
VERIFIED = (LEAF.cert, SUB.cert, ROOT.cert)  # what OpenSSL verified


def h(cert: x509.Certificate) -> str:
    value = spki_hex(cert)
    assert value is not None
    return value


H_LEAF, H_SUB, H_ROOT = h(LEAF.cert), h(SUB.cert), h(ROOT.cert)
H_NEW, H_OTHER = h(LEAF_NEW_KEY.cert), h(OTHER_LEAF.cert)


def pinset(*pins: Pin, enforcement: str = "enforce", tofu: bool = False) -> PinSet:
    return PinSet(enforcement, pins, (), tofu)  # type: ignore[arg-type]  # tests pass literal strings


# ---------------------------------------------------------------- helpers


def test_spki_hex_matches_openssl_style_sha256_of_spki() -> None:
    der = LEAF.cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert hashlib.sha256(der).hexdigest() == H_LEAF
    assert h(LEAF_SAME_KEY.cert) == H_LEAF != H_NEW


def test_spki_hex_is_none_for_unloadable_key() -> None:
    class Unloadable:
        def public_key(self) -> object:
            raise UnsupportedAlgorithm("unknown key algorithm")

    assert spki_hex(cast(x509.Certificate, Unloadable())) is None


def test_is_self_signed() -> None:
    assert is_self_signed(ROOT.cert) and is_self_signed(RSA_ROOT.cert) and is_self_signed(ED25519)
    assert not is_self_signed(SUB.cert)
    assert not is_self_signed(LEAF.cert)


def test_as_utc_takes_naive_as_utc() -> None:
    naive = dt.datetime(2030, 1, 1, 10, 0)
    assert as_utc(naive) == dt.datetime(2030, 1, 1, 10, 0, tzinfo=dt.UTC)
    cet = dt.datetime(2030, 1, 1, 11, 0, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert as_utc(cet) == as_utc(naive) and as_utc(cet).tzinfo is dt.UTC


# ---------------------------------------------------------------- Pin / PinSet validation


def test_pin_normalizes_hex_and_accepts_bytes() -> None:
    upper = ":".join(H_LEAF[i : i + 2] for i in range(0, 64, 2)).upper()
    assert Pin("leaf", upper).spki_sha256 == H_LEAF
    assert Pin("leaf", bytes.fromhex(H_LEAF)).spki_sha256 == H_LEAF
    pin = Pin("root", H_ROOT, "backup", dt.datetime(2031, 1, 1), "config")
    assert pin.not_after == dt.datetime(2031, 1, 1, tzinfo=dt.UTC)


@pytest.mark.parametrize("bad", ["abc", "g" * 64, H_LEAF + "00", "", 42])
def test_pin_bad_hex(bad: object) -> None:
    with pytest.raises(ConfigError) as err:
        Pin("leaf", bad)  # type: ignore[arg-type]
    assert err.value.path == "pin.spki_sha256"
    assert "64 hex digits" in err.value.message
    assert "sha256sum" in err.value.fix


def test_pin_base64_gets_a_hex_hint() -> None:
    b64 = base64.b64encode(bytes.fromhex(H_LEAF)).decode()
    with pytest.raises(ConfigError) as err:
        Pin("leaf", b64)
    assert "RFC 7469 base64" in err.value.fix and H_LEAF in err.value.fix


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [("target", {"target": "chain"}), ("state", {"state": "revoked"}), ("origin", {"origin": "dns"})],
)
def test_pin_unknown_choice(field: str, kwargs: dict[str, str]) -> None:
    args = {"target": "leaf", "spki_sha256": H_LEAF, **kwargs}
    with pytest.raises(ConfigError) as err:
        Pin(**args)  # type: ignore[arg-type]
    assert err.value.path == f"pin.{field}"
    assert "use one of" in err.value.fix


def test_pinset_needs_an_active_pin() -> None:
    with pytest.raises(ConfigError) as err:
        pinset(Pin("leaf", H_LEAF, "backup"), Pin("root", H_ROOT, "pending"))
    assert err.value.path == "pins"
    assert err.value.value == ["backup", "pending"]
    assert "active" in err.value.fix and "tofu" in err.value.fix
    with pytest.raises(ConfigError):
        pinset()
    assert pinset(tofu=True).pins == ()  # a TOFU set may start empty


def test_pinset_duplicate() -> None:
    with pytest.raises(ConfigError) as err:
        pinset(Pin("leaf", H_LEAF), Pin("root", H_ROOT), Pin("leaf", H_LEAF.upper(), "backup"))
    assert err.value.path == "pins[2].spki_sha256"
    assert "pins[0]" in err.value.message
    # the same key for two targets is allowed (redundant, not contradictory)
    assert len(pinset(Pin("leaf", H_LEAF), Pin("any", H_LEAF)).pins) == 2


def test_pinset_bad_enforcement_and_bad_member() -> None:
    with pytest.raises(ConfigError) as err:
        pinset(Pin("leaf", H_LEAF), enforcement="audit")
    assert err.value.path == "enforcement"
    with pytest.raises(ConfigError) as err:
        PinSet("enforce", ("not a pin",))  # type: ignore[arg-type]
    assert err.value.path == "pins[0]"


# ---------------------------------------------------------------- from_toml


def test_from_toml_full() -> None:
    table = tomllib.loads(
        f"""
        enforcement = "report_only"
        pins = [
          {{ target = "leaf", spki_sha256 = "{H_LEAF}" }},
          {{ target = "root", spki_sha256 = "{H_ROOT.upper()}", state = "backup", not_after = 2031-01-01T00:00:00Z }},
          {{ target = "intermediate", spki_sha256 = "{H_SUB}", state = "pending", not_after = "2031-02-01T00:00:00+01:00", origin = "pairing" }},
        ]
        """
    )
    ps = PinSet.from_toml(table, path="services.csms.pins")
    assert ps.enforcement == "report_only" and not ps.tofu and ps.history == ()
    assert ps.pins == (
        Pin("leaf", H_LEAF, "active", None, "config"),
        Pin("root", H_ROOT, "backup", dt.datetime(2031, 1, 1, tzinfo=dt.UTC), "config"),
        Pin("intermediate", H_SUB, "pending", dt.datetime(2031, 1, 31, 23, tzinfo=dt.UTC), "pairing"),
    )
    assert PinSet.from_toml({"tofu": True}, path="p") == PinSet("enforce", (), (), True)


@pytest.mark.parametrize(
    ("toml", "path", "words"),
    [
        ('pins = [{ target = "leaf", spki_sha256 = "abc" }]', "s.pins.pins[0].spki_sha256", "64 hex"),
        (
            f'pins = [{{ target = "leaf", spki_sha256 = "{H_LEAF}", colour = 1 }}]',
            "s.pins.pins[0].colour",
            "unknown",
        ),
        (f'pins = [{{ spki_sha256 = "{H_LEAF}" }}]', "s.pins.pins[0].target", "needs target"),
        ('pins = [{ target = "leaf" }]', "s.pins.pins[0].spki_sha256", "needs spki_sha256"),
        (
            f'pins = [{{ target = "root", spki_sha256 = "{H_LEAF}", state = "on" }}]',
            "s.pins.pins[0].state",
            "unknown",
        ),
        (f'pins = [{{ target = 1, spki_sha256 = "{H_LEAF}" }}]', "s.pins.pins[0].target", "string"),
        (
            f'pins = [{{ target = "leaf", spki_sha256 = "{H_LEAF}", not_after = 2031-01-01T00:00:00 }}]',
            "s.pins.pins[0].not_after",
            "time zone",
        ),
        (
            f'pins = [{{ target = "leaf", spki_sha256 = "{H_LEAF}", not_after = "soon" }}]',
            "s.pins.pins[0].not_after",
            "RFC 3339",
        ),
        (
            f'pins = [{{ target = "leaf", spki_sha256 = "{H_LEAF}", not_after = 2031-01-01 }}]',
            "s.pins.pins[0].not_after",
            "date-time",
        ),
        ('pins = ["x"]', "s.pins.pins[0]", "table"),
        ('pins = "x"', "s.pins.pins", "array"),
        ("enforcement = 1", "s.pins.enforcement", "string"),
        ('enforcement = "audit"', "s.pins.enforcement", "unknown"),
        ('tofu = "yes"', "s.pins.tofu", "true or false"),
        ("colour = 1", "s.pins.colour", "unknown key"),
        (
            f'pins = [{{ target = "leaf", spki_sha256 = "{H_LEAF}", state = "backup" }}]',
            "s.pins.pins",
            "active",
        ),
        (
            f'pins = [{{ target = "leaf", spki_sha256 = "{H_LEAF}" }}, {{ target = "leaf", spki_sha256 = "{H_LEAF}" }}]',
            "s.pins.pins[1].spki_sha256",
            "twice",
        ),
    ],
)
def test_from_toml_errors_name_the_field(toml: str, path: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        PinSet.from_toml(tomllib.loads(toml), path="s.pins")
    assert err.value.path == path
    assert words in err.value.message
    assert err.value.fix


def test_from_toml_not_a_table() -> None:
    with pytest.raises(ConfigError) as err:
        PinSet.from_toml(["x"], path="s.pins")  # type: ignore[arg-type]
    assert err.value.path == "s.pins"


# ---------------------------------------------------------------- check: targets


@pytest.mark.parametrize(
    ("target", "spki", "with_verified", "ok"),
    [
        ("leaf", H_LEAF, False, True),
        ("leaf", H_SUB, True, False),
        ("intermediate", H_SUB, False, True),
        ("intermediate", H_SUB, True, True),
        ("intermediate", H_LEAF, True, False),
        ("intermediate", H_ROOT, True, False),
        ("root", H_ROOT, True, True),
        ("root", H_ROOT, False, False),  # the root was not sent and nothing verified it
        ("root", H_SUB, False, False),
        ("any", H_LEAF, False, True),
        ("any", H_SUB, False, True),
        ("any", H_ROOT, True, True),
        ("any", H_ROOT, False, False),
        ("any", H_OTHER, True, False),
    ],
)
def test_targets(target: str, spki: str, with_verified: bool, ok: bool) -> None:
    ps = pinset(Pin(target, spki))  # type: ignore[arg-type]
    result = check(ps, CHAIN, now=NOW, verified=VERIFIED if with_verified else None)
    assert result.ok is ok
    assert (result.matched is not None) is ok
    assert result.events == (() if ok else (events.PIN_MISMATCH,))
    assert result.reason == (None if ok else "pin_mismatch")


def test_root_sent_by_peer_counts_as_root_not_intermediate() -> None:
    sent = (*CHAIN, ROOT.cert)  # a peer that also sends its root
    assert check(pinset(Pin("root", H_ROOT)), sent, now=NOW).ok
    assert not check(pinset(Pin("intermediate", H_ROOT)), sent, now=NOW).ok
    assert check(pinset(Pin("intermediate", H_SUB)), sent, now=NOW).ok


def test_self_signed_leaf_is_its_own_root() -> None:
    alone = (ROOT.cert,)
    assert check(pinset(Pin("root", H_ROOT)), alone, now=NOW).ok
    assert check(pinset(Pin("leaf", H_ROOT)), alone, now=NOW).ok
    assert not check(pinset(Pin("intermediate", H_ROOT)), alone, now=NOW).ok
    # a lone CA-issued leaf has no root candidate
    assert not check(pinset(Pin("root", H_LEAF)), (LEAF.cert,), now=NOW).ok


def test_verified_chain_decides_over_extra_certificates_sent() -> None:
    sent = (LEAF.cert, OTHER_ROOT.cert, SUB.cert)  # junk in the middle: not on the verified path
    assert check(pinset(Pin("intermediate", h(OTHER_ROOT.cert))), sent, now=NOW).ok
    assert not check(pinset(Pin("intermediate", h(OTHER_ROOT.cert))), sent, now=NOW, verified=VERIFIED).ok
    # "any" is RFC 7469: any certificate seen
    assert check(pinset(Pin("any", h(OTHER_ROOT.cert))), sent, now=NOW, verified=VERIFIED).ok


def test_empty_chain_mismatches() -> None:
    result = check(pinset(Pin("any", H_LEAF)), (), now=NOW)
    assert not result.ok and result.detail == "the peer sent no certificate"
    assert check(pinset(Pin("leaf", H_LEAF)), (), now=NOW, verified=VERIFIED).ok


# ---------------------------------------------------------------- check: enforcement, states, expiry


def test_report_only_lets_mismatch_through_but_reports_it() -> None:
    ps = pinset(Pin("leaf", H_OTHER), enforcement="report_only")
    result = check(ps, CHAIN, now=NOW)
    assert result.ok and result.matched is None
    assert result.events == (events.PIN_MISMATCH,) and result.reason == "pin_mismatch"
    assert "report_only" in result.detail
    enforced = check(attrs.evolve(ps, enforcement="enforce"), CHAIN, now=NOW)
    assert not enforced.ok and enforced.events == (events.PIN_MISMATCH,)


def test_all_live_states_match_and_best_is_reported() -> None:
    for state in ("backup", "pending"):
        ps = pinset(Pin("leaf", H_OTHER), Pin("leaf", H_LEAF, state))
        result = check(ps, CHAIN, now=NOW)
        assert result.ok and result.matched == Pin("leaf", H_LEAF, state)
    ps = pinset(Pin("root", H_ROOT, "pending"), Pin("intermediate", H_SUB, "backup"), Pin("any", H_LEAF))
    result = check(ps, CHAIN, now=NOW, verified=VERIFIED)
    assert result.matched == Pin("any", H_LEAF)  # active wins over backup and pending
    assert result.pending == (Pin("root", H_ROOT, "pending"),)


def test_released_pins_never_match() -> None:
    ps = pinset(Pin("leaf", H_OTHER), Pin("leaf", H_LEAF, "released"))
    result = check(ps, CHAIN, now=NOW)
    assert not result.ok and "active leaf" in result.detail


def test_expired_pin_does_not_count_after_not_after() -> None:
    until = NOW + DAY
    ps = pinset(Pin("leaf", H_LEAF, "active", until))
    assert check(ps, CHAIN, now=NOW).ok
    assert check(ps, CHAIN, now=until).ok  # the instant itself still counts (like certificate validity)
    late = check(ps, CHAIN, now=until + dt.timedelta(microseconds=1))
    assert not late.ok and "released or expired" in late.detail
    assert check(ps, CHAIN, now=until.replace(tzinfo=None)).ok  # naive now is UTC


def test_expire_releases_and_records() -> None:
    until = NOW + DAY
    ps = pinset(Pin("leaf", H_LEAF, "active", until), Pin("root", H_ROOT, "backup", until + DAY))
    assert expire(ps, now=until) is ps
    later = until + dt.timedelta(hours=1)
    out = expire(ps, now=later)
    assert [p.state for p in out.pins] == ["released", "backup"]
    assert out.history == (PinEvent(later, events.PIN_RELEASED, H_LEAF, "leaf", "expired"),)
    assert changes(ps, out) == out.history
    assert not check(out, CHAIN, now=NOW).ok  # released stays released, even at an earlier time
    assert check(out, CHAIN, now=NOW, verified=VERIFIED).ok  # the root backup pin still matches
    assert expire(out, now=later) is out


# ---------------------------------------------------------------- release / promote / tofu / repin


def test_release_operator_event() -> None:
    ps = pinset(Pin("leaf", H_LEAF), Pin("any", H_LEAF, "backup"), Pin("root", H_ROOT, "backup"))
    out = release(ps, H_LEAF.upper(), at=NOW, reason="key compromised")
    assert [p.state for p in out.pins] == ["released", "released", "backup"]
    assert out.history == (
        PinEvent(NOW, "pin_released", H_LEAF, "leaf", "key compromised"),
        PinEvent(NOW, "pin_released", H_LEAF, "any", "key compromised"),
    )
    assert release(out, H_LEAF, at=NOW + DAY) is out  # idempotent
    assert not check(out, CHAIN, now=NOW).ok
    assert check(out, CHAIN, now=NOW, verified=VERIFIED).ok
    # the last active pin may go (a set built by transitions): then everything mismatches
    alone = release(pinset(Pin("leaf", H_LEAF)), bytes.fromhex(H_LEAF), at=NOW)
    assert alone.pins[0].state == "released" and not check(alone, CHAIN, now=NOW).ok


def test_release_unknown_or_bad_key() -> None:
    ps = pinset(Pin("leaf", H_LEAF))
    with pytest.raises(ConfigError) as err:
        release(ps, H_OTHER, at=NOW)
    assert err.value.path == "spki_sha256" and "no pin" in err.value.message
    with pytest.raises(ConfigError):
        release(ps, "zz", at=NOW)


def test_promote_pending_after_successful_connection() -> None:
    ps = pinset(
        Pin("leaf", H_LEAF),
        Pin("leaf", H_NEW, "pending"),
        Pin("root", H_ROOT),
        Pin("leaf", H_OTHER, "backup"),
    )
    new_chain = LEAF_NEW_KEY.chain
    result = check(ps, new_chain, now=NOW)
    assert (
        result.ok and result.matched == Pin("leaf", H_NEW, "pending") and result.pending == (result.matched,)
    )
    out = promote_pending(ps, at=NOW, spki=result.pending[0].spki_sha256)
    assert [p.state for p in out.pins] == ["released", "active", "active", "backup"]  # root untouched
    assert [(e.event, e.spki_sha256) for e in changes(ps, out)] == [
        (events.PIN_PROMOTED, H_NEW),
        (events.PIN_RELEASED, H_LEAF),
    ]
    assert "replaced by promoted pin" in out.history[-1].reason
    assert not check(out, CHAIN, now=NOW).ok  # the old key is gone
    assert check(out, new_chain, now=NOW).matched == Pin("leaf", H_NEW)
    assert promote_pending(out, at=NOW) is out  # nothing pending any more


def test_promote_pending_filters() -> None:
    ps = pinset(Pin("leaf", H_LEAF), Pin("leaf", H_NEW, "pending"), Pin("root", H_ROOT, "pending", NOW))
    assert promote_pending(ps, at=NOW, spki=H_OTHER) is ps  # not a pending key
    late = promote_pending(ps, at=NOW + DAY)  # all live pending: the expired root pin is not promoted
    assert [p.state for p in late.pins] == ["released", "active", "pending"]
    both = promote_pending(ps, at=NOW)
    assert [p.state for p in both.pins] == ["released", "active", "active"]
    assert len(both.history) == 3


def test_tofu_pins_first_leaf_then_enforces() -> None:
    ps = pinset(tofu=True)
    assert not check(ps, CHAIN, now=NOW).ok  # nothing pinned yet: add_tofu comes first
    first = add_tofu(ps, CHAIN, now=NOW)
    assert first.pins == (Pin("leaf", H_LEAF, "active", None, "tofu"),)
    assert first.history == (PinEvent(NOW, PIN_ADDED, H_LEAF, "leaf", "trust on first use"),)
    assert check(first, CHAIN, now=NOW).ok
    assert add_tofu(first, LEAF_NEW_KEY.chain, now=NOW) is first  # not first use any more
    assert not check(first, LEAF_NEW_KEY.chain, now=NOW).ok
    # forgetting the key (operator) lets the next peer be trusted on first use again
    forgot = release(first, H_LEAF, at=NOW)
    again = add_tofu(forgot, LEAF_NEW_KEY.chain, now=NOW + DAY)
    assert [(p.spki_sha256, p.state) for p in again.pins] == [(H_LEAF, "released"), (H_NEW, "active")]
    back = add_tofu(release(again, H_NEW, at=NOW), CHAIN, now=NOW)
    assert [(p.spki_sha256, p.state) for p in back.pins] == [
        (H_LEAF, "active"),
        (H_NEW, "released"),
    ]  # reused


def test_add_tofu_no_op_cases() -> None:
    configured = pinset(Pin("leaf", H_LEAF))
    assert add_tofu(configured, LEAF_NEW_KEY.chain, now=NOW) is configured  # not a TOFU set
    empty = pinset(tofu=True)
    assert add_tofu(empty, (), now=NOW) is empty


def test_repin_replaces_learned_pins_only() -> None:
    learned = PinSet("enforce", (Pin("root", H_ROOT), Pin("leaf", H_LEAF, "active", None, "tofu")), ())
    out = repin(learned, LEAF_NEW_KEY.cert, at=NOW)
    assert [(p.target, p.spki_sha256, p.state, p.origin) for p in out.pins] == [
        ("root", H_ROOT, "active", "config"),
        ("leaf", H_LEAF, "released", "tofu"),
        ("leaf", H_NEW, "active", "tofu"),
    ]
    assert [e.event for e in changes(learned, out)] == [events.PIN_RELEASED, PIN_ADDED]
    assert repin(out, LEAF_NEW_KEY.cert, at=NOW) is out
    configured = pinset(Pin("leaf", H_LEAF))
    kept = repin(configured, LEAF_NEW_KEY.cert, at=NOW)
    assert [(p.spki_sha256, p.state) for p in kept.pins] == [(H_LEAF, "active"), (H_NEW, "active")]


# ---------------------------------------------------------------- properties

POOL = (
    ROOT.cert,
    SUB.cert,
    LEAF.cert,
    LEAF_NEW_KEY.cert,
    LEAF_SAME_KEY.cert,
    OTHER_ROOT.cert,
    OTHER_LEAF.cert,
)
POOL_HASHES = sorted({h(c) for c in POOL})

hex64 = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
times = st.datetimes(min_value=dt.datetime(2029, 1, 1), max_value=dt.datetime(2032, 1, 1))
aware_or_naive = times | times.map(lambda t: t.replace(tzinfo=dt.UTC))
pins_st = st.builds(
    Pin,
    target=st.sampled_from(TARGETS),
    spki_sha256=st.sampled_from(POOL_HASHES) | hex64,
    state=st.sampled_from(STATES),
    not_after=st.none() | aware_or_naive,
    origin=st.sampled_from(ORIGINS),
)
chains = st.lists(st.sampled_from(POOL), max_size=5)


@st.composite
def pinsets(draw: st.DrawFn) -> PinSet:
    pins = draw(st.lists(pins_st, max_size=6, unique_by=lambda p: (p.target, p.spki_sha256)))
    tofu = draw(st.booleans()) or not any(p.state == "active" for p in pins)
    return PinSet(draw(st.sampled_from(ENFORCEMENTS)), tuple(pins), (), tofu)


def oracle(
    ps: PinSet, chain: list[x509.Certificate], verified: list[x509.Certificate], now: dt.datetime
) -> bool:
    """Whether some live pin matches, with a verified chain (the simple, always-available case)."""
    offered = {
        "leaf": {h(verified[0])},
        "intermediate": {h(c) for c in verified[1:-1]},
        "root": {h(verified[-1])},
        "any": {h(c) for c in (*chain, *verified)},
    }
    t = as_utc(now)
    return any(
        p.state != "released"
        and (p.not_after is None or t <= p.not_after)
        and p.spki_sha256 in offered[p.target]
        for p in ps.pins
    )


@given(ps=pinsets(), chain=chains, verified=st.none() | chains, now=aware_or_naive)
def test_check_never_raises_and_report_only_always_passes(
    ps: PinSet, chain: list[x509.Certificate], verified: list[x509.Certificate] | None, now: dt.datetime
) -> None:
    result = check(ps, chain, now=now, verified=verified)
    assert result.ok == (result.matched is not None or ps.enforcement == "report_only")
    assert (result.matched is None) == (result.events == (events.PIN_MISMATCH,))
    if result.matched is not None:
        assert result.matched in ps.pins and result.matched.live(now)
    assert all(p.state == "pending" for p in result.pending)


@given(
    ps=pinsets(), chain=chains, verified=st.lists(st.sampled_from(POOL), min_size=1, max_size=4), now=times
)
def test_check_agrees_with_oracle(
    ps: PinSet, chain: list[x509.Certificate], verified: list[x509.Certificate], now: dt.datetime
) -> None:
    result = check(ps, chain, now=now, verified=verified)
    assert (result.matched is not None) == oracle(ps, chain, verified, now)


@given(
    ps=pinsets(), verified=st.lists(st.sampled_from(POOL), min_size=1, max_size=4), now=times, data=st.data()
)
def test_release_then_check_mismatches_unless_another_pin_matches(
    ps: PinSet, verified: list[x509.Certificate], now: dt.datetime, data: st.DataObject
) -> None:
    if not ps.pins:
        return
    victim = data.draw(st.sampled_from(ps.pins)).spki_sha256
    out = release(ps, victim, at=now)
    assert all(p.state == "released" for p in out.pins if p.spki_sha256 == victim)
    assert out.history[: len(ps.history)] == ps.history  # history kept
    assert all(e.event == events.PIN_RELEASED and e.spki_sha256 == victim for e in changes(ps, out))
    result = check(out, verified, now=now, verified=verified)
    others = without(ps, victim)
    assert (result.matched is not None) == oracle(others, verified, verified, now)
    if result.matched is not None:
        assert result.matched.spki_sha256 != victim


def without(ps: PinSet, spki: str) -> PinSet:
    return PinSet(ps.enforcement, tuple(p for p in ps.pins if p.spki_sha256 != spki), (), True)


@given(ps=pinsets(), now=times)
def test_expire_is_what_check_already_does(ps: PinSet, now: dt.datetime) -> None:
    out = expire(ps, now=now)
    assert all(not p.expired(now) or p.state == "released" for p in out.pins)
    for chain in (CHAIN, LEAF_NEW_KEY.chain, (ROOT.cert,)):
        assert check(out, chain, now=now, verified=None).matched == check(ps, chain, now=now).matched
    assert expire(out, now=now) is out
