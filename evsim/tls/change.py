"""Noticing that a peer changed its certificate or its key (seed 1.6), as a sans-IO value and a pure decision.

Theory of operation
-------------------
A CA-valid chain says the peer is *someone* the CA vouched for; it does not say it is the same key as
yesterday. :class:`PeerMemory` remembers, per peer name (the server name a client dialled, or the identity a
server authenticated), the last accepted leaf: its SHA-256 fingerprint and its SPKI hash. After the other
checks passed, :func:`observe` compares the new leaf with that memory:

* first sight, or the same certificate: accepted, no event;
* a new certificate for the same key (a renewal that kept the key): ``peer_cert_changed``, accepted, at
  the policy's severity (``info`` or ``warn``);
* a new key: ``peer_key_changed``, then :class:`ChangePolicy` decides: ``reject`` refuses the connection
  (the memory keeps the old key, so every attempt is reported), ``warn`` accepts and remembers the new key,
  ``accept_and_repin`` accepts, remembers it and asks the caller to re-pin learned pins
  (:func:`evsim.tls.pins.repin`).

Nothing here reads a clock: ``now`` is passed in and only stamps the memory.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Mapping
from typing import Literal, TypeAlias, cast

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from evsim.errors import ConfigError
from evsim.tls import events
from evsim.tls.pins import _check_choice, as_utc, spki_hex
from evsim.toml_table import Table, rebased

OnKeyChange: TypeAlias = Literal["reject", "warn", "accept_and_repin"]
OnCertChange: TypeAlias = Literal["info", "warn"]
Severity: TypeAlias = Literal["info", "warn", "error"]

ON_KEY_CHANGE: tuple[OnKeyChange, ...] = ("reject", "warn", "accept_and_repin")
ON_CERT_CHANGE: tuple[OnCertChange, ...] = ("info", "warn")

MAX_PEERS = 100_000
"""Most peers one memory keeps (the least recently seen is forgotten first): bounded state (style.md §9),
sized for a CSMS that sees every station of a 1,000-station scenario many times over. Not from a spec."""


@attrs.frozen
class ChangePolicy:
    """What to do when a peer's certificate or key changes.

    Attributes:
        on_peer_key_change: ``reject`` (refuse the connection), ``warn`` (accept, report at warn level) or
            ``accept_and_repin`` (accept, report, re-pin learned pins to the new key).
        on_peer_cert_change_same_key: severity of a certificate renewal that kept the key (``info``/``warn``).

    Raises:
        ConfigError: an unknown value.
    """

    on_peer_key_change: OnKeyChange = "warn"
    on_peer_cert_change_same_key: OnCertChange = "info"

    def __attrs_post_init__(self) -> None:
        _check_choice(
            self.on_peer_key_change, ON_KEY_CHANGE, path="on_peer_key_change", what="key-change policy"
        )
        _check_choice(
            self.on_peer_cert_change_same_key,
            ON_CERT_CHANGE,
            path="on_peer_cert_change_same_key",
            what="certificate-change severity",
        )

    @classmethod
    def from_toml(cls, table: Mapping[str, object], *, path: str) -> ChangePolicy:
        """Build from a parsed TOML table (``on_peer_key_change = "warn"``, ``on_peer_cert_change_same_key``).

        Args:
            table: the table as ``tomllib`` returns it.
            path: its field path, prefixed to every error.

        Returns:
            The policy (missing keys take the defaults).

        Raises:
            ConfigError: unknown keys or values.
        """
        if not isinstance(table, Mapping):
            raise ConfigError("change policy must be a table", path=path, value=table, fix="write a table")
        Table(
            table, path, ("on_peer_key_change", "on_peer_cert_change_same_key")
        )  # refuses unknown keys (did-you-mean)
        try:
            return cls(
                cast(OnKeyChange, table.get("on_peer_key_change", "warn")),  # checked in __attrs_post_init__
                cast(OnCertChange, table.get("on_peer_cert_change_same_key", "info")),
            )
        except ConfigError as exc:
            raise rebased(exc, path) from None


@attrs.frozen
class SeenPeer:
    """The last accepted leaf of one peer.

    Attributes:
        name: the peer's name.
        fingerprint: SHA-256 of the DER certificate, hex.
        spki_sha256: SHA-256 of its SubjectPublicKeyInfo, hex ("" when cryptography cannot load the key:
            such a peer is compared by fingerprint only).
        since: when this certificate was first accepted.
        last_seen: when it was last accepted.
    """

    name: str
    fingerprint: str
    spki_sha256: str
    since: _dt.datetime = attrs.field(converter=as_utc)
    last_seen: _dt.datetime = attrs.field(converter=as_utc)


def _to_seen(value: Iterable[SeenPeer]) -> tuple[SeenPeer, ...]:
    return tuple(value)


@attrs.frozen
class PeerMemory:
    """What each peer presented last (unique by name, least recently seen first after :func:`observe`).

    Attributes:
        peers: the entries.
        limit: how many peers to keep (the least recently seen is forgotten first).

    Raises:
        ConfigError: a name listed twice, or a limit below 1.
    """

    peers: tuple[SeenPeer, ...] = attrs.field(default=(), converter=_to_seen)
    limit: int = MAX_PEERS

    def __attrs_post_init__(self) -> None:
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1:
            raise ConfigError(
                "limit must be a positive integer", path="limit", value=self.limit, fix="use 1000"
            )
        names = [p.name for p in self.peers]
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise ConfigError(
                "a peer name is listed twice", path="peers", value=dup, fix="keep one entry per peer"
            )

    def get(self, name: str) -> SeenPeer | None:
        """The entry for ``name``, or None.

        Args:
            name: the peer's name.

        Returns:
            Its last accepted leaf, or None when never seen (or forgotten).
        """
        for peer in self.peers:
            if peer.name == name:
                return peer
        return None


def _remember(memory: PeerMemory, entry: SeenPeer) -> PeerMemory:
    """``memory`` with ``entry`` as the most recently seen peer (replacing its name's entry)."""
    rest = [p for p in memory.peers if p.name != entry.name]
    rest.append(entry)
    return attrs.evolve(memory, peers=tuple(rest[-memory.limit :]))


@attrs.frozen
class ChangeDecision:
    """What :func:`observe` concluded.

    Attributes:
        accept: whether the connection may proceed.
        events: ``()``, ``("peer_cert_changed",)`` or ``("peer_key_changed",)``.
        new_memory: the memory to keep (unchanged after a refusal, so the next attempt is reported too).
        repin: True when the caller should re-pin learned pins to the new key
            (``accept_and_repin``; see :func:`evsim.tls.pins.repin`).
        severity: the log level of the event (None when there is none); ``error`` for a refusal.
        reason: the ``HandshakeFailed`` reason when refused (``"peer_key_changed"``), else None.
        detail: human-readable explanation.
        previous: the entry before this observation (None at first sight).
    """

    accept: bool
    events: tuple[str, ...]
    new_memory: PeerMemory
    repin: bool = False
    severity: Severity | None = None
    reason: str | None = None
    detail: str = ""
    previous: SeenPeer | None = None


def observe(
    memory: PeerMemory, peer_name: str, leaf: x509.Certificate, policy: ChangePolicy, *, now: _dt.datetime
) -> ChangeDecision:
    """Compare a peer's leaf with the one it presented last, and apply the policy.

    Args:
        memory: the memory.
        peer_name: the peer's name (server name dialled, or the authenticated client identity).
        leaf: the peer's leaf certificate.
        policy: what to do on a change.
        now: the simulation's wall time (stamps the memory).

    Returns:
        The decision; never raises for a certificate.
    """
    fingerprint = leaf.fingerprint(hashes.SHA256()).hex()
    spki = spki_hex(leaf) or ""
    old = memory.get(peer_name)
    if old is None:
        entry = SeenPeer(peer_name, fingerprint, spki, now, now)
        return ChangeDecision(True, (), _remember(memory, entry), detail="first sight")
    if old.fingerprint == fingerprint:
        return ChangeDecision(True, (), _remember(memory, attrs.evolve(old, last_seen=now)), previous=old)
    entry = SeenPeer(peer_name, fingerprint, spki, now, now)
    if spki and old.spki_sha256 == spki:
        return ChangeDecision(
            True,
            (events.PEER_CERT_CHANGED,),
            _remember(memory, entry),
            severity=policy.on_peer_cert_change_same_key,
            detail=f"new certificate {fingerprint[:16]}… for the same key (was {old.fingerprint[:16]}…)",
            previous=old,
        )
    detail = f"new key {spki[:16] or '(unreadable)'}… (was {old.spki_sha256[:16] or '(unreadable)'}…)"
    if policy.on_peer_key_change == "reject":
        return ChangeDecision(
            False,
            (events.PEER_KEY_CHANGED,),
            memory,
            severity="error",
            reason=events.PEER_KEY_CHANGED,
            detail=detail + "; refused (on_peer_key_change = reject)",
            previous=old,
        )
    repin = policy.on_peer_key_change == "accept_and_repin"
    return ChangeDecision(
        True,
        (events.PEER_KEY_CHANGED,),
        _remember(memory, entry),
        repin=repin,
        severity="warn",
        detail=detail + ("; accepted, re-pin" if repin else "; accepted"),
        previous=old,
    )
