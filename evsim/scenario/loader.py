"""Load and validate scenario files (TOML, parsed with the stdlib ``tomllib``).

Theory of operation. Loading happens in three passes, and the first error stops it:

1. **Syntax**: ``tomllib`` parses the text; its error becomes a :class:`~evsim.errors.ConfigError` with the
   line and column it reports.
2. **Fields**: each table is read through a :class:`_Table` (the one table reader,
   :class:`evsim.toml_table.Table`, with errors located in the file), which refuses unknown keys first (with
   a did-you-mean), then reads each known key with a typed getter that checks the TOML type, the range or
   the allowed values, and converts units (:mod:`evsim.scenario.units`).
   Sections are read in dependency order (simulation, pki, tls, csms, stations, links, timeline), so every
   reference to a root, profile, trust store, CSMS, group or node is checked against names already read.
3. **Whole-scenario checks**: node names that clash, station ids produced twice, two CSMS on one address,
   events after the end of the run.

Every error names the file, the line where the offending key or table is defined (found by
:mod:`evsim.scenario.locate`), the field path, the bad value and a fix. The loader only raises
``ConfigError``: getters never index or convert without checking first, and :func:`loads_scenario` turns
anything unexpected into a ``ConfigError`` that says it is an evsim bug, so a caller (``evsim validate``,
``evsim run``) has exactly one exception to handle.
"""

from __future__ import annotations

import datetime
import ipaddress
import math
import os
import re
import string
import tomllib
import typing
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Final, TypeVar

import attrs

from evsim.backoff import RetryBackOff
from evsim.errors import ConfigError
from evsim.frozenmap import FrozenMap
from evsim.ocpp.versions import OCPP_VERSIONS
from evsim.scenario.locate import LineIndex, index_lines
from evsim.scenario.model import (
    DEFAULT_START,
    BehindControllerKind,
    CertificateSpec,
    ChangeSpec,
    ClockKind,
    ControllerSpec,
    CsmsSpec,
    EndpointKind,
    EndpointSpec,
    FailoverKind,
    FallbackKind,
    HostnameCheck,
    KeyType,
    LinkSpec,
    NetworkKind,
    PinSetSpec,
    PinSpec,
    PkiSpec,
    ResetSpec,
    RootSpec,
    Scenario,
    SigningSpec,
    SimulationSpec,
    StallSpec,
    StationCertificatesSpec,
    StationGroupSpec,
    TimelineEvent,
    TlsProfileSpec,
    TrustSpec,
    UpstreamLossKind,
    WildcardPolicy,
    default_of,
)
from evsim.scenario.units import (
    format_duration,
    parse_bandwidth,
    parse_duration,
    parse_utc_timestamp,
)
from evsim.tls import change as change_layer
from evsim.tls import config as tls_config
from evsim.tls import pins as pins_layer
from evsim.tls import revocation as tls_revocation
from evsim.tls.config import MAX_FRAGMENT, MIN_FRAGMENT, TlsProfile
from evsim.tls.peer import PeerPolicy
from evsim.tls.suites import DEFAULT_TLS12_SUITES, DEFAULT_TLS13_SUITES
from evsim.toml_table import FieldPath, Table, choices_fix, format_path, shown, type_name
from evsim.world.actions import ACTIONS as ACTION_CLASSES
from evsim.world.actions import LINK_POLICY_KEYS, LinkKnobs
from evsim.world.specs import layer_change_policy, layer_pin_set, placeholder_spki
from evsim.ws.paths import IDENTITY_RULE, valid_identity

T = TypeVar("T")
S = TypeVar("S", bound=str)

# ---------------------------------------------------------------- vocabulary

TOP_KEYS: Final = ("simulation", "pki", "tls", "csms", "controllers", "stations", "links", "timeline")
SIMULATION_KEYS: Final = (
    "name",
    "description",
    "outcome",
    "seed",
    "duration",
    "clock",
    "network",
    "start",
    "stop_when_done",
)
PKI_KEYS: Final = ("key_type", "validity", "organization", "roots", "expiry_warning")
ROOT_KEYS: Final = ("key_type",)
TLS_KEYS: Final = ("profiles", "trust", "pins", "change")
PROFILE_KEYS: Final = (
    "versions",
    "cipher_suites",
    "handshake_timeout",
    "max_send_fragment",
    # engine knobs (scenario-tls; TlsProfile.from_toml checks them)
    "suite_preference",
    "groups",
    "signature_algorithms",
    "alpn",
    "alpn_require",
    "session",
    "record",
    "keylog",
    "enforce",
)
TRUST_KEYS: Final = ("roots", "hostname", "wildcards", "mode", "time_check", "revocation", "max_depth")
CSMS_KEYS: Final = (
    "host",
    "port",
    "security_profile",
    "insecure_allow_plain_ws",
    "ocpp_versions",
    "heartbeat_interval",
    "tls_profile",
    "certificate",
    "password",
    "accept_unknown_stations",
    "ocsp_stapling",
    "pins",
    "change",
    "secondary_of",
    "behind_controller",
    "trusted_controllers",
    "signing",
    "client_trust",
)
SIGNING_KEYS: Final = ("max_concurrent", "max_queued", "validity")
STATION_CERTIFICATE_KEYS: Final = (
    "key_type",
    "key_size",
    "renewal_threshold",
    "sign_wait_minimum",
    "sign_repeat_times",
    "renewed_attempts",
)
CERTIFICATE_KEYS: Final = ("root", "validity", "not_before", "key_type")
STATION_KEYS: Final = (
    "count",
    "id_pattern",
    "csms",
    "security_profile",
    "ocpp_versions",
    "tls_profile",
    "trust",
    "password",
    "sessions",
    "sessions_per_day",
    "session_duration",
    "session_start",
    "meter_interval",
    "charge_power",
    "heartbeat_fallback",
    "retry_backoff",
    "queue_max",
    "pins",
    "change",
    "endpoints",
    "network_attempts",
    "fallback",
    "certificates",
)
CONTROLLER_KEYS: Final = (
    "host",
    "port",
    "security_profile",
    "insecure_allow_plain_ws",
    "tls_profile",
    "trust",
    "certificate",
    "upstream",
    "upstream_security_profile",
    "failover",
    "on_upstream_loss",
    "upstream_connect_attempts",
    "retry_backoff",
    "behind_controller",
    "trusted_controllers",
    "client_trust",
)
ENDPOINT_KEYS: Final = ("csms", "controller", "priority", "trust", "tls_profile", "pins")
FALLBACK_KINDS: Final[tuple[FallbackKind, ...]] = ("restart_list", "last_working")
FAILOVER_KINDS: Final[tuple[FailoverKind, ...]] = ("priority", "round_robin", "sticky")
UPSTREAM_LOSS_KINDS: Final[tuple[UpstreamLossKind, ...]] = ("close_station", "keep_station")
BEHIND_CONTROLLER_KINDS: Final[tuple[BehindControllerKind, ...]] = (
    "require_station_cert",
    "trust_controller",
)
MAX_STATION_ENDPOINTS: Final = 4
"""A station has the configuration slots 0..3 (``DEFAULT_SLOT_NUMBERS``; B09.FR.06 asks for at least two)."""
MAX_NETWORK_ATTEMPTS: Final = 100
BACKOFF_KEYS: Final = ("wait_minimum", "random_range", "repeat_times")
LINK_KEYS: Final = ("between", *LINK_POLICY_KEYS)
STALL_KEYS: Final = ("every", "for")
RESET_KEYS: Final = ("every",)

ACTIONS: Final[Mapping[str, tuple[str, ...]]] = {name: cls.keys for name, cls in ACTION_CLASSES.items()}
"""Timeline actions and the parameters each takes (besides ``at`` and ``action``)."""

CLOCKS: Final[tuple[ClockKind, ...]] = ("virtual", "real")
NETWORKS: Final[tuple[NetworkKind, ...]] = ("memory", "tcp")
KEY_TYPES: Final[tuple[KeyType, ...]] = ("ec", "rsa")
HOSTNAME_CHECKS: Final[tuple[HostnameCheck, ...]] = ("cn", "san", "san+cn", "off")
WILDCARD_POLICIES: Final[tuple[WildcardPolicy, ...]] = ("deny", "allow")
SCENARIO_TLS_VERSIONS: Final = tls_config.OCPP_TLS_VERSIONS
"""Versions a profile may enable: OCPP 2.0.1 A00.FR.313 allows TLS 1.2 and above only."""
SECURITY_PROFILES: Final = (1, 2, 3)

