"""The server side of the TLS model: a :class:`Listener` (bind address, profile, identity per SNI, client auth).

A listener compiles to one :class:`~evsim.tls.context.ServerTls` (:meth:`Listener.compile`) whose default
context serves ``identity`` and switches, per connection, to the identity of the server name the client
asked for (``sni_identities``; the switch happens in OpenSSL's servername callback, see
``evsim.tls.context._install_sni``). This module builds no OpenSSL object itself: it only uses the compiled
objects of ``evsim.tls.context`` and the one-call helpers of ``evsim.tls.stream``.

SNI rules
---------
* Names are **exact** DNS names, compared case-insensitively (a trailing dot is ignored). Wildcard names
  (``*.evsim.test``) are refused: a wildcard *certificate* can still be given as an identity, but the
  selection itself matches only whole names.
* A client that sends no SNI (e.g. it dialled an IP address), or a name not in the table, gets the default
  ``identity``. A strict mode that refuses unknown names with ``unrecognized_name`` is not offered:
  pyOpenSSL's servername callback can only fail by raising into ``sys.excepthook`` (a traceback per
  refused client), which is not a clean refusal.
* IP addresses are refused as names: clients never send them as SNI (RFC 6066 §3).

Validation reuses the checks of :meth:`ServerTls.build <evsim.tls.context.ServerTls.build>` and
:meth:`PeerPolicy.require <evsim.tls.peer.PeerPolicy.require>` by compiling the listener at construction;
their field paths are put under ``listener.<name>``.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable, Mapping

import attrs
import trio

from evsim.errors import ConfigError
from evsim.pki.ca import CertKey
from evsim.tls.config import Identity, TlsProfile
from evsim.tls.context import ClientAuth, OcspProvider, ServerTls
from evsim.tls.peer import PeerPolicy
from evsim.tls.stream import TlsStream, tls_accept
from evsim.tls.trust import CertResolver, CrlResolver, TrustStore
from evsim.tls.verify import is_ip_literal
from evsim.toml_table import Table, rebased

__all__ = ["CLIENT_AUTH", "Listener", "normalize_server_name"]

CLIENT_AUTH: tuple[ClientAuth, ...] = ("none", "optional", "required", "pairing")
"""The ``client_auth`` values, in the spelling TOML tables use."""

_MAX_PORT = 65535


def normalize_server_name(name: str) -> str:
    """The form SNI names are compared in: lower case, no trailing dot."""
    return name.lower().rstrip(".")


def _to_sni(
    value: Mapping[str, Identity] | Iterable[tuple[str, Identity]],
) -> tuple[tuple[str, Identity], ...]:
    items = value.items() if isinstance(value, Mapping) else value
    return tuple(items)


@attrs.frozen
class Listener:
    """A TLS server endpoint: where it listens and how it speaks TLS to clients.

    Args:
        name: a label (logs, field paths ``listener.<name>``).
        host: the address to bind (a virtual host name or a loopback address).
        port: the port (0 = let the network pick one).
        profile: how to speak TLS.
        identity: the certificate served when the client sends no SNI or an unknown name.
        sni_identities: server name -> identity (exact names, see the module doc); a mapping or pairs.
        trust: anchors for client certificates (needed unless ``client_auth = "none"``; for ``"pairing"``
            None or a ``pinned_peers`` store).
        client_auth: ``"none"`` | ``"optional"`` | ``"required"`` | ``"pairing"`` (see
            :meth:`ServerTls.build <evsim.tls.context.ServerTls.build>`).
        peer: the server-side peer policy (pins, pairing list, change policy on client certificates); a
            mutable holder, so not part of equality. Required for ``"pairing"`` and the self-signed modes.
        ocsp: OCSP stapling provider (returns the DER response to staple); not part of equality.

    Raises:
        ConfigError: with the field path under ``listener.<name>``: an empty name or host, a bad port, a
            bad SNI name (empty, wildcard, IP address, duplicate), anything :meth:`ServerTls.build` refuses
            (client auth without trust, pairing without a pairing list, an unknown ``client_auth``...).
    """

    name: str
    host: str
    port: int
    identity: Identity
    profile: TlsProfile = attrs.field(factory=TlsProfile)
    sni_identities: tuple[tuple[str, Identity], ...] = attrs.field(default=(), converter=_to_sni)
    trust: TrustStore | None = None
    client_auth: ClientAuth = "none"
    peer: PeerPolicy | None = attrs.field(default=None, eq=False, repr=False)
    ocsp: OcspProvider | None = attrs.field(default=None, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(
                "a listener needs a name", path="listener.name", value=self.name, fix='e.g. name = "csms"'
            )
        where = f"listener.{self.name}"
        if not isinstance(self.host, str) or not self.host:
            raise ConfigError(
                "a listener needs a host to bind",
                path=f"{where}.host",
                value=self.host,
                fix='e.g. host = "csms.evsim.test"',
            )
        port = self.port
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= _MAX_PORT:
            raise ConfigError(
                f"port must be an integer in 0..{_MAX_PORT}",
                path=f"{where}.port",
                value=port,
                fix="use e.g. 443 (0 lets the network pick one)",
            )
        if not isinstance(self.identity, Identity):
            raise ConfigError("identity must be an Identity", path=f"{where}.identity", value=self.identity)
        object.__setattr__(self, "sni_identities", self._checked_sni(where))
        if self.client_auth not in CLIENT_AUTH:
            raise ConfigError(
                "unknown client_auth",
                path=f"{where}.client_auth",
                value=self.client_auth,
                fix="use one of " + ", ".join(CLIENT_AUTH),
            )
        try:
            self.compile()
        except ConfigError as exc:
            raise rebased(exc, where) from None

    def _checked_sni(self, where: str) -> tuple[tuple[str, Identity], ...]:
        seen: dict[str, Identity] = {}
        for i, item in enumerate(self.sni_identities):
            name, identity = item
            at = f"{where}.sni_identities[{i}]"
            if not isinstance(name, str) or not name.strip() or any(c.isspace() or c in "/@:" for c in name):
                raise ConfigError(
                    "an SNI name must be a DNS host name", path=at, value=name, fix='e.g. "csms-b.evsim.test"'
                )
            if "*" in name:
                raise ConfigError(
                    "wildcard SNI names are not supported: selection matches exact names only",
                    path=at,
                    value=name,
                    fix="list each host name the clients dial (a wildcard certificate may still be the identity)",
                )
            if is_ip_literal(name):
                raise ConfigError(
                    "clients never send an IP address as SNI (RFC 6066 §3)",
                    path=at,
                    value=name,
                    fix="list the DNS name; clients dialling the IP address get the default identity",
                )
            if not isinstance(identity, Identity):
                raise ConfigError("not an Identity", path=f"{at}.identity", value=identity)
            key = normalize_server_name(name)
            if key in seen:
                raise ConfigError(
                    "duplicate SNI name (names are compared case-insensitively)",
                    path=at,
                    value=name,
                    fix="list each name once",
                )
            seen[key] = identity
        return tuple(sorted(seen.items()))

    # ------------------------------------------------------------ views

    @property
    def sni_map(self) -> Mapping[str, Identity]:
        """Normalized server name -> identity."""
        return dict(self.sni_identities)

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` to bind."""
        return self.host, self.port

    def identity_for(self, server_name: str | None) -> Identity:
        """The identity a client that sends ``server_name`` as SNI gets (the default for None / unknown).

        Args:
            server_name: the SNI name, or None (no SNI).

        Returns:
            The identity served.
        """
        if server_name is None:
            return self.identity
        return self.sni_map.get(normalize_server_name(server_name), self.identity)

    # ------------------------------------------------------------ compiled forms

    def compile(self) -> ServerTls:
        """The compiled listener: one server configuration that selects the identity by SNI (cached).

        Returns:
            The :class:`ServerTls` to accept connections with.

        Raises:
            ConfigError: what :meth:`ServerTls.build` refuses (paths relative to the listener).
        """
        return ServerTls.build(
            self.profile,
            self.identity,
            self.trust,
            self.client_auth,
            peer=self.peer,
            ocsp=self.ocsp,
            sni=self.sni_map,
        )

    def server_tls(self, server_name: str | None) -> ServerTls:
        """The single-identity configuration a client sending ``server_name`` is served with.

        Useful to reason about one name (e.g. the handshake predictor); to accept connections use
        :meth:`compile` (or :meth:`accept`), which selects by SNI on the wire.

        Args:
            server_name: the SNI name, or None.

        Returns:
            The compiled configuration with :meth:`identity_for` ``(server_name)`` and no SNI table.

        Raises:
            ConfigError: as :meth:`compile`.
        """
        return ServerTls.build(
            self.profile,
            self.identity_for(server_name),
            self.trust,
            self.client_auth,
            peer=self.peer,
            ocsp=self.ocsp,
        )

    async def accept(
        self,
        transport: trio.abc.Stream,
        *,
        verify_time: Callable[[], datetime.datetime] | None = None,
        peer: PeerPolicy | None = None,
    ) -> TlsStream:
        """Run the server handshake of this listener over an accepted transport.

        Args:
            transport: the accepted stream (virtual network, TCP, memory).
            verify_time: the simulation's wall time for client-certificate validity (``SimClock.utcnow``).
            peer: a peer policy for this connection only (default: the listener's).

        Returns:
            The handshaken stream (``info.sni`` is the name the client sent).

        Raises:
            HandshakeFailed: refused (the transport is closed).
            ConfigError: ``peer`` cannot decide for the listener's mode.
        """
        return await tls_accept(transport, self.compile(), verify_time=verify_time, peer=peer)

    # ------------------------------------------------------------ TOML

    _TOML_KEYS = ("name", "host", "port", "profile", "identity", "sni_identities", "trust", "client_auth")

    @classmethod
    def from_toml(
        cls,
        table: Mapping[str, object],
        *,
        path: str,
        resolve: Callable[[str], CertKey],
        resolve_anchors: CertResolver | None = None,
        resolve_crls: CrlResolver | None = None,
        peer: PeerPolicy | None = None,
        ocsp: OcspProvider | None = None,
    ) -> Listener:
        """Build a listener from a parsed TOML table; certificates are *names* the resolvers look up.

        The table::

            name = "csms"                                   # default: the table's own name
            host = "csms.evsim.test"
            port = 443
            identity = { certificate = "CSMSCertificate" }  # Identity.from_toml
            client_auth = "required"                        # none | optional | required | pairing
            [profile]                                       # TlsProfile.from_toml (optional)
            versions = ["1.3"]
            [trust]                                         # TrustStore.from_toml (client certificates)
            anchors = ["ChargingStationRoot"]
            hostname = "off"
            [sni_identities]                                # exact names -> Identity.from_toml tables
            "csms-b.evsim.test" = { certificate = "CSMSCertificateB" }

        The peer policy and the OCSP provider are run-time objects: pass them as arguments.

        Args:
            table: the table as ``tomllib`` returns it.
            path: its field path (``csms.main.listener``), prefixed to every error.
            resolve: certificate name -> :class:`~evsim.pki.CertKey` for identities.
            resolve_anchors: name -> certificates for ``trust.anchors``.
            resolve_crls: name -> CRLs for ``trust.revocation.crls``.
            peer: the listener's server-side peer policy.
            ocsp: the OCSP stapling provider.

        Returns:
            The validated listener.

        Raises:
            ConfigError: unknown keys (with a did-you-mean), wrong types, unknown names, and every
                validation error of the class, with the field path under ``path``.
        """
        t = Table(table, path, cls._TOML_KEYS)
        name = t.string("name", path.rpartition(".")[2] or "listener")
        if not t.has("host"):
            raise ConfigError(
                "a listener needs a host", path=t.where("host"), fix='add host = "csms.evsim.test"'
            )
        host = t.string("host", "")
        port = t.optional_integer("port")
        if port is None:
            raise ConfigError("a listener needs a port", path=t.where("port"), fix="add port = 443")
        if not t.has("identity"):
            raise ConfigError(
                "a listener needs an identity",
                path=t.where("identity"),
                fix='add identity = { certificate = "…" }',
            )
        identity = Identity.from_toml(_table(t, "identity"), path=t.where("identity"), resolve=resolve)
        profile = TlsProfile()
        if t.has("profile"):
            profile = TlsProfile.from_toml(_table(t, "profile"), path=t.where("profile"))
        trust = None
        if t.has("trust"):
            if resolve_anchors is None:
                raise ConfigError(
                    "a trust table given but nothing resolves anchor names here",
                    path=t.where("trust"),
                    fix="pass resolve_anchors= to Listener.from_toml",
                )
            trust = TrustStore.from_toml(
                _table(t, "trust"), path=t.where("trust"), resolve=resolve_anchors, resolve_crls=resolve_crls
            )
        sni: list[tuple[str, Identity]] = []
        sni_path = t.where("sni_identities")
        for server_name, sub in _table(t, "sni_identities", default={}).items():
            sub_path = f'{sni_path}."{server_name}"'
            if not isinstance(sub, Mapping):
                raise ConfigError(
                    "expected an identity table", path=sub_path, value=sub, fix='write { certificate = "…" }'
                )
            sni.append((str(server_name), Identity.from_toml(sub, path=sub_path, resolve=resolve)))
        client_auth = t.enum("client_auth", CLIENT_AUTH, "none")
        try:
            return cls(name, host, port, identity, profile, tuple(sni), trust, client_auth, peer, ocsp)
        except ConfigError as exc:
            raise _toml_path(exc, path, name, sni_path, sni, trust) from None


