"""OCSP"""

from __future__ import annotations

import datetime as _dt
import hashlib
from collections.abc import Callable, Mapping
from typing import Final, Literal, TypeAlias

import attrs
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from evsim.errors import PkiError
from evsim.pki.ca import NOT_BEFORE_BACKDATE, CertificateAuthority, CertKey, organization, random_serial
from evsim.pki.keys import KeyType, check_key_strength, generate_key
from evsim.pki.revocation import (
    RevocationList,
    RevokedEntry,
    as_utc,
    authority_key_identifier,
    utc_seconds,
)

__all__ = [
    "OCPP_HASH_ALGORITHMS",
    "OCSP_STATUS_EVENT",
    "OcspCheck",
    "OcspCheckStatus",
    "OcspResponder",
    "OcspStaple",
    "check_ocsp_response",
    "issue_ocsp_responder",
    "issuer_key_hash",
    "issuer_name_hash",
    "ocsp_request_data",
    "ocsp_request_from_data",
]

OcspCheckStatus: TypeAlias = Literal["good", "revoked", "unknown", "missing", "bad_signature", "stale"]
"""What an OCSP client concludes (``ocsp_status:<status>`` in the event vocabulary)."""

OCSP_STATUS_EVENT: Final = "ocsp_status"
"""The event name (``evsim.tls.events.OCSP_STATUS``; repeated here because ``evsim.pki`` does not import
``evsim.tls``)."""

OCPP_HASH_ALGORITHMS: Final[Mapping[str, type[hashes.HashAlgorithm]]] = {
    "SHA256": hashes.SHA256,
    "SHA384": hashes.SHA384,
    "SHA512": hashes.SHA512,
}
"""OCPP 2.0.1 ``HashAlgorithmEnumType`` -> the hash (OCSPRequestDataType.hashAlgorithm)."""

# The hashes an RFC 6960 CertID may use here: OCPP's three plus SHA-1 (RFC 5019 §2.1.1: the lightweight
# profile's requests use SHA-1, and OpenSSL's `ocsp` tool still defaults to it).
_CERT_ID_HASHES: Final[tuple[type[hashes.HashAlgorithm], ...]] = (
    hashes.SHA1,
    hashes.SHA256,
    hashes.SHA384,
    hashes.SHA512,
)


# ---------------------------------------------------------------- hashes of a CertID (RFC 6960 §4.1.1)


def _public_key_bits(cert: x509.Certificate) -> bytes:
    """The value of the certificate's ``subjectPublicKey`` BIT STRING (tag, length and unused-bits octet
    excluded), which RFC 6960 §4.1.1 (issuerKeyHash) and §4.2.1 (ResponderID byKey) hash."""
    pub = cert.public_key()
    if isinstance(pub, ec.EllipticCurvePublicKey):
        # RFC 5480 §2.2: the ECPoint, uncompressed as certificates carry it
        return pub.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    if isinstance(pub, rsa.RSAPublicKey):
        # RFC 3279 §2.3.1: the DER RSAPublicKey
        return pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    if isinstance(pub, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)  # RFC 8410 §4
    raise PkiError(f"unsupported public key type {type(pub).__name__} in {cert.subject.rfc4514_string()}")


