"""Payload validation against the OCA JSON schemas (sans-IO).

The schemas (JSON Schema draft-06, one file per message) ship inside the installed ``ocpp`` PyPI package
under ``ocpp/v201/schemas`` and ``ocpp/v21/schemas``; we read them from there and never copy them (they are
CC BY-ND 4.0). fastjsonschema enters evsim here and only here: each (action, kind) is compiled to Python
code on first use (a few ms) and cached, after which a BootNotificationRequest validates in ≈1.5 µs against
≈160 µs for ``jsonschema`` (performance.md).

Compilation options: ``use_default=False`` because fastjsonschema would otherwise *write* schema defaults
into the payload being checked. ``format: date-time`` (2.0.1 timestamps) is checked by fastjsonschema's
RFC 3339 regular expression: ``2024-01-01T00:00:00Z``, ``...00.000Z`` and ``...00+02:00`` pass, a missing
offset or a blank instead of ``T`` fails. The OCA keys ``comment`` and ``javaType`` are unknown keywords,
which JSON Schema ignores.

Fast path. fastjsonschema's generated code is general (it builds a JSON path string for every nested
value, a set of keys for every object, and checks enums as chains of comparisons); a TransactionEventRequest
with a meter value took ≈17 µs, and a scale run validates four payloads per round trip. So each schema is
also compiled to a small tree of closures (:func:`_fast_check`) for the subset of draft-06 the OCA schemas
use (``type``, ``properties``, ``required``, ``additionalProperties: false``, ``enum``, ``maxLength``,
``minimum``/``maximum``, ``items``, ``minItems``/``maxItems``, ``format: date-time`` with fastjsonschema's own
regular expression, ``$ref`` to ``#/definitions``). It only ever *accepts*: it is at least as strict as
fastjsonschema (an integer must be an ``int``, an array a ``list``), and whatever it does not accept -
every invalid payload, and the odd valid one such as ``5.0`` for an integer - goes to fastjsonschema, which
decides and reports the error exactly as before. A schema using anything else has no fast path.

A validation failure becomes :class:`evsim.errors.SchemaViolation` whose ``error_code`` is the CALLERROR code
that answers it (OCPP-J 2.0.1 Table 8): wrong JSON type → TypeConstraintViolation; missing field or wrong
number of items → OccurrenceConstraintViolation; a value outside its enum, length, range, pattern or format
→ PropertyConstraintViolation; an unknown field (``additionalProperties: false``) or anything else →
FormatViolation.

Message kinds: a CALL action ``X`` has ``XRequest.json`` and ``XResponse.json``; an OCPP 2.1 SEND action
(``NotifyPeriodicEventStream``) has a single ``X.json``, looked up as kind ``"request"``.
"""

from __future__ import annotations

import importlib.resources
import re
from collections.abc import Callable
from typing import Any, ClassVar, Final, Literal, TypeAlias

import fastjsonschema

from evsim.errors import SchemaViolation
from evsim.ocpp import framing
from evsim.ocpp.versions import check_version

Kind: TypeAlias = Literal["request", "response"]
Validator: TypeAlias = Callable[[Any], Any]

#: Directory of each version's schemas inside the ``ocpp`` package.
_SCHEMA_DIRS: Final = {"2.0.1": "v201", "2.1": "v21"}

#: fastjsonschema ``rule`` → CALLERROR code (OCPP-J 2.0.1 Table 8 definitions). Unlisted rules
#: (``additionalProperties``, ``additionalItems``, ``uniqueItems``, ``anyOf``...) map to FormatViolation.
CODE_OF_RULE: Final[dict[str, str]] = {
    "type": "TypeConstraintViolation",
    "required": "OccurrenceConstraintViolation",
    "minItems": "OccurrenceConstraintViolation",
    "maxItems": "OccurrenceConstraintViolation",
    "minProperties": "OccurrenceConstraintViolation",
    "maxProperties": "OccurrenceConstraintViolation",
    "enum": "PropertyConstraintViolation",
    "const": "PropertyConstraintViolation",
    "maxLength": "PropertyConstraintViolation",
    "minLength": "PropertyConstraintViolation",
    "minimum": "PropertyConstraintViolation",
    "maximum": "PropertyConstraintViolation",
    "exclusiveMinimum": "PropertyConstraintViolation",
    "exclusiveMaximum": "PropertyConstraintViolation",
    "multipleOf": "PropertyConstraintViolation",
    "pattern": "PropertyConstraintViolation",
    "format": "PropertyConstraintViolation",
}


