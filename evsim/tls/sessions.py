"""The client's session store: which session to offer for the next connection, expired in simulation time.

Theory of operation
-------------------
OpenSSL's client side keeps no session cache of its own that evsim could use (and its session times are
the machine's wall clock), so a client endpoint owns a :class:`SessionStore`. ``tls_connect(...,
sessions=store)``:

1. asks :meth:`SessionStore.offer` for a session under the key of (profile, trust store, identity, server
   name) - so a session never crosses trust configurations: a CRL refresh or a new root is a new
   ``TrustStore`` value and therefore a new key;
2. after the handshake, and again after the first application data was read (TLS 1.3 tickets arrive only
   after the handshake, RFC 8446 §4.6.1), :meth:`SessionStore.save` keeps the connection's session.

Each entry remembers the simulation time (``trio.current_time()``, virtual under ``MockClock``) of the full
handshake that established it; a resumed handshake keeps that time (its new ticket carries the original
authentication, so its age counts from there - a conservative reading of RFC 8446 §4.6.1's lifetime
rules). :meth:`offer` refuses - and drops -
an entry older than ``profile.session.lifetime_s``, so resumption ends on time in virtual time too. The
server's own limit (``SSL_CTX_set_timeout``) counts the machine's wall clock, which barely moves in a
virtual run: the client store is what makes lifetimes hold there.

Close connections with ``aclose`` (close_notify): OpenSSL marks the session of a connection freed without
a shutdown as not resumable (``SSL_free`` -> ``ssl_clear_bad_session``), in the client's object too.

With ``resumption = "off"`` in the client's profile nothing is stored or offered. The store is bounded
(``session.cache_entries``, least recently used dropped first).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

import attrs

from evsim.tls.config import DEFAULT_CACHE_ENTRIES, Identity, TlsProfile
from evsim.tls.trust import TrustStore

if TYPE_CHECKING:  # the stream imports this module
    from evsim.tls.context import ClientTls
    from evsim.tls.stream import TlsSession

SessionKey = tuple[TlsProfile, TrustStore, Identity | None, str | None]


@attrs.frozen
class SessionStoreStatistics:
    """A snapshot of a :class:`SessionStore`.

    Attributes:
        entries: sessions held.
        offered: sessions handed out for resumption.
        expired: sessions refused (and dropped) because they outlived ``lifetime_s``.
        evicted: sessions dropped to stay within ``max_entries``.
    """

    entries: int
    offered: int
    expired: int
    evicted: int


@attrs.define
class _Entry:
    session: TlsSession
    established_at: float


class SessionStore:
    """Sessions to resume, per (profile, trust, identity, server name), expired in simulation time.

    Args:
        max_entries: bound (least recently used dropped first); a profile's ``session.cache_entries`` is
            applied too (the smaller wins).
    """

    def __init__(self, max_entries: int = DEFAULT_CACHE_ENTRIES) -> None:
        self._max = max_entries
        self._entries: OrderedDict[SessionKey, _Entry] = OrderedDict()
        self._offered = 0
        self._expired = 0
        self._evicted = 0

    @staticmethod
    def key(client_tls: ClientTls, server_hostname: str | None) -> SessionKey:
        """The key of a connection: its whole configuration and the name it connects to."""
        return (client_tls.profile, client_tls.trust, client_tls.identity, server_hostname)

    def offer(self, client_tls: ClientTls, server_hostname: str | None, *, now: float) -> TlsSession | None:
        """The session to offer for a new connection, or None (none, expired, or resumption off).

        Args:
            client_tls: the connection's configuration.
            server_hostname: the name it connects to.
            now: simulation time (``trio.current_time()``).

        Returns:
            A session younger than ``lifetime_s``, or None.
        """
        policy = client_tls.profile.session
        if policy.resumption == "off":
            return None
        k = self.key(client_tls, server_hostname)
        entry = self._entries.get(k)
        if entry is None:
            return None
        if now - entry.established_at > policy.lifetime_s:
            del self._entries[k]
            self._expired += 1
            return None
        self._entries.move_to_end(k)
        self._offered += 1
        return entry.session

    def save(
        self,
        client_tls: ClientTls,
        server_hostname: str | None,
        session: TlsSession,
        *,
        now: float,
        resumed: bool,
    ) -> None:
        """Keep ``session`` for the next connection.

        Args:
            client_tls: the connection's configuration.
            server_hostname: the name it connected to.
            session: the connection's current session.
            now: simulation time.
            resumed: the connection resumed the stored session (the entry keeps its original time).
        """
        policy = client_tls.profile.session
        if policy.resumption == "off":
            return
        k = self.key(client_tls, server_hostname)
        old = self._entries.get(k)
        established = old.established_at if (resumed and old is not None) else now
        self._entries[k] = _Entry(session, established)
        self._entries.move_to_end(k)
        bound = min(self._max, policy.cache_entries)
        while len(self._entries) > bound:
            self._entries.popitem(last=False)
            self._evicted += 1

    def forget(self, client_tls: ClientTls, server_hostname: str | None) -> None:
        """Drop the session of one key (e.g. after the server refused to resume it)."""
        self._entries.pop(self.key(client_tls, server_hostname), None)

    def statistics(self) -> SessionStoreStatistics:
        """A snapshot of the counters."""
        return SessionStoreStatistics(len(self._entries), self._offered, self._expired, self._evicted)
