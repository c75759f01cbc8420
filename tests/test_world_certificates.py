"""Certificate lifecycle in the world and in scenarios: the world's CSMS signs CSRs with the PKI's station
sub-CA, stations renew over OCPP (A02, A03) with their group's certificate settings, and the world knows which
certificate each station holds."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

import evsim
from evsim.errors import ConfigError
from evsim.nodes.certificates import CertificateSettings
from evsim.recorder import Event
from evsim.scenario.loader import loads_scenario
from evsim.scenario.runner import run_scenario
from evsim.world import World


def _kinds(events: list[Event], kind: str, node: str | None = None) -> list[dict[str, Any]]:
    return [e.data for e in events if e.kind == kind and (node is None or e.node == node)]


async def _until(predicate: Any, step: float = 1.0) -> None:
    """Wait (virtual time) until ``predicate()``: the nodes expose no event for each condition."""
    while not predicate():  # noqa: ASYNC110
        await trio.sleep(step)


async def test_world_csms_signs_with_the_station_sub_ca(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(3600):
        async with evsim.open_world(seed=4) as world:
            main = await world.start_csms("main", security_profile=3, heartbeat_interval=60)
            fleet = await world.start_stations(
                2, csms=main, sessions=0, certificates=CertificateSettings(organization_name="evsim")
            )
            node = fleet.stations[0]
            await node.station.wait_online()
            before = node.certificate
            assert before is not None
            await main.csms.certificates.trigger_message(node.name)
            await _until(lambda: node.certificate is not before)
            after = node.certificate
            assert after is not None and after.cert.issuer == world.pki.station_ca.cert.subject
            assert after.cert.serial_number != before.cert.serial_number
            await _until(lambda: node.station.session is not None)
            events = list(world.recorder.events)
            assert [e["status"] for e in _kinds(events, "certificate_signed", "main")] == ["Accepted"]
            assert _kinds(events, "certificate_signed", "main")[0]["signer"] == "station_sub_ca"
            # the station's next connection presented its new certificate
            switched = _kinds(events, "client_certificate_switched", node.name)
            assert switched and switched[0]["serial"] == format(after.cert.serial_number, "x")


async def test_world_fiat_rotation_after_an_ocpp_renewal_is_used(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A certificate provisioned by the world after an OCPP renewal is the one the next connection uses."""
    with trio.fail_after(3600):
        async with evsim.open_world(seed=4) as world:
            main = await world.start_csms("main", security_profile=3)
            fleet = await world.start_stations(1, csms=main, sessions=0)
            node = fleet.stations[0]
            await node.station.wait_online()
            first = node.certificate
            await main.csms.certificates.trigger_message(node.name)
            await _until(lambda: _switched(world, node.name) == 1)
            renewed = node.certificate
            assert renewed is not first
            world.rotate_certificate(node.name)
            provisioned = node.certificate
            assert provisioned is not None and provisioned is not renewed
            world.reset_links(node.name, "main")
            await trio.sleep(30)
            await _until(lambda: node.station.session is not None)
            opened = [e for e in world.recorder.events if e.kind == "tls_accepted" and e.node == "main"]
            assert opened[-1].data["client"] == node.name
            tls = node.station._station_tls()
            assert tls is not None and tls.identity is not None
            assert tls.identity.chain[0] == provisioned.cert


def _switched(world: World, sid: str) -> int:
    return sum(1 for e in world.recorder.events if e.kind == "client_certificate_switched" and e.node == sid)


A03 = """
[simulation]
seed = 3
duration = "3d"

[pki]
validity = "2d"

[csms.main]
security_profile = 3
heartbeat_interval = "1h"
signing = { max_concurrent = 2, validity = "30d" }

[stations.fleet]
count = 3
id_pattern = "CS-{n}"
sessions = 0
certificates = { renewal_threshold = "1d", sign_wait_minimum = "30s", sign_repeat_times = 2, key_type = "rsa", key_size = 2048 }
"""


