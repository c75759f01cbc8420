"""Loopback UDP: the datagram side of :class:`~evsim.net.tcp.TcpNetwork`.

Like the TCP backend, it only ever binds to and sends to loopback addresses (after the network's ``resolve``
map); anything else is a :class:`~evsim.errors.ConfigError` before a packet leaves. A receive error (an ICMP
error reported on the socket) is counted and skipped: no peer can stop a receiving node.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import trio

from evsim.errors import ConfigError, TransportError
from evsim.net.base import MAX_DATAGRAM, DatagramCounters, DatagramStatistics, StreamClosed

__all__ = ["UdpSocket", "bind_udp"]

_RECEIVE_SIZE = 65536


class UdpSocket:
    """A bound loopback UDP socket (implements :class:`~evsim.net.base.DatagramSocket`)."""

    def __init__(self, sock: trio.socket.SocketType, resolve: Callable[[str], str]) -> None:
        self._sock = sock
        self._resolve = resolve
        name = sock.getsockname()
        self._local = (str(name[0]), int(name[1]))
        self._counters = DatagramCounters()
        self._closed = False

    @property
    def local_address(self) -> tuple[str, int]:
        return self._local

    def statistics(self) -> DatagramStatistics:
        return self._counters.snapshot(self._local, self._closed)

    async def send_to(self, data: bytes, address: tuple[str, int]) -> None:
        if self._closed:
            raise StreamClosed("this datagram socket was closed")
        if len(data) > MAX_DATAGRAM:
            raise TransportError(f"datagram of {len(data)} octets is larger than {MAX_DATAGRAM}")
        ip = self._resolve(address[0])
        try:
            await self._sock.sendto(data, (ip, address[1]))
        except trio.ClosedResourceError as exc:
            raise StreamClosed("this datagram socket was closed") from exc
        except OSError:
            # UDP: a datagram the kernel refuses (no buffer, an ICMP error pending) is lost, not an error
            self._counters.drop("send_error")
            return
        self._counters.sent += 1
        self._counters.bytes_sent += len(data)

    async def receive_from(self) -> tuple[bytes, tuple[str, int]]:
        while True:
            if self._closed:
                raise StreamClosed("this datagram socket was closed")
            try:
                data, source = await self._sock.recvfrom(_RECEIVE_SIZE)
            except trio.ClosedResourceError as exc:
                raise StreamClosed("this datagram socket was closed") from exc
            except OSError:
                self._counters.drop("receive_error")
                continue
            self._counters.received += 1
            self._counters.bytes_received += len(data)
            return data, (str(source[0]), int(source[1]))

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._sock.close()
        await trio.lowlevel.checkpoint()


async def bind_udp(host: str, port: int, resolve: Callable[[str], str]) -> UdpSocket:
    """A UDP socket bound to loopback ``host:port`` (``resolve`` maps names and refuses non-loopback).

    Raises:
        ConfigError: the host is not loopback, or the address is in use.
    """
    ip = resolve(host)
    family = trio.socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else trio.socket.AF_INET
    sock = trio.socket.socket(family, trio.socket.SOCK_DGRAM)
    try:
        await sock.bind((ip, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot bind UDP {host}:{port} ({ip}): {exc.strerror or exc}",
            value=f"{host}:{port}",
            fix="pick another port, or 0 for any free one",
        ) from exc
    return UdpSocket(sock, resolve)
