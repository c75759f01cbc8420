"""A scenario run as shards (``evsim run FILE --shard I/N``, ``--workers K``): the slices and the timeline
filter (sans-IO), what sharding refuses, a station's events in a 2-shard run against the unsharded run of the
same seed (in memory), merging the shards' run directories, and ``--workers 2`` as child processes."""

from __future__ import annotations

import collections
import json
import signal
import subprocess
from pathlib import Path

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as hst

from evsim.cli import main
from evsim.errors import ConfigError
from evsim.metrics.canonical import canonical_log
from evsim.metrics.merge import merge_shards
from evsim.metrics.merge_scenario import REPLICATED
from evsim.metrics.rundir import load, summary_of
from evsim.scenario.loader import load_scenario
from evsim.scenario.model import Scenario
from evsim.scenario.runner import preflight, run_scenario
from evsim.scenario.shard import ShardPlan, shard_errors, station_refs
from evsim.shards import Shard
from tests.processes import EVSIM

REPO = Path(__file__).resolve().parent.parent

#: Boot, heartbeats, sessions with meter values, one station stopped and started again, and a certificate
#: renewal triggered on a group with a spread (offsets drawn per station): every station's events must not
#: depend on which shard runs it.
TINY = """
[simulation]
description = "a tiny shardable run: boot, heartbeats, sessions with meter values"
seed = 11
duration = "2h"

[csms.main]
heartbeat_interval = "300s"

[stations.fleet]
count = 5
id_pattern = "T-{n:03d}"
csms = "main"
sessions = 2
session_duration = "20m"
meter_interval = "60s"

[stations.small]
count = 2
csms = "main"
sessions = 1
session_duration = "10m"

[[timeline]]
at = "30m"
action = "stop"
target = "T-002"

[[timeline]]
at = "40m"
action = "start"
target = "T-002"

[[timeline]]
at = "50m"
action = "trigger_renewal"
target = "fleet"
spread = "10m"
"""


def _tiny(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY + extra)
    return path


# ---------------------------------------------------------------- slices (sans-IO)


@given(
    counts=hst.lists(hst.integers(1, 40), min_size=1, max_size=4),
    shards=hst.integers(1, 8),
)
def test_slices_cover_every_station_exactly_once(counts: list[int], shards: int) -> None:
    groups = "".join(
        f'[stations.g{i}]\ncount = {n}\ncsms = "main"\n' + (f'id_pattern = "G{i}-{{n}}"\n' if i % 2 else "")
        for i, n in enumerate(counts)
    )
    sc = Scenario.from_toml(f'[simulation]\nseed = 1\nduration = "1m"\n[csms.main]\n{groups}')
    plans = [ShardPlan.of(sc, Shard(i, shards)) for i in range(shards)]
    for name, group in sc.stations.items():
        ids = [sid for plan in plans for sid in plan.ids[name]]
        assert ids == group.station_ids()  # in order, none twice, none missing, the unsharded run's names
    every = [sid for plan in plans for sid in sorted(plan.members)]
    assert sorted(every) == sorted(sc.station_ids())


def test_station_events_run_only_in_their_shard(tmp_path: Path) -> None:
    sc = load_scenario(_tiny(tmp_path))
    first, second = (ShardPlan.of(sc, Shard(i, 2)) for i in range(2))
    assert first.ids == {"fleet": ["T-001", "T-002"], "small": ["small-0001"]}
    stop = sc.timeline[0].action
    assert station_refs(sc, stop.fields().values()) == {"T-002"}
    assert first.runs({"T-002"}) and not second.runs({"T-002"})
    renewal = sc.timeline[2].action
    assert station_refs(sc, renewal.fields().values()) == set()  # a group: every shard, on its members
    assert first.runs(set()) and second.runs(set())
    assert first.as_json()["groups"]["fleet"] == {"numbers": [1, 2], "ids": ["T-001", "T-002"]}


