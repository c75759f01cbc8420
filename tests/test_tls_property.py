"""Property test (``tls-model.md`` "Proof"): random client/server configurations, real handshakes, and the
pure predictor (``evsim.tls.predict``) must agree on what each side sees.

Each example runs ``tls_connect`` and ``tls_accept`` concurrently over ``memory_stream_pair`` at an injected
simulation time, then one exchange (the server speaks first, so a TLS 1.3 client meets a refusal of its
certificate on its first read), and compares each side's :class:`~evsim.tls.predict.View` with the
prediction. The PKI (two root-CA groups, four SHIP devices) is built once; an example costs a few
milliseconds.

Peer trust goes through the same handshakes: the client's pins and the server's pairing list become a
fresh ``PeerPolicy`` per example, passed to ``tls_connect(peer=...)`` / ``tls_accept(peer=...)``; the
contexts are compiled with one fixed deciding policy (``BUILD_POLICIES``: the self-signed modes refuse to
build without one), so examples share compiled contexts and the per-connection policy decides.
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
from evsim.pki import issue_self_signed, ski
from evsim.tls import (
    ClientTls,
    Identity,
    ServerTls,
    TlsProfile,
    TlsStream,
    TrustStore,
    tls_accept,
    tls_connect,
)
from evsim.tls.events import PIN_MISMATCH
from evsim.tls.pairing import PairedPeer, PeerTrust
from evsim.tls.peer import PeerEvent, PeerPolicy
from evsim.tls.pins import Pin, PinSet, PinTarget, spki_hex
from evsim.tls.predict import (
    ClientSide,
    Negotiated,
    ServerSide,
    View,
    predict,
    reports_pin_mismatch,
    view,
)
from tests.pki_fixtures import CSMS_HOST, TEST_NOW, make_groups_pki
from tests.strategies import client_sides, peer_trusts, pin_sets, server_sides, tls_profiles

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

CLIENT_BUILD_POLICY = PeerPolicy(side="client", pins=PinSet(pins=(Pin("leaf", "00" * 32),)))
"""Bound to client contexts in a peer mode at build (which requires a deciding policy); every example
passes its own policy to ``tls_connect``, which replaces it."""
SERVER_BUILD_POLICY = PeerPolicy(side="server", pairing=PeerTrust())
"""The same for pairing listeners (``tls_accept(peer=...)``)."""

VERSION_NAMES = {"TLSv1.3": "1.3", "TLSv1.2": "1.2", "TLSv1.1": "1.1", "TLSv1": "1.0"}
"""``TlsInfo.version`` (OpenSSL's spelling) -> the model's."""

EXCHANGE_TIMEOUT_S = 10.0
"""Generous bound for one in-memory handshake and exchange (a few ms of CPU; CI machines are loaded)."""

CI_EXAMPLES = 200
"""The issue asks for 200+ examples in the ci profile: each test below runs the loaded profile's
``max_examples`` (conftest.py: dev 50, ci 200; guarded by :func:`test_the_ci_profile_runs_enough_examples`).
An example costs ~5-20 ms on the shared 2-core machine (measured 2026-11-22): in ci the three tests take
~7 s together at load 2.8 (1.9 / 2.0 / 3.1 s), ~15 s at load 4.5; in dev ~4 s."""


def _negotiated(stream: TlsStream) -> Negotiated:
    info = stream.info
    return Negotiated(VERSION_NAMES.get(info.version, info.version), info.cipher_iana)


def _unexpected(exc: TransportError) -> View:
    """A view no prediction produces, naming what went wrong (so a mismatch says it)."""
    return View(f"unexpected {type(exc).__name__}: {exc}")


async def observe(client: ClientSide, server: ServerSide, now: dt.datetime) -> tuple[View, View, bool]:
    """Run the real handshake pair: what each side saw, and whether the client's policy reported a pin
    mismatch."""
    client_tls = ClientTls.build(
        client.profile,
        client.trust,
        client.identity,
        peer=CLIENT_BUILD_POLICY if client.trust.peer_mode else None,
    )
    pairing = server.client_auth == "pairing"
    server_tls = ServerTls.build(
        server.profile,
        server.identity,
        server.trust,
        server.client_auth,
        peer=SERVER_BUILD_POLICY if pairing else None,
    )
    reported: list[PeerEvent] = []
    client_peer = (
        None if client.pins is None else PeerPolicy(side="client", pins=client.pins, sink=reported.append)
    )
    server_peer = PeerPolicy(side="server", pairing=server.pairing or PeerTrust()) if pairing else None
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
                partial(
                    tls_connect, a, client_tls, client.server_name, verify_time=lambda: now, peer=client_peer
                ),
                client_exchange,
            )
            nursery.start_soon(
                run_side,
                "server",
                partial(tls_accept, b, server_tls, verify_time=lambda: now, peer=server_peer),
                server_exchange,
            )
    return seen["client"], seen["server"], any(e.event == PIN_MISMATCH for e in reported)


def check_against_prediction(client: ClientSide, server: ServerSide, now: dt.datetime) -> None:
    """Run the handshake pair and assert that each side saw what :func:`predict` says."""
    expected = predict(client, server, now=now)
    if client.pins is not None:
        event(f"client pins: {client.pins.enforcement}")
    if isinstance(expected, Negotiated):
        event(f"negotiated TLS {expected.version}")
    else:
        event(
            f"{expected.side} refuses: {expected.reason} (TLS {expected.agreed and expected.agreed.version})"
        )
    client_view, server_view, pin_report = trio.run(observe, client, server, now)
    assert client_view == view(expected, "client"), expected
    assert server_view == view(expected, "server"), expected
    assert pin_report == reports_pin_mismatch(client, server, now=now), expected


#: Keys a client may pin: every server leaf, the roots (the impostor ``twin`` too) and the sub-CA; the keys
#: of the common servers and of group A twice, so that pins match as often as they miss.
PIN_KEYS = (
    *(identity.leaf for identity in PKI.servers.values()),
    PKI.servers["ec_a"].leaf,
    PKI.servers["ec_sub"].leaf,
    PKI.a.cert,
    PKI.a.cert,
    PKI.a_sub.cert,
    PKI.a_sub.cert,
    PKI.b.cert,
    PKI.twin.cert,
)
#: Pin expiries: none (mostly), long past, at the simulation times' edges, far ahead.
PIN_NOT_AFTERS = (None, None, None, None, TEST_NOW - DAY, TEST_NOW, SHORT_END, TEST_NOW + 100 * DAY)

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
# a leaf pin that does not match: the client refuses in its Python callback, the server hears internal_error
@example(
    client=ClientSide(
        TlsProfile(), GROUP_A, server_name=CSMS_HOST, pins=PinSet(pins=(Pin("leaf", "00" * 32),))
    ),
    server=ServerSide(TlsProfile(), PKI.servers["ec_a"]),
    now=TEST_NOW,
)
# an intermediate pin, decided on the verified chain (the sub-CA sent by the server)
@example(
    client=ClientSide(
        TlsProfile(versions=("1.2",)),
        GROUP_A,
        server_name=CSMS_HOST,
        pins=PinSet(pins=(Pin("intermediate", spki_hex(PKI.a_sub.cert) or ""),)),
    ),
    server=ServerSide(TlsProfile(), PKI.servers["ec_sub"]),
    now=TEST_NOW,
)
@given(
    client=client_sides(
        PKI.anchor_sets,
        tuple(PKI.clients.values()),
        SERVER_NAMES,
        pins=st.none() | pin_sets(PIN_KEYS, PIN_NOT_AFTERS),
    ),
    server=server_sides(PKI.anchor_sets, tuple(PKI.servers.values())),
    now=st.sampled_from(TIMES),
)
def test_real_handshakes_agree_with_the_predictor(
    client: ClientSide, server: ServerSide, now: dt.datetime
) -> None:
    """Anything goes: versions, suites, trust groups, names, validity, client auth, pins (half of the
    clients, enforce or report_only, any target, live, released or expired)."""
    check_against_prediction(client, server, now)


#: Servers every client below accepts at TEST_NOW (group A, the right name, either key type).
TRUSTED_SERVERS = tuple(PKI.servers[k] for k in ("ec_a", "rsa_a", "ec_sub"))
CLIENT_ANCHORS = ((PKI.a.cert,), (PKI.a.cert, PKI.b.cert))
#: Keys of the trusted servers' chains, roots and the sub-CA often (so root and intermediate pins match
#: as often as leaf pins), and a few that are in no chain here.
TRUSTED_PIN_KEYS = (
    *(identity.leaf for identity in TRUSTED_SERVERS),
    PKI.a.cert,
    PKI.a.cert,
    PKI.a.cert,
    PKI.a_sub.cert,
    PKI.a_sub.cert,
    PKI.b.cert,
    PKI.twin.cert,
)
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
    client=client_sides(
        CLIENT_ANCHORS,
        CLIENT_IDENTITIES,
        (CSMS_HOST,),
        pins=st.none() | pin_sets(TRUSTED_PIN_KEYS, PIN_NOT_AFTERS),
    ),
    server=server_sides(PKI.anchor_sets, TRUSTED_SERVERS),
    now=st.sampled_from(CLIENT_CERT_TIMES),
)
def test_client_authentication_agrees_with_the_predictor(
    client: ClientSide, server: ServerSide, now: dt.datetime
) -> None:
    """Focus on rule 4: the client usually accepts the server, so the server's verdict on the client's
    certificate (group, validity, absence; TLS 1.2 in the handshake, TLS 1.3 on the first read) decides -
    and, for half of the clients, pins on that trusted chain (rule 3d: every target matters here)."""
    check_against_prediction(client, server, now)


# ---------------------------------------------------------------- peer trust: SHIP-style pinned peers and pairing

#: SHIP devices (self-signed, SKI = SHA-1 of the key, ten years): two wallboxes serve; energy managers
#: connect, one of them re-keyed (same device id, new key).
WALLBOX = Identity.from_cert_key(issue_self_signed("WB-0002", now=TEST_NOW))
WALLBOX_RSA = Identity.from_cert_key(issue_self_signed("WB-0003", now=TEST_NOW, key_type="rsa"))
HEMS = Identity.from_cert_key(issue_self_signed("HEMS-0001", now=TEST_NOW))
HEMS_REKEYED = Identity.from_cert_key(issue_self_signed("HEMS-0001", now=TEST_NOW))
PV = Identity.from_cert_key(issue_self_signed("PV-0003", now=TEST_NOW))
DEVICES = (HEMS, HEMS_REKEYED, PV)
SHIP_START = WALLBOX.leaf.not_valid_before_utc
SHIP_END = WALLBOX.leaf.not_valid_after_utc
#: Pairing windows: none (mostly), ended just before or right at TEST_NOW (the end is exclusive), open.
WINDOW_ENDS = (None, None, TEST_NOW - SECOND, TEST_NOW, TEST_NOW + HALF, TEST_NOW + DAY)
#: Times: mostly TEST_NOW, around the windows' ends, around the devices' validity.
SHIP_TIMES = (
    TEST_NOW,
    TEST_NOW,
    TEST_NOW,
    TEST_NOW + HALF,
    TEST_NOW - SECOND,
    SHIP_START - HALF,
    SHIP_START,
    SHIP_END + HALF,
    SHIP_END + SECOND,
)
#: What a client may pin: the servers' keys (twice) and unrelated ones.
SHIP_PIN_KEYS = (WALLBOX.leaf, WALLBOX.leaf, WALLBOX_RSA.leaf, WALLBOX_RSA.leaf, HEMS.leaf, PKI.a.cert)
PINNED_STORES = (
    TrustStore("ship", (), hostname="off", mode="pinned_peers"),
    TrustStore("ship", (), hostname="off", mode="pinned_peers"),
    TrustStore("ship-no-time", (), hostname="off", mode="pinned_peers", time_check="off"),
)
MODERN = (TlsProfile(), TlsProfile(versions=("1.3",)), TlsProfile(versions=("1.2",)))
#: Mostly profiles that agree (the peer checks come after version and suite), a quarter random ones.
SHIP_PROFILES = st.one_of(
    st.sampled_from(MODERN), st.sampled_from(MODERN), st.sampled_from(MODERN), tls_profiles()
)


@st.composite
def ship_pairs(draw: st.DrawFn) -> tuple[ClientSide, ServerSide]:
    """A ``pinned_peers`` client and a self-signed server; the client's enforced pins name the server's
    own key (as leaf, root or any: a lone self-signed certificate is its own root) most of the time, so
    that the server's pairing decision is reached as often as the pins refuse."""
    server = draw(
        st.builds(
            ServerSide,
            profile=SHIP_PROFILES,
            identity=st.sampled_from((WALLBOX, WALLBOX, WALLBOX_RSA)),
            client_auth=st.sampled_from(("pairing", "pairing", "pairing", "none")),
            pairing=peer_trusts(tuple(d.leaf for d in DEVICES), WINDOW_ENDS, TEST_NOW),
        )
    )
    own = server.identity.leaf
    keys = (*(own,) * 8, *SHIP_PIN_KEYS)
    targets: tuple[PinTarget, ...] = ("leaf", "leaf", "root", "any", "intermediate")
    client = draw(
        st.builds(
            ClientSide,
            profile=SHIP_PROFILES,
            trust=st.sampled_from(PINNED_STORES),
            identity=st.sampled_from((None, *DEVICES, *DEVICES, PKI.clients["cli_a"])),
            server_name=st.sampled_from(("wallbox.local", None)),
            pins=pin_sets(keys, (None, None, None, TEST_NOW), enforcements=("enforce",), targets=targets),
        )
    )
    return client, server


def ship_pair(
    client_profile: TlsProfile, device: Identity, pin_target: PinTarget, pairing: PeerTrust
) -> tuple[ClientSide, ServerSide]:
    """A device pinning WALLBOX's key (as ``pin_target``) against WALLBOX pairing with ``pairing``."""
    pins = PinSet(pins=(Pin(pin_target, spki_hex(WALLBOX.leaf) or ""),))
    client = ClientSide(client_profile, PINNED_STORES[0], device, pins=pins)
    return client, ServerSide(TlsProfile(), WALLBOX, client_auth="pairing", pairing=pairing)


HEMS_TRUSTED = PairedPeer(ski(HEMS.leaf), None, "trusted", TEST_NOW, "HEMS-0001")


# a paired energy manager: pins match, the device's SKI is trusted
@example(pair=ship_pair(TlsProfile(), HEMS, "leaf", PeerTrust(peers=(HEMS_TRUSTED,))), now=TEST_NOW)
# a re-keyed device outside a window, TLS 1.2: refused in the handshake, the client hears internal_error
@example(
    pair=ship_pair(
        TlsProfile(versions=("1.2",)),
        HEMS_REKEYED,
        "root",
        PeerTrust(auto_accept=True, peers=(HEMS_TRUSTED,)),
    ),
    now=TEST_NOW,
)
@given(pair=ship_pairs(), now=st.sampled_from(SHIP_TIMES))
def test_peer_trust_handshakes_agree_with_the_predictor(
    pair: tuple[ClientSide, ServerSide], now: dt.datetime
) -> None:
    """SHIP style: a ``pinned_peers`` client (enforced pins on any target) against a self-signed server,
    which pairs its clients (known, unknown, pending, denied, re-keyed or CA-issued; windows, auto_accept)
    or asks for no certificate; validity at the devices' edges."""
    client, server = pair
    check_against_prediction(client, server, now)


def test_the_ci_profile_runs_enough_examples() -> None:
    assert settings.get_profile("ci").max_examples >= CI_EXAMPLES
