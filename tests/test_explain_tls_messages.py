"""The sans-IO TLS message reader of ``evsim explain handshake`` on real hello bytes, and fuzzed.

The hex below are messages evsim's engine (OpenSSL via pyOpenSSL) sent in a handshake, captured with
``evsim.tls.trace``: a TLS 1.3 ClientHello (groups ``["X25519"]``, ALPN ``ocpp2.0.1``), the ServerHello and
EncryptedExtensions that answered it, and a TLS 1.2-only ClientHello. Random values and key shares only.
"""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from hypothesis import given

from evsim.explain import tls_messages as tm

CLIENT_HELLO_13 = bytes.fromhex(
    "0100011703031f084572b6d5f229f6008d2cd4bf6d5fa08c8e8d8c403e6149ffe65782b60555202181cf882a1c3e938117f2"
    "1ba2efbc9ce39af0075d27562db502aed98e2bb6640012130213011303c02bc02cc02fc030009c009d010000bcff01000100"
    "000b00020100000a00040002001d002300000016000000170000000d0038003609050906090404030503060308070808081a"
    "081b081c0809080a080b0804080508060401050106010303030103020402050206020708002b00050403040303002d000201"
    "01003300260024001d0020488afc48172467ce7d163ee403c05cfebdffefa7a25580144573d64d801ac01a00000014001200"
    "000f63736d732e657673696d2e746573740010000c000a096f637070322e302e31"
)
SERVER_HELLO_13 = bytes.fromhex(
    "020000760303cdca8cbb46ee91854773d6f1cbf37abf251c7a0a67e83f57fa48c6a5d56f89bf202181cf882a1c3e938117f2"
    "1ba2efbc9ce39af0075d27562db502aed98e2bb664130200002e002b0002030400330024001d00202b139f787c89d9d2c30e"
    "55b81f92735253df770325bc948f3a313e071d9b2667"
)
ENCRYPTED_EXTENSIONS = bytes.fromhex("0800001200100010000c000a096f637070322e302e31")
CLIENT_HELLO_12 = bytes.fromhex(
    "010000a20303450f74378f5baa4fa8db9c72aff0592e149d8d15670991607ad7525a87c01edb00000cc02bc02cc02fc03000"
    "9c009d0100006dff01000100000b00020100000a000c000a001d0017001e00180019002300000016000000170000000d002a"
    "0028040305030603080708080809080a080b08040805080604010501060103030301030204020502060200000014001200"
    "000f63736d732e657673696d2e74657374"
)
CAPTURED = (CLIENT_HELLO_13, SERVER_HELLO_13, ENCRYPTED_EXTENSIONS, CLIENT_HELLO_12)


def test_a_tls13_client_hello() -> None:
    ch = tm.parse_message(CLIENT_HELLO_13)
    assert isinstance(ch, tm.ClientHello)
    assert ch.versions == ("1.3", "1.2")
    assert ch.suite_names[:3] == (
        "TLS_AES_256_GCM_SHA384",
        "TLS_AES_128_GCM_SHA256",
        "TLS_CHACHA20_POLY1305_SHA256",
    )
    assert ch.groups == ("X25519",)
    assert ch.key_shares == ("X25519",)
    assert "ecdsa_secp256r1_sha256" in ch.signature_algorithms
    assert ch.alpn == ("ocpp2.0.1",)
    assert ch.sni == "csms.evsim.test"
    assert not ch.offers_psk
    assert ch.ticket == 0  # an empty session_ticket extension: "send me one"


def test_the_server_hello_and_encrypted_extensions() -> None:
    sh = tm.parse_message(SERVER_HELLO_13)
    assert isinstance(sh, tm.ServerHello)
    assert (sh.version, sh.suite_name, sh.group, sh.retry, sh.accepts_psk) == (
        "1.3",
        "TLS_AES_256_GCM_SHA384",
        "X25519",
        False,
        False,
    )
    assert sh.legacy_version == 0x0303  # the real version is in supported_versions
    ee = tm.parse_message(ENCRYPTED_EXTENSIONS)
    assert isinstance(ee, tm.EncryptedExtensions)
    assert ee.alpn == "ocpp2.0.1"


def test_a_tls12_client_hello_offers_its_legacy_version_only() -> None:
    ch = tm.parse_message(CLIENT_HELLO_12)
    assert isinstance(ch, tm.ClientHello)
    assert ch.versions == ("1.2",)
    assert ch.key_shares == ()
    assert ch.suite_names[0] == "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"
    assert ch.groups[:2] == ("X25519", "secp256r1")


