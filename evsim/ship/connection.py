"""The SHIP connection set-up as a sans-IO state machine (SHIP 13.4, ``protocol-digest.md`` §8).

Theory of operation
-------------------
A :class:`ShipConnection` is one side of one SHIP connection, after TLS and the WebSocket opening handshake
(subprotocol ``ship``). It is fed the binary WebSocket messages the peer sent (:meth:`~ShipConnection.receive`)
and the time (every call takes ``now``, trio seconds); it returns the messages to send
(:meth:`~ShipConnection.data_to_send`), its next deadline (:meth:`~ShipConnection.get_timer`, to be answered
with :meth:`~ShipConnection.handle_timer`) and events (:meth:`~ShipConnection.events`). It never reads a clock
and never touches a socket: the node moves the bytes.

The phases, in order (``state``):

``cmi``
    Connection mode initialisation (SHIP 13.4.3): the client sends ``00 00``, the server answers ``00 00``;
    anything else ends the connection (``bad_cmi``), as does silence for :data:`CMI_TIMEOUT_S`.
``hello``
    SHIP 13.4.4.1. Each side says whether it trusts the peer: ``ready``, or ``pending`` while its user has not
    decided yet (with ``waiting``: how long it will wait for the other side). A ``ready`` side waits
    :data:`T_HELLO_INIT_S` for the peer's ``ready``; a ``pending`` peer may ask for more time
    (``prolongationRequest``), and each granted request adds :data:`T_HELLO_INC_S` to that wait, up to
    ``max_prolongations`` (SHIP: at least two must be granted). A ``pending`` side asks for prolongation
    :data:`T_HELLO_PROLONG_THR_INC_S` before the peer's announced wait ends, and gives up when it ended. The
    local user's decision arrives with :meth:`~ShipConnection.trust` or :meth:`~ShipConnection.deny`
    (``aborted``). Both ``ready``: the hello phase is over.
``protocol``
    SHIP 13.4.4.2: the client announces its newest version (``announceMax``, 1.0, ``JSON-UTF8``), the server
    selects, the client confirms the same selection. A mismatch or silence sends
    ``messageProtocolHandshakeError`` (3 or 1) and ends the connection.
``pin``
    SHIP 13.4.5: both send ``connectionPinState`` ``none``. A peer that requires a PIN ends the connection
    (``pin_unsupported``): evsim, like ship-go, verifies no PINs.
``access``
    SHIP 13.4.6: both ask ``accessMethodsRequest`` and answer ``accessMethods`` with their SHIP id. The
    peer's answer completes the set-up: ``connected`` (event :class:`Connected`).
``connected``
    ``data`` messages flow (event :class:`DataReceived`).
``closing`` / ``closed``
    SHIP 13.4.7: :meth:`~ShipConnection.close` announces (``connectionClose`` ``announce``) and waits
    ``close_timeout_s`` for the peer's ``confirm``; a peer's announce is confirmed at once. Every end, orderly
    or not, yields one :class:`Closed` event with a reason; the node then closes the WebSocket.

Everything a peer sends is hostile until checked: sizes and fields by :func:`evsim.ship.messages.decode`, the
order here (a message that does not belong to the current phase ends the connection with
``unexpected_message``), timers bounded below by :data:`T_HELLO_PROLONG_MIN_S` for a peer's ``waiting``,
prolongations bounded by ``max_prolongations`` and stray hello repeats by :data:`MAX_STRAY`.

Timer values are ship-go's (``ship/types.go``, citing SHIP 4.2 and 13.4.4.1.3); the SHIP PDF was not in the
stored sources. The protocol, PIN and access-method waits reuse the CMI value (our choice).
"""

from __future__ import annotations

from typing import Literal, TypeAlias

import attrs

from evsim.ship.messages import (
    CMI,
    MAX_CONTROL_SIZE,
    MAX_MESSAGE_SIZE,
    AccessMethods,
    AccessMethodsRequest,
    Close,
    Data,
    Decoded,
    Hello,
    PinState,
    ProtocolHandshake,
    ProtocolHandshakeError,
    ShipMessage,
    ShipMessageError,
    decode,
    encode,
)

