"""Slices of one fleet: which stations shard ``I`` of ``N`` runs (``evsim stations --shard I/N``, ``--workers``).

Shard ``I`` (0-based, as Kubernetes' ``JOB_COMPLETION_INDEX``) of ``N`` over a fleet of ``M`` stations runs the
contiguous station numbers ``M*I//N + 1 .. M*(I+1)//N``: every number in ``1..M`` belongs to exactly one shard,
shard sizes differ by at most one, and the numbering is the fleet's, so identities never collide across shards
(the zero padding is the whole fleet's width, not the shard's). Pure arithmetic: no I/O, no trio.
"""

from __future__ import annotations

import attrs

from evsim.errors import ConfigError

__all__ = ["Shard", "parse_shard"]


@attrs.frozen
class Shard:
    """Shard ``index`` of ``count`` (``0 <= index < count``).

    Attributes:
        index: 0-based shard number.
        count: number of shards the fleet is split into.
    """

    index: int
    count: int

    def __attrs_post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index}/{self.count}: need 0 <= index < count")

    def numbers(self, total: int) -> range:
        """The 1-based station numbers of this shard in a fleet of ``total`` (empty when ``total < count``
        leaves it none)."""
        return range(total * self.index // self.count + 1, total * (self.index + 1) // self.count + 1)

    def ids(self, prefix: str, total: int) -> list[str]:
        """This shard's station identities: ``prefix`` + the number, zero-padded to the fleet's width (at least 4,
        as :func:`evsim.nodes.station_model.station_ids` numbers a whole fleet)."""
        width = max(4, len(str(total)))
        return [f"{prefix}{n:0{width}d}" for n in self.numbers(total)]

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(value: str) -> Shard:
    """``"I/N"`` as a :class:`Shard`.

    Raises:
        ConfigError: not two whole numbers with ``0 <= I < N``.
    """
    index, sep, count = value.partition("/")
    if not sep or not index.isdigit() or not count.isdigit():
        raise ConfigError(
            "expected I/N, e.g. 0/4", path="--shard", value=value, fix="give shard I of N, 0 <= I < N"
        )
    if not 0 <= int(index) < int(count):
        raise ConfigError(
            "the shard index is 0-based and below the shard count",
            path="--shard",
            value=value,
            fix=f"use 0/{count} .. {max(int(count) - 1, 0)}/{count}",
        )
    return Shard(int(index), int(count))
