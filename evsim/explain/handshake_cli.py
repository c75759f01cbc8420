"""``evsim explain handshake`` options: canned case, profile keys for each side, depth, JSON.

See :mod:`evsim.explain.handshake` for what is run and told.
"""

from __future__ import annotations

import argparse
import json
import tomllib
from collections.abc import Sequence
from typing import Any

import attrs

from evsim.errors import ConfigError
from evsim.explain.handshake import CASES, Setup, explain, setup
from evsim.tls import TlsProfile

USAGE = """\
Run one real TLS handshake (verification on, in memory, virtual time) and tell it step by step: the
ClientHello's offers, the server's choices and the knob that decided each, the certificate chain and each
verification step, the session ticket, and where a refused handshake stopped (alert, knob).

Peers: a canned case (--case) makes a throwaway PKI in memory; --client / --server KEY=VALUE set keys of
a scenario's [tls.profiles.<name>] table (TOML values: --server 'versions=["1.3"]', --client
'session.resumption="off"'); --client-profile / --server-profile FILE read a whole profile as
'evsim tls capabilities --profile' does.

Or peers from a scenario file: SCENARIO --client NODE --server NODE (station group, controller, CSMS;
'attacker' is the timeline's attack_downgrade client, 'impostor' the attack_wrong_ca / attack_mitm server).

examples:
  evsim explain handshake --case downgrade
  evsim explain handshake scenarios/tls_downgrade_attack.toml --client attacker --server main
  evsim explain handshake --case ok --server 'cipher_suites={"1.3"=["TLS_AES_128_GCM_SHA256"]}' --depth 3
  evsim explain handshake --case resumption --json
"""


def build_parser(prog: str = "evsim explain handshake") -> argparse.ArgumentParser:
    """The options of ``evsim explain handshake``."""
    p = argparse.ArgumentParser(
        prog=prog, description=USAGE, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "scenario",
        nargs="?",
        default=None,
        metavar="SCENARIO",
        help="a scenario file: --client and --server then name its nodes",
    )
    p.add_argument("--case", default="ok", choices=tuple(CASES), help="the canned case (default: ok)")
    for side, nodes in (
        ("client", "a station group, a controller or 'attacker'"),
        ("server", "a CSMS, a controller or 'impostor'"),
    ):
        p.add_argument(
            f"--{side}",
            action="append",
            default=[],
            metavar="KEY=VALUE|NODE",
            help=f"a {side} profile key with a TOML value (repeatable; dotted keys for tables); with SCENARIO: "
            f"{nodes} of it",
        )
        p.add_argument(
            f"--{side}-profile", default=None, metavar="FILE", help=f"the {side} profile from a TOML file"
        )
        p.add_argument(
            f"--{side}-name", default=None, metavar="NAME", help=f"which profile of --{side}-profile's file"
        )
    p.add_argument("--resume", action="store_true", help="a second connection that resumes the first")
    p.add_argument(
        "--depth",
        type=int,
        choices=(1, 2, 3),
        default=2,
        help="1 the story, 2 every decision (default), 3 every message",
    )
    p.add_argument("--json", action="store_true", help="print the steps as JSON")
    p.add_argument(
        "-v", "--verbose", action="count", default=0, help=argparse.SUPPRESS
    )  # evsim's own, accepted
    p.add_argument(
        "-q", "--quiet", action="count", default=0, help=argparse.SUPPRESS
    )  # after the command too
    return p


def parse_keys(items: Sequence[str], *, who: str) -> dict[str, Any]:
    """``KEY=VALUE`` items (TOML values, dotted keys) as a profile table.

    Raises:
        ConfigError: an item without ``=`` or a value that is not TOML.
    """
    table: dict[str, Any] = {}
    for item in items:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ConfigError("expected KEY=VALUE", path=f"--{who}", value=item, fix='e.g. versions=["1.3"]')
        try:
            parsed = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            raise ConfigError(
                "the value is not TOML", path=f"--{who} {key}", value=value, fix='quote strings: tls="1.3"'
            ) from None
        *parents, last = key.split(".")
        node = table
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError("a key is both a value and a table", path=f"--{who} {key}")
        node[last] = parsed
    return table


def main(argv: Sequence[str]) -> int:
    """``evsim explain handshake ARGV``: print the explanation; 0 (a refused handshake is a story too).

    Raises:
        ConfigError: bad options or profile keys.
    """
    args = build_parser().parse_args(list(argv))
    if args.scenario is not None:
        from evsim.explain.handshake_scenario import scenario_setup

        if len(args.client) != 1 or len(args.server) != 1:
            raise ConfigError(
                "with a scenario file, name one client and one server node",
                path="--client/--server",
                fix="e.g. --client attacker --server main",
            )
        s = scenario_setup(args.scenario, args.client[0], args.server[0], connections=2 if args.resume else 1)
        return _show(s, args)
    profiles: dict[str, TlsProfile | None] = {}
    for side in ("client", "server"):
        file = getattr(args, f"{side}_profile")
        if file is None:
            profiles[side] = None
            continue
        from evsim.scenario.profile_file import load_tls_profile

        profiles[side] = load_tls_profile(file, getattr(args, f"{side}_name"))
    s = setup(
        args.case,
        client_keys=parse_keys(args.client, who="client"),
        server_keys=parse_keys(args.server, who="server"),
        client_profile=profiles["client"],
        server_profile=profiles["server"],
    )
    if args.resume:
        s = attrs.evolve(s, connections=2)
    return _show(s, args)


def _show(s: Setup, args: argparse.Namespace) -> int:
    story = explain(s)
    print(json.dumps(story.to_json(), indent=2) if args.json else story.render(args.depth))
    return 0
