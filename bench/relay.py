"""Benchmark: what the loopback TCP fault relay (``evsim/net/relay.py``) adds to a connect and to a round trip.

A TCP run with network faults connects its nodes through the relay; runs without faults connect directly. This
measures the price of that hop on this machine, in one process and one ``trio.run``: an echo server on loopback,
then ``--n`` connects and ``--n`` round trips of a ``--size``-byte message (an OCPP message's order of size),
direct and through the relay, alternating per round so a slow phase of a shared machine hits both. Figures are
medians of the rounds (wall µs per operation, and CPU µs of the whole process per operation). The relay's route
port is opened before timing starts (a route is opened once per source and destination, then kept).

Run: ``python -m bench relay`` or ``python -m bench.relay [--n 500] [--size 300] [--rounds 5] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import trio

from bench.common import bench_table
from evsim.net.relay import FaultRelay, RelayedNetwork
from evsim.net.tcp import TcpNetwork


async def echo(stream: trio.abc.Stream) -> None:
    """Echo until the end of stream, then close (a broken stream just ends)."""
    try:
        async with stream:
            while data := await stream.receive_some():
                await stream.send_all(data)
    except trio.BrokenResourceError:
        pass


async def _connects(net: TcpNetwork | RelayedNetwork, port: int, n: int) -> None:
    for _ in range(n):
        stream = await net.connect("127.0.0.1", port, source="bench")
        await stream.aclose()


async def _round_trips(net: TcpNetwork | RelayedNetwork, port: int, n: int, size: int) -> None:
    message = b"x" * size
    async with await net.connect("127.0.0.1", port, source="bench") as stream:
        for _ in range(n):
            await stream.send_all(message)
            got = 0
            while got < size:
                got += len(await stream.receive_some())


def run(n: int, size: int, rounds: int) -> dict[str, dict[str, float]]:
    """Median wall and CPU µs per connect and per round trip, direct and relayed."""
    samples: dict[str, list[tuple[float, float]]] = {}

    async def main() -> None:
        tcp = TcpNetwork()
        relay = FaultRelay(tcp)
        relayed = RelayedNetwork(relay)
        async with trio.open_nursery() as nursery:
            await nursery.start(relay.run)
            listener = await tcp.listen("127.0.0.1", 0)
            port = listener.address[1]
            nursery.start_soon(trio.serve_listeners, echo, [listener])
            await _connects(relayed, port, 1)  # the route's port, opened once per pair
            for _ in range(rounds):
                for label, net in (("direct", tcp), ("relayed", relayed)):
                    for what in ("connect", "round trip"):
                        wall, cpu = time.perf_counter(), time.process_time()
                        if what == "connect":
                            await _connects(net, port, n)
                        else:
                            await _round_trips(net, port, n, size)
                        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                        samples.setdefault(f"{what} {label}", []).append((wall / n * 1e6, cpu / n * 1e6))
            nursery.cancel_scope.cancel()

    trio.run(main)
    return {
        key: {
            "wall_us": statistics.median(w for w, _ in values),
            "cpu_us": statistics.median(c for _, c in values),
        }
        for key, values in samples.items()
    }


def render(result: dict[str, dict[str, float]], n: int, size: int) -> str:
    rows = []
    for what in ("connect", "round trip"):
        direct, relayed = result[f"{what} direct"], result[f"{what} relayed"]
        rows.append(
            [
                what,
                f"{direct['wall_us']:.0f}",
                f"{relayed['wall_us']:.0f}",
                f"{relayed['wall_us'] / direct['wall_us']:.2f}",
                f"{direct['cpu_us']:.0f}",
                f"{relayed['cpu_us']:.0f}",
            ]
        )
    return bench_table(
        "relay",
        ["operation", "direct µs", "relayed µs", "ratio", "direct CPU µs", "relayed CPU µs"],
        rows,
        title=f"Fault relay on loopback TCP ({n} operations per round, {size}-byte messages; medians)",
        raw=result,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=500, help="connects and round trips per round")
    p.add_argument("--size", type=int, default=300, help="bytes per message")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    result = run(args.n, args.size, args.rounds)
    print(json.dumps(result) if args.json else render(result, args.n, args.size))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
