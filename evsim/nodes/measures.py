"""What a station measures for the load report: its boot latency, and the issuers of a connection's certificates.

* :class:`BootClock`: a boot's latency runs from the first connection attempt since the station was last
  online (or started) to BootNotification Accepted, back-off waits, failed attempts and Pending answers
  included; ``booted`` records it as ``boot_s`` with the attempts it took (``boot_attempts``).
* :func:`certificate_issuers`: the ``handshake_ok`` fields naming who issued the CSMS's certificate and the
  station's own (the certificates-in-use-by-issuer table and plot, :mod:`evsim.metrics.issuers`).

Round trips are measured by the RPC core and summed by the recorder (:meth:`evsim.recorder.Recorder.round_trip`)
under :data:`ROUND_TRIP_CALLER`.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs
from cryptography import x509

from evsim.tls.context import ClientTls
from evsim.tls.stream import TlsInfo

__all__ = ["ISSUER_LENGTH", "ROUND_TRIP_CALLER", "BootClock", "certificate_issuers"]

ROUND_TRIP_CALLER = "stations"
"""The caller stations' round trips are counted under, per endpoint host."""

ISSUER_LENGTH = 200
"""Characters of an issuer name kept in an event (a name is the peer's text)."""


@attrs.define
class BootClock:
    """A station's boot in progress: when its first connection attempt started and how many it made."""

    started: float | None = None
    attempts: int = 0

    def attempt(self, now: float) -> None:
        """A connection attempt starts (the first one starts the boot)."""
        if self.started is None:
            self.started = now
        self.attempts += 1

    def booted(self, now: float, where: Mapping[str, str]) -> dict[str, object]:
        """BootNotification was Accepted: the ``booted`` fields ``where`` (the endpoint, for a station with
        several), ``boot_s`` and ``boot_attempts``; the next boot starts afresh."""
        started = now if self.started is None else self.started
        fields: dict[str, object] = {
            **where,
            "boot_s": round(now - started, 6),
            "boot_attempts": self.attempts,
        }
        self.reset()
        return fields

    def reset(self) -> None:
        """Forget the boot in progress (the station starts again)."""
        self.started, self.attempts = None, 0


def certificate_issuers(tls: ClientTls, info: TlsInfo) -> dict[str, str]:
    """The ``handshake_ok`` fields naming who issued the certificates of a connection: ``server_issuer`` (the
    leaf the CSMS sent; absent when it sent none, as on a resumed session) and ``client_issuer`` (the
    station's own certificate, profile 3), as RFC 4514 strings."""
    out: dict[str, str] = {}
    if info.peer_chain:
        out["server_issuer"] = _issuer_text(info.peer_chain[0])
    if tls.identity is not None:
        out["client_issuer"] = _issuer_text(tls.identity.chain[0])
    return out


_ISSUERS: dict[int, tuple[x509.Certificate, str]] = {}
_ISSUERS_MAX = 256  # distinct certificates a process sees in a run: a few CSMS leaves, the fleet's own


def _issuer_text(cert: x509.Certificate) -> str:
    """The issuer of ``cert`` as an RFC 4514 string, remembered per certificate object: a fleet's stations
    see one shared object per CSMS certificate (``evsim.tls.stream`` shares them), and formatting the name
    (≈13 µs) on every connection was a visible share of a boot storm. Keyed by identity (hashing a
    certificate costs half as much as formatting it); the entry holds the object, so its id stays its own."""
    hit = _ISSUERS.get(id(cert))
    if hit is not None and hit[0] is cert:
        return hit[1]
    text = cert.issuer.rfc4514_string()[:ISSUER_LENGTH]
    if len(_ISSUERS) >= _ISSUERS_MAX:
        _ISSUERS.clear()
    _ISSUERS[id(cert)] = (cert, text)
    return text
