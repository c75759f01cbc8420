"""The ``evsim`` command line: help, PKI generation, config errors, and CSMS + stations as two processes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trio

from evsim.cli import build_parser, main
from tests.processes import start_csms

EVSIM = [sys.executable, "-m", "evsim"]


def test_help_documents_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, subparser in sub.choices.items():  # type: ignore[union-attr]
        for action in subparser._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"evsim {name} {action.option_strings[0]} has no help text"
    with pytest.raises(SystemExit) as exc:
        main(["stations", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in (
        "--csms",
        "--stations",
        "--ca",
        "--pki",
        "--security-profile",
        "--password",
        "--duration",
        "--keylog",
    ):
        assert flag in out


def test_certs_init_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "certs"
    assert main(["certs", "init", "--pki", str(d), "--stations", "2"]) == 0
    for name in ("ca.crt", "ca.key", "server.crt", "server.key", "station-ca.crt", "manufacturer-root.crt"):
        assert (d / name).is_file(), name
    assert (d / "stations" / "ST-0001.crt").is_file()
    assert (d / "server.key").stat().st_mode & 0o077 == 0  # keys are private
    assert main(["certs", "init", "--dir", str(d), "--if-missing"]) == 0  # the older name of --pki
    capsys.readouterr()
    assert main(["certs", "init", "--pki", str(d)]) == 2  # refuses to overwrite
    err = capsys.readouterr().err
    assert "already exists" in err
    assert "--force" in err and "--if-missing" in err
    assert "DevPki" not in err and "=True" not in err  # CLI flags, not Python calls
    (d / "server.key").write_text("garbage")
    assert main(["demo", "--pki", str(d)]) == 1
    assert "server.key" in capsys.readouterr().err  # names the broken file


def test_config_errors_say_how_to_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stations", "--csms", "ws://localhost:1/ocpp", "--ca", "x"]) == 2
    err = capsys.readouterr().err
    assert "uses TLS" in err
    assert "fix: use wss://" in err
    assert main(["csms", "--security-profile", "1", "--pki", str(tmp_path)]) == 2
    assert "--insecure-allow-plain-ws" in capsys.readouterr().err
    assert main(["stations", "--csms", "wss://localhost:1/ocpp", "--ca", str(tmp_path / "missing.pem")]) == 2
    assert "missing.pem" in capsys.readouterr().err


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    assert main(["certs", "init", "--pki", str(d), "--if-missing"]) == 0
    return d


@pytest.mark.loopback
@pytest.mark.slow
@pytest.mark.parametrize("profile", ["2", "3"])
async def test_csms_and_stations_as_two_processes(pki_dir: Path, tmp_path: Path, profile: str) -> None:
    keylog = tmp_path / "keys.log"
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            csms, port = await start_csms(
                nursery,
                [
                    "--listen",
                    "127.0.0.1:0",
                    "--pki",
                    str(pki_dir),
                    "--duration",
                    "60",
                    "--security-profile",
                    profile,
                ],
            )
            cmd = [
                *EVSIM,
                "stations",
                "--csms",
                f"wss://localhost:{port}/ocpp",
                "--stations",
                "3",
                "--ca",
                str(pki_dir / "ca.crt"),
                "--session-duration",
                "2",
                "--meter-interval",
                "1",
                "--duration",
                "45",
                "--keylog",
                str(keylog),
                "--security-profile",
                profile,
            ]
            if profile == "3":
                cmd += ["--pki", str(pki_dir)]
            result = await trio.run_process(cmd, capture_stdout=True, capture_stderr=True, check=False)
            csms.terminate()
            nursery.cancel_scope.cancel()
    out, err = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, (out, err)
    assert "3/3 stations booted and completed their sessions" in out
    assert out.count("TLSv1.3") == 3
    assert "WARNING: TLS key log enabled" in err
    lines = keylog.read_text().splitlines()
    assert any(line.startswith("CLIENT_HANDSHAKE_TRAFFIC_SECRET ") for line in lines)
    assert len({line.split()[1] for line in lines}) == 3  # one client random per connection


@pytest.mark.loopback
@pytest.mark.slow
async def test_stations_exit_nonzero_when_they_cannot_finish(pki_dir: Path) -> None:
    with trio.fail_after(30):
        result = await trio.run_process(
            [
                *EVSIM,
                "stations",
                "--csms",
                "wss://localhost:9/ocpp",
                "--count",
                "2",
                "--ca",
                str(pki_dir / "ca.crt"),
                "--duration",
                "3",
            ],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 1
    assert b"0/2 stations booted" in result.stdout


def test_demo_runs_in_virtual_time(pki_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--pki", str(pki_dir), "--stations", "3"]) == 0
    out = capsys.readouterr().out
    assert out.count("TLSv1.3") >= 3
    assert "OK: 3/3 stations" in out
