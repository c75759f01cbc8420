"""Read the node tables of a scenario: ``[csms.<name>]``, ``[controllers.<name>]`` and
``[stations.<group>]``, with their certificates, passwords, back-off and endpoint lists.

Theory of operation. Each node table becomes one frozen spec (:class:`~evsim.scenario.model.CsmsSpec`,
:class:`~evsim.scenario.model.ControllerSpec`, :class:`~evsim.scenario.model.StationGroupSpec`) whose
defaults are the spec class's own (:func:`~evsim.scenario.model.default_of`), so a default is written once.
The sections are read in the order their references need:

* **CSMS** first. A CSMS's host becomes its certificate's common name, so it must be a valid DNS name or IP
  address of at most 64 characters (RFC 5280 ub-common-name); ``secondary_of`` and ``trusted_controllers``
  are only type-checked here and resolved once every controller is known
  (:meth:`~evsim.scenario.passes.ScenarioChecks.check_csms_references`).
* **Controllers** next, in two steps: every name is registered before any table is read, so an
  ``upstream`` may name a controller defined further down the file; the controllers are then ordered so
  each comes after those it connects to, and a chain that loops is refused
  (:meth:`~evsim.scenario.passes.ScenarioChecks.controller_order`).
* **Station groups** last. A group either names one CSMS (``csms = "main"``) or lists up to four
  ``endpoints`` (one per network-profile slot, OCPP B09); its security profile defaults to the first
  endpoint's, whose CSMS is found through the controller chain. Profile 1 (plain ``ws://``) needs the
  server's explicit ``insecure_allow_plain_ws`` opt-in, since Basic-auth passwords then cross the network in
  clear text. Station ids come from ``id_pattern`` with a single integer field ``{n}``: the pattern is a
  ``str.format`` string, so fields, attribute access and wide format specs are refused before it is ever
  formatted, and the ids it gives must be OCPP identities (OCPP-J §3.1.1).

Two nodes may not listen on the same host and port (port 0 picks a free one and never clashes).
"""

from __future__ import annotations

import ipaddress
import re
import string
from collections.abc import Collection, Mapping

import attrs

from evsim.backoff import RetryBackOff
from evsim.errors import ConfigError
from evsim.ocpp.versions import OCPP_VERSIONS
from evsim.scenario.model import (
    CertificateSpec,
    ControllerSpec,
    CsmsSpec,
    EndpointKind,
    EndpointSpec,
    PkiSpec,
    SigningSpec,
    SimulationSpec,
    StationCertificatesSpec,
    StationGroupSpec,
    TlsProfileSpec,
    TrustSpec,
    default_of,
)
from evsim.scenario.passes import ScenarioChecks, claim_address, listen_host
from evsim.scenario.read_clocks import read_group_clock
from evsim.scenario.read_energy import controller_pairing
from evsim.scenario.read_tls import TlsReader, client_trust_of
from evsim.scenario.reader import LoadContext, ScenarioTable
from evsim.scenario.units import (
    format_duration,
)
from evsim.scenario.vocabulary import (
    BACKOFF_KEYS,
    BEHIND_CONTROLLER_KINDS,
    CERTIFICATE_KEYS,
    CONTROLLER_KEYS,
    CSMS_KEYS,
    ENDPOINT_KEYS,
    FAILOVER_KINDS,
    FALLBACK_KINDS,
    ID_PATTERN_FIX,
    KEY_TYPES,
    MAX_COMMON_NAME,
    MAX_IDENTITY_LENGTH,
    MAX_NETWORK_ATTEMPTS,
    MAX_STATION_ENDPOINTS,
    MAX_STATIONS_PER_GROUP,
    PASSWORD_LENGTH,
    SIGNING_KEYS,
    STATION_CERTIFICATE_KEYS,
    STATION_ID_RULE,
    STATION_KEYS,
    UPSTREAM_LOSS_KINDS,
)
from evsim.toml_table import FieldPath, choices_fix, type_name
from evsim.ws.paths import valid_identity

_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


