"""evsim.pki: keys, CAs, certificate properties (OCPP A00.FR.501-514), CSR signing, the dev PKI on disk."""

from __future__ import annotations

import datetime as dt
import hashlib
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from evsim.errors import PkiError
from evsim.pki import (
    NOT_BEFORE_BACKDATE,
    CertificateAuthority,
    CertKey,
    DevPki,
    check_key_strength,
    common_name,
    generate_key,
    init_dev_pki,
    load_certs_pem,
    load_key_pem,
    make_csr,
    organization,
    ski,
    spki_sha256,
)
from evsim.pki.dev import ALL_FILES
from tests.pki_fixtures import TEST_NOW, make_test_pki

PKI = make_test_pki()
NOW = TEST_NOW
REPO = Path(__file__).resolve().parent.parent


def ext(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.Extension[x509.ExtensionType]:
    return cert.extensions.get_extension_for_class(kind)


# ---------------------------------------------------------------- keys


def test_generate_key_types() -> None:
    k = generate_key()
    assert isinstance(k, ec.EllipticCurvePrivateKey) and k.curve.name == "secp256r1"
    r = generate_key("rsa")
    assert isinstance(r, rsa.RSAPrivateKey) and r.key_size == 2048
    with pytest.raises(PkiError, match="at least 2048"):
        generate_key("rsa", rsa_bits=1024)
    with pytest.raises(PkiError, match="unknown key type"):
        generate_key("dsa")  # type: ignore[arg-type]


def test_key_strength_rules() -> None:
    check_key_strength(generate_key(), what="ok")
    with pytest.raises(PkiError, match=r"1024-bit.*2048"):
        check_key_strength(rsa.generate_private_key(public_exponent=65537, key_size=1024), what="k")
    with pytest.raises(PkiError, match=r"secp192r1.*224"):
        check_key_strength(ec.generate_private_key(ec.SECP192R1()).public_key(), what="k")
    check_key_strength(ec.generate_private_key(ec.SECP224R1()), what="P-224 is the minimum")
    with pytest.raises(PkiError, match="unsupported key algorithm"):
        check_key_strength(object(), what="k")


def test_pem_round_trip_and_errors() -> None:
    ck = PKI.station_cert("CS00100")
    assert load_key_pem(ck.key_pem()).private_numbers() == ck.key.private_numbers()
    assert load_certs_pem(ck.chain_pem()) == list(ck.chain)
    assert load_certs_pem(ck.cert_pem()) == [ck.cert]
    with pytest.raises(PkiError, match=r"here\.pem: not a valid unencrypted PEM private key"):
        load_key_pem(b"garbage", source="here.pem")
    with pytest.raises(PkiError, match=r"x\.crt: not a valid PEM certificate"):
        load_certs_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", source="x.crt")


def test_spki_and_ski() -> None:
    cert = PKI.server.cert
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert spki_sha256(cert) == hashlib.sha256(spki).digest()
    assert ski(cert) == ext(cert, x509.SubjectKeyIdentifier).value.digest  # type: ignore[attr-defined]
    assert len(ski(cert)) == 20


# ---------------------------------------------------------------- certificate properties


def test_root_ca_properties() -> None:
    root = PKI.root.cert
    assert root.subject == root.issuer
    assert common_name(root) == "evsim Test Root CA" and organization(root) == "evsim"
    bc = ext(root, x509.BasicConstraints)
    assert bc.critical and bc.value.ca  # type: ignore[attr-defined]
    ku = ext(root, x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign  # type: ignore[attr-defined]
    assert isinstance(root.signature_hash_algorithm, hashes.SHA256)
    assert root.not_valid_before_utc == NOW - NOT_BEFORE_BACKDATE
    assert dt.timedelta(hours=1) == NOT_BEFORE_BACKDATE
    assert PKI.root.root == root and PKI.root.intermediates == () and PKI.root.chain_to_root == (root,)


def test_server_cert_properties() -> None:
    cert = PKI.server.cert
    assert common_name(cert) == "csms.evsim.test"  # OCPP: CN = FQDN
    assert organization(cert) == "evsim"
    san = ext(cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["csms.evsim.test"]  # type: ignore[attr-defined]
    assert not ext(cert, x509.BasicConstraints).value.ca  # type: ignore[attr-defined]
    ku = ext(cert, x509.KeyUsage).value
    assert ku.digital_signature and not ku.key_encipherment and not ku.key_cert_sign  # type: ignore[attr-defined]
    with pytest.raises(x509.ExtensionNotFound):  # OCPP: ExtendedKeyUsage strongly NOT RECOMMENDED
        ext(cert, x509.ExtendedKeyUsage)
    aki = ext(cert, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski(PKI.root.cert)  # type: ignore[attr-defined]
    assert cert.not_valid_after_utc == NOW + dt.timedelta(days=397)
    cert.verify_directly_issued_by(PKI.root.cert)


def test_server_cert_variants() -> None:
    local = PKI.localhost.cert
    san = ext(local, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]  # type: ignore[attr-defined]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]  # type: ignore[attr-defined]
    cn_only = PKI.root.issue_server("csms.evsim.test", cn_in_san=False, now=NOW).cert
    with pytest.raises(x509.ExtensionNotFound):
        ext(cn_only, x509.SubjectAlternativeName)
    multi = PKI.root.issue_server("csms.evsim.test", sans=("csms.evsim.test", "alt.evsim.test"), now=NOW).cert
    assert ext(multi, x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName) == [  # type: ignore[attr-defined]
        "csms.evsim.test",
        "alt.evsim.test",
    ]
    wildcard = PKI.root.issue_server("*.evsim.test", now=NOW).cert
    assert common_name(wildcard) == "*.evsim.test"
    rsa_cert = PKI.root.issue_server("csms.evsim.test", key_type="rsa", now=NOW)
    assert isinstance(rsa_cert.key, rsa.RSAPrivateKey)
    assert ext(rsa_cert.cert, x509.KeyUsage).value.key_encipherment  # type: ignore[attr-defined]  # TLS_RSA_* suites
    eku = PKI.root.issue_server("x.evsim.test", extended_key_usage=[ExtendedKeyUsageOID.SERVER_AUTH], now=NOW)
    assert list(ext(eku.cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]  # type: ignore[call-overload]
    with pytest.raises(PkiError, match="bad IP"):
        PKI.root.issue_server("x", ips=("300.1.1.1",), now=NOW)
    with pytest.raises(PkiError, match=r"1\.\.64"):
        PKI.root.issue_server("x" * 65, now=NOW)
    with pytest.raises(PkiError, match="at least one day"):
        PKI.root.issue_server("x", now=NOW, days=0)


def test_station_cert_and_sub_ca() -> None:
    ck = PKI.station_cert("CS00001")
    assert ck.cert.subject.rfc4514_string() == "O=evsim,CN=CS00001"  # OCPP: CN = serial, O = CSO
    assert ck.intermediates == (PKI.station_ca.cert,)
    assert ck.chain == (ck.cert, PKI.station_ca.cert)
    with pytest.raises(x509.ExtensionNotFound):
        ext(ck.cert, x509.SubjectAlternativeName)
    sub = ext(PKI.station_ca.cert, x509.BasicConstraints).value
    assert sub.ca and sub.path_length == 0  # type: ignore[attr-defined]
    assert PKI.station_ca.parents == (PKI.root.cert,) and PKI.station_ca.root == PKI.root.cert
    assert PKI.station_ca.intermediates == (PKI.station_ca.cert,)
    ck.cert.verify_directly_issued_by(PKI.station_ca.cert)
    assert PKI.station_cert("CS00001") is ck  # cached
    own_org = PKI.station_ca.issue_client("CS9", "Other CSO", now=NOW)
    assert organization(own_org.cert) == "Other CSO"


def test_serial_numbers_are_unique() -> None:
    serials = {PKI.root.issue_client(f"CS{i}", now=NOW).cert.serial_number for i in range(20)}
    assert len(serials) == 20
    assert all(0 < s < 2**160 for s in serials)


def test_naive_now_is_utc() -> None:
    naive = NOW.replace(tzinfo=None)
    cert = PKI.root.issue_client("CS1", now=naive).cert
    assert cert.not_valid_before_utc == NOW - NOT_BEFORE_BACKDATE


def test_cert_key_mismatch_is_refused() -> None:
    with pytest.raises(PkiError, match="does not match"):
        CertKey(PKI.server.cert, PKI.localhost.key)
    with pytest.raises(PkiError, match="CA key does not match"):
        CertificateAuthority(PKI.root.cert, PKI.evil.key)
    with pytest.raises(PkiError, match="too weak"):
        PKI.root.issue_client(
            "CS1", key=rsa.generate_private_key(public_exponent=65537, key_size=1024), now=NOW
        )


def test_as_cert_key() -> None:
    assert PKI.station_ca.as_cert_key().chain == (PKI.station_ca.cert,)
    assert PKI.root.as_cert_key().cert == PKI.root.cert


# ---------------------------------------------------------------- CSR (OCPP A02)


def test_csr_sign_round_trip() -> None:
    key = generate_key()
    csr = make_csr(key, "CS00055", "evsim")
    assert csr.startswith(b"-----BEGIN CERTIFICATE REQUEST-----")
    cert = PKI.station_ca.sign_csr(csr, now=NOW, days=30, expected_org="evsim")
    assert cert.subject.rfc4514_string() == "O=evsim,CN=CS00055"
    assert cert.public_key() == key.public_key()
    assert cert.not_valid_after_utc == NOW + dt.timedelta(days=30)
    cert.verify_directly_issued_by(PKI.station_ca.cert)
    CertKey(cert, key, PKI.station_ca.intermediates)  # key matches
    rsa_csr = make_csr(generate_key("rsa"), "CS00056", "evsim")
    assert isinstance(PKI.station_ca.sign_csr(rsa_csr, now=NOW).public_key(), rsa.RSAPublicKey)


def _raw_csr(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, name: x509.Name) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(name)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def test_csr_refusals() -> None:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "CS1"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "evsim"),
        ]
    )
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(PkiError, match=r"CSR public key.*too weak"):
        PKI.station_ca.sign_csr(_raw_csr(weak, name), now=NOW)
    p192 = ec.generate_private_key(ec.SECP192R1())
    with pytest.raises(PkiError, match="too weak"):
        PKI.station_ca.sign_csr(_raw_csr(p192, name), now=NOW)
    with pytest.raises(PkiError, match="too weak"):
        make_csr(weak, "CS1", "evsim")
    no_cn = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "evsim")])
    with pytest.raises(PkiError, match="no CN"):
        PKI.station_ca.sign_csr(_raw_csr(generate_key(), no_cn), now=NOW)
    with pytest.raises(PkiError, match="expected 'Other'"):
        PKI.station_ca.sign_csr(make_csr(generate_key(), "CS1", "evsim"), now=NOW, expected_org="Other")
    with pytest.raises(PkiError, match="not a valid PEM"):
        PKI.station_ca.sign_csr(b"nonsense", now=NOW)


