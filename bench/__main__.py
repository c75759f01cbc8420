"""``make bench``: evsim against its peers and floors, measured in the same run, printed as tables.

Environment: ``BENCH_N`` stations (default 1000), ``BENCH_RTT_SECONDS`` steady-state seconds (default 10),
``BENCH_SKIP`` comma-separated parts to skip (``peers``: the asyncio fleets, and any name of ``SECTIONS``:
``fleet``, ``ladder``, ``micro``, ``tls-handshake``, ``scale``, ``failover``, ``nts``, ``relay``, ``firmware``,
``cpu-model``, ``workers``, ``storm``, ``heartbeat``, ``renewal``, ``memory``). Section sizes: ``BENCH_STORM_N`` (the
two-process mutual-TLS storm, default 10000), ``BENCH_HB_N`` (heartbeat latency against the asyncio peers, default
3000; ``bench/heartbeat.py``), ``BENCH_WORKERS_N`` (default 500), ``BENCH_MEMORY_N`` (default ``BENCH_N``);
``BENCH_NTS_SECONDS`` seconds per NTS phase (default 3); ``BENCH_LADDER_ROUNDS`` / ``BENCH_LADDER_SECONDS``
rounds of the stack ladder and seconds of steady state per rung (default 2 / 1.5; ``bench/ladder.py``);
``BENCH_TLS_HANDSHAKE_N`` handshakes per row of the TLS handshake section (default 200). Each fleet runs in its
own subprocess so its memory figure is its own. Shared machines are noisy: read the ratios, not the absolute times; the fleet table also gives each boot storm's CPU
seconds, the figure to hold against the floor (CPU too) when other processes share the machine.

``python -m bench SECTION...`` runs those sections alone; sections: the keys of ``SECTIONS``. Every run writes a
result file (``bench/results/<run id>.json``, or ``BENCH_OUT``: the machine, the run and every table printed;
``bench/results.py``); ``python -m bench readme [RESULT.json...]`` copies its tables into the README
(``bench/readme.py``).
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time

from bench import firmware, heartbeat, ladder, memory, nts, renewal, storm, workers
from bench.common import Result, bench_problem, bench_table, print_module_section, run_and_print
from bench.floor import handshake_floor, stdlib_floor
from bench.results import bench_run
from evsim.clock import real_utcnow
from evsim.pki import init_dev_pki
from evsim.runtime import GC_THRESHOLD

TARGETS = "targets: boot storm <= 1.5x the handshake floor of the same group and faster than hand-written; round trips/s >= 1.5x websockets + hand-written; <= 100 KiB/station"


def _fleet(module: str, *args: str) -> Result | str:
    """One fleet in its own subprocess; its result, or why there is none."""
    cmd = [sys.executable, "-m", module, *args, "--json"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=420, check=False)
    except subprocess.TimeoutExpired:
        return f"{module}: timed out"
    if out.returncode != 0:
        return f"{module} failed: {out.stderr.strip().splitlines()[-1:] or out.returncode}"
    result = Result.from_dict(json.loads(out.stdout.strip().splitlines()[-1]))
    if module == "bench.peer_asyncio" and not result.group:
        # Python's ssl module does not say; the OpenSSL it links offers its first default group
        result.group = "X25519MLKEM768" if ssl.OPENSSL_VERSION_INFO >= (3, 5) else "X25519"
    return result


def _fleet_section() -> None:
    """The handshake floors and the fleets: evsim and the asyncio peers, each in its own process (``BENCH_N``
    stations, ``BENCH_RTT_SECONDS`` of round trips; ``BENCH_SKIP=peers`` leaves the peers out)."""
    n = int(os.environ.get("BENCH_N", "1000"))
    rtt = os.environ.get("BENCH_RTT_SECONDS", "10")
    skip = _skip()
    # one floor per key-exchange group: each fleet is compared with the floor of the group it negotiated
    floors = [handshake_floor(500, stations=n, group=g) for g in (None, "X25519")]
    storm_floors = {str(f["group"]).lower(): float(f["storm_floor_s"]) for f in floors}
    std = stdlib_floor(500, stations=n)
    print(
        bench_table(
            "floor",
            ["floor", *(str(f["group"]) for f in floors)],
            [
                [
                    "raw pyOpenSSL TLS 1.3 handshake, CPU both ends",
                    *(f"{f['cpu_ms_per_handshake']:.3f} ms" for f in floors),
                ],
                [
                    "  of which client / server",
                    *(f"{f['client_cpu_ms']:.3f} / {f['server_cpu_ms']:.3f} ms" for f in floors),
                ],
                [f"boot-storm floor for {n} stations", *(f"{f['storm_floor_s']:.2f} s" for f in floors)],
                [
                    f"the same, Python's ssl ({' '.join(str(std['openssl']).split()[:2])}, asyncio peers)",
                    "",
                    f"{std['cpu_ms_per_handshake']:.3f} ms, {std['storm_floor_s']:.2f} s",
                ],
            ],
            title="Handshake floor by key-exchange group (memory BIOs, one thread)",
            raw=floors,
        )
    )

    with tempfile.TemporaryDirectory(prefix="evsim-bench-") as tmp:
        init_dev_pki(tmp, host="localhost", now=real_utcnow())
        pki_args = ["--ca", f"{tmp}/ca.crt", "--cert", f"{tmp}/server.crt", "--key", f"{tmp}/server.key"]
        evsim_args = ["--n", str(n), "--rtt-seconds", rtt, "--pki", tmp]
        shipped = _fleet("bench.evsim_peer", *evsim_args, "--gc-threshold", str(GC_THRESHOLD[0]))
        default_gc = _fleet("bench.evsim_peer", *evsim_args)
        if isinstance(shipped, Result):
            shipped.name = "evsim as shipped (gc threshold 50,000: evsim.runtime)"
        if isinstance(default_gc, Result):
            default_gc.name = "evsim, Python's default gc (as the asyncio peers run)"
        same_group = _fleet(
            "bench.evsim_peer", *evsim_args, "--gc-threshold", str(GC_THRESHOLD[0]), "--group", "X25519"
        )
        if isinstance(same_group, Result):
            same_group.name = "evsim as shipped, X25519 (the asyncio peers' group)"
        fleets: list[Result | str] = [shipped, default_gc, same_group]
        if "peers" not in skip:
            for variant in ("handwritten", "ocpp-lib"):
                fleets.append(
                    _fleet(
                        "bench.peer_asyncio",
                        "--variant",
                        variant,
                        "--n",
                        str(n),
                        "--rtt-seconds",
                        rtt,
                        *pki_args,
                    )
                )
    results = [f for f in fleets if isinstance(f, Result)]
    for f in fleets:
        if isinstance(f, str):
            print(bench_problem(f))
    base = next((r for r in results if "hand-written" in r.name or "handwritten" in r.name), None)
    rows = []
    for r in results:
        own_floor = storm_floors.get(r.group.lower())
        rows.append(
            [
                r.name[:60],
                r.group or "?",
                f"{r.boot_storm_s:.2f}",
                f"{r.boot_storm_s / own_floor:.2f}x" if own_floor else "-",
                f"{r.boot_storm_s / base.boot_storm_s:.2f}x" if base else "-",
                f"{r.boot_cpu_s:.2f}",
                f"{r.boot_cpu_s / own_floor:.2f}x" if own_floor and r.boot_cpu_s else "-",
                f"{r.boot_cpu_s / base.boot_cpu_s:.2f}x" if base and base.boot_cpu_s else "-",
                f"{r.rtt_per_s:.0f}",
                f"{r.rtt_per_s / base.rtt_per_s:.2f}x" if base else "-",
                f"{r.cpu_us_per_rtt:.0f}",
                f"{r.kib_per_station:.0f}",
            ]
        )
    print(
        bench_table(
            "fleet",
            [
                "fleet (CSMS + N stations, one process)",
                "group",
                "boot s",
                "x floor (same group)",
                "x hand-written boot",
                "boot CPU s",
                "CPU x floor",
                "CPU x hand-written",
                "RT/s",
                "x hand-written",
                "CPU us/RT",
                "KiB/station",
            ],
            rows,
            title=f"Fleets, N = {n}",
            raw=[r.to_dict() for r in results],
        )
    )
    for r in results:
        if r.notes:
            print(f"  {r.name[:40]}: {r.notes}")
    print(TARGETS)


def _micro_section() -> None:
    """Per-layer micro-benchmarks (OCPP core, WebSocket round trip, TLS stream)."""
    from bench import ocpp_core, tls_stream, ws_roundtrip

    micro: list[list[object]] = []
    for mod in (ocpp_core, ws_roundtrip, tls_stream):
        micro += [[name, f"{value:.1f}", unit] for name, value, unit in mod.run()]
    print(bench_table("micro", ["micro-benchmark", "value", "unit"], micro, title="Layers"))


def _scale_section() -> None:
    """A simulated day of 1,000 stations in virtual time (``bench/scale.py``, a subprocess)."""
    print(
        "Scale in virtual time (bench/scenarios/day_1000.toml; target: <= 60 s of wall time and <= 4 GiB; 10,000 stations: <= 10 min)"
    )
    run_and_print([sys.executable, "-m", "bench.scale"], timeout=1200, what="scale run")
    # the same day through evsim run, unsharded (K = 1) and as two shard processes (K = 2): the all-cores
    # figure, both with the run directory, the merge and the report, measured in one run
    for k in (1, 2):
        run_and_print(
            [sys.executable, "-m", "bench.scale", "--workers", str(k)],
            timeout=1200,
            what=f"scale run, {k} worker(s)",
        )


def _tls_handshake_section() -> None:
    from bench import tls_handshake

    print(tls_handshake.render(tls_handshake.run(tls_handshake.env_n())))


def _failover_section() -> None:
    """Failover recovery of N stations when the primary CSMS dies, in virtual time and over loopback TCP
    (``bench/failover.py``; a subprocess, bounded by the runs' durations)."""
    print_module_section("bench.failover", timeout=600, what="failover runs")


def _relay_section() -> None:
    """What the loopback TCP fault relay adds to a connect and a round trip (``bench/relay.py``)."""
    from bench import relay

    print(relay.render(relay.run(500, 300, 5), 500, 300))


def _cpu_model_section() -> None:
    from bench import cpu_model

    cpu_model.section()


SECTIONS = {
    "fleet": _fleet_section,
    "ladder": ladder.section,
    "micro": _micro_section,
    "tls-handshake": _tls_handshake_section,
    "scale": _scale_section,
    "failover": _failover_section,
    "nts": nts.section,
    "relay": _relay_section,
    "firmware": firmware.section,
    "cpu-model": _cpu_model_section,
    "workers": workers.section,
    "storm": storm.section,
    "heartbeat": heartbeat.section,
    "renewal": renewal.section,
    "memory": memory.section,
}
"""The sections, in the order ``make bench`` runs them; ``python -m bench SECTION`` runs one alone."""


def _skip() -> set[str]:
    return set(filter(None, os.environ.get("BENCH_SKIP", "").split(",")))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["readme"]:
        from bench import readme

        return readme.main(args[1:])
    unknown = [a for a in args if a not in SECTIONS]
    if unknown:
        print(
            f"unknown section(s) {', '.join(unknown)}; sections: {', '.join(SECTIONS)}, or readme",
            file=sys.stderr,
        )
        return 2
    skip = _skip()
    t0 = time.perf_counter()
    if not args:
        n = os.environ.get("BENCH_N", "1000")
        rtt = os.environ.get("BENCH_RTT_SECONDS", "10")
        print(
            f"evsim benchmark: N = {n} stations, {rtt} s of steady-state round trips, loopback TCP, "
            "TLS 1.3 ECDSA P-256\n"
        )
    command = " ".join(["python -m bench", *args])
    # Ctrl-C, SIGINT or `kill PID` stop the run and the result file is still written (a background job starts
    # with SIGINT ignored, so it is restored; SIGTERM becomes SIGINT, which trio delivers safely inside a run)
    previous = (
        signal.signal(signal.SIGINT, signal.default_int_handler),
        signal.signal(signal.SIGTERM, _interrupt),
    )
    try:
        with bench_run(command) as run:
            for name, section in SECTIONS.items():
                if args and name not in args:
                    continue
                if not args and name in skip:
                    run.skip(name, "BENCH_SKIP")
                    continue
                run.section(name, section)
                print()
            print(f"(benchmark took {time.perf_counter() - t0:.0f} s)")
            failed = run.failed()
            if failed:
                print(f"! failed sections: {', '.join(failed)} (recorded as such in the result file)")
    except KeyboardInterrupt:
        print("interrupted: the result file holds the sections run so far", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])
    return 1 if failed else 0


def _interrupt(signum: int, frame: object) -> None:
    os.kill(os.getpid(), signal.SIGINT)


if __name__ == "__main__":
    raise SystemExit(main())
