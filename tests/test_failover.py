"""Station failover between CSMS endpoints, end to end: in-memory network, real TLS, virtual time.

The primary (``csms.evsim.test``) and the secondary (``csms2.evsim.test``) are two endpoints of one operator:
two :class:`Csms` nodes sharing one store, each with a certificate chain from a *different* root; each station
slot trusts only its own endpoint's root (per-slot trust store). Outages are ``VirtualNetwork.set_host_down``
(connections reset, connects refused), never sleeps.

The property test draws outage schedules per *target* (:class:`OutageTarget`) of a :class:`Topology`: the
primary and the secondary CSMS (:data:`TWO_CSMS`), and the same plus a Local Controller in front of them
(:data:`BEHIND_CONTROLLER`: stations -> LC -> {primary, secondary}, with a direct slot to the secondary as
their fallback), with the same checks.
"""

from __future__ import annotations

import collections
import functools
import itertools
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from hypothesis import event, example, given
from hypothesis import strategies as st

from evsim.backoff import RetryBackOff
from evsim.clock import SimClock
from evsim.link.service import Endpoint, Service
from evsim.link.slots import NetworkSlot
from evsim.net.virtual import LinkPolicy, VirtualNetwork
from evsim.nodes.controller import ControllerConfig, LocalController, UpstreamLossPolicy
from evsim.nodes.csms import Csms, CsmsConfig
from evsim.nodes.csms_records import StationRecord
from evsim.nodes.station import Station
from evsim.nodes.station_model import StationConfig
from evsim.ocpp.netprofile import FallbackPolicy, NetworkConnectionProfile
from evsim.pki import CertificateAuthority
from evsim.recorder import Event, Recorder
from evsim.tls import ClientTls, Identity, ServerTls, TlsProfile, TrustStore
from tests.e2e_harness import PASSWORD
from tests.pki_fixtures import CSMS_HOST, ORG, TEST_NOW, make_test_pki

SECONDARY_HOST = "csms2.evsim.test"
LC_HOST = "lc.evsim.test"
LC_URL = f"wss://{LC_HOST}/ocpp"
PRIMARY_URL = f"wss://{CSMS_HOST}/ocpp"
SECONDARY_URL = f"wss://{SECONDARY_HOST}/ocpp"
BACKOFF = RetryBackOff(wait_minimum=2, random_range=2, repeat_times=3)  # small waits: cheap virtual runs


@functools.lru_cache(maxsize=1)
def secondary_root() -> CertificateAuthority:
    """The secondary CSMS's own root CA (not the primary's)."""
    return CertificateAuthority.create_root("evsim Secondary Root CA", ORG, now=TEST_NOW)


@functools.lru_cache(maxsize=1)
def secondary_identity() -> Identity:
    return Identity.from_cert_key(secondary_root().issue_server(SECONDARY_HOST, now=TEST_NOW))


def primary_trust() -> TrustStore:
    return TrustStore("primary-root", (make_test_pki(TEST_NOW).root.cert,))


def secondary_trust() -> TrustStore:
    return TrustStore("secondary-root", (secondary_root().cert,))


def two_slots(*, secondary_trust_store: TrustStore | None = None) -> tuple[NetworkSlot, ...]:
    """Slot 0 = primary, slot 1 = secondary, each with its own trust store."""
    trust1 = secondary_trust_store or secondary_trust()
    return (
        NetworkSlot(
            0, NetworkConnectionProfile(PRIMARY_URL, 2), Endpoint("slot0", PRIMARY_URL, trust=primary_trust())
        ),
        NetworkSlot(
            1, NetworkConnectionProfile(SECONDARY_URL, 2), Endpoint("slot1", SECONDARY_URL, trust=trust1)
        ),
    )


@attrs.frozen
class OutageTarget:
    """Something the property test can take down: a host of the virtual network (a CSMS, later a controller)."""

    name: str
    host: str


