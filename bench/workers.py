"""Workers: one fleet in K = 1, 2 processes against one ``evsim csms`` process, mutual TLS over loopback.

    python -m bench.workers [--stations N] [--workers 1,2] [--json]

For each K: ``evsim csms --security-profile 3`` and ``evsim stations --workers K --out DIR`` (N stations, one
session each of :data:`SESSION_S` seconds with a meter value every :data:`METER_S` seconds, so the session phase
asks for more TransactionEvents than the machine can carry: the rate measured is the capacity). Figures, from the
merged run directory's ``events.jsonl`` and the stations' JSON result:

* **storm**: seconds from the earliest worker's start to the last station's ``booted`` (the merged time axis);
* **round trips/s**: TransactionEvents delivered (the stations' ``tx events``) over the session phase, the first
  ``tx_started`` to the last ``tx_ended``;
* **CPU**: seconds of CPU of the CSMS process (``/proc/PID/stat`` before it stops) and of the stations (all
  workers: this process's waited-for children), and the CSMS's share of both.

Run on a shared machine, the figures are noisy: compare K = 1 and K = 2 of the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import bench_table
from evsim.runtime import process_cpu

SESSION_S = 8.0
METER_S = 0.1
EVSIM = [sys.executable, "-m", "evsim"]
#: The station events of a connection attempt that failed (a handshake timeout, a refused or lost connection).
_FAILURES = frozenset({"handshake_failed", "connection_lost"})


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_one(stations: int, workers: int, pki: Path, work: Path) -> dict[str, Any]:
    """One CSMS and one ``evsim stations --workers K`` run; the figures of the module doc."""
    csms = subprocess.Popen(
        [*EVSIM, "csms", "--listen", "127.0.0.1:0", "--pki", str(pki), *("--security-profile", "3"), "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert csms.stdout is not None
        line = csms.stdout.readline()
        if "listening on wss://" not in line:
            raise RuntimeError(f"evsim csms did not start: {line!r}")
        port = line.split("wss://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1]
        before = _children_cpu()
        wall = time.perf_counter()
        out = subprocess.run(
            [
                *(*EVSIM, "stations", "--csms", f"wss://localhost:{port}/ocpp", "--stations", str(stations)),
                *("--pki", str(pki), "--security-profile", "3", "--workers", str(workers)),
                *(
                    "--session-duration",
                    str(SESSION_S),
                    "--meter-interval",
                    str(METER_S),
                    "--duration",
                    "300",
                ),
                *("--out", str(work / f"k{workers}"), "--progress", "0", "--json", "-q"),
            ],
            capture_output=True,
            text=True,
            timeout=420,
            check=False,
        )
        wall = time.perf_counter() - wall
        stations_cpu = _children_cpu() - before
        csms_cpu = process_cpu(csms.pid)
    finally:
        csms.terminate()
        csms.wait(timeout=60)
    if not out.stdout.strip():
        tail = out.stderr.strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(
            f"evsim stations --workers {workers} exited with status {out.returncode}: {tail[0]}"
        )
    doc = json.loads(out.stdout)
    events = [json.loads(x) for x in (Path(doc["run_directory"]) / "events.jsonl").read_text().splitlines()]
    boots = [e["t"] for e in events if e["kind"] == "booted"]
    started = [e["t"] for e in events if e["kind"] == "tx_started"]
    ended = [e["t"] for e in events if e["kind"] == "tx_ended"]
    tx_events = sum(int(row["tx events"]) for row in doc["table"]["rows"])
    phase = (max(ended) - min(started)) if started and ended else float("nan")
    return {
        "workers": workers,
        "stations": stations,
        "ok": doc["ok"],
        "booted": len({e["node"] for e in events if e["kind"] == "booted"}),
        "connection_failures": sum(e["kind"] in _FAILURES for e in events),
        "worker_starts_s": [
            w.get("offset_s", 0.0)
            for w in json.loads((Path(doc["run_directory"]) / "meta.json").read_text()).get("shards", [{}])
        ],
        "storm_s": max(boots) if boots else float("nan"),
        "round_trips_per_s": tx_events / phase if phase > 0 else float("nan"),
        "tx_events": tx_events,
        "wall_s": wall,
        "csms_cpu_s": csms_cpu,
        "stations_cpu_s": stations_cpu,
        "worker_peak_rss_mib": max(float(w.get("peak_rss_mib", 0)) for w in doc.get("workers", [doc])),
        "run_directory": doc["run_directory"],
    }


def run(stations: int, ks: list[int], keep: Path | None = None) -> list[dict[str, Any]]:
    """Each K in turn; the run directories are kept under ``keep`` when given."""
    from evsim.clock import real_utcnow
    from evsim.pki import init_dev_pki

    with tempfile.TemporaryDirectory(prefix="evsim-bench-workers-") as tmp:
        work = keep if keep is not None else Path(tmp)
        pki = Path(tmp) / "pki"
        init_dev_pki(pki, host="localhost", org="evsim", key_type="ec", now=real_utcnow())
        return [run_one(stations, k, pki, work) for k in ks]


def render(rows: list[dict[str, Any]]) -> str:
    base = rows[0]
    body = [
        [
            r["workers"],
            f"{r['booted']}/{r['stations']}",
            r["connection_failures"],
            ", ".join(f"{t:.1f}" for t in r["worker_starts_s"]),
            f"{r['storm_s']:.2f} s",
            f"{r['round_trips_per_s']:,.0f}",
            f"{r['round_trips_per_s'] / base['round_trips_per_s']:.2f}x",
            f"{r['csms_cpu_s']:.1f} s",
            f"{r['stations_cpu_s']:.1f} s",
            f"{r['csms_cpu_s'] / (r['csms_cpu_s'] + r['stations_cpu_s']):.0%}",
            f"{r['worker_peak_rss_mib']:.0f} MiB",
        ]
        for r in rows
    ]
    return bench_table(
        "workers",
        [
            "K",
            "booted",
            "connect failures",
            "worker starts (s)",
            "storm",
            "round trips/s",
            "vs K=1",
            "CSMS CPU",
            "stations CPU",
            "CSMS share",
            "peak RSS per worker",
        ],
        body,
        title=f"evsim stations --workers K against one evsim csms, profile 3 (mutual TLS), loopback, "
        f"{os.cpu_count()} cores",
        raw=rows,
    )


def section() -> None:
    """``make bench`` section: K = 1, 2 at ``BENCH_WORKERS_N`` stations (default 500)."""
    print(render(run(int(os.environ.get("BENCH_WORKERS_N", "500")), [1, 2])))


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.workers")
    p.add_argument("--stations", type=int, default=500)
    p.add_argument("--workers", default="1,2", help="comma-separated K values")
    p.add_argument("--keep", default=None, help="keep the run directories under this directory")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    rows = run(a.stations, [int(k) for k in a.workers.split(",")], Path(a.keep) if a.keep else None)
    if a.keep:
        (Path(a.keep) / "rows.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(json.dumps(rows, indent=2) if a.json else render(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
