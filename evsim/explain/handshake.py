"""``evsim explain handshake``: one TLS handshake between two configured peers, told step by step.

Theory of operation
-------------------
The handshake is real: both sides are compiled by the TLS layer (``ClientTls`` / ``ServerTls``, verification
on) and run ``tls_connect`` / ``tls_accept`` over an in-memory stream pair in virtual time (trio's
``MockClock``), with a ping/pong after it (TLS 1.3 tickets and client-certificate verdicts arrive then). The
engine reports every protocol message to ``evsim.tls.trace``; :mod:`evsim.explain.tls_messages` reads the
ClientHello, ServerHello, EncryptedExtensions, Certificate, NewSessionTicket and alerts from them.

The story is built from three sources, each named in the output: what was *on the wire* (the messages),
what the *engine* concluded (``TlsInfo`` or the ``HandshakeFailed`` reason and alert of each side), and *why*
- the configured knob that decided, restated by the pure predictor ``evsim.tls.predict`` (version range,
suite preference, the certificate checks in the order the engine runs them: chain to the CA group, validity
at the verifier's clock, hostname, pins; revocation when configured). Where predictor and engine disagree,
the output says so.

Peers come from scenario-style TLS profile keys (``[tls.profiles.<name>]``: ``--client KEY=VALUE``,
``--server KEY=VALUE``, or a profile file), on top of a canned case (:data:`CASES`) that makes its own
throwaway PKI in memory (nothing is written to disk).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import trio
import trio.testing
from cryptography import x509

from evsim.errors import ConfigError, HandshakeFailed, TransportError
from evsim.explain import tls_messages as tm
from evsim.pki import CertificateAuthority, CertKey
from evsim.pki.ca import common_name
from evsim.tls import ClientTls, Identity, ServerTls, TlsProfile, TrustStore, tls_accept, tls_connect
from evsim.tls.peer import PeerPolicy
from evsim.tls.pins import Pin, PinSet, spki_hex
from evsim.tls.predict import (
    ClientSide,
    Negotiated,
    ServerSide,
    build_chain,
    hostname_verdict,
    predict,
    validity_verdict,
)
from evsim.tls.stream import TlsInfo, TlsSession, TlsStream
from evsim.tls.trace import CONTENT_ALERT, CONTENT_HANDSHAKE, MessageTrace, TlsMessage, trace_messages

START = _dt.datetime(2030, 6, 1, 12, 0, tzinfo=_dt.UTC)
"""The verifiers' clock (simulation wall time) of every canned case."""
SERVER_NAME = "csms.evsim.test"
EXCHANGE_TIMEOUT_S = 30.0
"""Virtual seconds one connection (handshake and ping/pong) may take: far above a handshake's zero."""

CASES: Mapping[str, str] = {
    "ok": "a station (client) and a CSMS (server) with the default profile: TLS 1.3, verified",
    "downgrade": "a client that offers only TLS 1.2 to a server that enables only TLS 1.3",
    "unknown-ca": "a server whose certificate comes from a root outside the client's CA group",
    "expired": "a server certificate that expired before the verifier's clock",
    "pin-mismatch": "a server whose key is not the one the client pinned",
    "resumption": "two connections: a full handshake with a session ticket, then a resumed one",
}
_CASE_PROFILES: Mapping[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "downgrade": ({"versions": ["1.2"]}, {"versions": ["1.3"]}),
}
"""(client, server) profile keys of a case (scenario keys; command-line keys are applied on top)."""


@attrs.frozen
class Setup:
    """What to run.

    Attributes:
        case: the canned case it started from.
        client: the client's model.
        server: the server's model.
        now: both verifiers' clock.
        connections: 1, or 2 to show resumption.
        title: what is shown (default: the case's description).
    """

    case: str
    client: ClientSide
    server: ServerSide
    now: _dt.datetime
    connections: int = 1
    title: str = ""


