"""Hostile peers that send and never read: reading waits for the bounded send queue, the peer is dropped
after the send timeout, and everyone else keeps being served.

Each received frame makes output for the same peer (a CALLRESULT/CALLERROR per CALL or bad frame, a pong per
ping), so a peer that never reads would make a node queue without limit. Measured with statistics (queued
bytes, frames read, bytes produced), never with time or RSS; in virtual time (``autojump_clock``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import pytest
import trio
import trio.testing

from evsim.errors import PeerNotReading, TransportError
from evsim.net import VirtualNetwork, memory_pipe_pair
from evsim.ocpp.rpc import RpcConnection
from evsim.ocpp.session import DEFAULT_MAX_SEND_QUEUE, DEFAULT_SEND_TIMEOUT, OcppSession
from evsim.tls import ClientTls, TlsProfile, tls_connect
from evsim.ws import Accept, UpgradeRequest, WebSocket, ws_client, ws_server
from evsim.ws.auth import basic_auth_header
from evsim.ws.paths import station_path
from tests.e2e_harness import PASSWORD, Harness, harness
from tests.pki_fixtures import CSMS_HOST
from tests.test_controller import LC_HOST, start_controller
from tests.test_ws_connection import frame, upgrade_request

PIPE = 65536  # the virtual network's bytes per direction of a connection
SLACK = 32768  # WebSocket/TLS framing of what the pipe holds, and the answers to the last message read


async def _client(h: Harness, host: str, station_id: str) -> WebSocket:
    """A station's WebSocket through TLS with the harness password (the hostile peer drives it by hand)."""
    stream: trio.abc.Stream = await h.net.connect(host, 443, source=station_id)
    stream = await tls_connect(
        stream, ClientTls.build(TlsProfile(), h.pki.csms_trust()), host, verify_time=h.clock.utcnow
    )
    return await ws_client(
        stream,
        host=host,
        path=station_path("/ocpp", station_id),
        subprotocols=["ocpp2.0.1"],
        headers=[basic_auth_header(station_id, PASSWORD)],
        compression=False,  # so what the pipes hold is about what was produced
    )


class Flood:
    """Send texts as fast as the peer takes them; never read. Counts what was sent."""

    def __init__(self, ws: WebSocket, texts: list[str]) -> None:
        self.ws = ws
        self.texts = texts
        self.sent = 0
        self.ended = trio.Event()

    async def run(self) -> None:
        try:
            with suppress(TransportError):
                for text in self.texts:
                    await self.ws.send_text(text)
                    self.sent += 1
        finally:
            self.ended.set()

    async def wait_stuck(self) -> None:
        """Until the flood is done or made no progress for a (virtual) second."""
        while not self.ended.is_set():
            before = self.sent
            await trio.sleep(1)
            if self.sent == before:
                return


def _bad_frames(n: int) -> list[str]:
    """Small frames that each get a larger CALLERROR: unknown actions, unparsable text, bad payloads."""
    kinds = ['[2,"{i}","NoSuchAction",{{}}]', "[2,{i}", '[2,"{i}","Heartbeat",{{"x":1}}]']
    return [kinds[i % 3].format(i=i) for i in range(n)]


async def _wait_for(predicate: Callable[[], bool]) -> None:
    # polling in virtual time (costs nothing real): no one event to wait on across the nodes
    while not predicate():  # noqa: ASYNC110
        await trio.sleep(1)


async def _wait_event(h: Harness, kind: str, station: str) -> list[dict[str, Any]]:
    def found() -> list[dict[str, Any]]:
        return [e.data for e in h.events(kind) if e.data.get("station") == station]

    await _wait_for(lambda: bool(found()))
    return found()


