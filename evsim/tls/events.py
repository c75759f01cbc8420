"""The TLS event vocabulary (``shared/design/tls-model.md`` "Events") and its OCPP security-event mapping.

One vocabulary for logs, metrics and OCPP ``SecurityEventNotification``. A handshake failure carries
a *reason*: an event name, optionally refined after a colon (``cert_invalid:expired``,
``peer_alert:unknown_ca``).
:data:`OCPP_SECURITY_EVENTS` is the one table that turns a reason seen on one side of a connection into the
OCPP security event that side reports (OCPP 2.0.1 appendix "Security events", protocol-digest §2.4).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal, TypeAlias

Side: TypeAlias = Literal["client", "server"]

# ---------------------------------------------------------------- events (tls-model.md)
HANDSHAKE_OK = "handshake_ok"
HANDSHAKE_FAILED = "handshake_failed"
DOWNGRADE_REFUSED = "downgrade_refused"
CIPHER_REFUSED = "cipher_refused"
CERT_INVALID = "cert_invalid"
PIN_MISMATCH = "pin_mismatch"
PIN_RELEASED = "pin_released"
PIN_PROMOTED = "pin_promoted"
PEER_KEY_CHANGED = "peer_key_changed"
PEER_CERT_CHANGED = "peer_cert_changed"
PAIRING_REQUESTED = "pairing_requested"
PAIRED = "paired"
UNPAIRED = "unpaired"
OCSP_STATUS = "ocsp_status"
SESSION_RESUMED = "session_resumed"
CERT_EXPIRING = "cert_expiring"

EVENTS: tuple[str, ...] = (
    HANDSHAKE_OK,
    HANDSHAKE_FAILED,
    DOWNGRADE_REFUSED,
    CIPHER_REFUSED,
    CERT_INVALID,
    PIN_MISMATCH,
    PIN_RELEASED,
    PIN_PROMOTED,
    PEER_KEY_CHANGED,
    PEER_CERT_CHANGED,
    PAIRING_REQUESTED,
    PAIRED,
    UNPAIRED,
    OCSP_STATUS,
    SESSION_RESUMED,
    CERT_EXPIRING,
)

# ---------------------------------------------------------------- handshake failure reasons
CERT_EXPIRED = "cert_invalid:expired"
CERT_NOT_YET_VALID = "cert_invalid:not_yet_valid"
CERT_UNKNOWN_CA = "cert_invalid:unknown_ca"
CERT_REVOKED = "cert_invalid:revoked"
CERT_HOSTNAME_MISMATCH = "cert_invalid:hostname_mismatch"
CERT_WILDCARD = "cert_invalid:wildcard"
CERT_NO_CLIENT_CERT = "cert_invalid:no_client_cert"
CERT_WRONG_PURPOSE = "cert_invalid:purpose"
"""The certificate's ExtendedKeyUsage does not allow its role (X509 error 26): a server certificate offered as a
station's client certificate, or the reverse."""
TIMEOUT = "timeout"
EOF = "eof"
PROTOCOL_ERROR = "protocol_error"
PEER_ALERT = "peer_alert"
"""Prefix: ``peer_alert:<alert name>`` - the peer refused us with a TLS alert (``bad_certificate``...)."""

# ---------------------------------------------------------------- engine knobs
# Reasons the engine knobs produce (ALPN, signature algorithms and groups, sessions, OCSP, chain depth, CRLs).
ALPN_REFUSED = "alpn_refused"
"""``alpn_require`` and no ALPN protocol negotiated (RFC 7301 §3.2: the connection is closed)."""
SIGALG_REFUSED = "sigalg_refused"
"""No shared signature algorithm (``signature_algorithms``), seen by the side that found none."""
GROUP_REFUSED = "group_refused"
"""No shared key-exchange group (``groups``), seen by the side that found none."""
SESSION_EXPIRED = "session_expired"
"""The client store dropped a session past ``session.lifetime_s`` (simulation time); an event, not a failure."""
OCSP_MISSING = "ocsp_status:missing"
OCSP_UNKNOWN = "ocsp_status:unknown"
OCSP_BAD_SIGNATURE = "ocsp_status:bad_signature"
OCSP_STALE = "ocsp_status:stale"
CERT_CHAIN_TOO_LONG = "cert_invalid:chain_too_long"
"""The peer's chain is longer than ``TrustStore.max_depth`` (X509 error 22)."""
CRL_UNAVAILABLE = "cert_invalid:crl_unavailable"
CRL_EXPIRED = "cert_invalid:crl_expired"
CRL_NOT_YET_VALID = "cert_invalid:crl_not_yet_valid"
CRL_BAD_SIGNATURE = "cert_invalid:crl_bad_signature"

