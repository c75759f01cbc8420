"""Scale in virtual time: run ``bench/scenarios/day_1000.toml`` (or another file) and report the speed-up.

    python -m bench.scale [FILE] [--stations N] [--hours H] [--workers K]

``--stations`` and ``--hours`` shrink the run for profiling (e.g. ``--stations 200`` or ``--hours 4``).

Prints simulated seconds per wall second, wall time, messages handled, and the peak RSS of the process. With
``--workers K`` (K >= 2) the same scenario runs as ``evsim run FILE --workers K`` (K shard processes, each a
replica of the CSMS serving its slice of the fleet, then merged: scenarios/README.md, Sharded runs); the rows are
the same, read from the merged run directory: the wall time of the whole command (start, shards, merge,
report), the OCPP messages the CSMS replicas handled together, the CPU time of all its processes, and the peak
RSS of the largest shard.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import tempfile
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


def _overridden(path: Path, stations: int | None, hours: float | None, into: Path) -> Path:
    """``path`` with every group's ``count`` and the ``duration`` replaced (a copy in ``into``); checked by
    loading it back."""
    if stations is None and hours is None:
        return path
    text = path.read_text()
    if stations is not None:
        text = re.sub(r"(?m)^count = \d+", f"count = {stations}", text)
    if hours is not None:
        text = re.sub(r"(?m)^duration = .*$", f'duration = "{hours * 3600:.0f}s"', text)
    out = into / path.name
    out.write_text(text)
    sc = load_scenario(out)
    if (stations is not None and any(g.count != stations for g in sc.stations.values())) or (
        hours is not None and sc.simulation.duration != round(hours * 3600)
    ):
        raise SystemExit(
            f"cannot override the sizes of {path} (one 'count = N' per group, one 'duration = ...')"
        )
    return out


def run_workers(
    workers: int, path: Path = DEFAULT, stations: int | None = None, hours: float | None = None
) -> list[tuple[str, float, str]]:
    """The rows of :func:`run` for ``evsim run FILE --workers K`` (a subprocess, its children included; K = 1:
    ``evsim run FILE``, the same command unsharded, for a side-by-side ratio)."""
    with tempfile.TemporaryDirectory(prefix="evsim-scale-") as tmp:
        file = _overridden(path, stations, hours, Path(tmp))
        argv = [sys.executable, "-m", "evsim", "run", str(file)]
        argv += ["--workers", str(workers)] if workers > 1 else []
        argv += ["--out", str(Path(tmp) / "runs"), "--no-live", "--no-plots", "--json"]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run(argv, stdout=subprocess.PIPE, timeout=3600, check=False)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise SystemExit(f"evsim run --workers {workers} exited {proc.returncode}")
        meta = json.loads((Path(json.loads(proc.stdout)["run_directory"]) / "meta.json").read_text())
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    messages = sum(sum(by_action.values()) for by_action in meta["ocpp_messages"].values())
    peaks = [float(s.get("peak_rss_mib") or 0.0) for s in meta.get("shards", ())] or [after.ru_maxrss / 1024]
    n = int(meta["stations_total"])
    shards = f"{workers} workers" if workers > 1 else "unsharded"
    processes = f"all {workers + 1} processes" if workers > 1 else "the process"
    rows = [
        (
            f"{n} stations x {float(meta['duration_s']) / 3600:.0f} h simulated, {shards}: wall time",
            wall,
            "s",
        ),
        ("speed-up (simulated s per wall s)", float(meta["duration_s"]) / wall, "x"),
        ("OCPP messages handled by the CSMS" + (" replicas" if workers > 1 else ""), float(messages), "msgs"),
        ("wall time per OCPP round trip (whole stack, both ends)", wall / max(messages, 1) * 1e6, "us"),
        (f"CPU time of {processes} (start, run, merge, report)", cpu, "s"),
        ("CPU time per OCPP message (whole stack, both ends)", cpu / max(messages, 1) * 1e6, "us"),
        ("peak RSS of the largest worker" if workers > 1 else "peak RSS of the process", max(peaks), "MiB"),
    ]
    if workers > 1:  # the rest is the parent's: its start, the merge and the merged report
        shard_cpu = sum(float(s.get("cpu_s") or 0.0) for s in meta["shards"])
        rows.append(("CPU time of the workers until their runs ended (start and run, sum)", shard_cpu, "s"))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("file", nargs="?", type=Path, default=DEFAULT)
    p.add_argument("--stations", type=int, default=None, help="override every station group's count")
    p.add_argument("--hours", type=float, default=None, help="override the simulated duration (hours)")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="run it as 'evsim run --workers K' (K shard processes, merged; 1: 'evsim run' unsharded, the same "
        "command for a side-by-side ratio); default: in this process, without writing a run directory",
    )
    args = p.parse_args(argv)
    if args.workers is not None:
        rows = run_workers(args.workers, args.file, args.stations, args.hours)
    else:
        rows = run(args.file, args.stations, args.hours)
    workers = "" if args.workers is None else f", evsim run --workers {args.workers}"
    print(
        bench_table(
            "scale" if args.workers is None else f"scale-workers-{args.workers}",
            ["measure", "value", "unit"],
            [[name, f"{value:.1f}", unit] for name, value, unit in rows],
            title=f"Scale in virtual time ({args.file.name}{workers})",
            raw=[{"measure": name, "value": value, "unit": unit} for name, value, unit in rows],
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
