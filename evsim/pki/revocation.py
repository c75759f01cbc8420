"""Certificate revocation records and CRLs (RFC 5280 §5); the OCSP side is :mod:`evsim.pki.ocsp`.

Everything here is pure: no I/O, no clock. Every function that depends on time takes ``now``, the
simulation's wall time (naive values are taken as UTC, as in :mod:`evsim.pki.ca`).

Theory of operation. :class:`RevocationList` holds the revocation records of one CA and signs its CRLs.
A revocation has a time: :meth:`RevocationList.revoke` with ``at`` in the future *schedules* it, and a CRL
(or an OCSP answer from a responder sharing the list) built before that time still says "good", so a
scenario can script "revoke at T" once, up front. A certificate on hold can be released or revoked for
good (RFC 5280 §5.3.1); any other revocation is final. Each CRL gets the next CRL number (RFC 5280 §5.2.3) and lists the records in
force at its ``now``; times are whole seconds, as the ASN.1 time types carry no fractions.
:func:`load_crl` reads a CRL file (PEM or DER) for trust stores built from files.
"""

from __future__ import annotations

import datetime as _dt

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from evsim.errors import PkiError
from evsim.pki.ca import CertificateAuthority

__all__ = [
    "RevocationList",
    "RevokedEntry",
    "load_crl",
]

_UTC = _dt.UTC
_MAX_SERIAL_BITS = 159  # RFC 5280 §4.1.2.2: at most 20 octets, positive -> < 2**159 in DER two's complement
_MAX_CRL_NUMBER = 2**159 - 1  # RFC 5280 §5.2.3: CRL numbers are at most 20 octets


def utc_seconds(now: _dt.datetime) -> _dt.datetime:
    """Aware UTC, whole seconds (ASN.1 UTCTime/GeneralizedTime as profiled by RFC 5280 §4.1.2.5 carries
    no fractions)."""
    aware = now.replace(tzinfo=_UTC) if now.tzinfo is None else now.astimezone(_UTC)
    return aware.replace(microsecond=0)


def as_utc(t: _dt.datetime) -> _dt.datetime:
    """Aware UTC (naive values are taken as UTC), fractions kept."""
    return t.replace(tzinfo=_UTC) if t.tzinfo is None else t.astimezone(_UTC)


# ---------------------------------------------------------------- CRLs


@attrs.frozen
class RevokedEntry:
    """One revocation record.

    Attributes:
        serial: the revoked certificate's serial number.
        revoked_at: when it is (or will be) revoked; the record is in force from then on.
        reason: RFC 5280 §5.3.1 reason code; None = no reasonCode extension (what RFC 5280 asks instead of
            ``unspecified``).
    """

    serial: int
    revoked_at: _dt.datetime
    reason: x509.ReasonFlags | None = None

    def in_force(self, now: _dt.datetime) -> bool:
        """True when the revocation applies at ``now``."""
        return self.revoked_at <= utc_seconds(now)


