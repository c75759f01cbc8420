"""The in-memory network: named hosts, listeners, bounded byte pipes, and faults.

Theory of operation
-------------------
A connection is a :class:`_Link`: two :class:`~evsim.net.pipe.Pipe` objects (one per direction) and two
:class:`VirtualStream` ends. A pipe is a bounded byte buffer (``buffer_size`` bytes, default 64 KiB,
the Linux default socket buffer order of magnitude) plus at most one parked reader task and one
parked writer task. trio forbids concurrent ``receive_some`` (and concurrent ``send_all``) on one
stream, so one slot per side is enough; a second caller gets ``trio.BusyResourceError``.

Parking uses trio's lowest-level primitive (``wait_task_rescheduled`` / ``reschedule``): no task per
stream, no channel, no lock. A station storm creates thousands of these, and a stream costs two small
objects plus two empty ``bytearray``\\ s.

* ``send_all`` appends what fits, wakes the reader, and parks while the pipe is full (back-pressure).
  What does not fit yet waits in the stream's backlog, so a cancelled send loses nothing;
  :meth:`~VirtualStream.send_nowait` (:class:`~evsim.net.base.NowaitSend`, used by evsim's TLS stream) takes
  bytes synchronously the same way.
* ``receive_some`` takes up to ``max_bytes`` from the front, wakes the writer, and parks while empty.
* An operation that does not block executes exactly one checkpoint (``trio.lowlevel.checkpoint``)
  *before* touching the buffer, so a cancellation never loses bytes; a parked operation's wait is its
  checkpoint.
* Closing an end is a TCP FIN plus "socket gone": the peer reads what was sent, then ``b""``; the
  peer's sends fail with :class:`StreamBroken`. ``send_eof`` is the FIN alone.
* A fault (:meth:`VirtualNetwork.partition`, :meth:`~VirtualNetwork.set_host_down`, closing a listener
  with queued connections) breaks the link like a TCP reset: both ends' next (or current, parked)
  operation raises :class:`StreamBroken`, buffered bytes are dropped.
* Optional latency (:class:`LinkPolicy`): bytes written at trio time ``t`` become readable at
  ``t + latency_s``; they count against the buffer while in flight. A reader parks with a deadline at
  the earliest arrival, so it works under ``trio.testing.MockClock``.
* Optional bandwidth (:attr:`LinkPolicy.bytes_per_s`, per direction, like a full-duplex link): all connections
  between two hosts share one transmitter (:class:`~evsim.net.pipe.Rate`) per direction. Written bytes leave in
  segments of :data:`~evsim.net.pipe.SEGMENT` bytes, each when the transmitter is free, taking
  ``size / bytes_per_s``, readable once sent plus the latency; flows that keep their pipes full share the rate
  about equally. A transfer of N bytes takes N / rate trio seconds (plus framing). A new policy applies to bytes
  written from then on.
* A capture (:meth:`VirtualNetwork.attach_capture`, :mod:`evsim.net.capture`) gives connections made while it
  is attached tapped pipes, and sees refused connects and every datagram sent; without one, nothing changes.
"""

from __future__ import annotations

import itertools
import operator
import random
from collections import deque
from collections.abc import Iterator, Mapping

import attrs
import trio
from trio.lowlevel import checkpoint, current_task, reschedule, wait_task_rescheduled

from evsim.errors import ConfigError, ConnectionRefused
from evsim.net.base import (
    NetListener,
    NetworkCounters,
    NetworkStatistics,
    StreamBroken,
    StreamClosed,
    StreamStatistics,
)
from evsim.net.capture import Capture
from evsim.net.pipe import Pipe, Rate, TappedPipe
from evsim.net.virtual_datagram import VirtualDatagramSocket

__all__ = ["LinkPolicy", "VirtualDatagramSocket", "VirtualListener", "VirtualNetwork", "VirtualStream"]

DEFAULT_BUFFER_SIZE = 64 * 1024
"""Bytes buffered per direction: the order of a default Linux TCP socket buffer (net.core.wmem_default)."""

DEFAULT_BACKLOG = 4096
"""Connections queued per listener before further connects wait; same as TcpNetwork (performance.md)."""

DEFAULT_DATAGRAM_QUEUE = 256
"""Datagrams queued per datagram socket (arrived or in flight) before further ones are dropped, like a full
UDP receive buffer."""