def _table(t: Table, key: str, default: Mapping[str, object] | None = None) -> Mapping[str, object]:
    value = t.data.get(key, default)
    if not isinstance(value, Mapping):
        raise ConfigError(
            "expected a table", path=t.where(key), value=value, fix=f"write [{t.where(key)}] with keys"
        )
    return value


def _toml_path(
    exc: ConfigError,
    path: str,
    name: str,
    sni_path: str,
    sni: list[tuple[str, Identity]],
    trust: TrustStore | None,
) -> ConfigError:
    """A constructor error with its ``listener.<name>`` path moved under the TOML table's path (with
    ``sni_identities[i]`` named by the server name, as the table spells it, and ``trust.<store name>`` as
    the ``trust`` table)."""
    prefix = f"listener.{name}"
    inner = exc.path
    if inner.startswith(prefix + ".sni_identities["):
        index = int(inner[len(prefix) + len(".sni_identities[") :].split("]", 1)[0])
        label = sni[index][0]  # the constructor numbers the pairs in the order given: the table's
        rest = inner.split("]", 1)[1]
        return ConfigError(exc.message, path=f'{sni_path}."{label}"{rest}', value=exc.value, fix=exc.fix)
    renames = {f"{prefix}.trust.{trust.name}": "trust"} if trust is not None else {}
    return rebased(exc, path, renames | {prefix: ""})
