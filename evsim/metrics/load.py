"""Load metrics from a run's events alone: connect, boot and OCPP round-trip latency, throughput, over time.

Where each figure comes from (all in ``events.jsonl``):

* **Connect latency** (station side): ``connect_s`` of every ``handshake_ok``, the seconds from the start of
  the TCP connect to the end of the TLS handshake. Connections without TLS (security profile 1) have no such
  event and are not counted.
* **Boot latency** (station side): ``boot_s`` of every station ``booted``, the seconds from the first
  connection attempt since the station was last online (or started) to BootNotification Accepted, back-off
  waits, failed attempts and Pending answers included; ``boot_attempts`` counts the connection attempts, so
  the retries are ``boot_attempts - 1``.
* **OCPP round trips** (caller side): the ``round_trips`` events of node ``metrics``
  (:class:`evsim.recorder.RoundTrips`), one per (caller, endpoint) and window of 10 s, each a histogram of the
  round trips cut to 3 significant digits, their exact maximum and the CALLs that timed out. Callers are
  ``stations`` (every station's CALLs, per endpoint host) and each Local Controller (its hop to the CSMS:
  CALLs it relayed or sent upstream).
* **Throughput**: CALLs answered per second per endpoint, from the same windows.

Endpoints are named as in the other tables: a station's ``endpoint`` host through the topology's hosts, else
its group's CSMS (or controller); station rows are per link (``group -> endpoint``), round-trip rows per
``caller -> endpoint``. Percentiles use the nearest-rank method (:func:`nearest_rank`): p50, p95, p99 and the
maximum, which is an observed value, so a percentile never exceeds it and the four never decrease.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from evsim.metrics.summary import Table
from evsim.metrics.topology import Topology
from evsim.recorder import MEASUREMENT_NODE, ROUND_TRIP_WINDOW, ROUND_TRIPS
from evsim.report import Seconds, human_duration

__all__ = [
    "QUANTILES",
    "Distribution",
    "EndpointSeries",
    "RoundTripWindow",
    "StationLatency",
    "first_hops",
    "load_tables",
    "merged",
    "nearest_rank",
    "nearest_rank_counts",
    "over_time_width",
    "round_trip_series",
    "round_trip_windows",
    "station_latencies",
]

#: The percentiles the tables show, before the maximum.
QUANTILES = (0.5, 0.95, 0.99)

#: Time buckets of the "over time" table at most (the plot uses finer ones).
OVER_TIME_ROWS = 12

#: Bucket widths (s) the over-time table and plot may use: multiples of the round-trip window.
_WIDTHS = (10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


def nearest_rank(values: Sequence[float], q: float) -> float:
    """The ``q``-quantile (0 < q <= 1) of sorted ``values`` by the nearest-rank method: the smallest value
    with at least ``q`` of the values at or below it (NaN for no values)."""
    if not values:
        return math.nan
    return values[max(1, math.ceil(q * len(values))) - 1]


def nearest_rank_counts(counts: Sequence[tuple[float, int]], q: float) -> float:
    """:func:`nearest_rank` over a histogram: (value, count) pairs sorted by value, counts positive."""
    total = sum(n for _, n in counts)
    if total == 0:
        return math.nan
    rank = max(1, math.ceil(q * total))
    seen = 0
    for value, n in counts:
        seen += n
        if seen >= rank:
            return value
    return counts[-1][0]


@attrs.frozen
class Distribution:
    """Count, p50 / p95 / p99 and maximum of a set of durations (seconds; NaN when empty)."""

    count: int
    p50: float
    p95: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: Iterable[float]) -> Distribution:
        """Of exact values."""
        ordered = sorted(values)
        p50, p95, p99 = (nearest_rank(ordered, q) for q in QUANTILES)
        return cls(len(ordered), p50, p95, p99, ordered[-1] if ordered else math.nan)

    @classmethod
    def of_counts(cls, counts: Mapping[float, int], largest: float) -> Distribution:
        """Of a histogram (value -> count) whose exact maximum is ``largest``: every value of the histogram is
        at most its true value (:func:`evsim.recorder.quantize`), so the percentiles are capped by it."""
        pairs = sorted((v, n) for v, n in counts.items() if n > 0)
        total = sum(n for _, n in pairs)
        if total == 0:
            return cls(0, math.nan, math.nan, math.nan, math.nan)
        p50, p95, p99 = (min(nearest_rank_counts(pairs, q), largest) for q in QUANTILES)
        return cls(total, p50, p95, p99, largest)

    def cells(self) -> tuple[Seconds | str, ...]:
        """p50, p95, p99, max as durations (tables print them as people read them, ``summary.json`` as
        seconds); ``-`` when empty."""
        if self.count == 0:
            return ("-",) * 4
        return tuple(Seconds(v) for v in (self.p50, self.p95, self.p99, self.max))


@attrs.frozen
class StationLatency:
    """One connect or boot measured by a station.

    Attributes:
        t: when it completed (s).
        link: ``group -> endpoint``.
        seconds: the latency.
        attempts: connection attempts it took (boots; 1 for connects).
    """

    t: float
    link: str
    seconds: float
    attempts: int = 1


def first_hops(events: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Station -> the server it connects to itself, from the servers' events: of the CSMS and controllers that
    accepted its sessions (``station_connected``), the one that is no controller's upstream endpoint for it
    (``upstream_connected``), the one that accepted most when several are."""
    named: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    upstream: dict[str, set[str]] = collections.defaultdict(set)
    for e in events:
        if "station" not in e:
            continue
        if e["kind"] == "station_connected":
            named[str(e["station"])][str(e["node"])] += 1
        elif e["kind"] == "upstream_connected":
            upstream[str(e["station"])].add(str(e.get("endpoint", "")))
    out = {}
    for station, counts in named.items():
        own = collections.Counter({n: c for n, c in counts.items() if n not in upstream[station]}) or counts
        out[station] = own.most_common(1)[0][0]
    return out


