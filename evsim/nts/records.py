"""NTS Key Establishment messages (RFC 8915 §4), sans-IO.

A message is a sequence of records ``C (1 bit) | type (15 bits) | body length (u16) | body`` ending with an
End of Message record; a client sends one request, the server one response, then both close the TLS session.

:class:`RecordReader` parses a message incrementally and refuses, as soon as the bytes that show it arrived,
a message over ``max_message`` bytes (chrony: 16384), a record body over ``max_body`` bytes (before the body
itself is read), bytes after End of Message and a malformed End of Message. :func:`parse_request` (server) and
:func:`parse_response` (client) then check the records' meaning:

* server side, every refusal carries the Error code to answer with: 0 *Unrecognized Critical Record* for an
  unknown record with the critical bit, 1 *Bad Request* for everything else (no or two Next Protocol records,
  Next Protocol without the critical bit, odd list lengths, no AEAD record when NTPv4 is asked for, records a
  client must not send: Error, Warning, New Cookie); unknown non-critical records are ignored;
* client side, an Error record, any Warning (none is defined, and a client must abort on one it does not
  know), an unknown critical record, a protocol or AEAD algorithm the client did not offer, more than one of
  either, no cookie, an empty or oversized cookie, a malformed server name or port are refusals; an empty Next
  Protocol or AEAD record is the server saying it supports none of the offered ones.

The keys of the association are exported from the TLS session with :data:`EXPORTER_LABEL` and
:func:`exporter_context`; :func:`negotiate` is the server's choice of protocol and algorithm.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable, Sequence

import attrs

from evsim.nts.errors import KeProtocolError

__all__ = [
    "AEAD_AES_SIV_CMAC_256",
    "AEAD_AES_SIV_CMAC_384",
    "AEAD_AES_SIV_CMAC_512",
    "ALPN",
    "CRITICAL",
    "DEFAULT_KE_PORT",
    "EXPORTER_LABEL",
    "KEY_LENGTHS",
    "MAX_COOKIES",
    "MAX_COOKIE_LENGTH",
    "MAX_MESSAGE",
    "MAX_RECORD_BODY",
    "NTPV4",
    "ErrorCode",
    "KeRequest",
    "KeResponse",
    "Record",
    "RecordReader",
    "RecordType",
    "encode_records",
    "error_message",
    "exporter_context",
    "negotiate",
    "parse_request",
    "parse_response",
]

ALPN = "ntske/1"
"""The ALPN protocol an NTS-KE client offers and a server must select (RFC 8915 §4)."""

DEFAULT_KE_PORT = 4460
"""IANA port of NTS-KE (TCP)."""

EXPORTER_LABEL = b"EXPORTER-network-time-security"
"""RFC 8915 §5.1 exporter label (draft-era implementations used ``/1`` and ``/2`` suffixes)."""

CRITICAL = 0x8000
"""The critical bit of a record's first u16."""

NTPV4 = 0
"""NTS Next Protocol id of NTPv4."""

AEAD_AES_SIV_CMAC_256 = 15
AEAD_AES_SIV_CMAC_384 = 16
AEAD_AES_SIV_CMAC_512 = 17

KEY_LENGTHS: dict[int, int] = {
    AEAD_AES_SIV_CMAC_256: 32,
    AEAD_AES_SIV_CMAC_384: 48,
    AEAD_AES_SIV_CMAC_512: 64,
}
"""Key length in octets of each supported AEAD algorithm (the AES-SIV-CMAC family, RFC 5297)."""

MAX_MESSAGE = 16384
"""Largest NTS-KE message read (chrony's limit)."""

MAX_RECORD_BODY = 1024
"""Largest record body read; a longer one is refused from its header, before its body arrives."""

MAX_COOKIES = 8
"""Cookies a server hands out per key establishment and a client keeps (RFC 8915 §4.1.6)."""

MAX_COOKIE_LENGTH = 512
"""Largest cookie a client accepts (a cookie and its placeholders must fit into a UDP datagram eight times)."""

MAX_SERVER_NAME = 255


class RecordType(enum.IntEnum):
    """NTS-KE record types (IANA "NTS Key Establishment Record Types")."""

    END_OF_MESSAGE = 0
    NEXT_PROTOCOL = 1
    ERROR = 2
    WARNING = 3
    AEAD_ALGORITHM = 4
    NEW_COOKIE = 5
    SERVER = 6
    PORT = 7


class ErrorCode(enum.IntEnum):
    """Codes of the Error record."""

    UNRECOGNIZED_CRITICAL_RECORD = 0
    BAD_REQUEST = 1
    INTERNAL_SERVER_ERROR = 2


