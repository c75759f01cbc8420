"""Reporting: summary tables, canonical log, run directory files, plots and the live progress display.

Everything runs on a small synthetic event list shaped like the nodes' real events (see
``evsim/nodes/csms.py`` and ``station.py``): two station groups on one CSMS, with a resumed handshake, an
expired certificate, a wrong password, a refused TCP connection, a lost and an open transaction.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import random
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from evsim.errors import ConfigError
from evsim.metrics import plots
from evsim.metrics.canonical import canonical_line, canonical_log
from evsim.metrics.live import LiveProgress, format_sim_time
from evsim.metrics.rundir import METRICS_COLUMNS, RunData, RunDir, Sample, load, rerender
from evsim.metrics.summary import summarize
from evsim.metrics.topology import Topology, default_group
from evsim.recorder import Event

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STARTED = _dt.datetime(2026, 1, 1, 12, 30, 5, tzinfo=_dt.UTC)

TOPOLOGY = Topology.from_groups(
    {"fleet": ["ST-0001", "ST-0002"], "legacy": ["LG-0001"]}, {"fleet": "main", "legacy": "main"}
)


def _events() -> list[dict[str, Any]]:
    """The synthetic run, as (t, node, kind, fields); seq is numbered per node in list order."""
    raw: list[tuple[float, str, str, dict[str, Any]]] = [
        (0.0, "main", "listening", {"address": "csms.evsim.test:443"}),
        # LG-0001: refused at TCP, then a wrong password (HTTP 401)
        (
            0.5,
            "LG-0001",
            "connection_lost",
            {"reason": "ConnectionRefused", "detail": "", "security_event": ""},
        ),
        (0.5, "LG-0001", "reconnect_wait", {"seconds": 3.0}),
        (3.5, "LG-0001", "handshake_ok", _tls(resumed=False)),
        (3.5, "main", "upgrade_rejected", {"station": "LG-0001", "status": 401, "reason": "wrong password"}),
        (
            3.5,
            "LG-0001",
            "connection_lost",
            {"reason": "http_401", "detail": "", "security_event": "FailedToAuthenticateAtCsms"},
        ),
        (3.5, "LG-0001", "reconnect_wait", {"seconds": 4.0}),
        # ST-0001: connects, charges once, reconnects with a resumed session
        (1.0, "ST-0001", "handshake_ok", _tls(resumed=False)),
        (1.0, "main", "station_connected", _connected("ST-0001")),
        (1.0, "main", "booted", {"station": "ST-0001", "reason": "PowerUp"}),
        (1.0, "ST-0001", "booted", {"interval": 60, "status": "Accepted"}),
        (10.0, "ST-0001", "tx_started", {"tx": "tx-a"}),
        (10.0, "main", "tx_event", _tx("ST-0001", "tx-a", "Started", 0)),
        (20.0, "ST-0001", "tx_ended", {"tx": "tx-a", "energy_wh": 30.6}),
        (20.0, "main", "tx_event", _tx("ST-0001", "tx-a", "Ended", 1)),
        (21.0, "main", "tx_duplicate", {"station": "ST-0001", "tx": "tx-a", "seq": 1}),
        (
            30.0,
            "ST-0001",
            "connection_lost",
            {"reason": "BrokenTransport", "detail": "", "security_event": ""},
        ),
        (30.0, "ST-0001", "reconnect_wait", {"seconds": 5.0}),
        (35.0, "ST-0001", "handshake_ok", _tls(resumed=True)),
        (35.0, "main", "station_connected", _connected("ST-0001")),
        (35.0, "main", "booted", {"station": "ST-0001", "reason": "Unknown"}),
        (35.0, "ST-0001", "booted", {"interval": 60, "status": "Accepted"}),
        # ST-0002: expired CSMS certificate first; a lost and an open transaction
        (
            2.0,
            "ST-0002",
            "handshake_failed",
            {"reason": "cert_invalid:expired", "detail": "", "security_event": "InvalidCsmsCertificate"},
        ),
        (
            2.0,
            "main",
            "handshake_failed",
            {"reason": "peer_alert:certificate_expired", "detail": "", "security_event": ""},
        ),
        (2.0, "ST-0002", "reconnect_wait", {"seconds": 3.0}),
        (5.0, "ST-0002", "handshake_ok", _tls(resumed=False)),
        (5.0, "main", "station_connected", _connected("ST-0002")),
        (5.0, "main", "booted", {"station": "ST-0002", "reason": "PowerUp"}),
        (5.0, "ST-0002", "booted", {"interval": 60, "status": "Accepted"}),
        (
            6.0,
            "main",
            "security_event_received",
            {"station": "ST-0002", "type": "InvalidCsmsCertificate", "tech_info": "cert_invalid:expired: "},
        ),
        (30.0, "ST-0002", "tx_started", {"tx": "tx-b"}),
        (30.0, "main", "tx_event", _tx("ST-0002", "tx-b", "Started", 0)),
        (40.0, "ST-0002", "tx_ended", {"tx": "tx-b", "energy_wh": 30.6}),
        (50.0, "ST-0002", "tx_started", {"tx": "tx-c"}),
        (50.0, "ST-0002", "message_discarded", {"action": "TransactionEvent", "reason": "timeout"}),
        # the timeline: a downgrading client (refused), then an impostor CSMS that LG-0001 wrongly trusts
        (40.0, "timeline", "attack_downgrade", {"target": "main", "versions": "1.2"}),
        (40.0, "attacker-downgrade", "attack_result", {"outcome": "refused", "reason": "downgrade_refused"}),
        (
            40.0,
            "main",
            "handshake_failed",
            {"reason": "downgrade_refused", "detail": "", "security_event": "InvalidTLSVersion"},
        ),
        (45.0, "timeline", "attack_wrong_ca", {"target": "legacy"}),
        (45.0, "attacker-impostor", "listening", {"address": "impostor-main.attacker:443"}),
        (50.0, "LG-0001", "handshake_ok", _tls(resumed=False)),
        (50.0, "attacker-impostor", "station_connected", _connected("LG-0001")),
        (50.0, "attacker-impostor", "booted", {"station": "LG-0001", "reason": "PowerUp"}),
        (50.0, "LG-0001", "booted", {"interval": 60, "status": "Accepted"}),
    ]
    seq: dict[str, int] = {}
    out = []
    for t, node, kind, data in raw:
        n = seq.get(node, 0)
        seq[node] = n + 1
        out.append({"t": t, "node": node, "seq": n, "kind": kind, **data})
    return out


def _tls(*, resumed: bool) -> dict[str, Any]:
    return {"version": "TLSv1.3", "suite": "TLS_AES_128_GCM_SHA256", "group": "X25519", "resumed": resumed}


def _connected(station: str) -> dict[str, Any]:
    return {
        "station": station,
        "subprotocol": "ocpp2.0.1",
        "tls_version": "TLSv1.3",
        "suite": "TLS_AES_128_GCM_SHA256",
        "group": "X25519",
        "compressed": False,
    }


def _tx(station: str, tx: str, event_type: str, seq: int) -> dict[str, Any]:
    return {"station": station, "tx": tx, "type": event_type, "seq": seq, "offline": False}


GOLDEN_SUMMARY = """\
Station groups (station side)
group   stations  online@end  tls full  tls resumed  tls failed  conn failed  boots  tx started  tx ended  discarded
------  --------  ----------  --------  -----------  ----------  -----------  -----  ----------  --------  ---------
fleet          2           2         2            1           1            1      3           3         2          1
legacy         1           1         2            0           0            2      1           0         0          0
conn failed: connection attempts or sessions that ended without a TLS failure (refused, HTTP, lost)