@attrs.define
class World:
    clock: SimClock
    recorder: Recorder
    net: VirtualNetwork
    nursery: trio.Nursery
    store: dict[str, StationRecord] = attrs.field(factory=dict)
    csms_nodes: dict[str, Csms] = attrs.field(factory=dict)
    stations: list[Station] = attrs.field(factory=list)

    async def start_csms(self, name: str, host: str, identity: Identity, **overrides: Any) -> Csms:
        config = CsmsConfig(name=name, host=host, port=443, heartbeat_interval=300, default_password=PASSWORD)
        csms = Csms(
            attrs.evolve(config, **overrides),
            network=self.net,
            server_tls=ServerTls.build(TlsProfile(), identity),
            clock=self.clock,
            recorder=self.recorder,
            store=self.store,
        )
        await self.nursery.start(csms.run)
        self.csms_nodes[name] = csms
        return csms

    async def start_both(self) -> None:
        await self.start_csms("primary", CSMS_HOST, make_test_pki(TEST_NOW).server_identity())
        await self.start_csms("secondary", SECONDARY_HOST, secondary_identity())

    def start_station(
        self,
        station_id: str,
        *,
        slots: Sequence[NetworkSlot] = (),
        client_tls: ClientTls | None = None,
        csms_url: str = "",
        rng_seed: int | str | None = None,
        **overrides: object,
    ) -> Station:
        fields: dict[str, object] = {
            "station_id": station_id,
            "csms_url": csms_url,
            "network_slots": tuple(slots),
            "password": PASSWORD,
            "sessions": 1,
            "session_start_s": (1.0, 5.0),
            "session_duration_s": 120.0,
            "meter_interval_s": 30.0,
            "backoff": BACKOFF,
            "network_attempts": 2,
        }
        fields.update(overrides)
        station = Station(
            StationConfig(**fields),  # type: ignore[arg-type]
            network=self.net,
            client_tls=client_tls,
            clock=self.clock,
            recorder=self.recorder,
            rng=random.Random(station_id if rng_seed is None else f"{rng_seed}:{station_id}"),
        )
        self.nursery.start_soon(station.run)
        self.stations.append(station)
        return station

    def connected_to(self, station: Station) -> str | None:
        """Which CSMS node holds the station's live connection (None: none)."""
        for name in self.csms_nodes:
            events = [
                e for e in self.recorder.events if e.node == name and e.data.get("station") == station.name
            ]
            last = next(
                (e.kind for e in reversed(events) if e.kind in ("station_connected", "station_disconnected")),
                None,
            )
            if last == "station_connected" and station.session is not None:
                return name
        return None


@asynccontextmanager
async def world(sink: Callable[[Event], None] | None = None) -> AsyncIterator[World]:
    clock = SimClock.start(TEST_NOW)
    recorder = Recorder(clock, echo=False, sink=sink)
    async with trio.open_nursery() as nursery:
        w = World(clock=clock, recorder=recorder, net=VirtualNetwork(), nursery=nursery)
        try:
            yield w
        finally:
            nursery.cancel_scope.cancel()


async def wait_for(predicate: Callable[[], bool], *, step: float = 1.0) -> None:
    # polling in virtual time (costs nothing real): the predicates span several nodes with no one event to wait on
    while not predicate():  # noqa: ASYNC110
        await trio.sleep(step)


def receipts(w: World) -> dict[tuple[str, str], list[tuple[str, int, bool]]]:
    """(station, transaction) -> [(eventType, seqNo, offline)] in the order the CSMS endpoints recorded them."""
    out: dict[tuple[str, str], list[tuple[str, int, bool]]] = collections.defaultdict(list)
    for e in w.recorder.of_kind("tx_event"):
        out[(e.data["station"], e.data["tx"])].append((e.data["type"], e.data["seq"], e.data["offline"]))
    return out


