"""Hostile identities and credentials at the listeners of the CSMS and the Local Controller: identity abuse in the
path, a second connection with a connected station's identity, password guessing, and certificates that are not
a station's (sans-IO first, then in memory on virtual time)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from evsim.cli import main
from evsim.errors import ConfigError, UpgradeRejected
from evsim.nodes.admission import (
    REPLACED_CLOSE,
    AuthBudget,
    AuthBudgetConfig,
    check_client_certificate,
    client_auth_problem,
)
from evsim.nodes.csms import CsmsConfig
from evsim.pki import init_dev_pki
from evsim.scenario.loader import loads_scenario
from evsim.tls import ClientTls, Identity, TlsProfile, tls_connect
from evsim.ws import WebSocket, ws_client
from evsim.ws.auth import basic_auth_header
from evsim.ws.paths import printable_target, station_id_from_path, station_path, valid_identity
from tests.e2e_harness import PASSWORD, Harness, harness
from tests.pki_fixtures import CSMS_HOST, TEST_NOW, make_test_pki
from tests.test_controller import LC_HOST, start_controller, start_csms

ABUSIVE_PATHS = [
    "/ocpp/CS1%0d%0aevsim%20csms%20booted%20station=ST-9",  # CR LF: a forged log line
    "/ocpp/CS1%00",  # NUL
    "/ocpp/..%2F..%2Fetc%2Fpasswd",  # '/' after decoding
    "/ocpp/%2E%2E",  # the dot-segment ..
    "/ocpp/" + "A" * 49,  # overlong
    "/ocpp/st%C3%A4tion",  # non-ASCII
    "/ocpp/a%20b",  # space
]


# ---------------------------------------------------------------- sans-IO: identities


@pytest.mark.parametrize("path", ABUSIVE_PATHS)
def test_abusive_paths_name_no_identity(path: str) -> None:
    assert station_id_from_path(path, "/ocpp") is None


@pytest.mark.parametrize("station_id", ["CS1\r\nx", "CS1\x00", "../x", "..", "ä", "a b", "A" * 49, "a:b"])
def test_invalid_identities_are_refused_on_the_client_side(station_id: str) -> None:
    assert not valid_identity(station_id)
    with pytest.raises(ConfigError):
        station_path("/ocpp", station_id)


def test_every_identifier_string_character_is_valid() -> None:
    assert valid_identity("azAZ09*-_=+|@." + "x" * 34)
    assert station_path("/ocpp", "RDAM|1") == "/ocpp/RDAM%7C1"


def test_refused_paths_are_shown_escaped_and_cut() -> None:
    shown = printable_target("/ocpp/a\r\nb\x00\\ä " + "x" * 200)
    assert shown.startswith("/ocpp/a\\x0d\\x0ab\\x00\\x5c\\xe4\\x20")
    assert shown.isascii() and shown.isprintable() and " " not in shown
    assert len(shown) == 96 + 3 and shown.endswith("...")


def test_scenario_identities_follow_the_same_rule() -> None:
    with pytest.raises(ConfigError, match="not an OCPP identity"):
        loads_scenario(
            '[simulation]\nduration = "1h"\n[csms.main]\n[stations.g]\ncount = 1\nid_pattern = ".."\n'
        )


# ---------------------------------------------------------------- sans-IO: failure budget


def test_budget_allows_max_failures_per_window_then_cools_down() -> None:
    budget = AuthBudget(AuthBudgetConfig(max_failures=3, window_s=10.0, cooldown_s=60.0))
    assert [budget.failure("evil", t) for t in (0.0, 1.0)] == [False, False]
    assert budget.retry_after("evil", 2.5) == 0.0
    assert budget.failure("evil", 3.0)  # the third within 10 s
    assert budget.retry_after("evil", 4.0) == pytest.approx(59.0)
    assert budget.retry_after("good", 4.0) == 0.0  # other addresses are not affected
    assert budget.retry_after("evil", 62.9) > 0
    assert budget.retry_after("evil", 63.0) == 0.0  # cool-down over: a fresh budget
    assert not budget.failure("evil", 64.0)
    assert (budget.refused, budget.cooldowns) == (2, 1)


def test_budget_failures_leave_the_window() -> None:
    budget = AuthBudget(AuthBudgetConfig(max_failures=2, window_s=10.0, cooldown_s=60.0))
    # one failure every 11 s, forever: never two inside one window of 10 s ...
    assert not any(budget.failure("slow", t) for t in range(0, 1100, 11))
    assert budget.failure("slow", 1095.0)  # ... until two come within 10 s


def test_budget_memory_is_bounded() -> None:
    budget = AuthBudget(AuthBudgetConfig(max_failures=1, window_s=10.0, cooldown_s=60.0, max_sources=100))
    for i in range(10_000):
        budget.failure(f"10.0.{i // 256}.{i % 256}", 0.0)
        budget.failure(f"10.0.{i // 256}.{i % 256}", 0.0)  # cooling down now
    assert len(budget) <= 200


def test_budget_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="max_failures"):
        AuthBudgetConfig(max_failures=0)
    with pytest.raises(ConfigError, match="cooldown_s"):
        AuthBudgetConfig(cooldown_s=-1)


# ---------------------------------------------------------------- sans-IO: certificate purpose and issuer


class _Info:
    def __init__(self, *chain: x509.Certificate, verified: tuple[x509.Certificate, ...] = ()) -> None:
        self.peer_chain = chain
        self.verified_chain = verified


def test_a_server_certificate_never_speaks_for_a_station() -> None:
    pki = make_test_pki()
    server_only = pki.root.issue_server(
        "ST-1", org="evsim", now=TEST_NOW, extended_key_usage=[ExtendedKeyUsageOID.SERVER_AUTH]
    ).cert
    verdict = check_client_certificate(_Info(server_only), "ST-1", "evsim")  # type: ignore[arg-type]
    assert not verdict.ok and "clientAuth" in verdict.reason and "certificate" in verdict.reason
    both = pki.station_ca.issue_client(
        "ST-1",
        "evsim",
        now=TEST_NOW,
        extended_key_usage=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
    ).cert
    assert client_auth_problem(both) == ""
    assert client_auth_problem(pki.station_cert("ST-1").cert) == ""  # no EKU at all: OCPP's recommendation


def test_station_issuers_require_the_station_sub_ca() -> None:
    pki = make_test_pki()
    station = pki.station_cert("ST-1").cert
    root_issued = pki.root.issue_client("ST-1", "evsim", now=TEST_NOW).cert
    issuers = (pki.station_ca.cert,)
    ok = _Info(station, verified=(station, pki.station_ca.cert, pki.root.cert))
    assert check_client_certificate(ok, "ST-1", "evsim", station_issuers=issuers).ok  # type: ignore[arg-type]
    # a chain that merely *sends* the sub-CA does not count: only the verified chain does
    bad = _Info(root_issued, pki.station_ca.cert, verified=(root_issued, pki.root.cert))
    verdict = check_client_certificate(bad, "ST-1", "evsim", station_issuers=issuers)  # type: ignore[arg-type]
    assert not verdict.ok and "station sub-CA" in verdict.reason
    assert check_client_certificate(bad, "ST-1", "evsim").ok  # type: ignore[arg-type]  # not configured


def test_dev_pki_issues_server_and_client_purposes(tmp_path: Path) -> None:
    pki = init_dev_pki(tmp_path / "certs", now=TEST_NOW, stations=["ST-1"])

    def eku(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
        return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)

    assert eku(pki.server.cert) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert eku(pki.station("ST-1", now=TEST_NOW).cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]


# ---------------------------------------------------------------- in memory: helpers


async def _raw(
    h: Harness,
    path: str,
    *,
    host: str = CSMS_HOST,
    source: str = "mallory",
    user: str = "ST-1",
    password: str = PASSWORD,
) -> WebSocket:
    """A hand-made station connection (TLS, then the upgrade of ``path`` with Basic auth ``user:password``)."""
    stream: trio.abc.Stream = await h.net.connect(host, 443, source=source)
    stream = await tls_connect(
        stream, ClientTls.build(TlsProfile(), h.pki.csms_trust()), host, verify_time=h.clock.utcnow
    )
    return await ws_client(
        stream, host=host, path=path, subprotocols=["ocpp2.0.1"], headers=[basic_auth_header(user, password)]
    )


async def _status_of(h: Harness, path: str, **kw: Any) -> int:
    try:
        ws = await _raw(h, path, **kw)
    except UpgradeRejected as exc:
        return exc.status
    await ws.aclose()
    return 101


async def _call(ws: WebSocket, mid: str, action: str, payload: dict[str, Any]) -> list[Any]:
    await ws.send_text(json.dumps([2, mid, action, payload]))
    answer: list[Any] = json.loads(await ws.receive_text())
    return answer


_BOOT = {"reason": "PowerUp", "chargingStation": {"model": "m", "vendorName": "v"}}


async def _online(h: Harness, station_id: str = "ST-1", *, host: str = CSMS_HOST) -> Any:
    st = h.start_station(station_id, host=host, sessions=0)
    with trio.fail_after(600):
        await st.wait_online()
    return st


def _get_variables() -> dict[str, Any]:
    return {
        "getVariableData": [
            {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}}
        ]
    }


# ---------------------------------------------------------------- in memory: identity abuse


async def test_csms_refuses_abusive_identities_with_404_and_one_escaped_event(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with harness() as h:
        await h.start_csms()
        sentinel = await _online(h, "SENTINEL")
        for path in ABUSIVE_PATHS:
            assert await _status_of(h, path) == 404, path
        refusals = h.events("upgrade_rejected", "csms")
        assert len(refusals) == len(ABUSIVE_PATHS)
        for event in refusals:
            shown = event.data["station"]
            assert shown.isascii() and shown.isprintable() and " " not in shown
            assert len(shown) <= 99
        assert refusals[0].data["station"].startswith("/ocpp/CS1%0d%0aevsim%20csms")  # as sent: no CR LF
        assert set(h.csms.stations) == {"SENTINEL"}
        assert h.csms.stations["SENTINEL"].connected and sentinel.statistics().connected


async def test_controller_refuses_abusive_identities_with_404(autojump_clock: trio.testing.MockClock) -> None:
    async with harness() as h:
        await h.start_csms()
        lc = await start_controller(h)
        for path in ABUSIVE_PATHS[:3]:
            assert await _status_of(h, path, host=LC_HOST) == 404, path
        assert not lc.stations
        assert len(h.events("upgrade_rejected", "LC-1")) == 3


async def test_controller_forgets_identities_the_csms_never_accepted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Without station passwords the controller lets any well-formed identity through and leaves the password to
    the CSMS: what it keeps for identities the CSMS never accepted goes when their links end, so a peer without
    credentials cannot grow it by trying identities; an accepted station keeps its record."""
    async with harness() as h:
        await h.start_csms()
        lc = await start_controller(h)
        st = await _online(h, "ST-1", host=LC_HOST)
        for n in range(20):
            with trio.move_on_after(60):
                ws = await _raw(
                    h, f"/ocpp/GUESS-{n}", host=LC_HOST, user=f"GUESS-{n}", password="wrong-password-0"
                )
                with contextlib.suppress(Exception):
                    await _call(ws, "b1", "BootNotification", _BOOT)
                with contextlib.suppress(Exception):
                    await ws.aclose()
        await trio.sleep(60)
        assert set(lc.stations) == {"ST-1"}, sorted(lc.stations)
        assert st.statistics().connected


