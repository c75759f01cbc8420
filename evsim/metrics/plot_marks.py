"""What the plots mark on their time axis and where the labels go, as pure functions (no matplotlib).

* :func:`timeline_marks`: every timeline event of a run (outages, attacks, rotations, renewals...), the
  events of one instant merged into one label;
* :func:`place_labels`: a row for each label so that no two labels in a row overlap (greedy interval
  packing over their estimated widths), checked by :func:`overlapping`;
* :func:`zoom_windows`: the stretches worth a zoomed panel: recoveries that are short next to the run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from evsim.metrics.canonical import ENVELOPE

#: Width of one character of a monospace label, in em (DejaVu Sans Mono: 0.602).
CHAR_EM = 0.61

#: Width of one character of a label, as a fraction of the axes width, when nothing better is known
#: (7-point monospace on axes about 600 points wide).
CHAR_WIDTH = 0.0072

#: Horizontal gap kept between two labels of a row, as a fraction of the axes width.
LABEL_GAP = 0.006

#: A recovery is zoomed when it took less than this share of the run.
ZOOM_SHARE = 0.05

#: Parameters of a timeline event shown in its label (the others are in the Timeline table).
_LABEL_PARAMS = ("target", "attacker", "between")


@attrs.frozen
class Mark:
    """A timeline instant on a plot.

    Attributes:
        t: simulated seconds.
        label: the actions at ``t`` and what they hit (``partition fleet, rotate_certificate main``).
    """

    t: float
    label: str


def timeline_marks(events: Iterable[Mapping[str, Any]]) -> list[Mark]:
    """Every timeline event of a run (and the runner's scheduled link resets), one :class:`Mark` per
    instant, in time order.

    Args:
        events: the run's JSON event objects.
    """
    at: dict[float, list[str]] = {}
    for e in events:
        if e["node"] != "timeline" and not (e["node"] == "runner" and e["kind"] == "link_reset"):
            continue
        data = {k: v for k, v in e.items() if k not in ENVELOPE}
        target = " ".join(_text(data[k]) for k in _LABEL_PARAMS if k in data)
        label = f"{e['kind']} {target}".strip()
        labels = at.setdefault(round(float(e["t"]), 6), [])
        if label not in labels:
            labels.append(label)
    return [Mark(t, ", ".join(labels)) for t, labels in sorted(at.items())]


def _text(value: object) -> str:
    if isinstance(value, list | tuple):
        return "<->".join(str(v) for v in value)
    return str(value)


def label_width(text: str) -> float:
    """Estimated width of a label as a fraction of the axes width (:data:`CHAR_WIDTH` per character)."""
    return len(text) * CHAR_WIDTH


def place_labels(xs: Sequence[float], widths: Sequence[float], *, gap: float = LABEL_GAP) -> list[int]:
    """A row for each label, the lowest free one: labels sit to the right of their x, and two labels share a
    row only when the first ends (plus ``gap``) before the second starts.

    Args:
        xs: each label's left edge, as a fraction of the axes width.
        widths: each label's width, same unit.
        gap: space kept between neighbours.

    Returns:
        The row of each label (0 = top row), in the order given.
    """
    if len(xs) != len(widths):
        raise ValueError("one width per label")
    rows_end: list[float] = []  # right edge of the last label placed in each row
    rows = [0] * len(xs)
    for i in sorted(range(len(xs)), key=lambda i: (xs[i], i)):
        row = next((r for r, end in enumerate(rows_end) if end + gap <= xs[i]), len(rows_end))
        if row == len(rows_end):
            rows_end.append(0.0)
        rows_end[row] = xs[i] + widths[i]
        rows[i] = row
    return rows


def overlapping(xs: Sequence[float], widths: Sequence[float], rows: Sequence[int]) -> list[tuple[int, int]]:
    """The pairs of labels that overlap in the same row (empty for a placement by :func:`place_labels`)."""
    out = []
    for i in range(len(xs)):
        for j in range(i + 1, len(xs)):
            if rows[i] == rows[j] and xs[i] < xs[j] + widths[j] and xs[j] < xs[i] + widths[i]:
                out.append((i, j))
    return out


def zoom_windows(
    outages: Iterable[tuple[float, float | None]], span: float, *, share: float = ZOOM_SHARE
) -> list[tuple[float, float]]:
    """The stretches of a run worth a zoomed panel: an outage whose stations were all back in less than
    ``share`` of the run, from a little before it to a little after the last came back.

    Args:
        outages: (when the outage started, seconds until every affected station was back or None).
        span: the run's length, seconds.
        share: the largest recovery, as a share of ``span``, that is zoomed.

    Returns:
        (start, end) windows in simulated seconds, in time order, within [0, span].
    """
    out = []
    for t, took in sorted(outages, key=lambda o: o[0]):
        if took is None or span <= 0 or took > share * span:
            continue
        pad = max(took * 0.5, span * 0.002, 1.0)
        out.append((max(0.0, t - pad), min(span, t + took + pad)))
    return out
