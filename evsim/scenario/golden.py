"""Golden logs of the shipped scenarios: what a run must reproduce exactly, given its seed.

A golden log is the run's canonical event log (:func:`evsim.metrics.canonical.canonical_log`: sorted by simulated
time, node, kind and data, without trio's scheduling order), up to the run's last instant (see
:func:`deterministic_events`). Logs longer than :data:`FULL_LIMIT` lines (the 1,000-station runs) are stored as
a digest that stays small and diffable: the event count of every kind, then one line per node with its event
count and a short hash of its lines. The canonical log is sorted by time and node, so the node lines
determine it; a changed event changes exactly its node's line (and a kind count when kinds change), and
:func:`golden_diff` prints that diff together with the node's events from the new run.

    python -m evsim.scenario.golden                  check every shipped scenario (exit 1 on a difference)
    python -m evsim.scenario.golden boot_storm       check some of them
    python -m evsim.scenario.golden --update [name]  rewrite scenarios/golden/*.log after an intended change

Lessons (``scenarios/lessons/<nn>_<topic>/lesson.toml``) have golden logs too, named ``lessons/<nn>_<topic>``
(``scenarios/golden/lessons/<nn>_<topic>.log``): ``python -m evsim.scenario.golden lessons/02_versions_downgrade``.
"""

from __future__ import annotations

import argparse
import collections
import difflib
import hashlib
import sys
from pathlib import Path

from evsim.metrics.canonical import canonical_log
from evsim.recorder import Event
from evsim.scenario.loader import load_scenario
from evsim.scenario.runner import RunResult, run_scenario

SCENARIOS_DIR = Path(__file__).resolve().parent.parent.parent / "scenarios"
GOLDEN_DIR = SCENARIOS_DIR / "golden"
LESSONS_DIR = SCENARIOS_DIR / "lessons"
FULL_LIMIT = 3000


NODE_HASH_DIGITS = 12
"""Hex digits of a node's SHA-256 kept in a digest line."""


def golden_text(lines: list[str], *, limit: int = FULL_LIMIT) -> str:
    """The golden file's content for a canonical log: the log itself, or its digest when longer than ``limit``."""
    if len(lines) <= limit:
        return "\n".join(lines) + "\n"
    kinds: collections.Counter[str] = collections.Counter()
    nodes: dict[str, list[str]] = collections.defaultdict(list)
    for line in lines:
        _t, node, kind = line.split(" ", 3)[:3]
        kinds[kind] += 1
        nodes[node].append(line)
    out = [
        f"# digest of a {len(lines)}-line canonical log: events per kind, then per node its event count and "
        f"the first {NODE_HASH_DIGITS} hex digits of the SHA-256 of its lines"
    ]
    out += [f"count {kind} {n}" for kind, n in sorted(kinds.items())]
    out += [f"node {node} {len(own)} {_node_hash(own)}" for node, own in sorted(nodes.items())]
    return "\n".join(out) + "\n"


