"""A service reachable at several endpoints, and the helper that connects to it with failover.

A :class:`Service` (the CSMS, a firmware server, a log server, NTS-KE...) lists :class:`Endpoint`\\ s, each with
its own URL, priority, TLS profile, trust store, client identity, SNI name, peer policy (pins, change policy)
and number of connection attempts (OCPP ``NetworkProfileConnectionAttempts``), plus a failover policy and the OCPP reconnect back-off
(``RetryBackOff*``).

Two layers, so the decisions are testable without I/O:

* :class:`EndpointPlanner` (sans-IO) decides which endpoint to try next and how long to wait first.
  ``next_attempt(now)`` is a pure query; ``report(endpoint, ok, reason, now)`` advances the state and records
  the attempt.
* :func:`connect_service` (trio) walks the planner: network connect, TLS handshake (at the simulation's
  time), an optional caller-supplied ``setup`` step (e.g. the WebSocket upgrade); a
  :class:`~evsim.errors.TransportError` on the way is one failed attempt, categorised with
  :func:`evsim.errors.failure_reason`.

Failover rules (all policies)
-----------------------------
Endpoints are ordered by ``(priority, position in the service)``, lower priority first. An endpoint is tried
``attempts`` times in a row before the planner moves on to the next one in that order (cyclically). One
:class:`~evsim.backoff.BackOffSchedule` paces the retries:

* retrying the *same* endpoint waits the next back-off value (OCPP: wait after each failed attempt);
* moving to a *different* endpoint in the middle of a pass is immediate (another server, no reason to wait);
* after a full pass (every endpoint exhausted since the last success) the planner waits the next back-off
  value, so the wait grows across passes (doubling, ``RetryBackOffRepeatTimes`` doublings at most);
* a success resets the back-off (errata 2025-04). The next attempt after a success is a *reconnect* (the
  caller lost the connection) and waits ``RetryBackOffWaitMinimum + U(0..RetryBackOffRandomRange)``; pass
  ``wait_after_success=False`` for one-shot uses (downloads) where a new connection is not a reconnect.

Where the planner goes after a success is the policy:

* ``priority``: back to the highest-priority endpoint (B10.FR.04 / FR.08 style: always prefer the first
  entry), so every failure pass starts from the top. Priorities must be unique under this policy: the order
  *is* the configuration, and a tie would silently fall back to list order.
* ``round_robin``: on to the next endpoint, success or not (spreads load; ties allowed).
* ``sticky``: stay on the endpoint that worked; move only on failure, cyclically, so a failure pass ends
  back at the last good endpoint (B10.FR.07 style). Ties allowed.

SNI
---
:func:`~evsim.tls.stream.tls_connect` takes *one* name that is both sent as SNI and checked against the
server certificate (it sends no SNI for IP literals). So ``sni = "host.name"`` means "present and verify this
name" (e.g. connect to an IP address, verify the CSMS FQDN), and ``sni = "off"`` is only accepted when the
trust store checks no hostname anyway (``hostname = "off"`` or ``insecure_skip_verify``): turning SNI off
otherwise would silently turn the hostname check off too.
"""

from __future__ import annotations

import collections
import datetime
import math
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Generic, Literal, Protocol, TypeAlias, TypeVar, overload

import attrs
import trio

from evsim.backoff import Attempt, BackOffSchedule, RetryBackOff
from evsim.clock import SimClock
from evsim.errors import ConfigError, TransportError, failure_reason
from evsim.net.base import Network
from evsim.tls.config import Identity, TlsProfile
from evsim.tls.context import ClientTls
from evsim.tls.peer import EventSink as PeerEventSink
from evsim.tls.peer import PeerPolicy, require_policy
from evsim.tls.stream import TlsInfo, TlsStream, tls_connect
from evsim.tls.trust import TrustStore
from evsim.toml_table import Table, choices_fix, rebased
from evsim.urls import HTTP_SCHEMES, WS_SCHEMES, parse_url

__all__ = [
    "POLICIES",
    "Endpoint",
    "EndpointPlanner",
    "EventSink",
    "FailoverPolicy",
    "Service",
    "ServiceConnection",
    "ServiceUnavailable",
    "TlsNames",
    "connect_service",
]

FailoverPolicy: TypeAlias = Literal["priority", "round_robin", "sticky"]
POLICIES: tuple[FailoverPolicy, ...] = ("priority", "round_robin", "sticky")
"""The failover policies, in the spelling scenario files use."""

