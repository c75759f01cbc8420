"""Idle links give their state back: permessage-deflate's zlib objects (primed with the shared history when
re-created), the TLS stream's memory BIOs, and the OCPP session's idle watch that calls both.

Sans-IO first (the deflate extension on its own, against zlib and wsproto's inflater), then in memory (a TLS
pair, an OCPP session over a scripted transport, WebSockets over TLS).
"""

from __future__ import annotations

import random
import zlib
from typing import cast

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameProtocol, Opcode

from evsim.errors import CallTimeout
from evsim.ocpp.rpc import RpcConnection
from evsim.ocpp.session import OcppSession
from evsim.tls import ClientTls, ServerTls, TlsProfile
from evsim.tls.stream import TlsStream
from evsim.ws.deflate import WINDOW_BITS, BoundedDeflate
from tests.pki_fixtures import make_test_pki, tls_pair

LIMIT = 65536
PKI = make_test_pki()


def _pair() -> tuple[BoundedDeflate, BoundedDeflate]:
    server = BoundedDeflate(LIMIT)
    server.accept(f"permessage-deflate; client_max_window_bits={WINDOW_BITS}")
    client = BoundedDeflate(LIMIT)
    client.finalize(f"permessage-deflate; server_max_window_bits={WINDOW_BITS}")
    return client, server


