"""Valid ranges of the numbers a node acts on, and how a value outside them is refused (sans-IO).

Every number a peer sends is hostile until checked: the OCA schemas only say "integer" or "number" for almost
all of them (no ``minimum``/``maximum`` in 2.0.1), and JSON gives integers up to 2**64 and floats up to
1.8e308 (orjson refuses NaN and infinities, but a payload built in memory need not). One table (:data:`BOUNDS`)
names the range of each field the station, the CSMS or the Local Controller acts on; the callers decide what a
refusal means, as OCPP says:

* a number in an incoming **CALL** (a CSMS reading StatusNotification / TransactionEvent): CALLERROR
  ``PropertyConstraintViolation`` (:meth:`Bound.check` raises :class:`OutOfRange`, whose ``error_code`` it is);
* a **SetVariables** value (a string): ``Rejected`` with ``attributeStatusInfo.reasonCode``
  (:meth:`Bound.parse`; ``InvalidValue``, ``ValueTooLow`` or ``ValueTooHigh``);
* a number in a **CALLRESULT** the station cannot use (a BootNotificationResponse interval of -1): the value is
  unusable; the station keeps a fallback (its configured interval) and records one event with the reason
  (:meth:`Bound.usable`).

The ranges (protocol-digest §1.7, §3.2, §6): ``HeartbeatInterval`` has ``minLimit`` 1 in the device model, and
one heartbeat a day is what G02 recommends at least, so 1..86400 s; a BootNotificationResponse ``interval``
with status Pending or Rejected is the wait before the next BootNotification and 0 means "the station chooses"
(B02.FR.07), so 0..86400 s; RetryBackOff and attempt counts are non-negative integers with an upper bound that
keeps the doubling back-off finite; ``messageTimeout`` is 1..3600 s ("start with 30 s", Part 2 §3.2);
``seqNo`` is a non-negative int32 (2.1 schema: ``minimum`` 0); EVSE and connector ids are non-negative (2.1
schema) and small; a meter reading is finite, and an energy register (Wh) non-negative and below 1 TWh.
"""

from __future__ import annotations

import math

import attrs

__all__ = [
    "BOOT_RETRY_INTERVAL",
    "BOUNDS",
    "CONNECTOR_ID",
    "ENERGY_REGISTER_WH",
    "EVSE_ID",
    "HEARTBEAT_INTERVAL",
    "MESSAGE_TIMEOUT",
    "NETWORK_CONNECTION_ATTEMPTS",
    "RETRY_BACKOFF_RANDOM_RANGE",
    "RETRY_BACKOFF_REPEAT_TIMES",
    "RETRY_BACKOFF_WAIT_MINIMUM",
    "SAMPLED_VALUE",
    "SEQ_NO",
    "Bound",
    "OutOfRange",
]

_NUMBERS = (int, float)  # a tuple: isinstance() with a union type would build it per call
_MAX_TEXT = 20
"""Longest SetVariables value :meth:`Bound.parse` converts (longer: refused without parsing)."""


