"""``evsim run``, ``evsim validate`` and ``evsim report``: the scenario commands behind :mod:`evsim.cli`.

Theory of operation. Each command is a function of the parsed arguments that returns the process exit code;
:mod:`evsim.cli` parses the arguments and turns a :class:`~evsim.errors.ConfigError` into a message and exit
code 2. ``validate`` loads every file and runs the runner's ``preflight`` (what this version cannot run yet),
so a file that validates is one ``run`` accepts; it reports every error of a file, not only the first
(:mod:`evsim.scenario.diagnose`). ``run`` refuses a bad file before creating anything, then
creates the run directory, streams every event into its log while the run goes on (and into the live
display unless ``--no-live``), and afterwards writes the metrics, ``meta.json`` and the report; the report
and plots are always rendered from the run directory (:func:`evsim.metrics.rundir.rerender`, which also
writes ``summary.json``), so ``report`` on a saved directory prints exactly what ``run`` printed. With
``--json`` the commands print one JSON document on standard output instead of text (live progress and
errors go to standard error). A run that did not complete still gets its
directory and a partial report, and exits 1.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from evsim import __version__, interrupts
from evsim.errors import ConfigError
from evsim.metrics.canonical import canonical_log
from evsim.metrics.live import LiveProgress
from evsim.metrics.rundir import RunDir, read_summary_json, rerender, tee
from evsim.metrics.summary import Table
from evsim.metrics.summary_json import table_document
from evsim.metrics.topology import Topology
from evsim.net.capture import open_capture_file
from evsim.recorder import DEFAULT_KEEP, Event
from evsim.scenario.diagnose import scenario_errors
from evsim.scenario.model import Scenario
from evsim.scenario.runner import RunResult, preflight, run_scenario
from evsim.scenario.shard import ShardPlan, scenario_run_id


def validate(args: argparse.Namespace) -> int:
    """Load and preflight every file and report every error of each (:mod:`evsim.scenario.diagnose`): one
    line per valid file and per error (or one JSON document with ``--json``); exit 2 if any is invalid."""
    results = []
    for f in args.files:
        sc, errors = scenario_errors(f)
        results.append(_validation(f, sc if not errors else None, errors))
        if args.json:
            continue
        for exc in errors:
            print(f"evsim: {exc}", file=sys.stderr)
        if errors:
            print(f"{f}: {len(errors)} error{'s' if len(errors) > 1 else ''}", file=sys.stderr)
        elif sc is not None:
            sim = sc.simulation
            print(
                f"{f}: ok — {sim.name}: {len(sc.csms)} CSMS, {sc.station_count()} stations in "
                f"{len(sc.stations)} group(s), {len(sc.timeline)} timeline event(s), {sim.clock} clock, "
                f"{sim.network} network"
            )
    ok = all(r["ok"] for r in results)
    if args.json:
        print_json({"ok": ok, "files": results})
    return 0 if ok else 2


def _validation(file: str, sc: Scenario | None, errors: list[ConfigError]) -> dict[str, Any]:
    """One file's entry in ``evsim validate --json``."""
    out: dict[str, Any] = {"file": file, "ok": sc is not None, "errors": [error_json(e) for e in errors]}
    if sc is not None:
        sim = sc.simulation
        out["scenario"] = {
            "name": sim.name,
            "csms": len(sc.csms),
            "stations": sc.station_count(),
            "station_groups": len(sc.stations),
            "timeline_events": len(sc.timeline),
            "clock": sim.clock,
            "network": sim.network,
            "duration_s": sim.duration,
        }
    return out


def error_json(exc: ConfigError) -> dict[str, Any]:
    """A configuration error as JSON: where (file, line, field path), what, the bad value, the fix."""
    return {
        "file": exc.file,
        "line": exc.line,
        "path": exc.path,
        "message": exc.message,
        "value": exc.value,
        "fix": exc.fix,
        "text": str(exc),
    }


