"""Scenario model and loader: shipped scenarios, golden error messages, units, line lookup, and fuzzing.

The property tests feed the loader arbitrary text, arbitrary TOML documents and mutated shipped scenarios;
whatever they get, :func:`loads_scenario` must return a :class:`Scenario` or raise :class:`ConfigError`, never
anything else.
"""

from __future__ import annotations

import datetime as dt
import math
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evsim.errors import ConfigError
from evsim.scenario import loader, vocabulary
from evsim.scenario.loader import load_scenario, loads_scenario
from evsim.scenario.locate import format_path, index_lines
from evsim.scenario.model import DEFAULT_START, Scenario, StationGroupSpec, TlsProfileSpec
from evsim.scenario.read_tls import validate_tls_profile
from evsim.scenario.units import format_duration, parse_bandwidth, parse_duration, parse_utc_timestamp
from evsim.scenario.vocabulary import ACTIONS

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
SHIPPED = sorted(SCENARIOS.glob("*.toml"))

BASE = """\
[simulation]
duration = "1h"

[csms.main]

[stations.fleet]
count = 3
"""


def load_error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        loads_scenario(text, source="s.toml")
    return info.value


# ---------------------------------------------------------------- shipped scenarios


def test_the_six_scenarios_are_shipped() -> None:
    names = {p.stem for p in SHIPPED}
    assert {
        "default",
        "boot_storm",
        "tls_downgrade_attack",
        "wrong_ca_mitm",
        "certificate_expiry",
        "partition_heal",
    } <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_scenario_loads(path: Path) -> None:
    scenario = load_scenario(path)
    assert scenario.source == str(path)
    assert scenario.simulation.name == path.stem
    assert scenario.simulation.description, "shipped scenarios say what they are"
    assert scenario.simulation.outcome, "shipped scenarios say what they demonstrate"
    assert len(set(scenario.station_ids())) == scenario.station_count()
    assert [e.at for e in scenario.timeline] == sorted(e.at for e in scenario.timeline)
    assert all(e.at <= scenario.simulation.duration for e in scenario.timeline)
    assert all(e.line is not None for e in scenario.timeline)
    # values are frozen and hashable
    assert hash(scenario) == hash(load_scenario(path))


def test_default_scenario_contents() -> None:
    s = load_scenario(SCENARIOS / "default.toml")
    assert s.simulation.duration == 3600
    assert s.simulation.stop_when_done
    assert s.simulation.clock == "virtual" and s.simulation.start == DEFAULT_START
    main = s.csms["main"]
    assert (main.security_profile, main.heartbeat_interval, main.host, main.port) == (
        2,
        30,
        "main.evsim.test",
        443,
    )
    fleet = s.stations["fleet"]
    assert fleet.count == 10 and fleet.sessions == 1
    assert (fleet.session_duration, fleet.meter_interval) == (600, 60)
    assert fleet.station_ids()[0] == "ST-0001" and fleet.station_ids()[-1] == "ST-0010"
    assert s.tls_profiles["default"].versions == ("1.3", "1.2")
    assert s.trust_stores["default"].roots == ("root",)


def test_attack_scenarios_contents() -> None:
    s = load_scenario(SCENARIOS / "tls_downgrade_attack.toml")
    assert s.tls_profiles[s.csms["main"].tls_profile].versions == ("1.3",)
    (attack,) = s.timeline
    assert (attack.at, attack.name, attack.params["versions"]) == (60, "attack_downgrade", ("1.2",))

    s = load_scenario(SCENARIOS / "wrong_ca_mitm.toml")
    assert [(e.at, e.name, e.params["root"], e.params["duration"]) for e in s.timeline] == [
        (300, "attack_wrong_ca", "rogue", 180),
        (600, "attack_mitm", "rogue", 180),
    ]
    assert "rogue" not in s.trust_stores[s.stations["fleet"].trust].roots

    s = load_scenario(SCENARIOS / "certificate_expiry.toml")
    assert s.csms["main"].certificate.validity == 3 * 86400
    assert [(e.at, e.name) for e in s.timeline] == [(4 * 86400, "renew_certificate")]

    s = load_scenario(SCENARIOS / "partition_heal.toml")
    assert [(e.at, e.name, e.params["between"]) for e in s.timeline] == [
        (1200, "partition", ("fleet", "main")),
        (3000, "heal", ("fleet", "main")),
    ]


def test_model_named_constructors() -> None:
    assert Scenario.from_file(SCENARIOS / "default.toml") == load_scenario(SCENARIOS / "default.toml")
    s = Scenario.from_toml(BASE, source="inline.toml")
    assert s.simulation.name == "inline" and s.stations["fleet"].station_ids() == [
        "fleet-0001",
        "fleet-0002",
        "fleet-0003",
    ]
    assert loads_scenario(BASE).simulation.name == "scenario"


# ---------------------------------------------------------------- defaults and resolution


