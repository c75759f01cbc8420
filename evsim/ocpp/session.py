"""Trio driver for the sans-IO OCPP-J core: one :class:`OcppSession` per WebSocket connection.

The session only moves data; every protocol decision is :class:`~evsim.ocpp.rpc.RpcConnection`'s. It is the
only trio code in :mod:`evsim.ocpp`.

Theory of operation. A round trip should cost as few task switches as possible (each one resumes a deep
stack of coroutines: measured ≈5 µs), so the common path has none besides waiting for the peer:

* **Writing never blocks a caller.** Frames the RPC core queued are sent at once by whoever queued them
  (``call()``, the reader after answering) through the WebSocket's synchronous path
  (:meth:`NowaitTextTransport.send_text_nowait`), which frames, encrypts and hands the bytes to the kernel
  without a checkpoint - so a cancelled caller can never leave half a frame on the wire. Whatever the kernel does not
  take waits, in order, in the layers below; then (and for transports without that path) the *writer task*
  sends it with ordinary awaits. The writer is started the first time it is needed and only the session's
  end cancels it. Only one of them writes at a time (``_writing``); the writer drains everything queued.
* **The reader** (at first :meth:`OcppSession.run`'s own task) awaits ``receive_text``, feeds
  :meth:`RpcConnection.receive`, wakes the ``call()`` waiting for a result and answers incoming CALLs
  itself, one at a time in arrival order: a handler that finishes without blocking (the usual case) runs
  right there. A handler that blocks (it awaits something) is not stuck in the way of reading: at its first
  suspension the reader starts a *new reader task* and carries on as the handler's task; once the queue of
  incoming CALLs is empty it ends. So crossing CALLs (a handler awaiting :meth:`OcppSession.call`) still get
  their results, and two peers with full buffers cannot deadlock, because reading never waits on writing.
* the *timer* waits on an :class:`~evsim.timers.Alarm` whose deadline follows
  :meth:`RpcConnection.get_timer` (kept up to date by :meth:`OcppSession._send_queued`, which runs whenever the
  RPC core may have released a CALL): it wakes only when the outstanding CALL's deadline really passes, then
  calls :meth:`RpcConnection.handle_timer`. A CALL answered in time costs two deadline moves and no wake-up
  (sleeping until each deadline cost a task switch, a Cancelled exception and, in virtual time, a clock
  jump of its own per CALL); in virtual time a move is a push on the run's timer heap
  (:class:`~evsim.timers.VirtualTimers`), on the real clock a cancel scope's. Whatever the deadline,
  ``handle_timer`` decides: a stale deadline only causes a harmless early look. That is also why, while
  CALLs follow each other closely (less than a quarter of ``call_timeout`` apart: :data:`_BUSY_FRACTION`),
  the deadline is only ever moved *earlier*: moving a cancel scope's deadline costs trio a heap update
  (≈3 µs, two per CALL), while leaving an earlier,
  stale deadline costs one early look per ``call_timeout`` at most - the timer then re-arms on the
  outstanding CALL. Sparse traffic (a Heartbeat every few minutes) moves it both ways, as it would look
  early after every CALL otherwise. The timer task exists only while something has a deadline: when it wakes
  and finds none (an idle link after its release), it ends, and the next deadline starts it again
  (:meth:`OcppSession._start_timer`).

* **Back-pressure.** Reading produces output for the same peer (a CALLRESULT or CALLERROR per CALL, even per
  malformed frame), so a peer that sends and never reads would make us queue without limit. When frames wait
  for the writer (the fast path could not hand everything to the kernel), the reader checks the *send queue* -
  the UTF-8 bytes of the frames the RPC core holds plus those handed down but not yet sent - and stops reading
  while it exceeds ``max_send_queue``; the writer wakes it once the queue is back under the bound. The queue
  can thus exceed the bound by at most the answers to one received message. Honest peers never get near it
  (one outstanding CALL per direction, OCPP-J §4.1.1), so two peers that both stop reading cannot deadlock in
  practice, and the send timeout below ends such a pair anyway. When nothing waits (the fast path) the reader
  only looks at two flags.
* **Send timeout.** A peer that never reads would still hold the bound's memory forever: when the writer has
  frames to send and makes no progress for ``send_timeout`` seconds, the session ends with
  :class:`~evsim.errors.PeerNotReading` (the node records one disconnect event with reason
  ``peer_not_reading``) and the node closes the connection. The timer task watches (:meth:`_check_stall`):
  armed when the writer starts, it looks every ``send_timeout`` s whether the busy writer sent anything
  since, so a stuck writer is found after between one and two ``send_timeout``; the writer only counts.

* **Idle watch.** A quiet link need not hold its compression state and buffers (thousands of stations spend
  most of their time between Heartbeats): once no frame arrived for ``idle_release_s`` seconds, the timer calls
  the transport's ``release_idle_state()`` when it has one (:meth:`evsim.ws.WebSocket.release_idle_state`).
  Like the stall watch it costs the message path a comparison: armed by the first frame received after a
  release, it looks every ``idle_release_s`` s whether frames arrived since, and releases when none did (a
  Heartbeat every 300 s costs each end one wake-up). Then it asks the C allocator to return the freed pages
  (:func:`evsim.runtime.give_back_memory`, rate-limited per process; when it declines, one session of the
  process tries once more a period later).

A round trip over a WebSocket costs the caller one wake-up (its result), the answering side one (its reader).
"""

