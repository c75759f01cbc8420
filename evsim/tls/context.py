"""Compile the TLS model to pyOpenSSL contexts (cached), one per (profile, trust, identity[, client auth]).

A context is the expensive, shareable part (certificates parsed, key loaded, cipher lists compiled): 1000
stations with the same profile share one. Per-connection inputs - the expected server name and the
simulation time certificates are checked at - live in a :class:`~evsim.tls.verify.VerifyState` stored as
the OpenSSL connection's app data, so one shared context is safe.

What each model field compiles to:

* ``versions``: ``set_min_proto_version`` / ``set_max_proto_version`` (contiguous by validation); TLS
  1.0/1.1 additionally need ``@SECLEVEL=0`` on OpenSSL 3+.
* ``cipher_suites``: ``set_cipher_list`` (TLS <= 1.2, OpenSSL names) and ``set_tls13_ciphersuites``.
* always: no TLS compression (OCPP A00.FR.321), no renegotiation, ``SSL_MODE_RELEASE_BUFFERS`` (idle
  connections give their 2 x 17 KiB record buffers back: thousands of mostly idle stations).
* ``suite_preference = "server"``: ``OP_CIPHER_SERVER_PREFERENCE``.
* trust: anchors in the context's X509 store; ``set_verify(VERIFY_PEER [| VERIFY_FAIL_IF_NO_PEER_CERT],
  callback)``. Validity is checked at simulation time per connection (``verify.py`` says why
  ``X509Store.set_time`` cannot be used); the callback records failure reasons and checks the hostname.
* sessions (server): OpenSSL's internal server cache (``SESS_CACHE_SERVER``, OpenSSL default size and
  lifetime) with a session-id context derived from the configuration, which OpenSSL requires to resume
  sessions of verified clients; TLS 1.3 tickets as OpenSSL defaults (two per handshake).
* server ``sni`` (``evsim.tls.listener.Listener.sni_identities``): a servername callback on the default
  context switches the connection to the context compiled for the requested name (:func:`_install_sni`).
* ``keylog``: an NSS key log writer, with a :class:`KeylogWarning` and a log warning when compiled; inside
  :func:`capture_keys` every context also hands its key log lines to the capture's sink.
* ``alpn``: ``set_alpn_protos`` (client) / a select callback taking the server's first choice offered;
  ``alpn_require`` is checked by the stream after the handshake (``alpn_refused``).
* peer trust (``evsim.tls.peer``): a :class:`~evsim.tls.peer.PeerPolicy` per connection (or bound at
  build) runs pins, pairing and change checks from the verify callback at depth 0. ``TrustStore.mode``
  ``pinned_peers`` / ``tofu`` and ``client_auth="pairing"`` accept self-signed peers: the callback lets
  OpenSSL's unknown-CA errors through and the policy decides alone, so building one needs a policy that
  can (``peer.require_policy``). A context bound to a policy is rebuilt when the policy's ``epoch``
  changes (trust shrank), so its session cache never resumes a session from before the change.

Engine knobs (see ``knobs.KNOB_STATES``; compiled by :func:`_apply_engine_knobs` and :func:`_apply_revocation`):

* ``groups``: ``SSL_CTX_set1_groups_list`` through ``_ossl.set_groups`` (fallback ``set_tmp_ecdh``).
* ``signature_algorithms``: ``SSL_CTX_set1_sigalgs_list`` through ``_ossl.set_sigalgs``.
* ``session``: server ``resumption`` ``ids``/``both`` -> ``SESS_CACHE_SERVER``, else ``SESS_CACHE_OFF``;
  ``tickets``/``both`` -> tickets, else ``OP_NO_TICKET`` (both sides; in TLS 1.3 ``ids`` means OpenSSL's
  stateful tickets, which name a server cache entry). ``lifetime_s`` -> ``set_timeout`` (server cache and
  ticket lifetime hint, on the machine's wall clock; the client store counts simulation time).
* ``trust.max_depth``: ``set_verify_depth``. ``trust.revocation``: ``revocation.install_crls`` and, client
  side, ``install_ocsp_client`` plus ``request_ocsp`` on every new connection; server stapling comes from
  ``ServerTls.build(..., ocsp=provider)``.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import hashlib
import logging
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeAlias, cast

import attrs
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL import SSL, crypto

from evsim.errors import ConfigError
from evsim.interrupts import c_callback
from evsim.tls import _ossl, events
from evsim.tls.config import KNOWN_VERSIONS, Identity, TlsProfile
from evsim.tls.peer import PeerCheck, PeerMode, PeerPolicy, require_policy
from evsim.tls.revocation import install_crls, install_ocsp_client, install_ocsp_stapling, request_ocsp
from evsim.tls.suites import BY_IANA, SUITES
from evsim.tls.trust import TrustStore
from evsim.tls.verify import (
    X509_V_ERR_CERT_HAS_EXPIRED,
    X509_V_ERR_CERT_NOT_YET_VALID,
    X509_V_FLAG_NO_CHECK_TIME,
    VerifyState,
    check_hostname_der,
    check_validity,
    is_ip_literal,
    parse_asn1_time,
    verify_error_reason,
)

log = logging.getLogger(__name__)

ClientAuth: TypeAlias = Literal["none", "optional", "required", "pairing"]
OcspProvider: TypeAlias = Callable[[], bytes | None]
"""Returns the DER OCSP response a server staples (e.g. ``evsim.pki.ocsp.OcspStaple``), or None."""

_VERSIONS = {
    "1.0": SSL.TLS1_VERSION,
    "1.1": SSL.TLS1_1_VERSION,
    "1.2": SSL.TLS1_2_VERSION,
    "1.3": SSL.TLS1_3_VERSION,
}

# OP_NO_RENEGOTIATION exists in pyOpenSSL when the OpenSSL it runs on has it (1.1.0h+).
_OP_NO_RENEGOTIATION: int = getattr(SSL, "OP_NO_RENEGOTIATION", 0)
_MODE_RELEASE_BUFFERS: int = getattr(SSL, "MODE_RELEASE_BUFFERS", 0)

_SSL_MODE_NO_AUTO_CHAIN = 0x00000008  # SSL_MODE_NO_AUTO_CHAIN, openssl/ssl.h (not exported by pyOpenSSL)

_CONTEXT_CACHE_SIZE = 128

_EC_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "secp256r1": ec.SECP256R1,
    "secp384r1": ec.SECP384R1,
    "secp521r1": ec.SECP521R1,
}
"""The ``set_tmp_ecdh`` fallback's curves (= ``knobs.EC_GROUPS``)."""


