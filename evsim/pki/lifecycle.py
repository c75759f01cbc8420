"""The certificate checks of OCPP's certificate management (A02/A03, M03-M05), pure and bounded.

Everything a peer sends is hostile until checked, and every check here refuses with a
:class:`CertificateRefused` whose ``reason`` is a short, stable code for events and statistics:

* :func:`check_csr` - the CSMS's check of a ``SignCertificateRequest.csr``: size, PEM PKCS#10, the
  self-signature, key strength, CN = the station's identity, O = the operator's organization.
* :func:`check_signed_chain` - the station's check of a ``CertificateSignedRequest.certificateChain``
  (A02.FR.06/07/16): size and number of certificates *before* parsing anything, then the leaf (CN, O, not a
  CA, the key of the pending CSR, strong enough), validity at the station's clock for every certificate, and
  the path leaf -> intermediates -> one of the installed roots (issuer names, signatures, CA flags).
* :func:`check_root` - InstallCertificate of a root (M05): a CA certificate valid now; with
  ``AdditionalRootCertificateCheck`` it must be signed by the current root.
* :func:`certificate_hash_data` - OCPP's ``CertificateHashDataType`` of a certificate (M03/M04).

Time is never read here: every function takes ``now`` (the simulation's wall time).
"""

from __future__ import annotations

import datetime as _dt
import itertools
from collections.abc import Mapping, Sequence
from typing import Final, Literal

import attrs
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from evsim.errors import PkiError
from evsim.pki.keys import check_key_strength, public_key_der
from evsim.pki.ocsp import OCPP_HASH_ALGORITHMS, issuer_key_hash, issuer_name_hash

__all__ = [
    "CHAIN_MAX_BYTES",
    "CHAIN_MAX_CERTIFICATES",
    "CSR_MAX_BYTES",
    "CertificateRefused",
    "CsrInfo",
    "certificate_hash_data",
    "check_csr",
    "check_root",
    "check_signed_chain",
    "hash_data_matches",
    "load_certificate",
]

CSR_MAX_BYTES: Final = 5500
"""``SignCertificateRequest.csr`` maxLength (2.0.1 and 2.1)."""
CHAIN_MAX_BYTES: Final = 10000
"""``CertificateSignedRequest.certificateChain`` maxLength (the upper bound of MaxCertificateChainSize)."""
CHAIN_MAX_CERTIFICATES: Final = 6
"""Certificates accepted in one chain: the leaf, up to four sub-CAs (the V2G limit, M03) and the root."""

_PEM_BEGIN: Final = "-----BEGIN CERTIFICATE-----"
_PEM_CSR: Final = "-----BEGIN CERTIFICATE REQUEST-----"
_UTC = _dt.UTC


