"""Who may speak for a station identity: the listener gates shared by the CSMS and the Local Controller.

OCPP A00.FR.404/405 (protocol-digest §2.1): the CSMS checks that the TLS client certificate's O is the operator
and its CN the station's serial number, which evsim takes to be the station identity in the URL path. Behind a
Local Controller that rule cannot hold: OCPP-J §6.5 (protocol-digest §4) makes the controller use *its own*
Charging Station certificate towards the CSMS, for every station it relays, and it never holds the stations'
keys. The specification does not say how the CSMS should then authenticate the relayed stations (protocol-digest
§4, "gaps to decide"), so evsim makes it an explicit server setting, :data:`BehindController`:

``"require_station_cert"`` (default)
    Only direct stations: the certificate CN must equal the identity in the path. A controller's link for one of
    its stations is refused (HTTP 401), as a strict OCPP CSMS would.
``"trust_controller"``
    A certificate whose (O, CN) is in ``trusted_controllers`` may carry *other* identities: the station is then
    identified by the URL path plus HTTP Basic auth (its password, forwarded or configured by the controller),
    and the serialNumber-vs-CN check of BootNotification (B01.FR.11/12) does not apply to it. An entry may limit
    the stations a controller speaks for, so a stolen controller certificate only works for those stations
    (the intent of OCPP-J §6.5). A certificate whose CN equals the path identity is still a direct station (a
    controller's own connection is exactly that).

The same gate serves a Local Controller's own listener, so a controller can sit behind another (chaining).

Certificate purpose (profile 3). OCPP calls ExtendedKeyUsage "strongly NOT RECOMMENDED" (A00.FR.5xx, ISO 15118
compatibility), so a station leaf *without* the extension is accepted, as RFC 5280 §4.2.1.12 reads it (any
purpose). A leaf *with* the extension must list ``clientAuth`` (or ``anyExtendedKeyUsage``): a TLS server
certificate (``serverAuth`` only), the CSMS's own for instance, never speaks for a station. OpenSSL checks that
during the handshake too (``cert_invalid:purpose``); the gate repeats it so the rule holds whatever the TLS
settings. The evsim PKIs issue ``serverAuth`` on server certificates and ``clientAuth`` on station
certificates. Where a station sub-CA is configured (``station_issuers``), the verified chain must go through
one of those CAs, which also refuses root-issued certificates without the extension.

Duplicate identities (:data:`DuplicatePolicy`). OCPP leaves a second connection with the identity of a connected
station to the CSMS. Both servers share the choice:

``"replace_older"`` (default)
    The newer connection, once it passed the gates above (it holds the station's credentials), runs beside the
    older one without touching it: its own acceptance state (anything but BootNotification answered with
    SecurityError until its boot is Accepted), no CSMS-initiated CALLs. When its BootNotification is Accepted
    it becomes the station's session and the older connection is closed with 1008 "replaced by a newer
    connection" and one ``replaced_connection`` event naming both. A newcomer that never boots (or is
    rejected) never disturbs the live session. A station that reconnects after a link loss the server did not
    notice (half-open TCP) thereby takes over as soon as it boots.
``"refuse_newer"``
    While a connection of that identity is up, a new one is refused with HTTP 409 (one ``upgrade_rejected``
    event); the station gets through once the older connection ended (closed, or found dead).

Password guessing (:class:`AuthBudget`). Every upgrade refused with 401 counts against the source address; after
``max_failures`` within ``window_s`` the address is refused with HTTP 429 (``Retry-After``) for ``cooldown_s``
before its credentials are even looked at, with one ``auth_throttled`` event per streak. Other addresses are
not affected. The table of addresses is bounded (least recently failing forgotten first).

:func:`check_client_certificate` is pure. The listener steps both servers share live here too: :func:`accept_tls` (the handshake at the simulation's time,
a refusal counted and recorded with its OCPP security event), :func:`upgrade_station` (the WebSocket upgrade;
no common OCPP subprotocol: accept, then close at once, OCPP-J §3.2), :func:`admit_station` (the two in turn)
and :func:`basic_auth_problem`.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable, Iterable
from typing import Literal, TypeAlias, TypeVar

import attrs
import trio
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from evsim.clock import SimClock
from evsim.cpu import Cpu, set_cpu_owner
from evsim.errors import ConfigError, HandshakeFailed, UpgradeFailed
from evsim.net.base import peer_address, remote_address
from evsim.nodes.acceptor import handshake_finished
from evsim.nodes.expiry import ExpiryMonitor
from evsim.ocpp.versions import choose_subprotocol, subprotocol_for
from evsim.recorder import Recorder, bind_peer
from evsim.tls.context import ServerTls
from evsim.tls.cost import handshake_kind
from evsim.tls.events import ocpp_security_event
from evsim.tls.stream import TlsInfo, TlsStream, tls_accept
from evsim.ws import Accept, Reject, UpgradeRequest, WebSocket, ws_server
from evsim.ws.auth import parse_basic_auth
from evsim.ws.paths import printable_target, station_id_from_path

__all__ = [
    "ALREADY_CONNECTED",
    "BEHIND_CONTROLLER_CHOICES",
    "DUPLICATE_POLICY_CHOICES",
    "REPLACED_CLOSE",
    "Admission",
    "AuthBudget",
    "AuthBudgetConfig",
    "BehindController",
    "CertificateVerdict",
    "DuplicatePolicy",
    "TrustedController",
    "accept_tls",
    "admit_station",
    "basic_auth_problem",
    "check_client_certificate",
    "common_name",
    "decide_upgrade",
    "organization",
    "refuse_late_duplicate",
    "reject_upgrade",
    "upgrade_station",
]

BehindController: TypeAlias = Literal["require_station_cert", "trust_controller"]
BEHIND_CONTROLLER_CHOICES: tuple[BehindController, ...] = ("require_station_cert", "trust_controller")
"""The values of the ``behind_controller`` setting, in the spelling scenario files use."""

DuplicatePolicy: TypeAlias = Literal["replace_older", "refuse_newer"]
DUPLICATE_POLICY_CHOICES: tuple[DuplicatePolicy, ...] = ("replace_older", "refuse_newer")
"""The values of the ``duplicate_identity`` setting (see the module docstring)."""

REPLACED_CLOSE = (1008, "replaced by a newer connection")
"""WebSocket close code and reason of a connection replaced under ``"replace_older"``: policy violation (one
connection per identity), RFC 6455 §7.4.1. A Local Controller that gets it on a station's upstream link closes
the station's link too instead of reconnecting (which would take the identity back)."""


