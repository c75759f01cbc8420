"""Real peers for the HTTPS side services: curl downloads from (and uploads to) evsim's file server, and evsim's
transfer client downloads from ``openssl s_server -WWW``, with the same TLS knob applied on both sides: TLS 1.3
only, a TLS 1.2 cipher list, a pinned public key, client certificates. Each knob is shown both accepting the
matching peer and refusing the one that violates it.

Loopback only, unprivileged ports, every wait bounded, every process stopped by the test. curl and openssl are
Debian packages that ``.ci/run`` installs when missing; without them these tests skip.
"""

from __future__ import annotations

import base64
import contextlib
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from evsim.clock import SimClock, real_utcnow
from evsim.link.service import Endpoint, Service
from evsim.link.transfer import TransferFailed, download
from evsim.net.tcp import TcpNetwork
from evsim.nodes.fileserver import FileServer, FileServerConfig
from evsim.pki import certs_to_pem, key_to_pem, spki_sha256
from evsim.recorder import Recorder
from evsim.tls import Identity, PeerPolicy, ServerTls, TlsProfile, TrustStore
from evsim.tls.pins import Pin, PinSet
from tests.pki_fixtures import make_test_pki

pytestmark = [
    pytest.mark.loopback,
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("curl") is None or shutil.which("openssl") is None,
        reason="curl and openssl are not installed (.ci/run installs them)",
    ),
]

