"""Peer-certificate checks OpenSSL does not do the way evsim needs (pure functions, per-connection state).

* **Validity at simulation time.** ``X509Store.set_time`` cannot be used: it sets the time on the
  context's shared store, and only the first call takes effect (``X509_STORE_set1_param`` does not
  overwrite a time already set; checked with pyOpenSSL 26.4 / OpenSSL 4.0.3: after
  ``set_time(now + 20 days)``, ``set_time(now)`` still reports "certificate has expired"). The stream
  therefore sets the time on each connection's own verify parameters right before each handshake step
  (``_ossl.set_verify_time``), so OpenSSL checks validity at ``verify_time()`` and reports errors 9/10,
  race-free with a shared context. If that binding is unavailable, contexts disable OpenSSL's time check
  (``X509_V_FLAG_NO_CHECK_TIME``) and the verify callback compares each certificate's validity with
  ``VerifyState.now()`` (:func:`check_validity`: OpenSSL's comparison, same top-down order). Both paths
  check at the simulation time truncated to whole seconds, bounds inclusive (:func:`whole_seconds` says
  why), so a certificate is valid during the whole second its notAfter names.
* **Hostname.** OCPP wants CN = FQDN (A00.FR.309/412) and refuses wildcards unless
  ``AllowCSMSTLSWildcards``; RFC 6125 clients use the SAN. :func:`check_hostname` implements the
  ``TrustStore.hostname`` modes.
* **Reasons.** :func:`verify_error_reason` maps X509 verify error codes to the event vocabulary.
"""

from __future__ import annotations

import datetime as _dt
import functools
import ipaddress
import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.x509.oid import NameOID

from evsim.clock import real_utcnow
from evsim.interrupts import InterruptSlot
from evsim.tls import events

if TYPE_CHECKING:
    from evsim.tls.peer import PeerCheck

# X509 verify error codes (OpenSSL include/openssl/x509_vfy.h)
X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT = 2
X509_V_ERR_UNABLE_TO_GET_CRL = 3
X509_V_ERR_UNABLE_TO_DECRYPT_CRL_SIGNATURE = 5
X509_V_ERR_CRL_SIGNATURE_FAILURE = 8
X509_V_ERR_CERT_NOT_YET_VALID = 9
X509_V_ERR_CERT_HAS_EXPIRED = 10
X509_V_ERR_CRL_NOT_YET_VALID = 11
X509_V_ERR_CRL_HAS_EXPIRED = 12
X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT = 18
X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN = 19
X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY = 20
X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE = 21
X509_V_ERR_CERT_CHAIN_TOO_LONG = 22
X509_V_ERR_CERT_REVOKED = 23
X509_V_ERR_INVALID_PURPOSE = 26
X509_V_ERR_UNABLE_TO_GET_CRL_ISSUER = 33
X509_V_ERR_KEYUSAGE_NO_CRL_SIGN = 35

X509_V_FLAG_NO_CHECK_TIME = 0x200000
"""``X509_V_FLAG_NO_CHECK_TIME`` (x509_vfy.h, OpenSSL >= 1.1.0); pyOpenSSL does not export it."""

_UNKNOWN_CA = frozenset(
    {
        X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT,
        X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT,
        X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN,
        X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY,
        X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE,
    }
)

CRL_REASONS: dict[int, str] = {
    X509_V_ERR_CERT_REVOKED: events.CERT_REVOKED,
    X509_V_ERR_UNABLE_TO_GET_CRL: events.CRL_UNAVAILABLE,
    X509_V_ERR_UNABLE_TO_GET_CRL_ISSUER: events.CRL_UNAVAILABLE,
    X509_V_ERR_CRL_HAS_EXPIRED: events.CRL_EXPIRED,
    X509_V_ERR_CRL_NOT_YET_VALID: events.CRL_NOT_YET_VALID,
    X509_V_ERR_CRL_SIGNATURE_FAILURE: events.CRL_BAD_SIGNATURE,
    X509_V_ERR_UNABLE_TO_DECRYPT_CRL_SIGNATURE: events.CRL_BAD_SIGNATURE,
    X509_V_ERR_KEYUSAGE_NO_CRL_SIGN: events.CRL_BAD_SIGNATURE,
}
"""Revocation-related X509 verify errors (``TrustStore.revocation.crl``) -> readable reasons."""