def _station_set(value: Iterable[str] | None) -> frozenset[str] | None:
    return None if value is None else frozenset(value)


@attrs.frozen
class TrustedController:
    """A Local Controller certificate allowed to carry other station identities.

    Args:
        organization: the certificate's O.
        common_name: the certificate's CN (the controller's own identity).
        stations: identities it may speak for; None = any.
    """

    organization: str
    common_name: str
    stations: frozenset[str] | None = attrs.field(default=None, converter=_station_set)


@attrs.frozen
class CertificateVerdict:
    """What the client-certificate gate decided.

    Attributes:
        ok: the certificate may speak for the station.
        reason: why not (empty when ``ok``), for the HTTP rejection and the event log.
        controller: the controller's CN when the station is admitted *behind* a trusted controller (the caller
            must then also check Basic auth); None for a direct station.
    """

    ok: bool
    reason: str = ""
    controller: str | None = None


def common_name(cert: x509.Certificate) -> str | None:
    """The certificate subject's first CN, or None."""
    values = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else None


def organization(cert: x509.Certificate) -> str | None:
    """The certificate subject's first O, or None."""
    values = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return str(values[0].value) if values else None


def client_auth_problem(leaf: x509.Certificate) -> str:
    """Why ``leaf`` may not be a TLS client certificate: "" when it has no ExtendedKeyUsage (OCPP advises
    against the extension) or lists ``clientAuth`` or ``anyExtendedKeyUsage``, else the rule it breaks."""
    try:
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return ""
    if ExtendedKeyUsageOID.CLIENT_AUTH in eku or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in eku:
        return ""
    return "certificate extended key usage lacks clientAuth (not a client certificate)"


