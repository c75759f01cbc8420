"""The sans-IO RPC core: unit tests, robustness properties and a stateful model check."""

from __future__ import annotations

import random
from collections import deque
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from evsim.errors import ConfigError, OcppError, OutboxFull, SchemaViolation
from evsim.ocpp.framing import (
    Call,
    CallError,
    CallResult,
    CallResultError,
    Send,
    decode_frame,
    dumps,
    encode_frame,
)
from evsim.ocpp.rpc import (
    BadInput,
    CallReceived,
    CallTimedOut,
    ErrorReceived,
    ResultErrorReceived,
    ResultReceived,
    RpcConnection,
    RpcEvent,
    SendReceived,
    default_id_factory,
    random_id_prefix,
)
from tests import strategies

NOW = "2024-05-01T12:00:00.000Z"
BOOT_REQ: dict[str, Any] = {"reason": "PowerUp", "chargingStation": {"model": "M", "vendorName": "V"}}
BOOT_RESP: dict[str, Any] = {"currentTime": NOW, "interval": 300, "status": "Accepted"}
STATUS_REQ: dict[str, Any] = {"timestamp": NOW, "connectorStatus": "Available", "evseId": 1, "connectorId": 1}
REQUESTS: dict[str, dict[str, Any]] = {
    "Heartbeat": {},
    "BootNotification": BOOT_REQ,
    "StatusNotification": STATUS_REQ,
}
RESPONSES: dict[str, dict[str, Any]] = {
    "Heartbeat": {"currentTime": NOW},
    "BootNotification": BOOT_RESP,
    "StatusNotification": {},
}
STREAM: dict[str, Any] = {"id": 1, "pending": 0, "basetime": NOW, "data": [{"t": 0, "v": "1"}]}


def conn(version: str = "2.0.1", prefix: str = "a", **kwargs: Any) -> RpcConnection:
    return RpcConnection(version=version, id_factory=default_id_factory(prefix), **kwargs)


def sent(c: RpcConnection, version: str | None = None) -> list[Any]:
    """Decode every frame ``c`` wants to send (proves they all decode)."""
    return [decode_frame(t, version=version or c.version) for t in c.data_to_send()]


def pump(src: RpcConnection, dst: RpcConnection, now: float = 0.0) -> list[RpcEvent]:
    events: list[RpcEvent] = []
    for text in src.data_to_send():
        events.extend(dst.receive(text, now))
    return events


# ---- basic exchange -------------------------------------------------------------------------------------


def test_call_and_result_round_trip() -> None:
    a, b = conn(prefix="a"), conn(prefix="b")
    mid = a.call("BootNotification", BOOT_REQ, now=0.0)
    assert mid == "a-1"
    [incoming] = pump(a, b)
    assert incoming == CallReceived("a-1", "BootNotification", BOOT_REQ)
    assert b.pending_incoming() == {"a-1": "BootNotification"}
    b.reply(mid, BOOT_RESP)
    assert pump(b, a) == [ResultReceived("a-1", "BootNotification", BOOT_RESP)]
    assert a.outstanding_id is None
    stats = a.statistics()
    assert (stats.calls_sent, stats.results_received, stats.outstanding, stats.frames_out) == (1, 1, 0, 1)
    assert stats.bytes_out > 50
    assert b.statistics().calls_received == 1
    assert b.statistics().results_sent == 1
    assert b.statistics().bytes_in == stats.bytes_out


def test_call_error_round_trip() -> None:
    a, b = conn(prefix="a"), conn(prefix="b")
    mid = a.call("Heartbeat", {}, now=0.0)
    pump(a, b)
    b.reply_error(mid, "NotSupported", "x" * 300, {"why": 1})
    [event] = pump(b, a)
    assert event == ErrorReceived(mid, "Heartbeat", "NotSupported", "x" * 255, {"why": 1})
    assert not event.local


