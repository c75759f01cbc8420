"""NTS-protected NTPv4 exchanges (RFC 8915 §5), sans-IO: the client association and the server.

Request (client → server)::

    header (mode 3) | Unique Identifier (32 random octets) | NTS Cookie | Cookie Placeholder x n
    | Authenticator (C2S key, AD = everything before it, no plaintext)

Response (server → client)::

    header (mode 4, origin = the request's transmit timestamp) | Unique Identifier (echoed)
    | Authenticator (S2C key, AD = everything before it, plaintext = NTS Cookie x (1 + n))

The AEAD is AES-SIV-CMAC (``cryptography``'s ``AESSIV``) with associated data ``[packet up to the
Authenticator, nonce]``. The Authenticator's value is ``nonce length (u16) | ciphertext length (u16) | nonce
| ciphertext``, each padded to 4 octets; the nonce has at least 16 octets.

Client (:class:`NtsAssociation`): every request uses one cookie, never again, and asks with placeholders for
as many new cookies as it takes to hold :data:`~evsim.nts.records.MAX_COOKIES` again. One request is
outstanding; a response is accepted only when its origin timestamp is the request's transmit timestamp, its
Unique Identifier is the request's, and its Authenticator (the last field) verifies with the S2C key - then the
request is no longer outstanding, so a replayed or duplicated response is dropped. An NTSN kiss-o'-death that
echoes the Unique Identifier and origin timestamp is accepted unauthenticated (the server could not read the
cookie, so it has no key): the association drops its cookies (:attr:`NtsAssociation.needs_ke`). Other
kiss-o'-death codes count only when authenticated. Drops raise :class:`~evsim.nts.errors.NtpRejected` with a
reason.

Server (:class:`NtsServerCore`): stateless. A request needs exactly one Unique Identifier (at least 32
octets), one cookie, placeholders as long as the cookie field, and the Authenticator last. A cookie that does
not open (another server's, under a forgotten master key, altered) or a request that does not verify gets an
NTSN kiss-o'-death; a malformed request gets nothing. The response is never longer than the request (fewer
new cookies when they would not fit). The server keeps no replay state: a replayed request is answered again,
which helps nobody (the response is for the Unique Identifier the client no longer waits for, and the new
cookies are sealed with the S2C key).
"""

from __future__ import annotations

import collections
import os
import struct
from collections.abc import Callable, Sequence

import attrs
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from evsim.errors import ConfigError
from evsim.nts.cookies import MasterKeys
from evsim.nts.errors import NtpRejected
from evsim.nts.ntp import (
    ExtensionField,
    FieldType,
    Mode,
    NtpHeader,
    NtpPacket,
    encode_field,
    from_ntp,
    offset_delay,
    parse_fields,
    parse_packet,
    to_ntp,
)
from evsim.nts.records import KEY_LENGTHS, MAX_COOKIE_LENGTH, MAX_COOKIES

__all__ = [
    "KISS_NTSN",
    "MIN_NONCE",
    "UID_LENGTH",
    "KissOfDeath",
    "NtpSample",
    "NtsAssociation",
    "NtsServerCore",
    "ServerReply",
    "authenticator_field",
    "open_authenticator",
]

UID_LENGTH = 32
MIN_NONCE = 16
KISS_NTSN = b"NTSN"
_TAG = 16  # SIV tag length


def authenticator_field(key: bytes, associated: bytes, plaintext: bytes, nonce: bytes) -> bytes:
    """The Authenticator and Encrypted Extension Fields field over ``associated`` (the packet so far)."""
    sealed = AESSIV(key).encrypt(plaintext, [associated, nonce])
    value = (
        struct.pack("!HH", len(nonce), len(sealed))
        + nonce
        + b"\0" * (-len(nonce) % 4)
        + sealed
        + b"\0" * (-len(sealed) % 4)
    )
    return encode_field(FieldType.AUTHENTICATOR, value, min_length=0)


