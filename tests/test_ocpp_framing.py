"""OCPP-J framing: golden frames, every malformed shape, property round trips."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evsim.errors import ConfigError, EvsimError, FrameError, OcppError
from evsim.ocpp.framing import (
    Call,
    CallError,
    CallResult,
    CallResultError,
    Frame,
    FrameDecodeError,
    MessageType,
    Send,
    decode_call_or_result,
    decode_frame,
    dumps,
    encode_frame,
    loads,
    utf8_length,
)
from evsim.ocpp.versions import OCPP_VERSIONS, choose_subprotocol, subprotocol_for, version_for
from tests import strategies

GOLDEN: list[tuple[Frame, str]] = [
    (
        Call("19223201", "BootNotification", {"reason": "PowerUp"}),
        '[2,"19223201","BootNotification",{"reason":"PowerUp"}]',
    ),
    (CallResult("19223201", {"status": "Accepted"}), '[3,"19223201",{"status":"Accepted"}]'),
    (CallError("162376037", "NotSupported", "no", {}), '[4,"162376037","NotSupported","no",{}]'),
    (CallError("1", "GenericError"), '[4,"1","GenericError","",{}]'),
    (CallResultError("7", "FormatViolation", "bad", {"a": 1}), '[5,"7","FormatViolation","bad",{"a":1}]'),
    (Send("8", "NotifyPeriodicEventStream", {"id": 1}), '[6,"8","NotifyPeriodicEventStream",{"id":1}]'),
]


@pytest.mark.parametrize(("frame", "text"), GOLDEN)
def test_golden_encode_decode(frame: Frame, text: str) -> None:
    assert encode_frame(frame) == text
    assert decode_frame(text, version="2.1") == frame


def test_message_type_numbers() -> None:
    assert [int(t) for t in MessageType] == [2, 3, 4, 5, 6]
    assert MessageType(5) is MessageType.CALLRESULTERROR
    assert MessageType(6) is MessageType.SEND


def test_error_description_truncated_to_255() -> None:
    text = encode_frame(CallError("1", "GenericError", "x" * 300))
    assert decode_frame(text, version="2.0.1") == CallError("1", "GenericError", "x" * 255)


def test_encode_rejects_non_json() -> None:
    with pytest.raises(TypeError):
        encode_frame(Call("1", "Heartbeat", {"a": object()}))
    with pytest.raises(TypeError):
        encode_frame("not a frame")  # type: ignore[arg-type]


def test_json_helpers() -> None:
    assert loads(dumps({"a": [1, 2.5, None, "é"]})) == {"a": [1, 2.5, None, "é"]}
    assert utf8_length("abc") == 3
    assert utf8_length("é") == 2
    assert utf8_length("\ud800") == 3  # lone surrogate counted as WTF-8, never raises


def _decode_error(text: str, version: str = "2.0.1", **kwargs: Any) -> FrameDecodeError:
    with pytest.raises(FrameDecodeError) as info:
        decode_frame(text, version=version, **kwargs)
    return info.value


# (text, error code, message id to answer with, reply?) for OCPP 2.0.1
MALFORMED_201: list[tuple[str, str, str, bool]] = [
    ("not json", "RpcFrameworkError", "-1", True),
    ("[2,", "RpcFrameworkError", "-1", True),
    ('{"a": 1}', "RpcFrameworkError", "-1", True),
    ("[]", "RpcFrameworkError", "-1", True),
    ('"x"', "RpcFrameworkError", "-1", True),
    ('["2","1","Heartbeat",{}]', "RpcFrameworkError", "1", True),
    ('[true,"1","Heartbeat",{}]', "RpcFrameworkError", "1", True),
    ("[2]", "RpcFrameworkError", "-1", True),
    ('[2,1,"Heartbeat",{}]', "RpcFrameworkError", "-1", True),
    ('[2,"' + "x" * 37 + '","Heartbeat",{}]', "RpcFrameworkError", "-1", True),
    ('[2,"1","Heartbeat"]', "RpcFrameworkError", "1", True),
    ('[2,"1","Heartbeat",{},{}]', "RpcFrameworkError", "1", True),
    ('[2,"1",7,{}]', "RpcFrameworkError", "1", True),
    ('[2,"1","Heartbeat",[]]', "FormatViolation", "1", True),
    ('[2,"1","Heartbeat",null]', "FormatViolation", "1", True),
    ('[9,"1",{}]', "MessageTypeNotSupported", "1", True),
    ('[5,"1","GenericError","",{}]', "MessageTypeNotSupported", "1", True),
    ('[6,"1","NotifyPeriodicEventStream",{}]', "MessageTypeNotSupported", "1", True),
    # broken answers are never answered on 2.0.1
    ('[3,"1"]', "RpcFrameworkError", "1", False),
    ('[3,"1",[]]', "FormatViolation", "1", False),
    ("[3,1,{}]", "RpcFrameworkError", "-1", False),
    ('[4,"1","GenericError",{}]', "RpcFrameworkError", "1", False),
    ('[4,"1",5,"",{}]', "RpcFrameworkError", "1", False),
    ('[4,"1","GenericError","",[]]', "FormatViolation", "1", False),
]


@pytest.mark.parametrize(("text", "code", "mid", "reply"), MALFORMED_201)
def test_malformed_201(text: str, code: str, mid: str, reply: bool) -> None:
    err = _decode_error(text)
    assert isinstance(err, FrameError)
    assert (err.error_code, err.message_id, err.reply) == (code, mid, reply)


MALFORMED_21: list[tuple[str, str, str, bool]] = [
    ('[9,"1",{}]', "MessageTypeNotSupported", "1", False),  # 2.1: unknown types are ignored
    ('[1,"1"]', "MessageTypeNotSupported", "1", False),
    ('[3,"1",[]]', "FormatViolation", "1", True),  # answered with CALLRESULTERROR
    ("[3,1,{}]", "RpcFrameworkError", "-1", False),  # ... but not without an id
    ('[5,"1","GenericError",""]', "RpcFrameworkError", "1", False),
    ('[6,"1","NotifyPeriodicEventStream"]', "RpcFrameworkError", "1", False),
    ('[6,"1","NotifyPeriodicEventStream",1]', "FormatViolation", "1", False),
]


@pytest.mark.parametrize(("text", "code", "mid", "reply"), MALFORMED_21)
def test_malformed_21(text: str, code: str, mid: str, reply: bool) -> None:
    err = _decode_error(text, version="2.1")
    assert (err.error_code, err.message_id, err.reply) == (code, mid, reply)


def test_message_type_recorded() -> None:
    assert _decode_error('[3,"1",[]]', version="2.1").message_type is MessageType.CALLRESULT
    assert _decode_error('[2,"1","A",1]').message_type is MessageType.CALL
    assert _decode_error("nope").message_type is None


def test_frame_too_large_is_refused_without_parsing() -> None:
    frame = encode_frame(Call("1", "DataTransfer", {"data": "x" * 100}))
    assert decode_frame(frame, version="2.0.1", max_size=len(frame)) is not None
    err = _decode_error(frame, max_size=len(frame) - 1)
    assert (err.error_code, err.message_id, err.reply) == ("FormatViolation", "-1", True)
    assert "too large" in err.description
    # the limit is in UTF-8 bytes, not characters; garbage beyond the limit is not even parsed
    err = _decode_error("é" * 60 + "garbage", max_size=100)
    assert err.error_code == "FormatViolation"


def test_id_of_36_chars_accepted() -> None:
    mid = "x" * 36
    assert decode_frame(f'[2,"{mid}","Heartbeat",{{}}]', version="2.0.1") == Call(mid, "Heartbeat", {})


@given(strategies.frames_21)
def test_round_trip_21(frame: Frame) -> None:
    assert decode_frame(encode_frame(frame), version="2.1") == frame


@given(strategies.frames_201)
def test_round_trip_201(frame: Frame) -> None:
    assert decode_frame(encode_frame(frame), version="2.0.1") == frame


DOCUMENTED_CODES = {"RpcFrameworkError", "FormatViolation", "MessageTypeNotSupported"}


def _decode_only_documented_errors(text: str, version: str) -> None:
    error: FrameError | None = None
    try:
        frame = decode_frame(text, version=version)
    except FrameError as exc:
        error = exc
    else:
        assert isinstance(frame, Call | CallResult | CallError | CallResultError | Send)
    if error is not None:
        assert error.error_code in DOCUMENTED_CODES
        assert len(error.message_id) <= 36


@given(st.text(), st.sampled_from(["2.0.1", "2.1"]))
def test_arbitrary_text_never_raises_undocumented(text: str, version: str) -> None:
    _decode_only_documented_errors(text, version)


@given(strategies.frame_like_values, st.sampled_from(["2.0.1", "2.1"]))
def test_arbitrary_json_never_raises_undocumented(value: Any, version: str) -> None:
    try:
        text = dumps(value)
    except TypeError:  # e.g. nesting orjson refuses to encode
        return
    _decode_only_documented_errors(text, version)


def test_errors_are_evsim_errors() -> None:
    assert isinstance(_decode_error("x"), EvsimError)


# ---- versions and subprotocols (evsim/ocpp/versions.py) ------------------------------------------------


def test_subprotocol_mapping_both_ways() -> None:
    assert OCPP_VERSIONS == ("2.0.1", "2.1")
    assert [subprotocol_for(v) for v in OCPP_VERSIONS] == ["ocpp2.0.1", "ocpp2.1"]
    assert [version_for(subprotocol_for(v)) for v in OCPP_VERSIONS] == list(OCPP_VERSIONS)
    with pytest.raises(OcppError) as info:
        version_for("ocpp1.6")
    assert info.value.error_code == "ProtocolError"
    with pytest.raises(ConfigError):
        subprotocol_for("1.6")


@pytest.mark.parametrize(
    ("offered", "supported", "chosen"),
    [
        (["ocpp2.1", "ocpp2.0.1"], ["ocpp2.0.1", "ocpp2.1"], "ocpp2.0.1"),  # the server's preference wins
        (["ocpp2.0.1", "ocpp2.1"], ["ocpp2.1", "ocpp2.0.1"], "ocpp2.1"),
        (["ocpp1.6", " ocpp2.0.1"], ["2.1", "2.0.1"], "ocpp2.0.1"),  # versions are accepted too
        (["ocpp1.6"], ["ocpp2.1", "ocpp2.0.1"], None),
        ([], ["ocpp2.1"], None),
    ],
)
def test_choose_subprotocol(offered: list[str], supported: list[str], chosen: str | None) -> None:
    assert choose_subprotocol(offered, supported) == chosen


@pytest.mark.parametrize(
    "text",
    [
        '[2,"1","Heartbeat",{}]',
        '[3,"1",{"currentTime":"2024-01-01T00:00:00Z"}]',
        '[4,"1","GenericError","x",{}]',
        '[2,"1","Heartbeat",[]]',
        '[3,"1",{},1]',
        '[6,"1","NotifyPeriodicEventStream",{}]',
        "[3," + '"' + "x" * 37 + '"' + ",{}]",
    ],
)
def test_the_receive_path_decodes_as_decode_frame(text: str) -> None:
    """decode_call_or_result: a well-formed CALL or CALLRESULT as its list, anything else as decode_frame."""
    for version in ("2.0.1", "2.1"):
        expected: Frame | FrameDecodeError
        try:
            expected = decode_frame(text, version=version)
        except FrameDecodeError as exc:
            expected = exc
        if isinstance(expected, FrameDecodeError):
            with pytest.raises(FrameDecodeError) as raised:
                decode_call_or_result(text, version=version)
            assert (raised.value.error_code, raised.value.message_id) == (
                expected.error_code,
                expected.message_id,
            )
            continue
        fast = decode_call_or_result(text, version=version)
        if isinstance(expected, Call):
            assert fast == [2, expected.message_id, expected.action, expected.payload]
        elif isinstance(expected, CallResult):
            assert fast == [3, expected.message_id, expected.payload]
        else:
            assert fast == expected