@pytest.mark.parametrize("calls", [False, True], ids=["bad-frames", "valid-calls"])
async def test_csms_stops_reading_a_station_that_never_reads(
    autojump_clock: trio.testing.MockClock, calls: bool
) -> None:
    """Many small bad frames (or valid CALLs) from a client that never reads: the CSMS stops reading it once
    its send queue is full, a sentinel station is served meanwhile, and after the send timeout the client is
    dropped with one ``station_disconnected`` event (``peer_not_reading``)."""
    n = 20000
    texts = [f'[2,"{i}","Heartbeat",{{}}]' for i in range(n)] if calls else _bad_frames(n)
    async with harness() as h:
        csms = await h.start_csms()
        good = h.start_station("CS-GOOD", sessions=0)
        with trio.fail_after(3600):
            await good.wait_online()
            evil = await _client(h, CSMS_HOST, "CS-EVIL")
            if calls:  # a booted station, so its Heartbeats are answered with CALLRESULTs
                await evil.send_text(json.dumps([2, "boot", "BootNotification", _BOOT]))
                assert json.loads(await evil.receive_text())[2]["status"] == "Accepted"
            flood = Flood(evil, texts)
            h.nursery.start_soon(flood.run)
            await flood.wait_stuck()
            session = csms.stations["CS-EVIL"].session
            assert session is not None
            stats = session.statistics()
            # everything produced for the client beyond what its pipe holds waits in the CSMS: bounded
            assert stats.rpc.bytes_out < DEFAULT_MAX_SEND_QUEUE + PIPE + SLACK
            assert flood.sent < n  # the CSMS stopped reading
            assert stats.reads_paused >= 1
            assert stats.send_queue_bytes <= DEFAULT_MAX_SEND_QUEUE + SLACK
            assert stats.send_queue_peak <= DEFAULT_MAX_SEND_QUEUE + SLACK

            # the sentinel is served at once meanwhile (virtual time: no time passes)
            start = trio.current_time()
            answer = await csms.call("CS-GOOD", "TriggerMessage", {"requestedMessage": "Heartbeat"})
            assert answer == {"status": "Accepted"}
            assert trio.current_time() - start < 1

            # the client that never reads is dropped after the send timeout, with one event
            dropped = await _wait_event(h, "station_disconnected", "CS-EVIL")
            assert trio.current_time() - start <= 2 * DEFAULT_SEND_TIMEOUT  # found within two looks
            await flood.ended.wait()
        assert [d["reason"] for d in dropped] == ["peer_not_reading"]
        assert not [e for e in h.events("station_disconnected") if e.data["station"] == "CS-GOOD"]
        assert good.statistics().connected


_BOOT = {"reason": "PowerUp", "chargingStation": {"model": "M", "vendorName": "V"}}


# -- a session alone, over the in-memory network ---------------------------------------------------------------


