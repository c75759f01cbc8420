"""Summary tables and the canonical event log, computed from a run's events alone.

Everything here is a pure function of the event list (the JSON objects of ``events.jsonl``, or
:class:`~evsim.recorder.Event` objects) and of a :class:`Topology` saying which station belongs to
which group and which CSMS each group connects to, so ``evsim report`` can rebuild the summary from a run
directory without re-running anything.

Every node has a role (:func:`node_roles`), and the two points of view are kept apart:

* **station** nodes (``handshake_ok``, ``handshake_failed``, ``connection_lost``, ``booted``,
  ``reconnect_wait``, ``tx_started``, ``tx_ended``, ``message_discarded``...), summed per station group;
* **csms** nodes (``listening``, ``station_connected``, ``booted``, ``tx_event``, ``tx_duplicate``,
  ``security_event_received``, ``upgrade_rejected``, ``handshake_failed``...), summed per link: the group of
  the ``station`` the CSMS names → the CSMS node that saw it (an impostor CSMS gets its own link);
* **control** nodes (``runner``, ``timeline``) and **other** nodes (attackers: ``attack_result``,
  ``mitm_intercepted``) have tables of their own.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeAlias

import attrs
import orjson

from evsim.frozenmap import FrozenMap
from evsim.recorder import Event
from evsim.report import table

EventLike: TypeAlias = Event | Mapping[str, Any]

#: Fields of an event object that are not its data.
_ENVELOPE = ("t", "node", "seq", "kind")

#: Station-side event kinds counted as failures, and CSMS-side ones.
_STATION_FAILURES = ("handshake_failed", "connection_lost", "message_discarded")
_SERVER_FAILURES = (
    "handshake_failed",
    "upgrade_rejected",
    "boot_rejected",
    "connection_lost",
    "accept_failed",
)


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
        """Read :meth:`as_json`'s form back; anything else (e.g. None for an old run) gives an empty topology.

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
#: Nodes of the simulation itself (run start/end, timeline actions), not of the charging network.
CONTROL_NODES = frozenset({"runner", "timeline"})


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


@attrs.frozen
class Table:
    """One summary table.

    Attributes:
        title: the heading.
        headers: column names.
        rows: the cells.
        note: a line printed under the table (what the columns mean), or "".
    """

    title: str
    headers: tuple[str, ...]
    rows: tuple[tuple[object, ...], ...]
    note: str = ""

    def render(self) -> str:
        """Plain text (:func:`evsim.report.table`), or ``(none)`` under the title when there are no rows."""
        text = table(self.headers, self.rows, title=self.title) if self.rows else f"{self.title}\n(none)"
        return f"{text}\n{self.note}" if self.note and self.rows else text


@attrs.frozen
class Summary:
    """The summary of a run: a sequence of tables.

    Attributes:
        tables: in display order.
    """

    tables: tuple[Table, ...]

    def table(self, title_prefix: str) -> Table:
        """The first table whose title starts with ``title_prefix``.

        Args:
            title_prefix: e.g. ``"Links"``.

        Returns:
            The table.

        Raises:
            KeyError: none does.
        """
        for t in self.tables:
            if t.title.startswith(title_prefix):
                return t
        raise KeyError(title_prefix)

    def render(self, header: str = "") -> str:
        """All tables as plain text, separated by blank lines.

        Args:
            header: a first line (scenario, seed, outcome...), or "".

        Returns:
            The text, ending without a newline.
        """
        parts = ([header] if header else []) + [t.render() for t in self.tables]
        return "\n\n".join(parts)


# ------------------------------------------------------------------------------------------------ analysis


@attrs.define
class _Tx:
    """One transaction: what its station said, and which link's CSMS recorded its Started, its Ended and its
    last event (a transaction may start on the primary and end on the secondary)."""

    station_started: bool = False
    station_ended: bool = False
    started_at: str | None = None
    ended_at: str | None = None
    last_at: str | None = None

    @property
    def csms_started(self) -> bool:
        return self.started_at is not None

    @property
    def csms_ended(self) -> bool:
        return self.ended_at is not None


@attrs.define
class _GroupTally:
    stations: set[str] = attrs.field(factory=set)
    online: set[str] = attrs.field(factory=set)
    tls_ok: int = 0
    tls_resumed: int = 0
    tls_failed: int = 0
    other_failures: int = 0
    boots: int = 0
    tx_started: int = 0
    tx_ended: int = 0
    discarded: int = 0


