"""Property test (``tls-model.md`` "Proof"): random client/server configurations, real handshakes, and the
pure predictor (``evsim.tls.predict``) must agree on what each side sees.

Each example runs ``tls_connect`` and ``tls_accept`` concurrently over ``memory_stream_pair`` at an injected
simulation time, then one exchange (the server speaks first, so a TLS 1.3 client meets a refusal of its
certificate on its first read), and compares each side's :class:`~evsim.tls.predict.View` with the
prediction. The PKI (two root-CA groups) is built once; an example costs a few milliseconds.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from functools import partial

import trio
import trio.testing
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from evsim.errors import HandshakeFailed, TransportError
from evsim.tls import ClientTls, ServerTls, TlsProfile, TlsStream, TrustStore, tls_accept, tls_connect
from evsim.tls.predict import ClientSide, Negotiated, ServerSide, View, predict, view
from tests.pki_fixtures import CSMS_HOST, TEST_NOW, make_groups_pki
from tests.strategies import client_sides, server_sides

PKI = make_groups_pki(TEST_NOW)
SHORT_END = PKI.servers["short_a"].leaf.not_valid_after_utc
START = PKI.servers["ec_a"].leaf.not_valid_before_utc
SECOND = dt.timedelta(seconds=1)
HALF = dt.timedelta(milliseconds=500)
DAY = dt.timedelta(days=1)

#: Simulation times: all valid, around the one-day certificates' end and every leaf's start (whole and
#: half seconds: the engine checks at whole seconds), after the servers' 397 days but within the clients'
#: 730, after everything but the CAs.
TIMES = (
    TEST_NOW,
    TEST_NOW,
    TEST_NOW,
    SHORT_END,
    SHORT_END + HALF,
    SHORT_END + SECOND,
    START - SECOND,
    START - HALF,
    START,
    TEST_NOW + 30 * DAY,
    TEST_NOW + 500 * DAY,
    TEST_NOW + 800 * DAY,
)
SERVER_NAMES = (
    CSMS_HOST,
    CSMS_HOST,
    CSMS_HOST,
    "alt.evsim.test",
    "evsim.test",
    "CSMS.Evsim.TEST.",
    "localhost",
    "127.0.0.1",
    None,
)

VERSION_NAMES = {"TLSv1.3": "1.3", "TLSv1.2": "1.2", "TLSv1.1": "1.1", "TLSv1": "1.0"}
"""``TlsInfo.version`` (OpenSSL's spelling) -> the model's."""

EXCHANGE_TIMEOUT_S = 10.0
"""Generous bound for one in-memory handshake and exchange (a few ms of CPU; CI machines are loaded)."""

CI_EXAMPLES = 200
"""The issue asks for 200+ examples in the ci profile: each test below runs the loaded profile's
``max_examples`` (conftest.py: dev 50, ci 200; guarded by :func:`test_the_ci_profile_runs_enough_examples`).
An example costs ~5 ms on an idle 2-core machine, ~30 ms at load 3.5: in ci the two tests take ~2.5 s idle,
~13 s loaded."""


def _negotiated(stream: TlsStream) -> Negotiated:
    info = stream.info
    return Negotiated(VERSION_NAMES.get(info.version, info.version), info.cipher_iana)


def _unexpected(exc: TransportError) -> View:
    """A view no prediction produces, naming what went wrong (so a mismatch says it)."""
    return View(f"unexpected {type(exc).__name__}: {exc}")


async def observe(client: ClientSide, server: ServerSide, now: dt.datetime) -> tuple[View, View]:
    """Run the real handshake pair and return what each side saw."""
    client_tls = ClientTls.build(client.profile, client.trust, client.identity)
    server_tls = ServerTls.build(server.profile, server.identity, server.trust, server.client_auth)
    a, b = trio.testing.memory_stream_pair()
    seen: dict[str, View] = {}

    async def run_side(
        side: str,
        handshake: Callable[[], Awaitable[TlsStream]],
        exchange: Callable[[TlsStream], Awaitable[bool]],
    ) -> None:
        try:
            stream = await handshake()
        except HandshakeFailed as exc:
            seen[side] = View(exc.reason, exc.remote, "handshake")
            return
        try:
            as_expected = await exchange(stream)
        except HandshakeFailed as exc:  # the peer refused after our handshake completed
            seen[side] = View(exc.reason, exc.remote, "first_read", _negotiated(stream))
        except TransportError as exc:
            seen[side] = _unexpected(exc)
        else:
            seen[side] = View(None if as_expected else "unexpected data", negotiated=_negotiated(stream))
        await stream.aclose()

    async def client_exchange(stream: TlsStream) -> bool:
        greeting = await stream.receive_some()
        await stream.send_all(b"ping")
        return greeting == b"hello"

    async def server_exchange(stream: TlsStream) -> bool:
        await stream.send_all(b"hello")
        return await stream.receive_some() == b"ping"

    with trio.fail_after(EXCHANGE_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                run_side,
                "client",
                partial(tls_connect, a, client_tls, client.server_name, verify_time=lambda: now),
                client_exchange,
            )
            nursery.start_soon(
                run_side,
                "server",
                partial(tls_accept, b, server_tls, verify_time=lambda: now),
                server_exchange,
            )
    return seen["client"], seen["server"]


def check_against_prediction(client: ClientSide, server: ServerSide, now: dt.datetime) -> None:
    """Run the handshake pair and assert that each side saw what :func:`predict` says."""
    expected = predict(client, server, now=now)
    if isinstance(expected, Negotiated):
        event(f"negotiated TLS {expected.version}")
    else:
        event(
            f"{expected.side} refuses: {expected.reason} (TLS {expected.agreed and expected.agreed.version})"
        )
    client_view, server_view = trio.run(observe, client, server, now)
    assert client_view == view(expected, "client"), expected
    assert server_view == view(expected, "server"), expected


#: Examples that always run (random generation reaches them only now and then).
GROUP_A = TrustStore("group-a", (PKI.a.cert,))
TLS12_CBC = TlsProfile(
    versions=("1.2",),
    cipher_suites={
        "1.2": ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA"]
    },
)
LEGACY_SERVER = TlsProfile(
    versions=("1.1", "1.0"),
    cipher_suites={"1.2": ["TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA"]},
    insecure_legacy_versions=True,
)
SPLIT_SUITES_CLIENT = TlsProfile(
    cipher_suites={"1.3": ["TLS_AES_128_GCM_SHA256"], "1.2": ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"]}
)
SPLIT_SUITES_SERVER = TlsProfile(
    cipher_suites={"1.3": ["TLS_AES_256_GCM_SHA384"], "1.2": ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"]}
)


# half a second after not_after: still valid, the engine checks at whole seconds (rule 3b)
@example(
    client=ClientSide(TlsProfile(), GROUP_A, server_name=CSMS_HOST),
    server=ServerSide(TlsProfile(), PKI.servers["short_a"]),
    now=SHORT_END + HALF,
)
# a TLS 1.2-only client refuses a TLS 1.1 ServerHello; the server reports downgrade_refused too (rule 1)
@example(
    client=ClientSide(TLS12_CBC, GROUP_A, server_name=CSMS_HOST),
    server=ServerSide(LEGACY_SERVER, PKI.servers["ec_a"]),
    now=TEST_NOW,
)
# no TLS 1.3 suite in common: no fallback to the shared TLS 1.2 suite (rule 1)
@example(
    client=ClientSide(SPLIT_SUITES_CLIENT, GROUP_A, server_name=CSMS_HOST),
    server=ServerSide(SPLIT_SUITES_SERVER, PKI.servers["ec_a"]),
    now=TEST_NOW,
)
@given(
    client=client_sides(PKI.anchor_sets, tuple(PKI.clients.values()), SERVER_NAMES),
    server=server_sides(PKI.anchor_sets, tuple(PKI.servers.values())),
    now=st.sampled_from(TIMES),
)
def test_real_handshakes_agree_with_the_predictor(
    client: ClientSide, server: ServerSide, now: dt.datetime
) -> None:
    """Anything goes: versions, suites, trust groups, names, validity, client auth."""
    check_against_prediction(client, server, now)


#: Servers every client below accepts at TEST_NOW (group A, the right name, either key type).
TRUSTED_SERVERS = tuple(PKI.servers[k] for k in ("ec_a", "rsa_a", "ec_sub"))
CLIENT_ANCHORS = ((PKI.a.cert,), (PKI.a.cert, PKI.b.cert))
#: Every client certificate, the one-day one three times as often.
CLIENT_IDENTITIES = (*PKI.clients.values(), PKI.clients["cli_short_a"], PKI.clients["cli_short_a"])
#: Times where the one-day client certificate is valid, at its very end, or expired while the servers'
#: certificates are still valid; and before every certificate's start.
CLIENT_CERT_TIMES = (
    TEST_NOW,
    SHORT_END,
    SHORT_END + HALF,
    SHORT_END + SECOND,
    SHORT_END + SECOND,
    SHORT_END + DAY,
    START - HALF,
)


# an expired client certificate: TLS 1.3 clients learn it on their first read, TLS 1.2 clients in the handshake
@example(
    client=ClientSide(TlsProfile(versions=("1.3",)), GROUP_A, PKI.clients["cli_short_a"], CSMS_HOST),
    server=ServerSide(TlsProfile(), PKI.servers["ec_a"], GROUP_A, "optional"),
    now=SHORT_END + SECOND,
)
@example(
    client=ClientSide(TlsProfile(versions=("1.2",)), GROUP_A, PKI.clients["cli_short_a"], CSMS_HOST),
    server=ServerSide(TlsProfile(), PKI.servers["rsa_a"], GROUP_A, "required"),
    now=SHORT_END + SECOND,
)
@given(
    client=client_sides(CLIENT_ANCHORS, CLIENT_IDENTITIES, (CSMS_HOST,)),
    server=server_sides(PKI.anchor_sets, TRUSTED_SERVERS),
    now=st.sampled_from(CLIENT_CERT_TIMES),
)
def test_client_authentication_agrees_with_the_predictor(
    client: ClientSide, server: ServerSide, now: dt.datetime
) -> None:
    """Focus on rule 4: the client usually accepts the server, so the server's verdict on the client's
    certificate (group, validity, absence; TLS 1.2 in the handshake, TLS 1.3 on the first read) decides."""
    check_against_prediction(client, server, now)


def test_the_ci_profile_runs_enough_examples() -> None:
    assert settings.get_profile("ci").max_examples >= CI_EXAMPLES
