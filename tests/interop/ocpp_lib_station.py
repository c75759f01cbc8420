"""Independent OCPP 2.0.1 charging station built on the `ocpp` PyPI library (asyncio + websockets).

Used by evsim's interop tests as a peer that shares no code with evsim. It connects to a CSMS over
``wss://`` and runs one fixed session: BootNotification, StatusNotification, N Heartbeats, Authorize and a
Started/Updated/Ended transaction. Every step prints one JSON line on stdout; the last line is
``{"result": "ok"}`` or ``{"result": "error", ...}``.

Exit codes: 0 success, 1 OCPP failure (rejected, CALLERROR, bad response), 2 usage error (argparse),
3 connection failure (refused, TLS, HTTP status, subprotocol), 4 overall timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import ssl
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from ocpp.routing import after as _ocpp_after
from ocpp.routing import on as _ocpp_on
from ocpp.v201 import ChargePoint, call, call_result
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

SUBPROTOCOL = Subprotocol("ocpp2.0.1")
EXIT_OCPP = 1
EXIT_CONNECT = 3
EXIT_TIMEOUT = 4

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


class StepFailed(Exception):
    """An OCPP step did not produce the expected answer."""


class ConnectFailed(Exception):
    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.details = details


# The library ships no type information, so its ChargePoint is `Any` to mypy.
class Station(ChargePoint):  # type: ignore[misc]  # subclassing an untyped library class
    """Answers the few requests a CSMS may send during the session."""

    def __init__(self, station_id: str, connection: ClientConnection, response_timeout: float) -> None:
        super().__init__(station_id, connection, response_timeout=response_timeout)
        self.background: set[asyncio.Task[None]] = set()
        self.csr_key: ec.EllipticCurvePrivateKey | None = None
        self.roots: list[x509.Certificate] = []
        self.signed: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    @on("CertificateSigned")
    def on_certificate_signed(self, certificate_chain: str, **_: Any) -> Any:
        verified, why = self._verify_chain(certificate_chain)
        emit(step="certificate_signed", verified=verified, reason=why)
        if not self.signed.done():
            self.signed.set_result(verified)
        return call_result.CertificateSigned(status="Accepted" if verified else "Rejected")

    def _verify_chain(self, pem: str) -> tuple[bool, str]:
        """Leaf first: our key and CN, each certificate signed by the next, the last by a --ca root."""
        try:
            chain = x509.load_pem_x509_certificates(pem.encode())
            leaf = chain[0]
            assert self.csr_key is not None
            if leaf.public_key() != self.csr_key.public_key():
                return False, "not the key of our CSR"
            if leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value != self.id:
                return False, "wrong CN"
            for child, parent in itertools.pairwise(chain):
                child.verify_directly_issued_by(parent)
            top = chain[-1]
            if not any(top == root or _issued_by(top, root) for root in self.roots):
                return False, "not issued under --ca"
        except Exception as exc:  # anything wrong with the chain is a refusal
            return False, f"{type(exc).__name__}: {exc}"
        return True, "ok"

    async def request(self, payload: Any) -> Any:
        """CALL and return the typed result; a CALLERROR raises instead of returning None."""
        return await self.call(payload, suppress=False)

    @on("TriggerMessage")
    def on_trigger_message(self, requested_message: str, **_: Any) -> Any:
        status = "Accepted" if requested_message == "Heartbeat" else "NotImplemented"
        emit(step="received", action="TriggerMessage", requested_message=requested_message, status=status)
        return call_result.TriggerMessage(status=status)

    @after("TriggerMessage")
    def after_trigger_message(self, requested_message: str, **_: Any) -> None:
        # The library runs `after` hooks once the response is on the wire (F06: respond, then send).
        if requested_message == "Heartbeat":
            task = asyncio.get_running_loop().create_task(self._triggered_heartbeat())
            self.background.add(task)
            task.add_done_callback(self.background.discard)

    async def _triggered_heartbeat(self) -> None:
        result = await self.request(call.Heartbeat())
        emit(step="triggered_heartbeat", current_time=result.current_time)

    @on("GetVariables")
    def on_get_variables(self, get_variable_data: list[dict[str, Any]], **_: Any) -> Any:
        emit(step="received", action="GetVariables", count=len(get_variable_data))
        results: list[dict[str, Any]] = []
        for item in get_variable_data:
            component, variable = item["component"], item["variable"]
            known = component.get("name") == "SecurityCtrlr" and variable.get("name") == "Identity"
            result: dict[str, Any] = {
                "attribute_status": "Accepted" if known else "UnknownComponent",
                "component": component,
                "variable": variable,
            }
            if known:
                result["attribute_value"] = self.id
            results.append(result)
        return call_result.GetVariables(get_variable_result=results)


def build_ssl_context(ca: str, cert: str | None, key: str | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verify_mode CERT_REQUIRED, check_hostname on
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(cafile=ca)
    if cert is not None:
        context.load_cert_chain(certfile=cert, keyfile=key)
    return context


_E = TypeVar("_E", bound=BaseException)


def find_cause(exc: BaseException, kind: type[_E]) -> _E | None:
    """First exception of type `kind` in the __cause__/__context__ chain of `exc` (itself included)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def describe_ssl_error(err: ssl.SSLError) -> dict[str, Any]:
    info: dict[str, Any] = {"ssl_reason": err.reason or type(err).__name__}
    if isinstance(err, ssl.SSLCertVerificationError):
        info["verify_code"] = err.verify_code
        info["verify_message"] = err.verify_message
    return info


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(parent)
    except Exception:
        return False
    return True


