"""Station clock offsets over a run, replayed from the event log.

Theory of operation. A station whose clock is not perfect records ``clock_set`` (its starting ``offset`` and
``drift_ppm``) when it is created, and every correction as ``clock_adjusted`` (``mode`` step or slew,
``delta``). Replaying those events through the same :class:`~evsim.clock.DeviceClock` arithmetic the stations
run gives every such station's clock error at any instant, so the table and the plot below are recomputed from
``events.jsonl`` alone (to the microsecond the events are rounded to). Stations without a ``clock_set`` have
perfect clocks and are not counted; controllers with a clock of their own are (their events look alike). Percentiles are of the absolute offset, nearest rank.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from evsim.clock import DeviceClock
from evsim.metrics.certificates import percentile
from evsim.metrics.summary import Table

POINTS = 12
"""Instants of the offset table: the run's span cut into this many equal steps (plus the start)."""
CLOCK_KINDS = frozenset({"clock_set", "clock_adjusted"})


def offset_series(
    events: Iterable[Mapping[str, Any]], times: Sequence[float]
) -> dict[str, list[float | None]]:
    """Each station's clock offset (seconds) at each of ``times`` (sorted), replayed from its events.

    Returns:
        station -> one offset per time (None before its ``clock_set``).
    """
    evs = sorted(
        (e for e in events if e["kind"] in CLOCK_KINDS),
        key=lambda e: (float(e["t"]), str(e["node"]), int(e.get("seq", 0))),
    )
    clocks: dict[str, DeviceClock] = {}
    out: dict[str, list[float | None]] = {}
    i = 0
    for k, at in enumerate(times):
        while i < len(evs) and float(evs[i]["t"]) <= at:
            e = evs[i]
            node, t = str(e["node"]), float(e["t"])
            if e["kind"] == "clock_set":
                clocks[node] = DeviceClock(
                    offset_s=float(e["offset"]), drift_ppm=float(e["drift_ppm"]), ref=t
                )
                out.setdefault(node, [None] * len(times))
            elif node in clocks:
                if e["mode"] == "step":
                    clocks[node].step(t, float(e["delta"]))
                else:
                    clocks[node].slew(t, float(e["delta"]))
            i += 1
        for node, clock in clocks.items():
            out[node][k] = clock.offset(at)
    return out


def sample_times(span: float, points: int = POINTS) -> list[float]:
    """``points + 1`` evenly spaced instants from 0 to ``span``."""
    return [span * k / points for k in range(points + 1)]


def offset_percentiles(
    events: Sequence[Mapping[str, Any]], times: Sequence[float]
) -> list[tuple[float, int, float, float, float, float]]:
    """(t, stations, p50, p90, p99, max) of the absolute clock offsets at each time."""
    series = offset_series(events, times)
    rows = []
    for k, at in enumerate(times):
        values = sorted(abs(v[k]) for v in series.values() if v[k] is not None)  # type: ignore[arg-type]
        if not values:
            continue
        rows.append(
            (
                at,
                len(values),
                percentile(values, 0.5),
                percentile(values, 0.9),
                percentile(values, 0.99),
                values[-1],
            )
        )
    return rows


def _seconds(value: float) -> str:
    """An offset for a table: ms below a minute, else s, min, h or days."""
    if value < 1.0:
        return f"{value * 1000:.1f} ms"
    for unit, size in (("d", 86_400.0), ("h", 3600.0), ("min", 60.0)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value:.2f} s"


def clock_tables(events: Sequence[Mapping[str, Any]]) -> tuple[Table, ...]:
    """The "Clock offsets" table of a run with imperfect clocks (none otherwise)."""
    if not any(e["kind"] == "clock_set" for e in events):
        return ()
    span = max((float(e["t"]) for e in events), default=0.0)
    rows = tuple(
        (f"{t:.0f}", str(n), _seconds(p50), _seconds(p90), _seconds(p99), _seconds(top))
        for t, n, p50, p90, p99, top in offset_percentiles(events, sample_times(span))
    )
    return (
        Table(
            "Clock offsets",
            ("t (s)", "stations", "p50", "p90", "p99", "max"),
            rows,
            note="|node clock - simulation time| of the stations and controllers without a perfect clock, "
            "replayed from their clock_set and clock_adjusted events",
        ),
    )
