"""The TLS model (first slice): how to speak TLS, whom to trust, who we are.

Frozen attrs values, validated on construction; every error is a :class:`~evsim.errors.ConfigError`
with the field path, the value and the fix. They compile to OpenSSL contexts in ``evsim.tls.context``.
The full model (pins, pairing, revocation, sessions, groups...) is in ``shared/design/tls-model.md``; new
knobs are added as fields with defaults, so existing call sites keep working.

* :class:`TlsProfile` - versions, cipher suites (IANA names), handshake timeout, record size, keylog, ALPN.
* :class:`TrustStore` - trust anchors plus the hostname / wildcard / validity-time policy.
* :class:`Identity` - our certificate chain and private key.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Literal, TypeAlias

import attrs
from cryptography import x509

from evsim.errors import ConfigError, PkiError
from evsim.pki.ca import CertKey
from evsim.pki.keys import PrivateKey, check_key_strength, key_matches_cert, load_cert_file, load_key_file
from evsim.tls.suites import BY_IANA, BY_OPENSSL, DEFAULT_TLS12_SUITES, DEFAULT_TLS13_SUITES

KNOWN_VERSIONS: tuple[str, ...] = ("1.0", "1.1", "1.2", "1.3")
"""Protocol versions the model knows, oldest first (holes are detected against this order)."""
OCPP_MIN_VERSION = "1.2"
"""OCPP 2.0.1 A00.FR.313/314: TLS v1.2 or above only."""

HostnameCheck: TypeAlias = Literal["cn", "san", "san+cn", "off"]
WildcardPolicy: TypeAlias = Literal["deny", "allow"]
TimeCheck: TypeAlias = Literal["enforce", "off"]
TrustMode: TypeAlias = Literal["pki", "pinned_peers", "tofu"]
SuitePreference: TypeAlias = Literal["server", "client"]

MIN_FRAGMENT = 64
"""Smallest ``max_send_fragment`` accepted: RFC 8449 record_size_limit minimum."""
MAX_FRAGMENT = 16384
"""TLS plaintext record maximum (RFC 8446 §5.1, RFC 5246 §6.2.1)."""


def _vi(version: str) -> int:
    """Position of ``version`` in :data:`KNOWN_VERSIONS` (for ordering)."""
    return KNOWN_VERSIONS.index(version)


def _suite_key(version: str) -> str:
    """Which cipher list configures ``version``: OpenSSL has one list for TLS <= 1.2 and one for 1.3."""
    return "1.3" if version == "1.3" else "1.2"


class SuiteMap(Mapping[str, tuple[str, ...]]):
    """An immutable, hashable ``{"1.3": (IANA names...), "1.2": (...)}`` mapping (order = priority)."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, Iterable[str]] | Iterable[tuple[str, Iterable[str]]] = ()) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        self._items: dict[str, tuple[str, ...]] = {}
        for k, v in pairs:
            if isinstance(v, str):
                raise ConfigError(
                    "cipher suites must be a list of names",
                    path=f"cipher_suites.{k}",
                    value=v,
                    fix=f'write cipher_suites."{k}" = ["{v}"]',
                )
            self._items[str(k)] = tuple(v)

    def __getitem__(self, key: str) -> tuple[str, ...]:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(tuple(self._items.items()))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SuiteMap):
            return self._items == other._items
        if isinstance(other, Mapping):
            return dict(self._items) == {k: tuple(v) for k, v in other.items()}
        return NotImplemented

    def __repr__(self) -> str:
        return f"SuiteMap({self._items!r})"


def _to_suite_map(value: Mapping[str, Iterable[str]] | SuiteMap) -> SuiteMap:
    return value if isinstance(value, SuiteMap) else SuiteMap(value)