def test_one_outstanding_call_fifo() -> None:
    a, b = conn(prefix="a"), conn(prefix="b")
    ids = [a.call("Heartbeat", {}, now=0.0) for _ in range(3)]
    assert [f.message_id for f in sent(a)] == [ids[0]]  # only the first goes out
    assert a.statistics().outbox_length == 2
    assert a.data_to_send() == []
    for i, mid in enumerate(ids):
        [event] = a.receive(encode_frame(CallResult(mid, {"currentTime": NOW})), now=float(i))
        assert isinstance(event, ResultReceived)
        assert event.message_id == mid
        released = sent(a)
        assert [f.message_id for f in released] == ids[i + 1 : i + 2]
    assert a.get_timer() is None
    del b


def test_timeout_releases_next_call() -> None:
    a = conn(call_timeout=10.0)
    first = a.call("Heartbeat", {}, now=100.0)
    second = a.call("Heartbeat", {}, now=101.0)
    assert [f.message_id for f in sent(a)] == [first]
    assert a.get_timer() == 110.0
    assert a.handle_timer(109.9) == []
    assert a.handle_timer(110.0) == [CallTimedOut(first, "Heartbeat")]
    assert [f.message_id for f in sent(a)] == [second]
    assert a.get_timer() == 120.0  # the timeout starts when a CALL is released
    # a late answer to the timed-out CALL is dropped
    [event] = a.receive(encode_frame(CallResult(first, {"currentTime": NOW})), now=111.0)
    assert isinstance(event, BadInput)
    assert not event.replied
    assert a.data_to_send() == []
    assert a.outstanding_id == second
    assert a.statistics().timeouts == 1


def test_result_with_unknown_id_is_dropped() -> None:
    a = conn()
    a.call("Heartbeat", {}, now=0.0)
    sent(a)
    for frame in (CallResult("nope", {}), CallError("nope", "GenericError")):
        [event] = a.receive(encode_frame(frame), now=0.0)
        assert isinstance(event, BadInput)
        assert not event.replied
    assert a.data_to_send() == []
    assert a.outstanding_id == "a-1"


# ---- validation ---------------------------------------------------------------------------------------


def test_local_request_validation_raises_before_queueing() -> None:
    a = conn()
    with pytest.raises(SchemaViolation) as info:
        a.call("BootNotification", {"reason": "PowerUp"}, now=0.0)
    assert info.value.error_code == "OccurrenceConstraintViolation"
    with pytest.raises(SchemaViolation) as info:
        a.call("NoSuchAction", {}, now=0.0)
    assert info.value.error_code == "NotImplemented"
    with pytest.raises(SchemaViolation):
        a.call("Heartbeat", {"x": object()}, now=0.0)
    assert a.data_to_send() == []
    assert a.statistics().outbox_length == 0


def test_reply_is_validated_against_the_received_action() -> None:
    a, b = conn(prefix="a"), conn(prefix="b")
    mid = a.call("BootNotification", BOOT_REQ, now=0.0)
    pump(a, b)
    with pytest.raises(SchemaViolation) as info:
        b.reply(mid, {"currentTime": NOW})  # a Heartbeat response is not a BootNotification response
    assert info.value.error_code == "OccurrenceConstraintViolation"
    assert b.data_to_send() == []
    b.reply_error(mid, "InternalError")  # still pending, so it can be answered with an error
    with pytest.raises(ValueError, match="no unanswered"):
        b.reply(mid, BOOT_RESP)
    with pytest.raises(ValueError, match="no unanswered"):
        b.reply_error("other", "GenericError")


