"""A station's network connection profiles and the slot failover walk (sans-IO).

Theory of operation
-------------------
A station holds configuration *slots* (``configurationSlot`` → ``NetworkConnectionProfile``: CSMS URL,
security profile, message timeout, OCPP version/transport/interface, and in 2.1 a per-slot identity and
Basic-auth password), the ``OCPPCommCtrlr`` variables ``NetworkConfigurationPriority`` (which slots, in
which order), ``NetworkProfileConnectionAttempts`` and ``RetryBackOff*`` (protocol-digest §3, §1.7). In the
simulator each slot may also carry its own TLS settings (TLS profile, trust store, client identity, SNI); a
slot without them uses the station's installed TLS configuration. This module does not look inside those
settings: :class:`NetworkSlot` and :class:`NetworkProfiles` are generic in their type (any :class:`SlotTls`,
which only says which URL they are for and whether they secure it), and the link layer fills it in
(:mod:`evsim.link.slots`: an :class:`~evsim.link.service.Endpoint`). So the walk imports no network or TLS
code.

:class:`NetworkProfiles` decides, without I/O, which slot to try next and how long to wait first, exactly like
:class:`~evsim.link.service.EndpointPlanner` does for a fixed :class:`~evsim.link.service.Service`:
``next_attempt(now)`` is a pure query, ``report(slot, ok, reason, now)`` records the outcome and plans the next
attempt, ``connection_lost(now)`` plans the reconnect after an established connection ended. The walk:

* The *order* is NetworkConfigurationPriority minus the slots that would lower the security profile of the
  last successful connection (never downgrade, A05/B09.FR.04; 3→2 only with ``AllowSecurityProfileDowngrade``,
  errata 2025-01; profile 1 never once above 1, B09.FR.31). Skipped slots are counted and listed in
  :attr:`NetworkProfiles.skipped`.
* Upgrade (A05): the CSMS puts a slot with a higher security profile into the priority list (or writes one
  into a listed slot); the station's ``upgrade_check`` refuses it without a valid CSMS root or client
  certificate (A05.FR.02/03). The first successful connection at the higher profile raises the bar and drops
  every slot below it (A05.FR.06, :meth:`NetworkProfiles.take_upgrade`); until then a failing new slot is
  just one entry of the walk, which falls back to the old ones.
* After a reboot the walk starts with the first entry (B10.FR.04). After a reboot or a lost connection each
  entry gets ``NetworkProfileConnectionAttempts`` attempts, then the walk moves to the next entry (B10.FR.03).
  Where the walk after a lost connection starts is the ``fallback`` setting (below).
* Back-off (OCPP-J §5.3, errata 2025-04): retrying the same slot waits the next RetryBackOff value; moving to
  another slot in the middle of the list is immediate (another server); when every entry failed the wait is
  the next back-off value, so waits grow across passes; a success resets the schedule; the reconnect after a
  lost connection waits ``RetryBackOffWaitMinimum + U(0..RetryBackOffRandomRange)``.
* The ``fallback`` setting: what the walk does when every entry failed (B10.FR.09: never stop trying), and,
  consistently, where it starts after a lost connection:

  - ``"restart_list"`` (B10.FR.08): restart with all entries, from the first. A lost connection also starts
    at the first entry, so a station on a secondary slot goes back to the primary as soon as it reconnects
    for any reason and the primary answers (like the ``priority`` policy of
    :class:`~evsim.link.service.EndpointPlanner`).
  - ``"last_working"`` (B10.FR.07): fall back to the slot of the last successful connection. A lost
    connection retries that slot first; when every entry failed the walk goes back to it. From there it goes
    on around the list: B10.FR.07 read literally ("keep reconnecting" to that one slot) would strand a station
    whose last slot is gone for good while another CSMS is up (like the ``sticky`` policy of the planner; the
    failover property test checks liveness under both settings).
* After connecting through a slot other than the one of the previous connection (or after a reboot) the station
  SHALL send BootNotification (B10.FR.10, B01.FR.03): :meth:`NetworkProfiles.must_boot`.
* Changes made by the CSMS (SetNetworkProfile B09, SetVariables on NetworkConfigurationPriority B10.FR.01/02,
  NetworkProfileConnectionAttempts) are validated at once and take effect at the next reconnect (B09 remark
  in 2.1: changes to the active slot take effect at the next reconnect; B10: the new priority is used after
  the reboot / reconnect). RetryBackOff changes apply to the next wait.

With one slot this walk is exactly the station's original reconnect loop (every failure waits the next
back-off value, a lost connection waits the first one), and it draws the same random numbers at the same
moments, so existing runs and golden logs do not change. (That, the runtime-mutable priority, the
downgrade filter and the station-installed TLS of SetNetworkProfile slots are why this walker does not
wrap :class:`~evsim.link.service.EndpointPlanner`, whose ``Service`` is frozen, needs a trust store per ``wss``
endpoint and draws the reconnect jitter at success time; it shares its :class:`~evsim.backoff.Attempt`
record and :class:`~evsim.backoff.BackOffSchedule`.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, Literal, Protocol, TypeAlias, TypeVar

import attrs

from evsim.backoff import Attempt, BackOffSchedule, RetryBackOff
from evsim.errors import ConfigError
from evsim.ocpp.limits import (
    MESSAGE_TIMEOUT,
    NETWORK_CONNECTION_ATTEMPTS,
    RETRY_BACKOFF_RANDOM_RANGE,
    RETRY_BACKOFF_REPEAT_TIMES,
    RETRY_BACKOFF_WAIT_MINIMUM,
    Bound,
    OutOfRange,
)
from evsim.seeded import RandomSource
from evsim.urls import parse_url

__all__ = [
    "DEFAULT_SLOT_NUMBERS",
    "FALLBACKS",
    "FallbackPolicy",
    "NetworkConnectionProfile",
    "NetworkProfiles",
    "NetworkSettings",
    "NetworkSlot",
    "ProfileRejected",
    "ProfileUpgrade",
    "SkippedSlot",
    "SlotTls",
    "UpgradeCheck",
]

FallbackPolicy: TypeAlias = Literal["last_working", "restart_list"]
FALLBACKS: tuple[FallbackPolicy, ...] = ("last_working", "restart_list")
"""B10.FR.07 and B10.FR.08."""

DEFAULT_SLOT_NUMBERS: tuple[int, ...] = (0, 1, 2, 3)
"""The valuesList of NetworkConfigurationPriority: the slots a station offers (B09.FR.06: at least two)."""

_OCPP_VERSIONS = ("OCPP12", "OCPP15", "OCPP16", "OCPP20", "OCPP201", "OCPP21")  # SCH v201 + v21 enums
_INTERFACES = (*(f"{k}{i}" for k in ("Wired", "Wireless") for i in range(4)), "Any")  # SCH v21
_URL_MAX = 2000  # SCH v21 ocppCsmsUrl maxLength (2.0.1: 512)
_IDENTITY_MAX = 48  # SCH v21 NetworkConnectionProfile.identity
_PASSWORD_MAX = 64  # SCH v21 NetworkConnectionProfile.basicAuthPassword


class SlotTls(Protocol):
    """What the walk needs of a slot's own TLS settings (:class:`evsim.link.service.Endpoint` has it)."""

    @property
    def url(self) -> str:
        """The URL the settings are for."""
        ...

    @property
    def secure(self) -> bool:
        """True for a ``wss://`` URL (TLS)."""
        ...


