"""A :class:`~evsim.scenario.model.Scenario` back as the TOML document it stands for, so one built in Python is
validated by exactly the checks a file gets.

Theory of operation. The loader validates while it reads (every reference, range, name and whole-scenario
rule lives in its passes), so there is one validator and it reads documents. :func:`validate_scenario` writes a
scenario as the document a file would hold — every field explicit, durations as numbers of seconds — and runs
the loader's passes on it: the same errors, with field paths (there is no file, so no line numbers). A TLS
profile built in code (``TlsProfileSpec.tls``) is checked by the TLS layer's own rules
(:func:`evsim.scenario.read_tls.validate_tls_profile`) and kept as it is.
"""

from __future__ import annotations

from typing import Any

import attrs

from evsim.backoff import RetryBackOff
from evsim.cpu import CpuSpec
from evsim.scenario.model import (
    CertificateSpec,
    ChangeSpec,
    ControllerSpec,
    CsmsSpec,
    EndpointSpec,
    EnergyManagerSpec,
    LinkSpec,
    PinSetSpec,
    PinSpec,
    Scenario,
    StationGroupSpec,
    TimelineEvent,
    TlsProfileSpec,
    TrustSpec,
)
from evsim.world.actions import Link
from evsim.world.clocks import ClockSpec


def _drop_none(table: dict[str, Any]) -> dict[str, Any]:
    """The table without its None values: TOML has no null, so an unset optional key is left out."""
    return {key: value for key, value in table.items() if value is not None}


def _lists(value: Any) -> Any:
    """Tuples (the model's sequences) as lists (what ``tomllib`` returns for arrays), recursively."""
    if isinstance(value, tuple | list):
        return [_lists(v) for v in value]
    return value


# ---------------------------------------------------------------- one writer per table
#
# Each writer returns the table a file would hold for one spec, every key explicit and durations as seconds
# (the loader reads a bare number as seconds). Keys that a file may only give in some configurations are
# written only there: the loader would refuse them elsewhere (``ocsp_stapling`` without TLS, both
# ``sessions`` and ``sessions_per_day``, both ``csms`` and ``endpoints``).


def _certificate(c: CertificateSpec) -> dict[str, Any]:
    out = {"root": c.root, "validity": c.validity, "not_before": c.not_before, "key_type": c.key_type}
    return out | ({"issuer": c.issuer} if c.issuer is not None else {})


def _backoff(b: RetryBackOff) -> dict[str, Any]:
    return {"wait_minimum": b.wait_minimum, "random_range": b.random_range, "repeat_times": b.repeat_times}


def _endpoint(e: EndpointSpec) -> dict[str, Any]:
    return _drop_none(
        {
            e.kind: e.name,
            "priority": e.priority,
            "trust": e.trust,
            "tls_profile": e.tls_profile,
            "pins": e.pins,
        }
    )


def _profile(p: TlsProfileSpec) -> dict[str, Any]:
    out: dict[str, Any] = {
        "versions": list(p.versions),
        "handshake_timeout": p.handshake_timeout,
        "cipher_suites": {v: list(s) for v, s in p.cipher_suites.items()},
    }
    if p.max_send_fragment is not None:
        out["max_send_fragment"] = p.max_send_fragment
    return out


def _trust(t: TrustSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"hostname": t.hostname, "wildcards": t.wildcards, "mode": t.mode}
    out["time_check"] = t.time_check
    if t.mode == "pki":
        out["roots"] = list(t.roots)
    if (t.crl, t.ocsp, t.on_unknown) != ("off", "off", "fail"):
        out["revocation"] = {"crl": t.crl, "ocsp": t.ocsp, "on_unknown": t.on_unknown}
    if t.max_depth is not None:
        out["max_depth"] = t.max_depth
    return out


