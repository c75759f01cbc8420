"""Read the TLS tables of a scenario: ``[tls.profiles]``, ``[tls.trust]``, ``[tls.pins]``, ``[tls.change]``
and the TLS knobs of nodes (a CSMS's ``ocsp_stapling`` / ``pins`` / ``change``, a station group's ``pins`` /
``change``, the keys a ``release_pin`` entry names).

Theory of operation. The TLS layer is the one place that knows what a valid profile, pin set or change
policy is, so this module never repeats its rules: it reads the scenario's spelling of a table (durations
with units, ``handshake_timeout`` instead of ``handshake_timeout_s``, pins that name a key by reference),
translates it into the table or object the TLS layer takes (:meth:`TlsProfile.from_toml
<evsim.tls.config.TlsProfile.from_toml>`, :class:`~evsim.tls.pins.PinSet`,
:class:`~evsim.tls.change.ChangePolicy`, :meth:`PeerPolicy.require <evsim.tls.peer.PeerPolicy.require>`)
and lets the TLS layer judge it. Keys are generated per run, so pins are checked with placeholder key
hashes (:func:`evsim.world.specs.placeholder_spki`): a pin names ``cert = "csms.main"`` (``key = "next"`` for
the key of a later rotation), ``root = "<name>"`` or a literal ``spki_sha256``. The TLS layer's errors carry
its own paths (``cipher_suites.1.3[0]``, ``record.max_send_fragment``); :func:`_tls_layer_path`,
:func:`_layer_path` and :func:`_profile_path` map them back to the scenario table's keys, so the error
points at the line the user wrote.

Besides what the TLS layer checks, a few combinations are refused here because a scenario could never
exercise them: pins or stapling on security profile 1 (no TLS), a ``cert`` pin whose target is not the
leaf, a ``root`` pin whose target is not the root, a trust store without a CA (``mode = "pinned_peers"`` or
``"tofu"``) whose stations have no pins to decide with.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import attrs

from evsim.errors import ConfigError
from evsim.frozenmap import FrozenMap
from evsim.scenario.model import (
    DEFAULT_START,
    ChangeSpec,
    CsmsSpec,
    PinSetSpec,
    PinSpec,
    PkiSpec,
    StationGroupSpec,
    TlsProfileSpec,
    TrustSpec,
    default_of,
)
from evsim.scenario.reader import ScenarioTable, SectionReader
from evsim.scenario.vocabulary import (
    CHANGE_KEYS,
    CRL_MODES,
    CSMS_KEYS,
    HOSTNAME_CHECKS,
    KEY_NAMES,
    MAX_DEPTH,
    MAX_KEY_INDEX,
    OCSP_POLICIES,
    ON_UNKNOWN,
    PIN_KEYS,
    PIN_SOURCES,
    PINSET_KEYS,
    PROFILE_KEYS,
    RECORD_KEYS,
    RESUMPTIONS,
    REVOCATION_KEYS,
    SCENARIO_TLS_VERSIONS,
    SESSION_KEYS,
    SUITE_PREFERENCES,
    TIME_CHECKS,
    TRUST_KEYS,
    TRUST_MODES,
    WILDCARD_POLICIES,
)
from evsim.tls import change as change_layer
from evsim.tls import config as tls_config
from evsim.tls import pins as pins_layer
from evsim.tls.config import MAX_FRAGMENT, MIN_FRAGMENT, TlsProfile
from evsim.tls.peer import PeerPolicy
from evsim.tls.suites import DEFAULT_TLS12_SUITES, DEFAULT_TLS13_SUITES
from evsim.toml_table import FieldPath, choices_fix, format_path, type_name
from evsim.world.pki import STATION_CA
from evsim.world.specs import layer_change_policy, layer_pin_set, placeholder_spki


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


_PIN_EXAMPLE = '{ target = "leaf", cert = "csms.main" }'


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


def _layer_path(path: str) -> FieldPath:
    """``pins[1].spki_sha256`` (a TLS-layer path) as this loader's parts."""
    parts: list[str | int] = []
    for piece in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        parts.append(int(piece[1:-1]) if piece.startswith("[") else piece)
    return tuple(parts)


