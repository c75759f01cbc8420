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

__all__ = ["Pipe", "TappedPipe"]


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
        "reader",
        "reader_gone",
        "writer",
    )

    def __init__(self, capacity: int, latency: float) -> None:
        self.buf = bytearray()
        self.capacity = capacity
        self.eof = False  # the writing end closed or sent EOF
        self.reader_gone = False  # the reading end closed: writes fail
        self.broken: str | None = None  # link reset: everything fails
        self.reader: Task | None = None
        self.writer: Task | None = None
        self.latency = latency
        self.direct = latency == 0.0 and not self.tapped  # bytes go straight into buf (send fast path)
        # (arrival time, bytes) in flight when latency > 0, counted against capacity; created on first
        # use (an empty deque costs ~600 bytes, and most links have no latency)
        self.pending: deque[tuple[float, bytes]] | None = None
        self.pending_bytes = 0

    tapped: ClassVar[bool] = False

    def set_latency(self, latency: float) -> None:
        self.latency = latency
        self.direct = latency == 0.0 and not self.tapped

    def set_eof(self) -> None:
        """The writing end sent EOF or closed."""
        self.eof = True

    def space(self) -> int:
        return self.capacity - len(self.buf) - self.pending_bytes

    def push(self, chunk: memoryview) -> None:
        if self.latency > 0.0:
            if self.pending is None:
                self.pending = deque()
            self.pending.append((trio.current_time() + self.latency, bytes(chunk)))
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

    def __init__(self, capacity: int, latency: float, tap: LinkTap, side: int) -> None:
        self.tap = tap
        self.side = side
        super().__init__(capacity, latency)

    def push(self, chunk: memoryview) -> None:
        self.tap.data(self.side, chunk)
        super().push(chunk)

    def set_eof(self) -> None:
        self.tap.fin(self.side)
        super().set_eof()

    def reset(self, reason: str) -> None:
        self.tap.reset()
        super().reset(reason)
