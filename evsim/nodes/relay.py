"""The relay bookkeeping of one station pair behind a Local Controller (sans-IO).

Theory of operation
-------------------
A Local Controller holds two WebSockets per station (OCPP-J §6.2, protocol-digest §4): station ↔ controller and
controller ↔ CSMS, under the station's identity. It relays every message both ways (§6.4) *as text*: the
endpoints validate, the controller only reads a frame's type, id and (for CALLs) action. :class:`RelayCore` is
that bookkeeping, fed received texts with :meth:`RelayCore.receive` and asked for texts to write with
:meth:`RelayCore.data_to_send`, in the style of :class:`~evsim.ocpp.rpc.RpcConnection`: no I/O, ``now`` passed
in, :meth:`~RelayCore.get_timer` / :meth:`~RelayCore.handle_timer`.

**Lanes.** On each link the controller is a *sender*: towards the station it sends the CSMS's CALLs and its own,
towards the CSMS the station's CALLs and its own (replays, see below). One :class:`_Lane` per direction keeps
what the controller sent there and has not seen answered:

* a relayed CALL goes out at once when nothing of the controller's own is queued or outstanding in that lane, so
  with no own CALLs the relay is fully transparent (a peer that breaks the one-outstanding-CALL rule is relayed
  as it is: the endpoints judge it);
* an own CALL waits until no CALL (relayed or own) is outstanding in the lane, and while it is outstanding the
  relayed CALLs queue behind it (FIFO): the controller keeps OCPP-J §4.1.1's one-outstanding-CALL rule on the
  link where it is the sender. The queue is bounded (``max_queue``): the node stops reading the other side
  while it is full (back-pressure, never unbounded buffering);
* a CALLRESULT / CALLERROR is routed by id: the id of the lane's outstanding own CALL ends that CALL (never
  forwarded, §6.4: "replies to LC-initiated messages SHALL NOT be forwarded"); any other reply is forwarded to
  the other side (a relayed CALL's answer, or a late answer the far endpoint will drop as it would directly).
  With one own CALL outstanding at a time and relayed CALLs held behind it, a reply's destination is never
  ambiguous, even if a peer reused the own CALL's id.

**Own message ids** are ``<id_prefix><n>`` and skip any id the other endpoint has in flight in that lane, so an
own CALL never shares an id with a relayed one (§6.4: LC ids "SHALL NOT collide"); the prefix carries a random
part per connection, as OCPP-J 2.1 §4.1.4 wants ids unique per sender across connections.

**Timeouts.** An own CALL times out after ``call_timeout`` (:class:`OwnTimedOut`). A relayed CALL's timeout is
its originator's business, but the lane forgets it after ``call_timeout`` too, so a peer that never answers
cannot block own CALLs forever.

**Upstream down** (the errata exception, ERR-201 §4.13, when the node keeps the station connected): the
controller answers station CALLs itself. :meth:`upstream_lost` turns the station CALLs that were queued or in
flight upstream into :class:`UnroutedCall` events, and every station CALL received while down becomes one; the
node answers them with :meth:`reply` / :meth:`reply_error` and keeps transaction-related ones to replay. A frame
that is not even a readable OCPP-J frame is answered here as the CSMS would (:func:`evsim.ocpp.framing.decode_frame`'s
CALLERROR); while up such a frame is relayed like any other, and the CSMS answers it.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from typing import Any, Final, Literal, TypeAlias

import attrs

from evsim.errors import ConfigError
from evsim.ocpp import framing
from evsim.ocpp.framing import CallError, CallResult, FrameDecodeError, MessageType

__all__ = [
    "CSMS",
    "STATION",
    "Dropped",
    "OwnError",
    "OwnResult",
    "OwnTimedOut",
    "RelayCore",
    "RelayEvent",
    "RelayStatistics",
    "Side",
    "UnroutedCall",
    "other_side",
]

Side: TypeAlias = Literal["station", "csms"]
STATION: Final[Side] = "station"
CSMS: Final[Side] = "csms"

#: Longest own id prefix: the counter needs room within messageId string[36] (OCPP-J 2.0.1 Table 4).
MAX_ID_PREFIX: Final = 24


def other_side(side: Side) -> Side:
    """The side a message received from ``side`` is relayed to."""
    return CSMS if side == STATION else STATION


# ---------------------------------------------------------------- events


@attrs.frozen
class OwnResult:
    """The CALLRESULT to one of the controller's own CALLs (sent towards ``side``)."""

    side: Side
    message_id: str
    action: str
    payload: dict[str, Any]


