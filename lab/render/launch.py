"""All daemons of a lab: build their specs, write and dry-run-check their configs (before
any namespace exists), and start them through the process runner in dependency order."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lab.host import env, procs
from lab.host.journal import Journal
from lab.model.names import node_dir
from lab.model.plan import AddressPlan
from lab.model.topology import Topology, site_bfd
from lab.render import credentials
from lab.render.base import DaemonSpec
from lab.render.bfd import bfd_spec
from lab.render.bird import bird_spec
from lab.render.exabgp import SPEAKER_RUN, anchor_mode, exabgp_spec
from lab.render.health import health_spec
from lab.render.introspect import introspect_spec
from lab.render.issuer import issuer_spec, replica_config
from lab.render.unbound import unbound_spec

TOOLS = ["bird", "unbound", "unbound-checkconf", "exabgp"]
# health.checker 'exabgp-healthcheck': its check command (lab.render.exabgp).
ANCHOR_TOOLS = ["dig", "timeout"]


def lab_specs(topo: Topology, plan: AddressPlan, lab_dir: Path) -> list[DaemonSpec]:
    """Every daemon, in start order: routers, then per site its services, its BFD
    responder (with bgp.bfd: answering before the speaker's session comes up, so the
    router's BFD session is up as soon as BGP is) and its speaker (credentials must
    exist: see `credentials.create`). With health.checker 'exabgp-healthcheck' ExaBGP runs
    the bundled healthcheck itself: no healthd."""
    tools = env.require_tools(TOOLS + (ANCHOR_TOOLS if anchor_mode(topo) else []))
    return specs_for(topo, plan, lab_dir, tools, sys.executable)


def specs_for(topo: Topology, plan: AddressPlan, lab_dir: Path, tools: dict[str, str],
              python: str) -> list[DaemonSpec]:
    """`lab_specs` for given tool paths and Python interpreter, checking nothing on this
    machine: what `up` starts here, or (with a container's paths) in a container. The
    tools may name the API process's start file ("speaker-run"; default: this checkout's)."""
    anchor = anchor_mode(topo)
    specs: list[DaemonSpec] = []
    for router in plan.by_role("router"):
        specs.append(bird_spec(topo, plan, router, node_dir(lab_dir, router.name),
                               tools["bird"]))
    pki = credentials.paths(lab_dir)
    if plan.issuer is not None:
        specs.append(issuer_spec(plan.issuer, node_dir(lab_dir, plan.issuer.name), pki,
                                 python))
    for site in plan.by_role("site"):
        d = node_dir(lab_dir, site.name)
        specs.append(unbound_spec(plan, site, d, tools["unbound"], tools["unbound-checkconf"]))
        specs.append(introspect_spec(plan, site, d, pki, replica_config(topo, plan, d, pki),
                                     python))
        if site_bfd(topo, site.name).enabled:
            specs.append(bfd_spec(topo, plan, site, d, tools["bird"]))
        specs.append(exabgp_spec(topo, plan, site, d, tools["exabgp"], python,
                                 tools.get("speaker-run", str(SPEAKER_RUN))))
        if topo.health.enabled and not anchor:
            specs.append(health_spec(topo, plan, site, d, credentials.paths(lab_dir), python))
    return specs


def prepare(specs: list[DaemonSpec]) -> None:
    """Write every config and run every daemon's own dry run (in parallel)."""
    for spec in specs:
        spec.write()
    groups: dict[str, list[DaemonSpec]] = {}
    singles: list[DaemonSpec] = []
    for spec in specs:
        (groups.setdefault(spec.name, []) if spec.batch_check else singles).append(spec)
    with ThreadPoolExecutor(max_workers=4) as pool:
        jobs = [pool.submit(g[0].check_many, g[1:]) for g in groups.values()]
        jobs += [pool.submit(spec.check) for spec in singles]
        for job in jobs:
            job.result()


def start_all(journal: Journal, specs: list[DaemonSpec]) -> list[procs.ProcessRecord]:
    records = []
    for spec in specs:
        assert spec.log_path is not None
        records.append(procs.start(journal, name=spec.label, node=spec.node, netns=spec.netns,
                                   argv=spec.argv, log_path=spec.log_path, env=spec.env,
                                   cwd=spec.config_path.parent))
    return records