class RevocationList:
    """The revocation records of one CA, and the CRLs it signs (RFC 5280 §5).

    Args:
        ca: the issuing CA; its key signs the CRLs (CA certificates from :mod:`evsim.pki.ca` carry the
            ``cRLSign`` key usage RFC 5280 §4.2.1.3 asks for).
    """

    def __init__(self, ca: CertificateAuthority) -> None:
        self._ca = ca
        self._entries: dict[int, RevokedEntry] = {}
        self._crl_number = 0

    @property
    def ca(self) -> CertificateAuthority:
        """The issuing CA."""
        return self._ca

    @property
    def crl_number(self) -> int:
        """The number of the last CRL built (0 before the first)."""
        return self._crl_number

    @property
    def entries(self) -> tuple[RevokedEntry, ...]:
        """Every record, in force or scheduled, by serial number."""
        return tuple(self._entries[s] for s in sorted(self._entries))

    def revoke(
        self,
        serial: int | x509.Certificate,
        *,
        at: _dt.datetime,
        reason: x509.ReasonFlags | None = None,
    ) -> RevokedEntry:
        """Record the revocation of a certificate this CA issued.

        A certificate on hold (``certificate_hold``) may later be revoked for good (RFC 5280 §5.3.1):
        that replaces the record. Revoking again with the same time and reason returns the existing
        record.

        Args:
            serial: the serial number, or the certificate (then its issuer must be this CA).
            at: when the revocation takes effect (simulation time; may lie in the future).
            reason: RFC 5280 §5.3.1 reason; ``unspecified`` is stored as None (the extension is then left
                out, as §5.3.1 recommends).

        Returns:
            The record in force.

        Raises:
            PkiError: a certificate of another CA, a serial out of range (RFC 5280 §4.1.2.2),
                ``remove_from_crl`` (only meaningful in delta CRLs, which evsim does not build), or a
                conflicting second revocation.
        """
        if isinstance(serial, x509.Certificate):
            if serial.issuer != self._ca.cert.subject:
                raise PkiError(
                    f"certificate {serial.subject.rfc4514_string()} was issued by "
                    f"{serial.issuer.rfc4514_string()}, not by this CA ({self._ca.cert.subject.rfc4514_string()})"
                )
            number = serial.serial_number
        else:
            number = serial
        if number <= 0 or number.bit_length() > _MAX_SERIAL_BITS:
            raise PkiError(
                f"serial number {number} is out of range (RFC 5280 §4.1.2.2: positive, <= 20 octets)"
            )
        if reason is x509.ReasonFlags.remove_from_crl:
            raise PkiError(
                "removeFromCRL is only used in delta CRLs (RFC 5280 §5.3.1); evsim builds full CRLs"
            )
        if reason is x509.ReasonFlags.unspecified:
            reason = None
        entry = RevokedEntry(number, utc_seconds(at), reason)
        old = self._entries.get(number)
        if old is not None and old.reason is not x509.ReasonFlags.certificate_hold:
            if old == entry:
                return old
            raise PkiError(
                f"serial {number:x} is already revoked (at {old.revoked_at.isoformat()}, reason "
                f"{old.reason.value if old.reason else 'none'}); only a certificate on hold can be revoked again"
            )
        self._entries[number] = entry
        return entry

    def release_hold(self, serial: int) -> None:
        """Take a certificate off hold (RFC 5280 §5.3.1 ``certificateHold`` is the only reversible reason).

        Args:
            serial: the serial number.

        Raises:
            PkiError: the serial is not on hold.
        """
        entry = self._entries.get(serial)
        if entry is None or entry.reason is not x509.ReasonFlags.certificate_hold:
            raise PkiError(f"serial {serial:x} is not on hold")
        del self._entries[serial]

    def lookup(self, serial: int, *, now: _dt.datetime) -> RevokedEntry | None:
        """The record in force for ``serial`` at ``now``, or None (not revoked, or revoked later)."""
        entry = self._entries.get(serial)
        return entry if entry is not None and entry.in_force(now) else None

    def build_crl(self, *, now: _dt.datetime, next_update_s: float) -> x509.CertificateRevocationList:
        """Sign a full CRL (v2) listing the revocations in force at ``now``.

        Profile (RFC 5280 §5): issuer = the CA's subject; thisUpdate = ``now``; nextUpdate (§5.1.2.5:
        conforming CAs MUST include it) = ``now + next_update_s``; extensions AuthorityKeyIdentifier
        (§5.2.1, MUST) and CRLNumber (§5.2.3, MUST, non-critical, increasing by one per CRL built); each
        entry has its revocation date and, when known, a non-critical reasonCode (§5.3.1). Signed with
        SHA-256 (ECDSA, or PKCS#1 v1.5 for RSA CAs), like the certificates.

        Args:
            now: simulation time of issue (thisUpdate).
            next_update_s: seconds until nextUpdate; after it, a verifier refuses the CRL (X509 error
                12, ``CRL has expired``).

        Returns:
            The signed CRL.

        Raises:
            PkiError: ``next_update_s`` is not positive, or signing failed.
        """
        if not next_update_s > 0:
            raise PkiError(f"next_update_s must be positive (got {next_update_s})")
        if self._crl_number >= _MAX_CRL_NUMBER:  # pragma: no cover - 2**159 CRLs
            raise PkiError("CRL number space exhausted (RFC 5280 §5.2.3: at most 20 octets)")
        start = utc_seconds(now)
        ca = self._ca
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca.cert.subject)
            .last_update(start)
            .next_update(start + _dt.timedelta(seconds=next_update_s))
            .add_extension(authority_key_identifier(ca.cert), critical=False)
            .add_extension(x509.CRLNumber(self._crl_number + 1), critical=False)
        )
        for entry in self.entries:
            if not entry.in_force(start):
                continue
            revoked = (
                x509.RevokedCertificateBuilder().serial_number(entry.serial).revocation_date(entry.revoked_at)
            )
            if entry.reason is not None:
                revoked = revoked.add_extension(x509.CRLReason(entry.reason), critical=False)
            builder = builder.add_revoked_certificate(revoked.build())
        try:
            crl = builder.sign(ca.key, hashes.SHA256())
        except (ValueError, TypeError) as exc:  # pragma: no cover - inputs are validated above
            raise PkiError(f"cannot sign CRL of {ca.cert.subject.rfc4514_string()}: {exc}") from exc
        self._crl_number += 1
        return crl


def authority_key_identifier(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    """The AuthorityKeyIdentifier of what ``issuer`` signs (CRLs, OCSP responder certificates): its
    SubjectKeyIdentifier when it has one, else one computed from its public key."""
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key())  # type: ignore[arg-type]
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def load_crl(data: bytes, *, source: str = "<memory>") -> x509.CertificateRevocationList:
    """Parse a CRL in PEM or DER.

    Args:
        data: the CRL bytes.
        source: where they came from (file name), for the error message.

    Returns:
        The CRL.

    Raises:
        PkiError: neither a PEM nor a DER CRL.
    """
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError as exc:
        raise PkiError(f"{source}: not a valid PEM or DER CRL ({exc})") from exc
