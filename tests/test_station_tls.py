"""Sans-IO: a station's TLS versions and suites in its device model (InternalCtrlr), read and changed."""

from __future__ import annotations

from typing import Any

import pytest

from evsim.nodes.station_tls import TlsSettings
from evsim.tls.config import TlsProfile


def settings(installed: TlsProfile | None = None) -> tuple[TlsSettings, list[tuple[str, dict[str, Any]]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    profile = installed if installed is not None else TlsProfile()
    return TlsSettings(lambda: profile, lambda kind, **f: events.append((kind, f))), events


def test_reports_engine_and_configured_values() -> None:
    t, _ = settings()
    got = t.variables()
    assert got["TlsVersions"] == "TLSv1.3,TLSv1.2"
    assert got["AvailableTlsVersions"].split(",")[:2] == ["TLSv1.3", "TLSv1.2"]
    configured12 = got["SupportedCiphers12"].split(":")
    assert configured12[:2] == [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
    ]  # OpenSSL names
    assert set(configured12) <= set(got["AvailableCiphers12"].split(":"))
    assert got["SupportedCiphers13"].startswith("TLS_AES_256_GCM_SHA384")
    assert "CCM_8" not in got["AvailableCiphers13"]  # security level 0 only: not offered


def test_accepted_values_make_the_next_profile() -> None:
    t, events = settings()
    assert t.current() == TlsProfile()
    assert t.set_variable("TlsVersions", "TLSv1.2") == ("Accepted", None)
    assert t.set_variable(
        "SupportedCiphers12", "AES256-GCM-SHA384:TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"
    ) == (
        "Accepted",
        None,
    )
    assert t.profile is not None and t.profile.versions == ("1.2",)
    assert t.profile.suites("1.2") == (
        "TLS_RSA_WITH_AES_256_GCM_SHA384",
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    )
    assert t.variables()["SupportedCiphers12"] == "AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256"
    assert [e[1]["status"] for e in events] == ["Accepted", "Accepted"]


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("TlsVersions", "TLSv1.2,TLSv1.3", "UnsupportedByEngine"),  # the engine always prefers the newest
        ("TlsVersions", "TLSv1.1", "UnsupportedByEngine"),  # OCPP forbids it (A00.FR.313)
        ("TlsVersions", "SSLv3", "InvalidValue"),
        ("SupportedCiphers12", "NO-SUCH-CIPHER", "InvalidValue"),
        ("SupportedCiphers12", "TLS_AES_128_GCM_SHA256", "InvalidValue"),  # a TLS 1.3 suite
        ("SupportedCiphers12", "ECDHE-ECDSA-AES128-CCM8", "UnsupportedByEngine"),  # security level 0
        ("SupportedCiphers13", "", "UnsupportedByEngine"),  # TLS 1.3 enabled without a suite
        ("AvailableCiphers13", "TLS_AES_128_GCM_SHA256", "ReadOnly"),
        ("SupportedCiphers12", "A" * 3000, "InvalidValue"),
    ],
)
def test_refused_with_a_reason_and_nothing_changes(name: str, value: str, reason: str) -> None:
    t, events = settings()
    status, info = t.set_variable(name, value)
    assert status == "Rejected" and info is not None and info["reasonCode"] == reason
    assert info["additionalInfo"] and len(info["additionalInfo"]) <= 512
    assert t.profile is None
    assert events[-1][1]["reason"] == reason


def test_no_tls_configuration() -> None:
    t = TlsSettings(lambda: None, lambda kind, **f: None)
    assert "TlsVersions" not in t.variables()
    assert t.set_variable("TlsVersions", "TLSv1.2")[1] == {
        "reasonCode": "NoTlsConfiguration",
        "additionalInfo": "the station has no TLS configuration (profile 1)",
    }
