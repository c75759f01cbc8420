"""What a station's firmware updates (L01, :mod:`evsim.nodes.firmware`) and log uploads (N01,
:mod:`evsim.nodes.logupload`) share: the station's file-transfer settings, the interface they need of the
station, one job at a time with cancellation, and the checks of the numbers and URLs a CSMS sends.

Where a file goes or comes from. The CSMS names a URL (``location``, ``remoteLocation``). When one of the
station's configured :attr:`FileTransferConfig.services` names that server (:func:`evsim.link.transfer.locate`),
the transfer uses that service: its mirrors by priority, each with its own TLS profile, trust store, client
identity, SNI and pins, and failover between them. Otherwise the URL is a service of one endpoint with the
station's defaults (``default_trust``: N01.FR.15 asks a station to trust at least the CSMS's chain for secure
transports). Plain ``http://`` is refused unless ``allow_plain_http`` (L01.FR.08: firmware SHOULD travel
encrypted); user names and passwords in URLs are not supported.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol

import attrs
import trio
from cryptography import x509

from evsim.clock import SimClock
from evsim.errors import ConfigError
from evsim.http import HttpLimits
from evsim.link.service import Endpoint, Service
from evsim.link.transfer import locate
from evsim.net.base import Network
from evsim.recorder import Recorder
from evsim.tls.config import Identity, TlsProfile
from evsim.tls.trust import TrustStore
from evsim.urls import HTTP_SCHEMES, parse_url

__all__ = [
    "MAX_RETRIES",
    "MAX_RETRY_INTERVAL_S",
    "MAX_SCHEDULE_S",
    "FileTransferConfig",
    "JobSlot",
    "LocationRefused",
    "StationHooks",
    "TransferReport",
    "bounded_retries",
    "resolve_location",
    "seconds_until",
]

MAX_RETRIES = 10
"""The most retries a station makes for one request, whatever ``retries`` says."""
MAX_RETRY_INTERVAL_S = 86_400
"""The longest ``retryInterval`` honoured (a day); longer values are refused and replaced by the default."""
MAX_SCHEDULE_S = 366 * 86_400
"""How far ahead a ``retrieveDateTime`` / ``installDateTime`` may be; further is refused."""


@attrs.frozen
class FileTransferConfig:
    """A station's settings for firmware downloads and log uploads.

    Args:
        services: firmware and log services (mirrors by priority, each endpoint with its own TLS settings).
        default_trust: trust for an ``https://`` URL no service names (typically the CSMS root); None: such
            URLs are refused.
        default_profile: TLS profile for such URLs.
        default_identity: client certificate for such URLs (None: none).
        allow_plain_http: accept ``http://`` URLs.
        manufacturer_roots: ``ManufacturerRootCertificate``\\ s that firmware signing certificates must chain to.
        limits: what a file server may send (``max_body_bytes`` bounds a firmware image).
        retries: retries when a request gives none.
        retry_interval_s: seconds between tries when a request gives none.
        install_s: how long installing an image takes (simulated).
        log_bytes: the largest log a station uploads.
        upload_method: ``PUT`` or ``POST`` (N01.FR.18: a log server accepts both).

    Raises:
        ConfigError: a negative or non-finite number, or an unknown upload method.
    """

    services: tuple[Service, ...] = ()
    default_trust: TrustStore | None = None
    default_profile: TlsProfile = attrs.field(factory=TlsProfile)
    default_identity: Identity | None = None
    allow_plain_http: bool = False
    manufacturer_roots: tuple[x509.Certificate, ...] = ()
    limits: HttpLimits = attrs.field(factory=lambda: HttpLimits(max_body_bytes=256 * 1024 * 1024))
    retries: int = 2
    retry_interval_s: float = 60.0
    install_s: float = 30.0
    log_bytes: int = 256 * 1024
    upload_method: Literal["PUT", "POST"] = "PUT"

    def __attrs_post_init__(self) -> None:
        for field in ("retries", "retry_interval_s", "install_s", "log_bytes"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
                raise ConfigError("must be a finite number >= 0", path=f"files.{field}", value=value)
        if self.upload_method not in ("PUT", "POST"):
            raise ConfigError("must be PUT or POST", path="files.upload_method", value=self.upload_method)
        for service in self.services:
            if service.kind != "http":
                raise ConfigError(
                    "a file service needs http(s) endpoints",
                    path=f"files.services.{service.name}",
                    fix='use e.g. url = "https://fw.evsim.test/images"',
                )


NO_FILES = FileTransferConfig()
"""The settings of a station given none (no mirrors, no manufacturer root): one frozen instance for all of
them (two copies per station were ≈1 KiB with their TLS profile and limits)."""


class StationHooks(Protocol):
    """What the firmware and log jobs need of their station (:class:`evsim.nodes.station.Station` fits)."""

    @property
    def name(self) -> str: ...

    network: Network
    recorder: Recorder
    connector_status: str

    @property
    def clock(self) -> SimClock:
        """The station's own clock."""
        ...

    def queue_message(self, action: str, payload: dict[str, Any]) -> None:
        """Queue a CALL with guaranteed delivery (delivered in order once online)."""
        ...

    def queue_security_event(self, event_type: str, tech_info: str = "") -> None:
        """Queue a SecurityEventNotification."""
        ...

    def outbox_size(self) -> int:
        """Messages queued and not yet answered by the CSMS."""
        ...

    def reboot(self) -> None:
        """End the current CSMS connection; the station boots again (reconnect back-off)."""
        ...


