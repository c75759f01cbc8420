"""Shared pieces of the benchmark: the result record, the table every section prints, a throwaway PKI and
process probes.

Everything here is benchmark scaffolding, not simulator code: the PKI is a minimal root CA plus one
ECDSA P-256 server certificate for ``localhost`` / ``127.0.0.1``, written to a directory the caller
owns (normally a temporary one).

Tables: a section prints each table through :func:`bench_table` (the text of :func:`evsim.report.table`) and each
failure or gap through :func:`bench_problem`. When ``make bench`` runs (``bench/results.py``), the environment
variable :data:`RECORD_ENV` names a file and both append one JSON line to it, in whichever process the section
runs (sections that run in a subprocess inherit the variable), so the run's result file holds every table as
printed and ``python -m bench readme`` copies them into the README without anyone copying by hand.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from evsim.pki.ca import CertificateAuthority
from evsim.pki.keys import write_cert_file, write_key_file
from evsim.report import cell, table

__all__ = [
    "LOADED_WALL_OVER_CPU",
    "RECORD_ENV",
    "Result",
    "bench_problem",
    "bench_table",
    "cpu_s",
    "latency_percentiles_ms",
    "load_note",
    "make_bench_pki",
    "raise_nofile",
    "rss_kib",
]


@dataclass
class Result:
    """One benchmark row; the field names are the JSON keys a peer prints."""

    name: str
    boot_storm_s: float
    rtt_per_s: float
    cpu_us_per_rtt: float
    kib_per_station: float
    notes: str = ""
    group: str = ""
    """The key-exchange group its TLS handshakes negotiated ("" if unknown)."""
    boot_cpu_s: float = 0.0
    """CPU seconds the process spent during the boot storm (all threads): the figure to compare with the
    handshake floor's CPU on a shared machine, where wall time also counts other processes' turns."""
    hb_ms: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Paced heartbeat round-trip latency p50 / p95 / p99 in ms (0 when the run did not pace heartbeats)."""
    hb_count: int = 0
    """Paced heartbeat round trips the percentiles were taken over."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Result:
        return cls(
            name=str(data["name"]),
            boot_storm_s=float(data["boot_storm_s"]),
            rtt_per_s=float(data["rtt_per_s"]),
            cpu_us_per_rtt=float(data["cpu_us_per_rtt"]),
            kib_per_station=float(data["kib_per_station"]),
            notes=str(data.get("notes", "")),
            group=str(data.get("group", "")),
            boot_cpu_s=float(data.get("boot_cpu_s", 0.0)),
            hb_ms=_three(data.get("hb_ms")),
            hb_count=int(data.get("hb_count", 0)),
        )


def _three(value: Any) -> tuple[float, float, float]:
    p50, p95, p99 = (float(x) for x in value) if value else (0.0, 0.0, 0.0)
    return p50, p95, p99


def latency_percentiles_ms(samples_s: list[float]) -> tuple[float, float, float]:
    """p50 / p95 / p99 of latencies given in seconds, in milliseconds (zeros when fewer than two samples)."""
    if len(samples_s) < 2:
        return 0.0, 0.0, 0.0
    q = statistics.quantiles(samples_s, n=100, method="inclusive")
    return round(q[49] * 1e3, 3), round(q[94] * 1e3, 3), round(q[98] * 1e3, 3)


RECORD_ENV = "BENCH_RECORD"
"""The environment variable naming the file :func:`bench_table` and :func:`bench_problem` append to (unset: they
only return the text)."""


def bench_table(
    key: str,
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    title: str = "",
    raw: object = None,
) -> str:
    """A section's table: the text of :func:`evsim.report.table`, recorded for the run's result file.

    Args:
        key: what README blocks name it by (``<!-- bench:KEY -->``); stable across runs, e.g. ``"fleet"``.
        headers, rows, title: as :func:`evsim.report.table`.
        raw: the measurements the rows were formatted from (JSON-serializable), kept beside them.

    Returns:
        The text to print.
    """
    shown = [[cell(c) for c in row] for row in rows]
    entry: dict[str, Any] = {
        "kind": "table",
        "key": key,
        "title": title,
        "columns": [str(h) for h in headers],
    }
    entry["rows"] = shown
    if any(isinstance(c, int | float) for row in rows for c in row):
        # the cells that were numbers, as numbers (the rest as shown)
        entry["values"] = [[c if isinstance(c, int | float) else cell(c) for c in row] for row in rows]
    entry["raw"] = raw
    _record(entry)
    return table(headers, rows, title=title)


def bench_problem(message: str) -> str:
    """Record that part of a section failed, timed out or was left out; returns the line to print (``! ...``)."""
    _record({"kind": "problem", "message": message})
    return f"! {message}"


def _record(entry: dict[str, Any]) -> None:
    path = os.environ.get(RECORD_ENV)
    if not path:
        return
    line = json.dumps(_plain(entry), ensure_ascii=False, default=str) + "\n"
    # one write of a whole line in append mode: lines from a section's subprocesses do not interleave
    with open(path, "a", encoding="utf-8") as out:
        out.write(line)


def _plain(value: object) -> object:
    """``value`` with non-finite floats as strings (JSON has no NaN) and tuples as lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def make_bench_pki(directory: Path | str) -> dict[str, Path]:
    """Create a throwaway root CA and a ``localhost`` server certificate (ECDSA P-256) in ``directory``.

    Built with :mod:`evsim.pki` (the one place x509 builders live); the asyncio peers only read the files.

    Returns paths keyed ``ca`` (root certificate), ``ca_key``, ``cert`` (server leaf, SAN localhost and
    127.0.0.1) and ``key`` (server private key), all PEM.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca = CertificateAuthority.create_root(
        "evsim bench root CA", "evsim bench", now=now, days=2, path_length=0
    )
    server = ca.issue_server("localhost", ips=("127.0.0.1",), org="evsim bench", now=now, days=2)
    paths = {
        "ca": out / "bench-root-ca.pem",
        "ca_key": out / "bench-root-ca.key",
        "cert": out / "bench-server.pem",
        "key": out / "bench-server.key",
    }
    write_cert_file(paths["ca"], ca.cert)
    write_key_file(paths["ca_key"], ca.key)
    write_cert_file(paths["cert"], server.cert)
    write_key_file(paths["key"], server.key)
    return paths


def rss_kib() -> int:
    """Resident set size of this process in KiB (``VmRSS`` from ``/proc/self/status``)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("VmRSS not found in /proc/self/status")


