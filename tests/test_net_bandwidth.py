"""Bandwidth on the in-memory network: a rate per direction shared by the connections between two hosts, in
virtual time (pipes first, then the network, then an HTTPS download over evsim's TLS)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from evsim.errors import ConfigError
from evsim.net import LinkPolicy, VirtualNetwork, VirtualStream, memory_pipe_pair

RATE = 100_000.0  # bytes per second
SIZE = 1_000_000  # bytes: 10 s at RATE


async def _clog(a: VirtualStream, b: VirtualStream, size: int) -> tuple[VirtualStream, VirtualStream]:
    await a.send_all(b"x" * size)
    await b.send_all(b"x" * size)
    return a, b


async def test_rate_limited_pipes_pass_trio_stream_checks(autojump_clock: trio.testing.MockClock) -> None:
    async def maker() -> tuple[VirtualStream, VirtualStream]:
        return memory_pipe_pair(bytes_per_s=1e6)

    async def clogged() -> tuple[VirtualStream, VirtualStream]:
        return await _clog(*memory_pipe_pair(buffer_size=16, bytes_per_s=1e6), 16)

    with trio.fail_after(600):
        await trio.testing.check_half_closeable_stream(maker, clogged)


async def _send(stream: VirtualStream, size: int, chunk: int = 50_000) -> None:
    sent = 0
    while sent < size:
        n = min(chunk, size - sent)
        await stream.send_all(b"\x00" * n)
        sent += n
    await stream.send_eof()


async def _drain(stream: VirtualStream, done: dict[str, float], key: str) -> int:
    total = 0
    while data := await stream.receive_some(65536):
        total += len(data)
    done[key] = trio.current_time()
    return total


async def test_n_bytes_at_b_bytes_per_second_take_n_over_b_seconds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    left, right = memory_pipe_pair(bytes_per_s=RATE, latency_s=0.05)
    done: dict[str, float] = {}
    start = trio.current_time()
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_send, left, SIZE)
            nursery.start_soon(_drain, right, done, "right")
    assert done["right"] - start == pytest.approx(SIZE / RATE + 0.05)


async def _connected(net: VirtualNetwork, source: str, host: str) -> tuple[VirtualStream, VirtualStream]:
    listener = await net.listen(host, 0)
    client = await net.connect(host, listener.address[1], source=source)
    server = await listener.accept()
    assert isinstance(server, VirtualStream)
    return client, server


async def test_two_flows_between_the_same_hosts_share_the_rate_and_other_hosts_do_not(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = VirtualNetwork()
    net.set_link_policy("station", "mirror", LinkPolicy(bytes_per_s=RATE))
    flows = [await _connected(net, "station", "mirror") for _ in range(2)]
    upload = await _connected(net, "station", "mirror")  # station -> mirror has its own rate
    elsewhere = await _connected(net, "other", "mirror")  # no policy: unlimited
    done: dict[str, float] = {}
    start = trio.current_time()
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            for i, (client, server) in enumerate(flows):
                nursery.start_soon(_send, server, SIZE)  # downloads from the mirror
                nursery.start_soon(_drain, client, done, f"flow{i}")
            nursery.start_soon(_send, upload[0], SIZE)
            nursery.start_soon(_drain, upload[1], done, "upload")
            nursery.start_soon(_send, elsewhere[0], SIZE)
            nursery.start_soon(_drain, elsewhere[1], done, "elsewhere")
    both = 2 * SIZE / RATE
    for key in ("flow0", "flow1"):  # each got about half the rate all along
        assert both * 0.95 <= done[key] - start <= both + 1e-6
    assert done["upload"] - start == pytest.approx(SIZE / RATE)
    assert done["elsewhere"] == start


async def test_a_new_rate_applies_to_bytes_written_from_then_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = VirtualNetwork()
    net.set_link_policy("station", "mirror", LinkPolicy(latency_s=0.1, bytes_per_s=RATE))
    client, server = await _connected(net, "station", "mirror")
    done: dict[str, float] = {}
    start = trio.current_time()

    async def faster_at_5s() -> None:
        await trio.sleep(5)
        net.set_link_policy("station", "mirror", LinkPolicy(latency_s=0.1, bytes_per_s=4 * RATE))

    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_send, server, SIZE)
            nursery.start_soon(_drain, client, done, "client")
            nursery.start_soon(faster_at_5s)
    assert net.link_policy("mirror", "station") == LinkPolicy(latency_s=0.1, bytes_per_s=4 * RATE)
    # about half at the old rate by 5 s (what was scheduled keeps its time), the rest four times faster
    expected = 5 + (SIZE - 5 * RATE) / (4 * RATE) + 0.1
    assert expected - 0.2 <= done["client"] - start <= expected + 65536 / RATE


async def test_removing_the_rate_keeps_the_bytes_in_flight_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = VirtualNetwork()
    net.set_link_policy("a", "b", LinkPolicy(bytes_per_s=1000.0))
    client, server = await _connected(net, "a", "b")
    with trio.fail_after(60):
        await client.send_all(b"1" * 3000)
        net.set_link_policy("a", "b", LinkPolicy())
        await client.send_all(b"2" * 10)
        await client.send_eof()
        received = bytearray()
        while data := await server.receive_some():
            received += data
    assert bytes(received) == b"1" * 3000 + b"2" * 10


@pytest.mark.parametrize("rate", [-1.0, float("inf"), float("nan")])
def test_link_policy_refuses_a_bad_rate(rate: float) -> None:
    with pytest.raises(ConfigError, match="bytes_per_s"):
        LinkPolicy(bytes_per_s=rate)
