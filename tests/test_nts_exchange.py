"""NTPv4 with NTS extension fields, sans-IO: the client association against the server core."""

from __future__ import annotations

import random
import struct
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evsim.nts.cookies import MasterKeys
from evsim.nts.errors import NtpRejected
from evsim.nts.exchange import (
    KISS_NTSN,
    KissOfDeath,
    NtpSample,
    NtsAssociation,
    NtsServerCore,
    authenticator_field,
)
from evsim.nts.ntp import (
    FieldType,
    Mode,
    NtpHeader,
    encode_field,
    from_ntp,
    ntp_diff,
    offset_delay,
    parse_packet,
    to_ntp,
)
from evsim.nts.records import MAX_COOKIES

T = 1_906_000_000.0  # 2030


def entropy(seed: int = 1) -> Callable[[int], bytes]:
    rng = random.Random(seed)
    return rng.randbytes


def pair(
    *, cookies: int = MAX_COOKIES, aead: int = 15, seed: int = 1
) -> tuple[NtsAssociation, NtsServerCore]:
    keys = MasterKeys(entropy=entropy(seed))
    length = {15: 32, 16: 48, 17: 64}[aead]
    c2s, s2c = b"c" * length, b"s" * length
    association = NtsAssociation(
        aead, c2s, s2c, [keys.seal(aead, c2s, s2c) for _ in range(cookies)], entropy=entropy(seed + 1)
    )
    return association, NtsServerCore(keys, entropy=entropy(seed + 2))


def exchange(a: NtsAssociation, s: NtsServerCore, *, offset: float = 0.25, delay: float = 0.010) -> NtpSample:
    request = a.request(T)
    reply = s.respond(request, received=T + offset + delay / 2, transmit=T + offset + delay / 2 + 0.001)
    assert reply.kind == "time" and len(reply.data) <= len(request)
    sample = a.receive(reply.data, T + delay + 0.001)
    assert isinstance(sample, NtpSample)
    return sample


@given(st.floats(-1e6, 1e6), st.floats(0.0, 2.0), st.sampled_from([15, 16, 17]))
def test_offset_and_delay(offset: float, delay: float, aead: int) -> None:
    a, s = pair(aead=aead)
    sample = exchange(a, s, offset=offset, delay=delay)
    assert sample.offset == pytest.approx(offset, abs=1e-6)
    assert sample.delay == pytest.approx(delay, abs=1e-6)
    assert a.cookies == MAX_COOKIES and sample.stratum == 1


@given(st.floats(0, 4e9))
def test_timestamps_round_trip(unix: float) -> None:
    assert from_ntp(to_ntp(unix)) == pytest.approx(unix, abs=1e-6)


def test_era_and_diff() -> None:
    after_2036 = 2_100_000_000.5
    assert from_ntp(to_ntp(after_2036)) == after_2036
    assert to_ntp(after_2036) >> 63 == 0  # era 1
    assert ntp_diff(to_ntp(after_2036), to_ntp(after_2036 - 10)) == pytest.approx(10)
    assert offset_delay(to_ntp(0.0), to_ntp(1.0), to_ntp(1.0), to_ntp(0.5)) == pytest.approx((0.75, 0.5))


@given(
    st.builds(
        NtpHeader,
        mode=st.integers(0, 7),
        version=st.integers(0, 7),
        leap=st.integers(0, 3),
        stratum=st.integers(0, 255),
        poll=st.integers(-128, 127),
        precision=st.integers(-128, 127),
        root_delay=st.integers(0, 2**32 - 1),
        root_dispersion=st.integers(0, 2**32 - 1),
        reference_id=st.binary(min_size=4, max_size=4),
        reference_ts=st.integers(0, 2**64 - 1),
        origin_ts=st.integers(0, 2**64 - 1),
        receive_ts=st.integers(0, 2**64 - 1),
        transmit_ts=st.integers(0, 2**64 - 1),
    )
)
def test_header_round_trip(header: NtpHeader) -> None:
    assert NtpHeader.decode(header.encode()) == header


