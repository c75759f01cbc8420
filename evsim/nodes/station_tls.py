"""A station's TLS settings in its device model: what its firmware supports, what it is configured with, and how
the CSMS changes them for the next connection (sans-IO).

Theory of operation. A real firmware reports the TLS versions and cipher suites its stack has, as predefined
strings, and the versions and suites (per version, in priority order) it is configured to offer. The station
exposes them as variables of the ``InternalCtrlr`` component, where libocpp keeps ``SupportedCiphers12`` /
``SupportedCiphers13`` (so a CSMS written for libocpp stations finds them where it expects):

==========================  ==========  =============================================================
variable                    mutability  value
==========================  ==========  =============================================================
``AvailableTlsVersions``    ReadOnly    the versions this engine can offer for OCPP (TLS 1.2 or above,
                                        A00.FR.313), newest first: ``TLSv1.3,TLSv1.2``
``TlsVersions``             ReadWrite   the versions the next connection offers, a priority list
``AvailableCiphers12``      ReadOnly    the TLS 1.2 suites the engine can negotiate (OpenSSL names,
                                        ``:``-separated, like libocpp's list)
``AvailableCiphers13``      ReadOnly    the TLS 1.3 suites, likewise
``SupportedCiphers12``      ReadWrite   the TLS 1.2 suites configured, in priority order (libocpp)
``SupportedCiphers13``      ReadWrite   the TLS 1.3 suites configured (libocpp)
==========================  ==========  =============================================================

The suite lists take OpenSSL or IANA names. :class:`TlsSettings` validates a SetVariables value against the
installed :class:`~evsim.tls.config.TlsProfile` with the change applied (the same checks a scenario profile
gets) and against the engine (:func:`~evsim.tls.context.check_client_hello`: the station must be able to send
the ClientHello). Anything the engine cannot do is Rejected with a reason code and the reason
(``attributeStatusInfo``): an unknown name (``InvalidValue``), a version OCPP forbids or a list the engine
cannot honour in that order (``UnsupportedByEngine``: OpenSSL always negotiates the newest common version), a
version left without a suite, a suite this engine does not have or only has at security level 0 (CCM_8). An
accepted value is the pending :attr:`TlsSettings.profile`, used from the next connection on (the connection
in progress is not disturbed); GetVariables reports the pending values. Only the station's installed TLS
configuration follows these variables: a network slot with TLS settings of its own keeps them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import attrs

from evsim.errors import ConfigError
from evsim.tls.config import TlsProfile
from evsim.tls.context import check_client_hello, engine_cipher_names, engine_versions
from evsim.tls.suites import BY_IANA, BY_OPENSSL, SUITES, Suite

__all__ = ["COMPONENT", "NAMES", "TlsSettings"]

COMPONENT: Final = "InternalCtrlr"
_OCPP_VERSIONS: Final = ("1.3", "1.2")  # A00.FR.313: TLS 1.2 or above
_NAME_OF: Final = {"1.3": "TLSv1.3", "1.2": "TLSv1.2", "1.1": "TLSv1.1", "1.0": "TLSv1.0"}
_VERSION_OF: Final = {v: k for k, v in _NAME_OF.items()}
_MAX_VALUE: Final = 2500  # longer than every suite name of the table joined: refused without parsing
_READ_ONLY: Final = ("AvailableTlsVersions", "AvailableCiphers12", "AvailableCiphers13")
NAMES: Final = (*_READ_ONLY, "TlsVersions", "SupportedCiphers12", "SupportedCiphers13")
"""The variables of :data:`COMPONENT` this module answers."""


class _Refused(ValueError):
    def __init__(self, reason_code: str, message: str) -> None:
        super().__init__(message)
        self.reason_code = reason_code


def _engine_suites(key: str) -> tuple[Suite, ...]:
    offered = set(engine_cipher_names())
    return tuple(s for s in SUITES if s.version == key and s.openssl in offered and not s.seclevel0)


def _suite_list(suites: tuple[str, ...], key: str) -> str:
    return ":".join(BY_IANA[n].openssl for n in suites if BY_IANA[n].version == key)


class TlsSettings:
    """The TLS variables of one station (see the module docstring).

    Args:
        installed: the station's installed TLS profile now (None: no TLS configuration, profile 1 only).
        emit: records one event of the station (``emit(kind, **fields)``).
    """

    def __init__(self, installed: Callable[[], TlsProfile | None], emit: Callable[..., object]) -> None:
        self._installed = installed
        self._emit = emit
        self.profile: TlsProfile | None = None
        """The profile the CSMS set (None: the installed one); the next connection uses it."""

    def current(self) -> TlsProfile | None:
        """The profile of the next connection: the CSMS's, else the installed one."""
        return self.profile if self.profile is not None else self._installed()

    def variables(self) -> dict[str, str]:
        """The ``InternalCtrlr`` TLS variables by name, as GetVariables reports them."""
        out = {
            "AvailableTlsVersions": ",".join(_NAME_OF[v] for v in engine_versions() if v in _OCPP_VERSIONS),
            "AvailableCiphers12": ":".join(s.openssl for s in _engine_suites("1.2")),
            "AvailableCiphers13": ":".join(s.openssl for s in _engine_suites("1.3")),
        }
        profile = self.current()
        if profile is not None:
            out["TlsVersions"] = ",".join(_NAME_OF[v] for v in profile.versions)
            suites = dict(profile.cipher_suites)
            out["SupportedCiphers12"] = _suite_list(tuple(suites.get("1.2", ())), "1.2")
            out["SupportedCiphers13"] = _suite_list(tuple(suites.get("1.3", ())), "1.3")
        return out

    def set_variable(self, name: str, value: str) -> tuple[str, dict[str, str] | None]:
        """SetVariables of one of :meth:`variables`: ``(attributeStatus, attributeStatusInfo or None)``.

        Records ``tls_variable_set`` with the status (and the reason code when Rejected).
        """
        try:
            if name in _READ_ONLY:
                raise _Refused("ReadOnly", f"{name} is what the engine has; it cannot be set")
            profile = self.current()
            if profile is None:
                raise _Refused("NoTlsConfiguration", "the station has no TLS configuration (profile 1)")
            if len(value) > _MAX_VALUE:
                raise _Refused("InvalidValue", f"longer than {_MAX_VALUE} characters")
            new = self._changed(profile, name, value)
        except _Refused as exc:
            self._emit(
                "tls_variable_set",
                variable=name,
                value=value[:200],
                status="Rejected",
                reason=exc.reason_code,
            )
            return "Rejected", {"reasonCode": exc.reason_code, "additionalInfo": str(exc)[:512]}
        self.profile = new
        self._emit("tls_variable_set", variable=name, value=value[:200], status="Accepted")
        return "Accepted", None

    def _changed(self, profile: TlsProfile, name: str, value: str) -> TlsProfile:
        """``profile`` with ``name`` set to ``value``, checked by the profile's rules and the engine."""
        versions, suite_map = profile.versions, dict(profile.cipher_suites)
        if name == "TlsVersions":
            names = [x.strip() for x in value.split(",")]
            unknown = [x for x in names if x not in _VERSION_OF]
            if unknown or not names:
                raise _Refused(
                    "InvalidValue", f"unknown TLS versions {unknown}; use {', '.join(_VERSION_OF)}"
                )
            versions = tuple(_VERSION_OF[x] for x in names)
        else:
            key = "1.2" if name == "SupportedCiphers12" else "1.3"
            suites = []
            for x in (x.strip() for x in value.split(":") if x.strip()):
                suite = BY_OPENSSL.get(x) or BY_IANA.get(x)
                if suite is None or suite.version != key:
                    raise _Refused("InvalidValue", f"{x!r} is not a TLS {key} cipher suite")
                if suite not in _engine_suites(key):
                    raise _Refused("UnsupportedByEngine", f"this engine cannot negotiate {suite.openssl}")
                suites.append(suite.iana)
            suite_map[key] = tuple(suites)
        try:
            new = attrs.evolve(profile, versions=versions, cipher_suites=suite_map)
            check_client_hello(new)
        except ConfigError as exc:
            raise _Refused("UnsupportedByEngine", str(exc)) from None
        return new
