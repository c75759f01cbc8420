"""An EEBus energy manager (HEMS): SHIP over mutual TLS with self-signed certificates, trust by SKI.

Roles
-----
SHIP lets either device open the connection: both announce ``_ship._tcp`` over mDNS and SHIP 12.2.2 keeps
one connection when both dial. In evsim the **energy manager is the SHIP server** and each station with an
energy-manager link is a **SHIP client** (:mod:`evsim.nodes.ship_link`): stations already dial out (to their
CSMS or controller) and hold no listener, and the pairing window is a button on the energy manager, which is
where the TLS layer's pairing listener (``client_auth = "pairing"``) sits. Double connections therefore only
arise when a station reconnects while its old connection lingers: the newer one replaces the older.

Theory of operation
-------------------
:class:`EnergyManager` listens (``wss://host:port/ship/``). Each accepted connection runs, in its own task:

1. the TLS handshake with :func:`ship_profile` and a pairing listener: a client certificate is required, any
   self-signed one reaches :func:`evsim.tls.pairing.decide` through the manager's
   :class:`~evsim.tls.peer.PeerPolicy`, which trusts, pairs (inside a window, with ``auto_accept``, or a
   registered SKI's first connection), records a pairing request, or refuses — an impostor presenting a
   known device id with another key is refused ``pairing_refused:unknown`` outside a window. Those decisions
   are recorded by the policy's event sink (``paired``, ``pairing_requested``, ``pairing_refused``,
   ``cert_invalid``, ``unpaired``) with the device, its SKI and the reason;
2. the WebSocket opening handshake, which must offer subprotocol ``ship`` (else HTTP 400);
3. the SHIP set-up (:class:`evsim.ship.ShipConnection`, role ``server``), then the data phase until either
   side closes. The TLS layer already decided trust, so the hello is ``ready`` at once, except for a device
   the policy paired in this very handshake when ``confirm_s`` > 0: the user still has to confirm it, so the
   hello stays ``pending`` that long (the core asks the station for a prolongation when its wait would
   run out) and turns ``ready`` when confirmed (``ship_hello`` events ``awaiting_confirmation``,
   ``confirmed``).

Every refused connection yields one event with the peer and the reason: the policy's event for a pairing
decision, else ``ship_refused`` (TLS failures other than pairing, a missing subprotocol, a broken upgrade);
a SHIP set-up that fails ends in ``ship_closed`` with the core's reason (``bad_message``, ``hello_timeout``,
``unexpected_message``...). Operator actions: :meth:`EnergyManager.open_pairing_window`,
:meth:`~EnergyManager.register`, :meth:`~EnergyManager.unpair` (also ends that device's open connection:
hello ``aborted`` or SHIP close), all recorded.
"""

from __future__ import annotations

import collections

import attrs
import trio

from evsim.clock import SimClock
from evsim.errors import HandshakeFailed, TransportError, WebSocketError
from evsim.net.base import Network, format_address, remote_address
from evsim.nodes.acceptor import Acceptor, connection_admitted
from evsim.nodes.ship_session import SHIP_SUBPROTOCOL, ShipSession, ship_profile
from evsim.pki import CertKey, ski
from evsim.recorder import Recorder
from evsim.ship import Closed, Connected, HelloChanged, ShipConfig, ShipConnection, ShipEvent
from evsim.text import escape
from evsim.tls import Identity, ServerTls, TlsProfile, tls_accept
from evsim.tls.pairing import PeerTrust
from evsim.tls.peer import PeerEvent, PeerPolicy
from evsim.ws import Accept, Reject, UpgradeRequest, ws_server

__all__ = [
    "DEFAULT_SHIP_PORT",
    "EnergyManager",
    "EnergyManagerConfig",
    "EnergyManagerStatistics",
    "record_peer_event",
]

_MAX_JUST_PAIRED = 1024
"""SKIs remembered between a pairing in the TLS handshake and the SHIP set-up of the same connection."""
DEFAULT_SHIP_PORT = 4711
"""eebus-go's ``defaultPort`` (``protocol-digest.md`` §8); SHIP itself announces the port over mDNS."""


def record_peer_event(recorder: Recorder, node: str, event: PeerEvent) -> None:
    """Record one TLS peer-trust event (pairing decision, unpairing) as a node event with its side (``server``:
    the peer dialled this node), SKI and reason."""
    data: dict[str, object] = {"device": escape(event.peer, 80), "side": event.side}
    if event.ski is not None:
        data["ski"] = event.ski
    if event.reason is not None:
        data["reason"] = event.reason
    if event.detail:
        data["detail"] = escape(event.detail)
    recorder.emit(node, event.event, **data)


