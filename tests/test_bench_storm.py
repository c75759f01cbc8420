"""The storm bench's log reading and the handshake floor's key-exchange group (bench/storm.py, bench/floor.py)."""

from __future__ import annotations

from bench.floor import handshake_floor, stdlib_floor
from bench.storm import parse_log

LOG = [
    "2026-12-06T21:41:17.001Z [     0.500] WARN  ST-0002 handshake_failed reason=timeout detail=x",
    "2026-12-06T21:41:17.002Z [     1.250] INFO  ST-0001 booted interval=300.0 status=Accepted",
    "2026-12-06T21:41:17.003Z [     2.000] INFO  ST-0002 booted interval=300.0 status=Accepted",
    "2026-12-06T21:41:17.004Z [     3.000] INFO  ST-0001 booted interval=300.0 status=Accepted",
    "2026-12-06T21:41:17.005Z [     4.000] WARN  ST-0001 connection_lost reason=eof detail=after boot",
    "not an event line",
]


def test_connect_time_is_the_first_boot_and_failures_count_only_before_it() -> None:
    got = parse_log(LOG)
    assert got["booted"] == {"ST-0001": 1.25, "ST-0002": 2.0}
    assert got["failures"] == {"handshake_failed": 1}  # the loss after ST-0001 booted is not a set-up failure
    assert got["events"] == 5


def test_the_floor_is_measured_with_the_group_asked_for() -> None:
    """The engine's default group (X25519MLKEM768 on OpenSSL 3.5+) and X25519 give different floors; each
    result names the group it negotiated, so a fleet is compared with the floor of its own group."""
    default = handshake_floor(3, stations=10, warmup=1)
    x25519 = handshake_floor(3, stations=10, warmup=1, group="X25519")
    assert str(x25519["group"]).lower() == "x25519"
    assert default["group"] != x25519["group"]


CSMS_LOG = [
    "2026-12-06T21:41:17.001Z [     0.500] INFO  csms booted station=ST-0001",
    "2026-12-06T21:41:17.002Z [     0.900] WARN  csms handshake_failed peer=127.0.0.1:1 reason=eof detail=x",
    "2026-12-06T21:41:17.003Z [     1.000] WARN  csms connection_lost peer=127.0.0.1:2 reason=eof detail=x",
]


def test_the_csms_log_counts_every_failure() -> None:
    """The CSMS logs every connection as one node: a failure after its first ``booted`` event is still one."""
    assert parse_log(CSMS_LOG, server=True)["failures"] == {"handshake_failed": 1, "connection_lost": 1}


def test_the_python_ssl_floor_negotiates_tls13() -> None:
    got = stdlib_floor(2, stations=10, warmup=1)
    assert got["cpu_ms_per_handshake"] > 0
    assert got["storm_floor_s"] > 0