TlsT = TypeVar("TlsT", bound=SlotTls)
"""The type of a slot's own TLS settings."""


class ProfileRejected(ValueError):
    """A network profile or variable value the station refuses.

    Attributes:
        reason_code: the ``statusInfo.reasonCode`` to answer (B09.FR.02/04/05: ``InvalidNetworkConf``,
            ``NoSecurityDowngrade``, ``InvalidConfSlot``).
    """

    def __init__(self, reason_code: str, message: str) -> None:
        super().__init__(message)
        self.reason_code = reason_code


@attrs.frozen
class NetworkConnectionProfile:
    """The OCPP ``NetworkConnectionProfileType`` fields the simulator uses (protocol-digest §3.1).

    Args:
        ocpp_csms_url: ``ws://`` (security profile 1) or ``wss://`` (2, 3) URL without the station identity.
        security_profile: 1, 2 or 3.
        message_timeout: seconds (``messageTimeout``; "use 30 seconds as a starting point", Part 2 §3.2).
        ocpp_version: ``OCPP20`` in 2.0.1 (informative; the subprotocol negotiation decides, 2.1).
        ocpp_transport: ``JSON``.
        ocpp_interface: ``Wired0`` .. ``Wireless3`` or ``Any``.
        identity: 2.1 per-slot Basic-auth user / identity (None: the station id).
        basic_auth_password: 2.1 per-slot Basic-auth password (None: the station's password).

    Raises:
        ProfileRejected: ``InvalidNetworkConf`` for any invalid field (B09.FR.02).
    """

    ocpp_csms_url: str
    security_profile: int
    message_timeout: float = 30.0
    ocpp_version: str = "OCPP20"
    ocpp_transport: str = "JSON"
    ocpp_interface: str = "Wired0"
    identity: str | None = None
    basic_auth_password: str | None = None

    def __attrs_post_init__(self) -> None:
        def bad(message: str) -> ProfileRejected:
            return ProfileRejected("InvalidNetworkConf", message)

        sp = self.security_profile
        if not isinstance(sp, int) or isinstance(sp, bool) or sp not in (1, 2, 3):
            raise bad(f"securityProfile must be 1, 2 or 3, not {sp!r}")
        if not isinstance(self.ocpp_csms_url, str) or len(self.ocpp_csms_url) > _URL_MAX:
            raise bad("ocppCsmsUrl must be a string of at most 2000 characters")
        try:
            scheme, _, _, _ = parse_url(self.ocpp_csms_url)
        except ConfigError as exc:
            raise bad(f"ocppCsmsUrl: {exc.message}") from None
        if (scheme == "wss") != (sp >= 2):
            raise bad(f"security profile {sp} needs a {'wss' if sp >= 2 else 'ws'}:// URL")
        if not isinstance(self.message_timeout, int | float) or self.message_timeout <= 0:
            raise bad("messageTimeout must be > 0")
        if self.ocpp_version not in _OCPP_VERSIONS:
            raise bad(f"unknown ocppVersion {self.ocpp_version!r}")
        if self.ocpp_version in ("OCPP12", "OCPP15", "OCPP16"):
            raise bad(f"{self.ocpp_version} is not an OCPP version this station speaks")
        if self.ocpp_transport != "JSON":
            raise bad("only the JSON transport (OCPP-J) is supported")
        if self.ocpp_interface not in _INTERFACES:
            raise bad(f"unknown ocppInterface {self.ocpp_interface!r}")
        if self.identity is not None and (
            not self.identity or len(self.identity) > _IDENTITY_MAX or ":" in self.identity
        ):
            raise bad("identity must be 1..48 characters without ':'")
        if self.basic_auth_password is not None and not 16 <= len(self.basic_auth_password) <= _PASSWORD_MAX:
            raise bad("basicAuthPassword must be 16..64 characters (A00.FR.205, 2.1)")

    @classmethod
    def from_ocpp(cls, data: Mapping[str, Any]) -> NetworkConnectionProfile:
        """Build from a schema-valid ``connectionData`` object.

        Args:
            data: the ``NetworkConnectionProfileType`` JSON object.

        Returns:
            The profile.

        Raises:
            ProfileRejected: ``InvalidNetworkConf`` (a field the station cannot use, such as a
                ``messageTimeout`` outside :data:`~evsim.ocpp.limits.MESSAGE_TIMEOUT`, or VPN/APN settings,
                which the simulator has no network interface for).
        """
        if "vpn" in data or "apn" in data:
            raise ProfileRejected("InvalidNetworkConf", "VPN and APN settings are not supported")
        try:
            message_timeout = MESSAGE_TIMEOUT.check(data["messageTimeout"])
        except OutOfRange as exc:
            raise ProfileRejected("InvalidNetworkConf", str(exc)) from None
        return cls(
            ocpp_csms_url=data["ocppCsmsUrl"],
            security_profile=data["securityProfile"],
            message_timeout=message_timeout,
            ocpp_version=data.get("ocppVersion", "OCPP20"),
            ocpp_transport=data.get("ocppTransport", "JSON"),
            ocpp_interface=data["ocppInterface"],
            identity=data.get("identity"),
            basic_auth_password=data.get("basicAuthPassword"),
        )

    def to_ocpp(self, *, version: str = "2.0.1") -> dict[str, Any]:
        """The ``NetworkConnectionProfileType`` JSON object (2.1 fields only for ``version="2.1"``)."""
        out: dict[str, Any] = {
            "ocppVersion": self.ocpp_version,
            "ocppTransport": self.ocpp_transport,
            "ocppCsmsUrl": self.ocpp_csms_url,
            "messageTimeout": int(self.message_timeout),
            "securityProfile": self.security_profile,
            "ocppInterface": self.ocpp_interface,
        }
        if version == "2.1":
            if self.identity is not None:
                out["identity"] = self.identity
            if self.basic_auth_password is not None:
                out["basicAuthPassword"] = self.basic_auth_password
        return out


