"""The network between a world's nodes: partitions, link policies (latency, bandwidth), resets and stalls.

Partitions, policies and resets work on both networks with the same semantics (the in-memory network, and the
loopback TCP fault relay). Stalls run in the background: bytes between two selectors wait, the connections stay
open.

A stall needs a network that can hold bytes back without breaking a stream. The loopback TCP fault relay
(:class:`~evsim.net.relay.RelayedNetwork`) can: it keeps the pair's bytes until the stall ends. The in-memory
network cannot yet, so a stall there is refused (the scenario runner refuses it before the run starts).
"""

from __future__ import annotations

import attrs
import trio

from evsim.errors import ConfigError
from evsim.net.relay import RelayedNetwork
from evsim.world.base import Selector, WorldBase, _label


class WorldLinks(WorldBase):
    """The network operations of :class:`~evsim.world.World` (mixed into it)."""

    def partition(self, a: Selector, b: Selector) -> None:
        """Cut every link between the hosts of two selectors (open connections break)."""
        net = self._faults("partition")
        for x, y in self._pairs(a, b):
            net.partition(x, y)

    def heal(self, a: Selector, b: Selector) -> None:
        """Undo :meth:`partition`."""
        net = self._faults("heal")
        for x, y in self._pairs(a, b):
            net.heal(x, y)

    def set_link(
        self, a: Selector, b: Selector, *, latency: float | None = None, bytes_per_s: float | None = None
    ) -> None:
        """The policy of every link between two selectors: one-way ``latency`` (seconds) and the rate of each
        direction (``bytes_per_s``, 0: unlimited; the in-memory network only); a key left None keeps the link's
        current value."""
        net = self._faults("a link policy")
        for x, y in self._pairs(a, b):
            now = net.link_policy(x, y)
            net.set_link_policy(
                x,
                y,
                attrs.evolve(
                    now,
                    latency_s=now.latency_s if latency is None else latency,
                    bytes_per_s=now.bytes_per_s if bytes_per_s is None else bytes_per_s,
                ),
            )

    def reset_links(self, a: Selector, b: Selector) -> None:
        """Reset the connections between two selectors now (both ends see a broken stream)."""
        net = self._faults("a link reset")
        for x, y in self._pairs(a, b):
            net.partition(x, y)
            net.heal(x, y)

    def reset_links_every(self, a: Selector, b: Selector, every: float, *, label: str | None = None) -> None:
        """Reset the connections between two selectors every ``every`` seconds (a background task; the
        hosts are those the selectors cover now)."""
        net = self._faults("a link reset")
        between = label or f"{_label(a)}<->{_label(b)}"
        pairs = self._pairs(a, b)

        async def resets() -> None:
            while True:
                await trio.sleep(every)
                for x, y in pairs:
                    net.partition(x, y)
                    net.heal(x, y)
                self.recorder.emit("runner", "link_reset", between=between)

        self.nursery.start_soon(resets)

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
