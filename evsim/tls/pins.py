"""Certificate pinning as a sans-IO value and pure decision functions (``tls-model.md`` "PinSet", seed 1.5).

Theory of operation
-------------------
A :class:`PinSet` is a frozen value: an enforcement mode, the pins, and the history of what happened to them.
Nothing here does I/O, reads a clock or touches OpenSSL. The TLS stream verifies the chain first (CA, time,
hostname); then, with the peer's chain as cryptography certificates (leaf first) and the verified chain when
OpenSSL has one, it asks :func:`check`. Every transition (:func:`release`, :func:`expire`,
:func:`promote_pending`, :func:`add_tofu`, :func:`repin`) returns a *new* PinSet with the history appended;
the caller commits it only when the whole connection succeeded, and logs :func:`changes`.

A pin is the SHA-256 of a certificate's DER SubjectPublicKeyInfo (RFC 7469 §2.4, in hex here) and a *target*
saying which certificate of the chain it must match:

* ``leaf``: the peer's end-entity certificate (``chain[0]``);
* ``intermediate``: a CA certificate between the leaf and the root: ``verified[1:-1]``, or without a verified
  chain ``chain[1:]`` minus the last certificate when that one is self-signed (a root the peer sent);
* ``root``: the last certificate of the verified chain, or without one the last certificate sent when it is
  self-signed (a self-signed leaf, as in SHIP, is its own root);
* ``any``: any certificate of the chain as sent or as verified (RFC 7469 semantics).

States: ``active`` and ``backup`` pins (RFC 7469 §4.3: a backup pin names a key not yet in use) and
``pending`` pins (the key that replaces an active one, cf. OCPP's AdditionalRootCertificateCheck rollover:
the old one stays until the first successful connection with the new one) all match; ``released`` pins
and pins past their ``not_after`` never match. Releases happen three ways, each kept in the history:
an operator event (:func:`release`), expiry (:func:`expire`), or promotion of a pending pin
(:func:`promote_pending`: pending -> active, the active pins of the same target -> released).

``enforce`` refuses a chain no live pin matches (``pin_mismatch``); ``report_only`` lets it through and still
reports ``pin_mismatch`` (the HPKP ``Public-Key-Pins-Report-Only`` idea).
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal, TypeAlias, cast

import attrs
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm

from evsim.errors import ConfigError
from evsim.pki.keys import spki_sha256 as _spki_sha256_bytes
from evsim.tls import events
from evsim.toml_table import Table, choices_fix, join_path, rebased

PinTarget: TypeAlias = Literal["leaf", "intermediate", "root", "any"]
PinState: TypeAlias = Literal["active", "backup", "pending", "released"]
PinOrigin: TypeAlias = Literal["config", "tofu", "pairing"]
Enforcement: TypeAlias = Literal["enforce", "report_only"]

TARGETS: tuple[PinTarget, ...] = ("leaf", "intermediate", "root", "any")
STATES: tuple[PinState, ...] = ("active", "backup", "pending", "released")
ORIGINS: tuple[PinOrigin, ...] = ("config", "tofu", "pairing")
ENFORCEMENTS: tuple[Enforcement, ...] = ("enforce", "report_only")

PIN_ADDED = "pin_added"
"""History entry for a pin learned at run time (TOFU, repin). Not (yet) in :data:`evsim.tls.events.EVENTS`."""

SPKI_SHA256_HEX_DIGITS = 64
"""SHA-256 is 32 bytes (FIPS 180-4), 64 hex digits."""

_SPKI_FIX = (
    "give the SHA-256 of the DER SubjectPublicKeyInfo as 64 hex digits "
    "(openssl x509 -in cert.pem -pubkey -noout | openssl pkey -pubin -outform DER | sha256sum)"
)

#: Matching preference when several live pins match: the pin reported in :attr:`PinCheck.matched`.
_STATE_RANK: Mapping[str, int] = {"active": 0, "backup": 1, "pending": 2}

# ---------------------------------------------------------------- small shared helpers


def as_utc(value: _dt.datetime) -> _dt.datetime:
    """A datetime as an aware UTC datetime (naive values are taken as UTC, like ``evsim.pki``).

    Args:
        value: any datetime.

    Returns:
        The same instant, aware, in UTC.
    """
    if value.tzinfo is None:
        return value.replace(tzinfo=_dt.UTC)
    return value.astimezone(_dt.UTC)


def _opt_utc(value: _dt.datetime | None) -> _dt.datetime | None:
    return None if value is None else as_utc(value)


def normalize_hex(value: object, *, digits: int, path: str, what: str, fix: str) -> str:
    """Check and normalize a hex digest to lower case without ``:`` separators.

    Args:
        value: the text (``"AB:CD..."`` or ``"abcd..."``) or the raw digest bytes.
        digits: the exact number of hex digits required.
        path: the field path for the error.
        what: what the value is (``"SPKI SHA-256"``), for the message.
        fix: how to fix it, for the error.

    Returns:
        ``digits`` lower-case hex digits.

    Raises:
        ConfigError: not text or bytes, wrong length, or not hex.
    """
    if isinstance(value, bytes | bytearray):
        value = bytes(value).hex()
    if not isinstance(value, str):
        raise ConfigError(f"{what} must be a string of {digits} hex digits", path=path, value=value, fix=fix)
    text = value.strip().replace(":", "").lower()
    if len(text) != digits or any(c not in "0123456789abcdef" for c in text):
        raise ConfigError(
            f"{what} must be exactly {digits} hex digits", path=path, value=value, fix=_b64_hint(value, fix)
        )
    return text


def _b64_hint(value: str, fix: str) -> str:
    """If ``value`` is an RFC 7469 base64 pin (``pin-sha256="..."``), say its hex form."""
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return fix
    if len(raw) * 2 != SPKI_SHA256_HEX_DIGITS:
        return fix
    return f"this looks like an RFC 7469 base64 pin; write it in hex: {raw.hex()!r}"


def spki_hex(cert: x509.Certificate) -> str | None:
    """Hex SHA-256 of the certificate's SubjectPublicKeyInfo, or None when cryptography cannot load the key.

    Args:
        cert: any certificate.

    Returns:
        64 hex digits, or None (unsupported key algorithm or malformed key: such a certificate matches no pin).
    """
    try:
        return _spki_sha256_bytes(cert).hex()
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return None


def is_self_signed(cert: x509.Certificate) -> bool:
    """True when ``cert`` names itself as issuer and its signature verifies with its own key.

    Args:
        cert: any certificate.

    Returns:
        Whether the certificate is self-signed (never raises).
    """
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def _check_choice(value: object, allowed: Sequence[str], *, path: str, what: str) -> None:
    if value not in allowed:
        raise ConfigError(f"unknown {what}", path=path, value=value, fix=choices_fix(value, allowed))


# ---------------------------------------------------------------- values


def _to_spki(value: str | bytes) -> str:
    return normalize_hex(
        value, digits=SPKI_SHA256_HEX_DIGITS, path="pin.spki_sha256", what="SPKI SHA-256", fix=_SPKI_FIX
    )


@attrs.frozen
class Pin:
    """One pinned public key.

    Attributes:
        target: which certificate of the chain must carry the key (see the module doc).
        spki_sha256: SHA-256 of the DER SubjectPublicKeyInfo, 64 hex digits (bytes are accepted and
            converted; upper case and ``:`` separators are normalized).
        state: ``active``, ``backup``, ``pending`` (all three match) or ``released`` (never matches).
        not_after: the pin stops matching after this instant (expiry release); None = no expiry.
            Naive datetimes are taken as UTC.
        origin: where the pin came from: ``config``, ``tofu`` (learned on first use) or ``pairing``.

    Raises:
        ConfigError: bad hex, unknown target/state/origin, ``not_after`` not a datetime
            (field paths start with ``pin.``).
    """

    target: PinTarget
    spki_sha256: str = attrs.field(converter=_to_spki)
    state: PinState = "active"
    not_after: _dt.datetime | None = attrs.field(default=None, converter=_opt_utc)
    origin: PinOrigin = "config"

    def __attrs_post_init__(self) -> None:
        _check_choice(self.target, TARGETS, path="pin.target", what="pin target")
        _check_choice(self.state, STATES, path="pin.state", what="pin state")
        _check_choice(self.origin, ORIGINS, path="pin.origin", what="pin origin")

    def live(self, now: _dt.datetime) -> bool:
        """Whether this pin can match at ``now``: not released and not past ``not_after``.

        Args:
            now: the simulation's wall time.

        Returns:
            True when the pin counts.
        """
        return self.state != "released" and not self.expired(now)

    def expired(self, now: _dt.datetime) -> bool:
        """Whether ``now`` is past ``not_after`` (the instant itself still counts, like certificate validity).

        Args:
            now: the simulation's wall time.

        Returns:
            True when the pin has expired.
        """
        return self.not_after is not None and as_utc(now) > self.not_after


@attrs.frozen
class PinEvent:
    """One entry of a pin set's history.

    Attributes:
        at: when it happened (simulation wall time, UTC).
        event: ``pin_added`` (:data:`PIN_ADDED`), ``pin_released`` or ``pin_promoted``
            (:data:`evsim.tls.events.PIN_RELEASED`, :data:`~evsim.tls.events.PIN_PROMOTED`).
        spki_sha256: the pin's key hash.
        target: the pin's target.
        reason: why (``"operator"``, ``"expired"``, ``"trust on first use"``, ``"replaced by ..."``).
    """

    at: _dt.datetime = attrs.field(converter=as_utc)
    event: str
    spki_sha256: str
    target: PinTarget
    reason: str


def _to_pins(value: Iterable[Pin]) -> tuple[Pin, ...]:
    return tuple(value)


def _to_history(value: Iterable[PinEvent]) -> tuple[PinEvent, ...]:
    return tuple(value)


@attrs.frozen
class PinSet:
    """Certificate pins for one peer (or one service), with their history.

    A configured set needs an ``active`` pin (only backup/pending pins would be a set that can never be used
    as intended: the classic HPKP mistake). A set built by the transitions (non-empty ``history``) may have
    lost its last active pin (released or expired): then every chain mismatches. A ``tofu`` set may start
    empty: :func:`add_tofu` pins the first peer's leaf key.

    Attributes:
        enforcement: ``enforce`` (a mismatch refuses the connection) or ``report_only`` (reported only).
        pins: the pins, in configuration order; released pins stay (state ``released``).
        history: what happened to the pins, oldest first.
        tofu: trust on first use: while no live active pin exists, :func:`add_tofu` pins the peer's leaf.

    Raises:
        ConfigError: unknown enforcement; the same (target, key) pinned twice; no active pin in a
            configured, non-TOFU set. Field paths are relative (``pins[1].spki_sha256``);
            :meth:`from_toml` prefixes them.
    """

    enforcement: Enforcement = "enforce"
    pins: tuple[Pin, ...] = attrs.field(default=(), converter=_to_pins)
    history: tuple[PinEvent, ...] = attrs.field(default=(), converter=_to_history)
    tofu: bool = False

    def __attrs_post_init__(self) -> None:
        _check_choice(self.enforcement, ENFORCEMENTS, path="enforcement", what="pin enforcement")
        seen: dict[tuple[str, str], int] = {}
        for i, pin in enumerate(self.pins):
            if not isinstance(pin, Pin):
                raise ConfigError("pins must be Pin values", path=f"pins[{i}]", value=pin, fix="use Pin(...)")
            key = (pin.target, pin.spki_sha256)
            if key in seen:
                raise ConfigError(
                    f"the same key is pinned twice for target {pin.target!r} (first at pins[{seen[key]}])",
                    path=f"pins[{i}].spki_sha256",
                    value=pin.spki_sha256,
                    fix="list each (target, spki_sha256) once; give the first one the state you want",
                )
            seen[key] = i
        if not self.tofu and not self.history and not any(p.state == "active" for p in self.pins):
            states = [p.state for p in self.pins]
            raise ConfigError(
                "a pin set needs at least one active pin",
                path="pins",
                value=states,
                fix='set state = "active" on the pin of the key in use now (keep the others as "backup"), '
                "or set tofu = true to pin the first peer's key",
            )

    # ------------------------------------------------------------ views

    def live_pins(self, now: _dt.datetime) -> tuple[Pin, ...]:
        """The pins that can match at ``now`` (not released, not expired).

        Args:
            now: the simulation's wall time.

        Returns:
            Those pins, in order.
        """
        return tuple(p for p in self.pins if p.live(now))

    def has_live_active(self, now: _dt.datetime) -> bool:
        """Whether an active pin is live at ``now``.

        Args:
            now: the simulation's wall time.

        Returns:
            True when some active pin is neither released nor expired.
        """
        return any(p.state == "active" for p in self.live_pins(now))

    # ------------------------------------------------------------ named constructor

    @classmethod
    def from_toml(cls, table: Mapping[str, object], *, path: str) -> PinSet:
        """Build a pin set from a parsed TOML table.

        The table::

            enforcement = "enforce"          # or "report_only"; default "enforce"
            tofu = false                     # default false
            pins = [
              { target = "leaf", spki_sha256 = "3f…(64 hex)", state = "active" },
              { target = "root", spki_sha256 = "9a…", state = "backup", not_after = 2031-01-01T00:00:00Z },
            ]

        Each pin takes ``target`` and ``spki_sha256`` (required), ``state`` (default ``active``),
        ``not_after`` (a TOML offset date-time or an RFC 3339 string, UTC) and ``origin`` (default
        ``config``).

        Args:
            table: the table as ``tomllib`` returns it.
            path: the table's field path in the file (``"services.csms.pins"``), prefixed to every error.

        Returns:
            The validated pin set (empty history).

        Raises:
            ConfigError: unknown keys, wrong types, bad values, duplicates, no active pin; the path names
                the field (``services.csms.pins.pins[1].spki_sha256``).
        """
        if not isinstance(table, Mapping):
            raise ConfigError("pins must be a table", path=path, value=table, fix=f"write [{path}] with keys")
        Table(table, path, ("enforcement", "tofu", "pins"))  # refuses unknown keys (did-you-mean)
        enforcement = table.get("enforcement", "enforce")
        if not isinstance(enforcement, str):
            raise ConfigError(
                "enforcement must be a string",
                path=join_path(path, "enforcement"),
                value=enforcement,
                fix='use "enforce" or "report_only"',
            )
        tofu = table.get("tofu", False)
        if not isinstance(tofu, bool):
            raise ConfigError(
                "tofu must be true or false", path=join_path(path, "tofu"), value=tofu, fix="tofu = true"
            )
        raw_pins = table.get("pins", [])
        if not isinstance(raw_pins, list):
            raise ConfigError(
                "pins must be an array of tables",
                path=join_path(path, "pins"),
                value=raw_pins,
                fix='write pins = [{ target = "leaf", spki_sha256 = "…" }]',
            )
        pins = tuple(
            _pin_from_toml(item, path=f"{join_path(path, 'pins')}[{i}]") for i, item in enumerate(raw_pins)
        )
        try:
            return cls(cast(Enforcement, enforcement), pins, (), tofu)  # checked in __attrs_post_init__
        except ConfigError as exc:
            raise rebased(exc, path) from None


def _datetime_from_toml(value: object, *, path: str) -> _dt.datetime:
    fix = "write a UTC date-time such as 2031-01-01T00:00:00Z"
    if isinstance(value, str):
        try:
            value = _dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise ConfigError("not an RFC 3339 date-time", path=path, value=value, fix=fix) from None
    if not isinstance(value, _dt.datetime):
        raise ConfigError("expected a date-time", path=path, value=value, fix=fix)
    if value.utcoffset() is None:
        raise ConfigError("the date-time has no time zone", path=path, value=value.isoformat(), fix=fix)
    return as_utc(value)


def _pin_from_toml(item: object, *, path: str) -> Pin:
    if not isinstance(item, Mapping):
        raise ConfigError(
            "a pin must be a table",
            path=path,
            value=item,
            fix='write { target = "leaf", spki_sha256 = "…" }',
        )
    Table(
        item, path, ("target", "spki_sha256", "state", "not_after", "origin")
    )  # refuses unknown keys (did-you-mean)
    for required in ("target", "spki_sha256"):
        if required not in item:
            raise ConfigError(
                f"a pin needs {required}",
                path=join_path(path, required),
                fix=f"add {required} = …"
                + (" (leaf, intermediate, root or any)" if required == "target" else f" ({_SPKI_FIX})"),
            )
    for name in ("target", "state", "origin"):
        if name in item and not isinstance(item[name], str):
            raise ConfigError(
                f"{name} must be a string", path=join_path(path, name), value=item[name], fix="quote it"
            )
    not_after = None
    if "not_after" in item:
        not_after = _datetime_from_toml(item["not_after"], path=join_path(path, "not_after"))
    try:
        return Pin(
            item["target"],  # values checked by Pin's converter and __attrs_post_init__
            item["spki_sha256"],
            item.get("state", "active"),
            not_after,
            item.get("origin", "config"),
        )
    except ConfigError as exc:
        raise rebased(exc, path, {"pin": ""}) from None


# ---------------------------------------------------------------- check


@attrs.frozen
class PinCheck:
    """The outcome of :func:`check`.

    Attributes:
        ok: whether the connection may proceed (True on a match, and always in ``report_only``).
        matched: the best live pin that matched (active before backup before pending), or None.
        events: ``("pin_mismatch",)`` when no live pin matched, else ``()``.
        reason: the ``HandshakeFailed`` reason when nothing matched (``"pin_mismatch"``; also set in
            ``report_only``, where it is only reported), else None.
        detail: human-readable explanation for logs.
        pending: the pending pins the chain matched: after the connection succeeds, pass each one's key to
            :func:`promote_pending`.
    """

    ok: bool
    matched: Pin | None
    events: tuple[str, ...]
    reason: str | None
    detail: str = ""
    pending: tuple[Pin, ...] = ()


def _candidates(
    chain: Sequence[x509.Certificate], verified: Sequence[x509.Certificate] | None
) -> dict[PinTarget, frozenset[str]]:
    """SPKI hashes offered for each pin target (see the module doc)."""
    base = tuple(verified) if verified else tuple(chain)
    if not base:
        return {t: frozenset() for t in TARGETS}
    leaf = [base[0]]
    if verified:
        inter = list(verified[1:-1])
        root = [verified[-1]]
    elif len(chain) >= 2 and is_self_signed(chain[-1]):
        inter, root = list(chain[1:-1]), [chain[-1]]
    elif len(chain) == 1 and is_self_signed(chain[0]):
        inter, root = [], [chain[0]]
    else:
        inter, root = list(chain[1:]), []

    def hashes(certs: Iterable[x509.Certificate]) -> frozenset[str]:
        return frozenset(h for h in map(spki_hex, certs) if h is not None)

    return {
        "leaf": hashes(leaf),
        "intermediate": hashes(inter),
        "root": hashes(root),
        "any": hashes([*chain, *(verified or ())]),
    }


def check(
    pinset: PinSet,
    chain: Sequence[x509.Certificate],
    *,
    now: _dt.datetime,
    verified: Sequence[x509.Certificate] | None = None,
) -> PinCheck:
    """Check a peer's chain against the live pins at ``now``.

    Never raises for any chain (an empty chain, or certificates whose key cryptography cannot load, simply
    match nothing).

    Args:
        pinset: the pins.
        chain: the peer's chain as sent, leaf first (``get_peer_cert_chain``).
        now: the simulation's wall time (pins past ``not_after`` do not count).
        verified: the verified chain, leaf to root (``get_verified_chain``), when available; it then decides
            the ``intermediate`` and ``root`` targets.

    Returns:
        The :class:`PinCheck`: ``ok`` is False only for a mismatch under ``enforce``.
    """
    live = pinset.live_pins(now)
    offered = _candidates(chain, verified)
    matches = [p for p in live if p.spki_sha256 in offered[p.target]]
    if matches:
        best = min(matches, key=lambda p: _STATE_RANK[p.state])
        pending = tuple(p for p in matches if p.state == "pending")
        return PinCheck(True, best, (), None, f"matched {best.state} {best.target} pin", pending)
    if not chain and not verified:
        detail = "the peer sent no certificate"
    elif not live:
        detail = f"no live pin ({len(pinset.pins)} pins, all released or expired)"
    else:
        detail = "no live pin matches the chain (" + ", ".join(f"{p.state} {p.target}" for p in live) + ")"
    if pinset.enforcement == "report_only":
        detail += " [report_only: allowed]"
    return PinCheck(
        pinset.enforcement == "report_only", None, (events.PIN_MISMATCH,), events.PIN_MISMATCH, detail
    )


# ---------------------------------------------------------------- transitions


def changes(old: PinSet, new: PinSet) -> tuple[PinEvent, ...]:
    """The history entries a transition added (what to log).

    Args:
        old: the set before.
        new: the set a transition returned from ``old``.

    Returns:
        The new entries, oldest first.
    """
    return new.history[len(old.history) :]


def _spki_arg(spki: str | bytes) -> str:
    return normalize_hex(
        spki, digits=SPKI_SHA256_HEX_DIGITS, path="spki_sha256", what="SPKI SHA-256", fix=_SPKI_FIX
    )


def release(pinset: PinSet, spki: str | bytes, *, at: _dt.datetime, reason: str = "operator") -> PinSet:
    """Release every not-yet-released pin of a key (an operator event).

    Args:
        pinset: the set.
        spki: the key's SPKI SHA-256 (hex or raw bytes).
        at: when (simulation wall time).
        reason: why, for the history.

    Returns:
        The new set; unchanged when the key's pins are all released already.

    Raises:
        ConfigError: ``spki`` is not a valid digest, or no pin has that key.
    """
    key = _spki_arg(spki)
    if not any(p.spki_sha256 == key for p in pinset.pins):
        raise ConfigError(
            "no pin has this key",
            path="spki_sha256",
            value=key,
            fix="use the spki_sha256 of one of the configured pins",
        )
    pins = list(pinset.pins)
    history = list(pinset.history)
    for i, pin in enumerate(pins):
        if pin.spki_sha256 == key and pin.state != "released":
            pins[i] = attrs.evolve(pin, state="released")
            history.append(PinEvent(at, events.PIN_RELEASED, key, pin.target, reason))
    if len(history) == len(pinset.history):
        return pinset
    return attrs.evolve(pinset, pins=tuple(pins), history=tuple(history))


def expire(pinset: PinSet, *, now: _dt.datetime) -> PinSet:
    """Release the pins past their ``not_after`` (expiry release).

    :func:`check` already ignores expired pins; this makes the release explicit and recorded.

    Args:
        pinset: the set.
        now: the simulation's wall time.

    Returns:
        The new set (the same object when nothing expired).
    """
    expired = [i for i, p in enumerate(pinset.pins) if p.state != "released" and p.expired(now)]
    if not expired:
        return pinset
    pins = list(pinset.pins)
    history = list(pinset.history)
    for i in expired:
        pin = pins[i]
        pins[i] = attrs.evolve(pin, state="released")
        history.append(PinEvent(now, events.PIN_RELEASED, pin.spki_sha256, pin.target, "expired"))
    return attrs.evolve(pinset, pins=tuple(pins), history=tuple(history))


def promote_pending(pinset: PinSet, *, at: _dt.datetime, spki: str | bytes | None = None) -> PinSet:
    """Promote pending pins after a successful connection that matched one (:attr:`PinCheck.pending`).

    Each promoted pin becomes ``active``; the active pins with the same target are released (the new key
    replaces them, as OCPP's root rollover keeps the old root only until the first successful connection).

    Args:
        pinset: the set.
        at: when (simulation wall time); pending pins expired at ``at`` are not promoted.
        spki: promote only the pending pins of this key; None = every live pending pin.

    Returns:
        The new set (the same object when nothing was pending).

    Raises:
        ConfigError: ``spki`` is not a valid digest.
    """
    key = None if spki is None else _spki_arg(spki)
    promote = [
        i
        for i, p in enumerate(pinset.pins)
        if p.state == "pending" and p.live(at) and (key is None or p.spki_sha256 == key)
    ]
    if not promote:
        return pinset
    pins = list(pinset.pins)
    history = list(pinset.history)
    promoted: dict[str, str] = {}  # target -> promoted key (for the release reason)
    for i in promote:
        pin = pins[i]
        pins[i] = attrs.evolve(pin, state="active")
        promoted.setdefault(pin.target, pin.spki_sha256)
        history.append(PinEvent(at, events.PIN_PROMOTED, pin.spki_sha256, pin.target, "pending pin matched"))
    for i, pin in enumerate(pins):
        if i not in promote and pin.state == "active" and pin.target in promoted:
            pins[i] = attrs.evolve(pin, state="released")
            reason = f"replaced by promoted pin {promoted[pin.target][:16]}…"
            history.append(PinEvent(at, events.PIN_RELEASED, pin.spki_sha256, pin.target, reason))
    return attrs.evolve(pinset, pins=tuple(pins), history=tuple(history))


def _pin_leaf(pinset: PinSet, leaf_spki: str, *, at: _dt.datetime, origin: PinOrigin, reason: str) -> PinSet:
    """Make ``(leaf, leaf_spki)`` an active pin (reusing an existing entry for that key)."""
    pins = list(pinset.pins)
    new = Pin("leaf", leaf_spki, "active", None, origin)
    for i, pin in enumerate(pins):
        if pin.target == "leaf" and pin.spki_sha256 == leaf_spki:
            pins[i] = new
            break
    else:
        pins.append(new)
    event = PinEvent(at, PIN_ADDED, leaf_spki, "leaf", reason)
    return attrs.evolve(pinset, pins=tuple(pins), history=(*pinset.history, event))


def add_tofu(pinset: PinSet, chain: Sequence[x509.Certificate], *, now: _dt.datetime) -> PinSet:
    """Trust on first use: pin the peer's leaf key when a ``tofu`` set has no live active pin.

    Call it after the chain, time and hostname checks passed and before :func:`check` (which then matches).

    Args:
        pinset: the set.
        chain: the peer's chain, leaf first.
        now: the simulation's wall time.

    Returns:
        The new set with an active ``leaf`` pin of origin ``tofu`` (and a ``pin_added`` history entry), or
        the same object when the set is not ``tofu``, already has a live active pin, the chain is empty,
        or the leaf's key cannot be loaded.
    """
    if not pinset.tofu or not chain or pinset.has_live_active(now):
        return pinset
    leaf_spki = spki_hex(chain[0])
    if leaf_spki is None:
        return pinset
    return _pin_leaf(pinset, leaf_spki, at=now, origin="tofu", reason="trust on first use")


def repin(
    pinset: PinSet, leaf: x509.Certificate, *, at: _dt.datetime, reason: str = "peer key changed"
) -> PinSet:
    """Pin a peer's new leaf key after :mod:`evsim.tls.change` decided ``accept_and_repin``.

    Only learned pins are replaced: active ``leaf`` pins of origin ``tofu`` or ``pairing`` with another key
    are released. Pins from the configuration are never touched (an operator's pin is not overridden by the
    peer), so :func:`check` still decides against them.

    Args:
        pinset: the set.
        leaf: the peer's new leaf certificate.
        at: when (simulation wall time).
        reason: why, for the history.

    Returns:
        The new set (the same object when the leaf's key is already pinned as active, or cannot be loaded).
    """
    leaf_spki = spki_hex(leaf)
    if leaf_spki is None:
        return pinset
    if any(p.target == "leaf" and p.spki_sha256 == leaf_spki and p.state == "active" for p in pinset.pins):
        return pinset
    pins = list(pinset.pins)
    history = list(pinset.history)
    for i, pin in enumerate(pins):
        if pin.target == "leaf" and pin.state == "active" and pin.origin != "config":
            pins[i] = attrs.evolve(pin, state="released")
            history.append(PinEvent(at, events.PIN_RELEASED, pin.spki_sha256, "leaf", reason))
    released = attrs.evolve(pinset, pins=tuple(pins), history=tuple(history))
    return _pin_leaf(released, leaf_spki, at=at, origin="tofu", reason=reason)
