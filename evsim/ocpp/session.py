"""Trio driver for the sans-IO OCPP-J core: one :class:`OcppSession` per WebSocket connection.

The session only moves data; every protocol decision is :class:`~evsim.ocpp.rpc.RpcConnection`'s. It is the
only trio code in :mod:`evsim.ocpp`.

Tasks (all inside :meth:`OcppSession.run`'s nursery; no task per message):

* the *reader* (run's own task) awaits ``receive_text``, feeds :meth:`RpcConnection.receive`, wakes the
  ``call()`` waiting for a result and queues incoming CALLs for the handler task. It never blocks on
  sending, so two peers with full buffers cannot deadlock each other;
* the *handler task* answers incoming CALLs one at a time, in arrival order, and writes its replies itself.
  It is separate from the reader so a handler that awaits :meth:`OcppSession.call` (crossing CALLs) still
  gets its result;
* the *writer* sends frames queued by ``call()`` and by the reader. ``call()`` never writes itself: its
  caller may be cancelled at any time, and a send cancelled halfway breaks a TLS or WebSocket stream for
  everybody. Only one task writes at a time (``_writing``); whoever writes drains everything queued;
* the *timer* sleeps until the outstanding CALL's deadline and calls :meth:`RpcConnection.handle_timer`.
  It is never woken: with nothing outstanding it sleeps ``call_timeout`` seconds, since no CALL released
  from now on can expire earlier (every deadline is its release time + ``call_timeout``).

A round trip costs the caller one wake-up of the writer and one of itself; the answering side one wake-up of
its handler task.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeAlias

import attrs
import trio

from evsim.clock import SimClock
from evsim.errors import (
    BrokenTransport,
    CallErrorReceived,
    CallTimeout,
    ClosedTransport,
    OcppError,
    SchemaViolation,
    TransportError,
)
from evsim.ocpp.framing import ERROR_CODES
from evsim.ocpp.rpc import (
    CallReceived,
    CallTimedOut,
    ErrorReceived,
    ResultReceived,
    RpcConnection,
    RpcEvent,
    RpcStatistics,
    SendReceived,
)


class TextTransport(Protocol):
    """What the session needs from a WebSocket: whole text messages in both directions."""

    async def send_text(self, text: str) -> None:
        """Send one text message; raises a :class:`evsim.errors.TransportError` when closed."""
        ...

    async def receive_text(self) -> str:
        """Receive one text message; raises a :class:`evsim.errors.TransportError` when closed."""
        ...


#: Answers an incoming CALL: ``(action, request payload) -> response payload``.
Handler: TypeAlias = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
#: Consumes an incoming OCPP 2.1 SEND: ``(action, payload)``.
SendHandler: TypeAlias = Callable[[str, dict[str, Any]], Awaitable[None]]
#: Observes every event of the RPC core (logging, metrics); must not block.
EventHook: TypeAlias = Callable[[RpcEvent], None]


@attrs.frozen
class SessionStatistics:
    """Snapshot of a session: the RPC counters plus the driver's own."""

    rpc: RpcStatistics
    handler_errors: int
    last_handler_error: str | None
    callers_waiting: int
    incoming_queued: int
    closed: bool


class _Waiter:
    """One ``call()`` waiting for its outcome (an event, or None when the session closed)."""

    __slots__ = ("done", "event", "outcome")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.outcome: RpcEvent | None = None
        self.done = False


