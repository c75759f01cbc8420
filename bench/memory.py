"""Benchmark: memory per connected station (both ends in one process) and where it goes.

``python -m bench memory`` (a section of ``make bench``): for each variant a subprocess
(``python -m bench.memory --variant V --n N --json``) builds one CSMS and N stations on the in-memory network
(evsim's real node code: TLS 1.3, WebSocket, OCPP with validation), connects them in waves of
:data:`WAVE` (so a loaded machine does not turn the storm into handshake timeouts; the storm itself is
``make bench``'s fleet rows), lets the links go idle and reads, per station:

* **RSS**: the process's resident set growth from before the station objects existed (what ``make bench``'s
  fleet rows call KiB/station, there over loopback TCP), and of it the station objects alone, built and not
  yet connected (``objects``);
* **C heap**: glibc's ``mallinfo2`` bytes in use (OpenSSL, zlib, and Python objects above 512 bytes);
* **Python heap**: ``sys.getallocatedblocks`` growth times the average pymalloc block (an estimate; the
  exact per-line accounting is ``tracemalloc``, too slow to leave on here).

The variants switch one saving off at a time, so each row's difference to ``as shipped`` is that saving:

* ``as shipped``: the OCPP session's idle watch on, its period shortened to :data:`IDLE_S` so the run does not
  wait three times the default 30 s;
* ``no idle release``: the idle watch off (``idle_release_s=None``): the permessage-deflate state and the TLS
  stream's grown BIO buffers stay allocated on idle links;
* ``no deflate``: permessage-deflate not negotiated at all (the floor that compression state sits on);
* ``tls pairs``: only N TLS 1.3 connections (client and server stream over in-memory pipes, handshaken,
  one record each way, idle state released), with OpenSSL's default groups (X25519MLKEM768 first) and with X25519 alone: the share
  of the hybrid post-quantum key shares, which OpenSSL keeps until the connection is freed.

Environment: ``BENCH_MEMORY_N`` (default ``BENCH_N``, else 1000).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import trio

from bench.common import bench_problem, bench_table, rss_kib
from bench.evsim_peer import PASSWORD, bench_stations
from evsim.clock import SimClock, real_utcnow
from evsim.net.virtual import VirtualNetwork, memory_pipe_pair
from evsim.nodes.csms import Csms, CsmsConfig
from evsim.nodes.security import csms_server_tls, station_client_tls
from evsim.ocpp import session as ocpp_session
from evsim.pki import DevPki, init_dev_pki
from evsim.recorder import Recorder
from evsim.tls import TlsProfile
from evsim.tls.stream import tls_accept, tls_connect

WAVE = 100
"""Stations connecting at once."""
IDLE_S = 5.0
"""The sessions' idle period in this benchmark (``OcppSession(idle_release_s=...)``; shipped default 30 s)."""

