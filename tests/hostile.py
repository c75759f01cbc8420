"""A hostile-peer toolkit for tests: raw clients that misbehave against a node's listener, a fake CSMS that
misbehaves towards stations and controllers, and an honest *sentinel* session whose heartbeat round trip is
measured while an attack runs.

Everything works over the in-memory network (``evsim.net.virtual``, under trio's ``MockClock``) and over
loopback TCP (``evsim.net.tcp``); only the TCP reset differs (``SO_LINGER 0`` against a link reset).

Vocabulary:

* :class:`Target` - where to attack: network, host, port, TLS client configuration, identity settings;
* connection helpers - :func:`open_raw`, :func:`open_tls`, :func:`open_upgraded` (a raw stream after a
  hand-written upgrade, for framing abuse), :func:`open_ws` (evsim's own client, for OCPP abuse),
  :func:`reset` (a TCP reset at any stage), :func:`client_hello`, :func:`ws_frame`, :func:`upgrade_request`;
* :data:`LISTENER_FAULTS` - the catalogue of what a hostile client does to a listener, by name; each is an
  ``async def fault(attack: Attack) -> None`` that returns once the attack is over (connections closed);
* :class:`Sentinel` - an honest station session (boot, heartbeats) on the same node;
* :class:`HostileCsms` - a fake server that accepts stations and runs a hostile script on each, optionally
  relaying some identities to an honest CSMS (so a controller's other stations keep working).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import socket
import struct
import zlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import attrs
import trio
import trio.testing

from evsim.clock import SimClock, isoformat
from evsim.errors import OcppError, TransportError
from evsim.net.base import Network
from evsim.net.tcp import TcpStream
from evsim.net.virtual import VirtualStream
from evsim.ocpp.rpc import RpcConnection
from evsim.ocpp.session import OcppSession
from evsim.recorder import Event, Recorder
from evsim.tls import ClientTls, Identity, ServerTls, TlsProfile, tls_accept, tls_connect
from evsim.tls.stream import TlsStream
from evsim.ws import Accept, UpgradeRequest, WebSocket, ws_client, ws_server
from evsim.ws.auth import basic_auth_header
from evsim.ws.paths import station_path

PASSWORD = "correct-horse-battery-staple"
SUBPROTOCOL = "ocpp2.0.1"

BOOT: dict[str, Any] = {
    "reason": "PowerUp",
    "chargingStation": {"model": "hostile", "vendorName": "evsim-tests", "serialNumber": "X"},
}


def boot_payload(serial: str) -> dict[str, Any]:
    """A valid BootNotificationRequest for ``serial``."""
    return {"reason": "PowerUp", "chargingStation": {**BOOT["chargingStation"], "serialNumber": serial}}


# ---------------------------------------------------------------- where to attack


@attrs.define
class Target:
    """A listener to attack.

    Attributes:
        net: the network it listens on.
        host: the host to connect to (also the TLS server name and the ``Host`` header).
        port: its port.
        client_tls: TLS client configuration trusting its certificate (None: plain ws).
        clock: the run's clock (certificates are checked at its time).
        path_prefix: the OCPP-J endpoint path.
        password: a Basic-auth password it accepts.
    """

    net: Network
    host: str
    port: int
    client_tls: ClientTls | None
    clock: SimClock
    path_prefix: str = "/ocpp"
    password: str = PASSWORD


@attrs.define
class Attack:
    """One run of a fault against a :class:`Target`.

    Attributes:
        target: where.
        station_id: the identity the attacker uses where it needs one (upgrade, boot).
        source: the attacker's host name on the in-memory network.
        pace: seconds of trio time between two bytes of a slowloris.
        hold: seconds of trio time a stalling attacker keeps its connection before giving up.
        tcp: the target is on loopback TCP.
        notes: what the fault observed, for the test's assertions (e.g. ``bytes_accepted``).
    """

    target: Target
    station_id: str = "EVIL-1"
    source: str = "attacker"
    pace: float = 5.0
    hold: float = 600.0
    tcp: bool = False
    notes: dict[str, Any] = attrs.field(factory=dict)


# ---------------------------------------------------------------- connection helpers


def _raw_of(stream: trio.abc.Stream) -> trio.abc.Stream:
    """The transport under TLS."""
    while isinstance(stream, TlsStream):
        stream = stream.transport_stream
    return stream


async def open_raw(attack: Attack) -> trio.abc.Stream:
    t = attack.target
    return await t.net.connect(t.host, t.port, source=attack.source)


async def open_tls(attack: Attack) -> trio.abc.Stream:
    """Connect and complete TLS (or return the plain stream for a plain-ws target)."""
    t = attack.target
    raw = await open_raw(attack)
    if t.client_tls is None:
        return raw
    return await tls_connect(raw, t.client_tls, t.host, verify_time=t.clock.utcnow)


async def reset(stream: trio.abc.Stream) -> None:
    """Abort the connection like a TCP reset (RST), whatever is layered on top."""
    raw = _raw_of(stream)
    if isinstance(raw, VirtualStream):
        link = raw._link
        if link is not None:
            link.reset("connection reset by peer")
        raw.close_now()
    elif isinstance(raw, TcpStream):
        with contextlib.suppress(OSError):
            raw.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(TransportError, trio.BrokenResourceError, trio.ClosedResourceError):
            await raw.aclose()
    else:  # pragma: no cover - only the two networks exist
        await trio.aclose_forcefully(raw)
    await trio.lowlevel.checkpoint()


async def close_quietly(stream: trio.abc.AsyncResource) -> None:
    with (
        trio.CancelScope(shield=True),
        trio.move_on_after(1),
        contextlib.suppress(TransportError, trio.BrokenResourceError, trio.ClosedResourceError),
    ):
        await stream.aclose()


async def send_quietly(stream: trio.abc.Stream, data: bytes) -> bool:
    """Send; False when the node has closed the connection."""
    try:
        await stream.send_all(data)
    except (TransportError, trio.BrokenResourceError, trio.ClosedResourceError):
        return False
    return True


async def read_until_closed(
    stream: trio.abc.Stream, limit: float, notes: dict[str, Any] | None = None
) -> bytes:
    """Read what the node sends until it closes (or ``limit`` seconds of trio time); at most 1 MiB kept.

    ``notes["closed_by_node"]`` says whether the node closed the connection within ``limit``.
    """
    got = bytearray()
    closed = False
    with trio.move_on_after(limit):
        try:
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    break
                if len(got) < 1 << 20:
                    got += data
        except (TransportError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        closed = True
    if notes is not None:
        notes["closed_by_node"] = closed
    return bytes(got)


async def client_hello(client_tls: ClientTls, host: str) -> bytes:
    """The first flight of a real TLS client for ``host`` (a ClientHello), captured over a memory pipe."""
    a, b = trio.testing.memory_stream_pair()
    out = bytearray()
    async with trio.open_nursery() as nursery:

        async def connect() -> None:
            with contextlib.suppress(Exception):
                await tls_connect(a, client_tls, host, verify_time=None)

        nursery.start_soon(connect)
        out += await b.receive_some(65536)
        nursery.cancel_scope.cancel()
    return bytes(out)


def upgrade_request(
    host: str,
    path: str,
    *,
    authorization: tuple[str, str] | None = None,
    subprotocol: str | None = SUBPROTOCOL,
    deflate: bool = False,
    extra: Sequence[tuple[str, str]] = (),
) -> bytes:
    """A hand-written WebSocket upgrade request (RFC 6455 §4.1)."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if subprotocol:
        lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
    if deflate:
        lines.append("Sec-WebSocket-Extensions: permessage-deflate")
    if authorization is not None:
        lines.append(f"{authorization[0]}: {authorization[1]}")
    lines += [f"{n}: {v}" for n, v in extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def raw_path(attack: Attack, identity: str | None = None) -> str:
    """The request path for an identity, percent-encoded already (``identity`` is used as it is)."""
    seg = identity if identity is not None else attack.station_id
    return f"{attack.target.path_prefix}/{seg}"


async def open_upgraded(
    attack: Attack, *, deflate: bool = False, path: str | None = None, user: str | None = None
) -> trio.abc.Stream:
    """TLS plus a hand-written upgrade as ``attack.station_id``; returns the stream after the 101 response.

    Raises:
        AssertionError: the node did not answer 101.
    """
    t = attack.target
    stream = await open_tls(attack)
    auth = basic_auth_header(user or attack.station_id, t.password)
    await stream.send_all(
        upgrade_request(t.host, path or raw_path(attack), authorization=auth, deflate=deflate)
    )
    head = bytearray()
    while b"\r\n\r\n" not in head:
        data = await stream.receive_some(4096)
        assert data, f"closed during the upgrade: {bytes(head)!r}"
        head += data
    assert head.startswith(b"HTTP/1.1 101"), bytes(head[:200])
    return stream


def ws_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv1: bool = False,
    mask: bool = True,
    declared: int | None = None,
) -> bytes:
    """One WebSocket frame as a client writes it (masked unless ``mask`` is False); ``declared`` lies about
    the payload length in the header."""
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    n = len(payload) if declared is None else declared
    bit = 0x80 if mask else 0
    if n < 126:
        header = bytes((first, bit | n))
    elif n < 65536:
        header = struct.pack("!BBH", first, bit | 126, n)
    else:
        header = struct.pack("!BBQ", first, bit | 127, n)
    if not mask:
        return header + payload
    key = os.urandom(4)
    size = len(payload)
    if not size:
        return header + key
    stream = (key * (size // 4 + 1))[:size]
    masked = int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")
    return header + key + masked.to_bytes(size, "big")


TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


def server_frames(data: bytes, *, deflate: bool = False) -> list[tuple[int, bytes]]:
    """Parse what a server sent after its 101 response: ``(opcode, payload)`` per frame, compressed data
    frames inflated (the server's frames are unmasked; a truncated last frame is left out)."""
    head = data.find(b"\r\n\r\n")
    pos = head + 4 if data.startswith(b"HTTP/") and head >= 0 else 0
    out: list[tuple[int, bytes]] = []
    inflater = zlib.decompressobj(-15)
    while pos + 2 <= len(data):
        b0, b1 = data[pos], data[pos + 1]
        n = b1 & 0x7F
        pos += 2
        if n == 126:
            (n,) = struct.unpack("!H", data[pos : pos + 2])
            pos += 2
        elif n == 127:
            (n,) = struct.unpack("!Q", data[pos : pos + 8])
            pos += 8
        if pos + n > len(data):
            break
        payload = data[pos : pos + n]
        pos += n
        if deflate and b0 & 0x40:
            payload = inflater.decompress(payload + b"\x00\x00\xff\xff")
        out.append((b0 & 0x0F, payload))
    return out


def deflate_message(data: bytes) -> bytes:
    """A permessage-deflate payload (RFC 7692 §7.2.1: raw deflate, trailing 00 00 ff ff removed)."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def call_frame(message_id: str, action: str, payload: Any) -> str:
    return json.dumps([2, message_id, action, payload])


async def open_ws(attack: Attack, *, identity: str | None = None, compression: bool = False) -> WebSocket:
    """evsim's own client, authenticated as ``identity`` (default the attack's station id)."""
    t = attack.target
    sid = identity or attack.station_id
    stream = await open_tls(attack)
    return await ws_client(
        stream,
        host=t.host,
        path=station_path(t.path_prefix, sid),
        subprotocols=[SUBPROTOCOL],
        headers=[basic_auth_header(sid, t.password)],
        compression=compression,
    )


async def booted_ws(attack: Attack) -> WebSocket:
    """An upgraded, booted WebSocket (BootNotification sent and its answer read)."""
    ws = await open_ws(attack)
    boot = boot_payload(attack.station_id)
    await ws.send_text(call_frame("boot-1", "BootNotification", boot))
    answer = json.loads(await ws.receive_text())
    assert answer[0] == 3 and answer[2]["status"] == "Accepted", answer
    return ws


async def send_texts(
    ws: WebSocket, texts: Sequence[str], *, answers: int | None = None, limit: float = 60
) -> list[Any]:
    """Send texts and read ``answers`` replies (default: one per text); stops early when the node closes.

    Returns:
        The replies as decoded JSON (or the raw text when not JSON).
    """
    got: list[Any] = []
    want = len(texts) if answers is None else answers
    with trio.move_on_after(limit):
        try:
            for text in texts:
                await ws.send_text(text)
            while len(got) < want:
                reply = await ws.receive_text()
                try:
                    got.append(json.loads(reply))
                except ValueError:
                    got.append(reply)
        except TransportError:
            pass
    return got


async def slow_send(attack: Attack, stream: trio.abc.Stream, data: bytes) -> int:
    """Slowloris: one byte per ``attack.pace`` seconds until the node closes or ``attack.hold`` passes.

    Returns:
        Bytes sent.
    """
    sent = 0
    attack.notes["closed_by_node"] = False
    with trio.move_on_after(attack.hold):
        for i in range(len(data)):
            if not await send_quietly(stream, data[i : i + 1]):
                attack.notes["closed_by_node"] = True
                break
            sent += 1
            await trio.sleep(attack.pace)
        else:  # all sent: the node may still close it (a complete but unwelcome message)
            await read_until_closed(stream, attack.hold, attack.notes)
    return sent


# ---------------------------------------------------------------- the listener fault catalogue

Fault = Callable[[Attack], Awaitable[None]]


async def reset_before_tls(attack: Attack) -> None:
    """Connect, then reset at once (five times: the crash needs the reset to arrive before the accept)."""
    if attack.tcp:
        t = attack.target
        addr = (t.host if t.host[0].isdigit() else "127.0.0.1", t.port)
        for _ in range(5):
            sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
            try:
                await sock.connect(addr)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError as exc:  # nobody listens any more: the node's accept loop is gone
                attack.notes["connect_failed"] = str(exc)
                break
            finally:
                sock.close()
        await trio.sleep(0.2)
        return
    for _ in range(5):
        await reset(await open_raw(attack))


async def reset_mid_client_hello(attack: Attack) -> None:
    assert attack.target.client_tls is not None
    hello = await client_hello(attack.target.client_tls, attack.target.host)
    stream = await open_raw(attack)
    await stream.send_all(hello[: len(hello) // 2])
    await trio.sleep(1)
    await reset(stream)


async def reset_after_tls(attack: Attack) -> None:
    stream = await open_tls(attack)
    await trio.sleep(1)
    await reset(stream)


async def reset_mid_http(attack: Attack) -> None:
    t = attack.target
    stream = await open_tls(attack)
    req = upgrade_request(
        t.host, raw_path(attack), authorization=basic_auth_header(attack.station_id, t.password)
    )
    await stream.send_all(req[: len(req) // 2])
    await trio.sleep(1)
    await reset(stream)


async def reset_after_upgrade(attack: Attack) -> None:
    stream = await open_upgraded(attack)
    await trio.sleep(1)
    await reset(stream)


async def reset_after_boot(attack: Attack) -> None:
    ws = await booted_ws(attack)
    await trio.sleep(1)
    await reset(ws._stream)


async def reset_mid_frame(attack: Attack) -> None:
    stream = await open_upgraded(attack)
    frame = ws_frame(TEXT, call_frame("m1", "BootNotification", BOOT).encode())
    await stream.send_all(frame[: len(frame) // 2])
    await trio.sleep(1)
    await reset(stream)


async def slowloris_tls(attack: Attack) -> None:
    assert attack.target.client_tls is not None
    hello = await client_hello(attack.target.client_tls, attack.target.host)
    stream = await open_raw(attack)
    attack.notes["bytes_sent"] = await slow_send(attack, stream, hello)
    await close_quietly(stream)


async def slowloris_http(attack: Attack) -> None:
    t = attack.target
    stream = await open_tls(attack)
    req = upgrade_request(
        t.host, raw_path(attack), authorization=basic_auth_header(attack.station_id, t.password)
    )
    attack.notes["bytes_sent"] = await slow_send(attack, stream, req)
    await close_quietly(stream)


async def slowloris_ws(attack: Attack) -> None:
    """Upgraded, never booted, a frame dribbled one byte at a time."""
    stream = await open_upgraded(attack)
    frame = ws_frame(TEXT, call_frame("m1", "BootNotification", BOOT).encode())
    attack.notes["bytes_sent"] = await slow_send(attack, stream, frame)
    await close_quietly(stream)


async def idle_after_upgrade(attack: Attack) -> None:
    """Upgraded, then silent: never boots, never sends a byte."""
    stream = await open_upgraded(attack)
    attack.notes["reply"] = await read_until_closed(stream, attack.hold, attack.notes)
    await close_quietly(stream)


async def _send_then_drain(attack: Attack, stream: trio.abc.Stream, data: bytes, limit: float = 60) -> None:
    await send_quietly(stream, data)
    attack.notes["reply"] = await read_until_closed(stream, limit, attack.notes)
    await close_quietly(stream)


async def garbage_on_tls_port(attack: Attack) -> None:
    stream = await open_raw(attack)
    await _send_then_drain(attack, stream, bytes(range(256)) * 64)


async def plain_http_on_tls_port(attack: Attack) -> None:
    t = attack.target
    stream = await open_raw(attack)
    req = upgrade_request(
        t.host, raw_path(attack), authorization=basic_auth_header(attack.station_id, t.password)
    )
    await _send_then_drain(attack, stream, req)


async def huge_header(attack: Attack) -> None:
    t = attack.target
    stream = await open_tls(attack)
    req = upgrade_request(t.host, raw_path(attack), extra=[("X-Filler", "a" * 200_000)])
    await _send_then_drain(attack, stream, req)


async def many_headers(attack: Attack) -> None:
    t = attack.target
    stream = await open_tls(attack)
    req = upgrade_request(t.host, raw_path(attack), extra=[(f"X-H{i}", "v") for i in range(20_000)])
    await _send_then_drain(attack, stream, req)


async def bad_request_line(attack: Attack) -> None:
    stream = await open_tls(attack)
    await _send_then_drain(attack, stream, b"GARBAGE \x00\xff / HTTP/9.9\r\n\r\n")


async def not_websocket(attack: Attack) -> None:
    t = attack.target
    stream = await open_tls(attack)
    await _send_then_drain(attack, stream, f"GET / HTTP/1.1\r\nHost: {t.host}\r\n\r\n".encode())


async def ws_oversized(attack: Attack) -> None:
    """A text frame declaring 1 MiB, 70 KiB of it sent."""
    stream = await open_upgraded(attack)
    frame = ws_frame(TEXT, b"[" * 70_000, declared=1 << 20)
    await _send_then_drain(attack, stream, frame[: 70_000 + 14])


async def ws_fragment_flood(attack: Attack) -> None:
    """A text message in 10,000 fragments of 100 bytes (1 MB), never finished."""
    stream = await open_upgraded(attack)
    first = ws_frame(TEXT, b" " * 100, fin=False)
    rest = ws_frame(CONT, b" " * 100, fin=False)
    ok = await send_quietly(stream, first)
    for _ in range(10_000):
        if not ok:
            break
        ok = await send_quietly(stream, rest)
    attack.notes["reply"] = await read_until_closed(stream, 60, attack.notes)
    await close_quietly(stream)


async def ws_interleaved_control(attack: Attack) -> None:
    """A BootNotification in three fragments with a Ping and a Pong between them (RFC 6455 §5.4 allows it):
    the node must answer the Ping and the BootNotification."""
    stream = await open_upgraded(attack)
    text = call_frame("boot-frag", "BootNotification", BOOT).encode()
    third = len(text) // 3
    data = (
        ws_frame(TEXT, text[:third], fin=False)
        + ws_frame(PING, b"hello")
        + ws_frame(CONT, text[third : 2 * third], fin=False)
        + ws_frame(PONG, b"")
        + ws_frame(CONT, text[2 * third :])
    )
    await send_quietly(stream, data)
    attack.notes["reply"] = await read_until_closed(stream, 5, attack.notes)
    await close_quietly(stream)


async def ws_interleaved_control_deflate(attack: Attack) -> None:
    """The same with permessage-deflate: the compressed payload split into fragments around a Ping."""
    stream = await open_upgraded(attack, deflate=True)
    comp = deflate_message(call_frame("boot-frag", "BootNotification", BOOT).encode())
    half = len(comp) // 2
    data = (
        ws_frame(TEXT, comp[:half], fin=False, rsv1=True)
        + ws_frame(PING, b"hello")
        + ws_frame(CONT, comp[half:])
    )
    await send_quietly(stream, data)
    attack.notes["reply"] = await read_until_closed(stream, 5, attack.notes)
    await close_quietly(stream)


async def ws_deflate_bomb(attack: Attack) -> None:
    """64 MiB of spaces deflated into one small message."""
    stream = await open_upgraded(attack, deflate=True)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = b" " * (1 << 20)
    comp = b"".join(c.compress(chunk) for _ in range(64)) + c.flush(zlib.Z_SYNC_FLUSH)
    await _send_then_drain(attack, stream, ws_frame(TEXT, comp[:-4], rsv1=True))


async def ws_unmasked(attack: Attack) -> None:
    stream = await open_upgraded(attack)
    await _send_then_drain(attack, stream, ws_frame(TEXT, b'[2,"a","Heartbeat",{}]', mask=False))


async def ws_bad_opcode(attack: Attack) -> None:
    stream = await open_upgraded(attack)
    await _send_then_drain(attack, stream, ws_frame(0x3, b"x"))


async def ws_bad_utf8(attack: Attack) -> None:
    stream = await open_upgraded(attack)
    await _send_then_drain(attack, stream, ws_frame(TEXT, b'[2,"a","\xff\xfe",{}]'))


async def ws_binary(attack: Attack) -> None:
    stream = await open_upgraded(attack)
    await _send_then_drain(attack, stream, ws_frame(BINARY, b'[2,"a","Heartbeat",{}]'))


async def ws_never_read(attack: Attack) -> None:
    """Tiny frames that each draw a CALLERROR, written without ever reading: the node must stop reading
    once its replies back up, so the attacker's writes block. ``notes["bytes_accepted"]`` counts what the
    node took before that (or within ``hold``)."""
    stream = await open_upgraded(attack)
    frame = ws_frame(TEXT, b'[2,"x","Nope",{}]')
    batch = frame * 256
    accepted = 0
    with trio.move_on_after(attack.hold):
        while accepted < 5 << 18:
            with trio.move_on_after(10) as stalled:
                if not await send_quietly(stream, batch):
                    break
                accepted += len(batch)
            if stalled.cancelled_caught:
                break
    attack.notes["bytes_accepted"] = accepted
    await reset(stream)


def _ocpp(
    texts: Callable[[Attack], Sequence[str]], *, boot: bool = True, answers: int | None = None
) -> Fault:
    """A fault that sends OCPP texts on an (optionally booted) WebSocket and reads the answers."""

    async def fault(attack: Attack) -> None:
        ws = await (booted_ws(attack) if boot else open_ws(attack))
        attack.notes["replies"] = await send_texts(ws, texts(attack), answers=answers, limit=60)
        await close_quietly(ws)

    return fault


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


_BIG = 2**64 + 1


def _tx_event(seq: Any, *, tx: str = "tx-hostile", evse: Any = 1, value: Any = 10.0) -> dict[str, Any]:
    return {
        "eventType": "Updated",
        "timestamp": "2030-06-01T12:00:00Z",
        "triggerReason": "MeterValuePeriodic",
        "seqNo": seq,
        "transactionInfo": {"transactionId": tx},
        "evse": {"id": evse, "connectorId": 1},
        "meterValue": [{"timestamp": "2030-06-01T12:00:00Z", "sampledValue": [{"value": value}]}],
    }


def _status(evse: Any, connector: Any) -> dict[str, Any]:
    return {
        "timestamp": "2030-06-01T12:00:00Z",
        "connectorStatus": "Available",
        "evseId": evse,
        "connectorId": connector,
    }


LISTENER_FAULTS: dict[str, Fault] = {
    # TCP resets at every stage
    "reset_before_tls": reset_before_tls,
    "reset_mid_client_hello": reset_mid_client_hello,
    "reset_after_tls": reset_after_tls,
    "reset_mid_http": reset_mid_http,
    "reset_after_upgrade": reset_after_upgrade,
    "reset_mid_frame": reset_mid_frame,
    "reset_after_boot": reset_after_boot,
    # slowloris
    "slowloris_tls": slowloris_tls,
    "slowloris_http": slowloris_http,
    "slowloris_ws": slowloris_ws,
    "idle_after_upgrade": idle_after_upgrade,
    # not TLS, not HTTP, not WebSocket
    "garbage_on_tls_port": garbage_on_tls_port,
    "plain_http_on_tls_port": plain_http_on_tls_port,
    "huge_header": huge_header,
    "many_headers": many_headers,
    "bad_request_line": bad_request_line,
    "not_websocket": not_websocket,
    # WebSocket framing
    "ws_oversized": ws_oversized,
    "ws_fragment_flood": ws_fragment_flood,
    "ws_interleaved_control": ws_interleaved_control,
    "ws_interleaved_control_deflate": ws_interleaved_control_deflate,
    "ws_deflate_bomb": ws_deflate_bomb,
    "ws_unmasked": ws_unmasked,
    "ws_bad_opcode": ws_bad_opcode,
    "ws_bad_utf8": ws_bad_utf8,
    "ws_binary": ws_binary,
    "ws_never_read": ws_never_read,
    # malformed and hostile OCPP
    "ocpp_bad_json": _ocpp(lambda a: ["this is not JSON", '[2, "a"', "{}"]),
    "ocpp_deep_nesting_32k": _ocpp(lambda a: [_deep(32_000)]),
    "ocpp_deep_nesting_100k": _ocpp(lambda a: [_deep(100_000)], answers=1),
    "ocpp_wrong_types": _ocpp(
        lambda a: [
            json.dumps([2, "w1", "Heartbeat", []]),
            json.dumps([2, "w2", "StatusNotification", _status("1", None)]),
            json.dumps([2, 3, "Heartbeat", {}]),
            json.dumps(["2", "w4", "Heartbeat", {}]),
            json.dumps([2, "w5", {"a": 1}, {}]),
        ]
    ),
    "ocpp_unknown_action": _ocpp(lambda a: [call_frame(f"u{i}", f"NoSuchAction{i}", {}) for i in range(20)]),
    "ocpp_call_before_boot": _ocpp(lambda a: [call_frame("h1", "Heartbeat", {})], boot=False),
    "ocpp_duplicate_ids": _ocpp(
        lambda a: [call_frame("dup", "Heartbeat", {}), call_frame("dup", "Heartbeat", {})], answers=1
    ),
    "ocpp_unknown_result": _ocpp(
        lambda a: [
            json.dumps([3, "nobody-asked", {}]),
            json.dumps([4, "nobody", "GenericError", "", {}]),
            call_frame("after", "Heartbeat", {}),
        ],
        answers=1,
    ),
    "ocpp_out_of_range_ids": _ocpp(
        lambda a: [
            call_frame("s1", "StatusNotification", _status(-1, -1)),
            call_frame("s2", "StatusNotification", _status(_BIG, _BIG)),
            call_frame("s3", "StatusNotification", _status(2**31, 0)),
        ]
    ),
    "ocpp_out_of_range_seqno": _ocpp(
        lambda a: [
            call_frame("t1", "TransactionEvent", _tx_event(-1)),
            call_frame("t2", "TransactionEvent", _tx_event(_BIG)),
            call_frame("t3", "TransactionEvent", _tx_event(1e300)),
            call_frame("t4", "TransactionEvent", _tx_event(2**62)),
        ]
    ),
    "ocpp_out_of_range_meter": _ocpp(
        lambda a: [
            call_frame("v1", "TransactionEvent", _tx_event(0, value=1e308)),
            call_frame("v2", "TransactionEvent", _tx_event(1, value=-1e308)),
            call_frame("v3", "TransactionEvent", _tx_event(2, value=_BIG)),
            call_frame("v4", "TransactionEvent", _tx_event(3, evse=-5)),
        ]
    ),
    "ocpp_connector_flood": _ocpp(
        lambda a: [call_frame(f"c{i}", "StatusNotification", _status(i, i)) for i in range(2000)]
    ),
    "ocpp_transaction_flood": _ocpp(
        lambda a: [call_frame(f"x{i}", "TransactionEvent", _tx_event(0, tx=f"tx-{i}")) for i in range(2000)]
    ),
}
"""What a hostile client does to a listener (CSMS or Local Controller), by name."""


# identity abuse: the raw path segment each uses
BAD_IDENTITIES: dict[str, str] = {
    "crlf": "EVIL%0d%0aFAKE%20booted",
    "nul": "EVIL%00X",
    "dotdot": "..%2f..%2fetc",
    "too_long": "A" * 49,
    "non_ascii": "%C3%A9VIL",
    "space": "EVIL%20ONE",
    "empty": "",
}


def identity_fault(segment: str) -> Fault:
    """Upgrade with a hostile identity in the path (Basic auth user = the decoded identity, if any)."""

    async def fault(attack: Attack) -> None:
        t = attack.target
        import urllib.parse

        user = urllib.parse.unquote(segment) or "x"
        stream = await open_tls(attack)
        req = upgrade_request(
            t.host, raw_path(attack, segment), authorization=("Authorization", _basic(user, t.password))
        )
        await send_quietly(stream, req)
        attack.notes["reply"] = reply = await read_until_closed(stream, 5)
        attack.notes["upgraded"] = reply.startswith(b"HTTP/1.1 101")
        await close_quietly(stream)

    return fault


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# ---------------------------------------------------------------- the sentinel


class Sentinel:
    """An honest station session: boots, then answers heartbeats whose round trip is measured in trio time.

    Use ``await nursery.start(sentinel.run)``; :meth:`rtt` does one Heartbeat round trip.
    """

    def __init__(self, target: Target, station_id: str = "SENTINEL", *, source: str = "sentinel") -> None:
        self.target = target
        self.station_id = station_id
        self.source = source
        self.ws: WebSocket | None = None
        self.session: OcppSession | None = None
        self.failure: BaseException | None = None
        self.ended = trio.Event()

    async def _handle(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        raise OcppError(f"{action} not supported by the sentinel", error_code="NotSupported")

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        attack = Attack(self.target, station_id=self.station_id, source=self.source)
        try:
            ws = self.ws = await open_ws(attack)
            session = self.session = OcppSession(ws, RpcConnection(call_timeout=30), self._handle)
            async with trio.open_nursery() as nursery:
                await nursery.start(session.run)
                boot = boot_payload(self.station_id)
                resp = await session.call("BootNotification", boot)
                if resp["status"] != "Accepted":
                    raise OcppError(f"boot not accepted: {resp}", error_code="SecurityError")
                task_status.started()
        except* (TransportError, OcppError) as group:
            self.failure = group.exceptions[0]
        finally:
            self.ended.set()
            if self.ws is not None:  # cancelled with the test: drop the socket now, not at garbage collection
                with trio.CancelScope(shield=True):
                    await trio.aclose_forcefully(_raw_of(self.ws._stream))

    @property
    def connected(self) -> bool:
        return not self.ended.is_set() and self.ws is not None and not self.ws.closed

    async def rtt(self) -> float:
        """One Heartbeat round trip, in trio seconds."""
        assert self.session is not None
        start = trio.current_time()
        await self.session.call("Heartbeat", {})
        return trio.current_time() - start


# ---------------------------------------------------------------- node supervision


@attrs.define
class Supervised:
    """A node's serve task run so that its failure is recorded instead of tearing the test down."""

    name: str
    error: BaseException | None = None
    returned: bool = False

    async def run(
        self,
        serve: Callable[..., Awaitable[Any]],
        *,
        task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            await serve(task_status=task_status)
            self.returned = True
        except Exception as exc:  # the node crashed: that is what the tests look for
            self.error = exc

    @property
    def alive(self) -> bool:
        return self.error is None and not self.returned


def events_since(recorder: Recorder, node: str, index: int) -> list[Event]:
    return [e for e in list(recorder.events)[index:] if e.node == node]


def mentions(event: Event, *needles: str) -> bool:
    text = " ".join(str(v) for v in event.data.values())
    return any(n in text for n in needles)


# ---------------------------------------------------------------- what the catalogue checks


@attrs.frozen
class Expect:
    """What the node must record for a fault: exactly ``count`` events whose kind matches ``kind`` and whose
    ``reason``/``detail`` match ``reason`` (regexes),
    naming the attacker's station when ``station`` is True (and its address, see :func:`assert_recorded`).
    ``kind=""``: no refusal event is required."""

    kind: str
    reason: str = ""
    station: bool = False
    count: int = 1


Check = Callable[[dict[str, Any]], "str | None"]
"""Looks at what the attacker observed (``Attack.notes``); returns what is wrong, or None."""


def closed_by_node(notes: dict[str, Any]) -> str | None:
    return None if notes.get("closed_by_node") else "the node kept the connection open"


def reads_bounded(notes: dict[str, Any]) -> str | None:
    accepted = notes["bytes_accepted"]
    return None if accepted < 1 << 20 else f"the node read {accepted} bytes from a peer that never reads"


def answered_fragmented_boot(deflate: bool) -> Check:
    def check(notes: dict[str, Any]) -> str | None:
        frames = server_frames(notes.get("reply", b""), deflate=deflate)
        if not any(op == PONG for op, _ in frames):
            return f"no pong: {frames}"
        texts = [json.loads(p) for op, p in frames if op == TEXT]
        if not any(t[:2] == [3, "boot-frag"] for t in texts):
            return f"the fragmented BootNotification was not answered: {frames}"
        return None

    return check


def all_call_errors(notes: dict[str, Any]) -> str | None:
    replies = notes["replies"]
    bad = [r for r in replies if not (isinstance(r, list) and r and r[0] == 4)]
    return f"accepted: {bad}" if bad or not replies else None


def names_peer(event: Event, host: str) -> bool:
    """The event's ``peer`` field is ``host:<port>``."""
    peer = str(event.data.get("peer", ""))
    head, _, port = peer.rpartition(":")
    return head == host and port.isdigit()


def matching(events: list[Event], expect: Expect, station: str, peer: str | None = None) -> list[Event]:
    pattern = re.compile(expect.reason) if expect.reason else None
    kind = re.compile(expect.kind)
    out = []
    for e in events:
        if not kind.fullmatch(e.kind):
            continue
        if expect.station and e.data.get("station") != station:
            continue
        if peer is not None and not names_peer(e, peer):
            continue
        text = " ".join(str(e.data.get(k, "")) for k in ("reason", "detail"))
        if pattern is not None and not pattern.search(text):
            continue
        out.append(e)
    return out


def assert_recorded(events: list[Event], expect: Expect, station: str, peer: str | None = None) -> None:
    """The events hold what ``expect`` asks for; with ``peer`` (the attacker's host), each of them names the
    attacker's address (``peer`` = ``host:port``)."""
    if not expect.kind:
        return
    found = matching(events, expect, station, peer)
    assert len(found) == expect.count, (len(found), [(e.kind, e.data) for e in events])


HANDSHAKE = Expect("handshake_failed")
LOST = Expect("connection_lost")
DISCONNECTED = Expect("station_disconnected", station=True)
BAD_HTTP = Expect("upgrade_rejected", "bad_http_request")
UPGRADE_TIMEOUT = Expect("upgrade_rejected", "upgrade_timeout")
BOOT_TIMEOUT = Expect("boot_timeout", station=True)
NONE = Expect("")


async def _probe(sentinel: Sentinel, done: trio.Event, rtts: list[float]) -> None:
    while not done.is_set():
        rtts.append(await sentinel.rtt())
        with trio.move_on_after(7):
            await done.wait()


async def run_fault(
    recorder: Recorder, node: str, sentinel: Sentinel, fault: Fault, attack: Attack, *, settle: float = 120
) -> tuple[list[Event], list[float]]:
    """Run one attack while probing the sentinel every 7 s; then let the node's timers run out (``settle``).

    Returns:
        The node's events since the attack started (the sentinel's left out) and the round trips measured.
    """
    start = len(recorder.events)
    rtts: list[float] = []
    done = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_probe, sentinel, done, rtts)
        try:
            with trio.fail_after(3600):
                await fault(attack)
        finally:
            done.set()
    await trio.sleep(settle)
    rtts.append(await sentinel.rtt())
    events = [e for e in events_since(recorder, node, start) if e.data.get("station") != sentinel.station_id]
    return events, rtts


# ---------------------------------------------------------------- a hostile CSMS

Script = Callable[[WebSocket, str], Awaitable[None]]
"""What the hostile CSMS does on a station's WebSocket (``ws``, ``station_id``)."""


class HostileCsms:
    """A fake CSMS: TLS with a real server certificate, accepts any identity, then runs ``script``.

    Identities in ``relay`` are instead relayed, text for text, to the honest CSMS at ``upstream`` (as the
    same identity with the same Authorization header), so a controller's other stations keep working.

    Args:
        net: the network.
        host, port: where to listen.
        identity: the server certificate.
        clock: the run's clock.
        script: the hostile behaviour.
        relay: identities to relay honestly.
        upstream: ``(host, port, client_tls)`` of the honest CSMS.
    """

    def __init__(
        self,
        net: Network,
        host: str,
        port: int,
        identity: Identity,
        clock: SimClock,
        script: Script,
        *,
        relay: frozenset[str] = frozenset(),
        upstream: tuple[str, int, ClientTls] | None = None,
    ) -> None:
        self.net = net
        self.host = host
        self.port = port
        self.server_tls = ServerTls.build(TlsProfile(), identity)
        self.clock = clock
        self.script = script
        self.relay = relay
        self.upstream = upstream
        self.connections: dict[str, int] = {}
        self.errors: list[BaseException] = []

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listener = await self.net.listen(self.host, self.port)
        async with listener, trio.open_nursery() as nursery:
            task_status.started()
            while True:
                stream = await listener.accept()
                nursery.start_soon(self._handle, stream)

    async def _handle(self, stream: trio.abc.Stream) -> None:
        seen: dict[str, Any] = {}

        def decide(req: UpgradeRequest) -> Accept:
            seen["path"] = req.path
            seen["auth"] = req.headers.get("authorization")
            return Accept(subprotocol=req.subprotocols[0] if req.subprotocols else None)

        try:
            tls = await tls_accept(stream, self.server_tls, verify_time=self.clock.utcnow)
            ws = await ws_server(tls, decide, compression=False)
            if ws is None:
                return
            sid = str(seen["path"]).rsplit("/", 1)[-1]
            self.connections[sid] = self.connections.get(sid, 0) + 1
            try:
                if sid in self.relay:
                    await self._relay(ws, sid, seen.get("auth"))
                else:
                    await self.script(ws, sid)
            finally:
                await close_quietly(ws)
        except (TransportError, OcppError) as exc:
            self.errors.append(exc)
        finally:
            await close_quietly(stream)

    async def _relay(self, ws: WebSocket, sid: str, auth: str | None) -> None:
        assert self.upstream is not None
        host, port, client_tls = self.upstream
        raw = await self.net.connect(host, port, source=self.host)
        tls = await tls_connect(raw, client_tls, host, verify_time=self.clock.utcnow)
        up = await ws_client(
            tls,
            host=host,
            path=station_path("/ocpp", sid),
            subprotocols=[ws.subprotocol or SUBPROTOCOL],
            headers=[("Authorization", auth)] if auth else [],
            compression=False,
        )

        async def pump(a: WebSocket, b: WebSocket, scope: trio.CancelScope) -> None:
            with contextlib.suppress(TransportError):
                while True:
                    await b.send_text(await a.receive_text())
            scope.cancel()

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pump, ws, up, nursery.cancel_scope)
                nursery.start_soon(pump, up, ws, nursery.cancel_scope)
        finally:
            await close_quietly(up)


