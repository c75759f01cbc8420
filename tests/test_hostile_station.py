"""The fault catalogue against the charging station: a hostile CSMS (tests/hostile.py :class:`HostileCsms`)
answers and calls one station with hostile values, while another station of the same process talks to an
honest CSMS.

For each fault: the victim's ``run`` task has not raised (it keeps its connection or reconnects with its
back-off), it sends no more than an honest schedule allows (no heartbeat storm: memory and traffic bounded),
the sentinel station is undisturbed (same connection, heartbeats on schedule) and the victim records what
happened: a value out of range is refused (the spec's default used instead) with exactly one ``value_refused``
event naming the field and the CSMS it came from.
"""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing

from evsim.backoff import RetryBackOff
from evsim.errors import TransportError
from evsim.nodes.station import Station
from evsim.nodes.station_model import StationConfig
from evsim.tls import ClientTls, Identity, TlsProfile
from evsim.ws.connection import WebSocket
from tests import hostile
from tests.e2e_harness import PASSWORD, Harness, harness
from tests.pki_fixtures import TEST_NOW

EVIL_HOST = "evil-csms.evsim.test"
WINDOW = 900.0  # seconds of virtual time each fault runs
HEARTBEAT = 60  # the honest CSMS's interval

Behaviour = Callable[[WebSocket, Any], Awaitable[None]]
BUDGET = [0]  # messages the fake CSMS still answers in the current test (a storm exhausts it)


def _station(h: Harness, station_id: str, host: str) -> Station:
    return Station(
        StationConfig(
            station_id=station_id,
            csms_url=f"wss://{host}/ocpp",
            password=PASSWORD,
            sessions=1,
            session_start_s=(1.0, 5.0),
            session_duration_s=120.0,
            meter_interval_s=30.0,
            backoff=RetryBackOff(wait_minimum=5, random_range=2, repeat_times=3),
        ),
        network=h.net,
        client_tls=ClientTls.build(TlsProfile(), h.pki.csms_trust()),
        clock=h.clock,
        recorder=h.recorder,
        rng=random.Random(station_id),
    )


def _boot(response: dict[str, Any], then: Behaviour | None = None) -> Behaviour:
    async def behave(ws: WebSocket, clock: Any) -> None:
        await hostile.answer_boot(ws, clock, response)
        if then is not None:
            await trio.sleep(1)  # after the station has taken the boot answer in
            await then(ws, clock)
        await hostile.answer_everything(ws, clock, budget=BUDGET)

    return behave


def _accepted(then: Behaviour) -> Behaviour:
    return _boot({"interval": HEARTBEAT, "status": "Accepted"}, then)


def _sends(*texts: str) -> Behaviour:
    async def behave(ws: WebSocket, clock: Any) -> None:
        for text in texts:
            await ws.send_text(text)

    return behave


def _calls(action: str, payload: dict[str, Any], n: int = 1) -> Behaviour:
    return _sends(*(hostile.call_frame(f"h{i}", action, payload) for i in range(n)))


def _set_variable(component: str, variable: str, value: str) -> Behaviour:
    item = {"attributeValue": value, "component": {"name": component}, "variable": {"name": variable}}
    return _calls("SetVariables", {"setVariableData": [item]})


async def _reset_now(ws: WebSocket, clock: Any) -> None:
    await hostile.reset(ws._stream)


async def _close_now(ws: WebSocket, clock: Any) -> None:
    await ws.aclose(1011, "go away")


async def _never_answer(ws: WebSocket, clock: Any) -> None:
    while True:
        await ws.receive_text()


