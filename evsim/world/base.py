"""The state every part of a :class:`~evsim.world.World` shares, and how selectors name its nodes.

A selector names nodes the way a scenario file does: a CSMS or controller (its host), a station group (its
stations), a station id, ``"*"`` (every node), a handle, or a list of these; a name the world does not know is
taken as a host name, so a link policy can be set before the nodes at its ends start.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import random
from collections.abc import Callable, Sequence
from typing import Literal, TypeAlias

import trio
import trio.testing

from evsim.clock import SimClock
from evsim.cpu import Cpu, CpuSpec
from evsim.errors import ConfigError
from evsim.net.base import FaultyNetwork, Network
from evsim.net.capture import Capture
from evsim.net.relay import FaultRelay, RelayedNetwork
from evsim.net.tcp import TcpNetwork
from evsim.net.virtual import VirtualNetwork
from evsim.nodes.csms_records import StationRecord
from evsim.nodes.expiry import ExpiryMonitor
from evsim.nodes.station_model import FleetTally
from evsim.recorder import Recorder
from evsim.tls import (
    Identity,
    PeerPolicy,
)
from evsim.world.attacks import RedirectingNetwork
from evsim.world.nodes import ControllerNode, CsmsNode, NodeHandle, StationGroup, StationNode
from evsim.world.pki import WorldPki

NetworkKind: TypeAlias = Literal["memory", "tcp"]
Selector: TypeAlias = "str | NodeHandle | StationGroup | Sequence[str]"
"""What names nodes: a CSMS, controller, group or station (a name or a handle), ``"*"`` (every node), or a
list of such names (a name the world does not know is taken as a host name, so a link policy can be set
before the nodes at its ends start)."""

WORLD_START = _dt.datetime(2026, 1, 1, tzinfo=_dt.UTC)
"""Simulation start of a virtual-clock world when none is given (fixed, so runs are reproducible)."""
RUN_PASSWORD = "evsim-scenario-password"
"""The Basic-auth password of a run when a CSMS sets none (>= 16 characters, A00.FR.205)."""
STATION_ROOTS = "ChargingStationRoots"
"""The name of a server's default trust store for client certificates (profile 3)."""


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _identity(given: Identity | Callable[[str], Identity], name: str) -> Identity:
    return given if isinstance(given, Identity) else given(name)


def _label(selector: Selector) -> str:
    if isinstance(selector, NodeHandle | StationGroup):
        return selector.name
    return selector if isinstance(selector, str) else ",".join(selector)


