"""EEBus SHIP-style pairing by Subject Key Identifier, as a sans-IO value and pure decisions (seed 1.4).

Theory of operation
-------------------
SHIP peers (a charging station and a home energy manager) have no CA: "SHIP 12.1: all certificates are
locally signed". Each device's identity is the SKI of its self-signed certificate, which SHIP 12.2 requires to
be present and computed as RFC 5280 §4.2.1.2 method 1 (SHA-1 of the subjectPublicKey bits, 20 bytes, written
as 40 hex digits; ``protocol-digest.md`` §8, ship-go ``cert.go``). Each side keeps the SKIs it trusts
(:class:`PeerTrust`); pairing adds one, either because the user registered it (QR code, label:
:func:`register`, ship-go ``RegisterRemoteSKI``) or because an unknown device connected while pairing was
allowed: inside a *pairing window* the user opened (:func:`open_window`, the push-button idea) or always
with ``auto_accept`` (ship-go ``SetAutoAccept``, mDNS ``register=true``).

The TLS engine accepts any client certificate on a pairing listener (pyOpenSSL verify callback returning
True, digest §8); after the handshake :func:`decide` looks at the peer's leaf:

1. not self-signed, SKI missing, or SKI not SHA-1 of the key: refused (``cert_invalid:...``);
2. a known SKI: ``trusted`` (accepted), ``denied`` (refused even inside a window), or ``pending``
   (accepted and trusted only inside a window or with auto_accept);
3. an unknown SKI whose subject CN (the SHIP device id, e.g. ``model-serial``) belongs to a trusted or pending
   entry: the device has a new key (crypto agility). Inside a window the new key *replaces* the old entry;
   outside one it is refused, even with ``auto_accept`` (a clone of a known device name must not slip in);
4. an unknown SKI: paired inside a window or with ``auto_accept``; otherwise refused and recorded as a
   ``pending`` request (SHIP's hello ``pending`` phase waiting for the user, ship-go's
   ``ReceivedPairingRequest``), at most :data:`MAX_PENDING` of them.

:func:`unpair` marks an entry ``denied``: the peer is refused from then on, window or not, until the user
:func:`register` s it again. Every function returns a new :class:`PeerTrust`; nothing here reads a clock.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Iterable, Mapping
from typing import Literal, TypeAlias, cast

import attrs
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

from evsim.errors import ConfigError
from evsim.pki.ca import common_name
from evsim.tls import events
from evsim.tls.pins import (
    SPKI_SHA256_HEX_DIGITS,
    _check_choice,
    as_utc,
    is_self_signed,
    normalize_hex,
    spki_hex,
)
from evsim.toml_table import Table, join_path, rebased

PeerState: TypeAlias = Literal["trusted", "pending", "denied"]
PairingEvent: TypeAlias = Literal[
    "paired", "pairing_requested", "refused_unknown", "refused_denied", "trusted"
]

PEER_STATES: tuple[PeerState, ...] = ("trusted", "pending", "denied")

SKI_HEX_DIGITS = 40
"""RFC 5280 §4.2.1.2 method 1: SHA-1 of the key, 20 bytes; SHIP 12.2 (ship-go ``SkiFromCertificate``)."""
DEFAULT_PAIRING_WINDOW_S = 120.0
"""Default window: the Wi-Fi Protected Setup push-button "walk time" (120 s), the pattern users know."""
MAX_PENDING = 16
"""Most pending pairing requests kept: unauthenticated peers must not grow the state without bound
(style.md §9). Not from a specification."""

# HandshakeFailed reasons (event vocabulary style: kind, then a refinement after the colon)
NOT_SELF_SIGNED = "cert_invalid:not_self_signed"
NO_SKI = "cert_invalid:no_ski"
SKI_MISMATCH = "cert_invalid:ski_mismatch"
UNSUPPORTED_KEY = "cert_invalid:unsupported_key"
REFUSED_UNKNOWN = "pairing_refused:unknown"
REFUSED_PENDING = "pairing_refused:pending"
REFUSED_DENIED = "pairing_refused:denied"
REFUSED_KEY_MISMATCH = "pairing_refused:key_mismatch"

_SKI_FIX = "give the peer's Subject Key Identifier (SHA-1 of its public key) as 40 hex digits"
_SPKI_FIX = "give the SHA-256 of the peer's DER SubjectPublicKeyInfo as 64 hex digits, or omit it"


def _to_ski(value: str | bytes) -> str:
    return normalize_hex(value, digits=SKI_HEX_DIGITS, path="peer.ski", what="SKI", fix=_SKI_FIX)


def _to_opt_spki(value: str | bytes | None) -> str | None:
    if value is None:
        return None
    return normalize_hex(
        value, digits=SPKI_SHA256_HEX_DIGITS, path="peer.spki_sha256", what="SPKI SHA-256", fix=_SPKI_FIX
    )


@attrs.frozen
class PairedPeer:
    """One remote device this side knows.

    Attributes:
        ski: the device identity: its certificate's SKI, 40 hex digits.
        spki_sha256: SHA-256 of its SubjectPublicKeyInfo (64 hex digits); None while only the SKI is known
            (registered by the user, not connected yet).
        state: ``trusted``, ``pending`` (asked to pair, waiting for the user or a window) or ``denied``.
        since: when the entry got its state (simulation wall time, UTC).
        device_id: the certificate's subject CN (SHIP: ``model-serial``), used to recognize a re-keyed
            device; None when unknown.

    Raises:
        ConfigError: bad SKI or SPKI hex, unknown state (paths start with ``peer.``).
    """

    ski: str = attrs.field(converter=_to_ski)
    spki_sha256: str | None = attrs.field(converter=_to_opt_spki)
    state: PeerState
    since: _dt.datetime = attrs.field(converter=as_utc)
    device_id: str | None = None

    def __attrs_post_init__(self) -> None:
        _check_choice(self.state, PEER_STATES, path="peer.state", what="peer state")


def _to_peers(value: Iterable[PairedPeer]) -> tuple[PairedPeer, ...]:
    return tuple(value)


def _opt_utc(value: _dt.datetime | None) -> _dt.datetime | None:
    return None if value is None else as_utc(value)


@attrs.frozen
class PeerTrust:
    """Whom a SHIP-style endpoint trusts, and whether it is pairing right now.

    Attributes:
        auto_accept: pair any unknown self-signed peer (ship-go ``SetAutoAccept(true)``, mDNS
            ``register=true``).
        pairing_window_s: how long :func:`open_window` allows pairing.
        peers: known devices, unique by SKI.
        window_until: the open window's end (exclusive), or None.

    Raises:
        ConfigError: a window length that is not a positive number, duplicate SKIs, non-PairedPeer entries.
    """

    auto_accept: bool = False
    pairing_window_s: float = DEFAULT_PAIRING_WINDOW_S
    peers: tuple[PairedPeer, ...] = attrs.field(default=(), converter=_to_peers)
    window_until: _dt.datetime | None = attrs.field(default=None, converter=_opt_utc)

    def __attrs_post_init__(self) -> None:
        w = self.pairing_window_s
        if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w) or w <= 0:
            raise ConfigError(
                "the pairing window must be a positive number of seconds",
                path="pairing_window_s",
                value=w,
                fix=f"use e.g. {DEFAULT_PAIRING_WINDOW_S}",
            )
        if not isinstance(self.auto_accept, bool):
            raise ConfigError(
                "auto_accept must be true or false",
                path="auto_accept",
                value=self.auto_accept,
                fix="auto_accept = false",
            )
        seen: dict[str, int] = {}
        for i, peer in enumerate(self.peers):
            if not isinstance(peer, PairedPeer):
                raise ConfigError(
                    "peers must be PairedPeer values",
                    path=f"peers[{i}]",
                    value=peer,
                    fix="use PairedPeer(...)",
                )
            if peer.ski in seen:
                raise ConfigError(
                    f"the same SKI is listed twice (first at peers[{seen[peer.ski]}])",
                    path=f"peers[{i}].ski",
                    value=peer.ski,
                    fix="list each device once",
                )
            seen[peer.ski] = i

    def get(self, ski: str) -> PairedPeer | None:
        """The entry for ``ski`` (40 hex digits, any case), or None.

        Args:
            ski: the SKI.

        Returns:
            The entry, or None when unknown.
        """
        key = ski.strip().replace(":", "").lower()
        for peer in self.peers:
            if peer.ski == key:
                return peer
        return None

    def window_open(self, now: _dt.datetime) -> bool:
        """Whether a pairing window is open at ``now``.

        Args:
            now: the simulation's wall time.

        Returns:
            True before ``window_until`` (exclusive); False when no window was opened.
        """
        return self.window_until is not None and as_utc(now) < self.window_until

    @classmethod
    def from_toml(cls, table: Mapping[str, object], *, path: str, at: _dt.datetime) -> PeerTrust:
        """Build from a parsed TOML table.

        The table::

            auto_accept = false
            pairing_window_s = 120
            peers = [ { ski = "a1b2…(40 hex)", device_id = "HEMS-0001" } ]   # registered by SKI (QR code)

        Each peer takes ``ski`` (required), ``device_id``, ``spki_sha256`` and ``state`` (default
        ``trusted``).

        Args:
            table: the table as ``tomllib`` returns it.
            path: the table's field path, prefixed to every error.
            at: the ``since`` of the listed peers (the simulation's start).

        Returns:
            The validated trust (no window open).

        Raises:
            ConfigError: unknown keys, wrong types, bad values, duplicate SKIs.
        """
        if not isinstance(table, Mapping):
            raise ConfigError(
                "pairing must be a table", path=path, value=table, fix="write a table with keys"
            )
        Table(
            table, path, ("auto_accept", "pairing_window_s", "peers")
        )  # refuses unknown keys (did-you-mean)
        raw_peers = table.get("peers", [])
        if not isinstance(raw_peers, list):
            raise ConfigError(
                "peers must be an array of tables",
                path=join_path(path, "peers"),
                value=raw_peers,
                fix='write peers = [{ ski = "…" }]',
            )
        peers: list[PairedPeer] = []
        for i, item in enumerate(raw_peers):
            where = f"{join_path(path, 'peers')}[{i}]"
            if not isinstance(item, Mapping):
                raise ConfigError("a peer must be a table", path=where, value=item, fix='write { ski = "…" }')
            Table(
                item, where, ("ski", "spki_sha256", "state", "device_id")
            )  # refuses unknown keys (did-you-mean)
            if "ski" not in item:
                raise ConfigError(
                    "a peer needs ski", path=join_path(where, "ski"), fix=f"add ski = … ({_SKI_FIX})"
                )
            device_id = item.get("device_id")
            if device_id is not None and not isinstance(device_id, str):
                raise ConfigError(
                    "device_id must be a string",
                    path=join_path(where, "device_id"),
                    value=device_id,
                    fix="quote it",
                )
            try:
                peers.append(
                    PairedPeer(
                        item["ski"],  # values checked by PairedPeer's converters and __attrs_post_init__
                        item.get("spki_sha256"),
                        item.get("state", "trusted"),
                        at,
                        device_id,
                    )
                )
            except ConfigError as exc:
                raise rebased(exc, where, {"peer": ""}) from None
        try:
            return cls(
                cast(bool, table.get("auto_accept", False)),  # checked in __attrs_post_init__
                cast(float, table.get("pairing_window_s", DEFAULT_PAIRING_WINDOW_S)),
                tuple(peers),
            )
        except ConfigError as exc:
            raise rebased(exc, path) from None


# ---------------------------------------------------------------- identity


@attrs.frozen
class PeerIdentity:
    """What a SHIP peer certificate says about the device.

    Attributes:
        ski: the SKI, 40 hex digits (checked equal to SHA-1 of the key).
        spki_sha256: SHA-256 of the SubjectPublicKeyInfo, 64 hex digits.
        device_id: the subject CN, or None.
    """

    ski: str
    spki_sha256: str
    device_id: str | None


def peer_identity(cert: x509.Certificate) -> PeerIdentity | tuple[str, str]:
    """Check a SHIP peer certificate (SHIP 12.1/12.2) and read its identity.

    Args:
        cert: the peer's leaf certificate.

    Returns:
        The identity, or ``(reason, detail)`` when the certificate cannot identify a SHIP device: not
        self-signed (:data:`NOT_SELF_SIGNED`), no SKI extension (:data:`NO_SKI`), an SKI that is not SHA-1 of
        the key (:data:`SKI_MISMATCH`), or a key cryptography cannot load (:data:`UNSUPPORTED_KEY`).
        Never raises.
    """
    try:
        expected = x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        return UNSUPPORTED_KEY, f"cannot load the certificate's public key ({exc})"
    spki = spki_hex(cert)
    if spki is None:  # pragma: no cover - the key loaded just above
        return UNSUPPORTED_KEY, "cannot encode the certificate's public key"
    if not is_self_signed(cert):
        return NOT_SELF_SIGNED, (
            f"issuer {cert.issuer.rfc4514_string()!r} is not the subject itself, or the signature does not verify "
            "with the certificate's own key (SHIP 12.1: certificates are self-signed)"
        )
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    except x509.ExtensionNotFound:
        return (
            NO_SKI,
            "the certificate has no SubjectKeyIdentifier (SHIP 12.2 requires one: it is the device id)",
        )
    except ValueError as exc:  # a duplicate or undecodable extension
        return NO_SKI, f"the certificate's extensions cannot be read ({exc})"
    if ext.value.digest != expected:
        return SKI_MISMATCH, (
            f"SubjectKeyIdentifier {ext.value.digest.hex()} is not SHA-1 of the public key ({expected.hex()}); "
            "SHIP 12.2 requires RFC 5280 §4.2.1.2 method 1"
        )
    return PeerIdentity(expected.hex(), spki, common_name(cert))


# ---------------------------------------------------------------- decisions


@attrs.frozen
class PairingDecision:
    """What :func:`decide` concluded.

    Attributes:
        accept: whether the connection may proceed.
        event: ``trusted`` (known peer), ``paired`` (newly paired or re-paired), ``pairing_requested``
            (refused, recorded as pending), ``refused_unknown`` or ``refused_denied``.
        new_state: the trust to keep (commit it when the connection's other checks passed too).
        reason: the ``HandshakeFailed`` reason when refused, else None.
        detail: human-readable explanation.
        peer: the peer's entry in ``new_state`` (None when it was not recorded).
        replaced: the entry a re-pairing replaced (same device id, old key), else None.
    """

    accept: bool
    event: PairingEvent
    new_state: PeerTrust
    reason: str | None = None
    detail: str = ""
    peer: PairedPeer | None = None
    replaced: PairedPeer | None = None

    @property
    def events(self) -> tuple[str, ...]:
        """The TLS-vocabulary events to log (``paired``, ``pairing_requested``), possibly none."""
        if self.event == "paired":
            return (events.PAIRED,)
        if self.event == "pairing_requested":
            return (events.PAIRING_REQUESTED,)
        return ()


def _put(pt: PeerTrust, peer: PairedPeer, *, replace: str | None = None) -> PeerTrust:
    """``pt`` with ``peer`` stored: over the entry with SKI ``replace`` (or ``peer.ski``), else appended."""
    target = replace or peer.ski
    peers = list(pt.peers)
    for i, old in enumerate(peers):
        if old.ski == target:
            peers[i] = peer
            break
    else:
        peers.append(peer)
    return attrs.evolve(pt, peers=tuple(peers))


def open_window(pt: PeerTrust, *, now: _dt.datetime) -> PeerTrust:
    """Open (or extend) a pairing window of ``pairing_window_s`` from ``now``.

    Args:
        pt: the trust.
        now: the simulation's wall time.

    Returns:
        The trust with ``window_until = now + pairing_window_s``.
    """
    return attrs.evolve(pt, window_until=as_utc(now) + _dt.timedelta(seconds=pt.pairing_window_s))


def close_window(pt: PeerTrust) -> PeerTrust:
    """Close the pairing window now (e.g. after the one device the user wanted has paired).

    Args:
        pt: the trust.

    Returns:
        The trust with no window.
    """
    return pt if pt.window_until is None else attrs.evolve(pt, window_until=None)


def decide(pt: PeerTrust, peer_cert: x509.Certificate, *, now: _dt.datetime) -> PairingDecision:
    """Decide whether a SHIP peer may connect, and what the trust becomes (see the module doc).

    Args:
        pt: the trust.
        peer_cert: the peer's leaf certificate (self-signed).
        now: the simulation's wall time.

    Returns:
        The decision; never raises.
    """
    ident = peer_identity(peer_cert)
    if not isinstance(ident, PeerIdentity):
        reason, detail = ident
        return PairingDecision(False, "refused_unknown", pt, reason, detail)
    may_pair = pt.auto_accept or pt.window_open(now)
    known = pt.get(ident.ski)
    if known is not None:
        if known.spki_sha256 is not None and known.spki_sha256 != ident.spki_sha256:
            return PairingDecision(
                False,
                "refused_unknown",
                pt,
                REFUSED_KEY_MISMATCH,
                f"SKI {ident.ski} is known with another SPKI hash ({known.spki_sha256[:16]}…)",
                known,
            )
        if known.state == "denied":
            return PairingDecision(
                False, "refused_denied", pt, REFUSED_DENIED, f"SKI {ident.ski} was unpaired", known
            )
        if known.state == "trusted":
            if known.spki_sha256 is None:  # registered by SKI; this first connection completes the pairing
                peer = attrs.evolve(
                    known, spki_sha256=ident.spki_sha256, device_id=known.device_id or ident.device_id
                )
                return PairingDecision(True, "paired", _put(pt, peer), None, "registered SKI connected", peer)
            return PairingDecision(True, "trusted", pt, None, f"SKI {ident.ski} is trusted", known)
        # pending: a repeated request
        if may_pair:
            peer = PairedPeer(
                ident.ski, ident.spki_sha256, "trusted", now, known.device_id or ident.device_id
            )
            return PairingDecision(True, "paired", _put(pt, peer), None, "pending request accepted", peer)
        return PairingDecision(
            False,
            "pairing_requested",
            pt,
            REFUSED_PENDING,
            "pairing request still waiting for a window",
            known,
        )
    if ident.device_id is not None:
        old = next(
            (p for p in pt.peers if p.device_id == ident.device_id and p.state in ("trusted", "pending")),
            None,
        )
        if old is not None:
            if pt.window_open(now):
                peer = PairedPeer(ident.ski, ident.spki_sha256, "trusted", now, ident.device_id)
                return PairingDecision(
                    True,
                    "paired",
                    _put(pt, peer, replace=old.ski),
                    None,
                    f"device {ident.device_id!r} re-paired with a new key (was SKI {old.ski})",
                    peer,
                    old,
                )
            return PairingDecision(
                False,
                "refused_unknown",
                pt,
                REFUSED_UNKNOWN,
                f"device {ident.device_id!r} presents a new key (SKI {ident.ski}, paired: {old.ski}); "
                "re-pairing needs a pairing window",
            )
    if may_pair:
        peer = PairedPeer(ident.ski, ident.spki_sha256, "trusted", now, ident.device_id)
        how = "auto_accept" if pt.auto_accept else "pairing window"
        return PairingDecision(True, "paired", _put(pt, peer), None, f"new peer paired ({how})", peer)
    if sum(p.state == "pending" for p in pt.peers) >= MAX_PENDING:
        return PairingDecision(
            False,
            "refused_unknown",
            pt,
            REFUSED_UNKNOWN,
            f"unknown SKI {ident.ski}, and {MAX_PENDING} pairing requests are already waiting",
        )
    peer = PairedPeer(ident.ski, ident.spki_sha256, "pending", now, ident.device_id)
    return PairingDecision(
        False,
        "pairing_requested",
        _put(pt, peer),
        REFUSED_PENDING,
        f"unknown SKI {ident.ski}: recorded as a pairing request; open a pairing window or register it",
        peer,
    )


def _ski_arg(ski: str | bytes) -> str:
    return normalize_hex(ski, digits=SKI_HEX_DIGITS, path="ski", what="SKI", fix=_SKI_FIX)


def unpair(pt: PeerTrust, ski: str | bytes, *, at: _dt.datetime) -> PeerTrust:
    """Unpair a device: its entry becomes ``denied``, so it is refused even inside a window (log ``unpaired``).

    Args:
        pt: the trust.
        ski: the device's SKI (hex or the 20 raw bytes).
        at: when (simulation wall time).

    Returns:
        The new trust.

    Raises:
        ConfigError: ``ski`` is not 40 hex digits, or no entry has it.
    """
    key = _ski_arg(ski)
    known = pt.get(key)
    if known is None:
        raise ConfigError("no paired peer has this SKI", path="ski", value=key, fix="unpair a listed SKI")
    return _put(pt, attrs.evolve(known, state="denied", since=at))


def register(pt: PeerTrust, ski: str | bytes, *, at: _dt.datetime, device_id: str | None = None) -> PeerTrust:
    """Trust a device by its SKI (the user scanned its QR code; ship-go ``RegisterRemoteSKI``).

    Also how the user accepts a pending request or revokes a denial.

    Args:
        pt: the trust.
        ski: the device's SKI (hex or the 20 raw bytes).
        at: when (simulation wall time).
        device_id: its SHIP device id, when known.

    Returns:
        The new trust, the entry ``trusted`` (its SPKI hash is learned at the first connection when unknown).

    Raises:
        ConfigError: ``ski`` is not 40 hex digits.
    """
    key = _ski_arg(ski)
    known = pt.get(key)
    if known is None:
        return _put(pt, PairedPeer(key, None, "trusted", at, device_id))
    return _put(pt, attrs.evolve(known, state="trusted", since=at, device_id=device_id or known.device_id))