_MESSAGES = st.lists(
    st.tuples(
        st.sampled_from(
            [
                b'[2,"1","Heartbeat",{}]',
                b'[3,"1",{"currentTime":"2030-06-01T12:00:00Z"}]',
                b'[2,"7","MeterValues",{"evseId":1,"meterValue":[{"timestamp":"2030-06-01T12:00:00Z"}]}]',
            ]
        ),
        st.binary(max_size=3000),
        st.booleans(),  # release before this message
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(messages=_MESSAGES)
def test_released_state_is_rebuilt_from_the_shared_history(messages: list[tuple[bytes, bytes, bool]]) -> None:
    client, server = _pair()
    for template, noise, release in messages:
        if release:
            client.release()
            server.release()
        data = template + noise
        wire = client.compress_message(data, client=True)
        assert server.inflate_message(wire, client=False) == data
        answer = noise + template
        assert client.inflate_message(server.compress_message(answer, client=False), client=True) == answer


def test_release_frees_both_objects_and_keeps_the_ratio() -> None:
    client, server = _pair()
    message = b'[2,"1","Heartbeat",{}]'
    client.inflate_message(server.compress_message(message, client=False), client=True)
    first = server.compress_message(message, client=False)  # refers back to the first message
    client.inflate_message(first, client=True)
    assert client.release() == 1  # its decompressor (it compressed nothing yet)
    assert server.release() == 1  # its compressor
    assert client.release() == server.release() == 0
    after = server.compress_message(message, client=False)
    assert len(after) <= len(first) + 1  # primed with the history: still a back-reference, not a literal copy
    assert client.inflate_message(after, client=True) == message


def test_a_fresh_inflater_without_the_history_could_not_read_the_primed_output() -> None:
    """The history matters: a decompressor made without it fails (or misreads) what the primed compressor sends,
    so the test above would catch a release that forgot it."""
    client, server = _pair()
    message = b'[2,"1","Heartbeat",{"some":"payload that repeats"}]'
    client.inflate_message(server.compress_message(message, client=False), client=True)
    server.release()
    wire = server.compress_message(message, client=False)
    bare = zlib.decompressobj(-WINDOW_BITS)
    try:
        out = bare.decompress(wire + b"\x00\x00\xff\xff")
    except zlib.error:
        return
    assert out != message


def test_a_message_inflated_by_wsproto_keeps_the_inflater() -> None:
    """A fragmented message goes through wsproto's frame-by-frame path, whose plaintext is not recorded: that
    direction's state is then never released (the next message may refer to it)."""
    client, server = _pair()
    sender = FrameProtocol(client=False, extensions=[server])
    receiver = FrameProtocol(client=True, extensions=[client])
    data = sender.send_data(b"x" * 300, fin=False) + sender.send_data(b"y" * 300, fin=True)
    receiver.receive_bytes(bytes(data))
    payload = b"".join(cast(bytes, f.payload) for f in receiver.received_frames() if f.opcode != Opcode.CLOSE)
    assert payload == b"x" * 300 + b"y" * 300
    assert client.release() == 0  # its decompressor stays
    message = b"y" * 300
    assert client.inflate_message(server.compress_message(message, client=False), client=True) == message


async def test_tls_stream_renews_its_bios_when_idle() -> None:
    client_tls = ClientTls.build(TlsProfile(), PKI.csms_trust())
    server_tls = ServerTls.build(TlsProfile(), PKI.server_identity())
    with trio.fail_after(10):
        c, s = await tls_pair(client_tls, server_tls)
        assert isinstance(c, TlsStream) and isinstance(s, TlsStream)
        assert c.release_idle_state() == 1 and s.release_idle_state() == 1  # after tls_pair's ping/pong
        rng = random.Random(1)
        for size in (1, 300, 20_000, 70_000):
            payload = rng.randbytes(size)
            await c.send_all(payload)
            got = b""
            while len(got) < size:
                got += await s.receive_some(65536)
            assert got == payload
            assert s.release_idle_state() == 1
            await s.send_all(payload[::-1])
            got = b""
            while len(got) < size:
                got += await c.receive_some(65536)
            assert got == payload[::-1]
            assert c.release_idle_state() == 1


@pytest.mark.parametrize("version", ["1.3", "1.2"])
async def test_tls_stream_releases_its_bios_when_the_handshake_completes(version: str) -> None:
    """The memory BIOs that carried the handshake's flights are new, empty ones once it completed (on both
    ends), and the connection works on them."""
    profile = TlsProfile(versions=(version,))
    client_tls = ClientTls.build(profile, PKI.csms_trust())
    server_tls = ServerTls.build(profile, PKI.server_identity())
    with trio.fail_after(10):
        c, s = await tls_pair(client_tls, server_tls, exchange=False)
        assert isinstance(c, TlsStream) and isinstance(s, TlsStream)
        assert c.release_idle_state() == 0 and s.release_idle_state() == 0  # nothing held, nothing to renew
        await c.send_all(b"ping")
        assert await s.receive_some() == b"ping"
        await s.send_all(b"pong")
        assert await c.receive_some() == b"pong"
        assert c.release_idle_state() == 1 and s.release_idle_state() == 1  # bytes moved: renewed again


class _Transport:
    """A text transport the test feeds (``send``); it keeps what the session sends and counts idle releases."""

    def __init__(self) -> None:
        self.releases = 0
        self.held = False
        self.sent: list[str] = []
        self.send, self.receive = trio.open_memory_channel[str](10)

    async def send_text(self, text: str) -> None:
        self.sent.append(text)

    async def receive_text(self) -> str:
        text = await self.receive.receive()
        self.held = True  # like a WebSocket that inflated a message
        return text

    def release_idle_state(self) -> int:
        if not self.held:
            return 0
        self.held = False
        self.releases += 1
        return 1


async def test_session_releases_an_idle_transport_once(autojump_clock: trio.testing.MockClock) -> None:
    transport = _Transport()
    session = OcppSession(transport, RpcConnection(), _no_calls, idle_release_s=5.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(session.run)
        await transport.send.send('[2,"a","Heartbeat",{}]')  # a frame moves: the watch is armed
        await trio.sleep(1)
        assert transport.releases == 0
        await trio.sleep(10)  # within twice the period
        assert transport.releases == 1
        await trio.sleep(60)  # nothing moved since: no further release
        assert transport.releases == 1
        for _ in range(10):  # a busy link is not released
            await transport.send.send('[2,"b","Heartbeat",{}]')
            await trio.sleep(2)
        assert transport.releases == 1
        await trio.sleep(11)
        assert transport.releases == 2
        nursery.cancel_scope.cancel()


async def test_an_idle_session_holds_no_timer_task_and_still_times_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Once the idle watch has released the link nothing has a deadline: the timer task has ended; the next
    CALL starts it again and still times out on time."""
    transport = _Transport()
    session = OcppSession(transport, RpcConnection(call_timeout=30.0), _no_calls, idle_release_s=5.0)
    with trio.fail_after(1000):
        async with trio.open_nursery() as nursery:
            await nursery.start(session.run)
            (run_task,) = nursery.child_tasks

            def timer_tasks() -> int:
                return sum(
                    t.name.endswith("_timer_loop") for n in run_task.child_nurseries for t in n.child_tasks
                )

            await transport.send.send('[2,"a","Heartbeat",{}]')  # the idle watch is armed
            await trio.sleep(1)
            assert timer_tasks() == 1
            await trio.sleep(100)  # the idle release, and the stall watch (armed by our answer) disarmed
            assert transport.releases == 1
            assert timer_tasks() == 0
            start = trio.current_time()
            with pytest.raises(CallTimeout):
                await session.call("Heartbeat", {})  # nobody answers
            assert trio.current_time() - start == pytest.approx(30.0)
            nursery.cancel_scope.cancel()


async def test_session_without_idle_release_never_releases(autojump_clock: trio.testing.MockClock) -> None:
    transport = _Transport()
    session = OcppSession(transport, RpcConnection(), _no_calls, idle_release_s=None)
    async with trio.open_nursery() as nursery:
        await nursery.start(session.run)
        await transport.send.send('[2,"a","Heartbeat",{}]')
        await trio.sleep(100)
        assert transport.releases == 0
        nursery.cancel_scope.cancel()


async def _no_calls(action: str, payload: dict[str, object]) -> dict[str, object]:
    return {"currentTime": "2030-06-01T12:00:00Z"}


async def test_session_default_is_off_in_virtual_time(autojump_clock: trio.testing.MockClock) -> None:
    """By default the watch runs in real time only (its wake-ups would cost a simulated day ≈30 % CPU)."""
    transport = _Transport()
    session = OcppSession(transport, RpcConnection(), _no_calls)
    async with trio.open_nursery() as nursery:
        await nursery.start(session.run)
        await transport.send.send('[2,"a","Heartbeat",{}]')
        await trio.sleep(1000)
        assert transport.releases == 0
        nursery.cancel_scope.cancel()


async def test_session_default_releases_in_real_time() -> None:
    transport = _Transport()
    session = OcppSession(transport, RpcConnection(), _no_calls)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(session.run)
            await transport.send.send('[2,"a","Heartbeat",{}]')
            await trio.testing.wait_all_tasks_blocked()
            assert session._release_idle is not None  # armed: the real-time default applies
            nursery.cancel_scope.cancel()


def test_a_stock_rfc7692_inflater_reads_what_follows_a_release() -> None:
    """Any peer's inflater with context takeover (here plain zlib with the 15-bit window RFC 7692 allows) reads
    the primed compressor's output: the preset dictionary is the history it holds already."""
    _, server = _pair()
    peer = zlib.decompressobj(-15)
    rng = random.Random(7)
    for n in range(30):
        message = b'[3,"%d",{"currentTime":"2030-06-01T12:00:00Z","status":"Accepted"}]' % n + rng.randbytes(
            n * 7
        )
        if n % 3 == 0:
            server.release()
        wire = server.compress_message(message, client=False)
        assert peer.decompress(wire + b"\x00\x00\xff\xff") == message


async def test_ocpp_over_websocket_over_tls_survives_idle_releases(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """End to end: both sessions release between exchanges (deflate state, TLS BIOs) and every CALL still
    gets its answer, compressed both ways."""
    from tests.test_ws_connection import open_ok

    client_tls = ClientTls.build(TlsProfile(), PKI.csms_trust())
    server_tls = ServerTls.build(TlsProfile(), PKI.server_identity())
    with trio.fail_after(600):
        c, s = await tls_pair(client_tls, server_tls)
        assert isinstance(c, TlsStream) and isinstance(s, TlsStream)
        client_ws, server_ws = await open_ok(
            streams=(c, s), client={"compression": True}, server={"compression": True}
        )
        assert client_ws.compressed and server_ws.compressed
        station = OcppSession(client_ws, RpcConnection(), _no_calls, idle_release_s=1.0)
        csms = OcppSession(server_ws, RpcConnection(), _no_calls, idle_release_s=1.0)
        async with trio.open_nursery() as nursery:
            await nursery.start(station.run)
            await nursery.start(csms.run)
            for n in range(6):
                answer = await station.call("Heartbeat", {})
                assert answer == {"currentTime": "2030-06-01T12:00:00Z"}
                await trio.sleep(5 if n % 2 else 0.1)  # idle long enough to release, or not
            assert client_ws.release_idle_state() == 0  # already released: nothing held
            nursery.cancel_scope.cancel()
