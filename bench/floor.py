"""The TLS floor: what a full TLS 1.3 ECDSA handshake costs with no sockets and no event loop.

Client and server are pyOpenSSL ``Connection`` objects on memory BIOs in one thread; bytes are pumped
from one to the other by hand until both sides finish (including the server's post-handshake session
tickets, which the client reads). What remains is OpenSSL's handshake machinery plus pyOpenSSL's
call overhead: a lower bound for any peer's boot storm.

    python -m bench.floor --n 500 [--stations 1000] [--group X25519] [--json]

The key-exchange group decides much of the cost (X25519MLKEM768, OpenSSL 3.5+'s first choice for TLS 1.3, adds
an ML-KEM encapsulation to every handshake): a fleet is compared with the floor of the group *it* negotiated.
``--group`` restricts both ends to one group; without it both use the engine's default list.
"""

from __future__ import annotations

import argparse
import json
import ssl
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from OpenSSL import SSL

from bench.common import make_bench_pki
from evsim.tls import _ossl

__all__ = ["cli", "handshake_floor", "stdlib_floor"]

_CHUNK = 1 << 16


def _contexts(pki: dict[str, Path], group: str | None = None) -> tuple[SSL.Context, SSL.Context]:
    server = SSL.Context(SSL.TLS_METHOD)
    server.set_min_proto_version(SSL.TLS1_3_VERSION)
    server.use_certificate_file(str(pki["cert"]))
    server.use_privatekey_file(str(pki["key"]))
    server.check_privatekey()

    client = SSL.Context(SSL.TLS_METHOD)
    client.set_min_proto_version(SSL.TLS1_3_VERSION)
    client.load_verify_locations(str(pki["ca"]))
    client.set_verify(SSL.VERIFY_PEER, None)
    if group is not None:
        for ctx in (client, server):
            if not _ossl.set_groups(ctx, [group]):
                raise ValueError(f"this OpenSSL refuses the key-exchange group {group!r}")
    return client, server


def _drain(conn: SSL.Connection) -> bytes:
    out = b""
    while True:
        try:
            chunk = conn.bio_read(_CHUNK)
        except SSL.WantReadError:
            return out
        if not chunk:
            return out
        out += chunk


def _step(conn: SSL.Connection, done: bool) -> bool:
    """Advance one side: handshake until done, afterwards read (post-handshake messages). True if done."""
    try:
        if done:
            conn.recv(_CHUNK)  # the client consumes NewSessionTicket messages here
        else:
            conn.do_handshake()
    except SSL.WantReadError:
        return done
    return True


def _one_handshake(
    client_ctx: SSL.Context, server_ctx: SSL.Context, cpu: list[float], seen: list[str] | None = None
) -> int:
    """One full handshake; adds each end's CPU seconds to ``cpu[0]`` (client) and ``cpu[1]`` (server).

    Returns the number of bytes that crossed the (virtual) wire.
    """
    t0 = time.process_time()
    client = SSL.Connection(client_ctx, None)
    client.set_tlsext_host_name(b"localhost")
    client.set_connect_state()
    t1 = time.process_time()
    server = SSL.Connection(server_ctx, None)
    server.set_accept_state()
    t2 = time.process_time()
    cpu[0] += t1 - t0
    cpu[1] += t2 - t1
    client_done = server_done = False
    wire = 0
    for _ in range(32):
        t0 = time.process_time()
        client_done = _step(client, client_done)
        to_server = _drain(client)
        t1 = time.process_time()
        if to_server:
            server.bio_write(to_server)
        server_done = _step(server, server_done)
        to_client = _drain(server)
        t2 = time.process_time()
        if to_client:
            client.bio_write(to_client)
        t3 = time.process_time()
        cpu[0] += (t1 - t0) + (t3 - t2)
        cpu[1] += t2 - t1
        wire += len(to_server) + len(to_client)
        # done when both finished and a full pass moved nothing (the client has read the tickets)
        if client_done and server_done and not to_server and not to_client:
            break
    else:  # pragma: no cover - would mean a protocol loop, not a slow machine
        raise RuntimeError("TLS handshake did not converge")
    if client.get_protocol_version_name() != "TLSv1.3":
        raise RuntimeError(f"expected TLSv1.3, got {client.get_protocol_version_name()}")
    if seen is not None:
        seen.append(client.get_group_name() or "?")
    return wire


