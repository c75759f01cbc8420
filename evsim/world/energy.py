"""Energy managers in a :class:`~evsim.world.World`: EEBus SHIP pairing between a HEMS and stations.

An energy manager (:class:`~evsim.nodes.energy_manager.EnergyManager`) is the SHIP server; each linked station
runs a :class:`~evsim.nodes.ship_link.ShipLink` (the SHIP client) beside its OCPP connection, with a
self-signed P-256 certificate whose CN is the station id (its SHIP device id) and whose SKI is its identity.
How a station trusts its manager is ``station_trust``: ``register`` (the installer typed the manager's SKI
into the station: trusted from the start) or ``auto_accept`` (the station pairs with whatever manager it
reaches). Operator actions: open a pairing window, unpair a station, rotate a station's SHIP key, and an
impostor device that claims a station's device id with its own key.
"""

from __future__ import annotations

from typing import Literal, TypeAlias

from evsim.errors import ConfigError
from evsim.nodes.energy_manager import (
    DEFAULT_SHIP_PORT,
    EnergyManager,
    EnergyManagerConfig,
    record_peer_event,
)
from evsim.nodes.ship_link import ShipLink, ShipLinkConfig
from evsim.pki import issue_self_signed
from evsim.pki.ca import common_name
from evsim.tls.pairing import DEFAULT_PAIRING_WINDOW_S, PeerTrust, register
from evsim.tls.peer import PeerPolicy
from evsim.world.base import Selector, WorldBase

__all__ = ["STATION_TRUST", "StationTrust", "WorldEnergy"]

StationTrust: TypeAlias = Literal["register", "auto_accept"]
STATION_TRUST: tuple[StationTrust, ...] = ("register", "auto_accept")