from __future__ import annotations

import contextlib
import enum
import math
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, Protocol, TypeAlias, cast, runtime_checkable

import attrs
import trio
import trio.testing

from evsim.clock import SimClock
from evsim.cpu import Cpu
from evsim.errors import (
    BrokenTransport,
    CallErrorReceived,
    CallTimeout,
    ClosedTransport,
    OcppError,
    PeerNotReading,
    SchemaViolation,
    TransportError,
)
from evsim.ocpp.framing import ERROR_CODES, utf8_length
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
from evsim.runtime import conforms, give_back_memory
from evsim.timers import Alarm

DEFAULT_MAX_SEND_QUEUE = 256 * 1024
"""Bytes (UTF-8 text of OCPP frames) that may wait to be sent to one peer before the session stops reading it."""

DEFAULT_SEND_TIMEOUT = 60.0
"""Seconds the writer may make no progress while frames wait before the peer is dropped as not reading."""

_BUSY_FRACTION = 0.25
"""CALLs less than this fraction of ``call_timeout`` apart count as busy traffic: the timer's deadline is then
only moved earlier (see the module docstring)."""

DEFAULT_IDLE_RELEASE_S = 30.0
"""Seconds without a received frame after which the transport's idle state is released (the idle watch above),
in real time; in virtual time (trio's ``MockClock``) the default is off: there the watch's wake-ups cost more
(≈+30 % CPU per message on a simulated day) than the memory is worth."""


class _Default(enum.Enum):
    IDLE_RELEASE = "idle release: DEFAULT_IDLE_RELEASE_S in real time, off in virtual time"


IDLE_RELEASE_DEFAULT = _Default.IDLE_RELEASE

_OUTCOMES = (ResultReceived, ErrorReceived, CallTimedOut)  # tuples: no union object built per event
_INCOMING = (CallReceived, SendReceived)


class TextTransport(Protocol):
    """What the session needs from a WebSocket: whole text messages in both directions."""

    async def send_text(self, text: str) -> None:
        """Send one text message; raises a :class:`evsim.errors.TransportError` when closed."""
        ...

    async def receive_text(self) -> str:
        """Receive one text message; raises a :class:`evsim.errors.TransportError` when closed."""
        ...


