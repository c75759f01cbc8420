"""A small sans-IO reader of TLS handshake messages and alerts (RFC 8446 §4, RFC 5246 §7.4), for explanations.

It reads the plaintext messages an engine reports (``evsim.tls.trace``): ClientHello, ServerHello (and
HelloRetryRequest), EncryptedExtensions, Certificate (TLS 1.2 and 1.3 layouts), NewSessionTicket (both
layouts) and alerts, and names the code points it knows (versions, suites, groups, signature schemes,
extensions, alerts). Everything is bounded by the input: :func:`parse_message` never reads past the bytes
it was given, refuses input over :data:`MAX_INPUT` and answers :class:`Malformed` for anything it cannot
read - it never raises on hostile bytes. Unknown code points are shown in hex, unknown messages as
:class:`OtherMessage`.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Mapping
from typing import Any, TypeAlias, TypeVar, cast

import attrs

MAX_INPUT = 1 << 20
"""Bytes :func:`parse_message` accepts (a handshake message may claim up to 16 MiB; ours are a few KiB)."""
MAX_ITEMS = 512
"""Entries read from any one list (suites, groups, extensions, certificates...); the rest is ignored."""

HANDSHAKE_TYPES: Mapping[int, str] = {
    1: "ClientHello",
    2: "ServerHello",
    4: "NewSessionTicket",
    5: "EndOfEarlyData",
    8: "EncryptedExtensions",
    11: "Certificate",
    12: "ServerKeyExchange",
    13: "CertificateRequest",
    14: "ServerHelloDone",
    15: "CertificateVerify",
    16: "ClientKeyExchange",
    20: "Finished",
    22: "CertificateStatus",
    24: "KeyUpdate",
}
VERSIONS: Mapping[int, str] = {0x0304: "1.3", 0x0303: "1.2", 0x0302: "1.1", 0x0301: "1.0", 0x0300: "SSL 3.0"}
SUITES: Mapping[int, str] = {
    0x1301: "TLS_AES_128_GCM_SHA256",
    0x1302: "TLS_AES_256_GCM_SHA384",
    0x1303: "TLS_CHACHA20_POLY1305_SHA256",
    0x1304: "TLS_AES_128_CCM_SHA256",
    0x1305: "TLS_AES_128_CCM_8_SHA256",
    0xC02B: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    0xC02C: "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    0xC02F: "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    0xC030: "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    0xCCA9: "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    0xCCA8: "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    0xC009: "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    0xC00A: "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    0xC013: "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    0xC014: "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    0xC023: "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    0xC024: "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384",
    0xC027: "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
    0xC028: "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384",
    0xC0AC: "TLS_ECDHE_ECDSA_WITH_AES_128_CCM",
    0xC0AD: "TLS_ECDHE_ECDSA_WITH_AES_256_CCM",
    0xC0AE: "TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8",
    0xC0AF: "TLS_ECDHE_ECDSA_WITH_AES_256_CCM_8",
    0x009C: "TLS_RSA_WITH_AES_128_GCM_SHA256",
    0x009D: "TLS_RSA_WITH_AES_256_GCM_SHA384",
    0x009E: "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256",
    0x009F: "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384",
    0x002F: "TLS_RSA_WITH_AES_128_CBC_SHA",
    0x0035: "TLS_RSA_WITH_AES_256_CBC_SHA",
    0x00FF: "TLS_EMPTY_RENEGOTIATION_INFO_SCSV",
    0x5600: "TLS_FALLBACK_SCSV",
}
GROUPS: Mapping[int, str] = {
    0x0017: "secp256r1",
    0x0018: "secp384r1",
    0x0019: "secp521r1",
    0x001D: "X25519",
    0x001E: "X448",
    0x0100: "ffdhe2048",
    0x0101: "ffdhe3072",
    0x0102: "ffdhe4096",
    0x0200: "MLKEM512",
    0x0201: "MLKEM768",
    0x0202: "MLKEM1024",
    0x11EB: "SecP256r1MLKEM768",
    0x11EC: "X25519MLKEM768",
    0x11ED: "SecP384r1MLKEM1024",
    0x11EE: "curveSM2MLKEM768",
    0x0029: "curveSM2",
}
SIGNATURE_SCHEMES: Mapping[int, str] = {
    0x0401: "rsa_pkcs1_sha256",
    0x0501: "rsa_pkcs1_sha384",
    0x0601: "rsa_pkcs1_sha512",
    0x0403: "ecdsa_secp256r1_sha256",
    0x0503: "ecdsa_secp384r1_sha384",
    0x0603: "ecdsa_secp521r1_sha512",
    0x0804: "rsa_pss_rsae_sha256",
    0x0805: "rsa_pss_rsae_sha384",
    0x0806: "rsa_pss_rsae_sha512",
    0x0807: "ed25519",
    0x0808: "ed448",
    0x0809: "rsa_pss_pss_sha256",
    0x080A: "rsa_pss_pss_sha384",
    0x080B: "rsa_pss_pss_sha512",
    0x0201: "rsa_pkcs1_sha1",
    0x0203: "ecdsa_sha1",
    0x0904: "mldsa44",
    0x0905: "mldsa65",
    0x0906: "mldsa87",
    0x081A: "ecdsa_brainpoolP256r1tls13_sha256",
    0x081B: "ecdsa_brainpoolP384r1tls13_sha384",
    0x081C: "ecdsa_brainpoolP512r1tls13_sha512",
    0x0303: "ecdsa_sha224",
    0x0301: "rsa_pkcs1_sha224",
    0x0302: "dsa_sha224",
    0x0402: "dsa_sha256",
    0x0502: "dsa_sha384",
    0x0602: "dsa_sha512",
    0x0708: "sm2sig_sm3",
}
EXTENSIONS: Mapping[int, str] = {
    0: "server_name",
    1: "max_fragment_length",
    5: "status_request",
    10: "supported_groups",
    11: "ec_point_formats",
    13: "signature_algorithms",
    16: "application_layer_protocol_negotiation",
    18: "signed_certificate_timestamp",
    21: "padding",
    22: "encrypt_then_mac",
    23: "extended_master_secret",
    27: "compress_certificate",
    28: "record_size_limit",
    35: "session_ticket",
    41: "pre_shared_key",
    42: "early_data",
    43: "supported_versions",
    44: "cookie",
    45: "psk_key_exchange_modes",
    49: "post_handshake_auth",
    50: "signature_algorithms_cert",
    51: "key_share",
    65281: "renegotiation_info",
}
ALERTS: Mapping[int, str] = {
    0: "close_notify",
    10: "unexpected_message",
    20: "bad_record_mac",
    22: "record_overflow",
    40: "handshake_failure",
    42: "bad_certificate",
    43: "unsupported_certificate",
    44: "certificate_revoked",
    45: "certificate_expired",
    46: "certificate_unknown",
    47: "illegal_parameter",
    48: "unknown_ca",
    49: "access_denied",
    50: "decode_error",
    51: "decrypt_error",
    70: "protocol_version",
    71: "insufficient_security",
    80: "internal_error",
    86: "inappropriate_fallback",
    90: "user_canceled",
    109: "missing_extension",
    110: "unsupported_extension",
    112: "unrecognized_name",
    113: "bad_certificate_status_response",
    115: "unknown_psk_identity",
    116: "certificate_required",
    120: "no_application_protocol",
}
HELLO_RETRY_RANDOM = hashlib.sha256(b"HelloRetryRequest").digest()
"""The ServerHello.random that marks a HelloRetryRequest (RFC 8446 §4.1.3)."""


def name(table: Mapping[int, str], code: int) -> str:
    """``table[code]``, or the code in hex (``0x1a2b``) when unknown."""
    return table.get(code) or f"0x{code:04x}"


class _Short(Exception):
    """The input ended inside a field, or a length points past its end."""


class _Reader:
    """Reads big-endian fields from a bytes object, never past its end."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def left(self) -> int:
        return len(self._data) - self._pos

    def take(self, n: int) -> bytes:
        if n < 0 or n > self.left():
            raise _Short
        out = self._data[self._pos : self._pos + n]
        self._pos += n
        return out

    def take_all(self) -> bytes:
        return self.take(self.left())

    def peek(self, n: int) -> bytes:
        """Up to ``n`` bytes ahead, without consuming them."""
        return self._data[self._pos : self._pos + n]

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def vector(self, length_size: int) -> _Reader:
        return _Reader(self.take(self.uint(length_size)))

    def codes(self, length_size: int, size: int = 2) -> tuple[int, ...]:
        inner = self.vector(length_size)
        out: list[int] = []
        while inner.left() >= size and len(out) < MAX_ITEMS:
            out.append(inner.uint(size))
        return tuple(out)


