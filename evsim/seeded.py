"""A node's seeded random source, made on its first draw.

A ``random.Random`` holds the Mersenne Twister's whole state inline: 2.5 KiB per instance, from the moment it is
seeded. A station draws from its source only on a failed connection (back-off jitter), for its charging sessions
(start times, transaction ids), so a fleet that only boots and heartbeats never draws at all (2.5 of the ≈12 KiB
of a station's objects, ``bench/memory.py``). :class:`SeededRandom` keeps the seed and seeds a
``random.Random`` with it on the first draw: the same seed gives the same numbers in the same order, whenever
that first draw comes.

:class:`RandomSource` is what the stations, their network-profile walk and back-off need of a source: a
``random.Random`` is one too.
"""

from __future__ import annotations

import random
from typing import Protocol


class RandomSource(Protocol):
    """The draws a station makes (``random.Random`` and :class:`SeededRandom` have them)."""

    def uniform(self, a: float, b: float) -> float: ...

    def getrandbits(self, k: int, /) -> int: ...


class SeededRandom:
    """``random.Random(seed)``, made on the first draw (see the module docstring).

    Args:
        seed: what ``random.Random`` would be seeded with (a string is hashed the same way, version 2).
    """

    __slots__ = ("_rng", "_seed")

    def __init__(self, seed: int | str) -> None:
        self._seed: int | str = seed
        self._rng: random.Random | None = None

    def _source(self) -> random.Random:
        rng = self._rng
        if rng is None:
            rng = self._rng = random.Random(self._seed)
        return rng

    def uniform(self, a: float, b: float) -> float:
        """``random.Random.uniform``."""
        return self._source().uniform(a, b)

    def getrandbits(self, k: int, /) -> int:
        """``random.Random.getrandbits``."""
        return self._source().getrandbits(k)

    def __repr__(self) -> str:
        return f"SeededRandom({self._seed!r}{'' if self._rng is None else ', drawn'})"
