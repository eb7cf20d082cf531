"""The pure health state machine, on simulated time (no sockets, no threads)."""

from __future__ import annotations

import math

import pytest

from lab.sites.health.state import (
    ANNOUNCE,
    DOWN,
    FAST_UNTIL_UP_S,
    GSHUT,
    UNKNOWN,
    UP,
    WITHDRAW,
    CheckTracker,
    Site,
)


def feed(tracker: CheckTracker, results: str, now: float = 0.0) -> list[str]:
    """'+' success, '-' failure; returns the state after each result."""
    out = []
    for i, r in enumerate(results):
        tracker.observe(r == "+", "ok" if r == "+" else "timeout", now + i)
        out.append(tracker.state)
    return out


def test_rise_and_fall_need_consecutive_results() -> None:
    t = CheckTracker("dns", rise=3, fall=2)
    assert t.state == UNKNOWN and t.changing
    assert feed(t, "++-+++") == [UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN, UP]
    assert not t.changing
    assert feed(t, "-+-") == [UP, UP, UP]  # a success resets the failure streak
    assert t.changing  # one failure disagrees with "up": fast interval
    assert feed(t, "-") == [DOWN]
    assert t.reason == "timeout (2 consecutive failures)"
    assert feed(t, "++") == [DOWN, DOWN] and t.changing
    assert feed(t, "+") == [UP] and t.reason == "3 consecutive successes"


def test_a_check_not_yet_up_keeps_the_fast_pace_early_on_only() -> None:
    t = CheckTracker("identity", rise=3, fall=2)
    assert feed(t, "--") == [UNKNOWN, DOWN]
    assert not t.changing  # down, and agreeing with it ...
    assert t.fast_pace(running_s=1.0)  # ... but never up yet, early on: fast
    assert not t.fast_pace(running_s=FAST_UNTIL_UP_S)  # a site that never rises: slow
    assert feed(t, "+++") == [DOWN, DOWN, UP]
    assert feed(t, "--") == [UP, DOWN]
    assert not t.fast_pace(running_s=1.0)  # it has been up: only a change is fast
    assert feed(t, "+") == [DOWN] and t.fast_pace(running_s=100.0)  # changing


def test_unknown_goes_down_after_fall_failures_and_flaps_are_counted() -> None:
    t = CheckTracker("dns", rise=1, fall=1)
    change = t.observe(False, "rcode SERVFAIL", 5.0)
    assert change is not None and (change.old, change.new, change.at) == (UNKNOWN, DOWN, 5.0)
    assert change.reason == "rcode SERVFAIL"
    assert t.flaps == 0  # leaving unknown is not a flap
    feed(t, "+-+")
    assert t.flaps == 3 and t.transitions == 4
    assert t.observe(True, "ok", 9.0) is None  # no change, no transition


def healthy_site(**kw: float) -> tuple[Site, CheckTracker, CheckTracker]:
    dns = CheckTracker("dns", rise=1, fall=1)
    extra = CheckTracker("tcp", rise=1, fall=1, required=False)
    site = Site([dns, extra], **kw)
    site.observe("dns", True, "ok", 0.0)
    site.observe("tcp", True, "ok", 0.0)
    return site, dns, extra


def test_restart_starts_withdrawn_until_every_required_check_rose() -> None:
    dns = CheckTracker("dns", rise=3, fall=2)
    intro = CheckTracker("introspect", rise=2, fall=2)
    site = Site([dns, intro])
    assert site.route == "withdrawn"
    for i in range(3):
        site.observe("dns", True, "ok", i * 0.1)
        assert site.next_action(i * 0.1).action is None  # introspect still unknown
    assert "waiting for: introspect" in site.next_action(0.3).reason
    site.observe("introspect", True, "ok", 0.3)
    assert site.next_action(0.3).action is None  # rise 2
    changes = site.observe("introspect", True, "ok", 0.4)
    assert [(c.check, c.new) for c in changes] == [("introspect", UP), ("site", UP)]
    assert site.next_action(0.4).action == ANNOUNCE  # no hold-down before the first one


