"""evsim: a Trio-based, structured-concurrency simulator of an EV charging network secured with TLS.

``evsim.open_world`` and ``evsim.World`` are :mod:`evsim.world`'s, loaded on first use (so importing a
sans-IO module such as ``evsim.ocpp.rpc`` does not load trio or OpenSSL).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from evsim.world import World, open_world


def __getattr__(name: str) -> Any:
    if name in ("open_world", "World"):
        import evsim.world

        return getattr(evsim.world, name)
    raise AttributeError(f"module 'evsim' has no attribute {name!r}")


__all__ = ["World", "__version__", "open_world"]