class NodeReader(TlsReader, ScenarioChecks):
    """The section reader of the nodes (see the module doc)."""

    # ------------------------------------------------------------ [csms.<name>]

    def csms(
        self, root: ScenarioTable, sim: SimulationSpec, pki: PkiSpec, profiles: Mapping[str, TlsProfileSpec]
    ) -> dict[str, CsmsSpec]:
        """Every ``[csms.<name>]``: at least one, no two on one host and port."""
        out: dict[str, CsmsSpec] = {}
        addresses: dict[tuple[str, int], str] = {}
        for name, value in root.named_tables("csms", "CSMS nodes, e.g. [csms.main]"):
            if not isinstance(value, dict):
                fix = "write [csms.<name>] tables, e.g. [csms.main]"
                if name in CSMS_KEYS:
                    fix = f"name the CSMS: write [csms.main] instead of [csms] and put {name} under it"
                raise self.ctx.error(
                    ("csms", name),
                    f"expected a table [csms.{name}], got {type_name(value)}",
                    value=value,
                    fix=fix,
                )
            t = ScenarioTable(self.ctx, ("csms", name), value, CSMS_KEYS, what=f"[csms.{name}]")
            spec = self.one_csms(t, name, sim, pki, profiles)
            claim_address(
                t,
                addresses,
                name,
                listen_host(spec.host, sim.network),
                spec.port,
                "CSMS",
                "give each CSMS its own port"
                if sim.network == "tcp"
                else "give each CSMS its own host or port",
            )
            out[name] = spec
        if not out:
            raise self.ctx.error(
                ("csms",), "the scenario has no CSMS", fix="add a [csms.main] table (every key has a default)"
            )
        self.nodes.csms = out
        return out

    def one_csms(
        self,
        t: ScenarioTable,
        name: str,
        sim: SimulationSpec,
        pki: PkiSpec,
        profiles: Mapping[str, TlsProfileSpec],
    ) -> CsmsSpec:
        """One CSMS table. Its host becomes its certificate's CN, so it must be a DNS name or IP address of at
        most :data:`MAX_COMMON_NAME` characters; a default host made from an unusual table name is reported as such.
        """
        host = t.string("host", f"{name}.evsim.test", max_len=253)
        if not _valid_host(host):
            key_fix = "set host to a DNS name such as csms.evsim.test"
            if not t.has("host"):
                key_fix = f"the default host {host!r} is not a valid DNS name: set host explicitly or rename the CSMS"
            raise t.error("host", "not a valid host name or IP address", value=host, fix=key_fix)
        if len(host) > MAX_COMMON_NAME:
            raise t.error(
                "host",
                f"host names longer than {MAX_COMMON_NAME} characters cannot be a certificate CN "
                "(RFC 5280 ub-common-name)",
                value=host,
                fix="use a shorter host name",
            )
        profile, insecure = _listener_profile(t, CsmsSpec)
        cert = self.certificate(t, pki)
        spec = CsmsSpec(
            name=name,
            host=host,
            port=t.integer("port", default_of(CsmsSpec, "port") if sim.network == "memory" else 0, 0, 65535),
            security_profile=profile,
            insecure_allow_plain_ws=insecure,
            ocpp_versions=t.string_list(
                "ocpp_versions",
                default_of(CsmsSpec, "ocpp_versions"),
                allowed=OCPP_VERSIONS,
                example='["2.0.1", "2.1"]',
            ),
            heartbeat_interval=t.duration(
                "heartbeat_interval",
                default_of(CsmsSpec, "heartbeat_interval"),
                positive=True,
                whole_seconds=True,
            ),
            tls_profile=t.reference(
                "tls_profile", "default", profiles, "TLS profile", "[tls.profiles.<name>]"
            ),
            certificate=cert,
            password=self.password(t),
            accept_unknown_stations=t.boolean(
                "accept_unknown_stations", default_of(CsmsSpec, "accept_unknown_stations")
            ),
            ocsp_stapling=self.ocsp_stapling(t, profile),
            signing=_signing(t),
        )
        return self.with_failover_fields(t, spec)

    def certificate(self, t: ScenarioTable, pki: PkiSpec) -> CertificateSpec:
        """A node's ``certificate`` table: the issuing root, validity, key type, and ``not_before`` relative
        to the start (one hour before it by default), which must come before the end of validity.
        """
        c = t.sub_table("certificate", CERTIFICATE_KEYS, '{ root = "root", validity = "365d" }')
        if c is None:
            return CertificateSpec(validity=pki.validity, key_type=pki.key_type)
        validity = c.duration("validity", pki.validity, positive=True)
        not_before = c.duration("not_before", -3600.0, allow_negative=True)
        if not_before >= validity:
            raise c.error(
                "not_before",
                f"not_before ({format_duration(not_before)}) must come before the end of "
                f"validity ({format_duration(validity)})",
                value=c.data.get("not_before"),
                fix='use e.g. not_before = "-1h" (one hour before the start)',
            )
        root = c.reference("root", "root", pki.roots, "root", "[pki.roots.<name>]")
        issuer = None
        if c.has("issuer"):
            issuer = c.reference(
                "issuer", "", pki.intermediates, "intermediate CA", "[pki.intermediates.<name>]"
            )
            if c.has("root") and pki.top_root(issuer) != root:
                raise c.error(
                    "issuer",
                    f"intermediate {issuer!r} is not under root {root!r}",
                    value=issuer,
                    fix=f"remove root (the issuer's is {pki.top_root(issuer)!r}) or name another issuer",
                )
            root = pki.top_root(issuer)
        return CertificateSpec(
            root=root,
            issuer=issuer,
            validity=validity,
            not_before=not_before,
            key_type=c.enum("key_type", KEY_TYPES, pki.key_type),
        )

    def password(self, t: ScenarioTable) -> str | None:
        """A ``password``: OCPP's BasicAuthPassword (:data:`PASSWORD_LENGTH` printable characters); None
        means a generated one.
        """
        password = t.optional_string("password", max_len=PASSWORD_LENGTH[1] * 4)
        lo, hi = PASSWORD_LENGTH
        if password is not None and not lo <= len(password) <= hi:
            raise t.error(
                "password",
                f"a BasicAuthPassword has {lo}..{hi} characters (OCPP A00.FR.205)",
                value=password,
                fix="use a longer random password, or omit it to use a generated one",
            )
        if password is not None and not password.isprintable():
            raise t.error(
                "password",
                "the password contains control characters",
                value=password,
                fix="use printable characters only",
            )
        return password

    def with_failover_fields(self, t: ScenarioTable, spec: CsmsSpec) -> CsmsSpec:
        """``spec`` with ``secondary_of``, ``behind_controller`` and ``trusted_controllers`` of its table.

        References are only type-checked here; :meth:`check_csms_references` resolves them once every CSMS and
        controller is known.
        """
        secondary_of: str | None = None
        if t.has("secondary_of"):
            value = t._typed(
                "secondary_of", lambda v: isinstance(v, str), "a CSMS name", 'write secondary_of = "primary"'
            )
            assert isinstance(value, str)
            secondary_of = value
        return attrs.evolve(
            spec,
            secondary_of=secondary_of,
            behind_controller=t.enum(
                "behind_controller", BEHIND_CONTROLLER_KINDS, default_of(CsmsSpec, "behind_controller")
            ),
            trusted_controllers=t.string_list("trusted_controllers", (), nonempty=False, example='["lc1"]'),
        )

    # ------------------------------------------------------------ [controllers.<name>]

    def controllers(
        self,
        root: ScenarioTable,
        sim: SimulationSpec,
        pki: PkiSpec,
        profiles: Mapping[str, TlsProfileSpec],
        trust: Mapping[str, TrustSpec],
    ) -> dict[str, ControllerSpec]:
        """Every ``[controllers.<name>]``, in dependency order (a controller after those it connects to)."""
        raw: dict[str, object] = {}
        for name, value in root.named_tables("controllers", "Local Controllers, e.g. [controllers.lc1]"):
            if not isinstance(value, dict):
                raise self.ctx.error(
                    ("controllers", name),
                    f"expected a table [controllers.{name}], got {type_name(value)}",
                    value=value,
                    fix="write [controllers.<name>] tables, e.g. [controllers.lc1]",
                )
            if name in self.nodes.csms:
                raise self.ctx.error(
                    ("controllers", name),
                    f"{name!r} is already the name of a CSMS",
                    value=name,
                    fix="give the controller another name (selectors must be unambiguous)",
                )
            raw[name] = value
        # names first, so an upstream may name a controller defined further down the file
        self.nodes.controllers = {name: ControllerSpec(name=name, host="", upstream=()) for name in raw}
        addresses = {
            (listen_host(c.host, sim.network), c.port): c.name
            for c in self.nodes.csms.values()
            if c.port != 0
        }
        out: dict[str, ControllerSpec] = {}
        for name, value in raw.items():
            t = ScenarioTable(
                self.ctx, ("controllers", name), value, CONTROLLER_KEYS, what=f"[controllers.{name}]"
            )
            spec = self.one_controller(t, name, sim, pki, profiles, trust)
            claim_address(
                t,
                addresses,
                name,
                listen_host(spec.host, sim.network),
                spec.port,
                "node",
                "give each CSMS and controller its own port"
                if sim.network == "tcp"
                else "give each CSMS and controller its own host or port",
            )
            out[name] = spec
        self.nodes.controllers = out
        order = self.controller_order(out)
        self.nodes.controllers = {name: out[name] for name in order}
        self.check_csms_references(self.nodes.csms)
        return self.nodes.controllers

    def one_controller(
        self,
        t: ScenarioTable,
        name: str,
        sim: SimulationSpec,
        pki: PkiSpec,
        profiles: Mapping[str, TlsProfileSpec],
        trust: Mapping[str, TrustSpec],
    ) -> ControllerSpec:
        """One controller table: its host (its certificate's CN), listener profile, ``upstream`` endpoints (a
        controller may not name itself; loops through others are refused by :meth:`controller_order`), the
        upstream side's profile, failover and loss policies, back-off, and how it admits controllers below it.
        """
        host = t.string("host", f"{name}.evsim.test", max_len=253)
        if not _valid_host(host) or len(host) > MAX_COMMON_NAME:
            raise t.error(
                "host",
                f"not a valid host name (at most {MAX_COMMON_NAME} characters: it is the certificate CN)",
                value=host,
                fix="set host to a DNS name such as lc1.site.evsim.test",
            )
        profile, insecure = _listener_profile(t, ControllerSpec)
        t.require("upstream", 'add upstream = [{ csms = "main" }] (where the controller connects to)')
        upstream = self.endpoint_list(t, "upstream", profiles, trust, owner=name)
        behind = t.enum(
            "behind_controller", BEHIND_CONTROLLER_KINDS, default_of(ControllerSpec, "behind_controller")
        )
        trusted = t.string_list("trusted_controllers", (), nonempty=False, example='["lc2"]')
        self.check_trusted(t.path, trusted, behind)
        client_trust = client_trust_of(t, trust, profile)
        client_auth, auto_accept, window = controller_pairing(t, profile, client_trust)
        return ControllerSpec(
            name=name,
            host=host,
            port=t.integer(
                "port", default_of(ControllerSpec, "port") if sim.network == "memory" else 0, 0, 65535
            ),
            security_profile=profile,
            insecure_allow_plain_ws=insecure,
            tls_profile=t.reference(
                "tls_profile", "default", profiles, "TLS profile", "[tls.profiles.<name>]"
            ),
            trust=t.reference("trust", "default", trust, "trust store", "[tls.trust.<name>]"),
            certificate=self.certificate(t, pki),
            upstream=upstream,
            upstream_security_profile=t.profile_number(
                "upstream_security_profile", default_of(ControllerSpec, "upstream_security_profile")
            ),
            failover=t.enum("failover", FAILOVER_KINDS, default_of(ControllerSpec, "failover")),
            on_upstream_loss=t.enum(
                "on_upstream_loss", UPSTREAM_LOSS_KINDS, default_of(ControllerSpec, "on_upstream_loss")
            ),
            upstream_connect_attempts=t.integer(
                "upstream_connect_attempts",
                default_of(ControllerSpec, "upstream_connect_attempts"),
                1,
                MAX_NETWORK_ATTEMPTS,
            ),
            retry_backoff=self.backoff(t),
            behind_controller=behind,
            trusted_controllers=trusted,
            client_trust=client_trust,
            clock=read_group_clock(t, self.nodes),
            client_auth=client_auth,
            auto_accept=auto_accept,
            pairing_window=window,
        )

    # ------------------------------------------------------------ endpoints (station groups, controller upstreams)

    def endpoint_list(
        self,
        t: ScenarioTable,
        key: str,
        profiles: Mapping[str, TlsProfileSpec],
        trust: Mapping[str, TrustSpec],
        *,
        owner: str | None = None,
        max_len: int = 16,
    ) -> tuple[EndpointSpec, ...]:
        """An array of endpoint tables (``{ csms = "primary", priority = 1 }`` or ``{ controller = "lc1" }``).

        Args:
            t: the owning table.
            key: ``"endpoints"`` or ``"upstream"``.
            profiles: TLS profiles by name.
            trust: trust stores by name.
            owner: the controller whose upstream this is (may not name itself), or None.
            max_len: most endpoints allowed.

        Returns:
            The endpoints sorted by priority (ties: file order); a missing priority is the 1-based position.
        """
        example = '[{ csms = "primary", priority = 1 }, { csms = "secondary", priority = 2 }]'
        value = t._typed(
            key, lambda v: isinstance(v, list), "an array of endpoint tables", f"write {key} = {example}"
        )
        assert isinstance(value, list)
        if not value:
            raise t.error(key, "must not be empty", value=[], fix=f"write e.g. {key} = {example}")
        if len(value) > max_len:
            raise t.error(
                key,
                f"at most {max_len} endpoints",
                value=None,
                fix=f"keep at most {max_len}"
                + (
                    " (a station has the network-profile slots 0..3)"
                    if max_len == MAX_STATION_ENDPOINTS
                    else ""
                ),
            )
        out: list[EndpointSpec] = []
        priorities: dict[int, int] = {}
        for i, item in enumerate(value):
            e = ScenarioTable(
                self.ctx,
                t.at(key, i),
                item,
                ENDPOINT_KEYS,
                what=f"{key}[{i}] ({{ csms = ... }} or {{ controller = ... }})",
            )
            kinds = [k for k in ("csms", "controller") if e.has(k)]
            if len(kinds) != 1:
                raise self.ctx.error(
                    t.at(key, i),
                    "an endpoint names exactly one CSMS or one controller",
                    value=None,
                    fix='write { csms = "primary" } or { controller = "lc1" }',
                )
            kind: EndpointKind = "csms" if kinds[0] == "csms" else "controller"
            defined: Collection[str] = self.nodes.csms if kind == "csms" else self.nodes.controllers
            how = "[csms.<name>]" if kind == "csms" else "[controllers.<name>]"
            ref = e.reference(kind, "", defined, "CSMS" if kind == "csms" else "controller", how)
            if owner is not None and kind == "controller" and ref == owner:
                raise e.error(
                    "controller",
                    "a controller cannot connect to itself",
                    value=ref,
                    fix="name a CSMS or another controller",
                )
            if any(o.kind == kind and o.name == ref for o in out):
                raise e.error(
                    kind, f"{ref!r} is listed twice in {key}", value=ref, fix="list each endpoint once"
                )
            priority = e.integer("priority", i + 1, 0, 1000)
            if priority in priorities:
                raise e.error(
                    "priority",
                    f"the same priority as {key}[{priorities[priority]}]",
                    value=priority,
                    fix="give each endpoint its own priority (lower is tried first)",
                )
            priorities[priority] = i
            out.append(
                EndpointSpec(
                    kind=kind,
                    name=ref,
                    priority=priority,
                    trust=e.reference("trust", "", trust, "trust store", "[tls.trust.<name>]")
                    if e.has("trust")
                    else None,
                    tls_profile=e.reference(
                        "tls_profile", "", profiles, "TLS profile", "[tls.profiles.<name>]"
                    )
                    if e.has("tls_profile")
                    else None,
                    pins=self.endpoint_pins(e, owner),
                )
            )
        return tuple(sorted(out, key=lambda ep: ep.priority))

    def endpoint_pins(self, e: ScenarioTable, owner: str | None) -> str | None:
        """An endpoint's own ``pins`` (station endpoints only: a controller's upstream links have none)."""
        if not e.has("pins"):
            return None
        if owner is not None:
            raise e.error(
                "pins",
                "pins on a controller's upstream endpoints are not supported",
                value=e.data["pins"],
                fix="remove it (pins apply to station endpoints and station groups)",
            )
        return e.reference("pins", "", self._pin_sets, "pin set", "[tls.pins.<name>]")

    def station_endpoints(
        self, t: ScenarioTable, profiles: Mapping[str, TlsProfileSpec], trust: Mapping[str, TrustSpec]
    ) -> tuple[EndpointSpec, ...]:
        """A group's ``endpoints`` (empty when it uses the ``csms = "name"`` shorthand)."""
        if not t.has("endpoints"):
            return ()
        if t.has("csms"):
            raise t.error(
                "csms",
                "csms and endpoints are mutually exclusive (csms is the one-endpoint shorthand)",
                value=t.data["csms"],
                fix="remove csms, or list that CSMS in endpoints",
            )
        return self.endpoint_list(t, "endpoints", profiles, trust, max_len=MAX_STATION_ENDPOINTS)

    # ------------------------------------------------------------ [stations.<group>]

    def station_groups(
        self,
        root: ScenarioTable,
        csms: Mapping[str, CsmsSpec],
        profiles: Mapping[str, TlsProfileSpec],
        trust: Mapping[str, TrustSpec],
    ) -> dict[str, StationGroupSpec]:
        """Every ``[stations.<group>]``. A group may not share a name with a CSMS or a controller: selectors
        name any of them.
        """
        out: dict[str, StationGroupSpec] = {}
        for name, value in root.named_tables("stations", "station groups, e.g. [stations.fleet]"):
            if not isinstance(value, dict):
                fix = "write [stations.<group>] tables, e.g. [stations.fleet]"
                if name in STATION_KEYS:
                    fix = f"name the group: write [stations.fleet] instead of [stations] and put {name} under it"
                raise self.ctx.error(
                    ("stations", name),
                    f"expected a table [stations.{name}], got {type_name(value)}",
                    value=value,
                    fix=fix,
                )
            if name in csms or name in self.nodes.controllers:
                raise self.ctx.error(
                    ("stations", name),
                    f"{name!r} is already the name of a {'CSMS' if name in csms else 'controller'}",
                    value=name,
                    fix="give the station group another name (selectors must be unambiguous)",
                )
            t = ScenarioTable(self.ctx, ("stations", name), value, STATION_KEYS, what=f"[stations.{name}]")
            out[name] = self.group_peer_policy(t, self.one_group(t, name, csms, profiles, trust), trust)
        return out

    def one_group(
        self,
        t: ScenarioTable,
        name: str,
        csms: Mapping[str, CsmsSpec],
        profiles: Mapping[str, TlsProfileSpec],
        trust: Mapping[str, TrustSpec],
    ) -> StationGroupSpec:
        """One station group table.

        Its CSMS is the ``csms`` shorthand or the one its first endpoint leads to; its security profile
        defaults to that server's, and profile 1 needs the server's ``insecure_allow_plain_ws``. ``sessions``
        (a fixed count) and ``sessions_per_day`` (a rate) exclude each other.
        """
        count = t.integer("count", 1, 1, MAX_STATIONS_PER_GROUP)
        pattern = t.string("id_pattern", f"{name}-{{n:04d}}", max_len=200)
        _check_id_pattern(self.ctx, t.at("id_pattern"), pattern, count)
        endpoints = self.station_endpoints(t, profiles, trust)
        if not endpoints and not t.has("csms") and len(csms) > 1:
            raise t.error(
                "csms",
                "missing required key 'csms' (the scenario has several CSMS)",
                fix=choices_fix("", list(csms), what="add csms = one of")
                + ", or list endpoints = [{ csms = ... }, ...]",
            )
        if endpoints:
            target = self.resolve_csms(endpoints[0])
            first = endpoints[0]
            server: CsmsSpec | ControllerSpec = (
                csms[first.name] if first.kind == "csms" else self.nodes.controllers[first.name]
            )
            what = f"{'CSMS' if first.kind == 'csms' else 'controller'} {first.name!r}"
        else:
            target = t.reference("csms", next(iter(csms)), csms, "CSMS", "[csms.<name>]")
            server = csms[target]
            what = f"CSMS {target!r}"
        profile = t.profile_number("security_profile", server.security_profile)
        if profile == 1 and not server.insecure_allow_plain_ws:
            raise t.error(
                "security_profile",
                f"security profile 1 (plain ws://) but {what} does not allow it",
                value=1,
                fix=f"set insecure_allow_plain_ws = true in {what} (trusted networks "
                "only) or use security_profile = 2",
            )
        if t.has("sessions") and t.has("sessions_per_day"):
            raise t.error(
                "sessions_per_day",
                "sessions and sessions_per_day are mutually exclusive",
                value=t.data["sessions_per_day"],
                fix="keep one of them",
            )
        sessions: int | None = t.integer("sessions", default_of(StationGroupSpec, "sessions"), 0, 1_000_000)
        per_day: float | None = None
        if t.has("sessions_per_day"):
            sessions = None
            per_day = t.number("sessions_per_day", 4.0, minimum=0.0, maximum=10_000.0)
        session_start = self.delay_range(t, "session_start", default_of(StationGroupSpec, "session_start"))
        return StationGroupSpec(
            name=name,
            count=count,
            id_pattern=pattern,
            csms=target,
            security_profile=profile,
            ocpp_versions=t.string_list(
                "ocpp_versions",
                default_of(StationGroupSpec, "ocpp_versions"),
                allowed=OCPP_VERSIONS,
                example='["2.0.1"]',
            ),
            tls_profile=t.reference(
                "tls_profile", "default", profiles, "TLS profile", "[tls.profiles.<name>]"
            ),
            trust=t.reference("trust", "default", trust, "trust store", "[tls.trust.<name>]"),
            password=self.password(t),
            sessions=sessions,
            sessions_per_day=per_day,
            session_duration=t.duration(
                "session_duration", default_of(StationGroupSpec, "session_duration"), positive=True
            ),
            session_start=session_start,
            meter_interval=t.duration(
                "meter_interval", default_of(StationGroupSpec, "meter_interval"), positive=True
            ),
            charge_power=t.number(
                "charge_power",
                default_of(StationGroupSpec, "charge_power"),
                minimum=0.0,
                maximum=10e6,
                positive=True,
            ),
            heartbeat_fallback=t.duration(
                "heartbeat_fallback", default_of(StationGroupSpec, "heartbeat_fallback"), positive=True
            ),
            retry_backoff=self.backoff(t),
            queue_max=t.integer("queue_max", default_of(StationGroupSpec, "queue_max"), 1, 10_000_000),
            connect_window=t.integer("connect_window", 0, 0, 1_000_000),
            endpoints=endpoints,
            network_attempts=t.integer(
                "network_attempts", default_of(StationGroupSpec, "network_attempts"), 1, MAX_NETWORK_ATTEMPTS
            ),
            fallback=t.enum("fallback", FALLBACK_KINDS, default_of(StationGroupSpec, "fallback")),
            certificates=_station_certificates(t),
            clock=read_group_clock(t, self.nodes),
        )

    def delay_range(self, t: ScenarioTable, key: str, default: tuple[float, float]) -> tuple[float, float]:
        """``key = [min, max]``: two durations, ``min <= max`` (a uniformly drawn delay)."""
        if not t.has(key):
            return default
        value = t.data[key]
        if not isinstance(value, list) or len(value) != 2:
            raise t.error(
                key, "expected [min, max], two durations", value=value, fix=f'write {key} = ["10s", "60s"]'
            )
        lo = t.ctx_duration(t.at(key, 0), value[0])
        hi = t.ctx_duration(t.at(key, 1), value[1])
        if lo > hi:
            raise t.error(key, "min is larger than max", value=None, fix="write [min, max] with min <= max")
        return (lo, hi)

    def backoff(self, t: ScenarioTable) -> RetryBackOff:
        """``retry_backoff``: OCPP's reconnect back-off (wait minimum, random range, repeat times)."""
        b = t.sub_table(
            "retry_backoff", BACKOFF_KEYS, '{ wait_minimum = "3s", random_range = "3s", repeat_times = 4 }'
        )
        default = RetryBackOff()
        if b is None:
            return default
        return RetryBackOff(
            wait_minimum=b.duration("wait_minimum", default.wait_minimum),
            random_range=b.duration("random_range", default.random_range),
            repeat_times=b.integer("repeat_times", default.repeat_times, 0, 64),
        )


