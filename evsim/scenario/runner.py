"""Runs a :class:`~evsim.scenario.model.Scenario` by translating it into calls on a :class:`~evsim.world.World`.

Theory of operation. :func:`run_scenario` checks what this version cannot do yet (``preflight``) before
anything starts, then calls ``trio.run`` — with ``MockClock(autojump_threshold=0)`` for ``clock = "virtual"``
(time jumps to the next timer whenever every task is blocked, so a simulated day passes in seconds and two runs
with the same seed produce the same canonical event log) or on the real clock. :func:`run_scenario_async` is
the same run inside a caller's trio run (and nursery). :meth:`ScenarioRunner.run` opens a world with the
scenario's seed, clock, network and PKI settings, resolves the scenario's named TLS profiles, trust stores, pin
sets and change policies into the world's :class:`~evsim.world.Tls` values, starts the CSMS, the link policies
(before any station can connect), the controllers in dependency order and the station groups, and plays the
timeline in one task: each event is recorded, then applied to the world. The run ends at ``duration``, or as
soon as every station is done with ``stop_when_done``.

Whatever happens — the end, Ctrl-C, or a node crashing with a bug — the runner keeps what it observed, and
:class:`RunResult` says how the run ended; the CLI prints a (partial) report from it.
"""

from __future__ import annotations

import datetime as _dt
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import attrs
import trio
import trio.testing

from evsim import interrupts
from evsim.clock import SimClock, real_utcnow, virtual_clock
from evsim.errors import ConfigError
from evsim.metrics.rundir import Sample
from evsim.nodes.controller import LocalController
from evsim.nodes.csms import Csms
from evsim.nodes.csms_certs import SigningSettings
from evsim.nodes.csms_records import StationRecord
from evsim.nodes.station import Station
from evsim.pki import issue_self_signed
from evsim.recorder import DEFAULT_KEEP, Event, Recorder
from evsim.runtime import tune_gc
from evsim.scenario.model import (
    EndpointSpec,
    Scenario,
    StationGroupSpec,
)
from evsim.scenario.shard import ShardPlan, shard_errors, station_refs
from evsim.shards import Shard
from evsim.tls import Identity, TlsProfile
from evsim.tls.pairing import PeerTrust
from evsim.world import CertificateSpec, FileRoute, FileSettings, Route, Tls, World, open_world
from evsim.world.actions import link_not_yet


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
    world: World | None = None
    """The world the run happened in (its nodes stopped): ``world.summary()`` is the run's summary."""

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


def needs_fault_relay(scenario: Scenario) -> bool:
    """Whether a loopback TCP run must connect its nodes through the fault relay: it has ``[[links]]`` or a
    timeline action that acts on the network (:meth:`~evsim.world.actions.Action.needs_faults`). Other TCP runs
    connect directly (no extra hop in the load figures)."""
    if scenario.simulation.network != "tcp":
        return False
    return bool(scenario.links) or any(ev.action.needs_faults() for ev in scenario.timeline)


def preflight(scenario: Scenario, shard: Shard | None = None) -> None:
    """Refuse, before anything starts, what the model accepts but a run cannot enforce yet (each timeline
    action's :meth:`~evsim.world.actions.Action.preflight`, and link policy knobs), and, for a ``shard``, what
    sharding would change (:func:`evsim.scenario.shard.shard_errors`).

    Raises:
        ConfigError: the first of :func:`preflight_errors`, naming the file, line, field and why.
    """
    errors = preflight_errors(scenario)
    if shard is not None:
        errors += shard_errors(scenario, shard.count)
    if errors:
        raise errors[0]


