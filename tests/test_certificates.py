"""Certificate management over OCPP, sans-IO: the checks of evsim.pki.lifecycle and the station's decisions
(evsim.nodes.certificates) - A02/A03 renewal, CertificateSigned validation, M03-M05."""

from __future__ import annotations

import base64
import datetime as dt
import math
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from evsim.errors import ConfigError
from evsim.nodes.certificates import CertificateSettings, StationCertificates
from evsim.pki import CertificateAuthority, generate_key, make_csr
from evsim.pki.keys import certs_to_pem
from evsim.pki.lifecycle import (
    CertificateRefused,
    certificate_hash_data,
    check_csr,
    check_root,
    check_signed_chain,
    hash_data_matches,
)
from tests.pki_fixtures import ORG, TEST_NOW, make_test_pki

SID = "CS-0001"
PKI = make_test_pki(TEST_NOW)


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


# ---------------------------------------------------------------- check_csr (CSMS side)


def test_check_csr_accepts_a_good_request() -> None:
    key = generate_key()
    info = check_csr(make_csr(key, SID, ORG), expected_cn=SID, expected_org=ORG)
    assert info.common_name == SID
    assert info.organization == ORG


def tampered_csr(key: Any, cn: str = SID, org: str = ORG) -> bytes:
    """A CSR whose signature no longer verifies (the last byte of the signature flipped)."""
    der = bytearray(x509.load_pem_x509_csr(make_csr(key, cn, org)).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01
    body = base64.encodebytes(bytes(der))
    return b"-----BEGIN CERTIFICATE REQUEST-----\n" + body + b"-----END CERTIFICATE REQUEST-----\n"


def test_check_csr_refuses_wrong_signature() -> None:
    with pytest.raises(CertificateRefused) as info:
        check_csr(tampered_csr(generate_key()), expected_cn=SID, expected_org=ORG)
    assert info.value.reason == "bad_signature"


@pytest.mark.parametrize(
    ("cn", "org", "reason"), [("CS-OTHER", ORG, "wrong_cn"), (SID, "someone-else", "wrong_org")]
)
def test_check_csr_refuses_wrong_subject(cn: str, org: str, reason: str) -> None:
    with pytest.raises(CertificateRefused) as info:
        check_csr(make_csr(generate_key(), cn, org), expected_cn=SID, expected_org=ORG)
    assert info.value.reason == reason


def test_check_csr_refuses_huge_and_garbage_input_without_parsing() -> None:
    with pytest.raises(CertificateRefused) as info:
        check_csr("A" * 10_000_000, expected_cn=SID, expected_org=ORG)
    assert info.value.reason == "too_large"
    with pytest.raises(CertificateRefused) as info:
        check_csr("-----BEGIN CERTIFICATE REQUEST-----\nnot base64\n", expected_cn=SID, expected_org=ORG)
    assert info.value.reason == "malformed"


# ---------------------------------------------------------------- check_signed_chain (station side)


def _signed(key: Any, *, ca: CertificateAuthority = PKI.station_ca, cn: str = SID, org: str = ORG) -> str:
    cert = ca.sign_csr(make_csr(key, cn, org), now=TEST_NOW)
    return certs_to_pem((cert, *ca.intermediates)).decode()


def _check(chain: str, key: Any, **kw: Any) -> tuple[x509.Certificate, ...]:
    args: dict[str, Any] = {
        "anchors": (PKI.root.cert,),
        "now": TEST_NOW,
        "expected_cn": SID,
        "expected_org": ORG,
        "expected_public_key_der": key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    }
    args.update(kw)
    return check_signed_chain(chain, **args)


def test_signed_chain_valid() -> None:
    key = generate_key()
    path = _check(_signed(key), key)
    assert path[0].subject.rfc4514_string() == f"O={ORG},CN={SID}"
    assert path[1] == PKI.station_ca.cert
    # the root may be sent too; it is dropped
    with_root = _signed(key) + _pem(PKI.root.cert)
    assert len(_check(with_root, key)) == 2


def _refusal(chain: str, key: Any, **kw: Any) -> str:
    with pytest.raises(CertificateRefused) as info:
        _check(chain, key, **kw)
    return info.value.reason


def test_signed_chain_invalid_cases() -> None:
    key = generate_key()
    good = _signed(key)
    assert _refusal(_signed(key, cn="CS-9999"), key) == "wrong_cn"
    assert _refusal(_signed(key, org="evil"), key) == "wrong_org"
    assert _refusal(good, generate_key()) == "key_mismatch"
    assert _refusal(good, key, expected_public_key_der=None) == "no_pending_request"
    assert _refusal(good, key, now=TEST_NOW + dt.timedelta(days=800)) == "expired"
    assert _refusal(good, key, now=TEST_NOW - dt.timedelta(days=1)) == "not_yet_valid"
    assert _refusal(_signed(key, ca=PKI.evil), key) == "untrusted"
    assert _refusal(good, key, anchors=(PKI.evil.cert,)) == "untrusted"
    assert _refusal(good, key, max_bytes=len(good) - 1) == "too_large"
    # leaf only, without the sub-CA that links it to the root
    leaf_only = _pem(x509.load_pem_x509_certificates(good.encode())[0])
    assert _refusal(leaf_only, key) == "untrusted"
    # a CA certificate as the leaf
    assert _refusal(_pem(PKI.station_ca.cert), key) == "leaf_is_ca"
    # the sub-CA replaced by a leaf (not a CA) with the same name cannot link the chain
    fake_ca = PKI.root.issue_client("evsim Test Station Sub-CA", ORG, now=TEST_NOW)
    assert _refusal(leaf_only + _pem(fake_ca.cert), key) == "not_a_ca"


def test_signed_chain_of_a_thousand_certificates_is_refused_by_counting() -> None:
    key = generate_key()
    one = _pem(PKI.station_ca.cert)
    huge = _signed(key) + one * 1000
    assert _refusal(huge, key, max_bytes=10**8) == "too_many_certs"
    assert _refusal(huge, key) == "too_large"
    assert _refusal("-----BEGIN CERTIFICATE-----\n" + "A" * 5000, key) == "malformed"
    assert _refusal("hello", key) == "malformed"


def test_root_checks_and_hash_data() -> None:
    check_root(PKI.root.cert, now=TEST_NOW)
    with pytest.raises(CertificateRefused, match="not a CA"):
        check_root(PKI.server.cert, now=TEST_NOW)
    with pytest.raises(CertificateRefused) as info:
        check_root(PKI.evil.cert, now=TEST_NOW, current_root=PKI.root.cert)
    assert info.value.reason == "not_signed_by_root"
    check_root(PKI.station_ca.cert, now=TEST_NOW, current_root=PKI.root.cert)  # signed by the root
    data = certificate_hash_data(PKI.root.cert)
    assert hash_data_matches(data, PKI.root.cert)
    assert hash_data_matches({**data, "issuerKeyHash": data["issuerKeyHash"].upper()}, PKI.root.cert)
    assert not hash_data_matches(data, PKI.evil.cert)
    assert not hash_data_matches({**data, "hashAlgorithm": "MD5"}, PKI.root.cert)


# ---------------------------------------------------------------- the station's decisions


class Sink:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.security: list[tuple[str, str]] = []

    def emit(self, kind: str, **fields: Any) -> None:
        self.events.append((kind, fields))

    def security_event(self, kind: str, info: str) -> None:
        self.security.append((kind, info))

    def kinds(self) -> list[str]:
        return [k for k, _ in self.events]


def _station(sink: Sink, **settings: Any) -> StationCertificates:
    return StationCertificates(
        SID,
        CertificateSettings(**settings),
        identity=PKI.station_cert(SID),
        csms_roots=(PKI.root.cert,),
        emit=sink.emit,
        security_event=sink.security_event,
    )


def _sign(payload: dict[str, Any], ca: CertificateAuthority = PKI.station_ca) -> str:
    cert = ca.sign_csr(payload["csr"].encode(), now=TEST_NOW)
    return certs_to_pem((cert, *ca.intermediates)).decode()


def _candidate(st: StationCertificates) -> object:
    return st.candidate


def _identity(st: StationCertificates) -> object:
    return st.identity


def test_a02_happy_path_and_switch() -> None:
    sink = Sink()
    st = _station(sink)
    old = st.identity
    assert st.trigger(0.0) == "Accepted"
    request = st.poll(0.0, TEST_NOW)
    assert request is not None and request["certificateType"] == "ChargingStationCertificate"
    csr = x509.load_pem_x509_csr(request["csr"].encode())
    assert csr.is_signature_valid
    assert "PRIVATE" not in request["csr"]
    st.request_answered("Accepted", 1.0)
    version = st.version
    answer = st.certificate_signed({"certificateChain": _sign(request)}, 2.0, TEST_NOW)
    assert answer == {"status": "Accepted"}
    assert st.version > version
    assert st.take_reconnect() and not st.take_reconnect()
    assert st.client_certificate() is st.candidate and st.identity is old  # old kept until it works
    assert st.candidate is not None
    st.connection_succeeded()
    assert _identity(st) is not old and _candidate(st) is None
    assert "client_certificate_switched" in sink.kinds()
    assert not sink.security


def test_a02_candidate_that_cannot_connect_is_discarded() -> None:
    sink = Sink()
    st = _station(sink, renewed_attempts=2)
    old = st.identity
    st.trigger(0.0)
    request = st.poll(0.0, TEST_NOW)
    assert request is not None
    st.request_answered("Accepted", 1.0)
    st.certificate_signed({"certificateChain": _sign(request)}, 2.0, TEST_NOW)
    st.connection_failed(used_candidate=True)
    assert st.candidate is not None
    st.connection_failed(used_candidate=True)
    assert _candidate(st) is None and st.client_certificate() is old
    assert [k for k, _ in sink.security] == ["DiscardedRenewedClientCertificate"]
    assert "client_certificate_discarded" in sink.kinds()


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("wrong_ca", "untrusted"),
        ("wrong_key", "key_mismatch"),
        ("wrong_type", "unsupported_type"),
        ("garbage", "malformed"),
        ("too_long", "too_large"),
    ],
)
def test_a02_invalid_certificate_signed_is_rejected_once(case: str, reason: str) -> None:
    sink = Sink()
    st = _station(sink, max_chain_size=5600)
    st.trigger(0.0)
    request = st.poll(0.0, TEST_NOW)
    assert request is not None
    st.request_answered("Accepted", 1.0)
    payload: dict[str, Any] = {"certificateChain": _sign(request)}
    if case == "wrong_ca":
        payload["certificateChain"] = _sign(request, PKI.evil)
    elif case == "wrong_key":
        payload["certificateChain"] = _sign({"csr": make_csr(generate_key(), SID, ORG).decode()})
    elif case == "wrong_type":
        payload["certificateType"] = "V2GCertificate"
    elif case == "garbage":
        payload["certificateChain"] = "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n"
    else:
        payload["certificateChain"] = payload["certificateChain"] + " " * 6000
    answer = st.certificate_signed(payload, 2.0, TEST_NOW)
    assert answer["status"] == "Rejected"
    assert answer["statusInfo"]["reasonCode"] == reason
    assert len(answer["statusInfo"]["reasonCode"]) <= 20
    assert sink.kinds().count("certificate_signed_rejected") == 1
    assert [k for k, _ in sink.security] == ["InvalidChargingStationCertificate"]
    assert st.candidate is None
    # A02.FR.20: the request is dropped: nothing is resent until triggered again
    assert not st.pending
    assert st.poll(10_000.0, TEST_NOW) is None


