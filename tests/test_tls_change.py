"""Peer certificate / key change notification (sans-IO): memory, policy, events, repin with a TOFU pin set."""

from __future__ import annotations

import datetime as dt
import tomllib

import pytest
from cryptography import x509
from hypothesis import given
from hypothesis import strategies as st

from evsim.errors import ConfigError
from evsim.pki import CertificateAuthority, cert_fingerprint, spki_sha256
from evsim.tls import events
from evsim.tls.change import (
    ON_CERT_CHANGE,
    ON_KEY_CHANGE,
    ChangePolicy,
    PeerMemory,
    SeenPeer,
    observe,
)
from evsim.tls.pins import PinSet, add_tofu, check, repin

NOW = dt.datetime(2030, 6, 1, 12, 0, tzinfo=dt.UTC)
SEC = dt.timedelta(seconds=1)

CA = CertificateAuthority.create_root("Change Test Root", now=NOW)
A1 = CA.issue_server("csms.evsim.test", now=NOW)
A2 = CA.issue_server("csms.evsim.test", now=NOW + SEC, key=A1.key)  # renewal, same key
B1 = CA.issue_server("csms.evsim.test", now=NOW)  # new key
CSMS = "csms.evsim.test"


def seen(cert: x509.Certificate, since: dt.datetime, last: dt.datetime, name: str = CSMS) -> SeenPeer:
    return SeenPeer(name, cert_fingerprint(cert), spki_sha256(cert).hex(), since, last)


def test_first_sight_and_same_certificate_are_silent() -> None:
    policy = ChangePolicy()
    first = observe(PeerMemory(), CSMS, A1.cert, policy, now=NOW)
    assert (first.accept, first.events, first.repin, first.severity, first.previous) == (
        True,
        (),
        False,
        None,
        None,
    )
    assert first.new_memory.peers == (seen(A1.cert, NOW, NOW),)
    again = observe(first.new_memory, CSMS, A1.cert, policy, now=NOW + SEC)
    assert (again.accept, again.events, again.previous) == (True, (), seen(A1.cert, NOW, NOW))
    assert again.new_memory.get(CSMS) == seen(A1.cert, NOW, NOW + SEC)


@pytest.mark.parametrize("severity", ON_CERT_CHANGE)
def test_new_certificate_same_key(severity: str) -> None:
    policy = ChangePolicy("reject", severity)  # type: ignore[arg-type]
    memory = observe(PeerMemory(), CSMS, A1.cert, policy, now=NOW).new_memory
    d = observe(memory, CSMS, A2.cert, policy, now=NOW + SEC)
    assert (d.accept, d.events, d.severity, d.repin, d.reason) == (
        True,
        (events.PEER_CERT_CHANGED,),
        severity,
        False,
        None,
    )
    assert d.new_memory.get(CSMS) == seen(A2.cert, NOW + SEC, NOW + SEC)
    assert "same key" in d.detail


@pytest.mark.parametrize(
    ("on_key", "accept", "repin", "severity"),
    [
        ("reject", False, False, "error"),
        ("warn", True, False, "warn"),
        ("accept_and_repin", True, True, "warn"),
    ],
)
def test_new_key_follows_policy(on_key: str, accept: bool, repin: bool, severity: str) -> None:
    policy = ChangePolicy(on_key)  # type: ignore[arg-type]
    memory = observe(PeerMemory(), CSMS, A1.cert, policy, now=NOW).new_memory
    d = observe(memory, CSMS, B1.cert, policy, now=NOW + SEC)
    assert (d.accept, d.events, d.repin, d.severity) == (accept, (events.PEER_KEY_CHANGED,), repin, severity)
    assert d.previous == seen(A1.cert, NOW, NOW)
    if accept:
        assert d.reason is None
        assert d.new_memory.get(CSMS) == seen(B1.cert, NOW + SEC, NOW + SEC)
        # reported once: the new key is remembered
        assert observe(d.new_memory, CSMS, B1.cert, policy, now=NOW + 2 * SEC).events == ()
    else:
        assert d.reason == "peer_key_changed" and "reject" in d.detail
        assert d.new_memory is memory  # keeps the old key, so every attempt is reported
        assert observe(d.new_memory, CSMS, B1.cert, policy, now=NOW + 2 * SEC).events == (
            events.PEER_KEY_CHANGED,
        )
        assert observe(d.new_memory, CSMS, A1.cert, policy, now=NOW + 2 * SEC).events == ()


def test_peers_are_remembered_by_name() -> None:
    policy = ChangePolicy("reject")
    memory = observe(PeerMemory(), "a", A1.cert, policy, now=NOW).new_memory
    memory = observe(memory, "b", B1.cert, policy, now=NOW).new_memory
    assert observe(memory, "a", A1.cert, policy, now=NOW).accept
    assert observe(memory, "b", B1.cert, policy, now=NOW).accept
    assert not observe(memory, "a", B1.cert, policy, now=NOW).accept
    assert memory.get("c") is None


