"""Helpers for your own pytest-trio tests: an in-memory world with a test PKI, and evsim peers for code under test.

A station or CSMS you are writing can be tested against evsim's, on evsim's in-memory network in virtual
time (a simulated hour passes in milliseconds; nothing leaves the process)::

    import trio
    from evsim.testing import csms_peer, open_test_world, start_station

    async def test_my_station(autojump_clock):                 # pytest-trio's fixture: virtual time
        async with open_test_world() as world:
            peer = await csms_peer(world)                      # an evsim CSMS, and how to reach it
            stream = await peer.network.connect(peer.host, peer.port, source="my-station")
            ...                                                # TLS with peer.client_tls, WebSocket, OCPP

    async def test_my_csms(autojump_clock):
        async with open_test_world() as world:
            listener = await world.network.listen("my-csms.test", 443)
            ...                                                # serve it in world.nursery
            station = start_station(world, "ST-1", url="wss://my-csms.test/ocpp", sessions=1)
            with trio.fail_after(3600):
                await station.done.wait()

The world's PKI issues every certificate (``world.pki``: the operator's ``root``, the station sub-CA, server
and station certificates); :func:`server_tls` gives a CSMS under test its TLS configuration from it.
"""

from __future__ import annotations

import datetime as _dt
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio
import trio.testing

from evsim.net.base import Network
from evsim.nodes.filetransfer import FileTransferConfig
from evsim.nodes.station import Station
from evsim.nodes.station_model import StationConfig
from evsim.tls import ClientTls, Identity, ServerTls, TlsProfile, TrustStore
from evsim.world import CsmsNode, Tls, TrustSpec, World, open_world
from evsim.world.core import NetworkKind

TEST_START = _dt.datetime(2030, 6, 1, 12, 0, tzinfo=_dt.UTC)
"""The simulation start of a test world (fixed, and far from the machine's clock on purpose)."""
TEST_PASSWORD = "correct-horse-battery-staple"
"""The Basic-auth password of a test world's CSMS and stations (16..64 characters, A00.FR.205)."""


@asynccontextmanager
async def open_test_world(
    *, seed: int = 1, network: NetworkKind = "memory", start: _dt.datetime = TEST_START, **options: Any
) -> AsyncIterator[World]:
    """A world for a test: in memory, with a fresh per-run PKI, starting at :data:`TEST_START`.

    The clock is the one the test runs under: virtual with pytest-trio's ``autojump_clock`` fixture (or any
    ``MockClock``), real otherwise. Everything started in it is cancelled when the block ends.

    Args:
        seed: the world's seed.
        network: ``"memory"`` (default) or ``"tcp"`` (loopback).
        start: the simulation's start.
        options: further :func:`evsim.world.open_world` arguments (``sink``, ``roots``...).
    """
    mock = isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock)
    async with open_world(
        seed=seed, clock="virtual" if mock else "real", network=network, start=start, **options
    ) as world:
        yield world


@attrs.frozen
class CsmsPeer:
    """An evsim CSMS a station under test connects to, and what that station needs.

    Attributes:
        node: the CSMS in the world.
        url: its OCPP endpoint (append ``/<station-id>``).
        host, port: where it listens on ``network``.
        password: the Basic-auth password it accepts (profiles 1 and 2).
        client_tls: a client configuration trusting the world's root (with the station certificate of
            ``station_id`` under profile 3), or None for profile 1.
        network: the world's network.
    """

    node: CsmsNode
    url: str
    host: str
    port: int
    password: str
    client_tls: ClientTls | None
    network: Network


