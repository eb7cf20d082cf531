"""Bringing a lab up and down: validate -> plan -> check the routers' configs -> build the
fabric -> start the routers -> credentials, check every other config -> start -> converge
(the routers first because BIRD waits a second before it first connects to a peer).

`up` records everything in the journal before creating it and rolls back on any
failure (including Ctrl-C), unless asked to keep a lab that was built but did not
converge as expected (`keep_on_failure`: left up in phase "failed", for inspection).
A lab that is up is never silently taken for another topology: the same topology is
"already up", a different one is refused with what differs, unless `replace` rebuilds
it. `down` works from the journal alone, plus anything that carries the lab's markers,
and is idempotent.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from lab.host import env, lock, procs, safefs
from lab.host.fabric import (
    Fabric,
    NamespaceTaken,
    check_impairments,
    lab_namespaces,
    namespace_labs,
    remove_namespace,
)
from lab.host.journal import (
    Journal,
    ProcessRecord,
    existing_labs,
    journal_elsewhere,
    require_lab_name,
    split_unjournaled,
    valid_lab_name,
)
from lab.host.labs import LAB_ENV, Lab, command, open_lab
from lab.model import Report, Topology, load_file, load_text, names
from lab.model.compare import summary, topology_changes
from lab.model.errors import BadInput, LabError, NotAsExpected
from lab.model.plan import AddressPlan, build_plan
from lab.observe.converge import log_tail, wait_converged
from lab.ops import tokenstore
from lab.render import credentials, launch
from lab.render.base import Readiness
from lab.render.ready import Waiter

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


def lab_of(path: str | Path) -> str:
    """The name of the lab a topology file builds (the file must validate)."""
    try:
        return validated(path).name
    except BadInput as exc:
        exc.details.append("a lab whose file no longer validates is torn down by name: "
                           "`anycast-lab down --lab NAME` (see `anycast-lab list`)")
        raise


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


def up(topology: Topology, progress: Progress, converge_deadline_s: float = 60.0, *,
       keep_on_failure: bool | None = None, replace: bool = False,
       source: str | Path | None = None) -> Lab:
    """Build the lab under its lock; on any failure remove what was created and re-raise
    (or, with `keep_on_failure`, default the topology's `up.keep_on_failure`, leave a lab
    that was built but did not converge as expected up for inspection, and re-raise).
    `replace` tears down a lab of the same name that is up, and builds again; `source`
    is the topology file, recorded for `list`."""
    env.require_linux_root()
    env.require_tools(["sysctl", "unshare", "tc"])
    plan = build_plan(topology)
    env.check_host_overlap(plan, (topology.pools.links4, topology.pools.links6))
    env.check_socket_paths(Journal(topology.name).dir, plan)
    check_impairments(plan)
    keep = topology.up.keep_on_failure if keep_on_failure is None else keep_on_failure
    with lock.locked(topology.name, "up"):
        return _build(topology, plan, progress, converge_deadline_s, keep=keep,
                      replace=replace, source=source)


def _build(topology: Topology, plan: AddressPlan, progress: Progress,
           converge_deadline_s: float, *, keep: bool = False, replace: bool = False,
           source: str | Path | None = None) -> Lab:
    journal = Journal(topology.name)
    if journal.exists():
        phase = journal.state().get("phase")
        if phase == "up" and not replace:
            _refuse_if_changed(topology, source)
            raise AlreadyUp(topology.name)
        if phase == "up":
            progress(f"--replace: tearing down the running lab '{topology.name}'")
        elif phase == FAILED:
            progress(f"lab '{topology.name}' was kept after a failed `up`: removing it to "
                     "build again")
        else:
            progress("a previous run of this lab did not finish: removing its leftovers")
        teardown(journal)
    elif lab_namespaces(topology.name) or procs.marked_pids(topology.name):
        # Namespace names and markers are the machine's, not this run root's: a lab of
        # this name from another run directory is somebody else's, never removed here.
        other = journal_elsewhere(topology.name,
                                  procs.marked_cwds().get(topology.name, ()))
        if other is not None:
            raise BadInput(f"a lab named '{topology.name}' is up from another run directory "
                           f"({other.parent}): choose another name with --name, or take "
                           f"that one down with `ANYCAST_LAB_RUN_DIR={other.parent} "
                           f"anycast-lab down --lab {topology.name}`")
        progress("this lab's namespaces or processes are still here without a journal: "
                 "removing them")
        teardown(journal)
    journal.open()
    lab = Lab(journal, topology, plan)
    built = False  # every daemon checked and the fabric made: a lab `status` can look at
    roles = {n.name: n.role for n in plan.nodes.values()}
    try:
        journal.set_state(phase="building", started=time.time(),
                          topology_file=str(Path(source).resolve()) if source else None)
        # The launcher imports the daemons' modules meanwhile: it is ready to run the
        # config checks and fork the daemons when they come.
        procs.warm_launcher(journal)
        # The effective topology (after --name), so status and down never need the file.
        safefs.write_atomic(journal.dir / names.TOPOLOGY_COPY,
                            yaml.safe_dump(topology.model_dump(mode="json"), sort_keys=False))
        # The routers first, on their own checked configs: BIRD waits a second before it
        # first connects to a peer, so routers peer a second after they start, whatever
        # else is ready. The rest is checked and made while they wait.
        routers = launch.router_specs(topology, plan, journal.dir)
        launch.prepare(routers, journal)
        Fabric(plan, journal, topology.bgp.multipath_hash, progress).build()
        with Waiter(plan, journal.dir) as waiter:
            launch.start_all(journal, routers, roles, on_started=waiter.add)
            progress(f"{len(routers)} routers started")
            made = credentials.create(journal.dir, plan)
            canary = credentials.canaries(journal.dir)["revoked_jti"]
            tokenstore.revoke_at_up(journal.dir, plan, canary)  # every site starts knowing it
            progress(f"lab CA, certificate and signing key in {made.root}")
            specs = launch.service_specs(topology, plan, journal.dir)
            launch.prepare(specs, journal)
            progress(f"{len(routers) + len(specs)} daemon configs rendered and checked")
            built = True
            # Each daemon is waited for from the moment it has started, while others start.
            launch.start_all(journal, specs, roles, on_started=waiter.add)
            progress(f"{len(routers) + len(specs)} daemons started")
            _require_ready(journal, waiter.unready())
        progress("every daemon ready")
        journal.set_state(phase="converging")
        waited = wait_converged(topology, plan, journal.dir, converge_deadline_s, progress)
        progress(f"converged in {waited:.2f} s")
        journal.set_state(phase="up", ready=time.time(), converge_s=round(waited, 3))
    except BaseException as exc:
        if keep and built and isinstance(exc, LabError) and not isinstance(exc, Stopped):
            _keep(journal, exc, progress)
            raise
        if isinstance(exc, NotAsExpected) and built:
            exc.details.append("to look at a lab that fails like this, run `up` again with "
                               "--keep-on-failure: it is left up instead of rolled back")
        _roll_back(journal, exc, progress)
        if isinstance(exc, OSError) and safefs.is_machine_error(exc):
            raise safefs.machine_problem(exc, journal.dir) from exc
        raise
    lab.state = journal.state()
    return lab


def _require_ready(journal: Journal, unready: list[tuple[ProcessRecord, Readiness]]) -> None:
    """Every daemon up and ready (Unbound answers, the introspection service answers over
    TLS, BIRD's socket, healthd's state: `unready` lists those that are not), else
    LabError naming each with its log's tail."""
    if unready:
        first, seen = unready[0]
        log = names.node_dir(journal.dir, first.node) / names.log_name(first.name.split("@")[0])
        raise LabError(f"{first.name} is not ready: {seen.detail}"
                       + (f" (and {len(unready) - 1} more)" if len(unready) > 1 else ""),
                       details=[f"{r.name}: {w.detail}" for r, w in unready[1:]]
                       + [f"last lines of {first.name}'s log:"]
                       + [f"  {line}" for line in log_tail(log)])