def test_cookies_single_use_and_replenished() -> None:
    a, s = pair(cookies=3)
    sent: list[bytes] = []
    for _ in range(12):
        request = a.request(T)
        cookie = [f for f in parse_packet(request).fields if f.ftype == FieldType.COOKIE]
        sent.append(cookie[0].value)
        placeholders = [f for f in parse_packet(request).fields if f.ftype == FieldType.COOKIE_PLACEHOLDER]
        assert all(p.length == cookie[0].length and not p.value.strip(b"\0") for p in placeholders)
        reply = s.respond(request, received=T, transmit=T)
        assert len(reply.data) == len(request)  # no amplification
        a.receive(reply.data, T)
    assert len(set(sent)) == len(sent)  # never the same cookie twice
    assert a.cookies == MAX_COOKIES


def test_replayed_response_and_late_response_dropped() -> None:
    a, s = pair()
    first = a.request(T)
    first_reply = s.respond(first, received=T, transmit=T).data
    second = a.request(T + 1)  # replaces the first: its answer is late now
    with pytest.raises(NtpRejected) as info:
        a.receive(first_reply, T + 1)
    assert info.value.reason == "origin_mismatch"
    reply = s.respond(second, received=T + 1, transmit=T + 1).data
    assert isinstance(a.receive(reply, T + 1), NtpSample)
    with pytest.raises(NtpRejected) as info:
        a.receive(reply, T + 1)  # the same answer again
    assert info.value.reason == "no_outstanding_request"


def test_replayed_request_is_answered_but_useless() -> None:
    a, s = pair()
    request = a.request(T)
    one, two = s.respond(request, received=T, transmit=T), s.respond(request, received=T, transmit=T)
    assert one.kind == two.kind == "time" and one.data != two.data  # fresh cookies each time
    assert isinstance(a.receive(one.data, T), NtpSample)
    with pytest.raises(NtpRejected):
        a.receive(two.data, T)


def test_uid_mismatch_rejected() -> None:
    a, s = pair()
    request = bytearray(a.request(T))
    reply = bytearray(s.respond(bytes(request), received=T, transmit=T).data)
    reply[52] ^= 1  # first octet of the echoed Unique Identifier
    with pytest.raises(NtpRejected) as info:
        a.receive(bytes(reply), T)
    assert info.value.reason == "uid_mismatch"


@given(st.data())
def test_any_altered_response_octet_is_rejected(data: st.DataObject) -> None:
    a, s = pair()
    request = a.request(T)
    reply = bytearray(s.respond(request, received=T, transmit=T).data)
    i = data.draw(st.integers(0, len(reply) - 1))
    reply[i] ^= data.draw(st.integers(1, 255))
    with pytest.raises(NtpRejected):
        a.receive(bytes(reply), T)
    assert a.outstanding  # a forgery does not consume the request


@given(st.data())
def test_any_altered_request_octet_is_refused(data: st.DataObject) -> None:
    a, s = pair()
    request = bytearray(a.request(T))
    i = data.draw(st.integers(0, len(request) - 1))
    request[i] ^= data.draw(st.integers(1, 255))
    try:
        reply = s.respond(bytes(request), received=T, transmit=T)
    except NtpRejected:
        return
    assert reply.kind == "nak"


@given(st.binary(max_size=600))
def test_garbage_never_crashes_either_side(blob: bytes) -> None:
    a, s = pair()
    a.request(T)
    for call in (lambda: s.respond(blob, received=T, transmit=T), lambda: a.receive(blob, T)):
        reason = "answered"
        try:
            call()
        except NtpRejected as exc:
            reason = exc.reason
        assert reason


def test_ntsn_drops_the_cookies() -> None:
    a, s = pair()
    foreign, _ = pair(seed=99)  # cookies of another server's master keys
    request = foreign.request(T)
    reply = s.respond(request, received=T, transmit=T)
    assert reply.kind == "nak"
    header = parse_packet(reply.data).header
    assert header.stratum == 0 and header.reference_id == KISS_NTSN
    assert foreign.receive(reply.data, T) == KissOfDeath("NTSN", authenticated=False)
    assert foreign.needs_ke and foreign.naks == 1
    with pytest.raises(NtpRejected) as info:
        foreign.request(T)
    assert info.value.reason == "no_cookies"
    assert a.cookies == MAX_COOKIES


