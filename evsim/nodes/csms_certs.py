"""The CSMS side of certificate management over OCPP: signing station CSRs (A02/A03) and managing the
certificates installed on stations (M03-M05).

**Signing.** A SignCertificateRequest is checked at once (:func:`evsim.pki.lifecycle.check_csr`: size, PEM
PKCS#10, the CSR's own signature, key strength, CN = the station's identity, O = the operator's
organization): a bad CSR is answered Rejected with a ``reasonCode`` and one ``csr_refused`` event. A good one
is answered Accepted and queued; the signing itself happens later, off the station's connection, through a
:class:`CsrSigner` - the CSMS's station sub-CA (:class:`SubCaSigner`) by default, or any other, e.g.
:class:`DegradedSigner` around it to play a slow or failing external CA. At most ``max_concurrent`` CSRs are
signed at once (the rest wait in a queue of ``max_queued``; a full queue answers Rejected ``Busy``), and one
station has at most one CSR in progress (a resend while it is being signed is answered Accepted and changes
nothing). The signed chain goes to the station in a CertificateSignedRequest (``certificate_signed`` event
with the station's answer, the signing latency and the signer).

Without a signer (no CA key) every SignCertificateRequest is answered Rejected ``NoCertificateAuthority``.

**Management.** :class:`CsmsCertificates` also sends TriggerMessage, InstallCertificate, DeleteCertificate and
GetInstalledCertificateIds to a connected station (thin wrappers of :meth:`Csms.call`), each recorded as one
event with the station's answer.
"""

from __future__ import annotations

import collections
import datetime as _dt
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import trio

from evsim.errors import ConfigError, OcppError, PkiError, TransportError, failure_reason
from evsim.pki.ca import CLIENT_EKU, CertificateAuthority
from evsim.pki.keys import certs_to_pem
from evsim.pki.lifecycle import CertificateRefused, CsrInfo, check_csr

if TYPE_CHECKING:
    from evsim.nodes.csms import Csms


class SigningFailed(Exception):
    """A signer could not sign a CSR; ``reason`` is a short code for events."""

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(message or reason)
        self.reason = reason


class CsrSigner(Protocol):
    """Signs a checked CSR and returns the PEM chain to send (leaf first, then the sub-CAs)."""

    @property
    def name(self) -> str:
        """The signer's name in events."""
        ...

    async def sign(self, csr: CsrInfo, *, station_id: str, now: _dt.datetime) -> str:
        """Sign ``csr`` for ``station_id`` at simulation time ``now``.

        Raises:
            SigningFailed: the CA refused or failed.
        """
        ...


@attrs.frozen
class SubCaSigner:
    """Signs with a CA the CSMS holds (the Charging Station sub-CA): ``days`` of validity, EKU clientAuth."""

    ca: CertificateAuthority
    days: int = 365
    name: str = "station_sub_ca"

    async def sign(self, csr: CsrInfo, *, station_id: str, now: _dt.datetime) -> str:
        del station_id
        try:
            cert = self.ca.sign_csr(csr.pem, now=now, days=self.days, extended_key_usage=CLIENT_EKU)
        except PkiError as exc:
            raise SigningFailed("ca_refused", str(exc)) from exc
        return certs_to_pem((cert, *self.ca.intermediates)).decode()


@attrs.define
class DegradedSigner:
    """Another signer behind a slow or unreliable link: each CSR waits ``delay_s`` (trio time), then fails
    with probability ``failure_rate`` (drawn from ``rng``) before the inner signer is asked."""

    inner: CsrSigner
    delay_s: float = 0.0
    failure_rate: float = 0.0
    rng: random.Random = attrs.field(factory=lambda: random.Random(0))
    name: str = "degraded_ca"

    def __attrs_post_init__(self) -> None:
        if not self.delay_s >= 0:
            raise ConfigError("delay_s must be >= 0", path="signer.delay_s", value=self.delay_s)
        if not 0.0 <= self.failure_rate <= 1.0:
            raise ConfigError(
                "failure_rate must be 0..1", path="signer.failure_rate", value=self.failure_rate
            )

    async def sign(self, csr: CsrInfo, *, station_id: str, now: _dt.datetime) -> str:
        await trio.sleep(self.delay_s)
        if self.rng.random() < self.failure_rate:
            raise SigningFailed(
                "ca_unavailable", "the certificate authority did not sign (simulated failure)"
            )
        return await self.inner.sign(csr, station_id=station_id, now=now)


