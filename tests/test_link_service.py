"""Services with several endpoints: the model's validation, the sans-IO planner, and connect_service over the
in-memory network with real TLS servers (virtual time)."""

from __future__ import annotations

import random
import tomllib
from collections.abc import Sequence

import attrs
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from evsim.backoff import RetryBackOff
from evsim.clock import SimClock
from evsim.errors import ConfigError, TransportError, UpgradeRejected, failure_reason
from evsim.link.service import (
    POLICIES,
    Endpoint,
    EndpointPlanner,
    FailoverPolicy,
    Service,
    ServiceConnection,
    ServiceUnavailable,
    TlsNames,
    connect_service,
)
from evsim.net import VirtualNetwork
from evsim.pki import CertKey, spki_sha256
from evsim.recorder import Recorder
from evsim.tls import Identity, ServerTls, TlsInfo, TlsProfile, TrustStore, events, tls_accept
from evsim.tls.peer import PeerEvent, PeerPolicy
from evsim.tls.pins import Pin, PinSet
from tests.pki_fixtures import CSMS_HOST, TEST_NOW, make_test_pki

PKI = make_test_pki()
ROOT_X = PKI.csms_trust()
ROOT_Y = TrustStore("PartnerRoot", (PKI.evil.cert,))
GOOD = ServerTls.build(TlsProfile(), PKI.server_identity())
EVIL = ServerTls.build(TlsProfile(), Identity.from_cert_key(PKI.evil_server))
FIXED = RetryBackOff(wait_minimum=1, random_range=0, repeat_times=2)  # waits 1, 2, 4, 4, ...
LIMIT = 600  # virtual seconds; every I/O test runs under trio.fail_after(LIMIT)


def ws_endpoint(name: str, priority: int = 0, attempts: int = 1) -> Endpoint:
    return Endpoint(name, f"ws://{name}.evsim.test/ocpp", priority, attempts=attempts)


def service(
    *endpoints: Endpoint, policy: FailoverPolicy = "priority", backoff: RetryBackOff = FIXED
) -> Service:
    return Service("csms", endpoints, policy, backoff)


# ---------------------------------------------------------------- model


def test_endpoint_derives_address_and_server_name() -> None:
    ep = Endpoint("primary", "wss://csms.evsim.test:8443/ocpp", trust=ROOT_X, attempts=3)
    assert (ep.scheme, ep.host, ep.port, ep.path) == ("wss", "csms.evsim.test", 8443, "/ocpp")
    assert ep.secure and ep.server_name == "csms.evsim.test"
    assert Endpoint("ip", "wss://10.0.0.7/ocpp", trust=ROOT_X, sni=CSMS_HOST).server_name == CSMS_HOST
    blind = TrustStore("blind", (PKI.root.cert,), hostname="off")
    assert Endpoint("nosni", "wss://csms.evsim.test/", trust=blind, sni="off").server_name is None
    plain = ws_endpoint("plain")
    assert not plain.secure and plain.server_name is None and plain.client_tls() is None
    assert ep.client_tls() is ep.client_tls()  # compiled once (ClientTls.build cache)


@pytest.mark.parametrize(
    ("make", "path", "words"),
    [
        (lambda: Endpoint("", "ws://h/"), "endpoint.name", "needs a name"),
        (lambda: Endpoint("a", "ftp://h/"), "endpoint.a.url", "ws or wss or http or https"),
        (lambda: Endpoint("a", "wss:///ocpp", trust=ROOT_X), "endpoint.a.url", "no host"),
        (lambda: Endpoint("a", "wss://h/"), "endpoint.a.trust", "needs a trust store"),
        (lambda: Endpoint("a", "ws://h/", trust=ROOT_X), "endpoint.a.trust", "does not use TLS"),
        (
            lambda: Endpoint("a", "ws://h/", identity=PKI.station_identity("CS1")),
            "endpoint.a.identity",
            "does not use TLS",
        ),
        (lambda: Endpoint("a", "ws://h/", sni="h"), "endpoint.a.sni", "does not use TLS"),
        (
            lambda: Endpoint("a", "ws://h/", profile=TlsProfile(versions=("1.3",))),
            "endpoint.a.profile",
            "does not use TLS",
        ),
        (lambda: Endpoint("a", "wss://h/", trust=ROOT_X, sni="off"), "endpoint.a.sni", "hostname"),
        (lambda: Endpoint("a", "wss://h/", trust=ROOT_X, sni=""), "endpoint.a.sni", "host name"),
        (lambda: Endpoint("a", "wss://h/", trust=ROOT_X, sni="a b"), "endpoint.a.sni", "host name"),
        (lambda: Endpoint("a", "ws://h/", attempts=0), "endpoint.a.attempts", ">= 1"),
        (lambda: Endpoint("a", "ws://h/", priority=True), "endpoint.a.priority", "integer"),
    ],
)
def test_endpoint_validation(make: object, path: str, words: str) -> None:
    assert callable(make)
    with pytest.raises(ConfigError) as info:
        make()
    assert info.value.path == path
    assert words in info.value.message
    assert info.value.fix


