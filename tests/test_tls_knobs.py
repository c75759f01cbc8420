"""One test (or a few) per TLS-model knob, each against a peer that violates it: real handshakes over
``trio.testing.memory_stream_pair`` with contexts compiled from the model (``ClientTls.build`` /
``ServerTls.build``), every I/O under ``trio.fail_after``, verification never disabled.

Knobs already proven elsewhere keep their test there (this file does not repeat them). Which test proves
which knob is the table :data:`KNOB_TESTS` below, checked by
``test_every_enforced_knob_has_a_test_that_changes_the_handshake``: every knob the engine calls ``enforced``
(``evsim.tls.knobs.KNOB_STATES``) must name at least one existing handshake test (an ``async`` test: real
TLS over trio streams) that refuses a violating peer or observes the setting on the wire.

Here: version priority, suite preference on the wire, groups, signature algorithms, ALPN require,
sessions (ids, tickets, off, lifetime in virtual time, keys across trust), revocation from the model (CRL
leaf/chain, OCSP stapling by ``evsim.pki``'s responder, require), CRL refresh = new context, max_depth,
declared record knobs and ``enforce``, the TOML constructors, capabilities and the CLI, and the event table.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import datetime as dt
import functools
import json
import struct
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from evsim.cli import build_parser, main
from evsim.errors import ConfigError, HandshakeFailed, TransportError
from evsim.pki import CertificateAuthority, CertKey
from evsim.pki.ocsp import OcspResponder, OcspStaple
from evsim.pki.revocation import RevocationList
from evsim.tls import (
    ClientTls,
    Identity,
    ServerTls,
    TlsProfile,
    TlsStream,
    TrustStore,
    events,
    tls_accept,
    tls_connect,
)
from evsim.tls.capabilities import Capabilities
from evsim.tls.config import SessionPolicy
from evsim.tls.knobs import KNOB_STATES, check_enforce
from evsim.tls.sessions import SessionStore
from evsim.tls.suites import BY_OPENSSL, SUITES
from evsim.tls.trust import RevocationPolicy
from tests.pki_fixtures import CSMS_HOST, TEST_NOW, make_test_pki, tls_pair, unknown_ocsp_staple
from tests.test_tls_stream import RecordingStream

PKI = make_test_pki()

KNOB_TESTS: dict[str, tuple[str, ...]] = {
    # TlsProfile
    "versions": (
        "test_tls_knobs.py::test_version_priority_and_downgrade",
        "test_tls_verify.py::test_tls12_client_vs_tls13_only_server_is_a_downgrade_refusal",
        "test_tls_verify.py::test_tls13_only_client_vs_tls12_only_server",
        "test_tls_verify.py::test_legacy_tls11_client_is_refused",
    ),
    "versions.order": (
        "test_tls_knobs.py::test_version_priority_and_downgrade",
        "test_tls_knobs.py::test_a_version_order_the_engine_cannot_honour_is_refused",
    ),
    "cipher_suites": (
        "test_tls_stream.py::test_tls12_suite_list_restricts_negotiation",
        "test_tls_stream.py::test_tls13_suite_list_restricts_negotiation",
        "test_tls_verify.py::test_disjoint_tls12_suites_is_a_cipher_refusal",
    ),
    "suite_preference": ("test_tls_knobs.py::test_suite_preference_is_observed_in_the_server_hello",),
    "groups": (
        "test_tls_knobs.py::test_groups_restrict_the_key_exchange",
        "test_tls_knobs.py::test_the_clients_group_order_decides",
    ),
    "signature_algorithms": (
        "test_tls_knobs.py::test_signature_algorithms_refuse_a_server_that_cannot_sign_with_them",
    ),
    "alpn": ("test_tls_stream.py::test_info_tls13_mutual",),
    "alpn_require": ("test_tls_knobs.py::test_alpn_require_closes_when_nothing_was_negotiated",),
    "handshake_timeout_s": (
        "test_tls_stream.py::test_handshake_timeout_client",
        "test_tls_stream.py::test_handshake_timeout_server",
    ),
    "session.resumption": (
        "test_tls_knobs.py::test_tls12_resumption_by_ids_and_by_tickets",
        "test_tls_knobs.py::test_tls13_resumption_modes",
        "test_tls_knobs.py::test_client_resumption_off_never_offers",
    ),
    "session.lifetime_s": ("test_tls_knobs.py::test_session_lifetime_expires_in_virtual_time",),
    "session.cache_entries": ("test_tls_knobs.py::test_session_store_is_bounded",),
    "record.max_send_fragment": ("test_tls_stream.py::test_max_send_fragment_limits_records",),
    "keylog": ("test_tls_stream.py::test_keylog_only_when_asked",),
    # TrustStore
    "trust.anchors": (
        "test_tls_verify.py::test_unknown_ca_refused_by_client",
        "test_tls_verify.py::test_impostor_root_with_the_same_name_is_unknown",
        "test_link_service.py::test_each_endpoint_trusts_its_own_root",
    ),
    "trust.hostname": ("test_tls_verify.py::test_hostname_mismatch",),
    "trust.wildcards": ("test_tls_verify.py::test_wildcard_refused_by_default_and_allowed_on_request",),
    "trust.time_check": (
        "test_tls_verify.py::test_expired_at_simulation_time",
        "test_tls_verify.py::test_time_check_off_accepts_expired",
        "test_tls_knobs.py::test_skip_until_clock_synced",
    ),
    "trust.max_depth": ("test_tls_knobs.py::test_max_depth_refuses_a_longer_chain",),
    "trust.revocation.crl": ("test_tls_knobs.py::test_crl_leaf_and_chain_from_the_trust_store",),
    "trust.revocation.ocsp": ("test_tls_knobs.py::test_ocsp_stapling_from_the_pki_responder",),
    "trust.revocation.on_unknown": ("test_tls_knobs.py::test_ocsp_on_unknown_from_the_trust_store",),
    "trust.mode": (
        "test_tls_peer.py::test_tofu_learns_the_first_server_and_refuses_another_key",
        "test_tls_peer.py::test_pinned_peers_mode_still_refuses_a_self_signed_server_without_a_matching_pin",
    ),
    # Listener
    "client_auth": (
        "test_tls_verify.py::test_required_client_cert_missing",
        "test_tls_verify.py::test_client_cert_from_another_ca",
        "test_tls_listener.py::test_client_auth_none_and_optional",
        "test_tls_listener.py::test_client_auth_pairing_through_a_listener",
    ),
    "listener.sni_identities": (
        "test_tls_listener.py::test_the_client_gets_the_certificate_of_the_name_it_asked_for",
    ),
    # peer trust
    "pins.enforcement": (
        "test_tls_peer.py::test_pin_mismatch_enforce_refuses",
        "test_tls_peer.py::test_pin_mismatch_report_only_allows_and_reports",
    ),
    "pins.targets": ("test_tls_peer.py::test_pin_mismatch_enforce_refuses",),
    "pins.release": (
        "test_tls_peer.py::test_pin_release_does_not_disturb_an_open_connection_but_refuses_new_ones",
        "test_tls_peer.py::test_pending_pin_promoted_after_success_old_released_history_kept",
        "test_tls_peer.py::test_expired_pin_is_released_by_expire_pins_and_refuses_new_connections",
    ),
    "pairing": ("test_tls_peer.py::test_pairing_full_sequence",),
    "change.on_peer_key_change": (
        "test_tls_peer.py::test_new_key_gives_peer_key_changed_and_the_policy_decides",
    ),
    "change.on_peer_cert_change_same_key": (
        "test_tls_peer.py::test_same_key_renewal_gives_peer_cert_changed",
    ),
}
"""Knob -> the tests (``file::function`` under ``tests/``) that show it on the wire (see the module doc)."""
NOW = TEST_NOW
HOUR = dt.timedelta(hours=1)
IO_S = 10
TLS12 = TlsProfile(versions=("1.2",))
TLS13 = TlsProfile(versions=("1.3",))


def reason(result: TlsStream | TransportError) -> str:
    """``"ok"`` or the refusal's reason; a reason must be in the vocabulary and the OCPP table."""
    if isinstance(result, TlsStream):
        return "ok"
    assert isinstance(result, HandshakeFailed), result
    if not result.reason.startswith(events.PEER_ALERT):
        assert _maps(result.reason), f"{result.reason} is not in the event table"
    return result.reason


