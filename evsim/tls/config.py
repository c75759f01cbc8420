"""The TLS model: how to speak TLS (:class:`TlsProfile`) and who we are (:class:`Identity`).

Frozen attrs values, validated on construction; every error is a :class:`~evsim.errors.ConfigError`
with the field path, the value and the fix. They compile to OpenSSL contexts in ``evsim.tls.context``.
The full model (pins, pairing, revocation, sessions, groups...) is in ``shared/design/tls-model.md``; every
knob is a field with a default, so a value built with only the fields a caller cares about is complete.

* :class:`TlsProfile` - versions, cipher suites (IANA names), groups, signature algorithms, handshake
  timeout, record knobs, keylog, ALPN, a :class:`SessionPolicy`, and ``enforce`` (knobs that must be enforced).
* :class:`Identity` - our certificate chain and private key.
* Whom to trust (:class:`~evsim.tls.trust.TrustStore`, :class:`~evsim.tls.trust.RevocationPolicy`) is in
  :mod:`evsim.tls.trust`.

Theory of operation. The model checks everything OpenSSL would otherwise refuse late or accept silently:
versions must be contiguous and newest first (OpenSSL negotiates the newest version both sides enable, so a
list in another order would promise a priority it does not have), legacy versions below TLS 1.2 need an
explicit opt-in (OCPP A00.FR.313), each enabled version needs a usable cipher suite from the suite table
(:mod:`evsim.tls.suites`, IANA names translated to OpenSSL's), and engine knobs the engine cannot honour
are refused when listed in ``enforce`` (``evsim.tls.knobs.KNOB_STATES`` says which are enforced). Each value
has a ``from_toml(table, *, path, ...)`` named constructor (the scenario loader embeds these tables).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeAlias, cast

import attrs
from cryptography import x509

from evsim.errors import ConfigError, PkiError
from evsim.frozenmap import FrozenMap
from evsim.pki.ca import CertKey
from evsim.pki.keys import PrivateKey, check_key_strength, key_matches_cert, load_cert_file, load_key_file
from evsim.tls import _ossl
from evsim.tls.knobs import EC_GROUPS, GROUPS, SIGNATURE_SCHEMES, check_enforce
from evsim.tls.resolve import cert_tuple, resolve_named
from evsim.tls.suites import BY_IANA, BY_OPENSSL, DEFAULT_TLS12_SUITES, DEFAULT_TLS13_SUITES
from evsim.toml_table import Table, choices_fix, rebased

KNOWN_VERSIONS: tuple[str, ...] = ("1.0", "1.1", "1.2", "1.3")
"""Protocol versions the model knows, oldest first (holes are detected against this order)."""
OCPP_MIN_VERSION = "1.2"
"""OCPP 2.0.1 A00.FR.313/314: TLS v1.2 or above only."""
OCPP_TLS_VERSIONS: tuple[str, ...] = tuple(
    v for v in reversed(KNOWN_VERSIONS) if KNOWN_VERSIONS.index(v) >= KNOWN_VERSIONS.index(OCPP_MIN_VERSION)
)
"""The versions a profile may enable without ``insecure_legacy_versions``, newest first (``("1.3", "1.2")``)."""
LEGACY_TLS_VERSIONS: tuple[str, ...] = tuple(
    v for v in reversed(KNOWN_VERSIONS) if v not in OCPP_TLS_VERSIONS
)
"""The versions OCPP forbids (A00.FR.313), newest first: only a simulated legacy peer enables them."""
SUITE_KEYS: tuple[str, ...] = ("1.3", "1.2")
"""The keys of ``cipher_suites``: OpenSSL has one list for TLS 1.3 and one for TLS 1.2 and older."""

SuitePreference: TypeAlias = Literal["server", "client"]

MIN_FRAGMENT = 64
"""Smallest ``max_send_fragment`` accepted: RFC 8449 record_size_limit minimum."""
MAX_FRAGMENT = 16384
"""TLS plaintext record maximum (RFC 8446 §5.1, RFC 5246 §6.2.1)."""


def _vi(version: str) -> int:
    """Position of ``version`` in :data:`KNOWN_VERSIONS` (for ordering)."""
    return KNOWN_VERSIONS.index(version)


def _toml_list(values: Iterable[str]) -> str:
    """``["1.3", "1.2"]``: a list of strings as it is written in TOML."""
    return "[" + ", ".join(f'"{v}"' for v in values) + "]"


def _suite_key(version: str) -> str:
    """Which cipher list configures ``version``: OpenSSL has one list for TLS <= 1.2 and one for 1.3."""
    return "1.3" if version == "1.3" else "1.2"


SuiteMap: TypeAlias = FrozenMap[str, tuple[str, ...]]
"""``{"1.3": (IANA names...), "1.2": (...)}`` (order = priority): a :class:`~evsim.frozenmap.FrozenMap`."""


def _to_suite_map(value: Mapping[str, Iterable[str]] | Iterable[tuple[str, Iterable[str]]]) -> SuiteMap:
    """attrs converter of ``cipher_suites``: each list of names to a tuple, the table to a :data:`SuiteMap`.

    Raises:
        ConfigError: a version maps to one string instead of a list of names.
    """
    pairs = value.items() if isinstance(value, Mapping) else value
    items: dict[str, tuple[str, ...]] = {}
    for k, v in pairs:
        if isinstance(v, str):
            raise ConfigError(
                "cipher suites must be a list of names",
                path=f"cipher_suites.{k}",
                value=v,
                fix=f'write cipher_suites."{k}" = ["{v}"]',
            )
        items[str(k)] = tuple(v)
    return FrozenMap(items)


def _to_str_tuple(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    return tuple(value)


DEFAULT_SUITES: SuiteMap = FrozenMap({"1.3": DEFAULT_TLS13_SUITES, "1.2": DEFAULT_TLS12_SUITES})


# ---------------------------------------------------------------- engine knobs: sessions

Resumption: TypeAlias = Literal["off", "ids", "tickets", "both"]

DEFAULT_SESSION_LIFETIME_S = 7200.0
"""OpenSSL's default session timeout for TLS contexts (``SSL_CTX_get_timeout``, measured: 7200 s)."""
MAX_SESSION_LIFETIME_S = 604800.0
"""RFC 8446 §4.6.1: a ticket lifetime is at most seven days."""
DEFAULT_CACHE_ENTRIES = 20480
"""OpenSSL's ``SSL_SESSION_CACHE_MAX_SIZE_DEFAULT`` (1024 * 20)."""
MAX_FRAGMENT_LENGTHS: tuple[int, ...] = (512, 1024, 2048, 4096)
"""The values RFC 6066 §4 max_fragment_length can express."""
MAX_RECORD_SIZE_LIMIT = 16385
"""RFC 8449 §4: at most 2^14 + 1 (TLS 1.3 counts the inner content-type byte)."""