def _check_id_pattern(ctx: LoadContext, path: FieldPath, pattern: str, count: int) -> None:
    """Check a station ``id_pattern``: only the field ``n``, a safe format spec, valid OCPP identities.

    Args:
        ctx: the load's context.
        path: where the pattern is.
        pattern: the pattern.
        count: stations in the group (a pattern without ``{n}`` is fine for one station).

    Raises:
        ConfigError: a field other than ``n``, attribute or index access, a conversion, nested or huge
            format specs, a spec that cannot format an integer, or ids that are not OCPP identities.
    """
    fix = ID_PATTERN_FIX
    try:
        pieces = list(string.Formatter().parse(pattern))
    except ValueError as exc:
        raise ctx.error(
            path, f"invalid format pattern: {exc}", value=pattern, fix=fix + "; write {{ for {"
        ) from None
    has_n = False
    for _literal, field, spec, conversion in pieces:
        if field is None:
            continue
        if field != "n" or conversion is not None:
            raise ctx.error(
                path, f"id_pattern may only use the field {{n}}, not {{{field}}}", value=pattern, fix=fix
            )
        if spec and (
            "{" in spec or "}" in spec or any(int(d) > MAX_IDENTITY_LENGTH for d in re.findall(r"\d+", spec))
        ):
            raise ctx.error(path, "format spec too wide or nested", value=pattern, fix=fix)
        try:
            format(1, spec or "")
        except ValueError as exc:
            raise ctx.error(path, f"bad format spec {spec!r} for n: {exc}", value=pattern, fix=fix) from None
        has_n = True
    if not has_n and count > 1:
        raise ctx.error(
            path,
            f"id_pattern has no {{n}}, so all {count} stations would get the same id",
            value=pattern,
            fix=fix,
        )
    for n in (1, count):
        sid = pattern.format(n=n)
        if not valid_identity(sid):
            raise ctx.error(path, STATION_ID_RULE.format(sid=sid), value=pattern, fix=fix)


