"""Timeline actions: one frozen class per action, registered by name, each reading itself and applying itself.

A scenario file's ``[[timeline]]`` entry names an action; the loader looks the class up in :data:`ACTIONS` and
calls its :meth:`~Action.read` with a :class:`Reader` over the entry (the loader's table reader, so every error
carries the file, line, field path, value and a did-you-mean fix). The runner records each event and awaits
its :meth:`~Action.apply` on the :class:`~evsim.world.World`. Python callers build the same classes::

    await Partition(between=("fleet", "main")).apply(world)

Each class lists the TOML keys it takes besides ``at`` and ``action`` (:attr:`Action.keys`), says what the
timeline event records (:meth:`Action.fields`), and refuses in :meth:`Action.preflight` what this version
cannot enforce for a run (before anything starts).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, ClassVar, Protocol, Self, TypeVar

import attrs

from evsim.errors import ConfigError
from evsim.world.specs import PinSpec

if TYPE_CHECKING:
    from evsim.world.core import World

LINK_POLICY_KEYS = ("latency", "jitter", "bandwidth", "stall", "reset")
"""The link policy keys of ``[[links]]`` entries and ``link`` events."""
LINK_NOT_YET = {
    "jitter": "the in-memory network models latency and bandwidth only so far",
    "stall": "the in-memory network cannot hold bytes back without breaking the stream yet",
}
"""Link knobs the model accepts that a run cannot enforce yet; refused before the run starts."""


def link_not_yet(network: str) -> dict[str, str]:
    """The knobs of :data:`LINK_NOT_YET` a run on ``network`` cannot enforce: on ``"tcp"`` the fault relay holds
    bytes back, so stalls work there."""
    return {knob: why for knob, why in LINK_NOT_YET.items() if not (network == "tcp" and knob == "stall")}


ATTACK_TLS_VERSIONS = ("1.3", "1.2", "1.1", "1.0")
"""Versions an attacking client may offer (a downgrade attack may try legacy versions)."""
MAX_ATTACK_CONNECTIONS = 10_000


@attrs.frozen
class LinkKnobs:
    """The link policy keys an entry gives (None: not given): durations in seconds, bandwidth in bit/s,
    ``stall`` as (every, for), ``reset`` as its period."""

    latency: float | None = None
    jitter: float | None = None
    bandwidth: float | None = None
    stall: tuple[float, float] | None = None
    reset: float | None = None


class Reader(Protocol):
    """One ``[[timeline]]`` entry being read, with the scenario's names to check references against.

    Every method raises :class:`~evsim.errors.ConfigError` located at the entry's key in the file.
    """

    @property
    def line(self) -> int | None:
        """The entry's line in the file."""

    @property
    def default_validity(self) -> float:
        """The scenario's default certificate validity (``pki.validity``), seconds."""

    def has(self, key: str) -> bool: ...
    def require(self, key: str, fix: str) -> None: ...
    def error(self, key: str, message: str, *, value: object = None, fix: str = "") -> ConfigError: ...
    def boolean(self, key: str, default: bool) -> bool: ...
    def integer(self, key: str, default: int, lo: int, hi: int) -> int: ...
    def duration(
        self, key: str, default: float, *, positive: bool = False, allow_negative: bool = False
    ) -> float: ...
    def number(self, key: str, default: float, lo: float, hi: float) -> float: ...
    def choice(self, key: str, allowed: Sequence[str], default: str) -> str: ...

    def string_list(
        self, key: str, default: tuple[str, ...], *, allowed: Collection[str], example: str
    ) -> tuple[str, ...]: ...

    def target(self, kinds: Collection[str], *, key: str = "target") -> str:
        """A node name of one of ``kinds`` (``csms``, ``controller``, ``group``, ``station``,
        ``energy_manager``)."""

    def tls_csms(self, key: str = "target") -> str:
        """A CSMS with TLS (profile 2 or 3)."""

    def tls_stations(self) -> str:
        """A group or station id with TLS (profile 2 or 3)."""

    def between(self) -> tuple[str, str]:
        """The two selectors of ``between`` (required)."""

    def link_knobs(self) -> LinkKnobs:
        """The link policy keys the entry gives."""

    def root(self, default: str | None) -> str:
        """A root of the scenario's PKI (``root``; required when ``default`` is None)."""

    def intermediate(self, key: str) -> tuple[str, str]:
        """An intermediate CA of the scenario's PKI named at ``key``, and the root above it."""

    def key_reference(self) -> PinSpec:
        """The key named as in a pin: ``cert`` (+ ``key``), ``root`` or ``spki_sha256``."""

    def csms_of(self, stations: str) -> str:
        """The CSMS a group's (or station's) stations connect to."""

    def check_free_slot(self, stations: str, to: str) -> None:
        """Refuse a move to ``to`` when the stations have no free network-profile slot for it."""

    def check_pinned(self, stations: str, key: PinSpec) -> None:
        """Refuse releasing a key the stations' pin set has no pin for."""

    def file_reference(self, key: str, kind: str) -> str:
        """The name at ``key`` (required) of a ``firmware`` release or a ``file_service`` the scenario declares."""

    def firmware_version(self, name: str) -> str:
        """The version of the ``[firmware.<name>]`` release."""