def test_forged_ntsn_with_wrong_uid_or_origin_is_ignored() -> None:
    a, _ = pair()
    request = parse_packet(a.request(T))
    uid = next(f for f in request.fields if f.ftype == FieldType.UNIQUE_IDENTIFIER).value
    kod = NtpHeader(mode=Mode.SERVER, stratum=0, reference_id=KISS_NTSN, origin_ts=request.header.transmit_ts)
    with pytest.raises(NtpRejected) as info:
        a.receive(kod.encode() + encode_field(FieldType.UNIQUE_IDENTIFIER, b"x" * 32), T)
    assert info.value.reason == "uid_mismatch"
    wrong_origin = NtpHeader(mode=Mode.SERVER, stratum=0, reference_id=KISS_NTSN, origin_ts=1)
    with pytest.raises(NtpRejected) as info:
        a.receive(wrong_origin.encode() + encode_field(FieldType.UNIQUE_IDENTIFIER, uid), T)
    assert info.value.reason == "origin_mismatch"
    assert a.cookies == MAX_COOKIES - 1 and not a.needs_ke
    # an unauthenticated kiss-o'-death with another code does not count either
    rate = NtpHeader(mode=Mode.SERVER, stratum=0, reference_id=b"RATE", origin_ts=request.header.transmit_ts)
    with pytest.raises(NtpRejected) as info:
        a.receive(rate.encode() + encode_field(FieldType.UNIQUE_IDENTIFIER, uid), T)
    assert info.value.reason == "no_authenticator"


def test_master_key_rotation() -> None:
    keys = MasterKeys(keep=2, rotate_s=100.0, entropy=entropy(5), now=0.0)
    server = NtsServerCore(keys, entropy=entropy(6))
    c2s, s2c = b"c" * 32, b"s" * 32
    a = NtsAssociation(15, c2s, s2c, [keys.seal(15, c2s, s2c) for _ in range(8)], entropy=entropy(7))
    assert not keys.maybe_rotate(99.0)
    assert keys.maybe_rotate(100.0) and keys.next_rotation() == 200.0
    # one rotation: the cookies still open, and the new ones are under the new key
    reply = server.respond(a.request(T), received=T, transmit=T)
    assert reply.kind == "time"
    a.receive(reply.data, T)
    keys.rotate()  # the first key is forgotten now
    reply = server.respond(a.request(T), received=T, transmit=T)
    assert reply.kind == "nak"
    assert len(keys.key_ids) == 2


def test_cookie_tampering_and_foreign_cookies_do_not_open() -> None:
    keys = MasterKeys(entropy=entropy(8))
    cookie = keys.seal(15, b"c" * 32, b"s" * 32)
    assert len(cookie) % 4 == 0
    content = keys.open(cookie)
    assert content is not None and content.c2s == b"c" * 32 and content.s2c == b"s" * 32
    for i in range(len(cookie)):
        bad = bytearray(cookie)
        bad[i] ^= 0x40
        assert keys.open(bytes(bad)) is None
    assert keys.open(b"") is None and keys.open(cookie[:30]) is None
    assert MasterKeys(entropy=entropy(9)).open(cookie) is None


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda p: p[:47], "truncated"),
        (lambda p: p + b"\0\0", "bad_extension_field"),
        (lambda p: p[:48] + struct.pack("!HH", 0x0104, 3) + p[52:], "bad_extension_field"),
        (lambda p: p + encode_field(FieldType.UNIQUE_IDENTIFIER, b"u" * 32), "bad_authenticator"),
        (lambda p: bytes([p[0] & ~7 | 4]) + p[1:], "not_a_request"),
        (lambda p: bytes([p[0] & ~0x38 | 0x18]) + p[1:], "bad_version"),
        (lambda p: p + b"\0" * 5000, "too_large"),
    ],
)
def test_malformed_requests_get_no_answer(mutate: Callable[[bytes], bytes], reason: str) -> None:
    a, s = pair()
    with pytest.raises(NtpRejected) as info:
        s.respond(mutate(a.request(T)), received=T, transmit=T)
    assert info.value.reason == reason


