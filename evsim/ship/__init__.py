"""EEBus SHIP connection set-up, sans-IO: message encoding (EEBUS JSON) and the connection state machine.

No trio, no OpenSSL: TLS (self-signed certificates, trust by SKI: :mod:`evsim.tls.pairing`), the WebSocket
(subprotocol ``ship``) and timers belong to the nodes (:mod:`evsim.nodes.energy_manager`), which feed these
cores messages and times.

* :mod:`evsim.ship.messages`: the message-type octet, EEBUS JSON, typed messages, bounded decoding.
* :mod:`evsim.ship.connection`: :class:`~evsim.ship.connection.ShipConnection`, CMI, hello (pending, ready,
  prolongation), protocol handshake, PIN state ``none``, access methods, close.
"""

from evsim.ship.connection import (
    Closed,
    Connected,
    DataReceived,
    HelloChanged,
    ShipConfig,
    ShipConnection,
    ShipEvent,
    ShipStatistics,
)
from evsim.ship.messages import ShipMessageError, decode, encode

__all__ = [
    "Closed",
    "Connected",
    "DataReceived",
    "HelloChanged",
    "ShipConfig",
    "ShipConnection",
    "ShipEvent",
    "ShipMessageError",
    "ShipStatistics",
    "decode",
    "encode",
]
