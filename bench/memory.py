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
* **C heap free, resident**: the resident part of glibc's heap (``[heap]`` in ``/proc/self/smaps``) that holds
  no live allocation: freed chunks between live ones, of which only whole pages can be given back
  (``malloc_trim``): the fragmentation a storm leaves;
* **Python objects**: the bytes in pymalloc's allocated blocks (objects up to 512 bytes, read from
  ``sys._debugmallocstats``); its arenas' free blocks are the RSS's remainder with the mappings of the rest.

The variants switch one saving off at a time, so each row's difference to ``as shipped`` is that saving:

* ``as shipped``: the OCPP session's idle watch on, its period shortened to :data:`IDLE_S` so the run does not
  wait three times the default 30 s;
* ``no idle release``: the idle watch off (``idle_release_s=None``): the permessage-deflate state and the TLS
  stream's grown BIO buffers stay allocated on idle links;
* ``no deflate``: permessage-deflate not negotiated at all (the floor that compression state sits on);
* ``no trim``: idle links release their state but the C heap is not trimmed afterwards
  (``evsim.runtime.give_back_memory`` does nothing): what ``malloc_trim`` gives back;
* ``no tickets``: ``session.resumption = "off"`` on both ends (no TLS 1.3 tickets, no server session cache):
  what the two tickets a server sends per handshake and the client's session cost;
* ``X25519``: ``groups = ["X25519"]`` on both ends, an opt-in (the default keeps OpenSSL's X25519MLKEM768
  first): what the hybrid post-quantum key shares cost per connected station;
