"""Fault catalogue, WebSocket framing: hand-written hostile peers against our WebSocket, in memory.

Every case is played against both ends (our server with a hostile client, our client with a hostile server)
where the RFC allows it. For each: the right close code reaches the peer, our side raises only
:class:`~evsim.errors.TransportError` (``WebSocketClosed``), the stream ends, memory stays bounded. The
interop cases come first: compressed messages split into fragments with control frames between them (RFC 6455
§5.4, RFC 7692 §6), as Node's ``ws`` sends them.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import random
import struct
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evsim.errors import TransportError, WebSocketClosed
from evsim.net import VirtualStream, memory_pipe_pair
from evsim.nodes.csms import Csms, CsmsConfig
from evsim.nodes.station import Station
from evsim.nodes.station_model import StationConfig
from evsim.tls import ClientTls, TlsProfile
from evsim.ws import WebSocket, ws_client, ws_server
from evsim.ws.deflate import WINDOW_BITS
from tests.e2e_harness import PASSWORD, Harness, harness
from tests.pki_fixtures import CSMS_HOST
from tests.test_ws_connection import GUID, OFFERS, pick, read_http_head, upgrade_request

SIDES = ["server", "client"]  # which end is ours
MAX = 1000  # max_message_size of our end in most cases


# -- hostile peers -----------------------------------------------------------------------------------------


def raw_frame(first: int, payload: bytes, *, mask: bool, length: int | None = None) -> bytes:
    """A frame from its first byte (FIN, RSV, opcode); ``length`` overrides the announced payload length."""
    n = len(payload) if length is None else length
    bit = 0x80 if mask else 0
    if n < 126:
        header = bytes([first, bit | n])
    elif n < 65536:
        header = bytes([first, bit | 126]) + struct.pack("!H", n)
    else:
        header = bytes([first, bit | 127]) + struct.pack("!Q", n)
    if not mask:
        return header + payload
    key = os.urandom(4)
    return header + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def parse_frame(data: bytes) -> tuple[int, bytes, bytes] | None:
    """(first byte, unmasked payload, rest) of the first frame in ``data``, or None if incomplete."""
    if len(data) < 2:
        return None
    n = data[1] & 0x7F
    pos = 2
    if n == 126:
        if len(data) < 4:
            return None
        (n,) = struct.unpack("!H", data[2:4])
        pos = 4
    elif n == 127:
        if len(data) < 10:
            return None
        (n,) = struct.unpack("!Q", data[2:10])
        pos = 10
    key = b""
    if data[1] & 0x80:
        key = data[pos : pos + 4]
        pos += 4
    if len(data) < pos + n:
        return None
    payload = data[pos : pos + n]
    if key:
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return data[0], payload, data[pos + n :]


@attrs.define
class Peer:
    """The hostile end: raw bytes in and out, frames masked as its role demands (or not, on purpose)."""

    stream: VirtualStream
    ws: WebSocket  # our end
    is_client: bool
    received: bytes = b""

    def frame(
        self,
        opcode: int,
        payload: bytes = b"",
        *,
        fin: bool = True,
        rsv: int = 0,
        mask: bool | None = None,
        length: int | None = None,
    ) -> bytes:
        first = (0x80 if fin else 0) | rsv | opcode
        return raw_frame(first, payload, mask=self.is_client if mask is None else mask, length=length)

    async def send(self, *frames: bytes) -> None:
        await self.stream.send_all(b"".join(frames))

    async def next_frame(self) -> tuple[int, bytes]:
        """The next frame our end sent: (opcode, payload)."""
        while (parsed := parse_frame(self.received)) is None:
            chunk = await self.stream.receive_some()
            assert chunk, "our end closed the stream before sending a frame"
            self.received += chunk
        first, payload, self.received = parsed
        return first & 0x0F, payload

    async def expect_close(self, code: int) -> None:
        """Our end sent a close frame with ``code``, then ended the stream."""
        opcode, payload = await self.next_frame()
        assert opcode == 0x8, (opcode, payload)
        assert struct.unpack("!H", payload[:2])[0] == code, payload
        assert self.received == b""
        while True:
            try:
                if not await self.stream.receive_some():
                    return
            except TransportError:
                return


@asynccontextmanager
async def hostile(
    side: str,
    *,
    deflate: str | None = None,
    compression: bool = True,
    max_message_size: int = MAX,
    behind_101: bytes = b"",
) -> AsyncIterator[Peer]:
    """Our ``side`` against a hand-written peer.

    ``deflate``: the peer's permessage-deflate parameters (its offer as a client, its answer as a server);
    None negotiates no compression. ``behind_101``: bytes a hostile server sends in the same write as its 101
    response.
    """
    a, b = memory_pipe_pair(buffer_size=1 << 22)
    with trio.fail_after(60):
        if side == "server":
            result: list[WebSocket | None] = []

            async def serve() -> None:
                result.append(
                    await ws_server(
                        b, pick(["ocpp2.0.1"]), compression=compression, max_message_size=max_message_size
                    )
                )

            extra = f"Sec-WebSocket-Extensions: {deflate}\r\n" if deflate else ""
            async with trio.open_nursery() as nursery:
                nursery.start_soon(serve)
                await a.send_all(upgrade_request(extra))
                head, rest = await read_http_head(a)
            assert head.startswith("HTTP/1.1 101"), head
            ws = result[0]
            assert ws is not None
            peer = Peer(a, ws, is_client=True, received=rest)
        else:
            ours: list[WebSocket] = []

            async def connect() -> None:
                ours.append(
                    await ws_client(
                        a,
                        host="csms",
                        path="/ocpp/CS1",
                        subprotocols=OFFERS,
                        compression=compression,
                        max_message_size=max_message_size,
                    )
                )

            async with trio.open_nursery() as nursery:
                nursery.start_soon(connect)
                head, _ = await read_http_head(b)
                key = next(
                    line.split(":", 1)[1].strip()
                    for line in head.split("\r\n")
                    if line.lower().startswith("sec-websocket-key")
                )
                accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
                ext = f"Sec-WebSocket-Extensions: {deflate}\r\n" if deflate and compression else ""
                await b.send_all(
                    (
                        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        f"Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: ocpp2.0.1\r\n{ext}\r\n"
                    ).encode()
                    + behind_101
                )
            peer = Peer(b, ours[0], is_client=False)
        assert peer.ws.compressed == bool(deflate and compression)
        yield peer  # the test's body runs under the same deadline


def compressed(compressor: zlib._Compress, message: bytes) -> bytes:
    """One message's payload as RFC 7692 §7.2.1 has it (flushed, without the 00 00 ff ff tail)."""
    return (compressor.compress(message) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


def deflate_params(side: str, no_context_takeover: bool) -> str:
    """The peer's permessage-deflate offer (we are the server) or answer (we are the client)."""
    role = "client" if side == "server" else "server"
    params = f"permessage-deflate; {role}_max_window_bits={WINDOW_BITS}"
    return params + (f"; {role}_no_context_takeover" if no_context_takeover else "")


async def receive_forever(ws: WebSocket, into: list[str | bytes] | None = None) -> None:
    """Read messages (into ``into``, if given) until our end raises."""
    while True:
        message = await ws.receive()
        if into is not None:
            into.append(message)


async def expect_failure(peer: Peer, code: int) -> None:
    """Our end refuses what the peer sent: ``code`` raised, sent to the peer, the connection over."""
    with pytest.raises(WebSocketClosed) as info:
        await receive_forever(peer.ws)
    assert info.value.code == code
    await peer.expect_close(code)
    assert peer.ws.closed
    assert peer.ws.statistics().closed_by == "local"
    with pytest.raises(TransportError):
        await peer.ws.send_text("after the failure")
    with pytest.raises(TransportError):
        await peer.ws.receive()


# -- interop: control frames between the fragments of a compressed message ---------------------------------

MESSAGE = ('[2,"19223201","MeterValues",{"evseId":1,"meterValue":[{"sampledValue":[{"value":230.1}]}],'
           '"note":"héllo wörld"}]').encode()  # fmt: skip


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("no_context_takeover", [False, True])
@pytest.mark.parametrize("control", [0x9, 0xA])
async def test_control_frame_between_compressed_fragments(
    autojump_clock: trio.testing.MockClock, side: str, no_context_takeover: bool, control: int
) -> None:
    # What `ws` (Node) sends: a compressed message in fragments (RSV1 on the first only) with a ping or pong
    # between them. The fragments' payloads are joined, then inflated; the ping is answered; the inflate state
    # is untouched, so the next messages (a whole frame, then fragments again) inflate too, with or without
    # context takeover. wsproto 1.3 took the continuation after the control frame as uncompressed (1007).
    async with hostile(side, deflate=deflate_params(side, no_context_takeover)) as peer:
        compressor = zlib.compressobj(6, zlib.DEFLATED, -WINDOW_BITS)

        def next_payload() -> bytes:
            nonlocal compressor
            payload = compressed(compressor, MESSAGE)
            if no_context_takeover:
                compressor = zlib.compressobj(6, zlib.DEFLATED, -WINDOW_BITS)
            return payload

        def fragmented(payload: bytes, ping: bytes) -> bytes:
            third = len(payload) // 3
            return b"".join(
                [
                    peer.frame(0x1, payload[:third], fin=False, rsv=0x40),
                    peer.frame(control, ping),
                    peer.frame(0x0, payload[third : 2 * third], fin=False),
                    peer.frame(control, ping + b"!"),
                    peer.frame(0x0, payload[2 * third :]),
                ]
            )

        first = next_payload()
        second = next_payload()
        if not no_context_takeover:
            assert len(second) < len(first) / 3  # the second message refers back to the first one
        await peer.send(
            fragmented(first, b"one"),
            peer.frame(0x1, second, rsv=0x40),
            fragmented(next_payload(), b"two"),
        )
        text = MESSAGE.decode()
        assert [await peer.ws.receive() for _ in range(3)] == [text, text, text]
        if control == 0x9:
            pongs = [await peer.next_frame() for _ in range(4)]
            assert pongs == [(0xA, b"one"), (0xA, b"one!"), (0xA, b"two"), (0xA, b"two!")]
            assert peer.ws.statistics().pings_received == 4
        else:
            assert peer.ws.statistics().pongs_received == 4
        # and the other way round, our compressor is in step (a message long enough to be compressed)
        await peer.ws.send_text(text * 2)
        opcode, payload = await peer.next_frame()
        assert opcode == 0x1
        assert zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff") == MESSAGE * 2


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("no_context_takeover", [False, True])
async def test_close_between_compressed_fragments(
    autojump_clock: trio.testing.MockClock, side: str, no_context_takeover: bool
) -> None:
    # A close frame between the fragments of a compressed message ends the connection: it is answered with
    # the same code, the unfinished message is dropped, and what follows the close frame is ignored.
    async with hostile(side, deflate=deflate_params(side, no_context_takeover)) as peer:
        compressor = zlib.compressobj(6, zlib.DEFLATED, -WINDOW_BITS)
        payload = compressed(compressor, MESSAGE)
        await peer.send(
            peer.frame(0x1, payload[:10], fin=False, rsv=0x40),
            peer.frame(0x9, b"ping"),
            peer.frame(0x8, struct.pack("!H", 1000) + b"bye"),
            peer.frame(0x0, payload[10:]),
        )
        with pytest.raises(WebSocketClosed) as info:
            await peer.ws.receive()
        assert (info.value.code, info.value.reason) == (1000, "bye")
        assert await peer.next_frame() == (0xA, b"ping")
        await peer.expect_close(1000)
        stats = peer.ws.statistics()
        assert (stats.state, stats.closed_by, stats.messages_received) == ("closed", "remote", 0)


@pytest.mark.parametrize("no_context_takeover", [False, True])
async def test_frames_right_behind_the_101_response(
    autojump_clock: trio.testing.MockClock, no_context_takeover: bool
) -> None:
    # A server may send frames in the same write as its 101 response: our client parses them like any other
    # (compressed fragments with a ping between them included), and a header announcing too much is refused
    # at once. Such frames used to go through wsproto alone, unchecked, for the whole connection.
    compressor = zlib.compressobj(6, zlib.DEFLATED, -WINDOW_BITS)
    payload = compressed(compressor, MESSAGE)
    frames = (
        raw_frame(0x81, b"plain", mask=False)
        + raw_frame(0x41, payload[:7], mask=False)
        + raw_frame(0x89, b"hi", mask=False)
        + raw_frame(0x80, payload[7:], mask=False)
        + raw_frame(0x82, b"", mask=False, length=2**63 - 1)
    )
    deflate = deflate_params("client", no_context_takeover)
    async with hostile("client", deflate=deflate, behind_101=frames) as peer:
        assert await peer.ws.receive() == "plain"
        assert await peer.ws.receive() == MESSAGE.decode()
        assert await peer.next_frame() == (0xA, b"hi")
        start = trio.current_time()
        await expect_failure(peer, 1009)
        assert trio.current_time() - start < 1


# -- sizes ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("side", SIDES)
async def test_oversized_single_frame(autojump_clock: trio.testing.MockClock, side: str) -> None:
    async with hostile(side) as peer:
        await peer.send(peer.frame(0x2, b"x" * (MAX + 1)))
        await expect_failure(peer, 1009)


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("rsv", [0, 0x40])
@pytest.mark.parametrize("opcode", [0x1, 0x2])
async def test_huge_length_header_only_is_refused_at_once(
    autojump_clock: trio.testing.MockClock, side: str, rsv: int, opcode: int
) -> None:
    # A header announcing 2**63-1 bytes and nothing after it: refused from the header (1009), compressed or
    # not, instead of waiting for bytes that never come. Used to wait forever.
    deflate = deflate_params(side, False) if rsv else None
    async with hostile(side, deflate=deflate) as peer:
        await peer.send(peer.frame(opcode, rsv=rsv, length=2**63 - 1))
        start = trio.current_time()
        await expect_failure(peer, 1009)
        assert trio.current_time() - start < 1


@pytest.mark.parametrize("side", SIDES)
async def test_huge_length_in_a_continuation_is_refused_at_once(
    autojump_clock: trio.testing.MockClock, side: str
) -> None:
    async with hostile(side) as peer:
        await peer.send(peer.frame(0x1, b"ab", fin=False), peer.frame(0x0, b"cd", fin=False, length=2**62))
        await expect_failure(peer, 1009)


@pytest.mark.parametrize("side", SIDES)
async def test_many_small_fragments_are_counted_as_they_arrive(
    autojump_clock: trio.testing.MockClock, side: str
) -> None:
    # MAX + 1 one-byte fragments and no FIN: refused when the limit is passed, not when the message ends.
    async with hostile(side) as peer:
        frames = [peer.frame(0x2 if i == 0 else 0x0, b"x", fin=False) for i in range(MAX + 1)]
        await peer.send(*frames)
        await expect_failure(peer, 1009)
        assert peer.ws._parts_size <= MAX + 1


@pytest.mark.parametrize("side", SIDES)
async def test_fragments_of_a_compressed_message_inflating_past_the_limit(
    autojump_clock: trio.testing.MockClock, side: str
) -> None:
    # Each fragment is small and inflates to less than the limit; together they pass it (no FIN ever sent).
    async with hostile(side, deflate=deflate_params(side, False)) as peer:
        compressor = zlib.compressobj(6, zlib.DEFLATED, -WINDOW_BITS)
        frames = []
        for i in range(4):
            chunk = compressor.compress(os.urandom(MAX // 4).hex().encode()) + compressor.flush(
                zlib.Z_SYNC_FLUSH
            )
            frames.append(peer.frame(0x1 if i == 0 else 0x0, chunk, fin=False, rsv=0x40 if i == 0 else 0))
        await peer.send(*frames)
        await expect_failure(peer, 1009)


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("fragments", [1, 8])
async def test_deflate_bomb_is_refused_without_inflating_it(
    autojump_clock: trio.testing.MockClock, side: str, fragments: int
) -> None:
    # 64 MiB of zeros compress to ~64 KB: one frame (our fast path) or fragments (wsproto's path). The
    # inflater stops at the limit, so memory stays near max_message_size, nowhere near 64 MiB.
    limit = 64 * 1024
    payload = _bomb()
    assert len(payload) < limit
    async with hostile(side, deflate=deflate_params(side, False), max_message_size=limit) as peer:
        step = -(-len(payload) // fragments)
        pieces = [payload[i : i + step] for i in range(0, len(payload), step)]
        frames = [
            peer.frame(0x2 if k == 0 else 0x0, piece, fin=k == len(pieces) - 1, rsv=0x40 if k == 0 else 0)
            for k, piece in enumerate(pieces)
        ]
        tracemalloc.start()
        try:
            await peer.send(*frames)
            with pytest.raises(WebSocketClosed) as info:
                await peer.ws.receive()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert info.value.code == 1009
        assert peak < 16 * limit + sum(map(len, frames)) * 4, peak
        await peer.expect_close(1009)


@functools.cache
def _bomb() -> bytes:
    return compressed(zlib.compressobj(9, zlib.DEFLATED, -WINDOW_BITS), bytes(64 << 20))


# -- order, bits and opcodes -------------------------------------------------------------------------------


def _interleaved_data(peer: Peer) -> bytes:
    return peer.frame(0x1, b"first ", fin=False) + peer.frame(0x2, b"other message")


def _interleaved_fragmented(peer: Peer) -> bytes:
    return peer.frame(0x1, b"first ", fin=False) + peer.frame(0x1, b"second", fin=False)


def _continuation_without_start(peer: Peer) -> bytes:
    return peer.frame(0x0, b"orphan")


def _continuation_after_a_whole_message(peer: Peer) -> bytes:
    return peer.frame(0x1, b"whole") + peer.frame(0x0, b"orphan")


def _fragmented_ping(peer: Peer) -> bytes:
    return peer.frame(0x9, b"pi", fin=False) + peer.frame(0x0, b"ng")


def _ping_over_125(peer: Peer) -> bytes:
    return peer.frame(0x9, b"p" * 126)


def _non_minimal_length(peer: Peer) -> bytes:
    # "hello" with a 16-bit length; a client's frame gets an all-zero masking key (the payload stays as is)
    mask, key = (0x80, b"\x00" * 4) if peer.is_client else (0, b"")
    return bytes([0x81, mask | 126]) + struct.pack("!H", 5) + key + b"hello"


def _length_with_msb(peer: Peer) -> bytes:
    return peer.frame(0x2, length=2**63 + 5)


def _bad_bits(rsv: int, opcode: int = 0x1) -> Callable[[Peer], bytes]:
    return lambda peer: peer.frame(opcode, b"hi", rsv=rsv)


def _rsv1_on_continuation(peer: Peer) -> bytes:
    return peer.frame(0x1, b"a", fin=False) + peer.frame(0x0, b"b", rsv=0x40)


def _opcode(opcode: int) -> Callable[[Peer], bytes]:
    return lambda peer: peer.frame(opcode, b"?")


def _close(payload: bytes) -> Callable[[Peer], bytes]:
    return lambda peer: peer.frame(0x8, payload)


def _wrong_mask(peer: Peer) -> bytes:
    return peer.frame(0x1, b"hi", mask=not peer.is_client)


def _invalid_utf8_whole(peer: Peer) -> bytes:
    return peer.frame(0x1, b"ok \xff\xfe")


def _invalid_utf8_truncated_at_fin(peer: Peer) -> bytes:
    return peer.frame(0x1, b"ok ", fin=False) + peer.frame(0x0, "é".encode()[:1])


def _invalid_utf8_split(peer: Peer) -> bytes:
    return peer.frame(0x1, b"ok \xe2", fin=False) + peer.frame(0x0, b"\x28\xa1")


CATALOGUE: dict[str, tuple[Callable[[Peer], bytes], int]] = {
    "data frame inside a fragmented message": (_interleaved_data, 1002),
    "fragmented message inside a fragmented message": (_interleaved_fragmented, 1002),
    "continuation without a start": (_continuation_without_start, 1002),
    "continuation after a whole message": (_continuation_after_a_whole_message, 1002),
    "fragmented ping": (_fragmented_ping, 1002),
    "ping payload of 126 bytes": (_ping_over_125, 1002),
    "non-minimal length": (_non_minimal_length, 1002),
    "64-bit length with the top bit set": (_length_with_msb, 1002),
    "RSV1 without permessage-deflate": (_bad_bits(0x40), 1002),
    "RSV2": (_bad_bits(0x20), 1002),
    "RSV3": (_bad_bits(0x10), 1002),
    "RSV1 on a ping": (_bad_bits(0x40, 0x9), 1002),
    "RSV1 on a continuation": (_rsv1_on_continuation, 1002),
    **{f"reserved opcode {op:#x}": (_opcode(op), 1002) for op in (0x3, 0x7, 0xB, 0xF)},
    "close with a 1-byte payload": (_close(b"\x03"), 1002),
    **{
        f"close with code {code}": (_close(struct.pack("!H", code)), 1002)
        for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535)
    },
    "close reason not UTF-8": (_close(struct.pack("!H", 1000) + b"\xff"), 1007),
    "wrong masking": (_wrong_mask, 1002),
    "invalid UTF-8 in a text frame": (_invalid_utf8_whole, 1007),
    "UTF-8 sequence cut at the end of a message": (_invalid_utf8_truncated_at_fin, 1007),
    "invalid UTF-8 across fragments": (_invalid_utf8_split, 1007),
}


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize(
    ("case", "compression"),
    [
        (case, compression)
        for case in CATALOGUE
        for compression in (False, True)
        # RSV1 is the compressed-message bit once permessage-deflate is agreed: not an abuse then
        if not (compression and case == "RSV1 without permessage-deflate")
    ],
)
async def test_framing_abuse(
    autojump_clock: trio.testing.MockClock, side: str, case: str, compression: bool
) -> None:
    build, code = CATALOGUE[case]
    async with hostile(side, deflate=deflate_params(side, False) if compression else None) as peer:
        await peer.send(build(peer))
        await expect_failure(peer, code)


@pytest.mark.parametrize("side", SIDES)
async def test_invalid_utf8_in_a_compressed_message(
    autojump_clock: trio.testing.MockClock, side: str
) -> None:
    async with hostile(side, deflate=deflate_params(side, False)) as peer:
        compressor = zlib.compressobj(6, zlib.DEFLATED, -WINDOW_BITS)
        payload = compressed(compressor, b"ok \xc3\x28 not UTF-8")
        await peer.send(peer.frame(0x1, payload[:3], fin=False, rsv=0x40), peer.frame(0x0, payload[3:]))
        await expect_failure(peer, 1007)


@pytest.mark.parametrize("side", SIDES)
async def test_corrupt_deflate_data(autojump_clock: trio.testing.MockClock, side: str) -> None:
    async with hostile(side, deflate=deflate_params(side, False)) as peer:
        await peer.send(peer.frame(0x1, b"\xff\xff\xff\xff", rsv=0x40))
        await expect_failure(peer, 1007)


@pytest.mark.parametrize("side", SIDES)
async def test_garbage_instead_of_a_close_reply_ends_at_once(
    autojump_clock: trio.testing.MockClock, side: str
) -> None:
    # We close; the peer answers with a frame wsproto refuses. No close reply can follow it, so the close
    # ends now, not after close_timeout. Used to wait the full 10 s.
    async with hostile(side) as peer:
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer.ws.aclose, 1000, "bye")
            assert (await peer.next_frame())[0] == 0x8
            await peer.send(peer.frame(0x3, b"junk"))
        assert trio.current_time() - start < 1
        assert peer.ws.closed
        with pytest.raises(WebSocketClosed) as info:
            await peer.ws.receive()
        assert info.value.code == 1000


@pytest.mark.parametrize("side", SIDES)
async def test_messages_before_a_refused_frame_are_delivered(
    autojump_clock: trio.testing.MockClock, side: str
) -> None:
    async with hostile(side) as peer:
        await peer.send(peer.frame(0x1, b"good"), peer.frame(0x0, b"orphan"))
        assert await peer.ws.receive() == "good"
        await expect_failure(peer, 1002)


# -- a station that stops says goodbye with a close frame -----------------------------------------------------


def _station(h: Harness, station_id: str, url: str, client_tls: ClientTls | None, **config: Any) -> Station:
    return Station(
        StationConfig(
            station_id=station_id,
            csms_url=url,
            security_profile=1 if client_tls is None else 2,
            password=PASSWORD,
            sessions=0,
            **config,
        ),
        network=h.net,
        client_tls=client_tls,
        clock=h.clock,
        recorder=h.recorder,
        rng=random.Random(station_id),
    )


async def _run_until_stopped(station: Station, scope: trio.CancelScope, done: trio.Event) -> None:
    with scope:
        await station.run()
    done.set()


@pytest.mark.parametrize("security_profile", [1, 2])
async def test_a_stopped_station_closes_with_1001(
    autojump_clock: trio.testing.MockClock, security_profile: int
) -> None:
    # Whatever stops a station (end of the run, --duration, a scenario's node stop) cancels it; the CSMS
    # still gets a close frame (1001 going away) instead of a lost link. Used to be link_lost.
    async with harness() as h:
        if security_profile == 1:
            csms = Csms(
                CsmsConfig(
                    host="plain.evsim.test",
                    port=80,
                    security_profile=1,
                    insecure_allow_plain_ws=True,
                    default_password=PASSWORD,
                ),
                network=h.net,
                server_tls=None,
                clock=h.clock,
                recorder=h.recorder,
            )
            await h.nursery.start(csms.run)
            station = _station(h, "ST-1", "ws://plain.evsim.test/ocpp", None)
        else:
            await h.start_csms()
            client_tls = ClientTls.build(TlsProfile(), h.pki.csms_trust())
            station = _station(h, "ST-1", f"wss://{CSMS_HOST}/ocpp", client_tls)
        scope = trio.CancelScope()
        done = trio.Event()
        with trio.fail_after(120):
            h.nursery.start_soon(_run_until_stopped, station, scope, done)
            await station.wait_online()
            await trio.sleep(5)
            stopped_at = trio.current_time()
            scope.cancel()
            await done.wait()
            assert trio.current_time() - stopped_at < 1  # the CSMS answered the close frame at once
            await trio.sleep(1)
        gone = [e for e in h.events("station_disconnected") if e.data["station"] == "ST-1"]
        assert [e.data["reason"] for e in gone] == ["ws_closed_1001"]


async def test_a_stopping_station_does_not_wait_for_a_csms_that_never_answers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A CSMS that accepts the boot and then never reads: the station's close frame gets no reply, and the
    # station is gone after close_timeout_s anyway. The CSMS finds the close frame (1001) when it reads.
    async with harness() as h:
        listener = await h.net.listen("mute.evsim.test", 80)
        csms_side: list[WebSocket] = []
        booted = trio.Event()

        async def mute_csms() -> None:
            ws = await ws_server(await listener.accept(), pick(["ocpp2.0.1"]))
            assert ws is not None
            csms_side.append(ws)
            call = json.loads(await ws.receive_text())
            assert call[2] == "BootNotification"
            answer = {"status": "Accepted", "interval": 300, "currentTime": "2025-01-01T00:00:00Z"}
            await ws.send_text(json.dumps([3, call[1], answer]))
            booted.set()

        h.nursery.start_soon(mute_csms)
        station = _station(h, "ST-1", "ws://mute.evsim.test/ocpp", None, close_timeout_s=3.0)
        scope = trio.CancelScope()
        done = trio.Event()
        with trio.fail_after(120):
            h.nursery.start_soon(_run_until_stopped, station, scope, done)
            await station.wait_online()
            await booted.wait()
            stopped_at = trio.current_time()
            scope.cancel()
            await done.wait()
            assert 3.0 <= trio.current_time() - stopped_at < 4.0
            with pytest.raises(WebSocketClosed) as info:
                await receive_forever(csms_side[0])
        assert info.value.code == 1001


# -- property: valid and hostile frames mixed ----------------------------------------------------------------

_ops = st.lists(
    st.one_of(
        st.tuples(st.just("text"), st.text(max_size=60), st.integers(1, 4)),  # message, fragments
        st.tuples(st.just("ping"), st.binary(max_size=20), st.just(0)),
        st.tuples(st.just("junk"), st.binary(min_size=1, max_size=24), st.just(0)),
    ),
    max_size=10,
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_ops, side=st.sampled_from(SIDES), compress=st.booleans(), step=st.integers(1, 64))
def test_valid_and_hostile_frames_mixed(
    ops: list[tuple[str, str | bytes, int]], side: str, compress: bool, step: int
) -> None:
    # Messages (compressed or not, in fragments with pings between them), pings and junk, cut at arbitrary
    # points. Only TransportError leaves our end; without junk every message arrives in order and every ping
    # is answered; with junk, the messages before it arrive first.
    async def main() -> None:
        async with hostile(side, deflate=deflate_params(side, False) if compress else None) as peer:
            compressor = zlib.compressobj(6, zlib.DEFLATED, -WINDOW_BITS)
            wire = b""
            expected: list[str] = []
            before_junk: int | None = None
            pings = 0
            for kind, value, parts in ops:
                if kind == "junk":
                    assert isinstance(value, bytes)
                    wire += value
                    before_junk = len(expected) if before_junk is None else before_junk
                elif kind == "ping":
                    assert isinstance(value, bytes)
                    wire += peer.frame(0x9, value)
                    pings += 1
                else:
                    assert isinstance(value, str)
                    expected.append(value)
                    payload = compressed(compressor, value.encode()) if compress else value.encode()
                    cut = [len(payload) * k // parts for k in range(parts + 1)]
                    for k in range(parts):
                        last = k == parts - 1
                        rsv = 0x40 if compress and k == 0 else 0
                        wire += peer.frame(
                            0x1 if k == 0 else 0x0, payload[cut[k] : cut[k + 1]], fin=last, rsv=rsv
                        )
                        if not last:
                            wire += peer.frame(0x9, b"between")
                            pings += 1
            for pos in range(0, len(wire), step):
                await peer.stream.send_all(wire[pos : pos + step])
            await peer.stream.send_eof()
            got: list[str | bytes] = []
            with pytest.raises(TransportError):
                await receive_forever(peer.ws, got)
            if before_junk is None:
                assert got == expected
                assert peer.ws.statistics().pings_received == pings
            else:
                assert got[:before_junk] == expected[:before_junk]

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
