"""Load and validate scenario files (TOML, parsed with the stdlib ``tomllib``).

Theory of operation. Loading happens in three passes, and the first error stops it:

1. **Syntax**: ``tomllib`` parses the text; its error becomes a :class:`~evsim.errors.ConfigError` with the
   line and column it reports, and a fix chosen by the start of tomllib's message.
2. **Fields**: each table is read through a :class:`~evsim.scenario.reader.ScenarioTable` (the one table
   reader, :class:`evsim.toml_table.Table`, with errors located in the file), which refuses unknown keys
   first (with a did-you-mean), then reads each known key with a typed getter that checks the TOML type, the
   range or the allowed values, and converts units (:mod:`evsim.scenario.units`). Sections are read in
   dependency order (simulation, pki, tls, csms, controllers, stations, energy managers, links, timeline; see
   :meth:`_Builder.build`), so every reference to a root, profile, trust store, CSMS, group or node is
   checked against names already read.
3. **Whole-scenario checks**: node names that clash, station ids produced twice, two nodes on one address,
   controller chains that loop (:mod:`evsim.scenario.passes`), events after the end of the run. Each runs
   as soon as the names it needs are known, so passes 2 and 3 interleave.

The section readers live in their own modules and are combined here into one builder object:
:mod:`~evsim.scenario.read_tls` (TLS profiles, trust stores, pin sets, change policies and the peer
policies that use them), :mod:`~evsim.scenario.read_nodes` (CSMS, Local Controllers, station groups and
their endpoints), :mod:`~evsim.scenario.passes` (the cross-reference checks) and
:mod:`~evsim.scenario.read_timeline` (links and ``[[timeline]]`` entries); the keys each table may hold
and the bounds of their values are in :mod:`~evsim.scenario.vocabulary`.

Every error names the file, the line where the offending key or table is defined (found by
:mod:`evsim.scenario.locate`), the field path, the bad value and a fix. The loader only raises
``ConfigError``: getters never index or convert without checking first, and :func:`loads_scenario` turns
anything unexpected into a ``ConfigError`` that says it is an evsim bug, so a caller (``evsim validate``,
``evsim run``) has exactly one exception to handle.
"""

from __future__ import annotations

import datetime
import os
import re
import tomllib
from pathlib import Path
from typing import Final

import attrs

from evsim.errors import ConfigError
from evsim.metrics.outcome import EXPECT_KEYS, Expectation
from evsim.scenario.model import (
    DEFAULT_START,
    IntermediateSpec,
    PkiSpec,
    RootSpec,
    Scenario,
    SimulationSpec,
)
from evsim.scenario.read_clocks import check_nts_names, read_nts_servers
from evsim.scenario.read_cpu import read_cpu
from evsim.scenario.read_energy import EnergyReader
from evsim.scenario.read_files import FileReader
from evsim.scenario.read_nodes import NodeReader
from evsim.scenario.read_timeline import TimelineReader
from evsim.scenario.reader import LoadContext, ScenarioTable
from evsim.scenario.units import (
    parse_utc_timestamp,
)
from evsim.scenario.vocabulary import (
    CLOCKS,
    INTERMEDIATE_KEYS,
    KEY_TYPES,
    NETWORKS,
    PKI_KEYS,
    ROOT_KEYS,
    SIMULATION_KEYS,
    TLS_KEYS,
    TOP_KEYS,
)
from evsim.world.pki import STATION_CA

_SYNTAX_POSITION = re.compile(
    r"^(?P<msg>.*?) \(at (?:line (?P<line>\d+), column (?P<col>\d+)|end of document)\)$", re.S
)

# tomllib message prefix -> how to fix it
_SYNTAX_FIXES: Final = (
    ("Invalid value", 'quote strings ("30s"), write booleans as true / false, tables as [name]'),
    ("Expected '=' after a key", "write key = value, one per line"),
    ("Invalid statement", "each line is a [table] header, a key = value pair, or a # comment"),
    ("Cannot overwrite a value", "define each key once"),
    ("Cannot declare", "define each table once (a [[table]] array adds an entry each time)"),
    ("Unclosed array", "close the array with ]"),
    ("Unclosed inline table", "close the inline table with }, all on one line"),
    ("Unterminated string", "close the string with its quote (\" or ')"),
    ("Illegal character", "remove the control character or escape it inside a string"),
    (
        "Expected newline or end of document",
        'quote text values ("1h", "main") and put each key = value on its own line',
    ),
)