class WorldBase:
    """What a world's parts share: one clock, recorder, network and PKI, and its nodes by name.

    Attributes:
        seed: the run's seed.
        clock: the simulation clock.
        recorder: every node's event sink.
        network: the network nodes connect over (attacks redirect connections through it).
        memory: the in-memory network, or None on loopback TCP.
        relay: on loopback TCP with ``fault_relay``, the relay every connection between nodes goes through.
        faults: the network's fault controls (partitions, hosts down, link policies): the in-memory network's,
            or the relay's; None on loopback TCP without the relay.
        pki: the per-run PKI.
        csms, controllers, stations, groups: the nodes by name, in start order.
        expiry: the expiry monitor (``open_world(expiry_warning=...)``), or None.
    """

    def __init__(
        self,
        *,
        seed: int,
        clock: SimClock,
        recorder: Recorder,
        network: NetworkKind,
        pki: WorldPki,
        nursery: trio.Nursery,
        fault_relay: bool = False,
    ) -> None:
        self.seed = seed
        self.clock = clock
        self.recorder = recorder
        self.pki = pki
        self.nursery = nursery
        self.network_kind = network
        inner: Network
        self._tcp: TcpNetwork | None = None
        self.relay: FaultRelay | None = None
        self.faults: FaultyNetwork | None = None
        if network == "tcp":
            inner = self._tcp = TcpNetwork()
            self.memory: VirtualNetwork | None = None
            if fault_relay:
                self.relay = FaultRelay(
                    self._tcp, on_event=lambda kind, **fields: recorder.emit("relay", kind, **fields)
                )
                inner = self.faults = RelayedNetwork(self.relay)
        else:
            inner = self.faults = self.memory = VirtualNetwork()
        self.network = RedirectingNetwork(inner)
        self.csms: dict[str, CsmsNode] = {}
        self.controllers: dict[str, ControllerNode] = {}
        self.stations: dict[str, StationNode] = {}
        self.tally = FleetTally()  # its stations' figures for World.sample (counted in when they start)
        self.groups: dict[str, StationGroup] = {}
        self.attackers: dict[str, NodeHandle] = {}
        self._stores: dict[str, dict[str, StationRecord]] = {}  # primary CSMS -> its station records
        self._hosts: dict[str, str] = {}  # host -> node name (CSMS and controllers)
        self._server_peers: dict[str, PeerPolicy] = {}
        self.expiry: ExpiryMonitor | None = None
        self.cpu_plan: dict[str, CpuSpec] = {}
        """Node or station-group name -> its CPU model, set before the node starts (see :meth:`cpu_for`)."""
        self.cpus: dict[str, Cpu] = {}
        """Emits ``cert_expiring`` for the certificates the nodes use and meet (None: no expiry warnings)."""

    # ------------------------------------------------------------------ helpers

    def attach_capture(self, capture: Capture | None) -> None:
        """Capture the connections the world's network opens from now on (``open_world(pcap=...)``)."""
        network = self.memory if self.memory is not None else self._tcp
        assert network is not None
        network.attach_capture(capture)

    def cpu_for(self, name: str, member: str | None = None) -> Cpu | None:
        """The CPU model of node ``name`` (of station ``member`` of group ``name``), or None: none planned, or
        the real clock (where real CPU is spent). A group's stations share one unless its spec says not."""
        spec = self.cpu_plan.get(name)
        if spec is None or not isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock):
            return None
        key = name if member is None or spec.shared else member
        cpu = self.cpus.get(key)
        if cpu is None:
            cpu = self.cpus[key] = spec.build(key)
        return cpu

    def record_cpu_usage(self) -> None:
        """One ``cpu_usage`` event per CPU model (node ``runner``, ``cpu`` names it): busy core-seconds,
        queue peak and operations by kind, so the report's CPU table comes from the event log."""
        for name, cpu in sorted(self.cpus.items()):
            st = cpu.statistics()
            self.recorder.emit(
                "runner",
                "cpu_usage",
                cpu=name,
                cores=st.cores,
                busy=round(st.busy_s, 6),
                queue_peak=st.queue_peak,
                operations=dict(sorted(st.operations.items())),
            )

    def rng(self, name: str) -> random.Random:
        """The seeded random source of the node ``name``."""
        return random.Random(f"{self.seed}:{name}")

    def is_running(self, name: str) -> bool:
        """Whether the CSMS, controller or station ``name`` runs now (False for names the world does not
        know)."""
        node = self.csms.get(name) or self.controllers.get(name) or self.stations.get(name)
        return node is not None and node.running

    def _claim(self, name: str, host: str) -> None:
        taken = {**self.csms, **self.controllers, **self.groups, **self.stations}
        if name in taken:
            raise ConfigError(f"a node named {name!r} exists already", value=name, fix="give it another name")
        if host in self._hosts:
            raise ConfigError(
                f"host {host!r} is already {self._hosts[host]!r}'s", value=host, fix="give it another host"
            )
        self._hosts[host] = name
        if self._tcp is not None and not _is_ip(host):
            self._tcp.map_host(host)

    def _port(self, port: int | None) -> int:
        if self._tcp is not None:
            return 0 if port is None else port
        return 443 if port is None else port

    @staticmethod
    def _name(node: Selector) -> str:
        if isinstance(node, NodeHandle | StationGroup):
            return node.name
        if not isinstance(node, str):
            raise ConfigError("expected one node here, not a list", value=list(node), fix="name one node")
        return node

    def select(self, selector: Selector) -> list[str]:
        """The network host names a selector covers (station ids are their own host names).

        Args:
            selector: a CSMS or controller (its host), a group (its stations), a station id, ``"*"``, or a
                list of these.
        """
        if not isinstance(selector, str | NodeHandle | StationGroup):
            return [host for one in selector for host in self.select(one)]
        name = self._name(selector)
        if name == "*":
            return (
                [c.host for c in self.csms.values()]
                + [c.host for c in self.controllers.values()]
                + list(self.stations)
            )
        if name in self.csms:
            return [self.csms[name].host]
        if name in self.controllers:
            return [self.controllers[name].host]
        if name in self.groups:
            return self.groups[name].ids
        return [name]

    def _pairs(self, a: Selector, b: Selector) -> list[tuple[str, str]]:
        return [(x, y) for x in self.select(a) for y in self.select(b) if x != y]

    def targets(self, target: Selector) -> tuple[list[str], list[str]]:
        """(CSMS names, station ids) a target names: a CSMS, a group, or a station."""
        name = self._name(target)
        if name in self.csms:
            return [name], []
        if name in self.groups:
            return [], self.groups[name].ids
        return [], [name]

    def _faults(self, what: str) -> FaultyNetwork:
        if self.faults is None:
            raise ConfigError(
                f"{what} needs the in-memory network or, on loopback TCP, the fault relay",
                path="network",
                fix='open the world with network="memory", or network="tcp" and fault_relay=True',
            )
        return self.faults

    def url(self, node: str, security_profile: int) -> str:
        """The ``ws(s)://host:port/ocpp`` URL of a started CSMS or controller."""
        target: CsmsNode | ControllerNode = self.csms[node] if node in self.csms else self.controllers[node]
        scheme = "ws" if security_profile == 1 else "wss"
        return f"{scheme}://{target.host}:{target.port}/ocpp"
