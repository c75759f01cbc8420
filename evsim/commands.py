"""Implementations of the CLI commands (argument parsing lives in :mod:`evsim.cli`)."""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import logging
import math
import resource
import sys
from collections.abc import Sequence
from pathlib import Path

import trio
import trio.testing

from evsim import DEV_PASSWORD, __version__, interrupts
from evsim.admin import admin_call, serve_admin
from evsim.clock import SimClock, real_utcnow
from evsim.errors import ConfigError, PkiError
from evsim.metrics.rundir import EventSink, RunDir, rerender, tee
from evsim.metrics.summary import Table
from evsim.metrics.summary_json import table_document
from evsim.metrics.topology import Topology
from evsim.net.base import Network, format_address, is_loopback
from evsim.net.tcp import TcpNetwork
from evsim.nodes.certificates import CertificateSettings
from evsim.nodes.csms import Csms, CsmsConfig
from evsim.nodes.csms_admin import AdminRefused, AdminRequest
from evsim.nodes.csms_certs import CsrSigner, SubCaSigner
from evsim.nodes.security import csms_server_tls, load_anchors, station_client_tls
from evsim.nodes.station import Station
from evsim.nodes.station_model import StationConfig, station_ids
from evsim.pki import DevPki, init_dev_pki
from evsim.pki.dev import ALL_FILES, CsmsPki
from evsim.recorder import Event, EventPrinter, Recorder, level_of_verbosity
from evsim.report import human_duration, table
from evsim.seeded import SeededRandom
from evsim.shards import Shard
from evsim.tls import Identity, TrustStore
from evsim.tls.context import ServerTls
from evsim.urls import parse_url
from evsim.world import Tls, open_world, run
from evsim.world.base import STATION_ROOTS
from evsim.ws.paths import IDENTITY_RULE, valid_identity


def _warn(message: str) -> None:
    print(f"WARNING: {message}", file=sys.stderr)


# ---------------------------------------------------------------------------- certs


def certs_init(args: argparse.Namespace) -> int:
    directory = Path(args.pki)
    if args.if_missing and (directory / "ca.crt").exists():
        DevPki.load(directory)  # fails loudly when the existing PKI is broken
        print(f"PKI in {directory} already exists; left as is")
        return 0
    existing = [name for name in ALL_FILES if (directory / name).exists()]
    if existing and not args.force:
        raise ConfigError(
            f"{directory / existing[0]} already exists",
            path="--pki",
            value=str(directory),
            fix="add --if-missing to keep the existing PKI, --force to replace it, or give another --pki DIR",
        )
    ids = list(station_ids("ST-", args.stations)) if args.stations else 0
    pki = init_dev_pki(
        directory,
        host=args.host,
        org=args.org,
        key_type=args.key_type,
        key_size=args.key_size,
        now=real_utcnow(),
        force=args.force,
        stations=ids,
        leaf_days=args.validity,
    )
    size = f"{args.key_size}-bit " if args.key_size else ""
    print(
        f"dev PKI written to {directory}/ (host {pki.host}, organization {pki.org}, {size}{args.key_type} keys)"
    )
    print("see certs/README.md for what each file is; these files are git-ignored, never commit them")
    return 0


# ---------------------------------------------------------------------------- firmware

FIRMWARE_SIGNER_CRT, FIRMWARE_SIGNER_KEY = "firmware-signer.crt", "firmware-signer.key"


