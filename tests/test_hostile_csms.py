"""The fault catalogue against the CSMS: every hostile client of tests/hostile.py, one at a time, next to an
honest sentinel station.

For each fault: the CSMS survives (its serve task has not raised), the sentinel is undisturbed (same
connection, heartbeats answered, round trip in virtual time unchanged), memory stays bounded (open streams back
to where they were, per-station records bounded) and exactly one event names the reason and the attacker's
address (``peer``), and the station where the CSMS knows it (a flood: the per-connection budget of refusal
events). In-memory network, virtual time; loopback TCP only for what needs a real socket.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from evsim.errors import TransportError
from evsim.net.base import Network
from evsim.net.tcp import TcpNetwork
from evsim.net.virtual import LinkPolicy
from evsim.nodes.csms import Csms, CsmsConfig
from evsim.recorder import Event
from evsim.tls import ClientTls, ServerTls, TlsProfile
from tests import hostile
from tests.e2e_harness import PASSWORD, Harness, harness
from tests.hostile import (
    BAD_HTTP,
    BOOT_TIMEOUT,
    DISCONNECTED,
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
from tests.pki_fixtures import CSMS_HOST

LATENCY = 0.005  # one way, sentinel <-> CSMS: the sentinel's round trip is exactly 2 x this when undisturbed


@attrs.define
class Scene:
    h: Harness
    csms: Csms
    node: hostile.Supervised
    target: hostile.Target
    sentinel: hostile.Sentinel
    baseline: float


@asynccontextmanager
async def scene(*, net: Network | None = None, **config: object) -> AsyncIterator[Scene]:
    """A supervised CSMS with a booted sentinel beside it."""
    async with harness() as h:
        network = net or h.net
        if net is None:
            h.net.set_link_policy("sentinel", CSMS_HOST, LinkPolicy(latency_s=LATENCY))
        csms = Csms(
            CsmsConfig(
                host=CSMS_HOST,
                port=443 if net is None else 0,
                heartbeat_interval=60,
                default_password=PASSWORD,
                **config,  # type: ignore[arg-type]
            ),
            network=network,
            server_tls=ServerTls.build(TlsProfile(), h.pki.server_identity()),
            clock=h.clock,
            recorder=h.recorder,
        )
        node = hostile.Supervised("csms")
        address = await h.nursery.start(node.run, csms.run)
        target = hostile.Target(
            network, CSMS_HOST, address[1], ClientTls.build(TlsProfile(), h.pki.csms_trust()), h.clock
        )
        sentinel = hostile.Sentinel(target)
        await h.nursery.start(sentinel.run)
        baseline = await sentinel.rtt()
        yield Scene(h, csms, node, target, sentinel, baseline)


def case(fault: str, expect: Expect, check: Check | None = None) -> Any:
    return pytest.param(fault, expect, check, id=fault)


BAD_INPUT = Expect("bad_input", station=True)
REFUSED_VALUES = 10  # refusal events recorded per connection (then one bad_input_suppressed)
CASES: list[Any] = [
    case("reset_before_tls", Expect("handshake_failed", count=5)),
    case("reset_mid_client_hello", HANDSHAKE),
    case("reset_after_tls", LOST),
    case("reset_mid_http", LOST),
    case("reset_after_upgrade", DISCONNECTED),
    case("reset_mid_frame", DISCONNECTED),
    case("reset_after_boot", DISCONNECTED),
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
    case("ws_oversized", Expect("station_disconnected", "1009", station=True), closed_by_node),
    case("ws_fragment_flood", Expect("station_disconnected", "1009", station=True), closed_by_node),
    case("ws_interleaved_control", DISCONNECTED, answered_fragmented_boot(False)),
    case("ws_interleaved_control_deflate", DISCONNECTED, answered_fragmented_boot(True)),
    case("ws_deflate_bomb", Expect("station_disconnected", "1009", station=True), closed_by_node),
    case("ws_unmasked", Expect("station_disconnected", "1002", station=True), closed_by_node),
    case("ws_bad_opcode", Expect("station_disconnected", "1002", station=True), closed_by_node),
    case("ws_bad_utf8", Expect("station_disconnected", "1007", station=True), closed_by_node),
    case("ws_binary", DISCONNECTED),
    case("ws_never_read", DISCONNECTED, reads_bounded),
    case("ocpp_bad_json", Expect("bad_input", "RpcFrameworkError", station=True, count=3), all_call_errors),
    case("ocpp_deep_nesting_32k", BAD_INPUT, all_call_errors),
    case("ocpp_deep_nesting_100k", Expect("station_disconnected", "1009", station=True)),
    case("ocpp_wrong_types", Expect("bad_input", station=True, count=5), all_call_errors),
    case(
        "ocpp_unknown_action", Expect("bad_input", "NotImplemented", station=True, count=10), all_call_errors
    ),
    case("ocpp_call_before_boot", Expect("bad_input", "SecurityError", station=True), all_call_errors),
    case("ocpp_duplicate_ids", Expect("bad_input", "reused", station=True)),
    case("ocpp_unknown_result", Expect("bad_input", "matches no outstanding", station=True, count=2)),
    case("ocpp_out_of_range_ids", Expect("value_refused", station=True, count=3), all_call_errors),
    case("ocpp_out_of_range_seqno", Expect("value_refused", station=True, count=4), all_call_errors),
    case("ocpp_out_of_range_meter", Expect("value_refused", station=True, count=4), all_call_errors),
    case("ocpp_connector_flood", Expect("value_refused", station=True, count=REFUSED_VALUES)),
    case("ocpp_transaction_flood", NONE),
]
"""The listener faults and what the CSMS must record for each (the event also names the attacker's address)."""


async def run_fault(
    s: Scene, fault: hostile.Fault, attack: hostile.Attack
) -> tuple[list[Event], list[float]]:
    return await hostile.run_fault(s.h.recorder, "csms", s.sentinel, fault, attack)


def assert_undisturbed(s: Scene, rtts: list[float], *, exact: bool = True) -> None:
    assert s.node.alive, f"the CSMS's serve task ended: {s.node.error!r}"
    assert s.sentinel.connected, f"the sentinel lost its connection: {s.sentinel.failure!r}"
    rec = s.csms.stations["SENTINEL"]
    assert rec.connections == 1 and rec.connected and rec.accepted
    if exact:
        assert max(rtts) == pytest.approx(s.baseline, abs=1e-9), (s.baseline, rtts)


def assert_bounded(s: Scene, open_before: int) -> None:
    stats = s.csms.statistics()
    assert stats.stations_known <= 2
    assert s.h.net.statistics().open_streams == open_before
    for rec in s.csms.stations.values():
        assert len(rec.connectors) <= 64, f"{rec.station_id}: {len(rec.connectors)} connector records"
        assert len(rec.transactions) <= 256, f"{rec.station_id}: {len(rec.transactions)} transaction records"


@pytest.mark.parametrize(("fault", "expect", "check"), CASES)
async def test_csms_survives(
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


# ---------------------------------------------------------------- identity abuse


@pytest.mark.parametrize("name", list(hostile.BAD_IDENTITIES))
async def test_csms_refuses_hostile_identities(autojump_clock: trio.testing.MockClock, name: str) -> None:
    """An identity OCPP does not allow (identifierString, at most 48 characters) is refused with HTTP 404 and
    one upgrade_rejected event naming the attacker's address, escaped; no station record is made for it."""
    async with scene() as s:
        attack = hostile.Attack(s.target)
        events, rtts = await run_fault(s, hostile.identity_fault(hostile.BAD_IDENTITIES[name]), attack)
        assert_undisturbed(s, rtts)
        assert not attack.notes["upgraded"], attack.notes["reply"][:200]
        assert attack.notes["reply"].startswith(b"HTTP/1.1 404")
        assert set(s.csms.stations) == {"SENTINEL"}
        rejected = [e for e in events if e.kind == "upgrade_rejected"]
        assert len(rejected) == 1, [(e.kind, e.data) for e in events]
        assert hostile.names_peer(rejected[0], attack.source), rejected[0].data
        assert all(ch.isprintable() for ch in str(rejected[0].data)), rejected[0].data


async def test_second_connection_with_a_live_identity(autojump_clock: trio.testing.MockClock) -> None:
    """A newcomer with the sentinel's identity (right password) that never boots does not disturb it
    (``duplicate_identity = "replace_older"``: it would replace the sentinel only once its own boot is
    Accepted): the sentinel keeps its connection, its session and its heartbeats; the newcomer is closed after
    ``boot_timeout`` with one event naming the identity and the newcomer's address; nothing was replaced."""
    async with scene() as s:
        start = len(s.h.recorder.events)
        attack = hostile.Attack(s.target, station_id="SENTINEL")
        _, rtts = await run_fault(s, hostile.idle_after_upgrade, attack)
        assert s.node.alive
        assert s.sentinel.connected
        assert max(rtts) == pytest.approx(s.baseline, abs=1e-9)
        assert closed_by_node(attack.notes) is None
        rec = s.csms.stations["SENTINEL"]
        assert rec.connected and rec.accepted and rec.connections == 2
        assert rec.connection is not None and rec.connection.number == 1  # still the sentinel's own session
        events = hostile.events_since(s.h.recorder, "csms", start)
        timeouts = [e for e in events if e.kind == "boot_timeout"]
        assert len(timeouts) == 1, [(e.kind, e.data) for e in events]
        assert timeouts[0].data["station"] == "SENTINEL" and hostile.names_peer(timeouts[0], attack.source)
        assert not [e for e in events if e.kind in ("replaced_connection", "station_disconnected")]


# ---------------------------------------------------------------- loopback TCP: resets and fd exhaustion


@asynccontextmanager
async def tcp_scene() -> AsyncIterator[Scene]:
    async with scene(net=TcpNetwork(resolve={CSMS_HOST: "127.0.0.1"})) as s:
        yield s


@pytest.mark.loopback
async def test_tcp_reset_before_accept() -> None:
    """Connects reset before the CSMS looks at them (getpeername: ENOTCONN) must not end its accept loop; each
    is recorded once: ``accept_failed`` when it was gone before the accept, else ``handshake_failed`` with its
    address."""
    with trio.fail_after(30):
        async with tcp_scene() as s:
            start = len(s.h.recorder.events)
            attack = hostile.Attack(s.target, tcp=True)
            for _ in range(4):
                await hostile.reset_before_tls(attack)
            with contextlib.suppress(TransportError):
                for _ in range(3):
                    await s.sentinel.rtt()
            assert_undisturbed(s, [], exact=False)
            events = hostile.events_since(s.h.recorder, "csms", start)
            lost = [e for e in events if e.kind in ("accept_failed", "handshake_failed")]
            assert len(lost) == 20, [(e.kind, e.data) for e in events]
            for e in lost:
                assert e.kind == "accept_failed" or hostile.names_peer(e, "127.0.0.1"), e.data
            # and a new station still gets in
            second = hostile.Sentinel(s.target, "SECOND")
            await s.h.nursery.start(second.run)
            assert await second.rtt() < 5


@pytest.mark.loopback
async def test_tcp_file_descriptor_exhaustion() -> None:
    """Out of file descriptors (EMFILE on accept): the CSMS backs off and keeps serving, with one
    ``accept_paused`` event for the episode; once the hog lets go, new stations get in."""
    import gc
    import os
    import resource
    import socket as stdlib_socket

    with trio.fail_after(60):
        async with tcp_scene() as s:
            start = len(s.h.recorder.events)
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            gc.collect()  # nothing left for the collector to report while no descriptor is free
            in_use = len(os.listdir("/proc/self/fd"))
            hog: list[stdlib_socket.socket] = []
            resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 64, hard))
            try:
                for _ in range(200):
                    sock = stdlib_socket.socket()
                    hog.append(sock)
                    try:
                        sock.setblocking(False)
                        sock.connect_ex(("127.0.0.1", s.target.port))
                    except OSError:
                        break
            except OSError:
                pass  # this process is out of descriptors: the CSMS's accept sees EMFILE too
            finally:
                await trio.sleep(0.5)
                for sock in hog:
                    sock.close()
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            await trio.sleep(0.5)
            with contextlib.suppress(TransportError):
                await s.sentinel.rtt()
            assert_undisturbed(s, [], exact=False)
            second = hostile.Sentinel(s.target, "SECOND")
            await s.h.nursery.start(second.run)
            assert await second.rtt() < 5
            events = hostile.events_since(s.h.recorder, "csms", start)
            paused = [e for e in events if e.kind == "accept_paused"]
            assert len(paused) == 1, [(e.kind, e.data) for e in events]
            assert paused[0].data["errno"] == "EMFILE"
            assert s.csms.acceptor.statistics().pauses == 1
