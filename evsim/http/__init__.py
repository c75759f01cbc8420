"""HTTP/1.1 over any trio stream (plain or TLS), for the side services of a station: firmware downloads and log
uploads over HTTPS (OCPP L01, N01).

The wire format is h11's (the only module that imports it is :mod:`evsim.http.wire`); this package adds the
bounds a hostile peer needs (head and body sizes, slow heads and bodies, bytes past the end of a response) and
byte ranges (:mod:`evsim.http.ranges`), so an interrupted download resumes where it stopped. It sits beside the
WebSocket layer: it imports the network and TLS layers' errors, never a node. Connecting with endpoint
failover is :mod:`evsim.link.transfer`; the servers are :mod:`evsim.nodes.fileserver`.

Public API::

    HttpLimits(max_head_bytes, max_body_bytes, head_timeout_s, idle_timeout_s, body_timeout_s)
    HttpConnection(stream, "client" | "server", limits)
        server: await read_request() -> RequestHead | None;  await read_body(sink, declared=, max_bytes=)
                await send_response(status, headers, body);  await refuse(HttpError)
        client: await send_request(method, target, host=, headers=, body=);  await read_response() -> ResponseHead
                await read_body(...);  await expect_close()
    parse_range(value, size) -> ByteRange | None (RangeNotSatisfiable);  content_range(r);  parse_content_range(v)
"""

from __future__ import annotations

from evsim.http.ranges import ByteRange, RangeNotSatisfiable, content_range, parse_content_range, parse_range
from evsim.http.wire import HttpConnection, HttpLimits, RequestHead, ResponseHead

__all__ = [
    "ByteRange",
    "HttpConnection",
    "HttpLimits",
    "RangeNotSatisfiable",
    "RequestHead",
    "ResponseHead",
    "content_range",
    "parse_content_range",
    "parse_range",
]
