"""Peer trust wired into real handshakes: pairing, pins, change notification, trust changes, events.

Every test runs both handshakes over ``memory_stream_pair`` (``tls_pair``) under ``trio.fail_after`` with
verification on, against a peer that violates the knob, and asserts the refusing side's exact reason and
the events the policy emitted.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from collections.abc import Callable

import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives import hashes

from evsim.errors import ConfigError, HandshakeFailed, TransportError
from evsim.pki import CertificateAuthority, CertKey, issue_self_signed, ski, spki_sha256
from evsim.tls import (
    ClientTls,
    Identity,
    ServerTls,
    TlsProfile,
    TlsSession,
    TlsStream,
    TrustStore,
    events,
    tls_accept,
    tls_connect,
)
from evsim.tls.change import ChangePolicy, OnKeyChange
from evsim.tls.pairing import REFUSED_DENIED, REFUSED_PENDING, PeerTrust
from evsim.tls.peer import PeerEvent, PeerPolicy, PeerState
from evsim.tls.pins import Enforcement, Pin, PinSet, PinState, PinTarget
from tests.pki_fixtures import CSMS_HOST, TEST_NOW, tls_pair

NOW = TEST_NOW
IO_TIMEOUT_S = 10
PROFILE = TlsProfile()
TLS12 = TlsProfile(versions=("1.2",))
PROFILES = pytest.mark.parametrize("profile", [PROFILE, TLS12], ids=["tls13", "tls12"])
SHIP_HOST = "wallbox.local"


def pinned_trust(mode: str = "pinned_peers") -> TrustStore:
    """A client trust store for self-signed, pinned servers (SHIP identifies by SKI, not by name)."""
    return TrustStore("ship", (), hostname="off", mode=mode)  # type: ignore[arg-type]


def reason(result: TlsStream | TransportError) -> str:
    """``ok`` for a stream, else the refusal reason (``remote:`` prefixed when the peer refused us)."""
    if isinstance(result, TlsStream):
        return "ok"
    assert isinstance(result, HandshakeFailed), result
    return ("remote:" if result.remote else "") + result.reason


def names(log: list[PeerEvent]) -> list[str]:
    return [e.event for e in log]


def spki(cert_key: CertKey) -> str:
    return spki_sha256(cert_key.cert).hex()


def ski_hex(cert_key: CertKey) -> str:
    return ski(cert_key.cert).hex()


# ---------------------------------------------------------------- certificates

# SHIP devices (self-signed, SKI = SHA-1 of the key): the wallbox serves, energy managers connect.
WALLBOX = issue_self_signed("WB-0002", now=NOW)
HEMS = issue_self_signed("HEMS-0001", now=NOW)
HEMS_NEW_KEY = issue_self_signed("HEMS-0001", now=NOW)  # the same device after re-keying
STRANGER = issue_self_signed("PV-0003", now=NOW)

# A CA PKI with two CSMS intermediates under one root (both pass the CA check; pins tell them apart).
ROOT = CertificateAuthority.create_root("Peer Test Root", now=NOW)
SUB_A = ROOT.create_sub_ca("CSMS Sub-CA A", now=NOW)
SUB_B = ROOT.create_sub_ca("CSMS Sub-CA B", now=NOW)
CSMS_A = SUB_A.issue_server(CSMS_HOST, now=NOW)
CSMS_A_RENEWED = SUB_A.issue_server(CSMS_HOST, now=NOW, key=CSMS_A.key)  # same key, new certificate
CSMS_A_REKEYED = SUB_A.issue_server(CSMS_HOST, now=NOW)  # same CA, new key
CSMS_B = SUB_B.issue_server(CSMS_HOST, now=NOW)
STATION = SUB_A.issue_client("CS0001", now=NOW)
STATION_OTHER_KEY = SUB_A.issue_client("CS0001", now=NOW)
STATION_FROM_B = SUB_B.issue_client("CS0001", now=NOW)
CA_TRUST = TrustStore("CSMSRootCertificate", (ROOT.cert,))


def csms_server(cert_key: CertKey, profile: TlsProfile = PROFILE) -> ServerTls:
    return ServerTls.build(profile, Identity.from_cert_key(cert_key))


def ca_client(profile: TlsProfile = PROFILE) -> ClientTls:
    return ClientTls.build(profile, CA_TRUST)


def pins(
    *pins_: tuple[PinTarget, CertKey | CertificateAuthority, PinState], mode: Enforcement = "enforce"
) -> PinSet:
    return PinSet(mode, tuple(Pin(target, spki_sha256(ck.cert), state) for target, ck, state in pins_))


# ================================================================ SHIP-style pairing


def pairing_listener(log: list[PeerEvent], profile: TlsProfile = PROFILE) -> tuple[ServerTls, PeerPolicy]:
    """The wallbox: a pairing listener (client certificate required, any self-signed one reaches the
    pairing decision), with an empty pairing list."""
    policy = PeerPolicy(side="server", pairing=PeerTrust(), sink=log.append, name="wallbox")
    return ServerTls.build(
        profile, Identity.from_cert_key(WALLBOX), client_auth="pairing", peer=policy
    ), policy


def hems_client(device: CertKey, profile: TlsProfile = PROFILE) -> ClientTls:
    """An energy manager that pinned the wallbox's key (scanned from its label)."""
    policy = PeerPolicy(side="client", pins=pins(("leaf", WALLBOX, "active")))
    trust = pinned_trust()
    return ClientTls.build(profile, trust, Identity.from_cert_key(device), peer=policy)


