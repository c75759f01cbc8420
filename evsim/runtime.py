"""Process-wide runtime settings for evsim's entry points (CLI commands, scenario runs, benchmarks)."""

from __future__ import annotations

import ctypes
import gc
import math
import os
import time
from collections.abc import Callable

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


TRIM_MIN_INTERVAL_S = 1.0
"""Seconds (real) between two :func:`give_back_memory` trims at least."""
TRIM_COST_SHARE = 0.02
"""At most this share of the process's time goes to trimming: after a trim that took ``d`` seconds the next
one waits ``d / TRIM_COST_SHARE`` seconds (a trim walks the whole heap: ≈5 ms for 300 stations)."""

_trim: Callable[[int], int] | None = None
_trim_resolved = False
_next_trim = 0.0
_retry_claimed = False


def _malloc_trim() -> Callable[[int], int] | None:
    global _trim, _trim_resolved
    if not _trim_resolved:
        _trim_resolved = True
        try:
            _trim = ctypes.CDLL(None).malloc_trim
        except (OSError, AttributeError):  # not glibc: nothing to call
            _trim = None
    return _trim


def give_back_memory() -> bool | None:
    """Return the C heap's free pages to the operating system (glibc's ``malloc_trim(0)``), rate-limited.

    glibc keeps memory that was freed in the middle of its heap (a released compressor between live
    objects) in the process; only a trim hands those pages back, so the resident set shrinks when idle links
    release their state (``evsim.ocpp.session``'s idle watch calls this after a release). At most once per
    :data:`TRIM_MIN_INTERVAL_S`, and at most :data:`TRIM_COST_SHARE` of the time.

    Returns:
        True when a trim ran (or cannot run here: not glibc); False when the last one was too recent and the
        caller is the one to try again later (one caller at a time is told so: the others' frees are trimmed
        by that retry); None when too recent and another caller retries.
    """
    global _next_trim, _retry_claimed
    now = time.monotonic()
    if now < _next_trim:
        if _retry_claimed:
            return None
        _retry_claimed = True
        return False
    _retry_claimed = False
    trim = _malloc_trim()
    if trim is None:
        return True
    trim(0)
    took = time.monotonic() - now
    _next_trim = now + max(TRIM_MIN_INTERVAL_S, took / TRIM_COST_SHARE)
    return True


_CONFORMS: dict[tuple[type, type], bool] = {}


def conforms(obj: object, protocol: type) -> bool:
    """``isinstance(obj, protocol)`` for a runtime-checkable protocol of methods, answered once per class.

    Python 3.11's protocol ``isinstance`` walks the protocol's members on every call (≈10-20 µs, measured in a
    boot storm's profile at eight checks per station); the protocols here consist of methods, which a class
    has or has not, so the answer for one (class, protocol) pair holds for all its instances.
    """
    key = (type(obj), protocol)
    known = _CONFORMS.get(key)
    if known is None:
        known = _CONFORMS[key] = isinstance(obj, protocol)
    return known


def schedstat(pid: int) -> tuple[float, float]:
    """Seconds process ``pid``'s main thread has run and has waited runnable for a CPU (Linux
    ``/proc/PID/schedstat``; NaN elsewhere): the wait is what other processes on the machine cost it."""
    try:
        with open(f"/proc/{pid}/schedstat", encoding="ascii") as fh:
            run_ns, wait_ns = fh.read().split()[:2]
    except (OSError, ValueError):
        return math.nan, math.nan
    return int(run_ns) / 1e9, int(wait_ns) / 1e9


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid`` so far (Linux /proc; NaN elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
