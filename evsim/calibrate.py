"""``evsim calibrate``: measure the CPU model's service times (:mod:`evsim.cpu`) on this machine.

Theory of operation. Every operation runs through evsim's own code, both ends in one trio run over
in-memory streams: TLS handshakes through ``tls_connect`` / ``tls_accept`` (pyOpenSSL), WebSocket upgrades
through ``ws_client`` / ``ws_server``, OCPP CALLs through two :class:`~evsim.ocpp.session.OcppSession` over
WebSockets over TLS, as a station and a CSMS exchange them. A :class:`trio.abc.Instrument` reads the
thread's CPU time around every task step and gives it to the side whose task (or an ancestor of it) is
named the client or the server; what runs in neither (trio's scheduler between steps) is split between
the two in proportion, since each real process pays its own. Costs are the median per operation over
rounds, in microseconds of one core.

Measured kinds: TLS 1.3 full (EC and RSA server keys), mutual and resumed (EC); TLS 1.2 full and resumed
(EC); ``ws/client`` and ``ws/server``; ``ocpp/call/<action>`` and ``ocpp/serve/<action>`` (validation off)
for the messages of a station's life, ``validate/<action>`` (both schemas of a CALL and its answer, the
registry's compiled validators), and ``per_kib`` of ``ocpp/call`` and ``ocpp/serve`` from DataTransfer of
two sizes. ``relay/<side>`` (a controller moving one frame) is taken as the WebSocket receive and send
share of a round trip, estimated as the serve cost of Heartbeat. The first row of each kind also fills the
shorter prefixes (``tls/server`` is TLS 1.3 full EC), so unmeasured variants fall back to it.

Then, unless ``--storm 0``, the costs are fitted to a real boot storm of ``--storm`` stations over loopback in
two processes (:mod:`evsim.stormfit`): operations measured alone cost less than inside a storm (a quiet
core, warm caches) and a machine's speed drifts, so each side's costs are scaled to the CPU its process
really spent in a storm run minutes before the profile is used; their proportions stay as measured alone.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import platform
import random
import ssl
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio
import trio.testing

from evsim import interrupts
from evsim.clock import SimClock, real_utcnow
from evsim.cpu import Cpu, CpuProfile, Kind, write_profile
from evsim.errors import ConfigError
from evsim.frozenmap import FrozenMap
from evsim.net.tcp import TcpNetwork
from evsim.nodes.csms import Csms, CsmsConfig
from evsim.nodes.station import Station
from evsim.nodes.station_model import StationConfig
from evsim.ocpp.rpc import RpcConnection
from evsim.ocpp.schema import SchemaRegistry
from evsim.ocpp.session import OcppSession
from evsim.pki import CertificateAuthority, KeyType
from evsim.recorder import Recorder
from evsim.report import table
from evsim.tls import (
    ClientTls,
    Identity,
    ServerTls,
    TlsProfile,
    TlsSession,
    TlsStream,
    TrustStore,
    tls_accept,
    tls_connect,
)
from evsim.tls.cost import handshake_kind
from evsim.ws import Accept, WebSocket, ws_client, ws_server

__all__ = ["DEFAULT_STORM", "MESSAGES", "calibrate", "command", "write_profile"]

DEFAULT_STORM = 300
"""Stations of the real boot storm the measured costs are fitted to (:mod:`evsim.stormfit`; 0: none)."""
MAX_STORM = 10_000
"""The largest fit storm: it runs three times in this process, and a bigger one needs more memory than it tells."""
HOST = "csms.evsim.test"
CLIENT = "evsim-calibrate-client"
SERVER = "evsim-calibrate-server"
SUBPROTOCOL = "ocpp2.0.1"

#: (action, request, response): the messages of a station's life, answered as a CSMS answers them.
MESSAGES: tuple[tuple[str, dict[str, Any], dict[str, Any]], ...] = (
    (
        "BootNotification",
        {
            "reason": "PowerUp",
            "chargingStation": {
                "serialNumber": "CS-CAL-0001",
                "model": "evsim",
                "vendorName": "evsim",
                "firmwareVersion": "1.0.0",
            },
        },
        {"currentTime": "2026-01-01T00:00:00Z", "interval": 300, "status": "Accepted"},
    ),
    ("Heartbeat", {}, {"currentTime": "2026-01-01T00:00:00Z"}),
    (
        "StatusNotification",
        {"timestamp": "2026-01-01T00:00:00Z", "connectorStatus": "Available", "evseId": 1, "connectorId": 1},
        {},
    ),
    (
        "Authorize",
        {"idToken": {"idToken": "TOKEN-0001", "type": "ISO14443"}},
        {"idTokenInfo": {"status": "Accepted"}},
    ),
    (
        "TransactionEvent",
        {
            "eventType": "Started",
            "timestamp": "2026-01-01T00:00:00Z",
            "triggerReason": "Authorized",
            "seqNo": 0,
            "transactionInfo": {"transactionId": "TX-0001"},
            "evse": {"id": 1, "connectorId": 1},
            "meterValue": [
                {"timestamp": "2026-01-01T00:00:00Z", "sampledValue": [{"value": 0.0}]},
            ],
        },
        {"totalCost": 0.0},
    ),
)
SIZES = (64, 8192)
"""DataTransfer payload sizes (bytes of ``data``) whose difference gives the per-KiB cost."""


class _Sides(trio.abc.Instrument):
    """CPU time of task steps, given to the client or server side by the name of the task or an ancestor."""

    def __init__(self) -> None:
        self.spent = {CLIENT: 0.0, SERVER: 0.0, "": 0.0}
        self._t = 0.0
        self._side: dict[trio.lowlevel.Task, str] = {}
        self.on = False

    def _of(self, task: trio.lowlevel.Task) -> str:
        side = self._side.get(task)
        if side is None:
            side = ""
            t: trio.lowlevel.Task | None = task
            while t is not None:
                if t.name in (CLIENT, SERVER):
                    side = t.name
                    break
                nursery = t.parent_nursery
                t = nursery.parent_task if nursery is not None else None
            self._side[task] = side
        return side

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self._t = time.thread_time()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if self.on:
            self.spent[self._of(task)] += time.thread_time() - self._t

    def window(self) -> tuple[float, float]:
        """(client, server) seconds since the last call, the unattributed time split in proportion."""
        c, s, other = self.spent[CLIENT], self.spent[SERVER], self.spent[""]
        self.spent = {CLIENT: 0.0, SERVER: 0.0, "": 0.0}
        if c + s > 0:
            c, s = c + other * c / (c + s), s + other * s / (c + s)
        return c, s


def _verify_now() -> datetime.datetime:
    return _NOW


_NOW = real_utcnow().replace(microsecond=0)


class _Tls:
    """One PKI per key type, and the compiled contexts of a handshake kind."""

    def __init__(self) -> None:
        self._pki: dict[KeyType, tuple[CertificateAuthority, Identity, Identity]] = {}

    def contexts(self, version: str, key_type: KeyType, mutual: bool) -> tuple[ClientTls, ServerTls]:
        if key_type not in self._pki:
            root = CertificateAuthority.create_root(
                f"calibrate {key_type}", "evsim", now=_NOW, key_type=key_type
            )
            server = Identity.from_cert_key(root.issue_server(HOST, now=_NOW, key_type=key_type))
            client = Identity.from_cert_key(root.issue_client("CS-CAL-0001", now=_NOW, key_type=key_type))
            self._pki[key_type] = (root, server, client)
        root, server, client = self._pki[key_type]
        trust = TrustStore(f"calibrate {key_type}", (root.cert,))
        profile = TlsProfile(versions=(version,))
        return (
            ClientTls.build(profile, trust, client if mutual else None),
            ServerTls.build(profile, server, trust if mutual else None, "required" if mutual else "none"),
        )


async def _pair(
    client: Callable[[trio.abc.Stream], Awaitable[Any]], server: Callable[[trio.abc.Stream], Awaitable[Any]]
) -> tuple[Any, Any]:
    """Run both ends over a fresh in-memory stream pair, in tasks named for their side."""
    a, b = trio.testing.memory_stream_pair()
    out: dict[str, Any] = {}

    async def run(
        name: str, fn: Callable[[trio.abc.Stream], Awaitable[Any]], stream: trio.abc.Stream
    ) -> None:
        out[name] = await fn(stream)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, SERVER, server, b, name=SERVER)
        nursery.start_soon(run, CLIENT, client, a, name=CLIENT)
    return out[CLIENT], out[SERVER]


def _median_us(samples: list[tuple[float, float]], per: int) -> tuple[float, float]:
    samples = samples[1:]
    return (
        statistics.median(c for c, _ in samples) / per * 1e6,
        statistics.median(s for _, s in samples) / per * 1e6,
    )


TLS_ROWS: tuple[tuple[str, KeyType, str], ...] = (
    ("1.3", "ec", "full"),
    ("1.3", "ec", "mutual"),
    ("1.3", "ec", "resumed"),
    ("1.3", "rsa", "full"),
    ("1.2", "ec", "full"),
    ("1.2", "ec", "resumed"),
)
"""(version, key type, mode) of the measured handshakes; the first is the default of every prefix."""


async def _tls(sides: _Sides, pki: _Tls, n: int, rounds: int, costs: dict[str, float]) -> None:
    for version, key_type, mode in TLS_ROWS:
        client_tls, server_tls = pki.contexts(version, key_type, mode == "mutual")
        await _tls_row(sides, _Handshake(client_tls, server_tls, mode), n, rounds, costs)


class _Handshake:
    """The two ends of one measured kind of handshake (resumed kinds offer one session over and over)."""

    def __init__(self, client_tls: ClientTls, server_tls: ServerTls, mode: str) -> None:
        self.client_tls, self.server_tls, self.mode = client_tls, server_tls, mode
        self.session: TlsSession | None = None

    async def connect(self, stream: trio.abc.Stream) -> TlsStream:
        return await tls_connect(stream, self.client_tls, HOST, verify_time=_verify_now, session=self.session)

    async def accept(self, stream: trio.abc.Stream) -> TlsStream:
        s = await tls_accept(stream, self.server_tls, verify_time=_verify_now)
        await s.send_all(b"x")  # a TLS 1.3 client gets its tickets with the first data
        return s


async def _tls_row(sides: _Sides, hs: _Handshake, n: int, rounds: int, costs: dict[str, float]) -> None:
    if hs.mode == "resumed":
        c, s = await _pair(hs.connect, hs.accept)
        await c.receive_some()
        hs.session = c.session
        for end in (c, s):
            await end.aclose()
    samples: list[tuple[float, float]] = []
    kinds: list[Kind] = []
    for _ in range(rounds + 1):  # the first round warms up (contexts, compiled schemas)
        streams: list[TlsStream] = []
        sides.window()
        sides.on = True
        for _ in range(n):
            c, s = await _pair(hs.connect, hs.accept)
            streams += (c, s)
        sides.on = False
        samples.append(sides.window())
        kinds = [
            handshake_kind(c.info, client_cert=hs.mode == "mutual"),
            handshake_kind(s.info, server_cert=hs.server_tls.identity.chain[0]),
        ]
        for stream in streams:
            await stream.aclose()
    client_us, server_us = _median_us(samples, n)
    _put(costs, kinds[0], client_us)
    _put(costs, kinds[1], server_us)


def _put(costs: dict[str, float], kind: Kind, us: float) -> None:
    """``kind``'s cost, and of each shorter prefix not set yet (the first row measured is the default)."""
    costs["/".join(kind)] = round(us, 1)
    for n in range(len(kind) - 1, 0, -1):
        costs.setdefault("/".join(kind[:n]), round(us, 1))


