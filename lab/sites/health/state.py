"""The health state machine: pure, no I/O, time passed in by the caller.

Per check (`CheckTracker`): `unknown` at start, `up` after `rise` consecutive successes,
`down` after `fall` consecutive failures. A check is "changing" while it is unknown or
after a result that disagrees with its state; the scheduler then uses the check's
fast interval (also early on, until the check has been up once: `fast_pace`).

Per site (`Site`): healthy when every required check is up. What the route should be
(`Site.desired`):

* not healthy                      -> withdraw, at once;
* healthy, drained, route is up    -> announce with GRACEFUL_SHUTDOWN, withdraw
                                      `drain_delay` after that announce was acked;
* healthy, drained, otherwise      -> withdraw (a withdrawn site never announces to drain);
* healthy, not drained             -> announce.

Last site standing (`keep_last`): a site that is not healthy (its checks said down, not
merely unknown) announces with GRACEFUL_SHUTDOWN instead of withdrawing while the routes
its router sends it (`set_others`: the best anycast route that is not its own) hold no
healthy site's route, i.e. none without GRACEFUL_SHUTDOWN; a withdrawn one does so only
when it sees no other site's route at all. So when every site fails, the last one to fail
stays, and if all withdrew at once (each saw another's route) they come back, each seeing
only last-resort routes. Bounded: after `last_site_max` of it the site withdraws and stays
withdrawn until healthy. Unknown routes (not yet asked) keep nothing.

`Site.next_action` turns that into the command to send now, if any: going down
(withdraw, gshut) is never delayed; announcing waits for the hold-down (at least
`hold_down` since the last route change; it doubles, up to `hold_down_max`, each time a
route announced less than `hold_down_max` before is withdrawn for health). A command the
shim failed is not sent again before the retry delay; any other command (e.g. a
withdraw after a failed announce) goes at once. A new `Site` starts withdrawn with every
check unknown, so a (re)started daemon announces only after its checks passed `rise`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

UNKNOWN, UP, DOWN = "unknown", "up", "down"
WITHDRAW, ANNOUNCE, GSHUT = "withdraw", "announce", "announce-gshut"
# What the shim has after a successful action; "unknown" after a failed one.
ROUTE_AFTER = {WITHDRAW: "withdrawn", ANNOUNCE: "announced", GSHUT: "gshut"}
FAST_UNTIL_UP_S = 10.0  # see CheckTracker.fast_pace


@dataclass(frozen=True)
class Transition:
    """A change of state of one check, or of the site (check == "site")."""

    check: str
    old: str
    new: str
    reason: str
    at: float


class CheckTracker:
    """Rise/fall hysteresis and flap counting for one check."""

    def __init__(self, name: str, rise: int, fall: int, required: bool = True) -> None:
        self.name, self.rise, self.fall, self.required = name, rise, fall, required
        self.state = UNKNOWN
        self.successes = 0  # consecutive
        self.failures = 0  # consecutive
        self.flaps = 0  # changes between up and down (leaving unknown is not one)
        self.transitions = 0
        self.been_up = False  # up at least once since start
        self.since: float | None = None
        self.reason = "starting"  # why the current state was entered
        self.last_result = ""  # the latest result's reason

    def fast_pace(self, running_s: float) -> bool:
        """Run at the fast interval: while changing, and -- for the first
        FAST_UNTIL_UP_S of the daemon's life -- until the check has been up once (a site
        that starts while the lab converges rises as soon as it can, not an interval
        after its dependency appeared)."""
        return self.changing or (not self.been_up and running_s < FAST_UNTIL_UP_S)

    @property
    def changing(self) -> bool:
        return (self.state == UNKNOWN or (self.state == UP and self.failures > 0)
                or (self.state == DOWN and self.successes > 0))

    def observe(self, ok: bool, reason: str, now: float) -> Transition | None:
        """Feed one result; return the transition it caused, if any."""
        self.last_result = reason
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            new = UP if self.successes >= self.rise else self.state
            why = f"{self.successes} consecutive successes"
        else:
            self.failures, self.successes = self.failures + 1, 0
            new = DOWN if self.failures >= self.fall else self.state
            why = reason if self.fall == 1 else f"{reason} ({self.failures} consecutive failures)"
        if new == self.state:
            return None
        old = self.state
        if old != UNKNOWN:
            self.flaps += 1
        self.state, self.since, self.reason = new, now, why
        self.transitions += 1
        self.been_up = self.been_up or new == UP
        return Transition(self.name, old, new, why, now)


@dataclass(frozen=True)
class Decision:
    action: str | None  # WITHDRAW, ANNOUNCE, GSHUT or None (nothing to send now)
    reason: str
    wake_at: float | None = None  # re-evaluate then, even without new results


class Site:
    """Site health, drain and what to tell the shim. Times in seconds."""

    def __init__(self, trackers: Iterable[CheckTracker], *, hold_down: float = 0.5,
                 hold_down_max: float | None = None, drain_delay: float = 2.0,
                 retry: float = 1.0, keep_last: bool = False,
                 last_site_max: float = 300.0) -> None:
        self.checks = {t.name: t for t in trackers}
        self.keep_last = keep_last
        self.last_site_max = last_site_max
        self.others: tuple[bool, bool] | None = None  # (a healthy other route, any other)
        self.last_since: float | None = None  # kept as the last site since (None: not)
        self.last_expired = False
        self.hold_down_base = hold_down
        self.hold_down_max = hold_down if hold_down_max is None else hold_down_max
        self.hold_down = hold_down  # the current one (see the module docstring)
        self.drain_delay = drain_delay
        self.retry = retry
        self.route = "withdrawn"  # what the shim has: withdrawn/announced/gshut/unknown
        self.route_since = -math.inf  # no hold-down before the first announce
        self.announced_at: float | None = None
        self.retry_at = -math.inf  # a failed action is not sent again before this
        self.failed_action: str | None = None
        self.drained_since: float | None = None
        self.health = UNKNOWN  # up / down / unknown, from the required checks
        self.been_healthy = False  # up at least once since start
        self.health_reason = "starting"
        self.health_since: float | None = None
        self.flaps = 0
        self.route_changes = 0

    @property
    def healthy(self) -> bool:
        return self.health == UP

    @property
    def drained(self) -> bool:
        return self.drained_since is not None

    def observe(self, check: str, ok: bool, reason: str,
                now: float) -> list[Transition]:
        """Feed a check result; return the check's and the site's transitions."""
        changes = []
        t = self.checks[check].observe(ok, reason, now)
        if t is not None:
            changes.append(t)
            site = self._update_health(now)
            if site is not None:
                changes.append(site)
        return changes

    def _update_health(self, now: float) -> Transition | None:
        required = [t for t in self.checks.values() if t.required]
        down = [t for t in required if t.state == DOWN]
        if down:
            new, why = DOWN, "; ".join(f"{t.name} down: {t.reason}" for t in down)
        elif all(t.state == UP for t in required):
            new, why = UP, "every required check is up"
        else:
            new, why = UNKNOWN, "waiting for: " + ", ".join(
                t.name for t in required if t.state == UNKNOWN)
        if new == self.health:
            self.health_reason = why
            return None
        old = self.health
        if old != UNKNOWN:
            self.flaps += 1
        self.health, self.health_reason, self.health_since = new, why, now
        self.been_healthy = self.been_healthy or new == UP
        return Transition("site", old, new, why, now)

    def set_drained(self, drained: bool, now: float) -> bool:
        """The drain file appeared or went; returns True if that is a change."""
        if drained == self.drained:
            return False
        self.drained_since = now if drained else None
        return True

    def set_others(self, healthy: bool, any_route: bool) -> None:
        """What the router sends us: a healthy other site's route, any other route."""
        self.others = (healthy, any_route)

    def others_unknown(self) -> None:
        """What the router sends us cannot be known (no session seen up)."""
        self.others = None

    def last_site_reason(self, now: float) -> str | None:
        """Why a failing site stays announced as the last site (None: it does not). Never
        a drained site (the operator took it out), nor one that has not been healthy since
        it started (its checks failing before they were ever up, BGP not converged yet)."""
        if (not self.keep_last or self.health != DOWN or self.others is None or self.drained
                or not self.been_healthy):
            return None
        healthy_other, any_other = self.others
        if healthy_other or (self.route == "withdrawn" and any_other):
            return None
        if self.last_expired:
            return None
        if self.last_since is not None and now - self.last_since >= self.last_site_max:
            self.last_expired = True
            return None
        return ("last site standing: no other site's route seen"
                f" ({self.health_reason})")

    def desired(self, now: float) -> tuple[str, str]:
        """(action, reason): what the route should be now, ignoring timers."""
        if not self.healthy:
            kept = self.last_site_reason(now)
            if kept is not None:
                if self.last_since is None:
                    self.last_since = now
                return GSHUT, kept
            if self.last_since is not None and not self.last_expired:
                self.last_since = None
            if self.last_expired:
                return WITHDRAW, (f"{self.health_reason}; kept as the last site for "
                                  f"{self.last_site_max:g} s, the most allowed")
            return WITHDRAW, self.health_reason
        self.last_since, self.last_expired = None, False
        if self.drained:
            if self.route == "announced":
                return GSHUT, "draining"
            ends = self.route_since + self.drain_delay
            if self.route == "gshut" and now < ends:
                return GSHUT, f"draining: withdraw in {(ends - now) * 1000:.0f} ms"
            return WITHDRAW, "drained"
        return ANNOUNCE, "healthy"

    def next_action(self, now: float) -> Decision:
        want, reason = self.desired(now)
        if ROUTE_AFTER[want] == self.route:
            wake = None
            if want == GSHUT and self.last_since is not None:
                wake = self.last_since + self.last_site_max
            elif want == GSHUT:
                wake = self.route_since + self.drain_delay
            return Decision(None, reason, wake)
        if want == self.failed_action and now < self.retry_at:
            return Decision(None, f"{reason} (retrying after a failed command)", self.retry_at)
        if want == ANNOUNCE and now < self.route_since + self.hold_down:
            until = self.route_since + self.hold_down
            return Decision(None, f"hold-down {self.hold_down * 1000:.0f} ms", until)
        return Decision(want, reason)

    def applied(self, action: str, ok: bool, now: float) -> None:
        """The shim answered `action`: ok (every line acked) or not."""
        if not ok:
            self.route, self.route_since = "unknown", now
            self.failed_action, self.retry_at = action, now + self.retry
            return
        new = ROUTE_AFTER[action]
        if action == WITHDRAW and self.route == "announced" and not self.drained:
            stuck = self.announced_at is not None and now - self.announced_at < self.hold_down_max
            self.hold_down = (min(self.hold_down * 2, self.hold_down_max) if stuck
                              else self.hold_down_base)
        if action == ANNOUNCE:
            self.announced_at = now
        if new != self.route:
            self.route_changes += 1
        self.route, self.route_since = new, now
        self.failed_action, self.retry_at = None, -math.inf

    def link_lost(self, now: float) -> None:
        """The shim withdrew on its own (we lost the connection; it fails closed)."""
        if self.route != "withdrawn":
            self.route, self.route_since = "withdrawn", now
            self.route_changes += 1
        self.failed_action, self.retry_at = None, -math.inf
