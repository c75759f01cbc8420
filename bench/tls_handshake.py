"""Benchmark: TLS handshake CPU cost per side, against the raw pyOpenSSL floor (issue #3 item 8).

One row per configuration: TLS 1.3 / 1.2; ECDSA P-256 / RSA-2048 keys (root, server and client certificates
of one key type); server-only / mutual TLS; full / resumed handshake (TLS 1.3: tickets; TLS 1.2: session ids
and tickets). For each row, in the same process:

* **floor**: two pyOpenSSL ``SSL.Connection`` objects on memory BIOs pumped by a plain Python loop (no
  trio). ``time.process_time`` is read around every engine call, so each side's CPU is its own
  (``floor client µs`` / ``floor server µs``). The floor contexts mirror evsim's compiled ones at the
  OpenSSL level (versions, suite lists, options, modes, session-id context, ticket setting) but verify in C
  with no Python callback and no hostname check.
* **evsim**: ``tls_connect`` / ``tls_accept`` over ``trio.testing.memory_stream_pair``, one handshake after
  another in one ``trio.run`` (a nursery and a server task per handshake). The total is CPU per handshake
  over the whole run (``evsim µs``); ``overhead`` = evsim total / floor total - 1. A second, instrumented
  run (N / 2 handshakes) attributes CPU to each side with a :class:`trio.abc.Instrument` that reads
  ``process_time`` around every task step of the client task and the server tasks (the transport's pump
  runs in the sending task); what no task step holds is trio's scheduler (``loop``). The instrument costs
  CPU itself, so it only supplies proportions: the uninstrumented total is split in them, and per-side
  overheads compare each side's share with the floor's side (the loop share belongs to neither).

Every connection is closed with close_notify after its handshake, untimed: OpenSSL marks the session of a
connection freed without one as not resumable, which would silently turn resumed rows into full ones.

Both measure the handshake only, up to both ``do_handshake`` calls returning: the TLS 1.3 server writes its
session tickets inside its last ``do_handshake`` (counted), the client does not read them (not counted, in
both). Resumed rows reuse one session taken from a full handshake (for TLS 1.3 after the first application
message, as tickets arrive after the handshake); "resumed id" rows compile the profile with
``SessionPolicy(resumption="ids")`` (session ids in the server's cache, tickets off on both sides, as the
floor's ``OP_NO_TICKET``) and their client offers the session from a ``SessionStore``, as an endpoint does. Every row is checked in warm-up: the negotiated version,
that resumed rows resume and full rows do not, in the floor and in evsim, and that both settle on the same
key-exchange group (``group``: OpenSSL's default list, X25519MLKEM768 first for TLS 1.3 on OpenSSL 3.5+).

Figures are medians over rounds; within a round the floor and evsim of a row alternate, and every row is
measured once per round, so a slow phase of a shared machine hits the floor, evsim and every row alike. Run alone: ``python -m bench tls-handshake`` or
``python -m bench.tls_handshake [--n 200] [--rounds 5] [--json]``; ``BENCH_TLS_HANDSHAKE_N`` sets ``--n``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, TypeAlias

import trio
import trio.testing
from OpenSSL import SSL, crypto

from bench.common import bench_table, cpu_s, load_note
from bench.floor import _drain
from evsim.clock import real_utcnow
from evsim.pki import CertificateAuthority, KeyType
from evsim.tls import (
    ClientTls,
    Identity,
    ServerTls,
    SessionPolicy,
    SessionStore,
    TlsProfile,
    TlsSession,
    TlsStream,
    TrustStore,
    _ossl,
    tls_accept,
    tls_connect,
)

__all__ = [
    "DEFAULT_N",
    "DEFAULT_ROUNDS",
    "ROWS",
    "HandshakeRow",
    "RowSpec",
    "cli",
    "measure_row",
    "measure_rows",
    "render",
    "run",
]

Version: TypeAlias = Literal["1.3", "1.2"]
Keys: TypeAlias = Literal["ecdsa", "rsa"]
Auth: TypeAlias = Literal["server-only", "mutual"]
Mode: TypeAlias = Literal["full", "resumed ticket", "resumed id"]

DEFAULT_N = 200
"""Handshakes per row and per method (issue #3 item 8 suggests 200; the 20 rows stay under the 60 s budget)."""
DEFAULT_ROUNDS = 20
"""Rounds per row: N is split into this many rounds and each figure is the median round. Many short rounds
(10 handshakes at N = 200), every row once per round: on the shared 2-core machine 5 rounds of 40 still left
row-to-row swings of +-30 % (measured 2026-11-22); shorter rounds follow the load changes more closely."""
WARMUP = 3
"""Untimed handshakes per row and method before measuring (first-use allocations, caches, branch history)."""
SPLIT_FRACTION = 2
"""The instrumented (per-side) run does N / SPLIT_FRACTION handshakes: it only yields proportions, and halving
it keeps the 20 rows within the section's 60 s budget (issue #3 item 8)."""
MAX_FLIGHTS = 16
"""Pump iterations before the floor declares a protocol loop (a full TLS 1.2/1.3 handshake needs <= 4)."""

HOST = "csms.evsim.test"
NOW = real_utcnow().replace(microsecond=0)
"""Certificates are issued and checked at this time (the floor's OpenSSL checks at the real clock)."""

SERVER_TASK = "bench-tls-handshake-server"

_SSL_MODE_NO_AUTO_CHAIN = 0x00000008  # SSL_MODE_NO_AUTO_CHAIN, openssl/ssl.h (evsim's contexts set it)
_OP_NO_RENEGOTIATION: int = getattr(SSL, "OP_NO_RENEGOTIATION", 0)  # as evsim.tls.context
_MODE_RELEASE_BUFFERS: int = getattr(SSL, "MODE_RELEASE_BUFFERS", 0)  # as evsim.tls.context
_OSSL_VERSIONS = {"1.2": SSL.TLS1_2_VERSION, "1.3": SSL.TLS1_3_VERSION}
_VERSION_NAMES = {"1.2": "TLSv1.2", "1.3": "TLSv1.3"}
_KEY_TYPES: dict[Keys, KeyType] = {"ecdsa": "ec", "rsa": "rsa"}


@dataclass(frozen=True)
class RowSpec:
    """One configuration to measure."""

    version: Version
    keys: Keys
    auth: Auth
    mode: Mode

    @property
    def resumed(self) -> bool:
        """True for the resumed modes."""
        return self.mode != "full"


def _all_rows() -> tuple[RowSpec, ...]:
    out: list[RowSpec] = []
    modes: dict[Version, tuple[Mode, ...]] = {
        "1.3": ("full", "resumed ticket"),  # TLS 1.3 resumes by PSK from a ticket only (RFC 8446 §2.2)
        "1.2": ("full", "resumed id", "resumed ticket"),  # RFC 5246 §7.3 session ids, RFC 5077 tickets
    }
    for version in ("1.3", "1.2"):
        for keys in ("ecdsa", "rsa"):
            for auth in ("server-only", "mutual"):
                for mode in modes[version]:
                    out.append(RowSpec(version, keys, auth, mode))
    return tuple(out)


ROWS: tuple[RowSpec, ...] = _all_rows()
"""Every row ``make bench`` reports (20)."""


@dataclass
class HandshakeRow:
    """The figures of one row (µs of CPU per handshake, medians over rounds).

    ``evsim_client_us + evsim_server_us + evsim_loop_us == evsim_us``: the uninstrumented total split in the
    median proportions of the instrumented runs (``loop``: trio's scheduler, outside every task step).
    """

    version: str
    keys: str
    auth: str
    mode: str
    handshakes: int
    floor_client_us: float
    floor_server_us: float
    evsim_us: float
    evsim_client_us: float
    evsim_server_us: float
    evsim_loop_us: float
    suite: str
    group: str

    @property
    def floor_us(self) -> float:
        """Both sides of the floor."""
        return self.floor_client_us + self.floor_server_us

    @property
    def overhead_pct(self) -> float:
        """evsim's CPU per handshake over the floor's, in per cent."""
        return _pct(self.evsim_us, self.floor_us)

    @property
    def client_overhead_pct(self) -> float:
        """evsim's client share over the floor's client side, in per cent (trio's loop share excluded)."""
        return _pct(self.evsim_client_us, self.floor_client_us)

    @property
    def server_overhead_pct(self) -> float:
        """evsim's server share over the floor's server side, in per cent (trio's loop share excluded)."""
        return _pct(self.evsim_server_us, self.floor_server_us)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready figures, with the derived ones."""
        return {
            **asdict(self),
            "floor_us": self.floor_us,
            "overhead_pct": self.overhead_pct,
            "client_overhead_pct": self.client_overhead_pct,
            "server_overhead_pct": self.server_overhead_pct,
        }


def _pct(value: float, base: float) -> float:
    return (value / base - 1.0) * 100.0 if base else float("nan")


# ---------------------------------------------------------------- material (certificates and contexts)


@dataclass(frozen=True)
class _Pki:
    root: CertificateAuthority
    server: Identity
    client: Identity
    trust: TrustStore


_PKI_CACHE: dict[Keys, _Pki] = {}


def _pki(keys: Keys) -> _Pki:
    """Root CA, server and client identity of one key type (cached: RSA key generation is slow)."""
    if keys not in _PKI_CACHE:
        key_type = _KEY_TYPES[keys]
        root = CertificateAuthority.create_root(f"bench {keys} root", "evsim", now=NOW, key_type=key_type)
        server = Identity.from_cert_key(root.issue_server(HOST, now=NOW, key_type=key_type))
        client = Identity.from_cert_key(root.issue_client("CS-BENCH-0001", now=NOW, key_type=key_type))
        _PKI_CACHE[keys] = _Pki(root, server, client, TrustStore(f"bench {keys}", (root.cert,)))
    return _PKI_CACHE[keys]


@dataclass(frozen=True)
class _Setup:
    spec: RowSpec
    client_tls: ClientTls
    server_tls: ServerTls
    floor_client: SSL.Context
    floor_server: SSL.Context
    sessions: SessionStore | None
    """The client's session store ("resumed id" rows: it offers the session, as a station's endpoint does);
    other rows hand the session to ``tls_connect`` directly."""


def _evsim_configs(spec: RowSpec, pki: _Pki) -> tuple[ClientTls, ServerTls]:
    """evsim's compiled configurations for a row: "resumed id" rows use the session policy ``ids`` (session
    ids in the server cache, no tickets, on both sides), the others the default (``both``)."""
    session = SessionPolicy(resumption="ids") if spec.mode == "resumed id" else SessionPolicy()
    profile = TlsProfile(versions=(spec.version,), session=session)
    mutual = spec.auth == "mutual"
    client_tls = ClientTls.build(profile, pki.trust, pki.client if mutual else None)
    server_tls = ServerTls.build(
        profile, pki.server, pki.trust if mutual else None, "required" if mutual else "none"
    )
    return client_tls, server_tls


def _floor_contexts(spec: RowSpec, pki: _Pki, profile: TlsProfile) -> tuple[SSL.Context, SSL.Context]:
    """Plain pyOpenSSL contexts equal to evsim's at the OpenSSL level, minus the Python verify callback."""
    version = _OSSL_VERSIONS[spec.version]
    mutual = spec.auth == "mutual"
    contexts: list[SSL.Context] = []
    for method in (SSL.TLS_CLIENT_METHOD, SSL.TLS_SERVER_METHOD):
        ctx = SSL.Context(method)
        ctx.set_min_proto_version(version)
        ctx.set_max_proto_version(version)
        options = SSL.OP_NO_COMPRESSION | _OP_NO_RENEGOTIATION
        if spec.mode == "resumed id":  # SessionPolicy(resumption="ids"): no tickets, on both sides
            options |= SSL.OP_NO_TICKET
        if method == SSL.TLS_SERVER_METHOD:
            options |= SSL.OP_CIPHER_SERVER_PREFERENCE  # TlsProfile.suite_preference defaults to "server"
        ctx.set_options(options)
        ctx.set_mode(_MODE_RELEASE_BUFFERS | _SSL_MODE_NO_AUTO_CHAIN)
        cipher_list = profile.openssl_cipher_list()
        if cipher_list:
            ctx.set_cipher_list(cipher_list)
        tls13 = profile.tls13_ciphersuites()
        if tls13:
            ctx.set_tls13_ciphersuites(tls13)
        contexts.append(ctx)
    client, server = contexts

    def use(ctx: SSL.Context, identity: Identity) -> None:
        leaf: Any = identity.leaf  # pyOpenSSL takes cryptography objects; the installed stubs predate that
        key: Any = identity.key
        ctx.use_certificate(leaf)
        ctx.use_privatekey(key)

    def trust(ctx: SSL.Context, mode: int) -> None:
        store = ctx.get_cert_store()
        assert store is not None
        store.add_cert(crypto.X509.from_cryptography(pki.root.cert))
        ctx.set_verify(mode)

    use(server, pki.server)
    server.set_session_cache_mode(SSL.SESS_CACHE_SERVER)
    server.set_session_id(b"evsim-bench-floor")
    trust(client, SSL.VERIFY_PEER)
    if mutual:
        use(client, pki.client)
        trust(server, SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT)
    return client, server


