"""The accept loop shared by the CSMS and the Local Controller: no peer can stop a listener.

:meth:`Acceptor.serve` accepts connections and runs a handler for each in its own task of one nursery. Whatever
one connection does, the loop keeps accepting and the other sessions keep running:

* **A connection lost before it is accepted** (a connect followed at once by a reset: ``getpeername`` fails
  with ENOTCONN; ECONNABORTED, ECONNRESET, ...) is skipped, counted and recorded as one ``accept_failed``
  event. Any other accept error is counted and recorded the same way, followed by a short wait
  (:data:`ACCEPT_RETRY_INITIAL_S`) so that a listener failing every accept cannot make the loop spin.
* **Out of file descriptors or kernel memory** (EMFILE, ENFILE, ENOMEM, ENOBUFS from accept(2)): the loop
  waits :data:`ACCEPT_RETRY_INITIAL_S` of trio time and retries, doubling the wait up to
  :data:`ACCEPT_RETRY_MAX_S` (like ``trio.serve_listeners``, which waits a fixed 0.1 s), until accept works
  again. One ``accept_paused`` event per episode (not per retry); the connections waiting in the listen backlog
  are accepted once descriptors are free again. Established sessions need no new descriptors and carry on.
* **Limits** (checked right after accept; over a limit the connection is closed at once and one
  ``connection_refused`` event names the reason, the peer and the limit):

  ``max_connections``
      Connections open at once through this listener. Default, for a listener whose connections hold file
      descriptors (loopback TCP): the process's soft ``RLIMIT_NOFILE`` minus :data:`FD_RESERVE` descriptors,
      divided by the descriptors one connection costs (1 for the CSMS, 2 for a Local Controller, which opens an
      upstream link per station), so the node refuses connections cleanly before accept(2) would fail. No
      default limit on the in-memory network. (The ``evsim`` command raises the soft limit to the hard one at
      start, :func:`evsim.runtime.raise_open_file_limit`.)
  ``max_pending_per_address``
      Connections from one peer address (IP, or host name on the in-memory network) that are not yet
      *admitted*: still in the TLS handshake, the HTTP upgrade, or before their first Accepted BootNotification
      (at the CSMS; at a Local Controller, before the CSMS accepted one). Default: half of ``max_connections``, so one address can never hold every socket with
      connections that never finish. Admitted stations do not count, and honest stations are pre-admission
      only for the moment of their boot, so a whole fleet behind one address (every station of a loopback run
      comes from 127.0.0.1) is not refused; what bounds the time a connection may stay pre-admission is the TLS
      handshake timeout, the WebSocket ``open_timeout`` and the node's boot timeout.

**Handshake admission** (``max_handshakes``, opt-in): at most that many accepted connections may be in their
set-up (the TLS handshake) at once; while they are, the loop does not call accept(2), so further connections wait
in the kernel's listen backlog rather than in the TLS layer. A storm of thousands of simultaneous connects then
costs each handshake about ``max_handshakes`` handshakes' time instead of the whole storm's: those in progress
finish within the handshake timeout (which starts when the server starts the handshake, after accept) instead of
all starving together. The handler ends its set-up with :func:`handshake_finished` (or by being admitted, or by
returning).

The handler marks its connection admitted with :func:`connection_admitted` (from the connection's task or any
task it started); a connection's slots are released when its handler returns.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import errno
from collections.abc import Awaitable, Callable

import attrs
import trio

from evsim.errors import BrokenTransport, ClosedTransport, ConfigError, TransportError
from evsim.net.base import format_address, remote_address
from evsim.recorder import Recorder

__all__ = [
    "ACCEPT_RETRY_INITIAL_S",
    "ACCEPT_RETRY_MAX_S",
    "DEFAULT_MAX_HANDSHAKES",
    "FD_RESERVE",
    "AcceptStatistics",
    "Acceptor",
    "connection_admitted",
    "current_peer",
    "default_max_connections",
    "handshake_finished",
]

ACCEPT_RETRY_INITIAL_S = 0.05
"""First wait (trio time, s) after accept(2) ran out of descriptors or memory; doubled on each retry."""

ACCEPT_RETRY_MAX_S = 1.0
"""Longest wait between accept retries while out of descriptors or memory (s)."""

DEFAULT_MAX_HANDSHAKES = 128
"""The CSMS's ``max_handshakes`` default: at a few ms of CPU per handshake, the last of 128 in progress finishes
well under a second after the first; enough in flight to keep a core busy over loopback. Each is bounded by the
handshake timeout, so connections that never finish theirs delay others by at most that long."""

FD_RESERVE = 64
"""Descriptors kept free below ``RLIMIT_NOFILE`` for everything but accepted connections (log and run files,
upstream links, the listener itself, a connection accepted only to be refused)."""

_UNLIMITED_FDS = 1 << 20
"""What an unlimited ``RLIMIT_NOFILE`` counts as (Linux's default ``fs.nr_open``)."""

_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})

