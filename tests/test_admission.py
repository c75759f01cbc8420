"""The profile 3 client-certificate gate shared by the CSMS and the Local Controller (pure)."""

from __future__ import annotations

from evsim.nodes.admission import TrustedController, check_client_certificate
from evsim.tls.stream import TlsInfo
from tests.pki_fixtures import make_test_pki


def _info_for(cn: str, org: str = "evsim") -> TlsInfo:
    pki = make_test_pki()
    cert = pki.station_cert(cn, org=org)

    class _Info:
        peer_chain = (cert.cert,)

    return _Info()  # type: ignore[return-value]


def test_admission_direct_and_behind_controller() -> None:
    lc = TrustedController("evsim", "LC-1", stations=["ST-1"])
    direct = check_client_certificate(_info_for("ST-1"), "ST-1", "evsim")
    assert direct.ok and direct.controller is None
    assert not check_client_certificate(_info_for("ST-1", org="other"), "ST-1", "evsim").ok
    strict = check_client_certificate(_info_for("LC-1"), "ST-1", "evsim", trusted_controllers=[lc])
    assert not strict.ok and "CN" in strict.reason
    trusting = check_client_certificate(
        _info_for("LC-1"), "ST-1", "evsim", behind_controller="trust_controller", trusted_controllers=[lc]
    )
    assert trusting.ok and trusting.controller == "LC-1"
    other_station = check_client_certificate(
        _info_for("LC-1"), "ST-9", "evsim", behind_controller="trust_controller", trusted_controllers=[lc]
    )
    assert not other_station.ok and "may not speak for" in other_station.reason
    unknown = check_client_certificate(
        _info_for("LC-2"), "ST-1", "evsim", behind_controller="trust_controller", trusted_controllers=[lc]
    )
    assert not unknown.ok
    assert not check_client_certificate(None, "ST-1", "evsim").ok
