"""A station's energy-manager link: the SHIP client side (see :mod:`evsim.nodes.energy_manager` for the roles).

:class:`ShipLink` dials its energy manager, runs TLS with the station's self-signed SHIP certificate (trust
mode ``pinned_peers`` with a pairing list: the manager's SKI registered by the installer, or ``auto_accept``),
opens the WebSocket with subprotocol ``ship`` and runs the SHIP set-up as the client. While connected it stays
in the data phase. When the connection fails or ends it waits and dials again: ``retry_s``, doubled after
every wait up to ``max_retry_s``, back to ``retry_s`` after a connection that completed the set-up
(no jitter: the retry times are part of the scenario's golden log).

:meth:`ShipLink.rotate_key` is crypto agility: a new P-256 key and self-signed certificate with the same
device id (CN), hence a new SKI; the open connection is closed (``removedConnection``) and the link dials at
once with the new key. The energy manager then sees a known device with an unknown key: refused outside a
pairing window, re-paired inside one (:func:`evsim.tls.pairing.decide`).

Events (node = the station): ``ship_connect_failed`` (manager, reason, detail), ``ship_connected``,
``ship_closed`` (reason, by, phase), ``ship_key_rotated`` (old and new SKI), and the TLS peer-trust events
of the station's own pairing list.
"""

from __future__ import annotations

import collections

import attrs
import trio

from evsim.clock import SimClock
from evsim.errors import ConnectionRefused, HandshakeFailed, TransportError, UpgradeRejected
from evsim.net.base import Network
from evsim.nodes.energy_manager import DEFAULT_SHIP_PORT, record_peer_event
from evsim.nodes.ship_session import SHIP_PATH, SHIP_SUBPROTOCOL, ShipSession, ship_profile
from evsim.pki import CertKey, issue_self_signed, ski
from evsim.pki.ca import common_name
from evsim.recorder import Recorder
from evsim.ship import Closed, Connected, HelloChanged, ShipConfig, ShipConnection, ShipEvent
from evsim.text import escape
from evsim.tls import ClientTls, Identity, TlsProfile, TrustStore, tls_connect
from evsim.tls.pairing import PeerTrust
from evsim.tls.peer import PeerEvent, PeerPolicy
from evsim.ws import ws_client

__all__ = ["ShipLink", "ShipLinkConfig", "ShipLinkStatistics"]

SHIP_TRUST = TrustStore("ship", (), hostname="off", mode="pinned_peers")
"""SHIP 12.1: no CA, no host names; the pairing list decides."""


