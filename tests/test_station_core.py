"""Sans-IO station pieces: OCPP RetryBackOff, the offline message queue, the transaction builder; a station's
own memory."""

from __future__ import annotations

import datetime as dt
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evsim.backoff import BackOffSchedule, RetryBackOff
from evsim.clock import SimClock, isoformat
from evsim.errors import ConfigError
from evsim.net.virtual import VirtualNetwork
from evsim.nodes.station import Station
from evsim.nodes.station_model import StationConfig
from evsim.ocpp.transaction import TransactionRecorder
from evsim.ocpp.txqueue import TxQueue
from evsim.recorder import Recorder
from evsim.seeded import SeededRandom

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def test_backoff_doubles_then_holds_and_resets() -> None:
    sched = BackOffSchedule(RetryBackOff(wait_minimum=10, random_range=0, repeat_times=2), random.Random(1))
    assert [sched.next_wait() for _ in range(5)] == [10, 20, 40, 40, 40]
    sched.reset()
    assert sched.next_wait() == 10


@given(
    wait_min=st.floats(0, 100),
    rand=st.floats(0, 10),
    repeat=st.integers(0, 6),
    seed=st.integers(0, 2**32),
)
def test_backoff_bounds(wait_min: float, rand: float, repeat: int, seed: int) -> None:
    sched = BackOffSchedule(RetryBackOff(wait_min, rand, repeat), random.Random(seed))
    waits = [sched.next_wait() for _ in range(repeat + 4)]
    assert wait_min <= waits[0] <= wait_min + rand
    for i in range(1, repeat + 1):  # each doubling adds a fresh random part
        assert 2 * waits[i - 1] <= waits[i] <= 2 * waits[i - 1] + rand + 1e-9
    assert waits[repeat + 1 :] == [waits[repeat]] * 3  # then the last wait is kept


def test_backoff_refuses_negative() -> None:
    with pytest.raises(ConfigError, match=">= 0"):
        RetryBackOff(wait_minimum=-1)


def _tx_messages(n_updates: int) -> list[tuple[str, dict[str, object]]]:
    tx = TransactionRecorder(transaction_id="tx-1")
    msgs: list[tuple[str, dict[str, object]]] = [("TransactionEvent", tx.started(T0))]
    msgs += [
        ("TransactionEvent", tx.updated(T0, trigger="MeterValuePeriodic", energy_wh=float(i)))
        for i in range(n_updates)
    ]
    msgs.append(("TransactionEvent", tx.ended(T0)))
    return msgs


def test_queue_flags_offline_and_keeps_order() -> None:
    q = TxQueue()
    q.went_online()
    q.put("TransactionEvent", {"eventType": "Started", "seqNo": 0})
    q.went_offline()  # E11.FR.07: still queued when going offline -> offline=true
    q.put("TransactionEvent", {"eventType": "Updated", "seqNo": 1})
    q.put("SecurityEventNotification", {"type": "InvalidTLSVersion"})
    head = q.head()
    assert head is not None and head.payload["offline"] is True
    q.delivered(head)
    head = q.head()
    assert head is not None and head.payload == {"eventType": "Updated", "seqNo": 1, "offline": True}
    q.delivered(head)
    head = q.head()
    assert head is not None and "offline" not in head.payload
    assert q.statistics().delivered_total == 2


@given(n_updates=st.integers(0, 60), max_length=st.integers(2, 20))
def test_queue_sheds_only_intermediate_updates(n_updates: int, max_length: int) -> None:
    q = TxQueue(max_length=max_length)
    msgs = _tx_messages(n_updates)
    for action, payload in msgs:
        q.put(action, payload)
    kept = []
    while (m := q.head()) is not None:
        kept.append(m.payload)
        q.delivered(m)
    kinds = [p["eventType"] for p in kept]
    assert kinds[0] == "Started" and kinds[-1] == "Ended"  # never dropped
    seqs = [p["seqNo"] for p in kept]
    assert seqs == sorted(seqs)  # order preserved
    assert len(kept) + q.statistics().dropped_total == len(msgs)  # every drop counted
    assert len(kept) <= max(max_length, 2)


