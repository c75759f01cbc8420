"""The stack floor ladder: what each layer of a secured OCPP link costs, on trio and on asyncio, measured alike.

Every rung is one process holding both ends of ``BENCH_N`` loopback TCP connections (default 1000), as the fleets
do; one rung adds one layer to the one below it:

===============  ===========================================  ==============================================
layers           trio                                         asyncio
===============  ===========================================  ==============================================
TCP              ``trio.SocketStream`` (``trio.serve_tcp``),   asyncio streams, and an ``asyncio.Protocol``
                 and evsim's own ``evsim.net.tcp.TcpStream``   pair (callbacks, no task per end)
+ TLS 1.3        evsim's ``TlsStream`` (pyOpenSSL, the          Python's ``ssl`` (asyncio streams, as the
                 fleet's profile and PKI)                      asyncio peers' websockets uses it)
+ WebSocket      evsim's WebSocket (permessage-deflate)         websockets as A0 configures it (deflate)
full stack       the fleet's evsim row (``bench.evsim_peer``)   the fleet's A0 row (``bench.peer_asyncio``)
===============  ===========================================  ==============================================

Per rung: the *boot storm* (every connection opened at once: TCP connect and accept, then the TLS handshake,
then the WebSocket upgrade; process CPU from the first connect until both ends of every connection are open) and the
*steady state* (every connection echoes back to back: a 200-byte message on the TCP and TLS rungs, a 94-byte
OCPP-sized text frame on the WebSocket rungs; after a warm-up, process CPU and round trips over a fixed
window). evsim's rungs use the synchronous send paths evsim's own stack uses (``send_nowait``,
``send_text_nowait``). Every rung runs with evsim's garbage-collector setting (``evsim.runtime.GC_THRESHOLD``),
both runtimes alike.

    python -m bench.ladder --row trio-tls --n 1000 --seconds 1.5 --pki DIR --json   # one rung, one process

``section()`` (``python -m bench ladder``) runs every rung in its own subprocess, trio and asyncio rungs
interleaved, ``BENCH_LADDER_ROUNDS`` rounds (default 2; each figure is the median of the rounds),
``BENCH_LADDER_SECONDS`` seconds of steady state each (default 1.5). The two full stacks are the fleet section's
rows when it ran earlier in the same run (``make bench``), else they run once here with the ladder's window; the boot storms are compared with the raw pyOpenSSL handshake floor of the group each
negotiated (``bench/floor.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import trio

from bench.common import RECORD_ENV, Result, bench_problem, bench_table, cpu_s, raise_nofile
from bench.floor import handshake_floor, stdlib_floor
from evsim.clock import SimClock, real_utcnow
from evsim.net.tcp import TcpNetwork, TcpStream
from evsim.nodes.security import csms_server_tls, station_client_tls
from evsim.pki import DevPki, init_dev_pki
from evsim.runtime import GC_THRESHOLD
from evsim.tls import TlsStream, tls_accept, tls_connect
from evsim.ws import Accept, WebSocket, basic_auth_header, ws_client, ws_server

__all__ = ["ROWS", "RowResult", "main", "median_rows", "section"]

MESSAGE = b"x" * 200
"""The TCP and TLS rungs' message (the integrator's bare-loop experiment used the same)."""
WS_MESSAGE = '[3,"9f3c2a51-6a3e-4a7f-b1f3-0d0c7d5e9a11",{"currentTime":"2025-01-01T00:00:00.000Z"}]'
"""The WebSocket rungs' text frame: a Heartbeat CALLRESULT's size (94 bytes, as ``bench.ws_roundtrip``)."""
SUBPROTOCOL = "ocpp2.0.1"
HOST = "127.0.0.1"
SERVER_NAME = "localhost"
PASSWORD = "bench-password-000001"
WARMUP_S = 0.3
BACKLOG = 4096
BOOT_TIMEOUT_S = 300.0

ROWS: dict[str, tuple[str, str]] = {
    "trio-socketstream": ("trio", "TCP (trio.SocketStream)"),
    "asyncio-streams": ("asyncio", "TCP (asyncio streams)"),
    "trio-tcp": ("trio", "TCP (evsim TcpStream)"),
    "asyncio-protocol": ("asyncio", "TCP (asyncio.Protocol)"),
    "trio-tls": ("trio", "+ TLS 1.3 (evsim TlsStream)"),
    "asyncio-tls": ("asyncio", "+ TLS 1.3 (ssl, asyncio streams)"),
    "trio-ws": ("trio", "+ WebSocket (evsim, deflate)"),
    "asyncio-ws": ("asyncio", "+ WebSocket (websockets, deflate)"),
}
"""Rung name -> (runtime, what it holds), in the interleaved order a round runs them."""


@dataclass
class RowResult:
    """One rung measured once (the JSON ``--json`` prints)."""

    row: str
    n: int
    boot_wall_s: float
    boot_cpu_s: float
    round_trips: int
    steady_cpu_s: float
    steady_wall_s: float
    group: str = ""

    @property
    def cpu_us_per_rt(self) -> float:
        return self.steady_cpu_s / self.round_trips * 1e6 if self.round_trips else float("nan")

    @property
    def rt_per_s(self) -> float:
        return self.round_trips / self.steady_wall_s if self.steady_wall_s else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RowResult:
        return cls(
            row=str(data["row"]),
            n=int(data["n"]),
            boot_wall_s=float(data["boot_wall_s"]),
            boot_cpu_s=float(data["boot_cpu_s"]),
            round_trips=int(data["round_trips"]),
            steady_cpu_s=float(data["steady_cpu_s"]),
            steady_wall_s=float(data["steady_wall_s"]),
            group=str(data.get("group", "")),
        )


def median_rows(runs: Sequence[RowResult]) -> dict[str, float]:
    """The figures of one rung over its rounds: medians of CPU µs per round trip, round trips/s and boot CPU
    seconds, and the lowest and highest CPU µs per round trip (the spread)."""
    if not runs:
        raise ValueError("no runs")
    per_rt = [r.cpu_us_per_rt for r in runs]
    return {
        "cpu_us_per_rt": statistics.median(per_rt),
        "cpu_us_min": min(per_rt),
        "cpu_us_max": max(per_rt),
        "rt_per_s": statistics.median(r.rt_per_s for r in runs),
        "boot_cpu_s": statistics.median(r.boot_cpu_s for r in runs),
        "boot_wall_s": statistics.median(r.boot_wall_s for r in runs),
        "rounds": len(runs),
    }


# ------------------------------------------------------------------------------------------------ trio

RoundTrip = Callable[[], Awaitable[None]]


async def _receive_exactly(stream: trio.abc.ReceiveStream, size: int) -> None:
    got = 0
    while got < size:
        data = await stream.receive_some()
        if not data:
            raise trio.BrokenResourceError("the echo ended")
        got += len(data)


async def _send_fast(stream: TcpStream | TlsStream, data: bytes | bytearray) -> None:
    """Send as evsim's stack does: synchronously when the stream takes it, ``send_all`` otherwise."""
    taken = stream.send_nowait(data)
    if taken is None:
        await stream.send_all(data)
    elif not taken:
        await stream.send_all(b"")