MAX_STATIONS_PER_GROUP: Final = 100_000
MAX_NAME_LENGTH: Final = 48
MAX_IDENTITY_LENGTH: Final = 48
"""OCPP-J 2.0.1 §3.1.1: the station identity is an identifierString of at most 48 characters."""
PASSWORD_LENGTH: Final = (16, 64)
"""OCPP 2.0.1 A00.FR.205 (errata 2025-01) and 2.1: ``BasicAuthPassword`` is 16..64 characters (40 in 2.0.1
Ed.2; the errata raise the limit to the variable's maxLimit, 40..64)."""
MAX_COMMON_NAME: Final = 64
"""RFC 5280 ub-common-name: the CSMS host name becomes its certificate's CN."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_IDENTITY_RULE = "station id {sid!r} is not an OCPP identity (" + IDENTITY_RULE + ", OCPP-J §3.1.1)"
_PATTERN_FIX = 'use a pattern like "ST-{n:04d}" (one field, n, with an optional integer format)'
_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_SYNTAX_POSITION = re.compile(
    r"^(?P<msg>.*?) \(at (?:line (?P<line>\d+), column (?P<col>\d+)|end of document)\)$", re.S
)

# tomllib message prefix -> how to fix it
_SYNTAX_FIXES: Final = (
    ("Invalid value", 'quote strings ("30s"), write booleans as true / false, tables as [name]'),
    ("Expected '=' after a key", "write key = value, one per line"),
    ("Invalid statement", "each line is a [table] header, a key = value pair, or a # comment"),
    ("Cannot overwrite a value", "define each key once"),
    ("Cannot declare", "define each table once (a [[table]] array adds an entry each time)"),
    ("Unclosed array", "close the array with ]"),
    ("Unclosed inline table", "close the inline table with }, all on one line"),
    ("Unterminated string", "close the string with its quote (\" or ')"),
    ("Illegal character", "remove the control character or escape it inside a string"),
    (
        "Expected newline or end of document",
        'quote text values ("1h", "main") and put each key = value on its own line',
    ),
)


# ---------------------------------------------------------------- public API


def load_scenario(path: str | os.PathLike[str]) -> Scenario:
    """Read, parse and validate a scenario file.

    Args:
        path: the TOML file.

    Returns:
        The validated :class:`~evsim.scenario.model.Scenario`, with ``source`` set to ``str(path)``.

    Raises:
        ConfigError: the file cannot be read, is not UTF-8, is not TOML, or is not a valid scenario; the
            error names the file, the line, the field path, the bad value and a fix.
    """
    source = str(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            "scenario file not found", file=source, fix="check the path; shipped scenarios are in scenarios/"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the scenario file: {exc.strerror or exc}", file=source) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            "the file is not UTF-8 text",
            file=source,
            line=data.count(b"\n", 0, exc.start) + 1,
            fix="save the scenario as UTF-8 (TOML files are UTF-8)",
        ) from None
    return loads_scenario(text, source=source)


def loads_scenario(text: str, *, source: str = "<string>") -> Scenario:
    """Parse and validate scenario text.

    Args:
        text: a TOML document.
        source: what errors name as the file (a path, or a label such as ``"<string>"``); its stem is the
            default scenario name.

    Returns:
        The validated :class:`~evsim.scenario.model.Scenario`.

    Raises:
        ConfigError: the only exception: TOML syntax errors carry the line tomllib reports; field errors
            carry the line where the key or table is defined.
    """
    if not isinstance(text, str):
        raise ConfigError(
            "scenario text must be a str",
            value=type(text).__name__,
            file=source,
            fix="decode the file as UTF-8 first, or use load_scenario(path)",
        )
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _syntax_error(str(exc), text, source) from exc
    except RecursionError as exc:
        raise ConfigError(
            "the TOML document is nested too deeply",
            file=source,
            fix="scenario files need only a few levels of tables and arrays",
        ) from exc
    except Exception as exc:  # tomllib documents only TOMLDecodeError; anything else is still a bad file
        raise ConfigError(f"the TOML parser failed: {exc}", file=source, fix="check the TOML syntax") from exc
    return _build(doc, _Context(text, source))


def loads_document(doc: dict[str, object], *, source: str = "<python>") -> Scenario:
    """Validate a parsed document (what ``tomllib`` returns) with every check a file gets.

    :func:`evsim.scenario.document.validate_scenario` uses it for scenarios built in Python; errors carry
    the field path but no line (there is no text).

    Raises:
        ConfigError: the only exception.
    """
    return _build(doc, _Context("", source))


def _build(doc: dict[str, object], ctx: _Context) -> Scenario:
    try:
        return _Builder(ctx).build(doc)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(
            f"internal error while validating the scenario ({type(exc).__name__}: {exc})",
            file=ctx.source,
            fix="this is an evsim bug: please report it together with the scenario file",
        ) from exc


def validate_tls_profile(spec: TlsProfileSpec) -> None:
    """Check a TLS profile with the TLS layer's rules (:class:`evsim.tls.config.TlsProfile`, the one place that
    checks versions and suites).

    Args:
        spec: the profile as read from the file (or built in Python).

    Raises:
        ConfigError: with ``path`` relative to the profile table (``versions[0]``,
            ``cipher_suites."1.3"[1]``): no version, an unknown, repeated, legacy (below TLS 1.2, OCPP
            A00.FR.313) or out-of-order version, an unknown ``cipher_suites`` key, an enabled version with no
            usable suite, unknown IANA names, a TLS 1.2 suite in the 1.3 list, a record size out of range...
    """
    try:
        TlsProfile(
            versions=spec.versions,
            cipher_suites={k: list(v) for k, v in spec.cipher_suites.items()},
            handshake_timeout_s=spec.handshake_timeout,
            max_send_fragment=spec.max_send_fragment,
        )
    except ConfigError as exc:
        fix = exc.fix
        if exc.path.startswith("versions[") and exc.value in tls_config.LEGACY_TLS_VERSIONS:
            # scenario profiles have no insecure_legacy_versions: only attack_downgrade offers legacy versions
            fix = "use " + " and/or ".join(f'"{v}"' for v in SCENARIO_TLS_VERSIONS)
        raise ConfigError(
            exc.message, path=format_path(_tls_layer_path(exc.path)), value=exc.value, fix=fix
        ) from exc


# ---------------------------------------------------------------- errors and locations


def _syntax_error(message: str, text: str, source: str) -> ConfigError:
    m = _SYNTAX_POSITION.match(message)
    detail, line, column = message, None, None
    if m is not None:
        detail = m.group("msg")
        if m.group("line"):
            line, column = int(m.group("line")), int(m.group("col"))
        else:
            line = text.count("\n") + 1
    fix = next(
        (f for prefix, f in _SYNTAX_FIXES if detail.startswith(prefix)),
        "fix the TOML syntax (https://toml.io)",
    )
    where = f" at column {column}" if column is not None else " at the end of the file"
    return ConfigError(f"TOML syntax error: {detail}{where}", file=source, line=line, fix=fix)


def _tls_layer_path(path: str) -> FieldPath:
    """Turn a path from :mod:`evsim.tls.config` (``cipher_suites.1.3[0]``) into this loader's parts."""
    m = re.fullmatch(r'(\w+)(?:\.(?:"([^"]*)"|([0-9.]+)))?(?:\[(\d+)\])?', path)
    if m is None:
        return ()
    name = {"handshake_timeout_s": "handshake_timeout"}.get(m.group(1), m.group(1))
    parts: list[str | int] = [name]
    key = m.group(2) if m.group(2) is not None else m.group(3)
    if key is not None:
        parts.append(key)
    if m.group(4) is not None:
        parts.append(int(m.group(4)))
    return tuple(parts)


class _Context:
    """The text and source of one load: builds located errors."""

    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source
        self._index: LineIndex | None = None

    def line(self, path: FieldPath) -> int | None:
        if self._index is None:
            self._index = index_lines(self.text)
        return self._index.line_of(path)

    def render(self, path: FieldPath) -> str:
        return format_path(path)

    def error(self, path: FieldPath, message: str, *, value: object = None, fix: str = "") -> ConfigError:
        return ConfigError(
            message,
            path=format_path(path),
            value=shown(value),
            fix=fix,
            file=self.source,
            line=self.line(path),
        )

    def relocate(self, exc: ConfigError, path: FieldPath) -> ConfigError:
        """The same error, at ``path`` (for errors raised by code that does not know where it is)."""
        return self.error(path, exc.message, value=exc.value, fix=exc.fix)


# ---------------------------------------------------------------- typed table reader


class _Table(Table):
    """A scenario table: the base reader (:class:`evsim.toml_table.Table`) with errors located in the file
    (``ctx``), plus the scenario's own getters (units, security profiles, named tables).

    Args:
        ctx: the load's context.
        path: where the table is.
        data: the parsed value (checked to be a table).
        keys: the keys it may hold.
        what: how the fix names the table when it is not one (``"[simulation]"``).
        unknown_hint: replaces the list of allowed keys in unknown-key errors.
        elsewhere: keys that are valid in sibling tables but not in this one (timeline parameters of other
            actions): they are reported as "not a parameter of <what>" instead of "unknown key".
    """

    def __init__(
        self,
        ctx: _Context,
        path: FieldPath,
        data: object,
        keys: Sequence[str],
        *,
        what: str = "",
        unknown_hint: str = "",
        elsewhere: Collection[str] = (),
    ) -> None:
        self.ctx = ctx
        super().__init__(
            data, path, keys, site=ctx, what=what, unknown_hint=unknown_hint, elsewhere=elsewhere
        )

    def child(self, path: FieldPath, data: object, keys: Sequence[str], *, what: str = "") -> _Table:
        return _Table(self.ctx, path, data, keys, what=what)

    def sub_table(self, key: str, keys: Sequence[str], what: str = "") -> _Table | None:
        sub = super().sub_table(key, keys, what)
        assert sub is None or isinstance(sub, _Table)
        return sub

    def profile_number(self, key: str, default: int) -> int:
        value = self.data.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value not in SECURITY_PROFILES:
            raise self.error(
                key,
                "unknown security profile",
                value=value,
                fix="use 1 (plain ws, trusted networks only), 2 (TLS + password) or 3 (mutual TLS)",
            )
        return value

    def duration(
        self,
        key: str,
        default: float,
        *,
        allow_negative: bool = False,
        positive: bool = False,
        whole_seconds: bool = False,
    ) -> float:
        if key not in self.data:
            return default
        return self.ctx_duration(
            self.at(key),
            self.data[key],
            allow_negative=allow_negative,
            positive=positive,
            whole_seconds=whole_seconds,
        )

    def ctx_duration(
        self,
        path: FieldPath,
        value: object,
        *,
        allow_negative: bool = False,
        positive: bool = False,
        whole_seconds: bool = False,
    ) -> float:
        try:
            seconds = parse_duration(value, allow_negative=allow_negative)
        except ConfigError as exc:
            raise self.ctx.relocate(exc, path) from None
        if positive and seconds <= 0:
            raise self.ctx.error(path, "must be longer than zero", value=value, fix='use e.g. "30s"')
        if whole_seconds and seconds != math.floor(seconds):
            raise self.ctx.error(
                path,
                "must be a whole number of seconds (OCPP intervals are integers)",
                value=value,
                fix=f'use e.g. "{max(1, math.floor(seconds))}s"',
            )
        return seconds

    def named_tables(self, key: str, what: str) -> Iterator[tuple[str, object]]:
        """Entries of a table of named tables (``[csms.<name>]``), names checked."""
        sub = self.data.get(key, {})
        if not isinstance(sub, dict):
            raise self.error(
                key,
                f"expected a table of named tables, got {type_name(sub)}",
                value=sub,
                fix=f"write [{key}.<name>] tables ({what})",
            )
        for name, value in sub.items():
            _check_name(self.ctx, self.at(key, name), name)
            yield name, value


def _check_name(ctx: _Context, path: FieldPath, name: str) -> None:
    """Names of roots, profiles, trust stores, CSMS and groups: selectors and ids are built from them."""
    if not _NAME.fullmatch(name) or len(name) > MAX_NAME_LENGTH:
        raise ctx.error(
            path,
            f"invalid name (1..{MAX_NAME_LENGTH} letters, digits, '-' or '_', starting with a letter or digit)",
            value=name,
            fix="rename the table, e.g. [stations.fleet_a]",
        )


# ---------------------------------------------------------------- the builder


class _Nodes:
    """Every name a selector or target may use: CSMS, station groups, station ids."""

    def __init__(self) -> None:
        self.csms: dict[str, CsmsSpec] = {}
        self.controllers: dict[str, ControllerSpec] = {}
        self.groups: dict[str, StationGroupSpec] = {}
        self.station_group: dict[str, str] = {}  # station id -> group

    def kind(self, name: str) -> str | None:
        if name in self.csms:
            return "csms"
        if name in self.controllers:
            return "controller"
        if name in self.groups:
            return "group"
        if name in self.station_group:
            return "station"
        return None

    def group_of(self, name: str) -> StationGroupSpec:
        """The group of a group name or station id (the caller checked the kind)."""
        return self.groups[self.station_group.get(name, name)]

    def names(self, kinds: Collection[str]) -> list[str]:
        out: list[str] = []
        if "csms" in kinds:
            out += self.csms
        if "controller" in kinds:
            out += self.controllers
        if "group" in kinds:
            out += self.groups
        return out


# ---------------------------------------------------------------- TLS model tables (scenario-tls)
#
# [tls.pins.<name>], [tls.change.<name>], the trust-store knobs mode / time_check, the station groups'
# pins / change, the CSMS's ocsp_stapling and the release_pin action. Values are checked by the TLS layer
# itself (PinSet, ChangePolicy, PeerPolicy.require), built here with placeholder key hashes because keys
# are generated per run; its errors are relocated to the file's line and field.

PINSET_KEYS: Final = ("enforcement", "tofu", "pins")
PIN_KEYS: Final = ("target", "state", "cert", "key", "root", "spki_sha256", "not_after")
PIN_SOURCES: Final = ("cert", "root", "spki_sha256")
CHANGE_KEYS: Final = ("on_peer_key_change", "on_peer_cert_change_same_key")
TRUST_MODES: Final = typing.get_args(tls_config.TrustMode)
REVOCATION_KEYS: Final = ("crl", "ocsp", "on_unknown")
SESSION_KEYS: Final = ("resumption", "lifetime", "cache_entries")
RECORD_KEYS: Final = ("max_send_fragment", "max_fragment_length", "record_size_limit", "recv_buffer")
RESUMPTIONS: Final = typing.get_args(tls_config.Resumption)
SUITE_PREFERENCES: Final = typing.get_args(tls_config.SuitePreference)
CRL_MODES: Final = typing.get_args(tls_revocation.CrlMode)
OCSP_POLICIES: Final = typing.get_args(tls_revocation.OcspPolicy)
ON_UNKNOWN: Final = typing.get_args(tls_revocation.OnUnknown)
MAX_DEPTH: Final = tls_config.MAX_VERIFY_DEPTH
"""The TLS layer's ``TrustStore.max_depth`` bound (OpenSSL's default verify depth)."""
TIME_CHECKS: Final = typing.get_args(tls_config.TimeCheck)
KEY_NAMES: Final = {"current": 0, "next": 1}
"""``key`` of a CSMS pin: ``current`` = the key at the start, ``next`` = the key of its first new-key rotation."""
MAX_KEY_INDEX: Final = 16
"""Most key rotations a pin may look ahead (keys are generated on demand; a bound keeps typos cheap)."""
_PIN_EXAMPLE = '{ target = "leaf", cert = "csms.main" }'


