"""HTTPS file servers: a firmware download server and a log upload server (one node class, two uses).

:class:`FileServer` listens on a :class:`~evsim.net.base.Network` with its own TLS configuration (a
:class:`~evsim.tls.context.ServerTls`, e.g. compiled from a :class:`~evsim.tls.listener.Listener`: profile,
identity per SNI, client authentication, trust, pins), so each mirror of a service can speak TLS its own way.
Each connection goes through the same gates as at the CSMS, each refusal recorded once with the peer's address:

1. the accept loop's limits (:class:`~evsim.nodes.acceptor.Acceptor`: ``max_connections``,
   ``max_pending_per_address``; a connection is admitted once its first request head is complete, so
   clients that never finish one - slowloris - cannot hold every slot);
2. the TLS handshake at the simulation's time (``handshake_failed`` with its OCPP security event, as on the
   CSMS's WebSocket listener);
3. HTTP/1.1 (:class:`~evsim.http.HttpConnection` and its :class:`~evsim.http.HttpLimits`): a head too large
   (431), too slow (408), malformed (400), a body over the limit (413) or too slow (408) is answered, the
   connection closed and one ``http_refused`` event recorded (``reason``, ``status``, ``detail``).

What it serves:

* ``GET`` / ``HEAD`` of the files in :attr:`FileServer.files` (path -> bytes; replace an entry at run time to
  serve a tampered image), with ``ETag``, ``Accept-Ranges: bytes`` and single byte ranges (206, 416 for a
  range past the end; ``If-Range`` with another ETag serves the whole file), so an interrupted download
  resumes. A missing file is 404 (``http_refused`` ``not_found``). One ``file_served`` event per response.
* ``PUT`` / ``POST`` under ``upload_prefix`` when ``accept_uploads`` (a log server, OCPP N01.FR.18: both
  methods): the body is stored in :attr:`FileServer.uploads` (bounded: the oldest are dropped) with the file
  name of its ``Content-Disposition`` and the client certificate's CN; 201, one ``upload_stored`` event.
  Other methods: 405.

:attr:`FileServer.faults` makes the server misbehave on purpose (a mirror that drops downloads mid-file).
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import re

import attrs
import trio

from evsim.clock import SimClock
from evsim.errors import ConfigError, HttpError, TransportError, failure_reason
from evsim.http import (
    HttpConnection,
    HttpLimits,
    RangeNotSatisfiable,
    RequestHead,
    content_range,
    parse_range,
)
from evsim.net.base import Network, peer_address
from evsim.nodes.acceptor import Acceptor, connection_admitted
from evsim.nodes.admission import accept_tls, common_name
from evsim.recorder import Recorder, bind_peer
from evsim.tls.context import ServerTls

__all__ = ["FileServer", "FileServerConfig", "FileServerStatistics", "ServerFaults", "StoredUpload"]

_FILENAME = re.compile(r'filename\s*=\s*"([^"]{1,255})"|filename\s*=\s*([^;\s"]{1,255})')
_SHOWN_PATH = 200  # characters of a request target kept in an event
CLOSE_TIMEOUT_S = 5.0
"""How long closing a connection (TLS close_notify) may take."""


@attrs.frozen
class FileServerConfig:
    """How a file server behaves.

    Args:
        name: node name in events.
        host, port: where to listen.
        files: path -> content served by GET/HEAD (copied into :attr:`FileServer.files`).
        accept_uploads: take PUT/POST bodies (a log server).
        upload_prefix: uploads are accepted under this path only.
        max_uploads: uploads kept in memory (the oldest are dropped).
        limits: what a client may send (head and body sizes and times).
        max_connections: connections open at once (None: see :mod:`evsim.nodes.acceptor`).
        max_pending_per_address: connections from one address without a complete first request.
        max_requests_per_connection: requests served on one kept-alive connection before it is closed.

    Raises:
        ConfigError: an empty name, a path that does not start with ``/``, or a count < 1.
    """

    name: str = "files"
    host: str = "files.evsim.test"
    port: int = 443
    files: dict[str, bytes] = attrs.field(factory=dict)
    accept_uploads: bool = False
    upload_prefix: str = "/"
    max_uploads: int = 1000
    limits: HttpLimits = attrs.field(factory=HttpLimits)
    max_connections: int | None = None
    max_pending_per_address: int | None = None
    max_requests_per_connection: int = 100

    def __attrs_post_init__(self) -> None:
        where = f"file_server.{self.name}"
        if not self.name:
            raise ConfigError("a file server needs a name", path="file_server.name", value=self.name)
        for path in (*self.files, self.upload_prefix):
            if not path.startswith("/"):
                raise ConfigError(
                    "paths start with /", path=f"{where}.files", value=path, fix=f"use /{path.lstrip('/')}"
                )
        for field in ("max_uploads", "max_requests_per_connection"):
            if getattr(self, field) < 1:
                raise ConfigError(
                    f"{field} must be >= 1", path=f"{where}.{field}", value=getattr(self, field)
                )


@attrs.define
class ServerFaults:
    """Misbehaviour on purpose (changed at run time by tests and scenarios).

    Attributes:
        cut_after_bytes: for the next ``cuts`` GET responses, send the head (with the full Content-Length) and
            only this many body bytes, then drop the connection (a mirror failing mid-download).
        cuts: how many responses are still to be cut.
    """

    cut_after_bytes: int | None = None
    cuts: int = 0


@attrs.frozen
class StoredUpload:
    """One upload a server received.

    Attributes:
        path: the request target's path.
        filename: from ``Content-Disposition`` (None when absent).
        body: the bytes received.
        method: ``PUT`` or ``POST``.
        peer: the client's address.
        client: the client certificate's CN (mutual TLS), or None.
        content_type: the ``Content-Type`` header, or None.
    """

    path: str
    filename: str | None
    body: bytes
    method: str
    peer: str
    client: str | None
    content_type: str | None


@attrs.frozen
class FileServerStatistics:
    connections: int
    requests: dict[str, int]
    responses: dict[int, int]
    refusals: dict[str, int]
    handshake_failures: dict[str, int]
    bytes_served: int
    bytes_uploaded: int
    uploads: int
    cuts: int


class FileServer:
    """An HTTP(S) file server (see the module docstring).

    Args:
        config: behaviour.
        network: where to listen.
        server_tls: the compiled TLS configuration; None serves plain HTTP.
        clock: the run's clock (client certificates are checked at its simulation time).
        recorder: event sink.

    Attributes:
        files: path -> content served now (mutable).
        uploads: what clients uploaded, oldest first (at most ``max_uploads``).
        faults: misbehaviour on purpose.
    """

    def __init__(
        self,
        config: FileServerConfig,
        *,
        network: Network,
        server_tls: ServerTls | None,
        clock: SimClock,
        recorder: Recorder,
    ) -> None:
        self.config = config
        self.network = network
        self.server_tls = server_tls
        self.clock = clock
        self.recorder = recorder
        self.files: dict[str, bytes] = dict(config.files)
        self.uploads: collections.deque[StoredUpload] = collections.deque(maxlen=config.max_uploads)
        self.faults = ServerFaults()
        self.address: tuple[str, int] | None = None
        self.acceptor = Acceptor(
            config.name,
            recorder,
            max_connections=config.max_connections,
            max_pending_per_address=config.max_pending_per_address,
        )
        self._connections = 0
        self._requests: collections.Counter[str] = collections.Counter()
        self._responses: collections.Counter[int] = collections.Counter()
        self._refusals: collections.Counter[str] = collections.Counter()
        self._handshake_failures: collections.Counter[str] = collections.Counter()
        self._bytes_served = 0
        self._bytes_uploaded = 0
        self._uploads_total = 0
        self._cuts = 0
        self._etags: dict[str, tuple[bytes, str]] = {}

    @property
    def name(self) -> str:
        return self.config.name

    async def serve(
        self, *, task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen and serve until cancelled; ``task_status.started`` gets the bound address."""
        listener = await self.network.listen(self.config.host, self.config.port)
        self.address = listener.address
        self.recorder.emit(self.name, "listening", address=f"{self.address[0]}:{self.address[1]}")
        async with listener:
            task_status.started(self.address)
            await self.acceptor.serve(listener, self._handle_connection)

    # ---------------------------------------------------------------- one connection

    async def _handle_connection(self, stream: trio.abc.Stream) -> None:
        self._connections += 1
        peer = peer_address(stream)
        bind_peer(peer)
        client: str | None = None
        try:
            if self.server_tls is not None:
                tls = await accept_tls(
                    stream,
                    self.server_tls,
                    node=self.name,
                    clock=self.clock,
                    recorder=self.recorder,
                    failures=self._handshake_failures,
                )
                if tls is None:
                    return
                stream = tls
                chain = tls.info.peer_chain
                client = common_name(chain[0]) if chain else None
            await self._serve_http(stream, peer, client)
        except TransportError as exc:
            self.recorder.emit(
                self.name, "connection_lost", reason=failure_reason(exc), detail=str(exc)[:200]
            )
        finally:
            with (
                trio.CancelScope(shield=True),
                trio.move_on_after(CLOSE_TIMEOUT_S),
                contextlib.suppress(TransportError, trio.BrokenResourceError, trio.ClosedResourceError),
            ):
                await stream.aclose()
            await trio.aclose_forcefully(stream)

    async def _serve_http(self, stream: trio.abc.Stream, peer: str, client: str | None) -> None:
        http = HttpConnection(stream, "server", self.config.limits)
        for n in range(self.config.max_requests_per_connection):
            head: RequestHead | None = None
            try:
                head = await http.read_request(idle_close=n > 0)
                if head is None:
                    return
                if n == 0:
                    connection_admitted()
                self._requests[head.method] += 1
                if not await self._respond(http, head, peer, client):
                    return
            except HttpError as exc:
                self._refuse(exc, head)
                await http.refuse(exc)
                return
            if not http.keep_alive:
                return

    def _refuse(self, exc: HttpError, head: RequestHead | None, *, answered: int | None = None) -> None:
        status = answered if answered is not None else exc.status
        self._refusals[exc.reason] += 1
        self._responses[status] += 1
        where = {"method": head.method, "path": head.target[:_SHOWN_PATH]} if head is not None else {}
        self.recorder.emit(
            self.name, "http_refused", reason=exc.reason, status=status, detail=str(exc)[:200], **where
        )

    async def _respond(self, http: HttpConnection, head: RequestHead, peer: str, client: str | None) -> bool:
        """Answer one request; False when the connection must end (a fault cut it)."""
        method = head.method
        path = head.target.split("?", 1)[0]
        if method in ("GET", "HEAD"):
            # a GET has no body: read its end (a body is refused, 413), so the connection can be kept alive
            await http.read_body(lambda _: None, declared=http.declared_length(head.headers), max_bytes=0)
            return await self._get(http, head, path)
        if method in ("PUT", "POST"):
            if not self.config.accept_uploads or not path.startswith(self.config.upload_prefix):
                raise HttpError("method_not_allowed", f"{method} is not accepted at {path[:100]}", status=405)
            await self._store(http, head, path, peer, client)
            return True
        raise HttpError("method_not_allowed", f"method {method[:20]} is not served", status=405)

    def _etag(self, path: str, body: bytes) -> str:
        cached = self._etags.get(path)
        if cached is not None and cached[0] is body:
            return cached[1]
        tag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        self._etags[path] = (body, tag)
        return tag

    async def _get(self, http: HttpConnection, head: RequestHead, path: str) -> bool:
        body = self.files.get(path)
        if body is None:
            raise HttpError("not_found", f"no file at {path[:100]}", status=404)
        etag = self._etag(path, body)
        headers = [("ETag", etag), ("Accept-Ranges", "bytes"), ("Content-Type", "application/octet-stream")]
        if_range = head.header("if-range")
        try:
            wanted = parse_range(head.header("range"), len(body)) if if_range in (None, etag) else None
        except RangeNotSatisfiable as exc:
            await http.send_response(416, [*headers, ("Content-Range", f"bytes */{len(body)}")])
            self._refuse(HttpError("range_not_satisfiable", str(exc), status=416), head)
            return True
        status, first, part = 200, 0, body
        if wanted is not None:
            status, first = 206, wanted.first
            part = body[wanted.first : wanted.last + 1]
            headers.append(("Content-Range", content_range(wanted)))
        self._responses[status] += 1
        faults = self.faults
        if head.method == "GET" and faults.cuts > 0 and faults.cut_after_bytes is not None:
            faults.cuts -= 1
            self._cuts += 1
            sent = part[: faults.cut_after_bytes]
            await http.send_response(status, headers, sent, content_length=len(part), end=False)
            self._bytes_served += len(sent)
            self.recorder.emit(
                self.name, "transfer_cut", path=path[:_SHOWN_PATH], offset=first, bytes=len(sent)
            )
            return False
        await http.send_response(
            status, headers, part if head.method == "GET" else b"", content_length=len(part)
        )
        sent_bytes = len(part) if head.method == "GET" else 0
        self._bytes_served += sent_bytes
        self.recorder.emit(
            self.name,
            "file_served",
            method=head.method,
            path=path[:_SHOWN_PATH],
            status=status,
            offset=first,
            bytes=sent_bytes,
        )
        return True

    async def _store(
        self, http: HttpConnection, head: RequestHead, path: str, peer: str, client: str | None
    ) -> None:
        received = bytearray()
        await http.read_body(received.extend, declared=http.declared_length(head.headers))
        filename = None
        disposition = head.header("content-disposition")
        if disposition is not None:
            match = _FILENAME.search(disposition)
            if match is not None:
                filename = (match.group(1) or match.group(2)).replace("/", "_").replace("\\", "_")
        upload = StoredUpload(
            path, filename, bytes(received), head.method, peer, client, head.header("content-type")
        )
        self.uploads.append(upload)
        self._uploads_total += 1
        self._bytes_uploaded += len(received)
        await http.send_response(201, [("Content-Type", "text/plain; charset=utf-8")], b"stored\n")
        self._responses[201] += 1
        self.recorder.emit(
            self.name,
            "upload_stored",
            method=head.method,
            path=path[:_SHOWN_PATH],
            filename=filename or "",
            bytes=len(received),
            client=client or "",
        )

    def uploaded(self, path: str) -> StoredUpload | None:
        """The latest upload to ``path`` (None if none is kept)."""
        for upload in reversed(self.uploads):
            if upload.path == path:
                return upload
        return None

    def statistics(self) -> FileServerStatistics:
        return FileServerStatistics(
            connections=self._connections,
            requests=dict(self._requests),
            responses=dict(self._responses),
            refusals=dict(self._refusals),
            handshake_failures=dict(self._handshake_failures),
            bytes_served=self._bytes_served,
            bytes_uploaded=self._bytes_uploaded,
            uploads=self._uploads_total,
            cuts=self._cuts,
        )
