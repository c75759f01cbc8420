"""Station clocks in a world (in memory, virtual time): a dead clock refuses a valid CSMS certificate until NTS
sets it, SettingSystemTime is reported, clients fail over between NTS servers and refuse one from a root
outside their group, and a station following the CSMS's currentTime sets its clock from it."""

from __future__ import annotations

import datetime as dt

import trio
import trio.testing

from evsim.recorder import Event
from evsim.world import CertificateSpec, ClockSpec, Tls, TrustSpec, World, open_world

DEAD = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


def _kinds(world: World, node: str) -> list[str]:
    return [e.kind for e in world.recorder.events if e.node == node]


def _events(world: World, kind: str, node: str | None = None) -> list[Event]:
    return [e for e in world.recorder.events if e.kind == kind and (node is None or e.node == node)]


def _received(world: World, sid: str) -> list[str]:
    """The security event types the CSMS received from ``sid``."""
    return [e.data["type"] for e in _events(world, "security_event_received") if e.data["station"] == sid]


async def test_dead_clock_refuses_the_csms_until_nts_sets_it(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(3 * 3600):
        async with open_world(seed=5) as world:
            await world.start_csms("main", heartbeat_interval=600)
            await world.start_nts_server("time1")
            spec = ClockSpec(set_to=DEAD, nts=("time1",), nts_time_check="skip_until_clock_synced")
            # the NTS client polls only after a long wait: the station meets the CSMS with its dead clock first
            fleet = await world.start_stations(1, csms="main", sessions=0, clock=spec)
            node = fleet.stations[0]
            await node.station.wait_online()
            kinds = _kinds(world, node.name)
            assert kinds.index("clock_set") < kinds.index("handshake_failed") < kinds.index("clock_adjusted")
            failed = _events(world, "handshake_failed", node.name)[0]
            assert "not_yet_valid" in str(failed.data)
            step = _events(world, "clock_adjusted", node.name)[0]
            assert step.data["mode"] == "step" and step.data["source"] == "nts"
            assert abs(node.station.clock.offset()) < 1e-3
            await trio.sleep(60)  # queued security events go once online
            assert "SettingSystemTime" in _received(world, node.name)


async def test_enforced_bootstrap_never_syncs_a_dead_clock(autojump_clock: trio.testing.MockClock) -> None:
    """``nts_time_check = "enforce"``: the NTS server's certificate is not yet valid at the year 2000 either."""
    with trio.fail_after(3 * 3600):
        async with open_world(seed=5) as world:
            await world.start_csms("main")
            await world.start_nts_server("time1")
            spec = ClockSpec(set_to=DEAD, nts=("time1",))
            fleet = await world.start_stations(1, csms="main", sessions=0, clock=spec)
            await trio.sleep(1800)
            sid = fleet.ids[0]
            assert fleet.stations[0].station.session is None
            failed = _events(world, "nts_ke_failed", sid)
            assert failed and all("not_yet_valid" in e.data["reason"] for e in failed)
            assert not _events(world, "clock_adjusted", sid)


async def test_failover_to_the_next_server_and_a_foreign_root_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(3 * 3600):
        async with open_world(seed=7, roots={"rogue": "ec"}) as world:
            await world.start_csms("main")
            await world.start_nts_server("rogue-time", root="rogue")
            await world.start_nts_server("time1")
            await world.start_nts_server("time2")
            spec = ClockSpec(
                offset=-90.0, drift_ppm=40.0, nts=("rogue-time", "time1", "time2"), nts_poll=64.0
            )
            fleet = await world.start_stations(1, csms="main", sessions=0, clock=spec)
            sid = fleet.ids[0]
            await trio.sleep(300)
            refused = _events(world, "nts_ke_failed", sid)
            assert refused[0].data["source"] == "rogue-time" and "unknown_ca" in refused[0].data["reason"]
            synced = _events(world, "nts_synced", sid)
            assert synced[0].data["source"] == "time1"
            await world.stop("time1")
            await trio.sleep(600)
            moved = [e.data for e in _events(world, "nts_failover", sid)]
            assert {"source": "time1", "to": "time2", "reason": "no_response"} in moved
            assert _events(world, "nts_synced", sid)[-1].data["source"] == "time2"
            assert abs(fleet.stations[0].station.clock.offset()) < 0.05


async def test_station_follows_current_time_when_time_source_says_heartbeat(
    autojump_clock: trio.testing.MockClock,
) -> None:
    trust = TrustSpec(name="CsmsRoots", time_check="skip_until_clock_synced")
    with trio.fail_after(3600):
        async with open_world(seed=9) as world:
            await world.start_csms("main", heartbeat_interval=60)
            follows = ClockSpec(offset=-7200.0, time_source=("Heartbeat",))
            rtc = ClockSpec(offset=-7200.0)
            a = await world.start_stations(
                1, name="a", csms="main", sessions=0, clock=follows, tls=Tls(trust=trust)
            )
            b = await world.start_stations(
                1, name="b", csms="main", sessions=0, clock=rtc, tls=Tls(trust=trust)
            )
            await trio.sleep(300)
            assert abs(a.stations[0].station.clock.offset()) < 1e-3
            assert b.stations[0].station.clock.offset() == -7200.0
            step = _events(world, "clock_adjusted", a.ids[0])[0]
            assert step.data["source"] == "csms" and step.data["mode"] == "step"
            assert _received(world, a.ids[0]) == ["SettingSystemTime"]
            # without a time source its clock stays two hours behind: the CSMS certificate is not valid yet
            assert not _events(world, "clock_adjusted", b.ids[0])
            assert b.stations[0].station.session is None
            assert "not_yet_valid" in str(_events(world, "handshake_failed", b.ids[0])[0].data)


async def test_a_controller_with_a_dead_clock_refuses_its_upstream_until_nts_sets_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(3 * 3600):
        async with open_world(seed=11) as world:
            await world.start_csms("main")
            await world.start_nts_server("time1")
            spec = ClockSpec(
                set_to=DEAD, nts=("time1",), nts_time_check="skip_until_clock_synced", nts_poll=64.0
            )
            world.set_link("lc.evsim.test", "time1", latency=0.3)  # NTS answers after the first upstream try
            lc = await world.start_controller("lc", upstream=["main"], clock=spec)
            fleet = await world.start_stations(2, csms=lc, sessions=0)
            await trio.sleep(600)
            assert all(n.station.session is not None for n in fleet)
            attempts = [e for e in world.recorder.events if e.kind == "service_attempt"]
            assert not attempts[0].data["ok"] and "not_yet_valid" in attempts[0].data["reason"]
            assert attempts[0].t < _events(world, "clock_adjusted", "lc")[0].t < attempts[-1].t
            assert attempts[-1].data["ok"]
            assert abs(lc.controller.clock.utcnow() - world.clock.utcnow()).total_seconds() < 1e-3
            step = _events(world, "clock_adjusted", "lc")[0]
            assert step.data["source"] == "nts" and step.data["mode"] == "step"
            await world.step_clock("lc", -3600.0)
            assert _events(world, "clock_adjusted", "lc")[-1].data["source"] == "operator"
            await trio.sleep(120)  # the next poll steps it back
            assert abs(lc.controller.clock.utcnow() - world.clock.utcnow()).total_seconds() < 1e-3


async def test_a_clock_behind_accepts_an_expired_certificate(autojump_clock: trio.testing.MockClock) -> None:
    """The failure mode the other way round: the CSMS certificate expired an hour ago, a station whose clock
    is two hours behind still accepts it, one with a perfect clock refuses it."""
    with trio.fail_after(6 * 3600):
        async with open_world(seed=13) as world:
            await world.start_csms("main", tls=Tls(certificate=CertificateSpec(validity=3600.0)))
            await trio.sleep(2 * 3600)
            behind = await world.start_stations(
                1, name="behind", csms="main", sessions=0, clock=ClockSpec(offset=-7200.0)
            )
            right = await world.start_stations(1, name="right", csms="main", sessions=0)
            await trio.sleep(60)
            assert behind.stations[0].station.session is not None
            assert right.stations[0].station.session is None
            assert "expired" in str(_events(world, "handshake_failed", right.ids[0])[0].data)