@attrs.frozen
class Step:
    """One line of the story.

    Attributes:
        connection: 1 or 2.
        topic: ``offer``, ``choice``, ``certificate``, ``verify``, ``ticket``, ``resumption``, ``refusal``,
            ``result`` or ``wire``.
        depth: 1 (the story), 2 (every decision), 3 (every message).
        text: what happened.
        why: the rule and the knob that decided, or "".
        knob: the configured key that decided (``server.versions``...), or None.
        ok: the step's verdict (None: no verdict).
    """

    connection: int
    topic: str
    depth: int
    text: str
    why: str = ""
    knob: str | None = None
    ok: bool | None = None


@attrs.frozen
class Connection:
    """What one connection did, as the engines saw it."""

    messages: tuple[TlsMessage, ...]
    client: TlsInfo | None
    server: TlsInfo | None
    client_error: HandshakeFailed | None
    server_error: HandshakeFailed | None


# ---------------------------------------------------------------- setting up


def _pki(now: _dt.datetime) -> tuple[CertificateAuthority, CertificateAuthority]:
    """The operator's root and an unrelated (rogue) root, fresh keys each run."""
    root = CertificateAuthority.create_root("Operator Root CA", "operator", now=now - _dt.timedelta(days=30))
    rogue = CertificateAuthority.create_root("Rogue Root CA", "rogue", now=now - _dt.timedelta(days=30))
    return root, rogue


def _server_cert(
    case: str, root: CertificateAuthority, rogue: CertificateAuthority, now: _dt.datetime
) -> CertKey:
    if case == "unknown-ca":
        return rogue.issue_server(SERVER_NAME, now=now - _dt.timedelta(days=1))
    if case == "expired":
        return root.issue_server(SERVER_NAME, now=now - _dt.timedelta(days=10), days=7)
    return root.issue_server(SERVER_NAME, now=now - _dt.timedelta(days=1))


def profile_from_keys(keys: Mapping[str, Any], *, who: str) -> TlsProfile:
    """A TLS profile from ``[tls.profiles.<name>]`` keys, checked by the scenario loader.

    Raises:
        ConfigError: a bad key or value (the path names ``who``).
    """
    from evsim.scenario.profile_file import profile_from_table

    return profile_from_table(dict(keys), source=f"--{who}")


def setup(
    case: str = "ok",
    *,
    client_keys: Mapping[str, Any] | None = None,
    server_keys: Mapping[str, Any] | None = None,
    client_profile: TlsProfile | None = None,
    server_profile: TlsProfile | None = None,
    now: _dt.datetime = START,
) -> Setup:
    """The setup of a canned case, with profile keys (or whole profiles) applied on top.

    Raises:
        ConfigError: an unknown case or a bad profile key.
    """
    if case not in CASES:
        raise ConfigError(
            "unknown handshake case", path="--case", value=case, fix=f"one of: {', '.join(CASES)}"
        )
    base_client, base_server = _CASE_PROFILES.get(case, ({}, {}))
    ckeys = {**base_client, **(client_keys or {})}
    skeys = {**base_server, **(server_keys or {})}
    cprofile = client_profile or profile_from_keys(ckeys, who="client")
    sprofile = server_profile or profile_from_keys(skeys, who="server")
    root, rogue = _pki(now)
    server_cert = _server_cert(case, root, rogue, now)
    pins = None
    if case == "pin-mismatch":  # the key the operator pinned: another certificate's, not this server's
        expected = root.issue_server(SERVER_NAME, now=now - _dt.timedelta(days=1)).cert
        pins = PinSet(pins=(Pin("leaf", spki_hex(expected) or "00" * 32),))
    client = ClientSide(cprofile, TrustStore("operator", (root.cert,)), server_name=SERVER_NAME, pins=pins)
    server = ServerSide(sprofile, Identity.from_cert_key(server_cert))
    connections = 2 if case == "resumption" else 1
    return Setup(case, client, server, now, connections)


# ---------------------------------------------------------------- running


