"""A station's secure firmware update (OCPP 2.0.1 L01).

:meth:`FirmwareUpdater.update_firmware` answers UpdateFirmware at once:

* the signing certificate is checked against the station's ManufacturerRootCertificates first (L01.FR.21,
  :func:`evsim.pki.firmware.check_signing_certificate`): refused -> ``InvalidCertificate``, a
  ``InvalidFirmwareSigningCertificate`` security event (L01.FR.22) and one ``firmware_refused`` event;
* a location the station cannot use (not https, no trust for its server; see
  :mod:`evsim.nodes.filetransfer`), or a ``retrieveDateTime`` / ``installDateTime`` that does not parse or
  lies more than a year ahead -> ``Rejected``;
* otherwise ``Accepted``, or ``AcceptedCanceled`` when it cancels an update in progress (L01.FR.24).

The update then runs in the station's own task (it outlives CSMS connections) and reports each step with a
FirmwareStatusNotification queued with guaranteed delivery, so none is lost while the station is offline:

``DownloadScheduled`` (retrieveDateTime ahead) -> ``Downloading`` -> ``Downloaded`` (or ``DownloadFailed`` after
``retries`` more tries ``retryInterval`` apart; each try walks the service's mirrors once and resumes what the
last one left) -> ``SignatureVerified`` (or ``InvalidSignature`` and an ``InvalidFirmwareSignature`` security
event) -> ``InstallScheduled`` (installDateTime ahead, or a charging session still running: L01.FR.06) ->
``Installing`` -> ``InstallRebooting``; the station reboots (its CSMS connection ends, it boots again with
BootNotification reason ``FirmwareUpdate`` and the new ``firmwareVersion``), and the new image sends
``Installed`` and the ``FirmwareUpdated`` security event (L01.FR.31/32). An image whose signature verifies but
that does not install (:func:`evsim.pki.firmware.image_version`) ends with ``InstallVerificationFailed`` and the
station keeps its version: whatever a CSMS or a mirror sends, a station is never left without a working image.

Events (node = station): ``firmware_status`` (status, request, and the mirror that served it on
``Downloaded``), ``firmware_refused`` (reason, detail) once per refused request or failed step, and the
transfer events of :mod:`evsim.link.transfer`.
"""

from __future__ import annotations

from typing import Any

import trio
from cryptography import x509

from evsim.link.service import Service
from evsim.link.transfer import DownloadState, TransferFailed, download
from evsim.nodes.filetransfer import (
    FileTransferConfig,
    JobSlot,
    LocationRefused,
    StationHooks,
    TransferReport,
    bounded_retries,
    resolve_location,
    seconds_until,
)
from evsim.pki.firmware import FirmwareRefused, check_signing_certificate, image_version, verify_image
from evsim.tls.events import ocpp_security_event

__all__ = ["FirmwareUpdater"]

REBOOT_GRACE_S = 30.0
"""How long a station about to reboot waits for the CSMS to acknowledge its queued messages (seconds)."""
_BUSY_POLL_S = 5.0
"""How often an install waiting for a charging session to end looks again (seconds)."""


