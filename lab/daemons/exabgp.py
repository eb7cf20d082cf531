"""ExaBGP 5 on every site: one IPv4 session to the site's router carrying both families;
what is announced is decided by the API process (lab.speaker.api)."""

from __future__ import annotations

import sys
from pathlib import Path

from lab.daemons.base import DaemonSpec
from lab.daemons.render import render
from lab.plan import AddressPlan, NodePlan
from lab.topology.model import Topology


def speaker_routes(plan: AddressPlan, site: NodePlan) -> list[tuple[str, str]]:
    """(prefix, next hop) per anycast prefix: the site's own link address per family."""
    iface = site.interfaces[0]
    return [(str(plan.anycast4), str(iface.v4.ip)), (str(plan.anycast6), str(iface.v6.ip))]


def api_argv(plan: AddressPlan, site: NodePlan, node_dir: Path, python: str,
             watchdog_ms: int | None) -> list[str]:
    """The API process: in watchdog mode (health daemon in control) or static mode."""
    argv = [python, "-m", "lab.speaker.api", "--control", str(node_dir / "speaker.sock")]
    for prefix, nexthop in speaker_routes(plan, site):
        argv += ["--route", prefix, nexthop]
    if watchdog_ms is None:
        argv.append("--announce-at-start")
    else:
        argv += ["--watchdog-ms", str(watchdog_ms)]
    return argv


def render_exabgp(topo: Topology, plan: AddressPlan, site: NodePlan, api: list[str]) -> str:
    iface = site.interfaces[0]
    router = plan.nodes[iface.peer]
    context = {
        "name": site.name, "asn": site.asn, "router": router.name, "router_asn": router.asn,
        "router_id": site.router_id, "local4": iface.v4.ip,
        "router_address4": router.iface(site.name).v4.ip,
    }
    # ExaBGP splits the run line on whitespace, with no quoting: paths must have no spaces.
    return render("exabgp.conf.j2", lab=plan.lab, site=context, api_argv=" ".join(api),
                  hold_time=topo.bgp.hold_time)


def exabgp_env(node_dir: Path) -> dict[str, str]:
    """Per-instance environment (FIELD-NOTES): foreground, root, quiet, no listener."""
    return {
        "exabgp_daemon_daemonize": "false",
        "exabgp_daemon_user": "root",
        # No pid file: we track the PID ourselves, and a stale file (after SIGKILL, with
        # the old PID still a zombie) makes a restarted ExaBGP exit.
        "exabgp_daemon_pid": "",
        "exabgp_log_destination": "stdout",
        "exabgp_log_statistics": "false",
        "exabgp_log_level": "INFO",
        "exabgp_tcp_bind": "",
        "exabgp_api_cli": "false",
        "exabgp_reactor_speed": "5.0",
        "EXABGP_ROOT": str(node_dir),
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }


def exabgp_spec(topo: Topology, plan: AddressPlan, site: NodePlan, node_dir: Path,
                exabgp: str) -> DaemonSpec:
    conf = node_dir / "exabgp.conf"
    watchdog = topo.health.watchdog_ms if topo.health.enabled else None
    api = api_argv(plan, site, node_dir, sys.executable, watchdog)
    return DaemonSpec(
        name="exabgp", node=site.name, netns=site.netns, config_path=conf,
        config=render_exabgp(topo, plan, site, api),
        check_argv=[exabgp, "validate", str(conf)],
        argv=[exabgp, "server", str(conf)],
        env=exabgp_env(node_dir),
        log_path=node_dir / "exabgp.log",
        batch_check=True,
    )
