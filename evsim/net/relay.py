"""A fault relay: partitions, host faults, latency and stalls for a network that has none of its own (loopback TCP).

Theory of operation
-------------------
Loopback TCP cannot be partitioned from inside the process: the kernel moves the bytes. So a world that needs
faults over TCP does not let its nodes connect to each other directly; every connection goes through
:class:`FaultRelay`, a byte forwarder the run owns (its tasks live in its own nursery, started with
:meth:`FaultRelay.run`), and :class:`RelayedNetwork` is the :class:`~evsim.net.base.Network` nodes see.

**Who is the source.** The relay listens on one loopback port per *route*: a (source host, destination host,
destination port) triple, opened the first time that source connects there and kept for the run. A connection
accepted on a route's port therefore comes from that route's source, with no byte added to the stream (TLS
runs end to end through the relay, which never sees plaintext). :meth:`FaultRelay.connect` names the source:
it is the ``source`` argument every node already passes to ``Network.connect`` (a station's id, a
controller's host). A packet capture shows one relay port per pair (``FaultRelay.routes()`` lists them).

**Only our own connections.** A relay port is an ordinary loopback port any local process could reach. The
relay forwards a connection only once :meth:`FaultRelay.connect` has *claimed* it (by the client end's own
address, which is the accepted connection's remote address); a connection nobody claims within
``claim_timeout`` is reset and counted (``strangers``).

**Refusals keep their meaning.** The kernel accepts a connection to a relay port before the relay knows whether
the destination listens. So ``connect`` waits until the relay has connected upstream: if the destination
refuses, or a fault forbids the pair, the client end is reset and ``connect`` raises
:class:`~evsim.errors.ConnectionRefused`, as a direct connect would.

**Faults** are the :class:`~evsim.net.faults.FaultTable`'s, with the in-memory network's semantics:
:meth:`RelayedNetwork.partition` and :meth:`RelayedNetwork.set_host_down` refuse new connections between the
hosts and reset the open ones (both ends get a TCP RST, :meth:`evsim.net.tcp.TcpStream.abort`; bytes held by
the relay are dropped, bytes the kernel already handed to an end can still be read before the reset shows);
``heal`` lets new connections through. Latency delays every chunk by the pair's one-way delay from the
moment the relay read it (a change applies to open connections from the next chunk); a stall
(:meth:`RelayedNetwork.hold`) keeps bytes in the relay until it ends, without breaking the connection.

**Bounds and tasks.** Each direction of a connection has a reader task and a writer task. A chunk read when
nothing waits before it and the pair has no latency or stall goes straight to the other end from the reader;
otherwise it queues for the writer, which sends each chunk when it is due, in order. Per direction the relay
holds at most ``queue`` chunks of at most ``chunk`` bytes (64 KiB by default, the virtual network's pipe size)
plus one chunk being written; a slow reader back-pressures the writer through the relay. End of stream is forwarded as a half-close; a reset or error on either side
resets both. Datagrams are not relayed (``bind_datagram`` goes to the inner network).
"""

from __future__ import annotations

import errno
from collections.abc import Callable

import attrs
import trio

from evsim.errors import ConfigError, ConnectionRefused, TransportError
from evsim.net.base import (
    Abortable,
    DatagramNetwork,
    DatagramSocket,
    NetListener,
    Network,
    NetworkStatistics,
    format_address,
    remote_address,
)
from evsim.net.faults import DEFAULT_SOURCE, FaultTable
from evsim.net.virtual import LinkPolicy

__all__ = ["FaultRelay", "RelayStatistics", "RelayedNetwork"]

DEFAULT_CHUNK = 16 * 1024
"""Largest read per direction, bytes (one TLS record of 16 KiB plus headers fits in about two)."""
DEFAULT_QUEUE = 4
"""Chunks held per direction: 4 x 16 KiB = 64 KiB, the in-memory network's default pipe buffer."""
DEFAULT_CLAIM_TIMEOUT = 10.0
"""Seconds the two halves of a relayed connect wait for each other (the relay accepts, the connecting
node claims); on loopback they meet within a scheduler pass."""
_ACCEPT_BACKOFF = 0.1
"""Seconds a route's accept loop waits after running out of file descriptors (trio's serve_listeners waits
the same)."""
_CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
_STREAM_ERRORS = (TransportError, trio.BrokenResourceError, trio.ClosedResourceError)


