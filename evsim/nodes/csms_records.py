"""What the CSMS keeps per station: its record, its connections, its transactions and what it refused.

Theory of operation. A :class:`StationRecord` is everything the CSMS knows about one station identity and
survives reconnects (boots, connector status, transactions with their seqNos, security events, message
counts); several CSMS endpoints of one operator may share a dict of them (``Csms(store=)``). Each upgraded
connection speaking for the station is a :class:`StationConnection`: a record has at most one live connection
(its session, see :func:`make_live`), and a newer one waits beside it until its own BootNotification is
Accepted. A :class:`TransactionRecord` holds one transaction's seqNos as runs of consecutive numbers, so a
resent TransactionEvent is recognised as a duplicate and never double-counted. Each connection has an
:class:`InputLog`, the one place its refusals (bad frames, out-of-range values, reused CALL ids) are
recorded, within a budget. Nothing here does I/O: the CSMS (:mod:`evsim.nodes.csms`) fills these records
from the OCPP calls it handles.

Memory per station is bounded, whatever a station sends:

* a record whose station never got an Accepted BootNotification is dropped when its connection ends (its
  message counts stay in :meth:`~evsim.nodes.csms.Csms.statistics`);
* a transaction's seqNos are runs of consecutive numbers (:class:`~evsim.ocpp.seqno.SeqNos`): constant memory
  and O(1) per event for a transaction delivered in order, however long, at most ``MAX_RUNS`` runs otherwise;
* at most :data:`MAX_TRANSACTIONS_KEPT` transactions are kept per station: opening one more retires the
  oldest, whose counts (started, ended, events, duplicates, offline events) are added to the station's
  ``retired`` totals, so statistics and reports do not change; an event for a retired transaction starts a new
  record;
* at most :data:`MAX_CONNECTORS` (evseId, connectorId) pairs per station (one more: CALLERROR
  ``OccurrenceConstraintViolation``), and the last :data:`SECURITY_EVENTS_KEPT` security events (all are
  counted).
"""

from __future__ import annotations

import collections
from typing import Any

import attrs
import trio

from evsim.ocpp.rpc import BadInput, CallReceived, RpcEvent
from evsim.ocpp.seqno import SeqNos
from evsim.ocpp.session import OcppSession
from evsim.recorder import Recorder
from evsim.tls.stream import TlsInfo
from evsim.ws import WebSocket

MAX_TRANSACTIONS_KEPT = 100
"""Transactions kept per station; opening one more retires the oldest into :attr:`StationRecord.retired`."""
MAX_CONNECTORS = 64
"""Distinct (evseId, connectorId) pairs whose status is kept per station."""
SECURITY_EVENTS_KEPT = 100
"""The most recent SecurityEventNotifications kept per station (:attr:`StationRecord.security_events`, empty ``()`` until the first)."""
BAD_INPUT_EVENTS = 10
"""Refusals (``bad_input``, ``value_refused``) recorded per connection; after that one ``bad_input_suppressed``
event, then silence (a peer sending nothing but bad frames or values must not turn each into a log line)."""

RECENT_CALL_IDS = 8
"""Ids of a connection's last CALLs remembered to notice one reused (OCPP-J: every CALL of a sender on a
connection has a new id)."""


@attrs.define
class TransactionRecord:
    """What the CSMS saw of one transaction.

    Attributes:
        seq_nos: the seqNos received (runs of consecutive numbers: constant size for an in-order transaction).
        events: TransactionEvents received, duplicates not counted.
    """

    transaction_id: str
    seq_nos: SeqNos = attrs.field(factory=SeqNos)
    started: bool = False
    ended: bool = False
    offline_events: int = 0
    duplicates: int = 0
    energy_wh: float = 0.0

    @property
    def events(self) -> int:
        return self.seq_nos.count

    def gap_free(self) -> bool:
        """True if the seqNos received are exactly 0..events-1 (none missing, none out of place)."""
        return self.seq_nos.gap_free()


@attrs.define
class RetiredTransactions:
    """The counts of a station's transactions no longer kept (see :data:`MAX_TRANSACTIONS_KEPT`)."""

    transactions: int = 0
    started: int = 0
    ended: int = 0
    events: int = 0
    duplicates: int = 0
    offline_events: int = 0

    def add(self, tx: TransactionRecord) -> None:
        self.transactions += 1
        self.started += tx.started
        self.ended += tx.ended
        self.events += tx.events
        self.duplicates += tx.duplicates
        self.offline_events += tx.offline_events


@attrs.define(eq=False)
class StationConnection:
    """One upgraded connection speaking for a station (a record may have several, see the module doc).

    Attributes:
        number: the record's connection count when it arrived (1 = the first).
        source: the remote host.
        accepted: its BootNotification was Accepted (B02.FR.09 is per connection).
        replaced: a newer connection took over; it is being closed with 1008.
        inputs: records what the connection's peer sent that was refused (see :class:`InputLog`).
    """

    number: int
    source: str
    ws: WebSocket
    tls: TlsInfo | None
    controller: str | None
    serial_from_cert: str | None
    inputs: InputLog
    accepted: bool = False
    replaced: bool = False
    session: OcppSession | None = None
    cancel_scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)