Links (station group -> CSMS, CSMS side)
link                         sessions  boots  boot rej  http rej  tx started  tx ended  tx open  tx lost  dup tx ev  offline tx ev  sec events
---------------------------  --------  -----  --------  --------  ----------  --------  -------  -------  ---------  -------------  ----------
fleet -> main                       3      3         0         0           3         1        1        1          1              0           1
legacy -> attacker-impostor         1      1         0         0           0         0        0        0          0              0           0
legacy -> main                      0      0         0         1           0         0        0        0          0              0           0
each figure on the row of the endpoint that recorded it (a controller's row: the sessions it accepted, what they carried is on the CSMS's row); tx started / tx ended: where Started / Ended was recorded; tx open: still charging at the end; tx lost: ended at the station (or never tracked there) but not Ended at the CSMS by the end of the run

TLS handshakes completed (station side)
group   version  suite                   key exchange  full  resumed
------  -------  ----------------------  ------------  ----  -------
fleet   TLSv1.3  TLS_AES_128_GCM_SHA256  X25519           2        1
legacy  TLSv1.3  TLS_AES_128_GCM_SHA256  X25519           2        0

Sessions accepted (CSMS side)
link                         ocpp       tls version  suite                   compressed  sessions
---------------------------  ---------  -----------  ----------------------  ----------  --------
fleet -> main                ocpp2.0.1  TLSv1.3      TLS_AES_128_GCM_SHA256  no                 3
legacy -> attacker-impostor  ocpp2.0.1  TLSv1.3      TLS_AES_128_GCM_SHA256  no                 1