A = TypeVar("A", bound="Action")

ACTIONS: dict[str, type[Action]] = {}
"""Every timeline action by name."""


def action(name: str, *keys: str) -> Callable[[type[A]], type[A]]:
    """Register an action class under ``name``; ``keys`` are the TOML keys it takes (besides ``at`` and
    ``action``)."""

    def register(cls: type[A]) -> type[A]:
        if name in ACTIONS:
            raise ValueError(f"timeline action {name!r} is registered twice")
        cls.name = name
        cls.keys = keys
        ACTIONS[name] = cls
        return cls

    return register


class Action:
    """Base of the timeline actions (see the module docstring)."""

    name: ClassVar[str]
    keys: ClassVar[tuple[str, ...]]

    @classmethod
    def read(cls, r: Reader) -> Self:
        """The action an entry of a scenario file describes."""
        raise NotImplementedError

    async def apply(self, world: World) -> None:
        """Do it, now."""
        raise NotImplementedError

    def fields(self) -> dict[str, object]:
        """What the ``timeline`` event records: the parameters, defaults filled in (lists as tuples)."""
        return attrs.asdict(self, recurse=False)  # type: ignore[arg-type]  # every action is an attrs class

    def preflight(self, *, network: str, csms: Collection[str]) -> None:
        """Refuse what a run on ``network`` (with these CSMS names) cannot do yet; paths are relative to the
        entry."""

    def needs_faults(self) -> bool:
        """Whether it acts on the network itself (partitions, link policies, resets): on loopback TCP the run
        then connects its nodes through the fault relay (:class:`~evsim.net.relay.FaultRelay`)."""
        return False


# ---------------------------------------------------------------- nodes


@action("stop", "target")
@attrs.frozen
class Stop(Action):
    """The node(s) shut down: a CSMS, controller, NTS server or file server stops listening and its host is down;
    stations go dark."""

    target: str

    @classmethod
    def read(cls, r: Reader) -> Self:
        return cls(target=r.target(("csms", "controller", "group", "station", "nts", "file_server")))

    async def apply(self, world: World) -> None:
        await world.stop(self.target)


@action("start", "target")
@attrs.frozen
class Start(Action):
    """The node(s) start again (the same node objects, their records kept)."""

    target: str

    @classmethod
    def read(cls, r: Reader) -> Self:
        return cls(target=r.target(("csms", "controller", "group", "station", "nts", "file_server")))

    async def apply(self, world: World) -> None:
        await world.start(self.target)


# ---------------------------------------------------------------- the network


