"""Certificate management over OCPP between evsim's CSMS and stations, in memory and in virtual time:
A02 (TriggerMessage -> CSR -> CertificateSigned -> reconnect with the new certificate), its fallback, A03,
the resend schedule against a failing CA, hostile CertificateSigned payloads, the CSMS's CSR checks and
M03-M05."""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import random
from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from evsim.backoff import RetryBackOff
from evsim.clock import SimClock
from evsim.errors import TransportError
from evsim.net.virtual import VirtualNetwork
from evsim.nodes.certificates import CertificateSettings
from evsim.nodes.csms import Csms, CsmsConfig
from evsim.nodes.csms_certs import CsrSigner, DegradedSigner, SigningSettings, SubCaSigner
from evsim.nodes.station import Station
from evsim.nodes.station_model import StationConfig
from evsim.pki import CertificateAuthority, generate_key, make_csr
from evsim.pki.keys import certs_to_pem
from evsim.pki.lifecycle import CsrInfo, certificate_hash_data
from evsim.recorder import Event, Recorder
from evsim.tls import ClientTls, Identity, ServerTls, TlsProfile
from evsim.ws import WebSocket
from tests import hostile
from tests.pki_fixtures import CSMS_HOST, ORG, TEST_NOW, TestPki, make_test_pki
from tests.test_certificates import tampered_csr

SID = "CS-0001"
PASSWORD = "certificate-flow-password-01"


@attrs.define
class Harness:
    """A CSMS with a CSR signer and stations with certificate settings, in memory (built here directly, so
    these tests do not depend on how the shared harness wires nodes)."""

    pki: TestPki
    clock: SimClock
    recorder: Recorder
    net: VirtualNetwork
    nursery: trio.Nursery
    csms_nodes: list[Csms] = attrs.field(factory=list)

    @property
    def csms(self) -> Csms:
        return self.csms_nodes[0]

    async def start_csms(
        self,
        *,
        security_profile: int = 3,
        signer: CsrSigner | None = None,
        station_issuers: tuple[x509.Certificate, ...] = (),
    ) -> Csms:
        if security_profile == 3:
            tls = ServerTls.build(
                TlsProfile(),
                self.pki.server_identity(),
                trust=self.pki.station_trust(),
                client_auth="required",
            )
        else:
            tls = ServerTls.build(TlsProfile(), self.pki.server_identity())
        csms = Csms(
            CsmsConfig(
                host=CSMS_HOST,
                port=443,
                security_profile=security_profile,
                heartbeat_interval=60,
                default_password=PASSWORD,
                organization=ORG,
                station_issuers=station_issuers,
            ),
            network=self.net,
            server_tls=tls,
            clock=self.clock,
            recorder=self.recorder,
            signer=signer,
        )
        await self.nursery.start(csms.run)
        self.csms_nodes.append(csms)
        return csms

    def start_station(
        self,
        station_id: str,
        *,
        host: str = CSMS_HOST,
        security_profile: int = 2,
        identity: Identity | None = None,
        sessions: int = 0,
        certificates: CertificateSettings | None = None,
    ) -> Station:
        if security_profile == 3 and identity is None:
            identity = self.pki.station_identity(station_id)
        station = Station(
            StationConfig(
                station_id=station_id,
                csms_url=f"wss://{host}/ocpp",
                security_profile=security_profile,
                password=PASSWORD if security_profile < 3 else None,
                sessions=sessions,
                backoff=RetryBackOff(wait_minimum=5, random_range=2, repeat_times=3),
                certificates=certificates or CertificateSettings(),
            ),
            network=self.net,
            client_tls=ClientTls.build(TlsProfile(), self.pki.csms_trust(), identity),
            clock=self.clock,
            recorder=self.recorder,
            rng=random.Random(station_id),
        )
        self.nursery.start_soon(station.run)
        return station

    def events(self, kind: str, node: str | None = None) -> list[Event]:
        return [e for e in self.recorder.of_kind(kind) if node is None or e.node == node]


@contextlib.asynccontextmanager
async def harness() -> AsyncIterator[Harness]:
    pki = make_test_pki(TEST_NOW)
    clock = SimClock.start(TEST_NOW)
    async with trio.open_nursery() as nursery:
        try:
            yield Harness(pki, clock, Recorder(clock), VirtualNetwork(), nursery)
        finally:
            nursery.cancel_scope.cancel()


async def _until(predicate: Any, *, step: float = 1.0) -> None:
    """Wait (virtual time) until ``predicate()``: the nodes under test expose no event for each condition."""
    while not predicate():  # noqa: ASYNC110
        await trio.sleep(step)


