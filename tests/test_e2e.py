"""End to end on the in-memory network, in virtual time: a CSMS and stations over real TLS.

Every refusal case checks: a specific reason on both sides, the matching OCPP security event queued by the
station (where OCPP defines one), and an honest station next to it completing its session untouched.
"""

from __future__ import annotations

import datetime as dt
import random

import pytest
import trio
import trio.testing

from evsim.errors import ConfigError
from evsim.nodes.csms import Csms, CsmsConfig
from evsim.nodes.station import Station
from evsim.nodes.station_model import StationConfig
from evsim.tls import ClientTls, Identity, ServerTls, TlsProfile, TrustStore
from tests.e2e_harness import Harness, harness
from tests.pki_fixtures import CSMS_HOST, TEST_NOW

TLS13_ONLY = TlsProfile(versions=("1.3",))
TLS12_ONLY = TlsProfile(versions=("1.2",))


async def _until_done(*stations: Station, limit: float = 3600) -> None:
    with trio.fail_after(limit):
        for st in stations:
            await st.done.wait()


def _queued_types(station: Station) -> list[str]:
    return [m.payload["type"] for m in station.queue.messages() if m.action == "SecurityEventNotification"]


def _assert_refused(h: Harness, station: Station, reason_prefix: str, security_event: str | None) -> None:
    failures = h.events("handshake_failed", station.name) + h.events("connection_lost", station.name)
    assert failures, f"{station.name} was not refused"
    assert any(e.data["reason"].startswith(reason_prefix) for e in failures), [e.data for e in failures]
    assert not station.booted
    if security_event is not None:
        assert security_event in _queued_types(station)
        # queued once per failure streak, not once per attempt
        assert _queued_types(station).count(security_event) == 1
        assert len(failures) >= 2


async def test_happy_path_profile2(autojump_clock: trio.testing.MockClock) -> None:
    async with harness() as h:
        await h.start_csms()
        stations = [h.start_station(f"ST-{i}") for i in range(3)]
        await _until_done(*stations)
        stats = h.csms.statistics()
        assert stats.transactions_started == stats.transactions_ended == 3
        assert stats.duplicate_tx_events == 0
        for st in stations:
            assert st.tls_info is not None
            assert st.tls_info.version == "TLSv1.3"
            rec = h.csms.stations[st.name]
            (tx,) = rec.transactions.values()
            assert tx.gap_free()
            assert tx.energy_wh > 0


async def test_happy_path_profile3_mutual_tls(autojump_clock: trio.testing.MockClock) -> None:
    async with harness() as h:
        await h.start_csms(security_profile=3)
        st = h.start_station("ST-1", security_profile=3)
        await _until_done(st)
        assert h.csms.stations["ST-1"].serial_from_cert == "ST-1"


async def test_unknown_ca(autojump_clock: trio.testing.MockClock) -> None:
    async with harness() as h:
        await h.start_csms()
        good = h.start_station("ST-good")
        evil_trust = TrustStore("evil-only", (h.pki.evil.cert,))
        bad = h.start_station("ST-bad", client_tls=ClientTls.build(TlsProfile(), evil_trust))
        await _until_done(good)
        await trio.sleep(60)
        _assert_refused(h, bad, "cert_invalid:unknown_ca", "InvalidCsmsCertificate")
        assert any(e.data["reason"].startswith("peer_alert") for e in h.events("handshake_failed", "csms"))


async def test_server_certificate_expires_in_virtual_time(autojump_clock: trio.testing.MockClock) -> None:
    """The CSMS certificate expires two hours into the run: connected stations keep their session, a station
    connecting after that refuses it (expired, at the simulation's time), and after renewal it connects and
    delivers the queued InvalidCsmsCertificate event."""
    async with harness() as h:
        # issued a day before, valid for one day: it expires two hours into the run
        two_hours = h.pki.root.issue_server(
            CSMS_HOST, now=TEST_NOW + dt.timedelta(hours=2) - dt.timedelta(days=1), days=1
        )
        csms = await h.start_csms(identity=Identity.from_cert_key(two_hours))
        early = h.start_station("ST-early")
        await _until_done(early)
        await trio.sleep(3 * 3600 - h.clock.elapsed())
        late = h.start_station("ST-late")
        await trio.sleep(120)
        _assert_refused(h, late, "cert_invalid:expired", "InvalidCsmsCertificate")
        assert early.session is not None  # untouched: still connected and heartbeating
        hb = early.heartbeats
        await trio.sleep(130)
        assert early.heartbeats > hb
        # renewal: new connections get a valid certificate; the late station connects and reports
        csms.server_tls = ServerTls.build(TlsProfile(), h.pki.server_identity())
        await _until_done(late)
        received = [e["type"] for e in csms.stations["ST-late"].security_events]
        assert received == ["InvalidCsmsCertificate"]


