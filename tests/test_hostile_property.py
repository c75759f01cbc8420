"""Hypothesis: a hostile peer mixing valid and invalid OCPP-J frames.

The strategy draws valid CALLs (schema-valid payloads of the actions the nodes act on), and breaks them:
truncations, type swaps, random JSON, huge numbers, deep nesting, duplicate and unknown ids, replies to
nothing. Properties:

* sans-IO: :class:`~evsim.ocpp.rpc.RpcConnection` never raises from ``receive`` and keeps its queues within
  their limits (every frame is answered at most once); :class:`~evsim.nodes.relay.RelayCore` never raises and
  forwards each text at most once;
* in memory: a CSMS fed those frames by hostile clients keeps serving; every honest station beside them
  completes its charging session.
"""

from __future__ import annotations

import json
import random
from typing import Any

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evsim.nodes.relay import CSMS, STATION, RelayCore
from evsim.ocpp.rpc import BadInput, CallReceived, RpcConnection
from evsim.tls import ClientTls, TlsProfile
from tests import hostile
from tests.e2e_harness import harness
from tests.strategies import frame_like_values, json_values

# ---------------------------------------------------------------- the strategy

_TS = "2030-06-01T12:00:00Z"
VALID_PAYLOADS: dict[str, dict[str, Any]] = {
    "Heartbeat": {},
    "BootNotification": hostile.boot_payload("HOSTILE"),
    "StatusNotification": {"timestamp": _TS, "connectorStatus": "Available", "evseId": 1, "connectorId": 1},
    "Authorize": {"idToken": {"idToken": "TOKEN", "type": "ISO14443"}},
    "TransactionEvent": {
        "eventType": "Started",
        "timestamp": _TS,
        "triggerReason": "Authorized",
        "seqNo": 0,
        "transactionInfo": {"transactionId": "tx-1"},
        "evse": {"id": 1, "connectorId": 1},
        "meterValue": [{"timestamp": _TS, "sampledValue": [{"value": 1.0}]}],
    },
    "MeterValues": {"evseId": 1, "meterValue": [{"timestamp": _TS, "sampledValue": [{"value": 2.5}]}]},
    "SecurityEventNotification": {"type": "StartupOfTheDevice", "timestamp": _TS},
}

ids = st.sampled_from(["a", "b", "dup", "x" * 36, "-1", ""]) | st.text(max_size=40)
huge_numbers = st.sampled_from([-1, -(2**63), 2**64 + 1, 1e308, -1e308, 10**30, 0.5])


@st.composite
def valid_calls(draw: st.DrawFn) -> list[Any]:
    action = draw(st.sampled_from(sorted(VALID_PAYLOADS)))
    return [2, draw(ids), action, json.loads(json.dumps(VALID_PAYLOADS[action]))]


def _swap(value: Any, replacement: Any, path: list[int]) -> Any:
    """Replace one leaf (chosen by ``path``) of a JSON value."""
    if isinstance(value, dict) and value:
        keys = sorted(value)
        key = keys[path[0] % len(keys)] if path else keys[0]
        return {**value, key: _swap(value[key], replacement, path[1:])}
    if isinstance(value, list) and value:
        i = path[0] % len(value) if path else 0
        return [*value[:i], _swap(value[i], replacement, path[1:]), *value[i + 1 :]]
    return replacement


@st.composite
def hostile_texts(draw: st.DrawFn) -> str:
    """One WebSocket text message from a hostile peer."""
    kind = draw(
        st.sampled_from(["valid", "swap", "huge", "truncate", "random", "frame_like", "deep", "reply"])
    )
    if kind == "random":
        return json.dumps(draw(json_values))
    if kind == "frame_like":
        return json.dumps(draw(frame_like_values))
    if kind == "deep":
        depth = draw(st.integers(1, 3000))
        return "[" * depth + "]" * draw(st.integers(0, depth))
    if kind == "reply":
        if draw(st.booleans()):
            return json.dumps([3, draw(ids), draw(json_values)])
        return json.dumps([4, draw(ids), draw(st.text(max_size=20)), draw(st.text(max_size=20)), {}])
    call = draw(valid_calls())
    path = draw(st.lists(st.integers(0, 7), max_size=4))
    if kind == "swap":
        call = _swap(call, draw(json_values), path)
    elif kind == "huge":
        call = [*call[:3], _swap(call[3], draw(huge_numbers), path)]
    text = json.dumps(call)
    if kind == "truncate":
        text = text[: draw(st.integers(0, max(0, len(text) - 1)))]
    return text


