"""evsim: a Trio-based, structured-concurrency simulator of an EV charging network secured with TLS.

``evsim.open_world`` and ``evsim.World`` are :mod:`evsim.world`'s, loaded on first use (so importing a
sans-IO module such as ``evsim.ocpp.rpc`` does not load trio or OpenSSL).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

DEV_PASSWORD = "evsim-dev-password-0001"  # >= 16 chars (OCPP A00.FR.205 passwordString minimum)
"""The default Basic-auth password of ``evsim csms`` and ``evsim stations``: public, so both warn when they use it."""

if TYPE_CHECKING:
    from evsim.world import World, open_world


def __getattr__(name: str) -> Any:
    if name in ("open_world", "World"):
        import evsim.world

        return getattr(evsim.world, name)
    raise AttributeError(f"module 'evsim' has no attribute {name!r}")


__all__ = ["DEV_PASSWORD", "World", "__version__", "open_world"]
