"""PNG plots of a run over simulated time (matplotlib, non-interactive Agg canvas).

Seven plots, written to ``<run>/plots/``:

* ``connected_stations.png`` — stations connected and accepted over time (the metrics samples when the run
  has them, else derived from the stations' ``booted`` / ``reconnect_wait`` events), with the fleet size, and
  an inset zoomed on the first recovery too short to see at the run's scale (from the events);
* ``handshakes.png`` — per time bucket, TLS handshakes completed (full / resumed, stacked), connection
  failures seen by the stations, stacked by reason, and what the CSMSs, controllers and attackers acting as
  servers refused or lost (their upstream hops too), by node and reason (:func:`server_refusal_buckets`: a
  downgrading client is only seen there);
* ``connection_rate.png`` — connection attempts per second: TLS handshakes started, TCP connections refused,
  WebSocket sessions accepted by each CSMS and controller (the shape of a reconnect storm);
* ``transactions.png`` — cumulative transactions started at the stations, started at the CSMS and ended at
  the CSMS (an offline period shows as a gap between the first two curves), and when several endpoints
  recorded transactions (a primary and its secondary), started and ended at each of them;
* ``clock_offsets.png`` — percentiles of the stations' clock offsets over time, replayed from the clock
  events (:mod:`evsim.metrics.clocks`; "no data" when every clock is perfect).
* ``reconnect_storm.png`` — WebSocket sessions accepted per second by each CSMS and controller, with the
  timeline's outages marked: the shape of the reconnect storm and where it lands
  (:func:`evsim.metrics.failover.storm_series`).
* ``load_latency.png`` — connect and boot latency of every connection and boot (station side, per link), OCPP
  round-trip p50 / p95 and calls answered per second per endpoint, per time bucket (:mod:`evsim.metrics.load`);
* ``certificates_by_issuer.png`` — connections using a station client certificate, and a CSMS server
  certificate, from each issuer over time (:mod:`evsim.metrics.issuers`).

Every plot over time but the clock offsets marks each timeline event (and scheduled link reset) with a dotted line and a label; labels
go in rows that never overlap (:mod:`evsim.metrics.plot_marks`). The series are computed by pure functions (:func:`connected_series`, :func:`handshake_buckets`,
:func:`connection_rates`, :func:`transaction_curves`) that need no matplotlib; only :func:`render_plots`
imports it, and says how to install it when it is missing. Figures are drawn on
:class:`~matplotlib.backends.backend_agg.FigureCanvasAgg` directly, without pyplot: no global state, no GUI
backend, never a window.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from evsim.errors import ConfigError
from evsim.metrics.plot_marks import CHAR_EM, place_labels, timeline_marks, zoom_windows
from evsim.metrics.rundir import RunData, Sample
from evsim.metrics.summary import ATTACKER_PREFIX
from evsim.metrics.topology import Topology, node_roles
from evsim.report import human_duration

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

#: Bucket widths (seconds) a plot may use: round numbers on a clock.
NICE_BUCKETS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)

#: Failure reasons shown separately in the handshake plot; the rest are summed as "other".
MAX_REASONS = 7

PLOT_FILES = (
    "connected_stations.png",
    "handshakes.png",
    "connection_rate.png",
    "transactions.png",
    "reconnect_storm.png",
    "clock_offsets.png",
    "load_latency.png",
    "certificates_by_issuer.png",
)

_DPI = 110
_SIZE = (10.0, 4.8)
_COLORS = {"ok": "#2a7ab0", "resumed": "#8cc5e8", "fleet": "#888888", "line": "#2a7ab0"}
_FAILURE_COLORS = ("#d62728", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#7f7f7f")


@attrs.frozen
class TimeAxis:
    """How simulated seconds are shown on an axis.

    Attributes:
        unit: ``s``, ``min``, ``h`` or ``d``.
        seconds: seconds per unit.
    """

    unit: str
    seconds: float

    @classmethod
    def for_span(cls, span_s: float) -> TimeAxis:
        """Seconds up to 3 minutes, minutes up to 3 hours, hours up to 3 days, then days.

        Args:
            span_s: the simulated time covered, seconds.

        Returns:
            The axis unit.
        """
        if span_s <= 180:
            return cls("s", 1.0)
        if span_s <= 3 * 3600:
            return cls("min", 60.0)
        if span_s <= 3 * 86400:
            return cls("h", 3600.0)
        return cls("d", 86400.0)

    @property
    def label(self) -> str:
        """The axis label, e.g. ``simulated time (min)``."""
        return f"simulated time ({self.unit})"

    def scale(self, ts: Iterable[float]) -> list[float]:
        """Seconds to this axis's unit.

        Args:
            ts: times in seconds.

        Returns:
            The times in :attr:`unit`.
        """
        return [t / self.seconds for t in ts]


def bucket_width(span_s: float, target: int = 100) -> float:
    """The smallest round bucket width that splits ``span_s`` into at most ``target`` buckets.

    Args:
        span_s: simulated seconds covered.
        target: wanted maximum number of buckets.

    Returns:
        A width from :data:`NICE_BUCKETS` (the largest if even that gives more buckets).
    """
    for width in NICE_BUCKETS:
        if span_s / width <= target:
            return float(width)
    return float(NICE_BUCKETS[-1])


def format_width(width_s: float) -> str:
    """A bucket width for labels.

    Args:
        width_s: seconds.

    Returns:
        ``30 s``, ``5 min``, ``2 h``, ``1 d``...
    """
    for unit, secs in (("d", 86400), ("h", 3600), ("min", 60)):
        if width_s >= secs and width_s % secs == 0:
            return f"{int(width_s // secs)} {unit}"
    return f"{width_s:g} s"


# ------------------------------------------------------------------------------------------------ series


@attrs.frozen
class Buckets:
    """Counts per time bucket.

    Attributes:
        width: bucket width, seconds.
        starts: each bucket's start time, seconds.
        series: label -> one count per bucket.
    """

    width: float
    starts: tuple[float, ...]
    series: Mapping[str, tuple[int, ...]]


def _sorted(events: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted(events, key=lambda e: (float(e["t"]), str(e["node"]), int(e.get("seq", 0))))


def run_span(run: RunData) -> float:
    """Simulated seconds the run covered: the meta's ``duration_s``, else the last event or sample.

    Args:
        run: the run.

    Returns:
        Seconds (at least 1, so axes never collapse).
    """
    candidates = [float(e["t"]) for e in run.events[-1:]]
    candidates += [max((float(e["t"]) for e in run.events), default=0.0)]
    candidates += [s.t for s in run.samples[-1:]]
    duration = run.meta.get("duration_s")
    if isinstance(duration, int | float):
        candidates.append(float(duration))
    return max(1.0, *candidates)


def connected_series(
    events: Sequence[Mapping[str, Any]], samples: Sequence[Sample], topology: Topology | None = None
) -> tuple[list[float], list[int]]:
    """Connected stations over time, as a step function.

    Args:
        events: JSON event objects (used when there are no samples).
        samples: the metrics rows; preferred when present.
        topology: tells stations from CSMSs (:func:`~evsim.metrics.topology.node_roles`).

    Returns:
        Times (s) and the number connected from each time on.
    """
    if samples:
        return [s.t for s in samples], [s.connected_stations for s in samples]
    roles = node_roles(events, topology)
    online: set[str] = set()
    ts, ns = [0.0], [0]
    for e in _sorted(events):
        node, kind = str(e["node"]), e["kind"]
        if roles[node] != "station":
            continue
        if kind == "booted":
            online.add(node)
        elif kind == "reconnect_wait":
            online.discard(node)
        else:
            continue
        t = float(e["t"])
        if len(online) == ns[-1]:
            continue
        if ts[-1] == t:
            ns[-1] = len(online)
        else:
            ts.append(t)
            ns.append(len(online))
    return ts, ns


def _bucketize(
    span_s: float, width: float, points: Iterable[tuple[str, float]], labels: Sequence[str] = ()
) -> Buckets:
    n = max(1, int(-(-span_s // width)))
    counts: dict[str, list[int]] = {label: [0] * n for label in labels}
    for label, t in points:
        row = counts.setdefault(label, [0] * n)
        row[min(n - 1, max(0, int(t // width)))] += 1
    return Buckets(
        width=width,
        starts=tuple(i * width for i in range(n)),
        series={k: tuple(v) for k, v in counts.items()},
    )


def handshake_buckets(
    events: Sequence[Mapping[str, Any]], span_s: float, width: float, topology: Topology | None = None
) -> tuple[Buckets, Buckets]:
    """TLS handshakes and connection failures per bucket, as the stations saw them.

    Args:
        events: JSON event objects.
        span_s: simulated seconds covered.
        width: bucket width, seconds.
        topology: tells stations from CSMSs (:func:`~evsim.metrics.topology.node_roles`).

    Returns:
        (handshakes with series ``full`` and ``resumed``; failures with one series per reason, the
        :data:`MAX_REASONS` most frequent kept and the rest summed as ``other``, most frequent first).
    """
    roles = node_roles(events, topology)
    ok: list[tuple[str, float]] = []
    failed: list[tuple[str, float]] = []
    for e in events:
        if roles[e["node"]] != "station":
            continue
        if e["kind"] == "handshake_ok":
            ok.append(("resumed" if e.get("resumed") else "full", float(e["t"])))
        elif e["kind"] in ("handshake_failed", "connection_lost"):
            failed.append((str(e.get("reason") or e["kind"]), float(e["t"])))
    ranked = [r for r, _ in collections.Counter(r for r, _ in failed).most_common()]
    keep = set(ranked[:MAX_REASONS]) if len(ranked) > MAX_REASONS + 1 else set(ranked)
    failed = [(r if r in keep else "other", t) for r, t in failed]
    order = [r for r in ranked if r in keep] + (["other"] if len(keep) < len(ranked) else [])
    return _bucketize(span_s, width, ok, ("full", "resumed")), _bucketize(span_s, width, failed, order)


#: CSMS-side (and controller-side) event kinds drawn as refusals in the handshake plot.
SERVER_REFUSALS = ("handshake_failed", "upgrade_rejected", "boot_rejected", "accept_failed")

#: A controller's failures on its upstream hop (towards the CSMS), drawn with the servers' refusals.
UPSTREAM_FAILURES = ("upstream_failed", "upstream_lost")


def server_refusal_buckets(
    events: Sequence[Mapping[str, Any]], span_s: float, width: float, topology: Topology | None = None
) -> Buckets:
    """Connections the servers (CSMSs, controllers, an impostor or relay) refused or lost, per bucket, as they
    saw them: the other side of :func:`handshake_buckets` (a downgrading client is only ever seen by the
    CSMS). A controller's upstream hop counts as ``<controller> upstream: <reason>``; a relaying attacker's
    handshakes the stations refused with an alert as ``<attacker>: <alert>``.

    Args:
        events: JSON event objects.
        span_s: simulated seconds covered.
        width: bucket width, seconds.
        topology: tells servers from stations.

    Returns:
        One series per ``node: reason`` (``main: downgrade_refused``), the :data:`MAX_REASONS` most frequent
        kept and the rest summed as ``other``, most frequent first.
    """
    roles = node_roles(events, topology)
    refused: list[tuple[str, float]] = []
    for e in events:
        node, kind, reason = str(e["node"]), e["kind"], str(e.get("reason") or e["kind"])
        if roles[node] == "csms" and kind in SERVER_REFUSALS:
            refused.append((f"{node}: {reason}", float(e["t"])))
        elif roles[node] == "csms" and kind in UPSTREAM_FAILURES:
            refused.append((f"{node} upstream: {reason}", float(e["t"])))
        elif (
            node.startswith(ATTACKER_PREFIX) and kind == "attack_result" and reason.startswith("peer_alert:")
        ):
            refused.append((f"{node}: {reason}", float(e["t"])))
    ranked = [r for r, _ in collections.Counter(r for r, _ in refused).most_common()]
    keep = set(ranked[:MAX_REASONS]) if len(ranked) > MAX_REASONS + 1 else set(ranked)
    refused = [(r if r in keep else "other", t) for r, t in refused]
    order = [r for r in ranked if r in keep] + (["other"] if len(keep) < len(ranked) else [])
    return _bucketize(span_s, width, refused, order)


def connection_rates(
    events: Sequence[Mapping[str, Any]], span_s: float, width: float, topology: Topology | None = None
) -> Buckets:
    """Connection attempts per second, averaged over each bucket.

    Args:
        events: JSON event objects.
        span_s: simulated seconds covered.
        width: bucket width, seconds.
        topology: tells stations from CSMSs (:func:`~evsim.metrics.topology.node_roles`).

    Returns:
        Buckets whose series are counts per bucket (divide by ``width`` for a rate): ``TLS handshakes``
        (completed or failed, station side), ``refused at TCP`` (station side ``ConnectionRefused``), and
        ``sessions accepted by <endpoint>`` (``station_connected``) for each CSMS and controller, sorted.
    """
    roles = node_roles(events, topology)
    points: list[tuple[str, float]] = []
    endpoints: set[str] = set()
    for e in events:
        kind, t = e["kind"], float(e["t"])
        role = roles[e["node"]]
        if role == "csms":
            if kind == "station_connected":
                label = f"sessions accepted by {e['node']}"
                endpoints.add(label)
                points.append((label, t))
        elif role != "station":
            continue
        elif kind in ("handshake_ok", "handshake_failed"):
            points.append(("TLS handshakes", t))
        elif kind == "connection_lost" and e.get("reason") == "ConnectionRefused":
            points.append(("refused at TCP", t))
    labels = ("TLS handshakes", "refused at TCP", *sorted(endpoints))
    return _bucketize(span_s, width, points, labels)


def transaction_curves(
    events: Sequence[Mapping[str, Any]], topology: Topology | None = None
) -> dict[str, tuple[list[float], list[int]]]:
    """Cumulative transaction counts over time.

    Args:
        events: JSON event objects.
        topology: tells stations from CSMSs (:func:`~evsim.metrics.topology.node_roles`).

    Returns:
        label -> (times, cumulative count at each time) for ``started at stations``, ``started at CSMS``
        and ``ended at CSMS`` (each transaction counted once, duplicates ignored); when more than one CSMS
        recorded transactions, also ``started at <endpoint>`` and ``ended at <endpoint>`` for each of them
        (the endpoint that recorded the Started or Ended event).
    """
    roles = node_roles(events, topology)
    seen: dict[str, set[tuple[str, str]]] = collections.defaultdict(set)
    times: dict[str, list[float]] = {
        k: [] for k in ("started at stations", "started at CSMS", "ended at CSMS")
    }
    per_endpoint: dict[str, list[float]] = {}
    endpoints: set[str] = set()
    for e in _sorted(events):
        node, kind = str(e["node"]), e["kind"]
        labels: tuple[str, ...] = ()
        if roles[node] == "csms" and kind == "tx_event":
            what = {"Started": "started", "Ended": "ended"}.get(str(e.get("type")))
            endpoints.add(node)
            if what is not None:
                labels = (f"{what} at CSMS", f"{what} at {node}")
            key = (str(e.get("station")), str(e.get("tx")))
        elif roles[node] == "station" and kind == "tx_started":
            labels, key = ("started at stations",), (node, str(e.get("tx")))
        for label in labels:
            if key in seen[label]:
                continue
            seen[label].add(key)
            (times[label] if label in times else per_endpoint.setdefault(label, [])).append(float(e["t"]))
    if len(endpoints) > 1:
        for node in sorted(endpoints):
            for what in ("started", "ended"):
                times[f"{what} at {node}"] = per_endpoint.get(f"{what} at {node}", [])
    return {label: (ts, list(range(1, len(ts) + 1))) for label, ts in times.items()}


# ------------------------------------------------------------------------------------------------ drawing


def render_plots(
    run: RunData, topology: Topology | None = None, *, out_dir: Path | None = None
) -> list[Path]:
    """Draw the plots of a run (see the module doc) as PNG files.

    Args:
        run: the run (:func:`evsim.metrics.rundir.load`, or built in memory).
        topology: station groups (fleet size, servers); None reads ``topology`` from the run's meta.
        out_dir: where to write; default ``<run>/plots``.

    Returns:
        The files written, in :data:`PLOT_FILES` order.

    Raises:
        ConfigError: matplotlib is not installed (names the fix).
        OSError: the directory cannot be written.
    """
    figure_cls, canvas_cls = _matplotlib()
    topo = topology if topology is not None else Topology.from_json(run.meta.get("topology"))
    out = out_dir if out_dir is not None else run.plots_dir
    out.mkdir(parents=True, exist_ok=True)
    span = run_span(run)
    axis = TimeAxis.for_span(span)
    width = bucket_width(span)
    name = str(run.meta.get("scenario", run.path.name))
    fleet = run.meta.get("stations_total")
    if not isinstance(fleet, int):
        fleet = len(topo.groups) or None

    draws: list[tuple[str, Callable[[Figure], None]]] = [
        ("connected_stations.png", lambda f: _draw_connected(f, run, topo, axis, span, fleet, name)),
        ("handshakes.png", lambda f: _draw_handshakes(f, run, topo, axis, span, width, name)),
        ("connection_rate.png", lambda f: _draw_rates(f, run, topo, axis, span, width, name)),
        ("transactions.png", lambda f: _draw_transactions(f, run, topo, axis, span, name)),
        ("reconnect_storm.png", lambda f: _draw_storm(f, run, topo, axis, span, name)),
        ("clock_offsets.png", lambda f: _draw_clocks(f, run, axis, span, name)),
        ("load_latency.png", lambda f: _draw_load(f, run, topo, axis, span, name)),
        ("certificates_by_issuer.png", lambda f: _draw_issuers(f, run, topo, axis, span, name)),
    ]
    written = []
    for filename, draw in draws:
        fig = figure_cls(figsize=_SIZE, dpi=_DPI, layout="constrained")
        canvas_cls(fig)
        draw(fig)
        path = out / filename
        fig.savefig(path, format="png")
        written.append(path)
    return written


def _matplotlib() -> tuple[type[Figure], type[FigureCanvasAgg]]:
    """Import matplotlib's Figure and the Agg canvas, or explain how to get them."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ConfigError(
            "plots need matplotlib, which is not installed",
            fix="pip install 'matplotlib>=3.11,<4' (or reinstall evsim: pip install -e .), or skip the plots",
        ) from exc
    return Figure, FigureCanvasAgg


