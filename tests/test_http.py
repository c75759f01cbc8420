"""HTTP/1.1 over the evsim TLS stream: byte ranges (sans-IO), the file server and the transfer client with mirror
failover and resume (in memory, virtual time), hostile clients and servers, and one loopback TCP run."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import attrs
import pytest
import trio
import trio.testing

from evsim.backoff import RetryBackOff
from evsim.clock import SimClock
from evsim.errors import ConfigError
from evsim.http import HttpConnection, HttpLimits, RangeNotSatisfiable, parse_content_range, parse_range
from evsim.http.ranges import ByteRange, content_range
from evsim.link.service import Endpoint, Service
from evsim.link.transfer import DownloadState, TransferFailed, download, locate, upload
from evsim.net.base import Network
from evsim.net.tcp import TcpNetwork
from evsim.net.virtual import VirtualNetwork
from evsim.nodes.fileserver import FileServer, FileServerConfig
from evsim.pki import CertKey, spki_sha256
from evsim.recorder import Event, Recorder
from evsim.tls import Identity, PeerPolicy, ServerTls, TlsProfile, TrustStore
from evsim.tls.pins import Pin, PinSet
from tests.pki_fixtures import TEST_NOW, make_test_pki

PKI = make_test_pki(TEST_NOW)
IMAGE = bytes(range(256)) * 1000  # 256,000 bytes
FAST = RetryBackOff(wait_minimum=1, random_range=0, repeat_times=0)


def server_cert(host: str) -> CertKey:
    return _certs.setdefault(host, PKI.root.issue_server(host, now=TEST_NOW))


_certs: dict[str, CertKey] = {}


# ---------------------------------------------------------------- sans-IO: ranges and limits


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 10, None),
        ("bytes=0-", 10, ByteRange(0, 9, 10)),
        ("bytes=4-", 10, ByteRange(4, 9, 10)),
        ("bytes=2-5", 10, ByteRange(2, 5, 10)),
        ("bytes=2-500", 10, ByteRange(2, 9, 10)),
        ("bytes=-3", 10, ByteRange(7, 9, 10)),
        ("bytes=-30", 10, ByteRange(0, 9, 10)),
        ("bytes=5-2", 10, None),  # invalid: ignored, the whole file
        ("bytes=0-1,4-5", 10, None),  # several ranges: not served, the whole file
        ("items=0-1", 10, None),
        ("bytes=" + "9" * 40 + "-", 10, None),  # no huge integers
        ("garbage", 10, None),
    ],
)
def test_parse_range(header: str | None, size: int, expected: ByteRange | None) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(
    ("header", "size"), [("bytes=10-", 10), ("bytes=11-20", 10), ("bytes=-0", 10), ("bytes=0-", 0)]
)
def test_a_range_past_the_end_is_not_satisfiable(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, size)


def test_content_range_round_trip_and_bad_values() -> None:
    assert content_range(ByteRange(4, 9, 10)) == "bytes 4-9/10"
    assert parse_content_range("bytes 4-9/10") == (4, 9, 10)
    assert parse_content_range("bytes 4-9/*") == (4, 9, None)
    for bad in (
        None,
        "bytes 9-4/10",
        "bytes 4-9/9",
        "bytes */10",
        "items 0-1/2",
        "bytes 0-" + "9" * 30 + "/5",
    ):
        assert parse_content_range(bad) is None


@pytest.mark.parametrize(
    "field", ["max_head_bytes", "max_body_bytes", "head_timeout_s", "idle_timeout_s", "body_timeout_s"]
)
def test_limits_refuse_non_positive_values(field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        HttpLimits(**{field: 0})


def test_endpoints_take_https_urls_and_a_service_does_not_mix_kinds() -> None:
    ep = Endpoint("m1", "https://fw.evsim.test/images", trust=PKI.csms_trust())
    assert ep.secure and ep.kind == "http" and ep.port == 443 and ep.path == "/images"
    assert Endpoint("p", "http://fw.evsim.test:8080/").kind == "http"
    with pytest.raises(ConfigError, match="needs a trust store"):
        Endpoint("m1", "https://fw.evsim.test/")
    with pytest.raises(ConfigError, match="all WebSocket"):
        Service("x", (ep, Endpoint("c", "wss://csms.evsim.test/ocpp", priority=1, trust=PKI.csms_trust())))


def test_locate_maps_a_url_to_its_service_and_relative_path() -> None:
    fw = Service(
        "firmware",
        (
            Endpoint("a", "https://fw-a.evsim.test/images", trust=PKI.csms_trust()),
            Endpoint("b", "https://fw-b.evsim.test/mirror/images", priority=1, trust=PKI.csms_trust()),
        ),
    )
    logs = Service("logs", (Endpoint("l", "https://logs.evsim.test/", trust=PKI.csms_trust()),))
    assert locate("https://fw-a.evsim.test/images/v2/fw.bin", (logs, fw)) == (fw, "/v2/fw.bin")
    assert locate("https://fw-b.evsim.test/mirror/images/fw.bin?x=1", (fw,)) == (fw, "/fw.bin?x=1")
    assert locate("https://fw-a.evsim.test/imagesX/fw.bin", (fw,)) is None  # not at a / boundary
    assert locate("https://fw-a.evsim.test:8443/images/fw.bin", (fw,)) is None  # another port
    assert locate("https://logs.evsim.test/up/CS1.log", (fw, logs)) == (logs, "/up/CS1.log")
    with pytest.raises(ConfigError):
        locate("ftp://fw-a.evsim.test/images/fw.bin", (fw,))


# ---------------------------------------------------------------- in memory: servers and client


@attrs.define
class Scene:
    net: Network
    clock: SimClock
    recorder: Recorder
    nursery: trio.Nursery
    servers: dict[str, FileServer] = attrs.field(factory=dict)

    async def server(
        self,
        host: str,
        *,
        tls: ServerTls | bool | None = True,
        files: dict[str, bytes] | None = None,
        uploads: bool = False,
        limits: HttpLimits | None = None,
        port: int = 443,
    ) -> FileServer:
        server_tls = (
            ServerTls.build(TlsProfile(), Identity.from_cert_key(server_cert(host))) if tls is True else tls
        )
        node = FileServer(
            FileServerConfig(
                name=host,
                host=host,
                port=port,
                files=files if files is not None else {"/fw/image.bin": IMAGE},
                accept_uploads=uploads,
                limits=limits or HttpLimits(),
            ),
            network=self.net,
            server_tls=server_tls or None,
            clock=self.clock,
            recorder=self.recorder,
        )
        await self.nursery.start(node.serve)
        self.servers[host] = node
        return node

    def events(self, kind: str, node: str | None = None) -> list[Event]:
        return [e for e in self.recorder.of_kind(kind) if node is None or e.node == node]


@asynccontextmanager
async def scene(net: Network | None = None) -> AsyncIterator[Scene]:
    clock = SimClock.start(TEST_NOW)
    async with trio.open_nursery() as nursery:
        s = Scene(net or VirtualNetwork(), clock, Recorder(clock), nursery)
        try:
            yield s
        finally:
            nursery.cancel_scope.cancel()


def mirror(name: str, host: str, priority: int, **kw: object) -> Endpoint:
    kw.setdefault("trust", PKI.csms_trust())
    return Endpoint(name, f"https://{host}/fw", priority=priority, **kw)  # type: ignore[arg-type]


async def test_download_fails_over_to_the_next_mirror_with_the_tls_reason_and_security_event(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        async with scene() as s:
            await s.server(
                "fw-a.evsim.test", tls=ServerTls.build(TlsProfile(), Identity.from_cert_key(PKI.evil_server))
            )
            await s.server("fw-b.evsim.test")
            svc = Service(
                "firmware",
                (mirror("a", "fw-a.evsim.test", 0), mirror("b", "fw-b.evsim.test", 1)),
                backoff=FAST,
            )
            result = await download(
                svc, "/image.bin", s.net, clock=s.clock, recorder=s.recorder, source="CS1"
            )
            assert result.body == IMAGE and result.endpoint == "b" and result.status == 200
            assert [a.reason for a in result.attempts] == ["cert_invalid:unknown_ca", ""]
            [failed] = s.events("handshake_failed", "CS1")
            assert (
                failed.data["endpoint"] == "a" and failed.data["security_event"] == "InvalidCsmsCertificate"
            )
            [done] = s.events("transfer_done", "CS1")
            assert done.data["endpoint"] == "b" and done.data["bytes"] == len(IMAGE)
            assert s.servers["fw-b.evsim.test"].statistics().bytes_served == len(IMAGE)


async def test_transfer_settings_are_config_errors(autojump_clock: trio.testing.MockClock) -> None:
    """Old code raised a bare ValueError, without the field, value and fix of every other setting."""
    with trio.fail_after(10):
        svc = Service("firmware", (mirror("a", "fw-a.evsim.test", 0),), backoff=FAST)
        with pytest.raises(ConfigError) as info:
            await download(
                svc, "/image.bin", VirtualNetwork(), clock=SimClock.start(TEST_NOW), max_attempts=0
            )
        assert (info.value.path, info.value.value) == ("transfer.max_attempts", 0) and info.value.fix
        ws = Service("csms", (Endpoint("a", "wss://csms.evsim.test/ocpp", trust=PKI.csms_trust()),))
        with pytest.raises(ConfigError, match="http") as info:
            await download(ws, "/image.bin", VirtualNetwork(), clock=SimClock.start(TEST_NOW))
        assert info.value.path == "service.csms" and info.value.fix


async def test_an_interrupted_download_resumes_on_another_mirror_with_a_range(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        async with scene() as s:
            a = await s.server("fw-a.evsim.test")
            b = await s.server("fw-b.evsim.test")
            a.faults.cut_after_bytes, a.faults.cuts = 100_000, 1
            svc = Service(
                "firmware",
                (mirror("a", "fw-a.evsim.test", 0), mirror("b", "fw-b.evsim.test", 1)),
                backoff=FAST,
            )
            result = await download(
                svc, "/image.bin", s.net, clock=s.clock, recorder=s.recorder, source="CS1"
            )
            assert result.body == IMAGE
            assert (result.endpoint, result.status, result.resumed_from) == ("b", 206, 100_000)
            assert result.bytes_by_endpoint == {"a": 100_000, "b": len(IMAGE) - 100_000}
            [failed] = s.events("transfer_attempt_failed", "CS1")
            assert (failed.data["endpoint"], failed.data["reason"]) == ("a", "truncated")
            assert b.statistics().responses == {206: 1}


async def test_a_download_state_resumes_across_calls(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(60):
        async with scene() as s:
            a = await s.server("fw-a.evsim.test")
            a.faults.cut_after_bytes, a.faults.cuts = 50_000, 1
            svc = Service("firmware", (mirror("a", "fw-a.evsim.test", 0),), backoff=FAST)
            state = DownloadState()
            with pytest.raises(TransferFailed) as caught:
                await download(svc, "/image.bin", s.net, clock=s.clock, state=state, source="CS1")
            assert caught.value.reason == "truncated" and len(state.data) == 50_000 and state.resumable
            result = await download(svc, "/image.bin", s.net, clock=s.clock, state=state, source="CS1")
            assert result.body == IMAGE and result.resumed_from == 50_000


async def test_a_changed_file_restarts_the_download_from_byte_zero(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """If-Range: the mirror's ETag changed, so it serves the whole new file with 200."""
    with trio.fail_after(60):
        async with scene() as s:
            a = await s.server("fw-a.evsim.test")
            a.faults.cut_after_bytes, a.faults.cuts = 50_000, 1
            svc = Service("firmware", (mirror("a", "fw-a.evsim.test", 0),), backoff=FAST)
            state = DownloadState()
            with pytest.raises(TransferFailed):
                await download(svc, "/image.bin", s.net, clock=s.clock, state=state, source="CS1")
            a.files["/fw/image.bin"] = b"new" * 1000
            result = await download(svc, "/image.bin", s.net, clock=s.clock, state=state, source="CS1")
            assert result.body == b"new" * 1000 and result.status == 200 and result.resumed_from == 0


