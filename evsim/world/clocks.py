"""Time in a world: each station's own clock, NTS servers, and the stations' NTS clients.

Theory of operation. A station group's :class:`ClockSpec` sets its stations' clocks: an offset and a drift
(ppm) on top of the simulation's time, each drawn uniformly within ``± spread`` from a random source of its
own (``f"{seed}:{station}:clock"``, so a clock spread leaves the station's other random draws, and every
existing run, unchanged), or a dead clock reset to a fixed date (``set_to``). The default is a perfect clock,
recorded nowhere; any other starting clock is one ``clock_set`` event at the station (its offset and drift),
so a report can replay every station's clock from the event log (:mod:`evsim.metrics.clocks`).

:meth:`WorldClocks.start_nts_server` runs an :class:`~evsim.nodes.nts.NtsServer` with a certificate from a
root of the run's PKI; a group whose ``nts`` lists servers gives each station an
:class:`~evsim.nodes.nts.NtsClient` with those servers as sources, in list order as priority, checked
against the group's NTS roots (``nts_roots``, default the group's own trust roots) with ``nts_time_check``
as the bootstrap policy (see :mod:`evsim.nodes.nts`). Each accepted sample corrects the station's clock
(:mod:`evsim.nodes.devicetime`: step at 1 s or more, slew below). An NTS server is stopped and started like
any node (``stop`` / ``start``: its host is down in between, so clients fail over).
"""

from __future__ import annotations

import datetime as _dt
import random
from typing import Any, ClassVar

import attrs

from evsim.clock import DeviceClock, NodeClock
from evsim.errors import ConfigError
from evsim.nodes.devicetime import ClockSettings, DeviceTime
from evsim.nodes.nts import NtsClient, NtsServer, NtsServerConfig, NtsSource, ntske_profile
from evsim.nodes.station import Station
from evsim.nts.records import DEFAULT_KE_PORT
from evsim.tls import ClientTls, Identity
from evsim.world.base import Selector
from evsim.world.lifecycle import WorldLifecycle
from evsim.world.nodes import ControllerNode, NodeHandle, NodeKind, StationGroup
from evsim.world.specs import DEFAULT_TRUST, CertificateSpec, TrustSpec

NTS_TIME_CHECKS = ("enforce", "skip_until_clock_synced", "off")


@attrs.frozen(kw_only=True)
class ClockSpec:
    """A station group's clocks and time sources (the ``clock`` table of a ``[stations.<name>]`` group).

    Attributes:
        offset: each clock's error at the start, seconds (negative: behind).
        offset_spread: each station's offset is drawn uniformly in ``offset ± offset_spread``.
        drift_ppm: how fast each clock gains (negative: loses), ppm.
        drift_spread_ppm: each station's drift is drawn in ``drift_ppm ± drift_spread_ppm``.
        set_to: a dead clock: it reads this date at the start (plus the spread), instead of ``offset``.
        time_source: ``ClockCtrlr.TimeSource``; default ``NTP`` with NTS servers, else ``RealTimeClock``.
        report_threshold: ``TimeAdjustmentReportingThreshold``, seconds (None: not implemented).
        step_threshold: corrections at least this large are stepped, smaller ones slewed (seconds).
        nts: NTS servers by name, in priority order.
        nts_roots: the roots NTS-KE certificates are checked against (None: the group's trust roots).
        nts_time_check: the bootstrap policy of the NTS-KE trust store (``enforce``,
            ``skip_until_clock_synced`` or ``off``).
        nts_poll: seconds between NTS polls.
    """

    offset: float = 0.0
    offset_spread: float = 0.0
    drift_ppm: float = 0.0
    drift_spread_ppm: float = 0.0
    set_to: _dt.datetime | None = None
    time_source: tuple[str, ...] | None = None
    report_threshold: int | None = 20
    step_threshold: float = 1.0
    nts: tuple[str, ...] = ()
    nts_roots: tuple[str, ...] | None = None
    nts_time_check: str = "enforce"
    nts_poll: float = 1024.0

    def settings(self) -> ClockSettings:
        """The stations' ClockCtrlr settings."""
        source = self.time_source or (("NTP",) if self.nts else ("RealTimeClock",))
        return ClockSettings(
            time_source=source, report_threshold_s=self.report_threshold, step_threshold_s=self.step_threshold
        )

    def draw(self, rng: random.Random, start: _dt.datetime) -> DeviceClock:
        """One station's clock error (offset and drift), drawn from ``rng``."""
        base = self.offset if self.set_to is None else (self.set_to - start).total_seconds()
        offset = base + (rng.uniform(-self.offset_spread, self.offset_spread) if self.offset_spread else 0.0)
        drift = self.drift_ppm
        if self.drift_spread_ppm:
            drift += rng.uniform(-self.drift_spread_ppm, self.drift_spread_ppm)
        return DeviceClock(offset_s=offset, drift_ppm=drift)


