"""BIRD 2 on every router: eBGP to neighbouring routers (one session per family) and to
each attached site's speaker; routes installed in the router namespace's kernel FIB.
Ready when its control socket answers."""

from __future__ import annotations

from pathlib import Path

from lab.host.birdctl import birdc
from lab.model.plan import AddressPlan, NodePlan
from lab.model.topology import Topology
from lab.render.base import DaemonSpec, Readiness, ReadyTarget
from lab.render.jinja import proto_name, render


def render_bird(topo: Topology, plan: AddressPlan, router: NodePlan) -> str:
    router_peers, site_peers = [], []
    for iface in router.interfaces:
        peer = plan.nodes[iface.peer]
        remote = peer.iface(router.name)
        entry = {"name": peer.name, "asn": peer.asn, "ifname": iface.ifname,
                 "local4": iface.v4.ip, "remote4": remote.v4.ip,
                 "local6": iface.v6.ip, "remote6": remote.v6.ip}
        if peer.role == "router":
            router_peers.append({**entry, "proto": f"r_{proto_name(peer.name)}"})
        elif peer.role == "site":
            site_peers.append({**entry, "proto": f"site_{proto_name(peer.name)}"})
    return render("bird.conf.j2", lab=plan.lab, router=router,
                  anycast4=plan.anycast4, anycast6=plan.anycast6,
                  pool4=topo.pools.links4, pool6=topo.pools.links6,
                  hold_time=topo.bgp.hold_time, keepalive_time=topo.bgp.keepalive_time,
                  ecmp=topo.bgp.ecmp, router_peers=router_peers, site_peers=site_peers)


def bird_spec(topo: Topology, plan: AddressPlan, router: NodePlan, node_dir: Path,
              bird: str = "bird") -> DaemonSpec:
    conf = node_dir / "bird.conf"
    return DaemonSpec(
        name="bird", node=router.name, netns=router.netns, config_path=conf,
        config=render_bird(topo, plan, router),
        check_argv=[bird, "-p", "-c", str(conf)],
        argv=[bird, "-f", "-c", str(conf), "-s", str(node_dir / "bird.ctl"),
              "-P", str(node_dir / "bird.pid")],
        log_path=node_dir / "bird.log",
    )


def control_socket(node_dir: Path) -> Path:
    return node_dir / "bird.ctl"


def bird_ready(t: ReadyTarget) -> Readiness:
    """BIRD answers `show status` on its control socket (read-only) and says it is up."""
    out = birdc(control_socket(t.dir_of(t.node.name)), "show status", timeout=2.0)
    if "Daemon is up and running" in out:
        return Readiness(True, "control socket answers: up and running")
    return Readiness(False, "control socket does not answer" if not out
                     else f"control socket says: {out.strip().splitlines()[-1]}")
