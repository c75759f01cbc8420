"""NTS-KE records (RFC 8915 §4): round trips, and hostile messages refused with a reason and an Error code."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evsim.nts.errors import KeProtocolError
from evsim.nts.records import (
    AEAD_AES_SIV_CMAC_256,
    AEAD_AES_SIV_CMAC_512,
    CRITICAL,
    MAX_COOKIES,
    NTPV4,
    ErrorCode,
    KeRequest,
    KeResponse,
    Record,
    RecordReader,
    RecordType,
    encode_records,
    error_message,
    exporter_context,
    negotiate,
    parse_request,
    parse_response,
)

records = st.builds(
    Record,
    rtype=st.integers(1, 0x7FFF),
    body=st.binary(max_size=64),
    critical=st.booleans(),
)
EOM = Record(RecordType.END_OF_MESSAGE, b"", critical=True)
hostnames = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40)


def read(data: bytes, *, server: bool, chunks: list[int] | None = None, **limits: int) -> RecordReader:
    reader = RecordReader(server=server, **limits)
    pos = 0
    for size in chunks or []:
        reader.feed(data[pos : pos + size])
        pos += size
    reader.feed(data[pos:])
    return reader


@given(st.lists(records, max_size=20), st.lists(st.integers(0, 50), max_size=20))
def test_records_round_trip_in_any_chunking(recs: list[Record], chunks: list[int]) -> None:
    reader = read(encode_records([*recs, EOM]), server=True, chunks=chunks)
    assert reader.complete and reader.records == recs


@given(
    st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=4),
    st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=4),
    st.none() | hostnames,
    st.none() | st.integers(0, 0xFFFF),
)
def test_request_round_trip(
    protocols: list[int], aeads: list[int], server: str | None, port: int | None
) -> None:
    request = KeRequest(tuple(protocols), tuple(aeads), server, port)
    reader = read(request.encode(), server=True)
    assert parse_request(reader.records) == request


@given(
    st.sampled_from([15, 16, 17]),
    st.lists(st.binary(min_size=1, max_size=200), min_size=1, max_size=MAX_COOKIES),
    st.none() | hostnames,
    st.none() | st.integers(0, 0xFFFF),
)
def test_response_round_trip(aead: int, cookies: list[bytes], server: str | None, port: int | None) -> None:
    response = KeResponse(NTPV4, aead, tuple(cookies), server, port)
    reader = read(response.encode(), server=False)
    assert parse_response(reader.records, offered_aeads=(15, 16, 17)) == response


@given(st.binary(max_size=300))
def test_garbage_is_refused_with_a_reason_or_waits(data: bytes) -> None:
    reader = RecordReader(server=True)
    try:
        reader.feed(data)
        if reader.complete:
            parse_request(reader.records)
        else:
            reader.eof()
    except KeProtocolError as exc:
        refused: KeProtocolError | None = exc
    else:
        refused = None
    assert refused is None or (refused.reason and refused.error_code in (None, 0, 1))


def test_huge_record_refused_from_its_header() -> None:
    reader = RecordReader(server=True, max_body=256)
    with pytest.raises(KeProtocolError) as info:
        reader.feed(struct.pack("!HH", RecordType.NEW_COOKIE, 60000))  # no body sent yet
    assert info.value.reason == "record_too_large" and info.value.error_code == ErrorCode.BAD_REQUEST


def test_message_too_large() -> None:
    reader = RecordReader(server=False, max_message=100, max_body=1000)
    with pytest.raises(KeProtocolError) as info:
        reader.feed(Record(RecordType.WARNING, b"x" * 200).encode())
    assert info.value.reason == "message_too_large" and info.value.error_code is None


def test_truncated_message_and_no_end_of_message() -> None:
    data = KeRequest().encode()
    for cut in range(len(data)):
        reader = read(data[:cut], server=True)
        assert not reader.complete
        with pytest.raises(KeProtocolError) as info:
            reader.eof()
        assert info.value.reason == "no_end_of_message"


def test_data_after_end_of_message() -> None:
    with pytest.raises(KeProtocolError) as info:
        read(KeRequest().encode() + b"\0", server=True)
    assert info.value.reason == "data_after_end_of_message"
    reader = read(KeRequest().encode(), server=True)
    with pytest.raises(KeProtocolError):
        reader.feed(b"more")


@pytest.mark.parametrize(
    "eom", [Record(0, b"", critical=False), Record(0, b"\0\0", critical=True)], ids=["not-critical", "body"]
)
def test_bad_end_of_message(eom: Record) -> None:
    with pytest.raises(KeProtocolError) as info:
        read(encode_records([eom]), server=True)
    assert info.value.reason == "bad_end_of_message"


NEXT = Record(RecordType.NEXT_PROTOCOL, b"\0\0", critical=True)
AEAD = Record(RecordType.AEAD_ALGORITHM, b"\0\x0f", critical=True)


@pytest.mark.parametrize(
    ("recs", "reason", "code"),
    [
        ([AEAD], "no_next_protocol", 1),
        ([NEXT], "no_aead_record", 1),
        ([NEXT, NEXT, AEAD], "duplicate_record", 1),
        ([NEXT, AEAD, AEAD], "duplicate_record", 1),
        ([Record(1, b"\0\0", critical=False), AEAD], "bad_record", 1),
        ([Record(1, b"\0", critical=True), AEAD], "bad_record", 1),
        ([NEXT, Record(4, b"\0\x0f\0", critical=True)], "bad_record", 1),
        ([NEXT, AEAD, Record(0x4001, b"", critical=True)], "unrecognized_critical_record", 0),
        ([NEXT, AEAD, Record(RecordType.ERROR, b"\0\0", critical=True)], "unexpected_record", 1),
        ([NEXT, AEAD, Record(RecordType.WARNING, b"\0\0")], "unexpected_record", 1),
        ([NEXT, AEAD, Record(RecordType.NEW_COOKIE, b"c")], "unexpected_record", 1),
        ([NEXT, AEAD, Record(RecordType.PORT, b"\0")], "bad_port_record", 1),
        ([NEXT, AEAD, Record(RecordType.SERVER, b"a b")], "bad_server_record", 1),
        ([NEXT, AEAD, Record(RecordType.SERVER, b"")], "bad_server_record", 1),
    ],
)
def test_bad_requests(recs: list[Record], reason: str, code: int) -> None:
    with pytest.raises(KeProtocolError) as info:
        parse_request(recs)
    assert info.value.reason == reason and info.value.error_code == code


def test_unknown_non_critical_records_are_ignored() -> None:
    assert parse_request([NEXT, Record(0x4001, b"hello"), AEAD]) == KeRequest()


def test_negotiation_picks_the_clients_first_supported_aead() -> None:
    req = KeRequest(aead_algorithms=(30, AEAD_AES_SIV_CMAC_512, AEAD_AES_SIV_CMAC_256))
    assert negotiate(req, (15, 17)) == (NTPV4, 17)
    assert negotiate(req, (15,)) == (NTPV4, 15)
    assert negotiate(KeRequest(aead_algorithms=(30, 99)), (15,)) == (NTPV4, None)
    assert negotiate(KeRequest(protocols=(0x8000,)), (15,)) == (None, None)
    # an empty AEAD record answers "none of them": no cookies follow
    assert KeResponse(NTPV4, None).records()[1] == Record(RecordType.AEAD_ALGORITHM, b"")


def response(*extra: Record, aead: bytes = b"\0\x0f", cookies: int = 1) -> list[Record]:
    return [
        NEXT,
        Record(RecordType.AEAD_ALGORITHM, aead),
        *(Record(RecordType.NEW_COOKIE, b"c" * 8) for _ in range(cookies)),
        *extra,
    ]


@pytest.mark.parametrize(
    ("recs", "reason"),
    [
        ([Record(RecordType.ERROR, b"\0\x01", critical=True)], "server_error:1"),
        (response(Record(RecordType.WARNING, b"\0\x05")), "server_warning:5"),
        (response(Record(0x4002, b"", critical=True)), "unrecognized_critical_record"),
        ([Record(1, b"", critical=True)], "no_common_protocol"),
        ([Record(1, b"\0\x01", critical=True), *response()[1:]], "unexpected_protocol"),
        ([Record(1, b"\0\0\0\0", critical=True), *response()[1:]], "unexpected_protocol"),
        (response(aead=b""), "no_common_aead"),
        (response(aead=b"\0\x10"), "unexpected_aead"),
        (response(aead=b"\0\x0f\0\x0f"), "unexpected_aead"),
        (response(cookies=0), "no_cookies"),
        (response(Record(RecordType.NEW_COOKIE, b"")), "bad_cookie"),
        (response(Record(RecordType.NEW_COOKIE, b"x" * 600)), "bad_cookie"),
        (response(Record(RecordType.PORT, b"\0\0\0")), "bad_port_record"),
        (response(Record(RecordType.SERVER, b"\x00bad")), "bad_server_record"),
        (response()[1:], "no_next_protocol"),
    ],
)
def test_bad_responses(recs: list[Record], reason: str) -> None:
    with pytest.raises(KeProtocolError) as info:
        parse_response(recs, offered_aeads=(15,))
    assert info.value.reason == reason and info.value.error_code is None


def test_response_keeps_at_most_eight_cookies() -> None:
    assert len(parse_response(response(cookies=12)).cookies) == MAX_COOKIES


def test_error_message_and_exporter_context() -> None:
    reader = read(error_message(ErrorCode.UNRECOGNIZED_CRITICAL_RECORD), server=False)
    assert reader.records == [Record(RecordType.ERROR, b"\0\0", critical=True)]
    assert exporter_context(NTPV4, 15, False) == b"\0\0\0\x0f\0"
    assert exporter_context(NTPV4, 15, True) == b"\0\0\0\x0f\x01"
    assert KeRequest().encode()[:2] == struct.pack("!H", CRITICAL | RecordType.NEXT_PROTOCOL)
