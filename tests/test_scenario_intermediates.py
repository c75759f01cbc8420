"""Intermediate CAs in scenario PKIs: the keys load, round-trip and are refused with a located reason; the
world issues through them (chain leaf, intermediate(s)) and resolves pins on them."""

from __future__ import annotations

import pytest

from evsim.errors import ConfigError
from evsim.scenario.loader import loads_scenario
from evsim.scenario.runner import run_scenario

BASE = """
[simulation]
seed = 1
duration = "2m"

[pki.intermediates.policy]
issuer = "root"

[pki.intermediates.ica]
issuer = "policy"

[pki]
station_issuer = "policy"

[csms.main]
heartbeat_interval = "60s"
certificate = { issuer = "ica" }

[tls.pins.p]
pins = [{ target = "intermediate", intermediate = "ica" }, { target = "intermediate", intermediate = "policy", state = "backup" }]

[stations.fleet]
count = 2
sessions = 0
pins = "p"
"""


def test_keys_load_and_round_trip() -> None:
    sc = loads_scenario(BASE)
    assert [(i.name, i.issuer) for i in sc.pki.intermediates.values()] == [
        ("policy", "root"),
        ("ica", "policy"),
    ]
    assert sc.pki.station_issuer == "policy"
    assert sc.csms["main"].certificate.issuer == "ica" and sc.csms["main"].certificate.root == "root"
    assert sc.validate() == sc


def test_the_world_issues_through_the_hierarchy_and_the_pins_match() -> None:
    result = run_scenario(loads_scenario(BASE))
    assert result.ok, result.error
    world = result.world
    assert world is not None
    pki = world.pki
    chain = world.csms["main"].certificate
    assert chain is not None
    assert chain.intermediates == (pki.intermediates["ica"].cert, pki.intermediates["policy"].cert)
    assert pki.station_ca.parents[0] == pki.intermediates["policy"].cert  # root -> policy -> station sub-CA
    assert {e.node for e in result.recorder.of_kind("booted") if e.node != "main"} == {
        "fleet-0001",
        "fleet-0002",
    }
    assert not list(result.recorder.of_kind("pin_mismatch"))


@pytest.mark.parametrize(
    ("old", "new", "path", "message"),
    [
        ('issuer = "policy"', 'issuer = "nope"', "pki.intermediates.ica.issuer", "undefined CA 'nope'"),
        (
            '{ issuer = "ica" }',
            '{ issuer = "ica", root = "other" }',
            "csms.main.certificate.root",
            "undefined root",
        ),
        ('station_issuer = "policy"', 'station_issuer = "x"', "pki.station_issuer", "undefined CA 'x'"),
        (
            '{ target = "intermediate", intermediate = "ica" }',
            '{ target = "leaf", intermediate = "ica" }',
            "tls.pins.p.pins[0].target",
            "only ever an intermediate",
        ),
        (
            '{ target = "intermediate", intermediate = "ica" }',
            '{ target = "intermediate", intermediate = "nope" }',
            "tls.pins.p.pins[0].intermediate",
            "undefined intermediate CA",
        ),
    ],
)
def test_refused_with_the_place_and_the_reason(old: str, new: str, path: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        loads_scenario(BASE.replace(old, new))
    assert exc.value.path == path and message in exc.value.message


def test_an_issuer_under_another_root_is_refused() -> None:
    text = BASE.replace("[pki]\n", "[pki.roots.other]\n\n[pki]\n").replace(
        '{ issuer = "ica" }', '{ issuer = "ica", root = "other" }'
    )
    with pytest.raises(ConfigError) as exc:
        loads_scenario(text)
    assert exc.value.path == "csms.main.certificate.issuer" and "not under root 'other'" in exc.value.message


def test_switch_server_certificate_names_an_issuer() -> None:
    entry = '\n[[timeline]]\nat = "1m"\naction = "switch_server_certificate"\ntarget = "main"\nissuer = "policy"\n'
    sc = loads_scenario(BASE + entry)
    (action,) = [e.action for e in sc.timeline]
    assert action.fields() == {"target": "main", "root": "root", "issuer": "policy"}
    assert sc.validate() == sc  # root and issuer written back together are accepted
    with pytest.raises(ConfigError) as exc:
        loads_scenario(BASE.replace("[pki]\n", "[pki.roots.other]\n\n[pki]\n") + entry + 'root = "other"\n')
    assert exc.value.path == "timeline[0].root" and "under root 'root'" in exc.value.message
