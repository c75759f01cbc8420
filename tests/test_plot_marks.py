"""What the plots mark and where: every timeline event, labels in rows that never overlap, zoom windows for
short recoveries, and the servers' refusals (the other side of the handshake plot); pure functions."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from evsim.metrics.plot_marks import (
    Mark,
    label_width,
    overlapping,
    place_labels,
    timeline_marks,
    zoom_windows,
)
from evsim.metrics.plots import server_refusal_buckets
from evsim.metrics.topology import Topology


def _ev(t: float, node: str, kind: str, **data: Any) -> dict[str, Any]:
    return {"t": t, "node": node, "seq": 0, "kind": kind, **data}


def test_every_timeline_event_is_marked_and_one_instant_is_one_label() -> None:
    events = [
        _ev(1800.0, "timeline", "partition", between=["fleet", "main"]),
        _ev(540.0, "timeline", "rotate_certificate", target="main", new_key=True),
        _ev(1800.0, "timeline", "heal", between=["fleet", "main"]),
        _ev(600.0, "runner", "link_reset", between="fleet<->main"),
        _ev(700.0, "main", "handshake_failed", reason="x"),
    ]
    assert timeline_marks(events) == [
        Mark(540.0, "rotate_certificate main"),
        Mark(600.0, "link_reset fleet<->main"),
        Mark(1800.0, "partition fleet<->main, heal fleet<->main"),
    ]


def test_labels_at_the_same_place_go_to_separate_rows_and_far_ones_share_a_row() -> None:
    xs = [0.1, 0.1, 0.12, 0.8]
    widths = [label_width("attack_wrong_ca fleet")] * 4
    rows = place_labels(xs, widths)
    assert rows == [0, 1, 2, 0]
    assert overlapping(xs, widths, [0, 0, 0, 0]) == [(0, 1), (0, 2), (1, 2)]
    assert overlapping(xs, widths, rows) == []


@given(
    st.lists(
        st.tuples(st.floats(0.0, 1.0), st.floats(0.001, 0.5)),
        max_size=40,
    )
)
def test_placed_labels_never_overlap(labels: list[tuple[float, float]]) -> None:
    xs = [x for x, _ in labels]
    widths = [w for _, w in labels]
    rows = place_labels(xs, widths)
    assert overlapping(xs, widths, rows) == []
    # no more rows than labels overlapping one point need (the greedy packing is optimal for intervals)
    if labels:
        deepest = max(sum(1 for x, w in labels if x <= p < x + w + 0.006) for p in xs)
        assert max(rows) + 1 <= max(deepest, 1)


def test_zoom_windows_pick_only_short_recoveries() -> None:
    span = 7200.0
    assert zoom_windows([(1800.0, 12.0), (3600.0, 900.0), (5000.0, None)], span) == [
        (1785.6, 1826.4)
    ]  # padded by 0.2 % of the run
    assert zoom_windows([], span) == []


def test_the_servers_refusals_are_counted_on_their_side() -> None:
    events = [
        _ev(0.0, "main", "listening"),
        _ev(0.0, "ST-1", "handshake_ok"),
        _ev(60.0, "main", "handshake_failed", reason="downgrade_refused", security_event="InvalidTLSVersion"),
        _ev(60.0, "main", "handshake_failed", reason="downgrade_refused", security_event="InvalidTLSVersion"),
        _ev(61.0, "lc", "station_connected", station="ST-1"),
        _ev(75.0, "lc", "upgrade_rejected", reason="unknown station", status=404),
        _ev(80.0, "ST-1", "handshake_failed", reason="cert_invalid:unknown_ca"),  # station side: not here
        _ev(90.0, "lc", "upstream_lost", reason="link_lost", station="ST-1"),  # the controller's next hop
        _ev(95.0, "attacker-mitm", "attack_result", outcome="refused", reason="peer_alert:unknown_ca"),
        _ev(95.0, "attacker-downgrade-1", "attack_result", outcome="refused", reason="downgrade_refused"),
    ]
    topo = Topology(groups={"ST-1": "fleet"}, links={"fleet": "main"})
    b = server_refusal_buckets(events, 120.0, 30.0, topo)
    assert b.series == {
        "main: downgrade_refused": (0, 0, 2, 0),
        "lc: unknown station": (0, 0, 1, 0),
        "lc upstream: link_lost": (0, 0, 0, 1),
        "attacker-mitm: peer_alert:unknown_ca": (0, 0, 0, 1),
    }