async def _echo_bytes(stream: trio.abc.Stream, fast: bool) -> None:
    try:
        while True:
            data = await stream.receive_some()
            if not data:
                return
            if fast:
                assert isinstance(stream, TcpStream | TlsStream)
                await _send_fast(stream, data)
            else:
                await stream.send_all(data)
    except trio.BrokenResourceError:
        pass


async def _echo_ws(ws: WebSocket) -> None:
    try:
        while True:
            if not ws.send_text_nowait(await ws.receive_text()):
                await ws.flush()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


class _TrioRung:
    """Both ends of one trio rung: a server that echoes, and a client per connection."""

    def __init__(self, row: str, n: int, pki: DevPki) -> None:
        self.row = row
        self.n = n
        self.opened = 0  # connections the server side has finished opening (TLS handshake, upgrade)
        self.all_open = trio.Event()
        self.clock = SimClock.start()
        self.net = TcpNetwork()
        self.group = ""
        # the fleet's TLS: security profile 2, the shipped profile, the same PKI
        server_tls = csms_server_tls(pki, security_profile=2)
        assert server_tls is not None
        self.server_tls = server_tls
        self.client_tls = station_client_tls((pki.root.cert,))

    async def serve(self, nursery: trio.Nursery) -> int:
        if self.row == "trio-socketstream":

            async def plain(stream: trio.SocketStream) -> None:
                self._opened()
                await _echo_bytes(stream, fast=False)

            listeners = await nursery.start(
                functools.partial(trio.serve_tcp, plain, 0, host=HOST, backlog=BACKLOG)
            )
            return int(listeners[0].socket.getsockname()[1])
        listener = await self.net.listen(HOST, 0)

        async def accept_loop() -> None:
            async with listener, trio.open_nursery() as handlers:
                while True:
                    handlers.start_soon(self._handle, await listener.accept())

        nursery.start_soon(accept_loop)
        return listener.address[1]

    def _opened(self) -> None:
        self.opened += 1
        if self.opened == self.n:
            self.all_open.set()

    async def _handle(self, stream: TcpStream) -> None:
        if self.row == "trio-tcp":
            self._opened()
            await _echo_bytes(stream, fast=True)
            return
        tls = await tls_accept(stream, self.server_tls, verify_time=self.clock.utcnow)
        if self.row == "trio-tls":
            self._opened()
            await _echo_bytes(tls, fast=True)
            return
        ws = await ws_server(tls, lambda request: Accept(subprotocol=SUBPROTOCOL), compression=True)
        if ws is not None:
            self._opened()
            await _echo_ws(ws)

    async def connect(self, port: int, index: int) -> RoundTrip:
        if self.row == "trio-socketstream":
            plain = await trio.open_tcp_stream(HOST, port)

            async def plain_rt() -> None:
                await plain.send_all(MESSAGE)
                await _receive_exactly(plain, len(MESSAGE))

            return plain_rt
        stream: TcpStream | TlsStream = await self.net.connect(HOST, port)
        if self.row != "trio-tcp":
            stream = await tls_connect(stream, self.client_tls, SERVER_NAME, verify_time=self.clock.utcnow)
            self.group = stream.info.group or ""
        if self.row in ("trio-tcp", "trio-tls"):
            fast = stream

            async def bytes_rt() -> None:
                await _send_fast(fast, MESSAGE)
                await _receive_exactly(fast, len(MESSAGE))

            return bytes_rt
        ident = f"B-{index:04d}"
        ws = await ws_client(
            stream,
            host=SERVER_NAME,
            path=f"/ocpp/{ident}",
            subprotocols=[SUBPROTOCOL],
            headers=[basic_auth_header(ident, PASSWORD)],
            compression=True,
        )

        async def ws_rt() -> None:
            if not ws.send_text_nowait(WS_MESSAGE):
                await ws.flush()
            await ws.receive_text()

        return ws_rt


