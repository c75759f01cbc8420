"""Live progress of a run: a rich display on a terminal, plain lines anywhere else.

The runner feeds :class:`LiveProgress` the same :class:`~evsim.metrics.rundir.Sample` objects it writes to
``metrics.csv``. On a terminal, a :class:`rich.live.Live` redraws a two-line panel (progress bar over the
simulated duration, connected stations, messages per simulated second, failures, transactions, queue) at most
4 times a second from a background thread; :meth:`LiveProgress.update` only stores the sample, so updating
after every simulated second costs nothing. When the console is not a terminal (a pipe, CI, a file), nothing
rich is drawn: one plain line is written every ``plain_every_s`` simulated seconds, and the last state on exit,
so logs never contain escape codes.
"""

from __future__ import annotations

import collections
import math
from types import TracebackType

from rich.columns import Columns
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from evsim.metrics.rundir import Sample

#: Most redraws per second on a terminal.
MAX_REFRESH_PER_SECOND = 4.0


def format_sim_time(seconds: float) -> str:
    """A simulated duration in compact units: ``42.5s``, ``12m30s``, ``2h03m05s``, ``3d04h10m``.

    Args:
        seconds: non-negative seconds.

    Returns:
        The text.
    """
    if seconds < 60:
        return f"{seconds:.1f}s"
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if d:
        return f"{d}d{h:02d}h{m:02d}m"
    if h:
        return f"{h}h{m:02d}m{s:02d}s"
    return f"{m}m{s:02d}s"


