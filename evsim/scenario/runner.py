"""Runs a :class:`~evsim.scenario.model.Scenario`: PKI, network and nodes inside nurseries, the timeline, faults.

Theory of operation. :func:`run_scenario` checks what this version cannot do yet (``preflight``) before
anything starts, then calls ``trio.run`` — with ``MockClock(autojump_threshold=0)`` for ``clock = "virtual"``
(time jumps to the next timer whenever every task is blocked, so a simulated day passes in seconds and two runs
with the same seed produce the same canonical event log) or on the real clock. :meth:`ScenarioRunner.run`
builds the per-run PKI, the network (in memory, or loopback TCP with every CSMS host resolved to 127.0.0.1),
one cancel scope per node (so the timeline can stop and start them), link policies, and one task that plays
the timeline. The run ends at ``duration``, or as soon as every station is done with ``stop_when_done``.

Whatever happens — the end, Ctrl-C, or a node crashing with a bug — the runner keeps what it observed, and
:class:`RunResult` says how the run ended; the CLI prints a (partial) report from it.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import random
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
import trio
import trio.testing
from cryptography import x509

from evsim import interrupts
from evsim.backoff import RetryBackOff
from evsim.clock import SimClock, real_utcnow
from evsim.errors import ConfigError, OcppError, TransportError
from evsim.link.service import Endpoint, Service
from evsim.link.slots import NetworkSlot
from evsim.metrics.rundir import Sample
from evsim.net.base import Network
from evsim.net.tcp import TcpNetwork
from evsim.net.virtual import LinkPolicy, VirtualNetwork
from evsim.nodes.admission import TrustedController
from evsim.nodes.controller import ControllerConfig, LocalController
from evsim.nodes.csms import Csms, CsmsConfig, StationRecord
from evsim.nodes.station import Station, StationConfig, peer_event_fields
from evsim.ocpp.netprofile import DEFAULT_SLOT_NUMBERS, NetworkConnectionProfile
from evsim.pki import CertKey
from evsim.pki.revocation import OcspStaple
from evsim.recorder import Event, Recorder
from evsim.runtime import tune_gc
from evsim.scenario.attacks import RedirectingNetwork, downgrade_client, downgrade_profile, mitm_relay
from evsim.scenario.loader import layer_change_policy, layer_pin_set
from evsim.scenario.model import (
    ControllerSpec,
    CsmsSpec,
    EndpointSpec,
    PinSpec,
    RetryBackOffSpec,
    Scenario,
    StationGroupSpec,
    TimelineEvent,
    TrustSpec,
)
from evsim.scenario.pki import ScenarioPki
from evsim.tls import (
    ClientTls,
    Identity,
    PeerEvent,
    PeerPolicy,
    RevocationPolicy,
    ServerTls,
    SessionStore,
    TlsProfile,
    TrustStore,
)
from evsim.tls.context import check_client_hello

#: Actions and link knobs the model accepts that this runner cannot enforce yet; refused before the run starts.
NOT_YET: dict[str, str] = {}
LINK_NOT_YET = {
    "jitter": "the in-memory network models latency only so far",
    "bandwidth": "the in-memory network models latency only so far",
    "stall": "the in-memory network cannot hold bytes back without breaking the stream yet",
}

RUN_PASSWORD = "evsim-scenario-password"  # >= 16 chars (A00.FR.205); used when a scenario sets none


@attrs.define
class RunResult:
    """What a run produced, complete or not."""

    scenario: Scenario
    recorder: Recorder
    csms: dict[str, Csms]
    stations: dict[str, Station]
    group_of: dict[str, str]
    samples: list[Sample]
    sim_elapsed: float
    wall_s: float
    outcome: str
    error: str | None = None
    controllers: dict[str, LocalController] = attrs.field(factory=dict)

    def station_records(self) -> dict[str, StationRecord]:
        """Every station record once (a primary and its secondaries share one store)."""
        out: dict[str, StationRecord] = {}
        for c in self.csms.values():
            for sid, rec in c.stations.items():
                out.setdefault(sid, rec)
        return out

    @property
    def ok(self) -> bool:
        return self.error is None and self.outcome in ("completed", "all stations done")


def _check_downgrade_versions(
    versions: tuple[str, ...], path: str, file: str | None, line: int | None
) -> None:
    """Refuse a downgrade attack this OpenSSL build cannot even start (a build without TLS 1.0/1.1)."""
    try:
        check_client_hello(downgrade_profile(versions))
    except ConfigError as exc:
        raise ConfigError(
            f"the downgrade attacker cannot be built: {exc.message}",
            path=path,
            value=list(versions),
            fix=exc.fix,
            file=file,
            line=line,
        ) from None


def preflight(scenario: Scenario) -> None:
    """Refuse, before anything starts, what the model accepts but this runner cannot enforce.

    Raises:
        ConfigError: naming the file, line, field and why.
    """
    src = scenario.source
    for i, ev in enumerate(scenario.timeline):
        if ev.action == "revoke_certificate" and ev.params.get("target") not in scenario.csms:
            raise ConfigError(
                "revoke_certificate of station certificates is not supported yet: the CSMS's trust store for "
                "station certificates has no revocation settings in scenarios",
                path=f"timeline[{i}].target",
                value=ev.params.get("target"),
                fix="revoke a CSMS certificate (stations check it with [tls.trust.<name>] revocation)",
                file=src,
                line=ev.line,
            )
        if ev.action == "attack_downgrade":
            _check_downgrade_versions(
                _strs(ev.params, "versions", ("1.2",)), f"timeline[{i}].versions", src, ev.line
            )
        if ev.action in NOT_YET:
            raise ConfigError(
                f"timeline action {ev.action!r} is not supported yet: {NOT_YET[ev.action]}",
                path=f"timeline[{i}].action",
                value=ev.action,
                fix="remove the event",
                file=src,
                line=ev.line,
            )
        if ev.action == "link":
            for knob, why in LINK_NOT_YET.items():
                if ev.params.get(knob) not in (None, 0, 0.0):
                    raise ConfigError(
                        f"link knob {knob!r} is not supported yet: {why}",
                        path=f"timeline[{i}].{knob}",
                        fix=f"remove {knob}",
                        file=src,
                        line=ev.line,
                    )
        if (
            scenario.simulation.network == "tcp"
            and ev.action == "set_network_profile"
            and ev.params.get("reconnect")
        ):
            raise ConfigError(
                "set_network_profile with reconnect = true resets the stations' links, which needs the in-memory "
                "network",
                path=f"timeline[{i}].reconnect",
                fix='set reconnect = false (the stations move at their next reconnect) or use network = "memory"',
                file=src,
                line=ev.line,
            )
        if scenario.simulation.network == "tcp" and ev.action in ("partition", "heal", "link"):
            raise ConfigError(
                f"{ev.action!r} needs the in-memory network (loopback TCP cannot be partitioned from inside)",
                path=f"timeline[{i}].action",
                fix='use network = "memory"',
                file=src,
                line=ev.line,
            )
    for i, link in enumerate(scenario.links):
        for knob, why in LINK_NOT_YET.items():
            value = getattr(link, knob)
            if value not in (None, 0, 0.0):
                raise ConfigError(
                    f"link knob {knob!r} is not supported yet: {why}",
                    path=f"links[{i}].{knob}",
                    value=value if not attrs.has(type(value)) else None,
                    fix=f"remove {knob}",
                    file=src,
                    line=link.line,
                )
        if scenario.simulation.network == "tcp":
            raise ConfigError(
                "link policies need the in-memory network",
                path=f"links[{i}]",
                fix='remove [[links]] or use network = "memory"',
                file=src,
                line=link.line,
            )


class _Node:
    """A node's cancel scope, so the timeline can stop and start it."""

    def __init__(self, name: str, run: Callable[..., Any]) -> None:
        self.name = name
        self._run = run
        self._scope: trio.CancelScope | None = None

    @property
    def running(self) -> bool:
        return self._scope is not None

    async def _body(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope() as scope:
            self._scope = scope
            try:
                await self._run(task_status=task_status)
            finally:
                self._scope = None

    async def start(self, nursery: trio.Nursery) -> None:
        if self._scope is None:
            await nursery.start(self._body)

    def stop(self) -> None:
        if self._scope is not None:
            self._scope.cancel()


class ScenarioRunner:
    """Builds and runs one scenario (call :meth:`run` inside ``trio.run``; see :func:`run_scenario`)."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        sink: Callable[[Event], None] | None = None,
        on_sample: Callable[[Sample], None] | None = None,
        sample_every: float | None = None,
        echo: bool = False,
    ) -> None:
        self.scenario = scenario
        self.echo = echo
        self.sink = sink
        self.on_sample = on_sample
        sim = scenario.simulation
        self.sample_every = sample_every or max(1.0, sim.duration / 400)
        self.csms: dict[str, Csms] = {}
        self.csms_nodes: dict[str, _Node] = {}
        self.stations: dict[str, Station] = {}
        self.station_nodes: dict[str, _Node] = {}
        self.group_of: dict[str, str] = {}
        self.controllers: dict[str, LocalController] = {}
        self.controller_nodes: dict[str, _Node] = {}
        self.ports: dict[str, int] = {}  # CSMS and controller name -> bound port
        self.stores: dict[str, dict[str, StationRecord]] = {}  # primary CSMS name -> shared station records
        self.samples: list[Sample] = []
        self.recorder: Recorder | None = None
        self.peer_policies: dict[str, PeerPolicy] = {}
        self.endpoint_policies: dict[str, list[PeerPolicy]] = {}  # endpoints with their own pins
        self.csms_policies: dict[str, PeerPolicy] = {}
        self.csms_certs: dict[str, CertKey] = {}
        self.clock: SimClock | None = None
        self.outcome = "not started"

    # ------------------------------------------------------------------ building

    def _profile(self, name: str) -> TlsProfile:
        spec = self.scenario.tls_profiles.get(name)
        if spec is None:
            return TlsProfile()
        if spec.tls is not None:
            return spec.tls
        kwargs: dict[str, Any] = {"versions": spec.versions, "handshake_timeout_s": spec.handshake_timeout}
        if spec.cipher_suites:
            kwargs["cipher_suites"] = dict(spec.cipher_suites)
        if spec.max_send_fragment is not None:
            kwargs["max_send_fragment"] = spec.max_send_fragment
        return TlsProfile(**kwargs)

    def _trust(self, name: str, roots: Iterable[str] | None = None) -> TrustStore:
        spec = self.scenario.trust_stores.get(name)
        root_names = tuple(roots) if roots is not None else (spec.roots if spec else ("root",))
        anchors = tuple(self.pki.roots[r].cert for r in root_names)
        if spec is None:
            return TrustStore(name, anchors)
        return TrustStore(
            name,
            anchors if spec.mode == "pki" else (),
            hostname=spec.hostname,
            wildcards=spec.wildcards,
            **self._trust_model_kwargs(spec, root_names),
        )

    def _server_tls(self, spec: CsmsSpec, identity: Identity) -> ServerTls | None:
        if spec.security_profile == 1:
            return None
        profile = self._profile(spec.tls_profile)
        if spec.security_profile == 3:
            return ServerTls.build(
                profile,
                identity,
                trust=TrustStore("ChargingStationRoots", (self.pki.roots["root"].cert,), hostname="off"),
                client_auth="required",
                ocsp=self._ocsp_staple(spec, identity.leaf),
                peer=self._csms_peer_policy(spec),
            )
        return ServerTls.build(profile, identity, ocsp=self._ocsp_staple(spec, identity.leaf))

    def _client_tls(self, group: StationGroupSpec, station_id: str) -> ClientTls | None:
        if group.security_profile == 1:
            return None
        identity = None
        if group.security_profile == 3:
            cert = self.pki.station_certificate(station_id, validity_s=self.scenario.pki.validity)
            identity = Identity.from_cert_key(cert)
        return ClientTls.build(
            self._profile(group.tls_profile),
            self._trust(group.trust, self.group_roots[group.name]),
            identity,
            peer=self.peer_policies.get(station_id),
        )

    def _sessions(self, group: StationGroupSpec) -> tuple[int, tuple[float, float]]:
        if group.sessions_per_day is None:
            return group.sessions or 0, group.session_start
        days = self.scenario.simulation.duration / 86_400
        count = max(1, round(group.sessions_per_day * days))
        gap = 86_400 / group.sessions_per_day  # mean time between session starts
        return count, (0.0, max(1.0, 2 * gap - group.session_duration))

    def _station_config(self, group: StationGroupSpec, sid: str, csms: CsmsSpec, port: int) -> StationConfig:
        scheme = "ws" if group.security_profile == 1 else "wss"
        sessions, start = self._sessions(group)
        rb = group.retry_backoff
        return StationConfig(
            station_id=sid,
            csms_url=f"{scheme}://{csms.host}:{port}/ocpp",
            security_profile=group.security_profile,
            password=(group.password or csms.password or RUN_PASSWORD)
            if group.security_profile < 3
            else None,
            ocpp_versions=group.ocpp_versions,
            sessions=sessions,
            session_start_s=start,
            session_duration_s=group.session_duration,
            meter_interval_s=group.meter_interval,
            charge_power_w=group.charge_power,
            default_heartbeat_s=group.heartbeat_fallback,
            backoff=RetryBackOff(rb.wait_minimum, rb.random_range, rb.repeat_times),
            queue_max=group.queue_max,
        )

    def _select(self, selector: str) -> list[str]:
        """Network host names of a selector: a CSMS (its host), a group or station id (station ids), or ``*``."""
        sc = self.scenario
        if selector == "*":
            return (
                [c.host for c in sc.csms.values()]
                + [c.host for c in sc.controllers.values()]
                + sc.station_ids()
            )
        if selector in sc.csms:
            return [sc.csms[selector].host]
        if selector in sc.controllers:
            return [sc.controllers[selector].host]
        if selector in sc.stations:
            return sc.stations[selector].station_ids()
        return [selector]

    def _pairs(self, between: tuple[str, str]) -> list[tuple[str, str]]:
        a, b = between
        return [(x, y) for x in self._select(a) for y in self._select(b) if x != y]

    # ------------------------------------------------------------------ running

    async def run(self) -> None:
        sc = self.scenario
        sim = sc.simulation
        start = sim.start if sim.start is not None else real_utcnow()
        self.clock = clock = SimClock.start(start)
        self.recorder = recorder = Recorder(clock, sink=self.sink, echo=self.echo)
        self.pki = ScenarioPki.build(sc, start)
        self._lc_identities: dict[str, Identity] = {}
        self.group_roots: dict[str, tuple[str, ...]] = {}
        for g in sc.stations.values():
            trust_spec = sc.trust_stores.get(g.trust)
            self.group_roots[g.name] = trust_spec.roots if trust_spec else ("root",)
        inner: Network
        if sim.network == "tcp":
            hosts = [c.host for c in sc.csms.values()] + [c.host for c in sc.controllers.values()]
            inner = TcpNetwork(resolve=dict.fromkeys(hosts, "127.0.0.1"))
        else:
            inner = VirtualNetwork()
        self.vnet = inner if isinstance(inner, VirtualNetwork) else None
        self.net = RedirectingNetwork(inner)
        recorder.emit("runner", "run_started", scenario=sim.name, seed=sim.seed, stations=sc.station_count())
        self.outcome = "running"
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            ports = self.ports
            for spec in sc.csms.values():
                ports[spec.name] = await self._start_csms(spec, nursery)
            # links first: no station (or controller) may connect before its link has its policy
            for link in sc.links:
                self._apply_link(link.between, latency=link.latency)
                if link.reset is not None:
                    nursery.start_soon(self._resets, link.between, link.reset.every)
            for lc_spec in sc.controllers.values():  # dependency order: upstream controllers first
                ports[lc_spec.name] = await self._start_controller(lc_spec, nursery)
            for group in sc.stations.values():
                csms_spec = sc.csms[group.csms]
                for sid in group.station_ids():
                    self.group_of[sid] = group.name
                    self._make_peer_policy(group, sid)
                    config = (
                        self._failover_station_config(group, sid)
                        if group.endpoints
                        else self._station_config(group, sid, csms_spec, ports[csms_spec.name])
                    )
                    station = Station(
                        config,
                        network=self.net,
                        client_tls=self._client_tls(group, sid),
                        clock=clock,
                        recorder=recorder,
                        rng=random.Random(f"{sim.seed}:{sid}"),
                    )
                    self.stations[sid] = station
                    station.tls_sessions = self._session_store(group)
                    self.station_nodes[sid] = node = _Node(sid, station.run)
                    await node.start(nursery)
            nursery.start_soon(self._timeline, nursery)
            nursery.start_soon(self._sampler)
            with trio.move_on_after(sim.duration):
                if sim.stop_when_done and self.stations:
                    for st in self.stations.values():
                        await st.done.wait()
                    self.outcome = "all stations done"
                else:
                    await trio.sleep_forever()
            if self.outcome == "running":
                self.outcome = "completed"
            self._take_sample()
            recorder.emit("runner", "run_ended", outcome=self.outcome)
            nursery.cancel_scope.cancel()

    async def _start_csms(self, spec: CsmsSpec, nursery: trio.Nursery) -> int:
        assert self.clock is not None and self.recorder is not None
        cert = self.pki.server_certificate(spec.host, spec.certificate)
        self.csms_certs[spec.name] = cert
        tcp = self.scenario.simulation.network == "tcp"
        csms = Csms(
            CsmsConfig(
                name=spec.name,
                host=spec.host,
                port=0 if tcp else spec.port,
                security_profile=spec.security_profile,
                insecure_allow_plain_ws=spec.insecure_allow_plain_ws,
                ocpp_versions=spec.ocpp_versions,
                heartbeat_interval=int(spec.heartbeat_interval),
                organization=self.pki.organization,
                default_password=spec.password or RUN_PASSWORD,
                accept_unknown_stations=spec.accept_unknown_stations,
                behind_controller=spec.behind_controller,
                trusted_controllers=self._trusted_controllers(spec.trusted_controllers),
            ),
            network=self.net,
            server_tls=self._server_tls(spec, Identity.from_cert_key(cert)),
            clock=self.clock,
            recorder=self.recorder,
            store=self.stores.setdefault(spec.secondary_of or spec.name, {}),
        )
        self.csms[spec.name] = csms
        self.csms_nodes[spec.name] = node = _Node(spec.name, csms.serve)
        await node.start(nursery)
        assert csms.address is not None
        return csms.address[1]

    def _apply_link(self, between: tuple[str, str], *, latency: float) -> None:
        if self.vnet is None:
            return
        for a, b in self._pairs(between):
            self.vnet.set_link_policy(a, b, LinkPolicy(latency_s=latency))

    async def _resets(self, between: tuple[str, str], every: float) -> None:
        assert self.vnet is not None and self.recorder is not None
        pairs = self._pairs(between)
        while True:
            await trio.sleep(every)
            for a, b in pairs:
                self.vnet.partition(a, b)
                self.vnet.heal(a, b)
            self.recorder.emit("runner", "link_reset", between=f"{between[0]}<->{between[1]}")

    def interrupt(self) -> None:
        """Ctrl-C: end the run here (called by the run loop between task steps, before every task is
        cancelled). The result is what was observed up to now, marked ``interrupted``; what the nodes do
        while they are torn down is not recorded, so it cannot add failures a complete run would not have."""
        if self.outcome not in ("not started", "running"):
            return  # the run had already ended
        self.outcome = "interrupted"
        if self.recorder is not None and self.clock is not None:
            self._take_sample()
            self.recorder.emit("runner", "run_ended", outcome=self.outcome)
            self.recorder.stop()

    async def _sampler(self) -> None:
        while True:
            self._take_sample()
            await trio.sleep(self.sample_every)

    def _take_sample(self) -> None:
        assert self.clock is not None and self.recorder is not None
        if self.recorder.stopped:
            return  # interrupted: the last sample is the one taken then
        counts = self.recorder.counts
        csms = list(self.csms.values())
        csms_handshake_failures = sum(sum(c.statistics_handshake_failures().values()) for c in csms)
        # One pass over the stations (not one per figure): at 1,000 stations this ran ~1 % of a scale run.
        connected = queued = done = connect_failures = 0
        for st in self.stations.values():
            if st.session is not None:
                connected += 1
            queued += len(st.queue)
            if st.done.is_set():
                done += 1
            failures = st.connect_failures
            if failures:
                connect_failures += sum(failures.values())
        sample = Sample(
            t=round(self.clock.elapsed(), 6),
            connected_stations=connected,
            stations=len(self.stations),
            messages_total=sum(c.totals["messages"] for c in csms),
            handshakes_ok=counts["handshake_ok"],
            handshakes_failed=counts["handshake_failed"] - csms_handshake_failures,
            tx_started=sum(c.totals["tx_started"] for c in csms),
            tx_ended=sum(c.totals["tx_ended"] for c in csms),
            queued_messages=queued,
            done_stations=done,
            connect_failures=connect_failures,
        )
        self.samples.append(sample)
        if self.on_sample is not None:
            self.on_sample(sample)

    # ------------------------------------------------------------------ timeline

    async def _timeline(self, nursery: trio.Nursery) -> None:
        assert self.clock is not None and self.recorder is not None
        t0 = self.clock.t0
        for ev in self.scenario.timeline:
            await trio.sleep_until(t0 + ev.at)
            self.recorder.emit("timeline", ev.action, **{k: _plain(v) for k, v in ev.params.items()})
            await self._apply(ev, nursery)

    def _targets(self, target: str) -> tuple[list[str], list[str]]:
        """(csms names, station ids) named by a target selector."""
        sc = self.scenario
        if target in sc.csms:
            return [target], []
        if target in sc.stations:
            return [], sc.stations[target].station_ids()
        return [], [target]

    async def _apply(self, ev: TimelineEvent, nursery: trio.Nursery) -> None:
        assert self.clock is not None and self.recorder is not None
        p = ev.params
        action = ev.action
        at = self.clock.elapsed()
        if action in ("stop", "start") and str(p["target"]) in self.scenario.controllers:
            await self._stop_start_controller(str(p["target"]), action, nursery)
        elif action == "set_network_profile":
            await self._set_network_profile(ev, nursery)
        elif action in ("stop", "start"):
            csms_names, station_ids = self._targets(str(p["target"]))
            for name in csms_names:
                host = self.scenario.csms[name].host
                if action == "stop":
                    self.csms_nodes[name].stop()
                    if self.vnet is not None:
                        self.vnet.set_host_down(host)
                else:
                    if self.vnet is not None:
                        self.vnet.set_host_down(host, down=False)
                    await self.csms_nodes[name].start(nursery)
            for sid in station_ids:
                if action == "stop":
                    self.station_nodes[sid].stop()
                else:
                    await self.station_nodes[sid].start(nursery)
        elif action in ("partition", "heal"):
            assert self.vnet is not None
            for a, b in self._pairs(_pair(p["between"])):
                (self.vnet.partition if action == "partition" else self.vnet.heal)(a, b)
        elif action == "link":
            self._apply_link(_pair(p["between"]), latency=_num(p, "latency", 0.0))
        elif action in ("expire_certificate", "renew_certificate", "rotate_certificate"):
            csms_names, station_ids = self._targets(str(p["target"]))
            for name in csms_names:
                spec = self.scenario.csms[name]
                if action == "rotate_certificate" and p.get("new_key", True):
                    self.pki.next_csms_key(spec.host)
                if action == "expire_certificate":
                    cert = self.pki.expired_server_certificate(spec.host, spec.certificate, at=at)
                else:
                    validity = _num(p, "validity", spec.certificate.validity)
                    cert = self.pki.server_certificate(
                        spec.host, attrs.evolve(spec.certificate, validity=validity), at=at
                    )
                self._install_server_certificate(spec, cert)
            for sid in station_ids:
                group = self.scenario.stations[self.group_of[sid]]
                if group.security_profile == 3:
                    self.pki.station_certificate(
                        sid, validity_s=self.scenario.pki.validity, at=at, renew=True
                    )
                    self.stations[sid].client_tls = self._client_tls(group, sid)
        elif action in ("install_root", "remove_root"):
            _, station_ids = self._targets(str(p["target"]))
            root = str(p["root"])
            for group_name in {self.group_of[s] for s in station_ids}:
                roots = [r for r in self.group_roots[group_name] if r != root]
                if action == "install_root":
                    roots.append(root)
                self.group_roots[group_name] = tuple(roots)
            for sid in station_ids:
                group = self.scenario.stations[self.group_of[sid]]
                if not self.group_roots[group.name]:
                    self.recorder.emit("timeline", "trust_store_empty", group=group.name)
                    continue
                self.stations[sid].client_tls = self._client_tls(group, sid)
        elif action == "attack_downgrade":
            spec = self.scenario.csms[str(p["target"])]
            port = self.csms[spec.name].address
            assert port is not None
            versions = _strs(p, "versions", ("1.2",))
            trust = self._trust("default")
            for i in range(int(_num(p, "count", 1))):
                nursery.start_soon(
                    functools.partial(
                        downgrade_client,
                        f"attacker-downgrade-{i + 1}",
                        self.net,
                        spec.host,
                        port[1],
                        versions=versions,
                        anchors=trust,
                        clock=self.clock,
                        recorder=self.recorder,
                    )
                )
        elif action in ("attack_wrong_ca", "attack_mitm"):
            await self._attack_redirect(ev, nursery)
        elif action == "release_pin":
            self._release_pin(ev)
        elif action == "revoke_certificate":
            self._revoke_certificate(ev)
        else:  # pragma: no cover - preflight refuses the rest
            raise ConfigError(
                f"timeline action {action!r} is not supported", line=ev.line, file=self.scenario.source
            )

    async def _attack_redirect(self, ev: TimelineEvent, nursery: trio.Nursery) -> None:
        assert self.clock is not None and self.recorder is not None
        p = ev.params
        _, victims = self._targets(str(p["target"]))
        real_name = str(p.get("impersonate") or self.scenario.stations[self.group_of[victims[0]]].csms)
        real = self.scenario.csms[real_name]
        real_addr = self.csms[real_name].address
        assert real_addr is not None
        rogue = str(p.get("root") or "rogue")
        kind = "impostor" if ev.action == "attack_wrong_ca" else "mitm"
        attacker_host = f"{kind}-{real_name}.attacker"
        fake = self.pki.server_certificate(
            real.host, real.certificate, at=self.clock.elapsed() - 3600, root=rogue
        )
        server_tls = ServerTls.build(self._profile(real.tls_profile), Identity.from_cert_key(fake))
        name = f"attacker-{kind}"
        if kind == "impostor":
            impostor = Csms(
                CsmsConfig(
                    name=name,
                    host=attacker_host,
                    port=real_addr[1],
                    security_profile=2,
                    default_password=RUN_PASSWORD,
                ),
                network=self.net,
                server_tls=server_tls,
                clock=self.clock,
                recorder=self.recorder,
            )
            node = _Node(name, impostor.serve)
        else:
            listener = await self.net.listen(attacker_host, real_addr[1])
            upstream_tls = ClientTls.build(TlsProfile(), self._trust("default"))

            async def relay(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                assert self.clock is not None and self.recorder is not None
                await mitm_relay(
                    name,
                    listener,
                    self.net,
                    server_tls=server_tls,
                    upstream_tls=upstream_tls,
                    upstream=(real.host, real_addr[1]),
                    clock=self.clock,
                    recorder=self.recorder,
                    task_status=task_status,
                )

            node = _Node(name, relay)
        await node.start(nursery)
        self.net.redirect(victims, real.host, attacker_host)
        # reconnect the victims now: drop their current connections to the real CSMS
        if self.vnet is not None:
            for sid in victims:
                self.vnet.partition(sid, real.host)
                self.vnet.heal(sid, real.host)
        duration = p.get("duration")
        if duration is not None:
            nursery.start_soon(self._end_attack, _num(p, "duration", 0.0), node, victims, real.host, name)

    async def _end_attack(self, after: float, node: _Node, victims: list[str], host: str, name: str) -> None:
        assert self.recorder is not None
        await trio.sleep(after)
        self.net.restore(victims, host)
        node.stop()
        self.recorder.emit("timeline", "attack_ended", attacker=name)

    # ------------------------------------------------------------------ TLS model (scenario-tls)

    def _trust_model_kwargs(self, spec: TrustSpec, roots: Iterable[str]) -> dict[str, Any]:
        """The TrustStore keywords of the TLS-model knobs of a trust spec: mode, time check, depth, and the
        revocation policy with the CRLs the scenario PKI publishes now for ``roots``."""
        crls = tuple(self.pki.crl(r) for r in roots) if spec.crl != "off" else ()
        revocation = RevocationPolicy(spec.crl, crls, spec.ocsp, spec.on_unknown)  # type: ignore[arg-type]
        return {
            "mode": spec.mode,
            "time_check": spec.time_check,
            "revocation": revocation,
            "max_depth": spec.max_depth,
        }

    def _ocsp_staple(self, spec: CsmsSpec, cert: x509.Certificate) -> OcspStaple | None:
        """The CSMS's OCSP staple provider when it staples (``ocsp_stapling``)."""
        if not spec.ocsp_stapling:
            return None
        assert self.clock is not None
        return self.pki.staple(spec.certificate.root, cert, self.clock.utcnow)

    def _revoke_certificate(self, ev: TimelineEvent) -> None:
        """``revoke_certificate`` of a CSMS: its root publishes a new CRL and its responder answers
        ``revoked``. Stations whose trust store checks CRLs get a new trust store value, hence a new context,
        for their next connection; the CSMS staples the new status from its next handshake. Open
        connections are undisturbed (TLS checks certificates only during the handshake)."""
        assert self.clock is not None
        name = str(ev.params["target"])
        spec = self.scenario.csms[name]
        self.pki.revoke(spec.certificate.root, self.csms_certs[name].cert, at=self.clock.elapsed())
        self._install_server_certificate(spec, self.csms_certs[name])
        for sid, station in self.stations.items():
            group = self.scenario.stations[self.group_of[sid]]
            trust = self.scenario.trust_stores.get(group.trust)
            if trust is not None and trust.crl != "off" and group.security_profile >= 2:
                station.client_tls = self._client_tls(group, sid)

    def _install_server_certificate(self, spec: CsmsSpec, cert: CertKey) -> None:
        """Make ``cert`` the CSMS's certificate for its next handshakes (with a fresh staple)."""
        self.csms_certs[spec.name] = cert
        self.csms[spec.name].server_tls = self._server_tls(spec, Identity.from_cert_key(cert))

    def _session_store(self, group: StationGroupSpec) -> SessionStore | None:
        """A station's session store when its profile has a ``session`` table (else full handshakes only, as
        before sessions were configurable: shipped scenarios' logs do not change)."""
        spec = self.scenario.tls_profiles.get(group.tls_profile)
        if spec is None or spec.tls is None or not spec.keep_sessions:
            return None
        return SessionStore(spec.tls.session.cache_entries)

    def _pin_spki(self, pin: PinSpec) -> str:
        """The run's key hash a pin names (keys are generated per run)."""
        if pin.spki_sha256 is not None:
            return pin.spki_sha256
        if pin.root is not None:
            return self.pki.root_spki(pin.root)
        assert pin.csms is not None
        spec = self.scenario.csms[pin.csms]
        return self.pki.csms_spki(spec.host, pin.key, spec.certificate.key_type)

    def _csms_peer_policy(self, spec: CsmsSpec) -> PeerPolicy | None:
        """The CSMS's server-side PeerPolicy (pins / change on station certificates), made once; its events
        are recorded at the CSMS (a CSMS sends no SecurityEventNotification)."""
        if spec.pins is None and spec.change is None:
            return None
        if spec.name not in self.csms_policies:
            assert self.clock is not None and self.recorder is not None
            sc, recorder = self.scenario, self.recorder
            pins = None
            if spec.pins is not None:
                pins = layer_pin_set(sc.pin_sets[spec.pins], self._pin_spki, start=self.clock.start_utc)
            change = None if spec.change is None else layer_change_policy(sc.change_policies[spec.change])

            def sink(event: PeerEvent) -> None:
                recorder.emit(spec.name, event.event, **peer_event_fields(event))

            self.csms_policies[spec.name] = PeerPolicy(
                side="server", pins=pins, change=change, sink=sink, name=spec.name
            )
        return self.csms_policies[spec.name]

    def _make_peer_policy(self, group: StationGroupSpec, sid: str) -> None:
        """Give the station its own PeerPolicy (own pins and memory) when its group names pins or change."""
        if group.pins is not None or group.change is not None:
            self.peer_policies[sid] = self._station_peer_policy(group.pins, group.change, sid, name=sid)

    def _endpoint_peer_policy(self, group: StationGroupSpec, sid: str, ep: EndpointSpec) -> PeerPolicy | None:
        """A station's own PeerPolicy for an endpoint with its own ``pins`` (the group's change policy too)."""
        if ep.pins is None:
            return None
        policy = self._station_peer_policy(ep.pins, group.change, sid, name=f"{sid}:{ep.name}")
        self.endpoint_policies.setdefault(sid, []).append(policy)
        return policy

    def _station_peer_policy(
        self, pins: str | None, change: str | None, sid: str, *, name: str
    ) -> PeerPolicy:
        """A client PeerPolicy from named pin set / change policy (pins resolved against the run's PKI), whose
        events go to station ``sid``."""
        assert self.clock is not None
        sc = self.scenario

        def sink(event: PeerEvent) -> None:
            self.stations[sid].on_peer_event(event)  # events come only from connections: the station exists

        return PeerPolicy(
            side="client",
            pins=None
            if pins is None
            else layer_pin_set(sc.pin_sets[pins], self._pin_spki, start=self.clock.start_utc),
            change=None if change is None else layer_change_policy(sc.change_policies[change]),
            sink=sink,
            name=name,
        )

    def _release_pin(self, ev: TimelineEvent) -> None:
        """``release_pin``: each target station releases its pins of the named key (a new epoch: its context
        is rebuilt for the next connection; the open connection is undisturbed)."""
        assert self.clock is not None
        p = ev.params
        ref = PinSpec(
            target="any",
            spki_sha256=None if p.get("spki_sha256") is None else str(p["spki_sha256"]),
            csms=None if p.get("cert") is None else str(p["cert"]).removeprefix("csms."),
            key=int(_num(p, "key", 0)),
            root=None if p.get("root") is None else str(p["root"]),
        )
        spki = self._pin_spki(ref)
        _, station_ids = self._targets(str(p["target"]))
        reason = f"operator (timeline line {ev.line})"
        for sid in station_ids:
            self.peer_policies[sid].release_pin(spki, now=self.clock.utcnow(), reason=reason)
            for policy in self.endpoint_policies.get(sid, ()):  # endpoints with their own pins
                with contextlib.suppress(ConfigError):  # "no pin has this key": that endpoint keeps its pins
                    policy.release_pin(spki, now=self.clock.utcnow(), reason=reason)

    # ------------------------------------------------------------------ failover: controllers, endpoints, slots
    # (kept together so the TLS-table work on the same runner merges without conflicts)

    def _url(self, kind: str, name: str, security_profile: int) -> str:
        """The ``ws(s)://host:port/ocpp`` URL of a CSMS or controller (its bound port)."""
        spec: CsmsSpec | ControllerSpec = (
            self.scenario.csms[name] if kind == "csms" else self.scenario.controllers[name]
        )
        scheme = "ws" if security_profile == 1 else "wss"
        return f"{scheme}://{spec.host}:{self.ports[name]}/ocpp"

    def _trusted_controllers(self, names: Iterable[str]) -> tuple[TrustedController, ...]:
        """Controllers a profile 3 server lets carry other identities: their certificate's (O, CN)."""
        return tuple(
            TrustedController(self.pki.organization, self.scenario.controllers[n].host) for n in names
        )

    def _controller_identity(self, spec: ControllerSpec) -> Identity:
        """The controller's own certificate (CN = its host, O = the operator): server to its stations and,
        under profile 3, client to its upstream (OCPP-J §6.5: its own certificates only)."""
        cached = self._lc_identities.get(spec.name)
        if cached is None:
            cert = self.pki.controller_certificate(spec.host, spec.certificate)
            cached = self._lc_identities[spec.name] = Identity.from_cert_key(cert)
        return cached

    def _upstream_service(self, spec: ControllerSpec) -> Service:
        sp = spec.upstream_security_profile
        endpoints = []
        for ep in spec.upstream:
            url = self._url(ep.kind, ep.name, sp)
            if sp == 1:
                endpoints.append(Endpoint(ep.name, url, priority=ep.priority))
                continue
            endpoints.append(
                Endpoint(
                    ep.name,
                    url,
                    priority=ep.priority,
                    profile=self._profile(ep.tls_profile or spec.tls_profile),
                    trust=self._trust(ep.trust or spec.trust),
                    identity=self._controller_identity(spec) if sp == 3 else None,
                )
            )
        return Service(
            f"{spec.name}-upstream", endpoints, policy=spec.failover, backoff=_backoff(spec.retry_backoff)
        )

    async def _start_controller(self, spec: ControllerSpec, nursery: trio.Nursery) -> int:
        """Start a Local Controller (its upstream endpoints are already listening); returns its port."""
        assert self.clock is not None and self.recorder is not None
        tcp = self.scenario.simulation.network == "tcp"
        config = ControllerConfig(
            name=spec.name,
            host=spec.host,
            port=0 if tcp else spec.port,
            security_profile=spec.security_profile,
            insecure_allow_plain_ws=spec.insecure_allow_plain_ws,
            tls_profile=self._profile(spec.tls_profile),
            identity=self._controller_identity(spec) if spec.security_profile >= 2 else None,
            client_trust=TrustStore("ChargingStationRoots", (self.pki.roots["root"].cert,), hostname="off")
            if spec.security_profile == 3
            else None,
            organization=self.pki.organization,
            behind_controller=spec.behind_controller,
            trusted_controllers=self._trusted_controllers(spec.trusted_controllers),
            upstream=self._upstream_service(spec),
            upstream_default_password=RUN_PASSWORD,
            upstream_connect_attempts=spec.upstream_connect_attempts,
            on_upstream_loss=spec.on_upstream_loss,
        )
        lc = LocalController(
            config,
            network=self.net,
            clock=self.clock,
            recorder=self.recorder,
            rng=random.Random(f"{self.scenario.simulation.seed}:{spec.name}"),
        )
        self.controllers[spec.name] = lc
        self.controller_nodes[spec.name] = node = _Node(spec.name, lc.run)
        await node.start(nursery)
        assert lc.address is not None
        return lc.address[1]

    def _slot(self, group: StationGroupSpec, sid: str, number: int, ep: EndpointSpec) -> NetworkSlot:
        """The network-profile slot of one endpoint; its own TLS bundle when the endpoint overrides trust or
        profile (otherwise the station's installed TLS configuration serves it)."""
        url = self._url(ep.kind, ep.name, group.security_profile)
        profile = NetworkConnectionProfile(url, group.security_profile)
        if group.security_profile == 1 or (ep.trust is None and ep.tls_profile is None and ep.pins is None):
            return NetworkSlot(number, profile)  # the station's ClientTls, with its PeerPolicy bound
        identity = None
        if group.security_profile == 3:
            identity = Identity.from_cert_key(
                self.pki.station_certificate(sid, validity_s=self.scenario.pki.validity)
            )
        roots = self.scenario.trust_stores[ep.trust].roots if ep.trust is not None else None
        tls = Endpoint(
            f"slot{number}",
            url,
            profile=self._profile(ep.tls_profile or group.tls_profile),
            trust=self._trust(ep.trust or group.trust, roots),
            identity=identity,
            # the endpoint's own pins, else the station's one pin store / peer memory (on every slot)
            peer=self._endpoint_peer_policy(group, sid, ep) or self.peer_policies.get(sid),
        )
        return NetworkSlot(number, profile, tls)

    def _failover_station_config(self, group: StationGroupSpec, sid: str) -> StationConfig:
        """A station of a group with ``endpoints``: slot ``i`` = the i-th endpoint by priority."""
        slots = tuple(self._slot(group, sid, i, ep) for i, ep in enumerate(group.endpoints))
        one_slot = self._station_config(group, sid, self.scenario.csms[group.csms], 0)
        return attrs.evolve(
            one_slot,
            csms_url="",
            network_slots=slots,
            network_priority=tuple(range(len(slots))),
            network_attempts=group.network_attempts,
            network_fallback=group.fallback,
        )

    async def _stop_start_controller(self, name: str, action: str, nursery: trio.Nursery) -> None:
        """A controller stops (listener and every relay gone, host down) or starts again."""
        host = self.scenario.controllers[name].host
        if action == "stop":
            self.controller_nodes[name].stop()
            if self.vnet is not None:
                self.vnet.set_host_down(host)
        else:
            if self.vnet is not None:
                self.vnet.set_host_down(host, down=False)
            await self.controller_nodes[name].start(nursery)

    async def _set_network_profile(self, ev: TimelineEvent, nursery: trio.Nursery) -> None:
        """B09/B10 from the CSMS holding each station's link: SetNetworkProfile for the new endpoint (a free
        slot, or the slot that already names it), SetVariables NetworkConfigurationPriority with that slot
        first; with ``reconnect`` the station's link is reset so the change takes effect now."""
        p = ev.params
        _, station_ids = self._targets(str(p["target"]))
        to = str(p["csms"])
        kind = "csms" if to in self.scenario.csms else "controller"
        for sid in station_ids:
            nursery.start_soon(self._move_station, sid, kind, to, bool(p.get("reconnect", True)))

    async def _move_station(self, sid: str, kind: str, to: str, reconnect: bool) -> None:
        assert self.recorder is not None
        station = self.stations[sid]
        group = self.scenario.stations[self.group_of[sid]]
        holder = next(
            (
                c
                for c in self.csms.values()
                if (r := c.stations.get(sid)) is not None and r.session is not None
            ),
            None,
        )
        if holder is None or station.session is None:
            self.recorder.emit("timeline", "network_profile_not_sent", station=sid, reason="station offline")
            return
        profiles = station.network_profiles
        known = [i for i, ep in enumerate(group.endpoints) if ep.kind == kind and ep.name == to]
        slot = known[0] if known else None
        if slot is None:
            free = [n for n in DEFAULT_SLOT_NUMBERS if n not in profiles.priority and n not in profiles.slots]
            if not free:
                self.recorder.emit("timeline", "network_profile_not_sent", station=sid, reason="no free slot")
                return
            slot = free[0]
            profile = NetworkConnectionProfile(
                self._url(kind, to, group.security_profile), group.security_profile
            )
            try:
                with trio.fail_after(60):
                    await holder.set_network_profile(sid, slot, profile.to_ocpp())
            except (KeyError, OcppError, TransportError, trio.TooSlowError) as exc:
                self.recorder.emit(
                    "timeline", "network_profile_not_sent", station=sid, reason=type(exc).__name__
                )
                return
        priority = ",".join(str(n) for n in [slot, *(n for n in profiles.priority if n != slot)])
        try:
            with trio.fail_after(60):
                await holder.set_variables(sid, {("OCPPCommCtrlr", "NetworkConfigurationPriority"): priority})
        except (KeyError, OcppError, TransportError, trio.TooSlowError) as exc:
            self.recorder.emit("timeline", "network_profile_not_sent", station=sid, reason=type(exc).__name__)
            return
        if reconnect and self.vnet is not None:
            for host in self._select("*"):
                if host not in self.stations:
                    self.vnet.partition(sid, host)
                    self.vnet.heal(sid, host)

    # ------------------------------------------------------------------ result

    def result(self, wall_s: float, outcome: str | None = None, error: str | None = None) -> RunResult:
        if self.recorder is None or self.clock is None:
            clock = SimClock(start_utc=_dt.datetime(1970, 1, 1, tzinfo=_dt.UTC))
            self.recorder = Recorder(clock)
        return RunResult(
            scenario=self.scenario,
            recorder=self.recorder,
            controllers=self.controllers,
            csms=self.csms,
            stations=self.stations,
            group_of=self.group_of,
            samples=self.samples,
            sim_elapsed=self.samples[-1].t if self.samples else 0.0,
            wall_s=wall_s,
            outcome=outcome or self.outcome,
            error=error,
        )


def _backoff(spec: RetryBackOffSpec) -> RetryBackOff:
    return RetryBackOff(spec.wait_minimum, spec.random_range, spec.repeat_times)


def _pair(value: object) -> tuple[str, str]:
    if not isinstance(value, tuple | list) or len(value) != 2:
        raise ConfigError("expected two selectors", path="between", value=value)
    return str(value[0]), str(value[1])


def _num(params: Mapping[str, object], key: str, default: float) -> float:
    value = params.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key} must be a number", path=key, value=value)
    return float(value)