@attrs.frozen
class OwnError:
    """A CALLERROR to an own CALL, or the CALL was lost with its connection (``error_code`` ``"ConnectionLost"``)."""

    side: Side
    message_id: str
    action: str
    error_code: str
    description: str


@attrs.frozen
class OwnTimedOut:
    """No answer to an own CALL within ``call_timeout``."""

    side: Side
    message_id: str
    action: str


@attrs.frozen
class UnroutedCall:
    """A station CALL that cannot reach the CSMS (upstream down); the node must answer it.

    Attributes:
        message_id, action, payload: the CALL.
        resent: True when it had already been forwarded before the upstream was lost (the CSMS may have
            processed it; its answer was lost).
    """

    message_id: str
    action: str
    payload: dict[str, Any]
    resent: bool = False


@attrs.frozen
class Dropped:
    """A message for the CSMS while the upstream is down that needs no answer (a reply, a SEND)."""

    text: str


RelayEvent: TypeAlias = OwnResult | OwnError | OwnTimedOut | UnroutedCall | Dropped


@attrs.frozen
class RelayStatistics:
    """Counters of one relay.

    Attributes:
        frames_from_station / frames_from_csms: texts received from each side.
        relayed_to_csms / relayed_to_station: texts forwarded (relayed, not own).
        own_calls / own_results / own_errors / own_timeouts: the controller's own CALLs and their outcomes.
        stale_replies: replies matching nothing in flight (forwarded anyway).
        forgotten: relayed CALLs the lane stopped waiting for after ``call_timeout``.
        held_peak: most relayed CALLs held behind an own CALL at once.
        answered_locally: station CALLs answered by the controller (upstream down).
        dropped: texts for the CSMS discarded while the upstream was down.
    """

    frames_from_station: int
    frames_from_csms: int
    relayed_to_csms: int
    relayed_to_station: int
    own_calls: int
    own_results: int
    own_errors: int
    own_timeouts: int
    stale_replies: int
    forgotten: int
    held_peak: int
    answered_locally: int
    dropped: int


# ---------------------------------------------------------------- lanes


@attrs.define(slots=True)
class _Item:
    own: bool
    message_id: str
    action: str
    text: str
    deadline: float = 0.0
    sent_at: float = 0.0


@attrs.define
class _Lane:
    """What the controller sent towards one side and has not seen answered."""

    queue: collections.deque[_Item] = attrs.field(factory=collections.deque)
    own_out: _Item | None = None
    relayed_out: dict[str, _Item] = attrs.field(factory=dict)
    out: list[str] = attrs.field(factory=list)

    def ids_in_flight(self) -> Iterator[str]:
        yield from self.relayed_out
        for item in self.queue:
            if not item.own:
                yield item.message_id

    def deadlines(self) -> Iterator[float]:
        if self.own_out is not None:
            yield self.own_out.deadline
        for item in self.relayed_out.values():
            yield item.deadline


def _peek(text: str) -> list[Any] | None:
    """The frame as a JSON array with an int type and a str id, or None when that cannot be read."""
    try:
        value = framing.loads(text)
    except ValueError:
        return None
    if type(value) is not list or len(value) < 2 or type(value[0]) is not int or type(value[1]) is not str:
        return None
    return value