class FirmwareUpdater:
    """The firmware side of one station (see the module docstring).

    Args:
        station: the station's hooks.
        config: the station's file-transfer settings.
        version: the firmware version the station boots with.

    Attributes:
        version: the installed version (BootNotification ``firmwareVersion``).
        last_status: the last FirmwareStatusNotification status queued (TriggerMessage answers it).
        served_by: the mirror (endpoint name) that served the last downloaded image.
    """

    def __init__(self, station: StationHooks, config: FileTransferConfig, version: str) -> None:
        self.station = station
        self.config = config
        self.version = version
        self._report = TransferReport(
            station, action="UpdateFirmware", notification="FirmwareStatusNotification", kind="firmware"
        )
        self.served_by: str | None = None
        self._slot = JobSlot()
        self._installed: tuple[int, str] | None = None  # (request id, version) awaiting the next boot
        self._rebooting = False

    @property
    def last_status(self) -> str:
        """The last status notification queued (TriggerMessage answers it)."""
        return self._report.last_status

    def attach(self, nursery: trio.Nursery) -> None:
        """Run updates in ``nursery`` (the station's): a task exists only while one runs."""
        self._slot.attach(nursery)

    # ---------------------------------------------------------------- boot

    def boot_reason(self) -> str | None:
        """``FirmwareUpdate`` for the boot after installing an image, else None."""
        return "FirmwareUpdate" if self._installed is not None else None

    def booted(self) -> None:
        """The CSMS accepted a boot: the new image reports ``Installed`` and ``FirmwareUpdated`` (L01.FR.31/32)."""
        if self._installed is None:
            return
        request_id, version = self._installed
        self._installed = None
        self._report.status("Installed", request_id, version=version)
        self.station.queue_security_event("FirmwareUpdated", f"version {version}"[:255])

    # ---------------------------------------------------------------- UpdateFirmware

    def update_firmware(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Answer UpdateFirmware and start the update (see the module docstring)."""
        firmware = payload["firmware"]
        request_id = payload["requestId"]
        try:
            cert = check_signing_certificate(
                firmware.get("signingCertificate", ""),
                self.config.manufacturer_roots,
                now=self.station.clock.utcnow(),
            )
        except FirmwareRefused as exc:
            self._report.refused(request_id, exc.reason, str(exc))
            self.station.queue_security_event(
                "InvalidFirmwareSigningCertificate", f"{exc.reason}: {exc}"[:255]
            )
            return {"status": "InvalidCertificate", "statusInfo": {"reasonCode": "InvalidCertificate"}}
        try:
            service, relative = resolve_location(firmware["location"], self.config, name="firmware")
        except LocationRefused as exc:
            self._report.refused(request_id, "location", str(exc))
            return {"status": "Rejected", "statusInfo": {"reasonCode": "InvalidURL"}}
        retrieve = seconds_until(firmware["retrieveDateTime"], self.station.clock)
        install = seconds_until(
            firmware.get("installDateTime", firmware["retrieveDateTime"]), self.station.clock
        )
        if retrieve is None or install is None:
            self._report.refused(
                request_id, "schedule", "retrieveDateTime or installDateTime unusable or over a year ahead"
            )
            return {"status": "Rejected", "statusInfo": {"reasonCode": "InvalidValue"}}
        retries, interval = bounded_retries(payload, self.config, self._report.value_refused)
        signature = firmware.get("signature")
        start = trio.current_time()

        async def job() -> None:
            await self._update(
                request_id, service, relative, cert, signature, retries, interval, start, retrieve, install
            )

        cancelled = self._slot.submit(job)
        self.station.recorder.emit(
            self.station.name,
            "firmware_update_accepted",
            request=request_id,
            service=service.name,
            path=relative[:200],
            canceled=cancelled,
        )
        return {"status": "AcceptedCanceled" if cancelled else "Accepted"}

    # ---------------------------------------------------------------- the update

    async def _update(
        self,
        request_id: int,
        service: Service,
        relative: str,
        cert: x509.Certificate,
        signature: str | None,
        retries: int,
        interval: float,
        start: float,
        retrieve_in: float,
        install_in: float,
    ) -> None:
        st = self.station
        if retrieve_in > 0:
            self._report.status("DownloadScheduled", request_id)
            await trio.sleep_until(start + retrieve_in)
        self._report.status("Downloading", request_id)
        state = DownloadState()
        image: bytes | None = None
        failure = ""
        for attempt in range(retries + 1):
            if attempt:
                await trio.sleep(interval)
            try:
                result = await download(
                    service,
                    relative,
                    st.network,
                    clock=st.clock,
                    recorder=st.recorder,
                    node=st.name,
                    source=st.name,
                    state=state,
                    limits=self.config.limits,
                )
            except TransferFailed as exc:
                failure = f"{exc.reason}: {exc}"
                self._tls_security_event(exc)
                continue
            image, self.served_by = result.body, result.endpoint
            break
        if image is None:
            self._report.refused(request_id, "download", failure)
            self._report.status("DownloadFailed", request_id)
            return
        self._report.status("Downloaded", request_id, endpoint=self.served_by or "", bytes=len(image))
        try:
            verify_image(image, signature, cert)
        except FirmwareRefused as exc:
            self._report.refused(request_id, exc.reason, str(exc))
            self._report.status("InvalidSignature", request_id)
            st.queue_security_event("InvalidFirmwareSignature", f"{exc.reason}: {exc}"[:255])
            return
        self._report.status("SignatureVerified", request_id)
        wait_until = start + install_in
        if trio.current_time() < wait_until or st.connector_status != "Available":
            self._report.status("InstallScheduled", request_id)
            await trio.sleep_until(wait_until)
            # L01.FR.06: let the session end first (the station has no status-change event to wait on; a poll
            # every few seconds of virtual time costs nothing)
            while st.connector_status != "Available":  # noqa: ASYNC110
                await trio.sleep(_BUSY_POLL_S)
        self._report.status("Installing", request_id)
        await trio.sleep(self.config.install_s)
        try:
            version = image_version(image)
        except FirmwareRefused as exc:
            self._report.refused(request_id, exc.reason, str(exc))
            self._report.status("InstallVerificationFailed", request_id)
            return
        self._report.status("InstallRebooting", request_id, version=version)
        self.version = version
        self._installed = (request_id, version)
        # reboot once the CSMS has the statuses (else InstallRebooting would be sent again after the boot), but
        # not later than REBOOT_GRACE_S: an offline station reboots anyway and sends them afterwards
        with trio.move_on_after(REBOOT_GRACE_S):
            while st.outbox_size():  # noqa: ASYNC110 - the station's queue has no "empty" event
                await trio.sleep(_BUSY_POLL_S / 10)
        st.reboot()

    def _tls_security_event(self, exc: TransferFailed) -> None:
        """A mirror refused by TLS is reported like the CSMS link's refusals (once per failed try)."""
        for attempt in exc.attempts:
            event = ocpp_security_event(attempt.reason, side="client")
            if event is not None:
                self.station.queue_security_event(
                    event, f"firmware {attempt.endpoint}: {attempt.reason}"[:255]
                )
                return