async def _one(
    client_tls: ClientTls, server_tls: ServerTls, s: Setup, session: TlsSession | None
) -> tuple[Connection, TlsSession | None]:
    trace = MessageTrace()
    a, b = trio.testing.memory_stream_pair()
    out: dict[str, Any] = {}
    peer = None if s.client.pins is None else PeerPolicy(side="client", pins=s.client.pins)

    async def client_side() -> None:
        try:
            stream: TlsStream = await tls_connect(
                a, client_tls, s.client.server_name, verify_time=lambda: s.now, session=session, peer=peer
            )
        except HandshakeFailed as exc:
            out["client_error"] = exc
            return
        out["client"] = stream.info
        try:
            await stream.receive_some()
            await stream.send_all(b"ping")
        except HandshakeFailed as exc:
            out["client_error"] = exc
        except TransportError:
            pass
        out["session"] = stream.session
        await stream.aclose()

    async def server_side() -> None:
        try:
            stream = await tls_accept(b, server_tls, verify_time=lambda: s.now)
        except HandshakeFailed as exc:
            out["server_error"] = exc
            return
        out["server"] = stream.info
        try:
            await stream.send_all(b"hello")
            await stream.receive_some()
        except HandshakeFailed as exc:
            out["server_error"] = exc
        except TransportError:
            pass
        await stream.aclose()

    with (
        trace_messages(client_tls, trace),
        trace_messages(server_tls, trace),
        trio.fail_after(EXCHANGE_TIMEOUT_S),
    ):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client_side)
            nursery.start_soon(server_side)
    conn = Connection(
        tuple(trace.messages),
        out.get("client"),
        out.get("server"),
        out.get("client_error"),
        out.get("server_error"),
    )
    return conn, out.get("session")


async def _run(s: Setup) -> list[Connection]:
    client_tls = ClientTls.build(s.client.profile, s.client.trust, s.client.identity)
    server_tls = ServerTls.build(s.server.profile, s.server.identity)
    done: list[Connection] = []
    session = None
    for _ in range(s.connections):
        conn, session = await _one(client_tls, server_tls, s, session)
        done.append(conn)
    return done


def run(s: Setup) -> list[Connection]:
    """Run the setup's connections (real TLS, in memory, virtual time)."""
    return trio.run(_run, s, clock=trio.testing.MockClock(autojump_threshold=0))


# ---------------------------------------------------------------- telling


def _list(items: Sequence[str]) -> str:
    return "[" + ", ".join(items) + "]" if items else "[] (the engine's default)"


_DEFAULT_PROFILE = TlsProfile()


def _knob(profile: TlsProfile, key: str) -> str:
    """Whether ``profile`` sets ``key`` to something else than the built-in profile."""
    return "default" if getattr(profile, key) == getattr(_DEFAULT_PROFILE, key) else "configured"


def _tls13(conn: Connection) -> bool:
    sh = _first(conn, tm.ServerHello)
    return sh is not None and sh.version == "1.3"


def _parsed(conn: Connection) -> list[tuple[TlsMessage, tm.Message]]:
    tls13 = None
    out: list[tuple[TlsMessage, tm.Message]] = []
    for m in conn.messages:
        if m.side != "client" and m.content_type == CONTENT_HANDSHAKE:
            continue  # the client's view of the handshake; the server's only for the alerts it sent
        if m.content_type == CONTENT_ALERT:
            if m.sent:
                out.append((m, tm.parse_alert(m.data)))
            continue
        if m.content_type != CONTENT_HANDSHAKE:
            continue
        msg = tm.parse_message(m.data, tls13=tls13)
        if isinstance(msg, tm.ServerHello) and not msg.retry:
            tls13 = msg.version == "1.3"
        out.append((m, msg))
    return out


def _first(conn: Connection, kind: type[Any]) -> Any:
    return next((msg for _, msg in _parsed(conn) if isinstance(msg, kind)), None)


