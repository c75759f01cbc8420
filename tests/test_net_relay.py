"""The fault relay: its fault table (sans-IO), the relay over the in-memory network (virtual time), and once over
loopback TCP (resets are real RSTs)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from bench.relay import echo
from evsim.errors import ConnectionRefused
from evsim.net.base import FaultyNetwork, NetListener, Network, NetworkStatistics
from evsim.net.faults import FaultTable
from evsim.net.relay import FaultRelay, RelayedNetwork
from evsim.net.tcp import TcpNetwork
from evsim.net.virtual import LinkPolicy, VirtualNetwork, VirtualStream

# ---------------------------------------------------------------------------- the fault table (sans-IO)

HOSTS = ("st1", "st2", "csms")
_op = st.tuples(
    st.sampled_from(["partition", "heal", "down", "up"]), st.sampled_from(HOSTS), st.sampled_from(HOSTS)
)


def _apply(net: FaultyNetwork | FaultTable, op: tuple[str, str, str]) -> None:
    kind, a, b = op
    if kind == "partition":
        net.partition(a, b)
    elif kind == "heal":
        net.heal(a, b)
    else:
        net.set_host_down(a, kind == "down")


@given(st.lists(_op, max_size=8))
def test_the_table_refuses_exactly_what_the_in_memory_network_refuses(
    ops: list[tuple[str, str, str]],
) -> None:
    """Same faults, same verdict and the same words, for every pair of hosts."""
    table = FaultTable()
    for op in ops:
        _apply(table, op)

    async def verdicts() -> dict[tuple[str, str], str | None]:
        net = VirtualNetwork()
        for host in HOSTS:
            await net.listen(host, 443)
        for op in ops:
            _apply(net, op)
        out: dict[tuple[str, str], str | None] = {}
        for src in HOSTS:
            for dst in HOSTS:
                try:
                    stream = await net.connect(dst, 443, source=src)
                except ConnectionRefused as exc:
                    out[src, dst] = str(exc).split(" refused: ", 1)[1]
                else:
                    await stream.aclose()
                    out[src, dst] = None
        return out

    expected = trio.run(verdicts)
    assert {(s, d): table.refusal(s, d) for s in HOSTS for d in HOSTS} == expected


def test_faults_name_the_connections_they_break() -> None:
    table = FaultTable()
    cut = table.partition("st1", "csms")
    assert cut("st1", "csms") and cut("csms", "st1") and not cut("st2", "csms")
    down = table.set_host_down("csms")
    assert down("st2", "csms") and down("csms", "x") and not down("st1", "st2")
    assert not table.set_host_down("csms", False)("st2", "csms")  # coming back breaks nothing
    table.heal("st1", "csms")
    assert table.refusal("st1", "csms") is None


def test_latency_and_stalls_per_pair() -> None:
    table = FaultTable()
    table.set_link_policy("csms", "st1", LinkPolicy(latency_s=0.03))
    assert table.latency("st1", "csms") == 0.03 and table.latency("st2", "csms") == 0.0
    table.set_link_policy("st1", "csms", LinkPolicy())
    assert table.latency("st1", "csms") == 0.0
    table.hold("st1", "csms", until=10.0)
    table.hold("csms", "st1", until=5.0)  # an overlapping shorter stall does not shorten it
    assert table.held_until("st1", "csms", now=4.0) == 10.0
    assert table.held_until("st2", "csms", now=4.0) is None
    assert table.held_until("st1", "csms", now=10.0) is None  # over, and forgotten


# ---------------------------------------------------------------------------- the relay in memory


async def _read(stream: trio.abc.Stream, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = await stream.receive_some()
        if not chunk:
            break
        data += chunk
    return data


async def _ended(stream: trio.abc.Stream) -> bool:
    """True when the stream's next read shows it ended (end of stream or reset)."""
    try:
        return await stream.receive_some() == b""
    except trio.BrokenResourceError:
        return True


@asynccontextmanager
async def _relayed(
    inner: Network, server: str, **options: object
) -> AsyncIterator[tuple[RelayedNetwork, int]]:
    """A relay over ``inner`` and an echo server on host ``server``; yields the relayed network and the server's port."""
    events: list[tuple[str, dict[str, object]]] = []
    relay = FaultRelay(inner, on_event=lambda kind, **f: events.append((kind, f)), **options)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        await nursery.start(relay.run)
        listener = await inner.listen(server, 0)
        nursery.start_soon(trio.serve_listeners, echo, [listener])
        net = RelayedNetwork(relay)
        net.events = events  # type: ignore[attr-defined]
        yield net, listener.address[1]
        nursery.cancel_scope.cancel()


