"""Reading other processes' /proc entries: a process chooses its own command name, and
nothing in it (spaces, parentheses, bytes that are not UTF-8) may break `down` or `status`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lab.host import procs
from lab.shared.wait import wait_until

# A name with a space, a closing parenthesis and a byte that is not UTF-8: the kernel keeps
# the first 15 bytes of what PR_SET_NAME is given.
HOSTILE_NAME = b"\xff) x (y"
RENAME = (
    "import ctypes, sys, time\n"
    f"ctypes.CDLL(None).prctl(15, {HOSTILE_NAME!r}, 0, 0, 0)\n"
    "sys.stdout.write('renamed\\n'); sys.stdout.flush()\n"
    "time.sleep(30)\n"
)


@pytest.fixture
def renamed():
    child = subprocess.Popen([sys.executable, "-c", RENAME], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"renamed\n"
        assert Path(f"/proc/{child.pid}/comm").read_bytes().rstrip(b"\n") == HOSTILE_NAME
        yield child
    finally:
        child.kill()
        child.wait()


def _start_time_by_hand(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_bytes()
    return int(stat[stat.rfind(b")") + 2:].split()[19])


def test_a_hostile_command_name_does_not_hide_the_start_time(renamed) -> None:
    assert procs.start_time(renamed.pid) == _start_time_by_hand(renamed.pid)
    assert procs.is_stopped(renamed.pid) is False
    os.kill(renamed.pid, signal.SIGSTOP)
    assert wait_until(lambda: procs.is_stopped(renamed.pid), 5, interval_s=0.01)


def test_a_hostile_command_name_does_not_break_the_owner_check(renamed) -> None:
    assert procs._all_uids_root(renamed.pid) is (os.getuid() == 0)


def test_a_process_that_is_gone_has_no_start_time(renamed) -> None:
    renamed.kill()
    renamed.wait()
    assert procs.start_time(renamed.pid) is None