S = TypeVar("S")
T = TypeVar("T")


def _tolerant(default: Any) -> Callable[[Callable[[S], T]], Callable[[S], T]]:
    """Read an extension's body on demand; a body that is cut short reads as ``default``."""

    def wrap(fn: Callable[[S], T]) -> Callable[[S], T]:
        @functools.wraps(fn)
        def read(self: S) -> T:
            try:
                return fn(self)
            except _Short:
                return cast(T, default)

        return read

    return wrap


@attrs.frozen
class Extension:
    """One extension: its code and raw body."""

    code: int
    body: bytes

    @property
    def name(self) -> str:
        return name(EXTENSIONS, self.code)


def _extensions(r: _Reader) -> tuple[Extension, ...]:
    if r.left() == 0:  # extensions are optional in TLS <= 1.2 hellos
        return ()
    inner = r.vector(2)
    out: list[Extension] = []
    while inner.left() and len(out) < MAX_ITEMS:
        code = inner.uint(2)
        out.append(Extension(code, inner.vector(2).take_all()))
    return tuple(out)


def _find(extensions: tuple[Extension, ...], code: int) -> bytes | None:
    return next((e.body for e in extensions if e.code == code), None)


def _alpn(body: bytes | None) -> tuple[str, ...]:
    if body is None:
        return ()
    inner = _Reader(body).vector(2)
    out: list[str] = []
    while inner.left() and len(out) < MAX_ITEMS:
        out.append(inner.vector(1).take_all().decode("ascii", "replace"))
    return tuple(out)


