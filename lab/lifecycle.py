"""Bringing a lab up and down: validate -> plan -> check -> build -> start -> converge.

`up` records everything in the journal before creating it and rolls back on any
failure (including Ctrl-C); `down` works from the journal alone, plus anything that
carries the lab's markers, and is idempotent.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from lab import credentials, env, procs, tokenstore
from lab.converge import wait_converged
from lab.daemons import launch
from lab.errors import BadInput, LabError
from lab.fabric import Fabric, check_impairments, lab_namespaces, remove_namespace
from lab.journal import Journal, existing_labs
from lab.plan import AddressPlan, build_plan
from lab.topology import Report, Topology, load_file, load_text

TOPOLOGY_COPY = "topology.yaml"
Progress = Callable[[str], None]


def validated(path: str | Path, name: str | None = None) -> Topology:
    """Load and fully validate a topology (optionally renamed); BadInput lists every problem."""
    report = load_file(path)
    if report.ok and name is not None:
        assert report.topology is not None
        renamed = report.topology.model_dump(mode="json")
        renamed["name"] = name
        report = load_text(yaml.safe_dump(renamed, sort_keys=False), str(path))
    return topology_or_raise(report)


def topology_or_raise(report: Report) -> Topology:
    if not report.ok:
        count = len(report.problems)
        first = report.problems[0]
        where = f"{report.source}:{first.line}: " if first.line else f"{report.source}: "
        raise BadInput(f"{where}{first}" + (f" (and {count - 1} more problem"
                                            f"{'s' if count > 2 else ''})" if count > 1 else ""),
                       details=[f"{report.source}:{p.line or '?'}: {p}"
                                for p in report.problems[1:]])
    assert report.topology is not None
    return report.topology


@dataclass
class Lab:
    """A lab that exists (or existed) on this machine, as its run directory describes it."""

    journal: Journal
    topology: Topology | None = None
    plan: AddressPlan | None = None
    state: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.journal.lab


def open_lab(name: str | None) -> Lab:
    """The named lab, or the only one that exists; BadInput when that is ambiguous."""
    labs = existing_labs()
    if name is None:
        if not labs:
            raise LabError("no lab is up: start one with `anycast-lab up`")
        if len(labs) > 1:
            raise BadInput(f"several labs are up ({', '.join(labs)}): choose one with --lab")
        name = labs[0]
    elif name not in labs:
        raise LabError(f"lab '{name}' is not up (labs up: {', '.join(labs) or 'none'})")
    journal = Journal(name)
    lab = Lab(journal, state=journal.state())
    copy = journal.dir / TOPOLOGY_COPY
    if copy.exists():
        report = load_text(copy.read_text(), str(copy))
        if report.ok and report.topology is not None:
            lab.topology = report.topology
            lab.plan = build_plan(report.topology)
    return lab


def up(topology: Topology, progress: Progress, converge_deadline_s: float = 60.0) -> Lab:
    """Build the lab; on any failure remove what was created and re-raise."""
    env.require_linux_root()
    env.require_tools(["sysctl", "unshare", "tc"])
    plan = build_plan(topology)
    env.check_host_overlap(plan, (topology.pools.links4, topology.pools.links6))
    env.check_socket_paths(Journal(topology.name).dir, plan)
    check_impairments(plan)
    journal = Journal(topology.name)
    if journal.exists():
        if journal.state().get("phase") == "up":
            raise AlreadyUp(topology.name)
        progress("a previous run of this lab did not finish: removing its leftovers")
        teardown(journal)
    journal.open()
    journal.set_state(phase="building", started=time.time())
    # The effective topology (after --name), so status and down never need the file.
    (journal.dir / TOPOLOGY_COPY).write_text(
        yaml.safe_dump(topology.model_dump(mode="json"), sort_keys=False))
    lab = Lab(journal, topology, plan)
    try:
        made = credentials.create(journal.dir, plan)
        canary = credentials.canaries(journal.dir)["revoked_jti"]
        tokenstore.revoke(journal.dir, plan, canary)  # every site starts knowing it
        progress(f"lab CA, certificate and signing key in {made.root}")
        specs = launch.lab_specs(topology, plan, journal.dir)
        launch.prepare(specs)
        progress(f"{len(specs)} daemon configs rendered and checked")
        Fabric(plan, journal, topology.bgp.multipath_hash, progress).build()
        launch.start_all(journal, specs)
        progress(f"{len(specs)} daemons started")
        journal.set_state(phase="converging")
        waited = wait_converged(topology, plan, journal.dir, converge_deadline_s, progress)
        progress(f"converged in {waited:.2f} s")
        journal.set_state(phase="up", ready=time.time(), converge_s=round(waited, 3))
    except BaseException as exc:
        kept = keep_logs(journal)
        progress(f"rolling back (daemon logs kept in {kept})")
        teardown(journal)
        if isinstance(exc, LabError):
            exc.details.append(f"daemon logs of the failed run: {kept}")
        raise
    lab.state = journal.state()
    return lab


class AlreadyUp(LabError):
    def __init__(self, lab: str) -> None:
        super().__init__(f"lab '{lab}' is already up: see `anycast-lab status`, or run "
                         "`anycast-lab down` first")
        self.lab = lab


def orphan_labs() -> list[str]:
    """Labs whose markers (process environment, namespace names) are on this machine
    though their journal is gone, e.g. after the run directory was deleted by hand."""
    from lab.fabric import namespace_labs

    journaled = set(existing_labs())
    return sorted((procs.marked_labs() | namespace_labs()) - journaled)


def keep_logs(journal: Journal) -> Path:
    """Copy the daemons' logs out of the run directory before a rollback removes it."""
    target = journal.dir.parent / f".failed-{journal.lab}"
    shutil.rmtree(target, ignore_errors=True)
    for log in journal.dir.glob("nodes/*/*.log"):
        dest = target / log.parent.name / log.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(log, dest)
    return target


@dataclass
class TeardownReport:
    lab: str
    processes: int = 0
    namespaces: int = 0
    elapsed_s: float = 0.0


def teardown(journal: Journal, grace_s: float = 3.0) -> TeardownReport:
    """Remove everything the journal (or the lab's markers) says the lab owns."""
    started = time.monotonic()
    report = TeardownReport(journal.lab)
    if journal.exists():
        journal.set_state(phase="tearing-down")
    owned = journal.owned()
    # Processes first: they keep their namespaces alive. Only PIDs we started: from the
    # journal (PID + start time) or carrying our marker in their environment.
    records = [r for r in owned.processes if procs.is_running(r)]
    pids = {r.pid: r.start_time for r in records}
    for pid in procs.marked_pids(journal.lab):
        pids.setdefault(pid, procs.start_time(pid) or 0)
    report.processes = procs.stop_many(pids, grace_s)
    for record in owned.processes:
        journal.record("process", op="gone", pid=record.pid)
    for name in dict.fromkeys([*owned.namespaces, *lab_namespaces(journal.lab)]):
        if remove_namespace(name):
            report.namespaces += 1
        if journal.exists():
            journal.record("netns", op="gone", name=name)
    shutil.rmtree(journal.dir, ignore_errors=True)
    report.elapsed_s = time.monotonic() - started
    return report
