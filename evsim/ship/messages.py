"""SHIP messages on the wire: the one-byte message type, EEBUS JSON, and typed values (sans-IO).

Theory of operation
-------------------
Every SHIP message is one binary WebSocket message: a message-type octet followed by the body
(``protocol-digest.md`` §8, ship-go ``model/model.go``): ``0`` *init* (connection mode initialisation: the
body is one octet, ``0x00``), ``1`` *control* (the connection set-up: hello, protocol handshake, PIN,
access methods), ``2`` *data* (SPINE payloads once connected) and ``3`` *end* (``connectionClose``). Control,
data and end bodies are "EEBUS JSON": plain UTF-8 JSON in which every object is written as an array of
one-key objects, e.g. ``{"connectionHello":[{"phase":"pending"},{"waiting":60000}]}``.

:func:`encode` writes a typed message (:class:`Hello`, :class:`ProtocolHandshake`, ...) in that form;
:func:`decode` reads one, accepting both EEBUS JSON and plain JSON objects, and checks every field a peer
sent: the size first (before parsing), then the nesting depth, the JSON itself, and each field's type and
range. Unknown fields are ignored (a newer peer may send more), unknown messages are refused. Every refusal
is a :class:`ShipMessageError` whose ``reason`` is ``message_too_large`` or ``bad_message``; its ``detail``
may quote peer text, so it is escaped before it reaches a log line.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Literal, TypeAlias

import attrs

from evsim.errors import EvsimError
from evsim.text import escape

__all__ = [
    "CMI",
    "MAX_CONTROL_SIZE",
    "MAX_MESSAGE_SIZE",
    "AccessMethods",
    "AccessMethodsRequest",
    "Close",
    "Data",
    "Hello",
    "PinState",
    "ProtocolHandshake",
    "ProtocolHandshakeError",
    "ShipMessage",
    "ShipMessageError",
    "decode",
    "encode",
]

MSG_INIT, MSG_CONTROL, MSG_DATA, MSG_END = 0, 1, 2, 3
"""Message-type octets (ship-go ``model.MsgTypeInit`` ... ``MsgTypeEnd``)."""

CMI = bytes((MSG_INIT, 0x00))
"""The connection mode initialisation message both sides send (SHIP 13.4.3: type 0, value 0)."""

MAX_MESSAGE_SIZE = 64 * 1024
"""Largest SHIP message accepted (type octet included). SPINE payloads of a station are a few KiB; our
bound, not the specification's."""
MAX_CONTROL_SIZE = 4096
"""Largest control or end message accepted: the set-up messages are well under 300 bytes. Our bound."""
MAX_DEPTH = 32
"""Deepest JSON nesting accepted in any message: the set-up messages nest 8 levels (EEBUS arrays included),
SPINE payloads about twice that. Our bound."""
MAX_TEXT = 256
"""Longest string accepted in a set-up field (SHIP ids, reasons, formats). Our bound."""
MAX_WAITING_MS = 2**32 - 1
"""``waiting`` and ``maxTime`` are unsigned 32-bit milliseconds (ship-go ``uint``)."""

HelloPhase: TypeAlias = Literal["ready", "pending", "aborted"]
HandshakeType: TypeAlias = Literal["announceMax", "select"]
PinStateValue: TypeAlias = Literal["required", "optional", "pinOk", "none"]
ClosePhase: TypeAlias = Literal["announce", "confirm"]

HELLO_PHASES: tuple[HelloPhase, ...] = ("ready", "pending", "aborted")
HANDSHAKE_TYPES: tuple[HandshakeType, ...] = ("announceMax", "select")
PIN_STATES: tuple[PinStateValue, ...] = ("required", "optional", "pinOk", "none")
CLOSE_PHASES: tuple[ClosePhase, ...] = ("announce", "confirm")