def _peer_leaf(h: Harness, sid: str = SID) -> x509.Certificate:
    rec = h.csms.stations[sid]
    assert rec.tls is not None and rec.tls.peer_chain
    return rec.tls.peer_chain[0]


def _events(h: Harness, kind: str, node: str | None = None) -> list[dict[str, Any]]:
    return [e.data for e in h.events(kind, node)]


async def _sp3(
    h: Harness, *, signer: Any = None, issuers: tuple[x509.Certificate, ...] = (), **settings: Any
) -> Station:
    await h.start_csms(
        security_profile=3, signer=signer or SubCaSigner(h.pki.station_ca), station_issuers=issuers
    )
    station = h.start_station(
        SID, security_profile=3, sessions=0, certificates=CertificateSettings(**settings)
    )
    with trio.fail_after(300):
        await station.wait_online()
    return station


async def test_a02_renewal_reconnects_with_the_new_certificate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with harness() as h:
        station = await _sp3(h)
        old = _peer_leaf(h)
        answer = await h.csms.certificates.trigger_message(SID)
        assert answer["status"] == "Accepted"
        with trio.fail_after(600):
            await _until(lambda: station.connects_ok == 2 and h.csms.stations[SID].connected)
        new = _peer_leaf(h)
        assert new != old
        assert new.public_key() != old.public_key()
        assert new.subject == old.subject  # CN = station id, O = organization
        assert station.certs.identity is not None and station.certs.identity.cert == new
        assert station.certs.candidate is None
        (signed,) = _events(h, "certificate_signed")
        assert signed["status"] == "Accepted"
        assert _events(h, "client_certificate_switched", SID)
        assert [e["reason"] for e in _events(h, "connection_lost", SID)] == ["certificate_switch"]
        assert h.csms.certificates.statistics()["signed"] == 1
        assert station.statistics().certificates_renewed == 1
        # the private key never left the station: no event anywhere carries key material
        assert not any("PRIVATE KEY" in repr(e.data) for e in h.recorder.events)


async def test_a02_new_certificate_that_cannot_connect_falls_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with harness() as h:
        # the CSMS signs under a sub-CA its own admission refuses (station_issuers): the renewed certificate
        # validates at the station but cannot connect
        rogue = h.pki.root.create_sub_ca("Other Sub-CA", ORG, now=TEST_NOW)
        station = await _sp3(
            h, signer=SubCaSigner(rogue), issuers=(h.pki.station_ca.cert,), renewed_attempts=2
        )
        old = _peer_leaf(h)
        await h.csms.certificates.trigger_message(SID)
        with trio.fail_after(3600):
            await _until(lambda: bool(_events(h, "client_certificate_discarded", SID)))
            await _until(lambda: h.csms.stations[SID].connected and station.session is not None)
            await _until(
                lambda: any(
                    e["type"] == "DiscardedRenewedClientCertificate"
                    for e in _events(h, "security_event_received")
                )
            )
        assert _peer_leaf(h) == old
        assert station.certs.identity is not None and station.certs.identity.cert == old
        rejected = [e for e in _events(h, "upgrade_rejected") if e["station"] == SID]
        assert len(rejected) == 2


class _Signer:
    """Signs with any CA, or returns a fixed chain: a misbehaving CSMS."""

    name = "test"

    def __init__(self, ca: CertificateAuthority | None = None, chain: str | None = None) -> None:
        self.ca, self.chain = ca, chain

    async def sign(self, csr: CsrInfo, *, station_id: str, now: dt.datetime) -> str:
        if self.chain is not None:
            return self.chain
        assert self.ca is not None
        cert = self.ca.sign_csr(csr.pem, now=now)
        return certs_to_pem((cert, *self.ca.intermediates)).decode()


async def test_a02_invalid_chain_is_rejected_and_reported(autojump_clock: trio.testing.MockClock) -> None:
    async with harness() as h:
        station = await _sp3(h, signer=_Signer(h.pki.evil))
        old = _peer_leaf(h)
        await h.csms.certificates.trigger_message(SID)
        with trio.fail_after(600):
            await _until(lambda: bool(_events(h, "certificate_signed")))
            await _until(lambda: bool(_events(h, "security_event_received")))
        (signed,) = _events(h, "certificate_signed")
        assert signed["status"] == "Rejected" and signed["reason"] == "untrusted"
        assert len(_events(h, "certificate_signed_rejected", SID)) == 1
        assert [e["type"] for e in _events(h, "security_event_received")] == [
            "InvalidChargingStationCertificate"
        ]
        await trio.sleep(1000)
        assert station.connects_ok == 1 and _peer_leaf(h) == old  # no reconnect, no resend (A02.FR.20)
        assert len(_events(h, "csr_sent", SID)) == 1