#: accept(2) / getpeername errors that concern the one connection being accepted (it was reset or aborted).
_PER_CONNECTION_ERRNOS = frozenset(
    {errno.ENOTCONN, errno.ECONNABORTED, errno.ECONNRESET, errno.EPROTO, errno.EPERM, errno.ETIMEDOUT}
)

_current: contextvars.ContextVar[_Slot] = contextvars.ContextVar("evsim_accepted_connection")


def default_max_connections(fds_per_connection: int = 1) -> int | None:
    """Connections a listener may hold: (soft ``RLIMIT_NOFILE`` - :data:`FD_RESERVE`) / ``fds_per_connection``.

    Returns:
        At least 1; None where the limit cannot be read (no :mod:`resource` module).
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - not Unix
        return None
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft > _UNLIMITED_FDS:
        soft = _UNLIMITED_FDS
    return max(1, (soft - FD_RESERVE) // max(1, fds_per_connection))


def connection_admitted() -> None:
    """Mark the current task's accepted connection admitted: it no longer counts against its address's
    ``max_pending_per_address``. Idempotent; does nothing outside a connection handler."""
    slot = _current.get(None)
    if slot is not None:
        slot.admit()


def handshake_finished() -> None:
    """End the current task's connection's set-up: it no longer counts against ``max_handshakes``. Idempotent;
    does nothing outside a connection handler."""
    slot = _current.get(None)
    if slot is not None:
        slot.set_up()


def current_peer() -> str:
    """``host:port`` of the current task's accepted connection ("?" when unknown or outside a handler)."""
    slot = _current.get(None)
    return "?" if slot is None else slot.peer


@attrs.frozen
class AcceptStatistics:
    """A snapshot of an accept loop.

    Attributes:
        accepted: connections handed to the handler.
        open: connections whose handler is still running.
        pending: open connections not yet admitted.
        accept_failures: connections lost before they could be accepted (reset, other per-connection errors).
        refused: connections closed at once, by reason (``"max_connections"``, ``"max_pending_per_address"``).
        pauses: episodes of accept(2) running out of descriptors or memory.
        retries: accept retries during those episodes.
        max_connections: the limit in force (None: none).
        max_pending_per_address: the limit in force (None: none).
        handshakes: connections in their set-up (counted against ``max_handshakes``).
        max_handshakes: the limit in force (None: none).
    """

    accepted: int
    open: int
    pending: int
    accept_failures: int
    refused: dict[str, int]
    pauses: int
    retries: int
    max_connections: int | None
    max_pending_per_address: int | None
    handshakes: int = 0
    max_handshakes: int | None = None


class _Slot:
    """One accepted connection's share of the limits."""

    __slots__ = ("_acceptor", "_address", "_pending", "_setup", "peer")

    def __init__(self, acceptor: Acceptor, address: str, peer: str, setup: object | None) -> None:
        self._acceptor = acceptor
        self._address = address
        self._pending = True
        self._setup = setup  # the handshake-admission token, until the set-up ends
        self.peer = peer

    def set_up(self) -> None:
        setup, self._setup = self._setup, None
        if setup is not None:
            self._acceptor._in_setup -= 1
            self._acceptor._end_setup(setup)

    def admit(self) -> None:
        self.set_up()
        if self._pending:
            self._pending = False
            self._acceptor._unpend(self._address)

    def release(self) -> None:
        self.admit()
        self._acceptor._open -= 1


