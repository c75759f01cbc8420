"""Basic auth headers (RFC 7617) and OCPP-J connection paths (identity percent-encoding)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evsim.errors import ConfigError
from evsim.ws import basic_auth_header, parse_basic_auth, station_id_from_path, station_path, valid_identity


def test_basic_auth_header_matches_rfc_7617_example() -> None:
    assert basic_auth_header("Aladdin", "open sesame") == (
        "Authorization",
        "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==",
    )


def test_basic_auth_password_is_utf8() -> None:
    _, value = basic_auth_header("CS1", "pässwörd")
    assert base64.b64decode(value.split()[1]) == "CS1:pässwörd".encode()


def test_basic_auth_user_must_not_contain_a_colon() -> None:
    with pytest.raises(ConfigError, match="':'"):
        basic_auth_header("CS:1", "pw")


@given(user=st.text().filter(lambda u: ":" not in u), password=st.text())
def test_basic_auth_round_trip(user: str, password: str) -> None:
    _, value = basic_auth_header(user, password)
    assert parse_basic_auth(value) == (user, password)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==", ("Aladdin", "open sesame")),
        ("basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==", ("Aladdin", "open sesame")),
        ("  BASIC   QWxhZGRpbjpvcGVuIHNlc2FtZQ==  ", ("Aladdin", "open sesame")),
        ("Basic " + base64.b64encode(b"CS1:a:b").decode(), ("CS1", "a:b")),
        ("Basic " + base64.b64encode(b"CS1:").decode(), ("CS1", "")),
        ("Bearer QWxhZGRpbjpvcGVuIHNlc2FtZQ==", None),
        ("Basic", None),
        ("Basic !!!notbase64", None),
        ("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ", None),  # bad padding
        ("Basic " + base64.b64encode(b"no-colon").decode(), None),
        ("Basic " + base64.b64encode(b"\xff\xfe:\x80").decode(), None),  # not UTF-8
        ("", None),
    ],
)
def test_parse_basic_auth(value: str, expected: tuple[str, str] | None) -> None:
    assert parse_basic_auth(value) == expected


@given(value=st.text())
def test_parse_basic_auth_never_raises(value: str) -> None:
    result = parse_basic_auth(value)
    assert result is None or ":" not in result[0]


@pytest.mark.parametrize(
    ("prefix", "station_id", "path"),
    [
        ("/ocpp", "RDAM|123", "/ocpp/RDAM%7C123"),
        ("/ocpp/", "CS1", "/ocpp/CS1"),
        ("ocpp", "CS-1_a.b", "/ocpp/CS-1_a.b"),
        ("", "CS1", "/CS1"),
        ("/", "CS1", "/CS1"),
        ("/a/b", "x*y=z+w@v", "/a/b/x%2Ay%3Dz%2Bw%40v"),
        ("/ocpp", "a|b", "/ocpp/a%7Cb"),
    ],
)
def test_station_path(prefix: str, station_id: str, path: str) -> None:
    assert station_path(prefix, station_id) == path
    assert station_id_from_path(path, prefix) == station_id


@pytest.mark.parametrize(
    "station_id", ["", "a:b", "x" * 49, "stätion", "a b", "a/b", "a\r\nb", "a\x00", ".", "..", "a%b", "a\n"]
)
def test_station_path_rejects_bad_identities(station_id: str) -> None:
    assert not valid_identity(station_id)
    with pytest.raises(ConfigError):
        station_path("/ocpp", station_id)


def test_identity_length_limit_is_48() -> None:
    assert station_id_from_path("/ocpp/" + "x" * 48, "/ocpp") == "x" * 48
    assert station_id_from_path("/ocpp/" + "x" * 49, "/ocpp") is None


@pytest.mark.parametrize(
    "path",
    [
        "/ocpp/",
        "/ocpp",
        "/other/CS1",
        "/ocppx/CS1",
        "/ocpp/CS1/extra",
        "/ocpp/a%3Ab",  # ':' after decoding
        "/ocpp/a:b",
        "/ocpp/%FF",  # not UTF-8
        "/ocpp/CS1%0d%0aFAKE",  # CR LF: a forged log line
        "/ocpp/CS1%00",  # NUL
        "/ocpp/..%2F..%2Fetc",  # '/' after decoding
        "/ocpp/%2E%2E",  # the dot-segment ..
        "/ocpp/st%C3%A4tion",  # non-ASCII
        "/ocpp/a%20b",  # space
    ],
)
def test_station_id_from_path_rejects(path: str) -> None:
    assert station_id_from_path(path, "/ocpp") is None


def test_station_id_from_path_ignores_the_query() -> None:
    assert station_id_from_path("/ocpp/CS1?token=1", "/ocpp") == "CS1"


@given(
    station_id=st.from_regex(r"[A-Za-z0-9*\-_=+|@.]{1,48}", fullmatch=True).filter(
        lambda s: s not in (".", "..")
    )
)
def test_station_path_round_trip(station_id: str) -> None:
    path = station_path("/ocpp", station_id)
    assert path.isascii()
    assert station_id_from_path(path, "/ocpp") == station_id
