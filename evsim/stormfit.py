"""A boot storm run twice, for real and in the CPU model, and a profile fitted to the real one.

Theory of operation. ``evsim calibrate`` measures each operation alone (one core, the other idle, a few
hundred repetitions), and on a shared or virtual machine the same operations cost more inside a storm: both
processes busy at once share caches and (on hyperthreads) execution units, thousands of connections miss
caches that a loop of fifty keeps warm, and the machine's speed drifts from one minute to the next. A
storm is what the model is for, so the last step of calibrating is one:

* :func:`real_storm`: ``n`` stations boot at once against one CSMS on the real clock over loopback TCP, in
  two processes as a user runs them (an ``evsim csms`` subprocess, the stations in this process as
  ``evsim stations`` runs them: Station nodes on a TcpNetwork, real TLS 1.3, security profile 2, the
  connect window). Each process's CPU is read when the last station has booted (not its set-up, nor the
  closing of the connections after).
* :func:`model_storm`: the same storm in virtual time with the CPU model on (one core per process).
* :func:`fit`: the profile whose model storm spends what each real process spent. Every kind belongs to the
  stations' side (``conn/client``, ``tls/client``, ``ws/client``, ``ocpp/call``), the CSMS's (``…/server``,
  ``ocpp/serve``) or both (``validate``, ``relay`` and the short prefixes). The shared kinds take the
  storm's overall ratio ``v`` = real CPU of both / model CPU of both; then each side's own kinds take the
  factor that makes that side's total exact: ``a = (real_stations - v * V_stations) / C_stations`` (``V``:
  what the model charged a side for shared kinds, ``C``: for its own), ``b`` likewise for the CSMS. The
  relative costs within a side stay as measured alone.

The fit is a calibration, not a prediction: a bench compares the fitted model with a real storm of another
size (``bench/cpu_model.py``). Real-clock loopback only; bounded (:data:`TIMEOUT_S`).
"""

from __future__ import annotations

import math
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import trio

from evsim import DEV_PASSWORD
from evsim.backoff import RetryBackOff
from evsim.clock import SimClock, real_utcnow
from evsim.cpu import CpuProfile, write_profile
from evsim.frozenmap import FrozenMap
from evsim.metrics.cpu import storm_figures
from evsim.metrics.topology import Topology
from evsim.net.tcp import TcpNetwork
from evsim.nodes.security import load_anchors, station_client_tls
from evsim.nodes.setup_window import DEFAULT_CONNECT_WINDOW
from evsim.nodes.station import Station
from evsim.nodes.station_model import StationConfig
from evsim.pki import init_dev_pki
from evsim.recorder import Recorder
from evsim.runtime import process_cpu, raise_open_file_limit, schedstat, tune_gc
from evsim.scenario.loader import loads_scenario
from evsim.scenario.runner import run_scenario

__all__ = [
    "BACKOFF",
    "STORM_SCENARIO",
    "TIMEOUT_S",
    "StormFit",
    "fit",
    "fit_to_storm",
    "model_storm",
    "real_storm",
    "side_of",
]

BACKOFF = RetryBackOff(wait_minimum=3.0, random_range=3.0, repeat_times=4)
"""The stations' back-off in both storms (the scenario's ``retry_backoff`` below)."""
TIMEOUT_S = 300.0
"""The real storm gives up after this long (a bounded load loop)."""

STORM_SCENARIO = """
[simulation]
duration = "10m"
stop_when_done = true
cpu = {{ cores = 1, profile = "{profile}" }}

[csms.main]
cpu = {{ cores = 1, profile = "{profile}", scale = {csms_scale}{csms_costs} }}

[stations.storm]
count = {n}
id_pattern = "BS-{{n:05d}}"
csms = "main"
sessions = 0
retry_backoff = {{ wait_minimum = "3s", random_range = "3s", repeat_times = 4 }}
connect_window = {window}
cpu = {{ cores = 1, profile = "{profile}", scale = {stations_scale}{stations_costs} }}
"""
"""The storm as a scenario (security profile 2 is a scenario's default, as in the real storm)."""

