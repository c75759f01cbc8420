"""The ``[energy_managers.<name>]`` tables: EEBus SHIP energy managers and the stations linked to them.

Read after the station groups (``stations`` names groups and station ids). A manager's name may not be a CSMS,
controller, group or station name (timeline targets name any of them), and it may not listen where another
node does.
"""

from __future__ import annotations

from typing import Literal

from evsim.scenario.model import EnergyManagerSpec
from evsim.scenario.passes import claim_address
from evsim.scenario.reader import ScenarioTable, SectionReader
from evsim.scenario.vocabulary import CLIENT_AUTH_KINDS, ENERGY_MANAGER_KEYS
from evsim.toml_table import choices_fix, type_name
from evsim.world.energy import STATION_TRUST

__all__ = ["EnergyReader", "controller_pairing"]

DAY_S = 86_400.0


def controller_pairing(
    t: ScenarioTable, security_profile: int, client_trust: str | None
) -> tuple[Literal["required", "pairing"], bool, float]:
    """A controller listener's ``client_auth`` (``required`` or ``pairing``), ``auto_accept`` and
    ``pairing_window``; pairing needs profile 3 and excludes ``client_trust``."""
    client_auth = t.enum("client_auth", CLIENT_AUTH_KINDS, "required")
    if client_auth == "pairing" and security_profile != 3:
        raise t.error(
            "client_auth",
            f"pairing decides on client certificates, which only security profile 3 asks for (got {security_profile})",
            value=client_auth,
            fix="use security_profile = 3, or remove client_auth",
        )
    if client_auth == "pairing" and client_trust is not None:
        raise t.error(
            "client_trust",
            'a pairing listener checks no CA: client_trust has no use with client_auth = "pairing"',
            value=client_trust,
            fix='remove client_trust, or use client_auth = "required"',
        )
    for key in ("auto_accept", "pairing_window"):
        if t.has(key) and client_auth != "pairing":
            raise t.error(
                key,
                f'{key} needs client_auth = "pairing"',
                value=t.data[key],
                fix="add it or remove this key",
            )
    window = t.duration("pairing_window", 120.0, positive=True)
    if window > DAY_S:
        raise t.error(
            "pairing_window", "at most one day", value=t.data["pairing_window"], fix='write e.g. "2m"'
        )
    return client_auth, t.boolean("auto_accept", False), window


class EnergyReader(SectionReader):
    """Reads ``[energy_managers.<name>]`` (mixed into the loader's builder)."""

    def energy_managers(self, root: ScenarioTable) -> dict[str, EnergyManagerSpec]:
        """Every ``[energy_managers.<name>]``; each station has at most one energy manager."""
        out: dict[str, EnergyManagerSpec] = {}
        linked: dict[str, str] = {}
        addresses = {(c.host.lower(), c.port): c.name for c in self.nodes.csms.values() if c.port != 0}
        addresses.update(
            {(c.host.lower(), c.port): c.name for c in self.nodes.controllers.values() if c.port}
        )
        for name, value in root.named_tables(
            "energy_managers", "energy managers, e.g. [energy_managers.hems]"
        ):
            where = ("energy_managers", name)
            if not isinstance(value, dict):
                raise self.ctx.error(
                    where,
                    f"expected a table [energy_managers.{name}], got {type_name(value)}",
                    value=value,
                    fix="write [energy_managers.<name>] tables, e.g. [energy_managers.hems]",
                )
            kind = self.nodes.kind(name)
            if kind is not None:
                raise self.ctx.error(
                    where,
                    f"{name!r} is already the name of a {kind}",
                    value=name,
                    fix="give the energy manager another name (timeline targets must be unambiguous)",
                )
            t = ScenarioTable(self.ctx, where, value, ENERGY_MANAGER_KEYS, what=f"[energy_managers.{name}]")
            stations = t.string_list("stations", (), example='["fleet"]')
            for i, sel in enumerate(stations):
                if self.nodes.kind(sel) not in ("group", "station"):
                    raise t.error_at(
                        t.at("stations", i),
                        f"{sel!r} is not a station group or station id",
                        value=sel,
                        fix=choices_fix(sel, self.nodes.names(("group",)), what="use a group, e.g."),
                    )
                ids = self.nodes.groups[sel].station_ids() if sel in self.nodes.groups else [sel]
                for sid in ids:
                    other = linked.setdefault(sid, name)
                    if other != name or ids.count(sid) > 1:
                        raise t.error_at(
                            t.at("stations", i),
                            f"station {sid!r} is already linked to energy manager {other!r}",
                            value=sel,
                            fix="link each station to one energy manager, once",
                        )
                linked.update(dict.fromkeys(ids, name))
            spec = EnergyManagerSpec(
                name=name,
                host=t.string("host", f"{name}.evsim.test", max_len=253),
                port=t.integer("port", 4711, 0, 65535),
                stations=stations,
                auto_accept=t.boolean("auto_accept", False),
                pairing_window=t.duration("pairing_window", 120.0, positive=True),
                station_trust=t.enum("station_trust", STATION_TRUST, "register"),
                retry=t.duration("retry", 30.0, positive=True),
                confirm=t.duration("confirm", 0.0),
            )
            too_long = [k for k in ("pairing_window", "retry", "confirm") if getattr(spec, k) > DAY_S]
            if too_long:
                key = too_long[0]
                raise t.error(key, "at most one day", value=t.data[key], fix=f'write e.g. {key} = "2m"')
            claim_address(
                t,
                addresses,
                name,
                spec.host,
                spec.port,
                "node",
                "give each listening node its own host or port",
            )
            out[name] = spec
        self.nodes.energy_managers = dict(out)
        return out
