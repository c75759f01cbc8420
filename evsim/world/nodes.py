"""Handles of the nodes a :class:`~evsim.world.World` runs: what a caller holds to stop, start and inspect them.

Every node kind has one entry point, ``run(*, task_status)``: it calls ``task_status.started(...)`` once it
is ready (a server once it listens, a station once its connection loop runs) and runs until cancelled. A
handle runs that entry point inside a cancel scope of its own in the world's nursery, so stopping one node
cancels only that scope; starting it again runs the same node object (its records and queues kept), as a
restarted process with persistent storage would.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar, Literal, TypeAlias

import trio

from evsim.backoff import RetryBackOff
from evsim.nodes.controller import LocalController
from evsim.nodes.csms import Csms
from evsim.nodes.csms_certs import DegradedSigner
from evsim.nodes.station import Station
from evsim.pki import CertKey
from evsim.tls import PeerPolicy
from evsim.world.specs import Route, Tls

NodeKind: TypeAlias = Literal["csms", "controller", "station", "attacker", "nts", "file_server"]


class NodeHandle:
    """A node in the world's nursery, in a cancel scope of its own.

    Args:
        name: the node's name (events, selectors).
        host: the network host it listens on or connects from.
        run: its entry point (``run(*, task_status)``).
    """

    kind: ClassVar[NodeKind] = "attacker"

    def __init__(self, name: str, host: str, run: Callable[..., Awaitable[Any]]) -> None:
        self.name = name
        self.host = host
        self._run = run
        self._scope: trio.CancelScope | None = None
        self._ended: trio.Event | None = None  # set when the current run has unwound

    @property
    def running(self) -> bool:
        """Whether the node runs now (started and not stopped)."""
        return self._scope is not None and not self._scope.cancel_called

    async def _body(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        ended = self._ended = trio.Event()
        with trio.CancelScope() as scope:
            self._scope = scope
            try:
                run = self._run(task_status=task_status)
                # kept in this frame, the status would hold trio's start() nursery (≈0.7 KiB) while it runs
                del task_status
                await run
            finally:
                self._scope = None
                ended.set()

    async def start_in(self, nursery: trio.Nursery) -> None:
        """Run the node in ``nursery`` (after a stopped run has unwound); returns once it has started."""
        if self._scope is not None and self._scope.cancel_called and self._ended is not None:
            await self._ended.wait()  # stopped, still unwinding: start once it is gone
        if self._scope is None:
            await nursery.start(self._body)

    def stop(self) -> None:
        """Cancel the node's run (it unwinds in the background; :meth:`start_in` waits for that)."""
        if self._scope is not None:
            self._scope.cancel()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} ({'running' if self.running else 'stopped'})>"


class CsmsNode(NodeHandle):
    """A CSMS in the world: the :class:`~evsim.nodes.csms.Csms` and what the world needs to re-key it.

    Attributes:
        csms: the node.
        security_profile: 1, 2 or 3.
        tls: its TLS settings.
        primary: the CSMS whose station records it shares (itself unless it is a secondary endpoint).
        station_password: the password it was given (its stations send it by default), or None.
        port: the port it listens on (known once started).
        certificate: its current server certificate (None for profile 1 or a given identity).
        signer: what signs its stations' CSRs (the world PKI's station sub-CA behind a
            :class:`~evsim.nodes.csms_certs.DegradedSigner` whose delay and failure rate ``degrade_ca`` sets).
    """

    kind: ClassVar[NodeKind] = "csms"

    def __init__(self, csms: Csms, *, tls: Tls, primary: str, station_password: str | None) -> None:
        super().__init__(csms.config.name, csms.config.host, csms.run)
        self.csms = csms
        self.security_profile = csms.config.security_profile
        self.tls = tls
        self.primary = primary
        self.station_password = station_password
        self.port = 0
        self.certificate: CertKey | None = None
        self.signer: DegradedSigner | None = None


class ControllerNode(NodeHandle):
    """A Local Controller in the world.

    Attributes:
        controller: the node.
        security_profile: towards its stations.
        upstream_security_profile: of its upstream links.
        routes: its upstream endpoints.
        tls: its TLS settings (listener and, by default, upstream).
        port: the port it listens on (known once started).
    """

    kind: ClassVar[NodeKind] = "controller"

    def __init__(
        self,
        controller: LocalController,
        *,
        tls: Tls,
        routes: Sequence[Route],
        upstream_security_profile: int,
    ) -> None:
        super().__init__(controller.name, controller.config.host, controller.run)
        self.controller = controller
        self.security_profile = controller.config.security_profile
        self.upstream_security_profile = upstream_security_profile
        self.routes = tuple(routes)
        self.tls = tls
        self.port = 0


class StationNode(NodeHandle):
    """A station in the world.

    Attributes:
        station: the node.
        group: its group.
        peer: its own peer policy (pins, change policy), or None.
        endpoint_peers: peer policies of endpoints with their own pins.
    """

    kind: ClassVar[NodeKind] = "station"

    def __init__(self, station: Station, group: StationGroup) -> None:
        super().__init__(station.name, station.name, station.run)
        self.station = station
        self.group = group
        self.peer: PeerPolicy | None = None
        self.endpoint_peers: list[PeerPolicy] = []

    @property
    def certificate(self) -> CertKey | None:
        """The client certificate the station holds now (renewed over OCPP, A02/A03, or provisioned by the
        world); None without one (profiles 1 and 2 until a renewal)."""
        return self.station.certs.identity


class StationGroup:
    """Stations started together, behaving alike.

    Attributes:
        name: the group's name (selectors, summary tables).
        csms: the CSMS the group's stations reach (through controllers, for routes to a controller).
        security_profile: of its stations.
        tls: the stations' TLS settings.
        roots: the names of the roots its stations trust now (``install_root`` / ``remove_root`` change it).
        routes: its endpoints (one network-profile slot each), or empty for the one-CSMS form.
        stations: its members, in id order.
    """

    def __init__(
        self,
        name: str,
        *,
        csms: str,
        security_profile: int,
        tls: Tls,
        roots: tuple[str, ...],
        routes: Sequence[Route],
        password: str | None,
        backoff: RetryBackOff,
    ) -> None:
        self.name = name
        self.csms = csms
        self.security_profile = security_profile
        self.tls = tls
        self.roots = roots
        self.routes = tuple(routes)
        self.password = password
        self.backoff = backoff
        self.stations: list[StationNode] = []
        self.fleet_ids: list[str] | None = None
        """In a shard (``start_stations(numbers=...)``): every identity of the whole group, in order."""

    @property
    def ids(self) -> list[str]:
        """The station identities, in order."""
        return [node.name for node in self.stations]

    @property
    def whole_ids(self) -> list[str]:
        """The identities of the whole group, also those another shard runs (:attr:`fleet_ids`)."""
        return self.ids if self.fleet_ids is None else self.fleet_ids

    def __iter__(self) -> Any:
        return iter(self.stations)

    def __len__(self) -> int:
        return len(self.stations)

    async def done(self) -> None:
        """Wait until every station has played its sessions and emptied its queue (bound it with
        ``trio.fail_after`` / ``trio.move_on_after``)."""
        for node in self.stations:
            await node.station.done.wait()

    def all_done(self) -> bool:
        """Whether every station has played its sessions and emptied its queue."""
        return all(node.station.done.is_set() for node in self.stations)

    def __repr__(self) -> str:
        return f"<StationGroup {self.name}: {len(self.stations)} stations of {self.csms}>"


__all__ = ["ControllerNode", "CsmsNode", "NodeHandle", "NodeKind", "StationGroup", "StationNode"]