async def _trio_row(row: str, n: int, seconds: float, pki: DevPki) -> RowResult:
    rung = _TrioRung(row, n, pki)
    async with trio.open_nursery() as nursery:
        port = await rung.serve(nursery)
        clients: list[RoundTrip] = []

        async def open_one(index: int) -> None:
            clients.append(await rung.connect(port, index))

        wall0, cpu0 = time.perf_counter(), cpu_s()
        with trio.fail_after(BOOT_TIMEOUT_S):
            async with trio.open_nursery() as storm:
                for i in range(n):
                    storm.start_soon(open_one, i)
            await rung.all_open.wait()  # and the server side has finished every one
        boot_wall, boot_cpu = time.perf_counter() - wall0, cpu_s() - cpu0
        count = [0]
        running = [True]

        async def loop(round_trip: RoundTrip) -> None:
            while running[0]:
                await round_trip()
                count[0] += 1

        async with trio.open_nursery() as steady:
            for client in clients:
                steady.start_soon(loop, client)
            await trio.sleep(WARMUP_S)
            k0, c0, w0 = count[0], cpu_s(), time.perf_counter()
            await trio.sleep(seconds)
            k1, c1, w1 = count[0], cpu_s(), time.perf_counter()
            running[0] = False
        nursery.cancel_scope.cancel()
    return RowResult(row, n, boot_wall, boot_cpu, k1 - k0, c1 - c0, w1 - w0, rung.group)