def _roll_back(journal: Journal, exc: BaseException, progress: Progress) -> None:
    """Keep what logs the disk allows, then tear down whatever keeping them did."""
    kept: Path | None = None
    try:
        kept = keep_logs(journal)
    except (OSError, LabError) as why:
        progress(f"could not keep the daemons' logs ({why})")
    finally:
        progress("rolling back" + (f" (daemon logs kept in {kept})" if kept else ""))
        teardown(journal, sweep=not isinstance(exc, NamespaceTaken))
    if isinstance(exc, LabError) and kept is not None:
        exc.details.append(f"daemon logs of the failed run: {kept}")


FAILED = "failed"  # the phase of a lab kept up after a failed `up`


def _keep(journal: Journal, exc: LabError, progress: Progress) -> None:
    """Leave the lab as it is, marked failed, and say how to look at it and remove it."""
    journal.set_state_best_effort(phase=FAILED, failed=time.time(), failure=exc.message)
    progress("keeping the lab for inspection (--keep-on-failure): nothing rolled back")
    status, down = (command(journal.lab, verb) for verb in ("status", "down"))
    exc.details.append(f"lab '{journal.lab}' is left up for inspection (--keep-on-failure): "
                       f"see {status}; remove it with {down}")


class AlreadyUp(LabError):
    def __init__(self, lab: str) -> None:
        super().__init__(f"lab '{lab}' is already up: see {command(lab, 'status')}, or run "
                         f"{command(lab, 'down')} first")
        self.lab = lab


