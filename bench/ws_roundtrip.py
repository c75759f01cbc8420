"""Round-trip cost of one small text message over evsim's WebSocket loop, against trio-websocket.

A client sends an OCPP-sized text frame, the server echoes it, the client reads the echo; both ends run
in one trio process on the real clock; the figure is process CPU time (both ends) per round trip in µs,
best of a few repeats, so load from other processes barely moves it.
Rows: ``(name, value, unit)``. Run ``python -m bench.ws_roundtrip`` for a table.

Compare ratios from one run only (performance.md: shared machines are noisy). trio-websocket comes with the
``bench`` extra (``pip install -e '.[dev,bench]'``, what ``make`` installs); without it its rows are left out.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Awaitable, Callable
from functools import partial

import trio
import trio.testing

from evsim.net import VirtualNetwork
from evsim.ws import Accept, ws_client, ws_server

# A Heartbeat CALLRESULT-sized frame (protocol-digest §1.2); 94 bytes.
MESSAGE = '[3,"9f3c2a51-6a3e-4a7f-b1f3-0d0c7d5e9a11",{"currentTime":"2025-01-01T00:00:00.000Z"}]'
ROUNDS = 3000
WARMUP = 200
REPEATS = 5


StreamPair = tuple[trio.abc.Stream, trio.abc.Stream]


async def _virtual_pair() -> StreamPair:
    net = VirtualNetwork()
    listener = await net.listen("csms", 8080)
    client = await net.connect("csms", 8080, source="st-1")
    return client, await listener.accept()


async def _memory_stream_pair() -> StreamPair:
    return trio.testing.memory_stream_pair()


TRANSPORTS: dict[str, Callable[[], Awaitable[StreamPair]]] = {
    "VirtualNetwork": _virtual_pair,
    "memory_stream_pair": _memory_stream_pair,
}


async def _time_rounds(
    send: Callable[[str], Awaitable[None]], receive: Callable[[], Awaitable[str]]
) -> float:
    for _ in range(WARMUP):
        await send(MESSAGE)
        await receive()
    best = float("inf")
    for _ in range(REPEATS):
        start = time.process_time()
        for _ in range(ROUNDS):
            await send(MESSAGE)
            await receive()
        best = min(best, (time.process_time() - start) / ROUNDS)
    return best * 1e6


async def _bare_stream(transport: str) -> float:
    """The floor: the same echo with no WebSocket (one send_all and one receive_some per message)."""
    client, server = await TRANSPORTS[transport]()
    async with trio.open_nursery() as nursery:

        async def echo() -> None:
            while True:
                await server.send_all(await server.receive_some())

        nursery.start_soon(echo)

        async def send(text: str) -> None:
            await client.send_all(text.encode())

        async def receive() -> str:
            return bytes(await client.receive_some()).decode()

        result = await _time_rounds(send, receive)
        nursery.cancel_scope.cancel()
    return result


async def _evsim(transport: str, compression: bool) -> float:
    client_stream, server_stream = await TRANSPORTS[transport]()
    async with trio.open_nursery() as nursery:

        async def echo() -> None:
            ws = await ws_server(server_stream, lambda r: Accept(r.subprotocols[0]), compression=compression)
            assert ws is not None
            while True:
                await ws.send_text(await ws.receive_text())

        nursery.start_soon(echo)
        client = await ws_client(
            client_stream,
            host="csms",
            path="/ocpp/st-1",
            subprotocols=["ocpp2.0.1"],
            compression=compression,
        )
        assert client.compressed == compression
        result = await _time_rounds(client.send_text, client.receive_text)
        nursery.cancel_scope.cancel()
    return result


async def _trio_websocket(transport: str) -> float:
    import trio_websocket  # the comparison only; evsim itself never imports it

    client_stream, server_stream = await TRANSPORTS[transport]()
    async with trio.open_nursery() as nursery:

        async def echo() -> None:
            request = await trio_websocket.wrap_server_stream(nursery, server_stream)
            ws = await request.accept(subprotocol="ocpp2.0.1")
            while True:
                await ws.send_message(await ws.get_message())

        nursery.start_soon(echo)
        client = await trio_websocket.wrap_client_stream(
            nursery,
            client_stream,  # type: ignore[arg-type]  # any trio Stream works; the hint is too narrow
            "csms",
            "/ocpp/st-1",
            subprotocols=["ocpp2.0.1"],
        )

        async def receive() -> str:
            message = await client.get_message()
            assert isinstance(message, str)
            return message

        result = await _time_rounds(client.send_message, receive)
        nursery.cancel_scope.cancel()
    return result


def run() -> list[tuple[str, float, str]]:
    """Measure; returns ``(name, CPU µs per round trip, "us")`` rows."""
    cases: list[tuple[str, Callable[[], Awaitable[float]]]] = []
    compare = importlib.util.find_spec("trio_websocket") is not None
    for transport in TRANSPORTS:
        cases += [
            (f"round trip, no WebSocket (floor), {transport}", partial(_bare_stream, transport)),
            (f"ws round trip, evsim, {transport}", partial(_evsim, transport, False)),
            (f"ws round trip, evsim + permessage-deflate, {transport}", partial(_evsim, transport, True)),
        ]
        if compare:
            cases.append(
                (f"ws round trip, trio-websocket 0.12, {transport}", partial(_trio_websocket, transport))
            )
    return [(name, trio.run(case), "us") for name, case in cases]


if __name__ == "__main__":
    for name, value, unit in run():
        print(f"{name:60s} {value:8.1f} {unit}")