* ``tls pairs``: only N TLS 1.3 connections (client and server stream over in-memory pipes), with OpenSSL's
  default groups (X25519MLKEM768 first) and with X25519 alone, measured after each step for all N at once
  (a second table): connection objects made (``SSL_new`` and the memory BIOs: OpenSSL's own per-connection
  structures, before a byte moved), handshaken (the stream releases the BIOs its flights grew right then),
  one record each way (the client reads the server's tickets), idle state released and the heap trimmed.
  The difference between the two groups is the hybrid post-quantum key shares, which OpenSSL keeps until
  the connection is freed.

Environment: ``BENCH_MEMORY_N`` (default ``BENCH_N``, else 1000).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from typing import Any

import attrs
import trio

from bench.common import bench_problem, bench_table, rss_kib
from bench.evsim_peer import PASSWORD, bench_stations
from evsim import runtime
from evsim.clock import SimClock, real_utcnow
from evsim.net.virtual import VirtualNetwork, memory_pipe_pair
from evsim.nodes.csms import Csms, CsmsConfig
from evsim.nodes.security import csms_server_tls, station_client_tls
from evsim.ocpp import session as ocpp_session
from evsim.pki import DevPki, init_dev_pki
from evsim.recorder import Recorder
from evsim.tls import TlsProfile
from evsim.tls.config import SessionPolicy
from evsim.tls.stream import TlsStream

WAVE = 100
"""Stations connecting at once."""
IDLE_S = 5.0
"""The sessions' idle period in this benchmark (``OcppSession(idle_release_s=...)``; shipped default 30 s)."""

VARIANTS = {
    "shipped": "as shipped (idle links release deflate state and BIO buffers, then the heap is trimmed)",
    "no-idle-release": "no idle release (session idle watch off)",
    "no-trim": "no malloc_trim after idle releases",
    "no-deflate": "no permessage-deflate",
    "no-tickets": 'no TLS session tickets (session.resumption = "off")',
    "x25519": "groups = X25519 on both ends (opt-in; default X25519MLKEM768)",
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


def _mallinfo() -> tuple[int, int]:
    """(bytes glibc's malloc has handed out and not got back, bytes of its ``brk`` heap among them); zeros
    without glibc's mallinfo2."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        fn = libc.mallinfo2
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        return 0, 0
    fn.restype = _MallInfo2
    info = fn()
    return int(info.uordblks + info.hblkhd), int(info.uordblks)


def _heap_rss_kib() -> int:
    """Resident KiB of the process's ``[heap]`` mapping (glibc's main arena), 0 when not found."""
    try:
        with open("/proc/self/smaps", encoding="ascii", errors="replace") as smaps:
            in_heap = False
            for line in smaps:
                if line[0] in "0123456789abcdef" and "-" in line.split(" ", 1)[0]:
                    in_heap = line.rstrip().endswith("[heap]")
                elif in_heap and line.startswith("Rss:"):
                    return int(line.split()[1])
    except OSError:  # pragma: no cover - not Linux
        pass
    return 0


_PYMALLOC_USED = re.compile(r"# bytes in allocated blocks\s*=\s*([\d,]+)")


def _pymalloc_bytes() -> int:
    """Bytes in pymalloc's allocated blocks (``sys._debugmallocstats``, which writes to fd 2), 0 if unknown."""
    stats = getattr(sys, "_debugmallocstats", None)
    if stats is None:  # pragma: no cover - not CPython
        return 0
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as out:
        os.dup2(out.fileno(), 2)
        try:
            stats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read().decode("ascii", "replace")
    m = _PYMALLOC_USED.search(text)
    return int(m.group(1).replace(",", "")) if m else 0


@attrs.frozen
class _Probe:
    rss_kib: int
    c_heap: int
    c_brk_heap: int
    heap_rss_kib: int
    python: int


def _probe() -> _Probe:
    gc.collect()
    c_heap, brk = _mallinfo()
    return _Probe(rss_kib(), c_heap, brk, _heap_rss_kib(), _pymalloc_bytes())


def _per_station(before: _Probe, after: _Probe, n: int) -> dict[str, float]:
    def free_resident(p: _Probe) -> float:
        return p.heap_rss_kib - p.c_brk_heap / 1024

    return {
        "rss_kib": (after.rss_kib - before.rss_kib) / n,
        "c_heap_kib": (after.c_heap - before.c_heap) / 1024 / n,
        "c_free_resident_kib": (free_resident(after) - free_resident(before)) / n,
        "python_kib": (after.python - before.python) / 1024 / n,
    }


FLEET_VARIANTS = ("shipped", "no-idle-release", "no-trim", "no-deflate", "no-tickets", "x25519")
"""The variants that run the whole fleet (the others: TLS pairs only)."""


def _profile(variant: str) -> TlsProfile | None:
    """The TLS profile of both ends in ``variant`` (None: the nodes' default)."""
    if variant in ("x25519", "tls-x25519"):
        return TlsProfile(groups=("X25519",))
    if variant == "no-tickets":
        return TlsProfile(session=SessionPolicy(resumption="off"))
    return None


async def _fleet(
    n: int, pki: DevPki, *, compression: bool, idle: float | None, profile: TlsProfile | None = None
) -> dict[str, Any]:
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
        server_tls=csms_server_tls(pki, security_profile=2, profile=profile),
        clock=clock,
        recorder=recorder,
    )
    client_tls = station_client_tls((pki.root.cert,), profile=profile)
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


TLS_STEPS = (
    ("new", "connection objects made (SSL_new, memory BIOs)"),
    ("handshake", "after the handshake"),
    ("record", "after one record each way (the client read the tickets)"),
    ("idle", "after the idle release (memory BIOs renewed, C heap trimmed)"),
)
"""The steps of the TLS-pairs variants, each measured for all N pairs at once."""


