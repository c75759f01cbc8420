"""Loopback TCP backend over trio sockets.

Project rule: evsim sends traffic only to loopback. Every address is checked *after* the ``resolve``
mapping and before any socket is created; anything but ``localhost``, 127.0.0.0/8 or ``::1`` is a
:class:`~evsim.errors.ConfigError`. No DNS lookup ever happens (``localhost`` maps to 127.0.0.1).

Streams wrap ``trio.SocketStream`` to count bytes and translate errors into the evsim tree (the
translated errors are still trio's ``BrokenResourceError`` / ``ClosedResourceError``, see
:mod:`evsim.net.base`).
"""

from __future__ import annotations

import errno
import ipaddress
import socket as _stdlib_socket
from collections.abc import Mapping

import trio

from evsim.errors import ConfigError, ConnectionRefused, TransportError
from evsim.net.base import (
    NetListener,
    NetworkStatistics,
    StreamBroken,
    StreamClosed,
    StreamStatistics,
    is_loopback,
)

__all__ = ["LISTEN_BACKLOG", "TcpListener", "TcpNetwork", "TcpStream"]

LISTEN_BACKLOG = 4096
"""listen(2) backlog. performance.md: at 3000 stations a backlog of 100 failed; 4096 survives a
10,000-station storm with no tuning. The kernel caps it at ``net.core.somaxconn`` (4096 on Linux >= 5.4)."""

# accept(2) errors that mean "out of resources, try again later"; trio.serve_listeners sleeps and retries
# on exactly these, so they propagate as OSError.
_ACCEPT_CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}


class _Counters:
    __slots__ = ("bytes_received", "bytes_sent", "connects", "listeners", "open_streams", "refused")

    def __init__(self) -> None:
        self.connects = 0
        self.refused = 0
        self.open_streams = 0
        self.listeners = 0
        self.bytes_sent = 0
        self.bytes_received = 0


class TcpStream(trio.abc.HalfCloseableStream):
    """A loopback TCP connection: ``trio.SocketStream`` with byte counters and evsim errors.

    Errors: :class:`~evsim.net.base.StreamBroken` (reset, peer gone), :class:`~evsim.net.base.StreamClosed`
    (we closed it), ``trio.BusyResourceError`` (concurrent sends or receives).
    """

    __slots__ = ("_bytes_received", "_bytes_sent", "_closed", "_counters", "_local", "_remote", "_stream")

    def __init__(self, stream: trio.SocketStream, counters: _Counters) -> None:
        self._stream = stream
        self._counters = counters
        self._closed = False
        self._bytes_sent = 0
        self._bytes_received = 0
        # TCP_NODELAY: trio sets it on every SocketStream already; OCPP messages are small and latency-bound.
        stream.setsockopt(_stdlib_socket.IPPROTO_TCP, _stdlib_socket.TCP_NODELAY, True)
        self._local = _addr(stream.socket.getsockname())
        self._remote = _addr(stream.socket.getpeername())
        counters.open_streams += 1

    @property
    def socket(self) -> trio.socket.SocketType:
        """The underlying trio socket (for socket options)."""
        return self._stream.socket

    def statistics(self) -> StreamStatistics:
        """A snapshot of this stream's counters."""
        return StreamStatistics(
            bytes_sent=self._bytes_sent,
            bytes_received=self._bytes_received,
            local=self._local,
            remote=self._remote,
            closed=self._closed,
        )

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send all of ``data``.

        Raises:
            StreamBroken: the connection was reset or the peer went away.
            StreamClosed: we closed this stream.
        """
        try:
            await self._stream.send_all(data)
        except trio.BrokenResourceError as exc:
            raise StreamBroken(f"TCP send failed: {exc.__cause__ or exc}") from exc
        except trio.ClosedResourceError as exc:
            raise StreamClosed("this stream was closed") from exc
        n = len(data)
        self._bytes_sent += n
        self._counters.bytes_sent += n

    async def wait_send_all_might_not_block(self) -> None:
        """Wait until the socket is writable.

        Raises:
            StreamBroken: the connection was reset.
            StreamClosed: we closed this stream.
        """
        try:
            await self._stream.wait_send_all_might_not_block()
        except trio.BrokenResourceError as exc:
            raise StreamBroken(f"TCP connection broken: {exc.__cause__ or exc}") from exc
        except trio.ClosedResourceError as exc:
            raise StreamClosed("this stream was closed") from exc

    async def send_eof(self) -> None:
        """Shut down the sending direction (TCP FIN).

        Raises:
            StreamClosed: we closed this stream.
        """
        try:
            await self._stream.send_eof()
        except trio.ClosedResourceError as exc:
            raise StreamClosed("this stream was closed") from exc
        except (trio.BrokenResourceError, OSError) as exc:
            raise StreamBroken(f"TCP shutdown failed: {exc}") from exc

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Receive up to ``max_bytes`` bytes; ``b""`` at end of stream.

        Raises:
            StreamBroken: the connection was reset.
            StreamClosed: we closed this stream.
        """
        try:
            data = await self._stream.receive_some(max_bytes)
        except trio.BrokenResourceError as exc:
            raise StreamBroken(f"TCP receive failed: {exc.__cause__ or exc}") from exc
        except trio.ClosedResourceError as exc:
            raise StreamClosed("this stream was closed") from exc
        n = len(data)
        self._bytes_received += n
        self._counters.bytes_received += n
        return bytes(data)

    async def aclose(self) -> None:
        """Close the socket (idempotent)."""
        if not self._closed:
            self._closed = True
            self._counters.open_streams -= 1
        await self._stream.aclose()


