"""Hostile peers against the listeners of the CSMS and the Local Controller.

Connects reset before accept, accept(2) out of descriptors, one address holding sockets it never uses,
connections that upgrade but never boot, slowloris on the TLS and HTTP stages, a port already taken. For each:
the node keeps serving, a sentinel session is undisturbed, and one event names the reason (and the peer).
"""

from __future__ import annotations

import errno
import json
import os
import resource
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

from evsim import DEV_PASSWORD
from evsim.cli import main
from evsim.clock import SimClock
from evsim.errors import ConfigError, TransportError
from evsim.net.tcp import TcpNetwork
from evsim.net.virtual import VirtualListener, VirtualNetwork
from evsim.nodes.acceptor import ACCEPT_RETRY_INITIAL_S, ACCEPT_RETRY_MAX_S, FD_RESERVE, Acceptor
from evsim.nodes.csms import Csms, CsmsConfig
from evsim.nodes.security import load_anchors, station_client_tls
from evsim.recorder import Recorder
from evsim.tls import ClientTls, ServerTls, TlsProfile, tls_connect
from evsim.ws import WebSocket, ws_client
from evsim.ws.auth import basic_auth_header
from evsim.ws.paths import station_path
from tests.e2e_harness import PASSWORD, Harness, harness
from tests.pki_fixtures import CSMS_HOST, TEST_NOW, make_test_pki
from tests.test_controller import LC_HOST, start_controller

BOOT: dict[str, object] = {"reason": "PowerUp", "chargingStation": {"model": "M", "vendorName": "V"}}


# ---------------------------------------------------------------------------- helpers


@contextmanager
def accept_errors(
    monkeypatch: pytest.MonkeyPatch, host: str, errors: list[OSError]
) -> Iterator[list[OSError]]:
    """Make the next ``accept`` calls of the virtual listeners on ``host`` raise ``errors``, in order."""
    original = VirtualListener.accept

    async def accept(self: VirtualListener) -> trio.abc.Stream:
        if self.address[0] == host and errors:
            await trio.lowlevel.checkpoint()
            raise errors.pop(0)
        return await original(self)

    monkeypatch.setattr(VirtualListener, "accept", accept)
    yield errors


async def raw_ws(
    net: object,
    host: str,
    port: int,
    station_id: str,
    *,
    source: str | None = None,
    tls_host: str = CSMS_HOST,
) -> WebSocket:
    """A bare OCPP client link: TCP or in-memory connect, TLS, WebSocket upgrade with Basic auth."""
    pki = make_test_pki(TEST_NOW)
    if isinstance(net, TcpNetwork):
        stream: trio.abc.Stream = await net.connect(host, port)
    else:
        stream = await net.connect(host, port, source=source or station_id)  # type: ignore[attr-defined]
    stream = await tls_connect(
        stream, ClientTls.build(TlsProfile(), pki.csms_trust()), tls_host, verify_time=lambda: TEST_NOW
    )
    return await ws_client(
        stream,
        host=tls_host,
        path=station_path("/ocpp", station_id),
        subprotocols=["ocpp2.0.1"],
        headers=[basic_auth_header(station_id, PASSWORD)],
    )


async def ocpp_call(ws: WebSocket, mid: str, action: str, payload: Mapping[str, object]) -> dict[str, object]:
    await ws.send_text(json.dumps([2, mid, action, payload]))
    answer = json.loads(await ws.receive_text())
    assert answer[:2] == [3, mid], answer
    result: dict[str, object] = answer[2]
    return result


def rst_connect(port: int, count: int) -> None:
    """``count`` loopback connects, each reset at once (SO_LINGER 0), before the server can accept them."""
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.connect(("127.0.0.1", port))
        s.close()


def tcp_csms(recorder: Recorder, clock: SimClock, **config: object) -> Csms:
    pki = make_test_pki(TEST_NOW)
    return Csms(
        CsmsConfig(host="127.0.0.1", port=0, default_password=PASSWORD, **config),  # type: ignore[arg-type]
        network=TcpNetwork(),
        server_tls=ServerTls.build(TlsProfile(), pki.localhost_identity()),
        clock=clock,
        recorder=recorder,
    )


