"""The fault state of a network between named hosts, as a pure value the network's I/O code consults.

Theory of operation. Faults are properties of *host pairs* (unordered: a partition between ``a`` and ``b``
cuts both directions) and of single hosts (down). :class:`FaultTable` holds them and answers the questions a
network asks at its decision points; it never does I/O and never reads a clock (a caller passes ``now``):

* at connect time, :meth:`FaultTable.refusal` says whether a new connection from ``source`` to ``host`` is
  refused and why (either host down, or the pair partitioned), with the same words and the same precedence
  as :class:`~evsim.net.virtual.VirtualNetwork`;
* when a fault starts, :meth:`FaultTable.partition` and :meth:`FaultTable.set_host_down` return a predicate
  naming the open connections it breaks (the caller resets those, as a TCP reset: both ends see a broken
  stream). Healing (:meth:`FaultTable.heal`, ``set_host_down(host, False)``) only lets new connections
  through: a reset connection stays broken, as on the in-memory network;
* per forwarded chunk, :meth:`FaultTable.latency` gives the pair's one-way delay (a change applies to open
  connections from the next chunk on) and :meth:`FaultTable.held_until` the end of a stall (bytes wait,
  the connection stays up).

:class:`~evsim.net.relay.FaultRelay` applies this table to real connections; the virtual network keeps its
own state in the same vocabulary (a test checks both refuse alike).
"""

from __future__ import annotations

from collections.abc import Callable

from evsim.net.virtual import LinkPolicy

__all__ = ["DEFAULT_SOURCE", "FaultTable"]

DEFAULT_SOURCE = "client"
"""The source host of a connection whose caller names none (as on the virtual network)."""


def _pair(a: str, b: str) -> frozenset[str]:
    return frozenset((a, b))


class FaultTable:
    """Partitions, hosts down, link policies and stalls between named hosts (see the module doc)."""

    __slots__ = ("_down", "_holds", "_partitions", "_policies")

    def __init__(self) -> None:
        self._partitions: set[frozenset[str]] = set()
        self._down: set[str] = set()
        self._policies: dict[frozenset[str], LinkPolicy] = {}
        self._holds: dict[frozenset[str], float] = {}

    def refusal(self, source: str, host: str) -> str | None:
        """Why a new connection from ``source`` to ``host`` is refused now, or None when it may open."""
        if host in self._down:
            return f"host {host} is down"
        if source in self._down:
            return f"host {source} is down"
        if _pair(source, host) in self._partitions:
            return f"{source} and {host} are partitioned"
        return None

    def partition(self, host_a: str, host_b: str) -> Callable[[str, str], bool]:
        """Cut ``host_a`` from ``host_b``; returns which open connections (source, host) this breaks."""
        pair = _pair(host_a, host_b)
        self._partitions.add(pair)
        return lambda source, host: _pair(source, host) == pair

    def heal(self, host_a: str, host_b: str) -> None:
        """Undo :meth:`partition` for new connections."""
        self._partitions.discard(_pair(host_a, host_b))

    def is_partitioned(self, host_a: str, host_b: str) -> bool:
        return _pair(host_a, host_b) in self._partitions

    def set_host_down(self, host: str, down: bool = True) -> Callable[[str, str], bool]:
        """Take ``host`` off the network or back on; returns which open connections this breaks (none when
        the host comes back)."""
        if not down:
            self._down.discard(host)
            return lambda _source, _host: False
        self._down.add(host)
        return lambda source, peer: host in (source, peer)

    def is_host_down(self, host: str) -> bool:
        return host in self._down

    def set_link_policy(self, host_a: str, host_b: str, policy: LinkPolicy) -> None:
        """The policy of the pair from now on (open connections included); the default policy clears it."""
        pair = _pair(host_a, host_b)
        if policy == LinkPolicy():
            self._policies.pop(pair, None)
        else:
            self._policies[pair] = policy

    def policy(self, host_a: str, host_b: str) -> LinkPolicy:
        return self._policies.get(_pair(host_a, host_b), LinkPolicy())

    def latency(self, source: str, host: str) -> float:
        """One-way delay of the pair's streams, seconds."""
        policy = self._policies.get(_pair(source, host))
        return 0.0 if policy is None else policy.latency_s

    def hold(self, host_a: str, host_b: str, until: float) -> None:
        """Stall the pair's streams until trio time ``until`` (bytes wait; connections stay up)."""
        pair = _pair(host_a, host_b)
        self._holds[pair] = max(until, self._holds.get(pair, until))

    def held_until(self, source: str, host: str, now: float) -> float | None:
        """The end of the pair's stall when it lasts beyond ``now``, else None (an ended stall is forgotten)."""
        pair = _pair(source, host)
        until = self._holds.get(pair)
        if until is None:
            return None
        if until <= now:
            del self._holds[pair]
            return None
        return until
