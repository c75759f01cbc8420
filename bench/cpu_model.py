"""The CPU model's prediction beside a real storm: N stations boot at once against one CSMS.

    python -m bench.cpu_model [--stations N] [--profile reference|FILE] [--json]

* **virtual**: a boot storm scenario (like ``scenarios/boot_storm.toml``) in virtual time with the CPU model
  on (``cpu = { cores = 1, profile = ... }``: the CSMS and the stations' process one core each).
* **real**: the same storm on the real clock over loopback TCP, in two processes as a user runs them: an
  ``evsim csms`` subprocess and this process holding the N stations (the ``evsim stations`` code: Station
  nodes on a TcpNetwork), real TLS 1.3, the same back-off.

Both runs use the same configuration: security profile 2, the CSMS's defaults (``max_handshakes`` 128), the
stations' connect window of ``evsim stations`` (64, ``--connect-window``; the scenario's ``connect_window``), so
the same admission code decides in both.

Both report, from their event logs (:func:`evsim.metrics.cpu.storm_figures`), the time to drain (start to the
last station's first accepted boot) and the p95 of the time to first boot, and the table gives the ratio
virtual / real (target: within 25 %). Shared machines are noisy: the real run is one sample of a loaded box.
"""

from __future__ import annotations

import argparse
import json
import math
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
from evsim.nodes.setup_window import DEFAULT_CONNECT_WINDOW
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
cpu = {{ cores = 1, profile = "{profile}", scale = {csms_scale} }}

[stations.storm]
count = {n}
id_pattern = "BS-{{n:05d}}"
csms = "main"
sessions = 0
retry_backoff = {{ wait_minimum = "3s", random_range = "3s", repeat_times = 4 }}
connect_window = {window}
cpu = {{ cores = 1, profile = "{profile}", scale = {stations_scale} }}
"""


def _figures(events: list[dict[str, Any]], ids: list[str]) -> dict[str, float]:
    return storm_figures(events, Topology(groups=dict.fromkeys(ids, "storm")))["storm"]


def virtual(
    n: int,
    profile: str,
    window: int = DEFAULT_CONNECT_WINDOW,
    *,
    csms_scale: float = 1.0,
    stations_scale: float = 1.0,
) -> dict[str, float]:
    """The model's prediction (the scales multiply each process's costs)."""
    t0 = time.perf_counter()
    text = SCENARIO.format(
        n=n,
        profile=profile,
        window=window,
        csms_scale=f"{csms_scale:.6f}",
        stations_scale=f"{stations_scale:.6f}",
    )
    sc = loads_scenario(text)
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


def real(n: int, window: int = DEFAULT_CONNECT_WINDOW) -> dict[str, float]:
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
            out, events = trio.run(_stations, n, port, anchors, proc.pid, window)
            if os.environ.get("EVSIM_BENCH_EVENTS"):  # the real run's event log, to look at its timeline
                with open(os.environ["EVSIM_BENCH_EVENTS"], "w", encoding="utf-8") as fh:
                    json.dump(events, fh)
            return out
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def _schedstat(pid: int) -> tuple[float, float]:
    """Seconds process ``pid``'s main thread has run and has waited runnable for a CPU (Linux
    ``/proc/PID/schedstat``; NaN elsewhere): the wait is what other processes on the machine cost it."""
    try:
        with open(f"/proc/{pid}/schedstat", encoding="ascii") as fh:
            run_ns, wait_ns = fh.read().split()[:2]
    except (OSError, ValueError):
        return float("nan"), float("nan")
    return int(run_ns) / 1e9, int(wait_ns) / 1e9


def _process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid`` so far (Linux /proc; NaN elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _stations(
    n: int, port: int, anchors: Any, csms_pid: int, window: int
) -> tuple[dict[str, float], list[dict[str, Any]]]:
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
    limiter = trio.CapacityLimiter(window) if window > 0 else None  # as evsim stations --connect-window
    for st in stations:
        st.connect_window = limiter
    me = os.getpid()
    t0, cpu0, csms0 = time.perf_counter(), time.process_time(), _process_cpu(csms_pid)
    sched0 = _schedstat(me), _schedstat(csms_pid)
    drained: dict[str, float] = {}
    recorder.emit("runner", "run_started")
    with trio.move_on_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            for st in stations:
                nursery.start_soon(st.run)
            for st in stations:
                await st.wait_online()
            # the drain's end: CPU and run-queue waits up to here (not the teardown below)
            drained["cpu_stations_s"] = time.process_time() - cpu0
            drained["cpu_csms_s"] = _process_cpu(csms_pid) - csms0
            sched1 = _schedstat(me), _schedstat(csms_pid)
            drained["wait_stations_s"] = sched1[0][1] - sched0[0][1]
            drained["wait_csms_s"] = sched1[1][1] - sched0[1][1]
            nursery.cancel_scope.cancel()
    events = [{"t": e.t, "node": e.node, "kind": e.kind, **e.data} for e in recorder.events]
    out = _figures(events, ids)
    out["wall_s"] = time.perf_counter() - t0
    out["cpu_stations_total_s"] = time.process_time() - cpu0
    out["cpu_csms_total_s"] = _process_cpu(csms_pid) - csms0
    out.update(drained)
    return out, events


NOTE = (
    "The model gives each process a core of its own. CPU rows: the model's busy time against the CPU each "
    "process spent from the start to the drain (not its set-up before, nor closing the connections after). On "
    "a shared machine a process also waits for a core while runnable (Linux schedstat), and each operation "
    "costs more CPU (caches, more wake-ups): the rows 'model at the real costs and shares' run the model again "
    "with each process's costs scaled to the CPU it really spent and divided by its share, which checks the "
    "queueing (order of service, admission, overlap) apart from the calibration. The target is the first two "
    "rows on a quiet machine (shares near 1)."
)


def _compare(label: str, model: float, real: float) -> list[str]:
    ratio = model / real if real else float("nan")
    return [label, f"{model:.2f}", f"{real:.2f}", f"{ratio:.2f}", "yes" if abs(ratio - 1) <= 0.25 else "no"]


def share(r: dict[str, float], side: str) -> float:
    """A real process's share of the time it was runnable (1: it never waited for a core)."""
    ran, waited = r[f"cpu_{side}_s"], r[f"wait_{side}_s"]
    return ran / (ran + waited) if ran + waited > 0 and math.isfinite(waited) else 1.0


