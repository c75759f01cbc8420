"""What a hostile peer can do to the CSMS log: escaping, one line per refusal with time and peer, -q / -v levels."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import urllib.parse

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from evsim.cli import build_parser
from evsim.commands import event_log_level, serve_csms
from evsim.errors import TransportError, UpgradeRejected
from evsim.net.virtual import VirtualNetwork
from evsim.nodes.csms import CsmsConfig
from evsim.recorder import Event, EventPrinter, event_level, format_event
from evsim.text import ELLIPSIS, escape
from evsim.tls import ClientTls, ServerTls, TlsProfile, tls_connect
from evsim.ws import WebSocket, ws_client
from evsim.ws.auth import basic_auth_header
from tests.e2e_harness import PASSWORD, harness
from tests.pki_fixtures import CSMS_HOST, TEST_NOW, make_test_pki

HOSTILE = "ST\r\nFAKE [    0.000] INFO  csms booted\x00\x1b[2J\x1b]0;owned\x07\u202e\ud800\U0001f600\\x41"

# ---------------------------------------------------------------- the escaping function


def _unescape(text: str) -> str:
    """The inverse of :func:`escape` on uncut output (for the injectivity property)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        kind = text[i + 1]
        if kind == "\\":
            out.append("\\")
            i += 2
            continue
        width = {"x": 2, "u": 4, "U": 8}[kind]
        out.append(chr(int(text[i + 2 : i + 2 + width], 16)))
        i += 2 + width
    return "".join(out)


def _printable_ascii(text: str) -> bool:
    return all(0x20 <= ord(ch) < 0x7F for ch in text)


@given(st.text(), st.integers(min_value=0, max_value=300))
def test_escape_is_printable_ascii_and_bounded(text: str, limit: int) -> None:
    out = escape(text, limit)
    assert _printable_ascii(out)
    assert len(out) <= max(limit, len(ELLIPSIS))


@given(st.text(max_size=40))
def test_escape_is_injective_below_the_limit(text: str) -> None:
    out = escape(text, 10_000)
    assert _unescape(out) == text


@given(st.text(), st.text())
def test_distinct_texts_stay_distinct(a: str, b: str) -> None:
    if a != b and len(escape(a, 10_000)) <= 200 and len(escape(b, 10_000)) <= 200:
        assert escape(a) != escape(b)


def test_every_control_character_has_its_own_escape() -> None:
    controls = [chr(c) for c in [*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029, 0x202E, 0xFEFF]]
    escaped = [escape(c) for c in controls]
    assert len(set(escaped)) == len(controls)
    assert all(_printable_ascii(e) and e.startswith("\\") for e in escaped)
    assert escape("\\x0a") != escape("\n")  # a backslash typed by the peer is not an escape


def test_escape_cuts_between_escapes_with_an_ellipsis() -> None:
    out = escape("a" * 5 + "\x00" * 100, limit=20)
    assert out.endswith(ELLIPSIS) and len(out) <= 20
    assert re.fullmatch(r"a{5}(\\x00)*\.\.\.", out)
    assert escape("plain station id ST-0001") == "plain station id ST-0001"


# ---------------------------------------------------------------- log lines


def test_a_log_line_for_hostile_fields_holds_no_control_character() -> None:
    ev = Event(
        t=3.25,
        node="csms",
        seq=0,
        kind="upgrade_rejected",
        data={
            "peer": "10.0.0.7:50312",
            "station": HOSTILE,
            "path": "/ocpp/" + HOSTILE,
            "reason": "Close frame: " + HOSTILE,
            "status": 401,
        },
    )
    line = format_event(ev, TEST_NOW)
    assert _printable_ascii(line), line
    assert line.startswith(
        "2030-06-01T12:00:03.250Z [     3.250] WARN  csms upgrade_rejected peer=10.0.0.7:50312 "
    )
    assert 'station="ST\\x0d\\x0aFAKE [    0.000] INFO  csms booted\\x00\\x1b[2J' in line
    assert "\\\\x41" in line  # the peer's own backslash is doubled
    assert len(line) < 1000  # each value is capped


def test_unknown_event_kinds_get_a_sane_level() -> None:
    assert event_level("handshake_failed") == logging.WARNING
    assert event_level("connection_limit") == logging.WARNING
    assert event_level("accept_failed") == logging.WARNING
    assert event_level("some_new_connection_step") == logging.INFO
    assert event_level("tx_event") == logging.DEBUG


