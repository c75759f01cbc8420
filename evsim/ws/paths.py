"""OCPP-J connection URL paths: endpoint prefix + ``/`` + percent-encoded station identity.

OCPP-J 2.1 §3.1.1 (protocol-digest §1.1): ``wss://csms.example.com/ocppj/RDAM%7C123``; the identity
is an identifierString of at most 48 characters and never contains ``:`` (the Basic-auth separator).
"""

from __future__ import annotations

import urllib.parse

from evsim.errors import ConfigError

__all__ = ["MAX_IDENTITY_LENGTH", "station_id_from_path", "station_path", "valid_identity"]

MAX_IDENTITY_LENGTH = 48
"""identifierString[48] (OCPP-J 2.1 §3.1.1)."""


def valid_identity(station_id: str) -> bool:
    """True if ``station_id`` may appear in a connection URL: 1..48 characters, no ``:``."""
    return 0 < len(station_id) <= MAX_IDENTITY_LENGTH and ":" not in station_id


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
        ConfigError: the identity is empty, longer than 48 characters, or contains ``:``.
    """
    if not valid_identity(station_id):
        raise ConfigError(
            "a station identity must be 1..48 characters without ':' (OCPP-J §3.1.1)",
            value=station_id,
            fix="shorten the identity or remove the colon",
        )
    return f"{_prefix(prefix)}/{urllib.parse.quote(station_id, safe='')}"


def station_id_from_path(path: str, prefix: str) -> str | None:
    """The station identity in a request path, or None if the path does not name a valid one.

    Args:
        path: the request target (a query string is ignored).
        prefix: the endpoint path the identity follows.

    Returns:
        The decoded identity; None when the path is not ``prefix/<one segment>``, the segment is not
        valid percent-encoded UTF-8, or the identity is empty, longer than 48 characters or has ``:``.
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
