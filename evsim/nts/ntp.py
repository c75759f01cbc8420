"""NTPv4 packets (RFC 5905) with extension fields (RFC 7822), sans-IO.

The 48-octet header is :class:`NtpHeader`; timestamps travel as raw 64-bit NTP values (seconds since 1900 in
the upper 32 bits, fraction in the lower 32) so that an origin timestamp can be compared bit for bit with
what was sent. :func:`to_ntp` / :func:`from_ntp` convert to and from Unix seconds (a raw value with the top
bit clear is read as era 1, i.e. after 2036-02-07, as RFC 4330 §3 suggests).

:func:`parse_packet` refuses anything that is not a header plus whole extension fields: an extension field's
length must be a multiple of 4, at least 4 and within the datagram (16 octets are the RFC 7822 minimum for a
field outside the encrypted part, checked by the NTS layer where it matters); at most :data:`MAX_FIELDS`
fields and :data:`MAX_PACKET` octets. A legacy MAC after the fields is not supported (NTS needs none).

:func:`offset_delay` is the on-wire calculation of RFC 5905 §8.
"""

from __future__ import annotations

import enum
import math
import struct

import attrs

from evsim.nts.errors import NtpRejected

__all__ = [
    "HEADER_LENGTH",
    "MAX_FIELDS",
    "MAX_PACKET",
    "NTP_UNIX_OFFSET",
    "ExtensionField",
    "FieldType",
    "Mode",
    "NtpHeader",
    "NtpPacket",
    "encode_field",
    "from_ntp",
    "ntp_diff",
    "offset_delay",
    "parse_fields",
    "parse_packet",
    "to_ntp",
]

HEADER_LENGTH = 48
MAX_PACKET = 4096
"""Largest NTP datagram accepted (a request with a cookie and seven placeholders is well under 1200)."""
MAX_FIELDS = 32
"""Most extension fields parsed from one packet."""
NTP_UNIX_OFFSET = 2_208_988_800
"""Seconds from 1900-01-01 (NTP era 0) to 1970-01-01."""
_ERA = 1 << 32


class Mode(enum.IntEnum):
    CLIENT = 3
    SERVER = 4


class FieldType(enum.IntEnum):
    """NTS extension field types (RFC 8915 §5.7)."""

    UNIQUE_IDENTIFIER = 0x0104
    COOKIE = 0x0204
    COOKIE_PLACEHOLDER = 0x0304
    AUTHENTICATOR = 0x0404


def to_ntp(unix: float) -> int:
    """Unix seconds as a raw 64-bit NTP timestamp (modulo the era)."""
    seconds = math.floor(unix)
    fraction = round((unix - seconds) * _ERA)
    return (((seconds + NTP_UNIX_OFFSET) << 32) + fraction) % (1 << 64)


def from_ntp(raw: int) -> float:
    """A raw NTP timestamp as Unix seconds (era 0 when the top bit is set, else era 1)."""
    seconds = raw >> 32
    era = 0 if seconds & 0x8000_0000 else 1
    return float(era * _ERA + seconds - NTP_UNIX_OFFSET) + (raw & 0xFFFF_FFFF) / _ERA


def ntp_diff(a: int, b: int) -> float:
    """``a - b`` in seconds for two raw timestamps less than 68 years apart (exact to 2**-32 s)."""
    return (((a - b + (1 << 63)) % (1 << 64)) - (1 << 63)) / _ERA


