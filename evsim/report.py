"""Plain-text tables for terminal output (no colour, stable for golden files), and human-readable values.

A cell is rendered by its type: an ``int`` as is, a ``float`` with two decimals (none from 1000 up), a
:class:`Seconds` as a duration in the scenario syntax (``4d``, ``1h30m``, ``2m05s`` → ``2m5s``, ``1.5s``,
``250ms``: :func:`human_duration`), anything else with ``str``. Keeping durations as :class:`Seconds` (a
``float``) rather than pre-formatted text lets machine-readable output (``summary.json``) carry the number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


class Seconds(float):
    """A duration in seconds: a ``float`` that tables render with :func:`human_duration`."""

    __slots__ = ()


def human_duration(seconds: float) -> str:
    """A duration as a person reads it, in units :func:`evsim.scenario.units.parse_duration` reads back.

    Below a millisecond: microseconds (``183us``); below a second: milliseconds (``250ms``, ``1.5ms``); below a minute: seconds with up to three significant
    digits (``1.5s``, ``42.3s``); from a minute up: whole seconds split into days, hours, minutes and seconds,
    zero parts left out (``4d``, ``1h30m``, ``30m24s``).

    Args:
        seconds: the duration (negative values get a leading ``-``; NaN and infinities are shown as such).

    Returns:
        The text.
    """
    if not math.isfinite(seconds):
        return str(seconds)
    if seconds < 0:
        return "-" + human_duration(-seconds)
    if seconds == 0:
        return "0s"
    if seconds < 0.0009995:
        return f"{seconds * 1_000_000:.3g}us"
    if seconds < 0.9995:
        return f"{seconds * 1000:.3g}ms"
    if seconds < 59.95:
        return f"{seconds:.3g}s"
    rest = round(seconds)
    parts = []
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, title: str = "") -> str:
    """Render a left-aligned text table; numbers are right-aligned."""
    cells = [[str(h) for h in headers]] + [[cell(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [all(_is_num(row[i]) for row in rows) and bool(rows) for i in range(len(headers))]

    def fmt(row: list[str]) -> str:
        parts = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(row, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    lines = []
    if title:
        lines.append(title)
    lines.append(fmt(cells[0]))
    lines.append("  ".join("-" * w for w in widths))
    lines.extend(fmt(r) for r in cells[1:])
    return "\n".join(lines)


def cell(value: object) -> str:
    """The text of one table cell (see the module doc)."""
    if isinstance(value, Seconds):
        return human_duration(value)
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def _is_num(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