def test_required_down_withdraws_at_once_optional_does_not() -> None:
    site, _, _ = healthy_site(hold_down=0.5)
    site.applied(ANNOUNCE, True, 1.0)
    site.observe("tcp", False, "refused", 1.1)
    assert site.next_action(1.1).action is None  # optional check
    assert site.healthy
    site.observe("dns", False, "timeout", 1.2)  # within the hold-down: never delayed
    decision = site.next_action(1.2)
    assert decision.action == WITHDRAW and "dns down: timeout" in decision.reason


def test_hold_down_delays_only_the_re_announce() -> None:
    site, _, _ = healthy_site(hold_down=0.5)
    site.applied(ANNOUNCE, True, 1.0)
    site.observe("dns", False, "timeout", 2.0)
    site.applied(WITHDRAW, True, 2.0)
    site.observe("dns", True, "ok", 2.1)
    held = site.next_action(2.1)
    assert held.action is None and held.wake_at == pytest.approx(2.5)
    assert held.reason == "hold-down 500 ms"
    assert site.next_action(2.499).action is None
    assert site.next_action(2.5).action == ANNOUNCE


def test_drain_sequence_gshut_then_withdraw_then_undrain() -> None:
    site, _, _ = healthy_site(hold_down=0.5, drain_delay=2.0)
    site.applied(ANNOUNCE, True, 1.0)
    assert site.set_drained(True, 10.0) and not site.set_drained(True, 10.1)
    assert site.next_action(10.0).action == GSHUT
    site.applied(GSHUT, True, 10.0)
    waiting = site.next_action(11.0)
    assert waiting.action is None and waiting.wake_at == pytest.approx(12.0)
    assert site.next_action(12.0).action == WITHDRAW
    site.applied(WITHDRAW, True, 12.0)
    assert site.next_action(20.0).action is None  # stays withdrawn while drained
    assert site.set_drained(False, 30.0)
    assert site.next_action(30.0).action == ANNOUNCE  # healthy: announce again


def test_drain_of_a_withdrawn_site_never_announces() -> None:
    """A restarted daemon that finds the drain file stays withdrawn."""
    site = Site([CheckTracker("dns", rise=1, fall=1)])
    site.set_drained(True, 0.0)
    site.observe("dns", True, "ok", 0.1)
    assert site.healthy
    for now in (0.1, 1.0, 5.0):
        decision = site.next_action(now)
        assert decision.action is None and decision.reason == "drained"
    assert site.route == "withdrawn"


def test_failure_during_drain_withdraws_at_once() -> None:
    site, _, _ = healthy_site(drain_delay=2.0)
    site.applied(ANNOUNCE, True, 1.0)
    site.set_drained(True, 2.0)
    site.applied(GSHUT, True, 2.0)
    site.observe("dns", False, "timeout", 2.1)
    assert site.next_action(2.1).action == WITHDRAW


def test_undrain_during_gshut_goes_back_to_a_plain_announce() -> None:
    site, _, _ = healthy_site(hold_down=0.5, drain_delay=2.0)
    site.applied(ANNOUNCE, True, 1.0)
    site.set_drained(True, 2.0)
    site.applied(GSHUT, True, 2.0)
    site.set_drained(False, 2.2)
    assert site.next_action(2.2).action is None  # the hold-down counts from the gshut
    assert site.next_action(2.5).action == ANNOUNCE


def test_failed_command_is_retried_later_but_withdraw_is_not_held() -> None:
    site, _, _ = healthy_site(retry=1.0)
    site.applied(ANNOUNCE, False, 1.0)
    assert site.route == "unknown"
    retry = site.next_action(1.1)
    assert retry.action is None and retry.wake_at == pytest.approx(2.0)
    assert site.next_action(2.0).action == ANNOUNCE
    site.applied(ANNOUNCE, False, 2.0)
    site.observe("dns", False, "timeout", 2.1)  # now a withdraw is due: never held back
    assert site.next_action(2.1).action == WITHDRAW


def test_lost_shim_link_counts_as_withdrawn_and_holds_down() -> None:
    site, _, _ = healthy_site(hold_down=0.5)
    site.applied(ANNOUNCE, True, 1.0)
    site.link_lost(3.0)
    assert site.route == "withdrawn" and site.route_since == 3.0
    assert site.next_action(3.1).action is None
    assert site.next_action(3.5).action == ANNOUNCE