def preflight_errors(scenario: Scenario) -> list[ConfigError]:
    """Everything :func:`preflight` refuses, in file order (empty: the scenario can run)."""
    src = scenario.source
    network = scenario.simulation.network
    errors: list[ConfigError] = []
    for i, ev in enumerate(scenario.timeline):
        try:
            ev.action.preflight(network=network, csms=scenario.csms)
        except ConfigError as exc:
            errors.append(
                ConfigError(
                    exc.message,
                    path=f"timeline[{i}].{exc.path}",
                    value=exc.value,
                    fix=exc.fix,
                    file=src,
                    line=ev.line,
                )
            )
    for i, link in enumerate(scenario.links):
        for knob, why in link_not_yet(network).items():
            value = getattr(link, knob)
            if value not in (None, 0, 0.0):
                errors.append(
                    ConfigError(
                        f"link knob {knob!r} is not supported yet: {why}",
                        path=f"links[{i}].{knob}",
                        value=value if not attrs.has(type(value)) else None,
                        fix=f"remove {knob}",
                        file=src,
                        line=link.line,
                    )
                )
    return sorted(errors, key=lambda e: e.line or 0)


class ScenarioRunner:
    """Translates a scenario into calls on a :class:`~evsim.world.World` (call :meth:`run` inside
    ``trio.run``; see :func:`run_scenario` and :func:`run_scenario_async`)."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        sink: Callable[[Event], None] | None = None,
        on_sample: Callable[[Sample], None] | None = None,
        sample_every: float | None = None,
        echo: bool = False,
        pcap: str | Path | None = None,
        keep_events: int | None = DEFAULT_KEEP,
        shard: Shard | None = None,
    ) -> None:
        self.scenario = scenario
        self.plan = None if shard is None else ShardPlan.of(scenario, shard)
        """In a shard: the stations it runs (None: all)."""
        self.echo = echo
        self.pcap = pcap
        self.keep_events = keep_events
        self.sink = sink
        self.on_sample = on_sample
        sim = scenario.simulation
        self.sample_every = sample_every or max(1.0, sim.duration / 400)
        self.samples: list[Sample] = []
        self.world: World | None = None
        self.outcome = "not started"

    # ------------------------------------------------------------------ scenario names -> world values

    def _profile(self, name: str) -> TlsProfile:
        """The TLS layer's profile for a scenario profile name: the one the loader built (with its engine
        knobs), or one built from the basic fields of a profile made in Python."""
        spec = self.scenario.tls_profiles.get(name)
        return TlsProfile() if spec is None else spec.engine_profile()

    def _session_cache(self, profile: str) -> int | None:
        """Cache entries of stations whose profile has a ``session`` table; None (full handshakes only) for
        the others, so a scenario resumes TLS sessions only when its file asks for it."""
        spec = self.scenario.tls_profiles.get(profile)
        if spec is None or spec.tls is None or not spec.keep_sessions:
            return None
        return spec.tls.session.cache_entries

    def _route(self, ep: EndpointSpec) -> Route:
        """A scenario endpoint as the world's :class:`Route`, its profile, trust store and pins resolved."""
        sc = self.scenario
        return Route(
            to=ep.name,
            priority=ep.priority,
            profile=None if ep.tls_profile is None else self._profile(ep.tls_profile),
            trust=None if ep.trust is None else sc.trust_stores[ep.trust],
            pins=None if ep.pins is None else sc.pin_sets[ep.pins],
        )

    def _hosts(self, selector: str) -> list[str]:
        """Network host names of a selector, from the scenario (so a link policy is in place before the
        nodes at its ends start): a CSMS or controller (its host), a group or station id, or ``*``."""
        sc = self.scenario
        if selector == "*":
            return (
                [c.host for c in sc.csms.values()]
                + [c.host for c in sc.controllers.values()]
                + (
                    sc.station_ids()
                    if self.plan is None
                    else [s for ids in self.plan.ids.values() for s in ids]
                )
                + [n.address for n in sc.nts_servers.values()]
            )
        if selector in sc.nts_servers:
            return [sc.nts_servers[selector].address]
        if selector in sc.csms:
            return [sc.csms[selector].host]
        if selector in sc.controllers:
            return [sc.controllers[selector].host]
        if selector in sc.stations:
            return sc.stations[selector].station_ids() if self.plan is None else self.plan.ids[selector]
        if selector in sc.file_servers:
            return [sc.file_servers[selector].host]
        return [selector]

    def _here(self, values: tuple[object, ...]) -> bool:
        """Whether an entry naming ``values`` runs in this process: always unsharded; in a shard, unless it
        names only stations another shard runs."""
        return self.plan is None or self.plan.runs(station_refs(self.scenario, values))

    def _sessions(self, group: StationGroupSpec) -> tuple[int, tuple[float, float]]:
        if group.sessions_per_day is None:
            return group.sessions or 0, group.session_start
        days = self.scenario.simulation.duration / 86_400
        count = max(1, round(group.sessions_per_day * days))
        gap = 86_400 / group.sessions_per_day  # mean time between session starts
        return count, (0.0, max(1.0, 2 * gap - group.session_duration))

    # ------------------------------------------------------------------ running

    async def run(self) -> None:
        """Open the world, start the scenario's nodes and links, play the timeline, end the run."""
        sc = self.scenario
        sim = sc.simulation
        async with open_world(
            seed=sim.seed,
            clock=sim.clock,
            network=sim.network,
            fault_relay=needs_fault_relay(sc),
            start=sim.start if sim.start is not None else real_utcnow(),
            organization=sc.pki.organization,
            key_type=sc.pki.key_type,
            roots={name: root.key_type for name, root in sc.pki.roots.items()},
            intermediates={n: (i.issuer, i.key_type) for n, i in sc.pki.intermediates.items()},
            station_issuer=sc.pki.station_issuer,
            # CRLs stay valid past the end of the run: a station meets an expired CRL only if asked to
            crl_lifetime=sim.duration + 86_400.0,
            sink=self.sink,
            echo=self.echo,
            expiry_warning=sc.pki.expiry_warning,
            pcap=self.pcap,
            keep_events=self.keep_events,
        ) as world:
            self.world = world
            shard = {} if self.plan is None else {"shard": str(self.plan.shard)}
            stations = sc.station_count() if self.plan is None else len(self.plan.members)
            world.recorder.emit(
                "runner", "run_started", scenario=sim.name, seed=sim.seed, stations=stations, **shard
            )
            self.outcome = "running"
            world.cpu_plan.update(sc.cpu)
            await self.start_nodes(world)
            world.play(
                (ev.at, ev.action) for ev in sc.timeline if self._here(tuple(ev.action.fields().values()))
            )
            world.nursery.start_soon(self._sampler, world)
            if await world.run_for(sim.duration, until_done=sim.stop_when_done):
                self.outcome = "all stations done"
            if self.outcome == "running":
                self.outcome = "completed"
            self._take_sample(world)
            if world.relay is not None:
                world.recorder.emit("relay", "relay_statistics", **attrs.asdict(world.relay.statistics()))
            world.recorder.flush()  # the round-trip windows still open
            world.record_cpu_usage()
            world.recorder.emit("runner", "run_ended", outcome=self.outcome)

    async def start_nodes(self, world: World) -> None:
        """Start the scenario's CSMS, links, controllers, station groups and energy managers in ``world``, in that
        order."""
        sc = self.scenario
        for spec in sc.csms.values():
            await world.start_csms(
                spec.name,
                host=spec.host,
                port=spec.port,
                security_profile=spec.security_profile,
                tls=Tls(
                    profile=self._profile(spec.tls_profile),
                    certificate=spec.certificate,
                    pins=None if spec.pins is None else sc.pin_sets[spec.pins],
                    change=None if spec.change is None else sc.change_policies[spec.change],
                    ocsp_stapling=spec.ocsp_stapling,
                    client_trust=None if spec.client_trust is None else sc.trust_stores[spec.client_trust],
                ),
                insecure_allow_plain_ws=spec.insecure_allow_plain_ws,
                ocpp_versions=spec.ocpp_versions,
                heartbeat_interval=spec.heartbeat_interval,
                password=spec.password,
                accept_unknown_stations=spec.accept_unknown_stations,
                secondary_of=spec.secondary_of,
                behind_controller=spec.behind_controller,
                trusted_controllers=[sc.controllers[n].host for n in spec.trusted_controllers],
                signing=SigningSettings(spec.signing.max_concurrent, spec.signing.max_queued),
                signed_validity=spec.signing.validity,
            )
        await self.start_file_servers(world)
        # links first: no station (or controller) may connect before its link has its policy
        for link in sc.links:
            if not self._here(link.between):
                continue
            a, b = (self._hosts(sel) for sel in link.between)
            if world.faults is not None:
                world.set_link(a, b, latency=link.latency, bytes_per_s=(link.bandwidth or 0.0) / 8)
            if link.reset is not None:
                world.reset_links_every(
                    a, b, link.reset.every, label=f"{link.between[0]}<->{link.between[1]}"
                )
            if link.stall is not None:
                world.stall_links_every(
                    a,
                    b,
                    link.stall.every,
                    link.stall.duration,
                    label=f"{link.between[0]}<->{link.between[1]}",
                )
        for lc in sc.controllers.values():  # dependency order: upstream controllers first
            await world.start_controller(
                lc.name,
                upstream=[self._route(ep) for ep in lc.upstream],
                host=lc.host,
                port=lc.port,
                security_profile=lc.security_profile,
                tls=Tls(
                    profile=self._profile(lc.tls_profile),
                    trust=sc.trust_stores.get(lc.trust),
                    certificate=lc.certificate,
                    client_trust=None if lc.client_trust is None else sc.trust_stores[lc.client_trust],
                ),
                insecure_allow_plain_ws=lc.insecure_allow_plain_ws,
                upstream_security_profile=lc.upstream_security_profile,
                failover=lc.failover,
                on_upstream_loss=lc.on_upstream_loss,
                upstream_connect_attempts=lc.upstream_connect_attempts,
                retry_backoff=lc.retry_backoff,
                behind_controller=lc.behind_controller,
                clock=lc.clock,
                trusted_controllers=[sc.controllers[n].host for n in lc.trusted_controllers],
                pairing=(
                    PeerTrust(auto_accept=lc.auto_accept, pairing_window_s=lc.pairing_window)
                    if lc.client_auth == "pairing"
                    else None
                ),
            )
        for nts in sc.nts_servers.values():
            await world.start_nts_server(
                nts.name, host=nts.host, root=nts.root, validity=nts.validity, clock_error=nts.clock_error
            )
        for group in sc.stations.values():
            sessions, session_start = self._sessions(group)
            await world.start_stations(
                group.count,
                numbers=None if self.plan is None else self.plan.numbers[group.name],
                csms=None if group.endpoints else group.csms,
                routes=[self._route(ep) for ep in group.endpoints],
                name=group.name,
                id_pattern=group.id_pattern,
                security_profile=group.security_profile,
                tls=Tls(
                    profile=self._profile(group.tls_profile),
                    trust=sc.trust_stores.get(group.trust),
                    certificate=CertificateSpec(validity=sc.pki.validity, key_type=sc.pki.key_type),
                    pins=None if group.pins is None else sc.pin_sets[group.pins],
                    change=None if group.change is None else sc.change_policies[group.change],
                    session_cache=self._session_cache(group.tls_profile),
                    identity=self._self_signed(world, group),
                ),
                password=group.password,
                ocpp_versions=group.ocpp_versions,
                sessions=sessions,
                session_start=session_start,
                session_duration=group.session_duration,
                meter_interval=group.meter_interval,
                charge_power=group.charge_power,
                heartbeat_fallback=group.heartbeat_fallback,
                retry_backoff=group.retry_backoff,
                queue_max=group.queue_max,
                connect_window=group.connect_window,
                network_attempts=group.network_attempts,
                fallback=group.fallback,
                certificates=group.certificates.settings(sc.pki.organization),
                clock=group.clock,
                files=[s.name for s in sc.file_services.values() if group.name in s.stations],
                file_settings=FileSettings(
                    sc.file_transfers.retries,
                    sc.file_transfers.retry_interval,
                    sc.file_transfers.install,
                    sc.file_transfers.log_bytes,
                ),
            )
        # after the stations: their SHIP links dial at once; over TCP the default SHIP port would clash between
        # runs on one machine, so each manager takes a free one (the stations learn it from the world)
        tcp = sc.simulation.network == "tcp"
        for em in sc.energy_managers.values():
            await world.start_energy_manager(
                em.name,
                host=em.host,
                port=0 if tcp else em.port,
                auto_accept=em.auto_accept,
                pairing_window=em.pairing_window,
                confirm=em.confirm,
            )
            for selector in em.stations:
                if not self._here((selector,)):
                    continue
                await world.link_energy_manager(selector, em.name, trust=em.station_trust, retry=em.retry)

    async def start_file_servers(self, world: World) -> None:
        """The scenario's firmware releases, file servers and file services (:mod:`evsim.scenario.files`)."""
        sc = self.scenario
        for release in sc.firmware.values():
            world.release(release.version, release.size)
        for spec in sc.file_servers.values():
            await world.start_file_server(
                spec.name,
                host=spec.host,
                port=0 if sc.simulation.network == "tcp" else spec.port,
                tls=Tls(
                    profile=self._profile(spec.tls_profile),
                    certificate=CertificateSpec(validity=sc.pki.validity, key_type=sc.pki.key_type),
                ),
                client_certificates=spec.client_certificates,
                firmware=[sc.firmware[name].version for name in spec.firmware],
                tampered=[sc.firmware[name].version for name in spec.tampered],
                accept_uploads=spec.accept_uploads,
            )
        for service in sc.file_services.values():
            world.add_file_service(
                service.name,
                [
                    FileRoute(
                        server=m.server,
                        priority=m.priority,
                        profile=None if m.tls_profile is None else self._profile(m.tls_profile),
                        trust=None if m.trust is None else sc.trust_stores[m.trust],
                        pins=None if m.pins is None else sc.pin_sets[m.pins],
                        client_certificate=m.client_certificate,
                    )
                    for m in service.mirrors
                ],
            )

    def _self_signed(self, world: World, group: StationGroupSpec) -> Callable[[str], Identity] | None:
        """Stations whose first endpoint is a pairing controller present self-signed certificates (CN = the
        station id, O = the run's organization), SHIP style; None: the run's station sub-CA issues them."""
        first = group.endpoints[0] if group.endpoints else None
        if first is None or first.kind != "controller":
            return None
        if self.scenario.controllers[first.name].client_auth != "pairing":
            return None
        org = self.scenario.pki.organization

        def issue(sid: str) -> Identity:
            return Identity.from_cert_key(issue_self_signed(sid, org, now=world.clock.utcnow()))

        return issue

    async def _sampler(self, world: World) -> None:
        while True:
            self._take_sample(world)
            await trio.sleep(self.sample_every)

    def interrupt(self) -> None:
        """Ctrl-C: end the run here (called by the run loop between task steps, before every task is
        cancelled). The result is what was observed up to now, marked ``interrupted``; what the nodes do
        while they are torn down is not recorded, so it cannot add failures a complete run would not have."""
        if self.outcome not in ("not started", "running"):
            return  # the run had already ended
        self.outcome = "interrupted"
        if self.world is not None:
            self._take_sample(self.world)
            self.world.recorder.flush()
            self.world.recorder.emit("runner", "run_ended", outcome=self.outcome)
            self.world.recorder.stop()

    def _take_sample(self, world: World) -> None:
        if world.recorder.stopped:
            return  # interrupted: the last sample is the one taken then
        sample = world.sample()
        self.samples.append(sample)
        if self.on_sample is not None:
            self.on_sample(sample)

    # ------------------------------------------------------------------ result

    def result(self, wall_s: float, outcome: str | None = None, error: str | None = None) -> RunResult:
        """What the run observed, also when it ended early or never opened its world (an empty recorder)."""
        w = self.world
        if w is None:
            recorder = Recorder(SimClock(start_utc=_dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)))
        else:
            recorder = w.recorder
        return RunResult(
            scenario=self.scenario,
            recorder=recorder,
            controllers={n: c.controller for n, c in w.controllers.items()} if w else {},
            csms={n: c.csms for n, c in w.csms.items()} if w else {},
            stations={n: s.station for n, s in w.stations.items()} if w else {},
            group_of={n: s.group.name for n, s in w.stations.items()} if w else {},
            samples=self.samples,
            sim_elapsed=self.samples[-1].t if self.samples else 0.0,
            wall_s=wall_s,
            outcome=outcome or self.outcome,
            error=error,
            world=w,
        )


