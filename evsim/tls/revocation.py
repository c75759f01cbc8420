"""Revocation checks in the TLS engine: CRLs in the context's X509 store, OCSP stapling on both sides.

This module only wires :mod:`evsim.pki.revocation` and :mod:`evsim.pki.ocsp` (CRL building, OCSP responses
and their checking, all pure) into pyOpenSSL. It compiles the ``TrustStore.revocation`` part of the model
(``shared/design/tls-model.md``):

* ``crl = "leaf" | "chain"`` -> :func:`install_crls`: the CRLs go into the context's ``X509Store`` with
  ``X509_V_FLAG_CRL_CHECK`` (the leaf is checked against its issuer's CRL) or ``CRL_CHECK | CRL_CHECK_ALL``
  (every certificate of the verified chain below the trust anchor). OpenSSL then refuses a revoked
  certificate with X509 error 23 (``cert_invalid:revoked`` through ``verify.verify_error_reason``) and
  sends the ``certificate_revoked`` alert. With CRL checking on, OpenSSL needs a CRL from the issuer of
  *every* checked certificate: a missing one is error 3 (``unable to get certificate CRL``), an expired one
  error 12 - ``verify.verify_error_reason`` names them (``cert_invalid:crl_unavailable``,
  ``cert_invalid:crl_expired``...; :func:`crl_error_reason` is the CRL part of that table). CRL validity
  (thisUpdate/nextUpdate) is checked at the connection's verify time, i.e. the simulation time the stream sets per connection (``_ossl``); under the
  ``X509_V_FLAG_NO_CHECK_TIME`` fallback it is not checked at all.

  **Refresh = a new context.** A context's store is shared by every connection made from it, and OpenSSL
  gives no way to *replace* a CRL in a live store (``X509_STORE_add_crl`` only adds; with two CRLs of one
  issuer, which one is used is unspecified); pyOpenSSL (26.x, the pinned series) also refuses to mutate a
  context once a connection was made from it. So :func:`install_crls` is for a context that has just been
  built (it raises otherwise), and a CRL refresh builds a new context (with the CRLs in the cache key)
  that new connections use; connections already open keep the old one.
* ``ocsp = "request" | "require"`` -> stapling (RFC 6066 §8 ``status_request``, TLS 1.3: RFC 8446 §4.4.2.1):
  :func:`server_ocsp_callback` hands OpenSSL the DER response to staple; :func:`client_ocsp_callback` checks
  the stapled response (:func:`evsim.pki.ocsp.check_ocsp_response`: signer, CertID, time at the
  simulation's time, status) and decides with :func:`ocsp_decision`. A client only gets a staple if it asks
  for one: **call** ``conn.request_ocsp()`` (:func:`request_ocsp`) **on every client connection before the
  handshake** - pyOpenSSL sets the status type per connection, so the context callback alone is not enough,
  and without the request OpenSSL never calls the client callback (and ``require`` would silently pass).

Decisions (:func:`ocsp_decision`):

=================  ============  ==========================================================
status             require       request
=================  ============  ==========================================================
good               accept        accept
revoked            refuse        refuse (a validly signed "revoked" is proof, not absence)
unknown            on_unknown    on_unknown (``fail`` by default; ``soft_fail`` accepts)
missing            refuse        accept (soft-fail)
bad_signature      refuse        accept (soft-fail: an attacker could have dropped the staple)
stale              refuse        accept (soft-fail)
=================  ============  ==========================================================

Every check is reported through ``on_status(conn, outcome)``; a refusal's reason is ``cert_invalid:revoked``
for a revoked certificate and ``ocsp_status:<status>`` otherwise. When the client callback refuses, OpenSSL
aborts the handshake and sends the ``bad_certificate_status_response`` alert (RFC 6066 §8 / RFC 8446 §6.2).
A resumed handshake carries no certificate and no staple: the callback accepts it (the status was checked
when the session was established; sessions are bounded by their lifetime).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Iterable, Sequence
from typing import Literal, TypeAlias

import attrs
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from OpenSSL import SSL, crypto

from evsim.errors import ConfigError
from evsim.interrupts import c_callback
from evsim.pki.ocsp import OcspCheck, OcspCheckStatus, check_ocsp_response
from evsim.tls import _ossl, events
from evsim.tls.verify import CRL_REASONS, VerifyState

__all__ = [
    "CrlMode",
    "OcspOutcome",
    "OcspPolicy",
    "OnUnknown",
    "client_ocsp_callback",
    "crl_error_reason",
    "install_crls",
    "install_ocsp_client",
    "install_ocsp_stapling",
    "issuer_from_chain",
    "ocsp_decision",
    "record_on_verify_state",
    "request_ocsp",
    "server_ocsp_callback",
    "verify_state_time",
]

CrlMode: TypeAlias = Literal["off", "leaf", "chain"]
"""``TrustStore.revocation_crl``."""
OcspPolicy: TypeAlias = Literal["off", "request", "require"]
"""``TrustStore.ocsp`` (stapling)."""
OnUnknown: TypeAlias = Literal["fail", "soft_fail"]
"""What an authentic ``unknown`` status does."""

ServerOcspCallback: TypeAlias = Callable[[SSL.Connection, object], bytes]
ClientOcspCallback: TypeAlias = Callable[[SSL.Connection, bytes, object], bool]
IssuerLookup: TypeAlias = Callable[[x509.Certificate, Sequence[x509.Certificate]], x509.Certificate | None]

# ---------------------------------------------------------------- CRLs


def crl_error_reason(code: int) -> str | None:
    """Event-vocabulary reason for a CRL-related X509 verify error, or None for other codes.

    Args:
        code: ``X509_STORE_CTX_get_error`` value (the verify callback's ``errno``).

    Returns:
        ``cert_invalid:revoked`` (23), ``cert_invalid:crl_unavailable`` (3, 33),
        ``cert_invalid:crl_expired`` (12), ``cert_invalid:crl_not_yet_valid`` (11),
        ``cert_invalid:crl_bad_signature`` (5, 8, 35), else None.
    """
    return CRL_REASONS.get(code)


def install_crls(ctx: SSL.Context, crls: Iterable[x509.CertificateRevocationList], mode: CrlMode) -> None:
    """Add CRLs to a freshly built context's X509 store and turn CRL checking on.

    Call it once, on a context no connection has used yet (see the module doc: a refresh builds a new
    context). pyOpenSSL 26 refuses to mutate a used context through its own setters, but not through
    the store, so this function checks that itself. The store's flags are OR-ed in, so flags set before
    (``NO_CHECK_TIME``) stay.

    Args:
        ctx: the context (client, or server verifying client certificates).
        crls: the CRLs: for ``leaf`` at least the leaf's issuer's; for ``chain`` one from every CA of the
            chain (the sub-CA's for the leaf, the root's for the sub-CA).
        mode: ``"off"`` (nothing is installed), ``"leaf"`` (``X509_V_FLAG_CRL_CHECK``) or ``"chain"``
            (``X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL``).

    Raises:
        ConfigError: an unknown mode, a context that already made a connection, or ``leaf``/``chain``
            without any CRL (OpenSSL would then refuse every peer with "unable to get certificate CRL").
    """
    if mode not in ("off", "leaf", "chain"):
        raise ConfigError("unknown CRL mode", path="revocation.crl", value=mode, fix="use off, leaf or chain")
    if mode == "off":
        return
    if getattr(ctx, "_used", False):  # pyOpenSSL 26 marks a context once a Connection was made from it
        raise ConfigError(
            "CRLs must be installed on a context no connection has used yet",
            path="revocation.crl",
            fix="build a new context for the new CRLs (a CRL refresh means a new context)",
        )
    crl_list = list(crls)
    if not crl_list:
        raise ConfigError(
            f'revocation.crl = "{mode}" needs at least one CRL',
            path="revocation.crl",
            value=mode,
            fix="add the issuing CA's CRL (and, for chain, every CA's), or set crl = off",
        )
    store = ctx.get_cert_store()
    if store is None:  # pragma: no cover - a fresh context always has a store
        raise ConfigError("OpenSSL context has no certificate store", path="revocation.crl")
    for crl in crl_list:
        store.add_crl(crl)
    flags = crypto.X509StoreFlags.CRL_CHECK
    if mode == "chain":
        flags |= crypto.X509StoreFlags.CRL_CHECK_ALL
    store.set_flags(flags)


# ---------------------------------------------------------------- OCSP stapling: server


def server_ocsp_callback(provider: Callable[[], bytes | None]) -> ServerOcspCallback:
    """A callback for ``ctx.set_ocsp_server_callback`` stapling what ``provider`` returns.

    OpenSSL calls it during a handshake in which the client asked for a status (``status_request``); the
    provider returns the current DER ``OCSPResponse`` for the server's certificate (typically a cached
    :meth:`evsim.pki.ocsp.OcspResponder.respond_for` result, refreshed on the simulation clock) or
    None to staple nothing.

    Args:
        provider: returns the response to staple, or None.

    Returns:
        The callback (returns ``b""`` for "no staple", which pyOpenSSL turns into ``SSL_TLSEXT_ERR_NOACK``).
        An exception from ``provider`` aborts the handshake (pyOpenSSL re-raises it from the handshake
        call), so a provider should return None when it has nothing fresh.
    """

    @c_callback(refuse=b"")
    def callback(conn: SSL.Connection, data: object) -> bytes:
        del conn, data
        return provider() or b""

    return callback


def install_ocsp_stapling(ctx: SSL.Context, provider: Callable[[], bytes | None]) -> None:
    """``ctx.set_ocsp_server_callback(server_ocsp_callback(provider))``.

    Args:
        ctx: a server context.
        provider: see :func:`server_ocsp_callback`.
    """
    ctx.set_ocsp_server_callback(server_ocsp_callback(provider))


# ---------------------------------------------------------------- OCSP stapling: client


@attrs.frozen
class OcspOutcome:
    """The client's OCSP verdict on one handshake.

    Attributes:
        check: what the stapled response says (status, detail, times).
        accepted: whether the handshake goes on.
        policy: the policy that decided.
    """

    check: OcspCheck
    accepted: bool
    policy: OcspPolicy

    @property
    def status(self) -> OcspCheckStatus:
        """The OCSP status (``good``, ``revoked``, ``unknown``, ``missing``, ``bad_signature``, ``stale``)."""
        return self.check.status

    @property
    def event_reason(self) -> str:
        """``ocsp_status:<status>``, for the ``ocsp_status`` event (reported whether accepted or not)."""
        return self.check.reason

    @property
    def failure_reason(self) -> str | None:
        """The handshake failure reason when refused: ``cert_invalid:revoked`` for a revoked certificate,
        ``ocsp_status:<status>`` otherwise; None when accepted."""
        if self.accepted:
            return None
        return events.CERT_REVOKED if self.check.status == "revoked" else self.check.reason


def ocsp_decision(policy: OcspPolicy, status: OcspCheckStatus, on_unknown: OnUnknown = "fail") -> bool:
    """Whether a handshake goes on, given the OCSP policy and the stapled response's status (module doc).

    Args:
        policy: ``"off"`` (always), ``"request"`` or ``"require"``.
        status: what :func:`~evsim.pki.ocsp.check_ocsp_response` concluded.
        on_unknown: ``"fail"`` or ``"soft_fail"`` for an authentic ``unknown``.

    Returns:
        True to continue the handshake.
    """
    if policy == "off" or status == "good":
        return True
    if status == "revoked":
        return False
    if status == "unknown":
        return on_unknown == "soft_fail"
    return policy == "request"  # missing, bad_signature, stale: soft-fail only when merely requested


def issuer_from_chain(leaf: x509.Certificate, chain: Sequence[x509.Certificate]) -> x509.Certificate | None:
    """The certificate in ``chain`` that issued ``leaf`` (name match and a verifying signature), or None.

    A self-signed leaf is its own issuer. The default ``issuer_lookup`` of :func:`client_ocsp_callback`:
    the chain is the one OpenSSL verified (leaf to trust anchor), so the issuer is trusted.

    Args:
        leaf: the peer's certificate.
        chain: candidate issuers (any order).

    Returns:
        The issuer, or None.
    """
    for candidate in (*chain, leaf):
        if candidate.subject != leaf.issuer:
            continue
        try:
            leaf.verify_directly_issued_by(candidate)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            continue
        return candidate
    return None


def verify_state_time(conn: SSL.Connection) -> _dt.datetime:
    """The simulation time of ``conn``: its :class:`~evsim.tls.verify.VerifyState` (app data) ``now()``.

    The default ``verify_time`` of :func:`client_ocsp_callback`; it is the time the stream checks
    certificate validity at.

    Args:
        conn: an evsim connection (``ClientTls.new_connection`` sets the app data).

    Returns:
        The aware UTC time.

    Raises:
        TypeError: the connection has no VerifyState (not made by evsim): a programming error, which
            pyOpenSSL re-raises from the handshake call.
    """
    state = conn.get_app_data()
    if not isinstance(state, VerifyState):
        raise TypeError("OCSP check on a connection without evsim VerifyState app data")
    return state.now()


def record_on_verify_state(conn: SSL.Connection, outcome: OcspOutcome) -> None:
    """The default ``on_status``: a refusal becomes the connection's handshake failure reason.

    The stream reports ``VerifyState.failure`` as the ``HandshakeFailed`` reason, so a refused staple reads
    ``cert_invalid:revoked`` / ``ocsp_status:<status>`` instead of OpenSSL's generic error text.

    Args:
        conn: the connection.
        outcome: the verdict.
    """
    reason = outcome.failure_reason
    state = conn.get_app_data()
    if reason is not None and isinstance(state, VerifyState):
        state.fail(reason, f"OCSP ({outcome.policy}): {outcome.check.detail}")


def _peer_chain(conn: SSL.Connection) -> list[x509.Certificate]:
    verified = conn.get_verified_chain(as_cryptography=True)
    if verified:
        return list(verified)
    return list(conn.get_peer_cert_chain(as_cryptography=True) or ())


def client_ocsp_callback(
    policy: Literal["request", "require"],
    *,
    issuer_lookup: IssuerLookup = issuer_from_chain,
    verify_time: Callable[[SSL.Connection], _dt.datetime] = verify_state_time,
    on_status: Callable[[SSL.Connection, OcspOutcome], None] = record_on_verify_state,
    on_unknown: OnUnknown = "fail",
    skew_s: float = 0.0,
    max_age_s: float | None = None,
) -> ClientOcspCallback:
    """A callback for ``ctx.set_ocsp_client_callback`` checking the stapled OCSP response.

    OpenSSL calls it once per full handshake in which the client requested a status (:func:`request_ocsp`),
    after the server's certificate was verified, with the stapled DER response (``b""`` when the server
    stapled nothing). The callback finds the leaf and its issuer in the verified chain, checks the response
    at ``verify_time(conn)`` (signature by the issuer or a delegated responder, CertID, thisUpdate/nextUpdate,
    status), reports it with ``on_status`` and returns :func:`ocsp_decision`. The context is shared by many
    connections, so everything per connection comes from ``conn``.

    Args:
        policy: ``"request"`` or ``"require"`` (for ``"off"`` install nothing).
        issuer_lookup: ``(leaf, verified chain) -> issuer``; default :func:`issuer_from_chain`.
        verify_time: the simulation time of a connection; default :func:`verify_state_time`.
        on_status: receives every outcome (accepted or not); default :func:`record_on_verify_state`. Wrap it
            to also emit the ``ocsp_status`` event.
        on_unknown: ``"fail"`` or ``"soft_fail"`` for an authentic ``unknown`` status.
        skew_s: clock skew tolerated on thisUpdate/nextUpdate.
        max_age_s: oldest thisUpdate accepted (None: nextUpdate alone limits the age).

    Returns:
        The callback (True: continue; False: OpenSSL aborts with ``bad_certificate_status_response``).

    Raises:
        ConfigError: an unknown policy or ``on_unknown``.
    """
    if policy not in ("request", "require"):
        raise ConfigError(
            "unknown OCSP stapling policy for a client callback",
            path="revocation.ocsp",
            value=policy,
            fix='use request or require (for "off" install no callback)',
        )
    if on_unknown not in ("fail", "soft_fail"):
        raise ConfigError(
            "unknown on_unknown policy",
            path="revocation.on_unknown",
            value=on_unknown,
            fix="use fail or soft_fail",
        )

    @c_callback(refuse=False)  # an interrupt here is raised by the stream, never taken for a verdict
    def callback(conn: SSL.Connection, ocsp_data: bytes, data: object) -> bool:
        del data
        reused = _ossl.session_reused(conn)
        if reused is None:  # pragma: no cover - binding without SSL_session_reused: the verify callback
            state = conn.get_app_data()  # does not run on a resumed handshake
            reused = isinstance(state, VerifyState) and state.calls == 0
        if reused:
            return True  # no certificate, no staple: checked when the session was established
        leaf = conn.get_peer_certificate(as_cryptography=True)
        if leaf is None:  # pragma: no cover - OpenSSL calls us only after a server certificate
            check = OcspCheck("missing", "the server sent no certificate")
        elif not ocsp_data:
            check = OcspCheck("missing", "the server stapled no OCSP response")
        else:
            issuer = issuer_lookup(leaf, _peer_chain(conn))
            if issuer is None:
                check = OcspCheck("bad_signature", "the issuer of the server certificate is not known")
            else:
                check = check_ocsp_response(
                    ocsp_data, leaf, issuer, now=verify_time(conn), skew_s=skew_s, max_age_s=max_age_s
                )
        outcome = OcspOutcome(check, ocsp_decision(policy, check.status, on_unknown), policy)
        on_status(conn, outcome)
        return outcome.accepted

    return callback


def install_ocsp_client(
    ctx: SSL.Context,
    policy: OcspPolicy,
    *,
    on_unknown: OnUnknown = "fail",
    on_status: Callable[[SSL.Connection, OcspOutcome], None] = record_on_verify_state,
) -> None:
    """Install :func:`client_ocsp_callback` on a client context (nothing for ``"off"``).

    Connections made from it must still call :func:`request_ocsp` before the handshake.

    Args:
        ctx: a client context.
        policy: ``"off"``, ``"request"`` or ``"require"``.
        on_unknown: see :func:`client_ocsp_callback`.
        on_status: see :func:`client_ocsp_callback`.

    Raises:
        ConfigError: an unknown policy.
    """
    if policy == "off":
        return
    ctx.set_ocsp_client_callback(client_ocsp_callback(policy, on_unknown=on_unknown, on_status=on_status))


def request_ocsp(conn: SSL.Connection, policy: OcspPolicy) -> None:
    """Ask the server for a stapled status (``status_request``) unless ``policy`` is ``"off"``.

    Must run on each client connection before its handshake (``ClientTls.new_connection``).

    Args:
        conn: a client connection, before the handshake.
        policy: the trust store's OCSP policy.
    """
    if policy != "off":
        conn.request_ocsp()
