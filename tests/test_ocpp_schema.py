"""OCA schema validation: every schema compiles, samples pass, every rule maps to its CALLERROR code."""

from __future__ import annotations

import copy
import timeit
from typing import Any

import pytest

from evsim.errors import ConfigError, SchemaViolation
from evsim.ocpp.schema import CODE_OF_RULE, SchemaRegistry

NOW = "2024-05-01T12:00:00.000Z"
BOOT: dict[str, Any] = {
    "reason": "PowerUp",
    "chargingStation": {"model": "SimCharger", "vendorName": "evsim", "serialNumber": "S-1"},
}
TX_EVENT: dict[str, Any] = {
    "eventType": "Started",
    "timestamp": NOW,
    "triggerReason": "CablePluggedIn",
    "seqNo": 0,
    "transactionInfo": {"transactionId": "tx-1", "chargingState": "EVConnected"},
    "evse": {"id": 1, "connectorId": 1},
    "meterValue": [
        {
            "timestamp": NOW,
            "sampledValue": [
                {"value": 0.0, "measurand": "Energy.Active.Import.Register", "unitOfMeasure": {"unit": "Wh"}}
            ],
        }
    ],
}


@pytest.fixture(params=["2.0.1", "2.1"])
def registry(request: pytest.FixtureRequest) -> SchemaRegistry:
    return SchemaRegistry.for_version(request.param)


def test_for_version_is_cached() -> None:
    assert SchemaRegistry.for_version("2.1") is SchemaRegistry.for_version("2.1")
    assert SchemaRegistry.for_version("2.1") is not SchemaRegistry.for_version("2.0.1")
    with pytest.raises(ConfigError):
        SchemaRegistry.for_version("1.6")


def test_every_schema_compiles(registry: SchemaRegistry) -> None:
    names = registry.schema_names()
    assert len(names) > 120
    for action, kind in names:
        assert callable(registry.validator(action, kind)), (action, kind)


def test_actions(registry: SchemaRegistry) -> None:
    actions = registry.actions()
    assert {"BootNotification", "Heartbeat", "TransactionEvent", "SetNetworkProfile"} <= set(actions)
    assert registry.knows("BootNotification")
    assert registry.is_call_action("Heartbeat")
    assert not registry.knows("BootNotificationRequest")
    assert not registry.knows("Nope")


def test_send_actions_are_21_only() -> None:
    v21 = SchemaRegistry.for_version("2.1")
    v201 = SchemaRegistry.for_version("2.0.1")
    assert v21.is_send_action("NotifyPeriodicEventStream")
    assert not v21.is_call_action("NotifyPeriodicEventStream")
    assert not v201.knows("NotifyPeriodicEventStream")
    v21.validate(
        "NotifyPeriodicEventStream",
        "request",
        {"id": 1, "pending": 0, "basetime": NOW, "data": [{"t": 0, "v": "1"}]},
    )


def test_valid_samples_pass(registry: SchemaRegistry) -> None:
    registry.validate("BootNotification", "request", BOOT)
    registry.validate(
        "BootNotification", "response", {"currentTime": NOW, "interval": 300, "status": "Accepted"}
    )
    registry.validate("Heartbeat", "request", {})
    registry.validate("Heartbeat", "response", {"currentTime": NOW})
    registry.validate("TransactionEvent", "request", TX_EVENT)
    registry.validate("TransactionEvent", "response", {})
    registry.validate("StatusNotification", "response", {"customData": {"vendorId": "x", "extra": [1]}})


def test_validation_does_not_modify_payload(registry: SchemaRegistry) -> None:
    # fastjsonschema would insert schema defaults unless compiled with use_default=False
    payload = copy.deepcopy(TX_EVENT)
    registry.validate("TransactionEvent", "request", payload)
    assert payload == TX_EVENT


@pytest.mark.parametrize(
    "stamp",
    [
        "2024-05-01T12:00:00Z",
        "2024-05-01T12:00:00.123Z",
        "2024-05-01T12:00:00.123456Z",
        "2024-05-01T14:00:00+02:00",
    ],
)
def test_rfc3339_datetimes_pass(registry: SchemaRegistry, stamp: str) -> None:
    registry.validate("Heartbeat", "response", {"currentTime": stamp})


@pytest.mark.parametrize("stamp", ["2024-05-01 12:00:00Z", "2024-05-01T12:00:00", "yesterday", ""])
def test_bad_datetimes_fail_201(stamp: str) -> None:
    # 2.0.1 declares "format": "date-time"; an offset is mandatory in RFC 3339.
    with pytest.raises(SchemaViolation) as info:
        SchemaRegistry.for_version("2.0.1").validate("Heartbeat", "response", {"currentTime": stamp})
    assert info.value.error_code == "PropertyConstraintViolation"
    assert info.value.path == "$.currentTime"


def _boot(**changes: Any) -> dict[str, Any]:
    payload = copy.deepcopy(BOOT)
    payload.update(changes)
    return payload