# --------------------------------------------------------------------------------------------- asyncio


def _asyncio_group() -> str:
    # Python's ssl module does not say; the OpenSSL it links offers its first default group
    return "X25519MLKEM768" if ssl.OPENSSL_VERSION_INFO >= (3, 5) else "X25519"


class _EchoProtocol(asyncio.Protocol):
    def __init__(self, opened: Callable[[], None]) -> None:
        self.opened = opened

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.opened()

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


class _ClientProtocol(asyncio.Protocol):
    """Counts the echo's bytes; ``round_trip`` writes a message and waits until all of it came back."""

    def __init__(self) -> None:
        self.waiting: asyncio.Future[None] | None = None
        self.missing = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.missing -= len(data)
        if self.missing <= 0 and self.waiting is not None:
            self.waiting.set_result(None)
            self.waiting = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiting is not None and not self.waiting.done():
            self.waiting.set_exception(ConnectionError("the echo ended"))

    async def round_trip(self) -> None:
        self.missing = len(MESSAGE)
        self.waiting = asyncio.get_running_loop().create_future()
        self.transport.write(MESSAGE)
        await self.waiting


async def _asyncio_row(row: str, n: int, seconds: float, pki_dir: Path) -> RowResult:
    from bench.peer_asyncio import client_ssl_context, server_ssl_context

    loop = asyncio.get_running_loop()
    server_ctx = client_ctx = None
    if row in ("asyncio-tls", "asyncio-ws"):
        # the fleet's PKI, as the fleet section hands it to the asyncio peers
        server_ctx = server_ssl_context(pki_dir / "server.crt", pki_dir / "server.key")
        client_ctx = client_ssl_context(pki_dir / "ca.crt")
    closers: list[Callable[[], object]] = []
    round_trips: list[RoundTrip] = []

    handlers: set[asyncio.Task[Any]] = set()
    opened = [0]  # connections the server side has finished opening (TLS handshake, upgrade)
    all_open = asyncio.Event()

    def note_open() -> None:
        opened[0] += 1
        if opened[0] == n:
            all_open.set()

    async def echo_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        note_open()
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            handlers.discard(task)
        writer.close()

    if row in ("asyncio-streams", "asyncio-tls"):
        server: Any = await asyncio.start_server(
            echo_stream,
            HOST,
            0,
            backlog=BACKLOG,
            ssl=server_ctx,
            ssl_handshake_timeout=BOOT_TIMEOUT_S if server_ctx else None,
        )
    elif row == "asyncio-protocol":
        server = await loop.create_server(lambda: _EchoProtocol(note_open), HOST, 0, backlog=BACKLOG)
    else:
        from websockets.asyncio.server import ServerConnection, serve
        from websockets.exceptions import ConnectionClosed
        from websockets.typing import Subprotocol

        async def echo_ws(ws: ServerConnection) -> None:
            note_open()
            try:
                async for message in ws:
                    await ws.send(message)
            except ConnectionClosed:
                pass

        server = await serve(
            echo_ws,
            HOST,
            0,
            ssl=server_ctx,
            subprotocols=[Subprotocol(SUBPROTOCOL)],
            compression="deflate",
            open_timeout=BOOT_TIMEOUT_S,
            backlog=BACKLOG,
            ssl_handshake_timeout=BOOT_TIMEOUT_S,
        )
    port = server.sockets[0].getsockname()[1]

    async def open_one(index: int) -> None:
        if row in ("asyncio-streams", "asyncio-tls"):
            reader, writer = await asyncio.open_connection(
                HOST,
                port,
                ssl=client_ctx,
                server_hostname=SERVER_NAME if client_ctx else None,
                ssl_handshake_timeout=BOOT_TIMEOUT_S if client_ctx else None,
            )

            async def stream_rt() -> None:
                writer.write(MESSAGE)
                await writer.drain()
                got = 0
                while got < len(MESSAGE):
                    data = await reader.read(65536)
                    if not data:
                        raise ConnectionError("the echo ended")
                    got += len(data)

            round_trips.append(stream_rt)
            closers.append(writer.close)
        elif row == "asyncio-protocol":
            _, protocol = await loop.create_connection(_ClientProtocol, HOST, port)
            round_trips.append(protocol.round_trip)
            closers.append(protocol.transport.close)
        else:
            from websockets.asyncio.client import connect
            from websockets.typing import Subprotocol

            ident = f"B-{index:04d}"
            ws = await connect(
                f"wss://{HOST}:{port}/ocpp/{ident}",
                ssl=client_ctx,
                server_hostname=SERVER_NAME,
                subprotocols=[Subprotocol(SUBPROTOCOL)],
                compression="deflate",
                open_timeout=BOOT_TIMEOUT_S,
                ssl_handshake_timeout=BOOT_TIMEOUT_S,
                proxy=None,
            )

            async def ws_rt() -> None:
                await ws.send(WS_MESSAGE)
                await ws.recv()

            round_trips.append(ws_rt)
            closers.append(ws.transport.close)

    wall0, cpu0 = time.perf_counter(), cpu_s()
    async with asyncio.timeout(BOOT_TIMEOUT_S):
        await asyncio.gather(*(open_one(i) for i in range(n)))
        await all_open.wait()  # and the server side has finished every one
    boot_wall, boot_cpu = time.perf_counter() - wall0, cpu_s() - cpu0
    count = 0
    running = True

    async def run_loop(round_trip: RoundTrip) -> None:
        nonlocal count
        while running:
            await round_trip()
            count += 1

    tasks = [asyncio.create_task(run_loop(rt)) for rt in round_trips]
    await asyncio.sleep(WARMUP_S)
    k0, c0, w0 = count, cpu_s(), time.perf_counter()
    await asyncio.sleep(seconds)
    k1, c1, w1 = count, cpu_s(), time.perf_counter()
    running = False
    await asyncio.wait(tasks, timeout=30)
    for close in closers:
        close()
    if handlers:  # the echo handlers see the clients' EOF and end (not cancelled by asyncio.run)
        await asyncio.wait(set(handlers), timeout=30)
    server.close()
    await server.wait_closed()
    group = _asyncio_group() if client_ctx is not None else ""
    return RowResult(row, n, boot_wall, boot_cpu, k1 - k0, c1 - c0, w1 - w0, group)