def test_a02_resend_doubles_then_gives_up() -> None:
    sink = Sink()
    st = _station(sink, sign_wait_minimum_s=10, sign_repeat_times=3)
    st.trigger(0.0)
    sends: list[float] = []
    now = 0.0
    for _ in range(10):
        deadline = st.next_deadline(now, TEST_NOW)
        if deadline == math.inf:
            break
        now = deadline
        request = st.poll(now, TEST_NOW)
        if request is None:
            continue
        sends.append(now)
        st.request_answered("Accepted", now)
    assert sends == [0.0, 10.0, 30.0, 70.0]  # waits 10, 20, 40; three resends
    assert not st.pending
    assert "csr_abandoned" in sink.kinds()
    # the same key pair and CSR on every resend
    assert sink.kinds().count("csr_sent") == 4


def test_a02_rejected_sign_request_stops() -> None:
    sink = Sink()
    st = _station(sink)
    st.trigger(0.0)
    assert st.poll(0.0, TEST_NOW) is not None
    st.request_answered("Rejected", 1.0)
    assert not st.pending and "csr_rejected" in sink.kinds()


def test_a02_needs_an_organization_name() -> None:
    sink = Sink()
    st = _station(sink)
    assert st.set_variable("OrganizationName", "") == ("Rejected", "ValueOutOfRange")
    st.settings = CertificateSettings(organization_name="")
    assert st.trigger(0.0) == "Rejected"


