"""Who refuses whom, and why: certificates, time, hostnames, wildcards, client auth, versions, suites."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
import trio
import trio.testing
from cryptography import x509

from evsim.clock import real_utcnow
from evsim.errors import HandshakeFailed, TransportError
from evsim.pki import CertificateAuthority
from evsim.tls import (
    ClientTls,
    Identity,
    ServerTls,
    TlsProfile,
    TlsStream,
    TrustStore,
    _ossl,
    clear_context_cache,
    events,
    tls_accept,
)
from evsim.tls.suites import SUITES, Suite
from evsim.tls.verify import check_hostname, check_validity, parse_asn1_time, verify_error_reason
from tests.pki_fixtures import CSMS_HOST, TEST_NOW, make_test_pki, tls_pair

PKI = make_test_pki()
DEFAULT = TlsProfile()
DAY = dt.timedelta(days=1)


def refused(result: TlsStream | TransportError) -> HandshakeFailed:
    assert isinstance(result, HandshakeFailed), f"expected a refusal, got {result!r}"
    return result


def client_for(**policy: str) -> ClientTls:
    return ClientTls.build(TlsProfile(), PKI.csms_trust(**policy))  # type: ignore[arg-type]


def server_with(cert_key: object, profile: TlsProfile = DEFAULT) -> ServerTls:
    return ServerTls.build(profile, Identity.from_cert_key(cert_key))  # type: ignore[arg-type]


# ---------------------------------------------------------------- the client checks the CSMS certificate


async def test_unknown_ca_refused_by_client() -> None:
    with trio.fail_after(10):
        c, s = await tls_pair(client_for(), server_with(PKI.evil_server))
    fc, fs = refused(c), refused(s)
    assert (fc.reason, fc.remote) == ("cert_invalid:unknown_ca", False)
    assert "depth 0" in fc.detail
    assert (fs.reason, fs.remote) == ("peer_alert:unknown_ca", True)  # the CSMS learns why
    assert events.ocpp_security_event(fc.reason, side="client") == "InvalidCsmsCertificate"


async def test_expired_at_simulation_time() -> None:
    server = server_with(PKI.server)
    later = PKI.server.cert.not_valid_after_utc + dt.timedelta(seconds=1)
    with trio.fail_after(10):
        c, _ = await tls_pair(client_for(), server, client_time=later)
    assert refused(c).reason == "cert_invalid:expired"
    # one second earlier it is still valid
    with trio.fail_after(10):
        c, _ = await tls_pair(client_for(), server, client_time=later - dt.timedelta(seconds=2))
    assert isinstance(c, TlsStream)


async def test_not_yet_valid_at_simulation_time() -> None:
    early = PKI.server.cert.not_valid_before_utc - dt.timedelta(seconds=1)
    with trio.fail_after(10):
        c, s = await tls_pair(client_for(), server_with(PKI.server), client_time=early)
    assert refused(c).reason == "cert_invalid:not_yet_valid"
    assert refused(s).reason == "peer_alert:bad_certificate"


async def test_validity_uses_simulation_time_not_the_wall_clock() -> None:
    """A certificate valid at wall time but expired at sim time is refused, and vice versa."""
    wall = real_utcnow()
    today = make_test_pki(wall.replace(microsecond=0))  # valid now, for a year
    trust = ClientTls.build(TlsProfile(), today.csms_trust())
    server = ServerTls.build(TlsProfile(), today.server_identity())
    with trio.fail_after(10):
        c, _ = await tls_pair(trust, server, client_time=wall + 400 * DAY)
        assert refused(c).reason == "cert_invalid:expired"
        c, _ = await tls_pair(trust, server, client_time=wall)
        assert isinstance(c, TlsStream)
    # TEST_NOW's PKI is issued in 2030: not valid at wall time, valid at sim time
    assert PKI.server.cert.not_valid_before_utc > wall
    with trio.fail_after(10):
        c, _ = await tls_pair(client_for(), server_with(PKI.server), client_time=TEST_NOW)
        assert isinstance(c, TlsStream)
        c, _ = await tls_pair(client_for(), server_with(PKI.server), client_time=None)  # real clock
        assert refused(c).reason == "cert_invalid:not_yet_valid"


async def test_one_shared_context_checks_each_connection_at_its_own_time() -> None:
    client_tls, server = client_for(), server_with(PKI.server)
    times = [TEST_NOW, TEST_NOW + 800 * DAY, TEST_NOW - 2 * DAY, TEST_NOW]
    results: dict[int, TlsStream | TransportError] = {}

    async def one(i: int) -> None:
        results[i] = (await tls_pair(client_tls, server, client_time=times[i]))[0]

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for i in range(len(times)):
                nursery.start_soon(one, i)
    outcome = [
        r.info.version if isinstance(r, TlsStream) else refused(r).reason for _, r in sorted(results.items())
    ]
    assert outcome == ["TLSv1.3", "cert_invalid:expired", "cert_invalid:not_yet_valid", "TLSv1.3"]


async def test_intermediate_expiry_is_checked_too() -> None:
    short_ca = PKI.root.create_sub_ca("Short-lived Sub-CA", now=TEST_NOW, days=2)
    leaf = short_ca.issue_server(CSMS_HOST, now=TEST_NOW, days=365)
    with trio.fail_after(10):
        c, _ = await tls_pair(client_for(), server_with(leaf), client_time=TEST_NOW + 10 * DAY)
    failure = refused(c)
    assert failure.reason == "cert_invalid:expired"
    assert "depth 1" in failure.detail


@pytest.fixture
def python_time_check(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Compile contexts as if the binding lacked per-connection verify time (the fallback path)."""
    monkeypatch.setattr(_ossl, "HAVE_CONNECTION_TIME", False)
    clear_context_cache()
    yield
    clear_context_cache()


