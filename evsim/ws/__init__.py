"""WebSocket over any trio Stream (our own loop on wsproto, with permessage-deflate), Basic auth, paths."""

from evsim.ws.auth import basic_auth_header, parse_basic_auth
from evsim.ws.connection import WebSocket, WsStatistics
from evsim.ws.handshake import Accept, Reject, UpgradeRequest, ws_client, ws_server
from evsim.ws.paths import station_id_from_path, station_path, valid_identity

__all__ = [
    "Accept",
    "Reject",
    "UpgradeRequest",
    "WebSocket",
    "WsStatistics",
    "basic_auth_header",
    "parse_basic_auth",
    "station_id_from_path",
    "station_path",
    "valid_identity",
    "ws_client",
    "ws_server",
]
