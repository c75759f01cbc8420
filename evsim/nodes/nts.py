"""Network Time Security nodes: an NTS server (NTS-KE over TLS + NTP over UDP) and a multi-source NTS client.

The protocol logic is :mod:`evsim.nts` (sans-IO); this module moves bytes, keeps time and records events.

NTS-KE runs over the evsim TLS stream with :func:`ntske_profile` (TLS 1.3 only, ALPN ``ntske/1`` required): a
TLS 1.2 peer fails the handshake, a peer that does not negotiate ``ntske/1`` is closed (``alpn_refused``). Both
ends derive the association's keys with the RFC 8915 exporter. Every NTS-KE exchange is bounded: a message is
at most ``max_message`` octets, a record body at most ``max_body`` (refused from its header), and the whole
exchange after the TLS handshake must finish within ``ke_timeout_s`` (a slowloris peer is cut off there). A
server refuses a bad request with the RFC's Error record when it can (``unrecognized_critical_record`` → 0,
everything else → 1), closes, and records one ``ntske_refused`` event with the peer and the reason; a client
records one ``nts_ke_failed`` event per failed attempt and moves on.

:class:`NtsServer` answers NTP requests with :class:`~evsim.nts.exchange.NtsServerCore`, rotates its cookie
master keys every ``rotate_s`` seconds (``nts_keys_rotated``), and drops malformed datagrams. Per-datagram
events (``ntp_dropped``, ``ntp_cookie_refused`` for an NTSN answer) are limited to one per peer host and reason
per second; the counters in :meth:`NtsServer.statistics` count every one.

:class:`NtsClient` walks its :class:`NtsSource` list by priority (lower first, then list order). With the
best reachable source it runs NTS-KE, then polls every ``poll_s`` seconds; each accepted answer updates
:attr:`NtsClient.offset` / :attr:`NtsClient.delay` (``nts_sample``). An NTSN answer drops the cookies and
re-keys with the same source; an authenticated DENY/RSTR, ``max_unanswered`` unanswered polls in a row or a
failed NTS-KE fail over to the next source (``nts_failover``); after a whole round of failures it waits
(doubling ``retry_s`` up to ``max_retry_s``). While on a lower-priority source it retries the better ones every
``revert_s`` seconds. Each source has its own :class:`~evsim.tls.ClientTls`, so its own root-CA group.

**Bootstrap (checking an NTS-KE certificate before the time is known).** The client's own clock is ``wall()``
(Unix seconds; a station's clock, possibly wrong). Certificates are checked at ``wall() + offset`` once a
sample was accepted, and at ``wall()`` before; a client given ``discipline`` hands each accepted offset to
it (a station steps or slews its clock, :mod:`evsim.nodes.devicetime`) and checks at ``wall()`` itself. What happens before the first sample is the source trust
store's ``time_check``:

* ``enforce`` (default): validity is checked at the unsynced clock; a clock far off refuses a valid
  certificate (``cert_invalid:not_yet_valid`` / ``cert_invalid:expired``), and the client stays unsynced -
  safe, and what a fleet with dead clocks shows.
* ``skip_until_clock_synced``: the first NTS-KE skips the validity times (chain, hostname and ALPN are still
  checked), like chrony's ``nocerttimecheck``; every NTS-KE after the first accepted sample checks them at
  the corrected time, so an expired certificate is refused then.
* ``off``: validity times are never checked.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import math
import os
from collections.abc import Callable, Sequence

import attrs
import trio

from evsim.clock import SimClock
from evsim.errors import (
    BrokenTransport,
    ClosedTransport,
    ConfigError,
    ConnectionRefused,
    HandshakeFailed,
    TransportError,
)
from evsim.net.base import DatagramNetwork, DatagramSocket, Network, format_address, remote_address
from evsim.nodes.acceptor import Acceptor, connection_admitted
from evsim.nts.cookies import MasterKeys
from evsim.nts.errors import KeProtocolError, NtpRejected, NtsError
from evsim.nts.exchange import KissOfDeath, NtpSample, NtsAssociation, NtsServerCore
from evsim.nts.records import (
    AEAD_AES_SIV_CMAC_256,
    ALPN,
    DEFAULT_KE_PORT,
    EXPORTER_LABEL,
    KEY_LENGTHS,
    MAX_COOKIES,
    MAX_MESSAGE,
    MAX_RECORD_BODY,
    NTPV4,
    KeRequest,
    KeResponse,
    RecordReader,
    error_message,
    exporter_context,
    negotiate,
    parse_request,
    parse_response,
)
from evsim.recorder import Recorder
from evsim.tls import ClientTls, Identity, ServerTls, TlsProfile, TlsStream, tls_accept, tls_connect

__all__ = [
    "DEFAULT_NTP_PORT",
    "KeFailed",
    "KeResult",
    "NtsClient",
    "NtsClientStatistics",
    "NtsServer",
    "NtsServerConfig",
    "NtsServerStatistics",
    "NtsSource",
    "nts_ke",
    "ntske_profile",
]

DEFAULT_NTP_PORT = 123
_READ = 4096
_EVENT_INTERVAL_S = 1.0
_CLOSE_S = 1.0


def ntske_profile(**changes: object) -> TlsProfile:
    """The TLS profile of NTS-KE: TLS 1.3 only, ALPN ``ntske/1`` offered and required (plus ``changes``)."""
    settings: dict[str, object] = {"versions": ("1.3",), "alpn": (ALPN,), "alpn_require": True}
    settings.update(changes)
    return TlsProfile(**settings)  # type: ignore[arg-type]


class KeFailed(NtsError):
    """An NTS-KE attempt failed (``reason``: the TLS reason, an RFC 8915 refusal, ``timeout``, ...)."""


class _Limiter:
    """At most one event per key per interval (per-datagram refusals must not flood the log)."""

    def __init__(self, interval: float = _EVENT_INTERVAL_S, size: int = 4096) -> None:
        self._interval = interval
        self._size = size
        self._last: dict[tuple[str, str], float] = {}

    def allow(self, key: tuple[str, str], now: float) -> bool:
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            return False
        if len(self._last) >= self._size:
            self._last.clear()
        self._last[key] = now
        return True


async def _read_message(stream: trio.abc.Stream, reader: RecordReader) -> None:
    """Feed ``reader`` from ``stream`` until End of Message (or an error)."""
    while not reader.complete:
        data = await stream.receive_some(_READ)
        if not data:
            reader.eof()
        reader.feed(data)


async def _close(tls: TlsStream) -> None:
    """Close with close_notify, within :data:`_CLOSE_S` (a peer that does not read cannot hold us)."""
    with trio.move_on_after(_CLOSE_S), contextlib.suppress(TransportError):
        await tls.aclose()


def _export(tls: TlsStream, aead: int) -> tuple[bytes, bytes]:
    length = KEY_LENGTHS[aead]
    c2s = tls.export_keying_material(EXPORTER_LABEL, length, exporter_context(NTPV4, aead, False))
    s2c = tls.export_keying_material(EXPORTER_LABEL, length, exporter_context(NTPV4, aead, True))
    return c2s, s2c


# ---------------------------------------------------------------------------------------------- server


@attrs.frozen
class NtsServerConfig:
    """An NTS server.

    Attributes:
        name: node name (events).
        host: where it listens (NTS-KE on TCP, NTP on UDP).
        identity: the NTS-KE server certificate and key.
        ke_port: NTS-KE port (0: any free port).
        ntp_port: NTP port (0: any free port); announced with a Port Negotiation record unless it is 123.
        ntp_server: announced with a Server Negotiation record (None: none, clients use ``host``).
        profile: the TLS profile (:func:`ntske_profile`).
        aead_algorithms: AEAD ids the server accepts.
        cookies: cookies per NTS-KE response.
        ke_timeout_s: the exchange after the TLS handshake must finish within this (slowloris bound).
        max_message, max_body: NTS-KE message and record body limits.
        rotate_s: seconds between master-key rotations; keep_keys: master keys kept.
        stratum: the stratum announced.
        clock_error_s: the server's own clock error added to the time it serves (a server with bad time).
        max_connections: NTS-KE connections at once.
    """

    name: str
    host: str
    identity: Identity
    ke_port: int = DEFAULT_KE_PORT
    ntp_port: int = DEFAULT_NTP_PORT
    ntp_server: str | None = None
    profile: TlsProfile = attrs.field(factory=ntske_profile)
    aead_algorithms: tuple[int, ...] = (AEAD_AES_SIV_CMAC_256,)
    cookies: int = MAX_COOKIES
    ke_timeout_s: float = 5.0
    max_message: int = MAX_MESSAGE
    max_body: int = MAX_RECORD_BODY
    rotate_s: float | None = 3600.0
    keep_keys: int = 3
    stratum: int = 1
    clock_error_s: float = 0.0
    max_connections: int | None = 1024

    def __attrs_post_init__(self) -> None:
        if not 1 <= self.cookies <= MAX_COOKIES:
            raise ConfigError(f"cookies must be in 1..{MAX_COOKIES}", path="cookies", value=self.cookies)
        if not self.ke_timeout_s > 0:
            raise ConfigError("ke_timeout_s must be > 0", path="ke_timeout_s", value=self.ke_timeout_s)
        unknown = [a for a in self.aead_algorithms if a not in KEY_LENGTHS]
        if unknown or not self.aead_algorithms:
            raise ConfigError(
                f"unsupported AEAD algorithms {unknown}", path="aead_algorithms", value=self.aead_algorithms
            )
        if not 1 <= self.stratum <= 15:
            raise ConfigError("stratum must be in 1..15", path="stratum", value=self.stratum)


@attrs.frozen
class NtsServerStatistics:
    """Counters of an :class:`NtsServer`."""

    ke_ok: int
    ke_refused: dict[str, int]
    ntp_answered: int
    ntp_naks: int
    ntp_dropped: dict[str, int]
    key_rotations: int
    ke_address: tuple[str, int] | None
    ntp_address: tuple[str, int] | None


class NtsServer:
    """NTS-KE and NTP with NTS on one host.

    Args:
        config: the server's settings.
        network: streams for NTS-KE and datagrams for NTP (both backends provide both).
        clock: the run's clock; the server serves ``clock.utcnow()`` plus ``config.clock_error_s``.
        recorder: where events go.
        entropy: the random source (cookie keys, nonces).
        wall: overrides the time served (Unix seconds).
    """

    def __init__(
        self,
        config: NtsServerConfig,
        network: Network,
        clock: SimClock,
        recorder: Recorder,
        *,
        entropy: Callable[[int], bytes] = os.urandom,
        wall: Callable[[], float] | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self._network = network
        self._clock = clock
        self._recorder = recorder
        self._entropy = entropy
        self._wall = wall or (lambda: clock.utcnow().timestamp() + config.clock_error_s)
        self._server_tls = ServerTls.build(config.profile, config.identity)
        self.keys = MasterKeys(
            keep=config.keep_keys, rotate_s=config.rotate_s, entropy=entropy, now=trio.current_time()
        )
        self._core = NtsServerCore(self.keys, stratum=config.stratum, entropy=entropy)
        self._acceptor = Acceptor(config.name, recorder, max_connections=config.max_connections)
        self._limiter = _Limiter()
        self._ke_ok = 0
        self._ke_refused: collections.Counter[str] = collections.Counter()
        self._answered = 0
        self._naks = 0
        self._dropped: collections.Counter[str] = collections.Counter()
        self.ke_address: tuple[str, int] | None = None
        self.ntp_address: tuple[str, int] | None = None

    def statistics(self) -> NtsServerStatistics:
        return NtsServerStatistics(
            ke_ok=self._ke_ok,
            ke_refused=dict(self._ke_refused),
            ntp_answered=self._answered,
            ntp_naks=self._naks,
            ntp_dropped=dict(self._dropped),
            key_rotations=self.keys.rotations,
            ke_address=self.ke_address,
            ntp_address=self.ntp_address,
        )

    def rotate_keys(self) -> int:
        """Rotate the cookie master keys now (cookies under the oldest kept key stop working)."""
        key_id = self.keys.rotate(trio.current_time())
        self._recorder.emit(
            self.name, "nts_keys_rotated", key_id=f"{key_id:08x}", kept=len(self.keys.key_ids)
        )
        return key_id

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve NTS-KE and NTP until cancelled."""
        if not isinstance(self._network, DatagramNetwork):
            raise ConfigError("the network carries no datagrams", value=type(self._network).__name__)
        listener = await self._network.listen(self.config.host, self.config.ke_port)
        try:
            sock = await self._network.bind_datagram(self.config.host, self.config.ntp_port)
        except BaseException:
            await listener.aclose()
            raise
        self.ke_address, self.ntp_address = listener.address, sock.local_address
        try:
            self._recorder.emit(
                self.name,
                "listening",
                ke=format_address(listener.address),
                ntp=format_address(sock.local_address),
            )
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._acceptor.serve, listener, self._serve_ke)
                nursery.start_soon(self._serve_ntp, sock)
                nursery.start_soon(self._rotate)
                task_status.started()
        finally:
            with trio.CancelScope(shield=True):
                await listener.aclose()
                await sock.aclose()

    async def _rotate(self) -> None:
        due = self.keys.next_rotation()
        while due is not None:
            await trio.sleep_until(due)
            self.rotate_keys()
            due = self.keys.next_rotation()

    def _refuse(self, peer: str, reason: str, detail: str = "") -> None:
        self._ke_refused[reason] += 1
        self._recorder.emit(self.name, "ntske_refused", peer=peer, reason=reason, detail=detail)

    async def _serve_ke(self, transport: trio.abc.Stream) -> None:
        remote = remote_address(transport)
        peer = format_address(remote) if remote is not None else "?"
        try:
            tls = await tls_accept(transport, self._server_tls, verify_time=self._clock.utcnow)
        except HandshakeFailed as exc:
            self._refuse(peer, f"tls:{exc.reason}", exc.detail)
            return
        except TransportError as exc:
            await trio.aclose_forcefully(transport)
            self._refuse(peer, "connection_lost", str(exc))
            return
        connection_admitted()
        try:
            await self._exchange(tls, peer)
        finally:
            await trio.aclose_forcefully(tls)

    async def _exchange(self, tls: TlsStream, peer: str) -> None:
        cfg = self.config
        reader = RecordReader(server=True, max_message=cfg.max_message, max_body=cfg.max_body)
        with trio.move_on_after(cfg.ke_timeout_s) as scope:
            try:
                await _read_message(tls, reader)
                request = parse_request(reader.records)
                protocol, aead = negotiate(request, cfg.aead_algorithms)
                if protocol is None or aead is None:
                    self._refuse(peer, "no_common_protocol" if protocol is None else "no_common_aead")
                    await tls.send_all(KeResponse(protocol, aead).encode())
                    await _close(tls)
                    return
                c2s, s2c = _export(tls, aead)
                cookies = tuple(self.keys.seal(aead, c2s, s2c) for _ in range(cfg.cookies))
                port = self.ntp_address[1] if self.ntp_address is not None else cfg.ntp_port
                response = KeResponse(
                    NTPV4,
                    aead,
                    cookies,
                    server=cfg.ntp_server,
                    port=None if port == DEFAULT_NTP_PORT else port,
                )
                await tls.send_all(response.encode())
                await _close(tls)
            except KeProtocolError as exc:
                self._refuse(peer, exc.reason, exc.detail)
                if exc.error_code is not None:
                    with trio.move_on_after(_CLOSE_S):
                        await tls.send_all(error_message(exc.error_code))
                        await _close(tls)
                return
            except (BrokenTransport, ClosedTransport, TransportError) as exc:
                self._refuse(peer, "connection_lost", str(exc))
                return
            self._ke_ok += 1
            self._recorder.emit(self.name, "ntske_ok", peer=peer, aead=aead, cookies=len(cookies))
        if scope.cancelled_caught:
            self._refuse(peer, "timeout", f"no complete request within {cfg.ke_timeout_s} s")

    async def _serve_ntp(self, sock: DatagramSocket) -> None:
        while True:
            try:
                data, source = await sock.receive_from()
            except ClosedTransport:
                return
            received = self._wall()
            now = trio.current_time()
            try:
                reply = self._core.respond(data, received=received, transmit=self._wall())
            except NtpRejected as exc:
                self._dropped[exc.reason] += 1
                if self._limiter.allow((source[0], exc.reason), now):
                    self._recorder.emit(
                        self.name, "ntp_dropped", peer=format_address(source), reason=exc.reason
                    )
                continue
            if reply.kind == "nak":
                self._naks += 1
                if self._limiter.allow((source[0], "nak"), now):
                    self._recorder.emit(
                        self.name, "ntp_cookie_refused", peer=format_address(source), reason="ntsn"
                    )
            else:
                self._answered += 1
            try:
                await sock.send_to(reply.data, source)
            except (ConfigError, TransportError) as exc:
                self._dropped["send_failed"] += 1
                if self._limiter.allow((source[0], "send_failed"), now):
                    self._recorder.emit(
                        self.name,
                        "ntp_dropped",
                        peer=format_address(source),
                        reason="send_failed",
                        detail=str(exc),
                    )