def test_alerts_and_unknown_code_points() -> None:
    assert tm.parse_alert(b"\x02\x46") == tm.Alert(2, 70)
    assert tm.Alert(2, 70).name == "protocol_version"
    assert tm.Alert(2, 48).name == "unknown_ca"
    assert isinstance(tm.parse_alert(b"\x02"), tm.Malformed)
    assert tm.name(tm.GROUPS, 0x1234) == "0x1234"
    assert tm.parse_message(b"\x14\x00\x00\x01\x00") == tm.OtherMessage(20)


@pytest.mark.parametrize("cut", [1, 4, 40, 100, len(CLIENT_HELLO_13) - 1])
def test_cut_short_messages_are_malformed(cut: int) -> None:
    assert isinstance(tm.parse_message(CLIENT_HELLO_13[:cut]), tm.Malformed)


def test_oversized_input_is_refused_before_reading() -> None:
    big = b"\x0b" + (tm.MAX_INPUT).to_bytes(3, "big") + bytes(tm.MAX_INPUT)
    assert isinstance(tm.parse_message(big), tm.Malformed)


def test_tickets_in_both_layouts() -> None:
    tls13 = (
        b"\x04\x00\x00\x11"
        + (7200).to_bytes(4, "big")
        + b"\x00\x00\x00\x01"
        + b"\x01\x00"
        + b"\x00\x03abc"
        + b"\x00\x00"
    )
    ticket = tm.parse_message(tls13, tls13=True)
    assert ticket == tm.NewSessionTicket(7200, 3, True)
    tls12 = b"\x04\x00\x00\x09" + (300).to_bytes(4, "big") + b"\x00\x03abc"
    assert tm.parse_message(tls12, tls13=False) == tm.NewSessionTicket(300, 3, False)


def _read_everything(msg: tm.Message) -> None:
    """Every derived field of a parsed message (they read extension bodies on demand)."""
    if isinstance(msg, tm.ClientHello):
        _ = (msg.versions, msg.suite_names, msg.groups, msg.key_shares, msg.signature_algorithms)
        _ = (msg.alpn, msg.sni, msg.offers_psk, msg.ticket, [e.name for e in msg.extensions])
    elif isinstance(msg, tm.ServerHello):
        _ = (msg.version, msg.suite_name, msg.group, msg.accepts_psk, msg.alpn)
    elif isinstance(msg, tm.EncryptedExtensions):
        _ = msg.alpn


@given(st.binary(max_size=600), st.sampled_from([None, True, False]))
def test_random_bytes_never_crash(data: bytes, tls13: bool | None) -> None:
    msg = tm.parse_message(data, tls13=tls13)
    _read_everything(msg)


@given(
    st.sampled_from(CAPTURED),
    st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=8),
    st.integers(0, 2000),
)
def test_mutated_real_messages_never_crash(base: bytes, flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(base)
    for pos, value in flips:
        data[pos % len(data)] = value
    msg = tm.parse_message(bytes(data[: max(cut, 1)]))
    _read_everything(msg)
    if isinstance(msg, tm.ClientHello):  # bounded by the input
        assert len(msg.suites) <= len(data) // 2 and len(msg.extensions) <= tm.MAX_ITEMS


def client_hello(extensions: list[tuple[int, bytes]]) -> bytes:
    """A ClientHello with a well-formed outer layout around ``extensions`` (whatever their bodies hold)."""
    exts = b"".join(
        code.to_bytes(2, "big") + len(body).to_bytes(2, "big") + body for code, body in extensions
    )
    body = (
        b"\x03\x03"
        + bytes(32)
        + b"\x00"
        + b"\x00\x02\x13\x01"
        + b"\x01\x00"
        + len(exts).to_bytes(2, "big")
        + exts
    )
    return b"\x01" + len(body).to_bytes(3, "big") + body


def test_a_broken_extension_body_reads_as_absent() -> None:
    msg = tm.parse_message(
        client_hello([(43, b"\x09\x03\x04"), (0, b"\x00\x10\x00"), (51, b"\x00\x08\x00\x1d")])
    )
    assert isinstance(msg, tm.ClientHello)
    assert (msg.versions, msg.sni, msg.key_shares) == ((), None, ())
    assert msg.suite_names == ("TLS_AES_128_GCM_SHA256",)


@given(st.lists(st.tuples(st.sampled_from(sorted(tm.EXTENSIONS)), st.binary(max_size=40)), max_size=6))
def test_hellos_with_arbitrary_extension_bodies_never_crash(extensions: list[tuple[int, bytes]]) -> None:
    msg = tm.parse_message(client_hello(extensions))
    assert isinstance(msg, tm.ClientHello)
    _read_everything(msg)
    server = tm.parse_message(b"\x02" + client_hello(extensions)[1:])  # the same bytes read as a ServerHello
    _read_everything(server)
