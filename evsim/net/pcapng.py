"""A sans-IO pcapng writer: the blocks evsim's captures need, as bytes.

Theory of operation
-------------------
A pcapng file (draft-ietf-opsawg-pcapng, "PCAP Next Generation Dump File Format") is a sequence of blocks;
each block is ``type (u32) | total length (u32) | body, padded to 4 octets | total length (u32)``, all
numbers in the byte order the Section Header Block declares (we write little-endian). Options inside a body
are ``code (u16) | length (u16) | value, padded to 4 octets`` and end with ``opt_endofopt`` (code 0).

The functions here only build bytes (no files, no clock): the caller writes them in order. A capture is one
:func:`section_header`, then :func:`interface_description` blocks (their order numbers the interfaces from
0), then any mix of :func:`enhanced_packet`, :func:`decryption_secrets` and :func:`name_resolution` blocks.

Blocks used (section numbers of the draft, version 03):

* SHB 0x0A0D0D0A (§4.1), byte-order magic 0x1A2B3C4D, version 1.0, section length -1 (not given).
* IDB 0x00000001 (§4.2): link type 1 (LINKTYPE_ETHERNET), ``if_name`` (2), ``if_tsresol`` (9).
* EPB 0x00000006 (§4.3): interface id, 64-bit timestamp split high/low, captured and original length.
* NRB 0x00000004 (§4.5): ``nrb_record_ipv4`` (1) entries and ``nrb_record_end`` (0).
* DSB 0x0000000A (§4.7): secrets type (``TLS_KEYLOG`` = 0x544C534B, NSS key log lines), length, data.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

__all__ = [
    "BLOCK_DSB",
    "BLOCK_EPB",
    "BLOCK_IDB",
    "BLOCK_NRB",
    "BLOCK_SHB",
    "LINKTYPE_ETHERNET",
    "SECRETS_TLS_KEYLOG",
    "decryption_secrets",
    "enhanced_packet",
    "interface_description",
    "name_resolution",
    "section_header",
]

BLOCK_SHB = 0x0A0D0D0A
BLOCK_IDB = 0x00000001
BLOCK_NRB = 0x00000004
BLOCK_EPB = 0x00000006
BLOCK_DSB = 0x0000000A

BYTE_ORDER_MAGIC = 0x1A2B3C4D
LINKTYPE_ETHERNET = 1
SECRETS_TLS_KEYLOG = 0x544C534B
"""DSB secrets type of NSS key log lines ("TLSK"), what Wireshark's TLS dissector reads."""

_OPT_END = 0
_OPT_SHB_USERAPPL = 4
_OPT_IF_NAME = 2
_OPT_IF_TSRESOL = 9
_NRB_END = 0
_NRB_IPV4 = 1


def _pad(n: int) -> int:
    """Octets of padding after ``n`` octets to reach a multiple of 4."""
    return -n % 4


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * _pad(len(value))


def _options(options: Iterable[tuple[int, bytes]]) -> bytes:
    body = b"".join(_option(code, value) for code, value in options)
    return body + struct.pack("<HH", _OPT_END, 0) if body else b""


def _block(block_type: int, body: bytes) -> bytes:
    body += b"\0" * _pad(len(body))
    total = len(body) + 12
    return struct.pack("<II", block_type, total) + body + struct.pack("<I", total)


def section_header(application: str = "") -> bytes:
    """The Section Header Block that starts a file (little-endian, version 1.0, length not given)."""
    opts = [(_OPT_SHB_USERAPPL, application.encode())] if application else []
    body = struct.pack("<IHHq", BYTE_ORDER_MAGIC, 1, 0, -1) + _options(opts)
    return _block(BLOCK_SHB, body)


def interface_description(name: str, *, linktype: int = LINKTYPE_ETHERNET, tsresol: int = 9) -> bytes:
    """An Interface Description Block: ``linktype``, no snap length limit, timestamps in 10**-``tsresol`` s.

    Raises:
        ValueError: ``tsresol`` is not in 0..127 (a power of ten, §4.2 ``if_tsresol``).
    """
    if not 0 <= tsresol <= 127:
        raise ValueError("tsresol must be a power-of-ten exponent in 0..127")
    opts = [(_OPT_IF_NAME, name.encode()), (_OPT_IF_TSRESOL, bytes([tsresol]))]
    body = struct.pack("<HHI", linktype, 0, 0) + _options(opts)
    return _block(BLOCK_IDB, body)


def enhanced_packet(interface: int, timestamp: int, frame: bytes) -> bytes:
    """An Enhanced Packet Block: ``frame`` (captured whole) at ``timestamp`` in the interface's units.

    Raises:
        ValueError: a negative timestamp or one that does not fit 64 bits.
    """
    if not 0 <= timestamp < 1 << 64:
        raise ValueError("timestamp must fit an unsigned 64-bit integer")
    n = len(frame)
    head = struct.pack("<IIIII", interface, timestamp >> 32, timestamp & 0xFFFFFFFF, n, n)
    return _block(BLOCK_EPB, head + frame)


def decryption_secrets(data: bytes, *, secrets_type: int = SECRETS_TLS_KEYLOG) -> bytes:
    """A Decryption Secrets Block; by default NSS key log lines (each ending in a newline)."""
    return _block(BLOCK_DSB, struct.pack("<II", secrets_type, len(data)) + data)


def name_resolution(ipv4_names: Iterable[tuple[bytes, str]]) -> bytes:
    """A Name Resolution Block mapping 4-octet IPv4 addresses to host names.

    Raises:
        ValueError: an address that is not 4 octets.
    """
    records = b""
    for address, name in ipv4_names:
        if len(address) != 4:
            raise ValueError("an IPv4 address is 4 octets")
        records += _option(_NRB_IPV4, address + name.encode() + b"\0")
    return _block(BLOCK_NRB, records + struct.pack("<HH", _NRB_END, 0))
