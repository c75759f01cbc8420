"""HTTP/1.1 over any ``trio.abc.Stream`` (plain, or a :class:`~evsim.tls.stream.TlsStream`), on h11.

:class:`HttpConnection` is one side (client or server) of one connection: h11 parses and frames, this module
only moves bytes and enforces :class:`HttpLimits`. What a peer sends is bounded in size and in time:

* **Heads** (request line or status line and headers) are at most ``max_head_bytes`` (h11's
  ``max_incomplete_event_size``): a longer head is refused with ``head_too_large`` (a server answers 431).
  A head must arrive complete within ``head_timeout_s`` of trio time, however slowly its bytes trickle in
  (slowloris): ``head_timeout`` (a server answers 408).
* **Bodies**, with Content-Length or chunked, are at most ``max_body_bytes`` (``body_too_large``; a declared
  Content-Length over it is refused before a byte of the body is read, a server answers 413). Each read waits at
  most ``idle_timeout_s`` and the whole body at most ``body_timeout_s``: ``body_timeout``.
* A peer that breaks the protocol (a malformed head, a bad chunk header, a body cut short by EOF) gets
  ``bad_http_request`` / ``bad_http_response`` / ``truncated``; a server that sends bytes after the end of
  its response (more than its Content-Length) gets ``response_overrun`` (:meth:`HttpConnection.expect_close`).

Every refusal is an :class:`~evsim.errors.HttpError` with that ``reason`` and the HTTP ``status`` that
answers it; the node that owns the connection records it once. h11's own exceptions never escape this module.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Literal

import attrs
import h11
import trio

from evsim.errors import BrokenTransport, ClosedTransport, ConfigError, HttpError, TransportError

__all__ = [
    "RECEIVE_SIZE",
    "SEND_CHUNK",
    "HttpConnection",
    "HttpLimits",
    "RequestHead",
    "ResponseHead",
]

RECEIVE_SIZE = 65536
"""Bytes asked of the transport per read."""
SEND_CHUNK = 65536
"""Body bytes per write (a large body is streamed, never copied whole into one record)."""

Role = Literal["client", "server"]


def _positive(name: str, value: float | None, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 or math.isnan(value):
        raise ConfigError(f"{name} must be > 0", path=f"http.{name}", value=value, fix="use e.g. 30")


@attrs.frozen
class HttpLimits:
    """What one HTTP connection accepts from its peer.

    Args:
        max_head_bytes: longest request or response head (line + headers), bytes.
        max_body_bytes: longest body, bytes (a firmware image, an uploaded log).
        head_timeout_s: trio seconds for a whole head to arrive (a server also waits this long for the next
            request on a kept-alive connection).
        idle_timeout_s: longest wait for the next bytes of a body.
        body_timeout_s: longest time for a whole body; None: only ``idle_timeout_s`` bounds it.

    Raises:
        ConfigError: a limit that is not > 0.
    """

    max_head_bytes: int = 16 * 1024
    max_body_bytes: int = 64 * 1024 * 1024
    head_timeout_s: float = 10.0
    idle_timeout_s: float = 30.0
    body_timeout_s: float | None = 600.0

    def __attrs_post_init__(self) -> None:
        for name in ("max_head_bytes", "max_body_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1", path=f"http.{name}", value=value)
        _positive("head_timeout_s", self.head_timeout_s)
        _positive("idle_timeout_s", self.idle_timeout_s)
        _positive("body_timeout_s", self.body_timeout_s, optional=True)


def _headers(raw: Iterable[tuple[bytes, bytes]]) -> Mapping[str, str]:
    out: dict[str, str] = {}
    for raw_name, raw_value in raw:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        out[name] = f"{out[name]}, {value}" if name in out else value
    return types.MappingProxyType(out)


@attrs.frozen
class RequestHead:
    """A request line and its headers (names lower case; repeated headers joined with ``", "``)."""

    method: str
    target: str
    headers: Mapping[str, str]
    http_version: str = "1.1"

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (any case), or None."""
        return self.headers.get(name.lower())


