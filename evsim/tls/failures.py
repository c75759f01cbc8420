"""How a :class:`~evsim.tls.stream.TlsStream` fails: its exception classes; OpenSSL errors read as reasons.

OpenSSL exceptions never escape a stream: handshake failures become ``HandshakeFailed(reason)`` with a
reason from the event vocabulary (``events.py``); the reason is the one our verify callback recorded when
we refused the peer's certificate, else it is read from OpenSSL's error text
(:func:`classify_ssl_error`, refined by what the stream knows in :func:`classify_handshake_error`):

* received ``protocol_version`` alert, "unsupported protocol", "no protocols available" ->
  ``downgrade_refused``;
* server side, "wrong version number" right after we chose our newest version (older than TLS 1.3) for a
  legacy client -> ``downgrade_refused`` (remote): the client refused that version, and its alert came in
  a record of its own version (:func:`refused_our_max_version`);
* "no shared cipher", received ``handshake_failure`` / ``insufficient_security`` alert ->
  ``cipher_refused``. This is a heuristic: OpenSSL sends ``handshake_failure`` for any failed
  negotiation (no shared cipher, but also no shared signature algorithm or group); with evsim's
  configurations the suite list is the knob that differs, so that is what it reports. Known gap: when
  the cause is the *version* - a TLS 1.2-only client offering only TLS 1.2 suites (AEAD, SHA-256) to a
  server whose newest version is TLS 1.1 - both sides still report ``cipher_refused``. Neither can tell:
  the server sees the same "no shared cipher" at TLS 1.1 as for a TLS 1.1 client with disjoint suites,
  because it cannot see what the ClientHello offered (cryptography's binding exposes no
  ``SSL_client_version``, ``SSL_get_client_ciphers`` or client-hello callback), and the client hears
  ``handshake_failure`` before any ServerHello tells it the server's version. A client that
  receives ``handshake_failure`` *after* the server's certificate (our verify callback ran) reports
  ``peer_alert:handshake_failure`` instead: suites were settled by the ServerHello, and TLS 1.2 OpenSSL
  servers use that alert to refuse a missing client certificate;
* "peer did not return a certificate" -> ``cert_invalid:no_client_cert``;
* "bad certificate status response" (a client refused our OCSP staple) ->
  ``peer_alert:bad_certificate_status_response``;
* "no suitable signature algorithm" -> ``sigalg_refused``, "no suitable key share" -> ``group_refused``
  (TLS 1.3, the refusing side; its peer receives ``handshake_failure``, read as ``cipher_refused`` above);
* any other received alert -> ``peer_alert:<name>``; transport EOF/reset -> ``eof``; else ``protocol_error``.

What the *peer* hears when we refuse: validity and chain errors are found by OpenSSL (the validity time
is set per connection), so it sends the matching alert (``certificate_expired``, ``unknown_ca``...). The
hostname and wildcard checks run in our Python verify callback, and pyOpenSSL gives it no way to set an
X509 error code, so for those OpenSSL sends ``internal_error``; the refusing side's reason is exact.

In TLS 1.3 the client finishes its handshake before the server has checked the client certificate, so a
server's refusal arrives as an alert on the client's first read: ``receive_some`` raises
``HandshakeFailed("peer_alert:...", remote=True)`` when no application data was received yet.

The exception classes below also derive from trio's ``BrokenResourceError`` / ``ClosedResourceError``,
so generic trio code (and ``trio.testing.check_two_way_stream``) sees the types it expects, while evsim
code catches ``evsim.errors`` types.
"""

from __future__ import annotations

import re

import trio
from OpenSSL import SSL

from evsim.errors import BrokenTransport, ClosedTransport, HandshakeFailed, TlsError
from evsim.tls import events

__all__ = [
    "TlsBrokenTransport",
    "TlsClosedTransport",
    "TlsHandshakeFailed",
    "TlsRecordError",
    "again",
    "classify_handshake_error",
    "classify_ssl_error",
    "refused_our_max_version",
]

# ---------------------------------------------------------------- exceptions


class TlsBrokenTransport(BrokenTransport, trio.BrokenResourceError):
    """The transport under TLS broke (reset, EOF without close_notify) - the peer's doing."""


class TlsClosedTransport(ClosedTransport, trio.ClosedResourceError):
    """The TLS stream was closed by us."""


class TlsRecordError(TlsError, trio.BrokenResourceError):
    """TLS failed after the handshake (bad record, unexpected alert)."""


class TlsHandshakeFailed(HandshakeFailed, trio.BrokenResourceError):
    """The handshake failed (see ``HandshakeFailed``)."""


def again(exc: BaseException) -> Exception:
    """A fresh exception equal to ``exc``, for re-raising a stored failure."""
    if isinstance(exc, HandshakeFailed):
        return TlsHandshakeFailed(exc.reason, exc.detail, remote=exc.remote)
    if isinstance(exc, TlsError):
        return TlsRecordError(str(exc))
    return TlsBrokenTransport(str(exc))


# ---------------------------------------------------------------- OpenSSL error reading

