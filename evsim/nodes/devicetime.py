"""A station's own time: its clock, the sources that correct it, and what it reports about it.

Theory of operation. Every station reads a :class:`~evsim.clock.NodeClock`: the simulation's wall time plus
its :class:`~evsim.clock.DeviceClock` error (offset and drift from the scenario, a dead clock reset to the
year 2000...). Certificate validity, pin lifetimes, OCPP timestamps and renewal thresholds all read that
clock, so a wrong one refuses valid certificates or accepts expired ones.

Three things correct it, each through :meth:`DeviceTime.correct`:

* NTS (``source="nts"``): each authenticated sample of the station's :class:`~evsim.nodes.nts.NtsClient`
  is the clock's error as the server sees it; the correction is minus that offset.
* ``currentTime`` of a BootNotification or Heartbeat response (``source="csms"``), only when the
  ``ClockCtrlr.TimeSource`` variable lists ``Heartbeat`` (OCPP 2.0.1 part 2, B01.FR.06 and G02). The value is the CSMS's; a value that is no valid date is refused with one
  ``time_refused`` event and changes nothing.
* the operator (``source="operator"``, the timeline's ``clock_step``): always a step.

Step or slew: a correction of at least ``step_threshold_s`` (1 s by default, like chrony's ``makestep 1 -1``)
is stepped at once; a smaller one is slewed at :data:`~evsim.clock.MAX_SLEW_PPM`. Each correction is one
``clock_adjusted`` event (``mode``, ``delta``, ``source``, the ``offset`` left afterwards), so the clock of
every station can be replayed from the event log (:mod:`evsim.metrics.clocks`). A step larger than
``TimeAdjustmentReportingThreshold`` seconds (default 20, the value the OCPP 2.0.1 device model calls
reasonable) queues the SettingSystemTime security event (A04), with guaranteed delivery like every other.

Synced. A station with a time source to wait for (``NTP`` with NTS servers configured, or ``Heartbeat``)
counts as unsynced until that source first corrected its clock; with ``time_check =
"skip_until_clock_synced"`` its TLS connections skip certificate validity times until then. A station with
neither (the default, a perfect clock) counts as synced from the start.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from typing import Any, Protocol

import attrs
import trio

from evsim.clock import NodeClock, isoformat
from evsim.errors import ConfigError
from evsim.nodes.nts import NtsClient
from evsim.recorder import Recorder

TIME_SOURCES = ("Heartbeat", "NTP", "GPS", "RealTimeClock", "MobileNetwork", "RadioTimeTransmitter")
"""The values of ``ClockCtrlr.TimeSource`` (OCPP 2.0.1 part 2, appendix 3)."""
WAITING_SOURCES = frozenset({"Heartbeat", "NTP"})
"""Time sources evsim models: a station listing one waits for it before it counts as synced."""
_WAITED: dict[frozenset[str], frozenset[str]] = {}
"""The subsets of :data:`WAITING_SOURCES` the stations wait for, each made once (see :func:`_shared`)."""


def _shared(waited: frozenset[str]) -> frozenset[str]:
    """The one instance of the set ``waited`` (a subset of :data:`WAITING_SOURCES`): every station holds one,
    216 bytes each."""
    return _WAITED.setdefault(waited, waited)


MAX_REPORT_THRESHOLD_S = 10 * 365 * 86_400
"""Largest TimeAdjustmentReportingThreshold accepted (ten years; a choice of evsim)."""


@attrs.frozen
class ClockSettings:
    """How a station's clock is corrected and reported.

    Attributes:
        time_source: ``ClockCtrlr.TimeSource``, in priority order (values of :data:`TIME_SOURCES`).
        report_threshold_s: ``ClockCtrlr.TimeAdjustmentReportingThreshold``: a step larger than this (seconds)
            raises SettingSystemTime; None: the variable is not implemented and nothing is reported.
        step_threshold_s: corrections at least this large are stepped, smaller ones slewed.
    """

    time_source: tuple[str, ...] = ("RealTimeClock",)
    report_threshold_s: int | None = 20
    step_threshold_s: float = 1.0

    def __attrs_post_init__(self) -> None:
        unknown = [s for s in self.time_source if s not in TIME_SOURCES]
        if unknown or not self.time_source:
            raise ConfigError(
                "unknown time source" if unknown else "time_source is empty",
                path="clock.time_source",
                value=list(self.time_source),
                fix=f"use some of {', '.join(TIME_SOURCES)}",
            )
        if self.report_threshold_s is not None and not 0 <= self.report_threshold_s <= MAX_REPORT_THRESHOLD_S:
            raise ConfigError(
                f"report_threshold must be 0 .. {MAX_REPORT_THRESHOLD_S} s",
                path="clock.report_threshold",
                value=self.report_threshold_s,
            )
        if not self.step_threshold_s >= 0:
            raise ConfigError(
                "step_threshold must be >= 0", path="clock.step_threshold", value=self.step_threshold_s
            )


class TimeHost(Protocol):
    """What :meth:`DeviceTime.of` reads of its station (:class:`evsim.nodes.station.Station` fits)."""

    @property
    def name(self) -> str: ...
    @property
    def clock(self) -> NodeClock: ...
    @property
    def recorder(self) -> Recorder: ...

    def queue_security_event(self, event_type: str, tech_info: str = "") -> None: ...


class DeviceTime:
    """A station's clock and its corrections (see the module docstring).

    Args:
        name: the station (events).
        clock: its clock.
        settings: the correction policy and the ClockCtrlr variables.
        emit: records an event at the station.
        security_event: queues a SecurityEventNotification (type, techInfo).
        nts: the NTS client that disciplines the clock (None: no NTS servers; :meth:`use_nts` sets one).
    """

    def __init__(
        self,
        name: str,
        clock: NodeClock,
        settings: ClockSettings,
        *,
        emit: Callable[..., object],
        security_event: Callable[[str, str], None],
        nts: NtsClient | None = None,
    ) -> None:
        self.name = name
        self.clock = clock
        self.settings = settings
        self._emit = emit
        self._security_event = security_event
        self.nts = nts
        self._waiting_for = self._waited_sources()
        self.steps = 0
        self.slews = 0

    @classmethod
    def of(cls, station: TimeHost, settings: ClockSettings) -> DeviceTime:
        """The time of ``station``: its clock, events and security events through it."""
        return cls(
            station.name,
            station.clock,
            settings,
            emit=station.recorder.emit,
            security_event=station.queue_security_event,
        )

    def use_nts(self, client: NtsClient) -> None:
        """Let ``client`` discipline the clock (the station runs it; ``NTP`` in TimeSource waits for it)."""
        self.nts = client
        self._waiting_for = self._waited_sources()

    def _waited_sources(self) -> frozenset[str]:
        waited = WAITING_SOURCES & set(self.settings.time_source)
        waited = waited if self.nts is not None else waited - {"NTP"}
        return _shared(waited)

    @property
    def synced(self) -> bool:
        """Whether the station's clock counts as set (see the module docstring)."""
        return not self._waiting_for

    @property
    def follows_csms(self) -> bool:
        """Whether ``currentTime`` from the CSMS sets the clock (``Heartbeat`` in TimeSource)."""
        return "Heartbeat" in self.settings.time_source

    def correct(self, delta: float, source: str, *, now: float | None = None, step: bool = False) -> str:
        """Correct the clock by ``delta`` seconds; returns ``"step"``, ``"slew"`` or ``"none"`` (a correction
        below a microsecond, the events' resolution, is left out: a perfect clock's NTS samples change nothing).

        Args:
            delta: the correction (true time minus the clock's reading).
            source: ``"nts"``, ``"csms"`` or ``"operator"`` (recorded; ``"nts"`` and ``"csms"`` end waiting for
                ``NTP`` and ``Heartbeat``).
            now: trio time (default: now).
            step: step whatever the size (the operator's ``clock_step``).
        """
        at = trio.current_time() if now is None else now
        done = {"NTP"} if source == "nts" else {"Heartbeat"} if source == "csms" else set()
        self._waiting_for = _shared(self._waiting_for - done)
        if not step and abs(delta) < 1e-6:
            return "none"
        device = self.clock.device
        stepped = step or abs(delta) >= self.settings.step_threshold_s
        if stepped:
            device.step(at, delta)
            self.steps += 1
        else:
            device.slew(at, delta)
            self.slews += 1
        mode = "step" if stepped else "slew"
        self._emit(
            self.name,
            "clock_adjusted",
            mode=mode,
            source=source,
            delta=round(delta, 6),
            offset=round(device.offset(at), 6),
        )
        threshold = self.settings.report_threshold_s
        if stepped and threshold is not None and abs(delta) > threshold:
            self._security_event("SettingSystemTime", f"clock stepped by {delta:+.3f} s ({source})")
        return mode

    def on_nts_offset(self, offset: float) -> None:
        """An NTS sample: the server's time minus this clock's, seconds."""
        self.correct(offset, "nts")

    def follow(self, response: dict[str, Any], action: str) -> None:
        """Set the clock from a BootNotification / Heartbeat response's ``currentTime`` when TimeSource lists
        ``Heartbeat``; a value that is no UTC date is refused (``time_refused``)."""
        if not self.follows_csms or "currentTime" not in response:
            return
        value = response["currentTime"]
        try:
            if not isinstance(value, str) or len(value) > 64:
                raise ValueError("not a short string")
            when = _dt.datetime.fromisoformat(value)
            if when.tzinfo is None or when.utcoffset() is None:
                raise ValueError("no time zone")
        except ValueError as exc:
            self._emit(self.name, "time_refused", action=action, value=value, reason=str(exc))
            return
        now = trio.current_time()
        self.correct((when - self.clock.utc_at(now)).total_seconds(), "csms", now=now)

    # ---------------------------------------------------------------- device model (ClockCtrlr)

    def variables(self) -> dict[str, str]:
        """The ClockCtrlr variables (B06): DateTime, TimeSource and, when implemented, the report threshold."""
        out = {
            "DateTime": isoformat(self.clock.utcnow()),
            "TimeSource": ",".join(self.settings.time_source),
        }
        if self.settings.report_threshold_s is not None:
            out["TimeAdjustmentReportingThreshold"] = str(self.settings.report_threshold_s)
        return out

    def set_variable(self, name: str, value: str) -> tuple[str, str | None]:
        """SetVariables on ClockCtrlr: (attributeStatus, reasonCode or None). DateTime is read-only."""
        try:
            if name == "TimeSource":
                sources = tuple(v.strip() for v in value.split(","))
                self.settings = attrs.evolve(self.settings, time_source=sources)
            elif name == "TimeAdjustmentReportingThreshold" and self.settings.report_threshold_s is not None:
                self.settings = attrs.evolve(self.settings, report_threshold_s=int(value))
            else:
                return ("Rejected", "ReadOnly") if name in self.variables() else ("UnknownVariable", None)
        except (ConfigError, ValueError):
            return "Rejected", "InvalidValue"
        self._waiting_for = _shared(self._waiting_for & self._waited_sources())
        return "Accepted", None
