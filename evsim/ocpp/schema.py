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
also compiled to one flat Python function (:func:`_fast_check`: nested objects, arrays and ``$ref`` inlined, so
a payload costs one call; a TransactionEventRequest with two sampled values ≈6 µs against ≈13 µs for a tree of
closures, one call per value, on the session-7 machine) for the subset of draft-06 the OCA schemas
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

    The checker is one generated Python function per schema (:class:`_CheckWriter`): every nested object,
    array and ``$ref`` is inlined, so a payload costs one call instead of one per value.

    Returns:
        The checker (False means "ask fastjsonschema", not "invalid"), or None when the schema uses a
        keyword or form outside the modelled subset (see the module docstring).
    """
    return _write_check(schema, date_time, None)


def _fast_validator(
    schema: dict[str, Any], date_time: re.Pattern[str] | None, slow: Callable[[Any], None]
) -> Callable[[Any], None] | None:
    """:func:`_fast_check` as a whole validator: the generated function returns ``slow(payload)`` (the full
    validation, which raises) wherever the checker would return False, and None where it would return True,
    so a payload the fast path accepts costs one call. None when the schema has no fast path."""
    return _write_check(schema, date_time, slow)


def _write_check(
    schema: dict[str, Any], date_time: re.Pattern[str] | None, slow: Callable[[Any], None] | None
) -> Callable[[Any], Any] | None:
    definitions = schema.get("definitions", {})
    if type(definitions) is not dict:
        return None
    writer = _CheckWriter(definitions, date_time, slow)
    try:
        writer.node(schema, "v", 1)
        return writer.compile()
    except (_Unsupported, RecursionError, SyntaxError, MemoryError):
        return None


class _CheckWriter:
    """Writes the source of one schema's fast checker: statements that ``return False`` (with ``slow``:
    ``return slow(v)``) on anything the modelled subset does not accept, one variable per nesting level (``v``,
    ``v1``, ...), constants (enum and key sets, the date-time matcher, ``slow``) in the function's globals."""

    def __init__(
        self,
        definitions: dict[str, Any],
        date_time: re.Pattern[str] | None,
        slow: Callable[[Any], None] | None = None,
    ) -> None:
        self._definitions = definitions
        self._date_time = date_time
        self._lines: list[str] = []
        self._names: dict[str, Any] = {}
        self._resolving: list[str] = []
        self._vars = 0
        self._slow = slow
        self._no = "return False" if slow is None else f"return {self._const(slow)}(v)"

    def compile(self) -> Callable[[Any], Any]:
        done = "return True" if self._slow is None else "return None"
        source = "def check(v):\n" + "\n".join(self._lines) + f"\n    {done}\n"
        namespace: dict[str, Any] = dict(self._names)
        # the source holds only our statements; schema strings enter as repr() literals, the rest as constants
        exec(compile(source, "<evsim.ocpp.schema fast check>", "exec"), namespace)
        check: Callable[[Any], Any] = namespace["check"]
        return check

    def _put(self, depth: int, line: str) -> None:
        self._lines.append("    " * depth + line)

    def _const(self, value: Any) -> str:
        name = f"C{len(self._names)}"
        self._names[name] = value
        return name

    def _var(self) -> str:
        self._vars += 1
        return f"v{self._vars}"

    def node(self, node: Any, var: str, depth: int) -> None:
        """Statements that return False unless the value in ``var`` passes ``node``."""
        if type(node) is not dict:
            raise _Unsupported
        if "$ref" in node:
            self.ref(node, var, depth)
            return
        kind = node.get("type")
        keys = set(node) - _ANNOTATIONS
        if kind != "object" and type(node.get("additionalProperties", False)) is bool:
            keys.discard("additionalProperties")  # OCA enums carry it; it only applies to objects
        if kind == "object":
            self.object(node, keys, var, depth)
        elif kind == "string":
            self.string(node, keys, var, depth)
        elif kind == "integer" or kind == "number":
            self.number(node, keys, var, depth, integer=kind == "integer")
        elif kind == "boolean" and keys == {"type"}:
            self._put(depth, f"if type({var}) is not bool: {self._no}")
        elif kind == "array":
            self.array(node, keys, var, depth)
        else:
            raise _Unsupported

    def ref(self, node: dict[str, Any], var: str, depth: int) -> None:
        target = node["$ref"]
        if (
            set(node) - _ANNOTATIONS - {"$ref"}
            or type(target) is not str
            or not target.startswith(_REF_PREFIX)
        ):
            raise _Unsupported
        name = target[len(_REF_PREFIX) :]
        if name in self._resolving or name not in self._definitions or "/" in name or "~" in name:
            raise _Unsupported  # recursive, dangling or escaped references
        self._resolving.append(name)
        self.node(self._definitions[name], var, depth)
        self._resolving.pop()

    def object(self, node: dict[str, Any], keys: set[str], var: str, depth: int) -> None:
        if keys - {"type", "properties", "required", "additionalProperties"}:
            raise _Unsupported
        properties = node.get("properties", {})
        required = node.get("required", [])
        open_ = node.get("additionalProperties", True)
        if (
            type(properties) is not dict
            or type(required) is not list
            or not all(type(k) is str for k in required)
            or type(open_) is not bool
        ):
            raise _Unsupported
        self._put(depth, f"if type({var}) is not dict: {self._no}")
        for name in required:
            self._put(depth, f"if {name!r} not in {var}: {self._no}")
        if not open_:
            known = self._const(frozenset(properties))
            if set(required) <= set(properties):  # only the required keys: all known (no view built)
                self._put(
                    depth, f"if len({var}) > {len(required)} and not {var}.keys() <= {known}: {self._no}"
                )
            else:
                self._put(depth, f"if not {var}.keys() <= {known}: {self._no}")
        needed = set(required)
        for name, sub in properties.items():
            item = self._var()
            if name in needed:
                self._put(depth, f"{item} = {var}[{name!r}]")
                self.node(sub, item, depth)
            else:
                self._put(depth, f"if {name!r} in {var}:")
                self._put(depth + 1, f"{item} = {var}[{name!r}]")
                self.node(sub, item, depth + 1)

    def string(self, node: dict[str, Any], keys: set[str], var: str, depth: int) -> None:
        if keys - {"type", "maxLength", "enum", "format"}:
            raise _Unsupported
        max_length = node.get("maxLength")
        enum = node.get("enum")
        fmt = node.get("format")
        if max_length is not None and type(max_length) is not int:
            raise _Unsupported
        if enum is not None and (type(enum) is not list or not all(type(v) is str for v in enum)):
            raise _Unsupported
        if fmt is not None and (fmt != "date-time" or self._date_time is None):
            raise _Unsupported
        self._put(depth, f"if type({var}) is not str: {self._no}")
        if max_length is not None:
            self._put(depth, f"if len({var}) > {max_length}: {self._no}")
        if enum is not None:
            self._put(depth, f"if {var} not in {self._const(frozenset(enum))}: {self._no}")
        if fmt is not None:
            assert self._date_time is not None
            self._put(depth, f"if {self._const(self._date_time.match)}({var}) is None: {self._no}")

    def number(self, node: dict[str, Any], keys: set[str], var: str, depth: int, *, integer: bool) -> None:
        if keys - {"type", "minimum", "maximum"}:
            raise _Unsupported
        low = node.get("minimum")
        high = node.get("maximum")
        if (low is not None and not _number(low)) or (high is not None and not _number(high)):
            raise _Unsupported
        if integer:
            self._put(depth, f"if type({var}) is not int: {self._no}")
        else:
            self._put(depth, f"if type({var}) is not int and type({var}) is not float: {self._no}")
        if low is not None:
            self._put(depth, f"if {var} < {self._const(low)}: {self._no}")
        if high is not None:
            self._put(depth, f"if {var} > {self._const(high)}: {self._no}")

    def array(self, node: dict[str, Any], keys: set[str], var: str, depth: int) -> None:
        # additionalItems only applies to the list form of items, which is unsupported here
        if keys - {"type", "items", "minItems", "maxItems", "additionalItems"} or "items" not in node:
            raise _Unsupported
        low = node.get("minItems", 0)
        high = node.get("maxItems")
        if type(low) is not int or (high is not None and type(high) is not int):
            raise _Unsupported
        self._put(depth, f"if type({var}) is not list: {self._no}")
        if low:
            self._put(depth, f"if len({var}) < {low}: {self._no}")
        if high is not None:
            self._put(depth, f"if len({var}) > {high}: {self._no}")
        item = self._var()
        self._put(depth, f"for {item} in {var}:")
        self.node(node["items"], item, depth + 1)


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
        #: the CALL actions (the RPC core checks membership here once per CALL, without a method call)
        self.call_actions: frozenset[str] = frozenset(self._call_actions)
        self._validators: dict[Kind, dict[str, Validator]] = {"request": {}, "response": {}}
        self._fast: dict[Kind, dict[str, _Check | None]] = {"request": {}, "response": {}}
        #: action -> its whole validator (:meth:`checker`), filled on first use: the RPC core looks its
        #: validators up here, so a payload the fast path accepts costs one call
        self.request_checks: dict[str, Callable[[Any], None]] = {}
        self.response_checks: dict[str, Callable[[Any], None]] = {}

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

    def checker(self, action: str, kind: Kind) -> Callable[[Any], None]:
        """The validator of (action, kind) as one function: :meth:`validate` for that pair (cached in
        :attr:`request_checks` / :attr:`response_checks`).

        Raises:
            SchemaViolation: no such schema (``error_code`` NotImplemented).
        """
        checks = self.request_checks if kind == "request" else self.response_checks
        fn = checks.get(action)
        if fn is None:
            full = self.validator(action, kind)
            name = self._files[kind][action][: -len(".json")]

            def slow(payload: Any) -> None:
                try:
                    full(payload)
                except fastjsonschema.JsonSchemaValueException as exc:
                    raise _violation(name, exc) from None

            fast = None
            if self._fast[kind][action] is not None:
                fast = _fast_validator(self.schema(action, kind), _date_time_pattern(full), slow)
            fn = checks[action] = fast or slow
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
        checks = self.request_checks if kind == "request" else self.response_checks
        fn = checks.get(action)
        if fn is None:
            if kind not in self._files:
                raise SchemaViolation(f"no {kind} schema for action {action!r}", error_code="NotImplemented")
            fn = self.checker(action, kind)
        # the fast path only accepts what fastjsonschema accepts, and hands everything else to it
        fn(payload)
