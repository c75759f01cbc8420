"""The WebSocket opening handshake (RFC 6455 §4) over any ``trio.abc.Stream``, on wsproto and h11.

:func:`ws_client` sends the upgrade request and reads the server's answer; :func:`ws_server` reads a
client's request, lets the caller decide (:class:`Accept` or :class:`Reject`) and answers. Both hand the
stream to a :class:`~evsim.ws.connection.WebSocket` when the upgrade succeeds.

The handshake is bounded by ``open_timeout``; on any failure the stream is closed. Rejections and
malformed requests get a short ``text/plain`` HTTP response written here (status line, Content-Length,
``Connection: close``); the client keeps at most 1 KiB of a rejection's body for
:class:`~evsim.errors.UpgradeRejected`. Everything wsproto and h11 raise is translated into
:mod:`evsim.errors` here.

Bytes that arrive in the same reads as the request or the response are frames the peer sent early. They
go to the :class:`~evsim.ws.connection.WebSocket`, whose frame reader (:mod:`evsim.ws.frames`) parses them
from their first byte: a server's wsproto drops them, and a client's wsproto has already parsed them, so
the client gets a fresh frame parser (:func:`_restart_frames`). Only a client whose handshake reads passed
64 KiB leaves every frame to wsproto.
"""

from __future__ import annotations

import contextlib
import http
import math
import types
from collections.abc import Callable, Mapping, Sequence

import attrs
import h11
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection
from wsproto.events import AcceptConnection, RejectConnection, RejectData, Request
from wsproto.extensions import Extension
from wsproto.utilities import ProtocolError

from evsim.errors import (
    BrokenTransport,
    ClosedTransport,
    TransportError,
    UpgradeFailed,
    UpgradeRejected,
    WebSocketError,
)
from evsim.ws.connection import (
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_SEND_TIMEOUT,
    RECEIVE_SIZE,
    WebSocket,
)
from evsim.ws.deflate import BoundedDeflate

__all__ = [
    "DEFAULT_OPEN_TIMEOUT",
    "Accept",
    "Reject",
    "UpgradeRequest",
    "ws_client",
    "ws_server",
]

DEFAULT_OPEN_TIMEOUT = 30.0
"""Seconds for the opening handshake; OCPP-J suggests 30 s message timeouts (protocol-digest §1.5)."""


_MAX_REJECT_BODY = 1024  # bytes of a rejection body kept for UpgradeRejected.reason
# what wsproto and h11 raise on bad input (UnicodeError is a ValueError)
_ERRORS = (ProtocolError, h11.ProtocolError, ValueError)


def _frozen_headers(value: Mapping[str, str]) -> Mapping[str, str]:
    return types.MappingProxyType(dict(value))


@attrs.frozen
class UpgradeRequest:
    """What the server knows about a client's upgrade request when it decides.

    Attributes:
        path: the request target, still percent-encoded (``/ocpp/RDAM%7C123``).
        host: the ``Host`` header.
        subprotocols: ``Sec-WebSocket-Protocol`` offers in the client's order of preference.
        headers: the other request headers, lower-case names; repeated headers joined with ``, ``.
    """

    path: str
    host: str
    subprotocols: tuple[str, ...]
    headers: Mapping[str, str] = attrs.field(converter=_frozen_headers, factory=dict)


@attrs.frozen
class Accept:
    """Accept the upgrade.

    Attributes:
        subprotocol: one of the client's offers, or None to complete the handshake without one
            (what OCPP-J §3.2 asks when no version matches; the CSMS then closes).
        extra_headers: additional response headers.
    """

    subprotocol: str | None = None
    extra_headers: tuple[tuple[str, str], ...] = ()


def _check_status(_instance: object, _attribute: object, value: int) -> None:
    if not 300 <= value <= 599:
        raise ValueError(f"a rejection needs an HTTP status in 300..599, got {value}")


@attrs.frozen
class Reject:
    """Refuse the upgrade with an HTTP status (401 bad credentials, 404 unknown identity, ...).

    Attributes:
        status: HTTP status code, 300..599.
        reason: short text for the response body (UTF-8, ``text/plain``).
        headers: additional response headers; a 401 gets ``WWW-Authenticate: Basic`` if none is given.
    """

    status: int = attrs.field(validator=_check_status)
    reason: str = ""
    headers: tuple[tuple[str, str], ...] = ()