def _offer(n: int, ch: tm.ClientHello, s: Setup) -> list[Step]:
    p = s.client.profile
    steps = [
        Step(
            n,
            "offer",
            1,
            f"client -> ClientHello: versions {_list(ch.versions)}, SNI {ch.sni or '(none)'}",
            f"client versions = {list(p.versions)} ({_knob(p, 'versions')})",
            "client.versions",
        ),
        Step(
            n,
            "offer",
            2,
            f"suites offered {_list(ch.suite_names)}",
            f"client cipher_suites ({_knob(p, 'cipher_suites')}), most preferred first",
            "client.cipher_suites",
        ),
        Step(
            n,
            "offer",
            2,
            f"groups {_list(ch.groups)}; key share sent for {_list(ch.key_shares)}",
            f"client groups = {_list(p.groups)}",
            "client.groups",
        ),
        Step(
            n,
            "offer",
            2,
            f"signature algorithms {_list(ch.signature_algorithms)}",
            f"client signature_algorithms = {_list(p.signature_algorithms)}",
            "client.signature_algorithms",
        ),
        Step(
            n,
            "offer",
            2,
            f"ALPN {_list(ch.alpn) if ch.alpn else '(none offered)'}",
            f"client alpn = {list(p.alpn)}",
            "client.alpn",
        ),
    ]
    if ch.offers_psk or ch.ticket:
        what = (
            "a TLS 1.3 pre-shared key (the ticket of the last connection)"
            if ch.offers_psk
            else (f"a TLS 1.2 session ticket ({ch.ticket} bytes)")
        )
        steps.append(
            Step(
                n,
                "resumption",
                1,
                f"client offers to resume: {what}",
                f"client session.resumption = {p.session.resumption}",
                "client.session.resumption",
            )
        )
    return steps


def _choice(
    n: int, sh: tm.ServerHello, ch: tm.ClientHello | None, ee: tm.EncryptedExtensions | None, s: Setup
) -> list[Step]:
    c, sv = s.client.profile, s.server.profile
    if sh.retry:
        return [
            Step(
                n,
                "choice",
                2,
                f"server -> HelloRetryRequest: send a key share for {sh.group}",
                f"server groups = {_list(sv.groups)}: none of the client's key shares is acceptable",
                "server.groups",
            )
        ]
    common = [v for v in sv.versions if v in c.versions]
    why_version = (
        f"the newest version both enable: client offers {list(ch.versions if ch else c.versions)}, "
        f"server versions = {list(sv.versions)} (common: {common})"
    )
    pref = sv.suite_preference
    why_suite = (
        f"suite_preference = {pref!r}: the {'server' if pref == 'server' else 'client'}'s first suite "
        f"that the other side also lists; server cipher_suites for {sh.version} = "
        f"{_list(sv.suites(sh.version))}"
    )
    steps = [
        Step(
            n,
            "choice",
            1,
            f"server -> ServerHello: TLS {sh.version}, {sh.suite_name}",
            why_version,
            "server.versions",
            True,
        ),
        Step(n, "choice", 2, f"suite {sh.suite_name}", why_suite, "server.suite_preference", True),
    ]
    if sh.group:
        steps.append(
            Step(
                n,
                "choice",
                2,
                f"key exchange group {sh.group}",
                f"the server's first group (server groups = {_list(sv.groups)}) among the client's "
                f"key shares {_list(ch.key_shares if ch else ())}",
                "server.groups",
                True,
            )
        )
    alpn = sh.alpn or (ee.alpn if ee else None)
    if alpn or sv.alpn:
        steps.append(
            Step(
                n,
                "choice",
                2,
                f"ALPN {alpn or '(none agreed)'}",
                f"server alpn = {list(sv.alpn)}, client offered {list(c.alpn)}",
                "server.alpn",
                alpn is not None,
            )
        )
    if (
        sh.version != "1.3"
        and ch is not None
        and ch.ticket
        and sh.session_id
        and sh.session_id == ch.session_id
    ):
        steps.append(
            Step(
                n,
                "resumption",
                1,
                "server accepts the session ticket (it echoes the client's session id)",
                f"server session.resumption = {sv.session.resumption}, lifetime_s = "
                f"{sv.session.lifetime_s:g} (RFC 5077 §3.4)",
                "server.session",
                True,
            )
        )
    if sh.accepts_psk:
        steps.append(
            Step(
                n,
                "resumption",
                1,
                "server accepts the pre-shared key: no certificate this time",
                f"server session.resumption = {sv.session.resumption}, lifetime_s = "
                f"{sv.session.lifetime_s:g} (RFC 8446 §2.2)",
                "server.session",
                True,
            )
        )
    return steps


def _cert_line(cert: x509.Certificate) -> str:
    return (
        f"{common_name(cert) or cert.subject.rfc4514_string()} (issuer {common_name_of_issuer(cert)}, "
        f"valid {cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} .. {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC)"
    )


def common_name_of_issuer(cert: x509.Certificate) -> str:
    """The issuer's CN (or its whole name)."""
    cns = cert.issuer.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else cert.issuer.rfc4514_string()