class ShipMessageError(EvsimError):
    """A SHIP message a peer sent cannot be used.

    Attributes:
        reason: ``message_too_large`` or ``bad_message``.
        detail: what was wrong, peer text escaped.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@attrs.frozen
class Hello:
    """``connectionHello`` (SHIP 13.4.4.1): whether this side trusts the peer yet.

    Attributes:
        phase: ``ready`` (trusted), ``pending`` (waiting for the user) or ``aborted`` (the user refused).
        waiting_ms: how long the sender still waits for the other side, in milliseconds, or None.
        prolongation_request: True when a pending side asks for more time.
    """

    phase: HelloPhase
    waiting_ms: int | None = None
    prolongation_request: bool | None = None


@attrs.frozen
class ProtocolHandshake:
    """``messageProtocolHandshake`` (SHIP 13.4.4.2): the client announces its newest version, the server
    selects, the client confirms with the same selection.

    Attributes:
        handshake_type: ``announceMax`` or ``select``.
        major: version major number (SHIP 1.x: 1).
        minor: version minor number.
        formats: message formats (``JSON-UTF8``).
    """

    handshake_type: HandshakeType
    major: int
    minor: int
    formats: tuple[str, ...]


@attrs.frozen
class ProtocolHandshakeError:
    """``messageProtocolHandshakeError``: ``error`` 1 timeout, 2 unexpected message, 3 selection mismatch
    (SHIP 13.4.4.2; 0 is reserved)."""

    error: int


@attrs.frozen
class PinState:
    """``connectionPinState`` (SHIP 13.4.5): evsim speaks PIN state ``none`` only, like ship-go."""

    pin_state: PinStateValue


@attrs.frozen
class AccessMethodsRequest:
    """``accessMethodsRequest`` (SHIP 13.4.6): asks the peer how it can be reached."""


@attrs.frozen
class AccessMethods:
    """``accessMethods`` (SHIP 13.4.6): the sender's SHIP id and how to reach it.

    Attributes:
        ship_id: the SHIP id (the mDNS ``id``).
        dns_sd_mdns: whether it is announced with DNS-SD/mDNS.
        dns_uri: a DNS name/URI, or None.
    """

    ship_id: str
    dns_sd_mdns: bool = False
    dns_uri: str | None = None


@attrs.frozen
class Data:
    """``data``: one application message (SPINE) with its protocol id (``ee1.0``)."""

    protocol_id: str
    payload: object


@attrs.frozen
class Close:
    """``connectionClose`` (SHIP 13.4.7): ``announce`` asks the peer to confirm, ``confirm`` answers.

    Attributes:
        phase: ``announce`` or ``confirm``.
        max_time_ms: how long the announcer waits for the confirmation, or None.
        reason: ``unspecific`` or ``removedConnection`` (SHIP), or None.
    """

    phase: ClosePhase
    max_time_ms: int | None = None
    reason: str | None = None


ShipMessage: TypeAlias = (
    Hello
    | ProtocolHandshake
    | ProtocolHandshakeError
    | PinState
    | AccessMethodsRequest
    | AccessMethods
    | Data
    | Close
)
Decoded: TypeAlias = ShipMessage | Literal["cmi"]


# ---------------------------------------------------------------- EEBUS JSON


def _to_eebus(value: object) -> object:
    """Plain JSON value -> EEBUS JSON (every object becomes an array of one-key objects)."""
    if isinstance(value, Mapping):
        return [{str(k): _to_eebus(v)} for k, v in value.items()]
    if isinstance(value, list | tuple):
        return [_to_eebus(v) for v in value]
    return value


def _from_eebus(value: object, depth: int = 0) -> object:
    """EEBUS JSON -> plain JSON: an array whose items are one-key objects with distinct keys is an object."""
    if depth > MAX_DEPTH:
        raise ShipMessageError("bad_message", f"JSON nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        return {k: _from_eebus(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        if value and all(isinstance(v, dict) and len(v) == 1 for v in value):
            keys = [next(iter(v)) for v in value]
            if len(set(keys)) == len(keys):
                return {k: _from_eebus(v[k], depth + 1) for k, v in zip(keys, value, strict=True)}
        return [_from_eebus(v, depth + 1) for v in value]
    return value


def _json_depth_ok(text: str) -> bool:
    """Whether brackets nest at most :data:`MAX_DEPTH` deep (checked before ``json.loads`` recurses)."""
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return False
        elif ch in "]}":
            depth -= 1
    return True


# ---------------------------------------------------------------- encoding


def _body(message: ShipMessage) -> tuple[int, dict[str, object]]:
    if isinstance(message, Hello):
        hello: dict[str, object] = {"phase": message.phase}
        if message.waiting_ms is not None:
            hello["waiting"] = message.waiting_ms
        if message.prolongation_request is not None:
            hello["prolongationRequest"] = message.prolongation_request
        return MSG_CONTROL, {"connectionHello": hello}
    if isinstance(message, ProtocolHandshake):
        return MSG_CONTROL, {
            "messageProtocolHandshake": {
                "handshakeType": message.handshake_type,
                "version": {"major": message.major, "minor": message.minor},
                "formats": {"format": list(message.formats)},
            }
        }
    if isinstance(message, ProtocolHandshakeError):
        return MSG_CONTROL, {"messageProtocolHandshakeError": {"error": message.error}}
    if isinstance(message, PinState):
        return MSG_CONTROL, {"connectionPinState": {"pinState": message.pin_state}}
    if isinstance(message, AccessMethodsRequest):
        return MSG_CONTROL, {"accessMethodsRequest": {}}
    if isinstance(message, AccessMethods):
        methods: dict[str, object] = {"id": message.ship_id}
        if message.dns_sd_mdns:
            methods["dnsSd_mDns"] = {}
        if message.dns_uri is not None:
            methods["dns"] = {"uri": message.dns_uri}
        return MSG_CONTROL, {"accessMethods": methods}
    if isinstance(message, Data):
        return MSG_DATA, {"data": {"header": {"protocolId": message.protocol_id}, "payload": message.payload}}
    close: dict[str, object] = {"phase": message.phase}
    if message.max_time_ms is not None:
        close["maxTime"] = message.max_time_ms
    if message.reason is not None:
        close["reason"] = message.reason
    return MSG_END, {"connectionClose": close}


def encode(message: ShipMessage) -> bytes:
    """One SHIP message as the bytes of one binary WebSocket message (type octet + EEBUS JSON).

    Args:
        message: the message.

    Returns:
        The wire bytes.
    """
    kind, body = _body(message)
    wire = {name: _to_eebus(value) for name, value in body.items()}  # the outer object stays an object
    text = json.dumps(wire, separators=(",", ":"), ensure_ascii=False)
    return bytes((kind,)) + text.encode("utf-8")


# ---------------------------------------------------------------- decoding


def _bad(detail: str) -> ShipMessageError:
    return ShipMessageError("bad_message", detail)


def _table(value: object, what: str) -> Mapping[str, object]:
    if value == [] or value is None:
        return {}  # an empty EEBUS object is an empty array
    if not isinstance(value, Mapping):
        raise _bad(f"{what} must be an object")
    return value


def _text(table: Mapping[str, object], key: str, what: str, *, required: bool = True) -> str | None:
    value = table.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
        raise _bad(f"{what}.{key} must be a string of 1..{MAX_TEXT} characters (got {escape(value, 40)})")
    return value


def _uint(table: Mapping[str, object], key: str, what: str, *, limit: int, required: bool) -> int | None:
    value = table.get(key)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise _bad(f"{what}.{key} must be an integer 0..{limit} (got {escape(value, 40)})")
    return value


def _choice(table: Mapping[str, object], key: str, what: str, choices: tuple[str, ...]) -> str:
    value = table.get(key)
    if value not in choices:
        raise _bad(f"{what}.{key} must be one of {', '.join(choices)} (got {escape(value, 40)})")
    assert isinstance(value, str)
    return value


def _hello(t: Mapping[str, object]) -> Hello:
    phase = _choice(t, "phase", "connectionHello", HELLO_PHASES)
    waiting = _uint(t, "waiting", "connectionHello", limit=MAX_WAITING_MS, required=False)
    prolong = t.get("prolongationRequest")
    if prolong is not None and not isinstance(prolong, bool):
        raise _bad(f"connectionHello.prolongationRequest must be true or false (got {escape(prolong, 40)})")
    return Hello(phase, waiting, prolong)  # type: ignore[arg-type]  # checked by _choice


def _handshake(t: Mapping[str, object]) -> ProtocolHandshake:
    what = "messageProtocolHandshake"
    kind = _choice(t, "handshakeType", what, HANDSHAKE_TYPES)
    version = _table(t.get("version"), f"{what}.version")
    major = _uint(version, "major", f"{what}.version", limit=255, required=True)
    minor = _uint(version, "minor", f"{what}.version", limit=255, required=True)
    formats_t = _table(t.get("formats"), f"{what}.formats")
    raw = formats_t.get("format")
    names = [raw] if isinstance(raw, str) else raw
    if not isinstance(names, list) or not 1 <= len(names) <= 8:
        raise _bad(f"{what}.formats.format must list 1..8 formats")
    formats = tuple(_text({"format": n}, "format", f"{what}.formats") or "" for n in names)
    assert major is not None and minor is not None  # required
    return ProtocolHandshake(kind, major, minor, formats)  # type: ignore[arg-type]  # checked by _choice


def _access_methods(t: Mapping[str, object]) -> AccessMethods:
    ship_id = _text(t, "id", "accessMethods")
    dns = t.get("dns")
    uri = _text(_table(dns, "accessMethods.dns"), "uri", "accessMethods.dns", required=False)
    assert ship_id is not None  # required
    return AccessMethods(ship_id, "dnsSd_mDns" in t, uri)


def _close(t: Mapping[str, object]) -> Close:
    phase = _choice(t, "phase", "connectionClose", CLOSE_PHASES)
    max_time = _uint(t, "maxTime", "connectionClose", limit=MAX_WAITING_MS, required=False)
    reason = _text(t, "reason", "connectionClose", required=False)
    return Close(phase, max_time, reason)  # type: ignore[arg-type]  # checked by _choice


def _data(t: Mapping[str, object]) -> Data:
    header = _table(t.get("header"), "data.header")
    protocol_id = _text(header, "protocolId", "data.header")
    assert protocol_id is not None  # required
    return Data(protocol_id, t.get("payload"))


_Parser: TypeAlias = Callable[[Mapping[str, object]], ShipMessage]

_CONTROL: dict[str, _Parser] = {
    "connectionHello": _hello,
    "messageProtocolHandshake": _handshake,
    "messageProtocolHandshakeError": lambda t: ProtocolHandshakeError(
        _uint(t, "error", "messageProtocolHandshakeError", limit=255, required=True) or 0
    ),
    "connectionPinState": lambda t: PinState(
        _choice(t, "pinState", "connectionPinState", PIN_STATES)  # type: ignore[arg-type]
    ),
    "accessMethodsRequest": lambda t: AccessMethodsRequest(),
    "accessMethods": _access_methods,
}
_BY_TYPE: dict[int, dict[str, _Parser]] = {
    MSG_CONTROL: _CONTROL,
    MSG_DATA: {"data": _data},
    MSG_END: {"connectionClose": _close},
}


def decode(data: bytes, *, max_size: int = MAX_MESSAGE_SIZE, max_control: int = MAX_CONTROL_SIZE) -> Decoded:
    """Read one SHIP message a peer sent.

    Args:
        data: the binary WebSocket message.
        max_size: the largest message accepted (data messages).
        max_control: the largest init, control or end message accepted.

    Returns:
        ``"cmi"`` for the connection mode initialisation, else the typed message.

    Raises:
        ShipMessageError: ``message_too_large`` (checked before parsing) or ``bad_message`` (unknown type,
            not UTF-8 JSON, nested too deep, unknown message name, bad field).
    """
    if not data:
        raise _bad("empty message")
    kind = data[0]
    limit = max_size if kind == MSG_DATA else max_control
    if len(data) > limit:
        raise ShipMessageError("message_too_large", f"{len(data)} bytes, limit {limit}")
    if kind == MSG_INIT:
        if data != CMI:
            raise _bad(f"connection mode initialisation must be 00 00 (got {data[:8].hex()})")
        return "cmi"
    table = _BY_TYPE.get(kind)
    if table is None:
        raise _bad(f"unknown message type {kind}")
    try:
        text = data[1:].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad(f"not UTF-8 ({exc.reason})") from None
    if not _json_depth_ok(text):
        raise _bad(f"JSON nested deeper than {MAX_DEPTH} levels")
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise _bad(f"not JSON ({escape(exc, 80)})") from None
    plain = _from_eebus(raw)
    if not isinstance(plain, dict) or len(plain) != 1:
        raise _bad("a message must be an object with one member")
    ((name, body),) = plain.items()
    parse = table.get(name)
    if parse is None:
        raise _bad(f"unknown message {escape(name, 60)!r} for type {kind}")
    return parse(_table(body, name))
