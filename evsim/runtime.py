"""Process-wide runtime settings for evsim's entry points (CLI commands, scenario runs, benchmarks)."""

from __future__ import annotations

import gc

#: Generation-0 threshold. A fleet allocates many long-lived objects (TLS, WebSocket and OCPP state per
#: station); with CPython's default (700) a 1,000-station storm triggers repeated full collections that walk all of
#: them. Measured at N=1000 over loopback TLS: +38 % round trips/s and -25 % boot time (bench/evsim_peer.py).
GC_THRESHOLD = (50_000, 20, 100)


def tune_gc() -> None:
    """Raise the collector's thresholds; called once by every long-running entry point."""
    gc.set_threshold(*GC_THRESHOLD)