async def test_upload_put_and_post_are_stored_with_the_client_certificate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        async with scene() as s:
            ident = Identity.from_cert_key(server_cert("logs.evsim.test"))
            mtls = ServerTls.build(TlsProfile(), ident, trust=PKI.station_trust(), client_auth="required")
            logs = await s.server("logs.evsim.test", tls=mtls, files={}, uploads=True)
            ep = Endpoint(
                "l",
                "https://logs.evsim.test/up",
                trust=PKI.csms_trust(),
                identity=PKI.station_identity("CS7"),
            )
            svc = Service("logs", (ep,))
            for method in ("PUT", "POST"):
                result = await upload(
                    svc,
                    f"/CS7-{method}.log",
                    b"log " * 100,
                    s.net,
                    clock=s.clock,
                    method=method,
                    filename=f"CS7-{method}.log",
                    source="CS7",
                )
                assert result.status == 201
                stored = logs.uploaded(f"/up/CS7-{method}.log")
                assert stored is not None and stored.body == b"log " * 100 and stored.client == "CS7"
                assert stored.filename == f"CS7-{method}.log" and stored.method == method


async def test_a_server_requiring_client_certificates_refuses_a_client_without_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        async with scene() as s:
            ident = Identity.from_cert_key(server_cert("logs.evsim.test"))
            mtls = ServerTls.build(TlsProfile(), ident, trust=PKI.station_trust(), client_auth="required")
            logs = await s.server("logs.evsim.test", tls=mtls, files={}, uploads=True)
            svc = Service("logs", (Endpoint("l", "https://logs.evsim.test/up", trust=PKI.csms_trust()),))
            with pytest.raises(TransferFailed) as caught:
                await upload(svc, "/x.log", b"x", s.net, clock=s.clock, source="CS7", recorder=s.recorder)
            assert caught.value.reason.startswith(("peer_alert", "cert_invalid", "link_lost", "eof"))
            # TLS 1.3: the client may finish first and see the link drop before the server's task has recorded
            # why; give it a moment of virtual time
            await trio.sleep(1)
            [refused] = s.events("handshake_failed", "logs.evsim.test")
            assert refused.data["reason"] == "cert_invalid:no_client_cert"
            assert refused.data["security_event"] == "InvalidChargingStationCertificate"
            assert not logs.uploads


