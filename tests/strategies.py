"""Hypothesis strategies shared by the tests (``st.builds`` on the attrs value classes)."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from typing import Any

from cryptography import x509
from hypothesis import strategies as st

from evsim.ocpp.framing import (
    ERROR_CODES,
    MAX_ERROR_DESCRIPTION_LENGTH,
    MAX_MESSAGE_ID_LENGTH,
    Call,
    CallError,
    CallResult,
    CallResultError,
    Frame,
    Send,
)
from evsim.pki import ski
from evsim.pki.ca import common_name
from evsim.tls.config import KNOWN_VERSIONS, Identity, TlsProfile
from evsim.tls.pairing import PairedPeer, PeerTrust
from evsim.tls.pairing import PeerState as PairingState
from evsim.tls.pins import TARGETS, Enforcement, Pin, PinSet, PinState, PinTarget, spki_hex
from evsim.tls.predict import ClientSide, ServerSide
from evsim.tls.suites import BY_IANA, DEFAULT_TLS12_SUITES, DEFAULT_TLS13_SUITES, SUITES
from evsim.tls.trust import TrustStore

#: Text orjson can encode: no lone surrogates.
json_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=20)

#: Numbers that survive a JSON round trip unchanged (orjson handles 64-bit integers; NaN/inf are not JSON).
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | json_text
)

#: Any JSON value.
json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(json_text, children, max_size=4),
    max_leaves=12,
)

#: A JSON object (every OCPP payload is one).
payloads: st.SearchStrategy[dict[str, Any]] = st.dictionaries(json_text, json_values, max_size=5)

#: Valid message ids: any string of at most 36 characters (OCPP-J 2.0.1 Table 4).
message_ids = st.text(alphabet=st.characters(codec="utf-8"), max_size=MAX_MESSAGE_ID_LENGTH)

actions = st.sampled_from(["BootNotification", "Heartbeat", "StatusNotification", "Authorize"]) | json_text
error_codes = st.sampled_from(sorted(ERROR_CODES)) | json_text
descriptions = st.text(alphabet=st.characters(codec="utf-8"), max_size=MAX_ERROR_DESCRIPTION_LENGTH)

calls = st.builds(Call, message_id=message_ids, action=actions, payload=payloads)
call_results = st.builds(CallResult, message_id=message_ids, payload=payloads)
call_errors = st.builds(
    CallError, message_id=message_ids, error_code=error_codes, description=descriptions, details=payloads
)
call_result_errors = st.builds(
    CallResultError,
    message_id=message_ids,
    error_code=error_codes,
    description=descriptions,
    details=payloads,
)
sends = st.builds(Send, message_id=message_ids, action=actions, payload=payloads)

#: OCPP 2.0.1 frames.
frames_201: st.SearchStrategy[Frame] = st.one_of(calls, call_results, call_errors)
#: OCPP 2.1 frames (all five types).
frames_21: st.SearchStrategy[Frame] = st.one_of(calls, call_results, call_errors, call_result_errors, sends)


def _frame_shaped() -> st.SearchStrategy[list[Any]]:
    """JSON arrays that look a lot like frames (type numbers 0-9, ids, actions, payloads, any arity)."""
    head = st.integers(min_value=0, max_value=9) | json_scalars
    element = message_ids | actions | payloads | json_values
    return st.builds(lambda h, rest: [h, *rest], head, st.lists(element, max_size=5))


#: JSON values biased towards almost-valid frames, for robustness tests.
frame_like_values: st.SearchStrategy[Any] = _frame_shaped() | json_values


# ---------------------------------------------------------------- TLS configurations (tests/test_tls_property.py)

#: Every TLS 1.3 suite in the table.
TLS13_SUITE_POOL: tuple[str, ...] = tuple(s.iana for s in SUITES if s.version == "1.3")
#: TLS <= 1.2 suites chosen so random lists overlap often: ECDSA and RSA authentication, ECDHE, DHE and RSA
#: key transport, a CCM_8 suite (security level 0) and CBC-SHA suites usable in TLS 1.0/1.1.
TLS12_SUITE_POOL: tuple[str, ...] = (
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA",
)
_LEGACY_SUITES = tuple(n for n in TLS12_SUITE_POOL if BY_IANA[n].min_version == "1.0")
#: Oldest..newest enabled version (indexes into KNOWN_VERSIONS); repeats weight the modern ranges, listed
#: first so that failures shrink towards them.
_VERSION_RANGES: tuple[tuple[int, int], ...] = (
    (2, 3),
    (3, 3),
    (2, 2),
    (2, 3),
    (2, 3),
    (2, 3),
    (2, 3),
    (1, 3),
    (1, 2),
    (0, 1),
    (1, 1),
)


def _suite_lists(default: Sequence[str], pool: Sequence[str]) -> st.SearchStrategy[list[str]]:
    """The default list in any order (so the two sides' orders differ and the preference matters), or a
    few suites from ``pool`` (often disjoint from the peer's)."""
    return st.permutations(default) | st.lists(st.sampled_from(pool), min_size=1, max_size=4, unique=True)


@st.composite
def tls_profiles(draw: st.DrawFn) -> TlsProfile:
    """Valid profiles: a contiguous version range (sometimes with TLS 1.0/1.1), suite lists drawn from the
    pools in random order (a legacy range always gets a CBC-SHA suite), either suite preference."""
    lo, hi = draw(st.sampled_from(_VERSION_RANGES))
    versions = tuple(reversed(KNOWN_VERSIONS[lo : hi + 1]))
    suites: dict[str, list[str]] = {}
    if "1.3" in versions or draw(st.booleans()):
        suites["1.3"] = draw(_suite_lists(DEFAULT_TLS13_SUITES, TLS13_SUITE_POOL))
    if lo <= 2:
        names = draw(_suite_lists(DEFAULT_TLS12_SUITES, TLS12_SUITE_POOL))
        if lo < 2 and not any(n in _LEGACY_SUITES for n in names):
            names.insert(draw(st.integers(0, len(names))), draw(st.sampled_from(_LEGACY_SUITES)))
        suites["1.2"] = names
    return TlsProfile(
        versions=versions,
        cipher_suites=suites,
        suite_preference=draw(st.sampled_from(("server", "client"))),
        insecure_legacy_versions=lo < 2,
    )


AnchorSets = Sequence[tuple[x509.Certificate, ...]]
"""Candidate anchor sets for a trust store (repeat one to draw it more often)."""


def trust_stores(anchor_sets: AnchorSets) -> st.SearchStrategy[TrustStore]:
    """Trust stores over one of ``anchor_sets`` (the "root-CA groups"), any hostname/wildcard/time policy,
    and now and then ``insecure_skip_verify``."""
    return st.builds(
        TrustStore,
        name=st.just("property"),
        anchors=st.sampled_from(anchor_sets),
        hostname=st.sampled_from(("san+cn", "san+cn", "cn", "san", "off")),
        wildcards=st.sampled_from(("deny", "allow")),
        time_check=st.sampled_from(("enforce", "enforce", "off")),
        insecure_skip_verify=st.sampled_from((False,) * 9 + (True,)),
    )


def client_sides(
    anchor_sets: AnchorSets,
    identities: Sequence[Identity],
    server_names: Sequence[str | None],
    pins: st.SearchStrategy[PinSet | None] | None = None,
) -> st.SearchStrategy[ClientSide]:
    """Client halves: a profile, a trust store, maybe a client certificate, a server name, and the pins
    of its peer policy (``pins``; default: none)."""
    return st.builds(
        ClientSide,
        profile=tls_profiles(),
        trust=trust_stores(anchor_sets),
        identity=st.none() | st.sampled_from(identities),
        server_name=st.sampled_from(server_names),
        pins=st.none() if pins is None else pins,
    )


_PIN_STATES: tuple[PinState, ...] = ("active", "backup", "pending", "released")


@st.composite
def pin_sets(
    draw: st.DrawFn,
    keys: Sequence[x509.Certificate],
    not_afters: Sequence[_dt.datetime | None],
    enforcements: Sequence[Enforcement] = ("enforce", "report_only"),
    targets: Sequence[PinTarget] = TARGETS,
) -> PinSet:
    """Valid pin sets: one to three pins on the keys of ``keys`` (targets from ``targets``), the first
    ``active`` (a configured set needs one), the others in any state; each pin maybe expiring at one of
    ``not_afters``.

    Args:
        keys: certificates whose keys may be pinned (repeat one to draw it more often).
        not_afters: pin expiries to draw from (None = no expiry; repeat it to make it common).
        enforcements: the enforcement modes to draw from.
        targets: the pin targets to draw from (repeat one to draw it more often).

    Returns:
        A strategy for :class:`PinSet`.
    """
    pins: list[Pin] = []
    for i in range(draw(st.integers(1, 3))):
        cert = draw(st.sampled_from(keys))
        target: PinTarget = draw(st.sampled_from(targets))
        if any(p.target == target and p.spki_sha256 == spki_hex(cert) for p in pins):
            continue  # the same (target, key) twice is refused by PinSet
        state = "active" if i == 0 else draw(st.sampled_from(_PIN_STATES))
        pins.append(Pin(target, spki_hex(cert) or "", state, draw(st.sampled_from(not_afters))))
    return PinSet(draw(st.sampled_from(enforcements)), tuple(pins))


@st.composite
def peer_trusts(
    draw: st.DrawFn,
    devices: Sequence[x509.Certificate],
    window_ends: Sequence[_dt.datetime | None],
    since: _dt.datetime,
) -> PeerTrust:
    """Pairing lists: for each device maybe an entry (trusted, pending or denied; its SPKI hash known,
    unknown or another key's; its device id or none), maybe an open window, maybe ``auto_accept``.

    Args:
        devices: self-signed device certificates (SKI = SHA-1 of the key), distinct keys.
        window_ends: ``window_until`` values to draw from (None = no window).
        since: the entries' ``since``.

    Returns:
        A strategy for :class:`PeerTrust`.
    """
    peers: list[PairedPeer] = []
    for cert in devices:
        if not draw(st.booleans()):
            continue
        spki = draw(st.sampled_from((spki_hex(cert), spki_hex(cert), None, "ab" * 32)))
        device_id = draw(st.sampled_from((common_name(cert), None)))
        state: PairingState = draw(st.sampled_from(("trusted", "trusted", "pending", "denied")))
        peers.append(PairedPeer(ski(cert), spki, state, since, device_id))
    return PeerTrust(
        auto_accept=draw(st.sampled_from((False, False, False, True))),
        peers=tuple(draw(st.permutations(peers))),
        window_until=draw(st.sampled_from(window_ends)),
    )


def server_sides(anchor_sets: AnchorSets, identities: Sequence[Identity]) -> st.SearchStrategy[ServerSide]:
    """Server halves: a profile, a certificate, and client authentication with its trust store."""
    return st.builds(
        ServerSide,
        profile=tls_profiles(),
        identity=st.sampled_from(identities),
        trust=trust_stores(anchor_sets),
        client_auth=st.sampled_from(("none", "optional", "required")),
    )
