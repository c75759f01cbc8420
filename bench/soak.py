"""Soak run (``make soak``): a CSMS in its own process, honest stations and hostile clients over loopback TCP.

``python -m bench.soak [--minutes 30] [--stations 1000] [--hostile 8]`` runs, for ``--minutes`` of wall time:

* a CSMS (evsim's :class:`~evsim.nodes.csms.Csms`, configured as ``evsim csms`` does) in a child process, on a
  free loopback port with a fresh development PKI; it stops when its stdin closes and prints what it recorded
  (statistics and every transaction, started / ended / seqNos) as JSON;
* ``--stations`` honest :class:`~evsim.nodes.station.Station` s in this process, playing charging sessions
  back to back (they stay connected and heartbeat afterwards);
* ``--hostile`` hostile clients at a time, each running faults of the catalogue (``tests/hostile.py``: resets
  at every stage, slowloris, garbage, malformed HTTP, WebSocket framing abuse, hostile OCPP, hostile
  identities) one after another, each bounded in time, until the end of the run.

Every ``--sample-every`` seconds it reads the CSMS process's ``VmRSS`` (``/proc/PID/status``) and its open file
descriptors (``/proc/PID/fd``). It fails (exit 1, with the reason) when

* the CSMS process died;
* after the warm-up (the first 5 minutes, or the first third of a shorter run) RSS or descriptors grow: the
  median of the last samples may exceed the median of the first samples after the warm-up by at most
  ``--rss-tolerance`` (default 10 %) + 16 MiB for RSS and ``--fd-tolerance`` (default 10 %) + 20 for
  descriptors;
* an honest transaction is lost: every transaction a station started must be recorded by the CSMS as
  started and ended with gap-free sequence numbers.

Everything is loopback and bounded; the run stops by itself and prints a table of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import trio

from evsim.clock import SimClock, real_utcnow
from evsim.net.tcp import TcpNetwork
from evsim.nodes.csms import Csms, CsmsConfig
from evsim.nodes.security import csms_server_tls, station_client_tls
from evsim.nodes.station import Station
from evsim.nodes.station_model import StationConfig, station_ids
from evsim.pki import DevPki, init_dev_pki
from evsim.recorder import Recorder
from evsim.report import table

PASSWORD = "soak-password-not-for-production"
HOSTILE_PREFIX = "HOSTILE-"

# ---------------------------------------------------------------------------- the CSMS process


def serve(pki_dir: str, port: int) -> int:
    """The child: a CSMS until stdin closes; then its records as one JSON line on stdout."""
    pki = DevPki.load(pki_dir)
    config = CsmsConfig(host="127.0.0.1", port=port, heartbeat_interval=60, default_password=PASSWORD)
    server_tls = csms_server_tls(pki, security_profile=2)

    async def main() -> Csms:
        clock = SimClock.start()
        recorder = Recorder(clock, keep=10_000, echo=False)
        csms = Csms(config, network=TcpNetwork(), server_tls=server_tls, clock=clock, recorder=recorder)
        async with trio.open_nursery() as nursery:
            await nursery.start(csms.run)
            print("READY", flush=True)
            stdin = trio.lowlevel.FdStream(os.dup(0))
            while await stdin.receive_some(4096):
                pass
            nursery.cancel_scope.cancel()
        return csms

    csms = trio.run(main)
    stats = csms.statistics()
    txs = {
        sid: {
            tid: [tx.started, tx.ended, tx.gap_free(), tx.seq_nos.count]
            for tid, tx in rec.transactions.items()
        }
        for sid, rec in csms.stations.items()
        if not sid.startswith(HOSTILE_PREFIX)
    }
    out = {
        "stations_known": stats.stations_known,
        "connections_total": stats.connections_total,
        "handshake_failures": stats.handshake_failures,
        "upgrade_rejections": {str(k): v for k, v in stats.upgrade_rejections.items()},
        "transactions_started": stats.transactions_started,
        "transactions_ended": stats.transactions_ended,
        "transactions": txs,
    }
    print("SUMMARY " + json.dumps(out), flush=True)
    return 0


# ---------------------------------------------------------------------------- sampling


def sample(pid: int) -> tuple[int, int] | None:
    """(RSS in KiB, open descriptors) of a live process, or None when it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]), fds
    return None


