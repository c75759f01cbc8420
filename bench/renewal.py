"""Fleet certificate renewal: N stations at security profile 3 renew their certificates over OCPP (A02).

    python -m bench.renewal [--virtual N] [--real N] [--json]

Two runs of one scenario (built here): the stations boot at profile 3, then the CSMS triggers
SignChargingStationCertificate on all of them at once (:data:`SPREAD`); each station generates an EC
P-256 key, sends a CSR, the CSMS signs it with its station sub-CA (healthy: no delay, no failures; at most
``max_concurrent`` at once) and the station checks the chain and reconnects with the new certificate (after RetryBackOff: 2 s + U(0..5 s)). One run
is in virtual time over the in-memory network (``--virtual``, default 10,000 stations), one in real time over
loopback TCP (``--real``, default 1,000: what finishes in a few minutes on a small shared machine).

Per run the table shows: stations renewed (reconnected with the new certificate) of those triggered, the time
from the first accepted trigger to the last reconnect (the fleet's renewal time, in the run's clock: virtual
seconds for the virtual run), the per-station latency (trigger to reconnect) p50 / p95, and the CSMS's signing
rate in CSRs per wall-clock second (signed certificates over the wall time from the first to the last signing,
taken by a recorder sink, so the virtual run reports real CPU throughput), plus the whole run's wall time. Every
figure comes from the run's events.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from bench.common import bench_table, raise_nofile, run_and_print
from evsim.metrics.certificates import percentile
from evsim.recorder import Event
from evsim.scenario.loader import loads_scenario
from evsim.scenario.runner import run_scenario

SPREAD = 0.0
"""Seconds the triggers are spread over: none, every CSR arrives at once, so the signing rate is the CSMS's
capacity (its queue is never empty until the last one)."""
TRIGGER_AT = {"virtual": 300.0, "real": 45.0}
"""When the renewal starts: after the boot storm (real time: N TLS boots over loopback on two shared cores)."""
DURATION = {"virtual": 1800.0, "real": 150.0}
"""Run length (s); the real run is capped so the benchmark stays bounded (a station not renewed by then shows in
"renewed / triggered")."""

SCENARIO = """
[simulation]
name = "bench renewal {clock}"
seed = 1
duration = "{duration}s"
clock = "{clock}"
network = "{network}"
[csms.main]
security_profile = 3
heartbeat_interval = "1h"
signing = {{ max_concurrent = 8, max_queued = {queued}, validity = "365d" }}
[stations.fleet]
count = {n}
id_pattern = "CS-{{n:05d}}"
sessions = 0
retry_backoff = {{ wait_minimum = "2s", random_range = "5s", repeat_times = 3 }}
certificates = {{ sign_wait_minimum = "120s", sign_repeat_times = 3 }}
[[timeline]]
at = "{at}s"
action = "trigger_renewal"
target = "main"
spread = "{spread}s"
"""


def run_one(clock: str, n: int) -> dict[str, Any]:
    """One run; its figures as a dict."""
    network = "tcp" if clock == "real" else "memory"
    text = SCENARIO.format(
        clock=clock,
        network=network,
        n=n,
        duration=DURATION[clock],
        at=TRIGGER_AT[clock],
        spread=SPREAD,
        queued=max(n, 1),
    )
    sc = loads_scenario(text, source=f"bench-renewal-{clock}")
    signed_wall: list[float] = []

    def sink(event: Event) -> None:
        if event.kind == "certificate_signed" and event.data.get("status") == "Accepted":
            signed_wall.append(time.perf_counter())

    t0 = time.perf_counter()
    result = run_scenario(sc, sink=sink)
    wall = time.perf_counter() - t0
    triggered: dict[str, float] = {}
    switched: dict[str, float] = {}
    for e in result.recorder.events:
        if e.kind == "certificate_call" and e.data.get("action") == "TriggerMessage":
            if e.data.get("status") == "Accepted":
                triggered.setdefault(str(e.data.get("station")), e.t)
        elif e.kind == "client_certificate_switched" and e.node in triggered and e.node not in switched:
            switched[e.node] = e.t
    latencies = sorted(switched[s] - triggered[s] for s in switched)
    span = signed_wall[-1] - signed_wall[0] if len(signed_wall) > 1 else 0.0
    return {
        "clock": clock,
        "network": network,
        "stations": n,
        "triggered": len(triggered),
        "renewed": len(switched),
        "fleet_s": (max(switched.values()) - min(triggered.values())) if switched else None,
        "p50_s": percentile(latencies, 0.5) if latencies else None,
        "p95_s": percentile(latencies, 0.95) if latencies else None,
        "signed": len(signed_wall),
        "csrs_per_s": len(signed_wall) / span if span > 0 else None,
        "wall_s": wall,
        "outcome": result.outcome,
        "error": result.error,
    }


def render(rows: list[dict[str, Any]]) -> str:
    """The table ``make bench`` prints."""

    def num(v: object, digits: int = 1) -> str:
        return "-" if v is None else f"{float(v):.{digits}f}"  # type: ignore[arg-type]

    body = [
        [
            f"{r['clock']} time, {'loopback TCP' if r['network'] == 'tcp' else 'in memory'}",
            r["stations"],
            f"{r['renewed']} / {r['triggered']}",
            num(r["fleet_s"]),
            num(r["p50_s"], 2),
            num(r["p95_s"], 2),
            num(r["csrs_per_s"]),
            f"{r['wall_s']:.0f}",
        ]
        for r in rows
    ]
    return bench_table(
        "renewal",
        ["run", "N", "renewed / triggered", "fleet s", "p50 s", "p95 s", "CSRs/s (wall)", "wall s"],
        body,
        title="Certificate renewal at security profile 3 (A02): trigger, key pair, CSR, signing, reconnect",
        raw=rows,
    )


def section() -> None:
    """The ``make bench`` section (``python -m bench renewal``): both runs in a subprocess, bounded.
    ``BENCH_RENEWAL_VIRTUAL`` / ``BENCH_RENEWAL_REAL`` set the station counts (defaults 10,000 and 1,000)."""
    cmd = [
        sys.executable,
        "-m",
        "bench.renewal",
        "--virtual",
        os.environ.get("BENCH_RENEWAL_VIRTUAL", "10000"),
        "--real",
        os.environ.get("BENCH_RENEWAL_REAL", "1000"),
    ]
    run_and_print(cmd, timeout=1800, what="renewal runs")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--virtual", type=int, default=10_000, help="stations of the virtual-time run (0: skip)")
    p.add_argument("--real", type=int, default=1000, help="stations of the loopback real-time run (0: skip)")
    p.add_argument("--json", action="store_true", help="print one JSON line per run instead of the table")
    args = p.parse_args(argv)
    raise_nofile()  # the TCP run holds two sockets per station plus the listener
    runs = [(c, n) for c, n in (("virtual", args.virtual), ("real", args.real)) if n > 0]
    rows = [run_one(clock, n) for clock, n in runs]
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