def verify_error_reason(code: int) -> str:
    """Event-vocabulary reason for an X509 verify error code.

    Args:
        code: ``X509_STORE_CTX_get_error`` value.

    Returns:
        ``cert_invalid:expired`` (10), ``cert_invalid:not_yet_valid`` (9), ``cert_invalid:unknown_ca``
        (2, 18, 19, 20, 21), ``cert_invalid:chain_too_long`` (22), the CRL reasons of :data:`CRL_REASONS`
        (``cert_invalid:revoked`` 23, ``cert_invalid:crl_unavailable`` 3/33, ``cert_invalid:crl_expired``
        12, ``cert_invalid:crl_not_yet_valid`` 11, ``cert_invalid:crl_bad_signature`` 5/8/35),
        ``cert_invalid:purpose`` (26: the ExtendedKeyUsage does not allow the certificate's role), else
        ``cert_invalid:<code>``.
    """
    if code == X509_V_ERR_CERT_HAS_EXPIRED:
        return events.CERT_EXPIRED
    if code == X509_V_ERR_CERT_NOT_YET_VALID:
        return events.CERT_NOT_YET_VALID
    if code in _UNKNOWN_CA:
        return events.CERT_UNKNOWN_CA
    if code in CRL_REASONS:
        return CRL_REASONS[code]
    if code == X509_V_ERR_CERT_CHAIN_TOO_LONG:
        return events.CERT_CHAIN_TOO_LONG  # TrustStore.max_depth
    if code == X509_V_ERR_INVALID_PURPOSE:
        return events.CERT_WRONG_PURPOSE  # e.g. a server-only certificate (EKU serverAuth) as a client's
    return f"{events.CERT_INVALID}:{code}"


def parse_asn1_time(value: bytes) -> _dt.datetime:
    """Parse pyOpenSSL's ``X509.get_notBefore()/get_notAfter()`` value (``YYYYMMDDhhmmssZ``) as UTC."""
    return _dt.datetime(
        int(value[0:4]),
        int(value[4:6]),
        int(value[6:8]),
        int(value[8:10]),
        int(value[10:12]),
        int(value[12:14]),
        tzinfo=_dt.UTC,
    )


def whole_seconds(now: _dt.datetime) -> int:
    """``now`` as a POSIX time in whole seconds, rounded down: the time certificates are checked at.

    The validity rule (one for both paths, and for ``evsim.tls.predict``): X.509 validity times have
    1-second resolution (RFC 5280 §4.1.2.5: UTCTime/GeneralizedTime "MUST include seconds", no fractions),
    so each bound names a whole second, and the period "from notBefore through notAfter, inclusive"
    contains both of those seconds entirely. A certificate with ``notAfter = 12:00:00Z`` is therefore
    still valid at 12:00:00.5 and expired from 12:00:01; one with ``notBefore = 12:00:00Z`` is not yet
    valid at 11:59:59.5. Equivalently: truncate the time to whole seconds, then compare with both bounds
    inclusive - which is what OpenSSL does with a ``time_t`` (``X509_VERIFY_PARAM_set_time``), and what
    RFC 5280's ``99991231235959Z`` ("no well-defined expiration") needs to mean "to the end of time".
    Rounding down (``floor``, not ``int``) keeps the rule right before 1970 too.
    """
    return math.floor(now.timestamp())


def check_validity(not_before: _dt.datetime, not_after: _dt.datetime, now: _dt.datetime) -> str | None:
    """OpenSSL's validity comparison at ``now`` (truncated to whole seconds, see :func:`whole_seconds`;
    both bounds inclusive): a reason, or None when valid.

    Args:
        not_before: the certificate's notBefore (whole seconds, aware).
        not_after: its notAfter (whole seconds, aware).
        now: the simulation's wall time (aware; fractions of a second are dropped).

    Returns:
        ``cert_invalid:not_yet_valid``, ``cert_invalid:expired`` or None.
    """
    now = _dt.datetime.fromtimestamp(whole_seconds(now), _dt.UTC)
    if now < not_before:
        return events.CERT_NOT_YET_VALID
    if now > not_after:
        return events.CERT_EXPIRED
    return None


