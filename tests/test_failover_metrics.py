"""Failover metrics from hand-written event lists: recovery quantiles, connections per endpoint, queues."""

from __future__ import annotations

from typing import Any

from evsim.metrics import failover
from evsim.metrics.summary import summarize
from evsim.metrics.topology import Topology

ROLES = {
    "S1": "station",
    "S2": "station",
    "S3": "station",
    "S4": "station",
    "A": "csms",
    "B": "csms",
    "lc": "csms",
}


def ev(t: float, node: str, kind: str, **data: Any) -> dict[str, Any]:
    return {"t": t, "node": node, "seq": 0, "kind": kind, **data}


def base() -> list[dict[str, Any]]:
    return [
        *(ev(1.0, s, "booted") for s in ("S1", "S2", "S3")),
        *(ev(1.0, "A", "booted", station=s) for s in ("S1", "S2", "S3")),
        ev(2.0, "S4", "reconnect_wait", seconds=3),  # offline before the outage: not counted
        ev(20.0, "timeline", "stop", target="A"),
        ev(20.0, "S1", "reconnect_wait", seconds=1),
        ev(21.0, "S2", "reconnect_wait", seconds=1),
        ev(25.0, "S1", "booted"),
        ev(25.0, "B", "booted", station="S1"),
        ev(200.0, "S3", "reconnect_wait", seconds=1),  # long after the window: not this outage's doing
    ]


def test_recovery_counts_the_affected_stations_and_when_each_came_back() -> None:
    (r,) = failover.recoveries(base(), ROLES)
    assert (r.t, r.action, r.target, r.online, r.affected) == (20.0, "stop", "A", 3, 2)
    assert r.times == (5.0,)
    assert r.time_until(0.5) == 5.0
    assert r.time_until(1.0) is None  # S2 never came back
    assert dict(r.back_to) == {"B": 1}
    assert failover.recovery_rows([r])[0][5:] == (5.0, "not by end", "not by end", "B 1")


def test_outages_at_one_instant_are_one_row_and_order_of_events_does_not_matter() -> None:
    events = [*base(), {**ev(20.0, "timeline", "partition", between=["fleet", "B"]), "seq": 1}]
    rows = failover.recoveries(list(reversed(events)), ROLES)
    assert [(r.action, r.target) for r in rows] == [("stop, partition", "A, fleet<->B")]


def test_controller_upstream_links_get_their_own_row() -> None:
    events = [
        *base()[:7],
        ev(20.0, "timeline", "stop", target="A"),
        ev(5.0, "lc", "upstream_connected", station="S1", endpoint="A"),
        ev(20.0, "lc", "upstream_lost", station="S1", reason="link_lost"),
        ev(22.0, "lc", "upstream_connected", station="S1", endpoint="B"),
    ]
    stations, links = failover.recoveries(events, ROLES)
    assert stations.affected == 0
    assert (links.online, links.affected, links.times, dict(links.back_to)) == (1, 1, (2.0,), {"lc -> B": 1})


def test_connections_per_endpoint_and_the_storm_series() -> None:
    events = [
        *(ev(10.0 + i / 10, "B", "station_connected", station=f"S{i}") for i in range(5)),
        ev(30.0, "B", "station_connected", station="S1"),
        ev(31.0, "A", "handshake_failed", reason="eof"),
        ev(32.0, "A", "upgrade_rejected", station="S1", status=401),
        ev(33.0, "lc", "upstream_connected", station="S1", endpoint="B"),
        ev(34.0, "lc", "upstream_failed", station="S2", reason="refused"),
    ]
    counts = {c.endpoint: c for c in failover.endpoint_counts(events, ROLES)}
    assert (counts["B"].accepted, counts["B"].peak_per_s) == (6, 5)
    assert (counts["A"].tls_failed, counts["A"].refused) == (1, 1)
    assert counts["lc -> B"].accepted == 1 and counts["lc -> upstream"].refused == 1
    station_side = [
        ev(40.0, "S1", "handshake_ok", endpoint="b.evsim.test"),
        ev(41.0, "S2", "connection_lost", reason="refused", endpoint="a.evsim.test"),
        ev(42.0, "S3", "handshake_failed", reason="eof", endpoint="a.evsim.test"),
        ev(43.0, "S4", "connection_lost", reason="refused"),  # a one-slot station: no endpoint, not counted
    ]
    hosts = {"a.evsim.test": "A", "b.evsim.test": "B"}
    counts = {c.endpoint: c for c in failover.endpoint_counts(events + station_side, ROLES, hosts)}
    assert (counts["A"].station_failed, counts["A"].station_tls_ok) == (2, 0)
    assert (counts["B"].station_failed, counts["B"].station_tls_ok, counts["B"].accepted) == (0, 1, 6)
    series = failover.storm_series(events, ROLES, span_s=40.0, width=10.0)
    assert series == {"B": [0, 5, 0, 1]}