def issuer_problem(tls_info: TlsInfo, station_issuers: Iterable[x509.Certificate]) -> str:
    """Why the verified chain does not go through one of ``station_issuers`` ("" when it does, or when none is
    configured)."""
    issuers = tuple(station_issuers)
    if not issuers:
        return ""
    if any(cert in issuers for cert in tls_info.verified_chain[1:]):
        return ""
    return "certificate is not issued through the station sub-CA"


ClientStatus = Callable[[x509.Certificate], str]
"""A server's revocation check of a client certificate after the handshake (TLS gives a server no OCSP
staple from its client, so the server asks the responder itself): the reason it is refused (a text containing
"certificate", e.g. ``"certificate revoked (OCSP)"``), or "" when it may be used."""


def check_client_certificate(
    tls_info: TlsInfo | None,
    station_id: str,
    operator: str,
    *,
    behind_controller: BehindController = "require_station_cert",
    trusted_controllers: Iterable[TrustedController] = (),
    station_issuers: Iterable[x509.Certificate] = (),
    client_status: ClientStatus | None = None,
) -> CertificateVerdict:
    """Decide whether the TLS client certificate may speak for ``station_id`` (see the module docstring).

    Args:
        tls_info: the handshake's result (its ``peer_chain[0]`` is the client certificate).
        station_id: the identity from the URL path.
        operator: the operator organization a direct station's certificate O must equal (A00.FR.404).
        behind_controller: the server's setting.
        trusted_controllers: the allow-list used by ``"trust_controller"``.
        station_issuers: CAs (the station sub-CA) one of which the verified chain must contain; empty: any
            chain to the server's client-certificate roots.
        client_status: the revocation status check of the server's trust store beyond the handshake's CRLs
            (an OCSP query): why the leaf is refused, or "" (see :data:`ClientStatus`).

    Returns:
        The verdict; ``controller`` is set when the station is admitted behind a controller.
    """
    if tls_info is None or not tls_info.peer_chain:
        return CertificateVerdict(False, "no client certificate (security profile 3 requires one)")
    leaf = tls_info.peer_chain[0]
    problem = client_auth_problem(leaf) or issuer_problem(tls_info, station_issuers)
    if not problem and client_status is not None:
        problem = client_status(leaf)
    if problem:
        return CertificateVerdict(False, problem)
    cn = common_name(leaf)
    org = organization(leaf)
    if cn == station_id:
        if org != operator:
            return CertificateVerdict(
                False, f"certificate O {org!r} is not the operator organization {operator!r}"
            )
        return CertificateVerdict(True)
    if behind_controller == "trust_controller":
        for trusted in trusted_controllers:
            if trusted.common_name == cn and trusted.organization == org:
                if trusted.stations is not None and station_id not in trusted.stations:
                    return CertificateVerdict(
                        False, f"controller certificate CN {cn!r} may not speak for station {station_id!r}"
                    )
                return CertificateVerdict(True, controller=cn)
    return CertificateVerdict(False, f"certificate CN {cn!r} is not the station identity {station_id!r}")


def basic_auth_problem(
    header: str, station_id: str, expected: str | None, *, check_password: bool = True
) -> str:
    """Check an ``Authorization`` header for a station (profiles 1 and 2, or a station behind a controller).

    Args:
        header: the header value ("" when absent).
        station_id: the identity from the URL path; the Basic-auth user must be it (A00.FR.204/303).
        expected: the station's password; None refuses any password (unless ``check_password`` is False).
        check_password: False checks only presence and user (a controller forwarding credentials upstream).

    Returns:
        "" when fine, else the reason for the HTTP 401.
    """
    creds = parse_basic_auth(header) if header else None
    if creds is None:
        return "missing Basic auth"
    user, password = creds
    if user != station_id:
        return "Basic auth user is not the station identity"
    if check_password and (expected is None or password != expected):
        return "wrong password"
    return ""


ALREADY_CONNECTED = "station already connected (duplicate identity)"
"""Reason of the HTTP 409 refusal under ``"refuse_newer"``."""