def test_service_validation() -> None:
    a, b = ws_endpoint("a", 0), ws_endpoint("b", 1)
    with pytest.raises(ConfigError, match="at least one endpoint") as info:
        Service("csms", ())
    assert info.value.path == "service.csms.endpoints"
    with pytest.raises(ConfigError, match="duplicate endpoint name") as info:
        Service("csms", (a, ws_endpoint("a", 1)))
    assert info.value.path == "service.csms.endpoints[1].name"
    with pytest.raises(ConfigError, match="unknown failover policy"):
        Service("csms", (a,), "random")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="not an endpoint"):
        Service("csms", (a, "wss://x/"))  # type: ignore[arg-type]
    tie = ws_endpoint("tie", 0)
    with pytest.raises(ConfigError, match="same priority") as info:
        Service("csms", (a, tie))
    assert info.value.path == "service.csms.endpoints[1].priority" and "round_robin" in info.value.fix
    # ties are fine where the order is only a starting point; they keep list order
    for policy in ("round_robin", "sticky"):
        assert [e.name for e in Service("csms", (a, tie), policy).ordered] == ["a", "tie"]
    svc = Service("csms", (ws_endpoint("low", 5), a, b))
    assert [e.name for e in svc.ordered] == ["a", "b", "low"]
    assert svc.endpoint("b") is b
    with pytest.raises(KeyError):
        svc.endpoint("nope")
    assert Service("one", a).endpoints == (a,)


# ---------------------------------------------------------------- planner (sans-IO)


def walk(planner: EndpointPlanner, outcomes: Sequence[bool], step: float = 0.5) -> list[tuple[str, float]]:
    """Play ``outcomes`` (True = connected); return the (endpoint, wait) the planner gave for each."""
    now = 0.0
    seen = []
    for ok in outcomes:
        ep, wait = planner.next_attempt(now)
        seen.append((ep.name, wait))
        now += wait + step
        planner.report(ep, ok, "" if ok else "refused", now)
    return seen


def test_priority_policy() -> None:
    svc = service(ws_endpoint("b", 1), ws_endpoint("a", 0, attempts=2), ws_endpoint("c", 2))
    planner = EndpointPlanner(svc, random.Random(1))
    seen = walk(planner, [False] * 5 + [True, False, False, False, False])
    assert seen == [
        ("a", 0.0),  # first attempt: at once
        ("a", 1.0),  # second attempt on a (attempts=2): back-off
        ("b", 0.0),  # next endpoint of the pass: at once
        ("c", 0.0),
        ("a", 2.0),  # full pass failed: back-off grows, start from the top
        ("a", 4.0),  # connected
        ("a", 1.0),  # reconnect after the success: reset back-off, from the top again
        ("a", 2.0),
        ("b", 0.0),
        ("c", 0.0),
    ]
    assert planner.failed_passes == 1 and planner.last_good is not None and planner.last_good.name == "a"
    assert [a.ok for a in planner.log] == [False] * 5 + [True] + [False] * 4
    assert planner.log[0].reason == "refused" and planner.log[5].reason == ""


def test_priority_success_on_secondary_returns_to_primary() -> None:
    planner = EndpointPlanner(service(ws_endpoint("a", 0), ws_endpoint("b", 1)), random.Random(1))
    assert walk(planner, [False, True, False]) == [("a", 0.0), ("b", 0.0), ("a", 1.0)]


def test_round_robin_policy() -> None:
    svc = service(ws_endpoint("a"), ws_endpoint("b"), ws_endpoint("c"), policy="round_robin")
    planner = EndpointPlanner(svc, random.Random(1), wait_after_success=False)
    seen = walk(planner, [True, True, True, True, False, False, False, True])
    assert [n for n, _ in seen] == ["a", "b", "c", "a", "b", "c", "a", "b"]
    # waits: none after successes (wait_after_success=False), none mid-pass, back-off after the failed pass
    assert [w for _, w in seen] == [0, 0, 0, 0, 0, 0, 0, 1.0]


