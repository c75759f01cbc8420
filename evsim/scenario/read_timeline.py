"""Read a scenario's ``[[links]]`` and ``[[timeline]]`` arrays of tables.

Theory of operation. Both arrays name nodes, so they are read last, once every CSMS, controller, station
group and station id is known (:class:`~evsim.scenario.reader.NodeNames`).

A **link** joins two selectors (a node, a group, a station id, or ``"*"``) and carries a
:class:`~evsim.net.virtual.LinkPolicy`-like set of knobs: latency, jitter, bandwidth, periodic stalls and
resets. A byte stream cannot lose bytes, so loss is modelled as a stall or a reset; a stall must be shorter
than its period, or the link would never move.

A **timeline entry** is ``at`` (time from the start, not after the end of the run), ``action`` and the
action's parameters. The actions are the typed classes of :mod:`evsim.world.actions`, registered by name;
each reads its own parameters through an :class:`ActionReader`, which gives it the entry's typed getters
and the scenario's names (targets of the right kind, TLS-capable CSMS and stations, roots, pinned keys)
with every error located in the file. An entry is read as a table whose allowed keys are its action's
parameters, and a key that belongs to another action is reported as "not a parameter of" this one rather
than as unknown. Entries are returned sorted by time; entries at the same time keep their file order.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import attrs

from evsim.errors import ConfigError
from evsim.scenario.model import (
    LinkSpec,
    PinSpec,
    PkiSpec,
    ResetSpec,
    SimulationSpec,
    StallSpec,
    TimelineEvent,
)
from evsim.scenario.read_tls import TlsReader
from evsim.scenario.reader import ScenarioTable
from evsim.scenario.units import (
    format_duration,
    parse_bandwidth,
)
from evsim.scenario.vocabulary import (
    ACTIONS,
    LINK_KEYS,
    MAX_STATION_ENDPOINTS,
    RESET_KEYS,
    STALL_KEYS,
)
from evsim.toml_table import FieldPath, choices_fix, type_name
from evsim.world.actions import ACTIONS as ACTION_CLASSES
from evsim.world.actions import LINK_POLICY_KEYS, LinkKnobs


class TimelineReader(TlsReader):
    """The section reader of links and timeline entries (see the module doc)."""

    # ------------------------------------------------------------ [[links]]

    def links(self, root: ScenarioTable) -> tuple[LinkSpec, ...]:
        """Every ``[[links]]`` entry: two selectors (``between``) and the link policy, with its line."""
        out: list[LinkSpec] = []
        for i, value in enumerate(self.array_of_tables(root, "links")):
            t = ScenarioTable(self.ctx, ("links", i), value, LINK_KEYS, what="[[links]]")
            t.require("between", 'add between = ["fleet", "main"] (two node or group names, or "*")')
            spec, _given = self.link_policy(t, self.between(t))
            out.append(attrs.evolve(spec, line=self.ctx.line(("links", i))))
        return tuple(out)

    def array_of_tables(self, root: ScenarioTable, key: str) -> list[object]:
        """The entries of ``[[key]]``, each checked to be a table."""
        value = root.data.get(key, [])
        if not isinstance(value, list):
            raise root.error(
                key,
                f"expected an array of tables, got {type_name(value)}",
                value=value,
                fix=f"write each entry as a [[{key}]] table",
            )
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise self.ctx.error(
                    (key, i),
                    f"expected a table, got {type_name(item)}",
                    value=item,
                    fix=f"write each entry as a [[{key}]] table",
                )
        return value

    def between(self, t: ScenarioTable) -> tuple[str, str]:
        """The two selectors of a link or a partition: each a node, group, station id or ``"*"``; a link
        joins two different selectors (``["*", "*"]`` is every link).
        """
        value = t.data["between"]
        if not isinstance(value, list) or len(value) != 2:
            raise t.error(
                "between",
                "expected two selectors",
                value=value,
                fix='write between = ["fleet", "main"] (node, group or station names, or "*")',
            )
        names: list[str] = []
        for i, sel in enumerate(value):
            if not isinstance(sel, str):
                raise self.ctx.error(
                    t.at("between", i),
                    f"expected a name, got {type_name(sel)}",
                    value=sel,
                    fix='quote the name, e.g. "fleet"',
                )
            if sel != "*" and self.nodes.kind(sel) is None:
                raise self.ctx.error(
                    t.at("between", i),
                    f"undefined node or group {sel!r}",
                    value=sel,
                    fix=choices_fix(
                        sel,
                        [*self.nodes.names(("csms", "controller", "group")), "*"],
                        what='use a CSMS, a controller, a station group, a station id or "*":'
                        if self.nodes.controllers
                        else 'use a CSMS, a station group, a station id or "*":',
                    ),
                )
            names.append(sel)
        if names[0] == names[1] and names[0] != "*":
            raise t.error(
                "between",
                "a link joins two different selectors",
                value=names[0],
                fix='name the two ends, e.g. ["fleet", "main"]',
            )
        return (names[0], names[1])

    def link_policy(self, t: ScenarioTable, between: tuple[str, str]) -> tuple[LinkSpec, list[str]]:
        """The link policy in ``t`` (durations in s, bandwidth in bit/s) and the policy keys it gives."""
        latency = t.duration("latency", 0.0)
        jitter = t.duration("jitter", 0.0)
        bandwidth: float | None = None
        if t.has("bandwidth"):
            try:
                bandwidth = parse_bandwidth(t.data["bandwidth"])
            except ConfigError as exc:
                raise self.ctx.relocate(exc, t.at("bandwidth")) from None
        stall: StallSpec | None = None
        s = t.sub_table("stall", STALL_KEYS, '{ every = "1h", for = "30s" }')
        if s is not None:
            s.require("every", 'add every = "1h"')
            s.require("for", 'add for = "30s"')
            every = s.duration("every", 0.0, positive=True)
            length = s.duration("for", 0.0)
            if length >= every:
                raise s.error(
                    "for",
                    "a stall must be shorter than its period (the link would never move)",
                    value=s.data["for"],
                    fix=f"use for < every ({format_duration(every)})",
                )
            stall = StallSpec(every=every, duration=length)
        reset: ResetSpec | None = None
        r = t.sub_table("reset", RESET_KEYS, '{ every = "6h" }')
        if r is not None:
            r.require("every", 'add every = "6h"')
            reset = ResetSpec(every=r.duration("every", 0.0, positive=True))
        spec = LinkSpec(
            between=between, latency=latency, jitter=jitter, bandwidth=bandwidth, stall=stall, reset=reset
        )
        return spec, [key for key in LINK_POLICY_KEYS if t.has(key)]

    # ------------------------------------------------------------ [[timeline]]

    def timeline(self, root: ScenarioTable, sim: SimulationSpec, pki: PkiSpec) -> tuple[TimelineEvent, ...]:
        events: list[TimelineEvent] = []
        for i, value in enumerate(self.array_of_tables(root, "timeline")):
            events.append(self.event(i, value, sim, pki))
        return tuple(sorted(events, key=lambda e: e.at))

    def event(self, index: int, value: object, sim: SimulationSpec, pki: PkiSpec) -> TimelineEvent:
        """One ``[[timeline]]`` entry: its action from the registry, its time within the run, and its
        parameters, read by the action class itself through an :class:`ActionReader`. A parameter of another
        action is reported as not being one of this action's.
        """
        path: FieldPath = ("timeline", index)
        assert isinstance(value, dict)
        if "action" not in value:
            raise self.ctx.error(
                (*path, "action"),
                "missing required key 'action'",
                fix=choices_fix("", list(ACTIONS), what="add action = one of"),
            )
        action = value["action"]
        if not isinstance(action, str) or action not in ACTIONS:
            raise self.ctx.error(
                (*path, "action"),
                "unknown timeline action",
                value=action,
                fix=choices_fix(action, list(ACTIONS)),
            )
        params = ACTIONS[action]
        t = ScenarioTable(
            self.ctx,
            path,
            value,
            ("at", "action", *params),
            what=f"action {action!r}",
            unknown_hint=f"{action} takes: at, action, {', '.join(params)}",
            elsewhere={key for keys in ACTIONS.values() for key in keys},
        )
        t.require("at", 'add at = "30m" (time from the start)')
        at = t.duration("at", 0.0)
        if at > sim.duration:
            raise t.error(
                "at",
                f"the event is after the end of the run ({format_duration(sim.duration)})",
                value=t.data["at"],
                fix=f"use at <= {format_duration(sim.duration)} or lengthen simulation.duration",
            )
        line = self.ctx.line(path)
        return TimelineEvent(
            at=at, action=ACTION_CLASSES[action].read(ActionReader(self, t, pki, line)), line=line
        )

    def target(self, t: ScenarioTable, kinds: Collection[str], *, key: str = "target") -> str:
        """The node an entry names at ``key``, of one of ``kinds``; errors say what the action needs and offer
        the names of those kinds.
        """
        what = {
            "csms": "a CSMS",
            "controller": "a controller",
            "group": "a station group",
            "station": "a station id",
            "nts": "an NTS server",
            "energy_manager": "an energy manager",
            "file_server": "a file server",
        }
        if not self.nodes.nts:  # offer NTS servers as targets only where the scenario has some
            kinds = [k for k in kinds if k != "nts"]
        if not self.nodes.controllers:  # offer controllers as targets only where the scenario has some
            kinds = [k for k in kinds if k != "controller"]
        if not self.nodes.file_servers:
            kinds = [k for k in kinds if k != "file_server"]
        wanted = " or ".join(what[k] for k in kinds)
        t.require(key, f'add {key} = "<name>" ({wanted})')
        value = t.data[key]
        if not isinstance(value, str):
            raise t.error(key, f"expected a name, got {type_name(value)}", value=value, fix="quote the name")
        kind = self.nodes.kind(value)
        if kind is None:
            raise t.error(
                key,
                f"undefined node {value!r}",
                value=value,
                fix=choices_fix(value, self.nodes.names(kinds), what=f"use {wanted}, e.g."),
            )
        if kind not in kinds:
            raise t.error(
                key,
                f"{value!r} is {what[kind]}; {t.data['action']} needs {wanted}",
                value=value,
                fix=choices_fix(value, self.nodes.names(kinds), what="use one of"),
            )
        return value

    def tls_csms(self, t: ScenarioTable, key: str = "target") -> str:
        """A target CSMS that speaks TLS (actions on its certificate or key need one)."""
        name = self.target(t, ("csms",), key=key)
        if self.nodes.csms[name].security_profile == 1:
            raise t.error(
                key,
                f"CSMS {name!r} uses security profile 1 (no TLS, no certificate)",
                value=name,
                fix="target a CSMS with security_profile 2 or 3",
            )
        return name

    def tls_stations(self, t: ScenarioTable) -> str:
        """Target stations (a group or a station id) that speak TLS."""
        name = self.target(t, ("group", "station"))
        if self.nodes.group_of(name).security_profile == 1:
            raise t.error(
                "target",
                f"{name!r} uses security profile 1 (no TLS)",
                value=name,
                fix="target stations with security_profile 2 or 3",
            )
        return name

    def root_ref(self, t: ScenarioTable, pki: PkiSpec, default: str | None) -> str:
        if default is None:
            t.require("root", 'add root = "<name>" (a root from [pki.roots])')
        return t.reference("root", default or "", pki.roots, "root", "[pki.roots.<name>]")

    def check_free_slot(self, t: ScenarioTable, target: str, to: str) -> None:
        """Refuse moving stations to ``to`` when their four network-profile slots hold other endpoints."""
        group = self.nodes.group_of(target)
        if len({e.name for e in group.endpoints} | {to}) > MAX_STATION_ENDPOINTS:
            raise t.error(
                "csms",
                f"the stations of {group.name!r} have no free network-profile slot "
                f"(slots 0..{MAX_STATION_ENDPOINTS - 1} hold their endpoints)",
                value=to,
                fix="give the group fewer endpoints, or move it to one of its endpoints",
            )


class ActionReader:
    """A ``[[timeline]]`` entry as a timeline action reads itself (:class:`evsim.world.actions.Reader`): the
    entry's typed getters and the scenario's names, every error located in the file."""

    def __init__(self, builder: TimelineReader, t: ScenarioTable, pki: PkiSpec, line: int | None) -> None:
        self._b = builder
        self._t = t
        self._pki = pki
        self._line = line

    @property
    def line(self) -> int | None:
        return self._line

    @property
    def default_validity(self) -> float:
        return self._pki.validity

    def has(self, key: str) -> bool:
        return self._t.has(key)

    def require(self, key: str, fix: str) -> None:
        self._t.require(key, fix)

    def error(self, key: str, message: str, *, value: object = None, fix: str = "") -> ConfigError:
        return self._t.error(key, message, value=value, fix=fix)

    def boolean(self, key: str, default: bool) -> bool:
        return self._t.boolean(key, default)

    def integer(self, key: str, default: int, lo: int, hi: int) -> int:
        return self._t.integer(key, default, lo, hi)

    def duration(
        self, key: str, default: float, *, positive: bool = False, allow_negative: bool = False
    ) -> float:
        return self._t.duration(key, default, positive=positive, allow_negative=allow_negative)

    def number(self, key: str, default: float, lo: float, hi: float) -> float:
        return self._t.number(key, default, minimum=lo, maximum=hi)

    def choice(self, key: str, allowed: Sequence[str], default: str) -> str:
        return self._t.enum(key, tuple(allowed), default)

    def string_list(
        self, key: str, default: tuple[str, ...], *, allowed: Collection[str], example: str
    ) -> tuple[str, ...]:
        return self._t.string_list(key, default, allowed=tuple(allowed), example=example)

    def target(self, kinds: Collection[str], *, key: str = "target") -> str:
        return self._b.target(self._t, kinds, key=key)

    def tls_csms(self, key: str = "target") -> str:
        return self._b.tls_csms(self._t, key)

    def tls_stations(self) -> str:
        return self._b.tls_stations(self._t)

    def between(self) -> tuple[str, str]:
        self._t.require("between", 'add between = ["fleet", "main"]')
        return self._b.between(self._t)

    def link_knobs(self) -> LinkKnobs:
        """The link-policy keys of the entry; None for each it leaves as it is."""
        spec, given = self._b.link_policy(self._t, ("*", "*"))
        return LinkKnobs(
            latency=spec.latency if "latency" in given else None,
            jitter=spec.jitter if "jitter" in given else None,
            bandwidth=spec.bandwidth,
            stall=None if spec.stall is None else (spec.stall.every, spec.stall.duration),
            reset=None if spec.reset is None else spec.reset.every,
        )

    def root(self, default: str | None) -> str:
        return self._b.root_ref(self._t, self._pki, default)

    def intermediate(self, key: str) -> tuple[str, str]:
        name = self._t.reference(
            key, "", self._pki.intermediates, "intermediate CA", "[pki.intermediates.<name>]"
        )
        return name, self._pki.top_root(name)

    def key_reference(self) -> PinSpec:
        return self._b.key_reference(self._t, self._pki, self._b.nodes.csms, action="release_pin")

    def csms_of(self, stations: str) -> str:
        return self._b.nodes.group_of(stations).csms

    def check_free_slot(self, stations: str, to: str) -> None:
        self._b.check_free_slot(self._t, stations, to)

    def check_pinned(self, stations: str, key: PinSpec) -> None:
        self._b.check_pinned(self._t, stations, key)

    def file_reference(self, key: str, kind: str) -> str:
        nodes = self._b.nodes
        defined, how = (
            (nodes.firmware, "[firmware.<name>]")
            if kind == "firmware"
            else (nodes.file_services, "[file_services.<name>]")
        )
        self._t.require(key, f'add {key} = "<name>" (a {how})')
        return self._t.reference(key, "", defined, kind.replace("_", " "), how)

    def firmware_version(self, name: str) -> str:
        return self._b.nodes.firmware[name]