def _maps(r: str) -> bool:
    kind = events.reason_kind(r)
    return kind in events.NO_OCPP_EVENT or any(
        events.ocpp_security_event(r, side=side) is not None for side in ("client", "server")
    )


# ---------------------------------------------------------------- wire helpers


def plaintext_handshake(wire: bytes) -> list[tuple[int, bytes]]:
    """(type, body) of the handshake messages sent in the clear (RFC 5246 §7.4 / RFC 8446 §4: 1-byte type,
    3-byte length), up to the first ChangeCipherSpec or encrypted record."""
    out: list[tuple[int, bytes]] = []
    buf = b""
    pos = 0
    while pos + 5 <= len(wire):
        ctype, _version, length = struct.unpack_from("!BHH", wire, pos)
        fragment = wire[pos + 5 : pos + 5 + length]
        pos += 5 + length
        if ctype != 22:  # change_cipher_spec (20), application_data (23): the rest is encrypted
            break
        buf += fragment
    while len(buf) >= 4:
        htype, hlen = buf[0], int.from_bytes(buf[1:4], "big")
        out.append((htype, buf[4 : 4 + hlen]))
        buf = buf[4 + hlen :]
    return out


def server_hello_suite(wire: bytes) -> int:
    """The cipher suite code point in the ServerHello (RFC 8446 §4.1.3: version, random, session id, suite)."""
    body = next(b for t, b in plaintext_handshake(wire) if t == 2)
    sid_len = body[34]
    return int.from_bytes(body[35 + sid_len : 37 + sid_len], "big")


SUITE_CODES = {  # IANA TLS Cipher Suites registry
    "TLS_AES_128_GCM_SHA256": 0x1301,
    "TLS_AES_256_GCM_SHA384": 0x1302,
    "TLS_CHACHA20_POLY1305_SHA256": 0x1303,
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": 0xC02B,
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": 0xC02C,
}
NEW_SESSION_TICKET = 4  # RFC 5077 §3.3 handshake type


async def recorded_pair(
    client_tls: ClientTls,
    server_tls: ServerTls,
    *,
    store: SessionStore | None = None,
    session_from: TlsStream | None = None,
) -> tuple[TlsStream | TransportError, TlsStream | TransportError, bytes]:
    """:func:`tls_pair` with ping/pong and close_notify (so sessions stay resumable); also returns what the
    server sent."""
    recorders: list[RecordingStream] = []

    def record(transport: trio.abc.Stream) -> trio.abc.Stream:
        recorders.append(RecordingStream(transport))
        return recorders[-1]

    c, s = await tls_pair(
        client_tls,
        server_tls,
        sessions=store,
        session=session_from.session if session_from is not None else None,
        server_transport=record,
        close=True,
    )
    return c, s, bytes(recorders[0].sent)


DEFAULT = TlsProfile()


def server(profile: TlsProfile = DEFAULT, **kwargs: object) -> ServerTls:
    return ServerTls.build(profile, PKI.server_identity(), **kwargs)  # type: ignore[arg-type]


def client(profile: TlsProfile = DEFAULT, trust: TrustStore | None = None) -> ClientTls:
    return ClientTls.build(profile, trust or PKI.csms_trust())


# ================================================================ versions


@pytest.mark.parametrize(
    ("client_versions", "server_versions", "expected"),
    [
        (("1.3", "1.2"), ("1.3", "1.2"), "TLSv1.3"),  # the highest shared version wins
        (("1.3", "1.2"), ("1.2",), "TLSv1.2"),
        (("1.2",), ("1.3", "1.2"), "TLSv1.2"),
        (("1.2",), ("1.3",), "downgrade_refused"),  # a TLS 1.2-only client against a 1.3-only server
    ],
)
async def test_version_priority_and_downgrade(
    client_versions: tuple[str, ...], server_versions: tuple[str, ...], expected: str
) -> None:
    with trio.fail_after(IO_S):
        c, s = await tls_pair(
            client(TlsProfile(versions=client_versions)), server(TlsProfile(versions=server_versions))
        )
    if expected.startswith("TLS"):
        assert isinstance(c, TlsStream) and isinstance(s, TlsStream)
        assert c.info.version == s.info.version == expected
    else:
        assert reason(c) == reason(s) == expected


