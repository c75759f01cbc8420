"""The trio driver: two sessions over an in-memory text pipe."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from evsim.errors import (
    BrokenTransport,
    CallErrorReceived,
    CallTimeout,
    ClosedTransport,
    OcppError,
    SchemaViolation,
    TransportError,
    WebSocketClosed,
)
from evsim.ocpp.framing import CallError, decode_frame
from evsim.ocpp.rpc import BadInput, RpcConnection, RpcEvent, default_id_factory
from evsim.ocpp.session import Handler, NowaitTextTransport, OcppSession

NOW = "2024-05-01T12:00:00.000Z"
BOOT_REQ: dict[str, Any] = {"reason": "PowerUp", "chargingStation": {"model": "M", "vendorName": "V"}}
BOOT_RESP: dict[str, Any] = {"currentTime": NOW, "interval": 300, "status": "Accepted"}
STREAM: dict[str, Any] = {"id": 1, "pending": 0, "basetime": NOW, "data": [{"t": 0, "v": "1"}]}


class PipeEnd:
    """One end of an in-memory WebSocket stand-in: whole text messages over trio memory channels."""

    def __init__(self, send: trio.MemorySendChannel[str], receive: trio.MemoryReceiveChannel[str]) -> None:
        self._send = send
        self._receive = receive

    async def send_text(self, text: str) -> None:
        try:
            await self._send.send(text)
        except trio.BrokenResourceError:
            raise BrokenTransport("peer went away") from None
        except trio.ClosedResourceError:
            raise ClosedTransport("we closed") from None

    async def receive_text(self) -> str:
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            raise WebSocketClosed(1000, "peer closed") from None
        except trio.ClosedResourceError:
            raise ClosedTransport("we closed") from None

    def close(self) -> None:
        self._send.close()
        self._receive.close()


def text_pipe(buffer: int = 8) -> tuple[PipeEnd, PipeEnd]:
    a_send, b_receive = trio.open_memory_channel[str](buffer)
    b_send, a_receive = trio.open_memory_channel[str](buffer)
    return PipeEnd(a_send, a_receive), PipeEnd(b_send, b_receive)


async def boot_handler(action: str, payload: dict[str, Any]) -> dict[str, Any]:
    if action == "BootNotification":
        return BOOT_RESP
    if action == "Heartbeat":
        return {"currentTime": NOW}
    if action == "TriggerMessage":
        return {"status": "Accepted"}
    raise OcppError(f"{action} not supported here", error_code="NotSupported")


async def _run(
    session: OcppSession, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run a session; a transport closing is the normal end of these tests."""
    with suppress(TransportError):
        await session.run(task_status=task_status)


@attrs.define
class Pair:
    station: OcppSession
    csms: OcppSession
    station_end: PipeEnd
    csms_end: PipeEnd
    events: list[RpcEvent]


