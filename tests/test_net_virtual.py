"""VirtualNetwork and its in-memory pipes: trio's generic stream checks, back-pressure, faults, latency."""

from __future__ import annotations

from functools import partial

import pytest
import trio
import trio.testing

from evsim.errors import BrokenTransport, ClosedTransport, ConfigError, ConnectionRefused
from evsim.net import (
    LinkPolicy,
    Network,
    StreamBroken,
    StreamClosed,
    VirtualNetwork,
    VirtualStream,
    memory_pipe_pair,
)


async def _clog(a: VirtualStream, b: VirtualStream, size: int) -> tuple[VirtualStream, VirtualStream]:
    await a.send_all(b"x" * size)
    await b.send_all(b"x" * size)
    return a, b


async def test_pipe_pair_passes_trio_stream_checks(autojump_clock: trio.testing.MockClock) -> None:
    async def maker() -> tuple[VirtualStream, VirtualStream]:
        return memory_pipe_pair()

    async def clogged() -> tuple[VirtualStream, VirtualStream]:
        return await _clog(*memory_pipe_pair(buffer_size=16), 16)

    with trio.fail_after(60):
        await trio.testing.check_half_closeable_stream(maker, clogged)


async def test_pipe_pair_with_latency_passes_trio_stream_checks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def maker() -> tuple[VirtualStream, VirtualStream]:
        return memory_pipe_pair(latency_s=0.01)

    async def clogged() -> tuple[VirtualStream, VirtualStream]:
        return await _clog(*memory_pipe_pair(buffer_size=16, latency_s=0.01), 16)

    with trio.fail_after(600):
        await trio.testing.check_half_closeable_stream(maker, clogged)


async def test_network_streams_pass_trio_stream_checks(autojump_clock: trio.testing.MockClock) -> None:
    net = VirtualNetwork(buffer_size=1024)
    listener = await net.listen("csms", 0)
    port = listener.address[1]

    async def maker() -> tuple[trio.abc.HalfCloseableStream, trio.abc.HalfCloseableStream]:
        client = await net.connect("csms", port, source="st-1")
        return client, await listener.accept()

    async def clogged() -> tuple[trio.abc.HalfCloseableStream, trio.abc.HalfCloseableStream]:
        client = await net.connect("csms", port, source="st-1")
        return await _clog(client, await listener.accept(), 1024)

    with trio.fail_after(60):
        await trio.testing.check_half_closeable_stream(maker, clogged)
    stats = net.statistics()
    assert stats.open_streams == 0
    assert stats.connects > 10
    assert stats.bytes_sent >= stats.bytes_received > 2**20
    await listener.aclose()
    assert net._links == {}  # every connection was forgotten once both ends closed


def test_virtual_network_is_a_network() -> None:
    assert isinstance(VirtualNetwork(), Network)


async def test_connect_refused_when_nothing_listens(autojump_clock: trio.testing.MockClock) -> None:
    net = VirtualNetwork()
    with trio.fail_after(5):
        with pytest.raises(ConnectionRefused, match="nothing listens"):
            await net.connect("csms", 443)
        listener = await net.listen("csms", 443)
        await listener.aclose()
        with pytest.raises(ConnectionRefused):
            await net.connect("csms", 443)
        with pytest.raises(ConnectionRefused):
            await net.connect("other-host", 443)
    assert net.statistics().refused == 3


async def test_listen_port_zero_and_address_in_use(autojump_clock: trio.testing.MockClock) -> None:
    net = VirtualNetwork()
    with trio.fail_after(5):
        a = await net.listen("csms", 0)
        b = await net.listen("csms", 0)
        assert a.address[0] == "csms"
        assert a.address[1] != b.address[1]
        assert 49152 <= a.address[1] <= 65535
        with pytest.raises(ConfigError, match="already in use"):
            await net.listen("csms", a.address[1])
        await net.listen("other", a.address[1])  # same port, other host: fine
        with pytest.raises(ConfigError):
            await net.listen("csms", 70000)
        assert net.statistics().listeners == 3


async def test_full_backlog_makes_connect_wait_then_time_out(autojump_clock: trio.testing.MockClock) -> None:
    net = VirtualNetwork(backlog=2, connect_timeout=127)
    listener = await net.listen("csms", 80)
    with trio.fail_after(500):
        await net.connect("csms", 80)
        c2 = await net.connect("csms", 80)
        start = trio.current_time()
        with pytest.raises(ConnectionRefused, match="backlog"):
            await net.connect("csms", 80)
        assert trio.current_time() - start == pytest.approx(127)
        async with trio.open_nursery() as nursery:

            async def third() -> None:
                stream = await net.connect("csms", 80)
                await stream.send_all(b"3rd")

            nursery.start_soon(third)
            await trio.testing.wait_all_tasks_blocked()
            await trio.sleep(10)
            await listener.accept()  # takes the first: room for the waiting connect
        assert net.statistics().connects == 3
        await listener.aclose()  # queued, never-accepted connections are reset
        with pytest.raises(StreamBroken, match="before accepting"):
            await c2.receive_some()
        with pytest.raises(StreamClosed):
            await listener.accept()