def test_defaults_are_resolved() -> None:
    s = loads_scenario(BASE)
    sim = s.simulation
    assert (sim.seed, sim.clock, sim.network, sim.stop_when_done) == (1, "virtual", "memory", False)
    main = s.csms["main"]
    assert main.certificate.validity == s.pki.validity == 365 * 86400
    assert main.certificate.not_before == -3600 and main.certificate.root == "root"
    assert main.ocpp_versions == ("2.0.1", "2.1")
    fleet = s.stations["fleet"]
    assert (fleet.csms, fleet.security_profile, fleet.tls_profile, fleet.trust) == (
        "main",
        2,
        "default",
        "default",
    )
    assert fleet.retry_backoff.wait_minimum == 3.0
    assert set(s.tls_profiles["default"].cipher_suites) == {"1.3", "1.2"}
    assert s.pki.roots["root"].key_type == "ec"


def test_real_clock_tcp_defaults() -> None:
    s = loads_scenario('[simulation]\nduration = "10s"\nclock = "real"\nnetwork = "tcp"\n[csms.a]\n')
    assert s.simulation.start is None  # the runner anchors it at the real time
    assert s.csms["a"].port == 0


def test_station_group_inherits_the_csms_security_profile() -> None:
    text = BASE.replace(
        "[csms.main]\n", "[csms.main]\nsecurity_profile = 1\ninsecure_allow_plain_ws = true\n"
    )
    assert loads_scenario(text).stations["fleet"].security_profile == 1


def test_timeline_is_sorted_stably_and_keeps_lines() -> None:
    text = (
        BASE
        + '[[timeline]]\nat = "30m"\naction = "heal"\nbetween = ["fleet", "main"]\n'
        + '[[timeline]]\nat = "10m"\naction = "partition"\nbetween = ["fleet", "main"]\n'
        + '[[timeline]]\nat = "30m"\naction = "stop"\ntarget = "ST"\n'.replace('"ST"', '"fleet-0002"')
    )
    events = loads_scenario(text).timeline
    assert [(e.at, e.name, e.line) for e in events] == [
        (600, "partition", 12),
        (1800, "heal", 8),
        (1800, "stop", 16),
    ]


def test_link_event_keeps_only_given_policy_keys() -> None:
    text = BASE + '[[timeline]]\nat = "1m"\naction = "link"\nbetween = ["*", "main"]\nlatency = "200ms"\n'
    (event,) = loads_scenario(text).timeline
    assert dict(event.params) == {"between": ("*", "main"), "latency": 0.2}


def test_attack_defaults() -> None:
    text = BASE + '[pki.roots.rogue]\n[[timeline]]\nat = "1m"\naction = "attack_mitm"\ntarget = "fleet"\n'
    (event,) = loads_scenario(text).timeline
    assert dict(event.params) == {"target": "fleet", "impersonate": "main", "root": "rogue", "duration": None}
    text = BASE + '[[timeline]]\nat = "1m"\naction = "attack_downgrade"\ntarget = "main"\n'
    (event,) = loads_scenario(text).timeline
    assert dict(event.params) == {"target": "main", "count": 1, "versions": ("1.2",)}


def test_every_action_is_accepted() -> None:
    params = {
        "stop": 'target = "fleet"',
        "start": 'target = "fleet-0001"',
        "partition": 'between = ["fleet", "main"]',
        "heal": 'between = ["fleet", "main"]',
        "link": 'between = ["fleet", "main"]\nbandwidth = "1Mbps"\nstall = { every = "1h", for = "30s" }',
        "expire_certificate": 'target = "main"',
        "renew_certificate": 'target = "main"\nvalidity = "30d"',
        "revoke_certificate": 'target = "fleet-0002"',
        "rotate_certificate": 'target = "main"\nnew_key = false',
        "install_root": 'target = "fleet"\nroot = "rogue"',
        "remove_root": 'target = "fleet"\nroot = "root"',
        "set_network_profile": 'target = "fleet"\ncsms = "backup"',
        "attack_downgrade": 'target = "main"\ncount = 5\nversions = ["1.2", "1.1"]',
        "attack_wrong_ca": 'target = "fleet"\nimpersonate = "backup"\nroot = "rogue"\nduration = "2m"',
        "attack_mitm": 'target = "fleet-0003"',
        "release_pin": 'target = "fleet"\nroot = "root"',
        "trigger_renewal": 'target = "main"\nspread = "10m"',
        "install_certificate": 'target = "fleet"\nroot = "rogue"\ntype = "ManufacturerRootCertificate"',
        "delete_certificate": 'target = "fleet-0001"\nroot = "root"',
        "switch_server_certificate": 'target = "main"\nroot = "rogue"',
        "degrade_ca": 'target = "main"\ndelay = "30s"\nfailure_rate = 0.25',
        "clock_step": 'target = "fleet"\nby = "-1h"',
        "open_pairing_window": 'target = "hems"',
        "close_pairing_window": 'target = "hems"',
        "unpair": 'target = "hems"\nstation = "fleet-0001"',
        "rotate_ship_key": 'target = "fleet-0002"',
        "ship_impostor": 'target = "hems"\ndevice = "fleet-0003"\nattempts = 2',
        "update_firmware": 'target = "fleet"\nfirmware = "v2"\nservice = "fw"\nspread = "5m"',
        "get_log": 'target = "main"\nservice = "fw"\nlog_type = "SecurityLog"\nretries = 1\nretry_interval = "1m"',
        "upgrade_security_profile": 'target = "fleet"\nto = "backup"\nspread = "1m"',
    }
    assert set(params) == set(ACTIONS)
    text = (
        BASE.replace("count = 3", 'count = 3\ncsms = "main"\npins = "p"')
        + "[csms.backup]\n[pki.roots.rogue]\n"
        + '[energy_managers.hems]\nstations = ["fleet"]\n'
    )
    text += '[tls.pins.p]\npins = [{ target = "root", root = "root" }]\n'
    text += '[firmware.v2]\nversion = "2.0.0"\n[file_servers.fw]\nfirmware = ["v2"]\naccept_uploads = true\n'
    text += '[file_services.fw]\nmirrors = [{ server = "fw" }]\n'
    for action, body in params.items():
        text += f'[[timeline]]\nat = "1m"\naction = "{action}"\n{body}\n'
    events = loads_scenario(text).timeline
    assert [e.name for e in events] == list(params)
    by_action = {e.name: dict(e.params) for e in events}
    assert by_action["renew_certificate"]["validity"] == 30 * 86400
    assert by_action["link"]["bandwidth"] == 1e6
    assert by_action["rotate_certificate"]["new_key"] is False
    assert by_action["attack_wrong_ca"]["duration"] == 120


