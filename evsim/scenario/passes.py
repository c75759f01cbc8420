"""The whole-scenario checks of the loader: references and names that only make sense across tables.

Theory of operation. A field check looks at one value; these look at the scenario as a graph of named
nodes, and each runs as soon as the names it needs are known (the loader's builder calls them in its
section order):

* **Station ids** (:meth:`ScenarioChecks.register_stations`): every id a group's ``id_pattern`` produces is
  recorded. An id produced twice (by one pattern or by two groups) would give two stations one OCPP
  identity, and so one record at the CSMS; an id equal to a CSMS, controller or group name would make
  selectors (``between``, ``target``) ambiguous. Both are refused, as is an id that is not an OCPP
  identity (the pattern check saw only the first and the last id).
* **CSMS references** (:meth:`ScenarioChecks.check_csms_references`): ``secondary_of`` names another CSMS
  that is itself a primary (a secondary shares its primary's station records, so a chain of secondaries
  would have no owner), and ``trusted_controllers`` name controllers and only appear with
  ``behind_controller = "trust_controller"``, the one setting that reads them.
* **Controller chains** (:meth:`ScenarioChecks.controller_order`): controllers connect upstream to a CSMS
  or to other controllers. The chains are walked depth-first: the order returned starts each controller
  after those it connects to (the runner starts them in this order), and a loop is refused at the
  reference that closes it, naming the whole loop. :meth:`ScenarioChecks.resolve_csms` follows the first
  upstream of each controller to the CSMS a station group ends up at.
* **Addresses** (:func:`claim_address`): no two listeners on one host and port.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from evsim.scenario.model import (
    ControllerSpec,
    CsmsSpec,
    EndpointSpec,
    StationGroupSpec,
)
from evsim.scenario.reader import ScenarioTable, SectionReader
from evsim.scenario.vocabulary import (
    ID_PATTERN_FIX,
    STATION_ID_RULE,
)
from evsim.toml_table import FieldPath, choices_fix
from evsim.ws.paths import valid_identity


class ScenarioChecks(SectionReader):
    """The cross-reference checks (see the module doc)."""

    def register_stations(self, groups: Mapping[str, StationGroupSpec]) -> None:
        """Record every station id; refuse ids produced twice or equal to a CSMS or group name."""
        self.nodes.groups = dict(groups)
        owner = self.nodes.station_group
        for name, group in groups.items():
            path = ("stations", name, "id_pattern")
            for sid in group.station_ids():
                if sid in owner:
                    other = owner[sid]
                    message = (
                        f"id_pattern gives the id {sid!r} to several stations"
                        if other == name
                        else f"station id {sid!r} is also produced by group {other!r}"
                    )
                    raise self.ctx.error(
                        path,
                        message,
                        value=group.id_pattern,
                        fix='include {n} and a prefix unique to the group, e.g. "'
                        + name.upper()
                        + '-{n:04d}"',
                    )
                if not valid_identity(sid):
                    raise self.ctx.error(
                        path, STATION_ID_RULE.format(sid=sid), value=group.id_pattern, fix=ID_PATTERN_FIX
                    )
                clash = self.nodes.kind(sid)
                if clash is not None:
                    raise self.ctx.error(
                        path,
                        f"station id {sid!r} is also the name of a {clash}",
                        value=group.id_pattern,
                        fix="change the pattern or rename the table",
                    )
                owner[sid] = name

    def check_csms_references(self, csms: Mapping[str, CsmsSpec]) -> None:
        """``secondary_of`` names another CSMS that is a primary; ``trusted_controllers`` name controllers."""
        for name, spec in csms.items():
            if spec.secondary_of is not None:
                path: FieldPath = ("csms", name, "secondary_of")
                primary = csms.get(spec.secondary_of)
                if primary is None or spec.secondary_of == name:
                    others = [c for c in csms if c != name]
                    raise self.ctx.error(
                        path,
                        f"undefined CSMS {spec.secondary_of!r}"
                        if primary is None
                        else "a CSMS cannot be its own secondary",
                        value=spec.secondary_of,
                        fix=choices_fix(spec.secondary_of, others, what="name the primary, one of"),
                    )
                if primary.secondary_of is not None:
                    raise self.ctx.error(
                        path,
                        f"CSMS {spec.secondary_of!r} is itself a secondary (of {primary.secondary_of!r})",
                        value=spec.secondary_of,
                        fix=f'write secondary_of = "{primary.secondary_of}" (every endpoint names the primary)',
                    )
            self.check_trusted(("csms", name), spec.trusted_controllers, spec.behind_controller)

    def check_trusted(self, path: FieldPath, names: Sequence[str], behind: str) -> None:
        """``trusted_controllers`` at ``path``: defined controllers, and only with ``behind_controller =
        "trust_controller"`` (the one setting that reads them).
        """
        for i, ref in enumerate(names):
            if ref not in self.nodes.controllers:
                raise self.ctx.error(
                    (*path, "trusted_controllers", i),
                    f"undefined controller {ref!r}",
                    value=ref,
                    fix=choices_fix(
                        ref, self.nodes.controllers, what="define [controllers.<name>] or use one of"
                    ),
                )
        if names and behind != "trust_controller":
            raise self.ctx.error(
                (*path, "trusted_controllers"),
                'trusted_controllers only matter with behind_controller = "trust_controller"',
                value=list(names),
                fix='add behind_controller = "trust_controller", or remove trusted_controllers',
            )

    def resolve_csms(self, endpoint: EndpointSpec) -> str:
        """The CSMS an endpoint leads to: itself, or its controller's first upstream, recursively."""
        seen: set[str] = set()
        while endpoint.kind == "controller":
            assert endpoint.name not in seen  # controller_order refused cycles
            seen.add(endpoint.name)
            endpoint = self.nodes.controllers[endpoint.name].upstream[0]
        return endpoint.name

    def controller_order(self, controllers: Mapping[str, ControllerSpec]) -> list[str]:
        """Controllers in dependency order; a cycle in the chains is refused where it closes."""
        order: list[str] = []
        state: dict[str, str] = {}  # name -> "visiting" | "done"

        def visit(name: str, chain: list[str]) -> None:
            """Append ``name`` after every controller it connects to; reaching one still being visited closes a loop."""
            if state.get(name) == "done":
                return
            state[name] = "visiting"
            for i, ep in enumerate(controllers[name].upstream):
                if ep.kind != "controller":
                    continue
                if state.get(ep.name) == "visiting":
                    loop = " -> ".join([*chain[chain.index(ep.name) :], name, ep.name])
                    raise self.ctx.error(
                        ("controllers", name, "upstream", i, "controller"),
                        f"controller chain loops: {loop}",
                        value=ep.name,
                        fix="controller chains must end at a CSMS; remove one link of the loop",
                    )
                visit(ep.name, [*chain, name])
            state[name] = "done"
            order.append(name)

        for name in controllers:
            visit(name, [])
        return order


def listen_host(host: str, network: str) -> str:
    """The address a node of ``host`` listens on, for clash checks: on loopback TCP every host name maps to
    127.0.0.1 (:func:`evsim.world.open_world`), so only the port tells nodes apart."""
    return "127.0.0.1" if network == "tcp" else host.lower()


def claim_address(
    t: ScenarioTable,
    addresses: dict[tuple[str, int], str],
    name: str,
    host: str,
    port: int,
    what: str,
    fix: str,
) -> None:
    """Record that ``name`` listens on ``host:port`` (port 0 picks a free one, so never clashes).

    Raises:
        ConfigError: another node already listens there.
    """
    if port == 0:
        return
    other = addresses.setdefault((host.lower(), port), name)
    if other != name:
        raise t.error("port", f"{what} {other!r} already listens on {host}:{port}", value=port, fix=fix)