def _verify(n: int, chain: Sequence[x509.Certificate], s: Setup) -> list[Step]:
    """The client's checks of the server chain, in the engine's order; after the first failure, skipped."""
    trust, now = s.client.trust, s.now
    steps = [
        Step(n, "certificate", 1 if i == 0 else 2, f"certificate [{i}] {_cert_line(c)}")
        for i, c in enumerate(chain)
    ]
    failed = False

    def check(name: str, ok: bool | None, text: str, why: str, knob: str) -> None:
        nonlocal failed
        if failed:
            steps.append(
                Step(n, "verify", 2, f"{name}: not reached", "the engine stops at the first failure", knob)
            )
            return
        steps.append(Step(n, "verify", 1 if ok is False else 2, f"{name}: {text}", why, knob, ok))
        failed = ok is False

    anchors = ", ".join(common_name(a) or "?" for a in trust.anchors)
    path = build_chain(chain, trust.anchors) if chain else None
    if path is None:
        check(
            "chain building",
            False,
            "no path from the leaf to a root of the CA group",
            f"trust {trust.name!r} anchors: {anchors}; the chain ends at "
            f"{common_name_of_issuer(chain[-1]) if chain else '(nothing)'}",
            "client.trust.roots",
        )
    else:
        check(
            "chain building",
            True,
            " -> ".join(common_name(c) or "?" for c in path),
            f"ends at an anchor of CA group {trust.name!r} ({anchors})",
            "client.trust.roots",
        )
    clock = f"{now:%Y-%m-%d %H:%M:%S} UTC"
    if trust.time_check != "enforce":
        check(
            "validity",
            None,
            f"not checked (time_check = {trust.time_check!r})",
            "",
            "client.trust.time_check",
        )
    else:
        bad = next(((c, r) for c in reversed(path or chain) if (r := validity_verdict(c, now))), None)
        text = (
            f"{common_name(bad[0])} {bad[1].split(':')[-1].replace('_', ' ')} at the verifier's clock {clock}"
            if bad
            else f"every certificate valid at the verifier's clock {clock}"
        )
        check(
            "validity",
            bad is None,
            text,
            "time_check = 'enforce': checked root first at the simulation time",
            "client.trust.time_check",
        )
    host = s.client.server_name
    if host is None or trust.hostname == "off":
        check("hostname", None, "not checked", f"hostname = {trust.hostname!r}", "client.trust.hostname")
    else:
        reason = (
            hostname_verdict(chain[0], host, trust.hostname, trust.wildcards) if chain else "no certificate"
        )
        check(
            "hostname",
            reason is None,
            f"{host!r} {'matches' if reason is None else 'does not match'} the leaf",
            f"hostname = {trust.hostname!r}, wildcards = {trust.wildcards!r}",
            "client.trust.hostname",
        )
    pins = s.client.pins
    if pins is None:
        check("pins", None, "none configured", "", "client.pins")
    else:
        leaf = spki_hex(chain[0]) if chain else None
        match = any(p.spki_sha256 == leaf for p in pins.pins if p.state != "released")
        check(
            "pins",
            match or pins.enforcement == "report_only",
            f"leaf key {leaf[:16] if leaf else '?'}... {'matches' if match else 'matches no'} pin "
            f"({', '.join(p.spki_sha256[:16] + '...' for p in pins.pins)})",
            f"enforcement = {pins.enforcement!r}",
            "client.pins",
        )
    rev = trust.revocation
    if rev.crl == "off" and rev.ocsp == "off":
        check("revocation", None, "not configured (crl = 'off', ocsp = 'off')", "", "client.trust.revocation")
    else:
        check(
            "revocation",
            None,
            f"configured (crl = {rev.crl!r}, ocsp = {rev.ocsp!r})",
            "checked by the engine: its verdict is the result below",
            "client.trust.revocation",
        )
    return steps