@attrs.frozen
class ResponseHead:
    """A status line and its headers (names lower case; repeated headers joined with ``", "``)."""

    status: int
    reason: str
    headers: Mapping[str, str]
    http_version: str = "1.1"

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (any case), or None."""
        return self.headers.get(name.lower())


class HttpConnection:
    """One side of an HTTP/1.1 connection over ``stream`` (see the module docstring for the limits).

    Args:
        stream: the transport (already through TLS, if any); the caller closes it.
        role: ``"client"`` or ``"server"``.
        limits: what the peer may send.

    Attributes:
        bytes_received: transport bytes read (heads and bodies).
        bytes_sent: transport bytes written.
    """

    def __init__(self, stream: trio.abc.Stream, role: Role, limits: HttpLimits | None = None) -> None:
        self.stream = stream
        self.role = role
        self.limits = limits or HttpLimits()
        self._conn = h11.Connection(
            h11.CLIENT if role == "client" else h11.SERVER,
            max_incomplete_event_size=self.limits.max_head_bytes,
        )
        self.bytes_received = 0
        self.bytes_sent = 0
        self._eof = False

    # ---------------------------------------------------------------- bytes

    @property
    def _bad(self) -> str:
        return "bad_http_request" if self.role == "server" else "bad_http_response"

    async def _receive(self) -> None:
        try:
            data = bytes(await self.stream.receive_some(RECEIVE_SIZE))
        except (trio.BrokenResourceError, BrokenTransport) as exc:
            raise BrokenTransport(f"transport broken during an HTTP exchange: {exc}") from exc
        except trio.ClosedResourceError as exc:
            raise ClosedTransport("the stream was closed during an HTTP exchange") from exc
        self.bytes_received += len(data)
        self._eof = not data
        self._conn.receive_data(data)

    async def _send(self, event: h11.Event) -> None:
        try:
            data = self._conn.send(event)
        except h11.LocalProtocolError as exc:
            raise HttpError("local_protocol_error", f"cannot send {type(event).__name__}: {exc}") from exc
        if not data:
            return
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, BrokenTransport) as exc:
            raise BrokenTransport(f"transport broken during an HTTP exchange: {exc}") from exc
        except trio.ClosedResourceError as exc:
            raise ClosedTransport("the stream was closed during an HTTP exchange") from exc
        self.bytes_sent += len(data)

    async def _next_event(self) -> h11.Event | type[h11.PAUSED]:
        """The next h11 event, reading as needed (no timeout here: callers bound it)."""
        while True:
            try:
                event = self._conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise self._protocol_error(exc) from exc
            if isinstance(event, h11.Event):
                return event
            if event is h11.PAUSED:
                return h11.PAUSED
            await self._receive()  # NEED_DATA

    def _protocol_error(self, exc: h11.RemoteProtocolError) -> HttpError:
        text = str(exc)
        if exc.error_status_hint == 431 or "too long" in text or "too large" in text:
            return HttpError(
                "head_too_large", f"HTTP head over {self.limits.max_head_bytes} bytes: {text}", status=431
            )
        if "without sending complete message body" in text:
            return HttpError("truncated", f"the peer closed the connection mid-body: {text}", status=400)
        return HttpError(self._bad, f"malformed HTTP from the peer: {text}", status=exc.error_status_hint)

    async def _head(self, what: str) -> h11.Event | type[h11.PAUSED]:
        with trio.move_on_after(self.limits.head_timeout_s):
            event = await self._next_event()
            if isinstance(event, h11.Request | h11.Response | h11.InformationalResponse):
                # h11 bounds a head only while it is incomplete: one that arrived whole in a read is measured here
                size = (
                    len(getattr(event, "target", b""))
                    + sum(len(n) + len(v) + 4 for n, v in event.headers)
                    + 16
                )
                if size > self.limits.max_head_bytes:
                    raise HttpError(
                        "head_too_large",
                        f"{what} head of about {size} bytes, over {self.limits.max_head_bytes}",
                        status=431,
                    )
            return event
        raise HttpError(
            "head_timeout", f"no complete {what} head within {self.limits.head_timeout_s} s", status=408
        )

    # ---------------------------------------------------------------- server side

    async def read_request(self, *, idle_close: bool = False) -> RequestHead | None:
        """The next request head, within ``head_timeout_s``.

        Args:
            idle_close: a kept-alive connection: when not one byte of a next request arrived in time, return
                None (an idle connection is closed quietly) instead of refusing with ``head_timeout``.

        Returns:
            The head, or None when the client closed the connection cleanly between requests (or, with
            ``idle_close``, sent nothing in time).

        Raises:
            HttpError: ``head_too_large`` (431), ``head_timeout`` (408), ``bad_http_request`` (400).
            TransportError: the connection broke.
        """
        if self._conn.our_state is h11.DONE and self._conn.their_state is h11.DONE:
            self._conn.start_next_cycle()
        before = self.bytes_received
        try:
            event = await self._head("request")
        except HttpError as exc:
            idle = self.bytes_received == before and not self._conn.trailing_data[0]
            if idle_close and idle and exc.reason == "head_timeout":
                return None
            raise
        if isinstance(event, h11.ConnectionClosed):
            return None
        if not isinstance(event, h11.Request):
            raise HttpError(self._bad, f"expected a request, got {type(event).__name__}", status=400)
        return RequestHead(
            event.method.decode("ascii", "replace"),
            event.target.decode("ascii", "replace"),
            _headers(event.headers),
            event.http_version.decode("ascii", "replace"),
        )

    async def send_response(
        self,
        status: int,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes | memoryview = b"",
        *,
        content_length: int | None = None,
        end: bool = True,
    ) -> None:
        """Send a response: head, then ``body`` in chunks of :data:`SEND_CHUNK`, then (``end``) its end.

        Args:
            status: the status code.
            headers: extra headers (Content-Length is added: ``content_length``, else ``len(body)``).
            body: the body (nothing is sent for HEAD requests: h11 knows).
            content_length: the Content-Length to declare (a HEAD response, or a body sent later).
            end: end the message; False leaves it open for :meth:`send_data`.
        """
        length = len(body) if content_length is None else content_length
        head = [*headers, ("Content-Length", str(length))]
        await self._send(h11.Response(status_code=status, headers=head))
        await self.send_data(body)
        if end:
            await self._send(h11.EndOfMessage())

    async def send_data(self, body: bytes | memoryview) -> None:
        """Send body bytes of the current message in chunks of :data:`SEND_CHUNK`."""
        view = memoryview(body)
        for start in range(0, len(view), SEND_CHUNK):
            await self._send(h11.Data(data=bytes(view[start : start + SEND_CHUNK])))

    async def refuse(self, exc: HttpError) -> None:
        """Answer a refused request with ``exc.status`` (best effort: the connection is closed afterwards)."""
        status = exc.status if 400 <= exc.status <= 599 else 400
        text = f"{exc.reason}\n".encode()
        try:
            data = self._conn.send(
                h11.Response(
                    status_code=status,
                    headers=[
                        ("Content-Type", "text/plain; charset=utf-8"),
                        ("Content-Length", str(len(text))),
                        ("Connection", "close"),
                    ],
                )
            )
            data = (data or b"") + (self._conn.send(h11.Data(data=text)) or b"")
            data += self._conn.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:
            # h11 cannot frame a response any more (its state machine gave up on the request): write one
            data = (
                f"HTTP/1.1 {status} Refused\r\nContent-Type: text/plain; charset=utf-8\r\n"
                f"Content-Length: {len(text)}\r\nConnection: close\r\n\r\n"
            ).encode("latin-1") + text
        with trio.move_on_after(self.limits.idle_timeout_s):
            try:
                await self.stream.send_all(data)
                self.bytes_sent += len(data)
            except (TransportError, trio.BrokenResourceError, trio.ClosedResourceError):
                pass

    def next_cycle(self) -> None:
        """Start the next request/response on a kept-alive connection (a client; a server's
        :meth:`read_request` does it itself).

        Raises:
            HttpError: the exchange is not finished on both sides (``local_protocol_error``).
        """
        try:
            self._conn.start_next_cycle()
        except h11.LocalProtocolError as exc:
            raise HttpError("local_protocol_error", f"cannot reuse the connection: {exc}") from exc

    @property
    def keep_alive(self) -> bool:
        """True when both sides finished the exchange and may start another on this connection."""
        return self._conn.our_state is h11.DONE and self._conn.their_state is h11.DONE

    # ---------------------------------------------------------------- client side

    async def send_request(
        self,
        method: str,
        target: str,
        *,
        host: str,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes | memoryview | None = None,
        close: bool = True,
    ) -> None:
        """Send a request (with ``Content-Length`` when ``body`` is given) and end it.

        Args:
            method: ``GET``, ``HEAD``, ``PUT``, ``POST``...
            target: the request target (path and query).
            host: the ``Host`` header.
            headers: extra headers.
            body: the body, or None for none.
            close: ask the server to close the connection after its response (``Connection: close``).
        """
        head = [("Host", host), *headers]
        if body is not None:
            head.append(("Content-Length", str(len(body))))
        if close:
            head.append(("Connection", "close"))
        await self._send(h11.Request(method=method, target=target, headers=head))
        if body is not None:
            await self.send_data(body)
        await self._send(h11.EndOfMessage())

    async def read_response(self) -> ResponseHead:
        """The response head (informational 1xx responses are skipped), within ``head_timeout_s``.

        Raises:
            HttpError: ``head_too_large``, ``head_timeout``, ``bad_http_response`` (also for a connection closed
                before a head).
            TransportError: the connection broke.
        """
        while True:
            event = await self._head("response")
            if isinstance(event, h11.InformationalResponse):
                continue
            if not isinstance(event, h11.Response):
                raise HttpError(self._bad, f"expected a response, got {type(event).__name__}")
            return ResponseHead(
                event.status_code,
                event.reason.decode("latin-1"),
                _headers(event.headers),
                event.http_version.decode("ascii", "replace"),
            )

    async def expect_close(self, linger_s: float = 1.0, max_bytes: int = RECEIVE_SIZE) -> None:
        """After a response that ends the connection: check the server sends nothing more, then return.

        Waits at most ``linger_s`` for the end of the stream (no error when it does not come).

        Raises:
            HttpError: ``response_overrun``: bytes after the end of the response (more than its
                Content-Length, or a second response nobody asked for).
        """
        extra, _closed = self._conn.trailing_data
        if extra:
            raise HttpError("response_overrun", f"{len(extra)} bytes after the end of the response")
        if self._eof:
            return
        with trio.move_on_after(linger_s):
            try:
                data = bytes(await self.stream.receive_some(max_bytes))
            except (TransportError, trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if data:
                raise HttpError("response_overrun", f"{len(data)} bytes after the end of the response")

    # ---------------------------------------------------------------- bodies (both sides)

    def declared_length(self, headers: Mapping[str, str]) -> int | None:
        """The Content-Length of a head h11 accepted (None for chunked or read-until-close bodies)."""
        value = headers.get("content-length")
        return int(value) if value is not None and value.isdigit() else None

    async def read_body(
        self,
        sink: Callable[[bytes], None],
        *,
        declared: int | None = None,
        max_bytes: int | None = None,
    ) -> int:
        """Read the current message's body to its end, handing each piece to ``sink``.

        Args:
            sink: receives the body's bytes in order (the caller keeps what it has got if this fails).
            declared: the head's Content-Length (refused at once when over the limit).
            max_bytes: a smaller bound than ``limits.max_body_bytes`` for this body.

        Returns:
            The body's length.

        Raises:
            HttpError: ``body_too_large`` (413), ``body_timeout`` (408), ``truncated`` (the peer closed before
                the end), ``bad_http_request`` / ``bad_http_response`` (bad chunk framing).
            TransportError: the connection broke.
        """
        limit = (
            self.limits.max_body_bytes if max_bytes is None else min(max_bytes, self.limits.max_body_bytes)
        )
        if declared is not None and declared > limit:
            raise HttpError("body_too_large", f"declared body of {declared} bytes over {limit}", status=413)
        if self.role == "server" and self._conn.they_are_waiting_for_100_continue:
            await self._send(h11.InformationalResponse(status_code=100, headers=[]))
        total = 0
        deadline = trio.current_time() + (
            math.inf if self.limits.body_timeout_s is None else self.limits.body_timeout_s
        )
        while True:
            with trio.move_on_at(min(deadline, trio.current_time() + self.limits.idle_timeout_s)) as scope:
                event = await self._next_event()
            if scope.cancelled_caught:
                why = "whole body" if trio.current_time() >= deadline else "next body bytes"
                raise HttpError(
                    "body_timeout", f"the {why} did not arrive in time ({total} bytes read)", status=408
                )
            if isinstance(event, h11.Data):
                total += len(event.data)
                if total > limit:
                    raise HttpError("body_too_large", f"body over {limit} bytes", status=413)
                sink(bytes(event.data))
                continue
            if isinstance(event, h11.EndOfMessage):
                return total
            if isinstance(event, h11.ConnectionClosed):
                raise HttpError("truncated", f"the peer closed the connection mid-body ({total} bytes read)")
            raise HttpError(self._bad, f"unexpected {type(event).__name__} in a body", status=400)
