"""TlsStream as a trio stream: generic stream contract, info, close, timeouts, records, keylog, sessions."""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio
import trio.testing

from evsim.errors import BrokenTransport, ClosedTransport, HandshakeFailed, TlsError
from evsim.net import NowaitSend, VirtualNetwork
from evsim.net.tcp import TcpNetwork
from evsim.tls import (
    ClientTls,
    Identity,
    KeylogWarning,
    ServerTls,
    TlsProfile,
    TlsStream,
    tls_accept,
    tls_connect,
)
from tests.pki_fixtures import CSMS_HOST, TEST_NOW, make_test_pki, tls_pair

PKI = make_test_pki()
DEFAULT = TlsProfile()
TLS12 = TlsProfile(versions=("1.2",))
TLS13 = TlsProfile(versions=("1.3",))
FRAG = TlsProfile(max_send_fragment=512)


def make_pair(
    transports: tuple[trio.abc.Stream, trio.abc.Stream], profile: TlsProfile = DEFAULT
) -> tuple[TlsStream, TlsStream]:
    """An un-handshaken client/server pair (the handshake runs lazily)."""
    client = TlsStream.client(
        transports[0], ClientTls.build(profile, PKI.csms_trust()), CSMS_HOST, verify_time=lambda: TEST_NOW
    )
    server = TlsStream.server(transports[1], ServerTls.build(profile, PKI.server_identity()))
    return client, server


async def handshake_both(client: TlsStream, server: TlsStream) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.do_handshake)
        nursery.start_soon(server.do_handshake)


# ---------------------------------------------------------------- generic stream contract


@pytest.mark.parametrize("profile", [TLS12, TLS13, FRAG], ids=["tls12", "tls13", "fragment512"])
async def test_check_two_way_stream_memory(profile: TlsProfile) -> None:
    async def stream_maker() -> tuple[TlsStream, TlsStream]:
        return make_pair(trio.testing.memory_stream_pair(), profile)

    async def clogged_stream_maker() -> tuple[TlsStream, TlsStream]:
        # Handshake up front over lockstep streams (as trio's own SSLStream test does). A TLS 1.3 server
        # ends its handshake by sending session tickets, which a lockstep transport only delivers when the
        # client reads: keep a client read pending until the server is done, then cancel it (safe: a
        # cancelled transport read consumes nothing).
        client, server = make_pair(trio.testing.lockstep_stream_pair(), profile)

        async def client_side() -> None:
            await client.do_handshake()
            await client.receive_some(1)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(client_side)
            await server.do_handshake()
            nursery.cancel_scope.cancel()
        return client, server

    with trio.fail_after(30):
        await trio.testing.check_two_way_stream(stream_maker, clogged_stream_maker)


async def _tcp_transports() -> tuple[trio.abc.Stream, trio.abc.Stream]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    try:
        port = listeners[0].socket.getsockname()[1]
        client = await trio.open_tcp_stream("127.0.0.1", port)
        server = await listeners[0].accept()
    finally:
        for listener in listeners:
            await listener.aclose()
    return client, server


@pytest.mark.loopback
@pytest.mark.parametrize("profile", [TLS12, TLS13], ids=["tls12", "tls13"])
async def test_check_two_way_stream_tcp(profile: TlsProfile) -> None:
    async def stream_maker() -> tuple[TlsStream, TlsStream]:
        return make_pair(await _tcp_transports(), profile)

    with trio.fail_after(30):
        await trio.testing.check_two_way_stream(stream_maker, None)


