"""The CPU model in virtual time (evsim/cpu.py): queueing, capacity, costs per operation kind, profiles,
scenario keys, the model off by default, and ``evsim calibrate`` writing a loadable profile.

Nothing here times anything on the wall clock: every figure is virtual time under trio's MockClock.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import trio

from evsim.cli import main as cli_main
from evsim.cpu import PROFILE_FORMAT, Cpu, CpuProfile, load_profile, set_cpu_owner, shipped_profiles
from evsim.errors import ConfigError
from evsim.frozenmap import FrozenMap
from evsim.metrics.cpu import storm_figures
from evsim.metrics.topology import Topology
from evsim.scenario.loader import loads_scenario
from evsim.scenario.runner import run_scenario

PROFILE = CpuProfile(
    "test",
    FrozenMap(
        {
            "tls/server": 100_000.0,  # 0.1 s
            "tls/server/resumed": 10_000.0,
            "ws/server": 20_000.0,
            "ocpp/serve": 1_000.0,
            "ocpp/serve/BootNotification": 5_000.0,
        }
    ),
    FrozenMap({"ocpp": 1_000.0}),  # 1 ms per KiB
)


async def _storm(cpu: Cpu, jobs: int, kind: tuple[str, ...]) -> list[float]:
    """``jobs`` operations arriving together; the virtual time each one finished, in the order they did."""
    done: list[float] = []

    async def one() -> None:
        await cpu.charge(kind)
        done.append(trio.current_time())

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for _ in range(jobs):
            nursery.start_soon(one)
    return [t - start for t in done]


@pytest.mark.parametrize(("cores", "expected"), [(1, [0.1, 0.2, 0.3, 0.4]), (2, [0.1, 0.1, 0.2, 0.2])])
async def test_operations_arriving_together_queue_for_the_cores(
    autojump_clock: trio.testing.MockClock, cores: int, expected: list[float]
) -> None:
    cpu = Cpu("csms", PROFILE, cores=cores)
    finished = await _storm(cpu, 4, ("tls", "server", "full", "1.3", "x25519", "ec"))
    assert finished == pytest.approx(expected)  # one at a time per core, each for its own service time
    st = cpu.statistics()
    assert st.busy_s == pytest.approx(0.4)
    assert st.queue_peak == 4
    assert st.waiting == 0
    assert await _storm(cpu, 1, ("tls", "server")) == pytest.approx([0.1])  # alone: its own service time
    assert st.operations == {"tls/server/full": 4}


async def test_a_core_serves_first_come_first_served(autojump_clock: trio.testing.MockClock) -> None:
    cpu = Cpu("csms", PROFILE)
    ended: dict[str, float] = {}

    async def op(name: str, at: float, kind: tuple[str, ...]) -> None:
        await trio.sleep(at)
        await cpu.charge(kind)
        ended[name] = trio.current_time()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(op, "long", 0.0, ("tls", "server"))  # 0.1 s
        nursery.start_soon(op, "short", 0.05, ("ocpp", "serve"))  # 1 ms, arrives while the long one runs
        nursery.start_soon(op, "after", 0.25, ("ws", "server"))  # 20 ms, on an idle core
    # the short one waits for the long one to end (no sharing, no overtaking), then takes its 1 ms
    assert ended == pytest.approx({"long": 0.1, "short": 0.101, "after": 0.27})
    st = cpu.statistics()
    assert st.busy_s == pytest.approx(0.121)
    assert st.queue_peak == 2


@pytest.mark.parametrize("cores", [1, 2])
@pytest.mark.parametrize("reverse", [False, True])
async def test_operations_of_one_instant_are_served_in_owner_order(
    autojump_clock: trio.testing.MockClock, reverse: bool, cores: int
) -> None:
    """Whatever order trio runs the tasks in, the owners' names decide (a seed gives one run); the second
    core too is taken by the second owner, not by whoever asked first."""
    cpu = Cpu("csms", PROFILE, cores=cores)
    ended: list[tuple[float, str]] = []

    async def op(owner: str) -> None:
        set_cpu_owner(owner)
        await cpu.charge(("tls", "server"))
        ended.append((trio.current_time(), owner))

    owners = ["ST-3", "ST-1", "ST-4", "ST-2"]
    async with trio.open_nursery() as nursery:
        for owner in reversed(owners) if reverse else owners:
            nursery.start_soon(op, owner)
            if not reverse:
                await trio.testing.wait_all_tasks_blocked()  # each asks before the next starts
    got = sorted((round(t, 6), o) for t, o in ended)
    if cores == 1:
        assert got == [(0.1, "ST-1"), (0.2, "ST-2"), (0.3, "ST-3"), (0.4, "ST-4")]
    else:
        assert got == [(0.1, "ST-1"), (0.1, "ST-2"), (0.2, "ST-3"), (0.2, "ST-4")]


async def test_a_cancelled_operation_leaves_the_queue(autojump_clock: trio.testing.MockClock) -> None:
    cpu = Cpu("csms", PROFILE)
    ended: dict[str, float] = {}

    async def op(name: str, deadline: float = math.inf) -> None:
        set_cpu_owner(name)
        with trio.move_on_at(deadline):
            await cpu.charge(("tls", "server"))
            ended[name] = trio.current_time()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(op, "a", 0.05)  # cancelled half way through its service
        nursery.start_soon(op, "b", 0.04)  # cancelled while waiting
        nursery.start_soon(op, "c")
    assert ended == pytest.approx({"c": 0.15})  # a's core is free at 0.05; b never got it
    st = cpu.statistics()
    assert st.busy_s == pytest.approx(0.15)  # a's half and c's whole
    assert st.waiting == 0


async def test_each_kind_costs_its_own_time(autojump_clock: trio.testing.MockClock) -> None:
    cpu = Cpu("csms", PROFILE, scale=2.0)
    t0 = trio.current_time()
    await cpu.charge(("tls", "server", "resumed", "1.3"))  # longest listed prefix: tls/server/resumed
    assert trio.current_time() - t0 == pytest.approx(0.02)
    await cpu.charge(("ws", "server"))
    assert trio.current_time() - t0 == pytest.approx(0.06)
    await cpu.charge(("ocpp", "serve", "BootNotification"), size=2048)  # 5 ms + 2 KiB x 1 ms, x2
    assert trio.current_time() - t0 == pytest.approx(0.074)
    await cpu.charge(("relay", "csms"))  # not in the profile: free, but counted
    assert trio.current_time() - t0 == pytest.approx(0.074)
    st = cpu.statistics()
    assert st.operations == {
        "tls/server/resumed": 1,
        "ws/server": 1,
        "ocpp/serve/BootNotification": 1,
        "relay/csms": 1,
    }
    assert st.busy_by_kind["ws/server"] == pytest.approx(0.04)


def test_profile_lookup_takes_the_longest_prefix() -> None:
    assert PROFILE.cost(("tls", "server", "mutual", "1.2")) == pytest.approx(0.1)
    assert PROFILE.cost(("ocpp", "serve", "Heartbeat")) == pytest.approx(0.001)
    assert PROFILE.cost(("validate", "Heartbeat")) == 0.0
    assert PROFILE.merged({"validate": 7.0}).cost(("validate", "Heartbeat")) == pytest.approx(7e-6)


def test_shipped_reference_profile_loads_and_round_trips() -> None:
    assert "reference" in shipped_profiles()
    ref = load_profile("reference")
    assert ref.cost(("tls", "server", "full", "1.3", "x25519mlkem768", "ec")) > 0
    assert ref.cost(("ocpp", "serve", "BootNotification")) > 0
    again = CpuProfile.from_json(json.loads(json.dumps(ref.to_json())), source="copy")
    assert again == ref


def test_bad_profiles_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown CPU profile") as info:
        load_profile("refrence")
    assert "reference" in info.value.fix
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": PROFILE_FORMAT, "costs": {"tls": -1}}))
    with pytest.raises(ConfigError, match="microseconds"):
        load_profile(str(bad))
    bad.write_text(json.dumps({"costs": {}}))
    with pytest.raises(ConfigError, match="not an evsim CPU profile"):
        load_profile(str(bad))


STORM = """
[simulation]
duration = "5m"
stop_when_done = true
{cpu}

