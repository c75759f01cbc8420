"""The ``evsim`` flags behave alike on every command: durations with units, -q/-v after the command, one name
per concept, every validation error at once, TLS profiles with the scenario keys, fixed ports on TCP."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest
import trio

from evsim.cli import STATIONS_GIVE_UP_S, build_parser, main

EVSIM = [sys.executable, "-m", "evsim"]

BROKEN = """\
[simulation]
duration = "1h"
seeed = 3

[csms.main]
security_profile = 7

[stations.fleet]
count = -1
csms = "main"

[[timeline]]
at = "2h"
action = "stop"
target = "main"
"""


def test_validate_reports_every_error_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(BROKEN)
    good = Path(__file__).resolve().parent.parent / "scenarios" / "default.toml"
    assert main(["validate", str(bad), str(good)]) == 2
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.startswith("evsim: ")]
    assert [line.split(": ")[2] for line in lines] == [
        "simulation.seeed",
        "csms.main.security_profile",
        "stations.fleet.count",
        "timeline[0].at",
    ]
    assert [line.split(":")[2] for line in lines] == ["3", "6", "9", "13"]  # lines of the original file
    assert f"{bad}: 4 errors" in err and "default.toml: ok" in out

    assert main(["validate", "--json", str(bad), str(good)]) == 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False
    first, second = doc["files"]
    assert [(e["line"], e["path"]) for e in first["errors"]] == [
        (3, "simulation.seeed"),
        (6, "csms.main.security_profile"),
        (9, "stations.fleet.count"),
        (13, "timeline[0].at"),
    ]
    assert first["errors"][0]["fix"] == "did you mean 'seed'?"
    assert second["ok"] and second["errors"] == [] and second["scenario"]["stations"] == 10


def test_validate_stops_where_later_errors_could_be_consequences(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    # a missing required key cannot be deleted: what would follow might only be its consequences
    bad.write_text("[simulation]\nseed = 1\n\n[csms.main]\nsecurity_profile = 9\n")
    assert main(["validate", "--json", str(bad)]) == 2
    (entry,) = json.loads(capsys.readouterr().out)["files"]
    assert [e["path"] for e in entry["errors"]] == ["simulation.duration"]
    syntax = tmp_path / "syntax.toml"
    syntax.write_text("[simulation\n")
    assert main(["validate", str(syntax)]) == 2
    assert "TOML syntax error" in capsys.readouterr().err


def test_durations_take_units_like_scenario_files() -> None:
    parser = build_parser()
    args = parser.parse_args(
        ["stations", "--csms", "wss://localhost:1/ocpp", "--duration", "1h", "--session-duration", "5m"]
    )
    assert (args.duration, args.session_duration, args.meter_interval) == (3600.0, 300.0, 5.0)
    assert parser.parse_args(["stations", "--csms", "x", "--duration", "90"]).duration == 90.0
    assert parser.parse_args(["csms", "--duration", "1h30m"]).duration == 5400.0
    assert parser.parse_args(["csms", "--heartbeat-interval", "2m"]).heartbeat_interval == 120
    assert parser.parse_args(["stations", "--csms", "x"]).duration == STATIONS_GIVE_UP_S  # gives up


@pytest.mark.parametrize(
    "argv",
    [
        ["stations", "--csms", "x", "--duration", "1 hour"],
        ["stations", "--csms", "x", "--duration", "0s"],
        ["csms", "--heartbeat-interval", "1.5s"],
    ],
)
def test_bad_durations_are_refused_with_the_syntax(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and ("30s" in err or "longer than 0s" in err or "whole number" in err)


def test_global_flags_after_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    for argv in (
        ["-v", "run", "x.toml"],
        ["run", "x.toml", "-v"],
        ["validate", "x.toml", "-v"],
        ["tls", "capabilities", "-v"],
        ["certs", "init", "-v"],
    ):
        assert parser.parse_args(argv).verbose == 1, argv
    assert parser.parse_args(["-v", "report", "d", "-vv", "-q"]).verbose == 2  # after the command wins
    assert main(["tls", "capabilities", "-q", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["versions"]


def test_one_name_per_concept_with_hidden_old_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = build_parser()
    assert parser.parse_args(["stations", "--csms", "x", "--stations", "7"]).stations == 7
    assert parser.parse_args(["stations", "--csms", "x", "--count", "7"]).stations == 7  # older name
    assert parser.parse_args(["certs", "init", "--pki", "d"]).pki == "d"
    assert parser.parse_args(["certs", "init", "--dir", "d"]).pki == "d"  # older name
    for argv, flag, old in (
        (["stations", "--help"], "--stations", "--count"),
        (["certs", "init", "--help"], "--pki", "--dir"),
    ):
        with pytest.raises(SystemExit):
            main(argv)
        text = capsys.readouterr().out
        assert flag in text and old not in text
    # every command that takes a PKI directory calls it --pki, every number of stations --stations
    sub = next(a for a in parser._actions if a.dest == "command").choices
    assert isinstance(sub, dict)
    flags = {name: {s for a in p._actions for s in a.option_strings} for name, p in sub.items()}
    for name in ("csms", "stations", "demo"):
        assert "--pki" in flags[name], name
    assert "--stations" in flags["stations"] and "--stations" in flags["demo"]
    assert {"--json"} <= flags["run"] & flags["report"] & flags["validate"] & flags["stations"]


def test_cli_errors_suggest_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stations", "--csms", "wss://csms.example.com/ocpp", "--ca", "x"]) == 2
    err = capsys.readouterr().err
    assert "--csms" in err and "localhost" in err and "resolve=" not in err
    assert main(["demo", "--pki", str(tmp_path / "none")]) == 1
    err = capsys.readouterr().err
    assert "evsim certs init --pki" in err and "DevPki" not in err


def test_tls_capabilities_profile_takes_scenario_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one = tmp_path / "one.toml"
    one.write_text('versions = ["1.3"]\nhandshake_timeout = "5s"\ngroups = ["X25519"]\n')
    assert main(["tls", "capabilities", "--profile", str(one), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["versions"] == ["1.3"] and data["groups"] == ["X25519"]
    old = tmp_path / "old.toml"
    old.write_text("handshake_timeout_s = 5\n")  # the engine's own key, not the scenario's
    assert main(["tls", "capabilities", "--profile", str(old)]) == 2
    assert "handshake_timeout" in capsys.readouterr().err
    scenario = tmp_path / "sc.toml"
    scenario.write_text(
        '[simulation]\nduration = "1h"\n[tls.profiles.a]\nversions = ["1.3"]\n'
        '[tls.profiles.b]\nversions = ["1.2"]\n[csms.main]\ntls_profile = "a"\n'
    )
    assert main(["tls", "capabilities", "--profile", str(scenario)]) == 2
    assert "--name" in capsys.readouterr().err
    assert main(["tls", "capabilities", "--profile", str(scenario), "--name", "b", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["versions"] == ["1.2"]


def test_fixed_ports_on_tcp_clash_on_loopback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sc = tmp_path / "two.toml"
    sc.write_text(
        '[simulation]\nduration = "5s"\nclock = "real"\nnetwork = "tcp"\n'
        '[csms.a]\nhost = "a.test"\nport = 18443\n[csms.b]\nhost = "b.test"\nport = 18443\n'
    )
    assert main(["validate", str(sc)]) == 2
    err = capsys.readouterr().err
    assert "127.0.0.1:18443" in err and "its own port" in err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.loopback
@pytest.mark.slow
async def test_fixed_csms_port_is_honoured_on_tcp_and_printed(tmp_path: Path) -> None:
    port = _free_port()
    sc = tmp_path / "tcp.toml"
    sc.write_text(
        f'[simulation]\nduration = "3s"\nclock = "real"\nnetwork = "tcp"\nstop_when_done = true\n'
        f'[csms.main]\nport = {port}\nheartbeat_interval = "60s"\n'
        f'[stations.fleet]\ncount = 1\ncsms = "main"\nsessions = 0\n'
    )
    with trio.fail_after(60):
        result = await trio.run_process(
            [*EVSIM, "run", str(sc), "--out", str(tmp_path / "runs"), "--no-plots", "--no-live", "--json"],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    err = result.stderr.decode()
    assert f"main listening on 127.0.0.1:{port}" in err, err
    doc = json.loads(result.stdout)
    events = (Path(doc["run_directory"]) / "events.jsonl").read_text()
    assert f'"address":"127.0.0.1:{port}"' in events


@pytest.mark.loopback
@pytest.mark.slow
async def test_stations_show_progress_and_give_up(tmp_path: Path) -> None:
    port = _free_port()  # nothing listens there
    ca = tmp_path / "pki"
    assert main(["certs", "init", "--pki", str(ca)]) == 0
    cmd = [
        *EVSIM,
        "stations",
        "--csms",
        f"wss://localhost:{port}/ocpp",
        "--stations",
        "2",
        "--ca",
        str(ca / "ca.crt"),
        "--duration",
        "3s",
        "--progress",
        "1s",
        "--json",
    ]
    with trio.fail_after(60):
        result = await trio.run_process(cmd, capture_stdout=True, capture_stderr=True, check=False)
    assert result.returncode == 1
    err = result.stderr.decode()
    progress = [line for line in err.splitlines() if " stations progress " in line]
    assert len(progress) >= 2, err
    assert "booted=0/2 done=0" in progress[0] and "gives_up_in=" in progress[0]
    doc = json.loads(result.stdout)
    assert (doc["ok"], doc["stations"], doc["booted"], doc["completed"]) == (False, 2, 0, 0)
    assert [r["state"] for r in doc["table"]["rows"]] == ["incomplete", "incomplete"]


def test_certs_init_validity_is_applied(tmp_path: Path) -> None:
    from evsim.pki import DevPki

    assert main(["certs", "init", "--pki", str(tmp_path / "a"), "--validity", "30d", "--stations", "1"]) == 0
    assert main(["certs", "init", "--pki", str(tmp_path / "b"), "--days", "45"]) == 0  # the older form
    for name, days in (("a", 30), ("b", 45)):
        pki = DevPki.load(tmp_path / name)
        server = pki.server.cert
        assert (server.not_valid_after_utc - server.not_valid_before_utc).days == days
    station = DevPki.load(tmp_path / "a").station("ST-0001", now=server.not_valid_before_utc).cert
    assert (station.not_valid_after_utc - station.not_valid_before_utc).days == 30
    with pytest.raises(SystemExit):
        main(["certs", "init", "--pki", str(tmp_path / "c"), "--validity", "36h"])  # not whole days


def test_run_refuses_a_bad_file_with_every_error_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(BROKEN)
    assert main(["run", str(bad), "--out", str(tmp_path / "runs"), "--no-live"]) == 2
    err = capsys.readouterr().err
    assert err.count("evsim: configuration error: ") == 4 and "timeline[0].at" in err
    assert not (tmp_path / "runs").exists()