@PROFILES
async def test_pairing_full_sequence(profile: TlsProfile) -> None:
    """Unknown refused outside a window -> window: paired by SKI -> trusted without a window -> unpaired:
    refused -> the device re-pairs with a new key inside a window (its old key stays refused)."""
    log: list[PeerEvent] = []
    server_tls, wallbox = pairing_listener(log, profile)
    hems, hems_rekeyed = hems_client(HEMS, profile), hems_client(HEMS_NEW_KEY, profile)
    t = NOW
    with trio.fail_after(IO_TIMEOUT_S):
        # 1. unknown, no window: refused during the handshake, recorded as a pairing request
        client, server = await tls_pair(hems, server_tls, host=SHIP_HOST, client_time=t, server_time=t)
        assert reason(server) == REFUSED_PENDING
        assert reason(client).startswith("remote:peer_alert:")  # the peer heard an alert
        assert names(log) == [events.PAIRING_REQUESTED]
        assert log[0].reason == REFUSED_PENDING and log[0].ski == ski_hex(HEMS)
        entry = wallbox.state.pairing.get(ski_hex(HEMS)) if wallbox.state.pairing else None
        assert entry is not None and entry.state == "pending"
        assert wallbox.statistics(now=t).pending_requests == 1
        log.clear()

        # 2. the user opens a window: accepted and recorded by SKI
        wallbox.open_pairing_window(now=t)
        t += dt.timedelta(seconds=10)
        client, server = await tls_pair(hems, server_tls, host=SHIP_HOST, client_time=t, server_time=t)
        assert (reason(client), reason(server)) == ("ok", "ok")
        assert names(log) == [events.PAIRED]
        assert log[0].ski == ski_hex(HEMS) and log[0].spki_sha256 == spki(HEMS)
        assert log[0].ocpp_security_event == events.RECONFIGURATION_OF_SECURITY_PARAMETERS
        entry = wallbox.state.pairing.get(ski_hex(HEMS)) if wallbox.state.pairing else None
        assert entry is not None and entry.state == "trusted" and entry.spki_sha256 == spki(HEMS)
        log.clear()

        # 3. the window has closed: the paired device is trusted without one; a stranger is not
        t += dt.timedelta(seconds=PeerTrust().pairing_window_s + 1)
        assert wallbox.state.pairing is not None and not wallbox.state.pairing.window_open(t)
        client, server = await tls_pair(hems, server_tls, host=SHIP_HOST, client_time=t, server_time=t)
        assert (reason(client), reason(server)) == ("ok", "ok")
        assert log == []
        stranger = hems_client(STRANGER, profile)
        client, server = await tls_pair(stranger, server_tls, host=SHIP_HOST, client_time=t, server_time=t)
        assert reason(server) == REFUSED_PENDING
        log.clear()

        # 4. unpaired: refused again, even inside a window
        wallbox.unpair(ski_hex(HEMS), now=t)
        assert names(log) == [events.UNPAIRED] and log[0].ski == ski_hex(HEMS)
        log.clear()
        wallbox.open_pairing_window(now=t)
        client, server = await tls_pair(hems, server_tls, host=SHIP_HOST, client_time=t, server_time=t)
        assert reason(server) == REFUSED_DENIED
        assert names(log) == [events.PAIRING_REFUSED]
        assert log[0].ocpp_security_event == events.EVSIM_PAIRING_REFUSED
        log.clear()

        # 5. re-pairing with a new key inside the window works; the old key stays refused
        client, server = await tls_pair(
            hems_rekeyed, server_tls, host=SHIP_HOST, client_time=t, server_time=t
        )
        assert (reason(client), reason(server)) == ("ok", "ok")
        assert names(log) == [events.PAIRED] and log[0].ski == ski_hex(HEMS_NEW_KEY)
        wallbox.close_pairing_window()
        client, server = await tls_pair(
            hems_rekeyed, server_tls, host=SHIP_HOST, client_time=t, server_time=t
        )
        assert (reason(client), reason(server)) == ("ok", "ok")
        client, server = await tls_pair(hems, server_tls, host=SHIP_HOST, client_time=t, server_time=t)
        assert reason(server) == REFUSED_DENIED


async def test_pairing_refuses_a_ca_issued_client() -> None:
    """A pairing listener takes self-signed SHIP certificates only: a CA-issued one is refused by the
    pairing decision (OpenSSL's unknown-CA error is left to it), with a cert_invalid reason."""
    log: list[PeerEvent] = []
    server_tls, wallbox = pairing_listener(log)
    wallbox.open_pairing_window(now=NOW)
    with trio.fail_after(IO_TIMEOUT_S):
        client, server = await tls_pair(hems_client(STATION), server_tls, host=SHIP_HOST)
    assert reason(server) == "cert_invalid:not_self_signed"
    assert reason(client).startswith("remote:peer_alert:")
    assert names(log) == [events.CERT_INVALID]
    assert wallbox.state.pairing is not None and wallbox.state.pairing.peers == ()


