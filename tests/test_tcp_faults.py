"""Network faults on loopback TCP: a world or a scenario on the real clock with ``fault_relay`` partitions, heals
and resets its nodes' connections as the in-memory network does, over real TLS."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio

from evsim.backoff import RetryBackOff
from evsim.errors import ConfigError
from evsim.recorder import Event
from evsim.scenario.loader import loads_scenario
from evsim.scenario.runner import needs_fault_relay, preflight, run_scenario
from evsim.testing import open_test_world

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