def _finish_time_axis(ax: Axes, axis: TimeAxis, span: float) -> None:
    ax.set_xlim(0, span / axis.seconds)
    ax.set_xlabel(axis.label)
    ax.grid(True, alpha=0.3)


def _integer_y(ax: Axes) -> None:
    """Counts: ticks on whole numbers only."""
    from matplotlib.ticker import MaxNLocator  # after _matplotlib() found matplotlib

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def _legend(ax: Axes, title: str | None = None) -> None:
    """A legend to the right of the axes, where it never hides data."""
    ax.legend(
        loc="upper left", bbox_to_anchor=(1.01, 1.0), title=title, fontsize="small", title_fontsize="small"
    )


def _no_data(ax: Axes, what: str) -> None:
    ax.text(
        0.5, 0.5, f"no {what} in this run", transform=ax.transAxes, ha="center", va="center", color="#666"
    )


def _draw_connected(
    fig: Figure, run: RunData, topo: Topology, axis: TimeAxis, span: float, fleet: int | None, name: str
) -> None:
    ax = fig.add_subplot()
    ts, ns = connected_series(run.events, run.samples, topo)
    if ts and ts[-1] < span:
        ts, ns = [*ts, span], [*ns, ns[-1]]
    xs = axis.scale(ts)
    source = "samples" if run.samples else "events"
    ax.step(xs, ns, where="post", color=_COLORS["line"], label=f"connected ({source})")
    ax.fill_between(xs, ns, step="post", color=_COLORS["line"], alpha=0.15)
    top = max(ns, default=0)
    if fleet:
        ax.axhline(fleet, color=_COLORS["fleet"], linestyle="--", linewidth=1, label=f"fleet size ({fleet})")
        top = max(top, fleet)
    ax.set_ylim(0, max(1, top) * 1.08)
    ax.set_ylabel("stations connected and booted")
    _integer_y(ax)
    ax.set_title(f"{name}: connected stations")
    _legend(ax)
    _mark_timeline(ax, axis, run.events, span)
    _zoom_recovery(ax, axis, run, topo, span)
    _finish_time_axis(ax, axis, span)


