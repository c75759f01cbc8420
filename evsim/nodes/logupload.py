"""A station's log upload (OCPP 2.0.1 N01, GetLog).

:meth:`LogUploader.get_log` answers GetLog at once: ``Accepted`` with the file name, ``AcceptedCanceled`` when it
cancels an upload in progress (whose request then gets a LogStatusNotification ``AcceptedCanceled``, N01.FR.12),
or ``Rejected`` for a ``remoteLocation`` the station cannot use (see :mod:`evsim.nodes.filetransfer`).

The upload runs in the station's own task: ``Uploading`` (N01.FR.08), then up to ``retries`` more tries
``retryInterval`` apart, each one pass over the log service's mirrors, then ``Uploaded`` (N01.FR.09) or, only
after the last try (N01.FR.10), the failure the servers' answers mean: ``PermissionDenied`` (401, 403),
``NotSupportedOperation`` (405, 501), ``BadMessage`` (400, 411, 413, 415, a response that does not parse),
``UploadFailure`` (anything else: TLS refused, unreachable, timeouts, 5xx). Each status is a
LogStatusNotification queued with guaranteed delivery.

The log is the station's own recent events (one JSON line each, at most ``log_bytes``), in the requested time
window when given; ``SecurityLog`` keeps the events that carry an OCPP security event.

Events (node = station): ``log_status`` (status, request, and the mirror that took it on ``Uploaded``),
``log_refused`` (reason, detail), and the transfer events of :mod:`evsim.link.transfer`.
"""

from __future__ import annotations

import datetime as _dt
import json
from typing import Any

import trio

from evsim.link.service import Service
from evsim.link.transfer import TransferFailed, upload
from evsim.nodes.filetransfer import (
    FileTransferConfig,
    JobSlot,
    LocationRefused,
    StationHooks,
    TransferReport,
    bounded_retries,
    resolve_location,
)
from evsim.tls.events import ocpp_security_event

__all__ = ["LogUploader", "log_status_for"]

_STATUS_BY_HTTP = {
    401: "PermissionDenied",
    403: "PermissionDenied",
    405: "NotSupportedOperation",
    501: "NotSupportedOperation",
    400: "BadMessage",
    411: "BadMessage",
    413: "BadMessage",
    415: "BadMessage",
}


def log_status_for(reason: str) -> str:
    """The LogStatusNotification status for the failure reason of the last upload attempt."""
    if reason.startswith("http_") and reason[5:].isdigit():
        return _STATUS_BY_HTTP.get(int(reason[5:]), "UploadFailure")
    if reason in ("bad_http_response", "response_overrun"):
        return "BadMessage"
    return "UploadFailure"


class LogUploader:
    """The log side of one station (see the module docstring).

    Args:
        station: the station's hooks.
        config: the station's file-transfer settings.
    """

    def __init__(self, station: StationHooks, config: FileTransferConfig) -> None:
        self.station = station
        self.config = config
        self._report = TransferReport(
            station, action="GetLog", notification="LogStatusNotification", kind="log"
        )
        self.uploaded_to: str | None = None
        self._slot = JobSlot()
        self._current: int | None = None

    @property
    def last_status(self) -> str:
        """The last status notification queued (TriggerMessage answers it)."""
        return self._report.last_status

    def attach(self, nursery: trio.Nursery) -> None:
        """Run uploads in ``nursery`` (the station's): a task exists only while one runs."""
        self._slot.attach(nursery)

    def get_log(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Answer GetLog and start the upload (see the module docstring)."""
        request_id = payload["requestId"]
        log_type = payload["logType"]
        window = payload["log"]
        try:
            service, relative = resolve_location(window["remoteLocation"], self.config, name="logs")
        except LocationRefused as exc:
            self._report.refused(request_id, "location", str(exc))
            return {"status": "Rejected"}
        retries, interval = bounded_retries(payload, self.config, self._report.value_refused)
        filename = f"{self.station.name}-{log_type}-{request_id}.log"
        body = self._collect(log_type, window.get("oldestTimestamp"), window.get("latestTimestamp"))
        if relative.endswith("/"):
            relative += filename
        previous = self._current

        async def job() -> None:
            await self._upload(request_id, service, relative, filename, body, retries, interval)

        cancelled = self._slot.submit(job)
        if cancelled and previous is not None:
            self._report.status("AcceptedCanceled", previous)
        return {"status": "AcceptedCanceled" if cancelled else "Accepted", "filename": filename}

    def _collect(self, log_type: str, oldest: object, latest: object) -> bytes:
        """The station's recent events as JSON lines, newest last, at most ``log_bytes``."""
        lo, hi = _parse_time(oldest), _parse_time(latest)
        lines: list[bytes] = []
        size = 0
        recorder = self.station.recorder
        for event in reversed(recorder.events):
            if event.node != self.station.name:
                continue
            when = recorder.clock.start_utc + _dt.timedelta(seconds=event.t)
            if (lo is not None and when < lo) or (hi is not None and when > hi):
                continue
            if log_type == "SecurityLog" and not event.data.get("security_event"):
                continue
            line = json.dumps({"time": when.isoformat(), **event.as_json()}, default=str).encode() + b"\n"
            if size + len(line) > self.config.log_bytes:
                break
            lines.append(line)
            size += len(line)
        return b"".join(reversed(lines))

    async def _upload(
        self,
        request_id: int,
        service: Service,
        relative: str,
        filename: str,
        body: bytes,
        retries: int,
        interval: float,
    ) -> None:
        st = self.station
        self._current = request_id
        try:
            self._report.status("Uploading", request_id)
            reason = ""
            for attempt in range(retries + 1):
                if attempt:
                    await trio.sleep(interval)
                try:
                    result = await upload(
                        service,
                        relative,
                        body,
                        st.network,
                        clock=st.clock,
                        method=self.config.upload_method,
                        filename=filename,
                        recorder=st.recorder,
                        node=st.name,
                        source=st.name,
                        limits=self.config.limits,
                    )
                except TransferFailed as exc:
                    reason = exc.reason
                    for failed in exc.attempts:
                        event = ocpp_security_event(failed.reason, side="client")
                        if event is not None:
                            st.queue_security_event(event, f"logs {failed.endpoint}: {failed.reason}"[:255])
                            break
                    continue
                self.uploaded_to = result.endpoint
                self._report.status("Uploaded", request_id, endpoint=result.endpoint, bytes=len(body))
                return
            self._report.refused(request_id, reason, "every upload attempt failed")
            self._report.status(log_status_for(reason), request_id)
        finally:
            self._current = None


def _parse_time(value: object) -> _dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        when = _dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=_dt.UTC)
