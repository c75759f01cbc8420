"""Cut a run's events into episodes and condense each episode into findings: the skeleton of the narrative.

An episode starts at t = 0 (the start-up, or boot storm) and at every instant the timeline acted (an attack,
an outage, a rotation, a renewal...); it lasts until the next one. Inside an episode, the events that matter
to a reader (refusals, lost links, security events, boots, certificate changes...) are grouped into
:class:`Finding` s: one per (side, kind, reason), with who saw it, how often, when first and last, and the
security event it raised. Routine traffic (transaction events, heartbeats, accepted sockets) is left out
except at depth 3, where every handshake is listed. Pure functions of the event objects of ``events.jsonl``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from evsim.metrics.canonical import ENVELOPE
from evsim.metrics.summary import ATTACKER_PREFIX

#: Timeline action -> the episode kind it opens (actions not listed open a ``change`` episode).
EPISODE_OF_ACTION: dict[str, str] = {
    "stop": "outage",
    "partition": "outage",
    "link": "network change",
    "set_network_profile": "network change",
    "start": "recovery",
    "heal": "recovery",
    "attack_ended": "recovery",
    "expire_certificate": "certificate expiry",
    "renew_certificate": "renewal",
    "trigger_renewal": "renewal",
    "degrade_ca": "renewal",
    "revoke_certificate": "revocation",
    "rotate_certificate": "rotation",
    "install_root": "rotation",
    "remove_root": "rotation",
    "release_pin": "rotation",
    "install_certificate": "rotation",
    "delete_certificate": "rotation",
    "switch_server_certificate": "rotation",
    "attack_downgrade": "attack",
    "attack_wrong_ca": "attack",
    "attack_mitm": "attack",
    "ship_impostor": "attack",
    "clock_step": "clock",
    "open_pairing_window": "pairing",
    "close_pairing_window": "pairing",
    "unpair": "pairing",
    "rotate_ship_key": "pairing",
    "update_firmware": "firmware",
    "get_log": "log collection",
}

#: Timeline events that report what an action could not do (``certificate_not_sent``): findings of the
#: episode they happen in, not the start of a new one.
TIMELINE_REPORTS = frozenset({"certificate_not_sent"})

#: Kinds that are routine traffic: never a finding.
ROUTINE_KINDS = frozenset(
    {
        "tx_event",
        "tx_started",
        "tx_ended",
        "authorized",
        "connection_opened",
        "listening",
        "heartbeat",
        "run_started",
        "run_ended",
        "service_attempt",
        "firmware_status_received",
        "firmware_status",
        "meter_value",
        "nts_sample",
    }
)

#: Kinds listed one by one at depth 3 (every handshake), condensed into findings below it.
HANDSHAKE_KINDS = frozenset({"handshake_ok", "tls_accepted", "station_connected"})


@attrs.frozen
class Finding:
    """One thing that happened in an episode, possibly to many nodes.

    Attributes:
        side: the role of the nodes (``station``, ``csms``, ``control``, ``attacker`` for the world's attacker
            nodes, ``other``).
        kind: the event kind.
        reason: the event's reason ("" when it has none).
        nodes: the nodes, in order of first occurrence.
        count: events.
        first: time of the first, simulated seconds.
        last: time of the last.
        security_event: the security event type the events raised or carried, or "".
        sample: the first event's fields beyond the envelope (for the narrative's details).
    """

    side: str
    kind: str
    reason: str
    nodes: tuple[str, ...]
    count: int
    first: float
    last: float
    security_event: str = ""
    sample: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class Episode:
    """A stretch of the run opened by the start or by the timeline.

    Attributes:
        kind: ``start-up``, ``attack``, ``outage``, ``recovery``, ``rotation``... (:data:`EPISODE_OF_ACTION`).
        start: simulated seconds.
        end: when the next episode starts (or the run ends).
        actions: the timeline events that opened it (kind and parameters).
        findings: what happened, in order of first occurrence.
        events: every event in the episode's window (for depth 3 and for follow-ups).
    """

    kind: str
    start: float
    end: float
    actions: tuple[Mapping[str, Any], ...]
    findings: tuple[Finding, ...]
    events: tuple[Mapping[str, Any], ...]


def split_episodes(
    events: Sequence[Mapping[str, Any]], roles: Mapping[str, str], *, end: float | None = None
) -> list[Episode]:
    """The episodes of a run.

    Args:
        events: the event objects (any order; sorted here by time, node and sequence).
        roles: node -> role (:func:`evsim.metrics.topology.node_roles`).
        end: when the run ended; default the last event's time.

    Returns:
        The start-up episode, then one per instant the timeline acted, in time order.
    """
    evs = sorted(events, key=lambda e: (float(e["t"]), str(e["node"]), int(e.get("seq", 0))))
    run_end = end if end is not None else (float(evs[-1]["t"]) if evs else 0.0)
    starts: list[float] = [0.0]
    acts: dict[float, list[Mapping[str, Any]]] = {0.0: []}
    for e in evs:
        if e["node"] == "timeline" and e["kind"] not in TIMELINE_REPORTS:
            t = round(float(e["t"]), 6)
            if t not in acts:
                starts.append(t)
                acts[t] = []
            acts[t].append(e)
    starts.sort()
    out: list[Episode] = []
    i = 0
    for n, start in enumerate(starts):
        stop = starts[n + 1] if n + 1 < len(starts) else max(run_end, start)
        window: list[Mapping[str, Any]] = []
        while i < len(evs) and (n + 1 == len(starts) or round(float(evs[i]["t"]), 6) < stop):
            window.append(evs[i])
            i += 1
        actions = tuple(acts[start])
        out.append(
            Episode(
                kind=_episode_kind(actions, window),
                start=start,
                end=stop,
                actions=actions,
                findings=tuple(findings(window, roles)),
                events=tuple(window),
            )
        )
    return out


#: Stations booting in the start-up episode from which it is told as a boot storm.
BOOT_STORM = 100


def _episode_kind(actions: Sequence[Mapping[str, Any]], window: Sequence[Mapping[str, Any]] = ()) -> str:
    if not actions:
        boots = sum(1 for e in window if e["kind"] == "booted")
        return "boot storm" if boots >= 2 * BOOT_STORM else "start-up"  # the CSMS records each boot too
    kinds = [EPISODE_OF_ACTION.get(str(a["kind"]), "change") for a in actions]
    for preferred in ("attack", "outage", "recovery"):
        if preferred in kinds:
            return preferred
    return kinds[0]


def findings(events: Sequence[Mapping[str, Any]], roles: Mapping[str, str]) -> list[Finding]:
    """Group the notable events of a window by (side, kind, reason), in order of first occurrence.

    Args:
        events: the window's events, in time order.
        roles: node -> role.

    Returns:
        The findings; routine kinds (:data:`ROUTINE_KINDS`) and the timeline's actions are left out, as
        are the CSMS's copies of handshakes it accepted (the stations' side tells them).
    """
    groups: dict[tuple[str, str, str], dict[str, Any]] = {}
    for e in events:
        kind = str(e["kind"])
        node = str(e["node"])
        side = "attacker" if node.startswith(ATTACKER_PREFIX) else roles.get(node, "other")
        if node == "timeline" and kind not in TIMELINE_REPORTS:
            continue  # the episode's title tells the actions
        if kind in ROUTINE_KINDS or (side == "csms" and kind in HANDSHAKE_KINDS):
            continue
        reason = str(e.get("reason") or "")
        key = (side, kind, reason)
        g = groups.get(key)
        if g is None:
            g = groups[key] = {
                "nodes": {},
                "count": 0,
                "first": float(e["t"]),
                "security_event": "",
                "sample": {k: v for k, v in e.items() if k not in ENVELOPE},
            }
        g["nodes"].setdefault(node, None)
        peer = e.get("station") or (str(e["peer"]).rsplit(":", 1)[0] if e.get("peer") else None)
        if side in ("csms", "attacker") and peer:
            g.setdefault("peers", {}).setdefault(str(peer), None)
        g["count"] += 1
        g["last"] = float(e["t"])
        if isinstance(e.get("seconds"), int | float):
            g.setdefault("seconds", []).append(float(e["seconds"]))
        sec = e.get("security_event") or (e.get("type") if kind == "security_event_received" else "")
        if sec and not g["security_event"]:
            g["security_event"] = str(sec)
    out = []
    for (side, kind, reason), g in groups.items():
        sample = dict(g["sample"])
        if "peers" in g:
            sample["peers"] = list(g["peers"])
        if "seconds" in g:
            sample["seconds_min"], sample["seconds_max"] = min(g["seconds"]), max(g["seconds"])
        out.append(
            Finding(
                side=side,
                kind=kind,
                reason=reason,
                nodes=tuple(g["nodes"]),
                count=g["count"],
                first=g["first"],
                last=g["last"],
                security_event=g["security_event"],
                sample=sample,
            )
        )
    out.sort(key=lambda f: f.first)
    return out


def compress_names(names: Sequence[str], limit: int = 6) -> str:
    """A list of node names as a reader takes it in: ``ST-0001, ST-0002 and 3 more``.

    Args:
        names: node names.
        limit: names shown before "and N more".
    """
    if not names:
        return "nobody"
    if len(names) <= limit:
        return ", ".join(names)
    return f"{', '.join(names[:limit])} and {len(names) - limit} more"