def open_authenticator(key: bytes, packet: bytes, field: ExtensionField) -> bytes:
    """The plaintext of an Authenticator field that verifies with ``key``.

    Raises:
        NtpRejected: ``bad_authenticator`` (malformed), ``auth_failed`` (does not verify).
    """
    value = field.value
    if len(value) < 4:
        raise NtpRejected("bad_authenticator", "no nonce and ciphertext lengths")
    nonce_len, ct_len = struct.unpack_from("!HH", value)
    nonce_end = 4 + nonce_len + (-nonce_len % 4)
    if nonce_len < MIN_NONCE or ct_len < _TAG or nonce_end + ct_len > len(value):
        raise NtpRejected("bad_authenticator", f"nonce {nonce_len}, ciphertext {ct_len}, field {len(value)}")
    nonce = value[4 : 4 + nonce_len]
    sealed = value[nonce_end : nonce_end + ct_len]
    try:
        return AESSIV(key).decrypt(sealed, [packet[: field.offset], nonce])
    except InvalidTag:
        raise NtpRejected("auth_failed", "the Authenticator does not verify") from None


def _split(packet: NtpPacket) -> tuple[list[ExtensionField], ExtensionField]:
    """The fields before the Authenticator, and the Authenticator (which must be the one, last field)."""
    fields = list(packet.fields)
    auths = [f for f in fields if f.ftype == FieldType.AUTHENTICATOR]
    if not auths:
        raise NtpRejected("no_authenticator", "the packet has no Authenticator")
    if len(auths) > 1 or fields[-1] is not auths[0]:
        raise NtpRejected("bad_authenticator", "the Authenticator must be the one, last extension field")
    return fields[:-1], auths[0]


def _one(fields: Sequence[ExtensionField], ftype: FieldType, name: str) -> ExtensionField:
    found = [f for f in fields if f.ftype == ftype]
    if not found:
        raise NtpRejected(f"no_{name}", f"no {name.replace('_', ' ')} field")
    if len(found) > 1:
        raise NtpRejected(f"duplicate_{name}", f"{len(found)} {name.replace('_', ' ')} fields")
    return found[0]


@attrs.frozen
class NtpSample:
    """One measurement.

    Attributes:
        offset: server clock minus client clock (s).
        delay: round-trip delay (s), server processing excluded.
        stratum: the server's stratum.
        leap: the leap indicator.
        reference_id: the server's reference id.
        root_delay, root_dispersion: the server's, in seconds.
        t1, t2, t3, t4: the four timestamps (Unix seconds).
        new_cookies: cookies the response carried.
    """

    offset: float
    delay: float
    stratum: int
    leap: int
    reference_id: bytes
    root_delay: float
    root_dispersion: float
    t1: float
    t2: float
    t3: float
    t4: float
    new_cookies: int


@attrs.frozen
class KissOfDeath:
    """A kiss-o'-death the client accepted (NTSN: the association dropped its cookies)."""

    code: str
    authenticated: bool


@attrs.frozen
class _Pending:
    uid: bytes
    transmit: int
    t1: float
    placeholders: int


def _short(value: int) -> float:
    """An NTP short format (16.16) as seconds."""
    return value / 65536.0


