"""Firmware: a 1,000-station rollout in virtual time, and HTTPS download throughput over loopback against curl.

    python -m bench.firmware [--stations N] [--size-mib M] [--repeats R] [--json]

1. **Rollout**: ``scenarios/firmware_rollout.toml`` (N stations, 80 % north / 20 % south: three HTTPS mirrors,
   one dies mid-rollout, one serves a tampered image, 8 / 8 / 2 Mbit/s links) in virtual time, in a subprocess
   of its own so its memory is its own: wall time, CPU time, peak RSS, and the rollout's own figures from the
   summary (installed, InvalidSignature, seconds to 50 / 95 / 100 % installed).
2. **Download throughput**: one evsim :class:`~evsim.nodes.fileserver.FileServer` on loopback TCP serves an
   M MiB file over TLS 1.3 (TLS_AES_128_GCM_SHA256, ECDSA P-256 certificate); evsim's client
   (:func:`evsim.link.transfer.download`) and curl (the reference client) download it from that same server with
   the same TLS settings (``--tlsv1.3 --tls13-ciphers TLS_AES_128_GCM_SHA256``, the same CA), R times each,
   alternating; the table shows the best MB/s of each and evsim's share of curl's. The server runs in a thread
   of this process and evsim's client in its main thread, so they share one interpreter lock, while curl is a
   process of its own: read the ratio as a lower bound of the client's.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import trio

from bench.common import bench_table, cpu_s, make_bench_pki, run_and_print
from evsim.clock import SimClock
from evsim.http import HttpLimits
from evsim.link.service import Endpoint, Service
from evsim.link.transfer import download
from evsim.net.tcp import TcpNetwork
from evsim.nodes.fileserver import FileServer, FileServerConfig
from evsim.pki.keys import load_cert_file, load_key_file
from evsim.recorder import Recorder
from evsim.tls import Identity, ServerTls, TlsProfile, TrustStore

SCENARIO = Path(__file__).resolve().parent.parent / "scenarios" / "firmware_rollout.toml"
PROFILE = TlsProfile(versions=("1.3",), cipher_suites={"1.3": ("TLS_AES_128_GCM_SHA256",)})
CURL_TLS = ("--tlsv1.3", "--tls13-ciphers", "TLS_AES_128_GCM_SHA256")
"""curl's options for :data:`PROFILE` (docs/tls-knobs-vs-tools.md)."""
TIMEOUT_S = 300.0
"""Bound on one download (either client)."""


# ---------------------------------------------------------------- 1. the rollout


def rollout(n: int) -> dict[str, Any]:
    """Run the shipped rollout scaled to ``n`` stations (in this process); its figures."""
    from evsim.scenario.loader import loads_scenario
    from evsim.scenario.runner import run_scenario

    north = n * 4 // 5
    text = (
        SCENARIO.read_text()
        .replace("count = 800", f"count = {north}")
        .replace("count = 200", f"count = {n - north}")
    )
    sc = loads_scenario(text, source=str(SCENARIO))
    cpu0, wall0 = cpu_s(), time.perf_counter()
    result = run_scenario(sc)
    wall, cpu = time.perf_counter() - wall0, cpu_s() - cpu0
    assert result.world is not None
    rows = {row[0]: row for row in result.world.summary().table("Firmware rollout").rows}
    north_row, south_row = rows.get(1), rows.get(2)
    return {
        "stations": n,
        "outcome": result.outcome,
        "error": result.error,
        "virtual_s": result.sim_elapsed,
        "wall_s": wall,
        "cpu_s": cpu,
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "installed": north_row[2] if north_row else 0,
        "invalid_signature": south_row[3] if south_row else 0,
        "t50_s": north_row[5] if north_row else "-",
        "t95_s": north_row[6] if north_row else "-",
        "t100_s": north_row[7] if north_row else "-",
    }


# ---------------------------------------------------------------- 2. download throughput


async def _serve(
    pki: dict[str, Path], body: bytes, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    clock = SimClock.start()
    identity = Identity(tuple(load_cert_file(pki["cert"])), load_key_file(pki["key"]))
    server = FileServer(
        FileServerConfig(
            name="files",
            host="127.0.0.1",
            port=0,
            files={"/fw/image.bin": body},
            limits=HttpLimits(max_body_bytes=len(body) + 1),
        ),
        network=TcpNetwork(),
        server_tls=ServerTls.build(PROFILE, identity),
        clock=clock,
        recorder=Recorder(clock, keep=1000),
    )
    async with trio.open_nursery() as nursery:
        address = await nursery.start(server.serve)
        task_status.started(address[1])


async def _evsim_download(pki: dict[str, Path], port: int, size: int) -> float:
    """Seconds evsim's client takes to download the file (connect, handshake, GET, body)."""
    trust = TrustStore("bench", tuple(load_cert_file(pki["ca"])))
    service = Service(
        "bench", (Endpoint("files", f"https://localhost:{port}/fw", profile=PROFILE, trust=trust),)
    )
    t0 = time.perf_counter()
    with trio.fail_after(TIMEOUT_S):
        result = await download(
            service,
            "/image.bin",
            TcpNetwork(),
            clock=SimClock.start(),
            limits=HttpLimits(max_body_bytes=size + 1),
            linger_s=0.0,  # curl does not wait for the server's end of stream either
        )
    elapsed = time.perf_counter() - t0
    if len(result.body) != size:
        raise RuntimeError(f"evsim downloaded {len(result.body)} of {size} bytes")
    return elapsed


def _curl_download(pki: dict[str, Path], port: int, size: int) -> float:
    """Seconds curl takes to download the file (its own ``time_total``)."""
    command = [
        "curl", "--silent", "--show-error", "--noproxy", "*", "--cacert", str(pki["ca"]), *CURL_TLS,
        "--output", "/dev/null", "--write-out", "%{time_total} %{size_download}",
        f"https://localhost:{port}/fw/image.bin",
    ]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, check=True)
    seconds, got = out.stdout.split()
    if int(got) != size:
        raise RuntimeError(f"curl downloaded {got} of {size} bytes")
    return float(seconds)


