"""The CPU model's prediction beside a real storm: N stations boot at once against one CSMS.

    python -m bench.cpu_model [--stations N] [--profile reference|FILE] [--json]

* **virtual**: a boot storm scenario (like ``scenarios/boot_storm.toml``) in virtual time with the CPU model
  on (``cpu = { cores = 1, profile = ... }``: the CSMS and the stations' process one core each).
* **real**: the same storm on the real clock over loopback TCP, in two processes as a user runs them: an
  ``evsim csms`` subprocess and this process holding the N stations (the ``evsim stations`` code: Station
  nodes on a TcpNetwork), real TLS 1.3, the same back-off.

Both report, from their event logs (:func:`evsim.metrics.cpu.storm_figures`), the time to drain (start to the
last station's first accepted boot) and the p95 of the time to first boot, and the table gives the ratio
virtual / real (target: within 25 %). Shared machines are noisy: the real run is one sample of a loaded box.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

import trio

from bench.common import bench_table, print_module_section, raise_nofile
from evsim import DEV_PASSWORD
from evsim.backoff import RetryBackOff
from evsim.clock import SimClock, real_utcnow
from evsim.metrics.cpu import storm_figures
from evsim.metrics.topology import Topology
from evsim.net.tcp import TcpNetwork
from evsim.nodes.security import load_anchors, station_client_tls
from evsim.nodes.station import Station
from evsim.nodes.station_model import StationConfig
from evsim.pki import init_dev_pki
from evsim.recorder import Recorder
from evsim.runtime import tune_gc
from evsim.scenario.loader import loads_scenario
from evsim.scenario.runner import run_scenario

BACKOFF = RetryBackOff(wait_minimum=3.0, random_range=3.0, repeat_times=4)
TIMEOUT_S = 300.0
"""The real storm gives up after this long (bounded load loop)."""

SCENARIO = """
[simulation]
duration = "10m"
stop_when_done = true
cpu = {{ cores = 1, profile = "{profile}" }}

[csms.main]

[stations.storm]
count = {n}
id_pattern = "BS-{{n:05d}}"
csms = "main"
sessions = 0
retry_backoff = {{ wait_minimum = "3s", random_range = "3s", repeat_times = 4 }}
"""


def _figures(events: list[dict[str, Any]], ids: list[str]) -> dict[str, float]:
    return storm_figures(events, Topology(groups=dict.fromkeys(ids, "storm")))["storm"]


def virtual(n: int, profile: str) -> dict[str, float]:
    """The model's prediction."""
    t0 = time.perf_counter()
    sc = loads_scenario(SCENARIO.format(n=n, profile=profile))
    result = run_scenario(sc)
    events = [{"t": e.t, "node": e.node, "kind": e.kind, **e.data} for e in result.recorder.events]
    out = _figures(events, sc.station_ids())
    out["wall_s"] = time.perf_counter() - t0
    for e in events:
        if e["kind"] == "cpu_usage":
            out["cpu_stations_s" if e["cpu"] == "storm" else "cpu_csms_s"] = float(e["busy"])
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes], limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("evsim csms exited")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError("evsim csms did not listen in time")