def test_transaction_recorder_fields() -> None:
    tx = TransactionRecorder(transaction_id="abc", evse_id=2)
    started = tx.started(T0)
    assert started["seqNo"] == 0 and started["evse"] == {"id": 2, "connectorId": 1}
    assert started["transactionInfo"]["chargingState"] == "EVConnected"
    upd = tx.updated(T0, trigger="Authorized", state="Charging", id_token="TOK")
    assert upd["seqNo"] == 1 and upd["idToken"]["idToken"] == "TOK" and "evse" not in upd
    same = tx.updated(T0, trigger="MeterValuePeriodic", state="Charging", energy_wh=5.0)
    assert "chargingState" not in same["transactionInfo"]  # only when it changes
    ended = tx.ended(T0)
    assert ended["seqNo"] == 3 and ended["transactionInfo"]["stoppedReason"] == "EVDisconnected"
    assert ended["timestamp"] == "2026-01-01T00:00:00.000Z"


@given(
    st.datetimes(
        min_value=dt.datetime(1, 1, 2),
        max_value=dt.datetime(9999, 12, 30),
        timezones=st.timezones(),
        allow_imaginary=False,
    )
)
def test_isoformat_is_ocpp_datetime(ts: dt.datetime) -> None:
    """The fast ``isoformat`` equals the reference RFC 3339 form: UTC, milliseconds truncated, ``Z``."""
    utc = ts.astimezone(dt.UTC)
    expected = (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}"
        f".{utc.microsecond // 1000:03d}Z"
    )
    if utc.year >= 1000:
        assert isoformat(ts) == expected
    assert isoformat(ts)[-1] == "Z"


def _reference_isoformat(ts: dt.datetime) -> str:
    utc = ts.astimezone(dt.UTC)
    return (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}"
        f".{utc.microsecond // 1000:03d}Z"
    )


@given(
    st.datetimes(
        min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 1, 1), timezones=st.just(dt.UTC)
    ),
    st.lists(st.integers(-2_000_000, 2_000_000), min_size=1, max_size=30),
    st.sampled_from(
        [dt.UTC, dt.timezone(dt.timedelta(hours=5, minutes=30)), dt.timezone(dt.timedelta(hours=-7))]
    ),
)
def test_isoformat_in_a_row_reuses_only_the_same_second(
    start: dt.datetime, steps_us: list[int], tz: dt.tzinfo
) -> None:
    """Timestamps formatted one after another (in and out of order, across second boundaries and time zones)
    each give their own text: what is kept from the second formatted last never leaks into another."""
    ts = start
    for step in steps_us:
        ts += dt.timedelta(microseconds=step)
        assert isoformat(ts.astimezone(tz)) == _reference_isoformat(ts)


def test_isoformat_second_boundaries() -> None:
    base = dt.datetime(2026, 1, 1, 12, 0, 59, tzinfo=dt.UTC)
    for us in (0, 999, 1000, 999_999, 1_000_000, 1_000_001, 999_999, 0, -1, 60_000_000):
        ts = base + dt.timedelta(microseconds=us)
        assert isoformat(ts) == _reference_isoformat(ts), ts


async def test_a_station_holds_no_instance_dict_and_no_generator_before_its_first_draw() -> None:
    """Per-station memory (bench/memory.py): the attributes are slots (a __dict__ of over 30 keys is ≈1.6 KiB)
    and a seeded source that was never drawn from holds no Mersenne-Twister state."""
    clock = SimClock.start()
    rng = SeededRandom("CS-1")
    station = Station(
        StationConfig(
            station_id="CS-1",
            csms_url="ws://csms.evsim.test/ocpp",
            password="x" * 16,
            security_profile=1,
            sessions=0,
        ),
        network=VirtualNetwork(),
        client_tls=None,
        clock=clock,
        recorder=Recorder(clock, echo=False),
        rng=rng,
    )
    assert not hasattr(station, "__dict__")
    assert station.rng is rng and "drawn" not in repr(rng)
