"""Attackers a world runs: a TLS-downgrading client, an impostor CSMS, a man-in-the-middle relay.

Stations reach an attacker the way they would in the field, by having their traffic for the CSMS's name sent
elsewhere (DNS spoofing, a hostile access point). :class:`RedirectingNetwork` wraps the run's network and
rewrites ``connect(host)`` for chosen source hosts while an attack lasts; node code does not know.

The impostor and the relay present a certificate for the real CSMS name issued by a root the stations do not
trust, so a correctly configured station refuses the handshake (``cert_invalid:unknown_ca``) and sends nothing.
The relay, had the handshake succeeded, would open its own TLS connection to the real CSMS and forward the
plaintext both ways: it records whether it ever saw plaintext (``mitm_intercepted``), which a test asserts
never happens against honest stations.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import trio

from evsim.clock import SimClock
from evsim.errors import ConfigError, HandshakeFailed, TransportError
from evsim.net.base import DatagramNetwork, DatagramSocket, NetListener, Network, NetworkStatistics
from evsim.recorder import Recorder
from evsim.tls import ClientTls, ServerTls, TlsProfile, TrustStore, tls_accept, tls_connect
from evsim.tls.config import KNOWN_VERSIONS
from evsim.tls.suites import DEFAULT_TLS12_SUITES, DEFAULT_TLS13_SUITES, SUITES

LEGACY_VERSIONS = frozenset({"1.0", "1.1"})
"""Versions OCPP forbids (A00.FR.313) that a downgrading attacker may still offer."""


class RedirectingNetwork:
    """A :class:`Network` that sends some sources' connections for a host to another host."""

    def __init__(self, inner: Network) -> None:
        self.inner = inner
        self._routes: dict[tuple[str, str], str] = {}

    def redirect(self, sources: Iterable[str], host: str, to: str) -> None:
        for src in sources:
            self._routes[(src, host)] = to

    def restore(self, sources: Iterable[str], host: str) -> None:
        for src in sources:
            self._routes.pop((src, host), None)

    async def connect(self, host: str, port: int, *, source: str | None = None) -> trio.abc.Stream:
        target = self._routes.get((source or "", host), host)
        return await self.inner.connect(target, port, source=source)

    async def listen(self, host: str, port: int) -> NetListener:
        return await self.inner.listen(host, port)

    async def bind_datagram(self, host: str, port: int) -> DatagramSocket:
        """A datagram socket of the inner network (datagrams are never redirected)."""
        if not isinstance(self.inner, DatagramNetwork):
            raise ConfigError("the network carries no datagrams", value=type(self.inner).__name__)
        return await self.inner.bind_datagram(host, port)

    def statistics(self) -> NetworkStatistics:
        return self.inner.statistics()


async def downgrade_client(
    name: str,
    network: Network,
    host: str,
    port: int,
    *,
    versions: tuple[str, ...],
    anchors: TrustStore,
    clock: SimClock,
    recorder: Recorder,
) -> None:
    """One client offering only ``versions`` (e.g. TLS 1.2) to a CSMS; records how the handshake ended."""
    client_tls = ClientTls.build(downgrade_profile(versions), anchors)
    try:
        stream = await network.connect(host, port, source=name)
    except TransportError as exc:
        recorder.emit(name, "attack_result", outcome="unreachable", detail=str(exc))
        return
    try:
        tls = await tls_connect(stream, client_tls, host, verify_time=clock.utcnow)
    except HandshakeFailed as exc:
        recorder.emit(name, "attack_result", outcome="refused", reason=exc.reason)
        await _close(stream)
        return
    recorder.emit(name, "attack_result", outcome="accepted", version=tls.info.version)
    await _close(tls)


def downgrade_profile(versions: tuple[str, ...]) -> TlsProfile:
    """The attacker's profile: only ``versions``, with suites every one of them can negotiate.

    TLS 1.0/1.1 cannot use the AEAD suites of the default profile, so the attacker adds the legacy CBC-SHA
    suites (ECDSA and RSA certificates). Compiling a profile with TLS < 1.2 lowers OpenSSL's security level
    to 0 on the attacker's context only (``evsim.tls.context``); honest nodes keep their own profile.

    Raises:
        ConfigError: ``versions`` is not a valid (contiguous, known) version list.
    """
    versions = tuple(sorted(versions, key=KNOWN_VERSIONS.index, reverse=True))  # the order OpenSSL honours
    legacy = tuple(s.iana for s in SUITES if s.version == "1.2" and s.min_version == "1.0")
    tls12 = DEFAULT_TLS12_SUITES + legacy if LEGACY_VERSIONS & set(versions) else DEFAULT_TLS12_SUITES
    return TlsProfile(
        versions=versions,
        cipher_suites={"1.3": DEFAULT_TLS13_SUITES, "1.2": tls12},
        insecure_legacy_versions=bool(LEGACY_VERSIONS & set(versions)),
    )


async def mitm_relay(
    name: str,
    listener: NetListener,
    network: Network,
    *,
    server_tls: ServerTls,
    upstream_tls: ClientTls,
    upstream: tuple[str, int],
    clock: SimClock,
    recorder: Recorder,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Terminate TLS with ``server_tls`` (a rogue certificate); if a victim accepts it, relay to the CSMS."""
    async with listener, trio.open_nursery() as nursery:
        task_status.started()
        while True:
            victim = await listener.accept()
            nursery.start_soon(
                _relay_one, name, victim, network, server_tls, upstream_tls, upstream, clock, recorder
            )


async def _relay_one(
    name: str,
    victim: trio.abc.Stream,
    network: Network,
    server_tls: ServerTls,
    upstream_tls: ClientTls,
    upstream: tuple[str, int],
    clock: SimClock,
    recorder: Recorder,
) -> None:
    try:
        inner = await tls_accept(victim, server_tls, verify_time=clock.utcnow)
    except HandshakeFailed as exc:
        recorder.emit(name, "attack_result", outcome="refused", reason=exc.reason)
        await _close(victim)
        return
    recorder.emit(name, "mitm_intercepted", version=inner.info.version)
    try:
        raw = await network.connect(*upstream, source=name)
        outer = await tls_connect(raw, upstream_tls, upstream[0], verify_time=clock.utcnow)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_pump, inner, outer, nursery.cancel_scope)
            nursery.start_soon(_pump, outer, inner, nursery.cancel_scope)
    except TransportError as exc:
        recorder.emit(name, "attack_result", outcome="relay_failed", detail=str(exc))
    finally:
        await _close(inner)


async def _pump(src: trio.abc.Stream, dst: trio.abc.Stream, scope: trio.CancelScope) -> None:
    try:
        while data := await src.receive_some(65536):
            await dst.send_all(data)
    except (TransportError, trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        scope.cancel()


async def _close(stream: trio.abc.AsyncResource) -> None:
    with (
        trio.CancelScope(shield=True),
        contextlib.suppress(TransportError, trio.BrokenResourceError, trio.ClosedResourceError),
    ):
        await stream.aclose()
