"""Smoke tests for the TLS handshake benchmark (``bench/tls_handshake.py``): shape only, never timings."""

from __future__ import annotations

import math

import pytest

from bench.common import load_note
from bench.tls_handshake import ROWS, RowSpec, Section, measure_row, render


def test_rows_cover_the_matrix() -> None:
    assert len(ROWS) == len(set(ROWS)) == 20  # 1.3: 2 keys x 2 auth x 2 modes; 1.2: 2 x 2 x 3 modes
    assert {r.mode for r in ROWS if r.version == "1.3"} == {"full", "resumed ticket"}
    assert {r.mode for r in ROWS if r.version == "1.2"} == {"full", "resumed id", "resumed ticket"}


@pytest.mark.parametrize(
    "spec",
    [
        RowSpec("1.3", "ecdsa", "mutual", "resumed ticket"),
        RowSpec("1.2", "ecdsa", "server-only", "resumed id"),
    ],
    ids=["tls13-mutual-ticket", "tls12-id"],
)
def test_measure_row_shape(spec: RowSpec) -> None:
    # measure_row checks in warm-up that both the floor and evsim negotiate the version and resume.
    row = measure_row(spec, n=2, rounds=2)
    assert (row.version, row.keys, row.auth, row.mode, row.handshakes) == (*vars(spec).values(), 2)
    figures = [
        row.floor_client_us,
        row.floor_server_us,
        row.evsim_us,
        row.evsim_client_us,
        row.evsim_server_us,
    ]
    assert all(math.isfinite(f) and f > 0 for f in figures)
    assert math.isclose(row.evsim_client_us + row.evsim_server_us + row.evsim_loop_us, row.evsim_us)
    data = row.to_dict()
    assert {"floor_us", "overhead_pct", "client_overhead_pct", "server_overhead_pct"} <= data.keys()
    text = render(Section([row], wall_s=1.0, cpu_s=1.0, n=2, rounds=2))
    assert "overhead client / server / total" in text and "loaded machine" not in text


def test_load_note() -> None:
    assert load_note(1.0, 1.0) is None
    note = load_note(10.0, 4.0)
    assert note is not None and "loaded machine" in note


def test_section_cli_rejects_unknown_section(capsys: pytest.CaptureFixture[str]) -> None:
    from bench.__main__ import SECTIONS, main

    assert "tls-handshake" in SECTIONS
    assert main(["no-such-section"]) == 2
    assert "tls-handshake" in capsys.readouterr().err
