"""Summary tables of runs with the CPU model in virtual time (:mod:`evsim.cpu`): pure functions of the events.

* **CPU model**: one row per CPU (a node, or a station group sharing one), from the ``cpu_usage`` event the
  runner records at the end: cores, busy core-seconds, utilisation over the run, the longest queue of
  operations waiting for a core, operations charged.
* **Boot storm**: per station group, what a storm costs: stations booted, the time to drain (from the run's
  start to the last station's first accepted BootNotification), the time to first boot of a station as
  percentiles (back-off waits included: this is what a station's owner waits), and the retries (a station's
  ``reconnect_wait`` before its first boot) with the stations that needed any. Per-attempt connect and boot
  latencies per endpoint are the load tables' business, not this one's.

Both appear only in runs that recorded ``cpu_usage`` (a run without the model keeps its report).
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence
from typing import Any

from evsim.metrics.certificates import percentile
from evsim.metrics.summary import Table
from evsim.metrics.topology import Topology
from evsim.report import Seconds, human_duration

__all__ = ["cpu_tables", "storm_figures"]


def storm_figures(evs: Sequence[Mapping[str, Any]], topology: Topology) -> dict[str, dict[str, float]]:
    """Per station group: ``stations``, ``booted``, ``drain_s``, ``first_boot_p50`` / ``p95`` / ``max``,
    ``retries``, ``stations_retried`` (see the module docstring); times from ``run_started``."""
    start = next((float(e["t"]) for e in evs if e["kind"] == "run_started"), 0.0)
    first_boot: dict[str, float] = {}
    retries: collections.Counter[str] = collections.Counter()
    for e in evs:
        node, kind = str(e["node"]), e["kind"]
        if kind == "booted" and node not in first_boot:
            first_boot[node] = float(e["t"]) - start
        elif kind == "reconnect_wait" and node not in first_boot:
            retries[node] += 1
    out: dict[str, dict[str, float]] = {}
    for group, members in topology.members().items():
        times = sorted(first_boot[s] for s in members if s in first_boot)
        out[group] = {
            "stations": len(members),
            "booted": len(times),
            "drain_s": times[-1] if times else float("nan"),
            "first_boot_p50": percentile(times, 0.5),
            "first_boot_p95": percentile(times, 0.95),
            "first_boot_max": percentile(times, 1.0),
            "retries": sum(retries[s] for s in members),
            "stations_retried": sum(1 for s in members if retries[s]),
        }
    return out


def cpu_tables(evs: Sequence[Mapping[str, Any]], topology: Topology) -> tuple[Table, ...]:
    """The CPU model and boot storm tables, or none when the run recorded no ``cpu_usage``."""
    usage = [e for e in evs if e["kind"] == "cpu_usage"]
    if not usage:
        return ()
    times = [float(e["t"]) for e in evs if e["kind"] in ("run_started", "run_ended")]
    span = max(times) - min(times) if len(times) == 2 else max(float(e["t"]) for e in evs)
    cpu_rows = []
    for e in sorted(usage, key=lambda e: str(e["cpu"])):
        cores, busy = int(e["cores"]), float(e["busy"])
        ops: Mapping[str, int] = e.get("operations", {})
        cpu_rows.append(
            (
                str(e["cpu"]),
                cores,
                Seconds(busy),
                round(100 * busy / (cores * span), 1) if span > 0 else "-",
                int(e["queue_peak"]),
                sum(ops.values()),
            )
        )
    storm_rows = [
        (
            group,
            f"{int(f['booted'])} / {int(f['stations'])}",
            Seconds(f["drain_s"]),
            *(Seconds(f[k]) for k in ("first_boot_p50", "first_boot_p95", "first_boot_max")),
            int(f["retries"]),
            int(f["stations_retried"]),
        )
        for group, f in storm_figures(evs, topology).items()
    ]
    return (
        Table(
            "CPU model (virtual time)",
            ("cpu", "cores", "busy", "busy %", "queue peak", "operations"),
            tuple(cpu_rows),
            note=f"busy %: of cores x the run's {human_duration(span)}; from the runner's cpu_usage events",
        ),
        Table(
            "Boot storm",
            (
                "group",
                "booted",
                "drain",
                "first boot p50",
                "p95",
                "max",
                "retries",
                "stations retried",
            ),
            tuple(storm_rows),
            note="first boot: run start to a station's first accepted BootNotification (back-off included); "
            "drain: the last of them; retries: reconnect waits before the first boot",
        ),
    )
