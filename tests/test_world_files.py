"""File servers, file services, firmware rollouts and log collection in a world (in memory, virtual time),
and link bandwidth showing in an HTTPS download's timing."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

import evsim
from evsim.errors import ConfigError
from evsim.recorder import Event
from evsim.world import FileRoute, FileSettings, World
from evsim.world.actions import Link

SIZE = 200_000
FAST = FileSettings(retries=1, retry_interval=30.0, install=10.0)


def _kinds(events: list[Event], kind: str, node: str | None = None) -> list[Event]:
    return [e for e in events if e.kind == kind and (node is None or e.node == node)]


async def _until(predicate: Any, step: float = 1.0) -> None:
    """Wait (virtual time) until ``predicate()``: the nodes expose no event for each condition."""
    while not predicate():  # noqa: ASYNC110
        await trio.sleep(step)


def _final(world: World, sid: str) -> str:
    statuses = [e.data["status"] for e in _kinds(list(world.recorder.events), "firmware_status", sid)]
    return statuses[-1] if statuses else ""


async def test_a_rollout_fails_over_from_a_dead_mirror_and_a_tampered_image_changes_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(7200):
        async with evsim.open_world(seed=3) as world:
            world.release("2.0.0", SIZE)
            main = await world.start_csms("main", heartbeat_interval=600)
            await world.start_file_server("mirror-a", firmware=["2.0.0"])
            await world.start_file_server("mirror-b", tampered=["2.0.0"])
            await world.start_file_server("mirror-c", firmware=["2.0.0"])
            world.add_file_service(
                "fw", [FileRoute(server="mirror-a"), FileRoute(server="mirror-c", priority=1)]
            )
            world.add_file_service("fw-b", [FileRoute(server="mirror-b")])
            north = await world.start_stations(
                6, csms=main, name="north", sessions=0, files=["fw"], file_settings=FAST
            )
            south = await world.start_stations(
                3, csms=main, name="south", sessions=0, files=["fw-b"], file_settings=FAST
            )
            for node in [*north, *south]:
                await node.station.wait_online()
            world.set_link(
                "north", "mirror-a", bytes_per_s=20_000.0
            )  # 10 s per image: the stop hits downloads
            world.update_firmware("north", "2.0.0", service="fw", spread=20)
            world.update_firmware("south", "2.0.0", service="fw-b", spread=20)
            await trio.sleep(15)
            await world.stop("mirror-a")
            everyone = [*north.ids, *south.ids]
            await _until(
                lambda: all(_final(world, sid) in ("Installed", "InvalidSignature") for sid in everyone)
            )
            await trio.sleep(60)
            events = list(world.recorder.events)
            for node in north:
                assert (_final(world, node.name), node.station.firmware.version) == ("Installed", "2.0.0")
                assert node.station.session is not None  # rebooted and back online: not bricked
            for node in south:
                assert (_final(world, node.name), node.station.firmware.version) == (
                    "InvalidSignature",
                    "0.1.0",
                )
                assert node.station.session is not None
            served = {e.data["endpoint"] for e in _kinds(events, "transfer_done") if e.node in north.ids}
            assert served == {"mirror-a", "mirror-c"}  # some finished before the stop, the rest failed over
            answers = _kinds(events, "file_request", "main")
            assert len(answers) == 9 and {e.data["status"] for e in answers} == {"Accepted"}
            boots = [e.data["reason"] for e in _kinds(events, "booted", "main")]
            assert boots.count("FirmwareUpdate") == 6


async def test_bandwidth_sets_the_download_time_and_a_link_action_changes_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rate = 25_000.0  # bytes/s: SIZE takes 8 s
    with trio.fail_after(3600):
        async with evsim.open_world(seed=5) as world:
            main = await world.start_csms("main")
            world.release("2.0.0", SIZE)
            await world.start_file_server("mirror", firmware=["2.0.0"])
            world.add_file_service("fw", [FileRoute(server="mirror")])
            fleet = await world.start_stations(2, csms=main, sessions=0, files=["fw"], file_settings=FAST)
            for node in fleet:
                await node.station.wait_online()
            first, second = fleet.ids
            world.set_link(first, "mirror", bytes_per_s=rate)
            world.update_firmware(first, "2.0.0", service="fw")
            await _until(lambda: _final(world, first) == "Installed")
            # the second station's link changes 4 s into its download: 4 s at `rate`, the rest four times faster
            await Link(between=(second, "mirror"), bandwidth=rate * 8).apply(world)
            world.update_firmware(second, "2.0.0", service="fw")
            await _until(lambda: _final(world, second) == "Downloading")
            await trio.sleep(4)
            await Link(between=(second, "mirror"), bandwidth=rate * 32).apply(world)
            await _until(lambda: _final(world, second) == "Installed")
            events = list(world.recorder.events)

            def download_time(sid: str) -> float:
                by = {e.data["status"]: e.t for e in _kinds(events, "firmware_status", sid)}
                return by["Downloaded"] - by["Downloading"]

            # N bytes at B bytes/s take N/B, plus the TLS and HTTP framing (a handshake, record headers, tags)
            assert SIZE / rate <= download_time(first) <= SIZE / rate * 1.05
            # what the pipe had taken at the old rate (at most its 64 KiB buffer) keeps its time
            changed = 4 + (SIZE - 4 * rate) / (4 * rate)
            assert changed <= download_time(second) <= changed + 65536 / rate + 0.5
            assert download_time(second) < download_time(first) - 0.3
            assert world.memory is not None
            assert world.memory.link_policy(second, "mirror.evsim.test").bytes_per_s == rate * 4


async def test_log_collection_uploads_every_station_log_to_the_log_server(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(3600):
        async with evsim.open_world(seed=6) as world:
            main = await world.start_csms("main")
            logs = await world.start_file_server("logs", accept_uploads=True)
            world.add_file_service("logs", [FileRoute(server="logs")])
            fleet = await world.start_stations(4, csms=main, sessions=0, files=["logs"], file_settings=FAST)
            for node in fleet:
                await node.station.wait_online()
            world.get_log("fleet", service="logs", spread=30)
            await _until(lambda: len(_kinds(list(world.recorder.events), "log_status_received", "main")) >= 8)
            events = list(world.recorder.events)
            assert (
                sorted(e.data["status"] for e in _kinds(events, "log_status_received", "main"))
                == ["Uploaded"] * 4 + ["Uploading"] * 4
            )
            assert sorted(u.path for u in logs.server.uploads) == [f"/logs/{sid}" for sid in fleet.ids]


async def test_file_services_name_known_servers(autojump_clock: trio.testing.MockClock) -> None:
    async with evsim.open_world(seed=1) as world:
        main = await world.start_csms("main")
        with pytest.raises(ConfigError, match="at least one"):
            world.add_file_service("fw", [])
        world.add_file_service("fw", [FileRoute(server="nowhere")])
        with pytest.raises(ConfigError, match="no file service"):
            await world.start_stations(1, csms=main, files=["other"])