def test_reply_error_needs_a_real_error_code() -> None:
    a, b = conn(prefix="a"), conn(prefix="b")
    mid = a.call("Heartbeat", {}, now=0.0)
    pump(a, b)
    with pytest.raises(ValueError, match="error code"):
        b.reply_error(mid, "FormationViolation")  # the OCPP 1.6 misspelling


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ('[2,"p1","NoSuchAction",{}]', "NotImplemented"),
        ('[2,"p1","BootNotification",{"reason":"PowerUp"}]', "OccurrenceConstraintViolation"),
        ('[2,"p1","Heartbeat",{"x":1}]', "FormatViolation"),
        ('[2,"p1","Heartbeat",[]]', "FormatViolation"),
        ('[2,"p1",1,{}]', "RpcFrameworkError"),
    ],
)
def test_bad_incoming_call_is_answered_by_the_core(text: str, code: str) -> None:
    b = conn()
    [event] = b.receive(text, now=0.0)
    assert isinstance(event, BadInput)
    assert event.replied
    assert event.error.error_code == code
    [reply] = sent(b)
    assert isinstance(reply, CallError)
    assert (reply.message_id, reply.error_code) == ("p1", code)
    assert b.pending_incoming() == {}


@pytest.mark.parametrize("version", ["2.0.1", "2.1"])
def test_invalid_callresult_completes_the_call(version: str) -> None:
    a = conn(version)
    mid = a.call("BootNotification", BOOT_REQ, now=0.0)
    nxt = a.call("Heartbeat", {}, now=0.0)
    sent(a)
    bad, completed = a.receive(encode_frame(CallResult(mid, {"status": "Accepted"})), now=1.0)
    assert isinstance(bad, BadInput)
    assert isinstance(bad.error, SchemaViolation)
    assert isinstance(completed, ErrorReceived)
    assert completed.local
    assert (completed.message_id, completed.error_code) == (mid, "OccurrenceConstraintViolation")
    frames = sent(a)
    if version == "2.1":  # answered with CALLRESULTERROR, then the next CALL goes out
        assert bad.replied
        assert isinstance(frames[0], CallResultError)
        assert frames[0].message_id == mid
        assert frames[0].error_code == "OccurrenceConstraintViolation"
        frames = frames[1:]
    else:  # 2.0.1 never answers a CALLRESULT
        assert not bad.replied
    assert [f.message_id for f in frames] == [nxt]


def test_malformed_answer_frame_completes_the_call() -> None:
    a = conn()
    mid = a.call("Heartbeat", {}, now=0.0)
    sent(a)
    bad, completed = a.receive(f'[4,"{mid}","GenericError"]', now=0.0)
    assert isinstance(bad, BadInput)
    assert not bad.replied
    assert isinstance(completed, ErrorReceived)
    assert completed.local
    assert completed.error_code == "RpcFrameworkError"
    assert a.outstanding_id is None
    assert a.data_to_send() == []


def test_validation_off_sends_anything() -> None:
    a, b = conn(prefix="a", validate=False), conn(prefix="b")
    mid = a.call("MadeUpAction", {"whatever": [1]}, now=0.0)
    [event] = pump(a, b)
    assert isinstance(event, BadInput)
    assert event.error.error_code == "NotImplemented"
    assert pump(b, a) == [
        ErrorReceived(mid, "MadeUpAction", "NotImplemented", "unknown action 'MadeUpAction'", {})
    ]


# ---- message ids --------------------------------------------------------------------------------------


def test_default_ids_unique_and_short() -> None:
    c = RpcConnection()
    ids = {c.call("Heartbeat", {}, now=0.0) for _ in range(c.max_outbox)}
    assert len(ids) == c.max_outbox
    assert all(len(i) <= 36 for i in ids)
    factory = default_id_factory("f" * 16)
    many = [factory() for _ in range(10_000)]
    assert len(set(many)) == len(many)
    assert len("f" * 16 + "-" + str(10**19 - 1)) == 36  # the longest id the default factory can produce
    with pytest.raises(ValueError, match="prefix"):
        default_id_factory("x" * 17)


def test_prefix_is_seedable() -> None:
    assert random_id_prefix(random.Random(7)) == random_id_prefix(random.Random(7))
    assert len(random_id_prefix()) == 16
    assert RpcConnection().call("Heartbeat", {}, 0.0) != RpcConnection().call("Heartbeat", {}, 0.0)


