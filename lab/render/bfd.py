"""The BFD responder of a site (bgp.bfd): a second BIRD in the site's namespace with only
`protocol bfd`, answering its router's BFD session towards the site's address. ExaBGP has
no BFD, so this is what lets the router see a silent link in interval x multiplier instead
of the hold time. It proves the namespace and the link alive, not ExaBGP. Ready when its
control socket answers and it holds the session to its router."""

from __future__ import annotations

from pathlib import Path

from lab.host import birdctl
from lab.model import names
from lab.model.plan import AddressPlan, NodePlan
from lab.model.topology import Topology, site_bfd
from lab.render.base import DaemonSpec, Readiness, ReadyTarget
from lab.render.jinja import render

ASK_TIMEOUT_S = 2.0


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


def bfd_ready(t: ReadyTarget) -> Readiness:
    """The responder's BIRD answers on its control socket and lists its router as a BFD
    neighbour (in whatever state: the router's side may not be asking yet)."""
    try:
        reply = birdctl.ask(names.bfd_socket(t.lab_dir, t.node.name), "show bfd sessions",
                            timeout_s=ASK_TIMEOUT_S)
    except birdctl.BirdUnavailable as exc:
        return Readiness(False, f"control socket does not answer ({exc.reason})")
    neighbor = str(t.node.gateway4)
    sessions = birdctl.parse_bfd_sessions(reply.text)
    found = next((s for s in sessions if s.address == neighbor), None)
    if found is None:
        return Readiness(False, f"no BFD session to {neighbor} yet")
    return Readiness(True, f"BFD session to {neighbor} {found.state}")
