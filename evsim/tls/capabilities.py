"""What a simulated firmware reports about its TLS stack (``evsim tls capabilities``).

:class:`Capabilities` is a frozen snapshot of one :class:`~evsim.tls.config.TlsProfile` on this engine: what
the engine supports (every version it can offer, every suite of evsim's table it can negotiate, and the
count of its other suites, which the model does not name), then what the profile configures: the enabled
versions, the suites per version with their IANA and OpenSSL names, the strings a firmware reports
for them (libocpp's ``SupportedCiphers12`` is a colon-separated list of OpenSSL names,
``SupportedCiphers13`` of TLS 1.3 suite names), the key-exchange groups and signature schemes, OCSP
stapling, the record limits, and every knob's state from :data:`evsim.tls.knobs.KNOB_STATES` (the same
table validation uses).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from evsim.tls import _ossl
from evsim.tls.config import TlsProfile
from evsim.tls.context import engine_cipher_names, engine_versions
from evsim.tls.knobs import DEFAULT_GROUPS, KNOB_NOTES, KNOB_STATES, KnobState
from evsim.tls.suites import BY_IANA, BY_OPENSSL, SUITES


@attrs.frozen
class SuiteNames:
    """One suite as a firmware reports it.

    Attributes:
        iana: the IANA name.
        openssl: OpenSSL's name (the same for TLS 1.3).
    """

    iana: str
    openssl: str


@attrs.frozen
class EngineSuite:
    """One suite of evsim's table that this engine can negotiate (whether or not a profile configures it).

    Attributes:
        iana: the IANA name (what profiles use).
        openssl: OpenSSL's name.
        min_version: the oldest version it works in.
        security_level0: OpenSSL offers it only at security level 0 (the CCM_8 suites).
        note: where it comes from (``OCPP pair A``, ``SHIP``, ``legacy``...).
    """

    iana: str
    openssl: str
    min_version: str
    security_level0: bool
    note: str = ""


@attrs.frozen
class Knob:
    """One knob's state on this engine.

    Attributes:
        name: the field path in the model (``record.record_size_limit``).
        state: ``enforced``, ``partial`` or ``declared``.
        note: the limit (partial), why not (declared), or what it compiles to; may be empty.
    """

    name: str
    state: KnobState
    note: str = ""


@attrs.frozen
class Capabilities:
    """A TLS stack's capabilities, as a simulated firmware reports them.

    Attributes:
        engine: the OpenSSL version.
        versions: enabled versions, newest first (``("1.3", "1.2")``).
        suites: per version key (``"1.3"``, ``"1.2"``), the suites in priority order.
        groups: key-exchange groups in preference order.
        groups_default: True when the profile set none (``groups`` is then the engine's default list).
        signature_algorithms: the schemes (empty = the engine's default list).
        ocsp_stapling: whether the stack staples / checks OCSP (stapling is supported by the engine).
        record: the record knobs (``max_send_fragment``, ``max_fragment_length``, ``record_size_limit``,
            ``recv_buffer``; None = not set).
        knobs: every knob and its state.
        engine_versions: every version the engine can offer, newest first (TLS 1.0/1.1 only at security
            level 0, and only in profiles with ``insecure_legacy_versions``: OCPP forbids them).
        engine_suites: per version key, every suite of evsim's table (``evsim.tls.suites``) the engine can
            negotiate: what a profile may list.
        engine_other_suites: the engine's other suites (OpenSSL names: PSK, SRP, anonymous, ARIA,
            CAMELLIA...), which the model does not name, so no profile can configure them.
    """

    engine: str
    versions: tuple[str, ...]
    suites: tuple[tuple[str, tuple[SuiteNames, ...]], ...]
    groups: tuple[str, ...]
    groups_default: bool
    signature_algorithms: tuple[str, ...]
    ocsp_stapling: bool
    record: tuple[tuple[str, int | None], ...]
    knobs: tuple[Knob, ...]
    engine_versions: tuple[str, ...] = ()
    engine_suites: tuple[tuple[str, tuple[EngineSuite, ...]], ...] = ()
    engine_other_suites: tuple[str, ...] = ()

    @classmethod
    def of_profile(cls, profile: TlsProfile | None = None, *, ocsp_stapling: bool = True) -> Capabilities:
        """The capabilities of ``profile`` (default: ``TlsProfile()``) on this engine.

        Args:
            profile: the profile.
            ocsp_stapling: whether the node staples (server) or requests (client) OCSP responses.

        Returns:
            The snapshot.
        """
        p = profile if profile is not None else TlsProfile()
        versions = tuple(sorted(p.versions, reverse=True))
        keys = [k for k in ("1.3", "1.2") if any((v == "1.3") == (k == "1.3") for v in p.versions)]
        suites = tuple((k, tuple(SuiteNames(n, BY_IANA[n].openssl) for n in p.suites(k))) for k in keys)
        record = (
            ("max_send_fragment", p.max_send_fragment),
            ("max_fragment_length", p.max_fragment_length),
            ("record_size_limit", p.record_size_limit),
            ("recv_buffer", p.recv_buffer),
        )
        knobs = tuple(Knob(name, state, KNOB_NOTES.get(name, "")) for name, state in KNOB_STATES.items())
        offered = set(engine_cipher_names())
        engine_suites = tuple(
            (
                key,
                tuple(
                    EngineSuite(x.iana, x.openssl, x.min_version, x.seclevel0, x.note)
                    for x in SUITES
                    if x.version == key and x.openssl in offered
                ),
            )
            for key in ("1.3", "1.2")
        )
        return cls(
            engine=_ossl.engine_version(),
            versions=versions,
            suites=suites,
            groups=p.groups or DEFAULT_GROUPS,
            groups_default=not p.groups,
            signature_algorithms=p.signature_algorithms,
            ocsp_stapling=ocsp_stapling,
            record=record,
            knobs=knobs,
            engine_versions=engine_versions(),
            engine_suites=engine_suites,
            engine_other_suites=tuple(n for n in engine_cipher_names() if n not in BY_OPENSSL),
        )

    def suites_for(self, key: str) -> tuple[SuiteNames, ...]:
        """The suites configured with the ``key`` list (``"1.3"`` or ``"1.2"``), empty when disabled."""
        return dict(self.suites).get(key, ())

    @property
    def supported_ciphers12(self) -> str:
        """libocpp's ``SupportedCiphers12``: the TLS <= 1.2 suites, OpenSSL names, colon-separated."""
        return ":".join(s.openssl for s in self.suites_for("1.2"))

    @property
    def supported_ciphers13(self) -> str:
        """libocpp's ``SupportedCiphers13``: the TLS 1.3 suites, colon-separated."""
        return ":".join(s.iana for s in self.suites_for("1.3"))

    def knob_states(self) -> Mapping[str, KnobState]:
        """Knob name -> state."""
        return {k.name: k.state for k in self.knobs}

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``evsim tls capabilities --json``)."""
        return {
            "engine": self.engine,
            "versions": list(self.versions),
            "suites": {k: [{"iana": s.iana, "openssl": s.openssl} for s in v] for k, v in self.suites},
            "SupportedCiphers12": self.supported_ciphers12,
            "SupportedCiphers13": self.supported_ciphers13,
            "groups": list(self.groups),
            "groups_default": self.groups_default,
            "signature_algorithms": list(self.signature_algorithms),
            "ocsp_stapling": self.ocsp_stapling,
            "record": dict(self.record),
            "knobs": {k.name: {"state": k.state, "note": k.note} for k in self.knobs},
            "engine_versions": list(self.engine_versions),
            "engine_suites": {
                k: [
                    {
                        "iana": x.iana,
                        "openssl": x.openssl,
                        "min_version": x.min_version,
                        "security_level0": x.security_level0,
                        "note": x.note,
                        "configured": x.iana in self._configured(),
                    }
                    for x in v
                ]
                for k, v in self.engine_suites
            },
            "engine_other_suites": list(self.engine_other_suites),
        }

    def _configured(self) -> frozenset[str]:
        return frozenset(x.iana for _, suites in self.suites for x in suites)

    def render(self) -> str:
        """A human-readable report (``evsim tls capabilities``)."""
        lines = [f"engine: {self.engine}"]
        lines.append(
            "engine versions: "
            + ", ".join("TLS " + v for v in self.engine_versions)
            + (
                " (1.0/1.1: security level 0, insecure_legacy_versions; OCPP forbids them)"
                if set(self.engine_versions) & {"1.0", "1.1"}
                else ""
            )
        )
        configured = self._configured()
        lines.append("engine suites (every suite a profile may list; * = configured below):")
        for key, engine_suites in self.engine_suites:
            lines.append(f"  TLS {key}{' and older' if key == '1.2' else ''}:")
            for x in engine_suites:
                extra = [f"TLS {x.min_version}+"] if x.min_version != key else []
                extra += ["security level 0"] if x.security_level0 else []
                extra += [x.note] if x.note else []
                mark = "*" if x.iana in configured else " "
                lines.append(f"  {mark} {x.iana:<46} {x.openssl:<31} {', '.join(extra)}".rstrip())
        if self.engine_other_suites:
            lines.append(
                f"engine suites the model does not name (PSK, SRP, anonymous, ARIA, CAMELLIA...; not configurable): "
                f"{len(self.engine_other_suites)} (--json lists them)"
            )
        lines.append(f"versions: {', '.join('TLS ' + v for v in self.versions)}")
        for key, suites in self.suites:
            lines.append(
                f"configured suites TLS {key}{' and older' if key == '1.2' else ''} (IANA / OpenSSL):"
            )
            lines += [f"  {x.iana:<48} {x.openssl}" for x in suites]
        lines.append(f"SupportedCiphers12: {self.supported_ciphers12}")
        lines.append(f"SupportedCiphers13: {self.supported_ciphers13}")
        lines.append(
            f"groups: {', '.join(self.groups)}" + (" (engine default)" if self.groups_default else "")
        )
        lines.append(f"signature_algorithms: {', '.join(self.signature_algorithms) or '(engine default)'}")
        lines.append(f"ocsp_stapling: {'yes' if self.ocsp_stapling else 'no'}")
        lines.append("record: " + ", ".join(f"{k}={'-' if v is None else v}" for k, v in self.record))
        lines.append("knobs:")
        width = max(len(k.name) for k in self.knobs)
        lines += [f"  {k.name:<{width}}  {k.state:<8}  {k.note}".rstrip() for k in self.knobs]
        return "\n".join(lines)