def _digest(algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    h = hashes.Hash(algorithm)
    h.update(data)
    return h.finalize()


def issuer_name_hash(cert: x509.Certificate, algorithm: hashes.HashAlgorithm) -> bytes:
    """RFC 6960 §4.1.1 ``issuerNameHash``: the hash of the DER *issuer* field of ``cert``.

    Args:
        cert: the certificate whose status is asked.
        algorithm: the CertID hash.

    Returns:
        The digest.
    """
    return _digest(algorithm, cert.issuer.public_bytes())


def issuer_key_hash(issuer: x509.Certificate, algorithm: hashes.HashAlgorithm) -> bytes:
    """RFC 6960 §4.1.1 ``issuerKeyHash``: the hash of the issuer's ``subjectPublicKey`` BIT STRING value.

    Args:
        issuer: the issuing CA's certificate.
        algorithm: the CertID hash.

    Returns:
        The digest.

    Raises:
        PkiError: an unsupported key type.
    """
    return _digest(algorithm, _public_key_bits(issuer))


def _responder_key_hash(cert: x509.Certificate) -> bytes:
    """RFC 6960 §4.2.1 ResponderID ``byKey``: SHA-1 of the responder's public key BIT STRING value."""
    return hashlib.sha1(_public_key_bits(cert), usedforsecurity=False).digest()


# ---------------------------------------------------------------- OCSP responder


def issue_ocsp_responder(
    ca: CertificateAuthority,
    cn: str,
    *,
    now: _dt.datetime,
    days: int = 30,
    key_type: KeyType = "ec",
    no_check: bool = True,
) -> CertKey:
    """Issue a delegated OCSP responder certificate under ``ca`` (RFC 6960 §4.2.2.2).

    The certificate is issued directly by the CA whose certificates it answers for, carries the
    ``id-kp-OCSPSigning`` extended key usage (§4.2.2.2: "MUST"), KeyUsage digitalSignature, is not a CA,
    and (``no_check``) carries ``id-pkix-ocsp-nocheck`` (§4.2.2.2.1: clients need not check the
    responder's own revocation; such certificates should be short-lived, hence the 30-day default).

    Args:
        ca: the CA the responder speaks for.
        cn: subject common name.
        now: simulation time of issuance (validity starts one hour earlier, like every evsim certificate).
        days: validity after ``now``.
        key_type: ``"ec"`` (P-256) or ``"rsa"`` (2048).
        no_check: add the ocsp-nocheck extension.

    Returns:
        The responder certificate, its key, and the CA's chain as intermediates.

    Raises:
        PkiError: a bad name or validity, or signing failed.
    """
    if days <= 0:
        raise PkiError(f"validity must be at least one day (got days={days})")
    if not cn or len(cn) > 64:
        raise PkiError(f"common name {cn!r} must be 1..64 characters (RFC 5280 ub-common-name)")
    key = generate_key(key_type)
    public_key = key.public_key()
    check_key_strength(public_key, what=f"OCSP responder key for {cn!r}")
    name_attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    org = organization(ca.cert)
    if org:
        name_attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    start = utc_seconds(now)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(name_attrs))
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .serial_number(random_serial())
        .not_valid_before(start - NOT_BEFORE_BACKDATE)
        .not_valid_after(start + _dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(authority_key_identifier(ca.cert), critical=False)
    )
    if no_check:
        builder = builder.add_extension(x509.OCSPNoCheck(), critical=False)
    try:
        cert = builder.sign(ca.key, hashes.SHA256())
    except (ValueError, TypeError) as exc:  # pragma: no cover - inputs are validated above
        raise PkiError(f"cannot build OCSP responder certificate {cn!r}: {exc}") from exc
    return CertKey(cert, key, ca.intermediates)


def _is_ocsp_signer(cert: x509.Certificate) -> bool:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return ExtendedKeyUsageOID.OCSP_SIGNING in eku


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


