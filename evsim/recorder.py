"""The event recorder: one vocabulary for logs, metrics and the canonical event log.

Every node reports what happens (``handshake_ok``, ``handshake_failed``, ``booted``, ``tx_event`` ...) through
:meth:`Recorder.emit`. Each event carries the simulation time (seconds since the run started), the node name, a
per-recorder sequence number and a small dict of fields. The recorder keeps a bounded window of events (the
last :data:`DEFAULT_KEEP` unless told otherwise; :attr:`Recorder.dropped` counts the older ones it forgot), counts
every kind, and forwards each event to an optional sink (a JSONL writer, a live display). Trio's scheduler
order is random, so a canonical log is the events sorted by (time, node, node-local sequence), and it needs
*every* event: a window drops the oldest events in the order trio happened to run their tasks, so which events
of a storm at one instant are left depends on the scheduler, not the seed.

A log line (:func:`format_event`) shows an event with its times, its level (:data:`EVENT_LEVELS`), node, kind
and fields, every value escaped with :func:`evsim.text.escape`: what a peer sent never reaches a terminal or a
log file raw. Events recorded while serving an accepted connection carry its ``peer`` address
(:func:`bind_peer`).

The recorder is a base-layer module: nodes, links and scenarios write to it without importing the reports,
and :mod:`evsim.metrics` reads what it recorded (metrics consume events and import no node or scenario code).
"""

from __future__ import annotations

import collections
import contextvars
import datetime as _dt
import decimal
import logging
import math
import sys
from collections.abc import Callable
from typing import Any

import attrs

from evsim.clock import SimClock
from evsim.text import escape

log = logging.getLogger("evsim")
events_log = logging.getLogger("evsim.events")
"""Where echoed event lines go; each line carries its own time and level (:func:`format_event`)."""

#: The level of each event kind in a log: WARNING for refusals and losses (``-q`` shows only these), INFO for
#: the life of a connection, DEBUG for per-message detail. Kinds not listed get :func:`event_level`'s default.
EVENT_LEVELS: dict[str, int] = {
    # refused or lost
    "handshake_failed": logging.WARNING,
    "upgrade_rejected": logging.WARNING,
    "connection_lost": logging.WARNING,
    "bad_input": logging.WARNING,
    "security_event": logging.WARNING,
    "boot_rejected": logging.WARNING,
    "accept_failed": logging.WARNING,
    "accept_paused": logging.WARNING,
    "connection_refused": logging.WARNING,
    "boot_timeout": logging.WARNING,
    "replaced_connection": logging.WARNING,
    "message_discarded": logging.WARNING,
    "station_link_lost": logging.WARNING,
    "upstream_failed": logging.WARNING,
    "upstream_lost": logging.WARNING,
    "network_profile_rejected": logging.WARNING,
    "trust_store_empty": logging.WARNING,
    # the life of a connection, and what a run does
    "listening": logging.INFO,
    "connection_opened": logging.INFO,
    "tls_accepted": logging.INFO,
    "station_connected": logging.INFO,
    "booted": logging.INFO,
    "station_disconnected": logging.INFO,
    "security_event_received": logging.INFO,
    "handshake_ok": logging.INFO,
    "upstream_connected": logging.INFO,
    "reconnect_wait": logging.INFO,
    "boot_pending": logging.INFO,
    "tx_started": logging.INFO,
    "tx_ended": logging.INFO,
    # per message
    "tx_event": logging.DEBUG,
    "tx_duplicate": logging.DEBUG,
    "authorized": logging.DEBUG,
    "authorize_offline": logging.DEBUG,
    "message": logging.DEBUG,
    "timeline": logging.DEBUG,
    "service_attempt": logging.DEBUG,
    "nts_sample": logging.DEBUG,
    "round_trips": logging.DEBUG,  # the recorder's own sums (Recorder.round_trip)
}

#: Words that make an unlisted kind a refusal or loss (WARNING); other unlisted kinds are INFO.
_WARNING_WORDS = (
    "fail",
    "reject",
    "refus",
    "lost",
    "limit",
    "bad",
    "error",
    "invalid",
    "timeout",
    "timed_out",
    "denied",
    "exceed",
    "drop",
    "discard",
    "replaced",
)

