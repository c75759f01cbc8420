"""A world's pcapng capture: the in-memory network's connections plus every handshake's TLS secrets.

:func:`open_capture` opens the file (:class:`~evsim.net.capture.Capture`, timestamps on the simulation's wall
clock) and routes the TLS layer's key log lines into it (:func:`~evsim.tls.capture_keys`) for as long as the
world is open; the world attaches it to its network (in memory, or the client ends of loopback TCP) before any
node starts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from evsim.clock import SimClock
from evsim.net.capture import Capture
from evsim.tls import capture_keys

__all__ = ["open_capture"]


@contextlib.contextmanager
def open_capture(pcap: str | Path | None, *, clock: SimClock) -> Iterator[Capture | None]:
    """Capture to ``pcap`` while the block runs (None: yield None and capture nothing).

    Raises:
        ConfigError: the file cannot be written, or another capture is active in this process.
    """
    if pcap is None:
        yield None
        return
    capture = Capture(pcap, epoch=clock.start_utc.timestamp() - clock.t0, application="evsim")
    try:
        with capture_keys(capture.add_secrets):
            yield capture
    finally:
        capture.close()
