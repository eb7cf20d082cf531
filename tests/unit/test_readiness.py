"""Waiting with a deadline, and the readiness conditions that need no running lab."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab.host.journal import ProcessRecord
from lab.host.procs import start_time
from lab.model.names import node_dir
from lab.model.plan import AddressPlan
from lab.render.base import ReadyTarget
from lab.render.health import healthd_ready, state_file
from lab.render.ready import check, wait_ready
from lab.shared.wait import wait_until

REPO = Path(__file__).resolve().parents[2]


def counter(results):
    calls = []

    def condition():
        calls.append(None)
        return results[min(len(calls), len(results)) - 1]

    return condition, calls


def test_wait_until_returns_the_first_truthy_value():
    condition, calls = counter([0, 0, "ready", "later"])
    assert wait_until(condition, timeout_s=30, interval_s=0) == "ready"
    assert len(calls) == 3


def test_wait_until_returns_the_last_value_at_the_deadline():
    condition, calls = counter([0, None, ""])
    assert wait_until(condition, timeout_s=0.05, interval_s=0.001) == ""
    assert len(calls) >= 2  # asked at the start and again at the deadline


def test_wait_until_stops_when_waiting_is_pointless():
    condition, calls = counter([0, -1, -1])
    assert wait_until(condition, timeout_s=30, interval_s=0, stop=lambda v: v == -1) == -1
    assert len(calls) == 2


@pytest.fixture(scope="module")
def plan(default_plan: AddressPlan) -> AddressPlan:
    return default_plan


def target(plan, lab_dir: Path, pid: int) -> ReadyTarget:
    return ReadyTarget(plan, lab_dir, plan.nodes["ams"], pid)


def write_state(lab_dir: Path, doc: dict) -> None:
    path = state_file(node_dir(lab_dir, "ams"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))


def test_healthd_is_ready_only_once_its_own_process_wrote_the_state(plan, tmp_path):
    t = target(plan, tmp_path, 4242)
    assert not healthd_ready(t) and "no state file" in healthd_ready(t).detail
    write_state(tmp_path, {"pid": 4141, "running": True})  # the previous instance's
    assert not healthd_ready(t) and "PID 4242" in healthd_ready(t).detail
    write_state(tmp_path, {"pid": 4242, "running": False})
    assert not healthd_ready(t)
    write_state(tmp_path, {"pid": 4242, "running": True, "health": "starting"})
    assert healthd_ready(t)
    state_file(node_dir(tmp_path, "ams")).write_text("{half")
    assert not healthd_ready(t) and "unreadable" in healthd_ready(t).detail


def test_a_process_that_exited_is_final_at_once(plan, tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    started = start_time(child.pid)
    assert started is not None
    child.wait()
    record = ProcessRecord("healthd@ams", "ams", child.pid, started)
    write_state(tmp_path, {"pid": child.pid, "running": True})  # stale: it said ready
    seen = wait_ready(plan, tmp_path, record, timeout_s=30)
    assert not seen and seen.final and "exited" in seen.detail


def test_a_live_process_is_asked_its_condition(plan, tmp_path):
    record = ProcessRecord("healthd@ams", "ams", os.getpid(), start_time(os.getpid()) or 0)
    assert not check(plan, tmp_path, record).final
    write_state(tmp_path, {"pid": os.getpid(), "running": True})
    assert check(plan, tmp_path, record)


def test_up_waits_for_every_daemon_and_names_the_ones_not_ready(plan, tmp_path):
    from lab.render.ready import wait_all_ready

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    me = start_time(os.getpid()) or 0
    write_state(tmp_path, {"pid": os.getpid(), "running": True})
    records = [ProcessRecord("healthd@ams", "ams", os.getpid(), me),
               ProcessRecord("unbound@ams", "ams", gone.pid, 12345),
               ProcessRecord("exabgp@ams", "ams", gone.pid, 12345)]  # convergence's job
    unready = wait_all_ready(plan, tmp_path, records, timeout_s=2)
    assert [(r.name, w.final) for r, w in unready] == [("unbound@ams", True)]
    assert "exited" in unready[0][1].detail


def test_waits_beyond_the_workers_share_the_deadline_of_their_start(plan, tmp_path):
    """Four times as many never-ready daemons as there are polling workers: each wait's
    deadline counts from its `add`, so all of them are over about one deadline after the
    last was added (waiting them out four deadlines in a row would take 4 s here)."""
    from lab.render.ready import WAIT_WORKERS, Waiter

    me = start_time(os.getpid()) or 0
    records = [ProcessRecord("healthd@ams", "ams", os.getpid(), me)] * (4 * WAIT_WORKERS)
    started = time.monotonic()
    with Waiter(plan, tmp_path, timeout_s=1.0) as waiter:  # no state file: never ready
        for record in records:
            waiter.add(record)
        unready = waiter.unready()
    took = time.monotonic() - started
    assert len(unready) == len(records)
    assert all("no state file" in seen.detail for _, seen in unready)
    assert took < 2.0, f"{len(records)} waits of 1 s took {took:.1f} s"
