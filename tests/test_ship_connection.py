"""The SHIP connection set-up, sans-IO: each phase, timers, prolongation, hostile messages, a stateful model."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from evsim.ship.connection import (
    CMI_TIMEOUT_S,
    MAX_STRAY,
    T_HELLO_INC_S,
    T_HELLO_INIT_S,
    T_HELLO_PROLONG_THR_INC_S,
    Closed,
    Connected,
    DataReceived,
    HelloChanged,
    ShipConfig,
    ShipConnection,
    ShipEvent,
)
from evsim.ship.messages import (
    CMI,
    MAX_CONTROL_SIZE,
    AccessMethods,
    AccessMethodsRequest,
    Close,
    Data,
    Hello,
    PinState,
    ProtocolHandshake,
    ProtocolHandshakeError,
    ShipMessageError,
    decode,
    encode,
)


class Pair:
    """A client and a server wired together; :meth:`pump` delivers everything queued, in order."""

    def __init__(self, *, client_trusted: bool = True, server_trusted: bool = True, now: float = 0.0) -> None:
        self.now = now
        self.client = ShipConnection("client", ShipConfig("client-id"), trusted=client_trusted, now=now)
        self.server = ShipConnection("server", ShipConfig("server-id"), trusted=server_trusted, now=now)
        self.log: dict[str, list[ShipEvent]] = {"client": [], "server": []}
        self.wire: list[tuple[str, bytes]] = []

    def pump(self) -> None:
        for _ in range(100):
            moved = False
            for name, src, dst in (
                ("client", self.client, self.server),
                ("server", self.server, self.client),
            ):
                for data in src.data_to_send():
                    self.wire.append((name, data))
                    dst.receive(data, self.now)
                    moved = True
            self.log["client"] += self.client.events()
            self.log["server"] += self.server.events()
            if not moved:
                return
        raise AssertionError("the pair did not settle")

    def advance(self, to: float) -> None:
        """Move time to ``to``, firing every timer on the way, pumping after each."""
        while True:
            due = [t for t in (self.client.get_timer(), self.server.get_timer()) if t is not None and t <= to]
            if not due:
                break
            self.now = min(due)
            self.client.handle_timer(self.now)
            self.server.handle_timer(self.now)
            self.pump()
        self.now = to

    def sent(self, side: str) -> list[object]:
        return [decode(d) for name, d in self.wire if name == side]


def closed(events: list[ShipEvent]) -> Closed:
    ends = [e for e in events if isinstance(e, Closed)]
    assert len(ends) == 1, events
    return ends[0]


# ---------------------------------------------------------------- messages


def test_messages_round_trip_in_eebus_json() -> None:
    for message in (
        Hello("pending", 60000, True),
        Hello("ready"),
        ProtocolHandshake("announceMax", 1, 0, ("JSON-UTF8",)),
        ProtocolHandshakeError(3),
        PinState("none"),
        AccessMethodsRequest(),
        AccessMethods("EVSIM-ST-1", True, "st-1.local"),
        Data("ee1.0", {"datagram": {"header": {"specificationVersion": "1.3.0"}}}),
        Close("announce", 500, "removedConnection"),
    ):
        assert decode(encode(message)) == message


def test_hello_is_written_as_eebus_json() -> None:
    wire = encode(Hello("pending", 60000))
    assert wire[0] == 1
    assert json.loads(wire[1:]) == {"connectionHello": [{"phase": "pending"}, {"waiting": 60000}]}


def test_plain_json_objects_are_accepted_too() -> None:
    plain = b"\x01" + json.dumps({"connectionHello": {"phase": "ready", "waiting": 1000}}).encode()
    assert decode(plain) == Hello("ready", 1000)


@pytest.mark.parametrize(
    ("data", "reason", "words"),
    [
        (b"", "bad_message", "empty"),
        (b"\x00\x01", "bad_message", "00 00"),
        (b"\x07{}", "bad_message", "unknown message type"),
        (b"\x01\xff\xfe", "bad_message", "UTF-8"),
        (b"\x01{not json", "bad_message", "not JSON"),
        (b"\x01" + b"[" * 5000 + b"]" * 5000, "message_too_large", "limit"),
        (b"\x01" + b"[" * 100 + b"]" * 100, "bad_message", "nested"),
        (b'\x01{"connectionHello":[{"phase":"maybe"}]}', "bad_message", "phase"),
        (b'\x01{"connectionHello":[{"phase":"ready"},{"waiting":-1}]}', "bad_message", "waiting"),
        (b'\x01{"connectionHello":[{"phase":"ready"},{"waiting":true}]}', "bad_message", "waiting"),
        (b'\x01{"connectionHello":[{"phase":"ready"},{"prolongationRequest":1}]}', "bad_message", "prolong"),
        (b'\x01{"launchMissiles":[]}', "bad_message", "unknown message"),
        (b'\x01{"a":1,"b":2}', "bad_message", "one member"),
        (b'\x01{"accessMethods":[{"id":""}]}', "bad_message", "id"),
        (b'\x02{"connectionHello":[{"phase":"ready"}]}', "bad_message", "unknown message"),
        (b"\x01" + b'{"accessMethods":[{"id":"' + b"x" * 300 + b'"}]}', "bad_message", "id"),
    ],
)
def test_hostile_messages_are_refused_with_a_reason(data: bytes, reason: str, words: str) -> None:
    with pytest.raises(ShipMessageError) as info:
        decode(data)
    assert info.value.reason == reason
    assert words in info.value.detail


def test_data_messages_have_their_own_larger_limit() -> None:
    big = Data("ee1.0", "x" * (MAX_CONTROL_SIZE * 2))
    assert decode(encode(big)) == big
    with pytest.raises(ShipMessageError, match="message_too_large"):
        decode(encode(big), max_size=MAX_CONTROL_SIZE)


# ---------------------------------------------------------------- the whole set-up


def test_both_trusted_reach_connected_in_order() -> None:
    pair = Pair()
    pair.pump()
    assert pair.client.state == pair.server.state == "connected"
    assert pair.log["client"][-1] == Connected("server-id")
    assert pair.log["server"][-1] == Connected("client-id")
    assert pair.client.get_timer() is None and pair.server.get_timer() is None
    kinds = [type(m).__name__ if m != "cmi" else "cmi" for m in pair.sent("client")]
    assert kinds == [
        "cmi",
        "Hello",
        "ProtocolHandshake",
        "ProtocolHandshake",
        "PinState",
        "AccessMethodsRequest",
        "AccessMethods",
    ]
    server_kinds = [type(m).__name__ if m != "cmi" else "cmi" for m in pair.sent("server")]
    assert server_kinds == [
        "cmi",
        "Hello",
        "ProtocolHandshake",
        "PinState",
        "AccessMethodsRequest",
        "AccessMethods",
    ]
    announce, confirm = [m for m in pair.sent("client") if isinstance(m, ProtocolHandshake)]
    assert announce.handshake_type == "announceMax" and confirm.handshake_type == "select"
    assert [m for m in pair.sent("server") if isinstance(m, PinState)] == [PinState("none")]


def test_data_flows_and_close_is_confirmed() -> None:
    pair = Pair()
    pair.pump()
    pair.client.send_data({"hello": "spine"})
    pair.pump()
    assert pair.log["server"][-1] == DataReceived("ee1.0", {"hello": "spine"})
    pair.server.close(pair.now, "removedConnection")
    assert pair.server.state == "closing"
    pair.pump()
    assert closed(pair.log["server"]).by == "local" and closed(pair.log["server"]).reason == "closed"
    client_end = closed(pair.log["client"])
    assert client_end.by == "remote" and "removedConnection" in client_end.detail
    assert pair.sent("client")[-1] == Close("confirm")


def test_unconfirmed_close_times_out() -> None:
    pair = Pair()
    pair.pump()
    pair.server.close(pair.now)
    pair.server.data_to_send()  # lost
    pair.advance(pair.now + 11)
    assert closed(pair.log["server"]).reason == "close_timeout"


def test_send_data_before_connected_is_a_programming_error() -> None:
    conn = ShipConnection("client", ShipConfig("c"), trusted=True, now=0)
    with pytest.raises(RuntimeError):
        conn.send_data({})


# ---------------------------------------------------------------- CMI


def test_cmi_timeout_on_both_sides() -> None:
    client = ShipConnection("client", ShipConfig("c"), trusted=True, now=0)
    server = ShipConnection("server", ShipConfig("s"), trusted=True, now=0)
    assert client.data_to_send() == [CMI] and server.data_to_send() == []
    for conn in (client, server):
        assert conn.get_timer() == CMI_TIMEOUT_S
        conn.handle_timer(CMI_TIMEOUT_S - 0.001)
        assert conn.state == "cmi"
        conn.handle_timer(CMI_TIMEOUT_S)
        assert closed(conn.events()).reason == "cmi_timeout"


@pytest.mark.parametrize("data", [b"\x00\x01", b"\x01{}", encode(Hello("ready")), b"\x00\x00\x00"])
def test_anything_but_cmi_first_is_refused(data: bytes) -> None:
    server = ShipConnection("server", ShipConfig("s"), trusted=True, now=0)
    server.receive(data, 1.0)
    end = closed(server.events())
    assert end.reason in ("bad_cmi", "unexpected_message") and end.state == "cmi"
    assert server.data_to_send() == []  # nothing to tell a peer that does not speak SHIP


# ---------------------------------------------------------------- hello


def test_ready_side_waits_for_a_pending_peer_then_times_out() -> None:
    pair = Pair(server_trusted=False)
    pair.pump()
    assert pair.client.state == pair.server.state == "hello"
    assert HelloChanged("peer_pending", 60000) in pair.log["client"]
    # the pending server asks for prolongation 30 s before the client's 60 s end; granted twice
    pair.advance(T_HELLO_INIT_S - T_HELLO_PROLONG_THR_INC_S)
    assert HelloChanged("prolongation_requested") in pair.log["server"]
    assert HelloChanged("prolongation_granted") in pair.log["client"]
    pair.advance(1000)
    assert closed(pair.log["client"]).reason == "hello_timeout"
    assert closed(pair.log["server"]).reason == "peer_aborted"
    assert pair.client.statistics().prolongations_granted == 2


def test_prolongation_adds_t_hello_inc_to_the_wait() -> None:
    client = ShipConnection("client", ShipConfig("c", max_prolongations=2), trusted=True, now=0)
    client.receive(CMI, 0.0)
    assert client.get_timer() == T_HELLO_INIT_S
    client.receive(encode(Hello("pending", None, True)), 10.0)
    assert client.get_timer() == T_HELLO_INIT_S + T_HELLO_INC_S
    sent = [decode(d) for d in client.data_to_send()]
    assert sent[-1] == Hello("ready", int((T_HELLO_INIT_S + T_HELLO_INC_S - 10) * 1000))
    client.receive(encode(Hello("pending", None, True)), 20.0)
    client.receive(encode(Hello("pending", None, True)), 30.0)  # a third: refused, timer unchanged
    assert client.get_timer() == T_HELLO_INIT_S + 2 * T_HELLO_INC_S
    assert HelloChanged("prolongation_refused") in client.events()


def test_user_trusts_a_pending_side_and_the_set_up_completes() -> None:
    pair = Pair(server_trusted=False)
    pair.pump()
    pair.advance(20)
    pair.server.trust(pair.now)
    pair.pump()
    assert pair.client.state == pair.server.state == "connected"


def test_pending_client_trusted_later_after_a_ready_server() -> None:
    pair = Pair(client_trusted=False)
    pair.pump()
    assert pair.client.state == "hello" and HelloChanged("peer_ready", 60000) in pair.log["client"]
    pair.client.trust(pair.now + 5)
    pair.now += 5
    pair.pump()
    assert pair.client.state == pair.server.state == "connected"


def test_user_denies_and_the_peer_hears_aborted() -> None:
    pair = Pair(server_trusted=False)
    pair.pump()
    pair.server.deny(pair.now)
    pair.pump()
    assert closed(pair.log["server"]).reason == "trust_denied"
    assert closed(pair.log["client"]).reason == "peer_aborted"


def test_pending_side_gives_up_when_the_peer_wait_ends() -> None:
    server = ShipConnection("server", ShipConfig("s", max_prolongations=0), trusted=False, now=0)
    server.receive(CMI, 0.0)
    server.receive(encode(Hello("ready", 5000)), 1.0)
    assert server.get_timer() == 7.0  # the peer's 5 s plus one second of grace
    server.handle_timer(6.5)
    assert server.state == "hello"
    server.handle_timer(7.0)
    assert closed(server.events()).reason == "hello_timeout"


@pytest.mark.parametrize("hello", [Hello("ready"), Hello("ready", 999)])
def test_pending_side_refuses_a_ready_hello_without_a_sane_wait(hello: Hello) -> None:
    server = ShipConnection("server", ShipConfig("s"), trusted=False, now=0)
    server.receive(CMI, 0.0)
    server.receive(encode(hello), 1.0)
    assert closed(server.events()).reason == "bad_message"


def test_stray_hellos_after_the_hello_phase_are_bounded() -> None:
    pair = Pair()
    pair.pump()
    for _ in range(MAX_STRAY):
        pair.server.receive(encode(Hello("ready", 1000)), pair.now)
    assert pair.server.state == "connected"
    pair.server.receive(encode(Hello("ready", 1000)), pair.now)
    assert closed(pair.server.events()).reason == "unexpected_message"


# ---------------------------------------------------------------- protocol handshake, PIN, access


def server_in_protocol() -> ShipConnection:
    server = ShipConnection("server", ShipConfig("s"), trusted=True, now=0)
    server.receive(CMI, 0.0)
    server.receive(encode(Hello("ready", 60000)), 0.0)
    assert server.state == "protocol"
    server.data_to_send()
    return server


@pytest.mark.parametrize(
    "announce",
    [
        ProtocolHandshake("announceMax", 2, 0, ("JSON-UTF8",)),
        ProtocolHandshake("announceMax", 1, 0, ("XML",)),
    ],
)
def test_protocol_mismatch_sends_error_3(announce: ProtocolHandshake) -> None:
    server = server_in_protocol()
    server.receive(encode(announce), 1.0)
    assert closed(server.events()).reason == "handshake_mismatch"
    assert decode(server.data_to_send()[-1]) == ProtocolHandshakeError(3)


def test_newer_minor_version_is_answered_with_1_0() -> None:
    server = server_in_protocol()
    server.receive(encode(ProtocolHandshake("announceMax", 1, 7, ("JSON-UTF8", "XML"))), 1.0)
    assert decode(server.data_to_send()[-1]) == ProtocolHandshake("select", 1, 0, ("JSON-UTF8",))


def test_protocol_timeout_sends_error_1() -> None:
    server = server_in_protocol()
    server.handle_timer(CMI_TIMEOUT_S)
    assert closed(server.events()).reason == "handshake_timeout"
    assert decode(server.data_to_send()[-1]) == ProtocolHandshakeError(1)


def test_unexpected_message_in_protocol_sends_error_2() -> None:
    server = server_in_protocol()
    server.receive(encode(PinState("none")), 1.0)
    assert closed(server.events()).reason == "unexpected_message"
    assert decode(server.data_to_send()[-1]) == ProtocolHandshakeError(2)


def test_peer_handshake_error_ends_the_connection() -> None:
    server = server_in_protocol()
    server.receive(encode(ProtocolHandshakeError(1)), 1.0)
    end = closed(server.events())
    assert end.reason == "handshake_error:1" and end.by == "remote"


def test_client_refuses_a_changed_selection() -> None:
    client = ShipConnection("client", ShipConfig("c"), trusted=True, now=0)
    client.receive(CMI, 0.0)
    client.receive(encode(Hello("ready", 60000)), 0.0)
    client.receive(encode(ProtocolHandshake("select", 1, 1, ("JSON-UTF8",))), 0.0)
    assert closed(client.events()).reason == "handshake_mismatch"


@pytest.mark.parametrize("state", ["required", "optional", "pinOk"])
def test_a_pin_is_not_supported(state: str) -> None:
    server = server_in_protocol()
    server.receive(encode(ProtocolHandshake("announceMax", 1, 0, ("JSON-UTF8",))), 0.0)
    server.receive(encode(ProtocolHandshake("select", 1, 0, ("JSON-UTF8",))), 0.0)
    assert server.state == "pin"
    server.receive(encode(PinState(state)), 0.0)  # type: ignore[arg-type]
    assert closed(server.events()).reason == "pin_unsupported"


def test_setup_timeout_in_access_phase() -> None:
    server = server_in_protocol()
    server.receive(encode(ProtocolHandshake("announceMax", 1, 0, ("JSON-UTF8",))), 0.0)
    server.receive(encode(ProtocolHandshake("select", 1, 0, ("JSON-UTF8",))), 0.0)
    server.receive(encode(PinState("none")), 1.0)
    assert server.state == "access"
    server.handle_timer(1.0 + CMI_TIMEOUT_S)
    assert closed(server.events()).reason == "setup_timeout"


def test_second_access_methods_request_is_refused() -> None:
    pair = Pair()
    pair.pump()
    pair.server.receive(encode(AccessMethodsRequest()), pair.now)
    assert closed(pair.server.events()).reason == "unexpected_message"


def test_text_messages_are_refused() -> None:
    conn = ShipConnection("server", ShipConfig("s"), trusted=True, now=0)
    conn.receive_text()
    assert closed(conn.events()).reason == "bad_message"


def test_data_before_connected_is_unexpected() -> None:
    server = server_in_protocol()
    server.receive(encode(Data("ee1.0", {})), 1.0)
    assert closed(server.events()).reason == "unexpected_message"


def test_deny_when_connected_announces_a_close_and_ends_at_once() -> None:
    pair = Pair()
    pair.pump()
    pair.server.deny(pair.now, "unpaired")
    assert closed(pair.server.events()).reason == "trust_denied"
    assert decode(pair.server.data_to_send()[-1]) == Close("announce", None, "removedConnection")


def test_transport_lost_is_one_event_and_then_silence() -> None:
    pair = Pair()
    pair.pump()
    pair.client.transport_lost("eof")
    pair.client.receive(encode(Data("ee1.0", {})), 1.0)
    pair.client.close(1.0)
    end = closed(pair.client.events())
    assert end.reason == "transport_lost" and pair.client.data_to_send() == []


# ---------------------------------------------------------------- stateful model


class ShipPairModel(RuleBasedStateMachine):
    """Random user decisions, time steps, closes and injected garbage: every run ends in at most one
    Closed per side, connected only when both trusted, and no timer left once closed."""

    def __init__(self) -> None:
        super().__init__()
        self.pair = Pair(client_trusted=False, server_trusted=False)
        self.trusted = {"client": False, "server": False}
        self.pair.pump()

    def side(self, name: str) -> ShipConnection:
        return self.pair.client if name == "client" else self.pair.server

    @rule(name=st.sampled_from(["client", "server"]))
    def trust(self, name: str) -> None:
        self.trusted[name] = True
        self.side(name).trust(self.pair.now)
        self.pair.pump()

    @rule(name=st.sampled_from(["client", "server"]))
    def deny(self, name: str) -> None:
        self.side(name).deny(self.pair.now)
        self.pair.pump()

    @rule(step=st.floats(min_value=0.1, max_value=90))
    def wait(self, step: float) -> None:
        self.pair.advance(self.pair.now + step)

    @precondition(lambda self: self.pair.client.state == "connected")
    @rule()
    def exchange_data(self) -> None:
        self.pair.client.send_data({"n": 1})
        self.pair.pump()

    @rule(name=st.sampled_from(["client", "server"]))
    def close(self, name: str) -> None:
        self.side(name).close(self.pair.now)
        self.pair.pump()

    @rule(name=st.sampled_from(["client", "server"]), data=st.binary(max_size=40))
    def garbage(self, name: str, data: bytes) -> None:
        self.side(name).receive(data, self.pair.now)
        self.pair.pump()

    @invariant()
    def consistent(self) -> None:
        for name in ("client", "server"):
            conn = self.side(name)
            ends = [e for e in self.pair.log[name] if isinstance(e, Closed)]
            assert len(ends) <= 1
            if conn.state == "closed":
                assert ends and conn.get_timer() is None
            if conn.state == "connected":
                assert all(self.trusted.values())
            if conn.state not in ("closed", "connected"):
                assert conn.get_timer() is not None  # nothing hangs forever


ShipPairModel.TestCase.settings = settings(max_examples=60, stateful_step_count=20, deadline=None)
test_ship_pair_model = ShipPairModel.TestCase


# ---------------------------------------------------------------- fuzzing the decoder and the core


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200))
def test_decode_refuses_garbage_with_its_own_error_only(data: bytes) -> None:
    reason = None
    try:
        decode(data)
    except ShipMessageError as exc:
        reason = exc.reason
    assert reason in (None, "bad_message", "message_too_large")


JSON_LEAF = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=8)
JSON = st.recursive(
    JSON_LEAF,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from([0, 1, 2, 3]),
    name=st.sampled_from(["connectionHello", "data", "accessMethods", "x"]),
    body=JSON,
)
def test_decode_refuses_any_json_shape_with_its_own_error_only(kind: int, name: str, body: object) -> None:
    data = bytes((kind,)) + json.dumps({name: body}).encode()
    with contextlib.suppress(ShipMessageError):  # anything else (KeyError, TypeError...) fails the test
        decode(data)


@settings(max_examples=200, deadline=None)
@given(messages=st.lists(st.binary(max_size=60), max_size=8), role=st.sampled_from(["client", "server"]))
def test_the_core_survives_any_message_sequence(messages: list[bytes], role: str) -> None:
    conn = ShipConnection(role, ShipConfig("x"), trusted=True, now=0.0)  # type: ignore[arg-type]
    for i, data in enumerate([CMI, *messages]):
        conn.receive(data, float(i))
    ends = [e for e in conn.events() if isinstance(e, Closed)]
    assert len(ends) <= 1
    assert (conn.state == "closed") == bool(ends)
    assert conn.state == "closed" or conn.get_timer() is not None
