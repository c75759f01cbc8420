"""Smoke tests for the memory benchmark (``bench/memory.py``): its probes and table shape, never figures."""

from __future__ import annotations

import sys

import pytest

from bench import memory
from evsim.clock import real_utcnow
from evsim.pki import init_dev_pki


def test_pymalloc_probe_sees_small_objects() -> None:
    before = memory._pymalloc_bytes()
    keep = [object() for _ in range(20_000)]  # 16 bytes each in pymalloc's small-object arenas
    grown = memory._pymalloc_bytes() - before
    assert len(keep) == 20_000
    assert grown >= 20_000 * 16 * 0.9


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")
def test_heap_probe_reads_the_brk_heap() -> None:
    assert memory._heap_rss_kib() > 0


def test_tls_pairs_steps_and_table(tmp_path: object) -> None:
    pki = init_dev_pki(str(tmp_path), host="localhost", now=real_utcnow())
    result = memory.run_variant("tls-x25519", 3, pki)
    assert result["kept"] == 3 and result["failures"] == 0
    assert [k for k, _ in memory.TLS_STEPS] == list(result["steps"])
    fleet = dict.fromkeys(("rss_kib", "c_heap_kib", "c_free_resident_kib", "python_kib", "connect_s"), 100.0)
    text = memory.render(
        [
            ("shipped", {**fleet, "objects_kib": 10.0, "failures": 0}),
            ("x25519", {**fleet, "rss_kib": 80.0, "objects_kib": 10.0, "failures": 0}),
            ("tls-x25519", result),
        ],
        3,
    )
    assert " -20 " in text  # the saving of a variant row, against shipped
    assert "after the handshake" in text  # the TLS pair's steps table