@pytest.mark.usefixtures("python_time_check")
async def test_fallback_validity_check_in_the_verify_callback() -> None:
    client_tls, server = client_for(), server_with(PKI.server)
    assert not client_tls.connection_time
    with trio.fail_after(10):
        c, _ = await tls_pair(client_tls, server, client_time=TEST_NOW + 800 * DAY)
        assert refused(c).reason == "cert_invalid:expired"
        c, _ = await tls_pair(client_tls, server, client_time=TEST_NOW - 2 * DAY)
        assert refused(c).reason == "cert_invalid:not_yet_valid"
        c, _ = await tls_pair(client_tls, server, client_time=TEST_NOW)
        assert isinstance(c, TlsStream)
        c, _ = await tls_pair(client_for(time_check="off"), server, client_time=TEST_NOW + 800 * DAY)
        assert isinstance(c, TlsStream)


SECOND = dt.timedelta(seconds=1)
HALF = dt.timedelta(milliseconds=500)


@pytest.mark.parametrize("path", ["engine", "fallback"])
async def test_both_validity_paths_check_at_whole_seconds(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """One rule for OpenSSL's per-connection time and the Python fallback (``verify.whole_seconds``): the
    seconds notBefore and notAfter name are valid entirely; half a second outside them is not."""
    if path == "fallback":
        monkeypatch.setattr(_ossl, "HAVE_CONNECTION_TIME", False)
    clear_context_cache()
    try:
        client_tls, server = client_for(), server_with(PKI.server)
        assert client_tls.connection_time is (path == "engine")
        leaf = PKI.server.cert
        end, start = leaf.not_valid_after_utc, leaf.not_valid_before_utc
        cases = {
            end: None,
            end + HALF: None,
            end + SECOND - dt.timedelta(microseconds=1): None,
            end + SECOND: "cert_invalid:expired",
            start: None,
            start - HALF: "cert_invalid:not_yet_valid",
            start - SECOND: "cert_invalid:not_yet_valid",
        }
        seen = {}
        with trio.fail_after(10):
            for when in cases:
                c, _ = await tls_pair(client_tls, server, client_time=when)
                seen[when] = None if isinstance(c, TlsStream) else refused(c).reason
    finally:
        clear_context_cache()
    assert seen == cases


async def test_insecure_skip_verify_accepts_anything(caplog: pytest.LogCaptureFixture) -> None:
    trust = TrustStore("INSECURE", (), insecure_skip_verify=True)
    with caplog.at_level("WARNING"):
        client_tls = ClientTls.build(TlsProfile(), trust)
    assert "NOT verified" in caplog.text
    with trio.fail_after(10):
        c, _ = await tls_pair(
            client_tls, server_with(PKI.evil_server), host="wrong.name", client_time=TEST_NOW + 900 * DAY
        )
    assert isinstance(c, TlsStream)
    assert c.info.peer_chain == (PKI.evil_server.cert,)


async def test_time_check_off_accepts_expired() -> None:
    with trio.fail_after(10):
        c, _ = await tls_pair(
            client_for(time_check="off"), server_with(PKI.server), client_time=TEST_NOW + 900 * DAY
        )
    assert isinstance(c, TlsStream)


async def test_hostname_mismatch() -> None:
    with trio.fail_after(10):
        c, s = await tls_pair(client_for(), server_with(PKI.server), host="other.evsim.test")
    assert refused(c).reason == "cert_invalid:hostname_mismatch"
    assert refused(s).remote
    with trio.fail_after(10):
        c, _ = await tls_pair(client_for(hostname="off"), server_with(PKI.server), host="other.evsim.test")
    assert isinstance(c, TlsStream)


async def test_wildcard_refused_by_default_and_allowed_on_request() -> None:
    wildcard = PKI.root.issue_server("*.evsim.test", now=TEST_NOW)
    with trio.fail_after(10):
        c, _ = await tls_pair(client_for(), server_with(wildcard))
        assert refused(c).reason == "cert_invalid:wildcard"
        assert events.ocpp_security_event("cert_invalid:wildcard", side="client") == "InvalidCsmsCertificate"
        c, _ = await tls_pair(client_for(wildcards="allow"), server_with(wildcard))
        assert isinstance(c, TlsStream)


async def test_ip_literal_server_name() -> None:
    with trio.fail_after(10):
        c, s = await tls_pair(client_for(), server_with(PKI.localhost), host="127.0.0.1")
        assert isinstance(c, TlsStream) and isinstance(s, TlsStream)
        assert c.info.sni is None and s.info.sni is None
        c, _ = await tls_pair(client_for(), server_with(PKI.localhost), host="::1")
        assert isinstance(c, TlsStream)
        c, _ = await tls_pair(client_for(), server_with(PKI.localhost), host="10.0.0.1")
        assert refused(c).reason == "cert_invalid:hostname_mismatch"


# ---------------------------------------------------------------- hostname rules (pure)


def _cert(
    cn: str, *, sans: tuple[str, ...] = (), ips: tuple[str, ...] = (), cn_in_san: bool = True
) -> x509.Certificate:
    return PKI.root.issue_server(cn, sans=sans, ips=ips, cn_in_san=cn_in_san, now=TEST_NOW).cert


CN_ONLY = _cert(CSMS_HOST, cn_in_san=False)
SAN_ONLY = _cert("some-other-name", sans=(CSMS_HOST,), cn_in_san=False)
CN_NOT_IN_SAN = _cert(CSMS_HOST, sans=("other.evsim.test",), cn_in_san=False)
BOTH = _cert(CSMS_HOST)
WILD = _cert("*.evsim.test")
EXACT_AND_WILD_SAN = _cert(CSMS_HOST, sans=("*.evsim.test",))
IP_CERT = _cert("127.0.0.1", ips=("127.0.0.1",), cn_in_san=False)
OK, MISMATCH, WILDCARD = None, "cert_invalid:hostname_mismatch", "cert_invalid:wildcard"


@pytest.mark.parametrize(
    ("cert", "host", "mode", "wildcards", "expected"),
    [
        (CN_ONLY, CSMS_HOST, "cn", "deny", OK),
        (CN_ONLY, CSMS_HOST, "san", "deny", MISMATCH),
        (CN_ONLY, CSMS_HOST, "san+cn", "deny", OK),  # OCPP style: CN = FQDN, no SAN
        (SAN_ONLY, CSMS_HOST, "cn", "deny", MISMATCH),
        (SAN_ONLY, CSMS_HOST, "san", "deny", OK),  # RFC 6125 style
        (SAN_ONLY, CSMS_HOST, "san+cn", "deny", MISMATCH),  # OCPP requires the CN
        (CN_NOT_IN_SAN, CSMS_HOST, "san+cn", "deny", MISMATCH),  # RFC 6125 clients would refuse it
        (CN_NOT_IN_SAN, CSMS_HOST, "cn", "deny", OK),
        (BOTH, CSMS_HOST, "san+cn", "deny", OK),
        (BOTH, "CSMS.Evsim.Test.", "san+cn", "deny", OK),  # case-insensitive, trailing dot
        (BOTH, "evsim.test", "san+cn", "deny", MISMATCH),
        (BOTH, "x.csms.evsim.test", "san", "deny", MISMATCH),
        (BOTH, "anything", "off", "deny", OK),
        (WILD, CSMS_HOST, "san+cn", "deny", WILDCARD),
        (WILD, CSMS_HOST, "cn", "deny", WILDCARD),
        (WILD, CSMS_HOST, "san+cn", "allow", OK),
        (WILD, "a.b.evsim.test", "san+cn", "allow", MISMATCH),  # one label only
        (WILD, "evsim.test", "san+cn", "allow", MISMATCH),
        (EXACT_AND_WILD_SAN, CSMS_HOST, "san+cn", "deny", OK),  # the exact name wins
        (EXACT_AND_WILD_SAN, "b.evsim.test", "san", "deny", WILDCARD),
        (IP_CERT, "127.0.0.1", "san", "deny", OK),
        (IP_CERT, "127.0.0.1", "san+cn", "deny", OK),
        (IP_CERT, "127.0.0.1", "cn", "deny", OK),
        (IP_CERT, "127.0.0.2", "san+cn", "deny", MISMATCH),
        (CN_ONLY, "127.0.0.1", "san+cn", "deny", MISMATCH),
    ],
)
def test_check_hostname(
    cert: x509.Certificate, host: str, mode: str, wildcards: str, expected: str | None
) -> None:
    assert check_hostname(cert, host, mode, wildcards) == expected


def test_wildcard_for_a_bare_tld_never_matches() -> None:
    tld = PKI.root.issue_server("*.test", now=TEST_NOW).cert
    assert check_hostname(tld, "evsim.test", "cn", "allow") == MISMATCH


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (10, "cert_invalid:expired"),
        (9, "cert_invalid:not_yet_valid"),
        (2, "cert_invalid:unknown_ca"),
        (18, "cert_invalid:unknown_ca"),
        (19, "cert_invalid:unknown_ca"),
        (20, "cert_invalid:unknown_ca"),
        (21, "cert_invalid:unknown_ca"),
        (23, "cert_invalid:revoked"),
        (3, "cert_invalid:crl_unavailable"),
        (33, "cert_invalid:crl_unavailable"),
        (12, "cert_invalid:crl_expired"),
        (11, "cert_invalid:crl_not_yet_valid"),
        (8, "cert_invalid:crl_bad_signature"),
        (7, "cert_invalid:7"),
    ],
)
def test_verify_error_reason(code: int, reason: str) -> None:
    assert verify_error_reason(code) == reason


