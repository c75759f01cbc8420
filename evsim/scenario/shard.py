"""A scenario run as shards: which stations, timeline events and links shard ``I`` of ``N`` runs, and what
sharding refuses (``evsim run FILE --shard I/N``, ``--workers K``).

Theory of operation. Every station group keeps its fleet-wide identities; shard ``I`` runs the numbers
:meth:`evsim.shards.Shard.numbers` gives over the group's ``count`` (so the ids are exactly those of the
unsharded run). Every server node (CSMS, controllers, NTS, file servers, energy managers) is replicated: each
shard is a complete world serving its slice, on the same simulated time axis from 0. Node RNGs are seeded by
node name (:meth:`evsim.world.World.rng`) and fan-out offsets are drawn over the whole group
(:meth:`evsim.world.World.fleet_of`), so a station behaves the same in any shard.

A timeline event or ``[[links]]`` entry that names station ids runs only in the shard holding them (an entry
naming stations of two shards is refused); one aimed at a server, a group or ``*`` runs in every shard, a group
meaning the shard's members. :func:`shard_errors` refuses what would make a shard's stations behave differently
from the unsharded run because they share something whose outcome depends on the whole fleet. Pure: no I/O,
no trio.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import attrs

from evsim.errors import ConfigError
from evsim.nodes.csms_certs import SigningSettings
from evsim.scenario.model import Scenario
from evsim.shards import Shard
from evsim.world.actions import Action, AttackDowngrade, DegradeCa, Stop

__all__ = ["ShardPlan", "scenario_run_id", "shard_errors", "station_refs"]


@attrs.frozen
class ShardPlan:
    """What shard ``shard`` of a scenario runs.

    Attributes:
        shard: which shard.
        numbers: station group name -> the 1-based numbers of its stations this shard runs.
        ids: station group name -> their identities (as the unsharded run names them).
        members: every station id this shard runs.
    """

    shard: Shard
    numbers: dict[str, range]
    ids: dict[str, list[str]]
    members: frozenset[str] = attrs.field(init=False)

    @members.default
    def _members(self) -> frozenset[str]:
        return frozenset(sid for ids in self.ids.values() for sid in ids)

    @classmethod
    def of(cls, scenario: Scenario, shard: Shard) -> ShardPlan:
        numbers = {name: shard.numbers(group.count) for name, group in scenario.stations.items()}
        ids = {
            name: [scenario.stations[name].id_pattern.format(n=n) for n in numbers[name]] for name in numbers
        }
        return cls(shard, numbers, ids)

    def runs(self, refs: set[str]) -> bool:
        """Whether an entry naming the station ids ``refs`` (empty: servers, groups or ``*`` only) runs here."""
        return not refs or bool(refs & self.members)

    def as_json(self) -> dict[str, Any]:
        """The shard in ``meta.json``: index, count, and per group the numbers (first, last) and ids it ran."""
        return {
            "index": self.shard.index,
            "count": self.shard.count,
            "groups": {
                name: {
                    "numbers": [r.start, r.stop - 1] if len(r) else [],
                    "ids": self.ids[name],
                }
                for name, r in self.numbers.items()
            },
        }


def scenario_run_id(text: bytes, scenario: Scenario) -> dict[str, Any]:
    """What identifies one scenario run across its shards: the file's content hash, the seed, the duration."""
    sim = scenario.simulation
    return {
        "file_sha256": hashlib.sha256(text).hexdigest(),
        "scenario": sim.name,
        "seed": sim.seed,
        "duration_s": sim.duration,
    }


def _strings(value: object) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, tuple | list):
        for item in value:
            yield from _strings(item)


def station_refs(scenario: Scenario, values: Iterable[object]) -> set[str]:
    """The station ids among ``values`` (strings, or tuples of them): what makes an entry station-scoped."""
    every = set(scenario.station_ids())
    return {s for v in values for s in _strings(v) if s in every}


def _owner(scenario: Scenario, count: int) -> dict[str, int]:
    return {sid: i for i in range(count) for sid in ShardPlan.of(scenario, Shard(i, count)).members}


_UNSHARDED = "or run it unsharded (without --shard / --workers)"


