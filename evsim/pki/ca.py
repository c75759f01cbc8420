"""Certificate authorities, certificate issuance and CSR signing (the only user of cryptography's builders).

Certificates follow OCPP 2.0.1 A00.FR.501-514 (Certificate Properties):

* every certificate has a (random, 159-bit) serial number and a subject with O = the owner organization;
* signatures use SHA-256 (ECDSA for EC issuers, PKCS#1 v1.5 for RSA issuers - RSA-PSS is only a SHOULD
  and several TLS stacks still refuse PSS-signed certificates);
* KeyUsage restricts each key (CA: keyCertSign/cRLSign/digitalSignature; leaf: digitalSignature, plus
  keyEncipherment for RSA so the OCPP ``TLS_RSA_WITH_*`` key-transport suites work);
* no ExtendedKeyUsage by default ("strongly NOT RECOMMENDED", ISO 15118 compatibility), but a caller can ask;
  the evsim PKIs (dev and scenario) ask for :data:`SERVER_EKU` on server and :data:`CLIENT_EKU` on station
  certificates, so that a server certificate is never accepted as a station's (the listeners refuse a client
  leaf whose EKU lacks clientAuth);
* CSMS certificate CN = FQDN; Charging Station certificate CN = station serial/identity, O = organization.

Time is never read here: every function takes ``now`` (the simulation's wall time, see ``evsim.clock``).
``not_before`` is set :data:`NOT_BEFORE_BACKDATE` (one hour) before ``now``, because a certificate issued
"now" must also validate on a peer whose clock is a little behind ours: station RTCs drift and boot before
their first NTP/Heartbeat sync, and the OCPP 2.0.1 errata (A02) ask the CSMS to "allow for small clock
skew when setting notBefore". One hour is what public CAs use (Let's Encrypt backdates by one hour).
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
from collections.abc import Sequence

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from evsim.errors import PkiError
from evsim.pki.keys import (
    KeyType,
    PrivateKey,
    certs_to_pem,
    check_key_strength,
    generate_key,
    key_matches_cert,
    key_to_pem,
)

NOT_BEFORE_BACKDATE = _dt.timedelta(hours=1)
"""How far before ``now`` a new certificate becomes valid (clock skew allowance, see the module doc)."""

_UTC = _dt.UTC
_MAX_CN = 64  # X.520 ub-common-name (RFC 5280 Appendix A)


SERVER_EKU: tuple[x509.ObjectIdentifier, ...] = (ExtendedKeyUsageOID.SERVER_AUTH,)
"""ExtendedKeyUsage of evsim's TLS server certificates."""
CLIENT_EKU: tuple[x509.ObjectIdentifier, ...] = (ExtendedKeyUsageOID.CLIENT_AUTH,)
"""ExtendedKeyUsage of evsim's station (TLS client) certificates."""


def _utc(now: _dt.datetime) -> _dt.datetime:
    """Simulation time as an aware UTC datetime (naive values are taken as UTC, like ``SimClock``)."""
    if now.tzinfo is None:
        return now.replace(tzinfo=_UTC)
    return now.astimezone(_UTC)


def _name(cn: str, org: str | None) -> x509.Name:
    if not cn or len(cn) > _MAX_CN:
        raise PkiError(f"common name {cn!r} must be 1..{_MAX_CN} characters (RFC 5280 ub-common-name)")
    attrs_ = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        if len(org) > _MAX_CN:
            raise PkiError(f"organization {org!r} must be at most {_MAX_CN} characters (RFC 5280)")
        attrs_.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs_)


def _hash_for(key: PrivateKey) -> hashes.SHA256:
    del key  # SHA-256 for both EC and RSA issuers (A00.FR.501-514 "SHA-256 SHOULD")
    return hashes.SHA256()