_ALERT = re.compile(r"^(?:sslv3|tlsv1|tlsv13|tls) alert (.+)$")
_DOWNGRADE_TEXTS = frozenset(
    {
        "unsupported protocol",
        "no protocols available",
        "wrong ssl version",
        "unsupported ssl version",
        "version too low",
        "tlsv1 alert protocol version",
    }
)
_CIPHER_TEXTS = frozenset({"no shared cipher", "no ciphers available", "no cipher match"})
_NO_CLIENT_CERT_TEXTS = frozenset({"peer did not return a certificate"})
_KNOB_TEXTS = {  # engine knobs (groups, signature algorithms): what the refusing side's OpenSSL says
    "no suitable signature algorithm": events.SIGALG_REFUSED,
    "no suitable key share": events.GROUP_REFUSED,
}
_WRONG_VERSION_TEXT = "wrong version number"
"""A record of another version than the one negotiated (see :func:`refused_our_max_version`)."""
_VERSION_BY_NAME = {"TLSv1.3": "1.3", "TLSv1.2": "1.2", "TLSv1.1": "1.1", "TLSv1": "1.0"}
"""``Connection.get_protocol_version_name()`` -> the model's version spelling."""
_OCSP_REFUSED_TEXT = "tlsv1 bad certificate status response"
"""A server's OpenSSL text when the client refused its staple (the alert, without the word "alert")."""


def _error_texts(exc: SSL.Error) -> list[str]:
    """The reason strings of an ``SSL.Error`` (``args[0]`` is a list of (lib, func, reason))."""
    out: list[str] = []
    if exc.args and isinstance(exc.args[0], list):
        for item in exc.args[0]:
            if isinstance(item, tuple) and len(item) == 3:
                out.append(str(item[2]))
    return out


def _alert_name(text: str) -> str | None:
    m = _ALERT.match(text)
    return m.group(1).replace(" ", "_") if m else None


def classify_ssl_error(exc: SSL.Error) -> tuple[str, str, bool]:
    """(reason, detail, remote) for an OpenSSL error raised during a handshake (see module doc).

    Args:
        exc: the pyOpenSSL exception.

    Returns:
        The event-vocabulary reason, OpenSSL's text, and whether the peer refused us (an alert arrived).
    """
    if isinstance(exc, SSL.SysCallError):
        return events.EOF, f"transport closed during the handshake ({exc.args!r})", True
    texts = _error_texts(exc)
    detail = "; ".join(texts) or type(exc).__name__
    for text in texts:
        alert = _alert_name(text)
        if alert is not None:
            if alert == "protocol_version":
                return events.DOWNGRADE_REFUSED, detail, True
            if alert in ("handshake_failure", "insufficient_security"):
                return events.CIPHER_REFUSED, detail, True
            return f"{events.PEER_ALERT}:{alert}", detail, True
        if text in _DOWNGRADE_TEXTS:
            return events.DOWNGRADE_REFUSED, detail, False
        if text in _CIPHER_TEXTS:
            return events.CIPHER_REFUSED, detail, False
        if text in _NO_CLIENT_CERT_TEXTS:
            return events.CERT_NO_CLIENT_CERT, detail, False
        if text in _KNOB_TEXTS:
            return _KNOB_TEXTS[text], detail, False
        if text == _OCSP_REFUSED_TEXT:
            return f"{events.PEER_ALERT}:bad_certificate_status_response", detail, True
        if text == "certificate verify failed":
            return f"{events.CERT_INVALID}:unknown", detail, False
    return events.PROTOCOL_ERROR, detail, False


def classify_handshake_error(
    exc: SSL.Error, conn: SSL.Connection, *, side: str, verify_ran: bool, max_version: str
) -> tuple[str, str, bool]:
    """:func:`classify_ssl_error`, refined by what the stream knows about the connection.

    Args:
        exc: the pyOpenSSL exception.
        conn: the connection it came from.
        side: ``"client"`` or ``"server"``.
        verify_ran: our verify callback ran (the peer's certificate arrived).
        max_version: our profile's newest TLS version (``"1.3"``, ``"1.2"``...).

    Returns:
        (reason, detail, remote), as :func:`classify_ssl_error`.
    """
    reason, detail, remote = classify_ssl_error(exc)
    if reason == events.CIPHER_REFUSED and remote and side == "client" and verify_ran:
        # Suites are settled by the ServerHello; our verify callback ran, so the server's certificate
        # (after the ServerHello) arrived: this handshake_failure refuses something later - in TLS 1.2
        # OpenSSL sends it for a missing client certificate.
        reason = f"{events.PEER_ALERT}:handshake_failure"
    elif (
        reason == events.PROTOCOL_ERROR
        and side == "server"
        and _WRONG_VERSION_TEXT in detail
        and refused_our_max_version(conn, max_version)
    ):
        reason, remote = events.DOWNGRADE_REFUSED, True
    return reason, detail, remote


def refused_our_max_version(conn: SSL.Connection, max_version: str) -> bool:
    """Server side, after "wrong version number" in the handshake: did the client refuse our version?

    A client whose newest version is TLS 1.2 or older sends only that maximum (no
    ``supported_versions``), and we answer ``min(its max, our max)``. When that was *our* max (older
    than TLS 1.3) the client may still refuse it - its minimum is newer - and it then sends its
    ``protocol_version`` alert in a record of *its* version, which our record layer, now bound to the
    version we chose, rejects as "wrong version number" before reading the alert. Had we answered
    below our max, we would have answered the client's own maximum, which it never refuses; so in
    this state the text means the client refused our newest version: ``downgrade_refused`` (the
    peer's doing: ``remote``), as the client reports it, not a protocol error of ours.
    """
    version = _VERSION_BY_NAME.get(conn.get_protocol_version_name())
    return version is not None and version == max_version != "1.3"
