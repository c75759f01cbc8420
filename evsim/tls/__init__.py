"""TLS over any trio stream, driven by pyOpenSSL (the only package in evsim that imports OpenSSL).

Public API::

    TlsProfile(versions, cipher_suites, handshake_timeout_s, max_send_fragment, keylog, alpn, ...,
               groups, signature_algorithms, alpn_require, session=SessionPolicy(...),
               max_fragment_length, record_size_limit, recv_buffer, enforce)   / TlsProfile.from_toml
    TrustStore(name, anchors, hostname="san+cn", wildcards="deny", time_check="enforce",
               revocation=RevocationPolicy(...), max_depth=None)  / from_toml(resolve=...) / from_toml_files
    TrustStore(..., mode="pki" | "pinned_peers" | "tofu")
    Identity(chain, key) / Identity.from_cert_key(cert_key) / from_toml / from_toml_files
    ClientTls.build(profile, trust, identity=None, *, peer=None)
    ServerTls.build(profile, identity, trust=None, client_auth="none" | ... | "pairing", *, peer=None, ocsp=None,
                    sni={server_name: Identity})
    Listener(name, host, port, identity, profile, sni_identities, trust, client_auth, peer=, ocsp=)
        .compile() -> ServerTls (selects the identity by SNI) / .server_tls(name) / .identity_for(name)
        await .accept(transport, verify_time=...) -> TlsStream;  Listener.from_toml(table, path=, resolve=...)
    await tls_connect(transport, client_tls, server_hostname, *, verify_time=None, session=None, peer=None,
                      sessions=None, clock_synced=True) -> TlsStream
    await tls_accept(transport, server_tls, *, verify_time=None, peer=None) -> TlsStream
    TlsStream.info -> TlsInfo;  events.ocpp_security_event(reason, side=...)
    PeerPolicy(side=..., pins=PinSet, pairing=PeerTrust, change=ChangePolicy, sink=callable)  (peer.py)
        .open_pairing_window / .close_pairing_window / .register / .unpair / .release_pin / .expire_pins
        .state -> PeerState; .epoch;  PeerEvent.ocpp_security_event
    SessionStore (sessions.py);  Capabilities.of_profile(profile) (capabilities.py);  knobs.KNOB_STATES
"""

from __future__ import annotations

from evsim.tls import events, suites
from evsim.tls.config import DEFAULT_SUITES, Identity, SessionPolicy, SuiteMap, TlsProfile
from evsim.tls.context import (
    ClientAuth,
    ClientTls,
    KeylogWarning,
    KeySink,
    ServerTls,
    capture_keys,
    clear_context_cache,
)
from evsim.tls.events import ocpp_security_event
from evsim.tls.failures import TlsBrokenTransport, TlsClosedTransport, TlsHandshakeFailed, TlsRecordError
from evsim.tls.listener import Listener
from evsim.tls.peer import PeerEvent, PeerPolicy, PeerState
from evsim.tls.sessions import SessionStore
from evsim.tls.stream import TlsInfo, TlsSession, TlsStream, tls_accept, tls_connect
from evsim.tls.trust import RevocationPolicy, TrustStore

__all__ = [
    "DEFAULT_SUITES",
    "ClientAuth",
    "ClientTls",
    "Identity",
    "KeySink",
    "KeylogWarning",
    "Listener",
    "PeerEvent",
    "PeerPolicy",
    "PeerState",
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
    "capture_keys",
    "clear_context_cache",
    "events",
    "ocpp_security_event",
    "suites",
    "tls_accept",
    "tls_connect",
]