# ------------------------------------------------------------------------------------------- section

FULL_STACKS = ("evsim", "A0")
"""The top rungs: evsim's fleet as shipped and the hand-written asyncio peer, each its own process."""

LADDER: tuple[tuple[str, str, str | None], ...] = (
    ("trio-socketstream", "trio", None),
    ("trio-tcp", "trio", None),
    ("trio-tls", "trio", "trio-tcp"),
    ("trio-ws", "trio", "trio-tls"),
    ("evsim", "trio", "trio-ws"),
    ("asyncio-protocol", "asyncio", None),
    ("asyncio-streams", "asyncio", None),
    ("asyncio-tls", "asyncio", "asyncio-streams"),
    ("asyncio-ws", "asyncio", "asyncio-tls"),
    ("A0", "asyncio", "asyncio-ws"),
)
"""Table order: (rung, runtime, the rung it adds a layer to); the asyncio TLS rung runs on asyncio streams."""


def _subprocess_json(cmd: list[str], timeout: float) -> dict[str, Any] | str:
    """Run ``cmd``; its last stdout line as JSON, or why there is none."""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return f"{' '.join(cmd[2:5])}: timed out after {timeout:.0f} s"
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        last = out.stderr.strip().splitlines()[-1:] or [f"status {out.returncode}"]
        return f"{' '.join(cmd[2:5])} failed: {last[0]}"
    data = json.loads(lines[-1])
    assert isinstance(data, dict)
    return data