def test_sticky_policy() -> None:
    svc = service(ws_endpoint("a", 0), ws_endpoint("b", 1), ws_endpoint("c", 2), policy="sticky")
    planner = EndpointPlanner(svc, random.Random(1))
    seen = walk(planner, [False, True, True, True, False, False, False, False, True])
    assert seen == [
        ("a", 0.0),
        ("b", 0.0),  # a failed: move on
        ("b", 1.0),  # b worked: stay (reconnect waits the reset back-off)
        ("b", 1.0),
        ("b", 1.0),  # fails now
        ("c", 0.0),
        ("a", 0.0),
        ("b", 2.0),  # the pass ends back on the last good endpoint, after a longer back-off
        ("c", 0.0),  # b failed again: next endpoint at once (a new pass began at b)
    ]


def test_wait_counts_from_now_and_report_checks_the_endpoint() -> None:
    a, b = ws_endpoint("a", 0), ws_endpoint("b", 1)
    planner = EndpointPlanner(service(a, b), random.Random(1))
    planner.report(a, False, "refused", 10.0)
    planner.report(b, False, "refused", 10.0)  # pass failed: wait 1 s from t=10
    assert planner.next_attempt(10.25) == (a, 0.75)
    assert planner.next_attempt(12.0) == (a, 0.0)
    with pytest.raises(ValueError, match="planned endpoint is 'a'"):
        planner.report(b, True, "", 12.0)
    with pytest.raises(ValueError, match="needs a reason"):
        planner.report(a, False, "", 12.0)
    with pytest.raises(ConfigError, match="log_size") as info:
        EndpointPlanner(service(a), random.Random(1), log_size=0)
    assert (info.value.path, info.value.value) == ("planner.log_size", 0)
    assert info.value.fix


def test_log_is_bounded() -> None:
    planner = EndpointPlanner(service(ws_endpoint("a")), random.Random(1), log_size=3)
    walk(planner, [False] * 10)
    assert len(planner.log) == 3 and all(x.endpoint == "a" for x in planner.log)


@st.composite
def planner_runs(draw: st.DrawFn) -> tuple[Service, int, list[bool], bool]:
    n = draw(st.integers(1, 4))
    policy: FailoverPolicy = draw(st.sampled_from(POLICIES))
    priorities = draw(st.permutations(range(n)))
    endpoints = [ws_endpoint(f"e{i}", priorities[i], draw(st.integers(1, 3))) for i in range(n)]
    backoff = RetryBackOff(
        wait_minimum=draw(st.integers(1, 5)),
        random_range=draw(st.integers(0, 3)),
        repeat_times=draw(st.integers(0, 4)),
    )
    outcomes = draw(st.lists(st.booleans(), min_size=1, max_size=40))
    return (
        Service("svc", tuple(endpoints), policy, backoff),
        draw(st.integers(0, 2**32)),
        outcomes,
        draw(st.booleans()),
    )


@given(planner_runs())
def test_planner_properties(run: tuple[Service, int, list[bool], bool]) -> None:
    svc, seed, outcomes, wait_after_success = run
    order, n, bo = svc.ordered, len(svc.ordered), svc.backoff
    planner = EndpointPlanner(svc, random.Random(seed), wait_after_success=wait_after_success)
    now = 0.0
    prev: Endpoint | None = None
    prev_ok = False
    run_length = 0  # failures in a row on the current endpoint
    switches = 0  # endpoints given up on since the last success
    waits: list[float] = []  # back-off waits since the last success
    for i, ok in enumerate(outcomes):
        ep, wait = planner.next_attempt(now)
        assert any(ep is e for e in svc.endpoints)  # never an endpoint outside the service
        if i == 0:
            assert ep is order[0] and wait == 0
            backoff_wait = False
        elif prev_ok:
            assert prev is not None
            expected = {
                "priority": order[0],  # after a success, the next (failure) pass starts from the top
                "sticky": prev,
                "round_robin": order[(order.index(prev) + 1) % n],
            }[svc.policy]
            assert ep is expected
            backoff_wait = wait_after_success
        else:
            assert prev is not None
            if run_length < prev.attempts:
                assert ep is prev  # each endpoint tried `attempts` times before moving on
                backoff_wait = True
            else:
                assert ep is order[(order.index(prev) + 1) % n]
                run_length = 0
                switches += 1
                backoff_wait = switches % n == 0  # a full pass failed
                if backoff_wait and svc.policy == "priority":
                    assert ep is order[0]
        if not backoff_wait:
            assert wait == 0
        else:
            # OCPP back-off bounds: first wait_min + U(0..range); then doubles + U(0..range) for at most
            # repeat_times doublings, then stays; never shrinks until a success resets it
            k, eps = len(waits) + 1, 1e-9  # waits are differences of trio times: float rounding
            if k == 1:
                assert bo.wait_minimum - eps <= wait <= bo.wait_minimum + bo.random_range + eps
            elif k - 1 <= bo.repeat_times:
                assert 2 * waits[-1] - eps <= wait <= 2 * waits[-1] + bo.random_range + eps
            else:
                assert wait == pytest.approx(waits[-1], abs=eps)
            waits.append(wait)
        now += wait + 0.25
        planner.report(ep, ok, "" if ok else "refused", now)
        if ok:
            run_length, switches, waits = 0, 0, []
        else:
            run_length += 1
        prev, prev_ok = ep, ok
    assert [(a.endpoint, a.ok) for a in planner.log] == [
        (e.endpoint, ok) for e, ok in zip(planner.log, outcomes, strict=True)
    ]


