"""Link stalls a world runs in the background: bytes between two selectors wait, the connections stay open.

A stall needs a network that can hold bytes back without breaking a stream. The loopback TCP fault relay
(:class:`~evsim.net.relay.RelayedNetwork`) can: it keeps the pair's bytes until the stall ends. The in-memory
network cannot yet, so a stall there is refused (the scenario runner refuses it before the run starts).
"""

from __future__ import annotations

import trio

from evsim.errors import ConfigError
from evsim.net.relay import RelayedNetwork
from evsim.world.base import Selector, WorldBase, _label


class WorldStalls(WorldBase):
    """:meth:`stall_links_every`, mixed into :class:`~evsim.world.World`."""

    def stall_links_every(
        self, a: Selector, b: Selector, every: float, duration: float, *, label: str | None = None
    ) -> None:
        """Stall the links between two selectors for ``duration`` seconds every ``every`` seconds, from now (a
        background task; the hosts are those the selectors cover now). Each stall is a ``link_stall`` event.

        Raises:
            ConfigError: the world's network cannot hold bytes back (only the TCP fault relay can), or
                ``duration`` is not shorter than ``every``.
        """
        net = self.faults
        if not isinstance(net, RelayedNetwork):
            raise ConfigError(
                "a link stall needs the loopback TCP fault relay (the in-memory network cannot hold bytes back "
                "without breaking the stream yet)",
                path="network",
                fix='open the world with network="tcp" and fault_relay=True',
            )
        if not 0 <= duration < every:
            raise ConfigError(
                "a stall must be shorter than its period (the link would never move)",
                value=(every, duration),
                fix="make duration shorter than every",
            )
        between = label or f"{_label(a)}<->{_label(b)}"
        pairs = self._pairs(a, b)

        async def stalls() -> None:
            while True:
                await trio.sleep(every)
                until = trio.current_time() + duration
                for x, y in pairs:
                    net.hold(x, y, until)
                self.recorder.emit("runner", "link_stall", between=between, seconds=duration)

        self.nursery.start_soon(stalls)