async def start_csms(h: Harness, **config: object) -> Csms:
    csms = Csms(
        CsmsConfig(host=CSMS_HOST, port=443, heartbeat_interval=60, default_password=PASSWORD, **config),  # type: ignore[arg-type]
        network=h.net,
        server_tls=ServerTls.build(TlsProfile(), h.pki.server_identity()),
        clock=h.clock,
        recorder=h.recorder,
    )
    await h.nursery.start(csms.run)
    h.csms_nodes.append(csms)
    return csms


async def closed_by_peer(stream: trio.abc.Stream) -> bool:
    """True when the other end closed (EOF or reset) rather than sending something."""
    try:
        return await stream.receive_some(1024) == b""
    except (TransportError, trio.BrokenResourceError):
        return True


# ---------------------------------------------------------------------------- resets before accept


@pytest.mark.loopback
async def test_connects_reset_before_accept_do_not_kill_the_csms() -> None:
    """Fails on the old code: ``getpeername`` raised ENOTCONN out of the accept loop and ended ``Csms.run``
    with every session on it."""
    clock = SimClock.start(TEST_NOW)
    recorder = Recorder(clock, echo=False)
    csms = tcp_csms(recorder, clock)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            _, port = await nursery.start(csms.run)
            sentinel = await raw_ws(csms.network, "127.0.0.1", port, "SENTINEL", tls_host="localhost")
            assert (await ocpp_call(sentinel, "b1", "BootNotification", BOOT))["status"] == "Accepted"
            for _ in range(3):
                rst_connect(port, 5)  # no checkpoint: all five are reset before the CSMS runs again
                await trio.sleep(0.05)
                assert "currentTime" in await ocpp_call(sentinel, "h", "Heartbeat", {})
            # a new station still gets in
            late = await raw_ws(csms.network, "127.0.0.1", port, "LATE", tls_host="localhost")
            assert (await ocpp_call(late, "b2", "BootNotification", BOOT))["status"] == "Accepted"
            await late.aclose()
            await sentinel.aclose()
            nursery.cancel_scope.cancel()
    failures = csms.acceptor.statistics().accept_failures
    assert failures >= 1  # the kernel may hand over some resets as ordinary connections that end at once
    assert len(recorder.of_kind("accept_failed")) == failures
    assert all(e.data["reason"] == "connection lost before accept" for e in recorder.of_kind("accept_failed"))