class OcspResponder:
    """An OCSP responder for one CA (RFC 6960).

    Statuses (§2.2): ``good`` - the CertID names this CA and the serial is not revoked at ``now`` (the
    responder keeps no list of issued serials, so a never-issued serial is "good" too; §2.2 would allow
    "revoked" for it); ``revoked`` - with the revocation time and, when recorded, the reason;
    ``unknown`` - the CertID names another issuer (or, for :meth:`respond_for`, the certificate was not
    signed by this CA).
    Responses are "basic" (§4.2.1), signed with SHA-256 by the CA itself or by a delegated responder
    (§4.2.2.2; its certificate goes in the response's ``certs``), the ResponderID is ``byKey`` (SHA-1 of
    the signer's key), thisUpdate = producedAt = ``now``, nextUpdate = ``now + validity_s``, and a nonce
    in the request (RFC 8954) is echoed.

    Args:
        ca: the CA whose certificates this responder answers for.
        responder: a delegated responder certificate (see :func:`issue_ocsp_responder`); None = the CA
            signs.
        revocations: the CA's revocation records (shared with whoever builds its CRLs); None = a new,
            empty :class:`RevocationList`, reachable as :attr:`revocations`.
        validity_s: seconds from thisUpdate to nextUpdate; None leaves nextUpdate out (§4.2.2.1: "newer
            revocation information is available all the time").

    Raises:
        PkiError: ``revocations`` belongs to another CA, or ``responder`` was not issued directly by
            ``ca`` or lacks the OCSPSigning extended key usage (§4.2.2.2).
    """

    def __init__(
        self,
        ca: CertificateAuthority,
        *,
        responder: CertKey | None = None,
        revocations: RevocationList | None = None,
        validity_s: float | None = 7 * 86400.0,
    ) -> None:
        if revocations is not None and revocations.ca.cert != ca.cert:
            raise PkiError("the revocation list belongs to another CA")
        if responder is not None:
            if not _issued_by(responder.cert, ca.cert):
                raise PkiError(
                    f"OCSP responder {responder.cert.subject.rfc4514_string()} must be issued directly by "
                    f"{ca.cert.subject.rfc4514_string()} (RFC 6960 §4.2.2.2)"
                )
            if not _is_ocsp_signer(responder.cert):
                raise PkiError(
                    f"OCSP responder {responder.cert.subject.rfc4514_string()} lacks the id-kp-OCSPSigning "
                    "extended key usage (RFC 6960 §4.2.2.2); issue it with issue_ocsp_responder()"
                )
        if validity_s is not None and not validity_s > 0:
            raise PkiError(f"validity_s must be positive or None (got {validity_s})")
        self._ca = ca
        self._responder = responder
        self.revocations = revocations if revocations is not None else RevocationList(ca)
        self._validity = validity_s
        self._hashes: dict[str, tuple[bytes, bytes]] = {}

    @property
    def ca(self) -> CertificateAuthority:
        """The CA this responder answers for."""
        return self._ca

    @property
    def signer(self) -> x509.Certificate:
        """The certificate whose key signs the responses (the delegated responder, or the CA)."""
        return self._responder.cert if self._responder is not None else self._ca.cert

    def _our_hashes(self, algorithm: hashes.HashAlgorithm) -> tuple[bytes, bytes]:
        cached = self._hashes.get(algorithm.name)
        if cached is None:
            ca = self._ca.cert
            cached = (_digest(algorithm, ca.subject.public_bytes()), issuer_key_hash(ca, algorithm))
            self._hashes[algorithm.name] = cached
        return cached

    def status(
        self, serial: int, *, now: _dt.datetime
    ) -> tuple[Literal["good", "revoked"], RevokedEntry | None]:
        """The status this responder gives a serial of its CA at ``now``.

        Args:
            serial: the serial number.
            now: simulation time.

        Returns:
            ``("good", None)`` or ``("revoked", record)``.
        """
        entry = self.revocations.lookup(serial, now=now)
        return ("good", None) if entry is None else ("revoked", entry)

    def respond_for(self, cert: x509.Certificate, issuer: x509.Certificate, *, now: _dt.datetime) -> bytes:
        """A signed response about ``cert`` (e.g. for a TLS server to staple), CertID hashed with SHA-256.

        Args:
            cert: the certificate.
            issuer: its issuer's certificate (the CertID is computed from it; when it is not this CA, or
                ``cert`` was not issued by it, the status is ``unknown``).
            now: simulation time (thisUpdate).

        Returns:
            The DER ``OCSPResponse``.
        """
        algorithm = hashes.SHA256()
        name_hash = issuer_name_hash(cert, algorithm)
        key_hash = issuer_key_hash(issuer, algorithm)
        known = (name_hash, key_hash) == self._our_hashes(algorithm) and _issued_by(cert, issuer)
        return self._answer(
            name_hash, key_hash, cert.serial_number, algorithm, now=now, nonce=None, known=known
        )

    def respond(self, request_der: bytes, *, now: _dt.datetime) -> bytes:
        """Answer a DER ``OCSPRequest`` (RFC 6960 §4.1) with a DER ``OCSPResponse``.

        A request that cannot be parsed, asks about several certificates (cryptography parses single
        requests only), or uses a CertID hash other than SHA-1/SHA-256/384/512 gets the unsigned error
        response ``malformedRequest`` (§2.3, §4.2.1).

        Args:
            request_der: the request.
            now: simulation time (thisUpdate).

        Returns:
            The DER response.
        """
        try:
            request = ocsp.load_der_ocsp_request(request_der)
            algorithm = request.hash_algorithm
            name_hash, key_hash, serial = (
                request.issuer_name_hash,
                request.issuer_key_hash,
                request.serial_number,
            )
            nonce = _nonce(request.extensions)
        except (ValueError, TypeError, NotImplementedError, UnsupportedAlgorithm):
            return _error_response(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
        if not isinstance(algorithm, _CERT_ID_HASHES):
            return _error_response(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
        known = (name_hash, key_hash) == self._our_hashes(algorithm)
        return self._answer(name_hash, key_hash, serial, algorithm, now=now, nonce=nonce, known=known)

    def _answer(
        self,
        name_hash: bytes,
        key_hash: bytes,
        serial: int,
        algorithm: hashes.HashAlgorithm,
        *,
        now: _dt.datetime,
        nonce: bytes | None,
        known: bool,
    ) -> bytes:
        start = utc_seconds(now)
        next_update = start + _dt.timedelta(seconds=self._validity) if self._validity is not None else None
        revocation_time: _dt.datetime | None = None
        revocation_reason: x509.ReasonFlags | None = None
        if not known:
            status = ocsp.OCSPCertStatus.UNKNOWN
        else:
            word, entry = self.status(serial, now=start)
            if word == "good" or entry is None:
                status = ocsp.OCSPCertStatus.GOOD
            else:
                status = ocsp.OCSPCertStatus.REVOKED
                revocation_time, revocation_reason = entry.revoked_at, entry.reason
        builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
            issuer_name_hash=name_hash,
            issuer_key_hash=key_hash,
            serial_number=serial,
            algorithm=algorithm,
            cert_status=status,
            this_update=start,
            next_update=next_update,
            revocation_time=revocation_time,
            revocation_reason=revocation_reason,
        )
        if self._responder is not None:
            builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, self._responder.cert)
            builder = builder.certificates([self._responder.cert])  # RFC 6960 §4.2.2.2
            key = self._responder.key
        else:
            builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, self._ca.cert)
            key = self._ca.key
        if nonce is not None:
            builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
        return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def _nonce(extensions: x509.Extensions) -> bytes | None:
    try:
        return extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        return None


