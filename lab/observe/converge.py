"""Waiting until a lab is converged: every BGP session Established, every site's route
held by its router (a site still rising is not there yet, and a client may meanwhile be
answered by another site) and every client answered by its expected site on both
address families, with a deadline.

It stops early when waiting cannot help: every session is Established, every site's
route is held by its router, and the same clients have been answered by the same wrong
sites for `STEADY_S`. Routing has settled, and the topology's `expect:` does not describe
it; the error names each client, what answered it, what was expected, and the path its
router takes."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from lab.host.birdctl import Birds
from lab.model import names
from lab.model.errors import NotAsExpected
from lab.model.plan import AddressPlan
from lab.model.topology import Topology
from lab.observe.routing import (
    WrongAnswer,
    announced_families,
    anycast_routes,
    client_sites,
    forwarding,
    held_from_sites,
    sessions,
    wrong_answers,
)

POLL_S = 0.1
# How long the same wrong answers must hold, with routing settled, before `up` stops
# waiting. BGP moves a path in milliseconds here; a site still rising is not announced.
STEADY_S = 3.0


class SettledWrong(NotAsExpected):
    """Routing has settled and clients are answered by other sites than they expect."""


class Steady:
    """How long the same set of wrong answers has held (reset by any change, and by
    a moment when routing was not settled)."""

    def __init__(self, hold_s: float) -> None:
        self.hold_s = hold_s
        self.seen: frozenset | None = None
        self.since = 0.0

    def see(self, wrong: frozenset | None, now: float) -> bool:
        """Record this poll's wrong answers (None: routing not settled); True once the
        same non-empty set has held for `hold_s`."""
        if not wrong:
            self.seen = None
            return False
        if wrong != self.seen:
            self.seen, self.since = wrong, now
            return False
        return now - self.since >= self.hold_s


def log_tail(path: Path, lines: int = 5) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


def unannounced_sites(topo: Topology, plan: AddressPlan, lab_dir: Path) -> list[str]:
    """Sites whose router does not (yet) hold their route for every announced family."""
    held = held_from_sites(plan, anycast_routes(plan, lab_dir))
    families = announced_families(topo)
    return [site for site, by_family in held.items()
            if not all(by_family.get(f) for f in families)]


def wait_converged(topo: Topology, plan: AddressPlan, lab_dir: Path, deadline_s: float,
                   progress: Callable[[str], None], steady_s: float = STEADY_S) -> float:
    """Block until converged; returns seconds waited. NotAsExpected says what is missing;
    SettledWrong when routing settled on other sites than the topology expects."""
    started = time.monotonic()
    last_note = ""
    missing: list[str] = []
    steady = Steady(steady_s)
    unannounced: list[str] = []
    while True:
        with Birds(lab_dir) as birds:
            sess = sessions(plan, lab_dir, birds)
        down = [s for s in sess if s.state != "Established"]
        wrong: list[WrongAnswer] = []
        unannounced = []
        if not down:
            unannounced = unannounced_sites(topo, plan, lab_dir)
            wrong = wrong_answers(topo, client_sites(plan, timeout=0.3))
            if not wrong and not unannounced:
                return time.monotonic() - started
            settled = None if unannounced else frozenset(
                (w.client, w.family, w.got) for w in wrong)
            if steady.see(settled, time.monotonic()):
                raise settled_wrong(topo, plan, lab_dir, wrong, steady_s)
        else:
            steady.see(None, time.monotonic())
        note = (f"{len(sess) - len(down)}/{len(sess)} BGP sessions established"
                + (f", {len(unannounced)} sites not announced yet" if unannounced else "")
                + (f", {len(wrong)} client answers wrong" if not down else ""))
        if note != last_note:
            progress(note)
            last_note = note
        missing = [f"{s.router}: session {s.protocol} to {s.peer} is {s.state} ({s.info})"
                   for s in down]
        if unannounced:
            missing.append(f"sites not announced (their router holds no route from them): "
                           f"{', '.join(unannounced)}")
        missing += [str(w) for w in wrong]
        if time.monotonic() - started > deadline_s:
            break
        time.sleep(POLL_S)
    details = list(missing[:10])
    if down:
        s = down[0]
        peer = plan.nodes[s.peer]
        for daemon, who in (("bird", s.router), ("exabgp", s.peer if peer.role == "site"
                                                  else s.router)):
            tail = log_tail(names.node_dir(lab_dir, who) / names.log_name(daemon))
            if tail:
                details.append(f"last lines of {daemon}@{who}'s log:")
                details += [f"  {line}" for line in tail]
    raise NotAsExpected(f"the lab did not converge within {deadline_s:.0f} s: {missing[0]}",
                        details=details)


def settled_wrong(topo: Topology, plan: AddressPlan, lab_dir: Path,
                  wrong: list[WrongAnswer], steady_s: float) -> SettledWrong:
    """The error for answers that settled wrong: each client, what answered it, what
    was expected, and its router's path (next hops and AS path)."""
    paths = forwarding(plan, lab_dir)
    prefixes = {"v4": str(plan.anycast4), "v6": str(plan.anycast6)}
    details = []
    for w in wrong:
        router = topo.clients[w.client].router
        route, hops = paths.get((router, prefixes[w.family]), (None, [router]))
        if route is None:
            where = f"{router} has no route for {prefixes[w.family]}"
        else:
            as_path = " ".join(str(a) for a in route.as_path) or "empty"
            where = f"{router}'s path: {' > '.join(hops)} (AS path {as_path})"
        details.append(f"{w}; {where}")
    said = "; ".join(f"{w.client} ({w.family}) by {w.got or 'nobody'}, expected {w.expected}"
                     for w in wrong[:6])
    more = f"; and {len(wrong) - 6} more" if len(wrong) > 6 else ""
    return SettledWrong(
        f"routing settled, but not as the topology expects (unchanged for {steady_s:.0f} s, "
        f"every BGP session Established, every site announced): {said}{more}",
        details=details)