def handshake_floor(
    n: int = 500,
    *,
    stations: int = 1000,
    pki: dict[str, Path] | None = None,
    warmup: int = 20,
    group: str | None = None,
) -> dict[str, Any]:
    """Run ``n`` full TLS 1.3 ECDSA P-256 handshakes on memory BIOs and report the floor.

    ``group`` restricts both ends to that key-exchange group (None: the engine's default list); ``group`` in the
    result is the one negotiated.

    Keys: ``handshakes``, ``wall_s``, ``handshakes_per_s``, ``cpu_ms_per_handshake`` (both ends), ``group``,
    ``client_cpu_ms``, ``server_cpu_ms``, ``stations`` and ``storm_floor_s`` (= stations x CPU per
    handshake: the CPU seconds of one core a storm of that many stations cannot go below).
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    with tempfile.TemporaryDirectory(prefix="evsim-floor-") as tmp:
        paths = pki if pki is not None else make_bench_pki(tmp)
        client_ctx, server_ctx = _contexts(paths, group)
        scratch = [0.0, 0.0]
        negotiated: list[str] = []
        for _ in range(max(warmup, 1)):
            _one_handshake(client_ctx, server_ctx, scratch, negotiated)
        cpu = [0.0, 0.0]
        wall0 = time.perf_counter()
        cpu0 = time.process_time()
        for _ in range(n):
            _one_handshake(client_ctx, server_ctx, cpu)
        wall = time.perf_counter() - wall0
        total_cpu = time.process_time() - cpu0
    per_handshake = total_cpu / n
    return {
        "handshakes": n,
        "wall_s": round(wall, 4),
        "handshakes_per_s": round(n / wall, 1),
        "cpu_ms_per_handshake": round(per_handshake * 1e3, 4),
        "client_cpu_ms": round(cpu[0] / n * 1e3, 4),
        "server_cpu_ms": round(cpu[1] / n * 1e3, 4),
        "stations": stations,
        "storm_floor_s": round(per_handshake * stations, 4),
        "group": negotiated[-1],
        "tls": "TLSv1.3, ECDSA P-256 server certificate, no client certificate, memory BIOs",
    }


def _stdlib_handshake(client_ctx: ssl.SSLContext, server_ctx: ssl.SSLContext) -> str:
    """One full handshake between two ``ssl.SSLObject`` on memory BIOs; returns the negotiated version."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client_done = server_done = False
    for _ in range(32):
        try:
            if client_done:
                client.read(_CHUNK)  # NewSessionTicket messages
            else:
                client.do_handshake()
                client_done = True
        except ssl.SSLWantReadError:
            pass
        to_server = c_out.read()
        if to_server:
            s_in.write(to_server)
        if not server_done:
            try:
                server.do_handshake()
                server_done = True
            except ssl.SSLWantReadError:
                pass
        to_client = s_out.read()
        if to_client:
            c_in.write(to_client)
        if client_done and server_done and not to_server and not to_client:
            return str(client.version())
    raise RuntimeError("TLS handshake did not converge")  # pragma: no cover


def stdlib_floor(n: int = 500, *, stations: int = 1000, warmup: int = 20) -> dict[str, Any]:
    """The same floor with Python's ``ssl`` module (the OpenSSL the asyncio peers run on, with its default group).

    Keys: ``cpu_ms_per_handshake`` (both ends), ``storm_floor_s``, ``openssl`` (the linked version).
    """
    with tempfile.TemporaryDirectory(prefix="evsim-floor-") as tmp:
        paths = make_bench_pki(tmp)
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.minimum_version = ssl.TLSVersion.TLSv1_3
        server.load_cert_chain(str(paths["cert"]), str(paths["key"]))
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the host name
        client.minimum_version = ssl.TLSVersion.TLSv1_3
        client.load_verify_locations(str(paths["ca"]))
        for _ in range(max(warmup, 1)):
            _stdlib_handshake(client, server)
        cpu0 = time.process_time()
        for _ in range(n):
            _stdlib_handshake(client, server)
        per_handshake = (time.process_time() - cpu0) / n
    return {
        "cpu_ms_per_handshake": round(per_handshake * 1e3, 4),
        "storm_floor_s": round(per_handshake * stations, 4),
        "openssl": ssl.OPENSSL_VERSION,
    }


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500, help="handshakes to time (default 500)")
    parser.add_argument("--stations", type=int, default=1000, help="storm size for the floor (default 1000)")
    parser.add_argument(
        "--group",
        default=None,
        help="key-exchange group for both ends, e.g. X25519 (default: the engine's list)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    result = handshake_floor(args.n, stations=args.stations, group=args.group)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>22}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
