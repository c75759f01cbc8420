"""Cost of one OCPP-J CALL/CALLRESULT round trip through evsim's OCPP layer, without any transport.

* ``core``: two sans-IO :class:`~evsim.ocpp.rpc.RpcConnection` objects hand frames to each other directly:
  encode, decode, schema validation of request and response, the one-outstanding bookkeeping.
* ``session``: two :class:`~evsim.ocpp.session.OcppSession` objects over trio memory channels (no TLS, no
  WebSocket): adds the driver's task wake-ups.

Both ends run in one process, so figures are CPU µs of both ends per round trip. Rows: ``(name, value,
unit)``. Run ``python -m bench.ocpp_core`` for a table. Compare ratios from one run only (performance.md).
"""

from __future__ import annotations

import time
from typing import Any

import trio

from evsim.ocpp.rpc import CallReceived, RpcConnection, default_id_factory
from evsim.ocpp.session import OcppSession

NOW = "2025-01-01T00:00:00.000Z"
BOOT: tuple[str, dict[str, Any], dict[str, Any]] = (
    "BootNotification",
    {"reason": "PowerUp", "chargingStation": {"model": "SimCharger", "vendorName": "evsim"}},
    {"currentTime": NOW, "interval": 300, "status": "Accepted"},
)
HEARTBEAT: tuple[str, dict[str, Any], dict[str, Any]] = ("Heartbeat", {}, {"currentTime": NOW})
ROUNDS = 20000
REPEATS = 3


def _core(message: tuple[str, dict[str, Any], dict[str, Any]], validate: bool) -> float:
    action, request, response = message
    a = RpcConnection(validate=validate, id_factory=default_id_factory("a"))
    b = RpcConnection(validate=validate, id_factory=default_id_factory("b"))

    def rounds(n: int) -> None:
        for _ in range(n):
            a.call(action, request, 0.0)
            for text in a.data_to_send():
                for event in b.receive(text, 0.0):
                    assert isinstance(event, CallReceived)
                    b.reply(event.message_id, response)
            for text in b.data_to_send():
                a.receive(text, 0.0)

    rounds(500)
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        rounds(ROUNDS)
        best = min(best, (time.perf_counter() - start) / ROUNDS)
    return best * 1e6


class _Pipe:
    def __init__(self, send: trio.MemorySendChannel[str], receive: trio.MemoryReceiveChannel[str]) -> None:
        self.send_text = send.send
        self.receive_text = receive.receive


async def _session() -> float:
    a_send, b_receive = trio.open_memory_channel[str](16)
    b_send, a_receive = trio.open_memory_channel[str](16)

    async def handler(action: str, payload: dict[str, Any]) -> dict[str, Any]:
        return HEARTBEAT[2]

    station = OcppSession(_Pipe(a_send, a_receive), RpcConnection(), handler)
    csms = OcppSession(_Pipe(b_send, b_receive), RpcConnection(), handler)
    best = float("inf")
    async with trio.open_nursery() as nursery:
        await nursery.start(station.run)
        await nursery.start(csms.run)
        for _ in range(500):
            await station.call("Heartbeat", {})
        for _ in range(REPEATS):
            start = time.perf_counter()
            for _ in range(ROUNDS // 4):
                await station.call("Heartbeat", {})
            best = min(best, (time.perf_counter() - start) / (ROUNDS // 4))
        nursery.cancel_scope.cancel()
    return best * 1e6


def run() -> list[tuple[str, float, str]]:
    """Measure; returns ``(name, µs per round trip, unit)`` rows."""
    return [
        ("ocpp core round trip, BootNotification, validation on", _core(BOOT, True), "us"),
        ("ocpp core round trip, BootNotification, validation off", _core(BOOT, False), "us"),
        ("ocpp core round trip, Heartbeat, validation on", _core(HEARTBEAT, True), "us"),
        ("ocpp session round trip, Heartbeat, memory channels", trio.run(_session), "us"),
    ]


if __name__ == "__main__":
    for name, value, unit in run():
        print(f"{name:60s} {value:8.1f} {unit}")