@attrs.frozen
class RelayStatistics:
    """A snapshot of a relay's counters.

    Attributes:
        routes: relay ports open (one per source, destination host and port).
        open_connections: connections being forwarded now.
        relayed: connections forwarded since the start.
        refused: connects refused by a fault (partition, host down).
        unreachable: connects whose destination refused the relay.
        resets: open connections reset by a fault.
        broken: open connections that ended because one end reset or failed.
        strangers: connections to a relay port that no connect of this process claimed (reset).
        bytes_forwarded: bytes written to either end.
    """

    routes: int
    open_connections: int
    relayed: int
    refused: int
    unreachable: int
    resets: int
    broken: int
    strangers: int
    bytes_forwarded: int


class _Counters:
    __slots__ = ("broken", "bytes_forwarded", "refused", "relayed", "resets", "strangers", "unreachable")

    def __init__(self) -> None:
        self.relayed = self.refused = self.unreachable = self.resets = self.broken = self.strangers = 0
        self.bytes_forwarded = 0


class _Handoff:
    """Where the connecting node and the relay meet for one connection."""

    __slots__ = ("claimed", "error", "settled")

    def __init__(self) -> None:
        self.claimed = trio.Event()  # the connecting node named this connection as its own
        self.settled = trio.Event()  # the relay connected upstream, or gave up (error)
        self.error: Exception | None = None


class _Route:
    """One relay port: connections from ``source`` to ``host:port``."""

    __slots__ = ("address", "handoffs", "host", "listener", "port", "ready", "source")

    def __init__(self, source: str, host: str, port: int) -> None:
        self.source = source
        self.host = host
        self.port = port
        self.listener: NetListener | None = None
        self.address: tuple[str, int] | None = None
        self.ready = trio.Event()
        self.handoffs: dict[tuple[str, int], _Handoff] = {}

    def handoff(self, address: tuple[str, int]) -> _Handoff:
        found = self.handoffs.get(address)
        if found is None:
            found = self.handoffs[address] = _Handoff()
        return found


class _Direction:
    """One direction of a forwarded connection: where it writes, and how many chunks wait in its queue (or are
    being written from it); the reader writes a chunk itself only when none do, so the order holds."""

    __slots__ = ("dst", "pending")

    def __init__(self, dst: trio.abc.Stream) -> None:
        self.dst = dst
        self.pending = 0


class _Relayed:
    """One forwarded connection: its pair and the cancel scope a fault cancels."""

    __slots__ = ("broken", "host", "reset_by_fault", "scope", "source")

    def __init__(self, source: str, host: str) -> None:
        self.source = source
        self.host = host
        self.scope = trio.CancelScope()
        self.broken: str | None = None
        self.reset_by_fault = False

    def fail(self, reason: str) -> None:
        if self.broken is None:
            self.broken = reason
        self.scope.cancel()


async def abort(stream: trio.abc.Stream) -> None:
    """Close ``stream`` with a reset where the stream can (:class:`~evsim.net.base.Abortable`), else close it;
    runs to the end even when cancelled."""
    with trio.CancelScope(shield=True):
        if isinstance(stream, Abortable):
            await stream.abort()
        else:
            await stream.aclose()


def _local_address(stream: trio.abc.Stream) -> tuple[str, int] | None:
    statistics = getattr(stream, "statistics", None)
    local = getattr(statistics(), "local", None) if statistics is not None else None
    if not isinstance(local, tuple) or len(local) < 2:
        return None
    return str(local[0]), int(local[1])