Failures by reason
where           seen by  event              reason                          count
--------------  -------  -----------------  ------------------------------  -----
fleet           station  connection_lost    BrokenTransport                     1
fleet           station  handshake_failed   cert_invalid:expired                1
fleet           station  message_discarded  TransactionEvent: timeout           1
legacy          station  connection_lost    ConnectionRefused                   1
legacy          station  connection_lost    http_401                            1
legacy -> main  csms     upgrade_rejected   HTTP 401: wrong password            1
main            csms     handshake_failed   downgrade_refused                   1
main            csms     handshake_failed   peer_alert:certificate_expired      1

OCPP messages by action (from events)
link                         action                     calls
---------------------------  -------------------------  -----
fleet -> main                BootNotification               3
fleet -> main                SecurityEventNotification      1
fleet -> main                TransactionEvent               4
legacy -> attacker-impostor  BootNotification               1
only actions that leave an event: BootNotification, TransactionEvent, SecurityEventNotification

Security events
where          source            type                    count
-------------  ----------------  ----------------------  -----
fleet -> main  received by CSMS  InvalidCsmsCertificate      1
main           raised by CSMS    InvalidTLSVersion           1

Attacks
attacker            outcome  detail             count
------------------  -------  -----------------  -----
attacker-downgrade  refused  downgrade_refused      1

Timeline
 at  action            parameters
