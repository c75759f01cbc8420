"""Summary tables of firmware rollouts and log collection, from a run's station events alone.

* **Firmware rollout**, per UpdateFirmware request id: the stations that took it (accepted or refused it), how
  many ended Installed, InvalidSignature or another failure, and the time from the first station accepting the
  request until 50 / 95 / 100 % of those stations reported Installed (``-`` when that share never did).
* **Log collection**, per GetLog request id: the stations asked, how many uploaded, how many failed, and the
  time from the first Uploading until the last Uploaded.
* **File transfers by mirror**, per (service, mirror, method): completed transfers, the bytes that mirror moved
  (a resumed download counts only its rest), their throughput (those bytes over the time from each transfer's
  Downloading / Uploading status to its completion: a transfer that failed over first counts its time on the
  failed mirror too), and failed attempts on that mirror.
* **File transfer failures**: every failure by where and why: final statuses (DownloadFailed,
  InvalidSignature, UploadFailure...), requests refused (``firmware_refused`` / ``log_refused`` reasons) and
  failed attempts per mirror, with the stations they concerned (the first few named).
"""

from __future__ import annotations

import collections
import math
from collections.abc import Mapping, Sequence
from typing import Any

from evsim.metrics.certificates import named_stations
from evsim.metrics.summary import Table

TRANSFER_KINDS = frozenset(
    {
        "firmware_update_accepted",
        "firmware_status",
        "firmware_refused",
        "log_status",
        "log_refused",
        "transfer_done",
        "transfer_attempt_failed",
    }
)
"""The event kinds these tables read (a run without any of them gets none of the tables)."""
FIRMWARE_FAILED = frozenset(
    {"DownloadFailed", "InvalidSignature", "InvalidCertificate", "InstallVerificationFailed"}
)
"""Final FirmwareStatusNotification statuses of a failed update (OCPP 2.0.1 FirmwareStatusEnumType)."""
LOG_FAILED = frozenset({"UploadFailure", "BadMessage", "NotSupportedOperation", "PermissionDenied"})
"""Final LogStatusNotification statuses of a failed upload (UploadLogStatusEnumType)."""


def transfer_tables(events: Sequence[Mapping[str, Any]]) -> list[Table]:
    """The tables above, from events sorted by time (none when the run transferred no file)."""
    evs = [e for e in events if e["kind"] in TRANSFER_KINDS]
    if not evs:
        return []
    firmware: dict[int, _Request] = collections.defaultdict(_Request)
    logs: dict[int, _Request] = collections.defaultdict(_Request)
    started: dict[str, float] = {}  # station -> t of its current transfer's Downloading / Uploading
    mirrors: dict[tuple[str, str, str], list[float]] = collections.defaultdict(lambda: [0, 0.0, 0.0, 0])
    failures: dict[tuple[str, str], list[str]] = collections.defaultdict(list)
    for e in evs:
        kind, node, t = str(e["kind"]), str(e["node"]), float(e["t"])
        if kind in ("firmware_update_accepted", "firmware_refused", "firmware_status"):
            firmware[int(e.get("request", -1))].see(node, kind, str(e.get("status", "")), t)
        elif kind in ("log_refused", "log_status"):
            logs[int(e.get("request", -1))].see(node, kind, str(e.get("status", "")), t)
        if kind in ("firmware_status", "log_status") and e.get("status") in ("Downloading", "Uploading"):
            started[node] = t
        elif kind == "transfer_done":
            row = mirrors[(str(e["service"]), str(e["endpoint"]), str(e["method"]))]
            moved = int(e["bytes"]) - int(e.get("resumed_from", 0))
            row[0] += 1
            row[1] += moved
            row[2] += t - started.get(node, t)
        elif kind == "transfer_attempt_failed":
            mirrors[(str(e["service"]), str(e["endpoint"]), "")][3] += 1
            failures[(f"attempt on {e['endpoint']}", str(e.get("reason", "")))].append(node)
        if kind in ("firmware_refused", "log_refused"):
            failures[(kind.replace("_", " "), str(e.get("reason", "")))].append(node)
        elif kind == "firmware_status" and e.get("status") in FIRMWARE_FAILED:
            failures[("firmware status", str(e["status"]))].append(node)
        elif kind == "log_status" and e.get("status") in LOG_FAILED:
            failures[("log status", str(e["status"]))].append(node)
    tables = []
    if firmware:
        tables.append(_firmware_table(firmware))
    if logs:
        tables.append(_logs_table(logs))
    tables += [_mirrors_table(mirrors), _failures_table(failures)]
    return tables