class FaultRelay:
    """Forwards connections between the nodes of a run and applies the faults of :attr:`faults` to them.

    Args:
        network: the network the relay listens on and connects over (loopback TCP in a run; any network in
            tests).
        host: the host its route ports listen on.
        faults: the fault state (a fresh one by default).
        chunk: largest read per direction, bytes.
        queue: chunks held per direction.
        claim_timeout: seconds the connect and the relay wait for each other.
        on_event: called as ``on_event(kind, **fields)`` for what the relay decides on its own: a connection
            nobody claimed (``relay_refused``, with the relay port and the peer) and the connections a fault
            reset (``relay_reset``, with the fault and how many); None: not reported.
    """

    def __init__(
        self,
        network: Network,
        *,
        host: str = "127.0.0.1",
        faults: FaultTable | None = None,
        chunk: int = DEFAULT_CHUNK,
        queue: int = DEFAULT_QUEUE,
        claim_timeout: float = DEFAULT_CLAIM_TIMEOUT,
        on_event: Callable[..., object] | None = None,
    ) -> None:
        if chunk < 1 or queue < 1:
            raise ConfigError("the relay's chunk and queue must be >= 1", value=(chunk, queue))
        self.network = network
        self.host = host
        self.faults = FaultTable() if faults is None else faults
        self._chunk = chunk
        self._queue = queue
        self._claim_timeout = claim_timeout
        self._routes: dict[tuple[str, str, int], _Route] = {}
        self._open: set[_Relayed] = set()
        self._counters = _Counters()
        self._nursery: trio.Nursery | None = None
        self._on_event = on_event

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the relay's tasks until cancelled (route ports close, open connections are reset)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    def statistics(self) -> RelayStatistics:
        """A snapshot of the relay's counters."""
        c = self._counters
        return RelayStatistics(
            routes=sum(1 for r in self._routes.values() if r.address is not None),
            open_connections=len(self._open),
            relayed=c.relayed,
            refused=c.refused,
            unreachable=c.unreachable,
            resets=c.resets,
            broken=c.broken,
            strangers=c.strangers,
            bytes_forwarded=c.bytes_forwarded,
        )

    def routes(self) -> dict[tuple[str, str, int], tuple[str, int]]:
        """(source, destination host, destination port) -> the relay address connections of that pair use."""
        return {key: r.address for key, r in self._routes.items() if r.address is not None}

    def reset(self, breaks: Callable[[str, str], bool], *, fault: str = "reset") -> int:
        """Reset every open connection ``breaks(source, destination host)`` names; returns how many.

        Args:
            breaks: which connections, by (source, destination host).
            fault: what does it, for the ``relay_reset`` event.
        """
        hit = [conn for conn in self._open if conn.broken is None and breaks(conn.source, conn.host)]
        for conn in hit:
            conn.reset_by_fault = True
            conn.fail(f"{fault}: reset between {conn.source} and {conn.host}")
        if hit and self._on_event is not None:
            self._on_event("relay_reset", fault=fault, connections=len(hit))
        return len(hit)

    # -- connecting ------------------------------------------------------------------------------------

    async def connect(self, host: str, port: int, *, source: str | None = None) -> trio.abc.Stream:
        """Open a connection from ``source`` to ``host:port`` through the relay.

        Returns:
            The connecting end; the relay has connected to the destination by then.

        Raises:
            ConnectionRefused: a fault forbids the pair, the destination refused, or the relay is not running.
            ConfigError: the inner network refuses the destination address.
        """
        src = DEFAULT_SOURCE if source is None else source
        reason = self.faults.refusal(src, host)
        if reason is not None:
            await trio.lowlevel.checkpoint()
            self._counters.refused += 1
            raise ConnectionRefused(f"connect {src} -> {host}:{port} refused: {reason}")
        route = await self._route(src, host, port)
        assert route.address is not None
        stream = await self.network.connect(*route.address, source=src)
        local = _local_address(stream)
        if local is None:
            await abort(stream)
            raise ConnectionRefused(
                f"connect {src} -> {host}:{port}: the relay cannot tell the connection apart"
            )
        handoff = route.handoff(local)
        handoff.claimed.set()
        try:
            with trio.fail_after(self._claim_timeout):
                await handoff.settled.wait()
        except trio.TooSlowError:
            route.handoffs.pop(local, None)
            await abort(stream)
            raise ConnectionRefused(
                f"connect {src} -> {host}:{port}: the relay did not answer in {self._claim_timeout} s"
            ) from None
        except BaseException:
            route.handoffs.pop(local, None)
            await abort(stream)
            raise
        if handoff.error is not None:
            await abort(stream)
            if isinstance(handoff.error, ConfigError):
                raise handoff.error
            raise ConnectionRefused(str(handoff.error))
        return stream

    async def _route(self, source: str, host: str, port: int) -> _Route:
        key = (source, host, port)
        route = self._routes.get(key)
        if route is not None:
            await route.ready.wait()
            if route.address is None:
                raise ConnectionRefused(f"connect {source} -> {host}:{port}: the relay port did not open")
            return route
        nursery = self._nursery
        if nursery is None:
            await trio.lowlevel.checkpoint()
            raise ConnectionRefused(f"connect {source} -> {host}:{port}: the fault relay is not running")
        route = self._routes[key] = _Route(source, host, port)
        try:
            route.listener = await self.network.listen(self.host, 0)
            route.address = route.listener.address
            nursery.start_soon(self._serve, route, nursery)
        except BaseException:
            del self._routes[key]
            if route.listener is not None:
                await abort_listener(route.listener)
            raise
        finally:
            route.ready.set()
        return route

    # -- forwarding ------------------------------------------------------------------------------------

    async def _serve(self, route: _Route, nursery: trio.Nursery) -> None:
        listener = route.listener
        assert listener is not None
        try:
            while True:
                try:
                    accepted = await listener.accept()
                except OSError as exc:
                    if exc.errno not in _CAPACITY_ERRNOS:
                        raise
                    await trio.sleep(_ACCEPT_BACKOFF)
                    continue
                except trio.ClosedResourceError:
                    return
                except TransportError:  # that connection was lost before it was accepted
                    continue
                nursery.start_soon(self._relay, route, accepted)
        finally:
            await abort_listener(listener)

    async def _relay(self, route: _Route, accepted: trio.abc.Stream) -> None:
        peer = remote_address(accepted)
        handoff = None if peer is None else route.handoff(peer)
        if handoff is not None:
            with trio.move_on_after(self._claim_timeout):
                await handoff.claimed.wait()
        if handoff is None or not handoff.claimed.is_set():
            if peer is not None:
                route.handoffs.pop(peer, None)
            self._counters.strangers += 1
            if self._on_event is not None:
                shown = "unknown" if peer is None else format_address(peer)
                self._on_event(
                    "relay_refused",
                    peer=shown,
                    relay=format_address(route.address) if route.address is not None else "",
                    reason="no connect of this run claimed it",
                )
            await abort(accepted)
            return
        assert peer is not None
        upstream: trio.abc.Stream | None = None
        reason = self.faults.refusal(route.source, route.host)
        if reason is None:
            try:
                upstream = await self.network.connect(route.host, route.port, source=self.host)
            except (TransportError, ConfigError) as exc:
                self._counters.unreachable += 1
                handoff.error = exc
            else:
                # a fault that began while the relay connected cuts this connection too
                reason = self.faults.refusal(route.source, route.host)
                if reason is not None:
                    await abort(upstream)
                    upstream = None
        if reason is not None:
            self._counters.refused += 1
            handoff.error = ConnectionRefused(
                f"connect {route.source} -> {route.host}:{route.port} refused: {reason}"
            )
        route.handoffs.pop(peer, None)
        handoff.settled.set()
        if upstream is None:
            await abort(accepted)
            return
        await self._forward(_Relayed(route.source, route.host), accepted, upstream)

    async def _forward(self, conn: _Relayed, client: trio.abc.Stream, upstream: trio.abc.Stream) -> None:
        self._open.add(conn)
        self._counters.relayed += 1
        try:
            with conn.scope:
                async with trio.open_nursery() as nursery:
                    for src, dst in ((client, upstream), (upstream, client)):
                        way = _Direction(dst)
                        send, receive = trio.open_memory_channel[tuple[float, bytes | bytearray]](self._queue)
                        nursery.start_soon(self._read, conn, src, way, send)
                        nursery.start_soon(self._write, conn, receive, way)
        finally:
            self._open.discard(conn)
            if conn.broken is None:
                with trio.CancelScope(shield=True):
                    await client.aclose()
                    await upstream.aclose()
            else:
                if conn.reset_by_fault:
                    self._counters.resets += 1
                else:
                    self._counters.broken += 1
                await abort(client)
                await abort(upstream)

    async def _read(
        self,
        conn: _Relayed,
        src: trio.abc.Stream,
        way: _Direction,
        send: trio.MemorySendChannel[tuple[float, bytes | bytearray]],
    ) -> None:
        """Read one direction; a chunk goes straight on when nothing waits before it and the pair has no latency
        or stall now, else it queues for :meth:`_write` (which keeps the order and the delays)."""
        faults = self.faults
        async with send:
            try:
                while True:
                    data = await src.receive_some(self._chunk)
                    if not data:
                        return
                    now = trio.current_time()
                    if (
                        not way.pending
                        and not faults.latency(conn.source, conn.host)
                        and faults.held_until(conn.source, conn.host, now) is None
                    ):
                        await way.dst.send_all(data)
                        self._counters.bytes_forwarded += len(data)
                    else:
                        way.pending += 1
                        await send.send((now, data))
            except _STREAM_ERRORS as exc:
                conn.fail(f"relaying failed: {exc}")

    async def _write(
        self,
        conn: _Relayed,
        receive: trio.MemoryReceiveChannel[tuple[float, bytes | bytearray]],
        way: _Direction,
    ) -> None:
        """Write the chunks :meth:`_read` queued, each once it is due; then forward the end of stream."""
        async with receive:
            try:
                async for read_at, data in receive:
                    await self._due(conn, read_at)
                    await way.dst.send_all(data)
                    way.pending -= 1
                    self._counters.bytes_forwarded += len(data)
                if isinstance(way.dst, trio.abc.HalfCloseableStream):
                    await way.dst.send_eof()
            except _STREAM_ERRORS as exc:
                conn.fail(f"write failed: {exc}")

    async def _due(self, conn: _Relayed, read_at: float) -> None:
        """Wait until a chunk read at ``read_at`` may go: after the pair's latency, and after any stall."""
        faults = self.faults
        while True:
            now = trio.current_time()
            due = read_at + faults.latency(conn.source, conn.host)
            if due > now:
                await trio.sleep_until(due)
                continue
            until = faults.held_until(conn.source, conn.host, now)
            if until is None:
                return
            await trio.sleep_until(until)


