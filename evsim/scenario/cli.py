"""``evsim run``, ``evsim validate`` and ``evsim report``: the scenario commands behind :mod:`evsim.cli`.

Theory of operation. Each command is a function of the parsed arguments that returns the process exit code;
:mod:`evsim.cli` parses the arguments and turns a :class:`~evsim.errors.ConfigError` into a message and exit
code 2. ``validate`` loads every file and runs the runner's ``preflight`` (what this version cannot run yet),
so a file that validates is one ``run`` accepts. ``run`` refuses a bad file before creating anything, then
creates the run directory, streams every event into its log while the run goes on (and into the live
display unless ``--no-live``), and afterwards writes the metrics, ``meta.json`` and the report; the report
and plots are always rendered from the run directory (:func:`evsim.metrics.rundir.rerender`), so ``report``
on a saved directory prints exactly what ``run`` printed. A run that did not complete still gets its
directory and a partial report, and exits 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import attrs

from evsim import __version__, interrupts
from evsim.errors import ConfigError
from evsim.metrics.canonical import canonical_log
from evsim.metrics.live import LiveProgress
from evsim.metrics.rundir import RunDir, rerender, tee
from evsim.metrics.topology import Topology
from evsim.net.capture import open_capture_file
from evsim.report import table
from evsim.scenario.loader import load_scenario
from evsim.scenario.runner import RunResult, preflight, run_scenario


def validate(args: argparse.Namespace) -> int:
    """Load and preflight every file; print one line each; exit 2 if any is invalid."""
    bad = 0
    for f in args.files:
        try:
            sc = load_scenario(f)
            preflight(sc)
        except ConfigError as exc:
            bad += 1
            print(f"evsim: {exc}", file=sys.stderr)
            continue
        sim = sc.simulation
        print(
            f"{f}: ok — {sim.name}: {len(sc.csms)} CSMS, {sc.station_count()} stations in {len(sc.stations)} "
            f"group(s), {len(sc.timeline)} timeline event(s), {sim.clock} clock, {sim.network} network"
        )
    return 2 if bad else 0


def run(args: argparse.Namespace) -> int:
    """Run a scenario file; write the run directory; print the summary. Exit 0 only if the run completed."""
    sc = load_scenario(args.file)
    if args.seed is not None:
        sc = attrs.evolve(sc, simulation=attrs.evolve(sc.simulation, seed=args.seed))
    preflight(sc)  # refuse before creating anything
    if args.pcap:
        open_capture_file(args.pcap).close()  # a path that cannot be written is refused before the run
    sim = sc.simulation
    from evsim.clock import real_utcnow

    rd = RunDir.create(Path(args.out), sim.name, real_utcnow())
    topology = sc.topology()
    # Ctrl-C during the run stops it (the result says "interrupted"); around it, it waits for whole files
    with interrupts.deferred():
        with rd.open_event_sink() as sink:
            pcap = args.pcap
            if pcap:
                print(f"evsim: capturing to {pcap}, TLS session secrets included", file=sys.stderr)
            if args.no_live:
                result = run_scenario(sc, sink=sink, pcap=pcap)
            else:
                with LiveProgress(sc.station_count(), sim.duration, title=f"evsim run {sim.name}") as live:
                    result = run_scenario(sc, sink=tee(sink), on_sample=live.update, pcap=pcap)
        rd.write_metrics_csv(result.samples)
        rd.write_meta(_meta(args.file, sc_result=result, topology=topology))
    text, pngs = rerender(rd.path, plots=not args.no_plots)
    print(text)
    if 0 < len(result.stations) <= PER_STATION_TABLE_MAX:
        print()
        print(station_links_table(result))
    if args.canonical_log:
        Path(args.canonical_log).write_text("\n".join(canonical_log(list(result.recorder.events))) + "\n")
    print(f"\nrun directory: {rd.path}")
    for png in pngs:
        print(f"  plot: {png}")
    if result.error:
        print(f"evsim: run {result.outcome}: {result.error}", file=sys.stderr)
    if result.outcome == "interrupted":
        return interrupts.EXIT_INTERRUPTED
    return 0 if result.ok else 1


PER_STATION_TABLE_MAX = 20
"""Fleets up to this size also get one row per station (each link's negotiated TLS)."""


def station_links_table(result: RunResult) -> str:
    """One row per station: its link to the CSMS as last negotiated, the CSMS endpoint that recorded its last
    BootNotification, and what the operator's endpoints (sharing its record) received from it."""
    last_boot: dict[str, str] = {}
    for e in sorted(result.recorder.of_kind("booted"), key=lambda e: e.t):  # stable: emission order at one t
        if e.node in result.csms and "station" in e.data:
            last_boot[str(e.data["station"])] = e.node
    records = result.station_records()
    rows: list[list[object]] = []
    for sid, st in result.stations.items():
        tls = st.tls_info
        csms = last_boot.get(sid, "-")
        rec = records.get(sid)
        rows.append(
            [
                sid,
                csms,
                tls.version if tls else "-",
                tls.cipher_iana if tls else "-",
                (tls.group or "-") if tls else "-",
                st.boots,
                rec.heartbeats if rec else 0,
                rec.tx_events() if rec else 0,
                "done" if st.done.is_set() else "not done",
            ]
        )
    return table(
        [
            "station",
            "last boot at",
            "TLS",
            "cipher suite",
            "key exchange",
            "boots",
            "heartbeats",
            "tx events",
            "state",
        ],
        rows,
        title="Station links (TLS as negotiated on each station's last connection; heartbeats and tx events: "
        "received by all the endpoints sharing the station's record)",
    )


def _meta(file: str, *, sc_result: RunResult, topology: Topology) -> dict[str, Any]:
    """The run directory's ``meta.json``: what ran (scenario, seed, evsim version, clock, network, topology),
    how it ended, and the OCPP message and offline-queue counts per station and per CSMS endpoint."""
    r = sc_result
    sim = r.scenario.simulation
    return {
        "scenario": sim.name,
        "description": sim.description,
        "expected_outcome": sim.outcome,
        "seed": sim.seed,
        "file": file,
        "started_utc": (sim.start.isoformat() if sim.start else None),
        "duration_s": r.sim_elapsed,
        "scenario_duration_s": sim.duration,
        "wall_time_s": round(r.wall_s, 3),
        "evsim_version": __version__,
        "outcome": r.outcome,
        "error": r.error,
        "clock": sim.clock,
        "network": sim.network,
        "stations_total": len(r.stations),
        "topology": topology.as_json(),
        "ocpp_messages": {sid: dict(rec.messages) for sid, rec in r.station_records().items()},
        "ocpp_messages_by_endpoint": {
            name: {sid: dict(by_action) for sid, by_action in c.received.items()}
            for name, c in r.csms.items()
        },
        "tx_queues": {
            sid: {
                "enqueued_total": q.enqueued_total,
                "delivered_total": q.delivered_total,
                "dropped_total": q.dropped_total,
                "queued": q.queued,
            }
            for sid, st in r.stations.items()
            for q in (st.queue.statistics(),)
        },
    }


def report(args: argparse.Namespace) -> int:
    text, pngs = rerender(Path(args.run_dir), plots=not args.no_plots)
    print(text)
    for png in pngs:
        print(f"  plot: {png}")
    return 0