@attrs.frozen
class SigningSettings:
    """How many CSRs the CSMS signs at once, and how many may wait."""

    max_concurrent: int = 8
    max_queued: int = 10_000

    def __attrs_post_init__(self) -> None:
        for name in ("max_concurrent", "max_queued"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1", path=f"csms.signing.{name}", value=value)


LATENCIES_KEPT = 100_000
"""Signing latencies kept for percentiles."""


@attrs.frozen
class _Job:
    station_id: str
    csr: CsrInfo
    request_id: int | None
    queued_at: float


class CsmsCertificates:
    """A CSMS's certificate work (see the module doc).

    Args:
        csms: the CSMS (its ``call``, ``clock``, ``recorder``, ``config``).
        signer: the CA that signs CSRs (None: every CSR is refused).
        settings: concurrency bounds.
    """

    def __init__(self, csms: Csms, signer: CsrSigner | None, settings: SigningSettings | None = None) -> None:
        self.csms = csms
        self.signer = signer
        self.settings = settings or SigningSettings()
        self._send, self._receive = trio.open_memory_channel[_Job](self.settings.max_queued)
        self._in_progress: set[str] = set()
        self.signed = 0
        self.refused = 0
        self.failed = 0
        self.latencies: collections.deque[float] = collections.deque(maxlen=LATENCIES_KEPT)
        """Seconds (trio time) from SignCertificateRequest to the station's CertificateSigned answer (the
        last :data:`LATENCIES_KEPT`)."""

    def _emit(self, kind: str, **fields: Any) -> None:
        self.csms.recorder.emit(self.csms.config.name, kind, **fields)

    # ------------------------------------------------------------ SignCertificate (station -> CSMS)

    def on_sign_certificate(self, station_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Answer a SignCertificateRequest: check the CSR now, sign it later (see the module doc)."""
        cert_type = payload.get("certificateType", "ChargingStationCertificate")
        try:
            if self.signer is None:
                raise CertificateRefused("NoCertificateAuthority", "this CSMS has no CA to sign CSRs with")
            if cert_type != "ChargingStationCertificate":
                raise CertificateRefused(
                    "unsupported_type", f"certificateType {cert_type!r} is not signed here"
                )
            csr = check_csr(
                payload["csr"], expected_cn=station_id, expected_org=self.csms.config.organization
            )
        except CertificateRefused as exc:
            self.refused += 1
            self._emit("csr_refused", station=station_id, reason=exc.reason, detail=str(exc)[:300])
            return {
                "status": "Rejected",
                "statusInfo": {"reasonCode": exc.reason[:20], "additionalInfo": str(exc)[:512]},
            }
        if station_id in self._in_progress:
            return {"status": "Accepted"}  # a resend while the first is being signed
        request_id = payload.get("requestId")
        try:
            self._send.send_nowait(_Job(station_id, csr, request_id, trio.current_time()))
        except trio.WouldBlock:
            self.refused += 1
            self._emit("csr_refused", station=station_id, reason="Busy", detail="signing queue is full")
            return {"status": "Rejected", "statusInfo": {"reasonCode": "Busy"}}
        self._in_progress.add(station_id)
        self._emit("csr_accepted", station=station_id)
        return {"status": "Accepted"}

    async def run(self) -> None:
        """The signing workers (``max_concurrent`` of them); run inside the CSMS's nursery until cancelled."""
        async with trio.open_nursery() as nursery:
            for _ in range(self.settings.max_concurrent):
                nursery.start_soon(self._worker)

    async def _worker(self) -> None:
        async for job in self._receive:
            try:
                await self._sign_and_send(job)
            finally:
                self._in_progress.discard(job.station_id)

    async def _sign_and_send(self, job: _Job) -> None:
        assert self.signer is not None
        sid = job.station_id
        try:
            chain = await self.signer.sign(job.csr, station_id=sid, now=self.csms.clock.utcnow())
        except SigningFailed as exc:
            self.failed += 1
            self._emit("csr_signing_failed", station=sid, reason=exc.reason, signer=self.signer.name)
            return
        payload: dict[str, Any] = {"certificateChain": chain, "certificateType": "ChargingStationCertificate"}
        if job.request_id is not None:
            payload["requestId"] = job.request_id  # A02.FR.25 (2.1)
        try:
            answer = await self.csms.call(sid, "CertificateSigned", payload)
        except KeyError:
            self.failed += 1
            self._emit("certificate_signed", station=sid, status="NotConnected", signer=self.signer.name)
            return
        except (OcppError, TransportError) as exc:
            self.failed += 1
            self._emit("certificate_signed", station=sid, status=failure_reason(exc), signer=self.signer.name)
            return
        latency = trio.current_time() - job.queued_at
        status = str(answer.get("status", ""))
        if status == "Accepted":
            self.signed += 1
            self.latencies.append(latency)
        else:
            self.failed += 1
        reason = answer.get("statusInfo", {}).get("reasonCode")
        extra = {"reason": reason} if reason else {}
        self._emit(
            "certificate_signed",
            station=sid,
            status=status,
            latency=round(latency, 3),
            signer=self.signer.name,
            **extra,
        )

    # ------------------------------------------------------------ CSMS -> station

    async def _send_and_record(
        self, station_id: str, action: str, payload: dict[str, Any], **fields: Any
    ) -> dict[str, Any]:
        answer = await self.csms.call(station_id, action, payload)
        reason = answer.get("statusInfo", {}).get("reasonCode")
        extra = {"reason": reason} if reason else {}
        self._emit(
            "certificate_call",
            station=station_id,
            action=action,
            status=str(answer.get("status", "")),
            **fields,
            **extra,
        )
        return answer

    async def trigger_message(
        self, station_id: str, requested: str = "SignChargingStationCertificate"
    ) -> dict[str, Any]:
        """Send TriggerMessage (e.g. ``SignChargingStationCertificate``: start A02) and return the answer.

        Raises:
            KeyError: the station is not connected.
            CallErrorReceived, CallTimeout, TransportError: as :meth:`Csms.call`.
        """
        return await self._send_and_record(
            station_id, "TriggerMessage", {"requestedMessage": requested}, requested=requested
        )

    async def install_certificate(self, station_id: str, certificate_type: str, pem: str) -> dict[str, Any]:
        """Send InstallCertificate (M05) and return the answer (raises as :meth:`trigger_message`)."""
        return await self._send_and_record(
            station_id,
            "InstallCertificate",
            {"certificateType": certificate_type, "certificate": pem},
            type=certificate_type,
        )

    async def delete_certificate(self, station_id: str, hash_data: dict[str, str]) -> dict[str, Any]:
        """Send DeleteCertificate (M04) with a ``CertificateHashDataType`` (raises as :meth:`trigger_message`)."""
        return await self._send_and_record(
            station_id, "DeleteCertificate", {"certificateHashData": hash_data}
        )

    async def get_installed_certificate_ids(
        self, station_id: str, types: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """Send GetInstalledCertificateIds (M03) and return the answer (raises as :meth:`trigger_message`)."""
        payload: dict[str, Any] = {"certificateType": list(types)} if types else {}
        return await self._send_and_record(station_id, "GetInstalledCertificateIds", payload)

    def statistics(self) -> dict[str, Any]:
        """Signing counters: ``signed``, ``refused`` (bad CSR, busy), ``failed`` (CA failure, undelivered or
        refused by the station), ``queued`` and ``in_progress``."""
        return {
            "signed": self.signed,
            "refused": self.refused,
            "failed": self.failed,
            "queued": self._receive.statistics().current_buffer_used,
            "in_progress": len(self._in_progress),
        }