def test_validity_helpers() -> None:
    t = parse_asn1_time(b"20300601120000Z")
    assert t == dt.datetime(2030, 6, 1, 12, tzinfo=dt.UTC)
    assert check_validity(t, t + DAY, t) is None
    assert check_validity(t, t + DAY, t + DAY) is None  # inclusive, like OpenSSL
    assert check_validity(t, t + DAY, t - dt.timedelta(seconds=1)) == "cert_invalid:not_yet_valid"
    assert check_validity(t, t + DAY, t + DAY + dt.timedelta(seconds=1)) == "cert_invalid:expired"
    # whole seconds (verify.whole_seconds): the second notAfter names is valid all through
    assert check_validity(t, t + DAY, t + DAY + dt.timedelta(milliseconds=999)) is None
    assert check_validity(t, t + DAY, t - dt.timedelta(milliseconds=1)) == "cert_invalid:not_yet_valid"


# ---------------------------------------------------------------- the server checks client certificates


def mtls_server(client_auth: str = "required", profile: TlsProfile = DEFAULT) -> ServerTls:
    return ServerTls.build(profile, PKI.server_identity(), PKI.station_trust(), client_auth)  # type: ignore[arg-type]


def station_client(identity: Identity | None, profile: TlsProfile = DEFAULT) -> ClientTls:
    return ClientTls.build(profile, PKI.csms_trust(), identity)


