"""Sleeping in a run: trio's own timers, or one timer task for every sleeper of a run in virtual time.

Theory of operation. A trio task sleeps until a deadline through a cancel scope: entering the scope registers
the deadline, and when it passes trio cancels the scope, which raises ``Cancelled`` through the task's stack
until the scope catches it. Under ``MockClock(autojump_threshold=0)`` the run loop first makes one idle pass to
jump the clock, then one to expire the deadline. A simulated day is mostly such wake-ups (every Heartbeat and
meter value starts with one), so their cost counts: measured on the session-6 machine, ``trio.sleep`` costs
77 µs a wake-up under MockClock, parking on :class:`VirtualTimers` 38 µs.

:class:`VirtualTimers` (started by :func:`evsim.world.open_world` in virtual time, one per run) keeps every
sleeper in one heap ordered by (deadline, late, sequence). Sleepers park with trio's lowest-level primitive
(``wait_task_rescheduled``), so a wake-up raises nothing. The timer task waits until every other task is
blocked (``trio.testing.wait_all_tasks_blocked``, the moment MockClock's autojump would act), then jumps the
clock to the earliest deadline and reschedules the sleepers due then; when a cancel scope elsewhere (a call
timeout, ``trio.sleep`` in code that does not use this module) has an earlier deadline, it jumps to that one
instead and trio expires it as before. With no sleeper in its heap the timer task waits without asking for
idle passes, and MockClock's autojump runs the run as before.

*Late* sleepers (``late=True``) due at one instant wake only after everything else due then has run: right
after the jump when nothing else is due at that instant, else once the sleepers and trio deadlines due then have
run and the run is idle again. A station's uplink waits so: a meter value due at the same instant as its
Heartbeat is queued first, and the end of a run (the runner's own deadline) comes before a Heartbeat due then,
whatever order trio runs a batch in.

A test that calls ``wait_all_tasks_blocked`` itself while this timer task has sleepers is woken in the same pass
as the timer task (both wait with cushion 0), so it may see the clock already moved; no test of a world does.

:func:`sleep`, :func:`sleep_until`, :func:`repeat` and :class:`Alarm` use the run's timer task when there is one
and trio's timers otherwise (the real clock, tests without a world): callers' code is the same on both clocks. A
sleeper whose timer task ends (the world closed) goes on sleeping on trio's timers.

:func:`repeat` is a periodic loop (``for _ in range(n): await sleep(s); fn()``) whose calls but the last run in the
timer task itself, at their instants, while the caller stays parked: a station's meter values cost the run one
task switch less each (the behaviour task's wake-up; the uplink it pokes is woken either way). The heap entry of
such a loop is a :class:`_Repeat`, which the timer task "rings" like an alarm; since that runs the loop's
function, which may wake or cancel other sleepers, :meth:`VirtualTimers._fire` reads the heap afresh after
every ring.
"""

from __future__ import annotations

import contextvars
import heapq
import itertools
import math
from collections.abc import Callable
from typing import Any, Protocol

import outcome
import trio
import trio.testing
from trio.lowlevel import Abort, RaiseCancelT, RunVar, Task, current_task, reschedule, wait_task_rescheduled

__all__ = ["Alarm", "VirtualTimers", "current_timers", "repeat", "sleep", "sleep_until"]

# what a parked sleeper is sent (an outcome is unwrapped once, so each wake-up makes its own)
_RANG = True
_WOKEN = False
_GONE = None  # the timer task ended: sleep on trio's timers instead

_COMPACT_AT = 4096
"""Stale heap entries (sleepers woken early or cancelled) tolerated before the heap is rebuilt without them."""

_TIMERS: RunVar[VirtualTimers | None] = RunVar("evsim_timers", default=None)


class _Sleeper(Protocol):
    """What a heap entry of :class:`VirtualTimers` holds: :class:`Alarm` or :class:`_Repeat`."""

    def _ring(self, value: bool | None) -> None: ...