@attrs.define
class _LinkTally:
    sessions: int = 0
    boots: int = 0
    boot_rejected: int = 0
    upgrade_rejected: int = 0
    duplicates: int = 0
    offline_events: int = 0
    security_events: int = 0


def summarize(
    events: Iterable[EventLike],
    topology: Topology | None = None,
    *,
    messages: Mapping[str, Mapping[str, int]] | None = None,
    endpoint_messages: Mapping[str, Mapping[str, Mapping[str, int]]] | None = None,
    tx_queues: Mapping[str, Mapping[str, int]] | None = None,
) -> Summary:
    """Compute the summary tables of a run.

    Args:
        events: the run's events (JSON objects as in ``events.jsonl``, or :class:`Event`), any order.
        topology: station groups and their CSMS; None groups stations by :func:`default_group` and gives
            each the CSMS whose events name it most.
        messages: station id -> OCPP action -> CALLs the CSMS received from it (``StationRecord.messages``,
            summed over the endpoints sharing the station's records): the "OCPP messages" table of run
            directories without ``endpoint_messages``, on each station's own link.
        endpoint_messages: CSMS node -> station id -> OCPP action -> CALLs that endpoint received
            (``Csms.received``): the complete "OCPP messages" table, on the link that received each call.
            With neither, the counts of BootNotification, TransactionEvent and SecurityEventNotification are
            derived from the events (the only ones that have events), on the link of the CSMS that emitted them.
        tx_queues: station id -> its offline queue's statistics (``meta.json``'s ``tx_queues``), or None.

    Returns:
        Tables: station groups, links, TLS negotiated, failures by reason, OCPP messages by action, security
        events, attacks, timeline; then, for runs with an outage, a controller or queue statistics,
        recovery after outages, connections per endpoint and the offline queue (:mod:`evsim.metrics.failover`).
    """
    topo = topology or Topology()
    # (time, node, node sequence): within one node, seq is the true order (the online state machine needs it)
    evs = sorted(
        (as_dict(e) for e in events), key=lambda e: (round(float(e["t"]), 6), e["node"], e.get("seq", 0))
    )
    roles = node_roles(evs, topo)
    a = _Analysis(topo)
    for group, nodes in topo.members().items():
        a.groups[group].stations.update(nodes)
    for group, server in topo.links.items():
        a.links.setdefault(f"{group} -> {server}", _LinkTally())  # declared links are listed even when silent
    served: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for e in evs:
        if roles[e["node"]] == "csms" and "station" in e:
            served[str(e["station"])][e["node"]] += 1
    a.seen_server = {station: c.most_common(1)[0][0] for station, c in served.items()}
    for e in evs:
        role = roles[e["node"]]
        if role == "csms":
            a.server_event(e)
        elif role == "station":
            a.station_event(e)
        elif role == "control":
            if e["node"] == "timeline":
                a.timeline.append(e)
        elif e["kind"] != "service_attempt":  # a controller's upstream attempts, under its host name
            a.other_event(e)
    return Summary(
        (
            _groups_table(a.groups),
            _links_table(a.links, a.tx_counts()),
            _tls_table(a.tls),
            _sessions_table(a.sessions),
            _failures_table(a.failures),
            _messages_table(messages, endpoint_messages, a.link_of, topo.group_of, a.derived_messages),
            _security_table(a.security),
            _attacks_table(a.attacks),
            _timeline_table(a.timeline),
            *_failover_tables(evs, roles, topo, tx_queues),
        )
    )