class TlsReader(SectionReader):
    """The section reader of the TLS model (see the module doc)."""

    # ------------------------------------------------------------ [tls.profiles.<name>] and [tls.trust.<name>]

    def tls_profiles(self, tls: ScenarioTable | None) -> dict[str, TlsProfileSpec]:
        """Every ``[tls.profiles.<name>]``, plus ``default`` (TLS 1.3 and 1.2 with the TLS layer's default
        suites). The basic fields are checked by the TLS layer's rules (:func:`validate_tls_profile`) before
        the engine knobs are read (:meth:`profile_engine_knobs`).
        """
        profiles = {"default": _profile_spec("default", SCENARIO_TLS_VERSIONS, {}, 10.0, None)}
        if tls is None:
            return profiles
        for name, value in tls.named_tables("profiles", "TLS profiles, e.g. [tls.profiles.strict]"):
            path = tls.at("profiles", name)
            t = ScenarioTable(self.ctx, path, value, PROFILE_KEYS, what=f"[tls.profiles.{name}]")
            versions = t.string_list("versions", SCENARIO_TLS_VERSIONS, example='["1.3", "1.2"]')
            suites: dict[str, tuple[str, ...]] = {}
            if t.has("cipher_suites"):
                s = ScenarioTable(
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

    def trust_stores(self, tls: ScenarioTable | None, pki: PkiSpec) -> dict[str, TrustSpec]:
        """Every ``[tls.trust.<name>]``, plus ``default`` (the root ``root`` and the default checks). Each
        root a store lists must be defined in ``[pki.roots]``.
        """
        stores = {"default": TrustSpec(name="default")}
        if tls is None:
            return stores
        for name, value in tls.named_tables("trust", "trust stores, e.g. [tls.trust.operator]"):
            t = ScenarioTable(self.ctx, tls.at("trust", name), value, TRUST_KEYS, what=f"[tls.trust.{name}]")
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

    # ------------------------------------------------------------ [tls.profiles.<name>] engine knobs

    def profile_engine_knobs(self, t: ScenarioTable, spec: TlsProfileSpec) -> TlsProfileSpec:
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

    def trust_model(self, t: ScenarioTable, spec: TrustSpec) -> TrustSpec:
        """A trust store's ``mode`` and ``time_check``, then its revocation. A store without a CA
        (``pinned_peers``, ``tofu``) may not list roots, since the TLS layer refuses anchors there; its default
        ``roots`` is dropped.
        """
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

    def trust_revocation(self, t: ScenarioTable, spec: TrustSpec) -> TrustSpec:
        """A trust store's ``revocation`` and ``max_depth``. Revocation is checked against a CA, so it is
        refused in the modes that have none.
        """
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

    def ocsp_stapling(self, t: ScenarioTable, security_profile: int) -> bool:
        """A CSMS's ``ocsp_stapling``: the staple travels in the TLS handshake, so profile 1 cannot have one."""
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
        self, tls: ScenarioTable | None, pki: PkiSpec, csms: Mapping[str, CsmsSpec]
    ) -> dict[str, PinSetSpec]:
        """Every ``[tls.pins.<name>]``, built by the TLS layer (:func:`~evsim.world.specs.layer_pin_set`) with
        placeholder key hashes so that its rules apply here. An error about a pin's key hash is reported at
        the key the user wrote (``cert``, ``root`` or ``spki_sha256``).
        """
        self._pin_sets = {}
        if tls is None:
            return self._pin_sets
        for name, value in tls.named_tables("pins", "pin sets, e.g. [tls.pins.csms_leaf]"):
            t = ScenarioTable(self.ctx, tls.at("pins", name), value, PINSET_KEYS, what=f"[tls.pins.{name}]")
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
                    where = (
                        *where[:2],
                        "cert"
                        if pin.csms
                        else "root"
                        if pin.root
                        else "intermediate"
                        if pin.intermediate
                        else "spki_sha256",
                    )
                raise self.ctx.error((*t.path, *where), exc.message, value=None, fix=exc.fix) from None
            self._pin_sets[name] = spec
        return self._pin_sets

    def pin(
        self, t: ScenarioTable, i: int, item: object, pki: PkiSpec, csms: Mapping[str, CsmsSpec]
    ) -> PinSpec:
        """One pin of a set: target, state, the key it names (:meth:`key_reference`) and an optional expiry.

        A ``cert`` pin names a CSMS's own key, which is only ever the leaf of its chain, and a ``root`` pin a
        scenario root, which only ever is the root: any other target would never match, so it is refused.
        """
        p = ScenarioTable(self.ctx, t.at("pins", i), item, PIN_KEYS, what=_PIN_EXAMPLE)
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
        if source.intermediate is not None and target not in ("intermediate", "any"):
            raise p.error(
                "target",
                "an intermediate key is only ever an intermediate of the chain "
                f"(target {target!r} never matches)",
                value=target,
                fix='use target = "intermediate" (or "any")',
            )
        if source.root is not None and target not in ("root", "any"):
            raise p.error(
                "target",
                "scenario roots issue CSMS certificates directly, so a root key is only ever the root of the "
                f"chain (target {target!r} never matches)",
                value=target,
                fix='use target = "root" (or "any"); for an intermediate, name it with intermediate = "<name>"',
            )
        not_after: float | None = None
        if p.has("not_after"):
            not_after = p.duration("not_after", 0.0, positive=True)
        return attrs.evolve(source, target=target, state=state, not_after=not_after)

    def key_reference(
        self, p: ScenarioTable, pki: PkiSpec, csms: Mapping[str, CsmsSpec], *, action: str | None
    ) -> PinSpec:
        """The key a pin (or a ``release_pin`` event) names: exactly one of cert (+ key), root, spki_sha256."""
        given = [k for k in PIN_SOURCES if p.has(k)]
        if len(given) != 1:
            raise self.ctx.error(
                p.at(given[1]) if len(given) > 1 else p.path,
                "name the key with exactly one of cert, root, intermediate, spki_sha256"
                + (f" (got {', '.join(given)})" if given else ""),
                fix='e.g. cert = "csms.main" (its key at the start; key = "next" for the key it rotates to), '
                'root = "root", intermediate = "<name>", or spki_sha256 = "<64 hex digits>"',
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
        if given[0] == "intermediate":
            known = [*pki.intermediates, STATION_CA]
            return PinSpec(
                target="intermediate",
                intermediate=p.reference(
                    "intermediate", "", known, "intermediate CA", "[pki.intermediates.<name>], or station-ca"
                ),
            )
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

    def change_policies(self, tls: ScenarioTable | None) -> dict[str, ChangeSpec]:
        """Every ``[tls.change.<name>]``: what a station does when its peer's key changes, or its certificate
        changes with the same key.
        """
        self._change = {}
        if tls is None:
            return self._change
        for name, value in tls.named_tables("change", "change policies, e.g. [tls.change.strict]"):
            t = ScenarioTable(
                self.ctx, tls.at("change", name), value, CHANGE_KEYS, what=f"[tls.change.{name}]"
            )
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

    # ------------------------------------------------------------ [csms.<name>] client_trust

    def csms_client_trust(
        self, root: ScenarioTable, csms: dict[str, CsmsSpec], trust: Mapping[str, TrustSpec]
    ) -> dict[str, CsmsSpec]:
        """A CSMS's ``client_trust`` (read after the trust stores)."""
        tables = root.data.get("csms")
        assert isinstance(tables, dict)  # self.csms() checked it
        for name, spec in list(csms.items()):
            t = ScenarioTable(self.ctx, ("csms", name), tables[name], CSMS_KEYS)
            client_trust = client_trust_of(t, trust, spec.security_profile)
            if client_trust is not None:
                csms[name] = attrs.evolve(spec, client_trust=client_trust)
        self.nodes.csms = csms
        return csms

    # ------------------------------------------------------------ [csms.<name>] pins / change

    def csms_peer_policy(self, root: ScenarioTable, csms: dict[str, CsmsSpec]) -> dict[str, CsmsSpec]:
        """A CSMS's ``pins`` / ``change`` (read after the pin sets, which may name CSMS keys): applied to the
        certificates of stations (security profile 3)."""
        tables = root.data.get("csms")
        assert isinstance(tables, dict)  # self.csms() checked it
        for name, spec in list(csms.items()):
            t = ScenarioTable(self.ctx, ("csms", name), tables[name], CSMS_KEYS)
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

    # ------------------------------------------------------------ [stations.<group>] pins / change

    def group_peer_policy(
        self, t: ScenarioTable, group: StationGroupSpec, trust: Mapping[str, TrustSpec]
    ) -> StationGroupSpec:
        """A station group's ``pins`` / ``change``, which need TLS (profile 2 or 3).

        A trust store without a CA leaves every decision to the pins, so the TLS layer's
        :meth:`PeerPolicy.require <evsim.tls.peer.PeerPolicy.require>` checks that the group's pins can make
        it (enforced pins, and ``tofu`` for a ``tofu`` store); the group's endpoints are checked the same way.
        """
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
        self,
        t: ScenarioTable,
        group: StationGroupSpec,
        group_pins: str | None,
        trust: Mapping[str, TrustSpec],
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

    def check_pinned(self, t: ScenarioTable, target: str, ref: PinSpec) -> None:
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
                fix="name the key as one of its pins does (cert and key, root, intermediate, or spki_sha256)",
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


def client_trust_of(t: ScenarioTable, trust: Mapping[str, TrustSpec], security_profile: int) -> str | None:
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