@pytest.mark.parametrize(
    ("versions", "fix"),
    [
        (
            ("1.2", "1.3"),
            '["1.3", "1.2"]), or, to get TLS 1.2 whenever the peer has it, drop the newer ones '
            '(["1.2"]; that disables TLS 1.3)',
        ),
        (("1.3", "1.1", "1.2"), '["1.3", "1.2", "1.1"])'),
    ],
)
def test_a_version_order_the_engine_cannot_honour_is_refused(versions: tuple[str, ...], fix: str) -> None:
    """OpenSSL negotiates the newest version both sides enable (above: ["1.3", "1.2"] on both sides gives
    TLS 1.3), whatever order a list is written in; so only newest first loads (``versions.order`` is
    partial), and ``enforce`` cannot demand more."""
    with pytest.raises(ConfigError, match=r"priority list.*newest first.*versions\.order is partial") as info:
        TlsProfile(versions=versions, insecure_legacy_versions=True)
    assert info.value.path == "versions" and info.value.fix.endswith(fix)
    assert KNOB_STATES["versions.order"] == "partial" and KNOB_STATES["versions"] == "enforced"
    with pytest.raises(ConfigError, match=r"cannot enforce versions\.order .*partial.*ClientHello callback"):
        check_enforce(["versions.order"])
    with pytest.raises(ConfigError, match="priority list") as info:
        TlsProfile.from_toml({"versions": ["1.2", "1.3"]}, path="tls.profiles.p")
    assert info.value.path == "tls.profiles.p.versions"


# ================================================================ suites: preference observed on the wire


@pytest.mark.parametrize("preference", ["server", "client"])
@pytest.mark.parametrize(
    ("key", "client_order", "server_order"),
    [
        (
            "1.3",
            ("TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_128_GCM_SHA256"),
            ("TLS_AES_128_GCM_SHA256", "TLS_CHACHA20_POLY1305_SHA256"),
        ),
        (
            "1.2",
            ("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"),
            ("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"),
        ),
    ],
    ids=["tls13", "tls12"],
)
async def test_suite_preference_is_observed_in_the_server_hello(
    preference: str, key: str, client_order: tuple[str, ...], server_order: tuple[str, ...]
) -> None:
    def profile(order: tuple[str, ...], pref: str = "server") -> TlsProfile:
        return TlsProfile(versions=(key,), cipher_suites={key: order}, suite_preference=pref)  # type: ignore[arg-type]

    with trio.fail_after(IO_S):
        c, _, wire = await recorded_pair(
            client(profile(client_order)), server(profile(server_order, preference))
        )
    expected = server_order[0] if preference == "server" else client_order[0]
    assert server_hello_suite(wire) == SUITE_CODES[expected]
    assert isinstance(c, TlsStream) and c.info.cipher_iana == expected


# ================================================================ groups


async def test_groups_restrict_the_key_exchange() -> None:
    with trio.fail_after(IO_S):
        c, s = await tls_pair(client(TlsProfile(groups=("secp384r1",))), server())
        assert isinstance(c, TlsStream) and isinstance(s, TlsStream)
        assert c.info.group == s.info.group == "secp384r1"
        # a client offering only a group the server does not accept (TLS 1.3: no key share to use)
        c, s = await tls_pair(
            client(TlsProfile(groups=("secp384r1",))), server(TlsProfile(groups=("X25519",)))
        )
    assert reason(s) == events.GROUP_REFUSED
    assert (
        reason(c) == events.CIPHER_REFUSED
    )  # the client hears handshake_failure (evsim.tls.failures heuristic)
    assert events.ocpp_security_event(events.GROUP_REFUSED, side="server") == "InvalidTLSCipherSuite"


async def test_the_clients_group_order_decides() -> None:
    """The client sends a key share for its first group; a server that accepts it uses it (no HelloRetry)."""
    accepting = server(TlsProfile(groups=("X25519", "secp384r1")))
    with trio.fail_after(IO_S):
        c, _ = await tls_pair(client(TlsProfile(groups=("secp384r1", "X25519"))), accepting)
        c2, _ = await tls_pair(client(TlsProfile(groups=("X25519", "secp384r1"))), accepting)
    assert isinstance(c, TlsStream) and isinstance(c2, TlsStream)
    assert (c.info.group, c2.info.group) == ("secp384r1", "x25519")


# ================================================================ signature algorithms


@pytest.mark.parametrize("versions", [("1.3",), ("1.2",)], ids=["tls13", "tls12"])
async def test_signature_algorithms_refuse_a_server_that_cannot_sign_with_them(
    versions: tuple[str, ...],
) -> None:
    ecdsa_only = TlsProfile(versions=versions, signature_algorithms=("ecdsa_secp256r1_sha256",))
    rsa_only = TlsProfile(versions=versions, signature_algorithms=("rsa_pss_rsae_sha256",))
    with trio.fail_after(IO_S):
        ok, _ = await tls_pair(client(ecdsa_only), server(ecdsa_only))  # SHIP's restriction: P-256 ECDSA
        c, s = await tls_pair(
            client(rsa_only), server(TlsProfile(versions=versions))
        )  # ECDSA server certificate
    assert reason(ok) == "ok"
    assert reason(c) == events.CIPHER_REFUSED
    # TLS 1.3 says why; TLS 1.2 OpenSSL folds the signature check into suite selection
    assert reason(s) == (events.SIGALG_REFUSED if versions == ("1.3",) else events.CIPHER_REFUSED)


# ================================================================ ALPN require


async def test_alpn_require_closes_when_nothing_was_negotiated() -> None:
    requiring = TlsProfile(alpn=("ntske/1",), alpn_require=True)
    with trio.fail_after(IO_S):
        ok, _ = await tls_pair(client(requiring), server(TlsProfile(alpn=("ntske/1",))))
        assert isinstance(ok, TlsStream) and ok.info.alpn == "ntske/1"
        # the server speaks no ALPN: the requiring client closes
        c, _ = await tls_pair(client(requiring), server(), exchange=False)
        # a requiring server and a client offering something else / nothing
        _, s_other = await tls_pair(client(TlsProfile(alpn=("http/1.1",))), server(requiring), exchange=False)
        _, s_none = await tls_pair(client(), server(requiring), exchange=False)
    assert reason(c) == reason(s_other) == reason(s_none) == events.ALPN_REFUSED
    assert isinstance(c, HandshakeFailed) and not c.remote and "ntske/1" in c.detail
    with pytest.raises(ConfigError, match="no ALPN") as excinfo:
        TlsProfile(alpn_require=True)
    assert excinfo.value.path == "alpn_require"