def test_site_flaps_count_health_changes() -> None:
    site, _, _ = healthy_site()
    assert site.flaps == 0  # unknown -> up is not a flap
    for i, ok in enumerate([False, True, False, True]):
        site.observe("dns", ok, "x", 1.0 + i)
    assert site.flaps == 4
    site.observe("tcp", False, "x", 9.0)  # optional: the site's health does not change
    assert site.flaps == 4


def simulate(site: Site, check: CheckTracker, up: callable, seconds: float,
             interval: float, fast: float) -> dict[str, int]:
    """Drive the state machine as the daemon does, on a simulated clock: a check runs at
    its (fast) interval, the site's decisions are applied at once, timers are honoured."""
    now, next_check = 0.0, 0.0
    counts = {ANNOUNCE: 0, WITHDRAW: 0, GSHUT: 0, "check": 0}
    while now < seconds:
        if now >= next_check:
            if site.observe(check.name, up(now), "ok" if up(now) else "timeout", now):
                counts["check"] += 1
            next_check = now + (fast if check.changing else interval)
        decision = site.next_action(now)
        if decision.action is not None:
            counts[decision.action] += 1
            site.applied(decision.action, True, now)
            continue
        wake = decision.wake_at if decision.wake_at is not None else math.inf
        now = min(next_check, wake)
    return counts


def test_flapping_service_is_bounded_by_hysteresis_and_hold_down() -> None:
    """A service up 100 ms, down 100 ms, for 10 s (100 changes of the service)."""
    check = CheckTracker("dns", rise=3, fall=2)
    site = Site([check], hold_down=0.5)

    def up(t: float) -> bool:
        return int(t * 10) % 2 == 0

    counts = simulate(site, check, up, seconds=10.0, interval=0.1, fast=0.025)
    # Hysteresis: a check changes state at most once per change of the service.
    assert counts["check"] <= 100
    # Hold-down: at most one announce per 500 ms (and one withdraw after each).
    assert 1 <= counts[ANNOUNCE] <= 10.0 / 0.5 + 1
    assert counts[WITHDRAW] <= counts[ANNOUNCE]
    assert site.route_changes == counts[ANNOUNCE] + counts[WITHDRAW]


def test_backoff_doubles_the_hold_down_for_a_flapping_site_and_resets() -> None:
    check = CheckTracker("dns", rise=3, fall=2)
    site = Site([check], hold_down=0.5, hold_down_max=4.0)

    def up(t: float) -> bool:
        return int(t * 10) % 2 == 0

    counts = simulate(site, check, up, seconds=10.0, interval=0.1, fast=0.025)
    # Waits 0.5, 1, 2, 4, 4 s ...: far fewer announces than with a fixed hold-down.
    assert 2 <= counts[ANNOUNCE] <= 5
    assert site.hold_down == 4.0
    # An announce that survives hold_down_max resets the backoff.
    stable = Site([CheckTracker("dns", rise=1, fall=1)], hold_down=0.5, hold_down_max=4.0)
    stable.observe("dns", True, "ok", 0.0)
    stable.applied(ANNOUNCE, True, 0.0)
    stable.observe("dns", False, "x", 0.1)
    stable.applied(WITHDRAW, True, 0.1)
    assert stable.hold_down == 1.0
    stable.observe("dns", True, "ok", 0.2)
    stable.applied(ANNOUNCE, True, 1.1)
    stable.observe("dns", False, "x", 10.0)
    stable.applied(WITHDRAW, True, 10.0)
    assert stable.hold_down == 0.5


def test_a_planned_drain_does_not_feed_the_backoff() -> None:
    site, _, _ = healthy_site(hold_down=0.5, hold_down_max=4.0, drain_delay=0.1)
    site.applied(ANNOUNCE, True, 1.0)
    site.set_drained(True, 1.1)
    site.applied(GSHUT, True, 1.1)
    site.applied(WITHDRAW, True, 1.2)
    assert site.hold_down == 0.5