@attrs.frozen
class EnergyManagerConfig:
    """Settings of one energy manager.

    Attributes:
        name: node name (events).
        host: host it listens on.
        identity: its self-signed SHIP certificate and key (:func:`evsim.pki.issue_self_signed`).
        port: listening port.
        pairing: the initial trust: registered SKIs, ``auto_accept``, the window length.
        profile: TLS settings (:func:`~evsim.nodes.ship_session.ship_profile`).
        ship_id: its SHIP id (``accessMethods``); default: the name.
        max_connections: connections open at once.
        confirm_s: the user's confirmation of a device paired by this very connection: for this long its
            SHIP hello stays ``pending`` (with prolongation requests when it lasts), then ``ready``. 0: none
            (hello ``ready`` at once).
    """

    name: str
    host: str
    identity: CertKey
    port: int = DEFAULT_SHIP_PORT
    pairing: PeerTrust = attrs.field(factory=PeerTrust)
    profile: TlsProfile = attrs.field(factory=ship_profile)
    ship_id: str | None = None
    max_connections: int = 256
    confirm_s: float = attrs.field(
        default=0.0, validator=[attrs.validators.ge(0), attrs.validators.le(86_400)]
    )


@attrs.frozen
class EnergyManagerStatistics:
    """A snapshot of an energy manager.

    Attributes:
        connected: SHIP connections in the data phase now.
        accepted: connections that completed the SHIP set-up, ever.
        refused: refused connections by reason (TLS, WebSocket, pairing).
        closed: ended SHIP connections by reason.
        paired / pending / denied: entries of the pairing list by state.
        window_open: whether a pairing window is open.
        address: the listening address, once listening.
    """

    connected: int
    accepted: int
    refused: dict[str, int]
    closed: dict[str, int]
    paired: int
    pending: int
    denied: int
    window_open: bool
    address: tuple[str, int] | None


@attrs.define
class _Peer:
    ski: str
    device: str
    address: str
    session: ShipSession