class _Analysis:
    """Running tallies of :func:`summarize` (one pass over the sorted events)."""

    def __init__(self, topology: Topology) -> None:
        self.topo = topology
        self.seen_server: dict[str, str] = {}
        self.groups: dict[str, _GroupTally] = collections.defaultdict(_GroupTally)
        self.links: dict[str, _LinkTally] = collections.defaultdict(_LinkTally)
        self.txs: dict[tuple[str, str], _Tx] = collections.defaultdict(_Tx)
        self.tls: collections.Counter[tuple[str, str, str, str, bool]] = collections.Counter()
        self.failures: collections.Counter[tuple[str, str, str, str]] = collections.Counter()
        self.security: collections.Counter[tuple[str, str, str]] = collections.Counter()
        self.derived_messages: collections.Counter[tuple[str, str]] = collections.Counter()
        self.sessions: collections.Counter[tuple[str, str, str, str, str]] = collections.Counter()
        self.attacks: collections.Counter[tuple[str, str, str]] = collections.Counter()
        self.timeline: list[dict[str, Any]] = []

    def link_of(self, station: str) -> str:
        """The station's own link: its group's CSMS in the topology, else the CSMS that named it most."""
        group = self.topo.group_of(station)
        server = self.topo.links.get(group) or self.seen_server.get(station, "?")
        return f"{group} -> {server}"

    def home_operator(self, station: str) -> str:
        """The primary CSMS of the station's own link."""
        group = self.topo.group_of(station)
        return self.topo.operator_of(self.topo.links.get(group) or self.seen_server.get(station, "?"))

    def station_event(self, e: Mapping[str, Any]) -> None:
        node, kind = str(e["node"]), e["kind"]
        group = self.topo.group_of(node)
        g = self.groups[group]
        g.stations.add(node)
        if kind == "handshake_ok":
            g.tls_ok += 1
            g.tls_resumed += bool(e.get("resumed"))
            key = (
                group,
                str(e.get("version", "")),
                str(e.get("suite", "")),
                str(e.get("group", "")),
                bool(e.get("resumed")),
            )
            self.tls[key] += 1
        elif kind == "handshake_failed":
            g.tls_failed += 1
        elif kind == "connection_lost":
            g.other_failures += 1
        elif kind == "booted":
            g.boots += 1
            g.online.add(node)
        elif kind == "reconnect_wait":
            g.online.discard(node)
        elif kind == "tx_started":
            g.tx_started += 1
            self.txs[(node, str(e.get("tx")))].station_started = True
        elif kind == "tx_ended":
            g.tx_ended += 1
            self.txs[(node, str(e.get("tx")))].station_ended = True
        elif kind == "message_discarded":
            g.discarded += 1
        if kind in _STATION_FAILURES:
            reason = str(e.get("reason", ""))
            if kind == "message_discarded":
                reason = f"{e.get('action', '?')}: {reason}"
            self.failures[(group, "station", kind, reason)] += 1

    def server_event(self, e: Mapping[str, Any]) -> None:
        node, kind = str(e["node"]), e["kind"]
        station = e.get("station")
        if station is None:
            where, link = node, None
        else:
            where = f"{self.topo.group_of(str(station))} -> {node}"
            link = self.links[where]
        if link is not None:
            if kind == "station_connected":
                link.sessions += 1
                session = (
                    where,
                    str(e.get("subprotocol", "")),
                    str(e.get("tls_version", "")),
                    str(e.get("suite", "")),
                    "yes" if e.get("compressed") else "no",
                )
                self.sessions[session] += 1
            elif kind == "booted":
                link.boots += 1
                self.derived_messages[(where, "BootNotification")] += 1
            elif kind == "boot_rejected":
                link.boot_rejected += 1
                self.derived_messages[(where, "BootNotification")] += 1
            elif kind == "upgrade_rejected":
                link.upgrade_rejected += 1
            elif kind == "tx_event":
                link.offline_events += bool(e.get("offline"))
                self.derived_messages[(where, "TransactionEvent")] += 1
                # only the station's own CSMS (or a secondary sharing its records) counts for its
                # transactions, on the link of the endpoint that recorded each event
                if self.home_operator(str(station)) == self.topo.operator_of(node):
                    tx = self.txs[(str(station), str(e.get("tx")))]
                    tx.last_at = where
                    if e.get("type") == "Started" and tx.started_at is None:
                        tx.started_at = where
                    elif e.get("type") == "Ended" and tx.ended_at is None:
                        tx.ended_at = where
            elif kind == "tx_duplicate":
                link.duplicates += 1
                self.derived_messages[(where, "TransactionEvent")] += 1
                if self.home_operator(str(station)) == self.topo.operator_of(node):
                    self.txs[(str(station), str(e.get("tx")))].last_at = where
            elif kind == "security_event_received":
                link.security_events += 1
                self.security[(where, "received by CSMS", str(e.get("type", "")))] += 1
                self.derived_messages[(where, "SecurityEventNotification")] += 1
        if kind in _SERVER_FAILURES:
            reason = str(e.get("reason", ""))
            if kind == "upgrade_rejected":
                reason = f"HTTP {e.get('status', '?')}: {reason}"
            self.failures[(where, "csms", kind, reason)] += 1
            if e.get("security_event"):
                self.security[(where, "raised by CSMS", str(e["security_event"]))] += 1

    def other_event(self, e: Mapping[str, Any]) -> None:
        kind = str(e["kind"])
        if kind == "attack_result":
            detail = str(e.get("reason") or e.get("version") or "")
            self.attacks[(str(e["node"]), str(e.get("outcome", "")), detail)] += 1
        else:
            detail = str(e.get("version") or e.get("reason") or "")
            self.attacks[(str(e["node"]), kind, detail)] += 1

    def tx_counts(self) -> dict[str, collections.Counter[str]]:
        """Per link: transactions started, ended at the CSMS, open (still charging) and lost.

        Started counts on the link whose CSMS recorded the Started event, ended on the one that recorded the
        Ended event; a transaction no endpoint of the station's operator saw start, and one still open or
        lost, counts on the link of its last recorded event (the station's own link when there is none).
        """
        out: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        for (station, _), tx in self.txs.items():
            last = tx.last_at or self.link_of(station)
            is_open = not tx.csms_ended and tx.station_started and not tx.station_ended
            if tx.started_at is not None:
                out[tx.started_at]["started"] += 1
            elif tx.station_started:
                out[last]["started"] += 1
            if tx.ended_at is not None:
                out[tx.ended_at]["ended"] += 1
            out[last]["open"] += is_open
            out[last]["lost"] += not tx.csms_ended and not is_open and (tx.station_started or tx.csms_started)
        return out


