"""The seqNos a CSMS received of one transaction, kept in constant memory and time per event (sans-IO).

A transaction's TransactionEvents carry ``seqNo`` 0, 1, 2, ... (Part 2 §E.1.3.2); the CSMS checks completeness
by contiguous seqNos from Started to Ended and recognises a resent event (same transactionId and seqNo) as a
duplicate. :class:`SeqNos` keeps the received numbers as *runs* of consecutive numbers (``[start, end)``), not
one entry per event: an honest transaction, delivered in order, is one run however long it lasts, and the next
number extends it in O(1). Events out of order, or gaps (a station's queue may drop intermediate meter values
under pressure), make more runs; a number goes into its place by bisection.

Memory is bounded: at most ``max_runs`` runs are kept. One more merges the two oldest runs, and the numbers
between them (never received) are *forgotten*: they count as received from then on, so an event that arrives
that late is taken for a duplicate, and the transaction is no longer gap-free (it was not: the numbers were
missing). The seqNo value itself costs nothing (10**12 is a number in a run like 0), so a hostile station
cannot make the CSMS allocate by sending large numbers; range checks are :mod:`evsim.ocpp.limits`'.
"""

from __future__ import annotations

import bisect

__all__ = ["MAX_RUNS", "SeqNos"]

MAX_RUNS = 64
"""Runs of consecutive seqNos kept per transaction (the default ``max_runs``)."""


class SeqNos:
    """The set of seqNos received, as runs; :meth:`add` tells a new number from a duplicate.

    Args:
        max_runs: runs kept before the two oldest are merged (>= 2).

    Attributes:
        count: distinct numbers received (events that were not duplicates).
        forgotten: numbers never received but counted as received after a merge of old runs.
    """

    __slots__ = ("_ends", "_starts", "count", "forgotten", "max_runs")

    def __init__(self, max_runs: int = MAX_RUNS) -> None:
        if max_runs < 2:
            raise ValueError("max_runs must be >= 2")
        self.max_runs = max_runs
        self._starts: list[int] = []
        self._ends: list[int] = []
        self.count = 0
        self.forgotten = 0

    def add(self, seq: int) -> bool:
        """Record ``seq``; True if it is new, False if it was received before (a duplicate).

        O(1) for the next number in order and for a repeat of the latest run; otherwise O(log runs + runs),
        with runs <= ``max_runs``.
        """
        starts, ends = self._starts, self._ends
        if ends:
            last_end = ends[-1]
            if seq == last_end:  # the next one in order: the common case
                ends[-1] = last_end + 1
                self.count += 1
                return True
            if starts[-1] <= seq < last_end:
                return False
        i = bisect.bisect_right(starts, seq)  # starts[i-1] <= seq < starts[i]
        if i and seq < ends[i - 1]:
            return False
        joins_left = bool(i) and ends[i - 1] == seq
        joins_right = i < len(starts) and starts[i] == seq + 1
        if joins_left and joins_right:
            ends[i - 1] = ends[i]
            del starts[i], ends[i]
        elif joins_left:
            ends[i - 1] = seq + 1
        elif joins_right:
            starts[i] = seq
        else:
            starts.insert(i, seq)
            ends.insert(i, seq + 1)
            if len(starts) > self.max_runs:
                self.forgotten += starts[1] - ends[0]
                ends[0] = ends[1]
                del starts[1], ends[1]
        self.count += 1
        return True

    def __contains__(self, seq: int) -> bool:
        i = bisect.bisect_right(self._starts, seq)
        return bool(i) and seq < self._ends[i - 1]

    def gap_free(self) -> bool:
        """True if the numbers received are exactly 0..count-1 (or none)."""
        if not self.count:
            return True
        return len(self._starts) == 1 and self._starts[0] == 0 and not self.forgotten

    @property
    def runs(self) -> tuple[tuple[int, int], ...]:
        """The runs ``(start, end)``, end exclusive, in order (at most ``max_runs``)."""
        return tuple(zip(self._starts, self._ends, strict=True))

    def __repr__(self) -> str:
        return f"SeqNos(count={self.count}, runs={len(self._starts)}, forgotten={self.forgotten})"
