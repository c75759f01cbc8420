"""OCA schema validation: every schema compiles, samples pass, every rule maps to its CALLERROR code."""

from __future__ import annotations

import copy
import timeit
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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


# ---- fast path: it may only accept what fastjsonschema accepts ------------------------------------------


def _instance(schema: dict[str, Any], node: Any, *, full: bool) -> Any:
    """A valid instance of ``node``: required properties only, or every property when ``full``."""
    while "$ref" in node:
        node = schema["definitions"][node["$ref"].split("/")[-1]]
    kind = node.get("type")
    if "enum" in node:
        return node["enum"][-1]
    if kind == "object":
        names = list(node.get("properties", {})) if full else node.get("required", [])
        return {n: _instance(schema, node["properties"][n], full=full) for n in names}
    if kind == "array":
        return [_instance(schema, node["items"], full=full) for _ in range(max(1, node.get("minItems", 0)))]
    if kind == "string":
        return NOW if node.get("format") == "date-time" else "x" * min(3, node.get("maxLength", 3))
    if kind == "integer":
        return int(max(0, node.get("minimum", 0)))
    if kind == "number":
        return max(0.5, node.get("minimum", 0.5))
    if kind == "boolean":
        return True
    return {}


_ODD_VALUES: list[Any] = [
    None,
    True,
    0,
    -1,
    5.0,
    1.5,
    float("nan"),
    10**20,
    "",
    "x" * 3000,
    NOW,
    "2024-13-01T00:00:00Z",
    "Accepted",
    [],
    [1],
    {},
    {"x": 1},
    ("a",),
]


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*path, i))
    return out


def _mutate(value: Any, path: tuple[Any, ...], how: int, odd: Any) -> Any:
    value = copy.deepcopy(value)
    if not path:
        return odd
    parent = value
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if how == 0:
        parent[last] = odd
    elif how == 1 and isinstance(parent, dict):
        del parent[last]
    elif how == 2 and isinstance(parent, dict):
        parent["unexpectedField"] = odd
    elif how == 3 and isinstance(parent, list):
        parent.append(odd)
    elif how == 4 and isinstance(parent, list):
        parent.clear()
    return value


def _accepted(registry: SchemaRegistry, action: str, kind: Any, payload: Any) -> bool:
    try:
        registry.validator(action, kind)(payload)
    except Exception:
        return False
    return True


@pytest.mark.parametrize("version", ["2.0.1", "2.1"])
def test_fast_path_covers_the_schemas(version: str) -> None:
    """Every OCA schema but DataTransfer's (``data`` of any type) has a fast path, and it accepts valid payloads."""
    registry = SchemaRegistry.for_version(version)
    without = set()
    checked = 0
    for action, kind in registry.schema_names():
        fast = registry.fast_checker(action, kind)
        if fast is None:
            without.add(action)
            continue
        schema = registry.schema(action, kind)
        for full in (False, True):
            payload = _instance(schema, schema, full=full)
            if _accepted(registry, action, kind, payload):  # the simple generator misses a few constraints
                assert fast(payload), (action, kind, full)
                checked += 1
    assert without == {"DataTransfer"}
    assert checked >= 1.8 * len(registry.schema_names()) - 10
    tx = copy.deepcopy(TX_EVENT)
    assert SchemaRegistry.for_version("2.0.1").fast_checker("TransactionEvent", "request")(tx)  # type: ignore[misc]


@pytest.mark.parametrize("version", ["2.0.1", "2.1"])
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fast_path_accepts_only_what_fastjsonschema_accepts(version: str, data: st.DataObject) -> None:
    """Mutated payloads (wrong types, values, lengths, missing or extra fields): fast accept ⇒ fastjsonschema accepts,
    and validate() gives the same verdict and error as fastjsonschema alone."""
    registry = SchemaRegistry.for_version(version)
    action, kind = data.draw(st.sampled_from(registry.schema_names()))
    schema = registry.schema(action, kind)
    payload = _instance(schema, schema, full=data.draw(st.booleans()))
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_paths(payload)))
        payload = _mutate(
            payload, path, data.draw(st.integers(0, 4)), data.draw(st.sampled_from(_ODD_VALUES))
        )
    fast = registry.fast_checker(action, kind)
    accepted = _accepted(registry, action, kind, payload)
    if fast is not None and fast(payload):
        assert accepted, (action, kind, payload)
    if accepted:
        registry.validate(action, kind, payload)
    else:
        with pytest.raises(SchemaViolation):
            registry.validate(action, kind, payload)


@pytest.mark.parametrize(("action", "kind", "payload", "code", "path"), VIOLATIONS)
def test_checker_is_one_function_with_validates_errors(
    registry: SchemaRegistry, action: str, kind: Any, payload: Any, code: str, path: str
) -> None:
    """checker() (what the RPC core calls) raises what validate() raises, and is cached per pair."""
    check = registry.checker(action, kind)
    assert registry.checker(action, kind) is check
    with pytest.raises(SchemaViolation) as info:
        check(payload)
    assert info.value.error_code == code
    if path:
        assert info.value.path == path


def test_checker_hands_what_the_fast_path_refuses_to_fastjsonschema(registry: SchemaRegistry) -> None:
    """A valid payload outside the fast path's subset (5.0 for an integer) passes the one-function checker."""
    payload = {**TX_EVENT, "seqNo": 5.0}
    assert not registry.fast_checker("TransactionEvent", "request")(payload)  # type: ignore[misc]
    assert registry.checker("TransactionEvent", "request")(payload) is None
    assert registry.checker("Heartbeat", "response")({"currentTime": NOW}) is None