def _error_response(status: ocsp.OCSPResponseStatus) -> bytes:
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(serialization.Encoding.DER)


class OcspStaple:
    """A TLS server's current OCSP staple for one certificate, refreshed on the simulation clock.

    Signing a response per handshake costs a signature (≈0.4 ms for P-256); a server staples the same
    response until it is ``refresh_s`` old (RFC 6960 §4.2.2.1 lets a response be reused until nextUpdate),
    like a real server's cache. Use an instance as the provider of
    ``evsim.tls.revocation.server_ocsp_callback``.

    Args:
        responder: the CA's responder.
        cert: the server's certificate.
        issuer: its issuer.
        clock: returns the simulation's wall time (``SimClock.utcnow``).
        refresh_s: fetch a new response once the cached one is this old; keep it below the responder's
            ``validity_s`` so a staple never goes stale.

    Raises:
        PkiError: ``refresh_s`` is not positive.
    """

    def __init__(
        self,
        responder: OcspResponder,
        cert: x509.Certificate,
        issuer: x509.Certificate,
        *,
        clock: Callable[[], _dt.datetime],
        refresh_s: float = 3600.0,
    ) -> None:
        if not refresh_s > 0:
            raise PkiError(f"refresh_s must be positive (got {refresh_s})")
        self._responder = responder
        self._cert = cert
        self._issuer = issuer
        self._clock = clock
        self._refresh = _dt.timedelta(seconds=refresh_s)
        self._der = b""
        self._at: _dt.datetime | None = None
        self.fetches = 0
        """How many responses were fetched from the responder."""

    def __call__(self) -> bytes:
        """The DER response to staple now (fetched again when the cached one is too old or from the future).

        Returns:
            The DER ``OCSPResponse``.
        """
        now = as_utc(self._clock())
        if self._at is None or not self._at <= now < self._at + self._refresh:
            self._der = self._responder.respond_for(self._cert, self._issuer, now=now)
            self._at = now
            self.fetches += 1
        return self._der