@action("partition", "between")
@attrs.frozen
class Partition(Action):
    """No bytes pass between two selectors (connections break, new ones are refused)."""

    between: tuple[str, str]

    @classmethod
    def read(cls, r: Reader) -> Self:
        return cls(between=r.between())

    async def apply(self, world: World) -> None:
        world.partition(*self.between)

    def needs_faults(self) -> bool:
        return True


@action("heal", "between")
@attrs.frozen
class Heal(Action):
    """Undo a partition."""

    between: tuple[str, str]

    @classmethod
    def read(cls, r: Reader) -> Self:
        return cls(between=r.between())

    async def apply(self, world: World) -> None:
        world.heal(*self.between)

    def needs_faults(self) -> bool:
        return True


@action("link", "between", *LINK_POLICY_KEYS)
@attrs.frozen
class Link(Action):
    """Change the given link policy keys between two selectors from now on (None: not given)."""

    between: tuple[str, str]
    latency: float | None = None
    jitter: float | None = None
    bandwidth: float | None = None
    stall: tuple[float, float] | None = None
    reset: float | None = None

    @classmethod
    def read(cls, r: Reader) -> Self:
        between = r.between()
        knobs = r.link_knobs()
        if knobs == LinkKnobs():
            raise r.error(
                "action",
                "a link event changes at least one link policy key",
                value="link",
                fix=f"add one of {', '.join(LINK_POLICY_KEYS)}",
            )
        return cls(between=between, **attrs.asdict(knobs))

    async def apply(self, world: World) -> None:
        if self.latency is not None or self.bandwidth is not None:
            world.set_link(
                *self.between,
                latency=self.latency,
                bytes_per_s=None if self.bandwidth is None else self.bandwidth / 8,
            )
        if self.reset is not None:
            world.reset_links_every(*self.between, self.reset)
        if self.stall is not None:
            world.stall_links_every(*self.between, *self.stall)

    def fields(self) -> dict[str, object]:
        return {key: value for key, value in super().fields().items() if value is not None}

    def preflight(self, *, network: str, csms: Collection[str]) -> None:
        given = {"jitter": self.jitter, "bandwidth": self.bandwidth, "stall": self.stall}
        for knob, why in link_not_yet(network).items():
            if given[knob] not in (None, 0, 0.0):
                raise ConfigError(
                    f"link knob {knob!r} is not supported yet: {why}", path=knob, fix=f"remove {knob}"
                )

    def needs_faults(self) -> bool:
        return True


@action("set_network_profile", "target", "csms", "reconnect")
@attrs.frozen
class SetNetworkProfile(Action):
    """The CSMS holding each station's link moves it to ``csms`` (SetNetworkProfile, B09, and
    NetworkConfigurationPriority, B10); ``reconnect`` resets the link so it moves now."""

    target: str
    csms: str
    reconnect: bool = True

    @classmethod
    def read(cls, r: Reader) -> Self:
        target = r.target(("group", "station"))
        r.require("csms", 'add csms = "<name>" (the CSMS or controller the stations move to)')
        to = r.target(("csms", "controller"), key="csms")
        r.check_free_slot(target, to)
        return cls(target=target, csms=to, reconnect=r.boolean("reconnect", True))

    async def apply(self, world: World) -> None:
        await world.set_network_profile(self.target, self.csms, reconnect=self.reconnect)

    def needs_faults(self) -> bool:
        return self.reconnect  # resetting the stations' links is a partition and a heal


# ---------------------------------------------------------------- certificates and trust


@action("expire_certificate", "target")
@attrs.frozen
class ExpireCertificate(Action):
    """The CSMS's certificate is re-issued already expired (same key)."""

    target: str

    @classmethod
    def read(cls, r: Reader) -> Self:
        return cls(target=r.tls_csms())

    async def apply(self, world: World) -> None:
        world.expire_certificate(self.target)