async def abort_listener(listener: NetListener) -> None:
    """Close a listener, even when cancelled."""
    with trio.CancelScope(shield=True):
        await listener.aclose()


class RelayedNetwork:
    """The :class:`~evsim.net.base.Network` of a run whose connections go through a :class:`FaultRelay`, with
    the fault controls of :class:`~evsim.net.virtual.VirtualNetwork` (partition, heal, hosts down, link
    policies) and stalls.

    Listening and datagrams go to the relay's inner network directly (a server listens where it says).
    """

    def __init__(self, relay: FaultRelay) -> None:
        self.relay = relay
        self.faults = relay.faults

    async def connect(self, host: str, port: int, *, source: str | None = None) -> trio.abc.Stream:
        return await self.relay.connect(host, port, source=source)

    async def listen(self, host: str, port: int) -> NetListener:
        return await self.relay.network.listen(host, port)

    async def bind_datagram(self, host: str, port: int) -> DatagramSocket:
        inner = self.relay.network
        if not isinstance(inner, DatagramNetwork):
            raise ConfigError("the relay's network carries no datagrams", value=type(inner).__name__)
        return await inner.bind_datagram(host, port)

    def statistics(self) -> NetworkStatistics:
        """The inner network's counters; ``broken_links`` counts the connections faults reset."""
        inner = self.relay.network.statistics()
        return attrs.evolve(inner, broken_links=inner.broken_links + self.relay.statistics().resets)

    # -- faults (the VirtualNetwork's controls) ---------------------------------------------------------

    def partition(self, host_a: str, host_b: str) -> None:
        """Cut ``host_a`` from ``host_b``: their connections reset, new connects between them are refused."""
        self.relay.reset(self.faults.partition(host_a, host_b), fault=f"partition {host_a} {host_b}")

    def heal(self, host_a: str, host_b: str) -> None:
        """Undo :meth:`partition` for new connections (reset connections stay broken)."""
        self.faults.heal(host_a, host_b)

    def set_host_down(self, host: str, down: bool = True) -> None:
        """Take ``host`` off the network (its connections reset, connects to/from it refused) or back on."""
        self.relay.reset(self.faults.set_host_down(host, down), fault=f"host {host} down")

    def is_host_down(self, host: str) -> bool:
        return self.faults.is_host_down(host)

    def set_link_policy(self, host_a: str, host_b: str, policy: LinkPolicy) -> None:
        """Apply ``policy``'s latency to connections between the two hosts, open and new (``loss`` concerns
        datagrams, which the relay does not carry)."""
        self.faults.set_link_policy(host_a, host_b, policy)

    def link_policy(self, host_a: str, host_b: str) -> LinkPolicy:
        """The policy between the two hosts now (the default when none was set)."""
        return self.faults.policy(host_a, host_b)

    def hold(self, host_a: str, host_b: str, until: float) -> None:
        """Stall the connections between the two hosts until trio time ``until`` (they stay open)."""
        self.faults.hold(host_a, host_b, until)