def _setup(spec: RowSpec) -> _Setup:
    pki = _pki(spec.keys)
    client_tls, server_tls = _evsim_configs(spec, pki)
    floor_client, floor_server = _floor_contexts(spec, pki, client_tls.profile)
    sessions = SessionStore() if spec.mode == "resumed id" else None
    return _Setup(spec, client_tls, server_tls, floor_client, floor_server, sessions)


# ---------------------------------------------------------------- the floor


def _close_floor(conn: SSL.Connection) -> None:
    """Send close_notify (into the memory BIO). OpenSSL marks the session of a connection freed without it
    not resumable (``ssl_clear_bad_session`` in ``SSL_free``), which would turn every later "resumed"
    handshake of the row into a full one."""
    with contextlib.suppress(SSL.Error):  # memory BIOs never block a close_notify
        conn.shutdown()


def _advance(conn: SSL.Connection, done: bool) -> bool:
    """Run ``do_handshake`` unless ``done``; True once the handshake is complete on this side."""
    if done:
        return True
    try:
        conn.do_handshake()
    except SSL.WantReadError:
        return False
    return True


def _floor_handshake(setup: _Setup, session: SSL.Session | None, cpu: list[float]) -> SSL.Connection:
    """One handshake on memory BIOs; adds each side's CPU seconds to ``cpu[0]`` (client), ``cpu[1]`` (server).

    Bytes one side produced are written into the other side's BIO on the receiver's account. The server is
    closed (close_notify, untimed) before returning; the client is returned open, its TLS 1.3 tickets
    unread, and the caller closes it.
    """
    clock = time.process_time
    t0 = clock()
    client = SSL.Connection(setup.floor_client, None)
    client.set_connect_state()
    client.set_tlsext_host_name(HOST.encode())
    if session is not None:
        client.set_session(session)
    t1 = clock()
    server = SSL.Connection(setup.floor_server, None)
    server.set_accept_state()
    t2 = clock()
    c_cpu, s_cpu = t1 - t0, t2 - t1
    c_done = s_done = False
    for _ in range(MAX_FLIGHTS):
        t0 = clock()
        c_done = _advance(client, c_done)
        to_server = _drain(client)
        t1 = clock()
        if to_server:
            server.bio_write(to_server)
        s_done = _advance(server, s_done)
        to_client = _drain(server)
        t2 = clock()
        if to_client:
            client.bio_write(to_client)
        t3 = clock()
        c_cpu += (t1 - t0) + (t3 - t2)
        s_cpu += t2 - t1
        if c_done and s_done:
            break
    else:  # pragma: no cover - a protocol loop, not a slow machine
        raise RuntimeError(f"{setup.spec}: the floor handshake did not converge")
    cpu[0] += c_cpu
    cpu[1] += s_cpu
    _close_floor(server)
    return client


