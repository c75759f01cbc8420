"""RELAYPAIR"""

from __future__ import annotations

import collections
import contextlib
import math
from typing import TYPE_CHECKING, Any

import attrs
import trio

from evsim.clock import isoformat
from evsim.errors import (
    CallErrorReceived,
    CallTimeout,
    OcppError,
    PeerNotReading,
    TransportError,
    UpgradeRejected,
    WebSocketClosed,
    failure_reason,
)
from evsim.link.service import Endpoint, EndpointPlanner, ServiceUnavailable, connect_service
from evsim.nodes.acceptor import connection_admitted
from evsim.nodes.admission import (
    REPLACED_CLOSE,
)
from evsim.nodes.relay import (
    CSMS,
    STATION,
    Dropped,
    OwnError,
    OwnResult,
    OwnTimedOut,
    RelayCore,
    RelayEvent,
    Side,
    UnroutedCall,
)
from evsim.ocpp.rpc import random_id_prefix
from evsim.ocpp.versions import version_for
from evsim.tls.cost import handshake_kind
from evsim.tls.stream import TlsStream
from evsim.ws import WebSocket, ws_client
from evsim.ws.auth import basic_auth_header
from evsim.ws.paths import station_path

if TYPE_CHECKING:
    from evsim.nodes.controller import LocalController

#: Station CALLs answered with an empty response while the upstream is down (their responses have no required
#: field in the OCA 2.0.1 / 2.1 schemas); Heartbeat gets the time, the rest a CALLERROR.
_EMPTY_ANSWERS = frozenset(
    {
        "StatusNotification",
        "MeterValues",
        "NotifyEvent",
        "TransactionEvent",
        "SecurityEventNotification",
        "FirmwareStatusNotification",
        "LogStatusNotification",
        "NotifyReport",
        "NotifyMonitoringReport",
    }
)

#: WebSocket close codes (RFC 6455 §7.4.1): 1001 "going away" when the other link is lost, 1008 "policy
#: violation" when the CSMS refused the station's credentials, 1013 "try again later" when it was unreachable.
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_TRY_LATER = 1013


@attrs.define
class StationState:
    """What survives a station's reconnects."""

    station_id: str
    planner: EndpointPlanner
    backlog: collections.deque[tuple[str, dict[str, Any]]] = attrs.field(factory=collections.deque)
    last_boot: dict[str, Any] | None = None
    relay: RelayPair | None = None
    upstream_endpoint: str | None = None
    connections: int = 0
    upstream_connects: int = 0
    upstream_reconnects: int = 0
    upstream_losses: int = 0
    frames_up: int = 0
    frames_down: int = 0
    answered_locally: int = 0
    replayed: int = 0
    #: (number, source) of the link the CSMS closed as replaced, until a newer link here takes over
    replaced_upstream: tuple[int, str] | None = None
    #: links of this identity running now, and BootNotifications the CSMS accepted over any of them: an
    #: identity with no link left and no accepted boot is forgotten (a peer may try any number of identities)
    running: int = 0
    boots_accepted: int = 0


@attrs.define
class _Waiter:
    event: trio.Event = attrs.field(factory=trio.Event)
    outcome: RelayEvent | None = None


class _UpstreamGone(Exception):
    """The CSMS link ended and the policy closes the station's."""