def test_tls_profile_cipher_suites_are_filled_per_enabled_version() -> None:
    text = '[simulation]\nduration = "1h"\n[tls.profiles.x]\nversions = ["1.2"]\n[csms.main]\ntls_profile = "x"\n'
    profile = loads_scenario(text).tls_profiles["x"]
    assert list(profile.cipher_suites) == ["1.2"] and profile.cipher_suites["1.2"]
    validate_tls_profile(profile)
    with pytest.raises(ConfigError) as info:
        validate_tls_profile(TlsProfileSpec(name="y", versions=("1.3",), cipher_suites={"1.3": ()}))
    assert info.value.path == 'cipher_suites."1.3"'


def test_station_ids_of_a_group() -> None:
    group = StationGroupSpec(name="g", count=3, id_pattern="CP{n:03d}", csms="main")
    assert group.station_ids() == ["CP001", "CP002", "CP003"]


# ---------------------------------------------------------------- golden errors

# (case, text, line, path, rendered error without "s.toml:<line>: <path>: ")
GOLDEN: list[tuple[str, str, int, str, str]] = [
    (
        "syntax error",
        "[simulation]\nduration = 1h\n",
        2,
        "",
        "TOML syntax error: Expected newline or end of document after a statement at column 13; "
        'fix: quote text values ("1h", "main") and put each key = value on its own line',
    ),
    (
        "unknown key",
        BASE.replace("count = 3", "cout = 3"),
        7,
        "stations.fleet.cout",
        "unknown key; fix: did you mean 'count'?",
    ),
    (
        "unknown table",
        BASE + "[station.x]\n",
        8,
        "station",
        "unknown key; fix: did you mean 'stations'?",
    ),
    (
        "bad enum",
        BASE.replace('duration = "1h"', 'duration = "1h"\nclock = "virtul"'),
        3,
        "simulation.clock",
        "unknown value for clock (got 'virtul'); fix: did you mean 'virtual'? use one of 'virtual', 'real'",
    ),
    (
        "bad duration",
        BASE.replace('"1h"', '"1hour"'),
        2,
        "simulation.duration",
        "unknown duration unit 'hour' (got '1hour'); "
        'fix: use ms, s, m, h or d, e.g. "250ms", "30s", "15m", "2h", "3d" or "1h30m"',
    ),
    (
        "duration without unit in a combination",
        BASE.replace('"1h"', '"1h30"'),
        2,
        "simulation.duration",
        "the number 30 has no unit (got '1h30'); fix: add a unit (ms, s, m, h or d), "
        'e.g. "250ms", "30s", "15m", "2h", "3d" or "1h30m"; only a lone number means seconds',
    ),
    (
        "undefined profile",
        BASE + 'tls_profile = "strict"\n',
        8,
        "stations.fleet.tls_profile",
        "undefined TLS profile 'strict' (got 'strict'); fix: define it ([tls.profiles.<name>]) or use one of 'default'",
    ),
    (
        "undefined timeline target",
        BASE + '[[timeline]]\nat = "1m"\naction = "stop"\ntarget = "fleeet"\n',
        11,
        "timeline[0].target",
        "undefined node 'fleeet' (got 'fleeet'); fix: did you mean 'fleet'? "
        "use a CSMS or a station group or a station id, e.g. 'main', 'fleet'",
    ),
    (
        "undefined link selector",
        BASE + '[[links]]\nbetween = ["fleet", "mian"]\n',
        9,
        "links[0].between[1]",
        "undefined node or group 'mian' (got 'mian'); fix: did you mean 'main'? "
        "use a CSMS, a station group, a station id or \"*\": 'main', 'fleet', '*'",
    ),
    (
        "tcp with the virtual clock",
        BASE.replace('duration = "1h"', 'duration = "1h"\nnetwork = "tcp"'),
        3,
        "simulation.network",
        'network = "tcp" needs clock = "real" (loopback sockets run on the real clock) (got \'tcp\'); '
        'fix: set clock = "real", or use network = "memory" for virtual time',
    ),
    (
        "event after the end",
        BASE + '[[timeline]]\nat = "2h"\naction = "stop"\ntarget = "fleet"\n',
        9,
        "timeline[0].at",
        "the event is after the end of the run (1h) (got '2h'); fix: use at <= 1h or lengthen simulation.duration",
    ),
    (
        "duplicate station ids",
        BASE + '[stations.other]\nid_pattern = "fleet-{n:04d}"\n',
        9,
        "stations.other.id_pattern",
        "station id 'fleet-0001' is also produced by group 'fleet' (got 'fleet-{n:04d}'); "
        'fix: include {n} and a prefix unique to the group, e.g. "OTHER-{n:04d}"',
    ),
    (
        "count 0",
        BASE.replace("count = 3", "count = 0"),
        7,
        "stations.fleet.count",
        "must be in 1..100000 (got 0); fix: use a value in 1..100000",
    ),
    (
        "wrong type",
        BASE.replace("count = 3", 'count = "3"'),
        7,
        "stations.fleet.count",
        "expected an integer, got a string (got '3'); fix: write a whole number without quotes, e.g. count = 1",
    ),
    (
        "missing duration",
        "[simulation]\nseed = 3\n[csms.main]\n",
        1,
        "simulation.duration",
        "missing required key 'duration'; fix: add duration = \"1h\" (how long the run lasts)",
    ),
    (
        "unnamed CSMS table",
        '[simulation]\nduration = "1h"\n[csms]\nhost = "x"\n',
        4,
        "csms.host",
        "expected a table [csms.host], got a string (got 'x'); "
        "fix: name the CSMS: write [csms.main] instead of [csms] and put host under it",
    ),
    (
        "unknown action",
        BASE + '[[timeline]]\nat = "1m"\naction = "partiton"\n',
        10,
        "timeline[0].action",
        "unknown timeline action (got 'partiton'); fix: did you mean 'partition'? use one of "
        + ", ".join(repr(a) for a in ACTIONS),
    ),
    (
        "parameter of another action",
        BASE + '[[timeline]]\nat = "1m"\naction = "stop"\ntarget = "fleet"\nbetween = ["fleet", "main"]\n',
        12,
        "timeline[0].between",
        "not a parameter of action 'stop'; fix: remove it; stop takes: at, action, target",
    ),
    (
        "undefined attack root",
        BASE + '[[timeline]]\nat = "1m"\naction = "attack_wrong_ca"\ntarget = "fleet"\n',
        8,
        "timeline[0].root",
        "undefined root 'rogue' (got 'rogue'); fix: define it ([pki.roots.<name>]) or use one of 'root'",
    ),
    (
        "profile 1 without the opt-in",
        BASE.replace("[csms.main]\n", "[csms.main]\nsecurity_profile = 1\n"),
        5,
        "csms.main.security_profile",
        "security profile 1 sends passwords over plain ws:// (got 1); fix: add insecure_allow_plain_ws = true "
        "(trusted networks only, OCPP A00.FR.201) or use security_profile = 2",
    ),
    (
        "id pattern without n",
        BASE.replace("count = 3", 'count = 3\nid_pattern = "ST"'),
        8,
        "stations.fleet.id_pattern",
        "id_pattern has no {n}, so all 3 stations would get the same id (got 'ST'); "
        'fix: use a pattern like "ST-{n:04d}" (one field, n, with an optional integer format)',
    ),
    (
        "start not in UTC",
        BASE.replace('duration = "1h"', 'duration = "1h"\nstart = 2026-01-05T08:00:00+01:00'),
        3,
        "simulation.start",
        "the timestamp is not in UTC (got '2026-01-05 08:00:00+01:00'); "
        "fix: write it in UTC with a Z suffix, e.g. 2026-01-05T08:00:00Z",
    ),
    (
        "sessions and sessions_per_day",
        BASE.replace("count = 3", "count = 3\nsessions = 1\nsessions_per_day = 2"),
        9,
        "stations.fleet.sessions_per_day",
        "sessions and sessions_per_day are mutually exclusive (got 2); fix: keep one of them",
    ),
    (
        "stall longer than its period",
        BASE + '[[links]]\nbetween = ["fleet", "main"]\nstall = { every = "1m", for = "2m" }\n',
        10,
        "links[0].stall.for",
        "a stall must be shorter than its period (the link would never move) (got '2m'); fix: use for < every (1m)",
    ),
    (
        "TLS 1.1 in a profile",
        '[simulation]\nduration = "1h"\n[tls.profiles.x]\nversions = ["1.3",\n  "1.1"]\n[csms.main]\n',
        5,
        "tls.profiles.x.versions[1]",
        "TLS 1.1 is forbidden by OCPP (A00.FR.313: TLS 1.2 or above) (got '1.1'); "
        'fix: use "1.3" and/or "1.2"',
    ),
]