def _needs_seclevel0(profile: TlsProfile) -> bool:
    if profile.min_version in ("1.0", "1.1"):
        return True
    return any(BY_IANA[name].seclevel0 for v in profile.versions for name in profile.suites(v))


class KeylogWarning(UserWarning):
    """TLS key logging is on: anyone with the file can decrypt the captured traffic."""


VerifyCallback: TypeAlias = Callable[[SSL.Connection, crypto.X509, int, int, int], bool]


_TIME_ERRORS = frozenset({X509_V_ERR_CERT_NOT_YET_VALID, X509_V_ERR_CERT_HAS_EXPIRED})


def _make_verify_callback(trust: TrustStore, *, check_host: bool, python_time: bool) -> VerifyCallback:
    """OpenSSL verify callback: record the reason of the first failure on the connection's VerifyState.

    OpenSSL calls it once per certificate, root first, leaf (depth 0) last, with ``ok`` = its own verdict
    (and again for each error it finds). ``python_time``: OpenSSL's time check is off, check it here.
    With a peer check on the VerifyState, each certificate is shown to it and it decides at depth 0; in
    a peer mode (self-signed peers) unknown-CA errors are left to it.
    """
    peer_mode = trust.peer_mode
    enforce_time = trust.time_check != "off"  # skip_until_clock_synced: per connection (state.skip_time)
    python_time = python_time and enforce_time
    host_mode = trust.hostname
    wildcards = trust.wildcards

    if trust.insecure_skip_verify:

        @c_callback(refuse=False)
        def accept_anything(conn: SSL.Connection, cert: crypto.X509, errno: int, depth: int, ok: int) -> bool:
            state = conn.get_app_data()
            if isinstance(state, VerifyState):
                state.calls += 1
                # Overriding an OpenSSL error (ok = 0): accept, and let the peer check decide on the call
                # that signals success at the same depth (OpenSSL makes one per certificate after its
                # checks). Returning True clears the X509 error (pyOpenSSL sets X509_V_OK), so a refusal
                # there sends internal_error like every refusal of the Python callback; refusing on the
                # error call itself would send that error's alert (unknown_ca for an unanchored chain).
                if state.peer is not None and ok:
                    return _check_peer(conn, state, cert, depth, verified=False)
            return True

        return accept_anything

    @c_callback(refuse=False)  # an interrupt here is raised by the stream, never taken for a verdict
    def callback(conn: SSL.Connection, cert: crypto.X509, errno: int, depth: int, ok: int) -> bool:
        state = conn.get_app_data()
        if not isinstance(state, VerifyState):  # pragma: no cover - every evsim connection has one
            return False
        state.calls += 1
        if state.failure is not None:
            return False
        if not ok:
            if errno in _TIME_ERRORS and not (enforce_time and not state.skip_time):
                return True  # time_check = "off", or not checked before the clock is synced
            if peer_mode and verify_error_reason(errno) == events.CERT_UNKNOWN_CA:
                return True  # self-signed peers: the peer policy decides at depth 0
            state.fail(
                verify_error_reason(errno), f"X509 verify error {errno} at depth {depth}: {_subject(cert)}"
            )
            return False
        if python_time and not state.skip_time:
            nb, na = cert.get_notBefore(), cert.get_notAfter()
            if nb is not None and na is not None:
                now = state.now()
                reason = check_validity(parse_asn1_time(nb), parse_asn1_time(na), now)
                if reason is not None:
                    state.fail(
                        reason,
                        f"{_subject(cert)} at depth {depth} is valid {nb.decode()}..{na.decode()}, "
                        f"checked at {now.isoformat()}",
                    )
                    return False
        if depth == 0 and check_host and state.server_hostname is not None and host_mode != "off":
            der = crypto.dump_certificate(crypto.FILETYPE_ASN1, cert)
            reason = check_hostname_der(der, state.server_hostname, host_mode, wildcards)
            if reason is not None:
                state.fail(reason, f"{_subject(cert)} does not match {state.server_hostname!r} ({host_mode})")
                return False
        if state.peer is not None or peer_mode:
            return _check_peer(conn, state, cert, depth, verified=not peer_mode)
        return True

    return callback


