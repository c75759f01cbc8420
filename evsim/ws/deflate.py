"""permessage-deflate (RFC 7692) with bounded memory and bounded inflation, on top of wsproto's.

wsproto's :class:`~wsproto.extensions.PerMessageDeflate` is correct but sized for browsers: a 15-bit
window and zlib's default memLevel cost ≈262 KiB per compressor and ≈39 KiB per decompressor, and it
inflates whatever arrives without a limit (a 64 KiB frame can inflate to 64 MiB). evsim holds a CSMS
and thousands of stations in one process, so this subclass

* compresses with a window of at most :data:`WINDOW_BITS` and memLevel :data:`MEM_LEVEL`. Measured on
  a mix of OCPP MeterValues/CALLRESULT frames (CPython 3.11, zlib 1.2/1.3): 15 bits/memLevel 8 →
  ratio 0.078, 262 KiB; 11 bits/memLevel 4 → ratio 0.084, 22 KiB (decompressor 9 KiB); 9 bits
  collapses to 0.55 because a 284-byte frame no longer finds the previous one. memLevel only sizes
  zlib's hash table and pending buffer (2^(memLevel+9) bytes together): on a Heartbeat / CALLRESULT /
  MeterValues mix, 11 bits with memLevel 1 and 4 both give ratio 0.172 (memLevel 1: ≈15 KiB per
  compressor instead of 22, +0.3 µs per message), so memLevel 1 it is.
* asks the peer for the same window (the offer and the answer say ``*_max_window_bits=11``) and
  inflates with 15 bits whenever the peer did not agree to a smaller window (RFC 7692 §7.1.2).
* inflates at most ``max_message_size + 1`` bytes per received chunk; more means the message is too
  big (close 1009) and nothing larger is ever allocated.
* leaves messages shorter than :data:`COMPRESS_MIN_SIZE` uncompressed when it sends them (RFC 7692 §6: RSV1 is
  the sender's choice per message; such a message is in neither end's LZ77 window), and inflates what arrives
  either way. A link that only carries Heartbeats then never re-creates the zlib state released while idle.
* lets control frames pass between the fragments of a compressed message (RFC 6455 §5.4) without
  touching the message's inflate state, which wsproto's hooks reset at every frame.
* gives its zlib state back on an idle link (:meth:`BoundedDeflate.release`, called by the WebSocket's owner
  when the link went quiet): ≈15 KiB per compressor and ≈9 KiB per decompressor, 48 KiB per station with both
  ends in one process. With context takeover the peer's next message may refer to the last window of what
  came before, so the extension keeps that window's worth of plaintext per direction (:class:`_Tail`, at most
  2 KiB with our window) and primes the next compressor or decompressor with it as a preset dictionary
  (``zdict``: raw deflate allows one, and it is exactly the history both ends share). Re-creating them costs
  ≈6 µs, once per message after an idle period. Messages that went through wsproto's frame-by-frame path
  (fragments) leave no such history: that direction then keeps its state.

It reaches into wsproto's private ``_compressor`` / ``_decompressor`` / ``_inbound_*`` attributes;
wsproto is pinned ``<2`` in setup.cfg and the tests exercise every path.

:meth:`BoundedDeflate.compress_message` / :meth:`BoundedDeflate.inflate_message` do the same work for a whole
unfragmented message in one call, on the same compressor and decompressor (so the LZ77 window carries over
whichever path handled the previous message): :mod:`evsim.ws.frames` frames and parses unfragmented
data frames itself and leaves wsproto the rest.
"""

from __future__ import annotations

import zlib

from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason, FrameDecoder, FrameProtocol, Opcode, RsvBits

__all__ = ["COMPRESS_MIN_SIZE", "MEM_LEVEL", "WINDOW_BITS", "BoundedDeflate"]

WINDOW_BITS = 11
"""Our compression window (2 KiB): see the module docstring for the measurement."""

MEM_LEVEL = 1
"""zlib memLevel for our compressors (default 8): ≈15 KiB instead of 262 KiB per compressor (see above)."""

COMPRESS_MIN_SIZE = 128
"""Messages shorter than this many bytes are sent uncompressed (RSV1 clear; RFC 7692 §6 lets a sender choose per
message). With context takeover a repeated OCPP message deflates to 14-18 bytes whatever its size, but deflating and
inflating it costs both ends 5-8 µs more than a raw frame (frame codec, sans-IO, 2026-12-07: a Heartbeat 9.9 against
4.6 µs, its CALLRESULT 10.8 against 4.8, a BootNotification CALLRESULT of 107 bytes 16.1 against 8.4, a
StatusNotification of 148 bytes 9.5 against 5.1). Below 128 bytes - Heartbeats and their answers, the ``{}`` and
``{"status": ...}`` CALLRESULTs - that buys at most ≈110 bytes per message, next to the 22 bytes of TLS 1.3 record
and ≈52 of TCP/IP headers every message pays anyway; the larger messages (StatusNotification, MeterValues,
TransactionEvent, BootNotification) stay compressed."""