_STATIONS_OWN = ("conn/client", "tls/client", "ws/client", "ocpp/call")
_CSMS_OWN = ("conn/server", "tls/server", "ws/server", "ocpp/serve")


def side_of(kind: str) -> str:
    """``"stations"``, ``"csms"`` or ``"shared"``: whose process a profile entry ``kind`` is charged to."""
    for prefixes, side in ((_STATIONS_OWN, "stations"), (_CSMS_OWN, "csms")):
        if any(kind == p or kind.startswith(p + "/") for p in prefixes):
            return side
    return "shared"


def _figures(events: list[dict[str, Any]], ids: list[str]) -> dict[str, float]:
    return storm_figures(events, Topology(groups=dict.fromkeys(ids, "storm")))["storm"]


def model_storm(
    n: int,
    profile: str,
    window: int = DEFAULT_CONNECT_WINDOW,
    *,
    csms_scale: float = 1.0,
    stations_scale: float = 1.0,
    no_validation_cost: bool = False,
) -> dict[str, float]:
    """The storm in virtual time on ``profile`` (a shipped name or a file); the scales multiply each process's
    costs; ``no_validation_cost`` charges schema checks nothing. Figures as :func:`real_storm`'s, with each
    process's model CPU (``cpu_stations_s``, ``cpu_csms_s``)."""
    t0 = time.perf_counter()
    costs = ", costs = { validate = 0 }" if no_validation_cost else ""
    text = STORM_SCENARIO.format(
        n=n,
        profile=profile,
        window=window,
        csms_scale=f"{csms_scale:.6f}",
        stations_scale=f"{stations_scale:.6f}",
        csms_costs=costs,
        stations_costs=costs,
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
            raise RuntimeError("evsim csms exited before it listened")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"evsim csms did not listen on 127.0.0.1:{port} within {limit:.0f} s")


def real_storm(
    n: int, window: int = DEFAULT_CONNECT_WINDOW, *, events_out: list[dict[str, Any]] | None = None
) -> dict[str, float]:
    """The storm on the real clock: ``evsim csms`` in a subprocess, the ``n`` stations in this process.

    Figures: ``booted``, ``retries``, ``drain_s``, ``first_boot_p50`` / ``p95``, ``wall_s``, each process's
    CPU to the drain (``cpu_stations_s``, ``cpu_csms_s``) and in all (``…_total_s``), and the seconds each
    waited runnable for a core (``wait_…_s``). ``events_out`` receives the stations' event log."""
    raise_open_file_limit()
    tune_gc()  # as evsim csms and evsim stations run
    with tempfile.TemporaryDirectory(prefix="evsim-storm-") as pki:
        init_dev_pki(pki, host="localhost", now=real_utcnow())
        port = _free_port()
        cmd = [sys.executable, "-m", "evsim", "csms", "-q", "--listen", f"127.0.0.1:{port}", "--pki", pki]
        cmd += ["--password", DEV_PASSWORD, "--duration", str(int(TIMEOUT_S + 30))]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_listening(port, proc)
            anchors = load_anchors(f"{pki}/ca.crt")
            out, events = trio.run(_stations, n, port, anchors, proc.pid, window)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    if events_out is not None:
        events_out.extend(events)
    return out


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
            rng=random.Random(sid),
        )
        for sid in ids
    ]
    limiter = trio.CapacityLimiter(window) if window > 0 else None  # as evsim stations --connect-window
    for st in stations:
        st.connect_window = limiter
    me = os.getpid()
    t0, cpu0, csms0 = time.perf_counter(), time.process_time(), process_cpu(csms_pid)
    sched0 = schedstat(me), schedstat(csms_pid)
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
            drained["cpu_csms_s"] = process_cpu(csms_pid) - csms0
            sched1 = schedstat(me), schedstat(csms_pid)
            drained["wait_stations_s"] = sched1[0][1] - sched0[0][1]
            drained["wait_csms_s"] = sched1[1][1] - sched0[1][1]
            nursery.cancel_scope.cancel()
    events = [{"t": e.t, "node": e.node, "kind": e.kind, **e.data} for e in recorder.events]
    out = _figures(events, ids)
    out["wall_s"] = time.perf_counter() - t0
    out["cpu_stations_total_s"] = time.process_time() - cpu0
    out["cpu_csms_total_s"] = process_cpu(csms_pid) - csms0
    out.update(drained)
    return out, events


