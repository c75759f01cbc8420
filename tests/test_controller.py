"""Local Controller end to end: stations → LC (→ LC) → CSMS over the virtual network, real TLS on every hop,
virtual time. OCPP-J §6 (protocol-digest §4) and the errata exception (ERR-201 §4.13)."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
import trio
import trio.testing

from evsim.backoff import RetryBackOff
from evsim.errors import ConfigError, WebSocketClosed
from evsim.link.service import Endpoint, EndpointPlanner, Service
from evsim.nodes.admission import TrustedController
from evsim.nodes.controller import ControllerConfig, LocalController, UpstreamLossPolicy
from evsim.nodes.csms import Csms, CsmsConfig
from evsim.nodes.station import Station
from evsim.tls import ClientTls, Identity, ServerTls, TlsProfile, tls_connect
from evsim.ws import WebSocket, ws_client
from evsim.ws.auth import basic_auth_header
from evsim.ws.paths import station_path
from tests.e2e_harness import PASSWORD, Harness, harness
from tests.pki_fixtures import CSMS_HOST, TEST_NOW, make_test_pki

LC_HOST = "lc.evsim.test"
LC2_HOST = "lc2.evsim.test"
_BACKOFF = RetryBackOff(wait_minimum=5, random_range=2, repeat_times=3)
_BOOT = {"reason": "PowerUp", "chargingStation": {"model": "m", "vendorName": "v"}}


async def _until_done(*stations: Station, limit: float = 3600) -> None:
    with trio.fail_after(limit):
        for st in stations:
            await st.done.wait()


def _upstream(
    h: Harness,
    *,
    host: str = CSMS_HOST,
    identity: Identity | None = None,
    backoff: RetryBackOff = _BACKOFF,
) -> Service:
    return Service(
        "csms",
        (Endpoint("primary", f"wss://{host}/ocpp", trust=h.pki.csms_trust(), identity=identity),),
        backoff=backoff,
    )


async def start_controller(
    h: Harness,
    *,
    name: str = "LC-1",
    host: str = LC_HOST,
    upstream: Service | None = None,
    security_profile: int = 2,
    upstream_identity: Identity | None = None,
    on_upstream_loss: UpstreamLossPolicy = "close_station",
    **extra: Any,
) -> LocalController:
    """A controller with its own server certificate (CN = its FQDN, issued by the CSO root, OCPP-J §6.5)."""
    server = h.pki.root.issue_server(host, now=TEST_NOW)
    lc = LocalController(
        ControllerConfig(
            name=name,
            host=host,
            security_profile=security_profile,
            identity=Identity.from_cert_key(server),
            client_trust=h.pki.station_trust() if security_profile == 3 else None,
            upstream=upstream or _upstream(h, identity=upstream_identity),
            on_upstream_loss=on_upstream_loss,
            **extra,
        ),
        network=h.net,
        clock=h.clock,
        recorder=h.recorder,
    )
    await h.nursery.start(lc.run)
    return lc


async def start_csms(h: Harness, **config: Any) -> Csms:
    """A CSMS with extra configuration (the harness's start_csms has fixed settings)."""
    sp = config.get("security_profile", 2)
    ident = h.pki.server_identity()
    if sp == 3:
        server_tls = ServerTls.build(TlsProfile(), ident, trust=h.pki.station_trust(), client_auth="required")
    else:
        server_tls = ServerTls.build(TlsProfile(), ident)
    csms = Csms(
        CsmsConfig(host=CSMS_HOST, port=443, heartbeat_interval=60, default_password=PASSWORD, **config),
        network=h.net,
        server_tls=server_tls,
        clock=h.clock,
        recorder=h.recorder,
    )
    await h.nursery.start(csms.run)
    h.csms_nodes.append(csms)
    return csms


async def start_trusting_csms(h: Harness, *controllers: str) -> Csms:
    """A profile 3 CSMS that trusts the named controllers (O = evsim) to carry other identities."""
    return await start_csms(
        h,
        security_profile=3,
        behind_controller="trust_controller",
        trusted_controllers=tuple(TrustedController("evsim", cn) for cn in controllers),
    )


async def start_sp3_controller(h: Harness, name: str = "LC-1", **extra: Any) -> LocalController:
    """A profile 3 controller whose upstream client certificate is its own (CN = ``name``)."""
    return await start_controller(
        h, name=name, security_profile=3, upstream_identity=h.pki.station_identity(name), **extra
    )


async def _keeping_controller_cut_from_the_csms(h: Harness) -> tuple[LocalController, Station]:
    """A keep_station controller with one online station behind it, then cut from the CSMS."""
    await h.start_csms()
    lc = await start_controller(h, on_upstream_loss="keep_station")
    st = h.start_station("ST-1", host=LC_HOST)
    with trio.fail_after(600):
        await st.wait_online()
    h.net.partition(LC_HOST, CSMS_HOST)
    return lc, st


def _csms_sees_connected(csms: Csms, station_id: str) -> bool:
    return csms.stations[station_id].connected


def _assert_like_direct(csms: Csms, *stations: Station) -> None:
    for st in stations:
        rec = csms.stations[st.name]
        assert rec.accepted and rec.boots >= 1
        (tx,) = rec.transactions.values()
        assert tx.started and tx.ended and tx.gap_free()
        assert tx.energy_wh > 0
        assert rec.connectors[(1, 1)] == "Available"


# ---------------------------------------------------------------- relaying


async def test_stations_behind_a_controller_look_like_direct_ones(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with harness() as h:
        await h.start_csms()
        lc = await start_controller(h)
        behind = [h.start_station(f"ST-{i}", host=LC_HOST) for i in range(3)]
        direct = h.start_station("ST-direct")
        await _until_done(*behind, direct)
        await trio.sleep(200)  # idle: heartbeats end to end
        _assert_like_direct(h.csms, *behind, direct)
        for st in behind:
            assert st.heartbeats >= 2
            assert h.csms.stations[st.name].heartbeats == st.heartbeats
            assert h.csms.stations[st.name].via_controller is None  # profile 2: nothing tells the CSMS
        stats = lc.statistics()
        assert stats.stations_connected == 3
        assert stats.relays_total == 3
        for st in behind:
            s = stats.stations[st.name]
            assert s.connected and s.upstream_up and s.upstream_endpoint == "primary"
            assert s.connections == s.upstream_connects == 1
            assert s.relay is not None
            # everything the station sent reached the CSMS, every answer came back
            assert s.frames_up == sum(st.messages_sent.values()) == s.relay.relayed_to_csms
            assert s.frames_down == s.frames_up == s.relay.relayed_to_station
            assert s.relay.own_calls == 0 and s.answered_locally == 0
        assert "ST-direct" not in stats.stations


async def test_csms_initiated_calls_are_relayed(autojump_clock: trio.testing.MockClock) -> None:
    async with harness() as h:
        await h.start_csms()
        await start_controller(h)
        st = h.start_station("ST-1", host=LC_HOST, sessions=0)
        with trio.fail_after(600):
            await st.wait_online()
        resp = await h.csms.call(
            "ST-1",
            "GetVariables",
            {"getVariableData": [{"component": {"name": "SecurityCtrlr"}, "variable": {"name": "Identity"}}]},
        )
        assert resp["getVariableResult"][0]["attributeValue"] == "ST-1"


async def test_wrong_password_is_refused_by_the_csms_through_the_controller(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The controller forwards the station's Basic auth: the CSMS checks it and refuses, the controller closes
    the station's link (1008); an honest station beside it is untouched."""
    async with harness() as h:
        await h.start_csms()
        lc = await start_controller(h)
        good = h.start_station("ST-good", host=LC_HOST)
        bad = h.start_station("ST-bad", host=LC_HOST, password="not-the-right-password")
        await _until_done(good)
        await trio.sleep(60)
        assert not bad.booted
        assert any(e.data["reason"] == "ws_closed_1008" for e in h.events("connection_lost", "ST-bad"))
        assert any(
            e.data["station"] == "ST-bad" and e.data["reason"] == "wrong password"
            for e in h.events("upgrade_rejected", "csms")
        )
        assert lc.statistics().upstream_failures.get("http_401", 0) >= 1


async def test_upstream_failover_to_second_endpoint(autojump_clock: trio.testing.MockClock) -> None:
    async with harness() as h:
        await h.start_csms()
        service = Service(
            "csms",
            (
                Endpoint("down", "wss://down.evsim.test/ocpp", priority=0, trust=h.pki.csms_trust()),
                Endpoint("primary", f"wss://{CSMS_HOST}/ocpp", priority=1, trust=h.pki.csms_trust()),
            ),
            backoff=RetryBackOff(wait_minimum=1, random_range=0, repeat_times=0),
        )
        lc = await start_controller(h, upstream=service)
        st = h.start_station("ST-1", host=LC_HOST)
        await _until_done(st)
        s = lc.statistics()
        assert s.stations["ST-1"].upstream_endpoint == "primary"
        assert s.upstream_failures["refused"] >= 1


async def test_malformed_frames_get_the_csms_answer_a_direct_station_gets(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A malformed frame is relayed as it is; the CSMS answers it, so a station behind the controller gets the
    very same CALLERROR as a direct one - also for a text that is not JSON (RpcFrameworkError, id "-1")."""
    async with harness() as h:
        await h.start_csms()
        await start_controller(h)
        frames = [
            json.dumps([2, "m1", "Heartbeat", {"unexpected": 1}]),  # schema violation
            "this is not JSON",
            json.dumps([2, 17, "Heartbeat", {}]),  # unreadable id
            json.dumps([2, "m2", "NoSuchAction", {}]),
        ]
        answers: dict[str, list[str]] = {}
        for host, sid in ((CSMS_HOST, "RAW-direct"), (LC_HOST, "RAW-behind")):
            with trio.fail_after(60):
                ws = await _raw_client(h, host, sid)
                got = []
                for text in frames:
                    await ws.send_text(text)
                    got.append(await ws.receive_text())
                answers[host] = got
                await ws.aclose()
        assert answers[LC_HOST] == answers[CSMS_HOST]
        codes = [json.loads(a)[:3] for a in answers[LC_HOST]]
        assert codes[1] == [4, "-1", "RpcFrameworkError"]
        assert codes[2] == [4, "-1", "RpcFrameworkError"]
        assert codes[3] == [4, "m2", "NotImplemented"]
        assert codes[0][:2] == [4, "m1"]


async def _raw_client(h: Harness, host: str, station_id: str) -> WebSocket:
    stream: trio.abc.Stream = await h.net.connect(host, 443, source=station_id)
    stream = await tls_connect(
        stream, ClientTls.build(TlsProfile(), h.pki.csms_trust()), host, verify_time=h.clock.utcnow
    )
    return await ws_client(
        stream,
        host=host,
        path=station_path("/ocpp", station_id),
        subprotocols=["ocpp2.0.1"],
        headers=[basic_auth_header(station_id, PASSWORD)],
    )


async def test_controller_own_calls_are_answered_to_the_controller_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The controller's own CALL and a CSMS CALL to the same station at the same time: each originator gets its
    own answer, the own answer never reaches the CSMS (OCPP-J §6.4), and the own id has the controller's prefix."""
    async with harness() as h:
        await h.start_csms()
        lc = await start_controller(h, id_prefix="LC1.")
        st = h.start_station("ST-1", host=LC_HOST, sessions=0)
        with trio.fail_after(600):
            await st.wait_online()
        results: dict[str, dict[str, Any]] = {}

        async def from_csms() -> None:
            results["csms"] = await h.csms.call(
                "ST-1",
                "GetVariables",
                {
                    "getVariableData": [
                        {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}}
                    ]
                },
            )

        async def from_lc() -> None:
            results["lc"] = await lc.call_station("ST-1", "TriggerMessage", {"requestedMessage": "Heartbeat"})

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(from_csms)
                nursery.start_soon(from_lc)
        assert results["lc"] == {"status": "Accepted"}
        assert results["csms"]["getVariableResult"][0]["attributeValue"] == "60"
        relay = lc.statistics().stations["ST-1"].relay
        assert relay is not None
        assert (relay.own_calls, relay.own_results, relay.stale_replies) == (1, 1, 0)
        # the triggered Heartbeat went end to end
        await trio.sleep(5)
        assert h.csms.stations["ST-1"].heartbeats >= 1


# ---------------------------------------------------------------- security profile 3 through a controller


async def test_sp3_csms_requiring_station_certificates_refuses_relayed_stations(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with harness() as h:
        await start_csms(h, security_profile=3)  # behind_controller = "require_station_cert" (default)
        lc = await start_sp3_controller(h, upstream_default_password=PASSWORD)
        direct = h.start_station("ST-direct", security_profile=3)
        behind = h.start_station("ST-behind", host=LC_HOST, security_profile=3)
        await _until_done(direct)
        await trio.sleep(60)
        assert not behind.booted
        assert "ST-behind" not in h.csms.stations or not h.csms.stations["ST-behind"].accepted
        refusals = [e.data for e in h.events("upgrade_rejected", "csms") if e.data["station"] == "ST-behind"]
        assert refusals and "certificate CN 'LC-1' is not the station identity" in refusals[0]["reason"]
        assert lc.statistics().upstream_failures["http_401"] >= 1


async def test_sp3_csms_trusting_the_controller_identifies_stations_by_path_and_basic_auth(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with harness() as h:
        await start_trusting_csms(h, "LC-1")
        await start_sp3_controller(h, upstream_default_password=PASSWORD)
        # a second controller whose certificate is not on the CSMS's list
        rogue = await start_sp3_controller(
            h, "LC-rogue", host="rogue.evsim.test", upstream_default_password=PASSWORD
        )
        direct = h.start_station("ST-direct", security_profile=3)
        behind = h.start_station("ST-behind", host=LC_HOST, security_profile=3)
        wrong = h.start_station("ST-rogue", host="rogue.evsim.test", security_profile=3)
        await _until_done(direct, behind)
        _assert_like_direct(h.csms, direct, behind)
        rec = h.csms.stations["ST-behind"]
        assert rec.via_controller == "LC-1"
        assert rec.serial_from_cert is None  # B01.FR.11/12 does not apply to the controller's certificate
        assert h.csms.stations["ST-direct"].via_controller is None
        assert h.csms.stations["ST-direct"].serial_from_cert == "ST-direct"
        await trio.sleep(60)
        assert not wrong.booted
        assert rogue.statistics().upstream_failures["http_401"] >= 1


async def test_sp3_trusted_controller_still_needs_the_station_password(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with harness() as h:
        await start_trusting_csms(h, "LC-1")
        await start_sp3_controller(
            h, upstream_passwords={"ST-ok": PASSWORD, "ST-bad": "wrong-password-for-this-one"}
        )
        ok = h.start_station("ST-ok", host=LC_HOST, security_profile=3)
        bad = h.start_station("ST-bad", host=LC_HOST, security_profile=3)
        await _until_done(ok)
        await trio.sleep(60)
        assert not bad.booted
        reasons = {
            e.data["reason"] for e in h.events("upgrade_rejected", "csms") if e.data["station"] == "ST-bad"
        }
        assert reasons == {"behind controller LC-1: wrong password"}


# ---------------------------------------------------------------- chaining


async def test_chained_controllers(autojump_clock: trio.testing.MockClock) -> None:
    async with harness() as h:
        await h.start_csms()
        top = await start_controller(h, name="LC-top", host=LC2_HOST)
        bottom = await start_controller(h, name="LC-bottom", upstream=_upstream(h, host=LC2_HOST))
        stations = [h.start_station(f"ST-{i}", host=LC_HOST) for i in range(2)]
        await _until_done(*stations)
        _assert_like_direct(h.csms, *stations)
        for lc in (top, bottom):
            s = lc.statistics()
            assert s.stations_connected == 2
            assert all(r.frames_up > 0 and r.frames_down > 0 for r in s.stations.values())


async def test_chained_controllers_with_mutual_tls(autojump_clock: trio.testing.MockClock) -> None:
    """Profile 3 on every hop: the top controller and the CSMS each trust the controller below them."""
    async with harness() as h:
        await start_trusting_csms(h, "LC-top")
        await start_sp3_controller(
            h,
            "LC-top",
            host=LC2_HOST,
            behind_controller="trust_controller",
            trusted_controllers=(TrustedController("evsim", "LC-bottom"),),
        )
        await start_sp3_controller(
            h,
            "LC-bottom",
            upstream=_upstream(h, host=LC2_HOST, identity=h.pki.station_identity("LC-bottom")),
            upstream_default_password=PASSWORD,
        )
        st = h.start_station("ST-1", host=LC_HOST, security_profile=3)
        await _until_done(st)
        _assert_like_direct(h.csms, st)
        assert h.csms.stations["ST-1"].via_controller == "LC-top"


# ---------------------------------------------------------------- loss coupling


async def test_upstream_loss_closes_the_station_link(autojump_clock: trio.testing.MockClock) -> None:
    async with harness() as h:
        await h.start_csms()
        # the controller gives up on the CSMS (3 attempts, 1 s apart) before the station's boot times out (30 s)
        fast = RetryBackOff(wait_minimum=1, random_range=0, repeat_times=0)
        lc = await start_controller(h, upstream=_upstream(h, backoff=fast))
        st = h.start_station("ST-1", host=LC_HOST, sessions=0)
        with trio.fail_after(600):
            await st.wait_online()
        h.net.partition(LC_HOST, CSMS_HOST)
        await trio.sleep(1)
        assert st.session is None  # the station went offline at once (OCPP-J §6.3)
        assert any(e.data["reason"] == "ws_closed_1001" for e in h.events("connection_lost", "ST-1"))
        await trio.sleep(120)  # reconnects reach the controller, which cannot reach the CSMS: closed (1013)
        assert not st.booted
        assert any(e.data["reason"] == "ws_closed_1013" for e in h.events("connection_lost", "ST-1"))
        h.net.heal(LC_HOST, CSMS_HOST)
        with trio.fail_after(600):
            await st.wait_online()
        assert h.csms.stations["ST-1"].connections == 2
        s = lc.statistics().stations["ST-1"]
        assert s.upstream_losses == 1 and s.upstream_reconnects == 0 and s.connections >= 3


async def test_station_loss_closes_the_upstream_link(autojump_clock: trio.testing.MockClock) -> None:
    async with harness() as h:
        await h.start_csms()
        lc = await start_controller(h)
        st = h.start_station("ST-1", host=LC_HOST, sessions=0)
        with trio.fail_after(600):
            await st.wait_online()
        assert _csms_sees_connected(h.csms, "ST-1")
        h.net.partition("ST-1", LC_HOST)
        await trio.sleep(1)
        assert not _csms_sees_connected(h.csms, "ST-1")  # the CSMS sees the station offline at once
        assert not lc.statistics().stations["ST-1"].connected
        h.net.heal("ST-1", LC_HOST)
        with trio.fail_after(600):
            await st.wait_online()
        assert h.csms.stations["ST-1"].connected


async def test_keep_station_answers_locally_and_replays_transactions(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The errata exception (ERR-201 §4.13): the station stays connected while the CSMS is unreachable; the
    controller answers it and replays its TransactionEvents (after its BootNotification) once restored."""
    async with harness() as h:
        lc, st = await _keeping_controller_cut_from_the_csms(h)
        await _until_done(st)  # the whole session while the CSMS is unreachable
        await trio.sleep(120)
        assert st.connects_ok == 1 and st.session is not None  # never disconnected
        assert not st.connect_failures
        s = lc.statistics().stations["ST-1"]
        assert not s.upstream_up
        assert s.answered_locally > 0
        assert s.backlog >= 3  # Started, Updated..., Ended
        assert not h.csms.stations["ST-1"].transactions
        h.net.heal(LC_HOST, CSMS_HOST)
        await trio.sleep(60)  # the controller's next reconnect attempt is at most 5 + 2 x 2^3 s away
        assert lc.statistics().stations["ST-1"].backlog == 0
        rec = h.csms.stations["ST-1"]
        (tx,) = rec.transactions.values()
        assert tx.started and tx.ended and tx.gap_free()
        assert rec.boots == 2  # the replayed BootNotification before the backlog
        s = lc.statistics().stations["ST-1"]
        assert s.upstream_up and s.upstream_reconnects == 1 and s.replayed >= 3
        # relaying resumed
        hb = rec.heartbeats
        await trio.sleep(130)
        assert rec.heartbeats > hb
        assert st.connects_ok == 1


async def test_station_link_failure_seen_from_a_raw_client(autojump_clock: trio.testing.MockClock) -> None:
    """Upstream refused for an unknown path identity is answered with a close, never with a hang."""
    async with harness() as h:
        await h.start_csms()
        await start_controller(h, upstream=_upstream(h, backoff=RetryBackOff(wait_minimum=1, random_range=0)))
        h.net.partition(LC_HOST, CSMS_HOST)
        with trio.fail_after(120):
            ws = await _raw_client(h, LC_HOST, "RAW-1")
            with pytest.raises(WebSocketClosed) as closed:
                await ws.receive_text()
        assert closed.value.code == 1013


async def test_keep_station_backlog_survives_the_station_reconnecting(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The controller answered the station's TransactionEvents, so it owns them: when the station's link also
    drops before the CSMS is back, the backlog is replayed on the station's next upstream link."""
    async with harness() as h:
        lc, st = await _keeping_controller_cut_from_the_csms(h)
        await _until_done(st)
        assert lc.statistics().stations["ST-1"].backlog >= 3
        h.net.partition("ST-1", LC_HOST)
        await trio.sleep(5)
        assert not lc.statistics().stations["ST-1"].connected
        h.net.heal(LC_HOST, CSMS_HOST)
        h.net.heal("ST-1", LC_HOST)
        with trio.fail_after(600):
            await st.wait_online()
        await trio.sleep(10)
        (tx,) = h.csms.stations["ST-1"].transactions.values()
        assert tx.started and tx.ended and tx.gap_free()
        s = lc.statistics().stations["ST-1"]
        assert s.backlog == 0 and s.connections == 2


async def test_keep_station_backlog_is_replayed_when_a_newer_link_takes_over(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The station reconnects while its older link still looks alive (that link's CSMS connection waits for a
    retry): once the CSMS accepts the newcomer's BootNotification the newcomer owns the identity, and with it
    the backlog, which goes up its CSMS link at once (no link drop needed)."""
    async with harness() as h:
        await h.start_csms()
        slow = RetryBackOff(wait_minimum=100_000, random_range=0, repeat_times=0)
        lc = await start_controller(h, on_upstream_loss="keep_station", upstream=_upstream(h, backoff=slow))
        st = h.start_station("ST-1", host=LC_HOST)
        with trio.fail_after(600):
            await st.wait_online()
        h.net.partition(LC_HOST, CSMS_HOST)
        await _until_done(st)
        state = lc.stations["ST-1"]
        assert len(state.backlog) >= 3 and state.relay is not None and state.relay.number == 1
        h.net.heal(LC_HOST, CSMS_HOST)  # the older link would retry only much later
        losses = state.upstream_losses
        # the older link sleeps on its planner's back-off; a fresh planner lets the newcomer connect now
        state.planner = EndpointPlanner(lc.upstream, random.Random(1))
        with trio.fail_after(120):
            ws = await _raw_client(h, LC_HOST, "ST-1")
            await ws.send_text(json.dumps([2, "b1", "BootNotification", _BOOT]))
            answer = json.loads(await ws.receive_text())
        assert answer[0] == 3 and answer[2]["status"] == "Accepted"
        await trio.sleep(10)
        assert state.relay is not None and state.relay.number == 2
        assert not state.backlog and state.upstream_losses == losses
        (tx,) = h.csms.stations["ST-1"].transactions.values()
        assert tx.started and tx.ended and tx.gap_free()
        assert h.events("backlog_replay", "LC-1")
        await ws.aclose()


def test_controller_config_refuses_incomplete_settings() -> None:
    pki = make_test_pki()
    upstream = Service("csms", (Endpoint("primary", f"wss://{CSMS_HOST}/ocpp", trust=pki.csms_trust()),))
    ident = pki.server_identity()
    with pytest.raises(ConfigError, match="own server certificate"):
        ControllerConfig(upstream=upstream)
    with pytest.raises(ConfigError, match="client certificates"):
        ControllerConfig(upstream=upstream, identity=ident, security_profile=3)
    with pytest.raises(ConfigError, match="plain ws"):
        ControllerConfig(upstream=upstream, security_profile=1)
    with pytest.raises(ConfigError, match="loss policy"):
        ControllerConfig(upstream=upstream, identity=ident, on_upstream_loss="ignore")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="behind_controller"):
        CsmsConfig(behind_controller="trust_everyone")  # type: ignore[arg-type]
    assert ControllerConfig(upstream=upstream, identity=ident).on_upstream_loss == "close_station"
