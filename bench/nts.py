"""Benchmark: NTS-KE handshakes per second and NTS-protected NTP exchanges per second, evsim's NTS server
against chrony's, measured in the same run.

Both servers run as subprocesses on loopback with unprivileged ports and the same certificate (ECDSA P-256,
SAN 127.0.0.1), so each one's CPU can be read from ``/proc/<pid>/stat`` around each phase:

* **evsim**: ``python -m bench.nts --serve <dir>`` runs :class:`evsim.nodes.nts.NtsServer` over loopback TCP
  and UDP (evsim's real network backend) and prints its two ports;
* **chrony**: ``chronyd -d -x -U -u <user>`` with a config in a 0700 tmp directory (no system clock
  changes, no privileged port, no system service), ``local stratum 1``, ``ntsprocesses 0`` (NTS-KE in the main
  process, as evsim's single trio thread). It is terminated (then killed) when the benchmark ends. Without
  ``chronyd`` on the PATH (or in /usr/sbin) the chrony rows say so and the evsim rows still run.

One client drives both servers, from this process: evsim's :func:`~evsim.nodes.nts.nts_ke` for NTS-KE
(connect, TLS 1.3 with ALPN ``ntske/1``, request, response with eight cookies, key export) and
:class:`~evsim.nts.exchange.NtsAssociation` over a loopback UDP socket for NTP (each request spends one
cookie, each answer brings a fresh one, so one association runs as long as wanted). ``CONCURRENCY`` clients run
at once, closed loop, for ``BENCH_NTS_SECONDS`` (default 3) per phase, bounded by ``MAX_OPS`` operations too.
Rows: operations per second (wall), the server's CPU per operation, and evsim / chrony ratios. The client is
the same for both servers; on a shared two-core machine it competes with them for CPU, so read the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import getpass
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import trio
from cryptography.hazmat.primitives import serialization

from bench.common import bench_problem, bench_table
from evsim.clock import SimClock, real_utcnow
from evsim.net import TcpNetwork
from evsim.nodes.nts import KeFailed, NtsServer, NtsServerConfig, NtsSource, nts_ke, ntske_profile
from evsim.nts.errors import NtpRejected
from evsim.nts.exchange import NtpSample, NtsAssociation
from evsim.pki import CertificateAuthority
from evsim.recorder import Recorder
from evsim.runtime import process_cpu
from evsim.tls import ClientTls, Identity, TrustStore

CONCURRENCY = 4
"""Clients at once (closed loop): enough to keep a single-threaded server busy between client turns."""
MAX_OPS = 200_000
"""Upper bound of operations per phase (the time bound normally ends it first)."""
START_TIMEOUT_S = 15.0


def chronyd_path() -> str | None:
    return shutil.which("chronyd") or ("/usr/sbin/chronyd" if os.path.exists("/usr/sbin/chronyd") else None)


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_pki(directory: Path) -> CertificateAuthority:
    now = real_utcnow().replace(microsecond=0) - dt.timedelta(minutes=5)
    root = CertificateAuthority.create_root("evsim NTS bench root", now=now)
    server = root.issue_server("localhost", ips=("127.0.0.1",), now=now)
    (directory / "root.pem").write_bytes(root.cert.public_bytes(serialization.Encoding.PEM))
    (directory / "cert.pem").write_bytes(server.chain_pem())
    (directory / "key.pem").write_bytes(server.key_pem())
    os.chmod(directory / "key.pem", 0o600)
    return root


# ---------------------------------------------------------------------------- the servers


@contextlib.contextmanager
def _process(cmd: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_for(check: Callable[[], bool], proc: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not check():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start: {log.read_text(errors='replace')[-500:]}")
        time.sleep(0.05)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


@contextlib.contextmanager
def evsim_server(directory: Path) -> Iterator[tuple[int, int]]:
    """The evsim NTS server in a subprocess: yields (pid, NTS-KE port)."""
    ports = directory / "evsim.ports"
    log = directory / "evsim.log"
    with _process([sys.executable, "-m", "bench.nts", "--serve", str(directory)], log) as proc:
        _wait_for(lambda: ports.exists() and bool(ports.read_text().strip()), proc, "the evsim server", log)
        yield proc.pid, int(ports.read_text().split()[0])


@contextlib.contextmanager
def chrony_server(directory: Path, chronyd: str) -> Iterator[tuple[int, int]]:
    """chronyd as an NTS server (see the module docstring): yields (pid, NTS-KE port)."""
    ke_port, ntp_port = _free_port(socket.SOCK_STREAM), _free_port(socket.SOCK_DGRAM)
    conf = directory / "chrony.conf"
    conf.write_text(
        f"pidfile {directory}/chronyd.pid\nbindcmdaddress {directory}/chronyd.sock\ncmdport 0\n"
        f"bindaddress 127.0.0.1\nport {ntp_port}\nntsport {ke_port}\nallow 127.0.0.1\nlocal stratum 1\n"
        f"ntsserverkey {directory}/key.pem\nntsservercert {directory}/cert.pem\nntsprocesses 0\n"
        f"ntsdumpdir {directory}\n",
        encoding="utf-8",
    )
    log = directory / "chronyd.log"
    cmd = [chronyd, "-d", "-x", "-U", "-u", getpass.getuser(), "-f", str(conf)]
    with _process(cmd, log) as proc:
        _wait_for(lambda: _listening(ke_port), proc, "chronyd", log)
        yield proc.pid, ke_port


async def _serve(directory: Path) -> None:
    """``--serve``: run the evsim NTS server until terminated; write its ports to ``evsim.ports``."""
    from evsim.pki.keys import load_cert_file, load_key_file

    chain = load_cert_file(str(directory / "cert.pem"))
    key = load_key_file(str(directory / "key.pem"))
    clock = SimClock.start()
    recorder = Recorder(clock, echo=False)
    config = NtsServerConfig("nts", "127.0.0.1", Identity(tuple(chain), key), ke_port=0, ntp_port=0)
    server = NtsServer(config, TcpNetwork(), clock, recorder)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        assert server.ke_address is not None and server.ntp_address is not None
        (directory / "evsim.ports").write_text(f"{server.ke_address[1]} {server.ntp_address[1]}\n")
        await trio.sleep_forever()


# ---------------------------------------------------------------------------- the client


async def _ke_phase(source: NtsSource, seconds: float) -> tuple[int, float]:
    """NTS-KE exchanges completed in ``seconds`` by :data:`CONCURRENCY` closed-loop clients."""
    net = TcpNetwork()
    done = failed = 0
    t0 = time.perf_counter()
    end = t0 + seconds

    async def client() -> None:
        nonlocal done, failed
        while time.perf_counter() < end and done + failed < MAX_OPS:
            try:
                await nts_ke(net, source, timeout_s=10.0)
                done += 1
            except KeFailed:
                failed += 1

    async with trio.open_nursery() as nursery:
        for _ in range(CONCURRENCY):
            nursery.start_soon(client)
    if failed:
        print(f"  ! {failed} NTS-KE exchanges failed", file=sys.stderr)
    return done, time.perf_counter() - t0


async def _ntp_phase(source: NtsSource, seconds: float) -> tuple[int, float]:
    """NTS-protected NTP exchanges completed in ``seconds`` by :data:`CONCURRENCY` clients, one association
    (one NTS-KE, untimed) and one UDP socket each."""
    net = TcpNetwork()
    results = [await nts_ke(net, source) for _ in range(CONCURRENCY)]
    done = lost = 0
    t0 = time.perf_counter()
    end = t0 + seconds

    async def client(i: int) -> None:
        nonlocal done, lost
        ke = results[i]
        assoc = NtsAssociation(ke.aead, ke.c2s, ke.s2c, ke.cookies)
        sock = await net.bind_datagram("127.0.0.1", 0)
        target = (ke.ntp_host, ke.ntp_port)
        try:
            while time.perf_counter() < end and done + lost < MAX_OPS:
                await sock.send_to(assoc.request(time.time()), target)
                with trio.move_on_after(1.0) as waited:
                    while True:
                        data, _ = await sock.receive_from()
                        try:
                            if isinstance(assoc.receive(data, time.time()), NtpSample):
                                break
                        except NtpRejected:
                            continue
                if waited.cancelled_caught:
                    lost += 1  # the answer's cookie is gone with it: a lost exchange costs one cookie
                    if assoc.needs_ke:
                        return
                else:
                    done += 1
        finally:
            await sock.aclose()

    async with trio.open_nursery() as nursery:
        for i in range(CONCURRENCY):
            nursery.start_soon(client, i)
    if lost:
        print(f"  ! {lost} NTP requests unanswered within 1 s", file=sys.stderr)
    return done, time.perf_counter() - t0


def _measure(pid: int, port: int, root: CertificateAuthority, seconds: float) -> dict[str, float]:
    source = NtsSource(
        "bench", "127.0.0.1", ClientTls.build(ntske_profile(), TrustStore("b", (root.cert,))), port=port
    )
    out: dict[str, float] = {}
    for name, phase in (("ke", _ke_phase), ("ntp", _ntp_phase)):
        before = process_cpu(pid)
        n, wall = trio.run(phase, source, seconds)
        cpu = process_cpu(pid) - before
        out[f"{name}_per_s"] = n / wall if wall else 0.0
        out[f"{name}_server_us"] = cpu / n * 1e6 if n else float("nan")
        out[f"{name}_n"] = n
    return out


def run(seconds: float) -> tuple[dict[str, float], dict[str, float] | str]:
    """Measure evsim's server, then chrony's (or the reason it was skipped)."""
    with tempfile.TemporaryDirectory(prefix="evsim-bench-nts-") as tmp:
        directory = Path(tmp)
        os.chmod(directory, 0o700)
        root = _write_pki(directory)
        with evsim_server(directory) as (pid, port):
            evsim = _measure(pid, port, root, seconds)
        chronyd = chronyd_path()
        if chronyd is None:
            return evsim, "chronyd is not installed (Debian package chrony): no chrony figures"
        try:
            with chrony_server(directory, chronyd) as (pid, port):
                chrony: dict[str, float] | str = _measure(pid, port, root, seconds)
        except RuntimeError as exc:
            chrony = f"chronyd could not be measured: {exc}"
    return evsim, chrony


def render(evsim: dict[str, float], chrony: dict[str, float] | str) -> str:
    rows = []
    for key, what in (("ke", "NTS-KE handshakes"), ("ntp", "NTS-protected NTP exchanges")):
        e = evsim[f"{key}_per_s"]
        row = [what, f"{e:,.0f}", f"{evsim[f'{key}_server_us']:,.0f}"]
        if isinstance(chrony, dict):
            c = chrony[f"{key}_per_s"]
            row += [
                f"{c:,.0f}",
                f"{chrony[f'{key}_server_us']:,.0f}",
                f"{e / c:.2f}x" if c else "-",
                f"{evsim[f'{key}_server_us'] / chrony[f'{key}_server_us']:.2f}x",
            ]
        else:
            row += ["-", "-", "-", "-"]
        rows.append(row)
    text = bench_table(
        "nts",
        ["per second (wall)", "evsim /s", "evsim server CPU us", "chrony /s", "chrony server CPU us",
         "evsim/chrony rate", "evsim/chrony CPU"],
        rows,
        title=f"NTS servers on loopback ({CONCURRENCY} closed-loop clients, one evsim client for both)",
        raw={"evsim": evsim, "chrony": chrony},
    )  # fmt: skip
    if isinstance(chrony, str):
        text += "\n" + bench_problem(chrony)
    return text


def env_seconds() -> float:
    return float(os.environ.get("BENCH_NTS_SECONDS", "3"))


def section() -> None:
    """The ``nts`` section of ``make bench`` (``python -m bench nts``)."""
    print(render(*run(env_seconds())))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.nts", description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=env_seconds(), help="seconds per phase (default 3)")
    p.add_argument("--serve", metavar="DIR", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        with contextlib.suppress(KeyboardInterrupt):
            trio.run(_serve, Path(args.serve))
        return 0
    print(render(*run(args.seconds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