def _listener_profile(t: ScenarioTable, spec: type[CsmsSpec | ControllerSpec]) -> tuple[int, bool]:
    """A listener's ``security_profile`` and ``insecure_allow_plain_ws`` (profile 1 needs the opt-in); the
    defaults are ``spec``'s.

    Raises:
        ConfigError: profile 1 without ``insecure_allow_plain_ws = true``.
    """
    profile = t.profile_number("security_profile", default_of(spec, "security_profile"))
    insecure = t.boolean("insecure_allow_plain_ws", default_of(spec, "insecure_allow_plain_ws"))
    if profile == 1 and not insecure:
        raise t.error(
            "security_profile",
            "security profile 1 sends passwords over plain ws://",
            value=1,
            fix="add insecure_allow_plain_ws = true (trusted networks only, OCPP A00.FR.201) "
            "or use security_profile = 2",
        )
    return profile, insecure


def _valid_host(host: str) -> bool:
    """An IP address, or a DNS name of at most 253 characters whose labels are 1..63 letters, digits or
    hyphens, not starting or ending with a hyphen (RFC 1035 §2.3.1 as relaxed by RFC 1123 §2.1).
    """
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return True
    labels = host.rstrip(".").split(".")
    return len(host) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in labels)


def _signing(t: ScenarioTable) -> SigningSpec:
    """A CSMS's ``signing`` table (how it signs station CSRs)."""
    c = t.sub_table("signing", SIGNING_KEYS, '{ max_concurrent = 8, validity = "365d" }')
    if c is None:
        return SigningSpec()
    return SigningSpec(
        max_concurrent=c.integer("max_concurrent", default_of(SigningSpec, "max_concurrent"), 1, 10_000),
        max_queued=c.integer("max_queued", default_of(SigningSpec, "max_queued"), 1, 10_000_000),
        validity=c.duration("validity", default_of(SigningSpec, "validity"), positive=True),
    )


