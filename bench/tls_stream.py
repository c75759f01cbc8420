"""Benchmark: evsim's TlsStream against a raw pyOpenSSL memory-BIO loop (same process, same machine).

Rows (name, value, unit) from :func:`run`:

* ``raw_handshake_plain``: full TLS 1.3 handshakes/s, both ends in one loop, plain pyOpenSSL contexts
  (OpenSSL's default verification, no Python callback) - the floor.
* ``raw_handshake_evsim_ctx``: the same loop on evsim's compiled contexts (verify callback, hostname
  check, per-connection verification time) - what the engine costs with evsim's checks.
* ``stream_handshake``: handshakes/s through ``tls_connect``/``tls_accept`` over
  ``trio.testing.memory_stream_pair`` (a nursery and two trio tasks per handshake, one after another).
* ``stream_handshake_lean``: the same over :class:`LeanPipe`, a minimal in-memory transport (what a lean
  virtual-network pipe costs; ``memory_stream_pair`` is a test utility with pumps and conflict detectors).
* ``harness_floor_*_us``: the same nursery/tasks/transport exchanging handshake-sized messages without
  TLS: the part of a handshake that is trio and transport, not TlsStream.
* ``stream_vs_raw_*``: ratios (time per handshake through the stream / raw loop; target <= 1.2).
* ``stream_python_us``: the stream's own Python per handshake pair: TlsStream driven by a scripted
  engine that produces handshake-sized flights instantly, over :class:`LeanPipe`, minus the lean floor.
* ``sslstream_vs_raw_stdlib``: the same measurement for ``trio.SSLStream`` against a raw stdlib ``ssl``
  memory-BIO loop (stdlib ``ssl`` links its own OpenSSL, so compare this ratio, not the absolute times).
* ``concurrent_1000_handshakes``: wall seconds for 1000 client/server pairs handshaking concurrently.
* ``roundtrip_200B``: µs per 200-byte request + 200-byte response over an established pair.
* ``memory_roundtrip_200B``: the same over bare memory streams (no TLS), for the trio floor.
* ``bulk``: MiB/s one way, 64 KiB writes.

Shared machines are noisy: compare ratios from one run, not absolute numbers across runs. The handshake
variants are measured in interleaved rounds (each round runs every variant once), and each figure is the
best round, so slow phases of the machine hit all variants alike. Run: ``python -m bench.tls_stream``.
"""

from __future__ import annotations

import ssl
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio
import trio.testing
from OpenSSL import SSL

from evsim.clock import real_utcnow
from evsim.pki import CertificateAuthority, certs_to_pem, key_to_pem
from evsim.tls import (
    ClientTls,
    Identity,
    ServerTls,
    TlsProfile,
    TlsStream,
    TrustStore,
    tls_accept,
    tls_connect,
)
from evsim.tls.verify import VerifyState

NOW = real_utcnow().replace(microsecond=0)  # the plain-pyOpenSSL baseline verifies at the real clock
HOST = "csms.evsim.test"


def _pki() -> tuple[ClientTls, ServerTls, CertificateAuthority, Identity]:
    root = CertificateAuthority.create_root("bench root", "evsim", now=NOW)
    identity = Identity.from_cert_key(root.issue_server(HOST, now=NOW))
    profile = TlsProfile(versions=("1.3",))
    client = ClientTls.build(profile, TrustStore("bench", (root.cert,)))
    server = ServerTls.build(profile, identity)
    return client, server, root, identity


def _plain_contexts(root: CertificateAuthority, identity: Identity) -> tuple[SSL.Context, SSL.Context]:
    from OpenSSL import crypto

    c = SSL.Context(SSL.TLS_CLIENT_METHOD)
    c.set_min_proto_version(SSL.TLS1_3_VERSION)
    store = c.get_cert_store()
    assert store is not None
    store.add_cert(crypto.X509.from_cryptography(root.cert))
    c.set_verify(SSL.VERIFY_PEER)
    s = SSL.Context(SSL.TLS_SERVER_METHOD)
    s.set_min_proto_version(SSL.TLS1_3_VERSION)
    leaf: Any = identity.leaf  # pyOpenSSL takes cryptography objects; the installed stubs predate that
    key: Any = identity.key
    s.use_certificate(leaf)
    s.use_privatekey(key)
    return c, s