@attrs.define
class StationRecord:
    """Everything the CSMS knows about one station; the fields of the live connection (``accepted``,
    ``connected``, ``subprotocol``, ``tls``, ``serial_from_cert``, ``via_controller``, ``session``) are those of
    ``connection``, the station's session."""

    station_id: str
    accepted: bool = False
    boots: int = 0
    heartbeats: int = 0
    connections: int = 0
    connected: bool = False
    subprotocol: str | None = None
    tls: TlsInfo | None = None
    serial_from_cert: str | None = None
    via_controller: str | None = None
    connectors: dict[tuple[int, int], str] = attrs.field(factory=dict)
    transactions: dict[str, TransactionRecord] = attrs.field(factory=dict)
    retired: RetiredTransactions = attrs.field(factory=RetiredTransactions)
    security_events: collections.deque[dict[str, Any]] | tuple[()] = ()
    security_events_total: int = 0
    messages: collections.Counter[str] = attrs.field(factory=collections.Counter)
    session: OcppSession | None = None
    connection: StationConnection | None = None
    firmware_status: str | None = None
    """The last FirmwareStatusNotification status (None before the first)."""
    log_status: str | None = None
    """The last LogStatusNotification status (None before the first)."""
    upgrade_to: int = 0
    """The security profile the CSMS asked the station to move up to (A05), until it connects with it."""
    security_floor: int = 0
    """The lowest security profile the CSMS still admits the station with: raised when it connected after an
    upgrade (A05.FR.07); 0: any."""

    def tx_events(self) -> int:
        """TransactionEvents received from this station (duplicates not counted), retired ones included."""
        return self.retired.events + sum(tx.events for tx in self.transactions.values())


class InputLog:
    """What one station connection sent that was refused or broke the rules, recorded with a budget.

    It is the connection's :class:`OcppSession` ``on_event`` hook: each bad frame or payload the session
    answered or dropped is recorded as ``bad_input`` (reason: the CALLERROR code; detail: its description), and
    so is a CALL whose id one of the last :data:`RECENT_CALL_IDS` CALLs had (it is answered: reason
    ``RpcFrameworkError``, ``replied`` True). The CSMS records its own refusals through :meth:`emit` too (a
    CALL before an Accepted boot, an out-of-range value). Up to :data:`BAD_INPUT_EVENTS` such events per
    connection; every other RPC event goes to :meth:`Recorder.trace` as a ``message`` when the recorder traces.
    """

    __slots__ = ("_count", "_node", "_recent", "_recorder", "_station_id")

    def __init__(self, recorder: Recorder, node: str, station_id: str) -> None:
        self._recorder = recorder
        self._node = node
        self._station_id = station_id
        self._count = 0
        self._recent: list[str] = []  # the last RECENT_CALL_IDS (a short list is smaller than a deque)

    def emit(self, kind: str, **fields: Any) -> None:
        """Record one refusal (within the connection's budget)."""
        self._count += 1
        if self._count <= BAD_INPUT_EVENTS:
            self._recorder.emit(self._node, kind, station=self._station_id, **fields)
        elif self._count == BAD_INPUT_EVENTS + 1:
            self._recorder.emit(
                self._node, "bad_input_suppressed", station=self._station_id, after=BAD_INPUT_EVENTS
            )

    def __call__(self, event: RpcEvent) -> None:
        if isinstance(event, BadInput):
            error = event.error
            self.emit(
                "bad_input",
                reason=error.error_code,
                detail=getattr(error, "description", str(error)),
                replied=event.replied,
            )
            return
        if isinstance(event, CallReceived):
            mid = event.message_id
            if mid in self._recent:
                self.emit(
                    "bad_input",
                    reason="RpcFrameworkError",
                    detail=f"CALL id {mid!r} reused (answered again)",
                    replied=True,
                )
            self._recent.append(mid)
            if len(self._recent) > RECENT_CALL_IDS:
                del self._recent[0]
        if self._recorder.tracing:
            fields = {
                name: getattr(event, name)
                for name in ("message_id", "action", "error_code", "description")
                if hasattr(event, name)
            }
            self._recorder.trace(
                self._node, "message", station=self._station_id, received=type(event).__name__, **fields
            )


def make_live(rec: StationRecord, conn: StationConnection) -> None:
    """Make ``conn`` the station's session: the record's connection fields become its."""
    rec.connection = conn
    rec.session = conn.session
    rec.connected = True
    rec.accepted = conn.accepted
    rec.subprotocol = conn.ws.subprotocol
    rec.tls = conn.tls
    rec.via_controller = conn.controller
    rec.serial_from_cert = conn.serial_from_cert