def common_name(cert: x509.Certificate) -> str | None:
    """The subject CN of ``cert`` (the first one), or None."""
    values = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not values:
        return None
    value = values[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def organization(cert: x509.Certificate) -> str | None:
    """The subject O of ``cert`` (the first one), or None."""
    values = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    if not values:
        return None
    value = values[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


@attrs.frozen
class CertKey:
    """A certificate, its private key and the intermediate CAs between it and the root.

    Attributes:
        cert: the leaf certificate.
        key: its private key.
        intermediates: issuing sub-CA certificates, nearest first, root excluded (what a TLS peer sends
            after the leaf).
    """

    cert: x509.Certificate
    key: PrivateKey = attrs.field(eq=False)
    intermediates: tuple[x509.Certificate, ...] = ()

    def __attrs_post_init__(self) -> None:
        if not key_matches_cert(self.key, self.cert):
            raise PkiError(f"private key does not match certificate {self.cert.subject.rfc4514_string()}")

    @property
    def chain(self) -> tuple[x509.Certificate, ...]:
        """Leaf followed by the intermediates (what a TLS endpoint presents)."""
        return (self.cert, *self.intermediates)

    def cert_pem(self) -> bytes:
        """The leaf certificate as PEM."""
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def chain_pem(self) -> bytes:
        """Leaf then intermediates as PEM (the OCPP CertificateSignedRequest ``certificateChain`` format)."""
        return certs_to_pem(self.chain)

    def key_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM."""
        return key_to_pem(self.key)


@attrs.frozen
class CertificateAuthority:
    """A CA: its certificate, its key, and the certificates above it.

    Attributes:
        cert: the CA certificate.
        key: the CA private key.
        parents: issuer certificates above this CA, nearest first, ending with the root; empty for a root.
    """

    cert: x509.Certificate
    key: PrivateKey = attrs.field(eq=False)
    parents: tuple[x509.Certificate, ...] = ()

    def __attrs_post_init__(self) -> None:
        if not key_matches_cert(self.key, self.cert):
            raise PkiError(f"CA key does not match certificate {self.cert.subject.rfc4514_string()}")

    # ------------------------------------------------------------ views

    @property
    def chain_to_root(self) -> tuple[x509.Certificate, ...]:
        """This CA's certificate followed by its parents up to and including the root."""
        return (self.cert, *self.parents)

    @property
    def root(self) -> x509.Certificate:
        """The self-signed root at the top of this CA's chain."""
        return self.parents[-1] if self.parents else self.cert

    @property
    def intermediates(self) -> tuple[x509.Certificate, ...]:
        """What a leaf issued by this CA sends after itself: this CA and its parents, root excluded."""
        return self.chain_to_root[:-1]

    def as_cert_key(self) -> CertKey:
        """This CA as a :class:`CertKey` (e.g. to write it to disk)."""
        return CertKey(self.cert, self.key, self.parents[:-1])

    # ------------------------------------------------------------ named constructors

    @classmethod
    def create_root(
        cls,
        cn: str,
        org: str = "evsim",
        *,
        now: _dt.datetime,
        days: int = 3650,
        key_type: KeyType = "ec",
        path_length: int | None = None,
        key_size: int | None = None,
    ) -> CertificateAuthority:
        """Create a self-signed root CA.

        Args:
            cn: subject common name.
            org: subject organization (O).
            now: simulation time of issuance.
            days: validity after ``now``.
            key_type: ``"ec"`` (P-256) or ``"rsa"`` (2048).
            path_length: BasicConstraints pathLenConstraint (None: unlimited).
            key_size: key size in bits (None: the type's default; see :func:`~evsim.pki.keys.generate_key`).

        Returns:
            The root CA.

        Raises:
            PkiError: bad name, or key generation refused.
        """
        key = generate_key(key_type, size=key_size)
        return cls(_self_signed(_name(cn, org), key, now=now, days=days, path_length=path_length), key)

    def create_sub_ca(
        self,
        cn: str,
        org: str | None = None,
        *,
        now: _dt.datetime,
        days: int = 3650,
        key_type: KeyType = "ec",
        path_length: int | None = 0,
        key_size: int | None = None,
    ) -> CertificateAuthority:
        """Issue a subordinate CA under this CA.

        Args:
            cn: subject common name.
            org: subject organization (defaults to this CA's O).
            now: simulation time of issuance.
            days: validity after ``now``.
            key_type: ``"ec"`` or ``"rsa"``.
            path_length: pathLenConstraint; 0 (default) = it may only issue leaves.
            key_size: key size in bits (None: the type's default).

        Returns:
            The sub-CA, whose ``parents`` are this CA's chain.

        Raises:
            PkiError: bad name, or key generation refused.
        """
        key = generate_key(key_type, size=key_size)
        cert = self._sign(
            _name(cn, org if org is not None else organization(self.cert)),
            key.public_key(),
            now=now,
            days=days,
            ca=True,
            path_length=path_length,
        )
        return CertificateAuthority(cert, key, self.chain_to_root)

    # ------------------------------------------------------------ leaves

    def issue_server(
        self,
        cn: str,
        *,
        sans: Sequence[str] = (),
        ips: Sequence[str] = (),
        cn_in_san: bool = True,
        org: str | None = None,
        now: _dt.datetime,
        days: int = 397,
        key_type: KeyType = "ec",
        key: PrivateKey | None = None,
        extended_key_usage: Sequence[x509.ObjectIdentifier] = (),
        key_size: int | None = None,
    ) -> CertKey:
        """Issue a TLS server (CSMS) certificate.

        OCPP wants CN = the server's FQDN (A00.FR.309/412); RFC 6125 clients look at subjectAltName
        only. So by default the SAN lists the CN too, and both kinds of hostname check pass. A wildcard
        CN (``"*.evsim.test"``) is allowed here on purpose: attack scenarios need one.

        Args:
            cn: the FQDN (or ``*.domain`` for a wildcard certificate).
            sans: extra dNSName entries.
            ips: iPAddress entries (``"127.0.0.1"``, ``"::1"``).
            cn_in_san: put ``cn`` first in the SAN (default). With False and no ``sans``/``ips`` the
                certificate has no SAN at all (pure OCPP style).
            org: subject O (defaults to the CA's O).
            now: simulation time of issuance.
            days: validity after ``now`` (default 397, the CA/Browser Forum maximum).
            key_type: key to generate when ``key`` is not given.
            key: use this key instead of generating one.
            extended_key_usage: EKU OIDs to include (none by default, per OCPP).
            key_size: size of a generated key in bits (None: the type's default).

        Returns:
            The certificate with its key and this CA's intermediates.

        Raises:
            PkiError: bad name or IP, weak key.
        """
        names = ([cn] if cn_in_san else []) + [s for s in sans if not (cn_in_san and s == cn)]
        try:
            addrs = [ipaddress.ip_address(ip) for ip in ips]
        except ValueError as exc:
            raise PkiError(f"bad IP address in ips={list(ips)!r}: {exc}") from exc
        general: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
        general += [x509.IPAddress(a) for a in addrs]
        return self._issue_leaf(
            cn,
            org,
            now=now,
            days=days,
            key_type=key_type,
            key=key,
            san=general,
            extended_key_usage=extended_key_usage,
            key_size=key_size,
        )

    def issue_client(
        self,
        cn: str,
        org: str | None = None,
        *,
        now: _dt.datetime,
        days: int = 730,
        key_type: KeyType = "ec",
        key: PrivateKey | None = None,
        extended_key_usage: Sequence[x509.ObjectIdentifier] = (),
        key_size: int | None = None,
    ) -> CertKey:
        """Issue a TLS client certificate (OCPP Charging Station certificate: CN = station id, O = CSO).

        Args:
            cn: the station's serial number / identity.
            org: the organization (``SecurityCtrlr.OrganizationName``); defaults to the CA's O.
            now: simulation time of issuance.
            days: validity after ``now``.
            key_type: key to generate when ``key`` is not given.
            key: use this key instead of generating one.
            extended_key_usage: EKU OIDs to include (none by default, per OCPP).
            key_size: size of a generated key in bits (None: the type's default).

        Returns:
            The certificate with its key and this CA's intermediates.

        Raises:
            PkiError: bad name, weak key.
        """
        return self._issue_leaf(
            cn,
            org,
            now=now,
            days=days,
            key_type=key_type,
            key=key,
            san=[],
            extended_key_usage=extended_key_usage,
            key_size=key_size,
        )

    def _issue_leaf(
        self,
        cn: str,
        org: str | None,
        *,
        now: _dt.datetime,
        days: int,
        key_type: KeyType,
        key: PrivateKey | None,
        san: list[x509.GeneralName],
        extended_key_usage: Sequence[x509.ObjectIdentifier],
        key_size: int | None = None,
    ) -> CertKey:
        if key is None:
            key = generate_key(key_type, size=key_size)
        else:
            check_key_strength(key, what=f"key for {cn!r}")
        cert = self._sign(
            _name(cn, org if org is not None else organization(self.cert)),
            key.public_key(),
            now=now,
            days=days,
            ca=False,
            san=san,
            extended_key_usage=extended_key_usage,
        )
        return CertKey(cert, key, self.intermediates)

    def sign_csr(
        self,
        csr_pem: bytes,
        *,
        now: _dt.datetime,
        days: int = 730,
        expected_org: str | None = None,
        extended_key_usage: Sequence[x509.ObjectIdentifier] = (),
    ) -> x509.Certificate:
        """Sign a PKCS#10 CSR as a client (Charging Station) certificate (OCPP A02/A03).

        The subject is copied from the CSR. The CSR's self-signature is verified, and its key must meet
        OCPP's strength rules.

        Args:
            csr_pem: the PEM CSR (``SignCertificateRequest.csr``).
            now: simulation time of issuance.
            days: validity after ``now``.
            expected_org: when given, the CSR's O must equal it (OCPP A00.FR.404: O = CSO name).
            extended_key_usage: EKU OIDs to include (e.g. :data:`CLIENT_EKU`; none by default, per OCPP).

        Returns:
            The signed certificate (send it with :attr:`intermediates` as the chain).

        Raises:
            PkiError: unparsable CSR, bad signature, missing CN, wrong O, weak or unsupported key.
        """
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise PkiError(f"CSR is not a valid PEM PKCS#10 request ({exc})") from exc
        if not csr.is_signature_valid:
            raise PkiError("CSR signature does not verify (the request was altered or not signed by its key)")
        public_key = csr.public_key()
        check_key_strength(public_key, what="CSR public key")
        if not isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):  # pragma: no cover
            raise PkiError("CSR key must be EC or RSA")
        cn = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if not cn:
            raise PkiError("CSR subject has no CN (OCPP: CN = Charging Station serial number)")
        if expected_org is not None:
            orgs = [a.value for a in csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
            if orgs != [expected_org]:
                raise PkiError(f"CSR subject O is {orgs!r}, expected {expected_org!r} (OCPP A00.FR.404)")
        return self._sign(
            csr.subject, public_key, now=now, days=days, ca=False, extended_key_usage=extended_key_usage
        )

    def _sign(
        self,
        subject: x509.Name,
        public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
        *,
        now: _dt.datetime,
        days: int,
        ca: bool,
        path_length: int | None = None,
        san: Sequence[x509.GeneralName] = (),
        extended_key_usage: Sequence[x509.ObjectIdentifier] = (),
    ) -> x509.Certificate:
        """A certificate for ``subject``/``public_key`` issued and signed by this CA."""
        return _build(
            subject=subject,
            issuer=self.cert.subject,
            public_key=public_key,
            signing_key=self.key,
            issuer_cert=self.cert,
            now=now,
            days=days,
            ca=ca,
            path_length=path_length,
            san=san,
            extended_key_usage=extended_key_usage,
        )


def issue_self_signed(
    cn: str,
    org: str = "evsim",
    *,
    now: _dt.datetime,
    days: int = 3650,
    key_type: KeyType = "ec",
    key: PrivateKey | None = None,
) -> CertKey:
    """Issue a self-signed device certificate, EEBus SHIP style (``protocol-digest.md`` §8).

    As ship-go's ``cert.go`` makes them: self-signed, ``CA:true``, SubjectKeyIdentifier = SHA-1 of the
    public key (SHIP 12.2, RFC 5280 §4.2.1.2 method 1: the device identity), ten years by default
    ("~10-year validity"). Also a pinned self-signed server certificate. Pass ``key`` to renew a
    certificate with the same key (a new certificate, the same SKI and SPKI hash).

    Args:
        cn: subject common name (SHIP: ``deviceModel-deviceSerialNumber``).
        org: subject organization.
        now: simulation time of issuance (valid from ``now`` minus the usual backdating).
        days: validity after ``now``.
        key_type: key to generate when ``key`` is not given (SHIP: ``"ec"``, P-256).
        key: use this key instead of generating one.

    Returns:
        The certificate and its key (no intermediates).

    Raises:
        PkiError: bad name, weak key, or ``days`` < 1.
    """
    key = key if key is not None else generate_key(key_type)
    return CertKey(_self_signed(_name(cn, org), key, now=now, days=days), key)


def _self_signed(
    name: x509.Name, key: PrivateKey, *, now: _dt.datetime, days: int, path_length: int | None = None
) -> x509.Certificate:
    """A self-signed CA certificate for ``name`` and ``key`` (roots and SHIP device certificates)."""
    return _build(
        subject=name,
        issuer=name,
        public_key=key.public_key(),
        signing_key=key,
        issuer_cert=None,
        now=now,
        days=days,
        ca=True,
        path_length=path_length,
    )


def make_csr(key: PrivateKey, cn: str, org: str) -> bytes:
    """Build a PEM PKCS#10 CSR (what a station sends in SignCertificateRequest, OCPP A02).

    Args:
        key: the station's new private key (never leaves the station).
        cn: the station serial number.
        org: ``SecurityCtrlr.OrganizationName``.

    Returns:
        The PEM-encoded CSR.

    Raises:
        PkiError: bad name or weak key.
    """
    check_key_strength(key, what="CSR key")
    csr = x509.CertificateSigningRequestBuilder().subject_name(_name(cn, org)).sign(key, _hash_for(key))
    return csr.public_bytes(serialization.Encoding.PEM)


def random_serial() -> int:
    """A random certificate serial of 158 random bits with the 159th set: always 20 octets in DER (RFC 5280
    §4.1.2.2's maximum), so a certificate's size does not vary from run to run (over a link with a bandwidth,
    every byte takes time)."""
    return x509.random_serial_number() | (1 << 158)


def _build(
    *,
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
    signing_key: PrivateKey,
    issuer_cert: x509.Certificate | None,
    now: _dt.datetime,
    days: int,
    ca: bool,
    path_length: int | None = None,
    san: Sequence[x509.GeneralName] = (),
    extended_key_usage: Sequence[x509.ObjectIdentifier] = (),
) -> x509.Certificate:
    if days <= 0:
        raise PkiError(f"validity must be at least one day (got days={days})")
    check_key_strength(public_key, what=f"key of {subject.rfc4514_string()}")
    start = _utc(now)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(random_serial())
        .not_valid_before(start - NOT_BEFORE_BACKDATE)
        .not_valid_after(start + _dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=(not ca) and isinstance(public_key, rsa.RSAPublicKey),
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if issuer_cert is not None:
        issuer_ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski), critical=False
        )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(san)), critical=False)
    if extended_key_usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(extended_key_usage)), critical=False)
    try:
        return builder.sign(signing_key, _hash_for(signing_key))
    except (ValueError, TypeError) as exc:
        raise PkiError(f"cannot build certificate for {subject.rfc4514_string()}: {exc}") from exc