# ---------------------------------------------------------------------------- the hostile mix


def _faults(selected: str | None, skipped: str | None) -> dict[str, Any]:
    from tests import hostile

    faults: dict[str, Any] = dict(hostile.LISTENER_FAULTS)
    for name, segment in hostile.BAD_IDENTITIES.items():
        faults[f"identity_{name}"] = hostile.identity_fault(segment)
    if selected:
        faults = {k: v for k, v in faults.items() if k in selected.split(",")}
    for name in (skipped or "").split(","):
        faults.pop(name, None)
    if not faults:
        raise SystemExit("no faults left to run (check --faults / --skip)")
    return faults


async def hostile_worker(
    n: int,
    faults: dict[str, Any],
    target: Any,
    deadline: float,
    counts: Counter[str],
    failures: Counter[str],
    seed: int,
) -> None:
    from tests import hostile

    rng = random.Random(f"{seed}:{n}")
    names = sorted(faults)
    while trio.current_time() < deadline:
        name = rng.choice(names)
        attack = hostile.Attack(target, station_id=f"{HOSTILE_PREFIX}{n}", pace=2.0, hold=20.0, tcp=True)
        counts[name] += 1
        with trio.move_on_at(min(deadline, trio.current_time() + 40)):
            try:
                await faults[name](attack)
            except Exception:
                failures[name] += 1
        await trio.sleep(rng.uniform(0.05, 0.5))


# ---------------------------------------------------------------------------- the run


def _session_shape(minutes: float) -> tuple[float, float, tuple[float, float]]:
    """(session duration, meter interval, start delay range) in seconds, by run length."""
    if minutes < 5:
        return 20.0, 5.0, (1.0, 5.0)
    return 60.0, 15.0, (5.0, 30.0)