class TopologyChanged(NotAsExpected):
    """A lab of this name is up with another topology than the one given (exit 1)."""


def _refuse_if_changed(topology: Topology, source: str | Path | None) -> None:
    """TopologyChanged when the lab running under this name was built from a different
    topology (compared with the copy `up` keeps in its run directory)."""
    running = open_lab(topology.name, need_topology=False).topology
    changed = (["the running lab's topology record is missing"] if running is None
               else topology_changes(running, topology))
    if not changed:
        return
    name = topology.name
    raise TopologyChanged(
        f"lab '{name}' is up with a different topology ({len(changed)} change"
        f"{'s' if len(changed) > 1 else ''}: {changed[0]}); nothing was changed: rebuild "
        f"it with `anycast-lab up {source or 'FILE'} --name {name} --replace`, or run "
        f"`anycast-lab down --lab {name}` first",
        details=summary(changed))


def unjournaled_labs() -> tuple[list[str], dict[str, Path]]:
    """Labs whose markers (processes of ours, namespace names) are on this machine though
    this run root has no journal of theirs: (orphans, whose journal is gone, e.g. after the
    run directory was deleted by hand; labs of another run directory, name -> their
    directory, found from their processes' working directories or the default run root).
    Only names that pass the lab-name rule, from root's processes in lab namespaces (see
    procs). A lab of another run directory that has no process left looks orphaned."""
    cwds = procs.marked_cwds()
    return split_unjournaled(set(cwds) | namespace_labs(), existing_labs(),
                             lambda lab: journal_elsewhere(lab, cwds.get(lab, ())))


def orphan_labs() -> list[str]:
    """Labs of ours whose journal is gone (see `unjournaled_labs`)."""
    return unjournaled_labs()[0]


def labs_to_tear_down(lab: str | None, all_labs: bool) -> list[str]:
    """What `down` removes: the named lab, every lab (--all), or the only one that is up.
    Labs known only by their markers (journal gone) are ours too, by name or with --all."""
    if lab is not None:
        require_lab_name(lab)
    up = existing_labs()
    orphans = orphan_labs()
    if all_labs:
        return up + orphans
    if lab is not None:
        return [lab] if lab in up or lab in orphans else []
    if len(up) > 1:
        raise BadInput(f"several labs are up ({', '.join(up)}): choose one with --lab NAME "
                       f"or {LAB_ENV}=NAME, or use --all")
    return up


FAILED_PREFIX = ".failed-"
KEEP_FAILED = 3  # the logs of this many failed runs are kept; older ones are removed


def keep_logs(journal: Journal) -> Path:
    """Copy the daemons' logs out of the run directory before a rollback removes it."""
    root = journal.dir.parent
    target = root / f"{FAILED_PREFIX}{journal.lab}"
    _remove_tree(target)
    prune_failed(keep=KEEP_FAILED - 1)
    safefs.ensure_private_dir(target)
    for log in journal.dir.glob(f"{names.NODES}/*/{names.log_name('*')}"):
        if log.is_symlink() or not log.is_file():
            continue
        dest_dir = safefs.ensure_private_dir(target / log.parent.name)
        safefs.write_new(dest_dir / log.name, log.read_bytes()[-LOG_KEEP_BYTES:])
    return target


LOG_KEEP_BYTES = 256 * 1024  # the tail of each daemon log is what explains a failure


def failed_runs() -> list[Path]:
    """Kept logs of failed runs, oldest first."""
    from lab.host.journal import run_root

    root = run_root()
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.name.startswith(FAILED_PREFIX)
             and valid_lab_name(p.name[len(FAILED_PREFIX):]) and p.is_dir()
             and not p.is_symlink()]
    return sorted(found, key=lambda p: p.stat().st_mtime)


def prune_failed(keep: int = KEEP_FAILED) -> int:
    """Remove all but the `keep` newest kept logs; returns how many were removed."""
    runs = failed_runs()
    doomed = runs[:max(len(runs) - keep, 0)]
    for path in doomed:
        _remove_tree(path)
    return len(doomed)


