"""Capture the in-memory network to a pcapng file as synthetic Ethernet / IPv4 / TCP frames.

Theory of operation
-------------------
The virtual network moves bytes, not packets. A :class:`Capture` attached to it
(:meth:`~evsim.net.virtual.VirtualNetwork.attach_capture`) gets a :class:`LinkTap` per connection, and the
connection's pipes report to it: the bytes each end writes (when they enter the pipe, at
``trio.current_time()``), a FIN when an end sends EOF or closes, a reset when a fault breaks the link. The
tap turns that into what a TCP stack would have put on the wire:

* connect: SYN, SYN-ACK, ACK (MSS option 1460 on the first two), all at the connect time; a refused connect:
  a SYN, and an RST-ACK if nothing listens (a host down or partitioned answers nothing);
* data: segments of at most :data:`MSS` octets with ACK, PSH on the last one of a write; sequence numbers
  count from an initial one derived from the 4-tuple; acknowledgement numbers are what the other side had
  sent up to then (data is acknowledged implicitly by the next segment, no pure ACKs);
* EOF or close: FIN-ACK from that end and the ACK of it from the other;
* a fault (partition, host down, listener closed): RST-ACK from each end, then nothing more;
* a datagram (:meth:`Capture.datagram`, NTP): one UDP frame when it is sent, also if the network then drops it.

IPv4 header, TCP and UDP checksums are computed (the frames are what a stack without offloading sends).

Addresses (see scenarios/README.md, "Capturing a run"): each host name gets ``10.a.b.c`` from the first
octets of the SHA-256 of its name (``c`` in 1..254), so a host has the same address in every run and every
capture; a rare collision moves the later host on (hash of ``name#1``, ...). A host name that is an IPv4
literal keeps it. Ports are the virtual network's: the listener's port and the client end's ephemeral port.
MAC addresses are ``02:00`` followed by the IPv4 address. A Name Resolution Block gives each address its
host name.

Order and memory. Frames are written in timestamp order: events at one instant are held, then sorted by
connection (client host, server host, server port, client port) with each connection's frames in the order
they happened, and written when time moves on (or when :data:`TICK_LIMIT` frames wait at one instant, so
memory stays bounded during a storm at a single instant). TLS secrets given to :meth:`Capture.add_secrets`
at an instant go in a Decryption Secrets Block ahead of that instant's frames: a key is logged before any
record it protects is written, so a reader in one pass has it in time. Writes go to a buffered file, so
memory stays bounded whatever the length of the run.

Loopback TCP (:meth:`~evsim.net.tcp.TcpNetwork.attach_capture`): the client end of each connection
(:class:`~evsim.net.tcp.TappedTcpStream`) reports what it sends and what it reads, the same tap makes the frames.

Timestamps are ``epoch + trio.current_time()`` in nanoseconds: give ``epoch`` so that this is the
simulation's wall time (the world does).
"""

from __future__ import annotations

import hashlib
import ipaddress
import itertools
import struct
from pathlib import Path
from typing import BinaryIO

import trio

from evsim.errors import ConfigError
from evsim.net import pcapng

__all__ = ["MSS", "TICK_LIMIT", "Capture", "LinkTap", "host_ipv4", "open_capture_file"]

MSS = 1460
"""Largest TCP payload per frame: a 1500-octet Ethernet MTU less 20 octets each of IPv4 and TCP header."""

TICK_LIMIT = 4096
"""Frames held at one instant before they are written anyway (the bound on the capture's memory)."""

WINDOW = 65535
"""The advertised receive window (no window scaling)."""

_FIN, _SYN, _RST, _PSH, _ACK = 0x01, 0x02, 0x04, 0x08, 0x10
_ETHERTYPE_IPV4 = 0x0800
_PROTO_TCP = 6
_PROTO_UDP = 17
_TTL = 64
_FILE_BUFFER = 64 * 1024


def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _ipv4_frame(src: bytes, dst: bytes, proto: int, ip_id: int, transport: bytes) -> bytes:
    """An Ethernet frame (MACs ``02:00`` + address) carrying an IPv4 packet (DF, TTL 64) of ``transport``."""
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(transport), ip_id, 0x4000, _TTL, proto, 0, src, dst)
    ip = ip[:10] + _checksum(ip).to_bytes(2, "big") + ip[12:]
    return b"\x02\x00" + dst + b"\x02\x00" + src + _ETHERTYPE_IPV4.to_bytes(2, "big") + ip + transport


def host_ipv4(host: str, attempt: int = 0) -> bytes:
    """The address plan's IPv4 address for ``host`` (4 octets); ``attempt`` > 0 after a collision."""
    try:
        return ipaddress.IPv4Address(host).packed
    except ValueError:
        pass
    name = host if attempt == 0 else f"{host}#{attempt}"
    digest = hashlib.sha256(name.encode()).digest()
    return bytes((10, digest[0], digest[1], 1 + digest[2] % 254))