def _station_certificates(t: ScenarioTable) -> StationCertificatesSpec:
    """A station group's ``certificates`` table (its certificate device model); the key size is checked by
    the station layer's rules."""
    c = t.sub_table("certificates", STATION_CERTIFICATE_KEYS, '{ renewal_threshold = "30d" }')
    if c is None:
        return StationCertificatesSpec()
    d = StationCertificatesSpec()
    spec = StationCertificatesSpec(
        key_type=c.enum("key_type", KEY_TYPES, d.key_type),
        key_size=c.optional_integer("key_size", 256, 8192),
        renewal_threshold=c.duration("renewal_threshold", d.renewal_threshold),
        sign_wait_minimum=c.duration(
            "sign_wait_minimum", d.sign_wait_minimum, positive=True, whole_seconds=True
        ),
        sign_repeat_times=c.integer("sign_repeat_times", d.sign_repeat_times, 0, 16),
        renewed_attempts=c.integer("renewed_attempts", d.renewed_attempts, 1, 100),
    )
    try:
        spec.settings("evsim")
    except ConfigError as exc:  # the station layer's own limits (key sizes, the longest waits)
        field = (exc.path or "").rsplit(".", 1)[-1].removesuffix("_s")
        raise c.error(field, exc.message, value=exc.value, fix=exc.fix or "see scenarios/README.md") from None
    return spec
