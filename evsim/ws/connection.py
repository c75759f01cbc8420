"""An open WebSocket (RFC 6455, permessage-deflate RFC 7692) over any ``trio.abc.Stream``, on wsproto.

This module, :mod:`evsim.ws.handshake` (the opening handshake), :mod:`evsim.ws.frames` (the frame codec)
and :mod:`evsim.ws.deflate` are the only modules that import wsproto (h11: the handshake only); what
they raise is translated into :mod:`evsim.errors` where it is caught.

Theory of operation
-------------------
No task per connection. A :class:`WebSocket` is a wsproto ``Connection`` (sans-IO) plus the stream:

* **Reading** happens in whichever task calls :meth:`WebSocket.receive` (one at a time, like trio
  streams). It reads up to :data:`RECEIVE_SIZE` bytes and walks the frames: complete messages go to a
  small inbox (one read can carry several), fragments are joined, pings are answered, a close frame is
  answered and ends the connection.
* **Frames: the common case in our codec, the rest in wsproto.** An unfragmented text/binary frame -
  every OCPP message - is built (:func:`~evsim.ws.frames.encode_data_frame`) and, when it arrives whole
  with the expected mask, reserved bits, minimal length and size, parsed
  (:class:`~evsim.ws.frames.FrameReader`) by :mod:`evsim.ws.frames`; every other frame (control frames,
  fragments, anything malformed or too big) is handed to wsproto whole, in order, and its events are
  handled here (:meth:`WebSocket._handle_events`). Parsing starts at a frame boundary: both sides take
  the bytes behind the handshake themselves (:mod:`evsim.ws.handshake`); only a client whose handshake
  reads passed 64 KiB parses everything through wsproto. Consequence: **pings that arrive
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
  most one pong. :meth:`WebSocket.send_text_nowait` (the OCPP session's path) never blocks and is
  never a checkpoint: it frames the message and hands it to the stream's synchronous ``send_nowait``
  (:class:`~evsim.net.base.NowaitSend`: TLS, TCP), or leaves it in the out-buffer for
  :meth:`WebSocket.flush`.
* **A peer that does not read**: a reader that must send a pong itself waits for it to leave, so it stops
  reading (back-pressure). Such a write that makes no progress for ``send_timeout`` seconds drops the
  connection: :meth:`WebSocket.abort` closes the stream without a closing handshake (a close frame could not
  leave either) and every receive and send then raises :class:`~evsim.errors.PeerNotReading`. Callers that
  send (the Local Controller's relay) bound their own sends the same way and call :meth:`WebSocket.abort`.
* **Size limit**: a message larger than ``max_message_size`` bytes (UTF-8 for text) closes the
  connection with 1009; inflation is bounded too (:mod:`evsim.ws.deflate`). Sizes are checked as frames
  and fragments arrive: a frame header that announces too much is refused before its payload, so is a
  fragment out of order (:mod:`evsim.ws.frames`).
* **Closing** (:meth:`WebSocket.aclose`) sends a close frame, waits up to ``close_timeout`` for the
  peer's close frame (reading itself, or letting the active reader see it), then closes the stream.
  A close frame from the peer is answered at once and the stream closed. Receivers then get
  :class:`~evsim.errors.WebSocketClosed`; a transport that breaks or ends without a close frame gives
  :class:`~evsim.errors.BrokenTransport` instead.
* **Cancellation**: a send cancelled mid-way leaves the stream in an unknown state (trio's rule for
  streams), so later sends raise ``BrokenTransport``. A sender parked behind another one that is
  cancelled still has its frame sent.

The opening handshake (:func:`~evsim.ws.handshake.ws_client`, :func:`~evsim.ws.handshake.ws_server`)
makes the :class:`WebSocket`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import attrs
import trio
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

from evsim.errors import (
    BrokenTransport,
    ClosedTransport,
    PeerNotReading,
    TransportError,
    WebSocketClosed,
)
from evsim.net.base import IdleState, NowaitSend
from evsim.runtime import conforms
from evsim.ws.deflate import BoundedDeflate
from evsim.ws.frames import OP_BINARY, OP_TEXT, FrameReader, encode_data_frame

if TYPE_CHECKING:
    from evsim.ws.handshake import UpgradeRequest

__all__ = [
    "DEFAULT_CLOSE_TIMEOUT",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_SEND_TIMEOUT",
    "RECEIVE_SIZE",
    "WebSocket",
    "WsStatistics",
]

RECEIVE_SIZE = 65536
"""Bytes asked of the stream per read: one read holds a 64 KiB OCPP message or many small ones."""

DEFAULT_MAX_MESSAGE_SIZE = 65536
"""Default message size limit in bytes; OCPP has none, 64 KiB covers every schema-valid message we send."""

DEFAULT_CLOSE_TIMEOUT = 10.0
"""Seconds to wait for the peer's close frame (the ``websockets`` library's default close_timeout)."""

DEFAULT_SEND_TIMEOUT = 60.0
"""Seconds a send may make no progress (the peer reads nothing) before the connection is dropped."""

# RFC 6455 §7.4: codes an endpoint may send (1004-1006 and 1015 are reserved, 1000-2999 are the RFC's).
_SENDABLE_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})


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


class WebSocket(trio.abc.AsyncResource):
    """An open WebSocket; made by :func:`~evsim.ws.handshake.ws_client` or
    :func:`~evsim.ws.handshake.ws_server`, never directly.

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
        "_reader",
        "_receiving",
        "_send_broken",
        "_send_timeout",
        "_sending",
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
        # wsproto's connection (≈2 KiB) only when it holds bytes from the handshake; else made on first use
        # (rare frames, closing): until then its state is OPEN, as a fresh one's (see _wsproto)
        self._conn: Connection | None = conn if trailing_data else None
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
        # Frames we parse ourselves (evsim.ws.frames); only from a frame boundary, so not when wsproto got
        # bytes after the handshake (it may hold part of a frame).
        self._reader: FrameReader | None = None
        if not trailing_data:
            self._reader = FrameReader(
                client=self._client,
                max_message_size=max_message_size,
                deflate=self._deflate,
                deliver=self._deliver,
                refuse=self._fail,
                to_wsproto=self._to_wsproto,
                early_data=early_data,
            )
        # writing
        self._sending = False
        self._out = bytearray()
        self._pong = b""  # the newest pong waiting for the task that is sending (not in _queued yet)
        self._queued = 0  # bytes ever appended for sending (handshake excluded)
        self._flushed = 0  # bytes ever handed to send_all successfully
        self._write_lot: trio.lowlevel.ParkingLot | None = None  # made when a writer must wait
        self._send_broken: str | None = None
        # evsim streams (TlsStream, TcpStream) take bytes synchronously: see send_text_nowait
        self._push: Callable[[bytes], bool | None] | None = (
            cast(NowaitSend, stream).send_nowait if conforms(stream, NowaitSend) else None
        )
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

    def release_idle_state(self) -> int:
        """Give back what an idle connection need not hold: the permessage-deflate state
        (:meth:`~evsim.ws.deflate.BoundedDeflate.release`) and the stream's idle buffers when it has a
        ``release_idle_state`` too (:meth:`evsim.tls.stream.TlsStream.release_idle_state`). The next message
        rebuilds what it needs. Call it when the link went quiet (the OCPP session's idle watch does).

        Returns:
            How many objects were freed (0: nothing to release).
        """
        freed = 0
        if self._deflate is not None:
            freed += self._deflate.release()
        if conforms(self._stream, IdleState):
            freed += cast(IdleState, self._stream).release_idle_state()
        return freed

    async def send_text(self, text: str) -> None:
        """Send one text message.

        Raises:
            WebSocketClosed: the connection is closing or closed.
            BrokenTransport: the transport broke (now or earlier).
        """
        self._check_can_send()
        payload = text.encode("utf-8")
        data = encode_data_frame(payload, OP_TEXT, client=self._client, deflate=self._deflate)
        self._messages_sent += 1
        self._payload_sent += len(payload)
        await self._write(data, wait=True)

    def send_text_nowait(self, text: str, /) -> bool:
        """Send one text message without blocking or a checkpoint (the OCPP session's fast path:
        :class:`evsim.ocpp.session.NowaitTextTransport`).

        The frame is made at once (so it keeps its place among messages, as with :meth:`send_text`) and
        handed to the stream if that can take it synchronously; otherwise it waits in the out-buffer.
        Never a checkpoint, so a caller's cancellation cannot leave half a frame on the wire.

        Returns:
            True when the message reached the stream or a task already sending will send it; False when
            bytes wait here or in the stream: ``await flush()`` (or the next send) sends them.

        Raises:
            WebSocketClosed: the connection is closing or closed.
            BrokenTransport: the transport broke (now or earlier).
            ClosedTransport: the stream was closed.
        """
        self._check_can_send()
        payload = text.encode("utf-8")
        data = encode_data_frame(payload, OP_TEXT, client=self._client, deflate=self._deflate)
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

    async def flush(self) -> None:
        """Send what :meth:`send_text_nowait` left waiting (here and in the stream).

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
        frame = encode_data_frame(bytes(data), OP_BINARY, client=self._client, deflate=self._deflate)
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
        data = self._wsproto().send(Ping(payload=payload))
        self._pings_sent += 1
        await self._write(data, wait=True)

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
                self._wsproto().state is ConnectionState.OPEN
                and self._broken is None
                and self._send_broken is None
                and not self._transport_closed
            ):
                self._set_close(code, reason, "local")
                data = self._wsproto().send(CloseConnection(code=code, reason=reason))
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
            self._transport_closed or self._failed or self._wsproto().state is ConnectionState.CLOSED
        ):
            raise WebSocketClosed(self._close_code, self._close_reason)
        if self._transport_closed:
            raise ClosedTransport("the WebSocket's stream was closed")

    async def _pump(self) -> None:
        """Read once (or drain what the handshake left), handle the events, answer, maybe close."""
        if self._check_events:  # once per connection: frames that came with the handshake response
            self._check_events = False
            await trio.lowlevel.checkpoint()
            reader = self._reader
            out = reader.receive(b"") if reader is not None else self._handle_events()
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
            reader = self._reader
            if reader is not None:
                out = reader.receive(data)
            else:
                self._wsproto().receive_data(bytes(data))
                out = self._handle_events()
        conn = self._conn  # (made meanwhile if the frames needed it)
        ending = self._failed or (conn is not None and conn.state is ConnectionState.CLOSED)
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
        conn = self._wsproto()
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

    def _to_wsproto(self, data: bytes) -> tuple[bytearray | None, bool]:
        """Feed wsproto the bytes the frame reader leaves it.

        Returns:
            The bytes to send (or None) and whether the connection ended.
        """
        conn = self._wsproto()
        conn.receive_data(data)
        out = self._handle_events()
        return out, self._failed or conn.state is ConnectionState.CLOSED

    def _deliver(self, message: str | bytes, size: int) -> None:
        """Queue one whole message parsed by the frame reader (``size``: its bytes, UTF-8 for text)."""
        self._inbox.append(message)
        self._messages_received += 1
        self._payload_received += size

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
        conn = self._wsproto()
        if conn.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            return conn.send(CloseConnection(code=code, reason=reason))
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
                self._wsproto().state is ConnectionState.LOCAL_CLOSING
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
        conn = self._conn
        if self._transport_closed or (conn is not None and conn.state is not ConnectionState.OPEN):
            raise WebSocketClosed(1006, "connection closed")

    def _wsproto(self) -> Connection:
        """wsproto's connection, made now if there was none yet: a fresh one for the negotiated extensions
        is what the handshake's is when it holds no bytes (its frame parser at a frame boundary)."""
        conn = self._conn
        if conn is None:
            kind = ConnectionType.CLIENT if self._client else ConnectionType.SERVER
            conn = self._conn = Connection(kind, [self._deflate] if self._deflate is not None else [])
        return conn

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
        if self._out:  # left by send_text_nowait: it goes first
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