def decide_upgrade(
    req: UpgradeRequest,
    tls_info: TlsInfo | None,
    out: dict[str, str],
    *,
    reject: Callable[[int, str, str], Reject],
    path_prefix: str,
    security_profile: int,
    organization: str,
    behind_controller: BehindController,
    trusted_controllers: Iterable[TrustedController],
    station_issuers: Iterable[x509.Certificate],
    client_status: ClientStatus | None = None,
    ocpp_versions: Iterable[str],
    password_for: Callable[[str], str | None] | None,
    check_relayed_password: bool,
    known: Callable[[str], bool] | None,
    connected: Callable[[str], bool],
    refuse_newer: bool,
) -> Accept | Reject:
    """The upgrade gate of a station listener, the one decision the CSMS and the Local Controller share.

    In turn: the identity in the path; an unknown identity (only when ``known`` is given); profiles 1 and 2:
    Basic auth; profile 3: the client certificate (:func:`check_client_certificate`), and for a station behind a
    trusted controller Basic auth as well; a duplicate identity under ``"refuse_newer"``; the subprotocol.

    Args:
        req: the upgrade request.
        tls_info: the handshake's outcome (None without TLS).
        out: receives ``station_id``, ``controller`` (the relaying controller's CN, when there is one) and
            ``authorization`` (the header as sent, when there is one).
        reject: builds (and counts, and records) a refusal from status, reason and station.
        path_prefix: the listener's path before the identity.
        security_profile: 1, 2 or 3.
        organization: the operator O a direct station's certificate must carry.
        behind_controller: see :data:`BehindController`.
        trusted_controllers: the allow-list of ``"trust_controller"``.
        station_issuers: the station sub-CAs a profile 3 chain must go through (none: any).
        client_status: profile 3: the revocation check of the client certificate after the handshake.
        ocpp_versions: the versions offered as subprotocols.
        password_for: a station's expected password (None refuses every password); None checks only that
            Basic auth is present and names the station (a controller forwarding credentials to its CSMS).
        check_relayed_password: check the password of a station behind a trusted controller with
            ``password_for`` too; False checks presence and user only (the CSMS above decides).
        known: whether an identity may connect at all (HTTP 404 otherwise); None admits any identity.
        connected: whether a connection of the identity is up.
        refuse_newer: the ``"refuse_newer"`` duplicate policy (HTTP 409 while ``connected``).

    Returns:
        The acceptance with the chosen subprotocol, or what ``reject`` returned.
    """
    station_id = station_id_from_path(req.path, path_prefix)
    if station_id is None:
        return reject(404, "bad or missing station identity in path", printable_target(req.path))
    if known is not None and not known(station_id):
        return reject(404, "unknown station", station_id)
    header = req.headers.get("authorization", "")
    if security_profile in (1, 2):
        expected = password_for(station_id) if password_for is not None else None
        problem = basic_auth_problem(header, station_id, expected, check_password=password_for is not None)
        if problem:
            return reject(401, problem, station_id)
    else:
        verdict = check_client_certificate(
            tls_info,
            station_id,
            organization,
            behind_controller=behind_controller,
            trusted_controllers=trusted_controllers,
            station_issuers=station_issuers,
            client_status=client_status,
        )
        if not verdict.ok:
            return reject(401, verdict.reason, station_id)
        if verdict.controller is not None:
            # behind a trusted controller: the path and Basic auth identify the station
            check = check_relayed_password and password_for is not None
            expected = password_for(station_id) if check and password_for is not None else None
            problem = basic_auth_problem(header, station_id, expected, check_password=check)
            if problem:
                return reject(401, f"behind controller {verdict.controller}: {problem}", station_id)
            out["controller"] = verdict.controller
    if refuse_newer and connected(station_id):
        return reject(409, ALREADY_CONNECTED, station_id)
    if header:
        out["authorization"] = header
    out["station_id"] = station_id
    return Accept(
        subprotocol=choose_subprotocol(req.subprotocols, [subprotocol_for(v) for v in ocpp_versions])
    )


def reject_upgrade(
    recorder: Recorder,
    node: str,
    rejections: collections.Counter[int],
    status: int,
    reason: str,
    station: str,
) -> Reject:
    """The ``reject`` of :func:`decide_upgrade` at a station listener: count the status, record one
    ``upgrade_rejected`` event (with the OCPP security event a refused certificate calls for), build the
    refusal. Bind the first three arguments (``functools.partial``) to get the callable."""
    rejections[status] += 1
    extra = {}
    if "certificate" in reason:
        extra["security_event"] = "InvalidChargingStationCertificate"
    recorder.emit(node, "upgrade_rejected", station=station, status=status, reason=reason, **extra)
    return Reject(status=status, reason=reason)