def _zoom_recovery(ax: Axes, axis: TimeAxis, run: RunData, topo: Topology, span: float) -> None:
    """An inset magnifying the first recovery that is too short to see at the run's scale, drawn from the
    events (the periodic samples are too coarse for it)."""
    from evsim.metrics.failover import recoveries

    outages = [(r.t, r.time_until(1.0)) for r in recoveries(run.events, node_roles(run.events, topo))]
    windows = zoom_windows(outages, span)
    ts, ns = connected_series(run.events, [], topo)
    if not windows or len(ts) < 2:
        return
    t0, t1 = windows[0]
    xs = axis.scale([*ts, span])
    ns = [*ns, ns[-1]]
    x0, x1 = axis.scale([t0, t1])
    inset = ax.inset_axes((0.62, 0.12, 0.35, 0.42))
    inset.step(xs, ns, where="post", color=_COLORS["line"])
    inset.fill_between(xs, ns, step="post", color=_COLORS["line"], alpha=0.15)
    inset.set_xlim(x0, x1)
    inset.set_ylim(ax.get_ylim())
    inset.set_title(f"zoom: {human_duration(t0)} to {human_duration(t1)} (from events)", fontsize=7)
    inset.tick_params(labelsize=6)
    ax.indicate_inset_zoom(inset, edgecolor="#555555")