def station_latencies(
    events: Iterable[Mapping[str, Any]], roles: Mapping[str, str], topology: Topology | None = None
) -> tuple[list[StationLatency], list[StationLatency]]:
    """Connect and boot latencies measured by the stations, in time order.

    The endpoint of a station's event is its ``endpoint`` host (stations with several endpoints); otherwise
    the server it connects to (:func:`first_hops`), else its group's CSMS in the topology.

    Args:
        events: JSON event objects, any order.
        roles: node -> role (:func:`evsim.metrics.topology.node_roles`).
        topology: station groups, their servers and the hosts' names.

    Returns:
        (connects, boots).
    """
    topo = topology or Topology()
    evs = sorted(events, key=lambda e: (float(e["t"]), str(e["node"]), int(e.get("seq", 0))))
    hops = first_hops(evs)
    connects: list[StationLatency] = []
    boots: list[StationLatency] = []
    for e in evs:
        node, kind = str(e["node"]), e["kind"]
        if roles.get(node) != "station":
            continue
        group = topo.group_of(node)
        if "endpoint" in e:
            server = topo.hosts.get(str(e["endpoint"]), str(e["endpoint"]))
        else:
            server = hops.get(node) or topo.links.get(group, "?")
        if kind == "handshake_ok" and "connect_s" in e:
            connects.append(StationLatency(float(e["t"]), f"{group} -> {server}", float(e["connect_s"])))
        elif kind == "booted" and "boot_s" in e:
            boots.append(
                StationLatency(
                    float(e["t"]), f"{group} -> {server}", float(e["boot_s"]), int(e.get("boot_attempts", 1))
                )
            )
    return connects, boots


@attrs.frozen
class RoundTripWindow:
    """One ``round_trips`` event: a (caller, endpoint) pair's round trips in one window.

    Attributes:
        pair: ``caller -> endpoint`` (endpoint hosts named through the topology).
        endpoint: the endpoint's name.
        start: the window's start (s).
        width: its width (s).
        counts: round trip (cut to 3 significant digits) -> CALLs.
        largest: the exact largest round trip.
        timeouts: CALLs that got no answer in time.
    """

    pair: str
    endpoint: str
    start: float
    width: float
    counts: Mapping[float, int]
    largest: float
    timeouts: int

    @property
    def calls(self) -> int:
        """CALLs answered in the window."""
        return sum(self.counts.values())