@pytest.mark.loopback
async def test_tls_connect_over_tcp() -> None:
    client_tls = ClientTls.build(TlsProfile(), PKI.csms_trust())
    server_tls = ServerTls.build(TlsProfile(), PKI.localhost_identity())
    with trio.fail_after(10):
        a, b = await _tcp_transports()
        servers: list[TlsStream] = []

        async def accept() -> None:
            servers.append(await tls_accept(b, server_tls))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(accept)
            c = await tls_connect(a, client_tls, "127.0.0.1", verify_time=lambda: TEST_NOW)
        assert c.info.version == "TLSv1.3"
        assert c.info.sni is None  # no SNI for IP literals
        await c.send_all(b"over tcp")
        assert await servers[0].receive_some() == b"over tcp"
        await c.aclose()
        assert await servers[0].receive_some() == b""
        await servers[0].aclose()


async def test_concurrent_calls_are_busy() -> None:
    client, server = make_pair(trio.testing.memory_stream_pair())
    with trio.fail_after(10):
        await handshake_both(client, server)
        with pytest.RaisesGroup(pytest.RaisesExc(trio.BusyResourceError, match="receiving")):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.receive_some, 10)
                nursery.start_soon(server.receive_some, 10)


async def _evsim_tcp_transports() -> tuple[trio.abc.Stream, trio.abc.Stream]:
    net = TcpNetwork()
    listener = await net.listen("127.0.0.1", 0)
    try:
        async with trio.open_nursery() as nursery:
            accepted: list[trio.abc.Stream] = []

            async def accept() -> None:
                accepted.append(await listener.accept())

            nursery.start_soon(accept)
            a = await net.connect("127.0.0.1", listener.address[1])
    finally:
        await listener.aclose()
    return a, accepted[0]


@pytest.mark.parametrize("transport", ["memory", pytest.param("tcp", marks=pytest.mark.loopback)])
async def test_a_cancelled_receive_takes_nothing(transport: str) -> None:
    """receive_some is a checkpoint that takes nothing when cancelled: with the engine starved (its transport's
    receive is the checkpoint then), with the bytes still in the transport, in both directions."""
    with trio.fail_after(10):
        pair: tuple[trio.abc.Stream, trio.abc.Stream]
        if transport == "memory":
            pair = trio.testing.memory_stream_pair()
        else:
            pair = await _evsim_tcp_transports()
        client, server = make_pair(pair)
        await handshake_both(client, server)
        for sender, receiver in ((client, server), (server, client), (client, server)):
            with trio.CancelScope() as scope:
                scope.cancel()
                await receiver.receive_some(100)
            assert scope.cancelled_caught
            await sender.send_all(b"hello")
            await trio.testing.wait_all_tasks_blocked()
            with trio.CancelScope() as scope:
                scope.cancel()
                await receiver.receive_some(100)
            assert scope.cancelled_caught
            assert await receiver.receive_some(100) == b"hello"
        await client.aclose()
        await server.aclose()


# ---------------------------------------------------------------- negotiated info


async def test_info_tls13_mutual() -> None:
    profile = TlsProfile(alpn=("ocpp2.1", "ocpp2.0.1"))
    station = PKI.station_cert("CS00042")
    client_tls = ClientTls.build(
        TlsProfile(alpn=("ocpp2.0.1", "ocpp2.1")), PKI.csms_trust(), Identity.from_cert_key(station)
    )
    server_tls = ServerTls.build(profile, PKI.server_identity(), PKI.station_trust(), "required")
    with trio.fail_after(10):
        c, s = await tls_pair(client_tls, server_tls)
    assert isinstance(c, TlsStream) and isinstance(s, TlsStream)
    ci, si = c.info, s.info
    assert ci.version == si.version == "TLSv1.3"
    assert ci.cipher_iana == ci.cipher_openssl == "TLS_AES_256_GCM_SHA384"  # first of the default list
    assert si.cipher_iana == ci.cipher_iana
    assert ci.group and ci.group == si.group
    assert ci.alpn == si.alpn == "ocpp2.1"  # the server's preference wins
    assert ci.sni == si.sni == CSMS_HOST
    assert ci.peer_chain == (PKI.server.cert,)
    assert ci.verified_chain == (PKI.server.cert, PKI.root.cert)
    assert si.peer_chain == (station.cert, PKI.station_ca.cert)  # leaf first, as sent
    assert si.verified_chain[-1] == PKI.root.cert
    assert not ci.session_reused and not si.session_reused
    assert ci.handshake_s >= 0 and ci.side == "client" and si.side == "server"
    assert c.handshake_done and c.side == "client"