# ================================================================ sessions


@pytest.mark.parametrize(
    ("mode", "tickets_on_wire", "resumed"),
    [("ids", False, True), ("tickets", True, True), ("both", True, True), ("off", False, False)],
)
async def test_tls12_resumption_by_ids_and_by_tickets(
    mode: str, tickets_on_wire: bool, resumed: bool
) -> None:
    """TLS 1.2 sends NewSessionTicket in the clear: the wire shows which mechanism the server offers.
    ``tickets`` runs the server without a cache (resumption can only be by ticket); ``ids`` without
    tickets (only by session id)."""
    store = SessionStore()
    server_tls = server(TlsProfile(versions=("1.2",), session=SessionPolicy(mode)))  # type: ignore[arg-type]
    client_tls = client(TLS12)
    with trio.fail_after(IO_S):
        first, _, wire1 = await recorded_pair(client_tls, server_tls, store=store)
        second, _, wire2 = await recorded_pair(client_tls, server_tls, store=store)
    assert isinstance(first, TlsStream) and isinstance(second, TlsStream)
    assert (NEW_SESSION_TICKET in [t for t, _ in plaintext_handshake(wire1)]) is tickets_on_wire
    assert not first.info.session_reused
    assert second.info.session_reused is resumed
    if resumed:  # an abbreviated handshake: no Certificate (11) from the server
        assert 11 not in [t for t, _ in plaintext_handshake(wire2)]


@pytest.mark.parametrize("mode", ["ids", "tickets", "both", "off"])
async def test_tls13_resumption_modes(mode: str) -> None:
    """TLS 1.3 resumes by tickets only (RFC 8446 §4.6.1); ``ids`` = OpenSSL's stateful tickets that name a
    server cache entry, ``tickets`` = stateless tickets with no server cache."""
    store = SessionStore()
    server_tls = server(TlsProfile(versions=("1.3",), session=SessionPolicy(mode)))  # type: ignore[arg-type]
    with trio.fail_after(IO_S):
        first, _, _ = await recorded_pair(client(TLS13), server_tls, store=store)
        second, s2, _ = await recorded_pair(client(TLS13), server_tls, store=store)
    assert isinstance(first, TlsStream) and isinstance(second, TlsStream) and isinstance(s2, TlsStream)
    assert second.info.session_reused is s2.info.session_reused is (mode != "off")


async def test_client_resumption_off_never_offers() -> None:
    store = SessionStore()
    off = TlsProfile(session=SessionPolicy("off"))
    with trio.fail_after(IO_S):
        first, _, _ = await recorded_pair(client(off), server(), store=store)
        second, _, _ = await recorded_pair(client(off), server(), store=store, session_from=first)  # type: ignore[arg-type]
    assert isinstance(second, TlsStream) and not second.info.session_reused
    assert store.statistics().entries == store.statistics().offered == 0


@pytest.mark.parametrize("profile", [TLS12, TLS13], ids=["tls12", "tls13"])
async def test_session_lifetime_expires_in_virtual_time(
    profile: TlsProfile, autojump_clock: trio.testing.MockClock
) -> None:
    """The machine's clock barely moves (OpenSSL's server timeout is not reached); the store's
    simulation-time lifetime is what ends resumption."""
    lifetime = 600.0
    client_tls = client(attrs.evolve(profile, session=SessionPolicy(lifetime_s=lifetime)))
    server_tls = server(profile)
    store = SessionStore()
    with trio.fail_after(IO_S):  # virtual seconds: the sleeps below jump
        await recorded_pair(client_tls, server_tls, store=store)
    await trio.sleep(lifetime - 1)
    with trio.fail_after(IO_S):
        young, _, _ = await recorded_pair(client_tls, server_tls, store=store)
    await trio.sleep(2)  # the *first* full handshake is now lifetime + 1 s old (resumption does not renew it)
    with trio.fail_after(IO_S):
        old, _, _ = await recorded_pair(client_tls, server_tls, store=store)
    assert isinstance(young, TlsStream) and young.info.session_reused
    assert isinstance(old, TlsStream) and not old.info.session_reused
    assert store.statistics().expired == 1


async def test_sessions_never_cross_trust_configurations() -> None:
    store = SessionStore()
    trust_a = PKI.csms_trust()
    trust_b = TrustStore("CSMSRootCertificate", (PKI.root.cert, PKI.evil.cert))  # a root was installed
    with trio.fail_after(IO_S):
        first, _, _ = await recorded_pair(client(trust=trust_a), server(), store=store)
        other, _, _ = await recorded_pair(client(trust=trust_b), server(), store=store)
        again, _, _ = await recorded_pair(client(trust=trust_a), server(), store=store)
    assert isinstance(first, TlsStream) and isinstance(other, TlsStream) and isinstance(again, TlsStream)
    assert not other.info.session_reused  # the store keys by trust: nothing offered
    assert again.info.session_reused
    assert store.statistics().offered == 1
    # server side: a session of one server configuration is not resumed by another (session id context)
    mtls = server(client_auth="optional", trust=PKI.station_trust())
    with trio.fail_after(IO_S):
        forced, _, _ = await recorded_pair(client(trust=trust_a), mtls, session_from=first)
    assert isinstance(forced, TlsStream) and not forced.info.session_reused


def test_session_store_is_bounded() -> None:
    store = SessionStore(max_entries=1)
    c1, c2 = client(TLS12), client(TLS13)
    sentinel = object()
    store.save(c1, "a", sentinel, now=0.0, resumed=False)  # type: ignore[arg-type]
    store.save(c2, "a", sentinel, now=0.0, resumed=False)  # type: ignore[arg-type]
    assert store.offer(c1, "a", now=1.0) is None and store.offer(c2, "a", now=1.0) is sentinel
    assert store.statistics().evicted == 1
    store.forget(c2, "a")
    assert store.statistics().entries == 0


# ================================================================ revocation from the model


@attrs.frozen
class RevPki:
    """root -> sub -> leaf (csms.evsim.test)."""

    root: CertificateAuthority
    sub: CertificateAuthority
    leaf: CertKey


@functools.cache
def rev_pki() -> RevPki:
    root = CertificateAuthority.create_root("Knobs Revocation Root", "evsim", now=NOW)
    sub = root.create_sub_ca("Knobs Revocation Sub-CA", now=NOW)
    return RevPki(root, sub, sub.issue_server(CSMS_HOST, now=NOW))


