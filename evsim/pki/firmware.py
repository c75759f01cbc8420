"""Signed firmware (OCPP L01): the firmware signing certificate, the signature over an image, and the test
image format (pure, no I/O).

OCPP 2.0.1 L01: the CSMS sends the *Firmware Signing certificate* (PEM) and a base64 signature with
UpdateFirmware; the station validates the certificate against its ``ManufacturerRootCertificate`` before
accepting (L01.FR.21/22; the manufacturer "SHALL NOT use intermediate certificates for firmware signing", so
the signer is issued directly by a manufacturer root), and checks the signature over the **entire** image with
SHA-256 (L01.FR.04). evsim signs with ECDSA-SHA256 for EC keys (what ``openssl dgst -sha256 -sign`` makes, and
what stations in the field verify) and RSASSA-PSS-SHA256 for RSA keys (the algorithm L01.FR.04 names).

Test images (:func:`build_test_image`) are a one-line header ``EVSIM-FW/1 <version> <payload bytes>`` and a
deterministic payload, so a station can read the version it installs (BootNotification ``firmwareVersion``)
and tell an image that does not install (:func:`image_version` -> :class:`FirmwareRefused`
``install_verification``) from one whose signature fails.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import hashlib
import re
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from evsim.errors import PkiError
from evsim.pki.ca import CertificateAuthority, CertKey
from evsim.pki.keys import KeyType, generate_key

__all__ = [
    "MAX_SIGNATURE_CHARS",
    "MAX_SIGNING_CERT_CHARS",
    "FirmwareRefused",
    "build_test_image",
    "check_signing_certificate",
    "image_version",
    "issue_firmware_signer",
    "sign_image",
    "verify_image",
]

MAX_SIGNING_CERT_CHARS = 5500
"""UpdateFirmwareRequest ``signingCertificate`` maxLength (OCPP 2.0.1 schema)."""
MAX_SIGNATURE_CHARS = 800
"""UpdateFirmwareRequest ``signature`` maxLength (OCPP 2.0.1 schema)."""
_HEADER = re.compile(rb"EVSIM-FW/1 ([0-9A-Za-z.+_-]{1,50}) (\d{1,12})\n")
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)


class FirmwareRefused(PkiError):
    """A firmware signing certificate, signature or image was refused.

    Args:
        reason: ``cert_unparsable``, ``cert_unknown_issuer``, ``cert_bad_signature``, ``cert_expired``,
            ``cert_not_yet_valid``, ``cert_is_ca``, ``signature_missing``, ``signature_unparsable``,
            ``signature_mismatch``, ``install_verification``.
        message: what happened.
    """

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


def issue_firmware_signer(
    manufacturer_root: CertificateAuthority,
    *,
    now: _dt.datetime,
    cn: str = "evsim Firmware Signing",
    days: int = 730,
    key_type: KeyType = "ec",
) -> CertKey:
    """A firmware signing certificate issued directly by the manufacturer root (EKU codeSigning).

    Args:
        manufacturer_root: the root CA (``DevPki.manufacturer_root``).
        now: simulation time of issuance.
        cn: the subject CN.
        days: validity.
        key_type: ``"ec"`` (P-256, ECDSA-SHA256) or ``"rsa"`` (2048, RSA-PSS-SHA256).

    Returns:
        The certificate and its key (no intermediates).
    """
    return manufacturer_root.issue_client(
        cn,
        now=now,
        days=days,
        key=generate_key(key_type),
        extended_key_usage=(ExtendedKeyUsageOID.CODE_SIGNING,),
    )


def sign_image(image: bytes, signer: CertKey) -> str:
    """The base64 signature over the whole ``image`` (ECDSA-SHA256 or RSA-PSS-SHA256, by the signer's key)."""
    key = signer.key
    if isinstance(key, ec.EllipticCurvePrivateKey):
        raw = key.sign(image, ec.ECDSA(hashes.SHA256()))
    elif isinstance(key, rsa.RSAPrivateKey):
        raw = key.sign(image, _PSS, hashes.SHA256())
    else:
        raise PkiError(f"cannot sign firmware with a {type(key).__name__}")
    return base64.b64encode(raw).decode("ascii")


def check_signing_certificate(
    pem: str, roots: Sequence[x509.Certificate], *, now: _dt.datetime
) -> x509.Certificate:
    """Validate a firmware signing certificate against the manufacturer roots (L01.FR.21).

    Args:
        pem: the UpdateFirmware ``signingCertificate`` (one PEM certificate; at most
            :data:`MAX_SIGNING_CERT_CHARS` characters).
        roots: the station's ManufacturerRootCertificates.
        now: the simulation's time (validity).

    Returns:
        The signing certificate.

    Raises:
        FirmwareRefused: unparsable or too long, no root issued it (or no roots installed), its signature does
            not verify, expired, not yet valid, or a CA certificate.
    """
    if len(pem) > MAX_SIGNING_CERT_CHARS:
        raise FirmwareRefused("cert_unparsable", f"signing certificate of {len(pem)} characters")
    try:
        certs = x509.load_pem_x509_certificates(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise FirmwareRefused("cert_unparsable", f"signing certificate does not parse: {exc}") from None
    cert = certs[0]
    issuers = [root for root in roots if root.subject == cert.issuer]
    if not issuers:
        raise FirmwareRefused(
            "cert_unknown_issuer",
            f"no ManufacturerRootCertificate issued {cert.subject.rfc4514_string()[:200]}",
        )
    for root in issuers:
        try:
            cert.verify_directly_issued_by(root)
            break
        except (ValueError, TypeError, InvalidSignature):
            continue
    else:
        raise FirmwareRefused("cert_bad_signature", "the signing certificate's signature does not verify")
    if now < cert.not_valid_before_utc:
        raise FirmwareRefused(
            "cert_not_yet_valid", f"signing certificate valid from {cert.not_valid_before_utc}"
        )
    if now > cert.not_valid_after_utc:
        raise FirmwareRefused("cert_expired", f"signing certificate expired {cert.not_valid_after_utc}")
    try:
        if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            raise FirmwareRefused("cert_is_ca", "a CA certificate cannot sign firmware")
    except x509.ExtensionNotFound:
        pass
    return cert


def verify_image(image: bytes, signature: str | None, cert: x509.Certificate) -> None:
    """Check the signature over the whole image (L01.FR.04).

    Raises:
        FirmwareRefused: no signature, one that is not base64 (or too long), or one that does not verify.
    """
    if not signature:
        raise FirmwareRefused("signature_missing", "UpdateFirmware carried no signature")
    if len(signature) > MAX_SIGNATURE_CHARS:
        raise FirmwareRefused("signature_unparsable", f"signature of {len(signature)} characters")
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        raise FirmwareRefused("signature_unparsable", "the signature is not base64") from None
    key = cert.public_key()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(raw, image, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(raw, image, _PSS, hashes.SHA256())
        else:
            raise FirmwareRefused("signature_mismatch", f"unsupported signing key {type(key).__name__}")
    except InvalidSignature:
        raise FirmwareRefused("signature_mismatch", "the signature over the image does not verify") from None


def build_test_image(version: str, size: int = 64 * 1024) -> bytes:
    """A deterministic test image of ``version`` with a ``size``-byte payload (see the module docstring).

    Raises:
        PkiError: a version that is not 1..50 of ``0-9 A-Z a-z . + _ -``, or a negative size.
    """
    header = f"EVSIM-FW/1 {version} {size}\n".encode("ascii", "replace")
    if size < 0 or _HEADER.fullmatch(header) is None:
        raise PkiError(f"bad test firmware version {version!r} or size {size}")
    seed = hashlib.sha256(f"evsim-fw:{version}".encode()).digest()
    blocks = (size + len(seed) - 1) // len(seed)
    payload = b"".join(hashlib.sha256(seed + i.to_bytes(8, "big")).digest() for i in range(blocks))
    return header + payload[:size]


def image_version(image: bytes) -> str:
    """The version of a test image, after its signature was verified (the install step's own check).

    Raises:
        FirmwareRefused: ``install_verification``: no valid header, or a payload of another length.
    """
    end = image.find(b"\n", 0, 80)
    match = _HEADER.fullmatch(image[: end + 1]) if end >= 0 else None
    if match is None or int(match.group(2)) != len(image) - end - 1:
        raise FirmwareRefused("install_verification", "the image is not an installable evsim firmware image")
    return match.group(1).decode("ascii")
