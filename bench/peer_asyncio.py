"""The asyncio peers: a CSMS and N stations in ONE asyncio process, over loopback TLS 1.3 + WebSocket.

Run as a subprocess of the benchmark so its event loop, threads and memory are its own:

    python -m bench.peer_asyncio --variant ocpp-lib|handwritten --n 1000 \\
        [--ca CA.pem --cert SERVER.pem --key SERVER.key] [--rtt-seconds 10] [--json]

Variants (performance.md names):

* ``ocpp-lib`` ("A"): the ``ocpp`` library's v201 ``ChargePoint`` on both ends over websockets 17, library
  defaults: schema validation on (in the default thread pool), permessage-deflate, keepalive pings.
* ``handwritten`` ("A0"): websockets 17 with a minimal hand-written OCPP-J (orjson frames, one outstanding
  CALL, no schema validation); websockets defaults otherwise (permessage-deflate, pings) unless
  ``--compression none``.

Phases: boot storm (all N connects started at once; wall time until every station's BootNotification was
Accepted), memory ((RSS after boot - RSS before) / booted stations, both ends), steady state (every
station loops Heartbeat round trips back to back for ``--rtt-seconds``; round trips/s and process CPU per
round trip, both ends and all threads). Every phase has a deadline and a stuck process is killed by
faulthandler at ``--hard-cap`` seconds, so a run always ends. If not every station boots in time the run
goes on with those that did and says so in ``notes``.

One JSON object with the fields of ``bench.common.Result`` is printed on stdout with ``--json``; progress
goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import faulthandler
import gc
import json
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from bench.common import Result, cpu_s, latency_percentiles_ms, make_bench_pki, raise_nofile, rss_kib

__all__ = ["PeerConfig", "main", "run_peer"]

VARIANTS = ("ocpp-lib", "handwritten")
SUBPROTOCOL = Subprotocol("ocpp2.0.1")
HOST = "127.0.0.1"
SERVER_NAME = "localhost"
BACKLOG = 4096
HEARTBEAT_INTERVAL = 300
STEADY_DRAIN_S = 35.0  # the ocpp library's response timeout is 30 s; in-flight calls get that long
CLOSE_TIMEOUT_S = 20.0
SETUP_MARGIN_S = 15.0

BOOT_PAYLOAD: dict[str, Any] = {
    "chargingStation": {"model": "evsim-bench", "vendorName": "evsim"},
    "reason": "PowerUp",
}


class BenchError(Exception):
    """A peer misbehaved (rejected boot, CALLERROR, malformed frame)."""


@dataclass
class PeerConfig:
    variant: str
    n: int
    ca: Path
    cert: Path
    key: Path
    rtt_seconds: float = 10.0
    hb_interval: float = 10.0
    hb_seconds: float = 0.0
    boot_timeout: float = 150.0
    compression: str | None = "deflate"
    hard_cap: float = 300.0


def _now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _log(message: str) -> None:
    print(f"[peer_asyncio] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------- TLS


def server_ssl_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


def client_ssl_context(ca: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verify_mode CERT_REQUIRED, check_hostname on
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(str(ca))
    return ctx


# ----------------------------------------------------------------------------------------- stations


class Station(Protocol):
    ident: str

    async def boot(self) -> None: ...

    async def heartbeat(self) -> None: ...

    async def aclose(self) -> None: ...


Handler = Callable[[ServerConnection], Awaitable[None]]


@dataclass
class _Wire:
    """How a station reaches the CSMS: URI base and the keyword arguments for ``websockets.connect``."""

    base_uri: str
    connect_kwargs: dict[str, Any]

    async def open(self, ident: str) -> ClientConnection:
        return await connect(f"{self.base_uri}/{ident}", **self.connect_kwargs)


class HandwrittenStation:
    """A0 station: one outstanding CALL, frames built and parsed with orjson, no validation."""

    def __init__(self, ident: str, wire: _Wire) -> None:
        self.ident = ident
        self._wire = wire
        self._ws: ClientConnection | None = None
        self._seq = 0

    async def _call(self, action: str, payload: dict[str, Any]) -> Any:
        ws = self._ws
        assert ws is not None
        self._seq += 1
        uid = str(self._seq)
        await ws.send(orjson.dumps([2, uid, action, payload]), text=True)
        while True:
            frame = orjson.loads(await ws.recv(decode=False))
            if not isinstance(frame, list) or len(frame) < 3:
                raise BenchError(f"{self.ident}: malformed frame {frame!r}")
            if frame[1] != uid:
                continue  # the bench CSMS never calls the station; stale replies are dropped
            if frame[0] == 3:
                return frame[2]
            raise BenchError(f"{self.ident}: {action} answered with {frame!r}")

    async def boot(self) -> None:
        self._ws = await self._wire.open(self.ident)
        reply = await self._call("BootNotification", BOOT_PAYLOAD)
        if reply.get("status") != "Accepted":
            raise BenchError(f"{self.ident}: BootNotification {reply!r}")

    async def heartbeat(self) -> None:
        await self._call("Heartbeat", {})

    async def aclose(self) -> None:
        if self._ws is not None:
            await self._ws.close()


async def handwritten_csms(ws: ServerConnection) -> None:
    """A0 CSMS connection handler: answers BootNotification and Heartbeat, NotImplemented otherwise."""
    try:
        while True:
            frame = orjson.loads(await ws.recv(decode=False))
            if not isinstance(frame, list) or len(frame) < 4 or frame[0] != 2:
                continue
            action = frame[2]
            if action == "Heartbeat":
                reply: list[Any] = [3, frame[1], {"currentTime": _now_iso()}]
            elif action == "BootNotification":
                reply = [
                    3,
                    frame[1],
                    {"currentTime": _now_iso(), "interval": HEARTBEAT_INTERVAL, "status": "Accepted"},
                ]
            else:
                reply = [4, frame[1], "NotImplemented", f"{action} not supported", {}]
            await ws.send(orjson.dumps(reply), text=True)
    except ConnectionClosed:
        pass


def _ocpp_lib_parts() -> tuple[Callable[[str, _Wire], Station], Handler]:
    """Build the ``ocpp``-library station and CSMS handler (imported lazily: only this variant needs it)."""
    from ocpp.routing import on
    from ocpp.v201 import ChargePoint, call, call_result
    from ocpp.v201.enums import Action, BootReasonEnumType, RegistrationStatusEnumType

    class CsmsChargePoint(ChargePoint):  # type: ignore[misc]
        @on(Action.boot_notification)  # type: ignore[untyped-decorator]
        def on_boot_notification(self, charging_station: Any, reason: Any, **kwargs: Any) -> Any:
            return call_result.BootNotification(
                current_time=_now_iso(),
                interval=HEARTBEAT_INTERVAL,
                status=RegistrationStatusEnumType.accepted,
            )

        @on(Action.heartbeat)  # type: ignore[untyped-decorator]
        def on_heartbeat(self, **kwargs: Any) -> Any:
            return call_result.Heartbeat(current_time=_now_iso())

    class LibStation:
        """A station driven by the library's v201 ``ChargePoint`` (a reader task routes replies)."""

        def __init__(self, ident: str, wire: _Wire) -> None:
            self.ident = ident
            self._wire = wire
            self._ws: ClientConnection | None = None
            self._cp: Any = None
            self._reader: asyncio.Task[None] | None = None

        async def _read(self) -> None:
            with contextlib.suppress(ConnectionClosed):
                await self._cp.start()

        async def boot(self) -> None:
            self._ws = await self._wire.open(self.ident)
            self._cp = ChargePoint(self.ident, self._ws)
            self._reader = asyncio.create_task(self._read())
            reply = await self._cp.call(
                call.BootNotification(
                    charging_station={"model": "evsim-bench", "vendor_name": "evsim"},
                    reason=BootReasonEnumType.power_up,
                )
            )
            if reply is None or reply.status != RegistrationStatusEnumType.accepted:
                raise BenchError(f"{self.ident}: BootNotification {reply!r}")

        async def heartbeat(self) -> None:
            if await self._cp.call(call.Heartbeat()) is None:
                raise BenchError(f"{self.ident}: Heartbeat answered with a CALLERROR")

        async def aclose(self) -> None:
            if self._ws is not None:
                await self._ws.close()
            if self._reader is not None:
                self._reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._reader

    async def csms(ws: ServerConnection) -> None:
        ident = ws.request.path.strip("/") if ws.request is not None else "unknown"
        with contextlib.suppress(ConnectionClosed):
            await CsmsChargePoint(ident, ws).start()

    return LibStation, csms