class OutOfRange(ValueError):
    """A value outside its field's range, or not a number at all.

    Attributes:
        field: the field (:attr:`Bound.name`).
        shown: the value as it may be shown in a log (a huge integer is described, not printed).
        reason_code: ``InvalidValue`` (not a number of the right kind), ``ValueTooLow`` or ``ValueTooHigh``:
            the ``reasonCode`` of a SetVariables ``attributeStatusInfo``.
        error_code: the CALLERROR code for a CALL carrying it: ``PropertyConstraintViolation``.
    """

    error_code = "PropertyConstraintViolation"

    def __init__(self, field: str, shown: str, reason_code: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.shown = shown
        self.reason_code = reason_code


def show(value: object) -> str:
    """``value`` for a log line: at most 40 characters; an integer too large to print is described."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"<{value.bit_length()}-bit integer>"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


@attrs.frozen
class Bound:
    """The valid range of one field.

    Args:
        name: the field as OCPP names it (``HeartbeatInterval``, ``TransactionEvent.seqNo``...).
        low, high: the inclusive range.
        integer: whether only whole numbers are valid (a float such as ``5.0`` is accepted as 5, as the JSON
            schemas accept it).
        unit: for messages (``"s"``, ``"Wh"``, ``""``).
    """

    name: str
    low: float
    high: float
    integer: bool = True
    unit: str = ""

    def _refuse(self, value: object, reason_code: str, why: str) -> OutOfRange:
        shown = show(value)
        return OutOfRange(self.name, shown, reason_code, f"{self.name} {shown} {why}")

    def check(self, value: object) -> float:
        """The value if it is in range.

        Returns:
            ``value`` (an ``int`` for integer fields).

        Raises:
            OutOfRange: not a number (booleans are not), not finite, not whole for an integer field, or outside
                ``low..high``.
        """
        # the usual cases first, without building anything: an int in range, a finite float in range (decimal field)
        if isinstance(value, int):
            if type(value) is int and self.low <= value <= self.high:
                return value
        elif (
            isinstance(value, float)
            and not self.integer
            and self.low <= value <= self.high
            and math.isfinite(value)
        ):
            return value
        if isinstance(value, bool) or not isinstance(value, _NUMBERS):
            raise self._refuse(value, "InvalidValue", "is not a number")
        if isinstance(value, float) and not math.isfinite(value):
            raise self._refuse(value, "InvalidValue", "is not finite")
        if value < self.low:
            raise self._refuse(value, "ValueTooLow", f"is below {_num(self.low)}{self.unit}")
        if value > self.high:
            raise self._refuse(value, "ValueTooHigh", f"is above {_num(self.high)}{self.unit}")
        if self.integer:
            if isinstance(value, float) and not value.is_integer():
                raise self._refuse(value, "InvalidValue", "is not a whole number")
            return int(value)
        return value

    def parse(self, text: str) -> int:
        """A SetVariables ``attributeValue`` for an integer field.

        Raises:
            OutOfRange: not a decimal integer (or longer than 20 characters), or outside ``low..high``.
        """
        stripped = text.strip()
        if len(stripped) > _MAX_TEXT:
            raise self._refuse(text, "InvalidValue", "is too long for a number")
        try:
            value = int(stripped)
        except ValueError:
            raise self._refuse(text, "InvalidValue", "is not an integer") from None
        return int(self.check(value))

    def usable(self, value: object, fallback: float) -> tuple[float, OutOfRange | None]:
        """A value received in a CALLRESULT, or ``fallback`` if it cannot be used.

        Returns:
            ``(value, None)`` when it is in range, else ``(fallback, the refusal)`` for the caller to record.
        """
        try:
            return self.check(value), None
        except OutOfRange as exc:
            return fallback, exc


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


DAY = 86_400

HEARTBEAT_INTERVAL = Bound("HeartbeatInterval", 1, DAY, unit=" s")
"""OCPPCommCtrlr.HeartbeatInterval and the interval of an Accepted BootNotificationResponse (B01.FR.04)."""
BOOT_RETRY_INTERVAL = Bound("BootNotificationResponse.interval", 0, DAY, unit=" s")
"""The interval of a Pending or Rejected BootNotificationResponse: 0 = the station chooses (B02.FR.07)."""
NETWORK_CONNECTION_ATTEMPTS = Bound("NetworkProfileConnectionAttempts", 1, 100)
RETRY_BACKOFF_WAIT_MINIMUM = Bound("RetryBackOffWaitMinimum", 0, DAY, unit=" s")
RETRY_BACKOFF_RANDOM_RANGE = Bound("RetryBackOffRandomRange", 0, DAY, unit=" s")
RETRY_BACKOFF_REPEAT_TIMES = Bound("RetryBackOffRepeatTimes", 0, 30)
"""At most 30 doublings: the back-off stays a finite number of seconds a station can wait."""
MESSAGE_TIMEOUT = Bound("NetworkConnectionProfile.messageTimeout", 1, 3600, unit=" s")
SEQ_NO = Bound("TransactionEvent.seqNo", 0, 2**31 - 1)
EVSE_ID = Bound("evseId", 0, 1000)
CONNECTOR_ID = Bound("connectorId", 0, 100)
SAMPLED_VALUE = Bound("SampledValue.value", -1e15, 1e15, integer=False)
"""Any meter reading: finite and of a size a meter can show."""
ENERGY_REGISTER_WH = Bound("Energy.Active.Import.Register", 0, 1e12, integer=False, unit=" Wh")
"""The energy register the CSMS keeps per transaction: non-negative, below 1 TWh."""

BOUNDS: dict[str, Bound] = {
    b.name: b
    for b in (
        HEARTBEAT_INTERVAL,
        BOOT_RETRY_INTERVAL,
        NETWORK_CONNECTION_ATTEMPTS,
        RETRY_BACKOFF_WAIT_MINIMUM,
        RETRY_BACKOFF_RANDOM_RANGE,
        RETRY_BACKOFF_REPEAT_TIMES,
        MESSAGE_TIMEOUT,
        SEQ_NO,
        EVSE_ID,
        CONNECTOR_ID,
        SAMPLED_VALUE,
        ENERGY_REGISTER_WH,
    )
}
"""Every bound by field name (the table the module docstring explains)."""
