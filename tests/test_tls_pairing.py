"""SHIP-style pairing (sans-IO): peer identity by SKI, windows, auto-accept, unpair, re-pairing, a stateful model."""

from __future__ import annotations

import datetime as dt
import tomllib
from typing import Literal

import attrs
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from evsim.errors import ConfigError
from evsim.pki import CertificateAuthority, generate_key, ski, spki_sha256
from evsim.pki.keys import PrivateKey
from evsim.tls import events
from evsim.tls.pairing import (
    MAX_PENDING,
    NO_SKI,
    NOT_SELF_SIGNED,
    REFUSED_DENIED,
    REFUSED_KEY_MISMATCH,
    REFUSED_PENDING,
    REFUSED_UNKNOWN,
    SKI_MISMATCH,
    PairedPeer,
    PeerIdentity,
    PeerTrust,
    close_window,
    decide,
    open_window,
    peer_identity,
    register,
    unpair,
)

NOW = dt.datetime(2030, 6, 1, 12, 0, tzinfo=dt.UTC)
SEC = dt.timedelta(seconds=1)
SkiMode = Literal["good", "none", "wrong"]


def ship_cert(
    cn: str,
    key: PrivateKey | None = None,
    *,
    ski_mode: SkiMode = "good",
    signer: PrivateKey | None = None,
) -> x509.Certificate:
    """A SHIP device certificate as ship-go makes it: self-signed, CA, SKI = SHA-1 of the key (SHIP 12.2)."""
    key = key or generate_key("ec")
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "evsim")]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    if ski_mode == "good":
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
    elif ski_mode == "wrong":
        builder = builder.add_extension(x509.SubjectKeyIdentifier(b"\x5a" * 20), critical=False)
    return builder.sign(signer or key, hashes.SHA256())


def ski_of(cert: x509.Certificate) -> str:
    return ski(cert).hex()


def spki_of(cert: x509.Certificate) -> str:
    return spki_sha256(cert).hex()


# Devices, each with two keys (the second one for re-pairing / crypto agility).
HEMS, HEMS_NEW = ship_cert("HEMS-0001"), ship_cert("HEMS-0001")
WALLBOX, WALLBOX_NEW = ship_cert("WB-0002"), ship_cert("WB-0002")
STRANGER = ship_cert("PV-0003")
NO_SKI_CERT = ship_cert("HEMS-0001", ski_mode="none")
WRONG_SKI_CERT = ship_cert("HEMS-0001", ski_mode="wrong")
FORGED = ship_cert("HEMS-0001", signer=generate_key("ec"))  # claims to be self-signed, is not
CA = CertificateAuthority.create_root("Some CA", now=NOW)
CA_ISSUED = CA.issue_client("HEMS-0001", now=NOW).cert


