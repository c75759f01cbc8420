"""The stack ladder's pure parts (``bench/ladder.py``): medians over rounds, the full stacks taken from the fleet
table of the same run, and the tables' arithmetic. No benchmark runs here."""

from __future__ import annotations

import json

import pytest

from bench.common import Result
from bench.ladder import RowResult, fleet_stacks, from_fleet_result, median_rows, render


def _row(row: str, cpu_s: float, round_trips: int, boot_cpu_s: float, group: str = "") -> RowResult:
    return RowResult(row, 1000, boot_cpu_s, boot_cpu_s, round_trips, cpu_s, 2.0, group)


def test_median_rows_takes_the_middle_round_and_the_spread() -> None:
    runs = [
        _row("trio-tcp", 1.0, 10_000, 0.3),
        _row("trio-tcp", 3.0, 10_000, 0.1),
        _row("trio-tcp", 2.0, 10_000, 0.2),
    ]
    fig = median_rows(runs)
    assert fig["cpu_us_per_rt"] == pytest.approx(200.0)
    assert fig["cpu_us_min"] == pytest.approx(100.0)
    assert fig["cpu_us_max"] == pytest.approx(300.0)
    assert fig["rt_per_s"] == pytest.approx(5000.0)
    assert fig["boot_cpu_s"] == pytest.approx(0.2)
    assert fig["rounds"] == 3
    with pytest.raises(ValueError, match="no runs"):
        median_rows([])


def _fleet_line(names: list[str], key: str = "fleet") -> str:
    raw = [
        Result(name, 4.0, 3000.0, 300.0, 150.0, group="X25519MLKEM768", boot_cpu_s=5.0).to_dict()
        for name in names
    ]
    return json.dumps({"kind": "table", "key": key, "title": "", "columns": [], "rows": [], "raw": raw})


def test_fleet_stacks_are_the_shipped_evsim_row_and_a0_of_the_last_fleet_table() -> None:
    names = [
        "evsim as shipped (gc threshold 50,000: evsim.runtime)",
        "evsim, Python's default gc (as the asyncio peers run)",
        "evsim as shipped, X25519 (the asyncio peers' group)",
        "A0: websockets + hand-written",
        "A: ocpp lib + websockets",
    ]
    lines = [
        _fleet_line(["A0: an older table"]),
        json.dumps({"kind": "problem", "message": "x"}),
        _fleet_line(names),
        _fleet_line(["evsim as shipped (another table)"], key="heartbeat"),
    ]
    found = fleet_stacks(lines)
    assert found["evsim"].name == names[0]
    assert found["A0"].name == names[3]
    assert fleet_stacks([_fleet_line(names, key="floor")]) == {}


def test_a_fleet_row_becomes_a_rung_with_its_rate_and_cpu() -> None:
    fleet = Result("A0: websockets + hand-written", 4.2, 3685.0, 271.0, 706.0, boot_cpu_s=4.25)
    rung = from_fleet_result("A0", fleet, 1000)
    assert rung.cpu_us_per_rt == pytest.approx(271.0, rel=1e-3)
    assert rung.rt_per_s == pytest.approx(3685.0, rel=1e-3)
    assert rung.boot_cpu_s == 4.25
    assert rung.group in ("X25519", "X25519MLKEM768")  # the OpenSSL Python's ssl links decides


def test_render_adds_each_layer_over_the_rung_below_and_holds_it_to_the_targets() -> None:
    runs = {
        "trio-tcp": [_row("trio-tcp", 1.0, 20_000, 0.1)],  # 50 us
        "trio-tls": [_row("trio-tls", 2.0, 20_000, 2.0, "X25519MLKEM768")],  # 100 us
        "asyncio-streams": [_row("asyncio-streams", 0.8, 20_000, 0.2)],  # 40 us
        "A0": [_row("A0", 3.0, 10_000, 4.0, "X25519")],  # 300 us
    }
    steady, boot, targets = render(runs, {"x25519mlkem768": 1.6, "x25519": 1.1})
    tls = next(r for r in steady if "TlsStream" in str(r[1]))
    assert tls[2:5] == ["100", "-", "+50"]
    a0 = next(r for r in steady if "A0" in str(r[1]))
    assert a0[4] == "-"  # the rung below (asyncio + websockets) was not measured
    tls_boot = next(r for r in boot if "TlsStream" in str(r[1]))
    assert tls_boot[2:6] == ["X25519MLKEM768", "2.00", "+1.90", "1.25x"]
    tcp_boot = next(r for r in boot if "TcpStream" in str(r[1]))
    assert tcp_boot[2] == "(X25519MLKEM768)"  # no TLS: held to its runtime's TLS floor
    assert tcp_boot[5] == "0.06x"
    round_trip = {str(r[1]): r for r in targets if str(r[0]).startswith("round trip")}
    assert "allows 200 us" in str(round_trip["+ TLS 1.3 (evsim TlsStream)"][0])
    assert round_trip["+ TLS 1.3 (evsim TlsStream)"][2:] == ["100 us", "50%", "+100 us"]
    storm = {str(r[1]): r for r in targets if str(r[0]).startswith("boot storm")}
    assert storm["+ TLS 1.3 (evsim TlsStream)"][2:] == ["2.00 s", "83%", "+0.40 s"]
