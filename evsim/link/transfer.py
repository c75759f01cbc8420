"""File transfers over HTTP(S) from and to a :class:`~evsim.link.service.Service` with several mirrors.

A firmware or log service is a :class:`~evsim.link.service.Service` of ``http://`` / ``https://`` endpoints,
each with its own TLS profile, trust store, client identity, SNI name and pins, walked by the same
:class:`~evsim.link.service.EndpointPlanner` and :func:`~evsim.link.service.connect_service` as the OCPP links
(no second planner). The whole HTTP exchange runs as ``connect_service``'s ``setup`` step, so anything that
goes wrong on an endpoint - TLS refused, a 404, a body cut short, a limit - is one failed attempt of that
endpoint, and the planner moves on by the service's policy.

Mirrors serve the same files under their own base path: a file is named by its path *relative* to the
service (:func:`locate` turns a URL such as an UpdateFirmware ``location`` into the service whose endpoint
it names and that relative path); each endpoint is asked for ``<endpoint path> + <relative path>``.

Downloads resume. What arrived before a failure stays in a :class:`DownloadState`; the next attempt - on the
same mirror or another one - asks only for the rest (``Range: bytes=<n>-``, with ``If-Range`` when the
first response had an ETag). A server that answers 206 must name exactly that range (``Content-Range``); one
that answers 200 (it ignores ranges, or its ETag differs) restarts the file from the start. A server whose
answers cannot be trusted (bytes past its Content-Length, a wrong Content-Range, a body over the limit)
also restarts it. Whatever arrives is checked by the caller anyway (firmware: its signature).

Events (``node``): one per failed attempt - ``handshake_failed`` (``reason``, ``detail``, ``security_event``
as on the WebSocket links, plus ``service`` and ``endpoint``) when TLS refused the endpoint, else
``transfer_attempt_failed`` (``service``, ``endpoint``, ``reason``, ``detail``, ``offset``) - and one
``transfer_done`` (``service``, ``endpoint``, ``method``, ``bytes``, ``status``, ``resumed_from``,
``attempts``) naming the mirror that served the file or took the upload.
"""

from __future__ import annotations

import collections
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TypeAlias

import attrs
import trio

from evsim.backoff import Attempt
from evsim.clock import SimClock
from evsim.errors import ConfigError, HandshakeFailed, HttpError, TransportError, failure_reason
from evsim.http import HttpConnection, HttpLimits, parse_content_range
from evsim.link.service import (
    Endpoint,
    EndpointPlanner,
    EventSink,
    Service,
    ServiceConnection,
    ServiceUnavailable,
    connect_service,
)
from evsim.net.base import Network
from evsim.tls.events import ocpp_security_event
from evsim.tls.stream import TlsInfo
from evsim.urls import HTTP_SCHEMES, parse_url

__all__ = [
    "DownloadState",
    "TransferFailed",
    "TransferResult",
    "download",
    "host_header",
    "locate",
    "upload",
]

_DEFAULT_PORTS = {"http": 80, "https": 443}
_UNTRUSTED = frozenset({"response_overrun", "bad_content_range", "body_too_large", "size_mismatch"})
"""Failure reasons after which the bytes received so far are dropped (the server's framing lied)."""
MAX_RESPONSE_BODY = 64 * 1024
"""What an upload keeps of the server's response body (bytes)."""


@attrs.define
class DownloadState:
    """What a download has received so far (kept across attempts and across calls, for resuming).

    Attributes:
        data: the bytes received, from the start of the file.
        size: the file's full length, once a server declared it.
        etag: the ETag of the response the bytes came from (sent back as ``If-Range``).
    """

    data: bytearray = attrs.field(factory=bytearray)
    size: int | None = None
    etag: str | None = None

    def reset(self) -> None:
        """Forget everything (start again from byte 0)."""
        self.data.clear()
        self.size = None
        self.etag = None

    @property
    def resumable(self) -> bool:
        """True when the next request should ask only for the rest."""
        return bool(self.data) and self.size is not None and len(self.data) < self.size


@attrs.frozen
class TransferResult:
    """A completed transfer.

    Attributes:
        service: the service's name.
        endpoint: the endpoint (mirror) that completed it.
        url: the URL it was completed at.
        status: the final HTTP status.
        body: a download's content; an upload's response body (at most :data:`MAX_RESPONSE_BODY` bytes).
        bytes_by_endpoint: body bytes received (download) or sent (upload) per endpoint, failed attempts
            included.
        attempts: the attempts of this call, oldest first; the last one is the success.
        resumed_from: the offset the successful attempt started at (0: the whole file in one response).
        tls: what the successful attempt's handshake negotiated (None over plain http).
    """

    service: str
    endpoint: str
    url: str
    status: int
    body: bytes
    bytes_by_endpoint: Mapping[str, int]
    attempts: tuple[Attempt, ...]
    resumed_from: int = 0
    tls: TlsInfo | None = None