@attrs.frozen
class SessionPolicy:
    """Session resumption (``TlsProfile.session``).

    Attributes:
        resumption: ``"off"``, ``"ids"`` (session ids; TLS 1.3: stateful tickets naming a server cache
            entry), ``"tickets"`` (stateless tickets, no server cache) or ``"both"`` (the default).
        lifetime_s: how long a session may be resumed. The client's :class:`~evsim.tls.sessions.SessionStore`
            counts it in simulation time (trio's clock, virtual under ``MockClock``); OpenSSL's server cache
            and ticket lifetime count it on the machine's wall clock.
        cache_entries: bound of the client session store (the server cache keeps OpenSSL's default).

    Raises:
        ConfigError: an unknown mode, a lifetime outside 1 s..7 days, a non-positive bound.
    """

    resumption: Resumption = "both"
    lifetime_s: float = DEFAULT_SESSION_LIFETIME_S
    cache_entries: int = DEFAULT_CACHE_ENTRIES

    def __attrs_post_init__(self) -> None:
        modes = ("off", "ids", "tickets", "both")
        if self.resumption not in modes:
            raise ConfigError(
                "unknown session resumption mode",
                path="session.resumption",
                value=self.resumption,
                fix=choices_fix(self.resumption, modes),
            )
        lt = self.lifetime_s
        if isinstance(lt, bool) or not isinstance(lt, int | float) or not 1 <= lt <= MAX_SESSION_LIFETIME_S:
            raise ConfigError(
                f"session lifetime must be 1..{MAX_SESSION_LIFETIME_S:g} s (RFC 8446 §4.6.1: seven days at most)",
                path="session.lifetime_s",
                value=lt,
                fix="use e.g. 7200 (OpenSSL's default)",
            )
        ce = self.cache_entries
        if isinstance(ce, bool) or not isinstance(ce, int) or ce < 1:
            raise ConfigError(
                "cache_entries must be a positive integer",
                path="session.cache_entries",
                value=ce,
                fix=f"use e.g. {DEFAULT_CACHE_ENTRIES} (OpenSSL's default)",
            )

    @property
    def ids(self) -> bool:
        """Resumption by session id (server cache) is on."""
        return self.resumption in ("ids", "both")

    @property
    def tickets(self) -> bool:
        """Resumption by (stateless) ticket is on."""
        return self.resumption in ("tickets", "both")

    @classmethod
    def from_toml(cls, table: Mapping[str, object], *, path: str) -> SessionPolicy:
        """Read ``{ resumption = "both", lifetime_s = 7200, cache_entries = 20480 }``.

        Args:
            table: the parsed table.
            path: its field path (errors name ``<path>.lifetime_s``...).

        Returns:
            The policy.

        Raises:
            ConfigError: unknown keys, wrong types, bad values.
        """
        t = Table(table, path, ("resumption", "lifetime_s", "cache_entries"))
        try:
            return cls(
                cast(Resumption, t.string("resumption", "both")),
                t.number("lifetime_s", DEFAULT_SESSION_LIFETIME_S),
                DEFAULT_CACHE_ENTRIES
                if (entries := t.optional_integer("cache_entries")) is None
                else entries,
            )
        except ConfigError as exc:
            raise rebased(exc, path, {"session": ""}) from None


