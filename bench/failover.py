"""Failover recovery: 1,000 stations, the primary CSMS dies, how long until they are back on the secondary.

    python -m bench.failover [--stations N] [--json]

Two runs of the same scenario (built here, like ``scenarios/failover_primary_down.toml`` but boot and heartbeat
only): in virtual time over the in-memory network, and in real time over loopback TCP (every CSMS host resolved
to 127.0.0.1, real TLS 1.3, the run bounded by its duration, so it stops by itself). Each station has two
network-profile slots, the primary and the secondary (own root), ``network_attempts = 1``. The primary stops
:data:`KILL_AT` seconds after the start; the table shows, from :func:`evsim.metrics.failover.recoveries`, the
time until 50 / 95 / 100 % of the stations that lost their link had booted on the secondary, the peak of the
reconnect storm (sessions the secondary accepted in one second) and the wall time of the run.

Virtual time measures the protocol (back-off, slot walk); real time adds what the CPU costs: 1,000 TLS
handshakes and boots at once, on a shared machine (read it as an upper bound).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from bench.common import bench_table, raise_nofile
from evsim.metrics.failover import endpoint_counts, recoveries
from evsim.metrics.topology import node_roles
from evsim.scenario.loader import loads_scenario
from evsim.scenario.runner import run_scenario

KILL_AT = {"virtual": 60.0, "real": 25.0}
"""When the primary dies (s): after the boot storm has settled (real time: 1,000 TLS boots over loopback take a
few seconds on two shared cores; 25 s leaves room)."""
DURATION = {"virtual": 300.0, "real": 75.0}
"""Run length (s): the recovery in virtual time takes ~20 s (see ``scenarios/failover_primary_down.toml``); the
real run is capped so the benchmark stays bounded."""

SCENARIO = """
[simulation]
name = "bench failover {clock}"
seed = 1
duration = "{duration}s"
clock = "{clock}"
network = "{network}"
[pki.roots.backup]
[tls.trust.both]
roots = ["root", "backup"]
[csms.primary]
[csms.secondary]
secondary_of = "primary"
certificate = {{ root = "backup" }}
[stations.fleet]
count = {n}
id_pattern = "ST-{{n:05d}}"
endpoints = [{{ csms = "primary", priority = 1 }}, {{ csms = "secondary", priority = 2, trust = "both" }}]
network_attempts = 1
sessions = 0
retry_backoff = {{ wait_minimum = "1s", random_range = "2s", repeat_times = 3 }}
[[timeline]]
at = "{kill}s"
action = "stop"
target = "primary"
"""


def run_one(clock: str, n: int) -> dict[str, Any]:
    """One run; the recovery figures as a dict (seconds from the kill; None: not all back by the end)."""
    network = "tcp" if clock == "real" else "memory"
    text = SCENARIO.format(clock=clock, network=network, n=n, duration=DURATION[clock], kill=KILL_AT[clock])
    sc = loads_scenario(text, source=f"bench-failover-{clock}")
    t0 = time.perf_counter()
    result = run_scenario(sc)
    wall = time.perf_counter() - t0
    events = [e.as_json() for e in result.recorder.events]
    roles = node_roles(events, sc.topology())
    (rec,) = recoveries(events, roles)
    peak = {c.endpoint: c.peak_per_s for c in endpoint_counts(events, roles)}
    return {
        "clock": clock,
        "network": network,
        "stations": n,
        "online_before": rec.online,
        "lost_link": rec.affected,
        "t50_s": rec.time_until(0.5),
        "t95_s": rec.time_until(0.95),
        "t100_s": rec.time_until(1.0),
        "back_to": dict(rec.back_to),
        "storm_peak_per_s": peak.get("secondary", 0),
        "wall_s": wall,
        "outcome": result.outcome,
        "error": result.error,
    }


def render(rows: list[dict[str, Any]]) -> str:
    """The table ``make bench`` prints."""

    def sec(v: object) -> str:
        return "not by end" if v is None else f"{float(v):.1f}"  # type: ignore[arg-type]

    body = [
        [
            f"{r['clock']} time, {'loopback TCP' if r['network'] == 'tcp' else 'in memory'}",
            f"{r['lost_link']} / {r['online_before']}",
            sec(r["t50_s"]),
            sec(r["t95_s"]),
            sec(r["t100_s"]),
            ", ".join(f"{k} {v}" for k, v in r["back_to"].items()) or "-",
            r["storm_peak_per_s"],
            f"{r['wall_s']:.1f}",
        ]
        for r in rows
    ]
    n = rows[0]["stations"] if rows else 0
    return bench_table(
        "failover",
        ["run", "lost / online", "50 % s", "95 % s", "100 % s", "back to", "peak sessions/s", "wall s"],
        body,
        title=f"Failover recovery: {n} stations, the primary CSMS dies (seconds from its death until booted again)",
        raw=rows,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stations", type=int, default=1000)
    p.add_argument("--clock", choices=["virtual", "real", "both"], default="both")
    p.add_argument("--json", action="store_true", help="print one JSON line per run instead of the table")
    args = p.parse_args(argv)
    raise_nofile()  # the TCP run holds two sockets per station plus the listeners
    clocks = ["virtual", "real"] if args.clock == "both" else [args.clock]
    rows = [run_one(clock, args.stations) for clock in clocks]
    if args.json:
        for r in rows:
            print(json.dumps(r))
    else:
        print(render(rows))
    failed = [r for r in rows if r["error"]]
    for r in failed:
        print(f"! {r['clock']} run {r['outcome']}: {r['error']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
