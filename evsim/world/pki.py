"""The per-run PKI of a world: named roots, intermediate CAs under them, the station sub-CA, CSMS, controller and
station certificates.

Keys are generated for each run and never written anywhere. Every certificate is issued at the simulation's
time (``start`` plus an offset in seconds), so expiry happens in virtual time exactly where a scenario says.
A CSMS has a sequence of keys (key 0 at the start, key 1 after its first rotation with a new key, ...),
generated on first use, so a pin can name a key the run will only use later. Each root has an OCSP
responder and publishes a CRL, rebuilt on every revocation.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import math
from collections.abc import Callable, Mapping

import attrs
from cryptography import x509

from evsim.pki import CLIENT_EKU, SERVER_EKU, CertificateAuthority, CertKey
from evsim.pki.keys import KeyType, PrivateKey, generate_key, public_key_der
from evsim.pki.ocsp import OcspResponder, OcspStaple
from evsim.world.specs import CertificateSpec

#: CA validity: long enough for any run (the scenario loader caps durations at 100 years).
CA_DAYS = 36_500
STATION_CA = "station-ca"
"""The name the station sub-CA goes by where a CA is named (its CRL, its OCSP responder, revocations)."""
STAPLE_REFRESH_S = 60.0
"""How old a CSMS's stapled OCSP response may get before it asks the responder again (simulation time; a
choice of evsim, well below the responder's 7-day nextUpdate)."""


def issue_window(start: _dt.datetime, offset_s: float, validity_s: float) -> tuple[_dt.datetime, int]:
    """The ``now`` and whole ``days`` to pass to the CA so the certificate ends exactly at
    ``start + offset_s + validity_s`` (the CA issues whole days; the start is moved back instead)."""
    days = max(1, math.ceil(validity_s / 86_400))
    end = start + _dt.timedelta(seconds=offset_s + validity_s)
    return end - _dt.timedelta(days=days), days


