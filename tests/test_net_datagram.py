"""Datagrams: the in-memory network (latency, loss, partitions, bounded queues) and loopback UDP."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from evsim.errors import ConfigError, TransportError
from evsim.net import (
    MAX_DATAGRAM,
    DatagramNetwork,
    DatagramSocket,
    LinkPolicy,
    StreamClosed,
    TcpNetwork,
    VirtualNetwork,
)


async def test_virtual_datagrams_round_trip(autojump_clock: trio.testing.MockClock) -> None:
    net = VirtualNetwork()
    assert isinstance(net, DatagramNetwork)
    with trio.fail_after(10):
        server = await net.bind_datagram("ntp", 123)
        client = await net.bind_datagram("st-1", 0)
        assert isinstance(server, DatagramSocket) and client.local_address[0] == "st-1"
        await client.send_to(b"ping", ("ntp", 123))
        data, source = await server.receive_from()
        assert data == b"ping" and source == client.local_address
        await server.send_to(b"pong", source)
        assert (await client.receive_from())[0] == b"pong"
        assert client.statistics().sent == 1 and client.statistics().received == 1
        # the TCP namespace is separate
        listener = await net.listen("ntp", 123)
        await listener.aclose()


async def test_virtual_latency_and_order(autojump_clock: trio.testing.MockClock) -> None:
    net = VirtualNetwork()
    net.set_link_policy("a", "b", LinkPolicy(latency_s=0.5))
    with trio.fail_after(10):
        a, b = await net.bind_datagram("a", 1), await net.bind_datagram("b", 2)
        start = trio.current_time()
        for i in range(3):
            await a.send_to(bytes([i]), ("b", 2))
        got = [(await b.receive_from())[0] for _ in range(3)]
        assert got == [b"\0", b"\1", b"\2"]
        assert trio.current_time() - start == pytest.approx(0.5)


async def test_virtual_loss_is_seeded() -> None:
    async def lost(seed: int) -> int:
        net = VirtualNetwork(seed=seed, datagram_queue=2000)
        net.set_link_policy("a", "b", LinkPolicy(loss=0.3))
        a, _b = await net.bind_datagram("a", 1), await net.bind_datagram("b", 2)
        for _ in range(1000):
            await a.send_to(b"x", ("b", 2))
        return a.statistics().dropped.get("loss", 0)

    first = await lost(7)
    assert 200 < first < 400
    assert await lost(7) == first


async def test_virtual_drops_are_counted(autojump_clock: trio.testing.MockClock) -> None:
    net = VirtualNetwork(datagram_queue=2)
    a, b = await net.bind_datagram("a", 1), await net.bind_datagram("b", 2)
    await a.send_to(b"1", ("nobody", 9))
    for _ in range(3):
        await a.send_to(b"q", ("b", 2))
    net.partition("a", "b")
    await a.send_to(b"p", ("b", 2))
    net.heal("a", "b")
    net.set_host_down("b")
    await a.send_to(b"d", ("b", 2))
    net.set_host_down("b", False)
    assert a.statistics().dropped == {"no_listener": 1, "queue_full": 1, "partition": 1, "host_down": 1}
    assert (await b.receive_from())[0] == b"q"
    with pytest.raises(TransportError):
        await a.send_to(b"x" * (MAX_DATAGRAM + 1), ("b", 2))


async def test_virtual_close_wakes_the_receiver_and_frees_the_port(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = VirtualNetwork()
    sock = await net.bind_datagram("a", 5)
    with pytest.raises(ConfigError):
        await net.bind_datagram("a", 5)

    async def close_later() -> None:
        await trio.sleep(1)
        await sock.aclose()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(close_later)
            with pytest.raises(StreamClosed):
                await sock.receive_from()
    with pytest.raises(StreamClosed):
        await sock.send_to(b"x", ("a", 5))
    await (await net.bind_datagram("a", 5)).aclose()


async def test_loopback_udp_round_trip() -> None:
    net = TcpNetwork(resolve={"ntp.evsim.test": "127.0.0.1"})
    assert isinstance(net, DatagramNetwork)
    with trio.fail_after(10):
        server = await net.bind_datagram("ntp.evsim.test", 0)
        client = await net.bind_datagram("127.0.0.1", 0)
        assert isinstance(server, DatagramSocket)
        await client.send_to(b"ping", ("ntp.evsim.test", server.local_address[1]))
        data, source = await server.receive_from()
        assert data == b"ping" and source == client.local_address
        await server.send_to(b"pong", source)
        assert (await client.receive_from())[0] == b"pong"
        assert server.statistics().received == 1 and client.statistics().bytes_sent == 4
        with pytest.raises(ConfigError):
            await client.send_to(b"x", ("192.0.2.1", 123))
        with pytest.raises(ConfigError):
            await net.bind_datagram("192.0.2.1", 0)
        with pytest.raises(ConfigError):
            await net.bind_datagram("127.0.0.1", server.local_address[1])
        with pytest.raises(TransportError):
            await client.send_to(b"x" * (MAX_DATAGRAM + 1), server.local_address)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.aclose)
            with pytest.raises(StreamClosed):
                await server.receive_from()
        await client.aclose()
        with pytest.raises(StreamClosed):
            await client.send_to(b"x", ("127.0.0.1", 9))