def run(args: argparse.Namespace) -> int:
    total_s = args.minutes * 60.0
    warmup_s = min(300.0, total_s / 3)
    duration, meter, start = _session_shape(args.minutes)
    per_session = duration + sum(start) / 2
    sessions = max(1, int((total_s - per_session) / (per_session + 5)))
    faults = _faults(args.faults, args.skip)
    tmp = tempfile.TemporaryDirectory(prefix="evsim-soak-")
    pki = init_dev_pki(tmp.name, host="localhost", now=real_utcnow())
    client_tls = station_client_tls((pki.root.cert,))
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    errors = open(Path(tmp.name) / "csms.stderr", "w+")  # noqa: SIM115 - read back after the run
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.soak", "--serve", tmp.name, "--port", str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=errors,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    if child.stdout.readline().strip() != "READY":
        print("soak: the CSMS process did not start", file=sys.stderr)
        return 1
    print(
        f"soak: CSMS pid {child.pid} on 127.0.0.1:{port}; {args.stations} stations x {sessions} sessions "
        f"({duration:g} s each), {args.hostile} hostile clients over {len(faults)} faults, {args.minutes:g} min",
        flush=True,
    )

    samples: list[tuple[float, int, int]] = []
    counts: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    station_list: list[Station] = []
    died_at: list[float] = []
    tx_started: dict[str, list[str]] = {}
    tx_ended: dict[str, list[str]] = {}

    def on_event(ev: Any) -> None:
        if ev.kind == "tx_started":
            tx_started.setdefault(ev.node, []).append(ev.data["tx"])
        elif ev.kind == "tx_ended":
            tx_ended.setdefault(ev.node, []).append(ev.data["tx"])

    async def main() -> None:
        from tests import hostile

        clock = SimClock.start()
        recorder = Recorder(clock, keep=1000, echo=False, sink=on_event)
        net = TcpNetwork()
        url = f"wss://localhost:{port}/ocpp"
        for sid in station_ids("ST-", args.stations):
            station_list.append(
                Station(
                    StationConfig(
                        station_id=sid,
                        csms_url=url,
                        password=PASSWORD,
                        sessions=sessions,
                        session_start_s=start,
                        session_duration_s=duration,
                        meter_interval_s=meter,
                    ),
                    network=net,
                    client_tls=client_tls,
                    clock=clock,
                    recorder=recorder,
                    rng=random.Random(f"{args.seed}:{sid}"),
                )
            )
        target = hostile.Target(TcpNetwork(), "localhost", port, client_tls, clock, password=PASSWORD)
        t0 = trio.current_time()
        deadline = t0 + total_s

        async def sampler() -> None:
            while True:
                got = sample(child.pid)
                if got is None or child.poll() is not None:
                    died_at.append(trio.current_time() - t0)
                    return
                samples.append((trio.current_time() - t0, got[0], got[1]))
                await trio.sleep(args.sample_every)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sampler)
            for st in station_list:
                nursery.start_soon(st.run)
                await trio.sleep(min(0.03, 30 / max(1, args.stations)))
            async with trio.open_nursery() as attackers:
                for n in range(args.hostile):
                    attackers.start_soon(
                        hostile_worker, n, faults, target, deadline, counts, failures, args.seed
                    )
            # the run's time is up: let the stations finish their last sessions and deliver everything
            with trio.move_on_after(max(120.0, 3 * per_session)):
                for st in station_list:
                    await st.done.wait()
            nursery.cancel_scope.cancel()

    trio.run(main)
    try:
        out, _ = child.communicate(input="", timeout=120)
    except subprocess.TimeoutExpired:
        child.kill()
        out = ""
    errors.seek(0)
    tail = errors.read().strip().splitlines()[-3:]
    errors.close()
    if child.returncode:
        print(f"soak: the CSMS process exited with {child.returncode}: " + " | ".join(tail), file=sys.stderr)
    summary: dict[str, Any] = {}
    for line in out.splitlines():
        if line.startswith("SUMMARY "):
            summary = json.loads(line[len("SUMMARY ") :])
    tmp.cleanup()
    txs = (tx_started, tx_ended)
    return report(args, samples, warmup_s, died_at, summary, station_list, txs, counts, failures)


def _median(values: list[int]) -> float:
    return statistics.median(values) if values else float("nan")