class Alarm:
    """A task parked until a deadline or until another task calls :meth:`wake`, whichever comes first.

    One task waits at a time (:meth:`wait_until`); :meth:`wake` while nobody waits does nothing. :meth:`move`
    changes the deadline of the waiting task without waking it.
    """

    __slots__ = ("_deadline", "_entry", "_late", "_scope", "_task", "_timers")

    def __init__(self) -> None:
        self._task: Task | None = None
        self._deadline = math.inf  # of the waiting task
        self._late = False
        self._entry: list[Any] | None = None  # its heap entry while it waits on a VirtualTimers
        self._timers: VirtualTimers | None = None
        self._scope: trio.CancelScope | None = None  # its deadline while it waits on trio's timers

    @property
    def waiting(self) -> bool:
        """True while a task waits on this alarm."""
        return self._task is not None

    def wake(self) -> None:
        """Wake the waiting task now (its :meth:`wait_until` returns False); nothing if none waits."""
        task = self._task
        if task is not None:
            self._task = None
            self._forget()
            reschedule(task, outcome.Value(_WOKEN))

    def move(self, deadline: float) -> None:
        """Make the waiting task's deadline ``deadline`` (earlier or later; ``math.inf``: none) without waking
        it; nothing if none waits (a deadline already passed wakes it at once).

        On :class:`VirtualTimers` this replaces the alarm's heap entry (the old one goes stale), a heap push;
        on trio's timers it moves the cancel scope's deadline, which costs a registration in trio's own heap
        (a context manager and two heap updates: measured ≈3 µs). A late waiter stays late.
        """
        if self._task is None or deadline == self._deadline:
            return
        self._deadline = deadline
        scope = self._scope
        if scope is not None:
            scope.deadline = deadline
            return
        timers = self._timers
        assert timers is not None
        if timers.ended:  # it ended while this alarm had no deadline: go on on trio's timers
            self._ring(_GONE)
            return
        entry = self._entry
        if entry is not None:
            entry[3] = None
            timers.forgot()
        self._entry = timers.add(deadline, self._late, self) if deadline < math.inf else None

    async def wait_until(self, deadline: float, *, late: bool = False) -> bool:
        """Wait until trio time ``deadline`` or :meth:`wake`.

        Args:
            deadline: trio time (``math.inf``: only :meth:`wake` or a cancellation ends the wait).
            late: under :class:`VirtualTimers`, wake after everything else due at ``deadline`` has run (see the
                module docstring); on trio's timers, one extra checkpoint after the deadline does the same
                for the tasks trio woke at that instant.

        Returns:
            True when the deadline passed, False when :meth:`wake` ended the wait.
        """
        self._deadline = deadline
        self._late = late
        timers = _TIMERS.get()
        if timers is not None:
            self._task = current_task()
            self._timers = timers
            # no entry for no deadline: the timer task has nothing to jump to
            self._entry = timers.add(deadline, late, self) if deadline < math.inf else None
            rang = await wait_task_rescheduled(self._abort)
            if rang is not None:
                return bool(rang)
            deadline = self._deadline  # (moved meanwhile)
        # trio's timers (also a sleeper whose timer task ended)
        self._task = current_task()
        with trio.move_on_at(deadline) as scope:
            self._scope = scope
            try:
                await wait_task_rescheduled(self._abort)
            finally:
                self._scope = None
        if scope.cancelled_caught:
            self._task = None
            if late:
                await trio.lowlevel.cancel_shielded_checkpoint()
            return True
        return False

    def _ring(self, value: bool | None) -> None:
        """The timer task: the deadline passed (or the timer task ends)."""
        self._entry = None
        task = self._task
        if task is not None:
            self._task = None
            reschedule(task, outcome.Value(value))

    def _forget(self) -> None:
        entry = self._entry
        if entry is not None:
            self._entry = None
            entry[3] = None
            if self._timers is not None:
                self._timers.forgot()

    def _abort(self, _raise_cancel: RaiseCancelT) -> Abort:
        self._task = None
        self._forget()
        return Abort.SUCCEEDED