SNI_OFF = "off"
"""The ``sni`` value that sends no server name."""

_SCHEMES_WITH_TLS = frozenset({"wss", "https"})
_PLAIN_TWIN = {"wss": "ws", "https": "http"}

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


# ---------------------------------------------------------------- model


@attrs.frozen(eq=False)
class TlsNames:
    """Named parts of the TLS model that endpoint tables refer to (``profile = "strict"``), as the scenario
    loader holds them.

    Args:
        profiles: name -> profile.
        trust: name -> trust store.
        identities: name -> client identity.
    """

    profiles: Mapping[str, TlsProfile] = attrs.field(factory=dict)
    trust: Mapping[str, TrustStore] = attrs.field(factory=dict)
    identities: Mapping[str, Identity] = attrs.field(factory=dict)

    def profile(self, name: str, *, path: str) -> TlsProfile:
        """The profile called ``name``.

        Raises:
            ConfigError: no such profile (with a did-you-mean), at ``path``.
        """
        return _lookup(self.profiles, name, path=path, what="TLS profile")

    def trust_store(self, name: str, *, path: str) -> TrustStore:
        """The trust store called ``name``.

        Raises:
            ConfigError: no such trust store (with a did-you-mean), at ``path``.
        """
        return _lookup(self.trust, name, path=path, what="trust store")

    def identity(self, name: str, *, path: str) -> Identity:
        """The identity called ``name``.

        Raises:
            ConfigError: no such identity (with a did-you-mean), at ``path``.
        """
        return _lookup(self.identities, name, path=path, what="identity")


def _lookup(table: Mapping[str, T], name: str, *, path: str, what: str) -> T:
    if name in table:
        return table[name]
    fix = choices_fix(name, sorted(table)) if table else f"define the {what} first"
    raise ConfigError(f"unknown {what}", path=path, value=name, fix=fix)


def _check_int(value: object, *, path: str, minimum: int | None, fix: str) -> None:
    """Raise a ConfigError unless ``value`` is an int (not a bool) of at least ``minimum``."""
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if not is_int or (minimum is not None and isinstance(value, int) and value < minimum):
        what = "an integer" if minimum is None else f"an integer >= {minimum}"
        raise ConfigError(f"must be {what}", path=path, value=value, fix=fix)


