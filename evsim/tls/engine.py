"""The OpenSSL engine of a :class:`~evsim.tls.stream.TlsStream` and the pump that moves its ciphertext.

An OpenSSL connection in memory-BIO mode never touches a socket: it reads ciphertext from an incoming
memory BIO and writes ciphertext to an outgoing one, and every engine call either completes or says
``WantReadError``. :class:`BioPump` is the part of a stream that moves those bytes between the BIOs and the
transport: it drives an engine call to completion (:meth:`BioPump._drive`), ships what the engine wrote in
the order it wrote it (:meth:`BioPump._collect`, :meth:`BioPump._flush_to`) and feeds it what the transport
delivers, one reader at a time (:meth:`BioPump._receive_more`). It also holds the stream's transport state
(open, broken with the failure to raise again, closed). :mod:`evsim.tls.stream`'s theory of operation
explains the ordering, locking and cancellation rules these methods keep; :class:`~evsim.tls.stream.TlsStream`
derives from :class:`BioPump` and adds the handshake, the data path and closing.

The data path calls the engine on the raw binding (``_Engine``, below) when pyOpenSSL's internals allow
it, else through pyOpenSSL's public API.
"""

from __future__ import annotations

import contextlib
import enum
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

import trio
from OpenSSL import SSL

from evsim.errors import BrokenTransport, ClosedTransport
from evsim.net.base import NowaitSend
from evsim.runtime import conforms
from evsim.tls import _ossl
from evsim.tls.failures import TlsBrokenTransport, TlsClosedTransport, again

__all__ = ["BIO_READ_SIZE", "CLOSE_NOTIFY_TIMEOUT_S", "RECEIVE_CHUNK", "BioPump", "StreamState"]

T = TypeVar("T")

RECEIVE_CHUNK = 65536
"""Bytes asked of the transport per read: several full records (16 KiB + 256 max each)."""
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


def broke(what: str, exc: BaseException) -> str:
    """Why a transport broke, in words: the underlying error's message (its type when it has none), not its
    repr, so event details read as text."""
    return f"transport broke while {what}: {str(exc) or type(exc).__name__}"


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

    def rebind(self, in_bio: Any, out_bio: Any) -> None:
        """Use new memory BIOs (after ``_ossl.renew_memory_bios``)."""
        self._in = in_bio
        self._out = out_bio

    def starved(self) -> bool:
        """No plaintext left and no ciphertext waiting: the next ``SSL_read`` can only say WANT_READ."""
        return bool(_lib.SSL_pending(self._ssl) == 0 and _lib.BIO_get_mem_data(self._in, _ffi.NULL) == 0)

    # send and recv are KI-protected (as is the stream's handshake step): trio defers a Ctrl-C that arrives
    # while OpenSSL runs a Python callback to the next checkpoint (see evsim.interrupts).

    @trio.lowlevel.enable_ki_protection
    def send(self, data: bytes) -> int:
        n: int = _lib.SSL_write(self._ssl, data, len(data))
        if n <= 0:
            self._conn._raise_ssl_error(self._ssl, n)  # raises what Connection.send raises
        return n

    def feed(self, data: bytes) -> None:
        if _lib.BIO_write(self._in, data, len(data)) <= 0:  # pragma: no cover - memory BIOs: only on OOM
            self._conn.bio_write(data)  # let pyOpenSSL raise its error

    @trio.lowlevel.enable_ki_protection
    def recv(self, size: int) -> bytes:
        try:
            buf = _scratch.buf
        except AttributeError:  # this thread's first call
            buf = _buffer()
        n = _lib.SSL_read(self._ssl, buf, min(size, RECEIVE_CHUNK))
        if n <= 0:
            self._conn._raise_ssl_error(self._ssl, n)  # raises what Connection.recv raises
        data: bytes = _ffi.buffer(buf, n)[:]  # annotated, not cast(): that is a Python call per message
        return data

    def drain(self) -> bytes:
        try:
            buf = _scratch.buf
        except AttributeError:  # this thread's first call
            buf = _buffer()
        bio_read, out = _lib.BIO_read, self._out
        n = bio_read(out, buf, RECEIVE_CHUNK)
        if n <= 0:  # a memory BIO says -1 (retry) when empty
            return b""
        if n < RECEIVE_CHUNK:
            data: bytes = _ffi.buffer(buf, n)[:]
            return data
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


class StreamState(enum.Enum):
    """A stream's transport state: usable, broken (a stored failure is raised again), or closed by us."""

    OK = "ok"
    BROKEN = "broken"
    CLOSED = "closed"