def _pump(a: SSL.Connection, b: SSL.Connection) -> None:
    try:
        while True:
            b.bio_write(a.bio_read(65536))
    except SSL.WantReadError:
        pass


def _raw_handshake(
    new_client: Callable[[], SSL.Connection], new_server: Callable[[], SSL.Connection]
) -> None:
    c, s = new_client(), new_server()
    done_c = done_s = False
    while not (done_c and done_s):
        if not done_c:
            try:
                c.do_handshake()
                done_c = True
            except SSL.WantReadError:
                pass
            _pump(c, s)
        if not done_s:
            try:
                s.do_handshake()
                done_s = True
            except SSL.WantReadError:
                pass
            _pump(s, c)


def _best(fn: Callable[[], float], repeat: int) -> float:
    return min(fn() for _ in range(repeat))


class _ScriptedEngine:
    """Stands in for ``SSL.Connection`` in a handshake: each ``do_handshake`` emits the next flight."""

    def __init__(self, flights: list[tuple[bytes, bool]]) -> None:
        self._flights = flights
        self._out = b""

    def do_handshake(self) -> None:
        out, want_read = self._flights.pop(0)
        self._out += out
        if want_read:
            raise SSL.WantReadError()

    def bio_read(self, size: int) -> bytes:
        if not self._out:
            raise SSL.WantReadError()
        data, self._out = self._out[:size], self._out[size:]
        return data

    def bio_write(self, data: bytes) -> int:
        return len(data)

    def bio_shutdown(self) -> None:
        pass

    def recv(self, bufsiz: int) -> bytes:  # application data: none in a handshake-only script
        raise SSL.WantReadError()

    def send(self, data: bytes) -> int:
        return len(data)


def _stdlib_contexts(root: CertificateAuthority, identity: Identity) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    client = ssl.create_default_context(cadata=certs_to_pem([root.cert]).decode())
    client.minimum_version = ssl.TLSVersion.TLSv1_3
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.minimum_version = ssl.TLSVersion.TLSv1_3
    with tempfile.TemporaryDirectory() as d:  # load_cert_chain only reads files
        Path(d, "s.pem").write_bytes(certs_to_pem(identity.chain))
        Path(d, "s.key").write_bytes(key_to_pem(identity.key))
        server.load_cert_chain(Path(d, "s.pem"), Path(d, "s.key"))
    return client, server


def _raw_stdlib_handshake(client: ssl.SSLContext, server: ssl.SSLContext) -> None:
    ci, co, si, so = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    c = client.wrap_bio(ci, co, server_hostname=HOST)
    s = server.wrap_bio(si, so, server_side=True)
    done_c = done_s = False
    while not (done_c and done_s):
        if not done_c:
            try:
                c.do_handshake()
                done_c = True
            except ssl.SSLWantReadError:
                pass
            si.write(co.read())
        if not done_s:
            try:
                s.do_handshake()
                done_s = True
            except ssl.SSLWantReadError:
                pass
            ci.write(so.read())


class _Buffer:
    __slots__ = ("closed", "data", "lot")

    def __init__(self) -> None:
        self.data = bytearray()
        self.lot = trio.lowlevel.ParkingLot()
        self.closed = False


class LeanPipe(trio.abc.Stream):
    """One end of a minimal unbounded in-memory duplex pipe (benchmark transport; no conflict checks)."""

    def __init__(self, rx: _Buffer, tx: _Buffer) -> None:
        self._rx, self._tx = rx, tx

    @classmethod
    def pair(cls) -> tuple[LeanPipe, LeanPipe]:
        a, b = _Buffer(), _Buffer()
        return cls(a, b), cls(b, a)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._tx.closed:
            raise trio.BrokenResourceError
        self._tx.data += data
        self._tx.lot.unpark_all()
        await trio.lowlevel.checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        rx = self._rx
        while not rx.data and not rx.closed:
            await rx.lot.park()
        n = max_bytes or 65536
        out = bytes(rx.data[:n])
        del rx.data[:n]
        if not out:
            await trio.lowlevel.checkpoint()
        return out

    async def aclose(self) -> None:
        self._tx.closed = True
        self._tx.lot.unpark_all()
        await trio.lowlevel.checkpoint()


