"""Revocation: CRLs and the OCSP responder (evsim.pki.revocation, evsim.pki.ocsp), and their TLS hooks (evsim.tls.revocation).

The TLS tests run real handshakes over ``trio.testing.memory_stream_pair`` through ``TlsStream`` with
contexts compiled by ``ClientTls.build`` / ``ServerTls.build``, then given the revocation hooks the way
``context.py`` will give them (CRLs and the OCSP callbacks installed on the fresh context, ``request_ocsp``
on each client connection). The context cache is cleared around each of those tests, so no other test
gets a context with hooks installed.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Iterator

import attrs
import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID
from OpenSSL import SSL

from evsim.errors import ConfigError, HandshakeFailed, PkiError
from evsim.pki import CertificateAuthority, CertKey
from evsim.pki.ocsp import (
    OCSP_STATUS_EVENT,
    OcspCheck,
    OcspCheckStatus,
    OcspResponder,
    OcspStaple,
    check_ocsp_response,
    issue_ocsp_responder,
    ocsp_request_data,
    ocsp_request_from_data,
)
from evsim.pki.revocation import RevocationList, load_crl
from evsim.tls import ClientTls, Identity, ServerTls, TlsProfile, TlsStream, TrustStore, events
from evsim.tls.context import clear_context_cache
from evsim.tls.revocation import (
    CrlMode,
    OcspOutcome,
    OcspPolicy,
    OnUnknown,
    client_ocsp_callback,
    crl_error_reason,
    install_crls,
    install_ocsp_client,
    install_ocsp_stapling,
    ocsp_decision,
    record_on_verify_state,
    request_ocsp,
)
from evsim.tls.verify import CRL_REASONS, VerifyState
from tests.pki_fixtures import CSMS_HOST, TEST_NOW, tls_pair, unknown_ocsp_staple

NOW = TEST_NOW
HOUR = dt.timedelta(hours=1)
TLS12 = TlsProfile(versions=("1.2",))
TLS13 = TlsProfile(versions=("1.3",))
IO_TIMEOUT_S = 5


@attrs.frozen
class Pki:
    """root -> sub (CSMS sub-CA) -> server (csms.evsim.test); an unrelated CA for forgeries."""

    root: CertificateAuthority
    sub: CertificateAuthority
    server: CertKey
    other_leaf: CertKey
    evil: CertificateAuthority
    evil_leaf: CertKey


@functools.cache
def pki() -> Pki:
    root = CertificateAuthority.create_root("Revocation Test Root", "evsim", now=NOW)
    sub = root.create_sub_ca("Revocation Test CSMS Sub-CA", now=NOW)
    server = sub.issue_server(CSMS_HOST, now=NOW)
    other_leaf = sub.issue_server("other.evsim.test", now=NOW)
    evil = CertificateAuthority.create_root("Evil Root", "evil", now=NOW)
    evil_leaf = evil.issue_server(CSMS_HOST, now=NOW)
    return Pki(root, sub, server, other_leaf, evil, evil_leaf)


def trust() -> TrustStore:
    return TrustStore("RevocationTestRoot", (pki().root.cert,))


@pytest.fixture(autouse=True)
def fresh_contexts() -> Iterator[None]:
    """Hooks are installed on compiled contexts: never share them with other tests through the cache."""
    clear_context_cache()
    yield
    clear_context_cache()


# ================================================================ CRLs (pki)


def test_crl_build_and_parse() -> None:
    p = pki()
    revocations = RevocationList(p.sub)
    revocations.revoke(p.server.cert, at=NOW - HOUR, reason=x509.ReasonFlags.key_compromise)
    revocations.revoke(0x1234, at=NOW - HOUR)  # no reason: no reasonCode extension (RFC 5280 §5.3.1)
    revocations.revoke(p.other_leaf.cert, at=NOW + HOUR)  # scheduled: not yet in force

    first = revocations.build_crl(now=NOW, next_update_s=86400)
    der = first.public_bytes(serialization.Encoding.DER)
    for data in (der, first.public_bytes(serialization.Encoding.PEM)):
        crl = load_crl(data)
        assert crl.is_signature_valid(p.sub.cert.public_key())  # type: ignore[arg-type]
        assert crl.issuer == p.sub.cert.subject
        assert crl.last_update_utc == NOW
        assert crl.next_update_utc == NOW + dt.timedelta(days=1)
        assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 1
        aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        ski = p.sub.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        assert aki.key_identifier == ski.digest
        entry = crl.get_revoked_certificate_by_serial_number(p.server.cert.serial_number)
        assert entry is not None and entry.revocation_date_utc == NOW - HOUR
        assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason is (
            x509.ReasonFlags.key_compromise
        )
        bare = crl.get_revoked_certificate_by_serial_number(0x1234)
        assert bare is not None and len(bare.extensions) == 0
        assert crl.get_revoked_certificate_by_serial_number(p.other_leaf.cert.serial_number) is None

    later = load_crl(
        revocations.build_crl(now=NOW + 2 * HOUR, next_update_s=3600).public_bytes(serialization.Encoding.DER)
    )
    assert later.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 2
    assert revocations.crl_number == 2
    assert later.get_revoked_certificate_by_serial_number(p.other_leaf.cert.serial_number) is not None
    with pytest.raises(PkiError, match="not a valid"):
        load_crl(b"garbage")
    with pytest.raises(PkiError, match="positive"):
        revocations.build_crl(now=NOW, next_update_s=0)


def test_revoke_rules() -> None:
    p = pki()
    revocations = RevocationList(p.sub)
    with pytest.raises(PkiError, match="not by this CA"):
        revocations.revoke(p.evil_leaf.cert, at=NOW)
    with pytest.raises(PkiError, match="delta CRLs"):
        revocations.revoke(1, at=NOW, reason=x509.ReasonFlags.remove_from_crl)
    with pytest.raises(PkiError, match="out of range"):
        revocations.revoke(0, at=NOW)
    assert revocations.revoke(5, at=NOW, reason=x509.ReasonFlags.unspecified).reason is None
    assert revocations.revoke(5, at=NOW) == revocations.lookup(5, now=NOW)  # same again: idempotent
    with pytest.raises(PkiError, match="already revoked"):
        revocations.revoke(5, at=NOW, reason=x509.ReasonFlags.superseded)
    # certificateHold is reversible, and may become a real revocation (RFC 5280 §5.3.1)
    revocations.revoke(7, at=NOW, reason=x509.ReasonFlags.certificate_hold)
    revocations.release_hold(7)
    assert revocations.lookup(7, now=NOW) is None
    revocations.revoke(7, at=NOW, reason=x509.ReasonFlags.certificate_hold)
    final = revocations.revoke(7, at=NOW + HOUR, reason=x509.ReasonFlags.key_compromise)
    assert revocations.lookup(7, now=NOW + HOUR) == final
    assert revocations.lookup(7, now=NOW) is None  # the new record starts later
    with pytest.raises(PkiError, match="not on hold"):
        revocations.release_hold(7)
    assert [e.serial for e in revocations.entries] == [5, 7]


# ================================================================ OCSP (pki)


def test_responder_statuses_and_check() -> None:
    p = pki()
    responder = OcspResponder(p.sub, validity_s=3600)
    responder.revocations.revoke(p.server.cert, at=NOW - HOUR, reason=x509.ReasonFlags.key_compromise)
    responder.revocations.revoke(p.other_leaf.cert, at=NOW + HOUR)

    revoked = check_ocsp_response(
        responder.respond_for(p.server.cert, p.sub.cert, now=NOW), p.server.cert, p.sub.cert, now=NOW
    )
    assert revoked.status == "revoked" and revoked.reason == "ocsp_status:revoked"
    assert revoked.revocation_time == NOW - HOUR
    assert revoked.revocation_reason is x509.ReasonFlags.key_compromise
    assert revoked.this_update == NOW and revoked.next_update == NOW + HOUR

    # scheduled revocation: good before, revoked after
    leaf = p.other_leaf.cert
    assert check_ocsp_response(
        responder.respond_for(leaf, p.sub.cert, now=NOW), leaf, p.sub.cert, now=NOW
    ).good
    late = NOW + 2 * HOUR
    assert (
        check_ocsp_response(
            responder.respond_for(leaf, p.sub.cert, now=late), leaf, p.sub.cert, now=late
        ).status
        == "revoked"
    )

    # another CA's certificate: unknown (RFC 6960 §2.2); signed by our sub-CA, which is not that
    # certificate's issuer, so a client checking it sees no authorized signer
    unknown = responder.respond_for(p.evil_leaf.cert, p.evil.cert, now=NOW)
    parsed = ocsp.load_der_ocsp_response(unknown)
    assert parsed.certificate_status is ocsp.OCSPCertStatus.UNKNOWN
    assert check_ocsp_response(unknown, p.evil_leaf.cert, p.evil.cert, now=NOW).status == "bad_signature"


def test_ocsp_request_data_and_responder_round_trip() -> None:
    p = pki()
    responder = OcspResponder(p.sub)
    data = ocsp_request_data(p.server.cert, p.sub.cert, responder_url="http://ocsp.evsim.test/")
    reference = ocsp.OCSPRequestBuilder().add_certificate(p.server.cert, p.sub.cert, hashes.SHA256()).build()
    assert data == {
        "hashAlgorithm": "SHA256",
        "issuerNameHash": reference.issuer_name_hash.hex(),
        "issuerKeyHash": reference.issuer_key_hash.hex(),
        "serialNumber": format(p.server.cert.serial_number, "x"),
        "responderURL": "http://ocsp.evsim.test/",
    }
    with pytest.raises(PkiError, match="responder_url"):
        ocsp_request_data(p.server.cert, p.sub.cert)  # our certificates carry no AIA

    # M06: the CSMS turns the station's ocspRequestData into a request (upper-case hex is fine)
    shouted = {**data, "issuerKeyHash": data["issuerKeyHash"].upper()}
    response = ocsp.load_der_ocsp_response(
        responder.respond(ocsp_request_from_data(shouted, nonce=b"n" * 16), now=NOW)
    )
    assert response.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert response.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == b"n" * 16  # RFC 8954
    good = check_ocsp_response(
        response.public_bytes(serialization.Encoding.DER), p.server.cert, p.sub.cert, now=NOW
    )
    assert good.status == "good"

    # RFC 5019 clients hash the CertID with SHA-1; the response answers in kind
    sha1 = ocsp.OCSPRequestBuilder().add_certificate(p.server.cert, p.sub.cert, hashes.SHA1()).build()
    answer = responder.respond(sha1.public_bytes(serialization.Encoding.DER), now=NOW)
    assert isinstance(ocsp.load_der_ocsp_response(answer).hash_algorithm, hashes.SHA1)
    assert check_ocsp_response(answer, p.server.cert, p.sub.cert, now=NOW).good

    with pytest.raises(PkiError, match="missing"):
        ocsp_request_from_data({"hashAlgorithm": "SHA256"})
    with pytest.raises(PkiError, match="bad hex"):
        ocsp_request_from_data({**data, "issuerNameHash": "zz"})


@pytest.mark.parametrize("request_der", [b"", b"\x30\x03\x02\x01\x01", b"not DER at all"])
def test_responder_answers_malformed_requests_with_an_error(request_der: bytes) -> None:
    answer = ocsp.load_der_ocsp_response(OcspResponder(pki().sub).respond(request_der, now=NOW))
    assert answer.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    check = check_ocsp_response(
        answer.public_bytes(serialization.Encoding.DER), pki().server.cert, pki().sub.cert, now=NOW
    )
    assert check.status == "missing"  # error responses are unsigned and carry no status (RFC 6960 §2.3)


def test_delegated_responder() -> None:
    p = pki()
    delegate = issue_ocsp_responder(p.sub, "CSMS Sub-CA OCSP", now=NOW)
    eku = delegate.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.OCSP_SIGNING in eku
    assert delegate.cert.extensions.get_extension_for_class(x509.OCSPNoCheck)
    responder = OcspResponder(p.sub, responder=delegate)
    der = responder.respond_for(p.server.cert, p.sub.cert, now=NOW)
    assert ocsp.load_der_ocsp_response(der).certificates == [delegate.cert]
    check = check_ocsp_response(der, p.server.cert, p.sub.cert, now=NOW)
    assert check.good and "delegated" in check.detail
    # the delegate's validity is checked too
    after = NOW + dt.timedelta(days=31)
    expired = check_ocsp_response(
        responder.respond_for(p.server.cert, p.sub.cert, now=after), p.server.cert, p.sub.cert, now=after
    )
    assert expired.status == "bad_signature" and "not valid" in expired.detail

    with pytest.raises(PkiError, match="OCSPSigning"):
        OcspResponder(p.sub, responder=p.other_leaf)  # issued by the CA, but no OCSPSigning EKU
    with pytest.raises(PkiError, match="directly"):
        OcspResponder(p.sub, responder=issue_ocsp_responder(p.root, "Root OCSP", now=NOW))
    with pytest.raises(PkiError, match="another CA"):
        OcspResponder(p.sub, revocations=RevocationList(p.root))

    # a "delegated responder" of another CA (EKU and all) signing about our certificate
    forged = OcspResponder(p.evil, responder=issue_ocsp_responder(p.evil, "Evil OCSP", now=NOW))
    check = check_ocsp_response(
        forged.respond_for(p.server.cert, p.sub.cert, now=NOW), p.server.cert, p.sub.cert, now=NOW
    )
    assert check.status == "bad_signature"


def test_staple_cache_refreshes_on_the_simulation_clock() -> None:
    p = pki()
    clock = [NOW]
    responder = OcspResponder(p.sub, validity_s=2 * 3600)
    staple = OcspStaple(responder, p.server.cert, p.sub.cert, clock=lambda: clock[0], refresh_s=3600)
    first = staple()
    assert staple() == first and staple.fetches == 1
    clock[0] = NOW + dt.timedelta(minutes=59)
    assert staple() == first and staple.fetches == 1
    responder.revocations.revoke(p.server.cert, at=NOW + HOUR)
    clock[0] = NOW + HOUR
    fresh = staple()
    assert staple.fetches == 2
    assert check_ocsp_response(fresh, p.server.cert, p.sub.cert, now=clock[0]).status == "revoked"
    clock[0] = NOW  # the simulation clock went back (a new run): never staple a response from the future
    assert check_ocsp_response(staple(), p.server.cert, p.sub.cert, now=NOW).good
    with pytest.raises(PkiError, match="refresh_s"):
        OcspStaple(responder, p.server.cert, p.sub.cert, clock=lambda: NOW, refresh_s=0)


def test_check_ocsp_response_failures() -> None:
    p = pki()
    cert, issuer = p.server.cert, p.sub.cert
    responder = OcspResponder(p.sub, validity_s=3600)
    assert check_ocsp_response(None, cert, issuer, now=NOW).status == "missing"
    assert check_ocsp_response(b"", cert, issuer, now=NOW).status == "missing"
    assert check_ocsp_response(b"\x30\x00junk", cert, issuer, now=NOW).status == "bad_signature"
    # signed by an unrelated key
    evil = OcspResponder(p.evil).respond_for(cert, issuer, now=NOW)
    assert check_ocsp_response(evil, cert, issuer, now=NOW).status == "bad_signature"
    # a good response about another certificate of the same CA
    other = responder.respond_for(p.other_leaf.cert, issuer, now=NOW)
    assert check_ocsp_response(other, cert, issuer, now=NOW).status == "unknown"
    # stale: nextUpdate passed / thisUpdate in the future / too old
    fresh = responder.respond_for(cert, issuer, now=NOW)
    assert check_ocsp_response(fresh, cert, issuer, now=NOW + 2 * HOUR).status == "stale"
    assert check_ocsp_response(fresh, cert, issuer, now=NOW + 2 * HOUR, skew_s=7200).good
    assert check_ocsp_response(fresh, cert, issuer, now=NOW - HOUR).status == "stale"
    assert (
        check_ocsp_response(fresh, cert, issuer, now=NOW + dt.timedelta(minutes=30), max_age_s=60).status
        == "stale"
    )
    # a signature that does not verify (one bit of the signed data flipped)
    tampered = bytearray(fresh)
    serial = cert.serial_number.to_bytes(20, "big").lstrip(b"\x00")
    at = bytes(tampered).index(serial)
    tampered[at + 5] ^= 0x01
    tampered_check = check_ocsp_response(bytes(tampered), cert, issuer, now=NOW)
    assert tampered_check.status == "bad_signature" and "does not verify" in tampered_check.detail


# ================================================================ decisions


@pytest.mark.parametrize(
    ("policy", "status", "on_unknown", "accepted"),
    [
        ("off", "revoked", "fail", True),
        ("require", "good", "fail", True),
        ("require", "revoked", "fail", False),
        ("require", "unknown", "fail", False),
        ("require", "unknown", "soft_fail", True),
        ("require", "missing", "fail", False),
        ("require", "bad_signature", "fail", False),
        ("require", "stale", "fail", False),
        ("request", "good", "fail", True),
        ("request", "revoked", "fail", False),
        ("request", "unknown", "fail", False),
        ("request", "missing", "fail", True),
        ("request", "bad_signature", "fail", True),
        ("request", "stale", "fail", True),
    ],
)
def test_ocsp_decision(
    policy: OcspPolicy, status: OcspCheckStatus, on_unknown: OnUnknown, accepted: bool
) -> None:
    assert ocsp_decision(policy, status, on_unknown) is accepted


def test_outcome_reasons_and_crl_error_reasons() -> None:
    revoked = OcspOutcome(OcspCheck("revoked", ""), accepted=False, policy="require")
    assert revoked.failure_reason == events.CERT_REVOKED == "cert_invalid:revoked"
    assert revoked.event_reason == "ocsp_status:revoked"
    stale = OcspOutcome(OcspCheck("stale", ""), accepted=False, policy="require")
    assert stale.failure_reason == "ocsp_status:stale"
    assert OcspOutcome(OcspCheck("missing", ""), accepted=True, policy="request").failure_reason is None
    assert (
        OCSP_STATUS_EVENT == events.OCSP_STATUS
    )  # evsim.pki repeats the name (it does not import evsim.tls)
    assert crl_error_reason(23) == "cert_invalid:revoked"
    assert crl_error_reason(3) == "cert_invalid:crl_unavailable"
    assert crl_error_reason(12) == "cert_invalid:crl_expired"
    assert crl_error_reason(10) is None


def test_hook_configuration_errors() -> None:
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    with pytest.raises(ConfigError, match="at least one CRL"):
        install_crls(ctx, [], "leaf")
    with pytest.raises(ConfigError, match="unknown CRL mode"):
        install_crls(ctx, [], "all")  # type: ignore[arg-type]
    install_crls(ctx, [], "off")
    with pytest.raises(ConfigError, match="OCSP stapling policy"):
        client_ocsp_callback("off")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="on_unknown"):
        client_ocsp_callback("require", on_unknown="ignore")  # type: ignore[arg-type]
    install_ocsp_client(ctx, "off")  # nothing installed
    SSL.Connection(ctx, None)  # the context is now in use: a CRL refresh must build a new one
    crl = RevocationList(pki().sub).build_crl(now=NOW, next_update_s=60)
    with pytest.raises(ConfigError, match="no connection has used"):
        install_crls(ctx, [crl], "leaf")


# ================================================================ TLS: CRLs


def _client_with_crls(
    profile: TlsProfile, crls: list[x509.CertificateRevocationList], mode: CrlMode
) -> ClientTls:
    clear_context_cache()  # hooks go on fresh contexts (pyOpenSSL refuses to mutate a used one)
    client_tls = ClientTls.build(profile, trust())
    install_crls(client_tls.context, crls, mode)
    return client_tls


def _server(profile: TlsProfile, identity: CertKey | None = None) -> ServerTls:
    return ServerTls.build(profile, Identity.from_cert_key(identity or pki().server))


def _reason(result: TlsStream | Exception) -> str:
    if isinstance(result, TlsStream):
        return "ok"
    assert isinstance(result, HandshakeFailed), result
    return result.reason


@pytest.mark.parametrize("profile", [TLS12, TLS13], ids=["tls12", "tls13"])
async def test_crl_leaf_mode_refuses_a_revoked_server(profile: TlsProfile) -> None:
    p = pki()
    sub_revocations = RevocationList(p.sub)
    sub_revocations.revoke(p.server.cert, at=NOW - HOUR, reason=x509.ReasonFlags.key_compromise)
    crl = sub_revocations.build_crl(now=NOW - HOUR, next_update_s=86400)
    with trio.fail_after(IO_TIMEOUT_S):
        client, server = await tls_pair(_client_with_crls(profile, [crl], "leaf"), _server(profile))
        assert _reason(client) == "cert_invalid:revoked"  # X509 error 23
        assert _reason(server) == "peer_alert:certificate_revoked"
        # the same CRL, another (not revoked) leaf of the same CA
        client, _ = await tls_pair(
            _client_with_crls(profile, [crl], "leaf"), _server(profile, p.other_leaf), host="other.evsim.test"
        )
        assert _reason(client) == "ok"


async def test_crl_revoked_intermediate_refused_only_in_chain_mode() -> None:
    p = pki()
    root_revocations = RevocationList(p.root)
    root_revocations.revoke(p.sub.cert, at=NOW - HOUR, reason=x509.ReasonFlags.ca_compromise)
    root_crl = root_revocations.build_crl(now=NOW - HOUR, next_update_s=86400)
    sub_crl = RevocationList(p.sub).build_crl(now=NOW - HOUR, next_update_s=86400)  # the leaf is fine
    with trio.fail_after(IO_TIMEOUT_S):
        leaf_mode, _ = await tls_pair(_client_with_crls(TLS13, [sub_crl, root_crl], "leaf"), _server(TLS13))
        chain_mode, _ = await tls_pair(_client_with_crls(TLS13, [sub_crl, root_crl], "chain"), _server(TLS13))
        # chain mode needs every CA's CRL: without the root's, the sub-CA cannot be checked (error 3)
        no_root_crl, _ = await tls_pair(_client_with_crls(TLS13, [sub_crl], "chain"), _server(TLS13))
    assert _reason(leaf_mode) == "ok"
    assert _reason(chain_mode) == "cert_invalid:revoked"
    assert _reason(no_root_crl) == events.CRL_UNAVAILABLE == "cert_invalid:crl_unavailable"
    assert events.ocpp_security_event(_reason(no_root_crl), side="client") == events.INVALID_CSMS_CERTIFICATE


async def test_crl_is_checked_at_simulation_time() -> None:
    p = pki()
    crl = RevocationList(p.sub).build_crl(now=NOW - HOUR, next_update_s=2 * 3600)
    client_tls = _client_with_crls(TLS13, [crl], "leaf")
    with trio.fail_after(IO_TIMEOUT_S):
        fresh, _ = await tls_pair(client_tls, _server(TLS13))
        expired, _ = await tls_pair(client_tls, _server(TLS13), client_time=NOW + 2 * HOUR)
    assert _reason(fresh) == "ok"
    # the CRL has expired (nextUpdate < sim time): X509 error 12, by its readable name
    assert _reason(expired) == events.CRL_EXPIRED == "cert_invalid:crl_expired"
    assert events.ocpp_security_event(_reason(expired), side="client") == events.INVALID_CSMS_CERTIFICATE


# ================================================================ TLS: OCSP stapling


class _StaplingClientTls(ClientTls):
    """What context.py will do: ``request_ocsp`` on every new client connection when the policy asks."""

    def new_connection(
        self,
        server_hostname: str | None,
        verify_time: Callable[[], dt.datetime] | None = None,
    ) -> tuple[SSL.Connection, VerifyState]:
        conn, state = super().new_connection(server_hostname, verify_time)
        request_ocsp(conn, "require")  # the callback decides between request and require
        return conn, state


def _ocsp_pair(
    profile: TlsProfile,
    policy: OcspPolicy,
    staple: bytes | None,
    *,
    on_unknown: OnUnknown = "fail",
) -> tuple[ClientTls, ServerTls, list[OcspOutcome]]:
    outcomes: list[OcspOutcome] = []

    def on_status(conn: SSL.Connection, outcome: OcspOutcome) -> None:
        outcomes.append(outcome)
        record_on_verify_state(conn, outcome)

    clear_context_cache()  # hooks go on fresh contexts (pyOpenSSL refuses to mutate a used one)
    built = ClientTls.build(profile, trust())
    install_ocsp_client(built.context, policy, on_unknown=on_unknown, on_status=on_status)
    client_tls = _StaplingClientTls(
        built.profile, built.trust, built.identity, built.context, built.connection_time
    )
    server_tls = _server(profile)
    install_ocsp_stapling(server_tls.context, lambda: staple)
    return client_tls, server_tls, outcomes


def _staple(*, revoked: bool = False, at: dt.datetime = NOW, validity_s: float = 3600) -> bytes:
    p = pki()
    responder = OcspResponder(p.sub, validity_s=validity_s)
    if revoked:
        responder.revocations.revoke(p.server.cert, at=NOW - HOUR, reason=x509.ReasonFlags.key_compromise)
    return responder.respond_for(p.server.cert, p.sub.cert, now=at)


@pytest.mark.parametrize("profile", [TLS12, TLS13], ids=["tls12", "tls13"])
async def test_ocsp_stapling_good_and_revoked(profile: TlsProfile) -> None:
    with trio.fail_after(IO_TIMEOUT_S):
        client_tls, server_tls, outcomes = _ocsp_pair(profile, "require", _staple())
        client, server = await tls_pair(client_tls, server_tls)
        assert _reason(client) == "ok" and _reason(server) == "ok"
        assert [o.status for o in outcomes] == ["good"] and outcomes[0].accepted

        client_tls, server_tls, outcomes = _ocsp_pair(profile, "require", _staple(revoked=True))
        client, server = await tls_pair(client_tls, server_tls)
        assert _reason(client) == "cert_invalid:revoked"
        # OpenSSL sent bad_certificate_status_response (RFC 6066 §8); its error text for that alert lacks the
        # "alert" word failures.classify_ssl_error looks for, so today the server reads protocol_error
        assert isinstance(server, HandshakeFailed) and "bad certificate status response" in server.detail
        assert [(o.status, o.accepted) for o in outcomes] == [("revoked", False)]
        assert outcomes[0].check.revocation_reason is x509.ReasonFlags.key_compromise


@pytest.mark.parametrize("profile", [TLS12, TLS13], ids=["tls12", "tls13"])
async def test_ocsp_missing_staple_require_vs_request(profile: TlsProfile) -> None:
    with trio.fail_after(IO_TIMEOUT_S):
        client_tls, server_tls, outcomes = _ocsp_pair(profile, "require", None)
        client, _ = await tls_pair(client_tls, server_tls)
        assert _reason(client) == "ocsp_status:missing"
        assert [(o.status, o.accepted) for o in outcomes] == [("missing", False)]

        client_tls, server_tls, outcomes = _ocsp_pair(profile, "request", None)
        client, _ = await tls_pair(client_tls, server_tls)
        assert _reason(client) == "ok"
        assert [(o.status, o.accepted, o.event_reason) for o in outcomes] == [
            ("missing", True, "ocsp_status:missing")
        ]


def _unknown_staple() -> bytes:
    return unknown_ocsp_staple(pki().server.cert, pki().sub, NOW)


@pytest.mark.parametrize(
    ("staple", "policy", "on_unknown", "expected", "status"),
    [
        pytest.param(_unknown_staple, "require", "fail", "ocsp_status:unknown", "unknown", id="unknown"),
        pytest.param(_unknown_staple, "require", "soft_fail", "ok", "unknown", id="unknown-soft-fail"),
        pytest.param(
            lambda: OcspResponder(pki().evil).respond_for(pki().server.cert, pki().sub.cert, now=NOW),
            "require",
            "fail",
            "ocsp_status:bad_signature",
            "bad_signature",
            id="unrelated-key",
        ),
        pytest.param(
            lambda: _staple(at=NOW - 3 * HOUR), "require", "fail", "ocsp_status:stale", "stale", id="stale"
        ),
        pytest.param(
            lambda: _staple(at=NOW - 3 * HOUR), "request", "fail", "ok", "stale", id="stale-request"
        ),
        pytest.param(
            lambda: b"\x30\x03\x0a\x01\x00",
            "require",
            "fail",
            "ocsp_status:bad_signature",
            "bad_signature",
            id="garbage",
        ),
    ],
)
async def test_ocsp_stapling_refusals(
    staple: Callable[[], bytes],
    policy: OcspPolicy,
    on_unknown: OnUnknown,
    expected: str,
    status: str,
) -> None:
    with trio.fail_after(IO_TIMEOUT_S):
        client_tls, server_tls, outcomes = _ocsp_pair(TLS13, policy, staple(), on_unknown=on_unknown)
        client, _ = await tls_pair(client_tls, server_tls)
    assert _reason(client) == expected
    assert [o.status for o in outcomes] == [status]


async def test_ocsp_status_checked_at_simulation_time() -> None:
    """The same staple: fresh at NOW, stale at NOW + 2 h (the stream's verify_time, not the machine clock)."""
    with trio.fail_after(IO_TIMEOUT_S):
        client_tls, server_tls, outcomes = _ocsp_pair(TLS13, "require", _staple(validity_s=3600))
        fresh, _ = await tls_pair(client_tls, server_tls)
        late, _ = await tls_pair(client_tls, server_tls, client_time=NOW + 2 * HOUR)
    assert (_reason(fresh), _reason(late)) == ("ok", "ocsp_status:stale")
    assert [o.status for o in outcomes] == ["good", "stale"]


@pytest.mark.parametrize("profile", [TLS12, TLS13], ids=["tls12", "tls13"])
async def test_ocsp_require_accepts_a_resumed_session(profile: TlsProfile) -> None:
    client_tls, server_tls, outcomes = _ocsp_pair(profile, "require", _staple())
    with trio.fail_after(IO_TIMEOUT_S):
        first, _ = await tls_pair(client_tls, server_tls)  # includes a read: TLS 1.3 tickets arrived
        assert isinstance(first, TlsStream) and first.session is not None
        a, b = trio.testing.memory_stream_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                functools.partial(TlsStream.server(b, server_tls, verify_time=lambda: NOW).do_handshake)
            )
            second = TlsStream.client(
                a, client_tls, CSMS_HOST, verify_time=lambda: NOW, session=first.session
            )
            await second.do_handshake()
    assert second.info.session_reused
    assert [o.status for o in outcomes] == ["good"]  # checked once, at the full handshake


@pytest.mark.parametrize("reason", sorted(set(CRL_REASONS.values())))
def test_every_crl_reason_is_readable_and_maps_to_an_ocpp_security_event(reason: str) -> None:
    assert reason.startswith(f"{events.CERT_INVALID}:") and not reason.rpartition(":")[2].isdigit()
    assert events.ocpp_security_event(reason, side="client") == events.INVALID_CSMS_CERTIFICATE
    assert events.ocpp_security_event(reason, side="server") == events.INVALID_CHARGING_STATION_CERTIFICATE
