"""The charging station node (EVCS).

Theory of operation. A station runs two independent activities in one nursery:

* the **connection loop** keeps a link to the CSMS: connect (network, TLS at the simulation's time, WebSocket
  with Basic auth or a client certificate), BootNotification until Accepted, then heartbeats at the interval
  the CSMS gave, connector StatusNotifications, and the **sender**, which delivers the message queue head by
  head. Any failure ends the connection; the loop waits per OCPP RetryBackOff and tries again, forever.
  It walks the station's **network connection profiles** (configuration slots in NetworkConfigurationPriority
  order, NetworkProfileConnectionAttempts per slot, the fallback when all failed, never a lower security
  profile): :class:`~evsim.ocpp.netprofile.NetworkProfiles` decides, the loop only connects and reports. Each
  slot has its own URL, security profile, message timeout, identity/password (2.1) and optionally its own TLS
  settings; a plain ``csms_url`` is one slot. The CSMS may add slots (SetNetworkProfile) and change the
  priority (SetVariables); both take effect at the next reconnect.
* the **behaviour** plays charging sessions on the station's EVSE regardless of connectivity: plug in,
  authorize (online with Authorize; offline the station starts anyway, as with ``OfflineTxForUnknownIdEnabled``),
  meter values every ``meter_interval_s``, stop. Its TransactionEvents go into the :class:`TxQueue`, so an
  outage delays them but never loses them; they are sent later with ``offline=true``.

Every number the CSMS sends is range-checked against :mod:`evsim.ocpp.limits` before the station acts on it:
a SetVariables value out of range is Rejected with a ``reasonCode``, a SetNetworkProfile one with
``InvalidNetworkConf``; a BootNotificationResponse ``interval`` the station cannot use (negative, or above a
day) is replaced by ``default_heartbeat_s`` (at least 1 s). Each refusal is one ``value_refused`` event.

A refused TLS handshake is turned into the matching OCPP security event (InvalidCsmsCertificate,
InvalidTLSVersion, ...), queued once per failure streak and delivered after the next successful connection
(A04.FR.02; errata 2023-12 §2.2.1). With a peer policy bound to its ``ClientTls`` (pins, change notification),
the policy's events reach :meth:`Station.on_peer_event`, which queues those that map to an OCPP security event
the same way (``pin_promoted``, an accepted ``peer_key_changed``, a report-only ``pin_mismatch``...).

The station's configuration and the device model the CSMS reads and writes (GetVariables, SetVariables,
SetNetworkProfile) are :mod:`evsim.nodes.station_model`.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import uuid
from typing import Any

import attrs
import trio

from evsim import timers
from evsim.clock import NodeClock, SimClock, isoformat
from evsim.cpu import Cpu, set_cpu_owner
from evsim.errors import (
    CallErrorReceived,
    CallTimeout,
    ConfigError,
    HandshakeFailed,
    OcppError,
    TransportError,
    failure_reason,
)
from evsim.link.slots import NetworkProfiles, NetworkSlot
from evsim.net.base import Network
from evsim.nodes.certificates import CertificateSwitch, StationCertificates
from evsim.nodes.devicetime import DeviceTime
from evsim.nodes.expiry import ExpiryMonitor
from evsim.nodes.filetransfer import NO_FILES, FileTransferConfig
from evsim.nodes.firmware import FirmwareUpdater
from evsim.nodes.logupload import LogUploader
from evsim.nodes.measures import ROUND_TRIP_CALLER, BootClock, certificate_issuers
from evsim.nodes.setup_window import SetupHold
from evsim.nodes.station_model import (
    STATION_SLOTS,
    DeviceModel,
    FleetTally,
    PendingCall,
    Rebooting,
    StationConfig,
    StationStatistics,
    peer_event_fields,
    sole_failure,
)
from evsim.ocpp.limits import BOOT_RETRY_INTERVAL, HEARTBEAT_INTERVAL, OutOfRange
from evsim.ocpp.rpc import BadInput, CallTimedOut, ErrorReceived, ResultReceived, RpcConnection, RpcEvent
from evsim.ocpp.session import OcppSession
from evsim.ocpp.transaction import TransactionRecorder
from evsim.ocpp.txqueue import QueuedMessage, TxQueue
from evsim.ocpp.versions import subprotocol_for, version_for
from evsim.pki.ca import CertKey
from evsim.recorder import Recorder
from evsim.seeded import RandomSource
from evsim.timers import Alarm
from evsim.tls.config import Identity, TlsProfile
from evsim.tls.context import ClientTls
from evsim.tls.cost import handshake_kind
from evsim.tls.events import (
    PEER_KEY_CHANGED,
    PIN_ADDED,
    PIN_MISMATCH,
    PIN_PROMOTED,
    PIN_RELEASED,
    ocpp_security_event,
)
from evsim.tls.peer import PeerEvent
from evsim.tls.sessions import SessionStore
from evsim.tls.stream import TlsInfo, tls_connect
from evsim.urls import parse_url
from evsim.ws import WebSocket, ws_client
from evsim.ws.auth import basic_auth_header
from evsim.ws.paths import station_path

log = logging.getLogger("evsim.station")


class Station:
    """A simulated charging station.

    Args:
        config: behaviour.
        network: how to reach the CSMS.
        client_tls: the installed TLS client configuration (CSMS root, client certificate), used by every
            slot without TLS settings of its own; None only when every such slot is security profile 1.
        clock: the station's own clock (a :class:`~evsim.clock.NodeClock`; the run's clock gives a perfect one).
        recorder: event sink.
        rng: the station's seeded RNG (back-off jitter, session timing, transaction ids).
        files: firmware and log transfer settings (UpdateFirmware, GetLog; :mod:`evsim.nodes.firmware`,
            :mod:`evsim.nodes.logupload`); None: no mirrors, no manufacturer root, so every signed update is
            refused with InvalidCertificate.
    """

    __slots__ = STATION_SLOTS  # (station_model.py)

    def __init__(
        self,
        config: StationConfig,
        *,
        network: Network,
        client_tls: ClientTls | None,
        clock: SimClock,
        recorder: Recorder,
        rng: RandomSource,
        files: FileTransferConfig | None = None,
    ) -> None:
        slots = config.slots()
        for slot in slots:
            if slot.profile.security_profile >= 2 and slot.tls is None and client_tls is None:
                raise ConfigError(
                    f"security profile {slot.profile.security_profile} (slot {slot.slot}) needs a wss:// URL "
                    "and a TLS configuration",
                    path="station.client_tls",
                    fix="use a wss:// URL and pass client_tls",
                )
        self.config = config
        self.network = network
        self.client_tls = client_tls
        self.clock = clock if isinstance(clock, NodeClock) else NodeClock.of(clock)
        self.recorder = recorder
        self.rng = rng
        self.time = DeviceTime.of(
            self, config.clock
        )  # its clock's corrections, NTS client, ClockCtrlr variables
        self.network_profiles = NetworkProfiles(
            slots, config.network_settings(), rng, security_profile=config.security_profile
        )
        self.backoff = self.network_profiles.backoff
        self.queue = TxQueue(max_length=config.queue_max)
        self.session: OcppSession | None = None
        self.tally = FleetTally()  # the fleet's (World.sample) replaces it before the station runs
        self.booted = False
        self.heartbeat_s = config.default_heartbeat_s
        self.tls_info: TlsInfo | None = None
        self.connector_status = "Available"
        self._uplink_alarm = Alarm()  # the uplink waits on it for work (see _poke) or its next deadline
        self._authorize_request: PendingCall | None = None
        self._reported_status: str | None = None
        self._trigger_heartbeat = False
        self._last_activity = 0.0
        self.done = trio.Event()
        self._online = trio.Event()
        self.sessions_completed = 0
        self.connects_ok = 0
        self.boots = 0
        self.heartbeats = 0
        self.connect_failures: collections.Counter[str] = collections.Counter()
        self.messages_sent: collections.Counter[str] = collections.Counter()
        self._failure_streak_event: str | None = None
        self._established = False  # the current connection got past BootNotification
        self.security_events_queued = 0
        self.energy_wh = 0.0
        self._reported_keys: set[tuple[str, str | None]] = set()  # (peer event, key) queued already
        self.tls_sessions: SessionStore | None = None
        """Where TLS sessions are kept for resumption (None: every handshake is a full one)."""
        self.connect_window: trio.CapacityLimiter | None = None
        """The fleet's connect window (:mod:`evsim.nodes.setup_window`; None: connect at once)."""
        own = client_tls.identity if client_tls is not None else None
        self.certs = StationCertificates(
            config.station_id,
            config.certificates,
            identity=CertKey(own.chain[0], own.key, own.chain[1:]) if own is not None else None,
            csms_roots=client_tls.trust.anchors if client_tls is not None else (),
            emit=lambda kind, **fields: self.recorder.emit(self.name, kind, **fields),
            security_event=self.queue_security_event,
        )
        """The station's certificates and their OCPP management (A02/A03, M03-M05)."""
        self._tls_built: tuple[tuple[int, TlsProfile | None], ClientTls, ClientTls] | None = None
        self.expiry: ExpiryMonitor | None = None
        """Where the certificates of its connections are noted for ``cert_expiring`` (None: not watched)."""
        self.cpu: Cpu | None = None  # the CPU model in virtual time (evsim.cpu), often shared by a fleet
        self._used_candidate = False  # the current connection attempt uses a renewed, unproven certificate
        self._boot_clock = BootClock()
        self._session_host = ""  # the host of the current connection's endpoint (its round trips' endpoint)
        self._bad_inputs = 0
        self.firmware = FirmwareUpdater(self, files or NO_FILES, config.firmware_version)
        self.logs = LogUploader(self, files or NO_FILES)
        self.device_model = DeviceModel(self, self._refused)
        """Answers GetVariables, SetVariables and SetNetworkProfile from the station's live values."""
        self._link_scope: trio.CancelScope | None = None
        self._rebooting = False

    @property
    def name(self) -> str:
        return self.config.station_id

    async def wait_online(self) -> None:
        """Wait until the station is connected and accepted by the CSMS."""
        await self._online.wait()

    # ---------------------------------------------------------------- top level

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled: the connection loop and the charging behaviour."""
        set_cpu_owner(self.name)  # its operations queue on a shared CPU model in the order of station ids
        async with trio.open_nursery() as nursery:
            # without charging sessions (nothing to play) the connection loop runs in this task: one task less
            if plays := self.config.sessions > 0:
                nursery.start_soon(self._connection_loop)
            self.firmware.attach(nursery)
            self.logs.attach(nursery)
            if self.time.nts is not None:
                nursery.start_soon(self.time.nts.run)
            task_status.started()
            del task_status  # (kept, it would hold the nursery of a caller's start() as long as this runs)
            await (self._behaviour() if plays else self._connection_loop())

    async def _connection_loop(self) -> None:
        """Walk the network slots forever (B10.FR.09): connect, run, and after a failure or loss wait and retry.

        The slot walk and the waits are :class:`~evsim.ocpp.netprofile.NetworkProfiles`' decisions; an
        attempt succeeds when BootNotification is accepted; every failure before that is reported with its
        reason (``network_profiles.log``).
        """
        profiles = self.network_profiles
        self._boot_clock.reset()  # a restarted station's boot starts again
        while True:
            slot = profiles.current
            self._established = False
            reason, detail = "", ""
            try:
                try:
                    await self._connect_once(slot)
                except BaseExceptionGroup as group:
                    raise sole_failure(group) from group
            except HandshakeFailed as exc:
                reason, detail = exc.reason, exc.detail
                self._on_connect_failure(exc.reason, detail=exc.detail, handshake=exc, slot=slot)
            except (TransportError, OcppError) as exc:
                reason, detail = failure_reason(exc), str(exc)
                self._on_connect_failure(reason, detail=detail, slot=slot)
            finally:
                self.tally.connected -= self.session is not None
                self.session = None
                self.booted = False
                if self._authorize_request is not None:
                    self._authorize_request.done.set()  # the behaviour goes on offline
                if self._online.is_set():
                    self._online = trio.Event()
                self.queue.went_offline()
            now = trio.current_time()
            if self._established:
                wait = profiles.connection_lost(now)
                if profiles.skipped:
                    self.recorder.emit(
                        self.name,
                        "network_slots_skipped",
                        slots=[f"{s.slot}:{s.reason}" for s in profiles.skipped],
                    )
            else:
                profiles.report(slot, False, reason or "unknown", now, detail=detail)
                self.certs.connection_failed(self._used_candidate)
                _, wait = profiles.next_attempt(now)
            self.recorder.emit(self.name, "reconnect_wait", seconds=round(wait, 3))
            await trio.sleep(wait)

    def _endpoint(self, slot: NetworkSlot) -> dict[str, str]:
        """``{"endpoint": host}`` of a slot for connection events, when the station has several slots (a
        one-slot station's events stay as they were, so are the logs of runs without failover)."""
        if len(self.network_profiles.slots) < 2:
            return {}
        return {"endpoint": parse_url(slot.profile.ocpp_csms_url)[1]}

    def _on_connect_failure(
        self,
        reason: str,
        *,
        detail: str = "",
        handshake: HandshakeFailed | None = None,
        slot: NetworkSlot | None = None,
    ) -> None:
        self.connect_failures[reason] += 1
        self.tally.connect_failures += 1
        kind = "handshake_failed" if handshake is not None else "connection_lost"
        security_event = ocpp_security_event(reason, side="client") if handshake is not None else None
        if reason == "http_401":
            security_event = "FailedToAuthenticateAtCsms"
        where = self._endpoint(slot) if slot is not None else {}
        self.recorder.emit(
            self.name, kind, reason=reason, detail=detail, security_event=security_event or "", **where
        )
        if security_event and self._failure_streak_event != security_event:
            # queue the critical event once per failure streak (errata 2023-12 §2.2.1)
            self._failure_streak_event = security_event
            self.queue_security_event(security_event, f"{reason}: {detail}"[:255])

    def queue_security_event(self, event_type: str, tech_info: str = "") -> None:
        """Queue a SecurityEventNotification with guaranteed delivery (A04.FR.02)."""
        payload: dict[str, Any] = {"type": event_type, "timestamp": isoformat(self.clock.utcnow())}
        if tech_info:
            payload["techInfo"] = tech_info
        self.security_events_queued += 1
        self._enqueue("SecurityEventNotification", payload)

    def on_peer_event(self, event: PeerEvent) -> None:
        """Sink of the station's :class:`~evsim.tls.peer.PeerPolicy` (pins, change notification): record every
        event, and queue the ones that map to an OCPP security event as SecurityEventNotification.

        A refusal (``event.reason`` set: ``pin_mismatch``, ``peer_key_changed``) also fails the handshake, and
        :meth:`_on_connect_failure` queues its event once per failure streak; it is only recorded here. A
        report-only ``pin_mismatch`` and an accepted ``peer_key_changed`` are queued once per key: every
        connection would repeat them (a key change accepted by the change policy but refused by the pins is
        not remembered, so it is seen again), until the pins change. ``pin_promoted``, ``pin_released`` and
        ``pin_added`` happen once each and are always queued.
        """
        security_event = event.ocpp_security_event
        self.recorder.emit(self.name, event.event, **peer_event_fields(event))
        if security_event is None or event.reason is not None:
            return
        if event.event in (PIN_MISMATCH, PEER_KEY_CHANGED):
            if (event.event, event.spki_sha256) in self._reported_keys:
                return
            self._reported_keys.add((event.event, event.spki_sha256))
        elif event.event in (PIN_ADDED, PIN_PROMOTED, PIN_RELEASED):
            self._reported_keys.clear()
        # techInfo names the event and the peer, not the key hashes of the detail: keys are generated per run,
        # and what a station sends must not depend on them (the detail stays in the recorded event)
        self.queue_security_event(security_event, f"{event.event} ({event.severity}): {event.peer}"[:255])

    def _station_tls(self) -> ClientTls | None:
        """The TLS configuration of the next connection: the configured one, rebuilt with the installed CSMS
        roots and client certificate once OCPP changed them (:attr:`StationCertificates.version`), and with the
        TLS versions and suites the CSMS set (:mod:`evsim.nodes.station_tls`).

        Raises:
            HandshakeFailed: no CSMS root is installed any more (``no_csms_root``); nothing can be verified.
        """
        base = self.client_tls
        certs = self.certs
        key = (certs.version, self.device_model.tls.profile)  # the TLS variables the CSMS set (or None)
        if base is None or key == (0, None):
            return base
        built = self._tls_built
        if built is not None and built[0] == key and built[1] is base:
            return built[2]
        trust = base.trust
        if trust.mode == "pki" and not trust.insecure_skip_verify:
            anchors = certs.anchors()
            if not anchors:
                raise HandshakeFailed("no_csms_root", "no CSMSRootCertificate is installed")
            trust = attrs.evolve(trust, anchors=anchors)
        cert = certs.client_certificate()
        identity = Identity(cert.chain, cert.key) if cert is not None else None
        tls = ClientTls.build(key[1] or base.profile, trust, identity, peer=base.peer)
        self._tls_built = (key, base, tls)
        return tls

    def _note_certificates(self, expiry: ExpiryMonitor, tls: ClientTls, info: TlsInfo, host: str) -> None:
        """Its own client certificate and the CSMS's, for expiry warnings."""
        if tls.identity is not None:
            expiry.note(self.name, tls.identity.chain[0], role="own")
        if info.peer_chain:
            expiry.note(self.name, info.peer_chain[0], role="peer", peer=host)

    def _on_rpc_event(self, event: RpcEvent) -> None:
        """Count each CALL's round trip (:meth:`Recorder.round_trip`, per endpoint host); record what the RPC
        core refused of the CSMS's (one ``bad_input`` event each, at most :data:`BAD_INPUT_EVENTS` per link)."""
        if isinstance(event, _OUTCOMES):
            rtt = None if isinstance(event, CallTimedOut) else event.round_trip
            self.recorder.round_trip(ROUND_TRIP_CALLER, self._session_host, rtt)
            return
        if not isinstance(event, BadInput):
            return
        self._bad_inputs += 1
        if self._bad_inputs > BAD_INPUT_EVENTS:
            return
        error = event.error
        self.recorder.emit(
            self.name,
            "bad_input",
            peer=self._peer(),
            reason=error.error_code,
            detail=str(getattr(error, "description", error))[:300],
            replied=event.replied,
        )

    def _enqueue(self, action: str, payload: dict[str, Any]) -> None:
        self.queue.put(action, payload)
        self._poke()

    def queue_message(self, action: str, payload: dict[str, Any]) -> None:
        """Queue a CALL with guaranteed delivery, sent in order once the station is online."""
        self._enqueue(action, payload)

    def outbox_size(self) -> int:
        """Messages queued and not yet answered by the CSMS."""
        return len(self.queue)

    def reboot(self) -> None:
        """Reboot (after a firmware install): end the CSMS connection; the connection loop boots again."""
        self._rebooting = True
        if self._link_scope is not None:
            self._link_scope.cancel()

    # ---------------------------------------------------------------- one connection

    async def _connect_once(self, slot: NetworkSlot) -> None:
        """One connection through ``slot``: network, TLS, WebSocket, BootNotification, then the uplink.

        Sets ``_established`` once BootNotification is accepted (the attempt succeeded); returns only by
        raising the error that ended the connection.
        """
        cfg = self.config
        profile = slot.profile
        _, host, port, url_path = parse_url(profile.ocpp_csms_url)
        identity = profile.identity or cfg.station_id
        password = profile.basic_auth_password or cfg.password
        client_tls: ClientTls | None = None
        server_name: str | None = host
        self._used_candidate = False
        if slot.tls is not None:
            client_tls, server_name = slot.tls.client_tls(), slot.tls.server_name
        elif profile.security_profile >= 2:
            client_tls = self._station_tls()
            self._used_candidate = self.certs.candidate is not None
        self._bad_inputs = 0
        self._session_host = host
        self._boot_clock.attempt(started := trio.current_time())
        hold = await SetupHold.connect(self.network, host, port, cfg.station_id, self.connect_window)
        stream: trio.abc.Stream = hold.stream
        ws: WebSocket | None = None
        try:
            if self.cpu is not None:
                await self.cpu.charge(("conn", "client"))
            if client_tls is not None:
                tls_stream = await tls_connect(
                    stream,
                    client_tls,
                    server_name,
                    verify_time=self.clock.utcnow,
                    sessions=self.tls_sessions,
                    clock_synced=self.time.synced,
                )
                stream = tls_stream
                self.tls_info = tls_stream.info
                if self.cpu is not None:
                    await self.cpu.charge(
                        handshake_kind(tls_stream.info, client_cert=client_tls.identity is not None)
                    )
                self.recorder.emit(
                    self.name,
                    "handshake_ok",
                    **self._endpoint(slot),
                    version=tls_stream.info.version,
                    suite=tls_stream.info.cipher_iana,
                    group=tls_stream.info.group or "",
                    resumed=tls_stream.info.session_reused,
                    connect_s=round(trio.current_time() - started, 6),
                    **certificate_issuers(client_tls, tls_stream.info),
                )
                if self.expiry is not None:
                    self._note_certificates(self.expiry, client_tls, tls_stream.info, host)
            headers: list[tuple[str, str]] = []
            if profile.security_profile in (1, 2) and password is not None:
                headers.append(basic_auth_header(identity, password))
            if self.cpu is not None:
                await self.cpu.charge(("ws", "client"))
            ws = await ws_client(
                stream,
                host=host,
                path=station_path(url_path, identity),
                subprotocols=[subprotocol_for(v) for v in cfg.ocpp_versions],
                headers=headers,
                compression=cfg.compression,
                close_timeout=cfg.close_timeout_s,
            )
            hold.release()
            if ws.subprotocol is None:
                await ws.aclose(1002, "no OCPP subprotocol agreed")
                raise OcppError("CSMS agreed no OCPP subprotocol", error_code="ProtocolError")
            rpc = RpcConnection(version=version_for(ws.subprotocol), call_timeout=profile.message_timeout)
            session = OcppSession(
                ws,
                rpc,
                self._handle_csms_call,
                on_event=self._on_rpc_event,
                cpu=self.cpu,
                cpu_owner=self.name,
            )
            async with trio.open_nursery() as nursery:
                self._link_scope = nursery.cancel_scope
                await nursery.start(self._run_session, session, nursery.cancel_scope)
                previous = self.network_profiles.active_slot
                # B01.FR.03 / B10.FR.10 demand a BootNotification after a reboot or a slot switch; this
                # station boots on every connection anyway (the CSMS requires it per connection, B02.FR.09)
                if self.network_profiles.must_boot(slot) and previous is not None:
                    self.recorder.emit(self.name, "network_slot_switched", previous=previous, slot=slot.slot)
                await self._boot(session, self._endpoint(slot))
                self.connects_ok += 1
                self.network_profiles.report(slot, True, "", trio.current_time())
                self.device_model.note_upgrade()
                if slot.tls is None:
                    self.certs.connection_succeeded()
                self._established = True
                self._failure_streak_event = None
                self.tally.connected += self.session is None
                self.session = session
                self.queue.went_online()
                self._online.set()
                self._reported_status = None  # report the connector status on every new connection
                await self._uplink(session)  # in this task: no task more per connected station
            if self._rebooting:
                raise Rebooting("rebooting to install new firmware")
        finally:
            hold.release()
            self._link_scope = None
            # A stopping station (cancelled here) still says goodbye with a close frame (1001), one that gives up on
            # this connection closes with 1000, both within close_timeout_s (a silent CSMS cannot hold it); a
            # connection the CSMS closed or that broke is only closed here (ws.aclose is idempotent).
            stopping = trio.current_effective_deadline() == -math.inf
            with (
                trio.CancelScope(shield=True),
                contextlib.suppress(TransportError, trio.BrokenResourceError, trio.ClosedResourceError),
            ):
                if ws is not None:
                    with trio.move_on_after(cfg.close_timeout_s):
                        await ws.aclose(*((1001, "going away") if stopping else (1000, "")))
                await stream.aclose()

    async def _run_session(
        self, session: OcppSession, scope: trio.CancelScope, *, task_status: trio.TaskStatus[None]
    ) -> None:
        try:
            run = session.run(task_status=task_status)
            del task_status  # trio's start() holds a nursery for as long as the status lives: only run has it
            await run
            raise TransportError("CSMS closed the connection")
        finally:
            scope.cancel()

    async def _call(self, session: OcppSession, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        self.messages_sent[action] += 1
        result = await session.call(action, payload)
        self._last_activity = trio.current_time()
        return result

    async def _boot(self, session: OcppSession, where: dict[str, str]) -> None:
        cfg = self.config
        reason = self.firmware.boot_reason() or ("PowerUp" if self.boots == 0 else "Unknown")
        self._rebooting = False
        while True:
            resp = await self._call(
                session,
                "BootNotification",
                {
                    "reason": reason,
                    "chargingStation": {
                        "serialNumber": cfg.station_id,
                        "model": cfg.model,
                        "vendorName": cfg.vendor,
                        "firmwareVersion": self.firmware.version,
                    },
                },
            )
            accepted = resp["status"] == "Accepted"
            self.time.follow(resp, "BootNotification")
            interval = self._boot_interval(resp.get("interval", 0), accepted=accepted)
            if accepted:
                self.boots += 1
                self.booted = True
                self.heartbeat_s = interval
                fields = self._boot_clock.booted(trio.current_time(), where)
                self.recorder.emit(self.name, "booted", interval=interval, status="Accepted", **fields)
                self.firmware.booted()
                return
            self.recorder.emit(self.name, "boot_pending", status=resp["status"], retry_in=interval)
            await trio.sleep(interval)

    def _boot_interval(self, value: object, *, accepted: bool) -> float:
        """The seconds a BootNotificationResponse ``interval`` means to this station.

        Accepted: the heartbeat interval (B01.FR.04), valid in :data:`~evsim.ocpp.limits.HEARTBEAT_INTERVAL`.
        Pending/Rejected: the wait before the next BootNotification (B02.FR.04, B03.FR.02), valid in
        :data:`~evsim.ocpp.limits.BOOT_RETRY_INTERVAL`; 0 lets the station choose (B02.FR.07): its configured
        ``default_heartbeat_s``. A value out of range cannot be used: the station takes that same fallback
        (never below 1 s) and records one ``value_refused`` event.
        """
        fallback = max(1.0, self.config.default_heartbeat_s)
        bound = HEARTBEAT_INTERVAL if accepted else BOOT_RETRY_INTERVAL
        used, refused = bound.usable(value, fallback)
        if refused is not None:
            self._refused("BootNotification", refused, used=fallback)
        return float(used) or fallback

    def _refused(self, action: str, exc: OutOfRange, **fields: Any) -> None:
        """Record a number from the CSMS this station refused or could not use (one event each)."""
        self.recorder.emit(
            self.name,
            "value_refused",
            peer=self._peer(),
            action=action,
            field=exc.field,
            value=exc.shown,
            reason=exc.reason_code,
            **fields,
        )

    def _peer(self) -> str:
        """The CSMS endpoint this station is talking to (host of the current slot's URL)."""
        return parse_url(self.network_profiles.current.profile.ocpp_csms_url)[1]

    async def _uplink(self, session: OcppSession) -> None:
        """The station's only sender of CALLs while connected (besides BootNotification).

        One task picks the next message by a fixed priority, so the order of a station's messages never
        depends on trio's scheduling (same seed, same run): a pending Authorize, then a connector status change
        (StatusNotification), then the message queue head by head (TransactionEvents, security events; popped
        only when answered, so nothing is lost when the link drops), then a Heartbeat when it is due.
        """
        # G02: a Heartbeat goes after HeartbeatInterval of *inactivity*; any answered message resets the timer
        # (RECOMMENDED there), so a station busy with meter values sends none.
        self._last_activity = trio.current_time()
        while True:
            next_heartbeat = self._last_activity + self.heartbeat_s
            request = self._authorize_request
            if request is not None and not request.done.is_set():
                try:
                    request.result = await self._call(session, "Authorize", request.payload)
                except OcppError:
                    pass  # timeout or CALLERROR: the behaviour goes on as offline (result stays None)
                finally:
                    request.done.set()
                continue
            status = self.connector_status
            if status != self._reported_status:
                await self._call(
                    session,
                    "StatusNotification",
                    {
                        "timestamp": isoformat(self.clock.utcnow()),
                        "connectorStatus": status,
                        "evseId": 1,
                        "connectorId": 1,
                    },
                )
                self._reported_status = status
                continue
            msg = self.queue.head()
            if msg is not None:
                await self._deliver(session, msg)
                continue
            if await self._certificate_step(session):
                continue
            if self._trigger_heartbeat or trio.current_time() >= next_heartbeat:
                self._trigger_heartbeat = False
                self.time.follow(await self._call(session, "Heartbeat", {}), "Heartbeat")
                self.heartbeats += 1
                continue
            self._check_done()
            wake_at = next_heartbeat
            if self.certs.planned:
                wake_at = min(wake_at, self.certs.next_deadline(trio.current_time(), self.clock.utcnow()))
            # late: what else is due at the same instant (a meter value) goes before a Heartbeat
            await self._uplink_alarm.wait_until(wake_at, late=True)

    def _poke(self) -> None:
        """Wake the uplink if it waits for work (producers: queue, status, authorize, triggers). Nothing is
        lost when it is busy: it looks at all of them before it waits again. Cheaper than a trio.Event per
        wait, which the uplink made for every message."""
        self._uplink_alarm.wake()

    async def _certificate_step(self, session: OcppSession) -> bool:
        """The uplink's certificate work: reconnect with an accepted certificate (A02.FR.08), or send the
        SignCertificateRequest :meth:`StationCertificates.poll` asks for. True when it did something."""
        certs = self.certs
        if certs.take_reconnect():
            raise CertificateSwitch("reconnecting with the renewed client certificate")
        self.device_model.check_reset()
        if not certs.planned:
            return False
        request = certs.poll(trio.current_time(), self.clock.utcnow())
        if request is None:
            return False
        try:
            response = await self._call(session, "SignCertificate", request)
        except OcppError as exc:  # timeout or CALLERROR: the resend schedule decides
            certs.request_failed(failure_reason(exc), trio.current_time())
            return True
        except BaseException:
            certs.request_failed("link_lost", trio.current_time())
            raise
        certs.request_answered(response["status"], trio.current_time())
        return True

    async def _deliver(self, session: OcppSession, msg: QueuedMessage) -> None:
        """Send the queue head; E13 retries after a timeout; discard only on an answer that refuses it."""
        cfg = self.config
        msg.attempts += 1
        try:
            await self._call(session, msg.action, msg.payload)
        except CallTimeout:
            # E13: retry after attempts x interval; after the last attempt, discard and continue.
            if msg.attempts >= cfg.message_attempts:
                self.queue.give_up(msg)
                self.recorder.emit(self.name, "message_discarded", action=msg.action, reason="timeout")
            else:
                await trio.sleep(cfg.message_attempt_interval_s * msg.attempts)
            return
        except CallErrorReceived as exc:
            self.queue.give_up(msg)
            self.recorder.emit(self.name, "message_discarded", action=msg.action, reason=exc.error_code)
            return
        self.queue.delivered(msg)

    def _check_done(self) -> None:
        if self.sessions_completed >= self.config.sessions and self.booted and not len(self.queue):
            self.tally.done += not self.done.is_set()
            self.done.set()

    # ---------------------------------------------------------------- behaviour

    def _set_status(self, status: str) -> None:
        self.connector_status = status
        self._poke()

    async def _behaviour(self) -> None:
        cfg = self.config
        for _ in range(cfg.sessions):
            lo, hi = cfg.session_start_s
            await timers.sleep(self.rng.uniform(lo, hi))
            await self._charging_session()
            self.sessions_completed += 1
            self._poke()
        self._check_done()

    async def _charging_session(self) -> None:
        cfg = self.config
        tx_id = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        tx = TransactionRecorder(transaction_id=tx_id)
        self._set_status("Occupied")
        self._enqueue("TransactionEvent", tx.started(self.clock.utcnow(), energy_wh=self.energy_wh))
        self.recorder.emit(self.name, "tx_started", tx=tx_id)
        await self._authorize()
        self._enqueue(
            "TransactionEvent",
            tx.updated(self.clock.utcnow(), trigger="Authorized", state="Charging", id_token=cfg.id_token),
        )
        steps = max(1, math.ceil(cfg.session_duration_s / cfg.meter_interval_s))
        step_s = cfg.session_duration_s / steps

        def meter_value() -> None:  # in virtual time, the timer task calls it (timers.repeat)
            self.energy_wh += cfg.charge_power_w * step_s / 3600.0
            self._enqueue(
                "TransactionEvent",
                tx.updated(
                    self.clock.utcnow(),
                    trigger="MeterValuePeriodic",
                    energy_wh=self.energy_wh,
                    power_w=cfg.charge_power_w,
                ),
            )

        await timers.repeat(step_s, steps, meter_value)
        self._enqueue(
            "TransactionEvent",
            tx.updated(
                self.clock.utcnow(), trigger="StopAuthorized", state="EVConnected", id_token=cfg.id_token
            ),
        )
        self._enqueue(
            "TransactionEvent",
            tx.ended(
                self.clock.utcnow(),
                trigger="EVDeparted",
                stopped_reason="EVDisconnected",
                energy_wh=self.energy_wh,
            ),
        )
        self._set_status("Available")
        self.recorder.emit(self.name, "tx_ended", tx=tx_id, energy_wh=round(self.energy_wh, 1))

    async def _authorize(self) -> None:
        """Authorize online through the uplink; offline (or if the link drops meanwhile) start anyway."""
        token = self.config.id_token
        if self.session is None:
            self.recorder.emit(self.name, "authorize_offline", token=token)
            return
        request = PendingCall({"idToken": {"idToken": token, "type": "ISO14443"}})
        self._authorize_request = request
        self._poke()
        await request.done.wait()
        self._authorize_request = None
        if request.result is None:
            self.recorder.emit(self.name, "authorize_offline", token=token, reason="connection lost")
            return
        self.recorder.emit(self.name, "authorized", status=request.result["idTokenInfo"]["status"])

    # ---------------------------------------------------------------- CSMS-initiated calls

    async def _handle_csms_call(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        if action == "TriggerMessage":
            what = payload["requestedMessage"]
            if what == "Heartbeat":
                self._trigger_heartbeat = True
            elif what == "StatusNotification":
                self._reported_status = None
            elif what == "SignChargingStationCertificate":
                status = self.certs.trigger(trio.current_time())
                self._poke()
                return {"status": status}
            elif what == "FirmwareStatusNotification":  # L01.FR.25/26: the last status, Idle when done
                status = self.firmware.last_status
                self._enqueue(
                    "FirmwareStatusNotification", {"status": "Idle" if status == "Installed" else status}
                )
            else:
                return {"status": "NotImplemented"}
            self._poke()
            return {"status": "Accepted"}
        if action == "GetVariables":
            return {
                "getVariableResult": [self.device_model.get_variable(v) for v in payload["getVariableData"]]
            }
        if action == "SetVariables":
            return {
                "setVariableResult": [self.device_model.set_variable(v) for v in payload["setVariableData"]]
            }
        if action == "SetNetworkProfile":
            return self.device_model.set_network_profile(payload)
        if action == "CertificateSigned":
            response = self.certs.certificate_signed(payload, trio.current_time(), self.clock.utcnow())
            self._poke()
            return response
        if action == "InstallCertificate":
            return self.certs.install(payload, self.clock.utcnow())
        if action == "DeleteCertificate":
            return self.certs.delete(payload)
        if action == "GetInstalledCertificateIds":
            return self.certs.installed_ids(payload)
        if action == "Reset":
            self._poke()
            return self.device_model.reset(payload)
        if action == "UpdateFirmware":
            return self.firmware.update_firmware(payload)
        if action == "GetLog":
            return self.logs.get_log(payload)
        raise OcppError(f"{action} is not supported by this station", error_code="NotSupported")

    # ---------------------------------------------------------------- reporting

    def statistics(self) -> StationStatistics:
        return StationStatistics(
            station_id=self.name,
            connected=self.session is not None,
            booted=self.booted,
            connects_ok=self.connects_ok,
            connect_failures=dict(self.connect_failures),
            boots=self.boots,
            heartbeats=self.heartbeats,
            sessions_completed=self.sessions_completed,
            queue=self.queue.statistics(),
            tls=self.tls_info,
            messages_sent=dict(self.messages_sent),
            security_events_queued=self.security_events_queued,
            active_slot=self.network_profiles.active_slot,
            slot_switches=self.network_profiles.switches,
            slots_skipped=self.network_profiles.skipped_total,
            certificates_renewed=self.certs.renewals,
        )


_OUTCOMES = (ResultReceived, ErrorReceived, CallTimedOut)  # a tuple: a union type would be built per message

BAD_INPUT_EVENTS = 10
"""Refused frames or payloads from the CSMS recorded per connection (``bad_input``); the rest are counted by
the RPC core only."""