def _to_str_tuple(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    return tuple(value)


DEFAULT_SUITES = SuiteMap({"1.3": DEFAULT_TLS13_SUITES, "1.2": DEFAULT_TLS12_SUITES})


@attrs.frozen
class TlsProfile:
    """How to speak TLS.

    Attributes:
        versions: enabled versions (``"1.0"``..``"1.3"``), contiguous; ``("1.3",)`` disables 1.2
            (anti-downgrade). Versions below 1.2 need ``insecure_legacy_versions``.
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

    Raises:
        ConfigError: holes in versions, unknown or misplaced suite names, a version without a usable
            suite, bad timeout / fragment / ALPN values.
    """

    versions: tuple[str, ...] = attrs.field(default=("1.3", "1.2"), converter=_to_str_tuple)
    cipher_suites: SuiteMap = attrs.field(default=DEFAULT_SUITES, converter=_to_suite_map)
    suite_preference: SuitePreference = "server"
    handshake_timeout_s: float = 10.0
    max_send_fragment: int | None = None
    keylog: str | None = None
    alpn: tuple[str, ...] = attrs.field(default=(), converter=_to_str_tuple)
    insecure_legacy_versions: bool = False

    def __attrs_post_init__(self) -> None:
        self._check_versions()
        self._check_suites()
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

    def _check_suites(self) -> None:
        for key, names in self.cipher_suites.items():
            if key not in ("1.2", "1.3"):
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


def _to_cert_tuple(value: Iterable[x509.Certificate]) -> tuple[x509.Certificate, ...]:
    if isinstance(value, x509.Certificate):
        return (value,)
    return tuple(value)


@attrs.frozen
class TrustStore:
    """A named group of trust anchors and the checks applied to a peer's certificate.

    Attributes:
        name: a label for logs and capabilities (``"CSMSRootCertificate"``).
        anchors: trusted root (or intermediate) certificates.
        hostname: how the client checks the server name: ``"cn"`` (OCPP A00.FR.309: CN = FQDN),
            ``"san"`` (RFC 6125), ``"san+cn"`` (both: CN must match, and so must the SAN when there is one;
            the default, so a certificate satisfies OCPP and RFC 6125 clients alike), or ``"off"``.
            For an IP-literal server name: the SAN iPAddress (``san``, ``san+cn``) or the CN text (``cn``).
        wildcards: ``"deny"`` (OCPP default: a wildcard certificate is refused with
            ``cert_invalid:wildcard``) or ``"allow"`` (``SecurityCtrlr.AllowCSMSTLSWildcards``).
        time_check: ``"enforce"`` (validity checked at the simulation's time) or ``"off"``.
        insecure_skip_verify: accept *any* peer certificate (no chain, name or time check) - development
            only; anyone can impersonate the peer. Compiling such a store logs a warning; ``anchors`` may
            then be empty.
        mode: ``"pki"`` (chain to ``anchors``), ``"pinned_peers"`` (self-signed peers, SHIP style: the chain
            check is replaced by the pin / pairing decision of a :class:`~evsim.tls.peer.PeerPolicy`, which
            compiling then requires) or ``"tofu"`` (like ``pinned_peers``; the first peer's leaf key is
            pinned: needs a ``tofu`` pin set). Validity time and hostname are still checked as configured.
            ``anchors`` must be empty in the peer modes.

    Raises:
        ConfigError: no anchors (pki), anchors or ``insecure_skip_verify`` in a peer mode, or an unknown
            policy value.
    """

    name: str
    anchors: tuple[x509.Certificate, ...] = attrs.field(converter=_to_cert_tuple)
    hostname: HostnameCheck = "san+cn"
    wildcards: WildcardPolicy = "deny"
    time_check: TimeCheck = "enforce"
    insecure_skip_verify: bool = False
    mode: TrustMode = "pki"

    def __attrs_post_init__(self) -> None:
        self._check_mode()
        if not self.anchors and not self.insecure_skip_verify and self.mode == "pki":
            raise ConfigError(
                "a trust store needs at least one anchor certificate",
                path=f"trust.{self.name}.anchors",
                value=[],
                fix="add the root CA certificate (e.g. certs/ca.crt)",
            )
        for field, value, allowed in (
            ("hostname", self.hostname, ("cn", "san", "san+cn", "off")),
            ("wildcards", self.wildcards, ("deny", "allow")),
            ("time_check", self.time_check, ("enforce", "off")),
        ):
            if value not in allowed:
                raise ConfigError(
                    f"unknown {field} policy",
                    path=f"trust.{self.name}.{field}",
                    value=value,
                    fix=f"use one of {', '.join(allowed)}",
                )

    def _check_mode(self) -> None:
        if self.mode not in ("pki", "pinned_peers", "tofu"):
            raise ConfigError(
                "unknown trust mode",
                path=f"trust.{self.name}.mode",
                value=self.mode,
                fix="use pki, pinned_peers or tofu",
            )
        if self.mode == "pki":
            return
        if self.anchors:
            raise ConfigError(
                f"a {self.mode} trust store does not use anchors (peers are self-signed and pinned)",
                path=f"trust.{self.name}.anchors",
                value=len(self.anchors),
                fix='remove the anchors, or use mode = "pki" (pins then apply on top of the CA check)',
            )
        if self.insecure_skip_verify:
            raise ConfigError(
                f"insecure_skip_verify contradicts mode {self.mode!r}",
                path=f"trust.{self.name}.insecure_skip_verify",
                value=True,
                fix="drop insecure_skip_verify: the pin / pairing decision replaces the chain check",
            )

    @property
    def peer_mode(self) -> bool:
        """True for ``pinned_peers`` and ``tofu``: self-signed peers, decided by a peer policy."""
        return self.mode != "pki"

    @classmethod
    def from_files(
        cls,
        name: str,
        paths: Sequence[str | Path],
        *,
        hostname: HostnameCheck = "san+cn",
        wildcards: WildcardPolicy = "deny",
        time_check: TimeCheck = "enforce",
    ) -> TrustStore:
        """Load anchors from PEM files.

        Args:
            name: the store's name.
            paths: PEM files (each may hold several certificates).
            hostname: see the class.
            wildcards: see the class.
            time_check: see the class.

        Raises:
            ConfigError: a file is missing or corrupt (names the file), or a bad policy.
        """
        anchors: list[x509.Certificate] = []
        for p in paths:
            try:
                anchors += load_cert_file(p)
            except PkiError as exc:
                raise ConfigError(str(exc), path=f"trust.{name}.anchors", file=str(p)) from exc
        return cls(name, tuple(anchors), hostname=hostname, wildcards=wildcards, time_check=time_check)


def _to_chain(value: Iterable[x509.Certificate]) -> tuple[x509.Certificate, ...]:
    return _to_cert_tuple(value)


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