class TransferFailed(ServiceUnavailable):
    """Every allowed attempt of a transfer failed.

    Attributes:
        reason: the last attempt's failure category (``http_404``, ``cert_invalid:unknown_ca``, ``truncated``...).
        state: a download's bytes so far (pass it to the next :func:`download` to resume); None for uploads.
        bytes_by_endpoint: as :attr:`TransferResult.bytes_by_endpoint`.
    """

    def __init__(
        self,
        service: str,
        attempts: tuple[Attempt, ...],
        *,
        state: DownloadState | None,
        bytes_by_endpoint: Mapping[str, int],
    ) -> None:
        super().__init__(service, attempts)
        self.state = state
        self.bytes_by_endpoint = dict(bytes_by_endpoint)


def host_header(endpoint: Endpoint) -> str:
    """The ``Host`` header for ``endpoint`` (port only when not the scheme's default, IPv6 in brackets)."""
    host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
    if endpoint.port != _DEFAULT_PORTS.get(endpoint.scheme):
        host += f":{endpoint.port}"
    return host


def _target(endpoint: Endpoint, relative: str) -> str:
    base = endpoint.path.split("?", 1)[0].rstrip("/")
    return base + (relative if relative.startswith("/") else "/" + relative)


def locate(url: str, services: Sequence[Service]) -> tuple[Service, str] | None:
    """The service ``url`` belongs to and the file's path relative to it.

    A service matches when one of its ``http(s)`` endpoints has the URL's scheme, host and port and its path is
    a prefix of the URL's path (at a ``/`` boundary); the longest such prefix wins, then the first service.

    Args:
        url: e.g. an UpdateFirmware ``location`` or a GetLog ``remoteLocation``.
        services: the configured file services.

    Returns:
        ``(service, relative path)``, or None when no service names that server.

    Raises:
        ConfigError: ``url`` is not an http(s) URL (or has no host, a bad port, credentials).
    """
    scheme, host, port, path = parse_url(url, schemes=HTTP_SCHEMES)
    bare, mark, query = path.partition("?")
    query = mark + query
    best: tuple[int, Service, str] | None = None
    for service in services:
        for ep in service.endpoints:
            if ep.kind != "http" or (ep.scheme, ep.host.lower(), ep.port) != (scheme, host.lower(), port):
                continue
            base = ep.path.split("?", 1)[0].rstrip("/")
            within = bare == base or bare.startswith(base + "/")
            if within and (best is None or len(base) > best[0]):
                best = (len(base), service, (bare[len(base) :] or "/") + query)
    return None if best is None else (best[1], best[2])


def _default_attempts(service: Service) -> int:
    """One pass over the service: every endpoint its ``attempts`` times."""
    return sum(ep.attempts for ep in service.endpoints)