class BioPump:
    """Moves ciphertext between an OpenSSL connection's memory BIOs and a transport stream.

    The base of :class:`~evsim.tls.stream.TlsStream` (see the module docstring).

    Args:
        transport_stream: the stream carrying the ciphertext.
        conn: the OpenSSL connection, in memory-BIO mode.
    """

    __slots__ = (
        "_conn",
        "_drain_fast",
        "_engine",
        "_failure",
        "_feed",
        "_need_input",
        "_out_sent",
        "_out_total",
        "_outbox",
        "_push",
        "_recv",
        "_recv_count",
        "_recv_lock",
        "_send_lock",
        "_starved",
        "_state",
        "_transport_eof",
        "_write",
        "transport_stream",
    )

    def __init__(self, transport_stream: trio.abc.Stream, conn: SSL.Connection) -> None:
        self.transport_stream = transport_stream
        # evsim's own transports take bytes synchronously and keep what the kernel did not take queued, in
        # order, even when a send is cancelled (NowaitSend): then no send can break the stream.
        self._push: Callable[[bytes], bool | None] | None = (
            cast(NowaitSend, transport_stream).send_nowait if conforms(transport_stream, NowaitSend) else None
        )
        self._conn = conn
        fast = self._engine = _fast_engine(conn)
        self._recv: Callable[[int], bytes] = fast.recv if fast is not None else conn.recv
        self._drain_fast: Callable[[], bytes] | None = fast.drain if fast is not None else None
        self._write: Callable[[bytes], int] = fast.send if fast is not None else conn.send
        self._feed: Callable[[bytes], object] = fast.feed if fast is not None else conn.bio_write
        self._starved: Callable[[], bool] | None = fast.starved if fast is not None else None
        self._state = StreamState.OK
        self._failure: BaseException | None = None
        self._send_lock = _Mutex()
        self._outbox: list[bytes] = []
        self._out_total = 0  # bytes ever queued in the outbox
        self._out_sent = 0  # bytes ever taken from the outbox for the transport
        self._recv_lock = _Mutex()
        self._recv_count = 0
        self._transport_eof = False
        self._need_input = False  # the engine said WantRead and has been fed nothing since

    # ------------------------------------------------------------ state

    def _set_broken(self, exc: BaseException) -> BaseException:
        if self._state is StreamState.OK:
            self._state = StreamState.BROKEN
            self._failure = exc
        return exc

    def _check_usable(self) -> None:
        if self._state is StreamState.CLOSED:
            raise TlsClosedTransport("this TLS stream was closed")
        if self._state is StreamState.BROKEN:
            assert self._failure is not None
            raise again(self._failure) from self._failure

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

    def _renew_bios(self) -> bool:
        """Swap the engine's memory BIOs for new empty ones if nothing waits in them (a memory BIO keeps the
        largest buffer it ever held: ``_ossl.renew_memory_bios``). Only between engine calls."""
        bios = _ossl.renew_memory_bios(self._conn)
        if bios is None:
            return False
        if self._engine is not None:
            self._engine.rebind(*bios)
        return True

    async def _send_raw(self, data: bytes) -> bool:
        """Hand ``data`` to the transport; True if that yielded to trio (a checkpoint happened)."""
        push = self._push
        try:
            if push is not None:
                # Taken synchronously, so a cancellation below only delays the queued rest.
                taken = push(data)
                if taken:
                    return False
                if taken is False:
                    await self.transport_stream.send_all(b"")
                    return True
                push = None  # it took nothing (a TLS stream in its handshake): the ordinary way below
            await self.transport_stream.send_all(data)
            return True
        except (trio.BrokenResourceError, BrokenTransport) as exc:
            raise self._set_broken(TlsBrokenTransport(broke("sending", exc))) from exc
        except (trio.ClosedResourceError, ClosedTransport) as exc:
            raise TlsClosedTransport("the transport under this TLS stream is closed") from exc
        except BaseException:
            if push is None:
                # Cancelled (or worse) inside send_all: an unknown prefix of a record went out.
                self._set_broken(
                    TlsBrokenTransport("a send was interrupted mid-record; the TLS stream is unusable")
                )
            raise

    def _collect(self) -> int:
        """Queue what the engine wrote; return the outbox position where it ends (call right after the
        engine call, without a checkpoint in between)."""
        drain = self._drain_fast  # _drain's first step, inlined: several times per message
        data = drain() if drain is not None else self._drain()
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
            raise self._set_broken(TlsBrokenTransport(broke("receiving", exc))) from exc
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
                if self._state is StreamState.CLOSED:
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
