"""One SHIP connection driven over a WebSocket: the trio side of :class:`evsim.ship.ShipConnection`.

The sans-IO core decides everything; :class:`ShipSession` only moves its messages to and from the WebSocket,
sleeps until its next deadline, and hands its events to a callback. Both ends use it: the energy manager for
each accepted connection (role ``server``), a station's energy-manager link (role ``client``).

:meth:`ShipSession.close` and :meth:`ShipSession.deny` may be called from any task (an operator action, a
node stopping): they change the core and wake the session's task, which sends what the core queued. The
session ends when the core is ``closed``; the WebSocket is then closed (1000) and :meth:`ShipSession.run`
returns the core's :class:`~evsim.ship.Closed` event. A cancelled session (its node stops) drops the
connection at once instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import trio

from evsim.errors import TransportError
from evsim.ship import Closed, ShipConnection, ShipEvent
from evsim.tls import TlsProfile
from evsim.tls.suites import DEFAULT_TLS13_SUITES
from evsim.ws import WebSocket

__all__ = ["SHIP_PATH", "SHIP_SUBPROTOCOL", "ShipSession", "ship_profile"]

SHIP_SUBPROTOCOL = "ship"
"""The WebSocket subprotocol SHIP requires (SHIP 10.2; ship-go closes a connection without it)."""
SHIP_PATH = "/ship/"
"""The request path SHIP devices announce in their mDNS ``path`` TXT entry."""


SHIP_SUITES_12 = ("TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256")
"""TLS 1.2 suites: SHIP 9.1's required CBC-SHA256 suite and the optional GCM one (ship-go's comments,
``protocol-digest.md`` §8). The CCM_8 suite is left out: OpenSSL 3 puts it below security level 1."""


def ship_profile(**changes: object) -> TlsProfile:
    """SHIP's TLS: 1.2 at least (SHIP 9), ECDHE-ECDSA suites for 1.2, ECDSA P-256 with SHA-256 signatures
    (the devices' self-signed P-256 certificates), plus ``changes``."""
    settings: dict[str, object] = {
        "versions": ("1.3", "1.2"),
        "cipher_suites": {"1.3": DEFAULT_TLS13_SUITES, "1.2": SHIP_SUITES_12},
        "signature_algorithms": ("ecdsa_secp256r1_sha256",),
    }
    settings.update(changes)
    return TlsProfile(**settings)  # type: ignore[arg-type]


class ShipSession:
    """Runs one :class:`~evsim.ship.ShipConnection` over one open WebSocket.

    Args:
        ws: the WebSocket (subprotocol ``ship`` negotiated).
        conn: the core, fresh (``cmi``).
        on_event: called with every core event, in order, from the session's task.
    """

    def __init__(self, ws: WebSocket, conn: ShipConnection, on_event: Callable[[ShipEvent], None]) -> None:
        self.ws = ws
        self.conn = conn
        self._on_event = on_event
        self._wake: trio.CancelScope | None = None

    def close(self, reason: str | None = None) -> None:
        """Announce an orderly close (SHIP ``connectionClose``), or end a set-up in progress."""
        self.conn.close(trio.current_time(), reason)
        self._kick()

    def trust(self) -> None:
        """The local user trusts the peer now: hello ``ready`` (if the set-up still waits for it)."""
        self.conn.trust(trio.current_time())
        self._kick()

    def deny(self, detail: str) -> None:
        """The local user no longer trusts the peer: end the connection (hello ``aborted`` when in time)."""
        self.conn.deny(trio.current_time(), detail)
        self._kick()

    def send_data(self, payload: object) -> None:
        """Queue one SHIP ``data`` message (connected only)."""
        self.conn.send_data(payload)
        self._kick()

    def _kick(self) -> None:
        if self._wake is not None:
            self._wake.cancel()

    async def run(self) -> Closed:
        """Drive the core until it is closed; returns its end (reason, by, phase)."""
        conn = self.conn
        try:
            while True:
                try:
                    for data in conn.data_to_send():
                        await self.ws.send_bytes(data)
                except TransportError as exc:
                    conn.transport_lost(f"send failed: {exc}")
                for event in conn.events():
                    self._on_event(event)
                if conn.state == "closed":
                    break
                deadline = conn.get_timer()
                with trio.CancelScope(deadline=math.inf if deadline is None else deadline) as scope:
                    self._wake = scope
                    try:
                        message = await self.ws.receive()
                    except TransportError as exc:
                        conn.transport_lost(str(exc))
                        continue
                    finally:
                        self._wake = None
                    if isinstance(message, str):
                        conn.receive_text()
                    else:
                        conn.receive(message, trio.current_time())
                if scope.cancelled_caught:
                    conn.handle_timer(trio.current_time())
        except BaseException:  # cancelled (the node stops) or failing: no closing handshake to wait for
            with trio.CancelScope(shield=True):
                await self.ws.abort("the SHIP session ended")
            raise
        await self.ws.aclose()  # the core ended the connection: close frame, bounded by the close timeout
        assert conn.closed_event is not None  # the loop ends only when the core is closed
        return conn.closed_event