def test_bad_id_factory_is_refused() -> None:
    c = RpcConnection(id_factory=lambda: "x" * 37)
    with pytest.raises(ValueError, match="invalid message id"):
        c.call("Heartbeat", {}, now=0.0)


# ---- OCPP 2.1: SEND and CALLRESULTERROR ---------------------------------------------------------------


def test_send_bypasses_the_outstanding_call() -> None:
    a, b = conn("2.1", prefix="a"), conn("2.1", prefix="b")
    a.call("Heartbeat", {}, now=0.0)
    a.call("Heartbeat", {}, now=0.0)
    mid = a.send_unconfirmed("NotifyPeriodicEventStream", STREAM)
    events = pump(a, b)
    assert events[1] == SendReceived(mid, "NotifyPeriodicEventStream", STREAM)
    assert [type(f) for f in sent(b)] == []  # a SEND is never answered
    assert a.statistics().sends_sent == 1
    assert b.statistics().sends_received == 1


def test_send_is_21_only() -> None:
    with pytest.raises(OcppError) as info:
        conn("2.0.1").send_unconfirmed("NotifyPeriodicEventStream", STREAM)
    assert info.value.error_code == "MessageTypeNotSupported"
    with pytest.raises(SchemaViolation):
        conn("2.1").send_unconfirmed("Heartbeat", {})
    with pytest.raises(SchemaViolation):
        conn("2.1").call("NotifyPeriodicEventStream", STREAM, now=0.0)


@pytest.mark.parametrize(
    "frame",
    [
        Send("s1", "NotifyPeriodicEventStream", {"id": "x"}),
        Send("s1", "Heartbeat", {}),
        Send("s1", "Unknown", {}),
    ],
)
def test_bad_send_is_dropped_silently(frame: Send) -> None:
    b = conn("2.1")
    [event] = b.receive(encode_frame(frame), now=0.0)
    assert isinstance(event, BadInput)
    assert not event.replied
    assert b.data_to_send() == []


def test_callresulterror_received() -> None:
    b = conn("2.1")
    [event] = b.receive(encode_frame(CallResultError("x1", "FormatViolation", "bad", {})), now=0.0)
    assert event == ResultErrorReceived("x1", "FormatViolation", "bad", {})
    assert b.statistics().result_errors_received == 1


@pytest.mark.parametrize(
    ("version", "text", "answer"),
    [
        ("2.0.1", '[9,"u1",{}]', "MessageTypeNotSupported"),
        ("2.0.1", '[6,"u1","NotifyPeriodicEventStream",{}]', "MessageTypeNotSupported"),
        ("2.1", '[9,"u1",{}]', None),  # OCPP-J 2.1 §4.1.3: ignored
        ("2.0.1", "{garbage", "RpcFrameworkError"),
    ],
)
def test_unknown_message_types(version: str, text: str, answer: str | None) -> None:
    b = conn(version)
    [event] = b.receive(text, now=0.0)
    assert isinstance(event, BadInput)
    frames = sent(b)
    if answer is None:
        assert frames == []
        assert not event.replied
    else:
        [reply] = frames
        assert isinstance(reply, CallError)
        assert reply.error_code == answer


# ---- limits ----------------------------------------------------------------------------------------------


def test_outbox_is_bounded() -> None:
    a = conn(max_outbox=3)
    for _ in range(3):
        a.call("Heartbeat", {}, now=0.0)
    with pytest.raises(OutboxFull):
        a.call("Heartbeat", {}, now=0.0)
    a.receive(encode_frame(CallResult("a-1", {"currentTime": NOW})), now=0.0)
    a.call("Heartbeat", {}, now=0.0)  # room again


