"""OCPP-J connection URL paths: endpoint prefix + ``/`` + percent-encoded station identity.

OCPP-J 2.1 §3.1.1 (protocol-digest §1.1): ``wss://csms.example.com/ocppj/RDAM%7C123``; the identity
is an identifierString of at most 48 characters and never contains ``:`` (the Basic-auth separator).
identifierString (OCPP 2.0.1 part 2, primitive datatypes) allows only ``a-z A-Z 0-9 * - _ = : + | @ .``, so
an identity never carries a control character, a NUL, a space, a ``/`` or non-ASCII text: whatever decodes
to such a character is not an identity, which keeps peer-chosen bytes out of records and log lines. ``.``
and ``..`` are refused too: they are dot-segments, which URL normalisation removes (RFC 3986 §5.2.4), so no
client could address them.
"""

from __future__ import annotations

import re
import urllib.parse

from evsim.errors import ConfigError

__all__ = [
    "IDENTITY_RULE",
    "MAX_IDENTITY_LENGTH",
    "printable_target",
    "station_id_from_path",
    "station_path",
    "valid_identity",
]

MAX_IDENTITY_LENGTH = 48
"""identifierString[48] (OCPP-J 2.1 §3.1.1)."""

_IDENTIFIER_STRING = re.compile(r"[A-Za-z0-9*\-_=+|@.]{1,48}")
"""identifierString without ``:``, at most :data:`MAX_IDENTITY_LENGTH` characters."""

IDENTITY_RULE = "1..48 characters from a-z A-Z 0-9 * - _ = + | @ . (OCPP identifierString without ':')"
"""The identity rule in words, for error messages."""


def valid_identity(station_id: str) -> bool:
    """True if ``station_id`` may appear in a connection URL: an identifierString of 1..48 characters
    without ``:``, and not the dot-segment ``.`` or ``..``."""
    return _IDENTIFIER_STRING.fullmatch(station_id) is not None and station_id not in (".", "..")


def _prefix(prefix: str) -> str:
    return "/" + prefix.strip("/") if prefix.strip("/") else ""


def station_path(prefix: str, station_id: str) -> str:
    """The request path for ``station_id`` under the endpoint ``prefix``.

    Args:
        prefix: the endpoint path, e.g. ``/ocpp`` (leading/trailing slashes optional; ``""`` for root).
        station_id: the identity, percent-encoded here (``RDAM|123`` → ``RDAM%7C123``).

    Returns:
        For example ``/ocpp/RDAM%7C123``.

    Raises:
        ConfigError: the identity is not valid (see :func:`valid_identity`).
    """
    if not valid_identity(station_id):
        raise ConfigError(
            f"a station identity must be {IDENTITY_RULE}, OCPP-J §3.1.1",
            value=station_id,
            fix="use only those characters, at most 48 of them",
        )
    return f"{_prefix(prefix)}/{urllib.parse.quote(station_id, safe='')}"


def station_id_from_path(path: str, prefix: str) -> str | None:
    """The station identity in a request path, or None if the path does not name a valid one.

    Args:
        path: the request target (a query string is ignored).
        prefix: the endpoint path the identity follows.

    Returns:
        The decoded identity; None when the path is not ``prefix/<one segment>``, the segment is not
        valid percent-encoded UTF-8, or the decoded identity is not valid (see :func:`valid_identity`).
    """
    path = path.partition("?")[0]
    head = _prefix(prefix) + "/"
    if not path.startswith(head):
        return None
    segment = path[len(head) :]
    if not segment or "/" in segment:
        return None
    try:
        station_id = urllib.parse.unquote(segment, errors="strict")
    except UnicodeDecodeError:
        return None
    return station_id if valid_identity(station_id) else None


_SHOWN_TARGET = 96
"""Most characters of a refused request target kept for events and logs."""


def printable_target(target: str, limit: int = _SHOWN_TARGET) -> str:
    """A request target as it may appear in an event or a log line: ``!``..``~`` kept except ``\\``, everything
    else (space, controls, ``\\``, non-ASCII) as ``\\xNN`` / ``\\uNNNN``, cut to ``limit`` characters with
    ``...`` after a cut."""
    shown = "".join(_printable_char(c) for c in target[: limit + 1])
    return shown if len(shown) <= limit else shown[:limit] + "..."


def _printable_char(c: str) -> str:
    if "!" <= c <= "~" and c != "\\":
        return c
    code = ord(c)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