__all__ = [
    "CMI_TIMEOUT_S",
    "T_HELLO_INC_S",
    "T_HELLO_INIT_S",
    "T_HELLO_PROLONG_MIN_S",
    "T_HELLO_PROLONG_THR_INC_S",
    "Closed",
    "Connected",
    "DataReceived",
    "HelloChanged",
    "Role",
    "ShipConfig",
    "ShipConnection",
    "ShipEvent",
    "ShipState",
    "ShipStatistics",
]

CMI_TIMEOUT_S = 10.0
"""Wait for the peer's CMI message (SHIP 4.2, ship-go ``cmiTimeout``)."""
T_HELLO_INIT_S = 60.0
"""A ``ready`` side waits this long for the peer's ``ready`` (SHIP 13.4.4.1.3, ``tHelloInit``)."""
T_HELLO_INC_S = 60.0
"""Added to that wait per granted prolongation (SHIP 13.4.4.1.3: the same value as T_hello_init)."""
T_HELLO_PROLONG_THR_INC_S = 30.0
"""A ``pending`` side asks for prolongation this long before the peer's wait ends (``tHelloProlongThrInc``)."""
T_HELLO_PROLONG_MIN_S = 1.0
"""A peer's ``waiting`` below this is a protocol violation (``tHelloProlongMin``): the connection ends."""
MIN_PROLONGATIONS = 2
"""SHIP 13.4.4.1.3: a side SHALL accept at least two prolongation requests (ship-go's reading)."""
MAX_STRAY = 8
"""Hello messages tolerated after the hello phase ended (a late answer to a prolongation request); more
end the connection. Our bound."""
PROTOCOL_ID = "ee1.0"
"""``data.header.protocolId`` of SPINE messages."""
FORMAT = "JSON-UTF8"
VERSION = (1, 0)

Role: TypeAlias = Literal["client", "server"]
ShipState: TypeAlias = Literal["cmi", "hello", "protocol", "pin", "access", "connected", "closing", "closed"]
Trust: TypeAlias = Literal["ready", "pending"]
By: TypeAlias = Literal["local", "remote"]


@attrs.frozen
class ShipConfig:
    """Settings of one SHIP endpoint.

    Attributes:
        ship_id: this device's SHIP id (sent in ``accessMethods``).
        max_prolongations: prolongation requests granted to a pending peer (at least
            :data:`MIN_PROLONGATIONS`) and sent to a ready peer.
        close_timeout_s: how long an announced close waits for the peer's confirmation.
        setup_timeout_s: the wait of the CMI, protocol, PIN and access-method phases.
        max_message: the largest message accepted (data messages).
        max_control: the largest control or end message accepted.
    """

    ship_id: str
    max_prolongations: int = attrs.field(default=MIN_PROLONGATIONS, validator=attrs.validators.ge(0))
    close_timeout_s: float = attrs.field(default=10.0, validator=attrs.validators.gt(0))
    setup_timeout_s: float = attrs.field(default=CMI_TIMEOUT_S, validator=attrs.validators.gt(0))
    max_message: int = attrs.field(default=MAX_MESSAGE_SIZE, validator=attrs.validators.gt(2))
    max_control: int = attrs.field(default=MAX_CONTROL_SIZE, validator=attrs.validators.gt(2))


@attrs.frozen
class Connected:
    """The set-up completed; ``peer_id`` is the SHIP id from the peer's ``accessMethods``."""

    peer_id: str


@attrs.frozen
class DataReceived:
    """A ``data`` message arrived while connected."""

    protocol_id: str
    payload: object


@attrs.frozen
class HelloChanged:
    """A hello-phase step worth a log line.

    Attributes:
        step: ``peer_pending`` (the peer waits for its user), ``peer_ready``, ``prolongation_granted`` (we gave
            the peer more time), ``prolongation_refused`` (its request exceeded ``max_prolongations``),
            ``prolongation_requested`` (we asked the peer for more time).
        waiting_ms: the ``waiting`` value concerned, if any.
    """

    step: str
    waiting_ms: int | None = None