VARIANTS = {
    "shipped": "as shipped (idle links release deflate state and BIO buffers)",
    "no-idle-release": "no idle release (session idle watch off)",
    "no-deflate": "no permessage-deflate",
    "tls-default": "TLS pairs only, OpenSSL default groups (X25519MLKEM768)",
    "tls-x25519": "TLS pairs only, groups = X25519",
}


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _c_heap() -> int:
    """Bytes glibc's malloc has handed out and not got back (0 without glibc's mallinfo2)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        fn = libc.mallinfo2
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        return 0
    fn.restype = _MallInfo2
    info = fn()
    return int(info.uordblks + info.hblkhd)


_BLOCK = 64  # bytes: the average pymalloc block of this workload (small objects: frames, dicts, attrs)


def _probe() -> tuple[int, int, int]:
    gc.collect()
    return rss_kib(), _c_heap(), sys.getallocatedblocks()


def _per_station(before: tuple[int, int, int], after: tuple[int, int, int], n: int) -> dict[str, float]:
    return {
        "rss_kib": (after[0] - before[0]) / n,
        "c_heap_kib": (after[1] - before[1]) / 1024 / n,
        "python_kib": (after[2] - before[2]) * _BLOCK / 1024 / n,
    }


async def _fleet(n: int, pki: DevPki, *, compression: bool, idle: float | None) -> dict[str, Any]:
    clock = SimClock.start()
    recorder = Recorder(clock, keep=1000, echo=False)
    net = VirtualNetwork()
    csms = Csms(
        CsmsConfig(
            host="localhost",
            port=443,
            heartbeat_interval=3600,
            default_password=PASSWORD,
            compression=compression,
        ),
        network=net,
        server_tls=csms_server_tls(pki, security_profile=2),
        clock=clock,
        recorder=recorder,
    )
    client_tls = station_client_tls((pki.root.cert,))
    async with trio.open_nursery() as nursery:
        await nursery.start(csms.run)
        before = _probe()  # before the station objects exist: a connected station includes them
        stations = bench_stations(
            "M-", n, "wss://localhost:443/ocpp", net, client_tls, clock, recorder, compression
        )
        built = _probe()
        t0 = time.perf_counter()
        for start in range(0, n, WAVE):
            wave = stations[start : start + WAVE]
            for st in wave:
                nursery.start_soon(st.run)
            with trio.fail_after(600):
                for st in wave:
                    await st.wait_online()
        connect_s = time.perf_counter() - t0
        # the idle watch releases a quiet link within twice its period, and the deferred trims follow one
        # period later (see evsim.ocpp.session)
        await trio.sleep(3 * (idle or 0.0) + 1.0)
        after = _probe()
        failures = sum(sum(st.connect_failures.values()) for st in stations)
        nursery.cancel_scope.cancel()
    objects = _per_station(before, built, n)["rss_kib"]
    return {
        **_per_station(before, after, n),
        "objects_kib": objects,
        "connect_s": connect_s,
        "failures": failures,
    }


async def _tls_pairs(n: int, pki: DevPki, groups: tuple[str, ...]) -> dict[str, Any]:
    profile = TlsProfile(groups=groups) if groups else None
    server_tls = csms_server_tls(pki, security_profile=2, profile=profile)
    client_tls = station_client_tls((pki.root.cert,), profile=profile)
    assert server_tls is not None
    pairs = []
    before = _probe()
    t0 = time.perf_counter()
    for _ in range(n):
        left, right = memory_pipe_pair()
        async with trio.open_nursery() as nursery:
            accepted: list[Any] = []

            async def accept(stream: Any = right, out: list[Any] = accepted) -> None:
                out.append(await tls_accept(stream, server_tls))

            nursery.start_soon(accept)
            client = await tls_connect(left, client_tls, "localhost")
        server = accepted[0]
        await client.send_all(b"x" * 100)
        await server.receive_some()
        await server.send_all(b"y" * 100)
        await client.receive_some()
        client.release_idle_state()  # what the idle watch does on a quiet link (memory BIOs renewed)
        server.release_idle_state()
        pairs.append((client, server))
    connect_s = time.perf_counter() - t0
    after = _probe()
    return {**_per_station(before, after, n), "connect_s": connect_s, "failures": 0, "kept": len(pairs)}


def run_variant(variant: str, n: int, pki: DevPki) -> dict[str, Any]:
    """Measure one variant in this process (run it in a fresh process: RSS is per process)."""
    # the bench's switch for every session this process makes: the idle watch at IDLE_S (instead of the
    # default's 30 s, so a run does not wait minutes), or off
    defaults = ocpp_session.OcppSession.__init__.__kwdefaults__
    assert defaults is not None
    idle = 0.0 if variant == "no-idle-release" else IDLE_S
    defaults["idle_release_s"] = idle or None
    if variant in ("shipped", "no-idle-release", "no-deflate"):
        return trio.run(lambda: _fleet(n, pki, compression=variant != "no-deflate", idle=idle))
    groups = ("X25519",) if variant == "tls-x25519" else ()
    return trio.run(_tls_pairs, n, pki, groups)


def run(n: int) -> list[tuple[str, dict[str, Any] | str]]:
    """Every variant, each in its own subprocess; a string instead of figures when one failed."""
    out: list[tuple[str, dict[str, Any] | str]] = []
    with tempfile.TemporaryDirectory(prefix="evsim-bench-memory-") as tmp:
        init_dev_pki(tmp, host="localhost", now=real_utcnow())
        for variant in VARIANTS:
            cmd = [
                sys.executable,
                "-m",
                "bench.memory",
                "--variant",
                variant,
                "--n",
                str(n),
                "--pki",
                tmp,
                "--json",
            ]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
            except subprocess.TimeoutExpired:
                out.append((variant, "timed out"))
                continue
            if proc.returncode != 0:
                out.append((variant, f"failed: {proc.stderr.strip().splitlines()[-1:]}"))
                continue
            out.append((variant, json.loads(proc.stdout.strip().splitlines()[-1])))
    return out


def render(results: list[tuple[str, dict[str, Any] | str]], n: int) -> str:
    rows: list[list[object]] = []
    notes = []
    shipped = next((r for v, r in results if v == "shipped" and isinstance(r, dict)), None)
    for variant, r in results:
        if isinstance(r, str):
            notes.append(bench_problem(f"memory variant {variant}: {r}"))
            continue
        delta = f"{r['rss_kib'] - shipped['rss_kib']:+.0f}" if shipped and variant != "shipped" else "-"
        rows.append(
            [
                VARIANTS[variant],
                f"{r['rss_kib']:.0f}",
                f"{r['objects_kib']:.0f}" if "objects_kib" in r else "-",
                delta if variant in ("no-idle-release", "no-deflate") else "-",
                f"{r['c_heap_kib']:.0f}",
                f"{r['python_kib']:.0f}",
                f"{r['connect_s']:.1f}",
                str(r["failures"]),
            ]
        )
    head = bench_table(
        "memory",
        [
            "variant",
            "RSS KiB/station",
            "of which station objects",
            "vs shipped",
            "C heap KiB",
            "Python KiB (est.)",
            "connect s",
            "connect failures",
        ],
        rows,
        title=f"Memory per connected station, both ends in one process, in-memory network, N = {n} (target <= 100 KiB)",
        raw={"stations": n, "variants": dict(results)},
    )
    return "\n".join([head, *notes])


def env_n() -> int:
    return int(os.environ.get("BENCH_MEMORY_N", os.environ.get("BENCH_N", "1000")))


def section() -> None:
    """The ``memory`` section of ``make bench`` (``python -m bench memory``)."""
    n = env_n()
    print(render(run(n), n))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=env_n())
    p.add_argument("--variant", choices=tuple(VARIANTS))
    p.add_argument("--pki", help="PKI directory (with --variant)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.variant is None:
        print(render(run(args.n), args.n))
        return 0
    pki = (
        DevPki.load(args.pki)
        if args.pki
        else init_dev_pki(tempfile.mkdtemp(), host="localhost", now=real_utcnow())
    )
    result = run_variant(args.variant, args.n, pki)
    print(json.dumps(result) if args.json else result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