async def _websocket(sides: _Sides, n: int, rounds: int, costs: dict[str, float]) -> None:
    async def client(stream: trio.abc.Stream) -> WebSocket:
        return await ws_client(stream, host=HOST, path="/ocpp/CS-CAL-0001", subprotocols=[SUBPROTOCOL])

    async def server(stream: trio.abc.Stream) -> WebSocket | None:
        return await ws_server(stream, lambda req: Accept(subprotocol=SUBPROTOCOL))

    samples = []
    for _ in range(rounds + 1):  # the first round warms up (contexts, compiled schemas)
        sides.window()
        sides.on = True
        for _ in range(n):
            await _pair(client, server)
        sides.on = False
        samples.append(sides.window())
    client_us, server_us = _median_us(samples, n)
    _put(costs, ("ws", "client"), client_us)
    _put(costs, ("ws", "server"), server_us)


async def _sessions(pki: _Tls, responses: dict[str, dict[str, Any]], nursery: trio.Nursery) -> OcppSession:
    """A station's session to a CSMS's over WebSocket over TLS; returns the station's (validation off)."""
    client_tls, server_tls = pki.contexts("1.3", "ec", False)

    async def handler(action: str, payload: dict[str, Any]) -> dict[str, Any]:
        return responses[action]

    async def client(stream: trio.abc.Stream) -> WebSocket:
        tls = await tls_connect(stream, client_tls, HOST, verify_time=_verify_now)
        return await ws_client(tls, host=HOST, path="/ocpp/CS-CAL-0001", subprotocols=[SUBPROTOCOL])

    async def server(stream: trio.abc.Stream) -> WebSocket | None:
        tls = await tls_accept(stream, server_tls, verify_time=_verify_now)
        return await ws_server(tls, lambda req: Accept(subprotocol=SUBPROTOCOL))

    ws_c, ws_s = await _pair(client, server)
    assert ws_s is not None
    station = OcppSession(ws_c, RpcConnection(validate=False), handler)
    csms = OcppSession(ws_s, RpcConnection(validate=False), handler)
    nursery.start_soon(_named_run, csms, name=SERVER)
    await nursery.start(_named_start, station, name=CLIENT)
    return station