@pytest.mark.parametrize(("case", "text", "line", "path", "rendered"), GOLDEN, ids=[g[0] for g in GOLDEN])
def test_golden_error(case: str, text: str, line: int, path: str, rendered: str) -> None:
    err = load_error(text)
    assert (err.file, err.line, err.path) == ("s.toml", line, path)
    assert err.fix
    assert str(err) == f"s.toml:{line}: " + (f"{path}: " if path else "") + rendered


def test_tls_layer_errors_are_located() -> None:
    text = (
        '[simulation]\nduration = "1h"\n[tls.profiles.x]\nversions = ["1.3"]\n'
        'cipher_suites = { "1.3" = ["TLS_AES_128_GCM_SHA256",\n  "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"] }\n'
        '[csms.main]\ntls_profile = "x"\n'
    )
    err = load_error(text)
    assert (err.line, err.path) == (6, 'tls.profiles.x.cipher_suites."1.3"[1]')
    assert "1.2" in err.fix
    err = load_error(text.replace("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_AES_128_GCM_SHA257"))
    assert (err.line, err.path, err.value) == (
        6,
        'tls.profiles.x.cipher_suites."1.3"[1]',
        "TLS_AES_128_GCM_SHA257",
    )


@pytest.mark.parametrize(
    ("snippet", "path", "words"),
    [
        ('[stations.fleet]\ncsms = "main"\ncount = 1\n[csms.main]\n[csms.other]\n', "", ""),
        ("[csms.main]\nport = 443\n[csms.b]\nhost = 'main.evsim.test'\n", "csms.b.port", "already listens"),
        ("[csms.main]\n[stations.main]\n", "stations.main", "already the name of a CSMS"),
        (
            "[csms.main]\n[stations.fleet]\nid_pattern = 'main'\n",
            "stations.fleet.id_pattern",
            "name of a csms",
        ),
        ("[csms.main]\n[stations.g]\ncount = 2\nid_pattern = '{n:c}'\n", "stations.g.id_pattern", "identity"),
        (
            "[csms.main]\n[stations.g]\nid_pattern = '{n.real}'\n",
            "stations.g.id_pattern",
            "only use the field",
        ),
        ("[csms.main]\n[stations.g]\nid_pattern = '{n:0100d}'\n", "stations.g.id_pattern", "too wide"),
        ("[csms.main]\n[stations.g]\nid_pattern = '{n'\n", "stations.g.id_pattern", "invalid format"),
        ("[csms.main]\n[stations.g]\nsession_start = ['2m', '1m']\n", "stations.g.session_start", "min"),
        ("[csms.main]\nheartbeat_interval = '1.5s'\n", "csms.main.heartbeat_interval", "whole number"),
        (
            "[csms.main]\ncertificate = { not_before = '2d', validity = '1d' }\n",
            "csms.main.certificate.not_before",
            "",
        ),
        ("[csms.main]\npassword = 'short'\n", "csms.main.password", "16..64"),
        ("[csms.my_csms]\n", "csms.my_csms.host", "not a valid DNS name"),
        ("[csms.main]\nsecurity_profile = 4\n", "csms.main.security_profile", "security profile"),
        ("[csms.main]\nocpp_versions = ['1.6']\n", "csms.main.ocpp_versions[0]", "unknown value"),
        (
            "[tls.trust.t]\nroots = ['rouge']\n[pki.roots.rogue]\n[csms.main]\n",
            "tls.trust.t.roots[0]",
            "rogue",
        ),
        (
            "[tls.profiles.x]\nmax_send_fragment = 100000\n[csms.main]\n",
            "tls.profiles.x.max_send_fragment",
            "",
        ),
        (
            "[csms.a]\nsecurity_profile = 1\ninsecure_allow_plain_ws = true\n"
            "[[timeline]]\nat = 1\naction = 'expire_certificate'\ntarget = 'a'\n",
            "timeline[0].target",
            "profile 1",
        ),
        (
            "[csms.a]\n[stations.s]\n[[timeline]]\nat = 1\naction = 'expire_certificate'\ntarget = 's'\n",
            "timeline[0].target",
            "is a station group",
        ),
        (
            "[csms.a]\n[stations.s]\n[[timeline]]\nat = 1\naction = 'link'\nbetween = ['s', 'a']\n",
            "timeline[0].action",
            "at least one",
        ),
        (
            "[csms.a]\n[stations.s]\n[[timeline]]\nat = 1\naction = 'attack_downgrade'\ntarget = 'a'\n"
            "versions = ['1.3', '1.1']\n",
            "timeline[0].versions",
            "contiguous",
        ),
        ("[csms.a]\n[stations.s]\n[[links]]\nbetween = ['s', 's']\n", "links[0].between", "two different"),
        (
            "[csms.a]\n[stations.s]\n[[links]]\nbetween = ['s', 'a']\nbandwidth = '1Mb/s'\n",
            "links[0].bandwidth",
            "unit",
        ),
        ("[csms.a]\n[[links]]\nlatency = '1ms'\n", "links[0].between", "missing"),
        ("[csms.a]\ntimeline = 3\n", "csms.a.timeline", "unknown key"),
        ("[csms.a]\n[[timeline]]\nat = '1m'\n", "timeline[0].action", "missing"),
        ("links = 3\n[csms.a]\n", "links", "array of tables"),
        ("timeline = [3]\n[csms.a]\n", "timeline[0]", "expected a table"),
        ("", "csms", "no CSMS"),
    ],
)
def test_more_refusals(snippet: str, path: str, words: str) -> None:
    text = snippet + '[simulation]\nduration = "1h"\n'  # after the snippet: top-level keys come first
    if not path:  # several CSMS and no csms key: fine when given
        assert loads_scenario(text).stations["fleet"].csms == "main"
        err = load_error(text.replace('csms = "main"\n', ""))
        assert err.path == "stations.fleet.csms" and "'main', 'other'" in err.fix
        return
    err = load_error(text)
    assert err.path == path
    assert words in str(err)
    assert err.file == "s.toml" and err.fix
    assert err.line is not None or path == "csms"  # a table missing from the whole file has no line


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_scenario(tmp_path / "missing.toml")
    assert info.value.file == str(tmp_path / "missing.toml") and "not found" in info.value.message
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b'[simulation]\nname = "\xff"\n')
    with pytest.raises(ConfigError) as info:
        load_scenario(bad)
    assert (info.value.line, info.value.message) == (2, "the file is not UTF-8 text")
    with pytest.raises(ConfigError) as info:
        load_scenario(tmp_path)
    assert "cannot read" in info.value.message
    with pytest.raises(ConfigError):
        loads_scenario(b"[simulation]")  # type: ignore[arg-type]