#: Kinds logged at WARNING (something was refused or lost); everything else is INFO/DEBUG.
WARNING_KINDS = frozenset(k for k, level in EVENT_LEVELS.items() if level >= logging.WARNING)


def event_level(kind: str) -> int:
    """The log level of an event kind: :data:`EVENT_LEVELS`, else WARNING when its name says it was refused,
    failed or lost, else INFO."""
    level = EVENT_LEVELS.get(kind)
    if level is None:
        level = _guessed.get(kind)
        if level is None:
            level = _guessed[kind] = (
                logging.WARNING if any(w in kind for w in _WARNING_WORDS) else logging.INFO
            )
    return level


_guessed: dict[str, int] = {}  # event_level's answers for kinds EVENT_LEVELS does not list


_PEER: contextvars.ContextVar[str] = contextvars.ContextVar("evsim_peer", default="")


def bind_peer(peer: str) -> None:
    """Make ``peer`` (``host:port`` of an accepted connection) the ``peer`` field of every event the current
    task and the tasks it starts from now on record (unless they pass their own).

    A listener calls it once in the task that serves one accepted connection, so its refusals, its station's
    events and (behind a Local Controller) the relay's upstream events name the address they concern.
    """
    _PEER.set(peer)


@attrs.frozen
class Event:
    """One thing that happened."""

    t: float
    node: str
    seq: int
    kind: str
    data: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {"t": round(self.t, 6), "node": self.node, "seq": self.seq, "kind": self.kind, **self.data}


#: Node name of the events the recorder itself emits: the OCPP round trips it aggregated (a control node of
#: the run, like ``runner`` and ``timeline``).
MEASUREMENT_NODE = "metrics"
#: Kind of the aggregated round-trip events.
ROUND_TRIPS = "round_trips"
#: Width (s) of one round-trip window: fine enough to show a reconnect storm's shape, coarse enough that a day
#: with 10,000 stations adds at most 8,640 events per (caller, endpoint) pair to the log.
ROUND_TRIP_WINDOW = 10.0
#: Significant digits a round trip keeps in its window's histogram (:func:`quantize`).
ROUND_TRIP_DIGITS = 3

_FLOOR = decimal.Context(rounding=decimal.ROUND_FLOOR)


_CUTS: dict[str, tuple[float, float]] = {}
"""Per ``"%.2e"`` text of :func:`quantize` (3 digits): that decimal's float and the float a unit below it. At most
900 texts per decade of durations; cleared past :data:`_CUTS_MAX`."""
_CUTS_MAX = 65536


def quantize(seconds: float, digits: int = ROUND_TRIP_DIGITS) -> float:
    """A duration cut (never rounded up) to ``digits`` significant digits: 0.0012345 -> 0.00123.

    The cut is done on the value's shortest decimal form, so the result is never above ``seconds`` and at most
    one unit of its last kept digit below (under 1 % for 3 digits). Zero and negative values (a clock that did
    not move) give 0.0.

    Every real-time round trip is a new value, so this runs once per CALL: it works on the float formatting of
    ``seconds`` instead of :mod:`decimal` (≈1 µs against ≈10 µs). The nearest ``digits``-digit decimal ``D``
    (``"%.2e"``) is the answer when ``float(D) <= seconds``, else the one a unit below it is. That equals the
    cut of the shortest form: a ``digits``-digit decimal is at most the shortest form exactly when its float is
    at most ``seconds`` (rounding to the nearest float is monotonic, and no two such decimals of fewer than 16
    digits share a float). :func:`_quantize_decimal` is the definition, kept for the tests. Both candidates
    depend on ``D``'s text only, so for 3 digits they are remembered per text (:data:`_CUTS`): a new duration
    then costs one formatting and one lookup (≈0.6 µs against 1.4-2.9 µs).
    """
    if not seconds > 0 or not math.isfinite(seconds):
        return 0.0
    if digits == ROUND_TRIP_DIGITS:
        text = f"{seconds:.2e}"
        cut = _CUTS.get(text)
        if cut is None:
            if len(_CUTS) >= _CUTS_MAX:
                _CUTS.clear()
            near = float(text)
            cut = _CUTS[text] = (near, _below(text, digits))
        return cut[0] if cut[0] <= seconds else cut[1]
    if not 0 < digits < 16:
        return _quantize_decimal(seconds, digits)
    text = f"{seconds:.{digits - 1}e}"  # "1.23e-03": digits significant digits, rounded to nearest
    near = float(text)
    if near <= seconds:
        return near
    return _below(text, digits)


