"""Keys and PEM helpers: generation, OCPP key-strength rules, loading and saving.

OCPP 2.0.1 A00.FR.501-514 (Certificate Properties) asks for at least 112 bits of security: RSA/DSA keys of
at least 2048 bits and EC keys of at least 224 bits. :func:`check_key_strength` enforces exactly that, and
every key evsim generates, loads for an identity, or finds in a CSR goes through it.

Files: private keys are written unencrypted (a development PKI) as PKCS#8 PEM with mode 0600, atomically
(write a temporary file in the same directory, then rename), so a crash never leaves half a key behind.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Literal, TypeAlias

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa

from evsim.errors import PkiError

KeyType: TypeAlias = Literal["ec", "rsa"]
"""Key algorithm: ``"ec"`` (ECDSA P-256, the default) or ``"rsa"`` (RSA-2048)."""

PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
"""Private keys evsim can use for certificates and TLS."""

MIN_RSA_BITS = 2048
"""OCPP A00.FR.501-514: RSA/DSA keys of at least 2048 bits (112-bit security)."""
MIN_EC_BITS = 224
"""OCPP A00.FR.501-514: EC keys of at least 224 bits (112-bit security)."""

MAX_RSA_BITS = 8192
"""The largest RSA key evsim generates (an 8192-bit key takes seconds; 4096 is the usual maximum)."""
EC_SIZES: dict[int, type[ec.EllipticCurve]] = {256: ec.SECP256R1, 384: ec.SECP384R1, 521: ec.SECP521R1}
"""EC key sizes evsim generates, and their curves."""

_KEY_TYPES: tuple[KeyType, ...] = ("ec", "rsa")


def generate_key(key_type: KeyType = "ec", *, rsa_bits: int = 2048, size: int | None = None) -> PrivateKey:
    """Generate a private key.

    Args:
        key_type: ``"ec"`` for ECDSA (P-256 unless ``size`` says otherwise; the default) or ``"rsa"``.
        rsa_bits: RSA modulus size; refused below 2048 bits (OCPP A00.FR.501-514).
        size: the key size in bits, overriding ``rsa_bits``: RSA :data:`MIN_RSA_BITS` ..
            :data:`MAX_RSA_BITS`, EC one of :data:`EC_SIZES` (256, 384, 521); None: the default of the type.

    Returns:
        The new private key.

    Raises:
        PkiError: unknown ``key_type``, an RSA size below 2048 or above 8192 bits, or an EC size without a
            curve.
    """
    if key_type == "ec":
        curve = EC_SIZES.get(256 if size is None else size)
        if curve is None:
            raise PkiError(
                f"no EC curve of {size} bits; use one of {', '.join(str(s) for s in EC_SIZES)} "
                "(P-256, P-384, P-521)"
            )
        return ec.generate_private_key(curve())
    if key_type == "rsa":
        bits = rsa_bits if size is None else size
        if bits < MIN_RSA_BITS:
            raise PkiError(
                f"RSA key of {bits} bits is too weak: OCPP (A00.FR.501-514) requires at least {MIN_RSA_BITS}"
            )
        if bits > MAX_RSA_BITS:
            raise PkiError(f"RSA key of {bits} bits is larger than evsim generates (at most {MAX_RSA_BITS})")
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    raise PkiError(f"unknown key type {key_type!r}; use one of {', '.join(_KEY_TYPES)}")


def check_key_strength(key: object, *, what: str = "key") -> None:
    """Refuse keys OCPP forbids (A00.FR.501-514): RSA/DSA < 2048 bits, EC < 224 bits, other algorithms.

    Args:
        key: a private or public key from ``cryptography``.
        what: what the key belongs to, for the error message ("CSR public key", "station key").

    Raises:
        PkiError: the key is too weak or of an algorithm OCPP certificates do not use.
    """
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey | dsa.DSAPrivateKey | dsa.DSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise PkiError(
                f"{what}: {key.key_size}-bit {type(key).__name__.removeprefix('_')} is too weak; "
                f"OCPP (A00.FR.501-514) requires at least {MIN_RSA_BITS} bits"
            )
        return
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if key.curve.key_size < MIN_EC_BITS:
            raise PkiError(
                f"{what}: EC curve {key.curve.name} ({key.curve.key_size} bits) is too weak; "
                f"OCPP (A00.FR.501-514) requires at least {MIN_EC_BITS} bits"
            )
        return
    raise PkiError(
        f"{what}: unsupported key algorithm {type(key).__name__}; use EC (P-256) or RSA (>= 2048 bits)"
    )


def public_key_der(key: PrivateKey | x509.Certificate) -> bytes:
    """DER SubjectPublicKeyInfo of a private key or a certificate (for comparing keys).

    Args:
        key: a private key or a certificate.

    Returns:
        The DER-encoded SubjectPublicKeyInfo.
    """
    pub = key.public_key()
    return pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_matches_cert(key: PrivateKey, cert: x509.Certificate) -> bool:
    """True when ``key`` is the private half of ``cert``'s public key."""
    return public_key_der(key) == public_key_der(cert)


