"""Certificate expiry monitoring: ``cert_expiring`` a configurable time before a certificate's notAfter.

Theory of operation. Nodes tell one :class:`ExpiryMonitor` (shared by a run) about the certificates they use
and meet: their own (a CSMS's or controller's server certificate, a station's client certificate) and their
peers' (the CSMS certificate a station verified, a station certificate a CSMS or controller accepted), each
under a *slot* ``(node, role, peer)``. A slot holds the certificate seen last, so a renewed certificate replaces
the old one and the old one's warning is dropped. For each slot the monitor emits one ``cert_expiring`` event
at the node, at ``notAfter - warn_before`` (at once when that time has passed already), naming the role
(``own`` or ``peer``), the peer, the subject and issuer CNs, the serial, notAfter and the seconds left.

Noting is cheap (a dict lookup by serial; a heap push for a new certificate); one task (:meth:`run`) sleeps
until the next warning is due, so 10,000 stations cost no timers of their own. At most ``max_slots`` slots are
kept (a full monitor drops new slots and counts them in :attr:`ExpiryMonitor.dropped`).
"""

from __future__ import annotations

import datetime as _dt
import heapq
import itertools
from collections.abc import Callable

import trio
from cryptography import x509
from cryptography.x509.oid import NameOID

from evsim.clock import SimClock
from evsim.errors import ConfigError
from evsim.recorder import Recorder
from evsim.tls.events import CERT_EXPIRING

MAX_SLOTS = 1_000_000
"""Certificate slots kept by one monitor (node, role, peer)."""

Slot = tuple[str, str, str]


def _cn(name: x509.Name) -> str:
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value)[:64] if values else ""


class ExpiryMonitor:
    """Emits ``cert_expiring`` for the certificates nodes note (see the module docstring).

    Args:
        warn_before_s: how long before notAfter the warning is due, seconds (> 0).
        clock: the run's clock (notAfter is compared with its simulation time).
        recorder: where the events go (in the name of the node that noted the certificate).
        max_slots: the most slots kept.
        running: whether a node runs now; a warning falling due while its node is stopped is dropped with its
            slot, so the node warns at once when it notes the certificate again after a restart.
    """

    def __init__(
        self,
        warn_before_s: float,
        *,
        clock: SimClock,
        recorder: Recorder,
        max_slots: int = MAX_SLOTS,
        running: Callable[[str], bool] | None = None,
    ) -> None:
        if not warn_before_s > 0:
            raise ConfigError("warn_before_s must be > 0", path="expiry_warning", value=warn_before_s)
        self.warn_before = _dt.timedelta(seconds=warn_before_s)
        self.clock = clock
        self.recorder = recorder
        self.max_slots = max_slots
        self._running = running
        self._slots: dict[Slot, x509.Certificate] = {}
        self._heap: list[tuple[_dt.datetime, int, Slot, int]] = []  # (due, tie, slot, serial)
        self._tie = itertools.count()
        self._wake = trio.Event()
        self.warned = 0
        self.dropped = 0

    def note(self, node: str, cert: x509.Certificate, *, role: str = "own", peer: str = "") -> None:
        """``node`` uses (``role="own"``) or met (``"peer"``, the peer's name in ``peer``) ``cert`` now."""
        slot = (node, role, peer)
        known = self._slots.get(slot)
        if known is not None and known.serial_number == cert.serial_number:
            return
        if known is None and len(self._slots) >= self.max_slots:
            self.dropped += 1
            return
        self._slots[slot] = cert
        due = cert.not_valid_after_utc - self.warn_before
        if due <= self.clock.utcnow():
            self._warn(slot, cert)
            return
        heapq.heappush(self._heap, (due, next(self._tie), slot, cert.serial_number))
        if self._heap[0][2] == slot:
            self._wake.set()

    def _warn(self, slot: Slot, cert: x509.Certificate) -> None:
        node, role, peer = slot
        left = (cert.not_valid_after_utc - self.clock.utcnow()).total_seconds()
        self.warned += 1
        self.recorder.emit(
            node,
            CERT_EXPIRING,
            role=role,
            peer=peer,
            subject=_cn(cert.subject),
            issuer=_cn(cert.issuer),
            serial=format(cert.serial_number, "x"),
            not_after=cert.not_valid_after_utc.isoformat(),
            expires_in=round(left, 3),
        )

    def _due(self) -> None:
        now = self.clock.utcnow()
        while self._heap and self._heap[0][0] <= now:
            _, _, slot, serial = heapq.heappop(self._heap)
            cert = self._slots.get(slot)
            if cert is None or cert.serial_number != serial:  # replaced since
                continue
            if self._running is not None and not self._running(slot[0]):
                del self._slots[slot]
                continue
            self._warn(slot, cert)

    async def run(self) -> None:
        """Emit the warnings as they fall due, until cancelled."""
        while True:
            self._due()
            self._wake = trio.Event()
            if not self._heap:
                await self._wake.wait()
                continue
            wait = (self._heap[0][0] - self.clock.utcnow()).total_seconds()
            with trio.move_on_after(max(0.0, wait)):
                await self._wake.wait()


__all__ = ["MAX_SLOTS", "ExpiryMonitor"]
