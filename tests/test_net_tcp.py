"""TcpNetwork: loopback only (checked before any socket exists), round trips, errors."""

from __future__ import annotations

import os
import socket

import pytest
import trio
import trio.testing

from evsim.errors import BrokenTransport, ConfigError, ConnectionRefused
from evsim.net import Network, TcpNetwork, TcpStream, is_loopback
from evsim.net.tcp import LISTEN_BACKLOG


def test_tcp_network_is_a_network() -> None:
    assert isinstance(TcpNetwork(), Network)
    assert LISTEN_BACKLOG == 4096


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("localhost", True),
        ("LOCALHOST", True),
        ("127.0.0.1", True),
        ("127.9.8.7", True),
        ("::1", True),
        ("10.0.0.1", False),
        ("192.0.2.1", False),
        ("0.0.0.0", False),
        ("::", False),
        ("example.com", False),
        ("", False),
    ],
)
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


@pytest.fixture
def no_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make sure a refused address never reaches the socket layer (no traffic may leave loopback)."""

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"socket layer reached with {args!r}")

    monkeypatch.setattr(trio, "open_tcp_stream", forbidden)
    monkeypatch.setattr(trio.socket, "socket", forbidden)


@pytest.mark.usefixtures("no_sockets")
@pytest.mark.parametrize("host", ["10.0.0.1", "192.0.2.7", "0.0.0.0", "::", "2001:db8::1", "example.com"])
async def test_non_loopback_is_a_config_error(host: str) -> None:
    net = TcpNetwork()
    with trio.fail_after(5):
        with pytest.raises(ConfigError, match="loopback") as info:
            await net.connect(host, 443)
        assert host in str(info.value)
        with pytest.raises(ConfigError, match="loopback"):
            await net.listen(host, 0)


@pytest.mark.usefixtures("no_sockets")
async def test_resolve_mapping_is_checked_too() -> None:
    net = TcpNetwork(resolve={"csms.evsim.test": "192.0.2.1"})
    with trio.fail_after(5), pytest.raises(ConfigError, match=r"csms\.evsim\.test -> 192\.0\.2\.1"):
        await net.connect("csms.evsim.test", 443)


def test_resolve() -> None:
    net = TcpNetwork(resolve={"CSMS.evsim.test": "127.0.0.2", "v6": "[::1]"})
    assert net.resolve("csms.evsim.test") == "127.0.0.2"
    assert net.resolve("localhost") == "127.0.0.1"
    assert net.resolve("v6") == "::1"
    assert net.resolve("127.0.0.1") == "127.0.0.1"


@pytest.mark.loopback
async def test_loopback_round_trip_and_statistics() -> None:
    net = TcpNetwork(resolve={"csms.evsim.test": "127.0.0.1"})
    with trio.fail_after(10):
        listener = await net.listen("csms.evsim.test", 0)
        host, port = listener.address
        assert host == "127.0.0.1"
        assert port > 0
        client = await net.connect("csms.evsim.test", port)
        server = await listener.accept()
        assert client.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert server.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        await client.send_all(b'[2,"1","Heartbeat",{}]')
        got = b""
        while len(got) < 22:
            got += await server.receive_some()
        assert got == b'[2,"1","Heartbeat",{}]'
        await server.send_all(b"ok")
        assert await client.receive_some() == b"ok"
        assert client.statistics().remote == ("127.0.0.1", port)
        assert server.statistics().bytes_received == 22
        stats = net.statistics()
        assert (stats.connects, stats.open_streams, stats.listeners) == (1, 2, 1)
        assert stats.bytes_sent == stats.bytes_received == 24
        await client.aclose()
        assert await server.receive_some() == b""
        await server.aclose()
        await listener.aclose()
        assert net.statistics().open_streams == 0


@pytest.mark.loopback
async def test_loopback_streams_pass_trio_stream_checks() -> None:
    net = TcpNetwork()
    listener = await net.listen("127.0.0.1", 0)
    port = listener.address[1]

    async def maker() -> tuple[TcpStream, TcpStream]:
        client = await net.connect("localhost", port)
        return client, await listener.accept()

    with trio.fail_after(30):
        await trio.testing.check_half_closeable_stream(maker, None)
    await listener.aclose()


async def _send_until_broken(stream: TcpStream) -> None:
    for _ in range(100):
        await stream.send_all(b"x" * 65536)


@pytest.mark.loopback
async def test_a_cancelled_connect_leaves_no_socket_and_a_connected_one_has_nodelay() -> None:
    net = TcpNetwork()
    with trio.fail_after(10):
        listener = await net.listen("127.0.0.1", 0)
        port = listener.address[1]
        fds = len(os.listdir("/proc/self/fd"))
        with trio.CancelScope() as scope:
            scope.cancel()
            await net.connect("127.0.0.1", port)
        assert len(os.listdir("/proc/self/fd")) == fds
        assert net.statistics().connects == 0
        client = await net.connect("127.0.0.1", port)
        server = await listener.accept()
        assert client.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert client.statistics().remote == server.statistics().local
        await client.aclose()
        await server.aclose()
        await listener.aclose()


@pytest.mark.loopback
async def test_connect_refused_and_reset() -> None:
    net = TcpNetwork()
    with trio.fail_after(10):
        listener = await net.listen("127.0.0.1", 0)
        port = listener.address[1]
        client = await net.connect("127.0.0.1", port)
        server = await listener.accept()
        await listener.aclose()
        with pytest.raises(ConnectionRefused):
            await net.connect("127.0.0.1", port)
        assert net.statistics().refused == 1
        # a reset (SO_LINGER 0) breaks the peer's next operation
        server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        await server.aclose()
        with pytest.raises(BrokenTransport):  # loopback delivers the RST within close()
            await _send_until_broken(client)
        await client.aclose()


@pytest.mark.loopback
async def test_listen_address_in_use_is_a_config_error() -> None:
    net = TcpNetwork()
    with trio.fail_after(10):
        listener = await net.listen("127.0.0.1", 0)
        with pytest.raises(ConfigError, match="cannot listen"):
            await net.listen("127.0.0.1", listener.address[1])
        await listener.aclose()


@pytest.mark.loopback
async def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this Python")
    net = TcpNetwork()
    with trio.fail_after(10):
        try:
            listener = await net.listen("::1", 0)
        except ConfigError:
            pytest.skip("::1 is not configured on this machine")
        client = await net.connect("::1", listener.address[1])
        server = await listener.accept()
        await client.send_all(b"v6")
        assert await server.receive_some() == b"v6"
        for resource in (client, server, listener):
            await resource.aclose()


@pytest.mark.loopback
async def test_send_nowait_queues_in_order_and_a_cancelled_send_loses_nothing() -> None:
    # The synchronous path takes every byte: what the kernel refuses waits in the stream, in order, and
    # goes out with the next send_all (send_all(b"") flushes). A send_all cancelled while it waits keeps
    # its bytes queued: the stream stays usable and nothing is lost or reordered.
    net = TcpNetwork()
    with trio.fail_after(30):
        listener = await net.listen("127.0.0.1", 0)
        client = await net.connect("127.0.0.1", listener.address[1])
        server = await listener.accept()
        sent: list[bytes] = []
        for i in range(10_000):
            chunk = bytes([i % 251]) * 65536
            sent.append(chunk)
            if not client.send_nowait(chunk):
                break
        else:
            pytest.fail("the kernel took 655 MB without pushing back")
        sent.append(b"after")
        assert client.send_nowait(b"after") is False  # queued behind the rest
        with trio.CancelScope() as scope:
            scope.cancel()
            await client.send_all(b"never")  # cancelled before it started: takes nothing
        async with trio.open_nursery() as nursery:
            waiting = trio.CancelScope()

            async def send_tail() -> None:
                with waiting:
                    await client.send_all(b"tail")  # taken, then cancelled while waiting for the socket

            nursery.start_soon(send_tail)
            await trio.testing.wait_all_tasks_blocked()
            waiting.cancel()
        assert waiting.cancelled_caught
        sent.append(b"tail")
        expected = b"".join(sent)
        received = bytearray()

        async def read_all() -> None:
            while len(received) < len(expected):
                received.extend(await server.receive_some())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_all)
            await client.send_all(b"")  # flush
        assert bytes(received) == expected
        assert client.statistics().bytes_sent == len(expected)
        for resource in (client, server, listener):
            await resource.aclose()
        with pytest.raises(trio.ClosedResourceError):
            client.send_nowait(b"x")
