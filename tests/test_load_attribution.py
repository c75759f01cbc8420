"""The load tables of a run recomputed from its ``events.jsonl`` alone, per topology.

Each test runs a small scenario with ``evsim run`` in virtual time (the topologies of
:mod:`tests.test_attribution`: one CSMS, a primary and its secondary, a Local Controller failing over, two
chained controllers; and one CSMS behind a link with latency, so the figures are not all zero), reads the run
directory and recomputes, with code of its own, every row of "Connect latency", "Boot latency", "OCPP round
trips", "Throughput per endpoint" and "Load over time" in ``summary.txt``, and the plot's per-endpoint series.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from evsim.metrics import plots
from evsim.metrics.load import round_trip_series, round_trip_windows
from evsim.metrics.topology import Topology
from evsim.report import human_duration
from evsim.scenario.units import parse_duration
from tests.test_attribution import CHAINED, CONTROLLER, DIRECT, SECONDARY, parse_tables, run_report, table

LATENCY = (
    DIRECT
    + """
[[links]]
between = ["fleet", "main"]
latency = "15ms"
"""
)


def rank(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[math.ceil(q * len(ordered)) - 1]


def figures(values: Sequence[float]) -> list[str]:
    """p50, p95, p99 and max as the tables print durations."""
    return [human_duration(rank(values, q)) for q in (0.5, 0.95, 0.99)] + [human_duration(max(values))]


class Recomputed:
    """The load figures of a run from its events; ``hop``: each group's first server (stations with one
    endpoint do not name it in their events)."""

    def __init__(self, events: list[dict[str, Any]], meta: Mapping[str, Any], hop: Mapping[str, str]) -> None:
        self.events = sorted(events, key=lambda e: (float(e["t"]), str(e["node"]), int(e.get("seq", 0))))
        topo = meta["topology"]
        self.group = {sid: g for g, sids in topo["stations"].items() for sid in sids}
        self.hosts: dict[str, str] = topo["hosts"]
        self.connects: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
        self.boots: dict[str, list[tuple[float, float, int]]] = collections.defaultdict(list)
        for e in self.events:
            node = str(e["node"])
            if node not in self.group:
                continue
            if e["kind"] not in ("handshake_ok", "booted"):
                continue
            where = self.hosts[e["endpoint"]] if "endpoint" in e else hop[self.group[node]]
            link = f"{self.group[node]} -> {where}"
            if e["kind"] == "handshake_ok":
                self.connects[link].append((float(e["t"]), float(e["connect_s"])))
            else:
                self.boots[link].append((float(e["t"]), float(e["boot_s"]), int(e["boot_attempts"])))
        self.windows = [e for e in self.events if e["node"] == "metrics" and e["kind"] == "round_trips"]

    def pair(self, e: Mapping[str, Any]) -> str:
        return f"{e['caller']} -> {self.hosts.get(e['endpoint'], e['endpoint'])}"

    def round_trips(self, key: str = "pair") -> dict[str, tuple[list[float], float, int]]:
        """pair (or endpoint) -> (every cut value, the largest value, timeouts)."""
        out: dict[str, tuple[list[float], float, int]] = {}
        for e in self.windows:
            k = self.pair(e) if key == "pair" else self.pair(e).split(" -> ")[1]
            values, largest, timeouts = out.get(k, ([], -math.inf, 0))
            for value, n in e["histogram"]:
                values += [value] * n
            if e["calls"]:
                largest = max(largest, e["max"])
            out[k] = (values, largest, timeouts + e["timeouts"])
        return out


def check_load_tables(run: Any, hop: Mapping[str, str]) -> Recomputed:
    truth = Recomputed(run.events, run.meta, hop)
    tables = parse_tables((run.path / "summary.txt").read_text())

    connect = {
        r["link"]: [r["connects"], r["p50"], r["p95"], r["p99"], r["max"]]
        for r in table(tables, "Connect latency")
    }
    assert connect == {link: [str(len(v)), *figures([s for _, s in v])] for link, v in truth.connects.items()}
    boot = {r["link"]: [r["boots"], r["retries"], r["p50"], r["max"]] for r in table(tables, "Boot latency")}
    assert boot == {
        link: [str(len(v)), str(sum(a - 1 for *_, a in v)), *figures([s for _, s, _ in v])[::3]]
        for link, v in truth.boots.items()
    }

    rtt = {r["caller -> endpoint"]: r for r in table(tables, "OCPP round trips")}
    expected = truth.round_trips()
    assert set(rtt) == set(expected)
    for pair, (values, largest, timeouts) in expected.items():
        row = rtt[pair]
        assert (int(row["calls"]), int(row["timeouts"])) == (len(values), timeouts)
        cut = [human_duration(min(rank(values, q), largest)) for q in (0.5, 0.95, 0.99)]
        assert [row["p50"], row["p95"], row["p99"], row["max"]] == [*cut, human_duration(largest)]

    per_endpoint = truth.round_trips("endpoint")
    throughput = {r["endpoint"]: int(r["calls"]) for r in table(tables, "Throughput")}
    assert throughput == {k: len(v[0]) for k, v in per_endpoint.items()}

    # over time: the bucket width of the title; per (bucket, endpoint) connects, boots and calls
    (title,) = [t for t in tables if t.startswith("Load over time")]
    width = parse_duration(title.split("per ")[1].split(",")[0])
    over: dict[tuple[str, str], tuple[int, int, int]] = {}
    for r in tables[title]:
        over[(r["from"], r["endpoint"])] = (int(r["connects"]), int(r["boots"]), int(r["calls"]))
    counts: dict[tuple[str, str], list[int]] = collections.defaultdict(lambda: [0, 0, 0])
    times = {
        0: {link: [t for t, _ in v] for link, v in truth.connects.items()},
        1: {link: [t for t, *_ in v] for link, v in truth.boots.items()},
    }
    for i, by_link in times.items():
        for link, ts in by_link.items():
            for t in ts:
                counts[(human_duration(math.floor(t / width) * width), link.split(" -> ")[1])][i] += 1
    for e in truth.windows:
        key = (human_duration(math.floor(e["start"] / width) * width), truth.pair(e).split(" -> ")[1])
        counts[key][2] += e["calls"]
    assert over == {k: tuple(v) for k, v in counts.items()}

    # the plot's series: every call of an endpoint in its buckets
    topo = Topology.from_json(run.meta["topology"])
    series = round_trip_series(round_trip_windows(run.events, topo), width)
    assert {k: round(sum(s.rate) * width) for k, s in series.items()} == throughput
    return truth


def test_direct(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run, _ = run_report(tmp_path, "direct", DIRECT, capsys)
    truth = check_load_tables(run, {"fleet": "main"})
    assert set(truth.connects) == set(truth.boots) == {"fleet -> main"}
    assert len(truth.boots["fleet -> main"]) == 8  # the first boots, and again after the outage
    assert set(truth.round_trips()) == {"stations -> main"}
    # the stations that lost the CSMS at 3 min booted again only after it came back at 4 min
    assert max(s for _, s, _ in truth.boots["fleet -> main"]) > 55
    assert max(a for *_, a in truth.boots["fleet -> main"]) > 1


def test_latency_is_measured(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run, _ = run_report(tmp_path, "latency", LATENCY, capsys)
    truth = check_load_tables(run, {"fleet": "main"})
    connects = [s for _, s in truth.connects["fleet -> main"]]
    # at least the TLS 1.3 handshake's round trip over a 15 ms one-way link (the in-memory network opens a
    # connection at once)
    assert min(connects) >= 0.03
    values, _, _ = truth.round_trips()["stations -> main"]
    assert min(values) >= 0.03  # a CALL and its answer cross the link once each
    assert (run.path / "plots" / "load_latency.png") in plots.render_plots(run)


def test_secondary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run, _ = run_report(tmp_path, "secondary", SECONDARY, capsys)
    truth = check_load_tables(run, {})
    assert {"home -> primary", "home -> secondary", "sticky -> secondary"} <= set(truth.boots)
    assert {"stations -> primary", "stations -> secondary"} <= set(truth.round_trips())


def test_controller(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run, _ = run_report(tmp_path, "controller", CONTROLLER, capsys)
    truth = check_load_tables(run, {"depot_fleet": "depot"})
    assert set(truth.connects) == {"depot_fleet -> depot"}
    assert set(truth.round_trips()) == {"stations -> depot", "depot -> primary", "depot -> secondary"}


def test_chained_controllers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run, _ = run_report(tmp_path, "chained", CHAINED, capsys)
    truth = check_load_tables(run, {"bay_fleet": "bay"})
    assert set(truth.round_trips()) == {"stations -> bay", "bay -> site", "site -> main"}
    # while the site was down, the stations' CALLs waited at the bay: their round trips show it
    _, largest, _ = truth.round_trips()["stations -> bay"]
    assert largest > 1.0
