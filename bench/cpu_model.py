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
import subprocess
import sys
import tempfile
from typing import Any

from bench.common import bench_table, print_module_section
from evsim.nodes.setup_window import DEFAULT_CONNECT_WINDOW
from evsim.stormfit import model_storm, real_storm


def real(n: int, window: int = DEFAULT_CONNECT_WINDOW) -> dict[str, float]:
    """The same storm on the real clock: ``evsim csms`` in a subprocess, the stations here."""
    events: list[dict[str, Any]] = []
    out = real_storm(n, window, events_out=events)
    if os.environ.get("EVSIM_BENCH_EVENTS"):  # the real run's event log, to look at its timeline
        with open(os.environ["EVSIM_BENCH_EVENTS"], "w", encoding="utf-8") as fh:
            json.dump(events, fh)
    return out


NOTE = (
    "The model gives each process a core of its own. CPU rows: the model's busy time against the CPU each "
    "process spent from the start to the drain (not its set-up before, nor closing the connections after). On "
    "a shared machine a process also waits for a core while runnable (Linux schedstat), and each operation "
    "costs more CPU (caches, more wake-ups): the rows 'model at the real costs and shares' run the model again "
    "with each process's costs scaled to the CPU it really spent and divided by its share, which checks the "
    "queueing (order of service, admission, overlap) apart from the calibration; the rows 'model at the real "
    "shares' keep the profile's costs and divide them by each process's share only: the prediction for a machine "
    "as busy as this one was. The target is the first two rows on a quiet machine (shares near 1)."
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


def shares_only(r: dict[str, float]) -> dict[str, float]:
    """Scales for a model run on the profile's costs with each process slowed by its real share only: the
    model's prediction for the machine as busy as it was, which leaves the calibration to be checked."""
    return {f"{side}_scale": 1 / share(r, side) for side in ("stations", "csms")}


def render(
    n: int,
    v: dict[str, float],
    r: dict[str, float],
    w: dict[str, float],
    *,
    profile: str = "reference",
    shared: dict[str, float] | None = None,
) -> str:
    """The comparison table: the model's figures beside the real run's, with their ratios; ``w`` is the model
    run again with the real run's costs and CPU shares (:func:`as_real`), ``shared`` with the profile's costs
    and the real shares (:func:`shares_only`)."""
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
        *(
            [
                _compare("time to drain, model at the real shares s", shared["drain_s"], r["drain_s"]),
                _compare("p95, model at the real shares s", shared["first_boot_p95"], r["first_boot_p95"]),
            ]
            if shared is not None
            else []
        ),
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
            shown = "calibrated on this machine just before (evsim calibrate: operations, fitted to a storm of 300)"
        return _compare_runs(args, profile, shown)


def calibrate_here(path: str) -> str:
    """Run ``evsim calibrate`` into ``path`` (about 20 s: the operations alone, then fitted to a real storm of
    300 stations, :mod:`evsim.stormfit`): the costs of this machine as it is now."""
    cmd = [sys.executable, "-m", "evsim", "calibrate", "--out", path, "--name", "here", "-q"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    return path


def _compare_runs(args: argparse.Namespace, profile: str, shown: str) -> int:
    v = model_storm(args.stations, profile, args.connect_window)
    r = real(args.stations, args.connect_window)
    runs = {}
    for label, scales in (("as_real", as_real(v, r)), ("shares", shares_only(r))):
        runs[label] = model_storm(
            args.stations,
            profile,
            args.connect_window,
            csms_scale=scales["csms_scale"],
            stations_scale=scales["stations_scale"],
        )
    w, at_shares = runs["as_real"], runs["shares"]
    if args.json:
        print(
            json.dumps(
                {
                    "stations": args.stations,
                    "virtual": v,
                    "real": r,
                    "virtual_as_real": w,
                    "virtual_at_real_shares": at_shares,
                }
            )
        )
    else:
        print(render(args.stations, v, r, w, profile=shown, shared=at_shares))
    return 0


def section() -> None:
    """The ``cpu-model`` section of ``make bench`` (N = ``BENCH_N``), in a subprocess, bounded in time."""
    print_module_section("bench.cpu_model", timeout=900, what="CPU model runs")


if __name__ == "__main__":
    raise SystemExit(main())
