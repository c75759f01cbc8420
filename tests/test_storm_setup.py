"""Connection set-up under a boot storm: the CSMS's handshake admission and the stations' connect window.

In-memory network and trio's MockClock: what is checked is how many connections are in set-up at once on each
side, not how fast they go (the storm's figures are ``bench/storm.py``'s).
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from evsim.clock import SimClock
from evsim.errors import ConfigError, TransportError
from evsim.net.virtual import VirtualNetwork
from evsim.nodes.acceptor import Acceptor, handshake_finished
from evsim.nodes.csms import CsmsConfig
from evsim.nodes.setup_window import SetupHold
from evsim.recorder import Recorder
from tests.e2e_harness import harness
from tests.pki_fixtures import TEST_NOW


async def test_the_listener_accepts_no_more_than_max_handshakes_connections_in_set_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With ``max_handshakes = 2`` a third connection is not accepted (it waits in the backlog) until one of the
    first two finished its set-up; then it is. Without the limit all three would be in set-up at once."""
    net = VirtualNetwork()
    recorder = Recorder(SimClock.start(TEST_NOW))
    acceptor = Acceptor("csms", recorder, max_handshakes=2)
    started: list[trio.Event] = []
    in_setup = [0]
    peak = [0]

    async def handler(stream: trio.abc.Stream) -> None:
        go = trio.Event()
        started.append(go)
        in_setup[0] += 1
        peak[0] = max(peak[0], in_setup[0])
        await go.wait()
        in_setup[0] -= 1
        handshake_finished()
        handshake_finished()  # idempotent
        await trio.sleep_forever()

    with trio.fail_after(60):
        listener = await net.listen("csms", 443)
        async with listener, trio.open_nursery() as nursery:
            nursery.start_soon(acceptor.serve, listener, handler)
            clients = [await net.connect("csms", 443, source=f"st{i}") for i in range(3)]
            await trio.testing.wait_all_tasks_blocked()
            assert len(started) == 2
            stats = acceptor.statistics()
            assert (stats.handshakes, stats.max_handshakes, stats.accepted) == (2, 2, 2)
            started[0].set()
            await trio.testing.wait_all_tasks_blocked()
            assert len(started) == 3
            assert acceptor.statistics().handshakes == 2  # the second and the third
            for go in started[1:]:
                go.set()
            await trio.testing.wait_all_tasks_blocked()
            assert acceptor.statistics().handshakes == 0
            assert peak[0] == 2
            nursery.cancel_scope.cancel()
        for c in clients:
            await c.aclose()


async def test_a_connection_that_ends_during_its_set_up_gives_its_place_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A handler that returns without finishing its set-up (a failed handshake) frees its place."""
    net = VirtualNetwork()
    acceptor = Acceptor("csms", Recorder(SimClock.start(TEST_NOW)), max_handshakes=1)
    handled: list[int] = []

    async def handler(stream: trio.abc.Stream) -> None:
        handled.append(1)
        await stream.aclose()

    with trio.fail_after(60):
        listener = await net.listen("csms", 443)
        async with listener, trio.open_nursery() as nursery:
            nursery.start_soon(acceptor.serve, listener, handler)
            clients = [await net.connect("csms", 443) for _ in range(3)]
            await trio.testing.wait_all_tasks_blocked()
            assert len(handled) == 3
            assert acceptor.statistics().handshakes == 0
            nursery.cancel_scope.cancel()
        for c in clients:
            await c.aclose()


def test_max_handshakes_is_checked() -> None:
    assert CsmsConfig().max_handshakes is not None  # on by default for the CSMS
    assert CsmsConfig(max_handshakes=None).max_handshakes is None
    for bad in (0, -1):
        with pytest.raises(ConfigError, match="max_handshakes"):
            CsmsConfig(max_handshakes=bad)


async def test_the_connect_window_admits_that_many_connections_to_set_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A window of 2: the third station connects only once one of the first two gave its place back; a connect
    that fails gives its place back at once."""
    net = VirtualNetwork()
    window = trio.CapacityLimiter(2)
    with trio.fail_after(60):
        listener = await net.listen("csms", 443)
        async with listener:
            first = await SetupHold.connect(net, "csms", 443, "st1", window)
            second = await SetupHold.connect(net, "csms", 443, "st2", window)
            third: list[SetupHold] = []

            async def connect_third() -> None:
                third.append(await SetupHold.connect(net, "csms", 443, "st3", window))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(connect_third)
                await trio.testing.wait_all_tasks_blocked()
                assert not third and window.borrowed_tokens == 2
                first.release()
                first.release()  # idempotent
            assert len(third) == 1 and window.borrowed_tokens == 2
            second.release()
            third[0].release()
            assert window.borrowed_tokens == 0
            with pytest.raises(TransportError):
                await SetupHold.connect(net, "nobody", 1, "st4", window)
            assert window.borrowed_tokens == 0
            for hold in (first, second, third[0]):
                await hold.stream.aclose()


async def test_a_fleet_behind_a_window_boots_and_gives_every_place_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Twelve stations through a window of three: all boot without a connect failure (a station that kept its place
    once online would stop the fourth for ever), every place is given back, and the CSMS (default
    ``max_handshakes``) has no connection left in set-up."""
    window = trio.CapacityLimiter(3)
    with trio.fail_after(120):
        async with harness() as h:
            csms = await h.start_csms()
            stations = []
            for i in range(12):
                st = h.start_station(f"ST-{i:04d}", sessions=0)
                st.connect_window = window
                stations.append(st)
            for st in stations:
                await st.wait_online()
            assert window.borrowed_tokens == 0
            assert sum(sum(st.connect_failures.values()) for st in stations) == 0
            stats = csms.acceptor.statistics()
            assert (stats.handshakes, stats.max_handshakes) == (0, CsmsConfig().max_handshakes)
