"""Loopback TCP backend over trio sockets (and loopback UDP through :mod:`evsim.net.udp`).

Project rule: evsim sends traffic only to loopback. Every address is checked *after* the ``resolve``
mapping and before any socket is created; anything but ``localhost``, 127.0.0.0/8 or ``::1`` is a
:class:`~evsim.errors.ConfigError`. No DNS lookup ever happens (``localhost`` maps to 127.0.0.1).

Streams drive a non-blocking socket with trio's I/O waits, count bytes and raise errors from the evsim
tree (which are still trio's ``BrokenResourceError`` / ``ClosedResourceError``, see :mod:`evsim.net.base`).
Streams also take bytes synchronously (:meth:`TcpStream.send_nowait`, the
:class:`~evsim.net.base.NowaitSend` protocol :class:`evsim.tls.stream.TlsStream` uses).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import operator
import os
import socket as _stdlib_socket
import struct
from collections.abc import Mapping
from typing import Self

import trio

from evsim.errors import ConfigError, ConnectionRefused, TransportError
from evsim.net.base import (
    NetListener,
    NetworkCounters,
    NetworkStatistics,
    StreamBroken,
    StreamClosed,
    StreamStatistics,
    is_loopback,
)
from evsim.net.capture import Capture, LinkTap
from evsim.net.udp import UdpSocket, bind_udp

__all__ = ["LISTEN_BACKLOG", "TcpListener", "TcpNetwork", "TcpStream"]

LISTEN_BACKLOG = 4096
"""listen(2) backlog. performance.md: at 3000 stations a backlog of 100 failed; 4096 survives a
10,000-station storm with no tuning. The kernel caps it at ``net.core.somaxconn`` (4096 on Linux >= 5.4)."""

# accept(2) errors that mean "out of resources, try again later"; trio.serve_listeners sleeps and retries
# on exactly these, so they propagate as OSError.
DEFAULT_RECEIVE_SIZE = 65536
"""``receive_some()`` without ``max_bytes`` reads at most this (trio's SocketStream default)."""

_LINGER_RESET = struct.pack("ii", 1, 0)  # struct linger {l_onoff = 1, l_linger = 0}: close(2) sends RST
_ACCEPT_CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}


