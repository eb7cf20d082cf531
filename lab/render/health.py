"""anycast-healthd on every site (lab.sites.health): the DNS check against the site's own
unicast address, the introspection check against the service's health listener (its own,
on loopback: client connections cannot starve it), each at the pace the topology's
`health.checks` gives it (every field written out, defaults included); it alone tells the
speaker to announce (fail-closed). Ready when the running process has written its state file."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from lab.model import names
from lab.model.plan import AddressPlan, NodePlan
from lab.model.topology import Topology, check_timing
from lab.render.base import DaemonSpec, Readiness, ReadyTarget
from lab.render.credentials import SERVICE_NAME, Paths
from lab.render.introspect import HEALTH_ADDRESS, HEALTH_PORT

METRICS_PORT = 9273
REVOKED_EVERY = 4  # the introspection check's revoked canary: every 4th steady run


def state_file(node_dir: Path) -> Path:
    return node_dir / names.HEALTH_STATE


def event_log(node_dir: Path) -> Path:
    return node_dir / names.HEALTH_EVENTS


def pace(topo: Topology, check: str) -> dict[str, int]:
    """A check's timing fields as the health daemon's config takes them."""
    t = check_timing(topo, check)
    return {"interval_ms": t.interval_ms, "fast_interval_ms": t.fast_interval_ms,
            "timeout_ms": t.timeout_ms, "rise": t.rise, "fall": t.fall}


def health_config(topo: Topology, plan: AddressPlan, site: NodePlan, node_dir: Path,
                  pki: Paths) -> dict[str, Any]:
    unicast = str(site.interfaces[0].v4.ip)
    return {
        "site": site.name,
        "shim_socket": str(node_dir / names.SPEAKER_SOCK),
        "drain_file": str(node_dir / names.DRAIN),
        "state_file": str(state_file(node_dir)),
        "event_log": str(event_log(node_dir)),
        "metrics_listen": f"{unicast}:{METRICS_PORT}",
        "hold_down_ms": topo.health.hold_down_ms,
        "drain_delay_ms": topo.health.drain_delay_ms,
        "saturation": topo.health.saturation,
        "last_site": topo.health.last_site,
        "last_site_max_ms": topo.health.last_site_max_s * 1000,
        "checks": [
            {"type": "dns", "name": "dns", "server": unicast,
             "qname": names.HEALTH_QNAME, "expect": [str(plan.anycast4.network_address)],
             **pace(topo, "dns")},
            {"type": "introspect", "name": "introspect", "address": HEALTH_ADDRESS,
             "port": HEALTH_PORT,
             "server_name": SERVICE_NAME, "ca_file": str(pki.ca_cert),
             "client_id": "healthd", "client_secret_file": str(pki.healthd_secret),
             "active_token_file": str(pki.canary_active),
             "revoked_token_file": str(pki.canary_revoked),
             # The 401 probe is logged by the service (an auth failure): every 10th run.
             "unauthenticated_every": 10,
             # The revoked canary every 4th run while steady (a stale list is seen within
             # ~2 s), every run while the check is changing: idle cost, not detection of
             # a dead or hung service (the active canary, every run).
             "revoked_every": REVOKED_EVERY, **pace(topo, "introspect")},
            *identity_checks(topo, plan, site, pki),
        ],
    }


def identity_checks(topo: Topology, plan: AddressPlan, site: NodePlan,
                    pki: Paths) -> list[dict[str, Any]]:
    """The freshness-coupled identity check (a lab with an issuer and identity.coupling):
    the site's replicated state must hold the issuer's keys and be fresh."""
    if plan.issuer is None or not topo.identity.coupling:
        return []
    ident = topo.identity
    return [{"type": "identity", "name": "identity", "address": HEALTH_ADDRESS,
             "port": HEALTH_PORT, "server_name": SERVICE_NAME, "ca_file": str(pki.ca_cert),
             "max_staleness_ms": ident.max_staleness_ms, "policy": ident.issuer_unreachable,
             "serve_stale_max_ms": ident.serve_stale_max_ms,
             "peers": [str(s.interfaces[0].v4.ip) for s in plan.by_role("site")
                       if s.name != site.name]}]


def health_spec(topo: Topology, plan: AddressPlan, site: NodePlan, node_dir: Path,
                pki: Paths, python: str = sys.executable) -> DaemonSpec:
    conf = node_dir / names.HEALTHD_CONF
    return DaemonSpec(
        name="healthd", node=site.name, netns=site.netns, config_path=conf,
        config=json.dumps(health_config(topo, plan, site, node_dir, pki), indent=2),
        check_argv=[python, "-m", "lab.sites.health", "--check-config", "--config",
                    str(conf)],
        argv=[python, "-m", "lab.sites.health", "--config", str(conf)],
        log_path=node_dir / names.log_name("healthd"),
        batch_check=True,
    )


def healthd_ready(t: ReadyTarget) -> Readiness:
    """The state file was written by this very process (its PID) and says it is running:
    healthd has loaded its config, bound its metrics port and started its checks."""
    path = state_file(t.dir_of(t.node.name))
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return Readiness(False, f"no state file {path.name} yet")
    except (OSError, ValueError) as exc:
        return Readiness(False, f"state file {path.name} unreadable ({exc})")
    if not isinstance(state, dict) or state.get("pid") != t.pid:
        return Readiness(False, f"state file {path.name} not yet written by PID {t.pid}")
    if not state.get("running"):
        return Readiness(False, f"state file {path.name} says it stopped")
    return Readiness(True, f"its state file {path.name} is written by PID {t.pid}")