@attrs.frozen
class Endpoint:
    """One way to reach a service: URL, TLS settings and how often to try it.

    Args:
        name: unique within the service (logs, events, ``Attempt.endpoint``), e.g. ``"primary"``.
        url: ``ws://`` or ``wss://`` URL (path included, station identity not appended); a file service
            (firmware, logs) uses ``http://`` or ``https://`` (path: the base the file path goes under).
        priority: lower is tried first (OCPP ``NetworkConfigurationPriority`` order).
        profile: how to speak TLS; must stay the default for ``ws://`` / ``http://`` (nothing would apply it).
        trust: whom to trust; required for ``wss://`` / ``https://``, forbidden without TLS.
        identity: our client certificate (security profile 3), or None; forbidden without TLS.
        sni: the server name to send and verify; None = the URL host; ``"off"`` = send none (only with a
            trust store that checks no hostname, see the module docstring); forbidden for ``ws://``.
        attempts: connection attempts in a row before moving on (``NetworkProfileConnectionAttempts``).
        peer: this endpoint's client-side peer policy (its own pins, change policy, pairing list), bound to
            its compiled context; a mutable holder, so not part of equality. Forbidden for ``ws://``.

    Raises:
        ConfigError: empty name, a URL that is not ws/wss/http/https (or has no host, a bad port, credentials),
            ``wss://`` without a trust store, TLS settings (trust, identity, SNI, a non-default profile) on a
            ``ws://`` URL, a bad SNI value, ``"off"`` SNI with a hostname check, a non-integer priority, or
            ``attempts < 1``.
    """

    name: str
    url: str
    priority: int = 0
    profile: TlsProfile = attrs.field(factory=TlsProfile)
    trust: TrustStore | None = None
    identity: Identity | None = None
    sni: str | None = None
    attempts: int = 1
    peer: PeerPolicy | None = attrs.field(default=None, eq=False, repr=False)
    scheme: str = attrs.field(init=False, eq=False, repr=False)
    host: str = attrs.field(init=False, eq=False, repr=False)
    port: int = attrs.field(init=False, eq=False, repr=False)
    path: str = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        where = f"endpoint.{self.name}"
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(
                "an endpoint needs a name", path="endpoint.name", value=self.name, fix='e.g. name = "primary"'
            )
        try:
            scheme, host, port, path = parse_url(self.url, schemes=WS_SCHEMES + HTTP_SCHEMES)
        except ConfigError as exc:
            raise ConfigError(exc.message, path=f"{where}.url", value=self.url, fix=exc.fix) from None
        object.__setattr__(self, "scheme", scheme)
        object.__setattr__(self, "host", host)
        object.__setattr__(self, "port", port)
        object.__setattr__(self, "path", path)
        _check_int(self.priority, path=f"{where}.priority", minimum=None, fix="use e.g. 0 (first), 1, 2...")
        _check_int(
            self.attempts,
            path=f"{where}.attempts",
            minimum=1,
            fix="NetworkProfileConnectionAttempts: use e.g. 3",
        )
        if self.secure:
            self._check_tls(where)
        else:
            for field, value in (
                ("trust", self.trust),
                ("identity", self.identity),
                ("sni", self.sni),
                ("peer", self.peer),
                ("profile", None if self.profile == TlsProfile() else self.profile),
            ):
                if value is not None:
                    raise ConfigError(
                        f"{field} is a TLS setting but {self.scheme}:// does not use TLS",
                        path=f"{where}.{field}",
                        value=value if field == "sni" else None,
                        fix=f"remove {field}, or use a {self.scheme}s:// URL",
                    )

    def _check_tls(self, where: str) -> None:
        if self.trust is None:
            raise ConfigError(
                f"a {self.scheme}:// endpoint needs a trust store to verify the server",
                path=f"{where}.trust",
                fix="give the CSMS root trust store (e.g. CSMSRootCertificate), "
                f"or use {_PLAIN_TWIN[self.scheme]}://",
            )
        if self.peer is not None and not isinstance(self.peer, PeerPolicy):
            raise ConfigError("peer must be a PeerPolicy", path=f"{where}.peer", value=self.peer)
        try:
            require_policy(self.peer, self.trust.mode, side="client")
        except ConfigError as exc:
            raise rebased(exc, where) from None
        sni = self.sni
        if sni is None:
            return
        if not isinstance(sni, str) or not sni or any(c.isspace() or c in "/@" for c in sni):
            raise ConfigError(
                "sni must be a host name, or off",
                path=f"{where}.sni",
                value=sni,
                fix='use e.g. sni = "csms.evsim.test", sni = "off", or leave it out (URL host)',
            )
        if sni == SNI_OFF and self.trust.hostname != "off" and not self.trust.insecure_skip_verify:
            raise ConfigError(
                "SNI cannot be turned off while the server hostname is checked: the TLS engine sends "
                "and verifies one and the same name, so no SNI would also mean no hostname check",
                path=f"{where}.sni",
                value=sni,
                fix=f'remove sni (send the URL host), or also set hostname = "off" in trust {self.trust.name}',
            )

    @property
    def secure(self) -> bool:
        """True for ``wss://`` and ``https://`` (TLS)."""
        return self.scheme in _SCHEMES_WITH_TLS

    @property
    def kind(self) -> Literal["ws", "http"]:
        """``"ws"`` for an OCPP-J (WebSocket) endpoint, ``"http"`` for a file-transfer endpoint."""
        return "http" if self.scheme in HTTP_SCHEMES else "ws"

    @property
    def server_name(self) -> str | None:
        """The name given to the TLS handshake (SNI and certificate check); None = none."""
        if not self.secure or self.sni == SNI_OFF:
            return None
        return self.sni if self.sni is not None else self.host

    def client_tls(self) -> ClientTls | None:
        """The compiled TLS client configuration (cached by :meth:`ClientTls.build`); None without TLS.

        Returns:
            The configuration built from ``profile``, ``trust`` and ``identity``, with ``peer`` bound.

        Raises:
            ConfigError: the OpenSSL build refuses the profile's suites.
        """
        if self.trust is None:
            return None
        return ClientTls.build(self.profile, self.trust, self.identity, peer=self.peer)

    _TOML_KEYS = ("name", "url", "priority", "profile", "trust", "identity", "sni", "attempts", "peer")

    @classmethod
    def from_toml(
        cls,
        table: Mapping[str, object],
        *,
        path: str,
        names: TlsNames,
        at: datetime.datetime | None = None,
        sink: PeerEventSink | None = None,
    ) -> Endpoint:
        """Build an endpoint from a parsed TOML table; profile, trust and identity are *names* in ``names``.

        The table::

            name = "primary"                        # default: the table's own name (last part of path)
            url = "wss://csms.evsim.test/ocpp"
            priority = 0
            profile = "strict"                      # names.profiles (default: TlsProfile())
            trust = "CSMSRootCertificate"           # names.trust
            identity = "ChargingStationCertificate" # names.identities (security profile 3)
            sni = "csms.evsim.test"                 # or "off"
            attempts = 3
            [peer]                                  # PeerPolicy.from_toml, side "client": this endpoint's
            pins = { enforcement = "enforce", pins = [{ target = "leaf", spki_sha256 = "…" }] }

        Args:
            table: the table as ``tomllib`` returns it.
            path: its field path (``csms_service.endpoints[0]``), prefixed to every error.
            names: the named profiles, trust stores and identities.
            at: the simulation's start (``since`` of listed pairing peers); needed with a ``peer`` table.
            sink: receives the endpoint policy's events.

        Returns:
            The validated endpoint (with its own fresh :class:`~evsim.tls.peer.PeerPolicy` when the table
            has ``peer``).

        Raises:
            ConfigError: unknown keys (did-you-mean), wrong types, unknown names (did-you-mean), and every
                validation error of the class, with the field path under ``path``.
        """
        t = Table(table, path, cls._TOML_KEYS)
        name = t.string("name", path.rpartition(".")[2] or "endpoint")
        if not t.has("url"):
            raise ConfigError(
                "an endpoint needs a url", path=t.where("url"), fix='add url = "wss://host/ocpp"'
            )
        profile = (
            names.profile(t.string("profile", ""), path=t.where("profile"))
            if t.has("profile")
            else TlsProfile()
        )
        trust = names.trust_store(t.string("trust", ""), path=t.where("trust")) if t.has("trust") else None
        identity = (
            names.identity(t.string("identity", ""), path=t.where("identity")) if t.has("identity") else None
        )
        peer = None
        if t.has("peer"):
            if at is None:
                raise ConfigError(
                    "a peer table needs the simulation's start time",
                    path=t.where("peer"),
                    fix="pass at= to from_toml",
                )
            peer_table = t.data["peer"]
            if not isinstance(peer_table, Mapping):
                raise ConfigError(
                    "expected a table", path=t.where("peer"), value=peer_table, fix="write [peer]"
                )
            peer = PeerPolicy.from_toml(peer_table, path=t.where("peer"), side="client", at=at, sink=sink)
        priority = t.optional_integer("priority")
        attempts = t.optional_integer("attempts")
        try:
            return cls(
                name,
                t.string("url", ""),
                0 if priority is None else priority,
                profile,
                trust,
                identity,
                (t.optional_string("sni", allow_empty=True) or None),
                1 if attempts is None else attempts,
                peer,
            )
        except ConfigError as exc:
            raise rebased(exc, path, {f"endpoint.{name}": "", "endpoint": ""}) from None