class TcpListener(NetListener):
    """A listening loopback socket; ``accept`` returns :class:`TcpStream`."""

    __slots__ = ("_address", "_closed", "_counters", "_listener")

    def __init__(self, listener: trio.SocketListener, counters: _Counters) -> None:
        self._listener = listener
        self._counters = counters
        self._closed = False
        self._address = _addr(listener.socket.getsockname())
        counters.listeners += 1

    @property
    def address(self) -> tuple[str, int]:
        """``(ip, port)`` the socket is bound to."""
        return self._address

    async def accept(self) -> TcpStream:
        """Accept the next connection.

        Raises:
            StreamClosed: the listener was closed.
            OSError: out of file descriptors or memory (EMFILE, ENFILE, ENOMEM, ENOBUFS), left as
                OSError so ``trio.serve_listeners`` backs off and retries.
            TransportError: any other accept failure.
        """
        try:
            stream = await self._listener.accept()
        except trio.ClosedResourceError as exc:
            raise StreamClosed("listener was closed") from exc
        except OSError as exc:
            if exc.errno in _ACCEPT_CAPACITY_ERRNOS:
                raise
            raise TransportError(f"accept failed: {exc}") from exc
        try:
            return TcpStream(stream, self._counters)
        except OSError:  # the peer reset before we looked at it (getpeername: ENOTCONN)
            await stream.aclose()
            raise

    async def aclose(self) -> None:
        """Stop listening (idempotent)."""
        if not self._closed:
            self._closed = True
            self._counters.listeners -= 1
        await self._listener.aclose()


class TcpNetwork:
    """Loopback TCP; implements :class:`~evsim.net.base.Network`.

    Args:
        resolve: host name → IP address, applied before the loopback check (a stand-in for DNS:
            ``{"csms.evsim.test": "127.0.0.1"}``). ``localhost`` maps to 127.0.0.1 unless overridden.

    Raises:
        ConfigError: (from ``connect``/``listen``) a host that is not loopback after mapping.
    """

    def __init__(self, resolve: Mapping[str, str] | None = None) -> None:
        self._resolve = {k.lower(): v for k, v in (resolve or {}).items()}
        self._counters = _Counters()

    def resolve(self, host: str) -> str:
        """The loopback IP address ``host`` maps to.

        Raises:
            ConfigError: the address is not loopback (evsim only ever talks to this machine).
        """
        mapped = self._resolve.get(host.lower(), host)
        if mapped.startswith("[") and mapped.endswith("]"):
            mapped = mapped[1:-1]
        if mapped.lower() == "localhost":
            mapped = "127.0.0.1"
        if not is_loopback(mapped):
            try:
                ipaddress.ip_address(mapped)
                why = "it is not a loopback address"
            except ValueError:
                why = "it is a host name with no loopback mapping (evsim never uses DNS)"
            shown = host if mapped == host else f"{host} -> {mapped}"
            raise ConfigError(
                f"refusing to use address {shown}: {why}; evsim only sends traffic to loopback "
                "(127.0.0.0/8, ::1, localhost)",
                value=host,
                fix=f'map it to loopback, e.g. resolve={{"{host}": "127.0.0.1"}}',
            )
        return mapped

    async def connect(self, host: str, port: int, *, source: str | None = None) -> TcpStream:
        """Connect to a loopback ``host:port`` (``source`` is ignored).

        Raises:
            ConfigError: the host is not loopback after mapping.
            ConnectionRefused: the connection failed (nobody listening, out of ports, ...).
        """
        ip = self.resolve(host)
        try:
            stream = await trio.open_tcp_stream(ip, port)
        except OSError as exc:
            self._counters.refused += 1
            raise ConnectionRefused(f"connect to {host}:{port} ({ip}) failed: {exc}") from exc
        try:
            tcp = TcpStream(stream, self._counters)
        except OSError as exc:
            await stream.aclose()
            self._counters.refused += 1
            raise ConnectionRefused(f"connect to {host}:{port} ({ip}) failed: {exc}") from exc
        self._counters.connects += 1
        return tcp

    async def listen(self, host: str, port: int) -> TcpListener:
        """Listen on a loopback ``host:port`` (port 0 picks a free port) with backlog 4096.

        Raises:
            ConfigError: the host is not loopback, or the address is in use.
        """
        ip = self.resolve(host)
        family = trio.socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else trio.socket.AF_INET
        sock = trio.socket.socket(family, trio.socket.SOCK_STREAM)
        try:
            sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
            await sock.bind((ip, port))
            sock.listen(LISTEN_BACKLOG)
        except OSError as exc:
            sock.close()
            raise ConfigError(
                f"cannot listen on {host}:{port} ({ip}): {exc.strerror or exc}",
                value=f"{host}:{port}",
                fix="pick another port, or 0 for any free one",
            ) from exc
        return TcpListener(trio.SocketListener(sock), self._counters)

    def statistics(self) -> NetworkStatistics:
        """A snapshot of the network's counters."""
        c = self._counters
        return NetworkStatistics(
            connects=c.connects,
            refused=c.refused,
            open_streams=c.open_streams,
            listeners=c.listeners,
            bytes_sent=c.bytes_sent,
            bytes_received=c.bytes_received,
        )


def _addr(sockaddr: object) -> tuple[str, int]:
    if isinstance(sockaddr, tuple) and len(sockaddr) >= 2:
        return str(sockaddr[0]), int(sockaddr[1])
    return str(sockaddr), 0