def _parts(variant: str) -> tuple[Callable[[str, _Wire], Station], Handler]:
    if variant == "handwritten":
        return HandwrittenStation, handwritten_csms
    if variant == "ocpp-lib":
        return _ocpp_lib_parts()
    raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")


# -------------------------------------------------------------------------------------------- phases


@dataclass
class _Boot:
    booted: list[Station] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    timed_out: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0


async def _boot_storm(stations: list[Station], deadline_s: float) -> _Boot:
    out = _Boot()
    t0, c0 = time.perf_counter(), cpu_s()

    async def boot_one(station: Station) -> Station:
        await station.boot()
        out.times.append(time.perf_counter() - t0)
        return station

    tasks = {asyncio.create_task(boot_one(st)): st for st in stations}
    _done, pending = await asyncio.wait(tasks, timeout=deadline_s)
    out.timed_out = len(pending)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=CLOSE_TIMEOUT_S)
    for task in tasks:
        if not task.done() or task.cancelled():
            continue
        exc = task.exception()
        if exc is None:
            out.booted.append(task.result())
        else:
            kind = type(exc).__name__
            out.errors[kind] = out.errors.get(kind, 0) + 1
    out.wall_s = max(out.times) if out.times else deadline_s
    out.cpu_s = cpu_s() - c0
    return out


