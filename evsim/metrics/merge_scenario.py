"""``evsim report --merge`` of the shards of one scenario run (``evsim run FILE --shard I/N``, ``--workers K``).

Each shard ran a complete world in virtual time: a replica of every server (CSMS, controllers, file, log and
NTS servers, energy managers) serving its slice of every station group, on the simulated time axis that starts
at 0 in every shard. Its ``meta.json`` names the run (``scenario_run``: the scenario file's content hash, seed
and duration) and its slice (``shard``: index, count, and per group the station numbers and ids it ran).

The merge checks the shards belong together (the same scenario run, the same shard count, no shard twice, no
station in two shards), keeps every event at its own time (no shift: the axes are one), and writes a run
directory whose ``meta.json`` unites the per-station counts (a timeline event every shard played is kept once) and records the shards and that the servers were
replicated per shard: a server's events appear once per shard, each replica with the stations of its shard.
Missing shards are recorded and make the outcome ``incomplete``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from evsim.clock import real_utcnow
from evsim.errors import ConfigError
from evsim.metrics.merge import check_split
from evsim.metrics.rundir import RunData, RunDir
from evsim.metrics.topology import Topology

__all__ = ["REPLICATED", "merge_scenario_shards"]

REPLICATED = (
    "replicated per shard: each shard ran every CSMS, controller and server node for its own stations, so a "
    "server's events appear once per shard"
)
"""What the merged ``meta.json`` says about the server nodes (``servers``)."""

_DONE = ("completed", "all stations done")
TIMELINE_NODE = "timeline"
"""The node of the events that record a timeline entry being played (:meth:`evsim.world.World.play`)."""
_Item = tuple[float, int, int, dict[str, Any]]


def _shard(run: RunData) -> dict[str, Any]:
    shard = run.meta.get("shard")
    if not isinstance(shard, Mapping) or "scenario_run" not in run.meta or "groups" not in shard:
        raise ConfigError(
            "not a shard of an 'evsim run' scenario run (meta.json has no shard / scenario_run)",
            value=str(run.path),
            fix="give run directories written by 'evsim run FILE --shard I/N' (or --workers K), all of one run",
        )
    return dict(shard)


def _station_ids(run: RunData) -> list[str]:
    return [str(sid) for g in _shard(run)["groups"].values() for sid in g.get("ids", ())]


def _check_together(runs: Sequence[RunData]) -> None:
    """Refuse shards of different scenario runs, of different splits, a shard given twice, or a station in two."""
    check_split(
        runs,
        _shard,
        _station_ids,
        identity="scenario_run",
        different="shards of different scenario runs",
        different_fix="merge only the shards of one scenario file (same content), seed and duration",
        member="station ",
    )


def _union(runs: Sequence[RunData], key: str, *, depth: int = 1) -> dict[str, Any]:
    """The shards' ``key`` mappings united (``depth`` 2: one level down, e.g. endpoint -> station -> counts)."""
    out: dict[str, Any] = {}
    for run in runs:
        value = run.meta.get(key)
        if not isinstance(value, Mapping):
            continue
        for name, inner in value.items():
            if depth == 2 and isinstance(inner, Mapping):
                out.setdefault(name, {}).update(inner)
            else:
                out[name] = inner
    return out


def _timeline_once(events: list[_Item]) -> list[_Item]:
    """``events`` with each timeline event once: a shard records an event aimed at a server or a group as every
    shard does (the same instant, action and parameters), and the merged run, like the unsharded one, played
    it once."""
    seen: set[str] = set()
    out = []
    for item in events:
        event = item[3]
        if event.get("node") == TIMELINE_NODE:
            key = json.dumps({k: v for k, v in event.items() if k != "seq"}, sort_keys=True, default=str)
            if key in seen:
                continue
            seen.add(key)
        out.append(item)
    return out


def merge_scenario_shards(runs: Sequence[RunData], out: Path) -> Path:
    """Merge the run directories of the shards of one scenario run into a new run directory under ``out``.

    Args:
        runs: the shards, loaded (:func:`evsim.metrics.rundir.load`), any order.
        out: base directory of the merged run directory (created if missing).

    Returns:
        The merged run directory (events, ``meta.json``; :func:`~evsim.metrics.rundir.rerender` renders it).

    Raises:
        ConfigError: a directory that is no scenario shard, shards of different runs or splits, or overlapping.
    """
    runs = sorted(runs, key=lambda r: int(_shard(r).get("index", -1)))
    _check_together(runs)
    count = int(_shard(runs[0]).get("count", len(runs)))
    present = {int(_shard(r)["index"]) for r in runs}
    missing = [i for i in range(count) if i not in present]
    events = sorted(
        ((float(e["t"]), int(_shard(run)["index"]), n, e) for run in runs for n, e in enumerate(run.events)),
        key=lambda item: item[:3],
    )
    events = _timeline_once(events)
    shards = [
        {
            **_shard(run),
            "run_directory": str(run.path),
            "outcome": run.meta.get("outcome"),
            "wall_time_s": run.meta.get("wall_time_s"),
            "stations_total": run.meta.get("stations_total"),
            "peak_rss_mib": run.meta.get("peak_rss_mib"),
            "cpu_s": run.meta.get("cpu_s"),
        }
        for run in runs
    ]
    failed = [f"shard {s['index']}: {s['outcome']}" for s in shards if s["outcome"] not in _DONE]
    failed += [f"shard {i}: missing" for i in missing]
    first = runs[0].meta
    topology = Topology.from_json(first.get("topology"))
    members = {
        sid: g for run in runs for sid, g in Topology.from_json(run.meta.get("topology")).groups.items()
    }
    rd = RunDir.create(out, f"{first.get('scenario', 'scenario')}-merged-{count}-shards", real_utcnow())
    with rd.open_event_sink() as sink:
        for *_, event in events:
            sink.write(event)
    outcomes = {str(r.meta.get("outcome")) for r in runs}
    errors = [f"shard {_shard(r)['index']}: {r.meta['error']}" for r in runs if r.meta.get("error")]
    walls = [float(r.meta["wall_time_s"]) for r in runs if isinstance(r.meta.get("wall_time_s"), int | float)]
    sims = [float(r.meta["duration_s"]) for r in runs if isinstance(r.meta.get("duration_s"), int | float)]
    rd.write_meta(
        {
            **{
                k: first.get(k)
                for k in ("scenario", "description", "expected_outcome", "expect", "seed", "file")
            },
            "started_utc": first.get("started_utc"),
            "duration_s": max(sims, default=0.0),
            "scenario_duration_s": first.get("scenario_duration_s"),
            "wall_time_s": max(walls, default=0.0),
            "evsim_version": first.get("evsim_version"),
            "outcome": (
                (outcomes.pop() if len(outcomes) == 1 else "completed")
                if not failed
                else "incomplete (" + "; ".join(failed) + ")"
            ),
            "error": "; ".join(errors) or None,
            "clock": first.get("clock"),
            "network": first.get("network"),
            "stations_total": sum(int(r.meta.get("stations_total", 0)) for r in runs),
            "topology": attrs.evolve(topology, groups=members).as_json(),
            "ocpp_messages": _union(runs, "ocpp_messages"),
            "ocpp_messages_by_endpoint": _union(runs, "ocpp_messages_by_endpoint", depth=2),
            "tx_queues": _union(runs, "tx_queues"),
            "scenario_run": first["scenario_run"],
            "servers": REPLICATED,
            "shards": shards,
            "shards_missing": missing,
        }
    )
    return rd.path
