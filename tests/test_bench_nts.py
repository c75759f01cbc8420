"""Smoke test for the NTS benchmark (``bench/nts.py``): its table's shape, never timings."""

from __future__ import annotations

from bench.nts import render

EVSIM = {"ke_per_s": 400.0, "ke_server_us": 1000.0, "ntp_per_s": 6000.0, "ntp_server_us": 100.0}


def test_ratios_against_chrony() -> None:
    chrony = {"ke_per_s": 500.0, "ke_server_us": 400.0, "ntp_per_s": 5000.0, "ntp_server_us": 25.0}
    text = render(EVSIM, chrony)
    assert "0.80x" in text and "2.50x" in text  # NTS-KE rate and server CPU
    assert "1.20x" in text and "4.00x" in text  # NTP


def test_a_missing_chronyd_is_said_and_the_evsim_rows_stay() -> None:
    text = render(EVSIM, "chronyd is not installed (Debian package chrony): no chrony figures")
    assert "! chronyd is not installed" in text
    assert "400" in text and "6,000" in text