@dataclass
class _Steady:
    round_trips: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    errors: int = 0


async def _steady_state(stations: list[Station], seconds: float) -> _Steady:
    running = True

    async def loop(station: Station) -> int:
        count = 0
        while running:
            await station.heartbeat()
            count += 1
        return count

    out = _Steady()
    wall0, cpu0 = time.perf_counter(), cpu_s()
    tasks = [asyncio.create_task(loop(st)) for st in stations]
    await asyncio.sleep(seconds)
    running = False
    _done, pending = await asyncio.wait(tasks, timeout=STEADY_DRAIN_S)
    out.wall_s, out.cpu_s = time.perf_counter() - wall0, cpu_s() - cpu0
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=CLOSE_TIMEOUT_S)
    for task in tasks:
        if not task.done() or task.cancelled() or task.exception() is not None:
            out.errors += 1
        else:
            out.round_trips += task.result()
    return out


async def _paced_heartbeats(stations: list[Station], interval: float, seconds: float) -> list[float]:
    """Each station sends a Heartbeat every ``interval`` seconds for ``seconds`` (start phases spread evenly
    over one interval; as ``bench.evsim_peer``); returns each round trip's latency in seconds."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    start = loop.time() + 0.1
    end = start + seconds

    async def paced(station: Station, phase: float) -> None:
        at = start + phase
        while at < end:
            await asyncio.sleep(max(0.0, at - loop.time()))
            sent = time.perf_counter()
            await station.heartbeat()
            latencies.append(time.perf_counter() - sent)
            at += interval

    tasks = [asyncio.create_task(paced(st, interval * i / len(stations))) for i, st in enumerate(stations)]
    _done, pending = await asyncio.wait(tasks, timeout=seconds + interval + STEADY_DRAIN_S)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=CLOSE_TIMEOUT_S)
    return latencies


async def _close_all(stations: list[Station], server: Server) -> None:
    async def close_one(station: Station) -> None:
        with contextlib.suppress(ConnectionClosed, OSError):
            await station.aclose()

    if stations:
        closers = [asyncio.create_task(close_one(st)) for st in stations]
        _done, pending = await asyncio.wait(closers, timeout=CLOSE_TIMEOUT_S)
        for task in pending:
            task.cancel()
    server.close()
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await server.wait_closed()
    except TimeoutError:
        _log("server did not close in time")


async def run_peer(cfg: PeerConfig) -> Result:
    """Run the three phases for ``cfg`` in the running asyncio loop and return the row."""
    raise_nofile()
    make_station, csms_handler = _parts(cfg.variant)
    server_ctx = server_ssl_context(cfg.cert, cfg.key)
    client_ctx = client_ssl_context(cfg.ca)

    server = await serve(
        csms_handler,
        HOST,
        0,
        ssl=server_ctx,
        subprotocols=[SUBPROTOCOL],
        compression=cfg.compression,
        open_timeout=cfg.boot_timeout,
        backlog=BACKLOG,
        ssl_handshake_timeout=cfg.boot_timeout,
    )
    port = server.sockets[0].getsockname()[1]
    wire = _Wire(
        base_uri=f"wss://{HOST}:{port}",
        connect_kwargs={
            "ssl": client_ctx,
            "server_hostname": SERVER_NAME,
            "subprotocols": [SUBPROTOCOL],
            "compression": cfg.compression,
            "open_timeout": cfg.boot_timeout,
            "ssl_handshake_timeout": cfg.boot_timeout,
            "proxy": None,
        },
    )
    stations = [make_station(f"CS{i:05d}", wire) for i in range(cfg.n)]

    gc.collect()
    rss_before = rss_kib()
    _log(f"{cfg.variant}: CSMS on {HOST}:{port}; booting {cfg.n} stations (timeout {cfg.boot_timeout:.0f} s)")
    boot = await _boot_storm(stations, cfg.boot_timeout)
    gc.collect()
    rss_after = rss_kib()
    n_booted = len(boot.booted)
    _log(f"{cfg.variant}: booted {n_booted}/{cfg.n} in {boot.wall_s:.2f} s")

    steady = _Steady()
    if n_booted:
        steady = await _steady_state(boot.booted, cfg.rtt_seconds)
        _log(
            f"{cfg.variant}: {steady.round_trips} heartbeat round trips in {steady.wall_s:.2f} s "
            f"({steady.errors} station loops failed)"
        )
    latencies: list[float] = []
    if n_booted and cfg.hb_seconds > 0:
        latencies = await _paced_heartbeats(boot.booted, cfg.hb_interval, cfg.hb_seconds)
    await _close_all(boot.booted, server)

    notes = [f"booted {n_booted}/{cfg.n}"]
    if n_booted < cfg.n:
        notes.append(
            f"PARTIAL: {cfg.n - n_booted} not booted within {cfg.boot_timeout:g} s "
            f"(cut off {boot.timed_out}, failed {boot.errors}); "
            "boot_storm_s is the last successful boot (the deadline if none)"
        )
    if boot.times:
        notes.append(f"median boot {statistics.median(boot.times):.2f} s")
    if steady.errors:
        notes.append(f"{steady.errors} heartbeat loops failed")
    notes.append("validation on (thread pool), " if cfg.variant == "ocpp-lib" else "no validation, orjson, ")
    notes[-1] += f"compression={cfg.compression or 'none'}, pings default, TLS1.3 ECDSA P-256, loopback"
    return Result(
        name="A: ocpp lib + websockets" if cfg.variant == "ocpp-lib" else "A0: websockets + hand-written",
        boot_storm_s=round(boot.wall_s, 4),
        rtt_per_s=round(steady.round_trips / steady.wall_s, 1) if steady.wall_s else 0.0,
        cpu_us_per_rtt=round(steady.cpu_s / steady.round_trips * 1e6, 1) if steady.round_trips else 0.0,
        kib_per_station=round((rss_after - rss_before) / n_booted, 1) if n_booted else 0.0,
        notes="; ".join(notes),
        boot_cpu_s=round(boot.cpu_s, 4),
        hb_ms=latency_percentiles_ms(latencies),
        hb_count=len(latencies),
    )


# ----------------------------------------------------------------------------------------------- CLI


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.peer_asyncio", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--variant", choices=VARIANTS, required=True)
    parser.add_argument("--n", type=int, default=1000, help="stations (default 1000)")
    parser.add_argument("--ca", type=Path, help="root CA (PEM); without --ca/--cert/--key a throwaway PKI")
    parser.add_argument("--cert", type=Path, help="CSMS certificate (PEM, CN/SAN localhost)")
    parser.add_argument("--key", type=Path, help="CSMS private key (PEM)")
    parser.add_argument("--rtt-seconds", type=float, default=10.0, help="steady-state duration (default 10)")
    parser.add_argument(
        "--hb-interval", type=float, default=10.0, help="paced phase: seconds between Heartbeats"
    )
    parser.add_argument("--hb-seconds", type=float, default=0.0, help="paced phase length (default 0: none)")
    parser.add_argument(
        "--boot-timeout", type=float, default=150.0, help="boot storm deadline, also the open timeout"
    )
    parser.add_argument("--compression", choices=("deflate", "none"), default="deflate")
    parser.add_argument("--hard-cap", type=float, default=300.0, help="kill the process after this long")
    parser.add_argument(
        "--gc-threshold",
        type=int,
        default=None,
        help="gc.set_threshold(N, 20, 100) before the run, as bench.evsim_peer's option (default: Python's)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    args = parser.parse_args(argv)
    given = [args.ca, args.cert, args.key]
    if any(given) and not all(given):
        parser.error("--ca, --cert and --key go together")
    if args.n < 1 or args.rtt_seconds <= 0 or args.boot_timeout <= 0:
        parser.error("--n, --rtt-seconds and --boot-timeout must be positive")
    budget = (
        args.boot_timeout
        + args.rtt_seconds
        + args.hb_seconds
        + args.hb_interval
        + 2 * STEADY_DRAIN_S
        + 3 * CLOSE_TIMEOUT_S
        + SETUP_MARGIN_S
    )
    if budget > args.hard_cap:
        args.boot_timeout = max(1.0, args.hard_cap - (budget - args.boot_timeout))
        _log(f"boot timeout lowered to {args.boot_timeout:.0f} s to fit the {args.hard_cap:.0f} s hard cap")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    faulthandler.dump_traceback_later(args.hard_cap, exit=True)
    if args.gc_threshold is not None:
        gc.set_threshold(args.gc_threshold, 20, 100)
    try:
        with tempfile.TemporaryDirectory(prefix="evsim-peer-") as tmp:
            pki = (
                {"ca": args.ca, "cert": args.cert, "key": args.key} if args.ca else make_bench_pki(Path(tmp))
            )
            cfg = PeerConfig(
                variant=args.variant,
                n=args.n,
                ca=pki["ca"],
                cert=pki["cert"],
                key=pki["key"],
                rtt_seconds=args.rtt_seconds,
                hb_interval=args.hb_interval,
                hb_seconds=args.hb_seconds,
                boot_timeout=args.boot_timeout,
                compression=None if args.compression == "none" else args.compression,
                hard_cap=args.hard_cap,
            )
            result = asyncio.run(run_peer(cfg))
    finally:
        faulthandler.cancel_dump_traceback_later()
    if args.json:
        print(json.dumps(result.to_dict()), flush=True)
    else:
        for key, value in result.to_dict().items():
            print(f"{key:>16}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
