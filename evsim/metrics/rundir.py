"""The run directory: everything one scenario run leaves behind, and reading it back for ``evsim report``.

Layout of ``<base>/<scenario>-<YYYYmmdd-HHMMSS>[-N]/``::

    meta.json       scenario name, seed, file, durations, evsim version, outcome, topology (written last)
    events.jsonl    every recorder event, one JSON object a line (:meth:`Event.as_json`)
    metrics.csv     periodic samples (:class:`Sample`), one row per sampling instant
    summary.txt     the final summary tables (:mod:`evsim.metrics.summary`)
    summary.json    the same tables as data (:mod:`evsim.metrics.summary_json`, ``docs/summary-json.md``)
    plots/*.png     plots over simulated time (:mod:`evsim.metrics.plots`)

The runner creates the directory with :meth:`RunDir.create`, streams events into :meth:`RunDir.open_event_sink`
while the simulation runs, and writes the metrics, the summary and the meta at the end (also after Ctrl-C or a
crash, so a partial run still has a report). :func:`load` reads it all back; :func:`rerender` rebuilds the
summary and plots from the files alone.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

import attrs
import orjson

from evsim.errors import ConfigError
from evsim.recorder import Event
from evsim.report import human_duration

if TYPE_CHECKING:
    from evsim.metrics.summary import Summary
    from evsim.metrics.topology import Topology

EVENTS_FILE = "events.jsonl"
METRICS_FILE = "metrics.csv"
SUMMARY_FILE = "summary.txt"
SUMMARY_JSON_FILE = "summary.json"
META_FILE = "meta.json"
PLOTS_DIR = "plots"

#: Version of the run-directory layout, recorded in ``meta.json`` as ``format``.
FORMAT_VERSION = 1


@attrs.frozen
class Sample:
    """Counters of the whole run at one instant of simulated time: one metrics CSV row, one live update.

    Counters are cumulative since the start of the run except ``stations``, ``connected_stations``,
    ``done_stations`` and ``queued_messages``, which are levels at ``t``. Every field but ``t`` defaults to 0.

    Attributes:
        t: simulated seconds since the run started.
        stations: stations running in the scenario (0: unknown; the live display then uses its own total).
        connected_stations: stations connected and accepted (booted) now.
        done_stations: stations that finished their charging sessions and emptied their queues.
        messages_total: OCPP CALLs so far (e.g. the sum of the CSMSs' ``statistics().messages``).
        handshakes_ok: TLS handshakes completed by stations so far.
        handshakes_failed: TLS handshakes that failed so far.
        connect_failures: station connections that failed or broke, for any reason, so far (TLS, TCP refused,
            HTTP upgrade rejected, lost): the sum of the stations' ``statistics().connect_failures``; what the
            live display shows as failures.
        tx_started: transactions the CSMSs have seen start.
        tx_ended: transactions the CSMSs have seen end.
        queued_messages: messages waiting in the stations' offline queues now.
    """

    t: float
    stations: int = 0
    connected_stations: int = 0
    done_stations: int = 0
    messages_total: int = 0
    handshakes_ok: int = 0
    handshakes_failed: int = 0
    connect_failures: int = 0
    tx_started: int = 0
    tx_ended: int = 0
    queued_messages: int = 0


#: The metrics CSV header, in column order.
METRICS_COLUMNS: tuple[str, ...] = tuple(f.name for f in attrs.fields(Sample))


@attrs.frozen
class RunData:
    """A run directory read back by :func:`load`.

    Attributes:
        path: the run directory.
        meta: the contents of ``meta.json`` (see :meth:`RunDir.write_meta` for the keys).
        events: the events as JSON objects, in file order (``t``, ``node``, ``seq``, ``kind``, then fields).
        samples: the metrics rows, in file order (empty when the run wrote none).
        summary: the text of ``summary.txt``, or None when it is missing.
    """

    path: Path
    meta: dict[str, Any]
    events: list[dict[str, Any]]
    samples: list[Sample]
    summary: str | None

    @property
    def plots_dir(self) -> Path:
        """Where the plots of this run go."""
        return self.path / PLOTS_DIR


class EventSink:
    """Appends events to a JSONL file in batches; a callable for :class:`~evsim.recorder.Recorder`.

    Use it as a context manager (or call :meth:`close`): buffered lines are written when ``batch`` of them
    have accumulated, on :meth:`flush`, and on close, so a run interrupted by Ctrl-C still has its log.

    Args:
        path: the JSONL file (appended to; created if missing).
        batch: number of events buffered before they are written.
    """

    def __init__(self, path: Path, *, batch: int = 1000) -> None:
        if batch < 1:
            raise ValueError(f"batch must be at least 1, not {batch}")
        self.path = path
        self.batch = batch
        self.count = 0
        self._buffer: list[bytes] = []
        self._file: IO[bytes] | None = path.open("ab")

    def __call__(self, event: Event) -> None:
        """Buffer one event (written with the next batch).

        Args:
            event: the recorded event.

        Raises:
            ValueError: the sink is closed.
        """
        self.write(event.as_json())

    def write(self, obj: Mapping[str, Any]) -> None:
        """Buffer one event already in its JSON form (``Event.as_json()``).

        Args:
            obj: the JSON object; values that JSON cannot hold are written as their ``str()``.

        Raises:
            ValueError: the sink is closed.
        """
        if self._file is None:
            raise ValueError(f"event sink {self.path} is closed")
        self._buffer.append(orjson.dumps(obj, default=str, option=orjson.OPT_NON_STR_KEYS))
        self.count += 1
        if len(self._buffer) >= self.batch:
            self.flush()

    def flush(self) -> None:
        """Write the buffered events to the file (and the OS); a no-op when closed or empty."""
        if self._file is None or not self._buffer:
            return
        self._file.write(b"\n".join(self._buffer) + b"\n")
        self._file.flush()
        self._buffer.clear()

    def close(self) -> None:
        """Flush and close the file; closing twice is harmless."""
        if self._file is None:
            return
        try:
            self.flush()
        finally:
            self._file.close()
            self._file = None

    def __enter__(self) -> EventSink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def tee(*sinks: Callable[[Event], None]) -> Callable[[Event], None]:
    """One recorder sink that forwards every event to several (e.g. the JSONL writer and a live tally).

    Args:
        sinks: the callables, called in order.

    Returns:
        A callable taking an :class:`Event`.
    """

    def forward(event: Event) -> None:
        for sink in sinks:
            sink(event)

    return forward


@attrs.frozen
class RunDir:
    """One run's output directory (see the module doc for the layout).

    Attributes:
        path: the directory.
    """

    path: Path

    @classmethod
    def create(cls, base: Path, scenario_name: str, started_utc: _dt.datetime) -> RunDir:
        """Make a new, empty run directory ``base/<name>-<YYYYmmdd-HHMMSS>``.

        The name is reduced to letters, digits, ``.``, ``_`` and ``-``. If the directory exists (two runs in
        the same second), ``-2``, ``-3``... is appended; creation is atomic, so concurrent runs never share one.

        Args:
            base: parent directory (created if missing), e.g. ``runs``.
            scenario_name: the scenario's name.
            started_utc: when the run started (wall clock; naive values are taken as UTC).

        Returns:
            The new run directory.

        Raises:
            OSError: the directory cannot be created.
        """
        if started_utc.tzinfo is not None:
            started_utc = started_utc.astimezone(_dt.UTC)
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", scenario_name).strip("._") or "run"
        stem = f"{safe}-{started_utc:%Y%m%d-%H%M%S}"
        base.mkdir(parents=True, exist_ok=True)
        n = 1
        while True:
            path = base / (stem if n == 1 else f"{stem}-{n}")
            try:
                path.mkdir()
            except FileExistsError:
                n += 1
                continue
            return cls(path)

    @property
    def events_path(self) -> Path:
        """The JSONL event log."""
        return self.path / EVENTS_FILE

    @property
    def metrics_path(self) -> Path:
        """The metrics CSV."""
        return self.path / METRICS_FILE

    @property
    def summary_path(self) -> Path:
        """The summary text."""
        return self.path / SUMMARY_FILE

    @property
    def meta_path(self) -> Path:
        """The run's meta JSON."""
        return self.path / META_FILE

    @property
    def plots_dir(self) -> Path:
        """Where the PNG plots go."""
        return self.path / PLOTS_DIR

    def open_event_sink(self, *, batch: int = 1000) -> EventSink:
        """Open the JSONL event log for appending.

        Args:
            batch: events buffered between writes.

        Returns:
            An :class:`EventSink`: pass it as the recorder's ``sink`` and close it (``with``) at the end.
        """
        return EventSink(self.events_path, batch=batch)

    def write_metrics_csv(self, rows: Iterable[Sample]) -> Path:
        """Write the periodic samples as ``metrics.csv`` (header :data:`METRICS_COLUMNS`).

        Args:
            rows: the samples, in time order.

        Returns:
            The CSV file's path.
        """

        def write(f: IO[str]) -> None:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(METRICS_COLUMNS)
            for row in rows:
                w.writerow(_fmt_csv(v) for v in attrs.astuple(row))

        return _atomic_write_text(self.metrics_path, write)

    def write_summary(self, text: str) -> Path:
        """Write the summary tables as ``summary.txt``.

        Args:
            text: the rendered summary.

        Returns:
            The file's path.
        """
        return _atomic_write_text(self.summary_path, lambda f: f.write(text.rstrip("\n") + "\n"))

    def write_summary_json(self, document: Mapping[str, Any]) -> Path:
        """Write the summary document as ``summary.json``.

        Args:
            document: :func:`evsim.metrics.summary_json.summary_document`.

        Returns:
            The file's path.
        """
        text = json.dumps(document, indent=2, default=_json_default, ensure_ascii=False, allow_nan=False)
        return _atomic_write_text(self.path / SUMMARY_JSON_FILE, lambda f: f.write(text + "\n"))

    def write_meta(self, meta: Mapping[str, Any]) -> Path:
        """Write ``meta.json``, which marks the directory as a run for :func:`load`.

        Keys the runner should give (others are kept as they are): ``scenario`` (name), ``seed``, ``file``
        (the scenario file), ``started_utc``, ``duration_s`` (simulated seconds run), ``wall_time_s``,
        ``evsim_version``, ``outcome`` (``"completed"``, ``"interrupted"``, ``"crashed: <what>"``),
        ``stations_total``, ``topology`` (:meth:`evsim.metrics.topology.Topology.as_json`) and, optionally,
        ``ocpp_messages`` (station id -> OCPP action -> CALLs the CSMS received, summed over the endpoints
        sharing the station's records) and ``ocpp_messages_by_endpoint`` (CSMS node -> station id -> OCPP
        action -> CALLs that endpoint received). ``format`` is added.

        Args:
            meta: the values; datetimes and paths are written as strings.

        Returns:
            The file's path.
        """
        doc = {"format": FORMAT_VERSION, **meta}
        text = json.dumps(doc, indent=2, sort_keys=True, default=_json_default, ensure_ascii=False)
        return _atomic_write_text(self.meta_path, lambda f: f.write(text + "\n"))


def load(run_dir: Path) -> RunData:
    """Read a run directory back.

    A truncated last line of the event log (a run killed mid-write) is skipped; any other bad line is an error.

    Args:
        run_dir: the directory :meth:`RunDir.create` made.

    Returns:
        The run's meta, events, samples and summary.

    Raises:
        ConfigError: not a run directory, or one of its files is unreadable (names the file and line).
    """
    meta_path = run_dir / META_FILE
    if not run_dir.is_dir():
        raise ConfigError("no such run directory", value=str(run_dir), fix="give a directory under runs/")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"not a run directory: {META_FILE} is missing",
            value=str(run_dir),
            fix="give a directory that 'evsim run' wrote (runs/<scenario>-<timestamp>)",
        ) from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"unreadable: {exc}", file=str(meta_path)) from exc
    if not isinstance(meta, dict):
        raise ConfigError("expected a JSON object", file=str(meta_path))
    if meta.get("format", FORMAT_VERSION) != FORMAT_VERSION:
        raise ConfigError(
            f"run directory format {meta.get('format')!r} is not {FORMAT_VERSION}",
            file=str(meta_path),
            fix="re-run the scenario with this evsim version",
        )
    events = _load_events(run_dir / EVENTS_FILE)
    samples = _load_samples(run_dir / METRICS_FILE)
    summary_path = run_dir / SUMMARY_FILE
    summary = summary_path.read_text(encoding="utf-8") if summary_path.is_file() else None
    return RunData(path=run_dir, meta=meta, events=events, samples=samples, summary=summary)