#: Font size of the timeline labels, points; a row of labels is this times 1.4 high.
_LABEL_POINTS = 7.0


def _mark_timeline(ax: Axes, axis: TimeAxis, events: Sequence[Mapping[str, Any]], span: float) -> None:
    """A dotted line at every timeline instant and its label, in rows that never overlap
    (:func:`~evsim.metrics.plot_marks.place_labels`, with the label widths measured against the axes as laid
    out); the y axis grows to make room for the rows. Call it after the legend is placed."""
    marks = timeline_marks(events)
    if not marks:
        return
    fig = ax.get_figure(root=True)
    assert fig is not None
    fig.draw_without_rendering()  # lay the figure out, so the axes have their final size
    box = ax.get_window_extent()
    points = fig.dpi / 72.0
    char = CHAR_EM * _LABEL_POINTS * points / max(box.width, 1.0)
    row_height = 1.4 * _LABEL_POINTS * points / max(box.height, 1.0)
    hi = span / axis.seconds  # the x range _finish_time_axis sets
    xs = [axis.scale([m.t])[0] for m in marks]
    fractions = [x / hi if hi > 0 else 0.0 for x in xs]
    widths = [len(m.label) * char for m in marks]
    # a label that would run past the right edge sits to the left of its line
    lefts = [f if f + w <= 1.0 else max(0.0, f - w) for f, w in zip(fractions, widths, strict=True)]
    rows = place_labels(lefts, widths)
    y0, y1 = ax.get_ylim()
    free = 1.0 - row_height * (max(rows) + 1) - 0.02  # the share of the axes left to the data
    ax.set_ylim(y0, y0 + (y1 - y0) / max(free, 0.3))
    for x, left, mark, row in zip(xs, lefts, marks, rows, strict=True):
        ax.axvline(x, color="#999999", linestyle=":", linewidth=1)
        text = ax.annotate(
            mark.label,
            (left, 1.0 - row_height * (row + 0.5)),
            xycoords="axes fraction",
            va="center",
            ha="left",
            fontsize=_LABEL_POINTS,
            family="monospace",
            color="#444444",
        )
        text.set_in_layout(False)