def _strs(params: Mapping[str, object], key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    value = params.get(key)
    if value is None:
        return default
    if not isinstance(value, tuple | list):
        raise ConfigError(f"{key} must be a list", path=key, value=value)
    return tuple(str(v) for v in value)


def _plain(value: object) -> object:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def run_scenario(
    scenario: Scenario,
    *,
    sink: Callable[[Event], None] | None = None,
    on_sample: Callable[[Sample], None] | None = None,
) -> RunResult:
    """Run a scenario to its end and return what happened (also after Ctrl-C or a node crashing).

    Raises:
        ConfigError: the scenario asks for something this version cannot do (before anything starts).
    """
    preflight(scenario)
    tune_gc()
    runner = ScenarioRunner(scenario, sink=sink, on_sample=on_sample)
    clock = trio.testing.MockClock(autojump_threshold=0) if scenario.simulation.clock == "virtual" else None
    wall0 = time.perf_counter()
    try:
        interrupts.run(runner.run, clock=clock, on_interrupt=runner.interrupt)
    except KeyboardInterrupt:
        return _interrupted(runner, time.perf_counter() - wall0)
    except BaseException as exc:  # a node crashed: keep what was observed and say what happened
        leaf: BaseException = exc
        while isinstance(leaf, BaseExceptionGroup) and leaf.exceptions:
            leaf = leaf.exceptions[0]
        if isinstance(leaf, KeyboardInterrupt):
            return _interrupted(runner, time.perf_counter() - wall0)
        detail = "".join(traceback.format_exception_only(leaf)).strip()
        where = traceback.extract_tb(leaf.__traceback__)[-1:] if leaf.__traceback__ else []
        if where:
            detail += f" (at {where[0].filename}:{where[0].lineno})"
        return runner.result(time.perf_counter() - wall0, outcome="crashed", error=detail)
    return runner.result(time.perf_counter() - wall0)


def _interrupted(runner: ScenarioRunner, wall_s: float) -> RunResult:
    """The result of a run Ctrl-C stopped: complete if the run had ended by itself, else ``interrupted``."""
    if runner.outcome in ("completed", "all stations done"):
        return runner.result(wall_s)
    return runner.result(wall_s, outcome="interrupted", error="interrupted by the user (Ctrl-C)")


__all__ = ["RunResult", "Sample", "ScenarioRunner", "preflight", "run_scenario"]
