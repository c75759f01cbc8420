"""Cipher suites: canonical IANA names, the OpenSSL names they compile to, and what they need.

Scenarios and profiles speak IANA names (RFC 8446 / IANA TLS Cipher Suites registry); OpenSSL's
``SSL_CTX_set_cipher_list`` wants its own names for TLS <= 1.2, while TLS 1.3 suites have the same name in
both worlds and are set with ``SSL_CTX_set_ciphersuites``. OCPP 2.0.1 A00.FR.318/319 name four TLS 1.2
suites (see ``protocol-digest.md`` §2.1); SHIP uses the CCM_8 and CBC-SHA256 ECDSA suites (§8).

``min_version`` is the oldest protocol version a suite can be negotiated in: AEAD and SHA-256/384 suites
are TLS 1.2-only, the CBC-SHA suites go back to TLS 1.0 (used only by legacy/attack profiles).

``seclevel0``: OpenSSL 3+/4 classes the CCM_8 suites (64-bit tag) below security level 1, so they only
negotiate when *both* ends run at ``@SECLEVEL=0`` (checked with OpenSSL 4.0.3; see also
openssl/openssl#20115). A context configured with such a suite is compiled at level 0, which also lifts
OpenSSL's minimum peer-key sizes - evsim still refuses weak keys of its own identities (OCPP rules).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal, TypeAlias

import attrs

SuiteVersion: TypeAlias = Literal["1.2", "1.3"]


@attrs.frozen
class Suite:
    """One cipher suite.

    Attributes:
        iana: the IANA name (``TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256``).
        openssl: OpenSSL's name (``ECDHE-ECDSA-AES128-GCM-SHA256``; same as IANA for TLS 1.3).
        version: ``"1.3"`` for TLS 1.3 suites, ``"1.2"`` for suites configured with the <= 1.2 list.
        min_version: oldest TLS version it works in (``"1.0"``, ``"1.2"`` or ``"1.3"``).
        kx: key exchange (``ECDHE``, ``DHE``, ``RSA``; ``any`` for TLS 1.3).
        auth: certificate type it needs (``ECDSA``, ``RSA``; ``any`` for TLS 1.3).
        note: where it comes from (OCPP, SHIP, ...).
    """

    iana: str
    openssl: str
    version: SuiteVersion
    min_version: str
    kx: str
    auth: str
    note: str = ""
    seclevel0: bool = False


def _s12(iana: str, openssl: str, min_version: str = "1.2", note: str = "") -> Suite:
    body = iana.removeprefix("TLS_")
    kx_auth = body.split("_WITH_")[0]
    kx, _, auth = kx_auth.partition("_")
    return Suite(iana, openssl, "1.2", min_version, kx, auth or "RSA", note, seclevel0="CCM_8" in iana)


def _s13(iana: str, note: str = "") -> Suite:
    return Suite(iana, iana, "1.3", "1.3", "any", "any", note, seclevel0="CCM_8" in iana)


SUITES: tuple[Suite, ...] = (
    # TLS 1.3 (RFC 8446 §B.4)
    _s13("TLS_AES_256_GCM_SHA384"),
    _s13("TLS_AES_128_GCM_SHA256"),
    _s13("TLS_CHACHA20_POLY1305_SHA256"),
    _s13("TLS_AES_128_CCM_SHA256"),
    _s13("TLS_AES_128_CCM_8_SHA256"),
    # OCPP 2.0.1 A00.FR.318/319: pair A (ECDSA certificate) and pair B (RSA certificate, RSA key transport)
    _s12("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "ECDHE-ECDSA-AES128-GCM-SHA256", note="OCPP pair A"),
    _s12("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "ECDHE-ECDSA-AES256-GCM-SHA384", note="OCPP pair A"),
    _s12("TLS_RSA_WITH_AES_128_GCM_SHA256", "AES128-GCM-SHA256", note="OCPP pair B"),
    _s12("TLS_RSA_WITH_AES_256_GCM_SHA384", "AES256-GCM-SHA384", note="OCPP pair B"),
    # common forward-secret AEAD suites
    _s12("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "ECDHE-RSA-AES128-GCM-SHA256"),
    _s12("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", "ECDHE-RSA-AES256-GCM-SHA384"),
    _s12("TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305"),
    _s12("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", "ECDHE-RSA-CHACHA20-POLY1305"),
    _s12("TLS_DHE_RSA_WITH_AES_128_GCM_SHA256", "DHE-RSA-AES128-GCM-SHA256"),
    _s12("TLS_DHE_RSA_WITH_AES_256_GCM_SHA384", "DHE-RSA-AES256-GCM-SHA384"),
    # SHIP (EEBus) and other CCM / CBC-SHA256 suites
    _s12("TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8", "ECDHE-ECDSA-AES128-CCM8", note="SHIP"),
    _s12("TLS_ECDHE_ECDSA_WITH_AES_256_CCM_8", "ECDHE-ECDSA-AES256-CCM8"),
    _s12("TLS_ECDHE_ECDSA_WITH_AES_128_CCM", "ECDHE-ECDSA-AES128-CCM"),
    _s12("TLS_ECDHE_ECDSA_WITH_AES_256_CCM", "ECDHE-ECDSA-AES256-CCM"),
    _s12("TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256", "ECDHE-ECDSA-AES128-SHA256", note="SHIP"),
    _s12("TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384", "ECDHE-ECDSA-AES256-SHA384"),
    _s12("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256", "ECDHE-RSA-AES128-SHA256"),
    _s12("TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384", "ECDHE-RSA-AES256-SHA384"),
    _s12("TLS_RSA_WITH_AES_128_CBC_SHA256", "AES128-SHA256"),
    _s12("TLS_RSA_WITH_AES_256_CBC_SHA256", "AES256-SHA256"),
    # legacy CBC-SHA suites (TLS 1.0+): only for legacy/attack profiles
    _s12("TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", "ECDHE-ECDSA-AES128-SHA", "1.0", "legacy"),
    _s12("TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", "ECDHE-ECDSA-AES256-SHA", "1.0", "legacy"),
    _s12("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", "ECDHE-RSA-AES128-SHA", "1.0", "legacy"),
    _s12("TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", "ECDHE-RSA-AES256-SHA", "1.0", "legacy"),
    _s12("TLS_RSA_WITH_AES_128_CBC_SHA", "AES128-SHA", "1.0", "legacy"),
    _s12("TLS_RSA_WITH_AES_256_CBC_SHA", "AES256-SHA", "1.0", "legacy"),
)

BY_IANA: Mapping[str, Suite] = MappingProxyType({s.iana: s for s in SUITES})
BY_OPENSSL: Mapping[str, Suite] = MappingProxyType({s.openssl: s for s in SUITES})

OCPP_TLS12_SUITES: tuple[str, ...] = (
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
)
"""The four suites a CSMS SHALL support (OCPP 2.0.1 A00.FR.318)."""

DEFAULT_TLS13_SUITES: tuple[str, ...] = (
    "TLS_AES_256_GCM_SHA384",
    "TLS_AES_128_GCM_SHA256",
    "TLS_CHACHA20_POLY1305_SHA256",
)
"""OCPP names no TLS 1.3 suite; these are OpenSSL's defaults (libocpp uses the two AES-GCM ones)."""

DEFAULT_TLS12_SUITES: tuple[str, ...] = (
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
)
"""The four OCPP suites, forward-secret first, plus ECDHE-RSA-GCM so an RSA server certificate gets ECDHE."""


def iana_name(openssl_name: str) -> str:
    """The IANA name of an OpenSSL cipher name (TLS 1.3 names map to themselves; unknown names too)."""
    suite = BY_OPENSSL.get(openssl_name)
    return suite.iana if suite is not None else openssl_name


def openssl_name(iana: str) -> str:
    """The OpenSSL name of an IANA suite name.

    Raises:
        KeyError: the suite is not in :data:`SUITES`.
    """
    return BY_IANA[iana].openssl