class RelayPair:
    """One station pair: the station's WebSocket, the CSMS link (reconnected under keep_station), the core."""

    def __init__(
        self, lc: LocalController, state: StationState, ws: WebSocket, authorization: str | None
    ) -> None:
        cfg = lc.config
        assert ws.subprotocol is not None
        self.lc = lc
        self.state = state
        self.station_ws = ws
        self.subprotocol = ws.subprotocol
        self.authorization = authorization
        prefix = f"{cfg.id_prefix}{random_id_prefix(lc.rng)[:8]}-"
        self.core = RelayCore(
            version=version_for(ws.subprotocol),
            id_prefix=prefix,
            call_timeout=cfg.call_timeout,
            max_queue=cfg.max_queue,
            on_round_trip=self._round_trip,
        )
        self.upstream_ws: WebSocket | None = None
        self.cancel_scope = trio.CancelScope()
        self.number = 0  # the station's link count when this one arrived
        self.source = ""  # the station's remote host
        self.live = False  # the station's link (else a newcomer waiting for its boot to be Accepted)
        self.replaced = False  # a newer link took over; closed with REPLACED_CLOSE
        self._gone_close: tuple[int, str] | None = None  # how to close the station when the upstream is gone
        self._locks: dict[Side, trio.StrictFIFOLock] = {
            STATION: trio.StrictFIFOLock(),
            CSMS: trio.StrictFIFOLock(),
        }
        self._changed = trio.Event()  # set when a reader waits for room and the lanes changed
        self._room_wanted = False
        self._timer_parked: trio.Event | None = None
        self._waiters: dict[str, _Waiter] = {}
        self._replays: dict[str, tuple[str, dict[str, Any]]] = {}  # own message id -> backlog entry
        self._early: list[str] = []  # station frames read while the first upstream link was being connected
        self._pair_scope: trio.CancelScope | None = None  # the relay's nursery, while it runs
        self._boot_scope = trio.CancelScope()  # the boot deadline (set by run)
        self._admitted = False  # the CSMS accepted a BootNotification of this link
        self._station_lost_reported = False

    @property
    def name(self) -> str:
        return self.lc.name

    # ---- lifecycle ---------------------------------------------------------------------------------

    async def run(self) -> None:
        sid = self.state.station_id
        lc = self.lc
        close: tuple[int, str] = (CLOSE_GOING_AWAY, "")
        # until the CSMS accepts a BootNotification of this link it is pending; it has boot_timeout to get there
        boot_scope = self._boot_scope = trio.CancelScope(
            deadline=trio.current_time() + lc.config.boot_timeout
        )
        try:
            with self.cancel_scope:
                with boot_scope:
                    close = await self._relay_pair()
                if boot_scope.cancelled_caught:
                    close = (CLOSE_POLICY, "no accepted BootNotification in time")
                    lc.recorder.emit(self.name, "boot_timeout", station=sid, timeout=lc.config.boot_timeout)
        finally:
            if self.replaced:
                close = REPLACED_CLOSE
            with trio.CancelScope(shield=True):
                if self.upstream_ws is not None:
                    await aclose_ws(self.upstream_ws, CLOSE_GOING_AWAY, "station disconnected")
                    self.upstream_ws = None
                await aclose_ws(self.station_ws, *close)
                self._wake_waiters()
            lc.recorder.emit(
                self.name, "station_disconnected", station=sid, reason=close[1] or "station left"
            )

    async def _relay_pair(self) -> tuple[int, str]:
        """Connect upstream, then relay until either link ends; returns how to close the station's link."""
        try:
            upstream = await self._first_upstream()
        except UpgradeRejected as exc:
            return (CLOSE_POLICY, f"CSMS refused the station: HTTP {exc.status}")
        except TransportError as exc:
            return (CLOSE_TRY_LATER, f"CSMS unreachable: {failure_reason(exc)}")
        if upstream is None:
            return (CLOSE_GOING_AWAY, "")  # the station left while the upstream was being connected
        close = (CLOSE_GOING_AWAY, "")
        try:
            async with trio.open_nursery() as nursery:
                self._pair_scope = nursery.cancel_scope
                nursery.start_soon(self._station_side)
                nursery.start_soon(self._upstream_side, upstream)
                nursery.start_soon(self._timer)
        except* _UpstreamGone:
            close = self._gone_close or (CLOSE_GOING_AWAY, "CSMS connection lost")
        return close

    def _boot_accepted(self) -> None:
        """The CSMS accepted a BootNotification of this link: no boot deadline any more, the connection is
        admitted (it no longer counts as pending for its address), and a newcomer takes over the identity
        together with the station's backlog, replayed at once when its CSMS link is up (the caller flushes)."""
        if not self._admitted:
            self._admitted = True
            self._boot_scope.deadline = math.inf
            connection_admitted()
        if not self.live:
            self.lc.promote(self)
            if self.upstream_ws is not None and self.state.backlog:
                self._replay_backlog(reconnected=False)

    async def _first_upstream(self) -> WebSocket | None:
        """Connect upstream while watching the station (§6.3: no upstream link for a station that is gone).

        The connect may take several attempts and back-off waits; a station that gives up meanwhile (its
        message timeout) would otherwise get an upstream link opened in its name after it left, and that link
        would replace, at the CSMS, the connection it made elsewhere in the meantime. What the station sends
        meanwhile (its BootNotification) is read here and fed to the relay, in order, once the link is up.

        Returns:
            The upstream WebSocket, or None when the station's link ended first (the upstream is not opened,
            or closed at once).

        Raises:
            UpgradeRejected, TransportError: as :meth:`_connect_upstream`.
        """
        early: list[str] = []
        got: list[WebSocket] = []
        failed: list[BaseException] = []
        station_gone: TransportError | None = None
        async with trio.open_nursery() as nursery:

            async def watch_station() -> None:
                nonlocal station_gone
                try:  # ends with the connect (cancelled) or with the station's link
                    while len(early) < self.lc.config.max_queue:
                        early.append(await self.station_ws.receive_text())
                    await trio.sleep_forever()  # read no further ahead: the relay reads the rest
                except TransportError as exc:
                    station_gone = exc
                    nursery.cancel_scope.cancel()

            async def connect() -> None:
                try:
                    got.append(await self._connect_upstream(first=True))
                except (UpgradeRejected, TransportError) as exc:
                    failed.append(exc)
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch_station)
            nursery.start_soon(connect)
        if station_gone is not None:
            if got:
                await aclose_ws(got[0], CLOSE_GOING_AWAY, "station disconnected")
                self.upstream_ws = None
            self._station_lost(station_gone)
            return None
        if failed:
            raise failed[0]
        self._early = early  # relayed by _upstream_side once the core knows the upstream is up
        return got[0]

    def _receive_early(self) -> None:
        """Feed the core what the station sent while the first upstream link was being connected."""
        early, self._early = self._early, []
        now = self.lc.clock.now
        for text in early:
            self.state.frames_up += 1
            events = self.core.receive(STATION, text, now())
            if events:
                self._handle(events)
        if early:
            self._after_change()

    def _round_trip(self, side: Side, seconds: float | None) -> None:
        """The controller hop's round trips: CALLs it relayed or sent towards the CSMS, per upstream endpoint."""
        if side == CSMS:
            self.lc.recorder.round_trip(self.name, self.state.upstream_endpoint or "?", seconds)

    async def _connect_upstream(self, *, first: bool) -> WebSocket:
        lc, cfg, state = self.lc, self.lc.config, self.state
        sid = state.station_id
        headers: list[tuple[str, str]] = []
        if self.authorization is not None:
            headers.append(("Authorization", self.authorization))
        else:
            password = cfg.upstream_passwords.get(sid, cfg.upstream_default_password)
            if password is not None:
                headers.append(basic_auth_header(sid, password))

        async def setup(stream: trio.abc.Stream, endpoint: Endpoint) -> WebSocket:
            if lc.cpu is not None:
                if isinstance(stream, TlsStream):
                    await lc.cpu.charge(
                        handshake_kind(stream.info, client_cert=endpoint.identity is not None)
                    )
                await lc.cpu.charge(("ws", "client"))
            ws = await ws_client(
                stream,
                host=endpoint.host,
                path=station_path(endpoint.path, sid),
                subprotocols=[self.subprotocol],
                headers=headers,
                compression=cfg.compression,
            )
            if ws.subprotocol != self.subprotocol:
                await ws.aclose(1002, "no common OCPP subprotocol")
                raise UpgradeRejected(426, f"CSMS does not speak {self.subprotocol}")
            return ws

        # First link for a station: a few attempts, the station waits meanwhile. Reconnects (keep_station):
        # until it works or the station leaves.
        attempts = cfg.upstream_connect_attempts if first else None
        if lc.cpu is not None:  # opening the link costs the controller (as a station's connection does); the
            # links it opens at one instant leave in the order of their station ids, so a seed gives one run
            await lc.cpu.charge(("conn", "client"), owner=sid)
        try:
            conn = await connect_service(
                lc.upstream,
                lc.network,
                clock=lc.clock,
                planner=state.planner,
                recorder=lc.recorder,
                source=cfg.host,
                max_attempts=attempts,
                setup=setup,
            )
        except ServiceUnavailable as exc:
            for attempt in exc.attempts:
                lc.upstream_failures[attempt.reason] += 1
            lc.recorder.emit(self.name, "upstream_failed", station=sid, reason=exc.reason)
            cause = exc.__cause__
            if isinstance(cause, UpgradeRejected):
                raise cause from exc
            raise
        for attempt in conn.failures:
            lc.upstream_failures[attempt.reason] += 1
        state.upstream_connects += 1
        state.upstream_endpoint = conn.endpoint.name
        if not first:
            state.upstream_reconnects += 1
        lc.recorder.emit(
            self.name, "upstream_connected", station=sid, endpoint=conn.endpoint.name, first=first
        )
        return conn.setup

    async def _station_side(self) -> None:
        """Read the station until its link ends; then the pair ends (the upstream is closed by run())."""
        try:
            await self._pump(STATION, self.station_ws)
        except TransportError as exc:
            self._station_lost(exc)

    def _station_lost(self, exc: TransportError) -> None:
        """The station's link ended (its reader saw it, or we dropped it, or it ended while the first upstream
        link was being connected): record it once with the link's reason (Close code, loss), end the pair."""
        if not self._station_lost_reported:
            self._station_lost_reported = True
            self.lc.recorder.emit(
                self.name, "station_link_lost", station=self.state.station_id, reason=failure_reason(exc)
            )
        if self._pair_scope is not None:
            self._pair_scope.cancel()

    async def _upstream_side(self, ws: WebSocket) -> None:
        """Read the CSMS link; on loss, close the pair or (keep_station) reconnect and replay."""
        cfg, state = self.lc.config, self.state
        reconnected = False
        while True:
            reason = "closed"
            self.upstream_ws = ws
            self.core.upstream_restored()
            self._receive_early()
            self._replay_backlog(reconnected=reconnected)
            reconnected = True
            await self._flush(CSMS)
            replaced = False
            try:
                await self._pump(CSMS, ws)
            except TransportError as exc:
                reason = failure_reason(exc)
                replaced = isinstance(exc, WebSocketClosed) and (exc.code, exc.reason) == REPLACED_CLOSE
            self.upstream_ws = None
            state.upstream_losses += 1
            self.lc.recorder.emit(self.name, "upstream_lost", station=state.station_id, reason=reason)
            await aclose_ws(ws, CLOSE_GOING_AWAY, "")
            if replaced:
                self._gone_close = REPLACED_CLOSE  # the identity lives elsewhere now: do not take it back
                if self.live:
                    state.replaced_upstream = (self.number, self.source)
            if cfg.on_upstream_loss == "close_station" or replaced or not self.live:
                raise _UpstreamGone(reason)
            self._handle(self.core.upstream_lost())
            await self._flush(STATION)
            ws = await self._connect_upstream(first=False)

    async def _pump(self, side: Side, ws: WebSocket) -> None:
        core, state = self.core, self.state
        to: Side = CSMS if side == STATION else STATION
        now = self.lc.clock.now
        while True:
            while not core.has_room(to):
                await self._wait_changed()
            text = await ws.receive_text()
            if self.lc.cpu is not None:
                await self.lc.cpu.charge(("relay", side), len(text))
            if side == STATION:
                state.frames_up += 1
            else:
                state.frames_down += 1
            events = core.receive(side, text, now())
            if events:
                self._handle(events)
            if core.station_boots_accepted and not (self._admitted and self.live):
                self._boot_accepted()
            self._after_change()
            if core.has_data_to_send(to):
                await self._flush(to)
            if core.has_data_to_send(side):
                await self._flush(side)

    async def _timer(self) -> None:
        """Sleep until the core's earliest deadline; park while there is none (an idle pair costs nothing)."""
        core = self.core
        while True:
            deadline = core.get_timer()
            if deadline is None:
                self._timer_parked = parked = trio.Event()
                await parked.wait()
                continue
            await trio.sleep_until(deadline)
            events = core.handle_timer(self.lc.clock.now())
            self._handle(events)
            self._after_change()
            await self._flush(STATION)
            await self._flush(CSMS)

    # ---- own CALLs and local answers ------------------------------------------------------------------

    async def own_call(self, to: Side, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        if to == CSMS and self.upstream_ws is None:
            raise OcppError("the CSMS link is down", error_code="GenericError")
        mid = self.core.own_call(to, action, payload, self.lc.clock.now())
        waiter = self._waiters[mid] = _Waiter()
        self._after_change()
        await self._flush(to)
        await waiter.event.wait()
        outcome = waiter.outcome
        if isinstance(outcome, OwnResult):
            return outcome.payload
        if isinstance(outcome, OwnError) and outcome.error_code != "ConnectionLost":
            raise CallErrorReceived(outcome.error_code, outcome.description)
        if isinstance(outcome, OwnTimedOut):
            raise CallTimeout(f"{action} got no answer within {self.core.call_timeout:g} s")
        raise TransportError(f"{action}: the link to the {to} was lost")

    def _replay_backlog(self, *, reconnected: bool) -> None:
        """Queue the backlog upstream as own CALLs, after the station's last BootNotification (see module doc).

        On an upstream *re*connection the boot goes first even with an empty backlog: the kept station will
        not boot again, and the CSMS (perhaps another endpoint) refuses anything before a boot on a new
        connection (B02.FR.09).
        """
        state = self.state
        if not self.live or (not state.backlog and not reconnected):
            return  # a newcomer not yet accepted does not touch the station's backlog
        boot = self.core.last_station_boot or state.last_boot
        now = self.lc.clock.now()
        if boot is not None:
            self.core.own_call(CSMS, "BootNotification", boot, now)
        if not state.backlog:
            return
        for entry in state.backlog:
            mid = self.core.own_call(CSMS, entry[0], entry[1], now)
            self._replays[mid] = entry
        self.lc.recorder.emit(self.name, "backlog_replay", station=state.station_id, calls=len(state.backlog))

    def _handle(self, events: list[RelayEvent]) -> None:
        for event in events:
            if isinstance(event, UnroutedCall):
                self._answer_locally(event)
            elif isinstance(event, Dropped):
                pass  # counted by the core
            else:
                entry = self._replays.pop(event.message_id, None)
                lost = isinstance(event, OwnTimedOut) or (
                    isinstance(event, OwnError) and event.error_code == "ConnectionLost"
                )
                if entry is not None and not lost:
                    # answered (even with a CALLERROR, after which the station itself would give up): done
                    with contextlib.suppress(ValueError):
                        self.state.backlog.remove(entry)
                    self.state.replayed += 1
                waiter = self._waiters.pop(event.message_id, None)
                if waiter is not None:
                    waiter.outcome = event
                    waiter.event.set()

    def _answer_locally(self, call: UnroutedCall) -> None:
        cfg, core, state = self.lc.config, self.core, self.state
        state.answered_locally += 1
        if call.action in cfg.store_and_forward:
            if len(state.backlog) >= cfg.max_backlog:
                core.reply_error(STATION, call.message_id, "InternalError", "Local Controller backlog full")
                return
            state.backlog.append((call.action, call.payload))
        if call.action == "Heartbeat":
            core.reply(STATION, call.message_id, {"currentTime": isoformat(self.lc.clock.utcnow())})
        elif call.action in _EMPTY_ANSWERS or call.action in cfg.store_and_forward:
            core.reply(STATION, call.message_id, {})
        else:
            core.reply_error(STATION, call.message_id, "InternalError", "CSMS unreachable (Local Controller)")

    def _wake_waiters(self) -> None:
        waiters, self._waiters = self._waiters, {}
        for waiter in waiters.values():
            waiter.event.set()

    # ---- plumbing ------------------------------------------------------------------------------------

    def _after_change(self) -> None:
        """Wake a reader waiting for room, and the timer if it parked and a deadline exists now."""
        if self._room_wanted:
            self._room_wanted = False
            self._changed.set()
            self._changed = trio.Event()
        parked = self._timer_parked
        if parked is not None and self.core.get_timer() is not None:
            self._timer_parked = None
            parked.set()

    async def _wait_changed(self) -> None:
        self._room_wanted = True
        await self._changed.wait()

    async def _flush(self, to: Side) -> None:
        """Write what the core has for ``to``, in order. Never raises a transport error: a link that fails
        to take a message is closed (dropped if it read nothing for its ``send_timeout``), so its own reader
        sees the loss and handles it."""
        ws = self.station_ws if to == STATION else self.upstream_ws
        async with self._locks[to]:
            while texts := self.core.data_to_send(to):
                if ws is None:
                    continue  # the CSMS link is down: the core turned its traffic into events already
                timeout = ws.send_timeout
                try:
                    with trio.CancelScope() as scope:
                        for text in texts:
                            scope.deadline = trio.current_time() + timeout
                            await ws.send_text(text)
                except TransportError:
                    await aclose_ws(ws, CLOSE_GOING_AWAY, "")
                    return
                if scope.cancelled_caught:
                    reason = f"the {to} read nothing for {timeout:g} s while messages waited for it"
                    await ws.abort(reason)
                    if to == STATION:  # its reader may be stuck writing upstream: end the pair here
                        self._station_lost(PeerNotReading(reason))
                    return


async def aclose_ws(ws: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(TransportError, trio.BrokenResourceError, trio.ClosedResourceError):
        await ws.aclose(code, reason)