async def test_hostile_certificate_signed_payloads(autojump_clock: trio.testing.MockClock) -> None:
    """A CSMS sends certificate chains of 80, 12, 1 and 1,000 certificates: each is refused, bounded, with one
    event, and the station carries on."""
    async with harness() as h:
        one = h.pki.station_ca.cert.public_bytes(serialization.Encoding.PEM).decode()
        assert 80 * len(one) < 65536 < 1000 * len(one)
        replies: dict[str, Any] = {}

        async def script(ws: WebSocket, sid: str) -> None:
            with contextlib.suppress(TransportError):
                await hostile.answer_boot(ws, h.clock, {"interval": 60, "status": "Accepted"})
                if replies:
                    await hostile.answer_everything(ws, h.clock, budget=[500])
                    return
                for mid, count in (("c80", 80), ("c12", 12), ("c1", 1)):
                    await ws.send_text(
                        hostile.call_frame(mid, "CertificateSigned", {"certificateChain": one * count})
                    )
                while len(replies) < 3:
                    msg = json.loads(await ws.receive_text())
                    if msg[0] in (3, 4):
                        replies[msg[1]] = msg
                    elif msg[2] == "StatusNotification":
                        await ws.send_text(json.dumps([3, msg[1], {}]))
                await ws.send_text(
                    hostile.call_frame("c1000", "CertificateSigned", {"certificateChain": one * 1000})
                )
                await hostile.answer_everything(ws, h.clock, budget=[500])

        cert = h.pki.root.issue_server("evil-csms.evsim.test", now=TEST_NOW)
        fake = hostile.HostileCsms(
            h.net, "evil-csms.evsim.test", 443, Identity.from_cert_key(cert), h.clock, script
        )
        await h.nursery.start(fake.serve)
        station = h.start_station(SID, host="evil-csms.evsim.test", sessions=0)
        with trio.fail_after(600):
            await _until(lambda: station.connects_ok >= 2)
        assert replies["c80"][0] == 4 and replies["c80"][2] == "PropertyConstraintViolation"
        assert replies["c12"][2]["statusInfo"]["reasonCode"] == "too_many_certs"
        assert replies["c1"][2]["statusInfo"]["reasonCode"] == "no_pending_request"
        assert len(_events(h, "bad_input", SID)) == 1
        assert len(_events(h, "certificate_signed_rejected", SID)) == 2
        lost = [e["reason"] for e in _events(h, "connection_lost", SID)]
        assert lost == ["ws_closed_1009"]
        assert station.certs.candidate is None and station.certs.renewals == 0


async def test_failing_ca_resend_doubles_then_stops(autojump_clock: trio.testing.MockClock) -> None:
    async with harness() as h:
        failing = DegradedSigner(SubCaSigner(h.pki.station_ca), delay_s=5.0, failure_rate=1.0)
        station = await _sp3(h, signer=failing, sign_wait_minimum_s=30, sign_repeat_times=2)
        start = trio.current_time()
        await h.csms.certificates.trigger_message(SID)
        with trio.fail_after(3600):
            await _until(lambda: bool(_events(h, "csr_abandoned", SID)))
        sends = [e.t for e in h.events("csr_sent", SID)]
        assert len(sends) == 3
        gaps = [round(b - a) for a, b in itertools.pairwise(sends)]
        assert gaps == [30, 60]
        assert len(_events(h, "csr_signing_failed")) == 3
        assert station.connects_ok == 1
        assert trio.current_time() - start < 3600


async def test_a03_station_renews_by_itself(autojump_clock: trio.testing.MockClock) -> None:
    async with harness() as h:
        await h.start_csms(security_profile=3, signer=SubCaSigner(h.pki.station_ca, days=365))
        short = h.pki.station_ca.issue_client(SID, ORG, now=TEST_NOW, days=20)  # expires within a month
        station = h.start_station(SID, security_profile=3, sessions=0, identity=Identity.from_cert_key(short))
        with trio.fail_after(600):
            await _until(lambda: station.connects_ok == 2)
        assert _events(h, "renewal_started", SID)
        assert [e["trigger"] for e in _events(h, "csr_sent", SID)] == ["renewal"]
        assert _peer_leaf(h).not_valid_after_utc > short.cert.not_valid_after_utc
        await trio.sleep(7 * 86400)  # the new certificate is not due: no further renewal
        assert len(_events(h, "csr_sent", SID)) == 1


