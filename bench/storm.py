"""The mutual-TLS boot storm: ``evsim stations`` against ``evsim csms``, two processes, loopback TCP, defaults.

    python -m bench.storm [--stations N] [--pki DIR] [--connect-window W] [--keep DIR]

Both commands run as a user runs them, at security profile 3 (each station presents its own certificate) with
their default timeouts, backlog and connect window; ``--connect-window`` overrides the stations' window only
(0: every station connects at the same instant, the behaviour before the window existed). The storm starts when
the stations' clock starts (after their certificates are loaded) and a station's *connect time* is the elapsed
time of its first ``booted`` event: TCP connect, TLS handshake, WebSocket upgrade and an Accepted
BootNotification, including any wait for the window or for a retry. A *failure* is any ``handshake_failed`` or
``connection_lost`` event before the station booted (a timeout, a reset, a refusal), on either side.

The figures come from the two processes' event logs (one line per event, ``--keep DIR`` keeps them as
``stations.log`` and ``csms.log``). Station certificates are issued once per PKI directory (``--pki``: reuse it
between runs; issuing 10,000 takes about a minute).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import bench_table

__all__ = ["parse_log", "render", "run"]

DEFAULT_STATIONS = 10_000
"""``bench.storm`` default (``BENCH_STORM_N``): the fleet the storm target is stated for (10,000 stations at
security profile 3); about 2.5 minutes on a 2-core machine with the CPU to itself, certificates included, and
up to ten on a loaded one (``BENCH_STORM_N=2000`` for a quick look)."""

_LINE = re.compile(r"^\S+ \[\s*(?P<t>[0-9.]+)\] \S+\s+(?P<node>\S+) (?P<kind>\S+)")
_FAILURES = ("handshake_failed", "connection_lost")


def parse_log(lines: list[str], *, server: bool = False) -> dict[str, Any]:
    """Connect times and failures from one process's event lines.

    Args:
        lines: the process's event lines.
        server: the lines are the CSMS's: one node (``csms``) logs every connection, so every failure event
            counts (a station's log counts those of stations not yet booted only).

    Returns:
        ``booted``: node -> elapsed seconds of its first ``booted`` event; ``failures``: failure events (of nodes
        not yet booted, unless ``server``), by kind; ``events``: lines read.
    """
    booted: dict[str, float] = {}
    failures: dict[str, int] = {}
    events = 0
    for line in lines:
        m = _LINE.match(line)
        if m is None:
            continue
        events += 1
        node, kind = m["node"], m["kind"]
        if kind == "booted":
            booted.setdefault(node, float(m["t"]))
        elif kind in _FAILURES and (server or node not in booted):
            failures[kind] = failures.get(kind, 0) + 1
    return {"booted": booted, "failures": failures, "events": events}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _evsim(*args: str) -> list[str]:
    return [sys.executable, "-m", "evsim", *args]


def _wait_listening(log: Path, proc: subprocess.Popen[bytes], limit_s: float = 60.0) -> None:
    """Until the CSMS logged its ``listening`` event (a probe connection would count as a failed handshake)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"evsim csms exited with {proc.returncode} before listening")
        if " listening " in log.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise RuntimeError(f"evsim csms did not listen within {limit_s:g} s")


