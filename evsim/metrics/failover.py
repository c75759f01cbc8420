"""Failover metrics: recovery after each outage, connections per endpoint, the offline queue's fate.

Pure functions of a run's events (JSON objects as in ``events.jsonl``, sorted here), like
:mod:`evsim.metrics.summary`, which appends their tables to every summary:

* **Recovery after outages** (:func:`recoveries`): for every ``stop`` or ``partition`` on the timeline at time
  *T* (outages at the same instant are one row: a station's loss cannot be told apart between them), the
  *affected* stations are those online (booted, station side) just before *T* that lose their link
  within :data:`LOSS_WINDOW` seconds; each one's recovery time is its next ``booted`` minus *T*. The table
  shows the time until 50 / 95 / 100 % of the affected stations were back, and the endpoint (the CSMS that
  recorded the BootNotification) they came back to. A controller that keeps its stations (``keep_station``)
  hides the outage from them; its per-station upstream links get a row of their own (``upstream_lost`` →
  next ``upstream_connected``, back to the endpoint it names).
* **Connections per endpoint** (:func:`endpoint_counts`): per CSMS or controller, the WebSocket sessions it
  accepted (``station_connected``), handshakes and upgrades it refused, its peak of sessions accepted in one
  second (the height of a reconnect storm), per controller upstream endpoint the links it opened, and from the
  stations' side (stations with several endpoints name the one they tried: ``endpoint``) the handshakes
  completed with it and the attempts on it that failed.
* **Offline queue** (:func:`tx_delivery`): per station group, what the stations' queues took, delivered,
  dropped and still held (``TxQueue`` statistics, kept in ``meta.json`` as ``tx_queues``), next to the
  TransactionEvents the CSMS recorded and the resends it recognised as duplicates.
* :func:`storm_series`: sessions accepted per second per endpoint, for the reconnect-storm plot.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

#: Seconds after an outage starts within which a station's link loss counts as caused by it. A reset or a
#: stopped host breaks connections at once; a partition is noticed at the next read, at the latest when the
#: OCPP message timeout (30 s, OCPP 2.0.1 Part 2 §3.2 "use 30 seconds as a starting point") fires on a
#: heartbeat or queued message, so twice that covers it.
LOSS_WINDOW = 60.0

#: Timeline actions that start an outage.
OUTAGE_ACTIONS = ("stop", "partition")

#: Fractions of the affected stations the recovery table reports.
QUANTILES = (0.5, 0.95, 1.0)


@attrs.frozen
class Recovery:
    """How the stations came back after one outage.

    Attributes:
        t: when the outage started (s).
        action: ``stop`` and/or ``partition`` (comma-separated when several happen at ``t``).
        target: what it hit (a node, or ``a<->b``; comma-separated).
        online: stations online just before.
        affected: stations that lost their link within :data:`LOSS_WINDOW`.
        times: recovery time (s from ``t``) of each affected station that came back, sorted.
        back_to: endpoint (CSMS recording the boot) -> stations that came back to it.
    """

    t: float
    action: str
    target: str
    online: int
    affected: int
    times: tuple[float, ...]
    back_to: Mapping[str, int]

    def time_until(self, fraction: float) -> float | None:
        """Seconds until ``fraction`` of the affected stations were back (None: not by the end of the run).

        Args:
            fraction: in (0, 1].

        Returns:
            The time, 0.0 when nothing was affected, None when too few came back.
        """
        if self.affected == 0:
            return 0.0
        k = max(1, math.ceil(fraction * self.affected))
        return self.times[k - 1] if len(self.times) >= k else None


def _sorted(events: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted(events, key=lambda e: (round(float(e["t"]), 6), str(e["node"]), int(e.get("seq", 0))))


def _target(e: Mapping[str, Any]) -> str:
    between = e.get("between")
    if isinstance(between, list | tuple) and len(between) == 2:
        return f"{between[0]}<->{between[1]}"
    return str(e.get("target", "?"))


def recoveries(events: Iterable[Mapping[str, Any]], roles: Mapping[str, str]) -> list[Recovery]:
    """Recovery after every outage on the timeline (see the module doc).

    Args:
        events: JSON event objects, any order.
        roles: node -> role (:func:`evsim.metrics.topology.node_roles`).

    Returns:
        One :class:`Recovery` per ``stop`` / ``partition`` event, in time order.
    """
    evs = _sorted(events)
    by_time: dict[float, list[Mapping[str, Any]]] = {}
    for e in evs:
        if e["node"] == "timeline" and e["kind"] in OUTAGE_ACTIONS:
            by_time.setdefault(round(float(e["t"]), 6), []).append(e)
    if not by_time:
        return []
    # per station: (t, "up"/"down") transitions; per station: CSMS-side boots (t, csms)
    transitions: dict[str, list[tuple[float, str]]] = collections.defaultdict(list)
    server_boots: dict[str, list[tuple[float, str]]] = collections.defaultdict(list)
    # per (controller, station) upstream link: transitions, and where each connect went
    upstream: dict[str, list[tuple[float, str]]] = collections.defaultdict(list)
    upstream_to: dict[str, list[tuple[float, str]]] = collections.defaultdict(list)
    for e in evs:
        node, kind, t = str(e["node"]), e["kind"], float(e["t"])
        role = roles.get(node)
        if role == "station":
            if kind == "booted":
                transitions[node].append((t, "up"))
            elif kind == "reconnect_wait":
                transitions[node].append((t, "down"))
        elif role == "csms" and kind == "booted" and "station" in e:
            server_boots[str(e["station"])].append((t, node))
        elif kind in ("upstream_connected", "upstream_lost") and "station" in e:
            key = f"{node}/{e['station']}"
            upstream[key].append((t, "up" if kind == "upstream_connected" else "down"))
            if kind == "upstream_connected":
                upstream_to[key].append((t, f"{node} -> {e.get('endpoint', '?')}"))
    out: list[Recovery] = []
    for t0, same in by_time.items():
        action = ", ".join(dict.fromkeys(str(o["kind"]) for o in same))
        target = ", ".join(_target(o) for o in same)
        out.append(_recovery(t0, action, target, transitions, server_boots))
        if upstream:
            links = _recovery(t0, action, target + " (controller upstream links)", upstream, upstream_to)
            if links.affected:
                out.append(links)
    return out


def _recovery(
    t0: float,
    action: str,
    target: str,
    transitions: Mapping[str, list[tuple[float, str]]],
    landed: Mapping[str, list[tuple[float, str]]],
) -> Recovery:
    """One row: who was up before ``t0``, who went down within the window, when each came back and where."""
    online = affected = 0
    times: list[float] = []
    back_to: collections.Counter[str] = collections.Counter()
    for station, trans in transitions.items():
        state = "down"
        i = 0
        while i < len(trans) and trans[i][0] < t0:
            state = trans[i][1]
            i += 1
        if state != "up":
            continue
        online += 1
        lost = next((t for t, s in trans[i:] if s == "down"), None)
        if lost is None or lost > t0 + LOSS_WINDOW:
            continue
        affected += 1
        back = next((t for t, s in trans[i:] if s == "up" and t >= lost), None)
        if back is None:
            continue
        times.append(back - t0)
        where = next((n for t, n in landed.get(station, ()) if t >= lost), None)
        back_to[where or "?"] += 1
    return Recovery(
        t=t0,
        action=action,
        target=target,
        online=online,
        affected=affected,
        times=tuple(sorted(times)),
        back_to=dict(sorted(back_to.items())),
    )


def recovery_rows(recs: Sequence[Recovery]) -> list[tuple[object, ...]]:
    """Rows of the recovery table: t, action, target, online, affected, 50/95/100 %, back to."""
    rows: list[tuple[object, ...]] = []
    for r in recs:
        cells: list[object] = [f"{r.t:.3f}", r.action, r.target, r.online, r.affected]
        for q in QUANTILES:
            v = r.time_until(q)
            # sub-second recoveries (the CPU model's queues) keep three decimals
            cells.append(
                "-"
                if r.affected == 0
                else ("not by end" if v is None else f"{v:.3f}" if 0 < v < 1 else f"{v:.1f}")
            )
        cells.append(", ".join(f"{k} {n}" for k, n in r.back_to.items()) or "-")
        rows.append(tuple(cells))
    return rows


@attrs.frozen
class EndpointCount:
    """Connections seen by one endpoint (a CSMS, a controller, or a controller's upstream endpoint).

    Attributes:
        endpoint: the node, or ``controller -> endpoint`` for upstream links.
        accepted: WebSocket sessions accepted (``station_connected``) or upstream links opened
            (``upstream_connected``).
        tls_failed: handshakes the endpoint refused (server side).
        refused: upgrades refused (HTTP status) or upstream connects that failed.
        peak_per_s: most sessions accepted within one second.
        station_tls_ok: handshakes stations with several endpoints completed with it (station side).
        station_failed: their attempts on it that failed (refused, TLS, HTTP) and their links to it that were
            lost (station side).
    """

    endpoint: str
    accepted: int
    tls_failed: int
    refused: int
    peak_per_s: int
    station_tls_ok: int = 0
    station_failed: int = 0


def endpoint_counts(
    events: Iterable[Mapping[str, Any]], roles: Mapping[str, str], hosts: Mapping[str, str] | None = None
) -> list[EndpointCount]:
    """Connections per endpoint (see the module doc), sorted by endpoint name.

    Args:
        events: JSON event objects.
        roles: node -> role.
        hosts: host -> CSMS or controller name, for station events naming the endpoint by host (unknown hosts
            are shown as they are).

    Returns:
        One :class:`EndpointCount` per endpoint.
    """
    accepted: collections.Counter[str] = collections.Counter()
    failed: collections.Counter[str] = collections.Counter()
    refused: collections.Counter[str] = collections.Counter()
    station_ok: collections.Counter[str] = collections.Counter()
    station_failed: collections.Counter[str] = collections.Counter()
    per_second: dict[str, collections.Counter[int]] = collections.defaultdict(collections.Counter)
    for e in events:
        node, kind = str(e["node"]), e["kind"]
        if roles.get(node) == "station" and "endpoint" in e:
            where = (hosts or {}).get(str(e["endpoint"]), str(e["endpoint"]))
            if kind == "handshake_ok":
                station_ok[where] += 1
            elif kind in ("handshake_failed", "connection_lost"):
                station_failed[where] += 1
            continue
        if roles.get(node) != "csms":
            continue
        if kind == "station_connected":
            accepted[node] += 1
            per_second[node][int(float(e["t"]))] += 1
        elif kind == "handshake_failed":
            failed[node] += 1
        elif kind == "upgrade_rejected":
            refused[node] += 1
        elif kind == "upstream_connected":
            key = f"{node} -> {e.get('endpoint', '?')}"
            accepted[key] += 1
            per_second[key][int(float(e["t"]))] += 1
        elif kind == "upstream_failed":
            refused[f"{node} -> upstream"] += 1
    names = sorted(set(accepted) | set(failed) | set(refused) | set(station_ok) | set(station_failed))
    return [
        EndpointCount(
            endpoint=n,
            accepted=accepted[n],
            tls_failed=failed[n],
            refused=refused[n],
            peak_per_s=max(per_second[n].values(), default=0),
            station_tls_ok=station_ok[n],
            station_failed=station_failed[n],
        )
        for n in names
    ]


def storm_series(
    events: Iterable[Mapping[str, Any]], roles: Mapping[str, str], span_s: float, width: float = 1.0
) -> dict[str, list[int]]:
    """Sessions accepted per bucket of ``width`` seconds, per CSMS or controller.

    Args:
        events: JSON event objects.
        roles: node -> role.
        span_s: seconds covered.
        width: bucket width (s).

    Returns:
        endpoint -> counts per bucket (``ceil(span_s / width)`` buckets), endpoints sorted.
    """
    n = max(1, math.ceil(span_s / width))
    out: dict[str, list[int]] = {}
    for e in events:
        node = str(e["node"])
        if e["kind"] != "station_connected" or roles.get(node) != "csms":
            continue
        row = out.setdefault(node, [0] * n)
        row[min(n - 1, max(0, int(float(e["t"]) // width)))] += 1
    return dict(sorted(out.items()))


QUEUE_FIELDS = ("enqueued_total", "delivered_total", "dropped_total", "queued")


def tx_delivery(
    events: Iterable[Mapping[str, Any]],
    group_of: Mapping[str, str],
    queues: Mapping[str, Mapping[str, int]] | None,
) -> list[tuple[object, ...]]:
    """Per station group: queue statistics (summed) and what the CSMS recorded.

    Args:
        events: JSON event objects.
        group_of: station -> group.
        queues: station -> ``TxQueue`` statistics (:data:`QUEUE_FIELDS`), or None when unknown (then "?").

    Returns:
        Rows: group, queued, delivered, dropped, still queued, TransactionEvents recorded by a CSMS,
        recognised duplicates.
    """
    recorded: collections.Counter[str] = collections.Counter()
    dups: collections.Counter[str] = collections.Counter()
    for e in events:
        if e["kind"] in ("tx_event", "tx_duplicate") and "station" in e:
            group = group_of.get(str(e["station"]))
            if group is None:
                continue
            (recorded if e["kind"] == "tx_event" else dups)[group] += 1
    sums: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for sid, stats in (queues or {}).items():
        group = group_of.get(sid)
        if group is not None:
            for f in QUEUE_FIELDS:
                sums[group][f] += int(stats.get(f, 0))
    rows: list[tuple[object, ...]] = []
    for group in sorted(set(group_of.values())):
        q: list[object] = [sums[group][f] for f in QUEUE_FIELDS] if queues is not None else ["?"] * 4
        rows.append((group, *q, recorded[group], dups[group]))
    return rows