def _violation(message_name: str, exc: fastjsonschema.JsonSchemaValueException) -> SchemaViolation:
    """Translate a fastjsonschema failure into our exception (paths as ``$.a.b[0]``)."""
    name = exc.name if isinstance(exc.name, str) else "data"
    path = "$" + name[4:] if name.startswith("data") else name
    message = str(exc.message)
    if message.startswith("data"):
        message = "$" + message[4:]
    code = CODE_OF_RULE.get(exc.rule or "", "FormatViolation")
    return SchemaViolation(f"{message_name}: {message}", error_code=code, path=path)


#: Keys the fast path ignores: annotations, and ``default`` (compiled with ``use_default=False``).
_ANNOTATIONS: Final = frozenset(
    {"description", "javaType", "comment", "$schema", "$id", "default", "definitions"}
)
_REF_PREFIX: Final = "#/definitions/"
_Check: TypeAlias = Callable[[Any], bool]


class _Unsupported(Exception):
    """The schema uses something the fast path does not model: fastjsonschema alone validates it."""


def _number(value: Any) -> bool:
    return type(value) is int or type(value) is float


def _fast_check(schema: dict[str, Any], date_time: re.Pattern[str] | None) -> _Check | None:
    """Compile ``schema`` to a checker that returns True only for payloads fastjsonschema accepts.

    Returns:
        The checker (False means "ask fastjsonschema", not "invalid"), or None when the schema uses a
        keyword or form outside the modelled subset (see the module docstring).
    """
    definitions = schema.get("definitions", {})
    if type(definitions) is not dict:
        return None
    resolved: dict[str, _Check] = {}
    resolving: set[str] = set()

    def ref(node: dict[str, Any]) -> _Check:
        target = node["$ref"]
        if (
            set(node) - _ANNOTATIONS - {"$ref"}
            or type(target) is not str
            or not target.startswith(_REF_PREFIX)
        ):
            raise _Unsupported
        name = target[len(_REF_PREFIX) :]
        check = resolved.get(name)
        if check is not None:
            return check
        if name in resolving or name not in definitions or "/" in name or "~" in name:
            raise _Unsupported  # recursive, dangling or escaped references
        resolving.add(name)
        check = resolved[name] = build(definitions[name])
        resolving.discard(name)
        return check

    def build(node: Any) -> _Check:
        if type(node) is not dict:
            raise _Unsupported
        if "$ref" in node:
            return ref(node)
        kind = node.get("type")
        keys = set(node) - _ANNOTATIONS
        if kind != "object" and type(node.get("additionalProperties", False)) is bool:
            keys.discard("additionalProperties")  # OCA enums carry it; it only applies to objects
        if kind == "object":
            return build_object(node, keys)
        if kind == "string":
            return build_string(node, keys)
        if kind == "integer" or kind == "number":
            return build_number(node, keys, integer=kind == "integer")
        if kind == "boolean" and keys == {"type"}:
            return lambda value: type(value) is bool
        if kind == "array":
            return build_array(node, keys)
        raise _Unsupported

    def build_object(node: dict[str, Any], keys: set[str]) -> _Check:
        if keys - {"type", "properties", "required", "additionalProperties"}:
            raise _Unsupported
        raw_properties = node.get("properties", {})
        required = node.get("required", [])
        closed = node.get("additionalProperties", True)
        if (
            type(raw_properties) is not dict
            or type(required) is not list
            or not all(type(k) is str for k in required)
            or type(closed) is not bool
        ):
            raise _Unsupported
        properties = {name: build(sub) for name, sub in raw_properties.items()}
        needed = tuple(required)
        closed = not closed

        def check_object(value: Any) -> bool:
            if type(value) is not dict:
                return False
            for name in needed:
                if name not in value:
                    return False
            for name, item in value.items():
                check = properties.get(name)
                if check is None:
                    if closed:
                        return False
                elif not check(item):
                    return False
            return True

        return check_object

    def build_string(node: dict[str, Any], keys: set[str]) -> _Check:
        if keys - {"type", "maxLength", "enum", "format"}:
            raise _Unsupported
        max_length = node.get("maxLength")
        raw_enum = node.get("enum")
        fmt = node.get("format")
        if max_length is not None and type(max_length) is not int:
            raise _Unsupported
        if raw_enum is not None and (type(raw_enum) is not list or not all(type(v) is str for v in raw_enum)):
            raise _Unsupported
        if fmt is not None and (fmt != "date-time" or date_time is None):
            raise _Unsupported
        enum = frozenset(raw_enum) if raw_enum is not None else None
        if enum is not None and max_length is None and fmt is None:
            return lambda value: type(value) is str and value in enum
        if fmt is not None and max_length is None and enum is None:
            assert date_time is not None
            match = date_time.match
            return lambda value: type(value) is str and match(value) is not None
        limit = max_length if max_length is not None else -1
        pattern = date_time if fmt is not None else None

        def check_string(value: Any) -> bool:
            if type(value) is not str:
                return False
            if limit >= 0 and len(value) > limit:
                return False
            if enum is not None and value not in enum:
                return False
            return pattern is None or pattern.match(value) is not None

        return check_string

    def build_number(node: dict[str, Any], keys: set[str], *, integer: bool) -> _Check:
        if keys - {"type", "minimum", "maximum"}:
            raise _Unsupported
        low = node.get("minimum")
        high = node.get("maximum")
        if (low is not None and not _number(low)) or (high is not None and not _number(high)):
            raise _Unsupported
        kinds: tuple[type, ...] = (int,) if integer else (int, float)

        def check_number(value: Any) -> bool:
            if type(value) not in kinds:
                return False
            if low is not None and value < low:
                return False
            return high is None or not value > high

        return check_number

    def build_array(node: dict[str, Any], keys: set[str]) -> _Check:
        # additionalItems only applies to the list form of items, which is unsupported here
        if keys - {"type", "items", "minItems", "maxItems", "additionalItems"} or "items" not in node:
            raise _Unsupported
        item = build(node["items"])
        low = node.get("minItems", 0)
        high = node.get("maxItems")
        if type(low) is not int or (high is not None and type(high) is not int):
            raise _Unsupported

        def check_array(value: Any) -> bool:
            if type(value) is not list:
                return False
            n = len(value)
            if n < low or (high is not None and n > high):
                return False
            for element in value:  # noqa: SIM110 - a plain loop: no generator object per array (hot path)
                if not item(element):
                    return False
            return True

        return check_array

    try:
        return build(schema)
    except _Unsupported:
        return None