def _node_hash(lines: list[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:NODE_HASH_DIGITS]


def golden_diff(
    expected: str, lines: list[str], *, limit: int = FULL_LIMIT, max_lines: int = 80, max_nodes: int = 5
) -> str:
    """Where a run's canonical log differs from a golden file, readably.

    Args:
        expected: the golden file's content.
        lines: the run's canonical log.
        limit: :data:`FULL_LIMIT` (as for :func:`golden_text`).
        max_lines: diff lines shown (the rest is counted).
        max_nodes: nodes whose events from this run are listed (digests only).

    Returns:
        A unified diff of the golden file against this run's :func:`golden_text`; for a digest, followed by
        the run's events of the first nodes whose line differs. Empty when they are equal.
    """
    actual = golden_text(lines, limit=limit)
    if actual == expected:
        return ""
    diff = list(
        difflib.unified_diff(
            expected.splitlines(), actual.splitlines(), "golden", "this run", lineterm="", n=1
        )
    )
    out = diff[:max_lines]
    if len(diff) > max_lines:
        out.append(f"... {len(diff) - max_lines} more diff lines")
    changed = sorted({d.split(" ")[1] for d in diff if d.startswith(("-node ", "+node "))})
    for node in changed[:max_nodes]:
        own = [line for line in lines if line.split(" ", 2)[1] == node]
        out.append(f"events of {node} in this run ({len(own)}):")
        out += [f"  {line}" for line in own[:max_lines]]
    if len(changed) > max_nodes:
        out.append(f"... and {len(changed) - max_nodes} more nodes differ")
    return "\n".join(out)


def scenario_log(path: Path) -> list[str]:
    """Run a scenario, keeping every event, and return its canonical log (:func:`run_log`).

    Raises:
        RuntimeError: the run did not complete.
    """
    result = run_scenario(load_scenario(path), keep_events=None)
    if not result.ok:
        raise RuntimeError(f"{path}: run {result.outcome}: {result.error}")
    return run_log(result)


def run_log(result: RunResult) -> list[str]:
    """The canonical log of a run (:func:`deterministic_events`), from every event it recorded.

    Raises:
        RuntimeError: the run's recorder forgot its oldest events (a run with more events than
            :data:`~evsim.recorder.DEFAULT_KEEP`, run without ``keep_events=None``): what is left of an instant
            with many events, e.g. a boot storm at t = 0, depends on the order trio ran their tasks.
    """
    recorder = result.recorder
    if recorder.dropped:
        raise RuntimeError(
            f"the run kept only its last {len(recorder.events)} events ({recorder.dropped} older ones were "
            "dropped): a canonical log needs every event; run the scenario with keep_events=None"
        )
    return canonical_log(deterministic_events(list(recorder.events)))


def deterministic_events(events: list[Event]) -> list[Event]:
    """Drop what happened at the run's very last instant, except ``run_ended`` itself.

    A run that ends at its duration ends by a timer; anything else due at exactly that virtual instant may run
    before or after the end depending on trio's scheduling, so it is not part of what a seed determines.
    """
    ended = [e for e in events if e.kind == "run_ended"]
    if not ended or ended[-1].data.get("outcome") != "completed":
        return events  # ended by the last station finishing: everything at that instant happened before it
    end = ended[-1].t
    return [e for e in events if e.t < end or e.kind == "run_ended"]


def shipped() -> list[Path]:
    return sorted(SCENARIOS_DIR.glob("*.toml"))


def lessons() -> list[Path]:
    """The lesson scenarios: one ``lesson.toml`` per directory of ``scenarios/lessons``."""
    return sorted(LESSONS_DIR.glob("*/lesson.toml"))


def golden_name(path: Path) -> str:
    """A scenario's name for golden logs: its file stem, or ``lessons/<directory>`` for a lesson."""
    if path.name == "lesson.toml" and path.parent.parent == LESSONS_DIR:
        return f"lessons/{path.parent.name}"
    return path.stem


def golden_path(path: Path) -> Path:
    """Where the golden log of scenario file ``path`` lives."""
    return GOLDEN_DIR / f"{golden_name(path)}.log"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--update", action="store_true", help="rewrite the golden files")
    p.add_argument(
        "names", nargs="*", help="scenarios to check or update (file stems, lessons/<dir>; default: all)"
    )
    args = p.parse_args(argv)
    paths = shipped() + lessons()
    unknown = set(args.names) - {golden_name(path) for path in paths}
    if unknown:
        p.error(f"no shipped scenario {', '.join(sorted(unknown))}")
    GOLDEN_DIR.mkdir(exist_ok=True)
    failed = 0
    for path in paths:
        if args.names and golden_name(path) not in args.names:
            continue
        lines = scenario_log(path)
        text = golden_text(lines)
        golden = golden_path(path)
        if args.update:
            golden.parent.mkdir(exist_ok=True)
            golden.write_text(text)
            print(f"wrote {golden} ({text.count(chr(10))} lines)")
        elif not golden.exists():
            failed += 1
            print(f"{golden_name(path)}: no golden log {golden}", file=sys.stderr)
        elif golden.read_text() != text:
            failed += 1
            print(f"{golden_name(path)}: differs from {golden}", file=sys.stderr)
            print(golden_diff(golden.read_text(), lines), file=sys.stderr)
        else:
            print(f"{golden_name(path)}: matches its golden log")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