class OcppSession:
    """Runs an :class:`RpcConnection` over a text transport.

    Args:
        transport: the WebSocket (anything with ``send_text`` / ``receive_text``).
        rpc: the connection's RPC core (version, validation, timeout and limits are set there).
        handler: answers incoming CALLs. Raising :class:`~evsim.errors.OcppError` answers with its
            ``error_code`` (``GenericError`` if that is not an OCPP-J code; note that a
            ``CallErrorReceived`` escaping from a nested ``call()`` answers with the code *it* carries).
            Any other ``Exception``, or a response that is not a dict or fails the response schema,
            answers ``InternalError`` and is counted (see :meth:`statistics`); the session carries on.
        clock: source of ``now``; ``trio.current_time`` when None.
        on_event: called with every RPC event (including :class:`~evsim.ocpp.rpc.BadInput`); an
            exception it raises ends the session.
        on_send: consumes incoming OCPP 2.1 SEND messages (in order with CALLs); dropped when None. An
            ``Exception`` it raises is counted like a handler's.
    """

    def __init__(
        self,
        transport: TextTransport,
        rpc: RpcConnection,
        handler: Handler,
        *,
        clock: SimClock | None = None,
        on_event: EventHook | None = None,
        on_send: SendHandler | None = None,
    ) -> None:
        self.transport = transport
        self.rpc = rpc
        self._handler = handler
        self._on_send = on_send
        self._on_event = on_event
        self._now: Callable[[], float] = clock.now if clock is not None else trio.current_time

        self._waiters: dict[str, _Waiter] = {}
        self._incoming: deque[CallReceived | SendReceived] = deque()
        self._incoming_ready = trio.Event()
        self._write_ready = trio.Event()
        self._writing = False
        self._running = False
        self._closed = False
        self._close_reason: TransportError | None = None
        self._cancel_scope: trio.CancelScope | None = None

        self._handler_errors = 0
        self._last_handler_error: str | None = None

    # ---- public API -----------------------------------------------------------------------------------

    @property
    def close_reason(self) -> TransportError | None:
        """The transport error that ended :meth:`run`, if any."""
        return self._close_reason

    def statistics(self) -> SessionStatistics:
        """A snapshot of the counters."""
        return SessionStatistics(
            rpc=self.rpc.statistics(),
            handler_errors=self._handler_errors,
            last_handler_error=self._last_handler_error,
            callers_waiting=len(self._waiters),
            incoming_queued=len(self._incoming),
            closed=self._closed,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Move messages until the transport closes.

        Use ``await nursery.start(session.run)``; ``call()`` works once started (earlier CALLs are queued).

        Raises:
            TransportError: the transport closed or broke (whatever ``receive_text``/``send_text`` raised);
                pending ``call()`` s are woken with :class:`~evsim.errors.BrokenTransport`.
            RuntimeError: the session already ran.
        """
        if self._running or self._closed:
            raise RuntimeError("an OcppSession runs once")
        self._running = True
        try:
            async with trio.open_nursery() as nursery:
                self._cancel_scope = nursery.cancel_scope
                nursery.start_soon(self._guarded, self._writer_loop)
                nursery.start_soon(self._guarded, self._handler_loop)
                nursery.start_soon(self._timer_loop)
                task_status.started()
                await self._guarded(self._reader_loop)
        finally:
            self._close()
        if self._close_reason is not None:
            raise self._close_reason

    async def call(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Send a CALL and wait for its answer (after any CALLs queued before it: one outstanding).

        Args:
            action: message name without ``Request``.
            payload: request payload.

        Returns:
            The CALLRESULT payload.

        Raises:
            CallErrorReceived: the peer answered with a CALLERROR, or its answer was unusable (then
                ``details`` is ``{}`` and the code is the violation's; see ``rpc.ErrorReceived``).
            CallTimeout: no answer within the RPC core's ``call_timeout``.
            SchemaViolation: the request payload is invalid (raised before anything is sent).
            OutboxFull: too many CALLs waiting.
            BrokenTransport: the connection was lost before the answer came.
            ClosedTransport: the session had stopped.
        """
        if self._closed:
            raise self._closed_error(action)
        mid = self.rpc.call(action, payload, self._now())
        waiter = _Waiter()
        self._waiters[mid] = waiter
        self._kick_writer()
        try:
            await waiter.event.wait()
        finally:
            if not waiter.done:  # cancelled: withdraw it if it has not been sent yet
                del self._waiters[mid]
                self.rpc.cancel_call(mid)
        outcome = waiter.outcome
        if type(outcome) is ResultReceived:
            return outcome.payload
        if type(outcome) is ErrorReceived:
            raise CallErrorReceived(outcome.error_code, outcome.description, outcome.details)
        if type(outcome) is CallTimedOut:
            raise CallTimeout(f"{action} got no answer within {self.rpc.call_timeout:g} s")
        raise self._closed_error(action)

    def send_nowait(self, action: str, payload: dict[str, Any]) -> str:
        """OCPP 2.1: queue a SEND (unconfirmed) message.

        Returns:
            Its message id.

        Raises:
            OcppError: OCPP 2.0.1 connection (``MessageTypeNotSupported``).
            SchemaViolation: invalid payload.
            OutboxFull: the writer is too far behind.
            ClosedTransport, BrokenTransport: the session is over.
        """
        if self._closed:
            raise self._closed_error(action)
        mid = self.rpc.send_unconfirmed(action, payload)
        self._kick_writer()
        return mid

    # ---- internals --------------------------------------------------------------------------------------

    def _closed_error(self, action: str) -> TransportError:
        reason = self._close_reason
        if reason is None:
            return ClosedTransport(f"OCPP session stopped; {action} not answered")
        error = BrokenTransport(f"connection lost; {action} not answered ({reason})")
        error.__cause__ = reason
        return error

    def _close(self) -> None:
        """Wake every waiting ``call()`` with a transport error; forget unfinished CALLs."""
        self._closed = True
        waiters, self._waiters = self._waiters, {}
        for waiter in waiters.values():
            waiter.done = True
            waiter.event.set()
        self.rpc.cancel_pending()

    async def _guarded(self, loop: Callable[[], Awaitable[None]]) -> None:
        """Run a loop; a transport error ends the whole session (not as an ExceptionGroup)."""
        try:
            await loop()
        except TransportError as exc:
            if self._close_reason is None:
                self._close_reason = exc
            assert self._cancel_scope is not None
            self._cancel_scope.cancel()

    def _kick_writer(self) -> None:
        if not self._writing and self.rpc.has_data_to_send:
            self._write_ready.set()

    def _dispatch(self, events: list[RpcEvent]) -> None:
        hook = self._on_event
        for event in events:
            if hook is not None:
                hook(event)
            if isinstance(event, ResultReceived | ErrorReceived | CallTimedOut):
                waiter = self._waiters.pop(event.message_id, None)
                if waiter is not None:
                    waiter.outcome = event
                    waiter.done = True
                    waiter.event.set()
            elif isinstance(event, CallReceived | SendReceived):
                self._incoming.append(event)
                self._incoming_ready.set()

    async def _reader_loop(self) -> None:
        receive_text = self.transport.receive_text
        rpc = self.rpc
        now = self._now
        while True:
            text = await receive_text()
            self._dispatch(rpc.receive(text, now()))
            self._kick_writer()

    async def _timer_loop(self) -> None:
        rpc = self.rpc
        while True:
            deadline = rpc.get_timer()
            if deadline is None:
                deadline = self._now() + rpc.call_timeout
            await trio.sleep_until(deadline)
            events = rpc.handle_timer(self._now())
            if events:
                self._dispatch(events)
                self._kick_writer()

    async def _write_out(self) -> None:
        """Send everything the RPC core has queued; the caller must check ``_writing`` first."""
        self._writing = True
        try:
            send_text = self.transport.send_text
            while frames := self.rpc.data_to_send():
                for text in frames:
                    await send_text(text)
        finally:
            self._writing = False

    async def _writer_loop(self) -> None:
        while True:
            if self._writing or not self.rpc.has_data_to_send:
                self._write_ready = trio.Event()
                await self._write_ready.wait()
                continue
            await self._write_out()

    async def _handler_loop(self) -> None:
        incoming = self._incoming
        while True:
            if not incoming:
                self._incoming_ready = trio.Event()
                await self._incoming_ready.wait()
                continue
            event = incoming.popleft()
            if type(event) is CallReceived:
                await self._answer(event)
            elif self._on_send is not None:
                try:
                    await self._on_send(event.action, event.payload)
                except Exception as exc:  # like a handler: count it, never end the session
                    self._handler_errors += 1
                    self._last_handler_error = f"on_send for {event.action} failed: {exc!r}"
            if self.rpc.has_data_to_send and not self._writing:
                await self._write_out()

    def _handler_failed(self, message_id: str, exc: Exception, what: str) -> None:
        self._handler_errors += 1
        self._last_handler_error = f"{what}: {exc!r}"
        self._reply_error(message_id, "InternalError", f"{what}: {type(exc).__name__}")

    def _reply_error(self, message_id: str, code: str, description: str) -> None:
        with contextlib.suppress(ValueError):  # no longer pending: the connection was reset meanwhile
            self.rpc.reply_error(message_id, code, description)

    async def _answer(self, event: CallReceived) -> None:
        mid = event.message_id
        try:
            response = await self._handler(event.action, event.payload)
        except OcppError as exc:
            code = exc.error_code if exc.error_code in ERROR_CODES else "GenericError"
            self._reply_error(mid, code, exc.description)
            return
        except Exception as exc:
            self._handler_failed(mid, exc, f"handler for {event.action} failed")
            return
        if type(response) is not dict:
            self._handler_failed(mid, TypeError(f"response is {type(response).__name__}"), "bad response")
            return
        try:
            self.rpc.reply(mid, response)
        except SchemaViolation as exc:
            self._handler_failed(mid, exc, f"invalid {event.action} response")
        except ValueError:
            pass
