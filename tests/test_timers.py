"""evsim.timers: sleeps and alarms on a run's VirtualTimers, and on trio's timers without one."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from evsim import timers
from evsim.timers import Alarm, VirtualTimers, current_timers


@pytest.fixture
async def service(autojump_clock: trio.testing.MockClock) -> AsyncIterator[VirtualTimers]:
    async with trio.open_nursery() as nursery:
        vt = VirtualTimers()
        await nursery.start(vt.run)
        yield vt
        nursery.cancel_scope.cancel()


async def test_sleep_wakes_at_the_deadline_in_order(
    autojump_clock: trio.testing.MockClock, service: VirtualTimers
) -> None:
    woke: list[tuple[str, float]] = []
    t0 = trio.current_time()

    async def sleeper(name: str, seconds: float) -> None:
        await timers.sleep(seconds)
        woke.append((name, trio.current_time() - t0))

    with trio.fail_after(10_000):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sleeper, "b", 300.0)
            nursery.start_soon(sleeper, "a", 60.0)
            nursery.start_soon(sleeper, "c", 3600.0)
    assert woke == [("a", 60.0), ("b", 300.0), ("c", 3600.0)]
    assert service.wakeups == 3


async def test_trio_deadlines_between_ours_expire_on_time(
    autojump_clock: trio.testing.MockClock, service: VirtualTimers
) -> None:
    """A cancel scope's deadline before the next sleeper's still fires at its own time."""
    seen: list[tuple[str, float]] = []
    t0 = trio.current_time()

    async def ours() -> None:
        await timers.sleep(100.0)
        seen.append(("ours", trio.current_time() - t0))

    async def theirs() -> None:
        await trio.sleep(40.0)
        seen.append(("trio", trio.current_time() - t0))
        with trio.move_on_after(30.0):
            await trio.sleep_forever()
        seen.append(("scope", trio.current_time() - t0))

    with trio.fail_after(10_000):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ours)
            nursery.start_soon(theirs)
    assert seen == [("trio", 40.0), ("scope", 70.0), ("ours", 100.0)]


async def test_alarm_woken_early_or_by_its_deadline(
    autojump_clock: trio.testing.MockClock, service: VirtualTimers
) -> None:
    alarm = Alarm()
    t0 = trio.current_time()
    results: list[tuple[bool, float]] = []

    async def waiter() -> None:
        results.append((await alarm.wait_until(t0 + 50.0), trio.current_time() - t0))
        results.append((await alarm.wait_until(t0 + 80.0), trio.current_time() - t0))

    with trio.fail_after(10_000):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.sleep(20.0)
            assert alarm.waiting
            alarm.wake()
            alarm.wake()  # nobody waits any more: nothing happens
    assert results == [(False, 20.0), (True, 80.0)]
    assert not alarm.waiting


async def _moved_alarm_wakes() -> tuple[list[float], int]:
    """An alarm whose deadline another task moves later, to none, earlier and later again while it waits:
    when it woke (seconds from the start) and how many heap entries the run's service woke."""
    alarm = Alarm()
    t0 = trio.current_time()
    woke: list[float] = []
    vt = current_timers()
    before = vt.wakeups if vt is not None else 0

    async def waiter() -> None:
        assert await alarm.wait_until(t0 + 50.0)
        woke.append(trio.current_time() - t0)

    with trio.fail_after(10_000):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.sleep(10.0)
            alarm.move(t0 + 200.0)  # later: nothing at 50
            await trio.sleep(50.0)
            alarm.move(math.inf)  # none: waits for a move or a wake
            await trio.sleep(300.0)
            assert alarm.waiting and not woke
            alarm.move(t0 + 400.0)
            alarm.move(t0 + 380.0)  # earlier again
            alarm.move(t0 + 380.0)  # unchanged
    alarm.move(t0 + 5.0)  # nobody waits: nothing happens
    after = vt.wakeups if vt is not None else 0
    return woke, after - before


async def test_a_moved_alarm_wakes_at_its_last_deadline_only(
    autojump_clock: trio.testing.MockClock, service: VirtualTimers
) -> None:
    woke, wakeups = await _moved_alarm_wakes()
    assert woke == [380.0]
    assert wakeups == 1  # the entries it left behind went stale: no early wake-ups
    assert service._live == 0


async def test_a_moved_alarm_on_trios_timers(autojump_clock: trio.testing.MockClock) -> None:
    assert current_timers() is None
    woke, _ = await _moved_alarm_wakes()
    assert woke == [380.0]


