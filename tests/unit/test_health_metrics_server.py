"""The health daemon's /metrics server: answers scrapes, sleeps between them (no
periodic wake-up to look for a shutdown), and stops at once when asked."""

from __future__ import annotations

import os
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from lab.sites.health.metrics import Metrics

from .helpers import free_port


def _wakeups(tid: int) -> int:
    status = Path(f"/proc/self/task/{tid}/status").read_text()
    return int(status.split("\nvoluntary_ctxt_switches:")[1].split()[0])


# epoll_wait, epoll_pwait, epoll_pwait2 by machine: what /proc/TID/syscall shows while a
# thread waits there, for a kernel that hides the wait channel.
EPOLL_WAIT_SYSCALLS = {"x86_64": {"232", "281", "441"}, "aarch64": {"22", "441"}}


def _in_epoll_wait(tid: int) -> bool:
    wchan = Path(f"/proc/self/task/{tid}/wchan").read_text().strip()
    if wchan not in ("", "0"):
        return wchan == "do_epoll_wait"
    numbers = EPOLL_WAIT_SYSCALLS.get(os.uname().machine)
    if numbers is None:
        pytest.skip(f"this kernel hides wait channels and {os.uname().machine}'s "
                    "epoll_wait number is not known here")
    return Path(f"/proc/self/task/{tid}/syscall").read_text().split()[0] in numbers


def _wait_until_back_in_select(tid: int) -> None:
    """The scrape is answered by a handler thread; the serving thread may still be on
    its way back (thread start, the GIL) when the client has its answer. Wait, with a
    deadline, until the kernel shows it blocked in epoll_wait again."""
    deadline = time.monotonic() + 5
    while not _in_epoll_wait(tid):
        assert time.monotonic() < deadline, "the serving thread is not back in epoll_wait"
        time.sleep(0.01)


def test_metrics_server_sleeps_between_scrapes_and_stops_at_once() -> None:
    metrics = Metrics(["dns"])
    port = free_port()
    server = metrics.serve("127.0.0.1", port)
    try:
        thread = next(t for t in threading.enumerate() if t.name == "metrics")
        assert thread.native_id is not None
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        assert b"anycast_health" in body
        _wait_until_back_in_select(thread.native_id)
        before = _wakeups(thread.native_id)
        time.sleep(1.6)  # what is measured: socketserver's own loop wakes 3 times in this
        assert _wakeups(thread.native_id) - before == 0
    finally:
        started = time.monotonic()
        server.shutdown()
        server.server_close()
    assert time.monotonic() - started < 1.0
    thread.join(2)
    assert not thread.is_alive()
