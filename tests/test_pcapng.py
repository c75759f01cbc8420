"""The pcapng writer (sans-IO) and the in-memory network's capture tap, read back with a tiny pcapng reader."""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from evsim.cli import main
from evsim.errors import ConfigError, ConnectionRefused
from evsim.net import pcapng
from evsim.net.capture import MSS, Capture, host_ipv4
from evsim.net.pipe import TappedPipe
from evsim.net.virtual import LinkPolicy, VirtualNetwork

# ---------------------------------------------------------------------------- a tiny reader


def blocks(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(type, body) of each block; checks both length fields and 4-octet alignment."""
    at = 0
    while at < len(data):
        block_type, total = struct.unpack_from("<II", data, at)
        assert total % 4 == 0 and total >= 12
        assert struct.unpack_from("<I", data, at + total - 4)[0] == total
        yield block_type, data[at + 8 : at + total - 4]
        at += total
    assert at == len(data)


def options(body: bytes) -> dict[int, bytes]:
    """Options of a block body (starting at its first option): code -> value; checks padding and the end."""
    found: dict[int, bytes] = {}
    at = 0
    while True:
        code, length = struct.unpack_from("<HH", body, at)
        at += 4
        if code == 0:
            assert length == 0 and at == len(body)
            return found
        found[code] = body[at : at + length]
        at += length + (-length % 4)


def packets(data: bytes) -> list[tuple[int, bytes]]:
    """(timestamp, frame) of every EPB."""
    out = []
    for block_type, body in blocks(data):
        if block_type == pcapng.BLOCK_EPB:
            iface, high, low, caplen, origlen = struct.unpack_from("<IIIII", body)
            assert iface == 0 and caplen == origlen
            out.append(((high << 32) | low, body[20 : 20 + caplen]))
    return out


def secrets(data: bytes) -> bytes:
    out = b""
    for block_type, body in blocks(data):
        if block_type == pcapng.BLOCK_DSB:
            kind, length = struct.unpack_from("<II", body)
            assert kind == pcapng.SECRETS_TLS_KEYLOG
            out += body[8 : 8 + length]
    return out


def tcp(frame: bytes) -> tuple[int, int, int, int, int, bytes]:
    """(src port, dst port, seq, ack, flags, payload) of an Ethernet/IPv4/TCP frame."""
    assert frame[12:14] == b"\x08\x00"
    ip = frame[14:]
    ihl = (ip[0] & 0x0F) * 4
    total = struct.unpack_from("!H", ip, 2)[0]
    seg = ip[ihl:total]
    sport, dport, seq, ack, off, flags = struct.unpack_from("!HHIIBB", seg)
    return sport, dport, seq, ack, flags, seg[(off >> 4) * 4 :]


def _internet_sum(data: bytes) -> int:
    data += b"\0" * (len(data) % 2)
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


# ---------------------------------------------------------------------------- sans-IO blocks


def test_section_and_interface_blocks() -> None:
    data = pcapng.section_header("evsim test") + pcapng.interface_description("virt", tsresol=9)
    (shb_type, shb), (idb_type, idb) = blocks(data)
    assert shb_type == pcapng.BLOCK_SHB and idb_type == pcapng.BLOCK_IDB
    magic, major, minor, section_len = struct.unpack_from("<IHHq", shb)
    assert (magic, major, minor, section_len) == (0x1A2B3C4D, 1, 0, -1)
    assert options(shb[16:]) == {4: b"evsim test"}
    linktype, _reserved, snaplen = struct.unpack_from("<HHI", idb)
    assert (linktype, snaplen) == (pcapng.LINKTYPE_ETHERNET, 0)
    assert options(idb[8:]) == {2: b"virt", 9: b"\x09"}


@given(frame=st.binary(max_size=70), ts=st.integers(0, 2**64 - 1))
def test_enhanced_packet_round_trips(frame: bytes, ts: int) -> None:
    block = pcapng.enhanced_packet(0, ts, frame)
    assert len(block) % 4 == 0
    assert packets(block) == [(ts, frame)]


def test_enhanced_packet_refuses_a_timestamp_out_of_range() -> None:
    with pytest.raises(ValueError, match="64-bit"):
        pcapng.enhanced_packet(0, 2**64, b"")
    with pytest.raises(ValueError, match="64-bit"):
        pcapng.enhanced_packet(0, -1, b"")


@given(lines=st.binary(max_size=200))
def test_decryption_secrets_round_trip(lines: bytes) -> None:
    block = pcapng.decryption_secrets(lines)
    assert secrets(block) == lines


def test_name_resolution_block() -> None:
    ((block_type, body),) = blocks(pcapng.name_resolution([(b"\x0a\x01\x02\x03", "csms.evsim.test")]))
    assert block_type == pcapng.BLOCK_NRB
    code, length = struct.unpack_from("<HH", body)
    assert code == 1 and body[4 : 4 + length] == b"\x0a\x01\x02\x03csms.evsim.test\0"
    assert body[-4:] == b"\0\0\0\0"  # nrb_record_end
    with pytest.raises(ValueError, match="4 octets"):
        pcapng.name_resolution([(b"\x01\x02", "short")])


def test_address_plan_is_stable_and_private() -> None:
    ip = host_ipv4("ST-0001")
    assert ip == host_ipv4("ST-0001") and ip[0] == 10 and 1 <= ip[3] <= 254
    assert host_ipv4("ST-0001", 1) != ip
    assert host_ipv4("192.0.2.7") == bytes((192, 0, 2, 7))


# ---------------------------------------------------------------------------- the tap on the virtual network


def captured_network(**options: Any) -> tuple[io.BytesIO, Capture, VirtualNetwork]:
    """A virtual network captured into memory: (the file, the capture, the network)."""
    out = io.BytesIO()
    capture = Capture(out, **options)
    net = VirtualNetwork()
    net.attach_capture(capture)
    return out, capture, net


async def _exchange(net: VirtualNetwork, payload: bytes) -> None:
    listener = await net.listen("server", 443)

    async def serve() -> None:
        conn = await listener.accept()
        got = b""
        while len(got) < len(payload):
            got += await conn.receive_some()
        await trio.sleep(1)
        await conn.send_all(b"reply")
        await conn.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        client = await net.connect("server", 443, source="client-host")
        await trio.sleep(0.25)
        await client.send_all(payload)
        assert await client.receive_some() == b"reply"
        assert await client.receive_some() == b""
        await client.aclose()


async def test_tap_writes_a_tcp_conversation(autojump_clock: trio.testing.MockClock) -> None:
    out, capture, net = captured_network(epoch=1000.0)
    payload = bytes(range(256)) * 20  # 5120 octets: four segments
    with trio.fail_after(60):
        await _exchange(net, payload)
    capture.add_secrets(b"CLIENT_RANDOM 00 11\n")
    capture.add_secrets(b"CLIENT_RANDOM 00 11\n")  # the other end logs the same line: kept once
    capture.close()
    data = out.getvalue()
    assert secrets(data) == b"CLIENT_RANDOM 00 11\n"
    pkts = packets(data)
    assert [ts for ts, _ in pkts] == sorted(ts for ts, _ in pkts)
    assert pkts[0][0] == 1000 * 10**9
    segs = [tcp(f) for _, f in pkts]
    flags = [s[4] for s in segs]
    assert flags[:3] == [0x02, 0x12, 0x10]  # SYN, SYN-ACK, ACK
    client_port = segs[0][0]
    sent = [s for s in segs if s[0] == client_port and s[5]]
    assert b"".join(s[5] for s in sent) == payload
    assert [len(s[5]) for s in sent] == [MSS, MSS, MSS, len(payload) - 3 * MSS]
    assert [s[4] & 0x08 for s in sent] == [0, 0, 0, 0x08]  # PSH on the last segment of the write
    isn = segs[0][2]
    assert [s[2] for s in sent] == [(isn + 1 + i * MSS) & 0xFFFFFFFF for i in range(4)]
    reply = next(s for s in segs if s[1] == client_port and s[5])
    assert reply[5] == b"reply"
    assert reply[3] == (isn + 1 + len(payload)) & 0xFFFFFFFF  # acknowledges everything the client sent
    assert reply[2] == (segs[1][2] + 1) & 0xFFFFFFFF
    fins = [s for s in segs if s[4] & 0x01]
    assert [s[1] == client_port for s in fins] == [True, False]  # the server closes first
    # checksums: IPv4 header and TCP (over the pseudo header) verify to 0xFFFF
    for _, frame in pkts:
        ip = frame[14:34]
        assert _internet_sum(ip) == 0xFFFF
        seg = frame[34:]
        pseudo = ip[12:20] + struct.pack("!BBH", 0, 6, len(seg))
        assert _internet_sum(pseudo + seg) == 0xFFFF


async def test_tap_resets_a_partitioned_link(autojump_clock: trio.testing.MockClock) -> None:
    out, capture, net = captured_network()
    await net.listen("b", 1)
    stream = await net.connect("b", 1, source="a")
    await stream.send_all(b"x")
    net.partition("a", "b")
    await stream.aclose()
    capture.close()
    flags = [tcp(f)[4] for _, f in packets(out.getvalue())]
    assert flags == [0x02, 0x12, 0x10, 0x18, 0x14, 0x14]  # handshake, data, an RST-ACK from each end
    assert not any(f & 0x01 for f in flags)  # nothing after the reset


async def test_frames_at_one_instant_are_sorted_by_connection(autojump_clock: trio.testing.MockClock) -> None:
    """Connections opened in any order at one instant come out in the same order (by client host)."""

    async def capture_of(order: list[str]) -> list[bytes]:
        out, capture, net = captured_network()
        await net.listen("server", 443)
        for host in order:
            await net.connect("server", 443, source=host)
        await trio.sleep(1)
        capture.close()
        return [tcp(f)[5] + f[26:34] for _, f in packets(out.getvalue())]  # IP source and destination

    forward = await capture_of(["a", "b", "c"])
    backward = await capture_of(["c", "b", "a"])
    assert len(forward) == 9
    assert forward == backward


async def test_tick_limit_bounds_what_waits(autojump_clock: trio.testing.MockClock) -> None:
    _, capture, net = captured_network(tick_limit=4)
    await net.listen("server", 443)
    await net.connect("server", 443, source="a")
    await net.connect("server", 443, source="b")
    assert capture.frames == 4  # written before time moved on
    capture.close()
    assert capture.frames == 6


async def test_uncaptured_links_use_plain_pipes(autojump_clock: trio.testing.MockClock) -> None:
    """Without a capture the pipes are the plain kind, on the send fast path (no tap cost)."""
    net = VirtualNetwork()
    await net.listen("server", 443)
    stream = await net.connect("server", 443, source="a")
    pipe = stream._out  # the pipe kind is the point of this test
    direct: list[bool] = [pipe.direct]
    net.set_link_policy("a", "server", LinkPolicy(latency_s=0.01))
    direct.append(pipe.direct)
    net.set_link_policy("a", "server", LinkPolicy())
    direct.append(pipe.direct)
    assert not isinstance(pipe, TappedPipe) and direct == [True, False, True]
    capture = Capture(io.BytesIO())
    net.attach_capture(capture)
    tapped = await net.connect("server", 443, source="a")
    assert isinstance(tapped._out, TappedPipe) and not tapped._out.direct
    capture.close()


def test_a_capture_file_that_cannot_be_written_is_refused_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "missing" / "run.pcapng"
    with pytest.raises(ConfigError, match="cannot write the capture file"):
        Capture(bad)
    scenario = Path(__file__).resolve().parent.parent / "scenarios" / "default.toml"
    assert main(["run", str(scenario), "--out", str(tmp_path), "--no-live", "--pcap", str(bad)]) == 2
    assert "cannot write the capture file" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # no run directory either


async def test_tap_shows_refused_connects(autojump_clock: trio.testing.MockClock) -> None:
    """Nothing listening: SYN and RST-ACK; a partition: a SYN nobody answers."""
    out, capture, net = captured_network()
    await net.listen("b", 1)
    with pytest.raises(ConnectionRefused):
        await net.connect("b", 2, source="a")  # nothing listens there
    await trio.sleep(1)
    net.partition("a", "b")
    with pytest.raises(ConnectionRefused):
        await net.connect("b", 1, source="a")
    capture.close()
    segs = [tcp(f) for _, f in packets(out.getvalue())]
    assert [(s[1], s[4]) for s in segs] == [(2, 0x02), (segs[0][0], 0x14), (1, 0x02)]
    assert segs[1][3] == (segs[0][2] + 1) & 0xFFFFFFFF  # the RST acknowledges the SYN
    assert all(32768 <= s[0] < 49152 for s in (segs[0], segs[2]))


async def test_tap_writes_datagrams_as_udp(autojump_clock: trio.testing.MockClock) -> None:
    out, capture, net = captured_network()
    server = await net.bind_datagram("time", 123)
    client = await net.bind_datagram("station", 0)
    await client.send_to(b"request", ("time", 123))
    await client.send_to(b"lost", ("nobody", 123))  # dropped by the network, still seen leaving the sender
    assert (await server.receive_from())[0] == b"request"
    capture.close()
    frames = [f for _, f in packets(out.getvalue())]
    assert [f[23] for f in frames] == [17, 17]  # IPv4 protocol: UDP
    for frame in frames:
        ip, udp = frame[14:34], frame[34:]
        assert _internet_sum(ip) == 0xFFFF
        assert _internet_sum(ip[12:20] + struct.pack("!BBH", 0, 17, len(udp)) + udp) == 0xFFFF
    # one instant: ordered by flow (sender host, then destination host "nobody" < "time")
    assert [f[34 + 8 :] for f in frames] == [b"lost", b"request"]
    assert struct.unpack_from("!H", frames[1], 34 + 2)[0] == 123