async def test_pairing_client_refuses_an_unpaired_server() -> None:
    """The client side of pairing: an energy manager that paired with one wallbox refuses another one
    (a self-signed server whose SKI it does not know), outside a window."""
    log: list[PeerEvent] = []
    trust = PeerTrust(peers=())
    policy = PeerPolicy(side="client", pairing=trust, sink=log.append)
    hems = ClientTls.build(PROFILE, pinned_trust(), Identity.from_cert_key(HEMS), peer=policy)
    policy.register(ski_hex(WALLBOX), now=NOW, device_id="WB-0002")
    log.clear()
    paired_box = ServerTls.build(PROFILE, Identity.from_cert_key(WALLBOX), client_auth="none")
    other_box = ServerTls.build(PROFILE, Identity.from_cert_key(STRANGER), client_auth="none")
    with trio.fail_after(IO_TIMEOUT_S):
        client, server = await tls_pair(hems, other_box, host=SHIP_HOST)
        assert reason(client) == REFUSED_PENDING
        assert reason(server).startswith("remote:peer_alert:")
        client, server = await tls_pair(hems, paired_box, host=SHIP_HOST)
        assert (reason(client), reason(server)) == ("ok", "ok")
    # the registered SKI learned its key on the first connection
    assert names(log) == [events.PAIRING_REQUESTED, events.PAIRED]
    entry = policy.state.pairing.get(ski_hex(WALLBOX)) if policy.state.pairing else None
    assert entry is not None and entry.spki_sha256 == spki(WALLBOX)


# ================================================================ pins: leaf and intermediate


@PROFILES
@pytest.mark.parametrize(
    ("target", "pinned", "violator"),
    [("leaf", CSMS_A, CSMS_B), ("intermediate", SUB_A, CSMS_B)],
    ids=["leaf", "intermediate"],
)
async def test_pin_mismatch_enforce_refuses(
    profile: TlsProfile, target: PinTarget, pinned: CertKey | CertificateAuthority, violator: CertKey
) -> None:
    """The CA check passes for both servers; only the pin tells them apart."""
    log: list[PeerEvent] = []
    policy = PeerPolicy(side="client", pins=pins((target, pinned, "active")), sink=log.append)
    client_tls = ca_client(profile)
    with trio.fail_after(IO_TIMEOUT_S):
        good, _ = await tls_pair(client_tls, csms_server(CSMS_A, profile), client_peer=policy)
        assert reason(good) == "ok" and log == []
        client, server = await tls_pair(client_tls, csms_server(violator, profile), client_peer=policy)
    assert reason(client) == events.PIN_MISMATCH
    assert reason(server).startswith("remote:peer_alert:")  # aborted during the handshake, with an alert
    assert names(log) == [events.PIN_MISMATCH]
    assert log[0].reason == events.PIN_MISMATCH and log[0].severity == "error"
    assert log[0].spki_sha256 == spki(violator)
    assert log[0].ocpp_security_event == events.INVALID_CSMS_CERTIFICATE


@PROFILES
async def test_pins_without_verification_refuse_with_internal_error_even_for_an_unanchored_chain(
    profile: TlsProfile,
) -> None:
    """``insecure_skip_verify`` accepts OpenSSL's own errors; a pin refusal is the Python callback's, so the
    server hears ``internal_error`` - not the alert of the chain error the store skipped (``unknown_ca``:
    nothing anchors CSMS_B's issuer, which it does not send), which it heard when the pins decided on
    OpenSSL's error call at depth 0."""
    policy = PeerPolicy(side="client", pins=pins(("leaf", CSMS_A, "active")))
    insecure = ClientTls.build(profile, TrustStore("nothing", (), insecure_skip_verify=True))
    leaf_only = ServerTls.build(profile, Identity((CSMS_B.cert,), CSMS_B.key))
    with trio.fail_after(IO_TIMEOUT_S):
        good, _ = await tls_pair(insecure, csms_server(CSMS_A, profile), client_peer=policy)
        client, server = await tls_pair(insecure, leaf_only, client_peer=policy)
    assert reason(good) == "ok"
    assert reason(client) == events.PIN_MISMATCH
    assert reason(server) == "remote:peer_alert:internal_error"


@pytest.mark.parametrize(
    ("target", "pinned"), [("leaf", CSMS_A), ("intermediate", SUB_A)], ids=["leaf", "intermediate"]
)
async def test_pin_mismatch_report_only_allows_and_reports(
    target: PinTarget, pinned: CertKey | CertificateAuthority
) -> None:
    log: list[PeerEvent] = []
    policy = PeerPolicy(
        side="client", pins=pins((target, pinned, "active"), mode="report_only"), sink=log.append
    )
    with trio.fail_after(IO_TIMEOUT_S):
        client, server = await tls_pair(ca_client(), csms_server(CSMS_B), client_peer=policy)
    assert (reason(client), reason(server)) == ("ok", "ok")
    assert names(log) == [events.PIN_MISMATCH]
    assert log[0].reason is None and log[0].severity == "warn"
    assert log[0].ocpp_security_event == events.EVSIM_PIN_MISMATCH