# ---------------------------------------------------------------- OCPP OCSPRequestDataType (M06)


def _responder_url_from_aia(cert: x509.Certificate) -> str | None:
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return None
    for desc in aia:
        # RFC 5280 §4.2.2.1: id-ad-ocsp with a URI accessLocation
        if desc.access_method == AuthorityInformationAccessOID.OCSP and isinstance(
            desc.access_location, x509.UniformResourceIdentifier
        ):
            return desc.access_location.value
    return None


def ocsp_request_data(
    cert: x509.Certificate,
    issuer: x509.Certificate,
    *,
    responder_url: str | None = None,
    hash_algorithm: Literal["SHA256", "SHA384", "SHA512"] = "SHA256",
) -> dict[str, str]:
    """OCPP ``OCSPRequestDataType`` for ``cert`` (what a station sends in ``GetCertificateStatusRequest``).

    The fields are an RFC 6960 §4.1.1 CertID in hex: ``issuerNameHash`` (hash of the DER issuer name),
    ``issuerKeyHash`` (hash of the issuer's public key bits), ``serialNumber`` (hex without ``0x`` or
    leading zeros, as OCPP's CertificateHashDataType), plus the ``responderURL`` to ask. Hex is lowercase
    (the 2.0.1 errata make ``issuerKeyHash`` case-insensitive).

    Args:
        cert: the certificate whose status is wanted.
        issuer: its issuer's certificate.
        responder_url: the OCSP responder's URL; None = the certificate's AuthorityInformationAccess
            ``id-ad-ocsp`` URI (RFC 5280 §4.2.2.1).
        hash_algorithm: OCPP ``HashAlgorithmEnumType``.

    Returns:
        ``{"hashAlgorithm", "issuerNameHash", "issuerKeyHash", "serialNumber", "responderURL"}``.

    Raises:
        PkiError: no responder URL (none given, none in the certificate), or an unsupported key type.
    """
    url = responder_url if responder_url is not None else _responder_url_from_aia(cert)
    if not url:
        raise PkiError(
            f"no OCSP responder URL for {cert.subject.rfc4514_string()}: the certificate has no "
            "AuthorityInformationAccess OCSP entry; pass responder_url"
        )
    algorithm = OCPP_HASH_ALGORITHMS[hash_algorithm]()
    return {
        "hashAlgorithm": hash_algorithm,
        "issuerNameHash": issuer_name_hash(cert, algorithm).hex(),
        "issuerKeyHash": issuer_key_hash(issuer, algorithm).hex(),
        "serialNumber": format(cert.serial_number, "x"),
        "responderURL": url,
    }


def ocsp_request_from_data(data: Mapping[str, str], *, nonce: bytes | None = None) -> bytes:
    """Turn an OCPP ``OCSPRequestDataType`` into a DER RFC 6960 request (what the CSMS sends the responder).

    Args:
        data: the ``ocspRequestData`` object (JSON field names; hex case-insensitive).
        nonce: an RFC 8954 nonce to include.

    Returns:
        The DER ``OCSPRequest``.

    Raises:
        PkiError: a missing field, an unknown hash algorithm, or hex that does not parse.
    """
    try:
        algorithm = OCPP_HASH_ALGORITHMS[data["hashAlgorithm"]]()
        name_hash = bytes.fromhex(data["issuerNameHash"])
        key_hash = bytes.fromhex(data["issuerKeyHash"])
        serial = int(data["serialNumber"], 16)
    except KeyError as exc:
        raise PkiError(f"ocspRequestData: missing or unknown value {exc}") from exc
    except ValueError as exc:
        raise PkiError(f"ocspRequestData: bad hex ({exc})") from exc
    if len(name_hash) != algorithm.digest_size or len(key_hash) != algorithm.digest_size:
        raise PkiError(
            f"ocspRequestData: hashes must be {algorithm.digest_size} bytes for {data['hashAlgorithm']}"
        )
    builder = ocsp.OCSPRequestBuilder().add_certificate_by_hash(name_hash, key_hash, serial, algorithm)
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


