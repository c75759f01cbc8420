"""Turns a PKI and a security profile into the TLS configurations that nodes use.

Kept apart from the nodes so the CLI, the demo and the scenario runner build links the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509

from evsim.errors import ConfigError, PkiError
from evsim.pki import DevPki
from evsim.pki.ca import CertKey
from evsim.pki.dev import CsmsPki
from evsim.pki.keys import load_cert_file
from evsim.tls.config import Identity, TlsProfile
from evsim.tls.context import ClientTls, ServerTls
from evsim.tls.trust import TrustStore

#: OCPP requires TLS 1.2 or above (A00.FR.313); evsim prefers 1.3.
DEFAULT_PROFILE = TlsProfile()


def load_anchors(path: str) -> tuple[x509.Certificate, ...]:
    """Trust anchors from a PEM file.

    Raises:
        ConfigError: the file is missing or holds no certificate (names the file).
    """
    try:
        return tuple(load_cert_file(path))
    except PkiError as exc:
        raise ConfigError(
            str(exc), path="--ca", value=path, fix="pass the CSMS root CA (PEM), e.g. certs/ca.crt"
        ) from exc


def csms_server_tls(
    pki: DevPki | CsmsPki,
    *,
    security_profile: int,
    keylog: str | None = None,
    profile: TlsProfile | None = None,
    server: CertKey | None = None,
) -> ServerTls | None:
    """The CSMS listener's TLS: its server certificate; profile 3 adds required client certificates.

    Args:
        pki: the PKI (server certificate, and the root(s) station certificates chain to): a full development
            PKI, or a CSMS's own ``ca.crt`` / ``server.crt`` / ``server.key``.
        security_profile: 1 (no TLS: returns None), 2 or 3.
        keylog: NSS key-log file (warns loudly when set).
        profile: TLS profile (default: TLS 1.3 and 1.2 with OCPP's suites).
        server: a different server certificate (e.g. a renewed or attacker one).
    """
    if security_profile == 1:
        return None
    prof = profile or DEFAULT_PROFILE
    if keylog:
        prof = _with_keylog(prof, keylog)
    cert = server or pki.server
    identity = Identity(chain=cert.chain, key=cert.key)
    if security_profile == 3:
        anchors = (pki.root.cert,) if isinstance(pki, DevPki) else pki.anchors
        trust = TrustStore("ChargingStationRoots", anchors, hostname="off")
        return ServerTls.build(prof, identity, trust=trust, client_auth="required")
    return ServerTls.build(prof, identity)


def station_client_tls(
    anchors: Sequence[x509.Certificate],
    *,
    identity: CertKey | None = None,
    keylog: str | None = None,
    allow_wildcards: bool = False,
    insecure_skip_verify: bool = False,
    profile: TlsProfile | None = None,
) -> ClientTls:
    """A station's TLS towards the CSMS: trust the CSMS root, check CN = FQDN, no wildcards (OCPP).

    Args:
        anchors: CSMSRootCertificate(s).
        identity: the station certificate for security profile 3, or None.
        keylog: NSS key-log file.
        allow_wildcards: ``SecurityCtrlr.AllowCSMSTLSWildcards`` (not OCPP-compliant).
        insecure_skip_verify: development only: accept any server certificate (no chain, name or time check).
        profile: TLS profile (default: TLS 1.3 and 1.2 with OCPP's suites).
    """
    prof = profile or DEFAULT_PROFILE
    if keylog:
        prof = _with_keylog(prof, keylog)
    if insecure_skip_verify:
        trust = TrustStore("INSECURE-any-server", tuple(anchors), insecure_skip_verify=True)
    else:
        trust = TrustStore(
            "CSMSRootCertificate", tuple(anchors), wildcards="allow" if allow_wildcards else "deny"
        )
    ident = Identity(chain=identity.chain, key=identity.key) if identity is not None else None
    return ClientTls.build(prof, trust, ident)


def _with_keylog(profile: TlsProfile, keylog: str) -> TlsProfile:
    import attrs

    return attrs.evolve(profile, keylog=keylog)
