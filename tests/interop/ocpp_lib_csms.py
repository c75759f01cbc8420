"""Independent OCPP 2.0.1 CSMS built on the `ocpp` PyPI library (asyncio + websockets).

Used by evsim's interop tests as a peer that shares no code with evsim. Listens on 127.0.0.1 only, over TLS,
at ``wss://localhost:<port>/ocpp/<station id>``. Every line on stdout is one JSON object, flushed:

* ``{"event": "listening", "port": P}`` once the socket is bound (the port also goes to ``--ready-file``);
* ``{"event": "rejected", "status": 401|404, "path": ..., "reason": ...}`` for a refused upgrade;
* ``{"event": "connected", "station": id, "subprotocol": ..., "tls_version": ..., "client_cn": ...}``;
* ``{"station": id, "action": A, "message_id": M, "payload": {...}}`` per CALL received (wire camelCase);
* ``{"station": id, "sent": "TriggerMessage", "status": ...}`` with ``--trigger-heartbeat`` or ``--trigger-csr``;
* ``{"station": id, "sent": "CertificateSigned", "status": ..., "cert_sha256": ...}`` with ``--trigger-csr``;
* with ``--tls-settings``, once per station after its first boot: ``{"station": id, "sent": "GetVariables",
  "variables": {name: value}}`` (the InternalCtrlr TLS variables), ``{"station": id, "sent": "SetVariables",
  "results": [{"variable", "status", "reasonCode"}]}`` (TLS 1.2 only with one suite, and two values the
  station must refuse), then ``{"station": id, "sent": "Reset", "status": ...}``;
* ``{"event": "disconnected", "station": id, "code": C}``;
* ``{"event": "summary", "transactions": {...}}`` and ``{"event": "exit", "reason": ...}`` at the end.

Exits by itself after ``--duration`` seconds, or on SIGTERM / SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import hmac
import json
import logging
import os
import signal
import ssl
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from ocpp.routing import after as _ocpp_after
from ocpp.routing import on as _ocpp_on
from ocpp.v201 import ChargePoint, call, call_result
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

SUBPROTOCOL = Subprotocol("ocpp2.0.1")
PATH_PREFIX = "/ocpp/"
LISTEN_HOST = "127.0.0.1"  # never anything else
HEARTBEAT_INTERVAL = 300
TLS_COMPONENT = "InternalCtrlr"
TLS_VARIABLES = ("TlsVersions", "SupportedCiphers12", "SupportedCiphers13")
TLS12_SUITE = "ECDHE-ECDSA-AES256-GCM-SHA384"

_F = TypeVar("_F", bound=Callable[..., Any])


def on(action: str) -> Callable[[_F], _F]:
    """Typed view of ``ocpp.routing.on`` (the library has no type hints)."""
    decorator: Callable[[_F], _F] = _ocpp_on(action)
    return decorator


def after(action: str) -> Callable[[_F], _F]:
    """Typed view of ``ocpp.routing.after``."""
    decorator: Callable[[_F], _F] = _ocpp_after(action)
    return decorator


def emit(**fields: Any) -> None:
    print(json.dumps(fields, sort_keys=True), flush=True)


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def station_id_from_path(path: str) -> str | None:
    """``/ocpp/<percent-encoded id>`` (query string ignored) -> id, or None."""
    path = path.split("?", 1)[0]
    if not path.startswith(PATH_PREFIX):
        return None
    ident = unquote(path[len(PATH_PREFIX) :])
    if not ident or "/" in ident or ":" in ident or len(ident) > 48:
        return None
    return ident


class Recorder:
    """What the CSMS saw, shared by all connections."""

    def __init__(self) -> None:
        # station id -> transaction id -> [{"eventType", "seqNo", "triggerReason"}, ...]
        self.transactions: dict[str, dict[str, list[dict[str, Any]]]] = {}

    def transaction_event(self, station: str, payload: dict[str, Any]) -> None:
        tx_id = str(payload.get("transactionInfo", {}).get("transactionId"))
        entry = {k: payload.get(k) for k in ("eventType", "seqNo", "triggerReason")}
        self.transactions.setdefault(station, {}).setdefault(tx_id, []).append(entry)


# The library ships no type information, so its ChargePoint is `Any` to mypy.
class StationLink(ChargePoint):  # type: ignore[misc]  # subclassing an untyped library class
    """CSMS side of one station's connection."""

    def __init__(
        self,
        station_id: str,
        connection: ServerConnection,
        recorder: Recorder,
        trigger: bool,
        signer: CsrSigner | None = None,
        tls_settings: set[str] | None = None,
    ) -> None:
        super().__init__(station_id, connection, response_timeout=30)
        self.recorder = recorder
        self.trigger_heartbeat = trigger
        self.signer = signer
        self.tls_settings = tls_settings  # stations whose TLS settings were changed already

    async def route_message(self, raw_msg: str) -> None:
        # Log every CALL as it came off the wire (camelCase), then let the library dispatch it.
        try:
            frame = json.loads(raw_msg)
        except ValueError:
            frame = None
        if isinstance(frame, list) and len(frame) == 4 and frame[0] == 2:
            _, message_id, action, payload = frame
            emit(station=self.id, action=action, message_id=message_id, payload=payload)
            if action == "TransactionEvent" and isinstance(payload, dict):
                self.recorder.transaction_event(self.id, payload)
        await super().route_message(raw_msg)

    @on("BootNotification")
    def on_boot_notification(self, **_: Any) -> Any:
        return call_result.BootNotification(
            current_time=utcnow(), interval=HEARTBEAT_INTERVAL, status="Accepted"
        )

    @after("BootNotification")
    async def after_boot_notification(self, **_: Any) -> None:
        if self.trigger_heartbeat:
            await self._trigger("Heartbeat")
        if self.signer is not None and self.id not in self.signer.renewed:
            self.signer.renewed.add(self.id)  # once per station: its next connection uses the new certificate
            await self._trigger("SignChargingStationCertificate")
        if self.tls_settings is not None and self.id not in self.tls_settings:
            self.tls_settings.add(self.id)
            await self._change_tls_settings()

    async def _change_tls_settings(self) -> None:
        """Read the station's TLS variables, ask for TLS 1.2 with one suite (plus two values it cannot do),
        and reset it so the next connection uses them."""
        names = [*TLS_VARIABLES, "AvailableTlsVersions", "AvailableCiphers12", "AvailableCiphers13"]
        got = await self.call(
            call.GetVariables(
                get_variable_data=[
                    {"component": {"name": TLS_COMPONENT}, "variable": {"name": n}} for n in names
                ]
            ),
            suppress=False,
        )
        variables = {r["variable"]["name"]: r.get("attribute_value") for r in got.get_variable_result}
        emit(station=self.id, sent="GetVariables", variables=variables)
        wanted = [
            ("TlsVersions", "TLSv1.2"),
            ("SupportedCiphers12", TLS12_SUITE),
            ("TlsVersions", "TLSv1.2,TLSv1.3"),  # OpenSSL cannot prefer the older version: refused
            ("SupportedCiphers12", "NO-SUCH-CIPHER"),  # unknown: refused
        ]
        results = []
        for name, value in wanted:  # one request each, so their order is the order they apply in
            answer = await self.call(
                call.SetVariables(
                    set_variable_data=[
                        {
                            "attribute_value": value,
                            "component": {"name": TLS_COMPONENT},
                            "variable": {"name": name},
                        }
                    ]
                ),
                suppress=False,
            )
            (result,) = answer.set_variable_result
            info = result.get("attribute_status_info") or {}
            results.append(
                {
                    "variable": name,
                    "status": result["attribute_status"],
                    "reasonCode": info.get("reason_code"),
                }
            )
        emit(station=self.id, sent="SetVariables", results=results)
        reset = await self.call(call.Reset(type="OnIdle"), suppress=False)
        emit(station=self.id, sent="Reset", status=reset.status)

    async def _trigger(self, what: str) -> None:
        try:
            result = await self.call(call.TriggerMessage(requested_message=what), suppress=False)
        except Exception as exc:  # CALLERROR or timeout from the station
            emit(station=self.id, sent="TriggerMessage", error=f"{type(exc).__name__}: {exc}")
            return
        emit(station=self.id, sent="TriggerMessage", requested=what, status=result.status)

    @on("SignCertificate")
    def on_sign_certificate(self, **_: Any) -> Any:
        status = "Accepted" if self.signer is not None else "Rejected"
        return call_result.SignCertificate(status=status)

    @after("SignCertificate")
    async def after_sign_certificate(self, csr: str, **_: Any) -> None:
        if self.signer is None:
            return
        chain, fingerprint = self.signer.sign(csr)
        try:
            result = await self.call(
                call.CertificateSigned(
                    certificate_chain=chain, certificate_type="ChargingStationCertificate"
                ),
                suppress=False,
            )
        except Exception as exc:
            emit(station=self.id, sent="CertificateSigned", error=f"{type(exc).__name__}: {exc}")
            return
        emit(station=self.id, sent="CertificateSigned", status=result.status, cert_sha256=fingerprint)

    @on("Heartbeat")
    def on_heartbeat(self, **_: Any) -> Any:
        return call_result.Heartbeat(current_time=utcnow())

    @on("StatusNotification")
    def on_status_notification(self, **_: Any) -> Any:
        return call_result.StatusNotification()

    @on("Authorize")
    def on_authorize(self, **_: Any) -> Any:
        return call_result.Authorize(id_token_info={"status": "Accepted"})

    @on("TransactionEvent")
    def on_transaction_event(self, **_: Any) -> Any:
        return call_result.TransactionEvent()

    @on("MeterValues")
    def on_meter_values(self, **_: Any) -> Any:
        return call_result.MeterValues()

    @on("SecurityEventNotification")
    def on_security_event_notification(self, **_: Any) -> Any:
        return call_result.SecurityEventNotification()


