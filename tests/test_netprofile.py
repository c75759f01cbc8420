"""Sans-IO network profiles: slots, NetworkConfigurationPriority walk, fallback, downgrade rule, B09/B10 changes."""

from __future__ import annotations

import random

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from evsim.backoff import BackOffSchedule, RetryBackOff
from evsim.errors import ConfigError
from evsim.link.slots import NetworkProfiles, NetworkSlot
from evsim.ocpp import netprofile
from evsim.ocpp.netprofile import (
    FallbackPolicy,
    NetworkConnectionProfile,
    NetworkSettings,
    ProfileRejected,
    downgrade_allowed,
)

FIXED = RetryBackOff(wait_minimum=10, random_range=0, repeat_times=2)  # waits 10, 20, 40, 40...


def slot(n: int, sp: int = 2, host: str | None = None) -> NetworkSlot:
    scheme = "ws" if sp == 1 else "wss"
    return NetworkSlot(n, NetworkConnectionProfile(f"{scheme}://{host or f'csms{n}.evsim.test'}/ocpp", sp))


def profiles(
    slots: list[NetworkSlot],
    *,
    attempts: int = 2,
    fallback: FallbackPolicy = "restart_list",
    priority: tuple[int, ...] | None = None,
    security_profile: int | None = None,
    allow_downgrade: bool = False,
    backoff: RetryBackOff = FIXED,
) -> NetworkProfiles:
    settings = NetworkSettings(
        priority=priority,
        connection_attempts=attempts,
        backoff=backoff,
        fallback=fallback,
        allow_security_downgrade=allow_downgrade,
    )
    return NetworkProfiles(slots, settings, random.Random(0), security_profile=security_profile)


def fail_n(p: NetworkProfiles, n: int, now: float = 0.0) -> list[tuple[int, float]]:
    """Fail ``n`` attempts in a row; returns (slot tried, wait planned after it)."""
    out = []
    for _ in range(n):
        s, _ = p.next_attempt(now)
        p.report(s, False, "refused", now)
        _, wait = p.next_attempt(now)
        out.append((s.slot, wait))
    return out


def connect(p: NetworkProfiles, now: float = 0.0) -> NetworkSlot:
    s, _ = p.next_attempt(now)
    p.report(s, True, "", now)
    return s


def test_restart_list_walks_priority_with_attempts_and_backoff() -> None:
    p = profiles([slot(0), slot(1), slot(2)], attempts=2, fallback="restart_list")
    # B10.FR.03: 2 attempts per entry; same slot waits the back-off, next entry at once, a failed pass
    # waits the next back-off value; B10.FR.08: then the list starts again at the first entry
    assert fail_n(p, 8) == [(0, 10), (0, 0), (1, 20), (1, 0), (2, 40), (2, 40), (0, 40), (0, 0)]
    assert [a.endpoint for a in p.log] == [
        "slot0",
        "slot0",
        "slot1",
        "slot1",
        "slot2",
        "slot2",
        "slot0",
        "slot0",
    ]
    assert all(a.reason == "refused" for a in p.log)


def test_the_log_keeps_the_last_log_size_attempts() -> None:
    settings = NetworkSettings(priority=(0, 1), connection_attempts=1, backoff=FIXED)
    p = NetworkProfiles([slot(0), slot(1)], settings, random.Random(0), log_size=3)
    tried = [f"slot{n}" for n, _ in fail_n(p, 4)]
    s = connect(p, 5.0)
    assert [(a.endpoint, a.ok, a.t) for a in p.log] == [
        (tried[2], False, 0.0),
        (tried[3], False, 0.0),
        (s.name, True, 5.0),
    ]


def test_fallback_decides_where_the_walk_goes_after_a_loss_and_after_a_failed_pass() -> None:
    def lost_on_slot_1(fallback: FallbackPolicy) -> NetworkProfiles:
        p = profiles([slot(0), slot(1), slot(2)], attempts=1, fallback=fallback)
        fail_n(p, 1)  # slot 0 is down
        assert connect(p).slot == 1
        assert p.connection_lost(0.0) == 10  # reconnect waits RetryBackOffWaitMinimum (+ 0 jitter)
        return p

    # restart_list (B10.FR.08): from the top of the list, after a loss and after every failed pass
    assert fail_n(lost_on_slot_1("restart_list"), 6) == [(0, 0), (1, 0), (2, 20), (0, 0), (1, 0), (2, 40)]
    # last_working (B10.FR.07): the last working slot first, around the list, and back to it after a failed pass
    assert fail_n(lost_on_slot_1("last_working"), 6) == [(1, 0), (2, 0), (0, 20), (1, 0), (2, 0), (0, 40)]


