"""The scenario model: what a scenario file says, as frozen, hashable values.

A :class:`Scenario` is pure data: the loader (:mod:`evsim.scenario.loader`) has already validated every field
and resolved every default, so the runner never re-checks anything and never meets a missing key. One built
in Python goes through the same checks with :meth:`Scenario.validate` (``run_scenario`` does it for a
scenario without a ``source``). Durations
are float seconds, bandwidths bits per second, timestamps aware UTC datetimes; lists become tuples and tables
:class:`~evsim.frozenmap.FrozenMap`, so a scenario can be hashed, compared, and shared between tasks.

The model follows the file format documented key by key in ``scenarios/README.md``; names match the TOML
keys except where Python needs another (``for`` → ``duration``), and the units are in the field docs.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any, Literal, TypeAlias

import attrs

from evsim.backoff import RetryBackOff
from evsim.cpu import CpuSpec
from evsim.frozenmap import FrozenMap, frozen_map
from evsim.link.service import Service
from evsim.metrics.outcome import Expectation
from evsim.metrics.topology import Topology
from evsim.nodes.certificates import CertificateSettings
from evsim.nodes.controller import ControllerConfig
from evsim.nodes.csms import CsmsConfig
from evsim.nodes.csms_certs import SigningSettings
from evsim.nodes.station_model import StationConfig
from evsim.scenario.files import FileServerSpec, FileServiceSpec, FileTransfersSpec, FirmwareSpec
from evsim.tls.config import TlsProfile
from evsim.world.actions import Action
from evsim.world.clocks import ClockSpec, NtsServerSpec
from evsim.world.specs import (
    CertificateSpec,
    ChangeSpec,
    HostnameCheck,
    KeyType,
    PinSetSpec,
    PinSpec,
    TrustMode,
    TrustSpec,
    WildcardPolicy,
)

ClockKind: TypeAlias = Literal["virtual", "real"]
NetworkKind: TypeAlias = Literal["memory", "tcp"]
EndpointKind: TypeAlias = Literal["csms", "controller"]
FallbackKind: TypeAlias = Literal["restart_list", "last_working"]
FailoverKind: TypeAlias = Literal["priority", "round_robin", "sticky"]
UpstreamLossKind: TypeAlias = Literal["close_station", "keep_station"]
BehindControllerKind: TypeAlias = Literal["require_station_cert", "trust_controller"]


def default_of(cls: type, name: str) -> Any:
    """The default of field ``name`` of the attrs class ``cls`` (a factory is called).

    The scenario model takes the defaults of the node settings from the node configuration classes
    (:class:`~evsim.nodes.csms.CsmsConfig`, :class:`~evsim.nodes.controller.ControllerConfig`,
    :class:`~evsim.nodes.station_model.StationConfig`, :class:`~evsim.tls.config.TlsProfile`,
    :class:`~evsim.link.service.Service`), so each default is written once; the loader takes its defaults from
    the model the same way.
    """
    default: Any = attrs.fields_dict(cls)[name].default
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]  # attrs.Factory is a class at run time
        return default.factory()
    return default


DEFAULT_START = _dt.datetime(2026, 1, 1, tzinfo=_dt.UTC)
"""Simulation start of a virtual-clock run when the file gives none (fixed, so runs are reproducible)."""


@attrs.frozen(kw_only=True)
class SimulationSpec:
    """The ``[simulation]`` table.

    Attributes:
        name: scenario name (default: the file's stem).
        description: one line saying what the scenario is ("" when absent).
        outcome: what the scenario demonstrates ("" when absent).
        seed: seed of every random choice in the run (>= 0).
        duration: length of the run in seconds (simulated for the virtual clock, wall time for the real one).
        clock: ``"virtual"`` (trio MockClock, as fast as the CPU allows) or ``"real"``.
        network: ``"memory"`` (in-process virtual network) or ``"tcp"`` (loopback; real clock only).
        start: the simulation's wall time at the start (UTC); None means "the real clock's time when the run
            starts" (only with ``clock = "real"``).
        stop_when_done: end before ``duration`` once every station has played its sessions and emptied its
            queue.
        expect: the file's ``[expect]`` table: checks of the outcome the report ends with; None when absent.
    """

    name: str
    description: str = ""
    outcome: str = ""
    seed: int = 1
    duration: float
    clock: ClockKind = "virtual"
    network: NetworkKind = "memory"
    start: _dt.datetime | None = DEFAULT_START
    stop_when_done: bool = False
    expect: Expectation | None = None


@attrs.frozen(kw_only=True)
class RootSpec:
    """A root CA generated for the run (``[pki.roots.<name>]``; ``root`` always exists).

    Attributes:
        name: the root's name, referenced by trust stores, certificates and attacks.
        key_type: ``"ec"`` (P-256) or ``"rsa"`` (2048 bits).
    """

    name: str
    key_type: KeyType = "ec"


@attrs.frozen(kw_only=True)
class IntermediateSpec:
    """An intermediate CA generated for the run (``[pki.intermediates.<name>]``).

    Attributes:
        name: its name, referenced by certificates (``issuer``), pins and ``switch_server_certificate``.
        issuer: the root or (earlier) intermediate that signs it.
        key_type: ``"ec"`` (P-256) or ``"rsa"`` (2048 bits).
    """

    name: str
    issuer: str = "root"
    key_type: KeyType = "ec"


@attrs.frozen(kw_only=True)
class PkiSpec:
    """The ``[pki]`` table: what the run generates.

    Attributes:
        key_type: default key type of every generated key.
        validity: default validity of leaf certificates, in seconds from the simulation start.
        organization: O of every certificate (profile 3 checks the station certificate's O against it).
        roots: root CAs by name, always including ``"root"`` (the operator's CSMS root).
        expiry_warning: every node emits ``cert_expiring`` this many seconds before the notAfter of its own and
            its peers' certificates; None: no expiry warnings.
        intermediates: intermediate CAs by name, in the order they are generated (issuers first).
        station_issuer: the CA the station sub-CA is issued by (``root``, or an intermediate under it).
    """

    key_type: KeyType = "ec"
    validity: float = 365 * 86_400.0
    organization: str = "evsim"
    roots: FrozenMap[str, RootSpec] = attrs.field(
        factory=lambda: FrozenMap({"root": RootSpec(name="root")}), converter=frozen_map
    )
    expiry_warning: float | None = None
    intermediates: FrozenMap[str, IntermediateSpec] = attrs.field(factory=FrozenMap, converter=frozen_map)
    station_issuer: str = "root"

    def top_root(self, ca: str) -> str:
        """The root at the top of ``ca``'s chain (``ca`` itself for a root)."""
        while ca in self.intermediates:
            ca = self.intermediates[ca].issuer
        return ca


@attrs.frozen(kw_only=True)
class TlsProfileSpec:
    """A ``[tls.profiles.<name>]`` table: how a node speaks TLS.

    Attributes:
        name: the profile's name.
        versions: enabled TLS versions in preference order (``"1.3"``, ``"1.2"``), contiguous.
        cipher_suites: IANA suite names per version key (``"1.3"``, ``"1.2"``) in priority order; every
            enabled version has an entry (the TLS layer's defaults fill the versions the file leaves out).
        handshake_timeout: seconds the whole handshake may take.
        max_send_fragment: largest plaintext record written, bytes; None = the engine's 16384.
        tls: the TLS layer's profile with every knob of the table (groups, signature algorithms, ALPN,
            session, record knobs, keylog, enforce), validated by ``TlsProfile.from_toml``; None for a
            profile built in code from the fields above.
        keep_sessions: the table has a ``session`` table: stations using the profile keep sessions and resume
            them (without one they make a full handshake every time, as before sessions were configurable).
    """

    name: str
    versions: tuple[str, ...] = default_of(TlsProfile, "versions")
    cipher_suites: FrozenMap[str, tuple[str, ...]] = attrs.field(factory=FrozenMap, converter=frozen_map)
    handshake_timeout: float = default_of(TlsProfile, "handshake_timeout_s")
    max_send_fragment: int | None = None
    tls: TlsProfile | None = None
    keep_sessions: bool = False

    def engine_profile(self) -> TlsProfile:
        """The TLS layer's profile: :attr:`tls` when the loader built it, else one from the basic fields."""
        if self.tls is not None:
            return self.tls
        kwargs: dict[str, Any] = {"versions": self.versions, "handshake_timeout_s": self.handshake_timeout}
        if self.cipher_suites:
            kwargs["cipher_suites"] = dict(self.cipher_suites)
        if self.max_send_fragment is not None:
            kwargs["max_send_fragment"] = self.max_send_fragment
        return TlsProfile(**kwargs)


@attrs.frozen(kw_only=True)
class SigningSpec:
    """A CSMS's ``signing`` table: how it signs station CSRs with the scenario PKI's station sub-CA.

    Attributes:
        max_concurrent: CSRs signed at once.
        max_queued: CSRs waiting; more are answered Rejected ``Busy``.
        validity: validity of the certificates it signs, seconds (whole days).
    """

    max_concurrent: int = default_of(SigningSettings, "max_concurrent")
    max_queued: int = default_of(SigningSettings, "max_queued")
    validity: float = 365 * 86_400.0


@attrs.frozen(kw_only=True)
class CsmsSpec:
    """A ``[csms.<name>]`` table.

    Attributes:
        name: the node's name (selectors, events, logs).
        host: the host name it listens on (certificate CN and SAN).
        port: the port (0: let the network pick one).
        security_profile: 1, 2 or 3.
        insecure_allow_plain_ws: the explicit opt-in profile 1 needs.
        ocpp_versions: OCPP versions served, in preference order.
        heartbeat_interval: interval returned in BootNotificationResponse, seconds (a whole number).
        tls_profile: name of a :class:`TlsProfileSpec`.
        certificate: the server certificate.
        password: Basic-auth password accepted from every station; None = the run's generated password.
        accept_unknown_stations: False refuses identities that no station group defines (HTTP 404).
        ocsp_stapling: staple an OCPP-style OCSP response from the scenario PKI's responder for its root.
        pins: name of a :class:`PinSetSpec` applied to station certificates (profile 3), or None.
        change: name of a :class:`ChangeSpec` applied to station certificates (profile 3), or None.
        secondary_of: the CSMS this one is a secondary endpoint of (they share station records: a
            TransactionEvent resent to the other endpoint is a counted duplicate), or None.
        behind_controller: how profile 3 treats a client certificate that is a controller's
            (``"require_station_cert"`` or ``"trust_controller"``).
        trusted_controllers: names of the controllers whose certificate may carry other identities.
        signing: how it signs station CSRs.
        client_trust: name of the :class:`TrustSpec` station certificates are checked with (profile 3: roots,
            CRL, OCSP); None: the run's ``root``.
    """

    name: str
    host: str
    port: int = 443
    security_profile: int = default_of(CsmsConfig, "security_profile")
    insecure_allow_plain_ws: bool = default_of(CsmsConfig, "insecure_allow_plain_ws")
    ocpp_versions: tuple[str, ...] = default_of(CsmsConfig, "ocpp_versions")
    heartbeat_interval: float = float(default_of(CsmsConfig, "heartbeat_interval"))
    tls_profile: str = "default"
    certificate: CertificateSpec = attrs.field(factory=CertificateSpec)
    password: str | None = None
    accept_unknown_stations: bool = default_of(CsmsConfig, "accept_unknown_stations")
    ocsp_stapling: bool = False
    pins: str | None = None
    change: str | None = None
    secondary_of: str | None = None
    behind_controller: BehindControllerKind = default_of(CsmsConfig, "behind_controller")  # noqa: RUF009 - an immutable value
    trusted_controllers: tuple[str, ...] = ()
    signing: SigningSpec = attrs.field(factory=SigningSpec)
    client_trust: str | None = None


@attrs.frozen(kw_only=True)
class EndpointSpec:
    """One endpoint a station group or a controller connects to (``endpoints = [...]``, ``upstream = [...]``).

    Attributes:
        kind: ``"csms"`` or ``"controller"``.
        name: the CSMS or controller it names.
        priority: lower is tried first (``NetworkConfigurationPriority`` order for stations).
        trust: trust store name for this endpoint; None = the owner's ``trust``.
        tls_profile: TLS profile name for this endpoint; None = the owner's ``tls_profile``.
        pins: pin set name for this endpoint (station endpoints only); None = the group's ``pins``.
    """

    kind: EndpointKind
    name: str
    priority: int = 0
    trust: str | None = None
    tls_profile: str | None = None
    pins: str | None = None


@attrs.frozen(kw_only=True)
class EnergyManagerSpec:
    """An energy manager (``[energy_managers.<name>]``): an EEBus SHIP server that pairs with stations.

    Attributes:
        name: the node's name (targets, events).
        host: the host it listens on.
        port: its port (eebus-go's 4711).
        stations: the groups and station ids with a SHIP link to it, in file order.
        auto_accept: pair every new device at once (SHIP ``register=true``).
        pairing_window: seconds a pairing window stays open.
        station_trust: how the linked stations trust it: ``register`` (its SKI installed) or ``auto_accept``.
        retry: the stations' first retry wait, seconds (doubling up to ten times that).
        confirm: seconds the user takes to confirm a newly paired device (its SHIP hello stays ``pending``).
    """

    name: str
    host: str
    port: int = 4711
    stations: tuple[str, ...] = ()
    auto_accept: bool = False
    pairing_window: float = 120.0
    station_trust: Literal["register", "auto_accept"] = "register"
    retry: float = 30.0
    confirm: float = 0.0


@attrs.frozen(kw_only=True)
class ControllerSpec:
    """A ``[controllers.<name>]`` table: a Local Controller between stations and CSMS (OCPP-J §6).

    Attributes:
        name: the node's name (selectors, events, logs).
        host: the host name it listens on (its server certificate's CN and SAN).
        port: the port stations connect to (0: let the network pick one).
        security_profile: 1, 2 or 3 towards the stations.
        insecure_allow_plain_ws: the explicit opt-in profile 1 needs.
        tls_profile: TLS profile of the listener and (by default) of the upstream endpoints.
        trust: trust store the upstream endpoints verify the CSMS (or the next controller) with, by default.
        certificate: the controller's certificate (server towards stations; client upstream under profile 3).
        upstream: the endpoints it connects to for each station, CSMS or controllers.
        upstream_security_profile: the profile of the upstream links (1, 2 or 3).
        failover: the upstream service's failover policy.
        on_upstream_loss: ``"close_station"`` (OCPP-J §6.3) or ``"keep_station"`` (errata 2025-02).
        upstream_connect_attempts: attempts before a new station is refused (1013).
        retry_backoff: the upstream back-off.
        behind_controller: profile 3 listener: whether a lower controller's certificate may carry stations.
        trusted_controllers: controllers trusted by ``behind_controller = "trust_controller"``.
        client_trust: name of the :class:`TrustSpec` station certificates are checked with (profile 3);
            None: the run's ``root``.
        clock: its clock and NTS servers (None: a perfect clock).
        client_auth: profile 3: ``required`` (a certificate from ``client_trust``'s roots) or ``pairing`` (any
            self-signed certificate, decided by SKI: a pairing window, or ``auto_accept``; the stations whose
            first endpoint it is then present self-signed certificates).
        auto_accept: with ``pairing``: pair every new station at once.
        pairing_window: with ``pairing``: seconds a pairing window stays open.
    """

    name: str
    host: str
    port: int = default_of(ControllerConfig, "port")
    security_profile: int = default_of(ControllerConfig, "security_profile")
    insecure_allow_plain_ws: bool = default_of(ControllerConfig, "insecure_allow_plain_ws")
    tls_profile: str = "default"
    trust: str = "default"
    certificate: CertificateSpec = attrs.field(factory=CertificateSpec)
    upstream: tuple[EndpointSpec, ...]
    upstream_security_profile: int = 2
    failover: FailoverKind = default_of(Service, "policy")  # noqa: RUF009 - an immutable value
    on_upstream_loss: UpstreamLossKind = default_of(ControllerConfig, "on_upstream_loss")  # noqa: RUF009 - an immutable value
    upstream_connect_attempts: int = default_of(ControllerConfig, "upstream_connect_attempts")
    retry_backoff: RetryBackOff = attrs.field(factory=RetryBackOff)
    behind_controller: BehindControllerKind = default_of(ControllerConfig, "behind_controller")  # noqa: RUF009 - an immutable value
    trusted_controllers: tuple[str, ...] = ()
    client_trust: str | None = None
    clock: ClockSpec | None = None
    client_auth: Literal["required", "pairing"] = "required"
    auto_accept: bool = False
    pairing_window: float = 120.0


@attrs.frozen(kw_only=True)
class StationCertificatesSpec:
    """A group's ``certificates`` table: the stations' certificate device model (SecurityCtrlr), used when
    they renew their certificate over OCPP (A02 on a trigger, A03 on their own).

    Attributes:
        key_type: the key pair generated for a CSR: ``"ec"`` or ``"rsa"``.
        key_size: its size in bits; None: P-256 / RSA-2048.
        renewal_threshold: A03: a station renews when its certificate expires within this, seconds.
        sign_wait_minimum: ``CertSigningWaitMinimum``: first wait for CertificateSigned before resending, s.
        sign_repeat_times: ``CertSigningRepeatTimes``: resends, the wait doubling each time.
        renewed_attempts: connection attempts with a renewed certificate before it is discarded.
    """

    key_type: KeyType = default_of(CertificateSettings, "key_type")  # noqa: RUF009 - an immutable value
    key_size: int | None = default_of(CertificateSettings, "key_size")
    renewal_threshold: float = default_of(CertificateSettings, "renewal_threshold_s")
    sign_wait_minimum: float = float(default_of(CertificateSettings, "sign_wait_minimum_s"))
    sign_repeat_times: int = default_of(CertificateSettings, "sign_repeat_times")
    renewed_attempts: int = default_of(CertificateSettings, "renewed_attempts")

    def settings(self, organization: str) -> CertificateSettings:
        """The station layer's settings, with the operator's ``organization`` as OrganizationName."""
        return CertificateSettings(
            organization_name=organization,
            key_type=self.key_type,
            key_size=self.key_size,
            renewal_threshold_s=self.renewal_threshold,
            sign_wait_minimum_s=int(self.sign_wait_minimum),
            sign_repeat_times=self.sign_repeat_times,
            renewed_attempts=self.renewed_attempts,
        )


@attrs.frozen(kw_only=True)
class StationGroupSpec:
    """A ``[stations.<group>]`` table: ``count`` stations that behave alike.

    Attributes:
        name: the group's name.
        count: number of stations.
        id_pattern: ``str.format`` pattern with the field ``n`` (1-based) giving each station's identity.
        csms: name of the :class:`CsmsSpec` the stations connect to.
        security_profile: 1, 2 or 3.
        ocpp_versions: OCPP versions offered, in preference order.
        tls_profile: name of a :class:`TlsProfileSpec`.
        trust: name of a :class:`TrustSpec`.
        password: Basic-auth password; None = the CSMS's.
        sessions: charging sessions per station over the run, or None when ``sessions_per_day`` is used.
        sessions_per_day: average sessions per station per day (the runner converts it), or None.
        session_duration: how long an EV charges, seconds.
        session_start: (min, max) random delay before each session, seconds.
        meter_interval: seconds between meter values during a session.
        charge_power: charging power, W.
        heartbeat_fallback: heartbeat interval until the CSMS gives one, seconds.
        retry_backoff: reconnect back-off.
        queue_max: offline message queue threshold.
        connect_window: how many of the group's stations may be setting up a connection at once (TCP, TLS,
            WebSocket), as ``evsim stations --connect-window``; 0: no limit.
        pins: name of a :class:`PinSetSpec` (each station gets its own pin memory), or None.
        change: name of a :class:`ChangeSpec` (each station remembers the CSMS's leaf), or None.
        endpoints: the endpoints the stations connect to, one network-profile slot each (slot = position);
            ``csms = "name"`` is the one-endpoint shorthand.
        network_attempts: ``NetworkProfileConnectionAttempts`` (attempts per slot before the next).
        fallback: what the slot walk does when every slot failed, and where it restarts after a loss
            (``"restart_list"``, B10.FR.08, or ``"last_working"``, B10.FR.07).
        certificates: the stations' certificate device model (renewal over OCPP).
        clock: the stations' clocks and time sources (None: perfect clocks).
    """

    name: str
    count: int = 1
    id_pattern: str
    csms: str
    security_profile: int = default_of(StationConfig, "security_profile")
    ocpp_versions: tuple[str, ...] = default_of(StationConfig, "ocpp_versions")
    tls_profile: str = "default"
    trust: str = "default"
    password: str | None = None
    sessions: int | None = default_of(StationConfig, "sessions")
    sessions_per_day: float | None = None
    session_duration: float = default_of(StationConfig, "session_duration_s")
    session_start: tuple[float, float] = default_of(StationConfig, "session_start_s")
    meter_interval: float = default_of(StationConfig, "meter_interval_s")
    charge_power: float = default_of(StationConfig, "charge_power_w")
    heartbeat_fallback: float = default_of(StationConfig, "default_heartbeat_s")
    retry_backoff: RetryBackOff = attrs.field(factory=RetryBackOff)
    queue_max: int = default_of(StationConfig, "queue_max")
    connect_window: int = 0
    pins: str | None = None
    change: str | None = None
    endpoints: tuple[EndpointSpec, ...] = ()
    network_attempts: int = default_of(StationConfig, "network_attempts")
    fallback: FallbackKind = default_of(StationConfig, "network_fallback")  # noqa: RUF009 - an immutable value
    certificates: StationCertificatesSpec = attrs.field(factory=StationCertificatesSpec)
    clock: ClockSpec | None = None

    def station_ids(self) -> list[str]:
        """The identities of the group's stations, in order.

        Returns:
            ``id_pattern.format(n=n)`` for ``n`` in ``1..count``.
        """
        return [self.id_pattern.format(n=n) for n in range(1, self.count + 1)]


@attrs.frozen(kw_only=True)
class StallSpec:
    """A link stalls (no bytes move either way) for ``duration`` seconds every ``every`` seconds."""

    every: float
    duration: float


@attrs.frozen(kw_only=True)
class ResetSpec:
    """A link's connections are reset (both ends see a broken stream) every ``every`` seconds."""

    every: float


@attrs.frozen(kw_only=True)
class LinkSpec:
    """A ``[[links]]`` entry: the policy of every link between two node selectors (seeded by the run).

    Attributes:
        between: two selectors: a CSMS name, a station group, a station id, or ``"*"`` (every node).
        latency: one-way delay, seconds.
        jitter: random extra delay, up to this many seconds.
        bandwidth: bits per second; None = unlimited.
        stall: periodic stalls, or None.
        reset: periodic connection resets, or None.
        line: line of the entry in the scenario file (None when unknown).
    """

    between: tuple[str, str]
    latency: float = 0.0
    jitter: float = 0.0
    bandwidth: float | None = None
    stall: StallSpec | None = None
    reset: ResetSpec | None = None
    line: int | None = attrs.field(default=None, eq=False)


@attrs.frozen
class TimelineEvent:
    """A ``[[timeline]]`` entry: ``action`` happens ``at`` seconds after the start.

    Attributes:
        at: seconds from the simulation start (0 <= at <= duration).
        action: the typed action (:mod:`evsim.world.actions`; its parameters with defaults filled in).
        line: line of the entry in the scenario file (None when unknown).
    """

    at: float
    action: Action
    line: int | None = attrs.field(default=None, eq=False)

    @property
    def name(self) -> str:
        """The action's name (``"partition"``...)."""
        return self.action.name

    @property
    def params(self) -> FrozenMap[str, object]:
        """What the ``timeline`` event records: the action's parameters (lists as tuples)."""
        return FrozenMap(self.action.fields())


@attrs.frozen
class Scenario:
    """A whole scenario file, validated.

    Attributes:
        simulation: run settings.
        pki: what the run generates.
        tls_profiles: profiles by name (``"default"`` always present).
        trust_stores: trust stores by name (``"default"`` always present).
        csms: CSMS nodes by name (at least one).
        stations: station groups by name.
        controllers: Local Controllers by name, in dependency order (a controller after those it connects to).
        links: link policies, in file order (later entries override earlier ones where they overlap).
        timeline: events sorted by ``at`` (events at the same time keep their file order).
        source: the file it was loaded from, or the ``source`` label given to the loader.
        pin_sets: ``[tls.pins.<name>]`` by name.
        change_policies: ``[tls.change.<name>]`` by name.
        nts_servers: ``[nts.<name>]`` by name.
        energy_managers: ``[energy_managers.<name>]`` by name.
        firmware, file_servers, file_services, file_transfers: HTTPS file servers and what they serve
            (:mod:`evsim.scenario.files`).
        cpu: node or station-group name -> its CPU model in virtual time (:mod:`evsim.scenario.read_cpu`);
            empty: operations take no virtual time.
    """

    simulation: SimulationSpec
    pki: PkiSpec = PkiSpec()
    tls_profiles: FrozenMap[str, TlsProfileSpec] = attrs.field(factory=FrozenMap, converter=frozen_map)
    trust_stores: FrozenMap[str, TrustSpec] = attrs.field(factory=FrozenMap, converter=frozen_map)
    csms: FrozenMap[str, CsmsSpec] = attrs.field(factory=FrozenMap, converter=frozen_map)
    stations: FrozenMap[str, StationGroupSpec] = attrs.field(factory=FrozenMap, converter=frozen_map)
    controllers: FrozenMap[str, ControllerSpec] = attrs.field(factory=FrozenMap, converter=frozen_map)
    links: tuple[LinkSpec, ...] = ()
    timeline: tuple[TimelineEvent, ...] = ()
    source: str | None = None
    pin_sets: FrozenMap[str, PinSetSpec] = attrs.field(factory=FrozenMap, converter=frozen_map)
    change_policies: FrozenMap[str, ChangeSpec] = attrs.field(factory=FrozenMap, converter=frozen_map)
    nts_servers: FrozenMap[str, NtsServerSpec] = attrs.field(factory=FrozenMap, converter=frozen_map)
    energy_managers: FrozenMap[str, EnergyManagerSpec] = attrs.field(factory=FrozenMap, converter=frozen_map)
    firmware: FrozenMap[str, FirmwareSpec] = attrs.field(factory=FrozenMap, converter=frozen_map)
    file_servers: FrozenMap[str, FileServerSpec] = attrs.field(factory=FrozenMap, converter=frozen_map)
    file_services: FrozenMap[str, FileServiceSpec] = attrs.field(factory=FrozenMap, converter=frozen_map)
    file_transfers: FileTransfersSpec = attrs.field(factory=FileTransfersSpec)
    cpu: FrozenMap[str, CpuSpec] = attrs.field(factory=FrozenMap, converter=frozen_map)

    def station_ids(self) -> list[str]:
        """Every station identity, group by group in file order.

        Returns:
            The concatenation of each group's :meth:`StationGroupSpec.station_ids`.
        """
        return [sid for group in self.stations.values() for sid in group.station_ids()]

    def station_count(self) -> int:
        """Number of stations over all groups.

        Returns:
            The sum of the groups' ``count``.
        """
        return sum(group.count for group in self.stations.values())

    def topology(self) -> Topology:
        """Who is who in this scenario's events, for the reports (metrics read events, never the scenario).

        Returns:
            The station groups and the CSMS each one names, each secondary CSMS's primary, and the host of
            every CSMS and controller.
        """
        topo = Topology.from_groups(
            {name: spec.station_ids() for name, spec in self.stations.items()},
            {name: spec.csms for name, spec in self.stations.items()},
        )
        operators = {name: spec.secondary_of for name, spec in self.csms.items() if spec.secondary_of}
        hosts = {spec.host: name for name, spec in self.csms.items()}
        hosts.update({spec.host: name for name, spec in self.controllers.items()})
        return attrs.evolve(topo, operators=operators, hosts=hosts)

    def validate(self) -> Scenario:
        """Check a scenario built in Python with exactly the checks a file gets
        (:func:`evsim.scenario.document.validate_scenario`); ``run_scenario`` does it for a scenario without
        a ``source``.

        Returns:
            The scenario as the loader would have made it (defaults filled in, timeline sorted).

        Raises:
            ConfigError: the first problem, with its field path and a fix.
        """
        from evsim.scenario.document import validate_scenario  # it imports this module

        return validate_scenario(self)

    @classmethod
    def from_file(cls, path: str | Path) -> Scenario:
        """Load and validate a scenario file (see :func:`evsim.scenario.loader.load_scenario`).

        Args:
            path: the TOML file.

        Returns:
            The scenario.

        Raises:
            ConfigError: the file is missing, not TOML, or not a valid scenario.
        """
        from evsim.scenario.loader import load_scenario  # the loader imports this module

        return load_scenario(path)

    @classmethod
    def from_toml(cls, text: str, *, source: str = "<string>") -> Scenario:
        """Parse and validate scenario text (see :func:`evsim.scenario.loader.loads_scenario`).

        Args:
            text: TOML text.
            source: the label errors name as the file.

        Returns:
            The scenario.

        Raises:
            ConfigError: not TOML, or not a valid scenario.
        """
        from evsim.scenario.loader import loads_scenario

        return loads_scenario(text, source=source)


__all__ = [
    "DEFAULT_START",
    "BehindControllerKind",
    "CertificateSpec",
    "ChangeSpec",
    "ClockKind",
    "ControllerSpec",
    "CsmsSpec",
    "EndpointKind",
    "EndpointSpec",
    "FailoverKind",
    "FallbackKind",
    "FrozenMap",
    "HostnameCheck",
    "IntermediateSpec",
    "KeyType",
    "LinkSpec",
    "NetworkKind",
    "PinSetSpec",
    "PinSpec",
    "PkiSpec",
    "ResetSpec",
    "RootSpec",
    "Scenario",
    "SigningSpec",
    "SimulationSpec",
    "StallSpec",
    "StationCertificatesSpec",
    "StationGroupSpec",
    "TimelineEvent",
    "TlsProfileSpec",
    "TrustMode",
    "TrustSpec",
    "UpstreamLossKind",
    "WildcardPolicy",
]