class CsrSigner:
    """Signs station CSRs with a CA certificate and key (``--sign-cert``/``--sign-key``), cryptography only."""

    def __init__(self, cert_file: str, key_file: str) -> None:
        self.ca = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
        self.key = serialization.load_pem_private_key(Path(key_file).read_bytes(), password=None)
        self.renewed: set[str] = set()

    def sign(self, csr_pem: str) -> tuple[str, str]:
        """The chain (leaf, CA) for ``csr_pem`` and the leaf's SHA-256 fingerprint (hex)."""
        csr = x509.load_pem_x509_csr(csr_pem.encode())
        if not csr.is_signature_valid:
            raise ValueError("CSR signature does not verify")
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(csr.subject)
            .issuer_name(self.ca.subject)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())  # type: ignore[arg-type]  # an EC or RSA CA key
        )
        chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (cert, self.ca))
        return chain.decode(), cert.fingerprint(hashes.SHA256()).hex()


def client_cert_sha256(connection: ServerConnection) -> str | None:
    ssl_object = connection.transport.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        return None
    return x509.load_der_x509_certificate(der).fingerprint(hashes.SHA256()).hex()


def build_ssl_context(cert: str, key: str, ca: str | None, require_client_cert: bool) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile=cert, keyfile=key)
    if ca is not None:
        context.load_verify_locations(cafile=ca)
        context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return context


