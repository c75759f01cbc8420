"""The failover part of the scenario format: controllers, endpoint lists, secondaries, and their errors."""

from __future__ import annotations

import pytest

from evsim.errors import ConfigError
from evsim.scenario.loader import loads_scenario
from evsim.scenario.model import EndpointSpec

BASE = """[simulation]
duration = "1h"
[pki.roots.backup]
[tls.trust.both]
roots = ["root", "backup"]
[csms.primary]
[csms.secondary]
secondary_of = "primary"
certificate = { root = "backup" }
"""

CHAIN = (
    BASE
    + """[controllers.bay]
upstream = [{ controller = "site" }]
[controllers.site]
upstream = [{ csms = "secondary", priority = 5, trust = "both" }, { csms = "primary", priority = 1 }]
on_upstream_loss = "keep_station"
failover = "sticky"
[stations.fleet]
count = 2
endpoints = [{ controller = "bay", priority = 2 }, { csms = "primary", priority = 1 }]
network_attempts = 2
fallback = "last_working"
[[timeline]]
at = "1m"
action = "stop"
target = "site"
[[timeline]]
at = "2m"
action = "partition"
between = ["bay", "site"]
"""
)


def load_error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        loads_scenario(text, source="f.toml")
    return err.value


def test_a_chain_loads_in_dependency_order_with_endpoints_by_priority() -> None:
    sc = loads_scenario(CHAIN, source="f.toml")
    assert list(sc.controllers) == ["site", "bay"]  # site first: bay connects to it
    site = sc.controllers["site"]
    assert [e.name for e in site.upstream] == ["primary", "secondary"]
    assert site.upstream[1] == EndpointSpec(kind="csms", name="secondary", priority=5, trust="both")
    assert (site.on_upstream_loss, site.failover, site.host) == ("keep_station", "sticky", "site.evsim.test")
    fleet = sc.stations["fleet"]
    assert [(e.kind, e.name) for e in fleet.endpoints] == [("csms", "primary"), ("controller", "bay")]
    assert (fleet.csms, fleet.network_attempts, fleet.fallback) == ("primary", 2, "last_working")
    assert sc.csms["secondary"].secondary_of == "primary"
    assert [ev.params["target"] for ev in sc.timeline if ev.name == "stop"] == ["site"]


def test_the_csms_shorthand_is_unchanged_and_a_group_behind_a_controller_names_its_csms() -> None:
    sc = loads_scenario(
        BASE + '[controllers.lc]\nupstream = [{ csms = "secondary" }]\n'
        '[stations.a]\ncsms = "primary"\n[stations.b]\nendpoints = [{ controller = "lc" }]\n',
        source="f.toml",
    )
    assert sc.stations["a"].endpoints == () and sc.stations["a"].csms == "primary"
    assert sc.stations["b"].csms == "secondary"  # through the controller's first upstream


