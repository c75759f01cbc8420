"""Shared test helpers: an in-memory PKI and ready-made TLS configurations.

Usage (no pytest fixture needed; results are cached per ``now``, so call it freely)::

    from tests.pki_fixtures import TEST_NOW, make_test_pki
    pki = make_test_pki(TEST_NOW)
    server_tls = ServerTls.build(TlsProfile(), pki.server_identity())
    client_tls = ClientTls.build(TlsProfile(), pki.csms_trust())
    station = pki.station_cert("CS00001")           # CertKey (CN=CS00001, O=evsim), cached

Certificates are valid from ``now - 1 h`` (backdating) for a year (leaves) or ten years (CAs): pass the
simulation's start time as ``now`` and check at ``lambda: now``-based times (``verify_time``).

``await tls_pair(client_tls, server_tls)`` runs both handshakes over an in-memory pair plus one
ping/pong, and returns each side's ``TlsStream`` or the ``HandshakeFailed`` it raised.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable

import attrs
import trio
import trio.testing
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from evsim.errors import HandshakeFailed, TransportError
from evsim.pki import CertificateAuthority, CertKey
from evsim.tls import (
    ClientTls,
    Identity,
    ServerTls,
    SessionStore,
    TlsSession,
    TlsStream,
    TrustStore,
    tls_accept,
    tls_connect,
)
from evsim.tls.peer import PeerPolicy
from evsim.tls.trust import HostnameCheck, TimeCheck, WildcardPolicy

TEST_NOW = dt.datetime(2030, 6, 1, 12, 0, tzinfo=dt.UTC)
"""A fixed simulation time for tests (far from the machine's clock on purpose)."""
CSMS_HOST = "csms.evsim.test"
ORG = "evsim"


@attrs.frozen
class TestPki:
    """A complete test PKI.

    Attributes:
        now: issuance time.
        root: CSMS root CA (``CSMSRootCertificate``).
        server: CSMS certificate for ``csms.evsim.test`` (CN and SAN).
        localhost: CSMS certificate for ``localhost`` (SAN DNS localhost, IP 127.0.0.1 and ::1).
        station_ca: Charging Station sub-CA under ``root``.
        evil: an unrelated root CA (attack tests: a certificate nobody trusts).
        evil_server: a ``csms.evsim.test`` certificate issued by ``evil``.
    """

    __test__ = False  # not a pytest test class

    now: dt.datetime
    root: CertificateAuthority
    server: CertKey
    localhost: CertKey
    station_ca: CertificateAuthority
    evil: CertificateAuthority
    evil_server: CertKey
    _stations: dict[str, CertKey] = attrs.field(factory=dict, eq=False, repr=False)

    def station_cert(self, station_id: str, *, org: str = ORG) -> CertKey:
        """The station certificate for ``station_id`` (CN = id, O = org), issued by ``station_ca``; cached."""
        key = f"{org}/{station_id}"
        if key not in self._stations:
            self._stations[key] = self.station_ca.issue_client(station_id, org, now=self.now)
        return self._stations[key]

    def evil_station_cert(self, station_id: str) -> CertKey:
        """A station certificate issued by the ``evil`` CA (not cached)."""
        return self.evil.issue_client(station_id, "evil", now=self.now)

    # ------------------------------------------------------------ TLS shortcuts

    def server_identity(self) -> Identity:
        """Identity for ``csms.evsim.test``."""
        return Identity.from_cert_key(self.server)

    def localhost_identity(self) -> Identity:
        """Identity for ``localhost`` / 127.0.0.1."""
        return Identity.from_cert_key(self.localhost)

    def station_identity(self, station_id: str) -> Identity:
        """Identity (leaf + station sub-CA) for a station."""
        return Identity.from_cert_key(self.station_cert(station_id))

    def csms_trust(
        self,
        *,
        hostname: HostnameCheck = "san+cn",
        wildcards: WildcardPolicy = "deny",
        time_check: TimeCheck = "enforce",
    ) -> TrustStore:
        """What a station trusts: the CSMS root, with the given hostname / wildcard / time policy."""
        return TrustStore(
            "CSMSRootCertificate",
            (self.root.cert,),
            hostname=hostname,
            wildcards=wildcards,
            time_check=time_check,
        )

    def station_trust(self) -> TrustStore:
        """What the CSMS trusts for client certificates: the same root (the station sub-CA chains to it)."""
        return TrustStore("ChargingStationRoot", (self.root.cert,))


@functools.lru_cache(maxsize=8)
def make_test_pki(now: dt.datetime = TEST_NOW) -> TestPki:
    """Build (once per ``now``) an EC P-256 test PKI in memory.

    Args:
        now: simulation time of issuance.

    Returns:
        The PKI.
    """
    root = CertificateAuthority.create_root("evsim Test Root CA", ORG, now=now)
    server = root.issue_server(CSMS_HOST, now=now)
    localhost = root.issue_server("localhost", ips=("127.0.0.1", "::1"), now=now)
    station_ca = root.create_sub_ca("evsim Test Station Sub-CA", ORG, now=now)
    evil = CertificateAuthority.create_root("Evil Root CA", "evil", now=now)
    evil_server = evil.issue_server(CSMS_HOST, now=now)
    return TestPki(now, root, server, localhost, station_ca, evil, evil_server)


async def tls_pair(
    client_tls: ClientTls,
    server_tls: ServerTls,
    *,
    host: str | None = CSMS_HOST,
    client_time: dt.datetime | None = TEST_NOW,
    server_time: dt.datetime | None = TEST_NOW,
    exchange: bool = True,
    client_peer: PeerPolicy | None = None,
    server_peer: PeerPolicy | None = None,
    sessions: SessionStore | None = None,
    session: TlsSession | None = None,
    server_transport: Callable[[trio.abc.Stream], trio.abc.Stream] | None = None,
    close: bool = False,
) -> tuple[TlsStream | TransportError, TlsStream | TransportError]:
    """Handshake a client and a server over ``memory_stream_pair`` (both at once), then ping/pong.

    The ping/pong matters for TLS 1.3 mutual TLS: the client's handshake completes before the server has
    checked the client certificate, so a refusal only shows on the client's first read.

    Args:
        client_tls: client configuration.
        server_tls: server configuration.
        host: server name the client connects to.
        client_time: simulation time the client checks certificates at (None = real clock).
        server_time: simulation time the server checks certificates at (None = real clock).
        exchange: do the ping/pong after the handshakes.
        client_peer: a peer policy for the client's connection (else the one bound to ``client_tls``).
        server_peer: a peer policy for the server's connection (else the one bound to ``server_tls``).
        sessions: the client's session store (``tls_connect(sessions=...)``).
        session: a session for the client to offer.
        server_transport: wraps the server's transport (e.g. to record what the server sends).
        close: after the exchange, close both sides with close_notify (a session stays resumable only
            when its connection was shut down properly).

    Returns:
        (client result, server result): the stream, or the ``HandshakeFailed`` /
        ``TransportError`` that side got.
    """
    a, b = trio.testing.memory_stream_pair()
    results: dict[str, TlsStream | TransportError] = {}

    async def client() -> None:
        try:
            s = await tls_connect(
                a,
                client_tls,
                host,
                verify_time=(lambda: client_time) if client_time else None,
                peer=client_peer,
                sessions=sessions,
                session=session,
            )
            results["client"] = s
            if exchange:
                await s.send_all(b"ping")
                assert await s.receive_some() == b"pong"
            if close:
                await s.aclose()
        except (HandshakeFailed, TransportError) as exc:
            results["client"] = exc

    async def server() -> None:
        try:
            s = await tls_accept(
                server_transport(b) if server_transport is not None else b,
                server_tls,
                verify_time=(lambda: server_time) if server_time else None,
                peer=server_peer,
            )
            results["server"] = s
            if exchange:
                assert await s.receive_some() == b"ping"
                await s.send_all(b"pong")
            if close:
                assert await s.receive_some() == b""
                await s.aclose()
        except (HandshakeFailed, TransportError) as exc:
            results["server"] = exc

    async with trio.open_nursery() as nursery:
        nursery.start_soon(client)
        nursery.start_soon(server)
    return results["client"], results["server"]


def unknown_ocsp_staple(cert: x509.Certificate, issuer: CertificateAuthority, now: dt.datetime) -> bytes:
    """An authentic OCSP response saying ``unknown`` for ``cert``, signed by its issuer.

    A responder that is authoritative for the CA but does not know the certificate: a CertID with the right
    issuer and serial, answered "unknown" (as a responder with a list of issued serials would).
    """
    builder = ocsp.OCSPResponseBuilder().add_response(
        cert=cert,
        issuer=issuer.cert,
        algorithm=hashes.SHA256(),
        cert_status=ocsp.OCSPCertStatus.UNKNOWN,
        this_update=now,
        next_update=now + dt.timedelta(hours=1),
        revocation_time=None,
        revocation_reason=None,
    )
    builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, issuer.cert)
    return builder.sign(issuer.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


@attrs.frozen
class GroupsPki:
    """A small PKI with two root-CA groups, for the handshake predictor's tests.

    Group A: root ``a``, sub-CA ``a_sub``; group B: root ``b``. Server certificates (``servers``, by label)
    are for ``csms.evsim.test`` (CN and SAN) unless the label says otherwise:

    * ``ec_a`` / ``rsa_a``: EC / RSA key, issued by ``a``; ``ec_b``: by ``b``; ``ec_sub``: by ``a_sub``
      (the chain sent includes the sub-CA);
    * ``wild_a``: ``*.evsim.test``; ``cn_only_a``: no SAN; ``alt_san_a``: CN ``csms.evsim.test``, SAN
      ``alt.evsim.test`` only;
    * ``short_a``: valid for one day; ``ip_a``: CN ``localhost``, SAN ``localhost`` and 127.0.0.1;
    * ``leaf_only_sub``: issued by ``a_sub`` but sent without it (only an anchored sub-CA completes it);
    * ``old_late``: issued by ``late`` 400 days before ``now`` (expired since ``now - 3 days``), while
      ``late``, a root created ten days after ``now``, is not valid yet: the root is checked first.

    ``twin`` is an impostor root with ``a``'s name and another key.

    Client certificates (``clients``): ``cli_a``, ``cli_b``, ``cli_sub`` (by ``a_sub``), ``cli_short_a``
    (one day). Leaves are valid from ``now - 1 h`` for 397 (servers) / 730 (clients) days; CAs ten years.
    """

    __test__ = False

    now: dt.datetime
    a: CertificateAuthority
    a_sub: CertificateAuthority
    b: CertificateAuthority
    twin: CertificateAuthority
    late: CertificateAuthority
    servers: dict[str, Identity] = attrs.field(eq=False)
    clients: dict[str, Identity] = attrs.field(eq=False)

    @property
    def anchor_sets(self) -> tuple[tuple[x509.Certificate, ...], ...]:
        """Trust-store anchors to draw from, group A (which issued most certificates) most often: one root,
        two, the sub-CA alone or beside a root (a sub-CA alone anchors nothing: no partial chains), the
        impostor of ``a``."""
        a, b, sub, twin, late = self.a.cert, self.b.cert, self.a_sub.cert, self.twin.cert, self.late.cert
        return ((a,), (a,), (a,), (a, b), (a, b), (b,), (sub,), (b, sub), (a, sub), (twin,), (a, late))


@functools.lru_cache(maxsize=2)
def make_groups_pki(now: dt.datetime = TEST_NOW) -> GroupsPki:
    """Build (once per ``now``) the :class:`GroupsPki`.

    Args:
        now: simulation time of issuance.

    Returns:
        The PKI.
    """
    a = CertificateAuthority.create_root("Group A Root CA", "group-a", now=now)
    b = CertificateAuthority.create_root("Group B Root CA", "group-b", now=now)
    a_sub = a.create_sub_ca("Group A Sub-CA", now=now)
    twin = CertificateAuthority.create_root("Group A Root CA", "group-a", now=now)
    late = CertificateAuthority.create_root("Late Root CA", "late", now=now + dt.timedelta(days=10))
    leaf_only = a_sub.issue_server(CSMS_HOST, now=now)
    servers = {
        "ec_a": a.issue_server(CSMS_HOST, now=now),
        "rsa_a": a.issue_server(CSMS_HOST, now=now, key_type="rsa"),
        "ec_b": b.issue_server(CSMS_HOST, now=now),
        "ec_sub": a_sub.issue_server(CSMS_HOST, now=now),
        "wild_a": a.issue_server("*.evsim.test", now=now),
        "cn_only_a": a.issue_server(CSMS_HOST, cn_in_san=False, now=now),
        "alt_san_a": a.issue_server(CSMS_HOST, sans=("alt.evsim.test",), cn_in_san=False, now=now),
        "short_a": a.issue_server(CSMS_HOST, now=now, days=1),
        "ip_a": a.issue_server("localhost", ips=("127.0.0.1",), now=now),
        "leaf_only_sub": CertKey(leaf_only.cert, leaf_only.key),
        "old_late": late.issue_server(CSMS_HOST, now=now - dt.timedelta(days=400)),
    }
    clients = {
        "cli_a": a.issue_client("CS-A", now=now),
        "cli_b": b.issue_client("CS-B", now=now),
        "cli_sub": a_sub.issue_client("CS-SUB", now=now),
        "cli_short_a": a.issue_client("CS-SHORT", now=now, days=1),
    }
    return GroupsPki(
        now,
        a,
        a_sub,
        b,
        twin,
        late,
        {k: Identity.from_cert_key(v) for k, v in servers.items()},
        {k: Identity.from_cert_key(v) for k, v in clients.items()},
    )
