"""Out-of-range numbers from a peer: the bounds table (sans-IO), a station against a CSMS that answers with
hostile intervals, a CSMS against a station that sends hostile seqNos, ids and meter values (in memory, virtual
time), and the CSMS's transaction bookkeeping cost per event.

Every node must survive, refuse the value the way OCPP says (CALLERROR, Rejected with a reasonCode, or a
fallback for a CALLRESULT value), record one ``value_refused`` event, and leave the other sessions alone.
"""

from __future__ import annotations

import pickle
import random
from typing import Any

import hypothesis.strategies as st
import pytest
import trio
import trio.testing
from hypothesis import given

from evsim.backoff import RetryBackOff
from evsim.clock import SimClock
from evsim.errors import CallErrorReceived
from evsim.link.slots import NetworkProfiles, NetworkSlot
from evsim.net.virtual import VirtualNetwork
from evsim.nodes.csms import Csms, CsmsConfig
from evsim.nodes.csms_records import InputLog, StationConnection, StationRecord
from evsim.nodes.station import Station
from evsim.nodes.station_model import StationConfig
from evsim.ocpp.netprofile import NetworkConnectionProfile, NetworkSettings, ProfileRejected
from evsim.recorder import Recorder
from evsim.tls import ClientTls, ServerTls, TlsProfile
from tests.e2e_harness import PASSWORD, Harness, harness
from tests.pki_fixtures import CSMS_HOST, TEST_NOW

# ---------------------------------------------------------------- the bounds table (sans-IO)


def test_bounds_table_names_every_field_with_a_sane_range() -> None:
    from evsim.ocpp import limits

    assert set(limits.BOUNDS) >= {
        "HeartbeatInterval",
        "BootNotificationResponse.interval",
        "NetworkProfileConnectionAttempts",
        "RetryBackOffWaitMinimum",
        "RetryBackOffRandomRange",
        "RetryBackOffRepeatTimes",
        "NetworkConnectionProfile.messageTimeout",
        "TransactionEvent.seqNo",
        "evseId",
        "connectorId",
        "SampledValue.value",
        "Energy.Active.Import.Register",
    }
    for name, bound in limits.BOUNDS.items():
        assert bound.name == name
        assert bound.low <= bound.high
    assert limits.HEARTBEAT_INTERVAL.low >= 1  # never a flood
    assert limits.BOOT_RETRY_INTERVAL.low == 0  # 0: the station chooses (B02.FR.07)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (-1, "ValueTooLow"),
        (0, "ValueTooLow"),
        (86_401, "ValueTooHigh"),
        (2**64, "ValueTooHigh"),
        pytest.param(10**400, "ValueTooHigh", id="10**400"),
        (1.7e308, "ValueTooHigh"),
        (float("inf"), "InvalidValue"),
        (float("nan"), "InvalidValue"),
        (True, "InvalidValue"),
        ("60", "InvalidValue"),
        (None, "InvalidValue"),
        (2.5, "InvalidValue"),
    ],
)
def test_bound_check_refuses(value: object, reason: str) -> None:
    from evsim.ocpp.limits import HEARTBEAT_INTERVAL, OutOfRange

    with pytest.raises(OutOfRange) as info:
        HEARTBEAT_INTERVAL.check(value)
    assert info.value.reason_code == reason
    assert info.value.error_code == "PropertyConstraintViolation"
    assert info.value.field == "HeartbeatInterval"
    assert len(info.value.shown) <= 40  # a huge integer is described, never printed whole
    used, refused = HEARTBEAT_INTERVAL.usable(value, 300.0)
    assert (used, type(refused)) == (300.0, OutOfRange)