@action("renew_certificate", "target", "validity")
@attrs.frozen
class RenewCertificate(Action):
    """A fresh certificate for the CSMS's current key, valid ``validity`` seconds from now (None: its
    certificate spec's)."""

    target: str
    validity: float | None = None

    @classmethod
    def read(cls, r: Reader) -> Self:
        return cls(target=r.tls_csms(), validity=r.duration("validity", r.default_validity, positive=True))

    async def apply(self, world: World) -> None:
        world.renew_certificate(self.target, validity=self.validity)


@action("revoke_certificate", "target")
@attrs.frozen
class RevokeCertificate(Action):
    """A CSMS's certificate, or the certificates of a group's stations (or one station), is revoked: its CA
    publishes a new CRL and its OCSP responder answers ``revoked``."""

    target: str

    @classmethod
    def read(cls, r: Reader) -> Self:
        return cls(target=r.target(("csms", "group", "station")))

    async def apply(self, world: World) -> None:
        world.revoke_certificate(self.target)


@action("rotate_certificate", "target", "new_key")
@attrs.frozen
class RotateCertificate(Action):
    """A new certificate: a CSMS moves to its next key with ``new_key``; stations (profile 3) get a new
    certificate and key."""

    target: str
    new_key: bool = True

    @classmethod
    def read(cls, r: Reader) -> Self:
        return cls(target=r.target(("csms", "group", "station")), new_key=r.boolean("new_key", True))

    async def apply(self, world: World) -> None:
        world.rotate_certificate(self.target, new_key=self.new_key)


@action("install_root", "target", "root")
@attrs.frozen
class InstallRoot(Action):
    """The stations add a root to their trust store."""

    target: str
    root: str

    @classmethod
    def read(cls, r: Reader) -> Self:
        return cls(target=r.target(("group", "station")), root=r.root(None))

    async def apply(self, world: World) -> None:
        world.install_root(self.target, self.root)


@action("remove_root", "target", "root")
@attrs.frozen
class RemoveRoot(Action):
    """The stations remove a root from their trust store."""

    target: str
    root: str

    @classmethod
    def read(cls, r: Reader) -> Self:
        return cls(target=r.target(("group", "station")), root=r.root(None))

    async def apply(self, world: World) -> None:
        world.remove_root(self.target, self.root)


@action("release_pin", "target", "cert", "key", "root", "intermediate", "spki_sha256")
@attrs.frozen
class ReleasePin(Action):
    """Each target station releases its pins of ``key`` (its next connection no longer matches them)."""

    target: str
    key: PinSpec
    reason: str = attrs.field(default="operator", eq=False)  # what the pin_released event says

    @classmethod
    def read(cls, r: Reader) -> Self:
        target = r.target(("group", "station"))
        key = r.key_reference()
        r.check_pinned(target, key)
        return cls(
            target=target,
            key=key,
            reason="operator" if r.line is None else f"operator (timeline line {r.line})",
        )

    async def apply(self, world: World) -> None:
        world.release_pin(self.target, self.key, reason=self.reason)

    def fields(self) -> dict[str, object]:
        out: dict[str, object] = {"target": self.target}
        if self.key.csms is not None:
            out |= {"cert": f"csms.{self.key.csms}", "key": self.key.key}
        elif self.key.root is not None:
            out["root"] = self.key.root
        elif self.key.intermediate is not None:
            out["intermediate"] = self.key.intermediate
        else:
            out["spki_sha256"] = self.key.spki_sha256
        return out


# ---------------------------------------------------------------- certificate lifecycle over OCPP

MAX_SPREAD_S = 30 * 86_400.0
CERTIFICATE_TYPES = ("CSMSRootCertificate", "ManufacturerRootCertificate")
"""Root certificate types ``install_certificate`` can send (``InstallCertificateUseEnumType``)."""


def _spread(r: Reader) -> float:
    spread = r.duration("spread", 0.0)
    if spread > MAX_SPREAD_S:
        raise r.error("spread", "spread is at most 30 days", value=spread, fix='use e.g. spread = "10m"')
    return spread