def _remove_tree(path: Path) -> None:
    """rmtree that never follows a symlink at the top (rmtree itself does not below)."""
    if path.is_symlink():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class TeardownReport:
    lab: str
    processes: int = 0
    namespaces: int = 0
    elapsed_s: float = 0.0
    leftover: str | None = None  # why the run directory could not be removed


def is_router_daemon(name: str) -> bool:
    """A router's BIRD ("bird@r-eu"): the process that carries the lab's traffic."""
    return name.startswith("bird@")


def teardown(journal: Journal, grace_s: float = 3.0, sweep: bool = True) -> TeardownReport:
    """Remove everything the journal (or the lab's markers) says the lab owns. Runs to
    the end on a full or read-only disk: writes to the journal are best-effort there.
    `sweep=False`: the journal's records only, no namespaces or processes found by the
    lab's name (when another lab of that name is known to exist: see NamespaceTaken)."""
    started = time.monotonic()
    report = TeardownReport(journal.lab)
    if journal.exists():
        journal.set_state_best_effort(phase="tearing-down")
    owned = journal.owned()
    # Processes first: they keep their namespaces alive. Only PIDs we started: from the
    # journal (PID + start time) or carrying our marker (see procs._markers); never this
    # process or one of its ancestors (a `down` typed in an `exec` shell).
    mine = procs.ancestors()
    records = [r for r in owned.processes if procs.is_running(r) and r.pid not in mine]
    # The routers last: while the services close, their connections' FINs still need
    # routes (BIRD takes its routes out of the kernel as it stops). Stopped together, the
    # issuer waited its whole grace for connections whose other end was already gone.
    routers = {r.pid: r.start_time for r in records if is_router_daemon(r.name)}
    pids = {r.pid: r.start_time for r in records if r.pid not in routers}
    for pid in procs.marked_pids(journal.lab) if sweep else []:
        if pid not in routers and pid not in mine:
            pids.setdefault(pid, procs.start_time(pid) or 0)
    report.processes = procs.stop_many(pids, grace_s) + procs.stop_many(routers, grace_s)
    for record in owned.processes:
        journal.record_best_effort("process", op="gone", pid=record.pid)
    prefix = names.lab_netns_prefix(journal.lab)
    ours = [n for n in owned.namespaces if n.startswith(prefix)]
    for name in dict.fromkeys([*ours, *(lab_namespaces(journal.lab) if sweep else [])]):
        if remove_namespace(name):
            report.namespaces += 1
        if journal.exists():
            journal.record_best_effort("netns", op="gone", name=name)
    _remove_tree(journal.dir)
    if journal.dir.exists():
        report.leftover = _why_not_removed(journal.dir)
    report.elapsed_s = time.monotonic() - started
    return report


def _why_not_removed(path: Path) -> str:
    try:
        shutil.rmtree(path)
    except OSError as exc:
        return safefs.machine_problem(exc, path, "remove").message
    return ""


class Stopped(LabError):
    """`up` was asked to stop (SIGTERM, e.g. by `down`): it rolled back."""


def stop_on_sigterm(lab: str) -> None:
    """Make SIGTERM stop `up` the way Ctrl-C does: roll back, then exit 1."""

    owner = os.getpid()

    def handler(signum: int, _frame: object) -> None:
        if os.getpid() != owner:
            # A forked helper (pyroute2 forks one per namespace socket) inherited this
            # handler: it is being stopped, and must never run the rollback itself.
            os._exit(128 + signum)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # let the rollback finish
        raise Stopped(f"the `up` of lab '{lab}' was stopped (SIGTERM, e.g. by `anycast-lab "
                      "down`): what it had built was removed")

    signal.signal(signal.SIGTERM, handler)


def down(name: str, wait_s: float = 60.0) -> TeardownReport:
    """Tear down one lab under its lock. A running `up` of the lab is asked to stop
    (SIGTERM: it rolls back; SIGCONT wakes it if it was suspended, e.g. by Ctrl-Z) and
    waited for; any other command holding the lock is waited for up to `wait_s`."""
    require_lab_name(name)
    try:
        holder = lock.holder(name)
    except LabError:  # a run directory where no lock can be read: nobody can hold one
        holder = None
    if (holder is not None and holder.command == "up" and holder.alive()
            and holder.pid not in procs.ancestors()):
        with contextlib.suppress(ProcessLookupError):
            os.kill(holder.pid, signal.SIGTERM)
            os.kill(holder.pid, signal.SIGCONT)
    with lock.locked(name, "down", wait_s=wait_s, required=False):
        return teardown(Journal(name))