def round_trip_windows(
    events: Iterable[Mapping[str, Any]], topology: Topology | None = None
) -> list[RoundTripWindow]:
    """The ``round_trips`` events, sorted by window start and pair.

    Args:
        events: JSON event objects.
        topology: names endpoint hosts (``hosts``).

    Returns:
        One :class:`RoundTripWindow` per event.
    """
    hosts = (topology or Topology()).hosts
    out = []
    for e in events:
        if e["kind"] != ROUND_TRIPS or e["node"] != MEASUREMENT_NODE:
            continue
        endpoint = hosts.get(str(e["endpoint"]), str(e["endpoint"]))
        counts: collections.Counter[float] = collections.Counter()
        for value, n in e.get("histogram", ()):
            counts[float(value)] += int(n)
        out.append(
            RoundTripWindow(
                pair=f"{e['caller']} -> {endpoint}",
                endpoint=endpoint,
                start=float(e["start"]),
                width=float(e.get("width", ROUND_TRIP_WINDOW)),
                counts=dict(counts),
                largest=float(e.get("max", 0.0)),
                timeouts=int(e.get("timeouts", 0)),
            )
        )
    out.sort(key=lambda w: (w.start, w.pair))
    return out


def merged(windows: Iterable[RoundTripWindow]) -> Distribution:
    """The distribution of the round trips of several windows."""
    counts: collections.Counter[float] = collections.Counter()
    largest = -math.inf
    for w in windows:
        counts.update(w.counts)
        if w.calls:
            largest = max(largest, w.largest)
    return Distribution.of_counts(counts, largest)


def over_time_width(span_s: float, rows: int = OVER_TIME_ROWS) -> float:
    """The smallest bucket width, a multiple of the round-trip window, that cuts ``span_s`` into at most
    ``rows`` buckets."""
    for width in _WIDTHS:
        if span_s / width <= rows:
            return float(width)
    return float(_WIDTHS[-1])


# ------------------------------------------------------------------------------------------------ tables


def load_tables(
    events: Sequence[Mapping[str, Any]], roles: Mapping[str, str], topology: Topology | None = None
) -> tuple[Table, ...]:
    """The load tables (none for a run without any of their events): connect latency, boot latency, OCPP
    round trips, throughput per endpoint, and all of them per time bucket."""
    connects, boots = station_latencies(events, roles, topology)
    windows = round_trip_windows(events, topology)
    if not connects and not boots and not windows:
        return ()
    tables = [_connect_table(connects), _boot_table(boots), _round_trip_table(windows)]
    tables.append(_throughput_table(windows))
    span = max((float(e["t"]) for e in events), default=0.0)
    tables.append(_over_time_table(connects, boots, windows, span))
    return tuple(tables)


def _by(items: Iterable[StationLatency]) -> dict[str, list[StationLatency]]:
    out: dict[str, list[StationLatency]] = collections.defaultdict(list)
    for item in items:
        out[item.link].append(item)
    return dict(sorted(out.items()))


def _connect_table(connects: Sequence[StationLatency]) -> Table:
    rows = [
        (link, len(items), *Distribution.of(i.seconds for i in items).cells())
        for link, items in _by(connects).items()
    ]
    return Table(
        "Connect latency (station side)",
        ("link", "connects", "p50", "p95", "p99", "max"),
        tuple(rows),
        note="from the start of the TCP connect to the end of the TLS handshake (handshake_ok connect_s)",
    )


def _boot_table(boots: Sequence[StationLatency]) -> Table:
    rows = []
    for link, items in _by(boots).items():
        retries = sum(i.attempts - 1 for i in items)
        rows.append((link, len(items), retries, *Distribution.of(i.seconds for i in items).cells()))
    return Table(
        "Boot latency (station side)",
        ("link", "boots", "retries", "p50", "p95", "p99", "max"),
        tuple(rows),
        note="from the first connection attempt since the station was last online to BootNotification "
        "Accepted, back-off included (booted boot_s); retries: connection attempts beyond the first",
    )


def _round_trip_table(windows: Sequence[RoundTripWindow]) -> Table:
    pairs: dict[str, list[RoundTripWindow]] = collections.defaultdict(list)
    for w in windows:
        pairs[w.pair].append(w)
    rows = []
    for pair, ws in sorted(pairs.items()):
        d = merged(ws)
        rows.append((pair, d.count, sum(w.timeouts for w in ws), *d.cells()))
    return Table(
        "OCPP round trips (caller side)",
        ("caller -> endpoint", "calls", "timeouts", "p50", "p95", "p99", "max"),
        tuple(rows),
        note="CALL sent to CALLRESULT / CALLERROR received (round_trips events, per 10 s window, values cut "
        "to 3 significant digits, max exact); a controller's row: its hop to the CSMS",
    )