@action("trigger_renewal", "target", "spread")
@attrs.frozen
class TriggerRenewal(Action):
    """The CSMS holding each station's session sends TriggerMessage SignChargingStationCertificate (A02):
    every station of a CSMS's fleet, a group or one station, spread over ``spread`` seconds."""

    target: str
    spread: float = 0.0

    @classmethod
    def read(cls, r: Reader) -> Self:
        return cls(target=r.target(("csms", "group", "station")), spread=_spread(r))

    async def apply(self, world: World) -> None:
        world.trigger_renewal(self.target, spread=self.spread)


@action("upgrade_security_profile", "target", "to", "spread")
@attrs.frozen
class UpgradeSecurityProfile(Action):
    """A05: the CSMS holding each station's session moves it to the CSMS endpoint ``to`` at that endpoint's
    higher security profile (SetNetworkProfile, NetworkConfigurationPriority, Reset), spread over ``spread``."""

    target: str
    to: str
    spread: float = 0.0

    @classmethod
    def read(cls, r: Reader) -> Self:
        target = r.target(("csms", "group", "station"))
        r.require("to", 'add to = "<name>" (the profile 3 CSMS endpoint the stations move to)')
        return cls(target=target, to=r.target(("csms",), key="to"), spread=_spread(r))

    async def apply(self, world: World) -> None:
        world.upgrade_security_profile(self.target, self.to, spread=self.spread)


@action("install_certificate", "target", "root", "type", "spread")
@attrs.frozen
class InstallCertificate(Action):
    """The CSMS sends InstallCertificate of a PKI root to each station (M05; the stations' rules decide)."""

    target: str
    root: str
    type: str = "CSMSRootCertificate"
    spread: float = 0.0

    @classmethod
    def read(cls, r: Reader) -> Self:
        return cls(
            target=r.target(("csms", "group", "station")),
            root=r.root(None),
            type=r.choice("type", CERTIFICATE_TYPES, "CSMSRootCertificate"),
            spread=_spread(r),
        )

    async def apply(self, world: World) -> None:
        world.install_certificate(self.target, self.root, certificate_type=self.type, spread=self.spread)


@action("delete_certificate", "target", "root", "spread")
@attrs.frozen
class DeleteCertificate(Action):
    """The CSMS sends DeleteCertificate of a PKI root to each station (M04)."""

    target: str
    root: str
    spread: float = 0.0

    @classmethod
    def read(cls, r: Reader) -> Self:
        return cls(target=r.target(("csms", "group", "station")), root=r.root(None), spread=_spread(r))

    async def apply(self, world: World) -> None:
        world.delete_certificate(self.target, self.root, spread=self.spread)


@action("switch_server_certificate", "target", "root", "issuer")
@attrs.frozen
class SwitchServerCertificate(Action):
    """The CSMS moves to a server certificate from another root (a new hierarchy) or issued by another
    intermediate CA (``issuer``), from its next handshake."""

    target: str
    root: str
    issuer: str | None = None

    @classmethod
    def read(cls, r: Reader) -> Self:
        target = r.tls_csms()
        if r.has("issuer"):
            issuer, root = r.intermediate("issuer")
            if r.has("root") and r.root(None) != root:
                raise r.error(
                    "root",
                    f"intermediate {issuer!r} is under root {root!r}",
                    fix="remove root (the issuer's is used)",
                )
            return cls(target=target, root=root, issuer=issuer)
        return cls(target=target, root=r.root(None))

    async def apply(self, world: World) -> None:
        world.switch_server_certificate(self.target, self.root, issuer=self.issuer)

    def fields(self) -> dict[str, object]:
        return {key: value for key, value in super().fields().items() if value is not None}