# ---------------------------------------------------------------- refusals


def _errors(tmp_path: Path, extra: str, head: str = "") -> list[ConfigError]:
    path = tmp_path / "x.toml"
    path.write_text(head + TINY + extra)
    return shard_errors(load_scenario(path), 2)


@pytest.mark.parametrize(
    ("extra", "path", "why"),
    [
        ('[csms.main.cpu]\ncores = 1\nprofile = "reference"\n', "cpu", "CPU model"),
        (
            '[stations.other]\ncount = 4\ncsms = "main"\nconnect_window = 2\n',
            "stations.other.connect_window",
            "connect window",
        ),
        ("[csms.ca]\nsigning = { max_concurrent = 2 }\n", "csms.ca.signing", "signing limit"),
        (
            '[[timeline]]\nat = "1h"\naction = "degrade_ca"\ntarget = "main"\ndelay = "1s"\n',
            "timeline[3].action",
            "CA's delay",
        ),
        (
            '[[timeline]]\nat = "1h"\naction = "attack_downgrade"\ntarget = "main"\n',
            "timeline[3].action",
            "once per shard",
        ),
        (
            '[[timeline]]\nat = "1h"\naction = "partition"\nbetween = ["T-001", "T-005"]\n',
            "timeline[3]",
            "different shards",
        ),
        (
            '[[links]]\nbetween = ["T-001", "T-005"]\nlatency = "10ms"\n',
            "links[0].between",
            "different shards",
        ),
    ],
)
def test_sharding_refuses_what_it_would_change(tmp_path: Path, extra: str, path: str, why: str) -> None:
    errors = _errors(tmp_path, extra)
    assert [e.path for e in errors] == [path]
    assert why in errors[0].message and "cannot run as shards" in errors[0].message and errors[0].fix
    assert errors[0].file is not None and errors[0].file.endswith("x.toml")
    sc = load_scenario(tmp_path / "x.toml")
    preflight(sc)  # unsharded, the same file runs
    with pytest.raises(ConfigError, match="cannot run as shards"):
        preflight(sc, Shard(0, 2))


def test_sharding_refuses_a_controller_whose_upstream_fails(tmp_path: Path) -> None:
    extra = (
        '[controllers.lc]\nupstream = [{ csms = "main" }]\n[stations.behind]\ncount = 2\nendpoints = [{ controller = "lc" }]\n'
        '[[timeline]]\nat = "1h"\naction = "stop"\ntarget = "main"\n'
    )
    assert [e.path for e in _errors(tmp_path, extra)] == ["timeline[3].action"]


def test_sharding_refuses_more_shards_than_stations(tmp_path: Path) -> None:
    sc = load_scenario(_tiny(tmp_path))
    assert shard_errors(sc, 7) == []
    assert [e.path for e in shard_errors(sc, 8)] == ["--shard"]


def test_the_benchmark_and_the_default_scenario_shard() -> None:
    for path in (REPO / "bench/scenarios/day_1000.toml", REPO / "scenarios/default.toml"):
        assert shard_errors(load_scenario(path), 4) == [], path


# ---------------------------------------------------------------- a station's events, sharded or not (in memory)


def _per_station(sc: Scenario, shard: Shard | None) -> dict[str, list[str]]:
    result = run_scenario(sc, keep_events=None, shard=shard)
    assert result.ok, result.error
    out: dict[str, list[str]] = collections.defaultdict(list)
    for line in canonical_log(list(result.recorder.events)):
        out[line.split(" ", 2)[1]].append(line)
    return {sid: out[sid] for sid in result.stations}


def test_a_station_behaves_the_same_in_any_shard(tmp_path: Path) -> None:
    sc = load_scenario(_tiny(tmp_path))
    whole = _per_station(sc, None)
    shards = [_per_station(sc, Shard(i, 2)) for i in range(2)]
    assert sorted(sid for s in shards for sid in s) == sorted(sc.station_ids())
    for shard in shards:
        for sid, lines in shard.items():
            assert lines == whole[sid], sid
    # the run did what the scenario says: the renewal's spread offsets are drawn over the whole group
    assert all(any(" csr_sent " in line for line in whole[sid]) for sid in sc.stations["fleet"].station_ids())