async def _receive(stream: trio.abc.Stream) -> bytes:
    try:
        return bytes(await stream.receive_some(RECEIVE_SIZE))
    except (trio.BrokenResourceError, BrokenTransport) as exc:
        raise BrokenTransport(f"transport broken during the WebSocket handshake: {exc}") from exc
    except trio.ClosedResourceError as exc:
        raise ClosedTransport("the stream was closed during the WebSocket handshake") from exc


async def _send(stream: trio.abc.Stream, data: bytes) -> None:
    try:
        await stream.send_all(data)
    except (trio.BrokenResourceError, BrokenTransport) as exc:
        raise BrokenTransport(f"transport broken during the WebSocket handshake: {exc}") from exc
    except trio.ClosedResourceError as exc:
        raise ClosedTransport("the stream was closed during the WebSocket handshake") from exc


def _http_response(status: int, body: str, headers: Sequence[tuple[str, str]] = ()) -> bytes:
    """A complete, short HTTP/1.1 response that ends the connection."""
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    payload = body.encode("utf-8")
    lines = [f"HTTP/1.1 {status} {phrase}"]
    for name, value in headers:
        if not name or any(c in name for c in " \t\r\n:") or "\r" in value or "\n" in value:
            raise ValueError(f"bad response header {name!r}: {value!r}")
        lines.append(f"{name}: {value}")
    lines += [
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(payload)}",
        "Connection: close",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


async def ws_client(
    stream: trio.abc.Stream,
    *,
    host: str,
    path: str,
    subprotocols: Sequence[str],
    headers: Sequence[tuple[str, str]] = (),
    compression: bool = True,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    open_timeout: float | None = DEFAULT_OPEN_TIMEOUT,
    close_timeout: float | None = DEFAULT_CLOSE_TIMEOUT,
    send_timeout: float | None = DEFAULT_SEND_TIMEOUT,
) -> WebSocket:
    """Open a WebSocket as the client over a connected ``stream`` (TLS already done, if any).

    Args:
        stream: the transport; closed by this function if the handshake fails.
        host: the ``Host`` header (``csms.evsim.test:8443``).
        path: the request target, percent-encoded (see :func:`evsim.ws.paths.station_path`).
        subprotocols: offers in order of preference (``("ocpp2.1", "ocpp2.0.1")``).
        headers: extra request headers, e.g. :func:`evsim.ws.auth.basic_auth_header`.
        compression: offer permessage-deflate.
        max_message_size: largest message accepted, in bytes; larger ones close with 1009.
        open_timeout: seconds (trio time) for the handshake; None waits forever.
        close_timeout: seconds :meth:`WebSocket.aclose` waits for the peer's close frame.
        send_timeout: seconds a pong may wait for a peer that reads nothing before it is dropped (see
            :attr:`WebSocket.send_timeout`); None never gives up.

    Returns:
        The open :class:`WebSocket`; ``subprotocol`` may be None if the server picked none.

    Raises:
        UpgradeRejected: the server answered with an HTTP status instead of 101 (``.status``).
        WebSocketError: malformed response, bad accept token, unknown subprotocol or extension,
            timeout, or unusable ``headers``.
        BrokenTransport: the connection broke or closed before the response.
    """
    conn = WSConnection(ConnectionType.CLIENT)
    deflate = BoundedDeflate(max_message_size) if compression else None
    extensions = [deflate] if deflate is not None else []
    ok = False
    try:
        try:
            request = conn.send(
                Request(
                    host=host,
                    target=path,
                    subprotocols=list(subprotocols),
                    extensions=extensions,
                    extra_headers=[(n.encode("ascii"), v.encode("latin-1")) for n, v in headers],
                )
            )
        except _ERRORS as exc:
            raise WebSocketError(f"cannot build the upgrade request: {exc}") from exc
        with trio.move_on_after(math.inf if open_timeout is None else open_timeout):
            await _send(stream, request)
            ws = await _client_handshake(
                stream, conn, path, max_message_size, close_timeout, send_timeout, len(request), deflate
            )
            ok = True
            return ws
        raise UpgradeFailed(
            "upgrade_timeout", f"WebSocket opening handshake timed out after {open_timeout} s"
        )
    finally:
        if not ok:
            await trio.aclose_forcefully(stream)