def _date_time_pattern(validator: Validator) -> re.Pattern[str] | None:
    """fastjsonschema's own ``date-time`` expression, from the compiled code (None if not found)."""
    patterns = getattr(validator, "__globals__", {}).get("REGEX_PATTERNS", {})
    pattern = patterns.get("date-time_re_pattern") if isinstance(patterns, dict) else None
    return pattern if isinstance(pattern, re.Pattern) else None


class SchemaRegistry:
    """The OCA schemas of one OCPP version, compiled lazily.

    Use :meth:`for_version` (one shared instance per version) rather than the constructor.

    Args:
        version: ``"2.0.1"`` or ``"2.1"``.

    Raises:
        ConfigError: unknown version.
    """

    _instances: ClassVar[dict[str, SchemaRegistry]] = {}

    def __init__(self, version: str) -> None:
        self.version = check_version(version)
        self._dir = importlib.resources.files("ocpp") / _SCHEMA_DIRS[version] / "schemas"
        self._files: dict[Kind, dict[str, str]] = {"request": {}, "response": {}}
        self._call_actions: set[str] = set()
        self._send_actions: set[str] = set()
        for entry in self._dir.iterdir():
            name = entry.name
            if not name.endswith(".json"):
                continue
            stem = name[: -len(".json")]
            if stem.endswith("Request"):
                self._files["request"][stem[: -len("Request")]] = name
            elif stem.endswith("Response"):
                self._files["response"][stem[: -len("Response")]] = name
            else:
                self._files["request"][stem] = name
                self._send_actions.add(stem)
        self._call_actions = {a for a in self._files["request"] if a in self._files["response"]}
        self._validators: dict[Kind, dict[str, Validator]] = {"request": {}, "response": {}}
        self._fast: dict[Kind, dict[str, _Check | None]] = {"request": {}, "response": {}}

    @classmethod
    def for_version(cls, version: str) -> SchemaRegistry:
        """The shared registry of ``version`` (created on first use, then cached).

        Raises:
            ConfigError: unknown version.
        """
        registry = cls._instances.get(version)
        if registry is None:
            registry = cls._instances[version] = cls(version)
        return registry

    def actions(self) -> tuple[str, ...]:
        """Every action with a schema (CALL and SEND actions), sorted."""
        return tuple(sorted(self._call_actions | self._send_actions))

    def knows(self, action: str) -> bool:
        """True if ``action`` is a CALL or SEND action of this version."""
        return action in self._call_actions or action in self._send_actions

    def is_call_action(self, action: str) -> bool:
        """True if ``action`` can be sent as a CALL (it has a request and a response schema)."""
        return action in self._call_actions

    def is_send_action(self, action: str) -> bool:
        """True if ``action`` is an OCPP 2.1 SEND message (one schema, no response)."""
        return action in self._send_actions

    def schema_names(self) -> list[tuple[str, Kind]]:
        """Every (action, kind) that has a schema file, sorted."""
        return sorted((action, kind) for kind, files in self._files.items() for action in files)

    def schema(self, action: str, kind: Kind) -> dict[str, Any]:
        """The raw schema of (action, kind), freshly parsed.

        Raises:
            SchemaViolation: no such schema (``error_code`` NotImplemented).
        """
        file_name = self._files[kind].get(action)
        if file_name is None:
            raise SchemaViolation(f"no {kind} schema for action {action!r}", error_code="NotImplemented")
        schema: dict[str, Any] = framing.loads((self._dir / file_name).read_bytes())
        return schema

    def validator(self, action: str, kind: Kind) -> Validator:
        """The compiled validator of (action, kind): compiled on first use, then cached.

        Raises:
            SchemaViolation: no such schema (``error_code`` NotImplemented).
        """
        validators = self._validators[kind]
        fn = validators.get(action)
        if fn is None:
            schema = self.schema(action, kind)
            fn = fastjsonschema.compile(schema, use_default=False)
            self._fast[kind][action] = _fast_check(schema, _date_time_pattern(fn))
            validators[action] = fn
        return fn

    def fast_checker(self, action: str, kind: Kind) -> Callable[[Any], bool] | None:
        """The fast path of (action, kind) (see the module docstring), or None if the schema has none.

        Raises:
            SchemaViolation: no such schema (``error_code`` NotImplemented).
        """
        self.validator(action, kind)
        return self._fast[kind][action]

    def validate(self, action: str, kind: Kind, payload: Any) -> None:
        """Check a payload against its schema.

        Args:
            action: the action (``"BootNotification"``).
            kind: ``"request"`` (CALL or SEND payload) or ``"response"`` (CALLRESULT payload).
            payload: the decoded JSON payload; never modified.

        Raises:
            SchemaViolation: the payload does not conform; ``error_code`` is the CALLERROR code to answer with
                and ``path`` the JSON path of the offending field. An unknown action or kind raises it with
                ``error_code`` NotImplemented.
        """
        fn = self._validators[kind].get(action)
        if fn is None:
            fn = self.validator(action, kind)
        fast = self._fast[kind][action]
        if fast is not None and fast(payload):
            return  # accepted by the fast path, which only accepts what fastjsonschema accepts
        try:
            fn(payload)
        except fastjsonschema.JsonSchemaValueException as exc:
            raise _violation(self._files[kind][action][: -len(".json")], exc) from None
