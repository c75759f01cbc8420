"""Each configuration fact lives in one place: node defaults, the back-off spec, the frozen table, TLS versions,
and one exception type for configuration errors."""

from __future__ import annotations

import attrs
import pytest

from evsim.backoff import RetryBackOff
from evsim.errors import ConfigError
from evsim.frozenmap import FrozenMap
from evsim.link.service import Service
from evsim.nodes.admission import AuthBudgetConfig
from evsim.nodes.controller import ControllerConfig
from evsim.nodes.csms import CsmsConfig
from evsim.nodes.station_model import StationConfig
from evsim.scenario import model
from evsim.scenario.loader import loads_scenario
from evsim.scenario.model import ControllerSpec, CsmsSpec, StationGroupSpec, TlsProfileSpec
from evsim.scenario.read_tls import validate_tls_profile
from evsim.tls.config import DEFAULT_SUITES, OCPP_TLS_VERSIONS, TlsProfile

SAME_DEFAULTS = [
    (CsmsSpec, "security_profile", CsmsConfig, "security_profile"),
    (CsmsSpec, "ocpp_versions", CsmsConfig, "ocpp_versions"),
    (CsmsSpec, "heartbeat_interval", CsmsConfig, "heartbeat_interval"),
    (CsmsSpec, "accept_unknown_stations", CsmsConfig, "accept_unknown_stations"),
    (CsmsSpec, "behind_controller", CsmsConfig, "behind_controller"),
    (ControllerSpec, "port", ControllerConfig, "port"),
    (ControllerSpec, "on_upstream_loss", ControllerConfig, "on_upstream_loss"),
    (ControllerSpec, "upstream_connect_attempts", ControllerConfig, "upstream_connect_attempts"),
    (ControllerSpec, "failover", Service, "policy"),
    (StationGroupSpec, "ocpp_versions", StationConfig, "ocpp_versions"),
    (StationGroupSpec, "session_duration", StationConfig, "session_duration_s"),
    (StationGroupSpec, "meter_interval", StationConfig, "meter_interval_s"),
    (StationGroupSpec, "heartbeat_fallback", StationConfig, "default_heartbeat_s"),
    (StationGroupSpec, "network_attempts", StationConfig, "network_attempts"),
    (StationGroupSpec, "fallback", StationConfig, "network_fallback"),
    (TlsProfileSpec, "versions", TlsProfile, "versions"),
    (TlsProfileSpec, "handshake_timeout", TlsProfile, "handshake_timeout_s"),
]


@pytest.mark.parametrize(("spec", "field", "config", "source"), SAME_DEFAULTS)
def test_scenario_defaults_come_from_the_node_configs(
    spec: type, field: str, config: type, source: str
) -> None:
    assert model.default_of(spec, field) == model.default_of(config, source)


def test_a_scenario_without_settings_gets_the_node_defaults() -> None:
    s = loads_scenario('[simulation]\nduration = "1h"\n[csms.main]\n[stations.g]\n')
    csms, group = s.csms["main"], s.stations["g"]
    assert csms.heartbeat_interval == CsmsConfig().heartbeat_interval
    assert (
        group.retry_backoff == RetryBackOff()
        and group.queue_max == attrs.fields_dict(StationConfig)["queue_max"].default
    )
    assert s.tls_profiles["default"].versions == OCPP_TLS_VERSIONS


def test_one_spec_class_per_concept() -> None:
    assert not hasattr(model, "RetryBackOffSpec")  # the scenario uses the back-off value itself
    assert isinstance(DEFAULT_SUITES, FrozenMap)  # the suite table is a FrozenMap, not a class of its own


@pytest.mark.parametrize(
    "build",
    [
        lambda: CsmsConfig(boot_timeout=0),
        lambda: CsmsConfig(duplicate_identity="keep_both"),  # type: ignore[arg-type]
        lambda: StationConfig(station_id="s", security_profile=4),
        lambda: AuthBudgetConfig(window_s=float("inf")),
        lambda: RetryBackOff(wait_minimum=-1),
        lambda: ControllerConfig(upstream=Service("u", ()), security_profile=5),
    ],
)
def test_configuration_errors_are_config_errors_with_a_field_path(build: object) -> None:
    with pytest.raises(ConfigError) as err:
        build()  # type: ignore[operator]
    assert err.value.path


def test_tls_versions_are_checked_by_the_tls_layer_only() -> None:
    for versions, words in ((("1.3", "1.4"), "unknown TLS version"), (("1.2", "1.3"), "newest first")):
        with pytest.raises(ConfigError, match=words):
            TlsProfile(versions=versions)
        with pytest.raises(ConfigError, match=words):
            validate_tls_profile(TlsProfileSpec(name="p", versions=versions))
