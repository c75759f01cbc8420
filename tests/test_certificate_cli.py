"""Bring your own certificates: ``evsim csms`` from only ``ca.crt``, ``server.crt`` and ``server.key`` (the
layout and RSA-4096 openssl recipe of a typical EVCS/CSMS TLS setup), and ``evsim certs init`` with RSA-4096."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing

from evsim.backoff import RetryBackOff
from evsim.cli import build_parser, main
from evsim.clock import SimClock, real_utcnow
from evsim.commands import csms_setup
from evsim.net.virtual import VirtualNetwork
from evsim.nodes.csms import Csms
from evsim.nodes.security import load_anchors, station_client_tls
from evsim.nodes.station import Station
from evsim.nodes.station_model import StationConfig
from evsim.pki import CsmsPki, DevPki
from evsim.pki.keys import load_key_file
from evsim.recorder import Recorder

PASSWORD = "byo-certificates-password-01"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def openssl_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ca.crt, server.crt, server.key made with the openssl CLI, RSA-4096, nothing else."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command")
    d = tmp_path_factory.mktemp("byo")
    _openssl(
        "req", "-x509", "-newkey", "rsa:4096", "-days", "365", "-nodes",
        "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=EVCS-CA", cwd=d,
    )  # fmt: skip
    _openssl(
        "req", "-newkey", "rsa:4096", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=CSMS-Server", cwd=d,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "365", cwd=d,
    )  # fmt: skip
    out = tmp_path_factory.mktemp("certs")
    for name in ("ca.crt", "server.crt", "server.key"):  # the CA key stays behind
        shutil.copy(d / name, out / name)
    return out


def test_csms_pki_loads_the_three_files(openssl_layout: Path) -> None:
    pki = CsmsPki.load(openssl_layout)
    assert pki.host == "CSMS-Server"
    assert pki.station_ca is None
    assert load_key_file(openssl_layout / "server.key").key_size == 4096
    # the development loader still wants its full layout
    with pytest.raises(Exception, match="is missing"):
        DevPki.load(openssl_layout)


def test_csms_pki_names_a_broken_file(openssl_layout: Path, tmp_path: Path) -> None:
    for name in ("ca.crt", "server.crt"):
        shutil.copy(openssl_layout / name, tmp_path / name)
    with pytest.raises(Exception, match=r"server\.key"):
        CsmsPki.load(tmp_path)
    (tmp_path / "server.key").write_text("garbage")
    with pytest.raises(Exception, match=r"server\.key"):
        CsmsPki.load(tmp_path)


async def test_evsim_csms_serves_sp2_from_the_three_files(
    openssl_layout: Path, autojump_clock: trio.testing.MockClock
) -> None:
    args = build_parser().parse_args(
        ["csms", "--pki", str(openssl_layout), "--password", PASSWORD, "--listen", "127.0.0.1:443"]
    )
    config, server_tls, signer = csms_setup(args)
    config = attrs.evolve(config, host="csms-server")  # on the in-memory network, under the seed's host name
    assert signer is None
    clock = SimClock.start(real_utcnow())  # openssl issued the certificates at the machine's time
    recorder = Recorder(clock)
    net = VirtualNetwork()
    csms = Csms(config, network=net, server_tls=server_tls, clock=clock, recorder=recorder, signer=signer)
    station = Station(
        StationConfig(
            station_id="ST-0001",
            csms_url="wss://CSMS-Server/ocpp",
            password=PASSWORD,
            sessions=0,
            backoff=RetryBackOff(wait_minimum=5, random_range=1, repeat_times=2),
        ),
        network=net,
        client_tls=station_client_tls(load_anchors(str(openssl_layout / "ca.crt"))),
        clock=clock,
        recorder=recorder,
        rng=random.Random(1),
    )
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            await nursery.start(csms.run)
            nursery.start_soon(station.run)
            await station.wait_online()
            # no CA key: a CSR is refused with a reason, the station goes on
            await csms.certificates.trigger_message("ST-0001")
            while not recorder.of_kind("csr_rejected"):  # noqa: ASYNC110 - virtual time
                await trio.sleep(1)
            nursery.cancel_scope.cancel()
    assert csms.stations["ST-0001"].accepted
    assert [e.data["reason"] for e in recorder.of_kind("csr_refused")] == ["NoCertificateAuthority"]
    assert station.connects_ok == 1


@pytest.mark.slow
def test_certs_init_rsa_4096(tmp_path: Path) -> None:
    d = tmp_path / "certs"
    assert main(["certs", "init", "--dir", str(d), "--key-type", "rsa", "--key-size", "4096"]) == 0
    pki = DevPki.load(d)
    for key in (pki.root.key, pki.server.key, pki.station_ca.key):
        assert key.key_size == 4096
    assert CsmsPki.load(d).station_ca is not None
    assert (
        main(["certs", "init", "--dir", str(tmp_path / "x"), "--key-type", "rsa", "--key-size", "1024"]) != 0
    )