async def test_per_connection_accept_errors_are_skipped(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any other ``OSError`` from accept: counted, one event each, the loop goes on (after a short wait when the
    error may not be one connection's, so a failing listener does not spin). Fails on the old code (only
    transport errors were caught)."""
    errors = [OSError(errno.ENOTCONN, "not connected")] * 3 + [OSError(errno.EINVAL, "invalid")] * 2
    async with harness() as h:
        start = trio.current_time()
        with accept_errors(monkeypatch, CSMS_HOST, errors):
            csms = await start_csms(h)
            st = h.start_station("ST-1", sessions=0)
            with trio.fail_after(600):
                await st.wait_online()
    assert trio.current_time() - start >= 2 * ACCEPT_RETRY_INITIAL_S
    assert csms.acceptor.statistics().accept_failures == 5
    assert [(e.data["reason"], e.data["detail"]) for e in h.events("accept_failed")] == [
        ("connection lost before accept", "[Errno 107] not connected")
    ] * 3 + [("accept failed", "[Errno 22] invalid")] * 2


# ---------------------------------------------------------------------------- out of descriptors


async def test_accept_out_of_descriptors_backs_off_and_keeps_serving(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EMFILE from accept: the loop backs off (doubling to a cap), the booted sentinel keeps heartbeating, the
    station waiting in the backlog gets in afterwards; one event for the episode. Fails on the old code (the
    OSError ended ``Csms.run``)."""
    async with harness() as h:
        csms = await start_csms(h)
        sentinel = h.start_station("SENTINEL", sessions=0)
        with trio.fail_after(600):
            await sentinel.wait_online()
        rec = csms.stations["SENTINEL"]
        retries = 100
        with accept_errors(monkeypatch, CSMS_HOST, [OSError(errno.EMFILE, "Too many open files")] * retries):
            h.start_station("ST-2", sessions=0)  # taken by the accept already waiting; the next ones fail
            await trio.sleep(1)
            heartbeats = rec.heartbeats
            started = trio.current_time()
            late = h.start_station("ST-3", sessions=0)
            with trio.fail_after(600):
                await late.wait_online()
        episode = trio.current_time() - started
        assert rec.connected
    stats = csms.acceptor.statistics()
    assert (stats.pauses, stats.retries) == (1, retries)
    paused = h.events("accept_paused")
    assert len(paused) == 1
    assert paused[0].data["errno"] == "EMFILE"
    expected = sum(min(ACCEPT_RETRY_INITIAL_S * 2**i, ACCEPT_RETRY_MAX_S) for i in range(retries))
    assert episode >= expected - 1
    assert rec.heartbeats > heartbeats  # the established session carried on meanwhile


async def test_controller_accept_loop_survives_resets_and_descriptor_exhaustion(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Local Controller shares the accept loop: ENOTCONN and EMFILE from accept do not end
    ``LocalController.run``. Fails on the old code."""
    errors: list[OSError] = [
        OSError(errno.ENOTCONN, "not connected"),
        OSError(errno.EMFILE, "Too many open files"),
    ]
    async with harness() as h:
        await h.start_csms()
        with accept_errors(monkeypatch, LC_HOST, errors * 3):
            lc = await start_controller(h)
            st = h.start_station("ST-1", host=LC_HOST, sessions=0)
            with trio.fail_after(600):
                await st.wait_online()
    stats = lc.acceptor.statistics()
    assert stats.accept_failures == 3
    # one episode: it lasts until an accept succeeds (a lost connection in between does not end it)
    assert (stats.pauses, stats.retries) == (1, 3)
    assert len([e for e in h.events("accept_paused") if e.node == "LC-1"]) == 1


@pytest.mark.loopback
@pytest.mark.slow
async def test_csms_under_a_low_open_file_limit_refuses_cleanly(tmp_path: Path) -> None:
    """``evsim csms`` with RLIMIT_NOFILE 128 and a client opening 200 idle connections: the CSMS refuses the
    surplus (the cap is derived from the limit) instead of dying on EMFILE, and the station that booted before
    still gets its Heartbeat answered."""
    pki = tmp_path / "pki"
    assert main(["certs", "init", "--dir", str(pki)]) == 0

    proc = _spawn_csms_with_open_file_limit(pki, 128)
    try:
        assert proc.stdout is not None
        line = await trio.to_thread.run_sync(proc.stdout.readline)
        assert b"listening on wss://127.0.0.1:" in line, line
        port = int(line.split(b"127.0.0.1:")[1].split(b"/")[0])
        client_tls = station_client_tls(load_anchors(str(pki / "ca.crt")))
        net = TcpNetwork()
        with trio.fail_after(30):
            sentinel = await _dev_ws(net, port, client_tls)
            assert (await ocpp_call(sentinel, "b1", "BootNotification", BOOT))["status"] == "Accepted"
            idle = [await net.connect("127.0.0.1", port) for _ in range(200)]
            refused = 0
            for stream in idle[-40:]:  # the last ones are over both caps
                with trio.move_on_after(5):
                    refused += await closed_by_peer(stream)
            assert refused == 40
            assert "currentTime" in await ocpp_call(sentinel, "h1", "Heartbeat", {})
            for stream in idle:
                await stream.aclose()
            await sentinel.aclose()
        assert proc.poll() is None  # still serving
    finally:
        proc.terminate()
        _out, err = await trio.to_thread.run_sync(proc.communicate)
    text = err.decode()
    assert "Traceback" not in text
    assert "connection_refused" in text


def _spawn_csms_with_open_file_limit(pki: Path, nofile: int) -> subprocess.Popen[bytes]:
    """``evsim csms`` on a free port with RLIMIT_NOFILE lowered, soft and hard (only in the child)."""
    code = (
        "import resource, sys\n"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({nofile}, {nofile}))\n"
        "from evsim.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            code,
            "csms",
            "--listen",
            "127.0.0.1:0",
            "--pki",
            str(pki),
            "--duration",
            "60",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


async def _dev_ws(net: TcpNetwork, port: int, client_tls: ClientTls) -> WebSocket:
    stream = await tls_connect(await net.connect("127.0.0.1", port), client_tls, "localhost")
    return await ws_client(
        stream,
        host="localhost",
        path=station_path("/ocpp", "SENTINEL"),
        subprotocols=["ocpp2.0.1"],
        headers=[basic_auth_header("SENTINEL", DEV_PASSWORD)],
    )


# ---------------------------------------------------------------------------- connection limits


async def test_pending_connections_per_address_are_capped(autojump_clock: trio.testing.MockClock) -> None:
    """One address holding connections it never uses is refused beyond ``max_pending_per_address`` (one event
    each, with the peer); other addresses and admitted stations are unaffected. Fails on the old code (no cap)."""
    async with harness() as h:
        csms = await start_csms(h, max_pending_per_address=2)
        held = [await h.net.connect(CSMS_HOST, 443, source="mallory") for _ in range(2)]
        extra = await h.net.connect(CSMS_HOST, 443, source="mallory")
        with trio.fail_after(1):
            assert await closed_by_peer(extra)
        refused = h.events("connection_refused")
        assert len(refused) == 1
        assert refused[0].data["reason"] == "max_pending_per_address"
        assert refused[0].data["limit"] == 2
        assert refused[0].data["peer"].startswith("mallory:")
        st = h.start_station("ST-1", sessions=0)  # another address is not affected
        with trio.fail_after(600):
            await st.wait_online()
        for stream in held:
            await stream.aclose()
        # Admitted (booted) connections do not count: three booted links from one address.
        links = []
        for i in range(3):
            ws = await raw_ws(h.net, CSMS_HOST, 443, f"GW-{i}", source="gateway")
            assert (await ocpp_call(ws, "b", "BootNotification", BOOT))["status"] == "Accepted"
            links.append(ws)
        assert len(h.events("connection_refused")) == 1
        assert csms.acceptor.statistics().refused == {"max_pending_per_address": 1}


async def test_total_connections_are_capped(autojump_clock: trio.testing.MockClock) -> None:
    async with harness() as h:
        csms = await start_csms(h, max_connections=2)
        a = h.start_station("ST-1", sessions=0)
        b = h.start_station("ST-2", sessions=0)
        with trio.fail_after(600):
            await a.wait_online()
            await b.wait_online()
        extra = await h.net.connect(CSMS_HOST, 443, source="third")
        with trio.fail_after(1):
            assert await closed_by_peer(extra)
        refused = h.events("connection_refused")
        assert [(e.data["reason"], e.data["limit"]) for e in refused] == [("max_connections", 2)]
        assert refused[0].data["peer"].startswith("third:")
        stats = csms.acceptor.statistics()
        assert (stats.open, stats.pending) == (2, 0)


async def test_default_limits_come_from_the_open_file_limit() -> None:
    """Derived from RLIMIT_NOFILE for loopback TCP (descriptors), none on the in-memory network."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    recorder = Recorder(SimClock.start(TEST_NOW))
    tcp = await TcpNetwork().listen("127.0.0.1", 0)
    virtual = await VirtualNetwork().listen("csms", 443)
    async with tcp, virtual:
        csms, lc = Acceptor("csms", recorder), Acceptor("lc", recorder, fds_per_connection=2)
        csms.resolve_limits(tcp)
        lc.resolve_limits(tcp)
        if soft != resource.RLIM_INFINITY:
            assert csms.max_connections == max(1, soft - FD_RESERVE)
            assert lc.max_connections == max(1, (soft - FD_RESERVE) // 2)
        assert csms.max_connections is not None
        assert csms.max_pending_per_address == max(1, csms.max_connections // 2)
        in_memory = Acceptor("csms", recorder)
        in_memory.resolve_limits(virtual)
        assert (in_memory.max_connections, in_memory.max_pending_per_address) == (None, None)
        explicit = Acceptor("csms", recorder, max_connections=10)
        explicit.resolve_limits(virtual)
        assert (explicit.max_connections, explicit.max_pending_per_address) == (10, 5)
    with pytest.raises(ConfigError, match="max_connections"):
        CsmsConfig(max_connections=0)
    with pytest.raises(ConfigError, match="boot_timeout"):
        CsmsConfig(boot_timeout=-1)


def test_the_command_raises_the_soft_open_file_limit() -> None:
    """A default soft limit of 1024 would cap a CSMS below 1,000 stations; ``evsim`` raises it to the hard one."""
    code = (
        "import resource\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, 4096))\n"
        "from evsim.runtime import raise_open_file_limit\n"
        "print(raise_open_file_limit(), resource.getrlimit(resource.RLIMIT_NOFILE))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == ["4096", "(4096,", "4096)"]


# ---------------------------------------------------------------------------- boot deadline


async def test_upgraded_connection_that_never_boots_is_closed(autojump_clock: trio.testing.MockClock) -> None:
    """A link that upgrades and never sends an Accepted BootNotification is closed after ``boot_timeout``
    (1008, one event with the peer) and its pending slot is freed; a booted station stays. Fails on the old code
    (the link stayed open for ever)."""
    async with harness() as h:
        csms = await start_csms(h, boot_timeout=120, max_pending_per_address=1)
        sentinel = h.start_station("SENTINEL", sessions=0)
        with trio.fail_after(600):
            await sentinel.wait_online()
        start = trio.current_time()
        idle = await raw_ws(h.net, CSMS_HOST, 443, "IDLE", source="mallory")
        with trio.fail_after(600), pytest.raises(TransportError):
            await idle.receive_text()
        assert 119 <= trio.current_time() - start <= 121
        assert idle.close_code == 1008
        (ev,) = h.events("boot_timeout")
        assert ev.data["station"] == "IDLE"
        assert ev.data["peer"].startswith("mallory:")
        assert ev.data["timeout"] == 120
        # the slot is free again: the same address may connect and boot
        again = await raw_ws(h.net, CSMS_HOST, 443, "IDLE", source="mallory")
        assert (await ocpp_call(again, "b", "BootNotification", BOOT))["status"] == "Accepted"
        await trio.sleep(600)  # booted links are not subject to the deadline
        assert csms.stations["IDLE"].connected
        assert csms.stations["SENTINEL"].connected
        assert len(h.events("boot_timeout")) == 1


# ---------------------------------------------------------------------------- slowloris


async def test_slowloris_on_tls_and_http_is_bounded(autojump_clock: trio.testing.MockClock) -> None:
    """One byte every 2 s does not extend the TLS handshake timeout (10 s) nor the WebSocket open timeout
    (30 s): both are deadlines for the whole stage, not idle timers."""
    async with harness() as h:
        await start_csms(h)
        # TLS stage: a ClientHello record header, one byte at a time
        raw = await h.net.connect(CSMS_HOST, 443, source="slow-tls")
        start = trio.current_time()
        with trio.fail_after(60):
            for byte in b"\x16\x03\x01\x02\x00" + b"\x01" * 100:
                try:
                    await raw.send_all(bytes([byte]))
                except (TransportError, trio.BrokenResourceError):
                    break
                await trio.sleep(2)
        assert trio.current_time() - start <= 10 + 2  # the timeout, plus the gap before our next byte
        await trio.sleep(1)
        assert [e.data["reason"] for e in h.events("handshake_failed")] == ["timeout"]
        # HTTP stage: a complete handshake, then the upgrade request one byte at a time
        stream = await tls_connect(
            await h.net.connect(CSMS_HOST, 443, source="slow-http"),
            ClientTls.build(TlsProfile(), h.pki.csms_trust()),
            CSMS_HOST,
            verify_time=h.clock.utcnow,
        )
        start = trio.current_time()
        request = b"GET /ocpp/SLOW HTTP/1.1\r\nHost: csms.evsim.test\r\n" + b"X-Pad: " + b"a" * 200
        with trio.fail_after(120):
            for byte in request:
                try:
                    await stream.send_all(bytes([byte]))
                except (TransportError, trio.BrokenResourceError):
                    break
                await trio.sleep(2)
        assert trio.current_time() - start <= 30 + 2
        await trio.sleep(1)
        refused = h.events("upgrade_rejected")
        assert len(refused) == 1
        assert refused[0].data["reason"] == "upgrade_timeout"
        assert "30" in refused[0].data["detail"]


# ---------------------------------------------------------------------------- port taken


def test_port_taken_prints_the_clean_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Fails on the old code: the ConfigError came out of the nursery as an ExceptionGroup traceback."""
    pki = tmp_path / "pki"
    assert main(["certs", "init", "--dir", str(pki)]) == 0
    capsys.readouterr()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["csms", "--listen", f"127.0.0.1:{port}", "--pki", str(pki), "--duration", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.splitlines()[-1].startswith("evsim: configuration error: cannot listen on 127.0.0.1:")
    assert "fix: pick another port" in err
    assert "Traceback" not in err
