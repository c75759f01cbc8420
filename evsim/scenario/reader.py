"""What every section reader of the scenario loader shares: the load's context, the typed table, the names.

Theory of operation. A load reads one parsed TOML document (a tree of dicts and lists) section by section.
Every error it raises must say where in the file the problem is, so nothing here touches a raw value
without a location attached:

* :class:`LoadContext` holds the text and its source name and turns a field path such as
  ``("stations", "fleet", "count")`` into a :class:`~evsim.errors.ConfigError` with the file and the line
  where that key is defined (:mod:`evsim.scenario.locate` indexes the text once, on the first error, so a
  file that loads cleanly never pays for it). A document built in Python has no text: its errors carry the
  path and no line.
* :class:`ScenarioTable` is the one TOML table reader (:class:`evsim.toml_table.Table`: unknown keys with a
  did-you-mean, typed getters, ranges) with that context as its error site, plus the getters only scenarios
  need: durations with units, security profile numbers, tables of named tables.
* :class:`NodeNames` records the CSMS, controllers, station groups and station ids as their sections are
  read. Sections are read in dependency order, so a reference (a target, a ``between`` selector, an
  endpoint) is checked against the names already known and a typo gets a did-you-mean from that list.
* :class:`SectionReader` is the state the section readers (:mod:`~evsim.scenario.read_tls`,
  :mod:`~evsim.scenario.read_nodes`, :mod:`~evsim.scenario.passes`, :mod:`~evsim.scenario.read_timeline`)
  share; the loader's builder combines them into one object, so a later section sees what earlier ones
  read.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterator, Sequence

from evsim.errors import ConfigError
from evsim.scenario.locate import LineIndex, index_lines
from evsim.scenario.model import (
    ChangeSpec,
    ControllerSpec,
    CsmsSpec,
    EnergyManagerSpec,
    PinSetSpec,
    StationGroupSpec,
)
from evsim.scenario.units import (
    parse_duration,
)
from evsim.scenario.vocabulary import (
    MAX_NAME_LENGTH,
    SECURITY_PROFILES,
)
from evsim.toml_table import FieldPath, Table, format_path, shown, type_name
from evsim.world.clocks import NtsServerSpec

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


class LoadContext:
    """The text and source of one load: builds located errors."""

    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source
        self._index: LineIndex | None = None

    def line(self, path: FieldPath) -> int | None:
        if self._index is None:
            self._index = index_lines(self.text)
        return self._index.line_of(path)

    def render(self, path: FieldPath) -> str:
        return format_path(path)

    def error(self, path: FieldPath, message: str, *, value: object = None, fix: str = "") -> ConfigError:
        """A ``ConfigError`` at ``path``, with the file and the line where ``path`` is defined."""
        return ConfigError(
            message,
            path=format_path(path),
            value=shown(value),
            fix=fix,
            file=self.source,
            line=self.line(path),
        )

    def relocate(self, exc: ConfigError, path: FieldPath) -> ConfigError:
        """The same error, at ``path`` (for errors raised by code that does not know where it is)."""
        return self.error(path, exc.message, value=exc.value, fix=exc.fix)


class ScenarioTable(Table):
    """A scenario table: the base reader (:class:`evsim.toml_table.Table`) with errors located in the file
    (``ctx``), plus the scenario's own getters (units, security profiles, named tables).

    Args:
        ctx: the load's context.
        path: where the table is.
        data: the parsed value (checked to be a table).
        keys: the keys it may hold.
        what: how the fix names the table when it is not one (``"[simulation]"``).
        unknown_hint: replaces the list of allowed keys in unknown-key errors.
        elsewhere: keys that are valid in sibling tables but not in this one (timeline parameters of other
            actions): they are reported as "not a parameter of <what>" instead of "unknown key".
    """

    def __init__(
        self,
        ctx: LoadContext,
        path: FieldPath,
        data: object,
        keys: Sequence[str],
        *,
        what: str = "",
        unknown_hint: str = "",
        elsewhere: Collection[str] = (),
    ) -> None:
        self.ctx = ctx
        super().__init__(
            data, path, keys, site=ctx, what=what, unknown_hint=unknown_hint, elsewhere=elsewhere
        )

    def child(self, path: FieldPath, data: object, keys: Sequence[str], *, what: str = "") -> ScenarioTable:
        return ScenarioTable(self.ctx, path, data, keys, what=what)

    def sub_table(self, key: str, keys: Sequence[str], what: str = "") -> ScenarioTable | None:
        sub = super().sub_table(key, keys, what)
        assert sub is None or isinstance(sub, ScenarioTable)
        return sub

    def profile_number(self, key: str, default: int) -> int:
        """A security profile number: 1, 2 or 3 (the OCPP security profiles)."""
        value = self.data.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value not in SECURITY_PROFILES:
            raise self.error(
                key,
                "unknown security profile",
                value=value,
                fix="use 1 (plain ws, trusted networks only), 2 (TLS + password) or 3 (mutual TLS)",
            )
        return value

    def duration(
        self,
        key: str,
        default: float,
        *,
        allow_negative: bool = False,
        positive: bool = False,
        whole_seconds: bool = False,
    ) -> float:
        """A duration at ``key`` (see :meth:`ctx_duration`), or ``default`` when the key is absent."""
        if key not in self.data:
            return default
        return self.ctx_duration(
            self.at(key),
            self.data[key],
            allow_negative=allow_negative,
            positive=positive,
            whole_seconds=whole_seconds,
        )

    def ctx_duration(
        self,
        path: FieldPath,
        value: object,
        *,
        allow_negative: bool = False,
        positive: bool = False,
        whole_seconds: bool = False,
    ) -> float:
        """A duration at ``path`` (units: :func:`~evsim.scenario.units.parse_duration`). ``positive`` refuses
        zero, ``whole_seconds`` fractions (OCPP intervals are integers).
        """
        try:
            seconds = parse_duration(value, allow_negative=allow_negative)
        except ConfigError as exc:
            raise self.ctx.relocate(exc, path) from None
        if positive and seconds <= 0:
            raise self.ctx.error(path, "must be longer than zero", value=value, fix='use e.g. "30s"')
        if whole_seconds and seconds != math.floor(seconds):
            raise self.ctx.error(
                path,
                "must be a whole number of seconds (OCPP intervals are integers)",
                value=value,
                fix=f'use e.g. "{max(1, math.floor(seconds))}s"',
            )
        return seconds

    def named_tables(self, key: str, what: str) -> Iterator[tuple[str, object]]:
        """Entries of a table of named tables (``[csms.<name>]``), names checked."""
        sub = self.data.get(key, {})
        if not isinstance(sub, dict):
            raise self.error(
                key,
                f"expected a table of named tables, got {type_name(sub)}",
                value=sub,
                fix=f"write [{key}.<name>] tables ({what})",
            )
        for name, value in sub.items():
            check_name(self.ctx, self.at(key, name), name)
            yield name, value


def check_name(ctx: LoadContext, path: FieldPath, name: str) -> None:
    """Names of roots, profiles, trust stores, CSMS and groups: selectors and ids are built from them."""
    if not _NAME.fullmatch(name) or len(name) > MAX_NAME_LENGTH:
        raise ctx.error(
            path,
            f"invalid name (1..{MAX_NAME_LENGTH} letters, digits, '-' or '_', starting with a letter or digit)",
            value=name,
            fix="rename the table, e.g. [stations.fleet_a]",
        )


class NodeNames:
    """Every name a selector or target may use: CSMS, station groups, station ids."""

    def __init__(self) -> None:
        self.csms: dict[str, CsmsSpec] = {}
        self.controllers: dict[str, ControllerSpec] = {}
        self.groups: dict[str, StationGroupSpec] = {}
        self.station_group: dict[str, str] = {}  # station id -> group
        self.nts: dict[str, NtsServerSpec] = {}
        self.roots: tuple[str, ...] = ("root",)  # the run's roots, once [pki] is read
        self.energy_managers: dict[str, EnergyManagerSpec] = {}
        self.file_servers: dict[str, object] = {}
        self.file_services: dict[str, object] = {}
        self.firmware: dict[str, str] = {}  # release name -> version

    def kind(self, name: str) -> str | None:
        """What ``name`` is: ``"csms"``, ``"controller"``, ``"group"``, ``"station"``, ``"energy_manager"``,
        ``"file_server"`` or
        None."""
        if name in self.csms:
            return "csms"
        if name in self.controllers:
            return "controller"
        if name in self.groups:
            return "group"
        if name in self.station_group:
            return "station"
        if name in self.nts:
            return "nts"
        if name in self.energy_managers:
            return "energy_manager"
        if name in self.file_servers:
            return "file_server"
        return None

    def group_of(self, name: str) -> StationGroupSpec:
        """The group of a group name or station id (the caller checked the kind)."""
        return self.groups[self.station_group.get(name, name)]

    def names(self, kinds: Collection[str]) -> list[str]:
        """The names of the given kinds (station ids excluded), for did-you-means."""
        out: list[str] = []
        if "csms" in kinds:
            out += self.csms
        if "controller" in kinds:
            out += self.controllers
        if "group" in kinds:
            out += self.groups
        if "nts" in kinds:
            out += self.nts
        if "energy_manager" in kinds:
            out += self.energy_managers
        if "file_server" in kinds:
            out += self.file_servers
        return out


class SectionReader:
    """The state every section reader works on: the load's context and the names read so far.

    ``_pin_sets`` and ``_change`` are set when ``[tls.pins]`` and ``[tls.change]`` are read (before any
    CSMS peer policy, station group or timeline entry that names them).
    """

    _pin_sets: dict[str, PinSetSpec]
    _change: dict[str, ChangeSpec]

    def __init__(self, ctx: LoadContext) -> None:
        self.ctx = ctx
        self.nodes = NodeNames()