@pytest.mark.parametrize("versions", [("1.3",), ("1.2",)], ids=["tls13", "tls12"])
async def test_required_client_cert_missing(versions: tuple[str, ...]) -> None:
    profile = TlsProfile(versions=versions)
    with trio.fail_after(10):
        c, s = await tls_pair(station_client(None, profile), mtls_server("required", profile))
    fs = refused(s)
    assert (fs.reason, fs.remote) == ("cert_invalid:no_client_cert", False)
    assert events.ocpp_security_event(fs.reason, side="server") == "InvalidChargingStationCertificate"
    fc = refused(c)  # TLS 1.3: on the client's first read; TLS 1.2: in its handshake
    assert fc.remote
    expected = "peer_alert:certificate_required" if versions == ("1.3",) else "peer_alert:handshake_failure"
    assert fc.reason == expected
    assert events.ocpp_security_event(fc.reason, side="client") == "FailedToAuthenticateAtCsms"


@pytest.mark.parametrize("versions", [("1.3",), ("1.2",)], ids=["tls13", "tls12"])
async def test_client_cert_from_another_ca(versions: tuple[str, ...]) -> None:
    profile = TlsProfile(versions=versions)
    evil = Identity.from_cert_key(PKI.evil_station_cert("CS00001"))
    with trio.fail_after(10):
        c, s = await tls_pair(station_client(evil, profile), mtls_server("required", profile))
    assert refused(s).reason == "cert_invalid:unknown_ca"
    assert refused(c).reason == "peer_alert:unknown_ca"