def _server_name(body: bytes | None) -> str | None:
    if not body:
        return None
    inner = _Reader(body).vector(2)
    while inner.left():
        kind = inner.uint(1)
        value = inner.vector(2).take_all()
        if kind == 0:
            return str(value.decode("ascii", "replace"))
    return None


@attrs.frozen
class ClientHello:
    """What the client offers (RFC 8446 §4.1.2).

    Attributes:
        legacy_version: the hello's version field (``0x0303`` for TLS 1.2 and 1.3).
        session_id: the legacy session id (TLS 1.2 resumption by id; a TLS 1.3 client fills it with noise).
        suites: cipher suite codes, the client's preference first.
        extensions: every extension, in order.
    """

    legacy_version: int
    session_id: bytes
    suites: tuple[int, ...]
    extensions: tuple[Extension, ...]

    @property
    @_tolerant(())
    def versions(self) -> tuple[str, ...]:
        """The versions offered: ``supported_versions`` if present, else the legacy version alone."""
        body = _find(self.extensions, 43)
        codes = _Reader(body).codes(1) if body is not None else (self.legacy_version,)
        return tuple(name(VERSIONS, c) for c in codes if c & 0x0F0F != 0x0A0A)  # skip GREASE

    @property
    def suite_names(self) -> tuple[str, ...]:
        return tuple(name(SUITES, c) for c in self.suites)

    @property
    @_tolerant(())
    def groups(self) -> tuple[str, ...]:
        body = _find(self.extensions, 10)
        return tuple(name(GROUPS, c) for c in _Reader(body).codes(2)) if body is not None else ()

    @property
    @_tolerant(())
    def key_shares(self) -> tuple[str, ...]:
        """The groups the client sent a key share for (TLS 1.3)."""
        body = _find(self.extensions, 51)
        if body is None:
            return ()
        inner = _Reader(body).vector(2)
        out: list[str] = []
        while inner.left() and len(out) < MAX_ITEMS:
            out.append(name(GROUPS, inner.uint(2)))
            inner.vector(2)
        return tuple(out)

    @property
    @_tolerant(())
    def signature_algorithms(self) -> tuple[str, ...]:
        body = _find(self.extensions, 13)
        return tuple(name(SIGNATURE_SCHEMES, c) for c in _Reader(body).codes(2)) if body is not None else ()

    @property
    @_tolerant(())
    def alpn(self) -> tuple[str, ...]:
        return _alpn(_find(self.extensions, 16))

    @property
    @_tolerant(None)
    def sni(self) -> str | None:
        return _server_name(_find(self.extensions, 0))

    @property
    def offers_psk(self) -> bool:
        """A TLS 1.3 resumption offer (``pre_shared_key``)."""
        return _find(self.extensions, 41) is not None

    @property
    def ticket(self) -> int | None:
        """Length of the TLS 1.2 ticket offered in ``session_ticket`` (0: "send me one"), None: absent."""
        body = _find(self.extensions, 35)
        return None if body is None else len(body)