def _check_peer(
    conn: SSL.Connection, state: VerifyState, cert: crypto.X509, depth: int, *, verified: bool
) -> bool:
    """Show ``cert`` to the connection's peer check; at depth 0 let it decide (see ``evsim.tls.peer``)."""
    peer = state.peer
    if peer is None:  # a peer mode without a policy: build and connect refuse this; fail closed anyway
        state.fail(events.CERT_UNKNOWN_CA, f"self-signed peer {_subject(cert)} and no peer policy to decide")
        return False
    peer.see(depth, cert.to_cryptography())
    if depth != 0:
        return True
    sent = conn.get_peer_cert_chain(as_cryptography=True) if peer.side == "client" else None
    refusal = peer.check(now=state.now(), sent=sent, verified=verified)
    if refusal is not None:
        state.fail(*refusal)
        return False
    return True


def _subject(cert: crypto.X509) -> str:
    return cert.to_cryptography().subject.rfc4514_string()


KeySink: TypeAlias = Callable[[bytes], None]
"""Takes NSS key log lines, each ending in a newline (e.g. :meth:`evsim.net.capture.Capture.add_secrets`)."""

_key_sink: KeySink | None = None


@contextlib.contextmanager
def capture_keys(sink: KeySink) -> Iterator[None]:
    """Send the TLS secrets of every handshake in this process to ``sink`` while the block runs.

    Contexts compiled before the block are forgotten on entering and leaving it, so every context used inside
    reports to ``sink`` and none does afterwards. One capture at a time per process.

    Raises:
        ConfigError: another ``capture_keys`` block is active.
    """
    global _key_sink
    if _key_sink is not None:
        raise ConfigError("TLS secrets are already being captured in this process (one capture at a time)")
    clear_context_cache()
    _key_sink = sink
    try:
        yield
    finally:
        _key_sink = None
        clear_context_cache()


def _keylog_writer(path: str | None, sink: KeySink | None) -> Callable[[SSL.Connection, bytes], None]:
    target = Path(path) if path else None

    @c_callback(refuse=None)
    def write(conn: SSL.Connection, line: bytes) -> None:
        del conn
        if target is not None:
            with target.open("ab") as fh:
                fh.write(line + b"\n")
        if sink is not None:
            sink(line + b"\n")

    return write


def _base_context(
    method: int, profile: TlsProfile, identity: Identity | None, *, server: bool
) -> SSL.Context:
    ctx = SSL.Context(method)
    ctx.set_min_proto_version(_VERSIONS[profile.min_version])
    ctx.set_max_proto_version(_VERSIONS[profile.max_version])
    options = SSL.OP_NO_COMPRESSION | _OP_NO_RENEGOTIATION
    if server and profile.suite_preference == "server":
        options |= SSL.OP_CIPHER_SERVER_PREFERENCE
    ctx.set_options(options)
    # Send exactly Identity.chain: without NO_AUTO_CHAIN, OpenSSL completes a leaf-only chain from the
    # context's *verify* store, so what a server sends would depend on its client-auth trust anchors.
    ctx.set_mode(_MODE_RELEASE_BUFFERS | _SSL_MODE_NO_AUTO_CHAIN)
    cipher_list = profile.openssl_cipher_list()
    if _needs_seclevel0(profile):
        # OpenSSL 3+ refuses TLS < 1.2 and the CCM_8 suites at security level >= 1 (suites.py); the level
        # is set through the cipher string, so a TLS 1.3-only profile needs one too.
        cipher_list = (cipher_list or b"DEFAULT") + b":@SECLEVEL=0"
    if cipher_list:
        try:
            ctx.set_cipher_list(cipher_list)
        except SSL.Error as exc:
            raise ConfigError(
                f"this OpenSSL build accepts none of the TLS 1.2 suites ({exc})",
                path='cipher_suites."1.2"',
                value=cipher_list.decode(),
                fix="pick suites from `evsim tls capabilities`",
            ) from exc
    tls13 = profile.tls13_ciphersuites()
    if tls13:
        try:
            ctx.set_tls13_ciphersuites(tls13)
        except SSL.Error as exc:  # pragma: no cover - every name in the table is known to OpenSSL 3+
            raise ConfigError(
                f"this OpenSSL build refuses the TLS 1.3 suites ({exc})",
                path='cipher_suites."1.3"',
                value=tls13.decode(),
                fix="pick suites from `evsim tls capabilities`",
            ) from exc
    if identity is not None:
        # pyOpenSSL >= 24 takes cryptography objects (and deprecates its own X509/PKey here); typed Any
        # because the installed types-pyOpenSSL stubs still declare the old signatures.
        chain: tuple[Any, ...] = identity.chain
        key: Any = identity.key
        ctx.use_certificate(chain[0])
        for intermediate in chain[1:]:
            ctx.add_extra_chain_cert(intermediate)
        ctx.use_privatekey(key)
        ctx.check_privatekey()
    if profile.keylog:
        message = (
            f"TLS key logging is ON: session keys are written to {profile.keylog}; anyone with this file "
            "can decrypt the captured traffic. Use it for debugging only."
        )
        warnings.warn(message, KeylogWarning, stacklevel=4)
        log.warning(message)
    if profile.keylog or _key_sink is not None:
        ctx.set_keylog_callback(_keylog_writer(profile.keylog, _key_sink))
    _apply_engine_knobs(ctx, profile, server=server)
    return ctx


