"""The TLS side of a world: every node's TLS configuration resolved against the run's PKI, and the operations
that change it (certificate renewal, rotation, expiry and revocation, trusted roots, released pins).

Theory of operation. A node's :class:`~evsim.world.specs.Tls` names what it needs (a trust spec naming roots,
a certificate spec, pins naming keys); the methods here turn it into the TLS layer's values
(:class:`~evsim.tls.TrustStore` with the CRLs published now, :class:`~evsim.tls.ServerTls` with an OCSP staple,
:class:`~evsim.tls.ClientTls` with the station's peer policy) whenever a configuration is built or rebuilt.
Every change installs a new configuration on the node for its next handshake; open connections are never
touched (TLS checks certificates only during the handshake).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import attrs
from cryptography import x509

from evsim.errors import ConfigError
from evsim.nodes.admission import ClientStatus
from evsim.nodes.station_model import peer_event_fields
from evsim.pki import CertKey
from evsim.tls import (
    ClientTls,
    Identity,
    PeerEvent,
    PeerPolicy,
    RevocationPolicy,
    ServerTls,
    TrustStore,
)
from evsim.world.base import STATION_ROOTS, Selector, WorldBase, _identity
from evsim.world.nodes import CsmsNode, StationGroup, StationNode
from evsim.world.pki import STATION_CA
from evsim.world.specs import (
    DEFAULT_TRUST,
    PinSpec,
    Tls,
    TrustSpec,
    layer_change_policy,
    layer_pin_set,
)


class WorldTls(WorldBase):
    """TLS resolution and certificate / trust operations of a :class:`~evsim.world.World`."""

    # ------------------------------------------------------------------ TLS resolution

    def trust_store(
        self, trust: TrustSpec | TrustStore | None, roots: Iterable[str] | None = None
    ) -> TrustStore:
        """A trust store from its spec and the PKI as it is now (roots, CRLs); a ready one as it is.

        Args:
            trust: the spec, a ready store, or None (:data:`DEFAULT_TRUST`).
            roots: root names replacing the spec's (a group after ``install_root`` / ``remove_root``).
        """
        if isinstance(trust, TrustStore):
            return trust
        spec = trust or DEFAULT_TRUST
        root_names = tuple(roots) if roots is not None else spec.roots
        anchors = tuple(self.pki.roots[r].cert for r in root_names)
        crls = tuple(self.pki.crl(r) for r in root_names) if spec.crl != "off" else ()
        return TrustStore(
            spec.name,
            anchors if spec.mode == "pki" else (),
            hostname=spec.hostname,
            wildcards=spec.wildcards,
            mode=spec.mode,
            time_check=spec.time_check,  # type: ignore[arg-type]  # checked by the scenario loader
            revocation=RevocationPolicy(spec.crl, crls, spec.ocsp, spec.on_unknown),  # type: ignore[arg-type]
            max_depth=spec.max_depth,
        )

    def _client_trust(self, tls: Tls) -> TrustStore:
        """A server's trust store for client certificates (profile 3): the run's ``root`` by default; a
        :class:`TrustSpec` names its roots and revocation checks. Its CRLs include the station sub-CA's (it
        issues the station certificates) and no server name is checked; its OCSP setting is enforced after
        the handshake (:meth:`_client_status`: TLS carries no staple from a client)."""
        spec = tls.client_trust
        if spec is None:
            return TrustStore(STATION_ROOTS, (self.pki.roots["root"].cert,), hostname="off")
        if not isinstance(spec, TrustSpec):
            return spec
        crls: tuple[x509.CertificateRevocationList, ...] = ()
        if spec.crl != "off":
            crls = (*(self.pki.crl(r) for r in spec.roots), self.pki.crl(STATION_CA))
        return TrustStore(
            spec.name,
            tuple(self.pki.roots[r].cert for r in spec.roots),
            hostname="off",
            time_check=spec.time_check,  # type: ignore[arg-type]  # checked by the scenario loader
            revocation=RevocationPolicy(spec.crl, crls, "off", spec.on_unknown),  # type: ignore[arg-type]
            max_depth=spec.max_depth,
        )

    def _client_status(self, tls: Tls) -> ClientStatus | None:
        """The OCSP check a server's client trust asks for (``ocsp = "request"`` or ``"require"``), asked of the
        run PKI's responders at the simulation's time: a revoked certificate is refused; an unknown one too
        under ``require`` with ``on_unknown = "fail"``."""
        spec = tls.client_trust
        if not isinstance(spec, TrustSpec) or spec.ocsp == "off":
            return None
        pki, clock = self.pki, self.clock
        strict = spec.ocsp == "require" and spec.on_unknown == "fail"

        def status(leaf: x509.Certificate) -> str:
            answer = pki.ocsp_status(leaf, at=clock.elapsed())
            if answer == "revoked":
                return "certificate revoked (OCSP)"
            if answer == "unknown" and strict:
                return "certificate status unknown (OCSP)"
            return ""

        return status

    def _refresh_client_trust(self) -> None:
        """Rebuild the listener TLS of every profile 3 CSMS and controller whose client trust checks CRLs (a new
        CRL was published); their next handshakes use it."""
        for node in self.csms.values():
            trust = node.tls.client_trust
            current = node.csms.server_tls
            if current is not None and isinstance(trust, TrustSpec) and trust.crl != "off":
                node.csms.server_tls = self._server_tls(
                    node.name, node.security_profile, node.tls, current.identity
                )
        for lc in self.controllers.values():
            trust = lc.tls.client_trust
            pairs = lc.controller.config.pairing is not None  # no CA check to refresh
            if lc.security_profile == 3 and not pairs and isinstance(trust, TrustSpec) and trust.crl != "off":
                old = lc.controller.server_tls
                assert old is not None
                lc.controller.server_tls = ServerTls.build(
                    old.profile, old.identity, trust=self._client_trust(lc.tls), client_auth="required"
                )

    def pin_spki(self, pin: PinSpec) -> str:
        """The key hash a pin names, in this run's PKI (keys are generated per run)."""
        if pin.spki_sha256 is not None:
            return pin.spki_sha256
        if pin.root is not None:
            return self.pki.root_spki(pin.root)
        if pin.intermediate is not None:
            return self.pki.intermediate_spki(pin.intermediate)
        assert pin.csms is not None
        node = self.csms[pin.csms]
        return self.pki.csms_spki(node.host, pin.key, node.tls.certificate.key_type)

    def _server_tls(self, name: str, security_profile: int, tls: Tls, identity: Identity) -> ServerTls | None:
        if security_profile == 1:
            return None
        ocsp = None
        if tls.ocsp_stapling:
            ocsp = self.pki.staple(tls.certificate.root, identity.leaf, self.clock.utcnow)
        if security_profile == 3:
            return ServerTls.build(
                tls.profile,
                identity,
                trust=self._client_trust(tls),
                client_auth="required",
                ocsp=ocsp,
                peer=self._csms_peer_policy(name, tls),
            )
        return ServerTls.build(tls.profile, identity, ocsp=ocsp)

    def _csms_peer_policy(self, name: str, tls: Tls) -> PeerPolicy | None:
        """A server's peer policy (pins / change on station certificates), made once; its events are recorded
        at the server (a CSMS sends no SecurityEventNotification)."""
        if tls.pins is None and tls.change is None:
            return None
        if name not in self._server_peers:
            recorder = self.recorder

            def sink(event: PeerEvent) -> None:
                recorder.emit(name, event.event, **peer_event_fields(event))

            self._server_peers[name] = PeerPolicy(
                side="server",
                pins=None
                if tls.pins is None
                else layer_pin_set(tls.pins, self.pin_spki, start=self.clock.start_utc),
                change=None if tls.change is None else layer_change_policy(tls.change),
                sink=sink,
                name=name,
            )
        return self._server_peers[name]

    def _install_server_certificate(self, node: CsmsNode, cert: CertKey) -> None:
        """Make ``cert`` the CSMS's certificate for its next handshakes (with a fresh staple)."""
        node.certificate = cert
        if self.expiry is not None:
            self.expiry.note(node.name, cert.cert, role="own")
        node.csms.server_tls = self._server_tls(
            node.name, node.security_profile, node.tls, Identity.from_cert_key(cert)
        )

    def _station_identity(self, group: StationGroup, sid: str) -> Identity:
        """A station's certificate (profile 3): the one it holds now (renewed over OCPP or provisioned), else
        issued once by the station sub-CA, or the group's own."""
        node = self.stations.get(sid)
        held = node.certificate if node is not None else None
        if held is not None:
            return Identity(held.chain, held.key)
        if group.tls.identity is not None:
            return _identity(group.tls.identity, sid)
        return Identity.from_cert_key(
            self.pki.station_certificate(sid, validity_s=group.tls.certificate.validity)
        )

    def _client_tls(self, group: StationGroup, sid: str, peer: PeerPolicy | None) -> ClientTls | None:
        if group.security_profile == 1:
            return None
        identity = self._station_identity(group, sid) if group.security_profile == 3 else None
        return ClientTls.build(
            group.tls.profile, self.trust_store(group.tls.trust, group.roots), identity, peer=peer
        )

    def _rebuild_client_tls(self, node: StationNode) -> None:
        node.station.client_tls = self._client_tls(node.group, node.name, node.peer)

    def _station_peer_policy(self, sid: str, tls: Tls, name: str) -> PeerPolicy:
        """A client peer policy from pins / change settings, whose events go to station ``sid``."""

        def sink(event: PeerEvent) -> None:
            self.stations[sid].station.on_peer_event(event)  # events come only from connections: it exists

        return PeerPolicy(
            side="client",
            pins=None
            if tls.pins is None
            else layer_pin_set(tls.pins, self.pin_spki, start=self.clock.start_utc),
            change=None if tls.change is None else layer_change_policy(tls.change),
            sink=sink,
            name=name,
        )

    # ------------------------------------------------------------------ certificates and trust

    def renew_certificate(self, target: Selector, *, validity: float | None = None) -> None:
        """Issue the target a new certificate now, for the same key (CSMS) or a new one (stations, profile 3)."""
        self._reissue(target, rotate=False, expire=False, validity=validity)

    def rotate_certificate(
        self, target: Selector, *, new_key: bool = True, validity: float | None = None
    ) -> None:
        """Issue the target a new certificate now; a CSMS moves to its next key with ``new_key``."""
        self._reissue(target, rotate=new_key, expire=False, validity=validity)

    def expire_certificate(self, target: Selector) -> None:
        """Give a CSMS a certificate that ended one second ago (same key)."""
        self._reissue(target, rotate=False, expire=True, validity=None)

    def _reissue(self, target: Selector, *, rotate: bool, expire: bool, validity: float | None) -> None:
        at = self.clock.elapsed()
        csms_names, station_ids = self.targets(target)
        for name in csms_names:
            node = self.csms[name]
            spec = node.tls.certificate
            if rotate:
                self.pki.next_csms_key(node.host)
            if expire:
                cert = self.pki.expired_server_certificate(node.host, spec, at=at)
            else:
                spec = attrs.evolve(spec, validity=spec.validity if validity is None else validity)
                cert = self.pki.server_certificate(node.host, spec, at=at)
            self._install_server_certificate(node, cert)
        for sid in station_ids:
            st = self.stations[sid]
            if st.group.security_profile == 3:
                cert = self.pki.station_certificate(
                    sid, validity_s=st.group.tls.certificate.validity, at=at, renew=True
                )
                st.station.certs.provision(identity=cert)
                self._rebuild_client_tls(st)

    def revoke_certificate(self, target: Selector) -> None:
        """Revoke a CSMS's certificate, or the certificates the stations of a group (or one station) hold.

        A CSMS's: its root publishes a new CRL and its responder answers ``revoked``; stations whose trust store
        checks CRLs get a new trust store (a new context) for their next connection; the CSMS staples the new
        status from its next handshake. A station's (the one it holds now and a renewed one not yet in use):
        the station sub-CA publishes a new CRL and its responder answers ``revoked``; every CSMS and controller
        whose client trust checks CRLs gets a new listener context, those that check OCSP ask the responder at
        each upgrade. Open connections are undisturbed."""
        name = self._name(target)
        if name not in self.csms:
            self._revoke_stations(name)
            return
        node = self.csms[name]
        if node.certificate is None:
            raise ConfigError(
                f"CSMS {name!r} has no certificate of the run's PKI", value=name, fix="revoke another CSMS"
            )
        self.pki.revoke(node.tls.certificate.root, node.certificate.cert, at=self.clock.elapsed())
        self._install_server_certificate(node, node.certificate)
        for st in self.stations.values():
            trust = st.group.tls.trust
            if isinstance(trust, TrustSpec) and trust.crl != "off" and st.group.security_profile >= 2:
                self._rebuild_client_tls(st)

    def _revoke_stations(self, target: str) -> None:
        at = self.clock.elapsed()
        _, station_ids = self.targets(target)
        issuer = self.pki.station_ca.cert.subject
        for sid in station_ids:
            certs = self.stations[sid].station.certs
            held = [c.cert for c in (certs.identity, certs.candidate) if c is not None]
            if not held:
                self.recorder.emit(
                    "timeline", "certificate_not_revoked", station=sid, reason="no certificate"
                )
            for cert in held:
                if cert.issuer != issuer:
                    self.recorder.emit(
                        "timeline",
                        "certificate_not_revoked",
                        station=sid,
                        reason="not issued by the run's PKI",
                    )
                    continue
                self.pki.revoke(STATION_CA, cert, at=at)
        self._refresh_client_trust()

    def install_root(self, target: Selector, root: str) -> None:
        """The target stations trust ``root`` too (their groups' trust stores gain it)."""
        self._change_roots(target, root, install=True)

    def remove_root(self, target: Selector, root: str) -> None:
        """The target stations no longer trust ``root``."""
        self._change_roots(target, root, install=False)

    def _change_roots(self, target: Selector, root: str, *, install: bool) -> None:
        _, station_ids = self.targets(target)
        for group in {self.stations[s].group for s in station_ids}:
            roots = [r for r in group.roots if r != root]
            if install:
                roots.append(root)
            group.roots = tuple(roots)
        cert = self.pki.roots[root].cert
        for sid in station_ids:
            st = self.stations[sid]
            if install:
                st.station.certs.provision(add_roots=(cert,))
            else:
                st.station.certs.provision(remove_roots=(cert,))
            if not st.group.roots:
                self.recorder.emit("timeline", "trust_store_empty", group=st.group.name)
                continue
            self._rebuild_client_tls(st)

    def release_pin(self, target: Selector, key: PinSpec, *, reason: str = "operator") -> None:
        """Each target station releases its pins of ``key`` (a new epoch: its context is rebuilt for the next
        connection; the open connection is undisturbed)."""
        spki = self.pin_spki(key)
        _, station_ids = self.targets(target)
        now = self.clock.utcnow()
        for sid in station_ids:
            st = self.stations[sid]
            if st.peer is None:
                raise ConfigError(f"station {sid!r} has no pins", value=sid, fix="give its group pins")
            st.peer.release_pin(spki, now=now, reason=reason)
            for policy in st.endpoint_peers:  # endpoints with their own pins
                with contextlib.suppress(ConfigError):  # "no pin has this key": that endpoint keeps its pins
                    policy.release_pin(spki, now=now, reason=reason)