# ---------------------------------------------------------------- checking a response (client side)


@attrs.frozen
class OcspCheck:
    """What an OCSP client concluded from a response about one certificate.

    Attributes:
        status: ``good``, ``revoked``, ``unknown`` (the responder does not know the certificate, or the
            response is about another one), ``missing`` (no response, or an unsigned error response such
            as ``tryLater``), ``bad_signature`` (unparsable, signed by a key that is neither the issuer
            nor a valid delegated responder, or a signature that does not verify) or ``stale``
            (thisUpdate in the future, nextUpdate passed, or older than the allowed age).
        detail: human-readable explanation.
        revocation_time: for ``revoked``.
        revocation_reason: for ``revoked``, when the responder gave one.
        this_update: the response's thisUpdate, when it got that far.
        next_update: the response's nextUpdate, when it has one.
    """

    status: OcspCheckStatus
    detail: str
    revocation_time: _dt.datetime | None = None
    revocation_reason: x509.ReasonFlags | None = None
    this_update: _dt.datetime | None = None
    next_update: _dt.datetime | None = None

    @property
    def reason(self) -> str:
        """The event-vocabulary reason: ``ocsp_status:<status>``."""
        return f"{OCSP_STATUS_EVENT}:{self.status}"

    @property
    def good(self) -> bool:
        """True for ``good``."""
        return self.status == "good"