# ---------------------------------------------------------------------------------------------- client


@attrs.frozen
class NtsSource:
    """One NTS server a client may use.

    Attributes:
        name: label in events.
        host: the NTS-KE host (connected to; also the certificate name unless ``server_hostname``).
        client_tls: this source's TLS client settings: :func:`ntske_profile` and its own root-CA group.
        port: the NTS-KE port.
        priority: lower is preferred; equal priorities keep list order.
        server_hostname: the name checked against the certificate (default: ``host``).
    """

    name: str
    host: str
    client_tls: ClientTls
    port: int = DEFAULT_KE_PORT
    priority: int = 0
    server_hostname: str | None = None


@attrs.frozen
class KeResult:
    """A completed NTS-KE: the association's keys and cookies, and where to send NTP."""

    aead: int
    c2s: bytes = attrs.field(repr=False)
    s2c: bytes = attrs.field(repr=False)
    cookies: tuple[bytes, ...] = attrs.field(repr=False)
    ntp_host: str
    ntp_port: int


async def nts_ke(
    network: Network,
    source: NtsSource,
    *,
    host: str | None = None,
    verify_time: Callable[[], datetime.datetime] | None = None,
    clock_synced: bool = True,
    aead_algorithms: Sequence[int] = (AEAD_AES_SIV_CMAC_256,),
    timeout_s: float = 10.0,
    max_message: int = MAX_MESSAGE,
    max_body: int = MAX_RECORD_BODY,
) -> KeResult:
    """One NTS-KE exchange with ``source`` (connect, TLS, request, response, key export), within ``timeout_s``.

    Raises:
        KeFailed: ``connection_refused``, ``tls:<reason>`` (``tls:cert_invalid:expired``,
            ``tls:alpn_refused``...), ``connection_lost``, ``timeout``, or an RFC 8915 refusal
            (``server_error:1``, ``record_too_large``, ``no_end_of_message``, ``no_cookies``...).
    """
    with trio.move_on_after(timeout_s):
        try:
            transport = await network.connect(source.host, source.port, source=host)
        except ConnectionRefused as exc:
            raise KeFailed("connection_refused", str(exc)) from exc
        try:
            tls = await tls_connect(
                transport,
                source.client_tls,
                source.server_hostname or source.host,
                verify_time=verify_time,
                clock_synced=clock_synced,
            )
        except HandshakeFailed as exc:
            raise KeFailed(f"tls:{exc.reason}", exc.detail) from exc
        except TransportError as exc:
            await trio.aclose_forcefully(transport)
            raise KeFailed("connection_lost", str(exc)) from exc
        try:
            aeads = tuple(aead_algorithms)
            await tls.send_all(KeRequest(aead_algorithms=aeads).encode())
            reader = RecordReader(server=False, max_message=max_message, max_body=max_body)
            await _read_message(tls, reader)
            response = parse_response(reader.records, offered_aeads=aeads)
            assert response.aead is not None  # parse_response refuses a response without one
            c2s, s2c = _export(tls, response.aead)
        except KeProtocolError as exc:
            raise KeFailed(exc.reason, exc.detail) from exc
        except TransportError as exc:
            raise KeFailed("connection_lost", str(exc)) from exc
        finally:
            await trio.aclose_forcefully(tls)
        return KeResult(
            response.aead,
            c2s,
            s2c,
            response.cookies,
            response.server or source.host,
            response.port if response.port is not None else DEFAULT_NTP_PORT,
        )
    raise KeFailed("timeout", f"NTS-KE with {source.host}:{source.port} took over {timeout_s} s")