def test_send_is_bounded_by_unsent_frames() -> None:
    a = conn("2.1", max_outbox=2)
    a.send_unconfirmed("NotifyPeriodicEventStream", STREAM)
    a.send_unconfirmed("NotifyPeriodicEventStream", STREAM)
    with pytest.raises(OutboxFull):
        a.send_unconfirmed("NotifyPeriodicEventStream", STREAM)
    a.data_to_send()
    a.send_unconfirmed("NotifyPeriodicEventStream", STREAM)


def test_incoming_calls_are_bounded_and_ids_not_reused() -> None:
    b = conn(max_incoming=2)
    assert isinstance(b.receive('[2,"p1","Heartbeat",{}]', 0.0)[0], CallReceived)
    [dup] = b.receive('[2,"p1","Heartbeat",{}]', 0.0)
    assert isinstance(dup, BadInput)
    assert not dup.replied
    assert isinstance(b.receive('[2,"p2","Heartbeat",{}]', 0.0)[0], CallReceived)
    [over] = b.receive('[2,"p3","Heartbeat",{}]', 0.0)
    assert isinstance(over, BadInput)
    assert over.replied
    [reply] = sent(b)
    assert isinstance(reply, CallError)
    assert (reply.message_id, reply.error_code) == ("p3", "RpcFrameworkError")


def test_frame_size_limits() -> None:
    a = conn(max_frame=200)
    with pytest.raises(SchemaViolation, match="too large"):
        a.call("DataTransfer", {"vendorId": "v", "data": "x" * 300}, now=0.0)
    [event] = a.receive(encode_frame(Call("p", "DataTransfer", {"vendorId": "v", "data": "x" * 300})), 0.0)
    assert isinstance(event, BadInput)
    [reply] = sent(a)
    assert isinstance(reply, CallError)
    assert (reply.message_id, reply.error_code) == ("-1", "FormatViolation")


def test_cancel_pending_returns_everything_unfinished() -> None:
    a = conn()
    a.call("BootNotification", BOOT_REQ, now=0.0)
    a.call("Heartbeat", {}, now=0.0)
    a.call("StatusNotification", STATUS_REQ, now=0.0)
    a.receive('[2,"p1","Heartbeat",{}]', 0.0)
    assert a.cancel_pending() == [
        ("BootNotification", BOOT_REQ),
        ("Heartbeat", {}),
        ("StatusNotification", STATUS_REQ),
    ]
    assert a.data_to_send() == []
    assert a.get_timer() is None
    assert a.pending_incoming() == {}
    assert a.cancel_pending() == []
    a.call("Heartbeat", {}, now=5.0)  # usable again
    assert a.get_timer() == 35.0


def test_cancel_call_withdraws_only_queued_calls() -> None:
    a = conn()
    first = a.call("Heartbeat", {}, now=0.0)
    second = a.call("Heartbeat", {}, now=0.0)
    assert not a.cancel_call(first)  # already sent
    assert a.cancel_call(second)
    assert not a.cancel_call(second)
    a.receive(encode_frame(CallResult(first, {"currentTime": NOW})), 0.0)
    assert [f.message_id for f in sent(a)] == [first]


def test_constructor_checks() -> None:
    with pytest.raises(ConfigError):
        RpcConnection(version="1.6")
    with pytest.raises(ValueError, match="positive"):
        RpcConnection(call_timeout=0)


# ---- robustness: remote input never raises ----------------------------------------------------------

versions = st.sampled_from(["2.0.1", "2.1"])


def _check_receive(version: str, texts: list[str]) -> None:
    c = conn(version)
    c.call("Heartbeat", {}, now=0.0)
    c.data_to_send()
    for text in texts:
        events = c.receive(text, now=1.0)
        assert events
        for event in events:
            assert not isinstance(event, ResultReceived | ErrorReceived) or event.message_id == "a-1"
    for text in c.data_to_send():
        decode_frame(text, version=version)  # everything the core answers is a valid frame


@given(versions, st.lists(st.text(), max_size=5))
def test_receive_never_raises_on_text(version: str, texts: list[str]) -> None:
    _check_receive(version, texts)