DEFAULT_CONNECT_TIMEOUT = 127.0
"""Seconds a connect waits for room in a full backlog: Linux drops the SYN and retries it with
tcp_syn_retries=6 (1+2+4+8+16+32+64 s) before giving up, so a storm queues instead of failing."""

_NO_LISTENER = "nothing listens there"
_EPHEMERAL = (49152, 65535)  # RFC 6335 §6 dynamic ports, used for port 0 and for client ends


@attrs.frozen
class LinkPolicy:
    """Properties of the links between two hosts (mininet's vocabulary).

    Attributes:
        latency_s: one-way delay in trio seconds applied to every byte and datagram (virtual time under
            MockClock).
        loss: probability that a datagram between the two hosts is lost (streams are reliable, like TCP).
        bytes_per_s: the rate of each direction between the two hosts, bytes per second, shared by all their
            connections (0: unlimited). Streams only; datagrams are not rate-limited.
    """

    latency_s: float = attrs.field(default=0.0)
    loss: float = attrs.field(default=0.0)
    bytes_per_s: float = attrs.field(default=0.0)

    @bytes_per_s.validator
    def _check_rate(self, _attribute: object, value: float) -> None:
        if not 0.0 <= value < float("inf"):
            raise ConfigError(
                "bytes_per_s must be a finite number >= 0 (0: unlimited)", path="bytes_per_s", value=value
            )

    @latency_s.validator
    def _check_latency(self, _attribute: object, value: float) -> None:
        if not value >= 0.0:
            raise ConfigError("latency must be >= 0 seconds", path="latency_s", value=value)

    @loss.validator
    def _check_loss(self, _attribute: object, value: float) -> None:
        if not 0.0 <= value <= 1.0:
            raise ConfigError("loss must be a probability in 0..1", path="loss", value=value)