def _run_rung(row: str, n: int, seconds: float, pki_dir: str) -> RowResult | str:
    cmd = [sys.executable, "-m", "bench.ladder", "--row", row, "--n", str(n), "--seconds", str(seconds)]
    data = _subprocess_json([*cmd, "--pki", pki_dir, "--json"], timeout=BOOT_TIMEOUT_S + 120)
    return data if isinstance(data, str) else RowResult.from_dict(data)


def from_fleet_result(stack: str, result: Result, n: int) -> RowResult:
    """A fleet's row as a full-stack rung (its round trips and CPU per second of its steady state)."""
    group = result.group or (_asyncio_group() if stack == "A0" else "")
    per_s = result.rtt_per_s
    return RowResult(
        stack,
        n,
        result.boot_storm_s,
        result.boot_cpu_s,
        round(per_s),
        result.cpu_us_per_rtt * per_s / 1e6,
        1.0,
        group,
    )


FLEET_NAMES = {"evsim": "evsim as shipped (", "A0": "A0:"}
"""How the fleet section names the rows the full-stack rungs are (``bench/__main__.py``)."""


def fleet_stacks(record_lines: Sequence[str]) -> dict[str, Result]:
    """The full stacks from the last fleet table among a run's record lines (``bench.common.RECORD_ENV``): the
    fleet section of the same run measured them, with the same N and PKI; ``{}`` when there is none."""
    raw: list[dict[str, Any]] = []
    for line in record_lines:
        entry = json.loads(line)
        if (
            entry.get("kind") == "table"
            and entry.get("key") == "fleet"
            and isinstance(entry.get("raw"), list)
        ):
            raw = entry["raw"]
    found: dict[str, Result] = {}
    for item in raw:
        result = Result.from_dict(item)
        for stack, prefix in FLEET_NAMES.items():
            if result.name.startswith(prefix) and stack not in found:
                found[stack] = result
    return found


def _fleet_of_this_run(n: int) -> dict[str, Result]:
    path = os.environ.get(RECORD_ENV)
    if not path or not os.path.exists(path) or os.environ.get("BENCH_N", "1000") != str(n):
        return {}
    with open(path, encoding="utf-8") as fh:
        return fleet_stacks(fh.read().splitlines())


def _run_full(stack: str, n: int, seconds: float, pki_dir: str) -> RowResult | str:
    """One full stack as the fleet section runs it (evsim as shipped, A0), with the ladder's window."""
    if stack == "evsim":
        cmd = ["bench.evsim_peer", "--pki", pki_dir, "--gc-threshold", str(GC_THRESHOLD[0])]
    else:
        pki = Path(pki_dir)
        cmd = ["bench.peer_asyncio", "--variant", "handwritten"]
        cmd += [
            "--ca",
            str(pki / "ca.crt"),
            "--cert",
            str(pki / "server.crt"),
            "--key",
            str(pki / "server.key"),
        ]
    full = [sys.executable, "-m", *cmd, "--n", str(n), "--rtt-seconds", str(seconds), "--json"]
    data = _subprocess_json(full, timeout=420)
    return data if isinstance(data, str) else from_fleet_result(stack, Result.from_dict(data), n)


