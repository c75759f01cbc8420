"""parse_url for ws/wss connection URLs."""

from __future__ import annotations

import pytest

from evsim.errors import ConfigError
from evsim.urls import parse_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("ws://csms.evsim.test/ocpp", ("ws", "csms.evsim.test", 80, "/ocpp")),
        ("wss://csms.evsim.test/ocpp", ("wss", "csms.evsim.test", 443, "/ocpp")),
        ("wss://localhost:8443/ocpp/RDAM%7C123", ("wss", "localhost", 8443, "/ocpp/RDAM%7C123")),
        ("WSS://CSMS.Example:9000", ("wss", "csms.example", 9000, "/")),
        ("ws://[::1]:9000/ocpp", ("ws", "::1", 9000, "/ocpp")),
        ("wss://[::1]/x", ("wss", "::1", 443, "/x")),
        ("ws://127.0.0.1/ocpp?x=1", ("ws", "127.0.0.1", 80, "/ocpp?x=1")),
    ],
)
def test_parse_url(url: str, expected: tuple[str, str, int, str]) -> None:
    assert parse_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "http://csms/ocpp",
        "csms:443",
        "wss:///ocpp",
        "wss://csms:99999/ocpp",
        "wss://csms:port/ocpp",
        "wss://user:pw@csms/ocpp",
        "wss://[::1/ocpp",
    ],
)
def test_parse_url_rejects(url: str) -> None:
    with pytest.raises(ConfigError):
        parse_url(url)
