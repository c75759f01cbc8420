"""The Local Controller's relay bookkeeping (sans-IO): routing, own CALLs, id collisions, back-pressure, loss."""

from __future__ import annotations

import json
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import given

from evsim.errors import ConfigError
from evsim.nodes.relay import (
    CSMS,
    STATION,
    Dropped,
    OwnError,
    OwnResult,
    OwnTimedOut,
    RelayCore,
    UnroutedCall,
)


def call(mid: str, action: str = "Heartbeat", payload: dict[str, Any] | None = None) -> str:
    return json.dumps([2, mid, action, payload or {}])


def result(mid: str, payload: dict[str, Any] | None = None) -> str:
    return json.dumps([3, mid, payload or {}])


def error(mid: str, code: str = "NotSupported") -> str:
    return json.dumps([4, mid, code, "no", {}])


def test_transparent_both_ways() -> None:
    core = RelayCore()
    assert core.receive(STATION, call("s1"), 0.0) == []
    assert core.data_to_send(CSMS) == [call("s1")]
    assert core.receive(CSMS, result("s1"), 1.0) == []
    assert core.data_to_send(STATION) == [result("s1")]
    assert core.receive(CSMS, call("c1", "GetVariables"), 2.0) == []
    assert core.data_to_send(STATION) == [call("c1", "GetVariables")]
    assert core.receive(STATION, error("c1"), 3.0) == []
    assert core.data_to_send(CSMS) == [error("c1")]
    assert core.get_timer() is None
    stats = core.statistics()
    assert (stats.relayed_to_csms, stats.relayed_to_station, stats.stale_replies) == (2, 2, 0)


def test_malformed_frames_are_relayed_untouched() -> None:
    core = RelayCore()
    for text in (
        "not json",
        "[]",
        '[2, 5, "Heartbeat", {}]',
        '[9, "x"]',
        '[6, "s", "NotifyPeriodicEventStream", {}]',
    ):
        assert core.receive(STATION, text, 0.0) == []
        assert core.data_to_send(CSMS) == [text]


def test_own_call_answer_is_not_forwarded() -> None:
    core = RelayCore(id_prefix="lc-")
    mid = core.own_call(STATION, "TriggerMessage", {"requestedMessage": "Heartbeat"}, 0.0)
    (text,) = core.data_to_send(STATION)
    assert json.loads(text) == [2, mid, "TriggerMessage", {"requestedMessage": "Heartbeat"}]
    events = core.receive(STATION, result(mid, {"status": "Accepted"}), 1.0)
    assert events == [OwnResult(STATION, mid, "TriggerMessage", {"status": "Accepted"})]
    assert core.data_to_send(CSMS) == []


def test_own_id_skips_ids_the_csms_has_in_flight() -> None:
    """A CSMS CALL in flight to the station with the id the controller would use next: the own CALL gets
    another id, and the station's answers reach the right originator."""
    core = RelayCore(id_prefix="lc-")
    core.receive(CSMS, call("lc-1", "GetVariables"), 0.0)
    assert core.in_flight(STATION) == {"lc-1"}
    mid = core.own_call(STATION, "TriggerMessage", {"requestedMessage": "Heartbeat"}, 0.0)
    assert mid != "lc-1"
    assert mid == "lc-2"
    # the own CALL waits: a CALL is outstanding on the link (one outstanding CALL, OCPP-J §4.1.1)
    assert core.data_to_send(STATION) == [call("lc-1", "GetVariables")]
    assert core.receive(STATION, result("lc-1", {"getVariableResult": []}), 1.0) == []
    assert core.data_to_send(CSMS) == [result("lc-1", {"getVariableResult": []})]
    assert [json.loads(t)[1] for t in core.data_to_send(STATION)] == ["lc-2"]
    assert core.receive(STATION, result("lc-2", {"status": "Accepted"}), 2.0) == [
        OwnResult(STATION, "lc-2", "TriggerMessage", {"status": "Accepted"})
    ]
    assert core.data_to_send(CSMS) == []


def test_relayed_calls_wait_behind_an_own_call_and_backpressure() -> None:
    core = RelayCore(max_queue=2)
    mid = core.own_call(STATION, "TriggerMessage", {"requestedMessage": "Heartbeat"}, 0.0)
    core.data_to_send(STATION)
    assert core.receive(CSMS, call("c1"), 0.0) == []
    assert core.data_to_send(STATION) == []  # held behind the own CALL
    assert core.has_room(STATION)
    core.receive(CSMS, call("c2"), 0.0)
    assert not core.has_room(STATION)  # the node stops reading the CSMS now
    core.receive(STATION, error(mid), 1.0)
    assert core.data_to_send(STATION) == [call("c1"), call("c2")]
    assert core.has_room(STATION)
    assert core.statistics().held_peak == 2


