"""Datagram sockets of the in-memory network (:class:`~evsim.net.virtual.VirtualNetwork` routes them)."""

from __future__ import annotations

import heapq
import itertools
from typing import TYPE_CHECKING

import trio
from trio.lowlevel import checkpoint

from evsim.errors import TransportError
from evsim.net.base import MAX_DATAGRAM, DatagramCounters, DatagramStatistics, StreamClosed

if TYPE_CHECKING:
    from evsim.net.virtual import VirtualNetwork

__all__ = ["VirtualDatagramSocket"]


class VirtualDatagramSocket:
    """A datagram socket on the virtual network (implements :class:`~evsim.net.base.DatagramSocket`).

    A datagram sent at trio time ``t`` arrives at ``t + latency_s`` of the pair's :class:`LinkPolicy`, unless
    either host is down, the hosts are partitioned, the policy's ``loss`` draws it, nothing is bound to the
    address, or the receiver already holds ``datagram_queue`` datagrams (arrived or in flight): then it is
    dropped and counted in the sender's :meth:`statistics`. Datagrams are returned in order of arrival.
    """

    __slots__ = ("_closed", "_counters", "_heap", "_local", "_lot", "_net", "_queue_limit", "_seq")

    def __init__(self, net: VirtualNetwork, local: tuple[str, int], queue_limit: int) -> None:
        self._net = net
        self._local = local
        self._queue_limit = queue_limit
        self._heap: list[tuple[float, int, bytes, tuple[str, int]]] = []
        self._seq = itertools.count()
        self._lot = trio.lowlevel.ParkingLot()
        self._counters = DatagramCounters()
        self._closed = False

    @property
    def local_address(self) -> tuple[str, int]:
        return self._local

    def statistics(self) -> DatagramStatistics:
        return self._counters.snapshot(self._local, self._closed)

    def _enqueue(self, data: bytes, source: tuple[str, int], arrival: float) -> bool:
        if self._closed or len(self._heap) >= self._queue_limit:
            return False
        heapq.heappush(self._heap, (arrival, next(self._seq), data, source))
        self._lot.unpark_all()
        return True

    async def send_to(self, data: bytes, address: tuple[str, int]) -> None:
        await checkpoint()
        if self._closed:
            raise StreamClosed("this datagram socket was closed")
        if len(data) > MAX_DATAGRAM:
            raise TransportError(f"datagram of {len(data)} octets is larger than {MAX_DATAGRAM}")
        payload = bytes(data)
        self._counters.sent += 1
        self._counters.bytes_sent += len(payload)
        self._net._deliver(self, payload, address)

    async def receive_from(self) -> tuple[bytes, tuple[str, int]]:
        await checkpoint()
        while True:
            if self._closed:
                raise StreamClosed("this datagram socket was closed")
            heap = self._heap
            if heap and heap[0][0] <= trio.current_time():
                _, _, data, source = heapq.heappop(heap)
                self._counters.received += 1
                self._counters.bytes_received += len(data)
                return data, source
            if heap:
                with trio.move_on_at(heap[0][0]):
                    await self._lot.park()
            else:
                await self._lot.park()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._heap.clear()
            self._net._unbind(self)
            self._lot.unpark_all()
        await checkpoint()