def _stacked_bars(ax: Axes, axis: TimeAxis, buckets: Buckets, colors: Sequence[str]) -> bool:
    xs = axis.scale(buckets.starts)
    w = buckets.width / axis.seconds
    bottom = [0] * len(xs)
    drawn = False
    for (label, counts), color in zip(buckets.series.items(), colors, strict=False):
        if not any(counts):
            continue
        ax.bar(xs, counts, width=w, bottom=bottom, align="edge", color=color, label=label, linewidth=0)
        bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
        drawn = True
    return drawn


def _draw_handshakes(
    fig: Figure, run: RunData, topo: Topology, axis: TimeAxis, span: float, width: float, name: str
) -> None:
    ok, failed = handshake_buckets(run.events, span, width, topo)
    refused = server_refusal_buckets(run.events, span, width, topo)
    top, bottom, server = fig.subplots(3, 1, sharex=True)
    per = format_width(width)
    fig.suptitle(
        f"{name}: TLS handshakes, failures seen by the stations, refusals and lost hops at the servers (per {per})"
    )
    if _stacked_bars(top, axis, ok, (_COLORS["ok"], _COLORS["resumed"])):
        _legend(top, title="handshake")
    else:
        _no_data(top, "TLS handshakes")
    top.set_ylabel(f"handshakes / {per}")
    _integer_y(top)
    top.grid(True, alpha=0.3)
    if _stacked_bars(bottom, axis, failed, _FAILURE_COLORS):
        _legend(bottom, title="failure reason\n(station side)")
    else:
        _no_data(bottom, "connection failures")
    bottom.set_ylabel(f"failures / {per}")
    _integer_y(bottom)
    if _stacked_bars(server, axis, refused, _FAILURE_COLORS):
        _legend(server, title="refused or lost\n(CSMS / controller side)")
    else:
        _no_data(server, "refusals by the CSMSs and controllers")
    server.set_ylabel(f"server side / {per}")
    _integer_y(server)
    _finish_time_axis(server, axis, span)
    _mark_timeline(top, axis, run.events, span)


