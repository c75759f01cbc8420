"""Interop with an independent OCPP 2.0.1 implementation (the `ocpp` PyPI library, asyncio + websockets).

Loopback TCP, real clock, real TLS; the peer runs in a subprocess (tests/interop/). Every test is bounded by
``trio.fail_after``; the peers also have their own hard timeouts.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from evsim.clock import SimClock, real_utcnow
from evsim.net.tcp import TcpNetwork
from evsim.nodes.csms import Csms, CsmsConfig
from evsim.nodes.csms_certs import SubCaSigner
from evsim.nodes.security import csms_server_tls
from evsim.pki import DevPki, init_dev_pki
from evsim.recorder import Recorder

pytestmark = [pytest.mark.loopback, pytest.mark.slow]

HERE = Path(__file__).parent / "interop"
PASSWORD = "interop-password-0001"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    # Real clock: the asyncio peer checks certificates against the machine's time.
    return init_dev_pki(tmp_path_factory.mktemp("pki"), host="localhost", now=real_utcnow())


async def _start_lib_csms(nursery: trio.Nursery, cmd: list[str]) -> tuple[trio.Process, bytes, int]:
    """Start the ocpp-library CSMS; returns once it printed its readiness line (no polling): the process,
    what it printed so far, and its port."""
    proc: trio.Process = await nursery.start(
        functools.partial(trio.run_process, cmd, stdout=subprocess.PIPE, check=False)
    )
    assert proc.stdout is not None
    buf = b""
    while b'"listening"' not in buf:
        chunk = await proc.stdout.receive_some()
        assert chunk, "the ocpp-library CSMS exited before listening"
        buf += chunk
    return proc, buf, int(json.loads(buf.split(b"\n")[0])["port"])


async def _stop_lib_csms(proc: trio.Process) -> bytes:
    """Terminate the ocpp-library CSMS and return the rest of what it printed."""
    assert proc.stdout is not None
    proc.terminate()
    rest = b""
    while chunk := await proc.stdout.receive_some():
        rest += chunk
    return rest


def _lib_csms_cmd(pki: DevPki) -> list[str]:
    """The ocpp-library CSMS on a free port with the dev PKI's server certificate."""
    cert, key = str(pki.path("server.crt")), str(pki.path("server.key"))
    return [sys.executable, str(HERE / "ocpp_lib_csms.py"), "--port", "0", "--cert", cert, "--key", key]


def _lines(out: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]


@pytest.mark.parametrize("profile", [2, 3])
async def test_ocpp_lib_station_against_evsim_csms(pki: DevPki, profile: int) -> None:
    station_id = "LIB-0001"
    clock = SimClock.start()
    recorder = Recorder(clock)
    csms = Csms(
        CsmsConfig(
            host="127.0.0.1",
            port=0,
            security_profile=profile,
            default_password=PASSWORD,
            organization=pki.org,
        ),
        network=TcpNetwork(),
        server_tls=csms_server_tls(pki, security_profile=profile),
        clock=clock,
        recorder=recorder,
    )
    cmd = [
        sys.executable,
        str(HERE / "ocpp_lib_station.py"),
        "--id",
        station_id,
        "--ca",
        str(pki.path("ca.crt")),
        "--heartbeats",
        "2",
        "--timeout",
        "40",
    ]
    if profile == 2:
        cmd += ["--password", PASSWORD]
    else:
        cert = pki.station(station_id, now=real_utcnow())
        crt = pki.path(f"stations/{station_id}.crt")
        key = pki.path(f"stations/{station_id}.key")
        assert cert.cert is not None
        cmd += ["--cert", str(crt), "--key", str(key)]
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            _, port = await nursery.start(csms.run)
            cmd[2:2] = ["--url", f"wss://localhost:{port}/ocpp"]
            result = await trio.run_process(cmd, capture_stdout=True, capture_stderr=True, check=False)
            nursery.cancel_scope.cancel()
    lines = _lines(result.stdout)
    assert result.returncode == 0, (result.stdout.decode(), result.stderr.decode())
    assert lines[-1] == {"result": "ok"}
    rec = csms.stations[station_id]
    assert rec.boots == 1
    assert rec.heartbeats == 2
    (tx,) = rec.transactions.values()
    assert tx.started
    assert tx.ended
    assert tx.gap_free()
    assert rec.tls is not None
    assert rec.tls.version == "TLSv1.3"
    if profile == 3:
        assert rec.serial_from_cert == station_id


