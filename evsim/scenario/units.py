"""Human units in scenario files: durations (``"250ms"``, ``"1h30m"``), bandwidths (``"1Mbps"``), timestamps.

Every parser takes the raw TOML value (any type) and either returns a plain number or raises
:class:`~evsim.errors.ConfigError` with the message, the value and the fix, but without a field path: the
loader adds the path, file and line, because only it knows where the value came from.

Durations are ``<number><unit>`` components with units ``ms``, ``s``, ``m``, ``h``, ``d``, largest unit first,
each unit at most once (``"1d2h"``, ``"1h30m"``, ``"1.5s"``); a bare number (TOML integer or float, or a string
of digits) is seconds. A leading ``-`` is accepted only where the caller allows it (``not_before = "-1h"``).
"""

from __future__ import annotations

import datetime as _dt
import math
import re

from evsim.errors import ConfigError
from evsim.toml_table import shown, type_name

__all__ = [
    "BANDWIDTH_BPS",
    "MAX_BANDWIDTH_BPS",
    "MAX_DURATION_S",
    "UNIT_SECONDS",
    "format_duration",
    "parse_bandwidth",
    "parse_duration",
    "parse_utc_timestamp",
    "type_name",
]

UNIT_SECONDS: dict[str, float] = {
    "d": 86_400.0,
    "h": 3_600.0,
    "m": 60.0,
    "s": 1.0,
    "ms": 0.001,
    "us": 0.000_001,
}
"""Duration units, largest first (their order in a combination like ``"1h30m"``)."""

MAX_DURATION_S = 100 * 365 * 86_400.0
"""Longest duration accepted (100 years): simulation start plus this stays far inside ``datetime``'s range."""

BANDWIDTH_BPS: dict[str, float] = {
    **{
        f"{p}{u}": m
        for p, m in (("", 1.0), ("k", 1e3), ("m", 1e6), ("g", 1e9))
        for u in ("bps", "bit", "bit/s")
    }
}
"""Bandwidth units in bits (decimal, as in networking; matched case-insensitively): ``bps``, ``kbit``,
``Mbit/s``..."""

BANDWIDTH_BYTE_UNITS: dict[str, float] = {"B/s": 8.0, "kB/s": 8e3, "KB/s": 8e3, "MB/s": 8e6, "GB/s": 8e9}
"""Bandwidth units in bytes (decimal; a capital ``B`` is a byte, so these are matched as written)."""

MAX_BANDWIDTH_BPS = 1e12
"""Largest bandwidth accepted (1 Tbps): anything faster is "unlimited" for a simulated charging network."""

MIN_YEAR, MAX_YEAR = 1970, 9000
"""Simulation start years accepted: POSIX time onwards, and far enough from 9999 that start + 100 years of
durations stays inside ``datetime``'s range."""