# (action, kind, payload, expected code, expected path)
VIOLATIONS: list[tuple[str, str, Any, str, str]] = [
    ("BootNotification", "request", _boot(reason=7), "TypeConstraintViolation", "$.reason"),
    ("BootNotification", "request", [], "TypeConstraintViolation", "$"),
    ("BootNotification", "request", {"reason": "PowerUp"}, "OccurrenceConstraintViolation", "$"),
    ("BootNotification", "request", _boot(reason="Bored"), "PropertyConstraintViolation", "$.reason"),
    (
        "BootNotification",
        "request",
        _boot(chargingStation={"model": "m" * 21, "vendorName": "v"}),
        "PropertyConstraintViolation",
        "$.chargingStation.model",
    ),
    ("BootNotification", "request", _boot(extra=1), "FormatViolation", "$"),
    (
        "BootNotification",
        "response",
        {"currentTime": NOW, "interval": 1.5, "status": "Accepted"},
        "TypeConstraintViolation",
        "$.interval",
    ),
    (
        "TransactionEvent",
        "request",
        {**TX_EVENT, "meterValue": []},
        "OccurrenceConstraintViolation",
        "$.meterValue",
    ),
    (
        "TransactionEvent",
        "request",
        {**TX_EVENT, "meterValue": [{"timestamp": NOW, "sampledValue": []}]},
        "OccurrenceConstraintViolation",
        "$.meterValue[0].sampledValue",
    ),
]


@pytest.mark.parametrize(("action", "kind", "payload", "code", "path"), VIOLATIONS)
def test_violation_codes(
    registry: SchemaRegistry, action: str, kind: Any, payload: Any, code: str, path: str
) -> None:
    with pytest.raises(SchemaViolation) as info:
        registry.validate(action, kind, payload)
    assert info.value.error_code == code
    if path:
        assert info.value.path == path
    assert info.value.description


def test_minimum_is_property_21() -> None:
    # 2.0.1 declares no minimum for EVSE ids; 2.1 does.
    with pytest.raises(SchemaViolation) as info:
        SchemaRegistry.for_version("2.1").validate(
            "TransactionEvent", "request", {**TX_EVENT, "evse": {"id": -1}}
        )
    assert (info.value.error_code, info.value.path) == ("PropertyConstraintViolation", "$.evse.id")


def test_rule_table_covers_the_brief() -> None:
    expected = {
        "type": "TypeConstraintViolation",
        "required": "OccurrenceConstraintViolation",
        "minItems": "OccurrenceConstraintViolation",
        "maxItems": "OccurrenceConstraintViolation",
        "minProperties": "OccurrenceConstraintViolation",
        "enum": "PropertyConstraintViolation",
        "maxLength": "PropertyConstraintViolation",
        "minLength": "PropertyConstraintViolation",
        "minimum": "PropertyConstraintViolation",
        "maximum": "PropertyConstraintViolation",
        "pattern": "PropertyConstraintViolation",
        "format": "PropertyConstraintViolation",
        "const": "PropertyConstraintViolation",
        "multipleOf": "PropertyConstraintViolation",
    }
    for rule, code in expected.items():
        assert CODE_OF_RULE[rule] == code
    assert "additionalProperties" not in CODE_OF_RULE  # -> FormatViolation


def test_unknown_action_or_kind_is_not_implemented(registry: SchemaRegistry) -> None:
    with pytest.raises(SchemaViolation) as info:
        registry.validate("Nope", "request", {})
    assert info.value.error_code == "NotImplemented"


def test_maxitems_is_occurrence() -> None:
    # SetVariables.setVariableData has no maxItems in the OCA schemas; GetVariables neither; use a schema
    # that has one: 2.0.1 ChargingProfile.chargingSchedule has maxItems 3 (2.1: 3 as well).
    registry = SchemaRegistry.for_version("2.0.1")
    schedule = {
        "id": 1,
        "chargingRateUnit": "W",
        "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 1.0}],
    }
    profile = {
        "id": 1,
        "stackLevel": 0,
        "chargingProfilePurpose": "TxDefaultProfile",
        "chargingProfileKind": "Absolute",
        "chargingSchedule": [schedule] * 4,
    }
    with pytest.raises(SchemaViolation) as info:
        registry.validate("SetChargingProfile", "request", {"evseId": 0, "chargingProfile": profile})
    assert info.value.error_code == "OccurrenceConstraintViolation"
    assert info.value.path == "$.chargingProfile.chargingSchedule"


def test_validation_is_cheap() -> None:
    registry = SchemaRegistry.for_version("2.0.1")
    registry.validate("BootNotification", "request", BOOT)  # compile once
    n = 2000
    seconds = timeit.timeit(lambda: registry.validate("BootNotification", "request", BOOT), number=n)
    assert seconds / n < 50e-6  # measured ≈2 µs; generous bound for noisy CI machines