@PROFILES
@pytest.mark.parametrize(
    ("target", "pinned", "violator"),
    [("leaf", STATION, STATION_OTHER_KEY), ("intermediate", SUB_A, STATION_FROM_B)],
    ids=["leaf", "intermediate"],
)
async def test_server_side_pin_refuses_a_station(
    profile: TlsProfile, target: PinTarget, pinned: CertKey | CertificateAuthority, violator: CertKey
) -> None:
    """A CSMS pinning a station's key or its sub-CA (server side: the chain is the one OpenSSL built and
    verified, shown to the policy by the verify callback)."""
    log: list[PeerEvent] = []
    policy = PeerPolicy(side="server", pins=pins((target, pinned, "active")), sink=log.append)
    server_tls = ServerTls.build(
        profile, Identity.from_cert_key(CSMS_A), TrustStore("stations", (ROOT.cert,)), "required"
    )
    with trio.fail_after(IO_TIMEOUT_S):
        good_client = ClientTls.build(profile, CA_TRUST, Identity.from_cert_key(STATION))
        client, server = await tls_pair(good_client, server_tls, server_peer=policy)
        assert (reason(client), reason(server)) == ("ok", "ok")
        bad_client = ClientTls.build(profile, CA_TRUST, Identity.from_cert_key(violator))
        client, server = await tls_pair(bad_client, server_tls, server_peer=policy)
    assert reason(server) == events.PIN_MISMATCH
    assert reason(client).startswith("remote:peer_alert:")
    assert names(log) == [events.PIN_MISMATCH]
    assert log[0].peer == "CS0001"
    assert log[0].ocpp_security_event == events.INVALID_CHARGING_STATION_CERTIFICATE


async def test_pending_pin_promoted_after_success_old_released_history_kept() -> None:
    log: list[PeerEvent] = []
    policy = PeerPolicy(
        side="client",
        pins=pins(("leaf", CSMS_A, "active"), ("leaf", CSMS_A_REKEYED, "pending")),
        sink=log.append,
    )
    client_tls = ca_client()
    with trio.fail_after(IO_TIMEOUT_S):
        # the new key connects: the pending pin matches and is promoted, the old one released
        client, _ = await tls_pair(client_tls, csms_server(CSMS_A_REKEYED), client_peer=policy)
        assert reason(client) == "ok"
        assert names(log) == [events.PIN_PROMOTED, events.PIN_RELEASED]
        assert [e.spki_sha256 for e in log] == [spki(CSMS_A_REKEYED), spki(CSMS_A)]
        assert policy.epoch == 1  # a release: contexts bound to the policy are rebuilt
        state = policy.state.pins
        assert state is not None
        assert {p.spki_sha256: p.state for p in state.pins} == {
            spki(CSMS_A): "released",
            spki(CSMS_A_REKEYED): "active",
        }
        assert [h.event for h in state.history] == [events.PIN_PROMOTED, events.PIN_RELEASED]
        log.clear()
        # the old key is refused from now on
        client, _ = await tls_pair(client_tls, csms_server(CSMS_A), client_peer=policy)
    assert reason(client) == events.PIN_MISMATCH
    assert names(log) == [events.PIN_MISMATCH]


async def test_pending_pin_not_promoted_when_the_handshake_fails_later() -> None:
    """The pin check passes on the client, but the server refuses the client: nothing is committed
    (TLS 1.2, where the client's handshake only completes after the server accepted it)."""
    log: list[PeerEvent] = []
    policy = PeerPolicy(
        side="client",
        pins=pins(("leaf", CSMS_A, "active"), ("leaf", CSMS_A_REKEYED, "pending")),
        sink=log.append,
    )
    server_tls = ServerTls.build(
        TLS12, Identity.from_cert_key(CSMS_A_REKEYED), TrustStore("stations", (ROOT.cert,)), "required"
    )
    with trio.fail_after(IO_TIMEOUT_S):
        client, server = await tls_pair(ca_client(TLS12), server_tls, client_peer=policy)  # no client cert
    assert reason(server) == events.CERT_NO_CLIENT_CERT
    assert reason(client).startswith("remote:peer_alert:")
    assert log == []
    assert policy.state.pins is not None and policy.state.pins.history == ()


# ================================================================ change notification


async def test_same_key_renewal_gives_peer_cert_changed() -> None:
    log: list[PeerEvent] = []
    policy = PeerPolicy(side="client", change=ChangePolicy("reject"), sink=log.append)
    client_tls = ca_client()
    with trio.fail_after(IO_TIMEOUT_S):
        first, _ = await tls_pair(client_tls, csms_server(CSMS_A), client_peer=policy)
        again, _ = await tls_pair(client_tls, csms_server(CSMS_A), client_peer=policy)
        assert log == []  # first sight and the same certificate: nothing to say
        renewed, _ = await tls_pair(client_tls, csms_server(CSMS_A_RENEWED), client_peer=policy)
    assert [reason(first), reason(again), reason(renewed)] == ["ok", "ok", "ok"]
    assert names(log) == [events.PEER_CERT_CHANGED]
    assert log[0].peer == CSMS_HOST and log[0].severity == "info" and log[0].reason is None
    assert log[0].ocpp_security_event is None  # a renewal changes no trust
    seen = policy.state.memory.get(CSMS_HOST)
    assert seen is not None and seen.fingerprint == CSMS_A_RENEWED.cert.fingerprint(hashes.SHA256()).hex()