# ---------------------------------------------------------------- engine knobs


def _apply_engine_knobs(ctx: SSL.Context, profile: TlsProfile, *, server: bool) -> None:
    """Compile ``groups``, ``signature_algorithms`` and the session policy (module doc)."""
    groups = list(profile.groups)
    if groups and not _ossl.set_groups(ctx, groups):  # pragma: no cover - OpenSSL 3.5+ knows knobs.GROUPS
        if _ossl.HAVE_GROUPS_LIST:
            raise ConfigError(
                "this OpenSSL build refuses the groups",
                path="groups",
                value=groups,
                fix="pick groups from `evsim tls capabilities`",
            )
        # partial fallback: one EC curve (TlsProfile refused anything else when the binding lacks the list)
        ctx.set_tmp_ecdh(_EC_CURVES[groups[0]]())
    sigalgs = list(profile.signature_algorithms)
    if sigalgs and not _ossl.set_sigalgs(ctx, sigalgs) and _ossl.HAVE_SIGALGS_LIST:  # pragma: no cover
        raise ConfigError(
            "this OpenSSL build refuses the signature algorithms",
            path="signature_algorithms",
            value=sigalgs,
            fix="pick schemes from `evsim tls capabilities`",
        )
    session = profile.session
    if not session.tickets:
        ctx.set_options(SSL.OP_NO_TICKET)
    if server:
        ctx.set_session_cache_mode(SSL.SESS_CACHE_SERVER if session.ids else SSL.SESS_CACHE_OFF)
        ctx.set_timeout(int(session.lifetime_s))


def _apply_revocation(ctx: SSL.Context, trust: TrustStore, *, server: bool) -> None:
    """Compile ``trust.max_depth`` and ``trust.revocation`` on a fresh context (module doc)."""
    if trust.max_depth is not None:
        ctx.set_verify_depth(trust.max_depth)
    policy = trust.revocation
    install_crls(ctx, policy.crls, policy.crl)
    if not server:
        install_ocsp_client(ctx, policy.ocsp, on_unknown=policy.on_unknown)


def _install_trust(
    ctx: SSL.Context, trust: TrustStore, mode: int, *, check_host: bool, conn_time: bool
) -> None:
    store = ctx.get_cert_store()
    if store is None:  # pragma: no cover - a fresh context always has a store
        raise ConfigError("OpenSSL context has no certificate store", path=f"trust.{trust.name}")
    for anchor in trust.anchors:
        store.add_cert(crypto.X509.from_cryptography(anchor))
    if trust.insecure_skip_verify:
        log.warning(
            "TLS trust store %r has insecure_skip_verify: peer certificates are NOT verified (no chain, name "
            "or validity check); anyone can impersonate the peer. Development only.",
            trust.name,
        )
    if not conn_time:
        store.set_flags(X509_V_FLAG_NO_CHECK_TIME)  # the verify callback checks validity instead
    ctx.set_verify(mode, _make_verify_callback(trust, check_host=check_host, python_time=not conn_time))


def _session_id_context(*parts: object) -> bytes:
    """A <= 32-byte session id context unique to the configuration (OpenSSL needs one to resume sessions of
    verified clients; sessions never cross configurations)."""
    return b"evsim:" + hashlib.sha256(repr(parts).encode()).digest()[:16]