@attrs.frozen
class Record:
    """One NTS-KE record.

    Attributes:
        rtype: the 15-bit record type.
        body: the body (at most 65535 octets).
        critical: the critical bit.
    """

    rtype: int
    body: bytes = b""
    critical: bool = False

    def encode(self) -> bytes:
        if not 0 <= self.rtype < CRITICAL:
            raise ValueError(f"record type {self.rtype} out of range")
        if len(self.body) > 0xFFFF:
            raise ValueError("record body longer than 65535 octets")
        head = self.rtype | (CRITICAL if self.critical else 0)
        return struct.pack("!HH", head, len(self.body)) + self.body


def encode_records(records: Iterable[Record]) -> bytes:
    """The wire form of a sequence of records."""
    return b"".join(r.encode() for r in records)


def _u16_list(values: Iterable[int]) -> bytes:
    return b"".join(struct.pack("!H", v) for v in values)


END_OF_MESSAGE = Record(RecordType.END_OF_MESSAGE, b"", critical=True)


class RecordReader:
    """Parses one NTS-KE message from bytes as they arrive.

    Args:
        max_message: refuse a message longer than this (octets).
        max_body: refuse a record whose body length field says more than this.
        server: True when reading a request (refusals carry the Error code to answer); False when reading a
            response (refusals carry none).
    """

    def __init__(
        self, *, max_message: int = MAX_MESSAGE, max_body: int = MAX_RECORD_BODY, server: bool
    ) -> None:
        self._buf = bytearray()
        self._seen = 0
        self._max_message = max_message
        self._max_body = max_body
        self._server = server
        self.records: list[Record] = []
        self.complete = False

    def _fail(self, reason: str, detail: str) -> KeProtocolError:
        return KeProtocolError(reason, detail, error_code=ErrorCode.BAD_REQUEST if self._server else None)

    def feed(self, data: bytes | bytearray) -> None:
        """Take the next bytes of the message.

        Raises:
            KeProtocolError: ``message_too_large``, ``record_too_large``, ``data_after_end_of_message``,
                ``bad_end_of_message``.
        """
        if not data:
            return
        if self.complete:
            raise self._fail("data_after_end_of_message", f"{len(data)} octets after End of Message")
        self._seen += len(data)
        if self._seen > self._max_message:
            raise self._fail("message_too_large", f"more than {self._max_message} octets")
        buf = self._buf
        buf += data
        while len(buf) >= 4:
            head, length = struct.unpack_from("!HH", buf)
            if length > self._max_body:
                raise self._fail("record_too_large", f"record type {head & 0x7FFF} body of {length} octets")
            if len(buf) < 4 + length:
                break
            record = Record(head & 0x7FFF, bytes(buf[4 : 4 + length]), bool(head & CRITICAL))
            del buf[: 4 + length]
            if record.rtype == RecordType.END_OF_MESSAGE:
                if record.body or not record.critical:
                    raise self._fail("bad_end_of_message", "End of Message must be critical and empty")
                self.complete = True
                if buf:
                    raise self._fail("data_after_end_of_message", f"{len(buf)} octets after End of Message")
                return
            self.records.append(record)

    def eof(self) -> None:
        """The peer closed before End of Message.

        Raises:
            KeProtocolError: ``no_end_of_message`` unless the message was complete.
        """
        if not self.complete:
            raise KeProtocolError(
                "no_end_of_message", f"peer closed after {self._seen} octets", error_code=None
            )


def _parse_u16_list(record: Record, what: str, *, server: bool) -> tuple[int, ...]:
    if len(record.body) % 2:
        raise KeProtocolError(
            "bad_record",
            f"{what} body of odd length {len(record.body)}",
            error_code=ErrorCode.BAD_REQUEST if server else None,
        )
    return struct.unpack(f"!{len(record.body) // 2}H", record.body)


def _parse_server_name(body: bytes, *, server: bool) -> str:
    code = ErrorCode.BAD_REQUEST if server else None
    if not 1 <= len(body) <= MAX_SERVER_NAME:
        raise KeProtocolError("bad_server_record", f"server name of {len(body)} octets", error_code=code)
    if not all(0x21 <= b <= 0x7E for b in body):
        raise KeProtocolError("bad_server_record", "server name is not printable ASCII", error_code=code)
    return body.decode("ascii")


def _parse_port(body: bytes, *, server: bool) -> int:
    if len(body) != 2:
        code = ErrorCode.BAD_REQUEST if server else None
        raise KeProtocolError("bad_port_record", f"port body of {len(body)} octets", error_code=code)
    return int(struct.unpack("!H", body)[0])