ENGINE_KNOB_REASONS: tuple[str, ...] = (
    CERT_REVOKED,
    CERT_CHAIN_TOO_LONG,
    CRL_UNAVAILABLE,
    CRL_EXPIRED,
    CRL_NOT_YET_VALID,
    CRL_BAD_SIGNATURE,
    OCSP_MISSING,
    OCSP_UNKNOWN,
    OCSP_BAD_SIGNATURE,
    OCSP_STALE,
    ALPN_REFUSED,
    SIGALG_REFUSED,
    GROUP_REFUSED,
    DOWNGRADE_REFUSED,
    CIPHER_REFUSED,
    CERT_EXPIRED,
    CERT_UNKNOWN_CA,
    CERT_HOSTNAME_MISMATCH,
    CERT_WILDCARD,
    CERT_NO_CLIENT_CERT,
)
"""Every handshake-failure reason the engine knobs produce (``tests/test_tls_knobs.py`` checks each maps)."""

NO_OCPP_EVENT: frozenset[str] = frozenset(
    {TIMEOUT, EOF, PROTOCOL_ERROR, ALPN_REFUSED, SESSION_RESUMED, SESSION_EXPIRED, HANDSHAKE_OK}
)
"""Reason kinds OCPP defines no security event for (deliberately unmapped: logs and metrics only)."""

# ---------------------------------------------------------------- OCPP security events
INVALID_CSMS_CERTIFICATE = "InvalidCsmsCertificate"
INVALID_CHARGING_STATION_CERTIFICATE = "InvalidChargingStationCertificate"
INVALID_TLS_VERSION = "InvalidTLSVersion"
INVALID_TLS_CIPHER_SUITE = "InvalidTLSCipherSuite"
FAILED_TO_AUTHENTICATE_AT_CSMS = "FailedToAuthenticateAtCsms"

# Alerts a TLS server sends when it refuses the client's certificate (RFC 8446 §6.2).
CERTIFICATE_ALERTS = frozenset(
    {
        "bad_certificate",
        "unsupported_certificate",
        "certificate_revoked",
        "certificate_expired",
        "certificate_unknown",
        "unknown_ca",
        "certificate_required",
        "access_denied",
        # TLS 1.2 OpenSSL servers refuse a missing client certificate with handshake_failure; the stream
        # reports it as a peer_alert only when it came after the server's certificate (else cipher_refused)
        "handshake_failure",
    }
)

# ---------------------------------------------------------------- peer trust: pins, pairing, change
# Reasons and events of evsim/tls/peer.py's decisions.
PIN_ADDED = "pin_added"
"""A pin learned at run time (trust on first use, re-pin after an accepted key change)."""
PAIRING_REFUSED = "pairing_refused"
"""Event and reason kind: a SHIP-style pairing decision refused the peer. Reasons (``evsim.tls.pairing``):
``pairing_refused:unknown`` (unknown SKI, no window, or too many requests waiting),
``pairing_refused:pending`` (unknown SKI recorded as a pairing request: event ``pairing_requested``),
``pairing_refused:denied`` (unpaired), ``pairing_refused:key_mismatch`` (known SKI with another key).
A peer certificate that cannot identify a SHIP device is ``cert_invalid:not_self_signed`` /
``cert_invalid:no_ski`` / ``cert_invalid:ski_mismatch`` / ``cert_invalid:unsupported_key``."""
PEER_EVENTS: tuple[str, ...] = (
    PIN_MISMATCH,
    PIN_ADDED,
    PIN_RELEASED,
    PIN_PROMOTED,
    PEER_CERT_CHANGED,
    PEER_KEY_CHANGED,
    PAIRING_REQUESTED,
    PAIRING_REFUSED,
    PAIRED,
    UNPAIRED,
    CERT_INVALID,
)
"""Events a :class:`evsim.tls.peer.PeerPolicy` emits. Refusal reasons it raises ``HandshakeFailed`` with:
``pin_mismatch``, ``peer_key_changed``, ``pairing_refused:<...>`` and the ``cert_invalid:<...>`` above."""

RECONFIGURATION_OF_SECURITY_PARAMETERS = "ReconfigurationOfSecurityParameters"
EVSIM_PIN_MISMATCH = "evsim:PinMismatch"
EVSIM_PEER_KEY_CHANGED = "evsim:PeerKeyChanged"
EVSIM_PAIRING_REFUSED = "evsim:PairingRefused"

_PEER_REFUSALS: dict[tuple[str, Side], str] = {
    # A pin or a key-change refusal is a failed check of the peer's certificate: the station reports the
    # CSMS certificate invalid (A00.FR.310, critical), the CSMS the station certificate (A00.FR.407/408).
    (PIN_MISMATCH, "client"): INVALID_CSMS_CERTIFICATE,
    (PIN_MISMATCH, "server"): INVALID_CHARGING_STATION_CERTIFICATE,
    (PEER_KEY_CHANGED, "client"): INVALID_CSMS_CERTIFICATE,
    (PEER_KEY_CHANGED, "server"): INVALID_CHARGING_STATION_CERTIFICATE,
    # Pairing is EEBus SHIP (station <-> energy manager): the peer is neither the CSMS nor a charging
    # station, so neither OCPP name fits; OCPP's security-event type is a free string (protocol-digest
    # §2.4: "use the standard name when one matches"), hence an evsim: type.
    (PAIRING_REFUSED, "client"): EVSIM_PAIRING_REFUSED,
    (PAIRING_REFUSED, "server"): EVSIM_PAIRING_REFUSED,
}