async def test_hostname_mismatch(autojump_clock: trio.testing.MockClock) -> None:
    async with harness() as h:
        await h.start_csms()
        # a second listener under another name presenting the csms.evsim.test certificate
        await h.start_csms(host="alias.evsim.test", name="alias")
        good = h.start_station("ST-good")
        bad = h.start_station("ST-bad", host="alias.evsim.test")
        await _until_done(good)
        await trio.sleep(60)
        _assert_refused(h, bad, "cert_invalid:hostname_mismatch", "InvalidCsmsCertificate")


async def test_wildcard_certificate_refused_unless_allowed(autojump_clock: trio.testing.MockClock) -> None:
    async with harness() as h:
        wildcard = h.pki.root.issue_server("*.evsim.test", now=TEST_NOW)
        await h.start_csms()
        await h.start_csms(host="wild.evsim.test", identity=Identity.from_cert_key(wildcard), name="wild")
        good = h.start_station("ST-good")
        bad = h.start_station("ST-bad", host="wild.evsim.test")
        allowed = h.start_station(
            "ST-allowed",
            host="wild.evsim.test",
            client_tls=ClientTls.build(TlsProfile(), h.pki.csms_trust(wildcards="allow")),
        )
        await _until_done(good, allowed)
        await trio.sleep(60)
        _assert_refused(h, bad, "cert_invalid:wildcard", "InvalidCsmsCertificate")


async def test_profile3_station_without_client_certificate(autojump_clock: trio.testing.MockClock) -> None:
    async with harness() as h:
        await h.start_csms(security_profile=3)
        good = h.start_station("ST-good", security_profile=3)
        bad = h.start_station(
            "ST-bad", security_profile=3, client_tls=ClientTls.build(TlsProfile(), h.pki.csms_trust())
        )
        await _until_done(good)
        await trio.sleep(60)
        _assert_refused(h, bad, "", None)
        assert not bad.booted
        server_reasons = {e.data["reason"] for e in h.events("handshake_failed", "csms")}
        assert "cert_invalid:no_client_cert" in server_reasons
        assert any(
            e.data["security_event"] == "InvalidChargingStationCertificate"
            for e in h.events("handshake_failed", "csms")
        )


async def test_profile3_certificate_cn_mismatch(autojump_clock: trio.testing.MockClock) -> None:
    async with harness() as h:
        await h.start_csms(security_profile=3)
        good = h.start_station("ST-good", security_profile=3)
        bad = h.start_station("ST-bad", security_profile=3, identity=h.pki.station_identity("ST-other"))
        await _until_done(good)
        await trio.sleep(60)
        _assert_refused(h, bad, "http_401", "FailedToAuthenticateAtCsms")
        rejections = h.events("upgrade_rejected", "csms")
        assert any("CN" in e.data["reason"] and e.data["station"] == "ST-bad" for e in rejections)


async def test_wrong_password(autojump_clock: trio.testing.MockClock) -> None:
    async with harness() as h:
        await h.start_csms()
        good = h.start_station("ST-good")
        bad = h.start_station("ST-bad", password="not-the-right-password")
        await _until_done(good)
        await trio.sleep(60)
        _assert_refused(h, bad, "http_401", "FailedToAuthenticateAtCsms")
        assert any(e.data["reason"] == "wrong password" for e in h.events("upgrade_rejected", "csms"))


async def test_tls12_only_station_against_tls13_only_csms(autojump_clock: trio.testing.MockClock) -> None:
    async with harness() as h:
        await h.start_csms(profile=TLS13_ONLY)
        good = h.start_station("ST-good")
        bad = h.start_station("ST-bad", profile=TLS12_ONLY)
        await _until_done(good)
        await trio.sleep(60)
        _assert_refused(h, bad, "downgrade_refused", "InvalidTLSVersion")
        server = h.events("handshake_failed", "csms")
        assert any(e.data["reason"] == "downgrade_refused" for e in server)
        assert good.tls_info is not None
        assert good.tls_info.version == "TLSv1.3"


