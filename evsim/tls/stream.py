"""TlsStream: TLS over any ``trio.abc.Stream``, driving a pyOpenSSL ``Connection`` in memory-BIO mode.

Theory of operation
-------------------
The OpenSSL connection never touches a socket. It reads ciphertext from an *incoming* memory BIO
(``bio_write`` feeds it) and writes ciphertext to an *outgoing* memory BIO (``bio_read`` drains it). Every
engine call (``do_handshake``, ``recv``, ``send``, ``shutdown``) is synchronous and either completes or
raises ``WantReadError`` ("feed me more ciphertext"); it never blocks, and since trio runs one task at a
time, an engine call is atomic with respect to other tasks. The stream's only job is to move bytes (the
first three points are :class:`~evsim.tls.engine.BioPump`, the base class of :class:`TlsStream`):

* **Driving an operation** (:meth:`~evsim.tls.engine.BioPump._drive`): call the engine; move what it
  wrote (a handshake flight, an alert, records) to the outbox and ship it; if it wanted input, read one
  chunk from the transport, feed it, and call again.
* **Shipping ciphertext** (:meth:`~evsim.tls.engine.BioPump._collect`, ``_flush_to``): ciphertext must reach
  the transport in the order the engine produced it, even when a sender and a receiver both make the engine
  write (a TLS 1.3 receiver may have to answer a KeyUpdate while a sender writes records). Right after each
  engine call - with no checkpoint in between - the calling task moves the BIO's contents to the end of an
  ordered *outbox* and notes the outbox position where its bytes end. It then sends, under the send lock,
  everything queued up to that position (earlier bytes first, so order holds) in one ``transport.send_all``;
  if another task already sent them while it waited for the lock, it sends nothing. A task sends only when
  *its own* engine call produced bytes: a receiver whose ``recv`` wrote nothing never blocks on the
  transport's send side for a sender's records - which is what keeps two peers that both send and receive
  over full TCP buffers from deadlocking. A task cancelled while waiting for the lock loses nothing (its
  bytes stay queued for the next flush); a task cancelled *inside* ``transport.send_all`` leaves an unknown
  prefix on the wire, so the stream is then broken (as in trio's SSLStream).
* **Receiving ciphertext** (:meth:`~evsim.tls.engine.BioPump._receive_more`): only one task reads the
  transport at a time (the receive lock). A task that waited for the lock checks a counter: if someone else
  fed the engine while it waited, it retries its engine call instead of reading, since the data it needed
  may have arrived. Once the engine said ``WantRead``, the next ``receive_some`` reads the transport before
  calling it (a call before new input could only say ``WantRead`` again); the server side likewise waits for
  the ClientHello before its first ``do_handshake``.
* **Locks** are ``evsim.tls.engine._Mutex``, a FIFO mutex without ``trio.Lock``'s owner bookkeeping: the
  uncontended path is two attribute writes, which matters at thousands of small records per second.
* **Handshake**: done once, by whichever of ``do_handshake`` / first ``send_all`` / first ``receive_some``
  comes first (others wait for it), within ``profile.handshake_timeout_s`` of trio time
  (``trio.move_on_after``; virtual under ``MockClock``). ``tls_connect``/``tls_accept`` do it eagerly.
* **Synchronous sends** (transports that implement :class:`~evsim.net.base.NowaitSend`, as evsim's own
  do): ciphertext is handed to the transport synchronously and whatever the kernel does not take waits
  *in the transport*, in order, even if the sender is then cancelled - so a cancelled send does not break
  the stream over them. :meth:`TlsStream.send_nowait` (the WebSocket's fast path; the stream is a
  ``NowaitSend`` itself) encrypts one record and hands it over without blocking or checkpointing;
  ``send_all(b"")`` flushes what waits. Data records are read and written on the raw
  cffi binding (see "the record-layer fast path" in :mod:`evsim.tls.engine`).
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
OpenSSL exceptions never escape: :mod:`evsim.tls.failures` holds the exception classes (evsim errors
that are also trio's ``BrokenResourceError`` / ``ClosedResourceError``) and reads a failed handshake's
OpenSSL error as a ``HandshakeFailed`` reason from the event vocabulary (``events.py``), unless our
verify callback recorded why we refused the peer's certificate.
"""

from __future__ import annotations

import contextlib
import datetime
import enum
import functools
import operator
from collections.abc import Callable