def throughput(size: int, repeats: int) -> dict[str, Any]:
    """Best MB/s of evsim's client and of curl against one evsim server (same file, same TLS settings)."""
    body = os.urandom(size)
    with tempfile.TemporaryDirectory(prefix="evsim-bench-fw-") as tmp:
        pki = make_bench_pki(tmp)
        ports: list[int] = []
        stop = threading.Event()

        async def server_thread_main() -> None:
            async with trio.open_nursery() as nursery:
                ports.append(await nursery.start(_serve, pki, body))
                while not stop.is_set():  # noqa: ASYNC110 - a thread's event, polled from trio
                    await trio.sleep(0.05)
                nursery.cancel_scope.cancel()

        server = threading.Thread(target=trio.run, args=(server_thread_main,), daemon=True)
        server.start()
        deadline = time.monotonic() + 30
        while not ports and time.monotonic() < deadline:
            time.sleep(0.01)
        if not ports:
            raise RuntimeError("the file server did not start")
        evsim_s: list[float] = []
        curl_s: list[float] = []
        try:
            for _ in range(repeats):
                evsim_s.append(trio.run(_evsim_download, pki, ports[0], size))
                curl_s.append(_curl_download(pki, ports[0], size))
        finally:
            stop.set()
            server.join(timeout=10)
    best_evsim, best_curl = size / min(evsim_s) / 1e6, size / min(curl_s) / 1e6
    return {
        "size_mib": size / (1 << 20),
        "repeats": repeats,
        "evsim_mb_s": best_evsim,
        "curl_mb_s": best_curl,
        "ratio": best_evsim / best_curl,
        "evsim_runs_s": evsim_s,
        "curl_runs_s": curl_s,
    }


# ---------------------------------------------------------------- output


def render(r: dict[str, Any], t: dict[str, Any] | None) -> str:
    """The tables ``make bench`` prints."""
    out = bench_table(
        "firmware-rollout",
        ["stations", "virtual s", "wall s", "CPU s", "max RSS MiB", "installed", "InvalidSignature", "50 % s", "95 % s", "100 % s"],
        [[r["stations"], f"{r['virtual_s']:.0f}", f"{r['wall_s']:.1f}", f"{r['cpu_s']:.1f}", f"{r['max_rss_mib']:.0f}",
          r["installed"], r["invalid_signature"], r["t50_s"], r["t95_s"], r["t100_s"]]],
        title="Firmware rollout in virtual time (scenarios/firmware_rollout.toml; x %: of the north group installed)",
        raw=r,
    )  # fmt: skip
    if t is None:
        return out + "\n(curl not installed: no download throughput)"
    rows = [
        ["evsim (evsim.link.transfer.download)", f"{t['evsim_mb_s']:.1f}", f"{t['ratio']:.2f}x"],
        ["curl (reference)", f"{t['curl_mb_s']:.1f}", "1.00x"],
    ]
    return (
        out
        + "\n\n"
        + bench_table(
            "firmware-download",
            ["client", "MB/s (best)", "of curl"],
            rows,
            title=f"HTTPS download over loopback: {t['size_mib']:.0f} MiB from one evsim file server, TLS 1.3 "
            f"AES-128-GCM, best of {t['repeats']}",
            raw=t,
        )
    )


def section() -> None:
    """``make bench``'s firmware section: the rollout in a subprocess, then the throughput (bounded)."""
    n = os.environ.get("BENCH_N", "1000")
    run_and_print(
        [sys.executable, "-m", "bench.firmware", "--stations", n], timeout=1500, what="firmware benchmark"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stations", type=int, default=1000)
    p.add_argument("--size-mib", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip-rollout", action="store_true")
    p.add_argument("--json", action="store_true", help="one JSON line instead of the tables")
    args = p.parse_args(argv)
    r = rollout(args.stations) if not args.skip_rollout else None
    t = throughput(args.size_mib << 20, args.repeats) if shutil.which("curl") else None
    if args.json:
        print(json.dumps({"rollout": r, "throughput": t}))
    elif r is not None:
        print(render(r, t))
    else:
        print(json.dumps(t))
    return 1 if r is not None and r["error"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
