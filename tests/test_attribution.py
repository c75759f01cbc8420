"""Every figure of the report on the endpoint that served it, checked against the event log, per topology.

Each test runs a small scenario with ``evsim run`` in virtual time (a few stations), reads the run directory
it wrote (``summary.txt``, ``events.jsonl``, ``meta.json``) and recomputes the report's per-link and
per-endpoint figures from the events alone, with code of its own: sessions, boots, transactions started and
ended, OCPP messages by action, recovery endpoints, connections per endpoint, the per-station table, and the
plots' per-endpoint series. Topologies: one CSMS (direct), a primary and its secondary sharing their records
(``secondary_of``), a Local Controller failing over between them, and two chained controllers.
"""

from __future__ import annotations

import collections
import itertools
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

from evsim.cli import main
from evsim.metrics import plots
from evsim.metrics.failover import storm_series
from evsim.metrics.rundir import load
from evsim.metrics.topology import Topology

DIRECT = """
[simulation]
seed = 3
duration = "12m"
[csms.main]
heartbeat_interval = "60s"
[stations.fleet]
count = 4
id_pattern = "F-{n:02d}"
csms = "main"
sessions = 2
session_start = ["10s", "1m"]
session_duration = "2m"
meter_interval = "30s"
retry_backoff = { wait_minimum = "2s", random_range = "2s", repeat_times = 2 }
[[timeline]]
at = "3m"
action = "stop"
target = "main"
[[timeline]]
at = "4m"
action = "start"
target = "main"
"""

SECONDARY = """
[simulation]
seed = 5
duration = "14m"
[pki.roots.backup]
[tls.trust.both]
roots = ["root", "backup"]
[csms.primary]
heartbeat_interval = "60s"
[csms.secondary]
secondary_of = "primary"
heartbeat_interval = "60s"
certificate = { root = "backup" }
[stations.home]
count = 3
id_pattern = "HOME-{n:02d}"
endpoints = [{ csms = "primary", priority = 1 }, { csms = "secondary", priority = 2, trust = "both" }]
network_attempts = 2
fallback = "restart_list"
sessions = 2
session_start = ["10s", "40s"]
session_duration = "3m"
meter_interval = "30s"
retry_backoff = { wait_minimum = "2s", random_range = "2s", repeat_times = 2 }
[stations.sticky]
count = 3
id_pattern = "STICKY-{n:02d}"
endpoints = [{ csms = "primary", priority = 1 }, { csms = "secondary", priority = 2, trust = "both" }]
network_attempts = 2
fallback = "last_working"
sessions = 2
session_start = ["10s", "40s"]
session_duration = "3m"
meter_interval = "30s"
retry_backoff = { wait_minimum = "2s", random_range = "2s", repeat_times = 2 }
[[timeline]]
at = "2m"
action = "stop"
target = "primary"
[[timeline]]
at = "5m"
action = "start"
target = "primary"
[[timeline]]
at = "6m"
action = "partition"
between = ["home", "secondary"]
[[timeline]]
at = "6m"
action = "partition"
between = ["sticky", "secondary"]
[[timeline]]
at = "6m"
action = "heal"
between = ["home", "secondary"]
[[timeline]]
at = "6m"
action = "heal"
between = ["sticky", "secondary"]
"""

CONTROLLER = """
[simulation]
seed = 7
duration = "15m"
[pki.roots.backup]
[tls.trust.both]
roots = ["root", "backup"]
[csms.primary]
heartbeat_interval = "60s"
[csms.secondary]
secondary_of = "primary"
heartbeat_interval = "60s"
certificate = { root = "backup" }
[controllers.depot]
host = "depot.lc.evsim.test"
upstream = [{ csms = "primary", priority = 1 }, { csms = "secondary", priority = 2, trust = "both" }]
on_upstream_loss = "keep_station"
retry_backoff = { wait_minimum = "2s", random_range = "2s", repeat_times = 2 }
[stations.depot_fleet]
count = 4
id_pattern = "DEPOT-{n:02d}"
endpoints = [{ controller = "depot" }]
sessions = 2
session_start = ["20s", "1m"]
session_duration = "3m"
meter_interval = "30s"
[[timeline]]
at = "2m"
action = "stop"
target = "primary"
[[timeline]]
at = "6m"
action = "start"
target = "primary"
"""