@pytest.mark.parametrize(
    ("case", "text", "path", "message"),
    [
        (
            "controller loop",
            BASE + '[controllers.a]\nupstream = [{ controller = "b" }]\n'
            '[controllers.b]\nupstream = [{ csms = "primary" }, { controller = "a" }]\n',
            "controllers.b.upstream[1].controller",
            "controller chain loops: a -> b -> a",
        ),
        (
            "controller to itself",
            BASE + '[controllers.a]\nupstream = [{ controller = "a" }]\n',
            "controllers.a.upstream[0].controller",
            "a controller cannot connect to itself",
        ),
        (
            "undefined endpoint with a guess",
            BASE + '[stations.f]\nendpoints = [{ csms = "primray" }]\n',
            "stations.f.endpoints[0].csms",
            "did you mean 'primary'",
        ),
        (
            "undefined controller",
            BASE + '[stations.f]\nendpoints = [{ controller = "lc" }]\n',
            "stations.f.endpoints[0].controller",
            "undefined controller 'lc'",
        ),
        (
            "both kinds in one endpoint",
            BASE + '[controllers.lc]\nupstream = [{ csms = "primary" }]\n'
            '[stations.f]\nendpoints = [{ csms = "primary", controller = "lc" }]\n',
            "stations.f.endpoints[0]",
            "exactly one CSMS or one controller",
        ),
        (
            "csms and endpoints",
            BASE + '[stations.f]\ncsms = "primary"\nendpoints = [{ csms = "secondary" }]\n',
            "stations.f.csms",
            "mutually exclusive",
        ),
        (
            "same priority",
            BASE + '[stations.f]\nendpoints = [{ csms = "primary", priority = 1 }, '
            '{ csms = "secondary", priority = 1 }]\n',
            "stations.f.endpoints[1].priority",
            "the same priority as endpoints[0]",
        ),
        (
            "listed twice",
            BASE + '[stations.f]\nendpoints = [{ csms = "primary" }, { csms = "primary" }]\n',
            "stations.f.endpoints[1].csms",
            "listed twice",
        ),
        (
            "five endpoints",
            BASE
            + "".join(f"[csms.c{i}]\n" for i in range(3))
            + '[stations.f]\nendpoints = [{ csms = "primary" }, { csms = "secondary" }, { csms = "c0" }, '
            '{ csms = "c1" }, { csms = "c2" }]\n',
            "stations.f.endpoints",
            "at most 4 endpoints",
        ),
        (
            "unknown endpoint key",
            BASE + '[stations.f]\nendpoints = [{ csms = "primary", prio = 1 }]\n',
            "stations.f.endpoints[0].prio",
            "did you mean 'priority'",
        ),
        (
            "fallback typo",
            BASE + '[stations.f]\ncsms = "primary"\nfallback = "last-working"\n',
            "stations.f.fallback",
            "did you mean 'last_working'",
        ),
        (
            "network attempts",
            BASE + '[stations.f]\ncsms = "primary"\nnetwork_attempts = 0\n',
            "stations.f.network_attempts",
            "must be in 1..100",
        ),
        (
            "secondary of nobody",
            BASE.replace('secondary_of = "primary"', 'secondary_of = "primry"'),
            "csms.secondary.secondary_of",
            "undefined CSMS 'primry'",
        ),
        (
            "secondary of a secondary",
            BASE + '[csms.third]\nsecondary_of = "secondary"\n',
            "csms.third.secondary_of",
            'write secondary_of = "primary"',
        ),
        (
            "secondary of itself",
            BASE.replace('secondary_of = "primary"', 'secondary_of = "secondary"'),
            "csms.secondary.secondary_of",
            "cannot be its own secondary",
        ),
        (
            "trusted controller undefined",
            BASE.replace(
                "[csms.primary]\n",
                '[csms.primary]\nbehind_controller = "trust_controller"\ntrusted_controllers = ["lc"]\n',
            ),
            "csms.primary.trusted_controllers[0]",
            "undefined controller 'lc'",
        ),
        (
            "trusted controllers without trust_controller",
            BASE.replace("[csms.primary]\n", '[csms.primary]\ntrusted_controllers = ["lc"]\n')
            + '[controllers.lc]\nupstream = [{ csms = "primary" }]\n',
            "csms.primary.trusted_controllers",
            'behind_controller = "trust_controller"',
        ),
        (
            "group named like a controller",
            BASE + '[controllers.lc]\nupstream = [{ csms = "primary" }]\n[stations.lc]\ncsms = "primary"\n',
            "stations.lc",
            "already the name of a controller",
        ),
        (
            "controller without upstream",
            BASE + "[controllers.lc]\n",
            "controllers.lc.upstream",
            "missing required key 'upstream'",
        ),
        (
            "controller on a CSMS address",
            BASE + '[controllers.lc]\nhost = "primary.evsim.test"\nupstream = [{ csms = "secondary" }]\n',
            "controllers.lc.port",
            "already listens on primary.evsim.test:443",
        ),
        (
            "set_network_profile to nowhere",
            BASE + '[stations.f]\ncsms = "primary"\n[[timeline]]\nat = "1m"\naction = "set_network_profile"\n'
            'target = "f"\ncsms = "tertiary"\n',
            "timeline[0].csms",
            "undefined node 'tertiary'",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and "\n" not in v and "." not in v else "",
)
def test_errors_name_file_line_field_and_fix(case: str, text: str, path: str, message: str) -> None:
    err = load_error(text)
    assert (err.file, err.path) == ("f.toml", path), case
    assert err.line is not None, case
    assert err.fix, case
    assert message in str(err), (case, str(err))


def test_stop_and_partition_accept_controllers_and_suggest_them() -> None:
    text = CHAIN.replace('target = "site"', 'target = "sitee"')
    err = load_error(text)
    assert err.path == "timeline[0].target"
    assert "did you mean 'site'" in str(err)
    assert "a controller" in str(err)