def real(n: int) -> dict[str, float]:
    """The same storm on the real clock: ``evsim csms`` in a subprocess, the stations here."""
    raise_nofile()
    tune_gc()  # as evsim csms and evsim stations run
    with tempfile.TemporaryDirectory(prefix="evsim-cpu-bench-") as pki:
        init_dev_pki(pki, host="localhost", now=real_utcnow())
        port = _free_port()
        cmd = [sys.executable, "-m", "evsim", "csms", "-q", "--listen", f"127.0.0.1:{port}", "--pki", pki]
        cmd += ["--password", DEV_PASSWORD, "--duration", str(TIMEOUT_S + 30)]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_listening(port, proc)
            anchors = load_anchors(f"{pki}/ca.crt")
            return trio.run(_stations, n, port, anchors, proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def _process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid`` so far (Linux /proc; NaN elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _stations(n: int, port: int, anchors: Any, csms_pid: int) -> dict[str, float]:
    clock = SimClock.start()
    recorder = Recorder(clock)
    net = TcpNetwork(resolve={"localhost": "127.0.0.1"})
    ids = [f"BS-{i:05d}" for i in range(1, n + 1)]
    tls = station_client_tls(anchors)
    stations = [
        Station(
            StationConfig(
                station_id=sid,
                csms_url=f"wss://localhost:{port}/ocpp",
                security_profile=2,
                password=DEV_PASSWORD,
                sessions=0,
                backoff=BACKOFF,
            ),
            network=net,
            client_tls=tls,
            clock=clock,
            recorder=recorder,
            rng=__import__("random").Random(sid),
        )
        for sid in ids
    ]
    t0, cpu0, csms0 = time.perf_counter(), time.process_time(), _process_cpu(csms_pid)
    recorder.emit("runner", "run_started")
    with trio.move_on_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            for st in stations:
                nursery.start_soon(st.run)
            for st in stations:
                await st.wait_online()
            nursery.cancel_scope.cancel()
    cpu_stations, cpu_csms = time.process_time() - cpu0, _process_cpu(csms_pid) - csms0
    events = [{"t": e.t, "node": e.node, "kind": e.kind, **e.data} for e in recorder.events]
    out = _figures(events, ids)
    out["wall_s"] = time.perf_counter() - t0
    out["cpu_stations_s"], out["cpu_csms_s"] = cpu_stations, cpu_csms
    return out


NOTE = (
    "The model assumes each process has a core of its own; on a shared machine a process gets less (its CPU "
    "share: CPU seconds over the drain), so the rows 'at that share' divide the model's times by the share the "
    "real run got. The CPU rows compare the model's busy time with what each process really spent."
)


def _compare(label: str, model: float, real: float) -> list[str]:
    ratio = model / real if real else float("nan")
    return [label, f"{model:.2f}", f"{real:.2f}", f"{ratio:.2f}", "yes" if abs(ratio - 1) <= 0.25 else "no"]


def render(n: int, v: dict[str, float], r: dict[str, float]) -> str:
    """The comparison table: the model's figures beside the real run's, with their ratios."""
    rows = [
        _compare("time to drain s", v["drain_s"], r["drain_s"]),
        _compare("time to first boot p95 s", v["first_boot_p95"], r["first_boot_p95"]),
        ["time to first boot p50 s", f"{v['first_boot_p50']:.2f}", f"{r['first_boot_p50']:.2f}", "", ""],
        ["booted", f"{int(v['booted'])}", f"{int(r['booted'])}", "", ""],
        ["retries (back-off)", f"{int(v['retries'])}", f"{int(r['retries'])}", "", ""],
        _compare("CPU s, stations process", v["cpu_stations_s"], r["cpu_stations_s"]),
        _compare("CPU s, CSMS process", v["cpu_csms_s"], r["cpu_csms_s"]),
    ]
    share = max(r["cpu_stations_s"], r["cpu_csms_s"]) / r["drain_s"] if r["drain_s"] else float("nan")
    rows.append(["busiest process's CPU share of the drain", "1.00", f"{share:.2f}", "", ""])
    rows.append(_compare("time to drain at that share s", v["drain_s"] / share, r["drain_s"]))
    rows.append(_compare("p95 at that share s", v["first_boot_p95"] / share, r["first_boot_p95"]))
    rows.append(["wall s", f"{v['wall_s']:.1f}", f"{r['wall_s']:.1f}", "", ""])
    text = bench_table(
        "cpu-model",
        ["boot storm", "virtual + CPU model", "real, loopback", "virtual / real", "within 25 %"],
        rows,
        title=f"CPU model against a real storm, N = {n} (CSMS and stations: one process each)",
        raw={"stations": n, "virtual": v, "real": r},
    )
    return text + "\n" + NOTE


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stations", type=int, default=500)
    p.add_argument("--profile", default="reference", help="shipped profile name or profile file")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    v = virtual(args.stations, args.profile)
    r = real(args.stations)
    if args.json:
        print(json.dumps({"stations": args.stations, "virtual": v, "real": r}))
    else:
        print(render(args.stations, v, r))
    return 0


def section() -> None:
    """The ``cpu-model`` section of ``make bench`` (N = ``BENCH_N``), in a subprocess, bounded in time."""
    print_module_section("bench.cpu_model", timeout=900, what="CPU model runs")


if __name__ == "__main__":
    raise SystemExit(main())