import attrs
import trio
from cryptography import x509
from OpenSSL import SSL, crypto

from evsim.errors import BrokenTransport, ClosedTransport, TlsError
from evsim.tls import _ossl, events
from evsim.tls.context import ClientTls, ServerTls
from evsim.tls.engine import CLOSE_NOTIFY_TIMEOUT_S, BioPump, StreamState, broke
from evsim.tls.failures import (
    TlsBrokenTransport,
    TlsClosedTransport,
    TlsHandshakeFailed,
    TlsRecordError,
    classify_handshake_error,
)
from evsim.tls.peer import PeerPolicy
from evsim.tls.sessions import SessionStore
from evsim.tls.suites import iana_name
from evsim.tls.verify import VerifyState, is_ip_literal

DEFAULT_RECEIVE_SIZE = 16384
"""``receive_some()`` without ``max_bytes`` returns at most this (one full TLS record of plaintext)."""
WRITE_CHUNK = 16384
"""Plaintext per ``SSL_write`` when ``max_send_fragment`` is not set (= one full record)."""
FLUSH_EVERY = 65536
"""``send_all`` hands ciphertext to the transport at least every this many plaintext bytes."""


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


class _Hs(enum.Enum):
    NOT_STARTED = 0
    RUNNING = 1
    DONE = 2


