"""Network faults on loopback TCP: a world or a scenario on the real clock with ``fault_relay`` partitions, heals
and resets its nodes' connections as the in-memory network does, over real TLS."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio
import trio.testing

from evsim.backoff import RetryBackOff
from evsim.errors import ConfigError
from evsim.recorder import Event
from evsim.scenario.loader import loads_scenario
from evsim.scenario.runner import needs_fault_relay, preflight, run_scenario
from evsim.testing import open_test_world
from evsim.world import Route
from evsim.world.actions import Link

FAST_RETRY = RetryBackOff(wait_minimum=0.05, random_range=0.05, repeat_times=2)


class Watch:
    """An event sink tests wait on: :meth:`until` returns once the events recorded so far satisfy a condition."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._changed = trio.Event()

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        self._changed.set()
        self._changed = trio.Event()

    def count(self, kind: str, node: str | None = None, *, after: int = 0) -> int:
        return sum(1 for e in self.events[after:] if e.kind == kind and node in (None, e.node))

    async def until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            await self._changed.wait()


@pytest.mark.loopback
async def test_a_partition_over_loopback_tcp_cuts_the_fleet_off_and_the_heal_delivers_the_queue() -> None:
    """Stations charging over real TLS lose the CSMS at the partition, keep charging offline (their reconnects
    are refused), and after the heal deliver every queued TransactionEvent in order."""
    watch = Watch()
    with trio.fail_after(30):
        async with open_test_world(network="tcp", fault_relay=True, sink=watch) as world:
            assert world.relay is not None and world.faults is not None
            csms = await world.start_csms("main", heartbeat_interval=60)
            fleet = await world.start_stations(
                2,
                csms=csms,
                sessions=1,
                session_start=(0.0, 0.0),
                session_duration=1.0,
                meter_interval=0.2,
                retry_backoff=FAST_RETRY,
            )
            ids = fleet.ids
            await watch.until(
                lambda: all(watch.count("booted", s) and watch.count("tx_started", s) for s in ids)
            )
            assert all(node.station.session is not None for node in fleet)

            mark = len(watch.events)
            world.partition(fleet, csms)

            def refused_again(sid: str) -> bool:
                return any(
                    e.node == sid and e.kind == "connection_lost" and e.data.get("reason") == "refused"
                    for e in watch.events[mark:]
                )

            def cut_off() -> bool:  # each station lost its link, was refused again, and ended its session
                return all(refused_again(sid) and watch.count("tx_ended", sid, after=mark) for sid in ids)

            await watch.until(cut_off)
            assert all(node.station.session is None for node in fleet)
            assert all(len(node.station.queue) > 0 for node in fleet)  # TransactionEvents waiting offline

            world.heal(fleet, csms)
            await fleet.done()
            relay = world.relay.statistics()

    records = csms.csms.stations
    for sid in ids:
        (tx,) = records[sid].transactions.values()
        assert tx.started and tx.ended and tx.gap_free() and tx.duplicates == 0
        assert tx.offline_events > 0  # sent after the heal, flagged offline
        assert records[sid].boots >= 2  # booted again after the heal
    assert relay.resets == 2  # one TLS connection per station, reset by the partition
    assert relay.refused >= 2 and relay.strangers == 0
    assert all(
        st.tls_info is not None and st.tls_info.version == "TLSv1.3" for st in (n.station for n in fleet)
    )
    resets = [e.data for e in watch.events if e.kind == "relay_reset"]
    assert sum(int(r["connections"]) for r in resets) == 2


async def test_a_tcp_world_without_the_relay_still_says_what_faults_need() -> None:
    with trio.fail_after(10):
        async with open_test_world(network="tcp") as world:
            assert world.relay is None
            with pytest.raises(ConfigError, match="fault relay"):
                world.partition("a", "b")


TCP_PARTITION = """
[simulation]
duration = "20s"
clock = "real"
network = "tcp"
stop_when_done = true

[csms.main]
heartbeat_interval = "60s"

[stations.fleet]
count = 2
id_pattern = "TCP-{n:02d}"
csms = "main"
sessions = 1
session_duration = "1500ms"
session_start = ["0s", "0s"]
meter_interval = "250ms"
retry_backoff = { wait_minimum = "50ms", random_range = "50ms", repeat_times = 2 }

[[links]]
between = ["fleet", "main"]
latency = "5ms"

[[timeline]]
at = "500ms"
action = "partition"
between = ["fleet", "main"]

[[timeline]]
at = "2500ms"
action = "heal"
between = ["fleet", "main"]
"""


def test_partitions_links_and_link_resets_are_accepted_on_tcp() -> None:
    """What was refused before anything started now runs through the fault relay."""
    sc = loads_scenario(TCP_PARTITION, source="tcp_partition.toml")
    preflight(sc)
    assert needs_fault_relay(sc)
    move = loads_scenario(
        TCP_PARTITION.split("[[links]]")[0]
        + '[csms.backup]\n[[timeline]]\nat = "1s"\naction = "set_network_profile"\ntarget = "fleet"\ncsms = "backup"\n',
        source="move.toml",
    )
    preflight(move)  # reconnect = true resets the stations' links: the relay does that too
    assert needs_fault_relay(move)
    plain = loads_scenario(TCP_PARTITION.split("[[links]]")[0], source="plain.toml")
    assert not needs_fault_relay(plain)  # no faults: nodes connect directly, no extra hop


