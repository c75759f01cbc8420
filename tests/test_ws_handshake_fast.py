"""evsim.ws.handshake: the server's 101 answer written without an h11 event is wsproto's, byte for byte.

Each case feeds one client request to two wsproto servers: one answers through ``send(AcceptConnection)``,
the other through :func:`evsim.ws.handshake._switching_protocols`; the bytes, the negotiated extension
state and the frame protocol's behaviour must be the same. What the fast path does not vouch for (extra
headers) must be left to wsproto; what wsproto refuses, it refuses too.
"""

from __future__ import annotations

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection
from wsproto.events import AcceptConnection, Request, TextMessage

from evsim.ws.deflate import BoundedDeflate
from evsim.ws.handshake import Accept, _switching_protocols

MAX = 65536


def _request(raw: bytes) -> tuple[WSConnection, Request]:
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(raw)
    event = next(iter(server.events()))
    assert isinstance(event, Request)
    return server, event


def _raw(extensions: str | None, protocols: str | None, key: str = "dGhlIHNhbXBsZSBub25jZQ==") -> bytes:
    lines = [
        "GET /ocpp/CS-1 HTTP/1.1",
        "Host: csms.evsim.test:8443",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if protocols is not None:
        lines.append(f"Sec-WebSocket-Protocol: {protocols}")
    if extensions is not None:
        lines.append(f"Sec-WebSocket-Extensions: {extensions}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


CASES = [
    (None, "ocpp2.0.1", "ocpp2.0.1", True),
    ("permessage-deflate; client_max_window_bits", "ocpp2.1, ocpp2.0.1", "ocpp2.0.1", True),
    ("permessage-deflate; client_max_window_bits=15; server_max_window_bits=15", "ocpp2.1", "ocpp2.1", True),
    ("permessage-deflate; server_no_context_takeover; client_no_context_takeover", "ocpp1.6", None, True),
    ("x-other, permessage-deflate", "ocpp2.0.1", "ocpp2.0.1", True),
    ("permessage-deflate", None, None, True),
    ("permessage-deflate; client_max_window_bits", "ocpp2.0.1", "ocpp2.0.1", False),
    ("x-unknown; a=1", "ocpp2.0.1", "ocpp2.0.1", True),
]


@pytest.mark.parametrize(("extensions", "protocols", "chosen", "compression"), CASES)
def test_the_fast_101_is_wsprotos(
    extensions: str | None, protocols: str | None, chosen: str | None, compression: bool
) -> None:
    raw = _raw(extensions, protocols)
    slow_server, _ = _request(raw)
    _, fast_event = _request(raw)
    slow_ext = BoundedDeflate(MAX) if compression else None
    fast_ext = BoundedDeflate(MAX) if compression else None
    expected = slow_server.send(
        AcceptConnection(subprotocol=chosen, extensions=[slow_ext] if slow_ext is not None else [])
    )
    answer = _switching_protocols(fast_event, Accept(subprotocol=chosen), fast_ext)
    assert answer is not None
    data, connection = answer
    assert data == expected
    if slow_ext is not None and fast_ext is not None:
        for name in _NEGOTIATED:
            assert getattr(fast_ext, name) == getattr(slow_ext, name), name
        assert fast_ext.enabled() == slow_ext.enabled()
    # the frame protocols behave alike: the same message goes out as the same frames
    slow_conn = slow_server.connection
    assert isinstance(slow_conn, Connection) and isinstance(connection, Connection)
    for text in ("x" * 300, '{"status": "Accepted"}'):
        assert connection.send(TextMessage(data=text)) == slow_conn.send(TextMessage(data=text))


_NEGOTIATED = (
    "client_max_window_bits",
    "server_max_window_bits",
    "client_no_context_takeover",
    "server_no_context_takeover",
)


def test_extra_headers_are_left_to_wsproto() -> None:
    _, event = _request(_raw(None, "ocpp2.0.1"))
    assert _switching_protocols(event, Accept("ocpp2.0.1", extra_headers=(("X-A", "b"),)), None) is None


def test_a_malformed_window_offer_raises_as_from_wsproto() -> None:
    _, event = _request(_raw("permessage-deflate; client_max_window_bits=x", "ocpp2.0.1"))
    with pytest.raises(ValueError, match="invalid literal"):
        _switching_protocols(event, Accept("ocpp2.0.1"), BoundedDeflate(MAX))