class WorldEnergy(WorldBase):
    """The energy-manager operations of a :class:`~evsim.world.World` (see the module doc)."""

    @property
    def energy_managers(self) -> dict[str, EnergyManager]:
        """The energy managers by name, in start order."""
        found = self.__dict__.setdefault("_energy_managers", {})
        assert isinstance(found, dict)
        return found

    @property
    def ship_links(self) -> dict[str, ShipLink]:
        """Every SHIP client by node name: stations' links and impostors."""
        found = self.__dict__.setdefault("_ship_links", {})
        assert isinstance(found, dict)
        return found

    def _manager(self, name: Selector) -> EnergyManager:
        key = self._name(name)
        if key not in self.energy_managers:
            raise ConfigError(
                f"no energy manager named {key!r}",
                value=key,
                fix=f"use one of {sorted(self.energy_managers)}",
            )
        return self.energy_managers[key]

    async def start_energy_manager(
        self,
        name: str,
        *,
        host: str | None = None,
        port: int | None = None,
        auto_accept: bool = False,
        pairing_window: float = DEFAULT_PAIRING_WINDOW_S,
        confirm: float = 0.0,
    ) -> EnergyManager:
        """Start an energy manager (SHIP server); returns once it listens.

        Args:
            name: its name (events, targets).
            host: the host it listens on; default ``<name>.evsim.test``.
            port: default 4711 in memory (eebus-go's), a free port on loopback TCP.
            auto_accept: pair every new device (SHIP ``register=true``).
            pairing_window: length of a window :meth:`open_pairing_window` opens, seconds.
            confirm: seconds the user takes to confirm a newly paired device (SHIP hello ``pending``).
        """
        host = host or f"{name}.evsim.test"
        self._claim(name, host)
        identity = issue_self_signed(f"{name}-HEMS", now=self.clock.utcnow())
        config = EnergyManagerConfig(
            name,
            host,
            identity,
            port=self._port(port) if port is not None or self.memory is None else DEFAULT_SHIP_PORT,
            pairing=PeerTrust(auto_accept=auto_accept, pairing_window_s=pairing_window),
            confirm_s=confirm,
        )
        node = EnergyManager(config, self.network, self.clock, self.recorder)
        await self.nursery.start(node.run)
        self.energy_managers[name] = node
        return node

    async def link_energy_manager(
        self, stations: Selector, manager: Selector, *, trust: StationTrust = "register", retry: float = 30.0
    ) -> list[ShipLink]:
        """Give stations a SHIP link to ``manager`` (each dials it now, then keeps the link up).

        Args:
            stations: a group, station id, or list of them.
            manager: the energy manager.
            trust: how the stations trust the manager (see the module doc).
            retry: the links' first retry wait, seconds (doubling up to ten times that).
        """
        node = self._manager(manager)
        assert node.address is not None  # started
        links: list[ShipLink] = []
        for sid in self.select(stations):
            if sid not in self.stations:
                raise ConfigError(f"{sid!r} is not a station", value=sid, fix="name a station group or id")
            links.append(await self._start_link(sid, sid, sid, node, trust, retry))
        return links

    async def _start_link(
        self,
        name: str,
        host: str,
        device: str,
        node: EnergyManager,
        trust: StationTrust,
        retry: float,
        attempts: int | None = None,
    ) -> ShipLink:
        assert node.address is not None
        pairing = PeerTrust(auto_accept=trust == "auto_accept")
        if trust == "register":
            device_id = common_name(node.config.identity.cert)
            pairing = register(pairing, node.ski, at=self.clock.utcnow(), device_id=device_id)
        config = ShipLinkConfig(
            name,
            host,
            node.name,
            node.config.host,
            issue_self_signed(device, now=self.clock.utcnow()),
            pairing,
            manager_port=node.address[1],
            retry_s=retry,
            max_retry_s=retry * 10,
            attempts=attempts,
        )
        link = ShipLink(config, self.network, self.clock, self.recorder)
        self.ship_links[name] = link
        await self.nursery.start(link.run)
        return link

    def pairing_policy(self, name: str, pairing: PeerTrust) -> PeerPolicy:
        """A listener's server-side pairing policy whose events are recorded at node ``name`` (a controller
        with ``client_auth = "pairing"``)."""
        recorder = self.recorder
        return PeerPolicy(
            side="server",
            pairing=pairing,
            sink=lambda event: record_peer_event(recorder, name, event),
            name=name,
        )

    def _controller_pairing(self, name: str) -> PeerPolicy | None:
        node = self.controllers.get(name)
        if node is None:
            return None
        if node.controller.config.pairing is None:
            raise ConfigError(
                f"controller {name!r} does not pair its stations",
                value=name,
                fix='give it client_auth = "pairing" (security profile 3)',
            )
        return node.controller.config.pairing

    def open_pairing_window(self, target: Selector) -> None:
        """The operator presses the pairing button of an energy manager, or of a controller whose listener
        pairs (``pairing_window_opened``)."""
        name = self._name(target)
        policy = self._controller_pairing(name)
        if policy is None:
            self._manager(name).open_pairing_window()
            return
        policy.open_pairing_window(now=self.clock.utcnow())
        until = policy.state.pairing.window_until if policy.state.pairing is not None else None
        self.recorder.emit(name, "pairing_window_opened", until=until.isoformat() if until else None)

    def close_pairing_window(self, target: Selector) -> None:
        """The operator closes the pairing window of an energy manager or a pairing controller."""
        name = self._name(target)
        policy = self._controller_pairing(name)
        if policy is None:
            self._manager(name).close_pairing_window()
            return
        policy.close_pairing_window()
        self.recorder.emit(name, "pairing_window_closed")

    def unpair(self, manager: Selector, station: str) -> None:
        """The operator removes ``station`` (its current SHIP key) from the manager; its connection ends.

        Raises:
            ConfigError: the station has no SHIP link, or the manager has no entry for its key.
        """
        link = self.ship_links.get(station)
        if link is None:
            raise ConfigError(f"station {station!r} has no energy-manager link", value=station)
        self._manager(manager).unpair(link.ski)

    def rotate_ship_key(self, stations: Selector) -> None:
        """The stations get a new SHIP key and certificate (same device id) and reconnect with it."""
        for sid in self.select(stations):
            link = self.ship_links.get(sid)
            if link is None:
                raise ConfigError(f"station {sid!r} has no energy-manager link", value=sid)
            link.rotate_key()

    async def ship_impostor(self, manager: Selector, device: str, *, attempts: int = 1) -> ShipLink:
        """A device claiming to be ``device`` (the same certificate CN) with its own key dials the manager
        ``attempts`` times; the manager refuses it (``pairing_refused``) unless a window is open."""
        node = self._manager(manager)
        n = sum(1 for name in self.ship_links if name.startswith("impostor-")) + 1
        name = f"impostor-{n}"
        return await self._start_link(name, name, device, node, "auto_accept", 30.0, attempts)