@attrs.frozen
class ServerHello:
    """What the server chose (RFC 8446 §4.1.3); also a HelloRetryRequest (``retry``)."""

    legacy_version: int
    session_id: bytes
    suite: int
    extensions: tuple[Extension, ...]
    retry: bool = False

    @property
    @_tolerant("?")
    def version(self) -> str:
        body = _find(self.extensions, 43)
        code = _Reader(body).uint(2) if body is not None and len(body) >= 2 else self.legacy_version
        return name(VERSIONS, code)

    @property
    def suite_name(self) -> str:
        return name(SUITES, self.suite)

    @property
    @_tolerant(None)
    def group(self) -> str | None:
        """The key-share group (TLS 1.3; in a HelloRetryRequest the group it asks for)."""
        body = _find(self.extensions, 51)
        return name(GROUPS, _Reader(body).uint(2)) if body is not None and len(body) >= 2 else None

    @property
    def accepts_psk(self) -> bool:
        """The server resumes the offered TLS 1.3 session (``pre_shared_key`` selected)."""
        return _find(self.extensions, 41) is not None

    @property
    @_tolerant(None)
    def alpn(self) -> str | None:
        chosen = _alpn(_find(self.extensions, 16))
        return chosen[0] if chosen else None


@attrs.frozen
class EncryptedExtensions:
    """The server's TLS 1.3 extensions that need no ServerHello (ALPN, SNI acknowledgement...)."""

    extensions: tuple[Extension, ...]

    @property
    @_tolerant(None)
    def alpn(self) -> str | None:
        chosen = _alpn(_find(self.extensions, 16))
        return chosen[0] if chosen else None


@attrs.frozen
class Certificate:
    """A certificate chain as sent, DER, leaf first."""

    certificates: tuple[bytes, ...]


@attrs.frozen
class NewSessionTicket:
    """A session ticket (RFC 8446 §4.6.1; RFC 5077 §3.3 for TLS 1.2).

    Attributes:
        lifetime_s: seconds the client may use it (the TLS 1.2 hint: 0 = unspecified).
        ticket_bytes: length of the opaque ticket.
        tls13: the TLS 1.3 layout.
    """

    lifetime_s: int
    ticket_bytes: int
    tls13: bool


@attrs.frozen
class OtherMessage:
    """A handshake message this reader does not look into."""

    msg_type: int