def rerender(run_dir: Path, *, plots: bool = True) -> tuple[str, list[Path]]:
    """``evsim report RUN_DIR``: rebuild the summary (and plots) from the run directory's files alone.

    Rewrites ``summary.txt``, ``summary.json`` and ``plots/*.png``.

    Args:
        run_dir: the run directory.
        plots: also render the PNG plots (needs matplotlib).

    Returns:
        The summary text and the plot files written (:func:`read_summary_json` reads the document back).

    Raises:
        ConfigError: not a readable run directory, or matplotlib is missing when ``plots`` is true.
    """
    from evsim.metrics.plots import render_plots
    from evsim.metrics.summary_json import summary_document
    from evsim.metrics.topology import Topology

    run = load(run_dir)
    summary = summary_of(run)
    header = _header(run.meta)
    text = summary.render(header=header)
    document = summary_document(summary, run.meta, header=header)
    rd = RunDir(run_dir)
    rd.write_summary(text)
    rd.write_summary_json(document)
    written = render_plots(run, Topology.from_json(run.meta.get("topology"))) if plots else []
    return text, written


def read_summary_json(run_dir: Path) -> dict[str, Any]:
    """The ``summary.json`` of a run directory (:func:`rerender` writes it).

    Raises:
        ConfigError: missing or unreadable.
    """
    path = run_dir / SUMMARY_JSON_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"unreadable: {exc}", file=str(path), fix=f"run: evsim report {run_dir}") from exc
    if not isinstance(doc, dict):
        raise ConfigError("expected a JSON object", file=str(path), fix=f"run: evsim report {run_dir}")
    return doc


