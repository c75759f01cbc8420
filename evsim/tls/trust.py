"""The TLS model: whom to trust (:class:`TrustStore`) and how revocation is checked (:class:`RevocationPolicy`).

Frozen attrs values, validated on construction (every error a :class:`~evsim.errors.ConfigError` with the
field path, the value and the fix), compiled into OpenSSL contexts by :mod:`evsim.tls.context` and the
verify callback of :mod:`evsim.tls.verify`.

Theory of operation. A trust store is a set of anchors plus the checks applied to a peer's certificate
beyond the chain: how the server name is matched (OCPP's CN rule, RFC 6125's SAN rule, or both), whether
wildcards are accepted, when validity times are checked (at the simulation's time, never the host's), how
deep a chain may be, and revocation (CRLs carried as data, OCSP stapling). The store's ``mode`` says what
replaces the chain check for self-signed peers: ``pki`` chains to the anchors; ``pinned_peers`` and
``tofu`` have no anchors and leave the decision to a :class:`~evsim.tls.peer.PeerPolicy`'s pins or pairing.
CRLs are data, so a refreshed CRL is a new store and a new context; connections already open keep the one
they were made with. ``from_toml`` takes anchors and CRLs by *name* and looks them up through a resolver
(files, a node's certificate store), so the same table works for files on disk and for a simulated PKI.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeAlias, cast

import attrs
from cryptography import x509

from evsim.errors import ConfigError, PkiError
from evsim.pki.keys import load_cert_file
from evsim.pki.revocation import load_crl
from evsim.tls.resolve import cert_tuple, resolve_named
from evsim.tls.revocation import CrlMode, OcspPolicy, OnUnknown
from evsim.toml_table import Table, choices_fix, rebased

HostnameCheck: TypeAlias = Literal["cn", "san", "san+cn", "off"]
WildcardPolicy: TypeAlias = Literal["deny", "allow"]
TimeCheck: TypeAlias = Literal["enforce", "off", "skip_until_clock_synced"]
TrustMode: TypeAlias = Literal["pki", "pinned_peers", "tofu"]

MAX_VERIFY_DEPTH = 100
"""OpenSSL's default verify depth (``X509_VERIFY_PARAM`` default)."""


def _crl_der(crls: tuple[x509.CertificateRevocationList, ...]) -> tuple[bytes, ...]:
    # cryptography's CRL objects are not hashable: compare and hash by DER
    from cryptography.hazmat.primitives.serialization import Encoding

    return tuple(c.public_bytes(Encoding.DER) for c in crls)


def _to_crls(value: Iterable[x509.CertificateRevocationList]) -> tuple[x509.CertificateRevocationList, ...]:
    return tuple(value)


CrlResolver: TypeAlias = Callable[[str], Sequence[x509.CertificateRevocationList]]
"""name -> CRLs (for ``revocation.crls`` in TOML)."""
CertResolver: TypeAlias = Callable[[str], Sequence[x509.Certificate]]
"""name -> certificates (for ``anchors`` in TOML: a file, an OCPP certificate type of a node's store...)."""