_MAX_BITS = 15  # RFC 7692 §7.1.2: the largest LZ77 window a peer may use when it did not agree on less
_WINDOW_PARAMS = ("client_max_window_bits", "server_max_window_bits")
_TAIL = b"\x00\x00\xff\xff"  # the empty stored block a sync flush ends with, dropped by the sender


class _Tail:
    """The last ``limit`` bytes of one direction's plaintext, kept a message at a time: a list of messages,
    joined and cut back to ``limit`` bytes once it holds twice that (so a message costs an append)."""

    __slots__ = ("_chunks", "_limit", "_size")

    def __init__(self, limit: int) -> None:
        self._chunks: list[bytes] = []
        self._size = 0
        self._limit = limit

    def add(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        if self._size > 2 * self._limit:
            self.window()

    def window(self) -> bytes:
        """The last ``limit`` bytes (fewer at the start of the stream), kept as one object from now on."""
        chunks = self._chunks
        if len(chunks) == 1 and self._size <= self._limit:
            return chunks[0]
        joined = b"".join(chunks)[-self._limit :]
        self._chunks = [joined] if joined else []
        self._size = len(joined)
        return joined


class BoundedDeflate(PerMessageDeflate):
    """permessage-deflate with a small window and an inflation limit.

    Args:
        max_message_size: the WebSocket's message size limit; one received chunk may inflate to at
            most one byte more than this.
        compress_min_size: :mod:`evsim.ws.frames` sends shorter whole messages uncompressed
            (:data:`COMPRESS_MIN_SIZE`; 0 compresses every message). Received messages may be either.
    """

    def __init__(self, max_message_size: int, *, compress_min_size: int = COMPRESS_MIN_SIZE) -> None:
        super().__init__(client_max_window_bits=WINDOW_BITS, server_max_window_bits=WINDOW_BITS)
        self._inflate_limit = max_message_size + 1
        self.compress_min_size = compress_min_size
        # the history each direction's next (de)compressor is primed with after a release (made with the
        # first one); *_known goes False for good once wsproto's path handled a message of that direction
        # (its plaintext is not recorded), and that direction's state is then never released
        self._sent: _Tail | None = None
        self._received: _Tail | None = None
        self._sent_known = self._received_known = True

    # -- negotiation ----------------------------------------------------------------------------------

    def accept(self, offer: str) -> bool | str | None:
        """Server side: answer a client's offer, lowering window sizes to ours where the RFC allows.

        Raises:
            ValueError: a window-bits parameter is not an integer (the caller answers HTTP 400).
        """
        params = [p.strip() for p in offer.split(";")]
        offered: set[str] = set()
        rewritten = [params[0]]
        for param in params[1:]:
            name, eq, value = param.partition("=")
            name = name.strip()
            offered.add(name)
            if eq and name in _WINDOW_PARAMS:
                bits = int(value.strip().strip('"'))
                if bits > WINDOW_BITS:  # §7.1.2.1/§7.1.2.2: the answer may carry a smaller value
                    param = f"{name}={WINDOW_BITS}"
            rewritten.append(param)
        result = super().accept("; ".join(rewritten))
        if result is not None and "client_max_window_bits" not in offered:
            # §7.1.2.2: a client that did not offer the parameter may compress with any window.
            self.client_max_window_bits = _MAX_BITS
        return result

    def finalize(self, offer: str) -> None:
        """Client side: take the server's answer; inflate with 15 bits unless it named a smaller window."""
        self.server_max_window_bits = _MAX_BITS
        super().finalize(offer)

    def reset_inbound(self) -> None:
        """Forget every received frame (the state right after the handshake): nothing was inflated yet."""
        self._decompressor = None
        self._inbound_compressed = None
        self._inbound_is_compressible = None
        self._received = None
        self._received_known = True

    def release(self) -> int:
        """Free the compressor and decompressor between messages (the link is idle); the next message makes
        new ones, primed with the history the peer shares (see the module docstring).

        Returns:
            How many zlib objects were freed (0..2).
        """
        freed = 0
        if self._compressor is not None and self._sent_known:
            self._compressor = None
            freed += 1
        if self._decompressor is not None and self._received_known:
            self._decompressor = None
            freed += 1
        for tail in (self._sent, self._received):
            if tail is not None:
                tail.window()
        return freed

    # -- data -----------------------------------------------------------------------------------------

    def frame_outbound(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        data: bytes,
        fin: bool,
    ) -> tuple[RsvBits, bytes]:
        """Create the compressor with our window and memLevel, then let wsproto compress."""
        if self._compressor is None and opcode in (Opcode.TEXT, Opcode.BINARY):
            self._compressor = self._new_compressor(proto.client)
        if not opcode.iscontrol():
            self._sent_known = False  # this message's plaintext is not recorded
        return super().frame_outbound(proto, opcode, rsv, data, fin)

    def _new_compressor(self, client: bool) -> zlib._Compress:
        bits = min(self.client_max_window_bits if client else self.server_max_window_bits, WINDOW_BITS)
        tail = self._sent
        if tail is None:
            self._sent = _Tail(1 << bits)
        else:
            history = tail.window()
            if history and self._sent_known:
                return zlib.compressobj(
                    zlib.Z_DEFAULT_COMPRESSION,
                    zlib.DEFLATED,
                    -bits,
                    MEM_LEVEL,
                    zlib.Z_DEFAULT_STRATEGY,
                    history,
                )
        return zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -bits, MEM_LEVEL)

    def _new_decompressor(self, bits: int) -> zlib._Decompress:
        tail = self._received
        if tail is None:
            self._received = _Tail(1 << bits)
        else:
            history = tail.window()
            if history:
                return zlib.decompressobj(-bits, history)
        return zlib.decompressobj(-bits)

    def compress_message(self, data: bytes, client: bool) -> bytes:
        """The payload of one whole compressed message (RSV1 set), as :meth:`frame_outbound` makes it."""
        compressor = self._compressor
        if compressor is None:
            compressor = self._compressor = self._new_compressor(client)
        out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
        if self.client_no_context_takeover if client else self.server_no_context_takeover:
            self._compressor = None
        else:
            tail = self._sent
            assert tail is not None  # made with the first compressor
            tail.add(data)
        return out[:-4]  # RFC 7692 §7.2.1: drop the 00 00 ff ff tail

    def inflate_message(self, data: bytes, client: bool) -> bytes | CloseReason:
        """Inflate one whole compressed message (one FIN frame with RSV1) within the size limit.

        Returns:
            The message bytes, or the close reason: invalid data, or more than ``max_message_size + 1``
            bytes (what the frame-by-frame path returns for the same input).
        """
        decompressor = self._decompressor
        if decompressor is None:
            bits = self.server_max_window_bits if client else self.client_max_window_bits
            decompressor = self._decompressor = self._new_decompressor(int(bits))
        try:
            # One call with the 00 00 ff ff tail appended (RFC 7692 §7.2.2) instead of three (data, tail,
            # flush): the tail inflates to nothing, and unless the limit stopped zlib all output is out. When
            # the limit stopped it, input is left over (at least the tail): too big, as before.
            out = decompressor.decompress(data + _TAIL, self._inflate_limit)
            if decompressor.unconsumed_tail:
                return CloseReason.MESSAGE_TOO_BIG
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        if self.server_no_context_takeover if client else self.client_no_context_takeover:
            self._decompressor = None
        else:
            tail = self._received
            assert tail is not None  # made with the first decompressor
            tail.add(out)
        return out

    def frame_inbound_header(
        self, proto: FrameDecoder | FrameProtocol, opcode: Opcode, rsv: RsvBits, payload_length: int
    ) -> CloseReason | RsvBits:
        """Leave the message's compression state alone for a control frame.

        RFC 6455 §5.4 lets control frames arrive between the fragments of a message, and RFC 7692 §6 inflates
        the joined payloads of the message. wsproto 1.x keeps "this message is compressed" in the extension and
        lets any frame set it (a ping between fragments records "uncompressed") and clear it at the frame's end,
        so on its own it takes the continuation after a ping as uncompressed (garbage: 1007). Control frames are
        never compressed: here and in :meth:`frame_inbound_complete` they only mark the current frame as not
        compressible.
        """
        if opcode.iscontrol():
            if rsv.rsv1:
                return CloseReason.PROTOCOL_ERROR
            self._inbound_is_compressible = False
            return RsvBits(True, False, False)
        if rsv.rsv1 and self._decompressor is None:  # primed with the history, unlike wsproto's own
            bits = self.server_max_window_bits if proto.client else self.client_max_window_bits
            self._decompressor = self._new_decompressor(int(bits))
        self._received_known = False  # wsproto inflates this message: its plaintext is not recorded
        return super().frame_inbound_header(proto, opcode, rsv, payload_length)

    def frame_inbound_complete(
        self, proto: FrameDecoder | FrameProtocol, fin: bool
    ) -> bytes | CloseReason | None:
        """End of a frame: a control frame ends no message (see :meth:`frame_inbound_header`)."""
        if not self._inbound_is_compressible:
            return None
        return super().frame_inbound_complete(proto, fin)

    def frame_inbound_payload_data(
        self, proto: FrameDecoder | FrameProtocol, data: bytes
    ) -> bytes | CloseReason:
        """Inflate one received chunk, refusing to produce more than the message size limit."""
        if not self._inbound_compressed or not self._inbound_is_compressible:
            return data
        decompressor = self._decompressor
        assert decompressor is not None
        try:
            out = decompressor.decompress(bytes(data), self._inflate_limit)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        if decompressor.unconsumed_tail:
            return CloseReason.MESSAGE_TOO_BIG
        return out
