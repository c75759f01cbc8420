"""OCPP-J frames: the JSON arrays that travel in WebSocket text messages (sans-IO).

OCPP-J 2.0.1 §4 / 2.1 §4 (protocol-digest §1.2-1.4)::

    CALL             [2, "<MessageId>", "<Action>", {<Payload>}]
    CALLRESULT       [3, "<MessageId>", {<Payload>}]
    CALLERROR        [4, "<MessageId>", "<errorCode>", "<errorDescription>", {<errorDetails>}]
    CALLRESULTERROR  [5, "<MessageId>", "<errorCode>", "<errorDescription>", {<errorDetails>}]   (2.1 only)
    SEND             [6, "<MessageId>", "<Action>", {<Payload>}]                                 (2.1 only)

:func:`decode_frame` checks the *shape* of a frame only; payloads are checked against the OCA schemas by
:mod:`evsim.ocpp.schema`. Every problem becomes a :class:`FrameDecodeError` (a
:class:`evsim.errors.FrameError`) that says which CALLERROR code answers it, which message id to answer
(``"-1"`` when the id cannot be read, OCPP-J 2.0.1 §4.2.3) and whether to answer at all.

orjson enters evsim here and only here; other modules use :func:`dumps` / :func:`loads`.
"""

from __future__ import annotations

import enum
from typing import Any, Final, TypeAlias

import attrs
import orjson

from evsim.errors import FrameError

#: Longest message id: ``messageId`` is string[36] (OCPP-J 2.0.1 Table 4; 2.1 §4.1.4), a UUID fits.
MAX_MESSAGE_ID_LENGTH: Final = 36

#: Longest ``errorDescription``: string[255] (OCPP-J 2.0.1 Table 7; protocol-digest §1.2).
MAX_ERROR_DESCRIPTION_LENGTH: Final = 255

#: Default largest frame we accept, in UTF-8 bytes. Matches the WebSocket layer's ``max_message_size``
#: default (docs/architecture.md); the largest OCA messages (reports, charging profiles) fit comfortably.
DEFAULT_MAX_FRAME: Final = 65536

#: Message id to answer with when the received id cannot be read (OCPP-J 2.0.1 §4.2.3).
UNREADABLE_ID: Final = "-1"

#: The CALLERROR codes of OCPP 2.0.1 and 2.1 (OCPP-J 2.0.1 Table 8, 2.1 Table 9; identical lists).
ERROR_CODES: Final = frozenset(
    {
        "FormatViolation",
        "GenericError",
        "InternalError",
        "MessageTypeNotSupported",
        "NotImplemented",
        "NotSupported",
        "OccurrenceConstraintViolation",
        "PropertyConstraintViolation",
        "ProtocolError",
        "RpcFrameworkError",
        "SecurityError",
        "TypeConstraintViolation",
    }
)


class MessageType(enum.IntEnum):
    """The first element of every OCPP-J frame (OCPP-J 2.1 §4.1.3)."""

    CALL = 2
    CALLRESULT = 3
    CALLERROR = 4
    CALLRESULTERROR = 5  # OCPP 2.1 only
    SEND = 6  # OCPP 2.1 only


#: Message types each version understands.
_TYPES_OF_VERSION: Final[dict[str, frozenset[int]]] = {
    "2.0.1": frozenset({2, 3, 4}),
    "2.1": frozenset({2, 3, 4, 5, 6}),
}


@attrs.frozen
class Call:
    """A request that expects a CALLRESULT or CALLERROR."""

    message_id: str
    action: str
    payload: dict[str, Any]


@attrs.frozen
class CallResult:
    """The successful answer to the CALL with the same ``message_id``."""

    message_id: str
    payload: dict[str, Any]


@attrs.frozen
class CallError:
    """The error answer to the CALL with the same ``message_id``."""

    message_id: str
    error_code: str
    description: str = ""
    details: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class CallResultError:
    """OCPP 2.1: the CALLRESULT with this ``message_id`` could not be processed (OCPP-J 2.1 §4.2)."""

    message_id: str
    error_code: str
    description: str = ""
    details: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class Send:
    """OCPP 2.1: an unconfirmed message; the receiver never answers it (OCPP-J 2.1 §4.2)."""

    message_id: str
    action: str
    payload: dict[str, Any]


Frame: TypeAlias = Call | CallResult | CallError | CallResultError | Send


class FrameDecodeError(FrameError):
    """A received frame is malformed (a :class:`evsim.errors.FrameError` that also tells its type).

    Args:
        description: what is wrong (safe to send as ``errorDescription``).
        error_code: the CALLERROR code that answers it.
        message_id: the frame's id, or ``"-1"`` when it cannot be read.
        reply: False when the spec says not to answer (broken CALLERROR, SEND, 2.1 unknown type...).
        message_type: the frame's type number when it could be read and is known, else None. With
            ``reply=True`` a CALLRESULT is answered with CALLRESULTERROR (2.1), anything else with CALLERROR.
    """

    def __init__(
        self,
        description: str,
        *,
        error_code: str = "RpcFrameworkError",
        message_id: str = UNREADABLE_ID,
        reply: bool = True,
        message_type: MessageType | None = None,
    ) -> None:
        self.message_type = message_type
        super().__init__(description, error_code=error_code, message_id=message_id, reply=reply)