def shard_errors(scenario: Scenario, count: int) -> list[ConfigError]:
    """Why ``scenario`` cannot run as ``count`` shards (empty: it can), in file order.

    Refused: what makes a station's outcome depend on the stations other shards run (a CPU model, a group's
    connect window, a CSMS signing limit set in the file, a degraded CA, an attack on a server replicated in
    every shard, a controller whose upstream fails, an entry naming stations of two shards), the real clock or
    loopback TCP (the shards share no time axis or ports), and more shards than stations.
    """
    sc, sim = scenario, scenario.simulation
    errors: list[ConfigError] = []

    def refuse(message: str, *, path: str, fix: str, value: object = None, line: int | None = None) -> None:
        errors.append(
            ConfigError(
                f"cannot run as shards: {message}", path=path, value=value, fix=fix, file=sc.source, line=line
            )
        )

    if sim.clock != "virtual":
        refuse(
            "on the real clock each shard has its own time axis",
            path="simulation.clock",
            value=sim.clock,
            fix=f'use clock = "virtual", {_UNSHARDED}',
        )
    if sim.network != "memory":
        refuse(
            "the shards would listen on the same loopback ports",
            path="simulation.network",
            value=sim.network,
            fix=f'use network = "memory", {_UNSHARDED}',
        )
    if count > sc.station_count():
        refuse(
            f"{count} shards of {sc.station_count()} stations would leave shards without a station",
            path="--shard",
            value=count,
            fix=f"use at most {sc.station_count()} shards",
        )
    if sc.cpu:
        refuse(
            "a CPU model makes nodes share cores: a server replicated per shard would serve its slice on a "
            "whole core, so every cost and queue would shrink",
            path="cpu",
            value=sorted(sc.cpu),
            fix=f"remove the cpu tables (the CPU model), {_UNSHARDED}",
        )
    for name, group in sc.stations.items():
        if group.connect_window > 0:
            refuse(
                "a connect window is shared by the whole group: each shard would let as many connect at once",
                path=f"stations.{name}.connect_window",
                value=group.connect_window,
                fix=f"remove connect_window, {_UNSHARDED}",
            )
    defaults = SigningSettings()
    for name, csms in sc.csms.items():
        s = csms.signing
        if (s.max_concurrent, s.max_queued) != (defaults.max_concurrent, defaults.max_queued):
            refuse(
                "a signing limit is shared by every station of the CSMS: each shard's replica would sign its "
                "slice with the whole limit",
                path=f"csms.{name}.signing",
                value={"max_concurrent": s.max_concurrent, "max_queued": s.max_queued},
                fix=f"remove max_concurrent / max_queued, {_UNSHARDED}",
            )
    servers = {*sc.csms, *sc.controllers, "*"}

    def hits_upstream(action: Action) -> bool:
        """A stop of, or a network fault on, a CSMS or controller while controllers serve stations."""
        return (isinstance(action, Stop) or action.needs_faults()) and bool(
            servers & set(_strings(tuple(action.fields().values())))
        )

    upstream_can_fail = bool(sc.controllers)
    owner = _owner(sc, count) if count <= sc.station_count() else {}
    for i, ev in enumerate(sc.timeline):
        action: Action = ev.action
        if isinstance(action, DegradeCa | AttackDowngrade):
            why = (
                "the CA's delay and failures are drawn in the order CSRs of the whole fleet arrive"
                if isinstance(action, DegradeCa)
                else "an attack on a server would be made once per shard"
            )
            refuse(
                why,
                path=f"timeline[{i}].action",
                value=action.name,
                fix=f"remove it, {_UNSHARDED}",
                line=ev.line,
            )
        elif upstream_can_fail and hits_upstream(action):
            refuse(
                "a controller draws each station's upstream retry jitter from its own RNG in arrival order, so "
                "after an upstream failure a station's retries depend on the other shards' stations",
                path=f"timeline[{i}].action",
                value=action.name,
                fix=f"remove the event, {_UNSHARDED}",
                line=ev.line,
            )
        shards = {owner[s] for s in station_refs(sc, action.fields().values()) if s in owner}
        if len(shards) > 1:
            refuse(
                "the event names stations that different shards run",
                path=f"timeline[{i}]",
                value=action.name,
                fix=f"name stations of one shard, or a group, {_UNSHARDED}",
                line=ev.line,
            )
    for i, link in enumerate(sc.links):
        shards = {owner[s] for s in station_refs(sc, link.between) if s in owner}
        if len(shards) > 1:
            refuse(
                "the link is between stations that different shards run",
                path=f"links[{i}].between",
                value=list(link.between),
                fix=f"name a station and a server, or groups, {_UNSHARDED}",
                line=link.line,
            )
        elif (
            upstream_can_fail
            and (link.reset is not None or link.stall is not None)
            and servers & set(link.between)
        ):
            refuse(
                "a link reset or stall while controllers serve the stations: their upstream retries would "
                "depend on the other shards' stations",
                path=f"links[{i}]",
                fix=f"remove reset / stall, {_UNSHARDED}",
                line=link.line,
            )
    return sorted(errors, key=lambda e: e.line or 0)