class VirtualStream(trio.abc.HalfCloseableStream):
    """One end of an in-memory connection. Passes ``trio.testing.check_half_closeable_stream``.

    Errors: :class:`~evsim.net.base.StreamBroken` (peer closed its end, or a fault reset the link),
    :class:`~evsim.net.base.StreamClosed` (this end was closed), ``trio.BusyResourceError``
    (concurrent sends or concurrent receives).
    """

    __slots__ = (
        "_backlog",
        "_bytes_received",
        "_bytes_sent",
        "_closed",
        "_counters",
        "_eof_sent",
        "_in",
        "_link",
        "_local",
        "_out",
        "_receiving",
        "_remote",
        "_sending",
    )

    def __init__(
        self,
        link: _Link | None,
        inbound: Pipe,
        outbound: Pipe,
        local: tuple[str, int],
        remote: tuple[str, int],
        counters: NetworkCounters,
    ) -> None:
        self._link = link
        self._in = inbound
        self._out = outbound
        self._local = local
        self._remote = remote
        self._counters = counters
        self._closed = False
        self._eof_sent = False
        self._sending = False
        self._receiving = False
        self._backlog = bytearray()  # bytes taken by send_nowait / a cancelled send_all, not yet in the pipe
        self._bytes_sent = 0
        self._bytes_received = 0
        counters.open_streams += 1

    @property
    def local_address(self) -> tuple[str, int]:
        """``(host, port)`` of this end."""
        return self._local

    @property
    def remote_address(self) -> tuple[str, int]:
        """``(host, port)`` of the other end."""
        return self._remote

    def statistics(self) -> StreamStatistics:
        """A snapshot of this end's counters."""
        return StreamStatistics(
            bytes_sent=self._bytes_sent,
            bytes_received=self._bytes_received,
            local=self._local,
            remote=self._remote,
            closed=self._closed,
        )

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Queue all of ``data`` for the peer (after what :meth:`send_nowait` left waiting), waiting while
        the pipe is full; ``send_all(b"")`` therefore flushes. A send cancelled while it waits keeps the
        rest waiting, in order, for the next send: nothing is lost or reordered.

        Raises:
            StreamBroken: the peer closed its end or the link was reset.
            StreamClosed: this end was closed (before or during the call) or sent EOF.
            trio.BusyResourceError: another task is sending on this end.
        """
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            await checkpoint()
            self._check_send()
            if not self._push(data):
                await self._drain_backlog()
        finally:
            self._sending = False

    def send_nowait(self, data: bytes | bytearray | memoryview, /) -> bool:
        """Take all of ``data`` without blocking or a checkpoint (:class:`~evsim.net.base.NowaitSend`).

        What does not fit into the pipe waits here, in order, for the next :meth:`send_all` (which
        ``send_all(b"")`` also is); a ``send_all`` waiting right now sends it too.

        Returns:
            True when nothing waits here (or a waiting ``send_all`` will send it); False when the caller
            must arrange a ``send_all(b"")``.

        Raises:
            StreamBroken, StreamClosed: as :meth:`send_all`.
        """
        pipe = self._out
        if self._closed or self._eof_sent or pipe.broken is not None or pipe.reader_gone:
            self._check_send()  # raises (inlined test: once per message)
        return self._push(data) or self._sending

    def _check_send(self) -> None:
        if self._closed or self._eof_sent:
            raise StreamClosed("this stream was closed")
        pipe = self._out
        if pipe.broken is not None:
            raise StreamBroken(pipe.broken)
        if pipe.reader_gone:
            raise StreamBroken("the peer closed the connection")

    def _count_sent(self, n: int) -> None:
        self._bytes_sent += n
        self._counters.bytes_sent += n

    def _push(self, data: bytes | bytearray | memoryview) -> bool:
        """Put what fits into the pipe and the rest into the backlog; True if nothing waits."""
        backlog = self._backlog
        if backlog:
            backlog += data
            return False
        pipe = self._out
        if type(data) is bytes and pipe.direct and not pipe.pending:
            # The usual case (a TLS record on a link without latency, rate or capture), inlined: one message per
            # call (bytes still in flight after a policy change go first).
            total = len(data)
            buf = pipe.buf
            if total and pipe.capacity - len(buf) - pipe.pending_bytes >= total:
                buf += data
                self._bytes_sent += total
                self._counters.bytes_sent += total
                task = pipe.reader
                if task is not None:
                    pipe.reader = None
                    reschedule(task)
                return True
        view = memoryview(data).cast("B")
        total = len(view)
        if not total:
            return True
        space = pipe.space()
        if space >= total:
            pipe.push(view)
            self._count_sent(total)
            pipe.wake_reader()
            return True
        if space > 0:
            pipe.push(view[:space])
            self._count_sent(space)
            pipe.wake_reader()
        self._backlog = bytearray(view[max(space, 0) :])
        return False

    async def _drain_backlog(self) -> None:
        pipe = self._out
        while True:
            self._check_send()
            backlog = self._backlog
            if not backlog:
                return
            space = pipe.space()
            if space > 0:
                chunk = bytes(backlog[:space])
                del backlog[:space]
                pipe.push(memoryview(chunk))
                self._count_sent(len(chunk))
                pipe.wake_reader()
            else:
                await pipe.park_writer()

    async def wait_send_all_might_not_block(self) -> None:
        """Return once the pipe has room (or sending would fail at once).

        Raises:
            StreamClosed: this end was closed.
            trio.BusyResourceError: another task is sending or waiting on this end.
        """
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            pipe = self._out
            checkpointed = False
            while True:
                if self._closed or self._eof_sent:
                    if not checkpointed:
                        await checkpoint()
                    raise StreamClosed("this stream was closed")
                if pipe.broken is not None or pipe.reader_gone or pipe.space() > 0:
                    if not checkpointed:
                        await checkpoint()
                    return
                await pipe.park_writer()
                checkpointed = True
        finally:
            self._sending = False

    async def send_eof(self) -> None:
        """Half-close: the peer reads what was sent, then ``b""``; we can still receive.

        Raises:
            StreamClosed: this end was closed.
            trio.BusyResourceError: another task is sending on this end.
        """
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        await checkpoint()
        if self._closed:
            raise StreamClosed("this stream was closed")
        if self._backlog and not self._eof_sent:  # what send_nowait left goes first
            self._sending = True
            try:
                await self._drain_backlog()
            finally:
                self._sending = False
        self._eof_sent = True
        self._out.set_eof()
        self._out.wake_reader()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Return up to ``max_bytes`` bytes (all that is buffered when None); ``b""`` at end of stream.

        Raises:
            StreamBroken: the link was reset.
            StreamClosed: this end was closed (before or during the call).
            trio.BusyResourceError: another task is receiving on this end.
            ValueError, TypeError: ``max_bytes`` is not a positive integer.
        """
        if max_bytes is not None:
            max_bytes = operator.index(max_bytes)
            if max_bytes < 1:
                raise ValueError("max_bytes must be >= 1")
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this stream")
        self._receiving = True
        try:
            pipe = self._in
            checkpointed = False
            while True:
                deadline = pipe.promote() if pipe.pending else None
                buf = pipe.buf
                if self._closed or pipe.broken is not None or buf or (pipe.eof and deadline is None):
                    if not checkpointed:
                        await checkpoint()
                        checkpointed = True
                        continue
                    if self._closed:
                        raise StreamClosed("this stream was closed")
                    if pipe.broken is not None:
                        raise StreamBroken(pipe.broken)
                    if not buf:
                        return b""
                    if max_bytes is None or max_bytes >= len(buf):
                        data = bytes(buf)
                        buf.clear()
                    else:
                        data = bytes(buf[:max_bytes])
                        del buf[:max_bytes]
                    n = len(data)
                    self._bytes_received += n
                    self._counters.bytes_received += n
                    if pipe.writer is not None:  # (tested inline: no writer waits on the message path)
                        pipe.wake_writer()
                    return data
                if deadline is None:  # park_reader(None), inlined: one coroutine less per message
                    pipe.reader = current_task()
                    await wait_task_rescheduled(pipe._abort_reader)
                else:
                    await pipe.park_reader(deadline)
                checkpointed = True
        finally:
            self._receiving = False

    def close_now(self) -> None:
        """Close this end synchronously (what :meth:`aclose` does before its checkpoint)."""
        if self._closed:
            return
        self._closed = True
        self._counters.open_streams -= 1
        inbound = self._in
        inbound.reader_gone = True
        inbound.buf.clear()
        inbound.pending = None
        inbound.pending_bytes = 0
        inbound.wake_writer()  # the peer's blocked sender: broken
        inbound.wake_reader()  # our own blocked receiver: closed
        outbound = self._out
        outbound.set_eof()
        outbound.wake_reader()  # the peer's blocked receiver: end of stream
        outbound.wake_writer()  # our own blocked sender: closed
        if self._link is not None:
            self._link.end_closed()

    async def aclose(self) -> None:
        """Close this end (idempotent); the peer reads what was sent, then ``b""``."""
        self.close_now()
        await checkpoint()


