"""The frame codec (evsim.ws.frames) against wsproto's own frame parser, on random frames.

:class:`~evsim.ws.frames.FrameReader` parses whole unfragmented data frames itself and hands every other
frame to wsproto; a :class:`~evsim.ws.connection.WebSocket` feeds it everything it reads. Both readings of
the same bytes must agree: our reader with wsproto behind it (as the WebSocket wires them) and wsproto's
``FrameProtocol`` alone yield the same (opcode, payload, fin) sequence of complete frames, or both refuse
the input. Both sides use a :class:`~evsim.ws.deflate.BoundedDeflate` (the extension a WebSocket gives
wsproto) with the same negotiated parameters.

Frames are drawn valid - text, binary, pings and pongs, masked (we are the server) or not, fragmented,
compressed or not, every length encoding (7-bit, 16-bit, 64-bit) - then at most one corruption is applied,
and the bytes arrive in random chunks.
"""

from __future__ import annotations

import random
import zlib
from typing import Any

import attrs
from hypothesis import given
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameProtocol, Opcode, ParseFailed

from evsim.ws.deflate import COMPRESS_MIN_SIZE, WINDOW_BITS, BoundedDeflate
from evsim.ws.frames import OP_TEXT, FrameReader, encode_data_frame

LIMIT = 1 << 20  # larger than any message drawn: the size limit is not what is compared here

Seen = tuple[int, Any, bool]  # (opcode, payload: str | bytes | (code, reason), message finished)


