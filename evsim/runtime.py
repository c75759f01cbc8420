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


def raise_open_file_limit() -> int | None:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit (capped at 2**20 when unlimited); the new soft limit.

    Every loopback connection is a file descriptor (two when stations run in the same process), and the default
    soft limit (often 1024) is below what a 1,000-station fleet needs; listeners derive their connection cap
    from it (:mod:`evsim.nodes.acceptor`). None where there is no such limit (not Unix).
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - not Unix
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(hard, 1 << 20) if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft
        return target
    return soft
