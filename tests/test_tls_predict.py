"""The handshake predictor on its own (sans-IO): hand-written cases for every rule of ``evsim.tls.predict``.

The property test (``test_tls_property.py``) checks the predictor against real handshakes; these cases pin
the rules down one by one, so a rule that changes shows here by name.
"""

from __future__ import annotations

import ast
import datetime as dt
from pathlib import Path

import attrs
import pytest
from cryptography import x509

from evsim.pki import CertKey, issue_self_signed, ski, spki_sha256
from evsim.tls import Identity, TlsProfile, TrustStore
from evsim.tls import predict as predict_module
from evsim.tls.pairing import PairedPeer, PeerTrust
from evsim.tls.pins import ENFORCEMENTS, Pin, PinSet, spki_hex
from evsim.tls.predict import (
    ClientSide,
    Negotiated,
    Refused,
    ServerSide,
    View,
    build_chain,
    hostname_verdict,
    predict,
    reports_pin_mismatch,
    view,
)
from evsim.tls.trust import HostnameCheck, WildcardPolicy
from tests.pki_fixtures import CSMS_HOST, TEST_NOW, make_groups_pki

PKI = make_groups_pki(TEST_NOW)
A, B, SUB = PKI.a.cert, PKI.b.cert, PKI.a_sub.cert
GROUP_A = TrustStore("a", (A,))
SECOND = dt.timedelta(seconds=1)
EC_A, RSA_A = PKI.servers["ec_a"], PKI.servers["rsa_a"]

TLS13 = TlsProfile(versions=("1.3",))
TLS12 = TlsProfile(versions=("1.2",))
ECDSA_128 = "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"
ECDSA_256 = "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"
ECDSA_CBC = "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA"
RSA_KX = "TLS_RSA_WITH_AES_256_GCM_SHA384"
ECDHE_RSA = "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"


DEFAULT = TlsProfile()


def client(profile: TlsProfile = DEFAULT, trust: TrustStore = GROUP_A, **kw: object) -> ClientSide:
    kw.setdefault("server_name", CSMS_HOST)
    return ClientSide(profile, trust, **kw)  # type: ignore[arg-type]


def server(profile: TlsProfile = DEFAULT, identity: str = "ec_a", **kw: object) -> ServerSide:
    return ServerSide(profile, PKI.servers[identity], **kw)  # type: ignore[arg-type]


def tls12(*suites: str, preference: str = "server") -> TlsProfile:
    return TlsProfile(versions=("1.2",), cipher_suites={"1.2": suites}, suite_preference=preference)  # type: ignore[arg-type]


def legacy(*versions: str, suites: tuple[str, ...] = (ECDSA_CBC,)) -> TlsProfile:
    table = {"1.2": suites, "1.3": ("TLS_AES_256_GCM_SHA384",)} if "1.3" in versions else {"1.2": suites}
    return TlsProfile(versions=versions, cipher_suites=table, insecure_legacy_versions=True)


# ---------------------------------------------------------------- rule 1: versions


@pytest.mark.parametrize(
    ("client_profile", "server_profile", "version"),
    [
        (TlsProfile(), TlsProfile(), "1.3"),
        (TlsProfile(), TLS12, "1.2"),
        (TLS12, TlsProfile(), "1.2"),
        (legacy("1.3", "1.2", "1.1", suites=(ECDSA_128, ECDSA_CBC)), legacy("1.2", "1.1", "1.0"), "1.2"),
        (legacy("1.2", "1.1"), legacy("1.1", "1.0"), "1.1"),  # client max <= 1.2: min of the maxima
    ],
)
def test_the_newest_common_version(
    client_profile: TlsProfile, server_profile: TlsProfile, version: str
) -> None:
    outcome = predict(client(client_profile), server(server_profile), now=TEST_NOW)
    assert isinstance(outcome, Negotiated) and outcome.version == version


@pytest.mark.parametrize(
    ("client_profile", "server_profile"),
    [(TLS12, TLS13), (TLS13, TLS12), (legacy("1.1"), TlsProfile()), (TlsProfile(), legacy("1.1", "1.0"))],
)
def test_no_common_version_is_refused_by_the_server(
    client_profile: TlsProfile, server_profile: TlsProfile
) -> None:
    outcome = predict(client(client_profile), server(server_profile), now=TEST_NOW)
    assert outcome == Refused("server", "downgrade_refused", "downgrade_refused")


