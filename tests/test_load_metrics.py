"""Load metrics, sans-IO: the percentile arithmetic, the round-trip windows, and where round trips are measured.

Percentiles (nearest rank) and the histogram the recorder keeps per window are checked with Hypothesis:
percentiles never decrease with q and never exceed the maximum, the maximum is the largest value, a cut value
is at most 1 % below its value, and a window's histogram does not depend on the order of its samples. The RPC
core measures a CALL from the moment it is released to the wire (not while it queues behind another), the
relay core its controller hop, and the recorder turns samples into one ``round_trips`` event per window.
"""

from __future__ import annotations

import contextvars
import datetime as _dt
import decimal
import json
import math
import random
from typing import Any

import hypothesis.strategies as st
from hypothesis import given

from evsim.clock import SimClock
from evsim.metrics.canonical import canonical_log
from evsim.metrics.issuers import issuer_table, issuer_uses
from evsim.metrics.load import (
    Distribution,
    load_tables,
    nearest_rank,
    nearest_rank_counts,
    round_trip_windows,
)
from evsim.metrics.topology import node_roles
from evsim.nodes.measures import BootClock
from evsim.nodes.relay import CSMS, STATION, RelayCore
from evsim.ocpp.framing import CallResult, encode_frame
from evsim.ocpp.rpc import ResultReceived, RpcConnection, default_id_factory
from evsim.recorder import (
    MEASUREMENT_NODE,
    ROUND_TRIPS,
    Recorder,
    RoundTrips,
    _quantize_decimal,
    bind_peer,
    quantize,
)

durations = st.floats(min_value=0.0, max_value=1e5, allow_nan=False, allow_infinity=False)
samples = st.lists(durations, min_size=1, max_size=200)
quantiles = st.floats(min_value=1e-6, max_value=1.0)


# ------------------------------------------------------------------------------------------------ percentiles


@given(samples, quantiles, quantiles)
def test_percentiles_are_monotone_and_capped_by_the_maximum(
    values: list[float], q1: float, q2: float
) -> None:
    ordered = sorted(values)
    lo, hi = sorted((q1, q2))
    assert nearest_rank(ordered, lo) <= nearest_rank(ordered, hi) <= max(values)
    assert nearest_rank(ordered, 1.0) == max(values)
    assert nearest_rank(ordered, lo) in values
    d = Distribution.of(values)
    assert d.count == len(values)
    assert d.p50 <= d.p95 <= d.p99 <= d.max == max(values)