# ---------------------------------------------------------------- evsim csms, in process on the in-memory network

_LINE = re.compile(
    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \[ *\d+\.\d{3}\] (WARN |INFO |DEBUG) csms (\S+) (.*)"
)


async def _start_csms(nursery: trio.Nursery, net: VirtualNetwork, flags: list[str]) -> list[str]:
    """``evsim csms`` (its serve function, with the level its command line asks for) on ``net``."""
    args = build_parser().parse_args(["csms", *flags])
    lines = _Lines()
    printer = EventPrinter(level=event_log_level(args), write=lines.write)
    pki = make_test_pki(TEST_NOW)
    config = CsmsConfig(host=CSMS_HOST, port=443, security_profile=2, default_password=PASSWORD)
    server_tls = ServerTls.build(TlsProfile(), pki.server_identity())
    await nursery.start(
        lambda task_status: serve_csms(
            config, network=net, server_tls=server_tls, printer=printer, task_status=task_status
        )
    )
    return lines


async def _tls(net: VirtualNetwork, source: str) -> trio.abc.Stream:
    stream: trio.abc.Stream = await net.connect(CSMS_HOST, 443, source=source)
    client_tls = ClientTls.build(TlsProfile(), make_test_pki(TEST_NOW).csms_trust())
    return await tls_connect(stream, client_tls, CSMS_HOST, verify_time=lambda: TEST_NOW)


async def _station(net: VirtualNetwork, source: str, station_id: str) -> WebSocket:
    return await ws_client(
        await _tls(net, source),
        host=CSMS_HOST,
        path="/ocpp/" + urllib.parse.quote(station_id, safe=""),  # hostile ids too: no client-side check
        subprotocols=["ocpp2.0.1"],
        headers=[basic_auth_header(station_id, PASSWORD)],
    )


async def _boot(ws: WebSocket) -> None:
    boot = {"chargingStation": {"model": "m", "vendorName": "v"}, "reason": "PowerUp"}
    await ws.send_text(json.dumps([2, "b1", "BootNotification", boot]))
    answer = json.loads(await ws.receive_text())
    assert answer[0] == 3 and answer[2]["status"] == "Accepted"


class _Lines(list[str]):
    """The printed lines; :meth:`until` waits for one holding a text."""

    def __init__(self) -> None:
        super().__init__()
        self._lot = trio.lowlevel.ParkingLot()

    def write(self, line: str) -> None:
        self.append(line)
        self._lot.unpark_all()

    async def until(self, needle: str) -> None:
        while not any(needle in line for line in self):
            await self._lot.park()


async def _until(lines: list[str], needle: str) -> None:
    assert isinstance(lines, _Lines)
    await lines.until(needle)


def _of(lines: list[str], peer_host: str) -> list[str]:
    return [line for line in lines if f"peer={peer_host}:" in line]


async def _malformed_request(net: VirtualNetwork, source: str) -> bytes:
    """Send an upgrade request h11 cannot parse; return what the CSMS answered."""
    stream = await _tls(net, source)
    await stream.send_all(b"GET /ocpp/ST-9 HTTP/1.1\r\nHost: x\r\nbad header line\x00\r\n\r\n")
    answer = b""
    with contextlib.suppress(TransportError, trio.BrokenResourceError):
        while chunk := await stream.receive_some():
            answer += chunk
    return answer


