"""Hypothesis: whatever bytes a peer sends, evsim.ws raises nothing but evsim errors."""

from __future__ import annotations

import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from evsim.errors import EvsimError
from evsim.net import VirtualStream, memory_pipe_pair
from evsim.ws import Accept, Reject, UpgradeRequest, ws_client, ws_server

VALID_LINES = [
    b"Host: csms\r\n",
    b"Upgrade: websocket\r\n",
    b"Connection: Upgrade\r\n",
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
    b"Sec-WebSocket-Version: 13\r\n",
    b"Sec-WebSocket-Protocol: ocpp2.0.1, ocpp2.1\r\n",
    b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
    b"Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=8\r\n",
    b"Authorization: Basic Q1MxOnB3\r\n",
]
VALID_REQUEST = b"GET /ocpp/CS1 HTTP/1.1\r\n" + b"".join(VALID_LINES[:6]) + b"\r\n"

# mostly-valid requests with junk mixed in reach deeper than uniformly random bytes
near_requests = st.lists(
    st.one_of(st.sampled_from(VALID_LINES), st.binary(max_size=30), st.text(max_size=20).map(str.encode)),
    max_size=12,
).map(lambda parts: b"GET /ocpp/CS1 HTTP/1.1\r\n" + b"".join(parts) + b"\r\n")
requests = st.one_of(st.binary(max_size=600), near_requests)


def decide_for(reject: bool) -> object:
    def decide(request: UpgradeRequest) -> Accept | Reject:
        if reject:
            return Reject(404, "unknown station")
        return Accept(request.subprotocols[0] if request.subprotocols else None)

    return decide


async def _drain(stream: VirtualStream) -> bytes:
    data = b""
    try:
        while chunk := await stream.receive_some():
            data += chunk
    except EvsimError:
        pass
    return data


async def _serve_and_read(server_end: VirtualStream, reject: bool) -> None:
    try:
        ws = await ws_server(server_end, decide_for(reject))  # type: ignore[arg-type]
        if ws is not None:
            while True:
                await ws.receive()
    except EvsimError:
        pass


@given(data=requests, reject=st.booleans())
def test_arbitrary_upgrade_request_bytes(data: bytes, reject: bool) -> None:
    async def main() -> None:
        client_end, server_end = memory_pipe_pair()
        with trio.fail_after(100):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_serve_and_read, server_end, reject)
                await client_end.send_all(data)
                await client_end.send_eof()
                await _drain(client_end)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


@given(frames=st.binary(max_size=600), compression=st.booleans())
def test_arbitrary_frames_after_the_handshake(frames: bytes, compression: bool) -> None:
    extension = b"Sec-WebSocket-Extensions: permessage-deflate\r\n" if compression else b""

    async def main() -> None:
        client_end, server_end = memory_pipe_pair()
        with trio.fail_after(100):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_serve_and_read, server_end, False)
                await client_end.send_all(VALID_REQUEST[:-2] + extension + b"\r\n")
                head = b""
                while b"\r\n\r\n" not in head:
                    head += await client_end.receive_some()
                assert head.startswith(b"HTTP/1.1 101")
                await client_end.send_all(frames)
                await client_end.send_eof()
                await _drain(client_end)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


@given(response=st.one_of(st.binary(max_size=400), st.sampled_from([b"HTTP/1.1 101 OK\r\n\r\n"])))
def test_arbitrary_upgrade_response_bytes(response: bytes) -> None:
    async def main() -> None:
        client_end, server_end = memory_pipe_pair()
        with trio.fail_after(100):
            async with trio.open_nursery() as nursery:

                async def server() -> None:
                    await server_end.receive_some()
                    await server_end.send_all(response)
                    await server_end.aclose()

                nursery.start_soon(server)
                try:
                    ws = await ws_client(client_end, host="csms", path="/", subprotocols=["ocpp2.0.1"])
                    await ws.receive()
                except EvsimError:
                    pass

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