def _floor_session(setup: _Setup) -> SSL.Session:
    """A session from a full floor handshake (the client reads the TLS 1.3 tickets first)."""
    client = _floor_handshake(setup, None, [0.0, 0.0])
    with contextlib.suppress(SSL.WantReadError):
        client.recv(1)  # processes NewSessionTicket; no application data follows
    session = client.get_session()
    _close_floor(client)
    if session is None:  # pragma: no cover
        raise RuntimeError(f"{setup.spec}: no session after a full floor handshake")
    return session


def _check_floor(setup: _Setup, session: SSL.Session | None) -> tuple[str, str]:
    """Warm-up check of the floor: version, resumption as the row says. Returns (suite, group)."""
    client = _floor_handshake(setup, session, [0.0, 0.0])
    _close_floor(client)
    spec = setup.spec
    version, reused = client.get_protocol_version_name(), _ossl.session_reused(client)
    if version != _VERSION_NAMES[spec.version] or reused is not spec.resumed:
        raise RuntimeError(f"{spec}: floor negotiated {version}, resumed={reused}")
    return client.get_cipher_name() or "?", client.get_group_name() or "?"


def _floor_round(setup: _Setup, session: SSL.Session | None, n: int) -> tuple[float, float]:
    """CPU µs per handshake (client, server) over ``n`` floor handshakes."""
    cpu = [0.0, 0.0]
    for _ in range(n):
        _close_floor(_floor_handshake(setup, session, cpu))
    return cpu[0] / n * 1e6, cpu[1] / n * 1e6