def _encode_hostname(name: str) -> bytes:
    try:
        return name.encode("ascii")
    except UnicodeEncodeError:
        return name.encode("idna")


@attrs.frozen(eq=False)
class ClientTls:
    """Compiled client-side TLS: a shared OpenSSL context plus the model it came from.

    Build with :meth:`build` (cached: equal inputs give the same object).
    """

    side: ClassVar[Literal["client"]] = "client"
    profile: TlsProfile
    trust: TrustStore
    identity: Identity | None
    context: SSL.Context = attrs.field(repr=False)
    connection_time: bool = True
    """The stream sets the validity-check time per connection (else the verify callback checks it)."""
    peer: PeerPolicy | None = None
    """The peer policy bound at build (used when a connection is given none)."""
    epoch: int = 0
    """``peer.epoch`` when this context was compiled (a newer epoch rebuilds it)."""

    @classmethod
    def build(
        cls,
        profile: TlsProfile,
        trust: TrustStore,
        identity: Identity | None = None,
        *,
        peer: PeerPolicy | None = None,
    ) -> ClientTls:
        """Compile (or fetch from the cache) a client context.

        Args:
            profile: versions, suites, timeouts...
            trust: anchors and the hostname/time policy used to verify the server.
            identity: our client certificate (OCPP security profile 3), or None.
            peer: a client-side peer policy (pins, pairing, change) bound to this context; required when
                ``trust.mode`` is ``pinned_peers`` or ``tofu``.

        Returns:
            The compiled client configuration.

        Raises:
            ConfigError: the OpenSSL build refuses the configured suites; a peer mode without a policy
                that can decide alone; a server-side policy.
        """
        require_policy(peer, trust.mode, side="client")
        return _build_client(profile, trust, identity, peer, peer.epoch if peer is not None else 0)

    def begin_peer(self, peer: PeerPolicy | None, server_hostname: str | None) -> PeerCheck | None:
        """The peer check of a new connection: for ``peer``, else for the policy bound at build.

        Args:
            peer: a policy for this connection only, or None.
            server_hostname: the name dialled (the peer's name in the change memory).

        Returns:
            The check to store on the connection's VerifyState, or None when there is no policy.

        Raises:
            ConfigError: ``peer`` cannot decide for this context's trust mode, or is server-side.
        """
        if peer is None:
            return None if self.peer is None else self.peer.begin("client", server_hostname)
        require_policy(peer, self.trust.mode, side="client")
        return peer.begin("client", server_hostname)

    def new_connection(
        self,
        server_hostname: str | None,
        verify_time: Callable[[], datetime.datetime] | None = None,
    ) -> tuple[SSL.Connection, VerifyState]:
        """A fresh OpenSSL connection in client mode with SNI set (not for IP literals).

        With a policy bound at build, the VerifyState carries its check (:meth:`begin_peer` replaces it).
        """
        current = self
        if self.peer is not None and self.peer.epoch != self.epoch:  # trust shrank: a fresh context
            current = _build_client(self.profile, self.trust, self.identity, self.peer, self.peer.epoch)
        conn = SSL.Connection(current.context, None)
        conn.set_connect_state()
        state = VerifyState(server_hostname, verify_time)
        state.peer = self.begin_peer(None, server_hostname)
        conn.set_app_data(state)
        if server_hostname and not is_ip_literal(server_hostname):
            conn.set_tlsext_host_name(_encode_hostname(server_hostname))
        request_ocsp(conn, self.trust.revocation.ocsp)
        return conn, state


@functools.lru_cache(maxsize=_CONTEXT_CACHE_SIZE)
def _build_client(
    profile: TlsProfile, trust: TrustStore, identity: Identity | None, peer: PeerPolicy | None, epoch: int
) -> ClientTls:
    ctx = _base_context(SSL.TLS_CLIENT_METHOD, profile, identity, server=False)
    conn_time = _ossl.HAVE_CONNECTION_TIME
    _install_trust(ctx, trust, SSL.VERIFY_PEER, check_host=True, conn_time=conn_time)
    _apply_revocation(ctx, trust, server=False)
    if profile.alpn:
        ctx.set_alpn_protos([p.encode() for p in profile.alpn])
    return ClientTls(profile, trust, identity, ctx, conn_time, peer, epoch)


