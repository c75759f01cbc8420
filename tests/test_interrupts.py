"""Ctrl-C never changes results: interrupts in OpenSSL callbacks, clean stops, exit statuses, closed pipes.

In-process tests simulate a Ctrl-C by raising ``KeyboardInterrupt`` (or SIGINT itself) from inside a verify
callback; the end-to-end tests send SIGINT to ``evsim`` subprocesses at moments chosen from their own output.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trio
import trio.testing

from evsim import interrupts
from evsim.tls import ClientTls, ServerTls, TlsProfile, TlsStream, context
from evsim.tls.verify import check_hostname_der
from tests.pki_fixtures import CSMS_HOST, TEST_NOW, make_test_pki

PKI = make_test_pki()


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def _pair() -> tuple[TlsStream, TlsStream]:
    profile = TlsProfile()
    a, b = trio.testing.memory_stream_pair()
    client = TlsStream.client(
        a, ClientTls.build(profile, PKI.csms_trust()), CSMS_HOST, verify_time=lambda: TEST_NOW
    )
    server = TlsStream.server(b, ServerTls.build(profile, PKI.server_identity()))
    return client, server


def _handshake(client: TlsStream, server: TlsStream, outcome: dict[str, BaseException | None]) -> Any:
    """The main function of a run that handshakes both sides and notes what the client's handshake did."""

    async def client_side() -> None:
        try:
            await client.do_handshake()
        except BaseException as exc:
            outcome["client"] = exc
            raise
        outcome["client"] = None

    async def server_side() -> None:
        with contextlib.suppress(Exception):
            await server.do_handshake()

    async def main() -> None:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client_side)
                nursery.start_soon(server_side)

    return main


def _run_to_end(main: Any) -> BaseException:
    """Run ``main`` in a trio run of its own; what ended it (the test fails if it returned)."""
    try:
        trio.run(main)
    except BaseException as exc:  # the test inspects whatever ended the run
        return exc
    raise AssertionError("the run was expected to end by an interrupt")


def _interrupting_hostname_check(monkeypatch: pytest.MonkeyPatch, interrupt: Callable[[], None]) -> list[int]:
    """Make the client's hostname check (run inside OpenSSL's verify callback) call ``interrupt`` first."""
    calls: list[int] = []
    original = check_hostname_der

    def check(der: bytes, host: str, mode: str, wildcards: str) -> str | None:
        calls.append(1)
        interrupt()
        return original(der, host, mode, wildcards)

    monkeypatch.setattr(context, "check_hostname_der", check)
    return calls


def test_interrupt_inside_verify_callback_is_raised_not_a_certificate_verdict(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A KeyboardInterrupt raised inside the verify callback (as Python's own SIGINT handler would raise it)
    comes out of the handshake as KeyboardInterrupt: no ``cert_invalid`` failure, nothing "ignored"."""

    def interrupt() -> None:
        raise KeyboardInterrupt

    calls = _interrupting_hostname_check(monkeypatch, interrupt)
    unraisable: list[object] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    client, server = _pair()
    outcome: dict[str, BaseException | None] = {}
    ended = _run_to_end(_handshake(client, server, outcome))
    assert calls, "the verify callback did not run"
    assert all(isinstance(e, KeyboardInterrupt) for e in _leaves(ended)), ended
    assert isinstance(outcome["client"], KeyboardInterrupt), outcome
    assert client._vstate.failure is None  # no certificate verdict recorded
    assert client._vstate.interrupt is None  # raised once, not kept
    assert unraisable == []  # not "Exception ignored from cffi callback"


def test_sigint_inside_verify_callback_waits_for_a_checkpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    """Real SIGINT under trio's own handler while OpenSSL runs the verify callback: trio defers it (the callback
    is KI-protected), so the handshake gets no invented verdict, and the run ends with KeyboardInterrupt."""
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT is not Python's default handler here")
    calls = _interrupting_hostname_check(monkeypatch, lambda: signal.raise_signal(signal.SIGINT))
    unraisable: list[object] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    client, server = _pair()
    outcome: dict[str, BaseException | None] = {}
    ended = _run_to_end(_handshake(client, server, outcome))
    assert calls
    assert all(isinstance(e, KeyboardInterrupt) for e in _leaves(ended)), ended
    client_outcome = outcome.get("client")  # done, or cancelled when the interrupt reached the main task
    assert client_outcome is None or isinstance(client_outcome, trio.Cancelled), client_outcome
    assert client._vstate.failure is None
    assert unraisable == []


# ---------------------------------------------------------------- the callback guard itself


class _Conn:
    def __init__(self, data: object) -> None:
        self.data = data

    def get_app_data(self) -> object:
        return self.data


def _kept(slot: interrupts.InterruptSlot) -> BaseException | None:
    return slot.interrupt


def test_c_callback_keeps_interrupts_and_passes_errors() -> None:
    @interrupts.c_callback(refuse=False)
    def callback(conn: _Conn, what: BaseException | None) -> bool:
        if what is not None:
            raise what
        return True

    slot = interrupts.InterruptSlot()
    conn = _Conn(slot)
    assert callback(conn, None) is True
    with pytest.raises(ValueError, match="bad"):  # pyOpenSSL raises an Exception from the engine call itself
        callback(conn, ValueError("bad"))
    assert _kept(slot) is None
    first, second = KeyboardInterrupt(), KeyboardInterrupt()
    assert callback(conn, first) is False  # refused, kept
    assert callback(conn, second) is False
    assert _kept(slot) is first  # the first one wins
    with pytest.raises(KeyboardInterrupt) as info:
        slot.raise_kept()
    assert info.value is first
    slot.raise_kept()  # once
    with pytest.raises(KeyboardInterrupt):  # nowhere to keep it: raised as before
        callback(_Conn(None), KeyboardInterrupt())
    assert callback.__name__ == "callback"


def test_c_callbacks_are_ki_protected() -> None:
    seen: list[bool] = []

    @interrupts.c_callback(refuse=None)
    def callback(conn: _Conn) -> None:
        del conn
        seen.append(trio.lowlevel.currently_ki_protected())

    async def main() -> None:
        callback(_Conn(None))
        seen.append(trio.lowlevel.currently_ki_protected())

    trio.run(main)
    assert seen == [True, False]


# ---------------------------------------------------------------- interrupts.run


def _sigint_soon(delay: float) -> Callable[[], Any]:
    async def fire() -> None:
        await trio.sleep(delay)
        signal.raise_signal(signal.SIGINT)

    return fire


def test_run_stops_cleanly_on_the_first_ctrl_c() -> None:
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT is not Python's default handler here")
    log: list[str] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_sigint_soon(5.0))
            try:
                await trio.sleep_forever()
            except trio.Cancelled:
                log.append(f"cancelled at {trio.current_time():g}")
                raise

    with pytest.raises(KeyboardInterrupt):
        interrupts.run(
            main, clock=trio.testing.MockClock(autojump_threshold=0), on_interrupt=lambda: log.append("stop")
        )
    assert log == ["stop", "cancelled at 5"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    assert interrupts.run(trio.sleep, 0) is None  # and a run that is not interrupted returns its value