# ---------------------------------------------------------------- evsim


class _PerfClock(trio.abc.Clock):
    """trio's default clock (``perf_counter``) without its random per-run offset, shared by every
    ``trio.run`` of the bench: the client's ``SessionStore`` dates sessions in ``trio.current_time()``, and
    with a fresh offset per run a session taken in one run would look decades old (or from the future) in
    the next. Same cost per call as the default clock."""

    def start_clock(self) -> None:
        """Nothing to start: ``perf_counter`` runs."""

    def current_time(self) -> float:
        """``time.perf_counter()``."""
        return time.perf_counter()

    def deadline_to_sleep_time(self, deadline: float) -> float:
        """Seconds until ``deadline``."""
        return deadline - time.perf_counter()


_CLOCK = _PerfClock()


def _now() -> datetime.datetime:
    return NOW


async def _accept(
    transport: trio.abc.Stream, server_tls: ServerTls, keep: list[TlsStream], reply: bool
) -> None:
    stream = await tls_accept(transport, server_tls, verify_time=_now)
    keep.append(stream)
    if reply:
        await stream.send_all(b"x")


class _SideClock(trio.abc.Instrument):
    """Adds the CPU time of every task step to the client (the measuring task) or the server tasks.

    ``process_time`` is read before and after each step while ``on``; :meth:`stop` ends the window in the
    middle of the client's step.
    """

    def __init__(self) -> None:
        self.client_task: trio.lowlevel.Task | None = None
        self.client = self.server = self.other = 0.0
        self.on = True
        self._t = 0.0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self._t = time.process_time()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if self.on:
            self._add(task, time.process_time() - self._t)

    def _add(self, task: trio.lowlevel.Task, dt: float) -> None:
        if task is self.client_task:
            self.client += dt
        elif task.name == SERVER_TASK:
            self.server += dt
        else:
            self.other += dt

    def start(self) -> None:
        """Begin counting from here (called by the client task: this step counts from now on)."""
        self.client_task = trio.lowlevel.current_task()
        self.client = self.server = self.other = 0.0
        self._t = time.process_time()
        self.on = True

    def stop(self) -> None:
        """Stop counting here (called by the client task: this step counts up to now)."""
        if self.on:
            self._add(trio.lowlevel.current_task(), time.process_time() - self._t)
        self.on = False