@attrs.frozen
class NtpHeader:
    """The fixed part of an NTP packet; timestamps are raw 64-bit values."""

    mode: int
    version: int = 4
    leap: int = 0
    stratum: int = 0
    poll: int = 0
    precision: int = -20
    root_delay: int = 0
    root_dispersion: int = 0
    reference_id: bytes = b"\0\0\0\0"
    reference_ts: int = 0
    origin_ts: int = 0
    receive_ts: int = 0
    transmit_ts: int = 0

    def encode(self) -> bytes:
        first = (self.leap & 3) << 6 | (self.version & 7) << 3 | (self.mode & 7)
        return struct.pack(
            "!BBbbII4sQQQQ",
            first,
            self.stratum,
            self.poll,
            self.precision,
            self.root_delay,
            self.root_dispersion,
            self.reference_id,
            self.reference_ts,
            self.origin_ts,
            self.receive_ts,
            self.transmit_ts,
        )

    @classmethod
    def decode(cls, data: bytes) -> NtpHeader:
        if len(data) < HEADER_LENGTH:
            raise NtpRejected("truncated", f"{len(data)} octets, an NTP header has {HEADER_LENGTH}")
        (first, stratum, poll, precision, rdelay, rdisp, refid, ref, org, rec, xmt) = struct.unpack_from(
            "!BBbbII4sQQQQ", data
        )
        return cls(
            mode=first & 7,
            version=(first >> 3) & 7,
            leap=first >> 6,
            stratum=stratum,
            poll=poll,
            precision=precision,
            root_delay=rdelay,
            root_dispersion=rdisp,
            reference_id=refid,
            reference_ts=ref,
            origin_ts=org,
            receive_ts=rec,
            transmit_ts=xmt,
        )


@attrs.frozen
class ExtensionField:
    """One extension field.

    Attributes:
        ftype: the field type.
        value: the value without the padding.
        offset: where the field starts in its packet (or plaintext).
        length: the field's length on the wire (header and padding included).
    """

    ftype: int
    value: bytes
    offset: int = 0
    length: int = 0


def encode_field(ftype: int, value: bytes, *, min_length: int = 16) -> bytes:
    """An extension field: type, length, value, zero padding to a multiple of 4 (and to ``min_length``)."""
    length = 4 + len(value)
    length += -length % 4
    length = max(length, min_length)
    if length > 0xFFFF:
        raise ValueError("extension field longer than 65535 octets")
    return struct.pack("!HH", ftype, length) + value + b"\0" * (length - 4 - len(value))


def parse_fields(data: bytes, start: int = 0, *, max_fields: int = MAX_FIELDS) -> list[ExtensionField]:
    """The extension fields of ``data[start:]``, which must consist of whole fields.

    Raises:
        NtpRejected: ``bad_extension_field`` (a length that is not a multiple of 4, under 4 or past the end)
            or ``too_many_fields``.
    """
    out: list[ExtensionField] = []
    pos = start
    end = len(data)
    while pos < end:
        if end - pos < 4:
            raise NtpRejected("bad_extension_field", f"{end - pos} trailing octets")
        ftype, length = struct.unpack_from("!HH", data, pos)
        if length < 4 or length % 4 or pos + length > end:
            raise NtpRejected("bad_extension_field", f"field 0x{ftype:04x} of length {length} at {pos}")
        if len(out) == max_fields:
            raise NtpRejected("too_many_fields", f"more than {max_fields} extension fields")
        out.append(ExtensionField(ftype, bytes(data[pos + 4 : pos + length]), pos, length))
        pos += length
    return out


@attrs.frozen
class NtpPacket:
    """A parsed packet: its header, its extension fields and its bytes."""

    header: NtpHeader
    fields: tuple[ExtensionField, ...]
    raw: bytes


def parse_packet(data: bytes) -> NtpPacket:
    """Parse a datagram.

    Raises:
        NtpRejected: ``truncated``, ``too_large``, ``bad_extension_field``, ``too_many_fields``.
    """
    if len(data) > MAX_PACKET:
        raise NtpRejected("too_large", f"{len(data)} octets")
    header = NtpHeader.decode(data)
    return NtpPacket(header, tuple(parse_fields(data, HEADER_LENGTH)), bytes(data))


def offset_delay(t1: int, t2: int, t3: int, t4: int) -> tuple[float, float]:
    """Clock offset (server minus client) and round-trip delay in seconds from the four raw timestamps
    (RFC 5905 §8), computed on the 64-bit values so that no precision is lost to Unix-time floats.

    t1: client transmit, t2: server receive, t3: server transmit, t4: client receive.
    """
    return (ntp_diff(t2, t1) + ntp_diff(t3, t4)) / 2.0, ntp_diff(t4, t1) - ntp_diff(t3, t2)