async def sleep_until(deadline: float) -> None:
    """``trio.sleep_until`` on the run's :class:`VirtualTimers` when it has one (see the module docstring)."""
    if _TIMERS.get() is None or not deadline > trio.current_time():
        await trio.sleep_until(deadline)  # also a deadline now or past: trio's checkpoint, and NaN's error
        return
    await Alarm().wait_until(deadline)


async def sleep(seconds: float) -> None:
    """``trio.sleep`` on the run's :class:`VirtualTimers` when it has one."""
    if seconds < 0:
        raise ValueError("duration must be non-negative")
    await sleep_until(trio.current_time() + seconds)


class _Repeat:
    """The heap entry of a :func:`repeat` loop: calls its function at each instant but the last, then wakes
    the parked caller (also on an error of the function, or when the timer task ends)."""

    __slots__ = (
        "_context",
        "_entry",
        "_fn",
        "_seconds",
        "_task",
        "_timers",
        "deadline",
        "due",
        "error",
        "gone",
        "left",
    )

    def __init__(self, timers: VirtualTimers, seconds: float, count: int, fn: Callable[[], object]) -> None:
        task = current_task()
        self._timers = timers
        self._seconds = seconds
        self._fn = fn
        self._task: Task | None = task
        self._context: contextvars.Context = task.context  # the caller's context variables, as in its loop
        self._entry: list[Any] | None = None
        self.left = count  # calls not made yet
        self.deadline = math.inf  # of the next call
        self.error: BaseException | None = None
        self.due = False  # the last call's instant came: the caller makes it
        self.gone = False  # the timer task ended before the next call: the caller goes on on trio's timers

    def arm(self) -> bool:
        """Schedule the next call ``seconds`` from now; False when that is not later than now (float limits)."""
        now = trio.current_time()
        deadline = now + self._seconds
        if not deadline > now:
            return False
        self.deadline = deadline
        self._entry = self._timers.add(deadline, False, self)
        return True

    def _ring(self, value: bool | None) -> None:
        self._entry = None
        if value is not _RANG:
            self.gone = True
        elif self.left == 1:
            self.due = True
        else:
            self.left -= 1
            try:
                self._context.run(self._fn)
            except BaseException as exc:  # the caller raises it: the timer task serves every sleeper
                self.error = exc
            else:
                if self.arm():
                    return
        task = self._task
        if task is not None:
            self._task = None
            reschedule(task)

    def _abort(self, _raise_cancel: RaiseCancelT) -> Abort:
        self._task = None
        entry = self._entry
        if entry is not None:
            self._entry = None
            entry[3] = None
            self._timers.forgot()
        return Abort.SUCCEEDED


async def repeat(seconds: float, count: int, fn: Callable[[], object]) -> None:
    """``for _ in range(count): await sleep(seconds); fn()``, each sleep starting when the previous call returned.

    On the run's :class:`VirtualTimers` the calls but the last run in the timer task at their instants (in the
    caller's context variables) and the caller is woken once, for the last (see the module docstring); what
    ``fn`` raises is raised here, at its instant, and ends the loop. ``fn`` must not block (it is synchronous)
    and must not depend on which task runs it.

    Raises:
        ValueError: ``seconds`` is negative.
    """
    if seconds < 0:
        raise ValueError("duration must be non-negative")
    timers = _TIMERS.get()
    if timers is None or count < 2:
        for _ in range(count):
            await sleep(seconds)
            fn()
        return
    loop = _Repeat(timers, seconds, count, fn)
    left = count
    if loop.arm():
        await wait_task_rescheduled(loop._abort)
        if loop.error is not None:
            raise loop.error
        if loop.due:
            fn()  # the last call, in the caller's task: what follows the loop runs in the same step
            return
        left = loop.left
        if loop.gone:  # the timer task ended: on trio's timers from here on
            await sleep_until(loop.deadline)
            fn()
            left -= 1
        # else the next instant was not later than now (float limits): each call after its own sleep
    for _ in range(left):
        await sleep(seconds)
        fn()


