"""The TLS model values: validation errors, suite table, context compilation and caching, event mapping."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from evsim.errors import ConfigError
from evsim.frozenmap import FrozenMap
from evsim.tls import (
    DEFAULT_SUITES,
    ClientTls,
    Identity,
    ServerTls,
    TlsProfile,
    TrustStore,
    events,
    ocpp_security_event,
)
from evsim.tls.suites import (
    BY_IANA,
    DEFAULT_TLS12_SUITES,
    DEFAULT_TLS13_SUITES,
    OCPP_TLS12_SUITES,
    SUITES,
    iana_name,
    openssl_name,
)
from tests.pki_fixtures import TEST_NOW, make_test_pki

PKI = make_test_pki()


# ---------------------------------------------------------------- TlsProfile


def test_defaults() -> None:
    p = TlsProfile()
    assert p.versions == ("1.3", "1.2")
    assert (p.min_version, p.max_version) == ("1.2", "1.3")
    assert (
        p.suites("1.3")
        == DEFAULT_TLS13_SUITES
        == (
            "TLS_AES_256_GCM_SHA384",
            "TLS_AES_128_GCM_SHA256",
            "TLS_CHACHA20_POLY1305_SHA256",
        )
    )
    assert set(OCPP_TLS12_SUITES) <= set(p.suites("1.2"))
    assert "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" in p.suites("1.2")
    assert p.openssl_cipher_list().startswith(b"ECDHE-ECDSA-AES128-GCM-SHA256:")
    assert (
        p.tls13_ciphersuites()
        == b"TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256"
    )
    assert (p.handshake_timeout_s, p.max_send_fragment, p.keylog, p.alpn) == (10.0, None, None, ())


def test_profiles_are_hashable_values() -> None:
    a = TlsProfile(versions=["1.3"], cipher_suites={"1.3": ["TLS_AES_128_GCM_SHA256"]})  # lists are fine
    b = TlsProfile(versions=("1.3",), cipher_suites={"1.3": ("TLS_AES_128_GCM_SHA256",)})
    assert a == b and hash(a) == hash(b)
    assert a.cipher_suites == {"1.3": ("TLS_AES_128_GCM_SHA256",)}
    assert isinstance(a.cipher_suites, FrozenMap)  # the one frozen table type (SuiteMap names its shape)
    assert DEFAULT_SUITES != {"1.3": ()} and DEFAULT_SUITES != 42
    assert a.openssl_cipher_list() == b""  # TLS 1.3 only: the <= 1.2 list is not used
    assert TlsProfile(versions=("1.2",)).tls13_ciphersuites() == b""


@pytest.mark.parametrize(
    ("kwargs", "path", "fix"),
    [
        ({"versions": ()}, "versions", '"1.3"'),
        ({"versions": ("1.3", "1.4")}, "versions[1]", "1.2, 1.3"),
        ({"versions": ("1.3", "1.3")}, "versions[1]", "once"),
        ({"versions": (1.3,)}, "versions[0]", "strings"),
        ({"versions": ("1.1", "1.2")}, "versions[0]", "insecure_legacy_versions"),
        (
            {"versions": ("1.3", "1.1"), "insecure_legacy_versions": True},
            "versions",
            "add 1.2",
        ),
        ({"cipher_suites": {"1.2": ["TLS_FOO_BAR"]}}, "cipher_suites.1.2[0]", "IANA name from"),
        (
            {"cipher_suites": {"1.2": ["ECDHE-ECDSA-AES128-GCM-SHA256"]}},
            "cipher_suites.1.2[0]",
            "'TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256'",
        ),
        (
            {"cipher_suites": {"1.2": ["TLS_AES_128_GCM_SHA256"], "1.3": ["TLS_AES_128_GCM_SHA256"]}},
            "cipher_suites.1.2[0]",
            'cipher_suites."1.3"',
        ),
        (
            {"cipher_suites": {"1.3": ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"]}},
            "cipher_suites.1.3[0]",
            'cipher_suites."1.2"',
        ),
        ({"cipher_suites": {"1.2": ["TLS_RSA_WITH_AES_128_GCM_SHA256"] * 2}}, "cipher_suites.1.2[1]", "once"),
        ({"cipher_suites": {"1.4": ["TLS_AES_128_GCM_SHA256"]}}, "cipher_suites.1.4", '"1.3"'),
        ({"cipher_suites": {"1.2": "TLS_RSA_WITH_AES_128_GCM_SHA256"}}, "cipher_suites.1.2", "["),
        # a version without suites
        (
            {"versions": ("1.3", "1.2"), "cipher_suites": {"1.3": ["TLS_AES_128_GCM_SHA256"]}},
            'cipher_suites."1.2"',
            "add",
        ),
        ({"versions": ("1.3",), "cipher_suites": {"1.3": []}}, 'cipher_suites."1.3"', "add"),
        # TLS 1.1 cannot use TLS 1.2-only (AEAD) suites
        (
            {
                "versions": ("1.2", "1.1"),
                "insecure_legacy_versions": True,
                "cipher_suites": {"1.2": ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"]},
            },
            'cipher_suites."1.2"',
            "CBC_SHA",
        ),
        ({"handshake_timeout_s": 0}, "handshake_timeout_s", "10.0"),
        ({"handshake_timeout_s": "10"}, "handshake_timeout_s", "10.0"),
        ({"max_send_fragment": 63}, "max_send_fragment", "2048"),
        ({"max_send_fragment": 16385}, "max_send_fragment", "2048"),
        ({"max_send_fragment": True}, "max_send_fragment", "2048"),
        ({"alpn": ("",)}, "alpn[0]", "ntske/1"),
        ({"alpn": ("x" * 256,)}, "alpn[0]", "ntske/1"),
        ({"suite_preference": "random"}, "suite_preference", "server"),
    ],
)
def test_profile_validation(kwargs: dict[str, object], path: str, fix: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        TlsProfile(**kwargs)  # type: ignore[arg-type]
    err = excinfo.value
    assert err.path == path
    assert fix in err.fix
    assert path in str(err) and "fix:" in str(err)


def test_legacy_versions_are_possible_on_purpose() -> None:
    p = TlsProfile(
        versions=("1.2", "1.1", "1.0"),
        insecure_legacy_versions=True,
        cipher_suites={
            "1.2": ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA"]
        },
    )
    assert (p.min_version, p.max_version) == ("1.0", "1.2")


# ---------------------------------------------------------------- suites table


def test_suite_table() -> None:
    assert len({s.iana for s in SUITES}) == len(SUITES)
    assert len({s.openssl for s in SUITES}) == len(SUITES)
    assert {s.iana for s in SUITES if s.version == "1.3"} == {
        "TLS_AES_128_GCM_SHA256",
        "TLS_AES_256_GCM_SHA384",
        "TLS_CHACHA20_POLY1305_SHA256",
        "TLS_AES_128_CCM_SHA256",
        "TLS_AES_128_CCM_8_SHA256",
    }
    for name in (*OCPP_TLS12_SUITES, *DEFAULT_TLS12_SUITES, "TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8"):
        assert name in BY_IANA
    assert openssl_name("TLS_RSA_WITH_AES_128_GCM_SHA256") == "AES128-GCM-SHA256"
    assert iana_name("ECDHE-ECDSA-AES256-GCM-SHA384") == "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"
    assert iana_name("TLS_AES_128_GCM_SHA256") == "TLS_AES_128_GCM_SHA256"
    assert iana_name("UNKNOWN") == "UNKNOWN"
    ccm8 = BY_IANA["TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8"]
    assert (ccm8.kx, ccm8.auth, ccm8.seclevel0) == ("ECDHE", "ECDSA", True)
    assert BY_IANA["TLS_RSA_WITH_AES_128_GCM_SHA256"].kx == "RSA"
    assert not BY_IANA["TLS_AES_128_GCM_SHA256"].seclevel0


# ---------------------------------------------------------------- TrustStore / Identity


def test_trust_store_validation() -> None:
    with pytest.raises(ConfigError, match="at least one anchor") as excinfo:
        TrustStore("empty", ())
    assert excinfo.value.path == "trust.empty.anchors"
    with pytest.raises(ConfigError) as excinfo:
        TrustStore("t", (PKI.root.cert,), hostname="fqdn")  # type: ignore[arg-type]
    assert excinfo.value.path == "trust.t.hostname"
    with pytest.raises(ConfigError):
        TrustStore("t", (PKI.root.cert,), wildcards="maybe")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        TrustStore("t", (PKI.root.cert,), time_check="lenient")  # type: ignore[arg-type]
    single = TrustStore("t", PKI.root.cert)  # type: ignore[arg-type]
    assert single.anchors == (PKI.root.cert,)
    assert single == TrustStore("t", [PKI.root.cert]) and hash(single) == hash(
        TrustStore("t", [PKI.root.cert])
    )


def test_trust_store_and_identity_from_files(tmp_path: object) -> None:
    from pathlib import Path

    from evsim.pki import write_cert_file, write_key_file

    d = Path(str(tmp_path))
    station = PKI.station_cert("CS00077")
    write_cert_file(d / "ca.crt", PKI.root.cert)
    write_cert_file(d / "cs.crt", *station.chain)
    write_key_file(d / "cs.key", station.key)
    trust = TrustStore.from_files("CSMSRootCertificate", [d / "ca.crt"], wildcards="allow")
    assert trust.anchors == (PKI.root.cert,) and trust.wildcards == "allow"
    ident = Identity.from_files(d / "cs.crt", d / "cs.key")
    assert ident.chain == station.chain and ident.leaf == station.cert
    with pytest.raises(ConfigError) as excinfo:
        TrustStore.from_files("x", [d / "missing.crt"])
    assert excinfo.value.file == str(d / "missing.crt") and "missing.crt" in str(excinfo.value)
    (d / "bad.key").write_text("not a key")
    with pytest.raises(ConfigError, match=r"bad\.key"):
        Identity.from_files(d / "cs.crt", d / "bad.key")
    with pytest.raises(ConfigError, match=r"nope\.crt"):
        Identity.from_files(d / "nope.crt", d / "cs.key")


def test_identity_validation() -> None:
    ident = PKI.server_identity()
    assert ident == Identity(PKI.server.chain, PKI.server.key) and hash(ident) == hash(PKI.server_identity())
    with pytest.raises(ConfigError, match="does not match") as excinfo:
        Identity((PKI.server.cert,), PKI.localhost.key)
    assert excinfo.value.path == "identity.key"
    with pytest.raises(ConfigError, match="needs a certificate"):
        Identity((), PKI.server.key)
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(ConfigError, match="too weak"):
        Identity((PKI.server.cert,), weak)


# ---------------------------------------------------------------- compilation


def test_contexts_are_cached_by_value() -> None:
    a = ClientTls.build(TlsProfile(), PKI.csms_trust())
    b = ClientTls.build(TlsProfile(), PKI.csms_trust())
    assert a is b
    assert ClientTls.build(TlsProfile(handshake_timeout_s=5), PKI.csms_trust()) is not a
    s1 = ServerTls.build(TlsProfile(), PKI.server_identity())
    assert ServerTls.build(TlsProfile(), PKI.server_identity()) is s1
    assert ServerTls.build(TlsProfile(), PKI.server_identity(), PKI.station_trust(), "required") is not s1
    assert s1.side == "server" and a.side == "client" and not s1.verifies_peer


def test_server_client_auth_needs_trust() -> None:
    with pytest.raises(ConfigError, match="needs a trust store") as excinfo:
        ServerTls.build(TlsProfile(), PKI.server_identity(), None, "required")
    assert excinfo.value.path == "client_auth"
    with pytest.raises(ConfigError, match="unknown client_auth"):
        ServerTls.build(TlsProfile(), PKI.server_identity(), PKI.station_trust(), "sometimes")  # type: ignore[arg-type]


def test_tls13_only_and_seclevel0_profiles_compile() -> None:
    ClientTls.build(
        TlsProfile(versions=("1.3",), cipher_suites={"1.3": ["TLS_AES_128_CCM_8_SHA256"]}), PKI.csms_trust()
    )
    ServerTls.build(
        TlsProfile(
            cipher_suites={"1.3": ["TLS_AES_128_GCM_SHA256"], "1.2": ["TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8"]}
        ),
        PKI.server_identity(),
    )


# ---------------------------------------------------------------- events


@pytest.mark.parametrize(
    ("reason", "side", "event"),
    [
        ("cert_invalid:expired", "client", "InvalidCsmsCertificate"),
        ("cert_invalid:unknown_ca", "client", "InvalidCsmsCertificate"),
        ("cert_invalid:hostname_mismatch", "client", "InvalidCsmsCertificate"),
        ("cert_invalid:wildcard", "client", "InvalidCsmsCertificate"),
        ("cert_invalid:expired", "server", "InvalidChargingStationCertificate"),
        ("cert_invalid:no_client_cert", "server", "InvalidChargingStationCertificate"),
        ("downgrade_refused", "client", "InvalidTLSVersion"),
        ("downgrade_refused", "server", "InvalidTLSVersion"),
        ("cipher_refused", "client", "InvalidTLSCipherSuite"),
        ("cipher_refused", "server", "InvalidTLSCipherSuite"),
        ("peer_alert:certificate_required", "client", "FailedToAuthenticateAtCsms"),
        ("peer_alert:unknown_ca", "client", "FailedToAuthenticateAtCsms"),
        ("peer_alert:unknown_ca", "server", None),
        ("peer_alert:decode_error", "client", None),
        ("timeout", "client", None),
        ("eof", "server", None),
        ("protocol_error", "client", None),
    ],
)
def test_ocpp_security_event(reason: str, side: str, event: str | None) -> None:
    assert ocpp_security_event(reason, side=side) == event  # type: ignore[arg-type]


def test_event_vocabulary() -> None:
    assert events.reason_kind("cert_invalid:expired") == events.CERT_INVALID
    assert events.reason_kind("timeout") == "timeout"
    assert len(set(events.EVENTS)) == len(events.EVENTS) == 16
    assert all(r.startswith("cert_invalid:") for r in (events.CERT_EXPIRED, events.CERT_WILDCARD))
    assert TEST_NOW.tzinfo is not None