def _below(text: str, digits: int) -> float:
    """The ``digits``-digit decimal one unit below the one written ``text`` (``"%.{digits-1}e"``), as a float."""
    mantissa, _, exponent = text.partition("e")
    units = int(mantissa.replace(".", "")) - 1  # the digits as an integer, one unit lower
    scale = int(exponent) - digits + 1
    if units < 10 ** (digits - 1):  # 1.00e-02 - 1 unit = 9.99e-03: one decade down
        units = 10**digits - 1
        scale -= 1
    return float(f"{units}e{scale}")


def _quantize_decimal(seconds: float, digits: int = ROUND_TRIP_DIGITS) -> float:
    """:func:`quantize` by its definition, in :mod:`decimal` (for ``digits`` beyond a float's, and the tests)."""
    if not seconds > 0 or not math.isfinite(seconds):
        return 0.0
    d = decimal.Decimal(repr(float(seconds)))
    step = decimal.Decimal(1).scaleb(d.adjusted() - digits + 1)
    return float(d.quantize(step, context=_FLOOR))


@attrs.define
class _Window:
    """The round trips of one (caller, endpoint) pair in one window."""

    start: float
    values: collections.Counter[float] = attrs.field(factory=collections.Counter)
    largest: float = 0.0
    timeouts: int = 0


@attrs.define
class RoundTrips:
    """OCPP round trips (CALL sent to CALLRESULT / CALLERROR received) summed per (caller, endpoint) and window.

    A per-message event would make a log as long as the run's message count; one event per pair and window of
    :data:`ROUND_TRIP_WINDOW` seconds keeps every figure of the report recomputable from the log at a bounded
    cost: each event holds the window's histogram of round trips cut to :data:`ROUND_TRIP_DIGITS` significant
    digits (:func:`quantize`; value -> count), the exact largest one, and the CALLs that timed out. Percentiles
    are then exact over the cut values, and the maximum is exact.

    A window is closed (returned by :meth:`add`) when the pair's first sample of a later window arrives, and by
    :meth:`flush` at the end of a run. Samples arrive in time order, so what a window holds does not depend on
    the order trio ran the callers that finished at one instant. Sans-IO: times are passed in.
    """

    width: float = ROUND_TRIP_WINDOW
    _open: dict[tuple[str, str], _Window] = attrs.field(init=False, factory=dict)

    def add(self, caller: str, endpoint: str, now: float, seconds: float | None) -> dict[str, Any] | None:
        """Count one round trip (``seconds``), or one CALL that timed out (None).

        Returns:
            The fields of the event of the pair's window this sample closed, or None.
        """
        key = (caller, endpoint)
        start = math.floor(now / self.width) * self.width
        window = self._open.get(key)
        closed = None
        if window is None or window.start != start:
            if window is not None:
                closed = self._fields(key, window)
            window = self._open[key] = _Window(start)
        if seconds is None:
            window.timeouts += 1
        elif seconds > 0.0:
            window.values[quantize(round(seconds, 9))] += 1  # rounded first: 0.03 measured as 0.0299999...
            if seconds > window.largest:
                window.largest = seconds
        else:  # what quantize gives a zero, negative or NaN duration (virtual time: round trips take no time)
            window.values[0.0] += 1
        return closed

    def flush(self) -> list[dict[str, Any]]:
        """The events of every open window (sorted by caller and endpoint), which are forgotten."""
        out = [self._fields(key, w) for key, w in sorted(self._open.items())]
        self._open.clear()
        return out

    def _fields(self, key: tuple[str, str], w: _Window) -> dict[str, Any]:
        return {
            "caller": key[0],
            "endpoint": key[1],
            "start": w.start,
            "width": self.width,
            "calls": sum(w.values.values()),
            "timeouts": w.timeouts,
            "max": round(w.largest, 6),
            "histogram": [[v, n] for v, n in sorted(w.values.items())],
        }