async def refuse_late_duplicate(
    ws: WebSocket,
    station: str,
    *,
    recorder: Recorder,
    node: str,
    rejections: collections.Counter[int],
) -> None:
    """Refuse, under ``"refuse_newer"``, a connection of an identity that got connected elsewhere while this
    one was being upgraded: counted and recorded like the HTTP 409 of :func:`decide_upgrade`, and the already
    upgraded WebSocket closed with 1008 (policy violation)."""
    rejections[409] += 1
    recorder.emit(node, "upgrade_rejected", station=station, status=409, reason=ALREADY_CONNECTED)
    await ws.aclose(REPLACED_CLOSE[0], ALREADY_CONNECTED)


_V = TypeVar("_V")


@attrs.frozen
class AuthBudgetConfig:
    """How many failed authentications a source address gets (see the module docstring).

    Args:
        max_failures: 401 refusals per address within ``window_s`` that start a cool-down.
        window_s: the sliding window the failures are counted in (s).
        cooldown_s: how long the address is then refused with 429 (s).
        max_sources: addresses remembered at most (the least recently failing is forgotten first).
    """

    max_failures: int = 10
    window_s: float = 60.0
    cooldown_s: float = 300.0
    max_sources: int = 4096

    def __attrs_post_init__(self) -> None:
        for name in ("max_failures", "max_sources"):
            if getattr(self, name) < 1:
                raise ConfigError(
                    f"{name} must be >= 1", path=f"auth_budget.{name}", value=getattr(self, name)
                )
        for name in ("window_s", "cooldown_s"):
            if not 0 < getattr(self, name) < math.inf:
                raise ConfigError(
                    f"{name} must be positive and finite",
                    path=f"auth_budget.{name}",
                    value=getattr(self, name),
                )


class AuthBudget:
    """Failed authentications per source address (sans-IO: every call gets ``now``, in trio time).

    Memory is bounded by ``max_sources`` addresses of at most ``max_failures`` timestamps each.
    """

    def __init__(self, config: AuthBudgetConfig | None = None) -> None:
        self.config = config if config is not None else AuthBudgetConfig()
        self._failures: collections.OrderedDict[str, collections.deque[float]] = collections.OrderedDict()
        self._blocked: collections.OrderedDict[str, float] = collections.OrderedDict()  # source -> until
        #: attempts refused during a cool-down, and cool-downs started
        self.refused = 0
        self.cooldowns = 0

    def __len__(self) -> int:
        """Addresses remembered (failing or cooling down)."""
        return len(self._failures) + len(self._blocked)

    def retry_after(self, source: str, now: float) -> float:
        """Seconds ``source`` must still wait (0.0 when it may try); a positive answer counts a refusal."""
        until = self._blocked.get(source)
        if until is None:
            return 0.0
        if now >= until:
            del self._blocked[source]
            return 0.0
        self.refused += 1
        return until - now

    def failure(self, source: str, now: float) -> bool:
        """Count a failed authentication of ``source``.

        Returns:
            True when this failure used up the budget: ``source`` is refused for ``cooldown_s`` from now.
        """
        cfg = self.config
        times = self._failures.pop(source, None)
        if times is None:
            times = collections.deque(maxlen=cfg.max_failures)
        while times and times[0] <= now - cfg.window_s:
            times.popleft()
        times.append(now)
        if len(times) < cfg.max_failures:
            self._remember(self._failures, source, times)
            return False
        self._blocked.pop(source, None)
        self._remember(self._blocked, source, now + cfg.cooldown_s)
        self.cooldowns += 1
        return True

    def _remember(self, table: collections.OrderedDict[str, _V], source: str, value: _V) -> None:
        table[source] = value  # newest last
        while len(table) > self.config.max_sources:
            table.popitem(last=False)