def summary_of(run: RunData) -> Summary:
    """The summary tables of a run directory read back (what :func:`rerender` prints).

    Args:
        run: the run (:func:`load`).

    Returns:
        :func:`evsim.metrics.summary.summarize` of its events, with the topology, per-endpoint message counts
        and queue statistics its ``meta.json`` holds.
    """
    from evsim.metrics.summary import summarize
    from evsim.metrics.topology import Topology

    def mapping(key: str) -> Any:
        value = run.meta.get(key)
        return value if isinstance(value, Mapping) else None

    topology = Topology.from_json(run.meta.get("topology"))
    tables = summarize(
        run.events,
        topology,
        messages=mapping("ocpp_messages"),
        endpoint_messages=mapping("ocpp_messages_by_endpoint"),
        tx_queues=mapping("tx_queues"),
    )
    return with_story(tables, run, topology)


def with_story(summary: Summary, run: RunData, topology: Topology | None = None) -> Summary:
    """``summary`` opened by the scenario's description and expected outcome and closed by the check of that
    outcome (:mod:`evsim.metrics.outcome`), as ``meta.json`` states them.

    Args:
        summary: the tables of :func:`~evsim.metrics.summary.summarize`.
        run: the run (its meta and events).
        topology: which nodes are stations.
    """
    from evsim.metrics.outcome import Expectation, outcome_checks, outcome_table, scenario_table
    from evsim.metrics.summary import Summary

    expect = Expectation.from_json(run.meta.get("expect"))
    checks = outcome_checks(
        run.events,
        expect,
        summary=summary,
        topology=topology,
        run_outcome=str(run.meta.get("outcome", "completed")),
    )
    first = scenario_table(run.meta)
    return Summary(
        (
            *(() if first is None else (first,)),
            *summary.tables,
            outcome_table(checks, stated=expect is not None),
        )
    )