_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_COMPONENT = re.compile(r"(\d+(?:\.\d+)?)([A-Za-z]*)")
_BANDWIDTH = re.compile(r"(\d+(?:\.\d+)?)\s*([A-Za-z/]*)")
_RFC3339 = re.compile(r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(\.\d{1,6})?(Z|z|[+-]\d{2}:\d{2})")
_DURATION_EXAMPLE = 'e.g. "250ms", "30s", "15m", "2h", "3d" or "1h30m"'


def parse_duration(value: object, *, allow_negative: bool = False) -> float:
    """Parse a duration into seconds.

    Args:
        value: the raw TOML value: a string such as ``"30s"``, ``"1h30m"``, ``"250ms"``, ``"-1h"`` (when
            allowed), a string of digits, or an integer / float number of seconds.
        allow_negative: accept a leading ``-`` (or a negative number).

    Returns:
        The duration in seconds (a finite float, at most :data:`MAX_DURATION_S` in magnitude).

    Raises:
        ConfigError: wrong type, unknown unit, a number without a unit inside a combination, units out of
            order or repeated, a negative value where none is allowed, or a value out of range.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(
            f"expected a duration, got {type_name(value)}",
            value=shown(value),
            fix=f"write a quoted duration, {_DURATION_EXAMPLE}, or a number of seconds",
        )
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(
                "a duration must be a finite number", value=shown(value), fix=f"use {_DURATION_EXAMPLE}"
            )
        seconds = float(value)
    else:
        seconds = _parse_duration_text(value)
    if seconds < 0 and not allow_negative:
        raise ConfigError(
            "a negative duration is not allowed here",
            value=shown(value),
            fix=f"use a duration >= 0, {_DURATION_EXAMPLE}",
        )
    if abs(seconds) > MAX_DURATION_S:
        raise ConfigError(
            "duration too long (the limit is 100 years)",
            value=shown(value),
            fix='use a shorter duration, e.g. "365d"',
        )
    return seconds


def _parse_duration_text(value: str) -> float:
    text = value.strip()
    sign = 1.0
    if text.startswith("-"):
        sign, text = -1.0, text[1:].lstrip()
    elif text.startswith("+"):
        text = text[1:].lstrip()
    if not text:
        raise ConfigError("empty duration", value=shown(value), fix=f"write a duration, {_DURATION_EXAMPLE}")
    if _NUMBER.fullmatch(text):
        return sign * float(text)
    total = 0.0
    pos = 0
    last_rank = -1
    seen: set[str] = set()
    units = list(UNIT_SECONDS)
    while pos < len(text):
        if text[pos].isspace():
            pos += 1
            continue
        m = _COMPONENT.match(text, pos)
        if m is None:
            raise ConfigError(
                f"not a duration: unexpected {text[pos]!r} at position {pos + 1}",
                value=shown(value),
                fix=f"write <number><unit> parts, {_DURATION_EXAMPLE}",
            )
        number, unit = m.group(1), m.group(2)
        if not unit:
            raise ConfigError(
                f"the number {number} has no unit",
                value=shown(value),
                fix=f"add a unit (ms, s, m, h or d), {_DURATION_EXAMPLE}; only a lone number means seconds",
            )
        if unit not in UNIT_SECONDS:
            raise ConfigError(
                f"unknown duration unit {unit!r}",
                value=shown(value),
                fix=f"use ms, s, m, h or d, {_DURATION_EXAMPLE}",
            )
        rank = units.index(unit)
        if unit in seen or rank < last_rank:
            raise ConfigError(
                "duration units must go from largest to smallest, each at most once",
                value=shown(value),
                fix='write e.g. "1h30m" (not "30m1h" or "1h1h")',
            )
        seen.add(unit)
        last_rank = rank
        total += float(number) * UNIT_SECONDS[unit]
        pos = m.end()
    return sign * total


def format_duration(seconds: float) -> str:
    """Render seconds in the scenario syntax (``5400`` → ``"1h30m"``, ``0.25`` → ``"250ms"``).

    Args:
        seconds: a finite number of seconds.

    Returns:
        The shortest combination of units that :func:`parse_duration` reads back to the same value (to the
        millisecond); ``"0s"`` for zero.
    """
    if not math.isfinite(seconds):
        return str(seconds)
    sign = "-" if seconds < 0 else ""
    ms = round(abs(seconds) * 1000)
    if ms == 0:
        return "0s"
    parts = []
    for unit in ("d", "h", "m", "s", "ms"):
        size = round(UNIT_SECONDS[unit] * 1000)
        count, ms = divmod(ms, size)
        if count:
            parts.append(f"{count}{unit}")
    return sign + "".join(parts)


def parse_bandwidth(value: object) -> float:
    """Parse a bandwidth into bits per second.

    Args:
        value: ``"9600bps"``, ``"500kbps"``, ``"10Mbit"``, ``"1.5 Gbit/s"`` (bit units case-insensitive),
            ``"1MB/s"``, ``"250kB/s"`` (byte units as written), or a positive number of bits per second.

    Returns:
        Bits per second, > 0 and at most :data:`MAX_BANDWIDTH_BPS`.

    Raises:
        ConfigError: wrong type, unknown unit, zero, negative, or out of range.
    """
    example = 'e.g. "9600bps", "500kbps", "10Mbit" or "1MB/s"'
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(
            f"expected a bandwidth, got {type_name(value)}",
            value=shown(value),
            fix=f"write a quoted bandwidth, {example}",
        )
    if isinstance(value, str):
        m = _BANDWIDTH.fullmatch(value.strip())
        if m is None:
            raise ConfigError("not a bandwidth", value=shown(value), fix=f"write <number><unit>, {example}")
        unit = m.group(2).lower() or "bps"
        factor = BANDWIDTH_BYTE_UNITS.get(m.group(2), BANDWIDTH_BPS.get(unit))
        if factor is None:
            raise ConfigError(
                f"unknown bandwidth unit {m.group(2)!r}",
                value=shown(value),
                fix=f"use bps, kbps, Mbps, Gbps, kbit, Mbit(/s) (bits) or B/s, kB/s, MB/s (bytes), {example}",
            )
        bps = float(m.group(1)) * factor
    else:
        bps = float(value)
    if not math.isfinite(bps) or bps <= 0:
        raise ConfigError(
            "a bandwidth must be a positive number",
            value=shown(value),
            fix=f"use {example}, or omit it for unlimited",
        )
    if bps > MAX_BANDWIDTH_BPS:
        raise ConfigError(
            "bandwidth too large (the limit is 1Tbps)",
            value=shown(value),
            fix="omit it for an unlimited link",
        )
    return bps


def parse_utc_timestamp(value: object) -> _dt.datetime:
    """Parse an RFC 3339 timestamp in UTC.

    Args:
        value: a TOML offset date-time (``2026-01-05T08:00:00Z``, unquoted) or a string in the same form.

    Returns:
        An aware :class:`datetime.datetime` in UTC.

    Raises:
        ConfigError: wrong type, not RFC 3339, no time zone, or an offset other than UTC.
    """
    fix = "write it in UTC with a Z suffix, e.g. 2026-01-05T08:00:00Z"
    if isinstance(value, str):
        m = _RFC3339.fullmatch(value.strip())
        if m is None:
            raise ConfigError("not an RFC 3339 timestamp with a time zone", value=shown(value), fix=fix)
        text = m.group(1) + "T" + m.group(2) + (m.group(3) or "")
        zone = m.group(4)
        text += "+00:00" if zone in ("Z", "z") else zone
        try:
            parsed = _dt.datetime.fromisoformat(text)
        except ValueError:
            raise ConfigError("not a valid date or time", value=shown(value), fix=fix) from None
    elif isinstance(value, _dt.datetime):
        parsed = value
    else:
        raise ConfigError(f"expected a timestamp, got {type_name(value)}", value=shown(value), fix=fix)
    offset = parsed.utcoffset()
    if offset is None:
        raise ConfigError("the timestamp has no time zone", value=str(value), fix=fix)
    if offset != _dt.timedelta(0):
        raise ConfigError("the timestamp is not in UTC", value=str(value), fix=fix)
    if not MIN_YEAR <= parsed.year <= MAX_YEAR:
        raise ConfigError(
            f"the year must be in {MIN_YEAR}..{MAX_YEAR} (certificates and durations are computed from it)",
            value=str(value),
            fix=fix,
        )
    return parsed.astimezone(_dt.UTC)