NO_REVOCATION = RevocationPolicy()


def rev_trust(policy: RevocationPolicy = NO_REVOCATION, **kwargs: object) -> TrustStore:
    return TrustStore("KnobsRoot", (rev_pki().root.cert,), revocation=policy, **kwargs)  # type: ignore[arg-type]


def rev_server(profile: TlsProfile = DEFAULT, ocsp: Callable[[], bytes | None] | None = None) -> ServerTls:
    return ServerTls.build(profile, Identity.from_cert_key(rev_pki().leaf), ocsp=ocsp)


def crl(ca: CertificateAuthority, *revoked: x509.Certificate) -> x509.CertificateRevocationList:
    revocations = RevocationList(ca)
    for cert in revoked:
        revocations.revoke(cert, at=NOW - HOUR, reason=x509.ReasonFlags.key_compromise)
    return revocations.build_crl(now=NOW - HOUR, next_update_s=86400)


@pytest.mark.parametrize("profile", [TLS12, TLS13], ids=["tls12", "tls13"])
async def test_crl_leaf_and_chain_from_the_trust_store(profile: TlsProfile) -> None:
    p = rev_pki()
    leaf_revoked = RevocationPolicy("leaf", (crl(p.sub, p.leaf.cert),))
    sub_revoked = (crl(p.sub), crl(p.root, p.sub.cert))
    with trio.fail_after(IO_S):
        c_leaf, s_leaf = await tls_pair(
            ClientTls.build(profile, rev_trust(leaf_revoked)), rev_server(profile)
        )
        c_lm, _ = await tls_pair(
            ClientTls.build(profile, rev_trust(RevocationPolicy("leaf", sub_revoked))), rev_server(profile)
        )
        c_cm, _ = await tls_pair(
            ClientTls.build(profile, rev_trust(RevocationPolicy("chain", sub_revoked))), rev_server(profile)
        )
    assert reason(c_leaf) == events.CERT_REVOKED
    assert reason(s_leaf) == "peer_alert:certificate_revoked"
    assert reason(c_lm) == "ok"  # leaf mode does not look at the sub-CA
    assert reason(c_cm) == events.CERT_REVOKED


async def test_crl_refresh_builds_a_new_context_and_open_connections_keep_working() -> None:
    p = rev_pki()
    before = rev_trust(RevocationPolicy("leaf", (crl(p.sub),)))
    after = attrs.evolve(before, revocation=RevocationPolicy("leaf", (crl(p.sub, p.leaf.cert),)))
    old_tls, new_tls = ClientTls.build(TLS13, before), ClientTls.build(TLS13, after)
    assert old_tls is not new_tls and old_tls.context is not new_tls.context
    assert ClientTls.build(TLS13, attrs.evolve(before)) is old_tls  # an equal value: the cached context
    with trio.fail_after(IO_S):
        c_open, s_open = await tls_pair(old_tls, rev_server())
        assert isinstance(c_open, TlsStream) and isinstance(s_open, TlsStream)
        c_new, _ = await tls_pair(new_tls, rev_server())
        assert reason(c_new) == events.CERT_REVOKED
        await c_open.send_all(b"still here")  # the connection opened under the old CRL is not disturbed
        assert await s_open.receive_some() == b"still here"


def _staple(*, revoked: bool = False) -> OcspStaple:
    p = rev_pki()
    responder = OcspResponder(p.sub, validity_s=3600)
    if revoked:
        responder.revocations.revoke(p.leaf.cert, at=NOW - HOUR, reason=x509.ReasonFlags.key_compromise)
    return OcspStaple(responder, p.leaf.cert, p.sub.cert, clock=lambda: NOW)


def _unknown_staple() -> bytes:
    return unknown_ocsp_staple(rev_pki().leaf.cert, rev_pki().sub, NOW)


@pytest.mark.parametrize("profile", [TLS12, TLS13], ids=["tls12", "tls13"])
async def test_ocsp_stapling_from_the_pki_responder(profile: TlsProfile) -> None:
    require = ClientTls.build(profile, rev_trust(RevocationPolicy(ocsp="require")))
    request = ClientTls.build(profile, rev_trust(RevocationPolicy(ocsp="request")))
    unknown = _unknown_staple()
    good = _staple()
    with trio.fail_after(IO_S):
        ok, _ = await tls_pair(require, rev_server(profile, good))
        revoked, s_revoked = await tls_pair(require, rev_server(profile, _staple(revoked=True)))
        missing, _ = await tls_pair(require, rev_server(profile))
        unknown_r, _ = await tls_pair(require, rev_server(profile, lambda: unknown))
        soft, _ = await tls_pair(request, rev_server(profile))
    assert good.fetches == 1  # the server stapled the responder's answer
    assert reason(ok) == "ok"
    assert reason(revoked) == events.CERT_REVOKED
    assert reason(s_revoked) == "peer_alert:bad_certificate_status_response"  # RFC 6066 §8 alert
    assert reason(missing) == events.OCSP_MISSING
    assert reason(unknown_r) == events.OCSP_UNKNOWN
    assert reason(soft) == "ok"  # request: a missing staple is soft-fail
    assert events.ocpp_security_event(events.OCSP_MISSING, side="client") == "InvalidCsmsCertificate"


@pytest.mark.parametrize("profile", [TLS12, TLS13], ids=["tls12", "tls13"])
async def test_ocsp_on_unknown_from_the_trust_store(profile: TlsProfile) -> None:
    """An authentic ``unknown`` staple: refused by default, let through with ``on_unknown = "soft_fail"``."""
    unknown = _unknown_staple()
    strict = ClientTls.build(profile, rev_trust(RevocationPolicy(ocsp="require")))
    soft = ClientTls.build(profile, rev_trust(RevocationPolicy(ocsp="require", on_unknown="soft_fail")))
    with trio.fail_after(IO_S):
        refused, _ = await tls_pair(strict, rev_server(profile, lambda: unknown))
        accepted, _ = await tls_pair(soft, rev_server(profile, lambda: unknown))
    assert reason(refused) == events.OCSP_UNKNOWN
    assert reason(accepted) == "ok"