async def sign_certificate(station: Station, org: str, roots: list[x509.Certificate]) -> None:
    """A02 from the station side: a new P-256 key, a CSR (CN = id, O = org), SignCertificate, then wait for
    CertificateSigned and verify the chain against --ca."""
    station.roots = roots
    station.csr_key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, station.id),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
        ]
    )
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(station.csr_key, hashes.SHA256())
    pem = csr.public_bytes(serialization.Encoding.PEM).decode()
    answer = await station.request(
        call.SignCertificate(csr=pem, certificate_type="ChargingStationCertificate")
    )
    emit(step="sign_certificate", status=answer.status)
    if answer.status != "Accepted":
        raise StepFailed(f"SignCertificate answered {answer.status}")
    if not await asyncio.wait_for(station.signed, timeout=20):
        raise StepFailed("CertificateSigned did not verify")


async def run_session(
    station: Station, heartbeats: int, csr_org: str | None = None, roots: list[x509.Certificate] | None = None
) -> None:
    boot = await station.request(
        call.BootNotification(
            reason="PowerUp",
            charging_station={
                "model": "ocpp-lib-station",
                "vendor_name": "evsim-interop",
                "serial_number": station.id,
            },
        )
    )
    emit(step="boot", status=boot.status, interval=boot.interval)
    if boot.status != "Accepted":
        raise StepFailed(f"BootNotification answered {boot.status}, expected Accepted")

    await station.request(
        call.StatusNotification(timestamp=utcnow(), connector_status="Available", evse_id=1, connector_id=1)
    )
    emit(step="status_notification", connector_status="Available")

    if csr_org is not None:
        await sign_certificate(station, csr_org, roots or [])

    for n in range(heartbeats):
        beat = await station.request(call.Heartbeat())
        emit(step="heartbeat", n=n + 1, current_time=beat.current_time)

    id_token = {"id_token": "ABCDEF01", "type": "ISO14443"}
    auth = await station.request(call.Authorize(id_token=id_token))
    auth_status = auth.id_token_info["status"]
    emit(step="authorize", status=auth_status)
    if auth_status != "Accepted":
        raise StepFailed(f"Authorize answered {auth_status}, expected Accepted")

    tx_id = str(uuid.uuid4())
    await station.request(
        call.TransactionEvent(
            event_type="Started",
            timestamp=utcnow(),
            trigger_reason="CablePluggedIn",
            seq_no=0,
            transaction_info={"transaction_id": tx_id, "charging_state": "EVConnected"},
            evse={"id": 1, "connector_id": 1},
        )
    )
    emit(step="transaction_started", transaction_id=tx_id, seq_no=0)

    meter = [
        {
            "timestamp": utcnow(),
            "sampled_value": [{"value": 1234.5, "measurand": "Energy.Active.Import.Register"}],
        }
    ]
    await station.request(
        call.TransactionEvent(
            event_type="Updated",
            timestamp=utcnow(),
            trigger_reason="Authorized",
            seq_no=1,
            transaction_info={"transaction_id": tx_id, "charging_state": "Charging"},
            id_token=id_token,
            meter_value=meter,
        )
    )
    emit(step="transaction_updated", transaction_id=tx_id, seq_no=1)

    await station.request(
        call.TransactionEvent(
            event_type="Ended",
            timestamp=utcnow(),
            trigger_reason="EVDeparted",
            seq_no=2,
            transaction_info={
                "transaction_id": tx_id,
                "charging_state": "Idle",
                "stopped_reason": "EVDisconnected",
            },
        )
    )
    emit(step="transaction_ended", transaction_id=tx_id, seq_no=2)