async def test_info_before_handshake_raises() -> None:
    client, _ = make_pair(trio.testing.memory_stream_pair())
    with pytest.raises(TlsError, match="before the handshake"):
        _ = client.info


@pytest.mark.parametrize(
    ("server_suites", "client_suites", "expected"),
    [
        # the server restricts: only one suite is possible
        (["TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"], None, "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"),
        # the client restricts
        (
            None,
            ["TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"],
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        ),
        # server preference (default) picks the server's first shared suite
        (
            ["TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"],
            ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"],
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        ),
        # SHIP's CCM_8 suite
        (["TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8"], None, None),
    ],
)
async def test_tls12_suite_list_restricts_negotiation(
    server_suites: list[str] | None, client_suites: list[str] | None, expected: str | None
) -> None:
    def profile(suites: list[str] | None) -> TlsProfile:
        return TlsProfile(
            versions=("1.2",),
            cipher_suites={"1.2": suites}
            if suites
            else {
                "1.2": [
                    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
                    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
                    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
                    "TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8",
                ]
            },
        )

    with trio.fail_after(10):
        c, s = await tls_pair(
            ClientTls.build(profile(client_suites), PKI.csms_trust()),
            ServerTls.build(profile(server_suites), PKI.server_identity()),
        )
    assert isinstance(c, TlsStream) and isinstance(s, TlsStream)
    assert c.info.version == "TLSv1.2"
    assert c.info.cipher_iana == s.info.cipher_iana == (expected or server_suites[0])  # type: ignore[index]
    assert c.info.cipher_openssl != c.info.cipher_iana


async def test_tls13_suite_list_restricts_negotiation() -> None:
    only = TlsProfile(
        cipher_suites={"1.3": ["TLS_CHACHA20_POLY1305_SHA256"], "1.2": ["TLS_RSA_WITH_AES_128_GCM_SHA256"]}
    )
    with trio.fail_after(10):
        c, _ = await tls_pair(
            ClientTls.build(TlsProfile(), PKI.csms_trust()), ServerTls.build(only, PKI.server_identity())
        )
    assert isinstance(c, TlsStream)
    assert c.info.cipher_iana == "TLS_CHACHA20_POLY1305_SHA256"


async def test_rsa_server_certificate_uses_ecdhe_rsa() -> None:
    rsa_server = PKI.root.issue_server(CSMS_HOST, now=TEST_NOW, key_type="rsa")
    with trio.fail_after(10):
        c, _ = await tls_pair(
            ClientTls.build(TLS12, PKI.csms_trust()),
            ServerTls.build(TLS12, Identity.from_cert_key(rsa_server)),
        )
    assert isinstance(c, TlsStream)
    assert c.info.cipher_iana == "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"


# ---------------------------------------------------------------- close, EOF, timeouts


async def test_aclose_sends_close_notify() -> None:
    with trio.fail_after(10):
        c, s = await tls_pair(
            ClientTls.build(TlsProfile(), PKI.csms_trust()),
            ServerTls.build(TlsProfile(), PKI.server_identity()),
        )
        assert isinstance(c, TlsStream) and isinstance(s, TlsStream)
        await c.send_all(b"last words")
        await c.aclose()
        assert await s.receive_some() == b"last words"
        assert await s.receive_some() == b""  # close_notify, not a truncation
        assert await s.receive_some() == b""  # and it stays at EOF
        with pytest.raises(ClosedTransport):
            await c.receive_some()
        with pytest.raises(trio.ClosedResourceError):
            await c.send_all(b"x")
        await c.aclose()  # idempotent
        await s.aclose()