class RelayCore:
    """Routing, own CALLs and timeouts of one station pair (see the module docstring).

    Args:
        version: the pair's OCPP version (both links negotiated the same subprotocol); used only to answer
            unreadable frames while the upstream is down.
        id_prefix: prefix of own message ids (at most :data:`MAX_ID_PREFIX` characters).
        call_timeout: seconds before an own CALL times out and a relayed one is forgotten.
        max_queue: CALLs that may wait in one lane; :meth:`has_room` says when the node must stop reading.
        on_round_trip: called with the side and the seconds from sending a CALL there (relayed or own) to its
            answer, or None when the lane stopped waiting for it (an own CALL timed out, a relayed one was
            forgotten): the controller hop's round trips.

    Raises:
        ConfigError: a prefix that is empty or too long, a non-positive timeout or queue size.
    """

    def __init__(
        self,
        *,
        version: str = "2.0.1",
        id_prefix: str = "lc-",
        call_timeout: float = 30.0,
        max_queue: int = 16,
        on_round_trip: Callable[[Side, float | None], None] | None = None,
    ) -> None:
        if not 0 < len(id_prefix) <= MAX_ID_PREFIX:
            raise ConfigError(
                f"id_prefix must be 1..{MAX_ID_PREFIX} characters",
                path="controller.id_prefix",
                value=id_prefix,
            )
        for name, value in (("call_timeout", call_timeout), ("max_queue", max_queue)):
            if not value > 0:
                raise ConfigError(f"{name} must be positive", path=f"controller.{name}", value=value)
        self.version = version
        self.id_prefix = id_prefix
        self.call_timeout = float(call_timeout)
        self.max_queue = max_queue
        self._on_round_trip = on_round_trip
        self.upstream_up = True
        self.last_station_boot: dict[str, Any] | None = None
        #: the station's BootNotifications the CSMS answered with status Accepted
        self.station_boots_accepted = 0
        self._lanes: dict[Side, _Lane] = {STATION: _Lane(), CSMS: _Lane()}
        self._counter = 0
        self._stats: collections.Counter[str] = collections.Counter()

    # ---- inspection --------------------------------------------------------------------------------

    def has_room(self, to: Side) -> bool:
        """Whether the lane towards ``to`` can take another CALL (read the other side only when True)."""
        return len(self._lanes[to].queue) < self.max_queue

    def own_outstanding(self, to: Side) -> str | None:
        """Id of the own CALL outstanding towards ``to``, or None."""
        item = self._lanes[to].own_out
        return item.message_id if item is not None else None

    def in_flight(self, to: Side) -> frozenset[str]:
        """Ids of relayed CALLs sent (or queued) towards ``to`` and not yet answered."""
        return frozenset(self._lanes[to].ids_in_flight())

    def statistics(self) -> RelayStatistics:
        """A snapshot of the counters."""
        s = self._stats
        return RelayStatistics(
            frames_from_station=s["from_station"],
            frames_from_csms=s["from_csms"],
            relayed_to_csms=s["relayed_csms"],
            relayed_to_station=s["relayed_station"],
            own_calls=s["own_calls"],
            own_results=s["own_results"],
            own_errors=s["own_errors"],
            own_timeouts=s["own_timeouts"],
            stale_replies=s["stale"],
            forgotten=s["forgotten"],
            held_peak=s["held_peak"],
            answered_locally=s["answered_locally"],
            dropped=s["dropped"],
        )

    # ---- output ------------------------------------------------------------------------------------

    def has_data_to_send(self, to: Side) -> bool:
        """Whether :meth:`data_to_send` has something for ``to``."""
        return bool(self._lanes[to].out)

    def data_to_send(self, to: Side) -> list[str]:
        """Texts to write towards ``to``, in order (the lane's buffer is emptied)."""
        lane = self._lanes[to]
        out, lane.out = lane.out, []
        return out

    def get_timer(self) -> float | None:
        """The earliest deadline of an own or relayed CALL, or None."""
        deadlines = [d for lane in self._lanes.values() for d in lane.deadlines()]
        return min(deadlines) if deadlines else None

    # ---- input -------------------------------------------------------------------------------------

    def receive(self, side: Side, text: str, now: float) -> list[RelayEvent]:
        """Route one text received from ``side``.

        Never raises: whatever arrives is relayed, or (upstream down) answered or dropped.

        Args:
            side: where it came from.
            text: the WebSocket text message, as received.
            now: the current time (deadlines of CALLs sent because of it).

        Returns:
            Events for the node (own CALL outcomes, unroutable station CALLs, drops).
        """
        self._stats["from_" + side] += 1
        to = other_side(side)
        frame = _peek(text)
        if frame is None or frame[0] not in (2, 3, 4):
            # unreadable, or a type with no routing (CALLRESULTERROR, SEND, unknown): pass it on
            return self._forward(to, text, frame, now)
        mtype, mid = frame[0], frame[1]
        if mtype == MessageType.CALL:
            action = frame[2] if len(frame) > 2 and type(frame[2]) is str else ""
            if (
                side == STATION
                and action == "BootNotification"
                and len(frame) == 4
                and type(frame[3]) is dict
            ):
                self.last_station_boot = frame[3]
            if to == CSMS and not self.upstream_up:
                return self._unrouted(text, frame, now)
            self._submit(to, _Item(False, mid, action, text), now)
            return []
        # a reply (CALLRESULT / CALLERROR) to something the controller sent towards `side`
        lane = self._lanes[side]
        own = lane.own_out
        if own is not None and own.message_id == mid:
            lane.own_out = None
            self._round_trip(side, now - own.sent_at)
            event = self._own_outcome(side, own, frame, text)
            self._pump(side, now)
            return [event]
        item = lane.relayed_out.pop(mid, None)
        if item is None:
            self._stats["stale"] += 1
        else:
            self._round_trip(side, now - item.sent_at)
            if (
                side == CSMS
                and item.action == "BootNotification"
                and mtype == MessageType.CALLRESULT
                and len(frame) > 2
                and type(frame[2]) is dict
                and frame[2].get("status") == "Accepted"
            ):
                self.station_boots_accepted += 1
            self._pump(side, now)
        return self._forward(to, text, frame, now)

    def own_call(self, to: Side, action: str, payload: dict[str, Any], now: float) -> str:
        """Queue a CALL of the controller's own towards ``to``.

        Args:
            to: the side to send it to.
            action: message name without ``Request``.
            payload: request payload (not validated here: the receiving endpoint validates).
            now: the current time.

        Returns:
            The message id (never one the other endpoint has in flight in that lane).

        Raises:
            TypeError: the payload is not JSON-serializable.
        """
        lane = self._lanes[to]
        busy = set(lane.ids_in_flight())
        while True:
            self._counter += 1
            mid = f"{self.id_prefix}{self._counter}"
            if mid not in busy:
                break
        text = framing.encode_frame(framing.Call(mid, action, payload))
        lane.queue.append(_Item(True, mid, action, text))
        self._stats["own_calls"] += 1
        self._pump(to, now)
        return mid

    def reply(self, to: Side, message_id: str, payload: dict[str, Any]) -> None:
        """Answer a CALL received from ``to`` ourselves (upstream down)."""
        self._lanes[to].out.append(framing.encode_frame(CallResult(message_id, payload)))
        self._stats["answered_locally"] += 1

    def reply_error(self, to: Side, message_id: str, error_code: str, description: str) -> None:
        """Answer a CALL received from ``to`` with a CALLERROR ourselves (upstream down)."""
        self._lanes[to].out.append(framing.encode_frame(CallError(message_id, error_code, description)))
        self._stats["answered_locally"] += 1

    def handle_timer(self, now: float) -> list[RelayEvent]:
        """Time out own CALLs and forget relayed ones whose deadline passed.

        Returns:
            An :class:`OwnTimedOut` per own CALL that expired.
        """
        events: list[RelayEvent] = []
        for side, lane in self._lanes.items():
            own = lane.own_out
            if own is not None and own.deadline <= now:
                lane.own_out = None
                self._stats["own_timeouts"] += 1
                self._round_trip(side, None)
                events.append(OwnTimedOut(side, own.message_id, own.action))
            for mid in [m for m, item in lane.relayed_out.items() if item.deadline <= now]:
                del lane.relayed_out[mid]
                self._stats["forgotten"] += 1
                self._round_trip(side, None)
            self._pump(side, now)
        return events

    def upstream_lost(self) -> list[RelayEvent]:
        """The CSMS link is gone: end the own CALLs towards it, hand back the station CALLs it did not answer.

        Returns:
            :class:`OwnError` (``ConnectionLost``) per own CALL towards the CSMS, and :class:`UnroutedCall` per
            station CALL that was queued or in flight there, in the order they were received.
        """
        self.upstream_up = False
        lane = self._lanes[CSMS]
        events: list[RelayEvent] = []
        items = list(lane.relayed_out.values()) + ([lane.own_out] if lane.own_out else []) + list(lane.queue)
        in_flight = set(lane.relayed_out)
        self._lanes[CSMS] = _Lane()
        for item in items:
            if item.own:
                self._stats["own_errors"] += 1
                events.append(
                    OwnError(CSMS, item.message_id, item.action, "ConnectionLost", "CSMS link lost")
                )
                continue
            frame = _peek(item.text)
            if frame is not None and len(frame) == 4 and type(frame[3]) is dict:
                events.append(
                    UnroutedCall(item.message_id, item.action, frame[3], item.message_id in in_flight)
                )
        return events

    def upstream_restored(self) -> None:
        """A new CSMS link is up: relay to it again (its lane starts empty)."""
        self.upstream_up = True
        self._lanes[CSMS] = _Lane()

    # ---- internals ---------------------------------------------------------------------------------

    def _forward(self, to: Side, text: str, frame: list[Any] | None, now: float) -> list[RelayEvent]:
        if to == CSMS and not self.upstream_up:
            if frame is None or frame[0] == MessageType.CALL:
                return self._unrouted(text, frame, now)
            self._stats["dropped"] += 1
            return [Dropped(text)]
        self._lanes[to].out.append(text)
        self._stats["relayed_" + to] += 1
        return []

    def _unrouted(self, text: str, frame: list[Any] | None, now: float) -> list[RelayEvent]:
        """A station message while the upstream is down: a well-formed CALL goes to the node, the rest is
        answered (or not) exactly as the CSMS's RPC core would answer it."""
        try:
            decoded = framing.decode_frame(text, version=self.version)
        except FrameDecodeError as exc:
            if exc.reply:
                self.reply_error(STATION, exc.message_id, exc.error_code, exc.description)
            else:
                self._stats["dropped"] += 1
            return []
        if isinstance(decoded, framing.Call):
            return [UnroutedCall(decoded.message_id, decoded.action, decoded.payload)]
        self._stats["dropped"] += 1
        return [Dropped(text)]

    def _own_outcome(self, side: Side, own: _Item, frame: list[Any], text: str) -> RelayEvent:
        if frame[0] == MessageType.CALLRESULT and len(frame) == 3 and type(frame[2]) is dict:
            self._stats["own_results"] += 1
            return OwnResult(side, own.message_id, own.action, frame[2])
        self._stats["own_errors"] += 1
        if frame[0] == MessageType.CALLERROR and len(frame) == 5 and type(frame[2]) is str:
            return OwnError(side, own.message_id, own.action, frame[2], str(frame[3]))
        return OwnError(
            side, own.message_id, own.action, "FormatViolation", f"malformed answer: {text[:100]}"
        )

    def _round_trip(self, side: Side, seconds: float | None) -> None:
        if self._on_round_trip is not None:
            self._on_round_trip(side, seconds)

    def _submit(self, to: Side, item: _Item, now: float) -> None:
        lane = self._lanes[to]
        if not lane.queue and lane.own_out is None:
            self._send(to, lane, item, now)
            return
        lane.queue.append(item)
        held = sum(1 for i in lane.queue if not i.own)
        if held > self._stats["held_peak"]:
            self._stats["held_peak"] = held

    def _send(self, to: Side, lane: _Lane, item: _Item, now: float) -> None:
        item.deadline = now + self.call_timeout
        item.sent_at = now
        lane.out.append(item.text)
        if item.own:
            lane.own_out = item
        else:
            lane.relayed_out[item.message_id] = item
            self._stats["relayed_" + to] += 1

    def _pump(self, to: Side, now: float) -> None:
        """Release queued CALLs in order: relayed ones while no own CALL is out, an own one when nothing is."""
        lane = self._lanes[to]
        while lane.queue and lane.own_out is None:
            head = lane.queue[0]
            if head.own and lane.relayed_out:
                return
            lane.queue.popleft()
            self._send(to, lane, head, now)
