"""The vocabulary of scenario files: the keys each table may hold, the values of each choice, and bounds.

Theory of operation. Every table reader refuses a key that is not in its tuple here (with a did-you-mean
drawn from the tuple), so these tuples are the whole surface of the file format; the README's reference
tables are checked against them by the tests. Choices that mirror a type of another layer are taken from
that type (``typing.get_args`` of a ``Literal``), and bounds that come from a specification cite it, so a
value the loader accepts is one the layer below accepts too.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from typing import Final, Literal

from evsim.scenario.model import (
    BehindControllerKind,
    ClockKind,
    FailoverKind,
    FallbackKind,
    HostnameCheck,
    KeyType,
    NetworkKind,
    UpstreamLossKind,
    WildcardPolicy,
)
from evsim.tls import config as tls_config
from evsim.tls import revocation as tls_revocation
from evsim.tls import trust as tls_trust
from evsim.world.actions import ACTIONS as ACTION_CLASSES
from evsim.world.actions import LINK_POLICY_KEYS
from evsim.ws.paths import IDENTITY_RULE

# ---------------------------------------------------------------- keys of each table

TOP_KEYS: Final = (
    "simulation",
    "pki",
    "tls",
    "csms",
    "controllers",
    "stations",
    "energy_managers",
    "links",
    "timeline",
    "nts",
    "firmware",
    "file_servers",
    "file_services",
    "file_transfers",
    "expect",
)
SIMULATION_KEYS: Final = (
    "name",
    "description",
    "outcome",
    "seed",
    "duration",
    "clock",
    "network",
    "start",
    "stop_when_done",
    "cpu",
)
PKI_KEYS: Final = (
    "key_type",
    "validity",
    "organization",
    "roots",
    "intermediates",
    "station_issuer",
    "expiry_warning",
)
ROOT_KEYS: Final = ("key_type",)
INTERMEDIATE_KEYS: Final = ("issuer", "key_type")
TLS_KEYS: Final = ("profiles", "trust", "pins", "change")
PROFILE_KEYS: Final = (
    "versions",
    "cipher_suites",
    "handshake_timeout",
    "max_send_fragment",
    # engine knobs (TlsProfile.from_toml checks them)
    "suite_preference",
    "groups",
    "signature_algorithms",
    "alpn",
    "alpn_require",
    "session",
    "record",
    "keylog",
    "enforce",
)
TRUST_KEYS: Final = ("roots", "hostname", "wildcards", "mode", "time_check", "revocation", "max_depth")
CSMS_KEYS: Final = (
    "host",
    "port",
    "security_profile",
    "insecure_allow_plain_ws",
    "ocpp_versions",
    "heartbeat_interval",
    "tls_profile",
    "certificate",
    "password",
    "accept_unknown_stations",
    "ocsp_stapling",
    "pins",
    "change",
    "secondary_of",
    "behind_controller",
    "trusted_controllers",
    "signing",
    "client_trust",
    "cpu",
)
SIGNING_KEYS: Final = ("max_concurrent", "max_queued", "validity")
STATION_CERTIFICATE_KEYS: Final = (
    "key_type",
    "key_size",
    "renewal_threshold",
    "sign_wait_minimum",
    "sign_repeat_times",
    "renewed_attempts",
)
CERTIFICATE_KEYS: Final = ("root", "issuer", "validity", "not_before", "key_type")
STATION_KEYS: Final = (
    "count",
    "id_pattern",
    "csms",
    "security_profile",
    "ocpp_versions",
    "tls_profile",
    "trust",
    "password",
    "sessions",
    "sessions_per_day",
    "session_duration",
    "session_start",
    "meter_interval",
    "charge_power",
    "heartbeat_fallback",
    "retry_backoff",
    "queue_max",
    "connect_window",
    "pins",
    "change",
    "endpoints",
    "network_attempts",
    "fallback",
    "certificates",
    "clock",
    "cpu",
)
CLOCK_KEYS: Final = (
    "offset",
    "offset_spread",
    "drift_ppm",
    "drift_spread_ppm",
    "set_to",
    "time_source",
    "report_threshold",
    "step_threshold",
    "nts",
    "nts_roots",
    "nts_time_check",
    "nts_poll",
)
NTS_KEYS: Final = ("host", "root", "validity", "clock_error")
CONTROLLER_KEYS: Final = (
    "host",
    "port",
    "security_profile",
    "insecure_allow_plain_ws",
    "tls_profile",
    "trust",
    "certificate",
    "upstream",
    "upstream_security_profile",
    "failover",
    "on_upstream_loss",
    "upstream_connect_attempts",
    "retry_backoff",
    "behind_controller",
    "trusted_controllers",
    "client_trust",
    "clock",
    "client_auth",
    "auto_accept",
    "pairing_window",
    "cpu",
)
CLIENT_AUTH_KINDS: Final[tuple[Literal["required", "pairing"], ...]] = ("required", "pairing")
ENERGY_MANAGER_KEYS: Final = (
    "host",
    "port",
    "stations",
    "auto_accept",
    "pairing_window",
    "station_trust",
    "retry",
    "confirm",
)
ENDPOINT_KEYS: Final = ("csms", "controller", "priority", "trust", "tls_profile", "pins")
FIRMWARE_KEYS: Final = ("version", "size")
FILE_SERVER_KEYS: Final = (
    "host",
    "port",
    "tls_profile",
    "client_certificates",
    "firmware",
    "tampered",
    "accept_uploads",
)
FILE_SERVICE_KEYS: Final = ("mirrors", "stations")
FILE_ROUTE_KEYS: Final = ("server", "priority", "tls_profile", "trust", "pins", "client_certificate")
FILE_TRANSFERS_KEYS: Final = ("retries", "retry_interval", "install", "log_bytes")
MAX_FIRMWARE_BYTES: Final = 256 * 1024 * 1024
"""The largest test image (the station's default ``max_body_bytes``)."""
BACKOFF_KEYS: Final = ("wait_minimum", "random_range", "repeat_times")
LINK_KEYS: Final = ("between", *LINK_POLICY_KEYS)
STALL_KEYS: Final = ("every", "for")
RESET_KEYS: Final = ("every",)

# ---------------------------------------------------------------- choices and bounds

FALLBACK_KINDS: Final[tuple[FallbackKind, ...]] = ("restart_list", "last_working")
FAILOVER_KINDS: Final[tuple[FailoverKind, ...]] = ("priority", "round_robin", "sticky")
UPSTREAM_LOSS_KINDS: Final[tuple[UpstreamLossKind, ...]] = ("close_station", "keep_station")
BEHIND_CONTROLLER_KINDS: Final[tuple[BehindControllerKind, ...]] = (
    "require_station_cert",
    "trust_controller",
)
MAX_STATION_ENDPOINTS: Final = 4
"""A station has the configuration slots 0..3 (``DEFAULT_SLOT_NUMBERS``; B09.FR.06 asks for at least two)."""
MAX_NETWORK_ATTEMPTS: Final = 100

ACTIONS: Final[Mapping[str, tuple[str, ...]]] = {name: cls.keys for name, cls in ACTION_CLASSES.items()}
"""Timeline actions and the parameters each takes (besides ``at`` and ``action``)."""

CLOCKS: Final[tuple[ClockKind, ...]] = ("virtual", "real")
NETWORKS: Final[tuple[NetworkKind, ...]] = ("memory", "tcp")
KEY_TYPES: Final[tuple[KeyType, ...]] = ("ec", "rsa")
HOSTNAME_CHECKS: Final[tuple[HostnameCheck, ...]] = ("cn", "san", "san+cn", "off")
WILDCARD_POLICIES: Final[tuple[WildcardPolicy, ...]] = ("deny", "allow")
SCENARIO_TLS_VERSIONS: Final = tls_config.OCPP_TLS_VERSIONS
"""Versions a profile may enable: OCPP 2.0.1 A00.FR.313 allows TLS 1.2 and above only."""
SECURITY_PROFILES: Final = (1, 2, 3)

MAX_STATIONS_PER_GROUP: Final = 100_000
MAX_NAME_LENGTH: Final = 48
MAX_IDENTITY_LENGTH: Final = 48
"""OCPP-J 2.0.1 §3.1.1: the station identity is an identifierString of at most 48 characters."""
PASSWORD_LENGTH: Final = (16, 64)
"""OCPP 2.0.1 A00.FR.205 (errata 2025-01) and 2.1: ``BasicAuthPassword`` is 16..64 characters (40 in 2.0.1
Ed.2; the errata raise the limit to the variable's maxLimit, 40..64)."""
MAX_COMMON_NAME: Final = 64
"""RFC 5280 ub-common-name: the CSMS host name becomes its certificate's CN."""


# ---------------------------------------------------------------- the TLS model tables (checked by the TLS layer)

PINSET_KEYS: Final = ("enforcement", "tofu", "pins")
PIN_KEYS: Final = ("target", "state", "cert", "key", "root", "intermediate", "spki_sha256", "not_after")
PIN_SOURCES: Final = ("cert", "root", "intermediate", "spki_sha256")
CHANGE_KEYS: Final = ("on_peer_key_change", "on_peer_cert_change_same_key")
TRUST_MODES: Final = typing.get_args(tls_trust.TrustMode)
REVOCATION_KEYS: Final = ("crl", "ocsp", "on_unknown")
SESSION_KEYS: Final = ("resumption", "lifetime", "cache_entries")
RECORD_KEYS: Final = ("max_send_fragment", "max_fragment_length", "record_size_limit", "recv_buffer")
RESUMPTIONS: Final = typing.get_args(tls_config.Resumption)
SUITE_PREFERENCES: Final = typing.get_args(tls_config.SuitePreference)
CRL_MODES: Final = typing.get_args(tls_revocation.CrlMode)
OCSP_POLICIES: Final = typing.get_args(tls_revocation.OcspPolicy)
ON_UNKNOWN: Final = typing.get_args(tls_revocation.OnUnknown)
MAX_DEPTH: Final = tls_trust.MAX_VERIFY_DEPTH
"""The TLS layer's ``TrustStore.max_depth`` bound (OpenSSL's default verify depth)."""
TIME_CHECKS: Final = typing.get_args(tls_trust.TimeCheck)
KEY_NAMES: Final = {"current": 0, "next": 1}
"""``key`` of a CSMS pin: ``current`` = the key at the start, ``next`` = the key of its first new-key rotation."""
MAX_KEY_INDEX: Final = 16
"""Most key rotations a pin may look ahead (keys are generated on demand; a bound keeps typos cheap)."""
STATION_ID_RULE: Final = "station id {sid!r} is not an OCPP identity (" + IDENTITY_RULE + ", OCPP-J §3.1.1)"
"""The error for a generated station id that is not an OCPP identity (format with ``sid``)."""
ID_PATTERN_FIX: Final = 'use a pattern like "ST-{n:04d}" (one field, n, with an optional integer format)'
"""The fix offered for every bad ``id_pattern``."""