async def test_client_cert_expired_at_server_time() -> None:
    station = Identity.from_cert_key(PKI.station_cert("CS00002"))
    with trio.fail_after(10):
        c, s = await tls_pair(station_client(station), mtls_server(), server_time=TEST_NOW + 3 * 365 * DAY)
    assert refused(s).reason == "cert_invalid:expired"
    assert refused(c).reason == "peer_alert:certificate_expired"


async def test_client_cert_accepted() -> None:
    station = PKI.station_cert("CS00003")
    with trio.fail_after(10):
        c, s = await tls_pair(station_client(Identity.from_cert_key(station)), mtls_server())
    assert isinstance(c, TlsStream) and isinstance(s, TlsStream)
    assert s.info.peer_chain[0] == station.cert
    assert s.info.peer_chain[0].subject.rfc4514_string() == "O=evsim,CN=CS00003"


async def test_optional_client_auth() -> None:
    with trio.fail_after(10):
        c, s = await tls_pair(station_client(None), mtls_server("optional"))
        assert isinstance(c, TlsStream) and isinstance(s, TlsStream)
        assert s.info.peer_chain == ()
        evil = Identity.from_cert_key(PKI.evil_station_cert("CS00004"))
        _, s = await tls_pair(station_client(evil), mtls_server("optional"))
        assert refused(s).reason == "cert_invalid:unknown_ca"  # a certificate that is sent is verified


async def test_server_without_client_auth_ignores_client_cert() -> None:
    evil = Identity.from_cert_key(PKI.evil_station_cert("CS00005"))
    with trio.fail_after(10):
        c, s = await tls_pair(station_client(evil), ServerTls.build(TlsProfile(), PKI.server_identity()))
    assert isinstance(c, TlsStream) and isinstance(s, TlsStream)


# ---------------------------------------------------------------- versions and suites


async def test_tls12_client_vs_tls13_only_server_is_a_downgrade_refusal() -> None:
    with trio.fail_after(10):
        c, s = await tls_pair(
            ClientTls.build(TlsProfile(versions=("1.2",)), PKI.csms_trust()),
            ServerTls.build(TlsProfile(versions=("1.3",)), PKI.server_identity()),
        )
    fc, fs = refused(c), refused(s)
    assert (fc.reason, fc.remote) == ("downgrade_refused", True)
    assert (fs.reason, fs.remote) == ("downgrade_refused", False)
    assert events.ocpp_security_event(fc.reason, side="client") == "InvalidTLSVersion"
    assert events.ocpp_security_event(fs.reason, side="server") == "InvalidTLSVersion"


async def test_tls13_only_client_vs_tls12_only_server() -> None:
    with trio.fail_after(10):
        c, s = await tls_pair(
            ClientTls.build(TlsProfile(versions=("1.3",)), PKI.csms_trust()),
            ServerTls.build(TlsProfile(versions=("1.2",)), PKI.server_identity()),
        )
    assert refused(c).reason == refused(s).reason == "downgrade_refused"


async def test_legacy_tls11_client_is_refused() -> None:
    legacy = TlsProfile(
        versions=("1.1",),
        insecure_legacy_versions=True,
        cipher_suites={"1.2": ["TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA"]},
    )
    with trio.fail_after(10):
        c, s = await tls_pair(ClientTls.build(legacy, PKI.csms_trust()), server_with(PKI.server))
    assert refused(c).reason == refused(s).reason == "downgrade_refused"


LEGACY_CBC = "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA"


def legacy_server(*suites: str) -> ServerTls:
    profile = TlsProfile(
        versions=("1.1", "1.0"), insecure_legacy_versions=True, cipher_suites={"1.2": list(suites)}
    )
    return ServerTls.build(profile, PKI.server_identity())


