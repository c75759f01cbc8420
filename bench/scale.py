"""Scale in virtual time: run ``bench/scenarios/day_1000.toml`` (or another file) and report the speed-up.

    python -m bench.scale [FILE] [--stations N] [--hours H]

``--stations`` and ``--hours`` shrink the run for profiling (e.g. ``--stations 200`` or ``--hours 4``).

Prints simulated seconds per wall second, wall time, messages handled, and the peak RSS of the process.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import attrs

from bench.common import bench_table
from evsim.scenario.loader import load_scenario
from evsim.scenario.runner import run_scenario

DEFAULT = Path(__file__).parent / "scenarios" / "day_1000.toml"


def run(
    path: Path = DEFAULT, stations: int | None = None, hours: float | None = None
) -> list[tuple[str, float, str]]:
    sc = load_scenario(path)
    if stations is not None:
        groups = {k: attrs.evolve(g, count=stations) for k, g in sc.stations.items()}
        sc = attrs.evolve(sc, stations=groups)
    if hours is not None:
        sc = attrs.evolve(sc, simulation=attrs.evolve(sc.simulation, duration=hours * 3600.0))
    t0 = time.perf_counter()
    c0 = time.process_time()
    result = run_scenario(sc)
    cpu = time.process_time() - c0
    wall = time.perf_counter() - t0
    if not result.ok:
        raise SystemExit(f"scale run did not complete: {result.outcome} {result.error}")
    messages = sum(sum(c.statistics().messages.values()) for c in result.csms.values())
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n = sc.station_count()
    return [
        (f"{n} stations x {sc.simulation.duration / 3600:.0f} h simulated: wall time", wall, "s"),
        ("speed-up (simulated s per wall s)", result.sim_elapsed / wall, "x"),
        ("OCPP messages handled by the CSMS", float(messages), "msgs"),
        ("wall time per OCPP round trip (whole stack, both ends)", wall / max(messages, 1) * 1e6, "us"),
        ("CPU time of the process during the run", cpu, "s"),
        ("CPU time per OCPP message (whole stack, both ends)", cpu / max(messages, 1) * 1e6, "us"),
        ("peak RSS of the process", peak_mib, "MiB"),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("file", nargs="?", type=Path, default=DEFAULT)
    p.add_argument("--stations", type=int, default=None, help="override every station group's count")
    p.add_argument("--hours", type=float, default=None, help="override the simulated duration (hours)")
    args = p.parse_args(argv)
    rows = run(args.file, args.stations, args.hours)
    print(
        bench_table(
            "scale",
            ["measure", "value", "unit"],
            [[name, f"{value:.1f}", unit] for name, value, unit in rows],
            title=f"Scale in virtual time ({args.file.name})",
            raw=[{"measure": name, "value": value, "unit": unit} for name, value, unit in rows],
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
