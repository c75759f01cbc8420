"""Certificates in use by issuer over time, from a run's events alone.

A station's connection uses two certificates: the CSMS's server certificate and, at security profile 3, the
station's own client certificate. Every ``handshake_ok`` names their issuers (``server_issuer``,
``client_issuer``); the connection is in use from that event until the station's next ``reconnect_wait``
(the attempt failed or the link ended). A resumed TLS session carries no server certificate: it counts under
the issuer the station saw last. A station's client certificate renewed over OCPP may come from the same
issuer as the one it replaces, so renewed certificates are counted apart: after the station's n-th
``client_certificate_switched`` its client certificate is labelled ``<issuer> (renewed)``, and the switch
moves its open connection to that label at once (the switch is recorded after the connection with the new
certificate succeeded).

:func:`issuer_series` gives the step series the plot draws (connections in use per label),
:func:`issuer_table` the summary table: per certificate kind and issuer, the handshakes that used it, the
first and last of them, the most connections using it at once, and how many used it at the end.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from evsim.metrics.summary import Table

__all__ = ["CLIENT", "SERVER", "IssuerUse", "issuer_series", "issuer_table", "issuer_uses"]

#: Label prefixes: the station's client certificate, and the CSMS's server certificate.
CLIENT = "client"
SERVER = "server"


@attrs.frozen
class IssuerUse:
    """How one issuer's certificates were used (one :data:`CLIENT` or :data:`SERVER` label).

    Attributes:
        label: ``client: <issuer>`` (``(renewed)`` appended for renewed client certificates) or
            ``server: <issuer>``.
        handshakes: handshakes completed with such a certificate.
        first: when the first connection used one (s).
        last: the last handshake with one (s), None when none did (a renewed certificate whose connection
            was switched to it, and no later one).
        peak: most connections using one at once.
        at_end: connections using one when the run ended.
        times, counts: the step series: from ``times[i]`` on, ``counts[i]`` connections use one.
    """

    label: str
    handshakes: int
    first: float
    last: float | None
    peak: int
    at_end: int
    times: tuple[float, ...]
    counts: tuple[int, ...]


def issuer_uses(events: Iterable[Mapping[str, Any]], roles: Mapping[str, str]) -> list[IssuerUse]:
    """Certificates in use by issuer (see the module doc), sorted by label.

    Args:
        events: JSON event objects, any order.
        roles: node -> role (:func:`evsim.metrics.topology.node_roles`).

    Returns:
        One :class:`IssuerUse` per label; none for a run whose handshakes name no issuer.
    """
    evs = sorted(events, key=lambda e: (float(e["t"]), str(e["node"]), int(e.get("seq", 0))))
    in_use: dict[str, tuple[str, ...]] = {}  # station -> the labels of its open connection
    renewed: collections.Counter[str] = collections.Counter()  # station -> client certificate switches
    last_server: dict[str, str] = {}
    current: collections.Counter[str] = collections.Counter()
    series: dict[str, tuple[list[float], list[int]]] = {}
    handshakes: collections.Counter[str] = collections.Counter()
    first_use: dict[str, float] = {}
    last_handshake: dict[str, float] = {}
    peak: collections.Counter[str] = collections.Counter()

    def step(label: str, delta: int, t: float) -> None:
        current[label] += delta
        peak[label] = max(peak[label], current[label])
        ts, ns = series.setdefault(label, ([], []))
        if ts and ts[-1] == t:
            ns[-1] = current[label]
        else:
            ts.append(t)
            ns.append(current[label])

    def close(station: str, t: float) -> None:
        for label in in_use.pop(station, ()):
            step(label, -1, t)

    for e in evs:
        node, kind, t = str(e["node"]), e["kind"], float(e["t"])
        if roles.get(node) != "station":
            continue
        if kind == "handshake_ok":
            close(node, t)  # a handshake without the end of the previous connection recorded
            labels: list[str] = []
            server = str(e.get("server_issuer") or last_server.get(node, ""))
            if server:
                last_server[node] = server
                labels.append(f"{SERVER}: {server}")
            if e.get("client_issuer"):
                labels.append(_client_label(str(e["client_issuer"]), renewed[node]))
            if not labels:
                continue
            in_use[node] = tuple(labels)
            for label in labels:
                handshakes[label] += 1
                first_use.setdefault(label, t)
                last_handshake[label] = t
                step(label, +1, t)
        elif kind == "reconnect_wait":
            close(node, t)
        elif kind == "client_certificate_switched":
            renewed[node] += 1
            labels_now = in_use.get(node, ())
            moved = tuple(
                _client_label(label.removeprefix(f"{CLIENT}: ").removesuffix(" (renewed)"), renewed[node])
                if label.startswith(f"{CLIENT}: ")
                else label
                for label in labels_now
            )
            if moved != labels_now:
                close(node, t)
                in_use[node] = moved
                for label in moved:
                    step(label, +1, t)
                    first_use.setdefault(label, t)
    return [
        IssuerUse(
            label=label,
            handshakes=handshakes[label],
            first=first_use[label],
            last=last_handshake.get(label),
            peak=peak[label],
            at_end=current[label],
            times=tuple(ts),
            counts=tuple(ns),
        )
        for label, (ts, ns) in sorted(series.items())
    ]


def _client_label(issuer: str, switches: int) -> str:
    return f"{CLIENT}: {issuer}" + (" (renewed)" if switches else "")


def issuer_series(uses: Sequence[IssuerUse]) -> dict[str, tuple[list[float], list[int]]]:
    """label -> (times, connections in use from each time on), for the plot."""
    return {u.label: (list(u.times), list(u.counts)) for u in uses}


def issuer_table(uses: Sequence[IssuerUse]) -> Table:
    """The summary table of :func:`issuer_uses`."""
    rows = [
        (
            u.label.split(": ", 1)[0],
            u.label.split(": ", 1)[1],
            u.handshakes,
            f"{u.first:.1f}",
            "-" if u.last is None else f"{u.last:.1f}",
            u.peak,
            u.at_end,
        )
        for u in uses
    ]
    return Table(
        "Certificates in use by issuer (station side)",
        (
            "certificate",
            "issuer",
            "handshakes",
            "first in use (s)",
            "last handshake (s)",
            "peak in use",
            "in use at end",
        ),
        tuple(rows),
        note="client: the station's own certificate (security profile 3; renewed: after the station switched "
        "to a certificate renewed over OCPP); server: the CSMS's; in use: connections from their handshake "
        "until the station's next reconnect wait",
    )