@runtime_checkable
class NowaitTextTransport(TextTransport, Protocol):
    """A text transport with a synchronous send path (:class:`evsim.ws.WebSocket` is one).

    The session uses it, when its transport has it (``isinstance``, once per session), to send a frame in the
    same step that produced it (see the module docstring).
    """

    def send_text_nowait(self, text: str, /) -> bool:
        """Send one text message without blocking and without a trio checkpoint.

        The message takes its place among the transport's messages at once (as with ``send_text``), so a
        caller's cancellation can never leave part of it on the wire.

        Returns:
            True when the message is on its way (nothing waits for the caller); False when bytes wait in
            the transport: ``await flush()`` sends them (``send_text`` sends them first too).

        Raises:
            TransportError: the transport is closed or broken.
        """
        ...

    async def flush(self) -> None:
        """Send what :meth:`send_text_nowait` left waiting; raises a :class:`evsim.errors.TransportError`
        when closed."""
        ...


#: Answers an incoming CALL: ``(action, request payload) -> response payload``.
Handler: TypeAlias = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
#: Consumes an incoming OCPP 2.1 SEND: ``(action, payload)``.
SendHandler: TypeAlias = Callable[[str, dict[str, Any]], Awaitable[None]]
#: Observes every event of the RPC core (logging, metrics); must not block.
EventHook: TypeAlias = Callable[[RpcEvent], None]


@attrs.frozen
class SessionStatistics:
    """Snapshot of a session: the RPC counters plus the driver's own.

    Attributes:
        send_queue_bytes: UTF-8 bytes of frames waiting to be sent (in the RPC core, or handed down to the
            transport and not sent yet).
        send_queue_peak: the largest ``send_queue_bytes`` the reader saw (it stops reading above
            ``max_send_queue``).
        reads_paused: how often the reader stopped reading until the writer drained the send queue.
    """

    rpc: RpcStatistics
    handler_errors: int
    last_handler_error: str | None
    callers_waiting: int
    incoming_queued: int
    closed: bool
    send_queue_bytes: int = 0
    send_queue_peak: int = 0
    reads_paused: int = 0


class _Waiter:
    """One ``call()`` waiting for its outcome (an event, or None when the session closed).

    Parks the calling task itself (``wait_task_rescheduled``) instead of holding a ``trio.Event``: no
    Event, set and parking lot per CALL, one wake-up.
    """

    __slots__ = ("done", "outcome", "task")

    def __init__(self) -> None:
        self.outcome: RpcEvent | None = None
        self.done = False
        self.task: trio.lowlevel.Task | None = None

    def wake(self, outcome: RpcEvent | None) -> None:
        self.outcome = outcome
        self.done = True
        task = self.task
        if task is not None:
            self.task = None
            trio.lowlevel.reschedule(task)

    def _abort(self, _raise_cancel: object) -> trio.lowlevel.Abort:
        self.task = None
        return trio.lowlevel.Abort.SUCCEEDED


