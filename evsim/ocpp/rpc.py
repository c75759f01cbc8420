"""The OCPP-J RPC state machine of one WebSocket connection (sans-IO).

Theory of operation
-------------------
:class:`RpcConnection` is a pure object in the style of h11, wsproto and aioquic: it never does I/O, never
reads a clock and never starts a task. The driver (:mod:`evsim.ocpp.session` under trio, or a test) feeds it
received WebSocket text messages with :meth:`~RpcConnection.receive`, tells it the time in ``now``
arguments, collects the text messages it wants sent with :meth:`~RpcConnection.data_to_send`, and calls
:meth:`~RpcConnection.handle_timer` when :meth:`~RpcConnection.get_timer` says so.

Outgoing CALLs. OCPP-J 2.1 §4.1.1: a side "SHALL NOT send a CALL message to the other party unless the
CALL message it sent before has been responded to or has timed out". :meth:`~RpcConnection.call` therefore
puts each request into a FIFO *outbox*; the head is *released* (its frame queued for sending, its deadline
set to ``now + call_timeout``) only when no CALL is outstanding. The outstanding CALL ends exactly once:
with a CALLRESULT (:class:`ResultReceived`), a CALLERROR (:class:`ErrorReceived`) or its deadline
(:class:`CallTimedOut`); then the next one is released at once. The outbox is bounded (``max_outbox``
CALLs, outstanding one included) and refuses more with :class:`~evsim.errors.OutboxFull`. The timeout is
implementation-defined (OCPP-J 2.0.1 §4.1.1); OCPP 2.0.1 Part 2 §3.2 suggests starting with 30 s.

Crossing CALLs are normal: the peer's CALLs arrive as :class:`CallReceived` independently of ours. We
remember which action each pending incoming CALL had, so :meth:`~RpcConnection.reply` validates the
response against the right schema. OCPP 2.1 SEND frames bypass the one-outstanding rule in both
directions and are never answered.

Remote input never raises. Every malformed frame or payload is answered (or dropped, where the spec says
not to answer) by the connection itself and reported as :class:`BadInput`:

* a CALL that cannot be parsed, names an unknown action (``NotImplemented``) or fails its schema (the
  mapped code, see :mod:`evsim.ocpp.schema`) gets a CALLERROR; the application never sees it;
* a CALLRESULT or CALLERROR whose id is not our outstanding CALL is dropped (it may be a late answer to a
  CALL that already timed out: "considered not sent", OCPP 2.0.1 Part 2 §3.2);
* a CALLRESULT for our outstanding CALL that fails the response schema, or a malformed CALLRESULT /
  CALLERROR frame whose id is our outstanding CALL's, *completes* that CALL as :class:`ErrorReceived`
  with ``local=True`` and the violation's error code: the peer did answer, so waiting for the timeout
  would only delay the next CALL. On 2.1 the bad CALLRESULT is also answered with a CALLRESULTERROR;
  on 2.0.1 it is not answered (OCPP-J 2.0.1 §4.2.3: a CALLRESULT is never answered);
* a bad SEND is dropped (OCPP-J 2.1: the receiver "SHALL NOT" reply to a SEND).

Local mistakes raise: a request or response payload failing its schema raises
:class:`~evsim.errors.SchemaViolation` before anything is queued, so the application can fix it (or
answer with :meth:`~RpcConnection.reply_error` instead).

Message ids. The default factory is a per-connection random prefix plus a counter: unique for this sender
on this and (with overwhelming probability) every other connection of the same station identity, as
OCPP-J 2.1 §4.1.4 requires, and at most 36 characters (OCPP-J 2.0.1 Table 4).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable
from typing import Any, Final, TypeAlias

import attrs

from evsim.errors import OcppError, OutboxFull, SchemaViolation
from evsim.ocpp import framing
from evsim.ocpp.framing import (
    MAX_MESSAGE_ID_LENGTH,
    CallError,
    CallResultError,
    FrameDecodeError,
    Send,
)
from evsim.ocpp.schema import SchemaRegistry
from evsim.ocpp.versions import check_version

#: Default CALL timeout in seconds: OCPP 2.0.1 Part 2 §3.2 "start with a 30 second timeout".
DEFAULT_CALL_TIMEOUT: Final = 30.0

#: Default-id prefix length: 16 hex digits = 64 random bits, so two connections of one station identity
#: practically never share a prefix; 16 + "-" + 19 counter digits = 36 characters at most.
ID_PREFIX_LENGTH: Final = 16

# --------------------------------------------------------------------------------------------------------
# Events


# The two events of every round trip are slotted but not frozen: a frozen attrs class sets each field through
# object.__setattr__ (≈0.55 µs per event against ≈0.23). Treat them as read-only all the same.


@attrs.define(slots=True)
class CallReceived:
    """The peer sent a valid CALL; answer it with :meth:`RpcConnection.reply` or ``reply_error``."""

    message_id: str
    action: str
    payload: dict[str, Any]


@attrs.frozen
class SendReceived:
    """OCPP 2.1: the peer sent a valid SEND (never answered)."""

    message_id: str
    action: str
    payload: dict[str, Any]


@attrs.define(slots=True)
class ResultReceived:
    """Our outstanding CALL ``action`` was answered with a valid CALLRESULT."""

    message_id: str
    action: str
    payload: dict[str, Any]
    round_trip: float | None = attrs.field(default=None, eq=False)
    """Seconds from sending the CALL to receiving this answer (a measurement: left out of comparisons)."""


@attrs.frozen
class ErrorReceived:
    """Our outstanding CALL ``action`` failed.

    ``local`` is False when the peer sent this CALLERROR, True when the peer's answer was unusable (a
    CALLRESULT failing its schema, a malformed CALLRESULT/CALLERROR frame) and this connection made up the
    error from the violation (the matching :class:`BadInput` precedes it).
    """

    message_id: str
    action: str
    error_code: str
    description: str
    details: dict[str, Any]
    local: bool = False
    round_trip: float | None = attrs.field(default=None, eq=False)
    """Seconds from sending the CALL to receiving the answer (a measurement: left out of comparisons)."""


@attrs.frozen
class ResultErrorReceived:
    """OCPP 2.1: the peer could not process our CALLRESULT ``message_id`` (a CALLRESULTERROR)."""

    message_id: str
    error_code: str
    description: str
    details: dict[str, Any]


@attrs.frozen
class CallTimedOut:
    """Our outstanding CALL got no answer within ``call_timeout``; the next CALL has been released."""

    message_id: str
    action: str


@attrs.frozen
class BadInput:
    """A received frame or payload was bad; the connection answered it itself (``replied``) or dropped it."""

    error: OcppError
    replied: bool


RpcEvent: TypeAlias = (
    CallReceived
    | SendReceived
    | ResultReceived
    | ErrorReceived
    | ResultErrorReceived
    | CallTimedOut
    | BadInput
)


@attrs.frozen
class RpcStatistics:
    """Snapshot of one connection's counters (frames and UTF-8 bytes in both directions)."""

    calls_sent: int
    calls_received: int
    results_sent: int
    results_received: int
    errors_sent: int
    errors_received: int
    sends_sent: int
    sends_received: int
    result_errors_sent: int
    result_errors_received: int
    timeouts: int
    bad_inputs: int
    outbox_length: int
    outstanding: int
    incoming_pending: int
    frames_in: int
    frames_out: int
    bytes_in: int
    bytes_out: int