@attrs.frozen
class NetworkSlot(Generic[TlsT]):
    """One configuration slot.

    Args:
        slot: the ``configurationSlot`` number.
        profile: its NetworkConnectionProfile.
        tls: the slot's own TLS settings (profile, trust store, client identity, SNI; in the simulator an
            :class:`~evsim.link.service.Endpoint`) for the profile's URL; None = the station's installed
            TLS configuration (what a SetNetworkProfile slot uses: OCPP sends no TLS material with it).
            Only its TLS fields (``profile``, ``trust``, ``identity``, ``sni``) are used: the order comes from
            NetworkConfigurationPriority and the attempts from NetworkProfileConnectionAttempts, so the
            endpoint's ``priority`` and ``attempts`` are ignored here.

    The profile's ``ocpp_version`` is informative: the station offers its configured subprotocols and the
    WebSocket negotiation decides (as OCPP 2.1 says of this field).

    Raises:
        ConfigError: ``tls`` for another URL, or for a ``ws://`` profile.
    """

    slot: int
    profile: NetworkConnectionProfile
    tls: TlsT | None = None

    def __attrs_post_init__(self) -> None:
        if self.tls is not None and self.tls.url != self.profile.ocpp_csms_url:
            raise ConfigError(
                "the slot's TLS endpoint is for another URL",
                path=f"network_slots[{self.slot}].tls.url",
                value=self.tls.url,
                fix=f"use url = {self.profile.ocpp_csms_url!r}",
            )
        if self.tls is not None and not self.tls.secure:
            raise ConfigError(
                "TLS settings on a ws:// slot",
                path=f"network_slots[{self.slot}].tls",
                fix="remove tls, or use security profile 2/3 with a wss:// URL",
            )

    @property
    def name(self) -> str:
        """``"slot<N>"``, the name in attempts and events."""
        return f"slot{self.slot}"