@attrs.frozen
class Closed:
    """The connection ended.

    Attributes:
        reason: ``closed`` (orderly, by ``by``), ``bad_cmi``, ``cmi_timeout``, ``hello_timeout``,
            ``trust_denied`` (we aborted the hello), ``peer_aborted`` (the peer did), ``handshake_timeout``,
            ``handshake_mismatch``, ``handshake_error:<n>`` (the peer sent error n), ``pin_unsupported``,
            ``setup_timeout``, ``unexpected_message``, ``bad_message``, ``message_too_large``,
            ``close_timeout`` or ``transport_lost``.
        detail: human-readable context (peer text escaped).
        by: who ended it.
        state: the phase it ended in.
    """

    reason: str
    detail: str
    by: By
    state: ShipState


ShipEvent: TypeAlias = Connected | DataReceived | HelloChanged | Closed


@attrs.frozen
class ShipStatistics:
    """Counters of one connection."""

    state: ShipState
    messages_received: int
    messages_sent: int
    prolongations_granted: int
    prolongations_requested: int


class ShipConnection:
    """One side of a SHIP connection set-up (see the module doc).

    Args:
        role: ``client`` (dialled the peer) or ``server``.
        config: the settings.
        trusted: whether this side trusts the peer at once (hello ``ready``) or waits for its user
            (``pending`` until :meth:`trust` or :meth:`deny`).
        now: the time the WebSocket opened (trio seconds); the client's CMI is queued at once.
    """

    def __init__(self, role: Role, config: ShipConfig, *, trusted: bool, now: float) -> None:
        self.role: Role = role
        self.config = config
        self.state: ShipState = "cmi"
        self.peer_id: str | None = None
        self.closed_event: Closed | None = None
        self._trust: Trust = "ready" if trusted else "pending"
        self._peer_ready = False
        self._out: list[bytes] = []
        self._events: list[ShipEvent] = []
        self._timers: dict[str, float] = {"setup": now + config.setup_timeout_s}
        self._sub = ""  # step inside a phase
        self._granted = 0
        self._requested = 0
        self._stray = 0
        self._received = 0
        self._sent = 0
        if role == "client":
            self._push_raw(CMI)

    # ------------------------------------------------------------------ output

    def data_to_send(self) -> list[bytes]:
        """Take the messages to send, in order (each one binary WebSocket message)."""
        out, self._out = self._out, []
        return out

    def events(self) -> list[ShipEvent]:
        """Take the events that happened since the last call."""
        out, self._events = self._events, []
        return out

    def get_timer(self) -> float | None:
        """The next deadline (trio seconds), or None when nothing waits."""
        return min(self._timers.values(), default=None)

    def statistics(self) -> ShipStatistics:
        """A snapshot of the counters."""
        return ShipStatistics(self.state, self._received, self._sent, self._granted, self._requested)

    def _push_raw(self, data: bytes) -> None:
        self._out.append(data)
        self._sent += 1

    def _send(self, message: ShipMessage) -> None:
        self._push_raw(encode(message))

    # ------------------------------------------------------------------ ending

    def _end(self, reason: str, detail: str, by: By) -> None:
        if self.state == "closed":
            return
        event = Closed(reason, detail, by, self.state)
        self.state = "closed"
        self._timers.clear()
        self.closed_event = event
        self._events.append(event)

    def _abort(self, reason: str, detail: str) -> None:
        """End the connection for a local reason, telling the peer what the phase allows."""
        if self.state == "hello":
            self._send(Hello("aborted"))
        elif self.state == "protocol":
            code = {"handshake_timeout": 1, "unexpected_message": 2, "handshake_mismatch": 3}.get(reason)
            if code is not None:
                self._send(ProtocolHandshakeError(code))
        self._end(reason, detail, "local")

    def close(self, now: float, reason: str | None = None) -> None:
        """Announce an orderly close (SHIP 13.4.7); before the set-up finished the connection just ends.

        Args:
            now: trio seconds.
            reason: ``connectionClose.reason`` (``unspecific``, ``removedConnection``), or None.
        """
        if self.state in ("closing", "closed"):
            return
        if self.state != "connected":
            self._abort("closed", f"closed by this side during {self.state}")
            return
        self._send(Close("announce", int(self.config.close_timeout_s * 1000), reason))
        self.state = "closing"
        self._timers = {"close": now + self.config.close_timeout_s}

    def transport_lost(self, detail: str = "") -> None:
        """The WebSocket or TLS connection broke: the connection ends (``transport_lost``)."""
        self._end("transport_lost", detail or "the connection broke", "remote")

    # ------------------------------------------------------------------ local decisions

    def trust(self, now: float) -> None:
        """The local user trusts the peer (e.g. it paired): hello ``ready`` from now on."""
        if self._trust == "ready":
            return
        self._trust = "ready"
        if self.state != "hello":
            return
        self._timers.pop("prolong", None)
        self._timers.pop("peer_wait", None)
        if self._peer_ready:
            self._send(Hello("ready", int(T_HELLO_INIT_S * 1000)))
            self._enter_protocol(now)
        else:
            self._send(Hello("ready", int(T_HELLO_INIT_S * 1000)))
            self._timers["wait_ready"] = now + T_HELLO_INIT_S

    def deny(self, now: float, detail: str = "the user refused the peer") -> None:
        """The local user refuses the peer: hello ``aborted`` during the set-up; once connected a
        ``connectionClose`` announce (``removedConnection``) and the end, without waiting for the confirm."""
        del now
        if self.state in ("connected", "closing"):
            # SHIP close with ship-go's reason for a removed pairing; no confirmation awaited from a peer
            # this side no longer trusts
            self._send(Close("announce", None, "removedConnection"))
            self._end("trust_denied", detail, "local")
            return
        if self.state != "closed":
            self._abort("trust_denied", detail)

    def send_data(self, payload: object, protocol_id: str = PROTOCOL_ID) -> None:
        """Queue one ``data`` message.

        Raises:
            RuntimeError: not connected.
        """
        if self.state != "connected":
            raise RuntimeError(f"SHIP data can only be sent when connected (state {self.state})")
        self._send(Data(protocol_id, payload))

    # ------------------------------------------------------------------ timers

    def handle_timer(self, now: float) -> None:
        """Act on every deadline that passed at ``now``."""
        for name, due in sorted(self._timers.items(), key=lambda kv: kv[1]):
            if due > now or self.state == "closed" or self._timers.get(name) != due:
                continue
            del self._timers[name]
            self._expire(name, now)

    def _expire(self, name: str, now: float) -> None:
        if name == "setup":
            reason = {"cmi": "cmi_timeout", "protocol": "handshake_timeout"}.get(self.state, "setup_timeout")
            self._abort(reason, f"no answer within {self.config.setup_timeout_s:g} s in {self.state}")
        elif name == "wait_ready":
            self._abort("hello_timeout", "the peer did not become ready in time")
        elif name == "peer_wait":
            self._abort("hello_timeout", "the peer's announced wait ended while this side was pending")
        elif name == "prolong":
            if self._requested < self.config.max_prolongations:
                self._requested += 1
                self._send(Hello("pending", None, True))
                self._events.append(HelloChanged("prolongation_requested"))
        elif name == "close":
            self._end("close_timeout", "the peer did not confirm the close", "local")

    # ------------------------------------------------------------------ input

    def receive(self, data: bytes, now: float) -> None:
        """Feed one binary WebSocket message from the peer.

        Ends the connection (one :class:`Closed` event) on anything that breaks SHIP; never raises.
        """
        if self.state == "closed":
            return
        self._received += 1
        try:
            message = decode(data, max_size=self.config.max_message, max_control=self.config.max_control)
        except ShipMessageError as exc:
            reason = "bad_cmi" if self.state == "cmi" and exc.reason == "bad_message" else exc.reason
            self._abort(reason, exc.detail)
            return
        self._dispatch(message, now)

    def receive_text(self) -> None:
        """The peer sent a text WebSocket message: SHIP uses binary messages only."""
        if self.state != "closed":
            self._received += 1
            self._abort("bad_message", "a text WebSocket message (SHIP messages are binary)")

    def _unexpected(self, message: Decoded) -> None:
        name = "CMI" if message == "cmi" else type(message).__name__
        self._abort("unexpected_message", f"{name} during {self.state}{'/' + self._sub if self._sub else ''}")

    def _dispatch(self, message: Decoded, now: float) -> None:
        if isinstance(message, Close):
            self._on_close(message)
            return
        if self.state == "cmi":
            if message != "cmi":
                self._unexpected(message)
                return
            if self.role == "server":
                self._push_raw(CMI)
            self._enter_hello(now)
            return
        if isinstance(message, Hello) and self.state != "hello":
            if message.phase == "aborted":
                self._end("peer_aborted", f"the peer aborted during {self.state}", "remote")
            else:
                self._stray += 1
                if self._stray > MAX_STRAY:
                    self._abort("unexpected_message", f"more than {MAX_STRAY} hello messages after the hello")
            return
        if self.state == "hello" and isinstance(message, Hello):
            self._on_hello(message, now)
        elif self.state == "protocol" and isinstance(message, ProtocolHandshake | ProtocolHandshakeError):
            self._on_protocol(message, now)
        elif self.state == "pin" and isinstance(message, PinState):
            self._on_pin(message, now)
        elif self.state in ("access", "connected", "closing") and isinstance(message, AccessMethodsRequest):
            if self._sub == "answered":
                self._abort("unexpected_message", "a second accessMethodsRequest")
                return
            self._send(AccessMethods(self.config.ship_id))
            self._sub = "answered"
        elif self.state == "access" and isinstance(message, AccessMethods):
            self.peer_id = message.ship_id
            self.state = "connected"
            self._timers.pop("setup", None)
            self._events.append(Connected(message.ship_id))
        elif self.state in ("connected", "closing") and isinstance(message, Data):
            self._events.append(DataReceived(message.protocol_id, message.payload))
        else:
            self._unexpected(message)

    def _on_close(self, message: Close) -> None:
        if message.phase == "announce":
            self._send(Close("confirm"))
            detail = f"the peer closed ({message.reason})" if message.reason else "the peer closed"
            self._end("closed", detail, "remote")
        elif self.state == "closing":
            self._end("closed", "the peer confirmed the close", "local")
        else:
            self._unexpected(message)

    # ------------------------------------------------------------------ hello

    def _enter_hello(self, now: float) -> None:
        self.state = "hello"
        self._timers.pop("setup", None)
        self._send(Hello(self._trust, int(T_HELLO_INIT_S * 1000)))
        if self._trust == "ready":
            self._timers["wait_ready"] = now + T_HELLO_INIT_S

    def _peer_waits(self, waiting_ms: int | None, now: float) -> bool:
        """Arm the pending side's timers from the peer's ``waiting``; False when it is out of bounds."""
        if waiting_ms is None:
            return True
        waiting = waiting_ms / 1000
        if waiting < T_HELLO_PROLONG_MIN_S:
            self._abort("bad_message", f"hello waiting {waiting_ms} ms is below {T_HELLO_PROLONG_MIN_S:g} s")
            return False
        # one second of grace: the peer is expected to abort at its deadline, and saying so is clearer
        self._timers["peer_wait"] = now + waiting + T_HELLO_PROLONG_MIN_S
        if waiting > T_HELLO_PROLONG_THR_INC_S:
            self._timers["prolong"] = now + waiting - T_HELLO_PROLONG_THR_INC_S
        else:
            self._timers.pop("prolong", None)
        return True

    def _on_hello(self, hello: Hello, now: float) -> None:
        if hello.phase == "aborted":
            self._end("peer_aborted", "the peer refused to trust this side (hello aborted)", "remote")
            return
        if hello.phase == "ready":
            if not self._peer_ready and self._trust == "pending":  # news only while our user decides
                self._events.append(HelloChanged("peer_ready", hello.waiting_ms))
            self._peer_ready = True
            if self._trust == "ready":
                self._enter_protocol(now)
            elif hello.waiting_ms is None:
                self._abort("bad_message", "hello ready without waiting while this side is pending")
            else:
                self._peer_waits(hello.waiting_ms, now)
            return
        # the peer is pending
        if hello.prolongation_request:
            if self._granted >= max(self.config.max_prolongations, 0):
                self._events.append(HelloChanged("prolongation_refused"))
                return
            self._granted += 1
            if self._trust == "ready":
                self._timers["wait_ready"] = self._timers.get("wait_ready", now) + T_HELLO_INC_S
                remaining = max(self._timers["wait_ready"] - now, T_HELLO_PROLONG_MIN_S)
                self._send(Hello("ready", int(remaining * 1000)))
            else:
                self._send(Hello("pending", int(T_HELLO_INIT_S * 1000)))
            self._events.append(HelloChanged("prolongation_granted"))
            return
        self._events.append(HelloChanged("peer_pending", hello.waiting_ms))
        if self._trust == "pending":
            self._peer_waits(hello.waiting_ms, now)

    # ------------------------------------------------------------------ protocol handshake

    def _enter_protocol(self, now: float) -> None:
        self.state = "protocol"
        for name in ("wait_ready", "peer_wait", "prolong"):
            self._timers.pop(name, None)
        self._timers["setup"] = now + self.config.setup_timeout_s
        if self.role == "client":
            self._send(ProtocolHandshake("announceMax", *VERSION, (FORMAT,)))
            self._sub = "wait_select"
        else:
            self._sub = "wait_announce"

    def _on_protocol(self, message: ProtocolHandshake | ProtocolHandshakeError, now: float) -> None:
        if isinstance(message, ProtocolHandshakeError):
            self._end(f"handshake_error:{message.error}", "the peer refused the protocol handshake", "remote")
            return
        selection = ProtocolHandshake("select", *VERSION, (FORMAT,))
        if self._sub == "wait_announce" and message.handshake_type == "announceMax":
            if message.major != VERSION[0] or FORMAT not in message.formats:
                self._abort(
                    "handshake_mismatch",
                    f"peer offers SHIP {message.major}.{message.minor} with {len(message.formats)} format(s); "
                    f"this side speaks {VERSION[0]}.x with {FORMAT}",
                )
                return
            self._send(selection)
            self._sub = "wait_confirm"
        elif self._sub in ("wait_select", "wait_confirm") and message.handshake_type == "select":
            if attrs.evolve(message, formats=tuple(message.formats)) != selection:
                self._abort(
                    "handshake_mismatch",
                    f"peer selected SHIP {message.major}.{message.minor}, "
                    f"expected {VERSION[0]}.{VERSION[1]} {FORMAT}",
                )
                return
            if self._sub == "wait_select":
                self._send(selection)  # the client confirms the server's selection
            self._enter_pin(now)
        else:
            self._unexpected(message)

    # ------------------------------------------------------------------ PIN and access methods

    def _enter_pin(self, now: float) -> None:
        self.state = "pin"
        self._sub = ""
        self._timers["setup"] = now + self.config.setup_timeout_s
        self._send(PinState("none"))

    def _on_pin(self, message: PinState, now: float) -> None:
        if message.pin_state != "none":
            self._abort(
                "pin_unsupported", f"the peer's PIN state is {message.pin_state}; evsim verifies no PINs"
            )
            return
        self.state = "access"
        self._timers["setup"] = now + self.config.setup_timeout_s
        self._send(AccessMethodsRequest())