async def _evsim_handshakes(
    setup: _Setup, session: TlsSession | None, n: int, clock: _SideClock | None = None
) -> float:
    """``n`` handshakes one after another; CPU seconds they took (trio.run set-up and the closes excluded).

    Every stream is kept open until the end, then closed with close_notify (untimed): see :func:`_close_floor`
    for why a connection dropped without it would spoil resumption.
    """
    keep: list[TlsStream] = []
    if clock is not None:
        clock.start()
    t0 = cpu_s()
    for _ in range(n):
        a, b = trio.testing.memory_stream_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_accept, b, setup.server_tls, keep, False, name=SERVER_TASK)
            keep.append(
                await tls_connect(
                    a, setup.client_tls, HOST, verify_time=_now, session=session, sessions=setup.sessions
                )
            )
    spent = cpu_s() - t0
    if clock is not None:
        clock.stop()
    for stream in keep:
        await stream.aclose()
    return spent


async def _evsim_one(setup: _Setup, session: TlsSession | None) -> tuple[str, bool, TlsSession | None, str]:
    """One handshake plus one server message read by the client: (version, resumed, session, group)."""
    a, b = trio.testing.memory_stream_pair()
    servers: list[TlsStream] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_accept, b, setup.server_tls, servers, True, name=SERVER_TASK)
        stream = await tls_connect(
            a, setup.client_tls, HOST, verify_time=_now, session=session, sessions=setup.sessions
        )
        await stream.receive_some()  # TLS 1.3 tickets arrive with (before) the first message
    info = stream.info
    new_session = stream.session
    for s in (stream, *servers):
        await s.aclose()
    return info.version, info.session_reused, new_session, info.group or "?"


# ---------------------------------------------------------------- rows