@attrs.frozen
class RevocationPolicy:
    """How a trust store checks revocation (``TrustStore.revocation``; compiled by ``evsim.tls.revocation``).

    Attributes:
        crl: ``"off"``, ``"leaf"`` (the peer's certificate against its issuer's CRL) or ``"chain"`` (every
            certificate below the anchor; needs every CA's CRL).
        crls: the CRLs (data: a refresh is a new value, hence a new trust store and a new context).
        ocsp: stapling: ``"off"``, ``"request"`` (soft-fail) or ``"require"`` (a client refuses a missing,
            unknown or revoked status). Checks the *server's* certificate: client side only.
        on_unknown: ``"fail"`` or ``"soft_fail"`` for an authentic ``unknown`` status.

    Raises:
        ConfigError: unknown modes, or CRL checking without any CRL.
    """

    crl: CrlMode = "off"
    crls: tuple[x509.CertificateRevocationList, ...] = attrs.field(
        default=(), converter=_to_crls, eq=_crl_der
    )
    ocsp: OcspPolicy = "off"
    on_unknown: OnUnknown = "fail"

    def __attrs_post_init__(self) -> None:
        for field, value, allowed in (
            ("crl", self.crl, ("off", "leaf", "chain")),
            ("ocsp", self.ocsp, ("off", "request", "require")),
            ("on_unknown", self.on_unknown, ("fail", "soft_fail")),
        ):
            if value not in allowed:
                raise ConfigError(
                    f"unknown revocation {field} policy",
                    path=f"revocation.{field}",
                    value=value,
                    fix=choices_fix(value, allowed),
                )
        if self.crl != "off" and not self.crls:
            raise ConfigError(
                f'revocation.crl = "{self.crl}" needs at least one CRL (OpenSSL would refuse every peer '
                'with "unable to get certificate CRL")',
                path="revocation.crls",
                value=[],
                fix="add the issuing CA's CRL (and, for chain, every CA's), or set crl = off",
            )

    @classmethod
    def from_toml(
        cls, table: Mapping[str, object], *, path: str, resolve_crls: CrlResolver | None = None
    ) -> RevocationPolicy:
        """Read ``{ crl = "leaf", crls = ["station-ca"], ocsp = "require", on_unknown = "fail" }``.

        Args:
            table: the parsed table.
            path: its field path.
            resolve_crls: name -> CRLs for ``crls`` (needed when ``crls`` is given).

        Returns:
            The policy.

        Raises:
            ConfigError: unknown keys, wrong types, bad values, a name the resolver does not know.
        """
        t = Table(table, path, ("crl", "crls", "ocsp", "on_unknown"))
        crls: list[x509.CertificateRevocationList] = []
        for i, name in enumerate(t.optional_string_list("crls") or ()):
            if resolve_crls is None:
                raise ConfigError(
                    "CRLs given but nothing resolves CRL names here",
                    path=f"{t.where('crls')}[{i}]",
                    value=name,
                )
            crls += resolve_named(resolve_crls, name, path=f"{t.where('crls')}[{i}]", what="CRL")
        try:
            return cls(
                cast(CrlMode, t.string("crl", "off")),
                tuple(crls),
                cast(OcspPolicy, t.string("ocsp", "off")),
                cast(OnUnknown, t.string("on_unknown", "fail")),
            )
        except ConfigError as exc:
            raise rebased(exc, path, {"revocation": ""}) from None


def _files_under(
    base_dir: str | Path, loader: Callable[[Path], Sequence[Any]]
) -> Callable[[str], Sequence[Any]]:
    base = Path(base_dir)

    def resolve(name: str) -> Sequence[Any]:
        return loader(base / name)

    return resolve