def _draw_rates(
    fig: Figure, run: RunData, topo: Topology, axis: TimeAxis, span: float, width: float, name: str
) -> None:
    ax = fig.add_subplot()
    buckets = connection_rates(run.events, span, width, topo)
    xs = axis.scale([*buckets.starts, buckets.starts[-1] + buckets.width])
    styles = {"TLS handshakes": "-", "refused at TCP": ":", "sessions accepted by CSMS": "--"}
    drawn = False
    for label, counts in buckets.series.items():
        if not any(counts):
            continue
        rates = [c / buckets.width for c in counts]
        ax.stairs(rates, xs, label=label, linestyle=styles.get(label, "-"), linewidth=1.6)
        drawn = True
    if drawn:
        _legend(ax)
    else:
        _no_data(ax, "connection attempts")
    ax.set_ylabel(f"connections / s (mean over {format_width(width)})")
    ax.set_ylim(bottom=0)
    ax.set_title(f"{name}: connection attempts per second")
    _finish_time_axis(ax, axis, span)
    _mark_timeline(ax, axis, run.events, span)


def _draw_transactions(
    fig: Figure, run: RunData, topo: Topology, axis: TimeAxis, span: float, name: str
) -> None:
    ax = fig.add_subplot()
    # the stations' curve is dotted and on top, so it shows where it runs ahead of the CSMS's
    styles = {
        "started at stations": ("#555555", ":", 3),
        "started at CSMS": ("#2a7ab0", "-", 2),
        "ended at CSMS": ("#2ca02c", "-", 2),
    }
    drawn = False
    endpoint_colors: dict[str, str] = {}  # per-endpoint curves: one colour per endpoint, dashed when ended
    for label, (ts, ns) in transaction_curves(run.events, topo).items():
        if not ts:
            continue
        if label not in styles:
            endpoint = label.split(" at ", 1)[1]
            color = endpoint_colors.setdefault(
                endpoint, _FAILURE_COLORS[(1 + len(endpoint_colors)) % len(_FAILURE_COLORS)]
            )
            styles[label] = (color, "--" if label.startswith("ended") else "-.", 1)
        color, style, z = styles[label]
        xs = axis.scale([0.0, *ts, max(span, ts[-1])])
        ax.step(
            xs,
            [0, *ns, ns[-1]],
            where="post",
            color=color,
            linestyle=style,
            linewidth=1.6,
            label=label,
            zorder=z,
        )
        drawn = True
    if drawn:
        _legend(ax)
    else:
        _no_data(ax, "transactions")
    ax.set_ylim(bottom=0)
    ax.set_ylabel("transactions (cumulative)")
    _integer_y(ax)
    _mark_timeline(ax, axis, run.events, span)
    ax.set_title(f"{name}: transactions")
    _finish_time_axis(ax, axis, span)