def spki_sha256(cert: x509.Certificate) -> bytes:
    """SHA-256 of the certificate's DER SubjectPublicKeyInfo (the RFC 7469 pin value, raw bytes).

    Args:
        cert: the certificate.

    Returns:
        32 bytes.
    """
    return hashlib.sha256(public_key_der(cert)).digest()


def ski(cert: x509.Certificate) -> bytes:
    """Subject Key Identifier: the extension's value, or else RFC 5280 §4.2.1.2 method 1 (SHA-1 of the key).

    EEBus SHIP identifies paired peers by this value.

    Args:
        cert: the certificate.

    Returns:
        The key identifier bytes (20 bytes for certificates evsim issues).
    """
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest


def cert_fingerprint(cert: x509.Certificate) -> str:
    """Hex SHA-256 fingerprint of the DER certificate (for logs)."""
    return cert.fingerprint(hashes.SHA256()).hex()


# ---------------------------------------------------------------- PEM encode / decode


def key_to_pem(key: PrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted (development PKI)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def certs_to_pem(certs: Iterable[x509.Certificate]) -> bytes:
    """Concatenated PEM certificates, in the given order (leaf first for a chain)."""
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def load_key_pem(data: bytes, *, source: str = "<memory>") -> PrivateKey:
    """Load an unencrypted PEM private key (PKCS#8, SEC1 or PKCS#1).

    Args:
        data: PEM bytes.
        source: where the bytes came from (file name), for the error message.

    Returns:
        The private key.

    Raises:
        PkiError: not a PEM private key, encrypted, or neither EC nor RSA.
    """
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise PkiError(f"{source}: not a valid unencrypted PEM private key ({exc})") from exc
    except Exception as exc:  # cryptography raises UnsupportedAlgorithm for exotic keys
        raise PkiError(f"{source}: cannot load private key ({exc})") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise PkiError(f"{source}: unsupported key algorithm {type(key).__name__}; use EC or RSA")
    return key


def load_certs_pem(data: bytes, *, source: str = "<memory>") -> list[x509.Certificate]:
    """Load one or more PEM certificates, in file order.

    Args:
        data: PEM bytes.
        source: where the bytes came from (file name), for the error message.

    Returns:
        At least one certificate.

    Raises:
        PkiError: no certificate, or a malformed one.
    """
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise PkiError(f"{source}: not a valid PEM certificate file ({exc})") from exc
    if not certs:  # pragma: no cover - cryptography raises on empty input already
        raise PkiError(f"{source}: no certificate found")
    return certs


# ---------------------------------------------------------------- files


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_key_file(path: str | os.PathLike[str], key: PrivateKey) -> None:
    """Write ``key`` as PKCS#8 PEM with mode 0600 (atomically).

    Raises:
        PkiError: the file cannot be written.
    """
    try:
        _atomic_write(Path(path), key_to_pem(key), 0o600)
    except OSError as exc:
        raise PkiError(f"{path}: cannot write private key ({exc})") from exc


def write_cert_file(path: str | os.PathLike[str], *certs: x509.Certificate) -> None:
    """Write certificates as PEM (leaf first for a chain) with mode 0644 (atomically).

    Raises:
        PkiError: the file cannot be written.
    """
    try:
        _atomic_write(Path(path), certs_to_pem(certs), 0o644)
    except OSError as exc:
        raise PkiError(f"{path}: cannot write certificate ({exc})") from exc


def _read(path: Path, what: str, fix: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise PkiError(f"{path}: {what} is missing" + (f"; fix: {fix}" if fix else "")) from exc
    except OSError as exc:
        raise PkiError(f"{path}: cannot read {what} ({exc})" + (f"; fix: {fix}" if fix else "")) from exc


def load_key_file(path: str | os.PathLike[str], *, fix: str = "") -> PrivateKey:
    """Load a PEM private key file.

    Args:
        path: the file.
        fix: how to repair a missing or corrupt file, appended to the error message.

    Raises:
        PkiError: missing, unreadable or corrupt file (the message names the file).
    """
    p = Path(path)
    try:
        return load_key_pem(_read(p, "private key", fix), source=str(p))
    except PkiError as exc:
        if fix and "fix:" not in str(exc):
            raise PkiError(f"{exc}; fix: {fix}") from exc
        raise


def load_cert_file(path: str | os.PathLike[str], *, fix: str = "") -> list[x509.Certificate]:
    """Load a PEM certificate (or chain) file, leaf first.

    Args:
        path: the file.
        fix: how to repair a missing or corrupt file, appended to the error message.

    Raises:
        PkiError: missing, unreadable or corrupt file (the message names the file).
    """
    p = Path(path)
    try:
        return load_certs_pem(_read(p, "certificate", fix), source=str(p))
    except PkiError as exc:
        if fix and "fix:" not in str(exc):
            raise PkiError(f"{exc}; fix: {fix}") from exc
        raise
