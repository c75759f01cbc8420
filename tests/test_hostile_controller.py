"""The fault catalogue against the Local Controller: its listener (every hostile client of tests/hostile.py)
and its upstream client (a hostile CSMS), each next to an honest sentinel station relayed through the same
controller.

For each fault: the controller survives (its run task has not raised), the sentinel is undisturbed (same
connection, heartbeats answered end to end, round trip in virtual time unchanged), memory stays bounded (open
streams back to where they were, station records bounded) and the controller records the reason once, naming
the station where it knows it and the attacker's address (``peer``).
Frames the controller only relays (OCPP-level abuse) are judged by the CSMS (tests/test_hostile_csms.py); here
they must come back answered and leave the controller untouched.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from evsim.backoff import RetryBackOff
from evsim.errors import ConfigError, TransportError
from evsim.link.service import Endpoint, Service
from evsim.net.virtual import LinkPolicy
from evsim.nodes.controller import ControllerConfig, LocalController
from evsim.recorder import Event
from evsim.tls import ClientTls, Identity, TlsProfile
from evsim.ws.connection import WebSocket
from tests import hostile
from tests.e2e_harness import Harness, harness
from tests.hostile import (
    BAD_HTTP,
    BOOT_TIMEOUT,
    HANDSHAKE,
    LOST,
    NONE,
    UPGRADE_TIMEOUT,
    Check,
    Expect,
    all_call_errors,
    answered_fragmented_boot,
    assert_recorded,
    closed_by_node,
    reads_bounded,
)
from tests.pki_fixtures import CSMS_HOST, TEST_NOW

LC_HOST = "lc.evsim.test"
EVIL_HOST = "evil-csms.evsim.test"
LATENCY = 0.005


@attrs.define
class Scene:
    h: Harness
    lc: LocalController
    node: hostile.Supervised
    target: hostile.Target
    sentinel: hostile.Sentinel
    baseline: float
    fake: hostile.HostileCsms | None = None


@asynccontextmanager
async def scene(script: hostile.Script | None = None, **config: Any) -> AsyncIterator[Scene]:
    """An honest CSMS, a supervised controller in front of it (or of a hostile CSMS running ``script`` for
    every identity but the sentinel's, which it relays to the honest CSMS) and a booted sentinel behind it.
    ``config``: more :class:`ControllerConfig` settings."""
    async with harness() as h:
        await h.start_csms()
        fake = None
        upstream_host = CSMS_HOST
        if script is not None:
            cert = h.pki.root.issue_server(EVIL_HOST, now=TEST_NOW)
            fake = hostile.HostileCsms(
                h.net,
                EVIL_HOST,
                443,
                Identity.from_cert_key(cert),
                h.clock,
                script,
                relay=frozenset({"SENTINEL"}),
                upstream=(CSMS_HOST, 443, ClientTls.build(TlsProfile(), h.pki.csms_trust())),
            )
            await h.nursery.start(fake.serve)
            upstream_host = EVIL_HOST
        h.net.set_link_policy("sentinel", LC_HOST, LinkPolicy(latency_s=LATENCY))
        server = h.pki.root.issue_server(LC_HOST, now=TEST_NOW)
        lc = LocalController(
            ControllerConfig(
                name="LC-1",
                host=LC_HOST,
                identity=Identity.from_cert_key(server),
                upstream=Service(
                    "csms",
                    (Endpoint("primary", f"wss://{upstream_host}/ocpp", trust=h.pki.csms_trust()),),
                    backoff=RetryBackOff(wait_minimum=5, random_range=2, repeat_times=3),
                ),
                **config,
            ),
            network=h.net,
            clock=h.clock,
            recorder=h.recorder,
        )
        node = hostile.Supervised("LC-1")
        await h.nursery.start(node.run, lc.run)
        target = hostile.Target(
            h.net, LC_HOST, 443, ClientTls.build(TlsProfile(), h.pki.csms_trust()), h.clock
        )
        sentinel = hostile.Sentinel(target)
        await h.nursery.start(sentinel.run)
        baseline = await sentinel.rtt()
        yield Scene(h, lc, node, target, sentinel, baseline, fake)


def assert_undisturbed(s: Scene, rtts: list[float]) -> None:
    assert s.node.alive, f"the controller's run task ended: {s.node.error!r}"
    assert s.sentinel.connected, f"the sentinel lost its connection: {s.sentinel.failure!r}"
    stats = s.lc.statistics().stations["SENTINEL"]
    assert stats.connected and stats.upstream_up and stats.connections == 1
    assert max(rtts) == pytest.approx(s.baseline, abs=1e-9), (s.baseline, rtts)
    assert s.h.csms.stations["SENTINEL"].connections == 1


def assert_bounded(s: Scene, open_before: int) -> None:
    assert len(s.lc.statistics().stations) <= 2
    assert s.h.net.statistics().open_streams == open_before


def case(fault: str, expect: Expect, check: Check | None = None) -> Any:
    return pytest.param(fault, expect, check, id=fault)


LINK_LOST = Expect("station_link_lost", station=True)
LISTENER_CASES: list[Any] = [
    case("reset_before_tls", Expect("handshake_failed", count=5)),
    case("reset_mid_client_hello", HANDSHAKE),
    case("reset_after_tls", LOST),
    case("reset_mid_http", LOST),
    case("reset_after_upgrade", LINK_LOST),
    case("reset_mid_frame", LINK_LOST),
    case("reset_after_boot", LINK_LOST),
    case("slowloris_tls", Expect("handshake_failed", "timeout"), closed_by_node),
    case("slowloris_http", UPGRADE_TIMEOUT, closed_by_node),
    case("slowloris_ws", BOOT_TIMEOUT, closed_by_node),
    case("idle_after_upgrade", BOOT_TIMEOUT, closed_by_node),
    case("garbage_on_tls_port", HANDSHAKE, closed_by_node),
    case("plain_http_on_tls_port", HANDSHAKE, closed_by_node),
    case("huge_header", BAD_HTTP, closed_by_node),
    case("many_headers", BAD_HTTP, closed_by_node),
    case("bad_request_line", BAD_HTTP, closed_by_node),
    case("not_websocket", BAD_HTTP, closed_by_node),
    case("ws_oversized", Expect("station_link_lost", "1009", station=True), closed_by_node),
    case("ws_fragment_flood", Expect("station_link_lost", "1009", station=True), closed_by_node),
    case("ws_interleaved_control", LINK_LOST, answered_fragmented_boot(False)),
    case("ws_interleaved_control_deflate", LINK_LOST, answered_fragmented_boot(True)),
    case("ws_deflate_bomb", Expect("station_link_lost", "1009", station=True), closed_by_node),
    case("ws_unmasked", Expect("station_link_lost", "1002", station=True), closed_by_node),
    case("ws_bad_opcode", Expect("station_link_lost", "1002", station=True), closed_by_node),
    case("ws_bad_utf8", Expect("station_link_lost", "1007", station=True), closed_by_node),
    case("ws_binary", LINK_LOST),
    case("ws_never_read", LINK_LOST, reads_bounded),
    case("ocpp_bad_json", NONE, all_call_errors),
    case("ocpp_deep_nesting_32k", NONE, all_call_errors),
    case("ocpp_deep_nesting_100k", Expect("station_link_lost", "1009", station=True)),
    case("ocpp_wrong_types", NONE, all_call_errors),
    case("ocpp_unknown_action", NONE, all_call_errors),
    case("ocpp_call_before_boot", NONE, all_call_errors),
    case("ocpp_duplicate_ids", NONE),
    case("ocpp_unknown_result", NONE),
    case("ocpp_out_of_range_ids", NONE, all_call_errors),
    case("ocpp_out_of_range_seqno", NONE, all_call_errors),
    case("ocpp_out_of_range_meter", NONE, all_call_errors),
    case("ocpp_connector_flood", NONE),
    case("ocpp_transaction_flood", NONE),
]
"""The listener faults and what the controller must record for each (the event also names the attacker's
address). OCPP-level abuse is relayed and judged by the CSMS."""


async def run_fault(
    s: Scene, fault: hostile.Fault, attack: hostile.Attack
) -> tuple[list[Event], list[float]]:
    return await hostile.run_fault(s.h.recorder, "LC-1", s.sentinel, fault, attack)


@pytest.mark.parametrize(("fault", "expect", "check"), LISTENER_CASES)
async def test_controller_listener_survives(
    autojump_clock: trio.testing.MockClock, fault: str, expect: Expect, check: Check | None
) -> None:
    async with scene() as s:
        open_before = s.h.net.statistics().open_streams
        attack = hostile.Attack(s.target)
        events, rtts = await run_fault(s, hostile.LISTENER_FAULTS[fault], attack)
        assert_undisturbed(s, rtts)
        if check is not None:
            problem = check(attack.notes)
            assert problem is None, problem
        assert_bounded(s, open_before)
        assert_recorded(events, expect, attack.station_id, peer=attack.source)


@pytest.mark.parametrize("name", list(hostile.BAD_IDENTITIES))
async def test_controller_refuses_hostile_identities(
    autojump_clock: trio.testing.MockClock, name: str
) -> None:
    async with scene() as s:
        attack = hostile.Attack(s.target)
        events, rtts = await run_fault(s, hostile.identity_fault(hostile.BAD_IDENTITIES[name]), attack)
        assert_undisturbed(s, rtts)
        assert attack.notes["reply"].startswith(b"HTTP/1.1 404"), attack.notes["reply"][:100]
        assert set(s.lc.statistics().stations) == {"SENTINEL"}
        rejected = [e for e in events if e.kind == "upgrade_rejected"]
        assert len(rejected) == 1, [(e.kind, e.data) for e in events]
        assert hostile.names_peer(rejected[0], attack.source), rejected[0].data
        assert all(ch.isprintable() for ch in str(rejected[0].data)), rejected[0].data


async def test_controller_boot_deadline(autojump_clock: trio.testing.MockClock) -> None:
    """A link whose BootNotification the CSMS has not accepted within the controller's own ``boot_timeout`` is
    closed by the controller (1008, its upstream link with it, one ``boot_timeout`` event with the station and
    the peer), whatever the CSMS's deadline; until then it counts as pending for its address, while a booted
    station does not."""
    async with scene(boot_timeout=60) as s:
        assert s.lc.acceptor.statistics().pending == 0  # the sentinel's boot was accepted
        start = len(s.h.recorder.events)
        attack = hostile.Attack(s.target)
        began = s.h.clock.elapsed()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(hostile.idle_after_upgrade, attack)
            await trio.sleep(30)
            assert s.lc.acceptor.statistics().pending == 1
            assert s.h.csms.stations["EVIL-1"].connected  # relayed, waiting for its boot
        assert s.h.clock.elapsed() - began < 120  # the CSMS's deadline (180 s) did not close it
        assert closed_by_node(attack.notes) is None
        frames = hostile.server_frames(attack.notes["reply"])
        assert frames and frames[-1][0] == hostile.CLOSE and frames[-1][1][:2] == (1008).to_bytes(2, "big")
        await trio.sleep(1)
        events = hostile.events_since(s.h.recorder, "LC-1", start)
        timeouts = [e for e in events if e.kind == "boot_timeout"]
        assert len(timeouts) == 1, [(e.kind, e.data) for e in events]
        assert timeouts[0].data["station"] == "EVIL-1" and timeouts[0].data["timeout"] == 60
        assert 60 <= timeouts[0].t - began < 61
        assert hostile.names_peer(timeouts[0], attack.source)
        assert "EVIL-1" not in s.h.csms.stations  # its upstream link was closed: the CSMS forgot it
        assert s.lc.acceptor.statistics().pending == 0
        rtt = await s.sentinel.rtt()
        assert_undisturbed(s, [rtt])


def test_controller_boot_timeout_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="boot_timeout"):
        ControllerConfig(boot_timeout=0, upstream=Service("csms", (Endpoint("p", "ws://csms/ocpp"),)))


# ---------------------------------------------------------------- a hostile CSMS upstream


async def _boot_then(ws: WebSocket, clock: Any, then: Any) -> None:
    await hostile.answer_boot(ws, clock, {"interval": 60, "status": "Accepted"})
    await then(ws)


def upstream_script(name: str, clock_ref: list[Any]) -> hostile.Script:
    """The hostile CSMS's behaviour towards the victim's relayed link, by name."""

    async def reset_after_boot(ws: WebSocket) -> None:
        await trio.sleep(1)
        await hostile.reset(ws._stream)

    async def garbage(ws: WebSocket) -> None:
        for text in ["not JSON", "[]", "[9, 9, 9]", json.dumps([3, "nobody", {}]), json.dumps([4, "x", 5])]:
            await ws.send_text(text)
        await hostile.answer_everything(ws, clock_ref[0])

    async def call_flood(ws: WebSocket) -> None:
        for i in range(500):
            await ws.send_text(
                hostile.call_frame(f"f{i}", "TriggerMessage", {"requestedMessage": "Heartbeat"})
            )
        await hostile.answer_everything(ws, clock_ref[0])

    async def huge(ws: WebSocket) -> None:
        await ws.send_text("[" * 70_000)
        await hostile.answer_everything(ws, clock_ref[0])

    async def deep(ws: WebSocket) -> None:
        await ws.send_text("[" * 30_000 + "]" * 30_000)
        await hostile.answer_everything(ws, clock_ref[0])

    async def never_answers(ws: WebSocket) -> None:
        while True:  # reads (so it sees the close) but answers nothing
            await ws.receive_text()

    async def close_at_once(ws: WebSocket) -> None:
        await ws.aclose(1011, "go away")

    after_boot = {
        "reset_after_boot": reset_after_boot,
        "garbage": garbage,
        "call_flood": call_flood,
        "huge_message": huge,
        "deep_nesting": deep,
    }

    async def script(ws: WebSocket, sid: str) -> None:
        with contextlib.suppress(TransportError):
            if name in after_boot:
                await _boot_then(ws, clock_ref[0], after_boot[name])
            elif name == "never_answers":
                await never_answers(ws)
            elif name == "close_before_boot":
                await close_at_once(ws)
            elif name == "boot_interval_negative":
                await hostile.answer_boot(ws, clock_ref[0], {"interval": -1, "status": "Pending"})
                await hostile.answer_everything(ws, clock_ref[0])

    return script


UPSTREAM_CASES = [
    pytest.param("reset_after_boot", id="reset_after_boot"),
    pytest.param("garbage", id="garbage"),
    pytest.param("call_flood", id="call_flood"),
    pytest.param("huge_message", id="huge_message"),
    pytest.param("deep_nesting", id="deep_nesting"),
    pytest.param("never_answers", id="never_answers"),
    pytest.param("close_before_boot", id="close_before_boot"),
    pytest.param("boot_interval_negative", id="boot_interval_negative"),
]


@pytest.mark.parametrize("name", UPSTREAM_CASES)
async def test_controller_upstream_survives_a_hostile_csms(
    autojump_clock: trio.testing.MockClock, name: str
) -> None:
    """A hostile CSMS on the victim's upstream link: the controller survives, the sentinel's relayed session
    (to the honest CSMS, through the same controller) is undisturbed, and the victim's link ends or carries on
    without leaking anything."""
    clock_ref: list[Any] = []
    async with scene(upstream_script(name, clock_ref)) as s:
        clock_ref.append(s.h.clock)
        open_before = s.h.net.statistics().open_streams

        async def victim(attack: hostile.Attack) -> None:
            v = hostile.Sentinel(s.target, "VICTIM", source="victim")
            with trio.move_on_after(300):
                s.h.nursery.start_soon(v.run)
                with contextlib.suppress(TransportError):
                    for _ in range(5):
                        await trio.sleep(30)
                        if v.connected:
                            await v.rtt()
            if v.ws is not None:
                await hostile.close_quietly(v.ws)

        attack = hostile.Attack(s.target, station_id="VICTIM")
        events, rtts = await run_fault(s, victim, attack)
        assert_undisturbed(s, rtts)
        assert_bounded(s, open_before)
        # the victim's pair ended, with a reason, once
        ends = [e for e in events if e.kind == "station_disconnected" and e.data.get("station") == "VICTIM"]
        assert len(ends) >= 1, [(e.kind, e.data) for e in events]
        assert s.fake is not None and not [e for e in s.fake.errors if not isinstance(e, TransportError)]