async def test_eof_without_close_notify_is_broken() -> None:
    with trio.fail_after(10):
        c, s = await tls_pair(
            ClientTls.build(TlsProfile(), PKI.csms_trust()),
            ServerTls.build(TlsProfile(), PKI.server_identity()),
        )
        assert isinstance(c, TlsStream) and isinstance(s, TlsStream)
        await c.transport_stream.aclose()  # the link drops: no close_notify
        with pytest.raises(BrokenTransport, match="without close_notify"):
            await s.receive_some()
        with pytest.raises(trio.BrokenResourceError):  # stays broken
            await s.receive_some()


async def test_handshake_timeout_client(autojump_clock: trio.testing.MockClock) -> None:
    a, _peer = trio.testing.memory_stream_pair()  # the peer accepts the connection and never answers
    client_tls = ClientTls.build(TlsProfile(handshake_timeout_s=7.5), PKI.csms_trust())
    start = trio.current_time()
    with trio.fail_after(60), pytest.raises(HandshakeFailed) as excinfo:
        await tls_connect(a, client_tls, CSMS_HOST)
    assert excinfo.value.reason == "timeout"
    assert trio.current_time() - start == pytest.approx(7.5)


async def test_handshake_timeout_server(autojump_clock: trio.testing.MockClock) -> None:
    _peer, b = trio.testing.memory_stream_pair()  # a client that connects and sends nothing
    server_tls = ServerTls.build(TlsProfile(), PKI.server_identity())
    start = trio.current_time()
    with trio.fail_after(60), pytest.raises(HandshakeFailed) as excinfo:
        await tls_accept(b, server_tls)
    assert excinfo.value.reason == "timeout"
    assert trio.current_time() - start == pytest.approx(10.0)  # the default handshake_timeout_s


async def test_handshake_timeout_while_sending(autojump_clock: trio.testing.MockClock) -> None:
    a, _peer = trio.testing.lockstep_stream_pair()  # the peer never reads: our ClientHello never leaves
    client = TlsStream.client(a, ClientTls.build(TlsProfile(), PKI.csms_trust()), CSMS_HOST)
    with trio.fail_after(60):
        with pytest.raises(HandshakeFailed) as excinfo:
            await client.do_handshake()
        assert excinfo.value.reason == "timeout"
        with pytest.raises(HandshakeFailed, match="timeout"):  # the verdict sticks
            await client.send_all(b"x")
        await client.aclose()


async def test_peer_eof_during_handshake() -> None:
    a, peer = trio.testing.memory_stream_pair()
    client_tls = ClientTls.build(TlsProfile(), PKI.csms_trust())

    async def hang_up() -> None:
        await peer.receive_some()  # the ClientHello
        await peer.aclose()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(hang_up)
            with pytest.raises(HandshakeFailed) as excinfo:
                await tls_connect(a, client_tls, CSMS_HOST, verify_time=lambda: TEST_NOW)
    assert excinfo.value.reason == "eof" and excinfo.value.remote


async def test_lazy_handshake_failure_surfaces_in_send_all_and_stays() -> None:
    a, b = trio.testing.memory_stream_pair()
    client = TlsStream.client(
        a, ClientTls.build(TlsProfile(), PKI.csms_trust()), CSMS_HOST, verify_time=lambda: TEST_NOW
    )
    server = TlsStream.server(b, ServerTls.build(TlsProfile(), Identity.from_cert_key(PKI.evil_server)))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_swallow, server.do_handshake)
            with pytest.raises(HandshakeFailed) as excinfo:
                await client.send_all(b"hello")
        assert excinfo.value.reason == "cert_invalid:unknown_ca"
        with pytest.raises(HandshakeFailed, match="unknown_ca"):
            await client.receive_some()
        with pytest.raises(trio.BrokenResourceError):
            await client.do_handshake()