def peer_common_name(connection: ServerConnection) -> str | None:
    ssl_object = connection.transport.get_extra_info("ssl_object")
    peer = ssl_object.getpeercert() if ssl_object is not None else None
    if not peer:
        return None
    for rdn in peer.get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                return str(value)
    return None


def basic_auth_ok(header: str | None, station_id: str, password: str) -> tuple[bool, str]:
    if header is None:
        return False, "missing Authorization header"
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic":
        return False, f"unsupported scheme {scheme!r}"
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return False, "malformed Basic credentials"
    user, sep, given = decoded.partition(":")
    if not sep or user != station_id:
        return False, "username does not match the station identity"
    if not hmac.compare_digest(given.encode(), password.encode()):
        return False, "wrong password"
    return True, "ok"


class Csms:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.recorder = Recorder()
        self.signer = CsrSigner(args.sign_cert, args.sign_key) if args.sign_cert else None
        self.tls_settings: set[str] | None = set() if args.tls_settings else None

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        station_id = station_id_from_path(request.path)
        if station_id is None:
            emit(event="rejected", status=404, path=request.path, reason="path is not /ocpp/<id>")
            return connection.respond(HTTPStatus.NOT_FOUND, "unknown charging station\n")
        if self.args.password is not None:
            ok, reason = basic_auth_ok(request.headers.get("Authorization"), station_id, self.args.password)
            if not ok:
                emit(event="rejected", status=401, path=request.path, station=station_id, reason=reason)
                response = connection.respond(HTTPStatus.UNAUTHORIZED, "unauthorized\n")
                response.headers["WWW-Authenticate"] = 'Basic realm="ocpp", charset="UTF-8"'
                return response
        return None

    @staticmethod
    def select_subprotocol(connection: ServerConnection, offered: Any) -> Subprotocol | None:
        # OCPP-J §3.2: with no acceptable subprotocol, complete the handshake without one, then close.
        return SUBPROTOCOL if SUBPROTOCOL in offered else None

    async def handler(self, connection: ServerConnection) -> None:
        assert connection.request is not None  # set once the handshake succeeded
        station_id = station_id_from_path(connection.request.path)
        assert station_id is not None  # process_request rejected anything else
        ssl_object = connection.transport.get_extra_info("ssl_object")
        emit(
            event="connected",
            station=station_id,
            subprotocol=connection.subprotocol,
            tls_version=ssl_object.version() if ssl_object is not None else None,
            cipher=ssl_object.cipher()[0] if ssl_object is not None else None,
            client_cn=peer_common_name(connection),
            client_cert_sha256=client_cert_sha256(connection),
        )
        if connection.subprotocol != SUBPROTOCOL:
            await connection.close(1002, "subprotocol ocpp2.0.1 required")
            emit(event="disconnected", station=station_id, code=1002, reason="no subprotocol")
            return
        link = StationLink(
            station_id,
            connection,
            self.recorder,
            self.args.trigger_heartbeat,
            self.signer,
            self.tls_settings,
        )
        with contextlib.suppress(ConnectionClosed):  # the library's read loop ends only this way
            await link.start()
        emit(event="disconnected", station=station_id, code=connection.close_code)

    async def run(self) -> str:
        args = self.args
        ssl_context = build_ssl_context(args.cert, args.key, args.ca, args.require_client_cert)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        reason = "duration"

        def on_signal(name: str) -> None:
            nonlocal reason
            reason = name
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig.name)

        async with serve(
            self.handler,
            LISTEN_HOST,
            args.port,
            ssl=ssl_context,
            subprotocols=[SUBPROTOCOL],
            select_subprotocol=self.select_subprotocol,
            process_request=self.process_request,
            ping_interval=None,
        ) as server:
            port = int(server.sockets[0].getsockname()[1])
            if args.ready_file is not None:
                ready = Path(args.ready_file)
                tmp = ready.with_name(f".{ready.name}.{os.getpid()}.tmp")
                tmp.write_text(str(port))
                tmp.replace(ready)
            emit(event="listening", port=port)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=args.duration)
            server.close()
            await server.wait_closed()
        emit(event="summary", transactions=self.recorder.transactions)
        return reason


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0 = pick one)")
    parser.add_argument("--cert", required=True, help="server certificate chain (PEM)")
    parser.add_argument("--key", required=True, help="private key of --cert (PEM)")
    parser.add_argument("--ca", help="CA file(s) used to verify client certificates")
    parser.add_argument("--require-client-cert", action="store_true", help="security profile 3 (needs --ca)")
    parser.add_argument("--password", help="require HTTP Basic auth id:PASSWORD (security profile 2)")
    parser.add_argument(
        "--duration", type=float, default=60.0, help="exit after this many seconds (default 60)"
    )
    parser.add_argument("--ready-file", help="write the bound port here (atomically) once listening")
    parser.add_argument(
        "--trigger-heartbeat",
        action="store_true",
        help="after each accepted BootNotification send TriggerMessage(Heartbeat) to the station",
    )
    parser.add_argument(
        "--sign-cert",
        help="CA certificate (PEM) to sign station CSRs with; after each station's first BootNotification send "
        "TriggerMessage(SignChargingStationCertificate) and answer its SignCertificate with CertificateSigned",
    )
    parser.add_argument("--sign-key", help="private key of --sign-cert (PEM)")
    parser.add_argument(
        "--tls-settings",
        action="store_true",
        help="after each station's first BootNotification read its TLS variables, set TLS 1.2 with one suite "
        "(and two values it must refuse), and Reset it",
    )
    args = parser.parse_args(argv)
    if bool(args.sign_cert) != bool(args.sign_key):
        parser.error("--sign-cert and --sign-key go together")
    if args.require_client_cert and args.ca is None:
        parser.error("--require-client-cert needs --ca")
    if not 0 <= args.port <= 65535 or args.duration <= 0:
        parser.error("--port must be 0..65535 and --duration > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(name)s: %(levelname)s: %(message)s"
    )
    reason = asyncio.run(Csms(args).run())
    emit(event="exit", reason=reason)
    return 0


if __name__ == "__main__":
    sys.exit(main())