def _to_endpoints(value: Endpoint | Iterable[Endpoint]) -> tuple[Endpoint, ...]:
    if isinstance(value, Endpoint):
        return (value,)
    return tuple(value)


@attrs.frozen
class Service:
    """A service reachable at several endpoints, with a failover policy and the OCPP back-off.

    Args:
        name: a label (``"csms"``, ``"firmware"``); the default event source of :func:`connect_service`.
        endpoints: at least one; names unique.
        policy: ``"priority"``, ``"round_robin"`` or ``"sticky"`` (see the module docstring).
        backoff: the ``OCPPCommCtrlr.RetryBackOff*`` values.

    Raises:
        ConfigError: no endpoints, something that is not an :class:`Endpoint`, duplicate names, an unknown
            policy, or (``priority`` policy) two endpoints with the same priority.
    """

    name: str
    endpoints: tuple[Endpoint, ...] = attrs.field(converter=_to_endpoints)
    policy: FailoverPolicy = "priority"
    backoff: RetryBackOff = attrs.field(factory=RetryBackOff)
    ordered: tuple[Endpoint, ...] = attrs.field(init=False, eq=False, repr=False)
    """The endpoints sorted by ``(priority, position)``: the order the planner walks."""

    @property
    def kind(self) -> Literal["ws", "http"]:
        """What its endpoints speak: ``"ws"`` (OCPP-J) or ``"http"`` (file transfers)."""
        return self.endpoints[0].kind

    def __attrs_post_init__(self) -> None:
        where = f"service.{self.name}"
        if self.policy not in POLICIES:
            raise ConfigError(
                "unknown failover policy",
                path=f"{where}.policy",
                value=self.policy,
                fix=f"use one of {', '.join(POLICIES)}",
            )
        if not self.endpoints:
            raise ConfigError(
                "a service needs at least one endpoint",
                path=f"{where}.endpoints",
                value=[],
                fix='add an endpoint, e.g. {name = "primary", url = "wss://csms.evsim.test/ocpp"}',
            )
        names: set[str] = set()
        priorities: dict[int, str] = {}
        for i, ep in enumerate(self.endpoints):
            if not isinstance(ep, Endpoint):
                raise ConfigError(
                    "not an endpoint",
                    path=f"{where}.endpoints[{i}]",
                    value=ep,
                    fix="build it with Endpoint(...)",
                )
            if ep.kind != self.endpoints[0].kind:
                raise ConfigError(
                    "a service's endpoints are all WebSocket (ws/wss) or all file transfer (http/https)",
                    path=f"{where}.endpoints[{i}].url",
                    value=ep.url,
                    fix=f"use a {self.endpoints[0].kind} URL, or put this endpoint in a service of its own",
                )
            if ep.name in names:
                raise ConfigError(
                    "duplicate endpoint name",
                    path=f"{where}.endpoints[{i}].name",
                    value=ep.name,
                    fix="give every endpoint of a service its own name",
                )
            names.add(ep.name)
            if self.policy == "priority":
                other = priorities.get(ep.priority)
                if other is not None:
                    raise ConfigError(
                        f"endpoints {other} and {ep.name} have the same priority; with the priority policy "
                        "the order must be explicit",
                        path=f"{where}.endpoints[{i}].priority",
                        value=ep.priority,
                        fix="give each endpoint its own priority (lower is tried first), or use "
                        'policy = "round_robin"',
                    )
                priorities[ep.priority] = ep.name
        order = sorted(range(len(self.endpoints)), key=lambda i: (self.endpoints[i].priority, i))
        object.__setattr__(self, "ordered", tuple(self.endpoints[i] for i in order))

    _TOML_KEYS = ("name", "endpoints", "policy", "backoff")
    _BACKOFF_KEYS = ("wait_minimum", "random_range", "repeat_times")

    @classmethod
    def from_toml(
        cls,
        table: Mapping[str, object],
        *,
        path: str,
        names: TlsNames,
        at: datetime.datetime | None = None,
        sink: PeerEventSink | None = None,
    ) -> Service:
        """Build a service from a parsed TOML table (endpoints through :meth:`Endpoint.from_toml`).

        The table::

            name = "csms"                           # default: the table's own name
            policy = "priority"                     # priority | round_robin | sticky
            backoff = { wait_minimum = 3, random_range = 3, repeat_times = 4 }   # OCPP RetryBackOff*
            [[endpoints]]
            name = "primary"
            url = "wss://csms-a.evsim.test/ocpp"
            trust = "CSMSRootCertificate"
            [[endpoints]]
            name = "secondary"
            url = "wss://csms-b.evsim.test/ocpp"
            priority = 1
            trust = "CSMSRootCertificate"

        Args:
            table: the table as ``tomllib`` returns it.
            path: its field path, prefixed to every error.
            names: the named profiles, trust stores and identities the endpoints refer to.
            at: the simulation's start (for endpoint ``peer`` tables).
            sink: receives the endpoint policies' events.

        Returns:
            The validated service.

        Raises:
            ConfigError: unknown keys (did-you-mean), wrong types, unknown names, and every validation
                error of the class and its endpoints, with the field path under ``path``.
        """
        t = Table(table, path, cls._TOML_KEYS)
        name = t.string("name", path.rpartition(".")[2] or "service")
        raw = t.data.get("endpoints", [])
        if not isinstance(raw, list):
            raise ConfigError(
                "expected an array of endpoint tables",
                path=t.where("endpoints"),
                value=raw,
                fix="write [[endpoints]]",
            )
        endpoints = tuple(
            Endpoint.from_toml(item, path=f"{t.where('endpoints')}[{i}]", names=names, at=at, sink=sink)
            for i, item in enumerate(raw)
        )
        b = t.table("backoff", cls._BACKOFF_KEYS)
        default = RetryBackOff()
        repeat = b.optional_integer("repeat_times")
        values = (
            b.number("wait_minimum", default.wait_minimum),
            b.number("random_range", default.random_range),
            default.repeat_times if repeat is None else repeat,
        )
        for key, value in zip(cls._BACKOFF_KEYS, values, strict=True):
            if value < 0:
                raise ConfigError("must be >= 0", path=b.where(key), value=value, fix="use e.g. 3")
        policy = t.enum("policy", POLICIES, "priority")
        try:
            return cls(name, endpoints, policy, RetryBackOff(*values))
        except ConfigError as exc:
            raise rebased(exc, path, {f"service.{name}": ""}) from None

    def endpoint(self, name: str) -> Endpoint:
        """The endpoint called ``name``.

        Raises:
            KeyError: no such endpoint.
        """
        for ep in self.endpoints:
            if ep.name == name:
                return ep
        raise KeyError(name)