class LiveProgress:
    """Progress of a running simulation.

    Args:
        total_stations: stations in the scenario (the "of N" of connected stations).
        duration_s: the simulated duration (the progress bar's end).
        console: where to draw; default a new :class:`rich.console.Console` on stdout (on stderr with
            ``to_stderr``, e.g. when stdout carries JSON). Its
            ``is_interactive`` (a terminal, not ``TERM=dumb``; ``TTY_INTERACTIVE=0`` turns it off) decides
            between the live display and plain lines.
        title: shown first (e.g. the scenario name).
        plain_every_s: simulated seconds between plain lines; default about a twentieth of the duration,
            rounded to a whole minute or second.
        rate_window_s: simulated seconds over which messages/s is averaged.
        refresh_per_second: redraws per second on a terminal (capped at :data:`MAX_REFRESH_PER_SECOND`).
        to_stderr: draw on the standard error when no ``console`` is given.

    Raises:
        ValueError: a non-positive duration or interval.
    """

    def __init__(
        self,
        total_stations: int,
        duration_s: float,
        *,
        console: Console | None = None,
        title: str = "evsim",
        plain_every_s: float | None = None,
        rate_window_s: float = 60.0,
        refresh_per_second: float = MAX_REFRESH_PER_SECOND,
        to_stderr: bool = False,
    ) -> None:
        if duration_s <= 0:
            raise ValueError(f"duration_s must be positive, not {duration_s}")
        if plain_every_s is not None and plain_every_s <= 0:
            raise ValueError(f"plain_every_s must be positive, not {plain_every_s}")
        self.total_stations = total_stations
        self.duration_s = duration_s
        self.console = console if console is not None else Console(highlight=False, stderr=to_stderr)
        self.title = title
        self.plain_every_s = plain_every_s if plain_every_s is not None else _default_interval(duration_s)
        self.rate_window_s = rate_window_s
        # rich's own test: a terminal that is not "dumb", unless TTY_INTERACTIVE or the console says otherwise
        self.interactive = self.console.is_interactive
        self.sample: Sample | None = None
        self.rate = 0.0
        self._window: collections.deque[tuple[float, int]] = collections.deque()
        self._next_line_t = 0.0
        self._printed: Sample | None = None
        self._live: Live | None = None
        self._closed_pipe = False
        if self.interactive:
            self._live = Live(
                console=self.console,
                get_renderable=self.renderable,
                refresh_per_second=min(refresh_per_second, MAX_REFRESH_PER_SECOND),
                transient=False,
            )

    def __enter__(self) -> LiveProgress:
        if self._live is not None:
            self._live.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the live display (leaving its last state on screen), or write the last plain line."""
        if self._live is not None:
            self._live.stop()
            self._live = None
        elif self.sample is not None and self._printed is not self.sample:
            self._write_line(self.sample)

    def update(self, sample: Sample) -> None:
        """Show a new state of the run.

        Args:
            sample: counters at simulated time ``sample.t`` (times must not go backwards).
        """
        self._window.append((sample.t, sample.messages_total))
        while len(self._window) > 2 and self._window[1][0] <= sample.t - self.rate_window_s:
            self._window.popleft()
        t0, m0 = self._window[0]
        self.rate = (sample.messages_total - m0) / (sample.t - t0) if sample.t > t0 else 0.0
        self.sample = sample
        if not self.interactive and sample.t >= self._next_line_t:
            self._write_line(sample)
            self._next_line_t = (math.floor(sample.t / self.plain_every_s) + 1) * self.plain_every_s

    def line(self, sample: Sample) -> str:
        """The plain-text form of a state (what non-terminal output prints).

        Args:
            sample: the counters.

        Returns:
            One line without a newline.
        """
        pct = min(100.0, 100.0 * sample.t / self.duration_s)
        return (
            f"[{self.title}] t={format_sim_time(sample.t)} ({pct:.1f}%)"
            f"  connected {sample.connected_stations}/{self._total(sample)}"
            f"  done {sample.done_stations}"
            f"  msgs {sample.messages_total} ({self.rate:.1f}/s)"
            f"  handshakes {sample.handshakes_ok} ok {sample.handshakes_failed} failed"
            f"  failures {sample.connect_failures}"
            f"  tx {sample.tx_started} started {sample.tx_ended} ended"
            f"  queued {sample.queued_messages}"
        )

    def renderable(self) -> RenderableType:
        """The terminal panel for the current state (called by rich's refresh thread)."""
        s = self.sample or Sample(t=0.0)
        head = Table.grid(padding=(0, 1), expand=True)
        head.add_column(no_wrap=True)
        head.add_column(ratio=1)
        head.add_column(no_wrap=True, justify="right")
        pct = min(100.0, 100.0 * s.t / self.duration_s)
        head.add_row(
            Text(self.title, style="bold"),
            ProgressBar(total=self.duration_s, completed=min(s.t, self.duration_s)),
            f"{format_sim_time(s.t)} / {format_sim_time(self.duration_s)}  {pct:5.1f}%",
        )
        failures_style = "bold red" if s.connect_failures else ""
        stats = Columns(
            [
                Text.assemble(("connected ", "dim"), (f"{s.connected_stations}/{self._total(s)}", "bold")),
                Text.assemble(("done ", "dim"), f"{s.done_stations:,}"),
                Text.assemble(("msgs ", "dim"), f"{s.messages_total:,} ({self.rate:,.1f}/s)"),
                Text.assemble(("TLS ", "dim"), f"{s.handshakes_ok:,} ok / {s.handshakes_failed:,} failed"),
                Text.assemble(("failures ", "dim"), (f"{s.connect_failures:,}", failures_style)),
                Text.assemble(("tx ", "dim"), f"{s.tx_started:,} started / {s.tx_ended:,} ended"),
                Text.assemble(("queued ", "dim"), f"{s.queued_messages:,}"),
            ],
            padding=(0, 3),
        )
        return Group(head, stats)

    def _total(self, sample: Sample) -> int:
        return sample.stations or self.total_stations

    def _write_line(self, sample: Sample) -> None:
        self._printed = sample
        if self._closed_pipe:
            return
        try:
            # straight to the file: rich must not add styles, wrapping or control codes to a pipe
            self.console.file.write(self.line(sample) + "\n")
            self.console.file.flush()
        except BrokenPipeError:
            # the reader went away (``evsim run ... | head``): the run goes on, its progress is not shown
            self._closed_pipe = True


def _default_interval(duration_s: float) -> float:
    """About twenty lines per run, on a round number of seconds or minutes."""
    raw = duration_s / 20
    for step in (1, 5, 10, 30, 60, 300, 600, 1800, 3600, 7200, 21600, 43200, 86400):
        if raw <= step:
            return float(step)
    return 86400.0
