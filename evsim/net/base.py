"""What every network backend provides: the :class:`Network` protocol, listeners, statistics.

Two backends implement it: :class:`evsim.net.virtual.VirtualNetwork` (in memory, with faults) and
:class:`evsim.net.tcp.TcpNetwork` (loopback TCP). TLS and WebSocket code only sees ``trio.abc.Stream``,
so the same code path runs over either.

Errors follow ``evsim.errors``. The stream errors raised by our streams are *also* trio's
(:class:`StreamBroken` is a :class:`~evsim.errors.BrokenTransport` and a ``trio.BrokenResourceError``),
so generic trio code (``trio.SSLStream``, ``trio.testing.check_two_way_stream``) and evsim code both
understand them.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import attrs
import trio

from evsim.errors import BrokenTransport, ClosedTransport

if TYPE_CHECKING:
    from evsim.net.virtual import LinkPolicy

__all__ = [
    "MAX_DATAGRAM",
    "Abortable",
    "DatagramNetwork",
    "DatagramSocket",
    "DatagramStatistics",
    "FaultyNetwork",
    "IdleState",
    "NetListener",
    "Network",
    "NetworkStatistics",
    "NowaitSend",
    "StreamBroken",
    "StreamClosed",
    "StreamStatistics",
    "format_address",
    "peer_address",
    "remote_address",
]


class StreamBroken(BrokenTransport, trio.BrokenResourceError):
    """The peer or the link went away (remote cause); both an evsim and a trio error."""


class StreamClosed(ClosedTransport, trio.ClosedResourceError):
    """We used a stream or listener we had closed (local cause); both an evsim and a trio error."""


@attrs.frozen
class StreamStatistics:
    """A snapshot of one stream's counters.

    Attributes:
        bytes_sent: payload bytes handed to ``send_all`` and accepted.
        bytes_received: bytes returned by ``receive_some``.
        local: ``(host, port)`` of this end.
        remote: ``(host, port)`` of the other end.
        closed: True once this end was closed.
    """

    bytes_sent: int
    bytes_received: int
    local: tuple[str, int]
    remote: tuple[str, int]
    closed: bool


@attrs.frozen
class NetworkStatistics:
    """A snapshot of a network's counters.

    Attributes:
        connects: successful ``connect`` calls.
        refused: ``connect`` calls that raised ``ConnectionRefused``.
        open_streams: streams (one per end) not yet closed.
        listeners: listeners not yet closed.
        bytes_sent: total bytes sent by all streams.
        bytes_received: total bytes received by all streams.
        broken_links: connections broken by faults (partition, host down); virtual network only.
    """

    connects: int
    refused: int
    open_streams: int
    listeners: int
    bytes_sent: int
    bytes_received: int
    broken_links: int = 0


class NetworkCounters:
    """The mutable counters behind :class:`NetworkStatistics`, shared by a network and its streams."""

    __slots__ = (
        "broken_links",
        "bytes_received",
        "bytes_sent",
        "connects",
        "listeners",
        "open_streams",
        "refused",
    )

    def __init__(self) -> None:
        self.connects = 0
        self.refused = 0
        self.open_streams = 0
        self.listeners = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self.broken_links = 0

    def snapshot(self, *, listeners: int | None = None) -> NetworkStatistics:
        """A frozen copy; ``listeners`` overrides the counter when the network tracks listeners itself."""
        return NetworkStatistics(
            connects=self.connects,
            refused=self.refused,
            open_streams=self.open_streams,
            listeners=self.listeners if listeners is None else listeners,
            bytes_sent=self.bytes_sent,
            bytes_received=self.bytes_received,
            broken_links=self.broken_links,
        )


class NetListener(trio.abc.Listener[trio.abc.Stream]):
    """A listener that knows the address it is bound to."""

    uses_file_descriptors = False
    """True when every accepted connection holds a file descriptor (counts against ``RLIMIT_NOFILE``)."""

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` the listener accepts on; the port is the real one when 0 was asked for."""
        raise NotImplementedError


