"""Peers of ``evsim explain handshake FILE --client NAME --server NAME``: nodes of a scenario file.

A client is a station group (its ``tls_profile`` and ``trust``), a controller (its upstream side) or
``attacker`` (the first ``attack_downgrade`` of the timeline: the attacker's version list). A server is a
CSMS or a controller (its ``tls_profile`` and certificate: issuing root, validity relative to the start), or
``impostor`` (the first ``attack_wrong_ca`` / ``attack_mitm``: a certificate for the impersonated CSMS's name
from the attack's root). The run's PKI is made afresh in memory with the scenario's root names; the clock is
the scenario's start. Not taken over: pins (they name keys of the run's own PKI), client certificates
(security profile 3), revocation lists, and what the timeline changes later (rotation, root installs).
"""

from __future__ import annotations

import datetime as _dt
from typing import cast

from evsim.errors import ConfigError
from evsim.explain.handshake import START, Setup
from evsim.pki import CertificateAuthority
from evsim.scenario.loader import load_scenario
from evsim.scenario.model import Scenario
from evsim.tls import Identity, TlsProfile, TrustStore
from evsim.tls.predict import ClientSide, ServerSide
from evsim.world.attacks import downgrade_profile
from evsim.world.specs import CertificateSpec

ATTACKER = "attacker"
IMPOSTOR = "impostor"


def _roots(sc: Scenario, now: _dt.datetime) -> dict[str, CertificateAuthority]:
    back = now - _dt.timedelta(days=30)
    return {
        name: CertificateAuthority.create_root(f"{name} root CA", name, now=back, key_type=spec.key_type)
        for name, spec in sc.pki.roots.items()
    }


def _trust(sc: Scenario, name: str, roots: dict[str, CertificateAuthority]) -> TrustStore:
    spec = sc.trust_stores[name]
    anchors = tuple(roots[r].cert for r in spec.roots if r in roots) if spec.mode == "pki" else ()
    return TrustStore(
        spec.name,
        anchors,
        hostname=spec.hostname,
        wildcards=spec.wildcards,
        mode=spec.mode,
        time_check=spec.time_check,  # type: ignore[arg-type]  # checked by the scenario loader
    )


def _identity(
    cert: CertificateSpec, host: str, roots: dict[str, CertificateAuthority], now: _dt.datetime
) -> Identity:
    issued = now + _dt.timedelta(seconds=cert.not_before)
    days = (cert.validity - cert.not_before) / 86_400  # timedelta takes fractional days (a "2m" certificate)
    ca = roots[cert.root]
    return Identity.from_cert_key(
        ca.issue_server(host, now=issued, days=cast(int, days), key_type=cert.key_type)
    )


def _profile(sc: Scenario, name: str) -> TlsProfile:
    return sc.tls_profiles[name].engine_profile()


def _server(
    sc: Scenario, name: str, roots: dict[str, CertificateAuthority], now: _dt.datetime
) -> tuple[ServerSide, str, str]:
    """(the server, its host name, what it is)."""
    if name in sc.csms:
        spec = sc.csms[name]
        ident = _identity(spec.certificate, spec.host, roots, now)
        return ServerSide(_profile(sc, spec.tls_profile), ident), spec.host, f"CSMS {name}"
    if name in sc.controllers:
        ctl = sc.controllers[name]
        ident = _identity(ctl.certificate, ctl.host, roots, now)
        return ServerSide(_profile(sc, ctl.tls_profile), ident), ctl.host, f"controller {name}"
    if name == IMPOSTOR:
        for event in sc.timeline:
            if event.name in ("attack_wrong_ca", "attack_mitm"):
                fields = dict(event.action.fields())
                victim = str(fields.get("impersonate") or next(iter(sc.csms)))
                host = sc.csms[victim].host if victim in sc.csms else victim
                ident = _identity(CertificateSpec(root=str(fields["root"])), host, roots, now)
                what = f"{event.name} impostor for {host} (root {fields['root']})"
                return ServerSide(TlsProfile(), ident), host, what
    known = [*sc.csms, *sc.controllers, IMPOSTOR]
    raise ConfigError(
        "no such server in the scenario", path="--server", value=name, fix=f"one of: {', '.join(known)}"
    )


def _client(
    sc: Scenario, name: str, roots: dict[str, CertificateAuthority], host: str
) -> tuple[ClientSide, str]:
    if name in sc.stations:
        group = sc.stations[name]
        trust = _trust(sc, group.trust, roots)
        return ClientSide(_profile(sc, group.tls_profile), trust, server_name=host), f"station group {name}"
    if name in sc.controllers:
        ctl = sc.controllers[name]
        trust = _trust(sc, ctl.trust, roots)
        return ClientSide(_profile(sc, ctl.tls_profile), trust, server_name=host), f"controller {name}"
    if name == ATTACKER:
        for event in sc.timeline:
            if event.name == "attack_downgrade":
                versions = tuple(str(v) for v in dict(event.action.fields())["versions"])  # type: ignore[attr-defined]
                trust = _trust(sc, "default", roots)
                return ClientSide(downgrade_profile(versions), trust, server_name=host), (
                    f"attack_downgrade client offering {list(versions)}"
                )
    known = [*sc.stations, *sc.controllers, ATTACKER]
    raise ConfigError(
        "no such client in the scenario", path="--client", value=name, fix=f"one of: {', '.join(known)}"
    )


def scenario_setup(file: str, client: str, server: str, *, connections: int = 1) -> Setup:
    """The two peers ``client`` and ``server`` of a scenario file.

    Raises:
        ConfigError: an unreadable scenario, or a name that is not a node (the fix lists the names).
    """
    sc = load_scenario(file)
    now = sc.simulation.start or START
    if now.tzinfo is None:
        now = now.replace(tzinfo=_dt.UTC)
    roots = _roots(sc, now)
    server_side, host, server_what = _server(sc, server, roots, now)
    client_side, client_what = _client(sc, client, roots, host)
    title = f"{file}: {client_what} -> {server_what}"
    return Setup("scenario", client_side, server_side, now, connections, title=title)