@pytest.mark.parametrize("on_key_change", ["reject", "warn", "accept_and_repin"])
async def test_new_key_gives_peer_key_changed_and_the_policy_decides(on_key_change: OnKeyChange) -> None:
    """A TOFU client (pki mode plus a learned leaf pin) sees the CSMS come back with a new key."""
    log: list[PeerEvent] = []
    policy = PeerPolicy(
        side="client", pins=PinSet(tofu=True), change=ChangePolicy(on_key_change), sink=log.append
    )
    client_tls = ca_client()
    with trio.fail_after(IO_TIMEOUT_S):
        first, _ = await tls_pair(client_tls, csms_server(CSMS_A), client_peer=policy)
        assert reason(first) == "ok" and names(log) == [events.PIN_ADDED]
        log.clear()
        client, server = await tls_pair(client_tls, csms_server(CSMS_A_REKEYED), client_peer=policy)
    pinned = {
        p.spki_sha256 for p in (policy.state.pins.pins if policy.state.pins else ()) if p.state == "active"
    }
    remembered = policy.state.memory.get(CSMS_HOST)
    assert remembered is not None
    if on_key_change == "reject":
        assert reason(client) == events.PEER_KEY_CHANGED
        assert reason(server).startswith("remote:peer_alert:")
        assert names(log) == [events.PEER_KEY_CHANGED]
        assert log[0].reason == events.PEER_KEY_CHANGED
        assert log[0].ocpp_security_event == events.INVALID_CSMS_CERTIFICATE
        assert remembered.spki_sha256 == spki(CSMS_A) and pinned == {spki(CSMS_A)}
    elif on_key_change == "warn":
        # accepted by the change policy, then refused by the learned pin (warn does not re-pin)
        assert reason(client) == events.PIN_MISMATCH
        assert names(log) == [events.PEER_KEY_CHANGED, events.PIN_MISMATCH]
        assert log[0].severity == "warn" and log[0].reason is None
        assert log[0].ocpp_security_event == events.EVSIM_PEER_KEY_CHANGED
        assert remembered.spki_sha256 == spki(CSMS_A) and pinned == {spki(CSMS_A)}
    else:
        assert (reason(client), reason(server)) == ("ok", "ok")
        assert names(log) == [events.PEER_KEY_CHANGED, events.PIN_RELEASED, events.PIN_ADDED]
        assert remembered.spki_sha256 == spki(CSMS_A_REKEYED) and pinned == {spki(CSMS_A_REKEYED)}


async def test_warn_without_pins_accepts_the_new_key() -> None:
    log: list[PeerEvent] = []
    policy = PeerPolicy(side="client", change=ChangePolicy("warn"), sink=log.append)
    with trio.fail_after(IO_TIMEOUT_S):
        await tls_pair(ca_client(), csms_server(CSMS_A), client_peer=policy)
        client, _ = await tls_pair(ca_client(), csms_server(CSMS_A_REKEYED), client_peer=policy)
    assert reason(client) == "ok"
    assert names(log) == [events.PEER_KEY_CHANGED]
    remembered = policy.state.memory.get(CSMS_HOST)
    assert remembered is not None and remembered.spki_sha256 == spki(CSMS_A_REKEYED)


# ================================================================ trust changes vs open connections


async def _still_talks(a: TlsStream, b: TlsStream) -> None:
    await a.send_all(b"still here")
    assert await b.receive_some() == b"still here"


async def test_unpair_does_not_disturb_an_open_connection_but_refuses_new_ones() -> None:
    log: list[PeerEvent] = []
    server_tls, wallbox = pairing_listener(log)
    wallbox.open_pairing_window(now=NOW)
    hems = hems_client(HEMS)
    with trio.fail_after(IO_TIMEOUT_S):
        client, server = await tls_pair(hems, server_tls, host=SHIP_HOST)
        assert isinstance(client, TlsStream) and isinstance(server, TlsStream)
        old_context = server_tls.new_connection()[0].get_context()
        wallbox.unpair(ski_hex(HEMS), now=NOW)
        assert wallbox.epoch == 1
        assert server_tls.new_connection()[0].get_context() is not old_context  # rebuilt: no old sessions
        await _still_talks(client, server)
        await _still_talks(server, client)
        _, new_server = await tls_pair(hems, server_tls, host=SHIP_HOST)
        assert reason(new_server) == REFUSED_DENIED
        await _still_talks(client, server)
        await client.aclose()
        await server.aclose()


async def test_pin_release_does_not_disturb_an_open_connection_but_refuses_new_ones() -> None:
    log: list[PeerEvent] = []
    policy = PeerPolicy(
        side="client", pins=pins(("leaf", CSMS_A, "active"), ("leaf", CSMS_B, "backup")), sink=log.append
    )
    client_tls = ClientTls.build(PROFILE, CA_TRUST, peer=policy)
    with trio.fail_after(IO_TIMEOUT_S):
        client, server = await tls_pair(client_tls, csms_server(CSMS_A))
        assert isinstance(client, TlsStream) and isinstance(server, TlsStream)
        assert client_tls.new_connection(CSMS_HOST)[0].get_context() is client_tls.context
        policy.release_pin(spki(CSMS_A), now=NOW)
        assert names(log) == [events.PIN_RELEASED] and policy.epoch == 1
        assert client_tls.new_connection(CSMS_HOST)[0].get_context() is not client_tls.context  # rebuilt
        await _still_talks(client, server)
        new_client, _ = await tls_pair(client_tls, csms_server(CSMS_A))
        assert reason(new_client) == events.PIN_MISMATCH
        backup, _ = await tls_pair(client_tls, csms_server(CSMS_B))  # the backup pin still matches
        assert reason(backup) == "ok"
        await _still_talks(server, client)
        await client.aclose()
        await server.aclose()