def run_scenario(
    scenario: Scenario,
    *,
    sink: Callable[[Event], None] | None = None,
    on_sample: Callable[[Sample], None] | None = None,
    pcap: str | Path | None = None,
    keep_events: int | None = DEFAULT_KEEP,
    shard: Shard | None = None,
) -> RunResult:
    """Run a scenario to its end and return what happened (also after Ctrl-C or a node crashing).

    With ``pcap``, the in-memory network's connections and the TLS secrets go to that pcapng file
    (:func:`evsim.world.open_world`). ``keep_events`` bounds the events the result's recorder keeps in memory
    (every one goes to ``sink``); None keeps them all, as a canonical log needs
    (:func:`evsim.scenario.golden.run_log`). With ``shard``, only that shard's stations run, beside a replica of
    every server (:mod:`evsim.scenario.shard`).

    A scenario built in Python (without a ``source``) is first validated like a file (:meth:`Scenario.validate`).

    Raises:
        ConfigError: the scenario is invalid, or asks for something this version cannot do (before anything
            starts).
    """
    if scenario.source is None:
        scenario = scenario.validate()
    preflight(scenario, shard)
    tune_gc()
    runner = ScenarioRunner(
        scenario, sink=sink, on_sample=on_sample, pcap=pcap, keep_events=keep_events, shard=shard
    )
    clock = virtual_clock() if scenario.simulation.clock == "virtual" else None
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


async def run_scenario_async(
    scenario: Scenario,
    *,
    sink: Callable[[Event], None] | None = None,
    on_sample: Callable[[Sample], None] | None = None,
) -> RunResult:
    """Run a scenario inside the caller's trio run, e.g. in a task of the caller's nursery.

    The caller's ``trio.run`` must have the clock the scenario asks for: ``clock = "virtual"`` needs
    ``trio.testing.MockClock(autojump_threshold=0)`` (``evsim.world.run`` or pytest-trio's ``autojump_clock``
    fixture), ``clock = "real"`` trio's own. A node crashing raises out of this call (inside a nursery, the
    caller decides what a crash means).

    A scenario built in Python (without a ``source``) is first validated like a file.

    Raises:
        ConfigError: the scenario is invalid, asks for something this version cannot do, or the clock does
            not match (before anything starts).
    """
    if scenario.source is None:
        scenario = scenario.validate()
    preflight(scenario)
    runner = ScenarioRunner(scenario, sink=sink, on_sample=on_sample)
    wall0 = time.perf_counter()
    await runner.run()
    return runner.result(time.perf_counter() - wall0)


__all__ = ["RunResult", "Sample", "ScenarioRunner", "preflight", "run_scenario", "run_scenario_async"]