@action("degrade_ca", "target", "delay", "failure_rate")
@attrs.frozen
class DegradeCa(Action):
    """The CA the CSMS signs station CSRs with becomes slow (``delay`` per CSR) and fails with probability
    ``failure_rate``; ``degrade_ca`` with neither restores it."""

    target: str
    delay: float = 0.0
    failure_rate: float = 0.0

    @classmethod
    def read(cls, r: Reader) -> Self:
        return cls(
            target=r.target(("csms",)),
            delay=r.duration("delay", 0.0),
            failure_rate=r.number("failure_rate", 0.0, 0.0, 1.0),
        )

    async def apply(self, world: World) -> None:
        world.degrade_ca(self.target, delay=self.delay, failure_rate=self.failure_rate)


# ---------------------------------------------------------------- attacks


@action("attack_downgrade", "target", "count", "versions")
@attrs.frozen
class AttackDowngrade(Action):
    """``count`` clients offer the CSMS only ``versions``."""

    target: str
    count: int = 1
    versions: tuple[str, ...] = ("1.2",)

    @classmethod
    def read(cls, r: Reader) -> Self:
        target = r.tls_csms()
        versions = r.string_list("versions", ("1.2",), allowed=ATTACK_TLS_VERSIONS, example='["1.2"]')
        order = [ATTACK_TLS_VERSIONS.index(v) for v in versions]
        if max(order) - min(order) + 1 != len(order):
            raise r.error(
                "versions",
                "TLS versions must be contiguous",
                value=None,
                fix='list neighbouring versions, e.g. ["1.2", "1.1"]',
            )
        return cls(target=target, count=r.integer("count", 1, 1, MAX_ATTACK_CONNECTIONS), versions=versions)

    async def apply(self, world: World) -> None:
        world.attack_downgrade(self.target, versions=self.versions, count=self.count)

    def fields(self) -> dict[str, object]:
        return {"target": self.target, "count": self.count, "versions": self.versions}

    def preflight(self, *, network: str, csms: Collection[str]) -> None:
        """Refuse a downgrade attack this OpenSSL build cannot even start (a build without TLS 1.0/1.1)."""
        from evsim.tls.context import check_client_hello
        from evsim.world.attacks import downgrade_profile

        try:
            check_client_hello(downgrade_profile(self.versions))
        except ConfigError as exc:
            raise ConfigError(
                f"the downgrade attacker cannot be built: {exc.message}",
                path="versions",
                value=list(self.versions),
                fix=exc.fix,
            ) from None


@attrs.frozen
class _Redirect(Action):
    target: str
    impersonate: str | None = None
    root: str = "rogue"
    duration: float | None = None

    @classmethod
    def read(cls, r: Reader) -> Self:
        target = r.tls_stations()
        impersonate = r.target(("csms",), key="impersonate") if r.has("impersonate") else r.csms_of(target)
        duration = r.duration("duration", 0.0, positive=True) if r.has("duration") else None
        return cls(target=target, impersonate=impersonate, root=r.root("rogue"), duration=duration)


@action("attack_wrong_ca", "target", "impersonate", "root", "duration")
@attrs.frozen
class AttackWrongCa(_Redirect):
    """The stations are redirected to an impostor of ``impersonate`` with a certificate from ``root``."""

    async def apply(self, world: World) -> None:
        await world.attack_wrong_ca(
            self.target, impersonate=self.impersonate, root=self.root, duration=self.duration
        )


@action("attack_mitm", "target", "impersonate", "root", "duration")
@attrs.frozen
class AttackMitm(_Redirect):
    """A relay between the stations and ``impersonate`` terminates TLS with a certificate from ``root``."""

    async def apply(self, world: World) -> None:
        await world.attack_mitm(
            self.target, impersonate=self.impersonate, root=self.root, duration=self.duration
        )


# ---------------------------------------------------------------- time

MAX_CLOCK_STEP_S = 100 * 365 * 86_400.0
"""Largest clock step (a century: enough to kill a clock back to the year 2000 and to move it forward)."""


