"""The BFD responder of a site (bgp.bfd): a second BIRD in the site's namespace with only
`protocol bfd`, answering its router's BFD session towards the site's address. ExaBGP has
no BFD, so this is what lets the router see a silent link in interval x multiplier instead
of the hold time. It proves the namespace and the link alive, not ExaBGP. Ready when its
control socket answers and it holds the session to its router."""

from __future__ import annotations

import time
from pathlib import Path

from lab.host import birdctl
from lab.model import names
from lab.model.plan import AddressPlan, NodePlan
from lab.model.topology import Topology, site_bfd
from lab.render.base import DaemonSpec, Readiness, ReadyTarget
from lab.render.jinja import render

ASK_TIMEOUT_S = 2.0
# An Up older than the heal counts once it has outlived the heal by this many detection
# times (a session frozen for less than one never went down, and stays Up), and by at
# least this many seconds.
STABLE_DETECTS = 3
STABLE_MIN_S = 1.0
SINCE_SLACK_S = 0.005  # BIRD writes `Since` in milliseconds, rounded either way


def render_bfd(topo: Topology, plan: AddressPlan, site: NodePlan) -> str:
    bfd = site_bfd(topo, site.name)
    link = site.interfaces[0]
    return render("bfd.conf.j2", lab=plan.lab, site=site.name, router_id=link.v4.ip,
                  protocol=names.BFD_RESPONDER_PROTOCOL, ifname=link.ifname,
                  interval_ms=bfd.interval_ms, multiplier=bfd.multiplier,
                  neighbor=site.gateway4, local=link.v4.ip)


def bfd_spec(topo: Topology, plan: AddressPlan, site: NodePlan, node_dir: Path,
             bird: str = "bird") -> DaemonSpec:
    conf = node_dir / names.BFD_CONF
    return DaemonSpec(
        name=names.BFD_DAEMON, node=site.name, netns=site.netns, config_path=conf,
        config=render_bfd(topo, plan, site),
        check_argv=[bird, "-p", "-c", str(conf)],
        argv=[bird, "-f", "-c", str(conf), "-s", str(node_dir / names.BFD_CTL),
              "-P", str(node_dir / names.BFD_PID)],
        log_path=node_dir / names.log_name(names.BFD_DAEMON),
    )


def fresh_up(session: birdctl.BfdSession, after: float, now: float) -> Readiness:
    """Is this session Up in a state entered after `after` (wall clock)? An Up from
    before counts only once it has stayed Up for a while past `after` (it never went
    down: a freeze shorter than the detection time)."""
    where = f"BFD session to {session.address}"
    if session.state != "Up":
        return Readiness(False, f"{where} {session.state} since {session.since}")
    since = birdctl.since_epoch(session.since, now)
    if since is not None and since >= after - SINCE_SLACK_S:
        return Readiness(True, f"{where} Up since {session.since}")
    stable_s = max(STABLE_MIN_S, STABLE_DETECTS * (session.timeout_s or 0.0))
    if now - after >= stable_s:
        return Readiness(True, f"{where} Up since {session.since}, before the heal, and "
                               f"still Up {now - after:.1f} s after it")
    return Readiness(False, f"{where} says Up since {session.since}, from before the heal: "
                            "waiting for it to go down and up again, or to stay up")


def _session(ctl: Path, address: str) -> birdctl.BfdSession | Readiness:
    try:
        reply = birdctl.ask(ctl, "show bfd sessions", timeout_s=ASK_TIMEOUT_S)
    except birdctl.BirdUnavailable as exc:
        return Readiness(False, f"control socket does not answer ({exc.reason})")
    found = next((s for s in birdctl.parse_bfd_sessions(reply.text)
                  if s.address == address), None)
    return found if found is not None else Readiness(False, f"no BFD session to {address} yet")


def router_side_up(t: ReadyTarget, after: float) -> Readiness:
    """The site's router holds its BFD session towards the site Up, entered after
    `after` (or Up long enough past it): what a heal of the site's link or responder
    waits for before it says the site is whole again."""
    router = t.node.interfaces[0].peer
    found = _session(names.bird_socket(t.lab_dir, router), str(t.node.interfaces[0].v4.ip))
    if isinstance(found, Readiness):
        return Readiness(False, f"{router}: {found.detail}")
    ready = fresh_up(found, after, time.time())
    return Readiness(ready.ok, f"{router}: {ready.detail}")


def bfd_ready(t: ReadyTarget) -> Readiness:
    """The responder's BIRD answers on its control socket and lists its router as a BFD
    neighbour: at `up`, in whatever state (the router's side may not be asking yet);
    after a heal (`t.after`), Up at both ends since the heal."""
    neighbor = str(t.node.gateway4)
    found = _session(names.bfd_socket(t.lab_dir, t.node.name), neighbor)
    if isinstance(found, Readiness):
        return found
    if t.after is None:
        return Readiness(True, f"BFD session to {neighbor} {found.state}")
    own = fresh_up(found, t.after, time.time())
    if not own.ok:
        return own
    router = router_side_up(t, t.after)
    return Readiness(router.ok, f"{own.detail}; {router.detail}")