@runtime_checkable
class Network(Protocol):
    """A way to open streams: in memory (:class:`~evsim.net.virtual.VirtualNetwork`) or TCP."""

    async def connect(self, host: str, port: int, *, source: str | None = None) -> trio.abc.Stream:
        """Open a stream to ``host:port``.

        Args:
            host: host name or address.
            port: TCP-style port.
            source: name of the connecting host; the virtual network uses it for per-pair faults,
                TCP ignores it.

        Returns:
            A connected stream.

        Raises:
            ConnectionRefused: nothing listens there, or a fault blocks it.
            ConfigError: the address is not allowed (TCP: not loopback).
        """
        ...

    async def listen(self, host: str, port: int) -> NetListener:
        """Listen on ``host:port`` (port 0 picks a free port).

        Raises:
            ConfigError: the address is not allowed or already in use.
        """
        ...

    def statistics(self) -> NetworkStatistics:
        """A snapshot of the network's counters."""
        ...


@runtime_checkable
class IdleState(Protocol):
    """A stream holding buffers it need not keep while the link is idle (:class:`~evsim.tls.stream.TlsStream`).

    The layer above calls :meth:`release_idle_state` when it knows the link went quiet (the WebSocket, on
    behalf of the OCPP session's idle watch).
    """

    def release_idle_state(self) -> int:
        """Free what the next operation can rebuild; the number of objects freed (0: nothing)."""
        ...


@runtime_checkable
class NowaitSend(Protocol):
    """A stream that can also take bytes synchronously: :meth:`send_nowait` never blocks or checkpoints.

    Layers above use it, when their stream has it (``isinstance(stream, NowaitSend)``, once per
    connection), to hand bytes down in the same step that produced them: a caller cancelled afterwards can
    never leave part of them on the wire, so cancelling a sender cannot break the stream. Both network
    backends' streams (:class:`~evsim.net.tcp.TcpStream`, :class:`~evsim.net.virtual.VirtualStream`) and
    :class:`~evsim.tls.stream.TlsStream` implement it.
    """

    def send_nowait(self, data: bytes, /) -> bool | None:
        """Take all of ``data`` or none of it, without blocking and without a trio checkpoint.

        What the stream took but could not pass on yet (the kernel's or the peer's buffer is full) waits
        in the stream, in order: ``send_all`` sends it before its own data, ``send_all(b"")`` sends only
        it, and a ``send_all`` running at this moment sends it too. Bytes taken are never lost or reordered
        by a later cancellation of the caller.

        Returns:
            True when it took ``data`` and nothing waits (or a running ``send_all`` will send it); False
            when it took ``data`` and bytes wait: the caller must arrange a ``send_all(b"")``; None when it
            took nothing (it cannot send synchronously now): send ``data`` with ``send_all``. The network
            backends' streams always take ``data`` (never None).

        Raises:
            BrokenTransport, ClosedTransport: the stream is broken or closed, as ``send_all`` would raise.
        """
        ...


@runtime_checkable
class Abortable(Protocol):
    """A stream that can close with a reset (TCP RST) instead of an orderly end of stream."""

    async def abort(self) -> None:
        """Close at once; the peer's next operation fails with a broken stream instead of reading an end."""
        ...


@runtime_checkable
class FaultyNetwork(Protocol):
    """The fault controls a network offers between named hosts: the in-memory network
    (:class:`~evsim.net.virtual.VirtualNetwork`) and the relayed loopback network
    (:class:`~evsim.net.relay.RelayedNetwork`) have the same ones, with the same semantics."""

    def partition(self, host_a: str, host_b: str) -> None:
        """Cut the two hosts apart: their connections reset, new connects between them are refused."""
        ...

    def heal(self, host_a: str, host_b: str) -> None:
        """Undo :meth:`partition` for new connections."""
        ...

    def set_host_down(self, host: str, down: bool = True) -> None:
        """Take ``host`` off the network (its connections reset, connects refused) or back on."""
        ...

    def is_host_down(self, host: str) -> bool: ...

    def set_link_policy(self, host_a: str, host_b: str, policy: LinkPolicy) -> None:
        """The link policy between the two hosts, for open and new connections."""
        ...

    def link_policy(self, host_a: str, host_b: str) -> LinkPolicy:
        """The policy between the two hosts now (the default when none was set)."""
        ...