class _Link:
    """A connection between two hosts: two pipes, two ends, and the bookkeeping to break it."""

    __slots__ = ("_net", "a_host", "b_host", "open_ends", "pipes")

    def __init__(self, net: VirtualNetwork, a_host: str, b_host: str, pipes: tuple[Pipe, Pipe]) -> None:
        self._net = net
        self.a_host = a_host
        self.b_host = b_host
        self.pipes = pipes
        self.open_ends = 2

    def reset(self, reason: str) -> None:
        if self.pipes[0].broken is None:
            self._net._counters.broken_links += 1
        for pipe in self.pipes:
            pipe.reset(reason)

    def end_closed(self) -> None:
        self.open_ends -= 1
        if self.open_ends == 0:
            self._net._forget(self)


class VirtualListener(NetListener):
    """Accepts connections made with :meth:`VirtualNetwork.connect` to its ``(host, port)``."""

    __slots__ = ("_address", "_backlog", "_closed", "_lot", "_net", "_queue", "_room")

    def __init__(self, net: VirtualNetwork, address: tuple[str, int], backlog: int) -> None:
        self._net = net
        self._address = address
        self._backlog = backlog
        self._queue: deque[VirtualStream] = deque()
        self._lot = trio.lowlevel.ParkingLot()  # accept() waiting for a connection
        self._room = trio.lowlevel.ParkingLot()  # connect() waiting for room in the backlog
        self._closed = False

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` this listener accepts on."""
        return self._address

    async def accept(self) -> VirtualStream:
        """Wait for the next connection and return its server end.

        Raises:
            StreamClosed: the listener was closed.
        """
        await checkpoint()
        while True:
            if self._closed:
                raise StreamClosed(f"listener {self._address[0]}:{self._address[1]} was closed")
            if self._queue:
                stream = self._queue.popleft()
                self._pass_room()
                return stream
            await self._lot.park()

    def _pass_room(self) -> None:
        """Wake one connect() waiting for room, if there is room (one at a time: no thundering herd)."""
        if self._room and len(self._queue) < self._backlog:
            self._room.unpark()

    async def aclose(self) -> None:
        """Stop listening; queued, never-accepted connections are reset."""
        if not self._closed:
            self._closed = True
            self._net._unlisten(self)
            while self._queue:
                stream = self._queue.popleft()
                if stream._link is not None:
                    stream._link.reset("the listener closed before accepting the connection")
                stream.close_now()
            self._lot.unpark_all()
            self._room.unpark_all()
        await checkpoint()


def _pair(a: str, b: str) -> frozenset[str]:
    return frozenset((a, b))


class VirtualNetwork:
    """An in-memory network of named hosts; implements :class:`~evsim.net.base.Network`.

    Args:
        buffer_size: bytes buffered per direction of every connection (back-pressure beyond that).
        backlog: connections queued per listener (not yet accepted); further connects wait for room.
        connect_timeout: seconds a connect waits for room before it is refused (trio time).
        datagram_queue: datagrams queued per datagram socket before further ones are dropped.
        seed: seed of the random source that decides datagram loss (:attr:`LinkPolicy.loss`).
    """

    def __init__(
        self,
        *,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        backlog: int = DEFAULT_BACKLOG,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        datagram_queue: int = DEFAULT_DATAGRAM_QUEUE,
        seed: int | str = 0,
    ) -> None:
        if buffer_size < 1:
            raise ConfigError("buffer_size must be >= 1", path="buffer_size", value=buffer_size)
        if backlog < 1:
            raise ConfigError("backlog must be >= 1", path="backlog", value=backlog)
        self._buffer_size = buffer_size
        self._backlog = backlog
        self._connect_timeout = connect_timeout
        self._listeners: dict[tuple[str, int], VirtualListener] = {}
        self._down: set[str] = set()
        self._partitions: set[frozenset[str]] = set()
        self._policies: dict[frozenset[str], LinkPolicy] = {}
        self._rates: dict[tuple[str, str], Rate] = {}  # (from, to) -> the transmitter of that direction
        self._links: dict[str, set[_Link]] = {}
        self._ports = itertools.cycle(range(*_EPHEMERAL))
        self._counters = NetworkCounters()
        if datagram_queue < 1:
            raise ConfigError("datagram_queue must be >= 1", path="datagram_queue", value=datagram_queue)
        self._datagram_queue = datagram_queue
        self._datagram_sockets: dict[tuple[str, int], VirtualDatagramSocket] = {}
        self._loss_rng = random.Random(seed)
        self._capture: Capture | None = None

    def attach_capture(self, capture: Capture | None) -> None:
        """Capture the connections made from now on to ``capture`` (:mod:`evsim.net.capture`); None stops."""
        self._capture = capture

    # -- Network -------------------------------------------------------------------------------------

    async def connect(self, host: str, port: int, *, source: str | None = None) -> VirtualStream:
        """Connect from host ``source`` (default ``"client"``) to the listener at ``host:port``.

        Returns the client end as soon as the connection is queued (like TCP, before the server
        accepts). While the listener's backlog is full the call waits, like a TCP client retrying its
        SYN, up to ``connect_timeout``.

        Raises:
            ConnectionRefused: nobody listens there, either host is down, the two hosts are
                partitioned, or the backlog stayed full for ``connect_timeout`` seconds.
        """
        await checkpoint()
        src = "client" if source is None else source
        deadline = trio.current_time() + self._connect_timeout
        while True:
            listener = self._listeners.get((host, port))
            reason = None
            if host in self._down:
                reason = f"host {host} is down"
            elif src in self._down:
                reason = f"host {src} is down"
            elif _pair(src, host) in self._partitions:
                reason = f"{src} and {host} are partitioned"
            elif listener is None:
                reason = _NO_LISTENER
            if reason is not None or listener is None:
                self._counters.refused += 1
                if self._capture is not None:
                    self._capture.refused(
                        src, (host, port), answered=listener is None and reason == _NO_LISTENER
                    )
                if listener is not None:
                    listener._pass_room()
                raise ConnectionRefused(f"connect {src} -> {host}:{port} refused: {reason}")
            if len(listener._queue) < listener._backlog:
                break
            if trio.current_time() >= deadline:
                self._counters.refused += 1
                listener._pass_room()
                raise ConnectionRefused(
                    f"connect {src} -> {host}:{port} timed out: the listen backlog "
                    f"({listener._backlog}) stayed full for {self._connect_timeout} s"
                )
            with trio.move_on_at(deadline):
                await listener._room.park()
        policy = self._policies.get(_pair(src, host))
        latency = policy.latency_s if policy is not None else 0.0
        client_addr = (src, next(self._ports))
        server_addr = (host, port)
        to_server: Pipe
        to_client: Pipe
        up, down = self._rates.get((src, host)), self._rates.get((host, src))
        if self._capture is None:
            to_server = Pipe(self._buffer_size, latency, up)
            to_client = Pipe(self._buffer_size, latency, down)
        else:
            tap = self._capture.open_link(client_addr, server_addr)
            to_server = TappedPipe(self._buffer_size, latency, up, tap, 0)
            to_client = TappedPipe(self._buffer_size, latency, down, tap, 1)
        link = _Link(self, src, host, (to_server, to_client))
        counters = self._counters
        client = VirtualStream(link, to_client, to_server, client_addr, server_addr, counters)
        server = VirtualStream(link, to_server, to_client, server_addr, client_addr, counters)
        self._links.setdefault(src, set()).add(link)
        self._links.setdefault(host, set()).add(link)
        counters.connects += 1
        listener._queue.append(server)
        listener._lot.unpark()
        return client

    async def listen(self, host: str, port: int) -> VirtualListener:
        """Listen on ``host:port``; port 0 picks a free port from the dynamic range.

        Raises:
            ConfigError: the address is already in use, or the port is out of range.
        """
        await checkpoint()
        port = self._claim_port(self._listeners, host, port, "")
        listener = VirtualListener(self, (host, port), self._backlog)
        self._listeners[host, port] = listener
        return listener

    def _claim_port(self, taken: Mapping[tuple[str, int], object], host: str, port: int, what: str) -> int:
        """The port to bind on ``host``: ``port`` if free, a free ephemeral one for 0 (streams and datagrams
        have separate namespaces, like TCP and UDP: ``taken`` is the one in question, ``what`` names it).

        Raises:
            ConfigError: out of range, in use, or no ephemeral port left.
        """
        if not 0 <= port <= 65535:
            raise ConfigError("port must be in 0..65535", path="port", value=port)
        if port:
            if (host, port) in taken:
                raise ConfigError(
                    f"{what}address {host}:{port} is already in use on the virtual network",
                    value=f"{host}:{port}",
                    fix="close the other listener or socket, or pick another port",
                )
            return port
        for _ in range(_EPHEMERAL[1] - _EPHEMERAL[0]):
            candidate = next(self._ports)
            if (host, candidate) not in taken:
                return candidate
        raise ConfigError(f"no free {what}port left on virtual host {host}", value=host)

    def statistics(self) -> NetworkStatistics:
        """A snapshot of the network's counters."""
        return self._counters.snapshot(listeners=len(self._listeners))

    # -- datagrams ----------------------------------------------------------------------------------------

    async def bind_datagram(self, host: str, port: int) -> VirtualDatagramSocket:
        """Bind a datagram socket on virtual host ``host`` (port 0 picks a free port); a namespace of its own,
        like UDP beside TCP.

        Raises:
            ConfigError: the address is in use or the port is out of range.
        """
        await checkpoint()
        port = self._claim_port(self._datagram_sockets, host, port, "datagram ")
        sock = VirtualDatagramSocket(self, (host, port), self._datagram_queue)
        self._datagram_sockets[host, port] = sock
        return sock

    def _deliver(self, sender: VirtualDatagramSocket, data: bytes, address: tuple[str, int]) -> None:
        """Route one datagram: drop it (counted on the sender) or queue it at the receiver."""
        if self._capture is not None:
            self._capture.datagram(sender.local_address, address, data)
        src = sender.local_address[0]
        dst_host = address[0]
        counters = sender._counters
        if src in self._down or dst_host in self._down:
            counters.drop("host_down")
            return
        if _pair(src, dst_host) in self._partitions:
            counters.drop("partition")
            return
        policy = self._policies.get(_pair(src, dst_host))
        if policy is not None and policy.loss > 0.0 and self._loss_rng.random() < policy.loss:
            counters.drop("loss")
            return
        receiver = self._datagram_sockets.get((address[0], address[1]))
        if receiver is None:
            counters.drop("no_listener")
            return
        latency = policy.latency_s if policy is not None else 0.0
        if not receiver._enqueue(data, sender.local_address, trio.current_time() + latency):
            counters.drop("queue_full")

    def _unbind(self, sock: VirtualDatagramSocket) -> None:
        if self._datagram_sockets.get(sock.local_address) is sock:
            del self._datagram_sockets[sock.local_address]

    # -- faults -----------------------------------------------------------------------------------------

    def partition(self, host_a: str, host_b: str) -> None:
        """Cut ``host_a`` from ``host_b``: their connections reset, new connects between them are refused."""
        pair = _pair(host_a, host_b)
        self._partitions.add(pair)
        for link in list(self._links_between(host_a, host_b)):
            link.reset(f"network partition between {host_a} and {host_b}")

    def heal(self, host_a: str, host_b: str) -> None:
        """Undo :meth:`partition` for new connections (reset connections stay broken)."""
        self._partitions.discard(_pair(host_a, host_b))

    def set_host_down(self, host: str, down: bool = True) -> None:
        """Take ``host`` off the network (its connections reset, connects to/from it refused) or back on."""
        if not down:
            self._down.discard(host)
            return
        self._down.add(host)
        for link in list(self._links.get(host, ())):
            link.reset(f"host {host} is down")

    def is_host_down(self, host: str) -> bool:
        """Whether :meth:`set_host_down` took ``host`` off the network."""
        return host in self._down

    def link_policy(self, host_a: str, host_b: str) -> LinkPolicy:
        """The policy between the two hosts now (the default when none was set)."""
        return self._policies.get(_pair(host_a, host_b), LinkPolicy())

    def set_link_policy(self, host_a: str, host_b: str, policy: LinkPolicy) -> None:
        """Apply ``policy`` to connections between the two hosts, existing and new (to the bytes written from
        now on: bytes in flight keep their arrival times)."""
        pair = _pair(host_a, host_b)
        if policy == LinkPolicy():
            self._policies.pop(pair, None)
        else:
            self._policies[pair] = policy
        for direction in ((host_a, host_b), (host_b, host_a)):
            rate = self._rates.get(direction)
            if not policy.bytes_per_s:
                self._rates.pop(direction, None)
            elif rate is None:
                self._rates[direction] = Rate(policy.bytes_per_s)
            else:
                rate.bytes_per_s = policy.bytes_per_s
        for link in self._links_between(host_a, host_b):
            for pipe, src, dst in (
                (link.pipes[0], link.a_host, link.b_host),
                (link.pipes[1], link.b_host, link.a_host),
            ):
                pipe.set_policy(policy.latency_s, self._rates.get((src, dst)))

    # -- internals ----------------------------------------------------------------------------------------

    def _links_between(self, host_a: str, host_b: str) -> Iterator[_Link]:
        for link in self._links.get(host_a, ()):
            if {link.a_host, link.b_host} == {host_a, host_b}:
                yield link

    def _forget(self, link: _Link) -> None:
        for host in (link.a_host, link.b_host):
            links = self._links.get(host)
            if links is not None:
                links.discard(link)
                if not links:
                    del self._links[host]

    def _unlisten(self, listener: VirtualListener) -> None:
        if self._listeners.get(listener.address) is listener:
            del self._listeners[listener.address]


def memory_pipe_pair(
    buffer_size: int = DEFAULT_BUFFER_SIZE, *, latency_s: float = 0.0, bytes_per_s: float = 0.0
) -> tuple[VirtualStream, VirtualStream]:
    """Two connected :class:`VirtualStream` ends outside any network (for tests and benchmarks).

    ``buffer_size`` bytes are buffered, ``latency_s`` and ``bytes_per_s`` (0: unlimited) apply per direction
    (see :class:`LinkPolicy`). Returns ``(left, right)``; what one sends, the other receives.
    """
    LinkPolicy(latency_s=latency_s, bytes_per_s=bytes_per_s)  # the same checks as a link's policy
    to_right = Pipe(buffer_size, latency_s, Rate(bytes_per_s) if bytes_per_s else None)
    to_left = Pipe(buffer_size, latency_s, Rate(bytes_per_s) if bytes_per_s else None)
    counters = NetworkCounters()
    left = VirtualStream(None, to_left, to_right, ("left", 1), ("right", 2), counters)
    right = VirtualStream(None, to_right, to_left, ("right", 2), ("left", 1), counters)
    return left, right