def pt(**kwargs: object) -> PeerTrust:
    return PeerTrust(**kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------- identity


def test_identity_is_ski_spki_and_cn() -> None:
    ident = peer_identity(HEMS)
    assert ident == PeerIdentity(ski_of(HEMS), spki_of(HEMS), "HEMS-0001")
    assert isinstance(ident, PeerIdentity) and len(ident.ski) == 40


@pytest.mark.parametrize(
    ("cert", "reason", "words"),
    [
        (NO_SKI_CERT, NO_SKI, "SHIP 12.2"),
        (WRONG_SKI_CERT, SKI_MISMATCH, "method 1"),
        (FORGED, NOT_SELF_SIGNED, "SHIP 12.1"),
        (CA_ISSUED, NOT_SELF_SIGNED, "Some CA"),
    ],
)
def test_unusable_certificates_are_refused_with_a_reason(
    cert: x509.Certificate, reason: str, words: str
) -> None:
    result = peer_identity(cert)
    assert not isinstance(result, PeerIdentity)
    assert result[0] == reason and words in result[1]
    for trust in (pt(), pt(auto_accept=True), open_window(pt(), now=NOW)):
        d = decide(trust, cert, now=NOW)
        assert (d.accept, d.event, d.reason, d.new_state) == (False, "refused_unknown", reason, trust)
        assert d.events == ()


# ---------------------------------------------------------------- the pairing flow


def test_unknown_peer_outside_window_is_refused_and_recorded_as_request() -> None:
    trust = pt()
    d = decide(trust, HEMS, now=NOW)
    assert (d.accept, d.event, d.reason) == (False, "pairing_requested", REFUSED_PENDING)
    assert d.events == (events.PAIRING_REQUESTED,)
    assert d.new_state.peers == (PairedPeer(ski_of(HEMS), spki_of(HEMS), "pending", NOW, "HEMS-0001"),)
    again = decide(d.new_state, HEMS, now=NOW + SEC)
    assert (again.accept, again.event, again.new_state) == (False, "pairing_requested", d.new_state)
    # the user opens a window: the waiting device pairs on its next attempt
    paired = decide(open_window(d.new_state, now=NOW + 2 * SEC), HEMS, now=NOW + 3 * SEC)
    assert (paired.accept, paired.event, paired.events) == (True, "paired", (events.PAIRED,))
    assert paired.peer == PairedPeer(ski_of(HEMS), spki_of(HEMS), "trusted", NOW + 3 * SEC, "HEMS-0001")


def test_peer_paired_inside_window_is_trusted_after_it_closes_and_refused_after_unpair() -> None:
    trust = open_window(pt(pairing_window_s=60), now=NOW)
    assert trust.window_until == NOW + 60 * SEC
    d = decide(trust, HEMS, now=NOW + 10 * SEC)
    assert (d.accept, d.event, d.reason) == (True, "paired", None)
    assert "pairing window" in d.detail
    later = NOW + dt.timedelta(days=30)
    assert not d.new_state.window_open(later)
    t = decide(d.new_state, HEMS, now=later)
    assert (t.accept, t.event, t.new_state, t.events) == (True, "trusted", d.new_state, ())
    gone = unpair(d.new_state, ski_of(HEMS).upper(), at=later)
    assert d.peer is not None
    assert gone.get(ski_of(HEMS)) == attrs.evolve(d.peer, state="denied", since=later)
    for state in (gone, open_window(gone, now=later), attrs.evolve(gone, auto_accept=True)):
        r = decide(state, HEMS, now=later + SEC)
        assert (r.accept, r.event, r.reason, r.new_state) == (False, "refused_denied", REFUSED_DENIED, state)
    # the user registers it again
    back = register(gone, ski(HEMS), at=later + 2 * SEC)
    assert decide(back, HEMS, now=later + 3 * SEC).event == "trusted"


def test_auto_accept_pairs_unknown_peers() -> None:
    d = decide(pt(auto_accept=True), WALLBOX, now=NOW)
    assert (d.accept, d.event) == (True, "paired") and "auto_accept" in d.detail
    pending = decide(pt(), WALLBOX, now=NOW).new_state
    assert decide(attrs.evolve(pending, auto_accept=True), WALLBOX, now=NOW).event == "paired"


def test_window_bounds_and_close() -> None:
    trust = open_window(pt(pairing_window_s=30), now=NOW)
    assert trust.window_open(NOW) and trust.window_open(NOW + 30 * SEC - dt.timedelta(microseconds=1))
    assert not trust.window_open(NOW + 30 * SEC)  # exclusive end
    assert decide(trust, STRANGER, now=NOW + 30 * SEC).event == "pairing_requested"
    closed = close_window(trust)
    assert closed.window_until is None and close_window(closed) is closed
    assert decide(closed, STRANGER, now=NOW).event == "pairing_requested"
    assert open_window(pt(), now=NOW.replace(tzinfo=None)).window_until == NOW + 120 * SEC  # naive is UTC


def test_repairing_with_a_new_key_needs_a_window() -> None:
    paired = decide(pt(auto_accept=True), HEMS, now=NOW).new_state
    # outside a window the new key is refused, even with auto_accept (a clone of the name must not slip in)
    r = decide(paired, HEMS_NEW, now=NOW + SEC)
    assert (r.accept, r.event, r.reason, r.new_state) == (False, "refused_unknown", REFUSED_UNKNOWN, paired)
    assert "re-pairing needs a pairing window" in r.detail
    # inside a window it replaces the old entry
    window = open_window(paired, now=NOW + 2 * SEC)
    d = decide(window, HEMS_NEW, now=NOW + 3 * SEC)
    assert (d.accept, d.event) == (True, "paired")
    assert d.replaced == paired.peers[0]
    assert [p.ski for p in d.new_state.peers] == [ski_of(HEMS_NEW)]
    assert "re-paired" in d.detail
    # the old key is now just a stranger with a known name
    old = decide(close_window(d.new_state), HEMS, now=NOW + 4 * SEC)
    assert (old.accept, old.event) == (False, "refused_unknown")


def test_denied_device_with_a_new_key_is_a_new_entry() -> None:
    paired = decide(pt(auto_accept=True), HEMS, now=NOW).new_state
    denied = unpair(paired, ski_of(HEMS), at=NOW)
    d = decide(open_window(denied, now=NOW), HEMS_NEW, now=NOW)
    assert (d.accept, d.event, d.replaced) == (True, "paired", None)
    assert [(p.ski, p.state) for p in d.new_state.peers] == [
        (ski_of(HEMS), "denied"),
        (ski_of(HEMS_NEW), "trusted"),
    ]


def test_registered_ski_completes_at_first_connection() -> None:
    reg = register(pt(), ski_of(WALLBOX), at=NOW, device_id="WB-0002")
    assert reg.peers == (PairedPeer(ski_of(WALLBOX), None, "trusted", NOW, "WB-0002"),)
    d = decide(reg, WALLBOX, now=NOW + SEC)
    assert (d.accept, d.event, d.detail) == (True, "paired", "registered SKI connected")
    assert d.peer == PairedPeer(ski_of(WALLBOX), spki_of(WALLBOX), "trusted", NOW, "WB-0002")
    assert decide(d.new_state, WALLBOX, now=NOW + 2 * SEC).event == "trusted"
    # registering accepts a pending request too
    pending = decide(pt(), STRANGER, now=NOW).new_state
    assert decide(register(pending, ski(STRANGER), at=NOW), STRANGER, now=NOW).event == "trusted"


def test_known_ski_with_another_key_hash_is_refused() -> None:
    bogus = PairedPeer(ski_of(HEMS), "00" * 32, "trusted", NOW, "HEMS-0001")
    d = decide(pt(peers=(bogus,)), HEMS, now=NOW)
    assert (d.accept, d.event, d.reason) == (False, "refused_unknown", REFUSED_KEY_MISMATCH)


def test_pending_requests_are_bounded() -> None:
    trust = pt()
    for i in range(MAX_PENDING):
        trust = decide(trust, ship_cert(f"X-{i}"), now=NOW).new_state
    assert len(trust.peers) == MAX_PENDING
    d = decide(trust, STRANGER, now=NOW)
    assert (d.accept, d.event, d.reason, d.new_state) == (False, "refused_unknown", REFUSED_UNKNOWN, trust)
    assert "already waiting" in d.detail


def test_unpair_unknown_or_bad_ski() -> None:
    with pytest.raises(ConfigError) as err:
        unpair(pt(), ski_of(HEMS), at=NOW)
    assert err.value.path == "ski" and "no paired peer" in err.value.message
    with pytest.raises(ConfigError) as err:
        register(pt(), "abc", at=NOW)
    assert err.value.path == "ski" and "40 hex" in err.value.message


# ---------------------------------------------------------------- validation, TOML


def test_validation() -> None:
    with pytest.raises(ConfigError) as err:
        PairedPeer("ab", None, "trusted", NOW)
    assert err.value.path == "peer.ski"
    with pytest.raises(ConfigError) as err:
        PairedPeer(ski_of(HEMS), "ab", "trusted", NOW)
    assert err.value.path == "peer.spki_sha256"
    with pytest.raises(ConfigError) as err:
        PairedPeer(ski_of(HEMS), None, "blocked", NOW)  # type: ignore[arg-type]
    assert err.value.path == "peer.state"
    for bad in (0, -1.0, float("nan"), float("inf"), True, "60"):
        with pytest.raises(ConfigError) as err:
            pt(pairing_window_s=bad)
        assert err.value.path == "pairing_window_s"
    with pytest.raises(ConfigError) as err:
        pt(auto_accept="yes")
    assert err.value.path == "auto_accept"
    one = PairedPeer(ski_of(HEMS), None, "trusted", NOW)
    with pytest.raises(ConfigError) as err:
        pt(peers=(one, attrs.evolve(one, state="denied")))
    assert err.value.path == "peers[1].ski"
    with pytest.raises(ConfigError) as err:
        pt(peers=("x",))
    assert err.value.path == "peers[0]"


def test_from_toml() -> None:
    table = tomllib.loads(
        f"""
        auto_accept = true
        pairing_window_s = 30
        peers = [ {{ ski = "{ski_of(HEMS).upper()}", device_id = "HEMS-0001" }},
                  {{ ski = "{ski_of(WALLBOX)}", spki_sha256 = "{spki_of(WALLBOX)}", state = "denied" }} ]
        """
    )
    trust = PeerTrust.from_toml(table, path="ship", at=NOW)
    assert trust == PeerTrust(
        True,
        30,
        (
            PairedPeer(ski_of(HEMS), None, "trusted", NOW, "HEMS-0001"),
            PairedPeer(ski_of(WALLBOX), spki_of(WALLBOX), "denied", NOW),
        ),
    )
    assert decide(trust, WALLBOX, now=NOW).event == "refused_denied"
    assert PeerTrust.from_toml({}, path="ship", at=NOW) == PeerTrust()


@pytest.mark.parametrize(
    ("toml", "path"),
    [
        ("pairing_window_s = 0", "ship.pairing_window_s"),
        ('auto_accept = "yes"', "ship.auto_accept"),
        ("colour = 1", "ship.colour"),
        ('peers = "x"', "ship.peers"),
        ("peers = [1]", "ship.peers[0]"),
        ("peers = [{ device_id = 'x' }]", "ship.peers[0].ski"),
        ("peers = [{ ski = 'abc' }]", "ship.peers[0].ski"),
        (f"peers = [{{ ski = '{'a' * 40}', state = 'maybe' }}]", "ship.peers[0].state"),
        (f"peers = [{{ ski = '{'a' * 40}', device_id = 7 }}]", "ship.peers[0].device_id"),
        (f"peers = [{{ ski = '{'a' * 40}', colour = 7 }}]", "ship.peers[0].colour"),
        (f"peers = [{{ ski = '{'a' * 40}' }}, {{ ski = '{'A' * 40}' }}]", "ship.peers[1].ski"),
    ],
)
def test_from_toml_errors_name_the_field(toml: str, path: str) -> None:
    with pytest.raises(ConfigError) as err:
        PeerTrust.from_toml(tomllib.loads(toml), path="ship", at=NOW)
    assert err.value.path == path and err.value.fix


def test_from_toml_not_a_table() -> None:
    with pytest.raises(ConfigError):
        PeerTrust.from_toml("x", path="ship", at=NOW)  # type: ignore[arg-type]


# ---------------------------------------------------------------- properties

DEVICE_CERTS = (HEMS, HEMS_NEW, WALLBOX, WALLBOX_NEW, STRANGER)
ALL_CERTS = (*DEVICE_CERTS, NO_SKI_CERT, WRONG_SKI_CERT, FORGED, CA_ISSUED)
offsets = st.floats(min_value=0, max_value=10_000, allow_nan=False)


@given(
    cert=st.sampled_from(DEVICE_CERTS),
    window=st.floats(min_value=1, max_value=600),
    at=st.floats(min_value=0, max_value=1),
    after=offsets,
)
def test_accepted_in_window_trusted_after_close_refused_after_unpair(
    cert: x509.Certificate, window: float, at: float, after: float
) -> None:
    trust = open_window(pt(pairing_window_s=window), now=NOW)
    when = NOW + dt.timedelta(seconds=window * at * 0.999)
    d = decide(trust, cert, now=when)
    assert d.accept and d.event == "paired"
    closed_at = NOW + dt.timedelta(seconds=window + after)
    assert not d.new_state.window_open(closed_at)
    assert decide(d.new_state, cert, now=closed_at).event == "trusted"
    gone = unpair(d.new_state, ski(cert), at=closed_at)
    assert decide(gone, cert, now=closed_at).event == "refused_denied"
    assert decide(open_window(gone, now=closed_at), cert, now=closed_at).event == "refused_denied"


@given(certs=st.lists(st.sampled_from(ALL_CERTS), max_size=8), auto=st.booleans(), window=st.booleans())
def test_decide_never_raises_and_keeps_skis_unique(
    certs: list[x509.Certificate], auto: bool, window: bool
) -> None:
    trust = pt(auto_accept=auto)
    if window:
        trust = open_window(trust, now=NOW)
    for cert in certs:
        d = decide(trust, cert, now=NOW)
        assert d.accept == (d.event in ("paired", "trusted"))
        assert (d.reason is None) == d.accept
        trust = d.new_state
    skis = [p.ski for p in trust.peers]
    assert len(skis) == len(set(skis))


class PairingModel(RuleBasedStateMachine):
    """PeerTrust against a dict model: SKI -> (state, device id, key known); one window end; time in seconds."""

    def __init__(self) -> None:
        super().__init__()
        self.t = 0.0
        self.auto = False
        self.trust = PeerTrust(False, 60.0)
        self.model: dict[str, tuple[str, str, bool]] = {}
        self.window_end: float | None = None

    def now(self) -> dt.datetime:
        return NOW + dt.timedelta(seconds=self.t)

    def in_window(self) -> bool:
        return self.window_end is not None and self.t < self.window_end

    @rule()
    def open(self) -> None:
        self.trust = open_window(self.trust, now=self.now())
        self.window_end = self.t + 60.0

    @rule()
    def close(self) -> None:
        self.trust = close_window(self.trust)
        self.window_end = None

    @rule(seconds=st.sampled_from([1.0, 30.0, 59.0, 61.0, 3600.0]))
    def time_passes(self, seconds: float) -> None:
        self.t += seconds

    @rule()
    def toggle_auto_accept(self) -> None:
        self.auto = not self.auto
        self.trust = attrs.evolve(self.trust, auto_accept=self.auto)

    @rule(cert=st.sampled_from(ALL_CERTS))
    def connect(self, cert: x509.Certificate) -> None:
        d = decide(self.trust, cert, now=self.now())
        expected = self.expect(cert)
        assert d.event == expected, (d.event, expected, d.detail)
        self.trust = d.new_state

    def expect(self, cert: x509.Certificate) -> str:
        """The model's decision, updating the model."""
        if cert in (NO_SKI_CERT, WRONG_SKI_CERT, FORGED, CA_ISSUED):
            return "refused_unknown"
        key, device = ski_of(cert), cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        assert isinstance(device, str)
        may_pair = self.auto or self.in_window()
        if key in self.model:
            state, dev, known = self.model[key]
            if state == "denied":
                return "refused_denied"
            if state == "trusted":
                self.model[key] = ("trusted", dev or device, True)
                return "trusted" if known else "paired"  # a registered SKI completes its pairing
            if may_pair:
                self.model[key] = ("trusted", dev, True)
                return "paired"
            return "pairing_requested"
        same = [k for k, (s, d, _) in self.model.items() if d == device and s != "denied"]
        if same:
            if self.in_window():
                del self.model[same[0]]
                self.model[key] = ("trusted", device, True)
                return "paired"
            return "refused_unknown"
        self.model[key] = ("trusted" if may_pair else "pending", device, True)
        return "paired" if may_pair else "pairing_requested"

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def unpair_one(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.model)))
        self.trust = unpair(self.trust, key, at=self.now())
        self.model[key] = ("denied", *self.model[key][1:])

    @rule(cert=st.sampled_from(DEVICE_CERTS))
    def register_one(self, cert: x509.Certificate) -> None:
        key = ski_of(cert)
        self.trust = register(self.trust, key, at=self.now())
        # registered by SKI only: device id and key hash are learned when it connects
        self.model[key] = ("trusted", *self.model.get(key, ("", "", False))[1:])

    @invariant()
    def agrees(self) -> None:
        got = {p.ski: p.state for p in self.trust.peers}
        assert got == {k: s for k, (s, _, _) in self.model.items()}
        assert self.trust.window_open(self.now()) == self.in_window()


PairingModel.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
test_pairing_model = PairingModel.TestCase