@attrs.frozen
class NetworkSettings:
    """The station's failover settings.

    Args:
        priority: ``NetworkConfigurationPriority`` (None: the slots in the order given).
        connection_attempts: ``NetworkProfileConnectionAttempts`` (>= 1; libocpp's example default 3).
        backoff: ``RetryBackOff*``.
        fallback: what to do when every entry failed: ``"restart_list"`` (B10.FR.08) or ``"last_working"``
            (B10.FR.07).
        allow_security_downgrade: ``SecurityCtrlr.AllowSecurityProfileDowngrade`` (3→2 only; errata 2025-01).
        slot_numbers: the valuesList of NetworkConfigurationPriority (slots SetNetworkProfile may write).

    Raises:
        ConfigError: ``connection_attempts < 1``, an unknown fallback, or fewer than two slot numbers
            (B09.FR.06).
    """

    priority: tuple[int, ...] | None = None
    connection_attempts: int = 3
    backoff: RetryBackOff = attrs.field(factory=RetryBackOff)
    fallback: FallbackPolicy = "restart_list"
    allow_security_downgrade: bool = False
    slot_numbers: tuple[int, ...] = DEFAULT_SLOT_NUMBERS

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.connection_attempts, int) or self.connection_attempts < 1:
            raise ConfigError(
                "must be an integer >= 1",
                path="network.connection_attempts",
                value=self.connection_attempts,
                fix="NetworkProfileConnectionAttempts: use e.g. 3",
            )
        if self.fallback not in FALLBACKS:
            raise ConfigError(
                "unknown fallback",
                path="network.fallback",
                value=self.fallback,
                fix=f"use one of {', '.join(FALLBACKS)}",
            )
        if len(set(self.slot_numbers)) < 2:
            raise ConfigError(
                "a station offers at least two configuration slots (B09.FR.06)",
                path="network.slot_numbers",
                value=list(self.slot_numbers),
                fix="e.g. (0, 1, 2, 3)",
            )


