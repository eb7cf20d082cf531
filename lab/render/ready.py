"""Is a daemon the lab started up and ready? Its process is alive with the start time we
recorded, and its own readiness condition holds (each defined beside its daemon). Waited
for with a deadline; a process that has exited ends the wait at once. `up` waits for
each daemon from the moment it has started (`Waiter`), while the others still start."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
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
    with Waiter(plan, lab_dir, timeout_s) as waiter:
        for record in records:
            waiter.add(record)
        return waiter.unready()


WAIT_WORKERS = 8  # daemons polled at once


class Waiter:
    """Waits for daemons as they are started: `add` a record the moment its process is
    started (from any thread), and its wait begins (its own deadline, `timeout_s` from
    then); `unready` waits for every one added and returns those that did not become
    ready, in the order they were added, with what was seen. Used as a context manager:
    leaving it stops every wait still under way at its next poll."""

    def __init__(self, plan: AddressPlan, lab_dir: Path,
                 timeout_s: float = READY_TIMEOUT_S) -> None:
        self.plan, self.lab_dir, self.timeout_s = plan, lab_dir, timeout_s
        self._pool = ThreadPoolExecutor(max_workers=WAIT_WORKERS, thread_name_prefix="ready")
        self._lock = threading.Lock()
        self._waits: list[tuple[ProcessRecord, Future[Readiness]]] = []
        self._closed = threading.Event()

    def add(self, record: ProcessRecord) -> None:
        if daemon_of(record) in NOT_AWAITED_AT_UP:
            return
        # The deadline counts from now, not from when a worker is free: with more daemons
        # than workers, the last ones would otherwise wait out the deadlines before them.
        deadline = time.monotonic() + self.timeout_s
        with self._lock:
            self._waits.append((record, self._pool.submit(self._wait, record, deadline)))

    def _wait(self, record: ProcessRecord, deadline: float) -> Readiness:
        return wait_until(lambda: check(self.plan, self.lab_dir, record),
                          max(0.0, deadline - time.monotonic()),
                          interval_s=0.05, stop=lambda r: r.final or self._closed.is_set())

    def unready(self) -> list[tuple[ProcessRecord, Readiness]]:
        with self._lock:
            waits = list(self._waits)
        seen = [(record, wait.result()) for record, wait in waits]
        return [(record, ready) for record, ready in seen if not ready]

    def close(self) -> None:
        self._closed.set()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Waiter:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
