"""A fleet's connect window: how many of its stations may be setting up a connection at once.

A boot storm in which every station connects at the same instant makes the CSMS start thousands of TLS handshakes
together; each then gets a thin slice of the CPU, and the ones that started first miss the handshake timeout
although the server is busy the whole time. A real fleet does not boot at one instant, and a load tool should not
make the server's CPU scheduling decide who fails. The window (a :class:`trio.CapacityLimiter` shared by the
stations of one process) admits a station to the set-up phase (TCP connect, TLS handshake, WebSocket upgrade)
only while fewer than its size are in that phase: the storm reaches the CSMS as a steady stream at the rate the
CSMS completes handshakes, whatever that rate is, and each handshake takes only about window / rate seconds.

:class:`SetupHold` is one connection's place: taken before the TCP connect, given back once the WebSocket is up or
the set-up failed.
"""

from __future__ import annotations

import trio

from evsim.net.base import Network

__all__ = ["DEFAULT_CONNECT_WINDOW", "SetupHold"]

DEFAULT_CONNECT_WINDOW = 64
"""``evsim stations --connect-window`` default: enough connections in set-up to keep a CSMS's handshake pipeline
full on loopback (a TLS handshake takes a few ms of CPU, so 64 in flight wait a fraction of a second each), few
enough that none comes near the 10 s handshake timeout."""


class SetupHold:
    """One connection's place in a connect window (no window: a no-op)."""

    __slots__ = ("_place", "_window", "stream")

    def __init__(self, window: trio.CapacityLimiter | None, place: object, stream: trio.abc.Stream) -> None:
        self._window = window
        self._place = place  # the borrower of the window's token (any task may give it back)
        self.stream = stream

    @classmethod
    async def connect(
        cls, network: Network, host: str, port: int, source: str, window: trio.CapacityLimiter | None
    ) -> SetupHold:
        """Wait for a place in ``window``, then connect; the place is given back if the connect fails."""
        place = object()
        if window is not None:
            await window.acquire_on_behalf_of(place)
        try:
            stream = await network.connect(host, port, source=source)
        except BaseException:
            if window is not None:
                window.release_on_behalf_of(place)
            raise
        return cls(window, place, stream)

    def release(self) -> None:
        """Give the place back (idempotent)."""
        window, self._window = self._window, None
        if window is not None:
            window.release_on_behalf_of(self._place)