_REASON_KNOB: Mapping[str, str] = {
    "downgrade_refused": "server.versions",
    "cipher_refused": "server.cipher_suites",
    "group_refused": "server.groups",
    "alpn_refused": "client.alpn_require",
    "cert_invalid:unknown_ca": "client.trust.roots",
    "cert_invalid:expired": "client.trust.time_check",
    "cert_invalid:not_yet_valid": "client.trust.time_check",
    "cert_invalid:hostname_mismatch": "client.trust.hostname",
    "cert_invalid:wildcard": "client.trust.wildcards",
    "cert_invalid:revoked": "client.trust.revocation",
    "pin_mismatch": "client.pins",
}
"""The knob behind the reason of the side that refused (the other side only hears an alert)."""


def _refusal_why(reason: str, s: Setup) -> str:
    c, sv = s.client.profile, s.server.profile
    if reason == "downgrade_refused":
        return (
            f"no version both enable: client versions = {list(c.versions)}, server versions = "
            f"{list(sv.versions)} (RFC 8446 §4.2.1, alert protocol_version)"
        )
    if reason == "cipher_refused":
        return "no suite of the negotiated version in both lists (RFC 8446 §4.1.1, alert handshake_failure)"
    if reason == "group_refused":
        return (
            f"no key-exchange group in common: client groups = {_list(c.groups)}, server groups = "
            f"{_list(sv.groups)} (RFC 8446 §4.2.7)"
        )
    return ""


def _refusal(n: int, conn: Connection, s: Setup) -> list[Step]:
    steps: list[Step] = []
    last = "before any message"
    for m, msg in _parsed(conn):
        if not isinstance(msg, tm.Alert):
            last = f"after {tm.message_name(m.data[0])}" if m.data else last
            continue
        steps.append(Step(n, "refusal", 1, f"the handshake stopped {last}"))
        level = "fatal" if msg.level == 2 else "warning"
        text = f"{m.side} -> alert {msg.name} ({level})"
        steps.append(Step(n, "refusal", 1, text, "the side that refused tells the other why", None, False))
    errors = [
        (side, err) for side, err in (("server", conn.server_error), ("client", conn.client_error)) if err
    ]
    decider = next((err.reason for _, err in errors if not err.remote), None)
    for side, err in errors:
        reason = err.reason if not err.remote or decider is None else decider
        knob = _REASON_KNOB.get(reason)
        who = "the peer's alert" if err.remote else "its own check"
        steps.append(
            Step(n, "refusal", 1, f"{side} stops: {err.reason} ({who})", _refusal_why(reason, s), knob, False)
        )
    return steps


def _result(n: int, conn: Connection, s: Setup) -> list[Step]:
    info = conn.client
    if info is None or conn.client_error or conn.server_error:
        return _refusal(n, conn, s)
    resumed = "resumed" if info.session_reused else "full handshake"
    steps = [
        Step(
            n,
            "result",
            1,
            f"connected: {info.version}, {info.cipher_iana}, group {info.group}, {resumed}",
            ok=True,
        )
    ]
    return steps


def _tickets(n: int, conn: Connection, s: Setup) -> list[Step]:
    sv = s.server.profile
    return [
        Step(
            n,
            "ticket",
            1 if n == 1 else 2,
            f"server -> NewSessionTicket: {msg.ticket_bytes}-byte ticket, lifetime {msg.lifetime_s} s",
            f"server session.resumption = {sv.session.resumption!r}, session.lifetime_s = "
            f"{sv.session.lifetime_s:g}",
            "server.session",
        )
        for _, msg in _parsed(conn)
        if isinstance(msg, tm.NewSessionTicket)
    ]


def _wire(n: int, conn: Connection) -> list[Step]:
    steps = []
    t0 = conn.messages[0].at if conn.messages else 0.0
    for m, msg in _parsed(conn):
        arrow = "->" if (m.side == "client") == m.sent else "<-"
        if isinstance(msg, tm.Alert):
            what = f"alert {msg.name}"
        elif isinstance(msg, tm.Malformed):
            what = f"unreadable message ({msg.reason})"
        else:
            what = tm.message_name(m.data[0]) if m.data else "?"
        steps.append(
            Step(n, "wire", 3, f"t+{m.at - t0:.3f}s client {arrow} server  {what} ({len(m.data)} bytes)")
        )
    return steps


