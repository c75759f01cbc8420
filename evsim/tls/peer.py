"""Peer trust at run time: pins, SHIP-style pairing and change notification, wired into handshakes.

Theory of operation
-------------------
:mod:`evsim.tls.pins`, :mod:`evsim.tls.pairing` and :mod:`evsim.tls.change` are sans-IO values and pure
decisions. This module holds them for one endpoint (client side) or one listener (server side) and runs
them *inside* the TLS handshake:

* :class:`PeerPolicy` owns the **current** frozen :class:`PeerState` (a :class:`~evsim.tls.pins.PinSet`,
  a :class:`~evsim.tls.pairing.PeerTrust`, a :class:`~evsim.tls.change.ChangePolicy` and its
  :class:`~evsim.tls.change.PeerMemory`) and replaces it as a whole on every commit (one attribute
  assignment: atomic under trio, which runs one task at a time). It also sends every event to the sink.
* Each connection gets a :class:`PeerCheck` (:meth:`PeerPolicy.begin`) holding a *snapshot* of the state
  taken when the connection was created, stored on the connection's ``VerifyState``. The OpenSSL verify
  callback (``evsim.tls.context``) feeds it every certificate OpenSSL presents (:meth:`PeerCheck.see`,
  root first, leaf last) and, at depth 0 once the chain, time and hostname checks passed, asks
  :meth:`PeerCheck.check`. A refusal makes the callback fail, so OpenSSL aborts the handshake with an
  alert the peer hears (``internal_error``: pyOpenSSL cannot set an X509 error code from Python) and our
  side raises ``HandshakeFailed`` with the exact reason. The checks, in order:

  1. pairing (:func:`~evsim.tls.pairing.decide`) when the policy has a ``PeerTrust``;
  2. trust on first use (:func:`~evsim.tls.pins.add_tofu`) when the pin set is ``tofu``;
  3. change notification (:func:`~evsim.tls.change.observe`) when the policy has a ``ChangePolicy``;
     ``accept_and_repin`` re-pins learned pins (:func:`~evsim.tls.pins.repin`) before step 4;
  4. pins (:func:`~evsim.tls.pins.check`) against the chain as sent (client side) or as OpenSSL built
     it (server side: OpenSSL does not expose the sent chain during verification), with the verified
     chain deciding the intermediate/root targets when the store verified one (``pki`` mode).

* The stream calls :meth:`PeerCheck.handshake_succeeded` or :meth:`PeerCheck.handshake_failed` once.
  Observations (``pin_mismatch``, ``peer_cert_changed``, ``peer_key_changed``, refusals) are emitted
  either way; state changes (pairing, learned/promoted/released pins, the remembered leaf) are committed
  only after success, by re-running the same pure transitions on the policy's *current* state, so two
  connections that handshake at once do not overwrite each other's commits. The one commit on failure
  is a pairing request (``pairing_requested``): recording the refused peer is the point of it.
* A resumed session skips certificate verification, so the callback never ran: the checks then run on
  the session's peer chain after the handshake, and a refusal closes the connection (the peer hears no
  alert). Contexts compiled for a policy are rebuilt when trust shrinks (:attr:`PeerPolicy.epoch`:
  pin released, peer unpaired), so a server's session cache never resumes across such a change.
* Open connections are never disturbed: they keep the snapshot they were checked with; only new
  connections see the new state (a handshake already under way when trust changes is decided on its
  snapshot, but its commit re-runs on the new state, so e.g. an unpaired device is not re-recorded).
* TLS 1.3 mutual TLS: a client's handshake completes before the server has checked the client's
  certificate, so a client commits (e.g. promotes a pending pin of the server) even when the server then
  refuses it on the first read. The client did verify that server; only the server's verdict came later.

Reasons and events
------------------
Refusals raise ``HandshakeFailed`` on the refusing side with ``pin_mismatch``, ``peer_key_changed``,
``pairing_refused:unknown|pending|denied|key_mismatch`` or, for a certificate that cannot identify a SHIP
device, ``cert_invalid:not_self_signed|no_ski|ski_mismatch|unsupported_key``. Events (``PeerEvent``):
``pin_mismatch``, ``pin_added``, ``pin_released``, ``pin_promoted``, ``peer_cert_changed``,
``peer_key_changed``, ``pairing_requested``, ``pairing_refused``, ``paired``, ``unpaired``,
``cert_invalid``; :attr:`PeerEvent.ocpp_security_event` is the ``SecurityEventNotification`` type from the
one table in ``evsim.tls.events``.

Nothing here imports OpenSSL or reads a clock: certificates arrive as cryptography objects, ``now`` is
the simulation's wall time passed in by the stream.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Mapping, Sequence
from typing import Literal, TypeAlias

import attrs
from cryptography import x509

from evsim.errors import ConfigError
from evsim.pki.ca import common_name
from evsim.tls import change as _change
from evsim.tls import events
from evsim.tls import pairing as _pairing
from evsim.tls import pins as _pins
from evsim.tls.events import Side
from evsim.toml_table import Table

Severity: TypeAlias = Literal["info", "warn", "error"]
PeerMode: TypeAlias = Literal["pki", "pinned_peers", "tofu", "pairing"]
"""What a compiled context leaves to the peer policy: nothing extra (``pki``: pins and change checks on
top of the CA check, optional), or the whole decision (the self-signed modes)."""

Refusal: TypeAlias = tuple[str, str]
"""``(reason, detail)`` of a refused peer."""


@attrs.frozen
class PeerEvent:
    """One peer-trust event (the vocabulary of ``events.PEER_EVENTS``).

    Attributes:
        event: ``pin_mismatch``, ``pin_added``, ``pin_released``, ``pin_promoted``, ``peer_cert_changed``,
            ``peer_key_changed``, ``pairing_requested``, ``pairing_refused``, ``paired``, ``unpaired`` or
            ``cert_invalid``.
        side: the side that observed it (``client``: we dialled the peer; ``server``: it dialled us).
        peer: the peer's name (server name dialled, or the client's CN / SKI), or the policy's name for
            operator actions.
        at: simulation wall time (UTC).
        detail: human-readable explanation.
        reason: the ``HandshakeFailed`` reason when this event refused the connection, else None.
        severity: ``info``, ``warn`` or ``error`` (refusals).
        spki_sha256: the key concerned (hex), when there is one.
        ski: the SHIP identity concerned (hex), when there is one.
    """

    event: str
    side: Side
    peer: str
    at: _dt.datetime
    detail: str = ""
    reason: str | None = None
    severity: Severity = "info"
    spki_sha256: str | None = None
    ski: str | None = None

    @property
    def ocpp_security_event(self) -> str | None:
        """The OCPP ``SecurityEventNotification.type`` to send for it, or None (``events.peer_event_ocpp``)."""
        return events.peer_event_ocpp(self.event, side=self.side, reason=self.reason)


EventSink: TypeAlias = Callable[[PeerEvent], None]
"""Receives every event, synchronously, outside OpenSSL callbacks (its exceptions propagate)."""


@attrs.frozen
class PeerState:
    """The frozen values a :class:`PeerPolicy` holds at one moment.

    Attributes:
        pins: certificate pins, or None.
        pairing: SHIP-style paired peers, or None.
        change: what to do when a peer's certificate or key changes, or None (not checked).
        memory: the last accepted leaf of each peer (used with ``change``).
    """

    pins: _pins.PinSet | None = None
    pairing: _pairing.PeerTrust | None = None
    change: _change.ChangePolicy | None = None
    memory: _change.PeerMemory = attrs.field(factory=_change.PeerMemory)


@attrs.frozen
class PeerStatistics:
    """What :meth:`PeerPolicy.statistics` reports.

    Attributes:
        epoch: the trust epoch (see :attr:`PeerPolicy.epoch`).
        events_emitted: events sent to the sink so far.
        live_pins: pins that can match now.
        trusted_peers: paired devices in state ``trusted``.
        pending_requests: pairing requests waiting (at most ``pairing.MAX_PENDING``).
        pairing_window_open: whether a pairing window is open now.
        remembered_peers: peers in the change memory (at most its ``limit``).
    """

    epoch: int
    events_emitted: int
    live_pins: int
    trusted_peers: int
    pending_requests: int
    pairing_window_open: bool
    remembered_peers: int


class PeerPolicy:
    """The peer-trust holder of one endpoint or listener (see the module doc).

    Args:
        side: ``"client"`` (an endpoint we dial) or ``"server"`` (a listener).
        pins: certificate pins.
        pairing: SHIP-style pairing list.
        change: change-notification policy.
        memory: initial memory of peers' leaves.
        sink: receives every :class:`PeerEvent`; None = events are only counted.
        name: a label for operator events.

    Raises:
        ConfigError: an unknown side.
    """

    def __init__(
        self,
        *,
        side: Side,
        pins: _pins.PinSet | None = None,
        pairing: _pairing.PeerTrust | None = None,
        change: _change.ChangePolicy | None = None,
        memory: _change.PeerMemory | None = None,
        sink: EventSink | None = None,
        name: str = "peer-policy",
    ) -> None:
        if side not in ("client", "server"):
            raise ConfigError("unknown side", path="peer.side", value=side, fix='use "client" or "server"')
        self.side: Side = side
        self.name = name
        self._sink = sink
        self._state = PeerState(pins, pairing, change, memory if memory is not None else _new_memory())
        self._epoch = 0
        self._emitted = 0

    @classmethod
    def from_toml(
        cls,
        table: Mapping[str, object],
        *,
        path: str,
        side: Side,
        at: _dt.datetime,
        sink: EventSink | None = None,
    ) -> PeerPolicy:
        """Build from a parsed TOML table::

            [peer.pins]                       # PinSet.from_toml
            enforcement = "enforce"
            pins = [{ target = "leaf", spki_sha256 = "…" }]
            [peer.pairing]                    # PeerTrust.from_toml
            peers = [{ ski = "…", device_id = "HEMS-0001" }]
            [peer.change]                     # ChangePolicy.from_toml
            on_peer_key_change = "reject"

        Args:
            table: the table as ``tomllib`` returns it (every key optional).
            path: its field path, prefixed to every error (and the policy's name).
            side: ``"client"`` or ``"server"``.
            at: the ``since`` of the listed pairing peers (the simulation's start).
            sink: receives every event.

        Returns:
            The policy.

        Raises:
            ConfigError: unknown keys or bad values, with their field path.
        """
        if not isinstance(table, Mapping):
            raise ConfigError("a peer policy must be a table", path=path, value=table, fix="write a table")
        Table(table, path, ("pins", "pairing", "change"))  # refuses unknown keys (did-you-mean)

        def sub(name: str) -> Mapping[str, object] | None:
            value = table.get(name)
            if value is not None and not isinstance(value, Mapping):
                raise ConfigError(
                    f"{name} must be a table", path=f"{path}.{name}", value=value, fix="write a table"
                )
            return value

        pins_t, pairing_t, change_t = sub("pins"), sub("pairing"), sub("change")
        return cls(
            side=side,
            pins=None if pins_t is None else _pins.PinSet.from_toml(pins_t, path=f"{path}.pins"),
            pairing=None
            if pairing_t is None
            else _pairing.PeerTrust.from_toml(pairing_t, path=f"{path}.pairing", at=at),
            change=None
            if change_t is None
            else _change.ChangePolicy.from_toml(change_t, path=f"{path}.change"),
            sink=sink,
            name=path,
        )

    # ------------------------------------------------------------ views

    @property
    def state(self) -> PeerState:
        """The current values (a frozen snapshot)."""
        return self._state

    @property
    def epoch(self) -> int:
        """Incremented whenever trust shrinks (a pin released, a peer unpaired): contexts compiled for this
        policy are rebuilt, so sessions from before the change cannot be resumed."""
        return self._epoch

    # ------------------------------------------------------------ commit and events

    def statistics(self, *, now: _dt.datetime) -> PeerStatistics:
        """A frozen snapshot for metrics.

        Args:
            now: simulation wall time (which pins are live, whether a window is open).

        Returns:
            The counts.
        """
        state = self._state
        peers = state.pairing.peers if state.pairing is not None else ()
        return PeerStatistics(
            epoch=self._epoch,
            events_emitted=self._emitted,
            live_pins=len(state.pins.live_pins(now)) if state.pins is not None else 0,
            trusted_peers=sum(p.state == "trusted" for p in peers),
            pending_requests=sum(p.state == "pending" for p in peers),
            pairing_window_open=state.pairing is not None and state.pairing.window_open(now),
            remembered_peers=len(state.memory.peers),
        )

    def _emit(self, event: PeerEvent) -> None:
        self._emitted += 1
        if self._sink is not None:
            self._sink(event)

    def _commit(self, new: PeerState, emitted: Sequence[PeerEvent]) -> None:
        """Swap in ``new`` and emit ``emitted``; a release or an unpairing starts a new epoch."""
        self._state = new
        if any(e.event in (events.PIN_RELEASED, events.UNPAIRED) for e in emitted):
            self._epoch += 1
        for event in emitted:
            self._emit(event)

    def _pin_events(self, old: _pins.PinSet | None, new: _pins.PinSet | None, peer: str) -> list[PeerEvent]:
        if old is None or new is None:
            return []
        return [
            PeerEvent(
                h.event,
                self.side,
                peer,
                h.at,
                f"{h.target} pin: {h.reason}",
                spki_sha256=h.spki_sha256,
                severity="warn" if h.event == events.PIN_RELEASED else "info",
            )
            for h in _pins.changes(old, new)
        ]

    def _require_pins(self) -> _pins.PinSet:
        if self._state.pins is None:
            raise ConfigError("this peer policy has no pins", path="peer.pins", fix="configure a pin set")
        return self._state.pins

    def _require_pairing(self) -> _pairing.PeerTrust:
        if self._state.pairing is None:
            raise ConfigError(
                "this peer policy has no pairing list", path="peer.pairing", fix="configure pairing"
            )
        return self._state.pairing

    # ------------------------------------------------------------ operator actions

    def release_pin(self, spki: str | bytes, *, now: _dt.datetime, reason: str = "operator") -> None:
        """Release every pin of a key (operator event): emits ``pin_released``, starts a new epoch.

        Args:
            spki: the key's SPKI SHA-256 (hex or raw bytes).
            now: simulation wall time.
            reason: why, for the history.

        Raises:
            ConfigError: no pin set, a bad digest, or no pin with that key.
        """
        old = self._require_pins()
        self._set_pins(old, _pins.release(old, spki, at=now, reason=reason))

    def expire_pins(self, *, now: _dt.datetime) -> None:
        """Release the pins past their ``not_after`` (emits ``pin_released`` for each).

        Args:
            now: simulation wall time.

        Raises:
            ConfigError: no pin set.
        """
        old = self._require_pins()
        self._set_pins(old, _pins.expire(old, now=now))

    def _set_pins(self, old: _pins.PinSet, new: _pins.PinSet) -> None:
        """Commit an operator transition of the pins (nothing when it changed nothing)."""
        if new is not old:
            self._commit(attrs.evolve(self._state, pins=new), self._pin_events(old, new, self.name))

    def open_pairing_window(self, *, now: _dt.datetime) -> None:
        """Open (or extend) a pairing window of ``pairing_window_s`` from ``now``.

        Args:
            now: simulation wall time.

        Raises:
            ConfigError: no pairing list.
        """
        trust = _pairing.open_window(self._require_pairing(), now=now)
        self._commit(attrs.evolve(self._state, pairing=trust), ())

    def close_pairing_window(self) -> None:
        """Close the pairing window.

        Raises:
            ConfigError: no pairing list.
        """
        trust = _pairing.close_window(self._require_pairing())
        self._commit(attrs.evolve(self._state, pairing=trust), ())

    def register(self, ski: str | bytes, *, now: _dt.datetime, device_id: str | None = None) -> None:
        """Trust a device by its SKI (QR code; also accepts a pending request or lifts a denial).

        Emits ``paired`` (the key is learned at its first connection when unknown).

        Args:
            ski: the device's SKI (40 hex digits or 20 bytes).
            now: simulation wall time.
            device_id: its SHIP device id, when known.

        Raises:
            ConfigError: no pairing list, or a bad SKI.
        """
        trust = _pairing.register(self._require_pairing(), ski, at=now, device_id=device_id)
        self._set_pairing(trust, ski, events.PAIRED, now, "registered by the operator", "info")

    def unpair(self, ski: str | bytes, *, now: _dt.datetime) -> None:
        """Unpair a device: refused from now on, window or not. Emits ``unpaired``, starts a new epoch.

        Open connections with the device are not closed (the caller decides that).

        Args:
            ski: the device's SKI.
            now: simulation wall time.

        Raises:
            ConfigError: no pairing list, a bad SKI, or an unknown device.
        """
        trust = _pairing.unpair(self._require_pairing(), ski, at=now)
        self._set_pairing(trust, ski, events.UNPAIRED, now, "unpaired by the operator", "warn")

    def _set_pairing(
        self,
        trust: _pairing.PeerTrust,
        ski: str | bytes,
        event: str,
        now: _dt.datetime,
        detail: str,
        severity: Severity,
    ) -> None:
        """Commit an operator change of the pairing list with its event about the device ``ski``."""
        entry = trust.get(ski if isinstance(ski, str) else ski.hex())
        emitted = PeerEvent(
            event,
            self.side,
            self.name,
            now,
            detail,
            severity=severity,
            ski=entry.ski if entry is not None else None,
            spki_sha256=entry.spki_sha256 if entry is not None else None,
        )
        self._commit(attrs.evolve(self._state, pairing=trust), (emitted,))

    # ------------------------------------------------------------ connections

    def begin(self, side: Side, peer_name: str | None) -> PeerCheck:
        """The check for one new connection, on a snapshot of the current state.

        Args:
            side: our side of the connection (must be this policy's side).
            peer_name: the server name dialled (client side), or None (server side: the client's CN).

        Returns:
            A fresh :class:`PeerCheck`.

        Raises:
            ConfigError: the connection's side is not this policy's.
        """
        if side != self.side:
            raise ConfigError(
                f"a {self.side}-side peer policy was given to a {side} connection",
                path="peer.side",
                value=side,
                fix=f'build a PeerPolicy(side="{side}") for it',
            )
        return PeerCheck(self, self._state, peer_name)

    def require(self, mode: PeerMode) -> None:
        """Check that this policy can decide alone for a context in ``mode`` (see :func:`require_policy`).

        Args:
            mode: the compiled context's peer mode.

        Raises:
            ConfigError: the policy would accept anyone in that mode.
        """
        state = self._state
        pinset = state.pins
        enforcing = pinset is not None and pinset.enforcement == "enforce"
        if mode == "pairing" and state.pairing is None:
            raise ConfigError(
                'client_auth = "pairing" needs a pairing list in the peer policy',
                path="peer.pairing",
                fix="give PeerPolicy(pairing=PeerTrust(...)) (an empty list refuses unknown peers outside "
                "pairing windows)",
            )
        if mode == "tofu" and not (enforcing and pinset is not None and pinset.tofu):
            raise ConfigError(
                'trust mode "tofu" needs an enforced tofu pin set in the peer policy',
                path="peer.pins",
                value=None if pinset is None else (pinset.enforcement, pinset.tofu),
                fix='give PeerPolicy(pins=PinSet(tofu=True, enforcement="enforce"))',
            )
        if mode == "pinned_peers" and state.pairing is None and not enforcing:
            raise ConfigError(
                'trust mode "pinned_peers" needs enforced pins or a pairing list in the peer policy '
                "(report-only pins would accept anyone)",
                path="peer.pins",
                value=None if pinset is None else pinset.enforcement,
                fix='give PeerPolicy(pins=PinSet(enforcement="enforce", pins=[...])) or pairing=PeerTrust()',
            )


def _new_memory() -> _change.PeerMemory:
    return _change.PeerMemory()


def require_policy(peer: PeerPolicy | None, mode: PeerMode, *, side: Side) -> None:
    """Refuse a context in a self-signed mode without a policy that can decide (it would accept anyone).

    Args:
        peer: the policy, or None.
        mode: the compiled context's peer mode (``pki`` requires nothing).
        side: the context's side.

    Raises:
        ConfigError: no policy, a policy of the other side, or one that cannot decide alone.
    """
    if peer is not None and peer.side != side:
        raise ConfigError(
            f"a {peer.side}-side peer policy was given to a {side} context",
            path="peer.side",
            value=peer.side,
            fix=f'build a PeerPolicy(side="{side}")',
        )
    if mode == "pki":
        return
    if peer is None:
        raise ConfigError(
            f"peer mode {mode!r} accepts self-signed peers and needs a peer policy to decide which",
            path="peer",
            fix="pass peer=PeerPolicy(...) with pins or a pairing list",
        )
    peer.require(mode)


def _peer_label(leaf: x509.Certificate) -> str:
    """A client's name for the change memory: its CN, else its SPKI hash."""
    return common_name(leaf) or _pins.spki_hex(leaf) or "unknown"


class PeerCheck:
    """The peer checks of one connection (created by :meth:`PeerPolicy.begin`; see the module doc).

    Attributes:
        checked: whether :meth:`check` ran (False after a resumed handshake until the stream re-checks).
    """

    __slots__ = (
        "_chain",
        "_leaf",
        "_name",
        "_now",
        "_observed",
        "_paired",
        "_pairing_request",
        "_policy",
        "_promote",
        "_refusal",
        "_repin",
        "_seen",
        "_snapshot",
        "_tofu",
        "checked",
    )

    def __init__(self, policy: PeerPolicy, snapshot: PeerState, peer_name: str | None) -> None:
        self._policy = policy
        self._snapshot = snapshot
        self._name = peer_name
        self._seen: dict[int, x509.Certificate] = {}
        self._observed: list[PeerEvent] = []
        self._refusal: Refusal | None = None
        self._chain: tuple[x509.Certificate, ...] = ()
        self._leaf: x509.Certificate | None = None
        self._now: _dt.datetime | None = None
        self._paired = False
        self._pairing_request = False
        self._tofu = False
        self._repin = False
        self._promote: tuple[str, ...] = ()
        self.checked = False

    @property
    def side(self) -> Side:
        """Our side of the connection."""
        return self._policy.side

    def see(self, depth: int, cert: x509.Certificate) -> None:
        """Record the certificate OpenSSL presents at ``depth`` (0 = the leaf).

        Args:
            depth: the chain depth from the verify callback.
            cert: the certificate there.
        """
        self._seen[depth] = cert

    def _note(
        self, event: str, detail: str, *, reason: str | None = None, severity: Severity = "info"
    ) -> None:
        leaf = self._leaf
        ski: str | None = None
        spki: str | None = None
        if leaf is not None:
            spki = _pins.spki_hex(leaf)
            ident = _pairing.peer_identity(leaf)
            ski = ident.ski if isinstance(ident, _pairing.PeerIdentity) else None
        assert self._now is not None
        self._observed.append(
            PeerEvent(event, self.side, self._peer_name(), self._now, detail, reason, severity, spki, ski)
        )

    def _peer_name(self) -> str:
        if self._name:
            return self._name
        return _peer_label(self._leaf) if self._leaf is not None else "unknown"

    def _refuse(self, event: str, reason: str, detail: str) -> Refusal:
        self._note(event, detail, reason=reason, severity="error")
        self._refusal = (reason, detail)
        return self._refusal

    def check(
        self, *, now: _dt.datetime, sent: Sequence[x509.Certificate] | None, verified: bool
    ) -> Refusal | None:
        """Decide on the peer, at depth 0 of the verify callback (runs once; later calls repeat the verdict).

        Args:
            now: simulation wall time.
            sent: the chain as the peer sent it, leaf first, when OpenSSL exposes it (client side).
            verified: whether the chain :meth:`see` recorded was verified to a trust anchor (``pki``).

        Returns:
            None to accept, or ``(reason, detail)`` to refuse.
        """
        if self.checked:
            return self._refusal
        self.checked = True
        self._now = now
        built = tuple(self._seen[d] for d in sorted(self._seen))
        chain = tuple(sent) if sent else built
        if not chain:  # pragma: no cover - OpenSSL calls the callback with a certificate
            return self._refuse(events.CERT_INVALID, events.CERT_NO_CLIENT_CERT, "no peer certificate")
        self._chain, self._leaf = chain, chain[0]
        leaf = chain[0]
        snap = self._snapshot
        if snap.pairing is not None:
            decision = _pairing.decide(snap.pairing, leaf, now=now)
            if not decision.accept:
                reason = decision.reason or _pairing.REFUSED_UNKNOWN
                self._pairing_request = decision.event == "pairing_requested"
                event = (
                    events.PAIRING_REQUESTED
                    if self._pairing_request
                    else events.CERT_INVALID
                    if reason.startswith(events.CERT_INVALID)
                    else events.PAIRING_REFUSED
                )
                return self._refuse(event, reason, decision.detail)
            self._paired = decision.event == "paired"
        pinset = snap.pins
        if pinset is not None and pinset.tofu:
            learned = _pins.add_tofu(pinset, chain, now=now)
            self._tofu = learned is not pinset
            pinset = learned
        if snap.change is not None:
            seen = _change.observe(snap.memory, self._peer_name(), leaf, snap.change, now=now)
            if not seen.accept:
                return self._refuse(
                    events.PEER_KEY_CHANGED, seen.reason or events.PEER_KEY_CHANGED, seen.detail
                )
            for event in seen.events:
                self._note(event, seen.detail, severity=seen.severity or "info")
            if seen.repin and pinset is not None:
                pinset = _pins.repin(pinset, leaf, at=now)
                self._repin = True
        if pinset is not None:
            result = _pins.check(pinset, chain, now=now, verified=built if verified else None)
            if not result.ok:
                return self._refuse(events.PIN_MISMATCH, result.reason or events.PIN_MISMATCH, result.detail)
            if result.events:
                self._note(events.PIN_MISMATCH, result.detail, severity="warn")
            self._promote = tuple(p.spki_sha256 for p in result.pending)
        return None

    # ------------------------------------------------------------ end of the handshake

    def handshake_failed(self) -> None:
        """The handshake failed (our refusal or anything else): emit what was observed; commit only a
        pairing request."""
        policy = self._policy
        current = policy.state
        new = current
        if self._pairing_request and current.pairing is not None and self._leaf is not None and self._now:
            decision = _pairing.decide(current.pairing, self._leaf, now=self._now)
            if decision.event == "pairing_requested":
                new = attrs.evolve(current, pairing=decision.new_state)
        policy._commit(new, self._observed)
        self._observed = []

    def handshake_succeeded(
        self, peer_chain: Sequence[x509.Certificate], *, now: _dt.datetime
    ) -> Refusal | None:
        """The handshake succeeded: re-check a resumed session, then emit and commit.

        Args:
            peer_chain: the peer's chain, leaf first (used when the verify callback did not run).
            now: simulation wall time.

        Returns:
            None, or ``(reason, detail)`` when a resumed session's peer is no longer acceptable (the caller
            fails the connection; events are emitted already).
        """
        if not self.checked:
            for depth, cert in enumerate(peer_chain):
                self.see(depth, cert)
            refusal = self.check(now=now, sent=peer_chain, verified=False)
            if refusal is not None:
                self.handshake_failed()
                return refusal
        policy = self._policy
        current = policy.state
        leaf, at = self._leaf, self._now
        if leaf is None or at is None:  # pragma: no cover - check() ran with a chain
            return None
        committed: list[PeerEvent] = []
        trust = current.pairing
        if self._paired and trust is not None:
            decision = _pairing.decide(trust, leaf, now=at)
            if decision.accept and decision.event == "paired":
                trust = decision.new_state
                replaced = f"; replaces SKI {decision.replaced.ski}" if decision.replaced is not None else ""
                ski = decision.peer.ski if decision.peer is not None else None
                committed.append(
                    PeerEvent(
                        events.PAIRED,
                        self.side,
                        self._peer_name(),
                        at,
                        decision.detail + replaced,
                        spki_sha256=_pins.spki_hex(leaf),
                        ski=ski,
                    )
                )
        pinset = current.pins
        if pinset is not None:
            if self._tofu:
                pinset = _pins.add_tofu(pinset, self._chain, now=at)
            if self._repin:
                pinset = _pins.repin(pinset, leaf, at=at)
            for spki in self._promote:
                pinset = _pins.promote_pending(pinset, at=at, spki=spki)
            committed += policy._pin_events(current.pins, pinset, self._peer_name())
        memory = current.memory
        if current.change is not None:
            memory = _change.observe(memory, self._peer_name(), leaf, current.change, now=at).new_memory
        new = attrs.evolve(current, pairing=trust, pins=pinset, memory=memory)
        policy._commit(new, [*self._observed, *committed])
        self._observed = []
        return None