def measure(n: int, seconds: float, rounds: int) -> tuple[dict[str, list[RowResult]], list[str], bool]:
    """Every rung ``rounds`` times (a round runs them all, trio and asyncio interleaved), and the full stacks:
    the fleet section's rows when it ran earlier in this run, else once here after the first round. Returns the
    runs by rung, the problems, and whether the full stacks came from the fleet section."""
    runs: dict[str, list[RowResult]] = {row: [] for row, _, _ in LADDER}
    problems: list[str] = []
    fleet = _fleet_of_this_run(n)
    for stack, fleet_row in fleet.items():
        runs[stack].append(from_fleet_result(stack, fleet_row, n))
    with tempfile.TemporaryDirectory(prefix="evsim-ladder-") as tmp:
        init_dev_pki(tmp, host="localhost", now=real_utcnow())
        for round_no in range(rounds):
            for row in ROWS:
                result = _run_rung(row, n, seconds, tmp)
                if isinstance(result, str):
                    problems.append(result)
                else:
                    runs[row].append(result)
            if round_no == 0:
                for stack in (s for s in FULL_STACKS if s not in fleet):
                    full = _run_full(stack, n, seconds, tmp)
                    if isinstance(full, str):
                        problems.append(full)
                    else:
                        runs[stack].append(full)
    return runs, problems, bool(fleet)


def _label(row: str) -> str:
    if row == "evsim":
        return "full stack: evsim fleet as shipped (OCPP, validation on)"
    if row == "A0":
        return "full stack: A0, websockets + hand-written OCPP-J (orjson)"
    return ROWS[row][1]


def render(
    runs: dict[str, list[RowResult]], floors: dict[str, float]
) -> tuple[list[list[object]], list[list[object]], list[list[object]]]:
    """The three tables' rows (steady state, boot storm, what the targets leave) from the runs and the floors
    (storm floor in CPU seconds by lower-case group name)."""
    fig = {row: median_rows(r) for row, r in runs.items() if r}
    groups = {row: r[0].group for row, r in runs.items() if r and r[0].group}
    runtime_group = {
        rt: next((groups[row] for row, t, _ in LADDER if t == rt and row in groups), "")
        for rt in ("trio", "asyncio")
    }
    steady: list[list[object]] = []
    boot: list[list[object]] = []
    for row, runtime, below in LADDER:
        if row not in fig:
            continue
        f = fig[row]
        spread = f"{f['cpu_us_min']:.0f}-{f['cpu_us_max']:.0f}" if f["rounds"] > 1 else "-"
        added = f"{f['cpu_us_per_rt'] - fig[below]['cpu_us_per_rt']:+.0f}" if below in fig else "-"
        steady.append(
            [
                runtime,
                _label(row),
                f"{f['cpu_us_per_rt']:.0f}",
                spread,
                added,
                f"{f['rt_per_s']:.0f}",
                f["rounds"],
            ]
        )
        group = groups.get(row) or runtime_group[runtime]
        floor = floors.get(group.lower())
        boot_added = f"{f['boot_cpu_s'] - fig[below]['boot_cpu_s']:+.2f}" if below in fig else "-"
        boot.append(
            [
                runtime,
                _label(row),
                group if row in groups else f"({group})",
                f"{f['boot_cpu_s']:.2f}",
                boot_added,
                f"{f['boot_cpu_s'] / floor:.2f}x" if floor else "-",
                f"{f['boot_wall_s']:.2f}",
            ]
        )
    targets: list[list[object]] = []

    def allowance(title: str, rows: Sequence[str], key: str, allowed: float, unit: str, digits: int) -> None:
        for row in rows:
            if row in fig:
                used = fig[row][key]
                targets.append(
                    [
                        title,
                        _label(row),
                        f"{used:.{digits}f} {unit}",
                        f"{used / allowed:.0%}",
                        f"{allowed - used:+.{digits}f} {unit}",
                    ]
                )

    if "A0" in fig:
        budget = fig["A0"]["cpu_us_per_rt"] / 1.5
        allowance(
            f"round trip: 1.5x A0's RT/s allows {budget:.0f} us CPU",
            ("trio-socketstream", "trio-tcp", "trio-tls", "trio-ws", "evsim"),
            "cpu_us_per_rt",
            budget,
            "us",
            0,
        )
    trio_floor = floors.get(runtime_group["trio"].lower())
    if trio_floor:
        allowed = 1.5 * trio_floor
        allowance(
            f"boot storm: 1.5x the {runtime_group['trio']} floor allows {allowed:.2f} s CPU",
            ("trio-tcp", "trio-tls", "trio-ws", "evsim"),
            "boot_cpu_s",
            allowed,
            "s",
            2,
        )
    return steady, boot, targets