def test_tampered_csr_is_refused() -> None:
    key, other = generate_key(), generate_key()
    good = x509.load_pem_x509_csr(make_csr(key, "CS1", "evsim"))
    # splice another key into the signed request body: the self-signature no longer verifies
    body = good.tbs_certrequest_bytes
    spki_old = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    spki_new = other.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert len(spki_old) == len(spki_new) and spki_old in body
    der = good.public_bytes(serialization.Encoding.DER).replace(spki_old, spki_new)
    tampered = x509.load_der_x509_csr(der).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(PkiError, match="signature does not verify"):
        PKI.station_ca.sign_csr(tampered, now=NOW)


# ---------------------------------------------------------------- dev PKI on disk


def test_init_dev_pki_writes_everything(tmp_path: Path) -> None:
    pki = init_dev_pki(tmp_path / "certs", now=NOW, stations=2)
    d = tmp_path / "certs"
    for name in ALL_FILES:
        mode = stat.S_IMODE((d / name).stat().st_mode)
        assert mode == (0o600 if name.endswith(".key") else 0o644), name
    assert sorted(p.name for p in (d / "stations").iterdir()) == [
        "CS00001.crt",
        "CS00001.key",
        "CS00002.crt",
        "CS00002.key",
    ]
    assert stat.S_IMODE((d / "stations" / "CS00001.key").stat().st_mode) == 0o600
    assert not list(d.rglob(".*"))  # no temporary files left behind
    server_pem = (d / "server.crt").read_bytes()
    assert server_pem.count(b"BEGIN CERTIFICATE") == 1  # the leaf and nothing else
    server = load_certs_pem(server_pem)[0]
    assert common_name(server) == "localhost" == pki.host and pki.org == "evsim"
    san = ext(server, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]  # type: ignore[attr-defined]
    assert [str(i) for i in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]  # type: ignore[attr-defined]
    server.verify_directly_issued_by(pki.root.cert)
    pki.station_ca.cert.verify_directly_issued_by(pki.root.cert)
    assert pki.manufacturer_root.cert.subject == pki.manufacturer_root.cert.issuer
    assert organization(pki.manufacturer_root.cert) == "evsim"
    station_chain = load_certs_pem((d / "stations" / "CS00001.crt").read_bytes())
    assert station_chain == [station_chain[0], pki.station_ca.cert]  # leaf, then the sub-CA
    assert station_chain[0].subject.rfc4514_string() == "O=evsim,CN=CS00001"
    assert pki.path("ca.crt") == d / "ca.crt"


