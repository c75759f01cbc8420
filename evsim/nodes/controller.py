"""The Local Controller node: a TLS server towards stations, a TLS client towards the CSMS, a relay in between.

Theory of operation (OCPP-J 2.0.1/2.1 §6, protocol-digest §4). The controller "SHALL work so the Charging
Station doesn't have to behave different" and "so that the CSMS can not notice" it.

* **Listener** (the controller acts as CSMS, §6.5): :meth:`LocalController.run` accepts on its own host and
  port, does TLS with *its own* server certificate (security profiles 2 and 3; profile 3 requires a client
  certificate), then the WebSocket upgrade with the CSMS's gates: the path must carry a valid station identity
  (else 404); profile 1/2 need Basic auth whose user is that identity (else 401; the password is checked here
  only if ``station_passwords`` is given, otherwise the CSMS checks the forwarded credentials); profile 3 uses
  :func:`~evsim.nodes.admission.check_client_certificate` (so another controller may sit below this one);
  the subprotocol is chosen from ``ocpp_versions`` (none: accept and close, OCPP-J §3.2). Sources that fail
  authentication too often get 429 for a while (``auth_budget``). A link whose BootNotification the CSMS has
  not Accepted within ``boot_timeout`` is closed (1008, one ``boot_timeout`` event) with its upstream link. A second link with a connected station's
  identity (``duplicate_identity``, :mod:`evsim.nodes.admission`): by default it is relayed beside the first
  and replaces it (closed with 1008, one ``replaced_connection`` event) once the CSMS Accepted its
  BootNotification; until then it gets no backlog and no own CALLs, and losing its upstream closes it.
  ``"refuse_newer"`` answers HTTP 409 while the first is up. An upstream link the CSMS closes because a newer
  connection replaced it there (1008 "replaced by a newer connection") closes the station's link the same
  way, whatever ``on_upstream_loss`` says: reconnecting would take the identity back.
* **Upstream** (the controller acts as a station, §6.2): "once that connection is up" the controller opens one
  WebSocket to the CSMS per station, *under the station's identity* (same URI path), through
  :func:`~evsim.link.service.connect_service`: the :class:`~evsim.link.service.Service` lists the CSMS endpoints
  (priority failover, OCPP back-off), each with the controller's TLS profile, trust store and - for profile 3 -
  the controller's *own* client certificate (§6.5: it never holds the stations' keys; see
  :mod:`evsim.nodes.admission` for how a CSMS accepts that). Basic auth: the station's own ``Authorization``
  header is forwarded; a station that sent none (profile 3 below) gets ``upstream_passwords`` (or nothing).
  Only the downstream subprotocol is offered, so both links speak the same OCPP version. An endpoint may be
  another controller (chaining). The upgrade happens after the station's, because the WebSocket server decides
  synchronously; an upstream refusal therefore closes the station's WebSocket (1008 for HTTP 401/404, 1013
  otherwise) instead of answering its upgrade with the status.
* **Relay** (:mod:`evsim.nodes.relay_pair`): one nursery per station pair; a reader per side feeds :class:`~evsim.nodes.relay.RelayCore`
  (sans-IO) and writes what it says, so messages travel as text, unvalidated. A reader stops reading while the
  lane it feeds is full, and while what it produced is being written (it awaits the write): back-pressure, so a
  side that never reads holds at most one lane's worth of data here. A writer lock per side keeps frame order.
  A write that makes no progress for the WebSocket's ``send_timeout`` drops that link as not reading
  (:meth:`~evsim.ws.connection.WebSocket.abort`): its reader ends with reason ``peer_not_reading``. While the
  first upstream link is being connected, at most ``max_queue`` station frames are read ahead. A malformed frame is relayed
  like any other and the far endpoint answers it (a CALL with a bad payload gets the CSMS's CALLERROR, a text
  that is not JSON its ``RpcFrameworkError`` for id ``"-1"``) - exactly what a direct station would get.
* **Own CALLs**: :meth:`LocalController.call_station` sends a CALL of the controller's own on a station's link
  (local smart charging, §6.4); its ids never collide with the CSMS's in flight and its answer is not forwarded
  (:mod:`evsim.nodes.relay`). The controller does *not* model its optional own CSMS connection as a station
  without EVSEs (§6.2, P1 §8.3); a scenario can run a :class:`~evsim.nodes.station.Station` with the
  controller's identity for that.
* **Loss coupling** (§6.3): losing the upstream closes the station's WebSocket (1001), so the station goes
  offline and queues; losing the station closes the upstream, so the CSMS sees it offline. The errata exception
  (ERR-201 §4.13, 2025-02: allowed when the controller "can itself answer CS requests and forwards
  transaction-related requests to the CSMS once restored") is ``on_upstream_loss = "keep_station"``: the station
  stays connected; the controller answers its CALLs (Heartbeat with the time; the ``store_and_forward`` actions,
  TransactionEvent by default, with an empty response and into a bounded per-station backlog; other status
  messages with an empty response; anything else with a CALLERROR) and reconnects upstream with the service's
  back-off. On every upstream reconnection (and on a first connection with a non-empty backlog) it first
  sends the station's last BootNotification (the CSMS wants a boot on each new connection, B02.FR.09, and the
  kept station will not boot again) and then the backlog, in order, as own CALLs; station CALLs queue behind
  them. The backlog survives the station's reconnects.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import random
from collections.abc import Mapping
from typing import Any, Literal, TypeAlias

import attrs
import trio
from cryptography import x509

from evsim.clock import SimClock
from evsim.cpu import Cpu
from evsim.errors import (
    ConfigError,
    TransportError,
    failure_reason,
)
from evsim.link.service import EndpointPlanner, Service
from evsim.net.base import Network
from evsim.nodes.acceptor import Acceptor
from evsim.nodes.admission import (
    DUPLICATE_POLICY_CHOICES,
    Admission,
    AuthBudget,
    AuthBudgetConfig,
    BehindController,
    ClientStatus,
    DuplicatePolicy,
    TrustedController,
    admit_station,
    decide_upgrade,
    note_accepted,
    refuse_late_duplicate,
    reject_upgrade,
)
from evsim.nodes.expiry import ExpiryMonitor
from evsim.nodes.relay import (
    STATION,
    RelayStatistics,
)
from evsim.nodes.relay_pair import RelayPair, StationState
from evsim.recorder import Recorder
from evsim.tls.config import Identity, TlsProfile
from evsim.tls.context import ServerTls
from evsim.tls.peer import PeerPolicy
from evsim.tls.stream import TlsInfo
from evsim.tls.trust import TrustStore
from evsim.ws import Accept, Reject, UpgradeRequest, WebSocket

__all__ = [
    "ControllerConfig",
    "ControllerStatistics",
    "LocalController",
    "StationRelayStatistics",
    "UpstreamLossPolicy",
]

log = logging.getLogger("evsim.controller")

UpstreamLossPolicy: TypeAlias = Literal["close_station", "keep_station"]


@attrs.frozen
class ControllerConfig:
    """How a Local Controller behaves.

    Args:
        name: node name in events and logs; also the network host name it connects upstream from.
        host, port: where stations connect (on the network given to :class:`LocalController`).
        path_prefix: OCPP-J endpoint path; stations connect to ``<prefix>/<station-id>``.
        security_profile: towards the stations: 1 (needs ``insecure_allow_plain_ws``), 2 or 3.
        insecure_allow_plain_ws: the explicit opt-in for profile 1 (A00.FR.201).
        tls_profile: the listener's TLS profile.
        identity: the controller's own server certificate (§6.5: its CN is the controller's FQDN).
        client_trust: roots for station client certificates (profile 3; not used with ``pairing``).
        pairing: profile 3 with SHIP-style pairing instead of a CA: the listener takes any self-signed client
            certificate and this server-side peer policy's pairing list decides by SKI (``client_auth =
            "pairing"``: a window, auto-accept, registered SKIs); the admission checks (CN = station id, O)
            still apply. None: the CA check of ``client_trust``.
        organization: the O a direct station's certificate must carry (A00.FR.404).
        behind_controller, trusted_controllers: profile 3 below a chain of controllers (see
            :mod:`evsim.nodes.admission`).
        station_issuers: profile 3: CAs (the station sub-CA) a client certificate's verified chain must go
            through; empty (default): any chain to ``client_trust``.
        client_status: profile 3: the revocation check of a client certificate after the handshake (an OCSP
            query; :data:`evsim.nodes.admission.ClientStatus`); None: only the trust store's CRLs.
        duplicate_identity: a second link for a connected identity: ``"replace_older"`` (default) or
            ``"refuse_newer"`` (see the module docstring).
        auth_budget: failed authentications (401) allowed per source address before 429; None: no limit.
        station_passwords: Basic-auth passwords checked here; None = forward the credentials, the CSMS checks.
        ocpp_versions: subprotocols served, in order of preference.
        compression: accept permessage-deflate on both links (OCPP-J §3.4: a controller SHALL support it).
        upstream: (required, keyword) the CSMS service: endpoints (URL, priority, TLS profile, trust, the controller's client
            identity), failover policy and back-off.
        upstream_passwords: Basic-auth passwords per station for the upstream, used when the station sent none.
        upstream_default_password: the same for stations not in ``upstream_passwords``.
        upstream_connect_attempts: attempts to reach the CSMS for a newly connected station before closing it.
        on_upstream_loss: ``"close_station"`` (§6.3) or ``"keep_station"`` (ERR-201 §4.13 exception).
        store_and_forward: actions answered locally and replayed upstream when restored (keep_station).
        max_backlog: most CALLs kept per station for replay; beyond it, CALLERROR ``InternalError``.
        call_timeout: own CALL timeout, and how long a lane waits for a relayed CALL's answer (s).
        max_queue: CALLs that may wait per lane (back-pressure beyond).
        id_prefix: start of the controller's own message ids (a random part is added per connection).
        max_connections: station links open at once; more are closed at once (``connection_refused``). None
            (default): (the process's soft ``RLIMIT_NOFILE`` minus a reserve) / 2, as every station link needs an
            upstream link too (:mod:`evsim.nodes.acceptor`).
        max_pending_per_address: station connections from one peer address not yet admitted (TLS handshake,
            HTTP upgrade, or no BootNotification the CSMS Accepted yet); more are closed at once. None
            (default): half of ``max_connections``.
        boot_timeout: seconds (trio time) a station link may stay open until the CSMS Accepts one of its
            BootNotifications (counted from the upgrade, across Pending/Rejected boots); then it is closed
            (1008, its upstream link with it) with a ``boot_timeout`` event. Default 180 s, as the CSMS's.
    """

    name: str = "lc"
    host: str = "lc.evsim.test"
    port: int = 443
    path_prefix: str = "/ocpp"
    security_profile: int = 2
    insecure_allow_plain_ws: bool = False
    tls_profile: TlsProfile = attrs.field(factory=TlsProfile)
    identity: Identity | None = None
    client_trust: TrustStore | None = None
    pairing: PeerPolicy | None = attrs.field(default=None, eq=False, repr=False)
    organization: str = "evsim"
    behind_controller: BehindController = "require_station_cert"
    trusted_controllers: tuple[TrustedController, ...] = ()
    station_issuers: tuple[x509.Certificate, ...] = ()
    client_status: ClientStatus | None = attrs.field(default=None, eq=False, repr=False)
    duplicate_identity: DuplicatePolicy = "replace_older"
    auth_budget: AuthBudgetConfig | None = attrs.field(factory=AuthBudgetConfig)
    station_passwords: Mapping[str, str] | None = None
    ocpp_versions: tuple[str, ...] = ("2.0.1", "2.1")
    compression: bool = True
    upstream: Service = attrs.field(kw_only=True)
    upstream_passwords: Mapping[str, str] = attrs.field(factory=dict)
    upstream_default_password: str | None = None
    upstream_connect_attempts: int = 3
    on_upstream_loss: UpstreamLossPolicy = "close_station"
    store_and_forward: tuple[str, ...] = ("TransactionEvent", "SecurityEventNotification")
    max_backlog: int = 1000
    call_timeout: float = 30.0
    max_queue: int = 16
    id_prefix: str = "lc-"
    max_connections: int | None = None
    max_pending_per_address: int | None = None
    boot_timeout: float = 180.0

    def __attrs_post_init__(self) -> None:
        if not self.boot_timeout > 0:
            raise ConfigError(
                "boot_timeout must be > 0",
                path="controller.boot_timeout",
                value=self.boot_timeout,
                fix="use the seconds a station may take to get its BootNotification accepted, e.g. 180",
            )
        if self.security_profile not in (1, 2, 3):
            raise ConfigError(
                "security_profile must be 1, 2 or 3",
                path="controller.security_profile",
                value=self.security_profile,
            )
        if self.security_profile == 1 and not self.insecure_allow_plain_ws:
            raise ConfigError(
                "security profile 1 sends credentials over plain ws://",
                path="controller.security_profile",
                fix="set insecure_allow_plain_ws = true (trusted networks only, A00.FR.201), or use 2 or 3",
            )
        if self.security_profile >= 2 and self.identity is None:
            raise ConfigError(
                "a TLS listener needs the controller's own server certificate (OCPP-J §6.5)",
                path="controller.identity",
                fix="issue the controller a certificate with CN = its FQDN",
            )
        if self.pairing is not None and self.security_profile != 3:
            raise ConfigError(
                "pairing decides on client certificates, which only security profile 3 asks for",
                path="controller.pairing",
                fix="use security_profile = 3, or drop the pairing policy",
            )
        if self.security_profile == 3 and self.client_trust is None and self.pairing is None:
            raise ConfigError(
                "security profile 3 needs roots for the stations' client certificates",
                path="controller.client_trust",
                fix="give the station certificates' root (the CSO root)",
            )
        if self.on_upstream_loss not in ("close_station", "keep_station"):
            raise ConfigError(
                "unknown upstream loss policy",
                path="controller.on_upstream_loss",
                value=self.on_upstream_loss,
                fix="use close_station (OCPP-J §6.3) or keep_station (errata exception)",
            )
        if self.duplicate_identity not in DUPLICATE_POLICY_CHOICES:
            raise ConfigError(
                "unknown duplicate identity policy",
                path="controller.duplicate_identity",
                value=self.duplicate_identity,
                fix="use " + " or ".join(DUPLICATE_POLICY_CHOICES),
            )
        if self.upstream_connect_attempts < 1 or self.max_backlog < 0 or self.max_queue < 1:
            raise ConfigError(
                "upstream_connect_attempts and max_queue must be >= 1, max_backlog >= 0",
                path="controller",
                fix="use e.g. 3, 16 and 1000",
            )
        for limit in ("max_connections", "max_pending_per_address"):
            value = getattr(self, limit)
            if value is not None and value < 1:
                raise ConfigError(
                    f"{limit} must be >= 1",
                    path=f"controller.{limit}",
                    value=value,
                    fix="leave it unset for the default (from the open-file limit)",
                )


@attrs.frozen
class StationRelayStatistics:
    """One station as the controller sees it (across its connections).

    Attributes:
        station_id: the identity.
        connected: its station link is up now.
        upstream_up: its CSMS link is up now.
        upstream_endpoint: the endpoint of the current (or last) CSMS link.
        connections: station links accepted.
        upstream_connects: CSMS links established (first ones and reconnects).
        upstream_reconnects: CSMS links re-established while the station stayed connected (keep_station).
        upstream_losses: CSMS links lost.
        frames_up / frames_down: texts received from the station / from the CSMS.
        answered_locally: station CALLs the controller answered itself.
        backlog: CALLs waiting to be replayed upstream.
        replayed: backlog CALLs the CSMS answered.
        relay: the live relay's counters (None when not connected).
    """

    station_id: str
    connected: bool
    upstream_up: bool
    upstream_endpoint: str | None
    connections: int
    upstream_connects: int
    upstream_reconnects: int
    upstream_losses: int
    frames_up: int
    frames_down: int
    answered_locally: int
    backlog: int
    replayed: int
    relay: RelayStatistics | None


@attrs.frozen
class ControllerStatistics:
    """A snapshot of the controller.

    Attributes:
        name: the node.
        stations_connected: station links up now.
        relays_total: station links accepted in all.
        handshake_failures: listener TLS failures by reason.
        upgrade_rejections: listener upgrade refusals by HTTP status.
        upstream_failures: failed upstream attempts by reason.
        stations: per-station figures.
    """

    name: str
    stations_connected: int
    relays_total: int
    handshake_failures: dict[str, int]
    upgrade_rejections: dict[int, int]
    upstream_failures: dict[str, int]
    stations: dict[str, StationRelayStatistics]


class LocalController:
    """A Local Controller between stations and a CSMS (see the module docstring).

    Args:
        config: behaviour.
        network: where to listen and connect.
        clock: the run's clock (certificate checks, timestamps, back-off).
        recorder: event sink shared by the run.
        rng: seeded randomness (back-off jitter, own id prefixes); seeded from the name when None.

    Raises:
        ConfigError: the listener's TLS settings do not compile.
    """

    def __init__(
        self,
        config: ControllerConfig,
        *,
        network: Network,
        clock: SimClock,
        recorder: Recorder,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.network = network
        self.clock = clock
        self.recorder = recorder
        self.rng = rng if rng is not None else random.Random(f"evsim.controller:{config.name}")
        self.server_tls: ServerTls | None = None
        if config.security_profile >= 2:
            assert config.identity is not None
            self.server_tls = ServerTls.build(
                config.tls_profile,
                config.identity,
                trust=None if config.pairing is not None else config.client_trust,
                client_auth=(
                    "pairing"
                    if config.pairing is not None
                    else "required"
                    if config.security_profile == 3
                    else "none"
                ),
                peer=config.pairing,
            )
        self.upstream: Service = config.upstream
        self.address: tuple[str, int] | None = None
        self.acceptor = Acceptor(
            config.name,
            recorder,
            max_connections=config.max_connections,
            max_pending_per_address=config.max_pending_per_address,
            fds_per_connection=2,
        )
        self.stations: dict[str, StationState] = {}
        self._relays_total = 0
        self._handshake_failures: collections.Counter[str] = collections.Counter()
        self._upgrade_rejections: collections.Counter[int] = collections.Counter()
        #: failed upstream attempts by reason (counted by the relay pairs; ``statistics().upstream_failures``)
        self.upstream_failures: collections.Counter[str] = collections.Counter()
        self._auth_budget = AuthBudget(config.auth_budget) if config.auth_budget is not None else None
        self.cpu: Cpu | None = None
        """Its CPU model in virtual time (:mod:`evsim.cpu`; None: operations cost no time)."""
        self.expiry: ExpiryMonitor | None = None
        """Where its own certificate and its stations' are noted for ``cert_expiring`` (None: not watched)."""

    @property
    def name(self) -> str:
        return self.config.name

    # ---------------------------------------------------------------- serving

    async def run(self, *, task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and relay until cancelled; ``task_status.started`` gets the bound address."""
        listener = await self.network.listen(self.config.host, self.config.port)
        self.address = listener.address
        self.recorder.emit(self.name, "listening", address=f"{self.address[0]}:{self.address[1]}")
        async with listener:
            task_status.started(self.address)
            await self.acceptor.serve(listener, self._handle_connection)

    async def _handle_connection(self, stream: trio.abc.Stream) -> None:
        admission = Admission(stream)
        try:
            if await admit_station(
                admission,
                self.server_tls,
                self._decide,
                node=self.name,
                clock=self.clock,
                recorder=self.recorder,
                failures=self._handshake_failures,
                compression=self.config.compression,
                budget=self._auth_budget,
                rejections=self._upgrade_rejections,
                cpu=self.cpu,
            ):
                assert admission.ws is not None
                decision = admission.decision
                if self.expiry is not None:
                    note_accepted(
                        self.expiry, self.name, self.server_tls, admission.tls_info, decision["station_id"]
                    )
                await self._serve_station(
                    decision["station_id"],
                    admission.ws,
                    decision.get("authorization"),
                    source=admission.source,
                )
        except TransportError as exc:
            self.recorder.emit(self.name, "connection_lost", reason=failure_reason(exc), detail=str(exc))
        finally:
            with trio.CancelScope(shield=True):
                await _aclose_quietly(admission.stream)

    def _decide(self, req: UpgradeRequest, tls_info: TlsInfo | None, out: dict[str, str]) -> Accept | Reject:
        """The station-side upgrade gate (see the module docstring): the shared decision; passwords are checked
        here only with ``station_passwords`` (else forwarded for the CSMS to check), and a station behind a
        trusted controller is checked for Basic auth, not its password."""
        cfg = self.config
        passwords = cfg.station_passwords
        return decide_upgrade(
            req,
            tls_info,
            out,
            reject=functools.partial(reject_upgrade, self.recorder, self.name, self._upgrade_rejections),
            path_prefix=cfg.path_prefix,
            security_profile=cfg.security_profile,
            organization=cfg.organization,
            behind_controller=cfg.behind_controller,
            trusted_controllers=cfg.trusted_controllers,
            station_issuers=cfg.station_issuers,
            client_status=cfg.client_status,
            ocpp_versions=cfg.ocpp_versions,
            password_for=None if passwords is None else passwords.get,
            check_relayed_password=False,
            known=None,
            connected=self._connected,
            refuse_newer=cfg.duplicate_identity == "refuse_newer",
        )

    def _state(self, station_id: str) -> StationState:
        state = self.stations.get(station_id)
        if state is None:
            planner = EndpointPlanner(self.upstream, random.Random(self.rng.getrandbits(64)))
            state = self.stations[station_id] = StationState(station_id, planner)
        return state

    def _connected(self, station_id: str) -> bool:
        state = self.stations.get(station_id)
        return state is not None and state.relay is not None

    async def _serve_station(
        self, station_id: str, ws: WebSocket, authorization: str | None, *, source: str = ""
    ) -> None:
        if self.config.duplicate_identity == "refuse_newer" and self._connected(station_id):
            # another link of the identity got through the upgrade meanwhile
            await refuse_late_duplicate(
                ws, station_id, recorder=self.recorder, node=self.name, rejections=self._upgrade_rejections
            )
            return
        state = self._state(station_id)
        assert ws.subprotocol is not None
        state.connections += 1
        self._relays_total += 1
        relay = RelayPair(self, state, ws, authorization)
        relay.number, relay.source = state.connections, source
        if state.relay is None:
            relay.live = True
            state.relay = relay  # else it waits beside the live one until the CSMS accepts its boot
        self.recorder.emit(self.name, "station_connected", station=station_id, subprotocol=ws.subprotocol)
        state.running += 1
        try:
            await relay.run()
        finally:
            state.running -= 1
            state.boots_accepted += relay.core.station_boots_accepted
            if state.relay is relay:
                state.relay = None
                if relay.core.last_station_boot is not None:
                    state.last_boot = relay.core.last_station_boot
            self._forget_if_never_accepted(state)

    def _forget_if_never_accepted(self, state: StationState) -> None:
        """Drop what the controller kept for an identity the CSMS never accepted once its last link is gone:
        what a peer without credentials leaves behind is bounded by the connection caps, not by how many
        identities it tries (the CSMS does the same with its station records)."""
        if state.running == 0 and state.boots_accepted == 0 and self.stations.get(state.station_id) is state:
            del self.stations[state.station_id]

    def promote(self, relay: RelayPair) -> None:
        """The CSMS accepted ``relay``'s BootNotification: it becomes the station's link, an older one is
        closed with :data:`REPLACED_CLOSE`. Called by the relay pair itself (:mod:`evsim.nodes.relay_pair`)."""
        state = relay.state
        old = state.relay
        relay.live = True
        state.relay = relay
        replaced = state.replaced_upstream  # the CSMS's close of the older link may have come first
        state.replaced_upstream = None
        if old is not None and old is not relay:
            old.replaced = True
            old.cancel_scope.cancel()
            replaced = (old.number, old.source)
        if replaced is not None:
            self.recorder.emit(
                self.name,
                "replaced_connection",
                station=state.station_id,
                old=replaced[0],
                old_source=replaced[1],
                new=relay.number,
                new_source=relay.source,
            )

    # ---------------------------------------------------------------- controller-initiated

    async def call_station(self, station_id: str, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Send a CALL of the controller's own to a connected station and return its response payload.

        The answer is not forwarded to the CSMS, and the id never collides with a CSMS CALL in flight (§6.4).

        Raises:
            KeyError: the station is not connected.
            CallErrorReceived: the station answered with a CALLERROR.
            CallTimeout: no answer within ``call_timeout``.
            TransportError: the station link was lost first.
        """
        state = self.stations.get(station_id)
        if state is None or state.relay is None:
            raise KeyError(f"station {station_id!r} is not connected to {self.name}")
        return await state.relay.own_call(STATION, action, payload)

    # ---------------------------------------------------------------- reporting

    def statistics(self) -> ControllerStatistics:
        """A snapshot of the controller and of every station it has seen."""
        stations = {sid: self._station_statistics(s) for sid, s in self.stations.items()}
        return ControllerStatistics(
            name=self.name,
            stations_connected=sum(s.connected for s in stations.values()),
            relays_total=self._relays_total,
            handshake_failures=dict(self._handshake_failures),
            upgrade_rejections=dict(self._upgrade_rejections),
            upstream_failures=dict(self.upstream_failures),
            stations=stations,
        )

    def _station_statistics(self, s: StationState) -> StationRelayStatistics:
        relay = s.relay
        return StationRelayStatistics(
            station_id=s.station_id,
            connected=relay is not None,
            upstream_up=relay is not None and relay.upstream_ws is not None,
            upstream_endpoint=s.upstream_endpoint,
            connections=s.connections,
            upstream_connects=s.upstream_connects,
            upstream_reconnects=s.upstream_reconnects,
            upstream_losses=s.upstream_losses,
            frames_up=s.frames_up,
            frames_down=s.frames_down,
            answered_locally=s.answered_locally,
            backlog=len(s.backlog),
            replayed=s.replayed,
            relay=relay.core.statistics() if relay is not None else None,
        )


async def _aclose_quietly(stream: trio.abc.AsyncResource) -> None:
    with contextlib.suppress(TransportError, trio.BrokenResourceError, trio.ClosedResourceError):
        await stream.aclose()
