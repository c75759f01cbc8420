"""WebSocket frame codec (RFC 6455 §5.2, RFC 7692 §6): the common frame here, every other one in wsproto.

Theory of operation
-------------------
A frame on the wire (RFC 6455 §5.2)::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-------+-+-------------+-------------------------------+
    |F|R|R|R| opcode|M| payload len |    extended payload length    |
    |I|S|S|S|  (4)  |A|     (7)     |   (16 bits if len is 126,     |
    |N|V|V|V|       |S|             |    64 bits if len is 127)     |
    | |1|2|3|       |K|             |                               |
    +-+-+-+-+-------+-+-------------+-------------------------------+
    |  masking key (32 bits, present if MASK is set)                |
    +---------------------------------------------------------------+
    |  payload (len bytes, XORed with the repeated key if masked)   |
    +---------------------------------------------------------------+

A length of 0..125 fits the 7 bits; 126..65535 takes the 16-bit form and more the 64-bit form, whose top
bit must be clear. The shortest form is mandatory. Frames from a client are masked, frames from a server
are not. RSV1 marks the first frame of a message compressed with permessage-deflate (RFC 7692 §6); RSV2
and RSV3 are unused. Opcodes: 0 continuation, 1 text, 2 binary, 8 close, 9 ping, 10 pong; control frames
(8..10) carry at most 125 bytes and are never fragmented.

wsproto parses every kind of frame, but its generic machinery (a buffer with commit/rollback, a header
tuple, a masker object, extension hooks, per-frame events) costs ≈25 µs per small message, measured in
both directions. Nearly every frame of an OCPP session is a whole text message in one frame, so this
module handles that one case and hands everything else to wsproto unchanged:

* **Building** (:func:`encode_data_frame`): one unfragmented text or binary frame, compressed with
  :meth:`BoundedDeflate.compress_message` when permessage-deflate is in use and the message has at least
  :attr:`BoundedDeflate.compress_min_size` bytes (a shorter one goes out with RSV1 clear, RFC 7692 §6), and
  masked with a fresh key on the client side. Control frames and close frames are still built by wsproto.
* **Parsing** (:class:`FrameReader`) walks received bytes from a frame boundary. A frame is parsed here
  when it is complete and it is a FIN text or binary frame, outside a fragmented message, with the mask
  this side expects, RSV bits 0 (or RSV1 with permessage-deflate), the shortest length form and at most
  ``max_message_size`` payload bytes: it is unmasked, inflated with
  :meth:`BoundedDeflate.inflate_message`, checked against the size limit, decoded as UTF-8 (text) and
  delivered as one message.
* **Every other frame** - control frames, fragments, anything malformed or too big - goes to wsproto
  whole, in order, as its bytes arrive (the reader counts how many bytes of the current frame wsproto is
  still owed), so wsproto answers pings and closes and fails the connection with its own codes and
  reasons. Both paths share one :class:`~evsim.ws.deflate.BoundedDeflate`: wsproto uses it as its
  extension, this module calls its whole-message methods, so the LZ77 window carries over whichever path
  handled the previous message.

Limits checked here, before wsproto sees a header: wsproto checks the order of fragments only when payload
arrives and has no size limit, so a header that announces 2**63-1 bytes, or a continuation without a
message, would make it wait for bytes that never come. The reader refuses (before any payload) a frame that
starts a message inside a fragmented one or continues none (1002), and a message whose frames announce more
than ``max_message_size`` bytes (1009); a compressed message may announce up to
:data:`DEFLATE_WIRE_FACTOR` times that + 1 KiB, and what it inflates to is bounded as it is inflated
(:mod:`evsim.ws.deflate`).

The reader is sans-IO: the connection feeds it received bytes and gets back the bytes to send (pongs and
close frames made by wsproto, or the close frame of a refusal). Three callables given at construction
connect it to the connection: ``deliver`` takes a message parsed here, ``refuse`` fails the connection and
returns its close frame, ``to_wsproto`` feeds wsproto and handles its events. Parsing stops for good once
the connection ended (a refusal, or ``to_wsproto`` reports the end).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable

from wsproto.frame_protocol import CloseReason

from evsim.ws.deflate import BoundedDeflate

__all__ = [
    "DEFLATE_WIRE_FACTOR",
    "OP_BINARY",
    "OP_CONTINUATION",
    "OP_TEXT",
    "FrameReader",
    "encode_data_frame",
]

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
_HEADER_16 = struct.Struct("!BBH")
_HEADER_64 = struct.Struct("!BBQ")
DEFLATE_WIRE_FACTOR = 4
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


def encode_data_frame(payload: bytes, opcode: int, *, client: bool, deflate: BoundedDeflate | None) -> bytes:
    """One unfragmented data frame (RFC 6455 §5.2), compressed (RFC 7692) and masked as negotiated.

    What wsproto's ``send`` makes for a whole message, without its generic per-frame machinery; ``deflate``
    is the extension wsproto uses (None: no permessage-deflate), so the compressor state is shared.

    Args:
        payload: the message (UTF-8 for text).
        opcode: :data:`OP_TEXT` or :data:`OP_BINARY`.
        client: this side is the client: the frame is masked.
        deflate: the negotiated permessage-deflate extension, or None.
    """
    first = 0x80 | opcode
    if deflate is not None and len(payload) >= deflate.compress_min_size:
        payload = deflate.compress_message(payload, client)
        first |= 0x40
    n = len(payload)
    if client:
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


class FrameReader:
    """Parses received frames from a frame boundary: whole data frames here, every other frame via wsproto.

    Args:
        client: this side is the client (it expects unmasked frames).
        max_message_size: largest message in bytes (after inflation, UTF-8 for text).
        deflate: the negotiated permessage-deflate extension (the one wsproto uses), or None.
        deliver: takes a message parsed here and its size in bytes (``str`` for text, ``bytes`` for binary).
        refuse: fails the connection with a close code and reason; returns the close frame to send.
        to_wsproto: feeds bytes to wsproto and handles its events; returns the bytes to send (or None) and
            whether the connection ended.
        early_data: bytes received behind the opening handshake, starting at a frame boundary.
    """

    __slots__ = (
        "_buf",
        "_client",
        "_deflate",
        "_deliver",
        "_max",
        "_refuse",
        "_slow_left",
        "_slow_message",
        "_slow_wire",
        "_slow_wire_limit",
        "_to_wsproto",
    )

    def __init__(
        self,
        *,
        client: bool,
        max_message_size: int,
        deflate: BoundedDeflate | None,
        deliver: Callable[[str | bytes, int], None],
        refuse: Callable[[int, str], bytes],
        to_wsproto: Callable[[bytes], tuple[bytearray | None, bool]],
        early_data: bytes = b"",
    ) -> None:
        self._client = client
        self._max = max_message_size
        self._deflate = deflate
        self._deliver = deliver
        self._refuse = refuse
        self._to_wsproto = to_wsproto
        self._buf = bytearray(early_data)  # received bytes not yet parsed (a partial frame)
        self._slow_left = 0  # bytes of the current frame still owed to wsproto
        self._slow_message = False  # wsproto is in the middle of a fragmented message
        self._slow_wire = 0  # payload bytes announced by the frames of that message so far
        self._slow_wire_limit = max_message_size  # larger for a compressed message (see _check_data_header)

    def receive(self, data: bytes | bytearray) -> bytearray | None:
        """Parse received bytes (with what an earlier call left of a partial frame).

        Returns:
            Bytes to send (pongs, close frames), if any.
        """
        buf: bytes | bytearray = self._buf
        if buf:
            buf += data  # a bytearray here
        else:
            buf = data  # usually one or more whole frames: parse them in place
        out: bytearray | None = None
        pos = 0
        end = len(buf)
        limit = self._max
        server = not self._client
        deflate = self._deflate
        while pos < end:
            if self._slow_left:
                n = min(self._slow_left, end - pos)
                more, ended = self._to_wsproto(bytes(buf[pos : pos + n]))
                pos += n
                self._slow_left -= n
                if more:
                    out = (out or bytearray()) + more
                if ended:
                    pos = end  # the connection ended: the rest is not parsed
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
                and opcode in (OP_TEXT, OP_BINARY)
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
            if opcode <= OP_BINARY:
                if (
                    bool(masked) == server
                    and minimal
                    and (rsv == 0 or (rsv == 0x40 and deflate is not None and opcode != OP_CONTINUATION))
                ):  # else wsproto fails the connection at the header
                    failure = self._check_data_header(opcode, rsv, length)
                    if failure is not None:
                        out = (out or bytearray()) + failure
                        pos = end
                        break
                self._slow_message = not b0 & 0x80
            self._slow_left = head + length
        if pos >= end:
            if self._buf:
                self._buf = bytearray()
        else:
            self._buf = bytearray(buf[pos:])
        return out

    def _check_data_header(self, opcode: int, rsv: int, length: int) -> bytes | None:
        """Check a data frame wsproto is about to get, from its header alone; on failure, the close frame.

        Refuses a frame that starts a message inside a fragmented one or continues none (1002), and a
        message whose frames announce more than the size limit (1009); see the module docstring. A
        compressed message may take more room on the wire than inflated (stored blocks, a flush per
        fragment) but never several times as much.
        """
        if opcode == OP_CONTINUATION:
            if not self._slow_message:
                return self._refuse(int(CloseReason.PROTOCOL_ERROR), "continuation frame without a message")
        else:
            if self._slow_message:
                return self._refuse(
                    int(CloseReason.PROTOCOL_ERROR), "new message inside a fragmented message"
                )
            self._slow_wire = 0
            self._slow_wire_limit = self._max
            if rsv:
                self._slow_wire_limit = DEFLATE_WIRE_FACTOR * self._max + 1024
        self._slow_wire += length
        if self._slow_wire > self._slow_wire_limit:
            return self._refuse(1009, "message too big")
        return None

    def _take_frame(self, payload: bytes, opcode: int, rsv: int) -> bytes | None:
        """Deliver one whole message parsed by :meth:`receive`; on failure, the close frame to send."""
        if rsv:
            assert self._deflate is not None
            inflated = self._deflate.inflate_message(payload, self._client)
            if isinstance(inflated, CloseReason):
                if inflated is CloseReason.MESSAGE_TOO_BIG:
                    return self._refuse(1009, "message too big")
                return self._refuse(int(inflated), "error in extension")
            payload = inflated
        size = len(payload)
        if size > self._max:
            return self._refuse(1009, "message too big")
        if opcode == OP_TEXT:
            try:
                message: str | bytes = payload.decode("utf-8")
            except UnicodeDecodeError as exc:
                return self._refuse(int(CloseReason.INVALID_FRAME_PAYLOAD_DATA), str(exc))
        else:
            message = payload
        self._deliver(message, size)
        return None
