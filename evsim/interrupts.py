"""Ctrl-C, and interrupts that arrive inside callbacks OpenSSL makes into Python.

**Ctrl-C at the entry points.** While :func:`handling` is active (``evsim`` commands; :func:`run` turns it on
for its own duration), SIGINT is answered here instead of by Python's default handler or trio's:

* the first Ctrl-C during a :func:`run` asks the trio run to stop: the run loop calls the caller's
  ``on_interrupt`` (which can freeze what the run observed) between task steps, so nothing is half done,
  then cancels everything; :func:`run` then raises :class:`KeyboardInterrupt`. What the tasks do while they
  are cancelled (closing connections, peers seeing them close) is not part of the run's result;
* the first Ctrl-C anywhere else raises :class:`KeyboardInterrupt` where the program is, as usual, except
  inside :func:`deferred` blocks (writing result files), which finish first;
* a second Ctrl-C ends the process at once with exit status 130, whatever the program is doing (a run
  that does not stop, a long plot).

A process that starts with SIGINT ignored (a background job of a non-interactive shell) keeps ignoring it.

**Callbacks from C.** pyOpenSSL calls Python callbacks (certificate verification, SNI, ALPN, OCSP, key log)
from inside ``SSL_do_handshake``; it keeps an ``Exception`` raised there and raises it from the engine call,
but anything else - a :class:`KeyboardInterrupt` - is printed as "Exception ignored from cffi callback" and the
callback's C default (0: refuse) is used, so the handshake fails with an invented reason ("certificate verify
failed"). :func:`c_callback` wraps such a callback: it keeps that exception in the connection's
:class:`InterruptSlot` (its OpenSSL app data) and returns a refusal; the code that drove the engine raises it
again (:meth:`InterruptSlot.raise_kept`) once the engine call returned, before reading any verdict. The
wrapper is also KI-protected for trio (``trio.lowlevel.enable_ki_protection``), so trio's own SIGINT handler
defers a Ctrl-C arriving there to the next checkpoint instead of raising it inside C.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from types import FrameType
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

import trio

__all__ = [
    "EXIT_BROKEN_PIPE",
    "EXIT_INTERRUPTED",
    "InterruptSlot",
    "c_callback",
    "deferred",
    "handling",
    "quiet_stdout",
    "run",
]

EXIT_INTERRUPTED = 128 + signal.SIGINT
"""Exit status after Ctrl-C (130), as a shell reports a process killed by SIGINT."""
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE
"""Exit status when standard output was closed by its reader (141: ``evsim run ... | head``)."""

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


# ---------------------------------------------------------------- SIGINT


class _Sigint:
    """The process's SIGINT state while :func:`handling` is active (the main thread only touches it)."""

    def __init__(self) -> None:
        self.installed = False
        self.count = 0
        self.stop: Callable[[], None] | None = None  # asks the running trio run to stop
        self.defer_depth = 0
        self.pending = False


_SIGINT = _Sigint()


def _exit_now() -> None:
    with contextlib.suppress(OSError):
        os.write(2, b"\nevsim: interrupted again: exiting now\n")
    os._exit(EXIT_INTERRUPTED)


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    del signum, frame
    state = _SIGINT
    state.count += 1
    if state.count > 1:
        _exit_now()
    if state.stop is not None:
        state.stop()
    elif state.defer_depth:
        state.pending = True
    else:
        raise KeyboardInterrupt


