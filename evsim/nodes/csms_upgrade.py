"""A05 from the CSMS side: move a station up to a higher security profile (2 → 3 once it holds a client
certificate), and never let it come back at the lower one.

Theory of operation. :func:`upgrade_security_profile` does what Part 2 A05 describes, through the CSMS's
session with the station: it reads the station's ``NetworkConfigurationPriority`` (GetVariables) to find a
configuration slot not in use, writes the new NetworkConnectionProfile there (SetNetworkProfile), puts that
slot first (SetVariables ``NetworkConfigurationPriority``) and, with ``reset``, sends ``Reset OnIdle`` so the
station reconnects with it (A05.FR.05). The station refuses the change without a valid CSMS root or client
certificate (A05.FR.02/03; :mod:`evsim.nodes.station_model`): the refusal and its reason code are recorded
(``security_upgrade_refused``) and nothing else is sent. Once the station's priority is accepted, its record
notes the profile it was asked to reach (``upgrade_to``); the first Accepted BootNotification on an endpoint
with that profile raises the record's ``security_floor`` (``security_profile_upgraded``), and from then on
every endpoint sharing the record refuses the station at a lower profile (A05.FR.07, :class:`~evsim.nodes.csms.Csms`).
If the new profile does not work the station falls back to its old slots (they are only dropped after the
first successful connection at the higher profile, A05.FR.06), and the floor stays where it was.

What the station answers is checked before it is used: the priority list is read as at most a few slot
numbers, and reason codes are cut to a bounded length before they are recorded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from evsim.nodes.csms import Csms
from evsim.ocpp.netprofile import DEFAULT_SLOT_NUMBERS, NetworkConnectionProfile

__all__ = ["UpgradeOutcome", "upgrade_security_profile"]

_PRIORITY = ("OCPPCommCtrlr", "NetworkConfigurationPriority")
_MAX_SLOTS = 16  # more entries than a station's valuesList could hold: the answer is not used


@attrs.frozen
class UpgradeOutcome:
    """What came of one upgrade.

    Attributes:
        status: ``"Sent"`` (the station accepted the profile and the priority; it reconnects with it) or
            ``"Rejected"`` (the station refused a step, or there was no free slot).
        step: the step that was refused (``GetVariables``, ``SetNetworkProfile``, ``SetVariables``), or "".
        reason: the station's reason code (bounded), or the CSMS's own reason.
        slot: the configuration slot written (-1 if none).
    """

    status: str
    step: str = ""
    reason: str = ""
    slot: int = -1


def _slots_in(value: object) -> tuple[int, ...] | None:
    """The slot numbers of a NetworkConfigurationPriority value, or None when it is not such a list."""
    if not isinstance(value, str) or not value or len(value) > 4 * _MAX_SLOTS:
        return None
    try:
        slots = tuple(int(x) for x in value.split(","))
    except ValueError:
        return None
    return slots if len(slots) <= _MAX_SLOTS and all(0 <= n < 1000 for n in slots) else None


def _reason(result: dict[str, Any], info_key: str) -> str:
    info = result.get(info_key)
    code = info.get("reasonCode") if isinstance(info, dict) else None
    return str(code)[:64] if code else "no reason given"


async def upgrade_security_profile(
    csms: Csms,
    station_id: str,
    profile: NetworkConnectionProfile,
    *,
    slot_numbers: Sequence[int] = DEFAULT_SLOT_NUMBERS,
    reset: bool = True,
) -> UpgradeOutcome:
    """Move ``station_id`` to ``profile`` (see the module docstring).

    Args:
        csms: the CSMS holding the station's session.
        station_id: the station.
        profile: the new NetworkConnectionProfile (its ``security_profile`` is the one to reach).
        slot_numbers: the slots the station offers (the valuesList of its NetworkConfigurationPriority).
        reset: send Reset OnIdle once the station accepted, so it reconnects now.

    Returns:
        The outcome; every refusal is also recorded as one ``security_upgrade_refused`` event.

    Raises:
        KeyError, CallErrorReceived, CallTimeout, TransportError: as :meth:`Csms.call`.
    """
    name = csms.config.name

    def refused(step: str, reason: str, slot: int = -1) -> UpgradeOutcome:
        csms.recorder.emit(
            name,
            "security_upgrade_refused",
            station=station_id,
            step=step,
            reason=reason,
            security_profile=profile.security_profile,
        )
        return UpgradeOutcome("Rejected", step, reason, slot)

    got = await csms.call(
        station_id,
        "GetVariables",
        {"getVariableData": [{"component": {"name": _PRIORITY[0]}, "variable": {"name": _PRIORITY[1]}}]},
    )
    results = got.get("getVariableResult") or [{}]
    in_use = _slots_in(results[0].get("attributeValue"))
    if in_use is None:
        return refused("GetVariables", "no readable NetworkConfigurationPriority")
    free = [n for n in slot_numbers if n not in in_use]
    if not free:
        return refused("GetVariables", "no free configuration slot")
    slot = free[0]
    answer = await csms.set_network_profile(station_id, slot, profile.to_ocpp())
    if answer.get("status") != "Accepted":
        return refused("SetNetworkProfile", _reason(answer, "statusInfo"), slot)
    priority = ",".join(str(n) for n in (slot, *in_use))
    result = (await csms.set_variables(station_id, {_PRIORITY: priority}))[0]
    if result.get("attributeStatus") != "Accepted":
        return refused("SetVariables", _reason(result, "attributeStatusInfo"), slot)
    record = csms.stations.get(station_id)
    if record is not None:
        record.upgrade_to = max(record.upgrade_to, profile.security_profile)
    csms.recorder.emit(
        name,
        "security_upgrade_sent",
        station=station_id,
        slot=slot,
        security_profile=profile.security_profile,
    )
    if reset:
        await csms.call(station_id, "Reset", {"type": "OnIdle"})
    return UpgradeOutcome("Sent", slot=slot)