def test_a03_renewal_starts_within_the_threshold() -> None:
    sink = Sink()
    st = _station(sink, renewal_threshold_s=30 * 86400)
    assert st.identity is not None
    not_after = st.identity.cert.not_valid_after_utc
    early = not_after - dt.timedelta(days=60)
    assert st.poll(0.0, early) is None
    deadline = st.next_deadline(0.0, early)
    assert deadline == pytest.approx(30 * 86400)
    late = not_after - dt.timedelta(days=29)
    request = st.poll(1.0, late)
    assert request is not None and "renewal_started" in sink.kinds()
    st.request_answered("Rejected", 2.0)
    # a refused renewal is tried again a day later, not in a loop
    assert st.poll(3.0, late) is None
    assert st.next_deadline(3.0, late) == pytest.approx(2.0 + 86400)


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigError):
        CertificateSettings(sign_wait_minimum_s=0)
    with pytest.raises(ConfigError):
        CertificateSettings(key_type="rsa", key_size=1024)
    with pytest.raises(ConfigError):
        CertificateSettings(max_chain_size=20000)


def test_variables_round_trip() -> None:
    sink = Sink()
    st = _station(sink)
    assert st.variables()["CertSigningWaitMinimum"] == "60"
    assert st.set_variable("CertSigningWaitMinimum", "5") == ("Accepted", None)
    assert st.set_variable("CertSigningWaitMinimum", "-5") == ("Rejected", "ValueOutOfRange")
    assert st.set_variable("CertSigningRepeatTimes", "lots") == ("Rejected", "ValueOutOfRange")
    assert st.set_variable("MaxCertificateChainSize", "1") == ("Rejected", "ReadOnly")
    assert st.set_variable("Nope", "1") == ("UnknownVariable", None)
    assert st.variables()["CertSigningWaitMinimum"] == "5"
    assert st.variables()["CertificateEntries"] == "2"