@contextlib.contextmanager
def handling() -> Iterator[None]:
    """Answer SIGINT as the module doc says while the block runs.

    Only in the main thread and when SIGINT has Python's default handler (not ignored, not someone else's);
    nested uses do nothing.
    """
    state = _SIGINT
    if (
        state.installed
        or threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    previous = signal.signal(signal.SIGINT, _on_sigint)
    state.installed, state.count, state.pending = True, 0, False
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGINT) is _on_sigint:  # restore only what this installed
            signal.signal(signal.SIGINT, previous)
        state.installed, state.stop = False, None


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A first Ctrl-C during the block is raised (as :class:`KeyboardInterrupt`) when the block ends."""
    state = _SIGINT
    state.defer_depth += 1
    try:
        yield
    finally:
        state.defer_depth -= 1
        if not state.defer_depth and state.pending:
            state.pending = False
            raise KeyboardInterrupt


def run(
    async_fn: Callable[..., Awaitable[T]],
    *args: object,
    clock: trio.abc.Clock | None = None,
    on_interrupt: Callable[[], None] | None = None,
) -> T:
    """``trio.run(async_fn, *args, clock=clock)``, stopped cleanly by Ctrl-C.

    Args:
        async_fn: the run's main function.
        args: its arguments.
        clock: trio's clock (``MockClock`` for virtual time).
        on_interrupt: called once by the run loop, between task steps, when Ctrl-C arrives, before every task
            is cancelled: the place to record that the run was interrupted and to stop recording. It must not
            raise.

    Returns:
        What ``async_fn`` returned.

    Raises:
        KeyboardInterrupt: the run was interrupted (after it has wound down; also when a task failed while
            it was torn down: that failure is chained as the cause, not reported).
    """
    stopped = False
    returned: list[T] = []

    async def main() -> None:
        token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as scope:

            def stop_now() -> None:  # in the run loop, no task running
                nonlocal stopped
                if stopped:
                    return
                stopped = True
                if on_interrupt is not None:
                    on_interrupt()
                scope.cancel()

            previous, _SIGINT.stop = _SIGINT.stop, functools.partial(token.run_sync_soon, stop_now)
            _accept_sigint()
            if _SIGINT.pending:  # Ctrl-C came in a deferred() block just before the run: it stops the run
                _SIGINT.pending = False
                token.run_sync_soon(stop_now)
            try:
                returned.append(await async_fn(*args))
            finally:
                _SIGINT.stop = previous

    with handling():
        try:
            trio.run(main, clock=clock)
        except BaseException as exc:
            if not stopped or isinstance(exc, KeyboardInterrupt):
                raise
            # What failed while the stopped run was torn down (a task seeing its peer gone) is no result.
            raise KeyboardInterrupt from exc
    if stopped:
        raise KeyboardInterrupt
    return returned[0]


def _accept_sigint() -> None:
    """Unblock SIGINT in this thread, now that a Ctrl-C stops the run cleanly.

    A process started with SIGINT blocked (a worker of ``evsim stations --workers``: its parent blocks it in the
    child before ``exec``) keeps a Ctrl-C that arrives while it starts pending until here, so it stops the run
    instead of interrupting the imports; in every other process this changes nothing.
    """
    if threading.current_thread() is threading.main_thread():
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


# ---------------------------------------------------------------- closed standard output


def quiet_stdout() -> None:
    """Point standard output at ``/dev/null`` after its reader went away (``BrokenPipeError``), so that
    nothing more is written there, not even the interpreter's final flush."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


# ---------------------------------------------------------------- callbacks from C


class InterruptSlot:
    """Keeps an interrupt caught inside a callback from C, to raise it once the C call has returned.

    A base class of the per-connection state stored as the OpenSSL connection's app data.
    """

    __slots__ = ("interrupt",)

    def __init__(self) -> None:
        self.interrupt: BaseException | None = None

    def keep(self, exc: BaseException) -> None:
        """Keep ``exc`` (the first one wins)."""
        if self.interrupt is None:
            self.interrupt = exc

    def raise_kept(self) -> None:
        """Raise the kept interrupt, if any (once)."""
        exc = self.interrupt
        if exc is not None:
            self.interrupt = None
            raise exc


class _HasAppData(Protocol):
    def get_app_data(self) -> Any: ...


C = TypeVar("C", bound=_HasAppData)


def c_callback(
    refuse: R,
) -> Callable[[Callable[Concatenate[C, P], R]], Callable[Concatenate[C, P], R]]:
    """Decorate a callback OpenSSL calls with the connection first (see the module doc).

    Args:
        refuse: what the callback returns to OpenSSL when it was interrupted (a refusal or "nothing").

    Returns:
        The decorator. An ``Exception`` still propagates (pyOpenSSL raises it from the engine call); anything
        else is kept on the connection's :class:`InterruptSlot` (re-raised at once when there is none).
    """

    def decorate(fn: Callable[Concatenate[C, P], R]) -> Callable[Concatenate[C, P], R]:
        @trio.lowlevel.enable_ki_protection
        def guarded(conn: C, /, *args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return fn(conn, *args, **kwargs)
            except BaseException as exc:
                if isinstance(exc, Exception):
                    raise
                slot = conn.get_app_data()
                if not isinstance(slot, InterruptSlot):
                    raise
                slot.keep(exc)
                return refuse

        return functools.wraps(fn)(guarded)

    return decorate
