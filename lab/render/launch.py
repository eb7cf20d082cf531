"""All daemons of a lab: build their specs, write and dry-run-check their configs (before
any namespace exists), and start them through the process runner in dependency order.

Start order (`start_waves`): the routers, then the issuer, then the sites, each wave
started once the one before it is; within a wave every node is its own failure domain,
so the nodes' daemons are started side by side (a few nodes at a time), while one node's
daemons start one after another in spec order (a site: Unbound, the introspection
service, its BFD responder, ExaBGP, the health daemon). Each daemon is recorded in the
journal before it starts (`procs.start`)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from functools import partial
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
    return specs_for(topo, plan, lab_dir, lab_tools(topo), sys.executable)


def lab_tools(topo: Topology) -> dict[str, str]:
    """The tools this lab's daemons need, found on this machine (else one clear error)."""
    return env.require_tools(TOOLS + (ANCHOR_TOOLS if anchor_mode(topo) else []))


def router_specs(topo: Topology, plan: AddressPlan, lab_dir: Path) -> list[DaemonSpec]:
    """The routers' daemons (BIRD), the head of `lab_specs`: they need no credentials, so
    `up` can start them first. Every tool the lab needs is looked for here already: a
    missing one is said before anything is made."""
    return _router_specs(topo, plan, lab_dir, lab_tools(topo)["bird"])


def service_specs(topo: Topology, plan: AddressPlan, lab_dir: Path) -> list[DaemonSpec]:
    """The rest of `lab_specs`: the issuer and every site's daemons."""
    return _service_specs(topo, plan, lab_dir, lab_tools(topo), sys.executable,
                          str(SPEAKER_RUN))


def specs_for(topo: Topology, plan: AddressPlan, lab_dir: Path, tools: dict[str, str],
              python: str, speaker_run: str | None = str(SPEAKER_RUN)) -> list[DaemonSpec]:
    """`lab_specs` for given tool paths and Python interpreter, checking nothing on this
    machine: what `up` starts here, or (with a container's paths) in a container.
    `speaker_run`: the API process's start file (this checkout's), or None to run it as
    a module of the installed package."""
    return (_router_specs(topo, plan, lab_dir, tools["bird"])
            + _service_specs(topo, plan, lab_dir, tools, python, speaker_run))


def _router_specs(topo: Topology, plan: AddressPlan, lab_dir: Path,
                  bird: str) -> list[DaemonSpec]:
    return [bird_spec(topo, plan, router, node_dir(lab_dir, router.name), bird)
            for router in plan.by_role("router")]


def _service_specs(topo: Topology, plan: AddressPlan, lab_dir: Path, tools: dict[str, str],
                   python: str, speaker_run: str | None) -> list[DaemonSpec]:
    anchor = anchor_mode(topo)
    specs: list[DaemonSpec] = []
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
        specs.append(exabgp_spec(topo, plan, site, d, tools["exabgp"], python, speaker_run))
        if topo.health.enabled and not anchor:
            specs.append(health_spec(topo, plan, site, d, pki, python))
    return specs


def prepare(specs: list[DaemonSpec], journal: Journal | None = None) -> None:
    """Write every config and run every daemon's own dry run (in parallel). With the
    lab's `journal`, the lab's own Python programs' dry runs (`exabgp validate`, the
    services' `--check-config`) run in the lab's pre-imported launcher: no interpreter
    start and imports per check."""
    for spec in specs:
        spec.write()
        if journal is not None:
            spec.check_runner = partial(procs.run_check, journal)
    groups: dict[str, list[DaemonSpec]] = {}
    singles: list[DaemonSpec] = []
    for spec in specs:
        (groups.setdefault(spec.name, []) if spec.batch_check else singles).append(spec)
    with ThreadPoolExecutor(max_workers=4) as pool:
        # The quick ones first: the batches may wait for the launcher's imports.
        jobs = [pool.submit(spec.check) for spec in singles]
        jobs += [pool.submit(g[0].check_many, g[1:]) for g in groups.values()]
        for job in jobs:
            job.result()


WAVES = ("router", "issuer", "site")  # started in this order; other roles after them
START_WORKERS = 8  # nodes started at once: each mostly waits for the launcher or a fork


def start_waves(specs: list[DaemonSpec],
                roles: Mapping[str, str]) -> list[list[list[DaemonSpec]]]:
    """The order daemons are started in (pure): waves one after another (the routers, the
    issuer, the sites, then any other role), each wave a list of chains side by side, one
    per node, in the order its nodes first appear in `specs`; a chain holds that node's
    specs in `specs` order, started one after another."""
    rank = {role: i for i, role in enumerate(WAVES)}
    waves: dict[int, dict[str, list[DaemonSpec]]] = {}
    for spec in specs:
        wave = rank.get(roles.get(spec.node, ""), len(WAVES))
        waves.setdefault(wave, {}).setdefault(spec.node, []).append(spec)
    return [list(waves[w].values()) for w in sorted(waves)]


def _start(journal: Journal, spec: DaemonSpec) -> procs.ProcessRecord:
    assert spec.log_path is not None
    return procs.start(journal, name=spec.label, node=spec.node, netns=spec.netns,
                       argv=spec.argv, log_path=spec.log_path, env=spec.env,
                       cwd=spec.config_path.parent)


def start_all(journal: Journal, specs: list[DaemonSpec], roles: Mapping[str, str] | None = None,
              workers: int = START_WORKERS,
              on_started: Callable[[procs.ProcessRecord], None] | None = None,
              ) -> list[procs.ProcessRecord]:
    """Start every daemon in `start_waves` order (`roles`: node -> role; without it, one
    wave) and return their records in `specs` order; `on_started` is told of each as soon
    as it has started (from the thread that started it). On the first failure no further
    daemon is started, the ones starting finish, and the failure is raised (what was
    started is in the journal, for the rollback)."""
    records: dict[int, procs.ProcessRecord] = {}
    index = {id(spec): i for i, spec in enumerate(specs)}
    stop = threading.Event()

    def chain(node_specs: list[DaemonSpec]) -> None:
        for spec in node_specs:
            if stop.is_set():
                return
            try:
                record = records[index[id(spec)]] = _start(journal, spec)
                if on_started is not None:
                    on_started(record)
            except BaseException:
                stop.set()
                raise

    waves = start_waves(specs, roles or {})
    with ThreadPoolExecutor(max_workers=max(1, workers),
                            thread_name_prefix="start") as pool:
        try:
            for wave in waves:
                jobs = [pool.submit(chain, c) for c in wave]
                wait(jobs, return_when=FIRST_EXCEPTION)
                if stop.is_set():
                    wait(jobs)  # let the starts under way finish: they are journaled
                for job in jobs:
                    job.result()  # the first failure, if any, in submission order
        except BaseException:  # a failure, or Ctrl-C / SIGTERM in this thread
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return [records[i] for i in range(len(specs))]