def test_single_slot_draws_exactly_the_original_backoff() -> None:
    """One slot = the station's original loop: every failure and every loss waits the next back-off value."""
    backoff = RetryBackOff(wait_minimum=3, random_range=3, repeat_times=4)
    outcomes = [False, False, True, False, False, False, True, False, True, True, False]
    p = profiles([slot(0)], attempts=3, backoff=backoff)
    ref = BackOffSchedule(backoff, random.Random(0))
    for ok in outcomes:
        s, _ = p.next_attempt(0.0)
        if ok:
            p.report(s, True, "", 0.0)
            ref.reset()
            assert p.connection_lost(0.0) == ref.next_wait()
        else:
            p.report(s, False, "timeout", 0.0)
            assert p.next_attempt(0.0)[1] == ref.next_wait()


def test_never_downgrade_skips_and_reports() -> None:
    p = profiles([slot(0, 3), slot(1, 2), slot(2, 1, host="plain")], security_profile=3)
    assert p.order == (0,)
    assert {(s.slot, s.reason) for s in p.skipped} == {(1, "NoSecurityDowngrade"), (2, "NoSecurityDowngrade")}
    allowed = profiles(
        [slot(0, 3), slot(1, 2), slot(2, 1, host="plain")], security_profile=3, allow_downgrade=True
    )
    assert allowed.order == (0, 1)  # 3 -> 2 allowed by AllowSecurityProfileDowngrade, never -> 1 (B09.FR.31)
    assert downgrade_allowed(2, 3, allow_downgrade=False)
    assert not downgrade_allowed(2, 1, allow_downgrade=True)


def test_connecting_at_a_higher_profile_raises_the_bar() -> None:
    p = profiles([slot(0, 2), slot(1, 3)], attempts=1)
    fail_n(p, 1)
    assert connect(p).slot == 1
    assert p.security_profile == 3
    # A05.FR.06: the lower slots are gone, from the slots and from NetworkConfigurationPriority
    assert p.take_upgrade() == netprofile.ProfileUpgrade(2, 3, (0,))
    assert p.take_upgrade() is None
    assert set(p.slots) == {1} and p.priority == (1,)
    assert p.variables()["NetworkConfigurationPriority"] == "1"
    p.connection_lost(0.0)
    assert p.order == (1,) and p.skipped == ()
    with pytest.raises(ProfileRejected) as exc:
        p.set_network_profile(0, NetworkConnectionProfile("wss://csms0.evsim.test/ocpp", 2))
    assert exc.value.reason_code == "NoSecurityDowngrade"


def _refuse(sp: int) -> None:
    raise ProfileRejected("NoClientCertificate", f"no certificate for {sp}")


def test_upgrade_check_guards_the_priority_and_listed_slots() -> None:
    """A05.FR.02/03: a new priority (or a listed slot rewritten) that would raise the profile is refused by
    the station's check, and nothing changes; the same at the active profile is not checked."""
    p = profiles([slot(0, 2), slot(1, 2)])
    up = NetworkConnectionProfile("wss://csms3.evsim.test/ocpp", 3)
    p.set_network_profile(2, up, upgrade_check=_refuse)  # not listed: stored, not yet an upgrade
    with pytest.raises(ProfileRejected) as exc:
        p.set_priority("2,0", upgrade_check=_refuse)
    assert exc.value.reason_code == "NoClientCertificate"
    assert p.variables()["NetworkConfigurationPriority"] == "0,1"
    p.set_priority("1,0", upgrade_check=_refuse)  # same profile: no check
    with pytest.raises(ProfileRejected):
        p.set_network_profile(1, up, upgrade_check=_refuse)  # listed slot rewritten to profile 3
    seen: list[int] = []
    p.set_priority("2,0,1", upgrade_check=seen.append)
    assert seen == [3]


def test_a_failing_upgrade_falls_back_to_the_old_profile() -> None:
    p = profiles([slot(0, 2)], attempts=1)
    connect(p)
    p.set_network_profile(1, NetworkConnectionProfile("wss://csms3.evsim.test/ocpp", 3))
    p.set_priority("1,0")
    p.connection_lost(0.0)
    assert p.current.slot == 1
    fail_n(p, 1)
    assert p.current.slot == 0  # the profile 3 slot failed: the walk goes on to the old slot
    connect(p)
    assert p.security_profile == 2 and p.take_upgrade() is None and set(p.slots) == {0, 1}