def test_a_tls12_client_refuses_an_older_server_pick() -> None:
    """The server picks TLS 1.1 for a client that only sends 'up to 1.2'; the client refuses the
    ServerHello, and the server reads the rejected alert record as that version refusal too."""
    outcome = predict(client(tls12(ECDSA_128, ECDSA_CBC)), server(legacy("1.1", "1.0")), now=TEST_NOW)
    assert outcome == Refused("client", "downgrade_refused", "downgrade_refused")
    assert view(outcome, "server") == View("downgrade_refused", remote=True, stage="handshake")
    # ... unless no suite fits the server's pick: then the server refuses first
    outcome = predict(client(tls12(ECDSA_128)), server(legacy("1.1", "1.0")), now=TEST_NOW)
    assert outcome == Refused("server", "cipher_refused", "cipher_refused")


# ---------------------------------------------------------------- rule 2: suites


def test_tls13_has_no_fallback_to_a_shared_tls12_suite() -> None:
    c = TlsProfile(cipher_suites={"1.3": ["TLS_AES_128_GCM_SHA256"], "1.2": [ECDSA_128]})
    s = TlsProfile(cipher_suites={"1.3": ["TLS_AES_256_GCM_SHA384"], "1.2": [ECDSA_128]})
    assert predict(client(c), server(s), now=TEST_NOW) == Refused(
        "server", "cipher_refused", "cipher_refused"
    )