async def _named_run(session: OcppSession) -> None:
    await session.run()


async def _named_start(
    session: OcppSession, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    await session.run(task_status=task_status)


async def _ocpp(
    sides: _Sides, pki: _Tls, n: int, rounds: int, costs: dict[str, float], per_kib: dict[str, float]
) -> None:
    messages = [*MESSAGES] + [
        (f"DataTransfer/{size}", {"vendorId": "evsim", "data": "x" * size}, {"status": "Accepted"})
        for size in SIZES
    ]
    responses = {action.split("/")[0]: resp for action, _, resp in messages}
    registry = SchemaRegistry.for_version("2.0.1")
    data_transfer: dict[int, tuple[float, float]] = {}
    async with trio.open_nursery() as nursery:
        station = await _sessions(pki, responses, nursery)
        for label, request, response in messages:
            action = label.split("/")[0]
            samples = []
            for _ in range(rounds + 1):  # the first round warms up (contexts, compiled schemas)
                sides.window()
                sides.on = True
                for _ in range(n):
                    await station.call(action, request)
                sides.on = False
                samples.append(sides.window())
            client_us, server_us = _median_us(samples, n)
            if "/" in label:
                data_transfer[int(label.split("/")[1])] = (client_us, server_us)
                continue
            _put(costs, ("ocpp", "call", action), client_us)
            _put(costs, ("ocpp", "serve", action), server_us)
            registry.validate(action, "request", request)  # compiles the validators
            t0 = time.thread_time()
            for _ in range(n * rounds):
                registry.validate(action, "request", request)
                registry.validate(action, "response", response)
            _put(costs, ("validate", action), (time.thread_time() - t0) / (n * rounds) * 1e6)
        nursery.cancel_scope.cancel()
    (small_c, small_s), (big_c, big_s) = data_transfer[SIZES[0]], data_transfer[SIZES[1]]
    kib = (SIZES[1] - SIZES[0]) / 1024
    per_kib["ocpp/call"] = round(max(0.0, big_c - small_c) / kib, 2)
    per_kib["ocpp/serve"] = round(max(0.0, big_s - small_s) / kib, 2)
    per_kib["relay"] = round(max(0.0, big_s - small_s) / kib / 2, 2)
    heartbeat = costs["ocpp/serve/Heartbeat"]
    _put(costs, ("relay", "station"), heartbeat / 2)
    _put(costs, ("relay", "csms"), heartbeat / 2)


class _Watch(Cpu):
    """A CSMS's accounting-only CPU that tells when it has been charged for ``n`` StatusNotifications (the last
    message of a station's boot)."""

    def __init__(self, name: str, profile: CpuProfile, n: int) -> None:
        super().__init__(name, profile, sleep=False)
        self.left = n
        self.done = trio.Event()

    async def charge(
        self, kind: Kind, size: int = 0, *, less: Kind | None = None, owner: str | None = None
    ) -> None:
        await super().charge(kind, size, less=less, owner=owner)
        if kind == ("ocpp", "serve", "StatusNotification"):
            self.left -= 1
            if self.left <= 0:
                self.done.set()


LIFECYCLE_PASSWORD = "calibrate-password-0001"


async def _lifecycle(
    sides: _Sides, pki: _Tls, n: int, rounds: int, profile: CpuProfile, costs: dict[str, float]
) -> None:
    """``conn/<side>``: ``n`` Station nodes boot against a Csms node over loopback TCP (the real nodes, real
    sockets); what each side spent per station beyond what ``profile`` charges for the operations the nodes
    reported (a :class:`Cpu` that only accounts) is the connection's own cost."""
    client_tls, server_tls = pki.contexts("1.3", "ec", False)
    net = TcpNetwork(resolve={HOST: "127.0.0.1"})
    clock = SimClock.start()
    recorder = Recorder(clock)
    samples: list[tuple[float, float]] = []
    for r in range(rounds + 1):  # the first round warms up
        csms_cpu, fleet_cpu = _Watch("csms", profile, n), Cpu("fleet", profile, sleep=False)
        csms = Csms(
            CsmsConfig(host=HOST, port=0, default_password=LIFECYCLE_PASSWORD),
            network=net,
            server_tls=server_tls,
            clock=clock,
            recorder=recorder,
        )
        csms.cpu = csms_cpu
        async with trio.open_nursery() as nursery:
            _, port = await nursery.start(_named_csms, csms, name=SERVER)
            stations = []
            for i in range(n):
                sid = f"CAL-{r}-{i:05d}"
                station = Station(
                    StationConfig(
                        station_id=sid,
                        csms_url=f"wss://{HOST}:{port}/ocpp",
                        password=LIFECYCLE_PASSWORD,
                        sessions=0,
                    ),
                    network=net,
                    client_tls=client_tls,
                    clock=clock,
                    recorder=recorder,
                    rng=random.Random(sid),
                )
                station.cpu = fleet_cpu
                stations.append(station)
            sides.window()
            sides.on = True
            await nursery.start(_named_fleet, stations, csms_cpu, sides, name=CLIENT)
            nursery.cancel_scope.cancel()
        client, server = sides.window()
        samples.append(
            (
                max(0.0, client - fleet_cpu.statistics().busy_s),
                max(0.0, server - csms_cpu.statistics().busy_s),
            )
        )
    client_us, server_us = _median_us(samples, n)
    _put(costs, ("conn", "client"), client_us)
    _put(costs, ("conn", "server"), server_us)


async def _named_csms(
    csms: Csms, *, task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED
) -> None:
    await csms.run(task_status=task_status)


async def _named_fleet(
    stations: list[Station],
    watch: _Watch,
    sides: _Sides,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the stations until each has booted and the CSMS got its StatusNotification; then stop them."""
    async with trio.open_nursery() as nursery:
        for station in stations:
            nursery.start_soon(station.run)
        for station in stations:
            await station.wait_online()
        await watch.done.wait()
        sides.on = False  # closing the links is no part of a storm
        nursery.cancel_scope.cancel()
    task_status.started()


def _machine() -> str:
    """The processor's model name (Linux: /proc/cpuinfo), else the architecture."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} ({platform.machine()})"
    except OSError:
        pass
    return platform.machine()


async def calibrate(*, n: int = 50, rounds: int = 5, name: str = "calibrated") -> CpuProfile:
    """Measure every kind (``n`` operations per round, the median of ``rounds``); call inside ``trio.run``
    (on the real clock)."""
    sides = _Sides()
    trio.lowlevel.add_instrument(sides)
    try:
        return await _measure(sides, n=n, rounds=rounds, name=name)
    finally:
        trio.lowlevel.remove_instrument(sides)


async def _measure(sides: _Sides, *, n: int, rounds: int, name: str) -> CpuProfile:
    costs: dict[str, float] = {}
    per_kib: dict[str, float] = {}
    pki = _Tls()
    await _tls(sides, pki, n, rounds, costs)
    await _websocket(sides, n, rounds, costs)
    await _ocpp(sides, pki, n, rounds, costs, per_kib)
    parts = CpuProfile(name, FrozenMap(costs), FrozenMap(per_kib))
    await _lifecycle(sides, pki, n, rounds, parts, costs)
    measured = {
        "machine": _machine(),
        "cpus": str(os.cpu_count() or 1),
        "python": platform.python_version(),
        "openssl": ssl.OPENSSL_VERSION,
        "date": real_utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"),
        "operations_per_round": str(n),
        "rounds": str(rounds),
        "method": "thread CPU time of the task steps of each side (evsim calibrate)",
    }
    return CpuProfile(
        name=name, costs=FrozenMap(costs), per_kib=FrozenMap(per_kib), measured=FrozenMap(measured)
    )


def command(args: argparse.Namespace) -> int:
    """``evsim calibrate``: measure, write ``--out``, print the main figures."""
    if args.iterations < 1 or args.rounds < 1:
        raise ConfigError(
            "--iterations and --rounds must be at least 1",
            value=(args.iterations, args.rounds),
            fix="e.g. --iterations 50 --rounds 5",
        )
    if not 0 <= args.storm <= MAX_STORM:
        raise ConfigError(
            f"--storm must be 0 (no storm) or a number of stations up to {MAX_STORM:,}",
            value=args.storm,
            fix=f"e.g. --storm {DEFAULT_STORM}",
        )
    out = Path(args.out)
    profile = interrupts.run(
        functools.partial(calibrate, n=args.iterations, rounds=args.rounds, name=args.name)
    )
    fitted = ""
    if args.storm:
        from evsim.stormfit import fit_to_storm

        profile, found, real = fit_to_storm(profile, args.storm)
        fitted = (
            f"; {found.describe()} (drained in {real['drain_s']:.2f} s, "
            f"CPU {real['cpu_stations_s']:.2f} s stations / {real['cpu_csms_s']:.2f} s CSMS)"
        )
    write_profile(profile, out)
    rows = [[kind, f"{us:.1f}"] for kind, us in sorted(profile.costs.items()) if kind.count("/") <= 2]
    print(
        table(
            ["operation", "µs of one core"],
            rows,
            title=f"CPU profile {profile.name!r} written to {out}{fitted}",
        )
    )
    return 0
