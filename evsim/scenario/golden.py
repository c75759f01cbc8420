"""Golden logs of the shipped scenarios: what a run must reproduce exactly, given its seed.

A golden log is the run's canonical event log (:func:`evsim.metrics.canonical.canonical_log`: sorted by simulated
time, node, kind and data, without trio's scheduling order), up to the run's last instant (see
:func:`deterministic_events`). Logs longer than :data:`FULL_LIMIT` lines (the
1,000-station storm) are stored as a digest instead: event counts per kind and the SHA-256 of the full log,
so the file stays reviewable and a mismatch still shows which kinds changed.

    python -m evsim.scenario.golden            check every shipped scenario (exit 1 on a difference)
    python -m evsim.scenario.golden --update   rewrite scenarios/golden/*.log after an intended change
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import sys
from pathlib import Path

from evsim.metrics.canonical import canonical_log
from evsim.metrics.recorder import Event
from evsim.scenario.loader import load_scenario
from evsim.scenario.runner import run_scenario

SCENARIOS_DIR = Path(__file__).resolve().parent.parent.parent / "scenarios"
GOLDEN_DIR = SCENARIOS_DIR / "golden"
FULL_LIMIT = 3000


def golden_text(lines: list[str]) -> str:
    """The golden file's content for a canonical log."""
    if len(lines) <= FULL_LIMIT:
        return "\n".join(lines) + "\n"
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    kinds = collections.Counter(line.split(" ", 3)[2] for line in lines)
    out = [f"# digest of a {len(lines)}-line canonical log", f"sha256 {digest}"]
    out += [f"count {kind} {n}" for kind, n in sorted(kinds.items())]
    return "\n".join(out) + "\n"


def scenario_log(path: Path) -> list[str]:
    """Run a scenario and return its canonical log.

    Raises:
        RuntimeError: the run did not complete.
    """
    result = run_scenario(load_scenario(path))
    if not result.ok:
        raise RuntimeError(f"{path}: run {result.outcome}: {result.error}")
    return canonical_log(deterministic_events(list(result.recorder.events)))


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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--update", action="store_true", help="rewrite the golden files")
    args = p.parse_args(argv)
    GOLDEN_DIR.mkdir(exist_ok=True)
    failed = 0
    for path in shipped():
        text = golden_text(scenario_log(path))
        golden = GOLDEN_DIR / f"{path.stem}.log"
        if args.update:
            golden.write_text(text)
            print(f"wrote {golden} ({text.count(chr(10))} lines)")
        elif not golden.exists() or golden.read_text() != text:
            failed += 1
            print(f"{path.name}: differs from {golden}", file=sys.stderr)
        else:
            print(f"{path.name}: matches its golden log")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