class TlsStream(BioPump, trio.abc.Stream):
    """TLS over a trio stream (see the module docstring for the theory of operation).

    Create with :func:`tls_connect` / :func:`tls_accept` (handshake done), or :meth:`client` /
    :meth:`server` (handshake on first use or :meth:`do_handshake`).

    Attributes:
        transport_stream: the stream carrying the ciphertext.
    """

    __slots__ = (
        "_app_data_seen",
        "_conn_time",
        "_eof",
        "_hs",
        "_hs_event",
        "_hs_seconds",
        "_idle_mark",
        "_info",
        "_receiving",
        "_sending",
        "_server_hostname",
        "_sessions",
        "_side",
        "_timeout",
        "_tls",
        "_verifies",
        "_vstate",
        "_write_chunk",
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
        super().__init__(transport_stream, conn)
        self._tls = tls
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
        self._hs = _Hs.NOT_STARTED
        self._hs_event: trio.Event | None = None  # made by a task that waits for a running handshake
        self._hs_seconds = 0.0
        self._sending = False
        self._receiving = False
        self._eof = False
        self._app_data_seen = False
        self._info: TlsInfo | None = None
        self._idle_mark = (-1, -1)  # (reads, bytes queued) when the BIOs were last renewed
        self._sessions: SessionStore | None = None  # client: where the session is kept (evsim.tls.sessions)

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

    def _handshake_failed(self, exc: TlsHandshakeFailed) -> TlsHandshakeFailed:
        """Record the handshake verdict, replacing a transport error it caused (unless we closed)."""
        if self._state is StreamState.BROKEN:
            self._state = StreamState.OK
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

    def send_nowait(self, data: bytes | bytearray, /) -> bool | None:
        """Encrypt and send ``data`` without blocking or a checkpoint (:class:`~evsim.net.base.NowaitSend`,
        the fast path of evsim's WebSocket).

        Only when the handshake is done, no ``send_all`` is running and ``data`` fits one record; the
        record goes to the transport synchronously when it has ``send_nowait`` too, else it waits here.

        Returns:
            None when it took nothing (use :meth:`send_all`); True when the records went to the transport
            and nothing is queued; False when records are queued (here or in the transport): a later
            ``send_all(b"")`` sends them.

        Raises:
            BrokenTransport, ClosedTransport, TlsError: as :meth:`send_all`.
        """
        if self._sending or self._hs is not _Hs.DONE or len(data) > self._write_chunk or not data:
            return None
        if self._state is not StreamState.OK:  # the check, inlined on the message path
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
            taken = push(out)
        except (trio.BrokenResourceError, BrokenTransport) as exc:
            raise self._set_broken(TlsBrokenTransport(broke("sending", exc))) from exc
        except (trio.ClosedResourceError, ClosedTransport) as exc:
            raise TlsClosedTransport("the transport under this TLS stream is closed") from exc
        if taken is None:  # the transport took nothing: the records wait here for send_all(b"")
            self._outbox = [out]
            self._out_sent -= len(out)
            return False
        return taken

    def release_idle_state(self) -> int:
        """Give back the memory BIOs' grown buffers while the link is idle (:class:`~evsim.net.base.IdleState`):
        they hold the largest record batch since they were last renewed (the handshake's flights are
        released when it completes); new empty ones take their place when nothing waits in them
        (``_ossl.renew_memory_bios``). OpenSSL's own record buffers are released by
        ``SSL_MODE_RELEASE_BUFFERS`` already; the handshake's key shares it keeps until the connection ends.

        Returns:
            1 when the BIOs were renewed, else 0 (also when no byte moved since they last were).
        """
        if (
            self._hs is not _Hs.DONE
            or self._state is not StreamState.OK
            or self._transport_eof
            or self._outbox
        ):
            return 0
        mark = (self._recv_count, self._out_total)
        if mark == self._idle_mark or not self._renew_bios():
            return 0
        self._idle_mark = mark
        return 1

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
        try:
            with trio.move_on_after(self._timeout) as scope:
                if self._side == "server":
                    await self._receive_more()  # nothing to do before the ClientHello arrives
                await self._drive(self._handshake_step)
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
            # The BIOs grew to the handshake's largest flight (several KiB with a hybrid key share); freed
            # now, while the connection's next allocations can take the space, instead of at idle, where
            # it would stay a resident hole between live objects (bench/memory.py: -9 KiB RSS per pair).
            if self._renew_bios():
                self._idle_mark = (self._recv_count, self._out_total)
        finally:
            if self._hs_event is not None:
                self._hs_event.set()
                self._hs_event = None

    @trio.lowlevel.enable_ki_protection
    def _handshake_step(self) -> None:
        """One engine call of the handshake.

        KI-protected: trio defers a Ctrl-C that arrives while OpenSSL runs our callbacks to the next
        checkpoint. An interrupt a callback kept anyway (``evsim.interrupts.c_callback``) is raised here,
        before the engine's verdict is read: an interrupted handshake has none.
        """
        conn = self._conn
        clock = self._conn_time
        if clock is not None:
            _ossl.set_verify_time(conn, clock())
        try:
            conn.do_handshake()
        finally:
            self._vstate.raise_kept()

    def _classify(self, exc: SSL.Error) -> tuple[str, str, bool]:
        return classify_handshake_error(
            exc,
            self._conn,
            side=self._side,
            verify_ran=bool(self._vstate.calls),
            max_version=self._tls.profile.max_version,
        )

    def _handshake_error(self, exc: SSL.Error) -> TlsHandshakeFailed:
        state = self._vstate
        state.raise_kept()
        if state.failure is not None:
            return TlsHandshakeFailed(state.failure, state.detail, remote=False)
        reason, detail, remote = self._classify(exc)
        return TlsHandshakeFailed(reason, detail, remote=remote)

    def _record_error(self, exc: SSL.Error) -> BaseException:
        self._vstate.raise_kept()  # a callback of a post-handshake message was interrupted: no verdict
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
            if not total:  # flush what send_nowait left queued (here and in the transport)
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
            if self._state is not StreamState.OK:  # the check, inlined on the message path
                self._check_usable()
            # The common case (established, the engine starved): the transport's receive below is this
            # call's checkpoint, and a cancelled transport receive takes nothing.
            common = self._need_input and self._hs is _Hs.DONE and not self._eof
            if not common:
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
                if common:
                    # Decrypt what the transport's receive (a checkpoint) just fed: _drive(self._recv, ...,
                    # yielded=True) with its first engine call inline, as a whole record usually arrived in
                    # one read. The rest (a partial record: WantRead) goes through _drive, whose first call
                    # then finds the engine still starved, so it receives more.
                    before = self._out_total
                    try:
                        data = self._recv(size)
                    except SSL.WantReadError:
                        data = await self._drive(self._recv, size, yielded=True)
                    except SSL.Error:
                        # as in _drive: the engine may have written an alert for the peer; best-effort delivery
                        self._collect()
                        await self._flush_quietly()
                        raise
                    else:
                        end = self._collect()
                        if end > before:  # e.g. the answer to a KeyUpdate
                            await self._flush_to(end)
                else:
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
        if self._state is StreamState.CLOSED:
            await trio.lowlevel.checkpoint()
            return
        notify = self._state is StreamState.OK and self._hs is _Hs.DONE and not self._send_lock.held
        self._state = StreamState.CLOSED
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