async def csms_peer(
    world: World,
    name: str = "csms",
    *,
    security_profile: int = 2,
    station_id: str | None = None,
    heartbeat_interval: float = 60.0,
    **options: Any,
) -> CsmsPeer:
    """Start an evsim CSMS for a station under test; returns once it listens.

    Args:
        world: the test world.
        name: the CSMS's name (its host is ``<name>.evsim.test``).
        security_profile: 1 (then pass ``insecure_allow_plain_ws=True``), 2 or 3.
        station_id: under profile 3, the identity whose certificate :attr:`CsmsPeer.client_tls` carries.
        heartbeat_interval: the interval it gives stations, seconds.
        options: further :meth:`World.start_csms` arguments (``tls``, ``accept_unknown_stations``...).
    """
    options.setdefault("password", TEST_PASSWORD)
    node = await world.start_csms(
        name, security_profile=security_profile, heartbeat_interval=heartbeat_interval, **options
    )
    client_tls = None
    if security_profile >= 2:
        identity = None
        if security_profile == 3:
            if station_id is None:
                raise ValueError("security profile 3: pass station_id (the station certificate's CN)")
            identity = Identity.from_cert_key(
                world.pki.station_certificate(station_id, validity_s=365 * 86_400.0)
            )
        client_tls = ClientTls.build(TlsProfile(), world.trust_store(None), identity)
    return CsmsPeer(
        node=node,
        url=world.url(name, security_profile),
        host=node.host,
        port=node.port,
        password=options["password"],
        client_tls=client_tls,
        network=world.network,
    )


def server_tls(
    world: World, host: str, *, security_profile: int = 2, profile: TlsProfile | None = None
) -> ServerTls:
    """A TLS server configuration for a CSMS under test at ``host``: a certificate from the world's root
    (its CN and SAN ``host``); under profile 3 it requires station certificates from the world's PKI."""
    cert = world.pki.server_certificate(host, Tls().certificate)
    identity = Identity.from_cert_key(cert)
    if security_profile == 3:
        trust = TrustStore("ChargingStationRoots", (world.pki.roots["root"].cert,), hostname="off")
        return ServerTls.build(profile or TlsProfile(), identity, trust=trust, client_auth="required")
    return ServerTls.build(profile or TlsProfile(), identity)


def start_station(
    world: World,
    station_id: str,
    *,
    url: str,
    security_profile: int = 2,
    password: str | None = TEST_PASSWORD,
    client_tls: ClientTls | None = None,
    profile: TlsProfile | None = None,
    trust: TrustSpec | TrustStore | None = None,
    identity: Identity | None = None,
    rng: random.Random | None = None,
    files: FileTransferConfig | None = None,
    **config: Any,
) -> Station:
    """Start an evsim station connecting to ``url`` on the world's network (a CSMS or controller under test,
    or any node of the world); returns at once, its connection loop started in the world's nursery.

    It is a peer of the code under test, not one of the world's station groups: selectors, samples and the
    summary do not count it (its events are recorded).

    Args:
        world: the test world.
        station_id: its identity.
        url: the OCPP endpoint without the identity, e.g. ``wss://my-csms.test/ocpp``.
        security_profile: 1, 2 or 3.
        password: Basic-auth password (profiles 1 and 2).
        client_tls: a ready TLS client configuration; else one from ``profile``, ``trust`` (default: the
            world's root) and ``identity`` (default under profile 3: a station certificate from the world's
            station sub-CA).
        rng: its random source; default the world's for ``station_id``.
        files: its firmware and log transfer settings (services, trust, manufacturer roots).
        config: further :class:`~evsim.nodes.station_model.StationConfig` fields (``sessions``, ``backoff``...).
    """
    if client_tls is None and security_profile >= 2:
        if security_profile == 3 and identity is None:
            cert = world.pki.station_certificate(station_id, validity_s=365 * 86_400.0)
            identity = Identity.from_cert_key(cert)
        client_tls = ClientTls.build(profile or TlsProfile(), world.trust_store(trust), identity)
    station = Station(
        StationConfig(
            station_id=station_id,
            csms_url=url,
            security_profile=security_profile,
            password=password if security_profile < 3 else None,
            **config,
        ),
        network=world.network,
        client_tls=client_tls,
        clock=world.clock,
        recorder=world.recorder,
        rng=rng or world.rng(station_id),
        files=files,
    )
    world.nursery.start_soon(station.run)
    return station


__all__ = [
    "TEST_PASSWORD",
    "TEST_START",
    "CsmsPeer",
    "csms_peer",
    "open_test_world",
    "server_tls",
    "start_station",
]
