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

:func:`check_client_certificate` is pure. The listener steps both servers share live here too: :func:`accept_tls` (the handshake at the simulation's time,
a refusal counted and recorded with its OCPP security event), :func:`upgrade_station` (the WebSocket upgrade;
no common OCPP subprotocol: accept, then close at once, OCPP-J §3.2), :func:`admit_station` (the two in turn)
and :func:`basic_auth_problem`.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable
from typing import Literal, TypeAlias

import attrs
import trio
from cryptography import x509
from cryptography.x509.oid import NameOID

from evsim.clock import SimClock
from evsim.errors import HandshakeFailed
from evsim.recorder import Recorder
from evsim.tls.context import ServerTls
from evsim.tls.events import ocpp_security_event
from evsim.tls.stream import TlsInfo, TlsStream, tls_accept
from evsim.ws.auth import parse_basic_auth
from evsim.ws.connection import Accept, Reject, UpgradeRequest, WebSocket, ws_server

__all__ = [
    "BEHIND_CONTROLLER_CHOICES",
    "Admission",
    "BehindController",
    "CertificateVerdict",
    "TrustedController",
    "accept_tls",
    "admit_station",
    "basic_auth_problem",
    "check_client_certificate",
    "common_name",
    "organization",
    "upgrade_station",
]

BehindController: TypeAlias = Literal["require_station_cert", "trust_controller"]
BEHIND_CONTROLLER_CHOICES: tuple[BehindController, ...] = ("require_station_cert", "trust_controller")
"""The values of the ``behind_controller`` setting, in the spelling scenario files use."""


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


def check_client_certificate(
    tls_info: TlsInfo | None,
    station_id: str,
    operator: str,
    *,
    behind_controller: BehindController = "require_station_cert",
    trusted_controllers: Iterable[TrustedController] = (),
) -> CertificateVerdict:
    """Decide whether the TLS client certificate may speak for ``station_id`` (see the module docstring).

    Args:
        tls_info: the handshake's result (its ``peer_chain[0]`` is the client certificate).
        station_id: the identity from the URL path.
        operator: the operator organization a direct station's certificate O must equal (A00.FR.404).
        behind_controller: the server's setting.
        trusted_controllers: the allow-list used by ``"trust_controller"``.

    Returns:
        The verdict; ``controller`` is set when the station is admitted behind a controller.
    """
    if tls_info is None or not tls_info.peer_chain:
        return CertificateVerdict(False, "no client certificate (security profile 3 requires one)")
    leaf = tls_info.peer_chain[0]
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
        or for want of a common subprotocol: then accepted without one and closed with 1002, OCPP-J §3.2).

    Raises:
        TransportError: the upgrade failed (malformed, timeout, connection lost).
    """
    decision: dict[str, str] = {}
    ws = await ws_server(stream, lambda req: decide(req, decision), compression=compression)
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
        tls_info: the handshake's outcome (None without TLS or before it).
        ws: the upgraded WebSocket, once accepted with an OCPP subprotocol.
        decision: what the upgrade gate noted (``station_id`` at least).
    """

    stream: trio.abc.Stream
    tls_info: TlsInfo | None = None
    ws: WebSocket | None = None
    decision: dict[str, str] = attrs.field(factory=dict)


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
) -> bool:
    """The listener steps of the CSMS and the Local Controller: :func:`accept_tls` (when ``server_tls`` is
    set), then :func:`upgrade_station` with ``decide`` seeing the handshake's outcome.

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

    Returns:
        True when the station is admitted (``admission.ws`` and ``admission.decision`` set), False when the
        handshake or the upgrade refused it.

    Raises:
        TransportError: the upgrade failed (malformed, timeout, connection lost).
    """
    if server_tls is not None:
        tls_stream = await accept_tls(
            admission.stream, server_tls, node=node, clock=clock, recorder=recorder, failures=failures
        )
        if tls_stream is None:
            return False
        admission.stream = tls_stream
        admission.tls_info = info = tls_stream.info
        if on_tls is not None:
            on_tls(info)
    upgraded = await upgrade_station(
        admission.stream,
        lambda req, decision: decide(req, admission.tls_info, decision),
        node=node,
        recorder=recorder,
        compression=compression,
    )
    if upgraded is None:
        return False
    admission.ws, admission.decision = upgraded
    return True