def test_unexpected_internal_errors_surface_as_config_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> None:
        raise KeyError("surprise")

    monkeypatch.setattr(loader._Builder, "links", broken)
    err = load_error(BASE)
    assert "internal error" in err.message and "KeyError" in err.message and "bug" in err.fix
    assert isinstance(err.__cause__, KeyError)


def test_deeply_nested_toml_is_refused() -> None:
    err = load_error("x = " + "[" * 5000 + "]" * 5000)
    assert err.file == "s.toml"


# ---------------------------------------------------------------- units


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("30s", 30),
        ("15m", 900),
        ("2h", 7200),
        ("3d", 259200),
        ("1h30m", 5400),
        ("1d 2h", 93600),
        ("1.5s", 1.5),
        ("90", 90),
        (90, 90),
        (0.5, 0.5),
        ("0s", 0),
    ],
)
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1x", "unknown duration unit 'x'"),
        ("1h30", "the number 30 has no unit"),
        ("30m1h", "largest to smallest"),
        ("1h1h", "largest to smallest"),
        ("", "empty duration"),
        ("h", "unexpected 'h'"),
        (True, "got a boolean"),
        ([1], "got an array"),
        (math.inf, "finite"),
        ("-1h", "negative"),
        ("40000d", "too long"),
    ],
)
def test_parse_duration_errors(text: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_duration(text)
    assert message in info.value.message
    assert info.value.fix


def test_negative_durations_where_allowed() -> None:
    assert parse_duration("-1h", allow_negative=True) == -3600
    assert parse_duration(-30, allow_negative=True) == -30


@pytest.mark.parametrize("seconds", [0, 0.25, 1, 59, 61, 3600, 5400, 93600.5, 3 * 86400, -3600])
def test_format_duration_round_trips(seconds: float) -> None:
    assert parse_duration(format_duration(seconds), allow_negative=True) == seconds


def test_parse_bandwidth() -> None:
    assert parse_bandwidth("9600bps") == 9600
    assert parse_bandwidth("500kbps") == 500e3
    assert parse_bandwidth("1Mbps") == parse_bandwidth("1 mbps") == 1e6
    assert parse_bandwidth("2Gbps") == 2e9
    assert parse_bandwidth(1200) == 1200
    assert parse_bandwidth("10Mbit") == parse_bandwidth("10 mbit/s") == 10e6
    assert parse_bandwidth("1MB/s") == parse_bandwidth("1000kB/s") == 8e6
    for bad in ("1Mb/s", "1mB/s", "0bps", "-5kbps", "fast", True, 0):
        with pytest.raises(ConfigError):
            parse_bandwidth(bad)


def test_parse_utc_timestamp() -> None:
    want = dt.datetime(2026, 1, 5, 8, tzinfo=dt.UTC)
    assert parse_utc_timestamp("2026-01-05T08:00:00Z") == want
    assert parse_utc_timestamp(dt.datetime(2026, 1, 5, 8, tzinfo=dt.UTC)) == want
    for bad in ("2026-01-05T08:00:00", "2026-01-05", "2026-02-30T00:00:00Z", "0001-01-01T00:00:00Z", 5):
        with pytest.raises(ConfigError):
            parse_utc_timestamp(bad)
    with pytest.raises(ConfigError):
        parse_utc_timestamp(dt.datetime(2026, 1, 5, 8))


# ---------------------------------------------------------------- line index


def test_index_lines() -> None:
    text = """\
# [not.a.table] = "x"
[simulation]
name = '''multi
[line] = 1'''
duration = "1h" # trailing
[tls.profiles.x]
cipher_suites = { "1.3" = ["A",
  "B"] }
a.b = 1

[[timeline]]
at = 1
[[timeline]]
at = 2
[timeline.inner]
x = 3
"""
    tomllib.loads(text)
    lines = index_lines(text)
    assert lines[("simulation", "name")] == 3
    assert lines[("simulation", "duration")] == 5
    assert lines[("tls", "profiles", "x", "cipher_suites", "1.3", 1)] == 8
    assert lines[("tls", "profiles", "x", "a", "b")] == 9
    assert lines[("timeline", 1, "at")] == 14
    assert lines[("timeline", 1, "inner", "x")] == 16
    assert ("not", "a", "table") not in lines and ("line",) not in lines
    assert lines.line_of(("timeline", 1, "missing")) == 13
    assert lines.line_of(("nowhere",)) is None


def test_format_path() -> None:
    assert format_path(("stations", "fleet", "count")) == "stations.fleet.count"
    assert format_path(("timeline", 2, "at")) == "timeline[2].at"
    assert format_path(("cipher_suites", "1.3", 0)) == 'cipher_suites."1.3"[0]'


@given(st.text(max_size=300))
def test_index_lines_never_raises(text: str) -> None:
    index_lines(text)


# ---------------------------------------------------------------- fuzzing the loader

KEY_VOCABULARY = sorted(
    {
        *vocabulary.TOP_KEYS,
        *vocabulary.SIMULATION_KEYS,
        *vocabulary.PKI_KEYS,
        *vocabulary.PROFILE_KEYS,
        *vocabulary.TRUST_KEYS,
        *vocabulary.CSMS_KEYS,
        *vocabulary.CERTIFICATE_KEYS,
        *vocabulary.STATION_KEYS,
        *vocabulary.BACKOFF_KEYS,
        *vocabulary.LINK_KEYS,
        *vocabulary.STALL_KEYS,
        "at",
        "action",
        "target",
        "impersonate",
        "main",
        "fleet",
        "rogue",
        "root",
        "default",
        "1.3",
        "1.2",
    }
)
STRING_VOCABULARY = [
    "1h", "30s", "-1h", "0s", "1h30m", "250ms", "3d", "1Mbps", "main", "fleet", "rogue", "root", "default",
    "*", "1.3", "1.2", "2.0.1", "2.1", "virtual", "real", "memory", "tcp", "ec", "rsa", "san+cn", "deny",
    "ST-{n:04d}", "{n}", "{x}", "TLS_AES_128_GCM_SHA256", "2026-01-05T08:00:00Z", "evsim-dev-password-0001",
    *ACTIONS,
]  # fmt: skip

keys = st.sampled_from(KEY_VOCABULARY) | st.text(max_size=8)
scalars = (
    st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.sampled_from([0, 1, 2, 3, 10, 100_000, 100_001, 443, -1])
    | st.floats()
    | st.booleans()
    | st.sampled_from(STRING_VOCABULARY)
    | st.text(max_size=12)
    | st.datetimes(timezones=st.just(dt.UTC) | st.none())
)
values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=5),
    max_leaves=20,
)
documents = st.dictionaries(keys, values, max_size=6)