# ---------------------------------------------------------------- merging the shards' run directories


def _run_shard(file: Path, shard: str, out: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    assert (
        main(["run", str(file), "--shard", shard, "--out", str(out), "--no-live", "--no-plots", "--json"])
        == 0
    )
    return Path(json.loads(capsys.readouterr().out)["run_directory"])


def test_merge_of_scenario_shards(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = _tiny(tmp_path)
    a, b = (_run_shard(file, f"{i}/2", tmp_path / "runs", capsys) for i in range(2))
    meta_a = json.loads((a / "meta.json").read_text())
    assert meta_a["shard"]["index"] == 0 and meta_a["shard"]["count"] == 2
    assert meta_a["shard"]["groups"]["fleet"]["ids"] == ["T-001", "T-002"]
    assert meta_a["scenario_run"]["seed"] == 11 and meta_a["scenario_run"]["duration_s"] == 7200.0
    merged = merge_shards([b, a], tmp_path / "out")
    meta = json.loads((merged / "meta.json").read_text())
    assert meta["outcome"] == "completed" and meta["stations_total"] == 7 and meta["servers"] == REPLICATED
    assert [s["index"] for s in meta["shards"]] == [0, 1] and meta["shards_missing"] == []
    assert sorted(meta["ocpp_messages"]) == sorted(load_scenario(file).station_ids())
    events = [json.loads(line) for line in (merged / "events.jsonl").read_text().splitlines()]
    shard_events = [
        json.loads(line) for d in (a, b) for line in (d / "events.jsonl").read_text().splitlines()
    ]
    # every event at its own time (one time axis, no shift); the group's renewal, played by both shards, once
    renewal = (3000.0, "timeline", "trigger_renewal")
    assert [(e["t"], e["node"], e["kind"]) for e in shard_events].count(renewal) == 2
    assert sorted((e["t"], e["node"], e["kind"]) for e in events) == sorted(
        [(e["t"], e["node"], e["kind"]) for e in shard_events if (e["t"], e["node"], e["kind"]) != renewal]
        + [renewal]
    )
    assert main(["report", str(merged), "--no-plots"]) == 0
    alone = merge_shards([a], tmp_path / "out")
    assert json.loads((alone / "meta.json").read_text())["outcome"] == "incomplete (shard 1: missing)"


def test_a_merged_run_reports_what_the_unsharded_run_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every figure of a merged run is recomputed from its own events.jsonl and meta.json, and every table
    equals the unsharded run's (only the header's wall time differs)."""
    file = _tiny(tmp_path)
    shards = [_run_shard(file, f"{i}/2", tmp_path / "runs", capsys) for i in range(2)]
    assert (
        main(["run", str(file), "--out", str(tmp_path / "whole"), "--no-live", "--no-plots", "--json"]) == 0
    )
    whole = Path(json.loads(capsys.readouterr().out)["run_directory"])
    merged = merge_shards(shards, tmp_path / "out")
    assert main(["report", str(merged), "--no-plots"]) == 0
    capsys.readouterr()
    text = (merged / "summary.txt").read_text()
    recomputed = summary_of(load(merged))
    assert len(recomputed.tables) > 15 and any(
        t.title.startswith("Certificate renewal") for t in recomputed.tables
    )
    assert recomputed.render(header="x") == "x" + text[text.index("\n") :].rstrip("\n")
    tables, unsharded = (t.split("\n", 1) for t in (text, (whole / "summary.txt").read_text()))
    assert tables[1] == unsharded[1]
    assert (
        tables[0].split(", wall ")[0]
        == unsharded[0].split(", wall ")[0]
        == "scenario tiny, seed 11, simulated 2h"
    )


def test_merge_refuses_scenario_shards_that_do_not_belong_together(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = _tiny(tmp_path)
    a = _run_shard(file, "0/2", tmp_path / "runs", capsys)
    with pytest.raises(ConfigError, match="shard 0 is given twice"):
        merge_shards([a, _run_shard(file, "0/2", tmp_path / "runs", capsys)], tmp_path / "out")
    with pytest.raises(ConfigError, match="not one of 2 shards"):
        merge_shards([a, _run_shard(file, "1/3", tmp_path / "runs", capsys)], tmp_path / "out")
    other = tmp_path / "other" / "tiny.toml"
    other.parent.mkdir()
    other.write_text(TINY.replace('duration = "2h"', 'duration = "1h"'))
    with pytest.raises(ConfigError, match="different scenario runs"):
        merge_shards([a, _run_shard(other, "1/2", tmp_path / "runs", capsys)], tmp_path / "out")
    overlapping = json.loads((a / "meta.json").read_text())
    overlapping["shard"]["index"] = 1
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "events.jsonl").write_text((a / "events.jsonl").read_text())
    (copy / "meta.json").write_text(json.dumps(overlapping))
    with pytest.raises(ConfigError, match="station T-001 is in"):
        merge_shards([a, copy], tmp_path / "out")


# ---------------------------------------------------------------- evsim run --workers 2 (child processes)


def test_run_workers_merges_the_shards(tmp_path: Path) -> None:
    file = _tiny(tmp_path)
    argv = [
        *EVSIM,
        "run",
        str(file),
        "--workers",
        "2",
        "--out",
        str(tmp_path / "runs"),
        "--no-plots",
        "--json",
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=REPO, check=False)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert len(doc["shards"]) == 2
    meta = json.loads((Path(doc["run_directory"]) / "meta.json").read_text())
    assert meta["servers"] == REPLICATED and meta["stations_total"] == 7
    assert [s["index"] for s in meta["shards"]] == [0, 1]
    assert doc["summary"]["run"]["outcome"] == "completed"
    refused = subprocess.run(
        [*EVSIM, "run", str(file), "--workers", "2", "--pcap", str(tmp_path / "x.pcapng")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        check=False,
    )
    assert refused.returncode == 2 and "--pcap needs the whole run in one process" in refused.stderr


@pytest.mark.slow
async def test_one_ctrl_c_stops_every_scenario_worker(tmp_path: Path) -> None:
    """SIGINT to the parent only: each shard stops, writes its run directory and reports; the merged run says
    it is incomplete (an interrupted run never passes for a complete one) and the exit status is 130."""
    file = tmp_path / "long.toml"
    file.write_text(TINY.replace('duration = "2h"', 'duration = "30d"'))
    argv = [
        *EVSIM,
        "run",
        str(file),
        "--workers",
        "2",
        "--out",
        str(tmp_path / "runs"),
        "--no-plots",
        "--json",
    ]
    proc = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        with trio.fail_after(120):
            err = bytearray()
            while b"workers started" not in err:
                chunk = await proc.stderr.receive_some()
                assert chunk, err
                err += chunk
            proc.send_signal(signal.SIGINT)
            out = bytearray()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_read_all, proc.stderr, err)
                await _read_all(proc.stdout, out)
                await proc.wait()
    finally:
        if proc.returncode is None:  # the parent passes its SIGINT on to its workers
            proc.send_signal(signal.SIGINT)
            with trio.move_on_after(60):
                await proc.wait()
    assert proc.returncode == 130, err
    meta = json.loads((Path(json.loads(out)["run_directory"]) / "meta.json").read_text())
    assert meta["outcome"] == "incomplete (shard 0: interrupted; shard 1: interrupted)"


async def _read_all(stream: trio.abc.ReceiveStream, into: bytearray) -> None:
    while chunk := await stream.receive_some():
        into += chunk
