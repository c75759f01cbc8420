"""Development PKI: keys, CAs, certificates, CSR signing (cryptography's x509 builders enter here only).

Public API::

    generate_key(key_type="ec") -> PrivateKey          check_key_strength(key, what=...)
    CertificateAuthority.create_root(cn, org, *, now, days, key_type)
        .create_sub_ca(...)  .issue_server(cn, *, sans, ips, ...)  .issue_client(cn, org, ...)
        .sign_csr(csr_pem, *, now, days)
    CertKey(cert, key, intermediates)                  make_csr(key, cn, org) -> bytes
    issue_self_signed(cn, org, *, now, days, key_type, key) -> CertKey   (SHIP-style device certificate)
    spki_sha256(cert) / ski(cert)                      PEM load/save helpers
    init_dev_pki(dir, *, host, org, key_type, key_size, now, force, stations) -> DevPki;  DevPki.load(dir)
    CsmsPki.load(dir)   a CSMS's ca.crt + server.crt + server.key (+ the station sub-CA when present)
    lifecycle: check_csr, check_signed_chain, check_root, certificate_hash_data (OCPP A02/A03, M03-M05)
"""

from __future__ import annotations

from evsim.pki.ca import (
    CLIENT_EKU,
    NOT_BEFORE_BACKDATE,
    SERVER_EKU,
    CertificateAuthority,
    CertKey,
    common_name,
    issue_self_signed,
    make_csr,
    organization,
)
from evsim.pki.dev import CsmsPki, DevPki, default_station_id, init_dev_pki
from evsim.pki.keys import (
    KeyType,
    PrivateKey,
    cert_fingerprint,
    certs_to_pem,
    check_key_strength,
    generate_key,
    key_matches_cert,
    key_to_pem,
    load_cert_file,
    load_certs_pem,
    load_key_file,
    load_key_pem,
    public_key_der,
    ski,
    spki_sha256,
    write_cert_file,
    write_key_file,
)

__all__ = [
    "CLIENT_EKU",
    "NOT_BEFORE_BACKDATE",
    "SERVER_EKU",
    "CertKey",
    "CertificateAuthority",
    "CsmsPki",
    "DevPki",
    "KeyType",
    "PrivateKey",
    "cert_fingerprint",
    "certs_to_pem",
    "check_key_strength",
    "common_name",
    "default_station_id",
    "generate_key",
    "init_dev_pki",
    "issue_self_signed",
    "key_matches_cert",
    "key_to_pem",
    "load_cert_file",
    "load_certs_pem",
    "load_key_file",
    "load_key_pem",
    "make_csr",
    "organization",
    "public_key_der",
    "ski",
    "spki_sha256",
    "write_cert_file",
    "write_key_file",
]