# ---------------------------------------------------------------- M03 - M05


def test_m05_install_rules() -> None:
    sink = Sink()
    st = _station(sink, certificate_entries=3)
    new_root = CertificateAuthority.create_root("New Root", ORG, now=TEST_NOW)
    install = {"certificateType": "CSMSRootCertificate", "certificate": _pem(new_root.cert)}
    version = st.version
    assert st.install(install, TEST_NOW) == {"status": "Accepted"}
    assert st.version > version
    assert new_root.cert in st.anchors()
    # identical certificate: replaced, Accepted (M05.FR.17), no new entry
    assert st.install(install, TEST_NOW) == {"status": "Accepted"}
    assert st.entries() == 3
    # the entry limit
    other = CertificateAuthority.create_root("Other Root", ORG, now=TEST_NOW)
    refused = st.install(
        {"certificateType": "ManufacturerRootCertificate", "certificate": _pem(other.cert)}, TEST_NOW
    )
    assert refused["status"] == "Rejected" and refused["statusInfo"]["reasonCode"] == "entries_full"
    # not a CA, garbage, unknown type
    bad = st.install(
        {"certificateType": "CSMSRootCertificate", "certificate": _pem(PKI.server.cert)}, TEST_NOW
    )
    assert bad["statusInfo"]["reasonCode"] == "not_a_ca"
    assert (
        st.install({"certificateType": "CSMSRootCertificate", "certificate": "x" * 20000}, TEST_NOW)[
            "statusInfo"
        ]["reasonCode"]
        == "too_large"
    )
    assert st.install({"certificateType": "Nope", "certificate": ""}, TEST_NOW)["status"] == "Rejected"
    assert sink.kinds().count("certificate_install_rejected") == 4


def test_m05_additional_root_check() -> None:
    sink = Sink()
    st = _station(sink, additional_root_check=True)
    unrelated = CertificateAuthority.create_root("Unrelated", ORG, now=TEST_NOW)
    answer = st.install(
        {"certificateType": "CSMSRootCertificate", "certificate": _pem(unrelated.cert)}, TEST_NOW
    )
    assert answer["statusInfo"]["reasonCode"] == "not_signed_by_root"
    # a CA certificate signed by the current root is accepted; the old root stays as fallback
    linked = PKI.root.create_sub_ca("Next Root", ORG, now=TEST_NOW, path_length=1)
    answer = st.install(
        {"certificateType": "CSMSRootCertificate", "certificate": _pem(linked.cert)}, TEST_NOW
    )
    assert answer == {"status": "Accepted"}
    assert st.roots["CSMSRootCertificate"] == [linked.cert]
    assert st.root_fallback == PKI.root.cert
    assert set(st.anchors()) == {linked.cert, PKI.root.cert}
    st.connection_succeeded()
    assert st.root_fallback == PKI.root.cert  # kept: the new anchor is not self-signed


def test_m03_m04_ids_and_delete() -> None:
    sink = Sink()
    st = _station(sink)
    ids = st.installed_ids({"certificateType": ["CSMSRootCertificate"]})
    assert ids["status"] == "Accepted"
    (entry,) = ids["certificateHashDataChain"]
    assert entry["certificateType"] == "CSMSRootCertificate"
    assert st.installed_ids({"certificateType": ["MORootCertificate"]}) == {"status": "NotFound"}
    # the station certificate cannot be deleted (M04.FR.06)
    own = st.identity
    assert own is not None
    own_hash = certificate_hash_data(own.cert, own.intermediates[0])
    assert st.delete({"certificateHashData": own_hash})["status"] == "Failed"
    assert st.delete({"certificateHashData": certificate_hash_data(PKI.evil.cert)}) == {"status": "NotFound"}
    version = st.version
    assert st.delete({"certificateHashData": entry["certificateHashData"]}) == {"status": "Accepted"}
    assert st.anchors() == () and st.version > version
