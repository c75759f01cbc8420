"""NTS cookies as this server makes them, and the master keys they are sealed under, sans-IO.

A cookie is opaque to the client and carries the association's keys back to the server, so the server keeps
no per-client state (RFC 8915 §6). This server's format::

    key id (u32) | nonce (16 octets) | AES-SIV-CMAC-256(master key, AD = [key id, nonce],
                                                        plaintext = AEAD id (u16) | 0 (u16) | C2S | S2C)

Its length (104 octets for AEAD_AES_SIV_CMAC_256) is a multiple of 4, so the cookie is the whole value of an
NTS Cookie extension field, padding-free.

:class:`MasterKeys` holds the newest ``keep`` master keys under random 32-bit ids; :meth:`MasterKeys.rotate`
(or :meth:`MasterKeys.maybe_rotate` every ``rotate_s`` seconds) adds a new one and forgets the oldest, so a
cookie stays usable for ``(keep - 1) * rotate_s`` to ``keep * rotate_s`` seconds. A cookie under a forgotten
key, from another server, or altered in any way does not open (:meth:`MasterKeys.open` returns None): the NTP
server then answers with an NTSN kiss-o'-death and the client runs NTS-KE again.
"""

from __future__ import annotations

import os
import struct
from collections import OrderedDict
from collections.abc import Callable

import attrs
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from evsim.errors import ConfigError
from evsim.nts.records import KEY_LENGTHS

__all__ = ["COOKIE_NONCE", "CookieContent", "MasterKeys"]

COOKIE_NONCE = 16
_MASTER_KEY = 32  # AES-SIV-CMAC-256 over the cookie plaintext


@attrs.frozen
class CookieContent:
    """What a cookie carries: the association's AEAD algorithm and keys."""

    aead: int
    c2s: bytes = attrs.field(repr=False)
    s2c: bytes = attrs.field(repr=False)
    key_id: int = 0


class MasterKeys:
    """The server's cookie keys.

    Args:
        keep: master keys kept (the current one and ``keep - 1`` older ones).
        rotate_s: seconds between rotations done by :meth:`maybe_rotate` (None: only :meth:`rotate`).
        entropy: the random source (``os.urandom``; tests pass a seeded one).
        now: the time of the first key (for :meth:`maybe_rotate`).
    """

    def __init__(
        self,
        *,
        keep: int = 3,
        rotate_s: float | None = 3600.0,
        entropy: Callable[[int], bytes] = os.urandom,
        now: float = 0.0,
    ) -> None:
        if keep < 1:
            raise ConfigError("keep must be >= 1", path="keep", value=keep)
        if rotate_s is not None and not rotate_s > 0:
            raise ConfigError("rotate_s must be > 0", path="rotate_s", value=rotate_s)
        self._keep = keep
        self._rotate_s = rotate_s
        self._entropy = entropy
        self._keys: OrderedDict[int, AESSIV] = OrderedDict()
        self._rotated_at = now
        self.rotations = 0
        self.rotate(now)
        self.rotations = 0

    @property
    def current_id(self) -> int:
        return next(reversed(self._keys))

    @property
    def key_ids(self) -> tuple[int, ...]:
        """The ids kept, oldest first."""
        return tuple(self._keys)

    def rotate(self, now: float | None = None) -> int:
        """Make a new current key, forget the oldest beyond ``keep``; return the new id."""
        while True:
            key_id = int.from_bytes(self._entropy(4), "big")
            if key_id not in self._keys:
                break
        self._keys[key_id] = AESSIV(self._entropy(_MASTER_KEY))
        while len(self._keys) > self._keep:
            self._keys.popitem(last=False)
        if now is not None:
            self._rotated_at = now
        self.rotations += 1
        return key_id

    def maybe_rotate(self, now: float) -> bool:
        """Rotate when ``rotate_s`` passed since the last rotation; True when it did."""
        if self._rotate_s is None or now - self._rotated_at < self._rotate_s:
            return False
        self.rotate(now)
        return True

    def next_rotation(self) -> float | None:
        """When :meth:`maybe_rotate` rotates next (None: never)."""
        return None if self._rotate_s is None else self._rotated_at + self._rotate_s

    def seal(self, aead: int, c2s: bytes, s2c: bytes) -> bytes:
        """A new cookie for the association (a fresh nonce each time: two cookies never look alike)."""
        if aead not in KEY_LENGTHS or len(c2s) != KEY_LENGTHS[aead] or len(s2c) != KEY_LENGTHS[aead]:
            raise ValueError("keys do not match the AEAD algorithm")
        key_id = self.current_id
        head = struct.pack("!I", key_id)
        nonce = self._entropy(COOKIE_NONCE)
        sealed = self._keys[key_id].encrypt(struct.pack("!HH", aead, 0) + c2s + s2c, [head, nonce])
        return head + nonce + sealed

    def open(self, cookie: bytes) -> CookieContent | None:
        """The content of a cookie this server made under a key it still has; None otherwise."""
        if len(cookie) < 4 + COOKIE_NONCE + 16 + 4:
            return None
        key_id = int(struct.unpack_from("!I", cookie)[0])
        key = self._keys.get(key_id)
        if key is None:
            return None
        nonce = cookie[4 : 4 + COOKIE_NONCE]
        try:
            plain = key.decrypt(cookie[4 + COOKIE_NONCE :], [cookie[:4], nonce])
        except InvalidTag:
            return None
        aead, reserved = struct.unpack_from("!HH", plain)
        length = KEY_LENGTHS.get(aead)
        if length is None or reserved or len(plain) != 4 + 2 * length:
            return None
        return CookieContent(aead, plain[4 : 4 + length], plain[4 + length :], key_id)