def print_json(doc: object) -> None:
    """``doc`` on standard output as indented JSON (values JSON cannot hold are written as text)."""
    print(json.dumps(doc, indent=2, ensure_ascii=False, default=str))


def run(args: argparse.Namespace, *, tell: Callable[[Path, int, bool], object] | None = None) -> int:
    """Run a scenario file; write the run directory; print the summary (or, with ``--json``, the summary
    document). Exit 0 only if the run completed.

    ``tell(run_dir, depth, as_json)`` gives the story of the run for ``--explain`` (the explain layer sits above
    this one, so the command line passes it in): its JSON form or its text.
    """
    sc, errors = scenario_errors(args.file)
    if sc is None or errors:  # every error at once, as evsim validate says them
        for exc in errors:
            print(f"evsim: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.seed is not None:
        sc = attrs.evolve(sc, simulation=attrs.evolve(sc.simulation, seed=args.seed))
    shard = getattr(args, "shard", None)
    preflight(sc, shard)  # refuse before creating anything
    if args.pcap:
        open_capture_file(args.pcap).close()  # a path that cannot be written is refused before the run
    sim = sc.simulation
    from evsim.clock import real_utcnow

    plan = None if shard is None else ShardPlan.of(sc, shard)
    name = sim.name if shard is None else f"{sim.name}-shard-{shard.index}-of-{shard.count}"
    rd = RunDir.create(Path(args.out), name, real_utcnow())
    topology = sc.topology()
    if plan is not None:  # the shard's stations only: the merge checks no station is in two shards
        topology = attrs.evolve(
            topology, groups={sid: g for sid, g in topology.groups.items() if sid in plan.members}
        )
    # On loopback TCP, say where each node listens as soon as it does (a capture filter needs the ports).
    announce = _announce_listening if sim.network == "tcp" else _ignore
    # Ctrl-C during the run stops it (the result says "interrupted"); around it, it waits for whole files
    with interrupts.deferred():
        with rd.open_event_sink() as sink:
            pcap = args.pcap
            if pcap:
                print(f"evsim: capturing to {pcap}, TLS session secrets included", file=sys.stderr)
            # a canonical log needs every event in memory, not the recorder's last DEFAULT_KEEP
            keep = None if args.canonical_log else DEFAULT_KEEP
            if args.no_live:
                result = run_scenario(sc, sink=tee(sink, announce), pcap=pcap, keep_events=keep, shard=shard)
            else:
                with LiveProgress(
                    sc.station_count() if plan is None else len(plan.members),
                    sim.duration,
                    title=f"evsim run {name}",
                    to_stderr=args.json,
                ) as live:
                    result = run_scenario(
                        sc,
                        sink=tee(sink, announce),
                        on_sample=live.update,
                        pcap=pcap,
                        keep_events=keep,
                        shard=shard,
                    )
        rd.write_metrics_csv(result.samples)
        meta = _meta(args.file, sc_result=result, topology=topology)
        if plan is not None:  # what 'evsim report --merge' checks the shards of one run by
            meta["scenario_run"] = scenario_run_id(Path(args.file).read_bytes(), sc)
            meta["shard"] = plan.as_json()
            # this process's peak resident memory (Linux: KiB): what a shard of this size needs
            usage = resource.getrusage(resource.RUSAGE_SELF)
            meta["peak_rss_mib"] = round(usage.ru_maxrss / 1024, 1)
            meta["cpu_s"] = round(usage.ru_utime + usage.ru_stime, 3)  # start and run, before the report
        rd.write_meta(meta)
    text, pngs = rerender(rd.path, plots=not args.no_plots)
    links = station_links_table(result) if 0 < len(result.stations) <= PER_STATION_TABLE_MAX else None
    if args.canonical_log:
        Path(args.canonical_log).write_text("\n".join(canonical_log(list(result.recorder.events))) + "\n")
    if args.json:
        doc = report_json(rd.path, pngs)
        if links is not None:
            doc["station_links"] = table_document(links)
        if args.explain and tell is not None:
            doc["story"] = tell(rd.path, args.explain, True)
        print_json(doc)
    else:
        print(text)
        if links is not None:
            print()
            print(links.render())
        print(f"\nrun directory: {rd.path}")
        for png in pngs:
            print(f"  plot: {png}")
        if args.explain and tell is not None:
            print()
            print(tell(rd.path, args.explain, False))
    if result.error:
        print(f"evsim: run {result.outcome}: {result.error}", file=sys.stderr)
    if result.outcome == "interrupted":
        return interrupts.EXIT_INTERRUPTED
    return 0 if result.ok else 1


def _announce_listening(event: Event) -> None:
    if event.kind == "listening":
        print(f"{event.node} listening on {event.data.get('address', '?')}", file=sys.stderr, flush=True)


def _ignore(event: Event) -> None:
    pass


def report_json(run_dir: Path, pngs: list[Path]) -> dict[str, Any]:
    """What ``run --json`` and ``report --json`` print: the run directory, its plots and its summary."""
    return {
        "run_directory": str(run_dir),
        "plots": [str(p) for p in pngs],
        "summary": read_summary_json(run_dir),
    }


PER_STATION_TABLE_MAX = 20
"""Fleets up to this size also get one row per station (each link's negotiated TLS)."""


def station_links_table(result: RunResult) -> Table:
    """One row per station: its link to the CSMS as last negotiated, the CSMS endpoint that recorded its last
    BootNotification, and what the operator's endpoints (sharing its record) received from it."""
    last_boot: dict[str, str] = {}
    for e in sorted(result.recorder.of_kind("booted"), key=lambda e: e.t):  # stable: emission order at one t
        if e.node in result.csms and "station" in e.data:
            last_boot[str(e.data["station"])] = e.node
    records = result.station_records()
    rows: list[tuple[object, ...]] = []
    for sid, st in result.stations.items():
        tls = st.tls_info
        csms = last_boot.get(sid, "-")
        rec = records.get(sid)
        rows.append(
            (
                sid,
                csms,
                tls.version if tls else "-",
                tls.cipher_iana if tls else "-",
                (tls.group or "-") if tls else "-",
                st.boots,
                rec.heartbeats if rec else 0,
                rec.tx_events() if rec else 0,
                "done" if st.done.is_set() else "not done",
            )
        )
    return Table(
        "Station links (TLS as negotiated on each station's last connection; heartbeats and tx events: "
        "received by all the endpoints sharing the station's record)",
        (
            "station",
            "last boot at",
            "TLS",
            "cipher suite",
            "key exchange",
            "boots",
            "heartbeats",
            "tx events",
            "state",
        ),
        tuple(rows),
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
        "expect": sim.expect.as_json() if sim.expect is not None else None,
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
    """Re-render ``summary.txt``, ``summary.json`` and the plots of a run directory; print the summary (or,
    with ``--json``, the summary document). With ``--merge DIR...``, first combine shard run directories into a
    new one (:func:`evsim.metrics.merge.merge_shards`) and report that."""
    if args.merge is not None:
        if args.run_dir is not None:
            raise ConfigError(
                "give either RUN_DIR or --merge DIR...", path="report", fix="put every shard after --merge"
            )
        from evsim.metrics.merge import merge_shards

        run_dir = merge_shards([Path(d) for d in args.merge], Path(args.out))
        print(f"merged {len(args.merge)} shard(s) into {run_dir}", file=sys.stderr)
    elif args.run_dir is None:
        raise ConfigError("which run directory?", path="report", fix="give RUN_DIR, or --merge DIR...")
    else:
        run_dir = Path(args.run_dir)
    text, pngs = rerender(run_dir, plots=not args.no_plots)
    if args.json:
        print_json(report_json(run_dir, pngs))
        return 0
    print(text)
    for png in pngs:
        print(f"  plot: {png}")
    return 0