# --------------------------------------------------------------------------------------------------------
# Message ids


def random_id_prefix(rng: random.Random | None = None) -> str:
    """A fresh 64-bit hex prefix for :func:`default_id_factory`.

    Args:
        rng: a seeded generator for reproducible runs; the module's generator when None.
    """
    bits = (rng or random).getrandbits(64)
    return f"{bits:016x}"


def default_id_factory(prefix: str) -> Callable[[], str]:
    """Message ids ``"<prefix>-<n>"`` with n = 1, 2, 3 ...: unique per prefix and at most 36 characters.

    Args:
        prefix: at most 16 characters (see :func:`random_id_prefix`); a fresh one per connection.

    Returns:
        A function returning the next id each call.

    Raises:
        ValueError: the prefix is longer than 16 characters.
    """
    if len(prefix) > ID_PREFIX_LENGTH:
        raise ValueError(f"message id prefix longer than {ID_PREFIX_LENGTH} characters: {prefix!r}")
    counter = itertools.count(1)
    head = prefix + "-"
    return lambda: head + str(next(counter))


# --------------------------------------------------------------------------------------------------------
# The connection


def _not_json(exc: TypeError) -> SchemaViolation:
    return SchemaViolation(f"payload is not JSON-serializable: {exc}", error_code="FormatViolation")


