"""Reconnecting to a server: the OCPP back-off and the record of one attempt (sans-IO).

Both are plain values used from below by the OCPP network-profile walk (:mod:`evsim.ocpp.netprofile`) and by
endpoint failover (:mod:`evsim.link.service`), so neither of those imports the other.

OCPP-J 2.0.1 §5.3 / 2.1 §5.4 with the 2025-04 errata (protocol-digest §1.7): the first reconnect waits
``RetryBackOffWaitMinimum + U(0..RetryBackOffRandomRange)`` seconds; each further failed attempt doubles the
previous wait and adds a fresh random part, at most ``RetryBackOffRepeatTimes`` doublings, then the last wait is
kept. A successful connection resets the schedule.
"""

from __future__ import annotations

import attrs

from evsim.errors import ConfigError
from evsim.seeded import RandomSource


@attrs.frozen
class RetryBackOff:
    """The three ``OCPPCommCtrlr.RetryBackOff*`` variables (seconds, seconds, count)."""

    wait_minimum: float = 3.0
    random_range: float = 3.0
    repeat_times: int = 4

    def __attrs_post_init__(self) -> None:
        for name in ("wait_minimum", "random_range", "repeat_times"):
            value = getattr(self, name)
            if not value >= 0:
                raise ConfigError(
                    "RetryBackOff values must be >= 0",
                    path=f"retry_backoff.{name}",
                    value=value,
                    fix="use e.g. 3",
                )


@attrs.define
class BackOffSchedule:
    """Yields successive reconnect waits; ``reset()`` after a successful connection.

    Args:
        policy: the RetryBackOff settings.
        rng: a seeded source (``random.Random``, :class:`~evsim.seeded.SeededRandom`) so virtual runs are
            reproducible.
    """

    policy: RetryBackOff
    rng: RandomSource
    attempt: int = 0
    previous: float | None = None

    def next_wait(self) -> float:
        """The wait before the next reconnect attempt, in seconds."""
        self.attempt += 1
        jitter = self.rng.uniform(0.0, self.policy.random_range)
        if self.previous is None:
            wait = self.policy.wait_minimum + jitter
        elif self.attempt - 1 <= self.policy.repeat_times:
            wait = 2 * self.previous + jitter
        else:
            wait = self.previous
        self.previous = wait
        return wait

    def reset(self) -> None:
        """Back to ``wait_minimum`` (errata 2025-04: reset after a successful connection)."""
        self.attempt = 0
        self.previous = None


@attrs.frozen
class Attempt:
    """One connection attempt, as recorded by a failover walk.

    Attributes:
        endpoint: the name of what was tried (an endpoint, or a configuration slot ``slot<N>``).
        t: trio time the outcome was reported.
        ok: True when the connection was established.
        reason: failure category (:func:`evsim.errors.failure_reason`: ``refused``,
            ``cert_invalid:unknown_ca``, ``timeout``, ``http_401``...); empty on success.
        detail: free text for logs (the exception message); not meant for comparisons.
    """

    endpoint: str
    t: float
    ok: bool
    reason: str = ""
    detail: str = ""