def _layer_path(path: str) -> FieldPath:
    """``pins[1].spki_sha256`` (a TLS-layer path) as this loader's parts."""
    parts: list[str | int] = []
    for piece in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        parts.append(int(piece[1:-1]) if piece.startswith("[") else piece)
    return tuple(parts)


class _TlsModelReader:
    """The TLS-model part of :class:`_Builder` (kept apart so other sections merge cleanly)."""

    ctx: _Context
    nodes: _Nodes
    _pin_sets: dict[str, PinSetSpec]
    _change: dict[str, ChangeSpec]

    # ------------------------------------------------------------ [tls.profiles.<name>] engine knobs

    def profile_engine_knobs(self, t: _Table, spec: TlsProfileSpec) -> TlsProfileSpec:
        """Read the engine knobs of a profile table and build the TLS layer's profile with
        ``TlsProfile.from_toml`` (its errors relocated to the file), kept in ``spec.tls``."""
        table: dict[str, object] = {
            "versions": list(spec.versions),
            "cipher_suites": {k: list(v) for k, v in spec.cipher_suites.items()},
            "handshake_timeout_s": spec.handshake_timeout,
        }
        if t.has("suite_preference"):
            table["suite_preference"] = t.enum("suite_preference", SUITE_PREFERENCES, "server")
        examples = {
            "groups": '["X25519", "secp256r1"]',
            "signature_algorithms": '["ecdsa_secp256r1_sha256"]',
            "enforce": '["record.max_send_fragment"]',
        }
        for key, example in examples.items():
            if t.has(key):
                table[key] = list(t.string_list(key, (), nonempty=key != "enforce", example=example))
        if t.has("alpn") or t.has("alpn_require"):
            table["alpn"] = {
                "offer": list(t.string_list("alpn", (), nonempty=False, example='["ocpp2.0.1"]')),
                "require": t.boolean("alpn_require", False),
            }
        s = t.sub_table("session", SESSION_KEYS, '{ resumption = "both", lifetime = "2h" }')
        if s is not None:
            session: dict[str, object] = {"resumption": s.enum("resumption", RESUMPTIONS, "both")}
            if s.has("lifetime"):
                session["lifetime_s"] = s.duration("lifetime", 0.0, positive=True)
            if s.has("cache_entries"):
                session["cache_entries"] = s.integer("cache_entries", 1, 1, 10_000_000)
            table["session"] = session
        record: dict[str, object] = {}
        r = t.sub_table("record", RECORD_KEYS, "{ max_send_fragment = 2048 }")
        if r is not None:
            if r.has("max_send_fragment") and spec.max_send_fragment is not None:
                raise r.error(
                    "max_send_fragment",
                    "max_send_fragment is given twice (here and at the top of the profile)",
                    value=r.data["max_send_fragment"],
                    fix="keep one of them",
                )
            for key in RECORD_KEYS:
                if r.has(key):
                    record[key] = r.integer(key, 0, 1, 1 << 20)
        if spec.max_send_fragment is not None:
            record["max_send_fragment"] = spec.max_send_fragment
        if record:
            table["record"] = record
        if t.has("keylog"):
            table["keylog"] = t.string("keylog", "", max_len=4096)
        try:
            profile = TlsProfile.from_toml(table, path="")
        except ConfigError as exc:
            raise self.ctx.error(
                (*t.path, *_profile_path(exc.path, top_fragment=spec.max_send_fragment is not None)),
                exc.message,
                value=exc.value,
                fix=exc.fix,
            ) from None
        return attrs.evolve(spec, tls=profile, keep_sessions=s is not None)

    # ------------------------------------------------------------ [tls.trust.<name>] knobs

    def trust_model(self, t: _Table, spec: TrustSpec) -> TrustSpec:
        mode = t.enum("mode", TRUST_MODES, "pki")
        if mode != "pki":
            if t.has("roots"):
                raise t.error(
                    "roots",
                    f'a mode = "{mode}" trust store trusts pinned keys, not roots (the TLS layer refuses '
                    "anchors there)",
                    value=None,
                    fix='remove roots, or use mode = "pki" (pins then apply on top of the CA check)',
                )
            spec = attrs.evolve(spec, roots=())
        spec = attrs.evolve(spec, mode=mode, time_check=t.enum("time_check", TIME_CHECKS, "enforce"))
        return self.trust_revocation(t, spec)

    def trust_revocation(self, t: _Table, spec: TrustSpec) -> TrustSpec:
        r = t.sub_table(
            "revocation", REVOCATION_KEYS, '{ crl = "leaf", ocsp = "request", on_unknown = "fail" }'
        )
        if r is not None:
            spec = attrs.evolve(
                spec,
                crl=r.enum("crl", CRL_MODES, "off"),
                ocsp=r.enum("ocsp", OCSP_POLICIES, "off"),
                on_unknown=r.enum("on_unknown", ON_UNKNOWN, "fail"),
            )
            if spec.mode != "pki" and (spec.crl != "off" or spec.ocsp != "off"):
                raise t.error(
                    "revocation",
                    f'mode = "{spec.mode}" has no CA whose revocations could be checked',
                    value=None,
                    fix='remove revocation, or use mode = "pki"',
                )
        if t.has("max_depth"):
            spec = attrs.evolve(
                spec, max_depth=t.integer("max_depth", 0, 0, MAX_DEPTH, fix=f"use 0..{MAX_DEPTH}, e.g. 2")
            )
        return spec

    # ------------------------------------------------------------ [csms.<name>] ocsp_stapling

    def ocsp_stapling(self, t: _Table, security_profile: int) -> bool:
        staple = t.boolean("ocsp_stapling", False)
        if staple and security_profile == 1:
            raise t.error(
                "ocsp_stapling",
                "security profile 1 has no TLS, so nothing to staple",
                value=True,
                fix="remove ocsp_stapling or use security_profile = 2",
            )
        return staple

    # ------------------------------------------------------------ [tls.pins.<name>]

    def pin_sets(
        self, tls: _Table | None, pki: PkiSpec, csms: Mapping[str, CsmsSpec]
    ) -> dict[str, PinSetSpec]:
        self._pin_sets = {}
        if tls is None:
            return self._pin_sets
        for name, value in tls.named_tables("pins", "pin sets, e.g. [tls.pins.csms_leaf]"):
            t = _Table(self.ctx, tls.at("pins", name), value, PINSET_KEYS, what=f"[tls.pins.{name}]")
            raw = t.data.get("pins", [])
            if not isinstance(raw, list):
                raise t.error(
                    "pins",
                    f"expected an array of tables, got {type_name(raw)}",
                    value=raw,
                    fix=f"write pins = [{_PIN_EXAMPLE}]",
                )
            pins = tuple(self.pin(t, i, item, pki, csms) for i, item in enumerate(raw))
            spec = PinSetSpec(
                name=name,
                enforcement=t.enum("enforcement", pins_layer.ENFORCEMENTS, "enforce"),
                tofu=t.boolean("tofu", False),
                pins=pins,
            )
            try:
                layer_pin_set(spec, placeholder_spki, start=DEFAULT_START)
            except ConfigError as exc:
                where = _layer_path(exc.path)
                if len(where) == 3 and where[2] == "spki_sha256" and isinstance(where[1], int):
                    pin = pins[where[1]]
                    where = (*where[:2], "cert" if pin.csms else "root" if pin.root else "spki_sha256")
                raise self.ctx.error((*t.path, *where), exc.message, value=None, fix=exc.fix) from None
            self._pin_sets[name] = spec
        return self._pin_sets

    def pin(self, t: _Table, i: int, item: object, pki: PkiSpec, csms: Mapping[str, CsmsSpec]) -> PinSpec:
        p = _Table(self.ctx, t.at("pins", i), item, PIN_KEYS, what=_PIN_EXAMPLE)
        p.require("target", 'add target = "leaf" (or intermediate, root, any)')
        target = p.enum("target", pins_layer.TARGETS, "leaf")
        state = p.enum("state", pins_layer.STATES, "active")
        source = self.key_reference(p, pki, csms, action=None)
        if source.csms is not None and target not in ("leaf", "any"):
            raise p.error(
                "target",
                f"cert pins the CSMS's own key, which is only ever the leaf (target {target!r} never matches)",
                value=target,
                fix='use target = "leaf" (or "any"), or pin the issuing root with root = "<name>"',
            )
        if source.root is not None and target not in ("root", "any"):
            raise p.error(
                "target",
                "scenario roots issue CSMS certificates directly, so a root key is only ever the root of the "
                f"chain (target {target!r} never matches)",
                value=target,
                fix='use target = "root" (or "any"); for an intermediate, give its spki_sha256',
            )
        not_after: float | None = None
        if p.has("not_after"):
            not_after = p.duration("not_after", 0.0, positive=True)
        return attrs.evolve(source, target=target, state=state, not_after=not_after)

    def key_reference(
        self, p: _Table, pki: PkiSpec, csms: Mapping[str, CsmsSpec], *, action: str | None
    ) -> PinSpec:
        """The key a pin (or a ``release_pin`` event) names: exactly one of cert (+ key), root, spki_sha256."""
        given = [k for k in PIN_SOURCES if p.has(k)]
        if len(given) != 1:
            raise self.ctx.error(
                p.at(given[1]) if len(given) > 1 else p.path,
                "name the key with exactly one of cert, root, spki_sha256"
                + (f" (got {', '.join(given)})" if given else ""),
                fix='e.g. cert = "csms.main" (its key at the start; key = "next" for the key it rotates to), '
                'root = "root", or spki_sha256 = "<64 hex digits>"',
            )
        if p.has("key") and given[0] != "cert":
            raise p.error("key", "key selects one of a CSMS's keys: it goes with cert", fix="remove key")
        if given[0] == "spki_sha256":
            try:
                spki = pins_layer.normalize_hex(
                    p.data["spki_sha256"],
                    digits=pins_layer.SPKI_SHA256_HEX_DIGITS,
                    path="spki_sha256",
                    what="SPKI SHA-256",
                    fix="give the SHA-256 of the DER SubjectPublicKeyInfo as 64 hex digits",
                )
            except ConfigError as exc:
                raise self.ctx.relocate(exc, p.at("spki_sha256")) from None
            return PinSpec(target="any", spki_sha256=spki)
        if given[0] == "root":
            return PinSpec(
                target="root", root=p.reference("root", "", pki.roots, "root", "[pki.roots.<name>]")
            )
        ref = p.data["cert"]
        names = [f"csms.{n}" for n in csms]
        if not isinstance(ref, str) or not ref.startswith("csms.") or ref[5:] not in csms:
            raise p.error(
                "cert",
                "cert names a CSMS certificate as csms.<name>",
                value=ref,
                fix=choices_fix(ref, names, what="use one of"),
            )
        name = ref[5:]
        if csms[name].security_profile == 1:
            raise p.error(
                "cert",
                f"CSMS {name!r} uses security profile 1 (no certificate)",
                value=ref,
                fix="pin a CSMS with security_profile 2 or 3",
            )
        key = 0
        if p.has("key"):
            raw = p.data["key"]
            if isinstance(raw, str) and raw in KEY_NAMES:
                key = KEY_NAMES[raw]
            elif isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw <= MAX_KEY_INDEX:
                key = raw
            else:
                raise p.error(
                    "key",
                    "unknown key of the CSMS",
                    value=raw,
                    fix=f'use "current" (the key at the start), "next" (the key its first rotate_certificate '
                    f"with new_key = true switches to), or 0..{MAX_KEY_INDEX} (keys in rotation order)",
                )
        return PinSpec(target="leaf", csms=name, key=key)

    # ------------------------------------------------------------ [tls.change.<name>]

    def change_policies(self, tls: _Table | None) -> dict[str, ChangeSpec]:
        self._change = {}
        if tls is None:
            return self._change
        for name, value in tls.named_tables("change", "change policies, e.g. [tls.change.strict]"):
            t = _Table(self.ctx, tls.at("change", name), value, CHANGE_KEYS, what=f"[tls.change.{name}]")
            spec = ChangeSpec(
                name=name,
                on_peer_key_change=t.enum("on_peer_key_change", change_layer.ON_KEY_CHANGE, "warn"),
                on_peer_cert_change_same_key=t.enum(
                    "on_peer_cert_change_same_key", change_layer.ON_CERT_CHANGE, "info"
                ),
            )
            try:
                layer_change_policy(spec)
            except ConfigError as exc:  # pragma: no cover - the enums above hold the layer's vocabulary
                raise self.ctx.error((*t.path, *_layer_path(exc.path)), exc.message, fix=exc.fix) from None
            self._change[name] = spec
        return self._change

    # ------------------------------------------------------------ [csms.<name>] pins / change

    def csms_peer_policy(self, root: _Table, csms: dict[str, CsmsSpec]) -> dict[str, CsmsSpec]:
        """A CSMS's ``pins`` / ``change`` (read after the pin sets, which may name CSMS keys): applied to the
        certificates of stations (security profile 3)."""
        tables = root.data.get("csms")
        assert isinstance(tables, dict)  # self.csms() checked it
        for name, spec in list(csms.items()):
            t = _Table(self.ctx, ("csms", name), tables[name], CSMS_KEYS)
            if not (t.has("pins") or t.has("change")):
                continue
            key = "pins" if t.has("pins") else "change"
            if spec.security_profile != 3:
                raise t.error(
                    key,
                    f"a CSMS checks station certificates only with security profile 3 (got {spec.security_profile})",
                    value=None,
                    fix="use security_profile = 3, or remove it",
                )
            pins = None
            if t.has("pins"):
                pins = t.reference("pins", "", self._pin_sets, "pin set", "[tls.pins.<name>]")
                if any(p.csms is not None for p in self._pin_sets[pins].pins):
                    raise t.error(
                        "pins",
                        f'pin set {pins!r} pins a CSMS key (cert = "csms.<name>"); a CSMS checks station '
                        "certificates",
                        value=pins,
                        fix='use a pin set with root = "<root>" or spki_sha256 pins',
                    )
            change = None
            if t.has("change"):
                change = t.reference("change", "", self._change, "change policy", "[tls.change.<name>]")
            csms[name] = attrs.evolve(spec, pins=pins, change=change)
        self.nodes.csms = csms
        return csms

    def csms_client_trust(
        self, root: _Table, csms: dict[str, CsmsSpec], trust: Mapping[str, TrustSpec]
    ) -> dict[str, CsmsSpec]:
        """A CSMS's ``client_trust`` (read after the trust stores)."""
        tables = root.data.get("csms")
        assert isinstance(tables, dict)  # self.csms() checked it
        for name, spec in list(csms.items()):
            t = _Table(self.ctx, ("csms", name), tables[name], CSMS_KEYS)
            client_trust = _client_trust(t, trust, spec.security_profile)
            if client_trust is not None:
                csms[name] = attrs.evolve(spec, client_trust=client_trust)
        self.nodes.csms = csms
        return csms

    # ------------------------------------------------------------ [stations.<group>] pins / change

    def group_peer_policy(
        self, t: _Table, group: StationGroupSpec, trust: Mapping[str, TrustSpec]
    ) -> StationGroupSpec:
        pins = change = None
        if t.has("pins"):
            pins = t.reference("pins", "", self._pin_sets, "pin set", "[tls.pins.<name>]")
        if t.has("change"):
            change = t.reference("change", "", self._change, "change policy", "[tls.change.<name>]")
        key = "pins" if t.has("pins") else "change"
        if (pins or change) and group.security_profile == 1:
            raise t.error(
                key,
                "security profile 1 has no TLS: nothing to pin or watch",
                value=None,
                fix="remove it or use security_profile = 2",
            )
        store = trust[group.trust]
        if store.mode != "pki":
            if group.security_profile == 1:
                raise t.error(
                    "trust",
                    f"trust store {store.name!r} is for TLS; the group uses profile 1",
                    value=group.trust,
                    fix="use security_profile = 2",
                )
            policy = PeerPolicy(
                side="client",
                pins=None
                if pins is None
                else layer_pin_set(self._pin_sets[pins], placeholder_spki, start=DEFAULT_START),
                change=None if change is None else layer_change_policy(self._change[change]),
            )
            try:
                policy.require(store.mode)
            except ConfigError as exc:
                raise t.error(
                    "pins" if pins else "trust",
                    f"trust store {store.name!r} (mode = {store.mode!r}): {exc.message}",
                    value=pins or group.trust,
                    fix='give the group pins = "<name>" with enforcement = "enforce"'
                    + (" and tofu = true" if store.mode == "tofu" else "")
                    + ', or use a mode = "pki" trust store',
                ) from None
        self.endpoint_peer_checks(t, group, pins, trust)
        return attrs.evolve(group, pins=pins, change=change)

    def endpoint_peer_checks(
        self, t: _Table, group: StationGroupSpec, group_pins: str | None, trust: Mapping[str, TrustSpec]
    ) -> None:
        """A station endpoint's own ``pins`` need TLS, and an endpoint whose trust store has no CA
        (``pinned_peers``/``tofu``) needs pins (its own or the group's): else nothing could decide."""
        raw = t.data.get("endpoints")
        if not isinstance(raw, list):
            return
        for i, item in enumerate(raw):
            if not isinstance(item, dict):
                continue
            if "pins" in item and group.security_profile == 1:
                raise self.ctx.error(
                    t.at("endpoints", i, "pins"),
                    "security profile 1 has no TLS: nothing to pin",
                    value=item["pins"],
                    fix="remove it or use security_profile = 2",
                )
            store = trust.get(str(item.get("trust", "")))
            if store is not None and store.mode != "pki" and "pins" not in item and group_pins is None:
                raise self.ctx.error(
                    t.at("endpoints", i, "trust"),
                    f"trust store {store.name!r} (mode = {store.mode!r}) has no CA: this endpoint needs pins",
                    value=store.name,
                    fix='add pins = "<name>" to the endpoint or the group, or use a mode = "pki" trust store',
                )

    # ------------------------------------------------------------ [[timeline]] release_pin

    def check_pinned(self, t: _Table, target: str, ref: PinSpec) -> None:
        """Refuse a ``release_pin`` whose stations have no pin set, or whose pin set has no pin for the key."""
        group = self.nodes.group_of(target)
        if group.pins is None:
            raise t.error(
                "target",
                f"group {group.name!r} has no pin set",
                value=target,
                fix='give the group pins = "<name>", or target a group that has one',
            )
        pinset = self._pin_sets[group.pins]
        if not any(placeholder_spki(p) == placeholder_spki(ref) for p in pinset.pins):
            raise t.error(
                next(k for k in PIN_SOURCES if t.has(k)),
                f"pin set {pinset.name!r} of group {group.name!r} has no pin for this key",
                value=None,
                fix="name the key as one of its pins does (cert and key, root, or spki_sha256)",
            )