async def download(
    service: Service,
    relative: str,
    network: Network,
    *,
    clock: SimClock,
    recorder: EventSink | None = None,
    node: str | None = None,
    source: str | None = None,
    state: DownloadState | None = None,
    max_attempts: int | None = None,
    limits: HttpLimits | None = None,
    planner: EndpointPlanner | None = None,
    linger_s: float = 1.0,
) -> TransferResult:
    """GET ``relative`` from the service's endpoints by its policy, resuming after partial transfers.

    Args:
        service: an http(s) service.
        relative: the file's path under each endpoint's base path (see :func:`locate`).
        network: where to connect.
        clock: the run's clock (certificates are checked at its simulation time).
        recorder: receives the events of the module docstring (None: none).
        node: the events' node (default: ``source``, else the service name).
        source: the connecting host (network faults of the virtual network).
        state: bytes from an earlier call to resume from (it is updated in place); None: start afresh.
        max_attempts: attempts in this call; None: one pass (each endpoint its ``attempts`` times).
        limits: what a server may send (``max_body_bytes`` bounds the file).
        planner: the planner to walk (None: a fresh one; a one-shot use, no reconnect wait).
        linger_s: how long to wait for a server's end of stream after its response (to see bytes past it).

    Returns:
        The downloaded file and where it came from.

    Raises:
        TransferFailed: every attempt failed (``state`` holds what arrived).
        ConfigError: not an http(s) service, or an endpoint's TLS configuration does not compile.
    """
    st = state if state is not None else DownloadState()
    lim = limits or HttpLimits()

    async def exchange(stream: trio.abc.Stream, ep: Endpoint) -> tuple[int, int]:
        http = HttpConnection(stream, "client", lim)
        offset = len(st.data) if st.resumable else 0
        if not offset:
            st.reset()
        headers = [("User-Agent", "evsim"), ("Accept-Encoding", "identity")]
        if offset:
            headers.append(("Range", f"bytes={offset}-"))
            if st.etag is not None:
                headers.append(("If-Range", st.etag))
        await http.send_request("GET", _target(ep, relative), host=host_header(ep), headers=headers)
        head = await http.read_response()
        declared = http.declared_length(head.headers)
        if head.status == 206 and offset:
            got = parse_content_range(head.header("content-range"))
            if got is None or got[0] != offset or (got[2] is not None and got[2] != st.size):
                raise HttpError(
                    "bad_content_range",
                    f"asked for bytes {offset}- of {st.size}, got Content-Range {head.header('content-range')!r}",
                    status=206,
                )
            if declared is not None and declared != got[1] - got[0] + 1:
                raise HttpError(
                    "bad_content_range", "Content-Length does not match Content-Range", status=206
                )
        elif head.status == 200:
            offset = 0
            st.reset()
            st.size = declared
            st.etag = head.header("etag")
        else:
            raise HttpError(
                f"http_{head.status}", f"GET answered {head.status} {head.reason[:100]}", status=head.status
            )

        def sink(data: bytes) -> None:
            st.data += data
            received[ep.name] += len(data)

        await http.read_body(sink, declared=declared, max_bytes=lim.max_body_bytes - offset)
        if st.size is not None and len(st.data) != st.size:
            raise HttpError("size_mismatch", f"got {len(st.data)} bytes of a {st.size}-byte file")
        st.size = len(st.data)
        await http.expect_close(linger_s)
        return head.status, offset

    received: collections.Counter[str] = collections.Counter()
    conn, (status, offset), attempts = await _walk(
        service,
        network,
        exchange,
        clock=clock,
        recorder=recorder,
        node=node,
        source=source,
        max_attempts=max_attempts,
        planner=planner,
        method="GET",
        state=st,
        counts=received,
        relative=relative,
    )
    return TransferResult(
        service.name,
        conn.endpoint.name,
        _url(conn.endpoint, relative),
        status,
        bytes(st.data),
        dict(received),
        attempts,
        offset,
        conn.tls,
    )


async def upload(
    service: Service,
    relative: str,
    body: bytes,
    network: Network,
    *,
    clock: SimClock,
    method: str = "PUT",
    filename: str | None = None,
    content_type: str = "application/octet-stream",
    recorder: EventSink | None = None,
    node: str | None = None,
    source: str | None = None,
    max_attempts: int | None = None,
    limits: HttpLimits | None = None,
    planner: EndpointPlanner | None = None,
    linger_s: float = 1.0,
) -> TransferResult:
    """PUT or POST ``body`` to ``relative`` on the service's endpoints by its policy (no resume: a failed
    upload starts again on the next attempt).

    With a ``filename``, the request carries ``Content-Disposition: form-data; name="uploadfile";
    filename="..."`` (OCPP N01.FR.19 asks for it with POST). Any 2xx status is success.

    Args:
        service, relative, network, clock, recorder, node, source, max_attempts, limits, planner, linger_s:
            as :func:`download`.
        body: what to upload.
        method: ``PUT`` or ``POST`` (N01.FR.18: a log server accepts both).
        filename: the name to give in Content-Disposition.
        content_type: the Content-Type (N01.FR.19).

    Returns:
        The server's answer and the endpoint that took the upload.

    Raises:
        TransferFailed: every attempt failed.
        ValueError: a method other than PUT or POST.
    """
    if method not in ("PUT", "POST"):
        raise ValueError(f"upload method must be PUT or POST, not {method!r}")
    lim = limits or HttpLimits()
    sent: collections.Counter[str] = collections.Counter()
    answer = bytearray()

    async def exchange(stream: trio.abc.Stream, ep: Endpoint) -> tuple[int, int]:
        http = HttpConnection(stream, "client", lim)
        headers = [("User-Agent", "evsim"), ("Content-Type", content_type)]
        if filename is not None:
            safe = filename.replace("\\", "_").replace('"', "_")
            headers.append(("Content-Disposition", f'form-data; name="uploadfile"; filename="{safe}"'))
        before = http.bytes_sent
        try:
            await http.send_request(
                method, _target(ep, relative), host=host_header(ep), headers=headers, body=body
            )
        finally:
            sent[ep.name] += max(0, min(len(body), http.bytes_sent - before))
        head = await http.read_response()
        answer.clear()

        def keep(data: bytes) -> None:
            answer.extend(data[: MAX_RESPONSE_BODY - len(answer)])

        await http.read_body(keep, declared=http.declared_length(head.headers))
        if not 200 <= head.status <= 299:
            raise HttpError(
                f"http_{head.status}",
                f"{method} answered {head.status} {head.reason[:100]}",
                status=head.status,
            )
        await http.expect_close(linger_s)
        return head.status, 0

    conn, (status, _), attempts = await _walk(
        service,
        network,
        exchange,
        clock=clock,
        recorder=recorder,
        node=node,
        source=source,
        max_attempts=max_attempts,
        planner=planner,
        method=method,
        state=None,
        counts=sent,
        relative=relative,
    )
    return TransferResult(
        service.name,
        conn.endpoint.name,
        _url(conn.endpoint, relative),
        status,
        bytes(answer),
        dict(sent),
        attempts,
        0,
        conn.tls,
    )