def dumps(value: Any) -> str:
    """Serialize a JSON value to text with orjson.

    Raises:
        TypeError: the value is not JSON-serializable (orjson's ``JSONEncodeError``): a non-str dict key,
            an integer outside 64 bits, a lone surrogate, an unsupported type, nesting deeper than 254.
    """
    return orjson.dumps(value).decode()


#: :func:`dumps` without the decoding: orjson's UTF-8 bytes, whose length is the frame's size (the RPC core's send
#: path). Raises what :func:`dumps` raises.
dumps_utf8: Final = orjson.dumps


#: :func:`loads` itself (orjson's), for the RPC core's receive path; raises :data:`JSONDecodeError`.
parse_json: Final = orjson.loads
#: What :data:`parse_json` raises on invalid JSON (a ``ValueError``).
JSONDecodeError: Final = orjson.JSONDecodeError


def loads(text: str | bytes) -> Any:
    """Parse JSON text with orjson.

    Raises:
        ValueError: invalid JSON (orjson's ``JSONDecodeError``).
    """
    return orjson.loads(text)


def utf8_length(text: str) -> int:
    """Length of ``text`` in UTF-8 bytes (O(1) for ASCII text, the usual case)."""
    if text.isascii():
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


def truncate_description(description: str) -> str:
    """Cut an ``errorDescription`` to string[255] (OCPP-J 2.0.1 Table 7)."""
    return description[:MAX_ERROR_DESCRIPTION_LENGTH]


def encode_frame(frame: Frame) -> str:
    """Serialize a frame to the text of one WebSocket message.

    ``errorDescription`` is truncated to 255 characters (OCPP-J 2.0.1 Table 7).

    Args:
        frame: any frame.

    Returns:
        Compact JSON text.

    Raises:
        TypeError: the payload or details are not JSON-serializable (see :func:`dumps`), or ``frame`` is
            not a frame.
    """
    if isinstance(frame, Call):
        value: list[Any] = [2, frame.message_id, frame.action, frame.payload]
    elif isinstance(frame, CallResult):
        value = [3, frame.message_id, frame.payload]
    elif isinstance(frame, CallError | CallResultError):
        code = 4 if isinstance(frame, CallError) else 5
        value = [
            code,
            frame.message_id,
            frame.error_code,
            truncate_description(frame.description),
            frame.details,
        ]
    elif isinstance(frame, Send):
        value = [6, frame.message_id, frame.action, frame.payload]
    else:
        raise TypeError(f"not an OCPP-J frame: {frame!r}")
    return orjson.dumps(value).decode()


def _reply_policy(message_type: int, version: str, id_readable: bool) -> bool:
    """Whether a malformed frame of this type is answered (OCPP-J 2.0.1 §4.2.3; 2.1 §4.2).

    A broken CALL gets a CALLERROR. A broken CALLRESULT gets a CALLRESULTERROR in 2.1 (when its id can be
    read: the answer must name it), nothing in 2.0.1. Broken CALLERROR, CALLRESULTERROR and SEND frames
    are never answered.
    """
    if message_type == 2:
        return True
    if message_type == 3:
        return version == "2.1" and id_readable
    return False


def decode_frame(text: str, *, version: str, max_size: int = DEFAULT_MAX_FRAME) -> Frame:
    """Parse one received WebSocket text message into a frame.

    Args:
        text: the message.
        version: the connection's OCPP version, ``"2.0.1"`` or ``"2.1"`` (types 5 and 6 are 2.1 only).
        max_size: largest accepted frame in UTF-8 bytes; a bigger one is refused without parsing.

    Returns:
        The frame. Payloads are JSON objects but are not checked against any schema.

    Raises:
        FrameDecodeError: the frame is malformed. ``error_code``, ``message_id`` and ``reply`` say how to
            answer: invalid JSON, not an array, wrong element count or types, or an unreadable id →
            ``RpcFrameworkError``; a payload/details that is not an object, or a frame over ``max_size`` →
            ``FormatViolation``; an unknown type number (or 5/6 on 2.0.1) → ``MessageTypeNotSupported``
            (2.1 ignores unknown types: ``reply=False``).
    """
    msg = decode_call_or_result(text, version=version, max_size=max_size)
    if isinstance(msg, list):
        return CallResult(msg[1], msg[2]) if msg[0] == 3 else Call(msg[1], msg[2], msg[3])
    return msg