@dataclass
class _Samples:
    """A row being measured: its setup, the sessions it resumes, and one sample per round."""

    setup: _Setup
    floor_session: SSL.Session | None
    session: TlsSession | None
    suite: str
    group: str
    floor_c: list[float]
    floor_s: list[float]
    totals: list[float]
    shares: list[tuple[float, float, float]]  # client, server, loop: fractions of the instrumented total


def _prepare(spec: RowSpec) -> _Samples:
    """Build the row, take the sessions it resumes, check it in both engines, warm it up."""
    setup = _setup(spec)
    floor_session = _floor_session(setup) if spec.resumed else None
    suite, floor_group = _check_floor(setup, floor_session)
    _, _, evsim_session, _ = trio.run(_evsim_one, setup, None, clock=_CLOCK)
    if spec.resumed and evsim_session is None:  # pragma: no cover
        raise RuntimeError(f"{spec}: no evsim session after a full handshake")
    # resumed rows offer that session: from the client's store ("resumed id"), else passed directly
    session = evsim_session if spec.resumed and setup.sessions is None else None
    version, reused, _, group = trio.run(_evsim_one, setup, session, clock=_CLOCK)
    if version != _VERSION_NAMES[spec.version] or reused is not spec.resumed or group != floor_group:
        raise RuntimeError(
            f"{spec}: evsim negotiated {version} {group}, resumed={reused} (floor: {floor_group})"
        )
    for _ in range(WARMUP):
        _close_floor(_floor_handshake(setup, floor_session, [0.0, 0.0]))
    trio.run(_evsim_handshakes, setup, session, WARMUP, clock=_CLOCK)
    return _Samples(setup, floor_session, session, suite, group, [], [], [], [])


def _sample(row: _Samples, per_round: int, split_n: int) -> None:
    """One round of one row: floor, evsim, instrumented evsim (gc collected before each, then left on)."""
    gc.collect()
    c_us, s_us = _floor_round(row.setup, row.floor_session, per_round)
    row.floor_c.append(c_us)
    row.floor_s.append(s_us)
    gc.collect()
    row.totals.append(
        trio.run(_evsim_handshakes, row.setup, row.session, per_round, clock=_CLOCK) / per_round * 1e6
    )
    gc.collect()
    clock = _SideClock()
    cpu = trio.run(
        _evsim_handshakes, row.setup, row.session, split_n, clock, clock=_CLOCK, instruments=[clock]
    )
    if cpu > 0:
        row.shares.append((clock.client / cpu, clock.server / cpu, (cpu - clock.client - clock.server) / cpu))


def _figures(row: _Samples, handshakes: int) -> HandshakeRow:
    med = statistics.median
    total = med(row.totals)
    nan = float("nan")
    spec = row.setup.spec
    return HandshakeRow(
        version=spec.version,
        keys=spec.keys,
        auth=spec.auth,
        mode=spec.mode,
        handshakes=handshakes,
        floor_client_us=med(row.floor_c),
        floor_server_us=med(row.floor_s),
        evsim_us=total,
        evsim_client_us=total * med(x[0] for x in row.shares) if row.shares else nan,
        evsim_server_us=total * med(x[1] for x in row.shares) if row.shares else nan,
        evsim_loop_us=total * med(x[2] for x in row.shares) if row.shares else nan,
        suite=row.suite,
        group=row.group,
    )


