"""Captures of virtual runs opened with tshark: decrypted with no options (the secrets are in the file).

tshark is a Debian package (``.ci/run`` installs it when missing); without it these tests are skipped.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import trio

import evsim.world
from evsim.cli import main
from evsim.world import Route, Tls, open_world
from tests.test_scenarios import REAL_TCP

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("tshark") is None, reason="tshark is not installed (.ci/run installs it)"
    ),
]

SCENARIO = """
[simulation]
description = "two stations and one downgrade attempt, captured"
seed = 4
duration = "2m"

[tls.profiles.tls13_only]
versions = ["1.3"]

[csms.main]
tls_profile = "tls13_only"
heartbeat_interval = "60s"

[stations.bay]
count = 2
id_pattern = "PCAP-{n:02d}"
csms = "main"
sessions = 1
session_duration = "30s"
session_start = ["5s", "10s"]

[[timeline]]
at = "40s"
action = "attack_downgrade"
target = "main"
count = 1
versions = ["1.2"]
"""


def tshark(capture: Path, display_filter: str, *fields: str) -> list[list[str]]:
    """Rows of ``fields`` of the frames matching ``display_filter`` (tshark with default settings)."""
    args = ["tshark", "-r", str(capture), "-Y", display_filter, "-T", "fields", "-E", "separator=/t"]
    for field in fields:
        args += ["-e", field]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=True)
    return [line.split("\t") for line in done.stdout.splitlines()]


def run_captured(tmp_path: Path, text: str) -> Path:
    """``evsim run --pcap`` on scenario ``text``; the capture's path."""
    scenario = tmp_path / "captured.toml"
    scenario.write_text(text)
    pcap = tmp_path / "run.pcapng"
    assert (
        main(["run", str(scenario), "--out", str(tmp_path), "--no-live", "--no-plots", "--pcap", str(pcap)])
        == 0
    )
    return pcap


def _undecrypted_or_broken(capture: Path) -> list[list[str]]:
    """Frames tshark could not decrypt, or whose TCP it finds inconsistent (lost or out-of-order segments)."""
    return tshark(
        capture,
        "(tls.app_data && !http && !websocket) || tcp.analysis.lost_segment || tcp.analysis.ack_lost_segment"
        " || tcp.analysis.retransmission || tcp.analysis.out_of_order || tcp.checksum.status == 0",
        "frame.number",
    )


def test_run_pcap_decrypts_boot_notification_and_shows_the_downgrade_alert(tmp_path: Path) -> None:
    pcap = run_captured(tmp_path, SCENARIO)
    boots = tshark(
        pcap, 'websocket.payload.text contains "BootNotification"', "ip.src", "websocket.payload.text"
    )
    assert len(boots) == 2
    texts = [text for _, text in boots]
    assert any('"serialNumber":"PCAP-02"' in text for text in texts)
    # the TLS 1.3-only CSMS refuses the TLS 1.2 offer with a protocol_version alert (RFC 8446 §6.2, code 70)
    alerts = tshark(pcap, "tls.alert_message.desc == 70", "frame.time_relative")
    assert len(alerts) == 1
    assert float(alerts[0][0]) == pytest.approx(40.0)  # the timeline's virtual time
    assert _undecrypted_or_broken(pcap) == []
    # the Name Resolution Block names the hosts
    named = subprocess.run(
        [
            "tshark",
            "-r",
            str(pcap),
            "-N",
            "n",
            "-Y",
            "tls.alert_message.desc == 70",
            "-T",
            "fields",
            "-e",
            "ip.src_host",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert named.stdout.split() == ["main.evsim.test"]


def test_world_capture_through_a_controller_with_permessage_deflate(tmp_path: Path) -> None:
    """The controller's upstream link compresses (permessage-deflate): tshark inflates it from the handshake."""
    pcap = tmp_path / "world.pcapng"

    async def scenario() -> None:
        with trio.fail_after(3600):
            async with open_world(seed=2, pcap=pcap) as world:
                main_csms = await world.start_csms("main", tls=Tls(), heartbeat_interval=60)
                await world.start_controller("site", upstream=[main_csms])
                fleet = await world.start_stations(
                    1, routes=[Route(to="site")], id_pattern="HOP-{n}", sessions=1, session_duration=30
                )
                await fleet.done()

    evsim.world.run(scenario)
    rows = tshark(
        pcap,
        'websocket.payload.text contains "BootNotification" && websocket.payload.text contains "HOP-1"',
        "ip.src_host",
        "websocket.rsv",
    )
    assert len(rows) == 2  # station -> controller, controller -> CSMS
    assert {rsv for _, rsv in rows} == {"0x00", "0x04"}  # the upstream hop was compressed (RSV1)
    assert _undecrypted_or_broken(pcap) == []


@pytest.mark.loopback
def test_loopback_tcp_run_is_captured_from_the_client_ends(tmp_path: Path) -> None:
    """A real-clock run over loopback TCP (bounded by its 30 s duration): each connection once, decrypted."""
    pcap = run_captured(tmp_path, REAL_TCP)
    boots = tshark(pcap, 'websocket.payload.text contains "BootNotification"', "websocket.payload.text")
    assert len(boots) == 3
    assert any('"serialNumber":"TCP-02"' in row[0] for row in boots)
    syns = tshark(pcap, "tcp.flags.syn == 1 && tcp.flags.ack == 0", "tcp.dstport")
    assert len(syns) == 3  # one connection per station, captured once (at the client end)
    assert _undecrypted_or_broken(pcap) == []