def run(
    stations: int, *, pki: Path | None = None, window: int | None = None, keep: Path | None = None
) -> dict[str, Any]:
    """One storm; returns the figures (:func:`render` prints them)."""
    with tempfile.TemporaryDirectory(prefix="evsim-storm-") as tmp:
        work = Path(tmp)
        pki_dir = pki or work / "pki"
        if not (pki_dir / "ca.crt").exists():
            subprocess.run(
                _evsim("certs", "init", "--pki", str(pki_dir), "-q"),
                check=True,
                timeout=120,
                stdout=subprocess.DEVNULL,
            )
        port = _free_port()
        csms_log, st_log = work / "csms.log", work / "stations.log"
        with csms_log.open("wb") as csms_err:
            csms = subprocess.Popen(
                _evsim(
                    "csms", "--listen", f"127.0.0.1:{port}", "--pki", str(pki_dir), "--security-profile", "3"
                ),
                stdout=subprocess.DEVNULL,
                stderr=csms_err,
            )
            try:
                _wait_listening(csms_log, csms)
                cmd = _evsim(
                    "stations",
                    "--csms",
                    f"wss://localhost:{port}/ocpp",
                    "--stations",
                    str(stations),
                    "--pki",
                    str(pki_dir),
                    "--security-profile",
                    "3",
                    "--sessions",
                    "0",
                    "--duration",
                    "15m",
                    "--progress",
                    "0",
                    "--json",
                )
                if window is not None:
                    cmd += ["--connect-window", str(window)]
                t0 = time.perf_counter()
                with st_log.open("wb") as st_err:
                    done = subprocess.run(
                        cmd, stdout=subprocess.DEVNULL, stderr=st_err, timeout=1200, check=False
                    )
                wall = time.perf_counter() - t0
            finally:
                csms.terminate()  # SIGTERM (SIGINT is ignored by a CSMS started from a background job)
                try:
                    csms.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    csms.kill()
                    csms.wait()
        st = parse_log(st_log.read_text(errors="replace").splitlines())
        cs = parse_log(csms_log.read_text(errors="replace").splitlines(), server=True)
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(st_log, keep / "stations.log")
            shutil.copy(csms_log, keep / "csms.log")
    times = sorted(st["booted"].values())
    q = statistics.quantiles(times, n=100, method="inclusive") if len(times) >= 2 else times * 99
    return {
        "stations": stations,
        "window": "default" if window is None else window,
        "exit": done.returncode,
        "booted": len(times),
        "storm_s": times[-1] if times else float("nan"),
        "p50": q[49] if q else float("nan"),
        "p95": q[94] if q else float("nan"),
        "p99": q[98] if q else float("nan"),
        "station_failures": st["failures"],
        "csms_failures": cs["failures"],
        "process_wall_s": wall,
    }


def render(results: list[dict[str, Any]]) -> str:
    rows = [
        [
            f"{r['stations']:,}",
            str(r["window"]),
            f"{r['booted']:,}",
            f"{r['storm_s']:.1f}",
            f"{r['p50']:.2f}",
            f"{r['p95']:.2f}",
            f"{r['p99']:.2f}",
            str(sum(r["station_failures"].values())),
            ", ".join(f"{k} {v}" for k, v in sorted(r["csms_failures"].items())) or "0",
        ]
        for r in results
    ]
    return bench_table(
        "storm",
        [
            "stations",
            "connect window",
            "booted",
            "storm s",
            "p50 s",
            "p95 s",
            "p99 s",
            "failures (stations)",
            "failures (CSMS)",
        ],
        rows,
        title="Boot storm, security profile 3 (mutual TLS), evsim stations -> evsim csms, loopback, defaults "
        "(connect time: storm start -> BootNotification Accepted)",
        raw=results,
    )


def section() -> None:
    """``python -m bench storm``: one storm of ``BENCH_STORM_N`` stations (default 10,000) with the defaults."""
    n = int(os.environ.get("BENCH_STORM_N", str(DEFAULT_STATIONS)))
    print(render([run(n)]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stations", type=int, default=DEFAULT_STATIONS)
    p.add_argument("--pki", type=Path, default=None, help="PKI directory to reuse (created if missing)")
    p.add_argument(
        "--connect-window",
        type=int,
        action="append",
        default=None,
        help="the stations' --connect-window (repeat for several runs; default: evsim's default)",
    )
    p.add_argument("--keep", type=Path, default=None, help="keep the event logs here")
    args = p.parse_args(argv)
    windows: list[int | None] = list(args.connect_window) if args.connect_window else [None]
    results = []
    for w in windows:
        keep = args.keep / f"window-{w if w is not None else 'default'}" if args.keep else None
        results.append(run(args.stations, pki=args.pki, window=w, keep=keep))
    print(render(results))
    return 0 if all(r["booted"] == r["stations"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
