"""Unbound on every site: the lab zone on the anycast and the site's unicast addresses,
answering id.server / hostname.bind CH TXT and NSID with the site's name. Ready when it
answers id.server on the site's unicast address."""

from __future__ import annotations

from pathlib import Path

from lab.model import names
from lab.model.plan import AddressPlan, NodePlan
from lab.render.base import DaemonSpec, Readiness, ReadyTarget
from lab.render.jinja import render
from lab.shared.dnsid import ask_identity


def site_listen(plan: AddressPlan, site: NodePlan) -> list[str]:
    iface = site.interfaces[0]
    return [str(plan.anycast4.network_address), str(plan.anycast6.network_address),
            str(iface.v4.ip), str(iface.v6.ip)]


def render_unbound(plan: AddressPlan, site: NodePlan, node_dir: Path) -> str:
    return render("unbound.conf.j2", lab=plan.lab, site=site.name, directory=node_dir,
                  pidfile=node_dir / names.UNBOUND_PID,
                  listen=site_listen(plan, site), zone=names.LAB_ZONE,
                  health_qname=names.HEALTH_QNAME,
                  anycast4=plan.anycast4.network_address,
                  anycast6=plan.anycast6.network_address,
                  health_answer=plan.anycast4.network_address)


def unbound_spec(plan: AddressPlan, site: NodePlan, node_dir: Path,
                 unbound: str = "unbound", checkconf: str = "unbound-checkconf") -> DaemonSpec:
    conf = node_dir / names.UNBOUND_CONF
    return DaemonSpec(
        name="unbound", node=site.name, netns=site.netns, config_path=conf,
        config=render_unbound(plan, site, node_dir),
        check_argv=[checkconf, str(conf)],
        argv=[unbound, "-d", "-c", str(conf)],
        log_path=node_dir / names.log_name("unbound"),
    )


def unbound_ready(t: ReadyTarget) -> Readiness:
    """Unbound names its site in answer to id.server CH TXT on the site's unicast address,
    asked from inside the site's namespace."""
    address = str(t.node.interfaces[0].v4.ip)
    got = ask_identity(t.node.netns, address, timeout=0.5)
    if got.site == t.node.name:
        return Readiness(True, f"answers id.server on {address}")
    seen = got.error or f"answered {got.site!r}"
    return Readiness(False, f"no id.server answer from {address} ({seen})")