def _pin(p: PinSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"target": p.target, "state": p.state}
    if p.csms is not None:
        out |= {"cert": f"csms.{p.csms}", "key": p.key}
    elif p.root is not None:
        out["root"] = p.root
    elif p.intermediate is not None:
        out["intermediate"] = p.intermediate
    else:
        out["spki_sha256"] = p.spki_sha256
    if p.not_after is not None:
        out["not_after"] = p.not_after
    return out


def _pin_set(s: PinSetSpec) -> dict[str, Any]:
    return {"enforcement": s.enforcement, "tofu": s.tofu, "pins": [_pin(p) for p in s.pins]}


def _change(c: ChangeSpec) -> dict[str, Any]:
    return {
        "on_peer_key_change": c.on_peer_key_change,
        "on_peer_cert_change_same_key": c.on_peer_cert_change_same_key,
    }


def _csms(c: CsmsSpec) -> dict[str, Any]:
    return _drop_none(
        {
            "host": c.host,
            "port": c.port,
            "security_profile": c.security_profile,
            "insecure_allow_plain_ws": c.insecure_allow_plain_ws,
            "ocpp_versions": list(c.ocpp_versions),
            "heartbeat_interval": c.heartbeat_interval,
            "tls_profile": c.tls_profile,
            "certificate": _certificate(c.certificate),
            "password": c.password,
            "accept_unknown_stations": c.accept_unknown_stations,
            "ocsp_stapling": c.ocsp_stapling or None,  # only profile 2 and 3 may name it
            "pins": c.pins,
            "change": c.change,
            "secondary_of": c.secondary_of,
            "behind_controller": c.behind_controller if c.security_profile == 3 else None,
            "trusted_controllers": list(c.trusted_controllers) or None,
            "client_trust": c.client_trust,
            "signing": {
                "max_concurrent": c.signing.max_concurrent,
                "max_queued": c.signing.max_queued,
                "validity": c.signing.validity,
            },
        }
    )


def _controller(c: ControllerSpec) -> dict[str, Any]:
    return _drop_none(
        {
            "host": c.host,
            "port": c.port,
            "security_profile": c.security_profile,
            "insecure_allow_plain_ws": c.insecure_allow_plain_ws,
            "tls_profile": c.tls_profile,
            "trust": c.trust,
            "certificate": _certificate(c.certificate),
            "upstream": [_endpoint(e) for e in c.upstream],
            "upstream_security_profile": c.upstream_security_profile,
            "failover": c.failover,
            "on_upstream_loss": c.on_upstream_loss,
            "upstream_connect_attempts": c.upstream_connect_attempts,
            "retry_backoff": _backoff(c.retry_backoff),
            "behind_controller": c.behind_controller if c.security_profile == 3 else None,
            "trusted_controllers": list(c.trusted_controllers) or None,
            "client_trust": c.client_trust,
            "clock": None if c.clock is None else _clock(c.clock),
            "client_auth": c.client_auth if c.security_profile == 3 else None,
            "auto_accept": c.auto_accept if c.client_auth == "pairing" else None,
            "pairing_window": c.pairing_window if c.client_auth == "pairing" else None,
        }
    )


def _clock(c: ClockSpec) -> dict[str, Any]:
    """A group's ``clock`` table (lists left out when empty: the loader refuses empty ones)."""
    out = {field.name: getattr(c, field.name) for field in attrs.fields(ClockSpec)}
    if c.set_to is not None:
        out["set_to"] = c.set_to.strftime("%Y-%m-%dT%H:%M:%SZ")
    return _drop_none({k: list(v) or None if isinstance(v, tuple) else v for k, v in out.items()})