async def test_storm_beyond_the_backlog_queues_instead_of_failing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = VirtualNetwork(backlog=16)
    listener = await net.listen("csms", 443)
    accepted: list[trio.abc.Stream] = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:

            async def slow_acceptor() -> None:
                while len(accepted) < 200:
                    accepted.append(await listener.accept())
                    await trio.sleep(0.01)

            nursery.start_soon(slow_acceptor)
            for i in range(200):
                nursery.start_soon(partial(net.connect, "csms", 443, source=f"st-{i}"))
    assert net.statistics().connects == 200
    assert net.statistics().refused == 0


async def test_connects_waiting_for_room_are_refused_by_a_partition(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = VirtualNetwork(backlog=1)
    listener = await net.listen("csms", 443)
    with trio.fail_after(60):
        await net.connect("csms", 443, source="st-0")
        async with trio.open_nursery() as nursery:

            async def blocked(name: str) -> None:
                with pytest.raises(ConnectionRefused, match="partitioned"):
                    await net.connect("csms", 443, source=name)

            async def lucky() -> None:
                await net.connect("csms", 443, source="st-2")

            nursery.start_soon(blocked, "st-1")
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(lucky)
            await trio.testing.wait_all_tasks_blocked()
            net.partition("st-1", "csms")
            await listener.accept()  # the room goes to st-1, which is refused and passes it on
    assert net.statistics().connects == 2


async def test_accept_waits_and_wakes_on_close(autojump_clock: trio.testing.MockClock) -> None:
    net = VirtualNetwork()
    listener = await net.listen("csms", 80)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:

            async def expect_closed() -> None:
                with pytest.raises(StreamClosed):
                    await listener.accept()

            nursery.start_soon(expect_closed)
            await trio.testing.wait_all_tasks_blocked()
            await listener.aclose()


async def test_back_pressure_blocks_sender_until_reader_reads(autojump_clock: trio.testing.MockClock) -> None:
    a, b = memory_pipe_pair(buffer_size=10)
    done = trio.Event()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:

            async def sender() -> None:
                await a.send_all(b"0123456789abcdefghijklmno")  # 25 bytes into a 10-byte pipe
                done.set()

            nursery.start_soon(sender)
            await trio.testing.wait_all_tasks_blocked()
            assert not done.is_set()
            assert await b.receive_some(4) == b"0123"
            await trio.testing.wait_all_tasks_blocked()
            assert not done.is_set()  # 4 more bytes fit, 11 are still waiting
            got = bytearray(b"0123")
            while len(got) < 25:
                got += await b.receive_some()
            await done.wait()
            assert bytes(got) == b"0123456789abcdefghijklmno"


async def test_close_delivers_then_eof_and_peer_send_breaks(autojump_clock: trio.testing.MockClock) -> None:
    a, b = memory_pipe_pair()
    with trio.fail_after(5):
        await a.send_all(b"last words")
        await a.aclose()
        assert await b.receive_some() == b"last words"
        assert await b.receive_some() == b""
        with pytest.raises(StreamBroken) as info:
            await b.send_all(b"anyone?")
        assert isinstance(info.value, BrokenTransport)
        assert isinstance(info.value, trio.BrokenResourceError)
        with pytest.raises(StreamClosed) as closed:
            await a.receive_some()
        assert isinstance(closed.value, ClosedTransport)
        assert isinstance(closed.value, trio.ClosedResourceError)
    assert a.statistics().closed
    assert a.statistics().bytes_sent == 10
    assert b.statistics().bytes_received == 10


async def test_concurrent_receives_are_busy(autojump_clock: trio.testing.MockClock) -> None:
    a, _b = memory_pipe_pair()
    with trio.fail_after(5):
        with pytest.RaisesGroup(trio.BusyResourceError):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(a.receive_some)
                nursery.start_soon(a.receive_some)


async def _connected(
    net: VirtualNetwork, source: str, port: int = 443
) -> tuple[VirtualStream, VirtualStream]:
    listener = net._listeners["csms", port]
    client = await net.connect("csms", port, source=source)
    server = await listener.accept()
    assert isinstance(server, VirtualStream)
    return client, server


async def test_partition_breaks_existing_refuses_new_and_heal_restores(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = VirtualNetwork()
    await net.listen("csms", 443)
    with trio.fail_after(5):
        c1, s1 = await _connected(net, "st-1")
        c2, s2 = await _connected(net, "st-2")
        async with trio.open_nursery() as nursery:

            async def parked_reader() -> None:
                with pytest.raises(StreamBroken, match="partition"):
                    await s1.receive_some()

            nursery.start_soon(parked_reader)
            await trio.testing.wait_all_tasks_blocked()
            net.partition("csms", "st-1")
        with pytest.raises(StreamBroken):
            await c1.send_all(b"x")
        with pytest.raises(BrokenTransport):
            await c1.receive_some()
        with pytest.raises(ConnectionRefused, match="partitioned"):
            await net.connect("csms", 443, source="st-1")
        # the other station is unaffected
        await c2.send_all(b"ok")
        assert await s2.receive_some() == b"ok"
        net.heal("st-1", "csms")
        c3, s3 = await _connected(net, "st-1")
        await c3.send_all(b"back")
        assert await s3.receive_some() == b"back"
        with pytest.raises(StreamBroken):  # healing does not revive a reset connection
            await c1.send_all(b"x")
    assert net.statistics().broken_links == 1


async def test_host_down_breaks_its_streams_and_refuses_both_ways(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = VirtualNetwork()
    await net.listen("csms", 443)
    await net.listen("st-1", 80)
    with trio.fail_after(5):
        c1, s1 = await _connected(net, "st-1")
        c2, s2 = await _connected(net, "st-2")
        net.set_host_down("csms")
        assert net.is_host_down("csms")
        for stream in (c1, s1, c2, s2):
            with pytest.raises(StreamBroken, match="down"):
                await stream.send_all(b"x")
        with pytest.raises(ConnectionRefused, match="down"):
            await net.connect("csms", 443, source="st-3")
        net.set_host_down("st-1")
        with pytest.raises(ConnectionRefused, match="down"):
            await net.connect("st-1", 80, source="st-9")
        net.set_host_down("csms", down=False)
        with pytest.raises(ConnectionRefused, match="st-1 is down"):
            await net.connect("csms", 443, source="st-1")
        c3, s3 = await _connected(net, "st-2")
        await s3.send_all(b"up again")
        assert await c3.receive_some() == b"up again"


async def test_latency_delays_delivery_in_virtual_time(autojump_clock: trio.testing.MockClock) -> None:
    net = VirtualNetwork()
    net.set_link_policy("st-1", "csms", LinkPolicy(latency_s=0.25))
    await net.listen("csms", 443)
    with trio.fail_after(5):
        client, server = await _connected(net, "st-1")
        start = trio.current_time()
        await client.send_all(b"ping")
        await client.send_eof()
        assert await server.receive_some() == b"ping"
        assert trio.current_time() - start == pytest.approx(0.25)
        assert await server.receive_some() == b""  # EOF stays behind the data
        other, other_server = await _connected(net, "st-2")
        start = trio.current_time()
        await other.send_all(b"fast")
        assert await other_server.receive_some() == b"fast"
        assert trio.current_time() == start
        net.set_link_policy("st-1", "csms", LinkPolicy())
        await server.send_all(b"now")
        assert await client.receive_some() == b"now"
        assert trio.current_time() - start == 0


def test_link_policy_rejects_negative_latency() -> None:
    with pytest.raises(ConfigError, match="latency"):
        LinkPolicy(latency_s=-1.0)
    with pytest.raises(ConfigError):
        VirtualNetwork(buffer_size=0)


async def test_thousands_of_connections_are_cheap_and_forgotten(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = VirtualNetwork()
    listener = await net.listen("csms", 443)
    with trio.fail_after(30):
        clients = [await net.connect("csms", 443, source=f"st-{i:04d}") for i in range(2000)]
        servers = [await listener.accept() for _ in clients]
        assert net.statistics().open_streams == 4000
        for c in clients:
            await c.send_all(b"BootNotification")
        for s in servers:
            assert await s.receive_some() == b"BootNotification"
        for stream in clients + servers:
            await stream.aclose()
    assert net.statistics().open_streams == 0
    assert net._links == {}


async def test_send_nowait_backlog_is_ordered_and_survives_a_cancelled_send() -> None:
    # What does not fit into the pipe waits in the stream, in order; a send cancelled while it waits
    # keeps its bytes there; send_all(b"") flushes.
    a, b = memory_pipe_pair(buffer_size=100)
    with trio.fail_after(5):
        assert a.send_nowait(b"x" * 60) is True
        assert a.send_nowait(b"y" * 60) is False  # 40 fit, 20 wait
        assert a.send_nowait(b"z") is False  # behind them
        async with trio.open_nursery() as nursery:
            waiting = trio.CancelScope()

            async def send_tail() -> None:
                with waiting:
                    await a.send_all(b"tail")

            nursery.start_soon(send_tail)
            await trio.testing.wait_all_tasks_blocked()
            waiting.cancel()
        assert waiting.cancelled_caught
        received = bytearray()

        async def read_all() -> None:
            while len(received) < 125:
                received.extend(await b.receive_some())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_all)
            await a.send_all(b"")
        assert bytes(received) == b"x" * 60 + b"y" * 60 + b"z" + b"tail"
        assert a.statistics().bytes_sent == 125
        await a.send_eof()
        assert await b.receive_some() == b""
        with pytest.raises(trio.ClosedResourceError):
            a.send_nowait(b"more")
