"""Where a heartbeat round trip's CPU time goes: the fleet of ``bench.evsim_peer``, profiled in its steady state.

    python -m bench.profile_msg [--n 200] [--rtt-seconds 5] [--top 25]

One process holds the CSMS and N stations over loopback TCP + TLS 1.3, as in ``make bench``; only the phase
where every station sends Heartbeats back to back is profiled (cProfile, which inflates Python calls against
C calls: read the shares, not the microseconds). Prints the share of each layer (own time of the functions
in it, C calls counted with the module that made them) and the costliest functions.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import gc
import pstats
import tempfile
from collections import Counter

import trio

from bench.evsim_peer import _run as run_fleet
from evsim.clock import real_utcnow
from evsim.nodes.acceptor import DEFAULT_MAX_HANDSHAKES
from evsim.nodes.setup_window import DEFAULT_CONNECT_WINDOW
from evsim.pki import init_dev_pki
from evsim.runtime import GC_THRESHOLD

# (path fragment, layer): the first match names the layer of a function's own time
LAYERS = (
    ("evsim/ocpp/", "OCPP (framing, RPC core, validation, session)"),
    ("evsim/ws/", "WebSocket (frames, deflate)"),
    ("evsim/tls/", "TLS stream (OpenSSL engine, BIOs)"),
    ("evsim/net/", "TCP stream (syscalls)"),
    ("evsim/nodes/", "nodes (CSMS and station logic)"),
    ("evsim/", "evsim, other (clock, recorder)"),
    ("bench/", "benchmark loop"),
    ("trio/", "trio (scheduler, epoll, checkpoints)"),
    ("outcome/", "trio (scheduler, epoll, checkpoints)"),
)


def _layer(filename: str, callers: dict[tuple[str, int, str], tuple[int, int, float, float]]) -> str:
    if filename == "~" and callers:  # a C function: the layer of the caller that spent most time in it
        filename = max(callers.items(), key=lambda kv: kv[1][2])[0][0]
    for fragment, layer in LAYERS:
        if fragment in filename:
            return layer
    return "other (stdlib, attrs, wsproto)"


def profile(n: int, rtt_seconds: float) -> tuple[pstats.Stats, int]:
    """Run the fleet and profile its steady state; returns the statistics and the round trips made."""
    prof = cProfile.Profile()

    def steady(on: bool) -> None:
        if on:
            prof.enable()
        else:
            prof.disable()

    with tempfile.TemporaryDirectory(prefix="evsim-profile-") as tmp:
        pki = init_dev_pki(tmp, host="localhost", now=real_utcnow())
        gc.set_threshold(GC_THRESHOLD[0], 20, 100)
        result = trio.run(
            functools.partial(run_fleet, steady=steady),
            n,
            rtt_seconds,
            pki,
            True,
            (DEFAULT_CONNECT_WINDOW, DEFAULT_MAX_HANDSHAKES),
            None,
        )
    round_trips = round(result.rtt_per_s * rtt_seconds)
    return pstats.Stats(prof), round_trips


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--rtt-seconds", type=float, default=5.0)
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args(argv)
    stats, round_trips = profile(args.n, args.rtt_seconds)
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in entries.values()) or 1.0
    layers: Counter[str] = Counter()
    for (filename, _line, _name), (_cc, _nc, tottime, _ct, callers) in entries.items():
        layers[_layer(filename, callers)] += tottime
    print(f"steady state of {args.n} stations, about {round_trips} round trips profiled (cProfile)")
    for layer, seconds in layers.most_common():
        print(f"{100 * seconds / total:5.1f} %  {layer}")
    print()
    top = sorted(entries.items(), key=lambda kv: -kv[1][2])[: args.top]
    for (filename, line, name), (_cc, _nc, tottime, _ct, _callers) in top:
        where = filename.split("site-packages/")[-1].split("/evsim/")[-1]
        print(f"{100 * tottime / total:5.1f} %  {name}  {where}:{line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