async def _heartbeat_handler(action: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {"currentTime": "2025-01-01T00:00:00.000Z"}


def _accept_ocpp(request: UpgradeRequest) -> Accept:
    return Accept("ocpp2.0.1")


async def _server_session(
    net: VirtualNetwork, nursery: trio.Nursery, port: int, *, raw: bool, **kwargs: Any
) -> tuple[OcppSession, trio.abc.Stream, WebSocket | None]:
    """A connection to a server WebSocket running an OcppSession; the client is our WebSocket client, or
    (``raw``) only the client's stream after a hand-written upgrade request (frames by hand, never read)."""
    listener = await net.listen("csms", port)
    client = await net.connect("csms", port, source=f"client-{port}")
    server_stream = await listener.accept()
    got: list[WebSocket | None] = []
    client_ws: WebSocket | None = None
    async with trio.open_nursery() as handshake:

        async def serve() -> None:
            got.append(await ws_server(server_stream, _accept_ocpp, compression=False))

        handshake.start_soon(serve)
        if raw:
            await client.send_all(upgrade_request())
        else:
            client_ws = await ws_client(
                client, host="csms", path="/ocpp/OK", subprotocols=["ocpp2.0.1"], compression=False
            )
    server_ws = got[0]
    assert server_ws is not None
    session = OcppSession(server_ws, RpcConnection(), _heartbeat_handler, **kwargs)
    nursery.start_soon(_run_quietly, session)
    return session, client, client_ws


async def _run_quietly(session: OcppSession) -> None:
    with suppress(TransportError):
        await session.run()


async def test_session_queue_stays_under_its_bound_and_a_sentinel_session_keeps_working(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A hand-written client sends many valid CALLs and never reads: the session's queue stays under
    ``max_send_queue`` (plus one answer); another session of the same process keeps its round trips; the
    writer that makes no progress for ``send_timeout`` ends the session with PeerNotReading."""
    bound = 8192
    net = VirtualNetwork()
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            evil_session, raw, _ = await _server_session(
                net, nursery, 1, raw=True, max_send_queue=bound, send_timeout=20
            )
            sentinel, _, honest_ws = await _server_session(net, nursery, 2, raw=False)
            assert honest_ws is not None
            wire = b"".join(frame(0x1, f'[2,"{i}","Heartbeat",{{}}]'.encode()) for i in range(20000))

            async def flood() -> None:
                with suppress(TransportError):
                    await raw.send_all(wire)

            nursery.start_soon(flood)
            await trio.testing.wait_all_tasks_blocked()
            stats = evil_session.statistics()
            assert stats.reads_paused >= 1
            assert stats.send_queue_peak <= bound + 100
            assert stats.rpc.bytes_out < bound + PIPE + SLACK  # old code: ~1.3 MB of CALLRESULTs
            assert stats.rpc.frames_in < 20000

            for i in range(3):  # the sentinel session is served while the other one is stuck
                start = trio.current_time()
                await honest_ws.send_text(f'[2,"ok{i}","Heartbeat",{{}}]')
                assert json.loads(await honest_ws.receive_text())[:2] == [3, f"ok{i}"]
                assert trio.current_time() == start

            with trio.fail_after(40):  # the send timeout ends the session (found within two looks)
                await _wait_for(lambda: evil_session.statistics().closed)
            assert isinstance(evil_session.close_reason, PeerNotReading)
            assert "read nothing for 20 s" in str(evil_session.close_reason)
            assert not sentinel.statistics().closed
            nursery.cancel_scope.cancel()


# -- the WebSocket's own answers: pongs --------------------------------------------------------------------


async def _ws_server_pair(**server_kwargs: Any) -> tuple[trio.abc.Stream, WebSocket]:
    a, b = memory_pipe_pair()
    result: list[WebSocket | None] = []

    def decide(request: UpgradeRequest) -> Accept:
        return Accept("ocpp2.0.1")

    async def serve() -> None:
        result.append(await ws_server(b, decide, compression=False, **server_kwargs))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        await a.send_all(upgrade_request())
        data = b""
        while b"\r\n\r\n" not in data:
            data += await a.receive_some()
    ws = result[0]
    assert ws is not None
    return a, ws


async def test_ping_flood_behind_a_blocked_writer_queues_one_pong(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """While a send is blocked (the peer does not read), pings are still read, but only the newest pong
    waits (RFC 6455 §5.5.3); it goes out, before anything queued behind it, once the peer reads."""
    raw, ws = await _ws_server_pair()
    pings = 5000
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:

            async def blocked_sender() -> None:
                await ws.send_text("x" * (4 * PIPE))  # larger than the pipe: blocks, the client never reads

            async def reader() -> None:
                with suppress(TransportError):
                    await ws.receive_text()

            nursery.start_soon(blocked_sender)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(reader)
            await raw.send_all(b"".join(frame(0x9, f"p{i}".encode()) for i in range(pings)))
            await trio.testing.wait_all_tasks_blocked()
            stats = ws.statistics()
            assert stats.pings_received == pings
            assert stats.send_buffered <= 2 + 125  # one pong; old code: a pong per ping
            assert stats.pongs_skipped == pings - 1

            # the client reads: the big message, then the newest pong
            newest = f"p{pings - 1}".encode()
            got = b""
            while len(got) < 10 + 4 * PIPE + 2 + len(newest):
                got += await raw.receive_some()
            assert got[10 + 4 * PIPE :] == bytes([0x8A, len(newest)]) + newest
            nursery.cancel_scope.cancel()


async def test_ping_flood_from_a_peer_that_never_reads_is_dropped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The reader answers pings itself and waits for its pongs to leave (back-pressure: it stops reading);
    when they do not leave within ``send_timeout`` the peer is dropped and the reader gets PeerNotReading."""
    raw, ws = await _ws_server_pair(send_timeout=15)
    assert ws.send_timeout == 15
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:

            async def flood() -> None:
                with suppress(TransportError):
                    while True:
                        await raw.send_all(b"".join(frame(0x9, b"p" * 125) for _ in range(100)))

            nursery.start_soon(flood)
            start = trio.current_time()

            async def read_forever() -> None:
                while True:
                    await ws.receive_text()

            with pytest.raises(PeerNotReading, match="read nothing for 15 s"):
                await read_forever()
            assert trio.current_time() - start == pytest.approx(15, abs=1)
            # reading stopped once the pongs filled the pipe: bounded by the pipe, not by the flood
            assert ws.statistics().wire_bytes_received < 4 * PIPE
            assert ws.closed
            with pytest.raises(PeerNotReading):
                await ws.send_text("too late")
            nursery.cancel_scope.cancel()


# -- the Local Controller's relay ------------------------------------------------------------------------------


async def test_controller_relay_holds_bounded_data_for_a_station_that_never_reads(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A station behind the controller sends many CALLs and never reads: the CSMS's answers back up through
    the relay, the controller stops reading the station (never buffering without limit), another station
    behind the same controller keeps working, and the silent station is dropped after the send timeout."""
    n = 20000
    async with harness() as h:
        csms = await h.start_csms()
        lc = await start_controller(h)
        good = h.start_station("ST-GOOD", host=LC_HOST, sessions=0)
        with trio.fail_after(3600):
            await good.wait_online()
            evil = await _client(h, LC_HOST, "ST-EVIL")
            await evil.send_text(json.dumps([2, "boot", "BootNotification", _BOOT]))
            assert json.loads(await evil.receive_text())[2]["status"] == "Accepted"
            flood = Flood(evil, [f'[2,"{i}","Heartbeat",{{}}]' for i in range(n)])
            h.nursery.start_soon(flood.run)
            await flood.wait_stuck()
            assert flood.sent < n  # old code: the controller relays all of them and the CSMS answers all
            relay = lc.statistics().stations["ST-EVIL"].relay
            assert relay is not None
            # what the controller read from the station is bounded by what the station could not read of the
            # answers, the CSMS's queue for the controller's link, and the pipes in between
            session = csms.stations["ST-EVIL"].session
            assert session is not None
            assert session.statistics().send_queue_bytes <= DEFAULT_MAX_SEND_QUEUE + SLACK
            assert session.statistics().rpc.bytes_out < DEFAULT_MAX_SEND_QUEUE + 3 * PIPE + SLACK

            start = trio.current_time()
            answer = await csms.call("ST-GOOD", "TriggerMessage", {"requestedMessage": "Heartbeat"})
            assert answer == {"status": "Accepted"}
            assert trio.current_time() - start < 1

            lost = await _wait_event(h, "station_link_lost", "ST-EVIL")
            assert trio.current_time() - start <= 2 * DEFAULT_SEND_TIMEOUT + 5
            await flood.ended.wait()
        assert [d["reason"] for d in lost] == ["peer_not_reading"]
        assert not [e for e in h.events("station_link_lost") if e.data["station"] == "ST-GOOD"]
        assert good.statistics().connected


async def test_controller_reads_a_bounded_number_of_frames_ahead_of_its_first_upstream_link(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """While the controller's first CSMS link is being connected (here: no CSMS, so attempts and back-off),
    it reads at most ``max_queue`` station frames ahead, then stops reading."""
    async with harness() as h:
        await start_controller(h, max_queue=4)
        with trio.fail_after(60):
            evil = await _client(h, LC_HOST, "ST-EVIL")
            flood = Flood(evil, [f'[2,"{i}","Heartbeat",{{"pad":"{"x" * 4000}"}}]' for i in range(200)])
            h.nursery.start_soon(flood.run)
            await flood.wait_stuck()
        # 4 frames read ahead, the rest of what was sent waits in the pipe (and TLS records): old code read all
        assert flood.sent * 4000 < 4 * 4100 + PIPE + SLACK