# ---------------------------------------------------------------- connect_service over the virtual network


@attrs.define
class Server:
    """A small server on the virtual network: accept, TLS handshake (unless plain), hold the stream."""

    server_tls: ServerTls | None
    clock: SimClock
    handshakes: list[TlsInfo | None] = attrs.field(factory=list)
    failures: list[str] = attrs.field(factory=list)
    ended: int = 0

    async def serve(self, listener: trio.abc.Listener[trio.abc.Stream]) -> None:
        async with listener, trio.open_nursery() as nursery:
            while True:
                nursery.start_soon(self._handle, await listener.accept())

    async def _handle(self, stream: trio.abc.Stream) -> None:
        try:
            if self.server_tls is not None:
                stream = await tls_accept(stream, self.server_tls, verify_time=self.clock.utcnow)
                self.handshakes.append(stream.info)
            else:
                self.handshakes.append(None)
            while await stream.receive_some():
                pass
        except TransportError as exc:
            self.failures.append(failure_reason(exc))
        finally:
            self.ended += 1
            await trio.aclose_forcefully(stream)


async def start_server(
    nursery: trio.Nursery,
    net: VirtualNetwork,
    clock: SimClock,
    host: str,
    port: int,
    server_tls: ServerTls | None,
) -> Server:
    server = Server(server_tls, clock)
    nursery.start_soon(server.serve, await net.listen(host, port))
    return server


async def settle_and_close(conn: ServiceConnection[object]) -> None:
    """Let the server finish its side first: a TLS 1.3 server still sends session tickets after the client's
    handshake is done, and on the virtual network a send to a closed peer fails at once."""
    await trio.testing.wait_all_tasks_blocked()
    await conn.aclose()


def wss(name: str, url: str, priority: int = 0, **kw: object) -> Endpoint:
    kw.setdefault("trust", ROOT_X)
    return Endpoint(name, url, priority, **kw)  # type: ignore[arg-type]