@attrs.frozen
class TlsProfile:
    """How to speak TLS.

    Attributes:
        versions: enabled versions (``"1.0"``..``"1.3"``), contiguous, newest first (a priority list, but
            OpenSSL always negotiates the newest version both sides enable, so another order is refused:
            ``versions.order`` is *partial*); ``("1.3",)`` disables 1.2 (anti-downgrade). Versions below 1.2
            need ``insecure_legacy_versions``.
        cipher_suites: ``{"1.3": [...], "1.2": [...]}`` IANA names in priority order. The ``"1.2"`` list
            also configures TLS 1.0/1.1 (OpenSSL has one list for <= 1.2).
        suite_preference: whose suite order wins when we are the server.
        handshake_timeout_s: the whole handshake must finish within this many seconds (trio time).
        max_send_fragment: write plaintext in records of at most this many bytes (enforced by the stream);
            None = OpenSSL's 16 KiB.
        keylog: append NSS key log lines (for Wireshark) to this file. Off by default; a loud warning when on.
        alpn: ALPN protocols to offer (client) or accept, in preference order (server).
        insecure_legacy_versions: allow TLS 1.0/1.1 in ``versions`` (OCPP forbids them, A00.FR.313): only for
            simulating a legacy or attacking peer.
        groups: key-exchange groups in preference order (:data:`evsim.tls.knobs.GROUPS`); empty = the
            engine's default list.
        signature_algorithms: signature schemes offered and accepted (RFC 8446 §4.2.3 names, e.g. SHIP's
            ``ecdsa_secp256r1_sha256``); empty = the engine's default list.
        alpn_require: close the connection (``alpn_refused``) when no ALPN protocol was negotiated.
        session: resumption policy (:class:`SessionPolicy`).
        max_fragment_length: RFC 6066 max_fragment_length (*declared*: recorded, not negotiated).
        record_size_limit: RFC 8449 record_size_limit (*declared*).
        recv_buffer: receive buffer size in bytes (*declared*).
        enforce: knobs that must be enforced (``evsim.tls.knobs.KNOB_STATES`` names, or their last part):
            a knob this engine only declares is refused here, never silently ignored.

    Raises:
        ConfigError: holes in versions, versions not newest first, unknown or misplaced suite names, a version without a usable
            suite, bad timeout / fragment / ALPN values, unknown groups or signature schemes, ``alpn_require``
            with nothing offered, out-of-range record knobs, ``enforce`` on a knob the engine cannot enforce.
    """

    versions: tuple[str, ...] = attrs.field(default=OCPP_TLS_VERSIONS, converter=_to_str_tuple)
    cipher_suites: SuiteMap = attrs.field(default=DEFAULT_SUITES, converter=_to_suite_map)
    suite_preference: SuitePreference = "server"
    handshake_timeout_s: float = 10.0
    max_send_fragment: int | None = None
    keylog: str | None = None
    alpn: tuple[str, ...] = attrs.field(default=(), converter=_to_str_tuple)
    insecure_legacy_versions: bool = False
    # engine knobs (``evsim.tls.knobs.KNOB_STATES`` says which the engine enforces)
    groups: tuple[str, ...] = attrs.field(default=(), converter=_to_str_tuple)
    signature_algorithms: tuple[str, ...] = attrs.field(default=(), converter=_to_str_tuple)
    alpn_require: bool = False
    session: SessionPolicy = SessionPolicy()
    max_fragment_length: int | None = None
    record_size_limit: int | None = None
    recv_buffer: int | None = None
    enforce: tuple[str, ...] = attrs.field(default=(), converter=_to_str_tuple)

    def __attrs_post_init__(self) -> None:
        self._check_versions()
        self._check_suites()
        self._check_engine_knobs()
        if self.suite_preference not in ("server", "client"):
            raise ConfigError(
                "unknown suite preference",
                path="suite_preference",
                value=self.suite_preference,
                fix='use "server" or "client"',
            )
        if not (isinstance(self.handshake_timeout_s, int | float) and self.handshake_timeout_s > 0):
            raise ConfigError(
                "handshake timeout must be a positive number of seconds",
                path="handshake_timeout_s",
                value=self.handshake_timeout_s,
                fix="use e.g. 10.0",
            )
        mf = self.max_send_fragment
        if mf is not None and (
            isinstance(mf, bool) or not isinstance(mf, int) or not MIN_FRAGMENT <= mf <= MAX_FRAGMENT
        ):
            raise ConfigError(
                f"max_send_fragment must be an integer in {MIN_FRAGMENT}..{MAX_FRAGMENT} "
                "(RFC 8449 minimum, RFC 8446 §5.1 maximum)",
                path="max_send_fragment",
                value=mf,
                fix="use e.g. 2048 (OCPP 2.1 §5.2 suggests 2 kB), or omit it",
            )
        for i, proto in enumerate(self.alpn):
            if not proto or len(proto.encode()) > 255 or not proto.isascii():
                raise ConfigError(
                    "ALPN protocol names are 1..255 ASCII bytes (RFC 7301 §3.1)",
                    path=f"alpn[{i}]",
                    value=proto,
                    fix='use a registered id such as "ntske/1" or "http/1.1"',
                )

    def _check_versions(self) -> None:
        if not self.versions:
            raise ConfigError(
                "no TLS version enabled", path="versions", value=list(self.versions), fix='use ["1.3", "1.2"]'
            )
        seen: set[str] = set()
        for i, v in enumerate(self.versions):
            if v not in KNOWN_VERSIONS:
                raise ConfigError(
                    "unknown TLS version",
                    path=f"versions[{i}]",
                    value=v,
                    fix=f'use one of {", ".join(KNOWN_VERSIONS[2:])} (strings, e.g. "1.3")',
                )
            if v in seen:
                raise ConfigError("duplicate TLS version", path=f"versions[{i}]", value=v, fix="list it once")
            seen.add(v)
            if _vi(v) < _vi(OCPP_MIN_VERSION) and not self.insecure_legacy_versions:
                raise ConfigError(
                    f"TLS {v} is forbidden by OCPP (A00.FR.313: TLS 1.2 or above)",
                    path=f"versions[{i}]",
                    value=v,
                    fix="remove it, or set insecure_legacy_versions = true to simulate a legacy peer",
                )
        idx = sorted(KNOWN_VERSIONS.index(v) for v in self.versions)
        if idx[-1] - idx[0] + 1 != len(idx):
            missing = [KNOWN_VERSIONS[i] for i in range(idx[0], idx[-1]) if i not in idx]
            raise ConfigError(
                "TLS versions must be contiguous (OpenSSL only takes a minimum and a maximum)",
                path="versions",
                value=list(self.versions),
                fix=f"add {', '.join(missing)} or drop the versions around the hole",
            )
        newest_first = tuple(sorted(self.versions, key=_vi, reverse=True))
        if self.versions != newest_first:
            fix = f"list them newest first ({_toml_list(newest_first)})"
            first = self.versions[0]
            if first != newest_first[0]:
                newer = ", ".join(f"TLS {v}" for v in newest_first if _vi(v) > _vi(first))
                capped = tuple(v for v in newest_first if _vi(v) <= _vi(first))
                fix += (
                    f", or, to get TLS {first} whenever the peer has it, drop the newer ones "
                    f"({_toml_list(capped)}; that disables {newer})"
                )
            # versions.order is partial (knobs.py): OpenSSL negotiates the newest version both sides enable,
            # and pyOpenSSL has no ClientHello callback that would let a server choose by its own order.
            raise ConfigError(
                "TLS versions are a priority list, but this engine can only honour newest first: OpenSSL "
                "always negotiates the newest version both sides enable (versions.order is partial)",
                path="versions",
                value=list(self.versions),
                fix=fix,
            )

    def _check_suites(self) -> None:
        for key, names in self.cipher_suites.items():
            if key not in SUITE_KEYS:
                raise ConfigError(
                    'cipher_suites keys are "1.3" (TLS 1.3 suites) and "1.2" (suites for TLS 1.2 and older)',
                    path=f"cipher_suites.{key}",
                    value=key,
                    fix='use "1.3" or "1.2"',
                )
            seen: set[str] = set()
            for i, name in enumerate(names):
                path = f"cipher_suites.{key}[{i}]"
                suite = BY_IANA.get(name)
                if suite is None:
                    by_ossl = BY_OPENSSL.get(name)
                    fix = (
                        f"use the IANA name {by_ossl.iana!r}"
                        if by_ossl is not None
                        else "use an IANA name from evsim.tls.suites.SUITES "
                        "(e.g. TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)"
                    )
                    raise ConfigError("unknown cipher suite", path=path, value=name, fix=fix)
                if suite.version != key:
                    other = "TLS 1.3" if suite.version == "1.3" else "TLS 1.2"
                    raise ConfigError(
                        f"{name} is a {other} suite",
                        path=path,
                        value=name,
                        fix=f'move it to cipher_suites."{suite.version}"',
                    )
                if name in seen:
                    raise ConfigError("duplicate cipher suite", path=path, value=name, fix="list it once")
                seen.add(name)
        for v in self.versions:
            key = _suite_key(v)
            names = self.cipher_suites.get(key, ())
            usable = [n for n in names if _vi(BY_IANA[n].min_version) <= _vi(v)]
            if not usable:
                fix = f'add suites to cipher_suites."{key}"'
                if names:
                    fix = (
                        f"TLS {v} cannot use {', '.join(names)}; "
                        "add e.g. TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA"
                    )
                raise ConfigError(
                    f"TLS {v} is enabled but has no usable cipher suite",
                    path=f'cipher_suites."{key}"',
                    value=list(names),
                    fix=fix,
                )

    def _check_engine_knobs(self) -> None:
        for field, names, table in (
            ("groups", self.groups, GROUPS),
            ("signature_algorithms", self.signature_algorithms, SIGNATURE_SCHEMES),
        ):
            for i, name in enumerate(names):
                if name not in table:
                    raise ConfigError(
                        f"unknown {field.replace('_', ' ').rstrip('s')}",
                        path=f"{field}[{i}]",
                        value=name,
                        fix=choices_fix(name, table),
                    )
                if name in names[:i]:
                    raise ConfigError(
                        f"duplicate {field} entry", path=f"{field}[{i}]", value=name, fix="list it once"
                    )
        if (
            self.groups
            and not _ossl.HAVE_GROUPS_LIST
            and (len(self.groups) > 1 or self.groups[0] not in EC_GROUPS)
        ):
            raise ConfigError(
                "this engine applies only the first group, and only an EC curve (groups is partial here)",
                path="groups",
                value=list(self.groups),
                fix=f"give one of {', '.join(sorted(EC_GROUPS))} alone",
            )
        if not isinstance(self.alpn_require, bool):
            raise ConfigError(
                "alpn_require must be true or false", path="alpn_require", value=self.alpn_require
            )
        if self.alpn_require and not self.alpn:
            raise ConfigError(
                "alpn_require with no ALPN protocol offered",
                path="alpn_require",
                value=True,
                fix='add alpn = ["…"]',
            )
        if not isinstance(self.session, SessionPolicy):
            raise ConfigError("session must be a SessionPolicy", path="session", value=self.session)
        for field, value, ok, fix in (
            (
                "max_fragment_length",
                self.max_fragment_length,
                lambda v: v in MAX_FRAGMENT_LENGTHS,
                "use 512, 1024, 2048 or 4096 (RFC 6066 §4)",
            ),
            (
                "record_size_limit",
                self.record_size_limit,
                lambda v: MIN_FRAGMENT <= v <= MAX_RECORD_SIZE_LIMIT,
                f"use {MIN_FRAGMENT}..{MAX_RECORD_SIZE_LIMIT} (RFC 8449 §4)",
            ),
            ("recv_buffer", self.recv_buffer, lambda v: v >= MIN_FRAGMENT, "use e.g. 16384"),
        ):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not ok(value)):
                raise ConfigError(f"bad {field}", path=f"record.{field}", value=value, fix=fix)
        object.__setattr__(self, "enforce", check_enforce(self.enforce))

    # ------------------------------------------------------------ TOML

    @classmethod
    def from_toml(cls, table: Mapping[str, object], *, path: str) -> TlsProfile:
        """Build a profile from a parsed TOML table.

        The table (every key optional)::

            versions = ["1.3", "1.2"]
            cipher_suites = { "1.3" = ["TLS_AES_128_GCM_SHA256"], "1.2" = ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"] }
            suite_preference = "server"
            groups = ["X25519", "secp256r1"]
            signature_algorithms = ["ecdsa_secp256r1_sha256"]
            alpn = ["ntske/1"]                  # or { offer = ["ntske/1"], require = true }
            handshake_timeout_s = 10
            session = { resumption = "both", lifetime_s = 7200, cache_entries = 20480 }
            record = { max_send_fragment = 2048, max_fragment_length = 2048, record_size_limit = 2048,
                       recv_buffer = 16384 }
            keylog = "tls.keylog"
            insecure_legacy_versions = false
            enforce = ["record.max_send_fragment"]

        Args:
            table: the table as ``tomllib`` returns it.
            path: its field path (``tls.profiles.strict``), prefixed to every error.

        Returns:
            The validated profile.

        Raises:
            ConfigError: unknown keys (with a did-you-mean), wrong types, and every validation error of the
                class; the path names the field (``tls.profiles.strict.cipher_suites.1.2[0]``).
        """
        t = Table(
            table,
            path,
            (
                "versions",
                "cipher_suites",
                "suite_preference",
                "groups",
                "signature_algorithms",
                "alpn",
                "handshake_timeout_s",
                "session",
                "record",
                "keylog",
                "insecure_legacy_versions",
                "enforce",
            ),
        )
        kwargs: dict[str, Any] = {}
        renames = {"max_send_fragment": "record.max_send_fragment"}
        for key in ("versions", "groups", "signature_algorithms", "enforce"):
            if (values := t.optional_string_list(key)) is not None:
                kwargs[key] = values
        if t.has("cipher_suites"):
            suites = t.table("cipher_suites", SUITE_KEYS)
            kwargs["cipher_suites"] = {k: suites.optional_string_list(k) for k in SUITE_KEYS if suites.has(k)}
        if t.has("suite_preference"):
            kwargs["suite_preference"] = t.enum("suite_preference", ("server", "client"), "server")
        if t.has("alpn") and isinstance(t.data["alpn"], Mapping):
            alpn = t.table("alpn", ("offer", "require"))
            kwargs["alpn"] = alpn.optional_string_list("offer") or ()
            kwargs["alpn_require"] = alpn.boolean("require", False)
            renames |= {"alpn_require": "alpn.require", "alpn": "alpn.offer"}
        elif (offer := t.optional_string_list("alpn")) is not None:
            kwargs["alpn"] = offer
        kwargs["handshake_timeout_s"] = t.number("handshake_timeout_s", 10.0)
        if t.has("session"):
            kwargs["session"] = SessionPolicy.from_toml(t.data["session"], path=t.where("session"))
        record = t.table(
            "record", ("max_send_fragment", "max_fragment_length", "record_size_limit", "recv_buffer")
        )
        for key in ("max_send_fragment", "max_fragment_length", "record_size_limit", "recv_buffer"):
            kwargs[key] = record.optional_integer(key)
        kwargs["keylog"] = t.optional_string("keylog", allow_empty=True) or None
        kwargs["insecure_legacy_versions"] = t.boolean("insecure_legacy_versions", False)
        try:
            return cls(**kwargs)
        except ConfigError as exc:
            raise rebased(exc, path, renames) from None

    # ------------------------------------------------------------ derived

    @property
    def min_version(self) -> str:
        """Oldest enabled version."""
        return min(self.versions, key=KNOWN_VERSIONS.index)

    @property
    def max_version(self) -> str:
        """Newest enabled version."""
        return max(self.versions, key=KNOWN_VERSIONS.index)

    def suites(self, version: str) -> tuple[str, ...]:
        """IANA suites configured for ``version`` (``"1.3"``, or ``"1.2"`` for <= 1.2), priority order."""
        return self.cipher_suites.get(_suite_key(version), ())

    def openssl_cipher_list(self) -> bytes:
        """The ``SSL_CTX_set_cipher_list`` string for TLS <= 1.2 (empty when only 1.3 is enabled)."""
        if self.max_version == "1.3" and self.min_version == "1.3":
            return b""
        return ":".join(BY_IANA[n].openssl for n in self.suites("1.2")).encode()

    def tls13_ciphersuites(self) -> bytes:
        """The ``SSL_CTX_set_ciphersuites`` string (empty when 1.3 is disabled)."""
        if "1.3" not in self.versions:
            return b""
        return ":".join(self.suites("1.3")).encode()