@attrs.frozen(eq=False)
class ServerTls:
    """Compiled server-side TLS: a shared OpenSSL context plus the model it came from.

    Build with :meth:`build` (cached: equal inputs give the same object).
    """

    side: ClassVar[Literal["server"]] = "server"
    profile: TlsProfile
    identity: Identity
    trust: TrustStore | None
    client_auth: ClientAuth
    context: SSL.Context = attrs.field(repr=False)
    connection_time: bool = True
    """The stream sets the validity-check time per connection (else the verify callback checks it)."""
    peer: PeerPolicy | None = None
    """The peer policy bound at build (used when a connection is given none)."""
    epoch: int = 0
    """``peer.epoch`` when this context was compiled (a newer epoch rebuilds it: fresh session cache)."""
    ocsp: OcspProvider | None = attrs.field(default=None, repr=False)
    """What the server staples (None: nothing)."""
    sni: tuple[tuple[str, Identity], ...] = ()
    """Server name -> identity, sorted by name (empty: one identity for every client)."""

    @property
    def verifies_peer(self) -> bool:
        """True when client certificates are verified (``client_auth`` is not ``"none"``)."""
        return self.client_auth != "none"

    @property
    def peer_mode(self) -> PeerMode:
        """What this context leaves to the peer policy (``pki``: nothing; else the whole decision)."""
        return _server_peer_mode(self.trust, self.client_auth)

    @classmethod
    def build(
        cls,
        profile: TlsProfile,
        identity: Identity,
        trust: TrustStore | None = None,
        client_auth: ClientAuth = "none",
        *,
        peer: PeerPolicy | None = None,
        ocsp: OcspProvider | None = None,
        sni: Mapping[str, Identity] | None = None,
    ) -> ServerTls:
        """Compile (or fetch from the cache) a server context.

        Args:
            profile: versions, suites, timeouts...
            identity: the server certificate chain and key.
            trust: anchors for verifying client certificates (needed unless ``client_auth="none"``;
                with ``"pairing"``: None, or a ``pinned_peers`` store to set the time check).
            client_auth: ``"none"`` (security profile 2), ``"optional"`` (verify a certificate if one is
                sent), ``"required"`` (security profile 3: refuse clients without a valid certificate),
                ``"pairing"`` (SHIP: a client certificate is required, any self-signed one passes the chain
                check and the peer policy's pairing list decides).
            peer: a server-side peer policy bound to this listener's context; required for ``"pairing"``
                (with a pairing list) and for a ``pinned_peers`` / ``tofu`` trust store.
            ocsp: staples what it returns (OCSP stapling, RFC 6066 §8) to clients that ask; must be
                hashable (contexts are cached per provider: pass the same object to share a context).
            sni: server name -> identity (exact, lower-case names; see :func:`_install_sni`): a client
                that sends one of these names gets that certificate, any other client gets ``identity``.
                Every other setting is shared. Usually built by :class:`evsim.tls.listener.Listener`.

        Returns:
            The compiled server configuration.

        Raises:
            ConfigError: client authentication without a trust store, an unknown ``client_auth``, a
                peer mode without a policy that can decide alone, suites the OpenSSL build refuses, or an
                OCSP policy on the client-certificate trust store (stapling checks server certificates only).
        """
        if client_auth not in ("none", "optional", "required", "pairing"):
            raise ConfigError(
                "unknown client_auth",
                path="client_auth",
                value=client_auth,
                fix="use none, optional, required or pairing",
            )
        if client_auth == "pairing":
            trust = _pairing_trust(trust)
        if client_auth != "none" and trust is None:
            raise ConfigError(
                f'client_auth = "{client_auth}" needs a trust store for client certificates',
                path="client_auth",
                value=client_auth,
                fix="give the station CA trust store (e.g. certs/ca.crt)",
            )
        if trust is not None and client_auth != "none" and trust.revocation.ocsp != "off":
            raise ConfigError(
                "OCSP stapling checks the server's certificate; a server cannot ask a client for a staple",
                path=f"trust.{trust.name}.revocation.ocsp",
                value=trust.revocation.ocsp,
                fix='use revocation.crl for client certificates and set ocsp = "off" here',
            )
        if client_auth == "optional" and trust is not None and trust.peer_mode:
            raise ConfigError(
                f'client_auth = "optional" with a {trust.mode} trust store would let clients without a '
                "certificate skip the peer policy",
                path="client_auth",
                value=client_auth,
                fix='use client_auth = "required" (or "pairing")',
            )
        require_policy(peer, _server_peer_mode(trust, client_auth), side="server")
        by_name = tuple(sorted((sni or {}).items()))
        return _build_server(
            profile, identity, trust, client_auth, peer, peer.epoch if peer is not None else 0, ocsp, by_name
        )

    def begin_peer(self, peer: PeerPolicy | None) -> PeerCheck | None:
        """The peer check of a new connection: for ``peer``, else for the policy bound at build.

        Args:
            peer: a policy for this connection only, or None.

        Returns:
            The check to store on the connection's VerifyState; None without a policy or client auth.

        Raises:
            ConfigError: ``peer`` cannot decide for this context's mode, or is client-side.
        """
        if peer is not None:
            require_policy(peer, self.peer_mode, side="server")
        policy = peer if peer is not None else self.peer
        return policy.begin("server", None) if policy is not None and self.verifies_peer else None

    def new_connection(
        self, verify_time: Callable[[], datetime.datetime] | None = None
    ) -> tuple[SSL.Connection, VerifyState]:
        """A fresh OpenSSL connection in server mode.

        With a policy bound at build, the VerifyState carries its check (:meth:`begin_peer` replaces it).
        """
        current = self
        if self.peer is not None and self.peer.epoch != self.epoch:  # trust shrank: fresh session cache
            current = _build_server(
                self.profile,
                self.identity,
                self.trust,
                self.client_auth,
                self.peer,
                self.peer.epoch,
                self.ocsp,
                self.sni,
            )
        conn = SSL.Connection(current.context, None)
        conn.set_accept_state()
        state = VerifyState(None, verify_time)
        state.peer = self.begin_peer(None)
        conn.set_app_data(state)
        return conn, state


