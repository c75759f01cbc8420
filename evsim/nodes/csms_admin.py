"""The operator's commands to a running CSMS: trigger certificate renewal or install a root on connected
stations (the request/response core of ``evsim csms --admin-socket`` and ``evsim admin``).

Theory of operation. An admin exchange is one request line and one response line, each a JSON object with a
version field ``"v": 1``. The codec here is sans-IO: :func:`decode_request` turns the bytes of one line into an
:class:`AdminRequest` or raises :class:`AdminRefused` (with a short reason) for anything it does not accept;
:func:`encode_request`, :func:`encode_response` and :func:`decode_response` are the other three directions.
:func:`execute` carries a request out on a :class:`~evsim.nodes.csms.Csms`: for each target station (a list,
or every station connected now) it sends TriggerMessage SignChargingStationCertificate (A02) or
InstallCertificate, at most :data:`CONCURRENCY` at once, each bounded by ``call_timeout``; the response names
each station with the station's answer or why nothing was sent (``not connected``, ``timeout``...). The
stations' answers and the signing that follows are also the CSMS's usual events (``certificate_call``,
``certificate_signed``).

The peer is a local operator, but the line is still checked before use: its size, the JSON, the operation, the
number of stations and each identity (an OCPP identifierString), the certificate type and the PEM's size; the
certificate itself is the station's to check (M05). Moving bytes (the unix socket) is the CLI's
(:mod:`evsim.admin`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final, Literal

import attrs
import trio

from evsim.errors import OcppError, TransportError, failure_reason
from evsim.nodes.certificates import INSTALL_MAX_BYTES, ROOT_TYPES
from evsim.nodes.csms import Csms

__all__ = [
    "CONCURRENCY",
    "MAX_LINE",
    "MAX_STATIONS",
    "AdminRefused",
    "AdminRequest",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
    "execute",
]

VERSION: Final = 1
MAX_LINE: Final = 1 << 20
"""The longest request or response line read, bytes (a response names up to :data:`MAX_STATIONS` stations)."""
MAX_STATIONS: Final = 10_000
CONCURRENCY: Final = 64
"""Station calls in flight at once for one request."""
OPS: Final = ("trigger_renewal", "install_root", "status")
_ID_MAX = 48  # OCPP identifierString of a station identity

Op = Literal["trigger_renewal", "install_root", "status"]


class AdminRefused(ValueError):
    """A request (or response) that is not accepted; the message is the reason."""


@attrs.frozen
class AdminRequest:
    """One operator command.

    Attributes:
        op: ``trigger_renewal``, ``install_root`` or ``status`` (the connected stations).
        stations: the target station identities; None: every station connected when it runs.
        certificate: ``install_root``: the PEM certificate.
        certificate_type: ``install_root``: ``CSMSRootCertificate`` (default) or another root type.
    """

    op: Op
    stations: tuple[str, ...] | None = None
    certificate: str = ""
    certificate_type: str = "CSMSRootCertificate"


def _station_id(value: object) -> str:
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= _ID_MAX
        or ":" in value
        or not value.isprintable()
        or not value.isascii()
    ):
        raise AdminRefused("a station identity is 1..48 printable ASCII characters without ':'")
    return value


def decode_request(line: bytes) -> AdminRequest:
    """The request in one line (without or with its newline).

    Raises:
        AdminRefused: too long, not a JSON object of version 1, an unknown operation, a bad station list,
            certificate type or certificate size.
    """
    if len(line) > MAX_LINE:
        raise AdminRefused(f"request longer than {MAX_LINE} bytes")
    try:
        data = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise AdminRefused("not a JSON line") from None
    if not isinstance(data, dict) or data.get("v") != VERSION:
        raise AdminRefused(f"not a version {VERSION} request object")
    op = data.get("op")
    if op not in OPS:
        raise AdminRefused(f"unknown op (use one of {', '.join(OPS)})")
    stations: tuple[str, ...] | None = None
    if data.get("stations") is not None:
        raw = data["stations"]
        if not isinstance(raw, list) or not 0 < len(raw) <= MAX_STATIONS:
            raise AdminRefused(f"stations is a list of 1..{MAX_STATIONS} identities, or null for all")
        stations = tuple(dict.fromkeys(_station_id(s) for s in raw))
    certificate, certificate_type = "", "CSMSRootCertificate"
    if op == "install_root":
        given, kind = data.get("certificate"), data.get("certificate_type", certificate_type)
        if not isinstance(given, str) or not 0 < len(given) <= INSTALL_MAX_BYTES:
            raise AdminRefused(f"certificate is a PEM string of at most {INSTALL_MAX_BYTES} characters")
        if kind not in ROOT_TYPES:
            raise AdminRefused(f"certificate_type is one of {', '.join(ROOT_TYPES)}")
        certificate, certificate_type = given, kind
    return AdminRequest(op, stations, certificate, certificate_type)


def encode_request(request: AdminRequest) -> bytes:
    """The request as one line (newline included)."""
    data: dict[str, Any] = {
        "v": VERSION,
        "op": request.op,
        "stations": list(request.stations) if request.stations is not None else None,
    }
    if request.op == "install_root":
        data |= {"certificate": request.certificate, "certificate_type": request.certificate_type}
    return json.dumps(data).encode() + b"\n"


def encode_response(response: dict[str, Any]) -> bytes:
    """A response object as one line (newline included; ``"v"`` added)."""
    return json.dumps({"v": VERSION, **response}, sort_keys=True).encode() + b"\n"


def decode_response(line: bytes) -> dict[str, Any]:
    """The response in one line.

    Raises:
        AdminRefused: too long or not a version 1 JSON object.
    """
    if len(line) > MAX_LINE:
        raise AdminRefused(f"response longer than {MAX_LINE} bytes")
    try:
        data = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise AdminRefused("the CSMS answered something that is not a JSON line") from None
    if not isinstance(data, dict) or data.get("v") != VERSION:
        raise AdminRefused("the CSMS answered with another protocol version")
    return data


def connected_stations(csms: Csms) -> list[str]:
    """The identities with a live session now, sorted."""
    return sorted(sid for sid, rec in csms.stations.items() if rec.session is not None)


async def execute(csms: Csms, request: AdminRequest) -> dict[str, Any]:
    """Carry out ``request`` on ``csms`` (see the module docstring).

    Returns:
        ``{"ok": True, "op": ..., "results": {station: {"status": ...} | {"error": reason}}}``, or for
        ``status`` ``{"ok": True, "op": "status", "connected": [...]}``.
    """
    connected = connected_stations(csms)
    if request.op == "status":
        return {"ok": True, "op": "status", "connected": connected}
    targets: Sequence[str] = request.stations if request.stations is not None else connected
    results: dict[str, dict[str, str]] = {}
    limiter = trio.CapacityLimiter(CONCURRENCY)

    async def one(sid: str) -> None:
        async with limiter:
            try:
                with trio.fail_after(csms.config.call_timeout):
                    if request.op == "trigger_renewal":
                        answer = await csms.certificates.trigger_message(sid)
                    else:
                        answer = await csms.certificates.install_certificate(
                            sid, request.certificate_type, request.certificate
                        )
                results[sid] = {"status": str(answer.get("status", ""))[:40]}
            except KeyError:
                results[sid] = {"error": "not connected"}
            except (OcppError, TransportError) as exc:
                results[sid] = {"error": failure_reason(exc)}
            except trio.TooSlowError:
                results[sid] = {"error": "timeout"}

    async with trio.open_nursery() as nursery:
        for sid in targets:
            nursery.start_soon(one, sid)
    csms.recorder.emit(
        csms.config.name,
        "admin_request",
        op=request.op,
        stations=len(targets),
        accepted=sum(1 for r in results.values() if r.get("status") == "Accepted"),
    )
    return {"ok": True, "op": request.op, "results": {sid: results[sid] for sid in targets}}
