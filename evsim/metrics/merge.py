"""``evsim report --merge``: the run directories of one sharded fleet combined into one run directory.

Each shard (``evsim stations --shard I/N --out DIR``, or a worker of ``--workers``) wrote its own run directory:
its events timed from its own start, its ``meta.json`` naming the fleet (``fleet``: the arguments every shard
must share) and its slice (``shard``: index, count, first and last station). The merge checks the shards belong
together (same fleet, same shard count, no shard twice, no station in two shards), puts every event on one time
axis (the earliest shard start is 0; each shard is shifted by how much later it started), and writes a new run
directory whose ``meta.json`` records the shards; the summary and plots are then rendered from it as for any
run. Missing shards are allowed (a pod that never ran) and recorded, and make the outcome ``incomplete``.

The shards of one scenario run (``evsim run FILE --shard I/N``, or a worker of ``--workers``) name the run in
``scenario_run`` (the file's content hash, seed and duration) instead of ``fleet``, and the stations each ran
in ``shard.groups``; they are merged by :mod:`evsim.metrics.merge_scenario`: the same checks, no time shift.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from evsim.errors import ConfigError
from evsim.metrics.rundir import RunData, RunDir, load
from evsim.metrics.topology import CONTROL_NODES, Topology
from evsim.recorder import ROUND_TRIPS

__all__ = ["check_split", "merge_shards"]


def _started(run: RunData) -> _dt.datetime:
    value = run.meta.get("started_utc")
    try:
        started = _dt.datetime.fromisoformat(str(value))
    except ValueError:
        raise ConfigError("no readable started_utc", file=str(run.path / "meta.json"), value=value) from None
    return started if started.tzinfo is not None else started.replace(tzinfo=_dt.UTC)


def _shard_of(run: RunData) -> dict[str, Any]:
    shard, fleet = run.meta.get("shard"), run.meta.get("fleet")
    if not isinstance(shard, dict) or not isinstance(fleet, dict):
        raise ConfigError(
            "not a shard of an 'evsim stations' fleet (meta.json has no shard / fleet)",
            value=str(run.path),
            fix="give run directories written by 'evsim stations --shard I/N --out DIR' (or --workers K --out DIR)",
        )
    return shard


def check_split(
    runs: Sequence[RunData],
    shard_of: Callable[[RunData], Mapping[str, Any]],
    members_of: Callable[[RunData], Iterable[str]],
    *,
    identity: str,
    different: str,
    different_fix: str,
    member: str = "",
) -> None:
    """Refuse shards that do not make one split of one run: ``meta.json``'s ``identity`` differs from the first
    shard's (``different`` says of what, ``different_fix`` how to mend it), another shard count, a shard given
    twice, or a member (``members_of``: the stations a shard ran; ``member`` prefixes its name in the error) in
    two shards."""
    first = runs[0]
    count = shard_of(first).get("count")
    by_index: dict[int, Path] = {}
    owner: dict[str, Path] = {}
    for run in runs:
        shard = shard_of(run)
        if run.meta.get(identity) != first.meta.get(identity):
            raise ConfigError(
                f"{different}: {identity} differs from {first.path}'s", value=str(run.path), fix=different_fix
            )
        if shard.get("count") != count:
            raise ConfigError(
                f"shard {shard.get('index')}/{shard.get('count')} is not one of {count} shards like {first.path}",
                value=str(run.path),
                fix="merge shards of the same --shard I/N split",
            )
        index = int(shard.get("index", -1))
        if index in by_index:
            raise ConfigError(
                f"overlapping shards: shard {index} is given twice ({by_index[index]} and {run.path})",
                value=str(run.path),
                fix="give each shard's run directory once",
            )
        by_index[index] = run.path
        for name in members_of(run):
            if name in owner:
                raise ConfigError(
                    f"overlapping shards: {member}{name} is in {owner[name]} and {run.path}",
                    value=str(run.path),
                    fix="merge shards of one --shard I/N split (each station in exactly one shard)",
                )
            owner[name] = run.path


def _fleet_stations(run: RunData) -> list[str]:
    """The nodes of a fleet shard that are its stations: every shard has its own run-wide nodes (runner,
    timeline, the round-trip sums)."""
    nodes = ({str(e["node"]) for e in run.events} - CONTROL_NODES) | set(
        Topology.from_json(run.meta.get("topology")).groups
    )
    return sorted(nodes)


def _check_together(runs: Sequence[RunData]) -> None:
    """Refuse shards of different fleets, a shard given twice, or a station in two shards."""
    check_split(
        runs,
        _shard_of,
        _fleet_stations,
        identity="fleet",
        different="shards of different runs",
        different_fix="merge only the shards of one 'evsim stations' command line (same --csms, --stations, "
        "--id-prefix, --seed, profile and sessions)",
    )


def merge_shards(dirs: Sequence[Path], out: Path) -> Path:
    """Merge shard run directories into a new run directory under ``out``.

    Args:
        dirs: the shards' run directories, any order.
        out: base directory of the merged run directory (created if missing).

    Returns:
        The merged run directory (events, ``meta.json``; :func:`~evsim.metrics.rundir.rerender` renders it).

    Raises:
        ConfigError: no shards, a directory that is no shard run, shards of different fleets or overlapping.
    """
    if not dirs:
        raise ConfigError("nothing to merge", path="--merge", fix="give the shards' run directories")
    loaded = [load(d) for d in dirs]
    if any("scenario_run" in r.meta for r in loaded):
        from evsim.metrics.merge_scenario import merge_scenario_shards

        return merge_scenario_shards(loaded, out)
    runs = sorted(loaded, key=lambda r: int(_shard_of(r).get("index", -1)))
    _check_together(runs)
    starts = [_started(r) for r in runs]
    t0 = min(starts)
    count = int(_shard_of(runs[0]).get("count", len(runs)))
    present = {int(_shard_of(r)["index"]) for r in runs}
    missing = [i for i in range(count) if i not in present]
    merged: list[tuple[float, int, int, dict[str, Any]]] = []
    shards: list[dict[str, Any]] = []
    stations: dict[str, list[str]] = {}
    end = 0.0
    for run, start in zip(runs, starts, strict=True):
        shift = (start - t0).total_seconds()
        index = int(_shard_of(run)["index"])
        for n, event in enumerate(run.events):
            moved = {**event, "t": float(event["t"]) + shift}
            if event.get("kind") == ROUND_TRIPS and isinstance(event.get("start"), int | float):
                moved["start"] = float(event["start"]) + shift  # the window's own time, on the merged axis
            merged.append((moved["t"], index, n, moved))
        duration = run.meta.get("duration_s")
        end = max(end, shift + (float(duration) if isinstance(duration, int | float) else 0.0))
        for group, ids in Topology.from_json(run.meta.get("topology")).members().items():
            stations.setdefault(group, []).extend(ids)
        shards.append(
            {
                **_shard_of(run),
                "run_directory": str(run.path),
                "started_utc": start.isoformat(),
                "offset_s": round(shift, 6),
                "stations_total": run.meta.get("stations_total"),
                "outcome": run.meta.get("outcome"),
            }
        )
    merged.sort(key=lambda item: item[:3])
    failed = [f"shard {s['index']}: {s['outcome']}" for s in shards if s["outcome"] != "completed"]
    failed += [f"shard {i}: missing" for i in missing]
    rd = RunDir.create(out, f"stations-merged-{count}-shards", t0)
    with rd.open_event_sink() as sink:
        for *_, event in merged:
            sink.write(event)
    first = runs[0].meta
    rd.write_meta(
        {
            "scenario": "stations",
            "description": f"{len(runs)} of {count} shards merged",
            "seed": first.get("seed"),
            "started_utc": t0,
            "duration_s": end,
            "wall_time_s": round(end, 3),
            "evsim_version": first.get("evsim_version"),
            "outcome": "completed" if not failed else "incomplete (" + "; ".join(failed) + ")",
            "clock": first.get("clock"),
            "network": first.get("network"),
            "stations_total": sum(int(r.meta.get("stations_total", 0)) for r in runs),
            "fleet": first.get("fleet"),
            "shards": shards,
            "shards_missing": missing,
            "topology": Topology.from_groups(stations, {}).as_json(),
        }
    )
    return rd.path