def _failover_tables(
    evs: Sequence[Mapping[str, Any]],
    roles: Mapping[str, str],
    topo: Topology,
    tx_queues: Mapping[str, Mapping[str, int]] | None,
) -> tuple[Table, ...]:
    """Recovery after outages, connections per endpoint, the offline queue (:mod:`evsim.metrics.failover`);
    only for runs with an outage on the timeline, a controller, or queue statistics."""
    from evsim.metrics import failover

    recs = failover.recoveries(evs, roles)
    has_controllers = any(e["kind"] == "upstream_connected" for e in evs)
    if not recs and not has_controllers and tx_queues is None:
        return ()
    out: list[Table] = []
    if recs:
        out.append(
            Table(
                "Recovery after outages (stations that lost their link, station side)",
                (
                    "t (s)",
                    "action",
                    "target",
                    "online",
                    "lost link",
                    "50 % back",
                    "95 % back",
                    "100 % back",
                    "back to",
                ),
                tuple(failover.recovery_rows(recs)),
                note=f"lost link: online before and disconnected within {failover.LOSS_WINDOW:g} s; "
                "x % back: seconds from the outage until that share had booted again; back to: the CSMS "
                "that recorded the BootNotification",
            )
        )
    counts = failover.endpoint_counts(evs, roles, topo.hosts)
    out.append(
        Table(
            "Connections per endpoint (CSMS and controllers)",
            (
                "endpoint",
                "accepted",
                "tls refused",
                "refused",
                "peak / s",
                "station: tls ok",
                "station: failed",
            ),
            tuple(
                (
                    c.endpoint,
                    c.accepted,
                    c.tls_failed,
                    c.refused,
                    c.peak_per_s,
                    c.station_tls_ok,
                    c.station_failed,
                )
                for c in counts
            ),
            note="server side: accepted: WebSocket sessions (controller -> endpoint: upstream links opened); "
            "refused: HTTP upgrades refused (controller -> upstream: upstream connects given up); peak / s: most "
            "accepted in one second. Station side (stations with several endpoints): handshakes completed, and "
            "attempts refused or failed plus links lost, per endpoint tried",
        )
    )
    group_of = {node: topo.group_of(node) for node, role in roles.items() if role == "station"}
    out.append(
        Table(
            "Offline queue (station side) and TransactionEvents received (CSMS side)",
            ("group", "queued", "delivered", "dropped", "still queued", "tx events at CSMS", "duplicates"),
            tuple(failover.tx_delivery(evs, group_of, tx_queues)),
            note="queued / delivered / dropped: messages through the stations' offline queues "
            "(TransactionEvent, SecurityEventNotification); dropped: intermediate Updated events shed "
            "under pressure; duplicates: resends the CSMS recognised (its answer was lost)",
        )
    )
    return tuple(out)