# ---------------------------------------------------------------- public API


def load_scenario(path: str | os.PathLike[str]) -> Scenario:
    """Read, parse and validate a scenario file.

    Args:
        path: the TOML file.

    Returns:
        The validated :class:`~evsim.scenario.model.Scenario`, with ``source`` set to ``str(path)``.

    Raises:
        ConfigError: the file cannot be read, is not UTF-8, is not TOML, or is not a valid scenario; the
            error names the file, the line, the field path, the bad value and a fix.
    """
    source = str(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            "scenario file not found", file=source, fix="check the path; shipped scenarios are in scenarios/"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the scenario file: {exc.strerror or exc}", file=source) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            "the file is not UTF-8 text",
            file=source,
            line=data.count(b"\n", 0, exc.start) + 1,
            fix="save the scenario as UTF-8 (TOML files are UTF-8)",
        ) from None
    return loads_scenario(text, source=source)


def loads_scenario(text: str, *, source: str = "<string>") -> Scenario:
    """Parse and validate scenario text.

    Args:
        text: a TOML document.
        source: what errors name as the file (a path, or a label such as ``"<string>"``); its stem is the
            default scenario name.

    Returns:
        The validated :class:`~evsim.scenario.model.Scenario`.

    Raises:
        ConfigError: the only exception: TOML syntax errors carry the line tomllib reports; field errors
            carry the line where the key or table is defined.
    """
    if not isinstance(text, str):
        raise ConfigError(
            "scenario text must be a str",
            value=type(text).__name__,
            file=source,
            fix="decode the file as UTF-8 first, or use load_scenario(path)",
        )
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _syntax_error(str(exc), text, source) from exc
    except RecursionError as exc:
        raise ConfigError(
            "the TOML document is nested too deeply",
            file=source,
            fix="scenario files need only a few levels of tables and arrays",
        ) from exc
    except Exception as exc:  # tomllib documents only TOMLDecodeError; anything else is still a bad file
        raise ConfigError(f"the TOML parser failed: {exc}", file=source, fix="check the TOML syntax") from exc
    return _build(doc, LoadContext(text, source))


def loads_document(doc: dict[str, object], *, source: str = "<python>", text: str = "") -> Scenario:
    """Validate a parsed document (what ``tomllib`` returns) with every check a file gets.

    :func:`evsim.scenario.document.validate_scenario` uses it for scenarios built in Python; errors carry
    the field path, and a line when ``text`` (the TOML the document was parsed from) is given.

    Raises:
        ConfigError: the only exception.
    """
    return _build(doc, LoadContext(text, source))


def _build(doc: dict[str, object], ctx: LoadContext) -> Scenario:
    """Run the builder; anything but a ``ConfigError`` is an evsim bug, reported as a ``ConfigError`` that says so."""
    try:
        return _Builder(ctx).build(doc)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(
            f"internal error while validating the scenario ({type(exc).__name__}: {exc})",
            file=ctx.source,
            fix="this is an evsim bug: please report it together with the scenario file",
        ) from exc


# ---------------------------------------------------------------- errors and locations


def _syntax_error(message: str, text: str, source: str) -> ConfigError:
    """A tomllib error as a ``ConfigError``: tomllib ends its message with ``(at line L, column C)``, which is
    parsed back into the line; the fix is chosen by how the message starts (:data:`_SYNTAX_FIXES`).
    """
    m = _SYNTAX_POSITION.match(message)
    detail, line, column = message, None, None
    if m is not None:
        detail = m.group("msg")
        if m.group("line"):
            line, column = int(m.group("line")), int(m.group("col"))
        else:
            line = text.count("\n") + 1
    fix = next(
        (f for prefix, f in _SYNTAX_FIXES if detail.startswith(prefix)),
        "fix the TOML syntax (https://toml.io)",
    )
    where = f" at column {column}" if column is not None else " at the end of the file"
    return ConfigError(f"TOML syntax error: {detail}{where}", file=source, line=line, fix=fix)