def firmware_sign(args: argparse.Namespace) -> int:
    """``evsim firmware sign``: the image, its base64 signature and the signing certificate, in ``--out``.

    The signing certificate is issued once by the PKI's manufacturer root and kept in the PKI directory
    (``firmware-signer.crt`` / ``.key``), so every image signed from one PKI has the same signer.
    """
    from evsim.pki import CertKey, load_cert_file, load_key_file, write_cert_file, write_key_file
    from evsim.pki.firmware import build_test_image, issue_firmware_signer, sign_image

    pki = DevPki.load(args.pki)
    crt, key = pki.path(FIRMWARE_SIGNER_CRT), pki.path(FIRMWARE_SIGNER_KEY)
    if crt.exists() and key.exists():
        signer = CertKey(load_cert_file(crt)[0], load_key_file(key))
    else:
        signer = issue_firmware_signer(pki.manufacturer_root, now=real_utcnow())
        write_key_file(key, signer.key)
        write_cert_file(crt, signer.cert)
    if args.image is not None:
        source = Path(args.image)
        try:
            image = source.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read the image ({exc})", path="--image", value=args.image) from exc
        name = source.name
    else:
        if args.size < 0:
            raise ConfigError("must be >= 0", path="--size", value=args.size)
        image = build_test_image(args.fw_version, args.size)
        name = f"evsim-fw-{args.fw_version}.bin"
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(image)
        (out / f"{name}.sig").write_text(sign_image(image, signer) + "\n", encoding="ascii")
        (out / FIRMWARE_SIGNER_CRT).write_bytes(signer.cert_pem())
    except OSError as exc:
        raise ConfigError(f"cannot write to {out} ({exc})", path="--out", value=args.out) from exc
    print(f"{out / name}: {len(image)} bytes")
    print(f"{out / name}.sig: base64 signature (UpdateFirmware firmware.signature)")
    print(
        f"{out / FIRMWARE_SIGNER_CRT}: signing certificate (firmware.signingCertificate), issued by {pki.path('manufacturer-root.crt')}"
    )
    return 0


# ---------------------------------------------------------------------------- csms


def run_csms(args: argparse.Namespace) -> int:
    config, server_tls, signer = csms_setup(args)
    printer = EventPrinter(level=event_log_level(args))
    interrupts.run(
        functools.partial(
            serve_csms,
            config,
            network=TcpNetwork(),
            server_tls=server_tls,
            printer=printer,
            duration=args.duration,
            signer=signer,
            admin_socket=args.admin_socket,
        )
    )
    return 0


def csms_setup(args: argparse.Namespace) -> tuple[CsmsConfig, ServerTls | None, CsrSigner | None]:
    """The CSMS configuration, listener TLS and CSR signer that ``evsim csms`` arguments ask for.

    The PKI directory needs only ``ca.crt``, ``server.crt`` and ``server.key``
    (:class:`~evsim.pki.dev.CsmsPki`); the station sub-CA, when there, signs station CSRs.

    Raises:
        ConfigError: a combination the CSMS refuses (profile 1 without its opt-in).
        PkiError: the PKI directory is missing or broken.
    """
    host, port = args.listen
    if args.security_profile == 1 and not args.insecure_allow_plain_ws:
        raise ConfigError(
            "security profile 1 is plain ws:// with passwords in clear",
            path="--security-profile",
            value=1,
            fix="add --insecure-allow-plain-ws (trusted networks only) or use profile 2 or 3",
        )
    if args.keylog:
        _warn(f"TLS key log enabled: session secrets are written to {args.keylog}")
    if args.password == DEV_PASSWORD and args.security_profile < 3:
        _warn(
            "the CSMS accepts the public development password for every station (the --password default); "
            "anyone can connect as any station: pass --password"
        )
    pki = CsmsPki.load(args.pki)
    if pki.station_ca is None:
        _warn(
            f"{args.pki} has no station-ca.crt/station-ca.key: station CSRs (SignCertificate) are answered Rejected"
        )
    config = CsmsConfig(
        host=host,
        port=port,
        security_profile=args.security_profile,
        insecure_allow_plain_ws=args.insecure_allow_plain_ws,
        ocpp_versions=tuple(args.ocpp_version or ("2.0.1", "2.1")),
        heartbeat_interval=args.heartbeat_interval,
        organization=args.org,
        default_password=args.password,
        # profile 3: a station certificate must come through the station sub-CA (never the server's own)
        station_issuers=(pki.station_ca.cert,) if args.security_profile == 3 and pki.station_ca else (),
    )
    signer = SubCaSigner(pki.station_ca) if pki.station_ca is not None else None
    tls = csms_server_tls(pki, security_profile=args.security_profile, keylog=args.keylog)
    return config, tls, signer