def _groups_table(groups: Mapping[str, _GroupTally]) -> Table:
    rows = [
        (
            name,
            len(g.stations),
            len(g.online),
            g.tls_ok - g.tls_resumed,
            g.tls_resumed,
            g.tls_failed,
            g.other_failures,
            g.boots,
            g.tx_started,
            g.tx_ended,
            g.discarded,
        )
        for name, g in sorted(groups.items())
    ]
    return Table(
        "Station groups (station side)",
        (
            "group",
            "stations",
            "online@end",
            "tls full",
            "tls resumed",
            "tls failed",
            "conn failed",
            "boots",
            "tx started",
            "tx ended",
            "discarded",
        ),
        tuple(rows),
        "conn failed: connection attempts or sessions that ended without a TLS failure (refused, HTTP, lost)",
    )


def _links_table(links: Mapping[str, _LinkTally], tx: Mapping[str, collections.Counter[str]]) -> Table:
    rows = []
    for name in sorted(set(links) | set(tx)):
        link = links.get(name, _LinkTally())
        c = tx.get(name, collections.Counter())
        rows.append(
            (
                name,
                link.sessions,
                link.boots,
                link.boot_rejected,
                link.upgrade_rejected,
                c["started"],
                c["ended"],
                c["open"],
                c["lost"],
                link.duplicates,
                link.offline_events,
                link.security_events,
            )
        )
    return Table(
        "Links (station group -> CSMS, CSMS side)",
        (
            "link",
            "sessions",
            "boots",
            "boot rej",
            "http rej",
            "tx started",
            "tx ended",
            "tx open",
            "tx lost",
            "dup tx ev",
            "offline tx ev",
            "sec events",
        ),
        tuple(rows),
        "each figure on the row of the endpoint that recorded it (a controller's row: the sessions it accepted, "
        "what they carried is on the CSMS's row); tx started / tx ended: where Started / Ended was recorded; "
        "tx open: still charging at the end; "
        "tx lost: ended at the station (or never tracked there) but not Ended at the CSMS by the end of the run",
    )


def _tls_table(tls: Mapping[tuple[str, str, str, str, bool], int]) -> Table:
    merged: dict[tuple[str, str, str, str], list[int]] = collections.defaultdict(lambda: [0, 0])
    for (group, version, suite, kex, resumed), n in tls.items():
        merged[(group, version, suite, kex)][1 if resumed else 0] += n
    rows = [(*key, full, resumed) for key, (full, resumed) in sorted(merged.items())]
    return Table(
        "TLS handshakes completed (station side)",
        ("group", "version", "suite", "key exchange", "full", "resumed"),
        tuple(rows),
    )


def _sessions_table(sessions: Mapping[tuple[str, str, str, str, str], int]) -> Table:
    rows = [(*key, n) for key, n in sorted(sessions.items())]
    return Table(
        "Sessions accepted (CSMS side)",
        ("link", "ocpp", "tls version", "suite", "compressed", "sessions"),
        tuple(rows),
    )


def _failures_table(failures: Mapping[tuple[str, str, str, str], int]) -> Table:
    rows = [
        (where, side, kind, reason or "-", n)
        for (where, side, kind, reason), n in sorted(
            failures.items(), key=lambda kv: (kv[0][:3], -kv[1], kv[0][3])
        )
    ]
    return Table("Failures by reason", ("where", "seen by", "event", "reason", "count"), tuple(rows))


def _messages_table(
    messages: Mapping[str, Mapping[str, int]] | None,
    endpoint_messages: Mapping[str, Mapping[str, Mapping[str, int]]] | None,
    link_of: Callable[[str], str],
    group_of: Callable[[str], str],
    derived: Mapping[tuple[str, str], int],
) -> Table:
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    if endpoint_messages is not None:
        for endpoint, by_station in endpoint_messages.items():
            for station, by_action in by_station.items():
                for action, n in by_action.items():
                    counts[(f"{group_of(station)} -> {endpoint}", action)] += int(n)
        note = ""
        title = "OCPP messages by action (received by the CSMS)"
    elif messages is not None:
        for station, by_action in messages.items():
            for action, n in by_action.items():
                counts[(link_of(station), action)] += int(n)
        note = "on each station's own link (this run directory has no per-endpoint counts)"
        title = "OCPP messages by action (received by the CSMS)"
    else:
        counts = collections.Counter(derived)
        title = "OCPP messages by action (from events)"
        note = (
            "only actions that leave an event: BootNotification, TransactionEvent, SecurityEventNotification"
        )
    rows = [(link, action, n) for (link, action), n in sorted(counts.items()) if n]
    return Table(title, ("link", "action", "calls"), tuple(rows), note)


