"""The one place evsim reads the time.

Protocol cores are sans-IO and get ``now`` (monotonic seconds, a float) passed in. Trio code asks a
:class:`SimClock` for both clocks:

* ``now()``: trio's clock (``trio.current_time()``), which is the real monotonic clock or, under
  ``trio.testing.MockClock``, virtual time. Timers, back-off and timeouts use this.
* ``utcnow()``: the simulation's wall time, ``start_utc + (now() - t0)``. Certificate validity,
  OCPP timestamps and logs use this, so a certificate can expire on day 3 of a virtual run.

A device (a station, a controller) reads its own clock, a :class:`NodeClock`: the simulation's wall time plus
the error of its :class:`DeviceClock` (an offset, a drift in ppm, and a pending slew), so a station whose
battery-backed clock died reads the year 2000 while the run is in 2026. ``now()`` is still trio's clock, so
timers of a device with a wrong clock run at the simulation's pace; only what it believes the date is
differs (certificate checks, OCPP timestamps, renewal thresholds). Events are stamped with the run's time.

Nothing else in evsim calls ``time.time()`` or ``datetime.now()``.
"""

from __future__ import annotations

import datetime as _dt
import functools
import math
import operator

import attrs
import trio
import trio.testing

UTC = _dt.UTC


def virtual_clock() -> trio.testing.MockClock:
    """trio's ``MockClock(autojump_threshold=0)`` for a run in virtual time, with a cheaper ``current_time``.

    At rate 0 a MockClock's time moves only when it jumps, yet each reading still asks the machine's clock and
    converts; trio and evsim read it several times per message. This one keeps the time it last jumped to.
    Its ``rate`` must stay 0 (nothing in evsim changes it).
    """
    clock = trio.testing.MockClock(autojump_threshold=0)
    read = clock.current_time
    jump = clock.jump
    now = [read()]
    # now[0] without a Python frame (trio's run loop and evsim read it a dozen times per message)
    current_time = functools.partial(operator.getitem, now, 0)

    def jump_to(seconds: float) -> None:
        jump(seconds)
        now[0] = read()

    setattr(clock, "current_time", current_time)  # noqa: B010 - instance attributes shadow the methods
    setattr(clock, "jump", jump_to)  # noqa: B010
    return clock


def real_utcnow() -> _dt.datetime:
    """The machine's wall clock (UTC). Only used to anchor a real-time run."""
    return _dt.datetime.now(tz=UTC)


@attrs.define
class SimClock:
    """Simulation clock anchored at ``start_utc`` when trio's clock read ``t0``.

    Create it inside ``trio.run`` with :meth:`start`, or pass ``t0`` explicitly (sans-IO tests).
    """

    start_utc: _dt.datetime
    t0: float = 0.0
    # utc_at's last answer: a node asks several times at one instant (one task step), and building the
    # datetime costs more than the rest of a clock read.
    _last_at: float = attrs.field(default=math.nan, init=False, eq=False, repr=False)
    _last_utc: _dt.datetime | None = attrs.field(default=None, init=False, eq=False, repr=False)

    @classmethod
    def start(cls, start_utc: _dt.datetime | None = None) -> SimClock:
        """Anchor a clock now (must run inside trio). ``start_utc`` defaults to the real wall clock."""
        anchor = start_utc if start_utc is not None else real_utcnow()
        if anchor.tzinfo is None:
            anchor = anchor.replace(tzinfo=UTC)
        return cls(start_utc=anchor, t0=trio.current_time())

    def now(self) -> float:
        """Monotonic seconds from trio's clock (virtual under MockClock)."""
        return trio.current_time()

    def elapsed(self) -> float:
        """Seconds since the clock was anchored."""
        return trio.current_time() - self.t0

    def utcnow(self) -> _dt.datetime:
        """The simulation's wall time."""
        return self.utc_at(trio.current_time())

    def utc_at(self, now: float) -> _dt.datetime:
        """Simulation wall time at trio time ``now`` (for sans-IO code that got ``now`` passed in)."""
        if now == self._last_at and self._last_utc is not None:
            return self._last_utc
        utc = self.start_utc + _dt.timedelta(seconds=now - self.t0)
        self._last_at, self._last_utc = now, utc
        return utc


MAX_SLEW_PPM = 500.0
"""How fast a clock is slewed, ppm: the 500 ppm frequency tolerance of NTPv4 (RFC 5905 §11.3) and of the
kernel's ``adjtime``; chrony's ``maxslewrate`` default is much faster (83,333 ppm), evsim keeps the RFC's."""


