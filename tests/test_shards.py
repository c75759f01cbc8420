"""Sharded fleets: the shard arithmetic, the Kubernetes manifest, merging shard run directories, the worker
command lines (sans-IO); then shards and workers against ``evsim csms`` as separate processes (loopback)."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as hst

from evsim.cli import build_parser, main
from evsim.deploy import job_manifest, to_yaml
from evsim.errors import ConfigError
from evsim.metrics.load import round_trip_windows
from evsim.metrics.merge import merge_shards
from evsim.metrics.rundir import RunDir
from evsim.nodes.station_model import station_ids
from evsim.shards import Shard, parse_shard
from evsim.workers import merged_result, shard_argv, worst_status
from tests.processes import EVSIM, start_csms

REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- shard arithmetic


#: Fleet sizes beyond the shard count: small ones, and around 10,000 where the ids get a fifth digit.
EXTRA = hst.one_of(hst.integers(0, 3000), hst.integers(9_900, 10_100))


@given(count=hst.integers(1, 64), extra=EXTRA, prefix=hst.sampled_from(["ST-", "cp", ""]))
def test_shards_cover_every_station_exactly_once(count: int, extra: int, prefix: str) -> None:
    total = count + extra
    slices = [Shard(i, count).ids(prefix, total) for i in range(count)]
    flat = [sid for ids in slices for sid in ids]
    assert flat == list(station_ids(prefix, total))  # in order, none twice, none missing, fleet-wide padding
    sizes = [len(ids) for ids in slices]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1


def test_parse_shard() -> None:
    assert parse_shard("2/5") == Shard(2, 5)
    assert str(Shard(2, 5)) == "2/5"
    for bad in ("5/5", "1", "-1/3", "a/b", "0/0"):
        with pytest.raises(ConfigError):
            parse_shard(bad)


# ---------------------------------------------------------------- the Kubernetes manifest


def _scalar(text: str) -> Any:
    if text.startswith('"'):
        return json.loads(text)
    if text in ("true", "false"):
        return text == "true"
    if text in ("[]", "{}"):
        return [] if text == "[]" else {}
    return int(text)


def _read_yaml(text: str) -> Any:
    """A reader for the block-YAML subset :func:`evsim.deploy.to_yaml` writes (independent of the writer)."""
    lines = [
        (len(line) - len(line.lstrip(" ")), line.strip())
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]

    def block(i: int, indent: int) -> tuple[Any, int]:
        if lines[i][1].startswith("- "):
            items: list[Any] = []
            while i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("- "):
                rest = lines[i][1][2:]
                if ":" in rest and not rest.startswith('"'):  # a mapping starts on the dash's line
                    lines[i] = (indent + 2, rest)
                    value, i = block(i, indent + 2)
                else:
                    value, i = _scalar(rest), i + 1
                items.append(value)
            return items, i
        mapping: dict[str, Any] = {}
        while i < len(lines) and lines[i][0] == indent:
            key, _, rest = lines[i][1].partition(":")
            rest = rest.strip()
            if rest:
                mapping[key], i = _scalar(rest), i + 1
            else:
                mapping[key], i = block(i + 1, lines[i + 1][0])
        return mapping, i

    doc, end = block(0, 0)
    assert end == len(lines)
    return doc


@given(shards=hst.integers(1, 40), extra=hst.integers(0, 2000), profile=hst.sampled_from([2, 3]))
def test_manifest_shards_cover_the_fleet(shards: int, extra: int, profile: int) -> None:
    total = shards + extra
    manifest = job_manifest(
        shards=shards, stations=total, csms="wss://csms.example.com:8443/ocpp", security_profile=profile
    )
    doc = _read_yaml(to_yaml(manifest))
    assert doc == manifest  # what the cluster reads is what was built
    spec = doc["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == shards
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    seen: list[str] = []
    for index in range(spec["completions"]):  # what each pod runs, with its completion index substituted
        argv = [a.replace("$(JOB_COMPLETION_INDEX)", str(index)) for a in container["args"]]
        args = build_parser().parse_args(argv)
        assert args.command == "stations" and args.stations == total and args.security_profile == profile
        seen += args.shard.ids(args.id_prefix, args.stations)
    assert sorted(seen) == sorted(station_ids("ST-", total)) and len(set(seen)) == total
    # the external CSMS through the loopback forwarder sidecar, its name kept for TLS
    assert args.resolve == [("csms.example.com", "127.0.0.1")]
    (sidecar,) = pod["initContainers"]
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["args"][-1] == "TCP:csms.example.com:8443"
    # secrets come from Secrets, never from the manifest
    assert {"name": "pki", "secret": {"secretName": "evsim-stations-pki", "defaultMode": 0o440}} in pod[
        "volumes"
    ]
    assert ("--password" in container["args"]) == (profile == 2)
    assert container["securityContext"]["runAsNonRoot"] and pod["securityContext"]["fsGroup"] == 10001
    assert "BEGIN" not in to_yaml(manifest)


def test_shipped_manifest_is_the_generated_one(capsys: pytest.CaptureFixture[str]) -> None:
    """deploy/k8s/stations-job.yaml is `evsim k8s manifest` with the arguments on its first line."""
    shipped = (REPO / "deploy" / "k8s" / "stations-job.yaml").read_text()
    argv = shipped.splitlines()[0].removeprefix("# evsim ").split()
    assert main(argv) == 0
    assert capsys.readouterr().out == shipped
    assert _read_yaml(shipped)["spec"]["completionMode"] == "Indexed"


def test_manifest_refusals() -> None:
    with pytest.raises(ConfigError, match="shards"):
        job_manifest(shards=5, stations=4, csms="wss://localhost:8443/ocpp")
    with pytest.raises(ConfigError, match="TLS"):
        job_manifest(shards=1, stations=4, csms="ws://localhost:8443/ocpp")
    local = job_manifest(shards=1, stations=4, csms="wss://localhost:8443/ocpp")
    assert "initContainers" not in local["spec"]["template"]["spec"]


# ---------------------------------------------------------------- merging shard run directories


def _shard_dir(
    base: Path,
    index: int,
    count: int,
    ids: list[str],
    *,
    seed: int = 1,
    start: str = "00",
    round_trips: bool = False,
) -> Path:
    import datetime as dt

    started = dt.datetime.fromisoformat(f"2026-01-01T00:00:{start}+00:00")
    rd = RunDir.create(base, f"shard-{index}", started)
    with rd.open_event_sink() as sink:
        for n, sid in enumerate(ids):
            sink.write({"t": 1.0 + n, "node": sid, "seq": n, "kind": "connected"})
        if round_trips:
            # what every shard's recorder writes besides its stations: run-wide nodes
            sink.write({"t": 0.0, "node": "runner", "seq": len(ids), "kind": "run_started"})
            window = {"caller": ids[0], "endpoint": "csms", "start": 0.0, "width": 10.0}
            sink.write(
                {"t": 10.0, "node": "metrics", "seq": len(ids) + 1, "kind": "round_trips", **window}
                | {"histogram": [[0.002, 3]], "max": 0.002, "timeouts": 0}
            )
    rd.write_meta(
        {
            "scenario": "stations",
            "seed": seed,
            "started_utc": started,
            "duration_s": 10.0,
            "outcome": "completed",
            "stations_total": len(ids),
            "fleet": {"stations": 4, "seed": seed},
            "shard": {"index": index, "count": count, "first": ids[0], "last": ids[-1]},
            "topology": {"stations": {"stations": ids}},
        }
    )
    return rd.path


def test_merge_puts_shards_on_one_time_axis(tmp_path: Path) -> None:
    a = _shard_dir(tmp_path / "in", 0, 2, ["ST-0001", "ST-0002"], start="05")
    b = _shard_dir(tmp_path / "in", 1, 2, ["ST-0003", "ST-0004"], start="00")
    merged = merge_shards([a, b], tmp_path / "out")
    events = [json.loads(line) for line in (merged / "events.jsonl").read_text().splitlines()]
    assert [(e["t"], e["node"]) for e in events] == [
        (1.0, "ST-0003"),
        (2.0, "ST-0004"),
        (6.0, "ST-0001"),  # shard 0 started 5 s later
        (7.0, "ST-0002"),
    ]
    meta = json.loads((merged / "meta.json").read_text())
    assert meta["outcome"] == "completed" and meta["stations_total"] == 4 and meta["duration_s"] == 15.0
    assert [(s["index"], s["offset_s"]) for s in meta["shards"]] == [(0, 5.0), (1, 0.0)]
    assert main(["report", str(merged), "--no-plots"]) == 0
    alone = merge_shards([a], tmp_path / "out")  # a missing shard is recorded, not hidden
    assert json.loads((alone / "meta.json").read_text())["outcome"] == "incomplete (shard 1: missing)"


def test_merge_keeps_every_shards_run_wide_events(tmp_path: Path) -> None:
    """Each shard has its own runner and round-trip sums (node ``metrics``): they are no station, so they do not
    make shards overlap, and a round-trip window moves to the merged time axis with its event."""
    a = _shard_dir(tmp_path / "in", 0, 2, ["ST-0001", "ST-0002"], start="05", round_trips=True)
    b = _shard_dir(tmp_path / "in", 1, 2, ["ST-0003", "ST-0004"], start="00", round_trips=True)
    merged = merge_shards([a, b], tmp_path / "out")
    events = [json.loads(line) for line in (merged / "events.jsonl").read_text().splitlines()]
    windows = round_trip_windows(events)
    assert [(w.pair, w.start, w.calls) for w in windows] == [
        ("ST-0003 -> csms", 0.0, 3),
        ("ST-0001 -> csms", 5.0, 3),
    ]
    assert main(["report", str(merged), "--no-plots"]) == 0


def test_merge_refuses_overlapping_or_mismatched_shards(tmp_path: Path) -> None:
    a = _shard_dir(tmp_path / "in", 0, 2, ["ST-0001", "ST-0002"])
    again = _shard_dir(tmp_path / "in", 0, 2, ["ST-0001", "ST-0002"])
    with pytest.raises(ConfigError, match="shard 0 is given twice"):
        merge_shards([a, again], tmp_path / "out")
    overlapping = _shard_dir(tmp_path / "in", 1, 2, ["ST-0002", "ST-0003"])
    with pytest.raises(ConfigError, match="ST-0002 is in"):
        merge_shards([a, overlapping], tmp_path / "out")
    other_seed = _shard_dir(tmp_path / "in", 1, 2, ["ST-0003", "ST-0004"], seed=2)
    with pytest.raises(ConfigError, match="different runs"):
        merge_shards([a, other_seed], tmp_path / "out")
    other_split = _shard_dir(tmp_path / "in", 1, 3, ["ST-0003", "ST-0004"])
    with pytest.raises(ConfigError, match="not one of 2 shards"):
        merge_shards([a, other_split], tmp_path / "out")
    assert main(["report", "--merge", str(a), str(again), "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- workers


def test_worker_command_lines_repeat_the_fleet() -> None:
    argv = [
        "-v",
        "stations",
        "--csms",
        "wss://csms.test:8443/ocpp",
        "--stations",
        "10",
        "--workers",
        "3",
        "--session-duration",
        "1.5",
        "--ocpp-version",
        "2.1",
        "--resolve",
        "csms.test=127.0.0.2",
        "--insecure-skip-verify",
    ]
    parent = build_parser().parse_args(argv)
    child = build_parser().parse_args(shard_argv(parent, Shard(2, 3))[3:])
    assert child.shard == Shard(2, 3) and child.workers == 1 and child.json
    for key in vars(parent):
        if key not in ("shard", "workers", "json"):
            assert getattr(child, key) == getattr(parent, key), key


def test_worst_status_and_merged_result() -> None:
    assert worst_status([0, 0]) == 0
    assert worst_status([0, 1]) == 1
    assert worst_status([1, 2, 0]) == 2
    assert worst_status([130, 2]) == 130
    doc = merged_result([{"ok": True, "stations": 2, "booted": 2, "completed": 2}, None], 2)
    assert doc["ok"] is False and doc["stations"] == 2
    assert doc["workers"][1] == {"shard": "1/2", "ok": False}


# ---------------------------------------------------------------- loopback: separate processes


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    assert main(["certs", "init", "--pki", str(d), "--if-missing"]) == 0
    return d


def _fleet(port: str, pki: Path, out: Path, *, stations: int = 5, duration: int = 40) -> list[str]:
    return [
        *EVSIM,
        "stations",
        "--csms",
        f"wss://localhost:{port}/ocpp",
        "--stations",
        str(stations),
        "--ca",
        str(pki / "ca.crt"),
        "--session-duration",
        "1",
        "--meter-interval",
        "1",
        "--duration",
        str(duration),
        "--out",
        str(out),
        "--json",
        "-q",
    ]


@pytest.mark.loopback
@pytest.mark.slow
async def test_shards_and_workers_against_one_csms(pki_dir: Path, tmp_path: Path) -> None:
    results: dict[str, subprocess.CompletedProcess[bytes]] = {}

    async def run(name: str, argv: list[str]) -> None:
        results[name] = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            csms, port = await start_csms(
                nursery, ["--listen", "127.0.0.1:0", "--pki", str(pki_dir), "--duration", "100", "-q"]
            )
            async with trio.open_nursery() as fleet:
                for i in range(3):
                    fleet.start_soon(
                        run, f"shard{i}", [*_fleet(port, pki_dir, tmp_path / "shards"), "--shard", f"{i}/3"]
                    )
                fleet.start_soon(
                    run, "workers", [*_fleet(port, pki_dir, tmp_path / "workers"), "--workers", "2"]
                )
            csms.terminate()
            nursery.cancel_scope.cancel()
    for name, result in results.items():
        assert result.returncode == 0, (name, result.stdout, result.stderr)
    shards = [json.loads(results[f"shard{i}"].stdout) for i in range(3)]
    assert [(s["shard"]["first"], s["shard"]["last"]) for s in shards] == [
        ("ST-0001", "ST-0001"),
        ("ST-0002", "ST-0003"),
        ("ST-0004", "ST-0005"),
    ]
    out = tmp_path / "merged"
    dirs = [s["run_directory"] for s in shards]
    assert main(["report", "--merge", *dirs, "--out", str(out), "--no-plots", "--json"]) == 0
    (merged,) = out.iterdir()
    meta = json.loads((merged / "meta.json").read_text())
    assert meta["outcome"] == "completed" and meta["stations_total"] == 5
    booted = {json.loads(line)["node"] for line in (merged / "events.jsonl").read_text().splitlines()}
    assert booted == set(station_ids("ST-", 5))
    workers = json.loads(results["workers"].stdout)
    assert workers["ok"] and workers["completed"] == 5
    assert [row["station"] for row in workers["table"]["rows"]] == list(station_ids("ST-", 5))
    assert json.loads((Path(workers["run_directory"]) / "meta.json").read_text())["outcome"] == "completed"


@pytest.mark.loopback
@pytest.mark.slow
@pytest.mark.parametrize("when", ["starting", "running"])
async def test_one_ctrl_c_stops_every_worker(pki_dir: Path, tmp_path: Path, when: str) -> None:
    """SIGINT to the parent only (the terminal's group): each worker gets one, stops cleanly and reports, also
    when it arrives while the workers are still loading (they hold it until their run can stop cleanly)."""
    argv = [*_fleet("9", pki_dir, tmp_path / "runs", stations=4, duration=90), "--workers", "2"]
    argv.remove("-q")  # the connection_lost lines say both workers are running
    with trio.fail_after(60):
        proc = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None and proc.stderr is not None
        err = bytearray()
        ready = [b"workers started"]
        if when == "running":
            ready += [b"ST-0001 connection_lost", b"ST-0003 connection_lost"]
        while not all(line in err for line in ready):
            chunk = await proc.stderr.receive_some()
            assert chunk, err
            err += chunk
        proc.send_signal(signal.SIGINT)
        out = bytearray()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_read_all, proc.stderr, err)
            await _read_all(proc.stdout, out)
            await proc.wait()
    assert proc.returncode == 130
    assert err.rstrip().endswith(b"evsim: interrupted")
    doc = json.loads(out)
    assert [w["shard"]["index"] for w in doc["workers"]] == [0, 1] and doc["stations"] == 4
    merged = json.loads((Path(doc["run_directory"]) / "meta.json").read_text())
    assert merged["outcome"] == "incomplete (shard 0: interrupted; shard 1: interrupted)"


async def _read_all(stream: trio.abc.ReceiveStream, into: bytearray) -> None:
    while chunk := await stream.receive_some():
        into += chunk


@pytest.mark.loopback
@pytest.mark.slow
async def test_resolve_reaches_a_named_csms_through_loopback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--resolve: the URL keeps the CSMS's name (TLS checks it) and the connection goes to a loopback address."""
    pki = tmp_path / "pki"
    assert main(["certs", "init", "--pki", str(pki), "--host", "csms.test"]) == 0
    url_args = ["--stations", "1", "--ca", str(pki / "ca.crt"), "--session-duration", "1", "--json", "-q"]
    assert main(["stations", "--csms", "wss://csms.test:9/ocpp", *url_args]) == 2
    assert "--resolve csms.test=127.0.0.1" in capsys.readouterr().err
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            csms, port = await start_csms(nursery, ["--listen", "127.0.0.1:0", "--pki", str(pki), "-q"])
            named = ["stations", "--csms", f"wss://csms.test:{port}/ocpp", *url_args, "--duration", "30"]
            result = await trio.run_process(
                [*EVSIM, *named, "--resolve", "csms.test=127.0.0.1"], capture_stdout=True, check=False
            )
            # the same CSMS as localhost: its certificate names csms.test only, so TLS refuses it
            at_localhost = [
                "stations",
                "--csms",
                f"wss://localhost:{port}/ocpp",
                *url_args,
                "--duration",
                "3",
            ]
            wrong = await trio.run_process(
                [*EVSIM, *at_localhost], capture_stdout=True, capture_stderr=True, check=False
            )
            csms.terminate()
            nursery.cancel_scope.cancel()
    assert result.returncode == 0 and json.loads(result.stdout)["completed"] == 1
    assert wrong.returncode == 1 and json.loads(wrong.stdout)["booted"] == 0
    assert b"handshake_failed" in wrong.stderr