def run(n: int = 1000, roundtrips: int = 5000, repeat: int = 3) -> list[tuple[str, float, str]]:
    """Run the benchmark.

    Args:
        n: handshakes per measurement (the concurrent one always runs ``n`` pairs at once).
        roundtrips: 200-byte round trips per measurement.
        repeat: rounds (the best of each figure is kept).

    Returns:
        Rows of (name, value, unit).
    """
    client_tls, server_tls, root, identity = _pki()
    plain_c, plain_s = _plain_contexts(root, identity)

    def plain_client() -> SSL.Connection:
        conn = SSL.Connection(plain_c, None)
        conn.set_connect_state()
        return conn

    def plain_server() -> SSL.Connection:
        conn = SSL.Connection(plain_s, None)
        conn.set_accept_state()
        return conn

    def evsim_client() -> SSL.Connection:
        return client_tls.new_connection(HOST, lambda: NOW)[0]

    def evsim_server() -> SSL.Connection:
        return server_tls.new_connection()[0]

    def raw(new_c: Callable[[], SSL.Connection], new_s: Callable[[], SSL.Connection]) -> float:
        t = time.perf_counter()
        for _ in range(n):
            _raw_handshake(new_c, new_s)
        return time.perf_counter() - t

    Maker = Callable[[], tuple[trio.abc.Stream, trio.abc.Stream]]

    async def one_handshake(make: Maker = trio.testing.memory_stream_pair) -> None:
        a, b = make()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(tls_accept, b, server_tls)
            await tls_connect(a, client_tls, HOST, verify_time=lambda: NOW)

    async def fake_handshake(make: Maker) -> None:
        a, b = make()

        async def server() -> None:
            await b.receive_some(65536)  # ClientHello
            await b.send_all(b"s" * 2000)  # ServerHello .. Finished
            await b.receive_some(65536)  # client Finished
            await b.send_all(b"t" * 500)  # session tickets

        async with trio.open_nursery() as nursery:
            nursery.start_soon(server)
            await a.send_all(b"c" * 1500)
            await a.receive_some(65536)
            await a.send_all(b"f" * 80)

    async def sequential(fn: Callable[[Maker], Awaitable[None]], make: Maker) -> float:
        t = time.perf_counter()
        for _ in range(n):
            await fn(make)
        return time.perf_counter() - t

    async def concurrent() -> float:
        t = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(one_handshake)
        return time.perf_counter() - t

    async def scripted_handshake(make: Maker) -> None:
        a, b = make()
        client_engine: Any = _ScriptedEngine([(b"c" * 1500, True), (b"f" * 80, False)])
        server_engine: Any = _ScriptedEngine([(b"s" * 2000, True), (b"t" * 500, False)])
        c = TlsStream(a, client_tls, client_engine, VerifyState(None, None), server_hostname=None)
        s = TlsStream(b, server_tls, server_engine, VerifyState(None, None), server_hostname=None)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(s.do_handshake)
            await c.do_handshake()

    std_client, std_server = _stdlib_contexts(root, identity)

    async def sslstream_handshake(make: Maker) -> None:
        a, b = make()
        c = trio.SSLStream(a, std_client, server_hostname=HOST)
        s = trio.SSLStream(b, std_server, server_side=True)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(s.do_handshake)
            await c.do_handshake()

    def raw_stdlib() -> float:
        t = time.perf_counter()
        for _ in range(n):
            _raw_stdlib_handshake(std_client, std_server)
        return time.perf_counter() - t

    memory: Maker = trio.testing.memory_stream_pair
    variants: dict[str, Callable[[], float]] = {
        "raw_plain": lambda: raw(plain_client, plain_server),
        "raw_evsim": lambda: raw(evsim_client, evsim_server),
        "stream": lambda: trio.run(sequential, one_handshake, memory),
        "stream_lean": lambda: trio.run(sequential, one_handshake, LeanPipe.pair),
        "floor_memory": lambda: trio.run(sequential, fake_handshake, memory),
        "floor_lean": lambda: trio.run(sequential, fake_handshake, LeanPipe.pair),
        "scripted_lean": lambda: trio.run(sequential, scripted_handshake, LeanPipe.pair),
        "raw_stdlib": raw_stdlib,
        "sslstream": lambda: trio.run(sequential, sslstream_handshake, memory),
        "concurrent": lambda: trio.run(concurrent),
    }
    best = dict.fromkeys(variants, float("inf"))
    for _ in range(repeat):
        for name, fn in variants.items():
            best[name] = min(best[name], fn())
    raw_plain, raw_evsim = best["raw_plain"], best["raw_evsim"]
    stream_seq, stream_lean, stream_conc = best["stream"], best["stream_lean"], best["concurrent"]
    floor_memory, floor_lean = best["floor_memory"], best["floor_lean"]

    async def pair() -> tuple[TlsStream, TlsStream]:
        a, b = trio.testing.memory_stream_pair()
        out: list[TlsStream] = []

        async def accept() -> None:
            out.append(await tls_accept(b, server_tls))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(accept)
            c = await tls_connect(a, client_tls, HOST, verify_time=lambda: NOW)
        return c, out[0]

    async def echo_roundtrips(c: trio.abc.Stream, s: trio.abc.Stream) -> float:
        msg = b"x" * 200

        async def echo() -> None:
            for _ in range(roundtrips):
                got = b""
                while len(got) < 200:
                    got += await s.receive_some(65536)
                await s.send_all(got)

        t = time.perf_counter()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(echo)
            for _ in range(roundtrips):
                await c.send_all(msg)
                got = b""
                while len(got) < 200:
                    got += await c.receive_some(65536)
        return (time.perf_counter() - t) / roundtrips * 1e6

    async def tls_rt() -> float:
        c, s = await pair()
        await c.send_all(b"warm")  # let TLS 1.3 tickets arrive first
        await s.receive_some()
        return await echo_roundtrips(c, s)

    async def mem_rt() -> float:
        a, b = trio.testing.memory_stream_pair()
        return await echo_roundtrips(a, b)

    rt_tls = _best(lambda: trio.run(tls_rt), repeat)
    rt_mem = _best(lambda: trio.run(mem_rt), repeat)

    async def bulk() -> float:
        c, s = await pair()
        chunk = b"\0" * 65536
        total = 64 * 1024 * 1024

        async def sink() -> None:
            got = 0
            while got < total:
                got += len(await s.receive_some(65536))

        t = time.perf_counter()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sink)
            for _ in range(total // len(chunk)):
                await c.send_all(chunk)
        return total / (time.perf_counter() - t) / 2**20

    mib_s = max(trio.run(bulk) for _ in range(repeat))

    return [
        ("raw_handshake_plain", n / raw_plain, "handshakes/s"),
        ("raw_handshake_evsim_ctx", n / raw_evsim, "handshakes/s"),
        ("stream_handshake", n / stream_seq, "handshakes/s"),
        ("stream_handshake_lean", n / stream_lean, "handshakes/s"),
        ("stream_vs_raw_evsim_ctx", stream_seq / raw_evsim, "x"),
        ("stream_vs_raw_plain", stream_seq / raw_plain, "x"),
        ("stream_lean_vs_raw_evsim_ctx", stream_lean / raw_evsim, "x"),
        ("harness_floor_memory_us", floor_memory / n * 1e6, "us"),
        ("harness_floor_lean_us", floor_lean / n * 1e6, "us"),
        ("stream_own_cost_lean_us", (stream_lean - raw_evsim - floor_lean) / n * 1e6, "us"),
        ("stream_python_us", (best["scripted_lean"] - floor_lean) / n * 1e6, "us"),
        ("sslstream_vs_raw_stdlib", best["sslstream"] / best["raw_stdlib"], "x"),
        ("concurrent_1000_handshakes" if n == 1000 else f"concurrent_{n}_handshakes", stream_conc, "s"),
        ("roundtrip_200B", rt_tls, "us"),
        ("memory_roundtrip_200B", rt_mem, "us"),
        ("bulk", mib_s, "MiB/s"),
    ]


if __name__ == "__main__":
    for name, value, unit in run():
        print(f"{name:30s} {value:12.3f} {unit}")
