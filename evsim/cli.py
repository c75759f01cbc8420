"""The ``evsim`` command line.

evsim certs init [--pki certs]            make the development PKI
evsim csms --listen HOST:PORT --pki DIR   serve wss://HOST:PORT/ocpp/<station-id>
evsim stations --csms URL --stations N    run N stations against any OCPP 2.0.1 CSMS
    [--workers K | --shard I/N] [--out DIR] in K processes, or shard I of N; a run directory per shard
evsim report --merge DIR... [--out DIR]   combine shard run directories into one run and report it
evsim k8s manifest --shards N             a Kubernetes Indexed Job running the fleet as N shards
evsim demo --pki DIR                      a CSMS and ten stations in one process (virtual time)
evsim run FILE / validate FILE... / report RUN_DIR   scenarios (``--json`` on each)
    [--workers K | --shard I/N]           a scenario as K shards in K processes, or shard I of N
evsim tls capabilities [--json]           TLS versions, suites, groups and knob states of this engine
evsim explain handshake [--case C]        one real TLS handshake step by step (offers, choices, checks, why)
evsim firmware sign --version V           a signed test firmware image (manufacturer root of the dev PKI)

One name per concept on every command: ``--pki DIR`` is the PKI directory, ``--stations N`` a number of
stations, ``--duration`` a duration with units as in scenario files (``90s``, ``15m``, ``1h30m``; a bare number
is seconds), ``--json`` machine-readable output on standard output; ``-q`` / ``-v`` go before or after the
command. (``--dir`` and ``--count``, the older names, are still accepted.)
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from evsim import DEV_PASSWORD, __version__, interrupts
from evsim.errors import ConfigError, EvsimError
from evsim.shards import Shard, parse_shard


def _host_port(value: str) -> tuple[str, int]:
    from evsim.net.base import is_loopback

    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    if int(port) > 65535:
        raise argparse.ArgumentTypeError(f"port {port} is out of range: use 1-65535, or 0 for any free port")
    host = host.strip("[]") or "127.0.0.1"
    if not is_loopback(host):
        raise argparse.ArgumentTypeError(
            f"{host} is not a loopback address: evsim listens on loopback only (127.0.0.0/8, ::1, localhost)"
        )
    return host, int(port)


def _duration(value: str) -> float:
    """A command-line duration, read like the scenario files' (:func:`evsim.scenario.units.parse_duration`)."""
    from evsim.scenario.units import parse_duration

    try:
        return parse_duration(value)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(f"{exc.message}; {exc.fix}" if exc.fix else exc.message) from None


def _positive_duration(value: str) -> float:
    seconds = _duration(value)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{value!r}: must be longer than 0s")
    return seconds


def _whole_seconds(value: str) -> int:
    seconds = _positive_duration(value)
    if seconds != int(seconds):
        raise argparse.ArgumentTypeError(f"{value!r}: must be a whole number of seconds")
    return int(seconds)