@PROFILES
async def test_resumed_session_is_rechecked_after_a_pin_release(profile: TlsProfile) -> None:
    """A session resumed after its server's pin was released skips OpenSSL's verification: the policy
    re-checks the session's chain after the handshake and refuses it."""
    log: list[PeerEvent] = []
    policy = PeerPolicy(
        side="client", pins=pins(("leaf", CSMS_A, "active"), ("leaf", CSMS_B, "backup")), sink=log.append
    )
    client_tls = ca_client(profile)
    server_tls = csms_server(CSMS_A, profile)
    with trio.fail_after(IO_TIMEOUT_S):
        first, _ = await tls_pair(client_tls, server_tls, client_peer=policy)
        assert isinstance(first, TlsStream)
        session = first.session
        assert session is not None
        resumed, _ = await _connect_resuming(client_tls, server_tls, session, client_peer=policy)
        assert isinstance(resumed, TlsStream) and resumed.info.session_reused  # resumption works
        policy.release_pin(spki(CSMS_A), now=NOW)
        log.clear()
        refused, _ = await _connect_resuming(client_tls, server_tls, session, client_peer=policy)
    assert reason(refused) == events.PIN_MISMATCH
    assert names(log) == [events.PIN_MISMATCH]


async def _connect_resuming(
    client_tls: ClientTls,
    server_tls: ServerTls,
    session: TlsSession,
    *,
    client_peer: PeerPolicy | None = None,
    server_peer: PeerPolicy | None = None,
) -> tuple[TlsStream | TransportError, TlsStream | TransportError]:
    """One connection offering ``session`` (handshakes only; each side's stream or refusal)."""
    a, b = trio.testing.memory_stream_pair()
    out: dict[str, TlsStream | TransportError] = {}

    async def server_side() -> None:
        try:
            out["server"] = await tls_accept(b, server_tls, verify_time=lambda: NOW, peer=server_peer)
        except (HandshakeFailed, TransportError) as exc:
            out["server"] = exc

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server_side)
        try:
            out["client"] = await tls_connect(
                a, client_tls, CSMS_HOST, verify_time=lambda: NOW, session=session, peer=client_peer
            )
        except (HandshakeFailed, TransportError) as exc:
            out["client"] = exc
    return out["client"], out["server"]


async def test_server_rechecks_a_resumed_session_after_a_pin_release() -> None:
    """Server side: a listener's shared context resumes the station's session, but the policy given at
    accept re-checks the session's client chain and refuses it after its pin was released."""
    log: list[PeerEvent] = []
    policy = PeerPolicy(side="server", pins=pins(("leaf", STATION, "active")), sink=log.append)
    server_tls = ServerTls.build(
        TLS12, Identity.from_cert_key(CSMS_A), TrustStore("stations", (ROOT.cert,)), "required"
    )
    client_tls = ClientTls.build(TLS12, CA_TRUST, Identity.from_cert_key(STATION))
    with trio.fail_after(IO_TIMEOUT_S):
        first, _ = await tls_pair(client_tls, server_tls, server_peer=policy)
        assert isinstance(first, TlsStream) and first.session is not None
        session = first.session
        _, server = await _connect_resuming(client_tls, server_tls, session, server_peer=policy)
        assert isinstance(server, TlsStream) and server.info.session_reused
        policy.release_pin(spki(STATION), now=NOW)
        log.clear()
        _, server = await _connect_resuming(client_tls, server_tls, session, server_peer=policy)
    assert reason(server) == events.PIN_MISMATCH
    assert names(log) == [events.PIN_MISMATCH] and log[0].peer == "CS0001"


# ================================================================ self-signed modes: tofu, time, config


async def test_tofu_learns_the_first_server_and_refuses_another_key() -> None:
    log: list[PeerEvent] = []
    policy = PeerPolicy(side="client", pins=PinSet(tofu=True), sink=log.append)
    client_tls = ClientTls.build(PROFILE, pinned_trust("tofu"), peer=policy)
    with trio.fail_after(IO_TIMEOUT_S):
        first, _ = await tls_pair(client_tls, csms_server(WALLBOX), host=SHIP_HOST)
        again, _ = await tls_pair(client_tls, csms_server(WALLBOX), host=SHIP_HOST)
        other, server = await tls_pair(client_tls, csms_server(STRANGER), host=SHIP_HOST)
    assert [reason(first), reason(again), reason(other)] == ["ok", "ok", events.PIN_MISMATCH]
    assert reason(server).startswith("remote:peer_alert:")
    assert names(log) == [events.PIN_ADDED, events.PIN_MISMATCH]
    assert log[0].spki_sha256 == spki(WALLBOX)