def _profile_path(path: str, *, top_fragment: bool) -> FieldPath:
    """A ``TlsProfile.from_toml`` error path as the scenario profile table's parts."""
    if path.startswith("cipher_suites"):
        return _tls_layer_path(path)
    for engine, ours in (
        ("handshake_timeout_s", "handshake_timeout"),
        ("session.lifetime_s", "session.lifetime"),
        ("alpn.require", "alpn_require"),
        ("alpn_require", "alpn_require"),
        ("alpn.offer", "alpn"),
        ("record.max_send_fragment", "max_send_fragment" if top_fragment else "record.max_send_fragment"),
    ):
        if path == engine or path.startswith((engine + ".", engine + "[")):
            path = ours + path[len(engine) :]
            break
    return _layer_path(path)


class _Builder(_TlsModelReader):
    """Reads the parsed document section by section (see the module doc)."""

    def __init__(self, ctx: _Context) -> None:
        self.ctx = ctx
        self.nodes = _Nodes()

    def build(self, doc: dict[str, object]) -> Scenario:
        root = _Table(self.ctx, (), doc, TOP_KEYS)
        if "simulation" not in doc:
            raise self.ctx.error(
                ("simulation",),
                "missing [simulation] table",
                fix='add [simulation] with at least duration = "1h"',
            )
        sim = self.simulation(
            _Table(self.ctx, ("simulation",), doc["simulation"], SIMULATION_KEYS, what="[simulation]")
        )
        pki = self.pki(root.sub_table("pki", PKI_KEYS, "[pki]"))
        tls = root.sub_table("tls", TLS_KEYS, "[tls]")
        profiles = self.tls_profiles(tls)
        trust = self.trust_stores(tls, pki)
        csms = self.csms(root, sim, pki, profiles)
        pin_sets = self.pin_sets(tls, pki, csms)
        change_policies = self.change_policies(tls)
        csms = self.csms_peer_policy(root, csms)
        csms = self.csms_client_trust(root, csms, trust)
        controllers = self.controllers(root, sim, pki, profiles, trust)
        groups = self.station_groups(root, csms, profiles, trust)
        self.register_stations(groups)
        links = self.links(root)
        timeline = self.timeline(root, sim, pki)
        return Scenario(
            simulation=sim,
            pki=pki,
            tls_profiles=profiles,
            trust_stores=trust,
            csms=csms,
            stations=groups,
            controllers=controllers,
            links=links,
            timeline=timeline,
            source=self.ctx.source,
            pin_sets=pin_sets,
            change_policies=change_policies,
        )

    # ------------------------------------------------------------ [simulation]

    def simulation(self, t: _Table) -> SimulationSpec:
        t.require("duration", 'add duration = "1h" (how long the run lasts)')
        duration = t.duration("duration", 0.0, positive=True)
        clock = t.enum("clock", CLOCKS, "virtual")
        network = t.enum("network", NETWORKS, "memory")
        if network == "tcp" and clock != "real":
            raise t.error(
                "network",
                'network = "tcp" needs clock = "real" (loopback sockets run on the real clock)',
                value=network,
                fix='set clock = "real", or use network = "memory" for virtual time',
            )
        start: datetime.datetime | None = DEFAULT_START if clock == "virtual" else None
        if t.has("start"):
            try:
                start = parse_utc_timestamp(t.data["start"])
            except ConfigError as exc:
                raise self.ctx.relocate(exc, t.at("start")) from None
        stem = Path(self.ctx.source).stem if not self.ctx.source.startswith("<") else ""
        default_name = stem if stem and not stem.isspace() else "scenario"
        return SimulationSpec(
            name=t.string("name", default_name, max_len=100),
            description=t.string("description", ""),
            outcome=t.string("outcome", "", one_line=False, max_len=4000),
            seed=t.integer("seed", 1, 0, 2**64 - 1),
            duration=duration,
            clock=clock,
            network=network,
            start=start,
            stop_when_done=t.boolean("stop_when_done", False),
        )

    # ------------------------------------------------------------ [pki]

    def pki(self, t: _Table | None) -> PkiSpec:
        if t is None:
            return PkiSpec()
        key_type = t.enum("key_type", KEY_TYPES, "ec")
        validity = t.duration("validity", PkiSpec().validity, positive=True)
        organization = t.string("organization", "evsim", max_len=64)
        roots: dict[str, RootSpec] = {"root": RootSpec(name="root", key_type=key_type)}
        for name, value in t.named_tables("roots", "extra root CAs, e.g. [pki.roots.rogue]"):
            r = _Table(
                self.ctx,
                t.at("roots", name),
                value,
                ROOT_KEYS,
                what=f"[pki.roots.{name}] (may be empty: {{}})",
            )
            roots[name] = RootSpec(name=name, key_type=r.enum("key_type", KEY_TYPES, key_type))
        expiry_warning = t.duration("expiry_warning", 0.0, positive=True) if t.has("expiry_warning") else None
        return PkiSpec(
            key_type=key_type,
            validity=validity,
            organization=organization,
            roots=roots,
            expiry_warning=expiry_warning,
        )

    # ------------------------------------------------------------ [tls]

    def tls_profiles(self, tls: _Table | None) -> dict[str, TlsProfileSpec]:
        profiles = {"default": _profile_spec("default", SCENARIO_TLS_VERSIONS, {}, 10.0, None)}
        if tls is None:
            return profiles
        for name, value in tls.named_tables("profiles", "TLS profiles, e.g. [tls.profiles.strict]"):
            path = tls.at("profiles", name)
            t = _Table(self.ctx, path, value, PROFILE_KEYS, what=f"[tls.profiles.{name}]")
            versions = t.string_list("versions", SCENARIO_TLS_VERSIONS, example='["1.3", "1.2"]')
            suites: dict[str, tuple[str, ...]] = {}
            if t.has("cipher_suites"):
                s = _Table(
                    self.ctx,
                    t.at("cipher_suites"),
                    t.data["cipher_suites"],
                    tls_config.SUITE_KEYS,
                    what='{ "1.3" = [...], "1.2" = [...] }',
                )
                for key in s.data:
                    suites[key] = s.string_list(key, (), nonempty=False, example='["TLS_AES_128_GCM_SHA256"]')
            timeout = t.duration(
                "handshake_timeout", default_of(TlsProfileSpec, "handshake_timeout"), positive=True
            )
            fragment: int | None = None
            if t.has("max_send_fragment"):
                fragment = t.integer(
                    "max_send_fragment",
                    MAX_FRAGMENT,
                    MIN_FRAGMENT,
                    MAX_FRAGMENT,
                    fix=f"use {MIN_FRAGMENT}..{MAX_FRAGMENT} bytes, e.g. 2048, or omit it",
                )
            spec = _profile_spec(name, versions, suites, timeout, fragment)
            try:
                validate_tls_profile(spec)
            except ConfigError as exc:
                raise self.ctx.error(
                    (*path, *_tls_layer_path(exc.path)), exc.message, value=exc.value, fix=exc.fix
                ) from None
            profiles[name] = self.profile_engine_knobs(t, spec)
        return profiles

    def trust_stores(self, tls: _Table | None, pki: PkiSpec) -> dict[str, TrustSpec]:
        stores = {"default": TrustSpec(name="default")}
        if tls is None:
            return stores
        for name, value in tls.named_tables("trust", "trust stores, e.g. [tls.trust.operator]"):
            t = _Table(self.ctx, tls.at("trust", name), value, TRUST_KEYS, what=f"[tls.trust.{name}]")
            roots = t.string_list("roots", ("root",), example='["root"]')
            for i, root in enumerate(roots):
                if root not in pki.roots:
                    raise self.ctx.error(
                        t.at("roots", i),
                        f"undefined root {root!r}",
                        value=root,
                        fix=choices_fix(root, pki.roots, what=f"define [pki.roots.{root}] or use one of"),
                    )
            stores[name] = self.trust_model(
                t,
                TrustSpec(
                    name=name,
                    roots=roots,
                    hostname=t.enum("hostname", HOSTNAME_CHECKS, "san+cn"),
                    wildcards=t.enum("wildcards", WILDCARD_POLICIES, "deny"),
                ),
            )
        return stores

    # ------------------------------------------------------------ [csms.<name>]

    def csms(
        self, root: _Table, sim: SimulationSpec, pki: PkiSpec, profiles: Mapping[str, TlsProfileSpec]
    ) -> dict[str, CsmsSpec]:
        out: dict[str, CsmsSpec] = {}
        addresses: dict[tuple[str, int], str] = {}
        for name, value in root.named_tables("csms", "CSMS nodes, e.g. [csms.main]"):
            if not isinstance(value, dict):
                fix = "write [csms.<name>] tables, e.g. [csms.main]"
                if name in CSMS_KEYS:
                    fix = f"name the CSMS: write [csms.main] instead of [csms] and put {name} under it"
                raise self.ctx.error(
                    ("csms", name),
                    f"expected a table [csms.{name}], got {type_name(value)}",
                    value=value,
                    fix=fix,
                )
            t = _Table(self.ctx, ("csms", name), value, CSMS_KEYS, what=f"[csms.{name}]")
            spec = self.one_csms(t, name, sim, pki, profiles)
            _claim_address(
                t, addresses, name, spec.host, spec.port, "CSMS", "give each CSMS its own host or port"
            )
            out[name] = spec
        if not out:
            raise self.ctx.error(
                ("csms",), "the scenario has no CSMS", fix="add a [csms.main] table (every key has a default)"
            )
        self.nodes.csms = out
        return out

    def one_csms(
        self, t: _Table, name: str, sim: SimulationSpec, pki: PkiSpec, profiles: Mapping[str, TlsProfileSpec]
    ) -> CsmsSpec:
        host = t.string("host", f"{name}.evsim.test", max_len=253)
        if not _valid_host(host):
            key_fix = "set host to a DNS name such as csms.evsim.test"
            if not t.has("host"):
                key_fix = f"the default host {host!r} is not a valid DNS name: set host explicitly or rename the CSMS"
            raise t.error("host", "not a valid host name or IP address", value=host, fix=key_fix)
        if len(host) > MAX_COMMON_NAME:
            raise t.error(
                "host",
                f"host names longer than {MAX_COMMON_NAME} characters cannot be a certificate CN "
                "(RFC 5280 ub-common-name)",
                value=host,
                fix="use a shorter host name",
            )
        profile, insecure = _listener_profile(t, CsmsSpec)
        cert = self.certificate(t, pki)
        spec = CsmsSpec(
            name=name,
            host=host,
            port=t.integer("port", default_of(CsmsSpec, "port") if sim.network == "memory" else 0, 0, 65535),
            security_profile=profile,
            insecure_allow_plain_ws=insecure,
            ocpp_versions=t.string_list(
                "ocpp_versions",
                default_of(CsmsSpec, "ocpp_versions"),
                allowed=OCPP_VERSIONS,
                example='["2.0.1", "2.1"]',
            ),
            heartbeat_interval=t.duration(
                "heartbeat_interval",
                default_of(CsmsSpec, "heartbeat_interval"),
                positive=True,
                whole_seconds=True,
            ),
            tls_profile=t.reference(
                "tls_profile", "default", profiles, "TLS profile", "[tls.profiles.<name>]"
            ),
            certificate=cert,
            password=self.password(t),
            accept_unknown_stations=t.boolean(
                "accept_unknown_stations", default_of(CsmsSpec, "accept_unknown_stations")
            ),
            ocsp_stapling=self.ocsp_stapling(t, profile),
            signing=_signing(t),
        )
        return self.with_failover_fields(t, spec)

    def certificate(self, t: _Table, pki: PkiSpec) -> CertificateSpec:
        c = t.sub_table("certificate", CERTIFICATE_KEYS, '{ root = "root", validity = "365d" }')
        if c is None:
            return CertificateSpec(validity=pki.validity, key_type=pki.key_type)
        validity = c.duration("validity", pki.validity, positive=True)
        not_before = c.duration("not_before", -3600.0, allow_negative=True)
        if not_before >= validity:
            raise c.error(
                "not_before",
                f"not_before ({format_duration(not_before)}) must come before the end of "
                f"validity ({format_duration(validity)})",
                value=c.data.get("not_before"),
                fix='use e.g. not_before = "-1h" (one hour before the start)',
            )
        return CertificateSpec(
            root=c.reference("root", "root", pki.roots, "root", "[pki.roots.<name>]"),
            validity=validity,
            not_before=not_before,
            key_type=c.enum("key_type", KEY_TYPES, pki.key_type),
        )

    def password(self, t: _Table) -> str | None:
        password = t.optional_string("password", max_len=PASSWORD_LENGTH[1] * 4)
        lo, hi = PASSWORD_LENGTH
        if password is not None and not lo <= len(password) <= hi:
            raise t.error(
                "password",
                f"a BasicAuthPassword has {lo}..{hi} characters (OCPP A00.FR.205)",
                value=password,
                fix="use a longer random password, or omit it to use a generated one",
            )
        if password is not None and not password.isprintable():
            raise t.error(
                "password",
                "the password contains control characters",
                value=password,
                fix="use printable characters only",
            )
        return password

    # ------------------------------------------------------------ [stations.<group>]

    def station_groups(
        self,
        root: _Table,
        csms: Mapping[str, CsmsSpec],
        profiles: Mapping[str, TlsProfileSpec],
        trust: Mapping[str, TrustSpec],
    ) -> dict[str, StationGroupSpec]:
        out: dict[str, StationGroupSpec] = {}
        for name, value in root.named_tables("stations", "station groups, e.g. [stations.fleet]"):
            if not isinstance(value, dict):
                fix = "write [stations.<group>] tables, e.g. [stations.fleet]"
                if name in STATION_KEYS:
                    fix = f"name the group: write [stations.fleet] instead of [stations] and put {name} under it"
                raise self.ctx.error(
                    ("stations", name),
                    f"expected a table [stations.{name}], got {type_name(value)}",
                    value=value,
                    fix=fix,
                )
            if name in csms or name in self.nodes.controllers:
                raise self.ctx.error(
                    ("stations", name),
                    f"{name!r} is already the name of a {'CSMS' if name in csms else 'controller'}",
                    value=name,
                    fix="give the station group another name (selectors must be unambiguous)",
                )
            t = _Table(self.ctx, ("stations", name), value, STATION_KEYS, what=f"[stations.{name}]")
            out[name] = self.group_peer_policy(t, self.one_group(t, name, csms, profiles, trust), trust)
        return out

    def one_group(
        self,
        t: _Table,
        name: str,
        csms: Mapping[str, CsmsSpec],
        profiles: Mapping[str, TlsProfileSpec],
        trust: Mapping[str, TrustSpec],
    ) -> StationGroupSpec:
        count = t.integer("count", 1, 1, MAX_STATIONS_PER_GROUP)
        pattern = t.string("id_pattern", f"{name}-{{n:04d}}", max_len=200)
        _check_id_pattern(self.ctx, t.at("id_pattern"), pattern, count)
        endpoints = self.station_endpoints(t, profiles, trust)
        if not endpoints and not t.has("csms") and len(csms) > 1:
            raise t.error(
                "csms",
                "missing required key 'csms' (the scenario has several CSMS)",
                fix=choices_fix("", list(csms), what="add csms = one of")
                + ", or list endpoints = [{ csms = ... }, ...]",
            )
        if endpoints:
            target = self.resolve_csms(endpoints[0])
            first = endpoints[0]
            server: CsmsSpec | ControllerSpec = (
                csms[first.name] if first.kind == "csms" else self.nodes.controllers[first.name]
            )
            what = f"{'CSMS' if first.kind == 'csms' else 'controller'} {first.name!r}"
        else:
            target = t.reference("csms", next(iter(csms)), csms, "CSMS", "[csms.<name>]")
            server = csms[target]
            what = f"CSMS {target!r}"
        profile = t.profile_number("security_profile", server.security_profile)
        if profile == 1 and not server.insecure_allow_plain_ws:
            raise t.error(
                "security_profile",
                f"security profile 1 (plain ws://) but {what} does not allow it",
                value=1,
                fix=f"set insecure_allow_plain_ws = true in {what} (trusted networks "
                "only) or use security_profile = 2",
            )
        if t.has("sessions") and t.has("sessions_per_day"):
            raise t.error(
                "sessions_per_day",
                "sessions and sessions_per_day are mutually exclusive",
                value=t.data["sessions_per_day"],
                fix="keep one of them",
            )
        sessions: int | None = t.integer("sessions", default_of(StationGroupSpec, "sessions"), 0, 1_000_000)
        per_day: float | None = None
        if t.has("sessions_per_day"):
            sessions = None
            per_day = t.number("sessions_per_day", 4.0, minimum=0.0, maximum=10_000.0)
        session_start = self.delay_range(t, "session_start", default_of(StationGroupSpec, "session_start"))
        return StationGroupSpec(
            name=name,
            count=count,
            id_pattern=pattern,
            csms=target,
            security_profile=profile,
            ocpp_versions=t.string_list(
                "ocpp_versions",
                default_of(StationGroupSpec, "ocpp_versions"),
                allowed=OCPP_VERSIONS,
                example='["2.0.1"]',
            ),
            tls_profile=t.reference(
                "tls_profile", "default", profiles, "TLS profile", "[tls.profiles.<name>]"
            ),
            trust=t.reference("trust", "default", trust, "trust store", "[tls.trust.<name>]"),
            password=self.password(t),
            sessions=sessions,
            sessions_per_day=per_day,
            session_duration=t.duration(
                "session_duration", default_of(StationGroupSpec, "session_duration"), positive=True
            ),
            session_start=session_start,
            meter_interval=t.duration(
                "meter_interval", default_of(StationGroupSpec, "meter_interval"), positive=True
            ),
            charge_power=t.number(
                "charge_power",
                default_of(StationGroupSpec, "charge_power"),
                minimum=0.0,
                maximum=10e6,
                positive=True,
            ),
            heartbeat_fallback=t.duration(
                "heartbeat_fallback", default_of(StationGroupSpec, "heartbeat_fallback"), positive=True
            ),
            retry_backoff=self.backoff(t),
            queue_max=t.integer("queue_max", default_of(StationGroupSpec, "queue_max"), 1, 10_000_000),
            endpoints=endpoints,
            network_attempts=t.integer(
                "network_attempts", default_of(StationGroupSpec, "network_attempts"), 1, MAX_NETWORK_ATTEMPTS
            ),
            fallback=t.enum("fallback", FALLBACK_KINDS, default_of(StationGroupSpec, "fallback")),
            certificates=_station_certificates(t),
        )

    def delay_range(self, t: _Table, key: str, default: tuple[float, float]) -> tuple[float, float]:
        if not t.has(key):
            return default
        value = t.data[key]
        if not isinstance(value, list) or len(value) != 2:
            raise t.error(
                key, "expected [min, max], two durations", value=value, fix=f'write {key} = ["10s", "60s"]'
            )
        lo = t.ctx_duration(t.at(key, 0), value[0])
        hi = t.ctx_duration(t.at(key, 1), value[1])
        if lo > hi:
            raise t.error(key, "min is larger than max", value=None, fix="write [min, max] with min <= max")
        return (lo, hi)

    def backoff(self, t: _Table) -> RetryBackOff:
        b = t.sub_table(
            "retry_backoff", BACKOFF_KEYS, '{ wait_minimum = "3s", random_range = "3s", repeat_times = 4 }'
        )
        default = RetryBackOff()
        if b is None:
            return default
        return RetryBackOff(
            wait_minimum=b.duration("wait_minimum", default.wait_minimum),
            random_range=b.duration("random_range", default.random_range),
            repeat_times=b.integer("repeat_times", default.repeat_times, 0, 64),
        )

    def register_stations(self, groups: Mapping[str, StationGroupSpec]) -> None:
        """Record every station id; refuse ids produced twice or equal to a CSMS or group name."""
        self.nodes.groups = dict(groups)
        owner = self.nodes.station_group
        for name, group in groups.items():
            path = ("stations", name, "id_pattern")
            for sid in group.station_ids():
                if sid in owner:
                    other = owner[sid]
                    message = (
                        f"id_pattern gives the id {sid!r} to several stations"
                        if other == name
                        else f"station id {sid!r} is also produced by group {other!r}"
                    )
                    raise self.ctx.error(
                        path,
                        message,
                        value=group.id_pattern,
                        fix='include {n} and a prefix unique to the group, e.g. "'
                        + name.upper()
                        + '-{n:04d}"',
                    )
                if not valid_identity(sid):
                    raise self.ctx.error(
                        path, _IDENTITY_RULE.format(sid=sid), value=group.id_pattern, fix=_PATTERN_FIX
                    )
                clash = self.nodes.kind(sid)
                if clash is not None:
                    raise self.ctx.error(
                        path,
                        f"station id {sid!r} is also the name of a {clash}",
                        value=group.id_pattern,
                        fix="change the pattern or rename the table",
                    )
                owner[sid] = name

    # ------------------------------------------------------------ [[links]]

    def links(self, root: _Table) -> tuple[LinkSpec, ...]:
        out: list[LinkSpec] = []
        for i, value in enumerate(self.array_of_tables(root, "links")):
            t = _Table(self.ctx, ("links", i), value, LINK_KEYS, what="[[links]]")
            t.require("between", 'add between = ["fleet", "main"] (two node or group names, or "*")')
            spec, _given = self.link_policy(t, self.between(t))
            out.append(attrs.evolve(spec, line=self.ctx.line(("links", i))))
        return tuple(out)

    def array_of_tables(self, root: _Table, key: str) -> list[object]:
        value = root.data.get(key, [])
        if not isinstance(value, list):
            raise root.error(
                key,
                f"expected an array of tables, got {type_name(value)}",
                value=value,
                fix=f"write each entry as a [[{key}]] table",
            )
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise self.ctx.error(
                    (key, i),
                    f"expected a table, got {type_name(item)}",
                    value=item,
                    fix=f"write each entry as a [[{key}]] table",
                )
        return value

    def between(self, t: _Table) -> tuple[str, str]:
        value = t.data["between"]
        if not isinstance(value, list) or len(value) != 2:
            raise t.error(
                "between",
                "expected two selectors",
                value=value,
                fix='write between = ["fleet", "main"] (node, group or station names, or "*")',
            )
        names: list[str] = []
        for i, sel in enumerate(value):
            if not isinstance(sel, str):
                raise self.ctx.error(
                    t.at("between", i),
                    f"expected a name, got {type_name(sel)}",
                    value=sel,
                    fix='quote the name, e.g. "fleet"',
                )
            if sel != "*" and self.nodes.kind(sel) is None:
                raise self.ctx.error(
                    t.at("between", i),
                    f"undefined node or group {sel!r}",
                    value=sel,
                    fix=choices_fix(
                        sel,
                        [*self.nodes.names(("csms", "controller", "group")), "*"],
                        what='use a CSMS, a controller, a station group, a station id or "*":'
                        if self.nodes.controllers
                        else 'use a CSMS, a station group, a station id or "*":',
                    ),
                )
            names.append(sel)
        if names[0] == names[1] and names[0] != "*":
            raise t.error(
                "between",
                "a link joins two different selectors",
                value=names[0],
                fix='name the two ends, e.g. ["fleet", "main"]',
            )
        return (names[0], names[1])

    def link_policy(self, t: _Table, between: tuple[str, str]) -> tuple[LinkSpec, list[str]]:
        """The link policy in ``t`` (durations in s, bandwidth in bit/s) and the policy keys it gives."""
        latency = t.duration("latency", 0.0)
        jitter = t.duration("jitter", 0.0)
        bandwidth: float | None = None
        if t.has("bandwidth"):
            try:
                bandwidth = parse_bandwidth(t.data["bandwidth"])
            except ConfigError as exc:
                raise self.ctx.relocate(exc, t.at("bandwidth")) from None
        stall: StallSpec | None = None
        s = t.sub_table("stall", STALL_KEYS, '{ every = "1h", for = "30s" }')
        if s is not None:
            s.require("every", 'add every = "1h"')
            s.require("for", 'add for = "30s"')
            every = s.duration("every", 0.0, positive=True)
            length = s.duration("for", 0.0)
            if length >= every:
                raise s.error(
                    "for",
                    "a stall must be shorter than its period (the link would never move)",
                    value=s.data["for"],
                    fix=f"use for < every ({format_duration(every)})",
                )
            stall = StallSpec(every=every, duration=length)
        reset: ResetSpec | None = None
        r = t.sub_table("reset", RESET_KEYS, '{ every = "6h" }')
        if r is not None:
            r.require("every", 'add every = "6h"')
            reset = ResetSpec(every=r.duration("every", 0.0, positive=True))
        spec = LinkSpec(
            between=between, latency=latency, jitter=jitter, bandwidth=bandwidth, stall=stall, reset=reset
        )
        return spec, [key for key in LINK_POLICY_KEYS if t.has(key)]

    # ------------------------------------------------------------ [[timeline]]

    def timeline(self, root: _Table, sim: SimulationSpec, pki: PkiSpec) -> tuple[TimelineEvent, ...]:
        events: list[TimelineEvent] = []
        for i, value in enumerate(self.array_of_tables(root, "timeline")):
            events.append(self.event(i, value, sim, pki))
        return tuple(sorted(events, key=lambda e: e.at))

    def event(self, index: int, value: object, sim: SimulationSpec, pki: PkiSpec) -> TimelineEvent:
        path: FieldPath = ("timeline", index)
        assert isinstance(value, dict)
        if "action" not in value:
            raise self.ctx.error(
                (*path, "action"),
                "missing required key 'action'",
                fix=choices_fix("", list(ACTIONS), what="add action = one of"),
            )
        action = value["action"]
        if not isinstance(action, str) or action not in ACTIONS:
            raise self.ctx.error(
                (*path, "action"),
                "unknown timeline action",
                value=action,
                fix=choices_fix(action, list(ACTIONS)),
            )
        params = ACTIONS[action]
        t = _Table(
            self.ctx,
            path,
            value,
            ("at", "action", *params),
            what=f"action {action!r}",
            unknown_hint=f"{action} takes: at, action, {', '.join(params)}",
            elsewhere={key for keys in ACTIONS.values() for key in keys},
        )
        t.require("at", 'add at = "30m" (time from the start)')
        at = t.duration("at", 0.0)
        if at > sim.duration:
            raise t.error(
                "at",
                f"the event is after the end of the run ({format_duration(sim.duration)})",
                value=t.data["at"],
                fix=f"use at <= {format_duration(sim.duration)} or lengthen simulation.duration",
            )
        line = self.ctx.line(path)
        return TimelineEvent(
            at=at, action=ACTION_CLASSES[action].read(_TimelineReader(self, t, pki, line)), line=line
        )

    def target(self, t: _Table, kinds: Collection[str], *, key: str = "target") -> str:
        what = {
            "csms": "a CSMS",
            "controller": "a controller",
            "group": "a station group",
            "station": "a station id",
        }
        if not self.nodes.controllers:  # scenarios without controllers keep their messages
            kinds = [k for k in kinds if k != "controller"]
        wanted = " or ".join(what[k] for k in kinds)
        t.require(key, f'add {key} = "<name>" ({wanted})')
        value = t.data[key]
        if not isinstance(value, str):
            raise t.error(key, f"expected a name, got {type_name(value)}", value=value, fix="quote the name")
        kind = self.nodes.kind(value)
        if kind is None:
            raise t.error(
                key,
                f"undefined node {value!r}",
                value=value,
                fix=choices_fix(value, self.nodes.names(kinds), what=f"use {wanted}, e.g."),
            )
        if kind not in kinds:
            raise t.error(
                key,
                f"{value!r} is {what[kind]}; {t.data['action']} needs {wanted}",
                value=value,
                fix=choices_fix(value, self.nodes.names(kinds), what="use one of"),
            )
        return value

    def tls_csms(self, t: _Table, key: str = "target") -> str:
        name = self.target(t, ("csms",), key=key)
        if self.nodes.csms[name].security_profile == 1:
            raise t.error(
                key,
                f"CSMS {name!r} uses security profile 1 (no TLS, no certificate)",
                value=name,
                fix="target a CSMS with security_profile 2 or 3",
            )
        return name

    def tls_stations(self, t: _Table) -> str:
        name = self.target(t, ("group", "station"))
        if self.nodes.group_of(name).security_profile == 1:
            raise t.error(
                "target",
                f"{name!r} uses security profile 1 (no TLS)",
                value=name,
                fix="target stations with security_profile 2 or 3",
            )
        return name

    def root_ref(self, t: _Table, pki: PkiSpec, default: str | None) -> str:
        if default is None:
            t.require("root", 'add root = "<name>" (a root from [pki.roots])')
        return t.reference("root", default or "", pki.roots, "root", "[pki.roots.<name>]")

    def check_free_slot(self, t: _Table, target: str, to: str) -> None:
        """Refuse moving stations to ``to`` when their four network-profile slots hold other endpoints."""
        group = self.nodes.group_of(target)
        if len({e.name for e in group.endpoints} | {to}) > MAX_STATION_ENDPOINTS:
            raise t.error(
                "csms",
                f"the stations of {group.name!r} have no free network-profile slot "
                f"(slots 0..{MAX_STATION_ENDPOINTS - 1} hold their endpoints)",
                value=to,
                fix="give the group fewer endpoints, or move it to one of its endpoints",
            )

    # ------------------------------------------------------------ failover: endpoints, controllers, secondaries
    # (kept together so the TLS-table work on the same loader merges without conflicts)

    def with_failover_fields(self, t: _Table, spec: CsmsSpec) -> CsmsSpec:
        """``spec`` with ``secondary_of``, ``behind_controller`` and ``trusted_controllers`` of its table.

        References are only type-checked here; :meth:`check_csms_references` resolves them once every CSMS and
        controller is known.
        """
        secondary_of: str | None = None
        if t.has("secondary_of"):
            value = t._typed(
                "secondary_of", lambda v: isinstance(v, str), "a CSMS name", 'write secondary_of = "primary"'
            )
            assert isinstance(value, str)
            secondary_of = value
        return attrs.evolve(
            spec,
            secondary_of=secondary_of,
            behind_controller=t.enum(
                "behind_controller", BEHIND_CONTROLLER_KINDS, default_of(CsmsSpec, "behind_controller")
            ),
            trusted_controllers=t.string_list("trusted_controllers", (), nonempty=False, example='["lc1"]'),
        )

    def check_csms_references(self, csms: Mapping[str, CsmsSpec]) -> None:
        """``secondary_of`` names another CSMS that is a primary; ``trusted_controllers`` name controllers."""
        for name, spec in csms.items():
            if spec.secondary_of is not None:
                path: FieldPath = ("csms", name, "secondary_of")
                primary = csms.get(spec.secondary_of)
                if primary is None or spec.secondary_of == name:
                    others = [c for c in csms if c != name]
                    raise self.ctx.error(
                        path,
                        f"undefined CSMS {spec.secondary_of!r}"
                        if primary is None
                        else "a CSMS cannot be its own secondary",
                        value=spec.secondary_of,
                        fix=choices_fix(spec.secondary_of, others, what="name the primary, one of"),
                    )
                if primary.secondary_of is not None:
                    raise self.ctx.error(
                        path,
                        f"CSMS {spec.secondary_of!r} is itself a secondary (of {primary.secondary_of!r})",
                        value=spec.secondary_of,
                        fix=f'write secondary_of = "{primary.secondary_of}" (every endpoint names the primary)',
                    )
            self.check_trusted(("csms", name), spec.trusted_controllers, spec.behind_controller)

    def check_trusted(self, path: FieldPath, names: Sequence[str], behind: str) -> None:
        for i, ref in enumerate(names):
            if ref not in self.nodes.controllers:
                raise self.ctx.error(
                    (*path, "trusted_controllers", i),
                    f"undefined controller {ref!r}",
                    value=ref,
                    fix=choices_fix(
                        ref, self.nodes.controllers, what="define [controllers.<name>] or use one of"
                    ),
                )
        if names and behind != "trust_controller":
            raise self.ctx.error(
                (*path, "trusted_controllers"),
                'trusted_controllers only matter with behind_controller = "trust_controller"',
                value=list(names),
                fix='add behind_controller = "trust_controller", or remove trusted_controllers',
            )

    def controllers(
        self,
        root: _Table,
        sim: SimulationSpec,
        pki: PkiSpec,
        profiles: Mapping[str, TlsProfileSpec],
        trust: Mapping[str, TrustSpec],
    ) -> dict[str, ControllerSpec]:
        """Every ``[controllers.<name>]``, in dependency order (a controller after those it connects to)."""
        raw: dict[str, object] = {}
        for name, value in root.named_tables("controllers", "Local Controllers, e.g. [controllers.lc1]"):
            if not isinstance(value, dict):
                raise self.ctx.error(
                    ("controllers", name),
                    f"expected a table [controllers.{name}], got {type_name(value)}",
                    value=value,
                    fix="write [controllers.<name>] tables, e.g. [controllers.lc1]",
                )
            if name in self.nodes.csms:
                raise self.ctx.error(
                    ("controllers", name),
                    f"{name!r} is already the name of a CSMS",
                    value=name,
                    fix="give the controller another name (selectors must be unambiguous)",
                )
            raw[name] = value
        # names first, so an upstream may name a controller defined further down the file
        self.nodes.controllers = {name: ControllerSpec(name=name, host="", upstream=()) for name in raw}
        addresses = {(c.host.lower(), c.port): c.name for c in self.nodes.csms.values() if c.port != 0}
        out: dict[str, ControllerSpec] = {}
        for name, value in raw.items():
            t = _Table(self.ctx, ("controllers", name), value, CONTROLLER_KEYS, what=f"[controllers.{name}]")
            spec = self.one_controller(t, name, sim, pki, profiles, trust)
            _claim_address(
                t,
                addresses,
                name,
                spec.host,
                spec.port,
                "node",
                "give each CSMS and controller its own host or port",
            )
            out[name] = spec
        self.nodes.controllers = out
        order = self.controller_order(out)
        self.nodes.controllers = {name: out[name] for name in order}
        self.check_csms_references(self.nodes.csms)
        return self.nodes.controllers

    def one_controller(
        self,
        t: _Table,
        name: str,
        sim: SimulationSpec,
        pki: PkiSpec,
        profiles: Mapping[str, TlsProfileSpec],
        trust: Mapping[str, TrustSpec],
    ) -> ControllerSpec:
        host = t.string("host", f"{name}.evsim.test", max_len=253)
        if not _valid_host(host) or len(host) > MAX_COMMON_NAME:
            raise t.error(
                "host",
                f"not a valid host name (at most {MAX_COMMON_NAME} characters: it is the certificate CN)",
                value=host,
                fix="set host to a DNS name such as lc1.site.evsim.test",
            )
        profile, insecure = _listener_profile(t, ControllerSpec)
        t.require("upstream", 'add upstream = [{ csms = "main" }] (where the controller connects to)')
        upstream = self.endpoint_list(t, "upstream", profiles, trust, owner=name)
        behind = t.enum(
            "behind_controller", BEHIND_CONTROLLER_KINDS, default_of(ControllerSpec, "behind_controller")
        )
        trusted = t.string_list("trusted_controllers", (), nonempty=False, example='["lc2"]')
        self.check_trusted(t.path, trusted, behind)
        return ControllerSpec(
            name=name,
            host=host,
            port=t.integer(
                "port", default_of(ControllerSpec, "port") if sim.network == "memory" else 0, 0, 65535
            ),
            security_profile=profile,
            insecure_allow_plain_ws=insecure,
            tls_profile=t.reference(
                "tls_profile", "default", profiles, "TLS profile", "[tls.profiles.<name>]"
            ),
            trust=t.reference("trust", "default", trust, "trust store", "[tls.trust.<name>]"),
            certificate=self.certificate(t, pki),
            upstream=upstream,
            upstream_security_profile=t.profile_number(
                "upstream_security_profile", default_of(ControllerSpec, "upstream_security_profile")
            ),
            failover=t.enum("failover", FAILOVER_KINDS, default_of(ControllerSpec, "failover")),
            on_upstream_loss=t.enum(
                "on_upstream_loss", UPSTREAM_LOSS_KINDS, default_of(ControllerSpec, "on_upstream_loss")
            ),
            upstream_connect_attempts=t.integer(
                "upstream_connect_attempts",
                default_of(ControllerSpec, "upstream_connect_attempts"),
                1,
                MAX_NETWORK_ATTEMPTS,
            ),
            retry_backoff=self.backoff(t),
            behind_controller=behind,
            trusted_controllers=trusted,
            client_trust=_client_trust(t, trust, profile),
        )

    def endpoint_list(
        self,
        t: _Table,
        key: str,
        profiles: Mapping[str, TlsProfileSpec],
        trust: Mapping[str, TrustSpec],
        *,
        owner: str | None = None,
        max_len: int = 16,
    ) -> tuple[EndpointSpec, ...]:
        """An array of endpoint tables (``{ csms = "primary", priority = 1 }`` or ``{ controller = "lc1" }``).

        Args:
            t: the owning table.
            key: ``"endpoints"`` or ``"upstream"``.
            profiles: TLS profiles by name.
            trust: trust stores by name.
            owner: the controller whose upstream this is (may not name itself), or None.
            max_len: most endpoints allowed.

        Returns:
            The endpoints sorted by priority (ties: file order); a missing priority is the 1-based position.
        """
        example = '[{ csms = "primary", priority = 1 }, { csms = "secondary", priority = 2 }]'
        value = t._typed(
            key, lambda v: isinstance(v, list), "an array of endpoint tables", f"write {key} = {example}"
        )
        assert isinstance(value, list)
        if not value:
            raise t.error(key, "must not be empty", value=[], fix=f"write e.g. {key} = {example}")
        if len(value) > max_len:
            raise t.error(
                key,
                f"at most {max_len} endpoints",
                value=None,
                fix=f"keep at most {max_len}"
                + (
                    " (a station has the network-profile slots 0..3)"
                    if max_len == MAX_STATION_ENDPOINTS
                    else ""
                ),
            )
        out: list[EndpointSpec] = []
        priorities: dict[int, int] = {}
        for i, item in enumerate(value):
            e = _Table(
                self.ctx,
                t.at(key, i),
                item,
                ENDPOINT_KEYS,
                what=f"{key}[{i}] ({{ csms = ... }} or {{ controller = ... }})",
            )
            kinds = [k for k in ("csms", "controller") if e.has(k)]
            if len(kinds) != 1:
                raise self.ctx.error(
                    t.at(key, i),
                    "an endpoint names exactly one CSMS or one controller",
                    value=None,
                    fix='write { csms = "primary" } or { controller = "lc1" }',
                )
            kind: EndpointKind = "csms" if kinds[0] == "csms" else "controller"
            defined: Collection[str] = self.nodes.csms if kind == "csms" else self.nodes.controllers
            how = "[csms.<name>]" if kind == "csms" else "[controllers.<name>]"
            ref = e.reference(kind, "", defined, "CSMS" if kind == "csms" else "controller", how)
            if owner is not None and kind == "controller" and ref == owner:
                raise e.error(
                    "controller",
                    "a controller cannot connect to itself",
                    value=ref,
                    fix="name a CSMS or another controller",
                )
            if any(o.kind == kind and o.name == ref for o in out):
                raise e.error(
                    kind, f"{ref!r} is listed twice in {key}", value=ref, fix="list each endpoint once"
                )
            priority = e.integer("priority", i + 1, 0, 1000)
            if priority in priorities:
                raise e.error(
                    "priority",
                    f"the same priority as {key}[{priorities[priority]}]",
                    value=priority,
                    fix="give each endpoint its own priority (lower is tried first)",
                )
            priorities[priority] = i
            out.append(
                EndpointSpec(
                    kind=kind,
                    name=ref,
                    priority=priority,
                    trust=e.reference("trust", "", trust, "trust store", "[tls.trust.<name>]")
                    if e.has("trust")
                    else None,
                    tls_profile=e.reference(
                        "tls_profile", "", profiles, "TLS profile", "[tls.profiles.<name>]"
                    )
                    if e.has("tls_profile")
                    else None,
                    pins=self.endpoint_pins(e, owner),
                )
            )
        return tuple(sorted(out, key=lambda ep: ep.priority))

    def endpoint_pins(self, e: _Table, owner: str | None) -> str | None:
        """An endpoint's own ``pins`` (station endpoints only: a controller's upstream links have none)."""
        if not e.has("pins"):
            return None
        if owner is not None:
            raise e.error(
                "pins",
                "pins on a controller's upstream endpoints are not supported",
                value=e.data["pins"],
                fix="remove it (pins apply to station endpoints and station groups)",
            )
        return e.reference("pins", "", self._pin_sets, "pin set", "[tls.pins.<name>]")

    def station_endpoints(
        self, t: _Table, profiles: Mapping[str, TlsProfileSpec], trust: Mapping[str, TrustSpec]
    ) -> tuple[EndpointSpec, ...]:
        """A group's ``endpoints`` (empty when it uses the ``csms = "name"`` shorthand)."""
        if not t.has("endpoints"):
            return ()
        if t.has("csms"):
            raise t.error(
                "csms",
                "csms and endpoints are mutually exclusive (csms is the one-endpoint shorthand)",
                value=t.data["csms"],
                fix="remove csms, or list that CSMS in endpoints",
            )
        return self.endpoint_list(t, "endpoints", profiles, trust, max_len=MAX_STATION_ENDPOINTS)

    def resolve_csms(self, endpoint: EndpointSpec) -> str:
        """The CSMS an endpoint leads to: itself, or its controller's first upstream, recursively."""
        seen: set[str] = set()
        while endpoint.kind == "controller":
            assert endpoint.name not in seen  # controller_order refused cycles
            seen.add(endpoint.name)
            endpoint = self.nodes.controllers[endpoint.name].upstream[0]
        return endpoint.name

    def controller_order(self, controllers: Mapping[str, ControllerSpec]) -> list[str]:
        """Controllers in dependency order; a cycle in the chains is refused where it closes."""
        order: list[str] = []
        state: dict[str, str] = {}  # name -> "visiting" | "done"

        def visit(name: str, chain: list[str]) -> None:
            if state.get(name) == "done":
                return
            state[name] = "visiting"
            for i, ep in enumerate(controllers[name].upstream):
                if ep.kind != "controller":
                    continue
                if state.get(ep.name) == "visiting":
                    loop = " -> ".join([*chain[chain.index(ep.name) :], name, ep.name])
                    raise self.ctx.error(
                        ("controllers", name, "upstream", i, "controller"),
                        f"controller chain loops: {loop}",
                        value=ep.name,
                        fix="controller chains must end at a CSMS; remove one link of the loop",
                    )
                visit(ep.name, [*chain, name])
            state[name] = "done"
            order.append(name)

        for name in controllers:
            visit(name, [])
        return order