def _to_chain(value: Iterable[x509.Certificate]) -> tuple[x509.Certificate, ...]:
    return cert_tuple(value)


@attrs.frozen
class Identity:
    """Our certificate chain (leaf first, then intermediates) and the leaf's private key.

    Equality and hashing use the chain only (the key is checked to match the leaf).

    Raises:
        ConfigError: empty chain, key not matching the leaf, or a key OCPP forbids (RSA < 2048, EC < 224).
    """

    chain: tuple[x509.Certificate, ...] = attrs.field(converter=_to_chain)
    key: PrivateKey = attrs.field(eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if not self.chain:
            raise ConfigError(
                "an identity needs a certificate",
                path="identity.chain",
                value=[],
                fix="give the leaf certificate first, then its intermediates",
            )
        subject = self.chain[0].subject.rfc4514_string()
        try:
            check_key_strength(self.key, what=f"key of {subject}")
        except PkiError as exc:
            raise ConfigError(
                str(exc), path="identity.key", fix="issue a new certificate with a stronger key"
            ) from exc
        if not key_matches_cert(self.key, self.chain[0]):
            raise ConfigError(
                f"private key does not match the certificate {subject}",
                path="identity.key",
                fix="use the key the certificate was issued for (leaf certificate first in the chain)",
            )

    @property
    def leaf(self) -> x509.Certificate:
        """The end-entity certificate."""
        return self.chain[0]

    @classmethod
    def from_cert_key(cls, cert_key: CertKey) -> Identity:
        """An identity from a PKI :class:`~evsim.pki.CertKey` (leaf + intermediates + key)."""
        return cls(cert_key.chain, cert_key.key)

    @classmethod
    def from_toml(
        cls, table: Mapping[str, object], *, path: str, resolve: Callable[[str], CertKey]
    ) -> Identity:
        """Build an identity from ``{ certificate = "<name>" }``, the name looked up by ``resolve``.

        Args:
            table: the parsed table.
            path: its field path (``nodes.csms.identity``).
            resolve: name -> :class:`~evsim.pki.CertKey` (e.g. a node's certificate store by OCPP use).

        Returns:
            The identity.

        Raises:
            ConfigError: unknown keys, an unknown name, a key not matching its certificate, a weak key.
        """
        t = Table(table, path, ("certificate",))
        if not t.has("certificate"):
            raise ConfigError(
                "an identity needs a certificate", path=t.where("certificate"), fix='add certificate = "…"'
            )
        ref = t.string("certificate", "")
        cert_key = resolve_named(
            lambda n: [resolve(n)], ref, path=t.where("certificate"), what="certificate"
        )[0]
        try:
            return cls.from_cert_key(cert_key)
        except ConfigError as exc:
            raise rebased(exc, path, {"identity": ""}) from None

    @classmethod
    def from_toml_files(cls, table: Mapping[str, object], *, path: str, base_dir: str | Path) -> Identity:
        """Build an identity from ``{ cert = "server.crt", key = "server.key" }`` (files under ``base_dir``).

        Args:
            table: the parsed table.
            path: its field path.
            base_dir: directory the file names are relative to.

        Returns:
            The identity.

        Raises:
            ConfigError: unknown or missing keys, a missing or corrupt file (named), a key that does not
                match its certificate, a weak key.
        """
        t = Table(table, path, ("cert", "key"))
        for key in ("cert", "key"):
            if not t.has(key):
                raise ConfigError(
                    f"an identity needs {key}", path=t.where(key), fix=f'add {key} = "<PEM file>"'
                )
        base = Path(base_dir)
        try:
            return cls.from_files(base / t.string("cert", ""), base / t.string("key", ""))
        except ConfigError as exc:
            raise rebased(exc, path, {"identity": ""}) from None

    @classmethod
    def from_files(cls, cert_path: str | Path, key_path: str | Path) -> Identity:
        """Load a PEM chain file (leaf first) and a PEM key file.

        Raises:
            ConfigError: a file is missing or corrupt (names the file), or the key does not match.
        """
        try:
            chain = load_cert_file(cert_path)
        except PkiError as exc:
            raise ConfigError(str(exc), path="identity.chain", file=str(cert_path)) from exc
        try:
            key = load_key_file(key_path)
        except PkiError as exc:
            raise ConfigError(str(exc), path="identity.key", file=str(key_path)) from exc
        return cls(tuple(chain), key)