DEFAULT_KEEP = 200_000
"""Events a recorder keeps in memory by default: bounds a long-running node's memory (an event costs a few hundred
bytes). A 10,000-station scenario records more than that; what needs all of a run's events (a canonical or golden
log) asks for ``keep=None``."""


@attrs.define
class Recorder:
    """Collects events from all nodes of a run.

    Args:
        clock: the run's clock (event times are ``clock.elapsed()``).
        keep: how many recent events to keep in memory; None keeps every event (the run's length bounds them).
        sink: optional callable receiving every event as it happens.
        echo: log each event on the ``evsim`` logger at its :func:`event_level` (WARNING for refusals and
            losses). Off, events are not logged: a scenario run keeps them in its event log and summary, and
            interactive commands print them with an :class:`EventPrinter` sink instead.
        trace: optional callable receiving per-message detail (:meth:`trace`); such events are neither kept,
            counted nor given to ``sink``.
    """

    clock: SimClock
    keep: int | None = DEFAULT_KEEP
    sink: Callable[[Event], None] | None = None
    echo: bool = True
    trace_sink: Callable[[Event], None] | None = attrs.field(default=None, alias="trace")
    events: collections.deque[Event] = attrs.field(init=False)
    counts: collections.Counter[str] = attrs.field(init=False, factory=collections.Counter)
    _node_seq: collections.Counter[str] = attrs.field(init=False, factory=collections.Counter)
    _stopped_at: float | None = attrs.field(init=False, default=None)
    _round_trips: RoundTrips = attrs.field(init=False, factory=RoundTrips)
    dropped: int = attrs.field(init=False, default=0)
    """Events recorded but no longer in :attr:`events` (past ``keep``): 0 means :attr:`events` is complete."""

    def __attrs_post_init__(self) -> None:
        self.events = collections.deque(maxlen=self.keep)

    def emit(self, node: str, kind: str, **data: Any) -> Event:
        """Record an event and log it (see ``echo``).

        The event gets a ``peer`` field when the current task serves an accepted connection (:func:`bind_peer`)
        and none is given. After :meth:`stop` the event is neither kept, counted, logged nor given to ``sink``.
        """
        if self._stopped_at is not None:
            return Event(t=self._stopped_at, node=node, seq=-1, kind=kind, data=data)
        peer = _PEER.get()
        if peer and "peer" not in data and node != MEASUREMENT_NODE:  # a run-wide sum concerns no one peer
            data["peer"] = peer
        seq = self._node_seq[node]
        self._node_seq[node] = seq + 1
        ev = Event(t=self.clock.elapsed(), node=node, seq=seq, kind=kind, data=data)
        if len(self.events) == self.keep:
            self.dropped += 1  # the append below forgets the oldest event
        self.events.append(ev)
        self.counts[kind] += 1
        if self.echo:
            level = event_level(kind)
            if events_log.isEnabledFor(level):
                events_log.log(level, "%s", format_event(ev, self.clock.start_utc))
        if self.sink is not None:
            self.sink(ev)
        return ev

    def round_trip(self, caller: str, endpoint: str, seconds: float | None) -> None:
        """Count one OCPP round trip ``caller`` measured towards ``endpoint`` (None: the CALL timed out).

        No event per CALL: the round trips are summed per window (:class:`RoundTrips`), and a ``round_trips``
        event of node :data:`MEASUREMENT_NODE` is recorded when a window closes and by :meth:`flush`.
        """
        if self._stopped_at is not None:
            return
        closed = self._round_trips.add(caller, endpoint, self.clock.elapsed(), seconds)
        if closed is not None:
            self.emit(MEASUREMENT_NODE, ROUND_TRIPS, **closed)

    def flush(self) -> None:
        """Record the round-trip windows still open (the end of a run; :meth:`stop` does it too)."""
        if self._stopped_at is None:
            for fields in self._round_trips.flush():
                self.emit(MEASUREMENT_NODE, ROUND_TRIPS, **fields)

    def stop(self) -> None:
        """Record nothing more: what happens after this (a run being torn down) is not part of the run. The
        round-trip windows still open are recorded first (:meth:`flush`)."""
        self.flush()
        if self._stopped_at is None:
            self._stopped_at = self.clock.elapsed()

    @property
    def stopped(self) -> bool:
        """True after :meth:`stop`."""
        return self._stopped_at is not None

    @property
    def tracing(self) -> bool:
        """True when :meth:`trace` goes anywhere (callers skip building per-message detail otherwise)."""
        return self.trace_sink is not None

    def trace(self, node: str, kind: str, **data: Any) -> None:
        """Pass per-message detail to the ``trace`` callable (no sequence number; not kept or counted)."""
        if self.trace_sink is None or self._stopped_at is not None:
            return
        peer = _PEER.get()
        if peer and "peer" not in data:
            data["peer"] = peer
        self.trace_sink(Event(t=self.clock.elapsed(), node=node, seq=-1, kind=kind, data=data))

    def of_kind(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.kind == kind]

    def canonical(self) -> list[Event]:
        """Events sorted by (time, node, node sequence): identical across runs of the same seed."""
        return sorted(self.events, key=lambda e: (round(e.t, 6), e.node, e.seq))


