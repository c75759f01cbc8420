"""The pairing states of energy managers (EEBus SHIP), from a run's events alone.

Pairing states are kept by the node a device dials: an energy manager (a node that emitted ``ship_listening``)
or a controller whose listener pairs (``client_auth = "pairing"``), i.e. every pairing event with ``side =
"server"``. Each device key such a node met (an SKI) gets one row with the state of its last pairing event
there:

* ``paired`` (``paired``), later ``replaced`` when the same device id paired again with another key
  (re-pairing for a new key);
* ``pending`` (``pairing_requested``: refused, waiting for a pairing window or a registration);
* ``refused`` (``pairing_refused``, ``cert_invalid``), with the reason;
* ``unpaired`` (``unpaired``: the operator removed it; the reason of its later refusals, if any).

A second table counts, per manager, the SHIP connections that completed the set-up (``ship_connected``), the
ends by reason (``ship_closed``), refusals outside pairing (``ship_refused``) and the pairing windows opened.
Operator actions (``unpaired``, a registration) name the manager as their ``device``: the row keeps the
device the key was last seen with.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence
from typing import Any

from evsim.metrics.summary import Table

__all__ = ["PAIRING_KINDS", "pairing_states", "pairing_tables"]

PAIRING_EVENTS = ("paired", "pairing_requested", "pairing_refused", "cert_invalid", "unpaired")
PAIRING_KINDS = frozenset(
    {
        *PAIRING_EVENTS,
        "ship_listening",
        "ship_connected",
        "ship_closed",
        "ship_refused",
        "ship_hello",
        "ship_connect_failed",
        "ship_key_rotated",
        "pairing_window_opened",
        "pairing_window_closed",
    }
)
"""Event kinds of energy managers and SHIP links (kept out of the other tables)."""

_STATE = {
    "paired": "paired",
    "pairing_requested": "pending",
    "pairing_refused": "refused",
    "cert_invalid": "refused",
    "unpaired": "unpaired",
}


def pairing_states(events: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, str, str, str, float]]:
    """(pairing node, device, SKI, state, reason, since) per device key, for events sorted by time.

    Args:
        events: JSON event objects (``events.jsonl``), sorted by time.

    Returns:
        Rows sorted by manager, device, then the time the state was reached.
    """
    rows: dict[tuple[str, str], list[Any]] = {}  # (manager, ski) -> [device, state, reason, since]
    for e in events:
        node, kind = str(e["node"]), str(e["kind"])
        if kind not in _STATE or e.get("side") != "server" or "ski" not in e:
            continue
        key = (node, str(e["ski"]))
        old = rows.get(key)
        device = str(e.get("device", "?"))
        if device == node and old is not None:  # an operator action names the manager
            device = old[0]
        state = _STATE[kind]
        t = float(e["t"])
        if old is not None and old[1] == "unpaired" and kind == "pairing_refused":
            old[2] = str(e.get("reason") or "")  # still unpaired: its retries are refused
            continue
        if kind == "paired":
            for (m, ski), row in rows.items():
                if m == node and ski != key[1] and row[0] == device and row[1] == "paired":
                    row[1], row[2], row[3] = "replaced", f"re-paired with key {key[1][:12]}", t
        rows[key] = [device, state, str(e.get("reason") or ""), t]
    return sorted(
        ((m, row[0], ski, row[1], row[2], row[3]) for (m, ski), row in rows.items()),
        key=lambda r: (r[0], r[1], r[5], r[2]),
    )


def pairing_tables(events: Sequence[Mapping[str, Any]]) -> tuple[Table, ...]:
    """The two tables of the module doc (none for a run without pairing)."""
    states = pairing_states(events)
    managers = sorted({str(e["node"]) for e in events if e["kind"] == "ship_listening"})
    if not managers and not states:
        return ()
    counts: dict[str, collections.Counter[str]] = {m: collections.Counter() for m in managers}
    for e in events:
        node, kind = str(e["node"]), str(e["kind"])
        if node not in counts:
            continue
        if kind == "ship_connected":
            counts[node]["connected"] += 1
        elif kind == "ship_closed":
            counts[node][f"closed:{e.get('reason', '')}"] += 1
        elif kind == "ship_refused":
            counts[node][f"refused:{e.get('reason', '')}"] += 1
        elif kind == "pairing_window_opened":
            counts[node]["windows"] += 1
    tally = collections.Counter((m, state) for m, _, _, state, _, _ in states)
    summary_rows = tuple(
        (
            m,
            tally[(m, "paired")],
            tally[(m, "pending")],
            tally[(m, "refused")],
            tally[(m, "replaced")] + tally[(m, "unpaired")],
            counts[m]["windows"],
            counts[m]["connected"],
            ", ".join(f"{k} {v}" for k, v in sorted(counts[m].items()) if ":" in k) or "-",
        )
        for m in managers
    )
    states_table = Table(
        "Pairing states (energy managers and pairing listeners)",
        ("node", "device", "SKI", "state", "reason", "since (s)"),
        tuple((m, d, ski[:12], s, r or "-", f"{t:.1f}") for m, d, ski, s, r, t in states),
        note="one row per device key; SKI shortened to 12 hex digits",
    )
    if not managers:
        return (states_table,)
    return (
        states_table,
        Table(
            "Energy managers",
            (
                "energy manager",
                "paired",
                "pending",
                "refused",
                "replaced/unpaired",
                "windows",
                "connected",
                "ends and refusals",
            ),
            summary_rows,
        ),
    )
