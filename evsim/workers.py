"""``evsim stations --workers K`` and ``evsim run FILE --workers K``: one fleet or one scenario run in K processes
on this machine, one result.

Theory of operation. The parent runs no station: it starts K children, ``evsim stations ... --shard I/K --json``
(the same evsim, the same arguments, each its own trio run with its contiguous range of station ids:
:mod:`evsim.shards`), reads each child's JSON result from its standard output (their event and progress lines
go to the shared standard error), and prints one merged result; its exit status is the worst child's
(interrupted > configuration error > incomplete > ok). With ``--out DIR`` every child writes its run directory and
the parent merges them (:func:`evsim.metrics.merge.merge_shards`) into one more.

``evsim run FILE --workers K`` is the same for a scenario in virtual time: child ``I`` runs
``evsim run FILE --shard I/K --json`` (a replica of every server and its slice of every station group:
:mod:`evsim.scenario.shard`) and writes its run directory; the parent merges them into one run directory and
prints its report as ``evsim run`` does (:func:`run_scenario_workers`).

Ctrl-C is answered once for all: the children run in their own process group, so the terminal's SIGINT reaches
only the parent; the parent's first Ctrl-C stops its trio run (:mod:`evsim.interrupts`), and while it winds down it
sends each live child one SIGINT (the child stops cleanly, writes its run directory and prints its result), waits
for them (up to :data:`CHILD_GRACE_S`, then kills), and exits 130 with what they reported. Each child starts
with SIGINT blocked and unblocks it when its trio run can stop cleanly (:func:`evsim.interrupts.run`), so a
Ctrl-C while the children are still starting stops them the same way. A second Ctrl-C exits
the parent at once (:mod:`evsim.interrupts`); the children, in their own process group, then end on their own
``--duration``.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from evsim import interrupts
from evsim.errors import ConfigError
from evsim.metrics.summary import Table
from evsim.shards import Shard

__all__ = [
    "CHILD_GRACE_S",
    "merged_result",
    "run_children",
    "run_scenario_workers",
    "run_workers",
    "scenario_shard_argv",
    "shard_argv",
    "worst_status",
]

CHILD_GRACE_S = 30.0
"""How long a child may take to stop after its SIGINT before it is killed."""

#: ``evsim stations`` options passed on to every child as they were given: (attribute, flag).
_PASSED: tuple[tuple[str, str], ...] = (
    ("csms", "--csms"),
    ("stations", "--stations"),
    ("ca", "--ca"),
    ("pki", "--pki"),
    ("security_profile", "--security-profile"),
    ("password", "--password"),
    ("id_prefix", "--id-prefix"),
    ("sessions", "--sessions"),
    ("session_duration", "--session-duration"),
    ("meter_interval", "--meter-interval"),
    ("duration", "--duration"),
    ("progress", "--progress"),
    ("connect_window", "--connect-window"),
    ("seed", "--seed"),
    ("keylog", "--keylog"),
    ("out", "--out"),
)
_SWITCHES: tuple[tuple[str, str], ...] = (
    ("allow_wildcards", "--allow-wildcards"),
    ("insecure_skip_verify", "--insecure-skip-verify"),
)


def shard_argv(args: argparse.Namespace, shard: Shard) -> list[str]:
    """The command line of the child running ``shard`` of the fleet ``args`` describes (``--json`` added)."""
    argv = [sys.executable, "-m", "evsim", "stations"]
    for attr, flag in _PASSED:
        value = getattr(args, attr, None)
        if value is not None:
            argv += [flag, f"{value!r}" if isinstance(value, float) else str(value)]
    for version in getattr(args, "ocpp_version", None) or ():
        argv += ["--ocpp-version", version]
    for name, address in getattr(args, "resolve", None) or ():
        argv += ["--resolve", f"{name}={address}"]
    argv += [flag for attr, flag in _SWITCHES if getattr(args, attr, False)]
    argv += ["-v"] * (getattr(args, "verbose", 0) or 0) + ["-q"] * (getattr(args, "quiet", 0) or 0)
    return [*argv, "--shard", str(shard), "--json"]


def worst_status(statuses: Sequence[int]) -> int:
    """The exit status of the whole fleet: interrupted (130), then any other failure (a signal, a configuration
    error: the highest), then incomplete (1), else 0."""
    if interrupts.EXIT_INTERRUPTED in statuses:
        return interrupts.EXIT_INTERRUPTED
    return max(statuses, default=0)


def merged_result(results: Sequence[dict[str, Any] | None], count: int) -> dict[str, Any]:
    """One ``evsim stations --json`` document for the whole fleet, from the children's (None: a child that
    printed no result)."""
    got = [r for r in results if r is not None]
    rows = [row for r in got for row in r.get("table", {}).get("rows", [])]
    columns: list[dict[str, Any]] = next((r["table"]["columns"] for r in got if "table" in r), [])
    title = next((r["table"]["title"] for r in got if "table" in r), "Stations")
    return {
        "ok": len(got) == count and all(r.get("ok") for r in got),
        "stations": sum(int(r.get("stations", 0)) for r in got),
        "booted": sum(int(r.get("booted", 0)) for r in got),
        "completed": sum(int(r.get("completed", 0)) for r in got),
        "peak_rss_mib": max((float(r.get("peak_rss_mib", 0)) for r in got), default=0.0),
        "workers": [
            {
                "shard": f"{i}/{count}",
                **({k: v for k, v in r.items() if k != "table"} if r else {"ok": False}),
            }
            for i, r in enumerate(results)
        ],
        "table": {"key": "stations", "title": title, "columns": columns, "rows": rows, "note": ""},
    }


def _block_sigint() -> None:
    """In the child between fork and exec: SIGINT stays pending until the child's trio run accepts it."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