def test_revocation_policy_validation() -> None:
    with pytest.raises(ConfigError, match="needs at least one CRL") as excinfo:
        RevocationPolicy("leaf")
    assert excinfo.value.path == "revocation.crls"
    with pytest.raises(ConfigError, match="did you mean 'require'"):
        RevocationPolicy(ocsp="requir")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="cannot ask a client for a staple"):
        server(trust=rev_trust(RevocationPolicy(ocsp="require")), client_auth="required")
    one = crl(rev_pki().sub)
    a = RevocationPolicy("leaf", (one,))
    assert a == RevocationPolicy("leaf", [one]) and hash(a) == hash(RevocationPolicy("leaf", (one,)))
    assert a != RevocationPolicy("leaf", (crl(rev_pki().sub),))  # another CRL (ECDSA signatures differ)


# ================================================================ max_depth


async def test_max_depth_refuses_a_longer_chain() -> None:
    with trio.fail_after(IO_S):
        ok, _ = await tls_pair(ClientTls.build(TLS13, rev_trust(max_depth=1)), rev_server())
        deep, _ = await tls_pair(ClientTls.build(TLS13, rev_trust(max_depth=0)), rev_server())
    assert reason(ok) == "ok"  # leaf -> sub-CA -> root: one CA between the leaf and the anchor
    assert reason(deep) == events.CERT_CHAIN_TOO_LONG
    with pytest.raises(ConfigError, match="max_depth"):
        rev_trust(max_depth=101)


# ================================================================ time_check = skip_until_clock_synced


async def _connect_at(client_tls: ClientTls, when: dt.datetime, *, clock_synced: bool) -> str:
    a, b = trio.testing.memory_stream_pair()
    result = "ok"
    async with trio.open_nursery() as nursery:

        async def accept() -> None:
            with contextlib.suppress(HandshakeFailed):
                await tls_accept(b, server())

        nursery.start_soon(accept)
        try:
            c = await tls_connect(
                a, client_tls, CSMS_HOST, verify_time=lambda: when, clock_synced=clock_synced
            )
            await c.aclose()
        except HandshakeFailed as exc:
            result = reason(exc)
    return result


@pytest.mark.parametrize("python_time", [False, True], ids=["openssl-time", "callback-time"])
async def test_skip_until_clock_synced(python_time: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """An RTC-less station after boot (cf. chrony nocerttimecheck): validity is not checked until its
    clock is synced; the chain still is. ``callback-time``: the fallback without per-connection time."""
    from evsim.tls import _ossl, clear_context_cache

    if python_time:
        monkeypatch.setattr(_ossl, "HAVE_CONNECTION_TIME", False)
    clear_context_cache()
    expired_at = PKI.server.cert.not_valid_after_utc + dt.timedelta(days=1)  # e.g. an RTC reset to garbage
    skip = client(trust=PKI.csms_trust(time_check="skip_until_clock_synced"))
    enforce = client()
    try:
        with trio.fail_after(IO_S):
            assert await _connect_at(skip, expired_at, clock_synced=False) == "ok"
            assert await _connect_at(skip, expired_at, clock_synced=True) == events.CERT_EXPIRED
            assert await _connect_at(enforce, expired_at, clock_synced=False) == events.CERT_EXPIRED
            evil = ClientTls.build(
                DEFAULT, TrustStore("Evil", (PKI.evil.cert,), time_check="skip_until_clock_synced")
            )
            assert await _connect_at(evil, expired_at, clock_synced=False) == events.CERT_UNKNOWN_CA
    finally:
        clear_context_cache()


# ================================================================ record knobs, enforce


def test_declared_record_knobs_are_recorded_and_enforcing_them_is_refused() -> None:
    p = TlsProfile(max_fragment_length=2048, record_size_limit=2048, recv_buffer=16384)
    assert (p.max_fragment_length, p.record_size_limit, p.recv_buffer) == (2048, 2048, 16384)
    assert dict(Capabilities.of_profile(p).record)["record_size_limit"] == 2048
    for knob in ("record_size_limit", "record.max_fragment_length", "recv_buffer"):
        with pytest.raises(ConfigError, match=r"cannot enforce .* declared.*pyOpenSSL") as excinfo:
            TlsProfile(record_size_limit=2048, enforce=[knob])
        assert excinfo.value.path == "enforce[0]"
    assert TlsProfile(max_send_fragment=512, enforce=["max_send_fragment"]).enforce == (
        "record.max_send_fragment",
    )
    with pytest.raises(ConfigError, match=r"cannot enforce session\.cache_entries .*partial"):
        check_enforce(["cache_entries"])
    with pytest.raises(ConfigError, match=r"did you mean 'record\.record_size_limit'"):
        TlsProfile(enforce=["record.record_size_limt"])
    for field, value in (("max_fragment_length", 1000), ("record_size_limit", 63), ("recv_buffer", 0)):
        with pytest.raises(ConfigError) as excinfo:
            TlsProfile(**{field: value})  # type: ignore[arg-type]
        assert excinfo.value.path == f"record.{field}"


def test_knob_model_validation() -> None:
    with pytest.raises(ConfigError, match="did you mean 'secp384r1'") as excinfo:
        TlsProfile(groups=("secp384r2",))
    assert excinfo.value.path == "groups[0]"
    with pytest.raises(ConfigError, match="duplicate"):
        TlsProfile(signature_algorithms=("ed25519", "ed25519"))
    with pytest.raises(ConfigError, match="did you mean 'ecdsa_secp256r1_sha256'"):
        TlsProfile(signature_algorithms=("ecdsa_secp256r1_sha25",))
    with pytest.raises(ConfigError, match="lifetime"):
        SessionPolicy(lifetime_s=700000)
    with pytest.raises(ConfigError, match="did you mean 'tickets'"):
        SessionPolicy("ticket")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="cache_entries"):
        SessionPolicy(cache_entries=0)


# ================================================================ TOML


def test_profile_from_toml() -> None:
    table = {
        "versions": ["1.3"],
        "cipher_suites": {"1.3": ["TLS_AES_128_GCM_SHA256"]},
        "suite_preference": "client",
        "groups": ["X25519", "secp256r1"],
        "signature_algorithms": ["ecdsa_secp256r1_sha256"],
        "alpn": {"offer": ["ntske/1"], "require": True},
        "handshake_timeout_s": 5,
        "session": {"resumption": "tickets", "lifetime_s": 600, "cache_entries": 8},
        "record": {"max_send_fragment": 2048, "record_size_limit": 2048},
        "enforce": ["max_send_fragment"],
    }
    p = TlsProfile.from_toml(table, path="tls.profiles.ship")
    assert p == TlsProfile(
        versions=("1.3",),
        cipher_suites={"1.3": ["TLS_AES_128_GCM_SHA256"]},
        suite_preference="client",
        groups=("X25519", "secp256r1"),
        signature_algorithms=("ecdsa_secp256r1_sha256",),
        alpn=("ntske/1",),
        alpn_require=True,
        handshake_timeout_s=5,
        session=SessionPolicy("tickets", 600, 8),
        max_send_fragment=2048,
        record_size_limit=2048,
        enforce=("record.max_send_fragment",),
    )
    assert TlsProfile.from_toml({}, path="x") == TlsProfile()
    assert TlsProfile.from_toml({"alpn": ["a"]}, path="x").alpn == ("a",)


