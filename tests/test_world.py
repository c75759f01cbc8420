"""evsim.world: the public nursery API, its timeline actions, and the documentation that shows them."""

from __future__ import annotations

import gc
import inspect
import re
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing

import evsim
from evsim.errors import ConfigError
from evsim.scenario.loader import load_scenario, loads_scenario
from evsim.scenario.model import CsmsSpec, StationGroupSpec
from evsim.scenario.runner import run_scenario, run_scenario_async
from evsim.world import Route, Tls, World, open_world
from evsim.world.actions import ACTIONS, Action, Partition, ReleasePin, Stop
from evsim.world.core import WORLD_START
from evsim.world.nodes import NodeHandle

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------- the action registry


def _readme_action_rows() -> dict[str, str]:
    """``scenarios/README.md``'s timeline table: action -> its parameters column."""
    text = (ROOT / "scenarios" / "README.md").read_text()
    table = text.split("| action | parameters (defaults) | what happens |", 1)[1].split("\n\n", 1)[0]
    rows: dict[str, str] = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        m = re.fullmatch(r"`(\w+)`", cells[0])
        assert m, line
        rows[m.group(1)] = cells[1]
    return rows


def test_readme_action_table_matches_the_registry() -> None:
    rows = _readme_action_rows()
    assert set(rows) == set(ACTIONS), "scenarios/README.md lists other actions than ACTIONS"
    for name, cls in ACTIONS.items():
        params = rows[name]
        if params == "same as `attack_wrong_ca`":
            params = rows["attack_wrong_ca"]
        missing = [key for key in cls.keys if f"`{key}`" not in params]
        assert not missing, f"{name}: README does not document {missing}"


def test_every_action_is_a_frozen_attrs_class_with_typed_fields() -> None:
    for name, cls in ACTIONS.items():
        assert issubclass(cls, Action) and cls.name == name
        assert attrs.has(cls) and cls.__setattr__ is not object.__setattr__  # frozen
        hints = inspect.get_annotations(cls, eval_str=True)
        for field in attrs.fields(cls):
            assert field.name in hints or any(
                field.name in inspect.get_annotations(base, eval_str=True) for base in cls.__mro__[1:-1]
            ), f"{name}.{field.name} has no annotation"
        for method in ("read", "apply"):
            assert getattr(cls, method) is not getattr(Action, method), f"{name} does not define {method}"


def test_loaded_timeline_holds_the_typed_actions() -> None:
    text = """
[simulation]
duration = "1h"
[csms.main]
[stations.fleet]
count = 2
[[timeline]]
at = "10m"
action = "partition"
between = ["fleet", "main"]
[[timeline]]
at = "20m"
action = "stop"
target = "main"
"""
    sc = loads_scenario(text)
    assert [ev.action for ev in sc.timeline] == [Partition(between=("fleet", "main")), Stop(target="main")]


# ---------------------------------------------------------------------------- the world


def test_world_defaults_match_the_scenario_model() -> None:
    """A network written in Python behaves like the same network written in TOML, key by key."""
    csms = inspect.signature(World.start_csms).parameters
    for field in attrs.fields(CsmsSpec):
        # signing: a SigningSpec in the model, SigningSettings (plus signed_validity) in the world
        if field.name in csms and field.name not in ("name", "host", "port", "password", "signing"):
            assert csms[field.name].default == field.default, field.name
    stations = inspect.signature(World.start_stations).parameters
    for field in attrs.fields(StationGroupSpec):
        # names are the caller's; a group's security profile defaults to its CSMS's (None) in both
        skip = ("name", "csms", "id_pattern", "retry_backoff", "security_profile", "certificates")
        if field.name in stations and field.name not in skip:
            assert stations[field.name].default == field.default, field.name


async def test_virtual_world_needs_a_mock_clock() -> None:
    with pytest.raises(ConfigError, match="MockClock"):
        async with open_world(clock="virtual"):
            pass  # pragma: no cover