CHAINED = """
[simulation]
seed = 9
duration = "15m"
[csms.main]
heartbeat_interval = "60s"
[controllers.site]
host = "site.lc.evsim.test"
upstream = [{ csms = "main" }]
retry_backoff = { wait_minimum = "1s", random_range = "1s", repeat_times = 2 }
[controllers.bay]
host = "bay.lc.evsim.test"
upstream = [{ controller = "site" }]
retry_backoff = { wait_minimum = "1s", random_range = "1s", repeat_times = 2 }
[stations.bay_fleet]
count = 4
id_pattern = "BAY-{n:02d}"
endpoints = [{ controller = "bay" }]
sessions = 2
session_start = ["20s", "1m"]
session_duration = "3m"
meter_interval = "30s"
retry_backoff = { wait_minimum = "5s", random_range = "5s", repeat_times = 2 }
[[timeline]]
at = "3m"
action = "stop"
target = "site"
[[timeline]]
at = "5m"
action = "start"
target = "site"
"""


# ------------------------------------------------------------------------------------------------ the report


def parse_tables(text: str) -> dict[str, list[dict[str, str]]]:
    """The tables of a rendered summary: title -> rows as {header: cell}, cells cut at the columns the dash
    line under the header marks (notes under a table are left out)."""
    out: dict[str, list[dict[str, str]]] = {}
    for block in text.split("\n\n"):
        lines = block.splitlines()
        if len(lines) < 3 or not set(lines[2]) <= {"-", " "} or "-" not in lines[2]:
            continue
        dashes = lines[2]
        spans: list[tuple[int, int]] = []
        i = 0
        while i < len(dashes):
            if dashes[i] == "-":
                j = dashes.index(" ", i) if " " in dashes[i:] else len(dashes)
                spans.append((i, j))
                i = j
            else:
                i += 1

        def cells(line: str, spans: list[tuple[int, int]] = spans) -> list[str]:
            return [line[a:b].strip() for a, b in spans]

        def is_row(line: str, spans: list[tuple[int, int]] = spans, width: int = len(dashes)) -> bool:
            gaps = [line[b:c] for (_, b), (c, _) in itertools.pairwise(spans)]
            return len(line) <= width and all(not g.strip() for g in gaps)

        headers = cells(lines[1])
        out[lines[0]] = [dict(zip(headers, cells(line), strict=True)) for line in lines[3:] if is_row(line)]
    return out


def table(tables: Mapping[str, list[dict[str, str]]], prefix: str) -> list[dict[str, str]]:
    (title,) = [t for t in tables if t.startswith(prefix)]
    return tables[title]