class EnergyManager:
    """A HEMS that pairs with stations over SHIP (see the module doc).

    Args:
        config: the settings.
        network: where it listens.
        clock: the run's clock (certificate times, pairing windows).
        recorder: where events go.
    """

    def __init__(
        self, config: EnergyManagerConfig, network: Network, clock: SimClock, recorder: Recorder
    ) -> None:
        self.config = config
        self.name = config.name
        self._network = network
        self._clock = clock
        self._recorder = recorder
        self.policy = PeerPolicy(
            side="server", pairing=config.pairing, sink=self._peer_event, name=config.name
        )
        self._server_tls = ServerTls.build(
            config.profile, Identity.from_cert_key(config.identity), client_auth="pairing", peer=self.policy
        )
        self._ship = ShipConfig(config.ship_id or config.name)
        self._acceptor = Acceptor(config.name, recorder, max_connections=config.max_connections)
        self._peers: dict[str, _Peer] = {}
        self._just_paired: dict[
            str, None
        ] = {}  # SKIs the policy paired in a handshake under way (ordered set)
        self._accepted = 0
        self._refused: collections.Counter[str] = collections.Counter()
        self._closed: collections.Counter[str] = collections.Counter()
        self.address: tuple[str, int] | None = None

    @property
    def ski(self) -> str:
        """This manager's SHIP identity (its certificate's SKI, 40 hex digits)."""
        return ski(self.config.identity.cert).hex()

    def statistics(self) -> EnergyManagerStatistics:
        pairing = self.policy.state.pairing
        peers = pairing.peers if pairing is not None else ()
        states = collections.Counter(p.state for p in peers)
        return EnergyManagerStatistics(
            connected=sum(p.session.conn.state == "connected" for p in self._peers.values()),
            accepted=self._accepted,
            refused=dict(self._refused),
            closed=dict(self._closed),
            paired=states["trusted"],
            pending=states["pending"],
            denied=states["denied"],
            window_open=pairing is not None and pairing.window_open(self._clock.utcnow()),
            address=self.address,
        )

    # ---------------------------------------------------------------- operator actions

    def open_pairing_window(self) -> None:
        """Open a pairing window of ``pairing.pairing_window_s`` (the push button); recorded."""
        self.policy.open_pairing_window(now=self._clock.utcnow())
        pairing = self.policy.state.pairing
        until = pairing.window_until if pairing is not None else None
        self._recorder.emit(
            self.name, "pairing_window_opened", until=until.isoformat() if until is not None else None
        )

    def close_pairing_window(self) -> None:
        """Close the pairing window now; recorded."""
        self.policy.close_pairing_window()
        self._recorder.emit(self.name, "pairing_window_closed")

    def register(self, ski_hex: str, device_id: str | None = None) -> None:
        """Trust a device by its SKI (the installer typed or scanned it)."""
        self.policy.register(ski_hex, now=self._clock.utcnow(), device_id=device_id)

    def unpair(self, ski_hex: str) -> None:
        """Unpair a device: refused from now on (recorded ``unpaired``); its open connection ends.

        Raises:
            ConfigError: no entry has this SKI.
        """
        self.policy.unpair(ski_hex, now=self._clock.utcnow())
        key = ski_hex.strip().replace(":", "").lower()
        peer = self._peers.get(key)
        if peer is not None:
            peer.session.deny("unpaired by the operator")

    def device_ski(self, device_id: str) -> str | None:
        """The SKI of the trusted or pending entry for ``device_id`` (the certificate CN), or None."""
        pairing = self.policy.state.pairing
        for peer in pairing.peers if pairing is not None else ():
            if peer.device_id == device_id and peer.state != "denied":
                return peer.ski
        return None

    # ---------------------------------------------------------------- serving

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve SHIP connections until cancelled."""
        listener = await self._network.listen(self.config.host, self.config.port)
        self.address = listener.address
        try:
            self._recorder.emit(
                self.name, "ship_listening", address=format_address(listener.address), ski=self.ski
            )
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._acceptor.serve, listener, self._serve)
                task_status.started()
        finally:
            for peer in list(self._peers.values()):
                peer.session.conn.transport_lost("the energy manager stopped")
            with trio.CancelScope(shield=True):
                await listener.aclose()

    def _peer_event(self, event: PeerEvent) -> None:
        record_peer_event(self._recorder, self.name, event)
        if event.event == "paired" and event.ski is not None and event.side == "server":
            self._just_paired[event.ski] = None
            while len(self._just_paired) > _MAX_JUST_PAIRED:  # handshakes that failed after pairing
                del self._just_paired[next(iter(self._just_paired))]

    def _refuse(self, address: str, reason: str, detail: str = "") -> None:
        self._refused[reason] += 1
        self._recorder.emit(self.name, "ship_refused", peer=address, reason=reason, detail=escape(detail))

    async def _serve(self, transport: trio.abc.Stream) -> None:
        remote = remote_address(transport)
        address = format_address(remote) if remote is not None else "?"
        try:
            tls = await tls_accept(transport, self._server_tls, verify_time=self._clock.utcnow)
        except HandshakeFailed as exc:
            await trio.aclose_forcefully(transport)
            reason = f"tls:{exc.reason}"
            if exc.reason.startswith(("pairing_refused:", "cert_invalid:")):
                self._refused[reason] += 1  # the policy's event already said so, with the SKI
            else:
                self._refuse(address, reason, exc.detail)
            return
        except TransportError as exc:
            await trio.aclose_forcefully(transport)
            self._refuse(address, "connection_lost", str(exc))
            return
        leaf = tls.info.peer_chain[0]  # "pairing" requires a client certificate
        peer_ski = ski(leaf).hex()
        device = escape(self._device_of(peer_ski), 80)
        try:
            ws = await ws_server(
                tls, self._decide, compression=False, max_message_size=self._ship.max_message
            )
        except (WebSocketError, TransportError) as exc:
            self._refuse(address, "websocket", str(exc))
            return
        if ws is None:
            self._refuse(address, "no_ship_subprotocol", "the client did not offer the ship subprotocol")
            return
        connection_admitted()
        confirming = self._just_paired.pop(peer_ski, 0) is None and self.config.confirm_s > 0
        conn = ShipConnection("server", self._ship, trusted=not confirming, now=trio.current_time())
        session = ShipSession(ws, conn, lambda ev: self._ship_event(ev, peer_ski, device))
        old = self._peers.get(peer_ski)
        if old is not None:  # SHIP 12.2.2: one connection per device; the newer replaces the older
            old.session.close("removedConnection")
        mine = _Peer(peer_ski, device, address, session)
        self._peers[peer_ski] = mine
        try:
            async with trio.open_nursery() as nursery:
                if confirming:
                    nursery.start_soon(self._confirm, session, peer_ski, device)
                await session.run()
                nursery.cancel_scope.cancel()
        finally:
            if self._peers.get(peer_ski) is mine:
                del self._peers[peer_ski]

    async def _confirm(self, session: ShipSession, peer_ski: str, device: str) -> None:
        """The user confirms a newly paired device after ``confirm_s``: its hello turns ``ready``."""
        self._recorder.emit(
            self.name, "ship_hello", device=device, ski=peer_ski, step="awaiting_confirmation"
        )
        await trio.sleep(self.config.confirm_s)
        if session.conn.state == "hello":
            self._recorder.emit(self.name, "ship_hello", device=device, ski=peer_ski, step="confirmed")
            session.trust()

    def _device_of(self, peer_ski: str) -> str:
        pairing = self.policy.state.pairing
        entry = pairing.get(peer_ski) if pairing is not None else None
        return entry.device_id if entry is not None and entry.device_id else peer_ski

    @staticmethod
    def _decide(request: UpgradeRequest) -> Accept | Reject:
        if SHIP_SUBPROTOCOL in request.subprotocols:
            return Accept(subprotocol=SHIP_SUBPROTOCOL)
        return Reject(400, "SHIP needs the WebSocket subprotocol 'ship' (SHIP 10.2)")

    def _ship_event(self, event: ShipEvent, peer_ski: str, device: str) -> None:
        if isinstance(event, Connected):
            self._accepted += 1
            self._recorder.emit(
                self.name, "ship_connected", device=device, ski=peer_ski, ship_id=escape(event.peer_id, 80)
            )
        elif isinstance(event, Closed):
            self._closed[event.reason] += 1
            self._recorder.emit(
                self.name,
                "ship_closed",
                device=device,
                ski=peer_ski,
                reason=event.reason,
                by=event.by,
                state=event.state,
                detail=escape(event.detail),
            )
        elif isinstance(event, HelloChanged):
            self._recorder.emit(self.name, "ship_hello", device=device, ski=peer_ski, step=event.step)