def measure_rows(
    specs: Iterable[RowSpec], n: int = DEFAULT_N, rounds: int = DEFAULT_ROUNDS
) -> list[HandshakeRow]:
    """Measure rows: per row ``n`` floor and ``n`` evsim handshakes (plus ``n / SPLIT_FRACTION`` instrumented).

    Rounds are interleaved across rows (each round measures every row once), so a slow phase of a shared
    machine hits every row alike, not only the rows that happened to run then.

    Args:
        specs: the configurations.
        n: handshakes per row and method, split into ``rounds`` rounds (each round at least one handshake).
        rounds: rounds; each figure is the median over rounds.

    Returns:
        One row of figures per spec, in order.

    Raises:
        ValueError: ``n`` or ``rounds`` below 1.
        RuntimeError: a handshake negotiated another version, or resumed when it should not (or vice versa).
    """
    if n < 1 or rounds < 1:
        raise ValueError("n and rounds must be >= 1")
    rounds = min(rounds, n)
    per_round = n // rounds
    split_n = max(1, per_round // SPLIT_FRACTION)
    rows = [_prepare(spec) for spec in specs]
    # Everything alive now (modules, contexts, certificates) goes to the permanent generation: the
    # collections before each measurement then take microseconds instead of ~30 ms (measured) each.
    gc.collect()
    gc.freeze()
    try:
        for _ in range(rounds):
            for row in rows:
                _sample(row, per_round, split_n)
    finally:
        gc.unfreeze()
    return [_figures(row, per_round * rounds) for row in rows]


def measure_row(spec: RowSpec, n: int = DEFAULT_N, rounds: int = DEFAULT_ROUNDS) -> HandshakeRow:
    """Measure one row alone (see :func:`measure_rows`)."""
    return measure_rows([spec], n, rounds)[0]


@dataclass
class Section:
    """All rows of a run, with the run's wall and CPU time (to detect a loaded machine)."""

    rows: list[HandshakeRow]
    wall_s: float
    cpu_s: float
    n: int
    rounds: int


def run(n: int = DEFAULT_N, rounds: int = DEFAULT_ROUNDS, rows: Iterable[RowSpec] = ROWS) -> Section:
    """Measure ``rows`` (default: all 20); see :func:`measure_rows`."""
    wall0, cpu0 = time.perf_counter(), cpu_s()
    out = measure_rows(rows, n, rounds)
    return Section(out, time.perf_counter() - wall0, cpu_s() - cpu0, n, rounds)


def render(section: Section) -> str:
    """The section as ``make bench`` prints it: the table, then how to read it."""
    body: list[Sequence[object]] = []
    for r in section.rows:
        body.append(
            [
                r.version,
                r.keys,
                r.auth,
                r.mode,
                r.group,
                f"{r.floor_client_us:.0f}",
                f"{r.floor_server_us:.0f}",
                f"{r.evsim_client_us:.0f}",
                f"{r.evsim_server_us:.0f}",
                f"{r.evsim_loop_us:.0f}",
                f"{r.evsim_us:.0f}",
                f"{r.client_overhead_pct:+.0f} / {r.server_overhead_pct:+.0f} / {r.overhead_pct:+.0f} %",
            ]
        )
    headers = [
        "version",
        "keys",
        "auth",
        "mode",
        "group",
        "floor client µs",
        "floor server µs",
        "evsim client µs",
        "evsim server µs",
        "evsim loop µs",
        "evsim µs/handshake",
        "overhead client / server / total",
    ]
    lines = [
        bench_table(
            "tls-handshake",
            headers,
            body,
            title=(
                f"TLS handshakes: CPU µs per handshake, median of {section.rounds} rounds, "
                f"{section.n} handshakes per row and method"
            ),
            raw=[r.to_dict() for r in section.rows],
        ),
        "floor: raw pyOpenSSL on memory BIOs, no trio; each side's engine calls timed with process_time.",
        "evsim: tls_connect/tls_accept over memory_stream_pair in one trio.run; µs/handshake = CPU of the run / N.",
        "evsim client/server/loop: that total split in the proportions of an instrumented run (CPU of each "
        "side's task steps; loop = trio's scheduler, outside any task step).",
        "overhead: evsim over the floor, per side (loop excluded) and in total. Neither reads the TLS 1.3 "
        "tickets on the client; the floor verifies in C, without evsim's Python verify callback.",
    ]
    note = load_note(section.wall_s, section.cpu_s)
    if note:
        lines.append(f"! {note}")
    lines.append(f"(section took {section.wall_s:.0f} s wall, {section.cpu_s:.0f} s CPU)")
    return "\n".join(lines)


def env_n(default: int = DEFAULT_N) -> int:
    """``BENCH_TLS_HANDSHAKE_N`` from the environment, else ``default``."""
    return int(os.environ.get("BENCH_TLS_HANDSHAKE_N", str(default)))


def cli(argv: list[str] | None = None) -> int:
    """``python -m bench.tls_handshake``: print the table (or one JSON object with ``--json``)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.tls_handshake", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--n", type=int, default=env_n(), help=f"handshakes per row and method (default {DEFAULT_N})"
    )
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="rounds per row (median reported)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    section = run(args.n, args.rounds)
    if args.json:
        print(
            json.dumps(
                {
                    "rows": [r.to_dict() for r in section.rows],
                    "wall_s": section.wall_s,
                    "cpu_s": section.cpu_s,
                    "n": section.n,
                    "rounds": section.rounds,
                }
            )
        )
    else:
        print(render(section))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
