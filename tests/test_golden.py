"""Golden log files: the digest of a long log stays small and a one-event change shows where it is."""

from __future__ import annotations

import functools
import random
from pathlib import Path

import pytest
import trio

import evsim.world.core
from evsim.clock import SimClock
from evsim.recorder import Recorder
from evsim.scenario.golden import golden_diff, golden_text, run_log, scenario_log
from evsim.scenario.loader import load_scenario
from evsim.scenario.runner import run_scenario


def _log(stations: int = 30, boots: int = 4) -> list[str]:
    """A canonical log: ``boots`` boots of each station, one per second, sorted by (time, node)."""
    lines = [
        f'{t:.6f} ST-{n:04d} booted {{"interval":60.0,"status":"Accepted"}}'
        for t in range(boots)
        for n in range(stations)
    ]
    return [*lines, f'{boots:.6f} main run_ended {{"outcome":"completed"}}']


def test_a_short_log_is_stored_whole() -> None:
    lines = _log(stations=2, boots=2)
    assert golden_text(lines, limit=10) == "\n".join(lines) + "\n"


def test_a_long_log_is_a_digest_of_one_line_per_node() -> None:
    lines = _log()
    text = golden_text(lines, limit=10).splitlines()
    assert text[0].startswith("# digest of a 121-line canonical log")
    assert text[1:3] == ["count booted 120", "count run_ended 1"]
    nodes = [line.split() for line in text[3:]]
    assert [n[1] for n in nodes] == ["ST-0000", *(f"ST-{n:04d}" for n in range(1, 30)), "main"]
    assert all(n[0] == "node" and len(n[3]) == 12 for n in nodes)
    assert [n[2] for n in nodes] == ["4"] * 30 + ["1"]


def test_one_changed_event_shows_its_node_and_the_new_events() -> None:
    before = _log()
    after = list(before)
    i = next(i for i, line in enumerate(after) if line.startswith("2.000000 ST-0017 "))
    after[i] = after[i].replace('"Accepted"', '"Rejected"')
    diff = golden_diff(golden_text(before, limit=10), after, limit=10)
    changed = [d for d in diff.splitlines() if d.startswith(("-", "+")) and not d.startswith(("---", "+++"))]
    assert len(changed) == 2 and all(" ST-0017 4 " in d for d in changed)  # exactly its node's line
    assert "events of ST-0017 in this run (4):" in diff
    assert f"  {after[i]}" in diff  # the changed event itself, readable


def test_one_more_event_shows_in_the_counts_and_its_node() -> None:
    before = _log()
    after = sorted([*before, "1.500000 ST-0003 connection_lost {}"])
    diff = golden_diff(golden_text(before, limit=10), after, limit=10)
    assert "+count connection_lost 1" in diff
    assert any(d.startswith("+node ST-0003 5 ") for d in diff.splitlines())
    assert "  1.500000 ST-0003 connection_lost {}" in diff


def test_a_whole_log_diff_is_the_changed_line() -> None:
    before = _log(stations=2, boots=2)
    after = list(before)
    after[1] = after[1].replace("ST-0001 booted", "ST-0001 rebooted")
    diff = golden_diff(golden_text(before, limit=10), after, limit=10)
    assert [d[0] for d in diff.splitlines() if d[:1] in "+-" and d[:3] not in ("---", "+++")] == ["-", "+"]
    assert golden_diff(golden_text(before, limit=10), before, limit=10) == ""


STORM = """
[simulation]
seed = 7
duration = "3m"

[csms.main]
security_profile = 2
heartbeat_interval = "60s"

[stations.storm]
count = 40
id_pattern = "ST-{n:03d}"
sessions = 0
"""
"""40 stations booting at t = 0: many events at one instant, recorded in the order trio runs their tasks."""


async def test_a_recorder_past_its_bound_counts_the_events_it_dropped() -> None:
    bounded, whole = Recorder(SimClock.start(), keep=3, echo=False), Recorder(SimClock.start(), keep=None)
    for n in range(5):
        bounded.emit("ST-1", "booted", n=n)
        whole.emit("ST-1", "booted", n=n)
    assert [e.data["n"] for e in bounded.events] == [2, 3, 4] and bounded.dropped == 2
    assert len(whole.events) == 5 and whole.dropped == 0


def test_the_golden_log_holds_every_event_of_a_run_longer_than_the_recorder_keeps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 10,000-station run records more events than a recorder keeps by default; the oldest ones (the boot storm
    at t = 0) were dropped in the order trio happened to run their tasks, so two runs of one seed gave different
    golden logs. The golden log must hold every event whatever the recorder's bound and the scheduler's order."""
    path = tmp_path / "storm.toml"
    path.write_text(STORM)
    full = scenario_log(path)
    assert sum(line.split(" ", 3)[2] == "booted" for line in full) == 80  # each station's and the CSMS's
    # a recorder bound at half the run's events, as 200,000 is for 10,000 stations
    monkeypatch.setattr(evsim.world.core, "Recorder", functools.partial(Recorder, keep=len(full) // 2))
    for order in (1, 2):  # trio's scheduler reverses each batch of runnable tasks at random: two orders
        monkeypatch.setattr(trio._core._run, "_r", random.Random(order))
        assert scenario_log(path) == full


def test_a_canonical_log_is_refused_from_a_run_whose_recorder_dropped_events(tmp_path: Path) -> None:
    path = tmp_path / "storm.toml"
    path.write_text(STORM)
    result = run_scenario(load_scenario(path), keep_events=100)
    assert result.ok and result.recorder.dropped > 0
    with pytest.raises(RuntimeError, match="a canonical log needs every event"):
        run_log(result)
