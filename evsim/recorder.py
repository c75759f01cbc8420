"""The event recorder: one vocabulary for logs, metrics and the canonical event log.

Every node reports what happens (``handshake_ok``, ``handshake_failed``, ``booted``, ``tx_event`` ...) through
:meth:`Recorder.emit`. Each event carries the simulation time (seconds since the run started), the node name, a
per-recorder sequence number and a small dict of fields. The recorder keeps a bounded window of events, counts
every kind, and forwards each event to an optional sink (a JSONL writer, a live display). Trio's scheduler
order is random, so a canonical log is the events sorted by (time, node, node-local sequence).

The recorder is a base-layer module: nodes, links and scenarios write to it without importing the reports,
and :mod:`evsim.metrics` reads what it recorded (metrics consume events and import no node or scenario code).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from typing import Any

import attrs

from evsim.clock import SimClock

log = logging.getLogger("evsim")

#: Kinds logged at WARNING (something was refused or lost); everything else is INFO/DEBUG.
WARNING_KINDS = frozenset(
    {
        "handshake_failed",
        "upgrade_rejected",
        "connection_lost",
        "bad_input",
        "security_event",
        "boot_rejected",
    }
)


@attrs.frozen
class Event:
    """One thing that happened."""

    t: float
    node: str
    seq: int
    kind: str
    data: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {"t": round(self.t, 6), "node": self.node, "seq": self.seq, "kind": self.kind, **self.data}


@attrs.define
class Recorder:
    """Collects events from all nodes of a run.

    Args:
        clock: the run's clock (event times are ``clock.elapsed()``).
        keep: how many recent events to keep in memory (bounded).
        sink: optional callable receiving every event as it happens.
        echo: log refusals and losses at WARNING (True for interactive commands; a scenario run keeps them in its
            event log and summary instead, and echoes them only with ``-v``).
    """

    clock: SimClock
    keep: int = 200_000
    sink: Callable[[Event], None] | None = None
    echo: bool = True
    events: collections.deque[Event] = attrs.field(init=False)
    counts: collections.Counter[str] = attrs.field(init=False, factory=collections.Counter)
    _node_seq: collections.Counter[str] = attrs.field(init=False, factory=collections.Counter)

    def __attrs_post_init__(self) -> None:
        self.events = collections.deque(maxlen=self.keep)

    def emit(self, node: str, kind: str, **data: Any) -> Event:
        """Record an event and log it (WARNING for refusals and losses, DEBUG otherwise)."""
        seq = self._node_seq[node]
        self._node_seq[node] = seq + 1
        ev = Event(t=self.clock.elapsed(), node=node, seq=seq, kind=kind, data=data)
        self.events.append(ev)
        self.counts[kind] += 1
        if kind in WARNING_KINDS and self.echo:
            log.warning("%s %s %s", node, kind, _fmt(data))
        elif log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s %s", node, kind, _fmt(data))
        if self.sink is not None:
            self.sink(ev)
        return ev

    def of_kind(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.kind == kind]

    def canonical(self) -> list[Event]:
        """Events sorted by (time, node, node sequence): identical across runs of the same seed."""
        return sorted(self.events, key=lambda e: (round(e.t, 6), e.node, e.seq))


def _fmt(data: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in data.items())
