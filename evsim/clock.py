"""The one place evsim reads the time.

Protocol cores are sans-IO and get ``now`` (monotonic seconds, a float) passed in. Trio code asks a
:class:`SimClock` for both clocks:

* ``now()``: trio's clock (``trio.current_time()``), which is the real monotonic clock or, under
  ``trio.testing.MockClock``, virtual time. Timers, back-off and timeouts use this.
* ``utcnow()``: the simulation's wall time, ``start_utc + (now() - t0)``. Certificate validity,
  OCPP timestamps and logs use this, so a certificate can expire on day 3 of a virtual run.

Nothing else in evsim calls ``time.time()`` or ``datetime.now()``.
"""

from __future__ import annotations

import datetime as _dt

import attrs
import trio

UTC = _dt.UTC


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
        return self.start_utc + _dt.timedelta(seconds=now - self.t0)


def isoformat(ts: _dt.datetime) -> str:
    """OCPP dateTime: RFC 3339 UTC with millisecond precision and a ``Z`` suffix.

    On the hot path (every TransactionEvent, meter value and Heartbeat answer): ``datetime.isoformat``
    (which truncates to milliseconds like ``microsecond // 1000``) costs about half of ``strftime``. Years
    before 1000 keep the ``strftime`` form, whose ``%Y`` is not zero-padded on every platform.
    """
    utc = ts.astimezone(UTC)
    if utc.year >= 1000:
        return utc.isoformat(timespec="milliseconds")[:-6] + "Z"  # drop "+00:00"
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"