def _csms_offline(**signing: Any) -> tuple[Csms, Recorder]:
    from tests.pki_fixtures import make_test_pki

    pki = make_test_pki(TEST_NOW)
    recorder = Recorder(SimClock.start(TEST_NOW))
    csms = Csms(
        CsmsConfig(security_profile=3, organization=ORG, signing=SigningSettings(**signing)),
        network=VirtualNetwork(),
        server_tls=_server_tls(pki),
        clock=recorder.clock,
        recorder=recorder,
        signer=SubCaSigner(pki.station_ca),
    )
    return csms, recorder


def _server_tls(pki: Any) -> Any:
    from evsim.tls import ServerTls, TlsProfile

    return ServerTls.build(
        TlsProfile(), pki.server_identity(), trust=pki.station_trust(), client_auth="required"
    )


@pytest.mark.parametrize(
    ("csr", "reason"),
    [
        (lambda: tampered_csr(generate_key()).decode(), "bad_signature"),
        (lambda: make_csr(generate_key(), "CS-OTHER", ORG).decode(), "wrong_cn"),
        (lambda: make_csr(generate_key(), SID, "evil").decode(), "wrong_org"),
        (
            lambda: "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
            "malformed",
        ),
        (lambda: "x" * 5000, "malformed"),
    ],
)
async def test_csms_refuses_bad_csrs(csr: Any, reason: str) -> None:
    csms, recorder = _csms_offline()
    answer = csms.certificates.on_sign_certificate(
        SID, {"csr": csr(), "certificateType": "ChargingStationCertificate"}
    )
    assert answer["status"] == "Rejected" and answer["statusInfo"]["reasonCode"] == reason
    assert [e.data["reason"] for e in recorder.of_kind("csr_refused")] == [reason]


async def test_csms_signing_queue_is_bounded() -> None:
    csms, _ = _csms_offline(max_queued=2)
    answers = [
        csms.certificates.on_sign_certificate(
            f"CS-{i}", {"csr": make_csr(generate_key(), f"CS-{i}", ORG).decode()}
        )
        for i in range(4)
    ]
    assert [a["status"] for a in answers] == ["Accepted", "Accepted", "Rejected", "Rejected"]
    assert answers[2]["statusInfo"]["reasonCode"] == "Busy"
    # a station's resend while its CSR waits changes nothing
    again = csms.certificates.on_sign_certificate(
        "CS-0", {"csr": make_csr(generate_key(), "CS-0", ORG).decode()}
    )
    assert again["status"] == "Accepted"
    assert csms.certificates.statistics()["queued"] == 2


async def test_m03_m05_through_the_csms(autojump_clock: trio.testing.MockClock) -> None:
    async with harness() as h:
        station = await _sp3(h)
        certs = h.csms.certificates
        new_root = CertificateAuthority.create_root("Next Root", ORG, now=TEST_NOW)
        pem = new_root.cert.public_bytes(serialization.Encoding.PEM).decode()
        assert (await certs.install_certificate(SID, "CSMSRootCertificate", pem))["status"] == "Accepted"
        ids = await certs.get_installed_certificate_ids(SID, ["CSMSRootCertificate"])
        assert len(ids["certificateHashDataChain"]) == 2
        own = station.certs.identity
        assert own is not None
        answer = await certs.delete_certificate(SID, certificate_hash_data(own.cert, own.intermediates[0]))
        assert answer["status"] == "Failed"
        answer = await certs.delete_certificate(SID, certificate_hash_data(new_root.cert))
        assert answer["status"] == "Accepted"
        assert (await certs.get_installed_certificate_ids(SID, ["ManufacturerRootCertificate"]))[
            "status"
        ] == "NotFound"
        results = await h.csms.set_variables(SID, {("SecurityCtrlr", "CertSigningWaitMinimum"): "-1"})
        assert results[0]["attributeStatus"] == "Rejected"
        got = await h.csms.call(
            SID,
            "GetVariables",
            {
                "getVariableData": [
                    {"component": {"name": "SecurityCtrlr"}, "variable": {"name": "OrganizationName"}}
                ]
            },
        )
        assert got["getVariableResult"][0]["attributeValue"] == ORG
        assert len(_events(h, "certificate_call")) == 5
        # the station still reconnects with the installed roots after the changes
        await h.csms.certificates.trigger_message(SID)
        with trio.fail_after(600):
            await _until(lambda: station.connects_ok == 2)