STORM_BUCKETS = 600
"""Buckets across the run in the reconnect-storm plot: fine enough that a storm of a few seconds shows its
shape (1 s buckets up to a 10-minute run)."""


def _draw_storm(fig: Figure, run: RunData, topo: Topology, axis: TimeAxis, span: float, name: str) -> None:
    from evsim.metrics.failover import storm_series

    ax = fig.add_subplot()
    width = bucket_width(span, target=STORM_BUCKETS)
    series = storm_series(run.events, node_roles(run.events, topo), span, width)
    n = max((len(v) for v in series.values()), default=1)
    xs = axis.scale([i * width for i in range(n + 1)])
    styles = (
        "-",
        "--",
        "-.",
        ":",
    )  # endpoints often storm at the same moments: keep overlapping lines visible
    for i, (endpoint, counts) in enumerate(series.items()):
        rates = [c / width for c in counts]
        ax.stairs(rates, xs, label=endpoint, linewidth=2.2 - 0.4 * (i % 3), linestyle=styles[i % len(styles)])
    if series:
        _legend(ax, "endpoint")
    else:
        _no_data(ax, "sessions accepted")
    ax.set_ylabel(f"sessions accepted / s (mean over {format_width(width)})")
    ax.set_ylim(bottom=0)
    ax.set_title(f"{name}: reconnect storm (sessions accepted per endpoint)")
    _mark_timeline(ax, axis, run.events, span)
    _finish_time_axis(ax, axis, span)


CLOCK_POINTS = 200
"""Instants the clock-offset plot replays the clocks at (one per 0.5 % of the run)."""