@pytest.mark.parametrize(("time_check", "expected"), [("enforce", events.CERT_EXPIRED), ("off", "ok")])
async def test_pinned_self_signed_validity_is_checked_at_simulation_time(
    time_check: str, expected: str
) -> None:
    policy = PeerPolicy(side="client", pins=pins(("leaf", WALLBOX, "active")))
    trust = TrustStore("ship", (), hostname="off", mode="pinned_peers", time_check=time_check)  # type: ignore[arg-type]
    client_tls = ClientTls.build(PROFILE, trust, peer=policy)
    later = NOW + dt.timedelta(days=3651)  # issue_self_signed: ten years
    with trio.fail_after(IO_TIMEOUT_S):
        client, _ = await tls_pair(client_tls, csms_server(WALLBOX), host=SHIP_HOST, client_time=later)
    assert reason(client) == expected


async def test_pinned_peers_mode_still_refuses_a_self_signed_server_without_a_matching_pin() -> None:
    """The unknown-CA error is only waived for the policy: a self-signed server nobody pinned is refused."""
    policy = PeerPolicy(side="client", pins=pins(("leaf", WALLBOX, "active")))
    client_tls = ClientTls.build(PROFILE, pinned_trust(), peer=policy)
    with trio.fail_after(IO_TIMEOUT_S):
        client, _ = await tls_pair(client_tls, csms_server(STRANGER), host=SHIP_HOST)
    assert reason(client) == events.PIN_MISMATCH


def test_self_signed_modes_refuse_to_build_without_a_deciding_policy() -> None:
    ident = Identity.from_cert_key(WALLBOX)
    report_only = PeerPolicy(side="client", pins=pins(("leaf", WALLBOX, "active"), mode="report_only"))
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: ClientTls.build(PROFILE, pinned_trust()), "peer"),
        (lambda: ClientTls.build(PROFILE, pinned_trust(), peer=report_only), "peer.pins"),
        (lambda: ClientTls.build(PROFILE, pinned_trust("tofu"), peer=PeerPolicy(side="client")), "peer.pins"),
        (lambda: ServerTls.build(PROFILE, ident, client_auth="pairing"), "peer"),
        (
            lambda: ServerTls.build(PROFILE, ident, client_auth="pairing", peer=PeerPolicy(side="server")),
            "peer.pairing",
        ),
        (
            lambda: ServerTls.build(
                PROFILE, ident, client_auth="pairing", peer=PeerPolicy(side="client", pairing=PeerTrust())
            ),
            "peer.side",
        ),
        (
            lambda: ServerTls.build(PROFILE, ident, CA_TRUST, client_auth="pairing"),
            "trust.CSMSRootCertificate.mode",
        ),
        (lambda: ServerTls.build(PROFILE, ident, pinned_trust(), "optional"), "client_auth"),
        (lambda: TrustStore("x", (ROOT.cert,), mode="pinned_peers"), "trust.x.anchors"),
        (lambda: TrustStore("x", (), mode="tofu", insecure_skip_verify=True), "trust.x.insecure_skip_verify"),
        (lambda: TrustStore("x", (), mode="pairs"), "trust.x.mode"),  # type: ignore[arg-type]  # the point
    ]
    for build, path in cases:
        with pytest.raises(ConfigError) as info:
            build()
        assert info.value.path == path, (path, info.value)


async def test_a_connection_policy_is_checked_against_the_context_mode() -> None:
    """``tls_connect(peer=...)`` on a pinned context with a policy that cannot decide: a ConfigError before
    any byte is sent (the transport is never used)."""
    bound = PeerPolicy(side="client", pins=pins(("leaf", WALLBOX, "active")))
    client_tls = ClientTls.build(PROFILE, pinned_trust(), peer=bound)
    a, b = trio.testing.memory_stream_pair()
    with trio.fail_after(IO_TIMEOUT_S), pytest.raises(ConfigError) as info:
        await tls_connect(a, client_tls, SHIP_HOST, peer=PeerPolicy(side="client"))
    assert info.value.path == "peer.pins"
    with trio.fail_after(IO_TIMEOUT_S):
        await a.send_all(b"x")  # the transport is still ours, and no ClientHello went out before
        assert await b.receive_some() == b"x"


# ================================================================ events table


def test_peer_events_map_to_ocpp_security_events_by_side() -> None:
    ocpp = events.peer_event_ocpp
    assert ocpp(events.PIN_MISMATCH, side="client", reason="pin_mismatch") == "InvalidCsmsCertificate"
    assert (
        ocpp(events.PIN_MISMATCH, side="server", reason="pin_mismatch") == "InvalidChargingStationCertificate"
    )
    assert ocpp(events.PEER_KEY_CHANGED, side="server", reason="peer_key_changed") == (
        "InvalidChargingStationCertificate"
    )
    assert ocpp(events.PIN_MISMATCH, side="client", reason=None) == "evsim:PinMismatch"
    assert ocpp(events.PAIRING_REQUESTED, side="server", reason=REFUSED_PENDING) == "evsim:PairingRefused"
    assert ocpp(events.PAIRED, side="server", reason=None) == "ReconfigurationOfSecurityParameters"
    assert ocpp(events.PEER_CERT_CHANGED, side="client", reason=None) is None
    assert ocpp(events.CERT_INVALID, side="server", reason="cert_invalid:not_self_signed") == (
        "InvalidChargingStationCertificate"
    )
    assert set(events.PEER_EVENT_OCPP) <= set(events.PEER_EVENTS)