@attrs.frozen
class NtsClientStatistics:
    """Counters of an :class:`NtsClient`."""

    synced: bool
    source: str | None
    offset: float | None
    delay: float | None
    samples: int
    ke_ok: int
    ke_failed: dict[str, int]
    ntp_rejected: dict[str, int]
    unanswered: int
    naks: int
    failovers: int


class NtsClient:
    """Measures its clock's offset against NTS servers, with priorities and failover.

    Args:
        name: node name (events).
        sources: the NTS servers (see :class:`NtsSource`).
        network: streams for NTS-KE, datagrams for NTP.
        clock: the run's clock (trio time for polls and timeouts).
        recorder: where events go.
        host: this client's host (the connect source and the datagram socket's host).
        wall: this client's own clock in Unix seconds (default: the simulation's wall time, a perfect clock).
        poll_s: seconds between polls; timeout_s: how long an answer is waited for.
        max_unanswered: unanswered polls in a row before failing over.
        ke_timeout_s: bound of one NTS-KE exchange.
        retry_s, max_retry_s: the wait after a round in which every source failed (doubling).
        revert_s: how often a client on a lower-priority source retries the better ones.
        aead_algorithms: AEAD ids offered.
        entropy: the random source (Unique Identifiers, nonces).
        discipline: called with each accepted sample's offset (seconds) to correct ``wall`` itself; None:
            the client only measures, and :meth:`corrected_time` adds the offset.
    """

    def __init__(
        self,
        name: str,
        sources: Sequence[NtsSource],
        network: Network,
        clock: SimClock,
        recorder: Recorder,
        *,
        host: str = "127.0.0.1",
        wall: Callable[[], float] | None = None,
        poll_s: float = 16.0,
        timeout_s: float = 1.0,
        max_unanswered: int = 3,
        ke_timeout_s: float = 10.0,
        retry_s: float = 4.0,
        max_retry_s: float = 256.0,
        revert_s: float = 128.0,
        aead_algorithms: Sequence[int] = (AEAD_AES_SIV_CMAC_256,),
        entropy: Callable[[int], bytes] = os.urandom,
        discipline: Callable[[float], None] | None = None,
    ) -> None:
        if not sources:
            raise ConfigError("an NTS client needs at least one source", path="sources")
        names = [s.name for s in sources]
        if len(set(names)) != len(names):
            raise ConfigError("NTS source names must be unique", path="sources", value=names)
        for field, value in (("poll_s", poll_s), ("timeout_s", timeout_s), ("retry_s", retry_s)):
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{field} must be > 0", path=field, value=value)
        if max_unanswered < 1:
            raise ConfigError("max_unanswered must be >= 1", path="max_unanswered", value=max_unanswered)
        self.name = name
        self.sources = tuple(
            sorted(sources, key=lambda s: s.priority)
        )  # stable: list order within a priority
        self._network = network
        self._clock = clock
        self._recorder = recorder
        self._host = host
        self._wall = wall or (lambda: clock.utcnow().timestamp())
        self.poll_s = poll_s
        self.timeout_s = timeout_s
        self.max_unanswered = max_unanswered
        self.ke_timeout_s = ke_timeout_s
        self.retry_s = retry_s
        self.max_retry_s = max_retry_s
        self.revert_s = revert_s
        self._aeads = tuple(aead_algorithms)
        self._entropy = entropy
        self._discipline = discipline
        self._limiter = _Limiter()
        self.offset: float | None = None
        self.delay: float | None = None
        self.source: str | None = None
        self.last_sample: NtpSample | None = None
        self._synced = trio.Event()
        self._samples = 0
        self._ke_ok = 0
        self._ke_failed: collections.Counter[str] = collections.Counter()
        self._rejected: collections.Counter[str] = collections.Counter()
        self._unanswered = 0
        self._naks = 0
        self._failovers = 0
        self._target: tuple[str, int] = ("", 0)

    @property
    def synced(self) -> bool:
        """True once an authenticated sample was accepted."""
        return self._synced.is_set()

    async def wait_synced(self) -> None:
        await self._synced.wait()

    def corrected_time(self) -> float:
        """This client's clock corrected by the measured offset (its own clock until synced, or when the
        offsets go to ``discipline``)."""
        if self._discipline is not None:
            return self._wall()
        return self._wall() + (self.offset or 0.0)

    def _verify_time(self) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self.corrected_time(), tz=datetime.UTC)

    def statistics(self) -> NtsClientStatistics:
        return NtsClientStatistics(
            synced=self.synced,
            source=self.source,
            offset=self.offset,
            delay=self.delay,
            samples=self._samples,
            ke_ok=self._ke_ok,
            ke_failed=dict(self._ke_failed),
            ntp_rejected=dict(self._rejected),
            unanswered=self._unanswered,
            naks=self._naks,
            failovers=self._failovers,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Poll the sources until cancelled."""
        if not isinstance(self._network, DatagramNetwork):
            raise ConfigError("the network carries no datagrams", value=type(self._network).__name__)
        sock = await self._network.bind_datagram(self._host, 0)
        try:
            task_status.started()
            await self._loop(sock)
        finally:
            with trio.CancelScope(shield=True):
                await sock.aclose()

    async def _ke(self, source: NtsSource) -> NtsAssociation | None:
        try:
            result = await nts_ke(
                self._network,
                source,
                host=self._host,
                verify_time=self._verify_time,
                clock_synced=self.synced,
                aead_algorithms=self._aeads,
                timeout_s=self.ke_timeout_s,
            )
        except KeFailed as exc:
            self._ke_failed[exc.reason] += 1
            self._recorder.emit(
                self.name, "nts_ke_failed", source=source.name, reason=exc.reason, detail=exc.detail
            )
            return None
        self._ke_ok += 1
        self._recorder.emit(
            self.name,
            "nts_ke_ok",
            source=source.name,
            cookies=len(result.cookies),
            ntp=format_address((result.ntp_host, result.ntp_port)),
        )
        self._target = (result.ntp_host, result.ntp_port)
        return NtsAssociation(result.aead, result.c2s, result.s2c, result.cookies, entropy=self._entropy)

    async def _loop(self, sock: DatagramSocket) -> None:
        index = 0
        association: NtsAssociation | None = None
        failed_in_round = unanswered = 0
        wait = self.retry_s
        revert_at = math.inf
        while True:
            source = self.sources[index]
            if association is None or association.needs_ke:
                association = await self._ke(source)
                if association is None:
                    failed_in_round += 1
                    index, association, unanswered = self._fail_over(index, "ke_failed"), None, 0
                    if failed_in_round >= len(self.sources):
                        await trio.sleep(wait)
                        wait = min(wait * 2, self.max_retry_s)
                        failed_in_round = 0
                    continue
            outcome = await self._poll(sock, association, source)
            if isinstance(outcome, NtpSample):
                failed_in_round, wait, unanswered = 0, self.retry_s, 0
                if index > 0 and revert_at == math.inf:
                    revert_at = trio.current_time() + self.revert_s
            elif isinstance(outcome, KissOfDeath):
                if outcome.code == "NTSN":
                    continue  # re-key with the same source at once
                if outcome.code in ("DENY", "RSTR"):
                    index, association = self._fail_over(index, f"kod:{outcome.code}"), None
                    continue
            else:
                unanswered += 1
                if unanswered >= self.max_unanswered:
                    unanswered = 0
                    index, association = self._fail_over(index, "no_response"), None
                    continue
            if index > 0 and trio.current_time() >= revert_at:
                revert_at = trio.current_time() + self.revert_s
                for better in range(index):
                    candidate = await self._ke(self.sources[better])
                    if candidate is not None:
                        self._switch(index, better, "higher_priority")
                        index, association = better, candidate
                        break
                if index == 0:
                    revert_at = math.inf
                continue
            await trio.sleep(self.poll_s)

    def _switch(self, old: int, new: int, reason: str) -> None:
        self._failovers += 1
        self._recorder.emit(
            self.name,
            "nts_failover",
            source=self.sources[old].name,
            to=self.sources[new].name,
            reason=reason,
        )

    def _fail_over(self, index: int, reason: str) -> int:
        new = (index + 1) % len(self.sources)
        if new != index:
            self._switch(index, new, reason)
        return new

    async def _poll(
        self, sock: DatagramSocket, association: NtsAssociation, source: NtsSource
    ) -> NtpSample | KissOfDeath | None:
        """One request and its answer (None: no valid answer within ``timeout_s``)."""
        try:
            request = association.request(self._wall())
        except NtpRejected:
            return None
        try:
            await sock.send_to(request, self._target)
        except (ConfigError, TransportError) as exc:
            self._rejected["send_failed"] += 1
            self._recorder.emit(self.name, "ntp_send_failed", source=source.name, detail=str(exc))
            self._unanswered += 1
            return None
        with trio.move_on_after(self.timeout_s):
            while True:
                data, sender = await sock.receive_from()
                try:
                    outcome = association.receive(data, self._wall())
                except NtpRejected as exc:
                    self._rejected[exc.reason] += 1
                    if self._limiter.allow((sender[0], exc.reason), trio.current_time()):
                        self._recorder.emit(
                            self.name,
                            "ntp_rejected",
                            source=source.name,
                            peer=format_address(sender),
                            reason=exc.reason,
                        )
                    continue
                if isinstance(outcome, KissOfDeath):
                    if outcome.code == "NTSN":
                        self._naks += 1
                    self._recorder.emit(
                        self.name,
                        "nts_cookies_refused" if outcome.code == "NTSN" else "nts_kiss_of_death",
                        source=source.name,
                        code=outcome.code,
                        authenticated=outcome.authenticated,
                    )
                    return outcome
                self._accept(outcome, source)
                return outcome
        self._unanswered += 1
        return None

    def _accept(self, sample: NtpSample, source: NtsSource) -> None:
        first = not self.synced or self.source != source.name
        self.offset, self.delay, self.last_sample = sample.offset, sample.delay, sample
        self.source = source.name
        self._samples += 1
        self._synced.set()
        self._recorder.emit(
            self.name,
            "nts_synced" if first else "nts_sample",
            source=source.name,
            offset=round(sample.offset, 6),
            delay=round(sample.delay, 6),
            stratum=sample.stratum,
        )
        if self._discipline is not None:
            self._discipline(sample.offset)