def event_log_level(args: argparse.Namespace) -> int:
    """The event-line level asked for with ``-q`` / ``-v`` (before or after the command)."""
    return level_of_verbosity(getattr(args, "verbose", 0) or 0, getattr(args, "quiet", 0) or 0)


def _recorder(clock: SimClock, printer: EventPrinter, log: EventSink | None = None) -> Recorder:
    """A recorder printing its events as log lines (and per-message detail at DEBUG), and writing them to
    ``log`` (a run directory's event log; without the ``progress`` lines, which are for the terminal) when
    given."""
    printer.start_utc = clock.start_utc
    trace = printer if printer.level <= logging.DEBUG else None
    if log is None:
        return Recorder(clock, sink=printer, echo=False, trace=trace)

    def logged(event: Event) -> None:
        if event.kind != "progress":
            log(event)

    return Recorder(clock, sink=tee(printer, logged), echo=False, trace=trace)


async def serve_csms(
    config: CsmsConfig,
    *,
    network: Network,
    server_tls: ServerTls | None,
    printer: EventPrinter,
    duration: float | None = None,
    signer: CsrSigner | None = None,
    admin_socket: str | None = None,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> Csms:
    """Run the CSMS of ``evsim csms`` on ``network`` for ``duration`` seconds (None: until cancelled): one log
    line per event through ``printer``, the listening URL and, at the end, the summary on standard output.
    With ``admin_socket``, operator commands are served there (:mod:`evsim.admin`).

    ``task_status.started`` gets the bound address.
    """
    clock = SimClock.start()
    recorder = _recorder(clock, printer)
    csms = Csms(config, network=network, server_tls=server_tls, clock=clock, recorder=recorder, signer=signer)
    with trio.move_on_after(duration if duration is not None else math.inf):
        async with trio.open_nursery() as nursery:
            addr = await nursery.start(csms.run)
            if admin_socket is not None:
                await nursery.start(serve_admin, csms, admin_socket)
                print(f"admin socket: {admin_socket}", flush=True)
            scheme = "ws" if config.security_profile == 1 else "wss"
            print(
                f"CSMS listening on {scheme}://{addr[0]}:{addr[1]}{config.path_prefix}/<station-id>",
                flush=True,
            )
            task_status.started(addr)
    print(_csms_summary(csms))
    return csms


# ---------------------------------------------------------------------------- admin


def run_admin(args: argparse.Namespace) -> int:
    """``evsim admin``: one request to a running CSMS's admin socket; prints each station's answer."""
    stations = None
    if getattr(args, "stations", None):
        stations = tuple(s.strip() for s in args.stations.split(",") if s.strip())
    if args.admin_command == "install-root":
        try:
            pem = Path(args.file).read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the certificate ({exc})", path="file", value=args.file) from exc
        request = AdminRequest("install_root", stations, pem, args.type)
    else:
        request = AdminRequest(
            "trigger_renewal" if args.admin_command == "trigger-renewal" else "status", stations
        )
    try:
        response = trio.run(admin_call, args.socket, request)
    except OSError as exc:
        raise ConfigError(
            f"no CSMS admin socket at {args.socket} ({exc.strerror or exc})",
            path="--socket",
            value=args.socket,
            fix="start it with evsim csms --admin-socket PATH",
        ) from exc
    except AdminRefused as exc:
        print(f"evsim admin: {exc}", file=sys.stderr)
        return 1
    if not response.get("ok"):
        print(f"evsim admin: refused by the CSMS: {response.get('error')}", file=sys.stderr)
        return 1
    if request.op == "status":
        connected = response.get("connected", [])
        print(
            f"{len(connected)} stations connected"
            + (": " + ", ".join(map(str, connected)) if connected else "")
        )
        return 0
    results = response.get("results", {})
    for sid, result in results.items():
        print(f"{sid}: {result.get('status') or 'not sent: ' + str(result.get('error'))}")
    accepted = sum(1 for r in results.values() if r.get("status") == "Accepted")
    print(f"{accepted}/{len(results)} stations accepted")
    return 0 if results and accepted == len(results) else 1


# ---------------------------------------------------------------------------- stations


def run_stations(args: argparse.Namespace) -> int:
    if args.stations < 1:
        raise ConfigError(
            "need at least one station",
            path="--stations",
            value=args.stations,
            fix="use --stations 1 or more",
        )
    if args.workers > 1:
        from evsim.workers import run_workers

        return run_workers(args)
    resolve = dict(args.resolve or ())
    scheme, host, _port, _path = parse_url(args.csms)
    if not is_loopback(resolve.get(host.lower(), host).strip("[]")):
        raise ConfigError(
            "evsim connects only to this machine (loopback: localhost, 127.0.0.0/8, ::1)",
            path="--csms",
            value=args.csms,
            fix=f"use {scheme}://localhost:PORT/... with the CSMS listening on loopback, or map the name to a "
            f"loopback forwarder with --resolve {host}=127.0.0.1",
        )
    if args.security_profile == 1 and scheme != "ws":
        raise ConfigError(
            "security profile 1 uses ws:// URLs", path="--csms", value=args.csms, fix="use ws://..."
        )
    if args.security_profile >= 2 and scheme != "wss":
        raise ConfigError(
            f"security profile {args.security_profile} uses TLS",
            path="--csms",
            value=args.csms,
            fix="use wss://...",
        )
    if args.keylog:
        _warn(f"TLS key log enabled: session secrets are written to {args.keylog}")
    if args.password == DEV_PASSWORD and args.security_profile < 3:
        _warn("the stations use the public development password (the --password default): pass --password")
    if args.insecure_skip_verify:
        _warn("--insecure-skip-verify: the CSMS certificate is NOT verified; anyone can impersonate the CSMS")
    pki = DevPki.load(args.pki) if args.pki else None
    if args.security_profile == 3 and pki is None:
        raise ConfigError(
            "security profile 3 needs station certificates",
            path="--pki",
            fix="pass --pki DIR (see evsim certs init)",
        )
    ca_file = args.ca or (str(Path(args.pki) / "ca.crt") if args.pki else None)
    if ca_file is None and scheme == "wss" and not args.insecure_skip_verify:
        raise ConfigError("no CSMS root to trust", path="--ca", fix="pass --ca FILE (the CSMS root CA, PEM)")
    anchors = load_anchors(ca_file) if ca_file else ()
    fleet = station_ids(args.id_prefix, args.stations)
    shard = args.shard
    if shard is not None and shard.count > args.stations:
        raise ConfigError(
            f"{shard.count} shards of {args.stations} stations would leave shards empty",
            path="--shard",
            value=str(shard),
            fix=f"use at most {args.stations} shards",
        )
    ids = shard.ids(args.id_prefix, args.stations) if shard is not None else fleet
    for sid in (fleet[0], fleet[-1]):  # the prefix is the same for all; the last has the widest number
        if not valid_identity(sid):
            raise ConfigError(
                f"station identity {sid!r} is not {IDENTITY_RULE}",
                path="--id-prefix",
                value=args.id_prefix,
                fix="use only those characters and a shorter prefix",
            )
    now = real_utcnow()
    configs = [
        StationConfig(
            station_id=sid,
            csms_url=args.csms,
            security_profile=args.security_profile,
            password=args.password if args.security_profile < 3 else None,
            ocpp_versions=tuple(args.ocpp_version or ("2.0.1",)),
            sessions=args.sessions,
            session_start_s=(0.5, 2.0),
            session_duration_s=args.session_duration,
            meter_interval_s=args.meter_interval,
            # SecurityCtrlr.OrganizationName: the O of the CSRs the stations send (A02/A03)
            certificates=CertificateSettings(organization_name=pki.org or "evsim")
            if pki is not None
            else CertificateSettings(),
        )
        for sid in ids
    ]
    tls_by_id = {
        sid: station_client_tls(
            anchors,
            identity=pki.station(sid, now=now) if (pki is not None and args.security_profile == 3) else None,
            keylog=args.keylog,
            allow_wildcards=args.allow_wildcards,
            insecure_skip_verify=args.insecure_skip_verify,
        )
        if args.security_profile >= 2
        else None
        for sid in ids
    }

    printer = EventPrinter(level=event_log_level(args))
    run_dir = RunDir.create(Path(args.out), shard_run_name(shard), now) if args.out else None
    sink = run_dir.open_event_sink() if run_dir is not None else None
    stations: list[Station] = []
    started: list[SimClock] = []
    elapsed: list[float] = []

    async def main() -> None:
        clock = SimClock.start()
        started.append(clock)
        recorder = _recorder(clock, printer, sink)
        net = TcpNetwork(resolve)
        stations[:] = [
            Station(
                c,
                network=net,
                client_tls=tls_by_id[c.station_id],
                clock=clock,
                recorder=recorder,
                rng=SeededRandom(f"{args.seed}:{c.station_id}"),
            )
            for c in configs
        ]
        window = trio.CapacityLimiter(args.connect_window) if args.connect_window > 0 else None
        for st in stations:
            st.connect_window = window
        try:
            await _run_fleet(stations, recorder, args, shard_run_name(shard))
        finally:
            elapsed.append(clock.elapsed())

    outcome = "completed"
    try:
        interrupts.run(main)
    except KeyboardInterrupt:
        outcome = "interrupted"
    finally:
        if sink is not None:
            sink.close()
    done = sum(st.done.is_set() for st in stations)
    booted = sum(bool(st.statistics().boots) for st in stations)
    links = _stations_table(stations)
    result: dict[str, object] = {
        "ok": outcome == "completed" and done == len(stations),
        "stations": len(stations),
        "booted": booted,
        "completed": done,
        # this process's peak resident memory (Linux: KiB), what a pod of this shard needs
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if shard is not None:
        result["shard"] = {"index": shard.index, "count": shard.count, "first": ids[0], "last": ids[-1]}
    if run_dir is not None:
        clock = started[0] if started else None
        with interrupts.deferred():
            write_stations_run(
                run_dir,
                args,
                outcome=outcome if result["ok"] or outcome != "completed" else "incomplete",
                started_utc=clock.start_utc if clock is not None else now,
                elapsed=elapsed[0] if elapsed else 0.0,
                ids=ids,
            )
        result["run_directory"] = str(run_dir.path)
    if args.json:
        result["table"] = table_document(links)
        print(json.dumps(result, indent=2))
    else:
        print(links.render())
        print(f"{done}/{len(stations)} stations booted and completed their sessions")
        if run_dir is not None:
            print(f"run directory: {run_dir.path}")
    if outcome == "interrupted":
        print("evsim: interrupted", file=sys.stderr)  # as evsim.cli says it for every command
        return interrupts.EXIT_INTERRUPTED
    return 0 if result["ok"] else 1


async def _run_fleet(
    stations: list[Station], recorder: Recorder, args: argparse.Namespace, node: str
) -> None:
    """Run the stations until every one is done or ``--duration`` is up, with ``progress`` events of ``node``."""
    with trio.move_on_after(args.duration):
        async with trio.open_nursery() as nursery:
            for st in stations:
                nursery.start_soon(st.run)
            if args.progress > 0:
                nursery.start_soon(_report_progress, stations, recorder, args.progress, args.duration, node)
            for st in stations:
                await st.done.wait()
            nursery.cancel_scope.cancel()


def shard_run_name(shard: Shard | None) -> str:
    """The name of an ``evsim stations --out`` run directory (before its timestamp)."""
    return "stations" if shard is None else f"stations-shard-{shard.index}-of-{shard.count}"


#: The ``evsim stations`` arguments that must be equal in every shard of one run (``evsim report --merge``).
FLEET_KEYS = (
    "csms",
    "stations",
    "id_prefix",
    "seed",
    "security_profile",
    "sessions",
    "session_duration",
    "meter_interval",
)


def write_stations_run(
    run_dir: RunDir,
    args: argparse.Namespace,
    *,
    outcome: str,
    started_utc: datetime.datetime,
    elapsed: float,
    ids: Sequence[str],
) -> None:
    """Finish an ``evsim stations --out`` run directory: ``meta.json`` (the fleet, this shard, its stations
    and how it ended), then ``summary.txt`` / ``summary.json`` rendered from the event log."""
    shard = args.shard
    run_dir.write_meta(
        {
            "scenario": "stations",
            "seed": args.seed,
            "started_utc": started_utc,
            "duration_s": elapsed,
            "wall_time_s": round(elapsed, 3),
            "evsim_version": __version__,
            "outcome": outcome,
            "clock": "real",
            "network": "tcp",
            "stations_total": len(ids),
            "fleet": {key: getattr(args, key) for key in FLEET_KEYS},
            "shard": {
                "index": shard.index if shard is not None else 0,
                "count": shard.count if shard is not None else 1,
                "first": ids[0],
                "last": ids[-1],
            },
            "topology": Topology.from_groups({"stations": list(ids)}, {}).as_json(),
        }
    )
    rerender(run_dir.path, plots=False)


def progress_fields(stations: list[Station], elapsed: float, limit: float) -> dict[str, object]:
    """What one ``progress`` line of ``evsim stations`` says: how far the fleet got, how long until it gives up."""
    stats = [st.statistics() for st in stations]
    return {
        "booted": f"{sum(bool(s.boots) for s in stats)}/{len(stations)}",
        "done": sum(st.done.is_set() for st in stations),
        "connection_failures": sum(sum(s.connect_failures.values()) for s in stats),
        "gives_up_in": human_duration(max(limit - elapsed, 0.0)),
    }


async def _report_progress(
    stations: list[Station], recorder: Recorder, every: float, limit: float, node: str
) -> None:
    """A ``progress`` event of ``node`` (an INFO line: ``-q`` hides it) every ``every`` seconds, until
    cancelled."""
    while True:
        await trio.sleep(every)
        recorder.emit(node, "progress", **progress_fields(stations, recorder.clock.elapsed(), limit))


# ---------------------------------------------------------------------------- demo


def run_demo(args: argparse.Namespace) -> int:
    pki = DevPki.load(args.pki)
    host = pki.host
    n = args.stations
    if n < 1:
        raise ConfigError(
            "need at least one station", path="--stations", value=n, fix="use --stations 1 or more"
        )
    sp = args.security_profile
    if sp == 1:
        raise ConfigError("the demo runs over TLS", path="--security-profile", value=1, fix="use 2 or 3")
    real = args.real_time
    # Virtual time: a 10-minute session with 60 s meter values and 60 s heartbeats, in about a second.
    heartbeat = 5 if real else 60
    session_s, meter_s, start_s = (6.0, 2.0, (0.2, 1.0)) if real else (600.0, 60.0, (10.0, 60.0))
    now = real_utcnow()
    server = Identity(chain=pki.server.chain, key=pki.server.key)
    csms_tls = Tls(identity=server, client_trust=TrustStore(STATION_ROOTS, (pki.root.cert,), hostname="off"))
    station_tls = Tls(
        trust=TrustStore("CSMSRootCertificate", (pki.root.cert,)),
        identity=(lambda sid: Identity.from_cert_key(pki.station(sid, now=now))) if sp == 3 else None,
    )
    elapsed = [0.0]

    async def main() -> tuple[Csms, list[Station]]:
        async with open_world(
            seed=args.seed,
            clock="real" if real else "virtual",
            network="tcp" if args.tcp else "memory",
            start=now,
            organization=pki.org,
            echo=True,  # events as log lines at their level (-v shows the INFO ones)
        ) as world:
            csms = await world.start_csms(
                "csms",
                host=host,
                security_profile=sp,
                tls=csms_tls,
                heartbeat_interval=heartbeat,
                password=_DEMO_PASSWORD,
            )
            if args.tcp and csms.csms.address is not None:  # a capture filter needs the port
                print(f"CSMS listening on {format_address(csms.csms.address)}", file=sys.stderr, flush=True)
            fleet = await world.start_stations(
                n,
                csms=csms,
                id_pattern=f"ST-{{n:0{max(4, len(str(n)))}d}}",  # as station_ids("ST-", n)
                tls=station_tls,
                session_start=start_s,
                session_duration=session_s,
                meter_interval=meter_s,
            )
            with trio.fail_after(600 if real else 24 * 3600):
                await fleet.done()
                await trio.sleep(heartbeat * 1.5)  # let every station heartbeat at least once more
            elapsed[0] = world.clock.elapsed()
            return csms.csms, [node.station for node in fleet]

    csms, stations = run(main, clock="real" if real else "virtual")
    mode = f"{'real' if real else 'virtual'} time, {'loopback TCP' if args.tcp else 'in-memory network'}"
    print(f"evsim demo: 1 CSMS ({host}), {n} stations, security profile {sp}, {mode}\n")
    print(_stations_table(stations, csms).render())
    print()
    print(_csms_summary(csms))
    ok = all(st.done.is_set() for st in stations)
    st_ = csms.statistics()
    print(
        f"\n{'OK' if ok else 'INCOMPLETE'}: {sum(s.done.is_set() for s in stations)}/{n} stations booted, "
        f"heartbeated and completed a charging session; {st_.transactions_ended} transactions ended at the CSMS, "
        f"{st_.duplicate_tx_events} duplicates; simulated {human_duration(elapsed[0])}"
    )
    return 0 if ok else 1


_DEMO_PASSWORD = "evsim-demo-password-01"


def _stations_table(stations: list[Station], csms: Csms | None = None) -> Table:
    rows = []
    for st in stations:
        s = st.statistics()
        tls = s.tls
        rec = csms.stations.get(st.name) if csms else None
        tx_events = rec.tx_events() if rec else s.queue.delivered_total
        rows.append(
            (
                st.name,
                tls.version if tls else "-",
                tls.cipher_iana if tls else "-",
                (tls.group or "-") if tls else "-",
                "yes" if s.boots else "no",
                rec.heartbeats if rec else s.heartbeats,
                tx_events,
                round(st.energy_wh / 1000, 2),
                "done" if st.done.is_set() else "incomplete",
            )
        )
    return Table(
        "Stations (TLS as negotiated on each station's link to the CSMS)",
        ("station", "TLS", "cipher suite", "group", "booted", "heartbeats", "tx events", "kWh", "state"),
        tuple(rows),
    )


def _csms_summary(csms: Csms) -> str:
    s = csms.statistics()
    rows: list[list[object]] = [
        ["stations connected / known", f"{s.stations_connected} / {s.stations_known}"],
        ["connections accepted", s.connections_total],
        ["TLS versions", ", ".join(f"{k}: {v}" for k, v in s.tls_versions.items()) or "-"],
        ["cipher suites", ", ".join(f"{k}: {v}" for k, v in s.tls_suites.items()) or "-"],
        ["handshake failures", ", ".join(f"{k}: {v}" for k, v in s.handshake_failures.items()) or "none"],
        [
            "upgrade rejections",
            ", ".join(f"HTTP {k}: {v}" for k, v in s.upgrade_rejections.items()) or "none",
        ],
        ["messages", ", ".join(f"{k}: {v}" for k, v in sorted(s.messages.items()))],
        ["transactions started / ended", f"{s.transactions_started} / {s.transactions_ended}"],
    ]
    return table(["CSMS", "value"], rows, title="CSMS")


__all__ = ["PkiError", "certs_init", "run_csms", "run_demo", "run_stations"]