def as_real(v: dict[str, float], r: dict[str, float]) -> dict[str, float]:
    """Scales for a second model run with the real run's costs and CPU: each process's costs times its real
    CPU over the model's busy time, divided by its share (a process that got a core half the time it could
    run served at half speed)."""
    return {
        f"{side}_scale": r[f"cpu_{side}_s"] / v[f"cpu_{side}_s"] / share(r, side)
        for side in ("stations", "csms")
    }


def render(
    n: int, v: dict[str, float], r: dict[str, float], w: dict[str, float], *, profile: str = "reference"
) -> str:
    """The comparison table: the model's figures beside the real run's, with their ratios; ``w`` is the model
    run again with the real run's costs and CPU shares (:func:`as_real`)."""
    rows = [
        _compare("time to drain s", v["drain_s"], r["drain_s"]),
        _compare("time to first boot p95 s", v["first_boot_p95"], r["first_boot_p95"]),
        _compare("time to first boot p50 s", v["first_boot_p50"], r["first_boot_p50"]),
        ["booted", f"{int(v['booted'])}", f"{int(r['booted'])}", "", ""],
        ["retries (back-off)", f"{int(v['retries'])}", f"{int(r['retries'])}", "", ""],
        _compare("CPU s to the drain, stations process", v["cpu_stations_s"], r["cpu_stations_s"]),
        _compare("CPU s to the drain, CSMS process", v["cpu_csms_s"], r["cpu_csms_s"]),
        [
            "CPU s after the drain (closing), stations / CSMS",
            "",
            _sides(r["cpu_stations_total_s"] - r["cpu_stations_s"], r["cpu_csms_total_s"] - r["cpu_csms_s"]),
            "",
            "",
        ],
        [
            "s waiting for a core, stations / CSMS",
            "0 / 0",
            _sides(r["wait_stations_s"], r["wait_csms_s"]),
            "",
            "",
        ],
        [
            "CPU share (ran / runnable), stations / CSMS",
            "1 / 1",
            _sides(share(r, "stations"), share(r, "csms")),
            "",
            "",
        ],
        _compare("time to drain, model at the real costs and shares s", w["drain_s"], r["drain_s"]),
        _compare("p95, model at the real costs and shares s", w["first_boot_p95"], r["first_boot_p95"]),
        ["wall s", f"{v['wall_s']:.1f}", f"{r['wall_s']:.1f}", "", ""],
    ]
    text = bench_table(
        "cpu-model",
        ["boot storm", "virtual + CPU model", "real, loopback", "virtual / real", "within 25 %"],
        rows,
        title=f"CPU model against a real storm, N = {n} (CSMS and stations: one process each; profile: {profile})",
        raw={"stations": n, "virtual": v, "real": r},
    )
    return text + "\n" + NOTE


HERE = "here"
"""``--profile here``: calibrate first, so the model runs on the costs of the machine the real storm runs on."""


def _sides(stations: float, csms: float) -> str:
    return f"{stations:.2f} / {csms:.2f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stations", type=int, default=500)
    p.add_argument(
        "--profile",
        default=HERE,
        help=f"shipped profile name or profile file; {HERE!r} (default): calibrate on this machine first "
        "(evsim calibrate), as the model's costs are this machine's",
    )
    p.add_argument(
        "--connect-window",
        type=int,
        default=DEFAULT_CONNECT_WINDOW,
        help="stations in connection set-up at once, both runs (evsim stations' default; 0: none)",
    )
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="evsim-bench-calibrate-") as tmp:
        profile = args.profile
        shown = profile
        if profile == HERE:
            profile = calibrate_here(f"{tmp}/here.json")
            shown = "calibrated on this machine just before (evsim calibrate)"
        return _compare_runs(args, profile, shown)


def calibrate_here(path: str) -> str:
    """Run ``evsim calibrate`` into ``path`` (about 10 s): the costs of this machine as it is now."""
    cmd = [sys.executable, "-m", "evsim", "calibrate", "--out", path, "--name", "here", "-q"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    return path


def _compare_runs(args: argparse.Namespace, profile: str, shown: str) -> int:
    v = virtual(args.stations, profile, args.connect_window)
    r = real(args.stations, args.connect_window)
    w = virtual(args.stations, profile, args.connect_window, **as_real(v, r))
    if args.json:
        print(json.dumps({"stations": args.stations, "virtual": v, "real": r, "virtual_as_real": w}))
    else:
        print(render(args.stations, v, r, w, profile=shown))
    return 0


def section() -> None:
    """The ``cpu-model`` section of ``make bench`` (N = ``BENCH_N``), in a subprocess, bounded in time."""
    print_module_section("bench.cpu_model", timeout=900, what="CPU model runs")


if __name__ == "__main__":
    raise SystemExit(main())
