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
from evsim.nodes.devicetime import ClockSettings
from evsim.nodes.nts import NtsClient, NtsServer, NtsServerConfig, NtsSource, ntske_profile
from evsim.nodes.station import Station
from evsim.nts.records import DEFAULT_KE_PORT
from evsim.tls import ClientTls, Identity
from evsim.world.base import Selector
from evsim.world.lifecycle import WorldLifecycle
from evsim.world.nodes import NodeHandle, NodeKind, StationGroup
from evsim.world.specs import CertificateSpec, TrustSpec

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

    # ------------------------------------------------------------------ station clocks

    def station_clock(self, sid: str, spec: ClockSpec) -> NodeClock:
        """Station ``sid``'s clock: perfect, or drawn from ``spec`` (recorded as ``clock_set``)."""
        drawn = spec.draw(random.Random(f"{self.seed}:{sid}:clock"), self.clock.start_utc)
        if drawn.perfect:
            return NodeClock.of(self.clock)
        # rounded as the event records them, so the clock replayed from the log is this one
        offset, drift = round(drawn.offset_s, 6), round(drawn.drift_ppm, 6)
        self.recorder.emit(sid, "clock_set", offset=offset, drift_ppm=drift)
        return NodeClock.of(self.clock, DeviceClock(offset_s=offset, drift_ppm=drift, ref=self.clock.now()))

    def use_nts(self, station: Station, group: StationGroup, spec: ClockSpec) -> None:
        """Give ``station`` an NTS client for the servers ``spec.nts`` names (nothing when none)."""
        if not spec.nts:
            return
        trust = TrustSpec(
            name=f"{group.name}-nts",
            roots=spec.nts_roots if spec.nts_roots is not None else group.roots,
            time_check=spec.nts_time_check,
        )
        client_tls = ClientTls.build(ntske_profile(), self.trust_store(trust), None)
        sources = []
        for priority, name in enumerate(spec.nts):
            if name not in self.nts_servers:
                raise ConfigError("unknown NTS server", path="clock.nts", value=name, fix="start it first")
            node = self.nts_servers[name]
            sources.append(NtsSource(name, node.host, client_tls, port=node.port, priority=priority))
        clock = station.clock
        client = NtsClient(
            station.name,
            sources,
            self.network,
            self.clock,
            self.recorder,
            host=station.name,
            wall=clock.wall,
            poll_s=spec.nts_poll,
            entropy=random.Random(f"{self.seed}:{station.name}:nts").randbytes,
            discipline=station.time.on_nts_offset,
        )
        station.time.use_nts(client)

    async def step_clock(self, target: Selector, delta: float) -> None:
        """Step the clocks of a group's stations or one station by ``delta`` seconds (the operator, or a
        clock that dies: a step of minus 26 years)."""
        _, station_ids = self.targets(target)
        for sid in station_ids:
            self.stations[sid].station.time.correct(delta, "operator", step=True)