# ---------------------------------------------------------------- planner (sans-IO)


class EndpointPlanner:
    """Which endpoint of a service to try next, and how long to wait first (sans-IO).

    Args:
        service: the service to walk.
        rng: seeded random source for the back-off jitter (reproducible runs).
        wait_after_success: the attempt after a success waits the first back-off value (OCPP reconnect after a
            lost connection); False makes it immediate (one-shot uses).
        log_size: how many attempts :attr:`log` keeps (the oldest are dropped).

    Raises:
        ConfigError: ``log_size < 1`` (path ``planner.log_size``).
    """

    def __init__(
        self,
        service: Service,
        rng: random.Random,
        *,
        wait_after_success: bool = True,
        log_size: int = 1000,
    ) -> None:
        if log_size < 1:
            raise ConfigError(
                "must be an integer >= 1",
                path="planner.log_size",
                value=log_size,
                fix="keep e.g. 1000 attempts",
            )
        self.service = service
        self._order = service.ordered
        self._backoff = BackOffSchedule(service.backoff, rng)
        self._wait_after_success = wait_after_success
        self._current = 0
        self._tries = 0  # failed attempts on the current endpoint in this visit
        self._exhausted = 0  # endpoints given up on since the last success
        self._ready_at = -math.inf
        self._last_good: Endpoint | None = None
        self._log: collections.deque[Attempt] = collections.deque(maxlen=log_size)

    def next_attempt(self, now: float) -> tuple[Endpoint, float]:
        """The endpoint to try next and the seconds to wait before trying it (does not change the state).

        Args:
            now: the current trio time.

        Returns:
            ``(endpoint, wait_s)``; ``wait_s`` counts from ``now`` (0 when the wait is already over).
        """
        return self._order[self._current], max(0.0, self._ready_at - now)

    def report(self, endpoint: Endpoint, ok: bool, reason: str, now: float, *, detail: str = "") -> Attempt:
        """Record the outcome of trying ``endpoint`` and plan the next attempt.

        Args:
            endpoint: the endpoint :meth:`next_attempt` returned.
            ok: True when the connection was established.
            reason: why it failed (a :func:`~evsim.errors.failure_reason` category); ignored on success.
            now: trio time of the outcome; the next wait counts from here.
            detail: free text kept in the log.

        Returns:
            The recorded attempt.

        Raises:
            ValueError: ``endpoint`` is not the one planned, or a failure without a reason.
        """
        planned = self._order[self._current]
        if endpoint is not planned and endpoint != planned:
            raise ValueError(
                f"report() is about {endpoint.name!r}, but the planned endpoint is {planned.name!r}"
            )
        if not ok and not reason:
            raise ValueError("a failed attempt needs a reason")
        attempt = Attempt(planned.name, now, ok, "" if ok else reason, detail)
        self._log.append(attempt)
        if ok:
            self._succeeded(planned)
            wait = self._backoff.next_wait() if self._wait_after_success else 0.0
        else:
            wait = self._failed(planned)
        self._ready_at = now + wait
        return attempt

    def _succeeded(self, endpoint: Endpoint) -> None:
        self._backoff.reset()
        self._tries = 0
        self._exhausted = 0
        self._last_good = endpoint
        policy = self.service.policy
        if policy == "priority":
            self._current = 0
        elif policy == "round_robin":
            self._current = (self._current + 1) % len(self._order)
        # sticky: stay

    def _failed(self, endpoint: Endpoint) -> float:
        self._tries += 1
        if self._tries < endpoint.attempts:
            return self._backoff.next_wait()  # retry the same endpoint after the back-off
        self._tries = 0
        self._exhausted += 1
        self._current = (self._current + 1) % len(self._order)
        if self._exhausted % len(self._order) == 0:
            return self._backoff.next_wait()  # a full pass failed
        return 0.0  # another endpoint: try it at once

    @property
    def current(self) -> Endpoint:
        """The endpoint the next attempt goes to."""
        return self._order[self._current]

    @property
    def last_good(self) -> Endpoint | None:
        """The endpoint of the last successful attempt (None before the first)."""
        return self._last_good

    @property
    def failed_passes(self) -> int:
        """Full passes over all endpoints that failed since the last success."""
        return self._exhausted // len(self._order)

    @property
    def log(self) -> tuple[Attempt, ...]:
        """The most recent attempts, oldest first (at most ``log_size``)."""
        return tuple(self._log)