def _handshake_cause(exc: BaseException) -> HandshakeFailed | None:
    """The TLS refusal behind a transport error, if any (TLS 1.3: the server's verdict on the client
    certificate arrives after the client finished, at its first read)."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, HandshakeFailed):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


@attrs.frozen
class ShipLinkConfig:
    """Settings of one station's energy-manager link.

    Attributes:
        name: the station id (node name of the events).
        host: the station's host (the connection's source on the network).
        manager: the energy manager's name (in events).
        manager_host: where it listens.
        identity: the station's self-signed SHIP certificate; its CN is the device id.
        pairing: whom the station trusts (the manager's registered SKI, or ``auto_accept``).
        manager_port: its port.
        profile: TLS settings.
        retry_s: first wait before dialling again.
        max_retry_s: longest wait.
        attempts: stop after this many connection attempts (an impostor's one try); None: never stop.
    """

    name: str
    host: str
    manager: str
    manager_host: str
    identity: CertKey
    pairing: PeerTrust
    manager_port: int = DEFAULT_SHIP_PORT
    profile: TlsProfile = attrs.field(factory=ship_profile)
    retry_s: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    max_retry_s: float = attrs.field(default=300.0, validator=attrs.validators.gt(0))
    attempts: int | None = None


@attrs.frozen
class ShipLinkStatistics:
    """A snapshot of a link: ``connected`` now, ``attempts`` and ``connections`` ever, failures by reason,
    the station's current SKI and its key rotations."""

    connected: bool
    attempts: int
    connections: int
    failures: dict[str, int]
    ski: str
    rotations: int


class ShipLink:
    """A station's SHIP client (see the module doc).

    Args:
        config: the settings.
        network: where it dials.
        clock: the run's clock.
        recorder: where events go.
    """

    def __init__(self, config: ShipLinkConfig, network: Network, clock: SimClock, recorder: Recorder) -> None:
        self.config = config
        self.name = config.name
        self._network = network
        self._clock = clock
        self._recorder = recorder
        self.policy = PeerPolicy(
            side="client", pairing=config.pairing, sink=self._peer_event, name=config.name
        )
        self.identity = config.identity
        self._client_tls = self._build_tls()
        self._ship = ShipConfig(config.name)
        self._session: ShipSession | None = None
        self._dial_now = trio.Event()
        self._attempts = 0
        self._connections = 0
        self._rotations = 0
        self._failures: collections.Counter[str] = collections.Counter()

    def _build_tls(self) -> ClientTls:
        return ClientTls.build(
            self.config.profile, SHIP_TRUST, Identity.from_cert_key(self.identity), peer=self.policy
        )

    @property
    def ski(self) -> str:
        """The station's current SHIP identity (SKI of its certificate, 40 hex digits)."""
        return ski(self.identity.cert).hex()

    @property
    def connected(self) -> bool:
        return self._session is not None and self._session.conn.state == "connected"

    def statistics(self) -> ShipLinkStatistics:
        return ShipLinkStatistics(
            self.connected, self._attempts, self._connections, dict(self._failures), self.ski, self._rotations
        )

    def rotate_key(self) -> str:
        """A new key and certificate, same device id; reconnects with it at once. Returns the new SKI."""
        old = self.ski
        device = common_name(self.identity.cert) or self.config.name
        self.identity = issue_self_signed(device, now=self._clock.utcnow())
        self._client_tls = self._build_tls()
        self._rotations += 1
        self._recorder.emit(
            self.name, "ship_key_rotated", manager=self.config.manager, old_ski=old, ski=self.ski
        )
        if self._session is not None:
            self._session.close("removedConnection")
        self._dial_now.set()
        return self.ski

    def _peer_event(self, event: PeerEvent) -> None:
        record_peer_event(self._recorder, self.name, event)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the link up until cancelled (or until ``attempts`` attempts were made)."""
        task_status.started()
        delay = self.config.retry_s
        while True:
            self._dial_now = trio.Event()
            connected = await self._attempt()
            if self.config.attempts is not None and self._attempts >= self.config.attempts:
                return
            if self._dial_now.is_set():
                delay = self.config.retry_s
                continue
            if connected:
                delay = self.config.retry_s
            with trio.move_on_after(delay):
                await self._dial_now.wait()
            delay = min(delay * 2, self.config.max_retry_s)  # the wait after a further failure

    def _fail(self, reason: str, detail: str) -> None:
        self._failures[reason] += 1
        self._recorder.emit(
            self.name,
            "ship_connect_failed",
            manager=self.config.manager,
            reason=reason,
            detail=escape(detail),
        )

    async def _attempt(self) -> bool:
        """One connection, kept until it ends; True when it completed the SHIP set-up."""
        cfg = self.config
        self._attempts += 1
        try:
            transport = await self._network.connect(cfg.manager_host, cfg.manager_port, source=cfg.host)
        except ConnectionRefused as exc:
            self._fail("connection_refused", str(exc))
            return False
        try:
            tls = await tls_connect(
                transport, self._client_tls, cfg.manager_host, verify_time=self._clock.utcnow
            )
        except HandshakeFailed as exc:
            await trio.aclose_forcefully(transport)
            self._fail(("remote:" if exc.remote else "") + f"tls:{exc.reason}", exc.detail)
            return False
        except TransportError as exc:
            await trio.aclose_forcefully(transport)
            self._fail("connection_lost", str(exc))
            return False
        try:
            ws = await ws_client(
                tls,
                host=f"{cfg.manager_host}:{cfg.manager_port}",
                path=SHIP_PATH,
                subprotocols=(SHIP_SUBPROTOCOL,),
                compression=False,
                max_message_size=self._ship.max_message,
            )
        except UpgradeRejected as exc:
            self._fail(f"upgrade_rejected:{exc.status}", exc.reason)
            return False
        except TransportError as exc:
            cause = _handshake_cause(exc)
            if cause is not None:  # wrapped by the WebSocket layer
                self._fail(("remote:" if cause.remote else "") + f"tls:{cause.reason}", cause.detail)
            else:
                self._fail("connection_lost", str(exc))
            return False
        if ws.subprotocol != SHIP_SUBPROTOCOL:
            await ws.aclose()
            self._fail("no_ship_subprotocol", f"the server chose {ws.subprotocol!r}")
            return False
        conn = ShipConnection("client", self._ship, trusted=True, now=trio.current_time())
        reached = False

        def on_event(event: ShipEvent) -> None:
            nonlocal reached
            if isinstance(event, Connected):
                reached = True
                self._connections += 1
                self._recorder.emit(
                    self.name, "ship_connected", manager=cfg.manager, ship_id=escape(event.peer_id, 80)
                )
            elif isinstance(event, HelloChanged):
                self._recorder.emit(self.name, "ship_hello", manager=cfg.manager, step=event.step)
            elif isinstance(event, Closed):
                self._recorder.emit(
                    self.name,
                    "ship_closed",
                    manager=cfg.manager,
                    reason=event.reason,
                    by=event.by,
                    state=event.state,
                    detail=escape(event.detail),
                )

        self._session = ShipSession(ws, conn, on_event)
        try:
            await self._session.run()
        finally:
            self._session = None
        return reached