def test_offline_queue_table_sums_per_group() -> None:
    events = [
        ev(1.0, "A", "tx_event", station="S1", tx="t1", type="Started", seq=0, offline=False),
        ev(2.0, "B", "tx_duplicate", station="S1", tx="t1"),
    ]
    queues = {"S1": {"enqueued_total": 3, "delivered_total": 2, "dropped_total": 1, "queued": 0}}
    rows = failover.tx_delivery(events, {"S1": "g", "S2": "g"}, queues)
    assert rows == [("g", 3, 2, 1, 0, 1, 1)]
    assert failover.tx_delivery(events, {"S1": "g"}, None) == [("g", "?", "?", "?", "?", 1, 1)]


def test_summary_adds_the_failover_tables_only_when_there_is_something_to_show() -> None:
    topo = Topology.from_groups({"fleet": ["S1", "S2", "S3", "S4"]}, {"fleet": "A"})
    plain = summarize([e for e in base() if e["node"] != "timeline"], topo)
    assert not any(t.title.startswith("Recovery") for t in plain.tables)
    with_outage = summarize(base(), topo)
    rec = with_outage.table("Recovery")
    assert rec.rows[0][:5] == (20.0, "stop", "A", 3, 2)
    assert with_outage.table("Connections per endpoint")
    assert with_outage.table("Offline queue")


def test_a_secondary_sharing_records_counts_for_the_stations_transactions_on_its_own_row() -> None:
    topo = Topology(groups={"S1": "fleet"}, links={"fleet": "A"}, operators={"B": "A"})
    events = [
        ev(1.0, "S1", "tx_started", tx="t1"),
        ev(1.0, "S1", "tx_ended", tx="t1"),
        ev(2.0, "B", "tx_event", station="S1", tx="t1", type="Started", seq=0, offline=True),
        ev(3.0, "B", "tx_event", station="S1", tx="t1", type="Ended", seq=1, offline=True),
        ev(4.0, "S1", "tx_started", tx="t2"),
        ev(4.0, "A", "tx_event", station="S1", tx="t2", type="Started", seq=0, offline=False),
        ev(5.0, "B", "tx_event", station="S1", tx="t2", type="Ended", seq=1, offline=False),
        ev(5.0, "S1", "tx_ended", tx="t2"),
        ev(6.0, "S1", "tx_started", tx="t3"),  # still open: on the row of its last event
        ev(6.0, "B", "tx_event", station="S1", tx="t3", type="Started", seq=0, offline=False),
    ]
    links = summarize(events, topo).table("Links")
    headers = links.headers
    cols = ("tx started", "tx ended", "tx open", "tx lost", "offline tx ev")
    got = {r[0]: tuple(r[headers.index(c)] for c in cols) for r in links.rows}
    # the secondary's own recording counts as delivered (shared records), on its own row
    assert got == {"fleet -> A": (1, 0, 0, 0, 0), "fleet -> B": (2, 2, 1, 0, 2)}
    assert Topology.from_json(topo.as_json()) == topo