@given(samples, quantiles)
def test_a_histogram_gives_the_percentiles_of_its_values(values: list[float], q: float) -> None:
    counts: dict[float, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    assert nearest_rank_counts(sorted(counts.items()), q) == nearest_rank(sorted(values), q)


@given(samples)
def test_the_distribution_of_cut_values_keeps_the_exact_maximum(values: list[float]) -> None:
    counts: dict[float, int] = {}
    for v in values:
        counts[quantize(v)] = counts.get(quantize(v), 0) + 1
    d = Distribution.of_counts(counts, max(values))
    assert d.count == len(values)
    assert d.p50 <= d.p95 <= d.p99 <= d.max == max(values)
    cut = Distribution.of([quantize(v) for v in values])
    assert (d.p50, d.p95, d.p99) == (cut.p50, cut.p95, cut.p99)


def test_no_values_no_figures() -> None:
    assert math.isnan(nearest_rank([], 0.5))
    assert Distribution.of([]).cells() == ("-",) * 4
    assert Distribution.of_counts({}, 0.0).count == 0


@given(durations)
def test_a_cut_value_is_at_most_one_percent_below(v: float) -> None:
    q = quantize(v)
    assert q <= v
    assert v - q <= v * 0.01
    assert quantize(q) == q  # what the report reads back cuts to itself
    assert len(decimal.Decimal(repr(q)).normalize().as_tuple().digits) <= 3


def test_cut_examples() -> None:
    assert quantize(0.0012345) == 0.00123
    assert quantize(0.00123) == 0.00123
    assert quantize(123456.0) == 123000.0
    assert quantize(0.0) == quantize(-1.0) == quantize(math.nan) == 0.0


@given(
    st.floats(min_value=0.0, exclude_min=True, allow_nan=False, allow_infinity=False)
    | st.builds(lambda m, e: m * 10.0**e, st.integers(1, 9999), st.integers(-12, 8)),
    st.integers(1, 6),
)
def test_the_fast_cut_is_the_decimal_cut(v: float, digits: int) -> None:
    """The float-formatting cut equals its definition on the shortest decimal form, also on values just
    below or at a cut boundary (0.03 is stored as 0.0299999...: its shortest form is 0.03)."""
    assert quantize(v, digits) == _quantize_decimal(v, digits)
    assert quantize(v, digits) == _quantize_decimal(
        v, digits
    )  # the second time from what the first remembered


def test_fast_cut_boundaries() -> None:
    for v in (
        0.03,
        0.0299999,
        0.0009995,
        0.9995,
        1.0,
        999.5,
        100.0,
        5e-324,
        1.7976931348623157e308,
        0.1 + 0.2,
    ):
        for digits in (1, 3, 4):
            assert quantize(v, digits) == _quantize_decimal(v, digits), (v, digits)


# ------------------------------------------------------------------------------------------------ windows


@given(st.lists(st.tuples(st.floats(0, 95), st.one_of(st.none(), durations)), min_size=1, max_size=60))
def test_windows_hold_every_sample_once_whatever_the_order_within_an_instant(
    raw: list[tuple[float, float | None]],
) -> None:
    timeline = sorted(raw, key=lambda s: s[0])
    shuffled = list(timeline)
    random.Random(1).shuffle(shuffled)
    shuffled.sort(key=lambda s: s[0])  # stable: samples of one instant stay shuffled

    def run(order: list[tuple[float, float | None]]) -> list[dict[str, Any]]:
        agg = RoundTrips(width=10.0)
        out = [w for t, v in order if (w := agg.add("stations", "csms", t, v)) is not None]
        return out + agg.flush()

    windows = run(timeline)
    assert windows == run(shuffled)
    assert [w["start"] for w in windows] == sorted({math.floor(t / 10) * 10.0 for t, _ in timeline})
    answered = [v for _, v in timeline if v is not None]
    assert sum(w["calls"] for w in windows) == len(answered)
    assert sum(w["timeouts"] for w in windows) == len(timeline) - len(answered)
    assert sum(n for w in windows for _, n in w["histogram"]) == len(answered)
    if answered:
        assert max(w["max"] for w in windows if w["calls"]) == round(max(answered), 6)


def test_a_window_closes_when_the_next_one_starts_and_pairs_are_apart() -> None:
    agg = RoundTrips(width=10.0)
    assert agg.add("stations", "a", 1.0, 0.5) is None
    assert agg.add("stations", "b", 12.0, 0.1) is None  # another pair: its own window
    closed = agg.add("stations", "a", 10.0, 0.25)
    assert closed == {
        "caller": "stations",
        "endpoint": "a",
        "start": 0.0,
        "width": 10.0,
        "calls": 1,
        "timeouts": 0,
        "max": 0.5,
        "histogram": [[0.5, 1]],
    }
    assert [(w["endpoint"], w["start"]) for w in agg.flush()] == [("a", 10.0), ("b", 10.0)]
    assert agg.flush() == []


def test_durations_of_no_time_count_as_zero_and_leave_the_maximum() -> None:
    """A zero (virtual time), negative or NaN duration counts where quantize() puts it (0.0)."""
    agg = RoundTrips(width=10.0)
    for seconds in (0.0, -0.0, -1e-9, math.nan, 0.0021, 0.0):
        agg.add("stations", "csms", 1.0, seconds)
    (window,) = agg.flush()
    assert window["histogram"] == [[0.0, 5], [quantize(0.0021), 1]]
    assert window["calls"] == 6
    assert window["max"] == 0.0021


class _SetClock(SimClock):
    """A clock the test sets by hand (no trio run)."""

    at: float = 0.0

    def elapsed(self) -> float:
        return self.at


def test_the_recorder_emits_one_event_per_window_without_a_peer() -> None:
    contextvars.copy_context().run(_recorder_windows)  # bind_peer stays in this copy of the context


def _recorder_windows() -> None:
    clock = _SetClock(_dt.datetime(2030, 1, 1, tzinfo=_dt.UTC))
    rec = Recorder(clock, echo=False)
    bind_peer("10.0.0.1:5000")  # a connection's task: its events name the peer, the run-wide sum does not
    assert "peer" in rec.emit("ST-1", "booted").data
    for t, v in ((1.0, 0.01), (2.0, 0.02), (3.0, None), (11.0, 0.03)):
        clock.at = t
        rec.round_trip("stations", "csms.evsim.test", v)
    [first] = rec.of_kind(ROUND_TRIPS)
    assert first.node == MEASUREMENT_NODE and first.t == 11.0
    assert (first.data["calls"], first.data["timeouts"], first.data["max"]) == (2, 1, 0.02)
    assert "peer" not in first.data
    rec.stop()  # flushes the open window
    assert [e.data["start"] for e in rec.of_kind(ROUND_TRIPS)] == [0.0, 10.0]
    rec.round_trip("stations", "csms.evsim.test", 1.0)  # after stop: nothing
    rec.flush()
    assert len(rec.of_kind(ROUND_TRIPS)) == 2


# ------------------------------------------------------------------------------------------------ measuring


def test_the_rpc_core_measures_from_release_to_answer() -> None:
    a = RpcConnection(version="2.0.1", id_factory=default_id_factory("a"))
    first = a.call("Heartbeat", {}, now=1.0)
    second = a.call("Heartbeat", {}, now=1.5)  # queued behind the first until it is answered
    answer = {"currentTime": "2024-05-01T12:00:00.000Z"}
    [r1] = a.receive(encode_frame(CallResult(first, answer)), now=4.0)  # releases the second at 4.0
    [r2] = a.receive(encode_frame(CallResult(second, answer)), now=4.25)
    assert isinstance(r1, ResultReceived) and isinstance(r2, ResultReceived)
    assert (r1.round_trip, r2.round_trip) == (3.0, 0.25)
    assert r1 == ResultReceived(first, "Heartbeat", answer)  # a measurement, not part of equality


def test_the_relay_core_measures_its_hop() -> None:
    seen: list[tuple[str, float | None]] = []
    core = RelayCore(call_timeout=30.0, on_round_trip=lambda side, s: seen.append((side, s)))
    core.receive(STATION, json.dumps([2, "s1", "Heartbeat", {}]), 1.0)
    core.receive(CSMS, json.dumps([3, "s1", {}]), 1.75)
    core.own_call(CSMS, "BootNotification", {}, 2.0)
    [own_text] = [t for t in core.data_to_send(CSMS) if '"BootNotification"' in t]
    own_id = json.loads(own_text)[1]
    core.handle_timer(40.0)  # the own CALL times out
    core.receive(STATION, json.dumps([2, "s2", "Heartbeat", {}]), 41.0)
    core.handle_timer(80.0)  # the relayed one is forgotten
    assert seen == [(CSMS, 0.75), (CSMS, None), (CSMS, None)]
    del own_id


# ------------------------------------------------------------------------------------------------ tables


def _ev(t: float, node: str, kind: str, seq: int = 0, **data: Any) -> dict[str, Any]:
    return {"t": t, "node": node, "seq": seq, "kind": kind, **data}


def test_tables_from_events() -> None:
    events = [
        _ev(0.0, "csms", "listening"),
        _ev(0.2, "ST-1", "handshake_ok", connect_s=0.2, server_issuer="CN=Old"),
        _ev(0.2, "csms", "station_connected", station="ST-1"),
        _ev(0.5, "ST-1", "booted", 1, boot_s=0.5, boot_attempts=1),
        _ev(30.0, "ST-1", "reconnect_wait", 2, seconds=5.0),
        _ev(35.1, "ST-1", "handshake_ok", 3, connect_s=0.1, server_issuer="CN=New", resumed=False),
        _ev(35.3, "ST-1", "booted", 4, boot_s=5.3, boot_attempts=2),
        _ev(
            40.0,
            MEASUREMENT_NODE,
            ROUND_TRIPS,
            caller="stations",
            endpoint="csms.evsim.test",
            start=0.0,
            width=10.0,
            calls=3,
            timeouts=1,
            max=0.0123,
            histogram=[[0.001, 2], [0.0123, 1]],
        ),
    ]
    roles = node_roles(events)
    from evsim.metrics.topology import Topology

    topo = Topology(hosts={"csms.evsim.test": "csms"})
    tables = {t.title.split(" (")[0]: t for t in load_tables(events, roles, topo)}
    assert tables["Connect latency"].rows == (("ST -> csms", 2, 0.1, 0.2, 0.2, 0.2),)
    assert tables["Boot latency"].rows == (("ST -> csms", 2, 1, 0.5, 5.3, 5.3, 5.3),)
    assert tables["OCPP round trips"].rows == (("stations -> csms", 3, 1, 0.001, 0.0123, 0.0123, 0.0123),)
    assert tables["Throughput per endpoint"].rows == (("csms", 3, "0.30", "0.30"),)
    assert [w.pair for w in round_trip_windows(events, topo)] == ["stations -> csms"]
    shuffled = list(events)
    random.Random(3).shuffle(shuffled)
    assert load_tables(shuffled, roles, topo) == load_tables(events, roles, topo)
    assert issuer_uses(shuffled, roles) == issuer_uses(events, roles)
    assert [line.split()[2] for line in canonical_log(events)].count(ROUND_TRIPS) == 0  # not in goldens
    uses = issuer_uses(events, roles)
    assert [(u.label, u.handshakes, u.peak, u.at_end) for u in uses] == [
        ("server: CN=New", 1, 1, 1),
        ("server: CN=Old", 1, 1, 0),
    ]
    assert issuer_table(uses).rows[1][:3] == ("server", "CN=Old", 1)


def test_a_boot_runs_from_the_first_attempt_since_last_online() -> None:
    clock = BootClock()
    clock.attempt(10.0)
    clock.attempt(25.0)  # after a failure and a back-off wait
    assert clock.booted(26.5, {"endpoint": "b.evsim.test"}) == {
        "endpoint": "b.evsim.test",
        "boot_s": 16.5,
        "boot_attempts": 2,
    }
    clock.attempt(100.0)  # the next boot starts afresh
    clock.reset()  # ... unless the station starts again
    clock.attempt(130.0)
    assert clock.booted(130.25, {}) == {"boot_s": 0.25, "boot_attempts": 1}