def _security_table(security: Mapping[tuple[str, str, str], int]) -> Table:
    rows = [(where, side, kind, n) for (where, side, kind), n in sorted(security.items())]
    return Table("Security events", ("where", "source", "type", "count"), tuple(rows))


def _attacks_table(attacks: Mapping[tuple[str, str, str], int]) -> Table:
    rows = [(node, outcome, detail or "-", n) for (node, outcome, detail), n in sorted(attacks.items())]
    return Table("Attacks", ("attacker", "outcome", "detail", "count"), tuple(rows))


def _timeline_table(timeline: Sequence[Mapping[str, Any]]) -> Table:
    rows = []
    for e in timeline:
        data = {k: v for k, v in e.items() if k not in _ENVELOPE}
        params = " ".join(f"{k}={v}" for k, v in sorted(data.items()))
        rows.append((f"{float(e['t']):.3f}", e["kind"], params or "-"))
    return Table("Timeline", ("t (s)", "action", "parameters"), tuple(rows))


# ------------------------------------------------------------------------------------------------ canonical log


def as_dict(event: EventLike) -> dict[str, Any]:
    """An event as its JSON object (``t``, ``node``, ``seq``, ``kind`` and the data fields).

    Args:
        event: an :class:`Event` or a mapping already in that form.

    Returns:
        A dict (a copy for mappings).
    """
    return event.as_json() if isinstance(event, Event) else dict(event)


def canonical_line(event: EventLike) -> str:
    """One event as a canonical log line: ``<t µs> <node> <kind> <data as sorted compact JSON>``.

    ``seq`` is left out: it numbers a node's events in the order trio happened to run its tasks.

    Args:
        event: the event.

    Returns:
        The line, e.g. ``12.500000 ST-0001 booted {"interval":60,"status":"Accepted"}``.
    """
    return _canonical(as_dict(event))[1]


def canonical_log(events: Iterable[EventLike]) -> list[str]:
    """The run's events in an order that does not depend on trio's scheduling: what golden logs compare.

    Sorted by (time rounded to µs, node, kind, data as canonical JSON); the per-node sequence number is
    neither used nor printed, so two runs of the same seed give the same lines even when tasks woken at the
    same instant ran in another order.

    Args:
        events: the events, any order.

    Returns:
        One line per event (:func:`canonical_line`), sorted.
    """
    return [line for _, line in sorted(_canonical(as_dict(e)) for e in events)]


FREE_TEXT_FIELDS = frozenset({"detail"})
"""Human-readable engine text (exception messages) kept in the JSONL log but left out of canonical lines: which
of a connection's tasks notices a loss first decides its wording, not the seed."""

ADDRESS_FIELDS = frozenset({"peer"})
"""Fields left out of canonical lines when they hold a ``host:port`` address (an accepted connection's peer; a
pinned peer's *name* stays): a client's port is taken when it connects, and which of several stations due at
one instant connects first is trio's choice, not the seed's. The JSONL log keeps them."""

_ADDRESS = re.compile(r".+:[0-9]+")


def _canonical(e: Mapping[str, Any]) -> tuple[tuple[float, str, str, str], str]:
    """(sort key, line) of one event."""
    t = round(float(e["t"]), 6)
    node, kind = str(e["node"]), str(e["kind"])
    data = {
        k: v
        for k, v in e.items()
        if k not in _ENVELOPE
        and k not in FREE_TEXT_FIELDS
        and not (k in ADDRESS_FIELDS and isinstance(v, str) and _ADDRESS.fullmatch(v))
    }
    body = orjson.dumps(data, default=str, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS).decode()
    return (t, node, kind, body), f"{t:.6f} {node} {kind} {body}"