class LocationRefused(Exception):
    """A URL the station cannot transfer to or from (answer Rejected)."""


def resolve_location(url: object, config: FileTransferConfig, *, name: str) -> tuple[Service, str]:
    """The service and relative path for a URL from the CSMS (see the module docstring).

    Args:
        url: the URL as received.
        config: the station's settings.
        name: the name of a one-endpoint service made for a URL no service names.

    Raises:
        LocationRefused: not an http(s) URL, credentials in it, ``http://`` not allowed, or ``https://`` to a
            server no service names without a ``default_trust``.
    """
    if not isinstance(url, str):
        raise LocationRefused("the location is not a string")
    try:
        found = locate(url, config.services)
        scheme, host, port, path = parse_url(url, schemes=HTTP_SCHEMES)
    except ConfigError as exc:
        raise LocationRefused(exc.message) from None
    if scheme == "http" and not config.allow_plain_http:
        raise LocationRefused("plain http:// is not allowed for file transfers")
    if found is not None:
        return found
    if scheme == "https" and config.default_trust is None:
        raise LocationRefused(f"no file service for {host} and no default trust store")
    authority = f"[{host}]" if ":" in host else host
    secure = scheme == "https"
    endpoint = Endpoint(
        name,
        f"{scheme}://{authority}:{port}/",
        profile=config.default_profile if secure else TlsProfile(),
        trust=config.default_trust if secure else None,
        identity=config.default_identity if secure else None,
    )
    return Service(name, (endpoint,)), path


def bounded_retries(
    payload: dict[str, Any], config: FileTransferConfig, refused: Callable[[str, object, str], None]
) -> tuple[int, float]:
    """``(retries, retryInterval)`` of a request, each within bounds (an out-of-range value is reported to
    ``refused(field, value, reason)`` and replaced by the station's default)."""
    retries = payload.get("retries", config.retries)
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= MAX_RETRIES:
        refused("retries", retries, f"outside 0..{MAX_RETRIES}")
        retries = min(int(config.retries), MAX_RETRIES)
    interval = payload.get("retryInterval", config.retry_interval_s)
    if (
        isinstance(interval, bool)
        or not isinstance(interval, int | float)
        or not 0 <= interval <= MAX_RETRY_INTERVAL_S
    ):
        refused("retryInterval", interval, f"outside 0..{MAX_RETRY_INTERVAL_S}")
        interval = config.retry_interval_s
    return retries, float(interval)