# ---------------------------------------------------------------- the builder


class _Builder(NodeReader, EnergyReader, FileReader, TimelineReader):
    """Reads the parsed document section by section (see the module doc): the section readers' methods on
    one object, so each section sees the names and tables the earlier ones read."""

    def build(self, doc: dict[str, object]) -> Scenario:
        """The scenario, section by section (see the class doc)."""
        root = ScenarioTable(self.ctx, (), doc, TOP_KEYS)
        if "simulation" not in doc:
            raise self.ctx.error(
                ("simulation",),
                "missing [simulation] table",
                fix='add [simulation] with at least duration = "1h"',
            )
        sim = self.simulation(
            ScenarioTable(self.ctx, ("simulation",), doc["simulation"], SIMULATION_KEYS, what="[simulation]")
        )
        sim = self.expectation(root, sim)
        # The order is the dependency order of the references between sections: trust stores name roots,
        # CSMS name profiles and roots, pin sets name CSMS keys (so they come after the CSMS, and a CSMS's
        # own pins / change after them), controllers name CSMS and each other, station groups name CSMS,
        # controllers, profiles, trust stores and pin sets, and links and timeline entries name any node,
        # group or station id (known once register_stations has run).
        pki = self.pki(root.sub_table("pki", PKI_KEYS, "[pki]"))
        nts = read_nts_servers(root, pki, self.nodes)
        tls = root.sub_table("tls", TLS_KEYS, "[tls]")
        profiles = self.tls_profiles(tls)
        trust = self.trust_stores(tls, pki)
        csms = self.csms(root, sim, pki, profiles)
        pin_sets = self.pin_sets(tls, pki, csms)
        change_policies = self.change_policies(tls)
        csms = self.csms_peer_policy(root, csms)
        csms = self.csms_client_trust(root, csms, trust)
        controllers = self.controllers(root, sim, pki, profiles, trust)
        groups = self.station_groups(root, csms, profiles, trust)
        self.register_stations(groups)
        check_nts_names(root, self.nodes)
        energy_managers = self.energy_managers(root)
        firmware = self.firmware_releases(root)
        file_servers = self.file_servers(root, profiles, firmware)
        file_services = self.file_services(root, profiles, trust, file_servers)
        links = self.links(root)
        timeline = self.timeline(root, sim, pki)
        return Scenario(
            simulation=sim,
            pki=pki,
            tls_profiles=profiles,
            trust_stores=trust,
            csms=csms,
            stations=groups,
            controllers=controllers,
            links=links,
            timeline=timeline,
            source=self.ctx.source,
            pin_sets=pin_sets,
            change_policies=change_policies,
            nts_servers=nts,
            energy_managers=energy_managers,
            firmware=firmware,
            file_servers=file_servers,
            file_services=file_services,
            file_transfers=self.file_transfers(root),
            cpu=read_cpu(self.ctx, doc),
        )

    # ------------------------------------------------------------ [simulation]

    def simulation(self, t: ScenarioTable) -> SimulationSpec:
        """``[simulation]``: ``duration`` is required. A TCP network runs only on the real clock (loopback
        sockets cannot follow virtual time); a virtual run starts at :data:`DEFAULT_START` unless ``start`` is
        given, a real one at the host's time. The name defaults to the file's stem.
        """
        t.require("duration", 'add duration = "1h" (how long the run lasts)')
        duration = t.duration("duration", 0.0, positive=True)
        clock = t.enum("clock", CLOCKS, "virtual")
        network = t.enum("network", NETWORKS, "memory")
        if network == "tcp" and clock != "real":
            raise t.error(
                "network",
                'network = "tcp" needs clock = "real" (loopback sockets run on the real clock)',
                value=network,
                fix='set clock = "real", or use network = "memory" for virtual time',
            )
        start: datetime.datetime | None = DEFAULT_START if clock == "virtual" else None
        if t.has("start"):
            try:
                start = parse_utc_timestamp(t.data["start"])
            except ConfigError as exc:
                raise self.ctx.relocate(exc, t.at("start")) from None
        stem = Path(self.ctx.source).stem if not self.ctx.source.startswith("<") else ""
        default_name = stem if stem and not stem.isspace() else "scenario"
        return SimulationSpec(
            name=t.string("name", default_name, max_len=100),
            description=t.string("description", ""),
            outcome=t.string("outcome", "", one_line=False, max_len=4000),
            seed=t.integer("seed", 1, 0, 2**64 - 1),
            duration=duration,
            clock=clock,
            network=network,
            start=start,
            stop_when_done=t.boolean("stop_when_done", False),
        )

    def expectation(self, root: ScenarioTable, sim: SimulationSpec) -> SimulationSpec:
        """``[expect]``: the checks of the outcome the report ends with (:class:`Expectation`), kept on the
        simulation settings."""
        t = root.sub_table("expect", EXPECT_KEYS, "[expect]")
        if t is None:
            return sim
        example = '["cert_invalid:unknown_ca"]'
        expect = Expectation(
            all_booted=t.boolean("all_booted", False),
            no_tx_lost=t.boolean("no_tx_lost", False),
            reasons=t.string_list("reasons", (), example=example),
            no_reasons=t.string_list("no_reasons", (), example=example),
            security_events=t.string_list("security_events", (), example='["InvalidCsmsCertificate"]'),
            kinds=t.string_list("kinds", (), example='["pin_promoted"]'),
        )
        return attrs.evolve(sim, expect=expect)

    # ------------------------------------------------------------ [pki]

    def pki(self, t: ScenarioTable | None) -> PkiSpec:
        """``[pki]``: key type, validity and organization of the run's certificates, and extra roots (``root``
        always exists; an attacker's root, e.g. ``[pki.roots.rogue]``, is declared here).
        """
        if t is None:
            return PkiSpec()
        key_type = t.enum("key_type", KEY_TYPES, "ec")
        validity = t.duration("validity", PkiSpec().validity, positive=True)
        organization = t.string("organization", "evsim", max_len=64)
        roots: dict[str, RootSpec] = {"root": RootSpec(name="root", key_type=key_type)}
        for name, value in t.named_tables("roots", "extra root CAs, e.g. [pki.roots.rogue]"):
            r = ScenarioTable(
                self.ctx,
                t.at("roots", name),
                value,
                ROOT_KEYS,
                what=f"[pki.roots.{name}] (may be empty: {{}})",
            )
            roots[name] = RootSpec(name=name, key_type=r.enum("key_type", KEY_TYPES, key_type))
        intermediates: dict[str, IntermediateSpec] = {}
        for name, value in t.named_tables("intermediates", "intermediate CAs, e.g. [pki.intermediates.ica1]"):
            if name in roots or name == STATION_CA:
                raise t.error(f"intermediates.{name}", f"{name!r} already names a CA", fix="rename it")
            i = ScenarioTable(
                self.ctx,
                t.at("intermediates", name),
                value,
                INTERMEDIATE_KEYS,
                what=f'[pki.intermediates.{name}] (e.g. issuer = "root")',
            )
            issuer = i.reference(
                "issuer",
                "root",
                [*roots, *intermediates],
                "CA",
                "[pki.roots.<name>] or an earlier intermediate",
            )
            intermediates[name] = IntermediateSpec(
                name=name, issuer=issuer, key_type=i.enum("key_type", KEY_TYPES, key_type)
            )
        spec = PkiSpec(roots=roots, intermediates=intermediates)
        station_issuer = t.reference(
            "station_issuer", "root", ["root", *intermediates], "CA", "[pki.intermediates]"
        )
        if spec.top_root(station_issuer) != "root":
            raise t.error(
                "station_issuer",
                f"{station_issuer!r} is not under the operator's root",
                value=station_issuer,
                fix='name an intermediate whose chain ends at "root"',
            )
        expiry_warning = t.duration("expiry_warning", 0.0, positive=True) if t.has("expiry_warning") else None
        return PkiSpec(
            key_type=key_type,
            validity=validity,
            organization=organization,
            roots=roots,
            expiry_warning=expiry_warning,
            intermediates=intermediates,
            station_issuer=station_issuer,
        )