def decode_call_or_result(text: str, *, version: str, max_size: int = DEFAULT_MAX_FRAME) -> list[Any] | Frame:
    """:func:`decode_frame` for the RPC core's receive path: a well-formed CALL (``[2, id, action, payload]``)
    or CALLRESULT (``[3, id, payload]``) comes back as the decoded list itself, checked as :func:`decode_frame`
    checks it, without a frame object (the RPC core makes its event from it); anything else as
    :func:`decode_frame` returns it or raises.
    """
    if len(text) > max_size or (not text.isascii() and utf8_length(text) > max_size):
        raise FrameDecodeError(f"frame too large (limit {max_size} bytes)", error_code="FormatViolation")
    try:
        msg = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise FrameDecodeError("invalid JSON") from None
    return decoded_call_or_result(msg, version=version)


def decoded_call_or_result(msg: Any, *, version: str) -> list[Any] | Frame:
    """:func:`decode_call_or_result` of the JSON value ``msg`` that a received text parsed to (the RPC core
    parses the text itself and checks the well-formed CALL and CALLRESULT inline, then comes here)."""
    if type(msg) is not list or not msg:
        raise FrameDecodeError("frame is not a non-empty JSON array")
    n = len(msg)
    raw_type = msg[0]
    raw_id: Any = msg[1] if n > 1 else None
    id_readable = type(raw_id) is str and len(raw_id) <= MAX_MESSAGE_ID_LENGTH
    mid: str = raw_id if id_readable else UNREADABLE_ID
    if type(raw_type) is not int:
        raise FrameDecodeError("message type is not an integer", message_id=mid)
    if id_readable:  # the well-formed CALL and CALLRESULT (both versions) skip the checks below
        if raw_type == 3 and n == 3 and type(msg[2]) is dict:
            return msg
        if raw_type == 2 and n == 4 and type(msg[2]) is str and type(msg[3]) is dict:
            return msg
    return _checked_frame(msg, n, raw_type, raw_id, id_readable, mid, version)


def _checked_frame(
    msg: list[Any], n: int, raw_type: int, raw_id: Any, id_readable: bool, mid: str, version: str
) -> Frame:
    """The frame of a decoded message that is not a well-formed CALL or CALLRESULT (see :func:`decode_frame`)."""
    if raw_type not in _TYPES_OF_VERSION.get(version, _TYPES_OF_VERSION["2.0.1"]):
        if version == "2.1":
            # OCPP-J 2.1 §4.1.3: the receiver SHALL ignore a message of an unknown type.
            raise FrameDecodeError(
                f"unknown message type {raw_type}",
                error_code="MessageTypeNotSupported",
                message_id=mid,
                reply=False,
            )
        # OCPP-J 2.0.1 §4.4: answer with MessageTypeNotSupported.
        raise FrameDecodeError(
            f"message type {raw_type} not supported by OCPP {version}",
            error_code="MessageTypeNotSupported",
            message_id=mid,
        )
    mtype = MessageType(raw_type)
    reply = _reply_policy(raw_type, version, id_readable)
    if not id_readable:
        what = "missing" if n < 2 else ("not a string" if type(raw_id) is not str else "longer than 36")
        raise FrameDecodeError(f"message id {what}", reply=reply, message_type=mtype)

    if raw_type == 2 or raw_type == 6:
        if n != 4:
            raise FrameDecodeError(
                f"{mtype.name} needs 4 elements, got {n}", message_id=mid, reply=reply, message_type=mtype
            )
        action, payload = msg[2], msg[3]
        if type(action) is not str:
            raise FrameDecodeError("action is not a string", message_id=mid, reply=reply, message_type=mtype)
        if type(payload) is not dict:
            raise FrameDecodeError(
                "payload is not a JSON object",
                error_code="FormatViolation",
                message_id=mid,
                reply=reply,
                message_type=mtype,
            )
        return Call(mid, action, payload) if raw_type == 2 else Send(mid, action, payload)

    if raw_type == 3:
        if n != 3:
            raise FrameDecodeError(
                f"CALLRESULT needs 3 elements, got {n}", message_id=mid, reply=reply, message_type=mtype
            )
        payload = msg[2]
        if type(payload) is not dict:
            raise FrameDecodeError(
                "payload is not a JSON object",
                error_code="FormatViolation",
                message_id=mid,
                reply=reply,
                message_type=mtype,
            )
        return CallResult(mid, payload)

    # CALLERROR (4) or CALLRESULTERROR (5)
    if n != 5:
        raise FrameDecodeError(
            f"{mtype.name} needs 5 elements, got {n}", message_id=mid, reply=reply, message_type=mtype
        )
    code, description, details = msg[2], msg[3], msg[4]
    if type(code) is not str or type(description) is not str:
        raise FrameDecodeError(
            "errorCode or errorDescription is not a string", message_id=mid, reply=reply, message_type=mtype
        )
    if type(details) is not dict:
        raise FrameDecodeError(
            "errorDetails is not a JSON object",
            error_code="FormatViolation",
            message_id=mid,
            reply=reply,
            message_type=mtype,
        )
    if raw_type == 4:
        return CallError(mid, code, description, details)
    return CallResultError(mid, code, description, details)