# ---------------------------------------------------------------- in memory: duplicate identities


async def test_newcomer_that_never_boots_does_not_disturb_the_station(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """replace_older: the honest station keeps its session (its CALLs are answered, CSMS CALLs reach it)
    while a newcomer with its credentials sits there; the newcomer's own CALLs get SecurityError."""
    async with harness() as h:
        csms = await h.start_csms()
        st = await _online(h)
        ws = await _raw(h, "/ocpp/ST-1")
        with trio.fail_after(60):
            answer = await _call(ws, "x1", "Heartbeat", {})
        assert answer[:3] == [4, "x1", "SecurityError"]
        rec = csms.stations["ST-1"]
        assert rec.accepted and rec.connected and rec.connections == 2
        with trio.fail_after(60):
            result = await csms.call("ST-1", "GetVariables", _get_variables())
        assert result["getVariableResult"][0]["attributeValue"] == "60"
        heartbeats = rec.heartbeats
        await trio.sleep(130)  # two heartbeat intervals of the honest station
        assert rec.heartbeats >= heartbeats + 2
        assert st.statistics().connected and not h.events("replaced_connection")
        assert not h.events("station_disconnected", "csms")
        await ws.aclose()


async def test_newcomer_that_boots_replaces_the_older_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with harness() as h:
        csms = await h.start_csms()
        await _online(h)
        ws = await _raw(h, "/ocpp/ST-1")
        with trio.fail_after(60):
            answer = await _call(ws, "b1", "BootNotification", _BOOT)
        assert answer[0] == 3 and answer[2]["status"] == "Accepted"
        (event,) = h.events("replaced_connection", "csms")
        assert event.data.pop("peer").startswith("mallory:")  # the newcomer's connection reports it
        assert event.data == {
            "station": "ST-1",
            "old": 1,
            "old_source": "ST-1",
            "new": 2,
            "new_source": "mallory",
        }
        rec = csms.stations["ST-1"]
        assert rec.connection is not None and rec.connection.source == "mallory" and rec.accepted
        with trio.fail_after(60):
            heartbeat = await _call(ws, "h1", "Heartbeat", {})
        assert heartbeat[0] == 3
        await ws.aclose()


async def test_refuse_newer_policy_answers_409(autojump_clock: trio.testing.MockClock) -> None:
    async with harness() as h:
        csms = await start_csms(h, duplicate_identity="refuse_newer")
        st = await _online(h)
        assert await _status_of(h, "/ocpp/ST-1") == 409
        assert await _status_of(h, "/ocpp/ST-1", password="wrong-password-guess") == 401  # credentials first
        (event,) = [e for e in h.events("upgrade_rejected", "csms") if e.data["status"] == 409]
        assert event.data["station"] == "ST-1"
        rec = csms.stations["ST-1"]
        assert rec.accepted and rec.connected and rec.connections == 1 and st.statistics().connected
        with trio.fail_after(60):
            await csms.call("ST-1", "GetVariables", _get_variables())


async def test_controller_newcomer_waits_for_its_accepted_boot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The same policy at a Local Controller: a newcomer is relayed beside the station's link and takes over
    only once the CSMS accepted its BootNotification; the older link is then closed with 1008."""
    async with harness() as h:
        csms = await h.start_csms()
        lc = await start_controller(h)
        st = await _online(h, host=LC_HOST)
        ws = await _raw(h, "/ocpp/ST-1", host=LC_HOST)
        with trio.fail_after(60):
            answer = await _call(ws, "x1", "Heartbeat", {})
        assert answer[:3] == [4, "x1", "SecurityError"]  # from the CSMS, through the newcomer's own upstream
        assert st.statistics().connected and not h.events("replaced_connection")
        with trio.fail_after(60):
            await lc.call_station("ST-1", "TriggerMessage", {"requestedMessage": "Heartbeat"})
            await csms.call("ST-1", "GetVariables", _get_variables())
        state = lc.stations["ST-1"]
        assert state.connections == 2 and state.relay is not None and state.relay.number == 1
        with trio.fail_after(60):
            answer = await _call(ws, "b1", "BootNotification", _BOOT)
        assert answer[0] == 3 and answer[2]["status"] == "Accepted"
        await trio.sleep(5)  # the older link is closed
        by_node = {e.node: e.data for e in h.events("replaced_connection")}
        assert by_node["LC-1"].pop("peer").startswith("mallory:")  # the newcomer's connection reports it
        assert by_node["LC-1"] == {
            "station": "ST-1",
            "old": 1,
            "old_source": "ST-1",
            "new": 2,
            "new_source": "mallory",
        }
        assert state.relay is not None and state.relay.number == 2
        lost = [e for e in h.events("station_disconnected", "LC-1") if e.data["station"] == "ST-1"]
        assert lost and lost[0].data["reason"] == REPLACED_CLOSE[1]
        await ws.aclose()


async def test_controller_refuse_newer_policy_answers_409(autojump_clock: trio.testing.MockClock) -> None:
    async with harness() as h:
        csms = await h.start_csms()
        lc = await start_controller(h, duplicate_identity="refuse_newer")
        st = await _online(h, host=LC_HOST)
        assert await _status_of(h, "/ocpp/ST-1", host=LC_HOST) == 409
        assert lc.stations["ST-1"].connections == 1 and st.statistics().connected
        assert csms.stations["ST-1"].connections == 1  # no upstream link was opened for the newcomer
        assert lc.statistics().upgrade_rejections == {409: 1}


# ---------------------------------------------------------------- in memory: password guessing


async def test_password_guessing_is_throttled_per_address(autojump_clock: trio.testing.MockClock) -> None:
    async with harness() as h:
        csms = await h.start_csms()
        statuses = [await _status_of(h, "/ocpp/ST-1", password=f"guess-{i:04d}-xxxxxxxx") for i in range(25)]
        assert statuses == [401] * 10 + [429] * 15
        # one event for the streak, not one per refused guess
        (event,) = h.events("auth_throttled", "csms")
        assert event.data["source"] == "mallory"
        assert len(h.events("upgrade_rejected", "csms")) == 10
        # even the right password is refused from that address during the cool-down ...
        assert await _status_of(h, "/ocpp/ST-1") == 429
        # ... while a station from another address connects fine
        await _online(h)
        assert csms.stations["ST-1"].accepted
        assert csms.statistics().upgrade_rejections == {401: 10, 429: 16}
        await trio.sleep(301)
        assert await _status_of(h, "/ocpp/ST-2", user="ST-2") == 101  # cool-down over


async def test_controller_throttles_password_guessing(autojump_clock: trio.testing.MockClock) -> None:
    async with harness() as h:
        await h.start_csms()
        await start_controller(h, station_passwords={"ST-1": PASSWORD})
        statuses = [
            await _status_of(h, "/ocpp/ST-1", host=LC_HOST, password=f"guess-{i:04d}-xxxxxxxx")
            for i in range(12)
        ]
        assert statuses == [401] * 10 + [429] * 2
        assert len(h.events("auth_throttled", "LC-1")) == 1
        await _online(h, host=LC_HOST)


# ---------------------------------------------------------------- in memory: profile 3 certificates


async def test_profile3_refuses_a_server_certificate_with_server_purpose(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """What the evsim PKIs issue: the CSMS certificate carries EKU serverAuth, so the handshake refuses it as a
    station's certificate, with the rule in the reason and the OCPP security event."""
    async with harness() as h:
        await h.start_csms(security_profile=3)
        server = h.pki.root.issue_server(
            CSMS_HOST, now=TEST_NOW, extended_key_usage=[ExtendedKeyUsageOID.SERVER_AUTH]
        )
        h.start_station(CSMS_HOST, security_profile=3, identity=Identity.from_cert_key(server))
        await trio.sleep(60)
        event = h.events("handshake_failed", "csms")[0]
        assert event.data["reason"] == "cert_invalid:purpose"
        assert event.data["security_event"] == "InvalidChargingStationCertificate"
        assert not h.events("booted", "csms")


async def test_profile3_with_station_sub_ca_refuses_the_server_certificate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A server certificate without EKU (as OCPP recommends) is refused once the station sub-CA is configured;
    a station certificate from the sub-CA still gets in."""
    async with harness() as h:
        await start_csms(h, security_profile=3, station_issuers=(h.pki.station_ca.cert,))
        h.start_station(CSMS_HOST, security_profile=3, identity=h.pki.server_identity())
        good = h.start_station("ST-1", security_profile=3)
        with trio.fail_after(600):
            await good.wait_online()
        event = h.events("upgrade_rejected", "csms")[0]
        assert event.data["station"] == CSMS_HOST and event.data["status"] == 401
        assert "station sub-CA" in event.data["reason"]
        assert event.data["security_event"] == "InvalidChargingStationCertificate"
        assert [e.data["station"] for e in h.events("booted", "csms")] == ["ST-1"]


def test_duplicate_policy_is_checked() -> None:
    with pytest.raises(ConfigError, match="duplicate_identity"):
        CsmsConfig(duplicate_identity="both")  # type: ignore[arg-type]


def test_cli_refuses_a_bad_id_prefix_and_warns_about_the_dev_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    init_dev_pki(tmp_path, now=TEST_NOW)
    args = ["stations", "--csms", "wss://localhost:1/ocpp", "--ca", str(tmp_path / "ca.crt")]
    assert main([*args, "--id-prefix", "ST 1/"]) == 2
    err = capsys.readouterr().err
    assert "WARNING: the stations use the public development password" in err
    assert "--id-prefix" in err and "'ST 1/0001'" in err
    with pytest.raises(SystemExit):
        main(["csms", "--help"])
    assert "public development password" in " ".join(capsys.readouterr().out.split())