def note_accepted(
    expiry: ExpiryMonitor, node: str, server_tls: ServerTls | None, tls_info: TlsInfo | None, station_id: str
) -> None:
    """Note a listener's own certificate and the client certificate of an admitted station (expiry warnings)."""
    if server_tls is None:
        return
    expiry.note(node, server_tls.identity.chain[0], role="own")
    if tls_info is not None and tls_info.peer_chain:
        expiry.note(node, tls_info.peer_chain[0], role="peer", peer=station_id)


def stream_source(stream: trio.abc.Stream) -> str:
    """The remote host of an evsim network stream (``statistics().remote``), or "" for other streams."""
    remote = remote_address(stream)
    return "" if remote is None else remote[0]


async def accept_tls(
    stream: trio.abc.Stream,
    server_tls: ServerTls,
    *,
    node: str,
    clock: SimClock,
    recorder: Recorder,
    failures: collections.Counter[str],
) -> TlsStream | None:
    """Server side of the TLS handshake, certificates checked at the simulation's time.

    Returns:
        The TLS stream, or None after counting the refusal in ``failures`` and recording a ``handshake_failed``
        event with its OCPP security event (the caller closes ``stream``).
    """
    try:
        return await tls_accept(stream, server_tls, verify_time=clock.utcnow)
    except HandshakeFailed as exc:
        failures[exc.reason] += 1
        recorder.emit(
            node,
            "handshake_failed",
            reason=exc.reason,
            detail=exc.detail,
            security_event=ocpp_security_event(exc.reason, side="server") or "",
        )
        return None


async def upgrade_station(
    stream: trio.abc.Stream,
    decide: Callable[[UpgradeRequest, dict[str, str]], Accept | Reject],
    *,
    node: str,
    recorder: Recorder,
    compression: bool,
) -> tuple[WebSocket, dict[str, str]] | None:
    """The WebSocket upgrade of a station; ``decide`` fills the dict it gets (``station_id`` at least).

    Returns:
        The WebSocket with an OCPP subprotocol and what ``decide`` noted, or None when refused (by ``decide``,
        for want of a common subprotocol: then accepted without one and closed with 1002, OCPP-J §3.2, or
        because the request was malformed or too slow: then recorded as ``upgrade_rejected`` with the reason
        ``bad_http_request`` or ``upgrade_timeout`` and the parser's words as ``detail``).

    Raises:
        TransportError: the connection was lost before a complete request.
    """
    decision: dict[str, str] = {}
    try:
        ws = await ws_server(stream, lambda req: decide(req, decision), compression=compression)
    except UpgradeFailed as exc:
        recorder.emit(node, "upgrade_rejected", status=exc.status, reason=exc.reason, detail=str(exc))
        return None
    if ws is None:
        return None
    if ws.subprotocol is None:
        recorder.emit(
            node, "upgrade_rejected", station=decision["station_id"], status=0, reason="no subprotocol"
        )
        await ws.aclose(1002, "no supported OCPP subprotocol")
        return None
    return ws, decision


@attrs.define
class Admission:
    """One station connection going through a listener; the caller closes :attr:`stream` when done.

    Attributes:
        stream: what to close: the accepted transport, or the TLS stream once the handshake succeeded.
        peer: ``host:port`` of the other end ("" when the stream cannot say); :func:`admit_station` fills it in
            from the accepted stream and binds it to the task (every event it records carries ``peer``).
        tls_info: the handshake's outcome (None without TLS or before it).
        ws: the upgraded WebSocket, once accepted with an OCPP subprotocol.
        decision: what the upgrade gate noted (``station_id`` at least).
        source: the remote host (failure budget; "" when the stream does not say).
    """

    stream: trio.abc.Stream
    peer: str = ""
    tls_info: TlsInfo | None = None
    ws: WebSocket | None = None
    decision: dict[str, str] = attrs.field(factory=dict)
    source: str = ""


