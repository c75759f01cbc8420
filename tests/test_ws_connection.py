"""evsim.ws: our WebSocket loop, end to end over in-memory streams (and once over loopback TCP).

Peers that are not ours are written by hand here (raw HTTP and RFC 6455 frames), so the tests do not
need a second WebSocket library.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import trio
import trio.testing

from evsim.errors import (
    BrokenTransport,
    ClosedTransport,
    EvsimError,
    UpgradeRejected,
    WebSocketClosed,
    WebSocketError,
)
from evsim.net import TcpNetwork, VirtualNetwork, VirtualStream, memory_pipe_pair
from evsim.ocpp.session import NowaitTextTransport
from evsim.ws import (
    Accept,
    Reject,
    UpgradeRequest,
    WebSocket,
    basic_auth_header,
    parse_basic_auth,
    ws_client,
    ws_server,
)
from evsim.ws.deflate import WINDOW_BITS

OFFERS = ("ocpp2.1", "ocpp2.0.1")
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3


def pick(supported: Sequence[str]) -> Callable[[UpgradeRequest], Accept]:
    """A decide() choosing the client's most preferred version we support, else none."""

    def decide(request: UpgradeRequest) -> Accept:
        for offer in request.subprotocols:
            if offer in supported:
                return Accept(offer)
        return Accept(None)

    return decide


ACCEPT_FIRST = pick(OFFERS)


async def open_pair(
    decide: Callable[[UpgradeRequest], Accept | Reject] = ACCEPT_FIRST,
    *,
    streams: tuple[trio.abc.Stream, trio.abc.Stream] | None = None,
    client: dict[str, Any] | None = None,
    server: dict[str, Any] | None = None,
) -> tuple[WebSocket | EvsimError, WebSocket | None]:
    """Run ws_client and ws_server against each other; returns (client ws or its error, server ws)."""
    a, b = streams if streams is not None else memory_pipe_pair()
    result: list[WebSocket | None] = []
    client_side: WebSocket | EvsimError

    async def serve() -> None:
        result.append(await ws_server(b, decide, **(server or {})))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        kwargs: dict[str, Any] = {"host": "csms.evsim.test", "path": "/ocpp/CS1", "subprotocols": OFFERS}
        kwargs.update(client or {})
        try:
            client_side = await ws_client(a, **kwargs)
        except EvsimError as exc:
            client_side = exc
    return client_side, result[0]


async def open_ok(**kwargs: Any) -> tuple[WebSocket, WebSocket]:
    client, server = await open_pair(**kwargs)
    assert isinstance(client, WebSocket), client
    assert server is not None
    return client, server


# -- hand-written peers ------------------------------------------------------------------------------


def frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True, rsv1: bool = False) -> bytes:
    """One RFC 6455 frame, masked like a client's unless ``mask=False``."""
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    bit = 0x80 if mask else 0
    n = len(payload)
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


def read_frame(data: bytes) -> tuple[int, bytes, bytes] | None:
    """Parse one unmasked (server) frame: (opcode, payload, rest), or None if incomplete."""
    if len(data) < 2:
        return None
    opcode = data[0] & 0x0F
    n = data[1] & 0x7F
    pos = 2
    if n == 126:
        (n,) = struct.unpack("!H", data[2:4])
        pos = 4
    elif n == 127:
        (n,) = struct.unpack("!Q", data[2:10])
        pos = 10
    if len(data) < pos + n:
        return None
    return opcode, data[pos : pos + n], data[pos + n :]


async def receive_frame(stream: trio.abc.Stream) -> tuple[int, bytes]:
    """Read one complete server frame from a hand-written client's stream."""
    data = b""
    while (parsed := read_frame(data)) is None:
        data += await stream.receive_some()
    return parsed[0], parsed[1]


def upgrade_request(extra: str = "", path: str = "/ocpp/CS1") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: csms\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Protocol: ocpp2.0.1\r\n{extra}\r\n"
    ).encode()


