"""The one exception tree of evsim.

Every module translates third-party exceptions into these at its boundary, so callers catch evsim
errors only. trio's rule applies: a ``Broken*`` error is the peer's (or the network's) doing, a
``Closed*`` error is ours (we used something we had already closed).

    EvsimError
    ├── ConfigError                 bad configuration or scenario (names file, field path, value, fix)
    ├── PkiError                    certificate/key generation, loading or CSR signing failed
    ├── TransportError              anything below OCPP
    │   ├── ConnectionRefused       nothing listens at that address, or a partition blocks it
    │   ├── BrokenTransport         the peer or the link went away mid-stream (remote)
    │   │   └── PeerNotReading      we dropped a peer that read nothing we sent for the send timeout
    │   ├── ClosedTransport         we used a stream we had closed (local)
    │   ├── TlsError                TLS failed
    │   │   └── HandshakeFailed     handshake refused; carries a reason from the event vocabulary
    │   ├── HttpError               an HTTP exchange refused or failed (``reason``, ``status``)
    │   └── WebSocketError
    │       ├── UpgradeRejected     HTTP upgrade refused (status code: 401, 404, ...)
    │       ├── UpgradeFailed       opening handshake unusable: malformed HTTP, or too slow (``reason``)
    │       └── WebSocketClosed     close frame received or sent (code, reason)
    └── OcppError                   OCPP-J RPC level; ``error_code`` is the CALLERROR code to answer with
        ├── FrameError              unparsable or malformed frame (remote input)
        ├── SchemaViolation         payload does not match the OCA schema (remote or local)
        ├── CallTimeout             no answer within the message timeout
        ├── CallErrorReceived       the peer answered our CALL with a CALLERROR
        └── OutboxFull              bounded outgoing queue is full (local back-pressure)
"""

from __future__ import annotations


class EvsimError(Exception):
    """Base of every error evsim raises on purpose."""


