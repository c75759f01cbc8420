"""The README's performance tables are the bench's result files rendered (``bench/readme.py``), and a bench run
records every table its sections print (``bench/results.py``). No benchmark runs here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import readme
from bench.common import RECORD_ENV, bench_problem, bench_table
from bench.results import RESULTS_DIR, BenchRun, size_overrides

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")

MARKED = {
    "floor",
    "fleet",
    "ladder",
    "storm",
    "tls-handshake",
    "memory",
    "memory-tls",
    "failover",
    "cpu-model",
    "heartbeat",
    "scale",
    "scale-workers-1",
    "scale-workers-2",
    "nts",
    "workers",
    "renewal",
}
"""The README's generated tables: removing a marker (and with it the check) fails here."""


def _blocks() -> list[readme.Block]:
    return readme.blocks(README)


def test_the_performance_tables_are_marked_once_each() -> None:
    keys = [b.key for b in _blocks()]
    assert set(keys) >= MARKED
    assert len(keys) == len(set(keys))
    # a marker the pattern does not match would leave its block unchecked
    assert README.count("<!-- bench:") == len(keys)
    assert README.count("<!-- /bench:") == len(keys)


@pytest.mark.parametrize("block", _blocks(), ids=lambda b: b.key)
def test_each_block_is_its_result_file_rendered(block: readme.Block) -> None:
    assert block.run, f"README block {block.key} was never generated: python -m bench readme"
    doc = readme.load(RESULTS_DIR / f"{block.run}.json")
    found = readme.find([doc], block.key)
    assert found is not None, f"run {block.run} has no table {block.key}"
    assert not size_overrides(doc["settings"]), "README figures come from runs with the default sizes"
    assert block.body == readme.render_block(block.key, *found), (
        f"README block {block.key} differs from run {block.run} (edited by hand?): python -m bench readme"
    )


@pytest.mark.parametrize("block", _blocks(), ids=lambda b: b.key)
def test_each_block_names_the_machine_and_the_run(block: readme.Block) -> None:
    doc = readme.load(RESULTS_DIR / f"{block.run}.json")
    line = block.body.strip().splitlines()[-1]
    machine = doc["machine"]
    for part in (
        f"Run {block.run}",
        doc["started"][:10],
        f"commit {doc['git']['commit'][:10]}",
        "load ",
        f"Machine: {machine['cpu_model']}, {machine['cores']} cores",
        machine["openssl"],
    ):
        assert part in line, (block.key, part, line)
    assert "|" in block.body, f"block {block.key} holds no table"


def test_a_figure_edited_by_hand_is_put_back() -> None:
    block = next(b for b in _blocks() if b.key == "fleet")
    assert block.run is not None
    row = next(
        line for line in block.body.splitlines() if line.startswith("| ") and any(c.isdigit() for c in line)
    )
    at = README.index(row, block.span[0])
    digit = at + next(i for i, c in enumerate(row) if c.isdigit())
    edited = README[:digit] + ("1" if README[digit] != "1" else "2") + README[digit + 1 :]
    assert readme.blocks(edited)[[b.key for b in _blocks()].index("fleet")].body != block.body
    fixed, said = readme.rewrite(edited, readme.default_results()[0])
    assert fixed == README
    assert any(line.startswith(f"fleet: run {block.run}") for line in said)


def test_a_block_no_result_has_is_left_alone() -> None:
    text = "prose 1.5x\n<!-- bench:nothing -->\n| a |\n|---|\n| 3 |\n<!-- /bench:nothing -->\nmore prose\n"
    new, said = readme.rewrite(text, [])
    assert new == text
    assert said == ["nothing: kept as it was (no result file has this table)"]


def _sections(run: BenchRun) -> None:
    def prints_a_table() -> None:
        print(
            bench_table("t1", ["what", "value"], [["x", 1.5], ["y", "2 s"]], title="A title", raw={"x": 1.5})
        )

    def in_a_subprocess() -> None:
        code = "from bench.common import bench_table; print(bench_table('t2', ['n'], [[7]]))"
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
        )
        print(out.stdout)

    def raises() -> None:
        print(bench_table("t3", ["n"], [[1]]))
        raise RuntimeError("boom")

    def only_a_problem() -> None:
        print(bench_problem("the thing did not finish within 1 minutes"))

    run.section("one", prints_a_table)
    run.section("two", in_a_subprocess)
    run.section("three", raises)
    run.section("four", only_a_problem)
    run.skip("five", "BENCH_SKIP")


def test_a_run_records_every_table_and_every_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_OUT", str(tmp_path / "result.json"))
    monkeypatch.delenv(RECORD_ENV, raising=False)
    run = BenchRun("python -m bench test")
    try:
        _sections(run)
        assert run.failed() == ["four"]
        path = run.write()
    finally:
        run.close()
    assert RECORD_ENV not in os.environ
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert doc["run_id"] == run.run_id and doc["command"] == "python -m bench test"
    assert doc["machine"]["cores"] >= 1 and doc["machine"]["cpu_model"] and doc["machine"]["trio"]
    assert doc["git"]["commit"] and len(doc["load_start"]) == 3
    one, two, three, four, five = doc["sections"]
    assert one["status"] == "ok" and "A title" in one["output"]
    assert one["tables"] == [
        {
            "key": "t1",
            "title": "A title",
            "columns": ["what", "value"],
            "rows": [["x", "1.50"], ["y", "2 s"]],
            "values": [["x", 1.5], ["y", "2 s"]],
            "raw": {"x": 1.5},
        }
    ]
    assert two["status"] == "ok" and two["tables"][0]["rows"] == [["7"]]
    assert three["status"] == "partial" and three["error"] == "RuntimeError: boom"
    assert three["tables"][0]["key"] == "t3"
    assert four["status"] == "failed" and four["problems"] == ["the thing did not finish within 1 minutes"]
    assert five == {"name": "five", "status": "skipped", "reason": "BENCH_SKIP", "tables": [], "problems": []}
    # and the README renders what it recorded
    found = readme.find([doc], "t1")
    assert found is not None
    body = readme.render_block("t1", *found)
    assert "| what | value |\n|---|---|\n| x | 1.50 |\n| y | 2 s |" in body
    assert f"Run {run.run_id}" in body.strip().splitlines()[-1]


@pytest.mark.parametrize("grouped", [False, True], ids=["bare", "in a trio nursery's group"])
def test_ctrl_c_records_the_section_and_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, grouped: bool
) -> None:
    monkeypatch.setenv("BENCH_OUT", str(tmp_path / "result.json"))
    run = BenchRun("python -m bench test")

    def interrupted() -> None:
        print(bench_table("t", ["n"], [[1]]))
        if grouped:
            raise BaseExceptionGroup("nursery", [KeyboardInterrupt()])
        raise KeyboardInterrupt

    try:
        with pytest.raises(KeyboardInterrupt):
            run.section("cut", interrupted)
        doc = json.loads(run.write().read_text(encoding="utf-8"))
    finally:
        run.close()
    (cut,) = doc["sections"]
    assert cut["status"] == "interrupted" and cut["problems"] == ["interrupted (Ctrl-C)"]
    assert cut["tables"][0]["rows"] == [["1"]]