@attrs.define
class DeviceClock:
    """A device clock's error against the simulation's wall time, as a function of trio time (sans-IO).

    ``offset(now) = offset_s + drift_ppm * 1e-6 * (now - ref) + s(now)`` where ``s`` is the part of a pending slew
    applied so far: a slew of ``slew_s`` seconds moves the clock at ``slew_ppm`` until it is done. A step
    changes the offset at once and drops a pending slew. Every change first folds the error accumulated since
    ``ref`` into ``offset_s``, so the arithmetic never depends on how often the clock is read.

    Attributes:
        offset_s: the error at trio time ``ref`` (seconds; negative: the clock is behind).
        drift_ppm: how fast the error grows (positive: the clock runs fast).
        ref: the trio time ``offset_s`` holds at.
        slew_s: the correction still to be slewed (signed seconds).
        slew_ppm: the slew rate.
    """

    offset_s: float = 0.0
    drift_ppm: float = 0.0
    ref: float = 0.0
    slew_s: float = 0.0
    slew_ppm: float = MAX_SLEW_PPM

    @property
    def perfect(self) -> bool:
        """No error and none to come (the default clock reads the simulation's time exactly)."""
        return self.offset_s == 0.0 and self.drift_ppm == 0.0 and self.slew_s == 0.0

    def _slewed(self, dt: float) -> float:
        if self.slew_s == 0.0:
            return 0.0
        return math.copysign(min(abs(self.slew_s), self.slew_ppm * 1e-6 * dt), self.slew_s)

    def offset(self, now: float) -> float:
        """The clock's error at trio time ``now`` (seconds; times before ``ref`` read as ``ref``)."""
        dt = max(0.0, now - self.ref)
        return self.offset_s + self.drift_ppm * 1e-6 * dt + self._slewed(dt)

    def _fold(self, now: float) -> None:
        dt = max(0.0, now - self.ref)
        done = self._slewed(dt)
        self.offset_s += self.drift_ppm * 1e-6 * dt + done
        self.slew_s -= done
        self.ref = max(now, self.ref)

    def step(self, now: float, delta: float) -> None:
        """Change the clock by ``delta`` seconds at once (a pending slew is dropped)."""
        self._fold(now)
        self.offset_s += delta
        self.slew_s = 0.0

    def slew(self, now: float, delta: float) -> None:
        """Correct the clock by ``delta`` seconds gradually, at ``slew_ppm`` (replaces a pending slew: a new
        measurement already includes what the old one had not corrected yet)."""
        self._fold(now)
        self.slew_s = delta

    def slew_done_at(self, now: float) -> float:
        """The trio time the pending slew ends (``now`` when none is pending)."""
        left = self.slew_s - self._slewed(max(0.0, now - self.ref))
        return now + abs(left) / (self.slew_ppm * 1e-6)


@attrs.define
class NodeClock(SimClock):
    """A device's own clock: the run's :class:`SimClock` seen through a :class:`DeviceClock`.

    ``now()`` and ``elapsed()`` are the run's (trio time); ``utcnow()`` / ``utc_at()`` / :meth:`wall` are what
    the device believes the date is.
    """

    device: DeviceClock = attrs.field(factory=DeviceClock)

    @classmethod
    def of(cls, run: SimClock, device: DeviceClock | None = None) -> NodeClock:
        """A device clock on top of the run's clock (a perfect one unless ``device`` is given)."""
        return cls(start_utc=run.start_utc, t0=run.t0, device=device or DeviceClock(ref=run.t0))

    def utc_at(self, now: float) -> _dt.datetime:
        true = SimClock.utc_at(self, now)
        if self.device.perfect:
            return true
        return true + _dt.timedelta(seconds=self.device.offset(now))

    def wall(self, now: float | None = None) -> float:
        """The device's time in Unix seconds (float, no microsecond rounding) at trio time ``now``."""
        at = trio.current_time() if now is None else now
        return self.start_utc.timestamp() + (at - self.t0) + self.device.offset(at)

    def offset(self, now: float | None = None) -> float:
        """The device clock's error now (seconds)."""
        return self.device.offset(trio.current_time() if now is None else now)


_ONE_SECOND = _dt.timedelta(seconds=1)
_second: tuple[_dt.datetime, _dt.datetime, str] | None = None
"""The whole second :func:`isoformat` formatted last: its start, its end and its text up to the seconds (one
tuple, replaced whole, so a reader never sees half of an update)."""
_MILLIS: tuple[str, ...] = tuple(f".{ms:03d}Z" for ms in range(1000))
"""The text :func:`isoformat` puts after the seconds, per millisecond."""


def isoformat(ts: _dt.datetime) -> str:
    """OCPP dateTime: RFC 3339 UTC with millisecond precision and a ``Z`` suffix.

    On the hot path (every TransactionEvent, meter value and Heartbeat answer): timestamps come in time order,
    so the text up to the seconds is kept for the second formatted last and only the milliseconds are added
    (≈3x cheaper than ``datetime.isoformat``). Otherwise ``datetime.isoformat`` (which truncates to
    milliseconds like ``microsecond // 1000``) costs about half of ``strftime``. Years before 1000 keep the
    ``strftime`` form, whose ``%Y`` is not zero-padded on every platform.
    """
    global _second
    utc = ts if ts.tzinfo is UTC else ts.astimezone(UTC)  # the simulation's times are UTC already
    second = _second
    if second is not None and second[0] <= utc < second[1]:
        return second[2] + _MILLIS[utc.microsecond // 1000]
    if utc.year >= 1000:
        # isoformat() without ``timespec`` is faster; its microseconds truncate to milliseconds like it
        # ("2026-01-02T03:04:05.678901+00:00"), and it leaves out a zero fraction altogether
        text = utc.isoformat()
        start = utc.replace(microsecond=0)
        if start < _dt.datetime.max.replace(tzinfo=UTC) - _ONE_SECOND:
            _second = (start, start + _ONE_SECOND, text[:19])
        return text[:23] + "Z" if utc.microsecond else text[:19] + ".000Z"
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"
