"""HTTPS file servers in scenarios: the tables that declare them, the update_firmware / get_log actions, the
shipped firmware_rollout and log_collection scenarios (a small variant fast, the shipped size slow), and their
report tables recomputed from events.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evsim.cli import main
from evsim.errors import ConfigError
from evsim.metrics.summary import summarize
from evsim.metrics.transfers import transfer_tables
from evsim.scenario.loader import load_scenario, loads_scenario
from evsim.scenario.runner import RunResult, preflight, run_scenario

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
BASE = """
[simulation]
duration = "10m"
[csms.main]
[stations.fleet]
count = 2
sessions = 0
[firmware.v2]
version = "2.0.0"
size = 1000
[file_servers.a]
firmware = ["v2"]
[file_servers.b]
tampered = ["v2"]
accept_uploads = true
[file_services.fw]
stations = ["fleet"]
mirrors = [{ server = "a" }, { server = "b", priority = 5, client_certificate = true }]
"""


def test_the_file_tables_and_actions_load() -> None:
    text = BASE + (
        '[[timeline]]\nat = "1m"\naction = "update_firmware"\ntarget = "fleet"\nfirmware = "v2"\n'
        'service = "fw"\nspread = "30s"\nretries = 1\nretry_interval = "1m"\n'
        '[[timeline]]\nat = "2m"\naction = "get_log"\ntarget = "main"\nservice = "fw"\nlog_type = "SecurityLog"\n'
        '[[timeline]]\nat = "3m"\naction = "stop"\ntarget = "a"\n'
    )
    sc = loads_scenario(text)
    assert sc.firmware["v2"].version == "2.0.0" and sc.file_servers["b"].tampered == ("v2",)
    assert [(m.server, m.priority, m.client_certificate) for m in sc.file_services["fw"].mirrors] == [
        ("a", 0, False),
        ("b", 5, True),
    ]
    update, logs, stop = (dict(e.params) for e in sc.timeline)
    assert update == {
        "target": "fleet",
        "firmware": "v2",
        "version": "2.0.0",
        "service": "fw",
        "spread": 30.0,
        "retries": 1,
        "retry_interval": 60,
    }
    assert logs["log_type"] == "SecurityLog" and stop == {"target": "a"}


@pytest.mark.parametrize(
    ("change", "path", "message"),
    [
        (('server = "b"', 'server = "c"'), "file_services.fw.mirrors[1].server", "undefined file server"),
        (('tampered = ["v2"]', 'tampered = ["v3"]'), "file_servers.b.tampered[0]", "unknown value"),
        (('tampered = ["v2"]', 'tampered = ["v2"]\nfirmware = ["v2"]'), "file_servers.b.tampered", "either"),
        (('stations = ["fleet"]', 'stations = ["north"]'), "file_services.fw.stations[0]", "unknown value"),
        (('version = "2.0.0"', 'version = "2.0 beta"'), "firmware.v2.version", "letters"),
        (("[file_servers.a]", "[file_servers.main]"), "file_servers.main", "another node"),
        (('{ server = "a" }, ', ""), "", ""),  # one mirror is enough
    ],
)
def test_file_tables_refuse_what_they_cannot_run(change: tuple[str, str], path: str, message: str) -> None:
    text = BASE.replace(*change)
    if not path:
        loads_scenario(text)
        return
    with pytest.raises(ConfigError, match=message) as caught:
        loads_scenario(text)
    assert caught.value.path == path


def test_update_firmware_names_a_declared_release_and_service() -> None:
    entry = '[[timeline]]\nat = "1m"\naction = "update_firmware"\ntarget = "fleet"\n'
    with pytest.raises(ConfigError, match="undefined firmware 'v3'"):
        loads_scenario(BASE + entry + 'firmware = "v3"\nservice = "fw"\n')
    with pytest.raises(ConfigError, match="undefined file service"):
        loads_scenario(BASE + entry + 'firmware = "v2"\nservice = "logs"\n')
    with pytest.raises(ConfigError, match="whole seconds"):
        loads_scenario(BASE + entry + 'firmware = "v2"\nservice = "fw"\nretry_interval = "2d"\n')


def _small(name: str, replacements: dict[str, str], tmp_path: Path) -> Path:
    text = (SCENARIOS / f"{name}.toml").read_text()
    for old, new in replacements.items():
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


SMALL_ROLLOUT = {
    "count = 800": "count = 40",
    "count = 200": "count = 10",
    'spread = "10m"': 'spread = "1m"',
    'at = "5m"': 'at = "90s"',
}
"""firmware_rollout with 50 stations over 1 min; mirror-a still dies in the middle (at 90 s)."""


def _assert_rollout_outcome(r: RunResult, new: int, tampered: int, stopped_at: float) -> None:
    """Every station ends on the new version (Installed) or reports InvalidSignature and keeps the old one;
    none is left without firmware or offline."""
    assert r.ok and r.world is not None
    last: dict[str, str] = {}
    link: dict[str, str] = {}  # the station's last booted / connection_lost
    for e in r.recorder.events:
        if e.kind == "firmware_status":
            last[e.node] = e.data["status"]
        elif e.kind in ("booted", "connection_lost") and e.node in r.stations:
            link[e.node] = e.kind
    ends = {"Installed": 0, "InvalidSignature": 0}
    for sid, station in r.stations.items():
        status = last.get(sid)
        assert (status, station.firmware.version) in (
            ("Installed", "2.0.0"),
            ("InvalidSignature", "0.1.0"),
        ), sid
        assert link[sid] == "booted", f"{sid} is offline at the end: bricked"
        assert status is not None
        ends[status] += 1
    assert ends == {"Installed": new, "InvalidSignature": tampered}
    served = {e.data["endpoint"] for e in r.recorder.events if e.kind == "transfer_done"}
    assert served == {"mirror-a", "mirror-b", "mirror-c"}
    assert all(
        e.t < stopped_at + 1 for e in r.recorder.events if e.kind == "file_served" and e.node == "mirror-a"
    )


def test_small_firmware_rollout_and_its_tables_are_recomputable_from_events_jsonl(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _small("firmware_rollout", SMALL_ROLLOUT, tmp_path)
    _assert_rollout_outcome(run_scenario(load_scenario(path)), new=40, tampered=10, stopped_at=90.0)
    out = tmp_path / "runs"
    assert main(["run", str(path), "--out", str(out), "--no-live", "--no-plots"]) == 0
    printed = capsys.readouterr().out
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    recomputed = summarize(events)
    for title in ("Firmware rollout", "File transfers by mirror", "File transfer failures"):
        table = recomputed.table(title)
        assert table.rows and table.render() in printed, title
        assert table.render() in (run_dir / "summary.txt").read_text()
    (north, south) = recomputed.table("Firmware rollout").rows
    assert north[:5] == (1, 40, 40, 0, 0) and south[:5] == (2, 10, 0, 10, 0)
    assert all(cell != "-" for cell in north[5:])
    by_mirror = {
        row[1]: [str(cell) for cell in row] for row in recomputed.table("File transfers by mirror").rows
    }
    assert (
        by_mirror["mirror-b"][3] == "10" and int(by_mirror["mirror-a"][6]) > 0
    )  # failed attempts once it died
    assert float(by_mirror["mirror-c"][5]) < float(by_mirror["mirror-b"][5])  # the slow mirror shows
    failures = {(row[0], row[1]): row[2] for row in recomputed.table("File transfer failures").rows}
    assert failures[("firmware status", "InvalidSignature")] == 10
    assert transfer_tables([e for e in events if e["kind"] != "transfer_done"])  # no crash on partial logs
    # the stations' reboots to install are not links the mirror's death cost
    (stop,) = [row for row in recomputed.table("Recovery after outages").rows if row[1] == "stop"]
    assert stop[2:] == ("mirror-a", 50, 0, "-", "-", "-", "-")


@pytest.mark.slow
def test_firmware_rollout_of_1000_stations() -> None:
    _assert_rollout_outcome(run_scenario(load_scenario(SCENARIOS / "firmware_rollout.toml")), 800, 200, 300.0)


def test_log_collection_uploads_every_log_through_mutual_tls() -> None:
    r = run_scenario(load_scenario(SCENARIOS / "log_collection.toml"))
    assert r.ok and r.world is not None
    summary = r.world.summary()
    ((_request, stations, uploaded, failed, *_),) = summary.table("Log collection").rows
    assert (stations, uploaded, failed) == (50, 50, 0)
    uploads = [u for node in r.world.file_servers.values() for u in node.server.uploads]
    assert sorted(u.path for u in uploads) == sorted(f"/logs/{sid}" for sid in r.stations)
    assert all(u.client == u.path.rsplit("/", 1)[1] for u in uploads)  # each station's own certificate
    by_mirror = {row[1]: row[3] for row in summary.table("File transfers by mirror").rows}
    assert by_mirror["logs-a"] > 0 and by_mirror["logs-b"] > 0  # the primary took some before it died


def test_link_bandwidth_runs_and_jitter_is_still_refused() -> None:
    links = '[[links]]\nbetween = ["fleet", "a"]\nbandwidth = "1MB/s"\n'
    event = '[[timeline]]\nat = "1m"\naction = "link"\nbetween = ["fleet", "a"]\nbandwidth = "10Mbit"\n'
    sc = loads_scenario(BASE + links + event)
    preflight(sc)  # no longer refused
    assert sc.links[0].bandwidth == 8e6 and dict(sc.timeline[0].params)["bandwidth"] == 10e6
    with pytest.raises(ConfigError, match="jitter"):
        preflight(loads_scenario(BASE + links + 'jitter = "5ms"\n'))