FAULTS: list[Any] = [
    pytest.param(
        "boot_pending_interval_negative",
        _boot({"interval": -1, "status": "Pending"}),
        id="boot_pending_interval_negative",
    ),
    pytest.param(
        "boot_accepted_interval_negative",
        _boot({"interval": -1, "status": "Accepted"}),
        id="boot_accepted_interval_negative",
    ),
    pytest.param(
        "boot_rejected_interval_negative",
        _boot({"interval": -1, "status": "Rejected"}),
        id="boot_rejected_interval_negative",
    ),
    pytest.param("boot_interval_zero", _boot({"interval": 0, "status": "Accepted"}), id="boot_interval_zero"),
    pytest.param(
        "boot_interval_huge", _boot({"interval": 2**31 - 1, "status": "Pending"}), id="boot_interval_huge"
    ),
    pytest.param(
        "set_heartbeat_interval_negative",
        _accepted(_set_variable("OCPPCommCtrlr", "HeartbeatInterval", "-5")),
        id="set_heartbeat_interval_negative",
    ),
    pytest.param(
        "set_heartbeat_interval_zero",
        _accepted(_set_variable("OCPPCommCtrlr", "HeartbeatInterval", "0")),
        id="set_heartbeat_interval_zero",
    ),
    pytest.param(
        "set_heartbeat_interval_huge",
        _accepted(_set_variable("OCPPCommCtrlr", "HeartbeatInterval", "99999999999999999999")),
        id="set_heartbeat_interval_huge",
    ),
    pytest.param(
        "set_backoff_negative",
        _accepted(_set_variable("OCPPCommCtrlr", "RetryBackOffWaitMinimum", "-1")),
        id="set_backoff_negative",
    ),
    pytest.param(
        "garbage_frames",
        _accepted(_sends("not JSON", "[]", "[9,9,9]", json.dumps([3, "nobody", {}]), "[" * 30_000)),
        id="garbage_frames",
    ),
    pytest.param(
        "call_flood",
        _accepted(_calls("TriggerMessage", {"requestedMessage": "Heartbeat"}, 300)),
        id="call_flood",
    ),
    pytest.param(
        "unknown_actions",
        _accepted(_sends(*(hostile.call_frame(f"u{i}", f"Nope{i}", {}) for i in range(50)))),
        id="unknown_actions",
    ),
    pytest.param(
        "get_variables_huge",
        _accepted(
            _calls(
                "GetVariables",
                {"getVariableData": [{"component": {"name": "X" * 50}, "variable": {"name": "Y"}}] * 500},
            )
        ),
        id="get_variables_huge",
    ),
    pytest.param("huge_message", _accepted(_sends("[" * 70_000)), id="huge_message"),
    pytest.param("reset_after_boot", _accepted(_reset_now), id="reset_after_boot"),
    pytest.param("close_before_boot", _close_now, id="close_before_boot"),
    pytest.param("never_answers", _never_answer, id="never_answers"),
    pytest.param(
        "boot_answer_wrong_id",
        _sends(
            json.dumps(
                [
                    3,
                    "not-your-id",
                    {"currentTime": "2030-06-01T12:00:00Z", "interval": 1, "status": "Accepted"},
                ]
            )
        ),
        id="boot_answer_wrong_id",
    ),
]


REFUSED_FIELD: dict[str, str] = {
    "boot_pending_interval_negative": "BootNotificationResponse.interval",
    "boot_accepted_interval_negative": "HeartbeatInterval",
    "boot_rejected_interval_negative": "BootNotificationResponse.interval",
    "boot_interval_zero": "HeartbeatInterval",
    "boot_interval_huge": "BootNotificationResponse.interval",
    "set_heartbeat_interval_negative": "HeartbeatInterval",
    "set_heartbeat_interval_zero": "HeartbeatInterval",
    "set_heartbeat_interval_huge": "HeartbeatInterval",
}
"""The faults that send an out-of-range number the station acts on, and the field its event names."""


@pytest.mark.parametrize(("name", "behaviour"), FAULTS)
async def test_station_survives_a_hostile_csms(
    autojump_clock: trio.testing.MockClock, name: str, behaviour: Behaviour
) -> None:
    async with harness() as h:
        await h.start_csms()
        sentinel = h.start_station("ST-SENTINEL", sessions=0)
        with trio.fail_after(600):
            await sentinel.wait_online()

        BUDGET[0] = 2000

        async def script(ws: WebSocket, sid: str) -> None:
            if BUDGET[0] <= 0:
                await ws.aclose(1008, "message budget exhausted")
                return
            with contextlib.suppress(TransportError):
                await behaviour(ws, h.clock)

        cert = h.pki.root.issue_server(EVIL_HOST, now=TEST_NOW)
        fake = hostile.HostileCsms(h.net, EVIL_HOST, 443, Identity.from_cert_key(cert), h.clock, script)
        await h.nursery.start(fake.serve)
        victim = _station(h, "VICTIM", EVIL_HOST)
        node = hostile.Supervised("VICTIM")
        beats_before = h.csms.stations["ST-SENTINEL"].heartbeats
        h.nursery.start_soon(node.run, victim.run)
        with trio.fail_after(WINDOW + 60):
            await trio.sleep(WINDOW)

        assert node.alive, f"the station's run task ended: {node.error!r}"
        # no storm: at most one message a second over the window (an honest schedule is far below)
        sent = sum(victim.messages_sent.values())
        assert sent <= WINDOW, dict(victim.messages_sent)
        assert len(victim.queue) <= victim.config.queue_max
        assert fake.connections.get("VICTIM", 0) <= WINDOW / 5  # reconnects follow the back-off
        # the sentinel station never noticed
        assert sentinel.session is not None and sentinel.connects_ok == 1
        beats = h.csms.stations["ST-SENTINEL"].heartbeats - beats_before
        assert WINDOW / HEARTBEAT - 2 <= beats <= WINDOW / HEARTBEAT + 1
        # an out-of-range value is refused once, naming the field and the CSMS that sent it
        refused = [e for e in h.recorder.events if e.node == "VICTIM" and e.kind == "value_refused"]
        if name in REFUSED_FIELD:
            assert len(refused) == 1, [e.data for e in refused]
            assert refused[0].data["field"] == REFUSED_FIELD[name]
            assert refused[0].data["peer"] == EVIL_HOST
        else:
            assert not refused, [e.data for e in refused]