def seconds_until(value: object, clock: SimClock) -> float | None:
    """Seconds from the simulation's now until an OCPP ``dateTime`` (0 when past); None when unparsable or
    further than :data:`MAX_SCHEDULE_S`."""
    if not isinstance(value, str):
        return None
    try:
        when = _dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.UTC)
    wait = (when - clock.utcnow()).total_seconds()
    if wait > MAX_SCHEDULE_S:
        return None
    return max(0.0, wait)


class TransferReport:
    """How a firmware or log job reports: its status notifications (and the last status queued, which a
    TriggerMessage answers), its refused requests and the request values it refused.

    Args:
        station: the station's hooks.
        action: the CSMS request (``UpdateFirmware``, ``GetLog``), named by ``value_refused`` events.
        notification: the status notification's action (``FirmwareStatusNotification``, ...).
        kind: the events' prefix: ``<kind>_status`` and ``<kind>_refused``.
    """

    def __init__(self, station: StationHooks, *, action: str, notification: str, kind: str) -> None:
        self.station = station
        self.action = action
        self.notification = notification
        self.kind = kind
        self.last_status = "Idle"

    def status(self, status: str, request_id: int, **fields: Any) -> None:
        self.last_status = status
        self.station.queue_message(self.notification, {"status": status, "requestId": request_id})
        self.station.recorder.emit(
            self.station.name, f"{self.kind}_status", status=status, request=request_id, **fields
        )

    def refused(self, request_id: int, reason: str, detail: str) -> None:
        self.station.recorder.emit(
            self.station.name, f"{self.kind}_refused", request=request_id, reason=reason, detail=detail[:300]
        )

    def value_refused(self, field: str, value: object, reason: str) -> None:
        self.station.recorder.emit(
            self.station.name,
            "value_refused",
            action=self.action,
            field=field,
            value=repr(value)[:50],
            reason=reason,
        )


class JobSlot:
    """One job at a time (a firmware update, a log upload): a new one cancels the running one.

    The slot's task exists only while there is work: :meth:`submit` starts it in the nursery given to
    :meth:`attach` (the station's), it runs the jobs handed over one after the other, each in its own cancel
    scope, and ends when none is left. An idle station holds no task here (≈1.5 KiB each with its
    coroutine frames, ``bench/memory.py``).
    """

    __slots__ = ("_next", "_nursery", "_scope", "_worker", "running")

    def __init__(self) -> None:
        self._next: Callable[[], Awaitable[None]] | None = None
        self._nursery: trio.Nursery | None = None
        self._scope: trio.CancelScope | None = None
        self._worker = False  # the slot's task runs (started, not yet ended)
        self.running = False

    def attach(self, nursery: trio.Nursery) -> None:
        """Run the slot's jobs in ``nursery`` from now on (the station's, while it runs)."""
        self._nursery = nursery

    def submit(self, job: Callable[[], Awaitable[None]]) -> bool:
        """Run ``job`` next; True when a running job was cancelled for it.

        Raises:
            RuntimeError: the slot is not attached to a nursery.
        """
        if self._nursery is None:
            raise RuntimeError("JobSlot.submit before attach()")
        cancelled = False
        if self._scope is not None and self.running:
            self._scope.cancel()
            cancelled = True
        self._next = job
        if not self._worker:
            self._worker = True
            self._nursery.start_soon(self._work)
        return cancelled

    async def _work(self) -> None:
        """Run submitted jobs one after the other until none is left."""
        try:
            while self._next is not None:
                job, self._next = self._next, None
                with trio.CancelScope() as scope:
                    self._scope = scope
                    self.running = True
                    try:
                        await job()
                    finally:
                        self.running = False
                        self._scope = None
        finally:
            self._worker = False
