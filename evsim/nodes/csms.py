"""The CSMS node: accepts stations over TLS + WebSocket and answers OCPP 2.0.1 / 2.1.

Theory of operation. :meth:`Csms.run` listens on its :class:`~evsim.net.base.Network` and handles each
connection in its own task of one nursery. A connection goes through three gates, each of which can refuse it
with a specific reason (recorded as an event and logged), without disturbing any other station:

1. TLS (security profiles 2 and 3): handshake at the simulation's time; profile 3 requires a client
   certificate chaining to the CSMS root.
2. WebSocket upgrade: the path must carry a valid station identity (an OCPP identifierString of at most 48
   characters without ``:``, else HTTP 404), Basic auth must match for profiles 1 and 2 (else 401), and for
   profile 3 the client certificate's CN must be the station identity and its O the operator's organization
   (A00.FR.404/405, else 401 — the status is not specified by OCPP); a certificate whose ExtendedKeyUsage
   lacks clientAuth, or (with ``station_issuers``) that is not issued through the station sub-CA, is refused
   too. An address that failed authentication too often is refused with 429 for a while (``auth_budget``).
   Stations behind a Local Controller arrive with the *controller's* certificate; ``behind_controller``
   decides whether they are refused or identified by path + Basic auth (:mod:`evsim.nodes.admission`,
   docs/local-controllers.md).
   No common OCPP subprotocol: accept without one, then close at once (OCPP-J §3.2).
3. OCPP: every payload is schema-checked by the RPC core; before a connection is Accepted, anything but
   BootNotification gets a SecurityError CALLERROR (B02.FR.09) and a ``bad_input`` event. Acceptance belongs to
   the connection, not to the station record.

One connection per identity (``duplicate_identity``, :mod:`evsim.nodes.admission`): by default a second
connection with the identity of a connected station replaces the first only once its own BootNotification
is Accepted; the first is then closed with 1008 "replaced by a newer connection" and one
``replaced_connection`` event names both connections (number and source address). Until then it runs beside
the first without disturbing it, and CSMS-initiated CALLs go to the first. ``"refuse_newer"`` refuses the
second connection with HTTP 409 instead, as long as the first is up.

Per-station state (:class:`StationRecord`) survives reconnects: boots, status, transactions with their seqNos
(duplicates from retries are detected and counted, never double-counted), security events. Several CSMS
endpoints of one operator (a primary and a secondary a station fails over between) may share one ``store``:
a TransactionEvent resent to the other endpoint after its response was lost is then recognised as a
duplicate (same transactionId and seqNo) and acknowledged idempotently.

Numbers a station sends are range-checked against :mod:`evsim.ocpp.limits` before anything is recorded
(seqNo, evseId, connectorId, meter values): a value out of range is answered with CALLERROR
``PropertyConstraintViolation`` and recorded as one ``value_refused`` event; the station's other messages and
every other station are not affected. Refusals are recorded per connection up to :data:`BAD_INPUT_EVENTS`
(:class:`InputLog`): a peer sending nothing but bad frames or values cannot flood the log.

A station that moved up to a higher security profile (A05, :mod:`evsim.nodes.csms_upgrade`) is refused
below it from then on by every endpoint sharing its record (HTTP 401, A05.FR.07). The records kept per
station and per connection, and the bounds on their memory, are :mod:`evsim.nodes.csms_records`.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import functools
import logging
import math
from collections.abc import Mapping
from typing import Any

import attrs
import trio
from cryptography import x509

from evsim.clock import SimClock, isoformat
from evsim.cpu import Cpu
from evsim.errors import (
    ConfigError,
    OcppError,
    TransportError,
    failure_reason,
)
from evsim.net.base import Network
from evsim.nodes.acceptor import DEFAULT_MAX_HANDSHAKES, Acceptor, connection_admitted, current_peer
from evsim.nodes.admission import (
    BEHIND_CONTROLLER_CHOICES,
    DUPLICATE_POLICY_CHOICES,
    REPLACED_CLOSE,
    Admission,
    AuthBudget,
    AuthBudgetConfig,
    BehindController,
    ClientStatus,
    DuplicatePolicy,
    TrustedController,
    admit_station,
    common_name,
    decide_upgrade,
    note_accepted,
    refuse_late_duplicate,
    reject_upgrade,
)
from evsim.nodes.csms_certs import CsmsCertificates, CsrSigner, SigningSettings
from evsim.nodes.csms_records import (
    MAX_CONNECTORS,
    MAX_TRANSACTIONS_KEPT,
    SECURITY_EVENTS_KEPT,
    InputLog,
    StationConnection,
    StationRecord,
    TransactionRecord,
    make_live,
)
from evsim.nodes.expiry import ExpiryMonitor
from evsim.ocpp.limits import (
    CONNECTOR_ID,
    ENERGY_REGISTER_WH,
    EVSE_ID,
    SAMPLED_VALUE,
    SEQ_NO,
    Bound,
    OutOfRange,
)
from evsim.ocpp.rpc import RpcConnection
from evsim.ocpp.session import OcppSession
from evsim.ocpp.versions import version_for
from evsim.recorder import Recorder
from evsim.tls.context import ServerTls
from evsim.tls.stream import TlsInfo
from evsim.toml_table import choices_fix
from evsim.ws import Accept, Reject, UpgradeRequest, WebSocket

log = logging.getLogger("evsim.csms")

_ENERGY = "Energy.Active.Import.Register"


@attrs.frozen
class CsmsConfig:
    """How the CSMS behaves.

    Args:
        name: node name in events and logs.
        host, port: where to listen (on the network given to :class:`Csms`).
        path_prefix: OCPP-J endpoint path; stations connect to ``<prefix>/<station-id>``.
        security_profile: 1 (plain ws + Basic auth; needs ``insecure_allow_plain_ws``), 2 (TLS + Basic auth),
            3 (mutual TLS).
        insecure_allow_plain_ws: the explicit opt-in for profile 1 (OCPP A00.FR.201: trusted networks only).
        ocpp_versions: subprotocols served, in the CSMS's order of preference.
        heartbeat_interval: the ``interval`` returned in BootNotificationResponse (s).
        organization: operator name; profile 3 requires the station certificate's O to equal it.
        passwords: Basic-auth password per station identity (profiles 1 and 2).
        default_password: password accepted for any station not in ``passwords`` (None: only listed ones).
        accept_unknown_stations: False answers HTTP 404 to identities not in ``passwords``.
        compression: offer permessage-deflate (OCPP-J §3.4: a CSMS SHALL support it).
        call_timeout: message timeout for CSMS-initiated calls (s).
        authorize_unknown_tokens: Accepted for any idToken not in ``id_tokens``; else Invalid.
        id_tokens: idToken -> AuthorizationStatus.
        behind_controller: profile 3, a TLS client certificate that is not the station's own (a Local
            Controller relaying it, OCPP-J §6.5): ``"require_station_cert"`` refuses it (401);
            ``"trust_controller"`` accepts a certificate listed in ``trusted_controllers`` and identifies the
            station by the URL path plus Basic auth (``passwords`` / ``default_password``), skipping the
            serialNumber-vs-CN check of B01.FR.11/12 for it. See :mod:`evsim.nodes.admission`.
        trusted_controllers: the controllers ``"trust_controller"`` accepts (O, CN, optionally their stations).
        max_connections: connections open at once; more are closed at once (``connection_refused``). None
            (default): the process's soft ``RLIMIT_NOFILE`` minus a reserve (:mod:`evsim.nodes.acceptor`).
        max_pending_per_address: connections from one peer address not yet admitted (TLS, HTTP upgrade, or
            no Accepted BootNotification yet); more are closed at once. None (default): half of
            ``max_connections`` (admitted stations do not count, so a fleet behind one address is not refused).
        max_handshakes: connections in their TLS handshake at once; further connections wait in the listen
            backlog until one finishes (:mod:`evsim.nodes.acceptor`). Default
            :data:`~evsim.nodes.acceptor.DEFAULT_MAX_HANDSHAKES`; None: no limit.
        boot_timeout: seconds (trio time) a WebSocket connection may stay open without an Accepted
            BootNotification; then it is closed (1008) with a ``boot_timeout`` event. Measured per connection
            from the upgrade to the first Accepted boot, across Pending/Rejected boots a station resends (B02).
            Default 180 s: several BootNotification retries of an honest station that is kept Pending.
        station_issuers: profile 3: CAs (the station sub-CA) a client certificate's verified chain must go
            through; empty (default): any chain to the client-certificate roots.
        client_status: profile 3: the revocation check of a client certificate after the handshake (an OCSP
            query; :data:`evsim.nodes.admission.ClientStatus`); None: only the trust store's CRLs.
        duplicate_identity: a second connection for a connected identity: ``"replace_older"`` (default: it
            replaces the first once its BootNotification is Accepted) or ``"refuse_newer"`` (HTTP 409 while
            the first is up).
        auth_budget: failed authentications (401) allowed per source address before it is refused with 429
            for a cool-down; None: no limit.
        signing: how many station CSRs are signed at once and may wait (:mod:`evsim.nodes.csms_certs`).
    """

    name: str = "csms"
    host: str = "localhost"
    port: int = 8443
    path_prefix: str = "/ocpp"
    security_profile: int = 2
    insecure_allow_plain_ws: bool = False
    ocpp_versions: tuple[str, ...] = ("2.0.1", "2.1")
    heartbeat_interval: int = 300
    organization: str = "evsim"
    passwords: Mapping[str, str] = attrs.field(factory=dict)
    default_password: str | None = None
    accept_unknown_stations: bool = True
    compression: bool = True
    call_timeout: float = 30.0
    authorize_unknown_tokens: bool = True
    id_tokens: Mapping[str, str] = attrs.field(factory=dict)
    behind_controller: BehindController = "require_station_cert"
    trusted_controllers: tuple[TrustedController, ...] = ()
    max_connections: int | None = None
    max_pending_per_address: int | None = None
    max_handshakes: int | None = DEFAULT_MAX_HANDSHAKES
    boot_timeout: float = 180.0
    station_issuers: tuple[x509.Certificate, ...] = ()
    client_status: ClientStatus | None = attrs.field(default=None, eq=False, repr=False)
    duplicate_identity: DuplicatePolicy = "replace_older"
    auth_budget: AuthBudgetConfig | None = attrs.field(factory=AuthBudgetConfig)
    signing: SigningSettings = attrs.field(factory=SigningSettings)

    def __attrs_post_init__(self) -> None:
        if self.security_profile not in (1, 2, 3):
            raise ConfigError(
                "security_profile must be 1, 2 or 3",
                path="csms.security_profile",
                value=self.security_profile,
            )
        for limit in ("max_connections", "max_pending_per_address", "max_handshakes"):
            value = getattr(self, limit)
            if value is not None and value < 1:
                raise ConfigError(
                    f"{limit} must be >= 1", path=f"csms.{limit}", value=value, fix="or None for the default"
                )
        if not self.boot_timeout > 0:
            raise ConfigError("boot_timeout must be > 0", path="csms.boot_timeout", value=self.boot_timeout)
        if self.duplicate_identity not in DUPLICATE_POLICY_CHOICES:
            raise ConfigError(
                "unknown duplicate_identity policy",
                path="csms.duplicate_identity",
                value=self.duplicate_identity,
                fix=choices_fix(self.duplicate_identity, DUPLICATE_POLICY_CHOICES),
            )
        if self.behind_controller not in BEHIND_CONTROLLER_CHOICES:
            raise ConfigError(
                "unknown behind_controller policy",
                path="csms.behind_controller",
                value=self.behind_controller,
                fix=choices_fix(self.behind_controller, BEHIND_CONTROLLER_CHOICES),
            )


@attrs.frozen
class CsmsStatistics:
    stations_known: int
    stations_connected: int
    stations_accepted: int
    connections_total: int
    handshake_failures: dict[str, int]
    upgrade_rejections: dict[int, int]
    messages: dict[str, int]
    transactions_started: int
    transactions_ended: int
    duplicate_tx_events: int
    tls_versions: dict[str, int]
    tls_suites: dict[str, int]


class Csms:
    """A CSMS serving OCPP over WebSocket over TLS on a :class:`Network`.

    Args:
        config: behaviour.
        network: where to listen.
        server_tls: compiled TLS server configuration (None only for security profile 1).
        clock: the run's clock (certificate checks and OCPP timestamps use its simulation time).
        recorder: event sink shared by the run.
        store: per-station records shared with other CSMS endpoints of the same operator (None: its own).
            Statistics of nodes sharing a store count the shared records in each node.
        signer: the CA station CSRs are signed with (:mod:`evsim.nodes.csms_certs`; None: SignCertificate is
            answered Rejected).
    """

    def __init__(
        self,
        config: CsmsConfig,
        *,
        network: Network,
        server_tls: ServerTls | None,
        clock: SimClock,
        recorder: Recorder,
        store: dict[str, StationRecord] | None = None,
        signer: CsrSigner | None = None,
    ) -> None:
        if config.security_profile == 1 and not config.insecure_allow_plain_ws:
            raise ConfigError(
                "security profile 1 sends credentials over plain ws://",
                path="csms.security_profile",
                fix="set insecure_allow_plain_ws=True (only on trusted networks, OCPP A00.FR.201), or use 2 or 3",
            )
        if config.security_profile >= 2 and server_tls is None:
            raise ConfigError(
                f"security profile {config.security_profile} needs a TLS server configuration",
                path="csms.server_tls",
                fix="pass server_tls",
            )
        self.config = config
        self.network = network
        self.server_tls = server_tls
        self.clock = clock
        self.recorder = recorder
        self.stations: dict[str, StationRecord] = {} if store is None else store
        self.address: tuple[str, int] | None = None
        self.acceptor = Acceptor(
            config.name,
            recorder,
            max_connections=config.max_connections,
            max_pending_per_address=config.max_pending_per_address,
            max_handshakes=config.max_handshakes,
        )
        self._connections_total = 0
        self._handshake_failures: collections.Counter[str] = collections.Counter()
        self._upgrade_rejections: collections.Counter[int] = collections.Counter()
        self._tls_versions: collections.Counter[str] = collections.Counter()
        self._tls_suites: collections.Counter[str] = collections.Counter()
        self._auth_budget = AuthBudget(config.auth_budget) if config.auth_budget is not None else None
        self.cpu: Cpu | None = None
        """Its CPU model in virtual time (:mod:`evsim.cpu`; None: operations cost no time)."""
        self.expiry: ExpiryMonitor | None = None
        """Where its own certificate and its stations' are noted for ``cert_expiring`` (None: not watched)."""
        #: running totals for cheap periodic sampling: "messages", "tx_started", "tx_ended"
        self.totals: collections.Counter[str] = collections.Counter()
        #: station id -> action -> CALLs this endpoint received (``stations`` may be shared with other endpoints)
        self.received: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        self._dropped_messages: collections.Counter[str] = collections.Counter()  # of records dropped
        self.certificates = CsmsCertificates(self, signer, config.signing)
        """Signs station CSRs; sends TriggerMessage and the certificate management messages."""

    # ---------------------------------------------------------------- serving

    async def run(self, *, task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve until cancelled; ``task_status.started`` gets the bound address."""
        listener = await self.network.listen(self.config.host, self.config.port)
        self.address = listener.address
        self.recorder.emit(self.config.name, "listening", address=f"{self.address[0]}:{self.address[1]}")
        async with listener, trio.open_nursery() as nursery:
            if self.certificates.signer is not None:
                nursery.start_soon(self.certificates.run)
            task_status.started(self.address)
            await self.acceptor.serve(listener, self._handle_connection)
            nursery.cancel_scope.cancel()

    async def _handle_connection(self, stream: trio.abc.Stream) -> None:
        self._connections_total += 1
        name = self.config.name
        admission = Admission(stream)
        try:
            if await admit_station(
                admission,
                self.server_tls,
                self._decide,
                node=name,
                clock=self.clock,
                recorder=self.recorder,
                failures=self._handshake_failures,
                compression=self.config.compression,
                on_tls=self._count_tls,
                budget=self._auth_budget,
                rejections=self._upgrade_rejections,
                cpu=self.cpu,
            ):
                assert admission.ws is not None
                decision = admission.decision
                if self.expiry is not None:
                    note_accepted(
                        self.expiry,
                        self.config.name,
                        self.server_tls,
                        admission.tls_info,
                        decision["station_id"],
                    )
                await self._serve_station(
                    decision["station_id"],
                    admission.ws,
                    admission.tls_info,
                    decision.get("controller"),
                    source=admission.source,
                )
        except (TransportError, OcppError) as exc:
            self.recorder.emit(name, "connection_lost", reason=failure_reason(exc), detail=str(exc))
        finally:
            with trio.CancelScope(shield=True):
                await _aclose_quietly(admission.stream)

    def _count_tls(self, info: TlsInfo) -> None:
        self._tls_versions[info.version] += 1
        self._tls_suites[info.cipher_iana] += 1

    def _decide(self, req: UpgradeRequest, tls_info: TlsInfo | None, out: dict[str, str]) -> Accept | Reject:
        """The HTTP upgrade gate (see module doc): the shared decision, with the CSMS's own password table,
        unknown-identity check and password check of stations behind a trusted controller."""
        cfg = self.config
        decision = decide_upgrade(
            req,
            tls_info,
            out,
            reject=functools.partial(reject_upgrade, self.recorder, cfg.name, self._upgrade_rejections),
            path_prefix=cfg.path_prefix,
            security_profile=cfg.security_profile,
            organization=cfg.organization,
            behind_controller=cfg.behind_controller,
            trusted_controllers=cfg.trusted_controllers,
            station_issuers=cfg.station_issuers,
            client_status=cfg.client_status,
            ocpp_versions=cfg.ocpp_versions,
            password_for=lambda sid: cfg.passwords.get(sid, cfg.default_password),
            check_relayed_password=True,
            known=None
            if cfg.accept_unknown_stations
            else lambda sid: sid in cfg.passwords or sid in self.stations,
            connected=self._connected,
            refuse_newer=cfg.duplicate_identity == "refuse_newer",
        )
        rec = self.stations.get(out.get("station_id", ""))
        if isinstance(decision, Accept) and rec is not None and cfg.security_profile < rec.security_floor:
            return reject_upgrade(  # A05.FR.07: never the lower profile again after an upgrade
                self.recorder,
                cfg.name,
                self._upgrade_rejections,
                401,
                f"security profile {cfg.security_profile} is below the station's {rec.security_floor}",
                rec.station_id,
            )
        return decision

    def _connected(self, station_id: str) -> bool:
        rec = self.stations.get(station_id)
        return rec is not None and rec.connection is not None

    async def _serve_station(
        self,
        station_id: str,
        ws: WebSocket,
        tls_info: TlsInfo | None,
        controller: str | None = None,
        *,
        source: str = "",
    ) -> None:
        name = self.config.name
        if self.config.duplicate_identity == "refuse_newer" and self._connected(station_id):
            # another connection of the identity got through the upgrade meanwhile
            await refuse_late_duplicate(
                ws, station_id, recorder=self.recorder, node=name, rejections=self._upgrade_rejections
            )
            return
        rec = self.stations.get(station_id)
        if rec is None:
            rec = self.stations[station_id] = StationRecord(station_id=station_id)
        assert ws.subprotocol is not None
        version = version_for(ws.subprotocol)
        rec.connections += 1
        serial = None
        if tls_info is not None and tls_info.peer_chain and controller is None:
            serial = common_name(tls_info.peer_chain[0])
        inputs = InputLog(self.recorder, name, station_id)
        conn = StationConnection(rec.connections, source, ws, tls_info, controller, serial, inputs)
        rpc = RpcConnection(version=version, call_timeout=self.config.call_timeout)

        # B02: until its first Accepted boot a connection is pending; it has boot_timeout to get there: the
        # deadline of the connection's scope, which otherwise only its replacement cancels (one scope less)
        scope = conn.cancel_scope
        scope.deadline = trio.current_time() + self.config.boot_timeout

        async def handler(action: str, payload: dict[str, Any]) -> dict[str, Any]:
            if action != "BootNotification":  # answered without waiting: no coroutine of _handle_call
                return self._answer_call(rec, conn, action, payload)
            response = await self._handle_call(rec, conn, action, payload)
            if response.get("status") == "Accepted":
                scope.deadline = math.inf
                connection_admitted()
            return response

        session = conn.session = OcppSession(
            ws, rpc, handler, on_event=inputs, cpu=self.cpu, cpu_owner=station_id
        )
        if rec.connection is None:
            make_live(rec, conn)  # else it waits beside the live one until its own boot is Accepted
        self.recorder.emit(
            name,
            "station_connected",
            station=station_id,
            subprotocol=ws.subprotocol,
            tls_version=tls_info.version if tls_info else "none",
            suite=tls_info.cipher_iana if tls_info else "none",
            group=(tls_info.group or "") if tls_info else "",
            compressed=ws.compressed,
        )
        try:
            with scope:
                await session.run()
            if scope.cancelled_caught and not conn.replaced:  # the boot deadline passed
                self.recorder.emit(
                    name,
                    "boot_timeout",
                    station=station_id,
                    peer=current_peer(),
                    timeout=self.config.boot_timeout,
                )
                await ws.aclose(1008, "no accepted BootNotification in time")
        except (TransportError, OcppError) as exc:
            self.recorder.emit(
                name,
                "station_disconnected",
                station=station_id,
                reason=failure_reason(exc),
                detail=str(exc),
            )
        finally:
            if conn.replaced:
                with (
                    trio.CancelScope(shield=True),
                    contextlib.suppress(TransportError, trio.BrokenResourceError, trio.ClosedResourceError),
                ):
                    await ws.aclose(*REPLACED_CLOSE)
            if rec.connection is conn:
                rec.connection = None
                rec.session = None
                rec.connected = False
                self._drop_if_never_booted(rec)

    def _drop_if_never_booted(self, rec: StationRecord) -> None:
        """Forget a station that never got an Accepted BootNotification (see the module doc)."""
        if rec.boots == 0 and not rec.transactions and self.stations.get(rec.station_id) is rec:
            del self.stations[rec.station_id]
            self._dropped_messages.update(rec.messages)
            # bounded: a hostile peer may try any number of identities
            self.received.pop(rec.station_id, None)

    # ---------------------------------------------------------------- OCPP handlers

    async def _handle_call(
        self, rec: StationRecord, conn: StationConnection, action: str, payload: dict[str, Any]
    ) -> dict[str, Any]:
        """Answer a CALL (a BootNotification may wait: it can close the connection)."""
        if action != "BootNotification":
            return self._answer_call(rec, conn, action, payload)
        rec.messages[action] += 1
        self.received[rec.station_id][action] += 1
        self.totals["messages"] += 1
        return await self._on_boot(rec, conn, payload, isoformat(self.clock.utcnow()))

    def _answer_call(
        self, rec: StationRecord, conn: StationConnection, action: str, payload: dict[str, Any]
    ) -> dict[str, Any]:
        """Answer a CALL other than BootNotification (none waits for anything)."""
        rec.messages[action] += 1
        self.received[rec.station_id][action] += 1
        self.totals["messages"] += 1
        if not conn.accepted:
            error = OcppError(
                "station has not been accepted by BootNotification yet", error_code="SecurityError"
            )
            conn.inputs.emit(
                "bad_input", reason=error.error_code, detail=f"{action} before an Accepted boot", replied=True
            )
            raise error
        if action == "Heartbeat":
            rec.heartbeats += 1
            return {"currentTime": isoformat(self.clock.utcnow())}
        if action == "StatusNotification":
            key = (
                int(self._check(conn.inputs, action, EVSE_ID, payload["evseId"])),
                int(self._check(conn.inputs, action, CONNECTOR_ID, payload["connectorId"])),
            )
            if key not in rec.connectors and len(rec.connectors) >= MAX_CONNECTORS:
                self._emit_refused(conn.inputs, action, "connectors", f"{key}", f"more than {MAX_CONNECTORS}")
                raise OcppError(
                    f"more than {MAX_CONNECTORS} connectors reported",
                    error_code="OccurrenceConstraintViolation",
                )
            rec.connectors[key] = payload["connectorStatus"]
            return {}
        if action == "Authorize":
            return {"idTokenInfo": {"status": self._token_status(payload["idToken"]["idToken"])}}
        if action == "TransactionEvent":
            return self._on_transaction_event(rec, payload, conn.inputs)
        if action == "SignCertificate":
            return self.certificates.on_sign_certificate(rec.station_id, payload)
        if action == "SecurityEventNotification":
            events = rec.security_events
            if not isinstance(events, collections.deque):  # made on the first: most stations never send one
                events = rec.security_events = collections.deque(maxlen=SECURITY_EVENTS_KEPT)
            events.append(payload)
            rec.security_events_total += 1
            self.recorder.emit(
                self.config.name,
                "security_event_received",
                station=rec.station_id,
                type=payload["type"],
                tech_info=payload.get("techInfo", ""),
            )
            return {}
        if action in ("FirmwareStatusNotification", "LogStatusNotification"):
            firmware = action == "FirmwareStatusNotification"
            if firmware:
                rec.firmware_status = payload["status"]
            else:
                rec.log_status = payload["status"]
            self.recorder.emit(
                self.config.name,
                "firmware_status_received" if firmware else "log_status_received",
                station=rec.station_id,
                status=payload["status"],
                request=payload.get("requestId", -1),
            )
            return {}
        if action in (
            "MeterValues",
            "NotifyEvent",
            "NotifyReport",
            "NotifyMonitoringReport",
            "NotifyChargingLimit",
        ):
            return {}
        raise OcppError(f"{action} is not supported by this CSMS", error_code="NotSupported")

    async def _on_boot(
        self, rec: StationRecord, conn: StationConnection, payload: dict[str, Any], now: str
    ) -> dict[str, Any]:
        serial = payload["chargingStation"].get("serialNumber")
        if (
            self.config.security_profile == 3
            and serial is not None
            and conn.serial_from_cert is not None
            and serial != conn.serial_from_cert
        ):
            # B01.FR.11/12: the serial number must be the certificate's CN; close the connection.
            self.recorder.emit(
                self.config.name,
                "boot_rejected",
                station=rec.station_id,
                reason="serialNumber != certificate CN",
            )
            conn.accepted = False
            if rec.connection is conn:
                rec.accepted = False
            await conn.ws.aclose(1008, "serialNumber does not match the certificate")
            return {"currentTime": now, "interval": self.config.heartbeat_interval, "status": "Rejected"}
        rec.boots += 1
        conn.accepted = True
        old = rec.connection
        if old is not conn:
            make_live(rec, conn)
            if old is not None:
                old.replaced = True
                old.cancel_scope.cancel()  # its task closes it with REPLACED_CLOSE
                self.recorder.emit(
                    self.config.name,
                    "replaced_connection",
                    station=rec.station_id,
                    old=old.number,
                    old_source=old.source,
                    new=conn.number,
                    new_source=conn.source,
                )
        rec.accepted = True
        self.recorder.emit(self.config.name, "booted", station=rec.station_id, reason=payload["reason"])
        if rec.upgrade_to and self.config.security_profile >= rec.upgrade_to and conn.controller is None:
            rec.security_floor, rec.upgrade_to = rec.upgrade_to, 0
            self.recorder.emit(
                self.config.name,
                "security_profile_upgraded",
                station=rec.station_id,
                floor=rec.security_floor,
            )
        return {"currentTime": now, "interval": self.config.heartbeat_interval, "status": "Accepted"}

    def _token_status(self, token: str) -> str:
        if token in self.config.id_tokens:
            return self.config.id_tokens[token]
        return "Accepted" if self.config.authorize_unknown_tokens else "Invalid"

    def _check(self, inputs: InputLog, action: str, bound: Bound, value: object) -> float:
        """``value`` if in range; else record it and refuse the CALL (PropertyConstraintViolation)."""
        try:
            return bound.check(value)
        except OutOfRange as exc:
            self._emit_refused(inputs, action, exc.field, exc.shown, exc.reason_code)
            raise OcppError(str(exc), error_code=exc.error_code) from None

    @staticmethod
    def _emit_refused(inputs: InputLog, action: str, field: str, value: str, reason: str) -> None:
        inputs.emit("value_refused", action=action, field=field, value=value, reason=reason)

    def _energy_wh(self, inputs: InputLog, payload: dict[str, Any]) -> float | None:
        """The highest energy register reading of a TransactionEvent (None: none), every value checked."""
        energy: float | None = None
        for mv in payload.get("meterValue", ()):
            for sv in mv["sampledValue"]:
                value = float(self._check(inputs, "TransactionEvent", SAMPLED_VALUE, sv["value"]))
                if sv.get("measurand", _ENERGY) == _ENERGY:
                    value = float(self._check(inputs, "TransactionEvent", ENERGY_REGISTER_WH, value))
                    energy = value if energy is None else max(energy, value)
        return energy

    def _new_transaction(self, rec: StationRecord, tx_id: str) -> TransactionRecord:
        """A record for a transaction not seen (or no longer kept); retires the oldest beyond the cap."""
        if len(rec.transactions) >= MAX_TRANSACTIONS_KEPT:
            oldest = next(iter(rec.transactions))
            rec.retired.add(rec.transactions.pop(oldest))
        tx = rec.transactions[tx_id] = TransactionRecord(transaction_id=tx_id)
        return tx

    def _on_transaction_event(
        self, rec: StationRecord, payload: dict[str, Any], inputs: InputLog
    ) -> dict[str, Any]:
        info = payload["transactionInfo"]
        tx_id = info["transactionId"]
        action = "TransactionEvent"
        seq = int(self._check(inputs, action, SEQ_NO, payload["seqNo"]))
        evse = payload.get("evse")
        if evse is not None:
            self._check(inputs, action, EVSE_ID, evse["id"])
            if "connectorId" in evse:
                self._check(inputs, action, CONNECTOR_ID, evse["connectorId"])
        energy = self._energy_wh(inputs, payload)
        tx = rec.transactions.get(tx_id)
        if tx is None:
            tx = self._new_transaction(rec, tx_id)
        event_type = payload["eventType"]
        if not tx.seq_nos.add(seq):
            tx.duplicates += 1
            self.recorder.emit(self.config.name, "tx_duplicate", station=rec.station_id, tx=tx_id, seq=seq)
        else:
            if payload.get("offline"):
                tx.offline_events += 1
            if energy is not None:
                tx.energy_wh = max(tx.energy_wh, energy)
            if event_type == "Started" and not tx.started:
                tx.started = True
                self.totals["tx_started"] += 1
            elif event_type == "Ended" and not tx.ended:
                tx.ended = True
                self.totals["tx_ended"] += 1
            self.recorder.emit(
                self.config.name,
                "tx_event",
                station=rec.station_id,
                tx=tx_id,
                type=event_type,
                seq=seq,
                offline=bool(payload.get("offline", False)),
            )
        response: dict[str, Any] = {}
        if "idToken" in payload:
            response["idTokenInfo"] = {"status": self._token_status(payload["idToken"]["idToken"])}
        return response

    # ---------------------------------------------------------------- CSMS-initiated

    async def call(self, station_id: str, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Send a CALL to a connected station and return its response payload.

        Raises:
            KeyError: the station is not connected.
            CallErrorReceived, CallTimeout, TransportError: as :meth:`OcppSession.call`.
        """
        rec = self.stations.get(station_id)
        if rec is None or rec.session is None:
            raise KeyError(f"station {station_id!r} is not connected")
        return await rec.session.call(action, payload)

    async def update_firmware(
        self,
        station_id: str,
        *,
        request_id: int,
        location: str,
        signing_certificate: str,
        signature: str,
        retries: int | None = None,
        retry_interval: int | None = None,
        retrieve_in_s: float = 0.0,
        install_in_s: float | None = None,
    ) -> dict[str, Any]:
        """Send UpdateFirmware (L01) and return the response (``status``).

        Args:
            station_id: a connected station.
            request_id: ``requestId`` (the station's FirmwareStatusNotifications carry it).
            location: the image's URL.
            signing_certificate: the firmware signing certificate (PEM).
            signature: the base64 signature over the image.
            retries, retry_interval: how often and how far apart the station retries the download.
            retrieve_in_s, install_in_s: when to download and to install, from the simulation's now.

        Raises:
            KeyError, CallErrorReceived, CallTimeout, TransportError: as :meth:`call`.
        """
        now = self.clock.utcnow()
        firmware: dict[str, Any] = {
            "location": location,
            "retrieveDateTime": isoformat(now + _seconds(retrieve_in_s)),
            "signingCertificate": signing_certificate,
            "signature": signature,
        }
        if install_in_s is not None:
            firmware["installDateTime"] = isoformat(now + _seconds(install_in_s))
        payload: dict[str, Any] = {"requestId": request_id, "firmware": firmware}
        if retries is not None:
            payload["retries"] = retries
        if retry_interval is not None:
            payload["retryInterval"] = retry_interval
        return await self.call(station_id, "UpdateFirmware", payload)

    async def get_log(
        self,
        station_id: str,
        *,
        request_id: int,
        remote_location: str,
        log_type: str = "DiagnosticsLog",
        retries: int | None = None,
        retry_interval: int | None = None,
    ) -> dict[str, Any]:
        """Send GetLog (N01) and return the response (``status``, ``filename``).

        Raises:
            KeyError, CallErrorReceived, CallTimeout, TransportError: as :meth:`call`.
        """
        payload: dict[str, Any] = {
            "requestId": request_id,
            "logType": log_type,
            "log": {"remoteLocation": remote_location},
        }
        if retries is not None:
            payload["retries"] = retries
        if retry_interval is not None:
            payload["retryInterval"] = retry_interval
        return await self.call(station_id, "GetLog", payload)

    async def set_network_profile(
        self, station_id: str, slot: int, connection_data: dict[str, Any]
    ) -> dict[str, Any]:
        """Send SetNetworkProfile (B09) and return the response (``status``, ``statusInfo``).

        Args:
            station_id: a connected station.
            slot: ``configurationSlot``.
            connection_data: a ``NetworkConnectionProfileType`` object (e.g.
                :meth:`evsim.ocpp.netprofile.NetworkConnectionProfile.to_ocpp`).

        Raises:
            KeyError, CallErrorReceived, CallTimeout, TransportError: as :meth:`call`.
        """
        payload = {"configurationSlot": slot, "connectionData": connection_data}
        return await self.call(station_id, "SetNetworkProfile", payload)

    async def set_variables(
        self, station_id: str, values: Mapping[tuple[str, str], str]
    ) -> list[dict[str, Any]]:
        """Send SetVariables and return the ``setVariableResult`` list (in the order given).

        Args:
            station_id: a connected station.
            values: ``(component, variable) -> attributeValue``, e.g.
                ``{("OCPPCommCtrlr", "NetworkConfigurationPriority"): "1,0"}`` (B10).

        Raises:
            KeyError, CallErrorReceived, CallTimeout, TransportError: as :meth:`call`.
        """
        data = [
            {"attributeValue": value, "component": {"name": comp}, "variable": {"name": var}}
            for (comp, var), value in values.items()
        ]
        response = await self.call(station_id, "SetVariables", {"setVariableData": data})
        results: list[dict[str, Any]] = response["setVariableResult"]
        return results

    def statistics_handshake_failures(self) -> dict[str, int]:
        """Handshake failures by reason (cheap: no walk over the stations)."""
        return dict(self._handshake_failures)

    def statistics(self) -> CsmsStatistics:
        started = ended = dups = 0
        msgs: collections.Counter[str] = collections.Counter(self._dropped_messages)
        for rec in self.stations.values():
            msgs.update(rec.messages)
            started += rec.retired.started
            ended += rec.retired.ended
            dups += rec.retired.duplicates
            for tx in rec.transactions.values():
                started += tx.started
                ended += tx.ended
                dups += tx.duplicates
        return CsmsStatistics(
            stations_known=len(self.stations),
            stations_connected=sum(r.connected for r in self.stations.values()),
            stations_accepted=sum(r.accepted and r.connected for r in self.stations.values()),
            connections_total=self._connections_total,
            handshake_failures=dict(self._handshake_failures),
            upgrade_rejections=dict(self._upgrade_rejections),
            messages=dict(msgs),
            transactions_started=started,
            transactions_ended=ended,
            duplicate_tx_events=dups,
            tls_versions=dict(self._tls_versions),
            tls_suites=dict(self._tls_suites),
        )


async def _aclose_quietly(stream: trio.abc.AsyncResource) -> None:
    with contextlib.suppress(TransportError, trio.BrokenResourceError, trio.ClosedResourceError):
        await stream.aclose()


def _seconds(value: float) -> datetime.timedelta:
    return datetime.timedelta(seconds=value)