@action("clock_step", "target", "by")
@attrs.frozen
class ClockStep(Action):
    """The clocks of stations or a controller jump by ``by`` seconds (the operator sets them, or a dead clock
    resets)."""

    target: str
    by: float

    @classmethod
    def read(cls, r: Reader) -> Self:
        r.require("by", 'add by = "-1h" (how far the clocks jump; negative: back)')
        by = r.duration("by", 0.0, allow_negative=True)
        if abs(by) > MAX_CLOCK_STEP_S:
            raise r.error("by", "at most 100 years either way", value=by, fix='use e.g. by = "-9500d"')
        return cls(target=r.target(("group", "station", "controller")), by=by)

    async def apply(self, world: World) -> None:
        await world.step_clock(self.target, self.by)


# ---------------------------------------------------------------- energy managers (EEBus SHIP pairing)


@attrs.frozen
class _PairingButton(Action):
    target: str

    @classmethod
    def read(cls, r: Reader) -> Self:
        return cls(target=r.target(("energy_manager", "controller")))


@action("open_pairing_window", "target")
@attrs.frozen
class OpenPairingWindow(_PairingButton):
    """The pairing button of an energy manager (or of a controller with ``client_auth = "pairing"``): for its
    ``pairing_window``, new devices pair and known devices with a new key re-pair."""

    async def apply(self, world: World) -> None:
        world.open_pairing_window(self.target)


@action("close_pairing_window", "target")
@attrs.frozen
class ClosePairingWindow(_PairingButton):
    """The pairing window of an energy manager (or a pairing controller) closes before its time."""

    async def apply(self, world: World) -> None:
        world.close_pairing_window(self.target)


@action("unpair", "target", "station")
@attrs.frozen
class Unpair(Action):
    """The energy manager forgets ``station``'s key: its SHIP connection ends and it is refused from then on."""

    target: str
    station: str

    @classmethod
    def read(cls, r: Reader) -> Self:
        return cls(target=r.target(("energy_manager",)), station=r.target(("station",), key="station"))

    async def apply(self, world: World) -> None:
        world.unpair(self.target, self.station)


@action("rotate_ship_key", "target")
@attrs.frozen
class RotateShipKey(Action):
    """The stations make a new SHIP key and certificate (same device id) and reconnect with it (crypto
    agility): their energy manager re-pairs them only inside a pairing window."""

    target: str

    @classmethod
    def read(cls, r: Reader) -> Self:
        return cls(target=r.target(("group", "station")))

    async def apply(self, world: World) -> None:
        world.rotate_ship_key(self.target)


@action("ship_impostor", "target", "device", "attempts")
@attrs.frozen
class ShipImpostor(Action):
    """A device claiming station ``device``'s SHIP device id with a key of its own dials the energy manager
    ``attempts`` times."""

    target: str
    device: str
    attempts: int = 1

    @classmethod
    def read(cls, r: Reader) -> Self:
        return cls(
            target=r.target(("energy_manager",)),
            device=r.target(("station",), key="device"),
            attempts=r.integer("attempts", 1, 1, 100),
        )

    async def apply(self, world: World) -> None:
        await world.ship_impostor(self.target, self.device, attempts=self.attempts)


__all__ = [
    "ACTIONS",
    "ATTACK_TLS_VERSIONS",
    "LINK_NOT_YET",
    "LINK_POLICY_KEYS",
    "Action",
    "AttackDowngrade",
    "AttackMitm",
    "AttackWrongCa",
    "ClockStep",
    "ClosePairingWindow",
    "DegradeCa",
    "DeleteCertificate",
    "ExpireCertificate",
    "Heal",
    "InstallCertificate",
    "InstallRoot",
    "Link",
    "LinkKnobs",
    "OpenPairingWindow",
    "Partition",
    "Reader",
    "ReleasePin",
    "RemoveRoot",
    "RenewCertificate",
    "RevokeCertificate",
    "RotateCertificate",
    "RotateShipKey",
    "SetNetworkProfile",
    "ShipImpostor",
    "Start",
    "Stop",
    "SwitchServerCertificate",
    "TriggerRenewal",
    "Unpair",
    "UpgradeSecurityProfile",
    "action",
    "link_not_yet",
]