def test_memory_is_bounded_least_recently_seen_first() -> None:
    policy = ChangePolicy()
    memory = PeerMemory(limit=2)
    for name in ("a", "b", "c"):
        memory = observe(memory, name, A1.cert, policy, now=NOW).new_memory
    assert [p.name for p in memory.peers] == ["b", "c"]
    memory = observe(memory, "b", A1.cert, policy, now=NOW + SEC).new_memory  # b becomes the freshest
    memory = observe(memory, "d", A1.cert, policy, now=NOW + SEC).new_memory
    assert [p.name for p in memory.peers] == ["b", "d"]


def test_accept_and_repin_with_a_tofu_pin_set() -> None:
    """The integration order: observe, repin when asked, then check the pins."""
    policy = ChangePolicy("accept_and_repin")
    pins = add_tofu(PinSet(tofu=True), A1.chain, now=NOW)
    memory = observe(PeerMemory(), CSMS, A1.cert, policy, now=NOW).new_memory
    assert not check(pins, B1.chain, now=NOW).ok
    d = observe(memory, CSMS, B1.cert, policy, now=NOW + SEC)
    assert d.repin
    pins = repin(pins, B1.cert, at=NOW + SEC)
    assert check(pins, B1.chain, now=NOW + SEC).ok
    assert not check(pins, A1.chain, now=NOW + SEC).ok


def test_validation_and_toml() -> None:
    with pytest.raises(ConfigError) as err:
        ChangePolicy("ignore")  # type: ignore[arg-type]
    assert err.value.path == "on_peer_key_change" and "reject" in err.value.fix
    with pytest.raises(ConfigError) as err:
        ChangePolicy("warn", "error")  # type: ignore[arg-type]
    assert err.value.path == "on_peer_cert_change_same_key"
    assert ChangePolicy.from_toml(
        tomllib.loads('on_peer_key_change = "reject"\non_peer_cert_change_same_key = "warn"'), path="x"
    ) == ChangePolicy("reject", "warn")
    assert ChangePolicy.from_toml({}, path="x") == ChangePolicy("warn", "info")
    with pytest.raises(ConfigError) as err:
        ChangePolicy.from_toml({"on_peer_key_change": "drop"}, path="services.csms.change")
    assert err.value.path == "services.csms.change.on_peer_key_change"
    with pytest.raises(ConfigError) as err:
        ChangePolicy.from_toml({"on_key": "warn"}, path="services.csms.change")
    assert err.value.path == "services.csms.change.on_key"
    with pytest.raises(ConfigError):
        ChangePolicy.from_toml("warn", path="x")  # type: ignore[arg-type]
    for bad in (0, -1, True):
        with pytest.raises(ConfigError) as err:
            PeerMemory(limit=bad)
        assert err.value.path == "limit"
    one = seen(A1.cert, NOW, NOW)
    with pytest.raises(ConfigError) as err:
        PeerMemory((one, one))
    assert err.value.value == CSMS


# ---------------------------------------------------------------- property: against a one-line model per peer

LEAVES = (A1.cert, A2.cert, B1.cert)
policies = st.builds(ChangePolicy, st.sampled_from(ON_KEY_CHANGE), st.sampled_from(ON_CERT_CHANGE))


@given(
    policy=policies, steps=st.lists(st.tuples(st.sampled_from("ab"), st.sampled_from(LEAVES)), max_size=12)
)
def test_observe_matches_model(policy: ChangePolicy, steps: list[tuple[str, x509.Certificate]]) -> None:
    memory = PeerMemory()
    model: dict[str, x509.Certificate] = {}
    for i, (name, leaf) in enumerate(steps):
        d = observe(memory, name, leaf, policy, now=NOW + i * SEC)
        last = model.get(name)
        if last is None or last == leaf:
            expected: tuple[str, ...] = ()
        elif spki_sha256(last) == spki_sha256(leaf):
            expected = (events.PEER_CERT_CHANGED,)
        else:
            expected = (events.PEER_KEY_CHANGED,)
        assert d.events == expected
        assert d.accept == (expected != (events.PEER_KEY_CHANGED,) or policy.on_peer_key_change != "reject")
        assert d.repin == (
            expected == (events.PEER_KEY_CHANGED,) and policy.on_peer_key_change == "accept_and_repin"
        )
        if d.accept:
            model[name] = leaf
        memory = d.new_memory
        assert {p.name: p.fingerprint for p in memory.peers} == {
            n: cert_fingerprint(c) for n, c in model.items()
        }
