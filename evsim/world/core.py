"""A whole charging network in one trio nursery: :func:`open_world` and :class:`World`.

Theory of operation. :func:`open_world` makes what every node of a run shares — the :class:`SimClock`, the
:class:`Recorder`, the network (in memory, or loopback TCP with every node's host name mapped to 127.0.0.1),
the per-run PKI and the seed — opens a nursery, and yields a :class:`World`. Each ``start_*`` method builds a
node from these and runs its ``run(*, task_status)`` entry point in the nursery, inside a cancel scope of its
own (:mod:`evsim.world.nodes`), and returns once the node is ready (a server listens, a station's connection
loop runs). Leaving the ``async with`` block cancels every node.

Nodes get their TLS settings one way: a :class:`~evsim.world.specs.Tls` value, resolved against the world's
PKI when the node's TLS configuration is built, and again whenever the world changes what it depends on (a
certificate is renewed or rotated, a root installed or removed, a CRL published). Open connections are never
disturbed by such a change; the next handshake uses it.

Time. Under ``clock="virtual"`` the world needs trio's :class:`trio.testing.MockClock` with
``autojump_threshold=0`` as the run's clock, so time jumps to the next timer whenever every task is blocked
and a simulated day passes in seconds. A world cannot install a clock into a ``trio.run`` that already
runs, so it checks: run under :func:`run` (``evsim.world.run(main)``), ``trio.run(main,
clock=MockClock(autojump_threshold=0))``, or pytest-trio's ``autojump_clock`` fixture. ``clock="real"``
refuses a MockClock for the same reason (its time would not be real).

Randomness. Each node gets ``random.Random(f"{seed}:{name}")``, so a node's behaviour depends only on the
seed and its own name, not on how many nodes were started before it.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeAlias, TypeVar

import attrs
import trio
import trio.testing

from evsim import interrupts
from evsim.backoff import RetryBackOff
from evsim.clock import SimClock, real_utcnow, virtual_clock
from evsim.errors import ConfigError, OcppError, TransportError
from evsim.link.service import Endpoint, Service
from evsim.link.slots import NetworkSlot
from evsim.metrics.rundir import Sample
from evsim.metrics.topology import Topology
from evsim.nodes.admission import TrustedController
from evsim.nodes.certificates import CertificateSettings
from evsim.nodes.controller import ControllerConfig, LocalController
from evsim.nodes.csms import Csms, CsmsConfig
from evsim.nodes.csms_certs import DegradedSigner, SigningSettings, SubCaSigner
from evsim.nodes.csms_records import StationRecord
from evsim.nodes.expiry import ExpiryMonitor
from evsim.nodes.station import Station
from evsim.nodes.station_model import StationConfig
from evsim.ocpp.netprofile import DEFAULT_SLOT_NUMBERS, NetworkConnectionProfile
from evsim.recorder import DEFAULT_KEEP, Event, Recorder
from evsim.seeded import SeededRandom
from evsim.timers import VirtualTimers
from evsim.tls import (
    Identity,
    PeerPolicy,
    SessionStore,
)
from evsim.tls.pairing import PeerTrust
from evsim.world.actions import Action
from evsim.world.base import (
    RUN_PASSWORD,
    WORLD_START,
    NetworkKind,
    Selector,
    _identity,
)
from evsim.world.capture import open_capture
from evsim.world.clocks import ClockSpec, WorldClocks
from evsim.world.energy import WorldEnergy
from evsim.world.files import FileSettings, WorldFiles
from evsim.world.links import WorldLinks
from evsim.world.nodes import ControllerNode, CsmsNode, StationGroup, StationNode
from evsim.world.pki import WorldPki
from evsim.world.specs import (
    DEFAULT_TRUST,
    CertificateSpec,
    KeyType,
    Route,
    Tls,
    TrustSpec,
)

ClockKind: TypeAlias = Literal["virtual", "real"]
T = TypeVar("T")


def run(main: Callable[..., Awaitable[T]], *args: object, clock: ClockKind = "virtual") -> T:
    """``trio.run(main, *args)`` with the clock a world of that ``clock`` kind needs.

    Args:
        main: the async function to run (it opens the world).
        args: its positional arguments.
        clock: ``"virtual"`` runs under ``MockClock(autojump_threshold=0)``, ``"real"`` on trio's clock.

    Returns:
        What ``main`` returns.
    """
    mock = virtual_clock() if clock == "virtual" else None
    return interrupts.run(main, *args, clock=mock)


def check_clock(clock: ClockKind) -> None:
    """Refuse a world whose clock kind does not match the clock ``trio.run`` was given.

    Raises:
        ConfigError: ``"virtual"`` outside a MockClock, ``"real"`` under one, or an unknown kind.
    """
    current = trio.lowlevel.current_clock()
    mock = isinstance(current, trio.testing.MockClock)
    if clock == "virtual" and not mock:
        raise ConfigError(
            'clock="virtual" needs trio.testing.MockClock as the clock of trio.run',
            path="clock",
            value=clock,
            fix="run under evsim.world.run(main), trio.run(main, clock=MockClock(autojump_threshold=0)), "
            'or pytest-trio\'s autojump_clock fixture; or use clock="real"',
        )
    if clock == "real" and mock:
        raise ConfigError(
            'clock="real" but trio.run was given a MockClock (its time is virtual)',
            path="clock",
            value=clock,
            fix='use clock="virtual"',
        )
    if clock not in ("virtual", "real"):
        raise ConfigError("unknown clock", path="clock", value=clock, fix='use "virtual" or "real"')


@contextlib.asynccontextmanager
async def open_world(
    *,
    seed: int = 1,
    clock: ClockKind = "virtual",
    network: NetworkKind = "memory",
    fault_relay: bool = False,
    start: _dt.datetime | None = None,
    organization: str = "evsim",
    key_type: KeyType = "ec",
    roots: dict[str, KeyType] | None = None,
    crl_lifetime: float = 7 * 86_400.0,
    sink: Callable[[Event], None] | None = None,
    echo: bool = False,
    expiry_warning: float | None = None,
    pcap: str | Path | None = None,
    intermediates: Mapping[str, tuple[str, KeyType]] | None = None,
    station_issuer: str = "root",
    keep_events: int | None = DEFAULT_KEEP,
) -> AsyncIterator[World]:
    """Open a world: shared clock, recorder, network and PKI, and a nursery its nodes run in.

    Args:
        seed: seed of every random choice the world's nodes make.
        clock: ``"virtual"`` (needs trio's MockClock, see the module docstring) or ``"real"``.
        network: ``"memory"`` (in-process) or ``"tcp"`` (loopback; host names map to 127.0.0.1).
        fault_relay: on loopback TCP, connect every node through a :class:`~evsim.net.relay.FaultRelay` the world
            runs, so partitions, hosts down, link latency and resets work as in memory (one extra loopback hop
            per connection; ignored in memory, which has faults of its own).
        start: the simulation's wall time at the start; None: :data:`WORLD_START` under the virtual clock, the
            machine's time under the real one.
        organization: O of every certificate the PKI issues.
        key_type: key type of the PKI's CAs and, by default, of its leaves.
        roots: further root CAs by name (``"rogue"`` for attackers is added when an attack needs it).
        crl_lifetime: how long each published CRL stays valid, seconds.
        sink: called with every event as it is recorded.
        echo: print events as they are recorded.
        expiry_warning: every node emits ``cert_expiring`` this many seconds before the notAfter of its own
            certificate and of each peer certificate it met (:mod:`evsim.nodes.expiry`); None: no warnings.
        pcap: write every connection of the world's network to this pcapng file, with the TLS secrets of
            every handshake in the process (:mod:`evsim.net.capture`; timestamps are the simulation's wall
            time; on loopback TCP, as seen by the client ends); None: no capture, at no cost.
        intermediates: intermediate CAs by name, ``(issuer, key_type)`` (issuers first); a CSMS certificate
            names one as its ``issuer``.
        station_issuer: the CA that issues the station sub-CA (``root`` or an intermediate under it).
        keep_events: events the world's recorder keeps in memory (``Recorder.keep``; None: every one).

    Yields:
        The world; leaving the block cancels every node in it.

    Raises:
        ConfigError: the clock kind does not match trio's clock, an unknown network kind, or another
            capture runs in this process.
    """
    check_clock(clock)
    if network not in ("memory", "tcp"):
        raise ConfigError("unknown network", path="network", value=network, fix='use "memory" or "tcp"')
    anchor = start if start is not None else (WORLD_START if clock == "virtual" else real_utcnow())
    sim_clock = SimClock.start(anchor)
    recorder = Recorder(sim_clock, sink=sink, echo=echo, keep=keep_events)
    pki = WorldPki.build(
        anchor,
        organization=organization,
        key_type=key_type,
        roots=roots,
        crl_lifetime_s=crl_lifetime,
        intermediates=intermediates,
        station_issuer=station_issuer,
    )
    with open_capture(pcap, clock=sim_clock) as capture:
        async with trio.open_nursery() as nursery:
            world = World(
                seed=seed,
                clock=sim_clock,
                recorder=recorder,
                network=network,
                pki=pki,
                nursery=nursery,
                fault_relay=fault_relay,
            )
            world.attach_capture(capture)
            if clock == "virtual":
                await nursery.start(VirtualTimers().run)  # cheaper wake-ups (evsim.timers)
            if world.relay is not None:
                await nursery.start(world.relay.run)
            if expiry_warning is not None:
                world.expiry = ExpiryMonitor(
                    expiry_warning, clock=sim_clock, recorder=recorder, running=world.is_running
                )
                nursery.start_soon(world.expiry.run)
            try:
                yield world
            finally:
                nursery.cancel_scope.cancel()


def _plain(value: object) -> object:
    """An event field as JSON has it (tuples become lists)."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


class World(WorldClocks, WorldEnergy, WorldFiles, WorldLinks):
    """A network of nodes sharing one clock, recorder, network and PKI (open it with :func:`open_world`).

    Starting nodes, their lifecycle and the network are here; TLS and certificates in
    :class:`~evsim.world.trust.WorldTls`, attackers in :class:`~evsim.world.attackers.WorldAttacks`, link stalls in
    :class:`~evsim.world.links.WorldLinks`, certificate
    operations over OCPP in :class:`~evsim.world.lifecycle.WorldLifecycle`, the shared state and selectors in
    :class:`~evsim.world.base.WorldBase`.
    """

    # ------------------------------------------------------------------ starting nodes

    async def start_csms(
        self,
        name: str = "csms",
        *,
        host: str | None = None,
        port: int | None = None,
        security_profile: int = 2,
        tls: Tls | None = None,
        insecure_allow_plain_ws: bool = False,
        ocpp_versions: tuple[str, ...] = ("2.0.1", "2.1"),
        heartbeat_interval: float = 300.0,
        password: str | None = None,
        accept_unknown_stations: bool = True,
        secondary_of: str | CsmsNode | None = None,
        behind_controller: Literal["require_station_cert", "trust_controller"] = "require_station_cert",
        trusted_controllers: Sequence[str] = (),
        signing: SigningSettings | None = None,
        signed_validity: float = 365 * 86_400.0,
    ) -> CsmsNode:
        """Start a CSMS; returns once it listens.

        Args:
            name: its name (events, selectors).
            host: the host it listens on (its certificate's CN and SAN); default ``<name>.evsim.test``.
            port: default 443 in memory, a free port on loopback TCP.
            security_profile: 1 (plain ws, needs ``insecure_allow_plain_ws``), 2 (TLS + password) or 3 (mutual
                TLS).
            tls: its TLS settings (profile, certificate, client-certificate trust, pins, OCSP stapling).
            insecure_allow_plain_ws: the explicit opt-in profile 1 needs.
            ocpp_versions: versions served, in preference order.
            heartbeat_interval: the interval in BootNotificationResponse, whole seconds.
            password: the Basic-auth password it accepts from any station; None: the world's.
            accept_unknown_stations: False refuses identities it has no password for (HTTP 404).
            secondary_of: the CSMS this one is a secondary endpoint of (they share station records).
            behind_controller: profile 3: whether a controller's certificate may carry stations.
            trusted_controllers: host names of the controllers ``"trust_controller"`` accepts.
            signing: how many station CSRs it signs at once and lets wait.
            signed_validity: validity of the station certificates it signs, seconds (whole days).

        It signs station CSRs (A02/A03) with the world PKI's station sub-CA, through a
        :class:`~evsim.nodes.csms_certs.DegradedSigner` that :meth:`degrade_ca` slows down or makes fail
        (``node.signer``).
        """
        tls = tls or Tls()
        host = host or f"{name}.evsim.test"
        self._claim(name, host)
        primary = self._name(secondary_of) if secondary_of is not None else name
        server_tls = None
        cert = None
        if security_profile >= 2:
            if tls.identity is None:
                cert = self.pki.server_certificate(host, tls.certificate)
                identity = Identity.from_cert_key(cert)
            else:
                identity = _identity(tls.identity, name)
            server_tls = self._server_tls(name, security_profile, tls, identity)
        csms = Csms(
            CsmsConfig(
                name=name,
                host=host,
                port=self._port(port),
                security_profile=security_profile,
                insecure_allow_plain_ws=insecure_allow_plain_ws,
                ocpp_versions=ocpp_versions,
                heartbeat_interval=int(heartbeat_interval),
                organization=self.pki.organization,
                default_password=password or RUN_PASSWORD,
                accept_unknown_stations=accept_unknown_stations,
                behind_controller=behind_controller,
                trusted_controllers=self._trusted_controllers(trusted_controllers),
                signing=signing or SigningSettings(),
                client_status=self._client_status(tls) if security_profile == 3 else None,
            ),
            network=self.network,
            server_tls=server_tls,
            clock=self.clock,
            recorder=self.recorder,
            store=self._stores.setdefault(primary, {}),
            signer=(
                signer := DegradedSigner(
                    SubCaSigner(self.pki.station_ca, days=max(1, math.ceil(signed_validity / 86_400))),
                    rng=self.rng(f"{name}:ca"),
                    name="station_sub_ca",
                )
            ),
        )
        csms.cpu = self.cpu_for(name)
        node = CsmsNode(csms, tls=tls, primary=primary, station_password=password)
        node.certificate = cert
        node.signer = signer
        csms.expiry = self.expiry
        if self.expiry is not None and server_tls is not None:
            self.expiry.note(name, server_tls.identity.chain[0], role="own")
        self.csms[name] = node
        await node.start_in(self.nursery)
        assert csms.address is not None
        node.port = csms.address[1]
        return node

    def _trusted_controllers(self, hosts: Iterable[str]) -> tuple[TrustedController, ...]:
        """Controllers a profile 3 server lets carry other identities: their certificate's (O, CN)."""
        return tuple(TrustedController(self.pki.organization, h) for h in hosts)

    async def start_controller(
        self,
        name: str,
        *,
        upstream: Sequence[Route | str | CsmsNode | ControllerNode],
        host: str | None = None,
        port: int | None = None,
        security_profile: int = 2,
        tls: Tls | None = None,
        insecure_allow_plain_ws: bool = False,
        upstream_security_profile: int = 2,
        failover: Literal["priority", "round_robin", "sticky"] = "priority",
        on_upstream_loss: Literal["close_station", "keep_station"] = "close_station",
        upstream_connect_attempts: int = 3,
        retry_backoff: RetryBackOff | None = None,
        behind_controller: Literal["require_station_cert", "trust_controller"] = "require_station_cert",
        trusted_controllers: Sequence[str] = (),
        clock: ClockSpec | None = None,
        pairing: PeerTrust | None = None,
    ) -> ControllerNode:
        """Start a Local Controller (its upstream nodes already run); returns once it listens.

        Args:
            name: its name; also the host it connects upstream from.
            upstream: the CSMS or controllers it connects to for each station, in failover order (a
                :class:`Route` for its own priority or TLS settings).
            host: the host stations connect to (its certificate's CN); default ``<name>.evsim.test``.
            port: default 443 in memory, a free port on loopback TCP.
            security_profile: towards its stations.
            tls: listener and (by default) upstream TLS settings; ``trust`` is whom the upstream links trust.
            insecure_allow_plain_ws: the explicit opt-in profile 1 needs.
            upstream_security_profile: of the upstream links.
            failover: the upstream service's failover policy.
            on_upstream_loss: ``"close_station"`` (OCPP-J §6.3) or ``"keep_station"``.
            upstream_connect_attempts: attempts before a new station is refused (1013).
            retry_backoff: the upstream back-off; default OCPP's (3 s, 3 s, 4 doublings).
            behind_controller, trusted_controllers: profile 3 below a chain of controllers (hosts).
            clock: its clock and NTS servers (:mod:`evsim.world.clocks`); default a perfect clock.
            pairing: profile 3 with SHIP-style pairing of the stations' self-signed certificates instead of the
                run's CA (``client_auth = "pairing"``; events at the controller; windows with
                :meth:`open_pairing_window`).
        """
        tls = tls or Tls()
        host = host or f"{name}.evsim.test"
        self._claim(name, host)
        routes = tuple(r if isinstance(r, Route) else Route(to=self._name(r)) for r in upstream)
        identity: Identity | None = None
        if security_profile >= 2 or upstream_security_profile == 3:
            identity = (
                Identity.from_cert_key(self.pki.controller_certificate(host, tls.certificate))
                if tls.identity is None
                else _identity(tls.identity, name)
            )
        config = ControllerConfig(
            name=name,
            host=host,
            port=self._port(port),
            security_profile=security_profile,
            insecure_allow_plain_ws=insecure_allow_plain_ws,
            tls_profile=tls.profile,
            identity=identity if security_profile >= 2 else None,
            client_trust=self._client_trust(tls) if security_profile == 3 and pairing is None else None,
            client_status=self._client_status(tls) if security_profile == 3 and pairing is None else None,
            pairing=None if pairing is None else self.pairing_policy(name, pairing),
            organization=self.pki.organization,
            behind_controller=behind_controller,
            trusted_controllers=self._trusted_controllers(trusted_controllers),
            upstream=self._upstream_service(
                name, routes, tls, upstream_security_profile, identity, failover, retry_backoff
            ),
            upstream_default_password=RUN_PASSWORD,
            upstream_connect_attempts=upstream_connect_attempts,
            on_upstream_loss=on_upstream_loss,
        )
        lc = LocalController(
            config,
            network=self.network,
            clock=self.station_clock(name, clock or ClockSpec()),
            recorder=self.recorder,
            rng=self.rng(name),
        )
        lc.expiry = self.expiry
        lc.cpu = self.cpu_for(name)
        if self.expiry is not None and identity is not None:
            self.expiry.note(name, identity.chain[0], role="own")
        node = ControllerNode(lc, tls=tls, routes=routes, upstream_security_profile=upstream_security_profile)
        self.controllers[name] = node
        await self.controller_time(node, clock or ClockSpec())
        await node.start_in(self.nursery)
        assert lc.address is not None
        node.port = lc.address[1]
        return node

    def _upstream_service(
        self,
        name: str,
        routes: Sequence[Route],
        tls: Tls,
        security_profile: int,
        identity: Identity | None,
        failover: Literal["priority", "round_robin", "sticky"],
        backoff: RetryBackOff | None,
    ) -> Service:
        endpoints = []
        for route in routes:
            url = self.url(route.to, security_profile)
            if security_profile == 1:
                endpoints.append(Endpoint(route.to, url, priority=route.priority))
                continue
            endpoints.append(
                Endpoint(
                    route.to,
                    url,
                    priority=route.priority,
                    profile=route.profile or tls.profile,
                    trust=self.trust_store(route.trust or tls.trust),
                    identity=identity if security_profile == 3 else None,
                )
            )
        return Service(f"{name}-upstream", endpoints, policy=failover, backoff=backoff or RetryBackOff())

    def resolve_csms(self, node: str) -> str:
        """The CSMS a node leads to: itself, or its controller's first upstream, recursively."""
        seen: set[str] = set()
        while node in self.controllers and node not in seen:
            seen.add(node)
            node = self.controllers[node].routes[0].to
        return node

    async def start_stations(
        self,
        count: int = 1,
        *,
        csms: str | CsmsNode | ControllerNode | None = None,
        routes: Sequence[Route] = (),
        name: str | None = None,
        id_pattern: str | None = None,
        security_profile: int | None = None,
        tls: Tls | None = None,
        password: str | None = None,
        ocpp_versions: tuple[str, ...] = ("2.0.1",),
        sessions: int = 1,
        session_start: tuple[float, float] = (5.0, 30.0),
        session_duration: float = 600.0,
        meter_interval: float = 60.0,
        charge_power: float = 11_000.0,
        heartbeat_fallback: float = 300.0,
        retry_backoff: RetryBackOff | None = None,
        queue_max: int = 1000,
        connect_window: int = 0,
        network_attempts: int = 3,
        fallback: Literal["restart_list", "last_working"] = "restart_list",
        certificates: CertificateSettings | None = None,
        clock: ClockSpec | None = None,
        files: Sequence[str] = (),
        file_settings: FileSettings | None = None,
        numbers: range | None = None,
    ) -> StationGroup:
        """Start ``count`` stations that behave alike; returns once each one's connection loop runs.

        Args:
            count: how many.
            csms: the CSMS (or controller) they connect to; or give ``routes``.
            routes: endpoints in failover order, one network-profile slot each.
            name: the group's name; default ``fleet`` (``fleet2``... when taken).
            id_pattern: ``str.format`` pattern with field ``n`` (1-based); default ``<name>-{n:04d}``.
            security_profile: default the first endpoint's.
            tls: the stations' TLS settings (profile, trust, pins, change, session cache; ``certificate`` is
                the validity of profile 3 station certificates).
            password: Basic-auth password (profiles 1, 2); default the CSMS's.
            ocpp_versions: offered, in preference order.
            sessions: charging sessions per station.
            session_start: (min, max) random delay before each session, seconds.
            session_duration: seconds an EV charges.
            meter_interval: seconds between meter values.
            charge_power: W.
            heartbeat_fallback: heartbeat interval until the CSMS gives one, seconds.
            retry_backoff: reconnect back-off; default OCPP's.
            queue_max: offline message queue threshold.
            connect_window: how many of them may be setting up a connection at once, as ``evsim stations
                --connect-window`` (:mod:`evsim.nodes.setup_window`); 0: no limit.
            network_attempts: attempts per slot before the next (with ``routes``).
            fallback: the slot walk after every slot failed (with ``routes``).
            certificates: their certificate device model (key pair of a CSR, A03 renewal threshold,
                CertSigningWaitMinimum / RepeatTimes...); default: the defaults with the PKI's organization as
                OrganizationName.
            clock: their clocks (offset, drift, a dead clock) and time sources (NTS servers, currentTime);
                default perfect clocks (:mod:`evsim.world.clocks`).
            files: the file services (:meth:`add_file_service`) their firmware updates and log uploads use.
            file_settings: their retries, install time and log size for file transfers.
            numbers: start only these of the ``count`` (a shard, :mod:`evsim.shards`); ids stay the fleet's.
        """
        clock = clock or ClockSpec()
        if (csms is None) == (not routes):
            raise ConfigError(
                "give the stations either csms= or routes=", path="csms", fix="e.g. csms=world.csms['main']"
            )
        tls = tls or Tls()
        if name is None:
            name, i = "fleet", 1
            while name in self.groups:
                i += 1
                name = f"fleet{i}"
        pattern = id_pattern or f"{name}-{{n:04d}}"
        routes = tuple(routes) if routes else (Route(to=self._name(csms)),)  # type: ignore[arg-type]
        first = routes[0].to
        server: CsmsNode | ControllerNode = (
            self.csms[first] if first in self.csms else self.controllers[first]
        )
        sp = server.security_profile if security_profile is None else security_profile
        resolved = self.resolve_csms(first)
        trust = tls.trust if isinstance(tls.trust, TrustSpec) or tls.trust is None else None
        group = StationGroup(
            name,
            csms=resolved,
            security_profile=sp,
            tls=tls,
            roots=(trust or DEFAULT_TRUST).roots,
            routes=routes if csms is None else (),
            password=password,
            backoff=retry_backoff or RetryBackOff(),
        )
        if name in self.groups or name in self.csms or name in self.controllers:
            raise ConfigError(f"a node named {name!r} exists already", value=name, fix="give it another name")
        self.groups[name] = group
        if numbers is not None:  # the whole group's ids, for draws made over all its stations
            group.fleet_ids = [pattern.format(n=n) for n in range(1, count + 1)]
        csms_node = self.csms[resolved]
        common: dict[str, Any] = {
            "security_profile": sp,
            "password": (password or csms_node.station_password or RUN_PASSWORD) if sp < 3 else None,
            "ocpp_versions": ocpp_versions,
            "sessions": sessions,
            "session_start_s": session_start,
            "session_duration_s": session_duration,
            "meter_interval_s": meter_interval,
            "charge_power_w": charge_power,
            "default_heartbeat_s": heartbeat_fallback,
            "backoff": group.backoff,
            "queue_max": queue_max,
            "certificates": certificates or CertificateSettings(organization_name=self.pki.organization),
            "clock": clock.settings(),
        }
        window = trio.CapacityLimiter(connect_window) if connect_window > 0 else None
        for n in range(1, count + 1) if numbers is None else numbers:
            sid = pattern.format(n=n)
            if sid in self.stations or sid in self.csms or sid in self.controllers or sid in self.groups:
                raise ConfigError(f"station id {sid!r} is taken", value=pattern, fix="use another id_pattern")
            peer = None
            if tls.pins is not None or tls.change is not None:
                peer = self._station_peer_policy(sid, tls, sid)
            endpoint_peers: list[PeerPolicy] = []
            if group.routes:
                slots = tuple(
                    self._slot(group, sid, i, r, peer, endpoint_peers) for i, r in enumerate(group.routes)
                )
                config = StationConfig(
                    station_id=sid,
                    **common,
                    network_slots=slots,
                    network_priority=tuple(range(len(slots))),
                    network_attempts=network_attempts,
                    network_fallback=fallback,
                )
            else:
                config = StationConfig(station_id=sid, csms_url=self.url(first, sp), **common)
            station = Station(
                config,
                network=self.network,
                client_tls=self._client_tls(group, sid, peer),
                clock=self.station_clock(sid, clock),
                recorder=self.recorder,
                rng=SeededRandom(f"{self.seed}:{sid}"),  # as self.rng(sid), seeded on its first draw
                files=self.files_config(group, sid, files, file_settings or FileSettings())
                if files
                else None,
            )
            station.tls_sessions = SessionStore(tls.session_cache) if tls.session_cache else None
            self.use_nts(station, group, clock)
            station.expiry = self.expiry
            station.cpu = self.cpu_for(group.name, sid)
            station.connect_window = window
            station.tally = self.tally  # (a new station: not connected, not done, no failures)
            station.queue.count_in(self.tally)
            if self.expiry is not None and station.certs.identity is not None:
                self.expiry.note(sid, station.certs.identity.cert, role="own")
            node = StationNode(station, group)
            node.peer = peer
            node.endpoint_peers = endpoint_peers
            group.stations.append(node)
            self.stations[sid] = node
            await node.start_in(self.nursery)
        return group

    def _slot(
        self,
        group: StationGroup,
        sid: str,
        number: int,
        route: Route,
        peer: PeerPolicy | None,
        endpoint_peers: list[PeerPolicy],
    ) -> NetworkSlot:
        """The network-profile slot of one endpoint; its own TLS bundle when the endpoint overrides trust,
        profile or pins (otherwise the station's installed TLS configuration serves it, with its peer policy)."""
        sp = group.security_profile
        url = self.url(route.to, sp)
        profile = NetworkConnectionProfile(url, sp)
        if sp == 1 or not route.overrides_tls:
            return NetworkSlot(number, profile)
        identity = self._station_identity(group, sid) if sp == 3 else None
        if route.pins is not None:  # the endpoint's own pins (with the group's change policy)
            peer = self._station_peer_policy(
                sid, attrs.evolve(group.tls, pins=route.pins), f"{sid}:{route.to}"
            )
            endpoint_peers.append(peer)
        tls = Endpoint(
            f"slot{number}",
            url,
            profile=route.profile or group.tls.profile,
            trust=self.trust_store(route.trust or group.tls.trust),
            identity=identity,
            peer=peer,
        )
        return NetworkSlot(number, profile, tls)

    # ------------------------------------------------------------------ lifecycle

    async def stop(self, target: Selector) -> None:
        """Stop a node, a group's stations, or a station. A stopped CSMS or controller's host is down
        (connections to it are refused) until it starts again."""
        name = self._name(target)
        if name in self.nts_servers:
            self.stop_nts_server(name)
            return
        if name in self.file_servers or name in self.controllers:
            node = self.file_servers.get(name) or self.controllers[name]
            node.stop()
            if self.faults is not None:
                self.faults.set_host_down(node.host)
            return
        csms_names, station_ids = self.targets(name)
        for n in csms_names:
            self.csms[n].stop()
            if self.faults is not None:
                self.faults.set_host_down(self.csms[n].host)
        for sid in station_ids:
            self.stations[sid].stop()

    async def start(self, target: Selector) -> None:
        """Start again what :meth:`stop` stopped (the same node objects, their records kept)."""
        name = self._name(target)
        if name in self.nts_servers:
            await self.start_nts_server_again(name)
            return
        if name in self.file_servers or name in self.controllers:
            node = self.file_servers.get(name) or self.controllers[name]
            if self.faults is not None:
                self.faults.set_host_down(node.host, down=False)
            await node.start_in(self.nursery)
            return
        csms_names, station_ids = self.targets(name)
        for n in csms_names:
            if self.faults is not None:
                self.faults.set_host_down(self.csms[n].host, down=False)
            await self.csms[n].start_in(self.nursery)
        for sid in station_ids:
            await self.stations[sid].start_in(self.nursery)

    async def set_network_profile(self, target: Selector, to: str, *, reconnect: bool = True) -> None:
        """B09/B10 from the CSMS holding each station's link: SetNetworkProfile for the new endpoint (a free
        slot, or the slot that already names it), SetVariables NetworkConfigurationPriority with that slot
        first; with ``reconnect`` the station's link is reset so the change takes effect now. Each station
        moves in a task of its own; this returns at once."""
        if reconnect:
            self._faults("set_network_profile with reconnect")
        _, station_ids = self.targets(target)
        for sid in station_ids:
            self.nursery.start_soon(self._move_station, sid, to, reconnect)

    async def _move_station(self, sid: str, to: str, reconnect: bool) -> None:
        node = self.stations[sid]
        station = node.station
        group = node.group
        holder = next(
            (
                c.csms
                for c in self.csms.values()
                if (r := c.csms.stations.get(sid)) is not None and r.session is not None
            ),
            None,
        )
        if holder is None or station.session is None:
            self.recorder.emit("timeline", "network_profile_not_sent", station=sid, reason="station offline")
            return
        profiles = station.network_profiles
        known = [i for i, r in enumerate(group.routes) if r.to == to]
        slot = known[0] if known else None
        if slot is None:
            free = [n for n in DEFAULT_SLOT_NUMBERS if n not in profiles.priority and n not in profiles.slots]
            if not free:
                self.recorder.emit("timeline", "network_profile_not_sent", station=sid, reason="no free slot")
                return
            slot = free[0]
            profile = NetworkConnectionProfile(self.url(to, group.security_profile), group.security_profile)
            try:
                with trio.fail_after(60):
                    await holder.set_network_profile(sid, slot, profile.to_ocpp())
            except (KeyError, OcppError, TransportError, trio.TooSlowError) as exc:
                self.recorder.emit(
                    "timeline", "network_profile_not_sent", station=sid, reason=type(exc).__name__
                )
                return
        priority = ",".join(str(n) for n in [slot, *(n for n in profiles.priority if n != slot)])
        try:
            with trio.fail_after(60):
                await holder.set_variables(sid, {("OCPPCommCtrlr", "NetworkConfigurationPriority"): priority})
        except (KeyError, OcppError, TransportError, trio.TooSlowError) as exc:
            self.recorder.emit("timeline", "network_profile_not_sent", station=sid, reason=type(exc).__name__)
            return
        if reconnect and self.faults is not None:
            for host in self.select("*"):
                if host not in self.stations:
                    self.faults.partition(sid, host)
                    self.faults.heal(sid, host)

    # ------------------------------------------------------------------ observing

    def station_records(self) -> dict[str, StationRecord]:
        """Every station record once (a primary and its secondaries share one store)."""
        out: dict[str, StationRecord] = {}
        for c in self.csms.values():
            for sid, rec in c.csms.stations.items():
                out.setdefault(sid, rec)
        return out

    def sample(self) -> Sample:
        """The run's figures now (one row of ``metrics.csv``)."""
        counts = self.recorder.counts
        csms = [c.csms for c in self.csms.values()]
        csms_handshake_failures = sum(sum(c.statistics_handshake_failures().values()) for c in csms)
        # The stations' figures are kept up to date by the stations themselves (a walk over them cost ≈2 ms per
        # sample at 1,000 stations, a cache miss per station and field: 3 % of a 4 h scale run).
        tally = self.tally
        return Sample(
            t=round(self.clock.elapsed(), 6),
            connected_stations=tally.connected,
            stations=len(self.stations),
            messages_total=sum(c.totals["messages"] for c in csms),
            handshakes_ok=counts["handshake_ok"],
            handshakes_failed=counts["handshake_failed"] - csms_handshake_failures,
            tx_started=sum(c.totals["tx_started"] for c in csms),
            tx_ended=sum(c.totals["tx_ended"] for c in csms),
            queued_messages=tally.queued,
            done_stations=tally.done,
            connect_failures=tally.connect_failures,
        )

    def topology(self) -> Topology:
        """The groups, their CSMS, secondaries and hosts (:class:`evsim.metrics.topology.Topology`)."""

        topo = Topology.from_groups(
            {name: g.ids for name, g in self.groups.items()},
            {name: g.csms for name, g in self.groups.items()},
        )
        operators = {name: c.primary for name, c in self.csms.items() if c.primary != name}
        return attrs.evolve(topo, operators=operators, hosts=dict(self._hosts))

    def summary(self) -> Any:
        """The summary tables a scenario run prints (:class:`evsim.metrics.summary.Summary`; ``render()``
        gives the text), computed from the events recorded so far."""
        from evsim.metrics.summary import summarize

        return summarize(
            list(self.recorder.events),
            self.topology(),
            messages={sid: dict(rec.messages) for sid, rec in self.station_records().items()},
            endpoint_messages={
                name: {sid: dict(by_action) for sid, by_action in c.csms.received.items()}
                for name, c in self.csms.items()
            },
            tx_queues={
                sid: {
                    "enqueued_total": q.enqueued_total,
                    "delivered_total": q.delivered_total,
                    "dropped_total": q.dropped_total,
                    "queued": q.queued,
                }
                for sid, node in self.stations.items()
                for q in (node.station.queue.statistics(),)
            },
        )

    def play(self, timeline: Iterable[tuple[float, Action]]) -> None:
        """Play timeline actions in a task of the world's nursery: at ``at`` seconds from the world's start
        (in the order given, so sort by time first), record a ``timeline`` event with the action's fields,
        then apply it. Returns at once.

        Example::

            world.play([(2400, Partition(between=("fleet", "main"))), (3300, Heal(between=("fleet", "main")))])
        """
        events = list(timeline)

        async def player() -> None:
            for at, act in events:
                await trio.sleep_until(self.clock.t0 + at)
                self.recorder.emit("timeline", act.name, **{k: _plain(v) for k, v in act.fields().items()})
                await act.apply(self)

        self.nursery.start_soon(player)

    async def run_for(self, duration: float = math.inf, *, until_done: bool = False) -> bool:
        """Let the world run for ``duration`` seconds, or until every station is done with ``until_done``.

        Returns:
            True when it ended because every station was done.
        """
        with trio.move_on_after(duration):
            if until_done and self.stations:
                for node in self.stations.values():
                    await node.station.done.wait()
                return True
            await trio.sleep_forever()
        return False


__all__ = [
    "RUN_PASSWORD",
    "WORLD_START",
    "CertificateSpec",
    "ClockKind",
    "NetworkKind",
    "Selector",
    "World",
    "check_clock",
    "open_world",
    "run",
]