def _draw_clocks(fig: Figure, run: RunData, axis: TimeAxis, span: float, name: str) -> None:
    from evsim.metrics.clocks import offset_percentiles, sample_times

    ax = fig.add_subplot()
    rows = offset_percentiles(run.events, sample_times(span, CLOCK_POINTS))
    if not rows:
        _no_data(ax, "station clocks other than perfect ones")
    else:
        xs = axis.scale([r[0] for r in rows])
        for column, label in ((2, "p50"), (3, "p90"), (4, "p99"), (5, "max")):
            ax.step(xs, [max(r[column], 1e-6) for r in rows], where="post", label=label)
        ax.set_yscale("log")
        _legend(ax, "|offset|")
    ax.set_ylabel("station clock offset (s, log)")
    ax.set_title(f"{name}: station clock offsets")
    _finish_time_axis(ax, axis, span)


def _draw_load(fig: Figure, run: RunData, topo: Topology, axis: TimeAxis, span: float, name: str) -> None:
    from evsim.metrics.load import over_time_width, round_trip_series, round_trip_windows, station_latencies

    connect_ax, boot_ax, rtt_ax, rate_ax = fig.subplots(4, 1, sharex=True)
    fig.set_size_inches(_SIZE[0], _SIZE[1] * 2)
    fig.suptitle(f"{name}: load (latency and throughput)")
    connects, boots = station_latencies(run.events, node_roles(run.events, topo), topo)
    for ax, items, scale, unit, what in (
        (connect_ax, connects, 1000.0, "ms", "connect latency"),
        (boot_ax, boots, 1.0, "s", "boot latency"),
    ):
        links = sorted({i.link for i in items})
        for link in links:
            own = [i for i in items if i.link == link]
            ax.scatter(
                axis.scale(i.t for i in own), [i.seconds * scale for i in own], s=6, alpha=0.6, label=link
            )
        if links:
            _legend(ax)
        else:
            _no_data(ax, what)
        ax.set_ylabel(f"{what} ({unit})")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    width = over_time_width(span, rows=100)
    series = round_trip_series(round_trip_windows(run.events, topo), width)
    for i, (endpoint, s) in enumerate(series.items()):
        color = _FAILURE_COLORS[i % len(_FAILURE_COLORS)]
        xs = axis.scale(s.starts)
        rtt_ax.step(xs, [v * 1000 for v in s.p95], where="post", color=color, label=f"{endpoint} p95")
        rtt_ax.step(
            xs, [v * 1000 for v in s.p50], where="post", color=color, linestyle=":", label=f"{endpoint} p50"
        )
        rate_ax.step(xs, s.rate, where="post", color=color, label=endpoint)
    for ax, what in ((rtt_ax, "round trips"), (rate_ax, "calls answered")):
        if series:
            _legend(ax)
        else:
            _no_data(ax, what)
        ax.set_ylim(bottom=0)
    rtt_ax.set_ylabel(f"OCPP round trip (ms, per {format_width(width)})")
    rtt_ax.grid(True, alpha=0.3)
    rate_ax.set_ylabel("calls answered / s")
    _finish_time_axis(rate_ax, axis, span)


def _draw_issuers(fig: Figure, run: RunData, topo: Topology, axis: TimeAxis, span: float, name: str) -> None:
    from evsim.metrics.issuers import CLIENT, issuer_uses

    client_ax, server_ax = fig.subplots(2, 1, sharex=True)
    fig.suptitle(f"{name}: certificates in use by issuer (connections, station side)")
    uses = issuer_uses(run.events, node_roles(run.events, topo))
    for ax, kind, title in (
        (client_ax, CLIENT, "station client certificates"),
        (server_ax, "server", "CSMS server certificates"),
    ):
        own = [u for u in uses if u.label.startswith(f"{kind}: ")]
        for u in own:
            xs = axis.scale([*u.times, max(span, u.times[-1])])
            ax.step(
                xs, [*u.counts, u.counts[-1]], where="post", linewidth=1.6, label=u.label.split(": ", 1)[1]
            )
        if own:
            _legend(ax, "issuer")
        else:
            _no_data(ax, title)
        ax.set_ylabel(f"{title}\nin use")
        ax.set_ylim(bottom=0)
        _integer_y(ax)
        ax.grid(True, alpha=0.3)
    _finish_time_axis(server_ax, axis, span)