def _group(g: StationGroupSpec) -> dict[str, Any]:
    """A station group: ``sessions`` or ``sessions_per_day``, and ``endpoints`` (with the failover keys that
    only mean something with them) or the one-CSMS shorthand ``csms``."""
    out = _drop_none(
        {
            "count": g.count,
            "id_pattern": g.id_pattern,
            "security_profile": g.security_profile,
            "ocpp_versions": list(g.ocpp_versions),
            "tls_profile": g.tls_profile,
            "trust": g.trust,
            "password": g.password,
            "session_duration": g.session_duration,
            "session_start": list(g.session_start),
            "meter_interval": g.meter_interval,
            "charge_power": g.charge_power,
            "heartbeat_fallback": g.heartbeat_fallback,
            "retry_backoff": _backoff(g.retry_backoff),
            "queue_max": g.queue_max,
            "connect_window": g.connect_window or None,
            "pins": g.pins,
            "change": g.change,
            "certificates": _drop_none(
                {
                    "key_type": g.certificates.key_type,
                    "key_size": g.certificates.key_size,
                    "renewal_threshold": g.certificates.renewal_threshold,
                    "sign_wait_minimum": g.certificates.sign_wait_minimum,
                    "sign_repeat_times": g.certificates.sign_repeat_times,
                    "renewed_attempts": g.certificates.renewed_attempts,
                }
            ),
        }
    )
    if g.clock is not None:
        out["clock"] = _clock(g.clock)
    if g.sessions_per_day is not None:
        out["sessions_per_day"] = g.sessions_per_day
    else:
        out["sessions"] = g.sessions or 0
    if g.endpoints:
        out |= {
            "endpoints": [_endpoint(e) for e in g.endpoints],
            "network_attempts": g.network_attempts,
            "fallback": g.fallback,
        }
    else:
        out["csms"] = g.csms
    return out


def _link(link: LinkSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"between": list(link.between), "latency": link.latency, "jitter": link.jitter}
    if link.bandwidth is not None:
        out["bandwidth"] = link.bandwidth
    if link.stall is not None:
        out["stall"] = {"every": link.stall.every, "for": link.stall.duration}
    if link.reset is not None:
        out["reset"] = {"every": link.reset.every}
    return out


def _event(ev: TimelineEvent) -> dict[str, Any]:
    """A ``[[timeline]]`` entry from the action's own fields; a ``link`` action's stall and reset are written as
    the inline tables a file uses."""
    params = _drop_none(dict(ev.action.fields()))
    if ev.name == "update_firmware":
        params.pop("version")  # read from the [firmware.<name>] table the entry names
    if isinstance(ev.action, Link):
        if ev.action.stall is not None:
            params["stall"] = {"every": ev.action.stall[0], "for": ev.action.stall[1]}
        if ev.action.reset is not None:
            params["reset"] = {"every": ev.action.reset}
    return {"at": ev.at, "action": ev.name, **{k: _lists(v) for k, v in params.items()}}


def _energy_manager(e: EnergyManagerSpec) -> dict[str, Any]:
    return {
        "host": e.host,
        "port": e.port,
        "stations": list(e.stations),
        "auto_accept": e.auto_accept,
        "pairing_window": e.pairing_window,
        "station_trust": e.station_trust,
        "retry": e.retry,
        "confirm": e.confirm,
    }


def _cpu(c: CpuSpec) -> dict[str, Any]:
    return {
        "cores": c.cores,
        "profile": c.profile,
        "scale": c.scale,
        "costs": dict(c.costs),
        "shared": c.shared,
    }


