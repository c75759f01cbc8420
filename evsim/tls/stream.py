"""TlsStream: TLS over any ``trio.abc.Stream``, driving a pyOpenSSL ``Connection`` in memory-BIO mode.

Theory of operation
-------------------
The OpenSSL connection never touches a socket. It reads ciphertext from an *incoming* memory BIO
(``bio_write`` feeds it) and writes ciphertext to an *outgoing* memory BIO (``bio_read`` drains it). Every
engine call (``do_handshake``, ``recv``, ``send``, ``shutdown``) is synchronous and either completes or
raises ``WantReadError`` ("feed me more ciphertext"); it never blocks, and since trio runs one task at a
time, an engine call is atomic with respect to other tasks. The stream's only job is to move bytes:

* **Driving an operation** (:meth:`TlsStream._drive`): call the engine; move what it wrote (a handshake
  flight, an alert, records) to the outbox and ship it; if it wanted input, read one chunk from the
  transport, feed it, and call again.
* **Shipping ciphertext** (:meth:`_collect`, :meth:`_flush_to`): ciphertext must reach the transport in
  the order the engine produced it, even when a sender and a receiver both make the engine write (a
  TLS 1.3 receiver may have to answer a KeyUpdate while a sender writes records). Right after each engine
  call - with no checkpoint in between - the calling task moves the BIO's contents to the end of an
  ordered *outbox* and notes the outbox position where its bytes end. It then sends, under the send
  lock, everything queued up to that position (earlier bytes first, so order holds) in one
  ``transport.send_all``; if another task already sent them while it waited for the lock, it sends
  nothing. A task sends only when *its own* engine call produced bytes: a receiver whose ``recv``
  wrote nothing never blocks on the transport's send side for a sender's records - which is what keeps
  two peers that both send and receive over full TCP buffers from deadlocking. A task cancelled while
  waiting for the lock loses nothing (its bytes stay queued for the next flush); a task cancelled
  *inside* ``transport.send_all`` leaves an unknown prefix on the wire, so the stream is then broken
  (as in trio's SSLStream).
* **Receiving ciphertext** (:meth:`_receive_more`): only one task reads the transport at a time (the
  receive lock). A task that waited for the lock checks a counter: if someone else fed the engine while
  it waited, it retries its engine call instead of reading, since the data it needed may have arrived.
  Once the engine said ``WantRead``, the next ``receive_some`` reads the transport before calling it
  (a call before new input could only say ``WantRead`` again); the server side likewise waits for the
  ClientHello before its first ``do_handshake``.
* **Locks** are :class:`_Mutex`, a FIFO mutex without ``trio.Lock``'s owner bookkeeping: the uncontended
  path is two attribute writes, which matters at thousands of small records per second.
* **Handshake**: done once, by whichever of ``do_handshake`` / first ``send_all`` / first ``receive_some``
  comes first (others wait for it), within ``profile.handshake_timeout_s`` of trio time
  (``trio.move_on_after``; virtual under ``MockClock``). ``tls_connect``/``tls_accept`` do it eagerly.
* **Synchronous sends** (evsim's own transports, which have ``_send_nowait``): ciphertext is handed to
  the transport synchronously and whatever the kernel does not take waits *in the transport*, in order,
  even if the sender is then cancelled - so a cancelled send no longer breaks the stream over them.
  ``_send_nowait`` (the WebSocket's fast path) encrypts one record and hands it over without blocking
  or checkpointing; ``send_all(b"")`` flushes what waits. Data records are read and written on the raw
  cffi binding (see "the record-layer fast path" below).
* **Records**: ``send_all`` writes plaintext in chunks of at most ``max_send_fragment`` bytes (so each
  becomes one record of at most that size; OpenSSL's own ``SSL_set_max_send_fragment`` is not exposed by
  pyOpenSSL), and flushes once per 64 KiB of plaintext, so a small message is one ``SSL_write`` and one
  transport write. The transport is read in 64 KiB chunks (a TLS record is at most 16 KiB + 256 bytes).
* **Closing**: ``aclose`` sends close_notify (best effort, bounded by :data:`CLOSE_NOTIFY_TIMEOUT_S`,
  skipped when the handshake never finished or another task is sending) and then always closes the
  transport. A received close_notify makes ``receive_some`` return ``b""``; a transport EOF without it
  is a truncation: ``BrokenTransport``.
* **Checkpoints**: every public method is a trio checkpoint (the transport call provides it; a call
  answered from the engine's buffers adds an explicit one), and nothing else yields.

Errors
------
OpenSSL exceptions never escape: handshake failures become ``HandshakeFailed(reason)`` with a reason
from the event vocabulary (``events.py``); the reason is the one our verify callback recorded when we
refused the peer's certificate, else it is read from OpenSSL's error text:

* received ``protocol_version`` alert, "unsupported protocol", "no protocols available" ->
  ``downgrade_refused``;
* server side, "wrong version number" right after we chose our newest version (older than TLS 1.3) for a
  legacy client -> ``downgrade_refused`` (remote): the client refused that version, and its alert came in
  a record of its own version (``TlsStream._refused_our_max_version``);
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

import contextlib
import datetime
import enum
import functools
import operator
import re
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

import attrs
import trio
from cryptography import x509
from OpenSSL import SSL, crypto

from evsim.errors import BrokenTransport, ClosedTransport, HandshakeFailed, TlsError
from evsim.tls import _ossl, events
from evsim.tls.context import ClientTls, ServerTls
from evsim.tls.peer import PeerPolicy
from evsim.tls.sessions import SessionStore
from evsim.tls.suites import iana_name
from evsim.tls.verify import VerifyState, is_ip_literal

T = TypeVar("T")

RECEIVE_CHUNK = 65536
"""Bytes asked of the transport per read: several full records (16 KiB + 256 max each)."""
DEFAULT_RECEIVE_SIZE = 16384
"""``receive_some()`` without ``max_bytes`` returns at most this (one full TLS record of plaintext)."""
WRITE_CHUNK = 16384
"""Plaintext per ``SSL_write`` when ``max_send_fragment`` is not set (= one full record)."""
FLUSH_EVERY = 65536
"""``send_all`` hands ciphertext to the transport at least every this many plaintext bytes."""
BIO_READ_SIZE = 65536
"""Bytes drained from the outgoing BIO per ``bio_read`` call (below glibc's mmap threshold)."""
CLOSE_NOTIFY_TIMEOUT_S = 1.0
"""How long ``aclose`` (and a failed handshake sending its alert) may wait for the transport."""


# ---------------------------------------------------------------- the record-layer fast path
#
# pyOpenSSL's ``recv`` / ``bio_read`` allocate a fresh buffer per call, and an empty ``bio_read`` raises
# ``WantReadError`` (built, raised and caught) - per message, both ends. For data records the stream calls
# ``SSL_read`` / ``BIO_read`` / ``BIO_write`` through the same cffi binding pyOpenSSL uses, into one scratch
# buffer per thread, and lets pyOpenSSL's own ``_raise_ssl_error`` turn a failed ``SSL_read`` into the very
# exception ``Connection.recv`` would raise. Like ``evsim.tls._ossl`` this reads private pyOpenSSL
# attributes (``_ssl``, ``_from_ssl``, ``_into_ssl``) pinned by setup.cfg; without them the stream uses the
# public API. Measured ≈3 µs per message (pyOpenSSL 26.4, OpenSSL 4.0).

try:
    from OpenSSL._util import ffi as _ffi
    from OpenSSL._util import lib as _lib

    _FAST: bool = all(
        hasattr(_lib, n)
        for n in ("SSL_read", "SSL_write", "SSL_pending", "BIO_read", "BIO_write", "BIO_get_mem_data")
    ) and all(hasattr(SSL.Connection, n) for n in ("_raise_ssl_error",))
except ImportError:  # pragma: no cover
    _FAST = False

_scratch = threading.local()


def _buffer() -> Any:
    buf = getattr(_scratch, "buf", None)
    if buf is None:
        buf = _scratch.buf = _ffi.new("char[]", RECEIVE_CHUNK)
    return buf


class _Engine:
    """The data-path calls of one connection on the raw binding (see above); each behaves like its
    pyOpenSSL twin. Methods, not closures: a few pointers per connection, thousands of connections."""

    __slots__ = ("_conn", "_in", "_out", "_ssl")

    def __init__(self, conn: SSL.Connection, ssl: Any, in_bio: Any, out_bio: Any) -> None:
        self._conn = conn
        self._ssl = ssl
        self._in = in_bio
        self._out = out_bio

    def starved(self) -> bool:
        """No plaintext left and no ciphertext waiting: the next ``SSL_read`` can only say WANT_READ."""
        return bool(_lib.SSL_pending(self._ssl) == 0 and _lib.BIO_get_mem_data(self._in, _ffi.NULL) == 0)

    def send(self, data: bytes) -> int:
        n = _lib.SSL_write(self._ssl, data, len(data))
        if n <= 0:
            self._conn._raise_ssl_error(self._ssl, n)  # raises what Connection.send raises
        return cast(int, n)

    def feed(self, data: bytes) -> None:
        if _lib.BIO_write(self._in, data, len(data)) <= 0:  # pragma: no cover - memory BIOs: only on OOM
            self._conn.bio_write(data)  # let pyOpenSSL raise its error

    def recv(self, size: int) -> bytes:
        buf = _buffer()
        n = _lib.SSL_read(self._ssl, buf, min(size, RECEIVE_CHUNK))
        if n <= 0:
            self._conn._raise_ssl_error(self._ssl, n)  # raises what Connection.recv raises
        return cast(bytes, _ffi.buffer(buf, n)[:])

    def drain(self) -> bytes:
        buf = _buffer()
        bio_read, out = _lib.BIO_read, self._out
        n = bio_read(out, buf, RECEIVE_CHUNK)
        if n <= 0:  # a memory BIO says -1 (retry) when empty
            return b""
        if n < RECEIVE_CHUNK:
            return cast(bytes, _ffi.buffer(buf, n)[:])
        parts = [_ffi.buffer(buf, n)[:]]
        while (n := bio_read(out, buf, RECEIVE_CHUNK)) > 0:
            parts.append(_ffi.buffer(buf, n)[:])
        return b"".join(parts)


def _fast_engine(conn: SSL.Connection) -> _Engine | None:
    """The data-path calls for ``conn`` on the raw binding, or None if pyOpenSSL's internals differ."""
    ssl = getattr(conn, "_ssl", None)
    out_bio, in_bio = getattr(conn, "_from_ssl", None), getattr(conn, "_into_ssl", None)
    if not _FAST or ssl is None or out_bio is None or in_bio is None:
        return None
    return _Engine(conn, ssl, in_bio, out_bio)


# ---------------------------------------------------------------- exceptions


class TlsBrokenTransport(BrokenTransport, trio.BrokenResourceError):
    """The transport under TLS broke (reset, EOF without close_notify) - the peer's doing."""


class TlsClosedTransport(ClosedTransport, trio.ClosedResourceError):
    """The TLS stream was closed by us."""


class TlsRecordError(TlsError, trio.BrokenResourceError):
    """TLS failed after the handshake (bad record, unexpected alert)."""


class TlsHandshakeFailed(HandshakeFailed, trio.BrokenResourceError):
    """The handshake failed (see ``HandshakeFailed``)."""


def _again(exc: BaseException) -> Exception:
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
_KNOB_TEXTS = {  # engine knobs (tls-engine): what the refusing side's OpenSSL says
    "no suitable signature algorithm": events.SIGALG_REFUSED,
    "no suitable key share": events.GROUP_REFUSED,
}
_WRONG_VERSION_TEXT = "wrong version number"
"""A record of another version than the one negotiated (see ``TlsStream._refused_our_max_version``)."""
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


def _session_reused(conn: SSL.Connection, state: VerifyState, verifies: bool) -> bool:
    reused = _ossl.session_reused(conn)
    if reused is not None:
        return reused
    return verifies and state.calls == 0  # pragma: no cover - fallback when the binding lacks it


def _group_name(conn: SSL.Connection) -> str | None:
    fn: Callable[[], str | None] | None = getattr(conn, "get_group_name", None)  # pyOpenSSL >= 24.3
    return fn() if fn is not None else None


# ---------------------------------------------------------------- info


@functools.lru_cache(maxsize=1024)
def _cert_from_der(der: bytes) -> x509.Certificate:
    return x509.load_der_x509_certificate(der)


def _shared_cert(cert: crypto.X509) -> x509.Certificate:
    """The certificate as a (shared, immutable) cryptography object: a thousand stations that see the same
    CSMS chain hold one copy of it in their ``TlsInfo``, not a thousand (≈2 KiB per certificate)."""
    return _cert_from_der(crypto.dump_certificate(crypto.FILETYPE_ASN1, cert))


def _peer_chain(conn: SSL.Connection, side: str) -> tuple[x509.Certificate, ...]:
    """The certificates the peer sent, leaf first (OpenSSL's server-side peer chain omits the leaf)."""
    peer = [_shared_cert(c) for c in conn.get_peer_cert_chain() or ()]
    if side == "server":
        leaf = conn.get_peer_certificate()
        if leaf is not None:
            peer.insert(0, _shared_cert(leaf))
    return tuple(peer)


@attrs.frozen
class TlsSession:
    """An opaque TLS session to resume (from :attr:`TlsStream.session`, for ``tls_connect(session=...)``)."""

    _session: SSL.Session = attrs.field(repr=False)


@attrs.frozen
class TlsInfo:
    """What the handshake negotiated.

    Attributes:
        version: ``"TLSv1.3"`` / ``"TLSv1.2"``.
        cipher_openssl: the suite, OpenSSL name.
        cipher_iana: the suite, IANA name.
        group: key-exchange group (``"X25519MLKEM768"``, ``"secp256r1"``...), None if unknown.
        alpn: negotiated ALPN protocol, or None.
        sni: the server name the client sent (None for IP literals / when not sent).
        peer_chain: the certificates the peer sent, leaf first (empty when it sent none).
        session_reused: True for a resumed session.
        handshake_s: trio seconds the handshake took (0 under an autojumping MockClock).
        verified_chain: leaf to trust anchor as OpenSSL verified it (empty when the peer was not verified).
        side: ``"client"`` or ``"server"``.
    """

    version: str
    cipher_openssl: str
    cipher_iana: str
    group: str | None
    alpn: str | None
    sni: str | None
    peer_chain: tuple[x509.Certificate, ...]
    session_reused: bool
    handshake_s: float
    verified_chain: tuple[x509.Certificate, ...] = ()
    side: str = "client"


# ---------------------------------------------------------------- the stream


class _Mutex:
    """A FIFO mutex for the stream's two transport directions.

    Cheaper than ``trio.Lock`` on the hot path (no owner bookkeeping: the uncontended acquire/release
    are attribute writes) and it never checkpoints by itself - every user holds it around a transport
    call, which does. Contended acquirers park in a ``ParkingLot`` (created on first contention);
    ``release`` hands ownership to the first of them, so a task cancelled while parked never owns it.
    """

    __slots__ = ("_lot", "held")

    def __init__(self) -> None:
        self.held = False
        self._lot: trio.lowlevel.ParkingLot | None = None

    async def acquire(self) -> None:
        if not self.held:
            self.held = True
            return
        if self._lot is None:
            self._lot = trio.lowlevel.ParkingLot()
        await self._lot.park()  # woken by release() with ownership

    def release(self) -> None:
        lot = self._lot
        if lot:
            lot.unpark(count=1)  # ownership passes to the woken task; `held` stays True
        else:
            self.held = False


class _State(enum.Enum):
    OK = "ok"
    BROKEN = "broken"
    CLOSED = "closed"


class _Hs(enum.Enum):
    NOT_STARTED = 0
    RUNNING = 1
    DONE = 2


class TlsStream(trio.abc.Stream):
    """TLS over a trio stream (see the module docstring for the theory of operation).

    Create with :func:`tls_connect` / :func:`tls_accept` (handshake done), or :meth:`client` /
    :meth:`server` (handshake on first use or :meth:`do_handshake`).

    Attributes:
        transport_stream: the stream carrying the ciphertext.
    """

    __slots__ = (
        "_app_data_seen",
        "_conn",
        "_conn_time",
        "_drain_fast",
        "_eof",
        "_failure",
        "_feed",
        "_hs",
        "_hs_event",
        "_hs_seconds",
        "_info",
        "_need_input",
        "_out_sent",
        "_out_total",
        "_outbox",
        "_push",
        "_receiving",
        "_recv",
        "_recv_count",
        "_recv_lock",
        "_send_lock",
        "_sending",
        "_server_hostname",
        "_sessions",
        "_side",
        "_starved",
        "_state",
        "_timeout",
        "_tls",
        "_transport_eof",
        "_verifies",
        "_vstate",
        "_write",
        "_write_chunk",
        "transport_stream",
    )

    def __init__(
        self,
        transport_stream: trio.abc.Stream,
        tls: ClientTls | ServerTls,
        conn: SSL.Connection,
        state: VerifyState,
        *,
        server_hostname: str | None,
    ) -> None:
        self.transport_stream = transport_stream
        # evsim's own transports take bytes synchronously and keep what the kernel did not take queued, in
        # order, even when a send is cancelled (TcpStream._send_nowait): then no send can break the stream.
        self._push: Callable[[bytes], bool] | None = getattr(transport_stream, "_send_nowait", None)
        self._tls = tls
        self._conn = conn
        fast = _fast_engine(conn)
        self._recv: Callable[[int], bytes] = fast.recv if fast is not None else conn.recv
        self._drain_fast: Callable[[], bytes] | None = fast.drain if fast is not None else None
        self._write: Callable[[bytes], int] = fast.send if fast is not None else conn.send
        self._feed: Callable[[bytes], object] = fast.feed if fast is not None else conn.bio_write
        self._starved: Callable[[], bool] | None = fast.starved if fast is not None else None
        self._vstate = state
        self._side = tls.side
        self._server_hostname = server_hostname
        verifies = isinstance(tls, ClientTls) or tls.verifies_peer
        self._verifies = verifies
        # per-connection validity time (see _ossl); None: OpenSSL's clock or the verify callback's
        self._conn_time = state.verify_time if (verifies and tls.connection_time) else None
        profile = tls.profile
        self._timeout = profile.handshake_timeout_s
        self._write_chunk = profile.max_send_fragment or WRITE_CHUNK
        self._state = _State.OK
        self._failure: BaseException | None = None
        self._hs = _Hs.NOT_STARTED
        self._hs_event: trio.Event | None = None  # made by a task that waits for a running handshake
        self._hs_seconds = 0.0
        self._send_lock = _Mutex()
        self._outbox: list[bytes] = []
        self._out_total = 0  # bytes ever queued in the outbox
        self._out_sent = 0  # bytes ever taken from the outbox for the transport
        self._recv_lock = _Mutex()
        self._recv_count = 0
        self._sending = False
        self._receiving = False
        self._eof = False
        self._transport_eof = False
        self._need_input = False  # the engine said WantRead and has been fed nothing since
        self._app_data_seen = False
        self._info: TlsInfo | None = None
        self._sessions: SessionStore | None = None  # client: where the session is kept (tls-engine)

    # ------------------------------------------------------------ constructors

    @classmethod
    def client(
        cls,
        transport_stream: trio.abc.Stream,
        client_tls: ClientTls,
        server_hostname: str | None,
        *,
        verify_time: Callable[[], datetime.datetime] | None = None,
        session: TlsSession | None = None,
        peer: PeerPolicy | None = None,
        sessions: SessionStore | None = None,
        clock_synced: bool = True,
    ) -> TlsStream:
        """A client stream; the handshake runs on first use or :meth:`do_handshake`.

        Args:
            transport_stream: the connected transport.
            client_tls: the compiled client configuration.
            server_hostname: the name to send as SNI (not for IP literals) and to check the certificate
                against; None skips the name check.
            verify_time: returns the simulation's wall time for certificate validity; None = real clock.
            session: a session to resume (ignored when the profile's resumption is ``"off"``).
            peer: the peer policy (pins, pairing, change) for this connection; default: the one bound to
                ``client_tls``.
            sessions: a session store: offers a session (when ``session`` is None) and keeps this
                connection's session after the handshake and after the first data read
                (``evsim.tls.sessions``).
            clock_synced: False before the device's clock was synced: with ``time_check =
                "skip_until_clock_synced"`` certificate validity times are then not checked.

        Raises:
            ConfigError: ``peer`` cannot decide for the context's trust mode.
        """
        conn, state = client_tls.new_connection(server_hostname, verify_time)
        if peer is not None:
            state.peer = client_tls.begin_peer(peer, server_hostname)
        # time_check = "skip_until_clock_synced": the verify callback accepts validity errors (as for "off")
        state.skip_time = not clock_synced and client_tls.trust.time_check == "skip_until_clock_synced"
        if session is None and sessions is not None:
            session = sessions.offer(client_tls, server_hostname, now=trio.current_time())
        if session is not None and client_tls.profile.session.resumption != "off":
            conn.set_session(session._session)
        stream = cls(transport_stream, client_tls, conn, state, server_hostname=server_hostname)
        stream._sessions = sessions
        return stream

    def _keep_session(self) -> None:
        """Save the current session in the client's store (after the handshake and the first data read)."""
        store, tls = self._sessions, self._tls
        if store is None or not isinstance(tls, ClientTls):
            return
        s = self._conn.get_session()
        if s is not None:
            reused = _session_reused(self._conn, self._vstate, self._verifies)
            store.save(tls, self._server_hostname, TlsSession(s), now=trio.current_time(), resumed=reused)

    @classmethod
    def server(
        cls,
        transport_stream: trio.abc.Stream,
        server_tls: ServerTls,
        *,
        verify_time: Callable[[], datetime.datetime] | None = None,
        peer: PeerPolicy | None = None,
    ) -> TlsStream:
        """A server stream; the handshake runs on first use or :meth:`do_handshake`.

        Args:
            transport_stream: the accepted transport.
            server_tls: the compiled server configuration.
            verify_time: returns the simulation's wall time for client certificate validity.
            peer: the peer policy for this connection; default: the one bound to ``server_tls``.

        Raises:
            ConfigError: ``peer`` cannot decide for the context's mode.
        """
        conn, state = server_tls.new_connection(verify_time)
        if peer is not None:
            state.peer = server_tls.begin_peer(peer)
        return cls(transport_stream, server_tls, conn, state, server_hostname=None)

    # ------------------------------------------------------------ state helpers

    def _set_broken(self, exc: BaseException) -> BaseException:
        if self._state is _State.OK:
            self._state = _State.BROKEN
            self._failure = exc
        return exc

    def _handshake_failed(self, exc: TlsHandshakeFailed) -> TlsHandshakeFailed:
        """Record the handshake verdict, replacing a transport error it caused (unless we closed)."""
        if self._state is _State.BROKEN:
            self._state = _State.OK
        self._set_broken(exc)
        self._peer_failed()
        return exc

    # ------------------------------------------------------------ peer trust (evsim.tls.peer)

    def _peer_failed(self) -> None:
        """Tell the peer check (once) that the handshake failed: it emits what it observed."""
        check, self._vstate.peer = self._vstate.peer, None
        if check is not None:
            check.handshake_failed()

    def _peer_succeeded(self) -> TlsHandshakeFailed | None:
        """Tell the peer check (once) that the handshake succeeded: it commits, or refuses a resumed peer."""
        check, self._vstate.peer = self._vstate.peer, None
        if check is None:
            return None
        refusal = check.handshake_succeeded(_peer_chain(self._conn, self._side), now=self._vstate.now())
        return None if refusal is None else TlsHandshakeFailed(*refusal, remote=False)

    def _check_usable(self) -> None:
        if self._state is _State.CLOSED:
            raise TlsClosedTransport("this TLS stream was closed")
        if self._state is _State.BROKEN:
            assert self._failure is not None
            raise _again(self._failure) from self._failure

    # ------------------------------------------------------------ transport I/O

    def _drain(self) -> bytes:
        """Everything the engine has written to the outgoing BIO (b"" if nothing)."""
        if self._drain_fast is not None:
            return self._drain_fast()
        conn = self._conn
        try:
            data = conn.bio_read(BIO_READ_SIZE)
        except SSL.WantReadError:
            return b""
        if len(data) < BIO_READ_SIZE:
            return data
        parts = [data]
        while True:
            try:
                more = conn.bio_read(BIO_READ_SIZE)
            except SSL.WantReadError:
                break
            parts.append(more)
            if len(more) < BIO_READ_SIZE:
                break
        return b"".join(parts)

    async def _send_raw(self, data: bytes) -> bool:
        """Hand ``data`` to the transport; True if that yielded to trio (a checkpoint happened)."""
        push = self._push
        try:
            if push is not None:
                # Taken synchronously, so a cancellation below only delays the queued rest.
                if push(data):
                    return False
                await self.transport_stream.send_all(b"")
                return True
            await self.transport_stream.send_all(data)
            return True
        except (trio.BrokenResourceError, BrokenTransport) as exc:
            raise self._set_broken(TlsBrokenTransport(f"transport broke while sending: {exc!r}")) from exc
        except (trio.ClosedResourceError, ClosedTransport) as exc:
            raise TlsClosedTransport("the transport under this TLS stream is closed") from exc
        except BaseException:
            if push is None:
                # Cancelled (or worse) inside send_all: an unknown prefix of a record went out.
                self._set_broken(
                    TlsBrokenTransport("a send was interrupted mid-record; the TLS stream is unusable")
                )
            raise

    def _send_nowait(self, data: bytes | bytearray) -> bool | None:
        """Encrypt and send ``data`` without blocking (private fast path for evsim's WebSocket).

        Only when the handshake is done, no ``send_all`` is running and ``data`` fits one record.

        Returns:
            None when it took nothing (use :meth:`send_all`); True when the records went to the transport
            and nothing is queued; False when records are queued (here or in the transport): a later
            ``send_all(b"")`` sends them.

        Raises:
            BrokenTransport, ClosedTransport, TlsError: as :meth:`send_all`.
        """
        if self._sending or self._hs is not _Hs.DONE or len(data) > self._write_chunk or not data:
            return None
        self._check_usable()
        try:
            self._write(data if type(data) is bytes else bytes(data))  # one whole record or nothing
        except SSL.WantReadError:
            return None
        except SSL.Error as exc:
            raise self._set_broken(self._record_error(exc)) from None
        self._collect()
        push = self._push
        if push is None or self._send_lock.held:
            return False  # the lock holder sends only up to its own bytes
        chunks, self._outbox = self._outbox, []
        out = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._out_sent += len(out)
        try:
            return push(out)
        except (trio.BrokenResourceError, BrokenTransport) as exc:
            raise self._set_broken(TlsBrokenTransport(f"transport broke while sending: {exc!r}")) from exc
        except (trio.ClosedResourceError, ClosedTransport) as exc:
            raise TlsClosedTransport("the transport under this TLS stream is closed") from exc

    def _collect(self) -> int:
        """Queue what the engine wrote; return the outbox position where it ends (call right after the
        engine call, without a checkpoint in between)."""
        data = self._drain()
        if data:
            self._outbox.append(data)
            self._out_total += len(data)
        return self._out_total

    async def _flush_to(self, target: int) -> bool:
        """Send the outbox at least up to ``target``, in order. Returns True if it yielded to trio."""
        if self._out_sent >= target:
            return False
        lock = self._send_lock
        waited = lock.held
        await lock.acquire()
        try:
            if self._out_sent < target:  # else another task sent our bytes while we waited
                self._check_usable()  # closed, or a send was interrupted mid-record while we waited
                chunks, self._outbox = self._outbox, []
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                self._out_sent += len(data)
                return await self._send_raw(data) or waited
        finally:
            lock.release()
        return waited

    async def _flush(self) -> bool:
        """Queue and send everything the engine has written so far. Returns True if it yielded."""
        return await self._flush_to(self._collect())

    async def _receive_raw(self) -> None:
        try:
            data = await self.transport_stream.receive_some(RECEIVE_CHUNK)
        except (trio.BrokenResourceError, BrokenTransport) as exc:
            raise self._set_broken(TlsBrokenTransport(f"transport broke while receiving: {exc!r}")) from exc
        except (trio.ClosedResourceError, ClosedTransport) as exc:
            raise TlsClosedTransport("the transport under this TLS stream is closed") from exc
        self._recv_count += 1
        self._need_input = False
        if data:
            self._feed(data if type(data) is bytes else bytes(data))
        else:
            self._transport_eof = True
            self._conn.bio_shutdown()

    async def _receive_more(self) -> None:
        """Feed the engine one more chunk of ciphertext (or learn that someone else just did)."""
        count = self._recv_count
        lock = self._recv_lock
        contended = lock.held
        await lock.acquire()
        try:
            if contended:
                if self._state is _State.CLOSED:
                    raise TlsClosedTransport("this TLS stream was closed")
                if count != self._recv_count or self._transport_eof:
                    return  # someone else fed the engine while we waited: retry the engine call
            await self._receive_raw()
        finally:
            lock.release()

    async def _drive(self, op: Callable[..., T], *args: Any, yielded: bool = False) -> T:
        """Run an engine operation to completion, moving ciphertext as needed (see module doc).

        ``yielded``: the caller already passed a checkpoint, so none is added when nothing else yields.
        """
        while True:
            before = self._out_total
            try:
                result = op(*args)
            except SSL.WantReadError:
                self._need_input = True
                end = self._collect()
                if end > before and await self._flush_to(end):
                    yielded = True
                if self._transport_eof:  # pragma: no cover - OpenSSL reports the EOF itself
                    raise SSL.SysCallError(-1, "Unexpected EOF") from None
                await self._receive_more()
                yielded = True
                continue
            except SSL.Error:
                # The engine may have written an alert for the peer: best-effort delivery, then fail.
                self._collect()
                await self._flush_quietly()
                raise
            end = self._collect()
            if end > before and await self._flush_to(end):
                yielded = True
            if not yielded:
                await trio.lowlevel.checkpoint()
            return result

    async def _flush_quietly(self) -> None:
        with trio.move_on_after(CLOSE_NOTIFY_TIMEOUT_S):
            with contextlib.suppress(
                trio.BrokenResourceError, trio.ClosedResourceError, BrokenTransport, ClosedTransport
            ):
                await self._flush_to(self._out_total)

    # ------------------------------------------------------------ handshake

    async def do_handshake(self) -> None:
        """Run the handshake now (idempotent; concurrent callers wait for the one running).

        Raises:
            HandshakeFailed: refused by us or the peer (``reason`` from the event vocabulary), or
                ``"timeout"`` after ``profile.handshake_timeout_s``, or ``"eof"`` when the transport
                ended or broke.
            ClosedTransport: the stream was closed.
        """
        self._check_usable()
        if self._hs is _Hs.DONE:
            await trio.lowlevel.checkpoint()
            return
        await self._handshake()

    async def _handshake(self) -> None:
        if self._hs is _Hs.RUNNING:
            if self._hs_event is None:
                self._hs_event = trio.Event()
            await self._hs_event.wait()
            self._check_usable()
            return
        self._hs = _Hs.RUNNING
        start = trio.current_time()
        conn = self._conn
        clock = self._conn_time

        def step() -> None:
            if clock is not None:
                _ossl.set_verify_time(conn, clock())
            conn.do_handshake()

        try:
            with trio.move_on_after(self._timeout) as scope:
                if self._side == "server":
                    await self._receive_more()  # nothing to do before the ClientHello arrives
                await self._drive(step)
            if scope.cancelled_caught:
                raise self._handshake_failed(
                    TlsHandshakeFailed(
                        events.TIMEOUT, f"no handshake within {self._timeout:g} s", remote=True
                    )
                )
            if self._tls.profile.alpn_require and not conn.get_alpn_proto_negotiated():
                raise self._handshake_failed(
                    TlsHandshakeFailed(
                        events.ALPN_REFUSED,
                        f"no ALPN protocol negotiated (offered/accepted: {', '.join(self._tls.profile.alpn)})",
                        remote=False,
                    )
                )
        except SSL.Error as exc:
            raise self._handshake_failed(self._handshake_error(exc)) from None
        except TlsBrokenTransport as exc:
            raise self._handshake_failed(TlsHandshakeFailed(events.EOF, str(exc), remote=True)) from exc
        except BaseException:
            self._set_broken(TlsBrokenTransport("the handshake was interrupted"))
            self._peer_failed()
            raise
        else:
            refused = self._peer_succeeded()
            if refused is not None:  # a resumed session whose peer is no longer trusted
                raise self._handshake_failed(refused)
            self._keep_session()
            self._hs = _Hs.DONE
            self._hs_seconds = trio.current_time() - start
        finally:
            if self._hs_event is not None:
                self._hs_event.set()
                self._hs_event = None

    def _classify(self, exc: SSL.Error) -> tuple[str, str, bool]:
        reason, detail, remote = classify_ssl_error(exc)
        if reason == events.CIPHER_REFUSED and remote and self._side == "client" and self._vstate.calls:
            # Suites are settled by the ServerHello; our verify callback ran, so the server's certificate
            # (after the ServerHello) arrived: this handshake_failure refuses something later - in TLS 1.2
            # OpenSSL sends it for a missing client certificate.
            reason = f"{events.PEER_ALERT}:handshake_failure"
        elif (
            reason == events.PROTOCOL_ERROR
            and self._side == "server"
            and _WRONG_VERSION_TEXT in detail
            and self._refused_our_max_version()
        ):
            reason, remote = events.DOWNGRADE_REFUSED, True
        return reason, detail, remote

    def _refused_our_max_version(self) -> bool:
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
        version = _VERSION_BY_NAME.get(self._conn.get_protocol_version_name())
        max_version = self._tls.profile.max_version
        return version is not None and version == max_version != "1.3"

    def _handshake_error(self, exc: SSL.Error) -> TlsHandshakeFailed:
        state = self._vstate
        if state.failure is not None:
            return TlsHandshakeFailed(state.failure, state.detail, remote=False)
        reason, detail, remote = self._classify(exc)
        return TlsHandshakeFailed(reason, detail, remote=remote)

    def _record_error(self, exc: SSL.Error) -> BaseException:
        if isinstance(exc, SSL.SysCallError):
            return TlsBrokenTransport("the peer closed the connection without close_notify (truncation)")
        reason, detail, remote = self._classify(exc)
        if remote and not self._app_data_seen:
            # TLS 1.3: the server refused our certificate after our side of the handshake completed.
            return TlsHandshakeFailed(reason, detail, remote=True)
        return TlsRecordError(f"TLS record layer failed: {detail}")

    # ------------------------------------------------------------ trio.abc.Stream

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt and send ``data`` (records of at most ``max_send_fragment`` plaintext bytes).

        Raises:
            trio.BusyResourceError: another task is in ``send_all`` / ``wait_send_all_might_not_block``.
            HandshakeFailed: the lazy handshake failed.
            BrokenTransport: the transport broke (also a ``trio.BrokenResourceError``).
            ClosedTransport: the stream was closed (also a ``trio.ClosedResourceError``).
            TlsError: TLS record-layer failure.
        """
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this TLS stream")
        self._sending = True
        try:
            self._check_usable()
            await trio.lowlevel.checkpoint_if_cancelled()
            if self._hs is not _Hs.DONE:
                await self._handshake()
            view = memoryview(data)
            if view.ndim != 1 or view.itemsize != 1:
                view = view.cast("B")
            total = len(view)
            if not total:  # flush what _send_nowait left queued (here and in the transport)
                await self._flush_all()
                return
            conn = self._conn
            step = self._write_chunk
            pos = unflushed = 0
            while pos < total:
                chunk = view[pos : pos + step]
                try:
                    n = conn.send(chunk)
                except SSL.WantReadError:
                    n = await self._drive_send(chunk)
                except SSL.Error as exc:
                    raise self._set_broken(self._record_error(exc)) from None
                pos += n
                unflushed += n
                if unflushed >= FLUSH_EVERY and pos < total:
                    await self._flush()
                    unflushed = 0
            if not await self._flush():  # the transport took the records without blocking
                await trio.lowlevel.cancel_shielded_checkpoint()  # the schedule point of a checkpoint
        finally:
            self._sending = False

    async def _flush_all(self) -> None:
        lock = self._send_lock
        waited = lock.held
        await lock.acquire()
        try:
            self._check_usable()
            chunks, self._outbox = self._outbox, []
            data = b"".join(chunks)
            self._out_sent += len(data)
            yielded = await self._send_raw(data)  # b"" still flushes the transport's own queue
        finally:
            lock.release()
        if not (yielded or waited):
            await trio.lowlevel.checkpoint()

    async def _drive_send(self, chunk: memoryview) -> int:
        try:
            return await self._drive(self._conn.send, chunk)
        except SSL.Error as exc:
            raise self._set_broken(self._record_error(exc)) from None

    async def wait_send_all_might_not_block(self) -> None:
        """Wait until the transport can take more data.

        Raises:
            trio.BusyResourceError: another task is sending.
            ClosedTransport: the stream was closed.
        """
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this TLS stream")
        self._sending = True
        try:
            self._check_usable()
            await self._send_lock.acquire()
            try:
                await self.transport_stream.wait_send_all_might_not_block()
            except (trio.ClosedResourceError, ClosedTransport) as exc:
                raise TlsClosedTransport("the transport under this TLS stream is closed") from exc
            except (trio.BrokenResourceError, BrokenTransport) as exc:
                raise self._set_broken(TlsBrokenTransport(f"transport broke: {exc!r}")) from exc
            finally:
                self._send_lock.release()
        finally:
            self._sending = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Receive and decrypt up to ``max_bytes`` bytes; ``b""`` once the peer sent close_notify.

        Raises:
            trio.BusyResourceError: another task is receiving.
            HandshakeFailed: the lazy handshake failed, or (TLS 1.3 client) the server refused our
                certificate (``peer_alert:<name>``).
            BrokenTransport: the transport broke or ended without close_notify.
            ClosedTransport: the stream was closed.
            TlsError: TLS record-layer failure.
        """
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this TLS stream")
        self._receiving = True
        try:
            if max_bytes is None:
                size = DEFAULT_RECEIVE_SIZE
            else:
                size = operator.index(max_bytes)
                if size < 1:
                    raise ValueError("max_bytes must be >= 1")
            self._check_usable()
            await trio.lowlevel.checkpoint_if_cancelled()
            if self._hs is not _Hs.DONE:
                await self._handshake()
            if self._eof:
                await trio.lowlevel.checkpoint()
                return b""
            try:
                yielded = False
                if self._need_input:  # skip an engine call that can only say WantRead again
                    lock = self._recv_lock
                    if lock.held:
                        await self._receive_more()
                    else:  # _receive_more's uncontended path, one coroutine frame less
                        lock.held = True
                        try:
                            await self._receive_raw()
                        finally:
                            lock.release()
                    yielded = True  # the transport's receive is a checkpoint
                data = await self._drive(self._recv, size, yielded=yielded)
                starved = self._starved
                if starved is not None and starved():
                    self._need_input = True  # skip the next, doomed engine call (and its exception)
            except SSL.ZeroReturnError:
                self._eof = True
                await trio.lowlevel.checkpoint()
                return b""
            except SSL.Error as exc:
                raise self._set_broken(self._record_error(exc)) from None
            if not self._app_data_seen and self._sessions is not None:
                self._keep_session()  # TLS 1.3: the tickets arrived before this data
            self._app_data_seen = True
            return data
        finally:
            self._receiving = False

    async def aclose(self) -> None:
        """Send close_notify (best effort, bounded) and close the transport. Idempotent."""
        if self._state is _State.CLOSED:
            await trio.lowlevel.checkpoint()
            return
        notify = self._state is _State.OK and self._hs is _Hs.DONE and not self._send_lock.held
        self._state = _State.CLOSED
        try:
            if notify:
                with trio.move_on_after(CLOSE_NOTIFY_TIMEOUT_S):
                    with contextlib.suppress(SSL.Error):
                        self._conn.shutdown()
                    self._collect()
                    chunks, self._outbox = self._outbox, []
                    if chunks:
                        self._out_sent = self._out_total
                        await self._send_lock.acquire()  # free (checked above): no wait, no checkpoint
                        try:
                            await self.transport_stream.send_all(b"".join(chunks))
                        finally:
                            self._send_lock.release()
        except (trio.BrokenResourceError, trio.ClosedResourceError, BrokenTransport, ClosedTransport):
            pass
        finally:
            await self.transport_stream.aclose()

    # ------------------------------------------------------------ introspection

    @property
    def side(self) -> str:
        """``"client"`` or ``"server"``."""
        return self._side

    @property
    def handshake_done(self) -> bool:
        """True once the handshake has completed successfully."""
        return self._hs is _Hs.DONE

    @property
    def info(self) -> TlsInfo:
        """What was negotiated (computed once, on first access).

        Raises:
            TlsError: the handshake has not completed.
        """
        if self._info is None:
            if self._hs is not _Hs.DONE:
                raise TlsError("no TLS information before the handshake completes")
            self._info = self._make_info()
        return self._info

    def _make_info(self) -> TlsInfo:
        conn = self._conn
        cipher = conn.get_cipher_name() or ""
        alpn = conn.get_alpn_proto_negotiated()
        if self._side == "client":
            sni = (
                self._server_hostname
                if self._server_hostname and not is_ip_literal(self._server_hostname)
                else None
            )
        else:
            raw = conn.get_servername()
            sni = raw.decode("ascii", "replace") if raw else None
        peer = _peer_chain(conn, self._side)
        verified = [_shared_cert(c) for c in conn.get_verified_chain() or ()]
        return TlsInfo(
            version=conn.get_protocol_version_name(),
            cipher_openssl=cipher,
            cipher_iana=iana_name(cipher),
            group=_group_name(conn),
            alpn=alpn.decode("ascii", "replace") if alpn else None,
            sni=sni,
            peer_chain=peer,
            session_reused=_session_reused(conn, self._vstate, self._verifies),
            handshake_s=self._hs_seconds,
            verified_chain=tuple(verified),
            side=self._side,
        )

    @property
    def session(self) -> TlsSession | None:
        """The current session, to resume later with ``tls_connect(session=...)``.

        TLS 1.3 tickets arrive after the handshake: take the session after the first message was read.
        """
        s = self._conn.get_session()
        return TlsSession(s) if s is not None else None

    def export_keying_material(self, label: bytes, length: int, context: bytes | None = None) -> bytes:
        """RFC 5705 / RFC 8446 §7.5 exporter (NTS-KE, RFC 8915 §5.1).

        Raises:
            TlsError: before the handshake, or the engine refused.
        """
        if self._hs is not _Hs.DONE:
            raise TlsError("keying material can only be exported after the handshake")
        try:
            return bytes(self._conn.export_keying_material(label, length, context))
        except SSL.Error as exc:  # pragma: no cover
            raise TlsError(f"exporter failed: {exc}") from exc


# ---------------------------------------------------------------- one-call helpers


async def tls_connect(
    transport: trio.abc.Stream,
    client_tls: ClientTls,
    server_hostname: str | None,
    *,
    verify_time: Callable[[], datetime.datetime] | None = None,
    session: TlsSession | None = None,
    peer: PeerPolicy | None = None,
    sessions: SessionStore | None = None,
    clock_synced: bool = True,
) -> TlsStream:
    """Run a client handshake over ``transport`` (within the profile's handshake timeout).

    Args:
        transport: the connected transport stream.
        client_tls: the compiled client configuration.
        server_hostname: SNI (not sent for IP literals) and the name checked against the certificate.
        verify_time: returns the simulation's wall time for certificate validity (``SimClock.utcnow``);
            None = the real clock.
        session: a session to resume.
        peer: the client-side peer policy (pins, pairing, change) for this connection; default: the one
            bound to ``client_tls``. Its checks run during the handshake and its state is committed
            when the handshake succeeded.
        sessions: a client session store (see :meth:`TlsStream.client`).
        clock_synced: see :meth:`TlsStream.client` (``time_check = "skip_until_clock_synced"``).

    Returns:
        The handshaken stream.

    Raises:
        HandshakeFailed: refused (``reason`` from the event vocabulary, including ``pin_mismatch``,
            ``peer_key_changed``, ``pairing_refused:...`` and ``alpn_refused`` when the profile requires
            ALPN and none was negotiated); the transport is closed.
        ConfigError: ``peer`` cannot decide for the context's trust mode (the transport is not touched).
    """
    stream = TlsStream.client(
        transport,
        client_tls,
        server_hostname,
        verify_time=verify_time,
        session=session,
        peer=peer,
        sessions=sessions,
        clock_synced=clock_synced,
    )
    try:
        await stream.do_handshake()
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return stream


async def tls_accept(
    transport: trio.abc.Stream,
    server_tls: ServerTls,
    *,
    verify_time: Callable[[], datetime.datetime] | None = None,
    peer: PeerPolicy | None = None,
) -> TlsStream:
    """Run a server handshake over ``transport`` (within the profile's handshake timeout).

    Args:
        transport: the accepted transport stream.
        server_tls: the compiled server configuration.
        verify_time: returns the simulation's wall time for client-certificate validity.
        peer: the server-side peer policy for this connection; default: the one bound to ``server_tls``.

    Returns:
        The handshaken stream.

    Raises:
        HandshakeFailed: refused (``reason`` from the event vocabulary, including the peer-policy reasons);
            the transport is closed.
        ConfigError: ``peer`` cannot decide for the context's mode (the transport is not touched).
    """
    stream = TlsStream.server(transport, server_tls, verify_time=verify_time, peer=peer)
    try:
        await stream.do_handshake()
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return stream
