"""Who is who in a run: station groups, the CSMS each group connects to, and every node's role.

A :class:`Topology` says which group each station belongs to, which CSMS (or controller) each group
connects to, which CSMS shares its station records with a primary, and which host names which node; the
scenario runner writes it to ``meta.json`` (:meth:`Topology.as_json`) so reports can be rebuilt from a run
directory. :func:`node_roles` gives every node that emitted an event a role (``csms``, ``station``,
``control`` or ``other``): the topology decides for the nodes it names, the kinds a node emits for the
others. Stations the topology does not list are grouped by name (:func:`default_group`).
"""

from __future__ import annotations

import collections
import re
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from evsim.frozenmap import FrozenMap
from evsim.recorder import MEASUREMENT_NODE

__all__ = [
    "CONTROL_NODES",
    "CSMS_KINDS",
    "STATION_KINDS",
    "Topology",
    "default_group",
    "node_roles",
]


def _frozen_map(value: Mapping[str, str]) -> FrozenMap[str, str]:
    return value if isinstance(value, FrozenMap) else FrozenMap(value)


@attrs.frozen
class Topology:
    """Which group each station belongs to and which CSMS each group connects to.

    Attributes:
        groups: node name -> group name (stations; nodes not listed get :func:`default_group`).
        links: station group -> name of the CSMS its stations connect to.
        operators: CSMS -> the primary whose station records it shares (``secondary_of``); a CSMS not listed
            is its own. A transaction recorded by any endpoint of the station's operator counts as delivered.
    """

    groups: Mapping[str, str] = attrs.field(factory=FrozenMap, converter=_frozen_map)
    links: Mapping[str, str] = attrs.field(factory=FrozenMap, converter=_frozen_map)
    operators: Mapping[str, str] = attrs.field(factory=FrozenMap, converter=_frozen_map)
    hosts: Mapping[str, str] = attrs.field(factory=FrozenMap, converter=_frozen_map)
    """Host -> CSMS or controller name, for station events that name the endpoint they tried by its host."""

    def operator_of(self, csms: str) -> str:
        """The primary CSMS of ``csms`` (itself when it is no secondary)."""
        return self.operators.get(csms) or csms

    def group_of(self, node: str) -> str:
        """The group of a node.

        Args:
            node: a node name (station id, CSMS name...).

        Returns:
            Its group from :attr:`groups`, else :func:`default_group`.
        """
        return self.groups.get(node) or default_group(node)

    def members(self) -> dict[str, list[str]]:
        """The stations of each group.

        Returns:
            Group name -> its nodes, in the order given.
        """
        out: dict[str, list[str]] = {}
        for node, group in self.groups.items():
            out.setdefault(group, []).append(node)
        return out

    @classmethod
    def from_groups(
        cls, groups: Mapping[str, Iterable[str]], links: Mapping[str, str] | None = None
    ) -> Topology:
        """Build from group name -> station ids.

        Args:
            groups: each group's station ids.
            links: group -> CSMS name.

        Returns:
            The topology.
        """
        return cls(
            groups={node: group for group, nodes in groups.items() for node in nodes},
            links=dict(links or {}),
        )

    def as_json(self) -> dict[str, Any]:
        """The JSON form kept in ``meta.json``: ``{"stations": {group: [ids]}, "links": {group: csms}}``, and
        ``"operators": {secondary: primary}`` when there are secondaries, ``"hosts": {host: node}``."""
        out: dict[str, Any] = {"stations": self.members(), "links": dict(self.links)}
        if self.operators:
            out["operators"] = dict(self.operators)
        if self.hosts:
            out["hosts"] = dict(self.hosts)
        return out

    @classmethod
    def from_json(cls, obj: object) -> Topology:
        """Read :meth:`as_json`'s form back; anything else (e.g. None when ``meta.json`` has none) gives an
        empty topology.

        Args:
            obj: the ``topology`` value of ``meta.json``.

        Returns:
            The topology.
        """
        if not isinstance(obj, Mapping):
            return cls()
        stations = obj.get("stations")
        links = obj.get("links")
        operators = obj.get("operators")
        topo = cls.from_groups(
            {str(g): [str(n) for n in ids] for g, ids in stations.items()}
            if isinstance(stations, Mapping)
            else {},
            {str(g): str(c) for g, c in links.items()} if isinstance(links, Mapping) else {},
        )
        if isinstance(operators, Mapping):
            topo = attrs.evolve(topo, operators={str(k): str(v) for k, v in operators.items()})
        hosts = obj.get("hosts")
        if isinstance(hosts, Mapping):
            topo = attrs.evolve(topo, hosts={str(k): str(v) for k, v in hosts.items()})
        return topo


#: Kinds only a CSMS emits, and kinds only a station emits (``booted``, ``handshake_failed`` and
#: ``connection_lost`` come from both).
CSMS_KINDS = frozenset(
    {
        "listening",
        "accept_failed",
        "connection_opened",
        "tls_accepted",
        "station_connected",
        "station_disconnected",
        "replaced_connection",
        "auth_throttled",
        "upgrade_rejected",
        "boot_rejected",
        "tx_event",
        "tx_duplicate",
        "security_event_received",
    }
)
STATION_KINDS = frozenset(
    {
        "handshake_ok",
        "reconnect_wait",
        "boot_pending",
        "tx_started",
        "tx_ended",
        "authorized",
        "authorize_offline",
        "message_discarded",
    }
)
#: Nodes of the simulation itself (run start/end, timeline actions, the recorder's aggregated round trips), not
#: of the charging network.
CONTROL_NODES = frozenset({"runner", "timeline", MEASUREMENT_NODE})


def node_roles(events: Iterable[Mapping[str, Any]], topology: Topology | None = None) -> dict[str, str]:
    """The role of every node: ``csms``, ``station``, ``control`` or ``other`` (attackers...).

    The topology decides for the nodes it names (its stations, its groups' CSMS); the others are known by the
    kinds they emit (:data:`CSMS_KINDS`, :data:`STATION_KINDS`); :data:`CONTROL_NODES` are ``control``.

    Args:
        events: JSON event objects.
        topology: station groups and their CSMS.

    Returns:
        node -> role, for every node that emitted an event or that the topology names.
    """
    roles: dict[str, str] = {}
    emitted: dict[str, set[str]] = collections.defaultdict(set)
    for e in events:
        emitted[str(e["node"])].add(str(e["kind"]))
    for node, kinds in emitted.items():
        if node in CONTROL_NODES:
            roles[node] = "control"
        elif kinds & CSMS_KINDS:
            roles[node] = "csms"
        elif kinds & STATION_KINDS:
            roles[node] = "station"
        else:
            roles[node] = "other"
    if topology is not None:
        roles.update(dict.fromkeys(topology.groups, "station"))
        roles.update(dict.fromkeys(topology.links.values(), "csms"))
    return roles


def default_group(node: str) -> str:
    """The group of a node the topology does not list: its name without the trailing number.

    Args:
        node: e.g. ``ST-0042``.

    Returns:
        e.g. ``ST``; the name itself when nothing is left.
    """
    return re.sub(r"[-_.]*\d+$", "", node) or node
