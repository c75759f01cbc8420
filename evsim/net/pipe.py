"""One direction of an in-memory connection (:class:`Pipe`), and the variant a capture watches.

See :mod:`evsim.net.virtual` for how streams use pipes. A :class:`TappedPipe` reports what enters it, its EOF and
its reset to a :class:`~evsim.net.capture.LinkTap`; the network makes tapped pipes only while a capture is
attached, so an uncaptured connection runs exactly the plain pipe's code (its ``direct`` fast path included).
"""

from __future__ import annotations

from collections import deque
from typing import ClassVar

import trio
from trio.lowlevel import Abort, RaiseCancelT, Task, current_task, reschedule, wait_task_rescheduled

from evsim.net.capture import LinkTap

__all__ = ["SEGMENT", "Pipe", "Rate", "TappedPipe"]

SEGMENT = 16 * 1024
"""Bytes a rate-limited pipe schedules as one unit: one full TLS record (RFC 8446 §5.1, 2^14 bytes of
plaintext), so a reader sees a download progress record by record."""


class Rate:
    """The transmitter of one direction between two hosts: its rate and when it is free again (trio time)."""

    __slots__ = ("busy_until", "bytes_per_s")

    def __init__(self, bytes_per_s: float) -> None:
        self.bytes_per_s = bytes_per_s
        self.busy_until = 0.0

    def schedule(self, size: int, now: float) -> float:
        """Send ``size`` bytes after what is queued; return when the last byte has left."""
        done = max(now, self.busy_until) + size / self.bytes_per_s
        self.busy_until = done
        return done


class Pipe:
    """One direction of a connection: a bounded byte buffer with one parked reader and one parked writer."""

    __slots__ = (
        "broken",
        "buf",
        "capacity",
        "direct",
        "eof",
        "latency",
        "pending",
        "pending_bytes",
        "rate",
        "reader",
        "reader_gone",
        "writer",
    )

    def __init__(self, capacity: int, latency: float, rate: Rate | None = None) -> None:
        self.buf = bytearray()
        self.capacity = capacity
        self.eof = False  # the writing end closed or sent EOF
        self.reader_gone = False  # the reading end closed: writes fail
        self.broken: str | None = None  # link reset: everything fails
        self.reader: Task | None = None
        self.writer: Task | None = None
        self.latency = latency
        self.rate = rate  # shared with every pipe in the same direction between the same two hosts
        # bytes go straight into buf (the send fast path) unless something delays or watches them
        self.direct = latency == 0.0 and rate is None and not self.tapped
        # (arrival time, bytes) in flight when latency > 0, counted against capacity; created on first
        # use (an empty deque costs ~600 bytes, and most links have no latency)
        self.pending: deque[tuple[float, bytes]] | None = None
        self.pending_bytes = 0

    tapped: ClassVar[bool] = False

    def set_policy(self, latency: float, rate: Rate | None) -> None:
        """A new latency and transmitter for bytes written from now on (bytes in flight keep their times)."""
        self.latency = latency
        self.rate = rate
        self.direct = latency == 0.0 and rate is None and not self.tapped

    def set_eof(self) -> None:
        """The writing end sent EOF or closed."""
        self.eof = True

    def space(self) -> int:
        return self.capacity - len(self.buf) - self.pending_bytes

    def push(self, chunk: memoryview) -> None:
        rate = self.rate
        if self.latency > 0.0 or rate is not None or self.pending:  # bytes in flight go first: no reordering
            if self.pending is None:
                self.pending = deque()
            now = trio.current_time()
            if rate is None:
                self.pending.append((now + self.latency, bytes(chunk)))
            else:
                for start in range(0, len(chunk), SEGMENT):
                    segment = bytes(chunk[start : start + SEGMENT])
                    self.pending.append((rate.schedule(len(segment), now) + self.latency, segment))
            self.pending_bytes += len(chunk)
        else:
            self.buf += chunk

    def promote(self) -> float | None:
        """Move arrived bytes into the buffer; return the next arrival time, if any is still in flight."""
        pending = self.pending
        if pending is None:
            return None
        now = trio.current_time()
        while pending:
            arrival, chunk = pending[0]
            if arrival > now:
                return arrival
            pending.popleft()
            self.pending_bytes -= len(chunk)
            self.buf += chunk
        return None

    def wake_reader(self) -> None:
        task = self.reader
        if task is not None:
            self.reader = None
            reschedule(task)

    def wake_writer(self) -> None:
        task = self.writer
        if task is not None:
            self.writer = None
            reschedule(task)

    def _abort_reader(self, _raise_cancel: RaiseCancelT) -> Abort:
        self.reader = None
        return Abort.SUCCEEDED

    def _abort_writer(self, _raise_cancel: RaiseCancelT) -> Abort:
        self.writer = None
        return Abort.SUCCEEDED

    async def park_reader(self, deadline: float | None) -> None:
        self.reader = current_task()
        if deadline is None:
            await wait_task_rescheduled(self._abort_reader)
        else:
            with trio.move_on_at(deadline):
                await wait_task_rescheduled(self._abort_reader)

    async def park_writer(self) -> None:
        self.writer = current_task()
        await wait_task_rescheduled(self._abort_writer)

    def reset(self, reason: str) -> None:
        if self.broken is None:
            self.broken = reason
        self.buf.clear()
        self.pending = None
        self.pending_bytes = 0
        self.wake_reader()
        self.wake_writer()


class TappedPipe(Pipe):
    """A pipe whose bytes, EOF and reset are reported to a capture's tap as side ``side`` (0: client)."""

    __slots__ = ("side", "tap")
    tapped: ClassVar[bool] = True

    def __init__(self, capacity: int, latency: float, rate: Rate | None, tap: LinkTap, side: int) -> None:
        self.tap = tap
        self.side = side
        super().__init__(capacity, latency, rate)

    def push(self, chunk: memoryview) -> None:
        self.tap.data(self.side, chunk)
        super().push(chunk)

    def set_eof(self) -> None:
        self.tap.fin(self.side)
        super().set_eof()

    def reset(self, reason: str) -> None:
        self.tap.reset()
        super().reset(reason)
