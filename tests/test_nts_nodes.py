"""NTS nodes on the in-memory network (and once on loopback): sync, cookies, NTSN re-keying, failover,
per-source root-CA groups, the bootstrap policy, and hostile NTS-KE peers."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Literal

import attrs
import pytest
import trio
import trio.testing

from evsim.clock import SimClock
from evsim.errors import TransportError
from evsim.net import LinkPolicy, TcpNetwork, VirtualNetwork
from evsim.net.base import Network
from evsim.nodes.nts import (
    KeFailed,
    NtsClient,
    NtsServer,
    NtsServerConfig,
    NtsSource,
    nts_ke,
    ntske_profile,
)
from evsim.nts.records import (
    KeRequest,
    Record,
    RecordType,
    encode_records,
)
from evsim.pki import CertificateAuthority
from evsim.recorder import Recorder
from evsim.tls import ClientTls, Identity, ServerTls, TlsProfile, TrustStore, tls_accept, tls_connect
from tests.pki_fixtures import TEST_NOW

YEAR = 365 * 86400.0
TimeCheck = Literal["enforce", "off", "skip_until_clock_synced"]  # TrustStore.time_check


@attrs.frozen
class NtsPki:
    root_a: CertificateAuthority
    root_b: CertificateAuthority
    certs: dict[str, Identity]

    def trust(self, root: str = "a", time_check: TimeCheck = "enforce") -> TrustStore:
        ca = self.root_a if root == "a" else self.root_b
        return TrustStore(f"nts-{root}", (ca.cert,), time_check=time_check)


@functools.lru_cache(maxsize=2)
def nts_pki(now: dt.datetime = TEST_NOW) -> NtsPki:
    root_a = CertificateAuthority.create_root("NTS Root A", now=now)
    root_b = CertificateAuthority.create_root("NTS Root B", now=now)
    certs = {
        "nts1": Identity.from_cert_key(root_a.issue_server("nts1", now=now)),
        "nts2": Identity.from_cert_key(root_b.issue_server("nts2", now=now)),
        "nts3": Identity.from_cert_key(root_a.issue_server("nts3", now=now)),
        "localhost": Identity.from_cert_key(root_a.issue_server("localhost", ips=("127.0.0.1",), now=now)),
    }
    return NtsPki(root_a, root_b, certs)


def source(name: str, *, root: str = "a", priority: int = 0, time_check: TimeCheck = "enforce") -> NtsSource:
    tls = ClientTls.build(ntske_profile(), nts_pki().trust(root, time_check))
    return NtsSource(name, name, tls, priority=priority)


@attrs.define
class Env:
    clock: SimClock
    recorder: Recorder
    net: VirtualNetwork
    nursery: trio.Nursery
    servers: dict[str, tuple[NtsServer, trio.CancelScope]] = attrs.field(factory=dict)

    async def server(self, name: str, **changes: object) -> NtsServer:
        config = NtsServerConfig(name, name, nts_pki().certs[name], **changes)  # type: ignore[arg-type]
        node = NtsServer(config, self.net, self.clock, self.recorder)
        scope = trio.CancelScope()

        async def run(task_status: trio.TaskStatus[None]) -> None:
            with scope:
                await node.run(task_status=task_status)

        await self.nursery.start(run)
        self.servers[name] = (node, scope)
        return node

    async def client(self, *sources: NtsSource, **kwargs: object) -> NtsClient:
        node = NtsClient("st-1", sources, self.net, self.clock, self.recorder, host="st-1", **kwargs)  # type: ignore[arg-type]
        await self.nursery.start(node.run)
        return node

    def kinds(self, node: str | None = None) -> list[str]:
        return [e.kind for e in self.recorder.events if node is None or e.node == node]

    def events(self, kind: str) -> list[dict[str, object]]:
        return [e.data for e in self.recorder.events if e.kind == kind]


@pytest.fixture
async def env(autojump_clock: trio.testing.MockClock) -> AsyncIterator[Env]:
    clock = SimClock.start(TEST_NOW)
    async with trio.open_nursery() as nursery:
        yield Env(clock, Recorder(clock, echo=False), VirtualNetwork(), nursery)
        nursery.cancel_scope.cancel()


async def test_client_syncs_and_keeps_eight_cookies(autojump_clock: trio.testing.MockClock, env: Env) -> None:
    server = await env.server("nts1", clock_error_s=2.5)
    env.net.set_link_policy("st-1", "nts1", LinkPolicy(latency_s=0.05))
    with trio.fail_after(600):
        client = await env.client(source("nts1"), poll_s=16.0)
        await client.wait_synced()
        await trio.sleep(16 * 20)
    stats = client.statistics()
    assert stats.synced and stats.source == "nts1" and stats.samples >= 20
    assert client.offset == pytest.approx(2.5, abs=1e-3)
    assert client.delay == pytest.approx(0.1, abs=1e-3)
    assert stats.ke_ok == 1 and server.statistics().ke_ok == 1  # cookies replenished: no second NTS-KE
    assert server.statistics().ntp_answered == stats.samples and stats.ntp_rejected == {}
    assert env.kinds("st-1")[:2] == ["nts_ke_ok", "nts_synced"]


async def test_master_key_rotation_leads_to_ntsn_and_rekeying(
    autojump_clock: trio.testing.MockClock, env: Env
) -> None:
    server = await env.server("nts1", rotate_s=None, keep_keys=2)
    with trio.fail_after(600):
        client = await env.client(source("nts1"), poll_s=10.0)
        await client.wait_synced()
        server.rotate_keys()  # the old key is still kept: cookies keep working
        await trio.sleep(25)
        assert client.statistics().naks == 0
        server.rotate_keys()
        server.rotate_keys()  # the cookies' keys are gone now
        await trio.sleep(25)
    stats = client.statistics()
    assert stats.naks == 1 and stats.ke_ok == 2 and stats.failovers == 0
    assert server.statistics().ntp_naks == 1
    assert env.events("nts_cookies_refused") == [{"source": "nts1", "code": "NTSN", "authenticated": False}]
    assert env.kinds("st-1")[-1] == "nts_sample"


async def test_periodic_rotation(autojump_clock: trio.testing.MockClock, env: Env) -> None:
    server = await env.server("nts1", rotate_s=100.0, keep_keys=3)
    with trio.fail_after(1100):
        client = await env.client(source("nts1"), poll_s=16.0)
        await trio.sleep(1050)
    assert server.statistics().key_rotations == 10
    # a cookie lives at least (keep - 1) * rotate_s: polls every 16 s replenish them, no NTSN
    assert client.statistics().naks == 0 and client.statistics().ke_ok == 1


async def test_failover_by_priority_and_back(autojump_clock: trio.testing.MockClock, env: Env) -> None:
    await env.server("nts1")
    await env.server("nts2")
    with trio.fail_after(2000):
        client = await env.client(
            source("nts2", root="b", priority=1), source("nts1", priority=0), poll_s=8.0, revert_s=60.0
        )
        await client.wait_synced()
        assert client.source == "nts1"
        env.net.set_host_down("nts1")
        await trio.sleep(60)
        assert client.source == "nts2"
        env.net.set_host_down("nts1", False)
        await trio.sleep(120)
        assert client.source == "nts1"
    failovers = env.events("nts_failover")
    assert [(f["source"], f["to"], f["reason"]) for f in failovers] == [
        ("nts1", "nts2", "no_response"),
        ("nts2", "nts1", "higher_priority"),
    ]


async def test_datagram_loss_is_survived(autojump_clock: trio.testing.MockClock, env: Env) -> None:
    await env.server("nts1")
    env.net.set_link_policy("st-1", "nts1", LinkPolicy(loss=0.3))
    with trio.fail_after(5000):
        client = await env.client(source("nts1"), poll_s=8.0, max_unanswered=20)
        await trio.sleep(4000)
    stats = client.statistics()
    assert stats.unanswered > 50 and stats.samples > 150 and stats.failovers == 0
    assert stats.ke_ok <= 3  # lost answers cost cookies; an empty jar re-keys


async def test_each_source_has_its_own_root_group(autojump_clock: trio.testing.MockClock, env: Env) -> None:
    await env.server("nts2")  # certificate from root B
    await env.server("nts3")  # certificate from root A
    with trio.fail_after(600):
        client = await env.client(source("nts2", root="a", priority=0), source("nts3", root="a", priority=1))
        await client.wait_synced()
    assert client.source == "nts3"
    failed = env.events("nts_ke_failed")
    assert failed[0]["source"] == "nts2" and failed[0]["reason"] == "tls:cert_invalid:unknown_ca"
    refused = env.events("ntske_refused")
    assert len(refused) == 1 and str(refused[0]["reason"]).startswith("tls:")


@pytest.mark.parametrize(
    ("time_check", "synced", "reason"),
    [
        ("enforce", False, "tls:cert_invalid:not_yet_valid"),
        ("skip_until_clock_synced", True, None),
        ("off", True, None),
    ],
)
async def test_bootstrap_policy_with_a_dead_clock(
    autojump_clock: trio.testing.MockClock, env: Env, time_check: TimeCheck, synced: bool, reason: str | None
) -> None:
    await env.server("nts1")
    dead = lambda: env.clock.utcnow().timestamp() - 5 * YEAR  # noqa: E731 - a clock reset to five years ago
    with trio.fail_after(600):
        client = await env.client(source("nts1", time_check=time_check), wall=dead, poll_s=16.0)
        await trio.sleep(100)
    assert client.synced is synced
    if synced:
        assert client.offset == pytest.approx(5 * YEAR, abs=1e-3)
        assert client.corrected_time() == pytest.approx(env.clock.utcnow().timestamp(), abs=1e-3)
    else:
        assert {e["reason"] for e in env.events("nts_ke_failed")} == {reason}


async def test_skip_until_synced_checks_validity_after_the_first_sample(
    autojump_clock: trio.testing.MockClock, env: Env
) -> None:
    """Synced, the client checks certificates at the corrected time: a certificate that expired meanwhile is
    refused on the next NTS-KE."""
    server = await env.server("nts1", rotate_s=None, keep_keys=1)
    dead = lambda: env.clock.utcnow().timestamp() - 5 * YEAR  # noqa: E731
    with trio.fail_after(400 * 86400):
        client = await env.client(
            source("nts1", time_check="skip_until_clock_synced"), wall=dead, poll_s=21600.0, retry_s=3600.0
        )
        await client.wait_synced()
        await trio.sleep(398 * 86400)  # the server certificate (397 days) has expired
        server.rotate_keys()  # NTSN: the client must run NTS-KE again
        await trio.sleep(7 * 3600)
    reasons = [e["reason"] for e in env.events("nts_ke_failed")]
    assert reasons and set(reasons) == {"tls:cert_invalid:expired"}


# ------------------------------------------------------------------------------ hostile NTS-KE servers


async def hostile_server(
    env: Env, behave: Callable[[trio.abc.Stream], Awaitable[None]], *, profile: TlsProfile | None = None
) -> None:
    listener = await env.net.listen("evil", 4460)
    server_tls = ServerTls.build(profile or ntske_profile(), nts_pki().certs["nts1"])

    async def serve() -> None:
        while True:
            transport = await listener.accept()
            try:
                tls = await tls_accept(transport, server_tls)
            except Exception:  # the client under test refused the handshake
                continue
            await behave(tls)

    env.nursery.start_soon(serve)


async def read_request(tls: trio.abc.Stream) -> None:
    data = b""
    while not data.endswith(b"\x80\x00\x00\x00"):
        data += await tls.receive_some(4096)


def evil_source() -> NtsSource:
    tls = ClientTls.build(ntske_profile(), nts_pki().trust("a"))
    return NtsSource("evil", "evil", tls, server_hostname="nts1")


async def send_then_hang(tls: trio.abc.Stream, data: bytes) -> None:
    await read_request(tls)
    await tls.send_all(data)
    await trio.sleep_forever()


async def slowloris(tls: trio.abc.Stream) -> None:
    await read_request(tls)
    for byte in KeRequest().encode():
        await tls.send_all(bytes([byte]))
        await trio.sleep(1)


async def send_then_close(tls: trio.abc.Stream, data: bytes) -> None:
    await read_request(tls)
    await tls.send_all(data)
    await tls.aclose()


GOOD_HEAD = encode_records(
    [
        Record(RecordType.NEXT_PROTOCOL, b"\0\0", critical=True),
        Record(RecordType.AEAD_ALGORITHM, b"\0\x0f"),
        Record(RecordType.NEW_COOKIE, b"c" * 100),
    ]
)


@pytest.mark.parametrize(
    ("behave", "reason"),
    [
        (functools.partial(send_then_hang, data=b"\xff" * 3000), "record_too_large"),
        (functools.partial(send_then_hang, data=struct.pack("!HH", 5, 60000)), "record_too_large"),
        (functools.partial(send_then_hang, data=(Record(3, b"x" * 1000).encode() * 17)), "message_too_large"),
        (functools.partial(send_then_close, data=GOOD_HEAD), "no_end_of_message"),
        (functools.partial(send_then_close, data=b""), "no_end_of_message"),
        (
            functools.partial(send_then_close, data=GOOD_HEAD + Record(0x1234, critical=True).encode()),
            "no_end_of_message",
        ),
        (
            functools.partial(
                send_then_hang,
                data=GOOD_HEAD + encode_records([Record(0x1234, critical=True), Record(0, critical=True)]),
            ),
            "unrecognized_critical_record",
        ),
        (functools.partial(send_then_hang, data=GOOD_HEAD + b"\x00\x00\x00\x00"), "bad_end_of_message"),
        (functools.partial(send_then_hang, data=GOOD_HEAD), "timeout"),
        (slowloris, "timeout"),
    ],
    ids=[
        "garbage",
        "huge-length",
        "endless",
        "no-eom",
        "nothing",
        "no-eom-after-critical",
        "unknown-critical",
        "bad-eom",
        "stall",
        "slowloris",
    ],
)
async def test_client_refuses_hostile_ke_servers(
    autojump_clock: trio.testing.MockClock,
    env: Env,
    behave: Callable[[trio.abc.Stream], Awaitable[None]],
    reason: str,
) -> None:
    await hostile_server(env, behave)
    with trio.fail_after(60):
        start = trio.current_time()
        with pytest.raises(KeFailed) as info:
            await nts_ke(env.net, evil_source(), host="st-1", timeout_s=10.0, verify_time=env.clock.utcnow)
    assert info.value.reason == reason
    assert trio.current_time() - start <= 10.0 + 1e-9


async def test_client_refuses_tls12_and_missing_alpn(
    autojump_clock: trio.testing.MockClock, env: Env
) -> None:
    await hostile_server(env, read_request, profile=TlsProfile(versions=("1.2",)))
    with trio.fail_after(60), pytest.raises(KeFailed) as info:
        await nts_ke(env.net, evil_source(), host="st-1", verify_time=env.clock.utcnow)
    assert info.value.reason.startswith("tls:")
    env2 = Env(env.clock, env.recorder, VirtualNetwork(), env.nursery)
    await hostile_server(env2, read_request, profile=TlsProfile(versions=("1.3",)))
    with trio.fail_after(60), pytest.raises(KeFailed) as info:
        await nts_ke(env2.net, evil_source(), host="st-1", verify_time=env.clock.utcnow)
    assert info.value.reason == "tls:alpn_refused"


async def test_client_fails_over_from_a_hostile_server(
    autojump_clock: trio.testing.MockClock, env: Env
) -> None:
    await hostile_server(env, functools.partial(send_then_hang, data=b"\xff" * 10))
    await env.server("nts3")
    evil = attrs.evolve(evil_source(), priority=0)
    with trio.fail_after(600):
        client = await env.client(evil, source("nts3", priority=1), ke_timeout_s=5.0)
        await client.wait_synced()
    assert client.source == "nts3"
    assert env.events("nts_ke_failed")[0]["reason"] == "record_too_large"


# ------------------------------------------------------------------------------ hostile NTS-KE clients


async def ke_client(env: Env, send: bytes) -> bytes:
    transport = await env.net.connect("nts1", 4460, source="mallory")
    client_tls = ClientTls.build(ntske_profile(), nts_pki().trust("a"))
    tls = await tls_connect(transport, client_tls, "nts1", verify_time=env.clock.utcnow)
    await tls.send_all(send)
    got = b""
    with trio.move_on_after(30), contextlib.suppress(TransportError):
        while chunk := await tls.receive_some(4096):
            got += chunk
    await trio.aclose_forcefully(tls)
    return got


ERROR_BAD_REQUEST = encode_records([Record(2, b"\0\x01", critical=True), Record(0, critical=True)])
ERROR_CRITICAL = encode_records([Record(2, b"\0\x00", critical=True), Record(0, critical=True)])


@pytest.mark.parametrize(
    ("send", "answer", "reason"),
    [
        (b"\xff" * 3000, ERROR_BAD_REQUEST, "record_too_large"),
        (struct.pack("!HH", 1, 65535), ERROR_BAD_REQUEST, "record_too_large"),
        (Record(3, b"x" * 1000).encode() * 17, ERROR_BAD_REQUEST, "message_too_large"),
        (KeRequest().encode()[:-4], b"", "timeout"),
        (
            encode_records([Record(0x4321, critical=True), *KeRequest().records()]),
            ERROR_CRITICAL,
            "unrecognized_critical_record",
        ),
        (
            encode_records([Record(1, b"\0\0", critical=True), Record(0, critical=True)]),
            ERROR_BAD_REQUEST,
            "no_aead_record",
        ),
        (KeRequest(aead_algorithms=(99,)).encode(), b"", "no_common_aead"),
        (KeRequest(protocols=(7,)).encode(), b"", "no_common_protocol"),
    ],
)
async def test_server_refuses_hostile_ke_clients(
    autojump_clock: trio.testing.MockClock, env: Env, send: bytes, answer: bytes, reason: str
) -> None:
    server = await env.server("nts1", ke_timeout_s=5.0)
    with trio.fail_after(60):
        got = await ke_client(env, send)
        if answer:
            assert got == answer
        elif reason.startswith("no_common"):
            assert got.endswith(b"\x80\x00\x00\x00") and b"\x00\x05" not in got[:4]
        await trio.sleep(10)
    refused = env.events("ntske_refused")
    assert len(refused) == 1 and refused[0]["reason"] == reason and refused[0]["peer"]
    assert server.statistics().ke_refused == {reason: 1}
    # the server still serves an honest client
    result = await nts_ke(env.net, source("nts1"), host="st-1", verify_time=env.clock.utcnow)
    assert len(result.cookies) == 8 and server.statistics().ke_ok == 1


async def test_server_slowloris_and_garbage_transport(
    autojump_clock: trio.testing.MockClock, env: Env
) -> None:
    server = await env.server("nts1", ke_timeout_s=5.0)

    async def slow() -> None:
        transport = await env.net.connect("nts1", 4460, source="slow")
        tls = await tls_connect(
            transport,
            ClientTls.build(ntske_profile(), nts_pki().trust("a")),
            "nts1",
            verify_time=env.clock.utcnow,
        )
        with contextlib.suppress(TransportError):
            for byte in KeRequest().encode():
                await tls.send_all(bytes([byte]))
                await trio.sleep(1)

    async def garbage() -> None:
        transport = await env.net.connect("nts1", 4460, source="garbage")
        await transport.send_all(b"GET / HTTP/1.1\r\n\r\n" * 10)
        await trio.sleep(30)

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow)
            nursery.start_soon(garbage)
            await trio.sleep(40)
            nursery.cancel_scope.cancel()
    reasons = sorted(str(e["reason"]) for e in env.events("ntske_refused"))
    assert len(reasons) == 2 and "timeout" in reasons and any(r.startswith("tls:") for r in reasons)
    assert server.statistics().ke_ok == 0


async def test_server_refuses_tls12_and_no_alpn(autojump_clock: trio.testing.MockClock, env: Env) -> None:
    await env.server("nts1")

    async def attempt(profile: TlsProfile) -> bytes:
        transport = await env.net.connect("nts1", 4460, source="old")
        client_tls = ClientTls.build(profile, nts_pki().trust("a"))
        try:
            tls = await tls_connect(transport, client_tls, "nts1", verify_time=env.clock.utcnow)
            await tls.send_all(KeRequest().encode())
            return await tls.receive_some(100)
        except TransportError:
            return b"refused"

    with trio.fail_after(60):
        assert await attempt(TlsProfile(versions=("1.2",))) == b"refused"
        assert await attempt(TlsProfile(versions=("1.3",))) in (b"", b"refused")  # closed, no answer
        await trio.sleep(1)
    reasons = [e["reason"] for e in env.events("ntske_refused")]
    assert len(reasons) == 2 and reasons[1] == "tls:alpn_refused" and str(reasons[0]).startswith("tls:")


async def test_server_drops_garbage_datagrams(autojump_clock: trio.testing.MockClock, env: Env) -> None:
    server = await env.server("nts1")
    sock = await env.net.bind_datagram("mallory", 0)
    with trio.fail_after(60):
        for blob in (b"", b"x" * 47, b"\x23" + b"\0" * 47, b"\x1b" + b"\0" * 47 + b"\0\0\0\x05"):
            await sock.send_to(blob, ("nts1", 123))
        await trio.sleep(1)
        client = await env.client(source("nts1"))
        await client.wait_synced()
    dropped = server.statistics().ntp_dropped
    assert sum(dropped.values()) == 4 and dropped["truncated"] == 2
    assert len(env.events("ntp_dropped")) == 3  # one event per peer and reason per second


async def test_loopback_sync() -> None:
    """Real sockets: NTS-KE over loopback TCP and NTP over loopback UDP."""
    now = dt.datetime.now(tz=dt.UTC)
    pki = nts_pki(now.replace(microsecond=0))
    clock = SimClock.start()
    recorder = Recorder(clock, echo=False)
    net: Network = TcpNetwork()
    config = NtsServerConfig("nts", "127.0.0.1", pki.certs["localhost"], ke_port=0, ntp_port=0)
    server = NtsServer(config, net, clock, recorder)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            assert server.ke_address is not None
            tls = ClientTls.build(ntske_profile(), pki.trust("a"))
            src = NtsSource("nts", "127.0.0.1", tls, port=server.ke_address[1])
            client = NtsClient("st", [src], net, clock, recorder, poll_s=0.2)
            await nursery.start(client.run)
            await client.wait_synced()
            nursery.cancel_scope.cancel()
    assert abs(client.offset or 1) < 0.05 and 0 <= (client.delay or -1) < 0.05
    assert [e.kind for e in recorder.events if e.node == "st"][:2] == ["nts_ke_ok", "nts_synced"]
