"""The ``evsim`` command line.

evsim certs init [--dir certs]            make the development PKI
evsim csms --listen HOST:PORT --pki DIR   serve wss://HOST:PORT/ocpp/<station-id>
evsim stations --csms URL --count N ...   run N stations against any OCPP 2.0.1 CSMS
evsim demo --pki DIR                      a CSMS and ten stations in one process (virtual time)
evsim tls capabilities [--json]           TLS versions, suites, groups and knob states of this engine
evsim firmware sign --version V           a signed test firmware image (manufacturer root of the dev PKI)
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from typing import NoReturn

from evsim import DEV_PASSWORD, __version__, interrupts
from evsim.errors import ConfigError, EvsimError


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


def _add_verbosity(parser: argparse.ArgumentParser, *, default: object) -> None:
    parser.add_argument("-v", "--verbose", action="count", default=default, help=_VERBOSE_HELP)
    parser.add_argument("-q", "--quiet", action="count", default=default, help=_QUIET_HELP)


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
    init.add_argument("--dir", default="certs", help="output directory (default: certs)")
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
    init.add_argument("--days", type=int, default=365, help="validity of the leaf certificates in days")
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
        "--heartbeat-interval", type=int, default=300, help="interval sent in BootNotification (s)"
    )
    csms.add_argument(
        "--ocpp-version", action="append", choices=("2.0.1", "2.1"), help="versions served (default: both)"
    )
    csms.add_argument(
        "--duration", type=float, default=None, help="stop after S seconds (default: run forever)"
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

    st = sub.add_parser("stations", help="run N charging stations against a CSMS", parents=[verbosity])
    st.add_argument(
        "--csms",
        required=True,
        help="OCPP-J endpoint URL without the identity, e.g. wss://localhost:8443/ocpp",
    )
    st.add_argument("--count", type=int, default=1, help="number of stations")
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
    st.add_argument("--session-duration", type=float, default=20.0, help="seconds of charging per session")
    st.add_argument("--meter-interval", type=float, default=5.0, help="seconds between meter values")
    st.add_argument("--duration", type=float, default=120.0, help="give up after S seconds (exit 1)")
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

    val = sub.add_parser(
        "validate", help="check scenario files without running anything", parents=[verbosity]
    )
    val.add_argument("files", nargs="+", help="scenario TOML files")

    rep = sub.add_parser(
        "report", help="re-render the summary and plots of a run directory", parents=[verbosity]
    )
    rep.add_argument("run_dir", help="a directory written by 'evsim run'")
    rep.add_argument("--no-plots", action="store_true", help="only print the summary")

    tls = sub.add_parser("tls", help="the TLS engine", parents=[verbosity])
    tls_sub = tls.add_subparsers(dest="tls_command", required=True, metavar="ACTION")
    caps = tls_sub.add_parser(
        "capabilities",
        help="versions, suites (IANA and OpenSSL names), groups and each knob's state",
        parents=[verbosity],
    )
    caps.add_argument("--json", action="store_true", help="print JSON instead of text")

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
        help="a TOML file holding one TLS profile table (default: the built-in profile)",
    )
    return p


def _tls_capabilities(args: argparse.Namespace) -> int:
    import json
    import tomllib

    from evsim.tls.capabilities import Capabilities
    from evsim.tls.config import TlsProfile

    profile = None
    if args.profile is not None:
        try:
            with open(args.profile, "rb") as fh:
                data = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read the TLS profile ({exc})", file=args.profile) from exc
        try:
            profile = TlsProfile.from_toml(data, path="")
        except ConfigError as exc:
            raise ConfigError(
                exc.message, path=exc.path, value=exc.value, fix=exc.fix, file=args.profile
            ) from exc
    caps = Capabilities.of_profile(profile)
    print(json.dumps(caps.to_json(), indent=2) if args.json else caps.render())
    return 0


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
    from evsim import commands
    from evsim.runtime import raise_open_file_limit, tune_gc

    tune_gc()
    raise_open_file_limit()

    try:
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

            return scenario_cli.run(args)
        if args.command == "validate":
            from evsim.scenario import cli as scenario_cli

            return scenario_cli.validate(args)
        if args.command == "report":
            from evsim.scenario import cli as scenario_cli

            return scenario_cli.report(args)
        if args.command == "tls":
            return _tls_capabilities(args)
        if args.command == "firmware":
            return commands.firmware_sign(args)
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