PKI = make_test_pki(real_utcnow().replace(minute=0, second=0, microsecond=0))
"""Issued now: curl and openssl check certificates at the real time (evsim's side runs at the real time too)."""
IMAGE = bytes(range(256)) * 512  # 128 KiB
TLS13_ONLY = TlsProfile(versions=("1.3",))
TLS12_AES256 = TlsProfile(
    versions=("1.2",), cipher_suites={"1.2": ("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",)}
)
TLS12_AES128 = TlsProfile(
    versions=("1.2",), cipher_suites={"1.2": ("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",)}
)
WAIT_S = 20.0
"""Bound on any one subprocess or server start-up."""


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The test PKI as PEM files (written for the tools; never committed)."""
    d = tmp_path_factory.mktemp("pem")
    station = PKI.station_cert("CS1")
    files = {
        "ca": certs_to_pem([PKI.root.cert]),
        "server": certs_to_pem(PKI.localhost.chain),
        "server_key": key_to_pem(PKI.localhost.key),
        "client": certs_to_pem(station.chain),
        "client_key": key_to_pem(station.key),
    }
    paths = {}
    for name, data in files.items():
        paths[name] = d / f"{name}.pem"
        paths[name].write_bytes(data)
    return paths


def pin(cert_der_spki: bytes) -> str:
    return "sha256//" + base64.b64encode(cert_der_spki).decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- curl against evsim's server


@contextlib.asynccontextmanager
async def evsim_server(
    server_tls: ServerTls, *, uploads: bool = False
) -> AsyncIterator[tuple[FileServer, int]]:
    clock = SimClock.start()
    node = FileServer(
        FileServerConfig(
            name="files", host="127.0.0.1", port=0, files={"/fw/image.bin": IMAGE}, accept_uploads=uploads
        ),
        network=TcpNetwork(),
        server_tls=server_tls,
        clock=clock,
        recorder=Recorder(clock),
    )
    async with trio.open_nursery() as nursery:
        with trio.fail_after(WAIT_S):
            address = await nursery.start(node.serve)
        try:
            yield node, address[1]
        finally:
            nursery.cancel_scope.cancel()


async def curl(
    pem: dict[str, Path], port: int, *args: str, target: str = "/fw/image.bin"
) -> subprocess.CompletedProcess[bytes]:
    command = [
        "curl", "--silent", "--show-error", "--noproxy", "*", "--max-time", "10",
        "--cacert", str(pem["ca"]), *args, f"https://localhost:{port}{target}",
    ]  # fmt: skip
    with trio.fail_after(WAIT_S):
        return await trio.run_process(command, capture_stdout=True, capture_stderr=True, check=False)


def server_tls(profile: TlsProfile | None = None, *, client_auth: bool = False) -> ServerTls:
    profile = profile or TlsProfile()
    ident = Identity.from_cert_key(PKI.localhost)
    if client_auth:
        return ServerTls.build(profile, ident, trust=PKI.station_trust(), client_auth="required")
    return ServerTls.build(profile, ident)


async def test_curl_and_evsim_server_tls13_only(pem: dict[str, Path]) -> None:
    async with evsim_server(server_tls(TLS13_ONLY)) as (node, port):
        ok = await curl(pem, port, "--tlsv1.3")
        assert ok.returncode == 0 and ok.stdout == IMAGE, ok.stderr
        refused = await curl(pem, port, "--tlsv1.2", "--tls-max", "1.2")
        assert refused.returncode != 0
        assert node.statistics().handshake_failures  # the server saw and refused the TLS 1.2 client


async def test_curl_and_evsim_server_tls12_cipher_list(pem: dict[str, Path]) -> None:
    async with evsim_server(server_tls(TLS12_AES256)) as (node, port):
        ok = await curl(pem, port, "--tls-max", "1.2", "--ciphers", "ECDHE-ECDSA-AES256-GCM-SHA384")
        assert ok.returncode == 0 and ok.stdout == IMAGE, ok.stderr
        refused = await curl(pem, port, "--tls-max", "1.2", "--ciphers", "ECDHE-ECDSA-AES128-GCM-SHA256")
        assert refused.returncode != 0
        assert "cipher_refused" in node.statistics().handshake_failures


async def test_curl_pins_the_public_key_of_evsim_server(pem: dict[str, Path]) -> None:
    async with evsim_server(server_tls()) as (_node, port):
        ok = await curl(pem, port, "--pinnedpubkey", pin(spki_sha256(PKI.localhost.cert)))
        assert ok.returncode == 0 and ok.stdout == IMAGE, ok.stderr
        refused = await curl(pem, port, "--pinnedpubkey", pin(spki_sha256(PKI.server.cert)))
        assert refused.returncode == 90, refused.stderr  # CURLE_SSL_PINNEDPUBKEYNOTMATCH


async def test_curl_with_and_without_a_client_certificate_against_evsim_server(pem: dict[str, Path]) -> None:
    async with evsim_server(server_tls(client_auth=True), uploads=True) as (node, port):
        ok = await curl(
            pem, port, "--cert", str(pem["client"]), "--key", str(pem["client_key"]),
            "--upload-file", "-", target="/up/CS1.log",
        )  # fmt: skip
        assert ok.returncode == 0, ok.stderr
        stored = node.uploaded("/up/CS1.log")
        assert stored is not None and stored.client == "CS1" and stored.method == "PUT"
        refused = await curl(pem, port)
        assert refused.returncode != 0
        assert "cert_invalid:no_client_cert" in node.statistics().handshake_failures


async def test_curl_resumes_a_download_from_evsim_server(pem: dict[str, Path]) -> None:
    async with evsim_server(server_tls()) as (_node, port):
        tail = await curl(pem, port, "--range", "100000-")
        assert tail.returncode == 0 and tail.stdout == IMAGE[100000:], tail.stderr
        past = await curl(pem, port, "--range", "999999-", "--fail")
        assert past.returncode == 22  # HTTP 416


# ---------------------------------------------------------------- evsim's client against openssl s_server -WWW


@contextlib.asynccontextmanager
async def s_server(pem: dict[str, Path], directory: Path, *args: str) -> AsyncIterator[int]:
    """``openssl s_server -WWW`` serving ``directory`` on a loopback port; stopped on exit."""
    port = free_port()
    command = [
        "openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(pem["server"]),
        "-key", str(pem["server_key"]), "-WWW", "-quiet", *args,
    ]  # fmt: skip
    process = await trio.lowlevel.open_process(
        command, cwd=directory, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        with trio.fail_after(WAIT_S):
            while True:  # bounded: until s_server accepts (a probe connection it serves and closes)
                try:
                    probe = await trio.open_tcp_stream("127.0.0.1", port)
                except OSError:
                    await trio.sleep(0.05)
                    continue
                await probe.aclose()
                break
        yield port
    finally:
        process.kill()
        with trio.move_on_after(WAIT_S):
            await process.wait()


def s_service(
    port: int,
    profile: TlsProfile | None = None,
    *,
    peer: PeerPolicy | None = None,
    identity: Identity | None = None,
) -> Service:
    trust = TrustStore("CSMSRootCertificate", (PKI.root.cert,))
    url = f"https://localhost:{port}/"
    endpoint = Endpoint(
        "openssl", url, profile=profile or TlsProfile(), trust=trust, identity=identity, peer=peer
    )
    return Service("firmware", (endpoint,))


async def fetch(service: Service) -> bytes:
    clock = SimClock.start()
    with trio.fail_after(WAIT_S):
        result = await download(
            service, "/image.bin", TcpNetwork(), clock=clock, max_attempts=1, linger_s=5.0
        )
    return result.body


async def refused(service: Service) -> str:
    clock = SimClock.start()
    with trio.fail_after(WAIT_S), pytest.raises(TransferFailed) as caught:
        await download(service, "/image.bin", TcpNetwork(), clock=clock, max_attempts=1, linger_s=5.0)
    return caught.value.reason


@pytest.fixture
def www(tmp_path: Path) -> Path:
    (tmp_path / "image.bin").write_bytes(IMAGE)
    return tmp_path


async def test_evsim_client_and_s_server_tls13_only(pem: dict[str, Path], www: Path) -> None:
    async with s_server(pem, www, "-tls1_3") as port:
        assert await fetch(s_service(port, TLS13_ONLY)) == IMAGE
    async with s_server(pem, www, "-tls1_2") as port:
        assert await refused(s_service(port, TLS13_ONLY)) in (
            "peer_alert:protocol_version",
            "downgrade_refused",
        )


async def test_evsim_client_and_s_server_tls12_cipher_list(pem: dict[str, Path], www: Path) -> None:
    async with s_server(pem, www, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384") as port:
        assert await fetch(s_service(port, TLS12_AES256)) == IMAGE
        assert await refused(s_service(port, TLS12_AES128)) in (
            "peer_alert:handshake_failure",
            "cipher_refused",
        )


async def test_evsim_client_pins_the_public_key_of_s_server(pem: dict[str, Path], www: Path) -> None:
    def pins(cert_spki: bytes) -> PeerPolicy:
        return PeerPolicy(side="client", pins=PinSet("enforce", (Pin("leaf", cert_spki, "active"),)))

    async with s_server(pem, www) as port:
        assert await fetch(s_service(port, peer=pins(spki_sha256(PKI.localhost.cert)))) == IMAGE
        assert await refused(s_service(port, peer=pins(spki_sha256(PKI.server.cert)))) == "pin_mismatch"


async def test_evsim_client_certificate_against_s_server_verify(pem: dict[str, Path], www: Path) -> None:
    async with s_server(pem, www, "-Verify", "2", "-CAfile", str(pem["ca"])) as port:
        identity = PKI.station_identity("CS1")
        assert await fetch(s_service(port, identity=identity)) == IMAGE
        reason = await refused(s_service(port))
        assert reason.startswith(("peer_alert:", "link_lost", "bad_http_response", "truncated")), reason