@attrs.frozen
class KeRequest:
    """What an NTS-KE client asks for.

    Attributes:
        protocols: Next Protocol ids in preference order (``(NTPV4,)``).
        aead_algorithms: AEAD ids in preference order.
        server: an NTP server the client asks for (Server Negotiation), or None.
        port: an NTP port the client asks for (Port Negotiation), or None.
    """

    protocols: tuple[int, ...] = (NTPV4,)
    aead_algorithms: tuple[int, ...] = (AEAD_AES_SIV_CMAC_256,)
    server: str | None = None
    port: int | None = None

    def records(self) -> list[Record]:
        out = [
            Record(RecordType.NEXT_PROTOCOL, _u16_list(self.protocols), critical=True),
            Record(RecordType.AEAD_ALGORITHM, _u16_list(self.aead_algorithms), critical=True),
        ]
        if self.server is not None:
            out.append(Record(RecordType.SERVER, self.server.encode("ascii")))
        if self.port is not None:
            out.append(Record(RecordType.PORT, struct.pack("!H", self.port)))
        out.append(END_OF_MESSAGE)
        return out

    def encode(self) -> bytes:
        return encode_records(self.records())


def parse_request(records: Sequence[Record]) -> KeRequest:
    """The request a client's records (End of Message excluded) make.

    Raises:
        KeProtocolError: with ``error_code`` 0 (unknown critical record) or 1 (bad request).
    """
    bad = ErrorCode.BAD_REQUEST
    protocols: tuple[int, ...] | None = None
    aeads: tuple[int, ...] | None = None
    server: str | None = None
    port: int | None = None
    for r in records:
        if r.rtype == RecordType.NEXT_PROTOCOL:
            if protocols is not None:
                raise KeProtocolError("duplicate_record", "two Next Protocol records", error_code=bad)
            if not r.critical:
                raise KeProtocolError("bad_record", "Next Protocol without the critical bit", error_code=bad)
            protocols = _parse_u16_list(r, "Next Protocol", server=True)
        elif r.rtype == RecordType.AEAD_ALGORITHM:
            if aeads is not None:
                raise KeProtocolError("duplicate_record", "two AEAD Algorithm records", error_code=bad)
            aeads = _parse_u16_list(r, "AEAD Algorithm", server=True)
        elif r.rtype == RecordType.SERVER:
            if server is not None:
                raise KeProtocolError("duplicate_record", "two Server Negotiation records", error_code=bad)
            server = _parse_server_name(r.body, server=True)
        elif r.rtype == RecordType.PORT:
            if port is not None:
                raise KeProtocolError("duplicate_record", "two Port Negotiation records", error_code=bad)
            port = _parse_port(r.body, server=True)
        elif r.rtype in (RecordType.ERROR, RecordType.WARNING, RecordType.NEW_COOKIE):
            name = RecordType(r.rtype).name
            raise KeProtocolError("unexpected_record", f"a client sent a {name} record", error_code=bad)
        elif r.critical:
            raise KeProtocolError(
                "unrecognized_critical_record",
                f"record type {r.rtype}",
                error_code=ErrorCode.UNRECOGNIZED_CRITICAL_RECORD,
            )
    if protocols is None:
        raise KeProtocolError("no_next_protocol", "the request has no Next Protocol record", error_code=bad)
    if NTPV4 in protocols and aeads is None:
        raise KeProtocolError(
            "no_aead_record", "NTPv4 asked for without an AEAD Algorithm record", error_code=bad
        )
    return KeRequest(protocols, aeads or (), server, port)


def negotiate(
    request: KeRequest, supported: Sequence[int] = (AEAD_AES_SIV_CMAC_256,)
) -> tuple[int | None, int | None]:
    """The server's choice: (NTPv4 or None when not offered, the client's first supported AEAD or None)."""
    if NTPV4 not in request.protocols:
        return None, None
    aead = next((a for a in request.aead_algorithms if a in supported and a in KEY_LENGTHS), None)
    return NTPV4, aead


@attrs.frozen
class KeResponse:
    """What an NTS-KE server answers.

    Attributes:
        protocol: the chosen Next Protocol (None: an empty record, no common protocol).
        aead: the chosen AEAD algorithm (None: an empty record, no common algorithm).
        cookies: the New Cookie records' bodies.
        server: the NTP server to use (None: the NTS-KE server's host).
        port: the NTP port to use (None: 123).
    """

    protocol: int | None
    aead: int | None
    cookies: tuple[bytes, ...] = ()
    server: str | None = None
    port: int | None = None

    def records(self) -> list[Record]:
        proto = b"" if self.protocol is None else _u16_list([self.protocol])
        out = [Record(RecordType.NEXT_PROTOCOL, proto, critical=True)]
        if self.protocol is not None:
            out.append(
                Record(RecordType.AEAD_ALGORITHM, b"" if self.aead is None else _u16_list([self.aead]))
            )
            out.extend(Record(RecordType.NEW_COOKIE, c) for c in self.cookies)
            if self.server is not None:
                out.append(Record(RecordType.SERVER, self.server.encode("ascii"), critical=True))
            if self.port is not None:
                out.append(Record(RecordType.PORT, struct.pack("!H", self.port), critical=True))
        out.append(END_OF_MESSAGE)
        return out

    def encode(self) -> bytes:
        return encode_records(self.records())