async def _client_handshake(
    stream: trio.abc.Stream,
    conn: WSConnection,
    path: str,
    max_message_size: int,
    close_timeout: float | None,
    send_timeout: float | None,
    sent: int,
    deflate: BoundedDeflate | None,
) -> WebSocket:
    received = 0
    status: int | None = None
    body = bytearray()
    raw = bytearray()  # the response so far, to see whether frames followed it
    while True:
        data = await _receive(stream)
        if not data:
            if status is not None:  # a rejection whose body ends with the connection
                raise UpgradeRejected(status, _reason_text(body))
            raise BrokenTransport("the server closed the connection during the WebSocket handshake")
        received += len(data)
        if len(raw) < _MAX_HANDSHAKE_PEEK:
            raw += data
        try:
            conn.receive_data(data)
            for event in conn.events():
                if isinstance(event, AcceptConnection):
                    connection = conn.connection
                    assert connection is not None
                    early: bytes | None = None
                    if len(raw) == received and _has_trailing_data(raw):
                        # Frames right behind the response: parse them ourselves from their start, like the
                        # rest, with a frame parser that has not seen them (see _restart_frames)
                        early = _early_data(raw)
                        connection = _restart_frames(event.extensions)
                    return WebSocket(
                        stream,
                        connection,
                        subprotocol=event.subprotocol,
                        path=path,
                        request=None,
                        compressed=any(ext.enabled() for ext in event.extensions),
                        max_message_size=max_message_size,
                        close_timeout=close_timeout,
                        send_timeout=send_timeout,
                        wire_bytes_sent=sent,
                        wire_bytes_received=received,
                        deflate=deflate,
                        trailing_data=early is None and _has_trailing_data(raw),
                        early_data=early or b"",
                    )
                if isinstance(event, RejectConnection):
                    status = event.status_code
                    if not event.has_body:
                        raise UpgradeRejected(status)
                elif isinstance(event, RejectData):
                    body += event.data[: _MAX_REJECT_BODY - len(body)]
                    if event.body_finished or len(body) >= _MAX_REJECT_BODY:
                        raise UpgradeRejected(status or 0, _reason_text(body))
        except _ERRORS as exc:
            if status is not None:
                raise UpgradeRejected(status, _reason_text(body)) from exc
            raise UpgradeFailed("bad_http_response", f"bad WebSocket upgrade response: {exc}") from exc


_MAX_HANDSHAKE_PEEK = 65536  # an upgrade request or response is far shorter (h11 limits headers too)


def _restart_frames(extensions: Sequence[Extension]) -> Connection:
    """A client frame parser for the negotiated ``extensions`` that has seen no frame yet.

    wsproto's client feeds the bytes behind the 101 response to its frame parser (and the deflate extension's
    inbound state) at once; the caller hands those bytes to :class:`WebSocket` instead, which parses from a
    frame boundary and checks every header before wsproto sees it.
    """
    for extension in extensions:
        if isinstance(extension, BoundedDeflate):
            extension.reset_inbound()
    return Connection(ConnectionType.CLIENT, list(extensions))


def _has_trailing_data(raw: bytearray) -> bool:
    """True if bytes followed the HTTP head (frames wsproto already holds), or we cannot tell."""
    end = raw.find(b"\r\n\r\n")
    return end < 0 or end + 4 < len(raw)


def _early_data(raw: bytearray) -> bytes:
    """What followed the client's upgrade request in the same reads (wsproto's server side drops it)."""
    end = raw.find(b"\r\n\r\n")
    return bytes(raw[end + 4 :]) if end >= 0 else b""


def _reason_text(body: bytes | bytearray) -> str:
    return bytes(body).decode("utf-8", "replace").strip()[:200]