def _whole_days(value: str) -> int:
    seconds = _positive_duration(value)
    if seconds % 86_400:
        raise argparse.ArgumentTypeError(f"{value!r}: must be whole days, e.g. 90d")
    return int(seconds // 86_400)


def _day_count(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: a number of days, 1 or more")
    return int(value)


def _window(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r}: expected a whole number, 0 or more")
    return int(value)


def _profile(value: str) -> int:
    if value not in ("1", "2", "3"):
        raise argparse.ArgumentTypeError("security profile is 1, 2 or 3")
    return int(value)


_VERBOSE_HELP = (
    "more output: evsim csms and evsim stations add per-message detail to their event lines; "
    "other commands log at INFO (-vv: DEBUG); accepted before or after the command"
)
_QUIET_HELP = (
    "less output: evsim csms and evsim stations print only refusals, lost connections and errors; "
    "accepted before or after the command"
)


STATIONS_GIVE_UP_S = 120.0
"""``evsim stations --duration`` default: long enough for a session of the default length with retries, short
enough that a dead URL ends the command."""


def _add_verbosity(parser: argparse.ArgumentParser, *, default: object) -> None:
    parser.add_argument("-v", "--verbose", action="count", default=default, help=_VERBOSE_HELP)
    parser.add_argument("-q", "--quiet", action="count", default=default, help=_QUIET_HELP)


def _shard(value: str) -> Shard:
    try:
        return parse_shard(value)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(f"{value!r}: {exc.message}; {exc.fix}") from None


def _workers(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 256:
        raise argparse.ArgumentTypeError(f"{value!r}: a number of processes, 1 to 256")
    return int(value)


def _resolve(value: str) -> tuple[str, str]:
    from evsim.net.base import is_loopback

    name, sep, address = value.partition("=")
    if not sep or not name or not is_loopback(address.strip("[]")):
        raise argparse.ArgumentTypeError(
            f"{value!r}: expected NAME=ADDRESS with a loopback ADDRESS (127.0.0.0/8, ::1), e.g. csms.example.com=127.0.0.1"
        )
    return name.lower(), address.strip("[]")


def _add_fleet_split(st: argparse.ArgumentParser) -> None:
    """The ``evsim stations`` flags that split a fleet over processes and machines (:mod:`evsim.shards`)."""
    split = st.add_mutually_exclusive_group()
    split.add_argument(
        "--workers",
        type=_workers,
        default=1,
        metavar="K",
        help="run the fleet in K processes on this machine (each a contiguous range of station ids, as --shard "
        "I/K); one merged summary, the worst exit status; Ctrl-C stops them all (default 1)",
    )
    split.add_argument(
        "--shard",
        type=_shard,
        default=None,
        metavar="I/N",
        help="run only shard I (0-based) of N of the --stations fleet: stations M*I/N+1 .. M*(I+1)/N, numbered "
        "as in the whole fleet (e.g. a Kubernetes Indexed Job's JOB_COMPLETION_INDEX as I)",
    )
    st.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="write a run directory under DIR (events.jsonl, meta.json, summary.txt, summary.json), one per "
        "shard or worker: 'evsim report --merge' combines them",
    )
    st.add_argument(
        "--resolve",
        type=_resolve,
        action="append",
        metavar="NAME=ADDRESS",
        help="connect to the --csms host NAME at this loopback ADDRESS (a TCP forwarder to a CSMS elsewhere; TLS "
        "still checks NAME); repeatable",
    )


_K8S_HELP = "print a Kubernetes Indexed Job running a sharded 'evsim stations' fleet (deploy/k8s/README.md)"


def _add_k8s_manifest(m: argparse.ArgumentParser) -> None:
    m.add_argument("--shards", type=int, default=4, metavar="N", help="pods, one shard each (default 4)")
    m.add_argument("--stations", type=int, default=1000, metavar="M", help="fleet size (default 1000)")
    m.add_argument(
        "--csms",
        default="wss://csms.example.com:443/ocpp",
        help="the CSMS URL the stations use; a host that is not loopback gets a TCP forwarder sidecar",
    )
    m.add_argument(
        "--security-profile", type=_profile, default=3, help="2 or 3 (default 3: client certificates)"
    )
    m.add_argument("--image", default="evsim:latest", help="the image built from deploy/Containerfile")
    m.add_argument("--name", default="evsim-stations", help="the Job's name")
    m.add_argument("--duration", default="10m", help="evsim stations --duration in each pod (default 10m)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="evsim",
        description="A Trio-based simulator of an EV charging network secured with TLS on every hop.",
    )
    p.add_argument("--version", action="version", version=f"evsim {__version__}")
    _add_verbosity(p, default=0)
    # The same flags after the command (SUPPRESS: a command given none keeps the counts given before it).
    verbosity = argparse.ArgumentParser(add_help=False)
    _add_verbosity(verbosity, default=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    certs = sub.add_parser("certs", help="development PKI", parents=[verbosity])
    certs_sub = certs.add_subparsers(dest="certs_command", required=True, metavar="ACTION")
    init = certs_sub.add_parser(
        "init", help="generate the development PKI (root CA, CSMS server, station CA)", parents=[verbosity]
    )
    init.add_argument("--pki", default="certs", help="PKI directory to write (default: certs)")
    init.add_argument("--dir", dest="pki", help=argparse.SUPPRESS)  # the older name of --pki
    init.add_argument("--host", default="localhost", help="CSMS host name: server certificate CN and SAN")
    init.add_argument("--org", default="evsim", help="operator organization (O of station certificates)")
    init.add_argument(
        "--key-type", choices=("ec", "rsa"), default="ec", help="ECDSA P-256 (default) or RSA-2048"
    )
    init.add_argument(
        "--key-size",
        type=int,
        default=None,
        help="key size in bits: RSA 2048 (default), 3072 or 4096 (up to 8192); EC 256 (default), 384 or 521",
    )
    init.add_argument(
        "--validity",
        type=_whole_days,
        metavar="DURATION",
        default=None,
        help="validity of the CSMS server certificate and the station certificates, whole days, e.g. 90d "
        "(default: server 397d, the CA/Browser Forum maximum; stations 730d)",
    )
    init.add_argument("--days", dest="validity", type=_day_count, help=argparse.SUPPRESS)  # older form
    init.add_argument(
        "--stations", type=int, default=0, help="also issue N station certificates (ST-0001...)"
    )
    group = init.add_mutually_exclusive_group()
    group.add_argument("--force", action="store_true", help="overwrite an existing PKI")
    group.add_argument("--if-missing", action="store_true", help="do nothing when the PKI already exists")

    csms = sub.add_parser(
        "csms", help="run a CSMS serving wss://HOST:PORT/ocpp/<station-id>", parents=[verbosity]
    )
    csms.add_argument(
        "--listen", type=_host_port, default=("127.0.0.1", 8443), help="HOST:PORT (loopback only)"
    )
    csms.add_argument(
        "--pki",
        default="certs",
        help="PKI directory: ca.crt, server.crt and server.key are enough (your own, e.g. made with openssl; RSA "
        "up to 4096 bits); with station-ca.crt and station-ca.key (as 'evsim certs init' makes them) the CSMS "
        "also signs station CSRs (OCPP A02/A03)",
    )
    csms.add_argument("--security-profile", type=_profile, default=2, help="1, 2 (default) or 3")
    csms.add_argument(
        "--password",
        default=DEV_PASSWORD,
        help="Basic-auth password accepted for every station (profiles 1, 2); the default is the public "
        "development password (a warning says so): set your own",
    )
    csms.add_argument(
        "--org", default="evsim", help="organization required in station certificates (profile 3)"
    )
    csms.add_argument(
        "--heartbeat-interval",
        type=_whole_seconds,
        metavar="DURATION",
        default=300,
        help="interval sent in BootNotification, whole seconds (default 5m)",
    )
    csms.add_argument(
        "--ocpp-version", action="append", choices=("2.0.1", "2.1"), help="versions served (default: both)"
    )
    csms.add_argument(
        "--duration",
        type=_positive_duration,
        metavar="DURATION",
        default=None,
        help="stop after this long, e.g. 90s, 15m, 1h (default: run until Ctrl-C)",
    )
    csms.add_argument("--keylog", default=None, help="write an NSS key log (for Wireshark) to FILE")
    csms.add_argument(
        "--insecure-allow-plain-ws",
        action="store_true",
        help="DANGEROUS: allow security profile 1 (plain ws://, passwords in clear)",
    )
    csms.add_argument(
        "--admin-socket",
        default=None,
        metavar="PATH",
        help="listen for operator commands on this unix socket (mode 0600): 'evsim admin --socket PATH ...' "
        "triggers certificate renewal or installs a root on the connected stations",
    )

    adm = sub.add_parser(
        "admin",
        help="operator commands to a running 'evsim csms --admin-socket PATH'",
        description="Send one command to a running CSMS over its admin socket and print each station's answer. "
        "trigger-renewal: TriggerMessage SignChargingStationCertificate (OCPP A02; the CSMS then signs the "
        "stations' CSRs); install-root: InstallCertificate of a PEM root (M05); status: the connected stations. "
        "Exit status 0 when every target station accepted, 1 otherwise.",
        parents=[verbosity],
    )
    adm.add_argument("--socket", required=True, metavar="PATH", help="the CSMS's --admin-socket")
    adm_sub = adm.add_subparsers(dest="admin_command", required=True, metavar="ACTION")
    renew = adm_sub.add_parser(
        "trigger-renewal", help="TriggerMessage SignChargingStationCertificate (A02)", parents=[verbosity]
    )
    install = adm_sub.add_parser(
        "install-root", help="InstallCertificate of a root certificate (M05)", parents=[verbosity]
    )
    install.add_argument("file", help="the root certificate (PEM)")
    install.add_argument(
        "--type",
        default="CSMSRootCertificate",
        choices=("CSMSRootCertificate", "ManufacturerRootCertificate"),
        help="certificateType (default CSMSRootCertificate)",
    )
    for action in (renew, install):
        which = action.add_mutually_exclusive_group(required=True)
        which.add_argument("--stations", help="comma-separated station identities, e.g. ST-0001,ST-0002")
        which.add_argument("--all", action="store_true", help="every station connected now")
    adm_sub.add_parser("status", help="the stations connected now", parents=[verbosity])

    from evsim.nodes.setup_window import DEFAULT_CONNECT_WINDOW

    st = sub.add_parser("stations", help="run N charging stations against a CSMS", parents=[verbosity])
    st.add_argument(
        "--csms",
        required=True,
        help="OCPP-J endpoint URL without the identity, e.g. wss://localhost:8443/ocpp",
    )
    st.add_argument("--stations", type=int, default=1, metavar="N", help="number of stations (default 1)")
    st.add_argument("--count", dest="stations", type=int, help=argparse.SUPPRESS)  # older name of --stations
    st.add_argument("--ca", default=None, help="CSMS root CA file (PEM) to trust (default: PKI_DIR/ca.crt)")
    st.add_argument("--pki", default=None, help="PKI directory: station certificates for profile 3")
    st.add_argument("--security-profile", type=_profile, default=2, help="1, 2 (default) or 3")
    st.add_argument(
        "--password",
        default=DEV_PASSWORD,
        help="Basic-auth password (profiles 1, 2); the default is the public development password (a warning "
        "says so)",
    )
    st.add_argument("--id-prefix", default="ST-", help="station identity prefix (ST-0001, ST-0002, ...)")
    st.add_argument(
        "--ocpp-version", action="append", choices=("2.0.1", "2.1"), help="offered (default 2.0.1)"
    )
    st.add_argument("--sessions", type=int, default=1, help="charging sessions per station")
    st.add_argument(
        "--session-duration",
        type=_positive_duration,
        metavar="DURATION",
        default=20.0,
        help="charging time per session, e.g. 20s, 5m (default 20s)",
    )
    st.add_argument(
        "--meter-interval",
        type=_positive_duration,
        metavar="DURATION",
        default=5.0,
        help="time between meter values (default 5s)",
    )
    st.add_argument(
        "--duration",
        type=_positive_duration,
        metavar="DURATION",
        default=STATIONS_GIVE_UP_S,
        help="give up after this long, e.g. 90s, 10m, 1h (exit 1 unless every station completed; default 2m, "
        "so an unreachable CSMS is not retried forever)",
    )
    st.add_argument(
        "--progress",
        type=_duration,
        metavar="DURATION",
        default=5.0,
        help="time between 'progress' lines on standard error (stations booted and done, connection failures, "
        "time left; default 5s; 0: none; -q hides them)",
    )
    st.add_argument(
        "--connect-window",
        type=_window,
        metavar="N",
        default=DEFAULT_CONNECT_WINDOW,
        help="stations setting up a connection (TCP, TLS, WebSocket upgrade) at once; the others wait their turn, "
        f"so a storm of thousands finishes within the handshake timeout (default {DEFAULT_CONNECT_WINDOW}; 0: all at "
        "once)",
    )
    st.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    _add_fleet_split(st)
    st.add_argument("--seed", type=int, default=1, help="seed for timing jitter and transaction ids")
    st.add_argument("--keylog", default=None, help="write an NSS key log (for Wireshark) to FILE")
    st.add_argument(
        "--allow-wildcards", action="store_true", help="accept a wildcard CSMS certificate (not OCPP)"
    )
    st.add_argument(
        "--insecure-skip-verify",
        action="store_true",
        help="DANGEROUS, development only: do not verify the CSMS certificate (prints a warning)",
    )

    demo = sub.add_parser(
        "demo", help="one CSMS and ten stations over TLS 1.3 in one process", parents=[verbosity]
    )
    demo.add_argument("--pki", default="certs", help="PKI directory made by 'evsim certs init'")
    demo.add_argument("--stations", type=int, default=10, help="number of stations (default 10)")
    demo.add_argument("--seed", type=int, default=1, help="seed")
    demo.add_argument("--security-profile", type=_profile, default=2, help="2 (default) or 3")
    demo.add_argument(
        "--real-time", action="store_true", help="run on the real clock (default: virtual time)"
    )
    demo.add_argument("--tcp", action="store_true", help="loopback TCP instead of the in-memory network")

    run = sub.add_parser(
        "run", help="run a scenario file and write a run directory with its report", parents=[verbosity]
    )
    run.add_argument("file", help="scenario TOML file (see scenarios/README.md)")
    run.add_argument("--out", default="runs", help="base directory for run directories (default: runs)")
    run.add_argument("--seed", type=int, default=None, help="override [simulation].seed")
    run.add_argument("--no-live", action="store_true", help="no live progress display")
    run.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    run.add_argument("--canonical-log", default=None, help="also write the canonical event log to FILE")
    split = run.add_mutually_exclusive_group()
    split.add_argument(
        "--workers",
        type=_workers,
        default=1,
        metavar="K",
        help="run the scenario as K shards in K processes on this machine (each every server and its slice "
        "of every station group, as --shard I/K); one merged run directory and report, the worst exit status; "
        "Ctrl-C stops them all (default 1; scenarios/README.md, Sharded runs)",
    )
    split.add_argument(
        "--shard",
        type=_shard,
        default=None,
        metavar="I/N",
        help="run only shard I (0-based) of N: every server, and stations count*I/N+1 .. count*(I+1)/N of each "
        "group, named as in the whole run; 'evsim report --merge' combines the shards' run directories",
    )
    run.add_argument(
        "--explain",
        type=int,
        nargs="?",
        const=2,
        default=None,
        choices=(1, 2, 3),
        metavar="DEPTH",
        help="after the report, tell the story of the run (as 'evsim explain RUN_DIR --depth DEPTH'; default 2)",
    )
    run.add_argument(
        "--json",
        action="store_true",
        help="print the run directory, its plots and its summary (summary.json, docs/summary-json.md) as JSON "
        "instead of text; live progress goes to standard error",
    )
    run.add_argument(
        "--pcap",
        default=None,
        metavar="FILE",
        help="write every connection of the run to FILE as pcapng: synthetic TCP/IPv4 frames at simulation "
        "time with the TLS secrets embedded, so Wireshark and tshark decrypt it as is; host addresses: "
        "scenarios/README.md; the file holds session keys (see README, Capturing a run)",
    )

    val = sub.add_parser(
        "validate", help="check scenario files without running anything", parents=[verbosity]
    )
    val.add_argument("files", nargs="+", help="scenario TOML files")
    val.add_argument(
        "--json", action="store_true", help="print every file's result and all its errors as JSON"
    )

    rep = sub.add_parser(
        "report", help="re-render the summary and plots of a run directory", parents=[verbosity]
    )
    rep.add_argument("run_dir", nargs="?", help="a directory written by 'evsim run'")
    rep.add_argument(
        "--merge",
        nargs="+",
        metavar="DIR",
        default=None,
        help="combine the run directories of the shards of one 'evsim stations' fleet (--shard, --workers --out) "
        "or of one 'evsim run FILE --shard I/N' into a new run directory with one summary and plots; refuses "
        "overlapping shards or shards of different fleets or scenario runs",
    )
    rep.add_argument(
        "--out",
        default="runs",
        help="with --merge: base directory for the merged run directory (default: runs)",
    )
    rep.add_argument("--no-plots", action="store_true", help="only print the summary")
    rep.add_argument(
        "--json", action="store_true", help="print the summary document (summary.json) instead of the text"
    )

    tls = sub.add_parser("tls", help="the TLS engine", parents=[verbosity])
    tls_sub = tls.add_subparsers(dest="tls_command", required=True, metavar="ACTION")
    caps = tls_sub.add_parser(
        "capabilities",
        help="versions, suites (IANA and OpenSSL names), groups and each knob's state",
        parents=[verbosity],
    )
    caps.add_argument("--json", action="store_true", help="print JSON instead of text")

    exp = sub.add_parser(
        "explain",
        help="explain one TLS handshake step by step ('explain handshake --help'), or a run directory",
        description="evsim explain handshake [OPTIONS]: one real TLS handshake told step by step (see "
        "'evsim explain handshake --help'); evsim explain RUN_DIR: the story of a run.",
        parents=[verbosity],
    )
    exp.add_argument("target", metavar="handshake|RUN_DIR", help="'handshake' or a run directory")
    exp.add_argument("rest", nargs=argparse.REMAINDER, help="the options of that form")

    cal = sub.add_parser(
        "calibrate",
        help="measure the CPU model's service times on this machine and write a profile (JSON)",
        parents=[verbosity],
    )
    cal.add_argument(
        "--out", default="cpu-profile.json", help="profile file to write (default: cpu-profile.json)"
    )
    cal.add_argument("--name", default="calibrated", help="the profile's name (default: calibrated)")
    cal.add_argument("--iterations", type=int, default=50, help="operations per round and kind (default: 50)")
    cal.add_argument("--rounds", type=int, default=5, help="rounds per kind; the median counts (default: 5)")
    cal.add_argument(
        "--storm",
        type=int,
        default=300,
        metavar="N",
        help="then fit the costs to a real boot storm of N stations over loopback, two processes, as a storm "
        "costs more than operations alone (default: 300; 0: operations alone)",
    )

    fw = sub.add_parser("firmware", help="signed firmware images (OCPP L01)", parents=[verbosity])
    fw_sub = fw.add_subparsers(dest="firmware_command", required=True, metavar="ACTION")
    sign = fw_sub.add_parser(
        "sign",
        help="sign a firmware image (or build a test image) with a signing certificate of the manufacturer root",
        parents=[verbosity],
    )
    sign.add_argument("--pki", default="certs", help="PKI directory made by 'evsim certs init'")
    what = sign.add_mutually_exclusive_group(required=True)
    what.add_argument("--version", dest="fw_version", help="build a test image of this version")
    what.add_argument("--image", help="sign this file instead")
    sign.add_argument("--size", type=int, default=64 * 1024, help="payload bytes of a test image")
    sign.add_argument("--out", default="firmware", help="output directory (default: firmware)")
    caps.add_argument(
        "--profile",
        default=None,
        help="a TOML file holding one TLS profile with the keys of a scenario's [tls.profiles.<name>] table, "
        "or a scenario file (default: the built-in profile)",
    )
    caps.add_argument(
        "--name",
        default=None,
        help="which [tls.profiles.<name>] of the --profile file (needed when it defines several)",
    )
    k8s = sub.add_parser("k8s", help="Kubernetes manifests for sharded fleets", parents=[verbosity])
    k8s_sub = k8s.add_subparsers(dest="k8s_command", required=True, metavar="ACTION")
    _add_k8s_manifest(k8s_sub.add_parser("manifest", help=_K8S_HELP, parents=[verbosity]))
    return p


def _tls_capabilities(args: argparse.Namespace) -> int:
    import json

    from evsim.tls.capabilities import Capabilities

    profile = None
    if args.profile is not None:
        from evsim.scenario.profile_file import load_tls_profile

        profile = load_tls_profile(args.profile, args.name)
    elif args.name is not None:
        raise ConfigError(
            "--name picks a profile of the --profile file", path="--name", fix="add --profile FILE"
        )
    caps = Capabilities.of_profile(profile)
    print(json.dumps(caps.to_json(), indent=2) if args.json else caps.render())
    return 0


def _explain(args: argparse.Namespace) -> int:
    """``explain handshake ...`` (:mod:`evsim.explain.handshake_cli`) or ``explain RUN_DIR [--depth D] [--json]``
    (:mod:`evsim.explain.run_story`)."""
    if args.target == "handshake":
        from evsim.explain import handshake_cli

        return handshake_cli.main(args.rest)
    from evsim.explain import run_story

    story_parser = argparse.ArgumentParser(prog="evsim explain", description="the story of a run directory")
    run_story.add_arguments(story_parser)
    return run_story.main(story_parser.parse_args([args.target, *args.rest]))


def _story(run_dir: Path, depth: int, as_json: bool) -> object:
    """The story of a run directory for ``evsim run --explain``: its JSON form or its text."""
    from evsim.explain.run_story import build_story, render_text
    from evsim.metrics.rundir import load

    story = build_story(load(run_dir), depth)
    return story.as_json() if as_json else render_text(story)


class _EventLines(logging.Handler):
    """Echoed events are whole log lines already (time, level, node, kind, escaped fields): print them bare, to
    the standard error of the moment (``main`` may run many times in one process, e.g. under a test runner)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(record.getMessage(), file=sys.stderr, flush=True)


def _event_lines_as_they_are() -> None:
    events = logging.getLogger("evsim.events")
    if not any(isinstance(h, _EventLines) for h in events.handlers):
        events.addHandler(_EventLines())
    events.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``evsim ARGV``; the exit status (130 after Ctrl-C: see :mod:`evsim.interrupts`)."""
    with interrupts.handling():
        return _main(argv)


def entry() -> NoReturn:
    """The process's entry point (the ``evsim`` command, ``python -m evsim``): :func:`main`, then exit.

    Once :func:`main` has returned, the result is written; a Ctrl-C arriving between then and the exit can no
    longer change it, so it is ignored (instead of killing the process with a traceback-free SIGINT status).
    """
    with interrupts.handling():
        status = _main(None)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(status)


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(max(args.verbose - args.quiet, 0), logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    _event_lines_as_they_are()
    try:
        # inside the try: a Ctrl-C while the modules load (a worker of --workers stopped as it starts) is an
        # interruption like any other, not a traceback
        from evsim import commands
        from evsim.runtime import raise_open_file_limit, tune_gc

        tune_gc()
        raise_open_file_limit()
        if args.command == "certs":
            return commands.certs_init(args)
        if args.command == "csms":
            return commands.run_csms(args)
        if args.command == "stations":
            return commands.run_stations(args)
        if args.command == "demo":
            return commands.run_demo(args)
        if args.command == "run":
            from evsim.scenario import cli as scenario_cli

            if args.workers > 1:
                from evsim.workers import run_scenario_workers

                return run_scenario_workers(args, tell=_story)
            return scenario_cli.run(args, tell=_story)
        if args.command == "validate":
            from evsim.scenario import cli as scenario_cli

            return scenario_cli.validate(args)
        if args.command == "report":
            from evsim.scenario import cli as scenario_cli

            return scenario_cli.report(args)
        if args.command == "tls":
            return _tls_capabilities(args)
        if args.command == "explain":
            return _explain(args)
        if args.command == "firmware":
            return commands.firmware_sign(args)
        if args.command == "calibrate":
            from evsim import calibrate

            return calibrate.command(args)
        if args.command == "k8s":
            from evsim.deploy import print_manifest

            return print_manifest(args)
        if args.command == "admin":
            return commands.run_admin(args)
    except (EvsimError, KeyboardInterrupt) as exc:
        return _failed(exc)
    except BrokenPipeError as exc:
        return _failed(exc)
    except BaseExceptionGroup as group:
        # A trio nursery wraps a node's error (a port already taken when a listener starts) in a group.
        sole = _sole_exception(group)
        if not isinstance(sole, EvsimError | KeyboardInterrupt | BrokenPipeError):
            raise
        return _failed(sole)
    raise AssertionError(args.command)  # pragma: no cover - argparse enforces the choices


def _failed(exc: EvsimError | KeyboardInterrupt | BrokenPipeError) -> int:
    """Print what went wrong in one line (with its fix, for a configuration error); the exit status.

    A closed standard output (``evsim run ... | head``) prints nothing: its reader went away.
    """
    if isinstance(exc, ConfigError):
        print(f"evsim: configuration error: {exc}", file=sys.stderr)
        return 2
    if isinstance(exc, KeyboardInterrupt):
        print("evsim: interrupted", file=sys.stderr)
        return interrupts.EXIT_INTERRUPTED
    if isinstance(exc, BrokenPipeError):
        interrupts.quiet_stdout()
        return interrupts.EXIT_BROKEN_PIPE
    print(f"evsim: {exc}", file=sys.stderr)
    return 1


def _sole_exception(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The exception that decides the exit status, inside (possibly nested) groups: a Ctrl-C or a closed
    standard output among others (what failed while the run was torn down), else the only one, else None."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop()
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(exc.exceptions)
        else:
            leaves.append(exc)
    for kind in (KeyboardInterrupt, BrokenPipeError):
        for leaf in leaves:
            if isinstance(leaf, kind):
                return leaf
    return leaves[0] if len(leaves) == 1 else None