def error_message(code: int) -> bytes:
    """An Error record followed by End of Message."""
    return encode_records([Record(RecordType.ERROR, struct.pack("!H", code), critical=True), END_OF_MESSAGE])


def parse_response(
    records: Sequence[Record],
    *,
    offered_aeads: Sequence[int] = (AEAD_AES_SIV_CMAC_256,),
    max_cookie: int = MAX_COOKIE_LENGTH,
) -> KeResponse:
    """The response a server's records (End of Message excluded) make, checked against what was offered.

    Raises:
        KeProtocolError: (``error_code`` None) ``server_error:<code>``, ``server_warning:<code>``,
            ``unrecognized_critical_record``, ``no_common_protocol``, ``no_common_aead``, ``no_cookies``,
            ``bad_cookie``, ``duplicate_record``, ``bad_record``, ``bad_server_record``, ``bad_port_record``,
            ``unexpected_protocol``, ``unexpected_aead``.
    """
    protocols: tuple[int, ...] | None = None
    aeads: tuple[int, ...] | None = None
    cookies: list[bytes] = []
    server: str | None = None
    port: int | None = None
    for r in records:
        if r.rtype == RecordType.ERROR:
            code = struct.unpack("!H", r.body)[0] if len(r.body) == 2 else -1
            raise KeProtocolError(
                f"server_error:{code}", "the server answered with an Error record", error_code=None
            )
        if r.rtype == RecordType.WARNING:
            code = struct.unpack("!H", r.body)[0] if len(r.body) == 2 else -1
            raise KeProtocolError(
                f"server_warning:{code}", "a Warning this client does not know", error_code=None
            )
        if r.rtype == RecordType.NEXT_PROTOCOL:
            if protocols is not None:
                raise KeProtocolError("duplicate_record", "two Next Protocol records", error_code=None)
            protocols = _parse_u16_list(r, "Next Protocol", server=False)
        elif r.rtype == RecordType.AEAD_ALGORITHM:
            if aeads is not None:
                raise KeProtocolError("duplicate_record", "two AEAD Algorithm records", error_code=None)
            aeads = _parse_u16_list(r, "AEAD Algorithm", server=False)
        elif r.rtype == RecordType.NEW_COOKIE:
            if not 1 <= len(r.body) <= max_cookie:
                raise KeProtocolError("bad_cookie", f"cookie of {len(r.body)} octets", error_code=None)
            cookies.append(r.body)
        elif r.rtype == RecordType.SERVER:
            if server is not None:
                raise KeProtocolError("duplicate_record", "two Server Negotiation records", error_code=None)
            server = _parse_server_name(r.body, server=False)
        elif r.rtype == RecordType.PORT:
            if port is not None:
                raise KeProtocolError("duplicate_record", "two Port Negotiation records", error_code=None)
            port = _parse_port(r.body, server=False)
        elif r.critical:
            raise KeProtocolError("unrecognized_critical_record", f"record type {r.rtype}", error_code=None)
    if protocols is None:
        raise KeProtocolError("no_next_protocol", "the response has no Next Protocol record", error_code=None)
    if not protocols:
        raise KeProtocolError(
            "no_common_protocol", "the server supports no offered protocol", error_code=None
        )
    if len(protocols) != 1 or protocols[0] != NTPV4:
        raise KeProtocolError("unexpected_protocol", f"the server chose {list(protocols)}", error_code=None)
    if not aeads:
        raise KeProtocolError(
            "no_common_aead", "the server supports no offered AEAD algorithm", error_code=None
        )
    if len(aeads) != 1 or aeads[0] not in offered_aeads or aeads[0] not in KEY_LENGTHS:
        raise KeProtocolError("unexpected_aead", f"the server chose {list(aeads)}", error_code=None)
    if not cookies:
        raise KeProtocolError("no_cookies", "the response holds no cookie", error_code=None)
    return KeResponse(NTPV4, aeads[0], tuple(cookies[:MAX_COOKIES]), server, port)


def exporter_context(protocol: int, aead: int, server_to_client: bool) -> bytes:
    """The exporter context of RFC 8915 §5.1: protocol id, AEAD id, 0 (C2S) or 1 (S2C)."""
    return struct.pack("!HHB", protocol, aead, 1 if server_to_client else 0)
