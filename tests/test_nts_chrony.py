"""NTS against chrony (chronyd 4.x, the Debian package), both ways, on loopback.

* chronyd as an NTS server: the evsim :class:`~evsim.nodes.nts.NtsClient` runs NTS-KE with it and gets
  authenticated samples (chronyd counts them in ``serverstats``); a source whose root-CA group does not hold
  chrony's issuer is refused.
* chronyd as an NTS client of the evsim :class:`~evsim.nodes.nts.NtsServer`: ``chronyc -n authdata`` shows the
  source in mode NTS with cookies and no NAK, and ``chronyc -n sources`` shows it selected (``*``).

How chronyd runs here, touching nothing of the machine's (no system service, no system clock, no
privileged port), as root or as any user:

* ``chronyd -d -x -U -u <current user> -f <tmp>/chrony.conf``: ``-d`` stays in the foreground and logs to
  stderr, ``-x`` never adjusts the system clock (so no CAP_SYS_TIME is needed), ``-U`` skips the "Not
  superuser" check, ``-u`` names the current user so there is no privilege drop and the command socket's
  directory passes chronyd's ownership check (it must belong to that user and have no access for others, hence
  the 0700 tmp directory);
* the config keeps everything in the tmp directory: ``pidfile``, ``bindcmdaddress <tmp>/chronyd.sock`` (the
  Unix command socket ``chronyc -h <tmp>/chronyd.sock`` talks to), ``cmdport 0`` (no UDP command port);
  as a server ``bindaddress 127.0.0.1``, ``port`` / ``ntsport`` on free unprivileged ports, ``allow 127.0.0.1``,
  ``local stratum 1`` (serve time without an upstream), ``ntsserverkey`` / ``ntsservercert``,
  ``ntsprocesses 0`` (no NTS-KE helper processes); as a client ``port 0`` (no server socket), ``nosystemcert``
  and ``ntstrustedcerts <tmp>/root.pem``, ``server 127.0.0.1 nts ntsport <port> iburst minpoll 0 maxpoll 0``
  (chronyd then follows the Port Negotiation record of the evsim server to its NTP port).

Waits are bounded (``trio.fail_after``); chronyd is terminated (then killed) by the test. The tests are skipped
when ``chronyd`` is not installed (``.ci/run`` installs it).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import os
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from cryptography.hazmat.primitives import serialization

from evsim.clock import SimClock
from evsim.net import TcpNetwork
from evsim.nodes.nts import KeFailed, NtsClient, NtsServer, NtsServerConfig, NtsSource, nts_ke, ntske_profile
from evsim.pki import CertificateAuthority
from evsim.recorder import Recorder
from evsim.tls import ClientTls, Identity, TrustStore

CHRONYD = shutil.which("chronyd") or ("/usr/sbin/chronyd" if os.path.exists("/usr/sbin/chronyd") else None)
CHRONYC = shutil.which("chronyc") or ("/usr/bin/chronyc" if os.path.exists("/usr/bin/chronyc") else None)

pytestmark = pytest.mark.skipif(CHRONYD is None or CHRONYC is None, reason="chrony is not installed")


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Pki:
    def __init__(self) -> None:
        now = dt.datetime.now(tz=dt.UTC).replace(microsecond=0)
        self.root = CertificateAuthority.create_root("chrony interop root", now=now)
        self.other = CertificateAuthority.create_root("another root", now=now)
        self.server = self.root.issue_server("localhost", ips=("127.0.0.1",), now=now)

    def write(self, directory: Path) -> None:
        (directory / "root.pem").write_bytes(self.root.cert.public_bytes(serialization.Encoding.PEM))
        (directory / "cert.pem").write_bytes(self.server.chain_pem())
        (directory / "key.pem").write_bytes(self.server.key_pem())
        os.chmod(directory / "key.pem", 0o600)


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    directory = tmp_path / "chrony"
    directory.mkdir(mode=0o700)
    os.chmod(directory, 0o700)
    return directory


@contextlib.asynccontextmanager
async def chronyd(directory: Path, config: str) -> AsyncIterator[trio.Process]:
    """Run chronyd with ``config`` in ``directory``; stop it on exit (SIGTERM, then SIGKILL after 5 s)."""
    assert CHRONYD is not None
    conf = directory / "chrony.conf"
    conf.write_text(
        f"pidfile {directory}/chronyd.pid\nbindcmdaddress {directory}/chronyd.sock\ncmdport 0\n" + config,
        encoding="utf-8",
    )
    log = (directory / "chronyd.log").open("wb")
    user = getpass.getuser()
    process = await trio.lowlevel.open_process(
        [CHRONYD, "-d", "-x", "-U", "-u", user, "-f", str(conf)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        with trio.fail_after(10):
            while not (directory / "chronyd.sock").exists():
                if process.poll() is not None:
                    pytest.fail(f"chronyd exited: {(directory / 'chronyd.log').read_text(errors='replace')}")
                await trio.sleep(0.05)
        yield process
    finally:
        with trio.CancelScope(shield=True):
            process.terminate()
            with trio.move_on_after(5) as waited:
                await process.wait()
            if waited.cancelled_caught:
                process.kill()
                await process.wait()
            log.close()


async def chronyc(directory: Path, *args: str) -> list[list[str]]:
    """``chronyc -c -n`` (CSV) against the chronyd of ``directory``: rows of fields."""
    assert CHRONYC is not None
    result = await trio.run_process(
        [CHRONYC, "-h", str(directory / "chronyd.sock"), "-c", "-n", *args], capture_stdout=True, check=False
    )
    return [line.split(",") for line in result.stdout.decode(errors="replace").splitlines() if line]


async def wait_port(port: int) -> None:
    while True:
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
        except OSError:
            await trio.sleep(0.05)
            continue
        await stream.aclose()
        return


async def test_evsim_client_gets_authenticated_time_from_chronyd(pki: Pki, workdir: Path) -> None:
    pki.write(workdir)
    ke_port, ntp_port = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_DGRAM)
    config = (
        f"bindaddress 127.0.0.1\nport {ntp_port}\nntsport {ke_port}\nallow 127.0.0.1\nlocal stratum 1\n"
        f"ntsserverkey {workdir}/key.pem\nntsservercert {workdir}/cert.pem\nntsprocesses 0\n"
    )
    clock = SimClock.start()
    recorder = Recorder(clock, echo=False)
    net = TcpNetwork()
    async with chronyd(workdir, config):
        with trio.fail_after(30):
            await wait_port(ke_port)
            good = NtsSource(
                "chrony",
                "127.0.0.1",
                ClientTls.build(ntske_profile(), TrustStore("a", (pki.root.cert,))),
                port=ke_port,
            )
            client = NtsClient("st", [good], net, clock, recorder, poll_s=0.5, timeout_s=2.0)
            async with trio.open_nursery() as nursery:
                await nursery.start(client.run)
                await client.wait_synced()
                nursery.cancel_scope.cancel()
            # a source whose root-CA group does not hold chrony's issuer is refused
            wrong = NtsSource(
                "chrony",
                "127.0.0.1",
                ClientTls.build(ntske_profile(), TrustStore("b", (pki.other.cert,))),
                port=ke_port,
            )
            with pytest.raises(KeFailed) as info:
                await nts_ke(net, wrong)
            assert info.value.reason == "tls:cert_invalid:unknown_ca"
            serverstats = await chronyc(workdir, "serverstats")
    stats = client.statistics()
    assert stats.synced and stats.ke_ok == 1 and stats.ntp_rejected == {}
    assert client.offset is not None and abs(client.offset) < 0.1
    assert client.delay is not None and 0 <= client.delay < 0.1
    ke_ok = [e.data for e in recorder.events if e.kind == "nts_ke_ok"]
    assert ke_ok[0]["cookies"] == 8 and ke_ok[0]["ntp"] == f"127.0.0.1:{ntp_port}"  # chrony's Port record
    # chronyd's counters (CSV: NTP received, dropped, cmd received, cmd dropped, log dropped, NTS-KE accepted,
    # NTS-KE dropped, authenticated NTP, ...)
    row = serverstats[0]
    assert int(row[5]) >= 1 and int(row[7]) >= 1, row


async def test_chronyd_client_authenticates_the_evsim_server(pki: Pki, workdir: Path) -> None:
    pki.write(workdir)
    clock = SimClock.start()
    recorder = Recorder(clock, echo=False)
    identity = Identity.from_cert_key(pki.server)
    server = NtsServer(
        NtsServerConfig("nts", "127.0.0.1", identity, ke_port=0, ntp_port=0), TcpNetwork(), clock, recorder
    )
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            assert server.ke_address is not None and server.ntp_address is not None
            config = (
                f"port 0\nnosystemcert\nntstrustedcerts {workdir}/root.pem\n"
                f"server 127.0.0.1 nts ntsport {server.ke_address[1]} iburst minpoll 0 maxpoll 0\n"
            )
            async with chronyd(workdir, config):
                while True:
                    auth = await chronyc(workdir, "authdata")
                    sources = await chronyc(workdir, "sources")
                    if sources and sources[0][1] == "*" and auth and int(auth[0][8]) > 0:
                        break
                    await trio.sleep(0.25)
            nursery.cancel_scope.cancel()
    # authdata CSV: name, mode, key id, AEAD id, key bits, last, attempts, NAKs, cookies, cookie length
    name, mode, _key_id, aead, bits, _last, _attempts, naks, cookies, length = auth[0]
    assert (name, mode, aead, bits, naks) == ("127.0.0.1", "NTS", "15", "256", "0")
    assert int(cookies) >= 1 and int(length) == 104  # this server's cookie format
    assert sources[0][:3] == ["^", "*", "127.0.0.1"]
    stats = server.statistics()
    assert stats.ke_ok >= 1 and stats.ntp_answered >= 1 and stats.ntp_naks == 0 and stats.ntp_dropped == {}