def open_capture_file(path: str | Path) -> BinaryIO:
    """Create (or empty) ``path`` for writing a capture, buffered.

    Raises:
        ConfigError: the file cannot be created.
    """
    try:
        return open(path, "wb", buffering=_FILE_BUFFER)
    except OSError as exc:
        raise ConfigError(
            f"cannot write the capture file: {exc.strerror or exc}",
            path="pcap",
            value=str(path),
            fix="give a path in a directory that exists and is writable",
        ) from exc


class LinkTap:
    """One captured connection: its TCP state per side (0 = client, 1 = server) and the frames so far."""

    __slots__ = ("_capture", "_fin", "_ip", "_ip_id", "_port", "_reset", "_seq", "key")

    def __init__(self, capture: Capture, client: tuple[str, int], server: tuple[str, int]) -> None:
        self._capture = capture
        self.key = (client[0], server[0], server[1], client[1])
        self._ip = (capture.address(client[0]), capture.address(server[0]))
        self._port = (client[1], server[1])
        digest = hashlib.sha256(repr(self.key).encode()).digest()
        self._seq = [int.from_bytes(digest[0:4], "big"), int.from_bytes(digest[4:8], "big")]
        self._ip_id = [0, 0]
        self._fin = [False, False]
        self._reset = False

    def handshake(self) -> None:
        """The connection was made: SYN, SYN-ACK, ACK."""
        self._segment(0, _SYN, b"", syn=True)
        self._segment(1, _SYN | _ACK, b"", syn=True)
        self._segment(0, _ACK, b"")

    def refused(self, *, answered: bool) -> None:
        """The connect failed: the client's SYN, and the server's RST-ACK if ``answered`` (nothing listens)."""
        self._segment(0, _SYN, b"", syn=True)
        if answered:
            self._segment(1, _RST | _ACK, b"")
        self._reset = True

    def data(self, side: int, chunk: bytes | bytearray | memoryview) -> None:
        """``side`` wrote ``chunk``: its segments."""
        if self._reset or self._fin[side]:
            return
        view = memoryview(chunk).cast("B")
        n = len(view)
        for start in range(0, n, MSS):
            last = start + MSS >= n
            self._segment(side, _ACK | (_PSH if last else 0), bytes(view[start : start + MSS]))

    def fin(self, side: int) -> None:
        """``side`` sent EOF or closed: its FIN and the other side's ACK (once)."""
        if self._reset or self._fin[side]:
            return
        self._fin[side] = True
        self._segment(side, _FIN | _ACK, b"")
        self._segment(1 - side, _ACK, b"")

    def reset(self) -> None:
        """The link broke: an RST from each end that had not finished (once)."""
        if self._reset:
            return
        self._reset = True
        for side in (0, 1):
            if not self._fin[side]:
                self._segment(side, _RST | _ACK, b"")

    def _segment(self, side: int, flags: int, payload: bytes, *, syn: bool = False) -> None:
        other = 1 - side
        seq = self._seq[side]
        ack = self._seq[other] if flags & _ACK else 0
        options = b"\x02\x04" + MSS.to_bytes(2, "big") if syn else b""
        offset = (20 + len(options)) // 4
        src, dst = self._ip[side], self._ip[other]
        tcp_len = 20 + len(options) + len(payload)
        header = struct.pack(
            "!HHIIBBHHH",
            self._port[side],
            self._port[other],
            seq,
            ack,
            offset << 4,
            flags,
            WINDOW,
            0,
            0,
        )
        pseudo = src + dst + struct.pack("!BBH", 0, _PROTO_TCP, tcp_len)
        check = _checksum(pseudo + header + options + payload)
        tcp = header[:16] + check.to_bytes(2, "big") + header[18:] + options
        ip_id = self._ip_id[side]
        self._ip_id[side] = (ip_id + 1) & 0xFFFF
        consumed = len(payload) + (1 if flags & (_SYN | _FIN) else 0)
        self._seq[side] = (seq + consumed) & 0xFFFFFFFF
        self._capture.frame(self.key, _ipv4_frame(src, dst, _PROTO_TCP, ip_id, tcp + payload))