def test_own_call_times_out_and_relayed_calls_are_forgotten() -> None:
    core = RelayCore(call_timeout=30.0)
    core.receive(CSMS, call("c1"), 0.0)
    mid = core.own_call(STATION, "TriggerMessage", {}, 0.0)
    assert core.get_timer() == 30.0
    assert core.handle_timer(30.0) == []  # the relayed CALL is forgotten; the own CALL goes out now
    assert core.statistics().forgotten == 1
    assert core.data_to_send(STATION)[-1] == json.dumps([2, mid, "TriggerMessage", {}], separators=(",", ":"))
    assert core.get_timer() == 60.0
    assert core.handle_timer(60.0) == [OwnTimedOut(STATION, mid, "TriggerMessage")]
    # a late answer is then stale: forwarded (the CSMS drops it, as it would directly)
    core.receive(STATION, result(mid), 61.0)
    assert core.statistics().stale_replies == 1


def test_upstream_lost_hands_back_unanswered_station_calls() -> None:
    core = RelayCore()
    core.receive(STATION, call("s1", "TransactionEvent", {"seqNo": 1}), 0.0)
    own = core.own_call(CSMS, "BootNotification", {"reason": "PowerUp"}, 0.0)
    core.receive(STATION, call("s2", "TransactionEvent", {"seqNo": 2}), 0.0)  # queued behind the own CALL
    core.data_to_send(CSMS)
    events = core.upstream_lost()
    assert events == [
        UnroutedCall("s1", "TransactionEvent", {"seqNo": 1}, resent=True),
        OwnError(CSMS, own, "BootNotification", "ConnectionLost", "CSMS link lost"),
        UnroutedCall("s2", "TransactionEvent", {"seqNo": 2}, resent=False),
    ]
    assert core.receive(STATION, call("s3"), 1.0) == [UnroutedCall("s3", "Heartbeat", {})]
    assert core.receive(STATION, result("x"), 1.0) == [Dropped(result("x"))]
    # not even JSON: answered here as the CSMS's RPC core would (RpcFrameworkError, id "-1")
    assert core.receive(STATION, "garbage", 1.0) == []
    (answer,) = core.data_to_send(STATION)
    assert json.loads(answer)[:3] == [4, "-1", "RpcFrameworkError"]
    core.upstream_restored()
    assert core.receive(STATION, call("s4"), 2.0) == []
    assert core.data_to_send(CSMS) == [call("s4")]


def test_bad_prefix_refused() -> None:
    with pytest.raises(ConfigError, match="id_prefix"):
        RelayCore(id_prefix="")
    with pytest.raises(ConfigError, match="id_prefix"):
        RelayCore(id_prefix="x" * 25)


_ops = st.lists(
    st.one_of(
        st.tuples(st.just("csms_call"), st.sampled_from(["lc-1", "lc-2", "lc-3", "a", "b"])),
        st.tuples(st.just("own"), st.just("")),
        st.tuples(st.just("station_answers"), st.just("")),
        st.tuples(st.just("tick"), st.just("")),
    ),
    max_size=40,
)


@given(_ops)
def test_property_one_own_call_at_a_time_and_unique_ids(ops: list[tuple[str, str]]) -> None:
    """Whatever the interleaving: an own id never equals a CSMS id in flight when issued, the station never
    has an own CALL outstanding together with another CALL, and every station answer reaches exactly one
    originator (own answers never reach the CSMS)."""
    core = RelayCore(id_prefix="lc-", call_timeout=10.0, max_queue=1000)
    now = 0.0
    on_wire: list[str] = []  # CALL ids sent to the station, not answered yet (in order)
    own_ids: set[str] = set()
    for op, arg in ops:
        if op == "csms_call" and arg not in core.in_flight(STATION) and arg not in own_ids:
            core.receive(CSMS, call(arg), now)
        elif op == "own":
            busy = core.in_flight(STATION)
            mid = core.own_call(STATION, "TriggerMessage", {}, now)
            assert mid not in busy
            own_ids.add(mid)
        elif op == "station_answers" and on_wire:
            mid = on_wire.pop(0)
            events = core.receive(STATION, result(mid), now)
            forwarded = core.data_to_send(CSMS)
            if mid in own_ids:
                assert forwarded == [] and [type(e) for e in events] == [OwnResult]
            else:
                assert forwarded == [result(mid)] and events == []
        elif op == "tick":
            now += 11.0
            for event in core.handle_timer(now):
                assert isinstance(event, OwnTimedOut)
            # timed out (own) or forgotten (relayed): "considered not sent" (OCPP 2.0.1 Part 2 §3.2)
            alive = core.in_flight(STATION) | {core.own_outstanding(STATION)}
            on_wire = [m for m in on_wire if m in alive]
        for text in core.data_to_send(STATION):
            on_wire.append(json.loads(text)[1])
        own_out = core.own_outstanding(STATION)
        if own_out is not None:
            assert on_wire == [own_out]  # an own CALL is never outstanding beside another CALL
