"""The ``cpu`` tables of a scenario: the CPU model in virtual time (:mod:`evsim.cpu`).

``[simulation] cpu = {...}`` gives every CSMS, controller and station group a CPU model; a ``cpu`` table of
a node or group replaces it for that one. Without any, no model runs and operations take no virtual time
(the default, so scenarios that do not ask keep their event logs). A station group's stations share one
CPU (one ``evsim stations`` process holds them all) unless its table says ``shared = false``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from evsim.cpu import CPU_KEYS, CpuSpec
from evsim.frozenmap import FrozenMap
from evsim.scenario.reader import LoadContext, ScenarioTable

__all__ = ["read_cpu"]

NODE_SECTIONS = ("csms", "controllers", "stations")
"""The sections whose tables may hold a ``cpu`` table."""


def read_cpu(ctx: LoadContext, doc: Mapping[str, object]) -> FrozenMap[str, CpuSpec]:
    """Node or group name -> its CPU model, for every node that has one (the sections are already checked).

    Raises:
        ConfigError: a bad ``cpu`` table, located in the file, or one in a run on the real clock (real CPU is
            spent there: the model would do nothing).
    """
    base = None if ctx.source.startswith("<") else Path(ctx.source).resolve().parent

    def spec(path: tuple[str, ...], data: object) -> CpuSpec:
        if real_clock:
            raise ctx.error(
                path,
                "the CPU model runs in virtual time only (on the real clock the real CPU is spent)",
                fix='remove this cpu table, or use clock = "virtual"',
            )
        what = 'a cpu table, e.g. cpu = { cores = 1, profile = "reference" }'
        return CpuSpec.from_toml(ScenarioTable(ctx, path, data, CPU_KEYS, what=what), base=base)

    sim = doc.get("simulation")
    real_clock = isinstance(sim, Mapping) and sim.get("clock") == "real"
    default = spec(("simulation", "cpu"), sim["cpu"]) if isinstance(sim, Mapping) and "cpu" in sim else None
    plan: dict[str, CpuSpec] = {}
    for section in NODE_SECTIONS:
        tables = doc.get(section, {})
        if not isinstance(tables, Mapping):
            continue
        for name, table in tables.items():
            if isinstance(table, Mapping) and "cpu" in table:
                plan[str(name)] = spec((section, str(name), "cpu"), table["cpu"])
            elif default is not None:
                plan[str(name)] = default
    return FrozenMap(plan)