@pytest.mark.parametrize(
    ("preference", "suite"), [("server", "TLS_AES_256_GCM_SHA384"), ("client", "TLS_AES_128_GCM_SHA256")]
)
def test_tls13_suite_preference(preference: str, suite: str) -> None:
    c = TlsProfile(
        versions=("1.3",), cipher_suites={"1.3": ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384"]}
    )
    s = TlsProfile(
        versions=("1.3",),
        cipher_suites={"1.3": ["TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256"]},
        suite_preference=preference,  # type: ignore[arg-type]
    )
    assert predict(client(c), server(s), now=TEST_NOW) == Negotiated("1.3", suite)


@pytest.mark.parametrize(("preference", "suite"), [("server", ECDSA_256), ("client", ECDSA_128)])
def test_tls12_suite_preference(preference: str, suite: str) -> None:
    outcome = predict(
        client(tls12(ECDSA_128, ECDSA_256)),
        server(tls12(ECDSA_256, ECDSA_128, preference=preference)),
        now=TEST_NOW,
    )
    assert outcome == Negotiated("1.2", suite)


def test_the_server_key_restricts_tls12_suites() -> None:
    mixed = tls12(ECDSA_128, RSA_KX, ECDHE_RSA, preference="client")
    assert predict(client(mixed), server(mixed, "ec_a"), now=TEST_NOW) == Negotiated("1.2", ECDSA_128)
    assert predict(client(mixed), server(mixed, "rsa_a"), now=TEST_NOW) == Negotiated("1.2", RSA_KX)
    refused = Refused("server", "cipher_refused", "cipher_refused")
    assert predict(client(tls12(RSA_KX, ECDHE_RSA)), server(TLS12, "ec_a"), now=TEST_NOW) == refused
    assert predict(client(tls12(ECDSA_128)), server(TLS12, "rsa_a"), now=TEST_NOW) == refused
    # TLS 1.3 suites do not depend on the key type
    assert predict(client(TLS13), server(TLS13, "rsa_a"), now=TEST_NOW) == Negotiated(
        "1.3", "TLS_AES_256_GCM_SHA384"
    )


def test_tls11_only_uses_suites_that_exist_in_tls11() -> None:
    s = legacy("1.2", "1.1", suites=(ECDSA_128, "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", ECDSA_CBC))
    c = legacy("1.1", suites=(ECDSA_CBC,))
    assert predict(client(c), server(s), now=TEST_NOW) == Negotiated("1.1", ECDSA_CBC)


# ---------------------------------------------------------------- rule 3: the client verifies the server


def refused_by_client(
    reason: str, alert: str, version: str = "1.3", suite: str = "TLS_AES_256_GCM_SHA384"
) -> Refused:
    return Refused("client", reason, f"peer_alert:{alert}", "handshake", Negotiated(version, suite))


@pytest.mark.parametrize(
    ("anchors", "identity", "trusted"),
    [
        ((A,), "ec_a", True),
        ((B,), "ec_a", False),  # the other root-CA group
        ((A, B), "ec_b", True),
        ((A,), "ec_sub", True),  # through the sub-CA the server sends
        ((SUB,), "ec_sub", False),  # a sub-CA alone anchors nothing (no partial chains)
        ((SUB,), "ec_a", False),
        ((A,), "leaf_only_sub", False),  # the sub-CA is neither sent nor anchored
        ((A, SUB), "leaf_only_sub", True),  # an anchored sub-CA completes the chain to root A
        ((SUB,), "leaf_only_sub", False),
        ((PKI.twin.cert,), "ec_a", False),  # same name as root A, other key
        ((PKI.twin.cert, A), "ec_a", True),
    ],
)
def test_root_ca_groups(anchors: tuple[x509.Certificate, ...], identity: str, trusted: bool) -> None:
    outcome = predict(client(trust=TrustStore("t", anchors)), server(identity=identity), now=TEST_NOW)
    expected = (
        Negotiated("1.3", "TLS_AES_256_GCM_SHA384")
        if trusted
        else refused_by_client("cert_invalid:unknown_ca", "unknown_ca")
    )
    assert outcome == expected


def test_a_leaf_as_anchor_is_not_trusted() -> None:
    leaf = EC_A.leaf
    assert build_chain(EC_A.chain, (leaf,)) is None
    assert build_chain(PKI.servers["ec_sub"].chain, (A,)) == (PKI.servers["ec_sub"].leaf, SUB, A)


def test_validity_at_whole_seconds_inclusive() -> None:
    end = PKI.servers["short_a"].leaf.not_valid_after_utc
    start = EC_A.leaf.not_valid_before_utc
    half = dt.timedelta(milliseconds=500)
    short = server(identity="short_a")
    expired = refused_by_client("cert_invalid:expired", "certificate_expired")
    assert isinstance(predict(client(), short, now=end), Negotiated)
    assert isinstance(predict(client(), short, now=end + half), Negotiated)  # int(timestamp)
    assert predict(client(), short, now=end + SECOND) == expired
    assert isinstance(predict(client(), short, now=start), Negotiated)
    early = refused_by_client("cert_invalid:not_yet_valid", "bad_certificate")
    assert predict(client(), short, now=start - half) == early  # floor, not round
    assert isinstance(
        predict(client(trust=TrustStore("a", (A,), time_check="off")), short, now=end + SECOND), Negotiated
    )


def test_validity_is_checked_from_the_root_down() -> None:
    """``old_late``: the leaf expired 3 days ago and its root starts in 10 days: the root speaks first."""
    late = client(trust=TrustStore("late", (PKI.late.cert,)))
    assert predict(late, server(identity="old_late"), now=TEST_NOW) == refused_by_client(
        "cert_invalid:not_yet_valid", "bad_certificate"
    )
    assert predict(
        late, server(identity="old_late"), now=TEST_NOW + 30 * dt.timedelta(days=1)
    ) == refused_by_client("cert_invalid:expired", "certificate_expired")


def test_the_order_of_client_checks() -> None:
    later = TEST_NOW + 800 * dt.timedelta(days=1)
    untrusted_and_expired = predict(client(trust=TrustStore("b", (B,))), server(), now=later)
    assert untrusted_and_expired == refused_by_client("cert_invalid:unknown_ca", "unknown_ca")
    expired_and_misnamed = predict(client(server_name="other.example"), server(), now=later)
    assert expired_and_misnamed == refused_by_client("cert_invalid:expired", "certificate_expired")
    assert predict(client(server_name="other.example"), server(), now=TEST_NOW) == refused_by_client(
        "cert_invalid:hostname_mismatch", "internal_error"
    )
    assert isinstance(
        predict(client(server_name=None), server(), now=TEST_NOW), Negotiated
    )  # no name: no check


def test_insecure_skip_verify_accepts_anything() -> None:
    insecure = TrustStore("x", (), insecure_skip_verify=True)
    far = TEST_NOW + 900 * dt.timedelta(days=1)
    assert isinstance(
        predict(client(trust=insecure, server_name="x.y"), server(identity="ec_b"), now=far), Negotiated
    )


WILD, CN_ONLY, ALT_SAN = (PKI.servers[k].leaf for k in ("wild_a", "cn_only_a", "alt_san_a"))
OK, MISMATCH, WILDCARD = None, "cert_invalid:hostname_mismatch", "cert_invalid:wildcard"


@pytest.mark.parametrize(
    ("cert", "host", "mode", "wildcards", "expected"),
    [
        (EC_A.leaf, CSMS_HOST, "san+cn", "deny", OK),
        (EC_A.leaf, "CSMS.evsim.TEST.", "san+cn", "deny", OK),  # case and a final dot do not matter
        (EC_A.leaf, "alt.evsim.test", "san+cn", "deny", MISMATCH),
        (EC_A.leaf, "anything", "off", "deny", OK),
        (CN_ONLY, CSMS_HOST, "cn", "deny", OK),
        (CN_ONLY, CSMS_HOST, "san", "deny", MISMATCH),  # RFC 6125: no SAN, no match
        (CN_ONLY, CSMS_HOST, "san+cn", "deny", OK),  # no SAN dNSName: the CN decides
        (ALT_SAN, CSMS_HOST, "cn", "deny", OK),
        (ALT_SAN, CSMS_HOST, "san+cn", "deny", MISMATCH),  # the SAN must match too when there is one
        (ALT_SAN, "alt.evsim.test", "san", "deny", OK),
        (ALT_SAN, "alt.evsim.test", "san+cn", "deny", MISMATCH),
        (WILD, CSMS_HOST, "san+cn", "deny", WILDCARD),
        (WILD, CSMS_HOST, "san+cn", "allow", OK),
        (WILD, "alt.evsim.test", "san", "allow", OK),
        (WILD, "evsim.test", "san+cn", "allow", MISMATCH),  # '*' stands for exactly one label
        (WILD, "a.b.evsim.test", "cn", "allow", MISMATCH),
        (EC_A.leaf, "127.0.0.1", "san+cn", "deny", MISMATCH),  # an IP literal needs an IP SAN
    ],
)
def test_hostname_rules(
    cert: x509.Certificate, host: str, mode: HostnameCheck, wildcards: WildcardPolicy, expected: str | None
) -> None:
    assert hostname_verdict(cert, host, mode, wildcards) == expected


def test_ip_literals_and_top_level_wildcards() -> None:
    ip_cert = PKI.a.issue_server("127.0.0.1", ips=("127.0.0.1",), cn_in_san=False, now=TEST_NOW).cert
    assert hostname_verdict(ip_cert, "127.0.0.1", "san", "deny") is None
    assert hostname_verdict(ip_cert, "127.0.0.1", "cn", "deny") is None  # the CN reads as the same address
    assert hostname_verdict(ip_cert, "127.0.0.2", "san+cn", "deny") == MISMATCH
    tld = PKI.a.issue_server("*.test", now=TEST_NOW).cert
    assert hostname_verdict(tld, "evsim.test", "cn", "allow") == MISMATCH


# ---------------------------------------------------------------- rule 4: the server verifies the client


def mtls(client_auth: str, version: str = "1.3") -> ServerSide:
    return server(TlsProfile(versions=(version,)), trust=GROUP_A, client_auth=client_auth)


@pytest.mark.parametrize("version", ["1.3", "1.2"])
def test_missing_client_certificate(version: str) -> None:
    assert isinstance(predict(client(), mtls("optional", version), now=TEST_NOW), Negotiated)
    outcome = predict(client(), mtls("required", version), now=TEST_NOW)
    assert isinstance(outcome, Refused)
    assert (outcome.side, outcome.reason) == ("server", "cert_invalid:no_client_cert")
    if version == "1.3":
        assert (outcome.peer_reason, outcome.peer_stage) == ("peer_alert:certificate_required", "first_read")
        # the client's handshake completed: its TlsInfo shows what was agreed
        assert view(outcome, "client") == View(
            "peer_alert:certificate_required", True, "first_read", Negotiated("1.3", "TLS_AES_256_GCM_SHA384")
        )
    else:
        assert (outcome.peer_reason, outcome.peer_stage) == ("peer_alert:handshake_failure", "handshake")
        assert view(outcome, "client") == View("peer_alert:handshake_failure", True, "handshake")
    assert view(outcome, "server") == View("cert_invalid:no_client_cert", False, "handshake")


@pytest.mark.parametrize(
    ("identity", "client_auth", "at", "reason", "alert"),
    [
        ("cli_b", "required", TEST_NOW, "cert_invalid:unknown_ca", "unknown_ca"),
        ("cli_b", "optional", TEST_NOW, "cert_invalid:unknown_ca", "unknown_ca"),  # a sent cert is verified
        ("cli_short_a", "required", 2, "cert_invalid:expired", "certificate_expired"),
        ("cli_sub", "required", TEST_NOW, None, None),  # the chain it sends reaches root A
        ("cli_b", "none", TEST_NOW, None, None),  # not requested, not sent
    ],
)
def test_client_certificates(
    identity: str, client_auth: str, at: dt.datetime | int, reason: str | None, alert: str | None
) -> None:
    now = at if isinstance(at, dt.datetime) else TEST_NOW + at * dt.timedelta(days=1)
    outcome = predict(client(identity=PKI.clients[identity]), mtls(client_auth), now=now)
    if reason is None:
        assert isinstance(outcome, Negotiated)
    else:
        agreed = Negotiated("1.3", "TLS_AES_256_GCM_SHA384")
        assert outcome == Refused("server", reason, f"peer_alert:{alert}", "first_read", agreed)


def test_an_insecure_server_store_still_wants_a_required_certificate() -> None:
    insecure = TrustStore("x", (), insecure_skip_verify=True)
    s = server(trust=insecure, client_auth="required")
    assert isinstance(predict(client(identity=PKI.clients["cli_b"]), s, now=TEST_NOW), Negotiated)
    outcome = predict(client(), s, now=TEST_NOW)
    assert isinstance(outcome, Refused) and outcome.reason == "cert_invalid:no_client_cert"


def test_a_client_refusal_comes_before_the_server_checks_the_client() -> None:
    outcome = predict(client(trust=TrustStore("b", (B,))), mtls("required", "1.2"), now=TEST_NOW)
    assert outcome == refused_by_client("cert_invalid:unknown_ca", "unknown_ca", "1.2", ECDSA_128)


# ---------------------------------------------------------------- pins, pairing and purity


def test_pins_are_checked_after_the_chain() -> None:
    root_pin = PinSet(pins=(Pin("root", spki_hex(A) or ""),))
    assert isinstance(predict(client(pins=root_pin), server(), now=TEST_NOW), Negotiated)
    other = PinSet(pins=(Pin("leaf", spki_hex(PKI.servers["ec_b"].leaf) or ""),))
    outcome = predict(client(pins=other), server(), now=TEST_NOW)
    agreed = Negotiated("1.3", "TLS_AES_256_GCM_SHA384")
    # the refusal comes from the Python verify callback: the server hears internal_error
    assert outcome == Refused("client", "pin_mismatch", "peer_alert:internal_error", "handshake", agreed)
    assert view(outcome, "client") == View("pin_mismatch", False, "handshake")
    assert view(outcome, "server") == View("peer_alert:internal_error", True, "handshake")
    report_only = PinSet(enforcement="report_only", pins=other.pins)
    assert isinstance(predict(client(pins=report_only), server(), now=TEST_NOW), Negotiated)
    # the intermediate target is decided on the verified chain, which the predictor builds
    sub_pin = PinSet(pins=(Pin("intermediate", spki_hex(SUB) or ""),))
    assert isinstance(predict(client(pins=sub_pin), server(identity="ec_sub"), now=TEST_NOW), Negotiated)
    # a chain refusal wins over the pins
    outcome = predict(client(pins=root_pin, trust=TrustStore("b", (B,))), server(), now=TEST_NOW)
    assert isinstance(outcome, Refused) and outcome.reason == "cert_invalid:unknown_ca"


def test_released_and_expired_pins_do_not_match() -> None:
    leaf = spki_hex(EC_A.leaf) or ""
    for pin in (Pin("leaf", leaf, "released"), Pin("leaf", leaf, not_after=TEST_NOW - SECOND)):
        outcome = predict(client(pins=PinSet(pins=(Pin("leaf", "00" * 32), pin))), server(), now=TEST_NOW)
        assert isinstance(outcome, Refused) and outcome.reason == "pin_mismatch"
    at_the_instant = PinSet(pins=(Pin("leaf", "00" * 32), Pin("leaf", leaf, "backup", not_after=TEST_NOW)))
    assert isinstance(predict(client(pins=at_the_instant), server(), now=TEST_NOW), Negotiated)


def test_without_a_trusted_chain_pins_read_the_chain_as_sent() -> None:
    insecure = TrustStore("x", (), insecure_skip_verify=True)
    # ec_sub sends [leaf, sub-CA]: the sub-CA is not self-signed, so it counts as an intermediate, no root
    sub_pin = PinSet(pins=(Pin("intermediate", spki_hex(SUB) or ""),))
    assert isinstance(
        predict(client(trust=insecure, pins=sub_pin), server(identity="ec_sub"), now=TEST_NOW), Negotiated
    )
    root_pin = PinSet(pins=(Pin("root", spki_hex(A) or ""),))
    outcome = predict(client(trust=insecure, pins=root_pin), server(identity="ec_sub"), now=TEST_NOW)
    assert isinstance(outcome, Refused) and outcome.reason == "pin_mismatch"


DEVICE = issue_self_signed("HEMS-0001", now=TEST_NOW)
DEVICE_REKEYED = issue_self_signed("HEMS-0001", now=TEST_NOW)
WALLBOX = Identity.from_cert_key(issue_self_signed("WB-0002", now=TEST_NOW))
PINNED = TrustStore("ship", (), hostname="off", mode="pinned_peers")


def test_a_pinned_peers_client_accepts_a_pinned_self_signed_server_within_its_validity() -> None:
    pinned = PinSet(pins=(Pin("root", spki_hex(WALLBOX.leaf) or ""),))
    ship = ServerSide(TLS13, WALLBOX)
    assert isinstance(predict(client(trust=PINNED, pins=pinned), ship, now=TEST_NOW), Negotiated)
    outcome = predict(client(trust=PINNED, pins=pinned), ship, now=TEST_NOW + dt.timedelta(days=3651))
    assert isinstance(outcome, Refused)
    assert (outcome.reason, outcome.peer_reason) == ("cert_invalid:expired", "peer_alert:certificate_expired")
    other = PinSet(pins=(Pin("leaf", spki_hex(EC_A.leaf) or ""),))
    outcome = predict(client(trust=PINNED, pins=other), ship, now=TEST_NOW)
    assert isinstance(outcome, Refused)
    assert (outcome.reason, outcome.peer_reason) == ("pin_mismatch", "peer_alert:internal_error")


def _entry(device: CertKey, state: str, **kw: object) -> PairedPeer:
    return PairedPeer(ski(device.cert), spki_sha256(device.cert), state, TEST_NOW, "HEMS-0001", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("trust", "now_offset_s", "expected"),
    [
        (PeerTrust(), 0, "pairing_refused:pending"),
        (PeerTrust(auto_accept=True), 0, None),
        (PeerTrust(window_until=TEST_NOW + SECOND), 0, None),
        (PeerTrust(window_until=TEST_NOW + SECOND), 1, "pairing_refused:pending"),  # the end is exclusive
        (PeerTrust(peers=(_entry(DEVICE, "trusted"),)), 0, None),
        (PeerTrust(peers=(_entry(DEVICE, "denied"),), auto_accept=True), 0, "pairing_refused:denied"),
        (PeerTrust(peers=(_entry(DEVICE, "pending"),)), 0, "pairing_refused:pending"),
        (PeerTrust(peers=(_entry(DEVICE, "pending"),), auto_accept=True), 0, None),
        (
            PeerTrust(peers=(attrs.evolve(_entry(DEVICE, "trusted"), spki_sha256="ab" * 32),)),
            0,
            "pairing_refused:key_mismatch",
        ),
        # the same device id with another key: re-pairing needs a window, auto_accept is not enough
        (
            PeerTrust(peers=(_entry(DEVICE_REKEYED, "trusted"),), auto_accept=True),
            0,
            "pairing_refused:unknown",
        ),
        (PeerTrust(peers=(_entry(DEVICE_REKEYED, "trusted"),), window_until=TEST_NOW + SECOND), 0, None),
    ],
)
def test_pairing_rules(trust: PeerTrust, now_offset_s: int, expected: str | None) -> None:
    ship = ServerSide(TLS12, WALLBOX, client_auth="pairing", pairing=trust)
    pinned = PinSet(pins=(Pin("leaf", spki_hex(WALLBOX.leaf) or ""),))
    hems = client(TLS12, PINNED, identity=Identity.from_cert_key(DEVICE), pins=pinned)
    outcome = predict(hems, ship, now=TEST_NOW + dt.timedelta(seconds=now_offset_s))
    if expected is None:
        assert isinstance(outcome, Negotiated)
    else:
        assert isinstance(outcome, Refused)
        assert (outcome.side, outcome.reason, outcome.peer_reason) == (
            "server",
            expected,
            "peer_alert:internal_error",
        )


def test_pairing_requires_a_self_signed_client_certificate() -> None:
    ship = ServerSide(TLS13, WALLBOX, client_auth="pairing", pairing=PeerTrust(auto_accept=True))
    pinned = PinSet(pins=(Pin("leaf", spki_hex(WALLBOX.leaf) or ""),))
    ca_client = client(TLS13, PINNED, identity=PKI.clients["cli_a"], pins=pinned)
    outcome = predict(ca_client, ship, now=TEST_NOW)
    assert isinstance(outcome, Refused) and outcome.reason == "cert_invalid:not_self_signed"
    assert outcome.peer_stage == "first_read"  # TLS 1.3: the client learns it on its first read
    outcome = predict(client(TLS13, PINNED, pins=pinned), ship, now=TEST_NOW)
    assert isinstance(outcome, Refused)
    assert (outcome.reason, outcome.peer_reason) == (
        "cert_invalid:no_client_cert",
        "peer_alert:certificate_required",
    )


def test_views() -> None:
    ok = Negotiated("1.3", "TLS_AES_128_GCM_SHA256")
    assert view(ok, "client") == view(ok, "server") == View(None, negotiated=ok)
    downgrade = Refused("server", "downgrade_refused", "downgrade_refused")
    assert view(downgrade, "server") == View("downgrade_refused", False, "handshake")
    assert view(downgrade, "client") == View("downgrade_refused", True, "handshake")


def test_the_predictor_reads_only_the_model() -> None:
    """No OpenSSL binding and none of the engine's modules: the oracle must not share the engine's code."""
    source = Path(predict_module.__file__).read_text(encoding="utf-8")
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    engine = {
        "OpenSSL",
        "ssl",
        "evsim.tls.context",
        "evsim.tls.stream",
        "evsim.tls.engine",
        "evsim.tls.failures",
        "evsim.tls.verify",
        "evsim.tls._ossl",
    }
    assert not {m for m in imported if m.split(".")[0] in ("OpenSSL", "ssl") or m in engine}
    # the pin and pairing modules give the model (values, reason names), not their decisions
    names = {
        alias.name
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ImportFrom) and node.module in ("evsim.tls.pins", "evsim.tls.pairing")
        for alias in node.names
    }
    assert not names & {"check", "decide", "peer_identity", "add_tofu"}


def test_a_pin_mismatch_is_reported_under_report_only_too_but_only_when_the_pins_are_reached() -> None:
    other = (Pin("leaf", spki_hex(PKI.servers["ec_b"].leaf) or ""),)
    for enforcement in ENFORCEMENTS:
        pins = PinSet(enforcement, other)
        assert reports_pin_mismatch(client(pins=pins), server(), now=TEST_NOW)
        # the chain check refuses first: the pins are never consulted
        untrusted = client(pins=pins, trust=TrustStore("b", (B,)))
        assert not reports_pin_mismatch(untrusted, server(), now=TEST_NOW)
    matching = PinSet(pins=(Pin("root", spki_hex(A) or ""),))
    assert not reports_pin_mismatch(client(pins=matching), server(), now=TEST_NOW)
    assert not reports_pin_mismatch(client(), server(), now=TEST_NOW)