async def admit_station(
    admission: Admission,
    server_tls: ServerTls | None,
    decide: Callable[[UpgradeRequest, TlsInfo | None, dict[str, str]], Accept | Reject],
    *,
    node: str,
    clock: SimClock,
    recorder: Recorder,
    failures: collections.Counter[str],
    compression: bool,
    on_tls: Callable[[TlsInfo], None] | None = None,
    budget: AuthBudget | None = None,
    rejections: collections.Counter[int] | None = None,
    cpu: Cpu | None = None,
) -> bool:
    """The listener steps of the CSMS and the Local Controller: :func:`accept_tls` (when ``server_tls`` is
    set), then :func:`upgrade_station` with ``decide`` seeing the handshake's outcome.

    It binds the connection's peer address to the current task (:func:`~evsim.recorder.bind_peer`),
    so every event recorded while serving this connection names it, and records ``connection_opened`` and,
    after a handshake, ``tls_accepted`` (version, suite, group, resumed, and the client certificate's CN).

    Args:
        admission: filled in as the steps succeed (its ``stream`` always names what to close).
        server_tls: the listener's TLS, or None (security profile 1).
        decide: the upgrade gate: request, TLS outcome, and the dict to note the decision in.
        node: the server's name, for events.
        clock: certificate checks at the simulation's time.
        recorder: where refusals are recorded.
        failures: handshake refusals counted by reason.
        compression: offer permessage-deflate.
        on_tls: called with the outcome of every successful handshake (statistics).
        budget: failed authentications per source: 401 refusals count, an address past its budget gets 429
            without ``decide`` being asked (one ``auth_throttled`` event per cool-down).
        rejections: upgrade refusals by HTTP status, counted here for the 429s.
        cpu: the server's CPU model (virtual time): charged for the connection, a full handshake before the
            handshake (so an overloaded server makes clients' handshakes time out), what the kind negotiated
            costs beyond that after it, and the upgrade before the request is answered.

    Returns:
        True when the station is admitted (``admission.ws`` and ``admission.decision`` set), False when the
        handshake or the upgrade refused it.

    Raises:
        TransportError: the connection was lost during the upgrade.
    """
    if not admission.peer:
        admission.peer = peer_address(admission.stream)
    if not admission.source:
        admission.source = stream_source(admission.stream)
    source = admission.source
    bind_peer(admission.peer)
    set_cpu_owner(source)  # on the in-memory network a station's host name is its id
    recorder.emit(node, "connection_opened")
    if cpu is not None:
        await cpu.charge(("conn", "server"))
    if server_tls is not None:
        if (
            cpu is not None
        ):  # the handshake's work, while the client waits for it (its handshake_timeout runs)
            await cpu.charge(("tls", "server"))
        tls_stream = await accept_tls(
            admission.stream, server_tls, node=node, clock=clock, recorder=recorder, failures=failures
        )
        if tls_stream is None:
            return False
        admission.stream = tls_stream
        admission.tls_info = info = tls_stream.info
        if cpu is not None:  # what this kind of handshake costs beyond the one charged
            await cpu.charge(
                handshake_kind(info, server_cert=server_tls.identity.chain[0]), less=("tls", "server")
            )
        client = common_name(info.peer_chain[0]) if info.peer_chain else None
        recorder.emit(
            node,
            "tls_accepted",
            version=info.version,
            suite=info.cipher_iana,
            group=info.group or "",
            resumed=info.session_reused,
            client=client or "",
        )
        if on_tls is not None:
            on_tls(info)
    handshake_finished()  # the listener may accept the next connection (acceptor: max_handshakes)

    def gate(req: UpgradeRequest, decision: dict[str, str]) -> Accept | Reject:
        if budget is None:
            return decide(req, admission.tls_info, decision)
        wait = budget.retry_after(source, clock.now())
        if wait > 0:
            if rejections is not None:
                rejections[429] += 1
            return Reject(
                status=429,
                reason="too many failed authentications from this address",
                headers=(("Retry-After", str(math.ceil(wait))),),
            )
        verdict = decide(req, admission.tls_info, decision)
        if isinstance(verdict, Reject) and verdict.status == 401 and budget.failure(source, clock.now()):
            cfg = budget.config
            recorder.emit(
                node,
                "auth_throttled",
                source=source,
                failures=cfg.max_failures,
                window=cfg.window_s,
                cooldown=cfg.cooldown_s,
            )
        return verdict

    if cpu is not None:
        await cpu.charge(("ws", "server"))
    upgraded = await upgrade_station(
        admission.stream,
        gate,
        node=node,
        recorder=recorder,
        compression=compression,
    )
    if upgraded is None:
        return False
    admission.ws, admission.decision = upgraded
    return True
