"""WebSocket (RFC 6455, permessage-deflate RFC 7692) over any ``trio.abc.Stream``, on wsproto.

The only module (with :mod:`evsim.ws.deflate`) that imports wsproto or h11; everything they raise is
translated into :mod:`evsim.errors` here.

Theory of operation
-------------------
No task per connection. A :class:`WebSocket` is a wsproto ``Connection`` (sans-IO) plus the stream:

* **Reading** happens in whichever task calls :meth:`WebSocket.receive` (one at a time, like trio
  streams). It reads up to :data:`RECEIVE_SIZE` bytes and walks the frames: complete messages go to a
  small inbox (one read can carry several), fragments are joined, pings are answered, a close frame is
  answered and ends the connection.
* **Frames: the common case here, the rest in wsproto.** wsproto's generic frame machinery costs
  ≈25 µs per small message (measured, both directions). So an unfragmented text/binary frame - every
  OCPP message - is built (:meth:`WebSocket._frame`) and, when it arrives whole with the expected mask,
  reserved bits, minimal length and size, parsed (:meth:`WebSocket._take_frames`) right here, deflated
  and inflated on the *same* zlib objects wsproto's extension uses (:mod:`evsim.ws.deflate`). Every
  other frame (control frames, fragments, anything malformed or too big) is handed to wsproto whole, in
  order, so wsproto still answers pings and closes and fails the connection with its own codes.
  Parsing starts at a frame boundary: both sides take the bytes behind the handshake themselves (a server's
  wsproto drops them, a client's wsproto is replaced by a fresh frame parser); only a client whose
  handshake reads passed 64 KiB parses everything through wsproto. Consequence: **pings that arrive
  while nobody reads are answered on the next receive**; an OCPP session always has a reader, so this
  costs nothing in practice. Pongs only bump ``statistics().pongs_received``: a keep-alive loop sends
  :meth:`WebSocket.ping` and checks the counter moved before the next one (OCPP-J §8.4: no pong → drop
  the connection), with no extra task.
* **Writing** is serialised without a lock: the first writer sends, writers that arrive meanwhile
  append their frame to an out-buffer and park; the sending task flushes the buffer before it leaves
  (so concurrent senders are batched into one ``send_all``). wsproto frames are produced synchronously
  at the call, so frames keep the order of the calls, which permessage-deflate's shared window needs.
  A pong or close reply produced while reading never waits behind a blocked writer: it is appended
  and sent by whoever is sending; of the pongs waiting that way only the newest is kept (RFC 6455 §5.5.3
  allows answering only the most recent Ping), so a ping flood from a peer that does not read queues at
  most one pong. ``_send_text_nowait`` (the OCPP session's path) never blocks and is
  never a checkpoint: it frames the message and hands it to an evsim stream's synchronous
  ``_send_nowait`` (TLS, TCP), or leaves it in the out-buffer for ``_flush()``.
* **A peer that does not read**: a reader that must send a pong itself waits for it to leave, so it stops
  reading (back-pressure). Such a write that makes no progress for ``send_timeout`` seconds drops the
  connection: :meth:`WebSocket.abort` closes the stream without a closing handshake (a close frame could not
  leave either) and every receive and send then raises :class:`~evsim.errors.PeerNotReading`. Callers that
  send (the Local Controller's relay) bound their own sends the same way and call :meth:`WebSocket.abort`.
* **Size limit**: a message larger than ``max_message_size`` bytes (UTF-8 for text) closes the
  connection with 1009; inflation is bounded too (:mod:`evsim.ws.deflate`). Sizes are checked as frames
  and fragments arrive: a frame header that announces too much is refused before its payload, so is a
  fragment out of order (:meth:`WebSocket._check_data_header`).
* **Closing** (:meth:`WebSocket.aclose`) sends a close frame, waits up to ``close_timeout`` for the
  peer's close frame (reading itself, or letting the active reader see it), then closes the stream.
  A close frame from the peer is answered at once and the stream closed. Receivers then get
  :class:`~evsim.errors.WebSocketClosed`; a transport that breaks or ends without a close frame gives
  :class:`~evsim.errors.BrokenTransport` instead.
* **Cancellation**: a send cancelled mid-way leaves the stream in an unknown state (trio's rule for
  streams), so later sends raise ``BrokenTransport``. A sender parked behind another one that is
  cancelled still has its frame sent.

The opening handshake (:func:`ws_client`, :func:`ws_server`) is bounded by ``open_timeout``; on any
failure the stream is closed. Rejections and malformed requests get a short ``text/plain`` HTTP
response written here (status line, Content-Length, ``Connection: close``).
"""

from __future__ import annotations

import contextlib
import http
import math
import os
import struct
import types
from collections.abc import Callable, Mapping, Sequence
from typing import cast

import attrs
import h11
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection, ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.extensions import Extension
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import ProtocolError

from evsim.errors import (
    BrokenTransport,
    ClosedTransport,
    PeerNotReading,
    TransportError,
    UpgradeFailed,
    UpgradeRejected,
    WebSocketClosed,
    WebSocketError,
)
from evsim.ws.deflate import BoundedDeflate

__all__ = [
    "Accept",
    "Reject",
    "UpgradeRequest",
    "WebSocket",
    "WsStatistics",
    "ws_client",
    "ws_server",
]

RECEIVE_SIZE = 65536
"""Bytes asked of the stream per read: one read holds a 64 KiB OCPP message or many small ones."""

DEFAULT_MAX_MESSAGE_SIZE = 65536
"""Default message size limit in bytes; OCPP has none, 64 KiB covers every schema-valid message we send."""

DEFAULT_OPEN_TIMEOUT = 30.0
"""Seconds for the opening handshake; OCPP-J suggests 30 s message timeouts (protocol-digest §1.5)."""

DEFAULT_CLOSE_TIMEOUT = 10.0
"""Seconds to wait for the peer's close frame (the ``websockets`` library's default close_timeout)."""

DEFAULT_SEND_TIMEOUT = 60.0
"""Seconds a send may make no progress (the peer reads nothing) before the connection is dropped."""

_MAX_REJECT_BODY = 1024  # bytes of a rejection body kept for UpgradeRejected.reason
# what wsproto and h11 raise on bad input (UnicodeError is a ValueError)
_ERRORS = (ProtocolError, h11.ProtocolError, ValueError)

# RFC 6455 §7.4: codes an endpoint may send (1004-1006 and 1015 are reserved, 1000-2999 are the RFC's).
_SENDABLE_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})


def _frozen_headers(value: Mapping[str, str]) -> Mapping[str, str]:
    return types.MappingProxyType(dict(value))


@attrs.frozen
class UpgradeRequest:
    """What the server knows about a client's upgrade request when it decides.

    Attributes:
        path: the request target, still percent-encoded (``/ocpp/RDAM%7C123``).
        host: the ``Host`` header.
        subprotocols: ``Sec-WebSocket-Protocol`` offers in the client's order of preference.
        headers: the other request headers, lower-case names; repeated headers joined with ``, ``.
    """

    path: str
    host: str
    subprotocols: tuple[str, ...]
    headers: Mapping[str, str] = attrs.field(converter=_frozen_headers, factory=dict)


