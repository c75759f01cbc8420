"""Heartbeat latency at N stations: evsim's fleet against the asyncio peers, each in its own process, same run.

    python -m bench.heartbeat [--stations 3000] [--interval 10] [--seconds 30] [--rounds 1] [--no-ocpp-lib]

Each fleet (a CSMS and N stations in one process over loopback TLS 1.3, as in the fleet table of ``make bench``)
boots, then every station sends one Heartbeat per ``--interval`` seconds for ``--seconds``, the stations' start
phases spread evenly over one interval (N / interval Heartbeats per second in all); each round trip is timed from
the send to its CALLRESULT. The paced load is far below every fleet's capacity, so the percentiles show how long
a message waits behind the others' work, not how many a fleet can carry (the fleet table's round trips/s).
``--rounds`` repeats the fleets, interleaved (evsim, A0, A, evsim, A0, A...), so machine load falls on all alike.

Environment for ``python -m bench heartbeat``: ``BENCH_HB_N`` (default 3000), ``BENCH_HB_INTERVAL`` (10),
``BENCH_HB_SECONDS`` (30), ``BENCH_HB_ROUNDS`` (1), ``BENCH_HB_OCPP_LIB`` (1; 0 leaves the ``ocpp``-library peer
out).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

from bench.common import Result, bench_table
from evsim.clock import real_utcnow
from evsim.pki import init_dev_pki
from evsim.runtime import GC_THRESHOLD

__all__ = ["main", "render", "run", "section"]

DEFAULT_STATIONS = 3000
"""The issue's figure: heartbeat p99 at N = 3,000 against the asyncio peers."""


def _fleet(module: str, args: list[str], timeout: float) -> Result | str:
    cmd = [sys.executable, "-m", module, *args, "--json"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return f"{module}: timed out after {timeout:g} s"
    if out.returncode != 0:
        return f"{module} failed: {out.stderr.strip().splitlines()[-1:] or out.returncode}"
    return Result.from_dict(json.loads(out.stdout.strip().splitlines()[-1]))


def run(
    stations: int, *, interval: float = 10.0, seconds: float = 30.0, rounds: int = 1, ocpp_lib: bool = True
) -> list[list[Result | str]]:
    """Every fleet ``rounds`` times, interleaved; one list per round, in run order."""
    paced = ["--n", str(stations), "--rtt-seconds", "0.1", "--hb-interval", str(interval)]
    paced += ["--hb-seconds", str(seconds)]
    budget = 900.0 + seconds + interval
    out: list[list[Result | str]] = []
    with tempfile.TemporaryDirectory(prefix="evsim-bench-hb-") as tmp:
        init_dev_pki(tmp, host="localhost", now=real_utcnow())
        pki = ["--ca", f"{tmp}/ca.crt", "--cert", f"{tmp}/server.crt", "--key", f"{tmp}/server.key"]
        asyncio_args = [*paced, *pki, "--boot-timeout", "400", "--hard-cap", str(budget)]
        variants = ["handwritten", *(["ocpp-lib"] if ocpp_lib else [])]
        for _ in range(rounds):
            fleets: list[Result | str] = []
            evsim = _fleet(
                "bench.evsim_peer",
                [*paced, "--pki", tmp, "--gc-threshold", str(GC_THRESHOLD[0])],
                budget + 60,
            )
            if isinstance(evsim, Result):
                evsim.name = "evsim as shipped"
            fleets.append(evsim)
            for variant in variants:
                fleets.append(
                    _fleet("bench.peer_asyncio", [*asyncio_args, "--variant", variant], budget + 60)
                )
            out.append(fleets)
    return out


def render(rounds: list[list[Result | str]], stations: int, interval: float) -> str:
    lines = [f"! {r}" for fleets in rounds for r in fleets if isinstance(r, str)]
    rows = []
    for i, fleets in enumerate(rounds, 1):
        done = [r for r in fleets if isinstance(r, Result)]
        base = next((b for b in done if b.name.startswith("A0")), None)  # the hand-written peer of this round
        for r in done:
            p50, p95, p99 = r.hb_ms
            rows.append(
                [
                    str(i),
                    r.name[:40],
                    f"{r.boot_storm_s:.1f}",
                    f"{r.boot_cpu_s:.1f}",
                    f"{r.hb_count:,}",
                    f"{p50:.2f}",
                    f"{p95:.2f}",
                    f"{p99:.2f}",
                    f"{p99 / base.hb_ms[2]:.2f}x" if base is not None and base.hb_ms[2] else "-",
                ]
            )
    lines.insert(
        0,
        bench_table(
            "heartbeat",
            [
                "round",
                "fleet",
                "boot s",
                "boot CPU s",
                "heartbeats",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "p99 x A0 (same round)",
            ],
            rows,
            title=f"Heartbeat round trips, N = {stations:,}, one Heartbeat per station every {interval:g} s "
            f"({stations / interval:,.0f}/s), CSMS and stations in one process, loopback TLS 1.3",
        ),
    )
    return "\n".join(lines)


def section() -> None:
    """``python -m bench heartbeat``: one round at ``BENCH_HB_N`` stations (default 3,000)."""
    n = int(os.environ.get("BENCH_HB_N", str(DEFAULT_STATIONS)))
    interval = float(os.environ.get("BENCH_HB_INTERVAL", "10"))
    results = run(
        n,
        interval=interval,
        seconds=float(os.environ.get("BENCH_HB_SECONDS", "30")),
        rounds=int(os.environ.get("BENCH_HB_ROUNDS", "1")),
        ocpp_lib=os.environ.get("BENCH_HB_OCPP_LIB", "1") != "0",
    )
    print(render(results, n, interval))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stations", type=int, default=DEFAULT_STATIONS)
    p.add_argument("--interval", type=float, default=10.0, help="seconds between a station's Heartbeats")
    p.add_argument("--seconds", type=float, default=30.0, help="length of the paced phase")
    p.add_argument("--rounds", type=int, default=1, help="interleaved repetitions of all fleets")
    p.add_argument("--no-ocpp-lib", action="store_true", help="leave the ocpp-library peer out")
    args = p.parse_args(argv)
    results = run(
        args.stations,
        interval=args.interval,
        seconds=args.seconds,
        rounds=args.rounds,
        ocpp_lib=not args.no_ocpp_lib,
    )
    print(render(results, args.stations, args.interval))
    return 0 if all(isinstance(r, Result) for fleets in results for r in fleets) else 1


if __name__ == "__main__":
    raise SystemExit(main())
