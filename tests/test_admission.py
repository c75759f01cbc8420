"""The profile 3 client-certificate gate shared by the CSMS and the Local Controller (pure)."""

from __future__ import annotations

from evsim.nodes.admission import TrustedController, check_client_certificate, decide_upgrade
from evsim.tls.stream import TlsInfo
from evsim.ws import Accept, Reject, UpgradeRequest
from evsim.ws.auth import basic_auth_header
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


def _gate(
    path: str, info: TlsInfo | None, auth: str = "", *, profile: int = 3, csms: bool = True
) -> tuple[Accept | Reject, dict[str, str]]:
    """The shared upgrade decision with the CSMS's parameters (``csms``) or the Local Controller's."""
    headers = {"authorization": basic_auth_header(*auth.split(":"))[1]} if auth else {}
    req = UpgradeRequest(path=path, host="h", subprotocols=("ocpp2.0.1",), headers=headers)
    out: dict[str, str] = {}
    verdict = decide_upgrade(
        req,
        info,
        out,
        reject=lambda status, reason, _station: Reject(status=status, reason=reason),
        path_prefix="/ocpp/",
        security_profile=profile,
        organization="evsim",
        behind_controller="trust_controller",
        trusted_controllers=[TrustedController("evsim", "LC-1")],
        station_issuers=(),
        ocpp_versions=("2.0.1",),
        password_for={"ST-1": "a" * 16}.get if csms else None,
        check_relayed_password=csms,
        known=None,
        connected=lambda _sid: False,
        refuse_newer=False,
    )
    return verdict, out


def test_one_decision_for_csms_and_controller() -> None:
    good, bad = "ST-1:" + "a" * 16, "ST-1:" + "b" * 16
    verdict, out = _gate("/ocpp/ST-1", None, good, profile=2)
    assert isinstance(verdict, Accept) and out["station_id"] == "ST-1" and out["authorization"]
    assert _gate("/ocpp/ST-1", None, bad, profile=2)[0] == Reject(status=401, reason="wrong password")
    # a controller without station_passwords forwards the credentials: only presence and user count
    assert isinstance(_gate("/ocpp/ST-1", None, bad, profile=2, csms=False)[0], Accept)
    assert _gate("/ocpp/ST-1", None, profile=2, csms=False)[0].reason == "missing Basic auth"  # type: ignore[union-attr]
    # behind a trusted controller: both name the controller in the refusal; only the CSMS checks the password
    lc = _info_for("LC-1")
    for csms in (True, False):
        refused = _gate("/ocpp/ST-1", lc, csms=csms)[0]
        assert refused == Reject(status=401, reason="behind controller LC-1: missing Basic auth")
    assert _gate("/ocpp/ST-1", lc, bad)[0] == Reject(
        status=401, reason="behind controller LC-1: wrong password"
    )
    verdict, out = _gate("/ocpp/ST-1", lc, bad, csms=False)
    assert isinstance(verdict, Accept) and out["controller"] == "LC-1"
    verdict, out = _gate("/ocpp/ST-1", lc, good)
    assert isinstance(verdict, Accept) and out["controller"] == "LC-1"
    assert _gate("/ocpp/%ZZ", None, good, profile=2)[0].status == 404  # type: ignore[union-attr]