def now_iso(clock: SimClock) -> str:
    return isoformat(clock.utcnow())


async def answer_boot(ws: WebSocket, clock: SimClock, response: Mapping[str, Any]) -> str:
    """Read the station's BootNotification and answer it with ``response`` (``currentTime`` filled in)."""
    call = json.loads(await ws.receive_text())
    assert call[0] == 2 and call[2] == "BootNotification", call
    await ws.send_text(json.dumps([3, call[1], {"currentTime": now_iso(clock), **response}]))
    return str(call[1])


async def answer_everything(
    ws: WebSocket, clock: SimClock, *, interval: int = 60, budget: list[int] | None = None
) -> None:
    """Answer every CALL as an honest, minimal CSMS would, until the link ends or ``budget[0]`` (messages
    left, shared across connections; default 2000 for this one) runs out - then close: a station in a
    message storm would never let virtual time advance."""
    left = budget if budget is not None else [2000]
    with contextlib.suppress(TransportError):
        while left[0] > 0:
            left[0] -= 1
            msg = json.loads(await ws.receive_text())
            if msg[0] != 2:
                continue
            action = msg[2]
            payload: dict[str, Any] = {}
            if action == "BootNotification":
                payload = {"currentTime": now_iso(clock), "interval": interval, "status": "Accepted"}
            elif action == "Heartbeat":
                payload = {"currentTime": now_iso(clock)}
            elif action == "Authorize":
                payload = {"idTokenInfo": {"status": "Accepted"}}
            await ws.send_text(json.dumps([3, msg[1], payload]))
        await ws.aclose(1008, "message budget exhausted")
