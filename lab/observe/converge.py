"""Waiting until a lab is converged: every BGP session Established and every client
answered by its expected site on both address families, with a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from lab.host.birdctl import Birds
from lab.model import names
from lab.model.errors import NotAsExpected
from lab.model.plan import AddressPlan
from lab.model.topology import Topology
from lab.observe.routing import client_sites, misplaced, sessions

POLL_S = 0.1


def log_tail(path: Path, lines: int = 5) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


def wait_converged(topo: Topology, plan: AddressPlan, lab_dir: Path, deadline_s: float,
                   progress: Callable[[str], None]) -> float:
    """Block until converged; returns seconds waited. NotAsExpected says what is missing."""
    started = time.monotonic()
    last_note = ""
    missing: list[str] = []
    while True:
        with Birds(lab_dir) as birds:
            sess = sessions(plan, lab_dir, birds)
        down = [s for s in sess if s.state != "Established"]
        wrong: list[str] = []
        if not down:
            wrong = misplaced(topo, client_sites(plan, timeout=0.3))
            if not wrong:
                return time.monotonic() - started
        note = (f"{len(sess) - len(down)}/{len(sess)} BGP sessions established"
                + (f", {len(wrong)} client answers wrong" if not down else ""))
        if note != last_note:
            progress(note)
            last_note = note
        missing = [f"{s.router}: session {s.protocol} to {s.peer} is {s.state} ({s.info})"
                   for s in down] + wrong
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