def _verify_signature(signer: x509.Certificate, response: ocsp.OCSPResponse) -> str | None:
    """None when ``response`` is signed by ``signer``'s key, else why not."""
    pub = signer.public_key()
    data, sig = response.tbs_response_bytes, response.signature
    try:
        if isinstance(pub, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            pub.verify(sig, data)
            return None
        algorithm = response.signature_hash_algorithm
        if algorithm is None:
            return "the response's signature algorithm has no hash"
        if isinstance(pub, ec.EllipticCurvePublicKey):
            pub.verify(sig, data, ec.ECDSA(algorithm))
        elif isinstance(pub, rsa.RSAPublicKey):
            pub.verify(sig, data, padding.PKCS1v15(), algorithm)
        else:
            return f"unsupported signer key type {type(pub).__name__}"
    except InvalidSignature:
        return f"signature does not verify with the key of {signer.subject.rfc4514_string()}"
    except (UnsupportedAlgorithm, ValueError, TypeError) as exc:
        return f"cannot check the signature ({exc})"
    return None


def _responder_matches(response: ocsp.OCSPResponse, cert: x509.Certificate) -> bool:
    key_hash = response.responder_key_hash
    if key_hash is not None:
        try:
            return key_hash == _responder_key_hash(cert)
        except PkiError:
            return False
    return response.responder_name == cert.subject


def _find_signer(
    response: ocsp.OCSPResponse, issuer: x509.Certificate, now: _dt.datetime
) -> tuple[x509.Certificate | None, str]:
    """The certificate whose key must have signed the response (RFC 6960 §4.2.2.2), or None and why."""
    if _responder_matches(response, issuer):
        return issuer, "signed by the issuer"
    for candidate in response.certificates:
        if not _responder_matches(response, candidate):
            continue
        what = candidate.subject.rfc4514_string()
        if not _issued_by(candidate, issuer):
            return None, f"responder certificate {what} is not issued by {issuer.subject.rfc4514_string()}"
        if not _is_ocsp_signer(candidate):
            return None, f"responder certificate {what} lacks the OCSPSigning extended key usage"
        if not candidate.not_valid_before_utc <= now <= candidate.not_valid_after_utc:
            return None, f"responder certificate {what} is not valid at {now.isoformat()}"
        return candidate, f"signed by delegated responder {what}"
    return None, "the responder is neither the issuer nor a delegated responder certificate in the response"


def check_ocsp_response(
    response_der: bytes | None,
    cert: x509.Certificate,
    issuer: x509.Certificate,
    *,
    now: _dt.datetime,
    skew_s: float = 0.0,
    max_age_s: float | None = None,
) -> OcspCheck:
    """Check an OCSP response about ``cert`` the way RFC 6960 §3.2 asks a client to.

    In order: a response is there and ``successful`` (§2.3 error responses are unsigned: ``missing``);
    it parses and is signed by the issuer or by a delegated responder certificate included in it that the
    issuer signed directly and that has the OCSPSigning EKU and is valid at ``now`` (§3.2 items 2-4,
    §4.2.2.2; else ``bad_signature``); it has a SingleResponse whose CertID matches ``cert``'s serial and
    the issuer's name and key hashes (§3.2 item 1; else ``unknown``); thisUpdate is not after
    ``now + skew_s``, nextUpdate (if any) not before ``now - skew_s``, and thisUpdate not older than
    ``max_age_s`` (§3.2 items 5-6, §4.2.2.1; else ``stale``); then the certificate status.

    Args:
        response_der: the DER ``OCSPResponse`` (a stapled response, or a ``GetCertificateStatus``
            ``ocspResult`` after base64 decoding); None or ``b""`` = none.
        cert: the certificate in question.
        issuer: its issuer.
        now: simulation time.
        skew_s: clock skew tolerated on both time checks.
        max_age_s: the oldest thisUpdate accepted (None: only nextUpdate limits it).

    Returns:
        The conclusion; never raises for a bad response.
    """
    if not response_der:
        return OcspCheck("missing", "no OCSP response")
    at = as_utc(now)
    try:
        response = ocsp.load_der_ocsp_response(response_der)
    except ValueError as exc:
        return OcspCheck("bad_signature", f"not a DER OCSPResponse ({exc})")
    if response.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        return OcspCheck("missing", f"the responder answered {response.response_status.name} (no status)")
    try:
        signer, how = _find_signer(response, issuer, at)
        if signer is None:
            return OcspCheck("bad_signature", how)
        problem = _verify_signature(signer, response)
        if problem is not None:
            return OcspCheck("bad_signature", problem)
        single = None
        for candidate in response.responses:
            if candidate.serial_number != cert.serial_number:
                continue
            algorithm = candidate.hash_algorithm
            if (candidate.issuer_name_hash, candidate.issuer_key_hash) == (
                issuer_name_hash(cert, algorithm),
                issuer_key_hash(issuer, algorithm),
            ):
                single = candidate
                break
    except (ValueError, TypeError, UnsupportedAlgorithm, PkiError) as exc:
        return OcspCheck("bad_signature", f"cannot read the OCSP response ({exc})")
    if single is None:
        return OcspCheck(
            "unknown", f"the response has no status for serial {cert.serial_number:x} of this issuer"
        )
    this_update, next_update = single.this_update_utc, single.next_update_utc
    skew = _dt.timedelta(seconds=skew_s)
    stale: str | None = None
    if this_update > at + skew:
        stale = f"thisUpdate {this_update.isoformat()} is after {at.isoformat()}"
    elif next_update is not None and next_update < at - skew:
        stale = f"nextUpdate {next_update.isoformat()} is before {at.isoformat()}"
    elif max_age_s is not None and this_update < at - _dt.timedelta(seconds=max_age_s) - skew:
        stale = f"thisUpdate {this_update.isoformat()} is older than {max_age_s:g} s at {at.isoformat()}"
    if stale is not None:
        return OcspCheck("stale", stale, this_update=this_update, next_update=next_update)
    status = single.certificate_status
    if status is ocsp.OCSPCertStatus.GOOD:
        return OcspCheck("good", how, this_update=this_update, next_update=next_update)
    if status is ocsp.OCSPCertStatus.REVOKED:
        reason = single.revocation_reason
        revoked_at = single.revocation_time_utc
        return OcspCheck(
            "revoked",
            f"revoked at {revoked_at.isoformat() if revoked_at else '?'}"
            + (f" ({reason.value})" if reason is not None else "")
            + f", {how}",
            revocation_time=revoked_at,
            revocation_reason=reason,
            this_update=this_update,
            next_update=next_update,
        )
    return OcspCheck(
        "unknown",
        f"the responder does not know this certificate, {how}",
        this_update=this_update,
        next_update=next_update,
    )