def test_bound_check_and_parse_accept() -> None:
    from evsim.ocpp.limits import HEARTBEAT_INTERVAL, SAMPLED_VALUE

    assert HEARTBEAT_INTERVAL.check(60) == 60
    assert HEARTBEAT_INTERVAL.check(60.0) == 60 and type(HEARTBEAT_INTERVAL.check(60.0)) is int
    assert SAMPLED_VALUE.check(-12.5) == -12.5
    assert HEARTBEAT_INTERVAL.parse(" 86400 ") == 86_400
    assert HEARTBEAT_INTERVAL.usable(1, 300.0) == (1, None)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("-1", "ValueTooLow"),
        ("86401", "ValueTooHigh"),
        pytest.param("9" * 400, "InvalidValue", id="400-digits"),
        ("1e3", "InvalidValue"),
    ],
)
def test_bound_parse_refuses(text: str, reason: str) -> None:
    from evsim.ocpp.limits import HEARTBEAT_INTERVAL, OutOfRange

    with pytest.raises(OutOfRange) as info:
        HEARTBEAT_INTERVAL.parse(text)
    assert info.value.reason_code == reason


def _profiles() -> NetworkProfiles:
    slot = NetworkSlot(0, NetworkConnectionProfile("wss://csms.evsim.test/ocpp", 2))
    return NetworkProfiles([slot], NetworkSettings(), random.Random(1))


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        pytest.param("random_range", "9" * 400, id="random_range-400-digits"),  # old: OverflowError later
        ("wait_minimum", "100000000"),
        ("repeat_times", "5000"),  # doublings to an infinite wait
    ],
)
def test_retry_backoff_values_have_an_upper_bound(variable: str, value: str) -> None:
    p = _profiles()
    with pytest.raises(ProfileRejected) as info:
        p.set_backoff(**{variable: value})
    assert info.value.reason_code in ("ValueTooHigh", "InvalidValue")
    assert p.backoff.policy == RetryBackOff()  # unchanged
    assert 0 <= p.backoff.next_wait() < 1e6


def test_connection_attempts_and_message_timeout_have_an_upper_bound() -> None:
    p = _profiles()
    with pytest.raises(ProfileRejected):
        p.set_connection_attempts(str(2**62))
    data = {
        "ocppVersion": "OCPP20",
        "ocppTransport": "JSON",
        "ocppCsmsUrl": "wss://other.evsim.test/ocpp",
        "messageTimeout": 2**40,
        "securityProfile": 2,
        "ocppInterface": "Wired0",
    }
    with pytest.raises(ProfileRejected) as info:
        NetworkConnectionProfile.from_ocpp(data)
    assert info.value.reason_code == "InvalidNetworkConf"
    assert NetworkConnectionProfile.from_ocpp({**data, "messageTimeout": 30}).message_timeout == 30


# ---------------------------------------------------------------- seqNo runs (sans-IO)


@given(st.lists(st.integers(min_value=0, max_value=40), max_size=120))
def test_seqnos_match_a_set_of_seen_numbers(seqs: list[int]) -> None:
    from evsim.ocpp.seqno import SeqNos

    tracker = SeqNos(max_runs=1000)  # never merges here: exactly a set
    seen: set[int] = set()
    for seq in seqs:
        assert tracker.add(seq) == (seq not in seen)
        seen.add(seq)
        assert all((n in tracker) == (n in seen) for n in range(42))
    assert tracker.count == len(seen)
    assert tracker.gap_free() == (seen == set(range(len(seen))))


def test_seqnos_memory_is_bounded() -> None:
    from evsim.ocpp.seqno import SeqNos

    honest = SeqNos()
    for seq in range(100_000):
        assert honest.add(seq)
    assert honest.runs == ((0, 100_000),) and honest.gap_free()
    assert not honest.add(99_999) and not honest.add(0)  # retries are duplicates
    hostile = SeqNos(max_runs=8)
    for seq in range(0, 2000, 2):  # every other number: one run each
        hostile.add(seq)
    assert len(hostile.runs) == 8 and hostile.count == 1000 and hostile.forgotten > 0
    assert not hostile.gap_free()
    big = SeqNos()
    assert big.add(2**31 - 1) and big.add(10**12)  # a large number is one run, nothing allocated per value
    assert big.runs == ((2**31 - 1, 2**31), (10**12, 10**12 + 1))


# ---------------------------------------------------------------- a station against a hostile CSMS