def test_scenario_stations_renew_by_themselves_with_their_group_settings() -> None:
    sc = loads_scenario(A03)
    group = sc.stations["fleet"]
    assert group.certificates.renewal_threshold == 86_400
    assert group.certificates.key_type == "rsa" and group.certificates.sign_repeat_times == 2
    assert sc.csms["main"].signing.validity == 30 * 86_400 and sc.csms["main"].signing.max_concurrent == 2
    assert sc.validate() == sc  # the Python document round trip keeps both tables
    result = run_scenario(sc)
    assert result.ok, result.error
    events = list(result.recorder.events)
    signed = _kinds(events, "certificate_signed", "main")
    assert [e["status"] for e in signed] == ["Accepted"] * 3
    started = [e for e in events if e.kind == "renewal_started"]
    assert len(started) == 3 and all(86_400 - 1 <= e.t <= 86_400 + 3600 for e in started)
    world = result.world
    assert world is not None
    for node in world.stations.values():
        cert = node.certificate
        assert cert is not None and cert.cert.issuer == world.pki.station_ca.cert.subject
        assert cert.key.key_size == 2048  # an RSA key, as configured
        assert (cert.cert.not_valid_after_utc - world.clock.start_utc).days >= 30


def test_scenario_station_certificate_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="EC keys") as info:
        loads_scenario(A03.replace('key_type = "rsa", key_size = 2048', "key_size = 2048"))
    assert info.value.path == "stations.fleet.certificates.key_size"
    with pytest.raises(ConfigError, match="did you mean"):
        loads_scenario(A03.replace("sign_repeat_times", "sign_repeats"))


# ---------------------------------------------------------------------------- timeline actions over OCPP

LIFECYCLE = """
[simulation]
seed = 11
duration = "2h"

[pki.roots.next]

[csms.main]
security_profile = 3
heartbeat_interval = "10m"

[stations.fleet]
count = 6
id_pattern = "CS-{n}"
sessions = 0
retry_backoff = { wait_minimum = "5s", random_range = "5s", repeat_times = 2 }
certificates = { sign_wait_minimum = "60s", sign_repeat_times = 2 }

[[links]]
between = ["fleet", "main"]
reset = { every = "20m" }
"""


def _timeline(*entries: str) -> str:
    return LIFECYCLE + "".join(f"\n[[timeline]]\n{e}\n" for e in entries)


def test_trigger_renewal_spreads_over_its_window() -> None:
    sc = loads_scenario(_timeline('at = "5m"\naction = "trigger_renewal"\ntarget = "main"\nspread = "10m"'))
    result = run_scenario(sc)
    assert result.ok, result.error
    events = list(result.recorder.events)
    triggers = [e for e in events if e.kind == "certificate_call" and e.data["action"] == "TriggerMessage"]
    assert len(triggers) == 6 and {e.data["status"] for e in triggers} == {"Accepted"}
    times = sorted(e.t for e in triggers)
    assert times[0] >= 300 and times[-1] < 900 and times[-1] - times[0] > 60  # spread, not at one instant
    assert [e.data["status"] for e in events if e.kind == "certificate_signed"] == ["Accepted"] * 6
    assert len([e for e in events if e.kind == "client_certificate_switched"]) == 6
    assert result.world is not None
    (row,) = result.world.summary().table("Certificate renewal").rows
    assert row[:3] == ("main", 6, 6) and float(row[7]) > 0  # CSRs accepted, signed, signed per second
    (renewals,) = result.world.summary().table("Station renewals").rows
    assert renewals[:3] == ("main", 6, 6) and 0 < float(renewals[3]) < 60  # triggered, renewed, p50 latency