async def _swallow(fn: Callable[[], Awaitable[None]]) -> None:
    with contextlib.suppress(HandshakeFailed):
        await fn()


# ---------------------------------------------------------------- records on the wire


class RecordingStream(trio.abc.Stream):
    """A transport wrapper that keeps a copy of every byte sent."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.sent = bytearray()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.sent += data
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


def parse_records(wire: bytes) -> list[tuple[int, int]]:
    """(content type, length) of each TLS record (5-byte header: type, version, length; RFC 8446 §5.1)."""
    out = []
    pos = 0
    while pos < len(wire):
        ctype, _version, length = struct.unpack_from("!BHH", wire, pos)
        out.append((ctype, length))
        pos += 5 + length
    assert pos == len(wire), "wire data must be whole records"
    return out


@pytest.mark.parametrize(
    ("versions", "overhead"),
    # The record length is the ciphertext length = plaintext + a fixed AEAD overhead for the suite:
    # TLS 1.3 AES-GCM: 1 inner content-type byte + 16-byte tag (OpenSSL adds no padding by default);
    # TLS 1.2 AES-GCM: 8-byte explicit nonce + 16-byte tag (RFC 5288 §3).
    [(("1.3",), 17), (("1.2",), 24)],
    ids=["tls13", "tls12"],
)
async def test_max_send_fragment_limits_records(versions: tuple[str, ...], overhead: int) -> None:
    fragment = 1000
    profile = TlsProfile(
        versions=versions,
        max_send_fragment=fragment,
        cipher_suites={"1.3": ["TLS_AES_128_GCM_SHA256"], "1.2": ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"]},
    )
    a, b = trio.testing.memory_stream_pair()
    wire = RecordingStream(a)
    client = TlsStream.client(
        wire, ClientTls.build(profile, PKI.csms_trust()), CSMS_HOST, verify_time=lambda: TEST_NOW
    )
    server = TlsStream.server(b, ServerTls.build(profile, PKI.server_identity()))
    payload = bytes(range(256)) * 40  # 10 240 bytes
    with trio.fail_after(10):
        await handshake_both(client, server)
        wire.sent.clear()
        await client.send_all(payload)
        records = parse_records(bytes(wire.sent))
        got = bytearray()
        while len(got) < len(payload):
            got += await server.receive_some()
    assert got == payload
    assert {ctype for ctype, _ in records} == {23}  # application_data only
    plaintext_sizes = [length - overhead for _, length in records]
    assert max(plaintext_sizes) <= fragment
    assert sum(plaintext_sizes) == len(payload)
    assert len(records) == -(-len(payload) // fragment)  # 11 records: ten of 1000 bytes and one of 240


async def test_small_messages_are_one_transport_write_each() -> None:
    a, b = trio.testing.memory_stream_pair()
    wire = RecordingStream(a)
    client = TlsStream.client(
        wire, ClientTls.build(TLS13, PKI.csms_trust()), CSMS_HOST, verify_time=lambda: TEST_NOW
    )
    server = TlsStream.server(b, ServerTls.build(TLS13, PKI.server_identity()))
    with trio.fail_after(10):
        await handshake_both(client, server)
        wire.sent.clear()
        for _ in range(3):
            await client.send_all(b"x" * 200)
    assert [length for _, length in parse_records(bytes(wire.sent))] == [217, 217, 217]


# ---------------------------------------------------------------- synchronous sends (NowaitSend)


async def test_evsim_streams_are_nowait_send_and_trio_test_streams_are_not() -> None:
    net = VirtualNetwork()
    listener = await net.listen("csms", 443)
    with trio.fail_after(5):
        stream = await net.connect("csms", 443, source="st")
        assert isinstance(stream, NowaitSend)
        assert isinstance(make_pair((stream, stream))[0], NowaitSend)
        assert not isinstance(trio.testing.memory_stream_pair()[0], NowaitSend)
        await stream.aclose()
        await listener.aclose()


async def test_tls_over_tls_loses_nothing_when_the_inner_stream_declines_a_synchronous_send() -> None:
    # The inner TLS stream is the outer one's NowaitSend transport; it takes nothing (None) for more than one
    # record, so the outer stream's 64 KiB flushes must take the ordinary send_all path.
    outer_client, outer_server = make_pair(make_pair(trio.testing.memory_stream_pair(), TLS13), TLS13)
    payload = bytes(range(256)) * 1024  # 256 KiB
    received = bytearray()

    async def read_all() -> None:
        while len(received) < len(payload):
            received.extend(await outer_server.receive_some())

    with trio.fail_after(10):
        inner_client, inner_server = outer_client.transport_stream, outer_server.transport_stream
        assert isinstance(inner_client, TlsStream) and isinstance(inner_server, TlsStream)
        await handshake_both(inner_client, inner_server)
        await handshake_both(outer_client, outer_server)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_all)
            await outer_client.send_all(payload)
    assert bytes(received) == payload


# ---------------------------------------------------------------- keylog


async def test_keylog_only_when_asked(tmp_path: Path) -> None:
    keylog = tmp_path / "tls.keylog"
    profile = TlsProfile(keylog=str(keylog))
    with pytest.warns(KeylogWarning, match="key logging is ON"):
        client_tls = ClientTls.build(profile, PKI.csms_trust())
    quiet_server = ServerTls.build(TlsProfile(), PKI.server_identity())
    with trio.fail_after(10):
        c, _ = await tls_pair(client_tls, quiet_server)
    assert isinstance(c, TlsStream)
    lines = keylog.read_text().splitlines()
    labels = {line.split()[0] for line in lines}
    assert {"CLIENT_HANDSHAKE_TRAFFIC_SECRET", "CLIENT_TRAFFIC_SECRET_0"} <= labels
    client_random = lines[0].split()[1]
    assert all(len(line.split()) == 3 and line.split()[1] == client_random for line in lines)
    # a connection without keylog in its profile adds nothing
    before = keylog.read_text()
    with trio.fail_after(10):
        await tls_pair(ClientTls.build(TlsProfile(), PKI.csms_trust()), quiet_server)
    assert keylog.read_text() == before
    assert _names(tmp_path) == ["tls.keylog"]


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# ---------------------------------------------------------------- sessions and exporter


@pytest.mark.parametrize("profile", [TLS12, TLS13], ids=["tls12", "tls13"])
async def test_session_resumption(profile: TlsProfile) -> None:
    client_tls = ClientTls.build(profile, PKI.csms_trust())
    server_tls = ServerTls.build(profile, PKI.server_identity())
    with trio.fail_after(10):
        c1, _ = await tls_pair(client_tls, server_tls)  # includes a read, so TLS 1.3 tickets arrived
        assert isinstance(c1, TlsStream)
        session = c1.session
        assert session is not None
        a, b = trio.testing.memory_stream_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(tls_accept, b, server_tls)
            c2 = await tls_connect(a, client_tls, CSMS_HOST, verify_time=lambda: TEST_NOW, session=session)
    assert c2.info.session_reused
    assert not c1.info.session_reused


async def test_export_keying_material_matches() -> None:
    with trio.fail_after(10):
        c, s = await tls_pair(
            ClientTls.build(TlsProfile(), PKI.csms_trust()),
            ServerTls.build(TlsProfile(), PKI.server_identity()),
        )
    assert isinstance(c, TlsStream) and isinstance(s, TlsStream)
    label, ctx = b"EXPORTER-network-time-security", b"\x00\x00\x00\x0f\x00"  # RFC 8915 §5.1
    key = c.export_keying_material(label, 32, ctx)
    assert len(key) == 32 and key == s.export_keying_material(label, 32, ctx)
    client, _ = make_pair(trio.testing.memory_stream_pair())
    with pytest.raises(TlsError):
        client.export_keying_material(label, 32, ctx)
