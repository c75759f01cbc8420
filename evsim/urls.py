"""Connection URLs: ``ws://`` and ``wss://``, and ``http://`` / ``https://`` where asked for (pure, no I/O).

Used by every layer that names a server: the OCPP network profiles (``ocppCsmsUrl``), endpoint failover, file
transfers and the command line.
"""

from __future__ import annotations

import urllib.parse

from evsim.errors import ConfigError

__all__ = ["HTTP_SCHEMES", "WS_SCHEMES", "parse_url"]

_DEFAULT_PORTS = {"ws": 80, "wss": 443, "http": 80, "https": 443}

WS_SCHEMES: tuple[str, ...] = ("ws", "wss")
"""The schemes of OCPP-J connection URLs (the default of :func:`parse_url`)."""
HTTP_SCHEMES: tuple[str, ...] = ("http", "https")
"""The schemes of file-transfer URLs (firmware locations, log upload locations)."""


def parse_url(url: str, *, schemes: tuple[str, ...] = WS_SCHEMES) -> tuple[str, str, int, str]:
    """Split a ``ws://`` or ``wss://`` URL (or one of the other ``schemes``).

    IPv6 literals come back without brackets; the path keeps its percent-encoding and any query.

    Args:
        url: for example ``wss://csms.evsim.test:8443/ocpp`` or ``ws://[::1]/ocpp/CS1``.
        schemes: the schemes accepted (any of ws, wss, http, https).

    Returns:
        ``(scheme, host, port, path)``; the port defaults to 80 (ws, http) or 443 (wss, https), the path to
        ``/``.

    Raises:
        ConfigError: a scheme not in ``schemes``, no host, bad port, or credentials in the URL.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"bad URL: {exc}", value=url, fix="use ws://host[:port]/path") from None
    scheme = parts.scheme.lower()
    if scheme not in schemes or scheme not in _DEFAULT_PORTS:
        names = " or ".join(schemes)
        raise ConfigError(
            f"URL scheme must be {names}", value=url, fix=f"use {' or '.join(s + '://...' for s in schemes)}"
        )
    host = parts.hostname
    if not host:
        raise ConfigError("URL has no host", value=url, fix="use ws://host[:port]/path")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            "credentials in the URL are not supported", value=url, fix="configure the password separately"
        )
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return scheme, host, port if port is not None else _DEFAULT_PORTS[scheme], path