def _load_crl_file(path: Path) -> Sequence[x509.CertificateRevocationList]:
    return (load_crl(path.read_bytes(), source=str(path)),)


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
        time_check: ``"enforce"`` (validity checked at the simulation's time), ``"off"``, or
            ``"skip_until_clock_synced"`` (an RTC-less device after boot, cf. chrony's ``nocerttimecheck``:
            validity is not checked on connections made with ``clock_synced=False``, and is checked on the
            others; chains, names and signatures always are).
        insecure_skip_verify: accept *any* peer certificate (no chain, name or time check) - development
            only; anyone can impersonate the peer. Compiling such a store logs a warning; ``anchors`` may
            then be empty.
        mode: ``"pki"`` (chain to ``anchors``), ``"pinned_peers"`` (self-signed peers, SHIP style: the chain
            check is replaced by the pin / pairing decision of a :class:`~evsim.tls.peer.PeerPolicy`, which
            compiling then requires) or ``"tofu"`` (like ``pinned_peers``; the first peer's leaf key is
            pinned: needs a ``tofu`` pin set). Validity time and hostname are still checked as configured.
            ``anchors`` must be empty in the peer modes.
        revocation: CRL and OCSP-stapling checks (:class:`RevocationPolicy`). A CRL refresh is a new
            value, so a new trust store and a new context: open connections keep the old one.
        max_depth: the longest chain accepted below the leaf (``SSL_CTX_set_verify_depth``); None =
            OpenSSL's default (100).

    Raises:
        ConfigError: no anchors (pki), anchors or ``insecure_skip_verify`` in a peer mode, an unknown
            policy value, or a bad ``max_depth``.
    """

    name: str
    anchors: tuple[x509.Certificate, ...] = attrs.field(converter=cert_tuple)
    hostname: HostnameCheck = "san+cn"
    wildcards: WildcardPolicy = "deny"
    time_check: TimeCheck = "enforce"
    insecure_skip_verify: bool = False
    mode: TrustMode = "pki"
    # engine knobs
    revocation: RevocationPolicy = RevocationPolicy()
    max_depth: int | None = None

    def __attrs_post_init__(self) -> None:
        self._check_mode()
        self._check_engine_knobs()
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
            ("time_check", self.time_check, ("enforce", "off", "skip_until_clock_synced")),
        ):
            if value not in allowed:
                raise ConfigError(
                    f"unknown {field} policy",
                    path=f"trust.{self.name}.{field}",
                    value=value,
                    fix=f"use one of {', '.join(allowed)}",
                )

    def _check_engine_knobs(self) -> None:
        if not isinstance(self.revocation, RevocationPolicy):
            raise ConfigError(
                "revocation must be a RevocationPolicy",
                path=f"trust.{self.name}.revocation",
                value=self.revocation,
            )
        md = self.max_depth
        if md is not None and (
            isinstance(md, bool) or not isinstance(md, int) or not 0 <= md <= MAX_VERIFY_DEPTH
        ):
            raise ConfigError(
                f"max_depth must be an integer in 0..{MAX_VERIFY_DEPTH} (OpenSSL's default is {MAX_VERIFY_DEPTH})",
                path=f"trust.{self.name}.max_depth",
                value=md,
                fix="use e.g. 2 (root, one sub-CA, leaf), or omit it",
            )

    _TOML_KEYS = (
        "name",
        "anchors",
        "hostname",
        "wildcards",
        "time_check",
        "insecure_skip_verify",
        "revocation",
        "max_depth",
        "mode",
    )

    @classmethod
    def from_toml(
        cls,
        table: Mapping[str, object],
        *,
        path: str,
        resolve: CertResolver,
        resolve_crls: CrlResolver | None = None,
    ) -> TrustStore:
        """Build a trust store from a parsed TOML table; anchors and CRLs are *names* the resolvers look up.

        The table::

            name = "CSMSRootCertificate"        # default: the table's own name (last part of path)
            anchors = ["CSMSRootCertificate"]   # names for `resolve` (files, OCPP certificate types...)
            hostname = "san+cn"
            wildcards = "deny"
            time_check = "enforce"
            mode = "pki"                        # or pinned_peers / tofu (then no anchors)
            max_depth = 2
            revocation = { crl = "leaf", crls = ["csms-sub-ca"], ocsp = "require", on_unknown = "fail" }
            insecure_skip_verify = false

        Args:
            table: the table as ``tomllib`` returns it.
            path: its field path (``tls.trust.operator``), prefixed to every error.
            resolve: name -> certificates for ``anchors`` (a ``KeyError`` or ``PkiError`` becomes a
                ``ConfigError`` naming the entry).
            resolve_crls: name -> CRLs for ``revocation.crls``.

        Returns:
            The validated trust store.

        Raises:
            ConfigError: unknown keys, wrong types, unknown names, and every validation error of the class.
        """
        t = Table(table, path, cls._TOML_KEYS)
        name = t.string("name", path.rpartition(".")[2] or "trust")
        anchors: list[x509.Certificate] = []
        for i, ref in enumerate(t.optional_string_list("anchors") or ()):
            anchors += resolve_named(resolve, ref, path=f"{t.where('anchors')}[{i}]", what="anchor")
        revocation = RevocationPolicy()
        if t.has("revocation"):
            revocation = RevocationPolicy.from_toml(
                t.data["revocation"], path=t.where("revocation"), resolve_crls=resolve_crls
            )
        try:
            return cls(
                name,
                tuple(anchors),
                hostname=cast(HostnameCheck, t.string("hostname", "san+cn")),
                wildcards=cast(WildcardPolicy, t.string("wildcards", "deny")),
                time_check=cast(TimeCheck, t.string("time_check", "enforce")),
                insecure_skip_verify=t.boolean("insecure_skip_verify", False),
                revocation=revocation,
                max_depth=t.optional_integer("max_depth"),
                mode=cast(TrustMode, t.string("mode", "pki")),
            )
        except ConfigError as exc:
            raise rebased(exc, path, {f"trust.{name}": ""}) from None

    @classmethod
    def from_toml_files(cls, table: Mapping[str, object], *, path: str, base_dir: str | Path) -> TrustStore:
        """:meth:`from_toml` where ``anchors`` and ``revocation.crls`` are PEM/DER files under ``base_dir``.

        Args:
            table: the parsed table.
            path: its field path.
            base_dir: directory the file names are relative to.

        Returns:
            The validated trust store.

        Raises:
            ConfigError: as :meth:`from_toml`; a missing or corrupt file is named.
        """
        return cls.from_toml(
            table,
            path=path,
            resolve=_files_under(base_dir, load_cert_file),
            resolve_crls=_files_under(base_dir, _load_crl_file),
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