async def _child(
    argv: list[str],
    slot: list[tuple[int, bytes]],
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run one child to its end (``task_status.started`` gets its pid); on cancellation, SIGINT it once and wait
    (shielded) for its result."""
    proc = await trio.lowlevel.open_process(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, process_group=0, preexec_fn=_block_sigint
    )
    assert proc.stdout is not None
    task_status.started(proc.pid)
    out = bytearray()
    try:
        while chunk := await proc.stdout.receive_some():
            out += chunk
        await proc.wait()
    finally:
        with trio.CancelScope(shield=True):
            if proc.returncode is None:
                proc.send_signal(signal.SIGINT)
                with trio.move_on_after(CHILD_GRACE_S):
                    while chunk := await proc.stdout.receive_some():
                        out += chunk
                    await proc.wait()
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
            await proc.stdout.aclose()
            assert proc.returncode is not None
            code = proc.returncode if proc.returncode >= 0 else 128 - proc.returncode
            slot.append((code, bytes(out)))


def run_workers(args: argparse.Namespace) -> int:
    """``evsim stations --workers K``: run, merge, print; the worst child's exit status."""
    k = args.workers
    if k > args.stations:
        raise ConfigError(
            f"{k} workers for {args.stations} stations would leave workers idle",
            path="--workers",
            value=k,
            fix=f"use at most {args.stations} workers",
        )
    statuses, results, interrupted = run_children(
        [shard_argv(args, Shard(i, k)) for i in range(k)], "evsim stations"
    )
    merged = merged_result(results, k)
    if args.out:
        merged["run_directory"] = _merge_run_dirs(results, Path(args.out))
    if args.json:
        print(json.dumps(merged, indent=2))
    else:
        print(_table(merged).render())
        print(
            f"{merged['completed']}/{merged['stations']} stations booted and completed their sessions "
            f"({k} workers, exit statuses {', '.join(map(str, statuses))})"
        )
        if "run_directory" in merged:
            print(f"run directory: {merged['run_directory']}")
    if interrupted:
        print("evsim: interrupted", file=sys.stderr)
        return interrupts.EXIT_INTERRUPTED
    return worst_status(statuses)


def run_children(
    argvs: Sequence[list[str]], what: str
) -> tuple[list[int], list[dict[str, Any] | None], bool]:
    """Run one child per command line (child ``i`` is shard ``i``) until all end, answering Ctrl-C once for all
    (see the module docstring).

    Returns:
        Each child's exit status (130 for one that never reported), its JSON result from standard output (None:
        none), and whether this process was interrupted.
    """
    k = len(argvs)
    slots: list[list[tuple[int, bytes]]] = [[] for _ in range(k)]

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            pids = [await nursery.start(_child, argv, slots[i]) for i, argv in enumerate(argvs)]
            print(
                f"{what}: {k} workers started, "
                + ", ".join(f"shard {i}/{k} pid {pid}" for i, pid in enumerate(pids)),
                file=sys.stderr,
                flush=True,
            )

    interrupted = False
    try:
        interrupts.run(main)
    except KeyboardInterrupt:
        interrupted = True
    statuses = [slot[0][0] if slot else interrupts.EXIT_INTERRUPTED for slot in slots]
    return statuses, [_parse(slot[0][1]) if slot else None for slot in slots], interrupted


def _parse(out: bytes) -> dict[str, Any] | None:
    try:
        doc = json.loads(out)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _merge_run_dirs(results: Sequence[dict[str, Any] | None], out: Path) -> str | None:
    from evsim.metrics.merge import merge_shards
    from evsim.metrics.rundir import rerender

    dirs = [Path(r["run_directory"]) for r in results if r is not None and "run_directory" in r]
    if not dirs:
        return None
    with interrupts.deferred():
        merged = merge_shards(dirs, out)
        rerender(merged, plots=False)
    return str(merged)


def _table(merged: dict[str, Any]) -> Table:
    doc = merged["table"]
    columns = doc["columns"]
    rows = tuple(tuple(row.get(c["name"], "") for c in columns) for row in doc["rows"])
    headers = tuple(str(c.get("header", c["name"])) for c in columns)
    return Table(str(doc["title"]), headers, rows)


# ---------------------------------------------------------------- evsim run FILE --workers K


def scenario_shard_argv(args: argparse.Namespace, shard: Shard) -> list[str]:
    """The command line of the child running ``shard`` of ``evsim run FILE`` (its run directory under
    ``--out``, its result as JSON, no live display or plots: the parent renders the merged run)."""
    argv = [sys.executable, "-m", "evsim", "run", args.file, "--out", args.out, "--no-live", "--no-plots"]
    if args.seed is not None:
        argv += ["--seed", str(args.seed)]
    argv += ["-v"] * (getattr(args, "verbose", 0) or 0) + ["-q"] * (getattr(args, "quiet", 0) or 0)
    return [*argv, "--shard", str(shard), "--json"]


def run_scenario_workers(
    args: argparse.Namespace, *, tell: Callable[[Path, int, bool], object] | None = None
) -> int:
    """``evsim run FILE --workers K``: K shards in K processes, their run directories merged into one, whose
    report is printed as ``evsim run`` prints it; the worst child's exit status.

    Raises:
        ConfigError: an option a sharded run cannot honour, or a scenario sharding would change (checked here
            first, so one message says why instead of K).
    """
    from evsim.metrics.merge import merge_shards
    from evsim.metrics.rundir import rerender
    from evsim.scenario import cli as scenario_cli
    from evsim.scenario.diagnose import scenario_errors
    from evsim.scenario.runner import preflight

    for flag, value in (("--pcap", args.pcap), ("--canonical-log", args.canonical_log)):
        if value:
            raise ConfigError(
                f"{flag} needs the whole run in one process",
                path=flag,
                value=value,
                fix=f"drop {flag} or --workers",
            )
    sc, errors = scenario_errors(args.file)
    if sc is None or errors:
        for exc in errors:
            print(f"evsim: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.seed is not None:
        sc = attrs.evolve(sc, simulation=attrs.evolve(sc.simulation, seed=args.seed))
    k = args.workers
    preflight(sc, Shard(0, k))  # every shard would refuse the same way
    statuses, results, interrupted = run_children(
        [scenario_shard_argv(args, Shard(i, k)) for i in range(k)], f"evsim run {sc.simulation.name}"
    )
    dirs = [Path(r["run_directory"]) for r in results if r is not None and "run_directory" in r]
    if not dirs:
        print("evsim: no shard wrote a run directory", file=sys.stderr)
        return interrupts.EXIT_INTERRUPTED if interrupted else worst_status(statuses) or 1
    with interrupts.deferred():
        merged = merge_shards(dirs, Path(args.out))
    text, pngs = rerender(merged, plots=not args.no_plots)
    if args.json:
        doc = {**scenario_cli.report_json(merged, pngs), "shards": [str(d) for d in dirs]}
        if args.explain and tell is not None:
            doc["story"] = tell(merged, args.explain, True)
        scenario_cli.print_json(doc)
    else:
        print(text)
        print(f"\nrun directory: {merged} ({k} shards: {', '.join(str(d) for d in dirs)})")
        for png in pngs:
            print(f"  plot: {png}")
        if args.explain and tell is not None:
            print()
            print(tell(merged, args.explain, False))
    if interrupted:
        print("evsim: interrupted", file=sys.stderr)
        return interrupts.EXIT_INTERRUPTED
    return worst_status(statuses)