def _story(n: int, conn: Connection, s: Setup) -> list[Step]:
    ch = _first(conn, tm.ClientHello)
    sh = next((msg for _, msg in _parsed(conn) if isinstance(msg, tm.ServerHello) and not msg.retry), None)
    hrr = next((msg for _, msg in _parsed(conn) if isinstance(msg, tm.ServerHello) and msg.retry), None)
    ee = _first(conn, tm.EncryptedExtensions)
    steps = _wire(n, conn)
    if ch is not None:
        steps += _offer(n, ch, s)
    if hrr is not None:
        steps += _choice(n, hrr, ch, ee, s)
    if sh is not None:
        steps += _choice(n, sh, ch, ee, s)
        cert = _first(conn, tm.Certificate)
        if cert is not None:
            chain = [x509.load_der_x509_certificate(d) for d in cert.certificates]
            steps += _verify(n, chain, s)
    steps += _result(n, conn, s)
    steps += _tickets(n, conn, s)
    return steps


@attrs.frozen
class Explanation:
    """The story of a setup's connections."""

    setup: Setup
    steps: tuple[Step, ...]
    predicted: str

    def render(self, depth: int = 2) -> str:
        """Plain text; ``depth`` 1 (the story) .. 3 (every message)."""
        s = self.setup
        lines = [
            f"evsim explain handshake: {s.title or s.case + ': ' + CASES[s.case]}",
            f"verifiers' clock {s.now:%Y-%m-%d %H:%M:%S} UTC; predicted by the model: {self.predicted}",
        ]
        current = 0
        for step in self.steps:
            if step.depth > depth:
                continue
            if step.connection != current:
                current = step.connection
                lines.append(f"\nconnection {current}" + (" (resuming the first)" if current > 1 else ""))
            mark = {True: "ok  ", False: "FAIL", None: "    "}[step.ok]
            lines.append(f"  {mark} {step.text}")
            if step.why and depth >= 2:
                lines.append(f"         why: {step.why}" + (f"  [knob: {step.knob}]" if step.knob else ""))
            elif step.knob and step.ok is False:
                lines.append(f"         knob: {step.knob}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """The document ``--json`` prints."""
        return {
            "case": self.setup.case,
            "title": self.setup.title or CASES.get(self.setup.case, ""),
            "now": self.setup.now.isoformat(),
            "predicted": self.predicted,
            "steps": [attrs.asdict(st) for st in self.steps],
        }


def _predicted(s: Setup) -> str:
    out = predict(s.client, s.server, now=s.now)
    if isinstance(out, Negotiated):
        return f"TLS {out.version}, {out.suite}"
    return f"refused by the {out.side}: {out.reason}"


_VERSION_NAMES: Mapping[str, str] = {"TLSv1.3": "1.3", "TLSv1.2": "1.2", "TLSv1.1": "1.1", "TLSv1": "1.0"}


def _engine_said(conn: Connection) -> str:
    """The first connection's outcome in the predictor's words."""
    for side, err in (("server", conn.server_error), ("client", conn.client_error)):
        if err is not None and not err.remote:
            return f"refused by the {side}: {err.reason}"
    if conn.client is not None and conn.client_error is None and conn.server_error is None:
        return (
            f"TLS {_VERSION_NAMES.get(conn.client.version, conn.client.version)}, {conn.client.cipher_iana}"
        )
    err = conn.client_error or conn.server_error
    return f"refused: {err.reason if err else 'no handshake'}"


def _agreement(conn: Connection, s: Setup, predicted: str) -> Step:
    said = _engine_said(conn)
    if said == predicted:
        return Step(1, "check", 2, f"the model's prediction agrees with the engine: {said}", ok=True)
    return Step(
        1,
        "check",
        1,
        f"the model predicted {predicted!r} but the engine did {said!r}",
        "a rule evsim.tls.predict does not know (groups, signature algorithms, change policies...)",
        ok=False,
    )


def explain(s: Setup) -> Explanation:
    """Run the setup and tell what happened."""
    conns = run(s)
    predicted = _predicted(s)
    steps: list[Step] = []
    for i, conn in enumerate(conns, 1):
        steps += _story(i, conn, s)
        if i == 1:
            steps.append(_agreement(conn, s, predicted))
    return Explanation(s, tuple(steps), predicted)