class NtsAssociation:
    """The client side of NTS-protected NTP with one server, from an NTS-KE result.

    Args:
        aead: the negotiated AEAD algorithm.
        c2s, s2c: the exported keys.
        cookies: the cookies from NTS-KE (at most :data:`MAX_COOKIES` are kept).
        entropy: the random source for Unique Identifiers and nonces.
    """

    def __init__(
        self,
        aead: int,
        c2s: bytes,
        s2c: bytes,
        cookies: Sequence[bytes],
        *,
        entropy: Callable[[int], bytes] = os.urandom,
    ) -> None:
        length = KEY_LENGTHS.get(aead)
        if length is None or len(c2s) != length or len(s2c) != length:
            raise ConfigError("keys do not match the AEAD algorithm", path="aead", value=aead)
        self.aead = aead
        self._c2s = c2s
        self._s2c = s2c
        self._entropy = entropy
        self._cookies: collections.deque[bytes] = collections.deque(cookies[:MAX_COOKIES], maxlen=MAX_COOKIES)
        self._pending: _Pending | None = None
        self.naks = 0

    @property
    def cookies(self) -> int:
        """Cookies in hand."""
        return len(self._cookies)

    @property
    def needs_ke(self) -> bool:
        """No cookie left (used up, or dropped after an NTSN): run NTS-KE again."""
        return not self._cookies

    @property
    def outstanding(self) -> bool:
        return self._pending is not None

    def request(self, t1: float) -> bytes:
        """A request sent at Unix time ``t1``; it replaces any outstanding request.

        Raises:
            NtpRejected: ``no_cookies`` (run NTS-KE again).
        """
        if not self._cookies:
            raise NtpRejected("no_cookies", "every cookie was used")
        cookie = self._cookies.popleft()
        placeholders = MAX_COOKIES - 1 - len(self._cookies)
        uid = self._entropy(UID_LENGTH)
        transmit = to_ntp(t1)
        header = NtpHeader(mode=Mode.CLIENT, version=4, transmit_ts=transmit)
        body = (
            header.encode()
            + encode_field(FieldType.UNIQUE_IDENTIFIER, uid)
            + encode_field(FieldType.COOKIE, cookie)
        )
        placeholder = encode_field(FieldType.COOKIE_PLACEHOLDER, b"\0" * len(cookie))
        body += placeholder * placeholders
        body += authenticator_field(self._c2s, body, b"", self._entropy(MIN_NONCE))
        self._pending = _Pending(uid, transmit, t1, placeholders)
        return body

    def receive(self, data: bytes, t4: float) -> NtpSample | KissOfDeath:
        """Check a datagram received at Unix time ``t4`` against the outstanding request.

        Raises:
            NtpRejected: the datagram is dropped (reason: ``no_outstanding_request``, ``truncated``,
                ``not_a_response``, ``origin_mismatch``, ``no_unique_identifier``, ``uid_mismatch``,
                ``no_authenticator``, ``bad_authenticator``, ``auth_failed``, ``unauthenticated_kod``,
                ``bad_encrypted_fields``, ``unsynchronized``, ``bad_stratum``, ``bad_extension_field``...).
        """
        pending = self._pending
        if pending is None:
            raise NtpRejected("no_outstanding_request", "no request is waiting for an answer")
        packet = parse_packet(data)
        h = packet.header
        if h.mode != Mode.SERVER or h.version not in (3, 4):
            raise NtpRejected("not_a_response", f"mode {h.mode}, version {h.version}")
        if h.origin_ts != pending.transmit:
            raise NtpRejected(
                "origin_mismatch", "the origin timestamp is not the request's transmit timestamp"
            )
        uid = _one(packet.fields, FieldType.UNIQUE_IDENTIFIER, "unique_identifier")
        if uid.value != pending.uid:
            raise NtpRejected("uid_mismatch", "the Unique Identifier is not the request's")
        if (
            h.stratum == 0
            and h.reference_id == KISS_NTSN
            and not any(f.ftype == FieldType.AUTHENTICATOR for f in packet.fields)
        ):
            self._pending = None
            self._cookies.clear()
            self.naks += 1
            return KissOfDeath("NTSN", authenticated=False)
        before, auth = _split(packet)
        if uid not in before:
            raise NtpRejected("bad_authenticator", "the Unique Identifier is not authenticated")
        plaintext = open_authenticator(self._s2c, packet.raw, auth)
        try:
            inner = parse_fields(plaintext)
        except NtpRejected as exc:
            raise NtpRejected("bad_encrypted_fields", exc.detail) from None
        self._pending = None
        if h.stratum == 0:
            code = h.reference_id.decode("ascii", "replace")
            if h.reference_id == KISS_NTSN:
                self._cookies.clear()
                self.naks += 1
            return KissOfDeath(code, authenticated=True)
        new = 0
        for f in inner:
            if (
                f.ftype == FieldType.COOKIE
                and 0 < len(f.value) <= MAX_COOKIE_LENGTH
                and new <= pending.placeholders
            ):
                self._cookies.append(f.value)
                new += 1
        if h.leap == 3:
            raise NtpRejected("unsynchronized", "the server's leap indicator says it is not synchronized")
        if not 1 <= h.stratum <= 15:
            raise NtpRejected("bad_stratum", f"stratum {h.stratum}")
        if h.transmit_ts == 0 or h.receive_ts == 0:
            raise NtpRejected("bad_timestamps", "zero receive or transmit timestamp")
        t2, t3 = from_ntp(h.receive_ts), from_ntp(h.transmit_ts)
        offset, delay = offset_delay(pending.transmit, h.receive_ts, h.transmit_ts, to_ntp(t4))
        return NtpSample(
            offset=offset,
            delay=delay,
            stratum=h.stratum,
            leap=h.leap,
            reference_id=h.reference_id,
            root_delay=_short(h.root_delay),
            root_dispersion=_short(h.root_dispersion),
            t1=pending.t1,
            t2=t2,
            t3=t3,
            t4=t4,
            new_cookies=new,
        )