PAIRING_TRUST_NAME = "pairing"
"""Name of the trust store ``client_auth="pairing"`` uses when given none."""


def _pairing_trust(trust: TrustStore | None) -> TrustStore:
    """The trust store of a pairing listener: ``pinned_peers``, no hostname check (SHIP identifies by SKI)."""
    if trust is None:
        return TrustStore(PAIRING_TRUST_NAME, (), hostname="off", mode="pinned_peers")
    if not trust.peer_mode:
        raise ConfigError(
            'client_auth = "pairing" accepts self-signed clients; a CA trust store does not apply',
            path=f"trust.{trust.name}.mode",
            value=trust.mode,
            fix='omit the trust store, or give one with mode = "pinned_peers"',
        )
    return trust


def _server_peer_mode(trust: TrustStore | None, client_auth: ClientAuth) -> PeerMode:
    if client_auth == "pairing":
        return "pairing"
    if client_auth == "none" or trust is None:
        return "pki"
    return trust.mode


@functools.lru_cache(maxsize=_CONTEXT_CACHE_SIZE)
def _build_server(
    profile: TlsProfile,
    identity: Identity,
    trust: TrustStore | None,
    client_auth: ClientAuth,
    peer: PeerPolicy | None,
    epoch: int,
    ocsp: OcspProvider | None = None,
    sni: tuple[tuple[str, Identity], ...] = (),
) -> ServerTls:
    ctx = _base_context(SSL.TLS_SERVER_METHOD, profile, identity, server=True)  # session cache mode too
    ctx.set_session_id(_session_id_context(profile, identity, trust, client_auth, epoch))
    conn_time = _ossl.HAVE_CONNECTION_TIME
    if trust is not None and client_auth != "none":
        mode = SSL.VERIFY_PEER
        if client_auth in ("required", "pairing"):
            mode |= SSL.VERIFY_FAIL_IF_NO_PEER_CERT
        _install_trust(ctx, trust, mode, check_host=False, conn_time=conn_time)
        _apply_revocation(ctx, trust, server=True)
    if ocsp is not None:
        install_ocsp_stapling(ctx, ocsp)
    if profile.alpn:
        offer = [p.encode() for p in profile.alpn]

        @c_callback(refuse=cast(bytes, SSL.NO_OVERLAPPING_PROTOCOLS))
        def select(conn: SSL.Connection, offered: list[bytes]) -> bytes:
            del conn
            for proto in offer:
                if proto in offered:
                    return proto
            none_shared: Any = SSL.NO_OVERLAPPING_PROTOCOLS  # typed differently by the stubs and pyOpenSSL
            return cast(bytes, none_shared)

        ctx.set_alpn_select_callback(select)
    if sni:
        alternatives = {
            name: _build_server(profile, ident, trust, client_auth, peer, epoch, ocsp).context
            for name, ident in sni
        }
        _install_sni(ctx, alternatives)
    return ServerTls(profile, identity, trust, client_auth, ctx, conn_time, peer, epoch, ocsp, sni)


def _install_sni(ctx: SSL.Context, alternatives: Mapping[str, SSL.Context]) -> None:
    """Serve another certificate per requested server name (SNI, RFC 6066 §3).

    OpenSSL calls the servername callback of the connection's (default) context while it processes the
    ClientHello; for a name in ``alternatives`` (exact match after lower-casing and dropping a trailing dot)
    it switches the connection to that name's context (``SSL_set_SSL_CTX``), which changes the certificate
    and key sent. No SNI, or any other name: the default context's identity. The alternatives are compiled
    from the same profile, trust, client auth, peer policy and OCSP provider, so it does not matter which
    of the two contexts OpenSSL reads the other settings from (verify mode and callback stay the
    connection's, the verify store is the new context's: the same anchors).

    pyOpenSSL's wrapper lets the callback only accept (return) or fail by raising, which it reports through
    ``sys.excepthook``; so unknown names are never refused here (no ``unrecognized_name`` strict mode).
    """

    @c_callback(refuse=None)
    def on_servername(conn: SSL.Connection) -> None:
        raw = conn.get_servername()
        if not raw:
            return
        alternative = alternatives.get(raw.decode("ascii", "replace").lower().rstrip("."))
        if alternative is not None:
            conn.set_context(alternative)

    ctx.set_tlsext_servername_callback(on_servername)