@pytest.mark.parametrize("flags", [[], ["-q"], ["-v"]])
async def test_csms_logs_one_line_per_refusal_and_the_life_of_a_station(
    autojump_clock: trio.testing.MockClock, flags: list[str]
) -> None:
    net = VirtualNetwork()
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            lines = await _start_csms(nursery, net, flags)

            # a malformed HTTP upgrade request over TLS: a refusal, not a lost link
            assert (await _malformed_request(net, "badhttp")).startswith(b"HTTP/1.1 400 ")
            await _until(lines, "peer=badhttp:")
            # plain HTTP on the TLS port
            raw = await net.connect(CSMS_HOST, 443, source="plain")
            await raw.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            await _until(lines, "handshake_failed")

            # an honest station: connect, boot, leave with a Close frame whose reason is hostile
            ws = await _station(net, "honest", "ST-0001")
            await _boot(ws)
            await ws.aclose(1000, "bye\r\n\x1b[2J")
            if flags != ["-q"]:
                await _until(lines, "station_disconnected")
            else:
                await trio.sleep(5)
            nursery.cancel_scope.cancel()

    assert all(_printable_ascii(line) for line in lines), lines
    for line in lines:
        assert _LINE.fullmatch(line), line

    bad = _of(lines, "badhttp")
    warn = [line for line in bad if " WARN  " in line]
    assert len(warn) == 1, bad
    assert "upgrade_rejected" in warn[0] and "reason=bad_http_request" in warn[0]
    assert "detail=" in warn[0]  # the parser's words
    plain = [line for line in _of(lines, "plain") if " WARN  " in line]
    assert len(plain) == 1 and "handshake_failed" in plain[0] and "reason=" in plain[0], plain

    honest = _of(lines, "honest")
    kinds = [_LINE.fullmatch(line).group(2) for line in honest]  # type: ignore[union-attr]
    if flags == ["-q"]:
        assert honest == []
        assert len(bad) == 1 and len(_of(lines, "plain")) == 1  # -q: the refusals only
        return
    assert kinds[:5] == [
        "connection_opened",
        "tls_accepted",
        "station_connected",
        "booted",
        "station_disconnected",
    ] or (
        flags == ["-v"]
        and [k for k in kinds if k != "message"]
        == [
            "connection_opened",
            "tls_accepted",
            "station_connected",
            "booted",
            "station_disconnected",
        ]
    )
    assert all("station=ST-0001" in line for line in honest[2:])
    assert "reason=ws_closed_1000" in honest[-1]
    assert "bye\\x0d\\x0a\\x1b[2J" in honest[-1]
    if flags == ["-v"]:
        assert any(" message " in line and "action=BootNotification" in line for line in honest)
    else:
        assert not any(" message " in line for line in honest)


async def test_hostile_identity_never_reaches_the_log_raw(autojump_clock: trio.testing.MockClock) -> None:
    net = VirtualNetwork()
    hostile = "ST\r\n\x1b[31mFAKE\x00"
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            lines = await _start_csms(nursery, net, ["-v"])
            try:
                ws = await _station(net, "evil", hostile)
            except UpgradeRejected:
                pass  # refused at the upgrade is as good as accepted here: either is logged
            else:
                await ws.aclose(4000, hostile)
            await _until(lines, "peer=evil:")
            await trio.sleep(5)
            nursery.cancel_scope.cancel()
    evil = _of(lines, "evil")
    assert evil and all(_printable_ascii(line) for line in lines), lines
    # the identity is refused at the upgrade (not an identifierString); its path is logged as it came, encoded
    assert any("status=404" in line and "ST%0D%0A%1B%5B31mFAKE%00" in line for line in evil), evil


# ---------------------------------------------------------------- peer addresses on listener events

_LISTENER_KINDS = {
    "connection_opened",
    "tls_accepted",
    "handshake_failed",
    "upgrade_rejected",
    "station_connected",
    "booted",
    "station_disconnected",
    "connection_lost",
}


async def test_csms_and_controller_listener_events_carry_the_peer_address(
    autojump_clock: trio.testing.MockClock,
) -> None:
    from tests.test_controller import LC_HOST, start_controller

    async with harness() as h:
        await h.start_csms()
        await start_controller(h)
        relayed = h.start_station("ST-1", host=LC_HOST, sessions=0)
        direct = h.start_station("ST-2", sessions=0)
        h.start_station("ST-3", sessions=0, password="not-the-password-0123")
        with trio.fail_after(600):
            await relayed.wait_online()
            await direct.wait_online()
            await trio.sleep(30)  # virtual time: ST-3 has been refused by then
    listener_events = [
        e for e in h.recorder.events if e.node in ("csms", "LC-1") and e.kind in _LISTENER_KINDS
    ]
    assert {e.kind for e in listener_events} >= {"connection_opened", "tls_accepted", "station_connected"}
    for e in listener_events:
        assert re.fullmatch(r"[^:]+:[0-9]+", e.data.get("peer", "")), e
    by = {(e.node, e.kind, e.data.get("station")): e.data["peer"] for e in listener_events}
    assert by["LC-1", "station_connected", "ST-1"].startswith("ST-1:")
    assert by["csms", "station_connected", "ST-2"].startswith("ST-2:")
    assert by["csms", "upgrade_rejected", "ST-3"].startswith("ST-3:")
    assert not by["csms", "station_connected", "ST-1"].startswith("ST-1:")  # the controller's own link
