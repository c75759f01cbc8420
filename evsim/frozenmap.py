"""An immutable, hashable mapping: the table type of frozen configuration values (scenarios, topologies).

It is also the TLS model's cipher-suite table (:data:`evsim.tls.config.SuiteMap`), so there is one frozen table
type. Standard library only (base layer).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar

__all__ = ["FrozenMap", "frozen_map"]

K = TypeVar("K")
V = TypeVar("V")


class FrozenMap(Mapping[K, V]):
    """An immutable, hashable mapping that keeps insertion order (file order for scenario tables).

    Args:
        items: a mapping or an iterable of ``(key, value)`` pairs; values must be hashable for
            :func:`hash` to work.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[K, V] | Iterable[tuple[K, V]] = ()) -> None:
        self._items: dict[K, V] = dict(items)

    def __getitem__(self, key: K) -> V:
        return self._items[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(tuple(self._items.items()))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return dict(self._items) == dict(other.items())
        return NotImplemented

    def __repr__(self) -> str:
        return f"FrozenMap({self._items!r})"


def frozen_map(value: Mapping[Any, Any] | Iterable[tuple[Any, Any]]) -> FrozenMap[Any, Any]:
    """attrs converter: any mapping (or pairs) to a :class:`FrozenMap` (typed loosely: attrs converters
    cannot be generic over the field's type)."""
    return value if isinstance(value, FrozenMap) else FrozenMap(value)