@attrs.frozen
class Accept:
    """Accept the upgrade.

    Attributes:
        subprotocol: one of the client's offers, or None to complete the handshake without one
            (what OCPP-J §3.2 asks when no version matches; the CSMS then closes).
        extra_headers: additional response headers.
    """

    subprotocol: str | None = None
    extra_headers: tuple[tuple[str, str], ...] = ()


def _check_status(_instance: object, _attribute: object, value: int) -> None:
    if not 300 <= value <= 599:
        raise ValueError(f"a rejection needs an HTTP status in 300..599, got {value}")


@attrs.frozen
class Reject:
    """Refuse the upgrade with an HTTP status (401 bad credentials, 404 unknown identity, ...).

    Attributes:
        status: HTTP status code, 300..599.
        reason: short text for the response body (UTF-8, ``text/plain``).
        headers: additional response headers; a 401 gets ``WWW-Authenticate: Basic`` if none is given.
    """

    status: int = attrs.field(validator=_check_status)
    reason: str = ""
    headers: tuple[tuple[str, str], ...] = ()


@attrs.frozen
class WsStatistics:
    """A snapshot of one WebSocket's counters.

    Attributes:
        messages_sent / messages_received: complete text or binary messages.
        payload_bytes_sent / payload_bytes_received: message bytes before compression (UTF-8 for text).
        wire_bytes_sent / wire_bytes_received: bytes through the stream, handshake included.
        pings_sent / pings_received / pongs_received: control frames.
        compressed: permessage-deflate is in use.
        state: ``open``, ``closing`` (we sent a close frame), ``closed`` or ``broken``.
        close_code / close_reason: from the close frame that ended the connection, if any.
        closed_by: ``local`` or ``remote`` (who sent the first close frame), or None.
        send_buffered: bytes waiting in the out-buffer for the task that is sending (pending pong included).
        pongs_skipped: pings not answered because a newer ping's pong replaced theirs while a send blocked.
    """

    messages_sent: int
    messages_received: int
    payload_bytes_sent: int
    payload_bytes_received: int
    wire_bytes_sent: int
    wire_bytes_received: int
    pings_sent: int
    pings_received: int
    pongs_received: int
    compressed: bool
    state: str
    close_code: int | None
    close_reason: str
    closed_by: str | None
    send_buffered: int = 0
    pongs_skipped: int = 0


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


_OP_CONTINUATION = 0x0
_OP_TEXT = 0x1
_OP_BINARY = 0x2
_HEADER_16 = struct.Struct("!BBH")
_HEADER_64 = struct.Struct("!BBQ")
_DEFLATE_WIRE_FACTOR = 4
"""A compressed message's frames may carry this many times ``max_message_size`` (+ 1 KiB) on the wire."""

_MASK_POOL_SIZE = 4096  # random bytes fetched at once: one getrandom(2) per 1024 client frames
_mask_pool = b""
_mask_pos = 0


def _mask_key() -> bytes:
    """A fresh 32-bit masking key from the OS's strong entropy source (RFC 6455 §5.3), fetched in bulk."""
    global _mask_pool, _mask_pos
    pos = _mask_pos
    if pos + 4 > len(_mask_pool):
        _mask_pool = os.urandom(_MASK_POOL_SIZE)
        pos = 0
    _mask_pos = pos + 4
    return _mask_pool[pos : pos + 4]


def _mask(data: bytes, key: bytes) -> bytes:
    """XOR ``data`` with the repeated 4-byte ``key`` (RFC 6455 §5.3), as one big-integer operation."""
    n = len(data)
    if not n:
        return b""
    repeated = key * ((n >> 2) + 1)
    value = int.from_bytes(data, "little") ^ int.from_bytes(repeated[:n], "little")
    return value.to_bytes(n, "little")