async def test_primary_down_fails_over_to_secondary(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(LIMIT):
        clock = SimClock.start(TEST_NOW)
        net, recorder = VirtualNetwork(), Recorder(clock)
        svc = service(
            wss("primary", f"wss://{CSMS_HOST}:443/ocpp", 0),
            wss("secondary", f"wss://{CSMS_HOST}:8443/ocpp", 1),
        )
        async with trio.open_nursery() as nursery:
            secondary = await start_server(nursery, net, clock, CSMS_HOST, 8443, GOOD)  # nobody on 443
            conn = await connect_service(svc, net, clock=clock, recorder=recorder, source="CS1")
            assert conn.endpoint.name == "secondary"
            assert [(a.endpoint, a.ok, a.reason) for a in conn.attempts] == [
                ("primary", False, "refused"),
                ("secondary", True, ""),
            ]
            assert conn.failures == conn.attempts[:1] and "refused" in conn.attempts[0].detail
            assert conn.tls is not None and conn.tls.sni == CSMS_HOST
            await conn.stream.send_all(b"hello")  # a working TLS stream
            events = [(e.node, e.data) for e in recorder.of_kind("service_attempt")]
            assert events == [
                ("CS1", {"endpoint": "primary", "ok": False, "reason": "refused"}),
                ("CS1", {"endpoint": "secondary", "ok": True, "reason": ""}),
            ]
            assert trio.current_time() == 0  # another endpoint in the same pass: no back-off
            await settle_and_close(conn)
            await trio.testing.wait_all_tasks_blocked()
            assert len(secondary.handshakes) == 1
            nursery.cancel_scope.cancel()


async def test_untrusted_primary_fails_over_with_unknown_ca(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(LIMIT):
        clock = SimClock.start(TEST_NOW)
        net = VirtualNetwork()
        svc = service(
            wss("primary", f"wss://{CSMS_HOST}:443/ocpp", 0),
            wss("secondary", f"wss://{CSMS_HOST}:8443/ocpp", 1),
        )
        async with trio.open_nursery() as nursery:
            evil = await start_server(nursery, net, clock, CSMS_HOST, 443, EVIL)
            await start_server(nursery, net, clock, CSMS_HOST, 8443, GOOD)
            conn = await connect_service(svc, net, clock=clock)
            assert conn.endpoint.name == "secondary"
            assert [a.reason for a in conn.failures] == ["cert_invalid:unknown_ca"]
            await settle_and_close(conn)
            await trio.testing.wait_all_tasks_blocked()
            assert evil.failures and evil.failures[0].startswith("peer_alert")  # we refused it
            nursery.cancel_scope.cancel()


async def test_each_endpoint_trusts_its_own_root(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(LIMIT):
        clock = SimClock.start(TEST_NOW)
        net = VirtualNetwork()
        # both servers present CSMS_HOST certificates, from different roots; the URLs name other hosts, so the
        # endpoints give the name to present and verify explicitly (sni)
        a = wss("a", "wss://csms-a.evsim.test/ocpp", trust=ROOT_X, sni=CSMS_HOST)
        b = wss("b", "wss://csms-b.evsim.test/ocpp", trust=ROOT_Y, sni=CSMS_HOST)
        svc = service(a, b, policy="round_robin")
        planner = EndpointPlanner(svc, random.Random(1))
        async with trio.open_nursery() as nursery:
            sa = await start_server(nursery, net, clock, "csms-a.evsim.test", 443, GOOD)
            sb = await start_server(nursery, net, clock, "csms-b.evsim.test", 443, EVIL)
            first = await connect_service(svc, net, clock=clock, planner=planner, max_attempts=1)
            second = await connect_service(svc, net, clock=clock, planner=planner, max_attempts=1)
            assert (first.endpoint, second.endpoint) == (a, b)
            assert first.tls is not None and first.tls.verified_chain[-1] == PKI.root.cert
            assert second.tls is not None and second.tls.verified_chain[-1] == PKI.evil.cert
            await trio.testing.wait_all_tasks_blocked()
            for srv in (sa, sb):
                (info,) = srv.handshakes
                assert info is not None and info.sni == CSMS_HOST
            await settle_and_close(first)
            await settle_and_close(second)
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize(("policy", "after_recovery"), [("sticky", "b"), ("priority", "a")])
async def test_primary_recovers(
    autojump_clock: trio.testing.MockClock, policy: FailoverPolicy, after_recovery: str
) -> None:
    with trio.fail_after(LIMIT):
        clock = SimClock.start(TEST_NOW)
        net = VirtualNetwork()
        a = wss("a", "wss://csms-a.evsim.test/ocpp", 0, sni=CSMS_HOST)
        b = wss("b", "wss://csms-b.evsim.test/ocpp", 1, sni=CSMS_HOST)
        svc = service(a, b, policy=policy)
        planner = EndpointPlanner(svc, random.Random(1))
        async with trio.open_nursery() as nursery:
            await start_server(nursery, net, clock, "csms-b.evsim.test", 443, GOOD)
            conn = await connect_service(svc, net, clock=clock, planner=planner)
            assert conn.endpoint is b and [x.reason for x in conn.failures] == ["refused"]
            await start_server(nursery, net, clock, "csms-a.evsim.test", 443, GOOD)  # a is back
            await settle_and_close(conn)
            conn = await connect_service(svc, net, clock=clock, planner=planner)
            assert conn.endpoint.name == after_recovery and conn.failures == ()
            await settle_and_close(conn)
            if policy == "sticky":
                net.set_host_down("csms-b.evsim.test")  # only a failure moves a sticky service
                conn = await connect_service(svc, net, clock=clock, planner=planner)
                assert conn.endpoint is a
                assert [(x.endpoint, x.reason) for x in conn.failures] == [("b", "refused")]
                await settle_and_close(conn)
            nursery.cancel_scope.cancel()


async def test_round_robin_alternates(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(LIMIT):
        clock = SimClock.start(TEST_NOW)
        net = VirtualNetwork()
        svc = service(
            wss("a", f"wss://{CSMS_HOST}:443/ocpp"),
            wss("b", f"wss://{CSMS_HOST}:8443/ocpp"),
            policy="round_robin",
        )
        planner = EndpointPlanner(svc, random.Random(1))
        async with trio.open_nursery() as nursery:
            sa = await start_server(nursery, net, clock, CSMS_HOST, 443, GOOD)
            sb = await start_server(nursery, net, clock, CSMS_HOST, 8443, GOOD)
            used = []
            for _ in range(4):
                conn = await connect_service(svc, net, clock=clock, planner=planner)
                used.append(conn.endpoint.name)
                await settle_and_close(conn)
            assert used == ["a", "b", "a", "b"]
            await trio.testing.wait_all_tasks_blocked()
            assert len(sa.handshakes) == len(sb.handshakes) == 2
            # each reconnect waited RetryBackOffWaitMinimum (the back-off is reset by every success)
            assert trio.current_time() == 3.0
            nursery.cancel_scope.cancel()


async def test_exhausted_attempts_raise_with_every_reason(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(LIMIT):
        clock = SimClock.start(TEST_NOW)
        net, recorder = VirtualNetwork(), Recorder(clock)
        svc = service(
            wss("a", f"wss://{CSMS_HOST}:443/ocpp", 0, attempts=2),
            wss("b", f"wss://{CSMS_HOST}:8443/ocpp", 1),
        )
        async with trio.open_nursery() as nursery:
            await start_server(nursery, net, clock, CSMS_HOST, 8443, EVIL)  # nobody on 443
            with pytest.raises(ServiceUnavailable) as info:
                await connect_service(svc, net, clock=clock, recorder=recorder, max_attempts=5)
            nursery.cancel_scope.cancel()
        exc = info.value
        assert [(a.endpoint, a.reason) for a in exc.attempts] == [
            ("a", "refused"),
            ("a", "refused"),
            ("b", "cert_invalid:unknown_ca"),
            ("a", "refused"),
            ("a", "refused"),
        ]
        assert [a.t for a in exc.attempts] == [0.0, 1.0, 1.0, 3.0, 7.0]  # back-off 1, (switch), 2, 4
        assert trio.current_time() == 7.0  # no wait after the last attempt
        assert exc.reason == "refused" and isinstance(exc, TransportError)
        assert "a: refused; a: refused; b: cert_invalid:unknown_ca; a: refused; a: refused" in str(exc)
        assert len(recorder.of_kind("service_attempt")) == 5


async def test_plain_ws_endpoint(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(LIMIT):
        clock = SimClock.start(TEST_NOW)
        net = VirtualNetwork()
        svc = service(Endpoint("plain", f"ws://{CSMS_HOST}/ocpp"))
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, net, clock, CSMS_HOST, 80, None)
            conn = await connect_service(svc, net, clock=clock)
            assert conn.tls is None and conn.endpoint.name == "plain"
            await settle_and_close(conn)
            await trio.testing.wait_all_tasks_blocked()
            assert server.handshakes == [None] and server.ended == 1
            nursery.cancel_scope.cancel()


async def test_sni_override_ip_host_and_off(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(LIMIT):
        clock = SimClock.start(TEST_NOW)
        net = VirtualNetwork()
        blind = TrustStore("blind", (PKI.root.cert,), hostname="off")
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, net, clock, "10.0.0.7", 443, GOOD)
            by_ip = service(wss("ip", "wss://10.0.0.7/ocpp"))  # no SNI for an IP literal; IP SAN checked
            with pytest.raises(ServiceUnavailable) as info:
                await connect_service(by_ip, net, clock=clock, max_attempts=1)
            assert info.value.reason == "cert_invalid:hostname_mismatch"
            named = service(wss("ip", "wss://10.0.0.7/ocpp", sni=CSMS_HOST))
            conn = await connect_service(named, net, clock=clock, max_attempts=1)
            await settle_and_close(conn)
            off = service(wss("ip", "wss://10.0.0.7/ocpp", trust=blind, sni="off"))
            conn = await connect_service(off, net, clock=clock, max_attempts=1)
            await settle_and_close(conn)
            await trio.testing.wait_all_tasks_blocked()
            assert [i.sni if i else "?" for i in server.handshakes] == [CSMS_HOST, None]
            nursery.cancel_scope.cancel()


async def test_setup_step_is_part_of_the_attempt(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(LIMIT):
        clock = SimClock.start(TEST_NOW)
        net = VirtualNetwork()
        svc = service(wss("a", f"wss://{CSMS_HOST}:443/ocpp", 0), wss("b", f"wss://{CSMS_HOST}:8443/ocpp", 1))

        async def upgrade(stream: trio.abc.Stream, endpoint: Endpoint) -> str:
            if endpoint.name == "a":
                raise UpgradeRejected(401, "unknown identity")
            await stream.send_all(b"GET /ocpp")
            return f"upgraded at {endpoint.name}"

        async def broken(stream: trio.abc.Stream, endpoint: Endpoint) -> None:
            raise RuntimeError("bug in setup")

        async with trio.open_nursery() as nursery:
            sa = await start_server(nursery, net, clock, CSMS_HOST, 443, GOOD)
            await start_server(nursery, net, clock, CSMS_HOST, 8443, GOOD)
            conn = await connect_service(svc, net, clock=clock, setup=upgrade)
            assert conn.setup == "upgraded at b"
            assert [(x.endpoint, x.reason) for x in conn.attempts] == [("a", "http_401"), ("b", "")]
            await settle_and_close(conn)
            await trio.testing.wait_all_tasks_blocked()
            assert sa.ended == 1  # the refused attempt's stream was closed
            with pytest.raises(RuntimeError, match="bug in setup"):
                await connect_service(svc, net, clock=clock, setup=broken)
            await trio.testing.wait_all_tasks_blocked()
            assert sa.ended == 2
            nursery.cancel_scope.cancel()


async def test_connect_service_argument_checks(autojump_clock: trio.testing.MockClock) -> None:
    clock = SimClock.start(TEST_NOW)
    net = VirtualNetwork()
    svc = service(ws_endpoint("a"))
    with pytest.raises(ConfigError, match="max_attempts") as info:
        await connect_service(svc, net, clock=clock, max_attempts=0)
    assert (info.value.path, info.value.value) == ("connect_service.max_attempts", 0)
    assert info.value.fix
    other = EndpointPlanner(service(ws_endpoint("b")), random.Random(1))
    with pytest.raises(ValueError, match="walks service"):
        await connect_service(svc, net, clock=clock, planner=other)


# ---------------------------------------------------------------- per-endpoint peer policies (pins)


def leaf_pins(*cert_keys: CertKey) -> PinSet:
    return PinSet("enforce", tuple(Pin("leaf", spki_sha256(ck.cert), "active") for ck in cert_keys))


async def test_two_endpoints_with_their_own_pins(autojump_clock: trio.testing.MockClock) -> None:
    """Both servers pass the CA check; only each endpoint's own pin set tells them apart."""
    with trio.fail_after(LIMIT):
        clock = SimClock.start(TEST_NOW)
        net = VirtualNetwork()
        log_a: list[PeerEvent] = []
        log_b: list[PeerEvent] = []
        pin_a = PeerPolicy(side="client", pins=leaf_pins(PKI.server), sink=log_a.append, name="a")
        pin_b = PeerPolicy(side="client", pins=leaf_pins(PKI.localhost), sink=log_b.append, name="b")
        # b is tried first (priority 0) and pins a key the server does not have
        b = wss("b", f"wss://{CSMS_HOST}:8443/ocpp", 0, peer=pin_b)
        a = wss("a", f"wss://{CSMS_HOST}:443/ocpp", 1, peer=pin_a)
        assert a.client_tls() is not None and a.client_tls().peer is pin_a  # type: ignore[union-attr]
        async with trio.open_nursery() as nursery:
            await start_server(nursery, net, clock, CSMS_HOST, 443, GOOD)
            sb = await start_server(nursery, net, clock, CSMS_HOST, 8443, GOOD)
            conn = await connect_service(service(b, a), net, clock=clock)
            assert [(x.endpoint, x.reason) for x in conn.attempts] == [("b", "pin_mismatch"), ("a", "")]
            assert conn.endpoint is a and conn.tls is not None and conn.tls.peer_chain[0] == PKI.server.cert
            await settle_and_close(conn)
            await trio.testing.wait_all_tasks_blocked()
            assert sb.failures and sb.failures[0].startswith("peer_alert")  # refused during the handshake
            nursery.cancel_scope.cancel()
        assert [e.event for e in log_b] == [events.PIN_MISMATCH] and log_a == []
        assert log_b[0].spki_sha256 == spki_sha256(PKI.server.cert).hex()


def test_endpoint_peer_validation() -> None:
    policy = PeerPolicy(side="client", pins=leaf_pins(PKI.server))
    with pytest.raises(ConfigError, match="does not use TLS") as info:
        Endpoint("a", "ws://h/", peer=policy)
    assert info.value.path == "endpoint.a.peer"
    pinned = TrustStore("ship", (), hostname="off", mode="pinned_peers")
    with pytest.raises(ConfigError, match="needs a peer policy") as info:
        Endpoint("a", "wss://h/", trust=pinned)
    assert info.value.path == "endpoint.a.peer"
    with pytest.raises(ConfigError, match="server-side") as info:
        Endpoint("a", "wss://h/", trust=ROOT_X, peer=PeerPolicy(side="server"))
    assert info.value.path == "endpoint.a.peer.side"
    # equality ignores the (mutable) policy
    assert Endpoint("a", "wss://h/", trust=ROOT_X, peer=policy) == Endpoint("a", "wss://h/", trust=ROOT_X)


# ---------------------------------------------------------------- TOML

NAMES = TlsNames(
    profiles={"strict": TlsProfile(versions=("1.3",))},
    trust={"CSMSRootCertificate": ROOT_X, "PartnerRoot": ROOT_Y},
    identities={"ChargingStationCertificate": PKI.station_identity("CS1")},
)

SERVICE_TOML = f"""
name = "csms"
policy = "sticky"
backoff = {{ wait_minimum = 1, random_range = 0, repeat_times = 2 }}
[[endpoints]]
name = "primary"
url = "wss://csms-a.evsim.test/ocpp"
profile = "strict"
trust = "CSMSRootCertificate"
identity = "ChargingStationCertificate"
sni = "{CSMS_HOST}"
attempts = 3
[endpoints.peer.pins]
pins = [{{ target = "leaf", spki_sha256 = "{spki_sha256(PKI.server.cert).hex()}" }}]
[[endpoints]]
name = "secondary"
url = "wss://csms-b.evsim.test/ocpp"
priority = 1
trust = "PartnerRoot"
"""


def service_from_toml(text: str) -> Service:
    return Service.from_toml(tomllib.loads(text), path="stations.g1.service", names=NAMES, at=TEST_NOW)


def test_service_from_toml() -> None:
    svc = service_from_toml(SERVICE_TOML)
    primary, secondary = svc.endpoints
    assert svc == Service(
        "csms",
        (
            Endpoint(
                "primary",
                "wss://csms-a.evsim.test/ocpp",
                0,
                TlsProfile(versions=("1.3",)),
                ROOT_X,
                PKI.station_identity("CS1"),
                CSMS_HOST,
                3,
            ),
            Endpoint("secondary", "wss://csms-b.evsim.test/ocpp", 1, trust=ROOT_Y),
        ),
        "sticky",
        FIXED,
    )
    assert primary.peer is not None and primary.peer.side == "client" and secondary.peer is None
    assert primary.peer.state.pins is not None
    assert primary.peer.state.pins.pins[0].spki_sha256 == spki_sha256(PKI.server.cert).hex()
    tie = SERVICE_TOML.replace('policy = "sticky"', 'policy = "priority"').replace(
        "priority = 1", "priority = 0"
    )
    with pytest.raises(ConfigError, match="same priority") as info:
        service_from_toml(tie)
    assert info.value.path == "stations.g1.service.endpoints[1].priority"
    plain = Endpoint.from_toml({"url": "ws://h/ocpp"}, path="svc.endpoints.plain", names=TlsNames())
    assert plain == Endpoint("plain", "ws://h/ocpp")


@pytest.mark.parametrize(
    ("edit", "path", "words"),
    [
        (('policy = "sticky"', 'polcy = "sticky"'), "stations.g1.service.polcy", "did you mean 'policy'"),
        (('policy = "sticky"', 'policy = "stiky"'), "stations.g1.service.policy", "did you mean 'sticky'"),
        (
            ('profile = "strict"', 'profile = "strcit"'),
            "stations.g1.service.endpoints[0].profile",
            "'strict'",
        ),
        (
            ('trust = "PartnerRoot"', 'trust = "Partner"'),
            "stations.g1.service.endpoints[1].trust",
            "PartnerRoot",
        ),
        (
            ('identity = "ChargingStationCertificate"', 'identity = "x"'),
            "stations.g1.service.endpoints[0].identity",
            "unknown identity",
        ),
        (("attempts = 3", "attempts = 0"), "stations.g1.service.endpoints[0].attempts", ">= 1"),
        (
            ("attempts = 3", "atempts = 3"),
            "stations.g1.service.endpoints[0].atempts",
            "did you mean 'attempts'",
        ),
        (('name = "secondary"', 'name = "primary"'), "stations.g1.service.endpoints[1].name", "duplicate"),
        (
            ('url = "wss://csms-b.evsim.test/ocpp"', 'url = "https://csms-b.evsim.test/"'),
            "stations.g1.service.endpoints[1].url",
            "all WebSocket (ws/wss) or all file transfer",
        ),
        (
            ('target = "leaf"', 'target = "leef"'),
            "stations.g1.service.endpoints[0].peer.pins.pins[0].target",
            "leaf",
        ),
        (("repeat_times = 2", "repeat_times = -1"), "stations.g1.service.backoff.repeat_times", ">= 0"),
    ],
)
def test_service_from_toml_errors_name_the_field(edit: tuple[str, str], path: str, words: str) -> None:
    old, new = edit
    assert old in SERVICE_TOML
    with pytest.raises(ConfigError) as info:
        service_from_toml(SERVICE_TOML.replace(old, new, 1))
    assert info.value.path == path, info.value
    assert words in str(info.value)


def test_endpoint_from_toml_peer_needs_the_start_time() -> None:
    with pytest.raises(ConfigError, match="start time") as info:
        Endpoint.from_toml(
            {"url": "wss://h/", "trust": "CSMSRootCertificate", "peer": {}}, path="e", names=NAMES
        )
    assert info.value.path == "e.peer"
    with pytest.raises(ConfigError, match="needs a url") as info:
        Endpoint.from_toml({}, path="e", names=NAMES)
    assert info.value.path == "e.url"