[csms.main]

[stations.fleet]
count = 4
csms = "main"
sessions = 0
{fleet_cpu}
"""


def test_scenario_cpu_keys_are_validated_with_did_you_mean() -> None:
    with pytest.raises(ConfigError, match="unknown key") as info:
        loads_scenario(STORM.format(cpu="cpu = { core = 2 }", fleet_cpu=""))
    assert "cores" in info.value.fix
    with pytest.raises(ConfigError, match="unknown CPU profile"):
        loads_scenario(STORM.format(cpu='cpu = { profile = "refernce" }', fleet_cpu=""))
    with pytest.raises(ConfigError, match="unknown operation kind") as info:
        loads_scenario(STORM.format(cpu='cpu = { costs = { "tsl/server" = 5 } }', fleet_cpu=""))
    assert "tls" in info.value.fix
    with pytest.raises(ConfigError, match="cores"):
        loads_scenario(STORM.format(cpu="cpu = { cores = 0 }", fleet_cpu=""))
    with pytest.raises(ConfigError, match="virtual time only"):
        loads_scenario(STORM.format(cpu='clock = "real"', fleet_cpu="cpu = { cores = 1 }"))


def test_scenario_cpu_tables_reach_every_node_and_a_node_may_override() -> None:
    sc = loads_scenario(
        STORM.format(cpu="cpu = { cores = 2 }", fleet_cpu="cpu = { cores = 1, shared = false, scale = 0.5 }")
    )
    assert sc.cpu["main"].cores == 2
    assert sc.cpu["fleet"].cores == 1 and not sc.cpu["fleet"].shared and sc.cpu["fleet"].scale == 0.5
    assert loads_scenario(STORM.format(cpu="", fleet_cpu="")).cpu == {}


def _first_boots(cpu: str, fleet_cpu: str = "") -> tuple[dict[str, float], list[dict[str, object]]]:
    result = run_scenario(loads_scenario(STORM.format(cpu=cpu, fleet_cpu=fleet_cpu)))
    assert result.ok
    events = [{"t": e.t, "node": e.node, "kind": e.kind, **e.data} for e in result.recorder.events]
    topo = Topology(groups={f"fleet-{n:04d}": "fleet" for n in range(1, 5)})
    return storm_figures(events, topo)["fleet"], [e for e in events if e["kind"] == "cpu_usage"]


def test_a_group_may_give_each_station_its_own_cpu() -> None:
    _, usage = _first_boots("cpu = { cores = 1 }", "cpu = { shared = false }")
    assert sorted(str(u["cpu"]) for u in usage) == [
        "fleet-0001",
        "fleet-0002",
        "fleet-0003",
        "fleet-0004",
        "main",
    ]


def test_the_model_is_off_by_default() -> None:
    figures, usage = _first_boots("")
    assert figures["booted"] == 4
    assert figures["drain_s"] == 0.0  # without the model a storm costs no virtual time
    assert usage == []


def test_a_storm_queues_on_the_model_and_more_cores_drain_it_sooner() -> None:
    costs = 'costs = { "tls/server" = 100000, "tls/client" = 1000, "conn" = 0, "ws" = 0, "ocpp" = 0, "validate" = 0 }'
    one, usage = _first_boots(f"cpu = {{ cores = 1, {costs} }}")
    two, _ = _first_boots(f"cpu = {{ cores = 2, {costs} }}", f"cpu = {{ cores = 1, {costs} }}")
    assert one["booted"] == two["booted"] == 4
    # four server handshakes of 0.1 s one after another on one core end at 0.1 ... 0.4 s, on two cores two
    # by two at 0.1 and 0.2 s; each client's 1 ms follows on the fleet's one core (the earlier clients' work
    # overlaps the server's), so the last boots 1 ms after the last handshake, or 2 ms when two end together
    assert one["drain_s"] == pytest.approx(0.401, abs=1e-4)
    assert two["drain_s"] == pytest.approx(0.202, abs=1e-4)
    main = next(u for u in usage if u["cpu"] == "main")
    assert main["busy"] == pytest.approx(0.4, abs=1e-4)  # plus the profile's per-KiB message costs
    assert isinstance(main["queue_peak"], int) and main["queue_peak"] >= 3
    ops = main["operations"]
    assert isinstance(ops, dict) and ops["tls/server/full"] == 4 and ops["ws/server"] == 4
    assert ops["ocpp/serve/BootNotification"] == 4


def test_a_connect_window_admits_stations_to_their_set_up_in_turn() -> None:
    """``connect_window`` is the ``evsim stations`` window (the same limiter in virtual time): with a window of
    one, a station starts its connection only when the previous one is up, so the fleet's and the server's
    work no longer overlap."""
    costs = 'costs = { "tls/server" = 100000, "tls/client" = 100000, "conn" = 0, "ws" = 0, "ocpp" = 0, "validate" = 0 }'
    cpu = f"cpu = {{ cores = 1, {costs} }}"
    # no window: the server's core does the four handshakes at 0.1 ... 0.4 s, the fleet's core each client's
    # part right after, the last at 0.5 s
    free, _ = _first_boots(cpu)
    assert free["drain_s"] == pytest.approx(0.5, abs=1e-3)
    one, _ = _first_boots(cpu, "connect_window = 1")
    assert one["booted"] == 4
    assert one["drain_s"] == pytest.approx(0.8, abs=1e-3)  # 0.1 s on each side, one station after the other
    with pytest.raises(ConfigError, match="connect_window"):
        loads_scenario(STORM.format(cpu="", fleet_cpu="connect_window = -1"))


def test_an_overloaded_server_times_handshakes_out_and_stations_retry_with_back_off() -> None:
    # six 2-second server handshakes on one core end at 2, 4, ... 12 s: the last ones are past the clients'
    # 10 s handshake timeout
    slow = 'costs = { "tls/server" = 2000000 }'
    storm = STORM.replace("count = 4", "count = 6").replace('duration = "5m"', 'duration = "10m"')
    result = run_scenario(loads_scenario(storm.format(cpu=f"cpu = {{ cores = 1, {slow} }}", fleet_cpu="")))
    events = [{"t": e.t, "node": e.node, "kind": e.kind, **e.data} for e in result.recorder.events]
    topo = Topology(groups={f"fleet-{n:04d}": "fleet" for n in range(1, 7)})
    one = storm_figures(events, topo)["fleet"]
    assert one["booted"] == 6  # all in the end, spread out by the back-off
    assert one["retries"] > 0 and one["stations_retried"] > 0
    assert one["drain_s"] > 12  # a back-off and a second handshake after the 12 s of work
    # four cores: two rounds of 2 s, within the timeout; no retry
    result = run_scenario(loads_scenario(storm.format(cpu=f"cpu = {{ cores = 4, {slow} }}", fleet_cpu="")))
    events = [{"t": e.t, "node": e.node, "kind": e.kind, **e.data} for e in result.recorder.events]
    four = storm_figures(events, topo)["fleet"]
    assert (four["booted"], four["retries"]) == (6, 0)
    assert four["drain_s"] == pytest.approx(4.0, abs=0.05)


def test_calibrate_writes_a_loadable_profile(tmp_path: Path) -> None:
    out = tmp_path / "mine.json"
    assert (
        cli_main(
            [
                "calibrate",
                "--iterations",
                "1",
                "--rounds",
                "1",
                "--storm",
                "0",
                "--name",
                "mine",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    profile = load_profile(str(out))
    assert profile.name == "mine"
    for kind in (
        ("tls", "server", "full"),
        ("tls", "client", "resumed"),
        ("tls", "server", "mutual"),
        ("ws", "client"),
        ("ocpp", "serve", "BootNotification"),
        ("validate", "TransactionEvent"),
    ):
        assert profile.cost(kind) > 0, kind
