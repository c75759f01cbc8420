"""Builds the TransactionEventRequest payloads of one charging session (sans-IO).

Field placement follows OCPP 2.0.1 Part 2 §E.1.5 (protocol-digest §6.4): ``seqNo`` starts at 0 and grows by
one with every TransactionEventRequest of the transaction; ``evse`` goes in the first message; ``idToken``
once when authorized; ``chargingState`` whenever it changes (so always in Started); ``stoppedReason`` in Ended.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import attrs

from evsim.clock import isoformat


def energy_meter_value(ts: dt.datetime, energy_wh: float, power_w: float | None = None) -> dict[str, Any]:
    """One MeterValue with the energy register (and power, when given)."""
    sampled: list[dict[str, Any]] = [
        {
            "value": round(energy_wh, 1),
            "measurand": "Energy.Active.Import.Register",
            "unitOfMeasure": {"unit": "Wh"},
        }
    ]
    if power_w is not None:
        sampled.append(
            {"value": round(power_w, 1), "measurand": "Power.Active.Import", "unitOfMeasure": {"unit": "W"}}
        )
    return {"timestamp": isoformat(ts), "sampledValue": sampled}


@attrs.define
class TransactionRecorder:
    """State of one transaction on a station's EVSE; each method returns the next request payload."""

    transaction_id: str
    evse_id: int = 1
    connector_id: int = 1
    seq_no: int = 0
    charging_state: str | None = None

    def _base(self, event_type: str, ts: dt.datetime, trigger: str) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "eventType": event_type,
            "timestamp": isoformat(ts),
            "triggerReason": trigger,
            "seqNo": self.seq_no,
            "transactionInfo": {"transactionId": self.transaction_id},
        }
        self.seq_no += 1
        return payload

    def _state(self, payload: dict[str, Any], state: str | None) -> None:
        if state is not None and state != self.charging_state:
            payload["transactionInfo"]["chargingState"] = state
            self.charging_state = state

    def started(
        self, ts: dt.datetime, *, trigger: str = "CablePluggedIn", energy_wh: float = 0.0
    ) -> dict[str, Any]:
        payload = self._base("Started", ts, trigger)
        self._state(payload, "EVConnected")
        payload["evse"] = {"id": self.evse_id, "connectorId": self.connector_id}
        payload["meterValue"] = [energy_meter_value(ts, energy_wh)]
        return payload

    def updated(
        self,
        ts: dt.datetime,
        *,
        trigger: str,
        state: str | None = None,
        id_token: str | None = None,
        energy_wh: float | None = None,
        power_w: float | None = None,
    ) -> dict[str, Any]:
        payload = self._base("Updated", ts, trigger)
        self._state(payload, state)
        if id_token is not None:
            payload["idToken"] = {"idToken": id_token, "type": "ISO14443"}
        if energy_wh is not None:
            payload["meterValue"] = [energy_meter_value(ts, energy_wh, power_w)]
        return payload

    def ended(
        self,
        ts: dt.datetime,
        *,
        trigger: str = "EVDeparted",
        stopped_reason: str = "EVDisconnected",
        energy_wh: float | None = None,
    ) -> dict[str, Any]:
        payload = self._base("Ended", ts, trigger)
        self._state(payload, "Idle")
        if stopped_reason != "Local":
            payload["transactionInfo"]["stoppedReason"] = stopped_reason
        if energy_wh is not None:
            payload["meterValue"] = [energy_meter_value(ts, energy_wh)]
        return payload