def build_request(*fields: bytes) -> bytes:
    return NtpHeader(mode=Mode.CLIENT, transmit_ts=to_ntp(T)).encode() + b"".join(fields)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ((), "no_authenticator"),
        ((encode_field(FieldType.AUTHENTICATOR, b"\0" * 36),), "no_unique_identifier"),
        (
            (
                encode_field(FieldType.UNIQUE_IDENTIFIER, b"u" * 8),
                encode_field(FieldType.AUTHENTICATOR, b"\0" * 36),
            ),
            "short_unique_identifier",
        ),
        (
            (
                encode_field(FieldType.UNIQUE_IDENTIFIER, b"u" * 32),
                encode_field(FieldType.AUTHENTICATOR, b"\0" * 36),
            ),
            "no_cookie",
        ),
        (
            (
                encode_field(FieldType.UNIQUE_IDENTIFIER, b"u" * 32),
                encode_field(FieldType.COOKIE, b"k" * 104),
                encode_field(FieldType.COOKIE, b"k" * 104),
                encode_field(FieldType.AUTHENTICATOR, b"\0" * 36),
            ),
            "duplicate_cookie",
        ),
        (
            (
                encode_field(FieldType.UNIQUE_IDENTIFIER, b"u" * 32),
                encode_field(FieldType.COOKIE, b"k" * 104),
                encode_field(FieldType.COOKIE_PLACEHOLDER, b"\0" * 64),
                encode_field(FieldType.AUTHENTICATOR, b"\0" * 36),
            ),
            "bad_placeholder",
        ),
    ],
)
def test_requests_missing_fields(fields: tuple[bytes, ...], reason: str) -> None:
    _, s = pair()
    with pytest.raises(NtpRejected) as info:
        s.respond(build_request(*fields), received=T, transmit=T)
    assert info.value.reason == reason


def test_bad_authenticator_lengths_get_a_nak() -> None:
    a, s = pair()
    request = a.request(T)
    for value in (b"\0\x08\0\x10" + b"\0" * 24, b"\0\x10\0\x08" + b"\0" * 24, b"\0\x10\x01\x00" + b"\0" * 32):
        bad = request[:-40] + encode_field(FieldType.AUTHENTICATOR, value)
        assert s.respond(bad, received=T, transmit=T).kind == "nak"


def signed_response(a: NtsAssociation, request: bytes, **header: int | bytes) -> bytes:
    """A response to ``request`` with header fields of our choice, authenticated with the S2C key."""
    packet = parse_packet(request)
    uid = next(f for f in packet.fields if f.ftype == FieldType.UNIQUE_IDENTIFIER).value
    fields: dict[str, int | bytes] = {
        "origin_ts": packet.header.transmit_ts,
        "receive_ts": 1,
        "transmit_ts": 1,
    }
    fields.update(header)
    head = NtpHeader(mode=Mode.SERVER, **fields).encode() + encode_field(FieldType.UNIQUE_IDENTIFIER, uid)  # type: ignore[arg-type]
    return head + authenticator_field(b"s" * 32, head, b"", b"n" * 16)


def test_authenticated_kiss_codes_and_unsynchronized_servers() -> None:
    a, _ = pair()
    deny = a.receive(signed_response(a, a.request(T), stratum=0, reference_id=b"DENY"), T)
    assert deny == KissOfDeath("DENY", authenticated=True) and a.cookies == MAX_COOKIES - 1
    ntsn = a.receive(signed_response(a, a.request(T), stratum=0, reference_id=KISS_NTSN), T)
    assert ntsn == KissOfDeath("NTSN", authenticated=True) and a.cookies == 0
    b, _ = pair()
    for header, reason in (({"stratum": 1, "leap": 3}, "unsynchronized"), ({"stratum": 16}, "bad_stratum")):
        with pytest.raises(NtpRejected) as info:
            b.receive(signed_response(b, b.request(T), **header), T)
        assert info.value.reason == reason