@attrs.frozen
class ProfileUpgrade:
    """A connection succeeded at a higher security profile than the one before (A05.FR.06).

    Attributes:
        previous: the security profile before.
        current: the profile of the connection that succeeded.
        removed: the slots dropped because their profile is lower than ``current``.
    """

    previous: int
    current: int
    removed: tuple[int, ...]


UpgradeCheck = Callable[[int], None]
"""``check(security_profile)``: raises :class:`ProfileRejected` when the station cannot use that higher profile
yet (A05.FR.02/03: no valid CSMS root, no valid client certificate)."""


@attrs.frozen
class SkippedSlot:
    """A slot left out of the walk, and why (``NoSecurityDowngrade``, ``NoProfile``)."""

    slot: int
    reason: str


def downgrade_allowed(current: int, new: int, *, allow_downgrade: bool) -> bool:
    """Whether a connection with security profile ``new`` is allowed after ``current``.

    Never lower (A05.FR.07, B09.FR.04); 3→2 only with AllowSecurityProfileDowngrade (errata 2025-01);
    1 never once the station is above 1 (B09.FR.31).
    """
    if new >= current:
        return True
    return allow_downgrade and current == 3 and new == 2


class NetworkProfiles(Generic[TlsT]):
    """The slots, the failover walk and the CSMS-side changes of one station (sans-IO).

    Args:
        slots: the configured slots (slot numbers unique).
        settings: priority, attempts, back-off, fallback, downgrade allowance.
        rng: the station's seeded RNG (back-off jitter).
        security_profile: the station's active security profile at boot (None: the first entry's).
        log_size: attempts kept in :attr:`log`.

    Raises:
        ConfigError: no slots, duplicate slot numbers, a priority naming a slot that is not configured or
            listing one twice, or no slot usable at the starting security profile.
    """

    def __init__(
        self,
        slots: Iterable[NetworkSlot[TlsT]],
        settings: NetworkSettings,
        rng: RandomSource,
        *,
        security_profile: int | None = None,
        log_size: int = 200,
    ) -> None:
        self._slots: dict[int, NetworkSlot[TlsT]] = {}
        for s in slots:
            if s.slot in self._slots:
                raise ConfigError("duplicate configuration slot", path="network_slots", value=s.slot)
            self._slots[s.slot] = s
        if not self._slots:
            raise ConfigError("a station needs at least one network slot", path="network_slots", value=[])
        self.settings = settings
        self.slot_numbers = tuple(sorted(set(settings.slot_numbers) | set(self._slots)))
        priority = settings.priority if settings.priority is not None else tuple(self._slots)
        problem = self._priority_problem(priority)
        if problem:
            raise ConfigError(problem, path="network.priority", value=list(priority))
        self.priority = priority
        self.connection_attempts = settings.connection_attempts
        self.backoff = BackOffSchedule(settings.backoff, rng)
        first = self._slots[priority[0]]
        self.security_profile = (
            security_profile if security_profile is not None else first.profile.security_profile
        )
        self._pending_slots: dict[int, NetworkSlot[TlsT]] = {}
        self._pending_priority: tuple[int, ...] | None = None
        self._pending_attempts: int | None = None
        self.active_slot: int | None = None  # slot of the current (or last) established connection
        self.last_good: int | None = None
        self.skipped: tuple[SkippedSlot, ...] = ()
        self.skipped_total = 0
        self.switches = 0
        self._upgrade: ProfileUpgrade | None = None
        self._order: tuple[int, ...] = ()
        self._index = 0
        self._tries = 0
        self._exhausted = 0
        self._ready_at = 0.0
        self._log: list[Attempt] = []  # the last log_size (a station logs few: an empty deque is 624 bytes)
        self._log_size = log_size
        self._replan()
        if not self._order:
            raise ConfigError(
                f"no slot in the priority list is usable at security profile {self.security_profile}",
                path="network.priority",
                value=list(priority),
            )

    # ---------------------------------------------------------------- queries

    @property
    def slots(self) -> Mapping[int, NetworkSlot[TlsT]]:
        """The slots in effect (pending SetNetworkProfile changes not included)."""
        return dict(self._slots)

    @property
    def order(self) -> tuple[int, ...]:
        """The slot numbers the walk visits, in order (priority minus skipped slots)."""
        return self._order

    @property
    def current(self) -> NetworkSlot[TlsT]:
        """The slot the next attempt goes to."""
        return self._slots[self._order[self._index]]

    @property
    def log(self) -> tuple[Attempt, ...]:
        """The most recent attempts, oldest first."""
        return tuple(self._log)

    @property
    def pending(self) -> bool:
        """True while a CSMS change waits for the next reconnect."""
        return (
            bool(self._pending_slots)
            or self._pending_priority is not None
            or self._pending_attempts is not None
        )

    def next_attempt(self, now: float) -> tuple[NetworkSlot[TlsT], float]:
        """The slot to try next and the seconds to wait first (pure query).

        Args:
            now: the current trio time.

        Returns:
            ``(slot, wait_s)``, ``wait_s >= 0`` counted from ``now``.
        """
        return self.current, max(0.0, self._ready_at - now)

    def must_boot(self, slot: NetworkSlot[TlsT]) -> bool:
        """Whether a connection through ``slot`` must start with BootNotification.

        True for the first connection after a reboot (B01.FR.03) and after connecting through another slot
        than the previous connection (B10.FR.10, errata 2025-04).
        """
        return self.active_slot is None or self.active_slot != slot.slot

    # ---------------------------------------------------------------- outcomes

    def report(
        self, slot: NetworkSlot[TlsT], ok: bool, reason: str, now: float, *, detail: str = ""
    ) -> Attempt:
        """Record an attempt through ``slot`` and plan the next one.

        ``ok`` means the station is connected and accepted (BootNotification answered), i.e. the link is
        usable; a failure anywhere before (network, TLS, upgrade, boot) is one failed attempt.

        Args:
            slot: the slot :meth:`next_attempt` returned.
            ok: whether the connection was established.
            reason: the failure category (:func:`evsim.errors.failure_reason`); ignored on success.
            now: trio time of the outcome.
            detail: free text for the log.

        Returns:
            The recorded attempt.

        Raises:
            ValueError: ``slot`` is not the planned one, or a failure without a reason.
        """
        if slot.slot != self.current.slot:
            raise ValueError(f"report() is about {slot.name}, but the planned slot is {self.current.name}")
        if not ok and not reason:
            raise ValueError("a failed attempt needs a reason")
        attempt = Attempt(slot.name, now, ok, "" if ok else reason, detail)
        self._log.append(attempt)
        if len(self._log) > self._log_size:
            del self._log[0]
        if ok:
            if self.active_slot is not None and self.active_slot != slot.slot:
                self.switches += 1
            self.active_slot = self.last_good = slot.slot
            # the walk only offers allowed slots, so this raises the profile or makes an allowed 3→2 downgrade
            previous, self.security_profile = self.security_profile, slot.profile.security_profile
            if self.security_profile > previous:
                self._upgraded(previous)
            self.backoff.reset()
            self._tries = 0
            self._exhausted = 0
            self._ready_at = now
        else:
            self._ready_at = now + self._failed(slot)
        return attempt

    def _upgraded(self, previous: int) -> None:
        """A05.FR.06: after the first connection at a higher profile, drop every slot with a lower one (also
        from the priority list, pending changes included): the station can never go back to them."""
        current = self.security_profile
        removed = sorted(n for n, s in self._slots.items() if s.profile.security_profile < current)
        for n in removed:
            del self._slots[n]
        for n in [n for n, s in self._pending_slots.items() if s.profile.security_profile < current]:
            del self._pending_slots[n]
        self.priority = tuple(n for n in self.priority if n in self._slots)
        if self._pending_priority is not None:
            known = {**self._slots, **self._pending_slots}
            self._pending_priority = tuple(n for n in self._pending_priority if n in known) or None
        self._order = tuple(n for n in self._order if n in self._slots)
        self._index = self._order.index(self.active_slot) if self.active_slot in self._order else 0
        self._upgrade = ProfileUpgrade(previous, current, tuple(removed))

    def take_upgrade(self) -> ProfileUpgrade | None:
        """The upgrade the last successful connection made (once; None if it made none)."""
        upgrade, self._upgrade = self._upgrade, None
        return upgrade

    def _failed(self, slot: NetworkSlot[TlsT]) -> float:
        self._tries += 1
        if self._tries < self.connection_attempts:
            return self.backoff.next_wait()  # retry the same slot after the back-off (B10.FR.03)
        self._tries = 0
        self._exhausted += 1
        n = len(self._order)
        if self.settings.fallback == "restart_list":
            if self._index + 1 < n:
                self._index += 1
                return 0.0  # next entry at once
            self._index = 0  # B10.FR.08: restart the list
            return self.backoff.next_wait()
        # last_working (B10.FR.07): around the list from the last working slot
        self._index = (self._index + 1) % n
        if self._exhausted % n == 0:  # every entry failed: back to the last working slot (or the first)
            if self.last_good in self._order:
                self._index = self._order.index(self.last_good)
            return self.backoff.next_wait()
        return 0.0

    def connection_lost(self, now: float) -> float:
        """An established connection ended: apply pending changes and plan the reconnect.

        Returns:
            The wait before the next attempt: ``RetryBackOffWaitMinimum + U(0..RandomRange)``.
        """
        changed = self._apply_pending()
        if changed or self.settings.fallback == "restart_list":
            self._replan()  # from the first entry (B10.FR.08; a changed configuration always)
        else:
            self._replan(keep=self.active_slot)  # B10.FR.07: the last working slot first
        wait = self.backoff.next_wait()
        self._ready_at = now + wait
        return wait

    def _apply_pending(self) -> bool:
        changed = self.pending
        self._slots.update(self._pending_slots)
        self._pending_slots.clear()
        if self._pending_priority is not None:
            self.priority = self._pending_priority
            self._pending_priority = None
        if self._pending_attempts is not None:
            self.connection_attempts = self._pending_attempts
            self._pending_attempts = None
        return changed

    def _replan(self, *, keep: int | None = None) -> None:
        """Recompute the order; start at ``keep`` if it is in it, else at the first entry."""
        order: list[int] = []
        skipped: list[SkippedSlot] = []
        for n in self.priority:
            slot = self._slots.get(n)
            if slot is None:
                skipped.append(SkippedSlot(n, "NoProfile"))
            elif not downgrade_allowed(
                self.security_profile,
                slot.profile.security_profile,
                allow_downgrade=self.settings.allow_security_downgrade,
            ):
                skipped.append(SkippedSlot(n, "NoSecurityDowngrade"))
            else:
                order.append(n)
        if not order and self.last_good is not None:
            order.append(self.last_good)  # never stop trying (B10.FR.09): the last working slot
        self._order = tuple(order)
        self.skipped = tuple(skipped)
        self.skipped_total += len(skipped)
        self._index = self._order.index(keep) if keep in self._order else 0
        self._tries = 0
        self._exhausted = 0

    # ---------------------------------------------------------------- CSMS changes

    def _priority_problem(
        self, priority: tuple[int, ...], slots: Mapping[int, NetworkSlot[TlsT]] | None = None
    ) -> str:
        known = {**self._slots, **(slots or {})}
        if not priority:
            return "NetworkConfigurationPriority is empty"
        if len(set(priority)) != len(priority):
            return "NetworkConfigurationPriority lists a slot twice"
        missing = [n for n in priority if n not in known]
        if missing:
            return f"slots {missing} have no network profile"
        return ""

    def set_network_profile(
        self, slot: int, profile: NetworkConnectionProfile, *, upgrade_check: UpgradeCheck | None = None
    ) -> None:
        """SetNetworkProfile (B09): validate and store; effective at the next reconnect.

        Args:
            slot: ``configurationSlot``.
            profile: the validated ``connectionData``.
            upgrade_check: called with the profile's security profile when it is higher than the active one
                and the slot is in NetworkConfigurationPriority (so it would be used at the next reconnect:
                an upgrade, A05); it raises to refuse.

        Raises:
            ProfileRejected: ``InvalidConfSlot`` (B09.FR.05), ``NoSecurityDowngrade`` (B09.FR.04/31), or what
                ``upgrade_check`` raised.
        """
        if slot not in self.slot_numbers:
            raise ProfileRejected("InvalidConfSlot", f"slot {slot} is not one of {list(self.slot_numbers)}")
        if not downgrade_allowed(
            self.security_profile,
            profile.security_profile,
            allow_downgrade=self.settings.allow_security_downgrade,
        ):
            raise ProfileRejected(
                "NoSecurityDowngrade",
                f"security profile {profile.security_profile} is lower than the active {self.security_profile}",
            )
        listed = self._pending_priority if self._pending_priority is not None else self.priority
        if upgrade_check is not None and slot in listed and profile.security_profile > self.security_profile:
            upgrade_check(profile.security_profile)
        self._pending_slots[slot] = NetworkSlot(slot, profile)

    def set_priority(self, value: str, *, upgrade_check: UpgradeCheck | None = None) -> None:
        """SetVariables ``OCPPCommCtrlr.NetworkConfigurationPriority`` (B10.FR.01/02); effective at reconnect.

        Args:
            value: a SequenceList such as ``"1,0"``.
            upgrade_check: called with each security profile in the new list that is higher than the active
                one (the A05 upgrade); it raises to refuse, and nothing changes (A05.FR.02/03).

        Raises:
            ProfileRejected: ``InvalidValue`` - not a list of configured slot numbers without repeats; or what
                ``upgrade_check`` raised.
        """
        try:
            priority = tuple(int(x) for x in value.split(","))
        except ValueError:
            raise ProfileRejected("InvalidValue", f"not a list of slot numbers: {value!r}") from None
        problem = self._priority_problem(priority, self._pending_slots)
        if problem:
            raise ProfileRejected("InvalidValue", problem)
        if upgrade_check is not None:
            known = {**self._slots, **self._pending_slots}
            for sp in sorted({known[n].profile.security_profile for n in priority}):
                if sp > self.security_profile:
                    upgrade_check(sp)
        self._pending_priority = priority

    def set_connection_attempts(self, value: str) -> None:
        """SetVariables ``NetworkProfileConnectionAttempts``; effective at the next reconnect.

        Raises:
            ProfileRejected: ``InvalidValue``, ``ValueTooLow``, ``ValueTooHigh``: not an integer in
                :data:`~evsim.ocpp.limits.NETWORK_CONNECTION_ATTEMPTS`.
        """
        self._pending_attempts = _parse(NETWORK_CONNECTION_ATTEMPTS, value)

    def set_backoff(
        self,
        *,
        wait_minimum: str | None = None,
        random_range: str | None = None,
        repeat_times: str | None = None,
    ) -> None:
        """SetVariables ``RetryBackOffWaitMinimum / RandomRange / RepeatTimes``; applies to the next wait.

        Raises:
            ProfileRejected: ``InvalidValue``, ``ValueTooLow``, ``ValueTooHigh``: not an integer in the
                :mod:`evsim.ocpp.limits` range of the variable (a day at most for the two waits, 30
                doublings), so the back-off stays a finite wait.
        """
        old = self.backoff.policy
        self.backoff.policy = RetryBackOff(
            wait_minimum=old.wait_minimum
            if wait_minimum is None
            else _parse(RETRY_BACKOFF_WAIT_MINIMUM, wait_minimum),
            random_range=old.random_range
            if random_range is None
            else _parse(RETRY_BACKOFF_RANDOM_RANGE, random_range),
            repeat_times=old.repeat_times
            if repeat_times is None
            else _parse(RETRY_BACKOFF_REPEAT_TIMES, repeat_times),
        )

    def variables(self) -> dict[str, str]:
        """The ``OCPPCommCtrlr`` variables this core owns, as GetVariables reports them."""
        slot = self._slots.get(self.active_slot) if self.active_slot is not None else None
        policy = self.backoff.policy
        out = {
            "NetworkConfigurationPriority": ",".join(
                str(n)
                for n in (self._pending_priority if self._pending_priority is not None else self.priority)
            ),
            "NetworkProfileConnectionAttempts": str(
                self._pending_attempts if self._pending_attempts is not None else self.connection_attempts
            ),
            "RetryBackOffWaitMinimum": _num(policy.wait_minimum),
            "RetryBackOffRandomRange": _num(policy.random_range),
            "RetryBackOffRepeatTimes": str(policy.repeat_times),
        }
        if slot is not None:
            out["ActiveNetworkProfile"] = str(slot.slot)
            out["MessageTimeout"] = _num(slot.profile.message_timeout)
        return out


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _parse(bound: Bound, value: str) -> int:
    try:
        return bound.parse(value)
    except OutOfRange as exc:
        raise ProfileRejected(exc.reason_code, str(exc)) from None
