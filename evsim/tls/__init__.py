"""TLS over any trio stream, driven by pyOpenSSL (the only package in evsim that imports OpenSSL).

Public API::

    TlsProfile(versions, cipher_suites, handshake_timeout_s, max_send_fragment, keylog, alpn, ...,
               groups, signature_algorithms, alpn_require, session=SessionPolicy(...),
               max_fragment_length, record_size_limit, recv_buffer, enforce)   / TlsProfile.from_toml
    TrustStore(name, anchors, hostname="san+cn", wildcards="deny", time_check="enforce",
               revocation=RevocationPolicy(...), max_depth=None)  / from_toml(resolve=...) / from_toml_files
    Identity(chain, key) / Identity.from_cert_key(cert_key) / from_toml / from_toml_files
    ClientTls.build(profile, trust, identity=None)
    ServerTls.build(profile, identity, trust=None, client_auth="none", *, ocsp=None)
    await tls_connect(transport, client_tls, server_hostname, *, verify_time=None, session=None,
                      sessions=None) -> TlsStream
    await tls_accept(transport, server_tls, *, verify_time=None) -> TlsStream
    TlsStream.info -> TlsInfo;  events.ocpp_security_event(reason, side=...)
    SessionStore (sessions.py);  Capabilities.of_profile(profile) (capabilities.py);  knobs.KNOB_STATES
"""

from __future__ import annotations

from evsim.tls import events, suites
from evsim.tls.config import (
    DEFAULT_SUITES,
    Identity,
    RevocationPolicy,
    SessionPolicy,
    SuiteMap,
    TlsProfile,
    TrustStore,
)
from evsim.tls.context import ClientAuth, ClientTls, KeylogWarning, ServerTls, clear_context_cache
from evsim.tls.events import ocpp_security_event
from evsim.tls.sessions import SessionStore
from evsim.tls.stream import (
    TlsBrokenTransport,
    TlsClosedTransport,
    TlsHandshakeFailed,
    TlsInfo,
    TlsRecordError,
    TlsSession,
    TlsStream,
    tls_accept,
    tls_connect,
)

__all__ = [
    "DEFAULT_SUITES",
    "ClientAuth",
    "ClientTls",
    "Identity",
    "KeylogWarning",
    "RevocationPolicy",
    "ServerTls",
    "SessionPolicy",
    "SessionStore",
    "SuiteMap",
    "TlsBrokenTransport",
    "TlsClosedTransport",
    "TlsHandshakeFailed",
    "TlsInfo",
    "TlsProfile",
    "TlsRecordError",
    "TlsSession",
    "TlsStream",
    "TrustStore",
    "clear_context_cache",
    "events",
    "ocpp_security_event",
    "suites",
    "tls_accept",
    "tls_connect",
]