def _too_large(limit: int) -> SchemaViolation:
    return SchemaViolation(f"frame too large (limit {limit} bytes)", error_code="FormatViolation")


@attrs.define(slots=True)
class _OutgoingCall:
    message_id: str
    action: str
    payload: dict[str, Any]
    text: str
    size: int  # UTF-8 bytes of text
    deadline: float = math.inf
    sent_at: float = math.nan


class RpcConnection:
    """Sans-IO OCPP-J RPC endpoint for one WebSocket connection (see the module docstring).

    Args:
        version: ``"2.0.1"`` or ``"2.1"`` (the negotiated subprotocol's version).
        validate: check payloads against the OCA schemas in both directions. When False nothing is
            checked except that an incoming CALL names a known action.
        call_timeout: seconds to wait for the answer to a released CALL.
        max_outbox: most unfinished CALLs of ours (queued plus outstanding) and most frames waiting in
            :meth:`data_to_send` before :meth:`send_unconfirmed` refuses; back-pressure via ``OutboxFull``.
        max_incoming: most unanswered incoming CALLs; the peer should have at most one (OCPP-J §4.1.1),
            more are answered with ``RpcFrameworkError``.
        max_frame: largest frame accepted or sent, in UTF-8 bytes.
        id_factory: returns a new message id per CALL/SEND (unique for this sender, ≤ 36 characters);
            default: ids as ``default_id_factory(random_id_prefix())`` makes them, counted inline.

    Raises:
        ConfigError: unknown version.
        ValueError: a non-positive limit or timeout.
    """

    # one per connection end: slots instead of an instance dict (≈1.5 KiB each for a RPC core, bench/memory.py)
    __slots__ = (
        "_bad_inputs",
        "_bytes_in",
        "_bytes_out",
        "_calls_received",
        "_calls_sent",
        "_errors_received",
        "_errors_sent",
        "_frames_in",
        "_frames_out",
        "_id_count",
        "_id_head",
        "_incoming",
        "_is_21",
        "_next_id",
        "_out",
        "_outstanding",
        "_queue",
        "_result_errors_received",
        "_result_errors_sent",
        "_results_received",
        "_results_sent",
        "_schemas",
        "_sends_received",
        "_sends_sent",
        "_timeouts",
        "call_timeout",
        "has_data_to_send",
        "max_frame",
        "max_incoming",
        "max_outbox",
        "queued_bytes",
        "timer",
        "validate",
        "version",
    )

    def __init__(
        self,
        *,
        version: str = "2.0.1",
        validate: bool = True,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
        max_outbox: int = 64,
        max_incoming: int = 8,
        max_frame: int = framing.DEFAULT_MAX_FRAME,
        id_factory: Callable[[], str] | None = None,
    ) -> None:
        self.version = check_version(version)
        if call_timeout <= 0 or max_outbox < 1 or max_incoming < 1 or max_frame < 1:
            raise ValueError("call_timeout, max_outbox, max_incoming and max_frame must be positive")
        self.validate = validate
        self.call_timeout = float(call_timeout)
        self.max_outbox = max_outbox
        self.max_incoming = max_incoming
        self.max_frame = max_frame
        self._schemas = SchemaRegistry.for_version(version)
        # the default ids are made inline (no factory call per CALL): "<random prefix>-<counter>"
        self._next_id = id_factory
        self._id_head = random_id_prefix() + "-"
        self._id_count = 0
        self._is_21 = version == "2.1"

        # a list, not a deque: at most max_outbox entries, usually none (an empty deque is 624 bytes)
        self._queue: list[_OutgoingCall] = []
        self._outstanding: _OutgoingCall | None = None
        self._incoming: dict[str, str] = {}  # message id -> action of CALLs we still have to answer
        self._out: list[str] = []
        # plain attributes, not properties: the driver reads them several times per message
        self.has_data_to_send = False
        """True when :meth:`data_to_send` would return frames."""
        self.queued_bytes = 0
        """UTF-8 bytes of the frames :meth:`data_to_send` would return (what the driver must bound)."""
        self.timer: float | None = None
        """What :meth:`get_timer` returns, as an attribute (no call for a driver that reads it per message)."""

        self._calls_sent = self._calls_received = 0
        self._results_sent = self._results_received = 0
        self._errors_sent = self._errors_received = 0
        self._sends_sent = self._sends_received = 0
        self._result_errors_sent = self._result_errors_received = 0
        self._timeouts = self._bad_inputs = 0
        self._frames_in = self._frames_out = 0
        self._bytes_in = self._bytes_out = 0

    # ---- inspection ---------------------------------------------------------------------------------

    @property
    def outstanding_id(self) -> str | None:
        """Message id of our outstanding CALL, or None."""
        return self._outstanding.message_id if self._outstanding is not None else None

    def pending_incoming(self) -> dict[str, str]:
        """Incoming CALLs not answered yet, message id → action (a copy)."""
        return dict(self._incoming)

    def statistics(self) -> RpcStatistics:
        """A snapshot of the counters."""
        return RpcStatistics(
            calls_sent=self._calls_sent,
            calls_received=self._calls_received,
            results_sent=self._results_sent,
            results_received=self._results_received,
            errors_sent=self._errors_sent,
            errors_received=self._errors_received,
            sends_sent=self._sends_sent,
            sends_received=self._sends_received,
            result_errors_sent=self._result_errors_sent,
            result_errors_received=self._result_errors_received,
            timeouts=self._timeouts,
            bad_inputs=self._bad_inputs,
            outbox_length=len(self._queue),
            outstanding=0 if self._outstanding is None else 1,
            incoming_pending=len(self._incoming),
            frames_in=self._frames_in,
            frames_out=self._frames_out,
            bytes_in=self._bytes_in,
            bytes_out=self._bytes_out,
        )

    # ---- sending ------------------------------------------------------------------------------------

    def _encode(self, value: list[Any]) -> bytes:
        """Serialize an outgoing frame to UTF-8 (its length is the frame's size); refuse what the peer could
        not take."""
        try:
            data = framing.dumps_utf8(value)
        except TypeError as exc:
            raise _not_json(exc) from None
        if len(data) > self.max_frame:
            raise _too_large(self.max_frame)
        return data

    def _emit(self, text: str, size: int) -> None:
        """Queue a frame of ``size`` UTF-8 bytes for :meth:`data_to_send` (inlined in :meth:`reply`)."""
        self._out.append(text)
        self.has_data_to_send = True
        self._frames_out += 1
        self._bytes_out += size
        self.queued_bytes += size

    def _new_id(self) -> str:
        factory = self._next_id
        if factory is None:
            self._id_count += 1
            return self._id_head + str(self._id_count)  # 16 + 1 + at most 19 digits: 36 characters
        mid = factory()
        if type(mid) is not str or len(mid) > MAX_MESSAGE_ID_LENGTH:
            raise ValueError(f"id_factory returned an invalid message id: {mid!r}")
        return mid

    def _start(self, head: _OutgoingCall, now: float) -> None:
        """Send ``head`` as the outstanding CALL (none is outstanding)."""
        head.deadline = now + self.call_timeout
        head.sent_at = now
        self._outstanding = head
        self.timer = head.deadline
        self._emit(head.text, head.size)
        self._calls_sent += 1

    def _release(self, now: float) -> None:
        """Send the head of the outbox if no CALL is outstanding (OCPP-J 2.1 §4.1.1)."""
        if self._outstanding is None and self._queue:
            self._start(self._queue.pop(0), now)

    def call(self, action: str, payload: dict[str, Any], now: float) -> str:
        """Queue a CALL; it is sent as soon as no other CALL of ours is outstanding.

        Args:
            action: the message name without ``Request`` (``"BootNotification"``).
            payload: the request payload (checked against the schema when ``validate``).
            now: the current time; starts the timeout if the CALL is released at once.

        Returns:
            The CALL's message id; its outcome arrives as :class:`ResultReceived`, :class:`ErrorReceived`
            or :class:`CallTimedOut` with this id.

        Raises:
            SchemaViolation: the payload fails the request schema, the action is unknown (NotImplemented),
                the payload is not JSON-serializable or the frame would exceed ``max_frame``.
            OutboxFull: ``max_outbox`` CALLs are already unfinished.
        """
        if self.validate:
            if action not in self._schemas.call_actions:
                raise SchemaViolation(f"{action} is not a CALL action", error_code="NotImplemented")
            schemas = self._schemas
            (schemas.request_checks.get(action) or schemas.checker(action, "request"))(payload)
        if len(self._queue) + (self._outstanding is not None) >= self.max_outbox:
            raise OutboxFull(f"{self.max_outbox} CALLs already waiting; {action} refused")
        if self._next_id is None:  # _new_id inlined: once per CALL
            self._id_count += 1
            mid = self._id_head + str(self._id_count)
        else:
            mid = self._new_id()
        try:  # _encode inlined
            data = framing.dumps_utf8([2, mid, action, payload])
        except TypeError as exc:
            raise _not_json(exc) from None
        size = len(data)
        if size > self.max_frame:
            raise _too_large(self.max_frame)
        text = data.decode()
        if (
            self._outstanding is None and not self._queue
        ):  # the usual case: it goes out at once (_start inlined)
            deadline = self.timer = now + self.call_timeout
            self._outstanding = _OutgoingCall(mid, action, payload, text, size, deadline, now)
            self._out.append(text)
            self.has_data_to_send = True
            self._frames_out += 1
            self._bytes_out += size
            self.queued_bytes += size
            self._calls_sent += 1
        else:
            self._queue.append(_OutgoingCall(mid, action, payload, text, size))
        return mid

    def cancel_call(self, message_id: str) -> bool:
        """Withdraw a CALL that is still queued (not yet released).

        Returns:
            True if it was withdrawn; False if it is outstanding (already sent: its outcome will still be
            reported), finished, or unknown.
        """
        for i, item in enumerate(self._queue):
            if item.message_id == message_id:
                del self._queue[i]
                return True
        return False

    def send_unconfirmed(self, action: str, payload: dict[str, Any]) -> str:
        """OCPP 2.1: queue a SEND frame (never answered, not subject to the one-outstanding rule).

        Args:
            action: the full message name (``"NotifyPeriodicEventStream"``).
            payload: its payload (checked against the schema when ``validate``).

        Returns:
            The SEND's message id.

        Raises:
            OcppError: the connection is OCPP 2.0.1 (``MessageTypeNotSupported``).
            SchemaViolation: invalid payload or unknown SEND action (NotImplemented).
            OutboxFull: ``max_outbox`` frames are already waiting in :meth:`data_to_send`.
        """
        if not self._is_21:
            raise OcppError("SEND exists in OCPP 2.1 only", error_code="MessageTypeNotSupported")
        if self.validate:
            if not self._schemas.is_send_action(action):
                raise SchemaViolation(f"{action} is not a SEND action", error_code="NotImplemented")
            self._schemas.validate(action, "request", payload)
        if len(self._out) >= self.max_outbox:
            raise OutboxFull(f"{len(self._out)} frames waiting to be sent; SEND {action} refused")
        mid = self._new_id()
        data = self._encode([6, mid, action, payload])
        self._emit(data.decode(), len(data))
        self._sends_sent += 1
        return mid

    def reply(self, message_id: str, payload: dict[str, Any]) -> None:
        """Answer a received CALL with a CALLRESULT.

        Args:
            message_id: the id of a :class:`CallReceived` not answered yet.
            payload: the response payload, checked against that CALL's action's response schema.

        Raises:
            ValueError: no unanswered CALL has this id.
            SchemaViolation: the payload fails the response schema or cannot be sent; the CALL stays
                unanswered so :meth:`reply_error` can still answer it.
        """
        action = self._incoming.get(message_id)
        if action is None:
            raise ValueError(f"no unanswered incoming CALL with id {message_id!r}")
        if self.validate:
            schemas = self._schemas
            (schemas.response_checks.get(action) or schemas.checker(action, "response"))(payload)
        try:  # _encode inlined
            data = framing.dumps_utf8([3, message_id, payload])
        except TypeError as exc:
            raise _not_json(exc) from None
        size = len(data)
        if size > self.max_frame:
            raise _too_large(self.max_frame)
        del self._incoming[message_id]
        # _emit inlined: once per answered CALL
        self._out.append(data.decode())
        self.has_data_to_send = True
        self._frames_out += 1
        self._bytes_out += size
        self.queued_bytes += size
        self._results_sent += 1

    def reply_error(
        self, message_id: str, error_code: str, description: str = "", details: dict[str, Any] | None = None
    ) -> None:
        """Answer a received CALL with a CALLERROR.

        Args:
            message_id: the id of a :class:`CallReceived` not answered yet.
            error_code: one of :data:`evsim.ocpp.framing.ERROR_CODES`.
            description: free text, truncated to 255 characters (OCPP-J 2.0.1 Table 7).
            details: JSON object with more information, ``{}`` when None.

        Raises:
            ValueError: no unanswered CALL has this id, or ``error_code`` is not an OCPP-J error code.
            SchemaViolation: ``details`` is not JSON-serializable.
        """
        if message_id not in self._incoming:
            raise ValueError(f"no unanswered incoming CALL with id {message_id!r}")
        if error_code not in framing.ERROR_CODES:
            raise ValueError(f"not an OCPP-J error code: {error_code!r}")
        data = self._encode(
            [4, message_id, error_code, framing.truncate_description(description), details or {}]
        )
        del self._incoming[message_id]
        self._emit(data.decode(), len(data))
        self._errors_sent += 1

    def _send_error(self, message_id: str, error: OcppError, *, result_error: bool = False) -> None:
        """Answer bad input ourselves (the error texts are ours, always serializable)."""
        code = 5 if result_error else 4
        data = framing.dumps_utf8(
            [code, message_id, error.error_code, framing.truncate_description(error.description), {}]
        )
        self._emit(data.decode(), len(data))
        if result_error:
            self._result_errors_sent += 1
        else:
            self._errors_sent += 1

    def data_to_send(self) -> list[str]:
        """Take the text messages waiting to be sent, oldest first (empties the queue)."""
        out = self._out
        self._out = []
        self.has_data_to_send = False
        self.queued_bytes = 0
        return out

    # ---- timers -------------------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """Deadline of the outstanding CALL (call :meth:`handle_timer` then), or None (also :attr:`timer`)."""
        return self.timer

    def handle_timer(self, now: float) -> list[RpcEvent]:
        """Expire the outstanding CALL if its deadline has passed, releasing the next one.

        Args:
            now: the current time.

        Returns:
            ``[CallTimedOut(...)]`` or ``[]``.
        """
        current = self._outstanding
        if current is None or now < current.deadline:
            return []
        self._timeouts += 1
        self._outstanding = None
        self.timer = None
        self._release(now)
        return [CallTimedOut(current.message_id, current.action)]

    def cancel_pending(self) -> list[tuple[str, dict[str, Any]]]:
        """Forget every unfinished CALL of ours (on disconnect) and return them for requeueing.

        Also forgets unanswered incoming CALLs and drops frames not yet taken by :meth:`data_to_send`
        (they belonged to the lost connection). Counters are kept.

        Returns:
            ``(action, payload)`` of the outstanding CALL (first) and of every queued CALL, in order.
        """
        pending: list[tuple[str, dict[str, Any]]] = []
        if self._outstanding is not None:
            pending.append((self._outstanding.action, self._outstanding.payload))
            self._outstanding = None
            self.timer = None
        pending.extend((item.action, item.payload) for item in self._queue)
        self._queue.clear()
        self._incoming.clear()
        self._out = []
        self.has_data_to_send = False
        self.queued_bytes = 0
        return pending

    # ---- receiving ----------------------------------------------------------------------------------

    def _bad(self, error: OcppError, replied: bool) -> BadInput:
        self._bad_inputs += 1
        return BadInput(error, replied)

    def _finish(self, now: float) -> _OutgoingCall:
        """End the outstanding CALL and release the next one."""
        current = self._outstanding
        assert current is not None
        self._outstanding = None
        self.timer = None
        self._release(now)
        return current

    def receive(self, text: str, now: float) -> list[RpcEvent]:
        """Process one received WebSocket text message.

        Never raises: bad input is answered or dropped here and reported as :class:`BadInput`.

        Args:
            text: the message.
            now: the current time (starts the timeout of a CALL released because this one finished).

        Returns:
            The events, in order (usually one; a :class:`BadInput` may precede the :class:`ErrorReceived`
            it caused).
        """
        self._frames_in += 1
        size = len(text) if text.isascii() else framing.utf8_length(text)
        self._bytes_in += size
        if size > self.max_frame:
            return self._bad_frame(
                FrameDecodeError(
                    f"frame too large (limit {self.max_frame} bytes)", error_code="FormatViolation"
                ),
                now,
            )
        try:
            msg = framing.parse_json(text)
        except framing.JSONDecodeError:
            return self._bad_frame(FrameDecodeError("invalid JSON"), now)
        # framing.decoded_call_or_result's checks of the two frames of every round trip, inlined
        if type(msg) is list:
            n = len(msg)
            if n == 3 or n == 4:
                raw_type, mid = msg[0], msg[1]
                if type(raw_type) is int and type(mid) is str and len(mid) <= MAX_MESSAGE_ID_LENGTH:
                    if raw_type == 3 and n == 3 and type(msg[2]) is dict:
                        return self._on_result(mid, msg[2], now)
                    if raw_type == 2 and n == 4 and type(msg[2]) is str and type(msg[3]) is dict:
                        return self._on_call(mid, msg[2], msg[3])
        try:
            frame = framing.decoded_call_or_result(msg, version=self.version)
        except FrameDecodeError as exc:
            return self._bad_frame(exc, now)

        if type(frame) is list:  # a well-formed CALL or CALLRESULT (handled above; kept for completeness)
            if frame[0] == 2:
                return self._on_call(frame[1], frame[2], frame[3])
            return self._on_result(frame[1], frame[2], now)
        if type(frame) is CallError:
            return self._on_error(frame, now)
        if type(frame) is Send:
            return self._on_send(frame)
        assert type(frame) is CallResultError
        self._result_errors_received += 1
        return [ResultErrorReceived(frame.message_id, frame.error_code, frame.description, frame.details)]

    def _bad_frame(self, exc: FrameDecodeError, now: float) -> list[RpcEvent]:
        mtype = exc.message_type
        if exc.reply:
            self._send_error(exc.message_id, exc, result_error=mtype == framing.MessageType.CALLRESULT)
        events: list[RpcEvent] = [self._bad(exc, exc.reply)]
        current = self._outstanding
        if (
            current is not None
            and exc.message_id == current.message_id
            and mtype in (framing.MessageType.CALLRESULT, framing.MessageType.CALLERROR)
        ):
            self._finish(now)
            self._errors_received += 1
            events.append(
                ErrorReceived(
                    current.message_id,
                    current.action,
                    exc.error_code,
                    f"malformed {mtype.name}: {exc.description}",
                    {},
                    local=True,
                    round_trip=now - current.sent_at,
                )
            )
        return events

    def _on_call(self, mid: str, action: str, payload: dict[str, Any]) -> list[RpcEvent]:
        if mid in self._incoming:
            # Answering would give the peer two answers for one id; drop it.
            return [
                self._bad(FrameDecodeError(f"duplicate CALL id {mid!r}", message_id=mid, reply=False), False)
            ]
        if len(self._incoming) >= self.max_incoming:
            error: OcppError = FrameDecodeError(
                f"more than {self.max_incoming} unanswered CALLs (OCPP-J §4.1.1)", message_id=mid
            )
            self._send_error(mid, error)
            return [self._bad(error, True)]
        if action not in self._schemas.call_actions:
            error = OcppError(f"unknown action {action!r}", error_code="NotImplemented")
            self._send_error(mid, error)
            return [self._bad(error, True)]
        if self.validate:
            schemas = self._schemas
            try:
                (schemas.request_checks.get(action) or schemas.checker(action, "request"))(payload)
            except SchemaViolation as exc:
                self._send_error(mid, exc)
                return [self._bad(exc, True)]
        self._incoming[mid] = action
        self._calls_received += 1
        return [CallReceived(mid, action, payload)]

    def _on_result(self, mid: str, payload: dict[str, Any], now: float) -> list[RpcEvent]:
        current = self._outstanding
        if current is None or current.message_id != mid:
            error = FrameDecodeError(
                f"CALLRESULT {mid!r} matches no outstanding CALL",
                message_id=mid,
                reply=False,
            )
            return [self._bad(error, False)]
        if self.validate:
            schemas = self._schemas
            action = current.action
            try:
                (schemas.response_checks.get(action) or schemas.checker(action, "response"))(payload)
            except SchemaViolation as exc:
                if self._is_21:
                    self._send_error(mid, exc, result_error=True)
                self._finish(now)
                self._errors_received += 1
                return [
                    self._bad(exc, self._is_21),
                    ErrorReceived(
                        current.message_id,
                        current.action,
                        exc.error_code,
                        f"invalid CALLRESULT: {exc.description}",
                        {},
                        local=True,
                        round_trip=now - current.sent_at,
                    ),
                ]
        self._outstanding = None  # _finish inlined
        self.timer = None
        if self._queue:
            self._start(self._queue.pop(0), now)
        self._results_received += 1
        return [ResultReceived(current.message_id, current.action, payload, now - current.sent_at)]

    def _on_error(self, frame: CallError, now: float) -> list[RpcEvent]:
        current = self._outstanding
        if current is None or current.message_id != frame.message_id:
            error = FrameDecodeError(
                f"CALLERROR {frame.message_id!r} matches no outstanding CALL",
                message_id=frame.message_id,
                reply=False,
            )
            return [self._bad(error, False)]
        self._finish(now)
        self._errors_received += 1
        return [
            ErrorReceived(
                current.message_id,
                current.action,
                frame.error_code,
                frame.description,
                frame.details,
                round_trip=now - current.sent_at,
            )
        ]

    def _on_send(self, frame: Send) -> list[RpcEvent]:
        if not self._schemas.is_send_action(frame.action):
            return [
                self._bad(
                    OcppError(f"unknown SEND action {frame.action!r}", error_code="NotImplemented"), False
                )
            ]
        if self.validate:
            try:
                self._schemas.validate(frame.action, "request", frame.payload)
            except SchemaViolation as exc:
                return [self._bad(exc, False)]
        self._sends_received += 1
        return [SendReceived(frame.message_id, frame.action, frame.payload)]