# ---------------------------------------------------------------- helpers


class _TimelineReader:
    """A ``[[timeline]]`` entry as a timeline action reads itself (:class:`evsim.world.actions.Reader`): the
    entry's typed getters and the scenario's names, every error located in the file."""

    def __init__(self, builder: _Builder, t: _Table, pki: PkiSpec, line: int | None) -> None:
        self._b = builder
        self._t = t
        self._pki = pki
        self._line = line

    @property
    def line(self) -> int | None:
        return self._line

    @property
    def default_validity(self) -> float:
        return self._pki.validity

    def has(self, key: str) -> bool:
        return self._t.has(key)

    def require(self, key: str, fix: str) -> None:
        self._t.require(key, fix)

    def error(self, key: str, message: str, *, value: object = None, fix: str = "") -> ConfigError:
        return self._t.error(key, message, value=value, fix=fix)

    def boolean(self, key: str, default: bool) -> bool:
        return self._t.boolean(key, default)

    def integer(self, key: str, default: int, lo: int, hi: int) -> int:
        return self._t.integer(key, default, lo, hi)

    def duration(self, key: str, default: float, *, positive: bool = False) -> float:
        return self._t.duration(key, default, positive=positive)

    def number(self, key: str, default: float, lo: float, hi: float) -> float:
        return self._t.number(key, default, minimum=lo, maximum=hi)

    def choice(self, key: str, allowed: Sequence[str], default: str) -> str:
        return self._t.enum(key, tuple(allowed), default)

    def string_list(
        self, key: str, default: tuple[str, ...], *, allowed: Collection[str], example: str
    ) -> tuple[str, ...]:
        return self._t.string_list(key, default, allowed=tuple(allowed), example=example)

    def target(self, kinds: Collection[str], *, key: str = "target") -> str:
        return self._b.target(self._t, kinds, key=key)

    def tls_csms(self, key: str = "target") -> str:
        return self._b.tls_csms(self._t, key)

    def tls_stations(self) -> str:
        return self._b.tls_stations(self._t)

    def between(self) -> tuple[str, str]:
        self._t.require("between", 'add between = ["fleet", "main"]')
        return self._b.between(self._t)

    def link_knobs(self) -> LinkKnobs:
        spec, given = self._b.link_policy(self._t, ("*", "*"))
        return LinkKnobs(
            latency=spec.latency if "latency" in given else None,
            jitter=spec.jitter if "jitter" in given else None,
            bandwidth=spec.bandwidth,
            stall=None if spec.stall is None else (spec.stall.every, spec.stall.duration),
            reset=None if spec.reset is None else spec.reset.every,
        )

    def root(self, default: str | None) -> str:
        return self._b.root_ref(self._t, self._pki, default)

    def key_reference(self) -> PinSpec:
        return self._b.key_reference(self._t, self._pki, self._b.nodes.csms, action="release_pin")

    def csms_of(self, stations: str) -> str:
        return self._b.nodes.group_of(stations).csms

    def check_free_slot(self, stations: str, to: str) -> None:
        self._b.check_free_slot(self._t, stations, to)

    def check_pinned(self, stations: str, key: PinSpec) -> None:
        self._b.check_pinned(self._t, stations, key)


