"""Connection URLs: ``ws://`` and ``wss://`` (pure, no I/O).

Used by every layer that names a server: the OCPP network profiles (``ocppCsmsUrl``), endpoint failover and
the command line.
"""

from __future__ import annotations

import urllib.parse

from evsim.errors import ConfigError

__all__ = ["parse_url"]

_DEFAULT_PORTS = {"ws": 80, "wss": 443}


def parse_url(url: str) -> tuple[str, str, int, str]:
    """Split a ``ws://`` or ``wss://`` URL.

    IPv6 literals come back without brackets; the path keeps its percent-encoding and any query.

    Args:
        url: for example ``wss://csms.evsim.test:8443/ocpp`` or ``ws://[::1]/ocpp/CS1``.

    Returns:
        ``(scheme, host, port, path)``; the port defaults to 80 (ws) or 443 (wss), the path to ``/``.

    Raises:
        ConfigError: not a ws/wss URL, no host, bad port, or credentials in the URL.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"bad URL: {exc}", value=url, fix="use ws://host[:port]/path") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ConfigError("URL scheme must be ws or wss", value=url, fix="use ws://... or wss://...")
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