class Capture:
    """A pcapng capture of the connections of an in-memory network (see the module docstring).

    Args:
        out: the binary file to write (the caller closes it), or a path to create.
        epoch: seconds added to ``trio.current_time()`` for the frames' timestamps.
        application: written in the section header (``shb_userappl``).
        tick_limit: frames held at one instant before they are written anyway.
    """

    def __init__(
        self,
        out: BinaryIO | str | Path,
        *,
        epoch: float = 0.0,
        application: str = "evsim",
        tick_limit: int = TICK_LIMIT,
    ) -> None:
        if isinstance(out, str | Path):
            self._out: BinaryIO = open_capture_file(out)
            self._owned = True
        else:
            self._out = out
            self._owned = False
        self._epoch_ns = round(epoch * 1e9)
        self._tick_limit = tick_limit
        self._tick: float | None = None
        self._held: list[tuple[tuple[str, str, int, int], int, bytes]] = []
        self._order = itertools.count()
        self._secrets = bytearray()
        self._secret_lines: set[bytes] = set()
        self._hosts: dict[str, bytes] = {}
        self._taken: set[bytes] = set()
        self._new_names: list[tuple[bytes, str]] = []
        self._closed = False
        self._refused_ports = itertools.cycle(range(32768, 49152))
        self._datagram_ids = itertools.count()
        self.frames = 0
        """Frames written so far."""
        self._out.write(pcapng.section_header(application) + pcapng.interface_description("evsim-virtual"))

    def address(self, host: str) -> bytes:
        """The IPv4 address (4 octets) of ``host`` in this capture (module docstring: address plan)."""
        known = self._hosts.get(host)
        if known is not None:
            return known
        attempt = 0
        ip = host_ipv4(host)
        while ip in self._taken:
            attempt += 1
            ip = host_ipv4(host, attempt)
        self._hosts[host] = ip
        self._taken.add(ip)
        self._new_names.append((ip, host))
        return ip

    def hosts(self) -> dict[str, str]:
        """Every host seen so far and its address, dotted."""
        return {host: str(ipaddress.IPv4Address(ip)) for host, ip in self._hosts.items()}

    def open_link(self, client: tuple[str, int], server: tuple[str, int]) -> LinkTap:
        """A new connection from ``client`` to ``server``: its handshake frames and its tap."""
        tap = LinkTap(self, client, server)
        tap.handshake()
        return tap

    def refused(self, client_host: str, server: tuple[str, int], *, answered: bool) -> None:
        """A connect from ``client_host`` to ``server`` that failed: a SYN from a port of 32768-49151 (a range
        the networks' connections never use), and an RST-ACK when ``answered`` (nothing listens there; a
        host down or partitioned answers nothing)."""
        port = next(self._refused_ports)
        LinkTap(self, (client_host, port), server).refused(answered=answered)

    def add_secrets(self, lines: bytes) -> None:
        """NSS key log lines (newline-terminated) for the next Decryption Secrets Block (a line both ends of a
        connection logged at one instant goes in once)."""
        if self._closed:
            return
        self._advance()
        for line in lines.splitlines(keepends=True):
            if line not in self._secret_lines:
                self._secret_lines.add(line)
                self._secrets += line

    def datagram(self, source: tuple[str, int], destination: tuple[str, int], payload: bytes) -> None:
        """A datagram ``source`` sent to ``destination`` (as it left the sender: also one the network then
        drops): a UDP frame, checksum included."""
        if self._closed:
            return
        src, dst = self.address(source[0]), self.address(destination[0])
        length = 8 + len(payload)
        header = struct.pack("!HHHH", source[1], destination[1], length, 0)
        check = _checksum(src + dst + struct.pack("!BBH", 0, _PROTO_UDP, length) + header + payload) or 0xFFFF
        udp = header[:6] + check.to_bytes(2, "big") + payload
        key = (source[0], destination[0], destination[1], source[1])
        self.frame(key, _ipv4_frame(src, dst, _PROTO_UDP, next(self._datagram_ids) & 0xFFFF, udp))

    def frame(self, key: tuple[str, str, int, int], frame: bytes) -> None:
        """Hold ``frame`` of the flow ``key`` (client host, server host, server port, client port) for the
        current instant (written in order, see the module docstring)."""
        if self._closed:
            return
        self._advance()
        self._held.append((key, next(self._order), frame))
        if len(self._held) >= self._tick_limit:
            self._flush()

    def _advance(self) -> None:
        now = trio.current_time()
        if self._tick is not None and now != self._tick:
            self._flush()
        self._tick = now

    def _flush(self) -> None:
        out = self._out
        if self._new_names:
            out.write(pcapng.name_resolution(self._new_names))
            self._new_names = []
        if self._secrets:
            out.write(pcapng.decryption_secrets(bytes(self._secrets)))
            self._secrets.clear()
            self._secret_lines.clear()
        if not self._held:
            return
        assert self._tick is not None
        ts = self._epoch_ns + round(self._tick * 1e9)
        self._held.sort(key=lambda held: (held[0], held[1]))
        for _, _, frame in self._held:
            out.write(pcapng.enhanced_packet(0, ts, frame))
        self.frames += len(self._held)
        self._held.clear()

    def close(self) -> None:
        """Write what is held and close the file if this capture opened it (idempotent)."""
        if self._closed:
            return
        self._flush()
        self._closed = True
        if self._owned:
            self._out.close()
        else:
            self._out.flush()
