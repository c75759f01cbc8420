"""A05 security profile upgrade in memory: a profile 2 station that renewed its client certificate moves to a
profile 3 endpoint of its CSMS; without a certificate it refuses; it never goes back below 3 (the station drops
its profile 2 slots and the CSMS refuses it there); a profile 3 endpoint that does not work leaves it on 2."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

import evsim
from evsim.nodes.csms_upgrade import upgrade_security_profile
from evsim.ocpp.netprofile import NetworkConnectionProfile
from evsim.scenario.loader import loads_scenario
from evsim.scenario.runner import run_scenario
from evsim.world import World
from evsim.world.nodes import CsmsNode, StationNode


async def _until(predicate: Any, step: float = 1.0) -> None:
    while not predicate():  # noqa: ASYNC110
        await trio.sleep(step)


def _holder(world: World, sid: str) -> str:
    """The CSMS endpoint the station is connected to (the two endpoints share one record store)."""
    profiles = world.stations[sid].station.network_profiles
    assert profiles.active_slot is not None
    url = profiles.slots[profiles.active_slot].profile.ocpp_csms_url
    return next(n for n, c in world.csms.items() if f"//{c.host}" in url)


def _events(world: World, kind: str, node: str | None = None) -> list[dict[str, Any]]:
    return [e.data for e in world.recorder.events if e.kind == kind and (node is None or e.node == node)]


async def _two_endpoints(world: World) -> tuple[CsmsNode, CsmsNode, StationNode]:
    main = await world.start_csms("main", security_profile=2, heartbeat_interval=60)
    sp3 = await world.start_csms("main-sp3", security_profile=3, heartbeat_interval=60, secondary_of=main)
    fleet = await world.start_stations(1, csms=main, sessions=0)
    node = fleet.stations[0]
    await node.station.wait_online()
    return main, sp3, node


async def _renew(world: World, main: CsmsNode, node: StationNode) -> None:
    await main.csms.certificates.trigger_message(node.name)
    await _until(lambda: _events(world, "client_certificate_switched", node.name))
    await _until(lambda: node.station.session is not None)


def _profile(world: World, sp3: CsmsNode) -> NetworkConnectionProfile:
    return NetworkConnectionProfile(world.url(sp3.name, 3), 3)


async def test_upgrade_to_profile_3_after_renewal(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(3600):
        async with evsim.open_world(seed=5) as world:
            main, sp3, node = await _two_endpoints(world)
            station = node.station
            await _renew(world, main, node)
            world.upgrade_security_profile(node.name, sp3.name)
            await _until(
                lambda: station.network_profiles.security_profile == 3 and station.session is not None
            )
            assert _holder(world, node.name) == "main-sp3"
            upgraded = _events(world, "security_profile_upgraded", node.name)
            assert upgraded == [{"previous": 2, "security_profile": 3, "removed_slots": [0]}]  # A05.FR.06
            assert set(station.network_profiles.slots) == {1}
            got = station.device_model.variables()
            assert got[("SecurityCtrlr", "SecurityProfile")] == "3"
            assert got[("OCPPCommCtrlr", "NetworkConfigurationPriority")] == "1"
            [csms_side] = _events(world, "security_profile_upgraded", "main-sp3")
            assert (csms_side["station"], csms_side["floor"]) == (node.name, 3)
            # no way back: the station refuses a profile 2 slot (B09.FR.04), the CSMS a profile 2 connection
            back = NetworkConnectionProfile(world.url("main", 2), 2).to_ocpp()
            answer = await sp3.csms.set_network_profile(node.name, 2, back)
            assert answer["statusInfo"]["reasonCode"] == "NoSecurityDowngrade"
            assert main.csms.stations[node.name].security_floor == 3


async def test_a_station_on_profile_3_is_refused_at_profile_2(autojump_clock: trio.testing.MockClock) -> None:
    """A05.FR.07: once upgraded, the profile 2 endpoint refuses the station (a station that still had a profile 2
    slot, e.g. one configured by hand, gets HTTP 401)."""
    with trio.fail_after(3600):
        async with evsim.open_world(seed=5) as world:
            main, _sp3, node = await _two_endpoints(world)
            await _renew(world, main, node)
            main.csms.stations[node.name].security_floor = 3
            world.reset_links(node.name, "main")
            await _until(lambda: _events(world, "upgrade_rejected", "main"))
            refused = _events(world, "upgrade_rejected", "main")[0]
            assert refused["status"] == 401 and "below the station's 3" in refused["reason"]


async def test_upgrade_refused_without_a_client_certificate(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(3600):
        async with evsim.open_world(seed=5) as world:
            main, sp3, node = await _two_endpoints(world)
            outcome = await upgrade_security_profile(main.csms, node.name, _profile(world, sp3))
            assert (outcome.status, outcome.step, outcome.reason) == (
                "Rejected",
                "SetVariables",
                "NoClientCertificate",
            )  # A05.FR.03
            station = node.station
            assert station.network_profiles.variables()["NetworkConfigurationPriority"] == "0"
            assert _events(world, "security_upgrade_refused", "main")[0]["reason"] == "NoClientCertificate"
            assert main.csms.stations[node.name].upgrade_to == 0
            await trio.sleep(600)
            assert _holder(world, node.name) == "main" and station.network_profiles.security_profile == 2


async def test_failed_upgrade_falls_back_to_profile_2(autojump_clock: trio.testing.MockClock) -> None:
    """The profile 3 endpoint is down: the station tries it, goes back to its profile 2 slot, keeps it, and the
    CSMS does not raise the floor."""
    with trio.fail_after(3600):
        async with evsim.open_world(seed=5) as world:
            main, sp3, node = await _two_endpoints(world)
            station = node.station
            await _renew(world, main, node)
            await world.stop(sp3.name)
            outcome = await upgrade_security_profile(main.csms, node.name, _profile(world, sp3))
            assert outcome.status == "Sent"
            await _until(lambda: len(station.network_profiles.log) >= 4 and station.session is not None)
            assert _holder(world, node.name) == "main"
            assert station.network_profiles.security_profile == 2
            assert set(station.network_profiles.slots) == {0, 1}
            assert any(a.endpoint == "slot1" and not a.ok for a in station.network_profiles.log)
            assert main.csms.stations[node.name].security_floor == 0
            assert _events(world, "security_profile_upgraded") == []


UPGRADE = """
[simulation]
seed = 2
duration = "40m"

[csms.main]
security_profile = 2
heartbeat_interval = "10m"

[csms.main3]
security_profile = 3
secondary_of = "main"
heartbeat_interval = "10m"

[stations.renewed]
count = 3
csms = "main"
security_profile = 2
sessions = 0

[stations.bare]
count = 2
csms = "main"
security_profile = 2
sessions = 0

[[timeline]]
at = "2m"
action = "trigger_renewal"
target = "renewed"
spread = "1m"

[[timeline]]
at = "10m"
action = "upgrade_security_profile"
target = "main"
to = "main3"
spread = "2m"
"""


def test_scenario_upgrades_the_stations_that_hold_a_certificate() -> None:
    sc = loads_scenario(UPGRADE)
    result = run_scenario(sc)
    assert result.ok, result.error
    events = list(result.recorder.events)
    upgraded = sorted(e.node for e in events if e.kind == "security_profile_upgraded" and e.node != "main3")
    assert upgraded == ["renewed-0001", "renewed-0002", "renewed-0003"]
    refused = sorted(
        (e.data["station"], e.data["reason"]) for e in events if e.kind == "security_upgrade_refused"
    )
    assert refused == [("bare-0001", "NoClientCertificate"), ("bare-0002", "NoClientCertificate")]