def section() -> None:
    """``python -m bench ladder``: the rungs, the full stacks and the floors, printed as three tables."""
    n = int(os.environ.get("BENCH_N", "1000"))
    seconds = float(os.environ.get("BENCH_LADDER_SECONDS", "1.5"))
    rounds = int(os.environ.get("BENCH_LADDER_ROUNDS", "2"))
    runs, problems, from_fleet = measure(n, seconds, rounds)
    for problem in problems:
        print(bench_problem(problem))
    groups = sorted({r[0].group for r in runs.values() if r and r[0].group})
    floors_raw = [handshake_floor(500, stations=n, group=g) for g in groups]
    floors = {str(f["group"]).lower(): float(f["storm_floor_s"]) for f in floors_raw}
    # shown, not divided by: the asyncio rungs are held to pyOpenSSL's floor, as in the fleet table
    std = stdlib_floor(500, stations=n)
    steady, boot, targets = render(runs, floors)
    raw = {row: [r.to_dict() for r in rs] for row, rs in runs.items()}
    print(
        bench_table(
            "ladder",
            [
                "runtime",
                "layers (each rung adds one)",
                "CPU us/RT",
                "rounds' range",
                "+ over rung below",
                "RT/s",
                "rounds",
            ],
            steady,
            title=f"Stack ladder, steady state: N = {n} connections echoing back to back in one process, loopback, "
            f"{seconds:g} s windows, CPU of both ends per round trip (median of the rounds); full stacks: "
            + ("the fleet section of this run" if from_fleet else f"run once here, {seconds:g} s window"),
            raw=raw,
        )
    )
    print(
        bench_table(
            "ladder",
            [
                "runtime",
                "layers",
                "group",
                "boot CPU s",
                "+ over rung below",
                "CPU x floor (same group)",
                "boot wall s",
            ],
            boot,
            title=f"Stack ladder, boot storm: N = {n} connections opened at once (floor: raw pyOpenSSL handshakes "
            + ", ".join(f"{f['group']} {f['storm_floor_s']:.2f} s" for f in floors_raw)
            + f"; Python's ssl ({' '.join(str(std['openssl']).split()[:2])}) {std['storm_floor_s']:.2f} s"
            + "; group in brackets: the rung has no TLS, compared with its runtime's TLS floor)",
            raw={"pyopenssl": floors_raw, "python_ssl": std},
        )
    )
    if targets:
        print(
            bench_table(
                "ladder",
                ["target", "rung", "costs", "share of the allowance", "left"],
                targets,
                title="What the targets leave (issue #16: >= 1.5x A0's round trips/s; boot storm <= 1.5x the floor)",
            )
        )


# ------------------------------------------------------------------------------------------ one rung


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ladder", description=__doc__.split("\n\n")[0])
    p.add_argument("--row", choices=list(ROWS), required=True)
    p.add_argument("--n", type=int, default=1000, help="connections (default 1000)")
    p.add_argument("--seconds", type=float, default=1.5, help="steady-state window (default 1.5)")
    p.add_argument("--pki", type=Path, required=True, help="a development PKI directory (evsim certs init)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    raise_nofile()
    gc.set_threshold(*GC_THRESHOLD)
    if ROWS[args.row][0] == "trio":
        result = trio.run(_trio_row, args.row, args.n, args.seconds, DevPki.load(args.pki))
    else:
        result = asyncio.run(_asyncio_row(args.row, args.n, args.seconds, args.pki))
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(
            f"{args.row}: boot CPU {result.boot_cpu_s:.2f} s (wall {result.boot_wall_s:.2f} s), "
            f"{result.cpu_us_per_rt:.1f} us CPU per round trip, {result.rt_per_s:.0f} RT/s {result.group}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