class FakeCsms(Csms):
    """A CSMS whose BootNotificationResponse status and interval a test chooses per station and boot.

    Heartbeats beyond ``heartbeat_limit`` per station (a flood) cancel the run so the test fails rather than
    spins: a flood never lets virtual time advance.
    """

    def __init__(self, *args: Any, boot: Any, heartbeat_limit: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.boot = boot
        self.heartbeat_limit = heartbeat_limit
        self.flooded: set[str] = set()
        self.boot_calls: dict[str, int] = {}
        self.cancel_on_flood: trio.CancelScope | None = None

    async def _on_boot(
        self, rec: StationRecord, conn: StationConnection, payload: dict[str, Any], now: str
    ) -> dict[str, Any]:
        n = self.boot_calls[rec.station_id] = self.boot_calls.get(rec.station_id, 0) + 1
        status, interval = self.boot(rec.station_id, n)
        if status == "Accepted":
            rec.boots += 1
            rec.accepted = conn.accepted = True
        return {"currentTime": now, "interval": interval, "status": status}

    def _answer_call(
        self, rec: StationRecord, conn: StationConnection, action: str, payload: dict[str, Any]
    ) -> dict[str, Any]:
        if action == "Heartbeat" and rec.heartbeats >= self.heartbeat_limit:
            self.flooded.add(rec.station_id)
            if self.cancel_on_flood is not None:
                self.cancel_on_flood.cancel()
        return super()._answer_call(rec, conn, action, payload)


async def _start_fake(h: Harness, boot: Any, heartbeat_limit: int = 50) -> FakeCsms:
    csms = FakeCsms(
        CsmsConfig(host=CSMS_HOST, port=443, security_profile=2, default_password=PASSWORD),
        network=h.net,
        server_tls=ServerTls.build(TlsProfile(), h.pki.server_identity()),
        clock=h.clock,
        recorder=h.recorder,
        boot=boot,
        heartbeat_limit=heartbeat_limit,
    )
    csms.cancel_on_flood = h.nursery.cancel_scope
    await h.nursery.start(csms.run)
    h.csms_nodes.append(csms)
    return csms


def _refusals(h: Harness, node: str) -> list[dict[str, Any]]:
    return [e.data for e in h.events("value_refused", node)]


async def test_pending_with_negative_interval_retries_after_the_fallback(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Old code: ``trio.sleep(-1)`` raised ValueError out of the station (and the run)."""

    def boot(_station: str, n: int) -> tuple[str, int]:
        return ("Pending", -1) if n <= 2 else ("Accepted", 60)

    async with harness() as h:
        await _start_fake(h, boot)
        station = h.start_station("ST-1")
        with trio.fail_after(3600):
            await station.done.wait()
        pending = h.events("boot_pending", "ST-1")
        assert [e.data["retry_in"] for e in pending] == [300.0, 300.0]  # default_heartbeat_s, not -1
        refusals = _refusals(h, "ST-1")
        assert len(refusals) == 2  # one event per unusable value
        assert refusals[0]["field"] == "BootNotificationResponse.interval"
        assert refusals[0]["value"] == "-1" and refusals[0]["reason"] == "ValueTooLow"
        assert refusals[0]["peer"] == CSMS_HOST
        assert station.heartbeat_s == 60


async def test_pending_with_zero_interval_lets_the_station_choose(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def boot(_station: str, n: int) -> tuple[str, int]:
        return ("Pending", 0) if n == 1 else ("Accepted", 60)

    async with harness() as h:
        await _start_fake(h, boot)
        station = h.start_station("ST-1", sessions=0)
        with trio.fail_after(3600):
            await station.wait_online()
        assert [e.data["retry_in"] for e in h.events("boot_pending", "ST-1")] == [300.0]
        assert not _refusals(h, "ST-1")  # 0 is valid (B02.FR.07): nothing refused


@pytest.mark.parametrize("interval", [-1, 0, 2**40])
async def test_accepted_with_unusable_interval_keeps_the_default(
    autojump_clock: trio.testing.MockClock, interval: int
) -> None:
    """Old code: -1 sent Heartbeats back to back (a flood); 2**40 never sent one."""
    finished = False
    async with harness() as h:
        csms = await _start_fake(h, lambda _s, _n: ("Accepted", interval))
        station = h.start_station("ST-1", sessions=0)
        with trio.fail_after(3600):
            await station.wait_online()
            await trio.sleep(700)
        finished = True
    assert not csms.flooded and finished  # a flood cancels the run
    assert station.heartbeat_s == 300.0
    assert 2 <= csms.stations["ST-1"].heartbeats <= 3  # every 300 s of 700
    (refusal,) = _refusals(h, "ST-1")
    assert refusal["field"] == "HeartbeatInterval" and refusal["action"] == "BootNotification"


async def test_pending_with_huge_interval_is_not_a_life_sentence(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def boot(_station: str, n: int) -> tuple[str, int]:
        return ("Pending", 10**12) if n == 1 else ("Accepted", 60)

    async with harness() as h:
        await _start_fake(h, boot)
        station = h.start_station("ST-1", sessions=0)
        with trio.fail_after(3600):
            await station.wait_online()
        assert trio.current_time() < 400
        (refusal,) = _refusals(h, "ST-1")
        assert refusal["reason"] == "ValueTooHigh"


async def test_one_hostile_answer_does_not_take_down_nine_other_stations(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Old code: the ValueError from ``trio.sleep(-1)`` of one station ended every station of the run."""

    def boot(station: str, _n: int) -> tuple[str, int]:
        return ("Pending", -1) if station == "ST-evil" else ("Accepted", 60)

    async with harness() as h:
        csms = await _start_fake(h, boot)
        evil = h.start_station("ST-evil")
        honest = [h.start_station(f"ST-{i}") for i in range(9)]
        with trio.fail_after(3600):
            for s in honest:
                await s.done.wait()
            await trio.sleep(700)
        assert not evil.booted
        assert csms.boot_calls["ST-evil"] >= 3  # still alive and retrying, every 300 s
        assert {e.node for e in h.events("value_refused")} == {"ST-evil"}
        stats = csms.statistics()
        assert stats.transactions_started == stats.transactions_ended == 9
        assert all(csms.stations[s.name].transactions for s in honest)


async def test_set_variables_out_of_range_is_rejected_with_a_reason(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Old code: HeartbeatInterval -1 was Accepted (a flood), 400 digits raised OverflowError (InternalError),
    RetryBackOffRandomRange of 400 digits was Accepted and crashed the station at its next reconnect."""
    async with harness() as h:
        csms = await h.start_csms()
        station = h.start_station("ST-1", sessions=0)
        with trio.fail_after(600):
            await station.wait_online()
            results = await csms.set_variables(
                "ST-1",
                {
                    ("OCPPCommCtrlr", "HeartbeatInterval"): "-1",
                    ("OCPPCommCtrlr", "RetryBackOffRandomRange"): "9" * 400,
                },
            )
            heartbeat, backoff = results
            assert heartbeat["attributeStatus"] == "Rejected"
            assert heartbeat["attributeStatusInfo"]["reasonCode"] == "ValueTooLow"
            assert backoff["attributeStatus"] == "Rejected"
            assert backoff["attributeStatusInfo"]["reasonCode"] == "InvalidValue"
            (huge,) = await csms.set_variables("ST-1", {("OCPPCommCtrlr", "HeartbeatInterval"): "9" * 400})
            assert huge["attributeStatus"] == "Rejected"
            assert station.heartbeat_s == 60
            (ok,) = await csms.set_variables("ST-1", {("OCPPCommCtrlr", "HeartbeatInterval"): "120"})
            assert ok["attributeStatus"] == "Accepted" and station.heartbeat_s == 120
        refusals = _refusals(h, "ST-1")
        assert [r["field"] for r in refusals] == ["HeartbeatInterval", "HeartbeatInterval"]
        rejected = [e.data for e in h.events("network_variable_set", "ST-1")]
        assert rejected[0]["status"] == "Rejected" and rejected[0]["reason"] == "InvalidValue"


async def test_set_network_profile_with_huge_message_timeout_is_rejected(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with harness() as h:
        csms = await h.start_csms()
        station = h.start_station("ST-1", sessions=0)
        profile = NetworkConnectionProfile("wss://csms.evsim.test/ocpp", 2).to_ocpp()
        with trio.fail_after(600):
            await station.wait_online()
            answer = await csms.set_network_profile("ST-1", 1, {**profile, "messageTimeout": 2**31 - 1})
        assert answer["status"] == "Rejected"
        assert answer["statusInfo"]["reasonCode"] == "InvalidNetworkConf"


# ---------------------------------------------------------------- a CSMS against a hostile station


def _tx_event(tx_id: str, seq: object, *, energy: object = 100.0, evse: int = 1) -> dict[str, Any]:
    return {
        "eventType": "Updated",
        "timestamp": "2030-01-01T00:00:00Z",
        "triggerReason": "MeterValuePeriodic",
        "seqNo": seq,
        "transactionInfo": {"transactionId": tx_id},
        "evse": {"id": evse, "connectorId": 1},
        "meterValue": [
            {
                "timestamp": "2030-01-01T00:00:00Z",
                "sampledValue": [{"value": energy, "measurand": "Energy.Active.Import.Register"}],
            }
        ],
    }


def _status(evse: int, connector: int) -> dict[str, Any]:
    return {
        "timestamp": "2030-01-01T00:00:00Z",
        "connectorStatus": "Available",
        "evseId": evse,
        "connectorId": connector,
    }


async def _refused_with(station: Station, action: str, payload: dict[str, Any]) -> str:
    assert station.session is not None
    with pytest.raises(CallErrorReceived) as info:
        await station.session.call(action, payload)
    return info.value.error_code


async def test_csms_refuses_out_of_range_numbers_and_serves_an_honest_station(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Old code accepted all of these: seqNo 10**12 and -1, evseId -5, an energy register of 1e300 Wh."""
    async with harness() as h:
        csms = await h.start_csms()
        hostile = h.start_station("ST-evil", sessions=0)
        honest = h.start_station("ST-good")
        with trio.fail_after(3600):
            await hostile.wait_online()
            for payload in (
                _tx_event("tx-evil", 10**12),
                _tx_event("tx-evil", -1),
                _tx_event("tx-evil", 2**63),
                _tx_event("tx-evil", 0, evse=-5),
                _tx_event("tx-evil", 0, energy=1e300),
                _tx_event("tx-evil", 0, energy=-5.0),
            ):
                assert (
                    await _refused_with(hostile, "TransactionEvent", payload) == "PropertyConstraintViolation"
                )
            for evse, connector in ((-1, 1), (1, -1), (10**6, 1), (1, 2**40)):
                code = await _refused_with(hostile, "StatusNotification", _status(evse, connector))
                assert code == "PropertyConstraintViolation"
            await honest.done.wait()
        rec = csms.stations["ST-evil"]
        assert not rec.transactions  # nothing recorded of a refused event
        assert all(e >= 0 and c >= 0 for e, c in rec.connectors)
        refusals = _refusals(h, "csms")
        assert len(refusals) == 10 and {r["station"] for r in refusals} == {"ST-evil"}
        assert {r["field"] for r in refusals} >= {"TransactionEvent.seqNo", "evseId", "connectorId"}
        (tx,) = csms.stations["ST-good"].transactions.values()
        assert tx.gap_free() and tx.ended and 0 < tx.energy_wh < 1e6
        assert honest.queue.statistics().delivered_total > 0


async def test_station_records_are_bounded(autojump_clock: trio.testing.MockClock) -> None:
    """Old code kept every connector pair and every transaction a station ever named."""
    # evsim.nodes.csms_records.MAX_CONNECTORS, MAX_TRANSACTIONS_KEPT
    max_connectors, max_transactions = 64, 100
    async with harness() as h:
        csms = await h.start_csms()
        hostile = h.start_station("ST-evil", sessions=0)
        with trio.fail_after(3600):
            await hostile.wait_online()
            assert hostile.session is not None
            codes = []
            for i in range(max_connectors + 10):
                try:
                    await hostile.session.call("StatusNotification", _status(1 + i // 10, i % 10))
                except CallErrorReceived as exc:
                    codes.append(exc.error_code)
            assert codes == ["OccurrenceConstraintViolation"] * 10
            for i in range(max_transactions * 3):
                started = _tx_event(f"tx-{i}", 0)
                started["eventType"] = "Started"
                await hostile.session.call("TransactionEvent", started)
        rec = csms.stations["ST-evil"]
        assert len(rec.connectors) == max_connectors
        assert len(rec.transactions) == max_transactions
        assert csms.statistics().transactions_started == max_transactions * 3  # counts are kept
        assert rec.tx_events() == max_transactions * 3
        from evsim.nodes.csms_records import MAX_CONNECTORS, MAX_TRANSACTIONS_KEPT

        assert (max_connectors, max_transactions) == (MAX_CONNECTORS, MAX_TRANSACTIONS_KEPT)


async def test_record_of_a_station_never_accepted_is_dropped(autojump_clock: trio.testing.MockClock) -> None:
    """Old code kept a record for every identity that ever connected."""
    second_boot = trio.Event()

    def boot(_station: str, n: int) -> tuple[str, int]:
        if n >= 2:
            second_boot.set()
        return ("Rejected", 60)

    async with harness() as h:
        csms = await _start_fake(h, boot)
        station = Station(
            StationConfig(
                station_id="ST-drifter", csms_url=f"wss://{CSMS_HOST}/ocpp", password=PASSWORD, sessions=0
            ),
            network=h.net,
            client_tls=ClientTls.build(TlsProfile(), h.pki.csms_trust()),
            clock=h.clock,
            recorder=h.recorder,
            rng=random.Random(1),
        )
        with trio.fail_after(600):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(station.run)
                await second_boot.wait()
                assert "ST-drifter" in csms.stations
                nursery.cancel_scope.cancel()
            await trio.sleep(5)
        assert "ST-drifter" not in csms.stations
        assert csms.statistics().messages["BootNotification"] == 2  # still counted


# ---------------------------------------------------------------- bookkeeping cost per event


class _CountingInt(int):
    """An int that counts the comparisons made with it (the CSMS's work per seqNo)."""

    comparisons = 0

    def __eq__(self, other: object) -> bool:
        _CountingInt.comparisons += 1
        return int(self) == other

    def __lt__(self, other: int) -> bool:
        _CountingInt.comparisons += 1
        return int(self) < other

    def __gt__(self, other: int) -> bool:
        _CountingInt.comparisons += 1
        return int(self) > other

    __hash__ = int.__hash__


async def test_transaction_bookkeeping_cost_per_event_does_not_grow() -> None:
    """Old code: ``seq in list`` plus a sort per event; work and record size grew with the transaction."""
    recorder = Recorder(SimClock.start(TEST_NOW))
    csms = Csms(
        CsmsConfig(security_profile=1, insecure_allow_plain_ws=True),
        network=VirtualNetwork(),
        server_tls=None,
        clock=SimClock.start(TEST_NOW),
        recorder=recorder,
    )
    rec = StationRecord(station_id="ST-long")
    inputs = InputLog(recorder, "csms", "ST-long")
    sizes: dict[int, int] = {}
    work: dict[int, int] = {}
    for seq in range(6000):
        before = _CountingInt.comparisons
        csms._on_transaction_event(rec, _tx_event("tx-long", _CountingInt(seq), energy=float(seq)), inputs)
        work[seq] = _CountingInt.comparisons - before
        if seq in (999, 5999):
            sizes[seq] = len(pickle.dumps(rec.transactions["tx-long"]))
    assert work[5999] <= work[999] + 2 and work[5999] < 20
    assert sizes[5999] <= sizes[999] + 8  # a few bytes more for larger ints, not one entry per event
    (tx,) = rec.transactions.values()
    assert tx.events == 6000 and tx.gap_free() and tx.energy_wh == 5999.0
    csms._on_transaction_event(rec, _tx_event("tx-long", 17), inputs)  # a resent event
    assert tx.duplicates == 1 and tx.events == 6000