#: Fields a log line shows first, in this order: where the connection came from and who it claims to be.
_FIRST_FIELDS = ("peer", "station")

_LEVEL_NAMES = {logging.DEBUG: "DEBUG", logging.INFO: "INFO", logging.WARNING: "WARN", logging.ERROR: "ERROR"}


def format_event(ev: Event, start_utc: _dt.datetime | None = None) -> str:
    """One log line for an event, every value escaped (:func:`evsim.text.escape`).

    ``2030-06-01T12:00:03.250Z [     3.250] WARN  csms upgrade_rejected peer=10.0.0.7:50312 station=ST-1
    status=401 reason="wrong password"``: the wall-clock time (UTC; the simulated one in virtual time), the
    seconds since the run started, the level, the node, the kind, then the fields: ``peer`` and ``station``
    first, empty ones left out. A value holding a space or a double quote is quoted, a backslash before each quote in it.

    Args:
        ev: the event.
        start_utc: the wall-clock time of the run's start (``SimClock.start_utc``); None leaves it out.
    """
    parts: list[str] = []
    if start_utc is not None:
        wall = start_utc + _dt.timedelta(seconds=ev.t)
        parts.append(wall.strftime("%Y-%m-%dT%H:%M:%S.") + f"{wall.microsecond // 1000:03d}Z")
    level = event_level(ev.kind)
    parts += [
        f"[{ev.t:10.3f}]",
        f"{_LEVEL_NAMES.get(level, str(level)):<5}",
        escape(ev.node),
        escape(ev.kind),
    ]
    fields = {k: v for k, v in ev.data.items() if v is not None and v != ""}
    for key in _FIRST_FIELDS:
        if key in fields:
            parts.append(_field(key, fields[key]))
    parts += [_field(k, v) for k, v in fields.items() if k not in _FIRST_FIELDS]
    return " ".join(parts)


def _field(key: str, value: object) -> str:
    text = escape(value)
    if not text or " " in text or '"' in text:
        text = '"' + text.replace('"', '\\"') + '"'
    return f"{escape(key)}={text}"


@attrs.define
class EventPrinter:
    """A recorder sink printing one :func:`format_event` line per event at or above ``level``.

    Args:
        level: ``logging.WARNING`` (refusals and losses only), ``logging.INFO`` (and the life of each
            connection) or ``logging.DEBUG`` (and per-message detail: pass the printer as the recorder's
            ``trace`` too).
        start_utc: the run's wall-clock start (``SimClock.start_utc``) for the lines' UTC time; None leaves it out.
        write: where a line goes (default: standard error, flushed).
    """

    level: int = logging.INFO
    start_utc: _dt.datetime | None = None
    write: Callable[[str], None] = attrs.field(factory=lambda: _write_stderr)

    def __call__(self, ev: Event) -> None:
        if event_level(ev.kind) >= self.level:
            self.write(format_event(ev, self.start_utc))


def _write_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def level_of_verbosity(verbose: int, quiet: int) -> int:
    """The :class:`EventPrinter` level for ``-v``/``-q`` counts: WARNING with ``-q``, INFO by default, DEBUG
    with ``-v``."""
    step = verbose - quiet
    return logging.WARNING if step < 0 else logging.INFO if step == 0 else logging.DEBUG