def _client_trust(t: _Table, trust: Mapping[str, TrustSpec], security_profile: int) -> str | None:
    """A listener's ``client_trust``: a trust store of roots (``mode = "pki"``), profile 3 only."""
    if not t.has("client_trust"):
        return None
    name = t.reference("client_trust", "", trust, "trust store", "[tls.trust.<name>]")
    if security_profile != 3:
        raise t.error(
            "client_trust",
            f"client certificates are checked only with security profile 3 (got {security_profile})",
            value=name,
            fix="use security_profile = 3, or remove client_trust",
        )
    if trust[name].mode != "pki":
        raise t.error(
            "client_trust",
            f"trust store {name!r} has mode {trust[name].mode!r}; station certificates are checked against roots",
            value=name,
            fix='use a trust store with mode = "pki" (the default)',
        )
    return name


def _signing(t: _Table) -> SigningSpec:
    """A CSMS's ``signing`` table (how it signs station CSRs)."""
    c = t.sub_table("signing", SIGNING_KEYS, '{ max_concurrent = 8, validity = "365d" }')
    if c is None:
        return SigningSpec()
    return SigningSpec(
        max_concurrent=c.integer("max_concurrent", default_of(SigningSpec, "max_concurrent"), 1, 10_000),
        max_queued=c.integer("max_queued", default_of(SigningSpec, "max_queued"), 1, 10_000_000),
        validity=c.duration("validity", default_of(SigningSpec, "validity"), positive=True),
    )