conversations = st.lists(hostile_texts(), min_size=1, max_size=30)

# ---------------------------------------------------------------- sans-IO cores


@given(conversations, st.sampled_from(["2.0.1", "2.1"]))
def test_rpc_connection_takes_anything(texts: list[str], version: str) -> None:
    rpc = RpcConnection(version=version, max_incoming=4, max_outbox=8)
    rpc.call("Heartbeat", {}, 0.0)  # one CALL of ours outstanding, so replies have something to hit
    assert len(rpc.data_to_send()) == 1
    for i, text in enumerate(texts):
        before = rpc.statistics().frames_out
        events = rpc.receive(text, float(i))  # documented: never raises
        out = rpc.data_to_send()
        assert len(out) <= 2, out  # at most one answer (plus the next CALL released)
        assert rpc.statistics().frames_out - before == len(out)
        for event in events:
            if isinstance(event, CallReceived):
                rpc.reply_error(event.message_id, "NotSupported")
                assert len(rpc.data_to_send()) == 1
            else:
                assert not isinstance(event, BadInput) or event.error is not None
        stats = rpc.statistics()
        assert stats.incoming_pending <= rpc.max_incoming
        assert stats.outbox_length + stats.outstanding <= rpc.max_outbox
    rpc.handle_timer(1e9)


@given(st.lists(st.tuples(st.sampled_from([STATION, CSMS]), hostile_texts()), min_size=1, max_size=40))
def test_relay_core_takes_anything(messages: list[tuple[Any, str]]) -> None:
    core = RelayCore(max_queue=4, call_timeout=30)
    core.own_call(STATION, "TriggerMessage", {"requestedMessage": "Heartbeat"}, 0.0)
    forwarded = 0
    for i, (side, text) in enumerate(messages):
        core.receive(side, text, float(i))  # documented: never raises
        out = core.data_to_send(STATION) + core.data_to_send(CSMS)
        assert all(isinstance(t, str) for t in out)
        forwarded += len(out)
        assert forwarded <= i + 2  # nothing is multiplied: one text in, at most one out (+ the own CALL)
        if i == len(messages) // 2:
            core.upstream_lost()
    core.handle_timer(1e9)
    stats = core.statistics()
    assert stats.frames_from_station + stats.frames_from_csms == len(messages)


# ---------------------------------------------------------------- in memory: a CSMS and honest stations


async def _hostile_session(target: hostile.Target, n: int, texts: list[str], boot: bool) -> None:
    attack = hostile.Attack(target, station_id=f"HOSTILE-{n}", source=f"hostile-{n}")
    try:
        ws = await (hostile.booted_ws(attack) if boot else hostile.open_ws(attack))
    except Exception:
        return
    with trio.move_on_after(120):
        await hostile.send_texts(ws, texts, answers=0)
        await trio.sleep(30)
    await hostile.close_quietly(ws)


async def _scenario(texts: list[str], boot: bool, seed: int) -> None:
    """Two hostile clients and two honest stations on one CSMS (a CSMS failure would end the harness)."""
    async with harness() as h:
        csms = await h.start_csms()
        target = hostile.Target(
            h.net, csms.config.host, 443, ClientTls.build(TlsProfile(), h.pki.csms_trust()), h.clock
        )
        rng = random.Random(seed)
        honest = [h.start_station(f"ST-{i}") for i in range(2)]
        with trio.fail_after(3600):
            async with trio.open_nursery() as nursery:
                for n in range(2):
                    share = [t for t in texts if rng.random() < 0.7]
                    nursery.start_soon(_hostile_session, target, n, share, boot)
                for st in honest:
                    await st.done.wait()
        stats = csms.statistics()
        assert stats.connections_total >= 4  # the hostile clients got in too
        assert stats.transactions_started >= 2 and stats.transactions_ended >= 2
        for st in honest:
            (tx,) = csms.stations[st.name].transactions.values()
            assert tx.started and tx.ended and tx.gap_free()


@settings(
    max_examples=min(settings().max_examples, 12),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(conversations, st.booleans(), st.integers(0, 2**16))
def test_csms_keeps_serving_honest_stations(texts: list[str], boot: bool, seed: int) -> None:
    trio.run(_scenario, texts, boot, seed, clock=trio.testing.MockClock(autojump_threshold=0))
