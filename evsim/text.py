"""Text a peer controls, made safe for one log line.

A station identity, an HTTP path, the reason of a Close frame or a CALLERROR, a certificate CN: all of it comes
from the other end of a connection and may hold CR/LF (a forged log line), NUL, ANSI escape sequences (a
rewritten terminal) or megabytes. :func:`escape` is the one function every log line passes such text through.
"""

from __future__ import annotations

__all__ = ["DEFAULT_LIMIT", "ELLIPSIS", "escape"]

DEFAULT_LIMIT = 200
"""Longest escaped text a log line shows for one value (characters)."""

ELLIPSIS = "..."
"""Marks a value cut at the limit (ASCII, so an escaped value stays printable ASCII)."""


def escape(value: object, limit: int = DEFAULT_LIMIT) -> str:
    """Printable ASCII for any value, at most ``limit`` characters long.

    Printable ASCII (space to ``~``) is kept, except the backslash, which is doubled so that an escape in the
    output always means an escaped character. Every other character becomes ``\\xNN`` (up to U+00FF),
    ``\\uNNNN`` (up to U+FFFF) or ``\\UNNNNNNNN``. Output longer than ``limit`` is cut between two escapes and
    ends with :data:`ELLIPSIS`. Below the limit the mapping is injective: distinct texts stay distinct.

    Args:
        value: the text (anything else is ``str()``-ed first).
        limit: the longest result (at least ``len(ELLIPSIS)``).

    Returns:
        The escaped text.
    """
    text = value if isinstance(value, str) else str(value)
    limit = max(limit, len(ELLIPSIS))
    if len(text) <= limit and text.isascii() and text.isprintable() and "\\" not in text:
        return text  # the common case: nothing to escape
    out: list[str] = []
    size = 0
    for ch in text:
        code = ord(ch)
        if ch == "\\":
            piece = "\\\\"
        elif 0x20 <= code < 0x7F:
            piece = ch
        elif code <= 0xFF:
            piece = f"\\x{code:02x}"
        elif code <= 0xFFFF:
            piece = f"\\u{code:04x}"
        else:
            piece = f"\\U{code:08x}"
        out.append(piece)
        size += len(piece)
        if size > limit:
            break
    if size <= limit:
        return "".join(out)
    # Too long: drop whole pieces until the ellipsis fits.
    while out and size + len(ELLIPSIS) > limit:
        size -= len(out.pop())
    return "".join(out) + ELLIPSIS