def _station_certificates(t: _Table) -> StationCertificatesSpec:
    """A station group's ``certificates`` table (its certificate device model); the key size is checked by
    the station layer's rules."""
    c = t.sub_table("certificates", STATION_CERTIFICATE_KEYS, '{ renewal_threshold = "30d" }')
    if c is None:
        return StationCertificatesSpec()
    d = StationCertificatesSpec()
    spec = StationCertificatesSpec(
        key_type=c.enum("key_type", KEY_TYPES, d.key_type),
        key_size=c.optional_integer("key_size", 256, 8192),
        renewal_threshold=c.duration("renewal_threshold", d.renewal_threshold),
        sign_wait_minimum=c.duration(
            "sign_wait_minimum", d.sign_wait_minimum, positive=True, whole_seconds=True
        ),
        sign_repeat_times=c.integer("sign_repeat_times", d.sign_repeat_times, 0, 16),
        renewed_attempts=c.integer("renewed_attempts", d.renewed_attempts, 1, 100),
    )
    try:
        spec.settings("evsim")
    except ConfigError as exc:  # the station layer's own limits (key sizes, the longest waits)
        field = (exc.path or "").rsplit(".", 1)[-1].removesuffix("_s")
        raise c.error(field, exc.message, value=exc.value, fix=exc.fix or "see scenarios/README.md") from None
    return spec


