"""One lock per lab: only one command changes a lab at a time.

`up`, `down`, `fail`/`heal`, `drain`/`undrain` and `token revoke` hold the lab's lock
while they change it. The lock is an `flock` on `<run root>/.locks/<lab>.lock` (outside
the lab directory, which `down` removes); the file names its holder (PID, start time,
command) so a refused command can say who is at work. The kernel releases the lock when
its holder dies, however it dies, so a crash never leaves a lab locked.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lab.host import procs, safefs
from lab.host.journal import ensure_run_root, require_lab_name, run_root
from lab.model.errors import EnvironmentProblem, LabError
from lab.shared.wait import wait_until

LOCKS = ".locks"


class LabBusy(LabError):
    """Another command holds the lab's lock (exit 1)."""

    def __init__(self, lab: str, holder: Holder | None) -> None:
        who = (f"PID {holder.pid} ({holder.command})" if holder else "another command")
        super().__init__(f"lab '{lab}' is being changed by {who}: wait for it to finish "
                         "and run this command again")
        self.lab = lab
        self.holder = holder


@dataclass(frozen=True)
class Holder:
    pid: int
    start_time: int
    command: str

    def alive(self) -> bool:
        return procs.start_time(self.pid) == self.start_time


def lock_path(lab: str) -> Path:
    return run_root() / LOCKS / f"{require_lab_name(lab)}.lock"


def _open(lab: str) -> int:
    ensure_run_root()
    safefs.ensure_private_dir(run_root() / LOCKS)
    path = lock_path(lab)
    with safefs.machine_errors(path, "open"):
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)


def holder(lab: str) -> Holder | None:
    """Who holds the lab's lock now, or None when nobody does."""
    path = lock_path(lab)
    if not path.is_file() or path.is_symlink():
        return None
    fd = _open(lab)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _holder_once_named(fd: int, wait_s: float = 0.5) -> Holder | None:
    """The holder names itself just after it takes the lock: a refusal in between waits
    that long for the name rather than saying "another command"."""
    return wait_until(lambda: _read_holder(fd), wait_s, interval_s=0.01)


def _read_holder(fd: int) -> Holder | None:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return Holder(int(data["pid"]), int(data["start_time"]), str(data["command"])[:80])
    except (ValueError, KeyError, TypeError, OSError):
        return None


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextlib.contextmanager
def locked(lab: str, command: str, wait_s: float = 0.0,
           required: bool = True) -> Iterator[None]:
    """Hold the lab's lock for the block; LabBusy if another command holds it longer
    than `wait_s`. With `required=False` (teardown) a run directory where no lock can be
    made (disk full, read-only) does not stop the command: nobody else can change the
    lab there either. A run directory that is not ours alone (a symlink, another owner,
    writable by others) stops every command: what is in it may be forged."""
    try:
        fd = _open(lab)
    except EnvironmentProblem as problem:
        if required or not safefs.is_machine_error(problem.__cause__):
            raise
        yield
        return
    try:
        if not wait_until(lambda: _try_lock(fd), wait_s, interval_s=0.05):
            raise LabBusy(lab, _holder_once_named(fd))
        me = {"pid": os.getpid(), "start_time": procs.start_time(os.getpid()) or 0,
              "command": command, "since": round(time.time(), 3)}
        with contextlib.suppress(OSError):  # naming the holder is a courtesy, not a need
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(me).encode(), 0)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
