"""The canonical event log: a run's events as lines whose order does not depend on trio's scheduling.

Golden logs (:mod:`evsim.scenario.golden`) and ``evsim run --canonical-log`` compare these lines. Each event
is one line, ``<t µs> <node> <kind> <data as sorted compact JSON>`` (:func:`canonical_line`); the log is
sorted by (time rounded to µs, node, kind, data) (:func:`canonical_log`). What the seed does not decide is
left out: the per-node sequence number, free engine text (:data:`FREE_TEXT_FIELDS`), ephemeral
``host:port`` addresses (:data:`ADDRESS_FIELDS`) and certificate serials and fingerprints, which are generated
per run (:data:`PER_RUN_FIELDS`), and the recorder's sums of OCPP round trips (:data:`UNDECIDED_KINDS`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, TypeAlias

import orjson

from evsim.recorder import ROUND_TRIPS, Event

__all__ = [
    "ADDRESS_FIELDS",
    "ENVELOPE",
    "FREE_TEXT_FIELDS",
    "PER_RUN_FIELDS",
    "UNDECIDED_KINDS",
    "EventLike",
    "as_dict",
    "canonical_line",
    "canonical_log",
]

EventLike: TypeAlias = Event | Mapping[str, Any]

#: Fields of an event object that are not its data.
ENVELOPE = ("t", "node", "seq", "kind")


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
    dicts = (as_dict(e) for e in events)
    return [line for _, line in sorted(_canonical(d) for d in dicts if d["kind"] not in UNDECIDED_KINDS)]


FREE_TEXT_FIELDS = frozenset({"detail"})
"""Human-readable engine text (exception messages) kept in the JSONL log but left out of canonical lines: which
of a connection's tasks notices a loss first decides its wording, not the seed."""

ADDRESS_FIELDS = frozenset({"peer"})
"""Fields left out of canonical lines when they hold a ``host:port`` address (an accepted connection's peer; a
pinned peer's *name* stays): a client's port is taken when it connects, and which of several stations due at
one instant connects first is trio's choice, not the seed's. The JSONL log keeps them."""

PER_RUN_FIELDS = frozenset({"serial", "previous_serial", "fingerprint", "ski", "old_ski"})
"""Fields naming a certificate by its serial number, fingerprint or key (SKI), left out of canonical lines: keys and
serial numbers are generated afresh for each run (they are random, not drawn from the seed). The certificate's
subject, issuer and validity, which the seed and the timeline decide, stay. The JSONL log keeps them."""

UNDECIDED_KINDS = frozenset({ROUND_TRIPS})
"""Event kinds left out of the canonical log: the recorder's ``round_trips`` sums count every CALL of a window,
Heartbeats included, and which CALLs a window holds is not all decided by the seed: a station's Heartbeat due
at the very instant its next meter value is queued is sent or skipped depending on which task trio runs first
(two runs of ``default`` with one seed sent 50 and 64 Heartbeats), and a Heartbeat leaves no event of its own.
The JSONL log and the report keep them."""

_ADDRESS = re.compile(r".+:[0-9]+")


def _canonical(e: Mapping[str, Any]) -> tuple[tuple[float, str, str, str], str]:
    """(sort key, line) of one event."""
    t = round(float(e["t"]), 6)
    node, kind = str(e["node"]), str(e["kind"])
    data = {
        k: v
        for k, v in e.items()
        if k not in ENVELOPE
        and k not in FREE_TEXT_FIELDS
        and k not in PER_RUN_FIELDS
        and not (k in ADDRESS_FIELDS and isinstance(v, str) and _ADDRESS.fullmatch(v))
    }
    body = orjson.dumps(data, default=str, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS).decode()
    return (t, node, kind, body), f"{t:.6f} {node} {kind} {body}"