def _profile_spec(
    name: str,
    versions: tuple[str, ...],
    suites: Mapping[str, tuple[str, ...]],
    timeout: float,
    fragment: int | None,
) -> TlsProfileSpec:
    """A profile whose enabled versions all have a suite list (the TLS layer's defaults fill the gaps)."""
    defaults = {"1.3": DEFAULT_TLS13_SUITES, "1.2": DEFAULT_TLS12_SUITES}
    full = dict(suites)
    for version in versions:
        if version in defaults and version not in full:
            full[version] = defaults[version]
    return TlsProfileSpec(
        name=name,
        versions=versions,
        cipher_suites=FrozenMap(sorted(full.items(), reverse=True)),
        handshake_timeout=timeout,
        max_send_fragment=fragment,
    )


def _check_id_pattern(ctx: _Context, path: FieldPath, pattern: str, count: int) -> None:
    """Check a station ``id_pattern``: only the field ``n``, a safe format spec, valid OCPP identities.

    Args:
        ctx: the load's context.
        path: where the pattern is.
        pattern: the pattern.
        count: stations in the group (a pattern without ``{n}`` is fine for one station).

    Raises:
        ConfigError: a field other than ``n``, attribute or index access, a conversion, nested or huge
            format specs, a spec that cannot format an integer, or ids that are not OCPP identities.
    """
    fix = _PATTERN_FIX
    try:
        pieces = list(string.Formatter().parse(pattern))
    except ValueError as exc:
        raise ctx.error(
            path, f"invalid format pattern: {exc}", value=pattern, fix=fix + "; write {{ for {"
        ) from None
    has_n = False
    for _literal, field, spec, conversion in pieces:
        if field is None:
            continue
        if field != "n" or conversion is not None:
            raise ctx.error(
                path, f"id_pattern may only use the field {{n}}, not {{{field}}}", value=pattern, fix=fix
            )
        if spec and (
            "{" in spec or "}" in spec or any(int(d) > MAX_IDENTITY_LENGTH for d in re.findall(r"\d+", spec))
        ):
            raise ctx.error(path, "format spec too wide or nested", value=pattern, fix=fix)
        try:
            format(1, spec or "")
        except ValueError as exc:
            raise ctx.error(path, f"bad format spec {spec!r} for n: {exc}", value=pattern, fix=fix) from None
        has_n = True
    if not has_n and count > 1:
        raise ctx.error(
            path,
            f"id_pattern has no {{n}}, so all {count} stations would get the same id",
            value=pattern,
            fix=fix,
        )
    for n in (1, count):
        sid = pattern.format(n=n)
        if not valid_identity(sid):
            raise ctx.error(path, _IDENTITY_RULE.format(sid=sid), value=pattern, fix=fix)


def _listener_profile(t: _Table, spec: type[CsmsSpec | ControllerSpec]) -> tuple[int, bool]:
    """A listener's ``security_profile`` and ``insecure_allow_plain_ws`` (profile 1 needs the opt-in); the
    defaults are ``spec``'s.

    Raises:
        ConfigError: profile 1 without ``insecure_allow_plain_ws = true``.
    """
    profile = t.profile_number("security_profile", default_of(spec, "security_profile"))
    insecure = t.boolean("insecure_allow_plain_ws", default_of(spec, "insecure_allow_plain_ws"))
    if profile == 1 and not insecure:
        raise t.error(
            "security_profile",
            "security profile 1 sends passwords over plain ws://",
            value=1,
            fix="add insecure_allow_plain_ws = true (trusted networks only, OCPP A00.FR.201) "
            "or use security_profile = 2",
        )
    return profile, insecure


def _claim_address(
    t: _Table, addresses: dict[tuple[str, int], str], name: str, host: str, port: int, what: str, fix: str
) -> None:
    """Record that ``name`` listens on ``host:port`` (port 0 picks a free one, so never clashes).

    Raises:
        ConfigError: another node already listens there.
    """
    if port == 0:
        return
    other = addresses.setdefault((host.lower(), port), name)
    if other != name:
        raise t.error("port", f"{what} {other!r} already listens on {host}:{port}", value=port, fix=fix)


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return True
    labels = host.rstrip(".").split(".")
    return len(host) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in labels)