@asynccontextmanager
async def session_pair(
    csms_handler: Handler = boot_handler,
    station_handler: Handler = boot_handler,
    *,
    version: str = "2.0.1",
    call_timeout: float = 30.0,
    on_send: Callable[[str, dict[str, Any]], Awaitable[None]] | None = None,
) -> AsyncIterator[Pair]:
    station_end, csms_end = text_pipe()
    events: list[RpcEvent] = []
    station = OcppSession(
        station_end,
        RpcConnection(version=version, call_timeout=call_timeout, id_factory=default_id_factory("st")),
        station_handler,
    )
    csms = OcppSession(
        csms_end,
        RpcConnection(version=version, call_timeout=call_timeout, id_factory=default_id_factory("cs")),
        csms_handler,
        on_event=events.append,
        on_send=on_send,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(_run, station)
        await nursery.start(_run, csms)
        yield Pair(station, csms, station_end, csms_end, events)
        nursery.cancel_scope.cancel()


async def test_call_and_result() -> None:
    with trio.fail_after(5):
        async with session_pair() as p:
            assert await p.station.call("BootNotification", BOOT_REQ) == BOOT_RESP
            assert await p.station.call("Heartbeat", {}) == {"currentTime": NOW}
            stats = p.station.statistics()
            assert stats.rpc.results_received == 2
            assert stats.callers_waiting == 0
            assert p.csms.statistics().rpc.calls_received == 2


async def test_many_round_trips_in_order() -> None:
    with trio.fail_after(10):
        async with session_pair() as p:
            results: list[int] = []

            async def caller(i: int) -> None:
                await p.station.call("Heartbeat", {})
                results.append(i)

            async with trio.open_nursery() as nursery:
                for i in range(50):
                    nursery.start_soon(caller, i)
                    await trio.testing.wait_all_tasks_blocked()  # start order = call order
            assert sorted(results) == list(range(50))
            assert p.station.statistics().rpc.calls_sent == 50


async def test_callerror_propagates() -> None:
    with trio.fail_after(5):
        async with session_pair() as p:
            with pytest.raises(CallErrorReceived) as info:
                await p.station.call("Authorize", {"idToken": {"idToken": "X", "type": "ISO14443"}})
            assert info.value.error_code == "NotSupported"
            assert "not supported" in info.value.description
            assert p.csms.statistics().handler_errors == 0  # an OcppError is a deliberate answer


async def test_handler_exception_becomes_internal_error() -> None:
    async def broken(action: str, payload: dict[str, Any]) -> dict[str, Any]:
        if action == "Heartbeat":
            raise RuntimeError("boom")
        if action == "BootNotification":
            return {"status": "Accepted"}  # invalid response: missing fields
        return []  # type: ignore[return-value]

    with trio.fail_after(5):
        async with session_pair(csms_handler=broken) as p:
            for action, payload in [
                ("Heartbeat", {}),
                ("BootNotification", BOOT_REQ),
                ("StatusNotification", None),
            ]:
                if payload is None:
                    payload = {
                        "timestamp": NOW,
                        "connectorStatus": "Available",
                        "evseId": 1,
                        "connectorId": 1,
                    }
                with pytest.raises(CallErrorReceived) as info:
                    await p.station.call(action, payload)
                assert info.value.error_code == "InternalError"
            stats = p.csms.statistics()
            assert stats.handler_errors == 3
            assert stats.last_handler_error is not None
            # the session survived
            assert stats.closed is False
            with pytest.raises(CallErrorReceived):
                await p.station.call("Heartbeat", {})


async def test_crossing_calls_do_not_deadlock() -> None:
    # The CSMS answers BootNotification only after its own CALL to the station came back, while the
    # station's Boot CALL is still outstanding.
    async def csms_handler(action: str, payload: dict[str, Any]) -> dict[str, Any]:
        if action == "BootNotification":
            answer = await pair.csms.call("TriggerMessage", {"requestedMessage": "Heartbeat"})
            assert answer == {"status": "Accepted"}
        return await boot_handler(action, payload)

    with trio.fail_after(5):
        async with session_pair(csms_handler=csms_handler) as pair:
            assert await pair.station.call("BootNotification", BOOT_REQ) == BOOT_RESP


async def test_simultaneous_calls_both_ways() -> None:
    with trio.fail_after(5):
        async with session_pair() as p:
            results: dict[str, dict[str, Any]] = {}

            async def station_side() -> None:
                results["station"] = await p.station.call("Heartbeat", {})

            async def csms_side() -> None:
                results["csms"] = await p.csms.call("TriggerMessage", {"requestedMessage": "Heartbeat"})

            async with trio.open_nursery() as nursery:
                nursery.start_soon(station_side)
                nursery.start_soon(csms_side)
            assert results == {"station": {"currentTime": NOW}, "csms": {"status": "Accepted"}}


async def test_timeout_under_virtual_time(autojump_clock: trio.testing.MockClock) -> None:
    async def silent(action: str, payload: dict[str, Any]) -> dict[str, Any]:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    with trio.fail_after(1000):
        async with session_pair(csms_handler=silent, call_timeout=30.0) as p:
            start = trio.current_time()
            outcomes: list[tuple[str, float]] = []

            async def caller(name: str) -> None:
                with pytest.raises(CallTimeout):
                    await p.station.call("Heartbeat", {})
                outcomes.append((name, trio.current_time() - start))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(caller, "first")
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(caller, "second")
            # the second CALL was only released when the first timed out
            assert [name for name, _ in outcomes] == ["first", "second"]
            assert [round(t, 6) for _, t in outcomes] == [30.0, 60.0]
            assert p.station.statistics().rpc.timeouts == 2


def _count_timer_checks(monkeypatch: pytest.MonkeyPatch, rpc: RpcConnection) -> list[int]:
    """Count ``rpc.handle_timer`` calls (patched on the class: the RPC core has ``__slots__``)."""
    checks = [0]
    real = RpcConnection.handle_timer

    def counting(self: RpcConnection, now: float) -> list[Any]:
        if self is rpc:
            checks[0] += 1
        return real(self, now)

    monkeypatch.setattr(RpcConnection, "handle_timer", counting)
    return checks


async def test_idle_session_costs_no_wakeups(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no CALL outstanding the timer parks: a day of idleness checks no timer at all (at scale, thousands
    of idle stations would otherwise wake every call_timeout), and a CALL sent afterwards still times out."""

    async def silent(action: str, payload: dict[str, Any]) -> dict[str, Any]:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    with trio.fail_after(100_000):
        async with session_pair(csms_handler=silent, call_timeout=30.0) as p:
            checks = _count_timer_checks(monkeypatch, p.station.rpc)
            await trio.sleep(86_400)
            assert checks[0] == 0
            start = trio.current_time()
            with pytest.raises(CallTimeout):
                await p.station.call("Heartbeat", {})
            assert trio.current_time() - start == pytest.approx(30.0)
            assert checks[0] == 1


async def test_busy_calls_leave_an_early_deadline_and_still_time_out_on_time(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CALLs a second apart (busy: the timer's deadline only moves earlier) leave a stale, earlier deadline
    behind; the timer looks early once, re-arms, and a CALL left unanswered after the burst times out exactly
    call_timeout after it was sent."""
    answering = [True]

    async def fickle(action: str, payload: dict[str, Any]) -> dict[str, Any]:
        if not answering[0]:
            await trio.sleep_forever()
        return {"currentTime": NOW}

    with trio.fail_after(1000):
        async with session_pair(csms_handler=fickle, call_timeout=30.0) as p:
            checks = _count_timer_checks(monkeypatch, p.station.rpc)
            for _ in range(20):
                assert await p.station.call("Heartbeat", {}) == {"currentTime": NOW}
                await trio.sleep(1)
            answering[0] = False
            start = trio.current_time()
            with pytest.raises(CallTimeout):
                await p.station.call("Heartbeat", {})
            assert trio.current_time() - start == pytest.approx(30.0)
            assert 1 <= checks[0] <= 2  # the early look at the stale deadline, then the timeout
            assert p.station.statistics().rpc.timeouts == 1


async def test_transport_close_wakes_pending_call(autojump_clock: trio.testing.MockClock) -> None:
    async def silent(action: str, payload: dict[str, Any]) -> dict[str, Any]:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    with trio.fail_after(10):
        async with session_pair(csms_handler=silent) as p:

            async def close_soon() -> None:
                await trio.sleep(1)
                p.csms_end.close()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(close_soon)
                with pytest.raises(BrokenTransport) as info:
                    await p.station.call("Heartbeat", {})
            assert isinstance(info.value.__cause__, WebSocketClosed)
            assert trio.current_time() == pytest.approx(1.0)
            assert isinstance(p.station.close_reason, WebSocketClosed)
            assert p.station.statistics().closed
            with pytest.raises(BrokenTransport):
                await p.station.call("Heartbeat", {})
            with pytest.raises(BrokenTransport):
                p.station.send_nowait("NotifyPeriodicEventStream", STREAM)


async def test_run_raises_the_transport_error() -> None:
    station_end, csms_end = text_pipe()
    session = OcppSession(station_end, RpcConnection(), boot_handler)
    with trio.fail_after(5):
        csms_end.close()
        with pytest.raises(WebSocketClosed):
            await session.run()
        with pytest.raises(RuntimeError):
            await session.run()


async def test_stopped_session_refuses_calls() -> None:
    station_end, _csms_end = text_pipe()
    session = OcppSession(station_end, RpcConnection(), boot_handler)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(session.run)
            nursery.cancel_scope.cancel()
        with pytest.raises(ClosedTransport):
            await session.call("Heartbeat", {})


async def test_a_call_while_the_session_nursery_closes_ends_with_the_session() -> None:
    """The session's nursery closes when its last task ends; until run() gets its turn, another task's CALL still
    sees it. That CALL must end as the session does, not crash its caller with trio's closed-nursery error."""
    station_end, _csms_end = text_pipe()
    session = OcppSession(station_end, RpcConnection(), boot_handler)
    async with trio.open_nursery() as closed:
        pass
    session._nursery = closed  # that instant: run() has not yet closed the session
    outcome: list[BaseException] = []

    async def caller() -> None:
        try:
            await session.call("Heartbeat", {})
        except BaseException as exc:
            outcome.append(exc)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(caller)
            await trio.testing.wait_all_tasks_blocked()
            session._close()  # what run() does next
    assert [type(e) for e in outcome] == [ClosedTransport]


async def test_cancelled_caller_withdraws_queued_call(autojump_clock: trio.testing.MockClock) -> None:
    seen: list[str] = []

    async def slow(action: str, payload: dict[str, Any]) -> dict[str, Any]:
        seen.append(action)
        await trio.sleep(10)
        return await boot_handler(action, payload)

    with trio.fail_after(100):
        async with session_pair(csms_handler=slow) as p:
            async with trio.open_nursery() as nursery:

                async def first() -> None:
                    assert await p.station.call("Heartbeat", {}) == {"currentTime": NOW}

                nursery.start_soon(first)
                await trio.testing.wait_all_tasks_blocked()
                with trio.move_on_after(1):
                    await p.station.call("BootNotification", BOOT_REQ)  # queued behind the Heartbeat
            await trio.sleep(20)
            assert seen == ["Heartbeat"]  # the withdrawn BootNotification never went out
            assert p.station.statistics().callers_waiting == 0


async def test_local_schema_violation_raises_in_caller() -> None:
    with trio.fail_after(5):
        async with session_pair() as p:
            with pytest.raises(SchemaViolation):
                await p.station.call("BootNotification", {"reason": "PowerUp"})
            assert p.csms.statistics().rpc.frames_in == 0


async def test_bad_input_reaches_on_event_and_is_answered() -> None:
    raw, csms_end = text_pipe()
    events: list[RpcEvent] = []
    csms = OcppSession(csms_end, RpcConnection(), boot_handler, on_event=events.append)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(_run, csms)
            await raw.send_text("this is not json")
            await raw.send_text('[2,"p1","Heartbeat",{}]')
            answer_to_garbage = decode_frame(await raw.receive_text(), version="2.0.1")
            answer_to_heartbeat = decode_frame(await raw.receive_text(), version="2.0.1")
            nursery.cancel_scope.cancel()
    assert answer_to_garbage == CallError("-1", "RpcFrameworkError", "invalid JSON")
    assert answer_to_heartbeat.message_id == "p1"
    assert isinstance(events[0], BadInput)
    assert events[0].replied


async def test_send_on_21() -> None:
    received: list[tuple[str, dict[str, Any]]] = []
    got = trio.Event()

    async def on_send(action: str, payload: dict[str, Any]) -> None:
        received.append((action, payload))
        got.set()

    with trio.fail_after(5):
        async with session_pair(version="2.1", on_send=on_send) as p:
            p.station.send_nowait("NotifyPeriodicEventStream", STREAM)
            await got.wait()
            assert received == [("NotifyPeriodicEventStream", STREAM)]
            assert p.csms.statistics().rpc.sends_received == 1
            assert p.station.statistics().rpc.sends_sent == 1


async def test_on_send_failure_is_counted_not_fatal() -> None:
    calls = 0
    second = trio.Event()

    async def on_send(action: str, payload: dict[str, Any]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("bad stream data")
        second.set()

    with trio.fail_after(5):
        async with session_pair(version="2.1", on_send=on_send) as p:
            p.station.send_nowait("NotifyPeriodicEventStream", STREAM)
            p.station.send_nowait("NotifyPeriodicEventStream", STREAM)
            await second.wait()
            stats = p.csms.statistics()
            assert stats.handler_errors == 1
            assert "bad stream data" in (stats.last_handler_error or "")
            assert await p.station.call("Heartbeat", {}) == {"currentTime": NOW}


# -- over the real stack: WebSocket over TLS over a transport that counts its writes -----------------------


class CountingEnd(trio.abc.Stream):
    """One end of an in-memory byte stream with a synchronous send path (``NowaitSend``); counts transport
    writes."""

    def __init__(
        self, inbox: trio.testing.MemoryReceiveStream, peer_inbox: trio.testing.MemoryReceiveStream
    ) -> None:
        self._in = inbox
        self._peer = peer_inbox
        self.writes = 0

    def send_nowait(self, data: bytes | bytearray | memoryview, /) -> bool:
        if data:
            self.writes += 1
            self._peer.put_data(bytes(data))
        return True

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()
        self.send_nowait(data)

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return bytes(await self._in.receive_some(max_bytes))

    async def aclose(self) -> None:
        self._peer.put_eof()
        await self._in.aclose()


def counting_pair() -> tuple[CountingEnd, CountingEnd]:
    a_in, b_in = trio.testing.MemoryReceiveStream(), trio.testing.MemoryReceiveStream()
    return CountingEnd(a_in, b_in), CountingEnd(b_in, a_in)


@pytest.mark.parametrize("compression", [False, True])
async def test_one_transport_write_per_message_over_ws_and_tls(compression: bool) -> None:
    from evsim.tls import ClientTls, ServerTls, TlsProfile, tls_accept, tls_connect
    from evsim.ws import Accept, ws_client, ws_server
    from tests.pki_fixtures import CSMS_HOST, TEST_NOW, make_test_pki

    pki = make_test_pki(TEST_NOW)
    server_tls = ServerTls.build(TlsProfile(), pki.server_identity())
    client_tls = ClientTls.build(TlsProfile(), pki.csms_trust())
    station_end, csms_end = counting_pair()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            sides: dict[str, Any] = {}

            async def csms_side() -> None:
                tls = await tls_accept(csms_end, server_tls, verify_time=lambda: TEST_NOW)
                sides["csms"] = await ws_server(
                    tls, lambda r: Accept(r.subprotocols[0]), compression=compression
                )

            nursery.start_soon(csms_side)
            tls = await tls_connect(station_end, client_tls, CSMS_HOST, verify_time=lambda: TEST_NOW)
            station_ws = await ws_client(
                tls, host=CSMS_HOST, path="/ocpp/CS1", subprotocols=["ocpp2.0.1"], compression=compression
            )
        assert isinstance(station_ws, NowaitTextTransport)  # the session's synchronous path
        async with trio.open_nursery() as nursery:
            station = OcppSession(station_ws, RpcConnection(), boot_handler)
            csms = OcppSession(sides["csms"], RpcConnection(), boot_handler)
            await nursery.start(_run, station)
            await nursery.start(_run, csms)
            assert await station.call("BootNotification", BOOT_REQ) == BOOT_RESP  # TLS 1.3 tickets settle
            before = station_end.writes, csms_end.writes
            for _ in range(20):
                assert await station.call("Heartbeat", {}) == {"currentTime": NOW}
            # one record, one transport write per CALL and per CALLRESULT
            assert (station_end.writes - before[0], csms_end.writes - before[1]) == (20, 20)
            answer = await csms.call("TriggerMessage", {"requestedMessage": "Heartbeat"})
            assert answer == {"status": "Accepted"}
            assert (station_end.writes - before[0], csms_end.writes - before[1]) == (21, 21)
            nursery.cancel_scope.cancel()


class BacklogTransport(PipeEnd):
    """A text transport whose synchronous path never gets through: everything waits for ``flush``."""

    def __init__(self, send: trio.MemorySendChannel[str], receive: trio.MemoryReceiveChannel[str]) -> None:
        super().__init__(send, receive)
        self.parked: list[str] = []
        self.flushes = 0

    def send_text_nowait(self, text: str, /) -> bool:
        self.parked.append(text)
        return False

    async def flush(self) -> None:
        self.flushes += 1
        parked, self.parked = self.parked, []
        for text in parked:
            await self.send_text(text)

    async def send_text(self, text: str) -> None:
        if self.parked:  # like the WebSocket: what waits goes first
            await self.flush()
        await super().send_text(text)


async def test_backlog_goes_out_through_the_writer_in_order() -> None:
    a_send, b_receive = trio.open_memory_channel[str](8)
    b_send, a_receive = trio.open_memory_channel[str](8)
    station_end = BacklogTransport(a_send, a_receive)
    assert isinstance(station_end, NowaitTextTransport)
    csms_end = PipeEnd(b_send, b_receive)
    station = OcppSession(station_end, RpcConnection(id_factory=default_id_factory("st")), boot_handler)
    csms = OcppSession(csms_end, RpcConnection(id_factory=default_id_factory("cs")), boot_handler)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(_run, station)
            await nursery.start(_run, csms)
            for _ in range(3):
                assert await station.call("Heartbeat", {}) == {"currentTime": NOW}
            assert station_end.flushes >= 3
            assert csms.statistics().rpc.calls_received == 3
            nursery.cancel_scope.cancel()


async def test_a_blocking_handler_hands_reading_to_a_new_task() -> None:
    # Handlers answer in arrival order, one at a time; while one is blocked, results still arrive.
    release = trio.Event()
    order: list[str] = []

    async def csms_handler(action: str, payload: dict[str, Any]) -> dict[str, Any]:
        order.append(f"start {action}")
        if action == "BootNotification":
            await release.wait()
        order.append(f"end {action}")
        return await boot_handler(action, payload)

    with trio.fail_after(5):
        async with session_pair(csms_handler=csms_handler) as p:
            results: list[str] = []

            async def boot() -> None:
                await p.station.call("BootNotification", BOOT_REQ)
                results.append("boot")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(boot)
                await trio.testing.wait_all_tasks_blocked()
                # the CSMS's reader moved on: its own CALL gets its result while the handler waits
                assert await p.csms.call("TriggerMessage", {"requestedMessage": "Heartbeat"}) == {
                    "status": "Accepted"
                }
                release.set()
            assert await p.station.call("Heartbeat", {}) == {"currentTime": NOW}
            assert order == [
                "start BootNotification",
                "end BootNotification",
                "start Heartbeat",
                "end Heartbeat",
            ]
            assert results == ["boot"]


async def test_a_handler_that_blocks_then_fails_is_answered_and_reading_goes_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def csms_handler(action: str, payload: dict[str, Any]) -> dict[str, Any]:
        if action == "Heartbeat":
            await trio.sleep(1)  # blocks: the reader hands over, then the handler fails
            raise RuntimeError("boom after a nap")
        return await boot_handler(action, payload)

    with trio.fail_after(10):
        async with session_pair(csms_handler=csms_handler) as p:
            for _ in range(3):  # a new reader each time; the old ones end when their handler is done
                with pytest.raises(CallErrorReceived) as info:
                    await p.station.call("Heartbeat", {})
                assert info.value.error_code == "InternalError"
                assert await p.station.call("BootNotification", BOOT_REQ) == BOOT_RESP
            stats = p.csms.statistics()
            assert stats.handler_errors == 3
            assert "boom after a nap" in (stats.last_handler_error or "")
            assert stats.incoming_queued == 0
