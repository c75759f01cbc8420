"""The CSMS admin socket: the sans-IO request/response lines, and ``evsim csms --admin-socket`` driven by
``evsim admin`` end to end (loopback TCP to real stations, a unix socket to the operator)."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from evsim.cli import build_parser, main
from evsim.commands import csms_setup, serve_csms
from evsim.net.tcp import TcpNetwork
from evsim.nodes.csms_admin import (
    AdminRefused,
    AdminRequest,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)
from evsim.recorder import EventPrinter

EVSIM = [sys.executable, "-m", "evsim"]


# ---------------------------------------------------------------- sans-IO


@pytest.mark.parametrize(
    "request_",
    [
        AdminRequest("trigger_renewal"),
        AdminRequest("trigger_renewal", ("ST-0001", "ST-0002")),
        AdminRequest("install_root", None, "-----BEGIN CERTIFICATE-----\n", "ManufacturerRootCertificate"),
        AdminRequest("status"),
    ],
)
def test_request_round_trip(request_: AdminRequest) -> None:
    line = encode_request(request_)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode_request(line) == request_


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"not json", "not a JSON line"),
        (b'{"op": "status"}', "not a version 1"),
        (b'{"v": 1, "op": "reboot"}', "unknown op"),
        (b'{"v": 1, "op": "status", "stations": []}', "stations is a list"),
        (b'{"v": 1, "op": "trigger_renewal", "stations": ["a:b"]}', "station identity"),
        (b'{"v": 1, "op": "trigger_renewal", "stations": ["' + b"x" * 49 + b'"]}', "station identity"),
        (b'{"v": 1, "op": "install_root"}', "certificate is a PEM string"),
        (
            b'{"v": 1, "op": "install_root", "certificate": "x", "certificate_type": "V2G"}',
            "certificate_type",
        ),
        (b"{" + b" " * (1 << 20) + b"}", "longer than"),
    ],
)
def test_refused_requests(line: bytes, reason: str) -> None:
    with pytest.raises(AdminRefused) as exc:
        decode_request(line)
    assert reason in str(exc.value)


def test_response_lines() -> None:
    line = encode_response({"ok": True, "op": "status", "connected": []})
    assert decode_response(line) == {"v": 1, "ok": True, "op": "status", "connected": []}
    with pytest.raises(AdminRefused):
        decode_response(b'{"v": 2}')


# ---------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    assert main(["certs", "init", "--dir", str(d), "--stations", "2"]) == 0
    return d


async def _admin(socket: Path, *args: str) -> tuple[int, str]:
    result = await trio.run_process(
        [*EVSIM, "admin", "--socket", str(socket), *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    return result.returncode, result.stdout.decode() + result.stderr.decode()


@pytest.mark.loopback
@pytest.mark.slow
async def test_operator_triggers_renewal_and_installs_a_root(pki_dir: Path, tmp_path: Path) -> None:
    socket = tmp_path / "admin.sock"
    args = build_parser().parse_args(
        ["csms", "--listen", "127.0.0.1:0", "--pki", str(pki_dir), "--security-profile", "3"]
    )
    config, server_tls, signer = csms_setup(args)
    assert signer is not None  # `evsim csms` signs station CSRs by default (the PKI has the station sub-CA)
    lines: list[str] = []
    wanted: dict[str, tuple[int, trio.Event]] = {}

    def write(line: str) -> None:
        lines.append(line)
        for needle, (count, event) in wanted.items():
            if sum(needle in seen for seen in lines) >= count:
                event.set()

    async def seen(needle: str, count: int) -> None:
        event = trio.Event()
        wanted[needle] = (count, event)
        write("")
        await event.wait()

    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            addr = await nursery.start(
                functools.partial(
                    serve_csms,
                    config,
                    network=TcpNetwork(),
                    server_tls=server_tls,
                    printer=EventPrinter(write=write),
                    signer=signer,
                    admin_socket=str(socket),
                )
            )
            assert socket.stat().st_mode & 0o077 == 0  # only its owner may connect
            stations = [
                *EVSIM,
                *("stations", "--csms", f"wss://localhost:{addr[1]}/ocpp", "--count", "2"),
                *("--security-profile", "3", "--pki", str(pki_dir), "--session-duration", "120"),
                *("--duration", "70"),
            ]
            proc: trio.Process = await nursery.start(
                functools.partial(
                    trio.run_process,
                    stations,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    check=False,
                )
            )
            await seen(" booted ", 2)
            assert await _admin(socket, "status") == (0, "2 stations connected: ST-0001, ST-0002\n")
            code, out = await _admin(socket, "trigger-renewal", "--all")
            assert code == 0 and "ST-0001: Accepted" in out and "2/2 stations accepted" in out, out
            await seen("certificate_signed", 2)
            await seen(" booted ", 4)  # each station reconnected with its new certificate
            assert sum("status=Accepted" in ln for ln in lines if "certificate_signed" in ln) == 2
            code, out = await _admin(
                socket, "install-root", str(pki_dir / "ca.crt"), "--stations", "ST-0002,ST-9999"
            )
            assert code == 1, out
            assert "ST-0002: Accepted" in out and "ST-9999: not sent: not connected" in out
            assert "1/2 stations accepted" in out
            garbage = await trio.open_unix_socket(str(socket))
            async with garbage:
                await garbage.send_all(b"hello\n")
                assert decode_response(await garbage.receive_some(4096))["ok"] is False
            assert any("admin_refused" in ln and "not a JSON line" in ln for ln in lines)
            proc.terminate()
            nursery.cancel_scope.cancel()
        with trio.fail_after(30):
            assert not socket.exists()  # removed when the CSMS stops
            code, out = await _admin(socket, "status")
            assert code == 2 and "fix: start it with evsim csms --admin-socket" in out, out
