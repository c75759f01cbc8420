"""Reading time from a scenario file: ``[nts.<name>]`` servers and a station group's ``clock`` table.

A group's ``clock`` names NTS servers (checked against ``[nts]``, with a did-you-mean) and roots (checked
against ``[pki.roots]``); every other key is checked here and again by the node layer's
:class:`~evsim.nodes.devicetime.ClockSettings` (its errors are reported at the key in the file).
"""

from __future__ import annotations

import typing

from evsim.errors import ConfigError
from evsim.nodes.devicetime import MAX_REPORT_THRESHOLD_S, TIME_SOURCES
from evsim.scenario.model import PkiSpec
from evsim.scenario.reader import NodeNames, ScenarioTable
from evsim.scenario.units import parse_utc_timestamp
from evsim.scenario.vocabulary import CLOCK_KEYS, NTS_KEYS
from evsim.toml_table import choices_fix
from evsim.world.clocks import NTS_TIME_CHECKS, ClockSpec, NtsServerSpec

MAX_DRIFT_PPM = 1_000_000.0
"""Largest drift accepted (a clock running at twice or zero speed; real quartz is within ±100 ppm)."""
MAX_NTS_SERVERS = 8
"""Most NTS servers one group lists (chrony's ``maxsources``-like bound; a choice of evsim)."""


def read_nts_servers(root: ScenarioTable, pki: PkiSpec, nodes: NodeNames) -> dict[str, NtsServerSpec]:
    """``[nts.<name>]`` tables: where each NTS server listens and which root issues its certificate."""
    out: dict[str, NtsServerSpec] = {}
    nodes.roots = tuple(pki.roots)
    for name, value in root.named_tables("nts", "NTS servers, e.g. [nts.time1]"):
        t = ScenarioTable(root.ctx, ("nts", name), value, NTS_KEYS, what=f"[nts.{name}] (may be empty: {{}})")
        out[name] = NtsServerSpec(
            name=name,
            host=t.optional_string("host", max_len=64),
            root=t.reference("root", "root", pki.roots, "root", "[pki.roots.<name>]"),
            validity=t.duration("validity", pki.validity, positive=True),
            clock_error=t.duration("clock_error", 0.0, allow_negative=True),
        )
    nodes.nts = dict(out)
    return out


def check_nts_names(root: ScenarioTable, nodes: NodeNames) -> None:
    """NTS server names are node names: none may also be a CSMS, controller, group or station id."""
    for name in nodes.nts:
        taken = name in nodes.csms or name in nodes.controllers or name in nodes.groups
        if taken or name in nodes.station_group:
            raise root.error_at(
                ("nts", name), f"{name!r} names another node too", value=name, fix="rename the NTS server"
            )


def read_group_clock(t: ScenarioTable, nodes: NodeNames) -> ClockSpec | None:
    """A group's ``clock`` table (None when absent: perfect clocks)."""
    c = t.sub_table("clock", CLOCK_KEYS, '{ offset = "-3d", offset_spread = "1h", drift_ppm = 50 }')
    if c is None:
        return None
    set_to = None
    if c.has("set_to"):
        try:
            set_to = parse_utc_timestamp(c.data["set_to"])
        except ConfigError as exc:
            raise c.ctx.relocate(exc, c.at("set_to")) from None
    nts = c.string_list("nts", (), example='["time1", "time2"]')
    for i, name in enumerate(nts):
        if name not in nodes.nts:
            raise c.error_at(
                c.at("nts", i),
                f"undefined NTS server {name!r}",
                value=name,
                fix=choices_fix(name, list(nodes.nts), what="define it ([nts.<name>]) or use one of"),
            )
    if len(nts) > MAX_NTS_SERVERS:
        raise c.error("nts", f"at most {MAX_NTS_SERVERS} NTS servers", value=list(nts), fix="list fewer")
    spec = ClockSpec(
        offset=c.duration("offset", 0.0, allow_negative=True),
        offset_spread=c.duration("offset_spread", 0.0),
        drift_ppm=c.number("drift_ppm", 0.0, minimum=-MAX_DRIFT_PPM, maximum=MAX_DRIFT_PPM),
        drift_spread_ppm=c.number("drift_spread_ppm", 0.0, minimum=0.0, maximum=MAX_DRIFT_PPM),
        set_to=set_to,
        time_source=c.string_list("time_source", (), allowed=TIME_SOURCES, example='["NTP", "Heartbeat"]')
        or None,
        report_threshold=c.integer("report_threshold", 20, 0, MAX_REPORT_THRESHOLD_S),
        step_threshold=c.duration("step_threshold", 1.0),
        nts=nts,
        nts_roots=c.string_list("nts_roots", (), allowed=nodes.roots, example='["root"]') or None,
        nts_time_check=c.enum("nts_time_check", typing.cast(tuple[str, ...], NTS_TIME_CHECKS), "enforce"),
        nts_poll=c.duration("nts_poll", 1024.0, positive=True),
    )
    if spec.nts_poll < 1.0:
        raise c.error("nts_poll", "must be at least 1 s", value=c.data["nts_poll"], fix='use e.g. "64s"')
    if (spec.nts_roots or spec.nts_time_check != "enforce") and not spec.nts:
        raise c.error("nts", "NTS settings without NTS servers", fix='add nts = ["<server>"] or remove them')
    try:
        spec.settings()
    except ConfigError as exc:  # the node layer's own rules
        field = (exc.path or "").rsplit(".", 1)[-1]
        raise c.error(field, exc.message, value=exc.value, fix=exc.fix or "see scenarios/README.md") from None
    return spec