def test_install_switch_and_delete_roots_over_ocpp() -> None:
    sc = loads_scenario(
        _timeline(
            'at = "1m"\naction = "stop"\ntarget = "CS-6"',
            'at = "5m"\naction = "install_certificate"\ntarget = "fleet"\nroot = "next"\nspread = "1m"',
            'at = "10m"\naction = "start"\ntarget = "CS-6"',
            'at = "15m"\naction = "switch_server_certificate"\ntarget = "main"\nroot = "next"',
            'at = "30m"\naction = "delete_certificate"\ntarget = "fleet"\nroot = "root"',
        )
    )
    result = run_scenario(sc)
    assert result.ok, result.error
    events = list(result.recorder.events)
    missed = [e.data for e in events if e.kind == "certificate_not_sent"]
    assert missed == [  # CS-6 was stopped during the install, and cannot connect to the new hierarchy since
        {"action": "install_certificate", "station": "CS-6", "reason": "station offline"},
        {"action": "delete_certificate", "station": "CS-6", "reason": "station offline"},
    ]
    installed = {e.node for e in events if e.kind == "certificate_installed"}
    assert installed == {f"CS-{n}" for n in range(1, 6)}
    # after the switch (and the link reset at 20 min) the five that got the root reconnect, CS-6 cannot
    after = [e for e in events if e.t > 20 * 60]
    ok = {e.node for e in after if e.kind == "handshake_ok"}
    assert ok == {f"CS-{n}" for n in range(1, 6)}
    refused = {e.data["reason"] for e in after if e.kind == "handshake_failed" and e.node == "CS-6"}
    assert refused == {"cert_invalid:unknown_ca"}
    deleted = {e.node for e in events if e.kind == "certificate_deleted"}
    assert deleted == {f"CS-{n}" for n in range(1, 6)}
    # the old root is gone and the new one is what the stations trust: service continues at the 40 min reset
    boots = {e.data["station"] for e in events if e.kind == "booted" and e.node == "main" and e.t > 40 * 60}
    assert boots == {f"CS-{n}" for n in range(1, 6)}
    assert result.world is not None
    failures = result.world.summary().table("Certificate failures").rows
    assert (
        "timeline",
        "certificate_not_sent (install_certificate)",
        "station offline",
        1,
        "CS-6",
    ) in failures


def test_degrade_ca_fails_signing_and_the_station_resends() -> None:
    sc = loads_scenario(
        _timeline(
            'at = "1m"\naction = "degrade_ca"\ntarget = "main"\ndelay = "10s"\nfailure_rate = 1.0',
            'at = "2m"\naction = "trigger_renewal"\ntarget = "CS-1"',
            'at = "4m"\naction = "degrade_ca"\ntarget = "main"',
        )
    )
    result = run_scenario(sc)
    assert result.ok, result.error
    events = list(result.recorder.events)
    failed = [e for e in events if e.kind == "csr_signing_failed"]
    assert failed and {e.data["reason"] for e in failed} == {"ca_unavailable"}
    assert all(e.t >= 120 + 10 for e in failed)  # after the CA's delay
    signed = [e for e in events if e.kind == "certificate_signed" and e.data["status"] == "Accepted"]
    assert len(signed) == 1 and signed[0].t >= 240  # the resend after the CA recovered was signed
    assert [e.node for e in events if e.kind == "client_certificate_switched"] == ["CS-1"]


def test_lifecycle_actions_are_checked_when_loading() -> None:
    with pytest.raises(ConfigError, match="failure_rate"):
        loads_scenario(_timeline('at = "1m"\naction = "degrade_ca"\ntarget = "main"\nfailure_rate = 2'))
    with pytest.raises(ConfigError, match="did you mean"):
        loads_scenario(_timeline('at = "1m"\naction = "install_certificate"\ntarget = "fleet"\nroot = "nxt"'))
    with pytest.raises(ConfigError, match="type"):
        loads_scenario(
            _timeline(
                'at = "1m"\naction = "install_certificate"\ntarget = "fleet"\nroot = "next"\ntype = "V2G"'
            )
        )
    with pytest.raises(ConfigError, match="30 days"):
        loads_scenario(_timeline('at = "1m"\naction = "trigger_renewal"\ntarget = "fleet"\nspread = "31d"'))


# ---------------------------------------------------------------------------- station certificate revocation