async def test_an_alarm_without_a_deadline_moves_to_trios_timers_after_the_service_ended(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Parked with no deadline when the service ended (so it was not rung), a move puts it on trio's timers."""
    alarm = Alarm()
    t0 = trio.current_time()
    woke: list[float] = []

    async def waiter() -> None:
        assert await alarm.wait_until(math.inf)
        woke.append(trio.current_time() - t0)

    with trio.fail_after(10_000):
        async with trio.open_nursery() as outer:
            async with trio.open_nursery() as inner:
                await inner.start(VirtualTimers().run)
                outer.start_soon(waiter)
                await trio.sleep(100.0)
                inner.cancel_scope.cancel()
            alarm.move(t0 + 250.0)
            await trio.sleep(10.0)
            alarm.move(t0 + 150.0)  # on trio's timers now: a cancel scope's deadline moves
    assert woke == [150.0]


async def test_late_alarm_wakes_after_what_else_is_due_at_that_instant(
    autojump_clock: trio.testing.MockClock, service: VirtualTimers
) -> None:
    """A late alarm due at the same instant as plain sleeps and a trio timer wakes after all of them ran, so
    what they queue is there when it looks (the station's meter value before its Heartbeat)."""
    t0 = trio.current_time()
    queued: list[str] = []
    seen: list[list[str]] = []

    async def uplink() -> None:
        assert await Alarm().wait_until(t0 + 60.0, late=True)
        seen.append(list(queued))

    async def producer(name: str, trio_timer: bool) -> None:
        if trio_timer:
            await trio.sleep_until(t0 + 60.0)
        else:
            await timers.sleep_until(t0 + 60.0)
        queued.append(name)

    for _ in range(10):  # trio runs a batch in a random order: try several
        queued.clear()
        seen.clear()
        t0 = trio.current_time()
        with trio.fail_after(10_000):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(uplink)
                nursery.start_soon(producer, "meter", False)
                nursery.start_soon(producer, "trio", True)
        assert sorted(seen[0]) == ["meter", "trio"]


async def test_cancelled_sleepers_leave_the_heap(
    autojump_clock: trio.testing.MockClock, service: VirtualTimers
) -> None:
    with trio.fail_after(10_000):
        for _ in range(5000):  # beyond the compaction threshold
            with trio.move_on_after(1.0):
                await timers.sleep(1000.0)
    assert current_timers() is service
    assert service._live == 0
    assert len(service._heap) < 5000


async def test_sleepers_go_on_on_trios_timers_when_the_service_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    t0 = trio.current_time()
    woke: list[float] = []

    async def sleeper() -> None:
        await timers.sleep(500.0)
        woke.append(trio.current_time() - t0)

    with trio.fail_after(10_000):
        async with trio.open_nursery() as outer:
            outer.start_soon(sleeper)
            async with trio.open_nursery() as inner:
                vt = VirtualTimers()
                await inner.start(vt.run)
                await trio.lowlevel.checkpoint()
                outer.start_soon(sleeper)
                await trio.sleep(100.0)
                inner.cancel_scope.cancel()
            assert current_timers() is None
    assert woke == [500.0, 500.0]


async def test_a_second_service_in_the_same_run_defers_to_the_first(
    autojump_clock: trio.testing.MockClock, service: VirtualTimers
) -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(VirtualTimers().run)  # returns at once
    assert current_timers() is service


async def test_without_a_service_the_same_calls_use_trios_timers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    assert current_timers() is None
    t0 = trio.current_time()
    alarm = Alarm()
    with trio.fail_after(10_000):
        await timers.sleep(30.0)
        assert trio.current_time() - t0 == 30.0
        assert await alarm.wait_until(t0 + 90.0, late=True)
        assert trio.current_time() - t0 == 90.0
        async with trio.open_nursery() as nursery:

            async def wake_soon() -> None:
                await trio.sleep(5.0)
                alarm.wake()

            nursery.start_soon(wake_soon)
            assert not await alarm.wait_until(t0 + 1000.0)
        assert trio.current_time() - t0 == 95.0
        with pytest.raises(ValueError, match="non-negative"):
            await timers.sleep(-1.0)


def test_the_service_needs_a_mock_clock() -> None:
    with pytest.raises(RuntimeError, match="MockClock"):
        trio.run(VirtualTimers().run)


async def test_a_world_in_virtual_time_wakes_its_stations_on_its_timer_task(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Heartbeats and meter values of a world's stations are timer-task wake-ups, not cancel scopes: the world
    runs a VirtualTimers, and the stations' uplinks and sessions sleep on it."""
    import evsim

    with trio.fail_after(100_000):
        async with evsim.open_world(seed=3) as world:
            service = current_timers()
            assert service is not None
            csms = await world.start_csms("main", heartbeat_interval=60)
            fleet = await world.start_stations(2, csms=csms, session_duration=120, meter_interval=30)
            await fleet.done()
            await trio.sleep(600.0)  # idle: Heartbeats every 60 s
            heartbeats = sum(node.station.heartbeats for node in world.stations.values())
            assert heartbeats >= 2 * 9
            # each Heartbeat and each meter value starts with a wake-up on the timer task
            assert service.wakeups >= heartbeats + 2 * 4
    assert current_timers() is None


async def _repeat_run(count: int, fail_at: int | None = None) -> tuple[list[tuple[float, bool]], int]:
    """Run ``timers.repeat(10.0, count, ...)``: each call's time and whether the caller's task made it, and how
    often the caller's task was scheduled meanwhile."""
    caller = trio.lowlevel.current_task()
    calls: list[tuple[float, bool]] = []
    t0 = trio.current_time()

    def fn() -> None:
        calls.append((trio.current_time() - t0, trio.lowlevel.current_task() is caller))
        if len(calls) == fail_at:
            raise KeyError("fn failed")

    class Steps(trio.abc.Instrument):
        n = 0

        def before_task_step(self, task: trio.lowlevel.Task) -> None:
            if task is caller:
                Steps.n += 1

    steps = Steps()
    trio.lowlevel.add_instrument(steps)
    try:
        await timers.repeat(10.0, count, fn)
    finally:
        trio.lowlevel.remove_instrument(steps)
    return calls, Steps.n


async def test_repeat_calls_at_each_instant_and_wakes_its_caller_once(
    autojump_clock: trio.testing.MockClock, service: VirtualTimers
) -> None:
    """On the timer task, the calls but the last run there (not in the caller's task), at the instants the
    plain loop would make them; the caller is scheduled once (to make the last call)."""
    with trio.fail_after(10_000):
        calls, caller_steps = await _repeat_run(5)
    assert calls == [(10.0, False), (20.0, False), (30.0, False), (40.0, False), (50.0, True)]
    assert caller_steps == 1
    assert service.wakeups == 5
    assert service._live == 0


async def test_repeat_without_a_service_is_the_plain_loop(autojump_clock: trio.testing.MockClock) -> None:
    assert current_timers() is None
    with trio.fail_after(10_000):
        calls, caller_steps = await _repeat_run(3)
        assert calls == [(10.0, True), (20.0, True), (30.0, True)]
        assert caller_steps == 3
        with pytest.raises(ValueError, match="non-negative"):
            await timers.repeat(-1.0, 2, lambda: None)


async def test_repeat_raises_what_a_call_raised_and_stops(
    autojump_clock: trio.testing.MockClock, service: VirtualTimers
) -> None:
    with trio.fail_after(10_000):
        t0 = trio.current_time()
        with pytest.raises(KeyError, match="fn failed"):
            await _repeat_run(5, fail_at=2)
        assert trio.current_time() - t0 == 20.0
        await timers.sleep(100.0)  # nothing left in the heap calls again
    assert service._live == 0


async def test_repeat_cancelled_makes_no_more_calls(
    autojump_clock: trio.testing.MockClock, service: VirtualTimers
) -> None:
    calls: list[float] = []
    t0 = trio.current_time()
    with trio.fail_after(10_000):
        with trio.move_on_after(25.0):
            await timers.repeat(10.0, 5, lambda: calls.append(trio.current_time() - t0))
        await timers.sleep(100.0)
    assert calls == [10.0, 20.0]
    assert service._live == 0


async def test_repeat_goes_on_on_trios_timers_when_the_service_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    calls: list[float] = []
    t0 = trio.current_time()
    with trio.fail_after(10_000):
        async with trio.open_nursery() as outer, trio.open_nursery() as inner:
            await inner.start(VirtualTimers().run)
            outer.start_soon(timers.repeat, 10.0, 4, lambda: calls.append(trio.current_time() - t0))
            await trio.sleep(15.0)
            inner.cancel_scope.cancel()
    assert calls == [10.0, 20.0, 30.0, 40.0]