def _toml_string(text: str) -> str:
    out = []
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def to_toml(value: object) -> str:
    """A tiny TOML writer: everything inline (valid TOML 1.0; tables as inline tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(to_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_string(k)} = {to_toml(v)}" for k, v in value.items()) + "}"
    raise AssertionError(f"cannot write {value!r}")


def document_to_toml(doc: dict[str, Any]) -> str:
    return "".join(f"{_toml_string(k)} = {to_toml(v)}\n" for k, v in doc.items())


def assert_loads_or_config_error(text: str) -> None:
    try:
        result: Scenario | ConfigError = loads_scenario(text, source="fuzz.toml")
    except ConfigError as exc:
        result = exc
    if isinstance(result, ConfigError):
        assert result.file == "fuzz.toml"
        assert result.message
        assert "internal error" not in result.message, result  # the safety net is for bugs: this would be one
    else:
        assert isinstance(result, Scenario)


@given(st.text(max_size=400))
def test_fuzz_arbitrary_text(text: str) -> None:
    assert_loads_or_config_error(text)


@given(documents)
def test_fuzz_arbitrary_toml_documents(doc: dict[str, Any]) -> None:
    text = document_to_toml(doc)
    assert tomllib.loads(text) == doc or any(isinstance(v, float) and math.isnan(v) for v in _leaves(doc))
    assert_loads_or_config_error(text)


@given(st.sampled_from(KEY_VOCABULARY), values)
def test_fuzz_scenario_shaped_documents(section: str, value: Any) -> None:
    """A valid scenario with one section replaced: the loader reads deep into the structure."""
    doc = tomllib.loads((SCENARIOS / "wrong_ca_mitm.toml").read_text())
    doc[section] = value
    assert_loads_or_config_error(document_to_toml(doc))


def _leaves(value: object) -> list[object]:
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, list):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value]


def _containers(value: object, path: tuple[object, ...] = ()) -> list[tuple[tuple[object, ...], Any]]:
    """Every table and array inside ``value`` with its path (the root included)."""
    out: list[tuple[tuple[object, ...], Any]] = [(path, value)]
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        if isinstance(v, dict | list):
            out += _containers(v, (*path, k))
    return out


SHIPPED_DOCS = {p.stem: tomllib.loads(p.read_text()) for p in SHIPPED}


@st.composite
def mutated_scenarios(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from(sorted(SHIPPED_DOCS)))
    doc = tomllib.loads((SCENARIOS / f"{name}.toml").read_text())  # a fresh copy to mutate
    for _ in range(draw(st.integers(1, 3))):
        _path, container = draw(st.sampled_from(_containers(doc)))
        slots = list(container) if isinstance(container, dict) else list(range(len(container)))
        if not slots:
            continue
        slot = draw(st.sampled_from(slots))
        mutation = draw(st.sampled_from(["delete", "retype", "rename"]))
        if mutation == "delete":
            del container[slot]
        elif mutation == "retype" or isinstance(container, list):
            container[slot] = draw(values)
        else:
            new_key = draw(keys)
            container[new_key] = container.pop(slot)
    return document_to_toml(doc)


@given(mutated_scenarios())
def test_fuzz_mutated_shipped_scenarios(text: str) -> None:
    assert_loads_or_config_error(text)


@given(st.sampled_from(SHIPPED), st.data())
def test_fuzz_shipped_scenarios_with_a_line_removed_or_duplicated(path: Path, data: st.DataObject) -> None:
    lines = path.read_text().splitlines(keepends=True)
    i = data.draw(st.integers(0, len(lines) - 1))
    if data.draw(st.booleans()):
        del lines[i]
    else:
        lines.insert(i, lines[i])
    assert_loads_or_config_error("".join(lines))


def test_readme_example_loads() -> None:
    readme = (SCENARIOS / "README.md").read_text()
    example = readme.rsplit("```toml\n", 1)[1].split("```", 1)[0]
    s = loads_scenario(example, source="README.md")
    assert s.station_count() == 250 and s.stations["depot"].security_profile == 3
    assert [e.name for e in s.timeline] == ["stop", "start"]


def test_readme_documents_every_key_and_action() -> None:
    readme = (SCENARIOS / "README.md").read_text()
    documented = {
        *vocabulary.SIMULATION_KEYS, *vocabulary.PKI_KEYS, *vocabulary.PROFILE_KEYS, *vocabulary.TRUST_KEYS, *vocabulary.CSMS_KEYS,
        *vocabulary.CERTIFICATE_KEYS, *vocabulary.STATION_KEYS, *vocabulary.BACKOFF_KEYS, *vocabulary.LINK_KEYS,
        *vocabulary.STALL_KEYS, *ACTIONS, *(p for params in ACTIONS.values() for p in params),
        *vocabulary.CONTROLLER_KEYS, *vocabulary.ENDPOINT_KEYS, *vocabulary.SIGNING_KEYS, *vocabulary.STATION_CERTIFICATE_KEYS,
        *vocabulary.FIRMWARE_KEYS, *vocabulary.FILE_SERVER_KEYS, *vocabulary.FILE_SERVICE_KEYS, *vocabulary.FILE_ROUTE_KEYS,
        *vocabulary.FILE_TRANSFERS_KEYS,
    }  # fmt: skip
    missing = [key for key in sorted(documented) if f"`{key}`" not in readme]
    assert not missing
