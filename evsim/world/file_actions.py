"""Timeline actions of firmware rollouts and log collection (L01, N01), registered with the others in
:data:`evsim.world.actions.ACTIONS`.

``update_firmware`` sends UpdateFirmware for a ``[firmware.<name>]`` release from a file service to every
station of a CSMS's fleet, a group or one station, spread over ``spread`` seconds; ``get_log`` sends GetLog so
they upload to a file service. Both go through :class:`~evsim.world.files.WorldFiles`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Self

import attrs

from evsim.world.actions import Action, Reader, _spread, action

if TYPE_CHECKING:
    from evsim.world.core import World

__all__ = ["LOG_TYPES", "GetLog", "UpdateFirmware"]

LOG_TYPES = ("DiagnosticsLog", "SecurityLog", "DataCollectorLog")
"""GetLog ``logType`` values (OCPP 2.0.1 LogEnumType; 2.1 adds DataCollectorLog)."""
MAX_RETRY_INTERVAL_S = 86_400
"""The longest ``retry_interval`` a scenario sends (a station refuses longer ones)."""


def _retries(r: Reader) -> tuple[int | None, int | None]:
    retries = r.integer("retries", 0, 0, 10) if r.has("retries") else None
    interval = None
    if r.has("retry_interval"):
        seconds = r.duration("retry_interval", 0.0)
        if seconds != int(seconds) or seconds > MAX_RETRY_INTERVAL_S:
            raise r.error(
                "retry_interval", "whole seconds, at most 1 day", value=seconds, fix='use e.g. "1m"'
            )
        interval = int(seconds)
    return retries, interval


class _FileAction(Action):
    """What both actions record: their parameters, those left to the station (None) left out."""

    def fields(self) -> dict[str, object]:
        return {key: value for key, value in super().fields().items() if value is not None}


@action("update_firmware", "target", "firmware", "service", "spread", "retries", "retry_interval")
@attrs.frozen
class UpdateFirmware(_FileAction):
    """The CSMS holding each station's session sends UpdateFirmware (L01) for a release, to be downloaded from
    a file service (its first mirror's URL; the stations walk the service's mirrors), spread over ``spread``
    seconds. ``version`` is the release's version (read from the scenario, recorded with the event)."""

    target: str
    firmware: str
    version: str
    service: str
    spread: float = 0.0
    retries: int | None = None
    retry_interval: int | None = None

    @classmethod
    def read(cls, r: Reader) -> Self:
        target = r.target(("csms", "group", "station"))
        firmware = r.file_reference("firmware", "firmware")
        retries, interval = _retries(r)
        return cls(
            target=target,
            firmware=firmware,
            version=r.firmware_version(firmware),
            service=r.file_reference("service", "file_service"),
            spread=_spread(r),
            retries=retries,
            retry_interval=interval,
        )

    async def apply(self, world: World) -> None:
        world.update_firmware(
            self.target,
            self.version,
            service=self.service,
            spread=self.spread,
            retries=self.retries,
            retry_interval=self.retry_interval,
        )


@action("get_log", "target", "service", "log_type", "spread", "retries", "retry_interval")
@attrs.frozen
class GetLog(_FileAction):
    """The CSMS holding each station's session sends GetLog (N01): the station uploads its log to the file
    service (``/logs/<station id>`` on its first mirror, failing over to the others), spread over ``spread``
    seconds."""

    target: str
    service: str
    log_type: str = "DiagnosticsLog"
    spread: float = 0.0
    retries: int | None = None
    retry_interval: int | None = None

    @classmethod
    def read(cls, r: Reader) -> Self:
        target = r.target(("csms", "group", "station"))
        retries, interval = _retries(r)
        return cls(
            target=target,
            service=r.file_reference("service", "file_service"),
            log_type=r.choice("log_type", LOG_TYPES, "DiagnosticsLog"),
            spread=_spread(r),
            retries=retries,
            retry_interval=interval,
        )

    async def apply(self, world: World) -> None:
        world.get_log(
            self.target,
            service=self.service,
            spread=self.spread,
            log_type=self.log_type,
            retries=self.retries,
            retry_interval=self.retry_interval,
        )