def test_dev_pki_load_and_station_on_demand(tmp_path: Path) -> None:
    made = init_dev_pki(tmp_path, host="csms.evsim.test", org="ACME CSO", now=NOW)
    loaded = DevPki.load(tmp_path)
    assert loaded.root.cert == made.root.cert and loaded.server.cert == made.server.cert
    assert loaded.station_ca.parents == (made.root.cert,)
    assert loaded.host == "csms.evsim.test" and loaded.org == "ACME CSO"
    san = ext(loaded.server.cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["csms.evsim.test"]  # type: ignore[attr-defined]
    assert san.get_values_for_type(x509.IPAddress) == []  # type: ignore[attr-defined]
    first = loaded.station("CS-7", now=NOW)
    assert first.cert.subject.rfc4514_string() == "O=ACME CSO,CN=CS-7"
    again = DevPki.load(tmp_path).station("CS-7", now=NOW + dt.timedelta(days=100))
    assert again.cert == first.cert and again.intermediates == (
        made.station_ca.cert,
    )  # loaded, not re-issued
    with pytest.raises(PkiError, match="not a valid OCPP identity"):
        loaded.station("../escape", now=NOW)
    with pytest.raises(PkiError, match="not a valid OCPP identity"):
        loaded.station("a:b", now=NOW)


def test_dev_pki_ip_host_and_rsa(tmp_path: Path) -> None:
    pki = init_dev_pki(tmp_path, host="127.0.0.1", key_type="rsa", now=NOW, stations=["CS-A"])
    assert isinstance(pki.server.key, rsa.RSAPrivateKey)
    san = ext(pki.server.cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == []  # type: ignore[attr-defined]
    assert [str(i) for i in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]  # type: ignore[attr-defined]
    assert (tmp_path / "stations" / "CS-A.crt").exists()


def test_init_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    first = init_dev_pki(tmp_path, now=NOW, stations=1)
    with pytest.raises(PkiError, match=r"ca.crt already exists; fix: pass force=True"):
        init_dev_pki(tmp_path, now=NOW)
    second = init_dev_pki(tmp_path, now=NOW, force=True)
    assert second.root.cert != first.root.cert
    assert not (tmp_path / "stations" / "CS00001.crt").exists()  # old station certs are gone
    with pytest.raises(PkiError, match="host must not be empty"):
        init_dev_pki(tmp_path / "x", host="", now=NOW)
    with pytest.raises(PkiError, match="not a valid OCPP identity"):
        init_dev_pki(tmp_path / "y", now=NOW, stations=["bad/id"])


def test_load_errors_name_the_file_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(PkiError) as excinfo:
        DevPki.load(tmp_path)
    msg = str(excinfo.value)
    assert str(tmp_path / "ca.crt") in msg and "missing" in msg
    assert f"evsim certs init --pki {tmp_path}" in msg
    init_dev_pki(tmp_path, now=NOW)
    (tmp_path / "station-ca.key").write_text(
        "-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n"
    )
    with pytest.raises(PkiError) as excinfo:
        DevPki.load(tmp_path)
    msg = str(excinfo.value)
    assert str(tmp_path / "station-ca.key") in msg and "evsim certs init" in msg
    init_dev_pki(tmp_path, now=NOW, force=True)
    (tmp_path / "server.key").write_bytes((tmp_path / "ca.key").read_bytes())
    with pytest.raises(PkiError, match=r"server.key: key does not match .*server.crt"):
        DevPki.load(tmp_path)
    init_dev_pki(tmp_path, now=NOW, force=True)
    (tmp_path / "server.crt").write_text("garbage")
    with pytest.raises(PkiError, match=r"server.crt: not a valid PEM certificate.*evsim certs init"):
        DevPki.load(tmp_path)


def test_corrupt_station_files_name_the_file(tmp_path: Path) -> None:
    pki = init_dev_pki(tmp_path, now=NOW)
    pki.station("CS1", now=NOW)
    (tmp_path / "stations" / "CS1.key").write_bytes((tmp_path / "ca.key").read_bytes())
    with pytest.raises(PkiError, match=r"CS1.key: key does not match .*CS1.crt; fix: delete"):
        pki.station("CS1", now=NOW)
    (tmp_path / "stations" / "CS1.crt").unlink()
    with pytest.raises(PkiError, match=r"CS1.crt: certificate is missing"):
        pki.station("CS1", now=NOW)


def test_certs_readme_lists_every_file() -> None:
    text = (REPO / "certs" / "README.md").read_text()
    for name in (*ALL_FILES, "stations/<id>.crt", "stations/<id>.key", "evsim certs init --pki certs"):
        assert name in text, name
    gitignore = (REPO / ".gitignore").read_text()
    assert "certs/**" in gitignore and "!certs/README.md" in gitignore
