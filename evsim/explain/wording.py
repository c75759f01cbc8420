"""The words of the narrative: what an event kind means, why a reason happens, which knob decided.

Tables and small pure functions from (side, kind, reason) to plain-language phrases; :mod:`run_story` puts
them together.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Reason (without ``tls:`` / ``remote:`` prefixes) -> why it happens: the verification step that failed.
WHY: dict[str, str] = {
    "cert_invalid:unknown_ca": "path validation failed: the certificate chain does not lead to any root in the "
    "verifier's trust store (no trust anchor)",
    "cert_invalid:bad_signature": "path validation failed: a signature in the chain does not verify",
    "cert_invalid:expired": "validity check failed: the certificate's notAfter is earlier than the verifier's "
    "clock",
    "cert_invalid:not_yet_valid": "validity check failed: the certificate's notBefore is later than the "
    "verifier's clock (a clock behind true time, or a certificate from the future)",
    "cert_invalid:revoked": "revocation check failed: the CRL (or the OCSP answer) lists the certificate as "
    "revoked",
    "cert_invalid:hostname_mismatch": "name check failed: the certificate does not name the host that was dialled",
    "cert_invalid:wildcard": "name check failed: a wildcard certificate, which OCPP does not allow by default",
    "cert_invalid:no_client_cert": "client authentication failed: the station presented no certificate",
    "downgrade_refused": "version negotiation failed: no TLS version in common (the client offered only older "
    "versions than the server accepts)",
    "pin_mismatch": "pin check failed: the server's public key is not one of the pinned keys",
    "peer_key_changed": "the server presented another public key than on the previous connection",
    "link_lost": "the network path under the session went away (an outage, a partition, or a path taken over)",
    "connection_refused": "nothing accepted the TCP connection (the endpoint is stopped or unreachable)",
    "refused": "nothing accepted the TCP connection (the endpoint is stopped or unreachable)",
    "no_response": "the peer did not answer in time",
    "ke_failed": "the NTS key exchange with that server failed",
    "ws_closed_1013": "the server closed the WebSocket with 1013 (try again later: overloaded)",
    "ws_closed_1001": "the peer closed the WebSocket with 1001 (going away)",
    "certificate_switch": "the station reconnects on purpose to use a new certificate",
}

#: Reason -> the configuration that decided it.
KNOB: dict[str, str] = {
    "cert_invalid:unknown_ca": "the verifier's trust store (a station group's `trust`, [tls.trust.*] roots)",
    "cert_invalid:expired": "certificate validity ([pki] validity, renew/expire actions) against the "
    "verifier's clock",
    "cert_invalid:not_yet_valid": "certificate validity against the verifier's clock ([clocks] of the node, NTS)",
    "cert_invalid:revoked": "the verifier's revocation checking (its TLS profile) and the revoke action",
    "cert_invalid:hostname_mismatch": "the CSMS `host` and the name in its certificate",
    "downgrade_refused": "`versions` of the server's TLS profile ([tls.profiles.*]) against the client's offer",
    "pin_mismatch": "the group's pin set ([tls.pins.*], enforce or report_only) and the CSMS key change policy",
    "peer_key_changed": "the pin set's watch of the CSMS key and the change notification policy ([tls.change.*])",
    "link_lost": "the timeline's network actions (stop, partition, attacks)",
    "connection_refused": "the timeline's stop / partition actions",
    "refused": "the timeline's stop / partition actions",
}

#: TLS alert names -> what the sender of the alert objected to.
ALERTS: dict[str, str] = {
    "unknown_ca": "it does not trust the CA of the certificate it was shown",
    "certificate_expired": "the certificate it was shown has expired by its clock",
    "certificate_revoked": "the certificate it was shown is revoked",
    "bad_certificate": "the certificate it was shown is bad (not yet valid, wrong name or corrupt)",
    "bad_certificate_status_response": "the OCSP status it needed was missing or unacceptable",
    "internal_error": "an internal error (often a refused client certificate on the other side)",
    "protocol_version": "no TLS version in common",
    "handshake_failure": "no parameters in common (cipher suites, groups)",
}

_VERBS: dict[tuple[str, str], str] = {
    ("station", "handshake_failed"): "failed the TLS handshake",
    ("csms", "handshake_failed"): "refused or lost TLS handshakes",
    ("other", "handshake_failed"): "failed TLS handshakes",
    ("station", "connection_lost"): "lost their connection",
    ("station", "reconnect_wait"): "waited before reconnecting",
    ("station", "booted"): "connected and were accepted (BootNotification Accepted)",
    ("csms", "booted"): "accepted BootNotifications",
    ("csms", "boot_rejected"): "rejected BootNotifications",
    ("csms", "upgrade_rejected"): "refused WebSocket upgrades",
    ("csms", "station_disconnected"): "saw stations disconnect",
    ("csms", "security_event_received"): "received security events (SecurityEventNotification)",
    ("attacker", "attack_result"): "attacked",
    ("attacker", "handshake_failed"): "posed as the CSMS; the stations refused its handshakes",
    ("station", "authorize_offline"): "authorized drivers offline (from their local list)",
    ("station", "message_discarded"): "discarded queued messages",
    ("station", "pin_mismatch"): "refused a server key that is not pinned",
    ("station", "pin_promoted"): "promoted the announced key to their pin",
    ("station", "pin_released"): "released their pin",
    ("station", "peer_key_changed"): "noticed a changed server key",
    ("station", "certificate_installed"): "installed a certificate sent over OCPP",
    ("station", "certificate_deleted"): "deleted a certificate over OCPP",
    ("csms", "certificate_call"): "sent certificate management calls",
    ("station", "handshake_ok"): "completed TLS handshakes",
    ("control", "link_reset"): "reset links",
    ("csms", "upstream_connected"): "opened upstream links (one per station, to the next hop)",
    ("csms", "upstream_lost"): "lost upstream links (towards the CSMS)",
    ("csms", "upstream_failed"): "failed to open upstream links",
    ("station", "nts_failover"): "switched to their next NTS server",
    ("station", "nts_ke_failed"): "failed the NTS key exchange (NTS-KE over TLS)",
    ("station", "clock_adjusted"): "corrected their clocks from NTS (a step, or a slew)",
    ("station", "clock_set"): "started with a clock off true time",
    ("control", "certificate_not_sent"): "could not send a certificate call: the station was offline",
}


def normal_reason(reason: str) -> str:
    """``reason`` without the ``tls:`` and ``remote:`` prefixes some events add."""
    while reason.startswith(("tls:", "remote:")):
        reason = reason.split(":", 1)[1]
    return reason


def what(side: str, kind: str) -> str:
    """What the nodes did, as a verb phrase (the kind itself when there is no phrase)."""
    return _VERBS.get((side, kind)) or kind.replace("_", " ")


def why(reason: str, sample: Mapping[str, Any]) -> str:
    """Why it happened: the verification step that failed, or what the reason code says.

    Args:
        reason: the event's reason.
        sample: the first event's fields (versions, status...).
    """
    r = normal_reason(reason)
    if r in WHY:
        return WHY[r]
    if r.startswith("peer_alert:"):
        alert = r.split(":", 1)[1]
        meaning = ALERTS.get(alert, "it refused the handshake")
        return f"the other side sent the TLS alert {alert}: {meaning}"
    if r.startswith("ws_closed_"):
        return f"the WebSocket was closed with code {r.rsplit('_', 1)[1]}"
    if r:
        return f"reason {r}"
    return ""


def knob(reason: str, kind: str) -> str:
    """The configuration that decided the outcome, or ""."""
    r = normal_reason(reason)
    if r in KNOB:
        return KNOB[r]
    if kind in ("reconnect_wait", "connection_lost"):
        return "the station group's retry_backoff (wait_minimum, random_range, repeat_times)"
    if r.startswith("peer_alert:"):
        return "the other side's verification settings (trust store, validity, revocation, pins)"
    return ""