def check_delivery(w: World) -> None:
    """Every Started and Ended recorded exactly once; seqNos increasing and gap-free (drops accounted)."""
    got = receipts(w)
    for st_ in w.stations:
        dropped = {seq for tx, seq in st_.queue.dropped_log}
        txs = {tx for (sid, tx) in got if sid == st_.name}
        assert len(txs) == st_.sessions_completed, (st_.name, txs)
        for tx in txs:
            events = got[(st_.name, tx)]
            kinds = [k for k, _, _ in events]
            assert kinds.count("Started") == 1 and kinds.count("Ended") == 1, events
            seqs = [s for _, s, _ in events]
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), events  # increasing at the receiver
            assert kinds[0] == "Started" and kinds[-1] == "Ended", events
            dropped_here = {s for t, s in st_.queue.dropped_log if t == tx}
            assert sorted(set(seqs) | dropped_here) == list(range(seqs[-1] + 1)), (events, dropped)
            record = w.store[st_.name].transactions[tx]
            assert record.started and record.ended


# ---------------------------------------------------------------- scenarios


async def test_primary_down_moves_to_secondary_and_nothing_is_lost(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(3600):
        async with world() as w:
            await w.start_both()
            stations = [
                w.start_station(
                    f"ST-{i}", slots=two_slots(), session_duration_s=600.0, session_start_s=(20, 40)
                )
                for i in range(3)
            ]
            await wait_for(lambda: all(st_.booted for st_ in stations))
            assert {w.connected_to(s) for s in stations} == {"primary"}
            await trio.sleep(30)  # sessions under way
            w.net.set_host_down(CSMS_HOST)
            await wait_for(lambda: all(w.connected_to(s) == "secondary" for s in stations))
            for s in stations:
                assert s.network_profiles.active_slot == 1
                assert s.statistics().slot_switches == 1
                switched = [e for e in w.recorder.of_kind("network_slot_switched") if e.node == s.name]
                assert [(e.data["previous"], e.data["slot"]) for e in switched] == [(0, 1)]
                # B10.FR.10: BootNotification on the new slot
                boots = [e for e in w.recorder.of_kind("booted") if e.data.get("station") == s.name]
                assert [e.node for e in boots] == ["primary", "secondary"]
                # the failed attempts on slot 0 were recorded with their reason
                failed = [a for a in s.network_profiles.log if not a.ok]
                assert failed and all(a.endpoint == "slot0" and a.reason == "refused" for a in failed)
            for s in stations:
                await s.done.wait()
            check_delivery(w)
            assert w.csms_nodes["secondary"].statistics().transactions_ended == 3


async def test_events_produced_while_no_endpoint_is_up_arrive_offline_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """E04/E11: queued while offline, delivered after reconnecting with offline=true, seqNo continuous."""
    with trio.fail_after(3600):
        async with world() as w:
            await w.start_both()
            s = w.start_station("ST-1", slots=two_slots(), session_duration_s=600.0, meter_interval_s=60.0)
            await s.wait_online()
            await wait_for(lambda: bool(receipts(w)))  # Started delivered online
            w.net.set_host_down(CSMS_HOST)
            w.net.set_host_down(SECONDARY_HOST)
            await trio.sleep(900)  # the session ends while nothing is reachable
            assert s.sessions_completed == 1 and s.session is None
            assert len(s.queue) >= 3
            w.net.set_host_down(SECONDARY_HOST, False)
            await s.done.wait()
            ((_, events),) = receipts(w).items()
            assert events[0] == ("Started", 0, False)
            assert events[-1][0] == "Ended" and events[-1][2] is True  # produced offline
            assert [seq for _, seq, _ in events] == list(range(len(events)))
            offline = [off for _, _, off in events]
            assert offline == sorted(offline)  # online ones first, then everything queued while offline
            check_delivery(w)


async def test_each_slot_uses_its_own_trust_store(autojump_clock: trio.testing.MockClock) -> None:
    """A slot trusting only the primary root refuses the secondary's certificate: the trust is per endpoint."""
    with trio.fail_after(3600):
        async with world() as w:
            await w.start_both()
            w.net.set_host_down(CSMS_HOST)
            wrong = w.start_station("ST-wrong", slots=two_slots(secondary_trust_store=primary_trust()))
            right = w.start_station("ST-right", slots=two_slots())
            await right.wait_online()
            await trio.sleep(120)
            assert not wrong.booted
            reasons = {(a.endpoint, a.reason) for a in wrong.network_profiles.log}
            assert ("slot1", "cert_invalid:unknown_ca") in reasons and ("slot0", "refused") in reasons
            assert "InvalidCsmsCertificate" in [
                m.payload["type"] for m in wrong.queue.messages() if m.action == "SecurityEventNotification"
            ]
            assert w.connected_to(right) == "secondary"


@pytest.mark.parametrize(
    ("fallback", "after_blip", "after_loss"),
    [
        # B10.FR.08: every walk starts at the top, so any reconnect goes back to the primary
        ("restart_list", "primary", ["slot0"]),
        # B10.FR.07: the last working slot first (NetworkProfileConnectionAttempts = 2), then the next
        ("last_working", "secondary", ["slot1", "slot1", "slot0"]),
    ],
)
async def test_primary_back_policy_decides(
    autojump_clock: trio.testing.MockClock, fallback: FallbackPolicy, after_blip: str, after_loss: list[str]
) -> None:
    """Primary down -> secondary; primary back: the working link is kept; at the next reconnect the policy
    decides: a blip on the secondary link, then the secondary lost for good."""
    with trio.fail_after(3600):
        async with world() as w:
            await w.start_both()
            s = w.start_station("ST-1", slots=two_slots(), network_fallback=fallback, sessions=0)
            await s.wait_online()
            w.net.set_host_down(CSMS_HOST)
            await wait_for(lambda: w.connected_to(s) == "secondary")
            w.net.set_host_down(CSMS_HOST, False)
            await trio.sleep(600)
            assert w.connected_to(s) == "secondary"  # nothing makes a working station drop its link
            w.net.partition(s.name, SECONDARY_HOST)  # a blip: the link resets, the secondary stays reachable
            w.net.heal(s.name, SECONDARY_HOST)
            await trio.sleep(1)  # less than RetryBackOffWaitMinimum: the station is between connections
            assert w.connected_to(s) is None
            await wait_for(lambda: w.connected_to(s) is not None)
            assert w.connected_to(s) == after_blip
            if after_blip == "secondary":
                mark = len(s.network_profiles.log)
                w.net.set_host_down(SECONDARY_HOST)
                await wait_for(lambda: w.connected_to(s) == "primary")
                assert [a.endpoint for a in s.network_profiles.log[mark:]] == after_loss
            else:
                assert [a.endpoint for a in s.network_profiles.log[-1:]] == after_loss
            assert s.statistics().slot_switches == 2


async def test_set_network_profile_and_priority_round_trip(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(3600):
        async with world() as w:
            await w.start_both()
            both_roots = TrustStore(
                "CSMSRootCertificate", (make_test_pki(TEST_NOW).root.cert, secondary_root().cert)
            )
            s = w.start_station(
                "ST-1", csms_url=PRIMARY_URL, client_tls=ClientTls.build(TlsProfile(), both_roots), sessions=0
            )
            await s.wait_online()
            csms = w.csms_nodes["primary"]
            second = NetworkConnectionProfile(SECONDARY_URL, 2).to_ocpp()
            assert await csms.set_network_profile("ST-1", 1, second) == {"status": "Accepted"}
            plain = NetworkConnectionProfile("ws://csms3.evsim.test/ocpp", 1).to_ocpp()
            refused = await csms.set_network_profile("ST-1", 2, plain)
            assert refused["status"] == "Rejected"
            assert refused["statusInfo"]["reasonCode"] == "NoSecurityDowngrade"  # B09.FR.04/31
            bad_slot = await csms.set_network_profile("ST-1", 9, second)
            assert bad_slot["statusInfo"]["reasonCode"] == "InvalidConfSlot"  # B09.FR.05
            results = await csms.set_variables(
                "ST-1",
                {
                    ("OCPPCommCtrlr", "NetworkConfigurationPriority"): "0,5",
                },
            )
            assert results[0]["attributeStatus"] == "Rejected"  # B10.FR.02: slot 5 has no profile
            results = await csms.set_variables(
                "ST-1",
                {
                    ("OCPPCommCtrlr", "NetworkConfigurationPriority"): "1,0",
                    ("OCPPCommCtrlr", "NetworkProfileConnectionAttempts"): "1",
                    ("OCPPCommCtrlr", "RetryBackOffWaitMinimum"): "1",
                },
            )
            assert [r["attributeStatus"] for r in results] == ["Accepted"] * 3  # B10.FR.01
            got = await csms.call(
                "ST-1",
                "GetVariables",
                {
                    "getVariableData": [
                        {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": n}}
                        for n in ("NetworkConfigurationPriority", "ActiveNetworkProfile")
                    ]
                },
            )
            assert [r["attributeValue"] for r in got["getVariableResult"]] == ["1,0", "0"]
            await trio.sleep(300)
            assert w.connected_to(s) == "primary"  # the new priority waits for the next reconnect
            w.net.set_host_down(CSMS_HOST)  # a blip: the connection is lost...
            w.net.set_host_down(CSMS_HOST, False)
            await wait_for(lambda: w.connected_to(s) == "secondary")  # ...and the reconnect uses "1,0"
            assert s.network_profiles.order == (1, 0)
            assert s.network_profiles.active_slot == 1


async def test_per_slot_credentials_2_1(autojump_clock: trio.testing.MockClock) -> None:
    """OCPP 2.1 NetworkConnectionProfile.identity / basicAuthPassword: the secondary knows the station under
    another identity and password; the slot's credentials are used there, the station's elsewhere."""
    with trio.fail_after(3600):
        async with world() as w:
            await w.start_csms("primary", CSMS_HOST, make_test_pki(TEST_NOW).server_identity())
            alias_password = "another-password-of-20"
            await w.start_csms(
                "secondary",
                SECONDARY_HOST,
                secondary_identity(),
                default_password=None,
                passwords={"ST-1-alias": alias_password},
            )
            primary, secondary = two_slots()
            secondary = attrs.evolve(
                secondary,
                profile=attrs.evolve(
                    secondary.profile, identity="ST-1-alias", basic_auth_password=alias_password
                ),
            )
            s = w.start_station("ST-1", slots=(primary, secondary), sessions=0)
            await s.wait_online()
            w.net.set_host_down(CSMS_HOST)
            await wait_for(lambda: "ST-1-alias" in w.store and w.store["ST-1-alias"].connected)
            assert w.recorder.of_kind("upgrade_rejected") == []
            assert [e.data["station"] for e in w.recorder.of_kind("booted") if e.node == "secondary"] == [
                "ST-1-alias"
            ]


async def test_never_downgrades_unless_allowed(autojump_clock: trio.testing.MockClock) -> None:
    """Profile 3 station; the secondary slot is profile 2: skipped (reported) unless 3→2 is allowed."""
    pki = make_test_pki(TEST_NOW)
    with trio.fail_after(3600):
        async with world() as w:
            await w.start_csms("secondary", SECONDARY_HOST, secondary_identity())
            w.net.set_host_down(CSMS_HOST)  # the profile 3 primary is gone

            def slots(sid: str) -> tuple[NetworkSlot, ...]:
                return (
                    NetworkSlot(
                        0,
                        NetworkConnectionProfile(PRIMARY_URL, 3),
                        Endpoint(
                            "slot0", PRIMARY_URL, trust=primary_trust(), identity=pki.station_identity(sid)
                        ),
                    ),
                    two_slots()[1],
                )

            strict = w.start_station("ST-strict", slots=slots("ST-strict"), security_profile=3, sessions=0)
            lenient = w.start_station(
                "ST-lenient",
                slots=slots("ST-lenient"),
                security_profile=3,
                allow_security_downgrade=True,
                sessions=0,
            )
            await lenient.wait_online()
            await trio.sleep(300)
            assert not strict.booted
            assert {a.endpoint for a in strict.network_profiles.log} == {"slot0"}
            assert [(x.slot, x.reason) for x in strict.network_profiles.skipped] == [
                (1, "NoSecurityDowngrade")
            ]
            assert strict.statistics().slots_skipped >= 1
            assert w.connected_to(lenient) == "secondary"
            assert lenient.network_profiles.security_profile == 2


# ---------------------------------------------------------------- the property


HORIZON = 1500.0  # virtual seconds in which outages happen; sessions (<= 2 x (200 + 300 s)) fit in it
SETTLE = 600.0  # after the horizon: longer than the longest back-off (2+2)*2^3 + 4 = 36 s, many times over


@attrs.frozen
class Outage:
    start: float
    duration: float


@attrs.frozen
class Schedule:
    """What goes wrong in one example.

    Attributes:
        outages: per target.
        everywhere: outages of every target at once (the station is offline and queues).
        permanent: a target that stays down after the horizon (never all of them).
        lost_responses: the n-th TransactionEvent recorded by any CSMS loses its response: the link between
            that station and that endpoint is cut right after the CSMS recorded it (before it answers) and
            healed ``heal_after`` seconds later, so the station must resend, maybe to the other endpoint.
        heal_after: see ``lost_responses``.
        latency: one-way latency of every station-CSMS link (s): requests and responses are in flight when
            an outage starts, so some are lost on the way and must be resent.
    """

    outages: dict[str, tuple[Outage, ...]]
    everywhere: tuple[Outage, ...]
    permanent: str | None
    lost_responses: frozenset[int]
    heal_after: float
    latency: float


@attrs.frozen
class Topology:
    """The nodes of a property-test run, so a Local Controller layer plugs in without touching the checks.

    Attributes:
        targets: what outage schedules can take down (CSMS endpoints; controllers later).
        start: starts every node and the stations, ``await start(world, station_settings)``; returns the stations.
        uplink: ``uplink(world, station, csms_node)``: the host the station's link goes to when ``csms_node``
            recorded its message (where a lost response is injected); behind a controller, the controller.
    """

    targets: tuple[OutageTarget, ...]
    start: Callable[[World, dict[str, Any]], Awaitable[list[Station]]]
    uplink: Callable[[World, str, str], str]


async def start_two_csms(w: World, settings: dict[str, Any]) -> list[Station]:
    """Primary and secondary CSMS (shared store); two stations with both slots."""
    await w.start_both()
    return [w.start_station(f"ST-{i}", slots=two_slots(), **settings) for i in range(2)]


TWO_CSMS = Topology(
    targets=(OutageTarget("primary", CSMS_HOST), OutageTarget("secondary", SECONDARY_HOST)),
    start=start_two_csms,
    uplink=lambda w, station, csms_node: {"primary": CSMS_HOST, "secondary": SECONDARY_HOST}[csms_node],
)
TARGETS = TWO_CSMS.targets


@functools.lru_cache(maxsize=1)
def controller_identity() -> Identity:
    """The controller's own server certificate (CN = its host), from the root the stations trust."""
    return Identity.from_cert_key(make_test_pki(TEST_NOW).root.issue_server(LC_HOST, now=TEST_NOW))


def controller_topology(policy: UpstreamLossPolicy) -> Topology:
    """Stations -> LC -> {primary, secondary}.

    ``close_station``: each station's slot 1 goes to the secondary directly, so some path stays open whichever
    single target is down for good. ``keep_station``: the controller is the stations' only endpoint (the errata
    case: a controller that answers for its stations is their CSMS as far as they know; a bypass would let
    later messages overtake the ones it acknowledged and holds, and strand its backlog), so the controller is
    never the target that stays down.
    """

    async def start(w: World, settings: dict[str, Any]) -> list[Station]:
        await w.start_both()
        upstream = Service(
            "lc-upstream",
            (
                Endpoint("primary", PRIMARY_URL, priority=0, trust=primary_trust()),
                Endpoint("secondary", SECONDARY_URL, priority=1, trust=secondary_trust()),
            ),
            backoff=BACKOFF,
        )
        lc = LocalController(
            ControllerConfig(
                name="lc",
                host=LC_HOST,
                identity=controller_identity(),
                upstream=upstream,
                on_upstream_loss=policy,
            ),
            network=w.net,
            clock=w.clock,
            recorder=w.recorder,
            rng=random.Random(f"{settings['rng_seed']}:lc"),
        )
        await w.nursery.start(lc.run)
        slots: tuple[NetworkSlot, ...] = (
            NetworkSlot(
                0, NetworkConnectionProfile(LC_URL, 2), Endpoint("slot0", LC_URL, trust=primary_trust())
            ),
        )
        if policy == "close_station":
            slots += (two_slots()[1],)
        return [w.start_station(f"ST-{i}", slots=slots, **settings) for i in range(2)]

    def uplink(w: World, station: str, csms_node: str) -> str:
        st = next(s for s in w.stations if s.name == station)
        return LC_HOST if st.network_profiles.active_slot == 0 else SECONDARY_HOST

    return Topology(
        targets=(*TARGETS, OutageTarget("lc", LC_HOST)),
        start=start,
        uplink=uplink,
    )


def schedules(
    targets: Sequence[OutageTarget] = TARGETS, *, may_stay_down: Sequence[str] | None = None
) -> st.SearchStrategy[Schedule]:
    """Outage schedules over ``targets``; ``may_stay_down`` limits which one may stay down (default: any)."""
    outage = st.builds(
        Outage, start=st.floats(0, HORIZON - 1, allow_nan=False), duration=st.floats(1, 600, allow_nan=False)
    )
    return st.builds(
        Schedule,
        outages=st.fixed_dictionaries({t.name: st.lists(outage, max_size=3).map(tuple) for t in targets}),
        everywhere=st.lists(outage, max_size=2).map(tuple),
        permanent=st.none() | st.sampled_from(list(may_stay_down or [t.name for t in targets])),
        lost_responses=st.frozensets(st.integers(0, 40), max_size=4),
        heal_after=st.floats(0.5, 120, allow_nan=False),
        latency=st.sampled_from([0.0, 0.5, 2.0]),
    )


async def play(net: VirtualNetwork, target: OutageTarget, outages: Sequence[Outage], permanent: bool) -> None:
    """Apply one target's outages in virtual time (overlapping outages merge: down while any is active)."""
    edges = sorted(
        [(o.start, +1) for o in outages] + [(min(o.start + o.duration, HORIZON), -1) for o in outages]
    )
    depth = 0
    for t, delta in edges:
        await trio.sleep_until(t)
        depth += delta
        net.set_host_down(target.host, depth > 0)
    await trio.sleep_until(HORIZON)
    net.set_host_down(target.host, permanent)


def run_example(
    schedule: Schedule,
    fallback: FallbackPolicy,
    attempts: int,
    queue_max: int,
    seed: int,
    topology: Topology = TWO_CSMS,
) -> None:
    w: World
    recorded = 0

    def lose_response(ev: Event) -> None:
        nonlocal recorded
        if ev.kind != "tx_event":
            return
        recorded += 1
        if recorded - 1 in schedule.lost_responses:
            station = ev.data["station"]
            host = topology.uplink(w, station, ev.node)
            w.net.partition(station, host)  # before the CSMS's answer goes out

            async def heal() -> None:
                await trio.sleep(schedule.heal_after)
                w.net.heal(station, host)

            w.nursery.start_soon(heal)

    async def main() -> None:
        nonlocal w
        with trio.fail_after(HORIZON + SETTLE + 60):
            async with world(lose_response) as w:
                stations = await topology.start(
                    w,
                    {
                        "rng_seed": seed,
                        "sessions": 2,
                        "session_start_s": (1.0, 200.0),
                        "session_duration_s": 300.0,
                        "meter_interval_s": 60.0,
                        "network_fallback": fallback,
                        "network_attempts": attempts,
                        "queue_max": queue_max,
                    },
                )
                for s, target in itertools.product(stations, topology.targets):
                    w.net.set_link_policy(s.name, target.host, LinkPolicy(latency_s=schedule.latency))
                for target in topology.targets:
                    outages = schedule.outages[target.name] + schedule.everywhere
                    w.nursery.start_soon(play, w.net, target, outages, schedule.permanent == target.name)
                await trio.sleep_until(HORIZON + SETTLE)
                for s in stations:
                    # some endpoint is up, so no station ends disconnected; and its queue is delivered
                    assert s.session is not None and s.booted, (s.name, s.network_profiles.log[-5:])
                    assert s.sessions_completed == 2 and len(s.queue) == 0
                    assert w.connected_to(s) != schedule.permanent
                check_delivery(w)
                # what the example exercised (pytest --hypothesis-show-statistics)
                dups = sum(tx.duplicates for rec in w.store.values() for tx in rec.transactions.values())
                event(f"resent after a lost response: {dups > 0}")
                event(f"Updated events shed: {any(s.queue.dropped_total for s in stations)}")
                event(f"slot switches: {min(3, sum(s.network_profiles.switches for s in stations))}")
                offline = sum(e.data["offline"] for e in w.recorder.of_kind("tx_event"))
                event(f"offline events delivered: {offline > 0}")
                relayed = {e.data["endpoint"] for e in w.recorder.of_kind("upstream_connected")}
                if relayed:
                    event(f"controller upstream endpoints used: {sorted(relayed)}")
                    event(f"controller backlog replayed: {bool(w.recorder.of_kind('backlog_replay'))}")

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


@given(
    schedule=schedules(),
    fallback=st.sampled_from(["restart_list", "last_working"]),
    attempts=st.integers(1, 3),
    queue_max=st.sampled_from([4, 1000]),  # 4: the queue sheds intermediate Updated events under pressure
    seed=st.integers(0, 2**16),
)
def test_failover_property(
    schedule: Schedule, fallback: FallbackPolicy, attempts: int, queue_max: int, seed: int
) -> None:
    """Outage schedules for the primary and the secondary CSMS: every Started and Ended reaches a CSMS exactly
    once (resends after a lost response are recognised as duplicates), seqNo per transaction increasing and
    gap-free at the receiver (except the Updated events the queue reports as shed), and no station ends the run
    disconnected while an endpoint is up."""
    run_example(schedule, fallback, attempts, queue_max, seed)


CONTROLLER_TARGETS = controller_topology("close_station").targets


@given(
    schedule=schedules(CONTROLLER_TARGETS),
    fallback=st.sampled_from(["restart_list", "last_working"]),
    attempts=st.integers(1, 3),
    queue_max=st.sampled_from([4, 1000]),
    seed=st.integers(0, 2**16),
)
@example(  # found by Hypothesis: the controller opened an upstream link for a station that had given up on it
    # and moved to its direct slot; that link replaced the station's live one at the CSMS
    schedule=Schedule(
        outages={
            "primary": (Outage(840.3348015248024, 581.3091075231295),),
            "secondary": (Outage(430.26472004110354, 540.3278569507443),),
            "lc": (Outage(287.470096097488, 445.97937948138303), Outage(0.0, 1.0), Outage(0.0, 1.0)),
        },
        everywhere=(),
        permanent=None,
        lost_responses=frozenset(),
        heal_after=1.0,
        latency=0.0,
    ),
    fallback="restart_list",
    attempts=1,
    queue_max=4,
    seed=0,
)
def test_failover_property_behind_a_closing_controller(
    schedule: Schedule, fallback: FallbackPolicy, attempts: int, queue_max: int, seed: int
) -> None:
    """The property of :func:`test_failover_property` with a Local Controller (close_station, OCPP-J §6.3) in
    front of both CSMS and a direct slot to the secondary: outages of the primary, the secondary and the
    controller."""
    run_example(schedule, fallback, attempts, queue_max, seed, controller_topology("close_station"))


@given(
    schedule=schedules(CONTROLLER_TARGETS, may_stay_down=["primary", "secondary"]),
    fallback=st.sampled_from(["restart_list", "last_working"]),
    attempts=st.integers(1, 3),
    queue_max=st.sampled_from([4, 1000]),
    seed=st.integers(0, 2**16),
)
def test_failover_property_behind_a_keeping_controller(
    schedule: Schedule, fallback: FallbackPolicy, attempts: int, queue_max: int, seed: int
) -> None:
    """The same with a keep_station controller (ERR-201 §4.13) as the stations' only endpoint: it answers for
    them while its upstream is down and forwards their transaction messages, in order, once it is back."""
    run_example(schedule, fallback, attempts, queue_max, seed, controller_topology("keep_station"))