def scenario_document(sc: Scenario) -> dict[str, Any]:
    """The parsed-TOML form of a scenario: what ``tomllib`` would return for a file saying the same."""
    sim = sc.simulation
    simulation = _drop_none(
        {
            "name": sim.name,
            "description": sim.description or None,
            "outcome": sim.outcome or None,
            "seed": sim.seed,
            "duration": sim.duration,
            "clock": sim.clock,
            "network": sim.network,
            "start": sim.start,
            "stop_when_done": sim.stop_when_done,
        }
    )
    expect = sim.expect.as_json() if sim.expect is not None else None
    doc: dict[str, Any] = {
        "simulation": simulation,
        **({"expect": expect} if expect is not None else {}),
        "pki": {
            "key_type": sc.pki.key_type,
            "validity": sc.pki.validity,
            "organization": sc.pki.organization,
            "roots": {name: {"key_type": r.key_type} for name, r in sc.pki.roots.items() if name != "root"},
            **({"expiry_warning": sc.pki.expiry_warning} if sc.pki.expiry_warning is not None else {}),
            **(
                {
                    "intermediates": {
                        n: {"issuer": i.issuer, "key_type": i.key_type}
                        for n, i in sc.pki.intermediates.items()
                    }
                }
                if sc.pki.intermediates
                else {}
            ),
            **({"station_issuer": sc.pki.station_issuer} if sc.pki.station_issuer != "root" else {}),
        },
        "tls": {
            "profiles": {name: _profile(p) for name, p in sc.tls_profiles.items()},
            "trust": {name: _trust(t) for name, t in sc.trust_stores.items()},
            "pins": {name: _pin_set(p) for name, p in sc.pin_sets.items()},
            "change": {name: _change(c) for name, c in sc.change_policies.items()},
        },
        "csms": {name: _csms(c) for name, c in sc.csms.items()},
        "controllers": {name: _controller(c) for name, c in sc.controllers.items()},
        "stations": {name: _group(g) for name, g in sc.stations.items()},
        "energy_managers": {name: _energy_manager(e) for name, e in sc.energy_managers.items()},
        "links": [_link(link) for link in sc.links],
        "timeline": [_event(ev) for ev in sc.timeline],
        **_files(sc),
    }
    if sc.nts_servers:
        doc["nts"] = {
            n.name: _drop_none(
                {"host": n.host, "root": n.root, "validity": n.validity, "clock_error": n.clock_error}
            )
            for n in sc.nts_servers.values()
        }
    for name, spec in sc.cpu.items():  # each node's own table (a [simulation] default is already spread out)
        for section in ("csms", "controllers", "stations"):
            if name in doc[section]:
                doc[section][name]["cpu"] = _cpu(spec)
    return doc


def _files(sc: Scenario) -> dict[str, Any]:
    """The ``[firmware]``, ``[file_servers]``, ``[file_services]`` and ``[file_transfers]`` tables."""
    t = sc.file_transfers
    return {
        "firmware": {name: {"version": f.version, "size": f.size} for name, f in sc.firmware.items()},
        "file_servers": {
            name: {
                "host": s.host,
                "port": s.port,
                "tls_profile": s.tls_profile,
                "client_certificates": s.client_certificates,
                "firmware": list(s.firmware),
                "tampered": list(s.tampered),
                "accept_uploads": s.accept_uploads,
            }
            for name, s in sc.file_servers.items()
        },
        "file_services": {
            name: {"mirrors": [_drop_none(attrs.asdict(m)) for m in s.mirrors], "stations": list(s.stations)}
            for name, s in sc.file_services.items()
        },
        "file_transfers": {
            "retries": t.retries,
            "retry_interval": t.retry_interval,
            "install": t.install,
            "log_bytes": t.log_bytes,
        },
    }


def validate_scenario(sc: Scenario) -> Scenario:
    """Check a scenario exactly as the loader checks a file, and return it as the loader would.

    Raises:
        ConfigError: the first problem, with its field path and a fix (as for a file, without a line).
    """
    from evsim.scenario.loader import loads_document
    from evsim.scenario.read_tls import validate_tls_profile

    for spec in sc.tls_profiles.values():
        if spec.tls is not None:
            validate_tls_profile(spec)
    loaded = loads_document(scenario_document(sc), source=sc.source or "<python>")
    # the document carries a profile's basic fields; its engine knobs (built in code, checked above) stay
    profiles = {
        name: attrs.evolve(loaded.tls_profiles[name], tls=spec.tls, keep_sessions=spec.keep_sessions)
        for name, spec in sc.tls_profiles.items()
    }
    return attrs.evolve(loaded, tls_profiles={**loaded.tls_profiles, **profiles}, source=sc.source)


__all__ = ["scenario_document", "validate_scenario"]
