"""The waits built on the one poller (lab.shared.wait) and the one stop loop: the lab's
lock, stopping processes (TERM, then KILL), a traceroute hop's answer. No root needed."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP

from lab.host import lock, procs
from lab.shared.wait import wait_until
from probes import trace

IGNORES_TERM = ("import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "print('ready', flush=True); time.sleep(60)")


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "run"
    monkeypatch.setenv("ANYCAST_LAB_RUN_DIR", str(root))
    return root


def test_a_held_lock_refuses_after_the_wait_naming_its_holder(run_dir: Path) -> None:
    with (lock.locked("busy", "fail"), pytest.raises(lock.LabBusy) as err,
          lock.locked("busy", "heal", wait_s=0.1)):
        pass
    assert err.value.holder is not None and err.value.holder.command == "fail"
    assert "is being changed by PID" in err.value.message
    with lock.locked("busy", "heal"):  # released: free again at once
        pass


def test_a_lock_released_while_waiting_is_taken(run_dir: Path) -> None:
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with lock.locked("shared", "up"):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    assert held.wait(10)
    taken = []

    def waiter() -> None:
        with lock.locked("shared", "down", wait_s=30):
            taken.append(True)

    second = threading.Thread(target=waiter)
    second.start()
    assert not taken
    release.set()
    second.join(30)
    thread.join(10)
    assert taken == [True]


def _start(code: str) -> subprocess.Popen[str]:
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline() == "ready\n"
    return child


def test_stop_pid_kills_what_ignores_term() -> None:
    child = _start(IGNORES_TERM)
    started = procs.start_time(child.pid)
    assert procs.stop_pid(child.pid, grace_s=0.2, expected_start=started)
    assert procs.start_time(child.pid) is None  # gone (and reaped) though it ignores TERM


def test_stop_pid_leaves_a_recycled_pid_alone() -> None:
    child = _start(IGNORES_TERM)
    try:
        assert not procs.stop_pid(child.pid, grace_s=0.2, expected_start=1)
        assert child.poll() is None
    finally:
        child.kill()
        child.wait(5)


def test_stop_many_stops_all_and_counts_the_running_ones() -> None:
    polite = _start("import time; print('ready', flush=True); time.sleep(60)")
    stubborn = _start(IGNORES_TERM)
    pids = {p.pid: procs.start_time(p.pid) or 0 for p in (polite, stubborn)}
    pids[2**22 + 1] = 12345  # not running: not counted
    assert procs.stop_many(pids, grace_s=0.3) == 2
    assert procs.start_time(polite.pid) is None and procs.start_time(stubborn.pid) is None


class _Replies:
    """A raw socket that hands out prepared datagrams, then times out."""

    def __init__(self, *datagrams: bytes) -> None:
        self.datagrams = list(datagrams)

    def recvfrom(self, size: int) -> tuple[bytes, tuple[str, int]]:
        if not self.datagrams:
            raise TimeoutError
        return self.datagrams.pop(0), ("ignored", 0)


def test_a_hop_is_the_router_whose_time_exceeded_quotes_our_probe() -> None:
    other = bytes(IP(src="192.0.2.9") / ICMP(type=11) / IP() / ICMP(id=999, seq=2))
    ours = bytes(IP(src="100.64.0.0") / ICMP(type=11) / IP() / ICMP(id=7, seq=2))
    sock = _Replies(other, ours)
    assert trace._await_reply(sock, False, 7, 2, 5.0) == ("100.64.0.0", False)


def test_the_destinations_echo_reply_ends_the_trace() -> None:
    sock = _Replies(bytes(IP(src="203.0.113.53") / ICMP(type=0, id=7, seq=3)))
    assert trace._await_reply(sock, False, 7, 3, 5.0) == ("203.0.113.53", True)


def test_no_answer_is_a_silent_hop() -> None:
    foreign = bytes(IP(src="192.0.2.9") / ICMP(type=0, id=8, seq=3))
    assert trace._await_reply(_Replies(foreign), False, 7, 3, 5.0) == (None, False)


def test_wait_until_asks_again_until_the_condition_holds() -> None:
    answers = iter([None, None, "up"])
    assert wait_until(lambda: next(answers), timeout_s=30, interval_s=0) == "up"