@runtime_checkable
class IdleRelease(Protocol):
    """A transport that can give back state it does not need while the link is idle (:class:`evsim.ws.WebSocket`)."""

    def release_idle_state(self) -> int:
        """Free what the next message can rebuild; the number of objects freed (0: nothing held)."""
        ...


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
        max_send_queue: bytes that may wait to be sent before the reader stops reading (back-pressure).
        send_timeout: seconds without progress of the writer, while frames wait, before the session ends
            with :class:`~evsim.errors.PeerNotReading` (found within twice that); None never gives up.
        cpu: the node's CPU model in virtual time (:mod:`evsim.cpu`): ``call()`` charges
            ``ocpp/call/<action>`` (and ``validate/<action>`` when the RPC core validates) before the CALL
            leaves, an incoming CALL ``ocpp/serve/<action>`` (and ``validate/<action>``) before its handler
            runs, both by the frame's size. None: no cost.
        cpu_owner: whom these operations are for (the station's id), the order among operations that reach
            ``cpu`` at the same instant (:func:`evsim.cpu.set_cpu_owner`); None: the calling task's.
        idle_release_s: seconds without a received frame after which the transport's ``release_idle_state()``
            is called (found within twice that); None never releases; by default
            :data:`DEFAULT_IDLE_RELEASE_S` in real time and off under trio's ``MockClock``.
    """

    # one per connection end: slots instead of an instance dict (≈1.5 KiB each for a session, bench/memory.py)
    __slots__ = (
        "_backlog",
        "_busy",
        "_close_reason",
        "_closed",
        "_cpu",
        "_cpu_owner",
        "_flush_fast",
        "_handler",
        "_handler_errors",
        "_handling",
        "_held",
        "_idle_auto",
        "_idle_deadline",
        "_idle_mark",
        "_idle_release_s",
        "_incoming",
        "_last_call",
        "_last_handler_error",
        "_max_send_queue",
        "_moved",
        "_now",
        "_nursery",
        "_on_event",
        "_on_send",
        "_queue_peak",
        "_reads_paused",
        "_release_idle",
        "_room",
        "_running",
        "_send_fast",
        "_send_timeout",
        "_sends_done",
        "_sizes",
        "_stall_deadline",
        "_stall_mark",
        "_timer",
        "_timer_deadline",
        "_timer_running",
        "_trim_due",
        "_waiters",
        "_write_ready",
        "_writing",
        "rpc",
        "transport",
    )

    def __init__(
        self,
        transport: TextTransport,
        rpc: RpcConnection,
        handler: Handler,
        *,
        clock: SimClock | None = None,
        on_event: EventHook | None = None,
        on_send: SendHandler | None = None,
        max_send_queue: int = DEFAULT_MAX_SEND_QUEUE,
        send_timeout: float | None = DEFAULT_SEND_TIMEOUT,
        cpu: Cpu | None = None,
        cpu_owner: str | None = None,
        idle_release_s: float | _Default | None = IDLE_RELEASE_DEFAULT,
    ) -> None:
        self._idle_auto = idle_release_s is IDLE_RELEASE_DEFAULT
        if isinstance(idle_release_s, _Default):
            idle_release_s = DEFAULT_IDLE_RELEASE_S
        if max_send_queue < 1 or any(t is not None and t <= 0 for t in (send_timeout, idle_release_s)):
            raise ValueError("max_send_queue, send_timeout and idle_release_s must be positive")
        self.transport = transport
        self.rpc = rpc
        self._handler = handler
        self._on_send = on_send
        self._on_event = on_event
        self._now: Callable[[], float] = clock.now if clock is not None else trio.current_time

        # the transport's synchronous send path (see the module docstring), when it has one
        self._send_fast: Callable[[str], bool] | None = None
        self._flush_fast: Callable[[], Awaitable[None]] | None = None
        if conforms(transport, NowaitTextTransport):
            fast = cast(NowaitTextTransport, transport)
            self._send_fast, self._flush_fast = fast.send_text_nowait, fast.flush

        self._waiters: dict[str, _Waiter] = {}
        self._incoming: list[CallReceived | SendReceived] = []  # usually empty: a list is 10x smaller
        self._handling = False  # a task is answering incoming CALLs (the reader, or a former reader)
        self._moved = False  # ... and a handler blocked it, so another task reads now
        self._write_ready: trio.Event | None = None  # None: no writer task yet
        self._timer: Alarm | None = None  # the timer loop waits on it (see _timer_loop)
        self._timer_deadline = math.inf  # what the scope's deadline was last set to
        self._timer_running = False  # the timer task exists (it ends when nothing has a deadline)
        self._last_call = -math.inf  # when call() last ran
        self._busy = False  # CALLs follow each other closely: the deadline only moves earlier
        self._writing = False
        self._backlog = False  # the transport holds bytes only an awaited flush() sends
        self._max_send_queue = max_send_queue
        self._send_timeout = send_timeout
        self._held = 0  # bytes of frames taken from the RPC core and not yet sent (see _send_queue_bytes)
        self._room: trio.Event | None = None  # the reader waits for the send queue to drain
        self._sends_done = 0  # the writer's progress: flushes and frames sent
        self._stall_deadline = math.inf  # when the stall watch looks at the writer's progress next
        self._stall_mark = 0  # _sends_done when the stall watch was armed
        self._release_idle: Callable[[], int] | None = (
            cast(IdleRelease, transport).release_idle_state
            if idle_release_s is not None and conforms(transport, IdleRelease)
            else None
        )
        self._idle_release_s = idle_release_s or math.inf
        self._idle_deadline = math.inf  # when the idle watch looks next (inf: off, armed by the next frame)
        self._idle_mark = -1  # frames moved when the idle watch was armed
        self._trim_due = False  # a release's trim was deferred (rate limit): the watch looks once more
        self._queue_peak = 0
        self._reads_paused = 0
        self._running = False
        self._closed = False
        self._close_reason: TransportError | None = None
        self._nursery: trio.Nursery | None = None

        self._handler_errors = 0
        self._last_handler_error: str | None = None
        self._cpu = cpu
        self._cpu_owner = cpu_owner
        self._sizes: dict[str, int] = {}  # with a CPU model: incoming CALL id -> its frame's size

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
            send_queue_bytes=self._send_queue_bytes(),
            send_queue_peak=self._queue_peak,
            reads_paused=self._reads_paused,
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
        trio_clock = trio.lowlevel.current_clock()
        if self._idle_auto and isinstance(trio_clock, trio.testing.MockClock):
            self._release_idle = None  # virtual time: see DEFAULT_IDLE_RELEASE_S
        if self._now is trio.current_time or getattr(self._now, "__func__", None) is SimClock.now:
            # the same reading with two calls less per message (trio.current_time() is the run's clock's
            # current_time(); SimClock.now is trio.current_time())
            self._now = trio_clock.current_time
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._send_queued()  # CALLs made before run()
                task_status.started()
                # a status kept in this frame would hold trio's start() nursery (≈0.7 KiB) as long as it runs
                del task_status
                # This task is the first reader; if a handler blocks it, a new reader takes over and this
                # one leaves the loop once the queued CALLs are answered, then waits for the others here.
                await self._reader_loop()
        finally:
            self._nursery = None
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
        now = self._now()
        rpc = self.rpc
        queued = rpc.queued_bytes
        mid = rpc.call(action, payload, now)
        self._busy = now - self._last_call < rpc.call_timeout * _BUSY_FRACTION
        self._last_call = now
        waiter = _Waiter()
        self._waiters[mid] = waiter
        try:
            if self._cpu is not None:
                await self._charge("call", action, self.rpc.queued_bytes - queued)
            self._send_queued()
            if waiter.done:  # the wait, here rather than in a method: one coroutine less per CALL
                await trio.lowlevel.checkpoint()
            else:
                waiter.task = trio.lowlevel.current_task()
                await trio.lowlevel.wait_task_rescheduled(waiter._abort)
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
        self._send_queued()
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
            waiter.wake(None)
        self.rpc.cancel_pending()

    async def _guarded(self, loop: Callable[[], Awaitable[None]]) -> None:
        """Run a loop; a transport error ends the whole session (not as an ExceptionGroup)."""
        try:
            await loop()
        except TransportError as exc:
            self._fail(exc)

    def _fail(self, exc: TransportError) -> None:
        if self._close_reason is None:
            self._close_reason = exc
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def _send_queued(self) -> None:
        """Send what the RPC core queued, without blocking (see the module docstring)."""
        rpc = self.rpc
        deadline = rpc.timer
        if deadline is None:
            deadline = math.inf
        if self._stall_deadline < deadline:
            deadline = self._stall_deadline
        if self._idle_deadline < deadline:
            deadline = self._idle_deadline
        if (
            deadline != self._timer_deadline
            and self._timer is not None
            and (deadline < self._timer_deadline or not self._busy)
        ):
            self._timer_deadline = deadline
            self._timer.move(deadline)
        elif deadline < math.inf and not self._timer_running:
            self._start_timer()
        if self._writing or not rpc.has_data_to_send or self._nursery is None:
            return  # the writer drains the queue; before run() the CALLs wait for it
        send = self._send_fast
        if send is not None and not self._backlog:
            try:
                for text in rpc.data_to_send():
                    if not send(text):  # it waits below until the writer's flush()
                        self._backlog = True
                        self._held += utf8_length(text)
            except TransportError as exc:  # the session ends; callers get BrokenTransport
                self._fail(exc)
                return
            if not self._backlog:
                return
        self._wake_writer()

    def _wake_writer(self) -> None:
        if self._write_ready is None:
            if not self._spawn(self._guarded, self._writer_loop):
                return  # the session is ending; its close fails what waits
            self._write_ready = trio.Event()
        self._write_ready.set()

    def _dispatch(self, events: list[RpcEvent]) -> None:
        hook = self._on_event
        for event in events:
            if hook is not None:
                hook(event)
            if isinstance(event, _OUTCOMES):
                waiter = self._waiters.pop(event.message_id, None)
                if waiter is not None:
                    waiter.wake(event)
            elif isinstance(event, _INCOMING):
                self._incoming.append(event)

    async def _reader_loop(self) -> None:
        """Read and dispatch until a handler blocks (then another task reads) or the transport ends.

        Not wrapped in :meth:`_guarded` (one coroutine frame less on every message): it ends the session
        on a transport error itself.
        """
        receive_text = self.transport.receive_text
        rpc = self.rpc
        now = self._now
        incoming = self._incoming
        try:
            while True:
                text = await receive_text()
                events = rpc.receive(text, now())
                if self._cpu is not None:
                    for event in events:
                        if isinstance(event, CallReceived):
                            self._sizes[event.message_id] = len(text)
                self._dispatch(events)
                if self._idle_deadline == math.inf and self._release_idle is not None:
                    self._watch_idle()  # armed by a received frame (our answer to it is not activity)
                if incoming and not self._handling:
                    if await self._answer_incoming():
                        return  # a handler blocked: another task reads now
                else:  # (answering sent what the answers and any CALL released meanwhile queued)
                    self._send_queued()
                queued = self._held + rpc.queued_bytes  # frames waiting for the writer, usually none
                if queued:
                    if queued > self._queue_peak:
                        self._queue_peak = queued
                    if queued > self._max_send_queue:
                        await self._wait_for_room()
        except TransportError as exc:
            self._fail(exc)

    def _send_queue_bytes(self) -> int:
        return self.rpc.queued_bytes + self._held

    async def _wait_for_room(self) -> None:
        """Stop reading until no more than ``max_send_queue`` bytes wait to be sent to the peer."""
        self._reads_paused += 1
        while self._send_queue_bytes() > self._max_send_queue:
            self._room = room = trio.Event()
            await room.wait()

    def _wake_reader(self) -> None:
        """The writer sent something: wake the reader if it waits and the queue has room again."""
        room = self._room
        if room is not None and self._send_queue_bytes() <= self._max_send_queue:
            self._room = None
            room.set()

    def _watch_writer(self) -> None:
        """The writer starts sending and the stall watch is off: arm it (see :meth:`_check_stall`)."""
        if self._send_timeout is not None:
            self._stall_deadline = self._now() + self._send_timeout
            self._stall_mark = self._sends_done
            if self._timer is not None and self._stall_deadline < self._timer_deadline:
                self._timer_deadline = self._stall_deadline
                self._timer.move(self._stall_deadline)
            else:
                self._start_timer()

    def _frames_moved(self) -> int:
        """Frames received: every exchange has one at both ends, and what we send answers or follows it."""
        return self.rpc.statistics().frames_in

    def _watch_idle(self) -> None:
        """A frame arrived while the idle watch was off: arm it (``_send_queued`` moves the timer's deadline)."""
        self._idle_deadline = self._now() + self._idle_release_s
        self._idle_mark = self._frames_moved()

    def _check_idle(self, now: float) -> None:
        """The idle watch's deadline passed: release the transport's idle state if no frame moved since it
        was armed (then the watch is off until the next frame), else look again ``idle_release_s`` later."""
        moved = self._frames_moved()
        if moved != self._idle_mark:
            self._idle_mark = moved
            self._idle_deadline = now + self._idle_release_s
            return
        self._idle_deadline = math.inf
        retry, self._trim_due = self._trim_due, False
        freed = self._release_idle() if self._release_idle is not None and not self._closed else 0
        if (freed or retry) and give_back_memory() is False and not retry:
            self._trim_due = True  # trimmed too recently and no other session retries: once more later
            self._idle_deadline = now + self._idle_release_s

    def _check_stall(self, now: float) -> None:
        """The stall watch's deadline passed: drop the peer if the busy writer sent nothing since it was
        armed; else re-arm it while the writer is busy. A writer stuck for ``send_timeout`` is thus found
        after between one and two ``send_timeout`` s; the watch costs the writer a counter per frame."""
        assert self._send_timeout is not None
        if not (self._writing or self._backlog):
            self._stall_deadline = math.inf
        elif self._sends_done == self._stall_mark:
            self._fail(
                PeerNotReading(
                    f"the peer read nothing for {self._send_timeout:g} s while "
                    f"{self._send_queue_bytes()} bytes waited to be sent to it"
                )
            )
        else:
            self._stall_deadline = now + self._send_timeout
            self._stall_mark = self._sends_done

    def _start_timer(self) -> None:
        """Start the timer task if it is not running (a deadline was just armed)."""
        if not self._timer_running and self._nursery is not None:
            self._timer_running = self._spawn(self._timer_loop)

    def _spawn(self, fn: Callable[..., Awaitable[None]], *args: Any) -> bool:
        """Start a task of the session; False when the session is ending.

        Its nursery closes when its last task ends, and :meth:`run` learns it only when its turn comes: a CALL
        another task makes in between finds the nursery closed. Then nothing is started, and :meth:`run`'s
        close wakes that CALL with the session's end.
        """
        nursery = self._nursery
        if nursery is None:
            return False
        try:
            nursery.start_soon(fn, *args)
        except RuntimeError:  # "Nursery is closed to new arrivals"
            self._nursery = None
            return False
        return True

    async def _timer_loop(self) -> None:
        """Wait until the earliest deadline passes (the outstanding CALL's, the stall and idle watches').

        The task waits on an :class:`~evsim.timers.Alarm` whose deadline :meth:`_send_queued` moves (earlier or
        later, or to infinity when nothing is outstanding) instead of waking this task: an idle session, and a CALL
        answered in time, cost no wake-up - at scale in virtual time every wake-up is also a clock jump.
        The task ends when it wakes and finds no deadline armed (an idle link holds no timer task and its
        frames, ≈1.7 KiB, ``bench/memory.py``); :meth:`_start_timer` starts it again with the next one.
        """
        rpc = self.rpc
        alarm = Alarm()
        while True:
            deadline = rpc.get_timer()
            deadline = math.inf if deadline is None else deadline
            self._timer_deadline = min(deadline, self._stall_deadline, self._idle_deadline)
            if self._timer_deadline == math.inf:
                self._timer_running = False
                return
            self._timer = alarm
            await alarm.wait_until(self._timer_deadline)
            self._timer = None
            now = self._now()
            if now >= self._stall_deadline:
                self._check_stall(now)
            if now >= self._idle_deadline:
                self._check_idle(now)
            events = rpc.handle_timer(now)
            if events:  # only CallTimedOut: wakes a caller, may release the next CALL
                self._dispatch(events)
                self._send_queued()

    async def _writer_loop(self) -> None:
        assert self._write_ready is not None
        rpc = self.rpc
        send_text = self.transport.send_text
        while True:
            if not rpc.has_data_to_send and not self._backlog:
                self._write_ready = trio.Event()
                await self._write_ready.wait()
                continue
            self._writing = True
            if self._stall_deadline == math.inf:
                self._watch_writer()
            try:
                if self._backlog:
                    self._backlog = False
                    assert self._flush_fast is not None
                    await self._flush_fast()
                    self._held = 0
                    self._sends_done += 1
                    if self._room is not None:
                        self._wake_reader()
                while rpc.has_data_to_send:
                    size = rpc.queued_bytes
                    self._held += size
                    for text in rpc.data_to_send():
                        await send_text(text)
                        self._sends_done += 1
                    self._held -= size
                    if self._room is not None:
                        self._wake_reader()
            finally:
                self._writing = False

    async def _answer_incoming(self) -> bool:
        """Answer the queued incoming CALLs (and SENDs) in order; called by the reader.

        Returns:
            True when a handler blocked: a new reader was started and this task must stop reading.
        """
        incoming = self._incoming
        self._moved = False
        self._handling = True
        try:
            while incoming:
                event = incoming.pop(0)
                answer = self._answer(event) if isinstance(event, CallReceived) else self._answer_send(event)
                if self._moved:
                    await answer
                else:
                    await _run_inline(answer, self._hand_over)
                self._send_queued()
        finally:
            self._handling = False
        return self._moved

    def _hand_over(self) -> None:
        """A handler is about to block the reader: from now on, a new task reads."""
        self._moved = True
        assert self._nursery is not None
        self._nursery.start_soon(self._reader_loop)

    async def _answer_send(self, event: SendReceived) -> None:
        if self._on_send is not None:
            try:
                await self._on_send(event.action, event.payload)
            except Exception as exc:  # like a handler: count it, never end the session
                self._handler_errors += 1
                self._last_handler_error = f"on_send for {event.action} failed: {exc!r}"

    def _handler_failed(self, message_id: str, exc: Exception, what: str) -> None:
        self._handler_errors += 1
        self._last_handler_error = f"{what}: {exc!r}"
        self._reply_error(message_id, "InternalError", f"{what}: {type(exc).__name__}")

    def _reply_error(self, message_id: str, code: str, description: str) -> None:
        with contextlib.suppress(ValueError):  # no longer pending: the connection was reset meanwhile
            self.rpc.reply_error(message_id, code, description)

    async def _charge(self, role: str, action: str, size: int) -> None:
        assert self._cpu is not None
        await self._cpu.charge(("ocpp", role, action), size, owner=self._cpu_owner)
        if self.rpc.validate:
            await self._cpu.charge(("validate", action), size, owner=self._cpu_owner)

    async def _answer(self, event: CallReceived) -> None:
        mid = event.message_id
        if self._cpu is not None:
            await self._charge("serve", event.action, self._sizes.pop(mid, 0))
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


@types.coroutine
def _run_inline(coro: Coroutine[Any, Any, None], on_block: Callable[[], None]) -> Generator[Any, Any, None]:
    """Await ``coro`` in the current task; call ``on_block()`` right before its first suspension.

    A handler that completes without suspending costs no task switch. This is what ``await coro`` does,
    with a look at the first step: trio's traps pass through unchanged in both directions, so the
    coroutine keeps running in this task, under its cancel scopes.
    """
    try:
        trap = coro.send(None)
    except StopIteration:
        return
    on_block()
    while True:
        try:
            value = yield trap
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:
            try:
                trap = coro.throw(exc)
            except StopIteration:
                return
        else:
            try:
                trap = coro.send(value)
            except StopIteration:
                return
