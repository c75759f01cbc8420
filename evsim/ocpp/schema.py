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
            fn = validators[action] = fastjsonschema.compile(self.schema(action, kind), use_default=False)
        return fn

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
        try:
            fn(payload)
        except fastjsonschema.JsonSchemaValueException as exc:
            raise _violation(self._files[kind][action][: -len(".json")], exc) from None