class CertificateRefused(PkiError):
    """A certificate, chain or CSR a peer sent does not pass a check.

    Attributes:
        reason: a short code (``too_large``, ``malformed``, ``bad_signature``, ``wrong_cn``, ``wrong_org``,
            ``weak_key``, ``key_mismatch``, ``expired``, ``not_yet_valid``, ``untrusted``, ``not_a_ca``,
            ``leaf_is_ca``, ``too_many_certs``, ``not_signed_by_root``).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _utc(now: _dt.datetime) -> _dt.datetime:
    return now.replace(tzinfo=_UTC) if now.tzinfo is None else now.astimezone(_UTC)


def _attribute(name: x509.Name, oid: x509.ObjectIdentifier) -> list[str]:
    out: list[str] = []
    for attr in name.get_attributes_for_oid(oid):
        value = attr.value
        out.append(value if isinstance(value, str) else value.decode("utf-8", "replace"))
    return out


def _size(text: str | bytes) -> int:
    return len(text) if isinstance(text, bytes) else len(text.encode("utf-8", "surrogatepass"))


@attrs.frozen
class CsrInfo:
    """A CSR that passed :func:`check_csr`.

    Attributes:
        pem: the request as received (PEM bytes).
        common_name: the subject CN.
        organization: the subject O.
        public_key_der: DER SubjectPublicKeyInfo of the requested key.
    """

    pem: bytes
    common_name: str
    organization: str
    public_key_der: bytes


def check_csr(
    csr_pem: str | bytes,
    *,
    expected_cn: str,
    expected_org: str | None,
    max_bytes: int = CSR_MAX_BYTES,
) -> CsrInfo:
    """Check a ``SignCertificateRequest.csr`` before anything signs it (CSMS side, A02.FR.04/A00.FR.404/405).

    Args:
        csr_pem: the PEM PKCS#10 request.
        expected_cn: the station's identity (CN = Charging Station serial number).
        expected_org: the operator's organization (None: not checked).
        max_bytes: the largest request looked at.

    Returns:
        What the request asks for.

    Raises:
        CertificateRefused: ``too_large``, ``malformed``, ``bad_signature``, ``weak_key``, ``wrong_cn`` or
            ``wrong_org``.
    """
    size = _size(csr_pem)
    if size > max_bytes:
        raise CertificateRefused("too_large", f"CSR of {size} bytes is larger than {max_bytes}")
    data = csr_pem.encode("utf-8", "replace") if isinstance(csr_pem, str) else csr_pem
    if data.count(_PEM_CSR.encode()) != 1:
        raise CertificateRefused("malformed", "CSR must be exactly one PEM CERTIFICATE REQUEST block")
    try:
        csr = x509.load_pem_x509_csr(data)
        valid = csr.is_signature_valid
        public_key = csr.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CertificateRefused("malformed", f"CSR is not a valid PEM PKCS#10 request ({exc})") from exc
    if not valid:
        raise CertificateRefused("bad_signature", "CSR signature does not verify with the key it carries")
    try:
        check_key_strength(public_key, what="CSR public key")
    except PkiError as exc:
        raise CertificateRefused("weak_key", str(exc)) from exc
    cns = _attribute(csr.subject, NameOID.COMMON_NAME)
    if cns != [expected_cn]:
        raise CertificateRefused("wrong_cn", f"CSR subject CN is {cns!r}, expected {expected_cn!r}")
    orgs = _attribute(csr.subject, NameOID.ORGANIZATION_NAME)
    if expected_org is not None and orgs != [expected_org]:
        raise CertificateRefused("wrong_org", f"CSR subject O is {orgs!r}, expected {expected_org!r}")
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return CsrInfo(data, cns[0], orgs[0] if orgs else "", spki)


def _validity(cert: x509.Certificate, now: _dt.datetime, what: str) -> None:
    when = _utc(now)
    if when < cert.not_valid_before_utc:
        raise CertificateRefused(
            "not_yet_valid", f"{what} is valid from {cert.not_valid_before_utc.isoformat()}, now is {when}"
        )
    if when > cert.not_valid_after_utc:
        raise CertificateRefused(
            "expired", f"{what} expired at {cert.not_valid_after_utc.isoformat()}, now is {when}"
        )


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False
    except ValueError:  # a malformed extension: not a usable CA
        return False


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    """True when ``parent`` names and signed ``child`` (issuer name and signature)."""
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _describe(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string()[:200]


def check_signed_chain(
    chain_pem: str | bytes,
    *,
    anchors: Sequence[x509.Certificate],
    now: _dt.datetime,
    expected_cn: str,
    expected_org: str | None,
    expected_public_key_der: bytes | None,
    max_bytes: int = CHAIN_MAX_BYTES,
    max_certificates: int = CHAIN_MAX_CERTIFICATES,
) -> tuple[x509.Certificate, ...]:
    """Check a ``CertificateSignedRequest.certificateChain`` (station side, A02.FR.06/07/16).

    The size and the number of PEM blocks are checked before anything is parsed, so a chain of a thousand
    certificates or a megabyte of PEM costs a length and a substring count.

    Args:
        chain_pem: leaf first, then the sub-CAs (the root may follow).
        anchors: the installed roots the chain must lead to (CSMSRootCertificate).
        now: the station's clock.
        expected_cn: the station's serial number (CN of the leaf).
        expected_org: ``SecurityCtrlr.OrganizationName`` (O of the leaf; None: not checked).
        expected_public_key_der: the DER SubjectPublicKeyInfo of the pending CSR's key (None: no request is
            pending, which refuses every chain with ``no_pending_request``).
        max_bytes: ``MaxCertificateChainSize``.
        max_certificates: the most PEM blocks looked at.

    Returns:
        The certificates as sent (leaf first), the root left out when it was sent.

    Raises:
        CertificateRefused: with the reason of the first failed check.
    """
    size = _size(chain_pem)
    if size > max_bytes:
        raise CertificateRefused(
            "too_large", f"certificate chain of {size} bytes exceeds MaxCertificateChainSize {max_bytes}"
        )
    text = chain_pem.decode("utf-8", "replace") if isinstance(chain_pem, bytes) else chain_pem
    blocks = text.count(_PEM_BEGIN)
    if blocks == 0:
        raise CertificateRefused("malformed", "no PEM certificate in the chain")
    if blocks > max_certificates:
        raise CertificateRefused(
            "too_many_certs", f"chain of {blocks} certificates (at most {max_certificates})"
        )
    if expected_public_key_der is None:
        raise CertificateRefused("no_pending_request", "no certificate signing request is pending")
    try:
        certs = x509.load_pem_x509_certificates(text.encode("utf-8", "surrogatepass"))
    except ValueError as exc:
        raise CertificateRefused("malformed", f"certificate chain is not valid PEM ({exc})") from exc
    if len(certs) != blocks:
        raise CertificateRefused("malformed", "certificate chain holds unparsable PEM blocks")
    leaf = certs[0]
    if _is_ca(leaf):
        raise CertificateRefused("leaf_is_ca", f"leaf {_describe(leaf)} is a CA certificate")
    cns = _attribute(leaf.subject, NameOID.COMMON_NAME)
    if cns != [expected_cn]:
        raise CertificateRefused("wrong_cn", f"leaf CN is {cns!r}, expected {expected_cn!r}")
    orgs = _attribute(leaf.subject, NameOID.ORGANIZATION_NAME)
    if expected_org is not None and orgs != [expected_org]:
        raise CertificateRefused("wrong_org", f"leaf O is {orgs!r}, expected {expected_org!r}")
    try:
        leaf_key = leaf.public_key()
        check_key_strength(leaf_key, what="leaf key")
    except (PkiError, ValueError, UnsupportedAlgorithm) as exc:
        raise CertificateRefused("weak_key", str(exc)) from exc
    if public_key_der(leaf) != expected_public_key_der:
        raise CertificateRefused("key_mismatch", "leaf key is not the key of the pending signing request")
    anchor_ders = {a.public_bytes(serialization.Encoding.DER) for a in anchors}
    # the sent root (identical to an installed one) is dropped; the rest must form the path upward
    path = [c for c in certs if c.public_bytes(serialization.Encoding.DER) not in anchor_ders]
    if not path or path[0] is not leaf:
        raise CertificateRefused("untrusted", "the leaf is an installed root")
    for position, cert in enumerate(path):
        what = "leaf" if position == 0 else f"sub-CA {_describe(cert)}"
        _validity(cert, now, what)
        if position > 0 and not _is_ca(cert):
            raise CertificateRefused("not_a_ca", f"{what} is not a CA certificate")
    for child, parent in itertools.pairwise(path):
        if not _issued_by(child, parent):
            raise CertificateRefused(
                "untrusted", f"{_describe(child)} is not signed by the next certificate {_describe(parent)}"
            )
    top = path[-1]
    trusted = [a for a in anchors if _issued_by(top, a)]
    if not trusted:
        raise CertificateRefused(
            "untrusted", f"{_describe(top)} is not issued by an installed root ({len(anchors)} installed)"
        )
    _validity(trusted[0], now, f"root {_describe(trusted[0])}")
    return tuple(path)


def load_certificate(pem: str | bytes, *, max_bytes: int) -> x509.Certificate:
    """Exactly one PEM certificate (an InstallCertificate ``certificate``), bounded like every peer input.

    Raises:
        CertificateRefused: ``too_large`` or ``malformed`` (not exactly one certificate).
    """
    size = _size(pem)
    if size > max_bytes:
        raise CertificateRefused("too_large", f"certificate of {size} bytes is larger than {max_bytes}")
    text = pem.decode("utf-8", "replace") if isinstance(pem, bytes) else pem
    if text.count(_PEM_BEGIN) != 1:
        raise CertificateRefused("malformed", "expected exactly one PEM certificate")
    try:
        return x509.load_pem_x509_certificate(text.encode("utf-8", "surrogatepass"))
    except ValueError as exc:
        raise CertificateRefused("malformed", f"not a valid PEM certificate ({exc})") from exc


def check_root(
    cert: x509.Certificate, *, now: _dt.datetime, current_root: x509.Certificate | None = None
) -> None:
    """Check a root certificate offered by InstallCertificate (M05.FR.02/03, with M05.FR.09-16).

    Args:
        cert: the certificate.
        now: the station's clock.
        current_root: with ``AdditionalRootCertificateCheck``, the installed root the new one must be
            signed by (None: no such rule).

    Raises:
        CertificateRefused: ``not_a_ca``, ``expired`` / ``not_yet_valid``, ``weak_key`` or
            ``not_signed_by_root``.
    """
    if not _is_ca(cert):
        raise CertificateRefused("not_a_ca", f"{_describe(cert)} is not a CA certificate")
    _validity(cert, now, f"root {_describe(cert)}")
    try:
        check_key_strength(cert.public_key(), what="root key")
    except (PkiError, ValueError, UnsupportedAlgorithm) as exc:
        raise CertificateRefused("weak_key", str(exc)) from exc
    if current_root is not None and not _issued_by(cert, current_root):
        raise CertificateRefused(
            "not_signed_by_root",
            f"{_describe(cert)} is not signed by the installed root {_describe(current_root)} "
            "(AdditionalRootCertificateCheck)",
        )


HashAlgorithm = Literal["SHA256", "SHA384", "SHA512"]


def certificate_hash_data(
    cert: x509.Certificate, issuer: x509.Certificate | None = None, *, algorithm: HashAlgorithm = "SHA256"
) -> dict[str, str]:
    """OCPP ``CertificateHashDataType`` of ``cert`` (an RFC 6960 CertID in hex).

    Args:
        cert: the certificate.
        issuer: its issuer's certificate (None: ``cert`` itself, as for a root).
        algorithm: ``hashAlgorithm``.

    Returns:
        ``{"hashAlgorithm", "issuerNameHash", "issuerKeyHash", "serialNumber"}`` (lowercase hex).
    """
    digest = OCPP_HASH_ALGORITHMS[algorithm]()
    return {
        "hashAlgorithm": algorithm,
        "issuerNameHash": issuer_name_hash(cert, digest).hex(),
        "issuerKeyHash": issuer_key_hash(issuer if issuer is not None else cert, digest).hex(),
        "serialNumber": format(cert.serial_number, "x"),
    }


def hash_data_matches(
    given: Mapping[str, object], cert: x509.Certificate, issuer: x509.Certificate | None = None
) -> bool:
    """True when a peer's ``CertificateHashDataType`` names ``cert`` (hex case-insensitive, serial without
    leading zeros). An unknown ``hashAlgorithm`` matches nothing."""
    algorithm = given.get("hashAlgorithm")
    if algorithm not in OCPP_HASH_ALGORITHMS:
        return False
    mine = certificate_hash_data(cert, issuer, algorithm=algorithm)  # type: ignore[arg-type]
    for field in ("issuerNameHash", "issuerKeyHash"):
        value = given.get(field)
        if not isinstance(value, str) or value.lower() != mine[field]:
            return False
    serial = given.get("serialNumber")
    return isinstance(serial, str) and serial.lower().lstrip("0") == mine["serialNumber"].lstrip("0")
