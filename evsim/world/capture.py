"""A world's pcapng capture: the in-memory network's connections plus every handshake's TLS secrets.

:func:`open_capture` opens the file (:class:`~evsim.net.capture.Capture`, timestamps on the simulation's wall
clock) and routes the TLS layer's key log lines into it (:func:`~evsim.tls.capture_keys`) for as long as the
world is open; the world attaches it to its in-memory network before any node starts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from evsim.clock import SimClock
from evsim.errors import ConfigError
from evsim.net.capture import Capture
from evsim.tls import capture_keys
from evsim.world.base import NetworkKind

__all__ = ["open_capture"]


@contextlib.contextmanager
def open_capture(
    pcap: str | Path | None, *, network: NetworkKind, clock: SimClock
) -> Iterator[Capture | None]:
    """Capture to ``pcap`` while the block runs (None: yield None and capture nothing).

    Raises:
        ConfigError: ``network`` is loopback TCP (a real capture there: tcpdump on ``lo`` and a keylog), or
            another capture is active in this process.
    """
    if pcap is None:
        yield None
        return
    if network != "memory":
        raise ConfigError(
            "a pcap capture needs the in-memory network",
            path="network",
            value=network,
            fix="capture a loopback TCP run with tcpdump -i lo and the TLS profile's keylog",
        )
    capture = Capture(pcap, epoch=clock.start_utc.timestamp() - clock.t0, application="evsim")
    try:
        with capture_keys(capture.add_secrets):
            yield capture
    finally:
        capture.close()