@attrs.frozen
class Alert:
    """An alert (RFC 8446 §6): level 1 warning, 2 fatal."""

    level: int
    description: int

    @property
    def name(self) -> str:
        return ALERTS.get(self.description) or f"alert {self.description}"


@attrs.frozen
class Malformed:
    """Bytes that are not a readable message (cut short, a length past the end, too big)."""

    reason: str


Message: TypeAlias = (
    ClientHello
    | ServerHello
    | EncryptedExtensions
    | Certificate
    | NewSessionTicket
    | OtherMessage
    | Alert
    | Malformed
)


def message_name(msg_type: int) -> str:
    """A handshake type's name (``ClientHello``...), or its number."""
    return HANDSHAKE_TYPES.get(msg_type) or f"handshake type {msg_type}"


def parse_alert(data: bytes) -> Alert | Malformed:
    """An alert record's two bytes."""
    if len(data) != 2:
        return Malformed(f"an alert is 2 bytes, not {len(data)}")
    return Alert(data[0], data[1])


def parse_message(data: bytes, *, tls13: bool | None = None) -> Message:
    """One handshake message with its 4-byte header (type, 24-bit length).

    Args:
        data: the message.
        tls13: the negotiated version is TLS 1.3 (decides the Certificate and NewSessionTicket layouts);
            None: guess from the layout.

    Returns:
        The message read, :class:`OtherMessage` for types not looked into, :class:`Malformed` otherwise.
    """
    if len(data) > MAX_INPUT:
        return Malformed(f"{len(data)} bytes: over the {MAX_INPUT}-byte limit")
    try:
        r = _Reader(data)
        msg_type = r.uint(1)
        body = r.vector(3)
        if r.left():
            return Malformed(f"{r.left()} bytes after the message")
        return _parse_body(msg_type, body, tls13)
    except _Short:
        return Malformed("cut short (a length points past the end)")


def _parse_body(msg_type: int, r: _Reader, tls13: bool | None) -> Message:
    if msg_type == 1:
        version = r.uint(2)
        r.take(32)
        session_id = r.vector(1).take_all()
        suites = r.codes(2)
        r.vector(1)  # compression methods
        return ClientHello(version, session_id, suites, _extensions(r))
    if msg_type == 2:
        version = r.uint(2)
        random = r.take(32)
        session_id = r.vector(1).take_all()
        suite = r.uint(2)
        r.uint(1)  # compression method
        return ServerHello(version, session_id, suite, _extensions(r), random == HELLO_RETRY_RANDOM)
    if msg_type == 8:
        return EncryptedExtensions(_extensions(r))
    if msg_type == 11:
        return _certificate(r, tls13)
    if msg_type == 4:
        return _ticket(r, tls13)
    return OtherMessage(msg_type)


def _certificate(r: _Reader, tls13: bool | None) -> Certificate:
    if tls13 is None:  # TLS 1.3 starts with a one-byte context (empty: 0); TLS 1.2 with a 3-byte length
        tls13 = r.left() > 0 and r.left() - 4 == int.from_bytes(r.peek(4)[1:4], "big")
    if tls13:
        r.vector(1)  # certificate_request_context
    inner = r.vector(3)
    certs: list[bytes] = []
    while inner.left() and len(certs) < MAX_ITEMS:
        certs.append(inner.vector(3).take_all())
        if tls13:
            inner.vector(2)  # per-certificate extensions
    return Certificate(tuple(certs))


def _ticket(r: _Reader, tls13: bool | None) -> NewSessionTicket:
    lifetime = r.uint(4)
    if tls13 is None:
        tls13 = r.left() > 2 + int.from_bytes(r.peek(2), "big") if r.left() >= 2 else False
    if tls13:
        r.uint(4)  # ticket_age_add
        r.vector(1)  # nonce
    ticket = r.vector(2).left()
    return NewSessionTicket(lifetime, ticket, tls13)