class _Request:
    """One request id: its stations, their last status, when it started and when each station finished."""

    def __init__(self) -> None:
        self.stations: set[str] = set()
        self.last: dict[str, str] = {}
        self.first: float | None = None
        self.done: dict[str, float] = {}  # station -> t of Installed / Uploaded

    def see(self, station: str, kind: str, status: str, t: float) -> None:
        self.stations.add(station)
        if kind == "firmware_update_accepted" or status == "Uploading":
            self.first = t if self.first is None else min(self.first, t)
        if status:
            self.last[station] = status
        if status in ("Installed", "Uploaded") and station not in self.done:
            self.done[station] = t

    def times(self) -> list[str]:
        """Seconds from the first start until 50 / 95 / 100 % of the stations finished (``-``: never)."""
        start = self.first if self.first is not None else 0.0
        done = sorted(t - start for t in self.done.values())
        out = []
        for q in (0.5, 0.95, 1.0):
            need = max(1, math.ceil(round(q * len(self.stations), 9)))
            out.append(f"{done[need - 1]:.1f}" if len(done) >= need else "-")
        return out


def _firmware_table(requests: Mapping[int, _Request]) -> Table:
    rows = []
    for request, r in sorted(requests.items()):
        finals = collections.Counter(r.last.get(s, "") for s in r.stations)
        failed = (
            sum(n for status, n in finals.items() if status in FIRMWARE_FAILED) - finals["InvalidSignature"]
        )
        rows.append(
            (request, len(r.stations), finals["Installed"], finals["InvalidSignature"], failed, *r.times())
        )
    return Table(
        "Firmware rollout",
        (
            "request",
            "stations",
            "installed",
            "invalid signature",
            "other failures",
            "50 % (s)",
            "95 % (s)",
            "100 % (s)",
        ),
        tuple(rows),
        note="stations: that accepted or refused the request; x %: seconds from the first station accepting it "
        "until that share of its stations reported Installed (after the reboot)",
    )


def _logs_table(requests: Mapping[int, _Request]) -> Table:
    rows = []
    for request, r in sorted(requests.items()):
        finals = collections.Counter(r.last.get(s, "") for s in r.stations)
        failed = sum(n for status, n in finals.items() if status in LOG_FAILED)
        rows.append((request, len(r.stations), finals["Uploaded"], failed, *r.times()))
    return Table(
        "Log collection",
        ("request", "stations", "uploaded", "failed", "50 % (s)", "95 % (s)", "100 % (s)"),
        tuple(rows),
        note="x %: seconds from the first Uploading until that share of the stations reported Uploaded",
    )


def _mirrors_table(mirrors: Mapping[tuple[str, str, str], list[float]]) -> Table:
    merged: dict[tuple[str, str], list[Any]] = {}
    for (service, mirror, method), (count, moved, seconds, failed) in sorted(mirrors.items()):
        row = merged.setdefault((service, mirror), ["", 0, 0, 0.0, 0])
        row[0] = row[0] or method
        row[1] += int(count)
        row[2] += int(moved)
        row[3] += seconds
        row[4] += int(failed)
    rows = [
        (
            service,
            mirror,
            method or "-",
            count,
            moved,
            f"{moved / secs / 1000:.1f}" if secs > 0 else "-",
            failed,
        )
        for (service, mirror), (method, count, moved, secs, failed) in merged.items()
    ]
    return Table(
        "File transfers by mirror",
        ("service", "mirror", "method", "transfers", "bytes", "kB/s", "failed attempts"),
        tuple(rows),
        note="bytes: moved by that mirror (a resumed download counts its rest); kB/s: those bytes over the time "
        "from each transfer's Downloading / Uploading to its completion",
    )


def _failures_table(failures: Mapping[tuple[str, str], list[str]]) -> Table:
    rows = [
        (what, why or "-", len(stations), named_stations(stations))
        for (what, why), stations in sorted(failures.items())
    ]
    return Table("File transfer failures", ("what", "reason", "count", "stations"), tuple(rows))


__all__ = ["TRANSFER_KINDS", "transfer_tables"]