def test_must_boot_after_reboot_and_slot_switch_only() -> None:
    p = profiles([slot(0), slot(1)], attempts=1)
    s0 = p.current
    assert p.must_boot(s0)  # B01.FR.03: first connection after boot
    connect(p)
    p.connection_lost(0.0)
    assert not p.must_boot(p.current)  # same slot again
    fail_n(p, 1)
    assert p.current.slot == 1 and p.must_boot(p.current)  # B10.FR.10
    connect(p)
    assert p.switches == 1 and p.active_slot == 1


def test_set_network_profile_rules() -> None:
    p = profiles([slot(0, 2), slot(1, 2)])
    good = NetworkConnectionProfile("wss://csms3.evsim.test/ocpp", 2)
    with pytest.raises(ProfileRejected) as exc:
        p.set_network_profile(9, good)
    assert exc.value.reason_code == "InvalidConfSlot"  # B09.FR.05
    with pytest.raises(ProfileRejected) as exc:
        p.set_network_profile(2, NetworkConnectionProfile("ws://csms3.evsim.test/ocpp", 1))
    assert exc.value.reason_code == "NoSecurityDowngrade"  # B09.FR.04/31
    with pytest.raises(ProfileRejected) as exc:
        NetworkConnectionProfile.from_ocpp(
            {
                "ocppCsmsUrl": "https://x/ocpp",
                "securityProfile": 2,
                "messageTimeout": 30,
                "ocppInterface": "Wired0",
            }
        )
    assert exc.value.reason_code == "InvalidNetworkConf"  # B09.FR.02
    with pytest.raises(ProfileRejected):
        NetworkConnectionProfile("ws://csms3.evsim.test/ocpp", 2)  # profile 2 needs wss
    p.set_network_profile(2, good)
    assert 2 not in p.slots and p.pending  # stored, effective at the next reconnect
    p.set_priority("2,0")
    assert p.variables()["NetworkConfigurationPriority"] == "2,0"
    assert p.order == (0, 1)
    connect(p)
    p.connection_lost(0.0)
    assert p.order == (2, 0) and p.current.slot == 2  # the first entry of the new list
    assert not bool(p.pending)  # (bool(): mypy keeps p.pending narrowed to True from above)
    assert p.current.profile == good
    round_trip = NetworkConnectionProfile.from_ocpp(good.to_ocpp())
    assert round_trip == good


@pytest.mark.parametrize("value", ["", "0,0", "0,7", "a,b", "1;0"])
def test_set_priority_rejects_invalid(value: str) -> None:
    p = profiles([slot(0), slot(1)])
    with pytest.raises(ProfileRejected):
        p.set_priority(value)  # B10.FR.02
    assert p.variables()["NetworkConfigurationPriority"] == "0,1"


def test_set_attempts_and_backoff() -> None:
    p = profiles([slot(0), slot(1)], attempts=1)
    p.set_connection_attempts("2")
    p.set_backoff(wait_minimum="1", random_range="0", repeat_times="0")
    with pytest.raises(ProfileRejected):
        p.set_connection_attempts("0")
    with pytest.raises(ProfileRejected):
        p.set_backoff(wait_minimum="-1")
    # back-off applies at once (a failed pass waits 1 s); attempts not yet (still 1 per slot)
    assert fail_n(p, 2) == [(0, 0), (1, 1)]
    connect(p)
    p.connection_lost(0.0)
    assert [s for s, _ in fail_n(p, 3)] == [0, 0, 1]  # 2 attempts per slot from the reconnect on
    v = p.variables()
    assert v["NetworkProfileConnectionAttempts"] == "2" and v["RetryBackOffWaitMinimum"] == "1"
    assert v["ActiveNetworkProfile"] == "0"


def test_config_errors() -> None:
    with pytest.raises(ConfigError):
        profiles([])
    with pytest.raises(ConfigError):
        profiles([slot(0), slot(0)])
    with pytest.raises(ConfigError):
        profiles([slot(0)], priority=(0, 5))
    with pytest.raises(ConfigError):
        profiles([slot(0, 2)], security_profile=3)  # nothing usable
    with pytest.raises(ConfigError):
        NetworkSettings(connection_attempts=0)
    p = profiles([slot(0), slot(1)])
    with pytest.raises(ValueError, match="planned"):
        p.report(slot(1), False, "x", 0.0)


# ---------------------------------------------------------------- stateful: liveness and the rules