async def test_expired_pin_is_released_by_expire_pins_and_refuses_new_connections() -> None:
    log: list[PeerEvent] = []
    expiring = Pin("leaf", spki(CSMS_A), "active", NOW + dt.timedelta(days=1))
    policy = PeerPolicy(
        side="client",
        pins=PinSet("enforce", (expiring, Pin("leaf", spki(CSMS_B), "backup"))),
        sink=log.append,
    )
    later = NOW + dt.timedelta(days=2)
    with trio.fail_after(IO_TIMEOUT_S):
        before, _ = await tls_pair(ca_client(), csms_server(CSMS_A), client_peer=policy)
        after, _ = await tls_pair(ca_client(), csms_server(CSMS_A), client_peer=policy, client_time=later)
    assert (reason(before), reason(after)) == ("ok", events.PIN_MISMATCH)  # expired pins never match
    log.clear()
    policy.expire_pins(now=NOW)  # nothing expired yet: no event, same epoch
    assert log == [] and policy.epoch == 0
    policy.expire_pins(now=later)
    assert names(log) == [events.PIN_RELEASED] and log[0].spki_sha256 == spki(CSMS_A) and policy.epoch == 1


async def test_pairing_listener_checks_client_validity_at_simulation_time() -> None:
    """Inside a window, a self-signed client past its validity is still refused (time is checked)."""
    log: list[PeerEvent] = []
    server_tls, wallbox = pairing_listener(log)
    later = NOW + dt.timedelta(days=3651)  # issue_self_signed: ten years
    wallbox.open_pairing_window(now=later)
    client_tls = ClientTls.build(
        PROFILE,
        TrustStore("ship", (), hostname="off", mode="pinned_peers", time_check="off"),
        Identity.from_cert_key(HEMS),
        peer=PeerPolicy(side="client", pins=pins(("leaf", WALLBOX, "active"))),
    )
    with trio.fail_after(IO_TIMEOUT_S):
        client, server = await tls_pair(client_tls, server_tls, host=SHIP_HOST, server_time=later)
    assert reason(server) == events.CERT_EXPIRED
    assert reason(client) == "remote:peer_alert:certificate_expired"  # OpenSSL's own alert this time
    assert log == [] and wallbox.state.pairing is not None and wallbox.state.pairing.peers == ()


async def test_concurrent_handshakes_commit_on_the_current_state() -> None:
    """Two devices pair at the same moment: both are recorded (each commit re-runs its transition on the
    policy's current state instead of writing back the snapshot its connection started from)."""
    log: list[PeerEvent] = []
    server_tls, wallbox = pairing_listener(log)
    wallbox.open_pairing_window(now=NOW)
    results: list[tuple[TlsStream | TransportError, TlsStream | TransportError]] = []

    async def pair(device: CertKey) -> None:
        results.append(await tls_pair(hems_client(device), server_tls, host=SHIP_HOST))

    with trio.fail_after(IO_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pair, HEMS)
            nursery.start_soon(pair, STRANGER)
    assert sorted(reason(s) for _, s in results) == ["ok", "ok"]
    assert names(log) == [events.PAIRED, events.PAIRED]
    trust = wallbox.state.pairing
    assert trust is not None
    assert {p.ski for p in trust.peers if p.state == "trusted"} == {ski_hex(HEMS), ski_hex(STRANGER)}
    stats = wallbox.statistics(now=NOW)
    assert (stats.trusted_peers, stats.pending_requests, stats.events_emitted) == (2, 0, 2)
    assert stats.pairing_window_open and stats.epoch == 0


def test_peer_policy_from_toml() -> None:
    text = f"""
    [pins]
    enforcement = "report_only"
    pins = [{{ target = "intermediate", spki_sha256 = "{spki_sha256(SUB_A.cert).hex()}" }}]
    [pairing]
    pairing_window_s = 30
    peers = [{{ ski = "{ski_hex(HEMS)}", device_id = "HEMS-0001" }}]
    [change]
    on_peer_key_change = "reject"
    """
    policy = PeerPolicy.from_toml(tomllib.loads(text), path="ship.peer", side="server", at=NOW)
    state = policy.state
    assert state.pins is not None and state.pins.enforcement == "report_only"
    assert state.pins.pins[0].target == "intermediate"
    assert state.pairing is not None and state.pairing.pairing_window_s == 30
    assert state.pairing.get(ski_hex(HEMS)) is not None
    assert state.change == ChangePolicy("reject")
    assert policy.name == "ship.peer" and policy.side == "server"
    assert PeerPolicy.from_toml({}, path="p", side="client", at=NOW).state == PeerState()
    for bad, where in [
        ("colour = 1", "p.colour"),
        ('pins = "x"', "p.pins"),
        ('[change]\non_peer_key_change = "shrug"', "p.change.on_peer_key_change"),
        ("[pairing]\npairing_window_s = 0", "p.pairing.pairing_window_s"),
    ]:
        with pytest.raises(ConfigError) as info:
            PeerPolicy.from_toml(tomllib.loads(bad), path="p", side="client", at=NOW)
        assert info.value.path == where, (bad, info.value)
