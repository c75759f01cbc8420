"""evsim's side of the benchmark: one trio process holding the CSMS and N stations over loopback TCP + TLS 1.3.

Run as a subprocess so its memory figure is its own::

    python -m bench.evsim_peer --n 1000 --rtt-seconds 10 --json --pki DIR

The real node code runs (``evsim.nodes.Csms`` / ``Station``: TLS at the simulation's time, WebSocket, OCPP
with schema validation on in both directions). Boot storm = from starting all stations until every one is
online (TLS + WebSocket upgrade + BootNotification Accepted). Steady state = every station sends Heartbeats
back to back through its live OCPP session for ``--rtt-seconds``.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import sys
import time
from collections.abc import Callable

import trio

from bench.common import Result, cpu_s, latency_percentiles_ms, raise_nofile, rss_kib
from evsim.clock import SimClock, real_utcnow
from evsim.net.base import Network
from evsim.net.tcp import TcpNetwork
from evsim.nodes.acceptor import DEFAULT_MAX_HANDSHAKES
from evsim.nodes.csms import Csms, CsmsConfig
from evsim.nodes.security import csms_server_tls, station_client_tls
from evsim.nodes.setup_window import DEFAULT_CONNECT_WINDOW
from evsim.nodes.station import Station
from evsim.nodes.station_model import StationConfig, station_ids
from evsim.pki import DevPki, init_dev_pki
from evsim.recorder import Recorder
from evsim.seeded import SeededRandom
from evsim.tls import TlsProfile
from evsim.tls.context import ClientTls

PASSWORD = "bench-password-000001"


def bench_stations(
    prefix: str,
    n: int,
    url: str,
    net: Network,
    client_tls: ClientTls,
    clock: SimClock,
    recorder: Recorder,
    compression: bool,
) -> list[Station]:
    """The benchmarks' fleet: ``n`` stations ``<prefix>0001``... at security profile 2, no sessions (they boot and
    heartbeat), a long message timeout so a loaded machine does not fail them."""
    return [
        Station(
            StationConfig(
                station_id=sid,
                csms_url=url,
                password=PASSWORD,
                sessions=0,
                compression=compression,
                message_timeout_s=120.0,
            ),
            network=net,
            client_tls=client_tls,
            clock=clock,
            recorder=recorder,
            rng=SeededRandom(sid),
        )
        for sid in station_ids(prefix, n)
    ]


async def _run(
    n: int,
    rtt_seconds: float,
    pki: DevPki,
    compression: bool,
    setup: tuple[int, int],
    group: str | None,
    steady: Callable[[bool], None] | None = None,
    paced: tuple[float, float] = (0.0, 0.0),
) -> Result:
    """Boot the fleet, then hammer; ``steady(True)`` / ``steady(False)`` mark the steady state (a profiler's
    switch: ``bench.profile_msg``). ``paced = (interval, seconds)`` with seconds > 0 adds a paced phase: every
    station sends one Heartbeat per interval (phases spread over the interval) and each round trip is timed."""
    window, max_handshakes = setup
    profile = TlsProfile(groups=(group,)) if group else None
    clock = SimClock.start()
    recorder = Recorder(clock, keep=1000)
    net = TcpNetwork()
    csms = Csms(
        CsmsConfig(
            host="127.0.0.1",
            port=0,
            heartbeat_interval=3600,
            default_password=PASSWORD,
            compression=compression,
            max_handshakes=max_handshakes or None,
        ),
        network=net,
        server_tls=csms_server_tls(pki, security_profile=2, profile=profile),
        clock=clock,
        recorder=recorder,
    )
    client_tls = station_client_tls((pki.root.cert,), profile=profile)
    connect_window = trio.CapacityLimiter(window) if window else None
    rss0 = rss_kib()
    async with trio.open_nursery() as nursery:
        _, port = await nursery.start(csms.run)
        stations = bench_stations(
            "B-", n, f"wss://localhost:{port}/ocpp", net, client_tls, clock, recorder, compression
        )
        t0, boot_c0 = time.perf_counter(), cpu_s()
        for st in stations:
            st.connect_window = connect_window
            nursery.start_soon(st.run)
        with trio.fail_after(
            max(600.0, 0.2 * n)
        ):  # generous: a shared machine may give this process little CPU
            for st in stations:
                await st.wait_online()
        boot, boot_cpu = time.perf_counter() - t0, cpu_s() - boot_c0
        await trio.sleep(0.5)  # let the StatusNotifications that follow boot settle
        kib = (rss_kib() - rss0) / n
        count = [0]
        running = [True]  # a flag, as in the asyncio peer: no clock reading per round trip

        async def stop_after() -> None:
            await trio.sleep(rtt_seconds)
            running[0] = False

        async def hammer(st: Station) -> None:
            session = st.session
            assert session is not None
            while running[0]:
                await session.call("Heartbeat", {})
                count[0] += 1

        if steady is not None:
            steady(True)
        c0, w0 = cpu_s(), time.perf_counter()
        async with trio.open_nursery() as inner:
            inner.start_soon(stop_after)
            for st in stations:
                inner.start_soon(hammer, st)
        cpu, wall = cpu_s() - c0, time.perf_counter() - w0
        if steady is not None:
            steady(False)
        latencies = await _paced_heartbeats(stations, *paced) if paced[1] > 0 else []
        nursery.cancel_scope.cancel()
    failures = sum(sum(st.connect_failures.values()) for st in stations)
    return Result(
        name="evsim (trio, pyOpenSSL stream, wsproto loop, sans-IO OCPP)"
        + ("" if compression else ", no deflate"),
        boot_storm_s=boot,
        rtt_per_s=count[0] / wall,
        cpu_us_per_rtt=cpu / max(count[0], 1) * 1e6,
        kib_per_station=kib,
        notes=f"validation on; {failures} connect failures during the storm; connect window {window or 'none'}, "
        f"max_handshakes {max_handshakes or 'none'}",
        group=stations[0].tls_info.group or "" if stations[0].tls_info is not None else "",
        boot_cpu_s=boot_cpu,
        hb_ms=latency_percentiles_ms(latencies),
        hb_count=len(latencies),
    )


async def _paced_heartbeats(stations: list[Station], interval: float, seconds: float) -> list[float]:
    """Each station sends a Heartbeat every ``interval`` seconds for ``seconds`` (start phases spread evenly
    over one interval); returns each round trip's latency in seconds (send to CALLRESULT)."""
    latencies: list[float] = []
    start = trio.current_time() + 0.1
    end = start + seconds

    async def paced(st: Station, phase: float) -> None:
        session = st.session
        assert session is not None
        at = start + phase
        while at < end:
            await trio.sleep_until(at)
            sent = time.perf_counter()
            await session.call("Heartbeat", {})
            latencies.append(time.perf_counter() - sent)
            at += interval

    async with trio.open_nursery() as nursery:
        for i, st in enumerate(stations):
            nursery.start_soon(paced, st, interval * i / len(stations))
    return latencies


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--rtt-seconds", type=float, default=10.0)
    p.add_argument("--pki", default=None, help="PKI directory (default: a fresh one in a temp dir)")
    p.add_argument("--compression", choices=("deflate", "none"), default="deflate")
    p.add_argument(
        "--gc-threshold",
        type=int,
        default=None,
        help="gc.set_threshold(N, 20, 100) before the run (Python's default is 700, 10, 10): what an "
        "application holding thousands of stations may choose; off by default, as in the other peers",
    )
    p.add_argument(
        "--connect-window",
        type=int,
        default=DEFAULT_CONNECT_WINDOW,
        help=f"stations in connection set-up at once, as evsim stations (default {DEFAULT_CONNECT_WINDOW}; 0: all)",
    )
    p.add_argument(
        "--max-handshakes",
        type=int,
        default=DEFAULT_MAX_HANDSHAKES,
        help=f"the CSMS's handshake admission limit (default {DEFAULT_MAX_HANDSHAKES}; 0: none)",
    )
    p.add_argument(
        "--group", default=None, help="key-exchange group of both ends (default: the engine's list)"
    )
    p.add_argument(
        "--hb-interval", type=float, default=10.0, help="paced phase: seconds between a station's Heartbeats"
    )
    p.add_argument(
        "--hb-seconds",
        type=float,
        default=0.0,
        help="paced phase length in seconds (default 0: no paced phase)",
    )
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    raise_nofile()
    if args.gc_threshold is not None:
        gc.set_threshold(args.gc_threshold, 20, 100)
    if args.pki:
        pki = DevPki.load(args.pki)
    else:
        import tempfile

        pki = init_dev_pki(tempfile.mkdtemp(prefix="evsim-bench-"), host="localhost", now=real_utcnow())
    setup = (args.connect_window, args.max_handshakes)
    result = trio.run(
        functools.partial(
            _run,
            args.n,
            args.rtt_seconds,
            pki,
            args.compression == "deflate",
            setup,
            args.group,
            paced=(args.hb_interval, args.hb_seconds),
        )
    )
    if args.gc_threshold is not None:
        result.name += f", gc threshold {args.gc_threshold}"
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(result, file=sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