# ---------------------------------------------------------------- trio helper


class EventSink(Protocol):
    """What :func:`connect_service` needs of a recorder (:class:`evsim.recorder.Recorder` fits)."""

    def emit(self, node: str, kind: str, **data: Any) -> object:
        """Record one event."""
        ...


class ServiceUnavailable(TransportError):
    """Every allowed attempt to reach a service failed.

    Args:
        service: the service's name.
        attempts: the attempts made, oldest first (at least one).

    Attributes:
        reason: the last attempt's failure category.
    """

    def __init__(self, service: str, attempts: tuple[Attempt, ...]) -> None:
        self.service = service
        self.attempts = attempts
        self.reason = attempts[-1].reason if attempts else "no_attempt"
        listing = "; ".join(f"{a.endpoint}: {a.reason}" for a in attempts)
        super().__init__(f"service {service} unavailable after {len(attempts)} attempt(s): {listing}")


@attrs.frozen
class ServiceConnection(Generic[T_co]):
    """An established connection to one endpoint of a service.

    Attributes:
        stream: the :class:`~evsim.tls.stream.TlsStream` (``wss://``) or the plain network stream
            (``ws://``); the caller owns it and closes it.
        endpoint: the endpoint reached.
        attempts: the attempts this call made, oldest first; the last one is the success.
        tls: what the TLS handshake negotiated (None for ``ws://``).
        setup: what the ``setup`` step returned (None without one).
    """

    stream: trio.abc.Stream
    endpoint: Endpoint
    attempts: tuple[Attempt, ...]
    tls: TlsInfo | None
    setup: T_co

    @property
    def failures(self) -> tuple[Attempt, ...]:
        """The failed attempts before the success."""
        return tuple(a for a in self.attempts if not a.ok)

    async def aclose(self) -> None:
        """Close the stream."""
        await self.stream.aclose()


