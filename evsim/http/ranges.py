"""HTTP byte ranges (RFC 9110 §14): what a server serves for a ``Range`` header, and how a client checks the
``Content-Range`` of a partial response (pure, no I/O).

Only single ranges are served. A server MAY ignore ``Range`` (RFC 9110 §14.2), and it does for anything it
does not serve: a malformed header, another unit, several ranges - the client then gets the whole
representation with 200. A well-formed range that starts at or past the end is *unsatisfiable* (416, with
``Content-Range: bytes */<size>``).
"""

from __future__ import annotations

import re

import attrs

__all__ = ["ByteRange", "RangeNotSatisfiable", "content_range", "parse_content_range", "parse_range"]

_RANGE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*")
_CONTENT_RANGE = re.compile(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*")
_MAX_DIGITS = 19  # 2**63 has 19 digits: longer numbers are refused before int() (no huge integers)


@attrs.frozen
class ByteRange:
    """An inclusive byte range ``first..last`` of a representation of ``size`` bytes."""

    first: int
    last: int
    size: int

    @property
    def length(self) -> int:
        """How many bytes the range holds."""
        return self.last - self.first + 1


class RangeNotSatisfiable(ValueError):
    """The requested range starts at or past the end of the representation (answer 416)."""


def _number(digits: str) -> int | None:
    if not digits or len(digits) > _MAX_DIGITS:
        return None
    return int(digits)


def parse_range(value: str | None, size: int) -> ByteRange | None:
    """The range a server serves for a ``Range`` header over a representation of ``size`` bytes.

    Args:
        value: the header's value (None: no header).
        size: the representation's length.

    Returns:
        The range to serve with 206, or None to serve everything with 200 (no header, or one that is ignored:
        malformed, not ``bytes``, several ranges, numbers too long).

    Raises:
        RangeNotSatisfiable: ``bytes=<first>-`` or ``bytes=<first>-<last>`` with ``first >= size``, or a suffix
            ``bytes=-0`` (RFC 9110 §14.1.2), or an empty representation.
    """
    if value is None:
        return None
    match = _RANGE.fullmatch(value)
    if match is None:
        return None
    first_s, last_s = match.groups()
    if not first_s:  # suffix range: the last N bytes
        suffix = _number(last_s)
        if suffix is None:
            return None
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(f"suffix range of {suffix} bytes over {size} bytes")
        return ByteRange(max(0, size - suffix), size - 1, size)
    first = _number(first_s)
    last = _number(last_s) if last_s else None
    if first is None or (last_s and (last is None or last < first)):
        return None  # invalid (RFC 9110 §14.1.1): ignore the header
    if first >= size:
        raise RangeNotSatisfiable(f"range starts at byte {first} of {size}")
    return ByteRange(first, size - 1 if last is None else min(last, size - 1), size)


def content_range(byte_range: ByteRange) -> str:
    """The ``Content-Range`` value of a 206 response."""
    return f"bytes {byte_range.first}-{byte_range.last}/{byte_range.size}"


def parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """``(first, last, size)`` of a 206 response's ``Content-Range`` (size None for ``*``); None if malformed
    (missing, another unit, ``last < first``, a size not beyond ``last``, numbers too long)."""
    if value is None:
        return None
    match = _CONTENT_RANGE.fullmatch(value)
    if match is None:
        return None
    first, last = _number(match.group(1)), _number(match.group(2))
    size = None if match.group(3) == "*" else _number(match.group(3))
    if first is None or last is None or last < first:
        return None
    if match.group(3) != "*" and (size is None or size <= last):
        return None
    return first, last, size
