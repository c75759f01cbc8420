"""A station's configuration and its device model: what the station is set up with, and how the CSMS reads
and changes it over OCPP.

Theory of operation. :class:`StationConfig` is the frozen description a station is built from (identity,
the CSMS URL or its network configuration slots, charging behaviour, retry and queue settings, certificate
settings). Some of it is also visible to the CSMS as device-model variables, and a little of it can be changed
at run time: :class:`DeviceModel` answers GetVariables and SetVariables (B06/B05: the heartbeat interval, the
security profile and identity, the OCPPCommCtrlr network variables of :mod:`evsim.ocpp.netprofile`, the
SecurityCtrlr certificate variables of :mod:`evsim.nodes.certificates`, the ClockCtrlr variables of
:mod:`evsim.nodes.devicetime`, the TLS versions and suites of :mod:`evsim.nodes.station_tls`), SetNetworkProfile
(B09) and Reset (done as a reconnect). It keeps
no state of its own: every value is read from, and written to, the live station (:class:`ModelHost`), whose
:class:`~evsim.link.slots.NetworkProfiles` and :class:`~evsim.nodes.certificates.StationCertificates`
validate what they own. A value out of range is Rejected with a ``reasonCode`` and recorded once
(``value_refused``, ``network_profile_rejected`` or ``network_variable_set`` with its reason); changes to the
network slots and their priority take effect at the next reconnect. A change that would raise the security
profile (A05: a profile 3 slot put first) is refused with ``NoCsmsRootCertificate`` or ``NoClientCertificate``
unless the station holds a valid CSMS root and, for profile 3, a valid client certificate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import attrs
import trio

from evsim.backoff import RetryBackOff
from evsim.clock import SimClock
from evsim.errors import ConfigError, OcppError, TransportError
from evsim.link.slots import NetworkProfiles, NetworkSlot
from evsim.nodes.certificates import CertificateSettings, StationCertificates
from evsim.nodes.devicetime import ClockSettings, DeviceTime
from evsim.nodes.station_tls import COMPONENT as TLS_COMPONENT
from evsim.nodes.station_tls import NAMES as TLS_NAMES
from evsim.nodes.station_tls import TlsSettings
from evsim.ocpp.limits import HEARTBEAT_INTERVAL, OutOfRange
from evsim.ocpp.netprofile import FallbackPolicy, NetworkConnectionProfile, NetworkSettings, ProfileRejected
from evsim.ocpp.txqueue import QueueTally
from evsim.recorder import Recorder
from evsim.tls.context import ClientTls
from evsim.tls.peer import PeerEvent
from evsim.tls.stream import TlsInfo


@attrs.frozen
class StationConfig:
    """How one station behaves.

    Args:
        station_id: the OCPP identity (URL path, Basic-auth user, certificate CN for profile 3).
        csms_url: OCPP-J endpoint without the identity, e.g. ``wss://csms.evsim.test/ocpp``; it becomes
            configuration slot 0 with ``security_profile`` and ``message_timeout_s``. Leave it empty when
            ``network_slots`` is given.
        security_profile: 1, 2 or 3 (see :class:`~evsim.nodes.csms.CsmsConfig`): the profile of the
            ``csms_url`` slot, and the station's starting security profile (no slot below it is used).
        password: Basic-auth password (profiles 1 and 2).
        ocpp_versions: subprotocols offered, in order of preference.
        sessions: charging sessions to play (0: none; the station only boots and heartbeats).
        session_start_s: (min, max) delay before each session starts, drawn from the station's RNG.
        session_duration_s: how long the EV charges.
        meter_interval_s: ``SampledDataCtrlr.TxUpdatedInterval``.
        charge_power_w: charging power for the simulated meter.
        id_token: the RFID token presented.
        message_attempts, message_attempt_interval_s: E13 retry of TransactionEvents after a timeout.
        message_timeout_s: the network profile's ``messageTimeout``.
        backoff: RetryBackOff for reconnects.
        queue_max: pressure threshold of the offline queue.
        compression: offer permessage-deflate (optional for stations, OCPP-J §3.4).
        close_timeout_s: how long a station that ends a connection (it stops, or gives up on the CSMS) waits
            for the CSMS's reply to its WebSocket close frame before it closes the link anyway.
        network_slots: configuration slots (NetworkConnectionProfiles, each with optional own TLS settings);
            empty: one slot 0 from ``csms_url``.
        network_priority: ``OCPPCommCtrlr.NetworkConfigurationPriority`` (None: the slots in order given).
        network_attempts: ``NetworkProfileConnectionAttempts`` (attempts per slot before the next).
        network_fallback: when every slot failed: ``"restart_list"`` (B10.FR.08) or ``"last_working"``
            (B10.FR.07); see :mod:`evsim.ocpp.netprofile`.
        allow_security_downgrade: ``SecurityCtrlr.AllowSecurityProfileDowngrade`` (3→2 only).
        certificates: the certificate device model (OrganizationName, the key pair a CSR gets, resend
            schedule, A03 threshold, MaxCertificateChainSize...; :mod:`evsim.nodes.certificates`).
        clock: how its clock is corrected and reported (ClockCtrlr; :mod:`evsim.nodes.devicetime`).
    """

    station_id: str
    csms_url: str = ""
    security_profile: int = 2
    password: str | None = None
    ocpp_versions: tuple[str, ...] = ("2.0.1",)
    vendor: str = "evsim"
    model: str = "evsim-ac22"
    firmware_version: str = "0.1.0"
    sessions: int = 1
    session_start_s: tuple[float, float] = (5.0, 30.0)
    session_duration_s: float = 600.0
    meter_interval_s: float = 60.0
    charge_power_w: float = 11_000.0
    id_token: str = "EVSIM0001"
    message_attempts: int = 3
    message_attempt_interval_s: float = 10.0
    message_timeout_s: float = 30.0
    default_heartbeat_s: float = 300.0
    backoff: RetryBackOff = attrs.field(factory=RetryBackOff)
    queue_max: int = 1000
    compression: bool = False
    close_timeout_s: float = 5.0
    network_slots: tuple[NetworkSlot, ...] = ()
    network_priority: tuple[int, ...] | None = None
    network_attempts: int = 3
    network_fallback: FallbackPolicy = "restart_list"
    allow_security_downgrade: bool = False
    certificates: CertificateSettings = attrs.field(factory=CertificateSettings)
    clock: ClockSettings = attrs.field(factory=ClockSettings)

    def __attrs_post_init__(self) -> None:
        if self.security_profile not in (1, 2, 3):
            raise ConfigError(
                "security_profile must be 1, 2 or 3",
                path="station.security_profile",
                value=self.security_profile,
            )
        if bool(self.csms_url) == bool(self.network_slots):
            raise ConfigError(
                "give either csms_url (one slot) or network_slots, not both or neither",
                path="station.csms_url",
                fix="set exactly one of them",
            )

    def slots(self) -> tuple[NetworkSlot, ...]:
        """The configuration slots: ``network_slots``, or slot 0 made from ``csms_url``.

        Raises:
            ProfileRejected: ``csms_url`` does not fit ``security_profile`` (ws:// for 1, wss:// for 2/3).
        """
        if self.network_slots:
            return self.network_slots
        profile = NetworkConnectionProfile(
            self.csms_url, self.security_profile, message_timeout=self.message_timeout_s
        )
        return (NetworkSlot(0, profile),)

    def network_settings(self) -> NetworkSettings:
        """The failover settings (:class:`~evsim.ocpp.netprofile.NetworkSettings`) from the fields above."""
        return NetworkSettings(
            priority=self.network_priority,
            connection_attempts=self.network_attempts,
            backoff=self.backoff,
            fallback=self.network_fallback,
            allow_security_downgrade=self.allow_security_downgrade,
        )


_NETWORK_SETTERS: dict[str, Callable[[NetworkProfiles, str], None]] = {
    "NetworkProfileConnectionAttempts": NetworkProfiles.set_connection_attempts,
    "RetryBackOffWaitMinimum": lambda p, v: p.set_backoff(wait_minimum=v),
    "RetryBackOffRandomRange": lambda p, v: p.set_backoff(random_range=v),
    "RetryBackOffRepeatTimes": lambda p, v: p.set_backoff(repeat_times=v),
}
"""The OCPPCommCtrlr variables SetVariables may write, and how (:class:`NetworkProfiles` validates); and
NetworkConfigurationPriority, whose upgrade the device model checks first (A05)."""
_PRIORITY = "NetworkConfigurationPriority"


class ResetRequested(TransportError):
    """The station ends its connection and connects again, as the CSMS asked with Reset (B11/B12; the
    simulated station keeps its charging session, and reconnects with its current network configuration)."""

    reason = "reset"


@attrs.frozen
class StationStatistics:
    """A snapshot of a station (:meth:`evsim.nodes.station.Station.statistics`)."""

    station_id: str
    connected: bool
    booted: bool
    connects_ok: int
    connect_failures: dict[str, int]
    boots: int
    heartbeats: int
    sessions_completed: int
    queue: Any
    tls: TlsInfo | None
    messages_sent: dict[str, int]
    security_events_queued: int
    active_slot: int | None = None
    slot_switches: int = 0
    slots_skipped: int = 0
    certificates_renewed: int = 0


class FleetTally(QueueTally):
    """A fleet's figures that a periodic sample reads without walking the stations (``World.sample``):
    connected and done stations, connection failures and (:class:`~evsim.ocpp.txqueue.QueueTally`) queued
    messages. A station counted in one (its ``tally``, its queue's :meth:`~evsim.ocpp.txqueue.TxQueue.count_in`
    from before it runs) keeps them up to date; a station counted in none adds to a throw-away tally."""

    __slots__ = ("connect_failures", "connected", "done")

    def __init__(self) -> None:
        super().__init__()
        self.connected = 0
        self.done = 0
        self.connect_failures = 0


class ModelHost(Protocol):
    """What the device model reads and writes of its station (:class:`evsim.nodes.station.Station` fits)."""

    @property
    def name(self) -> str: ...

    @property
    def clock(self) -> SimClock: ...  # read only: a station's own NodeClock fits

    config: StationConfig
    recorder: Recorder
    client_tls: ClientTls | None
    network_profiles: NetworkProfiles
    certs: StationCertificates
    time: DeviceTime
    heartbeat_s: float


class DeviceModel:
    """The station's variables (GetVariables, SetVariables) and network profiles (SetNetworkProfile).

    Args:
        station: the station whose values are read and written.
        refused: records a number from the CSMS the station refused (``value_refused``).
    """

    def __init__(self, station: ModelHost, refused: Callable[[str, OutOfRange], None]) -> None:
        self.station = station
        self._refused = refused
        self._reset = False
        self.tls = TlsSettings(
            lambda: station.client_tls.profile if station.client_tls is not None else None,
            lambda kind, **fields: station.recorder.emit(station.name, kind, **fields),
        )
        """The TLS versions and suites (``InternalCtrlr``; :mod:`evsim.nodes.station_tls`)."""

    def variables(self) -> dict[tuple[str, str], str]:
        out = {
            ("OCPPCommCtrlr", "HeartbeatInterval"): str(int(self.station.heartbeat_s)),
            ("SecurityCtrlr", "SecurityProfile"): str(self.station.network_profiles.security_profile),
            ("SecurityCtrlr", "Identity"): self.station.config.station_id,
            ("SecurityCtrlr", "AllowSecurityProfileDowngrade"): str(
                self.station.config.allow_security_downgrade
            ).lower(),
        }
        for name, value in self.station.network_profiles.variables().items():
            out[("OCPPCommCtrlr", name)] = value
        for name, value in self.station.certs.variables().items():
            out[("SecurityCtrlr", name)] = value
        for name, value in self.station.time.variables().items():
            out[("ClockCtrlr", name)] = value
        for name, value in self.tls.variables().items():
            out[(TLS_COMPONENT, name)] = value
        return out

    def _upgrade_check(self, security_profile: int) -> None:
        """A05: the station moves up to ``security_profile`` only with a valid CSMS root (A05.FR.02) and, for
        profile 3, a valid client certificate (A05.FR.03); else the change is Rejected and nothing changes."""
        now = self.station.clock.utcnow()
        certs = self.station.certs
        if not certs.valid_csms_root(now):
            raise ProfileRejected(
                "NoCsmsRootCertificate",
                f"security profile {security_profile} needs a valid CSMSRootCertificate",
            )
        if security_profile == 3 and certs.valid_client_certificate(now) is None:
            raise ProfileRejected(
                "NoClientCertificate",
                "security profile 3 needs a valid ChargingStationCertificate (renew it first, A02)",
            )

    def reset(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Reset (B11/B12): a station-wide OnIdle or Immediate reset is Accepted and done as a reconnect
        (:meth:`check_reset`), which is how the CSMS makes a new NetworkConfigurationPriority take effect
        (A05.FR.05); an EVSE reset is Rejected (the station has one EVSE and no per-EVSE reset)."""
        if payload.get("evseId") is not None:
            return {"status": "Rejected", "statusInfo": {"reasonCode": "UnsupportedRequest"}}
        self._reset = True
        self.station.recorder.emit(self.station.name, "reset_requested", type=payload["type"])
        return {"status": "Accepted"}

    def check_reset(self) -> None:
        """Raises :class:`ResetRequested` once after an accepted Reset (the station's uplink calls it)."""
        if self._reset:
            self._reset = False
            raise ResetRequested("reset by the CSMS")

    def note_upgrade(self) -> None:
        """After a successful connection: record the A05 upgrade it made, if any (``security_profile_upgraded``,
        with the slots dropped because their profile is lower, A05.FR.06)."""
        upgrade = self.station.network_profiles.take_upgrade()
        if upgrade is not None:
            self.station.recorder.emit(
                self.station.name,
                "security_profile_upgraded",
                previous=upgrade.previous,
                security_profile=upgrade.current,
                removed_slots=list(upgrade.removed),
            )

    def set_network_profile(self, payload: dict[str, Any]) -> dict[str, Any]:
        """SetNetworkProfile (B09): validate and store the slot; used from the next reconnect on.

        Answers Accepted, or Rejected with ``statusInfo.reasonCode`` ``InvalidNetworkConf`` (B09.FR.02),
        ``NoSecurityDowngrade`` (B09.FR.04/31) or ``InvalidConfSlot`` (B09.FR.05).
        """
        slot = payload["configurationSlot"]
        try:
            profile = NetworkConnectionProfile.from_ocpp(payload["connectionData"])
            if profile.security_profile >= 2 and self.station.client_tls is None:
                raise ProfileRejected("InvalidNetworkConf", "no TLS configuration installed for wss://")
            self.station.network_profiles.set_network_profile(
                slot, profile, upgrade_check=self._upgrade_check
            )
        except ProfileRejected as exc:
            self.station.recorder.emit(
                self.station.name,
                "network_profile_rejected",
                slot=slot,
                reason=exc.reason_code,
                detail=str(exc),
            )
            return {
                "status": "Rejected",
                "statusInfo": {"reasonCode": exc.reason_code, "additionalInfo": str(exc)[:512]},
            }
        self.station.recorder.emit(
            self.station.name,
            "network_profile_set",
            slot=slot,
            url=profile.ocpp_csms_url,
            security_profile=profile.security_profile,
        )
        return {"status": "Accepted"}

    def get_variable(self, item: dict[str, Any]) -> dict[str, Any]:
        key = (item["component"]["name"], item["variable"]["name"])
        value = self.variables().get(key)
        result: dict[str, Any] = {
            "attributeStatus": "Accepted" if value is not None else "UnknownVariable",
            "component": item["component"],
            "variable": item["variable"],
        }
        if value is not None:
            result["attributeValue"] = value
        return result

    def set_variable(self, item: dict[str, Any]) -> dict[str, Any]:
        key = (item["component"]["name"], item["variable"]["name"])
        status = "UnknownVariable"
        value = item["attributeValue"]
        info: dict[str, str] | None = None
        if key == ("OCPPCommCtrlr", "HeartbeatInterval"):
            try:
                self.station.heartbeat_s = float(HEARTBEAT_INTERVAL.parse(value))
                status = "Accepted"
            except OutOfRange as exc:
                status, info = "Rejected", {"reasonCode": exc.reason_code, "additionalInfo": str(exc)[:512]}
                self._refused("SetVariables", exc)
        elif key[0] == "OCPPCommCtrlr" and (key[1] in _NETWORK_SETTERS or key[1] == _PRIORITY):
            try:
                if key[1] == _PRIORITY:
                    self.station.network_profiles.set_priority(value, upgrade_check=self._upgrade_check)
                else:
                    _NETWORK_SETTERS[key[1]](self.station.network_profiles, value)
                status = "Accepted"  # B10.FR.01; takes effect at the next reconnect (see netprofile)
            except ProfileRejected as exc:  # B10.FR.02
                status, info = "Rejected", {"reasonCode": exc.reason_code, "additionalInfo": str(exc)[:512]}
            reason = {"reason": info["reasonCode"]} if info is not None else {}
            self.station.recorder.emit(
                self.station.name,
                "network_variable_set",
                variable=key[1],
                value=value,
                status=status,
                **reason,
            )
        elif key[0] == TLS_COMPONENT and key[1] in TLS_NAMES:
            status, info = self.tls.set_variable(key[1], value)
        elif key[0] == "SecurityCtrlr" and key[1] in self.station.certs.variables():
            status, code = self.station.certs.set_variable(key[1], value)
            if code is not None:
                info = {"reasonCode": code}
        elif key[0] == "ClockCtrlr":
            status, code = self.station.time.set_variable(key[1], value)
            if code is not None:
                info = {"reasonCode": code}
        result = {"attributeStatus": status, "component": item["component"], "variable": item["variable"]}
        if info is not None:
            result["attributeStatusInfo"] = info
        return result


# ---------------------------------------------------------------- what the station's tasks share


class Rebooting(TransportError):
    """The station ends its CSMS connection to reboot (a firmware install)."""

    reason = "reboot"


@attrs.define
class PendingCall:
    """A CALL the behaviour asked the uplink to make; ``result`` stays None if the link dropped."""

    payload: dict[str, Any]
    done: trio.Event = attrs.field(factory=trio.Event)
    result: dict[str, Any] | None = None


def sole_failure(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The connection failure inside a nursery's exception group.

    A connection's tasks fail together when the link goes (each sees the broken transport); they are one
    failure. If anything other than transport/OCPP errors is in the group, re-raise the whole group: that is a
    bug, not a network event, and must not be swallowed.
    """
    matched, rest = group.split((TransportError, OcppError))
    if rest is not None or matched is None:
        raise group
    first: BaseException = matched
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first


def peer_event_fields(event: PeerEvent) -> dict[str, Any]:
    """What the event log records of a peer-trust event (the same for stations and the CSMS).

    Args:
        event: the event.

    Returns:
        ``peer``, ``detail`` (free text: left out of canonical logs), ``severity``, ``refused`` and
        ``security_event`` (the OCPP type, or "").
    """
    return {
        "peer": event.peer,
        "detail": event.detail,
        "severity": event.severity,
        "refused": event.reason is not None,
        "security_event": event.ocpp_security_event or "",
    }


def station_ids(prefix: str, count: int, start: int = 1) -> Sequence[str]:
    """``prefix`` + zero-padded numbers: ``station_ids("ST-", 3) == ["ST-0001", "ST-0002", "ST-0003"]``."""
    width = max(4, len(str(start + count - 1)))
    return [f"{prefix}{i:0{width}d}" for i in range(start, start + count)]


STATION_SLOTS = (
    "_authorize_request",
    "_bad_inputs",
    "_boot_clock",
    "_established",
    "_failure_streak_event",
    "_last_activity",
    "_link_scope",
    "_online",
    "_rebooting",
    "_reported_keys",
    "_reported_status",
    "_session_host",
    "_tls_built",
    "_trigger_heartbeat",
    "_uplink_alarm",
    "_used_candidate",
    "backoff",
    "booted",
    "boots",
    "certs",
    "client_tls",
    "clock",
    "config",
    "connect_failures",
    "connect_window",
    "connector_status",
    "connects_ok",
    "cpu",
    "device_model",
    "done",
    "energy_wh",
    "expiry",
    "firmware",
    "heartbeat_s",
    "heartbeats",
    "logs",
    "messages_sent",
    "network",
    "network_profiles",
    "queue",
    "recorder",
    "rng",
    "security_events_queued",
    "session",
    "sessions_completed",
    "tally",
    "time",
    "tls_info",
    "tls_sessions",
)
"""The attributes of a :class:`~evsim.nodes.station.Station` (its ``__slots__``, kept here for that module's
size): with more than 30 an instance's ``__dict__`` is no longer a shared-key one, ≈1.6 KiB per station
against 0.4 for slots."""