@pytest.mark.loopback
def test_a_tcp_scenario_with_a_partition_runs_on_the_real_clock() -> None:
    """The timeline's partition and heal reach the relay; every transaction still arrives complete."""
    r = run_scenario(loads_scenario(TCP_PARTITION, source="tcp_partition.toml"))
    assert r.outcome == "all stations done", r.error
    assert r.world is not None
    events = r.world.recorder.events
    (stats,) = [e.data for e in events if e.kind == "relay_statistics"]
    assert stats["relayed"] >= 2 and stats["strangers"] == 0
    assert [e.kind for e in events if e.node == "timeline"] == ["partition", "heal"]
    for rec in r.station_records().values():
        (tx,) = rec.transactions.values()
        assert tx.started and tx.ended and tx.gap_free()


@pytest.mark.loopback
async def test_a_stall_over_loopback_tcp_holds_the_link_without_dropping_it() -> None:
    watch = Watch()
    with trio.fail_after(20):
        async with open_test_world(network="tcp", fault_relay=True, sink=watch) as world:
            csms = await world.start_csms("main", heartbeat_interval=60)
            fleet = await world.start_stations(1, csms=csms, sessions=0, retry_backoff=FAST_RETRY)
            await watch.until(lambda: watch.count("booted") == 1)
            (sid,) = fleet.ids
            world.stall_links_every(fleet, csms, every=0.3, duration=0.2)
            await watch.until(lambda: watch.count("link_stall") >= 2)
            assert world.relay is not None and world.relay.statistics().resets == 0
            assert watch.count("connection_lost") == 0
            assert csms.csms.stations[sid].connections == 1  # the same connection throughout
    stall = next(e for e in watch.events if e.kind == "link_stall")
    assert stall.data == {"between": "fleet<->main", "seconds": 0.2}


async def test_stalls_are_refused_in_memory_and_accepted_on_tcp(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_test_world() as world:
        with pytest.raises(ConfigError, match="fault relay"):
            world.stall_links_every("a", "b", every=10, duration=1)
    text = TCP_PARTITION.replace(
        'latency = "5ms"', 'latency = "5ms"\nstall = { every = "1s", for = "100ms" }'
    )
    preflight(loads_scenario(text, source="stall.toml"))
    memory = text.replace('clock = "real"\nnetwork = "tcp"\n', "")
    with pytest.raises(ConfigError, match="link knob 'stall' is not supported yet"):
        preflight(loads_scenario(memory, source="stall-memory.toml"))


async def test_a_link_event_changes_only_the_keys_it_gives(autojump_clock: trio.testing.MockClock) -> None:
    """A ``link`` event with only ``reset`` keeps the latency set before and resets the links periodically."""
    watch = Watch()
    async with open_test_world(sink=watch) as world:
        csms = await world.start_csms("main", heartbeat_interval=60)
        fleet = await world.start_stations(1, csms=csms, sessions=0)
        world.set_link(fleet, csms, latency=0.5)
        await Link(between=("fleet", "main"), reset=60.0).apply(world)
        with trio.fail_after(3600):
            await watch.until(lambda: watch.count("link_reset") >= 2)
        assert world.memory is not None
        assert world.memory.statistics().broken_links >= 1
        (sid,) = fleet.ids
        stream = await world.network.connect(csms.host, csms.port, source=sid)
        start = trio.current_time()
        await stream.send_all(b"GET / HTTP/1.0\r\n\r\n")  # not TLS: the server answers or closes at once
        with trio.fail_after(60):
            await stream.receive_some()
        assert trio.current_time() - start >= 0.5  # the bytes took the 0.5 s latency: it was kept
        await stream.aclose()


@pytest.mark.loopback
async def test_a_partition_between_a_controller_and_its_csms_over_loopback_tcp() -> None:
    """The relay knows the controller as the source of its upstream links: cutting the controller from the CSMS
    leaves the station-to-controller links alone, and the upstream comes back after the heal."""
    watch = Watch()
    with trio.fail_after(30):
        async with open_test_world(network="tcp", fault_relay=True, sink=watch) as world:
            csms = await world.start_csms("main", heartbeat_interval=60)
            lc = await world.start_controller(
                "site", upstream=[csms], on_upstream_loss="keep_station", retry_backoff=FAST_RETRY
            )
            await world.start_stations(1, routes=[Route(to="site")], sessions=0, retry_backoff=FAST_RETRY)
            await watch.until(lambda: watch.count("booted", "fleet-0001") >= 1)
            mark = len(watch.events)
            world.partition(lc, csms)
            await watch.until(lambda: watch.count("upstream_lost", "site", after=mark) >= 1)
            world.heal(lc, csms)
            await watch.until(lambda: watch.count("upstream_connected", "site", after=mark) >= 1)
            assert world.relay is not None
            stats = world.relay.statistics()
    assert stats.resets == 1  # the controller's one upstream link; the station's link to it was untouched
    assert watch.count("connection_lost") == 0  # the station never lost the controller