REVOCATION = """
[simulation]
seed = 5
duration = "40m"

[tls.trust.stations]
revocation = {{ {check} }}

[csms.main]
security_profile = 3
heartbeat_interval = "5m"
client_trust = "stations"

[stations.renewed]
count = 2
id_pattern = "REN-{{n}}"
sessions = 0
retry_backoff = {{ wait_minimum = "20s", random_range = "10s", repeat_times = 2 }}

[stations.lost]
count = 2
id_pattern = "LOST-{{n}}"
sessions = 0
retry_backoff = {{ wait_minimum = "20s", random_range = "10s", repeat_times = 2 }}

[stations.good]
count = 2
id_pattern = "GOOD-{{n}}"
sessions = 0

[[links]]
between = ["*", "main"]
reset = {{ every = "10m" }}

[[timeline]]
at = "5m"
action = "revoke_certificate"
target = "renewed"

[[timeline]]
at = "5m"
action = "revoke_certificate"
target = "lost"

[[timeline]]
at = "6m"
action = "trigger_renewal"
target = "renewed"

[[timeline]]
at = "25m"
action = "rotate_certificate"
target = "lost"
"""


@pytest.mark.parametrize(
    ("check", "refusal"),
    [
        ('crl = "leaf"', ("handshake_failed", "cert_invalid:revoked")),
        ('ocsp = "require"', ("upgrade_rejected", "certificate revoked (OCSP)")),
    ],
)
def test_revoked_stations_are_refused_until_renewed(check: str, refusal: tuple[str, str]) -> None:
    result = run_scenario(loads_scenario(REVOCATION.format(check=check)))
    assert result.ok, result.error
    events = list(result.recorder.events)
    kind, reason = refusal
    refused = [e for e in events if e.node == "main" and e.kind == kind]
    assert refused and {e.data["reason"] for e in refused} == {reason}
    assert {e.data["security_event"] for e in refused} == {"InvalidChargingStationCertificate"}
    assert all(10 * 60 <= e.t < 25 * 60 + 60 for e in refused)  # from the reset after the revocation
    if kind == "upgrade_rejected":
        assert {e.data["station"] for e in refused} == {"LOST-1", "LOST-2"}
    else:  # the handshake refusal names the peer (the station's host)
        assert {e.data["peer"].split(":")[0] for e in refused} == {"LOST-1", "LOST-2"}
    # the renewed stations got fresh certificates over their open sessions and were never refused
    switched = sorted(e.node for e in events if e.kind == "client_certificate_switched")
    assert switched == ["REN-1", "REN-2"]
    boots = {e.data["station"] for e in events if e.kind == "booted" and e.node == "main" and e.t > 30 * 60}
    assert boots == {"REN-1", "REN-2", "LOST-1", "LOST-2", "GOOD-1", "GOOD-2"}  # every one back after 30 min


def test_client_trust_is_checked_when_loading() -> None:
    text = REVOCATION.format(check='crl = "leaf"')
    with pytest.raises(ConfigError, match="security profile 3"):
        loads_scenario(text.replace("security_profile = 3\n", ""))
    with pytest.raises(ConfigError, match="did you mean"):
        loads_scenario(text.replace('client_trust = "stations"', 'client_trust = "station"'))


CONTROLLER_REVOCATION = """
[simulation]
seed = 6
duration = "20m"

[tls.trust.stations]
revocation = { ocsp = "request", crl = "leaf" }

[csms.main]
heartbeat_interval = "5m"

[controllers.lc]
security_profile = 3
client_trust = "stations"
upstream = [{ csms = "main" }]

[stations.site]
count = 3
id_pattern = "SITE-{n}"
sessions = 0
endpoints = [{ controller = "lc" }]
retry_backoff = { wait_minimum = "20s", random_range = "10s", repeat_times = 2 }

[[links]]
between = ["site", "lc"]
reset = { every = "10m" }

[[timeline]]
at = "5m"
action = "revoke_certificate"
target = "SITE-2"
"""


def test_a_controller_refuses_a_revoked_station() -> None:
    sc = loads_scenario(CONTROLLER_REVOCATION)
    assert sc.controllers["lc"].client_trust == "stations"
    result = run_scenario(sc)
    assert result.ok, result.error
    events = list(result.recorder.events)
    refused = [e for e in events if e.node == "lc" and e.kind == "handshake_failed"]
    assert refused and {e.data["peer"].split(":")[0] for e in refused} == {"SITE-2"}
    assert {e.data["reason"] for e in refused} == {"cert_invalid:revoked"}
    back = {e.data["station"] for e in events if e.kind == "booted" and e.node == "main" and e.t > 10 * 60}
    assert back == {"SITE-1", "SITE-3"}


