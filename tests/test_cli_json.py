"""Machine-readable results: ``summary.json`` in every run directory and ``--json`` on the commands.

``summary.json`` is built from the tables ``summary.txt`` renders, so the checks here are that the document
has the documented structure (:func:`check_document`), that the text report can be rebuilt from the JSON alone
(every figure of ``summary.txt`` is in ``summary.json``), and that a table the summary gains appears in the
JSON with nothing else to change.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from evsim.cli import main
from evsim.metrics.rundir import SUMMARY_FILE, SUMMARY_JSON_FILE
from evsim.metrics.summary import Summary, Table
from evsim.metrics.summary_json import (
    SCHEMA_VERSION,
    check_document,
    document_tables,
    render_document,
    summary_document,
)
from evsim.report import Seconds, cell, human_duration

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"

#: Shipped scenarios that run in well under a second each and between them have every kind of table cell:
#: the base tables, a timeline, recovery after outages (durations), certificate tables.
QUICK = ("default", "partition_heal", "certificate_expiry", "lc_upstream_failover")


def _run(tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]) -> tuple[Path, dict[str, Any]]:
    out = tmp_path / "runs"
    code = main(["run", str(SCENARIOS / f"{name}.toml"), "--out", str(out), "--no-plots", "--json", "-q"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    (run_dir,) = [p for p in out.iterdir() if p.name.startswith(name)]
    assert printed["run_directory"] == str(run_dir)
    return run_dir, printed


@pytest.mark.parametrize("name", QUICK)
def test_every_figure_of_the_text_report_is_in_summary_json(
    tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir, printed = _run(tmp_path, name, capsys)
    text = (run_dir / SUMMARY_FILE).read_text()
    doc = json.loads((run_dir / SUMMARY_JSON_FILE).read_text())
    assert printed["summary"] == doc
    assert check_document(doc) == []
    assert doc["schema_version"] == SCHEMA_VERSION
    assert render_document(doc) + "\n" == text  # the whole text report from the JSON alone
    # and, number by number: each figure printed is the rendering of a value the JSON holds
    shown = {cell(v) for v in doc["run"].values()} | {human_duration(v) for v in _durations(doc)}
    for t in document_tables(doc):  # cells as the JSON has them, durations by their column's unit
        shown.update((t.title, t.note, *t.headers))
        for row in t.rows:
            shown.update(cell(v) for v in row)
    header, *body = text.splitlines()
    for token in re.findall(r"\d[\d.:]*[a-z]*", header):
        assert any(token in s for s in shown), (token, header)
    for line in body:
        for token in re.findall(r"(?<![\w.-])\d+(?:\.\d+)?(?:ms|[dhms])?(?:\d+[dhms])*(?![\w.])", line):
            assert any(token in s for s in shown), (token, line)
    assert {"simulated_s", "wall_s", "outcome", "seed"} <= set(doc["run"])


def _durations(doc: dict[str, Any]) -> list[float]:
    return [float(v) for k, v in doc["run"].items() if k.endswith("_s") and isinstance(v, int | float)]


def test_tables_read_as_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir, _ = _run(tmp_path, "partition_heal", capsys)
    doc = json.loads((run_dir / SUMMARY_JSON_FILE).read_text())
    tables = {t["key"]: t for t in doc["tables"]}
    (link,) = tables["links"]["rows"]
    assert link["link"] == "fleet -> main" and link["tx started"] == link["tx ended"] == 20
    (recovery,) = tables["recovery_after_outages"]["rows"]
    assert recovery["at"] == 1200.0  # seconds, shown as "20m" in the text
    assert {c["name"] for c in tables["recovery_after_outages"]["columns"] if c.get("unit") == "s"} == {
        "at",
        "50 % back",
        "95 % back",
        "100 % back",
    }
    assert isinstance(recovery["100 % back"], float) and recovery["100 % back"] > 0
    assert doc["run"]["simulated_s"] == 7200.0


def test_report_regenerates_summary_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir, printed = _run(tmp_path, "default", capsys)
    links = printed["station_links"]  # the per-station table evsim run prints for small fleets
    assert [r["station"] for r in links["rows"]] == [f"ST-{n:04d}" for n in range(1, 11)]
    assert {r["TLS"] for r in links["rows"]} == {"TLSv1.3"} and {r["boots"] for r in links["rows"]} == {1}
    (run_dir / SUMMARY_JSON_FILE).unlink()
    assert main(["report", str(run_dir), "--no-plots", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["summary"] == printed["summary"] == json.loads((run_dir / SUMMARY_JSON_FILE).read_text())
    assert main(["report", str(run_dir), "--no-plots"]) == 0
    assert capsys.readouterr().out.startswith("scenario default, seed 1, simulated ")


def test_a_table_the_summary_gains_is_in_the_json_too() -> None:
    """What another module adds to :func:`summarize` (here: a latency table) needs no JSON code of its own."""
    latency = Table(
        "Boot latency (station side)",
        ("endpoint", "p50", "p95", "max", "boots/s", "note"),
        (("main", Seconds(0.0123), Seconds(1.5), Seconds(5400.0), 12.5, "-"),),
        note="from the first connect to the accepted BootNotification",
    )
    summary = Summary((latency, Table("Attacks", ("attacker", "count"), ())))
    doc = summary_document(summary, {"scenario": "x", "seed": 3, "duration_s": 60.0}, header="scenario x")
    assert check_document(doc) == []
    assert render_document(doc) == summary.render(header="scenario x")
    (t, empty) = doc["tables"]
    assert t["key"] == "boot_latency" and empty["rows"] == []
    assert t["rows"] == [
        {"endpoint": "main", "p50": 0.0123, "p95": 1.5, "max": 5400.0, "boots/s": 12.5, "note": "-"}
    ]
    assert [c.get("unit") for c in t["columns"]] == [None, "s", "s", "s", None, None]
    assert "12.3ms" in latency.render() and "1h30m" in latency.render()
    assert doc["run"] == {"scenario": "x", "seed": 3, "simulated_s": 60.0}


def test_check_document_names_what_is_wrong() -> None:
    doc = summary_document(Summary((Table("Links", ("link", "n"), (("a", 1),)),)), {})
    assert check_document(doc) == []
    bad = json.loads(json.dumps(doc))
    bad["schema_version"] = 99
    bad["tables"][0]["rows"][0] = {"n": 1, "link": "a"}
    bad["tables"].append(bad["tables"][0])
    errors = check_document(bad)
    assert any("schema_version" in e for e in errors)
    assert any("rows[0] does not have exactly the columns" in e for e in errors)
    assert any("used twice" in e for e in errors)
    # a title giving a key already taken, and a repeated column name, stay distinct (and render as before)
    twins = Summary(
        (
            Table("Links", ("a",), ()),
            Table("Links (again)", ("n", "n"), ((1, Seconds(2.0)),)),
            Table("Links", ("a",), ()),
        )
    )
    doc = summary_document(twins, {})
    assert [t["key"] for t in doc["tables"]] == ["links", "links_again", "links_2"]
    assert doc["tables"][1]["rows"] == [{"n": 1, "n (2)": 2.0}]
    assert check_document(doc) == [] and render_document(doc) == twins.render()


def test_human_durations_read_back_as_scenario_durations() -> None:
    from evsim.scenario.units import parse_duration

    cases = {
        0.0: "0s",
        0.00042: "420us",
        0.0042: "4.2ms",
        0.25: "250ms",
        1.5: "1.5s",
        42.34: "42.3s",
        60.0: "1m",
        1824.0: "30m24s",
        5400.0: "1h30m",
        345600.0: "4d",
        31536000.0: "365d",
    }
    for seconds, text in cases.items():
        assert human_duration(seconds) == text
        assert parse_duration(text) == pytest.approx(seconds, rel=0.01, abs=0.001)
    assert human_duration(-90.0) == "-1m30s"


def test_no_raw_floats_or_reprs_in_shipped_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("certificate_expiry", "lc_upstream_failover"):
        run_dir, _ = _run(tmp_path / name, name, capsys)
        text = (run_dir / SUMMARY_FILE).read_text()
        assert not re.search(r"\d\.\d{3,}", text), text  # 345600.000, 0.816...
        assert not re.search(r"[A-Z][A-Za-z]+\(", text), text  # ResetSpec(every=3600.0)
        assert "validity=365d" in text or name != "certificate_expiry"