async def test_peer_that_stalls_the_handshake(autojump_clock: trio.testing.MockClock) -> None:
    """A client that connects and sends nothing is dropped after the handshake timeout; others unaffected."""
    async with harness() as h:
        await h.start_csms()
        good = h.start_station("ST-good")
        stalled = await h.net.connect(CSMS_HOST, 443, source="staller")
        await _until_done(good)
        reasons = [e.data["reason"] for e in h.events("handshake_failed", "csms")]
        assert reasons == ["timeout"]
        await stalled.aclose()


async def test_station_against_a_csms_that_stalls(autojump_clock: trio.testing.MockClock) -> None:
    async with harness() as h:
        listener = await h.net.listen("silent.evsim.test", 443)
        accepted: list[trio.abc.Stream] = []

        async def hold() -> None:
            while True:
                accepted.append(await listener.accept())

        h.nursery.start_soon(hold)
        st = h.start_station("ST-1", host="silent.evsim.test")
        await trio.sleep(60)
        failures = h.events("handshake_failed", "ST-1")
        assert failures
        assert failures[0].data["reason"] == "timeout"
        assert not st.booted


async def test_offline_transactions_are_queued_and_delivered(autojump_clock: trio.testing.MockClock) -> None:
    async with harness() as h:
        await h.start_csms()
        st = h.start_station("ST-1")
        with trio.fail_after(600):
            await st.wait_online()
        h.net.partition("ST-1", CSMS_HOST)
        await trio.sleep(300)  # the whole session happens while partitioned
        assert not st.booted
        assert len(st.queue) > 0
        h.net.heal("ST-1", CSMS_HOST)
        await _until_done(st)
        (tx,) = h.csms.stations["ST-1"].transactions.values()
        assert tx.started
        assert tx.ended
        assert tx.gap_free()
        assert tx.offline_events > 0


async def test_profile1_plain_ws_only_when_explicitly_allowed(autojump_clock: trio.testing.MockClock) -> None:
    async with harness() as h:
        with pytest.raises(ConfigError, match="insecure_allow_plain_ws"):
            Csms(
                CsmsConfig(security_profile=1),
                network=h.net,
                server_tls=None,
                clock=h.clock,
                recorder=h.recorder,
            )
        csms = Csms(
            CsmsConfig(
                host="plain.evsim.test",
                port=80,
                security_profile=1,
                insecure_allow_plain_ws=True,
                default_password="correct-horse-battery-staple",
            ),
            network=h.net,
            server_tls=None,
            clock=h.clock,
            recorder=h.recorder,
        )
        await h.nursery.start(csms.run)
        st = Station(
            StationConfig(
                station_id="ST-plain",
                csms_url="ws://plain.evsim.test/ocpp",
                security_profile=1,
                password="correct-horse-battery-staple",
                session_start_s=(1, 2),
                session_duration_s=60,
            ),
            network=h.net,
            client_tls=None,
            clock=h.clock,
            recorder=h.recorder,
            rng=random.Random(1),
        )
        h.nursery.start_soon(st.run)
        await _until_done(st)
        assert csms.stations["ST-plain"].tls is None
        assert st.tls_info is None


async def test_insecure_skip_verify_connects_to_an_untrusted_csms_and_warns(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with harness() as h:
        await h.start_csms(identity=Identity.from_cert_key(h.pki.evil_server))
        strict = h.start_station("ST-strict")
        insecure = h.start_station(
            "ST-insecure",
            client_tls=ClientTls.build(TlsProfile(), TrustStore("dev", (), insecure_skip_verify=True)),
        )
        await _until_done(insecure)
        _assert_refused(h, strict, "cert_invalid:unknown_ca", "InvalidCsmsCertificate")
        assert any("insecure_skip_verify" in r.getMessage() for r in caplog.records)


async def test_heartbeat_only_after_inactivity(autojump_clock: trio.testing.MockClock) -> None:
    """G02: a Heartbeat is sent after HeartbeatInterval (60 s here) of inactivity; meter values every 30 s during
    the 120 s session keep the link busy, so no Heartbeat is sent while charging."""
    async with harness() as h:
        await h.start_csms()
        st = h.start_station("ST-1")
        await _until_done(st)
        await trio.sleep(200)
        sent = [e.t for e in h.events("tx_event", "csms")]
        session = (min(sent), max(sent))
        beats = st.heartbeats
        assert beats >= 3  # idle after the session: roughly one a minute
        # no heartbeat was needed while the session produced a message at least every 30 s
        assert h.csms.stations["ST-1"].heartbeats == beats
        assert session[1] - session[0] >= 120
        assert beats <= 200 // 60 + 1