# ---------------------------------------------------------------------------- expiry monitoring

EXPIRY = """
[simulation]
seed = 8
duration = "3d"

[pki]
expiry_warning = "2d"
validity = "30d"

[csms.main]
security_profile = 3
heartbeat_interval = "1h"
certificate = { validity = "2d12h" }

[stations.fleet]
count = 2
id_pattern = "CS-{n}"
sessions = 0
certificates = { renewal_threshold = "1d" }

[stations.late]
count = 1
id_pattern = "LATE-{n}"
sessions = 0
certificates = { renewal_threshold = "1d" }

[[timeline]]
at = "1h"
action = "stop"
target = "late"

[[timeline]]
at = "1d"
action = "renew_certificate"
target = "main"
validity = "10d"
"""


def test_every_node_warns_before_its_own_and_its_peers_certificates_expire() -> None:
    sc = loads_scenario(EXPIRY)
    assert sc.pki.expiry_warning == 2 * 86_400
    result = run_scenario(sc)
    assert result.ok, result.error
    warnings = [e for e in result.recorder.events if e.kind == "cert_expiring"]
    # the CSMS certificate (notAfter 2.5 d) is due at 0.5 d: the CSMS (own) and each connected station (peer)
    first = {(e.node, e.data["role"]) for e in warnings if e.t == 43_200}
    assert first == {("main", "own"), ("CS-1", "peer"), ("CS-2", "peer")}  # LATE-1 is stopped by then
    assert all(
        e.data["subject"] == "main.evsim.test" and e.data["expires_in"] == 2 * 86_400
        for e in warnings
        if e.t == 43_200
    )
    # the renewal at 1 d replaced it: no more warnings for it; the new certificate (10 d) is not due in the run.
    # The stations' own certificates (30 d) are not due either.
    assert all(e.t == 43_200 for e in warnings)
    summary = result.world.summary() if result.world is not None else None
    assert summary is not None
    rows = summary.table("Certificates expiring").rows
    assert {(r[0], r[1]) for r in rows} == first
    text = summary.render()
    assert "Certificates expiring" in text


def test_a_renewed_certificate_replaces_a_pending_warning() -> None:
    # the stations' own certificates expire at 30 d; warned 29 d before: due at 1 d. The A03 renewals (threshold
    # 29.5 d) at 0.5 d replace them first, so no station warns about its own certificate
    text = EXPIRY.replace('expiry_warning = "2d"', 'expiry_warning = "29d"').replace(
        'renewal_threshold = "1d"', 'renewal_threshold = "29d12h"'
    )
    result = run_scenario(loads_scenario(text))
    assert result.ok, result.error
    events = list(result.recorder.events)
    renewed = {e.node for e in events if e.kind == "client_certificate_switched"}
    assert renewed == {"CS-1", "CS-2"}  # LATE-1 was stopped at 1 h
    own = [e for e in events if e.kind == "cert_expiring" and e.data["role"] == "own" and e.node != "main"]
    assert own == []  # replaced before due; LATE-1's was due while it was stopped
    # the CSMS met the old station certificates; the renewed ones replaced their warnings (due at 1 d), and
    # LATE-1's, which it never renewed, is due at 1 d
    of_stations = [
        e for e in events if e.kind == "cert_expiring" and e.node == "main" and e.data["role"] == "peer"
    ]
    assert [e.data["peer"] for e in of_stations] == ["LATE-1"]
    assert abs(of_stations[0].t - 86_400) < 1e-3


async def test_revoking_a_station_without_a_certificate_is_recorded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(600):
        async with evsim.open_world(seed=2) as world:
            main = await world.start_csms("main")  # profile 2: stations hold no client certificate
            fleet = await world.start_stations(1, csms=main, sessions=0)
            world.revoke_certificate(fleet)
            (event,) = [e for e in world.recorder.events if e.kind == "certificate_not_revoked"]
            assert event.data == {"station": fleet.ids[0], "reason": "no certificate"}