class NetworkProfilesMachine(RuleBasedStateMachine):
    """Random failures, successes, losses and CSMS changes; the walk never stops and never downgrades."""

    @initialize(
        n=st.integers(1, 4),
        sps=st.lists(st.integers(2, 3), min_size=4, max_size=4),
        attempts=st.integers(1, 3),
        fallback=st.sampled_from(["restart_list", "last_working"]),
        allow=st.booleans(),
    )
    def setup(self, n: int, sps: list[int], attempts: int, fallback: FallbackPolicy, allow: bool) -> None:
        self.slots = [slot(i, sps[i]) for i in range(n)]
        self.p = profiles(
            self.slots,
            attempts=attempts,
            fallback=fallback,
            security_profile=min(sps[:n]),
            allow_downgrade=allow,
        )
        self.now = 0.0
        self.failures_in_a_row = 0
        self.tried_since_success: list[int] = []

    @rule()
    def fail(self) -> None:
        s, wait = self.p.next_attempt(self.now)
        self.now += wait
        self.p.report(s, False, "refused", self.now)
        self.failures_in_a_row += 1
        self.tried_since_success.append(s.slot)

    @rule()
    def succeed_then_lose(self) -> None:
        s, wait = self.p.next_attempt(self.now)
        self.now += wait
        self.p.report(s, True, "", self.now)
        assert self.p.active_slot == s.slot
        assert self.p.connection_lost(self.now) >= FIXED.wait_minimum
        self.failures_in_a_row = 0
        self.tried_since_success = []

    @precondition(lambda self: len(self.p.slots) >= 2)
    @rule(data=st.data())
    def change_priority(self, data: st.DataObject) -> None:
        order = data.draw(st.permutations(sorted(self.p.slots)))  # an upgrade drops the lower slots (A05)
        self.p.set_priority(",".join(map(str, order)))

    @invariant()
    def walk_stays_on_allowed_slots(self) -> None:
        for n in self.p.order:
            sp = self.p.slots[n].profile.security_profile
            assert (
                downgrade_allowed(
                    self.p.security_profile, sp, allow_downgrade=self.p.settings.allow_security_downgrade
                )
                or n == self.p.last_good
            )
        assert self.p.current.slot in self.p.order

    @invariant()
    def never_stops_and_visits_every_usable_slot(self) -> None:
        # B10.FR.09 + liveness: within len(order) * attempts consecutive failures every usable slot was tried
        window = len(self.p.order) * self.p.connection_attempts
        if self.failures_in_a_row >= window:  # a station never fails that often without trying every slot
            assert set(self.tried_since_success) >= set(self.p.order)
        assert self.p.next_attempt(self.now)[1] >= 0


TestNetworkProfilesMachine = NetworkProfilesMachine.TestCase


@given(
    attempts=st.integers(1, 4),
    n=st.integers(1, 4),
    fallback=st.sampled_from(["restart_list", "last_working"]),
    seed=st.integers(0, 2**16),
)
def test_failed_pass_visits_each_slot_attempts_times(
    attempts: int, n: int, fallback: FallbackPolicy, seed: int
) -> None:
    backoff = RetryBackOff(wait_minimum=1, random_range=2, repeat_times=3)
    p = NetworkProfiles(
        [slot(i) for i in range(n)],
        NetworkSettings(connection_attempts=attempts, backoff=backoff, fallback=fallback),
        random.Random(seed),
    )
    tried = fail_n(p, n * attempts)
    assert [s for s, _ in tried] == [i for i in range(n) for _ in range(attempts)]  # B10.FR.03/04
    waits = [w for _, w in tried]
    for i, w in enumerate(waits):
        last_of_slot = (i + 1) % attempts == 0
        last_of_pass = i == len(waits) - 1
        if last_of_slot and not last_of_pass:
            assert w == 0  # another server: at once
        else:
            assert w >= backoff.wait_minimum  # retry / new pass: back-off


@attrs.frozen
class _PlainTls:
    url: str
    secure: bool = True


def test_a_slot_takes_any_tls_settings_value() -> None:
    """The walk is generic in a slot's own TLS settings: a plain value works, and the slot checks still apply."""
    url = "wss://csms0.evsim.test/ocpp"
    profile = NetworkConnectionProfile(url, 2)
    own = netprofile.NetworkSlot(0, profile, _PlainTls(url))
    p = netprofile.NetworkProfiles([own], NetworkSettings(), random.Random(0))
    assert p.next_attempt(0.0)[0].tls == _PlainTls(url)
    with pytest.raises(ConfigError, match="another URL"):
        netprofile.NetworkSlot(0, profile, _PlainTls("wss://csms1.evsim.test/ocpp"))
    with pytest.raises(ConfigError, match="ws:// slot"):
        netprofile.NetworkSlot(0, profile, _PlainTls(url, secure=False))