---  ----------------  ------------------------
40s  attack_downgrade  target=main versions=1.2
45s  attack_wrong_ca   target=legacy"""


# ------------------------------------------------------------------------------------------------ summary


def test_summary_tables_golden() -> None:
    text = summarize(_events(), TOPOLOGY).render()
    assert text == GOLDEN_SUMMARY, "\n" + text


def test_summary_does_not_depend_on_event_order() -> None:
    events = _events()
    shuffled = events[:]
    random.Random(7).shuffle(shuffled)
    assert summarize(shuffled, TOPOLOGY).render() == summarize(events, TOPOLOGY).render()


def test_summary_accepts_event_objects() -> None:
    objs = [Event(t=e["t"], node=e["node"], seq=e["seq"], kind=e["kind"], data=_data(e)) for e in _events()]
    assert summarize(objs, TOPOLOGY).render() == GOLDEN_SUMMARY


def test_messages_from_statistics_replace_derived_counts() -> None:
    messages = {"ST-0001": {"Heartbeat": 5, "BootNotification": 2}, "LG-0001": {"Heartbeat": 0}}
    t = summarize(_events(), TOPOLOGY, messages=messages).table("OCPP messages")
    assert t.title == "OCPP messages by action (received by the CSMS)"
    assert t.rows == (("fleet -> main", "BootNotification", 2), ("fleet -> main", "Heartbeat", 5))
    assert "no per-endpoint counts" in t.note  # a run directory written before they were kept


def test_messages_per_endpoint_go_to_the_endpoint_that_received_them() -> None:
    by_endpoint = {
        "main": {"ST-0001": {"BootNotification": 1, "Heartbeat": 3}},
        "attacker-impostor": {"LG-0001": {"BootNotification": 1}},
        "backup": {"ST-0001": {"BootNotification": 1, "Heartbeat": 2}},
    }
    shared = {"ST-0001": {"BootNotification": 2, "Heartbeat": 5}, "LG-0001": {"BootNotification": 1}}
    t = summarize(_events(), TOPOLOGY, messages=shared, endpoint_messages=by_endpoint).table("OCPP messages")
    assert t.rows == (
        ("fleet -> backup", "BootNotification", 1),
        ("fleet -> backup", "Heartbeat", 2),
        ("fleet -> main", "BootNotification", 1),
        ("fleet -> main", "Heartbeat", 3),
        ("legacy -> attacker-impostor", "BootNotification", 1),
    )
    assert t.note == ""


def test_without_topology_groups_by_id_prefix_and_links_by_observation() -> None:
    groups = summarize(_events()).table("Station groups")
    assert [row[0] for row in groups.rows] == ["LG", "ST"]
    links = summarize(_events()).table("Links")
    assert [row[0] for row in links.rows] == ["LG -> attacker-impostor", "LG -> main", "ST -> main"]


def test_empty_run_renders_none() -> None:
    text = summarize([]).render(header="scenario empty")
    assert text.startswith("scenario empty\n\nStation groups (station side)\n(none)")


def test_topology_json_round_trip_and_defaults() -> None:
    doc = json.loads(json.dumps(TOPOLOGY.as_json()))
    assert Topology.from_json(doc) == TOPOLOGY
    assert Topology.from_json(None) == Topology()
    assert TOPOLOGY.group_of("ST-0002") == "fleet"
    assert TOPOLOGY.group_of("mitm") == "mitm"
    assert default_group("ST-0042") == "ST"
    assert default_group("node_7") == "node"
    assert default_group("42") == "42"


# ------------------------------------------------------------------------------------------------ canonical log


def test_canonical_log_ignores_input_order_and_seq() -> None:
    events = _events()
    shuffled = [dict(e, seq=1000 - e["seq"]) for e in events]
    random.Random(3).shuffle(shuffled)
    assert canonical_log(shuffled) == canonical_log(events)


def test_canonical_line_format_and_sort_key() -> None:
    e = {"t": 1.00000049, "node": "ST-0001", "seq": 9, "kind": "booted", "status": "Accepted", "interval": 60}
    assert canonical_line(e) == '1.000000 ST-0001 booted {"interval":60,"status":"Accepted"}'
    same_instant = [
        {"t": 5.0, "node": "b", "seq": 0, "kind": "x", "v": 2},
        {"t": 5.0, "node": "b", "seq": 1, "kind": "x", "v": 1},
        {"t": 5.0, "node": "a", "seq": 0, "kind": "y"},
        {"t": 4.9999999, "node": "z", "seq": 0, "kind": "y"},
    ]
    assert canonical_log(same_instant) == [
        "5.000000 a y {}",
        '5.000000 b x {"v":1}',
        '5.000000 b x {"v":2}',
        "5.000000 z y {}",
    ]


def test_canonical_log_of_event_objects_matches_json_form() -> None:
    ev = Event(t=2.5, node="main", seq=4, kind="booted", data={"station": "ST-0001", "reason": "PowerUp"})
    assert canonical_log([ev]) == canonical_log([ev.as_json()])


# ------------------------------------------------------------------------------------------------ run directory


def _data(e: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in e.items() if k not in ("t", "node", "seq", "kind")}


def _samples() -> list[Sample]:
    return [
        Sample(t=0.0),
        Sample(
            t=10.0,
            stations=3,
            connected_stations=2,
            messages_total=6,
            handshakes_ok=3,
            handshakes_failed=1,
            connect_failures=2,
            tx_started=1,
            queued_messages=1,
        ),
        Sample(
            t=50.0,
            stations=3,
            done_stations=1,
            connected_stations=2,
            messages_total=20,
            handshakes_ok=4,
            handshakes_failed=1,
            connect_failures=4,
            tx_started=3,
            tx_ended=1,
            queued_messages=2,
        ),
    ]


def _write_run(tmp_path: Path) -> RunDir:
    run = RunDir.create(tmp_path / "runs", "demo run", STARTED)
    with run.open_event_sink(batch=4) as sink:
        for e in _events():
            sink(Event(t=e["t"], node=e["node"], seq=e["seq"], kind=e["kind"], data=_data(e)))
    run.write_metrics_csv(_samples())
    run.write_meta(
        {
            "scenario": "demo",
            "seed": 1,
            "started_utc": STARTED,
            "duration_s": 60.0,
            "stations_total": 3,
            "outcome": "completed",
            "topology": TOPOLOGY.as_json(),
        }
    )
    return run


def test_run_dir_names_are_unique_and_safe(tmp_path: Path) -> None:
    a = RunDir.create(tmp_path, "boot storm/../x", STARTED)
    b = RunDir.create(tmp_path, "boot storm/../x", STARTED)
    assert a.path.name == "boot_storm_.._x-20260101-123005"
    assert b.path.name == "boot_storm_.._x-20260101-123005-2"
    assert a.path.parent == b.path.parent == tmp_path


def test_jsonl_round_trip(tmp_path: Path) -> None:
    run = _write_run(tmp_path)
    lines = run.events_path.read_text().splitlines()
    assert len(lines) == len(_events())
    first = {"t": 0.0, "node": "main", "seq": 0, "kind": "listening", "address": "csms.evsim.test:443"}
    assert json.loads(lines[0]) == first
    data = load(run.path)
    assert data.events == _events()
    assert data.meta["scenario"] == "demo"
    assert data.meta["format"] == 1
    assert data.meta["started_utc"] == "2026-01-01T12:30:05+00:00"
    assert data.summary is None


def test_event_sink_flushes_in_batches_and_on_close(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path, "s", STARTED)
    sink = run.open_event_sink(batch=3)
    ev = Event(t=1.0, node="n", seq=0, kind="k", data={"x": 1})
    sink(ev)
    sink(ev)
    assert run.events_path.read_bytes() == b""
    sink(ev)
    assert len(run.events_path.read_bytes().splitlines()) == 3
    sink(ev)
    sink.close()
    sink.close()
    assert len(run.events_path.read_bytes().splitlines()) == 4
    with pytest.raises(ValueError, match="closed"):
        sink(ev)


def test_truncated_last_line_is_skipped_but_a_bad_middle_line_is_an_error(tmp_path: Path) -> None:
    run = _write_run(tmp_path)
    good = run.events_path.read_bytes()
    run.events_path.write_bytes(good + b'{"t": 61.0, "node": "ST-0')
    assert len(load(run.path).events) == len(_events())
    run.events_path.write_bytes(b'{"t": 0, "node": "a", "kind": "x"}\nnot json\n' + good)
    with pytest.raises(ConfigError, match=r"events\.jsonl:2: bad JSON"):
        load(run.path)


def test_metrics_csv_columns_and_round_trip(tmp_path: Path) -> None:
    run = _write_run(tmp_path)
    lines = run.metrics_path.read_text().splitlines()
    assert lines[0] == (
        "t,stations,connected_stations,done_stations,messages_total,handshakes_ok,handshakes_failed,"
        "connect_failures,tx_started,tx_ended,queued_messages"
    )
    assert tuple(lines[0].split(",")) == METRICS_COLUMNS
    assert lines[2] == "10,3,2,0,6,3,1,2,1,0,1"
    assert load(run.path).samples == _samples()


def test_metrics_csv_missing_column_is_named(tmp_path: Path) -> None:
    run = _write_run(tmp_path)
    run.metrics_path.write_text("t,connected_stations\n0,0\n")
    with pytest.raises(ConfigError, match=r"missing columns .*messages_total"):
        load(run.path)


def test_load_refuses_a_directory_that_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"meta\.json is missing.*fix: give a directory"):
        load(tmp_path)
    with pytest.raises(ConfigError, match="no such run directory"):
        load(tmp_path / "nope")


def test_rerender_rebuilds_summary_and_plots_from_files(tmp_path: Path) -> None:
    run = _write_run(tmp_path)
    text, written = rerender(run.path)
    assert text.startswith("scenario demo, seed 1, simulated 1m, outcome: completed\n\n")
    # the summary's tables, closed by the check of the outcome (this run states no [expect])
    body, check = text.rsplit("\n\nOutcome check", 1)
    assert body.endswith(GOLDEN_SUMMARY)
    assert check.startswith(" (as expected)\n") and "no [expect] table" in check
    assert run.summary_path.read_text() == text + "\n"
    assert load(run.path).summary == text + "\n"
    assert [p.name for p in written] == list(plots.PLOT_FILES)
    assert all(p.read_bytes().startswith(PNG_SIGNATURE) for p in written)


# ------------------------------------------------------------------------------------------------ plots


def _run_data(tmp_path: Path, *, samples: bool = True, events: list[dict[str, Any]] | None = None) -> RunData:
    return RunData(
        path=tmp_path,
        meta={"scenario": "synthetic", "duration_s": 60.0, "topology": TOPOLOGY.as_json()},
        events=_events() if events is None else events,
        samples=_samples() if samples else [],
        summary=None,
    )


@pytest.mark.parametrize("with_samples", [True, False])
def test_plots_are_valid_pngs(tmp_path: Path, with_samples: bool) -> None:
    written = plots.render_plots(_run_data(tmp_path, samples=with_samples))
    assert [p.name for p in written] == list(plots.PLOT_FILES)
    for path in written:
        assert path.parent == tmp_path / "plots"
        data = path.read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000


def test_plots_of_an_empty_run(tmp_path: Path) -> None:
    run = RunData(path=tmp_path, meta={}, events=[], samples=[], summary=None)
    written = plots.render_plots(run, out_dir=tmp_path / "out")
    assert all(p.read_bytes().startswith(PNG_SIGNATURE) for p in written)


def test_missing_matplotlib_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ConfigError, match=r"matplotlib, which is not installed.*fix: pip install"):
        plots.render_plots(_run_data(tmp_path))


def test_time_axis_units_and_bucket_widths() -> None:
    assert plots.TimeAxis.for_span(120).unit == "s"
    assert plots.TimeAxis.for_span(3600).unit == "min"
    assert plots.TimeAxis.for_span(86400).label == "simulated time (h)"
    assert plots.TimeAxis.for_span(5 * 86400).unit == "d"
    assert plots.bucket_width(60) == 1
    assert plots.bucket_width(3600) == 60
    assert plots.bucket_width(86400) == 900
    assert plots.bucket_width(10**9) == 86400
    assert [plots.format_width(w) for w in (30, 300, 7200, 86400, 1.5)] == [
        "30 s",
        "5 min",
        "2 h",
        "1 d",
        "1.5 s",
    ]


def test_series_from_events() -> None:
    events = _events()
    ts, ns = plots.connected_series(events, [], TOPOLOGY)
    assert list(zip(ts, ns, strict=True)) == [(0.0, 0), (1.0, 1), (5.0, 2), (30.0, 1), (35.0, 2), (50.0, 3)]
    ok, failed = plots.handshake_buckets(events, 60.0, 10.0, TOPOLOGY)
    assert ok.starts == (0.0, 10.0, 20.0, 30.0, 40.0, 50.0)
    assert ok.series == {"full": (3, 0, 0, 0, 0, 1), "resumed": (0, 0, 0, 1, 0, 0)}
    assert failed.series["ConnectionRefused"] == (1, 0, 0, 0, 0, 0)
    assert failed.series["BrokenTransport"] == (0, 0, 0, 1, 0, 0)
    rates = plots.connection_rates(events, 60.0, 30.0, TOPOLOGY)
    assert rates.series == {
        "TLS handshakes": (4, 2),
        "refused at TCP": (1, 0),
        "sessions accepted by attacker-impostor": (0, 1),
        "sessions accepted by main": (2, 1),
    }
    curves = plots.transaction_curves(events, TOPOLOGY)
    assert curves["started at stations"] == ([10.0, 30.0, 50.0], [1, 2, 3])
    assert curves["started at CSMS"] == ([10.0, 30.0], [1, 2])
    assert curves["ended at CSMS"] == ([20.0], [1])


def test_rare_failure_reasons_are_folded_into_other() -> None:
    events = [
        {"t": float(i), "node": f"S-{i}", "seq": 0, "kind": "handshake_failed", "reason": f"r{i % 10}"}
        for i in range(40)
    ]
    topology = Topology.from_groups({"S": [f"S-{i}" for i in range(40)]})
    _, failed = plots.handshake_buckets(events, 40.0, 40.0, topology)
    assert len(failed.series) == plots.MAX_REASONS + 1
    assert list(failed.series)[-1] == "other"
    assert sum(sum(v) for v in failed.series.values()) == 40


# ------------------------------------------------------------------------------------------------ live display


def test_live_progress_prints_plain_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    with LiveProgress(
        10, 600.0, console=Console(file=out, force_terminal=False), title="demo", plain_every_s=60
    ) as progress:
        assert not progress.interactive
        for t in range(0, 150, 10):
            progress.update(Sample(t=float(t), connected_stations=min(t, 10), messages_total=2 * t))
    lines = out.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == ["t=0.0s", "t=1m00s", "t=2m00s", "t=2m20s"]
    assert lines[1] == (
        "[demo] t=1m00s (10.0%)  connected 10/10  done 0  msgs 120 (2.0/s)  handshakes 0 ok 0 failed"
        "  failures 0  tx 0 started 0 ended  queued 0"
    )
    assert "\x1b" not in out.getvalue()


def test_live_progress_default_interval_and_message_rate_window() -> None:
    out = io.StringIO()
    progress = LiveProgress(1, 86400.0, console=Console(file=out, force_terminal=False), rate_window_s=10)
    assert progress.plain_every_s == 7200
    progress.update(Sample(t=0.0, messages_total=0))
    progress.update(Sample(t=100.0, messages_total=1000))
    progress.update(Sample(t=105.0, messages_total=1000))
    progress.update(Sample(t=110.0, messages_total=1050))
    assert progress.rate == pytest.approx(5.0)
    progress.close()
    assert len(out.getvalue().splitlines()) == 2  # t=0, and the last state on close


def test_live_progress_on_a_terminal_draws_with_rich() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, force_interactive=True, width=120, color_system=None)
    with LiveProgress(10, 3600.0, console=console, title="demo") as progress:
        assert progress.interactive
        progress.update(Sample(t=1800.0, connected_stations=7, messages_total=70, connect_failures=1))
    text = out.getvalue()
    assert "demo" in text and "7/10" in text and "30m00s / 1h00m00s" in text and "50.0%" in text


def test_format_sim_time() -> None:
    assert [format_sim_time(s) for s in (4.25, 750, 7385, 3 * 86400 + 4 * 3600 + 600)] == [
        "4.2s",
        "12m30s",
        "2h03m05s",
        "3d04h10m",
    ]