async def test_bytes_pass_both_ways_through_one_relay_port_per_source(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        async with _relayed(VirtualNetwork(), "csms", host="relay") as (net, port):
            a = await net.connect("csms", port, source="st1")
            b = await net.connect("csms", port, source="st2")
            again = await net.connect("csms", port, source="st1")
            assert isinstance(a, VirtualStream) and isinstance(b, VirtualStream)
            for stream, text in ((a, b"hello"), (b, b"world"), (again, b"x" * 100_000)):
                await stream.send_all(text)
                assert await _read(stream, len(text)) == text
            routes = net.relay.routes()
            assert set(routes) == {("st1", "csms", port), ("st2", "csms", port)}
            assert len(set(routes.values())) == 2 and all(addr[0] == "relay" for addr in routes.values())
            assert a.statistics().remote == routes["st1", "csms", port]  # st1 really went through its port
            stats = net.relay.statistics()
            assert (stats.routes, stats.open_connections, stats.relayed) == (2, 3, 3)
            await b.send_eof()  # a half-close reaches the server, whose close comes back
            assert await _ended(b)


async def test_a_partition_resets_the_pairs_connections_and_refuses_new_ones_until_healed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        async with _relayed(VirtualNetwork(), "csms", host="relay") as (net, port):
            cut = await net.connect("csms", port, source="st1")
            other = await net.connect("csms", port, source="st2")
            net.partition("st1", "csms")
            assert await _ended(cut)
            with pytest.raises(ConnectionRefused, match="st1 and csms are partitioned"):
                await net.connect("csms", port, source="st1")
            await other.send_all(b"still here")  # another pair is untouched
            assert await _read(other, 10) == b"still here"
            net.heal("st1", "csms")
            healed = await net.connect("csms", port, source="st1")
            await healed.send_all(b"back")
            assert await _read(healed, 4) == b"back"
            stats = net.relay.statistics()
            assert (stats.resets, stats.refused) == (1, 1)
            assert net.statistics().broken_links == 1
            assert ("relay_reset", {"fault": "partition st1 csms", "connections": 1}) in net.events  # type: ignore[attr-defined]


async def test_a_host_down_resets_everything_it_carries(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(60):
        async with _relayed(VirtualNetwork(), "csms", host="relay") as (net, port):
            streams = [await net.connect("csms", port, source=s) for s in ("st1", "st2")]
            net.set_host_down("csms")
            assert net.is_host_down("csms")
            assert [await _ended(s) for s in streams] == [True, True]
            with pytest.raises(ConnectionRefused, match="host csms is down"):
                await net.connect("csms", port, source="st1")
            net.set_host_down("csms", down=False)
            await (await net.connect("csms", port, source="st1")).send_all(b"up")


async def test_a_destination_that_does_not_listen_is_refused_at_connect(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        async with _relayed(VirtualNetwork(), "csms", host="relay") as (net, port):
            with pytest.raises(ConnectionRefused, match="nothing listens"):
                await net.connect("csms", port + 1, source="st1")
            assert net.relay.statistics().unreachable == 1


class _GatedNetwork:
    """A virtual network whose connects to ``csms`` wait at a gate (to start a fault while the relay connects)."""

    def __init__(self) -> None:
        self.inner = VirtualNetwork()
        self.reached = trio.Event()
        self.gate = trio.Event()

    async def connect(self, host: str, port: int, *, source: str | None = None) -> trio.abc.Stream:
        if host == "csms":
            self.reached.set()
            await self.gate.wait()
        return await self.inner.connect(host, port, source=source)

    async def listen(self, host: str, port: int) -> NetListener:
        return await self.inner.listen(host, port)

    def statistics(self) -> NetworkStatistics:
        return self.inner.statistics()


async def test_a_partition_that_starts_while_the_relay_connects_refuses_that_connect(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gated = _GatedNetwork()
    with trio.fail_after(60):
        async with _relayed(gated, "csms", host="relay") as (net, port):
            async with trio.open_nursery() as nursery:

                async def release() -> None:
                    await gated.reached.wait()
                    net.partition("st1", "csms")
                    gated.gate.set()

                nursery.start_soon(release)
                with pytest.raises(ConnectionRefused, match="partitioned"):
                    await net.connect("csms", port, source="st1")
            assert net.relay.statistics().open_connections == 0


async def test_latency_delays_every_chunk_each_way(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(60):
        async with _relayed(VirtualNetwork(), "csms", host="relay") as (net, port):
            slow = await net.connect("csms", port, source="st1")
            fast = await net.connect("csms", port, source="st2")
            net.set_link_policy("st1", "csms", LinkPolicy(latency_s=0.25))  # applies to open connections
            for stream, round_trip in ((slow, 0.5), (fast, 0.0)):
                start = trio.current_time()
                await stream.send_all(b"ping")
                assert await _read(stream, 4) == b"ping"
                assert trio.current_time() - start == pytest.approx(round_trip)


async def test_a_stall_holds_bytes_and_keeps_the_connection(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(60):
        async with _relayed(VirtualNetwork(), "csms", host="relay") as (net, port):
            stream = await net.connect("csms", port, source="st1")
            start = trio.current_time()
            net.hold("st1", "csms", until=start + 30)
            await stream.send_all(b"held")
            assert await _read(stream, 4) == b"held"
            assert trio.current_time() - start == pytest.approx(30)
            assert net.relay.statistics().resets == 0


async def test_a_connection_no_connect_claimed_is_reset(autojump_clock: trio.testing.MockClock) -> None:
    inner = VirtualNetwork()
    with trio.fail_after(60):
        async with _relayed(inner, "csms", host="relay", claim_timeout=2.0) as (net, port):
            await net.connect("csms", port, source="st1")
            relay_port = net.relay.routes()["st1", "csms", port]
            intruder = await inner.connect(*relay_port, source="intruder")
            await intruder.send_all(b"let me in")
            assert await _ended(intruder)
            assert net.relay.statistics().strangers == 1
            kinds = [kind for kind, _ in net.events]  # type: ignore[attr-defined]
            assert kinds == ["relay_refused"]


async def test_the_relay_holds_a_bounded_amount_for_a_reader_that_does_not_read(
    autojump_clock: trio.testing.MockClock,
) -> None:
    inner = VirtualNetwork(buffer_size=4096)
    relay = FaultRelay(inner, host="relay", chunk=1024, queue=2)
    sent = 0
    async with trio.open_nursery() as nursery:
        await nursery.start(relay.run)
        listener = await inner.listen("csms", 443)
        accepted: list[trio.abc.Stream] = []

        async def keep(stream: trio.abc.Stream) -> None:
            accepted.append(stream)
            await trio.sleep_forever()

        nursery.start_soon(trio.serve_listeners, keep, [listener])
        stream = await RelayedNetwork(relay).connect("csms", 443, source="st1")
        with trio.move_on_after(60):
            while True:
                await stream.send_all(b"x" * 512)
                sent += 512
        nursery.cancel_scope.cancel()
    # two pipes of 4096, two queued chunks, one chunk being read and one being written
    assert 0 < sent <= 2 * 4096 + 2 * 1024 + 2 * 1024 + 512


def test_a_relay_refuses_when_it_is_not_running() -> None:
    async def main() -> None:
        with pytest.raises(ConnectionRefused, match="not running"):
            await FaultRelay(VirtualNetwork()).connect("csms", 443, source="st1")

    trio.run(main)


# ---------------------------------------------------------------------------- the relay over loopback TCP


@pytest.mark.loopback
async def test_over_loopback_a_partition_is_a_reset_at_both_ends_and_a_refusal() -> None:
    tcp = TcpNetwork()
    with trio.fail_after(10):
        async with _relayed(tcp, "127.0.0.1") as (net, port):
            stream = await net.connect("127.0.0.1", port, source="st1")
            async with stream:
                await stream.send_all(b"hello")
                assert await _read(stream, 5) == b"hello"
                routes = net.relay.routes()
                (relay_host, relay_port) = routes["st1", "127.0.0.1", port]
                assert relay_host == "127.0.0.1" and relay_port != port
                net.partition("st1", "127.0.0.1")
                with pytest.raises(trio.BrokenResourceError):  # an RST, not an orderly end
                    await stream.receive_some()
            with pytest.raises(ConnectionRefused, match="partitioned"):
                await net.connect("127.0.0.1", port, source="st1")
            net.heal("st1", "127.0.0.1")
            async with await net.connect("127.0.0.1", port, source="st1") as healed:
                await healed.send_all(b"again")
                assert await _read(healed, 5) == b"again"
            with pytest.raises(
                ConnectionRefused
            ):  # a closed port is refused at connect, as without the relay
                await net.connect("127.0.0.1", 1, source="st1")
            assert net.relay.statistics().resets == 1