def _throughput_table(windows: Sequence[RoundTripWindow]) -> Table:
    per: dict[str, list[RoundTripWindow]] = collections.defaultdict(list)
    for w in windows:
        per[w.endpoint].append(w)
    rows = []
    for endpoint, ws in sorted(per.items()):
        calls = sum(w.calls for w in ws)
        first = min(w.start for w in ws)
        last = max(w.start + w.width for w in ws)
        by_window: collections.Counter[float] = collections.Counter()
        for w in ws:
            by_window[w.start] += w.calls
        peak = max(by_window.values()) / ws[0].width
        rows.append((endpoint, calls, f"{calls / (last - first):.2f}", f"{peak:.2f}"))
    return Table(
        "Throughput per endpoint (calls answered / s)",
        ("endpoint", "calls", "mean / s", "peak / s"),
        tuple(rows),
        note="calls answered by the endpoint, as its callers saw them (each a CALL and its answer); mean over "
        "the windows from its first to its last call, peak: the busiest 10 s window",
    )


def _over_time_table(
    connects: Sequence[StationLatency],
    boots: Sequence[StationLatency],
    windows: Sequence[RoundTripWindow],
    span: float,
) -> Table:
    width = over_time_width(span)
    cells: dict[tuple[float, str], dict[str, Any]] = collections.defaultdict(dict)
    for name, items in (("connect", connects), ("boot", boots)):
        grouped: dict[tuple[float, str], list[float]] = collections.defaultdict(list)
        for i in items:
            endpoint = i.link.split(" -> ", 1)[1]
            grouped[(math.floor(i.t / width) * width, endpoint)].append(i.seconds)
        for key, values in grouped.items():
            cells[key][name] = Distribution.of(values)
    rtt: dict[tuple[float, str], list[RoundTripWindow]] = collections.defaultdict(list)
    for w in windows:
        rtt[(math.floor(w.start / width) * width, w.endpoint)].append(w)
    for key, ws in rtt.items():
        cells[key]["rtt"] = merged(ws)
    empty = Distribution.of(())
    rows = []
    for (start, endpoint), c in sorted(cells.items()):
        connect, boot, rt = c.get("connect", empty), c.get("boot", empty), c.get("rtt", empty)
        rows.append(
            (
                Seconds(start),
                endpoint,
                connect.count,
                connect.cells()[1],
                boot.count,
                boot.cells()[1],
                rt.count,
                f"{rt.count / width:.2f}",
                *rt.cells()[:2],
                rt.cells()[3],
            )
        )
    return Table(
        f"Load over time (per {human_duration(width)}, by endpoint)",
        (
            "from",
            "endpoint",
            "connects",
            "connect p95",
            "boots",
            "boot p95",
            "calls",
            "calls / s",
            "rtt p50",
            "rtt p95",
            "rtt max",
        ),
        tuple(rows),
        note="connects and boots: completed in the bucket (station side); calls: answered in the bucket's "
        "round-trip windows, any caller",
    )


@attrs.frozen
class EndpointSeries:
    """An endpoint's round trips per time bucket (for the plot).

    Attributes:
        starts: each bucket's start (s), buckets with calls only.
        p50, p95: the round-trip percentiles in each bucket (s).
        rate: calls answered per second in each bucket.
    """

    starts: tuple[float, ...]
    p50: tuple[float, ...]
    p95: tuple[float, ...]
    rate: tuple[float, ...]


def round_trip_series(windows: Sequence[RoundTripWindow], width: float) -> dict[str, EndpointSeries]:
    """Per endpoint (any caller), the round-trip percentiles and the calls per second in buckets of ``width``
    seconds (a multiple of the windows' width), endpoints sorted: every bucket from the endpoint's first call
    to its last, a bucket without calls with rate 0 and NaN percentiles (a gap in the plot's lines)."""
    buckets: dict[str, dict[float, list[RoundTripWindow]]] = collections.defaultdict(
        lambda: collections.defaultdict(list)
    )
    for w in windows:
        buckets[w.endpoint][math.floor(w.start / width) * width].append(w)
    out = {}
    for endpoint, by_start in sorted(buckets.items()):
        starts, p50, p95, rate = [], [], [], []
        first, last = min(by_start), max(by_start)
        for k in range(round((last - first) / width) + 1):
            start = first + k * width
            d = merged(by_start.get(start, ()))
            starts.append(start)
            p50.append(d.p50)
            p95.append(d.p95)
            rate.append(d.count / width)
        out[endpoint] = EndpointSeries(tuple(starts), tuple(p50), tuple(p95), tuple(rate))
    return out