@attrs.frozen(kw_only=True)
class NtsServerSpec:
    """An ``[nts.<name>]`` table: an NTS server (see :meth:`WorldClocks.start_nts_server`)."""

    name: str
    host: str | None = None
    root: str = "root"
    validity: float = 365 * 86_400.0
    clock_error: float = 0.0

    @property
    def address(self) -> str:
        """The host it listens on (``<name>.evsim.test`` unless ``host`` is given)."""
        return self.host or f"{self.name}.evsim.test"


class NtsServerNode(NodeHandle):
    """An NTS server in the world.

    Attributes:
        server: the node.
        root: the root its certificate chains to.
        port: its NTS-KE port (known once started).
    """

    kind: ClassVar[NodeKind] = "nts"

    def __init__(self, server: NtsServer, *, root: str) -> None:
        super().__init__(server.config.name, server.config.host, server.run)
        self.server = server
        self.root = root
        self.port = 0


class WorldClocks(WorldLifecycle):
    """Station clocks and NTS on a :class:`~evsim.world.World` (see the module docstring)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.nts_servers: dict[str, NtsServerNode] = {}
        self.controller_times: dict[str, DeviceTime] = {}

    async def start_nts_server(
        self,
        name: str,
        *,
        host: str | None = None,
        root: str = "root",
        validity: float = 365 * 86_400.0,
        ke_port: int | None = None,
        ntp_port: int | None = None,
        clock_error: float = 0.0,
    ) -> NtsServerNode:
        """Start an NTS server (NTS-KE over TLS, NTP over datagrams); returns once it listens.

        Args:
            name: its name (events, selectors, a group's ``nts`` list).
            host: where it listens (its certificate's name); default ``<name>.evsim.test``.
            root: the root of the run's PKI its certificate is issued by.
            validity: its certificate's validity from the simulation start, seconds.
            ke_port, ntp_port: default 4460 and 123 in memory, free ports on loopback TCP.
            clock_error: seconds added to the time it serves (a server with bad time).
        """
        if name in self.nts_servers:
            raise ConfigError(f"a node named {name!r} exists already", value=name, fix="give it another name")
        host = host or f"{name}.evsim.test"
        self._claim(name, host)
        if root not in self.pki.roots:
            raise ConfigError(
                "unknown root", path="root", value=root, fix=f"use one of {sorted(self.pki.roots)}"
            )
        cert = self.pki.server_certificate(host, CertificateSpec(root=root, validity=validity))
        tcp = self.network_kind == "tcp"
        server = NtsServer(
            NtsServerConfig(
                name=name,
                host=host,
                identity=Identity.from_cert_key(cert),
                ke_port=(0 if tcp else DEFAULT_KE_PORT) if ke_port is None else ke_port,
                ntp_port=(0 if tcp else 123) if ntp_port is None else ntp_port,
                clock_error_s=clock_error,
            ),
            network=self.network,
            clock=self.clock,
            recorder=self.recorder,
        )
        node = NtsServerNode(server, root=root)
        self.nts_servers[name] = node
        await node.start_in(self.nursery)
        node.port = server.ke_address[1] if server.ke_address is not None else DEFAULT_KE_PORT
        return node

    def stop_nts_server(self, name: str) -> None:
        """Stop an NTS server; its host is down (connections and datagrams refused) until it starts again."""
        node = self.nts_servers[name]
        node.stop()
        if self.memory is not None:
            self.memory.set_host_down(node.host)

    async def start_nts_server_again(self, name: str) -> None:
        """Start a stopped NTS server again (the same node, its master keys kept)."""
        node = self.nts_servers[name]
        if self.memory is not None:
            self.memory.set_host_down(node.host, down=False)
        await node.start_in(self.nursery)

    def select(self, selector: Selector) -> list[str]:
        """As :meth:`~evsim.world.base.WorldBase.select`, with NTS servers (by name, and in ``"*"``)."""
        if isinstance(selector, str) and selector in self.nts_servers:
            return [self.nts_servers[selector].host]
        hosts = super().select(selector)
        if selector == "*":
            hosts += [n.host for n in self.nts_servers.values()]
        return hosts

    # ------------------------------------------------------------------ station and controller clocks

    def station_clock(self, sid: str, spec: ClockSpec) -> NodeClock:
        """Node ``sid``'s clock (a station's or a controller's): perfect, or drawn from ``spec`` (recorded as
        ``clock_set``)."""
        drawn = spec.draw(random.Random(f"{self.seed}:{sid}:clock"), self.clock.start_utc)
        if drawn.perfect:
            return NodeClock.of(self.clock)
        # rounded as the event records them, so the clock replayed from the log is this one
        offset, drift = round(drawn.offset_s, 6), round(drawn.drift_ppm, 6)
        self.recorder.emit(sid, "clock_set", offset=offset, drift_ppm=drift)
        return NodeClock.of(self.clock, DeviceClock(offset_s=offset, drift_ppm=drift, ref=self.clock.now()))

    def _nts_client(
        self,
        name: str,
        host: str,
        clock: NodeClock,
        time: DeviceTime,
        roots: tuple[str, ...],
        spec: ClockSpec,
    ) -> NtsClient:
        """An NTS client for node ``name`` connecting from ``host``."""
        trust = TrustSpec(
            name=f"{name}-nts",
            roots=spec.nts_roots if spec.nts_roots is not None else roots,
            time_check=spec.nts_time_check,
        )
        client_tls = ClientTls.build(ntske_profile(), self.trust_store(trust), None)
        sources = []
        for priority, server in enumerate(spec.nts):
            if server not in self.nts_servers:
                raise ConfigError("unknown NTS server", path="clock.nts", value=server, fix="start it first")
            node = self.nts_servers[server]
            sources.append(NtsSource(server, node.host, client_tls, port=node.port, priority=priority))
        return NtsClient(
            name,
            sources,
            self.network,
            self.clock,
            self.recorder,
            host=host,
            wall=clock.wall,
            poll_s=spec.nts_poll,
            entropy=random.Random(f"{self.seed}:{name}:nts").randbytes,
            discipline=time.on_nts_offset,
        )

    def use_nts(self, station: Station, group: StationGroup, spec: ClockSpec) -> None:
        """Give ``station`` an NTS client for the servers ``spec.nts`` names (nothing when none); it runs with
        the station."""
        if spec.nts:
            station.time.use_nts(
                self._nts_client(station.name, station.name, station.clock, station.time, group.roots, spec)
            )

    async def controller_time(self, node: ControllerNode, spec: ClockSpec) -> None:
        """A controller's clock corrections and, with ``spec.nts``, its NTS client (run in the world's
        nursery, in a cancel scope of its own). A controller has no device model here: its steps raise no
        SettingSystemTime."""
        clock = node.controller.clock
        assert isinstance(clock, NodeClock)
        time = DeviceTime(
            node.name,
            clock,
            spec.settings(),
            emit=self.recorder.emit,
            security_event=lambda _kind, _info: None,
        )
        self.controller_times[node.name] = time
        if spec.nts:
            trust = node.tls.trust
            roots = trust.roots if isinstance(trust, TrustSpec) else DEFAULT_TRUST.roots
            client = self._nts_client(node.name, node.host, clock, time, roots, spec)
            time.use_nts(client)
            await NodeHandle(f"{node.name}:nts", node.host, client.run).start_in(self.nursery)

    async def step_clock(self, target: Selector, delta: float) -> None:
        """Step the clocks of a controller, a group's stations or one station by ``delta`` seconds (the
        operator, or a clock that dies: a step of minus 26 years)."""
        name = self._name(target)
        if name in self.controller_times:
            self.controller_times[name].correct(delta, "operator", step=True)
            return
        _, station_ids = self.targets(name)
        for sid in station_ids:
            self.stations[sid].station.time.correct(delta, "operator", step=True)