async def ws_server(
    stream: trio.abc.Stream,
    decide: Callable[[UpgradeRequest], Accept | Reject],
    *,
    compression: bool = True,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    open_timeout: float | None = DEFAULT_OPEN_TIMEOUT,
    close_timeout: float | None = DEFAULT_CLOSE_TIMEOUT,
    send_timeout: float | None = DEFAULT_SEND_TIMEOUT,
) -> WebSocket | None:
    """Serve the opening handshake on an accepted ``stream`` (TLS already done, if any).

    Args:
        stream: the transport; closed by this function unless a WebSocket is returned.
        decide: called once with the parsed :class:`UpgradeRequest`; returns :class:`Accept` or
            :class:`Reject` (check credentials and identity here; exceptions propagate).
        compression: accept permessage-deflate if the client offers it (OCPP-J §3.4: a CSMS SHALL).
        max_message_size: largest message accepted, in bytes; larger ones close with 1009.
        open_timeout: seconds (trio time) for the client's request; None waits forever.
        close_timeout: seconds :meth:`WebSocket.aclose` waits for the peer's close frame.
        send_timeout: seconds a pong may wait for a peer that reads nothing before it is dropped (see
            :attr:`WebSocket.send_timeout`); None never gives up.

    Returns:
        The open :class:`WebSocket`, or None after sending ``decide``'s rejection and closing.

    Raises:
        UpgradeFailed: malformed or non-WebSocket request (``bad_http_request``, answered with 400/426 first),
            or no complete request within ``open_timeout`` (``upgrade_timeout``).
        BrokenTransport: the connection broke or closed before a complete request.
        ValueError: ``decide`` accepted a subprotocol the client did not offer.
    """
    conn = WSConnection(ConnectionType.SERVER)
    ok = False
    try:
        with trio.move_on_after(math.inf if open_timeout is None else open_timeout):
            received = 0
            raw = bytearray()
            while True:
                data = await _receive(stream)
                if not data:
                    raise BrokenTransport(
                        "the client closed the connection before completing its upgrade request"
                    )
                received += len(data)
                raw += data  # bounded: h11 refuses an incomplete request head over 16 KiB
                try:
                    conn.receive_data(data)
                    event = next(iter(conn.events()), None)
                except _ERRORS as exc:
                    hint = getattr(exc, "event_hint", None)
                    status = hint.status_code if isinstance(hint, RejectConnection) else 400
                    extra = [("Sec-WebSocket-Version", "13")] if status == 426 else []
                    await _send_best_effort(
                        stream, _http_response(status, "bad WebSocket upgrade request", extra)
                    )
                    raise UpgradeFailed(
                        "bad_http_request", f"bad WebSocket upgrade request: {exc}", status=status
                    ) from exc
                if isinstance(event, Request):
                    break
            request = _upgrade_request(event)
            decision = decide(request)
            if isinstance(decision, Reject):
                headers = list(decision.headers)
                if decision.status == 401 and not any(n.lower() == "www-authenticate" for n, _ in headers):
                    headers.append(("WWW-Authenticate", 'Basic realm="ocpp", charset="UTF-8"'))
                await _send_best_effort(stream, _http_response(decision.status, decision.reason, headers))
                ok = True
                with (
                    trio.move_on_after(math.inf if close_timeout is None else close_timeout),
                    contextlib.suppress(TransportError, trio.BrokenResourceError),
                ):
                    await stream.aclose()
                return None
            ws = await _accept(
                stream,
                conn,
                request,
                decision,
                compression,
                max_message_size,
                close_timeout,
                send_timeout,
                raw,
                received,
            )
            ok = True
            return ws
        raise UpgradeFailed(
            "upgrade_timeout", f"no complete WebSocket upgrade request within {open_timeout} s"
        )
    finally:
        if not ok:
            await trio.aclose_forcefully(stream)


async def _send_best_effort(stream: trio.abc.Stream, data: bytes) -> None:
    with contextlib.suppress(TransportError, trio.BrokenResourceError, trio.ClosedResourceError):
        await stream.send_all(data)


def _upgrade_request(event: Request) -> UpgradeRequest:
    headers: dict[str, str] = {}
    for raw_name, raw_value in event.extra_headers:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return UpgradeRequest(
        path=event.target,
        host=event.host,
        subprotocols=tuple(event.subprotocols),
        headers=headers,
    )


async def _accept(
    stream: trio.abc.Stream,
    conn: WSConnection,
    request: UpgradeRequest,
    decision: Accept,
    compression: bool,
    max_message_size: int,
    close_timeout: float | None,
    send_timeout: float | None,
    raw: bytearray,
    received: int,
) -> WebSocket:
    if decision.subprotocol is not None and decision.subprotocol not in request.subprotocols:
        raise ValueError(
            f"Accept(subprotocol={decision.subprotocol!r}): the client offered {request.subprotocols}"
        )
    extension = BoundedDeflate(max_message_size) if compression else None
    try:
        data = conn.send(
            AcceptConnection(
                subprotocol=decision.subprotocol,
                extensions=[extension] if extension is not None else [],
                extra_headers=[(n.encode("ascii"), v.encode("latin-1")) for n, v in decision.extra_headers],
            )
        )
    except _ERRORS as exc:
        await _send_best_effort(stream, _http_response(400, "bad WebSocket upgrade request"))
        raise WebSocketError(f"cannot accept the WebSocket upgrade: {exc}") from exc
    await _send(stream, data)
    connection = conn.connection
    assert connection is not None
    return WebSocket(
        stream,
        connection,
        subprotocol=decision.subprotocol,
        path=request.path,
        request=request,
        compressed=extension is not None and extension.enabled(),
        max_message_size=max_message_size,
        close_timeout=close_timeout,
        send_timeout=send_timeout,
        wire_bytes_sent=len(data),
        wire_bytes_received=received,
        deflate=extension,
        early_data=_early_data(raw),
    )
