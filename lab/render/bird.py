"""BIRD 2 on every router: eBGP to neighbouring routers (one session per family) and to
each attached site's speaker, with BFD on the site sessions where bgp.bfd says so (and on
the router sessions with bgp.bfd.routers); routes installed in the router namespace's
kernel FIB. Ready when its control socket answers."""

from __future__ import annotations

from pathlib import Path

from lab.host import birdctl
from lab.model import names
from lab.model.plan import AddressPlan, NodePlan
from lab.model.topology import Topology, backup_prefix, site_bfd
from lab.render.base import DaemonSpec, Readiness, ReadyTarget
from lab.render.jinja import render

ASK_TIMEOUT_S = 2.0  # one readiness question to BIRD (it answers in well under 1 ms)


def render_bird(topo: Topology, plan: AddressPlan, router: NodePlan) -> str:
    backup = topo.health.last_site == "backup-route"
    core_bfd = topo.bgp.bfd if topo.bgp.bfd.routers else None
    router_peers, site_peers = [], []
    for iface in router.interfaces:
        peer = plan.nodes[iface.peer]
        remote = peer.iface(router.name)
        entry = {"name": peer.name, "asn": peer.asn, "ifname": iface.ifname,
                 "local4": iface.v4.ip, "remote4": remote.v4.ip,
                 "local6": iface.v6.ip, "remote6": remote.v6.ip}
        if peer.role == "router":
            router_peers.append({**entry, "proto4": names.router_protocol(peer.name, 4),
                                 "proto6": names.router_protocol(peer.name, 6),
                                 "bfd": core_bfd})
        elif peer.role == "site":
            bfd = site_bfd(topo, peer.name)
            site_peers.append({**entry, "proto": names.site_protocol(peer.name),
                               "bfd": bfd if bfd.enabled else None})
    return render("bird.conf.j2", lab=plan.lab, router=router,
                  kernel4=names.KERNEL_PROTOCOLS[4], kernel6=names.KERNEL_PROTOCOLS[6],
                  anycast4=plan.anycast4, anycast6=plan.anycast6,
                  backup4=backup_prefix(plan.anycast4) if backup else None,
                  backup6=backup_prefix(plan.anycast6) if backup else None,
                  pool4=topo.pools.links4, pool6=topo.pools.links6,
                  hold_time=topo.bgp.hold_time, keepalive_time=topo.bgp.keepalive_time,
                  ecmp=topo.bgp.ecmp, router_peers=router_peers, site_peers=site_peers,
                  bfd_protocol=names.BFD_PROTOCOL,
                  keep_last=topo.health.last_site == "keep-last",
                  bfd_peers=[p for p in router_peers + site_peers if p["bfd"] is not None])


def bird_spec(topo: Topology, plan: AddressPlan, router: NodePlan, node_dir: Path,
              bird: str = "bird") -> DaemonSpec:
    conf = node_dir / names.BIRD_CONF
    return DaemonSpec(
        name="bird", node=router.name, netns=router.netns, config_path=conf,
        config=render_bird(topo, plan, router),
        check_argv=[bird, "-p", "-c", str(conf)],
        argv=[bird, "-f", "-c", str(conf), "-s", str(node_dir / names.BIRD_CTL),
              "-P", str(node_dir / names.BIRD_PID)],
        log_path=node_dir / names.log_name("bird"),
    )


def bird_ready(t: ReadyTarget) -> Readiness:
    """BIRD answers `show status` on its control socket (read-only) and says it is up."""
    try:
        reply = birdctl.ask(names.bird_socket(t.lab_dir, t.node.name), "show status",
                            timeout_s=ASK_TIMEOUT_S)
    except birdctl.BirdUnavailable as exc:
        return Readiness(False, f"control socket does not answer ({exc.reason})")
    if "Daemon is up and running" in reply.text:
        return Readiness(True, "control socket answers: up and running")
    return Readiness(False, f"control socket says: {reply.message}")