async def _tls_pairs(
    n: int, pki: DevPki, profile: TlsProfile | None, *, variant_trims: bool = True
) -> dict[str, Any]:
    server_tls = csms_server_tls(pki, security_profile=2, profile=profile)
    client_tls = station_client_tls((pki.root.cert,), profile=profile)
    assert server_tls is not None
    before = _probe()
    steps: dict[str, dict[str, float]] = {}
    t0 = time.perf_counter()
    pairs = []
    for _ in range(n):
        left, right = memory_pipe_pair()
        pairs.append((TlsStream.client(left, client_tls, "localhost"), TlsStream.server(right, server_tls)))
    steps["new"] = _per_station(before, _probe(), n)
    for client, server in pairs:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.do_handshake)
            await client.do_handshake()
    connect_s = time.perf_counter() - t0
    steps["handshake"] = _per_station(before, _probe(), n)
    for client, server in pairs:
        await client.send_all(b"x" * 100)
        await server.receive_some()
        await server.send_all(b"y" * 100)
        await client.receive_some()
    steps["record"] = _per_station(before, _probe(), n)
    for client, server in pairs:
        client.release_idle_state()  # what the idle watch does on a quiet link (memory BIOs renewed)
        server.release_idle_state()
    if variant_trims:
        runtime.give_back_memory()  # and then the session's idle watch trims the C heap
    after = _probe()
    steps["idle"] = _per_station(before, after, n)
    return {
        **_per_station(before, after, n),
        "connect_s": connect_s,
        "failures": 0,
        "kept": len(pairs),
        "steps": steps,
    }


def run_variant(variant: str, n: int, pki: DevPki) -> dict[str, Any]:
    """Measure one variant in this process (run it in a fresh process: RSS is per process); the process-wide
    switches it turns are restored when it returns."""
    if variant not in FLEET_VARIANTS:
        return trio.run(_tls_pairs, n, pki, _profile(variant))
    # the bench's switch for every session this process makes: the idle watch at IDLE_S (instead of the
    # default's 30 s, so a run does not wait minutes), or off
    defaults = ocpp_session.OcppSession.__init__.__kwdefaults__
    assert defaults is not None
    idle = 0.0 if variant == "no-idle-release" else IDLE_S
    saved = defaults["idle_release_s"], runtime._trim_resolved, runtime._trim
    defaults["idle_release_s"] = idle or None
    if variant == "no-trim":
        runtime._trim_resolved = True  # give_back_memory then finds no malloc_trim and returns at once
        runtime._trim = None
    try:
        return trio.run(
            lambda: _fleet(n, pki, compression=variant != "no-deflate", idle=idle, profile=_profile(variant))
        )
    finally:
        defaults["idle_release_s"], runtime._trim_resolved, runtime._trim = saved


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
        fleet = variant in FLEET_VARIANTS
        delta = (
            f"{r['rss_kib'] - shipped['rss_kib']:+.0f}" if shipped and fleet and variant != "shipped" else "-"
        )
        rows.append(
            [
                VARIANTS[variant],
                f"{r['rss_kib']:.0f}",
                delta,
                f"{r['objects_kib']:.0f}" if "objects_kib" in r else "-",
                f"{r['c_heap_kib']:.0f}",
                f"{r['c_free_resident_kib']:.0f}",
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
            "vs shipped",
            "of which station objects",
            "C heap in use KiB",
            "C heap free, resident KiB",
            "Python objects KiB",
            "connect s",
            "connect failures",
        ],
        rows,
        title=f"Memory per connected station, both ends in one process, in-memory network, N = {n} (target <= 100 KiB)",
        raw={"stations": n, "variants": dict(results)},
    )
    step_rows: list[list[object]] = []
    for variant, r in results:
        if isinstance(r, dict) and "steps" in r:
            for key, label in TLS_STEPS:
                st = r["steps"][key]
                step_rows.append(
                    [
                        VARIANTS[variant],
                        label,
                        f"{st['c_heap_kib']:.1f}",
                        f"{st['c_free_resident_kib']:.1f}",
                        f"{st['python_kib']:.1f}",
                        f"{st['rss_kib']:.1f}",
                    ]
                )
    parts = [head]
    if step_rows:
        parts.append(
            bench_table(
                "memory-tls",
                [
                    "variant",
                    "step",
                    "C heap in use KiB",
                    "C heap free, resident KiB",
                    "Python objects KiB",
                    "RSS KiB",
                ],
                step_rows,
                title=f"One TLS 1.3 pair (client + server) step by step, per pair, N = {n} pairs at once",
                raw=None,
            )
        )
    return "\n".join([*parts, *notes])


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
