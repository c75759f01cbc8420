"""A CSMS and stations on the in-memory network, in virtual time, for end-to-end tests."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import trio

from evsim.backoff import RetryBackOff
from evsim.clock import SimClock
from evsim.net.virtual import VirtualNetwork
from evsim.nodes.csms import Csms, CsmsConfig
from evsim.nodes.filetransfer import FileTransferConfig
from evsim.nodes.station import Station, StationConfig
from evsim.recorder import Event, Recorder
from evsim.tls import ClientTls, Identity, ServerTls, TlsProfile
from tests.pki_fixtures import CSMS_HOST, TEST_NOW, TestPki, make_test_pki

PASSWORD = "correct-horse-battery-staple"


@attrs.define
class Harness:
    pki: TestPki
    clock: SimClock
    recorder: Recorder
    net: VirtualNetwork
    nursery: trio.Nursery
    csms_nodes: list[Csms] = attrs.field(factory=list)
    stations: list[Station] = attrs.field(factory=list)

    @property
    def csms(self) -> Csms:
        return self.csms_nodes[0]

    async def start_csms(
        self,
        *,
        host: str = CSMS_HOST,
        security_profile: int = 2,
        identity: Identity | None = None,
        profile: TlsProfile | None = None,
        name: str = "csms",
    ) -> Csms:
        ident = identity or self.pki.server_identity()
        prof = profile or TlsProfile()
        if security_profile == 3:
            server_tls = ServerTls.build(prof, ident, trust=self.pki.station_trust(), client_auth="required")
        else:
            server_tls = ServerTls.build(prof, ident)
        csms = Csms(
            CsmsConfig(
                name=name,
                host=host,
                port=443,
                security_profile=security_profile,
                heartbeat_interval=60,
                default_password=PASSWORD,
            ),
            network=self.net,
            server_tls=server_tls,
            clock=self.clock,
            recorder=self.recorder,
        )
        await self.nursery.start(csms.serve)
        self.csms_nodes.append(csms)
        return csms

    def start_station(
        self,
        station_id: str,
        *,
        host: str = CSMS_HOST,
        security_profile: int = 2,
        client_tls: ClientTls | None = None,
        password: str | None = PASSWORD,
        identity: Identity | None = None,
        sessions: int = 1,
        profile: TlsProfile | None = None,
        files: FileTransferConfig | None = None,
        firmware_version: str = "0.1.0",
    ) -> Station:
        if client_tls is None:
            if security_profile == 3 and identity is None:
                identity = self.pki.station_identity(station_id)
            client_tls = ClientTls.build(profile or TlsProfile(), self.pki.csms_trust(), identity)
        station = Station(
            StationConfig(
                station_id=station_id,
                csms_url=f"wss://{host}/ocpp",
                security_profile=security_profile,
                password=password if security_profile < 3 else None,
                sessions=sessions,
                firmware_version=firmware_version,
                session_start_s=(1.0, 5.0),
                session_duration_s=120.0,
                meter_interval_s=30.0,
                backoff=RetryBackOff(wait_minimum=5, random_range=2, repeat_times=3),
            ),
            network=self.net,
            client_tls=client_tls,
            clock=self.clock,
            recorder=self.recorder,
            rng=random.Random(station_id),
            files=files,
        )
        self.nursery.start_soon(station.run)
        self.stations.append(station)
        return station

    def events(self, kind: str, node: str | None = None) -> list[Event]:
        return [e for e in self.recorder.of_kind(kind) if node is None or e.node == node]


@asynccontextmanager
async def harness(now: object = TEST_NOW) -> AsyncIterator[Harness]:
    """Run a harness; everything started in it is cancelled on exit."""
    pki = make_test_pki(TEST_NOW)
    clock = SimClock.start(TEST_NOW)
    recorder = Recorder(clock)
    async with trio.open_nursery() as nursery:
        h = Harness(pki=pki, clock=clock, recorder=recorder, net=VirtualNetwork(), nursery=nursery)
        try:
            yield h
        finally:
            nursery.cancel_scope.cancel()