@attrs.frozen
class StormFit:
    """The factors :func:`fit` found: ``stations`` and ``csms`` multiply each side's own kinds, ``shared``
    the kinds both sides charge; ``n`` stations stormed."""

    n: int
    stations: float
    csms: float
    shared: float

    def describe(self) -> str:
        return (
            f"fitted to a real boot storm of {self.n} stations: stations' costs x{self.stations:.3f}, "
            f"CSMS's x{self.csms:.3f}, shared (validation) x{self.shared:.3f}"
        )


MIN_FACTOR = 0.05
"""No side's costs are fitted below this factor (a side whose own kinds the model charged almost nothing)."""


def fit(
    profile: CpuProfile,
    real: Mapping[str, float],
    model: Mapping[str, float],
    model_without_validation: Mapping[str, float],
    n: int,
) -> tuple[CpuProfile, StormFit]:
    """``profile`` scaled so that its model storm spends each side's real CPU (see the module docstring):
    ``real`` from :func:`real_storm`, ``model`` and ``model_without_validation`` from :func:`model_storm` on
    ``profile`` (the second with schema checks free, which separates what each side was charged for them)."""
    rs, rc = real["cpu_stations_s"], real["cpu_csms_s"]
    ms, mc = model["cpu_stations_s"], model["cpu_csms_s"]
    cs, cc = model_without_validation["cpu_stations_s"], model_without_validation["cpu_csms_s"]
    if not all(math.isfinite(x) and x >= 0 for x in (rs, rc, ms, mc, cs, cc)) or ms + mc <= 0:
        raise ValueError(f"cannot fit: real CPU {rs}/{rc} s, model {ms}/{mc} s")
    vs, vc = max(0.0, ms - cs), max(0.0, mc - cc)
    shared = (rs + rc) / (ms + mc)
    stations = max(MIN_FACTOR, (rs - shared * vs) / cs) if cs > 0 else shared
    csms = max(MIN_FACTOR, (rc - shared * vc) / cc) if cc > 0 else shared
    factor = {"stations": stations, "csms": csms, "shared": shared}

    def scaled(table: Mapping[str, float]) -> FrozenMap[str, float]:
        return FrozenMap({k: round(v * factor[side_of(k)], 2) for k, v in table.items()})

    found = StormFit(n=n, stations=stations, csms=csms, shared=shared)
    measured = {**profile.measured, "storm_fit": found.describe()}
    fitted = attrs.evolve(
        profile,
        costs=scaled(profile.costs),
        per_kib=scaled(profile.per_kib),
        measured=FrozenMap(measured),
    )
    return fitted, found


def fit_to_storm(
    profile: CpuProfile, n: int, window: int = DEFAULT_CONNECT_WINDOW, *, rounds: int = 3
) -> tuple[CpuProfile, StormFit, dict[str, float]]:
    """Run the model's storm of ``n`` twice on ``profile`` and the real one ``rounds`` times; return the
    profile fitted to the real storms' median CPU per side, the factors and the median real storm's
    figures (each side's CPU its median over the rounds: one storm on a shared machine is one noisy
    sample)."""
    with tempfile.TemporaryDirectory(prefix="evsim-fit-") as tmp:
        path = Path(tmp) / "parts.json"
        write_profile(profile, path)
        model = model_storm(n, str(path), window)
        bare = model_storm(n, str(path), window, no_validation_cost=True)
    storms = [real_storm(n, window) for _ in range(max(1, rounds))]
    real = dict(sorted(storms, key=lambda r: r["drain_s"])[len(storms) // 2])
    for key in ("cpu_stations_s", "cpu_csms_s"):
        real[key] = statistics.median(r[key] for r in storms)
    fitted, found = fit(profile, real, model, bare, n)
    return fitted, found, real