class TcpStream(trio.abc.HalfCloseableStream):
    """A loopback TCP connection with byte counters and evsim errors.

    It drives a non-blocking stdlib socket with trio's I/O waits directly (``trio.SocketStream`` adds four
    layers of calls, an async context manager and a raised ``BlockingIOError`` per operation; measured
    ≈10 µs per message round trip on loopback). Semantics are trio's: every call is a checkpoint
    (``checkpoint_if_cancelled`` before touching the socket, so a cancelled call sends or takes nothing;
    a schedule point after an operation that did not have to wait), ``send_all`` sends everything or
    raises.

    Errors: :class:`~evsim.net.base.StreamBroken` (reset, peer gone), :class:`~evsim.net.base.StreamClosed`
    (we closed it), ``trio.BusyResourceError`` (concurrent sends or receives).
    """

    __slots__ = (
        "_bytes_received",
        "_bytes_sent",
        "_closed",
        "_counters",
        "_drained",
        "_eof_sent",
        "_local",
        "_out",
        "_receiving",
        "_remote",
        "_sending",
        "_sock",
        "_trio_socket",
    )

    def __init__(self, sock: _stdlib_socket.socket, counters: NetworkCounters) -> None:
        sock.setblocking(False)
        # TCP_NODELAY: OCPP messages are small and latency-bound (trio sets it on its streams too).
        sock.setsockopt(_stdlib_socket.IPPROTO_TCP, _stdlib_socket.TCP_NODELAY, True)
        self._local = _addr(sock.getsockname())
        self._remote = _addr(sock.getpeername())
        self._sock = sock
        self._trio_socket: trio.socket.SocketType | None = None
        self._counters = counters
        self._closed = False
        self._eof_sent = False
        self._drained = False  # the last receive_some took everything the kernel had
        self._out = bytearray()  # bytes taken by send_nowait / a cancelled send_all, not yet sent
        self._sending = False
        self._receiving = False
        self._bytes_sent = 0
        self._bytes_received = 0
        counters.open_streams += 1

    @classmethod
    def _from_trio(cls, sock: trio.socket.SocketType, counters: NetworkCounters) -> Self:
        """Take over a connected trio socket (its file descriptor moves to a stdlib socket)."""
        family, type_, proto = sock.family, sock.type, sock.proto
        fd = sock.detach()
        raw = _stdlib_socket.socket(family, type_, proto, fileno=fd)
        try:
            return cls(raw, counters)
        except OSError:  # the peer reset before we looked at it (getpeername: ENOTCONN)
            raw.close()
            raise

    @property
    def socket(self) -> trio.socket.SocketType:
        """The underlying socket as a trio socket (for socket options)."""
        if self._trio_socket is None:
            self._trio_socket = trio.socket.from_stdlib_socket(self._sock)
        return self._trio_socket

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
        """Send all of ``data`` (after anything :meth:`send_nowait` left queued).

        ``send_all(b"")`` therefore flushes what is queued. Cancellation never breaks the stream: bytes
        not yet taken by the kernel stay queued, in order, for the next send.

        Raises:
            StreamBroken: the connection was reset or the peer went away.
            StreamClosed: we closed this stream, or sent EOF.
            trio.BusyResourceError: another task is sending.
        """
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            if self._closed:
                raise StreamClosed("this stream was closed")
            if self._eof_sent:
                raise StreamClosed("can't send data after sending EOF")
            await trio.lowlevel.checkpoint_if_cancelled()
            if self._send_now(data):
                await trio.lowlevel.cancel_shielded_checkpoint()  # the schedule point of a checkpoint
            else:
                await self._drain_out()
        finally:
            self._sending = False

    def _send_now(self, data: bytes | bytearray | memoryview) -> bool:
        """Hand ``data`` to the kernel as far as it takes it, queue the rest; True if nothing is queued."""
        total = len(data)
        self._bytes_sent += total
        self._counters.bytes_sent += total
        out = self._out
        if out:
            out += data
            return False
        if not total:
            return True
        try:
            sent = self._sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise self._error(exc, "send") from exc
        if sent < total:
            self._out = bytearray(memoryview(data).cast("B")[sent:])
            return False
        return True

    async def _drain_out(self) -> None:
        """Wait for the socket until everything queued is sent (cancellable: the rest stays queued)."""
        sock = self._sock
        while self._out:
            try:
                await trio.lowlevel.wait_writable(sock)
            except trio.ClosedResourceError as exc:  # aclose() from another task
                raise StreamClosed("this stream was closed") from exc
            out = self._out
            try:
                sent = sock.send(out)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise self._error(exc, "send") from exc
            del out[:sent]

    def send_nowait(self, data: bytes | bytearray | memoryview, /) -> bool:
        """Take all of ``data`` without blocking or a checkpoint (:class:`~evsim.net.base.NowaitSend`).

        Hands it to the kernel if it can, else queues it (in order) for the next :meth:`send_all`, which
        ``send_all(b"")`` also flushes. While a ``send_all`` is waiting, that call sends it too.

        Returns:
            True when nothing is left queued here (or a waiting ``send_all`` will send it); False when
            the caller must arrange a ``send_all(b"")``.

        Raises:
            StreamBroken, StreamClosed: as :meth:`send_all`.
        """
        if self._closed:
            raise StreamClosed("this stream was closed")
        if self._eof_sent:
            raise StreamClosed("can't send data after sending EOF")
        return self._send_now(data) or self._sending

    def _error(self, exc: OSError, what: str) -> TransportError:
        if self._closed:
            return StreamClosed("this stream was closed")
        return StreamBroken(f"TCP {what} failed: {exc}")

    async def wait_send_all_might_not_block(self) -> None:
        """Wait until the socket is writable.

        Raises:
            StreamBroken: the connection was reset.
            StreamClosed: we closed this stream.
            trio.BusyResourceError: another task is sending.
        """
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            if self._closed:
                raise StreamClosed("this stream was closed")
            try:
                await trio.lowlevel.wait_writable(self._sock)
            except trio.ClosedResourceError as exc:
                raise StreamClosed("this stream was closed") from exc
        finally:
            self._sending = False

    async def send_eof(self) -> None:
        """Shut down the sending direction (TCP FIN); idempotent.

        Raises:
            StreamClosed: we closed this stream.
            trio.BusyResourceError: another task is sending.
        """
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        if self._closed:
            raise StreamClosed("this stream was closed")
        await trio.lowlevel.checkpoint()
        if self._closed:
            raise StreamClosed("this stream was closed")
        if self._eof_sent:
            return
        if self._out:  # bytes queued by send_nowait go first
            self._sending = True
            try:
                await self._drain_out()
            finally:
                self._sending = False
        self._eof_sent = True
        try:
            self._sock.shutdown(_stdlib_socket.SHUT_WR)
        except OSError as exc:
            raise StreamBroken(f"TCP shutdown failed: {exc}") from exc

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Receive up to ``max_bytes`` bytes (64 KiB when None); ``b""`` at end of stream.

        Raises:
            StreamBroken: the connection was reset.
            StreamClosed: we closed this stream.
            trio.BusyResourceError: another task is receiving.
            ValueError, TypeError: ``max_bytes`` is not a positive integer.
        """
        if max_bytes is None:
            size = DEFAULT_RECEIVE_SIZE
        else:
            size = operator.index(max_bytes)
            if size < 1:
                raise ValueError("max_bytes must be >= 1")
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this stream")
        self._receiving = True
        try:
            if self._closed:
                raise StreamClosed("this stream was closed")
            if self._drained:
                # The last read emptied the kernel buffer: wait for readiness first. When nothing has come
                # meanwhile (the usual case for request/response traffic), this saves a recv(2) that
                # fails with EAGAIN and the BlockingIOError it raises; the wait is the checkpoint.
                # (Inlined: every coroutine frame here is resumed on every message and kept per reader.)
                sock = self._sock
                while True:
                    try:
                        await trio.lowlevel.wait_readable(sock)
                    except trio.ClosedResourceError as exc:  # aclose() from another task
                        raise StreamClosed("this stream was closed") from exc
                    try:
                        data = sock.recv(size)
                        break
                    except BlockingIOError:
                        pass
                    except OSError as exc:
                        raise self._error(exc, "receive") from exc
            else:
                await trio.lowlevel.checkpoint_if_cancelled()
                try:
                    data = self._sock.recv(size)
                except BlockingIOError:
                    data = await self._receive_wait(size)
                except OSError as exc:
                    raise self._error(exc, "receive") from exc
                else:
                    await trio.lowlevel.cancel_shielded_checkpoint()  # the schedule point of a checkpoint
            self._drained = len(data) < size
            n = len(data)
            self._bytes_received += n
            self._counters.bytes_received += n
            return data
        finally:
            self._receiving = False

    async def _receive_wait(self, size: int) -> bytes:
        sock = self._sock
        while True:
            try:
                await trio.lowlevel.wait_readable(sock)
            except trio.ClosedResourceError as exc:  # aclose() from another task
                raise StreamClosed("this stream was closed") from exc
            try:
                return sock.recv(size)
            except BlockingIOError:
                pass
            except OSError as exc:
                raise self._error(exc, "receive") from exc

    async def abort(self) -> None:
        """Close with a reset (RST, through ``SO_LINGER`` 0) instead of a FIN: the peer's next operation fails
        with a broken stream once it has read what its kernel already holds (:class:`~evsim.net.base.Abortable`).
        Idempotent; closed also when cancelled."""
        if not self._closed:
            with contextlib.suppress(OSError):  # the peer reset first: closing is all that is left
                self._sock.setsockopt(_stdlib_socket.SOL_SOCKET, _stdlib_socket.SO_LINGER, _LINGER_RESET)
        await self.aclose()

    async def aclose(self) -> None:
        """Close the socket (idempotent)."""
        if not self._closed:
            self._closed = True
            self._counters.open_streams -= 1
            trio.lowlevel.notify_closing(self._sock)
            self._sock.close()
        await trio.lowlevel.checkpoint()


class TappedTcpStream(TcpStream):
    """The client end of a captured loopback connection: it reports what passes through it to ``tap``.

    Both directions are seen from the client end (what it sends when the stream takes it, what it receives
    when it reads it), so each in-process connection is captured once whatever the server side is.
    """

    __slots__ = ("tap",)
    tap: LinkTap

    def _send_now(self, data: bytes | bytearray | memoryview) -> bool:
        self.tap.data(0, data)
        return super()._send_now(data)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        try:
            await super().send_all(data)
        except StreamBroken:
            self.tap.reset()
            raise

    async def send_eof(self) -> None:
        await super().send_eof()
        self.tap.fin(0)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        try:
            data = await super().receive_some(max_bytes)
        except StreamBroken:
            self.tap.reset()
            raise
        if data:
            self.tap.data(1, data)
        else:
            self.tap.fin(1)
        return data

    async def aclose(self) -> None:
        self.tap.fin(0)
        await super().aclose()


class TcpListener(NetListener):
    """A listening loopback socket; ``accept`` returns :class:`TcpStream`."""

    __slots__ = ("_address", "_closed", "_counters", "_listener")

    uses_file_descriptors = True

    def __init__(self, listener: trio.SocketListener, counters: NetworkCounters) -> None:
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
            StreamBroken: this connection was reset before it could be accepted (the listener is fine).
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
            return TcpStream._from_trio(stream.socket, self._counters)
        except OSError as exc:  # reset between accept(2) and getpeername (ENOTCONN): that connection only
            raise StreamBroken(f"connection lost before it was accepted: {exc}") from exc

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
        self._counters = NetworkCounters()
        self._capture: Capture | None = None

    def attach_capture(self, capture: Capture | None) -> None:
        """Capture the connections this network opens from now on (their client ends, see
        :class:`TappedTcpStream`) to ``capture``; None stops."""
        self._capture = capture

    def map_host(self, host: str, ip: str = "127.0.0.1") -> None:
        """Add a name to the ``resolve`` map (a node started later gets its host name mapped to loopback)."""
        self._resolve[host.lower()] = ip

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
        """Connect to a loopback ``host:port`` (``source`` names the client in a capture, nothing else).

        Raises:
            ConfigError: the host is not loopback after mapping.
            ConnectionRefused: the connection failed (nobody listening, out of ports, ...).
        """
        ip = self.resolve(host)
        # One literal loopback address: a plain non-blocking connect. trio.open_tcp_stream would add
        # getaddrinfo, a nursery and a task per attempt (Happy Eyeballs), ≈14 % of a boot storm's CPU.
        family = _stdlib_socket.AF_INET6 if ":" in ip else _stdlib_socket.AF_INET
        sock = _stdlib_socket.socket(family, _stdlib_socket.SOCK_STREAM)
        capture = self._capture
        try:
            await _connect(sock, (ip, port))
            if capture is None:
                tcp = TcpStream(sock, self._counters)
            else:
                tcp = tapped = TappedTcpStream(sock, self._counters)
                tapped.tap = capture.open_link(
                    (source or "client", tapped.statistics().local[1]), (host, port)
                )
        except OSError as exc:
            sock.close()
            self._counters.refused += 1
            if capture is not None:
                capture.refused(source or "client", (host, port), answered=exc.errno == errno.ECONNREFUSED)
            raise ConnectionRefused(f"connect to {host}:{port} ({ip}) failed: {exc}") from exc
        except BaseException:
            sock.close()
            raise
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
        return self._counters.snapshot()

    async def bind_datagram(self, host: str, port: int) -> UdpSocket:
        """A loopback UDP socket on ``host:port`` (port 0 picks a free port); it sends only to loopback.

        Raises:
            ConfigError: the host is not loopback, or the address is in use.
        """
        return await bind_udp(host, port, self.resolve)


async def _connect(sock: _stdlib_socket.socket, address: tuple[str, int]) -> None:
    """Connect ``sock`` to a literal address without blocking, with trio's checkpoints (what
    ``trio.socket.SocketType.connect`` does, without its wrapper object, address resolution and the detach
    that :meth:`TcpStream._from_trio` needs after it: about a tenth of a station's TCP set-up CPU).

    Raises:
        OSError: the connection failed (``errno`` as the kernel reported it).
    """
    sock.setblocking(False)
    await trio.lowlevel.checkpoint_if_cancelled()
    try:
        sock.connect(address)
    except BlockingIOError:
        await trio.lowlevel.wait_writable(sock)
        err = sock.getsockopt(_stdlib_socket.SOL_SOCKET, _stdlib_socket.SO_ERROR)
        if err != 0:
            raise OSError(err, f"Error connecting to {address!r}: {os.strerror(err)}") from None
    else:
        await trio.lowlevel.cancel_shielded_checkpoint()


def _addr(sockaddr: object) -> tuple[str, int]:
    if isinstance(sockaddr, tuple) and len(sockaddr) >= 2:
        return str(sockaddr[0]), int(sockaddr[1])
    return str(sockaddr), 0