def report(
    args: argparse.Namespace,
    samples: list[tuple[float, int, int]],
    warmup_s: float,
    died_at: list[float],
    summary: dict[str, Any],
    stations: list[Station],
    txs: tuple[dict[str, list[str]], dict[str, list[str]]],
    counts: Counter[str],
    failures: Counter[str],
) -> int:
    problems: list[str] = []
    if died_at and died_at[0] < args.minutes * 60:
        problems.append(f"the CSMS process died {died_at[0]:.0f} s into the run")
    after = [s for s in samples if s[0] >= warmup_s]
    window = max(3, len(after) // 10)
    first, last = after[:window], after[-window:]
    rss0, rss1 = _median([s[1] for s in first]), _median([s[1] for s in last])
    fd0, fd1 = _median([s[2] for s in first]), _median([s[2] for s in last])
    rss_limit = rss0 * (1 + args.rss_tolerance / 100) + 16 * 1024
    fd_limit = fd0 * (1 + args.fd_tolerance / 100) + 20
    if len(after) < 2 * window:
        problems.append(f"too few samples after the warm-up ({len(after)}) to judge growth")
    else:
        if rss1 > rss_limit:
            problems.append(f"RSS grew after the warm-up: {rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MiB")
        if fd1 > fd_limit:
            problems.append(f"open descriptors grew after the warm-up: {fd0:.0f} -> {fd1:.0f}")

    # honest transactions: every one a station started must be complete (started, ended, gap-free) at the CSMS
    started, ended = txs
    recorded = summary.get("transactions", {})
    lost: list[str] = []
    for sid, ids in started.items():
        for tid in ids:
            rec = recorded.get(sid, {}).get(tid)
            if rec is None or not (rec[0] and rec[1] and rec[2]):
                lost.append(f"{sid}/{tid}: {rec}")
    st_started = sum(len(v) for v in started.values())
    st_ended = sum(len(v) for v in ended.values())
    not_done = [st.name for st in stations if not st.done.is_set()]
    if not summary:
        problems.append("no summary from the CSMS process")
    if lost:
        problems.append(f"{len(lost)} honest transactions not complete at the CSMS, e.g. {lost[:3]}")
    if not_done:
        problems.append(f"{len(not_done)} stations did not finish their sessions, e.g. {not_done[:3]}")

    rows: list[list[object]] = [
        ["duration (min) / warm-up (min)", f"{args.minutes:g} / {warmup_s / 60:g}"],
        ["samples (all / after warm-up)", f"{len(samples)} / {len(after)}"],
        ["CSMS RSS MiB: first / after warm-up / end / max", _rss_row(samples, rss0, rss1)],
        [f"RSS limit MiB (+{args.rss_tolerance}% +16)", f"{rss_limit / 1024:.1f}"],
        ["CSMS open fds: first / after warm-up / end / max", _fd_row(samples, fd0, fd1)],
        [f"fd limit (+{args.fd_tolerance}% +20)", f"{fd_limit:.0f}"],
        ["stations done / total", f"{len(stations) - len(not_done)} / {len(stations)}"],
        ["transactions started / ended by the stations", f"{st_started} / {st_ended}"],
        ["honest transactions lost", len(lost)],
        [
            "CSMS transactions started / ended (honest + hostile)",
            f"{summary.get('transactions_started', '?')} / {summary.get('transactions_ended', '?')}",
        ],
        ["CSMS connections accepted", summary.get("connections_total", "?")],
        [
            "CSMS handshake failures",
            ", ".join(f"{k}: {v}" for k, v in summary.get("handshake_failures", {}).items()) or "-",
        ],
        [
            "CSMS upgrade rejections",
            ", ".join(f"HTTP {k}: {v}" for k, v in summary.get("upgrade_rejections", {}).items()) or "-",
        ],
        ["hostile runs (total / cut off or refused)", f"{sum(counts.values())} / {sum(failures.values())}"],
    ]
    print(table(["soak", "value"], rows, title="Soak run"))
    print(
        table(
            ["fault", "runs", "cut off"],
            [[k, v, failures.get(k, 0)] for k, v in sorted(counts.items())],
            title="Hostile mix",
        )
    )
    if problems:
        for p in problems:
            print(f"SOAK FAILED: {p}", file=sys.stderr)
        return 1
    print("soak passed: the CSMS survived, RSS and descriptors stayed flat, no honest transaction was lost")
    return 0


def _rss_row(samples: list[tuple[float, int, int]], rss0: float, rss1: float) -> str:
    if not samples:
        return "-"
    return f"{samples[0][1] / 1024:.1f} / {rss0 / 1024:.1f} / {rss1 / 1024:.1f} / {max(s[1] for s in samples) / 1024:.1f}"


def _fd_row(samples: list[tuple[float, int, int]], fd0: float, fd1: float) -> str:
    if not samples:
        return "-"
    return f"{samples[0][2]} / {fd0:.0f} / {fd1:.0f} / {max(s[2] for s in samples)}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=30.0, help="length of the run (default 30)")
    p.add_argument("--stations", type=int, default=1000, help="honest stations (default 1000)")
    p.add_argument("--hostile", type=int, default=8, help="hostile clients at a time (default 8)")
    p.add_argument("--faults", default=None, help="comma-separated faults to run (default: all)")
    p.add_argument("--skip", default=None, help="comma-separated faults to leave out")
    p.add_argument("--sample-every", type=float, default=5.0, help="seconds between samples (default 5)")
    p.add_argument("--rss-tolerance", type=float, default=10.0, help="allowed RSS growth in %% (+16 MiB)")
    p.add_argument("--fd-tolerance", type=float, default=10.0, help="allowed descriptor growth in %% (+20)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--serve", default=None, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        return serve(args.serve, args.port)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
