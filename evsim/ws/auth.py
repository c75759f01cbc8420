"""HTTP Basic authentication (RFC 7617) for OCPP security profiles 1 and 2 (protocol-digest §1.6).

OCPP-J: ``Authorization: Basic base64("<ChargingStationId>:<BasicAuthPassword>")``, the password sent as
UTF-8 (2.1 allows any UTF-8; 2.0.1 a restricted ASCII set).
"""

from __future__ import annotations

import base64
import binascii

from evsim.errors import ConfigError

__all__ = ["basic_auth_header", "parse_basic_auth"]


def basic_auth_header(user: str, password: str) -> tuple[str, str]:
    """The ``Authorization`` header for ``user`` / ``password``.

    Args:
        user: the user-id (for OCPP, the station identity); must not contain ``:``.
        password: the password; any text, encoded as UTF-8.

    Returns:
        ``("Authorization", "Basic <base64>")``.

    Raises:
        ConfigError: ``user`` contains ``:`` (RFC 7617 §2; OCPP-J §3.1.1 forbids it in identities).
    """
    if ":" in user:
        raise ConfigError(
            "a Basic auth user-id must not contain ':'",
            value=user,
            fix="remove the colon from the station identity",
        )
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return "Authorization", f"Basic {token}"


def parse_basic_auth(value: str) -> tuple[str, str] | None:
    """Decode an ``Authorization`` header value.

    Args:
        value: the header value, e.g. ``Basic Q1MxOnNlY3JldA==`` (scheme case-insensitive).

    Returns:
        ``(user, password)``, or None when the value is not Basic auth, not valid base64, not UTF-8,
        or has no ``:`` (the user-id is everything before the first colon, RFC 7617 §2).
    """
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(":")
    if not colon:
        return None
    return user, password