@pytest.mark.parametrize(
    ("table", "path", "words"),
    [
        ({"version": ["1.3"]}, "tls.p.version", "did you mean 'versions'"),
        ({"versions": ["1.3", "1.1"]}, "tls.p.versions[1]", "A00.FR.313"),
        ({"versions": "1.3"}, "tls.p.versions", "array"),
        (
            {"cipher_suites": {"1.2": ["TLS_AES_128_GCM_SHA256"]}},
            "tls.p.cipher_suites.1.2[0]",
            "TLS 1.3 suite",
        ),
        ({"cipher_suites": {"1.4": []}}, "tls.p.cipher_suites.1.4", "unknown key"),
        ({"session": {"lifetime": 5}}, "tls.p.session.lifetime", "did you mean 'lifetime_s'"),
        ({"session": {"lifetime_s": 0}}, "tls.p.session.lifetime_s", "seven days"),
        ({"record": {"max_send_fragment": 10}}, "tls.p.record.max_send_fragment", "RFC 8449"),
        (
            {"record": {"record_size_limit": 2048}, "enforce": ["record_size_limit"]},
            "tls.p.enforce[0]",
            "declared",
        ),
        ({"alpn": {"require": True}}, "tls.p.alpn.require", "no ALPN"),
        ({"alpn": {"offer": [""]}}, "tls.p.alpn.offer[0]", "RFC 7301"),
        ({"alpn": [""], "alpn_require": True}, "tls.p.alpn_require", "unknown key"),
        ({"session": {"cache_entries": 0}}, "tls.p.session.cache_entries", "positive"),
        ({"suite_preference": "servr"}, "tls.p.suite_preference", "did you mean 'server'"),
        ({"handshake_timeout_s": "10"}, "tls.p.handshake_timeout_s", "number"),
        ({"groups": ["X25519", 1]}, "tls.p.groups[1]", "string"),
    ],
)
def test_profile_from_toml_errors_name_the_field(table: dict[str, object], path: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words) as excinfo:
        TlsProfile.from_toml(table, path="tls.p")
    assert excinfo.value.path == path