_WIRE_VERSIONS = {"1.0": 0x0301, "1.1": 0x0302, "1.2": 0x0303, "1.3": 0x0303}
"""ClientHello.client_version per newest offered version (TLS 1.3 sends 1.2 there, RFC 8446 §4.1.2)."""


@functools.lru_cache(maxsize=_CONTEXT_CACHE_SIZE)
def check_client_hello(profile: TlsProfile) -> None:
    """Check that this OpenSSL build can send a ClientHello offering ``profile``'s versions and suites.

    Compiles a client context (no trust: nothing is verified) and lets OpenSSL write its first flight to a
    memory BIO; nothing is sent anywhere. A build without TLS 1.0/1.1 (``no-tls1``...), or one that drops
    every suite of an enabled version even at security level 0, fails here ("no protocols available",
    "no ciphers available") instead of in the middle of a run.

    Raises:
        ConfigError: what OpenSSL said, with the versions, at path ``versions``.
    """
    versions = ", ".join(f"TLS {v}" for v in profile.versions)
    try:
        ctx = _base_context(SSL.TLS_CLIENT_METHOD, profile, None, server=False)
        conn = SSL.Connection(ctx, None)
        conn.set_connect_state()
        with contextlib.suppress(SSL.WantReadError):  # the ClientHello is written, the reply awaited
            conn.do_handshake()
        hello = conn.bio_read(65536)
    except (SSL.Error, ConfigError) as exc:
        reason = exc.message if isinstance(exc, ConfigError) else str(exc)
        raise ConfigError(
            f"this OpenSSL build ({_ossl.engine_version()}) cannot offer {versions}: {reason}",
            path="versions",
            value=list(profile.versions),
            fix="offer TLS 1.2 or 1.3, or install a cryptography wheel whose OpenSSL still has TLS 1.0/1.1 "
            "(the PyPI wheels do, at security level 0)",
        ) from exc
    # record header (5 bytes), handshake header (4 bytes), then ClientHello.client_version (RFC 5246 §7.4.1.2)
    offered = int.from_bytes(hello[9:11], "big") if len(hello) >= 11 else None
    if offered != _WIRE_VERSIONS[profile.max_version]:  # pragma: no cover - a build that caps the version
        raise ConfigError(
            f"this OpenSSL build ({_ossl.engine_version()}) cannot offer {versions}: its ClientHello says "
            f"{offered if offered is None else hex(offered)}",
            path="versions",
            value=list(profile.versions),
            fix="offer TLS 1.2 or 1.3, or install a cryptography wheel whose OpenSSL still has TLS 1.0/1.1",
        )


@functools.cache
def engine_cipher_names() -> tuple[str, ...]:
    """Every cipher suite this OpenSSL build can offer, OpenSSL names, in its default order.

    TLS <= 1.2: OpenSSL's ``ALL`` list at security level 0 (every suite it has, except the null ciphers);
    TLS 1.3: each suite of ``evsim.tls.suites`` tried on its own (``SSL_CTX_set_ciphersuites`` knows no
    wildcard).
    """
    tls13: list[str] = []
    for suite in SUITES:
        if suite.version != "1.3":
            continue
        ctx = SSL.Context(SSL.TLS_METHOD)
        try:
            ctx.set_tls13_ciphersuites(suite.iana.encode())
        except SSL.Error:  # pragma: no cover - every TLS 1.3 name of the table is in OpenSSL 3+
            continue
        if suite.iana in SSL.Connection(ctx, None).get_cipher_list():
            tls13.append(suite.iana)
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_VERSION)
    ctx.set_cipher_list(b"ALL:@SECLEVEL=0")
    ctx.set_tls13_ciphersuites(b"")
    return (*tls13, *SSL.Connection(ctx, None).get_cipher_list())


@functools.cache
def engine_versions() -> tuple[str, ...]:
    """The versions this OpenSSL build can offer (newest first): each one checked with a ClientHello offering
    only it, with every suite of ``evsim.tls.suites`` that works in it (TLS 1.0/1.1 at security level 0)."""
    out: list[str] = []
    for version in reversed(KNOWN_VERSIONS):
        key = "1.3" if version == "1.3" else "1.2"
        at = KNOWN_VERSIONS.index(version)
        usable = [s.iana for s in SUITES if s.version == key and KNOWN_VERSIONS.index(s.min_version) <= at]
        profile = TlsProfile(versions=(version,), cipher_suites={key: usable}, insecure_legacy_versions=True)
        try:
            check_client_hello(profile)
        except ConfigError:  # pragma: no cover - a build without this version
            continue
        out.append(version)
    return tuple(out)


def clear_context_cache() -> None:
    """Forget every compiled context (tests; or after regenerating certificates on disk)."""
    _build_client.cache_clear()
    _build_server.cache_clear()