def cpu_s() -> float:
    """CPU time (user + system, all threads) consumed by this process, in seconds."""
    return time.process_time()


def raise_nofile() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the new soft limit.

    A 1000-station run in one process holds 2000 sockets (both ends) plus the listener.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        target = max(soft, 1 << 20) if soft != resource.RLIM_INFINITY else soft
    else:
        target = hard
    if soft != target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft
    return target


LOADED_WALL_OVER_CPU = 1.3
"""A single-threaded, CPU-bound benchmark whose wall time exceeds its CPU time by more than this factor was
sharing its core (30 %: above the few per cent that page faults and timer ticks explain on an idle machine)."""


def load_note(wall_s: float, cpu_seconds: float) -> str | None:
    """A note for the output when a single-threaded, CPU-bound run was slowed by other processes.

    Returns None when ``wall_s <= LOADED_WALL_OVER_CPU * cpu_seconds`` (the machine looked idle enough).
    """
    if cpu_seconds <= 0 or wall_s <= LOADED_WALL_OVER_CPU * cpu_seconds:
        return None
    return (
        f"taken on a loaded machine: wall {wall_s:.1f} s vs CPU {cpu_seconds:.1f} s "
        f"({wall_s / cpu_seconds:.1f}x); CPU figures are the ones to read"
    )


def print_module_section(module: str, *, timeout: float, what: str) -> None:
    """Run ``python -m module --stations BENCH_N`` in a subprocess (its own memory and file limits), bounded by
    ``timeout`` seconds, and print its output (or its last error line; ``what`` names it when it times out)."""
    n = os.environ.get("BENCH_N", "1000")
    run_and_print([sys.executable, "-m", module, "--stations", n], timeout=timeout, what=what)


def run_and_print(cmd: Sequence[str], *, timeout: float, what: str) -> None:
    """Run a section's subprocess, bounded by ``timeout`` seconds, and print its output; a timeout, a failure
    exit status or no output is printed and recorded with :func:`bench_problem` (``what`` names the runs)."""
    try:
        out = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        print(bench_problem(f"the {what} did not finish within {timeout / 60:g} minutes"))
        return
    if out.stdout.strip():
        print(out.stdout.rstrip())
    if out.returncode != 0 or not out.stdout.strip():
        last = out.stderr.strip().splitlines()[-1:] or ["no output"]
        print(bench_problem(f"the {what} exited with status {out.returncode}: {last[0]}"))