async def read_http_head(stream: trio.abc.Stream) -> tuple[str, bytes]:
    """Read up to the blank line; returns (head text, bytes after it)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some()
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head.decode("latin-1"), rest


async def raw_client(
    server_kwargs: dict[str, Any] | None = None, extra: str = ""
) -> tuple[VirtualStream, WebSocket, str, bytes]:
    """A hand-written client that completes the handshake with our server."""
    a, b = memory_pipe_pair()
    result: list[WebSocket | None] = []

    async def serve() -> None:
        result.append(await ws_server(b, pick(["ocpp2.0.1"]), **(server_kwargs or {})))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        await a.send_all(upgrade_request(extra))
        head, rest = await read_http_head(a)
    assert head.startswith("HTTP/1.1 101"), head
    ws = result[0]
    assert ws is not None
    return a, ws, head, rest


async def _trio_memory_streams() -> tuple[trio.abc.Stream, trio.abc.Stream]:
    return trio.testing.memory_stream_pair()


async def _pipes() -> tuple[trio.abc.Stream, trio.abc.Stream]:
    return memory_pipe_pair()


async def _virtual_network() -> tuple[trio.abc.Stream, trio.abc.Stream]:
    net = VirtualNetwork()
    listener = await net.listen("csms", 443)
    client = await net.connect("csms", 443, source="st-1")
    return client, await listener.accept()


TRANSPORTS = {
    "trio.testing.memory_stream_pair": _trio_memory_streams,
    "evsim memory_pipe_pair": _pipes,
    "VirtualNetwork": _virtual_network,
}


@pytest.mark.parametrize("transport", list(TRANSPORTS))
@pytest.mark.parametrize("compression", [False, True])
async def test_round_trips_over_each_transport(
    autojump_clock: trio.testing.MockClock, transport: str, compression: bool
) -> None:
    with trio.fail_after(10):
        client_stream, server_stream = await TRANSPORTS[transport]()
        client, server = await open_ok(
            streams=(client_stream, server_stream),
            client={"compression": compression},
            server={"compression": compression},
        )
        assert client.compressed == server.compressed == compression
        for i in range(50):
            text = f'[2,"{i}","Heartbeat",{{}}]' + "é" * i
            await client.send_text(text)
            assert await server.receive_text() == text
            await server.send_bytes(text.encode())
            assert await client.receive_bytes() == text.encode()
        stats = client.statistics()
        assert stats.messages_sent == stats.messages_received == 50
        assert stats.wire_bytes_sent > 0
        assert server.statistics().payload_bytes_received == stats.payload_bytes_sent
        await server_stream.aclose()  # no close frame: the client sees a broken transport
        with pytest.raises(BrokenTransport):
            await client.receive_text()


# -- handshake ---------------------------------------------------------------------------------------------


async def test_subprotocol_negotiation_and_request_fields(autojump_clock: trio.testing.MockClock) -> None:
    seen: list[UpgradeRequest] = []

    def decide(request: UpgradeRequest) -> Accept:
        seen.append(request)
        return pick(["ocpp2.0.1"])(request)

    with trio.fail_after(5):
        client, server = await open_ok(decide=decide, client={"headers": [("X-Evsim-Test", "1")]})
    assert client.subprotocol == server.subprotocol == "ocpp2.0.1"
    (request,) = seen
    assert request.subprotocols == ("ocpp2.1", "ocpp2.0.1")
    assert request.path == "/ocpp/CS1"
    assert request.host == "csms.evsim.test"
    assert request.headers["x-evsim-test"] == "1"
    assert all(name == name.lower() for name in request.headers)
    assert server.request == request
    assert server.path == client.path == "/ocpp/CS1"
    assert client.request is None


async def test_server_prefers_the_clients_first_offer(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(5):
        client, server = await open_ok()
    assert client.subprotocol == server.subprotocol == "ocpp2.1"


async def test_no_common_subprotocol_completes_without_one(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(5):
        client, server = await open_ok(decide=pick(["ocpp1.6"]))
        assert client.subprotocol is None
        assert server.subprotocol is None
        # OCPP-J §3.2: the CSMS then closes at once
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.aclose, 1002, "no supported OCPP version")
            with pytest.raises(WebSocketClosed) as info:
                await client.receive_text()
        assert (info.value.code, info.value.reason) == (1002, "no supported OCPP version")


async def test_accepting_an_unoffered_subprotocol_is_a_bug(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(5), pytest.RaisesGroup(ValueError):
        await open_pair(decide=lambda request: Accept("ocpp9"))


@pytest.mark.parametrize(("status", "reason"), [(401, "bad credentials"), (404, "unknown station")])
async def test_rejection_raises_upgrade_rejected(
    autojump_clock: trio.testing.MockClock, status: int, reason: str
) -> None:
    a, b = memory_pipe_pair()
    with trio.fail_after(5):
        client, server = await open_pair(decide=lambda request: Reject(status, reason), streams=(a, b))
    assert server is None
    assert isinstance(client, UpgradeRejected)
    assert (client.status, client.reason) == (status, reason)
    assert a.statistics().closed
    assert b.statistics().closed


async def test_401_carries_www_authenticate(autojump_clock: trio.testing.MockClock) -> None:
    a, b = memory_pipe_pair()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ws_server, b, lambda request: Reject(401))
            await a.send_all(upgrade_request())
            head, body = await read_http_head(a)
    assert head.startswith("HTTP/1.1 401 Unauthorized\r\n")
    assert "\r\nWWW-Authenticate: Basic" in head
    assert "\r\nContent-Length: 0" in head
    assert body == b""


def test_reject_status_is_validated() -> None:
    with pytest.raises(ValueError, match=r"300\.\.599"):
        Reject(101)


async def test_basic_auth_round_trip(autojump_clock: trio.testing.MockClock) -> None:
    def decide(request: UpgradeRequest) -> Accept | Reject:
        credentials = parse_basic_auth(request.headers.get("authorization", ""))
        if credentials != ("CS1", "s3cret:with-colon-ünïcode"):
            return Reject(401, "bad credentials")
        return Accept("ocpp2.0.1")

    with trio.fail_after(5):
        good = basic_auth_header("CS1", "s3cret:with-colon-ünïcode")
        client, _ = await open_ok(decide=decide, client={"headers": [good]})
        assert client.subprotocol == "ocpp2.0.1"
        bad = basic_auth_header("CS1", "wrong")
        rejected, server = await open_pair(decide=decide, client={"headers": [bad]})
    assert isinstance(rejected, UpgradeRejected)
    assert rejected.status == 401
    assert server is None


async def test_malformed_request_gets_400_and_raises(autojump_clock: trio.testing.MockClock) -> None:
    a, b = memory_pipe_pair()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:

            async def serve() -> None:
                with pytest.raises(WebSocketError, match="bad WebSocket upgrade request"):
                    await ws_server(b, pick(OFFERS))

            nursery.start_soon(serve)
            await a.send_all(b"garbage\r\n\r\n")
            head, _ = await read_http_head(a)
    assert head.startswith("HTTP/1.1 400 ")
    assert b.statistics().closed


async def test_wrong_websocket_version_gets_426(autojump_clock: trio.testing.MockClock) -> None:
    a, b = memory_pipe_pair()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:

            async def serve() -> None:
                with pytest.raises(WebSocketError):
                    await ws_server(b, pick(OFFERS))

            nursery.start_soon(serve)
            await a.send_all(upgrade_request().replace(b"Version: 13", b"Version: 8"))
            head, _ = await read_http_head(a)
    assert head.startswith("HTTP/1.1 426 ")
    assert "Sec-WebSocket-Version: 13" in head


async def test_plain_http_get_is_refused(autojump_clock: trio.testing.MockClock) -> None:
    a, b = memory_pipe_pair()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:

            async def serve() -> None:
                with pytest.raises(WebSocketError):
                    await ws_server(b, pick(OFFERS))

            nursery.start_soon(serve)
            await a.send_all(b"GET / HTTP/1.1\r\nHost: csms\r\n\r\n")
            head, _ = await read_http_head(a)
    assert head.startswith("HTTP/1.1 400 ")


async def test_server_open_timeout(autojump_clock: trio.testing.MockClock) -> None:
    _a, b = memory_pipe_pair()
    with trio.fail_after(100):
        start = trio.current_time()
        with pytest.raises(WebSocketError, match="within 30"):
            await ws_server(b, pick(OFFERS))
        assert trio.current_time() - start == pytest.approx(30.0)
    assert b.statistics().closed


async def test_client_open_timeout(autojump_clock: trio.testing.MockClock) -> None:
    a, _b = memory_pipe_pair()
    with trio.fail_after(100), pytest.raises(WebSocketError, match="timed out"):
        await ws_client(a, host="csms", path="/", subprotocols=OFFERS, open_timeout=5)
    assert a.statistics().closed


async def test_client_sees_eof_before_response(autojump_clock: trio.testing.MockClock) -> None:
    a, b = memory_pipe_pair()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:

            async def close_on_request() -> None:
                await b.receive_some()
                await b.aclose()

            nursery.start_soon(close_on_request)
            with pytest.raises(BrokenTransport, match="during the WebSocket handshake"):
                await ws_client(a, host="csms", path="/", subprotocols=OFFERS)


async def test_client_rejects_a_bad_accept_token(autojump_clock: trio.testing.MockClock) -> None:
    a, b = memory_pipe_pair()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:

            async def bad_server() -> None:
                await read_http_head(b)
                await b.send_all(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Accept: bm90IHRoZSByaWdodCB0b2tlbg==\r\n\r\n"
                )

            nursery.start_soon(bad_server)
            with pytest.raises(WebSocketError, match="accept token"):
                await ws_client(a, host="csms", path="/", subprotocols=OFFERS)


async def test_client_rejects_garbage_response(autojump_clock: trio.testing.MockClock) -> None:
    a, b = memory_pipe_pair()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:

            async def bad_server() -> None:
                await read_http_head(b)
                await b.send_all(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")

            nursery.start_soon(bad_server)
            with pytest.raises(WebSocketError, match="bad WebSocket upgrade response"):
                await ws_client(a, host="csms", path="/", subprotocols=OFFERS)


async def test_client_refuses_unusable_headers(autojump_clock: trio.testing.MockClock) -> None:
    a, _b = memory_pipe_pair()
    with trio.fail_after(5), pytest.raises(WebSocketError, match="cannot build"):
        await ws_client(a, host="csms", path="/", subprotocols=OFFERS, headers=[("X", "line\r\nbreak")])
    assert a.statistics().closed


# -- compression -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("client_wants", "server_wants"), [(True, True), (True, False), (False, True), (False, False)]
)
async def test_compression_negotiation(
    autojump_clock: trio.testing.MockClock, client_wants: bool, server_wants: bool
) -> None:
    with trio.fail_after(5):
        client, server = await open_ok(
            client={"compression": client_wants}, server={"compression": server_wants}
        )
        assert client.compressed == server.compressed == (client_wants and server_wants)
        await client.send_text("héllo " * 50)
        assert await server.receive_text() == "héllo " * 50
        await server.send_text("wörld " * 50)
        assert await client.receive_text() == "wörld " * 50


async def test_compression_shrinks_the_wire(autojump_clock: trio.testing.MockClock) -> None:
    message = '{"sampledValue":[{"value":230.1,"measurand":"Voltage","phase":"L1-N"}]}' * 200
    sent: dict[bool, int] = {}
    for compression in (False, True):
        a, b = memory_pipe_pair(buffer_size=1 << 20)
        with trio.fail_after(5):
            client, server = await open_ok(streams=(a, b), client={"compression": compression})
            before = a.statistics().bytes_sent
            await client.send_text(message)
            assert await server.receive_text() == message
            sent[compression] = a.statistics().bytes_sent - before
            assert client.statistics().payload_bytes_sent == len(message)
    assert sent[False] > len(message)
    assert sent[True] < len(message) / 20


async def test_deflate_with_a_client_that_does_not_limit_its_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A client offering plain "permessage-deflate" may compress with a 32 KiB window (RFC 7692 §7.1.2.2);
    # our server must inflate with 15 bits even though it compresses with WINDOW_BITS itself.
    with trio.fail_after(5):
        a, ws, head, _ = await raw_client(extra="Sec-WebSocket-Extensions: permessage-deflate\r\n")
        assert ws.compressed
        assert "permessage-deflate" in head
        assert "client_max_window_bits" not in head
        block = os.urandom(9000).hex()  # 18 KB of text, then the same again: matches 18 KB back
        message = block + block
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
        payload = compressor.compress(message.encode()) + compressor.flush(zlib.Z_SYNC_FLUSH)
        assert len(payload) < len(message) * 0.6  # the long-distance match was used
        await a.send_all(frame(0x1, payload[:-4], rsv1=True))
        assert await ws.receive_text() == message
        await ws.send_text(message)
        opcode, body = await receive_frame(a)
        assert opcode == 0x1
        assert zlib.decompressobj(-15).decompress(body + b"\x00\x00\xff\xff") == message.encode()


async def test_deflate_offer_with_large_windows_is_lowered(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(5):
        _, ws, head, _ = await raw_client(
            extra="Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=15; "
            "server_max_window_bits=15\r\n"
        )
    assert ws.compressed
    assert f"client_max_window_bits={WINDOW_BITS}" in head
    assert f"server_max_window_bits={WINDOW_BITS}" in head


async def test_deflate_offer_with_garbage_parameters_gets_400(autojump_clock: trio.testing.MockClock) -> None:
    a, b = memory_pipe_pair()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:

            async def serve() -> None:
                with pytest.raises(WebSocketError, match="cannot accept"):
                    await ws_server(b, pick(["ocpp2.0.1"]))

            nursery.start_soon(serve)
            await a.send_all(
                upgrade_request("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=x\r\n")
            )
            head, _ = await read_http_head(a)
    assert head.startswith("HTTP/1.1 400 ")


async def test_client_inflates_with_15_bits_when_server_names_no_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a, b = memory_pipe_pair(buffer_size=1 << 20)
    block = os.urandom(9000).hex()
    message = block + block
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:

            async def lax_server() -> None:
                head, _ = await read_http_head(b)
                key = next(
                    line.split(":", 1)[1].strip()
                    for line in head.split("\r\n")
                    if line.lower().startswith("sec-websocket-key")
                )
                accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
                await b.send_all(
                    (
                        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        f"Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
                    ).encode()
                )
                compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
                payload = compressor.compress(message.encode()) + compressor.flush(zlib.Z_SYNC_FLUSH)
                await b.send_all(frame(0x1, payload[:-4], mask=False, rsv1=True))

            nursery.start_soon(lax_server)
            ws = await ws_client(a, host="csms", path="/", subprotocols=OFFERS)
            assert ws.compressed
            assert await ws.receive_text() == message


# -- messages ------------------------------------------------------------------------------------------------


async def test_message_too_big_closes_1009(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(5):
        client, server = await open_ok(server={"max_message_size": 1000})
        await client.send_text("é" * 500)  # exactly 1000 bytes of UTF-8: fine
        assert await server.receive_text() == "é" * 500
        await client.send_text("x" * 1001)
        with pytest.raises(WebSocketClosed) as info:
            await server.receive_text()
        assert (info.value.code, info.value.reason) == (1009, "message too big")
        with pytest.raises(WebSocketClosed) as client_info:
            await client.receive_text()
        assert client_info.value.code == 1009
        assert server.statistics().closed_by == "local"
        assert client.statistics().closed_by == "remote"


async def test_compressed_bomb_is_too_big_without_inflating_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(5):
        client, server = await open_ok(server={"max_message_size": 64 * 1024})
        assert client.compressed
        await client.send_text("a" * 4_000_000)  # ~4 KB on the wire
        with pytest.raises(WebSocketClosed) as info:
            await server.receive_text()
        assert info.value.code == 1009


async def test_fragments_are_reassembled_and_pings_answered_between(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(5):
        a, ws, _, _ = await raw_client(server_kwargs={"compression": False})
        await a.send_all(frame(0x1, "hél".encode()[:2], fin=False))  # splits the é across frames
        await a.send_all(frame(0x0, "hél".encode()[2:] + b"lo ", fin=False))
        await a.send_all(frame(0x9, b"are you there"))
        await a.send_all(frame(0x0, b"world"))
        await a.send_all(frame(0x2, b"\x00\x01", fin=False) + frame(0x0, b"\x02"))
        assert await ws.receive_text() == "héllo world"
        assert await ws.receive_bytes() == b"\x00\x01\x02"
        assert await receive_frame(a) == (0xA, b"are you there")
        assert ws.statistics().pings_received == 1


async def test_fragmented_message_too_big(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(5):
        a, ws, _, _ = await raw_client(server_kwargs={"compression": False, "max_message_size": 100})
        for opcode in (0x1, 0x0, 0x0):  # 120 bytes so far, no frame over the limit by itself
            await a.send_all(frame(opcode, b"x" * 40, fin=False))
        with pytest.raises(WebSocketClosed) as info:
            await ws.receive_text()
        assert info.value.code == 1009
        opcode, payload = await receive_frame(a)
        assert opcode == 0x8
        assert struct.unpack("!H", payload[:2]) == (1009,)


async def test_invalid_utf8_closes_1007(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(5):
        a, ws, _, _ = await raw_client(server_kwargs={"compression": False})
        await a.send_all(frame(0x1, b"\xff\xfe"))
        with pytest.raises(WebSocketClosed) as info:
            await ws.receive_text()
        assert info.value.code == 1007


async def test_unmasked_client_frame_is_a_protocol_error(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(5):
        a, ws, _, _ = await raw_client(server_kwargs={"compression": False})
        await a.send_all(frame(0x1, b"hi", mask=False))
        with pytest.raises(WebSocketClosed) as info:
            await ws.receive_text()
        assert info.value.code == 1002
        with pytest.raises(WebSocketClosed):
            await ws.send_text("too late")


async def test_binary_where_text_is_expected_closes_1003(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(5):
        client, server = await open_ok()
        await client.send_bytes(b"\x01\x02")
        with pytest.raises(WebSocketClosed) as info:
            await server.receive_text()
        assert info.value.code == 1003
        with pytest.raises(WebSocketClosed) as client_info:
            await client.receive()
        assert client_info.value.code == 1003


async def test_text_where_bytes_are_expected_closes_1003(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(5):
        client, server = await open_ok()
        await client.send_text("SHIP wants binary")
        with pytest.raises(WebSocketClosed) as info:
            await server.receive_bytes()
        assert info.value.code == 1003


async def test_many_messages_both_ways_concurrently(autojump_clock: trio.testing.MockClock) -> None:
    net = VirtualNetwork(buffer_size=512)  # small pipes: senders block, writes get batched
    listener = await net.listen("csms", 443)
    per_task, tasks = 150, 3
    with trio.fail_after(60):
        client_stream = await net.connect("csms", 443, source="st-1")
        client, server = await open_ok(streams=(client_stream, await listener.accept()))
        got: dict[str, list[str]] = {"client": [], "server": []}

        async def send(ws: WebSocket, who: str, task: int) -> None:
            for i in range(per_task):
                await ws.send_text(f"{who}-{task}-{i}-" + "z" * (i % 97))

        async def receive(ws: WebSocket, who: str) -> None:
            for _ in range(per_task * tasks):
                got[who].append(await ws.receive_text())

        async with trio.open_nursery() as nursery:
            for task in range(tasks):
                nursery.start_soon(send, client, "c", task)
                nursery.start_soon(send, server, "s", task)
            nursery.start_soon(receive, client, "client")
            nursery.start_soon(receive, server, "server")
    for who, sender in (("server", "c"), ("client", "s")):
        assert len(got[who]) == per_task * tasks
        for task in range(tasks):  # each task's messages arrive in its order
            mine = [m for m in got[who] if m.startswith(f"{sender}-{task}-")]
            assert [int(m.split("-")[2]) for m in mine] == list(range(per_task))
    assert client.statistics().messages_sent == server.statistics().messages_received == per_task * tasks


async def test_concurrent_receives_are_busy(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(5):
        client, _ = await open_ok()
        with pytest.RaisesGroup(trio.BusyResourceError):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.receive)
                nursery.start_soon(client.receive)


# -- ping / pong ---------------------------------------------------------------------------------------------


async def test_ping_pong(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(5):
        client, server = await open_ok()
        async with trio.open_nursery() as nursery:

            async def echo_once() -> None:
                await server.send_text(await server.receive_text())

            nursery.start_soon(echo_once)
            await client.ping(b"keepalive")
            await client.send_text("after the ping")
            assert await client.receive_text() == "after the ping"
        assert client.statistics().pings_sent == 1
        assert client.statistics().pongs_received == 1
        assert server.statistics().pings_received == 1
        with pytest.raises(ValueError, match="125"):
            await client.ping(b"x" * 126)


async def test_wsproto_is_made_only_when_a_frame_needs_it(autojump_clock: trio.testing.MockClock) -> None:
    """An open link that moves only whole messages holds no wsproto connection (≈2 KiB per end); a ping
    makes it, and compressed messages keep flowing through the shared deflate state afterwards."""
    message = '{"status":"Accepted","currentTime":"2026-12-07T09:00:00Z"}' * 10  # compressed (>= 128 bytes)
    with trio.fail_after(5):
        client, server = await open_ok(client={"compression": True}, server={"compression": True})
        assert client.compressed and server.compressed
        for _ in range(2):
            await client.send_text(message)
            assert await server.receive_text() == message
            await server.send_text(message)
            assert await client.receive_text() == message
        assert [ws._conn for ws in (client, server)] == [None, None]
        async with trio.open_nursery() as nursery:

            async def echo_once() -> None:
                await server.send_text(await server.receive_text())

            nursery.start_soon(echo_once)
            await client.ping(b"made now")
            await client.send_text(message)
            assert await client.receive_text() == message
        assert None not in [ws._conn for ws in (client, server)]
        assert client.statistics().pongs_received == 1


async def test_ping_is_answered_on_the_next_receive(autojump_clock: trio.testing.MockClock) -> None:
    a, b = memory_pipe_pair()
    with trio.fail_after(5):
        client, server = await open_ok(streams=(a, b))
        await client.ping(b"1")
        await trio.testing.wait_all_tasks_blocked()
        sent_before = b.statistics().bytes_sent
        assert server.statistics().pings_received == 0  # nobody reads on the server yet
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.receive_text)
            await trio.testing.wait_all_tasks_blocked()
            assert server.statistics().pings_received == 1
            assert b.statistics().bytes_sent > sent_before  # the pong went out
            await client.send_text("done")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.receive_text)
            await trio.testing.wait_all_tasks_blocked()
            assert client.statistics().pongs_received == 1
            nursery.cancel_scope.cancel()


# -- closing -------------------------------------------------------------------------------------------------


async def test_close_code_and_reason_reach_the_peer(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(5):
        client, server = await open_ok()
        async with trio.open_nursery() as nursery:

            async def server_reads() -> None:
                assert await server.receive_text() == "bye soon"
                with pytest.raises(WebSocketClosed) as info:
                    await server.receive_text()
                assert (info.value.code, info.value.reason) == (4001, "rebooting")

            nursery.start_soon(server_reads)
            await client.send_text("bye soon")
            await client.aclose(4001, "rebooting")
        assert client.statistics().state == "closed"
        assert client.statistics().closed_by == "local"
        assert server.statistics().closed_by == "remote"
        assert server.statistics().state == "closed"
        assert client.closed
        assert server.close_code == 4001
        with pytest.raises(WebSocketClosed) as info:
            await client.send_text("no")
        assert info.value.code == 4001
        with pytest.raises(WebSocketClosed):
            await client.receive_text()
        await client.aclose()  # idempotent


async def test_close_while_the_peer_is_reading(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(5):
        client, server = await open_ok()
        async with trio.open_nursery() as nursery:

            async def client_reads() -> None:
                with pytest.raises(WebSocketClosed) as info:
                    await client.receive_text()
                assert info.value.code == 1008

            nursery.start_soon(client_reads)
            await trio.testing.wait_all_tasks_blocked()
            start = trio.current_time()
            await server.aclose(1008, "policy")
            assert trio.current_time() == start  # the reply came at once, no close_timeout


async def test_close_while_our_own_reader_is_active(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(5):
        client, server = await open_ok()
        async with trio.open_nursery() as nursery:

            async def own_reader() -> None:
                with pytest.raises(WebSocketClosed) as info:
                    await client.receive_text()
                assert info.value.code == 1001

            async def server_reader() -> None:
                with pytest.raises(WebSocketClosed):
                    await server.receive_text()

            nursery.start_soon(own_reader)
            nursery.start_soon(server_reader)
            await trio.testing.wait_all_tasks_blocked()
            await client.aclose(1001, "going away")
        assert client.statistics().state == "closed"


async def test_close_timeout_when_the_peer_never_answers(autojump_clock: trio.testing.MockClock) -> None:
    a, b = memory_pipe_pair()
    with trio.fail_after(60):
        client, _server = await open_ok(streams=(a, b), client={"close_timeout": 7})
        start = trio.current_time()
        await client.aclose()  # the server never reads, so it never answers
        assert trio.current_time() - start == pytest.approx(7)
    assert a.statistics().closed


async def test_close_bounded_while_a_send_is_blocked(autojump_clock: trio.testing.MockClock) -> None:
    a, b = memory_pipe_pair(buffer_size=1024)
    with trio.fail_after(60):
        client, _server = await open_ok(streams=(a, b), client={"compression": False, "close_timeout": 3})
        async with trio.open_nursery() as nursery:

            async def blocked_sender() -> None:
                with pytest.raises(WebSocketClosed):
                    await client.send_text("x" * 10_000)  # the server never reads

            nursery.start_soon(blocked_sender)
            await trio.testing.wait_all_tasks_blocked()
            start = trio.current_time()
            await client.aclose(1001)
            assert trio.current_time() - start == pytest.approx(3)
    assert a.statistics().closed


async def test_peer_close_is_answered_behind_a_busy_writer(autojump_clock: trio.testing.MockClock) -> None:
    a, b = memory_pipe_pair(buffer_size=2048)
    with trio.fail_after(60):
        client, server = await open_ok(streams=(a, b), client={"compression": False})
        async with trio.open_nursery() as nursery:

            async def send_many() -> None:
                for _ in range(10):
                    await client.send_text("y" * 1500)

            async def busy_writer() -> None:
                with pytest.raises(WebSocketClosed):
                    await send_many()

            async def client_reader() -> None:
                with pytest.raises(WebSocketClosed) as info:
                    await client.receive_text()
                assert info.value.code == 1000

            async def server_side() -> None:
                await server.aclose()  # reads (and drops) the data until the close reply comes

            nursery.start_soon(busy_writer)
            nursery.start_soon(client_reader)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(server_side)
        assert server.statistics().state == "closed"
        assert server.statistics().close_code == 1000


def test_close_code_is_validated() -> None:
    async def main() -> None:
        client, _ = await open_ok()
        for code in (999, 1004, 1005, 1006, 1015, 2999, 5000):
            with pytest.raises(ValueError, match="may not be sent"):
                await client.aclose(code)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


async def test_eof_without_close_frame_is_broken(autojump_clock: trio.testing.MockClock) -> None:
    a, b = memory_pipe_pair()
    with trio.fail_after(5):
        client, _ = await open_ok(streams=(a, b))
        await b.aclose()
        with pytest.raises(BrokenTransport, match="without a WebSocket close frame"):
            await client.receive_text()
        with pytest.raises(BrokenTransport):
            await client.receive_text()
        with pytest.raises(BrokenTransport):
            await client.send_text("x")
        assert client.statistics().state == "broken"
        await client.aclose()


async def test_stream_closed_under_us_is_closed_transport(autojump_clock: trio.testing.MockClock) -> None:
    a, b = memory_pipe_pair()
    with trio.fail_after(5):
        client, _ = await open_ok(streams=(a, b))
        await a.aclose()
        with pytest.raises(ClosedTransport):
            await client.receive_text()
        with pytest.raises(ClosedTransport):
            await client.send_text("x")


async def test_partition_breaks_the_websocket(autojump_clock: trio.testing.MockClock) -> None:
    net = VirtualNetwork()
    listener = await net.listen("csms", 443)
    with trio.fail_after(5):
        stream = await net.connect("csms", 443, source="st-7")
        client, server = await open_ok(streams=(stream, await listener.accept()))
        await client.send_text("hello")
        assert await server.receive_text() == "hello"
        async with trio.open_nursery() as nursery:

            async def reader() -> None:
                with pytest.raises(BrokenTransport, match="partition"):
                    await server.receive_text()

            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            net.partition("st-7", "csms")
        with pytest.raises(BrokenTransport):
            await client.send_text("anyone?")


async def test_cancelled_send_leaves_the_websocket_unusable(autojump_clock: trio.testing.MockClock) -> None:
    a, b = memory_pipe_pair(buffer_size=1024)
    with trio.fail_after(5):
        client, _ = await open_ok(streams=(a, b), client={"compression": False})
        with trio.move_on_after(1):
            await client.send_text("x" * 10_000)  # nobody reads: blocks, then is cancelled
        with pytest.raises(BrokenTransport, match="unknown state"):
            await client.send_text("again")


# -- over real sockets ---------------------------------------------------------------------------------------


@pytest.mark.loopback
async def test_websocket_over_loopback_tcp() -> None:
    net = TcpNetwork()
    with trio.fail_after(10):
        listener = await net.listen("127.0.0.1", 0)
        client_stream = await net.connect("localhost", listener.address[1])
        client, server = await open_ok(streams=(client_stream, await listener.accept()))
        for i in range(20):
            await client.send_text(f'[2,"{i}","Heartbeat",{{}}]')
            await server.send_text(await server.receive_text())
            assert await client.receive_text() == f'[2,"{i}","Heartbeat",{{}}]'
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.aclose)
            with pytest.raises(WebSocketClosed):
                await server.receive_text()
        await listener.aclose()


# -- the frame fast path: unfragmented data frames parsed and built by evsim, the rest by wsproto ---------


@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_mixed_frames_in_arbitrary_splits(
    autojump_clock: trio.testing.MockClock, compressed: bool, seed: int
) -> None:
    # Whole frames (parsed by evsim), fragments and control frames (wsproto), in every order, cut at
    # random points: messages come out in order, pings are answered, the deflate window carries over
    # between the two paths.
    import random

    rng = random.Random(seed)
    extra = (
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=11\r\n" if compressed else ""
    )
    compressor = zlib.compressobj(6, zlib.DEFLATED, -WINDOW_BITS)

    def data_frames(opcode: int, payload: bytes, parts: int) -> bytes:
        if compressed:
            payload = (compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
        cuts = sorted(rng.sample(range(1, len(payload)), parts - 1)) if parts > 1 else []
        pieces = [payload[i:j] for i, j in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
        return b"".join(
            frame(
                opcode if k == 0 else 0x0,
                piece,
                fin=k == len(pieces) - 1,
                rsv1=compressed and k == 0,
            )
            for k, piece in enumerate(pieces)
        )

    with trio.fail_after(30):
        a, ws, _, _ = await raw_client(server_kwargs={"compression": compressed}, extra=extra)
        assert ws.compressed == compressed
        wire = b""
        expected: list[str | bytes] = []
        pings = 0
        for i in range(60):
            kind = rng.choice(["text", "text", "binary", "fragmented", "ping"])
            if kind == "ping":
                wire += frame(0x9, f"p{i}".encode())
                pings += 1
                continue
            text = f'[2,"{i}","Heartbeat",{{"n":"{"é" * rng.randrange(0, 40)}"}}]'
            if kind == "binary":
                expected.append(text.encode())
                wire += data_frames(0x2, text.encode(), 1)
            else:
                expected.append(text)
                wire += data_frames(0x1, text.encode(), rng.randrange(2, 4) if kind == "fragmented" else 1)
        expected.append("end")  # read last, so every ping before it has been answered
        wire += data_frames(0x1, b"end", 1)
        pos = 0
        while pos < len(wire):
            step = rng.choice([1, 2, 3, 7, 50, 500])
            await a.send_all(wire[pos : pos + step])
            pos += step
        got = [await ws.receive() for _ in expected]
        assert got == expected
        data = b""
        pongs: list[tuple[int, bytes]] = []
        while len(pongs) < pings:
            parsed = read_frame(data)
            if parsed is None:
                data += await a.receive_some()
                continue
            opcode, payload, data = parsed
            pongs.append((opcode, payload))
        assert [opcode for opcode, _ in pongs] == [0xA] * pings
        assert [payload[:1] for _, payload in pongs] == [b"p"] * pings
        assert ws.statistics().messages_received == len(expected)


async def test_frames_that_came_with_the_handshake_are_not_lost(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A client that sends frames right behind its upgrade request, in the same read (RFC 6455 §4.1 says
    # it should wait; wsproto's server side drops those bytes): the server parses them.
    with trio.fail_after(5):
        a, b = memory_pipe_pair()
        result: list[WebSocket | None] = []

        async def serve() -> None:
            result.append(await ws_server(b, pick(["ocpp2.0.1"]), compression=False))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            first = frame(0x1, b"first")
            await a.send_all(upgrade_request() + first[:5])  # and half a frame
            head, _ = await read_http_head(a)
        assert head.startswith("HTTP/1.1 101")
        ws = result[0]
        assert ws is not None
        await a.send_all(first[5:] + frame(0x1, b"second"))
        assert await ws.receive_text() == "first"
        assert await ws.receive_text() == "second"


@pytest.mark.parametrize("compression", [False, True])
@pytest.mark.parametrize("synchronous", [False, True])
async def test_send_text_nowait_and_flush(
    autojump_clock: trio.testing.MockClock, compression: bool, synchronous: bool
) -> None:
    # The session's synchronous path: frames keep their order with ordinary sends. Over an evsim stream
    # the bytes go straight into it; over a transport without a synchronous path they wait in the
    # out-buffer until flush().
    with trio.fail_after(5):
        streams = await (_pipes() if synchronous else _trio_memory_streams())
        client, server = await open_ok(
            streams=streams, client={"compression": compression}, server={"compression": compression}
        )
        assert isinstance(client, NowaitTextTransport)  # what the OCPP session looks for
        assert client.send_text_nowait("one") is synchronous
        await client.send_text("two")  # goes after "one"
        assert client.send_text_nowait("three") is synchronous
        await client.flush()
        assert [await server.receive_text() for _ in range(3)] == ["one", "two", "three"]
        assert client.statistics().messages_sent == 3
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.aclose)
            with pytest.raises(WebSocketClosed):
                await server.receive_text()
        with pytest.raises(WebSocketClosed):
            client.send_text_nowait("four")


async def test_close_reply_behind_a_ping_in_the_same_read(autojump_clock: trio.testing.MockClock) -> None:
    # While we wait for the reply to our close frame, the peer's ping, a last message and its close reply
    # arrive in one read: frames after the ping are still processed, so the close completes at once.
    with trio.fail_after(30):
        a, ws, _, _ = await raw_client(server_kwargs={"compression": False})
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ws.aclose, 4002, "bye")
            assert await receive_frame(a) == (0x8, struct.pack("!H", 4002) + b"bye")
            await a.send_all(
                frame(0x9, b"still there?") + frame(0x1, b"last words") + frame(0x8, struct.pack("!H", 4002))
            )
        assert trio.current_time() - start < 1  # not the 10 s close timeout
        assert ws.statistics().state == "closed"
