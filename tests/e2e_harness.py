"""A CSMS and stations on the in-memory network, in virtual time, for end-to-end tests.

Built on :mod:`evsim.testing`: the world owns the clock, recorder, network and nursery; the CSMS are the
world's, with certificates from the fixed test PKI of :mod:`tests.pki_fixtures` (so tests can name them), and
stations are :func:`evsim.testing.start_station` peers (any host, any TLS settings a test needs).
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import trio

from evsim.backoff import RetryBackOff
from evsim.clock import SimClock
from evsim.net.virtual import VirtualNetwork
from evsim.nodes.csms import Csms
from evsim.nodes.filetransfer import FileTransferConfig
from evsim.nodes.station import Station
from evsim.recorder import Event, Recorder
from evsim.testing import TEST_PASSWORD, open_test_world, start_station
from evsim.tls import ClientTls, Identity, TlsProfile
from evsim.world import Tls, World
from tests.pki_fixtures import CSMS_HOST, TEST_NOW, TestPki, make_test_pki

PASSWORD = TEST_PASSWORD


@attrs.define
class Harness:
    pki: TestPki
    world: World
    csms_nodes: list[Csms] = attrs.field(factory=list)
    stations: list[Station] = attrs.field(factory=list)

    @property
    def clock(self) -> SimClock:
        return self.world.clock

    @property
    def recorder(self) -> Recorder:
        return self.world.recorder

    @property
    def net(self) -> VirtualNetwork:
        assert self.world.memory is not None
        return self.world.memory

    @property
    def nursery(self) -> trio.Nursery:
        return self.world.nursery

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
        node = await self.world.start_csms(
            name,
            host=host,
            port=443,
            security_profile=security_profile,
            tls=Tls(
                profile=profile or TlsProfile(),
                identity=identity or self.pki.server_identity(),
                client_trust=self.pki.station_trust(),
            ),
            heartbeat_interval=60,
            password=PASSWORD,
        )
        self.csms_nodes.append(node.csms)
        return node.csms

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
        if security_profile == 3 and identity is None and client_tls is None:
            identity = self.pki.station_identity(station_id)
        station = start_station(
            self.world,
            station_id,
            url=f"wss://{host}/ocpp",
            security_profile=security_profile,
            password=password,
            client_tls=client_tls,
            profile=profile,
            trust=self.pki.csms_trust(),
            identity=identity,
            rng=random.Random(station_id),
            sessions=sessions,
            session_start_s=(1.0, 5.0),
            session_duration_s=120.0,
            meter_interval_s=30.0,
            backoff=RetryBackOff(wait_minimum=5, random_range=2, repeat_times=3),
            firmware_version=firmware_version,
            files=files,
        )
        self.stations.append(station)
        return station

    def events(self, kind: str, node: str | None = None) -> list[Event]:
        return [e for e in self.recorder.of_kind(kind) if node is None or e.node == node]


@asynccontextmanager
async def harness(now: object = TEST_NOW) -> AsyncIterator[Harness]:
    """Run a harness; everything started in it is cancelled on exit."""
    async with open_test_world(start=TEST_NOW) as world:
        yield Harness(pki=make_test_pki(TEST_NOW), world=world)