def is_loopback(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ``::1`` (no name resolution happens)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def format_address(address: tuple[str, int]) -> str:
    """``host:port``, with an IPv6 host in brackets (``[::1]:8443``)."""
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def remote_address(stream: object) -> tuple[str, int] | None:
    """``(host, port)`` of the other end of an accepted stream, from its :class:`StreamStatistics`; None when the
    stream keeps no statistics (a test double) or they name no remote address."""
    statistics = getattr(stream, "statistics", None)
    if statistics is None:
        return None
    remote = getattr(statistics(), "remote", None)
    if not isinstance(remote, tuple) or len(remote) < 2:
        return None
    return str(remote[0]), int(remote[1])


def peer_address(stream: object) -> str:
    """``host:port`` of the other end of an accepted stream (:func:`remote_address`); "" when unknown."""
    remote = remote_address(stream)
    return "" if remote is None else format_address(remote)


MAX_DATAGRAM = 65507
"""Largest UDP payload over IPv4 (65535 minus the IP and UDP headers); larger sends are refused."""


@attrs.frozen
class DatagramStatistics:
    """A snapshot of one datagram socket's counters.

    Attributes:
        local: ``(host, port)`` the socket is bound to.
        sent: datagrams handed to the network.
        received: datagrams returned by ``receive_from``.
        bytes_sent, bytes_received: their payload octets.
        dropped: datagrams this socket sent that the network dropped, by reason (``loss``, ``partition``,
            ``host_down``, ``no_listener``, ``queue_full``; virtual network only), and datagrams it could not
            receive (``receive_error``, loopback UDP).
        closed: True once the socket was closed.
    """

    local: tuple[str, int]
    sent: int
    received: int
    bytes_sent: int
    bytes_received: int
    dropped: dict[str, int]
    closed: bool


@runtime_checkable
class DatagramSocket(Protocol):
    """A bound datagram (UDP) socket: unreliable, unordered, unconnected, message boundaries kept.

    ``send_to`` never waits for the receiver: a datagram nobody can take is dropped and counted, as UDP does.
    """

    @property
    def local_address(self) -> tuple[str, int]:
        """``(host, port)`` this socket is bound to (the real port when 0 was asked for)."""
        ...

    async def send_to(self, data: bytes, address: tuple[str, int]) -> None:
        """Send one datagram to ``address``.

        Raises:
            TransportError: the datagram is larger than :data:`MAX_DATAGRAM`.
            ConfigError: the address is not allowed (loopback backend: not loopback).
            StreamClosed: this socket was closed.
        """
        ...

    async def receive_from(self) -> tuple[bytes, tuple[str, int]]:
        """Wait for the next datagram; return it and the sender's address.

        Raises:
            StreamClosed: this socket was closed (before or during the call).
        """
        ...

    async def aclose(self) -> None:
        """Close the socket (idempotent); a waiting ``receive_from`` raises ``StreamClosed``."""
        ...

    def statistics(self) -> DatagramStatistics:
        """A snapshot of the socket's counters."""
        ...


@runtime_checkable
class DatagramNetwork(Protocol):
    """A network that carries datagrams besides streams (both backends)."""

    async def bind_datagram(self, host: str, port: int) -> DatagramSocket:
        """Bind a datagram socket to ``host:port`` (port 0 picks a free port).

        Raises:
            ConfigError: the address is not allowed or already in use.
        """
        ...


class DatagramCounters:
    """The mutable counters behind :class:`DatagramStatistics`."""

    __slots__ = ("bytes_received", "bytes_sent", "dropped", "received", "sent")

    def __init__(self) -> None:
        self.sent = 0
        self.received = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self.dropped: dict[str, int] = {}

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def snapshot(self, local: tuple[str, int], closed: bool) -> DatagramStatistics:
        return DatagramStatistics(
            local, self.sent, self.received, self.bytes_sent, self.bytes_received, dict(self.dropped), closed
        )