async def test_a_tls12_only_client_refusing_a_tls11_server_pick_is_a_version_refusal_on_both_sides() -> None:
    """The server answers TLS 1.1 (its newest) to a client that only says "up to 1.2"; the client refuses
    it, and its alert comes in a TLS 1.2 record the server's record layer rejects ("wrong version number"):
    the server still reports the cause, so the CSMS logs InvalidTLSVersion, not a protocol error."""
    client = TlsProfile(
        versions=("1.2",), cipher_suites={"1.2": ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", LEGACY_CBC]}
    )
    with trio.fail_after(10):
        c, s = await tls_pair(ClientTls.build(client, PKI.csms_trust()), legacy_server(LEGACY_CBC))
    fc, fs = refused(c), refused(s)
    assert (fc.reason, fc.remote) == ("downgrade_refused", False)
    assert (fs.reason, fs.remote) == ("downgrade_refused", True)
    assert "wrong version number" in fs.detail
    assert events.ocpp_security_event(fs.reason, side="server") == "InvalidTLSVersion"


async def test_a_tls12_only_client_without_a_tls11_suite_is_still_a_cipher_refusal() -> None:
    """The documented gap (evsim.tls.failures): the server refuses at TLS 1.1 with "no shared cipher"
    before the client sees its version, and neither side can tell the version was the cause."""
    client = TlsProfile(versions=("1.2",), cipher_suites={"1.2": ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"]})
    with trio.fail_after(10):
        c, s = await tls_pair(ClientTls.build(client, PKI.csms_trust()), legacy_server(LEGACY_CBC))
    assert refused(c).reason == refused(s).reason == "cipher_refused"


async def test_garbage_with_a_wrong_record_version_stays_a_protocol_error() -> None:
    """ "wrong version number" before the server chose a version is not a version refusal."""
    a, b = trio.testing.memory_stream_pair()
    with trio.fail_after(10):
        await a.send_all(b"\x16\x05\x01\x00\x05hello")
        with pytest.raises(HandshakeFailed) as info:
            await tls_accept(b, legacy_server(LEGACY_CBC))
    assert (info.value.reason, info.value.remote) == ("protocol_error", False)
    assert "wrong version number" in info.value.detail


async def test_disjoint_tls12_suites_is_a_cipher_refusal() -> None:
    def only(suite: str) -> TlsProfile:
        return TlsProfile(versions=("1.2",), cipher_suites={"1.2": [suite]})

    with trio.fail_after(10):
        c, s = await tls_pair(
            ClientTls.build(only("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"), PKI.csms_trust()),
            ServerTls.build(only("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"), PKI.server_identity()),
        )
    fc, fs = refused(c), refused(s)
    assert (fc.reason, fc.remote) == ("cipher_refused", True)
    assert (fs.reason, fs.remote) == ("cipher_refused", False)
    assert events.ocpp_security_event(fc.reason, side="client") == "InvalidTLSCipherSuite"


async def test_no_suite_for_the_server_certificate_type() -> None:
    # an RSA-key-transport-only client against an ECDSA server certificate: nothing can be negotiated
    profile = TlsProfile(versions=("1.2",), cipher_suites={"1.2": ["TLS_RSA_WITH_AES_128_GCM_SHA256"]})
    with trio.fail_after(10):
        c, s = await tls_pair(ClientTls.build(profile, PKI.csms_trust()), server_with(PKI.server))
    assert refused(c).reason == refused(s).reason == "cipher_refused"


RSA_SERVER = PKI.root.issue_server(CSMS_HOST, now=TEST_NOW, key_type="rsa")


@pytest.mark.parametrize("suite", SUITES, ids=[s.iana for s in SUITES])
async def test_every_suite_in_the_table_negotiates(suite: Suite) -> None:
    if suite.version == "1.3":
        profile = TlsProfile(versions=("1.3",), cipher_suites={"1.3": [suite.iana]})
    else:
        profile = TlsProfile(versions=("1.2",), cipher_suites={"1.2": [suite.iana]})
    server = server_with(RSA_SERVER if suite.auth == "RSA" else PKI.server, profile)
    with trio.fail_after(10):
        c, _ = await tls_pair(ClientTls.build(profile, PKI.csms_trust()), server)
    assert isinstance(c, TlsStream), c
    assert (c.info.cipher_iana, c.info.cipher_openssl) == (suite.iana, suite.openssl)


async def test_impostor_root_with_the_same_name_is_unknown() -> None:
    twin = CertificateAuthority.create_root("evsim Test Root CA", "evsim", now=TEST_NOW)  # same DN, other key
    assert twin.cert.subject == PKI.root.cert.subject
    with trio.fail_after(10):
        c, _ = await tls_pair(client_for(), server_with(twin.issue_server(CSMS_HOST, now=TEST_NOW)))
    assert refused(c).reason.startswith("cert_invalid:")