async def test_pins_and_versions_of_an_endpoint_apply_to_downloads(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        async with scene() as s:
            only13 = ServerTls.build(
                TlsProfile(versions=("1.3",)), Identity.from_cert_key(server_cert("fw-a.evsim.test"))
            )
            await s.server("fw-a.evsim.test", tls=only13)
            await s.server("fw-b.evsim.test")
            wrong_pin = PeerPolicy(
                side="client", pins=PinSet("enforce", (Pin("leaf", spki_sha256(PKI.server.cert), "active"),))
            )
            svc = Service(
                "firmware",
                (
                    mirror("a", "fw-a.evsim.test", 0, profile=TlsProfile(versions=("1.2",))),
                    mirror("b", "fw-b.evsim.test", 1, peer=wrong_pin),
                ),
                backoff=FAST,
            )
            with pytest.raises(TransferFailed) as caught:
                await download(svc, "/image.bin", s.net, clock=s.clock, recorder=s.recorder, source="CS1")
            reasons = [a.reason for a in caught.value.attempts]
            assert reasons[1] == "pin_mismatch" and reasons[0] in (
                "downgrade_refused",
                "peer_alert:protocol_version",
            )
            assert len(s.events("handshake_failed", "CS1")) == 2
            right_pin = PeerPolicy(
                side="client",
                pins=PinSet(
                    "enforce", (Pin("leaf", spki_sha256(server_cert("fw-b.evsim.test").cert), "active"),)
                ),
            )
            ok = Service("firmware", (mirror("b", "fw-b.evsim.test", 0, peer=right_pin),))
            assert (await download(ok, "/image.bin", s.net, clock=s.clock, source="CS1")).body == IMAGE


async def test_not_found_and_a_range_past_the_end_are_refused_with_one_event_each(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        async with scene() as s:
            await s.server("fw-a.evsim.test")
            svc = Service("firmware", (mirror("a", "fw-a.evsim.test", 0),))
            with pytest.raises(TransferFailed) as caught:
                await download(svc, "/missing.bin", s.net, clock=s.clock, recorder=s.recorder, source="CS1")
            assert caught.value.reason == "http_404"
            reply = await raw_exchange(
                s.net,
                "fw-a.evsim.test",
                443,
                b"GET /fw/image.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=999999-\r\n\r\n",
                tls=True,
            )
            assert reply.startswith(b"HTTP/1.1 416") and f"bytes */{len(IMAGE)}".encode() in reply
            refusals = s.events("http_refused", "fw-a.evsim.test")
            assert [e.data["reason"] for e in refusals] == ["not_found", "range_not_satisfiable"]


# ---------------------------------------------------------------- hostile clients


async def raw_exchange(
    net: Network,
    host: str,
    port: int,
    data: bytes,
    *,
    tls: bool = False,
    trickle: float | None = None,
    read: bool = True,
) -> bytes:
    """Send ``data`` (byte by byte every ``trickle`` s when given) and read until the server closes."""
    from evsim.tls import ClientTls, tls_connect

    stream: trio.abc.Stream = await net.connect(host, port, source="attacker")
    if tls:
        stream = await tls_connect(
            stream, ClientTls.build(TlsProfile(), PKI.csms_trust()), host, verify_time=lambda: TEST_NOW
        )
    reply = bytearray()
    try:
        if trickle is None:
            await stream.send_all(data)
        else:
            for i in range(len(data)):
                await stream.send_all(data[i : i + 1])
                await trio.sleep(trickle)
    except trio.BrokenResourceError:
        pass
    while read:
        try:
            chunk = await stream.receive_some(65536)
        except trio.BrokenResourceError:
            break
        if not chunk:
            break
        reply += chunk
    await trio.aclose_forcefully(stream)
    return bytes(reply)


SMALL = HttpLimits(
    max_head_bytes=2048, max_body_bytes=10_000, head_timeout_s=5, idle_timeout_s=3, body_timeout_s=20
)


@pytest.mark.parametrize(
    ("request_bytes", "status", "reason"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n", 431, "head_too_large"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Many: y\r\n" * 400 + b"\r\n", 431, "head_too_large"),
        (b"PUT /up/a HTTP/1.1\r\nHost: x\r\nContent-Length: 20000\r\n\r\n", 413, "body_too_large"),
        (
            b"PUT /up/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"1000\r\n"
            + b"z" * 4096
            + b"\r\n" * 1,
            0,
            "",
        ),
        (b"NOT HTTP AT ALL\r\n\r\n", 400, "bad_http_request"),
        (
            b"PUT /up/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            400,
            "bad_http_request",
        ),
        (b"DELETE /fw/image.bin HTTP/1.1\r\nHost: x\r\n\r\n", 405, "method_not_allowed"),
    ],
    ids=[
        "huge-header",
        "many-headers",
        "declared-too-large",
        "endless-chunked",
        "garbage",
        "bad-chunk",
        "method",
    ],
)
async def test_hostile_requests_are_bounded_and_refused_with_one_event(
    request_bytes: bytes, status: int, reason: str, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(120):
        async with scene() as s:
            await s.server("logs.evsim.test", tls=False, uploads=True, limits=SMALL)
            if not status:  # endless chunked body: 4 KiB chunks until the limit
                request_bytes += (b"1000\r\n" + b"z" * 4096 + b"\r\n") * 10
                status, reason = 413, "body_too_large"
            reply = await raw_exchange(s.net, "logs.evsim.test", 443, request_bytes)
            assert reply.startswith(f"HTTP/1.1 {status}".encode()), reply[:80]
            [refused] = s.events("http_refused")
            assert (refused.data["reason"], refused.data["status"]) == (reason, status)
            assert refused.data["peer"].startswith("attacker:")


async def test_a_slowloris_client_is_cut_off_at_the_head_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(120):
        async with scene() as s:
            await s.server("logs.evsim.test", tls=False, uploads=True, limits=SMALL)
            start = trio.current_time()
            reply = await raw_exchange(
                s.net, "logs.evsim.test", 443, b"GET /fw/image.bin HTTP/1.1\r\nHost: x\r\n" * 3, trickle=0.5
            )
            assert reply.startswith(b"HTTP/1.1 408")
            assert trio.current_time() - start < 10
            [refused] = s.events("http_refused")
            assert refused.data["reason"] == "head_timeout"


async def test_a_slow_body_is_cut_off(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(120):
        async with scene() as s:
            await s.server("logs.evsim.test", tls=False, uploads=True, limits=SMALL)
            stream = await s.net.connect("logs.evsim.test", 443, source="attacker")
            await stream.send_all(
                b"PUT /up/a HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + b"x" * 100
            )
            start = trio.current_time()
            reply = await stream.receive_some(65536)  # nothing more is sent: the server gives up on the body
            assert (
                reply.startswith(b"HTTP/1.1 408") and trio.current_time() - start <= SMALL.idle_timeout_s + 1
            )
            [refused] = s.events("http_refused")
            assert refused.data["reason"] == "body_timeout"
            await stream.aclose()


# ---------------------------------------------------------------- hostile servers


async def hostile_server(
    net: Network, host: str, reply: Callable[[trio.abc.Stream], Awaitable[None]]
) -> Callable[[], Awaitable[None]]:
    listener = await net.listen(host, 80)

    async def serve() -> None:
        async with listener:
            while True:
                stream = await listener.accept()
                try:
                    await stream.receive_some(65536)  # the request
                    await reply(stream)
                except trio.BrokenResourceError:
                    pass
                finally:
                    await trio.aclose_forcefully(stream)

    return serve


def _send(data: bytes, *, then_wait: float = 0.0) -> Callable[[trio.abc.Stream], Awaitable[None]]:
    async def reply(stream: trio.abc.Stream) -> None:
        await stream.send_all(data)
        if then_wait:
            await trio.sleep(then_wait)

    return reply


async def _endless_chunks(stream: trio.abc.Stream) -> None:
    await stream.send_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    while True:
        await stream.send_all(b"1000\r\n" + b"c" * 4096 + b"\r\n")


async def _slow_head(stream: trio.abc.Stream) -> None:
    for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx":
        await stream.send_all(bytes([byte]))
        await trio.sleep(1)


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (_send(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcEXTRA"), "response_overrun"),
        (_send(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", then_wait=0.1), ""),
        (_send(b"HTTP/1.1 200 OK\r\nContent-Length: 999999999\r\n\r\n"), "body_too_large"),
        (_endless_chunks, "body_too_large"),
        (_slow_head, "head_timeout"),
        (_send(b"HTTP/1.1 200 OK\r\nX: " + b"h" * 5000 + b"\r\n\r\n"), "head_too_large"),
        (_send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"), "truncated"),
        (_send(b"SPAM\r\n\r\n"), "bad_http_response"),
        (_send(b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n"), "http_500"),
    ],
    ids=[
        "overrun",
        "honest",
        "declared-too-large",
        "endless-chunked",
        "slow-head",
        "huge-header",
        "truncated",
        "garbage",
        "500",
    ],
)
async def test_hostile_servers_are_bounded_and_refused_with_one_event(
    reply: Callable[[trio.abc.Stream], Awaitable[None]], reason: str, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(120):
        async with scene() as s:
            s.nursery.start_soon(await hostile_server(s.net, "evil.evsim.test", reply))
            svc = Service("firmware", (Endpoint("evil", "http://evil.evsim.test/fw"),))
            limits = HttpLimits(max_head_bytes=2048, max_body_bytes=100_000, head_timeout_s=5)
            if not reason:
                result = await download(
                    svc, "/x", s.net, clock=s.clock, recorder=s.recorder, source="CS1", limits=limits
                )
                assert result.body == b"abc"
                return
            with pytest.raises(TransferFailed) as caught:
                await download(
                    svc, "/x", s.net, clock=s.clock, recorder=s.recorder, source="CS1", limits=limits
                )
            assert caught.value.reason == reason
            [failed] = s.events("transfer_attempt_failed", "CS1")
            assert failed.data["reason"] == reason


async def test_a_206_for_another_range_is_refused_and_the_bytes_dropped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        async with scene() as s:
            s.nursery.start_soon(
                await hostile_server(
                    s.net,
                    "evil.evsim.test",
                    _send(
                        b"HTTP/1.1 206 Partial\r\nContent-Range: bytes 0-2/10\r\nContent-Length: 3\r\n\r\nabc"
                    ),
                )
            )
            svc = Service("firmware", (Endpoint("evil", "http://evil.evsim.test/fw"),))
            state = DownloadState(bytearray(b"12345"), 10, None)
            with pytest.raises(TransferFailed) as caught:
                await download(svc, "/x", s.net, clock=s.clock, state=state, source="CS1")
            assert caught.value.reason == "bad_content_range" and not state.data


async def test_http_connection_keeps_a_connection_alive_for_several_requests(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        async with scene() as s:
            await s.server("fw-a.evsim.test", tls=False)
            stream = await s.net.connect("fw-a.evsim.test", 443, source="CS1")
            http = HttpConnection(stream, "client")
            for _ in range(2):
                await http.send_request("HEAD", "/fw/image.bin", host="fw-a.evsim.test", close=False)
                head = await http.read_response()
                assert head.status == 200 and head.header("content-length") == str(len(IMAGE))
                assert await http.read_body(lambda _: None) == 0
                http.next_cycle()
            await stream.aclose()


# ---------------------------------------------------------------- loopback TCP


@pytest.mark.slow
@pytest.mark.loopback
async def test_download_and_upload_over_loopback_tcp() -> None:
    with trio.fail_after(60):
        net = TcpNetwork(resolve={"localhost": "127.0.0.1"})
        async with scene(net) as s:
            ident = Identity.from_cert_key(PKI.localhost)
            server = await s.server(
                "localhost", tls=ServerTls.build(TlsProfile(), ident), uploads=True, port=0
            )
            assert server.address is not None
            port = server.address[1]
            trust = TrustStore("CSMSRootCertificate", (PKI.root.cert,))
            svc = Service("files", (Endpoint("lo", f"https://localhost:{port}/fw", trust=trust),))
            result = await download(svc, "/image.bin", net, clock=s.clock)
            assert result.body == IMAGE and result.tls is not None
            up = await upload(
                svc,
                "/up/CS1.log",
                b"log line\n" * 1000,
                net,
                clock=s.clock,
                method="POST",
                filename="CS1.log",
            )
            assert up.status == 201 and server.uploaded("/fw/up/CS1.log") is not None


def test_the_knobs_vs_tools_page_covers_every_knob_of_the_tls_model() -> None:
    from pathlib import Path

    from evsim.tls.knobs import KNOB_STATES

    page = (Path(__file__).resolve().parent.parent / "docs" / "tls-knobs-vs-tools.md").read_text(
        encoding="utf-8"
    )
    rows = {line.split("|")[1].strip().strip("`") for line in page.splitlines() if line.startswith("| `")}
    assert set(KNOB_STATES) <= rows, sorted(set(KNOB_STATES) - rows)


async def test_a_revoked_mirror_is_refused_by_the_crl_and_the_next_one_serves(
    autojump_clock: trio.testing.MockClock,
) -> None:
    from cryptography import x509

    from evsim.pki.revocation import RevocationList
    from evsim.tls import RevocationPolicy

    revocations = RevocationList(PKI.root)
    revocations.revoke(
        server_cert("fw-a.evsim.test").cert, at=TEST_NOW, reason=x509.ReasonFlags.key_compromise
    )
    crl = revocations.build_crl(now=TEST_NOW, next_update_s=86400)
    trust = attrs.evolve(PKI.csms_trust(), revocation=RevocationPolicy(crl="leaf", crls=(crl,)))
    with trio.fail_after(60):
        async with scene() as s:
            await s.server("fw-a.evsim.test")
            await s.server("fw-b.evsim.test")
            svc = Service(
                "firmware",
                (
                    mirror("a", "fw-a.evsim.test", 0, trust=trust),
                    mirror("b", "fw-b.evsim.test", 1, trust=trust),
                ),
                backoff=FAST,
            )
            result = await download(
                svc, "/image.bin", s.net, clock=s.clock, recorder=s.recorder, source="CS1"
            )
            assert result.endpoint == "b" and result.body == IMAGE
            [refused] = s.events("handshake_failed", "CS1")
            assert refused.data["reason"] == "cert_invalid:revoked"
            assert refused.data["security_event"] == "InvalidCsmsCertificate"