class VerifyState(InterruptSlot):
    """Per-connection verification inputs and outcome (stored as the OpenSSL connection's app data).

    Also the connection's :class:`~evsim.interrupts.InterruptSlot`: a Ctrl-C that lands in one of the
    connection's callbacks is kept there, never recorded as a failure, and raised again by the stream.

    Attributes:
        server_hostname: the name the client expects (None on the server side or when not checked).
        verify_time: returns the simulation's wall time; None = the real clock.
        failure: the first failure reason recorded by the verify callback.
        detail: human-readable detail of that failure.
        calls: how many times the verify callback ran (0 after a resumed handshake).
        peer: the connection's peer-trust check (pins, pairing, change; ``evsim.tls.peer``), or None.
        skip_time: do not check validity on this connection (``time_check = "skip_until_clock_synced"``
            and the clock is not synced yet).
    """

    __slots__ = ("calls", "detail", "failure", "peer", "server_hostname", "skip_time", "verify_time")

    def __init__(self, server_hostname: str | None, verify_time: Callable[[], _dt.datetime] | None) -> None:
        super().__init__()
        self.server_hostname = server_hostname
        self.verify_time = verify_time
        self.failure: str | None = None
        self.detail = ""
        self.calls = 0
        self.skip_time = False
        self.peer: PeerCheck | None = None

    def now(self) -> _dt.datetime:
        """The time certificates are checked at."""
        t = self.verify_time() if self.verify_time is not None else real_utcnow()
        return t if t.tzinfo is not None else t.replace(tzinfo=_dt.UTC)

    def fail(self, reason: str, detail: str) -> None:
        """Record a failure (the first one wins)."""
        if self.failure is None:
            self.failure = reason
            self.detail = detail


# ---------------------------------------------------------------- hostname


def _norm(name: str) -> str:
    return name.strip().rstrip(".").lower()


@functools.lru_cache(maxsize=4096)
def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    # cached: thousands of stations connect to the same few names, and parsing a DNS name as an IP
    # address costs two exceptions
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def is_ip_literal(host: str) -> bool:
    """True for ``127.0.0.1``, ``::1``, ``[::1]``: no SNI, IP SAN matching."""
    return _ip(host) is not None


def _match(pattern: str, host: str) -> str | None:
    """``"exact"``, ``"wildcard"`` (RFC 6125 §6.4.3: ``*`` is the whole left-most label) or None."""
    p = _norm(pattern)
    if p == host:
        return "exact"
    if p.startswith("*.") and "*" not in p[1:] and p.count(".") >= 2:
        suffix = p[1:]
        if host.endswith(suffix):
            label = host[: -len(suffix)]
            if label and "." not in label:
                return "wildcard"
    return None


def _best(patterns: Iterable[str], host: str) -> str | None:
    found: str | None = None
    for pat in patterns:
        m = _match(pat, host)
        if m == "exact":
            return m
        if m is not None:
            found = m
    return found


def _cns(cert: x509.Certificate) -> list[str]:
    out = []
    for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        v = a.value
        out.append(v if isinstance(v, str) else v.decode("utf-8", "replace"))
    return out


def _sans(cert: x509.Certificate) -> tuple[list[str], list[ipaddress.IPv4Address | ipaddress.IPv6Address]]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    ips = [
        ip
        for ip in san.get_values_for_type(x509.IPAddress)
        if not isinstance(ip, ipaddress.IPv4Network | ipaddress.IPv6Network)
    ]
    return san.get_values_for_type(x509.DNSName), ips


@functools.lru_cache(maxsize=1024)
def check_hostname_der(der: bytes, host: str, mode: str, wildcards: str) -> str | None:
    """:func:`check_hostname` on a DER certificate, cached (1000 stations see the same CSMS certificate)."""
    return check_hostname(x509.load_der_x509_certificate(der), host, mode, wildcards)


def check_hostname(cert: x509.Certificate, host: str, mode: str, wildcards: str) -> str | None:
    """Check the server certificate against the name the client connected to.

    Args:
        cert: the server's leaf certificate.
        host: the expected server name (DNS name or IP literal).
        mode: ``"cn"``, ``"san"``, ``"san+cn"`` or ``"off"`` (see :class:`~evsim.tls.trust.TrustStore`).
        wildcards: ``"deny"`` or ``"allow"``.

    Returns:
        None when the certificate matches, else ``cert_invalid:hostname_mismatch`` or
        ``cert_invalid:wildcard`` (a wildcard would have matched but wildcards are denied).
    """
    if mode == "off":
        return None
    ip = _ip(host)
    dns_sans, ip_sans = _sans(cert)
    if ip is not None:
        if mode == "cn":
            ok = any(_ip(cn) == ip for cn in _cns(cert))
        else:
            ok = ip in ip_sans
        return None if ok else events.CERT_HOSTNAME_MISMATCH
    h = _norm(host)
    if mode == "cn":
        m = _best(_cns(cert), h)
    elif mode == "san":
        m = _best(dns_sans, h)
    else:  # san+cn: the CN must match (OCPP), and so must the SAN when it lists DNS names (RFC 6125)
        m = _best(_cns(cert), h)
        if m is not None and dns_sans:
            m_san = _best(dns_sans, h)
            m = None if m_san is None else ("wildcard" if "wildcard" in (m, m_san) else "exact")
    if m is None:
        return events.CERT_HOSTNAME_MISMATCH
    if m == "wildcard" and wildcards != "allow":
        return events.CERT_WILDCARD
    return None