def test_trust_and_identity_from_toml(tmp_path: Path) -> None:
    p = rev_pki()
    the_crl = crl(p.sub)
    roots = {"CSMSRootCertificate": [p.root.cert]}
    table = {
        "anchors": ["CSMSRootCertificate"],
        "hostname": "cn",
        "max_depth": 2,
        "revocation": {"crl": "leaf", "crls": ["sub"], "ocsp": "request", "on_unknown": "soft_fail"},
    }
    t = TrustStore.from_toml(
        table, path="tls.trust.operator", resolve=roots.__getitem__, resolve_crls=lambda n: [the_crl]
    )
    assert t == TrustStore(
        "operator",
        (p.root.cert,),
        hostname="cn",
        max_depth=2,
        revocation=RevocationPolicy("leaf", (the_crl,), "request", "soft_fail"),
    )
    for bad, path, words in (
        ({"anchors": ["nope"]}, "tls.trust.operator.anchors[0]", "cannot find anchor 'nope'"),
        (
            {"anchors": ["CSMSRootCertificate"], "hostnme": "cn"},
            "tls.trust.operator.hostnme",
            "did you mean 'hostname'",
        ),
        ({"anchors": ["CSMSRootCertificate"], "wildcards": "maybe"}, "tls.trust.operator.wildcards", "deny"),
        (
            {"anchors": ["CSMSRootCertificate"], "revocation": {"crl": "leaf"}},
            "tls.trust.operator.revocation.crls",
            "CRL",
        ),
        ({"anchors": []}, "tls.trust.operator.anchors", "anchor"),
    ):
        with pytest.raises(ConfigError, match=words) as excinfo:
            TrustStore.from_toml(bad, path="tls.trust.operator", resolve=roots.__getitem__)
        assert excinfo.value.path == path

    # files variant: PEM anchors and a DER CRL under a directory
    (tmp_path / "root.pem").write_bytes(p.root.cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "sub.crl").write_bytes(the_crl.public_bytes(serialization.Encoding.DER))
    files = TrustStore.from_toml_files(
        {"name": "R", "anchors": ["root.pem"], "revocation": {"crl": "leaf", "crls": ["sub.crl"]}},
        path="t",
        base_dir=tmp_path,
    )
    assert files.anchors == (p.root.cert,) and files.revocation.crls == (the_crl,)
    with pytest.raises(ConfigError, match=r"missing\.pem"):
        TrustStore.from_toml_files({"anchors": ["missing.pem"]}, path="t", base_dir=tmp_path)

    # identities
    store = {"CSMSCertificate": p.leaf}
    assert Identity.from_toml(
        {"certificate": "CSMSCertificate"}, path="n.identity", resolve=store.__getitem__
    ) == (Identity.from_cert_key(p.leaf))
    (tmp_path / "leaf.pem").write_bytes(
        b"".join(c.public_bytes(serialization.Encoding.PEM) for c in p.leaf.chain)
    )
    (tmp_path / "other.key").write_bytes(
        PKI.server.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(ConfigError, match="does not match") as excinfo:
        Identity.from_toml_files(
            {"cert": "leaf.pem", "key": "other.key"}, path="n.identity", base_dir=tmp_path
        )
    assert excinfo.value.path == "n.identity.key"
    with pytest.raises(ConfigError, match="did you mean 'certificate'"):
        Identity.from_toml({"certficate": "x"}, path="n.identity", resolve=store.__getitem__)


# ================================================================ capabilities and the CLI


def test_capabilities_report_suites_groups_and_knob_states() -> None:
    profile = TlsProfile(
        cipher_suites={
            "1.3": ["TLS_AES_128_GCM_SHA256"],
            "1.2": ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_RSA_WITH_AES_128_GCM_SHA256"],
        },
        groups=("secp256r1",),
    )
    caps = Capabilities.of_profile(profile)
    assert caps.versions == ("1.3", "1.2")
    assert caps.supported_ciphers12 == "ECDHE-ECDSA-AES128-GCM-SHA256:AES128-GCM-SHA256"
    assert caps.supported_ciphers13 == "TLS_AES_128_GCM_SHA256"
    assert caps.groups == ("secp256r1",) and not caps.groups_default
    assert caps.knob_states() == dict(KNOB_STATES)
    assert caps.knob_states()["record.record_size_limit"] == "declared"
    only13 = Capabilities.of_profile(TLS13)
    assert only13.supported_ciphers12 == "" and [k for k, _ in only13.suites] == ["1.3"]
    assert "OpenSSL" in caps.engine and "SupportedCiphers12: ECDHE-ECDSA" in caps.render()


def test_capabilities_list_every_engine_suite_beside_the_configured_ones(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    profile = TlsProfile(versions=("1.3",), cipher_suites={"1.3": ["TLS_AES_128_GCM_SHA256"]})
    caps = Capabilities.of_profile(profile)
    engine = {key: [x.iana for x in suites] for key, suites in caps.engine_suites}
    # every suite of the table negotiates on this engine (test_tls_verify::test_every_suite_in_the_table_negotiates)
    assert {n for names in engine.values() for n in names} == {x.iana for x in SUITES}
    assert "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA" in engine["1.2"]  # not configured, still listed
    assert [k for k, _ in caps.suites] == ["1.3"] and caps.supported_ciphers13 == "TLS_AES_128_GCM_SHA256"
    assert {"1.3", "1.2"} <= set(caps.engine_versions)
    assert caps.engine_other_suites and not set(caps.engine_other_suites) & set(BY_OPENSSL)
    text = caps.render()
    assert "* TLS_AES_128_GCM_SHA256" in text and "  TLS_AES_256_GCM_SHA384" in text
    assert "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA" in text and "TLS 1.0+, legacy" in text
    cbc8 = next(line for line in text.splitlines() if "TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8" in line)
    assert "security level 0" in cbc8
    good = tmp_path / "p.toml"
    good.write_text('versions = ["1.3"]\ncipher_suites = { "1.3" = ["TLS_AES_128_GCM_SHA256"] }\n')
    assert main(["tls", "capabilities", "--profile", str(good), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert list(data["suites"]) == ["1.3"] and len(data["engine_suites"]["1.2"]) == len(engine["1.2"])
    configured = {x["iana"] for key in ("1.3", "1.2") for x in data["engine_suites"][key] if x["configured"]}
    assert configured == {"TLS_AES_128_GCM_SHA256"}
    assert data["engine_versions"][:2] == ["1.3", "1.2"] and data["engine_other_suites"]


def test_cli_tls_capabilities(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tls", "capabilities", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (
        data["SupportedCiphers13"]
        == "TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256"
    )
    assert data["knobs"]["record.max_fragment_length"]["state"] == "declared"
    assert data["suites"]["1.2"][0] == {
        "iana": "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        "openssl": "ECDHE-ECDSA-AES128-GCM-SHA256",
    }
    assert main(["tls", "capabilities"]) == 0
    assert "record.record_size_limit" in capsys.readouterr().out
    good = tmp_path / "p.toml"
    good.write_text('versions = ["1.3"]\n[session]\nresumption = "off"\n')
    assert main(["tls", "capabilities", "--profile", str(good), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["versions"] == ["1.3"]
    bad = tmp_path / "bad.toml"
    bad.write_text('enforce = ["record_size_limit"]\n[record]\nrecord_size_limit = 2048\n')
    assert main(["tls", "capabilities", "--profile", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.toml" in err and "enforce[0]" in err and "cannot enforce" in err
    flags = _tls_capabilities_flags()
    assert {f.option_strings[0] for f in flags} == {
        "--json",
        "--profile",
        "--name",
        "-q",
        "-v",
    }  # -q/-v on every command
    assert all(f.help for f in flags)  # every flag has help (test_cli checks only first-level commands)


def _tls_capabilities_flags() -> list[argparse.Action]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    tls = sub.choices["tls"]  # type: ignore[index]
    caps = next(a for a in tls._actions if a.dest == "tls_command").choices["capabilities"]
    return [a for a in caps._actions if a.option_strings and a.dest != "help"]


def _test_functions(file: str) -> dict[str, bool]:
    """Top-level test functions of ``tests/<file>``: name -> is it ``async`` (a real handshake under trio)."""
    tree = ast.parse((Path(__file__).parent / file).read_text())
    return {
        node.name: isinstance(node, ast.AsyncFunctionDef)
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_")
    }


def test_every_enforced_knob_has_a_test_that_changes_the_handshake() -> None:
    assert set(KNOB_TESTS) <= set(KNOB_STATES), set(KNOB_TESTS) - set(KNOB_STATES)
    enforced = {k for k, state in KNOB_STATES.items() if state == "enforced"}
    assert enforced <= set(KNOB_TESTS), (
        f"enforced knobs with no test in KNOB_TESTS: {enforced - set(KNOB_TESTS)}"
    )
    functions: dict[str, dict[str, bool]] = {}
    for knob, test_ids in KNOB_TESTS.items():
        handshakes = 0
        for test_id in test_ids:
            file, _, name = test_id.partition("::")
            found = functions.setdefault(file, _test_functions(file))
            assert name in found, f"{knob}: {test_id} does not exist"
            handshakes += found[name]
        if knob in enforced:
            assert handshakes, f"{knob} is enforced, but none of its tests runs a handshake"


# ================================================================ events


def test_every_engine_reason_maps_to_an_ocpp_event_or_is_deliberately_local() -> None:
    for r in events.ENGINE_KNOB_REASONS:
        assert _maps(r), r
    mapped = {r: events.ocpp_security_event(r, side="client") for r in events.ENGINE_KNOB_REASONS}
    assert mapped[events.CERT_REVOKED] == mapped[events.OCSP_UNKNOWN] == "InvalidCsmsCertificate"
    assert mapped[events.ALPN_REFUSED] is None and events.ALPN_REFUSED in events.NO_OCPP_EVENT
    assert (
        events.ocpp_security_event(events.CERT_REVOKED, side="server") == "InvalidChargingStationCertificate"
    )
    assert not _maps("made_up_reason")
