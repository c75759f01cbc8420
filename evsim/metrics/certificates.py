"""Summary tables of the certificate lifecycle, from a run's events alone.

* **Certificate renewal**, per CSMS: CSRs accepted for signing, certificates signed and accepted by their
  station, the signing latency (SignCertificateRequest to the station's CertificateSigned answer) as
  percentiles, and certificates signed per second (over the span between the first and the last one).
* **Station renewals**, per CSMS: stations it triggered (TriggerMessage accepted), stations whose renewed
  certificate then connected (``client_certificate_switched``), and the renewal latency from the trigger to
  that switch, as percentiles.
* **Certificate failures**: every refusal or failure of the lifecycle by where it happened, what and why, with
  the stations it concerned (the first few named): bad CSRs, CA failures, chains a station refused,
  operations that could not reach a station (``certificate_not_sent``: e.g. a station that missed a root
  install), renewed certificates discarded, requests given up.
* **Certificates expiring**: each ``cert_expiring`` warning (node, own or peer certificate, subject, notAfter).
"""

from __future__ import annotations

import collections
import math
from collections.abc import Mapping, Sequence
from typing import Any

from evsim.metrics.summary import Table
from evsim.report import Seconds

CERTIFICATE_KINDS = frozenset(
    {
        "csr_accepted",
        "csr_refused",
        "csr_signing_failed",
        "certificate_signed",
        "certificate_not_sent",
        "certificate_not_revoked",
        "certificate_signed_rejected",
        "certificate_install_rejected",
        "client_certificate_discarded",
        "csr_abandoned",
        "cert_expiring",
        "certificate_call",
        "client_certificate_switched",
    }
)
"""The event kinds these tables read (a run without any of them gets none of the tables)."""
NAMED_STATIONS = 5
"""Stations named per failure row (the rest are counted)."""
EXPIRING_ROWS = 50
"""Rows of the expiry table (the rest are counted in its note)."""


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-quantile (0..1) of sorted ``values`` by the nearest-rank method."""
    if not values:
        return math.nan
    rank = max(1, math.ceil(q * len(values)))
    return values[rank - 1]


def _failure(e: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """(where, what, why) of a failure event, or None when the event is not one."""
    kind, node = str(e["kind"]), str(e["node"])
    if kind in (
        "csr_refused",
        "csr_signing_failed",
        "certificate_install_rejected",
        "certificate_signed_rejected",
    ):
        return (
            node if kind in ("csr_refused", "csr_signing_failed") else "stations",
            kind,
            str(e.get("reason", "")),
        )
    if kind == "certificate_signed" and e.get("status") != "Accepted":
        return node, kind, str(e.get("reason") or e.get("status", ""))
    if kind in ("certificate_not_sent", "certificate_not_revoked"):
        return "timeline", f"{kind} ({e.get('action', 'revoke_certificate')})", str(e.get("reason", ""))
    if kind == "client_certificate_discarded":
        return "stations", kind, f"{e.get('attempts', '?')} failed attempts"
    if kind == "csr_abandoned":
        return "stations", kind, str(e.get("reason", ""))
    return None


def certificate_tables(events: Sequence[Mapping[str, Any]]) -> tuple[Table, ...]:
    """The tables of the module docstring for events sorted by time (none without certificate events)."""
    relevant = [e for e in events if e["kind"] in CERTIFICATE_KINDS]
    if not relevant:
        return ()
    accepted: collections.Counter[str] = collections.Counter()
    signed_at: dict[str, list[float]] = collections.defaultdict(list)
    latencies: dict[str, list[float]] = collections.defaultdict(list)
    failures: dict[tuple[str, str, str], list[str]] = collections.defaultdict(list)
    expiring: list[tuple[object, ...]] = []
    triggered: dict[str, tuple[str, float]] = {}  # station -> (CSMS, first accepted trigger)
    switched: dict[str, float] = {}  # station -> its first switch after the trigger
    for e in relevant:
        kind, node = e["kind"], str(e["node"])
        if kind == "csr_accepted":
            accepted[node] += 1
        elif kind == "certificate_signed" and e.get("status") == "Accepted":
            signed_at[node].append(float(e["t"]))
            if "latency" in e:
                latencies[node].append(float(e["latency"]))
        elif (
            kind == "certificate_call"
            and e.get("action") == "TriggerMessage"
            and e.get("status") == "Accepted"
        ):
            triggered.setdefault(str(e.get("station", "")), (node, float(e["t"])))
        elif kind == "client_certificate_switched" and node in triggered and node not in switched:
            switched[node] = float(e["t"])
        elif kind == "cert_expiring":
            expiring.append(
                (
                    node,
                    e.get("role", ""),
                    e.get("peer") or "-",
                    e.get("subject", ""),
                    e.get("not_after", ""),
                    Seconds(float(e["t"])),
                )
            )
        failure = _failure(e)
        if failure is not None:
            station = str(e.get("station", node if failure[0] == "stations" else ""))
            failures[failure].append(station)
    tables = [_renewal_table(accepted, signed_at, latencies)] if accepted or signed_at else []
    if triggered:
        tables.append(_station_renewals_table(triggered, switched))
    tables.append(_failures_table(failures))
    if expiring:
        more = len(expiring) - EXPIRING_ROWS
        tables.append(
            Table(
                "Certificates expiring",
                ("node", "certificate", "peer", "subject", "not after", "warned at"),
                tuple(expiring[:EXPIRING_ROWS]),
                note=f"... and {more} more warnings" if more > 0 else "",
            )
        )
    return tuple(tables)


def _renewal_table(
    accepted: Mapping[str, int], signed_at: Mapping[str, list[float]], latencies: Mapping[str, list[float]]
) -> Table:
    rows = []
    for node in sorted(set(accepted) | set(signed_at)):
        times = signed_at.get(node, [])
        lat = sorted(latencies.get(node, []))
        span = times[-1] - times[0] if len(times) > 1 else 0.0
        rate = len(times) / span if span > 0 else float(len(times))
        rows.append(
            (
                node,
                accepted.get(node, 0),
                len(times),
                *(Seconds(percentile(lat, q)) if lat else "-" for q in (0.5, 0.9, 0.99, 1.0)),
                rate,
            )
        )
    return Table(
        "Certificate renewal",
        ("csms", "CSRs accepted", "signed", "p50", "p90", "p99", "max", "signed/s"),
        tuple(rows),
        note="latency: SignCertificateRequest to the station's CertificateSigned answer; signed/s: over the span "
        "from the first to the last signed certificate",
    )


def _station_renewals_table(
    triggered: Mapping[str, tuple[str, float]], switched: Mapping[str, float]
) -> Table:
    by_csms: dict[str, list[float | None]] = collections.defaultdict(list)
    for station, (csms, at) in triggered.items():
        done = switched.get(station)
        by_csms[csms].append(None if done is None else done - at)
    rows = []
    for csms, values in sorted(by_csms.items()):
        lat = sorted(v for v in values if v is not None)
        rows.append(
            (
                csms,
                len(values),
                len(lat),
                *(Seconds(percentile(lat, q)) if lat else "-" for q in (0.5, 0.9, 0.99, 1.0)),
            )
        )
    return Table(
        "Station renewals",
        ("csms", "triggered", "renewed", "p50", "p90", "p99", "max"),
        tuple(rows),
        note="renewed: the renewed certificate connected; latency: from the accepted TriggerMessage to that "
        "connection",
    )


def named_stations(stations: list[str]) -> str:
    """The first :data:`NAMED_STATIONS` of ``stations`` (sorted, each once), ``+n`` for the rest; ``-`` for none."""
    names = sorted({s for s in stations if s})
    shown = ", ".join(names[:NAMED_STATIONS]) + (
        f" +{len(names) - NAMED_STATIONS}" if len(names) > NAMED_STATIONS else ""
    )
    return shown or "-"


def _failures_table(failures: Mapping[tuple[str, str, str], list[str]]) -> Table:
    rows = []
    for (where, what, why), stations in sorted(failures.items()):
        rows.append((where, what, why or "-", len(stations), named_stations(stations)))
    return Table("Certificate failures", ("where", "what", "reason", "count", "stations"), tuple(rows))


__all__ = ["CERTIFICATE_KINDS", "certificate_tables", "named_stations", "percentile"]