async def test_evsim_stations_against_ocpp_lib_csms(pki: DevPki, tmp_path: Path) -> None:
    ready = tmp_path / "port"
    csms_cmd = [
        sys.executable,
        str(HERE / "ocpp_lib_csms.py"),
        "--port",
        "0",
        "--cert",
        str(pki.path("server.crt")),
        "--key",
        str(pki.path("server.key")),
        "--password",
        PASSWORD,
        "--duration",
        "50",
        "--ready-file",
        str(ready),
    ]
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            proc, buf, port = await _start_lib_csms(nursery, csms_cmd)
            result = await trio.run_process(
                [
                    sys.executable,
                    "-m",
                    "evsim",
                    "stations",
                    "--csms",
                    f"wss://localhost:{port}/ocpp",
                    "--count",
                    "3",
                    "--ca",
                    str(pki.path("ca.crt")),
                    "--password",
                    PASSWORD,
                    "--session-duration",
                    "2",
                    "--meter-interval",
                    "1",
                    "--duration",
                    "40",
                ],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
            rest = await _stop_lib_csms(proc)
            nursery.cancel_scope.cancel()
    assert result.returncode == 0, (result.stdout.decode(), result.stderr.decode())
    assert b"3/3 stations booted and completed" in result.stdout
    seen = _lines(buf + rest)
    boots = [ln for ln in seen if ln.get("action") == "BootNotification"]
    assert sorted(b["station"] for b in boots) == ["ST-0001", "ST-0002", "ST-0003"]
    summary = next(ln for ln in seen if ln.get("event") == "summary")
    assert sorted(summary["transactions"]) == ["ST-0001", "ST-0002", "ST-0003"]
    for txs in summary["transactions"].values():
        (events,) = txs.values()  # one session per station
        assert [e["seqNo"] for e in events] == list(range(len(events)))  # gap-free, in order
        assert events[0]["eventType"] == "Started"
        assert events[-1]["eventType"] == "Ended"


async def test_ocpp_lib_csms_renews_evsim_station_certificates(pki: DevPki, tmp_path: Path) -> None:
    """A02 with an independent CSMS: it triggers SignChargingStationCertificate on three evsim stations at
    security profile 3, signs their CSRs with `cryptography` under the station sub-CA, and each station
    reconnects with the certificate it was sent."""
    csms_cmd = [
        sys.executable,
        str(HERE / "ocpp_lib_csms.py"),
        "--port",
        "0",
        "--cert",
        str(pki.path("server.crt")),
        "--key",
        str(pki.path("server.key")),
        "--ca",
        str(pki.path("ca.crt")),
        "--require-client-cert",
        "--sign-cert",
        str(pki.path("station-ca.crt")),
        "--sign-key",
        str(pki.path("station-ca.key")),
        "--duration",
        "50",
    ]
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            proc, buf, port = await _start_lib_csms(nursery, csms_cmd)
            result = await trio.run_process(
                [
                    sys.executable,
                    "-m",
                    "evsim",
                    "stations",
                    "--csms",
                    f"wss://localhost:{port}/ocpp",
                    "--count",
                    "3",
                    "--security-profile",
                    "3",
                    "--pki",
                    str(pki.dir),
                    "--session-duration",
                    "4",
                    "--meter-interval",
                    "1",
                    "--duration",
                    "40",
                ],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
            rest = await _stop_lib_csms(proc)
            nursery.cancel_scope.cancel()
    assert result.returncode == 0, (result.stdout.decode(), result.stderr.decode())
    seen = _lines(buf + rest)
    for sid in ("ST-0001", "ST-0002", "ST-0003"):
        (signed,) = [ln for ln in seen if ln.get("station") == sid and ln.get("sent") == "CertificateSigned"]
        assert signed["status"] == "Accepted", signed
        connects = [ln for ln in seen if ln.get("event") == "connected" and ln.get("station") == sid]
        assert len(connects) >= 2, connects
        assert connects[0]["client_cert_sha256"] != signed["cert_sha256"]
        assert connects[-1]["client_cert_sha256"] == signed["cert_sha256"]
        assert connects[-1]["client_cn"] == sid


async def test_ocpp_lib_station_gets_its_csr_signed_by_evsim_csms(pki: DevPki) -> None:
    """A02 the other way: an ocpp-library station sends SignCertificate to `evsim csms` (station sub-CA) and
    receives a CertificateSigned chain that it verifies against the CSMS root with `cryptography`."""
    station_id = "LIB-0002"
    clock = SimClock.start()
    recorder = Recorder(clock)
    csms = Csms(
        CsmsConfig(
            host="127.0.0.1", port=0, security_profile=2, default_password=PASSWORD, organization=pki.org
        ),
        network=TcpNetwork(),
        server_tls=csms_server_tls(pki, security_profile=2),
        clock=clock,
        recorder=recorder,
        signer=SubCaSigner(pki.station_ca),
    )
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            _, port = await nursery.start(csms.run)
            cmd = [
                sys.executable,
                str(HERE / "ocpp_lib_station.py"),
                "--url",
                f"wss://localhost:{port}/ocpp",
                "--id",
                station_id,
                "--ca",
                str(pki.path("ca.crt")),
                "--password",
                PASSWORD,
                "--heartbeats",
                "1",
                "--sign-certificate",
                pki.org,
                "--timeout",
                "40",
            ]
            result = await trio.run_process(cmd, capture_stdout=True, capture_stderr=True, check=False)
            nursery.cancel_scope.cancel()
    lines = _lines(result.stdout)
    assert result.returncode == 0, (result.stdout.decode(), result.stderr.decode())
    steps = {ln.get("step"): ln for ln in lines}
    assert steps["sign_certificate"]["status"] == "Accepted"
    assert steps["certificate_signed"]["verified"] is True, steps["certificate_signed"]
    (signed,) = [e.data for e in recorder.of_kind("certificate_signed")]
    assert signed["status"] == "Accepted"


async def test_ocpp_lib_csms_changes_evsim_station_tls_settings(pki: DevPki) -> None:
    """TLS settings in the device model: an ocpp-library CSMS reads an evsim station's TLS versions and suites
    (InternalCtrlr), sets TLS 1.2 with one suite, is refused for what the engine cannot do (with a reason),
    resets the station, and its next connection is TLS 1.2 with that suite."""
    csms_cmd = [*_lib_csms_cmd(pki), "--password", PASSWORD, "--tls-settings", "--duration", "40"]
    with trio.fail_after(50):
        async with trio.open_nursery() as nursery:
            proc, buf, port = await _start_lib_csms(nursery, csms_cmd)
            result = await trio.run_process(
                [
                    *(sys.executable, "-m", "evsim", "stations", "--csms", f"wss://localhost:{port}/ocpp"),
                    *("--count", "1", "--ca", str(pki.path("ca.crt")), "--password", PASSWORD),
                    *("--session-duration", "12", "--meter-interval", "4", "--duration", "25"),
                ],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
            rest = await _stop_lib_csms(proc)
            nursery.cancel_scope.cancel()
    assert result.returncode == 0, (result.stdout.decode(), result.stderr.decode())
    seen = _lines(buf + rest)
    (got,) = [ln["variables"] for ln in seen if ln.get("sent") == "GetVariables"]
    assert got["TlsVersions"] == "TLSv1.3,TLSv1.2"
    assert "TLSv1.2" in got["AvailableTlsVersions"].split(",")
    assert "ECDHE-ECDSA-AES256-GCM-SHA384" in got["SupportedCiphers12"].split(":")
    assert set(got["SupportedCiphers13"].split(":")) <= set(got["AvailableCiphers13"].split(":"))
    (changes,) = [ln["results"] for ln in seen if ln.get("sent") == "SetVariables"]
    assert [(c["status"], c["reasonCode"]) for c in changes] == [
        ("Accepted", None),
        ("Accepted", None),
        ("Rejected", "UnsupportedByEngine"),
        ("Rejected", "InvalidValue"),
    ]
    assert [ln["status"] for ln in seen if ln.get("sent") == "Reset"] == ["Accepted"]
    connects = [ln for ln in seen if ln.get("event") == "connected"]
    assert len(connects) >= 2, connects
    assert connects[0]["tls_version"] == "TLSv1.3"
    assert (connects[-1]["tls_version"], connects[-1]["cipher"]) == (
        "TLSv1.2",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
    )