async def test_world_runs_a_csms_and_stations(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(3600):
        async with evsim.open_world(seed=3) as world:
            assert world.clock.start_utc == WORLD_START
            csms = await world.start_csms("main", heartbeat_interval=60)
            fleet = await world.start_stations(3, csms=csms, session_duration=120, meter_interval=30)
            await fleet.done()
            assert fleet.ids == ["fleet-0001", "fleet-0002", "fleet-0003"]
            assert all(rec.transactions for rec in world.station_records().values())
            summary = world.summary()
            groups = summary.table("Station groups")
            assert groups.rows[0][0] == "fleet"
            assert "fleet -> main" in summary.render()


async def test_world_partition_stop_and_rotation(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(3600):
        async with open_world() as world:
            csms = await world.start_csms("main", tls=Tls(), heartbeat_interval=60)
            fleet = await world.start_stations(2, csms=csms, sessions=0)
            await trio.sleep(30)
            assert all(n.station.session is not None for n in fleet)
            await Partition(between=("fleet", "main")).apply(world)
            await trio.sleep(5)
            assert all(n.station.session is None for n in fleet)
            world.heal(fleet, csms)
            await world.stop(csms)
            assert not csms.running
            await world.start(csms)
            first = csms.certificate
            world.rotate_certificate(csms)
            assert csms.certificate is not first
            await trio.sleep(120)
            assert all(n.station.session is not None for n in fleet)


async def test_world_routes_and_controller(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(3600):
        async with open_world() as world:
            main = await world.start_csms("main", heartbeat_interval=60)
            lc = await world.start_controller("site", upstream=[main])
            fleet = await world.start_stations(2, routes=[Route(to="site")], sessions=1, session_duration=60)
            await fleet.done()
            assert fleet.csms == "main"
            assert set(lc.controller.stations) == set(fleet.ids)


async def test_release_pin_needs_pins(autojump_clock: trio.testing.MockClock) -> None:
    async with open_world() as world:
        csms = await world.start_csms()
        await world.start_stations(1, csms=csms, sessions=0)
        with pytest.raises(ConfigError, match="no pins"):
            await ReleasePin(target="fleet", key=evsim.world.PinSpec(target="root", root="root")).apply(world)


async def test_run_scenario_async_in_a_callers_nursery(autojump_clock: trio.testing.MockClock) -> None:
    sc = load_scenario(ROOT / "scenarios" / "default.toml")
    results = []
    async with trio.open_nursery() as nursery:

        async def one() -> None:
            results.append(await run_scenario_async(sc))

        nursery.start_soon(one)
        nursery.start_soon(one)
    assert [r.outcome for r in results] == ["all stations done"] * 2
    assert all(len(r.station_records()) == 10 for r in results)


def test_run_scenario_async_checks_the_clock() -> None:
    sc = load_scenario(ROOT / "scenarios" / "default.toml")
    with pytest.raises(ConfigError, match="MockClock"):
        trio.run(run_scenario_async, sc)


def test_world_summary_is_the_summary_evsim_run_prints(tmp_path: Path) -> None:
    """The summary a world computes is the one ``evsim run`` prints (rebuilt from the run directory), which opens
    with the scenario's description and closes with the check of its expected outcome."""
    from evsim.metrics.rundir import RunDir, load, rerender, with_story
    from evsim.scenario.cli import _meta

    sc = load_scenario(ROOT / "scenarios" / "partition_heal.toml")
    rd = RunDir.create(tmp_path, sc.simulation.name, WORLD_START)
    with rd.open_event_sink() as sink:
        result = run_scenario(sc, sink=sink)
    rd.write_metrics_csv(result.samples)
    rd.write_meta(_meta("partition_heal.toml", sc_result=result, topology=sc.topology()))
    printed, _ = rerender(rd.path, plots=False)
    assert result.world is not None
    header, tables = printed.split("\n\n", 1)
    assert header.startswith("scenario partition_heal")
    assert tables == with_story(result.world.summary(), load(rd.path)).render()


# ---------------------------------------------------------------------------- evsim.testing


async def test_testing_csms_peer_serves_a_station_under_test(autojump_clock: trio.testing.MockClock) -> None:
    """A station someone writes (here evsim's own, wired by hand) reaches the peer with what it returns."""
    import random

    from evsim.nodes.station import Station
    from evsim.nodes.station_model import StationConfig
    from evsim.testing import csms_peer, open_test_world

    with trio.fail_after(3600):
        async with open_test_world() as world:
            for sp in (2, 3):
                peer = await csms_peer(world, f"csms{sp}", security_profile=sp, station_id=f"MINE-{sp}")
                mine = Station(
                    StationConfig(
                        station_id=f"MINE-{sp}",
                        csms_url=peer.url,
                        security_profile=sp,
                        password=peer.password if sp < 3 else None,
                        sessions=1,
                    ),
                    network=peer.network,
                    client_tls=peer.client_tls,
                    clock=world.clock,
                    recorder=world.recorder,
                    rng=random.Random(sp),
                )
                world.nursery.start_soon(mine.run)
                await mine.done.wait()
                assert peer.node.csms.stations[f"MINE-{sp}"].transactions


async def test_testing_station_peers_against_a_csms_under_test(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Stations of evsim against a CSMS someone writes (here evsim's own Csms, wired by hand)."""
    from evsim.nodes.csms import Csms, CsmsConfig
    from evsim.testing import TEST_PASSWORD, open_test_world, server_tls, start_station

    with trio.fail_after(3600):
        async with open_test_world() as world:
            theirs = Csms(
                CsmsConfig(name="theirs", host="theirs.test", port=443, default_password=TEST_PASSWORD),
                network=world.network,
                server_tls=server_tls(world, "theirs.test"),
                clock=world.clock,
                recorder=world.recorder,
            )
            await world.nursery.start(theirs.run)
            stations = [start_station(world, f"S{i}", url="wss://theirs.test/ocpp") for i in range(3)]
            for st in stations:
                await st.done.wait()
            assert sorted(theirs.stations) == ["S0", "S1", "S2"]


# ---------------------------------------------------------------------------- the README's Python network


def test_readme_python_network_is_the_default_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## A network in Python (`evsim.world`)", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert len(code.strip().splitlines()) <= 20
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    printed = capsys.readouterr().out
    scenario = run_scenario(load_scenario(ROOT / "scenarios" / "default.toml"))
    assert scenario.world is not None
    expected = scenario.world.summary()
    for title in ("Station groups", "Links", "TLS"):
        assert expected.table(title).render() in printed, title


# ---------------------------------------------------------------------------- scenarios built in Python


@pytest.mark.parametrize("path", sorted((ROOT / "scenarios").glob("*.toml")), ids=lambda p: p.stem)
def test_a_valid_scenario_stays_itself_through_validation(path: Path) -> None:
    sc = load_scenario(path)
    assert sc.validate() == sc


def test_python_scenario_is_validated_like_a_file() -> None:
    """The same mistake, written in TOML and built in Python, gives the same error."""
    from evsim.scenario.model import Scenario, SimulationSpec

    text = '[simulation]\nduration = "1h"\n[csms.main]\n[stations.fleet]\ncsms = "mian"\n'
    with pytest.raises(ConfigError) as from_file:
        loads_scenario(text)
    built = Scenario(
        simulation=SimulationSpec(name="x", duration=3600.0),
        csms={"main": CsmsSpec(name="main", host="main.evsim.test")},
        stations={"fleet": StationGroupSpec(name="fleet", id_pattern="fleet-{n:04d}", csms="mian")},
    )
    with pytest.raises(ConfigError) as from_python:
        built.validate()
    with pytest.raises(ConfigError) as from_run:
        run_scenario(built)
    for exc in (from_python.value, from_run.value):
        assert (exc.message, exc.path, exc.fix) == (
            from_file.value.message,
            from_file.value.path,
            from_file.value.fix,
        )
    assert "did you mean 'main'" in from_python.value.fix
    # and a valid one runs, with the loader's defaults filled in
    ok = attrs.evolve(built, stations={"fleet": attrs.evolve(built.stations["fleet"], csms="main", count=2)})
    result = run_scenario(ok)
    assert result.ok and len(result.stations) == 2 and "default" in result.scenario.trust_stores


async def test_world_plays_a_timeline(autojump_clock: trio.testing.MockClock) -> None:
    from evsim.world.actions import Heal

    with trio.fail_after(3600):
        async with open_world() as world:
            csms = await world.start_csms("main", heartbeat_interval=60)
            fleet = await world.start_stations(2, csms=csms, sessions=0)
            world.play([(60, Partition(between=("fleet", "main"))), (120, Heal(between=("fleet", "main")))])
            await trio.sleep(300)
            timeline = [(e.t, e.kind, e.data) for e in world.recorder.events if e.node == "timeline"]
            assert timeline == [
                (60.0, "partition", {"between": ["fleet", "main"]}),
                (120.0, "heal", {"between": ["fleet", "main"]}),
            ]
            assert all(n.station.session is not None for n in fleet)
            assert world.recorder.counts["connection_lost"] >= 2


def test_world_does_not_import_the_scenario_layer() -> None:
    """world sits below scenario: importing it (and evsim.testing) loads no scenario module."""
    import subprocess
    import sys

    code = (
        "import sys, evsim.world, evsim.world.actions, evsim.testing; "
        "print(sorted(m for m in sys.modules if m.startswith('evsim.scenario')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


async def test_a_started_node_keeps_no_task_status(autojump_clock: trio.testing.MockClock) -> None:
    """A kept task status holds the nursery of trio's start() (its scope, status and sets, ≈0.7 KiB) for as long
    as the node runs: a station node's run and its handle drop theirs once started."""

    async def node(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        del task_status
        await trio.sleep_forever()

    def statuses() -> int:
        gc.collect()
        return sum(type(o).__name__ == "_TaskStatus" for o in gc.get_objects())

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            before = statuses()
            handles = [NodeHandle(f"n{i}", f"n{i}.test", node) for i in range(3)]
            for handle in handles:
                await handle.start_in(nursery)
            assert statuses() == before
            nursery.cancel_scope.cancel()