Exchange: TypeAlias = Callable[[trio.abc.Stream, Endpoint], Awaitable[tuple[int, int]]]
"""One HTTP exchange on a connected endpoint: returns (status, offset the body started at)."""


def _url(endpoint: Endpoint, relative: str) -> str:
    return f"{endpoint.scheme}://{host_header(endpoint)}{_target(endpoint, relative)}"


async def _walk(
    service: Service,
    network: Network,
    exchange: Exchange,
    *,
    clock: SimClock,
    recorder: EventSink | None,
    node: str | None,
    source: str | None,
    max_attempts: int | None,
    planner: EndpointPlanner | None,
    method: str,
    state: DownloadState | None,
    counts: collections.Counter[str],
    relative: str,
) -> tuple[ServiceConnection[tuple[int, int]], tuple[int, int], tuple[Attempt, ...]]:
    """Try the endpoints one attempt at a time (so each failure's exception is at hand for its event)."""
    if service.kind != "http":
        raise ConfigError(
            "a transfer needs http(s):// endpoints",
            path=f"service.{service.name}",
            value=service.kind,
            fix="give the service http:// or https:// URLs",
        )
    limit = _default_attempts(service) if max_attempts is None else max_attempts
    if limit < 1:
        raise ConfigError(
            "must be an integer >= 1",
            path="transfer.max_attempts",
            value=max_attempts,
            fix="use e.g. 3, or None for one pass",
        )
    if planner is None:
        planner = EndpointPlanner(
            service, random.Random(f"evsim.transfer:{service.name}"), wait_after_success=False
        )
    who = node or source or service.name
    made: list[Attempt] = []
    for _ in range(limit):
        offset = len(state.data) if state is not None and state.resumable else 0
        try:
            conn = await connect_service(
                service, network, clock=clock, planner=planner, source=source, max_attempts=1, setup=exchange
            )
        except ServiceUnavailable as exc:
            made.extend(exc.attempts)
            attempt = exc.attempts[-1]
            cause = exc.__cause__
            if state is not None and attempt.reason in _UNTRUSTED:
                state.reset()
            if recorder is not None:
                _record_failure(recorder, who, service.name, attempt, cause, offset)
            continue
        made.extend(conn.attempts)
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(conn.stream)
        status, start = conn.setup
        moved = counts[conn.endpoint.name] if state is None else len(state.data) - start
        if recorder is not None:
            recorder.emit(
                who,
                "transfer_done",
                service=service.name,
                endpoint=conn.endpoint.name,
                method=method,
                path=relative,
                bytes=moved,
                status=status,
                resumed_from=start,
                attempts=len(made),
            )
        return conn, (status, start), tuple(made)
    raise TransferFailed(service.name, tuple(made), state=state, bytes_by_endpoint=counts)


def _record_failure(
    recorder: EventSink, node: str, service: str, attempt: Attempt, cause: BaseException | None, offset: int
) -> None:
    if isinstance(cause, HandshakeFailed):
        recorder.emit(
            node,
            "handshake_failed",
            reason=cause.reason,
            detail=cause.detail,
            security_event=ocpp_security_event(cause.reason, side="client") or "",
            service=service,
            endpoint=attempt.endpoint,
        )
        return
    reason = failure_reason(cause) if isinstance(cause, TransportError) else attempt.reason
    recorder.emit(
        node,
        "transfer_attempt_failed",
        service=service,
        endpoint=attempt.endpoint,
        reason=reason,
        detail=attempt.detail,
        offset=offset,
    )