def run_report(tmp_path: Path, name: str, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[Any, str]:
    """``evsim run`` a scenario; returns the run directory read back and what the command printed."""
    scenario = tmp_path / f"{name}.toml"
    scenario.write_text(text)
    out = tmp_path / "runs"
    assert main(["run", str(scenario), "--out", str(out), "--no-live", "--no-plots"]) == 0
    printed = capsys.readouterr().out
    (run_dir,) = list(out.iterdir())
    return load(run_dir), printed


# ------------------------------------------------------------------------------------------------ the events


class Truth:
    """Per-endpoint figures recomputed from a run's events, with the scenario's node names."""

    def __init__(self, events: list[dict[str, Any]], meta: Mapping[str, Any]) -> None:
        self.events = sorted(events, key=lambda e: (float(e["t"]), str(e["node"]), int(e.get("seq", 0))))
        stations = meta["topology"]["stations"]
        self.group = {sid: group for group, sids in stations.items() for sid in sids}
        self.hosts: dict[str, str] = meta["topology"]["hosts"]
        self.servers = set(self.hosts.values())  # every CSMS and controller
        self.by_link: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        started: dict[tuple[str, str], str] = {}
        ended: dict[tuple[str, str], str] = {}
        for e in self.events:
            node, kind = str(e["node"]), str(e["kind"])
            if node not in self.servers or "station" not in e:
                continue
            link = f"{self.group[str(e['station'])]} -> {node}"
            c = self.by_link[link]
            key = (str(e["station"]), str(e.get("tx")))
            if kind == "station_connected":
                c["sessions"] += 1
            elif kind == "booted":
                c["boots"] += 1
                c["BootNotification"] += 1
            elif kind == "boot_rejected":
                c["BootNotification"] += 1
            elif kind == "tx_event":
                c["TransactionEvent"] += 1
                if e["type"] == "Started":
                    started.setdefault(key, link)
                elif e["type"] == "Ended":
                    ended.setdefault(key, link)
            elif kind == "tx_duplicate":
                c["TransactionEvent"] += 1
            elif kind == "security_event_received":
                c["SecurityEventNotification"] += 1
        for link in started.values():
            self.by_link[link]["tx started"] += 1
        for link in ended.values():
            self.by_link[link]["tx ended"] += 1
        self.station_tx = {(str(e["node"]), str(e["tx"])) for e in self.of("tx_started", stations=True)}

    def of(self, kind: str, *, stations: bool = False) -> Iterable[dict[str, Any]]:
        return (e for e in self.events if e["kind"] == kind and (e["node"] in self.group) == stations)

    def links(self, *figures: str) -> dict[str, tuple[int, ...]]:
        return {
            link: tuple(c[f] for f in figures)
            for link, c in sorted(self.by_link.items())
            if any(c[f] for f in figures)
        }

    def last_boot(self) -> dict[str, str]:
        return {str(e["station"]): str(e["node"]) for e in self.of("booted") if e["node"] in self.servers}

    def accepted(self) -> dict[str, int]:
        """Connections per endpoint: sessions each server accepted, upstream links each controller opened."""
        out: collections.Counter[str] = collections.Counter()
        for e in self.of("station_connected"):
            out[str(e["node"])] += 1
        for e in self.of("upstream_connected"):
            out[f"{e['node']} -> {e['endpoint']}"] += 1
        return dict(out)

    def came_back_to(self, t0: float) -> dict[str, int]:
        """Stations online before an outage at ``t0`` that lost their link within 60 s: the endpoint that
        recorded each one's next boot."""
        state: dict[str, str] = {}
        lost: dict[str, float] = {}
        for e in self.events:
            node, t = str(e["node"]), float(e["t"])
            if node not in self.group or e["kind"] not in ("booted", "reconnect_wait"):
                continue
            if t < t0:
                state[node] = e["kind"]
            elif (
                e["kind"] == "reconnect_wait"
                and state.get(node) == "booted"
                and node not in lost
                and t <= t0 + 60
            ):
                lost[node] = t
        out: collections.Counter[str] = collections.Counter()
        for sid, t_lost in lost.items():
            back = next(
                (e for e in self.of("booted") if e["station"] == sid and float(e["t"]) >= t_lost),
                None,
            )
            out[str(back["node"]) if back else "?"] += 1
        return dict(out)


# ------------------------------------------------------------------------------------------------ the checks


def number(cell: str) -> int:
    return int(cell)


def check_report(run: Any, printed: str) -> Truth:
    """Compare every per-link and per-endpoint table of the run's report with the events."""
    truth = Truth(run.events, run.meta)
    tables = parse_tables((run.path / "summary.txt").read_text())

    links = table(tables, "Links")
    figures = ("sessions", "boots", "tx started", "tx ended")
    got = {
        r["link"]: tuple(number(r[f]) for f in figures) for r in links if any(number(r[f]) for f in figures)
    }
    assert got == truth.links(*figures)
    assert all(number(r["tx open"]) == number(r["tx lost"]) == 0 for r in links)  # every run ends cleanly
    assert sum(number(r["tx started"]) for r in links) == len(truth.station_tx)

    sessions: collections.Counter[str] = collections.Counter()
    for r in table(tables, "Sessions accepted"):
        sessions[r["link"]] += number(r["sessions"])
    assert dict(sessions) == {link: n for link, (n,) in truth.links("sessions").items()}

    # messages: the actions that leave an event must match them link by link; every action's calls summed
    # over the endpoints must be what the station's (shared) record counted
    messages = table(tables, "OCPP messages")
    calls: dict[str, dict[str, int]] = collections.defaultdict(dict)
    for r in messages:
        calls[r["action"]][r["link"]] = number(r["calls"])
    for action in ("BootNotification", "TransactionEvent", "SecurityEventNotification"):
        assert calls.get(action, {}) == {link: n for link, (n,) in truth.links(action).items()}, action
    per_group: collections.Counter[tuple[str, str]] = collections.Counter()
    for sid, by_action in run.meta["ocpp_messages"].items():
        for action, n in by_action.items():
            per_group[(truth.group[sid], action)] += n
    summed: collections.Counter[tuple[str, str]] = collections.Counter()
    for action, by_link in calls.items():
        for link, n in by_link.items():
            summed[(link.split(" -> ")[0], action)] += n
    assert summed == +per_group

    endpoints = table(tables, "Connections per endpoint")
    got_accepted = {r["endpoint"]: number(r["accepted"]) for r in endpoints if number(r["accepted"])}
    assert got_accepted == truth.accepted()

    summary = json.loads((run.path / "summary.json").read_text())  # the outage instants in seconds
    (recovery,) = [t["rows"] for t in summary["tables"] if t["key"] == "recovery_after_outages"]
    for r in recovery:
        if "controller upstream links" in r["target"]:
            continue
        expected = truth.came_back_to(float(r["at"]))
        assert number(r["lost link"]) == sum(expected.values())
        parts = [part.rsplit(" ", 1) for part in r["back to"].split(", ") if part != "-"]
        got_back = {endpoint: int(n) for endpoint, n in parts}
        assert got_back == expected

    # plots: sessions per endpoint, transactions per endpoint
    topo = Topology.from_json(run.meta["topology"])
    span = max(float(e["t"]) for e in run.events) + 1
    rates = plots.connection_rates(run.events, span, 60.0, topo)
    got_rates = {
        k.removeprefix("sessions accepted by "): sum(v) for k, v in rates.series.items() if "accepted" in k
    }
    assert got_rates == {k: n for k, n in truth.accepted().items() if " -> " not in k}
    roles = dict.fromkeys(truth.servers, "csms") | dict.fromkeys(truth.group, "station")
    assert {k: sum(v) for k, v in storm_series(run.events, roles, span).items()} == got_rates
    curves = plots.transaction_curves(run.events, topo)
    tx_nodes = {link.split(" -> ")[-1] for link in truth.links("tx started", "tx ended")}
    for what in ("started", "ended"):
        at_node: collections.Counter[str] = collections.Counter()
        for link, (n,) in truth.links(f"tx {what}").items():
            at_node[link.split(" -> ")[-1]] += n
        assert curves[f"{what} at CSMS"][1][-1:] == [sum(at_node.values())]
        if len(tx_nodes) > 1:
            got_curves = {node: (curves[f"{what} at {node}"][1] or [0])[-1] for node in tx_nodes}
            assert got_curves == {node: at_node[node] for node in tx_nodes}

    # the per-station table printed by `evsim run`: the endpoint that recorded each station's last boot
    station_rows = table(parse_tables(printed), "Station links")
    assert {r["station"]: r["last boot at"] for r in station_rows} == truth.last_boot()
    return truth


def test_direct(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run, printed = run_report(tmp_path, "direct", DIRECT, capsys)
    truth = check_report(run, printed)
    assert truth.links("sessions", "boots") == {"fleet -> main": (8, 8)}  # boot + reconnect after the outage


def test_secondary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run, printed = run_report(tmp_path, "secondary", SECONDARY, capsys)
    truth = check_report(run, printed)
    links = truth.links("boots", "tx started", "tx ended")
    # the secondary served traffic of both groups, transactions included; home went back to the primary
    assert {"home -> secondary", "sticky -> secondary", "home -> primary"} <= set(links)
    assert links["home -> secondary"][1:] != (0, 0) and links["sticky -> secondary"][1:] != (0, 0)
    assert set(truth.last_boot().values()) == {"primary", "secondary"}


def test_controller(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run, printed = run_report(tmp_path, "controller", CONTROLLER, capsys)
    truth = check_report(run, printed)
    links = truth.links("sessions", "boots", "tx started", "tx ended")
    # the controller kept its stations: its own row has their sessions; the replayed boots and what
    # followed are on the secondary's row
    assert links["depot_fleet -> depot"] == (4, 0, 0, 0)
    assert links["depot_fleet -> secondary"][1] == 4 and links["depot_fleet -> secondary"][3] > 0
    assert set(truth.last_boot().values()) == {"secondary"}


def test_chained_controllers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run, printed = run_report(tmp_path, "chained", CHAINED, capsys)
    truth = check_report(run, printed)
    links = truth.links("sessions", "boots")
    assert set(links) == {"bay_fleet -> bay", "bay_fleet -> site", "bay_fleet -> main"}
    assert (
        links["bay_fleet -> main"][1] == links["bay_fleet -> main"][0] >= 8
    )  # booted again after the outage
    assert set(json.loads((run.path / "meta.json").read_text())["ocpp_messages_by_endpoint"]) == {"main"}