async def open_connection(args: argparse.Namespace) -> ClientConnection:
    url = args.url.rstrip("/") + "/" + quote(args.id, safe="")
    headers: list[tuple[str, str]] = []
    if args.password is not None:
        token = base64.b64encode(f"{args.id}:{args.password}".encode()).decode("ascii")
        headers.append(("Authorization", f"Basic {token}"))
    ssl_context = build_ssl_context(args.ca, args.cert, args.key) if urlsplit(url).scheme == "wss" else None
    try:
        connection = await connect(
            url,
            ssl=ssl_context,
            subprotocols=[SUBPROTOCOL],
            additional_headers=headers,
            proxy=None,
            open_timeout=min(args.timeout, 10),
            ping_interval=None,
        )
    except InvalidStatus as exc:
        status = exc.response.status_code
        raise ConnectFailed(
            f"server rejected the WebSocket upgrade: HTTP {status}", http_status=status
        ) from exc
    except (OSError, InvalidHandshake, TimeoutError) as exc:
        ssl_error = find_cause(exc, ssl.SSLError)
        if ssl_error is not None:
            details = describe_ssl_error(ssl_error)
            raise ConnectFailed(f"TLS failure: {ssl_error}", **details) from exc
        if find_cause(exc, EOFError) is not None:
            # With TLS 1.3 the server's verdict on our client certificate arrives after the client's
            # handshake has finished; asyncio's TLS layer then reports only the EOF that follows the alert.
            raise ConnectFailed(
                "the server closed the connection during the opening handshake "
                "(with TLS 1.3 this is how a refused or missing client certificate shows up)",
                eof=True,
            ) from exc
        raise ConnectFailed(f"connection failed: {type(exc).__name__}: {exc}") from exc
    if connection.subprotocol != SUBPROTOCOL:
        await connection.close()
        raise ConnectFailed(
            f"server selected subprotocol {connection.subprotocol!r}, expected {SUBPROTOCOL!r}"
        )
    emit(step="connect", url=url, subprotocol=connection.subprotocol)
    return connection


async def main_async(args: argparse.Namespace) -> int:
    connection = await open_connection(args)
    station = Station(args.id, connection, response_timeout=min(args.timeout, 30))
    reader = asyncio.get_running_loop().create_task(station.start())
    try:
        session = asyncio.get_running_loop().create_task(
            run_session(station, args.heartbeats, args.sign_certificate, args.roots)
        )
        done, _ = await asyncio.wait({session, reader}, return_when=asyncio.FIRST_COMPLETED)
        if session not in done:
            session.cancel()
            exc = reader.exception() if not reader.cancelled() else None
            raise ConnectFailed(f"connection lost during the session: {exc!r}")
        session.result()  # re-raises a failure of the session
        if station.background:
            await asyncio.wait(set(station.background))
    finally:
        reader.cancel()
        await connection.close()
    emit(result="ok")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--url", required=True, help="CSMS endpoint without the identity, e.g. wss://localhost:P/ocpp"
    )
    parser.add_argument(
        "--id", required=True, help="station identity (appended to the URL, Basic-auth username)"
    )
    parser.add_argument("--ca", required=True, help="PEM file of the CA(s) that issued the CSMS certificate")
    parser.add_argument("--cert", help="client certificate (PEM) for security profile 3")
    parser.add_argument("--key", help="private key (PEM) of --cert")
    parser.add_argument("--password", help="Basic-auth password (security profile 2)")
    parser.add_argument(
        "--heartbeats", type=int, default=2, help="Heartbeats to send back to back (default 2)"
    )
    parser.add_argument(
        "--sign-certificate",
        metavar="ORG",
        help="after StatusNotification, run A02: send a CSR (CN = --id, O = ORG) and verify the CertificateSigned "
        "chain against --ca",
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="hard overall timeout in seconds (default 30)"
    )
    args = parser.parse_args(argv)
    if args.key is not None and args.cert is None:
        parser.error("--key needs --cert")
    args.roots = x509.load_pem_x509_certificates(Path(args.ca).read_bytes()) if args.sign_certificate else []
    if args.heartbeats < 0 or args.timeout <= 0:
        parser.error("--heartbeats must be >= 0 and --timeout > 0")
    return args


def fail(code: int, message: str, **details: Any) -> int:
    emit(result="error", error=message, **details)
    print(f"ocpp_lib_station: error: {message}", file=sys.stderr, flush=True)
    return code


async def guarded(args: argparse.Namespace) -> int:
    deadline = asyncio.timeout(args.timeout)
    try:
        async with deadline:
            return await main_async(args)
    except TimeoutError as exc:
        if deadline.expired():
            return fail(EXIT_TIMEOUT, f"overall timeout of {args.timeout}s expired")
        return fail(EXIT_OCPP, f"no response: {exc}")  # the library's per-CALL response timeout
    except ConnectFailed as exc:
        return fail(EXIT_CONNECT, str(exc), **exc.details)
    except ConnectionClosed as exc:
        return fail(EXIT_CONNECT, f"connection closed: {exc}")
    except StepFailed as exc:
        return fail(EXIT_OCPP, str(exc))
    except Exception as exc:  # OCPPError from a CALLERROR, schema ValidationError, ...
        return fail(EXIT_OCPP, f"{type(exc).__name__}: {exc}")


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(guarded(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