class WebSocket(trio.abc.AsyncResource):
    """An open WebSocket; made by :func:`ws_client` or :func:`ws_server`, never directly.

    Attributes:
        subprotocol: the negotiated ``Sec-WebSocket-Protocol``, or None.
        path: the request path (percent-encoded).
        request: the client's request (server side), None on the client side.
        compressed: permessage-deflate was negotiated.

    ``receive`` returns ``str`` for text and ``bytes`` for binary messages; ``receive_text`` /
    ``receive_bytes`` close with 1003 (unsupported data) when the other kind arrives.
    """

    __slots__ = (
        "_broken",
        "_check_events",
        "_client",
        "_close_code",
        "_close_done",
        "_close_reason",
        "_close_timeout",
        "_closed_by",
        "_conn",
        "_deflate",
        "_dropped",
        "_failed",
        "_fast_rx",
        "_flushed",
        "_inbox",
        "_max",
        "_messages_received",
        "_messages_sent",
        "_out",
        "_parts",
        "_parts_size",
        "_payload_received",
        "_payload_sent",
        "_pings_received",
        "_pings_sent",
        "_pong",
        "_pongs_received",
        "_pongs_skipped",
        "_push",
        "_queued",
        "_rbuf",
        "_receiving",
        "_send_broken",
        "_send_timeout",
        "_sending",
        "_slow_left",
        "_slow_message",
        "_slow_wire",
        "_slow_wire_limit",
        "_stream",
        "_transport_closed",
        "_wire_received",
        "_wire_sent",
        "_write_lot",
        "compressed",
        "path",
        "request",
        "subprotocol",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        conn: Connection,
        *,
        subprotocol: str | None,
        path: str,
        request: UpgradeRequest | None,
        compressed: bool,
        max_message_size: int,
        close_timeout: float | None,
        wire_bytes_sent: int,
        wire_bytes_received: int,
        send_timeout: float | None = DEFAULT_SEND_TIMEOUT,
        deflate: BoundedDeflate | None = None,
        trailing_data: bool = False,
        early_data: bytes = b"",
    ) -> None:
        self.subprotocol = subprotocol
        self.path = path
        self.request = request
        self.compressed = compressed
        self._stream = stream
        self._conn = conn
        self._max = max_message_size
        self._close_timeout = math.inf if close_timeout is None else close_timeout
        self._send_timeout = math.inf if send_timeout is None else send_timeout
        # reading
        self._receiving = False
        self._inbox: list[str | bytes] = []  # usually 0 or 1 long; a list is 10x smaller than a deque
        self._parts: list[str | bytes] = []
        self._parts_size = 0
        self._check_events = True  # the handshake may have left frames in wsproto's buffer
        self._client = request is None
        self._deflate = deflate if compressed else None
        # Frames we parse ourselves (see _take_frames); only from a frame boundary, so not when wsproto got
        # bytes after the handshake (it may hold part of a frame).
        self._fast_rx = not trailing_data
        self._rbuf = bytearray(early_data)  # received bytes not yet parsed (a partial frame)
        self._slow_left = 0  # bytes of the current frame still owed to wsproto
        self._slow_message = False  # wsproto is in the middle of a fragmented message
        self._slow_wire = 0  # payload bytes announced by the frames of that message so far
        self._slow_wire_limit = max_message_size  # larger for a compressed message (see _check_data_header)
        # writing
        self._sending = False
        self._out = bytearray()
        self._pong = b""  # the newest pong waiting for the task that is sending (not in _queued yet)
        self._queued = 0  # bytes ever appended for sending (handshake excluded)
        self._flushed = 0  # bytes ever handed to send_all successfully
        self._write_lot: trio.lowlevel.ParkingLot | None = None  # made when a writer must wait
        self._send_broken: str | None = None
        # evsim streams (TlsStream, TcpStream) take bytes synchronously: see _send_text_nowait
        self._push: Callable[[bytes], bool | None] | None = getattr(stream, "_send_nowait", None)
        # closing
        self._close_code: int | None = None
        self._close_reason = ""
        self._closed_by: str | None = None
        self._failed = False  # we failed the connection (protocol error, too big): no close reply awaited
        self._broken: str | None = None
        self._dropped = False  # abort() dropped the connection: errors are PeerNotReading
        self._transport_closed = False
        self._close_done: trio.Event | None = None
        # statistics
        self._messages_sent = 0
        self._messages_received = 0
        self._payload_sent = 0
        self._payload_received = 0
        self._wire_sent = wire_bytes_sent
        self._wire_received = wire_bytes_received
        self._pings_sent = 0
        self._pings_received = 0
        self._pongs_received = 0
        self._pongs_skipped = 0

    # -- public API -------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once the connection ended (closed either way, or broken)."""
        return self._transport_closed or self._broken is not None

    @property
    def close_code(self) -> int | None:
        """Code of the close frame that ended (or is ending) the connection, if any."""
        return self._close_code

    def statistics(self) -> WsStatistics:
        """A snapshot of this WebSocket's counters."""
        if self._broken is not None:
            state = "broken"
        elif self._transport_closed:
            state = "closed"
        elif self._close_code is not None:
            state = "closing"
        else:
            state = "open"
        return WsStatistics(
            messages_sent=self._messages_sent,
            messages_received=self._messages_received,
            payload_bytes_sent=self._payload_sent,
            payload_bytes_received=self._payload_received,
            wire_bytes_sent=self._wire_sent,
            wire_bytes_received=self._wire_received,
            pings_sent=self._pings_sent,
            pings_received=self._pings_received,
            pongs_received=self._pongs_received,
            compressed=self.compressed,
            state=state,
            close_code=self._close_code,
            close_reason=self._close_reason,
            closed_by=self._closed_by,
            send_buffered=len(self._out) + len(self._pong),
            pongs_skipped=self._pongs_skipped,
        )

    @property
    def send_timeout(self) -> float:
        """Seconds a send may make no progress before the peer counts as not reading (inf: never)."""
        return self._send_timeout

    async def abort(self, reason: str) -> None:
        """Drop a peer that does not read: close the stream at once, without a closing handshake.

        A close frame could not reach such a peer, so none is sent. Every pending and later receive or send
        raises :class:`~evsim.errors.PeerNotReading` with ``reason``. Idempotent.
        """
        if not self.closed:
            self._dropped = True
            self._broken = reason
            self._send_broken = reason
        self._out = bytearray()
        self._pong = b""
        if not self._transport_closed:
            self._transport_closed = True
            await trio.aclose_forcefully(self._stream)
        if self._close_done is not None:
            self._close_done.set()

    async def send_text(self, text: str) -> None:
        """Send one text message.

        Raises:
            WebSocketClosed: the connection is closing or closed.
            BrokenTransport: the transport broke (now or earlier).
        """
        self._check_can_send()
        payload = text.encode("utf-8")
        data = self._frame(payload, _OP_TEXT)
        self._messages_sent += 1
        self._payload_sent += len(payload)
        await self._write(data, wait=True)

    def _send_text_nowait(self, text: str) -> bool:
        """Send one text message without blocking (private fast path for :class:`OcppSession`).

        The frame is made at once (so it keeps its place among messages, as with :meth:`send_text`) and
        handed to the stream if that can take it synchronously; otherwise it waits in the out-buffer.
        Never a checkpoint, so a caller's cancellation cannot leave half a frame on the wire.

        Returns:
            True when the message reached the stream or a task already sending will send it; False when
            bytes wait here or in the stream: ``await _flush()`` sends them.

        Raises:
            WebSocketClosed: the connection is closing or closed.
            BrokenTransport: the transport broke (now or earlier).
            ClosedTransport: the stream was closed.
        """
        self._check_can_send()
        payload = text.encode("utf-8")
        data = self._frame(payload, _OP_TEXT)
        self._messages_sent += 1
        self._payload_sent += len(payload)
        self._queued += len(data)
        if self._sending:
            self._out += data  # the task sending now flushes the out-buffer before it leaves
            return True
        if self._send_broken is not None:
            raise self._broken_error(self._send_broken)
        push = self._push
        done = None
        if push is not None and not self._out:
            try:
                done = push(data)
            except (trio.BrokenResourceError, BrokenTransport) as exc:
                self._send_broken = f"transport broken: {exc}"
                self._lost(self._send_broken)
                raise BrokenTransport(self._send_broken) from exc
            except (trio.ClosedResourceError, ClosedTransport) as exc:
                self._send_broken = "the WebSocket's stream was closed"
                raise ClosedTransport(self._send_broken) from exc
        if done is None:  # the stream took nothing
            self._out += data
            return False
        self._flushed += len(data)
        self._wire_sent += len(data)
        return done

    async def _flush(self) -> None:
        """Send what :meth:`_send_text_nowait` left waiting (here and in the stream).

        Raises:
            BrokenTransport, ClosedTransport, WebSocketClosed: as :meth:`send_text`.
        """
        if self._sending:  # that task flushes the out-buffer, and the stream sends in order
            await trio.lowlevel.checkpoint()
            return
        await self._write(b"", wait=True, counted=True)

    async def send_bytes(self, data: bytes) -> None:
        """Send one binary message.

        Raises:
            WebSocketClosed: the connection is closing or closed.
            BrokenTransport: the transport broke (now or earlier).
        """
        self._check_can_send()
        frame = self._frame(bytes(data), _OP_BINARY)
        self._messages_sent += 1
        self._payload_sent += len(data)
        await self._write(frame, wait=True)

    async def ping(self, payload: bytes = b"") -> None:
        """Send a ping (at most 125 bytes of payload); the pong shows in ``statistics().pongs_received``.

        Raises:
            ValueError: payload longer than 125 bytes (RFC 6455 §5.5).
            WebSocketClosed: the connection is closing or closed.
            BrokenTransport: the transport broke.
        """
        if len(payload) > 125:
            raise ValueError("a ping payload is at most 125 bytes (RFC 6455 §5.5)")
        self._check_can_send()
        data = self._conn.send(Ping(payload=payload))
        self._pings_sent += 1
        await self._write(data, wait=True)

    def _frame(self, payload: bytes, opcode: int) -> bytes:
        """One unfragmented data frame (RFC 6455 §5.2), compressed (RFC 7692) and masked as negotiated.

        What wsproto's ``send`` makes for a whole message, without its generic per-frame machinery; the
        deflate state is the one wsproto's extension uses. Control frames still go through wsproto.
        """
        first = 0x80 | opcode
        deflate = self._deflate
        if deflate is not None:
            payload = deflate.compress_message(payload, self._client)
            first |= 0x40
        n = len(payload)
        if self._client:
            if n < 126:
                header = bytes((first, 0x80 | n))
            elif n < 65536:
                header = _HEADER_16.pack(first, 0xFE, n)
            else:
                header = _HEADER_64.pack(first, 0xFF, n)
            key = _mask_key()
            return header + key + _mask(payload, key)
        if n < 126:
            return bytes((first, n)) + payload
        if n < 65536:
            return _HEADER_16.pack(first, 126, n) + payload
        return _HEADER_64.pack(first, 127, n) + payload

    async def receive(self) -> str | bytes:
        """Wait for the next message: ``str`` (text) or ``bytes`` (binary).

        Messages that arrived before a close frame are returned first.

        Raises:
            WebSocketClosed: the connection was closed by either side (``code``, ``reason``), or
                we failed it (1009 message too big, 1002 protocol error, 1007 bad UTF-8).
            BrokenTransport: the transport broke or ended without a close frame.
            ClosedTransport: the stream was closed under us (not via :meth:`aclose`).
            trio.BusyResourceError: another task is receiving.
        """
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this WebSocket")
        self._receiving = True
        try:
            inbox = self._inbox
            if inbox:  # left over from an earlier read: still a checkpoint, as trio expects
                await trio.lowlevel.checkpoint()
            while not inbox:
                self._raise_if_ended()
                await self._pump()  # its read is this call's checkpoint
            return inbox.pop(0)
        finally:
            self._receiving = False

    async def receive_text(self) -> str:
        """Wait for the next text message; a binary one closes the connection with 1003.

        Raises:
            WebSocketClosed, BrokenTransport, ClosedTransport: see :meth:`receive`.
        """
        # receive(), inlined: one coroutine frame less on every message of an OCPP session
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this WebSocket")
        self._receiving = True
        try:
            inbox = self._inbox
            if inbox:  # left over from an earlier read: still a checkpoint, as trio expects
                await trio.lowlevel.checkpoint()
            while not inbox:
                self._raise_if_ended()
                await self._pump()  # its read is this call's checkpoint
            message = inbox.pop(0)
        finally:
            self._receiving = False
        if isinstance(message, str):
            return message
        await self._fail_now(1003, "binary messages are not supported")
        raise WebSocketClosed(1003, "binary messages are not supported")

    async def receive_bytes(self) -> bytes:
        """Wait for the next binary message; a text one closes the connection with 1003.

        Raises:
            WebSocketClosed, BrokenTransport, ClosedTransport: see :meth:`receive`.
        """
        message = await self.receive()
        if isinstance(message, bytes):
            return message
        await self._fail_now(1003, "text messages are not supported")
        raise WebSocketClosed(1003, "text messages are not supported")

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Close: send a close frame, wait up to ``close_timeout`` for the reply, close the stream.

        Idempotent; after the connection ended (either way) it only makes sure the stream is closed.

        Args:
            code: RFC 6455 §7.4 status: 1000 normal, 1001 going away, 1008 policy, 3000-4999 private.
            reason: short text (truncated to 123 UTF-8 bytes).

        Raises:
            ValueError: ``code`` may not be sent (1004-1006, 1015, unassigned).
        """
        if code not in _SENDABLE_CLOSE_CODES and not 3000 <= code <= 4999:
            raise ValueError(f"close code {code} may not be sent (RFC 6455 §7.4)")
        try:
            if (
                self._conn.state is ConnectionState.OPEN
                and self._broken is None
                and self._send_broken is None
                and not self._transport_closed
            ):
                self._set_close(code, reason, "local")
                data = self._conn.send(CloseConnection(code=code, reason=reason))
                with trio.move_on_after(self._close_timeout):  # bounds a blocked writer too
                    try:
                        await self._write(data, wait=True)
                    except TransportError:
                        pass
                    else:
                        await self._wait_close_reply()
        finally:
            await self._close_transport()

    # -- internals: reading ---------------------------------------------------------------------------

    def _broken_error(self, reason: str) -> BrokenTransport:
        return PeerNotReading(reason) if self._dropped else BrokenTransport(reason)

    def _raise_if_ended(self) -> None:
        if self._broken is not None:
            raise self._broken_error(self._broken)
        if self._close_code is not None and (
            self._transport_closed or self._failed or self._conn.state is ConnectionState.CLOSED
        ):
            raise WebSocketClosed(self._close_code, self._close_reason)
        if self._transport_closed:
            raise ClosedTransport("the WebSocket's stream was closed")

    async def _pump(self) -> None:
        """Read once (or drain what the handshake left), handle the events, answer, maybe close."""
        conn = self._conn
        if self._check_events:  # once per connection: frames that came with the handshake response
            self._check_events = False
            await trio.lowlevel.checkpoint()
            out = self._take_frames(b"") if self._fast_rx else self._handle_events()
        else:
            try:
                data = await self._stream.receive_some(RECEIVE_SIZE)
            except (trio.BrokenResourceError, BrokenTransport) as exc:
                self._lost(f"transport broken: {exc}")
                await self._close_transport()
                raise BrokenTransport(self._broken or str(exc)) from exc
            except (trio.ClosedResourceError, ClosedTransport) as exc:
                if self._broken is not None:  # abort() from another task
                    raise self._broken_error(self._broken) from exc
                if self._close_code is not None:  # aclose() gave up waiting and closed the stream
                    self._transport_closed = True
                    return
                raise ClosedTransport("the WebSocket's stream was closed") from exc
            if not data:
                if self._close_code is None:
                    self._lost("the peer closed the connection without a WebSocket close frame")
                await self._close_transport()
                return
            self._wire_received += len(data)
            if self._fast_rx:
                out = self._take_frames(data)
            else:
                conn.receive_data(bytes(data))
                out = self._handle_events()
        ending = self._failed or conn.state is ConnectionState.CLOSED
        if out:
            if ending:  # a close frame: make sure it left before the stream closes
                with contextlib.suppress(TransportError), trio.move_on_after(self._close_timeout):
                    await self._write(out, wait=True)  # errors are recorded, receive() raises next
            else:  # only pongs
                await self._send_pongs(out)
        if ending:
            await self._close_transport()

    async def _send_pongs(self, out: bytearray) -> None:
        """Answer pings read in one go (``out``: their pongs); see the module docstring."""
        if self._sending:  # never wait behind a blocked writer; it sends the newest pong only
            last, count = self._last_pong(out)
            self._pongs_skipped += count - 1 + (1 if self._pong else 0)
            self._pong = last
            return
        with trio.move_on_after(self._send_timeout) as scope:
            with contextlib.suppress(TransportError):  # recorded by _write, raised by receive() next
                await self._write(out, wait=False)
        if scope.cancelled_caught:
            await self.abort(f"the peer read nothing for {self._send_timeout:g} s (pongs waited to be sent)")
            raise self._broken_error(self._broken or "")

    def _last_pong(self, out: bytearray) -> tuple[bytes, int]:
        """The last frame of ``out``, a run of whole pong frames (as this side masks or not), and their
        number."""
        pos = count = 0
        last = b""
        while pos < len(out):
            n = out[pos + 1] & 0x7F  # control frames: payload <= 125 bytes, 7-bit length
            end = pos + 2 + (4 if out[pos + 1] & 0x80 else 0) + n
            last = bytes(out[pos:end])
            pos = end
            count += 1
        return last, count

    def _handle_events(self) -> bytearray | None:
        """Walk wsproto's events; return bytes to send (pongs, close replies), if any."""
        conn = self._conn
        out: bytearray | None = None
        for event in conn.events():
            kind = type(event)
            if kind is TextMessage or kind is BytesMessage:
                assert isinstance(event, (TextMessage, BytesMessage))
                if not self._take_data(event):
                    out = (out or bytearray()) + self._fail(1009, "message too big")
                    break
            elif kind is Ping:
                assert isinstance(event, Ping)
                self._pings_received += 1
                if conn.state is ConnectionState.OPEN:
                    out = (out or bytearray()) + conn.send(event.response())
            elif kind is Pong:
                self._pongs_received += 1
            elif kind is CloseConnection:
                assert isinstance(event, CloseConnection)
                code = int(event.code)
                reason = event.reason or ""
                state = conn.state
                if state is ConnectionState.REMOTE_CLOSING:  # the peer starts the closing handshake
                    self._set_close(code, reason, "remote")
                    out = (out or bytearray()) + conn.send(event.response())
                elif state is ConnectionState.OPEN:  # wsproto found a protocol error (ParseFailed)
                    if code == 1009:
                        reason = "message too big"
                    out = (out or bytearray()) + self._fail(code, reason)
                elif state is ConnectionState.LOCAL_CLOSING:
                    # a protocol error while we wait for the reply to our close frame: wsproto parses no
                    # more, so no reply can come; end now instead of waiting for close_timeout
                    self._fail(code, reason)
                # else CLOSED: the reply to our close frame
                break
        return out

    def _take_frames(self, data: bytes | bytearray) -> bytearray | None:
        """Parse received bytes: unfragmented data frames here, anything else through wsproto.

        Walks the frames from a frame boundary. A complete FIN text/binary frame with the expected mask
        and reserved bits, a minimal length encoding and at most ``max_message_size`` payload bytes is
        unmasked, inflated (:meth:`BoundedDeflate.inflate_message`), checked and queued right here. Every
        other frame - control frames, fragments, anything malformed or too big - is fed to wsproto whole
        (as its bytes arrive), and its events are handled as before, in order, so wsproto answers pings,
        closes, and fails the connection with its own codes and reasons.

        Returns:
            Bytes to send (pongs, close frames), if any.
        """
        buf: bytes | bytearray = self._rbuf
        if buf:
            buf += data  # a bytearray here
        else:
            buf = data  # usually one or more whole frames: parse them in place
        out: bytearray | None = None
        conn = self._conn
        pos = 0
        end = len(buf)
        limit = self._max
        server = not self._client
        deflate = self._deflate
        while pos < end:
            if self._slow_left:
                n = min(self._slow_left, end - pos)
                conn.receive_data(bytes(buf[pos : pos + n]))
                pos += n
                self._slow_left -= n
                more = self._handle_events()
                if more:
                    out = (out or bytearray()) + more
                if self._failed or conn.state is ConnectionState.CLOSED:
                    pos = end  # the connection ended (as _handle_events stops at a close frame)
                    break
                continue
            if end - pos < 2:
                break
            b0 = buf[pos]
            b1 = buf[pos + 1]
            length = b1 & 0x7F
            head = 2
            minimal = True
            if length == 126:
                head = 4
                if end - pos < 4:
                    break
                length = (buf[pos + 2] << 8) | buf[pos + 3]
                minimal = length > 125
            elif length == 127:
                head = 10
                if end - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                minimal = 0xFFFF < length < 1 << 63
            masked = b1 & 0x80
            if masked:
                head += 4
            opcode = b0 & 0x0F
            rsv = b0 & 0x70
            if (
                b0 & 0x80
                and opcode in (_OP_TEXT, _OP_BINARY)
                and not self._slow_message
                and (rsv == 0 or (rsv == 0x40 and deflate is not None))
                and bool(masked) == server
                and minimal
                and length <= limit
            ):
                total = head + length
                if end - pos < total:
                    break  # wait for the rest of the frame
                payload = bytes(buf[pos + head : pos + total])
                if masked:
                    payload = _mask(payload, bytes(buf[pos + head - 4 : pos + head]))
                pos += total
                failure = self._take_frame(payload, opcode, rsv)
                if failure is not None:
                    out = (out or bytearray()) + failure
                    pos = end
                    break
                continue
            # wsproto takes this frame whole, as its bytes arrive
            if opcode <= _OP_BINARY:
                if (
                    bool(masked) == server
                    and minimal
                    and (rsv == 0 or (rsv == 0x40 and deflate is not None and opcode != _OP_CONTINUATION))
                ):  # else wsproto fails the connection at the header
                    failure = self._check_data_header(opcode, rsv, length)
                    if failure is not None:
                        out = (out or bytearray()) + failure
                        pos = end
                        break
                self._slow_message = not b0 & 0x80
            self._slow_left = head + length
        if pos >= end:
            if self._rbuf:
                self._rbuf = bytearray()
        else:
            self._rbuf = bytearray(buf[pos:])
        return out

    def _check_data_header(self, opcode: int, rsv: int, length: int) -> bytes | None:
        """Check a data frame wsproto is about to get, from its header alone; on failure, the close frame.

        wsproto checks the order of fragments only when payload arrives and has no size limit: a header that
        announces 2**63-1 bytes, or a continuation without a message, would wait for bytes that never come.
        So both are refused here, before any payload: a frame that starts a message inside a fragmented one
        or continues none (1002), and a message whose frames announce more than ``max_message_size`` bytes
        (1009). A compressed message may take more room on the wire than inflated (stored blocks, a flush per
        fragment) but never several times as much: its frames may announce up to
        :data:`_DEFLATE_WIRE_FACTOR` times ``max_message_size`` + 1 KiB; what they inflate to is limited as it is
        inflated (:mod:`evsim.ws.deflate`, :meth:`_take_data`).
        """
        if opcode == _OP_CONTINUATION:
            if not self._slow_message:
                return self._fail(int(CloseReason.PROTOCOL_ERROR), "continuation frame without a message")
        else:
            if self._slow_message:
                return self._fail(int(CloseReason.PROTOCOL_ERROR), "new message inside a fragmented message")
            self._slow_wire = 0
            self._slow_wire_limit = self._max
            if rsv:
                self._slow_wire_limit = _DEFLATE_WIRE_FACTOR * self._max + 1024
        self._slow_wire += length
        if self._slow_wire > self._slow_wire_limit:
            return self._fail(1009, "message too big")
        return None

    def _take_frame(self, payload: bytes, opcode: int, rsv: int) -> bytes | None:
        """Queue one whole message parsed by :meth:`_take_frames`; on failure, the close frame to send."""
        if rsv:
            assert self._deflate is not None
            inflated = self._deflate.inflate_message(payload, self._client)
            if isinstance(inflated, CloseReason):
                if inflated is CloseReason.MESSAGE_TOO_BIG:
                    return self._fail(1009, "message too big")
                return self._fail(int(inflated), "error in extension")
            payload = inflated
        size = len(payload)
        if size > self._max:
            return self._fail(1009, "message too big")
        if opcode == _OP_TEXT:
            try:
                self._inbox.append(payload.decode("utf-8"))
            except UnicodeDecodeError as exc:
                return self._fail(int(CloseReason.INVALID_FRAME_PAYLOAD_DATA), str(exc))
        else:
            self._inbox.append(payload)
        self._messages_received += 1
        self._payload_received += size
        return None

    def _take_data(self, event: TextMessage | BytesMessage) -> bool:
        """Add a message or fragment; False if the message is too big."""
        data = event.data
        if isinstance(data, str):
            size = _utf8_len(data)
        else:
            data = bytes(data)
            size = len(data)
        if event.message_finished and not self._parts:
            if size > self._max:
                return False
            self._inbox.append(data)
        else:
            self._parts_size += size
            if self._parts_size > self._max:
                return False
            self._parts.append(data)
            if not event.message_finished:
                return True
            # all fragments of one message have the same type (RFC 6455 §5.4; wsproto checks opcodes)
            parts = self._parts
            if isinstance(data, str):
                self._inbox.append("".join(cast("list[str]", parts)))
            else:
                self._inbox.append(b"".join(cast("list[bytes]", parts)))
            size = self._parts_size
            self._parts = []
            self._parts_size = 0
        self._messages_received += 1
        self._payload_received += size
        return True

    def _fail(self, code: int, reason: str) -> bytes:
        """Fail the connection (RFC 6455 §7.1.7): close frame now, no reply awaited, stream closed after."""
        self._failed = True
        self._set_close(code, reason, "local")
        if self._conn.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            return self._conn.send(CloseConnection(code=code, reason=reason))
        return b""

    async def _fail_now(self, code: int, reason: str) -> None:
        data = self._fail(code, reason)
        try:
            if data:
                await self._write(data, wait=True)
        except TransportError:
            pass
        finally:
            await self._close_transport()

    async def _wait_close_reply(self) -> None:
        if self._receiving:  # the active reader will see the reply and close the transport
            if self._close_done is None:
                self._close_done = trio.Event()
            await self._close_done.wait()
            return
        self._receiving = True
        try:
            while (
                self._conn.state is ConnectionState.LOCAL_CLOSING
                and not self._transport_closed
                and self._broken is None
            ):
                try:
                    await self._pump()
                except TransportError:
                    return
        finally:
            self._receiving = False

    # -- internals: writing and state -------------------------------------------------------------------

    def _check_can_send(self) -> None:
        if self._broken is not None:
            raise self._broken_error(self._broken)
        if self._send_broken is not None:
            raise self._broken_error(self._send_broken)
        if self._close_code is not None:
            raise WebSocketClosed(self._close_code, self._close_reason)
        if self._transport_closed or self._conn.state is not ConnectionState.OPEN:
            raise WebSocketClosed(1006, "connection closed")

    async def _write(self, data: bytes | bytearray, *, wait: bool, counted: bool = False) -> None:
        """Send ``data`` after everything queued before it; see the module docstring.

        ``counted``: ``data`` is already in ``_queued`` (it waited in the out-buffer). An empty ``data``
        still flushes what the stream itself holds.

        Raises:
            BrokenTransport: the stream broke (or an earlier cancelled send left it unusable).
            ClosedTransport: the stream was closed.
        """
        if not counted:
            self._queued += len(data)
        if self._sending:
            self._out += data
            if not wait:
                return
            target = self._queued
            while self._flushed < target:
                if self._send_broken is not None:
                    raise self._broken_error(self._send_broken)
                if self._write_lot is None:
                    self._write_lot = trio.lowlevel.ParkingLot()
                await self._write_lot.park()
            return
        if self._send_broken is not None:
            raise self._broken_error(self._send_broken)
        self._sending = True
        chunk: bytes | bytearray = data
        if self._out:  # left by _send_text_nowait: it goes first
            chunk = self._out
            chunk += data
            self._out = bytearray()
        try:
            while True:
                await self._stream.send_all(chunk)
                self._flushed += len(chunk)
                self._wire_sent += len(chunk)
                if not self._out and not self._pong:
                    break
                chunk = self._out
                self._out = bytearray()
                if self._pong:  # first: a close frame may be in the out-buffer (counted now)
                    chunk[:0] = self._pong
                    self._queued += len(self._pong)
                    self._pong = b""
                if self._write_lot:
                    self._write_lot.unpark_all()
        except (trio.BrokenResourceError, BrokenTransport) as exc:
            self._send_broken = f"transport broken: {exc}"
            self._lost(self._send_broken)
            raise BrokenTransport(self._send_broken) from exc
        except (trio.ClosedResourceError, ClosedTransport) as exc:
            self._send_broken = "the WebSocket's stream was closed"
            if self._close_code is not None:  # aclose() gave up on a blocked send and closed the stream
                raise WebSocketClosed(self._close_code, self._close_reason) from exc
            raise ClosedTransport(self._send_broken) from exc
        except BaseException:
            self._send_broken = "a cancelled or failed send left the stream in an unknown state"
            raise
        finally:
            self._sending = False
            if self._write_lot:
                self._write_lot.unpark_all()

    def _set_close(self, code: int, reason: str, by: str) -> None:
        if self._close_code is None:
            self._close_code = code
            self._close_reason = reason
            self._closed_by = by

    def _lost(self, reason: str) -> None:
        if self._broken is None and self._close_code is None:
            self._broken = reason

    async def _close_transport(self) -> None:
        try:
            if not self._transport_closed:
                self._transport_closed = True
                with trio.move_on_after(self._close_timeout):
                    await self._stream.aclose()
        except (TransportError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            if self._close_done is not None:
                self._close_done.set()


# -- opening handshake ------------------------------------------------------------------------------------


async def _receive(stream: trio.abc.Stream) -> bytes:
    try:
        return bytes(await stream.receive_some(RECEIVE_SIZE))
    except (trio.BrokenResourceError, BrokenTransport) as exc:
        raise BrokenTransport(f"transport broken during the WebSocket handshake: {exc}") from exc
    except trio.ClosedResourceError as exc:
        raise ClosedTransport("the stream was closed during the WebSocket handshake") from exc


async def _send(stream: trio.abc.Stream, data: bytes) -> None:
    try:
        await stream.send_all(data)
    except (trio.BrokenResourceError, BrokenTransport) as exc:
        raise BrokenTransport(f"transport broken during the WebSocket handshake: {exc}") from exc
    except trio.ClosedResourceError as exc:
        raise ClosedTransport("the stream was closed during the WebSocket handshake") from exc


def _http_response(status: int, body: str, headers: Sequence[tuple[str, str]] = ()) -> bytes:
    """A complete, short HTTP/1.1 response that ends the connection."""
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    payload = body.encode("utf-8")
    lines = [f"HTTP/1.1 {status} {phrase}"]
    for name, value in headers:
        if not name or any(c in name for c in " \t\r\n:") or "\r" in value or "\n" in value:
            raise ValueError(f"bad response header {name!r}: {value!r}")
        lines.append(f"{name}: {value}")
    lines += [
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(payload)}",
        "Connection: close",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


async def ws_client(
    stream: trio.abc.Stream,
    *,
    host: str,
    path: str,
    subprotocols: Sequence[str],
    headers: Sequence[tuple[str, str]] = (),
    compression: bool = True,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    open_timeout: float | None = DEFAULT_OPEN_TIMEOUT,
    close_timeout: float | None = DEFAULT_CLOSE_TIMEOUT,
    send_timeout: float | None = DEFAULT_SEND_TIMEOUT,
) -> WebSocket:
    """Open a WebSocket as the client over a connected ``stream`` (TLS already done, if any).

    Args:
        stream: the transport; closed by this function if the handshake fails.
        host: the ``Host`` header (``csms.evsim.test:8443``).
        path: the request target, percent-encoded (see :func:`evsim.ws.paths.station_path`).
        subprotocols: offers in order of preference (``("ocpp2.1", "ocpp2.0.1")``).
        headers: extra request headers, e.g. :func:`evsim.ws.auth.basic_auth_header`.
        compression: offer permessage-deflate.
        max_message_size: largest message accepted, in bytes; larger ones close with 1009.
        open_timeout: seconds (trio time) for the handshake; None waits forever.
        close_timeout: seconds :meth:`WebSocket.aclose` waits for the peer's close frame.
        send_timeout: seconds a pong may wait for a peer that reads nothing before it is dropped (see
            :attr:`WebSocket.send_timeout`); None never gives up.

    Returns:
        The open :class:`WebSocket`; ``subprotocol`` may be None if the server picked none.

    Raises:
        UpgradeRejected: the server answered with an HTTP status instead of 101 (``.status``).
        WebSocketError: malformed response, bad accept token, unknown subprotocol or extension,
            timeout, or unusable ``headers``.
        BrokenTransport: the connection broke or closed before the response.
    """
    conn = WSConnection(ConnectionType.CLIENT)
    deflate = BoundedDeflate(max_message_size) if compression else None
    extensions = [deflate] if deflate is not None else []
    ok = False
    try:
        try:
            request = conn.send(
                Request(
                    host=host,
                    target=path,
                    subprotocols=list(subprotocols),
                    extensions=extensions,
                    extra_headers=[(n.encode("ascii"), v.encode("latin-1")) for n, v in headers],
                )
            )
        except _ERRORS as exc:
            raise WebSocketError(f"cannot build the upgrade request: {exc}") from exc
        with trio.move_on_after(math.inf if open_timeout is None else open_timeout):
            await _send(stream, request)
            ws = await _client_handshake(
                stream, conn, path, max_message_size, close_timeout, len(request), deflate
            )
            ws._send_timeout = math.inf if send_timeout is None else send_timeout
            ok = True
            return ws
        raise UpgradeFailed(
            "upgrade_timeout", f"WebSocket opening handshake timed out after {open_timeout} s"
        )
    finally:
        if not ok:
            await trio.aclose_forcefully(stream)


async def _client_handshake(
    stream: trio.abc.Stream,
    conn: WSConnection,
    path: str,
    max_message_size: int,
    close_timeout: float | None,
    sent: int,
    deflate: BoundedDeflate | None,
) -> WebSocket:
    received = 0
    status: int | None = None
    body = bytearray()
    raw = bytearray()  # the response so far, to see whether frames followed it
    while True:
        data = await _receive(stream)
        if not data:
            if status is not None:  # a rejection whose body ends with the connection
                raise UpgradeRejected(status, _reason_text(body))
            raise BrokenTransport("the server closed the connection during the WebSocket handshake")
        received += len(data)
        if len(raw) < _MAX_HANDSHAKE_PEEK:
            raw += data
        try:
            conn.receive_data(data)
            for event in conn.events():
                if isinstance(event, AcceptConnection):
                    connection = conn.connection
                    assert connection is not None
                    early: bytes | None = None
                    if len(raw) == received and _has_trailing_data(raw):
                        # Frames right behind the response: parse them ourselves from their start, like the
                        # rest, with a frame parser that has not seen them (see _restart_frames)
                        early = _early_data(raw)
                        connection = _restart_frames(event.extensions)
                    return WebSocket(
                        stream,
                        connection,
                        subprotocol=event.subprotocol,
                        path=path,
                        request=None,
                        compressed=any(ext.enabled() for ext in event.extensions),
                        max_message_size=max_message_size,
                        close_timeout=close_timeout,
                        wire_bytes_sent=sent,
                        wire_bytes_received=received,
                        deflate=deflate,
                        trailing_data=early is None and _has_trailing_data(raw),
                        early_data=early or b"",
                    )
                if isinstance(event, RejectConnection):
                    status = event.status_code
                    if not event.has_body:
                        raise UpgradeRejected(status)
                elif isinstance(event, RejectData):
                    body += event.data[: _MAX_REJECT_BODY - len(body)]
                    if event.body_finished or len(body) >= _MAX_REJECT_BODY:
                        raise UpgradeRejected(status or 0, _reason_text(body))
        except _ERRORS as exc:
            if status is not None:
                raise UpgradeRejected(status, _reason_text(body)) from exc
            raise UpgradeFailed("bad_http_response", f"bad WebSocket upgrade response: {exc}") from exc


_MAX_HANDSHAKE_PEEK = 65536  # an upgrade request or response is far shorter (h11 limits headers too)


def _restart_frames(extensions: Sequence[Extension]) -> Connection:
    """A client frame parser for the negotiated ``extensions`` that has seen no frame yet.

    wsproto's client feeds the bytes behind the 101 response to its frame parser (and the deflate extension's
    inbound state) at once; the caller hands those bytes to :class:`WebSocket` instead, which parses from a
    frame boundary and checks every header before wsproto sees it.
    """
    for extension in extensions:
        if isinstance(extension, BoundedDeflate):
            extension.reset_inbound()
    return Connection(ConnectionType.CLIENT, list(extensions))


def _has_trailing_data(raw: bytearray) -> bool:
    """True if bytes followed the HTTP head (frames wsproto already holds), or we cannot tell."""
    end = raw.find(b"\r\n\r\n")
    return end < 0 or end + 4 < len(raw)


def _early_data(raw: bytearray) -> bytes:
    """What followed the client's upgrade request in the same reads (wsproto's server side drops it)."""
    end = raw.find(b"\r\n\r\n")
    return bytes(raw[end + 4 :]) if end >= 0 else b""


def _reason_text(body: bytes | bytearray) -> str:
    return bytes(body).decode("utf-8", "replace").strip()[:200]


async def ws_server(
    stream: trio.abc.Stream,
    decide: Callable[[UpgradeRequest], Accept | Reject],
    *,
    compression: bool = True,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    open_timeout: float | None = DEFAULT_OPEN_TIMEOUT,
    close_timeout: float | None = DEFAULT_CLOSE_TIMEOUT,
    send_timeout: float | None = DEFAULT_SEND_TIMEOUT,
) -> WebSocket | None:
    """Serve the opening handshake on an accepted ``stream`` (TLS already done, if any).

    Args:
        stream: the transport; closed by this function unless a WebSocket is returned.
        decide: called once with the parsed :class:`UpgradeRequest`; returns :class:`Accept` or
            :class:`Reject` (check credentials and identity here; exceptions propagate).
        compression: accept permessage-deflate if the client offers it (OCPP-J §3.4: a CSMS SHALL).
        max_message_size: largest message accepted, in bytes; larger ones close with 1009.
        open_timeout: seconds (trio time) for the client's request; None waits forever.
        close_timeout: seconds :meth:`WebSocket.aclose` waits for the peer's close frame.
        send_timeout: seconds a pong may wait for a peer that reads nothing before it is dropped (see
            :attr:`WebSocket.send_timeout`); None never gives up.

    Returns:
        The open :class:`WebSocket`, or None after sending ``decide``'s rejection and closing.

    Raises:
        UpgradeFailed: malformed or non-WebSocket request (``bad_http_request``, answered with 400/426 first),
            or no complete request within ``open_timeout`` (``upgrade_timeout``).
        BrokenTransport: the connection broke or closed before a complete request.
        ValueError: ``decide`` accepted a subprotocol the client did not offer.
    """
    conn = WSConnection(ConnectionType.SERVER)
    ok = False
    try:
        with trio.move_on_after(math.inf if open_timeout is None else open_timeout):
            received = 0
            raw = bytearray()
            while True:
                data = await _receive(stream)
                if not data:
                    raise BrokenTransport(
                        "the client closed the connection before completing its upgrade request"
                    )
                received += len(data)
                raw += data  # bounded: h11 refuses an incomplete request head over 16 KiB
                try:
                    conn.receive_data(data)
                    event = next(iter(conn.events()), None)
                except _ERRORS as exc:
                    hint = getattr(exc, "event_hint", None)
                    status = hint.status_code if isinstance(hint, RejectConnection) else 400
                    extra = [("Sec-WebSocket-Version", "13")] if status == 426 else []
                    await _send_best_effort(
                        stream, _http_response(status, "bad WebSocket upgrade request", extra)
                    )
                    raise UpgradeFailed(
                        "bad_http_request", f"bad WebSocket upgrade request: {exc}", status=status
                    ) from exc
                if isinstance(event, Request):
                    break
            request = _upgrade_request(event)
            decision = decide(request)
            if isinstance(decision, Reject):
                headers = list(decision.headers)
                if decision.status == 401 and not any(n.lower() == "www-authenticate" for n, _ in headers):
                    headers.append(("WWW-Authenticate", 'Basic realm="ocpp", charset="UTF-8"'))
                await _send_best_effort(stream, _http_response(decision.status, decision.reason, headers))
                ok = True
                with (
                    trio.move_on_after(math.inf if close_timeout is None else close_timeout),
                    contextlib.suppress(TransportError, trio.BrokenResourceError),
                ):
                    await stream.aclose()
                return None
            ws = await _accept(
                stream, conn, request, decision, compression, max_message_size, close_timeout, raw
            )
            ws._wire_received = received
            ws._send_timeout = math.inf if send_timeout is None else send_timeout
            ok = True
            return ws
        raise UpgradeFailed(
            "upgrade_timeout", f"no complete WebSocket upgrade request within {open_timeout} s"
        )
    finally:
        if not ok:
            await trio.aclose_forcefully(stream)


async def _send_best_effort(stream: trio.abc.Stream, data: bytes) -> None:
    with contextlib.suppress(TransportError, trio.BrokenResourceError, trio.ClosedResourceError):
        await stream.send_all(data)


def _upgrade_request(event: Request) -> UpgradeRequest:
    headers: dict[str, str] = {}
    for raw_name, raw_value in event.extra_headers:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return UpgradeRequest(
        path=event.target,
        host=event.host,
        subprotocols=tuple(event.subprotocols),
        headers=headers,
    )


async def _accept(
    stream: trio.abc.Stream,
    conn: WSConnection,
    request: UpgradeRequest,
    decision: Accept,
    compression: bool,
    max_message_size: int,
    close_timeout: float | None,
    raw: bytearray,
) -> WebSocket:
    if decision.subprotocol is not None and decision.subprotocol not in request.subprotocols:
        raise ValueError(
            f"Accept(subprotocol={decision.subprotocol!r}): the client offered {request.subprotocols}"
        )
    extension = BoundedDeflate(max_message_size) if compression else None
    try:
        data = conn.send(
            AcceptConnection(
                subprotocol=decision.subprotocol,
                extensions=[extension] if extension is not None else [],
                extra_headers=[(n.encode("ascii"), v.encode("latin-1")) for n, v in decision.extra_headers],
            )
        )
    except _ERRORS as exc:
        await _send_best_effort(stream, _http_response(400, "bad WebSocket upgrade request"))
        raise WebSocketError(f"cannot accept the WebSocket upgrade: {exc}") from exc
    await _send(stream, data)
    connection = conn.connection
    assert connection is not None
    return WebSocket(
        stream,
        connection,
        subprotocol=decision.subprotocol,
        path=request.path,
        request=request,
        compressed=extension is not None and extension.enabled(),
        max_message_size=max_message_size,
        close_timeout=close_timeout,
        wire_bytes_sent=len(data),
        wire_bytes_received=0,
        deflate=extension,
        early_data=_early_data(raw),
    )