@attrs.frozen
class ServerReply:
    """What the server sends back: ``data``, and ``kind`` ``"time"`` or ``"nak"`` (an NTSN kiss-o'-death)."""

    data: bytes
    kind: str
    cookies: int = 0


@attrs.define
class NtsServerCore:
    """The NTP server with NTS.

    Attributes:
        keys: the master keys cookies are sealed under.
        stratum: the stratum announced (1: a reference clock).
        reference_id: four octets (a stratum-1 source name).
        precision: log2 seconds.
        entropy: the random source for nonces.
    """

    keys: MasterKeys
    stratum: int = 1
    reference_id: bytes = b"EVSM"
    precision: int = -20
    entropy: Callable[[int], bytes] = os.urandom

    def respond(self, data: bytes, *, received: float, transmit: float) -> ServerReply:
        """The answer to a request received at Unix time ``received``, sent at ``transmit``.

        Raises:
            NtpRejected: the request is dropped without an answer (``truncated``, ``not_a_request``,
                ``bad_version``, ``no_unique_identifier``, ``short_unique_identifier``, ``no_cookie``,
                ``bad_placeholder``, ``no_authenticator``, ``bad_authenticator``, ...).
        """
        packet = parse_packet(data)
        h = packet.header
        if h.mode != Mode.CLIENT:
            raise NtpRejected("not_a_request", f"mode {h.mode}")
        if h.version != 4:
            raise NtpRejected("bad_version", f"version {h.version}")
        before, auth = _split(packet)
        uid = _one(before, FieldType.UNIQUE_IDENTIFIER, "unique_identifier")
        if len(uid.value) < UID_LENGTH:
            raise NtpRejected("short_unique_identifier", f"{len(uid.value)} octets")
        cookie = _one(before, FieldType.COOKIE, "cookie")
        placeholders = [f for f in before if f.ftype == FieldType.COOKIE_PLACEHOLDER]
        if any(p.length != cookie.length for p in placeholders):
            raise NtpRejected("bad_placeholder", "a placeholder is not as long as the cookie")
        if len(placeholders) >= MAX_COOKIES:
            raise NtpRejected("bad_placeholder", f"{len(placeholders)} placeholders")
        uid_field = encode_field(FieldType.UNIQUE_IDENTIFIER, uid.value)
        content = self.keys.open(cookie.value)
        plaintext: bytes | None = None
        if content is not None:
            try:
                plaintext = open_authenticator(content.c2s, packet.raw, auth)
            except NtpRejected:
                plaintext = None
        if content is None or plaintext is None:
            kod = NtpHeader(
                mode=Mode.SERVER,
                version=4,
                stratum=0,
                poll=h.poll,
                precision=self.precision,
                reference_id=KISS_NTSN,
                origin_ts=h.transmit_ts,
                receive_ts=to_ntp(received),
                transmit_ts=to_ntp(transmit),
            )
            return ServerReply(kod.encode() + uid_field, "nak")
        try:
            parse_fields(plaintext)
        except NtpRejected:
            raise NtpRejected(
                "bad_encrypted_fields", "the request's encrypted fields are malformed"
            ) from None
        header = NtpHeader(
            mode=Mode.SERVER,
            version=4,
            stratum=self.stratum,
            poll=h.poll,
            precision=self.precision,
            root_delay=0,
            root_dispersion=1 << 4,
            reference_id=self.reference_id,
            reference_ts=to_ntp(received - (received % 16.0)),
            origin_ts=h.transmit_ts,
            receive_ts=to_ntp(received),
            transmit_ts=to_ntp(transmit),
        )
        head = header.encode() + uid_field
        nonce = self.entropy(MIN_NONCE)
        budget = len(data) - len(head) - (4 + 4 + len(nonce) + _TAG)
        new: list[bytes] = []
        for _ in range(1 + len(placeholders)):
            field = encode_field(FieldType.COOKIE, self.keys.seal(content.aead, content.c2s, content.s2c))
            if len(field) > budget:
                break
            budget -= len(field)
            new.append(field)
        out = head + authenticator_field(content.s2c, head, b"".join(new), nonce)
        return ServerReply(out, "time", len(new))