@attrs.define
class WorldPki:
    """Roots by name (``root`` always exists), intermediate CAs by name, the station sub-CA under ``root`` (or an
    intermediate under it), and issued certificates."""

    start: _dt.datetime
    organization: str
    roots: dict[str, CertificateAuthority]
    station_ca: CertificateAuthority
    _stations: dict[str, CertKey] = attrs.field(factory=dict)
    _csms_keys: dict[str, list[PrivateKey]] = attrs.field(factory=dict)
    _csms_key_index: dict[str, int] = attrs.field(factory=dict)
    crl_lifetime_s: float = 7 * 86_400.0
    key_type: KeyType = "ec"
    """The run's key type: ``root``, the station sub-CA and the station certificates it issues."""
    _responders: dict[str, OcspResponder] = attrs.field(factory=dict)
    _crls: dict[str, x509.CertificateRevocationList] = attrs.field(factory=dict)
    intermediates: dict[str, CertificateAuthority] = attrs.field(factory=dict)

    @classmethod
    def build(
        cls,
        start: _dt.datetime,
        *,
        organization: str = "evsim",
        key_type: KeyType = "ec",
        roots: Mapping[str, KeyType] | None = None,
        crl_lifetime_s: float = 7 * 86_400.0,
        intermediates: Mapping[str, tuple[str, KeyType]] | None = None,
        station_issuer: str = "root",
    ) -> WorldPki:
        """Generate the roots and the station sub-CA.

        Args:
            start: the simulation start (offsets of every certificate are relative to it).
            organization: O of every node certificate (profile 3 checks the station certificate's O).
            key_type: key type of ``root``, the station sub-CA and, by default, every leaf.
            roots: further roots by name and key type (``root``, the operator's, always exists).
            crl_lifetime_s: how long each published CRL stays valid (pass more than the run's duration so a
                station never meets an expired CRL unless a scenario asks for it).
            intermediates: intermediate CAs by name: ``(issuer, key_type)``, the issuer a root or an earlier
                intermediate (they are generated in the order given).
            station_issuer: the CA that issues the station sub-CA: ``root`` or an intermediate under it.
        """
        org = organization
        ca_start = start - _dt.timedelta(days=1)
        made = {
            "root": CertificateAuthority.create_root(
                f"{org} CSMS Root CA", org, now=ca_start, days=CA_DAYS, key_type=key_type
            )
        }
        for name, root_key_type in (roots or {}).items():
            if name == "root":
                continue
            made[name] = CertificateAuthority.create_root(
                f"{name} Root CA", name, now=ca_start, days=CA_DAYS, key_type=root_key_type
            )
        cas = dict(made)
        inter: dict[str, CertificateAuthority] = {}
        for name, (issuer, inter_key_type) in (intermediates or {}).items():
            inter[name] = cas[name] = cas[issuer].create_sub_ca(
                f"{name} Intermediate CA",
                org if cas[issuer].root == made["root"].cert else issuer,
                now=ca_start,
                days=CA_DAYS,
                key_type=inter_key_type,
                path_length=None,
            )
        station_ca = cas[station_issuer].create_sub_ca(
            f"{org} Charging Station Sub-CA", org, now=ca_start, days=CA_DAYS, key_type=key_type
        )
        return cls(
            start=start,
            organization=org,
            roots=made,
            station_ca=station_ca,
            crl_lifetime_s=crl_lifetime_s,
            key_type=key_type,
            intermediates=inter,
        )

    def add_root(self, name: str, key_type: KeyType = "ec") -> CertificateAuthority:
        """A further root CA (an attacker's, or another operator's), generated now; the existing one if named."""
        if name not in self.roots:
            self.roots[name] = CertificateAuthority.create_root(
                f"{name} Root CA",
                name,
                now=self.start - _dt.timedelta(days=1),
                days=CA_DAYS,
                key_type=key_type,
            )
        return self.roots[name]

    def issuing_ca(self, cert: CertificateSpec) -> CertificateAuthority:
        """The CA that issues a certificate of ``cert``: its intermediate ``issuer``, else its root."""
        return self.intermediates[cert.issuer] if cert.issuer is not None else self.roots[cert.root]

    def server_certificate(
        self, host: str, cert: CertificateSpec, *, at: float = 0.0, root: str | None = None
    ) -> CertKey:
        """A CSMS certificate for ``host`` valid from ``at + not_before`` to ``at + validity`` (seconds from start).

        It carries the CSMS's current key (:meth:`csms_key`), so a renewal keeps the key; with another
        ``root`` (an attacker's certificate for the name) a fresh key.
        """
        now, days = issue_window(self.start, at, cert.validity)
        ca = self.roots[root] if root is not None else self.issuing_ca(cert)
        key = None if root is not None else self.current_csms_key(host, cert)
        return ca.issue_server(
            host, now=now, days=days, key_type=cert.key_type, key=key, extended_key_usage=SERVER_EKU
        )

    def controller_certificate(self, host: str, cert: CertificateSpec, *, at: float = 0.0) -> CertKey:
        """A Local Controller's own certificate: CN = its host (OCPP-J §6.5), O = the operator (profile 3
        upstream gates check it), EKU serverAuth and clientAuth: it serves as TLS server and client certificate."""
        now, days = issue_window(self.start, at, cert.validity)
        return self.roots[cert.root].issue_server(
            host,
            org=self.organization,
            now=now,
            days=days,
            key_type=cert.key_type,
            extended_key_usage=SERVER_EKU + CLIENT_EKU,
        )

    def expired_server_certificate(self, host: str, cert: CertificateSpec, *, at: float) -> CertKey:
        """A certificate for ``host`` (its current key) whose validity ended one second before ``at``."""
        now, days = issue_window(self.start, at - 86_400 - 1, 86_400)
        return self.issuing_ca(cert).issue_server(
            host,
            now=now,
            days=days,
            key_type=cert.key_type,
            key=self.current_csms_key(host, cert),
            extended_key_usage=SERVER_EKU,
        )

    # ------------------------------------------------------------ CSMS keys (pins, rotation)

    def csms_key(self, host: str, index: int, key_type: KeyType = "ec") -> PrivateKey:
        """Key number ``index`` of the CSMS at ``host`` (0: the key at the start, 1: the key of its first
        new-key rotation, ...), generated on first use so pins can name keys the run will use later.

        Args:
            host: the CSMS host.
            index: position in its key sequence.
            key_type: ``"ec"`` or ``"rsa"`` for keys generated now.

        Returns:
            The key.
        """
        keys = self._csms_keys.setdefault(host, [])
        while len(keys) <= index:
            keys.append(generate_key(key_type))
        return keys[index]

    def current_csms_key(self, host: str, cert: CertificateSpec) -> PrivateKey:
        """The key the CSMS at ``host`` uses now."""
        return self.csms_key(host, self._csms_key_index.get(host, 0), cert.key_type)

    def next_csms_key(self, host: str) -> int:
        """Move the CSMS at ``host`` to the next key of its sequence (a rotation with a new key).

        Returns:
            The new key's index.
        """
        self._csms_key_index[host] = self._csms_key_index.get(host, 0) + 1
        return self._csms_key_index[host]

    def csms_spki(self, host: str, index: int, key_type: KeyType = "ec") -> str:
        """Hex SHA-256 of the SubjectPublicKeyInfo of :meth:`csms_key` (what a pin holds)."""
        return hashlib.sha256(public_key_der(self.csms_key(host, index, key_type))).hexdigest()

    def root_spki(self, root: str) -> str:
        """Hex SHA-256 of a root CA's SubjectPublicKeyInfo."""
        return hashlib.sha256(public_key_der(self.roots[root].cert)).hexdigest()

    def intermediate_spki(self, name: str) -> str:
        """Hex SHA-256 of an intermediate CA's SubjectPublicKeyInfo (``station-ca``: the station sub-CA)."""
        ca = self.station_ca if name == STATION_CA else self.intermediates[name]
        return hashlib.sha256(public_key_der(ca.cert)).hexdigest()

    def station_certificate(
        self, station_id: str, *, validity_s: float, at: float = 0.0, renew: bool = False
    ) -> CertKey:
        """The station certificate (CN = id, O = organization), issued once (again, from ``at``, with ``renew``)."""
        if renew or station_id not in self._stations:
            now, days = issue_window(self.start, at, validity_s)
            self._stations[station_id] = self.station_ca.issue_client(
                station_id,
                self.organization,
                now=now,
                days=days,
                key_type=self.key_type,
                extended_key_usage=CLIENT_EKU,
            )
        return self._stations[station_id]

    def record_station_certificate(self, station_id: str, cert: CertKey) -> None:
        """Note the certificate a station holds now (one it got over OCPP, A02/A03)."""
        self._stations[station_id] = cert

    # ------------------------------------------------------------ revocation

    def ca(self, name: str) -> CertificateAuthority:
        """A CA by name: a root, or :data:`STATION_CA` (the station sub-CA)."""
        return self.station_ca if name == STATION_CA else self.roots[name]

    def responder(self, root: str) -> OcspResponder:
        """The OCSP responder of a CA (a root, or :data:`STATION_CA`; the CA signs its responses), sharing its
        revocation records."""
        if root not in self._responders:
            self._responders[root] = OcspResponder(self.ca(root))
        return self._responders[root]

    def ocsp_status(self, cert: x509.Certificate, *, at: float) -> str:
        """What the OCSP responder of ``cert``'s issuer answers about it ``at`` seconds from the start:
        ``"good"``, ``"revoked"``, or ``"unknown"`` (no CA of the run issued it)."""
        for name in (STATION_CA, *self.roots):
            if self.ca(name).cert.subject == cert.issuer:
                status, _ = self.responder(name).status(
                    cert.serial_number, now=self.start + _dt.timedelta(seconds=at)
                )
                return status
        return "unknown"

    def crl(self, root: str) -> x509.CertificateRevocationList:
        """The CRL a CA (a root, or :data:`STATION_CA`) publishes now (built at the start, rebuilt by
        :meth:`revoke`)."""
        if root not in self._crls:
            self._publish(root, at=0.0)
        return self._crls[root]

    def _publish(self, root: str, *, at: float) -> None:
        now = self.start + _dt.timedelta(seconds=at)
        self._crls[root] = self.responder(root).revocations.build_crl(
            now=now, next_update_s=self.crl_lifetime_s
        )

    def revoke(self, root: str, cert: x509.Certificate, *, at: float) -> None:
        """Revoke ``cert`` (issued by ``root``, a root or :data:`STATION_CA`) at ``at`` seconds from the start and publish a new CRL; the
        root's OCSP responder answers ``revoked`` for it from then on."""
        self.responder(root).revocations.revoke(cert, at=self.start + _dt.timedelta(seconds=at))
        self._publish(root, at=at)

    def staple(self, root: str, cert: x509.Certificate, clock: Callable[[], _dt.datetime]) -> OcspStaple:
        """A server's OCSP staple for ``cert`` from ``root``'s responder, refreshed at most every minute of
        simulation time (a fresh staple follows a revocation within a minute; the signature cost stays low)."""
        return OcspStaple(
            self.responder(root), cert, self.roots[root].cert, clock=clock, refresh_s=STAPLE_REFRESH_S
        )
