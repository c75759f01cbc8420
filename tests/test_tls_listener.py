"""Listener: SNI selection on the wire, client authentication through a listener, validation and TOML.

Every handshake is real (memory streams or the virtual network, under ``trio.fail_after``) with verification
on; which certificate the server chose is observed in the client's ``TlsInfo.peer_chain``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping

import pytest
import trio
import trio.testing

from evsim.clock import SimClock
from evsim.errors import ConfigError, HandshakeFailed, TransportError
from evsim.link.service import Endpoint, Service, connect_service
from evsim.net import VirtualNetwork
from evsim.pki import CertificateAuthority, CertKey, issue_self_signed, ski, spki_sha256
from evsim.tls import (
    ClientTls,
    Identity,
    Listener,
    ServerTls,
    SessionStore,
    TlsProfile,
    TlsStream,
    TrustStore,
    events,
)
from evsim.tls.capabilities import Capabilities
from evsim.tls.knobs import KNOB_STATES, check_enforce
from evsim.tls.pairing import REFUSED_PENDING, PeerTrust
from evsim.tls.peer import PeerPolicy
from evsim.tls.pins import Pin, PinSet
from tests.pki_fixtures import CSMS_HOST, TEST_NOW, tls_pair

NOW = TEST_NOW
IO_TIMEOUT_S = 10
TLS12 = TlsProfile(versions=("1.2",))
TLS13_12 = TlsProfile()
PROFILES = pytest.mark.parametrize("profile", [TlsProfile(), TLS12], ids=["tls13", "tls12"])
HOST_A = "a.evsim.test"
HOST_B = "b.evsim.test"

# One root; the default and A are issued by it directly, B by a sub-CA (its chain has an intermediate).
ROOT = CertificateAuthority.create_root("Listener Test Root", now=NOW)
SUB = ROOT.create_sub_ca("Listener Test Sub-CA", now=NOW)
OTHER_ROOT = CertificateAuthority.create_root("Other Root", now=NOW)
DEFAULT = ROOT.issue_server(CSMS_HOST, now=NOW)
CERT_A = ROOT.issue_server(HOST_A, now=NOW)
CERT_B = SUB.issue_server(HOST_B, now=NOW)
CERT_C = OTHER_ROOT.issue_server("c.evsim.test", now=NOW)  # trusted only by clients of the other root
STATION = SUB.issue_client("CS0001", now=NOW)
EVIL_STATION = OTHER_ROOT.issue_client("CS0001", now=NOW)

CLIENT_TRUST = TrustStore("CSMSRootCertificate", (ROOT.cert,))
OTHER_TRUST = TrustStore("OtherRoot", (OTHER_ROOT.cert,))
BLIND_TRUST = TrustStore("no-name-check", (ROOT.cert,), hostname="off")
STATION_TRUST = TrustStore("ChargingStationRoot", (ROOT.cert,))
IDENTITIES: Mapping[str, CertKey] = {
    "CSMSCertificate": DEFAULT,
    "CSMSCertificateA": CERT_A,
    "CSMSCertificateB": CERT_B,
}


def ident(cert_key: CertKey) -> Identity:
    return Identity.from_cert_key(cert_key)


def listener(profile: TlsProfile = TLS13_12, **kw: object) -> Listener:
    kw.setdefault("sni_identities", {HOST_A: ident(CERT_A), HOST_B: ident(CERT_B)})
    return Listener("csms", CSMS_HOST, 443, ident(DEFAULT), profile, **kw)  # type: ignore[arg-type]


def reason(result: TlsStream | TransportError) -> str:
    if isinstance(result, TlsStream):
        return "ok"
    assert isinstance(result, HandshakeFailed), result
    return ("remote:" if result.remote else "") + result.reason


def served(result: TlsStream | TransportError) -> CertKey:
    """Which of the test certificates the client was served (by its leaf)."""
    assert isinstance(result, TlsStream), result
    leaf = result.info.peer_chain[0]
    for ck in (DEFAULT, CERT_A, CERT_B, CERT_C):
        if ck.cert == leaf:
            return ck
    raise AssertionError(f"unexpected certificate {leaf.subject}")


# ================================================================ SNI selection on the wire


@PROFILES
@pytest.mark.parametrize(
    ("host", "trust", "expected"),
    [
        (HOST_A, CLIENT_TRUST, CERT_A),
        (HOST_B, CLIENT_TRUST, CERT_B),
        ("B.Evsim.Test.", CLIENT_TRUST, CERT_B),  # names compare case-insensitively, trailing dot ignored
        (CSMS_HOST, CLIENT_TRUST, DEFAULT),
        ("unknown.evsim.test", BLIND_TRUST, DEFAULT),  # an unknown name gets the default identity
        (None, CLIENT_TRUST, DEFAULT),  # no SNI at all
    ],
    ids=["a", "b", "b-case", "default-name", "unknown", "no-sni"],
)
async def test_the_client_gets_the_certificate_of_the_name_it_asked_for(
    profile: TlsProfile, host: str | None, trust: TrustStore, expected: CertKey
) -> None:
    server_tls = listener(profile).compile()
    with trio.fail_after(IO_TIMEOUT_S):
        client, server = await tls_pair(ClientTls.build(profile, trust), server_tls, host=host)
    assert (reason(client), reason(server)) == ("ok", "ok")
    assert served(client) == expected
    assert isinstance(client, TlsStream) and isinstance(server, TlsStream)
    assert client.info.peer_chain == expected.chain  # the whole chain of that identity (B: + its sub-CA)
    assert client.info.verified_chain[-1] == ROOT.cert
    sent = None if host is None else host
    assert server.info.sni == sent


@PROFILES
async def test_hostname_check_passes_only_because_the_right_identity_was_selected(
    profile: TlsProfile,
) -> None:
    """Without the SNI table the same client is refused (the default certificate does not name B): the
    selection is what makes the verified handshake succeed."""
    client_tls = ClientTls.build(profile, CLIENT_TRUST)
    with trio.fail_after(IO_TIMEOUT_S):
        client, _ = await tls_pair(client_tls, listener(profile).compile(), host=HOST_B)
        assert reason(client) == "ok" and served(client) == CERT_B
        client, _ = await tls_pair(client_tls, listener(profile, sni_identities={}).compile(), host=HOST_B)
        assert reason(client) == events.CERT_HOSTNAME_MISMATCH


async def test_each_identity_is_verified_against_the_clients_own_trust() -> None:
    """C is issued by another root: a client trusting that root verifies C when it asks for C, and refuses
    the default (unknown CA) when it asks for a name the listener does not know."""
    lst = listener(sni_identities={"c.evsim.test": ident(CERT_C), HOST_A: ident(CERT_A)})
    client_tls = ClientTls.build(TlsProfile(), OTHER_TRUST)
    with trio.fail_after(IO_TIMEOUT_S):
        client, _ = await tls_pair(client_tls, lst.compile(), host="c.evsim.test")
        assert reason(client) == "ok" and served(client) == CERT_C
        assert isinstance(client, TlsStream) and client.info.verified_chain[-1] == OTHER_ROOT.cert
        client, _ = await tls_pair(client_tls, lst.compile(), host=HOST_A)
        assert reason(client) == events.CERT_UNKNOWN_CA


async def test_listener_accept_on_the_virtual_network_with_two_endpoints(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """One listener, two endpoints of a service dialling the same address with different SNI names."""
    lst = listener()
    clock = SimClock.start(NOW)
    net = VirtualNetwork()
    infos: list[str | None] = []

    async def serve(listen: trio.abc.Listener[trio.abc.Stream]) -> None:
        async with listen:
            while True:
                stream = await lst.accept(await listen.accept(), verify_time=clock.utcnow)
                infos.append(stream.info.sni)
                await trio.aclose_forcefully(stream)

    a = Endpoint("a", "wss://10.0.0.7/ocpp", 0, trust=CLIENT_TRUST, sni=HOST_A)
    b = Endpoint("b", "wss://10.0.0.7/ocpp", 1, trust=CLIENT_TRUST, sni=HOST_B)
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve, await net.listen("10.0.0.7", 443))
            for ep, cert in ((a, CERT_A), (b, CERT_B)):
                conn = await connect_service(Service("csms", (ep,)), net, clock=clock, max_attempts=1)
                assert conn.tls is not None and conn.tls.peer_chain[0] == cert.cert
                await trio.testing.wait_all_tasks_blocked()
                await conn.aclose()
            nursery.cancel_scope.cancel()
    assert infos == [HOST_A, HOST_B]


def test_identity_for_and_single_name_configurations() -> None:
    lst = listener()
    assert lst.identity_for(HOST_B) == ident(CERT_B) and lst.identity_for("B.EVSIM.TEST.") == ident(CERT_B)
    assert lst.identity_for(None) == lst.identity_for("other.evsim.test") == ident(DEFAULT)
    assert lst.server_tls(HOST_A).identity == ident(CERT_A) and lst.server_tls(HOST_A).sni == ()
    assert lst.compile() is lst.compile()  # cached
    assert [n for n, _ in lst.compile().sni] == [HOST_A, HOST_B]
    assert lst.address == (CSMS_HOST, 443)
    # equality ignores the mutable peer policy
    assert listener(peer=PeerPolicy(side="server")) == listener()


# ================================================================ client authentication through a listener


@PROFILES
async def test_client_auth_required_on_a_selected_identity(profile: TlsProfile) -> None:
    """The switched-to context verifies client certificates like the default one."""
    lst = listener(profile, trust=STATION_TRUST, client_auth="required")
    good = ClientTls.build(profile, CLIENT_TRUST, ident(STATION))
    anonymous = ClientTls.build(profile, CLIENT_TRUST)
    evil = ClientTls.build(profile, CLIENT_TRUST, ident(EVIL_STATION))
    with trio.fail_after(IO_TIMEOUT_S):
        client, server = await tls_pair(good, lst.compile(), host=HOST_B)
        assert (reason(client), reason(server)) == ("ok", "ok") and served(client) == CERT_B
        assert isinstance(server, TlsStream) and server.info.peer_chain[0] == STATION.cert
        client, server = await tls_pair(anonymous, lst.compile(), host=HOST_B)
        assert reason(server) == events.CERT_NO_CLIENT_CERT
        client, server = await tls_pair(evil, lst.compile(), host=HOST_A)
        assert reason(server) == events.CERT_UNKNOWN_CA


async def test_client_auth_none_and_optional() -> None:
    anonymous = ClientTls.build(TlsProfile(), CLIENT_TRUST)
    evil = ClientTls.build(TlsProfile(), CLIENT_TRUST, ident(EVIL_STATION))
    optional = listener(trust=STATION_TRUST, client_auth="optional").compile()
    with trio.fail_after(IO_TIMEOUT_S):
        for server_tls in (listener().compile(), optional):
            client, server = await tls_pair(anonymous, server_tls, host=HOST_A)
            assert (reason(client), reason(server)) == ("ok", "ok")
            assert isinstance(server, TlsStream) and server.info.peer_chain == ()
        _, server = await tls_pair(evil, optional, host=HOST_A)  # a certificate sent is verified
        assert reason(server) == events.CERT_UNKNOWN_CA
        client, server = await tls_pair(evil, listener().compile(), host=HOST_A)  # none: not asked for
        assert (reason(client), reason(server)) == ("ok", "ok")


async def test_client_auth_pairing_through_a_listener() -> None:
    wallbox, hems = issue_self_signed("WB-0002", now=NOW), issue_self_signed("HEMS-0001", now=NOW)
    policy = PeerPolicy(side="server", pairing=PeerTrust(), name="wallbox")
    lst = Listener("ship", "wallbox.local", 4712, ident(wallbox), client_auth="pairing", peer=policy)
    pinned = PeerPolicy(side="client", pins=_leaf_pin(wallbox))
    client_tls = ClientTls.build(
        TlsProfile(), TrustStore("ship", (), hostname="off", mode="pinned_peers"), ident(hems), peer=pinned
    )
    with trio.fail_after(IO_TIMEOUT_S):
        _, server = await tls_pair(client_tls, lst.compile(), host="wallbox.local")
        assert reason(server) == REFUSED_PENDING
        policy.register(ski(hems.cert).hex(), now=NOW)
        client, server = await tls_pair(client_tls, lst.compile(), host="wallbox.local")
        assert (reason(client), reason(server)) == ("ok", "ok")


def _leaf_pin(cert_key: CertKey) -> PinSet:
    return PinSet("enforce", (Pin("leaf", spki_sha256(cert_key.cert), "active"),))


# ================================================================ validation


@pytest.mark.parametrize(
    ("kw", "path", "words"),
    [
        ({"client_auth": "required"}, "listener.csms.client_auth", "needs a trust store"),
        ({"client_auth": "sometimes"}, "listener.csms.client_auth", "unknown client_auth"),
        ({"client_auth": "pairing"}, "listener.csms.peer", "needs a peer policy"),
        (
            {"client_auth": "pairing", "peer": PeerPolicy(side="server")},
            "listener.csms.peer.pairing",
            "pairing list",
        ),
        (
            {
                "client_auth": "pairing",
                "trust": STATION_TRUST,
                "peer": PeerPolicy(side="server", pairing=PeerTrust()),
            },
            "listener.csms.trust.ChargingStationRoot.mode",
            "self-signed",
        ),
        (
            {"trust": STATION_TRUST, "client_auth": "required", "peer": PeerPolicy(side="client")},
            "listener.csms.peer.side",
            "client-side",
        ),
        ({"sni_identities": {"*.evsim.test": ident(CERT_A)}}, "listener.csms.sni_identities[0]", "wildcard"),
        ({"sni_identities": {"10.0.0.7": ident(CERT_A)}}, "listener.csms.sni_identities[0]", "IP address"),
        ({"sni_identities": {"": ident(CERT_A)}}, "listener.csms.sni_identities[0]", "DNS host name"),
        (
            {"sni_identities": [(HOST_A, ident(CERT_A)), ("A.evsim.test", ident(CERT_B))]},
            "listener.csms.sni_identities[1]",
            "duplicate",
        ),
        (
            {"sni_identities": {HOST_A: "CSMSCertificateA"}},
            "listener.csms.sni_identities[0].identity",
            "Identity",
        ),
    ],
)
def test_listener_validation_names_the_field(kw: dict[str, object], path: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        listener(TLS13_12, **kw)
    assert info.value.path == path, info.value
    assert words in info.value.message
    assert info.value.fix or path.endswith(".identity")


@pytest.mark.parametrize(
    ("name", "host", "port", "path"),
    [("", "h", 1, "listener.name"), ("x", "", 1, "listener.x.host"), ("x", "h", 70000, "listener.x.port")],
)
def test_listener_address_validation(name: str, host: str, port: int, path: str) -> None:
    with pytest.raises(ConfigError) as info:
        Listener(name, host, port, ident(DEFAULT))
    assert info.value.path == path


# ================================================================ TOML

GOOD_TOML = """
host = "csms.evsim.test"
port = 443
identity = { certificate = "CSMSCertificate" }
client_auth = "required"
[profile]
versions = ["1.3"]
[trust]
anchors = ["ChargingStationRoot"]
hostname = "off"
[sni_identities]
"a.evsim.test" = { certificate = "CSMSCertificateA" }
"b.evsim.test" = { certificate = "CSMSCertificateB" }
"""


def from_toml(text: str, **kw: object) -> Listener:
    return Listener.from_toml(
        tomllib.loads(text),
        path="csms.main.listener",
        resolve=IDENTITIES.__getitem__,
        resolve_anchors={"ChargingStationRoot": [ROOT.cert]}.__getitem__,
        **kw,  # type: ignore[arg-type]
    )


async def test_listener_from_toml() -> None:
    lst = from_toml(GOOD_TOML)
    assert lst == Listener(
        "listener",
        CSMS_HOST,
        443,
        ident(DEFAULT),
        TlsProfile(versions=("1.3",)),
        {HOST_A: ident(CERT_A), HOST_B: ident(CERT_B)},
        TrustStore("trust", (ROOT.cert,), hostname="off"),
        "required",
    )
    with trio.fail_after(IO_TIMEOUT_S):
        client, _ = await tls_pair(
            ClientTls.build(TlsProfile(), CLIENT_TRUST, ident(STATION)), lst.compile(), host=HOST_B
        )
    assert served(client) == CERT_B


@pytest.mark.parametrize(
    ("edit", "path", "words"),
    [
        (
            ("port = 443", "port = 443\nsni_identites = {}"),
            "csms.main.listener.sni_identites",
            "did you mean 'sni_identities'",
        ),
        (
            ('"CSMSCertificateB"', '"NoSuchCert"'),
            'csms.main.listener.sni_identities."b.evsim.test".certificate',
            "NoSuchCert",
        ),
        (
            ('{ certificate = "CSMSCertificate" }', '{ certficate = "x" }'),
            "csms.main.listener.identity.certficate",
            "did you mean",
        ),
        (
            ('"a.evsim.test" =', '"*.evsim.test" ='),
            'csms.main.listener.sni_identities."*.evsim.test"',
            "wildcard",
        ),
        (
            ('client_auth = "required"', 'client_auth = "requried"'),
            "csms.main.listener.client_auth",
            "did you mean 'required'",
        ),
        (
            ('anchors = ["ChargingStationRoot"]', 'anchors = ["Nope"]'),
            "csms.main.listener.trust.anchors[0]",
            "Nope",
        ),
        (
            ('versions = ["1.3"]', 'versions = ["1.3", "1.1"]'),
            "csms.main.listener.profile.versions[1]",
            "1.1",
        ),
        (("port = 443", 'port = "443"'), "csms.main.listener.port", "integer"),
        (('host = "csms.evsim.test"\n', ""), "csms.main.listener.host", "needs a host"),
    ],
)
def test_listener_from_toml_errors_name_the_field(edit: tuple[str, str], path: str, words: str) -> None:
    old, new = edit
    assert old in GOOD_TOML
    with pytest.raises(ConfigError) as info:
        from_toml(GOOD_TOML.replace(old, new, 1))
    assert info.value.path == path, info.value
    assert words in str(info.value)


def test_listener_from_toml_checks_client_auth_against_trust() -> None:
    text = GOOD_TOML.split("[trust]")[0] + GOOD_TOML.split('hostname = "off"\n')[1]
    with pytest.raises(ConfigError) as info:
        from_toml(text)
    assert info.value.path == "csms.main.listener.client_auth" and "trust store" in info.value.message
    with pytest.raises(ConfigError) as info:
        from_toml(text.replace('"required"', '"pairing"'))
    assert info.value.path == "csms.main.listener.peer"
    policy = PeerPolicy(side="server", pairing=PeerTrust())
    assert from_toml(text.replace('"required"', '"pairing"'), peer=policy).peer is policy
    with pytest.raises(ConfigError) as info:  # the store's own checks land on the trust table
        from_toml(
            GOOD_TOML.replace('hostname = "off"', 'hostname = "off"\nrevocation = { ocsp = "require" }')
        )
    assert info.value.path == "csms.main.listener.trust.revocation.ocsp" and "staple" in info.value.message


# ================================================================ knobs


def test_sni_knobs_are_listed_and_strict_sni_cannot_be_enforced() -> None:
    assert KNOB_STATES["listener.sni_identities"] == "enforced"
    assert check_enforce(["sni_identities"]) == ("listener.sni_identities",)
    knobs = {k.name: k for k in Capabilities.of_profile().knobs}
    assert (
        knobs["listener.sni_strict"].state == "declared"
        and "sys.excepthook" in knobs["listener.sni_strict"].note
    )
    with pytest.raises(ConfigError, match=r"cannot enforce listener\.sni_strict"):
        check_enforce(["sni_strict"])
    assert "listener.sni_identities" in Capabilities.of_profile().render()


def test_server_tls_build_takes_an_sni_table_directly() -> None:
    plain = ServerTls.build(TlsProfile(), ident(DEFAULT))
    with_sni = ServerTls.build(TlsProfile(), ident(DEFAULT), sni={HOST_A: ident(CERT_A)})
    assert (
        with_sni is not plain and with_sni.context is not plain.context
    )  # the callback needs its own context
    assert with_sni is ServerTls.build(TlsProfile(), ident(DEFAULT), sni={HOST_A: ident(CERT_A)})


@PROFILES
async def test_a_session_with_a_selected_identity_resumes(profile: TlsProfile) -> None:
    """The session cache is the default context's; a session made on B's context is resumed for B."""
    client_tls = ClientTls.build(profile, CLIENT_TRUST)
    store = SessionStore()
    with trio.fail_after(IO_TIMEOUT_S):
        first, _ = await tls_pair(
            client_tls, listener(profile).compile(), host=HOST_B, sessions=store, close=True
        )
        again, _ = await tls_pair(
            client_tls, listener(profile).compile(), host=HOST_B, sessions=store, close=True
        )
    assert isinstance(first, TlsStream) and isinstance(again, TlsStream)
    assert (first.info.session_reused, again.info.session_reused) == (False, True)
    assert served(again) == CERT_B