@given(versions, st.lists(strategies.frame_like_values, max_size=5))
def test_receive_never_raises_on_json(version: str, values: list[Any]) -> None:
    _check_receive(version, [dumps(v) for v in values])


@given(versions, st.lists(strategies.frames_21, max_size=5))
def test_receive_never_raises_on_wellformed_frames(version: str, frames: list[Any]) -> None:
    _check_receive(version, [encode_frame(f) for f in frames])


# ---- stateful model check -------------------------------------------------------------------------------

TIMEOUT = 30.0


class RpcModel(RuleBasedStateMachine):
    """One RpcConnection against a scripted peer, checked against a tiny model of OCPP-J §4.1.1."""

    def __init__(self) -> None:
        super().__init__()
        self.c = conn()
        self.now = 0.0
        self.queued: deque[str] = deque()  # our CALLs not released yet, in call order
        self.outstanding: str | None = None
        self.deadline: float | None = None
        self.action_of: dict[str, str] = {}
        self.ended: set[str] = set()
        self.incoming: dict[str, str] = {}  # peer CALLs we have not answered
        self.peer_ids = 0

    @initialize(version=versions)
    def start(self, version: str) -> None:
        self.c = conn(version, prefix="m", max_outbox=4, max_incoming=64, call_timeout=TIMEOUT)

    # -- helpers

    def _end(self, mid: str) -> None:
        assert mid == self.outstanding, f"{mid} ended but {self.outstanding} was outstanding"
        assert mid not in self.ended
        self.ended.add(mid)
        self.outstanding = self.deadline = None

    def _handle(self, events: list[RpcEvent]) -> None:
        for event in events:
            if isinstance(event, ResultReceived | ErrorReceived | CallTimedOut):
                assert event.action == self.action_of[event.message_id]
                self._end(event.message_id)
            elif isinstance(event, CallReceived):
                self.incoming[event.message_id] = event.action
        self._drain()

    def _drain(self) -> None:
        for text in self.c.data_to_send():
            frame = decode_frame(text, version=self.c.version)  # never a frame that fails to decode
            if isinstance(frame, Call):
                assert self.outstanding is None, "a second CALL went out while one was outstanding"
                assert self.queued, "a CALL nobody made"
                assert frame.message_id == self.queued.popleft(), "CALLs released out of order"
                self.outstanding = frame.message_id
                self.deadline = self.now + TIMEOUT
            elif isinstance(frame, CallResult):
                assert self.incoming.pop(frame.message_id) is not None
            else:
                assert isinstance(frame, CallError | CallResultError)

    def _peer(self, frame: Any) -> list[RpcEvent]:
        events = self.c.receive(encode_frame(frame), self.now)
        self._handle(events)
        return events

    # -- rules

    @rule(action=st.sampled_from(sorted(REQUESTS)))
    def local_call(self, action: str) -> None:
        unfinished = len(self.queued) + (self.outstanding is not None)
        if unfinished >= 4:
            with pytest.raises(OutboxFull):
                self.c.call(action, REQUESTS[action], self.now)
            return
        mid = self.c.call(action, REQUESTS[action], self.now)
        assert mid not in self.action_of
        assert len(mid) <= 36
        self.action_of[mid] = action
        self.queued.append(mid)
        self._drain()

    @precondition(lambda self: self.outstanding is not None)
    @rule(valid=st.booleans())
    def peer_answers_result(self, valid: bool) -> None:
        mid = self.outstanding
        assert mid is not None
        payload = RESPONSES[self.action_of[mid]] if valid else {"bogus": True}
        events = self._peer(CallResult(mid, payload))
        kinds = [type(e) for e in events]
        assert kinds == ([ResultReceived] if valid else [BadInput, ErrorReceived])

    @precondition(lambda self: self.outstanding is not None)
    @rule(code=st.sampled_from(["GenericError", "NotSupported", "SecurityError"]))
    def peer_answers_error(self, code: str) -> None:
        mid = self.outstanding
        events = self._peer(CallError(str(mid), code, "no"))
        assert [type(e) for e in events] == [ErrorReceived]

    @rule(mid=st.sampled_from(["nope", "-1", "m-999"]))
    def peer_answers_wrong_id(self, mid: str) -> None:
        events = self._peer(CallResult(mid, {}))
        assert len(events) == 1
        assert isinstance(events[0], BadInput)
        assert not events[0].replied

    @rule(text=st.text(max_size=30) | strategies.frame_like_values.map(dumps))
    def peer_sends_garbage(self, text: str) -> None:
        self._handle(self.c.receive(text, self.now))

    @rule(dt=st.floats(min_value=0.0, max_value=2 * TIMEOUT))
    def time_advances(self, dt: float) -> None:
        self.now += dt
        expired = self.deadline is not None and self.now >= self.deadline
        events = self.c.handle_timer(self.now)
        assert [type(e) for e in events] == ([CallTimedOut] if expired else [])
        self._handle(events)

    @rule()
    def peer_sends_call(self) -> None:
        self.peer_ids += 1
        events = self._peer(Call(f"p-{self.peer_ids}", "Heartbeat", {}))
        assert [type(e) for e in events] == [CallReceived]

    @precondition(lambda self: bool(self.incoming))
    @rule(data=st.data(), as_error=st.booleans())
    def we_reply(self, data: st.DataObject, as_error: bool) -> None:
        mid = data.draw(st.sampled_from(sorted(self.incoming)))
        if as_error:
            self.c.reply_error(mid, "NotSupported")
            frames = [decode_frame(t, version=self.c.version) for t in self.c.data_to_send()]
            assert frames == [CallError(mid, "NotSupported")]
            del self.incoming[mid]
        else:
            action = self.incoming[mid]
            self.c.reply(mid, RESPONSES.get(action, {"currentTime": NOW}))
            self._drain()

    # -- invariants

    @invariant()
    def at_most_one_outstanding(self) -> None:
        stats = self.c.statistics()
        assert stats.outstanding == (self.outstanding is not None)
        assert stats.outbox_length == len(self.queued)
        assert self.c.outstanding_id == self.outstanding
        assert self.c.get_timer() == self.deadline
        # a queued CALL is released as soon as nothing is outstanding (no idling with work queued)
        assert self.outstanding is not None or not self.queued

    def teardown(self) -> None:
        pending = self.c.cancel_pending()
        unfinished = ([self.outstanding] if self.outstanding else []) + list(self.queued)
        assert [a for a, _ in pending] == [self.action_of[m] for m in unfinished]
        # every CALL ended exactly once or is handed back
        assert self.ended.isdisjoint(unfinished)
        assert self.ended | set(unfinished) == set(self.action_of)


RpcModel.TestCase.settings = settings(RpcModel.TestCase.settings, stateful_step_count=40)
test_rpc_model = RpcModel.TestCase


def test_timer_attribute_follows_the_outstanding_call() -> None:
    """``timer`` (what a driver reads per message instead of calling get_timer) is the outstanding CALL's deadline."""
    a = RpcConnection(call_timeout=5.0, id_factory=default_id_factory("a"))

    def both() -> tuple[float | None, float | None]:
        return a.timer, a.get_timer()

    assert both() == (None, None)
    first = a.call("Heartbeat", {}, 10.0)
    a.call("Heartbeat", {}, 11.0)  # queued behind the first
    assert both() == (15.0, 15.0)
    a.receive(f'[3, "{first}", {{"currentTime": "2026-01-01T00:00:00.000Z"}}]', 12.0)
    assert both() == (17.0, 17.0)  # the second was released at 12
    assert [type(e).__name__ for e in a.handle_timer(17.0)] == ["CallTimedOut"]
    assert both() == (None, None)
    a.call("Heartbeat", {}, 20.0)
    a.cancel_pending()
    assert both() == (None, None)