class Acceptor:
    """One listener's accept loop with its limits (see the module docstring).

    Args:
        node: the node's name, for events.
        recorder: where refusals and failures are recorded.
        max_connections: connections open at once; None derives it from ``RLIMIT_NOFILE`` for a listener whose
            connections hold file descriptors (none otherwise).
        max_pending_per_address: not-yet-admitted connections per peer address; None: half of
            ``max_connections``.
        fds_per_connection: descriptors one connection costs the node (for the derived ``max_connections``).
        max_handshakes: connections in their set-up at once (see the module docstring); None: no limit.

    Raises:
        ConfigError: a limit below 1.
    """

    def __init__(
        self,
        node: str,
        recorder: Recorder,
        *,
        max_connections: int | None = None,
        max_pending_per_address: int | None = None,
        fds_per_connection: int = 1,
        max_handshakes: int | None = None,
    ) -> None:
        for name, limit in (
            ("max_connections", max_connections),
            ("max_pending_per_address", max_pending_per_address),
            ("max_handshakes", max_handshakes),
        ):
            if limit is not None and limit < 1:
                raise ConfigError(f"{name} must be >= 1", path=f"{node}.{name}", value=limit)
        self.node = node
        self.recorder = recorder
        self._settings = (max_connections, max_pending_per_address)
        self._fds_per_connection = fds_per_connection
        #: the limits in force (set by :meth:`serve` from the settings and the listener)
        self.max_connections: int | None = max_connections
        self.max_pending_per_address: int | None = max_pending_per_address
        self._open = 0
        self._pending: collections.Counter[str] = collections.Counter()
        self._accepted = 0
        self._accept_failures = 0
        self._refused: collections.Counter[str] = collections.Counter()
        self._pauses = 0
        self._retries = 0
        self.max_handshakes = max_handshakes
        self._handshakes = trio.CapacityLimiter(max_handshakes) if max_handshakes is not None else None
        self._in_setup = 0  # handlers holding a place (the loop holds one more while it waits in accept)

    async def serve(
        self,
        listener: trio.abc.Listener[trio.abc.Stream],
        handler: Callable[[trio.abc.Stream], Awaitable[None]],
    ) -> None:
        """Accept on ``listener`` until cancelled (or the listener is closed), ``handler`` per connection.

        The handler owns its stream (it closes it); its exceptions are its own and propagate (a handler must
        catch what a peer can cause).
        """
        self.resolve_limits(listener)
        async with trio.open_nursery() as nursery:
            delay: float | None = None  # the wait before the next retry while out of resources
            while True:
                setup: object | None = None
                if self._handshakes is not None:
                    setup = object()
                    await self._handshakes.acquire_on_behalf_of(setup)
                try:
                    stream = await listener.accept()
                except ClosedTransport:
                    self._end_setup(setup)
                    return
                except OSError as exc:
                    self._end_setup(setup)
                    if exc.errno in _CAPACITY_ERRNOS:
                        if delay is None:
                            delay = ACCEPT_RETRY_INITIAL_S
                            self._pauses += 1
                            self.recorder.emit(
                                self.node,
                                "accept_paused",
                                reason=f"out of resources: {exc.strerror or exc}",
                                errno=errno.errorcode.get(exc.errno or 0, str(exc.errno)),
                                retry_s=ACCEPT_RETRY_INITIAL_S,
                                max_retry_s=ACCEPT_RETRY_MAX_S,
                            )
                        else:
                            delay = min(delay * 2, ACCEPT_RETRY_MAX_S)
                        self._retries += 1
                        await trio.sleep(delay)
                        continue
                    await self._accept_failed(exc, per_connection=exc.errno in _PER_CONNECTION_ERRNOS)
                    continue
                except TransportError as exc:
                    self._end_setup(setup)
                    await self._accept_failed(exc, per_connection=isinstance(exc, BrokenTransport))
                    continue
                except BaseException:
                    self._end_setup(setup)
                    raise
                delay = None
                await self._admit(stream, nursery, handler, setup)

    def resolve_limits(self, listener: trio.abc.Listener[trio.abc.Stream]) -> None:
        """Fill in the default limits for ``listener``: ``max_connections`` from ``RLIMIT_NOFILE`` only when its
        connections hold file descriptors (loopback TCP; the in-memory network has no such limit)."""
        total, pending = self._settings
        if total is None and getattr(listener, "uses_file_descriptors", False):
            total = default_max_connections(self._fds_per_connection)
        if pending is None and total is not None:
            pending = max(1, total // 2)
        self.max_connections, self.max_pending_per_address = total, pending

    async def _accept_failed(self, exc: Exception, *, per_connection: bool) -> None:
        """Count and record a failed accept; after an error that may not be one connection's, wait a little
        (a listener that fails every accept must not spin)."""
        self._accept_failures += 1
        reason = "connection lost before accept" if per_connection else "accept failed"
        self.recorder.emit(self.node, "accept_failed", reason=reason, detail=str(exc))
        if not per_connection:
            await trio.sleep(ACCEPT_RETRY_INITIAL_S)

    async def _admit(
        self,
        stream: trio.abc.Stream,
        nursery: trio.Nursery,
        handler: Callable[[trio.abc.Stream], Awaitable[None]],
        setup: object | None = None,
    ) -> None:
        peer = remote_address(stream)
        host = peer[0] if peer is not None else "?"
        shown = format_address(peer) if peer is not None else "?"
        refusal: tuple[str, int] | None = None
        if self.max_connections is not None and self._open >= self.max_connections:
            refusal = ("max_connections", self.max_connections)
        elif self.max_pending_per_address is not None and self._pending[host] >= self.max_pending_per_address:
            refusal = ("max_pending_per_address", self.max_pending_per_address)
        if refusal is not None:
            reason, limit = refusal
            self._refused[reason] += 1
            self.recorder.emit(
                self.node,
                "connection_refused",
                reason=reason,
                peer=shown,
                limit=limit,
            )
            self._end_setup(setup)
            await _close(stream)
            return
        self._accepted += 1
        self._open += 1
        self._pending[host] += 1
        if setup is not None:
            self._in_setup += 1
        nursery.start_soon(self._run, _Slot(self, host, shown, setup), stream, handler)

    async def _run(
        self, slot: _Slot, stream: trio.abc.Stream, handler: Callable[[trio.abc.Stream], Awaitable[None]]
    ) -> None:
        _current.set(slot)  # this task's own context (a copy), inherited by the tasks the handler starts
        try:
            await handler(stream)
        finally:
            slot.release()

    def _end_setup(self, setup: object | None) -> None:
        if setup is not None and self._handshakes is not None:
            self._handshakes.release_on_behalf_of(setup)

    def _unpend(self, host: str) -> None:
        left = self._pending[host] - 1
        if left > 0:
            self._pending[host] = left
        else:
            del self._pending[host]

    def statistics(self) -> AcceptStatistics:
        """A snapshot of the loop's counters."""
        return AcceptStatistics(
            accepted=self._accepted,
            open=self._open,
            pending=sum(self._pending.values()),
            accept_failures=self._accept_failures,
            refused=dict(self._refused),
            pauses=self._pauses,
            retries=self._retries,
            max_connections=self.max_connections,
            max_pending_per_address=self.max_pending_per_address,
            handshakes=self._in_setup,
            max_handshakes=self.max_handshakes,
        )


async def _close(stream: trio.abc.Stream) -> None:
    """Close a refused connection at once (no TLS close_notify, no HTTP answer)."""
    with contextlib.suppress(TransportError, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        await trio.aclose_forcefully(stream)
