"""Hypothesis strategies shared by the tests (``st.builds`` on the attrs value classes)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from evsim.ocpp.framing import (
    ERROR_CODES,
    MAX_ERROR_DESCRIPTION_LENGTH,
    MAX_MESSAGE_ID_LENGTH,
    Call,
    CallError,
    CallResult,
    CallResultError,
    Frame,
    Send,
)

#: Text orjson can encode: no lone surrogates.
json_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=20)

#: Numbers that survive a JSON round trip unchanged (orjson handles 64-bit integers; NaN/inf are not JSON).
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | json_text
)

#: Any JSON value.
json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(json_text, children, max_size=4),
    max_leaves=12,
)

#: A JSON object (every OCPP payload is one).
payloads: st.SearchStrategy[dict[str, Any]] = st.dictionaries(json_text, json_values, max_size=5)

#: Valid message ids: any string of at most 36 characters (OCPP-J 2.0.1 Table 4).
message_ids = st.text(alphabet=st.characters(codec="utf-8"), max_size=MAX_MESSAGE_ID_LENGTH)

actions = st.sampled_from(["BootNotification", "Heartbeat", "StatusNotification", "Authorize"]) | json_text
error_codes = st.sampled_from(sorted(ERROR_CODES)) | json_text
descriptions = st.text(alphabet=st.characters(codec="utf-8"), max_size=MAX_ERROR_DESCRIPTION_LENGTH)

calls = st.builds(Call, message_id=message_ids, action=actions, payload=payloads)
call_results = st.builds(CallResult, message_id=message_ids, payload=payloads)
call_errors = st.builds(
    CallError, message_id=message_ids, error_code=error_codes, description=descriptions, details=payloads
)
call_result_errors = st.builds(
    CallResultError,
    message_id=message_ids,
    error_code=error_codes,
    description=descriptions,
    details=payloads,
)
sends = st.builds(Send, message_id=message_ids, action=actions, payload=payloads)

#: OCPP 2.0.1 frames.
frames_201: st.SearchStrategy[Frame] = st.one_of(calls, call_results, call_errors)
#: OCPP 2.1 frames (all five types).
frames_21: st.SearchStrategy[Frame] = st.one_of(calls, call_results, call_errors, call_result_errors, sends)


def _frame_shaped() -> st.SearchStrategy[list[Any]]:
    """JSON arrays that look a lot like frames (type numbers 0-9, ids, actions, payloads, any arity)."""
    head = st.integers(min_value=0, max_value=9) | json_scalars
    element = message_ids | actions | payloads | json_values
    return st.builds(lambda h, rest: [h, *rest], head, st.lists(element, max_size=5))


#: JSON values biased towards almost-valid frames, for robustness tests.
frame_like_values: st.SearchStrategy[Any] = _frame_shaped() | json_values