@attrs.frozen
class WireFrame:
    """One frame before serialisation; ``form`` forces a length encoding (7, 16 or 64 bits)."""

    fin: bool
    opcode: int
    payload: bytes
    masked: bool
    rsv: int = 0
    form: int | None = None
    length: int | None = None  # announced length if not len(payload) (the payload is then left out)

    def encode(self, key: bytes) -> bytes:
        n = len(self.payload) if self.length is None else self.length
        form = self.form or (7 if n < 126 else 16 if n < 65536 else 64)
        first = (0x80 if self.fin else 0) | self.rsv | self.opcode
        bit = 0x80 if self.masked else 0
        if form == 7:
            head = bytes((first, bit | n))
        elif form == 16:
            head = bytes((first, bit | 126)) + n.to_bytes(2, "big")
        else:
            head = bytes((first, bit | 127)) + n.to_bytes(8, "big")
        payload = self.payload if self.length is None else b""
        if not self.masked:
            return head + payload
        n = len(payload)
        repeated = (key * (n // 4 + 1))[:n]
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")
        return head + key + masked


# -- drawing frames ---------------------------------------------------------------------------------------

# payload sizes for every length encoding, with the boundaries 125/126 and 65535/65536
_sizes = st.one_of(
    st.integers(0, 125),
    st.sampled_from([125, 126, 127, 65535, 65536, 65537]),
    st.integers(126, 2000),
    st.integers(65536, 67000),
)


@st.composite
def _message(draw: st.DrawFn, *, compression: bool, compressor: Any, masked: bool) -> list[WireFrame]:
    """The frames of one data message (maybe fragmented and compressed), with control frames between."""
    text = draw(st.booleans())
    size = draw(_sizes)
    if text:
        piece = draw(st.text(min_size=1, max_size=20)).encode("utf-8")
        data = (piece * (size // len(piece) + 1))[:size]
        data = data.decode("utf-8", "ignore").encode("utf-8")  # cut at a character boundary
        data += b"a" * (size - len(data))
    else:
        data = random.Random(draw(st.integers(0, 2**32))).randbytes(size)
    compressed = compression and draw(st.booleans())
    if compressed:
        wire = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
        wire = wire[:-4]  # RFC 7692 §7.2.1: the 00 00 ff ff tail is left out
    else:
        wire = data
    cuts = sorted(draw(st.lists(st.integers(0, len(wire)), max_size=3)))
    parts = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
    frames: list[WireFrame] = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        frames.append(
            WireFrame(
                fin=last,
                opcode=(0x1 if text else 0x2) if i == 0 else 0x0,
                payload=part,
                masked=masked,
                rsv=0x40 if compressed and i == 0 else 0,
            )
        )
        if not last:
            frames += draw(st.lists(_control(masked), max_size=2))
    return frames


def _control(masked: bool) -> st.SearchStrategy[WireFrame]:
    return st.builds(
        WireFrame,
        fin=st.just(True),
        opcode=st.sampled_from([0x9, 0xA]),
        payload=st.binary(max_size=125),
        masked=st.just(masked),
    )


def _corrupt(frames: list[WireFrame], index: int, how: str, masked: bool) -> list[WireFrame]:
    """``frames`` with one violation of RFC 6455 (or RFC 7692) at or before frame ``index``."""
    f = frames[index]
    n = len(f.payload)
    replace = attrs.evolve
    if how == "non-minimal length":
        return [*frames[:index], replace(f, form=16 if n < 126 else 64), *frames[index + 1 :]]
    if how == "wrong mask":
        return [*frames[:index], replace(f, masked=not f.masked), *frames[index + 1 :]]
    if how == "rsv2":
        return [*frames[:index], replace(f, rsv=f.rsv | 0x20), *frames[index + 1 :]]
    if how == "rsv1 on a control frame":
        ping = WireFrame(fin=True, opcode=0x9, payload=b"x", masked=masked, rsv=0x40)
        return [*frames[:index], ping, *frames[index:]]
    if how == "reserved opcode":
        bad = WireFrame(fin=True, opcode=0x3, payload=f.payload[:50], masked=masked)
        return [*frames[:index], bad, *frames[index:]]
    if how == "fragmented ping":
        return [
            *frames[:index],
            WireFrame(fin=False, opcode=0x9, payload=b"p", masked=masked),
            *frames[index:],
        ]
    if how == "long ping":
        return [
            *frames[:index],
            WireFrame(fin=True, opcode=0x9, payload=b"p" * 126, masked=masked),
            *frames[index:],
        ]
    if how == "continuation without a message":
        stray = WireFrame(fin=True, opcode=0x0, payload=b"stray", masked=masked)
        starts = [i for i, g in enumerate(frames) if g.opcode in (0x1, 0x2)] + [len(frames)]
        return [*frames[: starts[0]], stray, *frames[starts[0] :]]
    if how == "message inside a message":
        text = WireFrame(fin=True, opcode=0x1, payload=b"inner", masked=masked)
        return [*frames[:index], WireFrame(fin=False, opcode=0x2, payload=b"a", masked=masked), text]
    if how == "invalid UTF-8":
        return [*frames[:index], WireFrame(fin=True, opcode=0x1, payload=b"ok\xff", masked=masked)]
    if how == "length with the top bit set":
        huge = WireFrame(fin=True, opcode=0x2, payload=b"", masked=masked, form=64, length=1 << 63)
        return [*frames[:index], huge]
    if how == "close":  # not a violation: the end of the frames either way
        reason = b"\x03\xe8bye"
        return [
            *frames[:index],
            WireFrame(fin=True, opcode=0x8, payload=reason, masked=masked),
            *frames[index:],
        ]
    raise AssertionError(how)


CORRUPTIONS = [
    "non-minimal length",
    "wrong mask",
    "rsv2",
    "rsv1 on a control frame",
    "reserved opcode",
    "fragmented ping",
    "long ping",
    "continuation without a message",
    "message inside a message",
    "invalid UTF-8",
    "length with the top bit set",
    "close",
]


@attrs.frozen
class Case:
    side: str  # the side that receives: "server" (frames masked) or "client"
    compression: bool
    frames: tuple[WireFrame, ...]
    corruption: str | None
    data: bytes
    chunks: tuple[int, ...]  # cut points in ``data``


@st.composite
def cases(draw: st.DrawFn) -> Case:
    side = draw(st.sampled_from(["server", "client"]))
    compression = draw(st.booleans())
    masked = side == "server"
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -WINDOW_BITS)
    frames: list[WireFrame] = []
    for _ in range(draw(st.integers(0, 4))):
        frames += draw(_message(compression=compression, compressor=compressor, masked=masked))
    corruption = draw(st.sampled_from([None, None, *CORRUPTIONS]))
    if corruption is not None:
        if not frames:
            frames = draw(_message(compression=compression, compressor=compressor, masked=masked))
        frames = _corrupt(frames, draw(st.integers(0, len(frames) - 1)), corruption, masked)
    key = draw(st.binary(min_size=4, max_size=4))
    data = b"".join(f.encode(key) for f in frames)
    cuts = sorted(set(draw(st.lists(st.integers(0, len(data)), max_size=6))))
    return Case(side, compression, tuple(frames), corruption, data, tuple(cuts))


# -- the two readers --------------------------------------------------------------------------------------


def _extension(side: str) -> BoundedDeflate:
    """permessage-deflate as negotiated by ``side`` (both window sizes 11 bits)."""
    extension = BoundedDeflate(LIMIT)
    if side == "server":
        extension.accept(f"permessage-deflate; client_max_window_bits={WINDOW_BITS}")
    else:
        extension.finalize(f"permessage-deflate; server_max_window_bits={WINDOW_BITS}")
    return extension


class Frames:
    """Complete frames from a wsproto ``FrameProtocol``, its partial frames joined."""

    def __init__(self, side: str, extension: BoundedDeflate | None) -> None:
        self.protocol = FrameProtocol(client=side == "client", extensions=[extension] if extension else [])
        self.seen: list[Seen] = []
        self.refused = False
        self.closed = False
        self._partial: tuple[int, Any] | None = None

    def feed(self, data: bytes) -> None:
        self.protocol.receive_bytes(data)
        try:
            for frame in self.protocol.received_frames():
                payload = frame.payload
                if self._partial is not None:
                    payload = self._partial[1] + payload
                self._partial = None
                if not frame.frame_finished:
                    self._partial = (frame.opcode, payload)
                    continue
                self.seen.append((int(frame.opcode), payload, frame.message_finished))
                if frame.opcode is Opcode.CLOSE:
                    self.closed = True
        except ParseFailed:
            self.refused = True


class Ours:
    """Our frame reader with wsproto behind it, as a :class:`~evsim.ws.connection.WebSocket` wires them."""

    def __init__(self, side: str, compression: bool) -> None:
        extension = _extension(side) if compression else None
        self.wsproto = Frames(side, extension)
        self.seen = self.wsproto.seen  # one list: frames from both paths, in order
        self.refused = False
        self.reader = FrameReader(
            client=side == "client",
            max_message_size=LIMIT,
            deflate=extension,
            deliver=self._deliver,
            refuse=self._refuse,
            to_wsproto=self._to_wsproto,
        )

    @property
    def ended(self) -> bool:
        return self.refused or self.wsproto.refused or self.wsproto.closed

    def feed(self, data: bytes) -> None:
        if not self.ended:  # a WebSocket reads no more once the connection ended
            self.reader.receive(data)

    def _deliver(self, message: str | bytes, size: int) -> None:
        assert size == len(message.encode() if isinstance(message, str) else message)
        self.seen.append((0x1 if isinstance(message, str) else 0x2, message, True))

    def _refuse(self, code: int, reason: str) -> bytes:
        self.refused = True
        return b"close frame"

    def _to_wsproto(self, data: bytes) -> tuple[bytearray | None, bool]:
        self.wsproto.feed(data)
        return None, self.ended


@given(case=cases())
def test_frame_reader_agrees_with_wsproto(case: Case) -> None:
    ours = Ours(case.side, case.compression)
    theirs = Frames(case.side, _extension(case.side) if case.compression else None)
    for a, b in zip([0, *case.chunks], [*case.chunks, len(case.data)], strict=True):
        ours.feed(case.data[a:b])
        theirs.feed(case.data[a:b])
    assert (ours.refused or ours.wsproto.refused) == theirs.refused
    assert ours.seen == theirs.seen
    if case.corruption is None:  # the drawing itself is checked: valid frames, nothing refused
        assert not theirs.refused
        assert len(theirs.seen) == len(case.frames)


# -- short messages uncompressed ---------------------------------------------------------------------------

_SHORT = '[2,"19223201","Heartbeat",{}]'  # 29 bytes
_LONG = (
    '[2,"19223201","StatusNotification",{"timestamp":"2026-12-07T03:05:11.000Z",'
    '"connectorStatus":"Available","evseId":1,"connectorId":1}]'
)


def test_short_messages_go_uncompressed_and_both_kinds_inflate_in_order() -> None:
    """Below ``compress_min_size`` a message goes out with RSV1 clear (RFC 7692 §6: the sender's choice per
    message) and stays out of the shared LZ77 window on both ends: a reader that sees compressed and
    uncompressed messages interleaved delivers them all, and wsproto alone reads the same bytes alike."""
    assert len(_SHORT) < COMPRESS_MIN_SIZE <= len(_LONG)
    sender = _extension("client")
    messages = [_LONG, _SHORT, _LONG, _SHORT, _SHORT, _LONG.replace("Available", "Occupied")]
    frames = [encode_data_frame(m.encode(), OP_TEXT, client=True, deflate=sender) for m in messages]
    rsv1 = [bool(f[0] & 0x40) for f in frames]
    assert rsv1 == [len(m) >= COMPRESS_MIN_SIZE for m in messages]
    assert all(
        len(f) == 2 + 4 + len(m) for f, m in zip(frames, messages, strict=True) if len(m) < COMPRESS_MIN_SIZE
    )
    assert len(frames[2]) < len(frames[0])  # the window carried over the uncompressed message between
    ours = Ours("server", compression=True)
    theirs = Frames("server", _extension("server"))
    for frame in frames:
        ours.feed(frame)
        theirs.feed(frame)
    assert not ours.ended and not theirs.refused
    assert [m for _, m, _ in ours.seen] == messages
    assert [m for _, m, _ in theirs.seen] == messages


def test_compress_min_size_zero_compresses_every_message() -> None:
    sender = BoundedDeflate(LIMIT, compress_min_size=0)
    sender.finalize(f"permessage-deflate; server_max_window_bits={WINDOW_BITS}")
    frame = encode_data_frame(_SHORT.encode(), OP_TEXT, client=False, deflate=sender)
    assert frame[0] & 0x40
    ours = Ours("client", compression=True)
    ours.feed(frame)
    assert [m for _, m, _ in ours.seen] == [_SHORT]
