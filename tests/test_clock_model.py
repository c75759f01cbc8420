"""Device clocks, sans-IO: offset and drift arithmetic, steps and slews, and what a station does with a
correction (step or slew, SettingSystemTime beyond the threshold, currentTime from the CSMS)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from evsim.clock import MAX_SLEW_PPM, DeviceClock, NodeClock, SimClock, virtual_clock
from evsim.errors import ConfigError
from evsim.nodes.devicetime import ClockSettings, DeviceTime

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
finite = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False)
ppm = st.floats(min_value=-1000, max_value=1000, allow_nan=False)
times = st.floats(min_value=0, max_value=1e7, allow_nan=False)


def test_drift_accumulates_at_its_rate() -> None:
    clock = DeviceClock(offset_s=-3.0, drift_ppm=50.0)
    assert clock.offset(0.0) == -3.0
    assert clock.offset(86_400.0) == pytest.approx(-3.0 + 4.32)  # 50 ppm is 4.32 s a day


@given(offset=finite, drift=ppm, t1=times, t2=times)
def test_reading_does_not_change_the_clock(offset: float, drift: float, t1: float, t2: float) -> None:
    clock = DeviceClock(offset_s=offset, drift_ppm=drift)
    a = clock.offset(t1)
    clock.offset(t2)
    assert clock.offset(t1) == a


@given(offset=finite, drift=ppm, t=times, delta=finite, later=times)
def test_a_step_moves_the_clock_by_delta_and_keeps_the_drift(
    offset: float, drift: float, t: float, delta: float, later: float
) -> None:
    clock = DeviceClock(offset_s=offset, drift_ppm=drift)
    before = clock.offset(t)
    clock.step(t, delta)
    assert clock.offset(t) == pytest.approx(before + delta, abs=1e-6)
    expected = before + delta + drift * 1e-6 * later
    assert clock.offset(t + later) == pytest.approx(expected, abs=1e-6, rel=1e-9)


@given(delta=st.floats(min_value=-10, max_value=10, allow_nan=False), t=times)
def test_a_slew_applies_at_most_the_slew_rate_and_then_stops(delta: float, t: float) -> None:
    clock = DeviceClock(offset_s=0.0)
    clock.slew(t, delta)
    rate = MAX_SLEW_PPM * 1e-6
    assert abs(clock.offset(t + 1.0)) <= rate + 1e-12
    done = clock.slew_done_at(t)
    assert done == pytest.approx(t + abs(delta) / rate)
    assert clock.offset(done + 1000.0) == pytest.approx(delta, abs=1e-9)


def test_a_new_slew_replaces_the_pending_one_and_a_step_drops_it() -> None:
    clock = DeviceClock()
    clock.slew(0.0, 1.0)
    assert clock.offset(1000.0) == pytest.approx(0.5)  # half of it after 1,000 s at 500 ppm
    clock.slew(1000.0, -0.5)  # the clock now reads 0.5 s ahead: slew back the other way
    assert clock.offset(2000.0) == pytest.approx(0.0)
    assert clock.offset(5000.0) == pytest.approx(0.0)
    clock.slew(5000.0, 2.0)
    clock.step(6000.0, 0.0)
    assert clock.offset(9000.0) == pytest.approx(0.5)  # the slew stopped at the step


@given(drift=ppm, reads=st.lists(times, min_size=1, max_size=10))
def test_folding_is_independent_of_when_changes_come(drift: float, reads: list[float]) -> None:
    """Two clocks, one stepped by 0 at many instants: the same error afterwards (no drift lost or doubled)."""
    plain = DeviceClock(offset_s=1.0, drift_ppm=drift)
    folded = DeviceClock(offset_s=1.0, drift_ppm=drift)
    for t in sorted(reads):
        folded.step(t, 0.0)
    end = max(reads) + 10.0
    assert folded.offset(end) == pytest.approx(plain.offset(end), abs=1e-6)


async def test_node_clock_reads_the_run_time_plus_its_error(autojump_clock: trio.testing.MockClock) -> None:
    run = SimClock.start(START)
    node = NodeClock.of(run, DeviceClock(offset_s=-86_400.0, ref=run.t0))
    assert node.utcnow() == START - dt.timedelta(days=1)
    assert node.wall() == pytest.approx(START.timestamp() - 86_400.0)
    assert NodeClock.of(run).utcnow() == run.utcnow()


# ---------------------------------------------------------------------------- a station's corrections


class _Sink:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.security: list[str] = []

    def emit(self, node: str, kind: str, **fields: Any) -> None:
        self.events.append((kind, fields))

    def security_event(self, kind: str, info: str) -> None:
        self.security.append(kind)


def _time(offset: float, settings: ClockSettings | None = None) -> tuple[DeviceTime, _Sink]:
    sink = _Sink()
    run = SimClock(START, 0.0)
    node = NodeClock.of(run, DeviceClock(offset_s=offset))
    time = DeviceTime(
        "st", node, settings or ClockSettings(), emit=sink.emit, security_event=sink.security_event
    )
    return time, sink


def test_large_corrections_step_small_ones_slew() -> None:
    time, sink = _time(-30.0)
    assert time.correct(30.0, "nts", now=0.0) == "step"
    assert time.clock.device.offset(0.0) == 0.0
    assert time.correct(0.2, "nts", now=10.0) == "slew"
    assert [k for k, _ in sink.events] == ["clock_adjusted", "clock_adjusted"]
    assert sink.events[0][1] == {"mode": "step", "source": "nts", "delta": 30.0, "offset": 0.0}


@pytest.mark.parametrize(("delta", "raised"), [(20.0, False), (20.5, True), (-21.0, True), (5.0, False)])
def test_setting_system_time_beyond_the_reporting_threshold(delta: float, raised: bool) -> None:
    time, sink = _time(0.0)
    time.correct(delta, "nts", now=0.0)
    assert sink.security == (["SettingSystemTime"] if raised else [])


async def test_no_threshold_reports_nothing_and_slews_never_report(
    autojump_clock: trio.testing.MockClock,
) -> None:
    time, sink = _time(0.0, ClockSettings(report_threshold_s=None, step_threshold_s=1e9))
    time.correct(1e6, "nts", now=0.0)
    time2, sink2 = _time(0.0, ClockSettings(report_threshold_s=None))
    time2.correct(1e6, "operator", now=0.0, step=True)
    assert sink.security == sink2.security == []
    assert "TimeAdjustmentReportingThreshold" not in time.variables()


async def test_current_time_is_followed_only_when_time_source_lists_heartbeat(
    autojump_clock: trio.testing.MockClock,
) -> None:
    current = {"currentTime": "2026-01-01T00:00:00.000Z"}
    rtc, _ = _time(-1e6)
    rtc.follow(current, "Heartbeat")
    assert rtc.clock.device.offset(0.0) == -1e6 and rtc.synced
    hb, sink = _time(-1e6, ClockSettings(time_source=("Heartbeat",)))
    before = hb.synced
    hb.follow(current, "BootNotification")
    assert not before
    assert hb.clock.device.offset(trio.current_time()) == pytest.approx(0.0, abs=1e-3)
    assert hb.synced and sink.security == ["SettingSystemTime"]


@pytest.mark.parametrize("value", ["yesterday", "2026-01-01T00:00:00", 42, "2" * 100])
async def test_a_bad_current_time_is_refused_and_changes_nothing(
    value: object, autojump_clock: trio.testing.MockClock
) -> None:
    hb, sink = _time(-5.0, ClockSettings(time_source=("Heartbeat",)))
    hb.follow({"currentTime": value}, "Heartbeat")
    assert hb.clock.device.offset(0.0) == -5.0 and not hb.synced
    assert [k for k, _ in sink.events] == ["time_refused"]


async def test_clock_variables_and_their_validation(autojump_clock: trio.testing.MockClock) -> None:
    time, _ = _time(0.0, ClockSettings(time_source=("Heartbeat",)))
    before = time.synced
    assert time.variables()["TimeSource"] == "Heartbeat" and not before
    assert time.set_variable("TimeSource", "RealTimeClock,NTP") == ("Accepted", None)
    assert time.synced  # nothing to wait for any more (no NTS client: NTP is not waited for)
    assert time.set_variable("TimeSource", "Sundial") == ("Rejected", "InvalidValue")
    assert time.set_variable("TimeAdjustmentReportingThreshold", "-1") == ("Rejected", "InvalidValue")
    assert time.set_variable("DateTime", "2000-01-01T00:00:00Z") == ("Rejected", "ReadOnly")
    assert time.set_variable("Nope", "1") == ("UnknownVariable", None)
    with pytest.raises(ConfigError):
        ClockSettings(time_source=())


@given(times, times)
def test_a_date_read_again_is_the_same_and_another_instant_gives_its_own(t1: float, t2: float) -> None:
    clock = SimClock(start_utc=START, t0=0.0)
    for t in (t1, t1, t2, t1):
        assert clock.utc_at(t) == START + dt.timedelta(seconds=t)


def test_the_virtual_clock_reads_the_time_it_jumped_to() -> None:
    clock = virtual_clock()
    seen: list[float] = []

    async def main() -> None:
        seen.append(trio.current_time())
        await trio.sleep(300.0)  # every task waits: the clock jumps to the deadline
        seen.append(trio.current_time())
        clock.jump(2.5)
        seen.append(trio.current_time())
        with trio.move_on_after(60.0):
            await trio.sleep_forever()
        seen.append(trio.current_time())

    trio.run(main, clock=clock)
    assert isinstance(clock, trio.testing.MockClock)
    assert seen == [0.0, 300.0, 302.5, 362.5]
    assert clock.current_time() == 362.5
