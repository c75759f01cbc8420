"""Summary tables computed from a run's events alone.

Everything here is a pure function of the event list (the JSON objects of ``events.jsonl``, or
:class:`~evsim.recorder.Event` objects) and of a :class:`~evsim.metrics.topology.Topology` saying
which station belongs to which group and which CSMS each group connects to, so ``evsim report`` can rebuild
the summary from a run directory without re-running anything. The canonical event log that golden logs
compare is :mod:`evsim.metrics.canonical`.

Every node has a role (:func:`~evsim.metrics.topology.node_roles`), and the two points of view are kept
apart:

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
from typing import Any

import attrs

from evsim.metrics.canonical import ENVELOPE, EventLike, as_dict
from evsim.metrics.topology import Topology, node_roles
from evsim.report import Seconds, human_duration, table

#: Station-side event kinds counted as failures, and CSMS-side ones.
_STATION_FAILURES = ("handshake_failed", "connection_lost", "message_discarded")
_SERVER_FAILURES = (
    "handshake_failed",
    "upgrade_rejected",
    "boot_rejected",
    "connection_lost",
    "accept_failed",
)

#: How the world names the attacker nodes it adds (an impostor CSMS, a relay, a downgrading client): the
#: Attacks table lists each, whatever role its events give it.
ATTACKER_PREFIX = "attacker-"


@attrs.frozen
class Table:
    """One summary table.

    Attributes:
        title: the heading.
        headers: column names.
        rows: the cells: keep figures as numbers (``int``, ``float``, :class:`~evsim.report.Seconds` for
            durations), not pre-formatted text, so ``summary.json`` (:mod:`evsim.metrics.summary_json`, built
            from these tables) carries them as numbers; the text rendering formats them.
        note: a line printed under the table (what the columns mean), or "".
    """

    title: str
    headers: tuple[str, ...]
    rows: tuple[tuple[object, ...], ...]
    note: str = ""

    @property
    def key(self) -> str:
        """A stable identifier for machine-readable output: the title up to its first parenthesis, in lower
        case with underscores (``"Links (station group -> CSMS, CSMS side)"`` → ``"links"``)."""
        return slug(self.title.split(" (", 1)[0])

    def render(self) -> str:
        """Plain text (:func:`evsim.report.table`), or ``(none)`` under the title when there are no rows."""
        text = table(self.headers, self.rows, title=self.title) if self.rows else f"{self.title}\n(none)"
        return f"{text}\n{self.note}" if self.note and self.rows else text


def slug(text: str) -> str:
    """``text`` in lower case with ``_`` for every run of other characters than letters and digits."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "table"


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
        topology: station groups and their CSMS; None groups stations by :func:`~evsim.metrics.topology.default_group` and gives
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
        recovery after outages, connections per endpoint and the offline queue (:mod:`evsim.metrics.failover`);
        load: connect, boot and OCPP round-trip latency, throughput, and all per time bucket
        (:mod:`evsim.metrics.load`); for runs with certificate lifecycle events, renewal, its failures and
        expiry warnings (:mod:`evsim.metrics.certificates`); for runs whose handshakes name their issuers, the
        certificates in use by issuer (:mod:`evsim.metrics.issuers`); for runs that transferred files, firmware
        rollouts, log collection, transfers by mirror and their failures (:mod:`evsim.metrics.transfers`).
    """
    from evsim.metrics.certificates import certificate_tables  # these import Table from here
    from evsim.metrics.clocks import clock_tables
    from evsim.metrics.cpu import cpu_tables
    from evsim.metrics.issuers import issuer_table, issuer_uses
    from evsim.metrics.load import load_tables
    from evsim.metrics.pairing import PAIRING_KINDS, pairing_tables
    from evsim.metrics.transfers import transfer_tables

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
        elif e["kind"] != "service_attempt" and e["kind"] not in PAIRING_KINDS:  # pairing: its own tables
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
            *load_tables(evs, roles, topo),
            *certificate_tables(evs),
            *clock_tables(evs),
            *pairing_tables(evs),
            *transfer_tables(evs),
            *((issuer_table(uses),) if (uses := issuer_uses(evs, roles)) else ()),
            *cpu_tables(evs, topo),
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
        if node.startswith(ATTACKER_PREFIX) and kind == "handshake_failed":
            # an impostor server: every station that refused it is one attempt of the attack, refused
            self.attacks[(node, "refused", str(e.get("reason", "")))] += 1
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
                    "at",
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
                "x % back: time from the outage until that share had booted again; back to: the CSMS "
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
        data = {k: v for k, v in e.items() if k not in ENVELOPE}
        params = " ".join(f"{k}={_param(k, v)}" for k, v in sorted(data.items()))
        rows.append((Seconds(float(e["t"])), e["kind"], params or "-"))
    return Table("Timeline", ("at", "action", "parameters"), tuple(rows))


#: Timeline parameters that hold seconds (:class:`~evsim.world.actions.Action` fields), shown as durations.
_DURATION_PARAMS = frozenset(
    {"latency", "jitter", "stall", "reset", "validity", "spread", "delay", "duration", "every", "for"}
)


def _param(key: str, value: object) -> str:
    """A timeline parameter as a person reads it: durations with units, lists joined by commas, whole
    numbers without a decimal point, bandwidths in bit/s units."""
    if isinstance(value, list | tuple):
        return ",".join(_param(key, v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        if key in _DURATION_PARAMS:
            return human_duration(float(value))
        if key == "bandwidth":
            return _bandwidth(float(value))
        return f"{value:g}" if isinstance(value, float) else str(value)
    return str(value)


def _bandwidth(bps: float) -> str:
    for unit, size in (("Gbps", 1e9), ("Mbps", 1e6), ("kbps", 1e3)):
        if bps >= size:
            return f"{bps / size:g}{unit}"
    return f"{bps:g}bps"