class VirtualTimers:
    """The timer task of a run in virtual time (see the module docstring); :meth:`run` it in a nursery."""

    __slots__ = ("_heap", "_live", "_parked", "_seq", "_stale", "ended", "wakeups")

    def __init__(self) -> None:
        self._heap: list[list[Any]] = []  # [deadline, late, sequence, sleeper or None once stale]
        self._seq = itertools.count()
        self._live = 0
        self._stale = 0
        self._parked: Task | None = None  # the timer task, while it waits for a first sleeper
        self.wakeups = 0
        """Sleepers woken by a deadline so far."""
        self.ended = False
        """Its :meth:`run` ended: sleepers go on on trio's timers."""

    def add(self, deadline: float, late: bool, alarm: _Sleeper) -> list[Any]:
        entry = [deadline, late, next(self._seq), alarm]
        heapq.heappush(self._heap, entry)
        self._live += 1
        task = self._parked
        if task is not None:
            self._parked = None
            reschedule(task)
        return entry

    def forgot(self) -> None:
        """An entry went stale (its sleeper was woken otherwise or cancelled)."""
        self._live -= 1
        self._stale += 1
        if self._stale > _COMPACT_AT and self._stale > self._live:
            self._heap = [e for e in self._heap if e[3] is not None]
            heapq.heapify(self._heap)
            self._stale = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Wake sleepers at their deadlines until cancelled. One serves a trio run: while another runs,
        this one returns at once (two worlds in one run share the first one's; when it ends, their sleepers
        go on on trio's timers).

        Raises:
            RuntimeError: the clock is not a MockClock.
        """
        clock = trio.lowlevel.current_clock()
        if not isinstance(clock, trio.testing.MockClock):
            raise RuntimeError("VirtualTimers needs trio's MockClock")
        if _TIMERS.get() is not None:
            task_status.started()
            return
        _TIMERS.set(self)
        try:
            task_status.started()
            while True:
                if not self._live:
                    self._parked = current_task()
                    await wait_task_rescheduled(self._abort_park)
                    continue
                await trio.testing.wait_all_tasks_blocked()
                self._fire(clock)
        finally:
            _TIMERS.set(None)
            self.ended = True
            self._parked = None
            heap, self._heap = self._heap, []
            self._live = self._stale = 0
            for entry in heap:
                alarm = entry[3]
                if alarm is not None:
                    alarm._ring(_GONE)

    def _abort_park(self, _raise_cancel: RaiseCancelT) -> Abort:
        self._parked = None
        return Abort.SUCCEEDED

    def _fire(self, clock: trio.testing.MockClock) -> None:
        """Everything else is blocked: jump to the next deadline and wake the sleepers due then."""
        heap = self._heap
        pop = heapq.heappop
        while heap and heap[0][3] is None:
            pop(heap)
            self._stale -= 1
        if not heap:
            return
        first = heap[0]
        deadline = first[0]
        now = clock.current_time()
        if deadline > now:
            others = trio.lowlevel.current_statistics().seconds_to_next_deadline
            ahead = deadline - now
            if others < ahead:
                clock.jump(others)  # a cancel scope's deadline comes first: trio expires it next
                return
            for _ in range(3):  # the float sum may land short of the deadline (an ulp)
                clock.jump(deadline - now)
                now = clock.current_time()
                if now >= deadline or math.isnan(now):
                    break
            if first[1] and others == ahead:
                return  # late sleepers wake once what trio's timers wake at this instant has run too
        late = first[1]
        woken = 0
        while heap:
            entry = heap[0]
            if entry[0] > deadline or entry[1] != late:
                if entry[3] is not None:
                    break
                pop(heap)  # a stale entry among the due ones
                self._stale -= 1
                continue
            pop(heap)
            alarm = entry[3]
            if alarm is None:
                self._stale -= 1
                continue
            self._live -= 1
            alarm._ring(_RANG)
            woken += 1
            heap = self._heap  # a repeat's call may have made entries stale, and forgot() rebuilt the heap
        self.wakeups += woken


def current_timers() -> VirtualTimers | None:
    """The run's :class:`VirtualTimers`, if one runs."""
    return _TIMERS.get()