Setup: TypeAlias = Callable[[trio.abc.Stream, Endpoint], Awaitable[T]]


@overload
async def connect_service(
    service: Service,
    network: Network,
    *,
    clock: SimClock,
    planner: EndpointPlanner | None = None,
    recorder: EventSink | None = None,
    source: str | None = None,
    max_attempts: int | None = None,
    setup: None = None,
) -> ServiceConnection[None]: ...


@overload
async def connect_service(
    service: Service,
    network: Network,
    *,
    clock: SimClock,
    planner: EndpointPlanner | None = None,
    recorder: EventSink | None = None,
    source: str | None = None,
    max_attempts: int | None = None,
    setup: Setup[T],
) -> ServiceConnection[T]: ...


async def connect_service(
    service: Service,
    network: Network,
    *,
    clock: SimClock,
    planner: EndpointPlanner | None = None,
    recorder: EventSink | None = None,
    source: str | None = None,
    max_attempts: int | None = None,
    setup: Setup[Any] | None = None,
) -> ServiceConnection[Any]:
    """Connect to ``service``, walking its endpoints by policy with the OCPP back-off.

    Each attempt: wait what the planner says (``trio.sleep``, virtual time under ``MockClock``), connect
    through ``network``, run the TLS handshake for ``wss://`` (the endpoint's profile, trust and identity;
    certificates checked at ``clock.utcnow()``), then ``setup`` if given. A
    :class:`~evsim.errors.TransportError` anywhere in it is a failed attempt: its
    :func:`~evsim.errors.failure_reason` is reported to the planner and emitted, the stream closed, and the
    next attempt planned. Other exceptions (``ConfigError``, a bug in ``setup``) propagate.

    Note: a TLS 1.3 server refuses a client certificate only after the client's handshake finished, so that
    refusal shows on the first read. Do the first exchange (the WebSocket upgrade) in ``setup`` to count it
    as a failed attempt of the endpoint.

    Args:
        service: the service to reach.
        network: where to connect (:class:`~evsim.net.VirtualNetwork` or TCP).
        clock: the run's clock (trio time for waits, simulation time for certificates).
        planner: the planner to walk; keep one per service and caller across reconnects so the back-off and
            the sticky/round-robin position carry over. None = a fresh one (seeded from the service name).
        recorder: receives a ``service_attempt`` event (``endpoint``, ``ok``, ``reason``) per attempt.
        source: the connecting host (network faults, ``source`` of the virtual network) and the events'
            node; events use ``service.name`` when None.
        max_attempts: give up after this many failed attempts in this call; None = never.
        setup: ``await setup(stream, endpoint)`` after the handshake (e.g. the WebSocket upgrade); its
            result is :attr:`ServiceConnection.setup`.

    Returns:
        The established connection (stream, endpoint, attempts, TLS info, setup result).

    Raises:
        ServiceUnavailable: ``max_attempts`` attempts failed; lists every attempt's reason.
        ConfigError: ``max_attempts < 1`` (path ``connect_service.max_attempts``), or an endpoint's TLS
            configuration does not compile.
        ValueError: a planner made for another service.
    """
    if max_attempts is not None and max_attempts < 1:
        raise ConfigError(
            "must be an integer >= 1",
            path="connect_service.max_attempts",
            value=max_attempts,
            fix="use e.g. 3, or None for no limit",
        )
    if planner is None:
        planner = EndpointPlanner(service, random.Random(f"evsim.service:{service.name}"))
    elif planner.service != service:
        raise ValueError(f"the planner walks service {planner.service.name!r}, not {service.name!r}")
    node = source or service.name
    made: list[Attempt] = []
    while True:
        endpoint, wait = planner.next_attempt(clock.now())
        if wait > 0:
            await trio.sleep(wait)
        try:
            stream, info, result = await _attempt(endpoint, network, clock=clock, source=source, setup=setup)
        except TransportError as exc:
            reason = failure_reason(exc)
            made.append(planner.report(endpoint, False, reason, clock.now(), detail=str(exc)))
            if recorder is not None:
                recorder.emit(node, "service_attempt", endpoint=endpoint.name, ok=False, reason=reason)
            if max_attempts is not None and len(made) >= max_attempts:
                raise ServiceUnavailable(service.name, tuple(made)) from exc
            continue
        made.append(planner.report(endpoint, True, "", clock.now()))
        if recorder is not None:
            recorder.emit(node, "service_attempt", endpoint=endpoint.name, ok=True, reason="")
        return ServiceConnection(stream, endpoint, tuple(made), info, result)


async def _attempt(
    endpoint: Endpoint,
    network: Network,
    *,
    clock: SimClock,
    source: str | None,
    setup: Setup[Any] | None,
) -> tuple[trio.abc.Stream, TlsInfo | None, Any]:
    """One attempt: connect, handshake, setup. Closes what it opened when something fails."""
    client_tls = endpoint.client_tls()  # before connecting: a ConfigError must not leak a stream
    stream: trio.abc.Stream = await network.connect(endpoint.host, endpoint.port, source=source)
    info: TlsInfo | None = None
    if client_tls is not None:
        # tls_connect closes the transport itself when the handshake fails or is cancelled
        tls_stream: TlsStream = await tls_connect(
            stream, client_tls, endpoint.server_name, verify_time=clock.utcnow
        )
        stream, info = tls_stream, tls_stream.info
    if setup is None:
        return stream, info, None
    try:
        result = await setup(stream, endpoint)
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return stream, info, result
