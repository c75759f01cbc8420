"""Which OCPP requirement or RFC section governs what an event reports: a small table for the narrative.

The keys are event reasons (``cert_invalid:unknown_ca``), security event types (``InvalidTLSVersion``) and
event kinds (``reconnect_wait``). Each entry names the OCPP 2.0.1 requirement (Part 2 functional
requirement ids such as ``A00.FR.310``, Part 4 OCPP-J sections) or the RFC section, and explains the rule in
a few words. Where the standard has no numbered requirement the entry names the section or the concept
instead; evsim behaviours that no standard asks for say so.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class Reference:
    """Where a behaviour is specified.

    Attributes:
        source: the requirement or section (``OCPP 2.0.1 Part 2 A00.FR.310``, ``RFC 8446 §6.2``...).
        rule: what it says, in a few words.
    """

    source: str
    rule: str

    def as_json(self) -> dict[str, str]:
        return {"source": self.source, "rule": self.rule}


_PATH = Reference(
    "OCPP 2.0.1 Part 2 A00.FR.308 / A00.FR.310-311; RFC 5280 §6",
    "the station verifies the CSMS certification path; an invalid one raises InvalidCsmsCertificate and the "
    "connection is terminated",
)
_VALIDITY = Reference(
    "OCPP 2.0.1 Part 2 A00.FR.308 / A00.FR.310; RFC 5280 §4.1.2.5 and §6.1.3",
    "a certificate is valid only between notBefore and notAfter, judged by the verifier's own clock",
)
_ALERT = Reference(
    "RFC 8446 §6.2 (error alerts)",
    "the side that found the fault sends a fatal alert naming it and closes; the peer only learns the alert",
)
_BACKOFF = Reference(
    "OCPP 2.0.1 Part 4 (OCPP-J) §5.3; OCPPCommCtrlr.RetryBackOffWaitMinimum / RetryBackOffRandomRange / "
    "RetryBackOffRepeatTimes",
    "reconnect after WaitMinimum plus a random share of RandomRange, doubling after each failure at most "
    "RepeatTimes times; back to WaitMinimum after a successful connection",
)
_OFFLINE = Reference(
    "OCPP 2.0.1 Part 2 E04 / E11 / E12 (offline transactions), A04.FR.02 (security events)",
    "while offline the station queues TransactionEvents (sent later with offline = true) and critical "
    "security events, and delivers them once connected again",
)
_CLIENT_CERT = Reference(
    "OCPP 2.0.1 Part 2 A00.FR.403 / A00.FR.407-408 (security profile 3)",
    "the CSMS verifies the station's client certificate and terminates the connection when it is invalid, "
    "logging InvalidChargingStationCertificate",
)
_REVOCATION = Reference(
    "OCPP 2.0.1 Part 2 A00.FR.701-707; RFC 5280 §6.3 (CRL), RFC 6960 (OCSP)",
    "a revoked certificate is refused; CSMS certificates are revoked by short validity or CRL/OCSP, station "
    "certificates by the CSMS's online check",
)
_TLS_VERSION = Reference(
    "OCPP 2.0.1 Part 2 A00.FR.313-316; RFC 8446 §4.2.1 and §4.1.3",
    "only TLS 1.2 or above; with no common version the server aborts with a protocol_version alert (RFC 8446 "
    "§4.2.1) and the downgrade protection of §4.1.3 keeps an attacker from forcing an older one; a station "
    "that detects it raises InvalidTLSVersion",
)
_PINNING = Reference(
    "not an OCPP 2.0.1 requirement (OCPP 2.1 lets a network slot pin the CSMS root); the idea of RFC 7469",
    "a pinned key that changes without notice is refused; an announced change promotes the pending pin",
)
_SECURITY_EVENT = Reference(
    "OCPP 2.0.1 Part 2 A04 (security event notification)",
    "critical security events are sent to the CSMS with SecurityEventNotification, queued while offline",
)
_CERT_MGMT = Reference(
    "OCPP 2.0.1 Part 2 M04 (DeleteCertificate) / M05 (InstallCertificate)",
    "the CSMS installs (M05) and deletes (M04) the station's trusted certificates over OCPP; deleting the "
    "station's own certificate is not allowed (M04.FR.06)",
)
_RENEWAL = Reference(
    "OCPP 2.0.1 Part 2 A02 / A03 (certificate update)",
    "the station makes a key pair and a CSR (SignCertificate), the CSMS returns the signed chain "
    "(CertificateSigned) and the station reconnects with it",
)
_FAILOVER = Reference(
    "OCPP 2.0.1 Part 2 B10 (migrate to new CSMS, NetworkConfigurationPriority)",
    "after NetworkProfileConnectionAttempts failures the station tries the next network connection profile",
)
_FIRMWARE = Reference(
    "OCPP 2.0.1 Part 2 L01 (secure firmware update)",
    "the station downloads the image over HTTPS, checks the signing certificate and the signature, installs and "
    "reports FirmwareStatusNotification; a bad signature raises InvalidFirmwareSignature",
)
_NTS = Reference(
    "RFC 8915 (Network Time Security); OCPP 2.0.1 Part 2 §1.3 (clock needed to validate certificates)",
    "a station with a wrong clock cannot validate certificates until its clock is set from an authenticated "
    "time source",
)
_CLOCK = Reference(
    "OCPP 2.0.1 ClockCtrlr.TimeAdjustmentReportingThreshold",
    "a clock change above the threshold raises the SettingSystemTime security event",
)
_BOOT = Reference(
    "OCPP 2.0.1 Part 2 B01 (cold boot), Part 4 (OCPP-J) §3.1",
    "the station opens its WebSocket (wss:// with TLS) and sends BootNotification; Accepted starts heartbeats",
)
_UPSTREAM = Reference(
    "OCPP 2.0.1 Part 4 (OCPP-J) §6.2-6.3 (Local Controller)",
    "a Local Controller opens one upstream WebSocket per connected station; when one is lost it closes the "
    "station's socket, unless it can answer the station itself and forward transaction messages later "
    "(errata)",
)
_WS_CLOSED = Reference(
    "RFC 6455 §7.4 (close codes); OCPP 2.0.1 Part 4 (OCPP-J) §5.3",
    "1013 try again later: the server is overloaded; the station reconnects with back-off",
)

#: Reasons, security event types and kinds -> reference (see :func:`reference_for` for the lookup order).
REFERENCES: dict[str, Reference] = {
    "cert_invalid:unknown_ca": _PATH,
    "cert_invalid:bad_signature": _PATH,
    "cert_invalid:hostname_mismatch": Reference(
        "OCPP 2.0.1 Part 2 A00.FR.309 / A00.FR.412; RFC 6125 §6",
        "the CSMS certificate must name the CSMS's FQDN",
    ),
    "cert_invalid:wildcard": Reference(
        "OCPP 2.0.1 Part 2 A00.FR.501-514 (certificate properties); errata: SecurityCtrlr.AllowCSMSTLSWildcards",
        "wildcard CSMS certificates are refused unless the operator allows them",
    ),
    "cert_invalid:expired": _VALIDITY,
    "cert_invalid:not_yet_valid": _VALIDITY,
    "cert_invalid:revoked": _REVOCATION,
    "cert_invalid:no_client_cert": _CLIENT_CERT,
    "downgrade_refused": _TLS_VERSION,
    "pin_mismatch": _PINNING,
    "peer_key_changed": _PINNING,
    "peer_alert": _ALERT,
    "link_lost": _BACKOFF,
    "connection_refused": _BACKOFF,
    "refused": _BACKOFF,
    "ws_closed_1013": _WS_CLOSED,
    "InvalidCsmsCertificate": _PATH,
    "InvalidTLSVersion": _TLS_VERSION,
    "InvalidChargingStationCertificate": _CLIENT_CERT,
    "ReconfigurationOfSecurityParameters": _SECURITY_EVENT,
    "SettingSystemTime": _CLOCK,
    "evsim:PeerKeyChanged": _PINNING,
    "reconnect_wait": _BACKOFF,
    "tx_offline": _OFFLINE,
    "authorize_offline": _OFFLINE,
    "security_event_received": _SECURITY_EVENT,
    "certificate_installed": _CERT_MGMT,
    "certificate_deleted": _CERT_MGMT,
    "certificate_call": _CERT_MGMT,
    "certificate_signed": _RENEWAL,
    "certificate_signed_accepted": _RENEWAL,
    "csr_accepted": _RENEWAL,
    "renewal": _RENEWAL,
    "failover": _FAILOVER,
    "firmware": _FIRMWARE,
    "nts": _NTS,
    "clock": _NTS,
    "booted": _BOOT,
    "upstream": _UPSTREAM,
    "handshake_ok": _BOOT,
}


#: Kind families whose reference comes before their reason's (a TLS refusal inside NTS-KE is an NTS matter).
_KIND_FIRST = frozenset({"nts", "firmware", "upstream"})


def reference_for(kind: str, reason: str = "", security_event: str = "") -> Reference | None:
    """The reference for one event: the family of an NTS or firmware kind first, then its reason (``tls:`` and
    ``remote:`` prefixes stripped; a ``peer_alert:...`` is a received TLS alert), then its security event
    type, then its kind, then the family of its kind (``clock_*``...).

    Args:
        kind: the event kind.
        reason: its ``reason`` field, or "".
        security_event: its ``security_event`` or ``type`` field, or "".

    Returns:
        The reference, or None when the table has none.
    """
    family = kind.split("_", 1)[0]
    if family in _KIND_FIRST:
        return REFERENCES[family]  # an NTS or firmware failure is governed by its own protocol first
    r = reason
    while r.startswith(("tls:", "remote:")):
        r = r.split(":", 1)[1]
    if r in REFERENCES:
        return REFERENCES[r]
    if r.startswith("peer_alert:"):
        return REFERENCES["peer_alert"]
    if r.startswith("ws_closed"):
        return _BACKOFF
    for key in (security_event, kind):
        if key and key in REFERENCES:
            return REFERENCES[key]
    if family in REFERENCES:
        return REFERENCES[family]
    if kind.startswith(("cert_renew", "renew")):
        return _RENEWAL
    return None