class ConfigError(EvsimError):
    """A configuration or scenario is invalid.

    Args:
        message: what is wrong.
        path: the field path (``stations.group1.security_profile``), or "" when not applicable.
        value: the offending value (repr-ed in the message), or None.
        fix: how to fix it, in one sentence.
        file: the file it came from, if any.
        line: 1-based line in that file, if known.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str = "",
        value: object = None,
        fix: str = "",
        file: str | None = None,
        line: int | None = None,
    ) -> None:
        self.message = message
        self.path = path
        self.value = value
        self.fix = fix
        self.file = file
        self.line = line
        super().__init__(self.render())

    def render(self) -> str:
        where = ""
        if self.file:
            where = self.file + (f":{self.line}" if self.line else "") + ": "
        field = f"{self.path}: " if self.path else ""
        val = f" (got {self.value!r})" if self.value is not None else ""
        fix = f"; fix: {self.fix}" if self.fix else ""
        return f"{where}{field}{self.message}{val}{fix}"


class PkiError(EvsimError):
    """Certificate or key generation, loading, or CSR signing failed."""


class TransportError(EvsimError):
    """Anything below OCPP: network, TLS, WebSocket."""


class ConnectionRefused(TransportError):
    """Nothing listens at the address, or a partition/outage blocks it."""


class BrokenTransport(TransportError):
    """The peer or the link went away (remote cause)."""


class PeerNotReading(BrokenTransport):
    """The peer read nothing of what waited to be sent for longer than the send timeout: we dropped it.

    Reading from a peer waits while too much waits to be sent to it (back-pressure); a peer that never reads
    would hold that memory forever, so the connection ends instead. ``reason`` is the event category.
    """

    reason = "peer_not_reading"


class ClosedTransport(TransportError):
    """We used a stream after closing it (local cause)."""


class TlsError(TransportError):
    """TLS failed outside the handshake (record layer, shutdown)."""


class HandshakeFailed(TlsError):
    """The TLS handshake failed.

    Args:
        reason: a short reason from the event vocabulary (``cert_invalid:expired``,
            ``downgrade_refused``, ``cipher_refused``, ``hostname_mismatch``, ``timeout``, ...).
        detail: engine text (OpenSSL error, alert name) for logs.
        remote: True when the peer refused us (we received an alert), False when we refused the peer.
    """

    def __init__(self, reason: str, detail: str = "", *, remote: bool = False) -> None:
        self.reason = reason
        self.detail = detail
        self.remote = remote
        side = "peer refused" if remote else "refused"
        super().__init__(f"TLS handshake {side}: {reason}" + (f" ({detail})" if detail else ""))


class HttpError(TransportError):
    """An HTTP request or response was refused or could not be completed (file transfers over HTTPS).

    Args:
        reason: a short category for events and failure counts: ``http_<status>`` for a refusing status
            (``http_404``), or a limit or protocol reason (``head_too_large``, ``body_too_large``,
            ``head_timeout``, ``body_timeout``, ``bad_http_request``, ``bad_http_response``,
            ``response_overrun``, ``bad_content_range``, ``range_not_satisfiable``, ``truncated``...).
        message: what happened (may quote the peer: escape it before logging).
        status: the HTTP status received (client side) or to answer with (server side); 0 when none.
    """

    def __init__(self, reason: str, message: str, *, status: int = 0) -> None:
        self.reason = reason
        self.status = status
        super().__init__(message)


class WebSocketError(TransportError):
    """WebSocket protocol failure."""


class UpgradeRejected(WebSocketError):
    """The HTTP upgrade was refused with ``status`` (401 bad credentials, 404 unknown identity...)."""

    def __init__(self, status: int, reason: str = "") -> None:
        self.status = status
        self.reason = reason
        super().__init__(f"WebSocket upgrade rejected with HTTP {status}" + (f": {reason}" if reason else ""))


class UpgradeFailed(WebSocketError):
    """The opening handshake failed before either side decided anything.

    Args:
        reason: a short reason from the event vocabulary: ``bad_http_request`` (a client's request did not
            parse or was no WebSocket upgrade), ``bad_http_response`` (the server's answer did not), or
            ``upgrade_timeout`` (no complete request or response in time).
        message: what happened, with the parser's words.
        status: the HTTP status answered (400, 426), 0 when none was.
    """

    def __init__(self, reason: str, message: str, *, status: int = 0) -> None:
        self.reason = reason
        self.status = status
        super().__init__(message)


class WebSocketClosed(WebSocketError):
    """The WebSocket is closed (``code`` per RFC 6455 §7.4)."""

    def __init__(self, code: int, reason: str = "") -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"WebSocket closed ({code}{': ' + reason if reason else ''})")


class OcppError(EvsimError):
    """OCPP-J RPC level error; ``error_code`` is the CALLERROR code that answers it."""

    error_code: str = "GenericError"

    def __init__(self, description: str, *, error_code: str | None = None) -> None:
        if error_code is not None:
            self.error_code = error_code
        self.description = description
        super().__init__(f"{self.error_code}: {description}")


class FrameError(OcppError):
    """A received frame is unparsable or malformed.

    ``message_id`` is the id when it could be read, else ``"-1"`` (OCPP-J 2.0.1 §4.2.3).
    ``reply`` is False when the spec says not to answer (e.g. a broken CALLRESULT).
    """

    def __init__(
        self,
        description: str,
        *,
        error_code: str = "RpcFrameworkError",
        message_id: str = "-1",
        reply: bool = True,
    ) -> None:
        self.message_id = message_id
        self.reply = reply
        super().__init__(description, error_code=error_code)


class SchemaViolation(OcppError):
    """A payload does not match its OCA JSON schema; ``path`` is the JSON path of the bad field."""

    def __init__(self, description: str, *, error_code: str, path: str = "") -> None:
        self.path = path
        super().__init__(description, error_code=error_code)


class CallTimeout(OcppError):
    """No CALLRESULT/CALLERROR arrived within the message timeout."""

    error_code = "GenericError"


class CallErrorReceived(OcppError):
    """The peer answered our CALL with a CALLERROR."""

    def __init__(self, error_code: str, description: str, details: dict[str, object] | None = None) -> None:
        self.details = details or {}
        super().__init__(description, error_code=error_code)


class OutboxFull(OcppError):
    """The bounded queue of outgoing CALLs is full: back-pressure, retry later."""

    error_code = "InternalError"


def failure_reason(exc: BaseException) -> str:
    """A stable, short category for why a connection ended, for events and failure counts.

    Two tasks of one connection can see the same loss as different exceptions (one reads a reset, the other
    then finds the stream closed), so events carry this category, not the exception's class or text.
    """
    if isinstance(exc, HandshakeFailed):
        return exc.reason
    if isinstance(exc, UpgradeRejected):
        return f"http_{exc.status}"
    if isinstance(exc, WebSocketClosed):
        return f"ws_closed_{exc.code}"
    if isinstance(exc, ConnectionRefused):
        return "refused"
    if isinstance(exc, CallTimeout):
        return "ocpp_timeout"
    if isinstance(exc, OcppError):
        return f"ocpp_{exc.error_code}"
    if isinstance(exc, TransportError):
        own = getattr(exc, "reason", None)  # e.g. a failover helper's last attempt reason
        return own if isinstance(own, str) and own else "link_lost"
    return type(exc).__name__
