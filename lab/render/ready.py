"""Is a daemon the lab started up and ready? Its process is alive with the start time we
recorded, and its own readiness condition holds (each defined beside its daemon). Waited
for with a deadline; a process that has exited ends the wait at once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from lab.host import procs
from lab.host.journal import ProcessRecord
from lab.model.names import BFD_DAEMON
from lab.model.plan import AddressPlan
from lab.render.base import Readiness, ReadyTarget
from lab.render.bfd import bfd_ready
from lab.render.bird import bird_ready
from lab.render.exabgp import exabgp_ready
from lab.render.health import healthd_ready
from lab.render.introspect import introspect_ready
from lab.render.issuer import issuer_ready
from lab.render.unbound import unbound_ready
from lab.shared.wait import wait_until

CONDITIONS: dict[str, Callable[[ReadyTarget], Readiness]] = {
    "bird": bird_ready,
    "unbound": unbound_ready,
    "introspect": introspect_ready,
    "issuer": issuer_ready,
    "exabgp": exabgp_ready,
    "healthd": healthd_ready,
    BFD_DAEMON: bfd_ready,
}
# Python daemons start in about a second on an idle 2-core machine, and ExaBGP's session
# needs its start plus BIRD's 1 s connect retry: 15 s leaves room for a loaded machine.
READY_TIMEOUT_S = 15.0


def daemon_of(record: ProcessRecord) -> str:
    """'unbound@ams' -> 'unbound'."""
    return record.name.split("@", 1)[0]


def check(plan: AddressPlan, lab_dir: Path, record: ProcessRecord,
          after: float | None = None) -> Readiness:
    """Ask once: is the process alive (same PID, same start time), and is it ready (in a
    state reached after `after`, a wall-clock instant, when given)?"""
    if not procs.is_running(record):
        return Readiness(False, f"exited (PID {record.pid})", final=True)
    if procs.is_stopped(record.pid):
        return Readiness(False, f"stopped by a signal (PID {record.pid})")
    condition = CONDITIONS.get(daemon_of(record))
    if condition is None:
        return Readiness(True, "running (no readiness condition for this daemon)")
    return condition(ReadyTarget(plan, lab_dir, plan.nodes[record.node], record.pid, after))


def wait_ready(plan: AddressPlan, lab_dir: Path, record: ProcessRecord,
               timeout_s: float = READY_TIMEOUT_S, after: float | None = None) -> Readiness:
    """Poll `check` until ready, until the process has exited, or until the deadline.
    `after` (a heal: the wall-clock instant the daemon was continued or restarted) asks
    for a state reached since then."""
    return wait_until(lambda: check(plan, lab_dir, record, after), timeout_s,
                      interval_s=0.05, stop=lambda r: r.final)


# Covered by convergence itself (its BGP session to the router is what `up` waits for).
NOT_AWAITED_AT_UP = frozenset({"exabgp"})


def wait_all_ready(plan: AddressPlan, lab_dir: Path, records: list[ProcessRecord],
                   timeout_s: float = READY_TIMEOUT_S) -> list[tuple[ProcessRecord, Readiness]]:
    """Wait (in parallel, one deadline) until every started daemon is ready; returns the
    ones that are not, with what was seen (empty when all are)."""
    from concurrent.futures import ThreadPoolExecutor

    awaited = [r for r in records if daemon_of(r) not in NOT_AWAITED_AT_UP]
    with ThreadPoolExecutor(max_workers=8) as pool:
        seen = list(pool.map(lambda r: wait_ready(plan, lab_dir, r, timeout_s), awaited))
    return [(r, ready) for r, ready in zip(awaited, seen, strict=True) if not ready]
