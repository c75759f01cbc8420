"""``summary.json``: the run's summary as data, built from the same tables as ``summary.txt``.

Theory of operation. :func:`evsim.metrics.summary.summarize` returns a :class:`~evsim.metrics.summary.Summary`,
a sequence of :class:`~evsim.metrics.summary.Table` values; ``summary.txt`` is their text rendering and
``summary.json`` is :func:`summary_document` of the same values, so a table added to the summary appears in
both with nothing else to change. Cells keep their type: integers and floats are JSON numbers, durations
(:class:`~evsim.report.Seconds`) are numbers of seconds in a column marked ``"unit": "s"``, text stays text
(``"-"`` where the text report shows a dash). :func:`render_document` turns the document back into the exact
text of ``summary.txt``: the tests use it to prove that every figure of the text report is in the JSON.

The document (``SCHEMA_VERSION`` 1; documented in ``docs/summary-json.md``)::

    {
      "schema": "evsim.summary",
      "schema_version": 1,
      "header": "scenario default, seed 1, simulated 10m58s, wall 166ms, outcome: completed",
      "run": {"scenario": "default", "seed": 1, "outcome": "completed", "simulated_s": 657.5, ...},
      "tables": [
        {"key": "links", "title": "Links (station group -> CSMS, CSMS side)",
         "columns": [{"name": "link"}, {"name": "sessions"}, ...],
         "rows": [{"link": "fleet -> main", "sessions": 10, ...}],
         "note": "each figure on the row of ..."},
        ...
      ]
    }

A reader must check ``schema_version``: a version bump means a key was removed or changed meaning; new keys and
new tables may appear within a version.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evsim.metrics.summary import Summary, Table, slug
from evsim.report import Seconds

SCHEMA = "evsim.summary"
SCHEMA_VERSION = 1

#: ``meta.json`` keys copied into the document's ``run`` object, and their names there.
RUN_KEYS: tuple[tuple[str, str], ...] = (
    ("scenario", "scenario"),
    ("seed", "seed"),
    ("outcome", "outcome"),
    ("error", "error"),
    ("duration_s", "simulated_s"),
    ("scenario_duration_s", "scenario_duration_s"),
    ("wall_time_s", "wall_s"),
    ("clock", "clock"),
    ("network", "network"),
    ("stations_total", "stations_total"),
    ("started_utc", "started_utc"),
    ("file", "file"),
    ("evsim_version", "evsim_version"),
)

_SCALARS = (str, int, float, bool, type(None))


def summary_document(summary: Summary, meta: Mapping[str, Any], *, header: str = "") -> dict[str, Any]:
    """The ``summary.json`` document of a run.

    Args:
        summary: the tables (what ``summary.txt`` renders).
        meta: the run's ``meta.json`` (the keys of :data:`RUN_KEYS` that it has go to ``run``).
        header: the first line of ``summary.txt``.

    Two tables whose titles give one key get distinct keys (the whole title, then a number), and two columns
    of one name distinct names (``name (2)``, the printed header kept as ``header``), so a new table can never
    make the document ambiguous.

    Returns:
        A JSON-ready dict (see the module doc).
    """
    keys: set[str] = set()
    tables = []
    for t in summary.tables:
        key = t.key if t.key not in keys else slug(t.title)
        base, n = key, 2
        while key in keys:
            key, n = f"{base}_{n}", n + 1
        keys.add(key)
        tables.append(table_document(t, key=key))
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "header": header,
        "run": {name: meta[key] for key, name in RUN_KEYS if key in meta},
        "tables": tables,
    }


def table_document(t: Table, *, key: str | None = None) -> dict[str, Any]:
    """One table as JSON: key (default ``t.key``), title, columns (``unit: "s"`` for durations), rows as
    objects, note."""
    names: list[str] = []
    for header in t.headers:
        name, n = header, 2
        while name in names:
            name, n = f"{header} ({n})", n + 1
        names.append(name)
    columns: list[dict[str, str]] = []
    for i, (name, header) in enumerate(zip(names, t.headers, strict=True)):
        column = {"name": name} if name == header else {"name": name, "header": header}
        if any(isinstance(row[i], Seconds) for row in t.rows):
            column["unit"] = "s"
        columns.append(column)
    rows = [{name: _json_cell(value) for name, value in zip(names, row, strict=True)} for row in t.rows]
    return {"key": key or t.key, "title": t.title, "columns": columns, "rows": rows, "note": t.note}


def _json_cell(value: object) -> object:
    if isinstance(value, Seconds):
        return float(value)
    if isinstance(value, _SCALARS):
        return value
    return str(value)


def document_tables(doc: Mapping[str, Any]) -> tuple[Table, ...]:
    """The tables of a document, as :class:`Table` values again (durations as :class:`Seconds`)."""
    out = []
    for t in doc["tables"]:
        names = [c["name"] for c in t["columns"]]
        durations = {c["name"] for c in t["columns"] if c.get("unit") == "s"}
        rows = tuple(tuple(_table_cell(row[name], name in durations) for name in names) for row in t["rows"])
        headers = tuple(c.get("header", c["name"]) for c in t["columns"])
        out.append(Table(t["title"], headers, rows, t.get("note", "")))
    return tuple(out)


def _table_cell(value: object, duration: bool) -> object:
    if duration and isinstance(value, int | float) and not isinstance(value, bool):
        return Seconds(value)
    return value


def render_document(doc: Mapping[str, Any]) -> str:
    """The text of ``summary.txt`` from the document alone (the header line, then every table)."""
    return Summary(document_tables(doc)).render(header=doc.get("header", ""))


def check_document(doc: object) -> list[str]:
    """Structural check of a ``summary.json`` document against the schema of the module doc.

    Args:
        doc: the parsed JSON.

    Returns:
        What is wrong, one line each (empty: the document is valid).
    """
    if not isinstance(doc, dict):
        return ["the document is not a JSON object"]
    errors = []
    if doc.get("schema") != SCHEMA:
        errors.append(f"schema is {doc.get('schema')!r}, not {SCHEMA!r}")
    if doc.get("schema_version") != SCHEMA_VERSION:
        errors.append(f"schema_version is {doc.get('schema_version')!r}, not {SCHEMA_VERSION}")
    if not isinstance(doc.get("header"), str):
        errors.append("header is not a string")
    run = doc.get("run")
    if not isinstance(run, dict):
        errors.append("run is not an object")
    else:
        known = {name for _, name in RUN_KEYS}
        errors.extend(f"run.{k} is not a known key" for k in run if k not in known)
    tables = doc.get("tables")
    if not isinstance(tables, list):
        return [*errors, "tables is not an array"]
    seen: set[object] = set()
    for i, t in enumerate(tables):
        errors.extend(f"tables[{i}]: {e}" for e in _check_table(t))
        if isinstance(t, dict):
            if t.get("key") in seen:
                errors.append(f"tables[{i}]: key {t.get('key')!r} is used twice")
            seen.add(t.get("key"))
    return errors


def _check_table(t: object) -> list[str]:
    if not isinstance(t, dict):
        return ["not an object"]
    errors = [f"{k} is not a string" for k in ("key", "title", "note") if not isinstance(t.get(k), str)]
    columns = t.get("columns")
    if not isinstance(columns, list) or not all(
        isinstance(c, dict)
        and isinstance(c.get("name"), str)
        and c.get("unit", "s") == "s"
        and isinstance(c.get("header", ""), str)
        for c in columns
    ):
        return [*errors, 'columns is not an array of {"name": str, "unit"?: "s", "header"?: str}']
    names = [c["name"] for c in columns]
    durations = {c["name"] for c in columns if "unit" in c}
    rows = t.get("rows")
    if not isinstance(rows, list):
        return [*errors, "rows is not an array"]
    for j, row in enumerate(rows):
        if not isinstance(row, dict) or list(row) != names:
            errors.append(f"rows[{j}] does not have exactly the columns, in order")
            continue
        for name, value in row.items():
            if not isinstance(value, _SCALARS):
                errors.append(f"rows[{j}].{name} is not a scalar")
            elif name in durations and not isinstance(value, int | float | str):
                errors.append(f"rows[{j}].{name} is neither seconds nor text")
    return errors


__all__ = [
    "RUN_KEYS",
    "SCHEMA",
    "SCHEMA_VERSION",
    "check_document",
    "document_tables",
    "render_document",
    "summary_document",
    "table_document",
]