PEER_EVENT_OCPP: Mapping[str, str] = MappingProxyType(
    {
        # report_only: the connection went ahead, so the certificate was not "invalid" in OCPP's sense
        # (InvalidCsmsCertificate means the station terminated); OCPP has no report-only event.
        PIN_MISMATCH: EVSIM_PIN_MISMATCH,
        # accepted key change (warn / accept_and_repin): security relevant, no OCPP name
        PEER_KEY_CHANGED: EVSIM_PEER_KEY_CHANGED,
        # the set of trusted keys changed: OCPP's "keys or security profile changed" (protocol-digest §2.4)
        PIN_ADDED: RECONFIGURATION_OF_SECURITY_PARAMETERS,
        PIN_RELEASED: RECONFIGURATION_OF_SECURITY_PARAMETERS,
        PIN_PROMOTED: RECONFIGURATION_OF_SECURITY_PARAMETERS,
        PAIRED: RECONFIGURATION_OF_SECURITY_PARAMETERS,
        UNPAIRED: RECONFIGURATION_OF_SECURITY_PARAMETERS,
        # peer_cert_changed (same key renewed): a routine renewal changes no trust: logged, not reported
    }
)
"""Peer events that did *not* refuse a connection -> OCPP security event (refusals go through
:data:`OCPP_SECURITY_EVENTS` by their reason, see :func:`peer_event_ocpp`)."""


def peer_event_ocpp(event: str, *, side: Side, reason: str | None) -> str | None:
    """The OCPP security event for a peer-trust event.

    Args:
        event: the event name (``pin_mismatch``, ``paired``...).
        side: the side that observed it.
        reason: the ``HandshakeFailed`` reason when the event refused the connection, else None.

    Returns:
        The ``SecurityEventNotification.type``, or None when nothing is reported.
    """
    if reason is not None:
        return ocpp_security_event(reason, side=side)
    return PEER_EVENT_OCPP.get(event)


OCPP_SECURITY_EVENTS: Mapping[tuple[str, Side], str] = MappingProxyType(
    {
        # the station (TLS client) found the CSMS certificate invalid: A00.FR.310/311 (critical)
        (CERT_INVALID, "client"): INVALID_CSMS_CERTIFICATE,
        # the CSMS (TLS server) found the station certificate invalid: A00.FR.407/408
        (CERT_INVALID, "server"): INVALID_CHARGING_STATION_CERTIFICATE,
        # TLS < 1.2 or a version we refuse: A00.FR.316 (station), A00.FR.315 (CSMS terminates)
        (DOWNGRADE_REFUSED, "client"): INVALID_TLS_VERSION,
        (DOWNGRADE_REFUSED, "server"): INVALID_TLS_VERSION,
        # no acceptable cipher suite: A00.FR.323 (station), A00.FR.322 (CSMS terminates)
        (CIPHER_REFUSED, "client"): INVALID_TLS_CIPHER_SUITE,
        (CIPHER_REFUSED, "server"): INVALID_TLS_CIPHER_SUITE,
        # the CSMS refused the station's client certificate with a certificate alert (non-critical)
        (PEER_ALERT + ":certificate", "client"): FAILED_TO_AUTHENTICATE_AT_CSMS,
        # a refused OCSP status makes the CSMS certificate invalid (A00.FR.310)
        (OCSP_STATUS, "client"): INVALID_CSMS_CERTIFICATE,
        # no shared signature algorithm or group: the negotiation of the suite failed (A00.FR.322/323)
        (SIGALG_REFUSED, "client"): INVALID_TLS_CIPHER_SUITE,
        (SIGALG_REFUSED, "server"): INVALID_TLS_CIPHER_SUITE,
        (GROUP_REFUSED, "client"): INVALID_TLS_CIPHER_SUITE,
        (GROUP_REFUSED, "server"): INVALID_TLS_CIPHER_SUITE,
        **_PEER_REFUSALS,
    }
)
"""(reason kind, side that saw it) -> OCPP security event. ``peer_alert:certificate`` stands for any of
:data:`CERTIFICATE_ALERTS`."""


def reason_kind(reason: str) -> str:
    """The event part of a reason: ``cert_invalid:expired`` -> ``cert_invalid``."""
    return reason.partition(":")[0]


def ocpp_security_event(reason: str, *, side: Side) -> str | None:
    """The OCPP security event a handshake failure maps to, for the side that observed it.

    Args:
        reason: a ``HandshakeFailed.reason``.
        side: ``"client"`` (the station, usually) or ``"server"`` (the CSMS or a Local Controller).

    Returns:
        The OCPP ``SecurityEventNotification.type``, or None when OCPP defines none (timeout, eof...).
    """
    kind, _, detail = reason.partition(":")
    if kind == PEER_ALERT:
        if detail in CERTIFICATE_ALERTS:
            return OCPP_SECURITY_EVENTS.get((PEER_ALERT + ":certificate", side))
        return None
    return OCPP_SECURITY_EVENTS.get((kind, side))