def _header(meta: Mapping[str, Any]) -> str:
    parts = [f"scenario {meta.get('scenario', '?')}"]
    if "seed" in meta:
        parts.append(f"seed {meta['seed']}")
    for key, label in (("duration_s", "simulated"), ("wall_time_s", "wall")):
        if isinstance(meta.get(key), int | float):
            parts.append(f"{label} {human_duration(float(meta[key]))}")
    if "outcome" in meta:
        parts.append(f"outcome: {meta['outcome']}")
    return ", ".join(parts)


def _load_events(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    data = path.read_bytes()
    lines = data.split(b"\n")
    events: list[dict[str, Any]] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            if i == len(lines) - 1:
                break  # no newline after it: the run was killed while writing its last line
            raise ConfigError(f"bad JSON: {exc}", file=str(path), line=i + 1) from exc
        if not isinstance(obj, dict) or not {"t", "node", "kind"} <= obj.keys():
            raise ConfigError("expected an event object with t, node and kind", file=str(path), line=i + 1)
        events.append(obj)
    return events


def _load_samples(path: Path) -> list[Sample]:
    if not path.is_file():
        return []
    samples: list[Sample] = []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = set(METRICS_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise ConfigError(
                f"missing columns {', '.join(sorted(missing))}",
                file=str(path),
                line=1,
                value=reader.fieldnames,
            )
        for row in reader:
            try:
                samples.append(
                    Sample(t=float(row["t"]), **{c: int(row[c]) for c in METRICS_COLUMNS if c != "t"})
                )
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"bad number: {exc}", file=str(path), line=reader.line_num) from exc
    return samples


def _fmt_csv(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6f}".rstrip("0").rstrip(".") or "0"
    return str(value)


def _json_default(value: object) -> str:
    if isinstance(value, _dt.datetime | _dt.date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _atomic_write_text(path: Path, write: Callable[[IO[str]], object]) -> Path:
    """Write via a temporary file and rename, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("w", encoding="utf-8", newline="") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return path
