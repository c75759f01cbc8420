"""evsim.seeded: a seeded random source that is made on its first draw."""

from __future__ import annotations

import random

from evsim.backoff import BackOffSchedule, RetryBackOff
from evsim.seeded import SeededRandom


def test_draws_what_random_random_draws_with_the_same_seed() -> None:
    for seed in ("run-7:CS0001", 42):
        lazy, eager = SeededRandom(seed), random.Random(seed)
        assert [lazy.uniform(0.0, 3.0) for _ in range(5)] == [eager.uniform(0.0, 3.0) for _ in range(5)]
        assert lazy.getrandbits(128) == eager.getrandbits(128)


def test_holds_no_generator_state_until_the_first_draw() -> None:
    lazy = SeededRandom("CS0001")
    assert lazy._rng is None and "drawn" not in repr(lazy)
    BackOffSchedule(RetryBackOff(), lazy)  # a station's back-off holds it without drawing
    assert lazy._rng is None
    lazy.getrandbits(1)
    assert "drawn" in repr(lazy)


def test_back_off_waits_are_the_same_with_either_source() -> None:
    policy = RetryBackOff(wait_minimum=2.0, random_range=5.0, repeat_times=3)
    lazy = BackOffSchedule(policy, SeededRandom("s:CS9"))
    eager = BackOffSchedule(policy, random.Random("s:CS9"))
    assert [lazy.next_wait() for _ in range(6)] == [eager.next_wait() for _ in range(6)]
